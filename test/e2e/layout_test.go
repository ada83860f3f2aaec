package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// The warning Caddy logs for a reverse_proxy that bypasses the gateways.
const bypassWarning = "reverse_proxy reachable without mcp_gateway"

// The password of alice in every documented config ({env.ALICE_HASH} is
// set to its hash; Caddyfile.example has the hash inline).
const docPassword = "demo-password"

// TestDocumentedLayoutsNoBypass runs every config with a gateway that the
// README and Caddyfile.example show, on loopback, in front of MCP servers
// that log what they receive, and sends each gateway's endpoint a table
// of path spellings and methods without a valid token: the upstreams must
// receive nothing, and Caddy must not warn about the layout. A request
// with a valid token must then get through, which proves the config is
// wired to the upstreams at all.
func TestDocumentedLayoutsNoBypass(t *testing.T) {
	docs := documentedGatewayConfigs(t)
	if len(docs) < 4 {
		t.Fatalf("%d documented configs with a gateway, want at least 4 (README examples, Safe layouts, Caddyfile.example)", len(docs))
	}
	for _, d := range docs {
		t.Run(d.name, func(t *testing.T) {
			l := startLayout(t, d.caddyfile)
			if hits := l.probe(t); len(hits) > 0 {
				t.Errorf("without a valid token the upstream received:\n%s", strings.Join(hits, "\n"))
			}
			if w := l.pluginWarnings(t); len(w) > 0 {
				t.Errorf("Caddy warned about a documented layout:\n%s", strings.Join(w, "\n"))
			}
			l.authorizedReaches(t)
		})
	}
}

// TestDocumentedConfigsLoad runs the README's configs without a gateway
// (TestDocumentedLayoutsNoBypass runs the others) as `caddy run` would:
// `caddy validate`, like adapting, stops before the mcp_auth app starts,
// which is where a config is checked against its sites and its store
// opened. Its issuer must then serve its metadata.
func TestDocumentedConfigsLoad(t *testing.T) {
	var n int
	for _, b := range readmeConfigs(t) {
		if gatewayDirective.MatchString(b.Text) {
			continue
		}
		n++
		t.Run(fmt.Sprintf("README.md:%d", b.Line), func(t *testing.T) {
			l := startDocumented(t, b.Text)
			if w := l.pluginWarnings(t); len(w) > 0 {
				t.Errorf("Caddy warned about a documented config:\n%s", strings.Join(w, "\n"))
			}
			if l.issuer == "" {
				return
			}
			resp, err := http.Get(l.issuer + "/.well-known/oauth-authorization-server")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s/.well-known/oauth-authorization-server = %d, want 200", l.issuer, resp.StatusCode)
			}
		})
	}
	// The PostgreSQL, logging and ID-JAG examples at least.
	if n < 4 {
		t.Errorf("%d README configs without a gateway, want at least 4 (the extraction broke?)", n)
	}
}

// TestLenientProxiesWarnAtStart: a server trusting proxies without
// trusted_proxies_strict gets the start warning README promises, on a
// config as Caddy runs it (the http app provisioned, which loads and
// clears the trusted_proxies JSON); with trusted_proxies_strict, none.
func TestLenientProxiesWarnAtStart(t *testing.T) {
	for _, strict := range []string{"", "\n\t\ttrusted_proxies_strict"} {
		cfg := "{\n\tservers {\n\t\ttrusted_proxies static 10.0.0.0/8" + strict +
			"\n\t}\n\tmcp_auth {\n\t\tissuer https://auth.example.com\n\t}\n}\n\nauth.example.com {\n\tmcp_issuer\n}\n"
		var warned bool
		for _, line := range startDocumented(t, cfg).pluginWarnings(t) {
			warned = warned || strings.Contains(line, "trusted_proxies without trusted_proxies_strict")
		}
		if want := strict == ""; warned != want {
			t.Errorf("strict=%t: warned about lenient trusted_proxies = %t, want %t", strict != "", warned, want)
		}
	}
}

// TestIssuerBeforeBasicAuth: mcp_issuer's default order puts it before
// basic_auth, and before basicauth, the deprecated spelling Caddy still
// reads (and orders before basic_auth), so the OAuth endpoints stay
// reachable without the site's other credentials, while the rest of the
// site keeps asking for them.
func TestIssuerBeforeBasicAuth(t *testing.T) {
	for _, directive := range []string{"basic_auth", "basicauth"} {
		t.Run(directive, func(t *testing.T) {
			l := startDocumented(t, `{
	mcp_auth {
		issuer https://auth.example.com
	}
}

auth.example.com {
	respond "the site"
	`+directive+` {
		alice {$ALICE_HASH}
	}
	mcp_issuer
}
`)
			for path, want := range map[string]int{
				"/.well-known/oauth-authorization-server": http.StatusOK,
				"/jwks": http.StatusOK,
				"/app":  http.StatusUnauthorized,
			} {
				resp, err := http.Get(l.issuer + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("GET %s without credentials = %d, want %d", path, resp.StatusCode, want)
				}
			}
		})
	}
}

// TestUnsafeLayoutsBypassAndWarn is the other side: a gateway under a
// path matcher with the proxy outside it lets path spellings through,
// which the same table detects, and Caddy warns about it at load. The
// proxy on the gateway's own matcher is safe and not warned about.
func TestUnsafeLayoutsBypassAndWarn(t *testing.T) {
	const global = `{
	mcp_auth {
		issuer https://mcp.example.com
		user alice {env.ALICE_HASH} {
			groups staff
		}
		group staff {
			scopes * notes:read
		}
	}
}
`
	const gateway = `
	@notes path /notes/mcp /.well-known/oauth-protected-resource/notes/mcp
	mcp_gateway @notes {
		resource https://mcp.example.com/notes/mcp
		scope notes:read
		tool * notes:read
	}
`
	site := func(proxy string) string {
		return global + "\nmcp.example.com {\n\tmcp_issuer\n" + gateway + "\t" + proxy + "\n}\n"
	}
	// handled puts the gateway in a handle block with then after it, and
	// rest after the site.
	handled := func(then, other, rest string) string {
		return global + `
mcp.example.com {
	mcp_issuer
	@notes path /notes/mcp /.well-known/oauth-protected-resource/notes/mcp
	handle @notes {
		mcp_gateway {
			resource https://mcp.example.com/notes/mcp
			scope notes:read
			tool * notes:read
		}
		` + then + `
	}
	` + other + `
}
` + rest
	}
	const named = "\n&(up) {\n\treverse_proxy 127.0.0.1:3001\n}\n"
	tests := []struct {
		name      string
		caddyfile string
		unsafe    bool
	}{
		{"proxy without matcher", site("reverse_proxy 127.0.0.1:3001"), true},
		{"proxy on a prefix", site("reverse_proxy /notes/* 127.0.0.1:3001"), true},
		{"proxy in another handle", site("handle /notes/* {\n\t\treverse_proxy 127.0.0.1:3001\n\t}"), true},
		{"proxy on the gateway's matcher", site("reverse_proxy @notes 127.0.0.1:3001"), false},
		{"named route invoked without the gateway", handled("invoke up", "handle {\n\t\tinvoke up\n\t}", named), true},
		{"proxy in handle_errors", handled("reverse_proxy 127.0.0.1:3001", "handle {\n\t\terror 404\n\t}\n\thandle_errors {\n\t\treverse_proxy 127.0.0.1:3001\n\t}", ""), true},
		{"named route invoked after the gateway", handled("invoke up", "handle {\n\t\terror 404\n\t}", named), false},
	}
	// The proxy on the gateway's matcher is safe only with nothing
	// rewriting the request between them: POST /v1/notes/mcp misses
	// @notes at the gateway, and handle_path strips /v1 before the
	// second proxy's @notes (review s13-ops F1).
	t.Run("proxy on the gateway's matcher after a rewrite", func(t *testing.T) {
		l := startLayout(t, site("reverse_proxy @notes 127.0.0.1:3001\n\thandle_path /v1/* {\n\t\treverse_proxy @notes 127.0.0.1:3001\n\t}"))
		resp, err := http.Post(l.issuer+"/v1/notes/mcp", "application/json",
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var hits []string
		for _, u := range l.upstreams {
			hits = append(hits, u.take()...)
		}
		if !slices.Contains(hits, "POST /notes/mcp no-token") {
			t.Errorf("upstream received %q, want POST /notes/mcp without a token (the layout no longer shows the bypass)", hits)
		}
		// The proxy in handle_path, and (conservatively: handle_path runs
		// first and a request it rewrites goes on when its proxy's matcher
		// misses) the one after it.
		if warns := l.warnings(t); !slices.ContainsFunc(warns, func(w string) bool { return strings.Contains(w, `/v1/*`) }) {
			t.Errorf("warnings %q, want one %q naming the proxy in handle_path /v1/*", warns, bypassWarning)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := startLayout(t, tt.caddyfile)
			hits := l.probe(t)
			warns := l.warnings(t)
			t.Logf("%d requests reached the upstream without a token; %d warnings", len(hits), len(warns))
			if tt.unsafe {
				if !slicesContain(hits, "GET /notes/mcp/") || !slicesContain(hits, "POST /notes/mcp;x") {
					t.Errorf("upstream received %q, want at least GET /notes/mcp/ and POST /notes/mcp;x (the table no longer detects the bypass)", hits)
				}
				if len(warns) != 1 {
					t.Errorf("warnings %q, want one %q", warns, bypassWarning)
				}
				return
			}
			if len(hits) > 0 || len(warns) > 0 {
				t.Errorf("upstream received %q, warnings %q; want neither", hits, warns)
			}
			l.authorizedReaches(t)
		})
	}
}

// TestForwardAuthAroundGateway: Caddy orders forward_auth before
// mcp_gateway in a block, so the auth service gets the client's request
// header, its Authorization (the access token) included, before the
// gateway checked anything, and Caddy warns of it at start as a
// reverse_proxy the gateway does not guard. In a route after the gateway
// it is asked only about requests the gateway let through, with the
// header the upstream gets: no token, no warning.
func TestForwardAuthAroundGateway(t *testing.T) {
	const global = `{
	mcp_auth {
		issuer https://mcp.example.com
		user alice {env.ALICE_HASH} {
			groups staff
		}
		group staff {
			scopes * notes:read
		}
	}
}
`
	const gateway = `mcp_gateway {
				resource https://mcp.example.com/notes/mcp
				scope notes:read
				tool * notes:read
			}`
	const forwardAuth = `forward_auth 127.0.0.1:3002 {
				uri /check
			}`
	site := func(handlers string) string {
		return global + `
mcp.example.com {
	mcp_issuer
	@notes path /notes/mcp /.well-known/oauth-protected-resource/notes/mcp
	handle @notes {
		` + handlers + `
	}
}
`
	}
	post := func(t *testing.T, l *layout, token string) {
		t.Helper()
		head := "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
		if token != "" {
			head += "Authorization: Bearer " + token + "\r\n"
		}
		u, _ := url.Parse(l.gateways[0].resource)
		if err := rawRequest(u.Host, http.MethodPost, u.Path, head, probeInitialize); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("before the gateway", func(t *testing.T) {
		// Written first, run first: as Caddy orders the directives.
		l := startLayout(t, site(forwardAuth+"\n\t\t"+gateway+"\n\t\treverse_proxy 127.0.0.1:3001"))
		auth := l.upstreams[0]
		post(t, l, "not-a-token")
		if seen := auth.take(); !slices.Contains(seen, "GET /check token") {
			t.Errorf("the auth service saw %q, want GET /check with the client's Authorization", seen)
		}
		if warns := l.warnings(t); len(warns) != 1 {
			t.Errorf("warnings %q, want one %q", warns, bypassWarning)
		}
	})
	t.Run("in a route after the gateway", func(t *testing.T) {
		l := startLayout(t, site("route {\n\t\t\t"+gateway+"\n\t\t\t"+forwardAuth+"\n\t\t\treverse_proxy 127.0.0.1:3001\n\t\t}"))
		auth := l.upstreams[0]
		post(t, l, "not-a-token")
		post(t, l, "")
		if seen := l.upstreamHits(); len(seen) > 0 {
			t.Errorf("without a valid token the auth service and upstream saw %q, want nothing", seen)
		}
		post(t, l, l.tokens(t)[l.gateways[0].resource].AccessToken)
		if seen := auth.take(); !slices.Equal(seen, []string{"GET /check no-token"}) {
			t.Errorf("with a valid token the auth service saw %q, want GET /check without the token", seen)
		}
		if warns := l.warnings(t); len(warns) > 0 {
			t.Errorf("warnings %q, want none", warns)
		}
	})
}

// TestLoadBalancedSessions: behind the gateway, reverse_proxy's
// lb_policy cookie keeps no session on one upstream: the gateway drops
// the upstream side's Set-Cookie, the balancer's cookie among them, and
// the client's Cookie, so every request is balanced anew and a stateful
// server that did not start the session refuses it. lb_policy client_ip
// keeps a client's requests, and so its sessions, on one upstream.
func TestLoadBalancedSessions(t *testing.T) {
	caddyfile := func(policy string) string {
		return `{
	mcp_auth {
		issuer https://mcp.example.com
		user alice {env.ALICE_HASH} {
			groups staff
		}
		group staff {
			scopes * notes:read
		}
	}
}

mcp.example.com {
	mcp_issuer
	@notes path /notes/mcp /.well-known/oauth-protected-resource/notes/mcp
	handle @notes {
		mcp_gateway {
			resource https://mcp.example.com/notes/mcp
			scope notes:read
			tool * notes:read
		}
		reverse_proxy 127.0.0.1:3001 127.0.0.1:3003 {
			lb_policy ` + policy + `
		}
	}
}
`
	}
	// pings starts a session and pings in it n times; it returns the
	// statuses and the initialize answer's Set-Cookie.
	pings := func(t *testing.T, l *layout, n int) (statuses []int, cookies []string) {
		t.Helper()
		resource := l.gateways[0].resource
		tok := l.tokens(t)[resource].AccessToken
		post := func(session, body string) *http.Response {
			t.Helper()
			req, err := http.NewRequest(http.MethodPost, resource, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+tok)
			if session != "" {
				req.Header.Set("Mcp-Session-Id", session)
				req.Header.Set("MCP-Protocol-Version", "2025-11-25")
			}
			for _, c := range cookies {
				// As a browser client would send the balancer's cookie back.
				if name, value, ok := strings.Cut(strings.SplitN(c, ";", 2)[0], "="); ok {
					req.AddCookie(&http.Cookie{Name: name, Value: value})
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp
		}
		resp := post("", probeInitialize)
		session := resp.Header.Get("Mcp-Session-Id")
		if resp.StatusCode != http.StatusOK || session == "" {
			t.Fatalf("initialize = %d, session %q", resp.StatusCode, session)
		}
		cookies = resp.Header.Values("Set-Cookie")
		for i := range n {
			statuses = append(statuses, post(session, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i+2)).StatusCode)
		}
		return statuses, cookies
	}
	t.Run("cookie", func(t *testing.T) {
		// Each ping goes to either upstream: all 16 to the session's
		// one by chance once in 65536 runs.
		statuses, cookies := pings(t, startLayout(t, caddyfile("cookie")), 16)
		if len(cookies) > 0 {
			t.Errorf("Set-Cookie %q reached the client through the gateway", cookies)
		}
		if !slices.ContainsFunc(statuses, func(s int) bool { return s != http.StatusOK }) {
			t.Errorf("pings in the session = %v, want some refused by the upstream that did not start it", statuses)
		}
	})
	t.Run("client_ip_hash", func(t *testing.T) {
		statuses, _ := pings(t, startLayout(t, caddyfile("client_ip_hash")), 16)
		if slices.ContainsFunc(statuses, func(s int) bool { return s != http.StatusOK }) {
			t.Errorf("pings in the session = %v, want all 200", statuses)
		}
	})
}

func slicesContain(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix+" ") || s == prefix {
			return true
		}
	}
	return false
}

type documented struct {
	name      string
	caddyfile string
}

// documentedGatewayConfigs returns the configs with an mcp_gateway that
// the README shows, and Caddyfile.example.
func documentedGatewayConfigs(t *testing.T) []documented {
	t.Helper()
	var docs []documented
	for _, b := range readmeConfigs(t) {
		if gatewayDirective.MatchString(b.Text) {
			docs = append(docs, documented{fmt.Sprintf("README.md:%d", b.Line), b.Text})
		}
	}
	example, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	return append(docs, documented{"Caddyfile.example", string(example)})
}

// readmeConfigs returns the Caddyfile configs the README shows (not its
// synopses).
func readmeConfigs(t *testing.T) []harness.CaddyfileBlock {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := harness.CaddyfileBlocks(string(readme))
	if err != nil {
		t.Fatalf("CaddyfileBlocks(README.md): %v", err)
	}
	return slices.DeleteFunc(blocks, func(b harness.CaddyfileBlock) bool { return b.Syntax })
}

// layout is a documented config running on loopback.
type layout struct {
	caddyfile string
	issuer    string
	gateways  []gatewayConf
	upstreams []*recorder
	logFile   string
}

type gatewayConf struct {
	resource string
	scopes   []string
}

// recorder is an MCP server (the demo) that logs every request.
type recorder struct {
	mu   sync.Mutex
	seen []string // "METHOD request-uri authorization"
}

func (r *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		auth := "no-token"
		if req.Header.Get("Authorization") != "" {
			auth = "token"
		}
		r.mu.Lock()
		r.seen = append(r.seen, req.Method+" "+req.RequestURI+" "+auth)
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	})
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.seen
	r.seen = nil
	return s
}

// The hosts the documentation uses; each becomes a loopback origin.
var documentedHosts = []string{"mcp.example.com", "auth.example.com", "localhost:8080"}

var (
	gatewayDirective = regexp.MustCompile(`(?m)^\s*mcp_gateway(\s|$)`)
	upstreamDial     = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	adminLine        = regexp.MustCompile(`(?m)^\s*admin\s.*\n`)
	issuerLine       = regexp.MustCompile(`(?m)^\s*issuer (\S+)`)
	resourceLine     = regexp.MustCompile(`(?m)^\s*resource (\S+)\s*$`)
	scopeLine        = regexp.MustCompile(`(?m)^\s*scope (.+)$`)
	fileLine         = regexp.MustCompile(`(?m)^\s*(output file|storage bolt) /\S+`)
)

// startLayout runs a documented config with at least one gateway (see
// startDocumented) and reads its issuer and gateways.
func startLayout(t *testing.T, doc string) *layout {
	t.Helper()
	l := startDocumented(t, doc)
	if len(l.upstreams) == 0 {
		t.Fatalf("no upstream address (127.0.0.1:port) in the config:\n%s", doc)
	}
	for rest := l.caddyfile; ; {
		loc := gatewayDirective.FindStringIndex(rest)
		if loc == nil {
			break
		}
		i := loc[0]
		block := harness.BraceBlock(rest[i:])
		rest = rest[i+len(block):]
		g := gatewayConf{}
		if m := resourceLine.FindStringSubmatch(block); m != nil {
			g.resource = m[1]
		}
		for _, m := range scopeLine.FindAllStringSubmatch(block, -1) {
			g.scopes = append(g.scopes, strings.Fields(m[1])...)
		}
		if g.resource == "" {
			t.Fatalf("mcp_gateway without a resource line:\n%s", block)
		}
		l.gateways = append(l.gateways, g)
	}
	if l.issuer == "" || len(l.gateways) == 0 {
		t.Fatalf("issuer %q, %d gateways in the config:\n%s", l.issuer, len(l.gateways), l.caddyfile)
	}
	return l
}

// startDocumented rewrites a documented config for loopback (site
// addresses and URLs to free ports, upstream addresses to logging MCP
// servers, the admin endpoint off, state and logs in a temporary
// directory) and runs it in this process, as `caddy run` would: past
// what `caddy validate` checks, the mcp_auth app's Start checks the
// config against its sites and opens the store. With an issuer, it waits
// until the issuer answers.
func startDocumented(t *testing.T, doc string) *layout {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("ALICE_HASH", harness.HashPassword(t, docPassword))
	// The identity provider example's client secret (never used: the
	// provider is read at the first sign-in).
	t.Setenv("OKTA_CLIENT_SECRET", "test-only-okta-secret")
	t.Setenv("AGENT_APP_SECRET_HASH", harness.HashPassword(t, "test-only-agent-app-secret"))
	if strings.Contains(doc, "storage postgres {env.MCP_AUTH_DSN}") {
		// A server of PostgreSQL's defaults: the shared test server runs
		// with fsync off, which Caddy warns of (TestPostgresFsyncOffWarned).
		_, dsn := pgtest.Own(t, pgtest.Options{Durable: true})
		t.Setenv("MCP_AUTH_DSN", dsn)
	}
	l := &layout{logFile: filepath.Join(dir, "caddy.log")}

	// Upstreams first: the rewritten site addresses are loopback too.
	dials := map[string]string{}
	cfg := upstreamDial.ReplaceAllStringFunc(doc, func(dial string) string {
		if _, ok := dials[dial]; !ok {
			rec := &recorder{}
			srv := httptest.NewServer(rec.wrap(mcpdemo.Handler()))
			t.Cleanup(srv.Close)
			l.upstreams = append(l.upstreams, rec)
			dials[dial] = srv.Listener.Addr().String()
		}
		return dials[dial]
	})
	cfg = adminLine.ReplaceAllString(cfg, "")
	// Files the config names go to the temporary directory: a store or
	// log under /var would be shared by every run on the machine.
	cfg = fileLine.ReplaceAllStringFunc(cfg, func(line string) string {
		path := strings.Fields(line)[2]
		return strings.Replace(line, path, filepath.Join(dir, filepath.Base(path)), 1)
	})
	if strings.Contains(cfg, "/var/") {
		t.Fatalf("a path under /var left in the rewritten config:\n%s", cfg)
	}
	const globalOpen = "\n{\n"
	i := strings.Index("\n"+cfg, globalOpen)
	if i < 0 {
		t.Fatalf("no global options block in the config:\n%s", doc)
	}
	// Bound to loopback, as the rewritten sites are plain http: Caddy
	// warns about a plain http issuer or resource reachable beyond it,
	// which the documented https sites are not.
	// The default log goes to a file the test reads; a config that
	// shapes the default log itself (README's filter for it) keeps its
	// format and gets the file and level.
	defaultLog := fmt.Sprintf("\tlog {\n\t\toutput file %s\n\t\tformat json\n\t\tlevel WARN\n\t}\n", l.logFile)
	if strings.Contains(cfg, "\n\tlog default {\n") {
		cfg = strings.Replace(cfg, "\n\tlog default {\n", fmt.Sprintf("\n\tlog default {\n\t\toutput file %s\n\t\tlevel WARN\n", l.logFile), 1)
		defaultLog = ""
	}
	cfg = cfg[:i] + fmt.Sprintf(`{
	default_bind 127.0.0.1
	admin off
	persist_config off
	storage file_system %s
`, filepath.Join(dir, "caddy")) + defaultLog + cfg[i+len(globalOpen)-1:]

	harness.StartFree(t, func(port int) string {
		out := cfg
		first := true
		for _, h := range documentedHosts {
			if !strings.Contains(out, h) {
				continue
			}
			p := port
			if !first {
				p = harness.FreePort(t)
			}
			first = false
			origin := fmt.Sprintf("http://127.0.0.1:%d", p)
			out = strings.NewReplacer("https://"+h, origin, "http://"+h, origin).Replace(out)
			out = regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(h)+` \{`).ReplaceAllString(out, origin+" {")
			if strings.Contains(out, h) {
				t.Fatalf("host %s left in the rewritten config:\n%s", h, out)
			}
		}
		l.caddyfile = out
		return out
	})
	if m := issuerLine.FindStringSubmatch(l.caddyfile); m != nil {
		l.issuer = m[1]
		harness.WaitReady(t, l.issuer+"/.well-known/oauth-authorization-server")
	}
	return l
}

// pathVariants are spellings of an endpoint path that a path matcher, a
// router or an upstream may each read differently.
func pathVariants(p string) []string {
	dir, last := p[:strings.LastIndex(p, "/")], p[strings.LastIndex(p, "/")+1:]
	mixed := []byte(p)
	for i := range mixed {
		if i%2 == 0 && mixed[i] >= 'a' && mixed[i] <= 'z' {
			mixed[i] -= 'a' - 'A'
		}
	}
	return []string{
		p, p + "/", p + ";x", p + "%2F", p + "%2f", p + "/x", p + "/.", p + "/..",
		p + "%00", p + "%20", p + ".", p + "?x=1", p + "#x", p + "%3Fx", p + "%23x",
		strings.ToUpper(p), string(mixed),
		dir + "//" + last, "/" + p, dir + "/./" + last, dir + "/x/../" + last,
		dir + "/%2e/" + last, dir + "%2F" + last,
		fmt.Sprintf("%s/%%%02x%s", dir, last[0], last[1:]),
		fmt.Sprintf("%s/%%%02X%s", dir, last[0], last[1:]),
		"/.well-known/oauth-protected-resource" + p,
		"/.well-known/oauth-protected-resource" + p + "/",
		dir + "/", dir, "/", "/x", "/mcp", "/mcp/",
	}
}

// probeInitialize is the body of every probe.
const probeInitialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}}`

var probeMethods = []string{"GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD"}

// probe sends every gateway's path variants with every method, without a
// token and with a bad one, and returns what reached the upstreams.
func (l *layout) probe(t *testing.T) []string {
	t.Helper()
	for _, g := range l.gateways {
		u, err := url.Parse(g.resource)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range pathVariants(u.Path) {
			if !strings.HasPrefix(target, "/") {
				continue
			}
			for _, method := range probeMethods {
				for _, auth := range []string{"", "Authorization: Bearer not-a-token\r\n"} {
					head := "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nOrigin: " + u.Scheme + "://" + u.Host + "\r\n" + auth
					if err := rawRequest(u.Host, method, target, head, probeInitialize); err != nil {
						t.Fatalf("%s %s: %v", method, target, err)
					}
				}
			}
		}
	}
	return l.upstreamHits()
}

// upstreamHits returns, sorted, what the upstreams received since the
// last call.
func (l *layout) upstreamHits() []string {
	var hits []string
	for _, up := range l.upstreams {
		hits = append(hits, up.take()...)
	}
	sort.Strings(hits)
	return hits
}

// probeWithToken sends the path variants of resource other than its
// path itself with a valid token: the gateway forwards only its
// endpoint's path, so an upstream's other routes stay unreachable.
func (l *layout) probeWithToken(t *testing.T, resource, token string) []string {
	t.Helper()
	u, err := url.Parse(resource)
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range append(pathVariants(u.Path), "/sse", "/health", "/messages?session_id=x") {
		if path, _, _ := strings.Cut(target, "?"); !strings.HasPrefix(target, "/") || path == u.Path {
			// A query on the endpoint is the endpoint (see the README).
			continue
		}
		for _, method := range []string{"POST", "GET", "DELETE"} {
			head := "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAuthorization: Bearer " + token + "\r\n"
			if err := rawRequest(u.Host, method, target, head, probeInitialize); err != nil {
				t.Fatalf("%s %s: %v", method, target, err)
			}
		}
	}
	return l.upstreamHits()
}

// rawRequest writes one HTTP/1.1 request with target exactly as given
// (no client-side cleaning or escaping) and reads the answer.
func rawRequest(host, method, target, head, body string) error {
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%sContent-Length: %d\r\n\r\n%s", method, target, host, head, len(body), body); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// pluginWarnings returns what the plugin logged at WARN level or above
// (the mcp_auth app, its storage and the handlers): a documented config
// loads without one, as each names something unsafe (a secret in clear,
// rules open to everyone, a bypass, an issuer off its site, ...).
func (l *layout) pluginWarnings(t *testing.T) []string {
	t.Helper()
	var w []string
	for _, line := range l.logLines(t) {
		var entry struct{ Level, Logger string }
		if json.Unmarshal([]byte(line), &entry) != nil {
			continue
		}
		plugin := entry.Logger == "mcp_auth" || strings.HasPrefix(entry.Logger, "mcp_auth.") || strings.HasPrefix(entry.Logger, "http.handlers.mcp_")
		if plugin && entry.Level != "debug" && entry.Level != "info" {
			w = append(w, line)
		}
	}
	return w
}

// logLines returns the lines of Caddy's log so far.
func (l *layout) logLines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(l.logFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Split(string(b), "\n")
}

// warnings returns the bypass warnings Caddy logged.
func (l *layout) warnings(t *testing.T) []string {
	t.Helper()
	var w []string
	for _, line := range l.logLines(t) {
		if strings.Contains(line, bypassWarning) {
			w = append(w, line)
		}
	}
	return w
}

// tokens gets a token for each gateway's resource (Dynamic Client
// Registration, login and consent as alice), by resource.
func (l *layout) tokens(t *testing.T) map[string]*oauth2.Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	md, err := harness.Discover(ctx, l.issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", l.issuer, err)
	}
	status, reg, err := harness.Register(ctx, md, map[string]any{
		"client_name":                "Layout test",
		"redirect_uris":              []string{redirectURI},
		"token_endpoint_auth_method": "none",
		"grant_types":                []string{"authorization_code"},
		"response_types":             []string{"code"},
	})
	id, _ := reg["client_id"].(string)
	if err != nil || status != http.StatusCreated || id == "" {
		t.Fatalf("register: %d %v %v", status, reg, err)
	}
	toks := map[string]*oauth2.Token{}
	for _, g := range l.gateways {
		cfg := md.Config(id, redirectURI, g.scopes...)
		ar := harness.NewAuthRequest(cfg, g.resource)
		q, err := harness.NewRobot("alice", docPassword, redirectURI).Authorize(ctx, ar.URL)
		if err != nil || q.Get("code") == "" {
			t.Fatalf("authorize for %s: %v %v", g.resource, q, err)
		}
		tok, err := ar.Exchange(ctx, cfg, q.Get("code"))
		if err != nil {
			t.Fatalf("exchange for %s: %v", g.resource, err)
		}
		toks[g.resource] = tok
	}
	return toks
}

// authorizedReaches gets a token for each gateway's resource (Dynamic
// Client Registration, login and consent as alice) and checks that an
// initialize with it reaches an upstream.
func (l *layout) authorizedReaches(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	toks := l.tokens(t)
	for _, g := range l.gateways {
		tok := toks[g.resource]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.resource, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		var seen []string
		for _, up := range l.upstreams {
			seen = append(seen, up.take()...)
		}
		if resp.StatusCode != http.StatusOK || len(seen) != 1 {
			t.Errorf("initialize with a valid token at %s: status %d, upstreams saw %q; want 200 and the request; body %s", g.resource, resp.StatusCode, seen, body)
		}
		if hits := l.probeWithToken(t, g.resource, tok.AccessToken); len(hits) > 0 {
			t.Errorf("with a valid token, paths other than %s reached the upstream:\n%s", g.resource, strings.Join(hits, "\n"))
		}
	}
}

// TestPrefixStrippedAfterGateway: README's layout for an MCP server that
// answers at another path than the site shows strips the prefix in a
// route after the gateway: an authorized initialize at /notes/mcp
// reaches the upstream at /mcp. The same with handle_path (which strips
// before anything in its block runs), or with uri in the handle block
// without the route (Caddy orders uri before mcp_gateway), fails closed:
// the gateway finds its endpoint at no path, answers 404, and the
// upstream gets nothing.
func TestPrefixStrippedAfterGateway(t *testing.T) {
	var doc string
	for _, b := range readmeConfigs(t) {
		if strings.Contains(b.Text, "uri strip_prefix /notes") {
			doc = b.Text
		}
	}
	if doc == "" {
		t.Fatal("no README config strips /notes")
	}
	handlePath := strings.NewReplacer(
		"@notes path /notes/mcp /.well-known/oauth-protected-resource/notes/mcp\n\thandle @notes {\n\t\troute {", "handle_path /notes/* {\n\t\troute {",
		"\t\t\turi strip_prefix /notes\n", "",
	).Replace(doc)
	// The route's handlers straight in the handle block, which orders
	// uri before mcp_gateway.
	noRoute := strings.NewReplacer("\t\troute {\n", "", "\n\t\t}\n\t}\n\n\thandle {", "\n\t}\n\n\thandle {").Replace(doc)
	if handlePath == doc || noRoute == doc || strings.Contains(noRoute, "route {") {
		t.Fatal("the README config's shape changed: rewrite the variants")
	}
	for _, tt := range []struct {
		name   string
		doc    string
		status int
		path   string // the path the upstream got, "" for none
	}{
		{"route after the gateway", doc, http.StatusOK, "/mcp"},
		{"handle_path", handlePath, http.StatusNotFound, ""},
		{"uri in the handle block", noRoute, http.StatusNotFound, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := startLayout(t, tt.doc)
			if w := l.pluginWarnings(t); len(w) > 0 {
				t.Errorf("Caddy warned:\n%s", strings.Join(w, "\n"))
			}
			g := l.gateways[0]
			tok := l.tokens(t)[g.resource]
			req, err := http.NewRequest(http.MethodPost, g.resource, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"probe","version":"1"}}}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			var seen []string
			for _, up := range l.upstreams {
				seen = append(seen, up.take()...)
			}
			want := []string(nil)
			if tt.path != "" {
				want = []string{"POST " + tt.path + " no-token"}
			}
			if resp.StatusCode != tt.status || !slices.Equal(seen, want) {
				t.Errorf("initialize at %s = %d, upstream saw %q; want %d and %q", g.resource, resp.StatusCode, seen, tt.status, want)
			}
			if hits := l.probe(t); len(hits) > 0 {
				t.Errorf("without a valid token the upstream received:\n%s", strings.Join(hits, "\n"))
			}
		})
	}
}
