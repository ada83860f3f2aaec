package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// registered registers a public client with Dynamic Client Registration
// under name, redirecting to the env's callback, and returns the
// authorization request of a sign-in with it.
func registered(t *testing.T, e *env, name string) harness.AuthRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, out, err := harness.Register(ctx, e.md, map[string]any{
		"client_name":                name,
		"redirect_uris":              []string{e.callback.uri()},
		"token_endpoint_auth_method": "none",
	})
	id, _ := out["client_id"].(string)
	if err != nil || status != 201 || id == "" {
		t.Fatalf("Register = %d, %v, %v", status, out, err)
	}
	cfg := *e.cfg
	cfg.ClientID = id
	return harness.NewAuthRequest(&cfg, e.resource)
}

// TestConsentLongNameKeepsPageReadable: a self-registered client names
// itself with 100 characters and no space. On a phone's screen the
// consent page must still show, within the screen, where it sends the
// user and the warning that the name is the client's own claim.
func TestConsentLongNameKeepsPageReadable(t *testing.T) {
	e := setup(t)
	ar := registered(t, e, strings.Repeat("W", 100))
	ctx := newBrowser(t)
	do(t, ctx, "phone screen", chromedp.EmulateViewport(390, 844))
	requireConsent(t, ctx, login(t, ctx, ar.URL, password))
	screenshot(t, ctx, "long-name")
	// Right edges of the text itself (a Range), not of the boxes, which
	// a grid column may stretch.
	type widths struct {
		Screen float64 `json:"screen"`
		Page   float64 `json:"page"`
		Host   float64 `json:"host"`
		Note   float64 `json:"note"`
	}
	got := run(t, ctx, "measure", chromedp.Evaluate[widths](`(() => {
		const right = (sel) => {
			const r = document.createRange();
			r.selectNodeContents(document.querySelector(sel));
			return Math.max(...Array.from(r.getClientRects(), (b) => b.right));
		};
		return {
			screen: document.documentElement.clientWidth,
			page: document.documentElement.scrollWidth,
			host: right(".host"),
			note: right(".facts .muted"),
		};
	})()`))
	if got.Page > got.Screen || got.Host > got.Screen || got.Note > got.Screen {
		t.Errorf("consent page on a %v px screen: %v px wide, redirect host ends at %v px, self-registration note at %v px; want all within the screen",
			got.Screen, got.Page, got.Host, got.Note)
	}
}

// TestRevokeArmsLate: the apps page's Revoke access takes clicks only
// once the pointer has rested on it, as the consent page's Allow and the
// sign-out confirmation do (TestConsentAllowArmsLate): a site that sends
// the browser to the apps page under the pointer between the two clicks
// of a double-click must not have the second one end a connection (the
// app's refresh tokens, the agents it passed access to).
func TestRevokeArmsLate(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	signedInToken(t, e, ctx, scopeRead, "offline_access")
	do(t, ctx, "open apps page",
		chromedp.Navigate(e.issuer+"/apps"),
		chromedp.WaitVisible(chromedp.CSS(`button[name=action][value=revoke]`)),
	)
	armsLate(t, ctx, `button[name=action][value=revoke]`)
}

// TestIdPButtonBeforeDiscovery: a provider whose authorization endpoint
// is on another origin than its issuer (Amazon Cognito's hosted UI, a
// Keycloak with its own frontend URL). The first sign-in page after a
// start is shown before the provider's metadata was read; its "Continue
// with" form still takes the browser to the provider's authorization
// endpoint.
func TestIdPButtonBeforeDiscovery(t *testing.T) {
	signIn, reached := signInServer(t)
	continueWith(t, func(string) string { return signIn + "/oauth2/authorize" }, nil, reached, "/oauth2/authorize")
}

// TestIdPAuthorizationEndpointRedirects: a provider whose authorization
// endpoint redirects the browser on to another origin before any page
// of its own: Dex with a single connector (on to GitHub, say), Keycloak
// with an identity provider redirector, Amazon Cognito with
// identity_provider. Chromium applies the sign-in page's CSP form-action
// to every redirect after the "Continue with" POST, and no form-action
// can name where a provider sends the browser next: the browser must
// still get there.
func TestIdPAuthorizationEndpointRedirects(t *testing.T) {
	upstream, reached := signInServer(t)
	auth := func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, upstream+"/login/oauth/authorize", http.StatusFound)
	}
	continueWith(t, func(issuer string) string { return issuer + "/auth" }, auth, reached, "/login/oauth/authorize")
}

// signInServer is a provider's sign-in page on an origin of its own; the
// path of its first request arrives on reached.
func signInServer(t *testing.T) (string, <-chan string) {
	t.Helper()
	reached := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case reached <- r.URL.Path:
		default:
		}
		fmt.Fprint(w, "<!doctype html><title>Provider</title><p>Provider sign-in")
	}))
	t.Cleanup(srv.Close)
	return srv.URL, reached
}

// continueWith starts a provider (identity provider corp) whose metadata
// names authEndpoint(its issuer) and which answers /auth with auth, has
// Chromium press "Continue with Corp SSO" on the sign-in page, and
// requires that the browser then reach wantPath (on reached).
func continueWith(t *testing.T, authEndpoint func(issuer string) string, auth http.HandlerFunc, reached <-chan string, wantPath string) {
	t.Helper()
	var issuer string
	provider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/auth" && auth != nil:
			auth(w, r)
			return
		case r.URL.Path != "/.well-known/openid-configuration":
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                issuer,
			"authorization_endpoint":                authEndpoint(issuer),
			"token_endpoint":                        issuer + "/token",
			"jwks_uri":                              issuer + "/jwks",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	}))
	t.Cleanup(provider.Close)
	issuer = provider.URL
	e := setupWith(t, "http://127.0.0.1:%d", fmt.Sprintf(`		identity_provider corp {
			issuer %s
			client_id mcp
			client_secret s3cret
			group * writers
			display_name "Corp SSO"
		}`, issuer))
	ctx := newBrowser(t)
	ar := harness.NewAuthRequest(e.cfg, e.resource)
	do(t, ctx, "open authorize",
		chromedp.Navigate(ar.URL),
		chromedp.WaitVisible(chromedp.CSS(`form#idp-corp`)),
	)
	do(t, ctx, "continue with the provider", chromedp.Submit(chromedp.CSS(`form#idp-corp`)))
	select {
	case path := <-reached:
		if path != wantPath {
			t.Errorf("the provider's sign-in server got %s, want %s", path, wantPath)
		}
	case <-time.After(15 * time.Second):
		screenshot(t, ctx, "not-at-provider")
		t.Fatalf("the browser never reached the provider's sign-in page; page: %s", bodyText(t, ctx))
	}
}

// TestIPv6LoopbackRedirect: a native client whose redirect URI is on
// the IPv6 loopback address (http://[::1]:port/callback, which
// registration accepts and RFC 8252 section 7.3 names beside 127.0.0.1)
// gets its code in Chromium after sign-in and consent. A CSP host-source
// cannot name an IPv6 literal: Chromium ignores "http://[::1]:port" in
// the pages' form-action, and then blocked the redirect to the client
// after the consent POST, leaving the user on the consent page.
func TestIPv6LoopbackRedirect(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	got := make(chan url.Values, 1)
	cb := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r.URL.Query():
		default:
		}
		fmt.Fprint(w, "<!doctype html><title>Back at the app</title>")
	}))
	cb.Listener = l
	cb.Start()
	t.Cleanup(cb.Close)

	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, out, err := harness.Register(ctx, e.md, map[string]any{
		"client_name":                "IPv6 app",
		"redirect_uris":              []string{cb.URL + "/callback"},
		"token_endpoint_auth_method": "none",
	})
	id, _ := out["client_id"].(string)
	if err != nil || status != 201 || id == "" {
		t.Fatalf("Register = %d, %v, %v", status, out, err)
	}
	cfg := *e.cfg
	cfg.ClientID, cfg.RedirectURL = id, cb.URL+"/callback"
	ar := harness.NewAuthRequest(&cfg, e.resource)

	bctx := newBrowser(t)
	requireConsent(t, bctx, login(t, bctx, ar.URL, password))
	consentDecision(t, bctx, "approve")
	var q url.Values
	select {
	case q = <-got:
	case <-time.After(15 * time.Second):
		screenshot(t, bctx, "stuck")
		t.Fatalf("the browser never reached %s; page: %s", cb.URL, bodyText(t, bctx))
	}
	if q.Get("state") != ar.State || q.Get("iss") != e.issuer || q.Get("code") == "" {
		t.Fatalf("callback query = %v", q)
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer tcancel()
	if _, err := ar.Exchange(tctx, &cfg, q.Get("code")); err != nil {
		t.Fatalf("Exchange: %v", err)
	}
}

// TestConsentCallbackRedirectsOn: a web client whose redirect URI
// answers the authorization response with a redirect on to another
// origin (a callback at api.example.com that redeems the code and sends
// the user to app.example.com). Chromium applies the CSP form-action of
// the consent page (and of the sign-in page, when the consent is
// remembered) to every redirect after the form's POST, and no
// form-action can name where a client's callback sends the browser next:
// the browser must still reach the app, after a Deny, an Allow, and a
// later sign-in that needs no consent.
func TestConsentCallbackRedirectsOn(t *testing.T) {
	e := setup(t)
	reached := make(chan url.Values, 4)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/home" { // a favicon
			http.NotFound(w, r)
			return
		}
		select {
		case reached <- r.URL.Query():
		default:
		}
		fmt.Fprint(w, "<!doctype html><title>App</title><p>Signed in")
	}))
	t.Cleanup(app.Close)
	callback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := url.Values{"code": {r.URL.Query().Get("code")}, "error": {r.URL.Query().Get("error")}}
		http.Redirect(w, r, app.URL+"/home?"+q.Encode(), http.StatusFound)
	}))
	t.Cleanup(callback.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, out, err := harness.Register(ctx, e.md, map[string]any{
		"client_name":                "Web App",
		"redirect_uris":              []string{callback.URL + "/callback"},
		"token_endpoint_auth_method": "client_secret_basic", // a consent it gets is remembered
	})
	id, _ := out["client_id"].(string)
	if err != nil || status != 201 || id == "" {
		t.Fatalf("Register = %d, %v, %v", status, out, err)
	}
	cfg := *e.cfg
	cfg.ClientID, cfg.RedirectURL = id, callback.URL+"/callback"
	bctx := newBrowser(t)
	atApp := func(what, param string) {
		t.Helper()
		select {
		case q := <-reached:
			if q.Get(param) == "" {
				t.Errorf("%s: the app got %v, want a %s", what, q.Encode(), param)
			}
			// The app saw the request before its page loaded; a
			// navigation started now would abort that one and be
			// aborted with it (net::ERR_ABORTED).
			settledAt(t, bctx, app.URL+"/home")
		case <-time.After(15 * time.Second):
			screenshot(t, bctx, "not-at-app")
			t.Fatalf("%s: the browser never reached the app the callback redirects to; page: %s", what, bodyText(t, bctx))
		}
	}
	requireConsent(t, bctx, login(t, bctx, harness.NewAuthRequest(&cfg, e.resource).URL, password))
	consentDecision(t, bctx, "deny")
	atApp("deny", "error")
	do(t, bctx, "open authorize", chromedp.Navigate(harness.NewAuthRequest(&cfg, e.resource).URL), chromedp.WaitVisible(chromedp.CSS(`form#consent`)))
	consentDecision(t, bctx, "approve")
	atApp("allow", "code")
	// In another browser, the sign-in needs no consent: the sign-in
	// form's POST ends at the callback.
	bctx = newBrowser(t)
	login(t, bctx, harness.NewAuthRequest(&cfg, e.resource).URL, password)
	atApp("sign-in with a remembered consent", "code")
}

// TestTwoTabsSignIn: an MCP host connecting two servers opens two
// authorization requests, each in a tab of the same browser, both at the
// sign-in page. Signing in in one tab starts a new session (a new id and
// CSRF token, against fixation), which left the other tab's sign-in form
// with the old token: it was refused "Form expired", and signing in
// there again would have done the same to the first tab's consent page.
// The browser is signed in by then; the other tab's form goes on to its
// request's consent page, and both requests are answered.
func TestTwoTabsSignIn(t *testing.T) {
	e := setup(t)
	tabA := newBrowser(t)
	arA := harness.NewAuthRequest(e.cfg, e.resource)
	arB := harness.NewAuthRequest(e.cfg, e.resource)
	do(t, tabA, "open the first request", chromedp.Navigate(arA.URL), chromedp.WaitVisible(chromedp.CSS(`form#login`)))
	tabB, cancel := chromedp.NewContext(tabA)
	t.Cleanup(cancel)
	do(t, tabB, "open the second request in another tab", chromedp.Navigate(arB.URL), chromedp.WaitVisible(chromedp.CSS(`form#login`)))

	requireConsent(t, tabA, navigate(t, tabA, "sign in in the first tab",
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=username]`), username),
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=password]`), password),
		chromedp.Submit(chromedp.CSS(`form#login`)),
	))
	requireConsent(t, tabB, navigate(t, tabB, "sign in in the second tab",
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=username]`), username),
		chromedp.SendKeys(chromedp.CSS(`form#login input[name=password]`), password),
		chromedp.Submit(chromedp.CSS(`form#login`)),
	))

	for _, tab := range []struct {
		ctx context.Context
		ar  harness.AuthRequest
	}{{tabB, arB}, {tabA, arA}} {
		consentDecision(t, tab.ctx, "approve")
		q := e.callback.wait(t)
		if q.Get("code") == "" || q.Get("state") != tab.ar.State {
			t.Fatalf("callback %v, want a code and state %s", q.Encode(), tab.ar.State)
		}
		tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := tab.ar.Exchange(tctx, e.cfg, q.Get("code"))
		cancel()
		if err != nil {
			t.Fatalf("Exchange: %v", err)
		}
	}
}
