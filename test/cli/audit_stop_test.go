package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestStopAuditsRequestsInFlight: Caddy stopped (SIGINT, as Ctrl-C,
// SIGTERM and `caddy stop` do) while a GET event stream and a tool call
// the upstream has not answered yet are in flight past its grace_period:
// both were forwarded, so both must be in the audit log when the process
// has exited, through the buffered writer as well (whose timer never
// fires here). They were lost: the process exited while the gateway still
// held them, and the buffer was written out before their events came.
func TestStopAuditsRequestsInFlight(t *testing.T) { stopAuditsRequestsInFlight(t, false, false, false) }

// TestStopAuditsRequestsInFlightAfterReload: the same, with a reload
// between the call's start and the stop. The reload ends the GET stream
// (audited then); the call, answered in JSON, runs on under the unloaded
// configuration, whose gateway was not stopped at the exit: the process
// exited with the call unaudited, though the upstream had it.
func TestStopAuditsRequestsInFlightAfterReload(t *testing.T) {
	stopAuditsRequestsInFlight(t, true, false, false)
}

// TestStopAuditsRequestsInFlightAfterReloadChangingWriter: the same, the
// reload changing the buffered audit writer's flush_interval (1h to 2h):
// the new configuration gets another buffer, and the unloaded one's
// gateway audited the GET stream it ended and the call still running
// into the old buffer, which nothing wrote out.
func TestStopAuditsRequestsInFlightAfterReloadChangingWriter(t *testing.T) {
	stopAuditsRequestsInFlight(t, true, true, false)
}

// TestStopAuditsRequestsInFlightAfterReloadWithoutGateway: the same, the
// reload taking the mcp_gateway out of the configuration: the unloaded
// gateways were stopped at the exit only from the Cleanup of a gateway
// of the configuration running then, and there was none, so the call
// running on under the unloaded one went unaudited.
func TestStopAuditsRequestsInFlightAfterReloadWithoutGateway(t *testing.T) {
	stopAuditsRequestsInFlight(t, true, false, true)
}

func stopAuditsRequestsInFlight(t *testing.T, reload, changeWriter, dropGateway bool) {
	e := newEnv(t)
	port, adminPort := harness.FreePort(t), harness.FreePort(t)
	auditLog := filepath.Join(e.Home, "audit.log")
	called := make(chan string, 4)
	release := make(chan struct{})
	defer close(release)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, ": open\n\n")
			w.(http.Flusher).Flush()
			called <- "GET"
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		_ = json.NewDecoder(r.Body).Decode(&m)
		switch m.Method {
		case "initialize":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Mcp-Session-Id", "upstream-session")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"u","version":"1"}}}`, m.ID)
		case "tools/call":
			called <- "tools/call"
			select { // a long tool call, forwarded: the upstream acts on it
			case <-r.Context().Done():
			case <-release:
			}
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer upstream.Close()
	secret := "stop audit client secret"
	caddyfile := fmt.Sprintf(`{
	admin localhost:%[1]d
	grace_period 500ms
	mcp_auth {
		issuer http://127.0.0.1:%[2]d
		storage memory
		client bot {
			secret %[3]s
			grant_types client_credentials
		}
	}
	log mcp_audit {
		include http.handlers.mcp_gateway.audit
		output buffered {
			output file %[4]s
			flush_interval 1h
		}
		format json
	}
}

http://127.0.0.1:%[2]d {
	mcp_issuer
	mcp_gateway {
		resource http://127.0.0.1:%[2]d/mcp
		tool *
		pin_tools off
	}
	reverse_proxy %[5]s {
		flush_interval -1
	}
}
`, adminPort, port, harness.HashPassword(t, secret), auditLog, strings.TrimPrefix(upstream.URL, "http://"))
	config := e.Write(t, "Caddyfile", caddyfile)
	p := e.Run(t, config, fmt.Sprintf("http://127.0.0.1:%d/.well-known/oauth-authorization-server", port))

	ctx := t.Context()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	resource := base + "/mcp"
	var tok harness.TokenResponse
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("bot", url.QueryEscape(secret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("token = %d, %v", resp.StatusCode, err)
	}
	resp, body, err := harness.SessionPost(ctx, http.DefaultClient, resource, tok.AccessToken, "",
		`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize = %v %v: %s", resp, err, body)
	}
	session := resp.Header.Get("Mcp-Session-Id")

	// The GET stream and the call stay in flight until the process ends.
	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(reqCtx, http.MethodGet, resource, nil)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		req.Header.Set("Mcp-Session-Id", session)
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	go func() {
		_, _, _ = harness.SessionPost(reqCtx, http.DefaultClient, resource, tok.AccessToken, session,
			`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_everything","arguments":{}}}`)
	}()
	for range 2 {
		select {
		case <-called:
		case <-time.After(10 * time.Second):
			t.Fatalf("the upstream did not get the GET stream and the call:\n%s", p.Output())
		}
	}

	if reload {
		// The same configuration, loaded again (must-revalidate: Caddy
		// skips a configuration it runs already).
		next := caddyfile
		if changeWriter {
			next = strings.Replace(caddyfile, "flush_interval 1h", "flush_interval 2h", 1)
		}
		if dropGateway {
			i, j := strings.Index(next, "\tmcp_gateway {"), strings.Index(next, "\treverse_proxy")
			next = next[:i] + next[j:]
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://localhost:%d/load", adminPort), strings.NewReader(next))
		req.Header.Set("Content-Type", "text/caddyfile")
		req.Header.Set("Cache-Control", "must-revalidate")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("reload = %d", resp.StatusCode)
		}
		// Past the old servers' grace_period: the call runs on.
		time.Sleep(time.Second)
	}
	p.Stop()
	b, err := os.ReadFile(auditLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var sawGET, sawCall bool
	for line := range strings.Lines(string(b)) {
		var ev struct {
			HTTPMethod string `json:"http_method"`
			Method     string `json:"method"`
			Tool       string `json:"tool"`
			Decision   string `json:"decision"`
			Principal  string `json:"principal"`
			Status     int    `json:"status"`
			Reason     string `json:"reason"`
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		switch {
		case ev.HTTPMethod == http.MethodGet && ev.Decision == "allow" && ev.Principal == "bot":
			// The stream had begun: it was cut, saying why.
			why := "stopping"
			if reload {
				why = "reloaded"
			}
			sawGET = ev.Status == http.StatusOK && strings.Contains(ev.Reason, why)
		case ev.Method == "tools/call" && ev.Tool == "delete_everything" && ev.Decision == "allow" && ev.Principal == "bot":
			// Not answered yet: the client got 503, and so says the event.
			sawCall = ev.Status == http.StatusServiceUnavailable && strings.Contains(ev.Reason, "stopping")
		}
	}
	if !sawGET || !sawCall {
		t.Errorf("after the stop, audit events of the GET stream: %v, of the forwarded tool call: %v; want both:\n%s\ncaddy:\n%s", sawGET, sawCall, b, p.Output())
	}
}
