// Package idp tests sign-in through an upstream OpenID Connect provider
// that no one here wrote: oidc-provider (npm, the certified Node
// implementation) on loopback, started from test/node/idp.mjs, with
// caddy-mcp-auth in process configured by a Caddyfile. A proxy in front
// of the provider is its public URL; it can swap the ID token of a token
// response for another one the provider signed, to test what the
// issuer does with an ID token that is genuine but not for this login.
//
// The Node tooling lives in test/node (test/node/setup.sh installs it);
// without it these tests skip, unless CI_REQUIRE_NODE is set.
//
// Caddy keeps one running configuration per process: tests here must not
// run in parallel.
package idp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	idpName      = "corp"
	idpClientID  = "mcp-auth"
	idpSecret    = "mcp-auth-upstream-secret-0123456789"
	otherClient  = "other-app" // another client of the same provider
	otherSecret  = "other-app-secret-0123456789"
	otherRedir   = "http://127.0.0.1:9/other-callback"
	clientID     = "test-client"
	readScope    = "mcp:tools"
	writeScope   = "demo:write"
	accountAlice = "alice"
)

// account is a user at the provider: its claims.
type account struct {
	Email         string   `json:"email,omitempty"`
	EmailVerified bool     `json:"email_verified"`
	Name          string   `json:"name,omitempty"`
	Groups        []string `json:"groups,omitempty"`
}

// provider is the running oidc-provider behind its proxy.
type provider struct {
	Issuer   string // the proxy's URL
	accounts string // the accounts file the provider reads at sign-in
	mu       sync.Mutex
	swap     string   // an ID token to put in the next token response
	seen     []string // ID tokens of the token responses, in order
	issued   []string // access and refresh tokens of the token responses
	// down has the proxy answer every request 503, as a provider that
	// is down (or behind a failing load balancer).
	down atomic.Bool
}

// setAccounts replaces the provider's users.
func (p *provider) setAccounts(t *testing.T, accounts map[string]account) {
	t.Helper()
	b, err := json.Marshal(accounts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.accounts, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// swapNext makes the next token response carry idToken instead.
func (p *provider) swapNext(idToken string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.swap = idToken
}

func (p *provider) lastIDToken() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.seen) == 0 {
		return ""
	}
	return p.seen[len(p.seen)-1]
}

// editToken records the ID token of a token response and swaps it when
// asked.
func (p *provider) editToken(resp *http.Response) error {
	if resp.Request.URL.Path != "/token" || resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	p.mu.Lock()
	if s, ok := m["id_token"].(string); ok {
		p.seen = append(p.seen, s)
	}
	for _, k := range []string{"access_token", "refresh_token"} {
		if s, ok := m[k].(string); ok {
			p.issued = append(p.issued, s)
		}
	}
	if p.swap != "" {
		m["id_token"], p.swap = p.swap, ""
	}
	p.mu.Unlock()
	if body, err = json.Marshal(m); err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

func requireNode(t *testing.T) (node, dir string) {
	t.Helper()
	dir, err := filepath.Abs("../node")
	if err != nil {
		t.Fatal(err)
	}
	node = filepath.Join(dir, "node_modules", "node", "bin", "node")
	for _, p := range []string{node, filepath.Join(dir, "node_modules", "oidc-provider", "package.json")} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI_REQUIRE_NODE") != "" {
				t.Fatalf("CI_REQUIRE_NODE is set but the Node tooling is missing (%v); run test/node/setup.sh", err)
			}
			t.Skipf("Node tooling not installed (%s missing): run test/node/setup.sh, or set CI_REQUIRE_NODE=1 to make this a failure", p)
		}
	}
	return node, dir
}

// startProvider starts oidc-provider with our issuer's callback as the
// redirect URI of client idpClientID, behind a proxy that is its issuer
// URL; both stop when the test ends.
func startProvider(t *testing.T, callback string) *provider {
	t.Helper()
	return startProviderWith(t, []map[string]any{
		{"client_id": idpClientID, "client_secret": idpSecret, "redirect_uris": []string{callback}},
		{"client_id": otherClient, "client_secret": otherSecret, "redirect_uris": []string{otherRedir}},
	}, nil)
}

// startProviderWith starts oidc-provider with these static clients and
// resource servers (see idp.mjs, IDP_RESOURCES) behind its proxy.
func startProviderWith(t *testing.T, clientList []map[string]any, resources map[string]any) *provider {
	t.Helper()
	node, dir := requireNode(t)
	proxyLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &provider{Issuer: "http://" + proxyLn.Addr().String(), accounts: filepath.Join(t.TempDir(), "accounts.json")}
	p.setAccounts(t, map[string]account{})
	backend := harness.FreePort(t)
	clients, _ := json.Marshal(clientList)
	rs, _ := json.Marshal(resources)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, node, "idp.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "IDP_ISSUER="+p.Issuer, "IDP_PORT="+strconv.Itoa(backend),
		"IDP_CLIENTS="+string(clients), "IDP_ACCOUNTS="+p.accounts, "IDP_RESOURCES="+string(rs))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start idp.mjs: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("idp.mjs stderr:\n%s", stderr.String())
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := sc.Scan() && sc.Text() == "ready"
		ready <- ok
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("idp.mjs did not start:\n%s", stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("idp.mjs did not start in 30s:\n%s", stderr.String())
	}
	target, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", backend))
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: p.editToken,
	}
	// Full duplex: otherwise net/http closes the request body as the
	// answer begins, the transport's late read of it fails and it cuts
	// the answer off (golang/go#40747; see test/cluster's balancer).
	fullDuplex := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		rp.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: fullDuplex, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(proxyLn) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// stack is caddy-mcp-auth with the provider configured.
type stack struct {
	Issuer, Resource, Redirect string
	idp                        *provider
	meta                       *harness.Metadata
	args                       []any // caddyfile's arguments, for reloads
}

const caddyfile = `{
	admin off
	persist_config off
	auto_https off
	storage file_system %[5]s
	mcp_auth {
		issuer %[1]s
		storage memory
		group eng {
			scopes * %[6]s %[7]s
		}
		group readers {
			scopes * %[6]s
		}
		resource %[1]s/mcp {
			scopes %[6]s %[7]s
		}
		client %[8]s {
			public
			redirect_uri %[1]s/cb
			grant_types authorization_code refresh_token
		}
		identity_provider %[3]s {
			issuer %[2]s
			client_id %[9]s
			client_secret {env.IDP_TEST_CLIENT_SECRET}
			scopes openid email profile groups offline_access
			group engineers eng
			group staff readers
			allowed_email_domains corp.example
			display_name "Corp SSO"
			recheck %[10]s
		}
		identity_provider down {
			issuer http://127.0.0.1:1
			client_id nobody
			group * readers
			display_name "Down SSO"
		}
	}
}

http://:%[4]d {
	bind 127.0.0.1
	%[11]s
	mcp_issuer
}
`

func startStack(t *testing.T, recheck string) *stack {
	t.Helper()
	return startStackWith(t, recheck, "")
}

// startStackWith is startStack with more directives in the issuer's site.
func startStackWith(t *testing.T, recheck, site string) *stack {
	t.Helper()
	return startStackGlobal(t, recheck, "", site)
}

// startStackGlobal is startStackWith with more global options.
func startStackGlobal(t *testing.T, recheck, global, site string) *stack {
	t.Helper()
	port := harness.FreePort(t)
	iss := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startProvider(t, iss+"/login/"+idpName+"/callback")
	t.Setenv("IDP_TEST_CLIENT_SECRET", idpSecret)
	args := []any{iss, p.Issuer, idpName, port, t.TempDir(), readScope, writeScope, clientID, idpClientID, recheck, site}
	harness.Start(t, strings.Replace(fmt.Sprintf(caddyfile, args...), "\tadmin off\n", global+"\tadmin off\n", 1))
	harness.WaitReady(t, iss+"/.well-known/oauth-authorization-server")
	meta, err := harness.Discover(context.Background(), iss)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{Issuer: iss, Resource: iss + "/mcp", Redirect: iss + "/cb", idp: p, meta: meta, args: args}
}

// outcome is where a browser's sign-in ended: the client's redirect
// (query) or a page of ours.
type outcome struct {
	query url.Values
	page  *harness.Page
	pages []*harness.Page
}

// signIn drives a browser (robot) from the authorization URL through our
// login page's "Continue with" button, the provider's login and consent
// pages (as login), and our consent page, until the redirect to the
// client or a page with none of these forms. before runs on the
// provider's login page, to tamper with the flow.
func signIn(t *testing.T, ctx context.Context, r *harness.Robot, authURL, login string, before func(*harness.Page) bool) outcome {
	t.Helper()
	return signInVia(t, ctx, r, authURL, idpName, login, before)
}

// signInVia is signIn pressing the button of identity provider name.
func signInVia(t *testing.T, ctx context.Context, r *harness.Robot, authURL, name, login string, before func(*harness.Page) bool) outcome {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	var out outcome
	for range 20 {
		resp, err := r.Client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		if loc, err := resp.Location(); err == nil && strings.HasPrefix(loc.String(), r.RedirectURI) {
			resp.Body.Close()
			out.query = loc.Query()
			return out
		}
		page, err := harness.ReadPage(resp)
		if err != nil {
			t.Fatal(err)
		}
		out.page, out.pages = page, append(out.pages, page)
		if page.Refresh != "" { // our "Continue with" button's page
			next, err := page.URL.Parse(page.Refresh)
			if err != nil {
				t.Fatal(err)
			}
			req, _ = http.NewRequestWithContext(ctx, http.MethodGet, next.String(), nil)
			continue
		}
		var form *harness.Form
		vals := url.Values{}
		switch {
		case page.Form("idp-"+name) != nil:
			form = page.Form("idp-" + name)
		case providerForm(page, "login") != nil:
			if before != nil && !before(page) {
				return out
			}
			form = providerForm(page, "login")
			vals.Set("login", login)
			vals.Set("password", "any")
		case providerForm(page, "consent") != nil:
			form = providerForm(page, "consent")
		case page.Form("consent") != nil:
			form = page.Form("consent")
			vals.Set("decision", "approve")
		default:
			return out
		}
		for k, vs := range form.Hidden {
			if !vals.Has(k) {
				vals[k] = vs
			}
		}
		action, err := page.URL.Parse(form.Action)
		if err != nil {
			t.Fatal(err)
		}
		req, _ = http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(vals.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", page.URL.Scheme+"://"+page.URL.Host)
	}
	t.Fatal("sign-in: no end after 20 pages")
	return out
}

// providerForm is oidc-provider's development interaction form for prompt.
func providerForm(p *harness.Page, prompt string) *harness.Form {
	for i := range p.Forms {
		if p.Forms[i].Hidden.Get("prompt") == prompt {
			return &p.Forms[i]
		}
	}
	return nil
}

// authorize signs in through the provider as login and redeems the code;
// it returns the token response or the page the sign-in ended on.
func (s *stack) authorize(t *testing.T, r *harness.Robot, login string, before func(*harness.Page) bool) (*oauth2.Token, outcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := s.meta.Config(clientID, s.Redirect, readScope, writeScope, "offline_access")
	ar := harness.NewAuthRequest(cfg, s.Resource)
	out := signIn(t, ctx, r, ar.URL, login, before)
	if out.query == nil {
		return nil, out
	}
	if e := out.query.Get("error"); e != "" {
		t.Fatalf("authorization error %s: %s", e, out.query.Get("error_description"))
	}
	tok, err := ar.Exchange(ctx, cfg, out.query.Get("code"))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok, out
}

func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	c, err := harness.Claims(tok)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func scopesOf(t *testing.T, tok *oauth2.Token) []string {
	t.Helper()
	s, _ := claims(t, tok.AccessToken)["scope"].(string)
	f := slices.DeleteFunc(strings.Fields(s), func(s string) bool { return s == "offline_access" })
	slices.Sort(f)
	return f
}

var (
	alice     = account{Email: "alice@corp.example", EmailVerified: true, Name: "Alice", Groups: []string{"engineers", "unmapped"}}
	staffBob  = account{Email: "bob@corp.example", EmailVerified: true, Name: "Bob", Groups: []string{"staff"}}
	outsider  = account{Email: "eve@elsewhere.example", EmailVerified: true, Groups: []string{"engineers"}}
	unverfied = account{Email: "mallory@corp.example", EmailVerified: false, Groups: []string{"engineers"}}
	noGroups  = account{Email: "carol@corp.example", EmailVerified: true, Groups: []string{"visitors"}}
)

// TestFederatedLogin: a user signs in through our login page at the
// provider and comes back to our consent page; the token's sub names the
// provider's user and its scopes come from the mapped groups; the
// password form is absent (no local user); the admin view of the user
// names the provider.
func TestFederatedLogin(t *testing.T) {
	s := startStack(t, "1h")
	s.idp.setAccounts(t, map[string]account{accountAlice: alice, "bob": staffBob})

	r := harness.NewRobot("", "", s.Redirect)
	tok, out := s.authorize(t, r, accountAlice, nil)
	if tok == nil {
		t.Fatalf("sign-in ended on %s (%d): %s", out.page.URL, out.page.Status, out.page.Text())
	}
	login := out.pages[0]
	if login.Form("login") != nil {
		t.Errorf("login page shows the password form with no local user")
	}
	if !strings.Contains(login.Text(), "Continue with Corp SSO") {
		t.Errorf("login page = %q, want a Continue with Corp SSO button", login.Text())
	}
	if !slices.ContainsFunc(out.pages, func(p *harness.Page) bool { return p.Form("consent") != nil }) {
		t.Errorf("no consent page of ours on the way back from the provider")
	}
	c := claims(t, tok.AccessToken)
	if c["sub"] != idpName+":"+accountAlice {
		t.Errorf("sub = %v, want %q", c["sub"], idpName+":"+accountAlice)
	}
	if got, want := scopesOf(t, tok), []string{writeScope, readScope}; !slices.Equal(got, want) {
		t.Errorf("scopes = %v, want %v (group engineers -> eng)", got, want)
	}

	// Another user, another mapping: staff -> readers.
	tok, out = s.authorize(t, harness.NewRobot("", "", s.Redirect), "bob", nil)
	if tok == nil {
		t.Fatalf("bob: sign-in ended on %s: %s", out.page.URL, out.page.Text())
	}
	if got, want := scopesOf(t, tok), []string{readScope}; !slices.Equal(got, want) {
		t.Errorf("bob scopes = %v, want %v (group staff -> readers)", got, want)
	}
}

// TestFederatedReauthentication: a request with prompt=login, in a
// browser signed in here and at the provider, goes through the
// provider's login form again (we ask the provider for prompt=login
// too), and the provider's auth_time then passes our check of it.
func TestFederatedReauthentication(t *testing.T) {
	s := startStack(t, "1h")
	s.idp.setAccounts(t, map[string]account{accountAlice: alice})
	r := harness.NewRobot("", "", s.Redirect)
	if tok, out := s.authorize(t, r, accountAlice, nil); tok == nil {
		t.Fatalf("sign-in ended on %s: %s", out.page.URL, out.page.Text())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := s.meta.Config(clientID, s.Redirect, readScope)
	ar := harness.NewAuthRequest(cfg, s.Resource)
	out := signIn(t, ctx, r, ar.URL+"&prompt=login", accountAlice, nil)
	if out.query.Get("code") == "" {
		t.Fatalf("prompt=login sign-in ended on %s (%d): %s", out.page.URL, out.page.Status, out.page.Text())
	}
	if !slices.ContainsFunc(out.pages, func(p *harness.Page) bool { return providerForm(p, "login") != nil }) {
		t.Errorf("prompt=login: the provider signed the user in without its login form")
	}
}

// TestFederatedRefusals: what the provider or the configuration does not
// admit gets our error page and no code: a domain not allowed, an email
// the provider marks unverified, no mapped group, a login aborted at the
// provider, a group removed at the provider since the last login (the
// next login is refused and the earlier grant's refresh loses the
// scopes).
func TestFederatedRefusals(t *testing.T) {
	s := startStack(t, "1h")
	s.idp.setAccounts(t, map[string]account{accountAlice: alice, "eve": outsider, "mallory": unverfied, "carol": noGroups})

	for _, login := range []string{"eve", "mallory", "carol"} {
		t.Run(login, func(t *testing.T) {
			tok, out := s.authorize(t, harness.NewRobot("", "", s.Redirect), login, nil)
			if tok != nil {
				t.Fatalf("%s got a token", login)
			}
			if out.page.Status != http.StatusForbidden || !strings.Contains(out.page.Text(), "may not sign in here") {
				t.Errorf("%s: page %d %q, want 403 may not sign in here", login, out.page.Status, out.page.Text())
			}
		})
	}

	t.Run("aborted at the provider", func(t *testing.T) {
		r := harness.NewRobot("", "", s.Redirect)
		_, out := s.authorize(t, r, accountAlice, func(p *harness.Page) bool {
			abort := regexpFind(p.Body, `href="([^"]*/abort)"`)
			if abort == "" {
				t.Fatalf("no abort link on the provider's login page")
			}
			u, _ := p.URL.Parse(abort)
			pg, err := r.Get(context.Background(), u.String())
			if err != nil {
				t.Fatal(err)
			}
			if pg.Status != http.StatusForbidden || !strings.Contains(pg.Text(), "did not sign you in (access_denied)") {
				t.Errorf("after abort: page %d %q, want 403 did not sign you in (access_denied)", pg.Status, pg.Text())
			}
			return false
		})
		if out.query != nil {
			t.Errorf("aborted login reached the client: %v", out.query)
		}
	})

	t.Run("group removed", func(t *testing.T) {
		tok, out := s.authorize(t, harness.NewRobot("", "", s.Redirect), accountAlice, nil)
		if tok == nil {
			t.Fatalf("sign-in ended on %s: %s", out.page.URL, out.page.Text())
		}
		gone := alice
		gone.Groups = []string{"unmapped"}
		s.idp.setAccounts(t, map[string]account{accountAlice: gone})
		_, out = s.authorize(t, harness.NewRobot("", "", s.Redirect), accountAlice, nil)
		if out.query != nil || out.page.Status != http.StatusForbidden {
			t.Errorf("login without mapped groups: page %d %q, redirect %v; want 403", out.page.Status, out.page.Text(), out.query)
		}
		// The refused login changed nothing: the earlier grant refreshes
		// with the groups of the last admitted login, until recheck.
		tr, err := harness.Refresh(context.Background(), s.meta, clientID, tok.RefreshToken, s.Resource)
		if err != nil || tr.Status != http.StatusOK {
			t.Fatalf("refresh = %d %s %v, want 200 within recheck", tr.Status, tr.Error, err)
		}
	})
}

// TestFederatedTampering: a forged state, a state from another browser,
// an ID token of the provider for another client, and an ID token of an
// earlier login (its nonce replayed) are refused, and nothing is issued.
func TestFederatedTampering(t *testing.T) {
	s := startStack(t, "1h")
	s.idp.setAccounts(t, map[string]account{accountAlice: alice})
	ctx := context.Background()
	callback := s.Issuer + "/login/" + idpName + "/callback"

	t.Run("provider unreachable", func(t *testing.T) {
		r := harness.NewRobot("", "", s.Redirect)
		login, err := r.Get(ctx, s.Issuer+"/login")
		if err != nil {
			t.Fatal(err)
		}
		form := login.Form("idp-down")
		if form == nil {
			t.Fatalf("login page has no button for the provider that is down: %s", login.Text())
		}
		resp, err := r.Submit(ctx, login, form, nil)
		if err != nil {
			t.Fatal(err)
		}
		pg, err := harness.ReadPage(resp)
		if err != nil {
			t.Fatal(err)
		}
		if pg.Status != http.StatusBadGateway || !strings.Contains(pg.Text(), "Down SSO cannot be reached") {
			t.Errorf("unreachable provider: page %d %q, want 502 cannot be reached", pg.Status, pg.Text())
		}
	})

	t.Run("forged state", func(t *testing.T) {
		r := harness.NewRobot("", "", s.Redirect)
		if _, err := r.Get(ctx, s.Issuer+"/login"); err != nil { // a session
			t.Fatal(err)
		}
		pg, err := r.Get(ctx, callback+"?code=x&state=forged-state-value")
		if err != nil {
			t.Fatal(err)
		}
		if pg.Status != http.StatusBadRequest || !strings.Contains(pg.Text(), "Sign-in expired") {
			t.Errorf("forged state: page %d %q, want 400 Sign-in expired", pg.Status, pg.Text())
		}
	})

	t.Run("state of another browser", func(t *testing.T) {
		victim := newRobot(s.Redirect)
		var stolen string
		s.authorize(t, victim, accountAlice, func(p *harness.Page) bool {
			// The provider's login page: the authorization request named
			// our state; the attacker's browser presents it with a code.
			stolen = victimState(t, victim)
			return false
		})
		attacker := harness.NewRobot("", "", s.Redirect)
		if _, err := attacker.Get(ctx, s.Issuer+"/login"); err != nil {
			t.Fatal(err)
		}
		pg, err := attacker.Get(ctx, callback+"?code=x&state="+url.QueryEscape(stolen))
		if err != nil {
			t.Fatal(err)
		}
		if pg.Status != http.StatusBadRequest {
			t.Errorf("another browser's state: page %d %q, want 400", pg.Status, pg.Text())
		}
	})

	t.Run("ID token for another client", func(t *testing.T) {
		other := otherClientIDToken(t, s)
		s.idp.swapNext(other)
		tok, out := s.authorize(t, harness.NewRobot("", "", s.Redirect), accountAlice, nil)
		if tok != nil || out.page.Status != http.StatusForbidden || !strings.Contains(out.page.Text(), "is not valid") {
			t.Errorf("another client's ID token: page %d %q; want 403 not valid, no token", out.page.Status, out.page.Text())
		}
	})

	t.Run("replayed nonce", func(t *testing.T) {
		if tok, out := s.authorize(t, harness.NewRobot("", "", s.Redirect), accountAlice, nil); tok == nil {
			t.Fatalf("sign-in ended on %s: %s", out.page.URL, out.page.Text())
		}
		earlier := s.idp.lastIDToken()
		s.idp.swapNext(earlier)
		tok, out := s.authorize(t, harness.NewRobot("", "", s.Redirect), accountAlice, nil)
		if tok != nil || out.page.Status != http.StatusForbidden || !strings.Contains(out.page.Text(), "is not valid") {
			t.Errorf("earlier login's ID token: page %d %q; want 403 not valid, no token", out.page.Status, out.page.Text())
		}
	})
}

// TestFederatedRecheck: a provider's user whose last sign-in there is
// older than recheck cannot refresh; a new sign-in (groups re-read)
// renews the user's grants.
func TestFederatedRecheck(t *testing.T) {
	// Long enough that a loaded CI machine still ends the sign-in's
	// redirects and code exchange, and refreshes, within it.
	const recheck = 5 * time.Second
	s := startStack(t, recheck.String())
	s.idp.setAccounts(t, map[string]account{accountAlice: alice})
	tok, out := s.authorize(t, harness.NewRobot("", "", s.Redirect), accountAlice, nil)
	if tok == nil {
		t.Fatalf("sign-in ended on %s: %s", out.page.URL, out.page.Text())
	}
	signedIn := time.Now() // the sign-in was earlier
	ctx := context.Background()
	tr, err := harness.Refresh(ctx, s.meta, clientID, tok.RefreshToken, s.Resource)
	if err != nil || tr.Status != http.StatusOK {
		t.Fatalf("refresh within recheck = %d %s %v, want 200", tr.Status, tr.Error, err)
	}
	time.Sleep(time.Until(signedIn.Add(recheck + 100*time.Millisecond)))
	stale, err := harness.Refresh(ctx, s.meta, clientID, tr.RefreshToken, s.Resource)
	if err != nil || stale.Status != http.StatusBadRequest || stale.Error != "invalid_grant" {
		t.Fatalf("refresh after recheck = %d %s %v, want 400 invalid_grant", stale.Status, stale.Error, err)
	}
	if tok, out := s.authorize(t, harness.NewRobot("", "", s.Redirect), accountAlice, nil); tok == nil {
		t.Fatalf("sign-in again ended on %s: %s", out.page.URL, out.page.Text())
	}
	again, err := harness.Refresh(ctx, s.meta, clientID, tr.RefreshToken, s.Resource)
	if err != nil || again.Status != http.StatusOK {
		t.Fatalf("refresh after a new sign-in = %d %s %v, want 200", again.Status, again.Error, err)
	}
}

func regexpFind(s, expr string) string {
	m := regexp.MustCompile(expr).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return html.UnescapeString(m[1])
}

// urlLog records the URLs a robot requested.
type urlLog struct {
	rt   http.RoundTripper
	mu   sync.Mutex
	urls []*url.URL
}

func (l *urlLog) RoundTrip(r *http.Request) (*http.Response, error) {
	l.mu.Lock()
	l.urls = append(l.urls, r.URL)
	l.mu.Unlock()
	return l.rt.RoundTrip(r)
}

// victimState is the state our issuer sent the robot's browser to the
// provider with. The robot's client must have been made by newRobot.
func victimState(t *testing.T, r *harness.Robot) string {
	t.Helper()
	l := r.Client.Transport.(*urlLog)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, u := range l.urls {
		if u.Path == "/auth" && u.Query().Get("state") != "" {
			return u.Query().Get("state")
		}
	}
	t.Fatal("no authorization request to the provider")
	return ""
}

// newRobot is a robot whose requests are recorded.
func newRobot(redirect string) *harness.Robot {
	r := harness.NewRobot("", "", redirect)
	r.Client.Transport = &urlLog{rt: http.DefaultTransport}
	return r
}

// otherClientIDToken signs alice in at the provider for another client of
// it and returns the ID token the provider issued to that client.
func otherClientIDToken(t *testing.T, s *stack) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := &oauth2.Config{
		ClientID: otherClient, ClientSecret: otherSecret, RedirectURL: otherRedir,
		Scopes:   []string{"openid", "email"},
		Endpoint: oauth2.Endpoint{AuthURL: s.idp.Issuer + "/auth", TokenURL: s.idp.Issuer + "/token", AuthStyle: oauth2.AuthStyleInHeader},
	}
	verifier := oauth2.GenerateVerifier()
	u := cfg.AuthCodeURL("other-state", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "other-nonce"))
	out := signIn(t, ctx, harness.NewRobot("", "", otherRedir), u, accountAlice, nil)
	if out.query.Get("code") == "" {
		t.Fatalf("other client's sign-in: %v", out.query)
	}
	tok, err := cfg.Exchange(ctx, out.query.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("other client's exchange: %v", err)
	}
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		t.Fatal("no ID token for the other client")
	}
	return id
}

// TestFederatedReload: a reload that keeps a provider as it was keeps its
// users' grants; one that re-points it signs its users out, their refresh
// tokens refused: to another client_id at the same provider, or to a
// tenant (a multi-tenant issuer's other population of users, the same
// sub there naming someone else).
func TestFederatedReload(t *testing.T) {
	s := startStack(t, "1h")
	s.idp.setAccounts(t, map[string]account{accountAlice: alice})
	signIn := func() string {
		t.Helper()
		tok, out := s.authorize(t, harness.NewRobot("", "", s.Redirect), accountAlice, nil)
		if tok == nil {
			t.Fatalf("sign-in ended on %s: %s", out.page.URL, out.page.Text())
		}
		return tok.RefreshToken
	}
	// reload loads the configuration with the provider's client_id line
	// reading idpClient (more lines of the block after it).
	reload := func(idpClient string) {
		t.Helper()
		args := slices.Clone(s.args)
		args[8] = idpClient
		if err := harness.Load(t, fmt.Sprintf(caddyfile, args...)); err != nil {
			t.Fatalf("reload: %v", err)
		}
		harness.WaitReady(t, s.Issuer+"/.well-known/oauth-authorization-server")
	}
	ctx := context.Background()
	refresh := signIn()
	reload(idpClientID) // unchanged
	tr, err := harness.Refresh(ctx, s.meta, clientID, refresh, s.Resource)
	if err != nil || tr.Status != http.StatusOK {
		t.Fatalf("refresh after an unchanged reload = %d %s %v, want 200", tr.Status, tr.Error, err)
	}
	for _, change := range []struct{ name, idpClient string }{
		{"to a tenant", idpClientID + "\n\t\t\ttenant acme"},
		{"to another client_id", idpClientID + "-other"},
	} {
		reload(change.idpClient)
		gone, err := harness.Refresh(ctx, s.meta, clientID, tr.RefreshToken, s.Resource)
		if err != nil || gone.Status != http.StatusBadRequest || gone.Error != "invalid_grant" {
			t.Fatalf("refresh after the provider was re-pointed %s = %d %s %v, want 400 invalid_grant", change.name, gone.Status, gone.Error, err)
		}
		reload(idpClientID)
		tr.RefreshToken = signIn()
	}
}
