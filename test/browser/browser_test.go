// Package browser drives the issuer's login, consent and connected-apps
// pages with a real headless Chromium against Caddy running in process.
package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	chromiumPath = "/usr/bin/chromium"
	clientID     = "notes-desktop"
	clientName   = "Notes Desktop"
	username     = "alice"
	password     = "correct horse battery staple"
	scopeRead    = "notes:read"
	scopeWrite   = "notes:write"
)

// env is one Caddy with the issuer, a registered public client whose
// loopback redirect URI is served by a recording callback server.
type env struct {
	issuer   string
	resource string
	md       *harness.Metadata
	cfg      *oauth2.Config
	callback *callback
}

// callback records the authorization responses the browser delivers,
// and the arrivals after a sign-out (RP-Initiated Logout).
type callback struct {
	srv       *httptest.Server
	got       chan url.Values
	signedOut chan url.Values
}

func newCallback(t *testing.T) *callback {
	t.Helper()
	c := &callback{got: make(chan url.Values, 4), signedOut: make(chan url.Values, 4)}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := c.got
		switch r.URL.Path {
		case "/callback":
		case "/signed-out":
			got = c.signedOut
		default:
			http.NotFound(w, r)
			return
		}
		select {
		case got <- r.URL.Query():
		default:
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<!doctype html><title>Back at the app</title><p>You can close this window.</p>")
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *callback) uri() string { return c.srv.URL + "/callback" }

// settledAt waits until the browser has loaded a page at a URL that
// begins with prefix: the issuer sends a browser on with a page of its own
// (a meta refresh), and a navigation started while that navigation is
// still loading is aborted (net::ERR_ABORTED), though the callback has
// already seen the request.
func settledAt(t *testing.T, ctx context.Context, prefix string) {
	t.Helper()
	js := fmt.Sprintf(`location.href.startsWith(%q) && document.readyState === "complete"`, prefix)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// An evaluation during the navigation fails (its context is
		// gone): ask again.
		at, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && at {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the browser never settled at %s: %v", prefix, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// signedOutURI is the client's post_logout_redirect_uri.
func (c *callback) signedOutURI() string { return c.srv.URL + "/signed-out" }

// wait returns the next authorization response.
func (c *callback) wait(t *testing.T) url.Values {
	t.Helper()
	select {
	case q := <-c.got:
		return q
	case <-time.After(15 * time.Second):
		t.Fatal("the browser never reached the client's redirect URI")
		return nil
	}
}

func setup(t *testing.T) *env {
	t.Helper()
	return setupAt(t, "http://127.0.0.1:%d")
}

// setupAt is setup with the issuer URL issuerFormat names, given the
// port.
func setupAt(t *testing.T, issuerFormat string) *env {
	t.Helper()
	return setupWith(t, issuerFormat, "")
}

// setupWith is setupAt with more lines for the mcp_auth block.
func setupWith(t *testing.T, issuerFormat, more string) *env {
	t.Helper()
	cb := newCallback(t)
	dir := t.TempDir()
	hash := harness.HashPassword(t, password)
	e := &env{callback: cb}
	harness.StartFree(t, func(port int) string {
		e.issuer = fmt.Sprintf(issuerFormat, port)
		e.resource = e.issuer + "/mcp"
		return caddyfile(e, dir, hash, more)
	})
	harness.WaitReady(t, e.issuer+"/.well-known/oauth-authorization-server")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := harness.Discover(ctx, e.issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", e.issuer, err)
	}
	e.md = md
	e.cfg = md.Config(clientID, cb.uri(), scopeRead, scopeWrite)
	return e
}

// caddyfile is the configuration under test: the issuer with one user, one
// group granting the notes scopes, one public client, and the resource a
// gateway would protect.
func caddyfile(e *env, dir, hash, more string) string {
	if more != "" {
		more += "\n"
	}
	return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	log {
		level WARN
	}
	mcp_auth {
		issuer %[2]s
		storage bolt %[1]s/mcp-auth.db
		user %[3]s %[4]s {
			groups writers
		}
		group writers {
			scopes * %[7]s %[8]s
		}
		client %[5]s {
			name "%[6]s"
			public
			redirect_uri %[9]s
			post_logout_redirect_uri %[11]s
		}
		resource %[10]s {
			scopes %[7]s %[8]s
		}
%[12]s	}
}

%[2]s {
	mcp_issuer
}
`, dir, e.issuer, username, hash, clientID, clientName, scopeRead, scopeWrite, e.callback.uri(), e.resource, e.callback.signedOutURI(), more)
}

// newBrowser starts a headless Chromium with a fresh profile.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI_REQUIRE_BROWSER") == "" {
			t.Skipf("%s not installed (set CI_REQUIRE_BROWSER to make this a failure)", chromiumPath)
		}
		t.Fatalf("CI_REQUIRE_BROWSER is set but %s is missing: %v", chromiumPath, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		// Without these Chromium's own background connections make page
		// loads fail with connection refused here.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1000, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	// The whole test's browser steps, Chromium's start included: a guard
	// against a hang, not a speed limit. Each wait of a step has its own
	// bound (callback.wait, waitFor, settledAt); a loaded CI machine took
	// 42 s of the 60 s this was for TestAgentConsentAndRevoke's steps.
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc() // waits for Chromium to exit, before TempDir removal
	})
	return ctx
}

// screenshot saves a full-page PNG under test/artifacts/ and logs its path.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	dir, err := filepath.Abs(filepath.Join("..", "artifacts"))
	if err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot: %s", p)
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func run[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// navigate runs steps that submit a form or follow a link, waits until the
// next page has loaded, and returns its HTTP status. (Waiting on a selector
// instead would race: the old page may still match it.)
func navigate(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) int64 {
	t.Helper()
	resp, err := chromedp.RunResponse(ctx, steps...)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return resp.Status
}

// bodyText is the page's rendered text.
func bodyText(t *testing.T, ctx context.Context) string {
	t.Helper()
	return strings.Join(strings.Fields(run(t, ctx, "read page text", chromedp.Evaluate[string](`document.body.innerText`))), " ")
}

// login opens the authorization URL and signs in with the given password,
// leaving the browser on whatever page follows; it returns that page's
// HTTP status.
func login(t *testing.T, ctx context.Context, authURL, pw string) int64 {
	t.Helper()
	do(t, ctx, "open authorize",
		chromedp.Navigate(authURL),
		chromedp.WaitVisible(chromedp.CSS(`form#login`)),
	)
	return navigate(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=username]`), username),
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=password]`), pw),
		chromedp.Submit(chromedp.CSS(`form#login`)),
	)
}

// requireConsent fails the test unless the browser shows the consent page.
func requireConsent(t *testing.T, ctx context.Context, status int64) {
	t.Helper()
	n := run(t, ctx, "find consent form", chromedp.Evaluate[int](`document.querySelectorAll("form#consent").length`))
	if status != http.StatusOK || n != 1 {
		screenshot(t, ctx, "not-consent")
		t.Fatalf("after sign-in: status %d, %d consent forms; page: %s", status, n, bodyText(t, ctx))
	}
}

// consentDecision clicks one of the consent page's decision buttons
// (restingClick).
func consentDecision(t *testing.T, ctx context.Context, decision string) {
	t.Helper()
	restingClick(t, ctx, fmt.Sprintf(`form#consent [name=decision][value=%s]`, decision))
}

// restingClick clicks the button that selector selects, with the pointer
// first resting on it until it takes clicks (armsLate).
func restingClick(t *testing.T, ctx context.Context, button string) {
	t.Helper()
	h := run(t, ctx, "find "+button, chromedp.Evaluate[allowHit](fmt.Sprintf(hitTest, button)))
	do(t, ctx, "point at "+button, chromedp.MouseEvent(chromedp.MouseMoved, h.X, h.Y))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`getComputedStyle(document.querySelector(%q)).pointerEvents !== "none"`, button))); err != nil {
		t.Fatalf("wait for %s to take clicks: %v", button, err)
	}
	do(t, ctx, "click "+button, chromedp.Click(chromedp.CSS(button)))
}

// allowHit is the middle of a button, and whether a click there lands on
// it.
type allowHit struct {
	X   float64 `json:"x"`
	Y   float64 `json:"y"`
	Hit bool    `json:"hit"`
}

// hitTest is the expression giving the allowHit of the button that %q
// selects.
const hitTest = `(() => {
	const b = document.querySelector(%q);
	const r = b.getBoundingClientRect();
	const x = r.x + r.width / 2, y = r.y + r.height / 2;
	return {x: x, y: y, hit: document.elementFromPoint(x, y) === b};
})()`

// TestConsentAllowArmsLate: the consent page's Allow button takes clicks
// only once the pointer has rested on the buttons for a second. A site
// can put a consent page of its choosing (for its own registered client)
// under the user's pointer between the two clicks of a double-click it
// asked for, navigating its own window there and closing the popup that
// covered it, and have the second click land on Allow:
// DoubleClickjacking, which frame-ancestors does not stop, as nothing is
// framed. The page may have opened long before (behind the popup), so
// the time since it opened proves nothing (review s17-pages F2).
func TestConsentAllowArmsLate(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)
	requireConsent(t, ctx, login(t, ctx, ar.URL, password))
	armsLate(t, ctx, `form#consent [name=decision][value=approve]`)
	consentDecision(t, ctx, "approve")
	if q := e.callback.wait(t); q.Get("code") == "" {
		t.Fatalf("callback has no code: %v", q.Encode())
	}
}

// armsLate checks that the button selector selects takes no click on a
// page open for a while with the pointer elsewhere, nor just as the
// pointer reaches it, and takes one once the pointer rested on it for a
// second.
func armsLate(t *testing.T, ctx context.Context, selector string) {
	t.Helper()
	hit := fmt.Sprintf(hitTest, selector)
	do(t, ctx, "wait", chromedp.Sleep(1500*time.Millisecond))
	h := run(t, ctx, "hit test", chromedp.Evaluate[allowHit](hit))
	if h.Hit {
		t.Errorf("the page opened long ago and the pointer never moved on it: a click lands on %s", selector)
	}
	do(t, ctx, "point at "+selector, chromedp.MouseEvent(chromedp.MouseMoved, h.X, h.Y))
	if h := run(t, ctx, "hit test", chromedp.Evaluate[allowHit](hit)); h.Hit {
		t.Errorf("the pointer just reached %s: a click lands on it", selector)
	}
	do(t, ctx, "wait", chromedp.Sleep(1200*time.Millisecond))
	if h := run(t, ctx, "hit test", chromedp.Evaluate[allowHit](hit)); !h.Hit {
		t.Fatalf("the pointer rested on %s for a second: a click still misses it", selector)
	}
}

func TestConsentApprove(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)

	do(t, ctx, "open authorize",
		chromedp.Navigate(ar.URL),
		chromedp.WaitVisible(chromedp.CSS(`form#login`)),
	)
	screenshot(t, ctx, "login")
	status := navigate(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=username]`), username),
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=password]`), password),
		chromedp.Submit(chromedp.CSS(`form#login`)),
	)
	requireConsent(t, ctx, status)
	text := bodyText(t, ctx)
	redirectHost := strings.TrimPrefix(e.callback.srv.URL, "http://")
	for _, want := range []string{clientName, redirectHost, scopeRead, scopeWrite, e.resource} {
		if !strings.Contains(text, want) {
			t.Errorf("consent page text lacks %q; text: %s", want, text)
		}
	}
	screenshot(t, ctx, "consent")

	consentDecision(t, ctx, "approve")
	q := e.callback.wait(t)
	if got := q.Get("state"); got != ar.State {
		t.Errorf("callback state = %q, want %q", got, ar.State)
	}
	if got := q.Get("iss"); got != e.issuer {
		t.Errorf("callback iss = %q, want %q", got, e.issuer)
	}
	if q.Get("code") == "" {
		t.Fatalf("callback has no code: %v", q.Encode())
	}

	tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := ar.Exchange(tctx, e.cfg, q.Get("code"))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	claims, err := harness.Claims(tok.AccessToken)
	if err != nil {
		t.Fatalf("access token: %v", err)
	}
	if aud := harness.Audience(claims); !slices.Equal(aud, []string{e.resource}) {
		t.Errorf("access token aud = %q, want [%q]", aud, e.resource)
	}
	scopes := strings.Fields(fmt.Sprint(claims["scope"]))
	slices.Sort(scopes)
	if want := []string{scopeRead, scopeWrite}; !slices.Equal(scopes, want) {
		t.Errorf("access token scope = %q, want %q", scopes, want)
	}
	if got := claims["sub"]; got != username {
		t.Errorf("access token sub = %v, want %q", got, username)
	}
	if got := claims["client_id"]; got != clientID {
		t.Errorf("access token client_id = %v, want %q", got, clientID)
	}
}

func TestConsentDeny(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)

	requireConsent(t, ctx, login(t, ctx, ar.URL, password))
	consentDecision(t, ctx, "deny")

	q := e.callback.wait(t)
	if got := q.Get("error"); got != "access_denied" {
		t.Errorf("callback error = %q, want access_denied (query %s)", got, q.Encode())
	}
	if got := q.Get("state"); got != ar.State {
		t.Errorf("callback state = %q, want %q", got, ar.State)
	}
	if got := q.Get("iss"); got != e.issuer {
		t.Errorf("callback iss = %q, want %q", got, e.issuer)
	}
	if q.Has("code") {
		t.Errorf("denied callback carries a code")
	}
}

// TestSignInIssuerHostNotLowercase: a browser sends Origin with the host
// in lower case, so an issuer written with capitals (http://LocalHost:port)
// had every sign-in refused as a form from another site ("Form expired").
func TestSignInIssuerHostNotLowercase(t *testing.T) {
	e := setupAt(t, "http://LocalHost:%d")
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)

	do(t, ctx, "open authorize",
		chromedp.Navigate(ar.URL),
		chromedp.WaitVisible(chromedp.CSS(`form#login`)),
	)
	status := navigate(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=username]`), username),
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=password]`), password),
		chromedp.Submit(chromedp.CSS(`form#login`)),
	)
	requireConsent(t, ctx, status)
	consentDecision(t, ctx, "approve")
	if q := e.callback.wait(t); q.Get("code") == "" || q.Get("iss") != e.issuer {
		t.Fatalf("callback = %v, want a code and iss %s", q.Encode(), e.issuer)
	}
}

// TestSignInIssuerPathEscaped: a plain-http issuer whose path holds an
// escape (http://127.0.0.1:port/a%20b, as its URL must be written) signs
// in. Its session cookie's Path was the decoded path ("/a b"), which a
// browser compares with the path as requested ("/a%20b/login"): the
// cookie set at /authorize never came back, and every sign-in ended
// "Request expired". (A Path of non-ASCII bytes, "/%C3%A9t", lost them to
// net/http: "/t".)
func TestSignInIssuerPathEscaped(t *testing.T) {
	cb := newCallback(t)
	dir := t.TempDir()
	hash := harness.HashPassword(t, password)
	e := &env{callback: cb}
	harness.StartFree(t, func(port int) string {
		host := fmt.Sprintf("http://127.0.0.1:%d", port)
		e.issuer, e.resource = host+"/a%20b", host+"/mcp"
		// The site is the host's: a site address's path matches only
		// that path.
		return strings.Replace(caddyfile(e, dir, hash, ""), "\n"+e.issuer+" {", "\n"+host+" {", 1)
	})
	harness.WaitReady(t, e.issuer+"/.well-known/oauth-authorization-server")
	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := harness.Discover(dctx, e.issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", e.issuer, err)
	}
	e.md = md
	e.cfg = md.Config(clientID, cb.uri(), scopeRead, scopeWrite)
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)

	do(t, ctx, "open authorize", chromedp.Navigate(ar.URL))
	if n := run(t, ctx, "find login form", chromedp.Evaluate[int](`document.querySelectorAll("form#login").length`)); n != 1 {
		screenshot(t, ctx, "not-login")
		t.Fatalf("authorize: no sign-in form; page: %s", bodyText(t, ctx))
	}
	status := navigate(t, ctx, "sign in",
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=username]`), username),
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=password]`), password),
		chromedp.Submit(chromedp.CSS(`form#login`)),
	)
	requireConsent(t, ctx, status)
	consentDecision(t, ctx, "approve")
	if q := e.callback.wait(t); q.Get("code") == "" || q.Get("iss") != e.issuer {
		t.Fatalf("callback = %v, want a code and iss %s", q.Encode(), e.issuer)
	}
}

func TestLoginWrongPassword(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)

	do(t, ctx, "open authorize",
		chromedp.Navigate(ar.URL),
		chromedp.WaitVisible(chromedp.CSS(`form#login`)),
	)
	before := bodyText(t, ctx)
	status := login(t, ctx, ar.URL, "wrong password")
	// The answer is the login form again, now with an error message.
	n := run(t, ctx, "find login form", chromedp.Evaluate[int](`document.querySelectorAll("form#login").length`))
	after := bodyText(t, ctx)
	if n != 1 {
		screenshot(t, ctx, "not-login")
		t.Fatalf("after a wrong password: status %d, no login form; page: %s", status, after)
	}
	if after == before {
		t.Errorf("login page after a wrong password shows no error; text: %s", after)
	}
	if strings.Contains(after, clientName) && strings.Contains(after, "approve") {
		t.Errorf("wrong password reached consent: %s", after)
	}
	screenshot(t, ctx, "login-error")
	select {
	case q := <-e.callback.got:
		t.Errorf("wrong password reached the client: %s", q.Encode())
	default:
	}
}

// TestConsentNotFramable checks the anti-clickjacking headers of the login,
// consent and connected apps pages over plain HTTP.
func TestConsentNotFramable(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ar := harness.NewAuthRequest(e.cfg, e.resource)
	robot := harness.NewRobot(username, password, e.callback.uri())

	loginPage, err := robot.Get(ctx, ar.URL)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	form := loginPage.Form("login")
	if form == nil {
		t.Fatalf("authorize led to %s without a login form", loginPage.URL)
	}
	resp, err := robot.Submit(ctx, loginPage, form, url.Values{"username": {username}, "password": {password}})
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	consentPage, err := harness.ReadPage(resp)
	if err != nil {
		t.Fatalf("consent: %v", err)
	}
	if consentPage.Form("consent") == nil {
		t.Fatalf("login led to %s (status %d) without a consent form: %.300s", consentPage.URL, consentPage.Status, consentPage.Text())
	}
	appsPage, err := robot.Get(ctx, e.issuer+"/apps")
	if err != nil {
		t.Fatalf("apps page: %v", err)
	}
	if appsPage.Status != http.StatusOK {
		t.Fatalf("apps page: status %d", appsPage.Status)
	}
	for _, p := range []*harness.Page{loginPage, consentPage, appsPage} {
		t.Run(strings.TrimPrefix(p.URL.Path, "/"), func(t *testing.T) {
			if !frameDenied(p.Header) {
				t.Errorf("%s: X-Frame-Options = %q, Content-Security-Policy = %q; want DENY or frame-ancestors 'none'",
					p.URL.Path, p.Header.Get("X-Frame-Options"), p.Header.Values("Content-Security-Policy"))
			}
			if cc := p.Header.Get("Cache-Control"); !strings.Contains(cc, "no-store") {
				t.Errorf("%s: Cache-Control = %q, want no-store", p.URL.Path, cc)
			}
		})
	}
}

// frameDenied reports whether h forbids framing by any origin.
func frameDenied(h http.Header) bool {
	xfo := strings.ToUpper(strings.TrimSpace(h.Get("X-Frame-Options")))
	csp := false
	for _, v := range h.Values("Content-Security-Policy") {
		for _, d := range strings.Split(v, ";") {
			f := strings.Fields(d)
			if len(f) == 2 && strings.EqualFold(f[0], "frame-ancestors") && f[1] == "'none'" {
				csp = true
			}
		}
	}
	return xfo == "DENY" || csp
}

// signedInToken signs the browser in to the client for scopes, approves,
// and returns the tokens the code is redeemed for.
func signedInToken(t *testing.T, e *env, ctx context.Context, scopes ...string) *oauth2.Token {
	t.Helper()
	cfg := *e.cfg
	cfg.Scopes = scopes
	ar := harness.NewAuthRequest(&cfg, e.resource)
	requireConsent(t, ctx, login(t, ctx, ar.URL, password))
	consentDecision(t, ctx, "approve")
	q := e.callback.wait(t)
	settledAt(t, ctx, e.callback.srv.URL) // the caller navigates on
	tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := ar.Exchange(tctx, &cfg, q.Get("code"))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	return tok
}

// TestConnectedApps signs in with offline_access, finds the app on the
// connected apps page, revokes it there and checks its refresh token dies.
func TestConnectedApps(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	tok := signedInToken(t, e, ctx, scopeRead, "offline_access")
	tctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	// The refresh token works before revocation (and rotates).
	tr, err := harness.Refresh(tctx, e.md, clientID, tok.RefreshToken, e.resource)
	if err != nil || tr.Status != http.StatusOK || tr.RefreshToken == "" {
		t.Fatalf("Refresh before revocation = %+v, %v; want 200 with a new refresh token", tr, err)
	}
	refresh := tr.RefreshToken

	appsURL := e.issuer + "/apps"
	do(t, ctx, "open apps page",
		chromedp.Navigate(appsURL),
		chromedp.WaitVisible(chromedp.CSS(`body`)),
	)
	text := bodyText(t, ctx)
	if !strings.Contains(text, clientName) {
		t.Fatalf("apps page does not list %q; text: %s", clientName, text)
	}
	screenshot(t, ctx, "apps")

	// Each app has its own form; revoke this client's.
	revoke := fmt.Sprintf(`form:has(input[name=client_id][value=%q]) button[name=action][value=revoke]`, clientID)
	restingClick(t, ctx, revoke)
	waitFor(t, func() bool {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", revoke)))
		return err == nil && n == 0
	})
	if text := bodyText(t, ctx); strings.Contains(text, clientName) {
		t.Errorf("apps page still lists %q after revoking: %s", clientName, text)
	}
	screenshot(t, ctx, "apps-revoked")

	tr, err = harness.Refresh(tctx, e.md, clientID, refresh, e.resource)
	if err != nil {
		t.Fatalf("Refresh after revocation: %v", err)
	}
	if tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
		t.Errorf("Refresh after revocation = %d %q, want 400 invalid_grant", tr.Status, tr.Error)
	}
}

// waitFor polls cond for up to 15 s (as long as callback.wait gives the
// browser): a page a form's submission loads comes at once, but a loaded
// CI machine runs Chromium beside every package's tests.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConsentDoubleClick: a double-click on Allow over a network slow
// enough that the first click's answer has not arrived when the second
// click comes (400 ms) posts the consent form twice, and the browser
// shows the second answer only. The first finished the request; the
// second gets its answer, and the browser reaches the client with the
// code, which redeems, not a "Request expired" page with the code lost.
func TestConsentDoubleClick(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)
	requireConsent(t, ctx, login(t, ctx, ar.URL, password))
	slowNetwork(t, ctx, 400)
	doubleClick(t, ctx, `form#consent [name=decision][value=approve]`)
	q := e.callback.wait(t)
	if q.Get("code") == "" || q.Get("state") != ar.State {
		t.Fatalf("callback %v, want a code and the state", q.Encode())
	}
	tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ar.Exchange(tctx, e.cfg, q.Get("code")); err != nil {
		t.Fatalf("Exchange: %v", err)
	}
}

// TestBackAfterDecisionLoadsAgain: Back after a consent decision, and
// after Revoke access, loads the page again rather than showing it as it
// was. Chromium (156) keeps a page in its back-forward cache, its
// Cache-Control: no-store notwithstanding, unless a cookie of the
// page's origin changed since: Back from the client showed the consent
// page as before Allow, its buttons live, for a request already
// answered (a Deny there then said "Request expired", the access
// granted), and Back from the apps page after Revoke access showed the
// connection still listed. A page kept in that cache keeps its scripts'
// state: a mark set on the page shown must be gone after Back.
func TestBackAfterDecisionLoadsAgain(t *testing.T) {
	e := setup(t)
	var ctx context.Context
	const mark = `window.shownBefore = true`
	// back goes back from the page at from, and reports whether the
	// page it gets to is the one kept from before.
	back := func(from string) bool {
		t.Helper()
		run(t, ctx, "back", chromedp.Evaluate[bool](`history.back(), true`))
		waitFor(t, func() bool {
			left, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`document.readyState === "complete" && location.href !== %q`, from)))
			return err == nil && left
		})
		return run(t, ctx, "read the mark", chromedp.Evaluate[bool](`!!window.shownBefore`))
	}
	for _, decision := range []string{"approve", "deny"} {
		ctx = newBrowser(t)
		ar := harness.NewAuthRequest(e.cfg, e.resource)
		requireConsent(t, ctx, login(t, ctx, ar.URL, password))
		run(t, ctx, "mark the consent page", chromedp.Evaluate[bool](mark))
		consentDecision(t, ctx, decision)
		e.callback.wait(t)
		settledAt(t, ctx, e.callback.srv.URL)
		kept := back(run(t, ctx, "where", chromedp.Evaluate[string](`location.href`)))
		if text := bodyText(t, ctx); kept || !strings.Contains(text, "Request expired") {
			t.Errorf("Back after %s shows %q (the page kept from before: %v), want the consent page loaded again (Request expired)", decision, text, kept)
		}
	}

	ctx = newBrowser(t)
	signedInToken(t, e, ctx, scopeRead, "offline_access")
	do(t, ctx, "open apps page", chromedp.Navigate(e.issuer+"/apps"), chromedp.WaitVisible(chromedp.CSS(`button[name=action][value=revoke]`)))
	run(t, ctx, "mark the apps page", chromedp.Evaluate[bool](mark))
	restingClick(t, ctx, `button[name=action][value=revoke]`)
	waitFor(t, func() bool {
		at, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`location.search === "?revoked=1" && document.readyState === "complete"`))
		return err == nil && at
	})
	kept := back(e.issuer + "/apps?revoked=1")
	if text := bodyText(t, ctx); kept || strings.Contains(text, clientName) {
		t.Errorf("Back after Revoke access shows %q (the page kept from before: %v), want the apps page loaded again, without the connection", text, kept)
	}
}

// TestSignInDoubleClick: a double-click on Sign in, its second click
// sent after the server has signed the first one in but before the
// browser has its answer (a network slower than the password check),
// ends on the consent page. The browser drops the first answer, and its
// new session cookie with it, for the second, which carries the cookie
// of the session the first one replaced: that said "Form expired", and
// the pending request, bound to the browser, could no longer be reached.
func TestSignInDoubleClick(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)
	do(t, ctx, "open authorize and fill in the sign-in form",
		chromedp.Navigate(ar.URL),
		chromedp.WaitVisible(chromedp.CSS(`form#login`)),
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=username]`), username),
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=password]`), password),
	)
	slowNetwork(t, ctx, 3000)
	const button = `form#login button[type=submit]`
	h := run(t, ctx, "find "+button, chromedp.Evaluate[allowHit](fmt.Sprintf(hitTest, button)))
	do(t, ctx, "double-click "+button,
		chromedp.MouseClickXY(h.X, h.Y),
		chromedp.Sleep(1200*time.Millisecond),
		chromedp.MouseClickXY(h.X, h.Y, chromedp.ClickCount(2)),
	)
	waitFor(t, func() bool {
		left, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.readyState === "complete" && !document.querySelector("form#login")`))
		return err == nil && left
	})
	if n := run(t, ctx, "find consent form", chromedp.Evaluate[int](`document.querySelectorAll("form#consent").length`)); n != 1 {
		screenshot(t, ctx, "not-consent")
		t.Fatalf("after a double-click on Sign in: %s", bodyText(t, ctx))
	}
}
