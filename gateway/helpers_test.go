package gateway

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	testResource = "https://mcp.example.com/mcp"
	testIssuer   = "https://auth.example.com"
	testPRM      = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testKeys is a KeySource over keys generated for the test run.
type testKeys struct {
	mu    sync.Mutex
	keys  map[string]any
	calls int
}

func (k *testKeys) PublicKey(_ context.Context, kid string) (any, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls++
	if key, ok := k.keys[kid]; ok {
		return key, nil
	}
	return nil, ErrUnknownKey
}

type signingKeys struct {
	ec  *ecdsa.PrivateKey
	rsa *rsa.PrivateKey
	ed  ed25519.PrivateKey
}

var (
	keysOnce sync.Once
	keysVal  *signingKeys
)

// theKeys generates the signing keys once per test binary (RSA is slow).
func theKeys(t testing.TB) *signingKeys {
	t.Helper()
	keysOnce.Do(func() {
		ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		_, ed, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		keysVal = &signingKeys{ec: ec, rsa: rk, ed: ed}
	})
	return keysVal
}

func newTestKeys(k *signingKeys) *testKeys {
	return &testKeys{keys: map[string]any{
		"ec1":  &k.ec.PublicKey,
		"rsa1": &k.rsa.PublicKey,
		"ed1":  k.ed.Public(),
	}}
}

// claims returns default access token claims; mutate to taste.
func claims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss":       testIssuer,
		"aud":       testResource,
		"sub":       "alice",
		"client_id": "client-1",
		"scope":     "mcp tools:read",
		"iat":       testNow.Unix(),
		"exp":       testNow.Add(time.Hour).Unix(),
		"jti":       "jti-1",
	}
}

// withActors sets c's act to the chain of actors, outermost (the one
// acting) first; none leaves c as it is.
func withActors(c jwt.MapClaims, actors ...string) jwt.MapClaims {
	var act map[string]any
	for i := len(actors) - 1; i >= 0; i-- {
		a := map[string]any{"sub": actors[i]}
		if act != nil {
			a["act"] = act
		}
		act = a
	}
	if act != nil {
		c["act"] = act
	}
	return c
}

// mint signs claims as an at+jwt with the ES256 key unless the header
// mutator changes things.
func mint(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	return mintWith(t, jwt.SigningMethodES256, theKeys(t).ec, "ec1", c, nil)
}

func mintWith(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims, hdr func(map[string]any)) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	tok.Header["typ"] = "at+jwt"
	if kid != "" {
		tok.Header["kid"] = kid
	}
	if hdr != nil {
		hdr(tok.Header)
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("signing token: %v", err)
	}
	return s
}

func testConfig(t testing.TB) Config {
	t.Helper()
	return Config{
		Resource:   testResource,
		Issuer:     testIssuer,
		Keys:       newTestKeys(theKeys(t)),
		BaseScopes: []string{"mcp"},
		Implies: map[string][]string{
			"admin":       {"tools:write"},
			"tools:write": {"tools:read"},
		},
		Tools: []Rule{
			{Pattern: "delete_*", Scopes: []string{"admin"}},
			{Pattern: "write_*", Scopes: []string{"tools:write"}},
			{Pattern: "agent_only", Scopes: []string{"tools:read"}, Actor: ActorRule{RequireAgent: true}},
			{Pattern: "user_only", Scopes: []string{"tools:read"}, Actor: ActorRule{UserOnly: true}},
			{Pattern: "human", Scopes: []string{"tools:read"}, Actor: ActorRule{RequireUser: true}},
			{Pattern: "bot_tool", Scopes: []string{"tools:read"}, Actor: ActorRule{AllowedAgents: []string{"agent-a"}}},
			{Pattern: "shallow", Scopes: []string{"tools:read"}, Actor: ActorRule{MaxDepth: 1}},
			{Pattern: "read_*", Scopes: []string{"tools:read"}},
			{Pattern: "get_?", Scopes: []string{"tools:read"}},
		},
		Prompts: []Rule{
			{Pattern: "summary*", Scopes: []string{"prompts:read"}},
		},
		ResourceRules: []Rule{
			{Pattern: "file:///", Scopes: []string{"files:read"}},
			{Pattern: "file:///secret/", Scopes: []string{"files:secret"}},
		},
		AllowedOrigins: []string{"https://app.example.com"},
		SessionKey:     bytes.Repeat([]byte("k"), 32),
		Now:            func() time.Time { return testNow },
	}
}

func newGateway(t testing.TB, cfg Config) *Gateway {
	t.Helper()
	g, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return g
}

// received is one request as the upstream saw it.
type received struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// upstream is a recording MCP server stand-in behind a real reverse proxy.
type upstream struct {
	mu      sync.Mutex
	got     []received
	handler http.HandlerFunc // answers; default: JSON result echoing nothing
	srv     *httptest.Server
}

func (u *upstream) requests() []received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]received(nil), u.got...)
}

// harness is gateway + reverse proxy + recording upstream, over real HTTP.
type harness struct {
	g     *Gateway
	up    *upstream
	front *httptest.Server
	logs  *observer.ObservedLogs
}

// unreadConfig is testConfig without resource rules: an answer is then
// read only for what its request needs. With resource rules every answer
// is read for the resources it holds, and refused where it cannot be
// read, as with pinning (TestEmbeddedResourcesChecked).
func unreadConfig(t testing.TB) Config {
	cfg := testConfig(t)
	cfg.ResourceRules = nil
	return cfg
}

func newHarness(t testing.TB, cfg Config, answer http.HandlerFunc) *harness {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	cfg.AuditLogger = zap.New(core)
	g := newGateway(t, cfg)
	up := &upstream{handler: answer}
	up.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		up.mu.Lock()
		up.got = append(up.got, received{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		up.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if up.handler != nil {
			up.handler(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
	}))
	t.Cleanup(up.srv.Close)
	target, _ := url.Parse(up.srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.Serve(w, r, NextHandler(proxy))
	}))
	t.Cleanup(front.Close)
	return &harness{g: g, up: up, front: front, logs: logs}
}

// call is a test request.
type call struct {
	method  string // default POST
	path    string // default /mcp
	body    string
	token   string
	headers map[string]string
}

func (h *harness) do(t testing.TB, c call) *http.Response {
	t.Helper()
	resp, err := h.try(c)
	if err != nil {
		t.Fatalf("%s %s: %v", cmp.Or(c.method, http.MethodPost), cmp.Or(c.path, "/mcp"), err)
	}
	return resp
}

// try is do for a request that may fail (from another goroutine, say).
func (h *harness) try(c call) (*http.Response, error) {
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = "/mcp"
	}
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, h.front.URL+c.path, body)
	if err != nil {
		return nil, err
	}
	if c.method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.headers {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	return http.DefaultClient.Do(req)
}

// writeJSONAnswer writes a JSON answer as a compressing upstream does:
// gzipped when the request asks for gzip.
func writeJSONAnswer(w http.ResponseWriter, r *http.Request, answer string) {
	w.Header().Set("Content-Type", "application/json")
	if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		io.WriteString(w, answer)
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	zw := gzip.NewWriter(w)
	io.WriteString(zw, answer)
	zw.Close()
}

// answerAs is an upstream that answers every request with answer, as
// one event when as is "events", else as JSON (writeJSONAnswer).
func answerAs(as, answer string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if as == "events" {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "event: message\ndata: "+answer+"\n\n")
			return
		}
		writeJSONAnswer(w, r, answer)
	}
}

// eventData is the data of the first event of an event stream body.
func eventData(t testing.TB, body string) string {
	t.Helper()
	_, data, ok := strings.Cut(body, "data: ")
	if !ok {
		t.Fatalf("answer %q has no event", body)
	}
	data, _, _ = strings.Cut(data, "\n")
	return data
}

// sessionFor is the session id g hands the token's principal for the
// upstream session "upstream-session": what a client holds after an
// initialize whose answer carried one (a 2025 GET or DELETE needs it).
func sessionFor(t testing.TB, g *Gateway, token string) string {
	t.Helper()
	p, aerr := g.authenticate(context.Background(), nil, token, g.now())
	if aerr != nil {
		t.Fatalf("authenticate: %s", aerr.desc)
	}
	sid, err := g.wrapSession(p, "upstream-session")
	if err != nil {
		t.Fatalf("wrapSession: %v", err)
	}
	return sid
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// rpcErr decodes a JSON-RPC error body.
func rpcErr(t testing.TB, body string) (code int, id json.RawMessage, msg string) {
	t.Helper()
	var b struct {
		ID    json.RawMessage `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("body %q is not a JSON-RPC error: %v", body, err)
	}
	return b.Error.Code, b.ID, b.Error.Message
}

func toolCall(name string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + quote(name) + `,"arguments":{}}}`
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// dialSmallReceiveBuffer connects to addr with a receive buffer of 4 KiB,
// for a client that stops reading: the server's writes to it block once
// little is sent. The connection is closed when the test ends.
func dialSmallReceiveBuffer(t testing.TB, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return cmp.Or(err, serr)
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
