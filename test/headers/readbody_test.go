package headers

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestReadBodyTimeout: Caddy reads a request body for as long as its
// bytes keep coming, unless the server's timeouts set read_body, which
// README (Limits: slow request bodies) advises. With read_body 2s, a
// body trickled slower is cut and never reaches the upstream, and an
// answer streamed for longer than read_body (a tool call's SSE events
// over 3 s) still reaches the caller whole: read_body bounds reading the
// request, not writing its answer.
func TestReadBodyTimeout(t *testing.T) {
	var calls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.ReadAll(r.Body)
		if strings.Contains(string(got), `"tools/list"`) { // the gateway learning the tool's definition
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}`)
			return
		}
		calls.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		if !streamEvents(w, r, 6, 500*time.Millisecond) {
			return
		}
		io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"done\"}]}}\n\n")
	}))
	t.Cleanup(up.Close)
	port, token := startWithTimeouts(t, "read_body 2s", up.URL, "flush_interval -1")
	const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	head := fmt.Sprintf("POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%sMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n",
		port, base, token, len(body))
	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		return c
	}

	t.Run("answer streamed past read_body", func(t *testing.T) {
		c := dial(t)
		io.WriteString(c, head+body)
		got, _ := io.ReadAll(c)
		if n := strings.Count(string(got), "notifications/message"); n != 6 || !strings.Contains(string(got), `"text":"done"`) {
			t.Errorf("a 3 s stream under read_body 2s: %d of 6 events, result there: %v; got %q", n, strings.Contains(string(got), `"text":"done"`), got)
		}
	})

	t.Run("body trickled past read_body", func(t *testing.T) {
		before := calls.Load()
		c := dial(t)
		io.WriteString(c, head)
		sent := make(chan bool, 1) // whether the whole body went out
		go func() {
			for i := range len(body) {
				if _, err := io.WriteString(c, body[i:i+1]); err != nil {
					sent <- false
					return
				}
				time.Sleep(50 * time.Millisecond) // 150 bytes: 7.5 s
			}
			sent <- true
		}()
		io.ReadAll(c) // until Caddy closes the connection
		c.Close()
		if <-sent {
			t.Error("a body trickled over 7.5 s was read whole under read_body 2s")
		}
		if n := calls.Load() - before; n != 0 {
			t.Errorf("the upstream got %d requests from the cut body, want none", n)
		}
	})
}
