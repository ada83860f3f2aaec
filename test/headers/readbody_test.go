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

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
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

// TestRequestBodyMaxSize: a site's request_body max_size in front of the
// gateway bounds what it reads below its own max_body_size. A body over
// it is answered 413, as the gateway answers one over its own limit
// (JSON-RPC -32600), with Content-Length (Caddy refuses it) and chunked
// (the gateway's read stops at the bound), and never reaches the
// upstream; a body within it is forwarded.
func TestRequestBodyMaxSize(t *testing.T) {
	var calls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(got), `"tools/list"`) { // the gateway learning the tool's definition
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}`)
			return
		}
		calls.Add(1)
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	}))
	t.Cleanup(up.Close)
	port, issuerPort := harness.FreePort(t), harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", issuerPort)
	site := fmt.Sprintf("http://127.0.0.1:%d", port)
	harness.Start(t, globalOptions(t, issuer, "")+fmt.Sprintf(`
http://:%[1]d {
	bind 127.0.0.1
	mcp_issuer
}

http://:%[3]d {
	bind 127.0.0.1
	request_body {
		max_size 400
	}
	mcp_gateway {
		resource %[5]s/mcp
		scope %[2]s
		tool * %[2]s
	}
	reverse_proxy %[4]s
}
`, issuerPort, scope, port, up.URL, site))
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	s := &probeStack{resource: site + "/mcp", issuer: issuer}
	tok, err := s.fetchToken(s.resource)
	if err != nil {
		t.Fatal(err)
	}
	call := func(pad int) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":"` + strings.Repeat("a", pad) + `"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	}
	for _, tt := range []struct {
		name    string
		body    string
		chunked bool
		status  int
	}{
		{"within", call(10), false, 200},
		{"within, chunked", call(10), true, 200},
		{"over", call(500), false, 413},
		{"over, chunked", call(500), true, 413},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := calls.Load()
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				pr, pw := io.Pipe()
				go func() { io.WriteString(pw, tt.body); pw.Close() }()
				body = pr
			}
			req, _ := http.NewRequest(http.MethodPost, site+"/mcp", body)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2026-07-28")
			req.Header.Set("Mcp-Method", "tools/call")
			req.Header.Set("Mcp-Name", "echo")
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.status, got)
			}
			if tt.status != 200 {
				if calls.Load() != before {
					t.Error("a body over max_size reached the upstream")
				}
				if tt.chunked && !strings.Contains(string(got), `"code":-32600`) {
					t.Errorf("answer %s, want JSON-RPC -32600", got)
				}
			} else if calls.Load() != before+1 {
				t.Error("a body within max_size did not reach the upstream")
			}
		})
	}
}

// TestIssuerRequestBodyMaxSize: a site's request_body max_size in front
// of mcp_issuer bounds what its endpoints read below their own limits. A
// body over it is answered 413 at every back-channel endpoint, at
// /userinfo and at the pages' forms, with Content-Length (Caddy refuses
// it) and chunked (the endpoint's read stops at the bound:
// invalid_request, "request body too large", or a "Request too large"
// page), and a registration over it is answered no client; one within it
// is read.
func TestIssuerRequestBodyMaxSize(t *testing.T) {
	issuerPort := harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", issuerPort)
	// No gateway here: a resource offers the probe client's scope.
	global := strings.Replace(globalOptions(t, issuer, ""), "\t\tclient probe-bot {", "\t\tresource "+issuer+"/mcp {\n\t\t\tscopes "+scope+"\n\t\t}\n\t\tclient probe-bot {", 1)
	harness.Start(t, global+fmt.Sprintf(`
http://:%[1]d {
	bind 127.0.0.1
	request_body {
		max_size 300
	}
	mcp_issuer
}
`, issuerPort))
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	register := func(name string) string {
		return `{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none","client_name":"` + name + `"}`
	}
	send := func(t *testing.T, path, contentType, body string, chunked bool) (int, string, http.Header) {
		t.Helper()
		var r io.Reader = strings.NewReader(body)
		if chunked {
			pr, pw := io.Pipe()
			go func() { io.WriteString(pw, body); pw.Close() }()
			r = pr
		}
		req, _ := http.NewRequest(http.MethodPost, issuer+path, r)
		req.Header.Set("Content-Type", contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(got), resp.Header
	}
	const form = "application/x-www-form-urlencoded"
	pad := strings.Repeat("a", 400)
	for _, tt := range []struct {
		name, path, contentType, body string
		status                        int
	}{
		{"register within", "/register", "application/json", register("Within"), http.StatusCreated},
		{"register over", "/register", "application/json", register(pad), http.StatusRequestEntityTooLarge},
		{"token over", "/token", form, "grant_type=client_credentials&scope=" + pad, http.StatusRequestEntityTooLarge},
		{"par over", "/par", form, "client_id=x&state=" + pad, http.StatusRequestEntityTooLarge},
		{"revoke over", "/revoke", form, "token=" + pad, http.StatusRequestEntityTooLarge},
		{"introspect over", "/introspect", form, "token=" + pad, http.StatusRequestEntityTooLarge},
		// The pages' forms and /userinfo's form body, as the browser or
		// client sends it: an error page, a challenge.
		{"userinfo over", "/userinfo", form, "x=" + pad, http.StatusRequestEntityTooLarge},
		{"sign-in over", "/login", form, "username=a&password=" + pad, http.StatusRequestEntityTooLarge},
		{"consent over", "/consent", form, "req=" + pad, http.StatusRequestEntityTooLarge},
		{"sign-out over", "/logout", form, "post_logout_redirect_uri=" + pad, http.StatusRequestEntityTooLarge},
		{"apps over", "/apps", form, "revoke=" + pad, http.StatusRequestEntityTooLarge},
		{"authorize over", "/authorize", form, "client_id=x&state=" + pad, http.StatusRequestEntityTooLarge},
	} {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, chunked %v", tt.name, chunked), func(t *testing.T) {
				status, got, header := send(t, tt.path, tt.contentType, tt.body, chunked)
				if status != tt.status {
					t.Fatalf("status = %d, want %d (%s)", status, tt.status, got)
				}
				if chunked && status == http.StatusRequestEntityTooLarge && !strings.Contains(got, `"error":"invalid_request"`) &&
					!strings.Contains(header.Get("WWW-Authenticate"), `error="invalid_request"`) && !strings.Contains(got, "Request too large") {
					t.Errorf("answer %s, want invalid_request, or a page saying the request is too large", got)
				}
				if status != http.StatusCreated && strings.Contains(got, "client_id") {
					t.Errorf("a registration over max_size was answered with a client: %s", got)
				}
			})
		}
	}
}
