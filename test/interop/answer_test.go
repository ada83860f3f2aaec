package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"
)

// TestGoSDKReadsMessageBeforeTrailingText: the Go SDK's client reads a
// message's first JSON value and ignores what follows it (segmentio's
// Decoder.Decode), so an event whose data is a message followed by text
// is read as that message. A hostile upstream sent, on a tools/call's
// event stream, the answer to the caller's pending resources/read with
// contents of a URI the resource rules keep from the caller, followed
// by " x": the gateway took the event for no JSON, which no client
// reads, and passed it unchecked; the SDK took it as the read's answer.
// Such an answer is now refused (the stream ended), never passed.
func TestGoSDKReadsMessageBeforeTrailingText(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	readID := make(chan json.RawMessage, 1)
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	mux := http.NewServeMux()
	mux.HandleFunc(demoMCPPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &m)
		w.Header().Set("Mcp-Session-Id", "s1")
		answer := func(result string) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, m.ID, result)
		}
		switch m.Method {
		case "initialize":
			answer(`{"protocolVersion":"2025-11-25","capabilities":{"tools":{},"resources":{}},"serverInfo":{"name":"hostile","version":"1"}}`)
		case "tools/list":
			answer(`{"tools":[{"name":"` + permitTool + `","inputSchema":{"type":"object"}}]}`)
		case "resources/read":
			// Held open: its answer comes on the call's stream.
			readID <- m.ID
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "tools/call":
			id := <-readID
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"contents\":[{\"uri\":\"test://secret/key\",\"text\":\"TOPSECRET\"}]}} x\n\n", id)
			fmt.Fprintf(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"done\"}]}}\n\n", m.ID)
		case "server/discover":
			// A 2025-11-25 server: the client falls back to initialize.
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"method not found"}}`, m.ID)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// The caller (base scope) may read test://public/, not test://secret/.
	s := startStackWithRules(t, ln.Addr().String(), "resource_rule test://public/ "+baseScope)
	tok := s.clientCredentialsToken(ctx, t)
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "answers", Version: "1.0.0"}, nil).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.Resource, HTTPClient: hc, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatalf("connect through the gateway: %v", err)
	}
	defer cs.Close()
	type read struct {
		res *mcp.ReadResourceResult
		err error
	}
	reads := make(chan read, 1)
	go func() {
		res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "test://public/a"})
		reads <- read{res, err}
	}()
	callCtx, stopCall := context.WithTimeout(ctx, 10*time.Second)
	defer stopCall()
	res, err := cs.CallTool(callCtx, &mcp.CallToolParams{Name: permitTool, Arguments: map[string]any{}})
	t.Logf("CallTool = %+v, %v", res, err)
	// The read's own stream ends only once the call's stream was read
	// (or after a while, when the gateway ended that stream).
	var got read
	select {
	case got = <-reads:
	case <-time.After(3 * time.Second):
		free()
		select {
		case got = <-reads:
		case <-time.After(10 * time.Second):
			t.Fatal("ReadResource did not return")
		}
	}
	if got.res != nil {
		for _, c := range got.res.Contents {
			if strings.Contains(c.Text, "TOPSECRET") {
				t.Fatalf("ReadResource = %s %q: the client read test://secret/key's contents, which the resource rules keep from it", c.URI, c.Text)
			}
		}
	}
	t.Logf("ReadResource = %+v, %v", got.res, got.err)
}

// startStackWithRules is startStack with rules put before the gateway's
// own resource rules.
func startStackWithRules(t *testing.T, upstreamHost, rules string) *stack {
	t.Helper()
	tmpl := strings.Replace(caddyfileTemplate, "\t\tresource_rule {{.NotesURI}}", "\t\t"+rules+"\n\t\tresource_rule {{.NotesURI}}", 1)
	if tmpl == caddyfileTemplate {
		t.Fatal("the Caddyfile template has no resource rules to put rules before")
	}
	return startStackFrom(t, tmpl, upstreamHost, "")
}
