package issuer

import (
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// consentPage logs user in through /authorize with p and returns the
// browser and the consent page body.
func (e *testEnv) consentPage(t *testing.T, p url.Values, user string) (*http.Client, string) {
	t.Helper()
	c := e.browser()
	resp, err := c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp = e.signIn(t, c, e.srv.URL+resp.Header.Get("Location"), user)
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, pathConsent) {
		t.Fatalf("after login: Location %q, want the consent step", loc)
	}
	resp, err = c.Get(e.srv.URL + loc)
	if err != nil {
		t.Fatal(err)
	}
	return c, readBody(t, resp)
}

// clientConsentPage is the consent page bUser gets for client and its
// redirect URI.
func (e *testEnv) clientConsentPage(t *testing.T, client, redirect string) string {
	t.Helper()
	p := authParams(testChallenge)
	p.Set("client_id", client)
	p.Set("redirect_uri", redirect)
	_, body := e.consentPage(t, p, bUser)
	findForm(t, body, "consent")
	return body
}

func TestConsentShowsOnlyGrantableScopes(t *testing.T) {
	e := newBrowserEnv(t, nil)
	p := authParams(testChallenge)
	p.Set("scope", "files:read files:write")
	c, body := e.consentPage(t, p, "bob") // bob may only read
	if !strings.Contains(body, "files:read") || strings.Contains(body, "files:write") {
		t.Fatalf("consent page scopes wrong: %s", body)
	}
	for _, want := range []string{"Test App", bClientID, bResource, "127.0.0.1", "This app runs on your computer"} {
		if !strings.Contains(body, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	// Tampering with the shown scopes cannot widen the grant.
	f := findForm(t, body, "consent")
	v := f.hidden
	v.Set("scope", "files:read files:write admin")
	v.Set("decision", "approve")
	resp, _ := e.postPage(t, c, f.action, v)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	var ac authCode
	if err := e.get(bucketCodes, tokenKey(loc.Query().Get("code")), &ac); err != nil {
		t.Fatalf("code: %v (Location %s)", err, loc)
	}
	if !slices.Equal(ac.Scopes, []string{"files:read"}) {
		t.Errorf("granted scopes = %v, want [files:read]", ac.Scopes)
	}
}

func TestConsentNoWarningForWebClient(t *testing.T) {
	e := newBrowserEnv(t, nil)
	p := authParams(testChallenge)
	p.Set("client_id", bWebClientID)
	p.Set("redirect_uri", bWebRedirect)
	_, body := e.consentPage(t, p, bUser)
	if strings.Contains(body, "runs on your computer") {
		t.Errorf("web client consent page warns about a local app")
	}
	if !strings.Contains(body, "app.example.com") {
		t.Errorf("consent page lacks the redirect host")
	}
}

// TestConsentRedirectTarget: the consent page names where the code goes
// for the redirect URI of the request: the host of a web one, and for a
// private-use scheme the scheme, whatever its "host" part claims, since
// any app on the device may claim the scheme (RFC 8252 section 7.1). A
// loopback or private-use redirect URI carries the local-app warning,
// also for a client that has web ones as well.
func TestConsentRedirectTarget(t *testing.T) {
	e := newBrowserEnv(t, nil)
	resp, out := e.register(t, `{"client_name":"Evil","redirect_uris":["com.evil.app://accounts.google.com/cb"],"token_endpoint_auth_method":"none"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d %v", resp.StatusCode, out)
	}
	evil := out["client_id"].(string)
	for _, c := range []Client{
		{ID: "native", Name: "Native", RedirectURIs: []string{"com.example.app:/cb"}, TokenEndpointAuthMethod: "none"},
		{ID: "mixed", Name: "Mixed", RedirectURIs: []string{"https://mixed.example.com/cb", "http://127.0.0.1:7000/cb"}, TokenEndpointAuthMethod: "none"},
	} {
		if err := e.iss.PutClient(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name, client, redirect string
		shown                  string // what "Sends you back to" says
		hidden                 string // what the page must not say
		warning                bool
	}{
		{"private-use scheme with a host", evil, "com.evil.app://accounts.google.com/cb", "opens <code>com.evil.app:</code> links", "accounts.google.com", true},
		{"private-use scheme", "native", "com.example.app:/cb", "opens <code>com.example.app:</code> links", "", true},
		{"loopback", bClientID, bRedirect, `<dd class="host">127.0.0.1</dd>`, "", true},
		{"web", bWebClientID, bWebRedirect, `<dd class="host">app.example.com</dd>`, "", false},
		{"loopback of a client with a web one too", "mixed", "http://127.0.0.1:7000/cb", `<dd class="host">127.0.0.1:7000</dd>`, "mixed.example.com", true},
		{"web of a client with a loopback one too", "mixed", "https://mixed.example.com/cb", `<dd class="host">mixed.example.com</dd>`, "127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := e.clientConsentPage(t, tt.client, tt.redirect)
			if !strings.Contains(body, tt.shown) {
				t.Errorf("consent page lacks %q:\n%s", tt.shown, body)
			}
			if tt.hidden != "" && strings.Contains(body, tt.hidden) {
				t.Errorf("consent page names %q:\n%s", tt.hidden, body)
			}
			if got := strings.Contains(body, "This app runs on your computer"); got != tt.warning {
				t.Errorf("local-app warning shown = %v, want %v", got, tt.warning)
			}
		})
	}
}

// TestConsentSelfRegisteredNameUnverified: anyone can register a client
// (DCR) or publish a client metadata document (CIMD) under any name, an
// operator's client's included, with that client's redirect URI; such a
// sign-in and consent page said who was asking exactly as the operator's
// client's do, but for an opaque client_id. They now say the name is the
// application's own claim; an operator's client's pages do not.
func TestConsentSelfRegisteredNameUnverified(t *testing.T) {
	const notice = "registered itself"
	e, host := newCIMDEnv(t, true, nil)
	resp, out := e.register(t, `{"client_name":"Web App","redirect_uris":["`+bWebRedirect+`"],"token_endpoint_auth_method":"none"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d %v", resp.StatusCode, out)
	}
	doc := host.doc("/client.json", "", validDoc)
	tests := []struct {
		name, client, redirect string
		notice                 bool
	}{
		{"operator's client", bWebClientID, bWebRedirect, false},
		{"dynamically registered, same name and redirect URI", out["client_id"].(string), bWebRedirect, true},
		{"client metadata document", doc, "http://127.0.0.1:3000/callback", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := authParams(testChallenge)
			p.Set("client_id", tt.client)
			p.Set("redirect_uri", tt.redirect)
			c := e.browser()
			resp, err := c.Get(e.url(pathAuthorize, p))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp, err = c.Get(e.srv.URL + resp.Header.Get("Location")); err != nil {
				t.Fatal(err)
			}
			login := readBody(t, resp)
			findForm(t, login, "login")
			if got := strings.Contains(login, notice); got != tt.notice {
				t.Errorf("sign-in page says %q: %v, want %v:\n%s", notice, got, tt.notice, login)
			}
			body := e.clientConsentPage(t, tt.client, tt.redirect)
			if got := strings.Contains(body, notice); got != tt.notice {
				t.Errorf("consent page says %q: %v, want %v:\n%s", notice, got, tt.notice, body)
			}
		})
	}
	// The apps page, where the user revokes one of two connections of
	// that name, tells them apart the same way.
	if err := e.iss.store.Update(t.Context(), func(tx store.Tx) error {
		for _, tt := range tests[:2] {
			if err := consentsIn(tx).add(bUser, tt.client, bResource, "", []string{"files:read"}, "", e.clock.Now(), nil); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c := e.browser()
	e.signIn(t, c, e.url(pathLogin, nil), bUser)
	resp, err := c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	for _, tt := range tests[:2] {
		_, row, _ := strings.Cut(body, "<code>"+tt.client+"</code>")
		row, _, _ = strings.Cut(row, "</section>")
		if got := strings.Contains(row, notice); got != tt.notice {
			t.Errorf("apps page row of %s says %q: %v, want %v:\n%s", tt.name, notice, got, tt.notice, body)
		}
	}
}

func TestConsentAgent(t *testing.T) {
	e := newBrowserEnv(t, func(c *Config) {
		c.Agents = []Agent{{ID: "agent-7", Name: "Planner Bot", SecretHash: hashClientSecret("agent-7 secret")}}
	})
	p := authParams(testChallenge)
	p.Set("requested_actor", "agent-7")
	c, body := e.consentPage(t, p, bUser)
	if !strings.Contains(body, "Planner Bot") || !strings.Contains(body, "agent-7") {
		t.Fatalf("consent page does not name the agent: %s", body)
	}
	f := findForm(t, body, "consent")
	v := f.hidden
	v.Set("decision", "approve")
	resp, _ := e.postPage(t, c, f.action, v)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	var ac authCode
	if err := e.get(bucketCodes, tokenKey(loc.Query().Get("code")), &ac); err != nil {
		t.Fatal(err)
	}
	if ac.Actor != "agent-7" {
		t.Errorf("code actor = %q, want agent-7", ac.Actor)
	}
	var cs consent
	if err := e.get(bucketConsents, consentKey(bUser, bClientID, bResource, "agent-7"), &cs); err != nil {
		t.Errorf("consent for the agent not stored: %v", err)
	}
	// Consent for the agent is not consent without it (or for another).
	if ok, _ := e.iss.consents.has(t.Context(), bUser, bClientID, bResource, "", []string{"files:read"}, ""); ok {
		t.Errorf("agent consent counted for the client alone")
	}

	// Unknown agents are refused before login.
	p.Set("requested_actor", "nobody")
	resp, err := e.browser().Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ = url.Parse(resp.Header.Get("Location"))
	if loc.Query().Get("error") != "invalid_request" {
		t.Errorf("unknown agent: Location %s, want invalid_request", loc)
	}
}

func TestConsentPendingBoundToBrowser(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.browser()
	resp, err := c.Get(e.url(pathAuthorize, authParams(testChallenge)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	login := resp.Header.Get("Location") // /login?req=...
	req := strings.TrimPrefix(login, pathLogin+"?req=")

	// Another browser, even logged in, cannot use the pending request.
	other := e.browser()
	if _, err := e.robot(other, e.url(pathAuthorize, authParams(testChallenge)), bRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{pathLogin, pathConsent} {
		resp, err := other.Get(e.srv.URL + path + "?req=" + req)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(body, "expired") {
			t.Errorf("GET %s with another browser's request: %d %q", path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
}

func TestConsentUserWithoutScopes(t *testing.T) {
	e := newBrowserEnv(t, nil)
	p := authParams(testChallenge)
	p.Set("scope", "files:write") // bob may not write
	c := e.browser()
	resp, err := c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = c.Get(e.srv.URL + resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	f := findForm(t, readBody(t, resp), "login")
	v := f.hidden
	v.Set("username", "bob")
	v.Set("password", bPassword)
	resp, _ = e.postPage(t, c, f.action, v)
	resp, err = c.Get(e.srv.URL + resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc.Query().Get("error") != "invalid_scope" || loc.Query().Get("iss") == "" || loc.Query().Get("state") != "st-123" {
		t.Fatalf("Location %s, want invalid_scope with state and iss", loc)
	}
	if n := e.count(bucketPending); n != 0 {
		t.Errorf("pending = %d, want 0", n)
	}
}

// TestConsentEveryTimeForLocalPublicClients: a public client with a
// loopback or private-use redirect URI cannot prove its identity (any
// local program can use its client_id, on any loopback port), so the
// consent page comes every time and prompt=none fails with
// consent_required, whoever registered the client: the configuration,
// the admin API, DCR or CIMD (RFC 8252 section 8.6). Web redirect URIs
// and confidential clients keep remembered consent.
func TestConsentEveryTimeForLocalPublicClients(t *testing.T) {
	e, host := newCIMDEnv(t, true, func(c *Config) {
		c.Clients = append(c.Clients, Client{ID: "cfg-native", RedirectURIs: []string{"com.example.cfg:/cb"}, TokenEndpointAuthMethod: "none"})
	})
	for _, c := range []Client{
		{ID: "admin-loopback", RedirectURIs: []string{"http://127.0.0.1/cb"}, TokenEndpointAuthMethod: "none"},
		{ID: "admin-native", RedirectURIs: []string{"com.example.admin:/cb"}, TokenEndpointAuthMethod: "none"},
		{ID: "admin-confidential", RedirectURIs: []string{"http://127.0.0.1/cb"}, SecretHash: hashClientSecret("s")},
		{ID: "admin-upper", RedirectURIs: []string{"https://LOCALHOST/cb"}, TokenEndpointAuthMethod: "none"},
		{ID: "admin-dot", RedirectURIs: []string{"https://localhost./cb"}, TokenEndpointAuthMethod: "none"},
		{ID: "admin-sub", RedirectURIs: []string{"https://app.localhost/cb"}, TokenEndpointAuthMethod: "none"},
		{ID: "admin-ipdot", RedirectURIs: []string{"https://127.0.0.1./cb"}, TokenEndpointAuthMethod: "none"},
		{ID: "admin-ipv6", RedirectURIs: []string{"https://[::1]/cb"}, TokenEndpointAuthMethod: "none"},
	} {
		if err := e.iss.PutClient(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	// A host a browser reads as loopback but Go does not is refused, not
	// mistaken for a web redirect.
	if err := e.iss.PutClient(t.Context(), Client{ID: "admin-hexip", RedirectURIs: []string{"https://0x7f.1/cb"}, TokenEndpointAuthMethod: "none"}); err == nil {
		t.Error("PutClient(redirect URI https://0x7f.1/cb) succeeded, want it refused")
	}
	register := func(body string) string {
		t.Helper()
		resp, out := e.register(t, body)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("register = %d %v", resp.StatusCode, out)
		}
		return out["client_id"].(string)
	}
	loopback := register(`{"client_name":"CLI","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`)
	custom := register(`{"client_name":"App","redirect_uris":["com.example.app:/cb"],"token_endpoint_auth_method":"none"}`)
	web := register(`{"client_name":"Web","redirect_uris":["https://app.example.com/dcr"],"token_endpoint_auth_method":"none"}`)
	dcrSub := register(`{"client_name":"Sub","redirect_uris":["https://App.Localhost/cb"],"token_endpoint_auth_method":"none"}`)
	dcrIPv6 := register(`{"client_name":"IPv6","redirect_uris":["http://[::1]/cb"],"token_endpoint_auth_method":"none"}`)
	cimdLoopback := host.doc("/loopback.json", "", validDoc)
	cimdWeb := host.doc("/web.json", "", func(id string) string {
		return `{"client_id":"` + id + `","client_name":"Web Doc","redirect_uris":["https://app.example.com/cimd"],"token_endpoint_auth_method":"none"}`
	})
	tests := []struct {
		name, client   string
		first, second  string // redirect URIs of the first and the second authorization
		remembered     bool
		selfRegistered bool // errors are an error page rather than a redirect
	}{
		{"config loopback", bClientID, bRedirect, "http://127.0.0.1:4567/callback", false, false},
		{"config localhost", bClientID, "http://localhost:8080/cb", "http://localhost:8080/cb", false, false},
		{"config private-use scheme", "cfg-native", "com.example.cfg:/cb", "com.example.cfg:/cb", false, false},
		{"config web", bWebClientID, bWebRedirect, bWebRedirect, true, false},
		{"admin loopback", "admin-loopback", "http://127.0.0.1/cb", "http://127.0.0.1:5678/cb", false, false},
		{"admin private-use scheme", "admin-native", "com.example.admin:/cb", "com.example.admin:/cb", false, false},
		{"admin confidential loopback", "admin-confidential", "http://127.0.0.1/cb", "http://127.0.0.1/cb", true, false},
		{"admin LOCALHOST", "admin-upper", "https://LOCALHOST/cb", "https://LOCALHOST/cb", false, false},
		{"admin localhost.", "admin-dot", "https://localhost./cb", "https://localhost./cb", false, false},
		{"admin *.localhost", "admin-sub", "https://app.localhost/cb", "https://app.localhost/cb", false, false},
		{"admin 127.0.0.1.", "admin-ipdot", "https://127.0.0.1./cb", "https://127.0.0.1./cb", false, false},
		{"admin [::1]", "admin-ipv6", "https://[::1]/cb", "https://[::1]/cb", false, false},
		{"dcr *.localhost", dcrSub, "https://App.Localhost/cb", "https://App.Localhost/cb", false, true},
		{"dcr IPv6 loopback", dcrIPv6, "http://[::1]:4567/cb", "http://[::1]:4568/cb", false, true},
		{"dcr loopback", loopback, "http://127.0.0.1:4567/cb", "http://127.0.0.1:4568/cb", false, true},
		{"dcr private-use scheme", custom, "com.example.app:/cb", "com.example.app:/cb", false, true},
		{"dcr web", web, "https://app.example.com/dcr", "https://app.example.com/dcr", true, true},
		{"cimd loopback", cimdLoopback, "http://127.0.0.1:3000/callback", "http://127.0.0.1:3001/callback", false, true},
		{"cimd web", cimdWeb, "https://app.example.com/cimd", "https://app.example.com/cimd", true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := e.browser()
			p := authParams(testChallenge)
			p.Set("client_id", tt.client)
			p.Set("redirect_uri", tt.first)
			if _, err := e.robot(c, e.url(pathAuthorize, p), tt.first, bUser, bPassword, "approve"); err != nil {
				t.Fatalf("first authorization: %v", err)
			}
			p.Set("redirect_uri", tt.second)
			resp, err := c.Get(e.url(pathAuthorize, p))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if got := strings.HasPrefix(loc, tt.second); got != tt.remembered {
				t.Fatalf("second authorization: Location %q, want remembered consent = %v", loc, tt.remembered)
			}
			if !tt.remembered && !strings.HasPrefix(loc, pathConsent+"?req=") {
				t.Fatalf("second authorization: Location %q, want the consent page", loc)
			}
			p.Set("prompt", "none")
			resp, err = c.Get(e.url(pathAuthorize, p))
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			loc = resp.Header.Get("Location")
			switch {
			case tt.remembered:
				if !strings.Contains(loc, "code=") {
					t.Errorf("prompt=none: Location %q, want a code", loc)
				}
			case tt.selfRegistered:
				if loc != "" || !strings.Contains(body, "consent_required") {
					t.Errorf("prompt=none: %d Location %q, want an error page saying consent_required", resp.StatusCode, loc)
				}
			default:
				u, _ := url.Parse(loc)
				if !strings.HasPrefix(loc, tt.second) || u.Query().Get("error") != "consent_required" || u.Query().Has("code") {
					t.Errorf("prompt=none: Location %q, want consent_required at the redirect URI", loc)
				}
			}
		})
	}
}

// TestConsentAnswersBrowsersWithAPage: a browser's consent POST (a
// top-level navigation, Sec-Fetch-Dest: document) is answered with a page
// that sends it on to the client's web redirect URI (a meta refresh and
// a link, not cached, no referrer across origins), so that a callback
// redirecting on to another origin is not held to the consent page's CSP
// form-action (TestConsentCallbackRedirectsOn in test/browser); a
// program, or a frame, gets the 303 as before. The same holds at
// /authorize on a remembered consent and at the end of the sign-out page
// (README: "at the end of the sign-in, consent and sign-out pages as at
// /authorize"), and a private-use scheme, which leaves the browser, gets
// the 303 even in a browser.
func TestConsentAnswersBrowsersWithAPage(t *testing.T) {
	// sentOn checks a browser's answer: a page sending it on to a URI
	// starting with prefix, which it returns.
	sentOn := func(t *testing.T, what string, resp *http.Response, body, prefix string) *url.URL {
		t.Helper()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
			t.Fatalf("%s = %d, Location %q, want 200, a page sending the browser on", what, resp.StatusCode, resp.Header.Get("Location"))
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s: Cache-Control = %q, want no-store", what, got)
		}
		if got := resp.Header.Get("Referrer-Policy"); got != "same-origin" {
			t.Errorf("%s: Referrer-Policy = %q, want same-origin", what, got)
		}
		refresh := regexp.MustCompile(`<meta http-equiv="refresh" content="0;url=([^"]+)">`).FindStringSubmatch(body)
		if refresh == nil {
			t.Fatalf("%s: page has no meta refresh: %s", what, body)
		}
		if !strings.Contains(body, `href="`+refresh[1]+`"`) {
			t.Errorf("%s: page has no link on: %s", what, body)
		}
		loc, err := url.Parse(html.UnescapeString(refresh[1]))
		if err != nil || !strings.HasPrefix(loc.String(), prefix) {
			t.Fatalf("%s: meta refresh to %v (%v), want %s...", what, loc, err, prefix)
		}
		return loc
	}
	browserPost := func(t *testing.T, e *testEnv, c *http.Client, action string, v url.Values) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, e.srv.URL+action, strings.NewReader(v.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", e.srv.URL)
		req.Header.Set("Sec-Fetch-Dest", "document")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, readBody(t, resp)
	}
	const nativeID, nativeRedirect, nativeBye = "native-app", "com.example.native:/cb", "com.example.native:/bye"
	withNative := func(c *Config) {
		c.Clients[1].PostLogoutRedirectURIs = []string{logoutURI}
		c.Clients = append(c.Clients, Client{ID: nativeID, Name: "Native App", RedirectURIs: []string{nativeRedirect},
			PostLogoutRedirectURIs: []string{nativeBye}, TokenEndpointAuthMethod: "none"})
	}
	t.Run("authorize, consent remembered", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		c := e.webSignedIn(t)
		req, err := http.NewRequest(http.MethodGet, e.url(pathAuthorize, webAuthParams(testChallenge)), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Sec-Fetch-Dest", "document")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		loc := sentOn(t, "browser's /authorize", resp, readBody(t, resp), bWebRedirect+"?")
		if loc.Query().Get("code") == "" || loc.Query().Get("iss") != e.srv.URL {
			t.Errorf("sent on to %v, want code and iss", loc)
		}
	})
	t.Run("sign-out", func(t *testing.T) {
		e := newBrowserEnv(t, withNative)
		for _, tt := range []struct{ client, bye string }{{bWebClientID, logoutURI}, {nativeID, nativeBye}} {
			alice, _ := e.signInWithIDToken(t, bUser, idTokenParams())
			_, page := e.logoutGet(t, alice, url.Values{"client_id": {tt.client}, "post_logout_redirect_uri": {tt.bye}, "state": {"s1"}})
			f := findForm(t, page, "logout")
			f.hidden.Set("action", "logout")
			resp, body := browserPost(t, e, alice, f.action, f.hidden)
			if tt.client == nativeID {
				if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != nativeBye+"?state=s1" {
					t.Errorf("browser's sign-out to a private-use scheme = %d, Location %q, want 303 to %s?state=s1", resp.StatusCode, resp.Header.Get("Location"), nativeBye)
				}
			} else if loc := sentOn(t, "browser's sign-out", resp, body, logoutURI+"?"); loc.Query().Get("state") != "s1" {
				t.Errorf("sent on to %v, want state s1", loc)
			}
			if e.signedIn(t, alice) {
				t.Errorf("%s: still signed in after Sign out", tt.client)
			}
		}
	})
	t.Run("consent, private-use scheme", func(t *testing.T) {
		e := newBrowserEnv(t, withNative)
		p := authParams(testChallenge)
		p.Set("client_id", nativeID)
		p.Set("redirect_uri", nativeRedirect)
		c, body := e.consentPage(t, p, bUser)
		f := findForm(t, body, "consent")
		f.hidden.Set("decision", "approve")
		if resp, _ := browserPost(t, e, c, f.action, f.hidden); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), nativeRedirect+"?code=") {
			t.Errorf("browser's consent POST for a private-use scheme = %d, Location %q, want 303 to %s", resp.StatusCode, resp.Header.Get("Location"), nativeRedirect)
		}
	})
	for _, dest := range []string{"document", "", "iframe"} {
		e := newBrowserEnv(t, nil)
		p := authParams(testChallenge)
		p.Set("client_id", bWebClientID)
		p.Set("redirect_uri", bWebRedirect)
		c, body := e.consentPage(t, p, bUser)
		f := findForm(t, body, "consent")
		v := f.hidden
		v.Set("decision", "approve")
		req, err := http.NewRequest(http.MethodPost, e.srv.URL+f.action, strings.NewReader(v.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", e.srv.URL)
		if dest != "" {
			req.Header.Set("Sec-Fetch-Dest", dest)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body = readBody(t, resp)
		if dest != "document" {
			if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, bWebRedirect+"?code=") {
				t.Errorf("Sec-Fetch-Dest %q: consent POST = %d, Location %q, want 303 to the redirect URI", dest, resp.StatusCode, loc)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" {
			t.Fatalf("browser's consent POST = %d, Location %q, want 200, a page", resp.StatusCode, resp.Header.Get("Location"))
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control = %q, want no-store", got)
		}
		if got := resp.Header.Get("Referrer-Policy"); got != "same-origin" {
			t.Errorf("Referrer-Policy = %q, want same-origin", got)
		}
		refresh := regexp.MustCompile(`<meta http-equiv="refresh" content="0;url=([^"]+)">`).FindStringSubmatch(body)
		if refresh == nil {
			t.Fatalf("page has no meta refresh: %s", body)
		}
		loc, err := url.Parse(html.UnescapeString(refresh[1]))
		if err != nil || !strings.HasPrefix(loc.String(), bWebRedirect+"?") || loc.Query().Get("iss") != e.srv.URL {
			t.Fatalf("meta refresh to %v (%v), want the redirect URI with code and iss", loc, err)
		}
		if !strings.Contains(body, `href="`+refresh[1]+`"`) {
			t.Errorf("page has no link to the redirect URI: %s", body)
		}
		var ac authCode
		if err := e.get(bucketCodes, tokenKey(loc.Query().Get("code")), &ac); err != nil {
			t.Errorf("code on the page: %v", err)
		}
	}
}

// TestIPv6LoopbackFormActionNamesNoOtherHost: the sign-in page for a
// client whose redirect URI is on the IPv6 loopback address lets its
// form (and the redirects after its POST) go to the issuer and to that
// redirect URI's origin, never to any host at the port: "http://*"
// (a redirect URI without a port) is every website on port 80 and 443.
// Browsers reach the client through the page redirectTo answers them
// with, which no form-action governs (TestIPv6LoopbackRedirect).
func TestIPv6LoopbackFormActionNamesNoOtherHost(t *testing.T) {
	for _, redirect := range []string{"http://[::1]/cb", "http://[::1]:3000/cb", "http://[0:0:0:0:0:0:0:1]:3000/cb"} {
		e := newBrowserEnv(t, func(c *Config) {
			c.Clients = append(c.Clients, Client{ID: "v6", Name: "IPv6 App", RedirectURIs: []string{redirect}, TokenEndpointAuthMethod: "none"})
		})
		p := authParams(testChallenge)
		p.Set("client_id", "v6")
		p.Set("redirect_uri", redirect)
		c := e.browser()
		resp, err := c.Get(e.url(pathAuthorize, p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, pathLogin) {
			t.Fatalf("%s: authorize Location %q, want the sign-in page", redirect, loc)
		}
		resp, err = c.Get(e.srv.URL + loc)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		fa := regexp.MustCompile(`form-action ([^;]*)`).FindStringSubmatch(csp)
		if resp.StatusCode != http.StatusOK || fa == nil {
			t.Fatalf("%s: sign-in page = %d, CSP %q", redirect, resp.StatusCode, csp)
		}
		if strings.Contains(fa[1], "*") {
			t.Errorf("%s: sign-in page's form-action %q names any host", redirect, fa[1])
		}
	}
}

// TestConsentGrantsTheResourceShown: an Allow grants the resource the
// consent page named, or nothing. A request without resource means the
// single configured one, which a reload may replace while the page is
// open; the same scope names on the new resource must not make the
// user's Allow a grant to a server the page never named. The page is
// shown again, naming the resource the request now means.
func TestConsentGrantsTheResourceShown(t *testing.T) {
	only := func(res string) func(*Config) {
		return func(c *Config) { c.Resources = []Resource{{URL: res, Scopes: []string{"files:read"}}} }
	}
	e := newBrowserEnv(t, only(bResource))
	p := authParams(testChallenge)
	p.Del("resource")
	c, body := e.consentPage(t, p, bUser)
	if !strings.Contains(body, bResource) {
		t.Fatalf("consent page does not name %s: %s", bResource, body)
	}
	f := findForm(t, body, "consent")

	cfg := e.iss.cfg
	only(bOther)(&cfg)
	e.serve(cfg)

	v := f.hidden
	v.Set("decision", "approve")
	allowAskedAgain(t, e, c, f.action, v, bOther, bResource)
}

// TestConsentPageOfEarlierReleaseAskedAgain: README (Upgrading) says a
// consent page opened before the upgrade, whose form has no resource
// field, is shown once more when answered, issuing nothing, and that the
// second Allow goes through.
func TestConsentPageOfEarlierReleaseAskedAgain(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c, body := e.consentPage(t, authParams(testChallenge), bUser)
	f := findForm(t, body, "consent")
	v := f.hidden
	v.Del("resource")
	v.Set("decision", "approve")
	allowAskedAgain(t, e, c, f.action, v, bResource, "")
}

// allowAskedAgain posts the Allow v, which must issue nothing and show
// the consent page again naming want (and not gone, unless empty); that
// page's Allow must then issue a code for want.
func allowAskedAgain(t *testing.T, e *testEnv, c *http.Client, action string, v url.Values, want, gone string) {
	t.Helper()
	resp, body := e.postPage(t, c, action, v)
	if loc := resp.Header.Get("Location"); loc != "" || metaRefresh(t, body) != "" {
		t.Fatalf("first Allow went on to %q%s, want the consent page again", loc, metaRefresh(t, body))
	}
	if n := e.count(bucketCodes); n != 0 {
		t.Errorf("%d codes issued by the first Allow", n)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) || gone != "" && strings.Contains(body, gone) {
		t.Fatalf("answer %d, want the consent page again naming %s: %s", resp.StatusCode, want, body)
	}
	// The page shown again grants what it names.
	f := findForm(t, body, "consent")
	v = f.hidden
	v.Set("decision", "approve")
	resp, _ = e.postPage(t, c, f.action, v)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	var ac authCode
	if err := e.get(bucketCodes, tokenKey(loc.Query().Get("code")), &ac); err != nil {
		t.Fatalf("code: %v (Location %s)", err, loc)
	}
	if ac.Resource != want {
		t.Errorf("code resource = %q, want %q", ac.Resource, want)
	}
}

// TestRememberedConsentsBounded: remembered consents do not expire, and
// a client id is anyone's to make (a client metadata document at a URL of
// one's own), so a signed-in user approving ever new clients would grow
// the store without bound. A user keeps at most maxUserConsents: one
// more approved forgets the user's oldest, whose app asks for consent
// again, and is itself remembered.
func TestRememberedConsentsBounded(t *testing.T) {
	const perUser = 1000 // README (Tokens and agents: at most 1000 remembered consents); not the constant
	e, host := newCIMDEnv(t, true, nil)
	ctx := t.Context()
	oldest := "https://seed.example.com/0.json"
	err := e.store.Update(ctx, func(tx store.Tx) error {
		for i := range perUser {
			id := fmt.Sprintf("https://seed.example.com/%d.json", i)
			at := e.clock.Now().Add(time.Duration(i-perUser) * time.Minute)
			cs := &consent{Scopes: []string{"files:read"}, GrantedAt: at, RedirectHosts: []string{"seed.example.com"}}
			if err := consentsIn(tx).t.put(consentKey(bUser, id, bResource, ""), cs, time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	id := host.doc("/web.json", "no-store", func(id string) string {
		return `{"client_id":"` + id + `","client_name":"Doc Client","redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"none"}`
	})
	p := authParams(testChallenge)
	p.Set("client_id", id)
	p.Set("redirect_uri", "https://app.example.com/cb")
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, p), "https://app.example.com/cb", bUser, bPassword, "approve"); err != nil {
		t.Fatalf("authorization: %v", err)
	}
	// Only the oldest is forgotten: the user keeps 1000, not fewer
	// (the second oldest is still remembered).
	second := "https://seed.example.com/1.json"
	var n int
	var kept, keptSecond, newest bool
	err = e.store.View(ctx, func(tx store.Tx) error {
		return consentsIn(tx).ofUser(bUser, func(clientID, _, _ string, _ *consent) error {
			n++
			kept = kept || clientID == oldest
			keptSecond = keptSecond || clientID == second
			newest = newest || clientID == id
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != perUser || kept || !keptSecond || !newest {
		t.Errorf("after one more approval: %d consents, oldest kept %v, second oldest kept %v, new one kept %v; want %d, the oldest forgotten, the second oldest and the new one kept",
			n, kept, keptSecond, newest, perUser)
	}
	// The new consent is remembered: the next request gets its code at once.
	resp, err := c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "https://app.example.com/cb?") || !strings.Contains(loc, "code=") {
		t.Errorf("authorize again: Location %q, want a code", loc)
	}
}

// TestConsentDenyOnPromptConsentForgets: Deny on a consent page that
// prompt=consent asked for forgets the remembered consent, so the
// client's next request without prompt=consent shows the page again
// (prompt=none: consent_required) rather than passing on the approval
// the user just took back. Deny on a page shown for more scopes than
// were approved leaves the approval as it was.
func TestConsentDenyOnPromptConsentForgets(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.webSignedIn(t) // files:read approved
	authorize := func(t *testing.T, p url.Values) string {
		t.Helper()
		resp, err := c.Get(e.url(pathAuthorize, p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Location")
	}
	deny := func(t *testing.T, p url.Values) {
		t.Helper()
		u, err := e.robot(c, e.url(pathAuthorize, p), bWebRedirect, bUser, bPassword, "deny")
		if err != nil || u.Query().Get("error") != "access_denied" {
			t.Fatalf("deny: %v, %v; want access_denied at the redirect URI", u, err)
		}
	}

	broader := webAuthParams(testChallenge)
	broader.Set("scope", "files:read files:write")
	deny(t, broader)
	if loc := authorize(t, webAuthParams(testChallenge)); !strings.Contains(loc, "code=") {
		t.Fatalf("after denying more scopes: Location %q, want a code on the approval kept", loc)
	}

	again := webAuthParams(testChallenge)
	again.Set("prompt", "consent")
	deny(t, again)
	if loc := authorize(t, webAuthParams(testChallenge)); !strings.HasPrefix(loc, pathConsent+"?req=") {
		t.Errorf("after denying prompt=consent: Location %q, want the consent page", loc)
	}
	none := webAuthParams(testChallenge)
	none.Set("prompt", "none")
	if loc := authorize(t, none); !strings.Contains(loc, "error=consent_required") {
		t.Errorf("prompt=none after denying prompt=consent: Location %q, want consent_required", loc)
	}
}

// TestConsentDecisionRepeated: a double-click on Allow or Deny posts the
// consent form twice, the second before the first one's answer arrives,
// and the browser shows the second answer only. The second gets the
// first one's answer, the same code (which redeems once) or the same
// access_denied, not "Request expired" with the code lost; only for the
// same decision, from the same browser, within answeredTTL.
func TestConsentDecisionRepeated(t *testing.T) {
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // testChallenge's
	post := func(t *testing.T, e *testEnv, c *http.Client, f form, decision string) (*http.Response, string) {
		t.Helper()
		v := url.Values{}
		for k, vs := range f.hidden {
			v[k] = vs
		}
		v.Set("decision", decision)
		return e.postPage(t, c, f.action, v)
	}
	expired := func(t *testing.T, how string, resp *http.Response, page string) {
		t.Helper()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(page, "Request expired") {
			t.Errorf("%s: %d Location %q, want 400 Request expired: %s", how, resp.StatusCode, resp.Header.Get("Location"), page)
		}
	}
	for _, decision := range []string{"approve", "deny"} {
		t.Run(decision, func(t *testing.T) {
			e := newBrowserEnv(t, nil)
			c, page := e.consentPage(t, authParams(testChallenge), bUser)
			f := findForm(t, page, "consent")
			first, _ := post(t, e, c, f, decision)
			loc := first.Header.Get("Location")
			if first.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, bRedirect+"?") {
				t.Fatalf("first post: %d Location %q, want 303 to the client", first.StatusCode, loc)
			}
			second, page := post(t, e, c, f, decision)
			if second.StatusCode != http.StatusSeeOther || second.Header.Get("Location") != loc {
				t.Fatalf("second post: %d Location %q, want the first one's, %s: %s", second.StatusCode, second.Header.Get("Location"), loc, page)
			}
			if second.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("second post: headers %v", second.Header)
			}
			// README: "within 30 seconds", held literally, not through
			// answeredTTL: a repeat 29 s after the first still gets its
			// answer.
			e.clock.Advance(29 * time.Second)
			if again, page := post(t, e, c, f, decision); again.StatusCode != http.StatusSeeOther || again.Header.Get("Location") != loc {
				t.Fatalf("a repeat 29 s later: %d Location %q, want the first one's, %s: %s", again.StatusCode, again.Header.Get("Location"), loc, page)
			}
			u, err := url.Parse(loc)
			if err != nil {
				t.Fatal(err)
			}
			if decision == "approve" {
				if n := e.count(bucketCodes); n != 1 {
					t.Errorf("codes = %d, want 1: the request completes once", n)
				}
				code := u.Query().Get("code")
				if _, err := e.exchange(t, bClientID, "", code, verifier, oauth2.SetAuthURLParam("redirect_uri", bRedirect)); err != nil {
					t.Fatalf("redeem the code: %v", err)
				}
				if _, err := e.exchange(t, bClientID, "", code, verifier, oauth2.SetAuthURLParam("redirect_uri", bRedirect)); err == nil {
					t.Error("the code redeemed twice")
				}
				// Once redeemed, the code is sent no more: the client's
				// redemption of it again would revoke its grant.
				resp, page := post(t, e, c, f, decision)
				expired(t, "a repeat after the code's redemption", resp, page)
			} else if u.Query().Get("error") != "access_denied" || e.count(bucketCodes) != 0 {
				t.Errorf("deny: Location %q, %d codes; want access_denied and none", loc, e.count(bucketCodes))
			}
			other := map[string]string{"approve": "deny", "deny": "approve"}[decision]
			resp, page := post(t, e, c, f, other)
			expired(t, "the other decision", resp, page)
			e.clock.Advance(time.Second) // 30 s after the first
			resp, page = post(t, e, c, f, decision)
			expired(t, "30 s after the first", resp, page)
		})
	}
	t.Run("another browser", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		c, page := e.consentPage(t, authParams(testChallenge), bUser)
		f := findForm(t, page, "consent")
		if resp, _ := post(t, e, c, f, "approve"); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("first post: %d", resp.StatusCode)
		}
		// bUser signed in in another browser, with that session's token.
		other, otherPage := e.consentPage(t, authParams(testChallenge), bUser)
		f.hidden.Set(csrfField, findForm(t, otherPage, "consent").hidden.Get(csrfField))
		resp, page := post(t, e, other, f, "approve")
		expired(t, "another browser", resp, page)
	})
}
