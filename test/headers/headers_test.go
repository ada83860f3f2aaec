// Package headers probes the gateway's per-request header handling through
// Caddy: what reaches the upstream, what Caddy placeholders evaluated by
// reverse_proxy see while the gateway's request is under way, and what
// error routes see afterwards.
package headers

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	ccClient = "probe-bot"
	ccSecret = "probe-bot-secret-0123456789abcdef"
	scope    = "mcp:tools"
)

// recorder is an MCP upstream that keeps the header of every request,
// with the request's Host under that name.
type recorder struct {
	mu   sync.Mutex
	reqs []http.Header
}

func (u *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	h := r.Header.Clone()
	h.Set("Host", r.Host)
	u.reqs = append(u.reqs, h)
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if strings.Contains(string(body), `"initialize"`) {
		w.Header().Set("Mcp-Session-Id", "upstream-session-1")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"rec","version":"1"}}}`)
		return
	}
	if strings.Contains(string(body), `"tools/list"`) {
		io.WriteString(w, `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}`)
		return
	}
	if strings.Contains(string(body), `"hostfields"`) {
		// Fields a browser applies to the whole host.
		w.Header().Set("Strict-Transport-Security", "max-age=0")
		w.Header().Set("Alt-Svc", `h2="evil.example:443"`)
	}
	if strings.Contains(string(body), `"trailers"`) {
		// Set-Cookie and a session id as trailers, after the body.
		w.Header().Set("Trailer", "Set-Cookie, Mcp-Session-Id")
		io.WriteString(w, `{"jsonrpc":"2.0","id":3,"result":{"content":[]}}`)
		w.Header().Set("Set-Cookie", "mcp_auth_session=fixed; Path=/")
		w.Header().Set("Mcp-Session-Id", "upstream-trailer-session")
		return
	}
	io.WriteString(w, `{"jsonrpc":"2.0","id":3,"result":{"content":[]}}`)
}

// all returns the headers of every request so far.
func (u *recorder) all() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.reqs...)
}

func (u *recorder) last(t *testing.T) http.Header {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("the upstream received nothing")
	}
	return u.reqs[len(u.reqs)-1]
}

type probeStack struct {
	resource, broken, issuer string
	up                       *recorder
}

// startProbe runs Caddy (HTTP/1.1 and h2c) with a gateway in front of a
// recording upstream whose reverse_proxy copies client header fields into
// X-Seen-* through placeholders, and a second gateway whose upstream is
// down and whose error route echoes the same placeholders.
func startProbe(t *testing.T) *probeStack {
	up := &recorder{}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	port := harness.FreePort(t)
	dead := harness.FreePort(t) // nothing listens there
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	s := &probeStack{resource: issuer + "/mcp", broken: issuer + "/broken/mcp", issuer: issuer, up: up}
	caddyfile := globalOptions(t, issuer, "servers {\n\t\tprotocols h1 h2c\n\t}") + fmt.Sprintf(`
http://:%[3]d {
	bind 127.0.0.1
	mcp_issuer
	@broken path /broken/mcp /.well-known/oauth-protected-resource/broken/mcp
	handle @broken {
		mcp_gateway {
			resource %[1]s/broken/mcp
			scope %[2]s
			tool * %[2]s
			forward_identity
		}
		reverse_proxy 127.0.0.1:%[5]d
	}
	handle {
		header Strict-Transport-Security "max-age=63072000"
		mcp_gateway {
			resource %[1]s/mcp
			scope %[2]s
			tool * %[2]s
			forward_identity
			pin_tools first_use
		}
		reverse_proxy %[4]s {
			header_up X-Seen-Auth {http.request.header.Authorization}
			header_up X-Seen-Cookie {http.request.header.Cookie}
			header_up X-Seen-Subject {http.request.header.X-Mcp-Subject}
			header_up X-Seen-Session {http.request.header.Mcp-Session-Id}
			header_up X-Seen-Host {host}
			header_up X-Seen-Hostport {http.request.hostport}
			header_up X-Seen-Port {http.request.port}
			header_up X-Seen-Labels "{labels.5}|{labels.4}|{labels.3}.{labels.2}.{labels.1}.{labels.0}"
		}
	}
	handle_errors {
		respond "auth=[{http.request.header.Authorization}] subject=[{http.request.header.X-Mcp-Subject}] session=[{http.request.header.Mcp-Session-Id}] host=[{http.request.hostport}]" 502
	}
}
`, issuer, scope, port, srv.Listener.Addr().String(), dead)
	harness.Start(t, caddyfile)
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	return s
}

func (s *probeStack) tokenFor(t *testing.T, resource string) string {
	t.Helper()
	tok, err := s.fetchToken(resource)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// fetchToken gets an access token for resource with client credentials.
func (s *probeStack) fetchToken(resource string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := clientcredentials.Config{
		ClientID: ccClient, ClientSecret: ccSecret,
		TokenURL:       s.issuer + "/token",
		Scopes:         []string{scope},
		EndpointParams: url.Values{"resource": {resource}},
	}
	md, err := harness.Discover(ctx, s.issuer)
	if err != nil {
		return "", err
	}
	cfg.TokenURL = md.TokenEndpoint
	tok, err := cfg.Token(ctx)
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// globalOptions is a Caddyfile's global options block: the issuer at
// issuer with the probe's client, extra (e.g. a servers block) added.
func globalOptions(t *testing.T, issuer, extra string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	storage file_system %s
	%s
	mcp_auth {
		issuer %s
		storage bolt %s
		client %s {
			name "Probe"
			secret %s
			grant_types client_credentials
			auth_method client_secret_basic
			scopes %s
		}
	}
}
`, t.TempDir(), extra, issuer, t.TempDir()+"/db", ccClient, harness.HashPassword(t, ccSecret), scope)
}

// raw sends a request whose header is written exactly as given (names
// as spelled, duplicates kept) over HTTP/1.1.
func raw(t *testing.T, target, head, body string) (int, http.Header, string) {
	t.Helper()
	resp, b := rawResponse(t, target, head, body)
	return resp.StatusCode, resp.Header, b
}

// rawResponse is raw's answer whole, trailers included.
func rawResponse(t *testing.T, target, head, body string) (*http.Response, string) {
	t.Helper()
	u, _ := url.Parse(target)
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n%s", u.Path, u.Host, len(body), head, body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const (
	initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"p","version":"1"}}}`
	listBody = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	// base is the head every probe request starts with.
	base = "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
)

// initialize starts a session at the probe's resource with a fresh token,
// sent in an Authorization field spelled authField; it returns both.
func (s *probeStack) initialize(t *testing.T, authField string) (token, session string) {
	t.Helper()
	token = s.tokenFor(t, s.resource)
	status, h, body := raw(t, s.resource, base+authField+": Bearer "+token+"\r\n", initBody)
	session = h.Get("Mcp-Session-Id")
	if status != http.StatusOK || session == "" {
		t.Fatalf("initialize = %d %q %s", status, session, body)
	}
	return token, session
}

// TestHeaderProbe: whatever spelling or number the client gives them,
// credentials, identity and session headers never reach the upstream
// (neither as fields nor through placeholders read during the proxying),
// and error routes see the client's header as it came, but for its
// credentials.
func TestHeaderProbe(t *testing.T) {
	s := startProbe(t)
	tok, session := s.initialize(t, "authorization")

	cases := []struct {
		name, head string
	}{
		{"canonical", "Authorization: Bearer " + tok + "\r\nMcp-Session-Id: " + session + "\r\nCookie: sid=secret\r\nX-Mcp-Subject: mallory\r\nDPoP: proof\r\n"},
		{"lower case", "authorization: Bearer " + tok + "\r\nmcp-session-id: " + session + "\r\ncookie: sid=secret\r\nx-mcp-subject: mallory\r\ndpop: proof\r\n"},
		{"upper case", "AUTHORIZATION: Bearer " + tok + "\r\nMCP-SESSION-ID: " + session + "\r\nCOOKIE: sid=secret\r\nX-MCP-SUBJECT: mallory\r\nDPOP: proof\r\n"},
		{"underscores", "Authorization: Bearer " + tok + "\r\nMcp-Session-Id: " + session + "\r\nX_Mcp_Subject: mallory\r\nMcp_Session_Id: other\r\nX-Http-Method_Override: DELETE\r\n"},
		{"duplicate cookie", "Authorization: Bearer " + tok + "\r\nMcp-Session-Id: " + session + "\r\nCookie: a=1\r\ncookie: b=2\r\nX-Mcp-Subject: mallory\r\nx-mcp-subject: eve\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, _, body := raw(t, s.resource, base+"MCP-Protocol-Version: 2025-11-25\r\n"+c.head, listBody)
			if status != http.StatusOK {
				t.Fatalf("tools/list = %d %s", status, body)
			}
			got := s.up.last(t)
			for k, v := range got {
				lk := strings.ToLower(k)
				if strings.Contains(lk, "_") || lk == "cookie" || lk == "dpop" || lk == "authorization" {
					t.Errorf("upstream got %s: %q", k, v)
				}
			}
			if v := got.Values("X-Mcp-Subject"); len(v) != 1 || v[0] != ccClient {
				t.Errorf("upstream X-Mcp-Subject = %q, want [%s]", v, ccClient)
			}
			if v := got.Values("Mcp-Session-Id"); len(v) != 1 || v[0] != "upstream-session-1" {
				t.Errorf("upstream Mcp-Session-Id = %q, want the upstream's own id", v)
			}
			for _, k := range []string{"X-Seen-Auth", "X-Seen-Cookie"} {
				if v := got.Get(k); v != "" {
					t.Errorf("placeholder during proxying: upstream got %s = %q", k, v)
				}
			}
			if v := got.Get("X-Seen-Subject"); v != ccClient {
				t.Errorf("X-Seen-Subject = %q, want the gateway's %q", v, ccClient)
			}
			if v := got.Get("X-Seen-Session"); v != "upstream-session-1" {
				t.Errorf("X-Seen-Session = %q, want the upstream's id", v)
			}
		})
	}

	// Who and where the client is: the X-Forwarded- fields Caddy replaces
	// with its own (the client is none of its trusted_proxies), the
	// others the gateway drops; an option of GitHub's MCP server passes.
	t.Run("forwarding headers", func(t *testing.T) {
		head := "Authorization: Bearer " + tok + "\r\nMcp-Session-Id: " + session + "\r\n" +
			"X-Forwarded-For: 10.6.6.6\r\nX-Forwarded-Host: admin.internal\r\nX-Forwarded-Proto: https\r\n" +
			"Forwarded: for=10.6.6.6;host=admin.internal;proto=https\r\nX-Real-IP: 10.6.6.6\r\nTrue-Client-IP: 10.6.6.6\r\n" +
			"X-Consumer-Username: root\r\nX-Forwarded-Client-Cert: Subject=\"CN=root\"\r\nX-MCP-Actor-Chain: root\r\nX-MCP-Toolsets: repos\r\n"
		status, _, body := raw(t, s.resource, base+"MCP-Protocol-Version: 2025-11-25\r\n"+head, listBody)
		if status != http.StatusOK {
			t.Fatalf("tools/list = %d %s", status, body)
		}
		got := s.up.last(t)
		host := strings.TrimPrefix(s.issuer, "http://")
		for k, want := range map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Host": host, "X-Forwarded-Proto": "http", "X-Mcp-Toolsets": "repos"} {
			if v := got.Values(k); len(v) != 1 || v[0] != want {
				t.Errorf("upstream %s = %q, want [%s]", k, v, want)
			}
		}
		for _, k := range []string{"Forwarded", "X-Real-Ip", "True-Client-Ip", "X-Consumer-Username", "X-Forwarded-Client-Cert", "X-Mcp-Actor-Chain"} {
			if v := got.Values(k); len(v) != 0 {
				t.Errorf("upstream got %s: %q", k, v)
			}
		}
	})

	// The site answers any host; the request is authorized for the
	// resource, so the upstream (an ingress or virtual hosts routing by
	// host, say) gets it for the resource's host, whatever the client
	// addressed: a Host field, an absolute-form target, or :authority.
	t.Run("host", func(t *testing.T) {
		host := strings.TrimPrefix(s.issuer, "http://")
		u, _ := url.Parse(s.resource)
		head := base + "MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer " + tok + "\r\nMcp-Session-Id: " + session + "\r\n"
		for _, c := range []struct{ name, target, host string }{
			{"Host field", u.Path, "admin.internal"},
			{"Host field with the port", u.Path, "admin.internal:" + u.Port()},
			{"absolute form", "http://admin.internal" + u.Path, host},
			{"Host field of more labels than the resource's", u.Path, "d.c.b.a.admin.internal"},
		} {
			conn, err := net.Dial("tcp", u.Host)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n%s", c.target, c.host, len(listBody), head, listBody)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			conn.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: tools/list = %d %s", c.name, resp.StatusCode, b)
			}
			got := s.up.last(t)
			if v := got.Get("Host"); v != host {
				t.Errorf("%s: upstream Host = %q, want the resource's %q", c.name, v, host)
			}
			if v := got.Values("X-Forwarded-Host"); len(v) != 1 || v[0] != host {
				t.Errorf("%s: upstream X-Forwarded-Host = %q, want [%s]", c.name, v, host)
			}
			// reverse_proxy's placeholders see the host the request is
			// forwarded for too: `header_up Host {host}`, or an upstream
			// address built from it, would otherwise put the client's
			// choice back.
			if v, want := got.Get("X-Seen-Host"), u.Hostname(); v != want {
				t.Errorf("%s: {host} during proxying = %q, want the resource's %q", c.name, v, want)
			}
			if v := got.Get("X-Seen-Hostport"); v != host {
				t.Errorf("%s: {http.request.hostport} during proxying = %q, want the resource's %q", c.name, v, host)
			}
			// So do the host's labels ({labels.N}, as in a wildcard
			// site's `reverse_proxy {labels.2}.internal:8080`) and
			// port, also past the resource's last label.
			if v, want := got.Get("X-Seen-Labels"), "||"+u.Hostname(); v != want {
				t.Errorf("%s: {labels.5}|{labels.4}|{labels.3}.{labels.2}.{labels.1}.{labels.0} during proxying = %q, want the resource's %q", c.name, v, want)
			}
			if v := got.Get("X-Seen-Port"); v != u.Port() {
				t.Errorf("%s: {http.request.port} during proxying = %q, want the resource's %q", c.name, v, u.Port())
			}
		}
		h2cListing(t, u.Host, "http://admin.internal"+u.Path, http.Header{
			"Content-Type":         {"application/json"},
			"Accept":               {"application/json, text/event-stream"},
			"Mcp-Protocol-Version": {"2025-11-25"},
			"Authorization":        {"Bearer " + tok},
			"Mcp-Session-Id":       {session},
		})
		got := s.up.last(t)
		if v := got.Get("Host"); v != host {
			t.Errorf(":authority: upstream Host = %q, want the resource's %q", v, host)
		}
		if v := got.Get("X-Seen-Hostport"); v != host {
			t.Errorf(":authority: {http.request.hostport} during proxying = %q, want the resource's %q", v, host)
		}
	})

	t.Run("h2c", func(t *testing.T) {
		u, _ := url.Parse(s.resource)
		h2cListing(t, u.Host, s.resource, http.Header{
			"content-type":         {"application/json"},
			"accept":               {"application/json, text/event-stream"},
			"mcp-protocol-version": {"2025-11-25"},
			"authorization":        {"Bearer " + tok},
			"mcp-session-id":       {session},
			"cookie":               {"a=1", "b=2"},
			"x-mcp-subject":        {"mallory"},
		})
		got := s.up.last(t)
		if got.Get("Authorization") != "" || got.Get("Cookie") != "" || got.Get("X-Seen-Auth") != "" || got.Get("X-Mcp-Subject") != ccClient {
			t.Errorf("h2c: upstream got %v", got)
		}
	})

	t.Run("error route sees the client's header but its credentials", func(t *testing.T) {
		btok := s.tokenFor(t, s.broken)
		status, _, body := raw(t, s.broken, base+"Authorization: Bearer "+btok+"\r\nX-Mcp-Subject: as-sent\r\n", initBody)
		if status != http.StatusBadGateway {
			t.Fatalf("broken upstream = %d %s", status, body)
		}
		// Not the token: an error route may proxy to an error-page
		// service (TestErrorRoutesGetNoCredentials).
		want := "auth=[] subject=[as-sent] session=[] host=[" + strings.TrimPrefix(s.issuer, "http://") + "]"
		if body != want {
			t.Errorf("error route saw %q, want the header as it came, without Authorization: %q", body, want)
		}
	})
}

// TestForwardedHostFromTrustedProxy: behind a proxy reverse_proxy
// trusts, Caddy keeps the X-Forwarded-Host that proxy sent, the host the
// client named; the request is authorized for the resource, so an
// upstream that routes by X-Forwarded-Host (web frameworks trusting a
// proxy do) still gets it for the resource's host.
func TestForwardedHostFromTrustedProxy(t *testing.T) {
	up := &recorder{}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	port, tok := startWithTimeouts(t, "read_body 30s", srv.Listener.Addr().String(), "trusted_proxies 127.0.0.1/32")
	s := &probeStack{resource: fmt.Sprintf("http://127.0.0.1:%d/mcp", port), up: up}
	host := fmt.Sprintf("127.0.0.1:%d", port)
	status, h, body := raw(t, s.resource, base+"Authorization: Bearer "+tok+"\r\n", initBody)
	if status != http.StatusOK {
		t.Fatalf("initialize = %d %s", status, body)
	}
	head := base + "MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer " + tok + "\r\nMcp-Session-Id: " + h.Get("Mcp-Session-Id") + "\r\n"
	for _, xfh := range []string{"X-Forwarded-Host: admin.internal\r\n", "X-Forwarded-Host: " + host + "\r\nx-forwarded-host: admin.internal\r\n"} {
		if status, _, body := raw(t, s.resource, head+xfh, listBody); status != http.StatusOK {
			t.Fatalf("tools/list = %d %s", status, body)
		}
		got := up.last(t)
		if v := got.Values("X-Forwarded-Host"); len(v) != 1 || v[0] != host {
			t.Errorf("%q: upstream X-Forwarded-Host = %q, want the resource's [%s]", xfh, v, host)
		}
		if v := got.Get("Host"); v != host {
			t.Errorf("%q: upstream Host = %q, want the resource's %q", xfh, v, host)
		}
	}
}

// TestHostPlaceholdersAfterRequestCopy: a handler before the gateway
// that passes on a copy of the request (tracing), then one that sets the
// copy's Host to the resource's (request_header), leave Caddy's host
// placeholders reading the Host the client sent: the copy's Host naming
// the resource does not mean the placeholders do, and reverse_proxy's
// still see the resource's.
func TestHostPlaceholdersAfterRequestCopy(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	up := &recorder{}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	port := harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	harness.Start(t, globalOptions(t, issuer, "")+fmt.Sprintf(`
http://:%[3]d {
	bind 127.0.0.1
	tracing
	request_header Host 127.0.0.1:%[3]d
	mcp_issuer
	mcp_gateway {
		resource %[1]s/mcp
		scope %[2]s
		tool * %[2]s
	}
	reverse_proxy %[4]s {
		header_up X-Seen-Host {host}
		header_up X-Seen-Hostport {http.request.hostport}
	}
}
`, issuer, scope, port, srv.Listener.Addr().String()))
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	s := &probeStack{resource: issuer + "/mcp", issuer: issuer, up: up}
	tok := s.tokenFor(t, s.resource)
	host := strings.TrimPrefix(issuer, "http://")
	u, _ := url.Parse(s.resource)
	status, h, body := raw(t, s.resource, base+"Authorization: Bearer "+tok+"\r\n", initBody)
	if status != http.StatusOK {
		t.Fatalf("initialize = %d %s", status, body)
	}
	head := base + "MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer " + tok + "\r\nMcp-Session-Id: " + h.Get("Mcp-Session-Id") + "\r\n"
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: admin.internal\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n%s", u.Path, len(listBody), head, listBody)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list = %d %s", resp.StatusCode, b)
	}
	got := up.last(t)
	if v, want := got.Get("X-Seen-Host"), u.Hostname(); v != want {
		t.Errorf("{host} during proxying = %q, want the resource's %q", v, want)
	}
	if v := got.Get("X-Seen-Hostport"); v != host {
		t.Errorf("{http.request.hostport} during proxying = %q, want the resource's %q", v, host)
	}
}

// TestHostCopiedBeforeGateway: what a handler before the gateway copied
// from the request (vars, request_header, both ordered before
// mcp_gateway) holds the Host the client sent, in a site answering any
// host: the gateway cannot reach it. A map reads its source when the
// upstream request is made, so it reads the resource's host, as the host
// placeholders do. README (What the upstream receives) says so.
func TestHostCopiedBeforeGateway(t *testing.T) {
	up := &recorder{}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	port := harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	harness.Start(t, globalOptions(t, issuer, "")+fmt.Sprintf(`
http://:%[3]d {
	bind 127.0.0.1
	vars copied {labels.0}
	request_header X-Tenant {labels.0}
	@tenant header_regexp tenant Host ^([^:]+)
	request_header @tenant X-Captured 1
	map {labels.0} {mapped} {
		default {labels.0}
	}
	mcp_issuer
	mcp_gateway {
		resource %[1]s/mcp
		scope %[2]s
		tool * %[2]s
	}
	reverse_proxy %[4]s {
		header_up X-Seen-Vars {vars.copied}
		header_up X-Seen-Map {mapped}
		header_up X-Seen-Regexp {re.tenant.1}
	}
}
`, issuer, scope, port, srv.Listener.Addr().String()))
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	s := &probeStack{resource: issuer + "/mcp", issuer: issuer, up: up}
	tok := s.tokenFor(t, s.resource)
	status, h, body := raw(t, s.resource, base+"Authorization: Bearer "+tok+"\r\n", initBody)
	if status != http.StatusOK {
		t.Fatalf("initialize = %d %s", status, body)
	}
	head := base + "MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer " + tok + "\r\nMcp-Session-Id: " + h.Get("Mcp-Session-Id") + "\r\n"
	conn, err := net.Dial("tcp", strings.TrimPrefix(issuer, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: admin.internal\r\nConnection: close\r\nContent-Length: %d\r\n%s\r\n%s", len(listBody), head, listBody)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list = %d %s", resp.StatusCode, b)
	}
	got := up.last(t)
	// The resource's host is 127.0.0.1: its last label is "1".
	if v := got.Get("X-Seen-Map"); v != "1" {
		t.Errorf("map of {labels.0} during proxying = %q, want the resource's %q", v, "1")
	}
	if v := got.Get("X-Seen-Vars"); v != "internal" {
		t.Errorf("vars copied before the gateway = %q, want the client's %q (README says so)", v, "internal")
	}
	if v := got.Get("X-Tenant"); v != "internal" {
		t.Errorf("request_header set before the gateway = %q, want the client's %q (README says so)", v, "internal")
	}
	if v := got.Get("X-Seen-Regexp"); v != "admin.internal" {
		t.Errorf("header_regexp capture of Host before the gateway = %q, want the client's %q (README says so)", v, "admin.internal")
	}
}

// h2cListing sends a tools/list to target over h2c (prior knowledge) on a
// connection to addr, with header as given, and wants 200 over HTTP/2.
func h2cListing(t *testing.T, addr, target string, header http.Header) {
	t.Helper()
	client := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, _ string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(listBody))
	req.Header = header
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Fatalf("h2c tools/list to %s = %d %s %s", target, resp.StatusCode, resp.Proto, b)
	}
}

// TestPinFetchPlaceholders: the gateway's own tools/list request (tool
// pinning) goes through the same reverse_proxy as the client's requests;
// placeholders reading the client's header during it must see what is
// forwarded too, not the client's credentials.
func TestPinFetchPlaceholders(t *testing.T) {
	s := startProbe(t)
	tok, session := s.initialize(t, "Authorization")
	call := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}`
	status, _, body := raw(t, s.resource, base+"MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer "+tok+"\r\nMcp-Session-Id: "+session+"\r\nCookie: sid=secret\r\nX-Mcp-Subject: mallory\r\n", call)
	if status != http.StatusOK {
		t.Fatalf("tools/call = %d %s", status, body)
	}
	reqs := s.up.all()
	if len(reqs) < 3 {
		t.Fatalf("upstream got %d requests, want initialize, the gateway's tools/list and the call", len(reqs))
	}
	for i, got := range reqs[1:] {
		if v := got.Get("X-Seen-Auth"); v != "" {
			t.Errorf("request %d: placeholder {http.request.header.Authorization} gave the upstream %.30q...", i+1, v)
		}
		if v := got.Get("X-Seen-Cookie"); v != "" {
			t.Errorf("request %d: placeholder {http.request.header.Cookie} gave the upstream %q", i+1, v)
		}
		if v := got.Get("X-Seen-Subject"); v != ccClient {
			t.Errorf("request %d: placeholder {http.request.header.X-Mcp-Subject} = %q, want the gateway's %q", i+1, v, ccClient)
		}
	}
}

// TestUpstreamTrailers: an upstream's Set-Cookie and Mcp-Session-Id sent
// as trailers of a tools/call answer, which the gateway holds with
// pinning on, reach the client neither as header fields nor at all
// (reverse_proxy copies trailers into the header after the body, before
// the held answer is written).
func TestUpstreamTrailers(t *testing.T) {
	resp := startProbe(t).echo(t, `{"trailers":true}`)
	for _, h := range []http.Header{resp.Header, resp.Trailer} {
		if v := h.Values("Set-Cookie"); len(v) > 0 {
			t.Errorf("the upstream's Set-Cookie reached the client: %q", v)
		}
		for _, v := range h.Values("Mcp-Session-Id") {
			if strings.Contains(v, "upstream") {
				t.Errorf("the upstream's own session id reached the client: %q", v)
			}
		}
	}
}

// TestUpstreamHostFields: the upstream's Strict-Transport-Security and
// Alt-Svc, which a browser applies to the whole host (max-age=0 would
// lift the issuer's HSTS policy), do not reach the client; the HSTS
// value of the header directive in front of the gateway does, alone.
func TestUpstreamHostFields(t *testing.T) {
	resp := startProbe(t).echo(t, `{"hostfields":true}`)
	if v := resp.Header.Values("Strict-Transport-Security"); len(v) != 1 || v[0] != "max-age=63072000" {
		t.Errorf("Strict-Transport-Security = %q, want only the header directive's", v)
	}
	if v := resp.Header.Values("Alt-Svc"); len(v) != 0 {
		t.Errorf("the upstream's Alt-Svc reached the client: %q", v)
	}
}

// echo calls the echo tool with arguments in a new session, and returns
// its answer, read.
func (s *probeStack) echo(t *testing.T, arguments string) *http.Response {
	t.Helper()
	tok, session := s.initialize(t, "Authorization")
	call := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":` + arguments + `}}`
	resp, body := rawResponse(t, s.resource, base+"MCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer "+tok+"\r\nMcp-Session-Id: "+session+"\r\n", call)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"content"`) {
		t.Fatalf("tools/call = %d %s", resp.StatusCode, body)
	}
	return resp
}
