package e2e

import (
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// h3Upstream is an MCP server with sessions that records the method of
// every request and counts tool calls.
type h3Upstream struct {
	mu      sync.Mutex
	methods []string
	calls   int
}

func (u *h3Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.methods = append(u.methods, r.Method)
	if strings.Contains(string(body), `"tools/call"`) {
		u.calls++
	}
	u.mu.Unlock()
	switch {
	case r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": open\n\n")
	case r.Method == http.MethodDelete:
	case strings.Contains(string(body), `"initialize"`):
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Mcp-Session-Id", "upstream-h3")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"h3","version":"1"}}}`)
	case strings.Contains(string(body), `"tools/list"`):
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}}]}}`)
	default:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":7,"result":{"content":[]}}`)
	}
}

func (u *h3Upstream) seen() (methods []string, calls int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.methods...), u.calls
}

// h3Stack is a gateway served over HTTPS (HTTP/1.1, HTTP/2 and HTTP/3,
// Caddy's defaults) in front of an h3Upstream, with a token for it.
type h3Stack struct {
	resource, token string
	port            int
	up              *h3Upstream
}

const h3Secret = "h3-bot-secret-0123456789abcdef"

func startH3Stack(t *testing.T) *h3Stack { return startH3StackSites(t, false) }

// startH3StackSites is startH3Stack, with behindProxy the gateway on a
// plain-http site of its own behind the HTTPS one, which passes /mcp on
// with Caddy's reverse_proxy, as a load balancer or CDN in front would.
func startH3StackSites(t *testing.T, behindProxy bool) *h3Stack {
	t.Helper()
	up := &h3Upstream{}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	port := harness.StartFree(t, func(port int) string {
		gateway := fmt.Sprintf(`mcp_gateway {
		resource https://localhost:%[1]d/mcp
		scope read
		tool * read
	}
	reverse_proxy %[2]s`, port, srv.Listener.Addr())
		sites := "https://localhost:%[2]d {\n\tmcp_issuer\n\t" + gateway + "\n}\n"
		if behindProxy {
			back := harness.FreePort(t)
			sites = fmt.Sprintf("https://localhost:%%[2]d {\n\troute {\n\t\treverse_proxy /mcp 127.0.0.1:%[1]d\n\t\tmcp_issuer\n\t}\n}\n\nhttp://:%[1]d {\n\t%[2]s\n}\n", back, gateway)
		}
		return fmt.Sprintf(`{
	%[1]s
	mcp_auth {
		issuer https://localhost:%[2]d
		storage memory
		client h3-bot {
			secret %[3]s
			grant_types client_credentials
			auth_method client_secret_basic
			scopes read
		}
	}
}

`+sites, localHTTPSOptions(t.TempDir()), port, harness.HashPassword(t, h3Secret))
	})
	s := &h3Stack{resource: fmt.Sprintf("https://localhost:%d/mcp", port), port: port, up: up}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, insecure)
	cfg := clientcredentials.Config{ClientID: "h3-bot", ClientSecret: h3Secret,
		TokenURL: fmt.Sprintf("https://localhost:%d/token", port), Scopes: []string{"read"},
		EndpointParams: url.Values{"resource": {s.resource}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		tok, err := cfg.Token(ctx)
		if err == nil {
			s.token = tok.AccessToken
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("token: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tlsConfig is a client's TLS configuration for the stack's HTTP/3,
// resuming sessions from cache.
func (s *h3Stack) tlsConfig(cache tls.ClientSessionCache) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", ClientSessionCache: cache, NextProtos: []string{http3.NextProtoH3}}
}

// request is an MCP request to the stack's resource with the token.
func (s *h3Stack) request(ctx context.Context, method, body, session string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, s.resource, rd)
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	return req
}

// roundTrip sends req over HTTP/3 on a connection of its own and returns
// the answer's status, header and the start of its body.
func (s *h3Stack) roundTrip(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	tr := &http3.Transport{TLSClientConfig: s.tlsConfig(nil)}
	defer tr.Close()
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s over HTTP/3: %v", req.Method, err)
	}
	defer res.Body.Close()
	var b [1024]byte
	n, _ := io.ReadAtLeast(res.Body, b[:], 1)
	return res.StatusCode, res.Header, string(b[:n])
}

const h3Initialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"h3","version":"1"}}}`

// TestGatewayGetDeleteOverHTTP3: a session's GET stream and DELETE reach
// the upstream over HTTP/3 as over HTTP/1.1 and HTTP/2. quic-go leaves a
// request without Content-Length at length -1 (unknown) even when its
// HEADERS frame ended the stream, which the gateway took for a body and
// refused 400.
func TestGatewayGetDeleteOverHTTP3(t *testing.T) {
	s := startH3Stack(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	code, h, body := s.roundTrip(t, s.request(ctx, http.MethodPost, h3Initialize, ""))
	session := h.Get("Mcp-Session-Id")
	if code != http.StatusOK || session == "" {
		t.Fatalf("initialize over HTTP/3 = %d %q %s", code, session, body)
	}
	if code, _, body := s.roundTrip(t, s.request(ctx, http.MethodGet, "", session)); code != http.StatusOK || !strings.Contains(body, ": open") {
		t.Errorf("GET stream over HTTP/3 = %d %q, want the upstream's stream", code, body)
	}
	if code, _, body := s.roundTrip(t, s.request(ctx, http.MethodDelete, "", session)); code != http.StatusOK {
		t.Errorf("DELETE over HTTP/3 = %d %q, want the upstream's 200", code, body)
	}
	if methods, _ := s.up.seen(); strings.Join(methods, " ") != "POST GET DELETE" {
		t.Errorf("the upstream got %q, want POST GET DELETE", methods)
	}
}

// TestGatewayEarlyDataTooEarly: a tool call sent as HTTP/3 0-RTT early
// data, which anyone who captured it may replay (RFC 8446 section 8,
// RFC 9001 section 9.2; quic-go leaves deciding what may be served from
// it to the server), is answered 425 Too Early (RFC 8470) and never
// reaches the upstream, as the issuer's endpoints answer it; the same
// call after the handshake runs.
func TestGatewayEarlyDataTooEarly(t *testing.T) {
	earlyCallTooEarly(t, startH3Stack(t))
}

// TestGatewayEarlyDataBehindProxy: behind a proxy that takes HTTP/3
// 0-RTT data and passes the request on before its handshake completes,
// with Early-Data: 1 (RFC 8470 section 5.1; Caddy's reverse_proxy does),
// the gateway's own handshake is long complete: the call is answered 425
// all the same, which the proxy passes back, and never reaches the
// upstream, where it ran before (and ran again for each replay of the
// client's first flight to the proxy).
func TestGatewayEarlyDataBehindProxy(t *testing.T) {
	earlyCallTooEarly(t, startH3StackSites(t, true))
}

// earlyCallTooEarly checks that s answers a tool call sent as early data
// on a connection whose handshake never completes (as for anyone who
// replays a client's first flight) 425 and runs none, and runs the call
// sent after the handshake.
func earlyCallTooEarly(t *testing.T, s *h3Stack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cache := tls.NewLRUClientSessionCache(4)
	call := `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{}}}`
	direct := fmt.Sprintf("localhost:%d", s.port)
	// send posts call on a connection resuming a session from cache to
	// addr, as early data unless afterHandshake; early says whether it
	// went so.
	send := func(addr string, afterHandshake bool) (code int, early bool) {
		t.Helper()
		conn, err := quic.DialAddrEarly(ctx, addr, s.tlsConfig(cache), &quic.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		if afterHandshake {
			<-conn.HandshakeComplete()
		}
		str, err := (&http3.Transport{}).NewClientConn(conn).OpenRequestStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req := s.request(ctx, http.MethodPost, "", "")
		req.Body = http.NoBody // the length unknown: the body follows in DATA frames
		if err := str.SendRequestHeader(req); err != nil {
			t.Fatal(err)
		}
		if _, err := str.Write([]byte(call)); err != nil {
			t.Fatal(err)
		}
		str.Close()
		select {
		case <-conn.HandshakeComplete():
		default:
			early = true // sent before the handshake completed
		}
		res, err := str.ReadResponse()
		if err != nil {
			t.Fatal(err)
		}
		// and the server took it as early data (it may have refused
		// 0-RTT, and the data gone again after the handshake)
		early = early && conn.ConnectionState().Used0RTT
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		time.Sleep(200 * time.Millisecond) // the session ticket
		return res.StatusCode, early
	}
	if code, _ := send(direct, true); code != http.StatusOK {
		t.Fatalf("the call after the handshake = %d, want 200", code)
	}
	// The server's handshake must not complete before it reads the call,
	// or the call is not early data any more: a relay keeps the client's
	// Finished from it. A request goes as early data only with a session
	// ticket in hand, which a loaded machine may not have had yet: a few
	// tries.
	held := holdFinished(t, s.port)
	for try := 1; ; try++ {
		_, before := s.up.seen()
		code, early := send(held, false)
		_, after := s.up.seen()
		if early {
			if code != http.StatusTooEarly || after != before {
				t.Errorf("the call as early data = %d, upstream ran %d, want 425 and none", code, after-before)
			}
			break
		}
		if try == 5 {
			t.Fatal("no call went as early data in 5 tries")
		}
	}
	if code, _ := send(direct, true); code != http.StatusOK {
		t.Errorf("the call after the handshake, once more = %d, want 200", code)
	}
}

// holdFinished is the address of a UDP relay to the stack's HTTP/3 port
// that passes on every datagram of its client but those holding a QUIC
// Handshake packet: the client's Finished never arrives, and the
// server's handshake never completes, as for anyone who replays the
// first flight of a client, whose keys it does not have. The server
// answers all the same (0.5-RTT data).
func holdFinished(t *testing.T, port int) string {
	t.Helper()
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); up.Close() })
	var client atomic.Pointer[net.UDPAddr]
	go func() {
		b := make([]byte, 65536)
		for {
			n, from, err := ln.ReadFromUDP(b)
			if err != nil {
				return
			}
			client.Store(from)
			if !holdsHandshakePacket(b[:n]) {
				up.Write(b[:n])
			}
		}
	}()
	go func() {
		b := make([]byte, 65536)
		for {
			n, err := up.Read(b)
			if err != nil {
				return
			}
			if to := client.Load(); to != nil {
				ln.WriteToUDP(b[:n], to)
			}
		}
	}()
	return ln.LocalAddr().String()
}

// holdsHandshakePacket reports whether a QUIC v1 datagram holds a
// Handshake packet among its coalesced long-header packets (RFC 9000
// section 17.2).
func holdsHandshakePacket(d []byte) bool {
	for len(d) > 7 && d[0]&0x80 != 0 {
		typ := d[0] >> 4 & 3
		if typ == 2 {
			return true
		}
		p := 5             // first byte, version
		p += 1 + int(d[p]) // destination connection id
		if p >= len(d) {
			return false
		}
		p += 1 + int(d[p]) // source connection id
		if p >= len(d) {
			return false
		}
		if typ == 0 { // Initial: token
			n, l, err := quicvarint.Parse(d[p:])
			if err != nil {
				return false
			}
			p += l + int(n)
		}
		if p >= len(d) {
			return false
		}
		n, l, err := quicvarint.Parse(d[p:])
		if err != nil {
			return false
		}
		p += l + int(n)
		if p > len(d) {
			return false
		}
		d = d[p:]
	}
	return false
}
