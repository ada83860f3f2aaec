package headers

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const emptyTrailers = "0\r\nset-cookie: issuer_session=attacker; Path=/\r\nmcp-session-id: upstream-raw-trailer\r\n\r\n"

// trailerUpstream answers with bytes as given: initialize and tools/list
// normally, everything else with an empty chunked body whose trailers
// (announced in lower case) are Set-Cookie and Mcp-Session-Id.
func trailerUpstream(t *testing.T) string {
	return rawUpstream(t, func(body string) string {
		switch {
		case strings.Contains(body, `"notifications/`):
			return "HTTP/1.1 202 Accepted\r\ntrailer: set-cookie, mcp-session-id\r\nTransfer-Encoding: chunked\r\n\r\n" + emptyTrailers
		case strings.Contains(body, `"emptyerror"`):
			return "HTTP/1.1 500 Internal Server Error\r\ntrailer: set-cookie, mcp-session-id\r\nTransfer-Encoding: chunked\r\n\r\n" + emptyTrailers
		}
		return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ntrailer: set-cookie, mcp-session-id\r\nTransfer-Encoding: chunked\r\n\r\n" + emptyTrailers
	})
}

// rawUpstream answers with bytes as given: initialize and tools/list
// normally, every other request with other(body).
func rawUpstream(t *testing.T, other func(body string) string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(r.Body)
					body := string(b)
					var resp string
					switch {
					case strings.Contains(body, `"initialize"`):
						js := `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"rec","version":"1"}}}`
						resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: upstream-session-1\r\nContent-Length: %d\r\n\r\n%s", len(js), js)
					case strings.Contains(body, `"tools/list"`):
						i := strings.Index(body, `"id":`) + 5
						id := body[i : i+strings.IndexAny(body[i:], ",}")]
						js := `{"jsonrpc":"2.0","id":` + id + `,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}`
						resp = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(js), js)
					default:
						resp = other(body)
					}
					if _, err := io.WriteString(c, resp); err != nil {
						return
					}
				}
			}(c)
		}
	}()
	return l.Addr().String()
}

func startTrailerStack(t *testing.T, encode bool, pin string) *probeStack {
	return startProxyStack(t, trailerUpstream(t), encode, pin)
}

// startProxyStack runs a site with the issuer, a gateway (pinning pin)
// and reverse_proxy to up, with encode in it when encode.
func startProxyStack(t *testing.T, up string, encode bool, pin string) *probeStack {
	port := harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	enc := ""
	if encode {
		enc = "encode"
	}
	harness.Start(t, globalOptions(t, issuer, "")+fmt.Sprintf(`
http://:%[3]d {
	bind 127.0.0.1
	mcp_issuer
	%[5]s
	mcp_gateway {
		resource %[1]s/mcp
		scope %[2]s
		tool * %[2]s
		pin_tools %[6]s
	}
	reverse_proxy %[4]s
}
`, issuer, scope, port, up, enc, pin))
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	return &probeStack{resource: issuer + "/mcp", issuer: issuer}
}

// TestEncodeEmptyBodyTrailers: with Caddy's encode in the site (the
// directive order puts it around mcp_gateway), an answer with an empty
// body that the gateway does not hold (a 202 to a notification, an empty
// 500, an empty JSON answer without pinning) has its header written only
// at encode's Close, after reverse_proxy copied the upstream's announced
// trailers into it: an upstream Set-Cookie or its own Mcp-Session-Id
// must not go out as header fields then either (found by review; failed
// before the gateway cleaned the header when next returns).
func TestEncodeEmptyBodyTrailers(t *testing.T) {
	for _, encode := range []bool{false, true} {
		for _, pin := range []string{"off", "first_use"} {
			t.Run(fmt.Sprintf("encode=%v pin_tools=%s", encode, pin), func(t *testing.T) {
				s := startTrailerStack(t, encode, pin)
				tok, session := s.initialize(t, "Authorization")
				h25 := base + "MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer " + tok + "\r\nMcp-Session-Id: " + session + "\r\n"
				h26 := base + "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\nAuthorization: Bearer " + tok + "\r\n"
				meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
				for _, c := range []struct{ name, head, body string }{
					{"2025 notification, 202", h25, `{"jsonrpc":"2.0","method":"notifications/initialized"}`},
					{"2025 tools/call, empty 500", h25, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"emptyerror":true}}}`},
					{"2026 tools/call, empty 200 JSON", h26, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{},` + meta + `}}`},
				} {
					t.Run(c.name, func(t *testing.T) {
						resp, _ := rawResponse(t, s.resource, c.head, c.body)
						if v := resp.Header.Values("Set-Cookie"); len(v) > 0 {
							t.Errorf("%d: the upstream's Set-Cookie reached the client as a header field: %q", resp.StatusCode, v)
						}
						for _, v := range resp.Header.Values("Mcp-Session-Id") {
							if strings.Contains(v, "upstream") {
								t.Errorf("%d: the upstream's own session id reached the client as a header field: %q", resp.StatusCode, v)
							}
						}
					})
				}
			})
		}
	}
}

// redirectTrailerUpstream answers initialize and tools/list normally and
// everything else with a 307 of type text/plain, an empty chunked body
// and its Location as an announced trailer.
func redirectTrailerUpstream(t *testing.T) string {
	return rawUpstream(t, func(string) string {
		return "HTTP/1.1 307 Temporary Redirect\r\nContent-Type: text/plain\r\ntrailer: location\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"0\r\nlocation: http://evil.example/mcp\r\n\r\n"
	})
}

// TestEncodeTrailerRedirect: with `encode` in the site (by the directive
// order it wraps mcp_gateway) and pinning on, a tools/call answered 307
// with a type the gateway passes unread, an empty body and the Location
// as a trailer: encode writes the header only at its Close, after
// reverse_proxy copied the trailer into the header, so the gateway puts
// every announced trailer field back as the header had it, whatever the
// answer's mode; the client got a redirect to an answer the gateway
// never reads (review s13-fresh4 F1).
func TestEncodeTrailerRedirect(t *testing.T) {
	for _, encode := range []bool{false, true} {
		t.Run(fmt.Sprintf("encode=%v", encode), func(t *testing.T) {
			s := startProxyStack(t, redirectTrailerUpstream(t), encode, "first_use")
			tok, session := s.initialize(t, "Authorization")
			h25 := base + "MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer " + tok + "\r\nMcp-Session-Id: " + session + "\r\n"
			// Pin the tools first.
			raw(t, s.resource, h25, listBody)
			resp, body := rawResponse(t, s.resource, h25, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}`)
			if loc := resp.Header.Values("Location"); len(loc) > 0 {
				t.Errorf("%d with Location %q as a header field (a redirect clients follow to an unread answer); body %q", resp.StatusCode, loc, body)
			}
		})
	}
}

// TestHeldAnswerKeepsWriteIdleTimeout: the gateway writes a held answer
// (a filtered tools list) within a deadline of its own and lifts it
// afterwards; under Caddy the lift also reaches the write idle timeout
// (write_idle) Caddy set for the write, so an answer still buffered when
// the handler returned was flushed with no deadline at all, and a caller
// that pipelines requests and never reads kept its connection, goroutine
// and buffers for good (review s14-fresh3 M1). With the answer flushed
// before the lift, Caddy closes such a connection within write_idle.
func TestHeldAnswerKeepsWriteIdleTimeout(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"`+strings.Repeat("x", 1200)+`"}]}}`)
	}))
	t.Cleanup(up.Close)
	port, token := startWithTimeouts(t, "write_idle 300ms", up.URL, "")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return cmp.Or(err, serr)
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	req := fmt.Sprintf("POST /mcp HTTP/1.1\r\nHost: %s\r\n%sMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s",
		addr, base, token, len(body), body)
	// Pipelined requests whose answers are never read: the socket
	// buffers fill, an answer's write stalls, and Caddy must close the
	// connection, which ends these writes with an error.
	ended := make(chan error, 1)
	go func() {
		for range 20000 {
			if _, err := io.WriteString(conn, req); err != nil {
				ended <- err
				return
			}
		}
		ended <- nil
	}()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("20000 pipelined requests were all taken, none of their answers read: the test could not fill the buffers")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the connection of a caller that reads nothing is still open 15 s past a 300 ms write_idle")
	}
}

// TestHeldEventKeepsWriteTimeout: an event held while written (it came
// from the upstream in two pieces) gets a write deadline of its own;
// after it the stream must still end at the server's write_timeout, as
// plain reverse_proxy's would, not go on with no deadline at all. Caddy
// runs with write_timeout 2s and its write idle timeout off, so the
// write timeout is the only deadline; the upstream streams for 8 s.
func TestHeldEventKeepsWriteTimeout(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"`)
		w.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "held\"}]}}\n\n")
		w.(http.Flusher).Flush()
		streamEvents(w, r, 40, 200*time.Millisecond)
	}))
	t.Cleanup(up.Close)
	port, token := startWithTimeouts(t, "write 2s\n\t\t\twrite_idle -1s", up.URL, "flush_interval -1")
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	start := time.Now()
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/list\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s",
		port, base, token, len(body), body)
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	got, _ := io.ReadAll(conn)
	took := time.Since(start)
	if !strings.Contains(string(got), `held"}]}}`) {
		t.Fatalf("the held event was not answered; got %q", got)
	}
	if n := strings.Count(string(got), "notifications/message"); took > 5*time.Second || n > 20 {
		t.Errorf("the stream went on %v (%d events after the held one) past a 2 s write_timeout", took.Round(time.Millisecond), n)
	}
}

// streamEvents writes n notifications/message events to an event
// stream, one every interval, each flushed, until r's context ends; it
// reports whether all were written.
func streamEvents(w http.ResponseWriter, r *http.Request, n int, every time.Duration) bool {
	for i := range n {
		select {
		case <-r.Context().Done():
			return false
		case <-time.After(every):
		}
		fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":%d}}\n\n", i)
		w.(http.Flusher).Flush()
	}
	return true
}

// startWithTimeouts starts Caddy with the timeouts given (lines of a
// timeouts block) on one site: a gateway allowing every tool, and
// reverse_proxy to upstream with proxy in its block. The issuer is a site
// of its own, on another port without them: the token's answer under a
// 2 s write timeout failed on a machine busy with other packages' tests.
// It returns the gateway site's port and a token for its resource.
func startWithTimeouts(t *testing.T, timeouts, upstream, proxy string) (int, string) {
	port, issuerPort := harness.FreePort(t), harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", issuerPort)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	harness.Start(t, globalOptions(t, issuer, fmt.Sprintf("servers 127.0.0.1:%d {\n\t\ttimeouts {\n\t\t\t%s\n\t\t}\n\t}", port, timeouts))+fmt.Sprintf(`
http://:%[1]d {
	bind 127.0.0.1
	mcp_issuer
}

http://:%[3]d {
	bind 127.0.0.1
	mcp_gateway {
		resource %[6]s/mcp
		scope %[2]s
		tool * %[2]s
	}
	reverse_proxy %[4]s {
		%[5]s
	}
}
`, issuerPort, scope, port, upstream, proxy, site))
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	s := &probeStack{resource: site + "/mcp", issuer: issuer}
	tok, err := s.fetchToken(s.resource)
	if err != nil {
		t.Fatal(err)
	}
	return port, tok
}
