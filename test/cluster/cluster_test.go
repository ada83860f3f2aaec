// Package cluster runs two real Caddy processes (the built binary) on one
// throwaway PostgreSQL database behind a load balancer of the test's own,
// and checks that they behave as one authorization server and one
// gateway: state made on one is seen by the other, refresh rotation is
// exactly-once across them, revocations and key rotations reach the
// other instance's gateway, and a database outage fails closed and loses
// nothing that was acknowledged.
package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	username  = "alice"
	otherUser = "bob"
	password  = "cluster test password, never logged"
	clientID  = "app"
	// A non-loopback redirect URI: the issuer remembers consent for it.
	redirectURI = "https://app.example.com/cb"
	scopeRead   = "notes:read"
)

// caddyBin is the binary TestMain builds.
var caddyBin string

func TestMain(m *testing.M) {
	os.Exit(harness.RunWithCaddy(m, &caddyBin, func(m *testing.M) int {
		defer shared.stop()
		return pgtest.Run(m)
	}))
}

// shared is the cluster the tests that do not disturb the others use:
// starting two Caddy processes per test would cost most of the package's
// time.
var shared sharedCluster

type sharedCluster struct {
	once sync.Once
	c    *cluster
	life *lifetime
}

// get returns the shared cluster, starting it in the first test that asks.
func (s *sharedCluster) get(t *testing.T) *cluster {
	t.Helper()
	pgtest.Shared(t) // skips here, not in once.Do, without PostgreSQL
	s.once.Do(func() {
		s.life = &lifetime{TB: t}
		s.c = setup(s.life, options{})
	})
	if s.c == nil {
		t.Fatal("the shared cluster did not start (see the first test)")
	}
	s.c.logOnFailure(t)
	return s.c
}

func (s *sharedCluster) stop() {
	if s.life != nil {
		s.life.end()
	}
}

// lifetime is the t a shared cluster is set up with: the first test's,
// for failing, but whose cleanups and temporary directories last until
// TestMain ends.
type lifetime struct {
	testing.TB
	mu       sync.Mutex
	cleanups []func()
	dirs     []string
}

func (l *lifetime) Cleanup(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cleanups = append(l.cleanups, f)
}

func (l *lifetime) TempDir() string {
	dir, err := os.MkdirTemp("", "cluster")
	if err != nil {
		l.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dirs = append(l.dirs, dir)
	return dir
}

func (l *lifetime) end() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.cleanups) - 1; i >= 0; i-- {
		l.cleanups[i]()
	}
	for _, d := range l.dirs {
		_ = os.RemoveAll(d)
	}
}

// instance is one Caddy process of the cluster.
type instance struct {
	name  string
	addr  string // host:port it serves on
	admin string // http://host:port of its admin API
	proc  *harness.Process
	// client sends every request to this instance, whatever the URL's
	// host (the balancer's): as a balancer with sticky routing would.
	client *http.Client
}

// cluster is two instances on one database behind a round-robin balancer
// whose address is the issuer URL.
type cluster struct {
	db     *pgtest.Server
	dsn    string
	issuer string // the balancer's URL
	legacy string // resource: stateful MCP server (sessions)
	modern string // resource: stateless MCP server (2026-07-28)
	md     *harness.Metadata
	par    string // metadata the harness does not read
	jwks   string
	a, b   *instance
	lb     *balancer
}

// caddyfile is one instance's configuration: every instance has the same
// but for its own listen and admin addresses.
func caddyfile(adminPort, port int, issuer, hash, legacyUp, modernUp string, o options) string {
	maxStale := ""
	if o.maxStale != 0 {
		maxStale = "revocation_max_stale " + o.maxStale.String()
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%[1]d
	persist_config off
	log {
		level WARN
	}
	mcp_auth {
		issuer %[3]s
		storage postgres {env.MCP_AUTH_DSN}
		%[10]s
		user %[4]s %[5]s {
			groups users
		}
		user %[11]s %[5]s {
			groups users
		}
		group users {
			scopes * notes:read
		}
		client %[6]s {
			name "Cluster App"
			public
			redirect_uri %[7]s
		}
	}
}

http://:%[2]d {
	mcp_issuer
	@legacy path /mcp /.well-known/oauth-protected-resource/mcp
	handle @legacy {
		mcp_gateway {
			resource %[3]s/mcp
			scope notes:read
			tool echo notes:read
			tool add notes:read
		}
		reverse_proxy %[8]s
	}
	@modern path /v2/mcp /.well-known/oauth-protected-resource/v2/mcp
	handle @modern {
		mcp_gateway {
			resource %[3]s/v2/mcp
			scope notes:read
			tool echo notes:read
			tool add notes:read
		}
		reverse_proxy %[9]s
	}
}
`, adminPort, port, issuer, username, hash, clientID, redirectURI, legacyUp, modernUp, maxStale, otherUser)
}

// options are what a cluster's configuration may differ in.
type options struct {
	maxStale time.Duration // revocation_max_stale; 0: the default
}

// setup starts a cluster on a database of its own; most tests use the
// shared one (shared.get) instead.
func setup(t testing.TB, o options) *cluster {
	t.Helper()
	c := &cluster{db: pgtest.Shared(t), dsn: pgtest.NewDatabase(t)}
	legacy := httptest.NewServer(mcpdemo.Handler())
	t.Cleanup(legacy.Close)
	s := mcpdemo.NewServer()
	modern := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(modern.Close)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.issuer = "http://" + l.Addr().String()
	c.legacy, c.modern = c.issuer+"/mcp", c.issuer+"/v2/mcp"
	hash := harness.HashPassword(t, password)
	for _, name := range []string{"A", "B"} {
		port, adminPort := harness.FreePort(t), harness.FreePort(t)
		e := harness.NewEnv(t, caddyBin)
		e.Vars = append(e.Vars, "MCP_AUTH_DSN="+c.dsn)
		config := e.Write(t, "Caddyfile", caddyfile(adminPort, port, c.issuer, hash,
			legacy.Listener.Addr().String(), modern.Listener.Addr().String(), o))
		in := &instance{name: name, addr: fmt.Sprintf("127.0.0.1:%d", port), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort)}
		in.client = &http.Client{Transport: pinned{in.addr}}
		in.proc = e.Run(t, config, "http://"+in.addr+"/.well-known/oauth-authorization-server")
		if name == "A" {
			c.a = in
		} else {
			c.b = in
		}
	}
	c.lb = newBalancer(c.a.addr, c.b.addr)
	srv := &http.Server{Handler: c.lb}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	ctx := ctxTimeout(t, 10*time.Second)
	if c.md, err = harness.Discover(ctx, c.issuer); err != nil {
		t.Fatalf("Discover(%s): %v", c.issuer, err)
	}
	var more struct {
		PAR  string `json:"pushed_authorization_request_endpoint"`
		JWKS string `json:"jwks_uri"`
	}
	doJSON(ctx, t, http.DefaultClient, http.MethodGet, c.issuer+"/.well-known/oauth-authorization-server", nil, &more)
	c.par, c.jwks = more.PAR, more.JWKS
	if _, shared := t.(*lifetime); !shared {
		// The shared cluster's tests each register it (sharedCluster.get):
		// registered on the lifetime, it would log through the first
		// test's t after that test ended, a panic in TestMain when that
		// test failed, which skipped the cleanups stopping both Caddy
		// processes (left running, holding their ports).
		c.logOnFailure(t)
	}
	return c
}

// logOnFailure shows both instances' output if t fails.
func (c *cluster) logOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("caddy A:\n%s\ncaddy B:\n%s", c.a.proc.Output(), c.b.proc.Output())
		}
	})
}

// pinned sends a request to one instance, keeping the URL's host (the
// issuer's) as the Host header, as a balancer does.
type pinned struct{ addr string }

func (p pinned) RoundTrip(r *http.Request) (*http.Response, error) {
	out := r.Clone(r.Context())
	if out.Host == "" {
		out.Host = r.URL.Host
	}
	out.URL.Host = p.addr
	resp, err := http.DefaultTransport.RoundTrip(out)
	if resp != nil {
		resp.Request = r // the client sees the URL it asked for
	}
	return resp, err
}

// balancer is a round-robin reverse proxy: every request goes to the
// other instance than the one before. It keeps a log of what it served.
type balancer struct {
	backends []string
	proxy    *httputil.ReverseProxy

	mu  sync.Mutex
	log []served
}

// served is one request the balancer passed on.
type served struct {
	backend      string
	method, path string
	status       int // 0 until the backend answered
}

type backendKey struct{}

func newBalancer(backends ...string) *balancer {
	b := &balancer{backends: backends}
	b.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: r.In.Context().Value(backendKey{}).(string)})
			r.Out.Host = r.In.Host
		},
		FlushInterval: -1, // event streams pass at once
		// A client closing an event stream is no failure; a failure to
		// reach a backend shows in the log as 502.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	return b
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The transport may read the request body after the answer has begun
	// (at least once after Content-Length, to check it ended). Without
	// full duplex net/http closes the body as the answer begins, that read
	// fails, and the transport closes its connection to the instance,
	// cutting off the event stream in flight (golang/go#40747).
	if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	b.mu.Lock()
	i := len(b.log)
	backend := b.backends[i%len(b.backends)]
	b.log = append(b.log, served{backend: backend, method: r.Method, path: r.URL.Path})
	b.mu.Unlock()
	b.proxy.ServeHTTP(&statusWriter{ResponseWriter: w, b: b, i: i}, r.WithContext(context.WithValue(r.Context(), backendKey{}, backend)))
}

// since returns the log from entry n on.
func (b *balancer) since(n int) []served {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.log[n:])
}

// served returns how many requests the balancer has passed on.
func (b *balancer) served() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.log)
}

// statusWriter notes the status of log entry i.
type statusWriter struct {
	http.ResponseWriter
	b *balancer
	i int
}

func (w *statusWriter) WriteHeader(code int) {
	w.note(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.note(http.StatusOK) // a Write without WriteHeader, as net/http does
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) note(code int) {
	w.b.mu.Lock()
	defer w.b.mu.Unlock()
	if w.b.log[w.i].status == 0 {
		w.b.log[w.i].status = code
	}
}

// Unwrap lets the proxy flush event streams through the writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// with returns ctx whose oauth2 requests go through client.
func with(ctx context.Context, client *http.Client) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, client)
}

func (c *cluster) oauthConfig(scopes ...string) *oauth2.Config {
	return c.md.Config(clientID, redirectURI, scopes...)
}

// robot returns a browser for alice whose requests all go to in (nil: the
// balancer).
func robot(in *instance) *harness.Robot {
	r := harness.NewRobot(username, password, redirectURI)
	r.Client.Transport = transport(in)
	return r
}

func transport(in *instance) http.RoundTripper {
	if in == nil {
		return http.DefaultTransport
	}
	return in.client.Transport
}

// code runs the authorization request ar in r's browser and returns the
// code.
func (c *cluster) code(ctx context.Context, t *testing.T, r *harness.Robot, ar harness.AuthRequest) string {
	t.Helper()
	q, err := r.Authorize(ctx, ar.URL)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	if q.Get("code") == "" || q.Get("state") != ar.State || q.Get("iss") != c.issuer {
		t.Fatalf("authorization response %q: want a code, state %q, iss %q", q.Encode(), ar.State, c.issuer)
	}
	return q.Get("code")
}

// grant authorizes with r (at the instance its transport names) and
// redeems the code at redeem: a token with a refresh token.
func (c *cluster) grant(ctx context.Context, t *testing.T, r *harness.Robot, redeem *instance) *oauth2.Token {
	t.Helper()
	return c.grantFor(ctx, t, r, redeem, c.modern)
}

// grantFor is grant for another resource.
func (c *cluster) grantFor(ctx context.Context, t *testing.T, r *harness.Robot, redeem *instance, resource string) *oauth2.Token {
	t.Helper()
	cfg := c.oauthConfig(scopeRead, "offline_access")
	ar := harness.NewAuthRequest(cfg, resource)
	tok, err := ar.Exchange(with(ctx, redeem.client), cfg, c.code(ctx, t, r, ar))
	if err != nil || tok.RefreshToken == "" {
		t.Fatalf("redeem code at %s = %v, %v; want tokens with a refresh token", redeem.name, tok, err)
	}
	return tok
}

// refresh redeems a refresh token at in.
func (c *cluster) refresh(ctx context.Context, in *instance, refreshToken string) (*harness.TokenResponse, error) {
	var tr harness.TokenResponse
	status, err := harness.PostForm(ctx, in.client, c.md.TokenEndpoint, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {refreshToken},
		"client_id":     {clientID},
		"resource":      {c.modern},
	}, &tr)
	tr.Status = status
	return &tr, err
}

// revoke revokes a token (a refresh token: its whole grant) at in and
// returns the status.
func (c *cluster) revoke(ctx context.Context, in *instance, token string) (int, error) {
	var out map[string]any
	status, err := harness.PostForm(ctx, in.client, c.md.RevocationEndpoint, url.Values{
		"token":     {token},
		"client_id": {clientID},
	}, &out)
	if err != nil && status == http.StatusOK {
		err = nil // RFC 7009: 200 with an empty body
	}
	return status, err
}

// call makes one tools/call of echo at in's gateway with token and
// returns the status (0 and the error when no answer came).
func (c *cluster) call(ctx context.Context, in *instance, token string) (int, string, error) {
	resp, body, err := c.callResp(ctx, in, token)
	if err != nil {
		return 0, "", err
	}
	return resp.StatusCode, body, nil
}

// callResp is call with the whole response.
func (c *cluster) callResp(ctx context.Context, in *instance, token string) (*http.Response, string, error) {
	return harness.RawToolCall(ctx, in.client, c.modern, token, "echo", `{"text":"hi"}`)
}

// mustCall checks that in's gateway answers token with want.
func (c *cluster) mustCall(ctx context.Context, t *testing.T, in *instance, token string, want int) {
	t.Helper()
	status, body, err := c.call(ctx, in, token)
	if err != nil || status != want {
		t.Errorf("tools/call at %s's gateway = %d %.200s, %v; want %d", in.name, status, body, err, want)
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// noSecretsLogged checks that neither instance wrote any of secrets.
func (c *cluster) noSecretsLogged(t *testing.T, secrets ...string) {
	t.Helper()
	for _, in := range []*instance{c.a, c.b} {
		out := in.proc.Output()
		for _, s := range secrets {
			if s != "" && strings.Contains(out, s) {
				t.Errorf("caddy %s logged a token or secret", in.name)
				return
			}
		}
	}
}
