package issuer

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// TestCodeTTLAtMostTenMinutes: a longer code_ttl is cut to ten minutes
// (RFC 6749 section 4.1.2 recommends at most ten), which the purge of
// sign-out epochs (record_epochs.go) relies on.
func TestCodeTTLAtMostTenMinutes(t *testing.T) {
	e := newBrowserEnv(t, func(c *Config) { c.CodeTTL = time.Hour })
	cb, err := e.robot(e.browser(), e.url(pathAuthorize, authParams(testChallenge)), bRedirect, bUser, bPassword, "approve")
	if err != nil {
		t.Fatalf("robot: %v", err)
	}
	var ac authCode
	if err := e.get(bucketCodes, tokenKey(cb.Query().Get("code")), &ac); err != nil {
		t.Fatalf("code record: %v", err)
	}
	if want := e.clock.Now().Add(10 * time.Minute); !ac.ExpiresAt.Equal(want) {
		t.Errorf("code expires %v, want %v (code_ttl 1h cut to 10m)", ac.ExpiresAt, want)
	}
}

func TestAuthorizeFlowIssuesCode(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.browser()
	cb, err := e.robot(c, e.url(pathAuthorize, authParams(testChallenge)), bRedirect, bUser, bPassword, "approve")
	if err != nil {
		t.Fatalf("robot: %v", err)
	}
	q := cb.Query()
	if q.Get("state") != "st-123" || q.Get("iss") != e.iss.URL() || q.Get("code") == "" || q.Has("error") {
		t.Fatalf("callback query = %v, want code, state st-123 and iss %s", q, e.iss.URL())
	}
	var ac authCode
	if err := e.get(bucketCodes, tokenKey(q.Get("code")), &ac); err != nil {
		t.Fatalf("code record: %v", err)
	}
	if ac.ClientID != bClientID || ac.Subject != bUser || ac.Resource != bResource ||
		!slices.Equal(ac.Scopes, []string{"files:read"}) || ac.CodeChallenge != testChallenge ||
		ac.CodeChallengeMethod != "S256" || ac.RedirectURI != bRedirect {
		t.Errorf("code record = %+v", ac)
	}
	if want := e.clock.Now().Add(5 * time.Minute); !ac.ExpiresAt.Equal(want) {
		t.Errorf("code expires %v, want %v", ac.ExpiresAt, want)
	}
	if n := e.count(bucketPending); n != 0 {
		t.Errorf("pending requests left = %d, want 0", n)
	}
	var cs consent
	if err := e.get(bucketConsents, consentKey(bUser, bClientID, bResource, ""), &cs); err != nil || !slices.Equal(cs.Scopes, []string{"files:read"}) {
		t.Errorf("consent = %+v, %v; want files:read", cs, err)
	}
}

// TestAuthorizeFlowOAuth2Client drives the flow with golang.org/x/oauth2
// (PKCE) and redeems the code at the token endpoint.
func TestAuthorizeFlowOAuth2Client(t *testing.T) {
	e := newBrowserEnv(t, nil)
	conf := &oauth2.Config{
		ClientID:    bClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: e.url(pathAuthorize, nil), TokenURL: e.url(pathToken, nil), AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: "http://127.0.0.1:49152/callback", // any port: loopback
		Scopes:      []string{"files:read", "files:write"},
	}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("xyz", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
	cb, err := e.robot(e.browser(), authURL, "http://127.0.0.1:49152/callback", bUser, bPassword, "approve")
	if err != nil {
		t.Fatalf("robot: %v", err)
	}
	if cb.Query().Get("state") != "xyz" {
		t.Fatalf("state = %q, want xyz", cb.Query().Get("state"))
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.srv.Client())
	tok, err := conf.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
	if err != nil {
		t.Fatalf("Exchange() error = %v", err)
	}
	if tok.AccessToken == "" {
		t.Fatalf("Exchange() gave no access token")
	}
	if got := tok.Extra("scope"); got != "files:read files:write" {
		t.Errorf("token scope = %v, want files:read files:write", got)
	}
}

func TestAuthorizeRememberedConsentSkipsPage(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, webAuthParams(testChallenge)), bWebRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatalf("first robot run: %v", err)
	}
	// Same browser (session), same or fewer scopes: straight to the client.
	resp, err := c.Get(e.url(pathAuthorize, webAuthParams(testChallenge)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), bWebRedirect) || loc.Query().Get("code") == "" {
		t.Fatalf("second authorize = %d %s, want 303 to the redirect URI with a code", resp.StatusCode, loc)
	}

	// More scopes than remembered: the consent page again.
	p := webAuthParams(testChallenge)
	p.Set("scope", "files:read files:write")
	resp, err = c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pathConsent+"?req=") {
		t.Fatalf("authorize with new scope: Location = %q, want the consent page", loc)
	}

	// prompt=consent forces the page even when remembered.
	p = webAuthParams(testChallenge)
	p.Set("prompt", "consent")
	resp, err = c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pathConsent+"?req=") {
		t.Fatalf("prompt=consent: Location = %q, want the consent page", loc)
	}
}

func TestAuthorizeDeny(t *testing.T) {
	e := newBrowserEnv(t, nil)
	cb, err := e.robot(e.browser(), e.url(pathAuthorize, authParams(testChallenge)), bRedirect, bUser, bPassword, "deny")
	if err != nil {
		t.Fatalf("robot: %v", err)
	}
	q := cb.Query()
	if q.Get("error") != "access_denied" || q.Get("state") != "st-123" || q.Get("iss") != e.iss.URL() || q.Has("code") {
		t.Fatalf("callback query = %v, want access_denied with state and iss", q)
	}
	if n := e.count(bucketCodes); n != 0 {
		t.Errorf("codes = %d, want 0", n)
	}
	if n := e.count(bucketConsents); n != 0 {
		t.Errorf("consents = %d, want 0", n)
	}
}

// TestAuthorizeErrorPage covers requests whose redirect URI cannot be
// trusted: they get an HTML error page and never a redirect.
func TestAuthorizeErrorPage(t *testing.T) {
	e := newBrowserEnv(t, nil)
	tests := []struct {
		name   string
		mutate func(url.Values)
		raw    string // extra raw query appended
	}{
		{"unknown client", func(v url.Values) { v.Set("client_id", "nope") }, ""},
		{"missing client_id", func(v url.Values) { v.Del("client_id") }, ""},
		{"repeated client_id", nil, "&client_id=" + bClientID},
		{"unregistered redirect_uri", func(v url.Values) { v.Set("redirect_uri", "https://evil.example/cb") }, ""},
		{"redirect_uri with other path", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1/other") }, ""},
		{"localhost is exact, port matters", func(v url.Values) { v.Set("redirect_uri", "http://localhost:9999/cb") }, ""},
		{"redirect_uri with userinfo", func(v url.Values) { v.Set("redirect_uri", "http://x@127.0.0.1:5000/callback") }, ""},
		{"omitted redirect_uri with two registered", func(v url.Values) { v.Del("redirect_uri") }, ""},
		{"repeated redirect_uri", nil, "&redirect_uri=" + url.QueryEscape(bRedirect)},
		{"repeated redirect_uri, once empty", nil, "&redirect_uri="},
		{"unknown request_uri", func(v url.Values) { v.Set("request_uri", "urn:ietf:params:oauth:request_uri:nope") }, ""},
		// A pair Go cannot read was dropped, and the rest read: other
		// readers split on ';' or decode otherwise.
		{"semicolon in the query", nil, "&nonce=n;scope=admin"},
		{"bad escape in the query", nil, "&nonce=%zz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := authParams(testChallenge)
			if tt.mutate != nil {
				tt.mutate(p)
			}
			resp, err := e.browser().Get(e.url(pathAuthorize, p) + tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Fatalf("status %d, Location %q; want 400 and no redirect", resp.StatusCode, resp.Header.Get("Location"))
			}
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, "<h1>") {
				t.Errorf("not an HTML error page: %s", body)
			}
		})
	}
}

// TestAuthorizeRedirectErrors covers errors reported to the (trusted)
// redirect URI, each with state and iss.
func TestAuthorizeRedirectErrors(t *testing.T) {
	e := newBrowserEnv(t, nil)
	tests := []struct {
		name   string
		mutate func(url.Values)
		raw    string
		want   string
	}{
		{"missing code_challenge", func(v url.Values) { v.Del("code_challenge") }, "", "invalid_request"},
		{"plain method", func(v url.Values) { v.Set("code_challenge_method", "plain") }, "", "invalid_request"},
		{"absent method means plain", func(v url.Values) { v.Del("code_challenge_method") }, "", "invalid_request"},
		{"malformed challenge", func(v url.Values) { v.Set("code_challenge", "short") }, "", "invalid_request"},
		{"missing response_type", func(v url.Values) { v.Del("response_type") }, "", "invalid_request"},
		{"token response_type", func(v url.Values) { v.Set("response_type", "token") }, "", "unsupported_response_type"},
		{"repeated scope", nil, "&scope=files:write", "invalid_request"},
		// RFC 8707 section 2 allows several resources; one audience per
		// token is this server's limit, told as PAR and /token tell it.
		{"repeated resource", nil, "&resource=" + url.QueryEscape(bOther), "invalid_target"},
		{"unknown resource", func(v url.Values) { v.Set("resource", "https://unknown.example/mcp") }, "", "invalid_target"},
		{"resource with fragment", func(v url.Values) { v.Set("resource", bResource+"#x") }, "", "invalid_target"},
		{"unknown scope", func(v url.Values) { v.Set("scope", "nope") }, "", "invalid_scope"},
		{"prompt none without session", func(v url.Values) { v.Set("prompt", "none") }, "", "login_required"},
		{"prompt none with login", func(v url.Values) { v.Set("prompt", "none login") }, "", "invalid_request"},
		{"response_mode fragment", func(v url.Values) { v.Set("response_mode", "fragment") }, "", "invalid_request"},
		{"request object", func(v url.Values) { v.Set("request", "eyJ...") }, "", "request_not_supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := authParams(testChallenge)
			if tt.mutate != nil {
				tt.mutate(p)
			}
			resp, err := e.browser().Get(e.url(pathAuthorize, p) + tt.raw)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc.String(), bRedirect+"?") {
				t.Fatalf("status %d, Location %q; want 303 to %s", resp.StatusCode, resp.Header.Get("Location"), bRedirect)
			}
			q := loc.Query()
			if q.Get("error") != tt.want || q.Get("state") != "st-123" || q.Get("iss") != e.iss.URL() || q.Has("code") {
				t.Errorf("error response = %v, want error %s with state and iss", q, tt.want)
			}
		})
	}
	if n := e.count(bucketPending) + e.count(bucketCodes); n != 0 {
		t.Errorf("records written by failed requests = %d, want 0", n)
	}
}

// TestAuthorizeRedirectURIResponseParams: a redirect URI whose own query
// carries a parameter the authorization response adds (state, code, iss,
// error...) is refused at registration (TestRegisterValidation and
// friends); one stored before that rule gets no redirect at all, error or
// code: the response would carry the parameter twice (RFC 6749 section
// 3.1), and a client reading the first value would take the registered
// state, code or iss for this server's.
func TestAuthorizeRedirectURIResponseParams(t *testing.T) {
	e := newBrowserEnv(t, nil)
	for _, tt := range []struct{ name, query string }{
		{"state", "state=st-123"},
		{"iss", "iss=https%3A%2F%2Fevil.example"},
		{"code", "x=1&code=planted"},
		{"error", "error=access_denied"},
		{"escaped name", "st%61te=st-123"},
		{"another case", "ISS=https%3A%2F%2Fevil.example"},
		{"semicolon separator", "x=1;state=st-123"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id, redirect := "stored-"+strings.ReplaceAll(tt.name, " ", "-"), bWebRedirect+"?"+tt.query
			err := e.store.Update(t.Context(), func(tx store.Tx) error {
				return clientsIn(tx).create(&Client{ID: id, Name: "Stored", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{redirect}, Source: sourceAdmin})
			})
			if err != nil {
				t.Fatal(err)
			}
			p := webAuthParams(testChallenge)
			p.Set("client_id", id)
			p.Set("redirect_uri", redirect)
			bad := maps.Clone(p)
			bad.Set("scope", "nope")
			resp, err := e.browser().Get(e.url(pathAuthorize, bad))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Errorf("error response: status %d, Location %q; want 400 and no redirect", resp.StatusCode, resp.Header.Get("Location"))
			}
			if cb, err := e.robot(e.browser(), e.url(pathAuthorize, p), "https://app.example.com/", bUser, bPassword, "approve"); err == nil {
				t.Errorf("approved request redirected to %s, want an error page", cb)
			}
		})
	}
}

func TestAuthorizeRedirectURIMatching(t *testing.T) {
	reg := []string{"http://127.0.0.1/cb", "http://[::1]:3000/cb", "http://localhost:8080/cb", "https://app.example.com/cb?x=1", "com.example.app:/cb"}
	tests := []struct {
		got  string
		want bool
	}{
		{"http://127.0.0.1/cb", true},
		{"http://127.0.0.1:51234/cb", true},
		{"http://[::1]:4000/cb", true},
		{"http://[::1]/cb", true},
		{"http://localhost:8080/cb", true},
		{"http://localhost:8081/cb", false},
		// Names that are loopback to a browser still match exactly: the
		// port is free only for IP literals (RFC 8252 section 7.3).
		{"http://LOCALHOST:8080/cb", false},
		{"http://localhost.:8080/cb", false},
		{"http://app.localhost:8080/cb", false},
		{"http://127.0.0.1.:5000/cb", false},
		{"http://127.0.0.1:5000/cb2", false},
		{"http://127.0.0.1:5000/cb?x=1", false},
		{"http://127.0.0.1:5000/cb#f", false},
		{"https://127.0.0.1:5000/cb", false},
		{"http://127.0.0.2:5000/cb", false},
		// The port is free, but a port: a browser reads :05555 as :5555.
		{"http://127.0.0.1:05555/cb", false},
		{"http://127.0.0.1:0/cb", false},
		{"http://127.0.0.1:99999/cb", false},
		{"https://app.example.com/cb?x=1", true},
		{"https://app.example.com/cb", false},
		{"https://app.example.com:8443/cb?x=1", false},
		{"com.example.app:/cb", true},
		{"com.example.app:/cb2", false},
	}
	for _, tt := range tests {
		if got := matchRedirectURI(reg, tt.got); got != tt.want {
			t.Errorf("matchRedirectURI(%q) = %v, want %v", tt.got, got, tt.want)
		}
	}
}

// TestAuthorizeEmptyParameterOmitted: a parameter sent without a value
// counts as omitted (RFC 6749 section 3.1), at /authorize and in a pushed
// request alike: an empty redirect_uri picks the client's only registered
// one (and the code records it as omitted, so the token request omits it
// too); an empty request, request_uri or requested_actor is none.
func TestAuthorizeEmptyParameterOmitted(t *testing.T) {
	e := newBrowserEnv(t, nil)
	tests := []struct {
		name   string
		param  string
		value  []string // nil: omitted
		pushed bool
	}{
		{"redirect_uri omitted", "redirect_uri", nil, false},
		{"redirect_uri empty", "redirect_uri", []string{""}, false},
		{"request empty", "request", []string{""}, false},
		{"request_uri empty", "request_uri", []string{""}, false},
		{"requested_actor empty", "requested_actor", []string{""}, false},
		{"pushed redirect_uri empty", "redirect_uri", []string{""}, true},
		{"pushed request_uri empty", "request_uri", []string{""}, true},
		{"pushed requested_actor empty", "requested_actor", []string{""}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := webAuthParams(testChallenge) // web-app has exactly one redirect URI
			p.Del(tt.param)
			if tt.value != nil {
				p[tt.param] = tt.value
			}
			if tt.pushed {
				uri, _ := e.push(t, bWebClientID, bWebRedirect, url.Values{tt.param: tt.value})
				p = url.Values{"client_id": {bWebClientID}, "request_uri": {uri}}
			}
			cb, err := e.robot(e.browser(), e.url(pathAuthorize, p), bWebRedirect, bUser, bPassword, "approve")
			if err != nil {
				t.Fatalf("robot: %v", err)
			}
			var ac authCode
			if err := e.get(bucketCodes, tokenKey(cb.Query().Get("code")), &ac); err != nil {
				t.Fatalf("no code in %s: %v", cb, err)
			}
			wantRedirect := bWebRedirect
			if tt.param == "redirect_uri" {
				wantRedirect = "" // as omitted
			}
			if ac.RedirectURI != wantRedirect {
				t.Errorf("code redirect_uri = %q, want %q", ac.RedirectURI, wantRedirect)
			}
			if ac.Actor != "" {
				t.Errorf("code actor = %q, want none", ac.Actor)
			}
		})
	}
}

// TestAuthorizeOpenIDNeedsRedirectURI: an OpenID Connect request
// (openid in scope) must carry redirect_uri (OpenID Connect Core
// 3.1.2.1: REQUIRED; 3.1.2.2: the server verifies the REQUIRED
// parameters are present), also when the client registered one URI,
// which an OAuth request may leave out (TestAuthorizeEmptyParameterOmitted).
// Without a redirect URI the request names, the refusal is an error page;
// a push is refused with invalid_request.
func TestAuthorizeOpenIDNeedsRedirectURI(t *testing.T) {
	e := newBrowserEnv(t, nil)
	p := webAuthParams(testChallenge) // web-app has exactly one redirect URI
	p.Set("scope", "openid files:read")
	p.Del("redirect_uri")
	c := e.webSignedIn(t)
	resp, err := c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(body, "redirect_uri") {
		t.Errorf("openid request without redirect_uri: %d Location %q, want 400 on the error page naming redirect_uri", resp.StatusCode, resp.Header.Get("Location"))
	}
	if a := e.post(t, pathPAR, p, ""); a.status != http.StatusBadRequest || a.str("error") != "invalid_request" {
		t.Errorf("pushed openid request without redirect_uri: %d %s, want 400 invalid_request", a.status, a.raw)
	}
}

// TestAuthorizeOpenIDClaimScopesWithoutClaims: OpenID Connect Core 5.4
// defines the scope values address and phone, whose claims this server
// holds none of; in an OpenID Connect request they are ignored (Core
// 3.1.2.1: scope values not understood SHOULD be ignored), not refused
// with invalid_scope: the request of an RP asking for every standard
// claim (openid profile email address phone) succeeds with the others.
// A resource that offers a scope of the same name still gets it.
func TestAuthorizeOpenIDClaimScopesWithoutClaims(t *testing.T) {
	e := newBrowserEnv(t, func(c *Config) {
		c.Resources[1].Scopes = append(c.Resources[1].Scopes, "phone")
		c.Groups[0].Scopes[bOther] = []string{"files:read", "phone"}
	})
	for _, tt := range []struct{ resource, scope, want string }{
		{bResource, "openid profile email address phone", "openid profile email"},
		{bResource, "openid address", "openid"},
		{bOther, "openid phone", "openid phone"},
	} {
		p := webAuthParams(testChallenge)
		p.Set("resource", tt.resource)
		p.Set("scope", tt.scope)
		_, a := e.signInWithIDToken(t, bUser, p)
		if a.str("scope") != tt.want {
			t.Errorf("scope %q for %s: token scope %q, want %q", tt.scope, tt.resource, a.str("scope"), tt.want)
		}
	}
}

func TestAuthorizePromptLoginForcesLogin(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.webSignedIn(t)
	p := webAuthParams(testChallenge)
	p.Set("prompt", "login")
	resp, err := c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pathLogin+"?req=") {
		t.Fatalf("prompt=login: Location = %q, want the login page", loc)
	}
	// prompt=none with a session and remembered consent succeeds silently.
	p.Set("prompt", "none")
	resp, err = c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc.Query().Get("code") == "" {
		t.Fatalf("prompt=none with consent: Location = %s, want a code", loc)
	}
	// ... and without consent for more scopes fails with consent_required.
	p.Set("scope", "files:read files:write")
	resp, err = c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ = url.Parse(resp.Header.Get("Location"))
	if got := loc.Query().Get("error"); got != "consent_required" {
		t.Fatalf("prompt=none without consent: error = %q, want consent_required", got)
	}
}

// TestAuthorizePromptSelectAccount: prompt=select_account (OpenID
// Connect Core 3.1.2.1) asks the user to choose the account; the sign-in
// page is where an account is chosen, so a signed-in browser is sent
// there, not given a code for its current account unasked. Signing in as
// another user there issues the code for that user.
func TestAuthorizePromptSelectAccount(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.webSignedIn(t)
	p := webAuthParams(testChallenge)
	p.Set("scope", "openid files:read")
	p.Set("prompt", "select_account")
	loc := locationOf(t, c, e.url(pathAuthorize, p))
	if !strings.HasPrefix(loc.String(), pathLogin+"?req=") {
		t.Fatalf("prompt=select_account when signed in: Location = %s, want the sign-in page", loc)
	}
	// The session signed in before the request does not answer it: the
	// consent step sends it back to the sign-in page.
	if next := locationOf(t, c, e.url(pathConsent, loc.Query())); next.String() != loc.String() {
		t.Fatalf("consent step with the session of before: Location = %s, want %s", next, loc)
	}
	cb, err := e.robot(c, e.url(pathAuthorize, p), bWebRedirect, "bob", bPassword, "approve")
	if err != nil {
		t.Fatal(err)
	}
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // testChallenge's
	a := e.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")},
		"redirect_uri": {bWebRedirect}, "code_verifier": {verifier}, "client_id": {bWebClientID}}, "")
	if a.str("id_token") == "" {
		t.Fatalf("token answer: %s", a.raw)
	}
	if _, claims := claimsOf(t, a.str("id_token")); claims["sub"] != "bob" {
		t.Errorf("ID token sub = %v, want bob, the account chosen", claims["sub"])
	}
}

func TestAuthorizePAR(t *testing.T) {
	e := newBrowserEnv(t, func(c *Config) { c.RequirePAR = true })
	push := func(clientID string, expires time.Time) string {
		uri := "urn:ietf:params:oauth:request_uri:" + clientID + expires.Format("150405.000")
		p := authParams(testChallenge)
		p.Set("client_id", clientID)
		if clientID == bWebClientID {
			p.Set("redirect_uri", bWebRedirect)
		}
		e.put(bucketPAR, tokenKey(uri), parRequest{ClientID: clientID, Params: p, ExpiresAt: expires}, expires)
		return uri
	}
	get := func(c *http.Client, q url.Values) *http.Response {
		t.Helper()
		resp, err := c.Get(e.url(pathAuthorize, q))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	t.Run("without request_uri refused", func(t *testing.T) {
		resp := get(e.browser(), authParams(testChallenge))
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if loc.Query().Get("error") != "invalid_request" || loc.Query().Get("iss") == "" {
			t.Fatalf("Location = %s, want invalid_request with iss", loc)
		}
	})
	t.Run("used once", func(t *testing.T) {
		uri := push(bClientID, e.clock.Now().Add(time.Minute))
		// Only client_id and request_uri in the query; other query
		// parameters are ignored (the pushed ones are authoritative).
		q := url.Values{"client_id": {bClientID}, "request_uri": {uri}, "state": {"ignored"}}
		cb, err := e.robot(e.browser(), e.url(pathAuthorize, q), bRedirect, bUser, bPassword, "approve")
		if err != nil {
			t.Fatalf("robot: %v", err)
		}
		if cb.Query().Get("code") == "" || cb.Query().Get("state") != "st-123" {
			t.Fatalf("callback = %s, want a code and the pushed state", cb)
		}
		resp := get(e.browser(), q)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Fatalf("replay: status %d Location %q, want 400 error page", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("bound to client", func(t *testing.T) {
		uri := push(bWebClientID, e.clock.Now().Add(time.Minute))
		resp := get(e.browser(), url.Values{"client_id": {bClientID}, "request_uri": {uri}})
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Fatalf("status %d Location %q, want 400 error page", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("expired", func(t *testing.T) {
		uri := push(bClientID, e.clock.Now().Add(time.Minute))
		e.clock.Advance(2 * time.Minute)
		resp := get(e.browser(), url.Values{"client_id": {bClientID}, "request_uri": {uri}})
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
}

// TestAuthorizePARRequiredByClient: a client registered with
// require_pushed_authorization_requests (RFC 9126 section 6), configured,
// self-registered or by a Client ID Metadata Document, is refused an
// authorization request not pushed first (invalid_request at its
// redirect URI, section 5), and gets a code through PAR; other clients
// are not affected.
func TestAuthorizePARRequiredByClient(t *testing.T) {
	e, host := newCIMDEnv(t, true, func(c *Config) {
		for n := range c.Clients {
			if c.Clients[n].ID == bClientID {
				c.Clients[n].RequirePushedAuthorizationRequests = true
			}
		}
	})
	resp, reg := e.register(t, `{"redirect_uris":["`+bRedirect+`"],"token_endpoint_auth_method":"none","require_pushed_authorization_requests":true}`)
	if resp.StatusCode != http.StatusCreated || reg["require_pushed_authorization_requests"] != true {
		t.Fatalf("registration = %d %v, want 201 echoing require_pushed_authorization_requests", resp.StatusCode, reg)
	}
	dcr, _ := reg["client_id"].(string)
	doc := host.doc("/par-client.json", "", func(id string) string {
		return `{"client_id":"` + id + `","client_name":"Doc Client","redirect_uris":["` + bRedirect + `"],"token_endpoint_auth_method":"none","require_pushed_authorization_requests":true}`
	})
	get := func(q url.Values) *http.Response {
		t.Helper()
		resp, err := e.browser().Get(e.url(pathAuthorize, q))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, id := range []string{bClientID, dcr, doc} {
		p := authParams(testChallenge)
		p.Set("client_id", id)
		resp, err := e.browser().Get(e.url(pathAuthorize, p))
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if id == bClientID {
			if !strings.HasPrefix(loc.String(), bRedirect+"?") || loc.Query().Get("error") != "invalid_request" || loc.Query().Get("iss") == "" {
				t.Errorf("%s without PAR: %d Location %s, want invalid_request with iss at the redirect URI", id, resp.StatusCode, loc)
			}
		} else if resp.StatusCode != http.StatusBadRequest || loc.String() != "" || !strings.Contains(body, "(invalid_request)") {
			// A self-registered client's early errors are not redirected
			// (earlyError).
			t.Errorf("%s without PAR: %d Location %s, want a 400 page saying invalid_request", id, resp.StatusCode, loc)
		}
		resp, err = e.srv.Client().PostForm(e.url(pathPAR, nil), p)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			RequestURI string `json:"request_uri"`
		}
		if body := readBody(t, resp); resp.StatusCode != http.StatusCreated || json.Unmarshal([]byte(body), &out) != nil {
			t.Fatalf("%s: PAR = %d %s, want 201", id, resp.StatusCode, body)
		}
		q := url.Values{"client_id": {id}, "request_uri": {out.RequestURI}}
		if cb, err := e.robot(e.browser(), e.url(pathAuthorize, q), bRedirect, bUser, bPassword, "approve"); err != nil || cb.Query().Get("code") == "" {
			t.Errorf("%s through PAR: %v, callback %v; want a code", id, err, cb)
		}
	}
	// A client without it is not refused.
	resp = get(webAuthParams(testChallenge))
	if loc, _ := url.Parse(resp.Header.Get("Location")); loc == nil || loc.Query().Get("error") != "" {
		t.Errorf("another client without PAR: Location %v, want no error", loc)
	}
}

// TestAuthorizePAREndpoint pushes through the real /par endpoint.
func TestAuthorizePAREndpoint(t *testing.T) {
	e := newBrowserEnv(t, nil)
	resp, err := e.srv.Client().PostForm(e.url(pathPAR, nil), authParams(testChallenge))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		RequestURI string `json:"request_uri"`
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PAR status %d: %s", resp.StatusCode, body)
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.RequestURI == "" {
		t.Fatalf("PAR body %s: %v", body, err)
	}
	q := url.Values{"client_id": {bClientID}, "request_uri": {out.RequestURI}}
	if _, err := e.robot(e.browser(), e.url(pathAuthorize, q), bRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatalf("robot: %v", err)
	}
	resp, err = e.browser().Get(e.url(pathAuthorize, q))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("replayed request_uri: status %d, want 400", resp.StatusCode)
	}
}

// push sends an authorization request for the public client clientID to
// the /par endpoint and returns its request_uri and PKCE verifier.
func (e *testEnv) push(t *testing.T, clientID, redirectURI string, extra url.Values) (requestURI, verifier string) {
	t.Helper()
	verifier = oauth2.GenerateVerifier()
	p := authParams(oauth2.S256ChallengeFromVerifier(verifier))
	p.Set("client_id", clientID)
	p.Set("redirect_uri", redirectURI)
	for k, v := range extra {
		p[k] = v
	}
	resp, err := e.srv.Client().PostForm(e.url(pathPAR, nil), p)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	var out struct {
		RequestURI string `json:"request_uri"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || resp.StatusCode != http.StatusCreated || out.RequestURI == "" {
		t.Fatalf("PAR = %d %s, want 201 with a request_uri", resp.StatusCode, body)
	}
	return out.RequestURI, verifier
}

// TestAuthorizePARRedemption: a request_uri is redeemed only by the
// client that pushed it, once, before it expires, and only its pushed
// parameters count. Another client presenting it (one from the
// configuration, the admin API, DCR, CIMD, or an unknown one) gets an error page and leaves
// it usable by its own client.
func TestAuthorizePARRedemption(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	resp, out := e.register(t, `{"client_name":"Other","redirect_uris":["`+bWebRedirect+`"],"token_endpoint_auth_method":"none"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d %v", resp.StatusCode, out)
	}
	dcrID := out["client_id"].(string)
	cimdID := host.doc("/other.json", "", func(id string) string {
		return `{"client_id":"` + id + `","client_name":"Other","redirect_uris":["` + bWebRedirect + `"],"token_endpoint_auth_method":"none"}`
	})
	const adminID = "admin-app"
	if err := e.iss.PutClient(t.Context(), Client{ID: adminID, RedirectURIs: []string{bWebRedirect}, TokenEndpointAuthMethod: "none"}); err != nil {
		t.Fatal(err)
	}
	conf := &oauth2.Config{
		ClientID:    bWebClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: e.url(pathAuthorize, nil), TokenURL: e.url(pathToken, nil), AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: bWebRedirect,
	}
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, e.srv.Client())
	// redeem runs the flow for the pushed request and checks that the
	// token is the pushed request's, whatever else the query said.
	redeem := func(t *testing.T, q url.Values, verifier string) {
		t.Helper()
		cb, err := e.robot(e.browser(), e.url(pathAuthorize, q), bWebRedirect, bUser, bPassword, "approve")
		if err != nil {
			t.Fatalf("robot: %v", err)
		}
		if cb.Query().Get("code") == "" || cb.Query().Get("state") != "st-123" || !strings.HasPrefix(cb.String(), bWebRedirect+"?") {
			t.Fatalf("callback = %s, want a code and the pushed state at the pushed redirect URI", cb)
		}
		tok, err := conf.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
		if err != nil {
			t.Fatalf("Exchange() error = %v", err)
		}
		if tok.Extra("scope") != "files:read" {
			t.Errorf("token scope = %v, want the pushed files:read", tok.Extra("scope"))
		}
	}
	rejected := func(t *testing.T, q url.Values) {
		t.Helper()
		resp, err := e.browser().Get(e.url(pathAuthorize, q))
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(body, "<h1>") {
			t.Fatalf("authorize = %d Location %q, want a 400 error page", resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	t.Run("wrong clients do not consume it", func(t *testing.T) {
		uri, verifier := e.push(t, bWebClientID, bWebRedirect, nil)
		for _, id := range []string{bClientID, adminID, dcrID, cimdID, "ghost"} {
			rejected(t, url.Values{"client_id": {id}, "request_uri": {uri}})
		}
		if n := e.count(bucketPAR); n != 1 {
			t.Fatalf("pushed requests after wrong clients = %d, want 1", n)
		}
		q := url.Values{"client_id": {bWebClientID}, "request_uri": {uri}}
		redeem(t, q, verifier)
		rejected(t, q) // used once
		if n := e.count(bucketPAR); n != 0 {
			t.Errorf("pushed requests after use = %d, want 0", n)
		}
	})

	// Query parameters besides client_id and request_uri are ignored
	// (RFC 9101 section 5, RFC 9126 section 4), each of them a change an
	// attacker holding the URL would want.
	for _, tt := range []struct{ name, key, value string }{
		{"redirect_uri", "redirect_uri", "https://evil.example/cb"},
		{"state", "state", "attacker"},
		{"wider scope", "scope", "files:read files:write"},
		{"other resource", "resource", bOther},
		{"other code_challenge", "code_challenge", testChallenge},
		{"plain PKCE", "code_challenge_method", "plain"},
		{"prompt none", "prompt", "none"},
		{"response_type token", "response_type", "token"},
		{"request object", "request", "a.b.c"},
	} {
		t.Run("query "+tt.name+" ignored", func(t *testing.T) {
			uri, verifier := e.push(t, bWebClientID, bWebRedirect, nil)
			redeem(t, url.Values{"client_id": {bWebClientID}, "request_uri": {uri}, tt.key: {tt.value}}, verifier)
		})
	}

	for _, tt := range []struct {
		name   string
		q      func(uri string) url.Values
		before func(uri string)
	}{
		{"expired", func(uri string) url.Values { return url.Values{"client_id": {bWebClientID}, "request_uri": {uri}} },
			func(string) { e.clock.Advance(61 * time.Second) }},
		{"expired, still in the store", func(uri string) url.Values { return url.Values{"client_id": {bWebClientID}, "request_uri": {uri}} },
			func(uri string) {
				var pr parRequest
				if err := e.get(bucketPAR, tokenKey(uri), &pr); err != nil {
					t.Fatal(err)
				}
				pr.ExpiresAt = e.clock.Now().Add(-time.Second)
				e.put(bucketPAR, tokenKey(uri), pr, e.clock.Now().Add(time.Hour))
			}},
		{"no client_id", func(uri string) url.Values { return url.Values{"request_uri": {uri}} }, nil},
		{"repeated request_uri", func(uri string) url.Values {
			return url.Values{"client_id": {bWebClientID}, "request_uri": {uri, uri}}
		}, nil},
		{"repeated client_id", func(uri string) url.Values {
			return url.Values{"client_id": {bWebClientID, bWebClientID}, "request_uri": {uri}}
		}, nil},
		{"unknown request_uri", func(uri string) url.Values {
			return url.Values{"client_id": {bWebClientID}, "request_uri": {uri + "x"}}
		}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			uri, _ := e.push(t, bWebClientID, bWebRedirect, nil)
			if tt.before != nil {
				tt.before(uri)
			}
			rejected(t, tt.q(uri))
		})
	}
}

// TestAuthorizeSelfRegisteredErrorPage: a self-registered client (DCR,
// CIMD) can name any redirect URI, so errors raised before the user has
// seen a page get an error page, never a redirect (no open redirector).
// Once the user has seen the login or consent page, errors redirect.
func TestAuthorizeSelfRegisteredErrorPage(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	const land = "https://evil.example/land"
	resp, out := e.register(t, `{"client_name":"Evil","redirect_uris":["`+land+`"],"token_endpoint_auth_method":"none"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d %v", resp.StatusCode, out)
	}
	dcrID := out["client_id"].(string)
	cimdID := host.doc("/evil.json", "", func(id string) string {
		return `{"client_id":"` + id + `","client_name":"Evil","redirect_uris":["` + land + `"],"token_endpoint_auth_method":"none"}`
	})
	loggedIn := e.browser()
	if _, err := e.robot(loggedIn, e.url(pathAuthorize, authParams(testChallenge)), bRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatalf("log in: %v", err)
	}
	tests := []struct {
		name   string
		c      *http.Client
		mutate func(url.Values)
	}{
		{"bad response_type", e.browser(), func(v url.Values) { v.Set("response_type", "bogus") }},
		{"no PKCE", e.browser(), func(v url.Values) { v.Del("code_challenge") }},
		{"prompt none without session", e.browser(), func(v url.Values) { v.Set("prompt", "none") }},
		{"unknown resource", e.browser(), func(v url.Values) { v.Set("resource", "https://unknown.example/mcp") }},
		{"prompt none without consent", loggedIn, func(v url.Values) { v.Set("prompt", "none") }},
		{"no grantable scope for the user", loggedIn, func(v url.Values) { v.Set("scope", "admin") }},
	}
	for _, cl := range []struct{ kind, id string }{{"dcr", dcrID}, {"cimd", cimdID}} {
		for _, tt := range tests {
			t.Run(cl.kind+" "+tt.name, func(t *testing.T) {
				p := authParams(testChallenge)
				p.Set("client_id", cl.id)
				p.Set("redirect_uri", land)
				tt.mutate(p)
				resp, err := tt.c.Get(e.url(pathAuthorize, p))
				if err != nil {
					t.Fatal(err)
				}
				body := readBody(t, resp)
				if loc := resp.Header.Get("Location"); loc != "" || resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "<h1>") {
					t.Errorf("authorize = %d Location %q, want a 400 error page and no redirect", resp.StatusCode, loc)
				}
			})
		}
	}
	// After the login and consent pages, a denial goes back to the client.
	p := authParams(testChallenge)
	p.Set("client_id", dcrID)
	p.Set("redirect_uri", land)
	cb, err := e.robot(e.browser(), e.url(pathAuthorize, p), land, bUser, bPassword, "deny")
	if err != nil {
		t.Fatalf("robot: %v", err)
	}
	if q := cb.Query(); q.Get("error") != "access_denied" || q.Get("state") != "st-123" || q.Get("iss") != e.iss.URL() {
		t.Errorf("denied callback = %s, want access_denied with state and iss", cb)
	}
}

// TestAuthorizePromptNoneSelfRegisteredApproved: prompt=none must end at
// the client (OpenID Connect Core 3.1.2.1, 3.1.2.6). A self-registered
// client's early errors are an error page (TestAuthorizeSelfRegisteredErrorPage)
// until the user trusts its redirect URI (RFC 9700 section 4.11.2); a
// signed-in user who approved the client before, its consent
// remembered, does: a silent success would go there unprompted too. Its
// login_required (a login older than max_age) and consent_required
// (scopes not yet approved) then go to the redirect URI, with state and
// iss; without a session, or for a client the user never approved, the
// page stays.
func TestAuthorizePromptNoneSelfRegisteredApproved(t *testing.T) {
	e := newBrowserEnv(t, nil)
	const cb = "https://rp.example.com/cb"
	register := func() string {
		resp, out := e.register(t, `{"client_name":"RP","redirect_uris":["`+cb+`"],"token_endpoint_auth_method":"none"}`)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("register = %d %v", resp.StatusCode, out)
		}
		return out["client_id"].(string)
	}
	approved, other := register(), register()
	params := func(clientID string, kv ...string) url.Values {
		p := webAuthParams(testChallenge)
		p.Set("client_id", clientID)
		p.Set("redirect_uri", cb)
		for n := 0; n < len(kv); n += 2 {
			p.Set(kv[n], kv[n+1])
		}
		return p
	}
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, params(approved)), cb, bUser, bPassword, "approve"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	for _, tt := range []struct {
		name, want string
		p          url.Values
	}{
		{"scopes not yet approved", "consent_required", params(approved, "prompt", "none", "scope", "files:read files:write")},
		{"login older than max_age", "login_required", params(approved, "prompt", "none", "max_age", "10")},
	} {
		loc := locationOf(t, c, e.url(pathAuthorize, tt.p))
		if q := loc.Query(); !strings.HasPrefix(loc.String(), cb+"?") || q.Get("error") != tt.want || q.Get("state") != "st-123" || q.Get("iss") != e.iss.URL() {
			t.Errorf("%s: Location %s, want %s with state and iss at the redirect URI", tt.name, loc, tt.want)
		}
	}
	for _, tt := range []struct {
		name    string
		browser *http.Client
		p       url.Values
	}{
		{"no session", e.browser(), params(approved, "prompt", "none")},
		{"a client never approved", c, params(other, "prompt", "none")},
	} {
		resp, err := tt.browser.Get(e.url(pathAuthorize, tt.p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); loc != "" || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d Location %q, want the error page", tt.name, resp.StatusCode, loc)
		}
	}
}

// TestAuthorizeReauthenticationEnforced: prompt=login and max_age ask for
// a new login; going to the consent step directly with the old session
// does not skip it.
func TestAuthorizeReauthenticationEnforced(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.webSignedIn(t)
	get := func(u string) (int, string) {
		t.Helper()
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}
	authorize := func(extra ...string) string {
		t.Helper()
		p := webAuthParams(testChallenge)
		for n := 0; n < len(extra); n += 2 {
			p.Set(extra[n], extra[n+1])
		}
		_, loc := get(e.url(pathAuthorize, p))
		return loc
	}
	// skipToConsent tries the consent step of the pending request behind
	// a login redirect, by GET and by approving POST, with the old login.
	skipToConsent := func(login string) {
		t.Helper()
		if !strings.HasPrefix(login, pathLogin+"?req=") {
			t.Fatalf("authorize: Location %q, want the login page", login)
		}
		req := strings.TrimPrefix(login, pathLogin+"?req=")
		if _, loc := get(e.url(pathConsent, nil) + "?req=" + req); loc != login {
			t.Errorf("GET consent with the old login: Location %q, want %q", loc, login)
		}
		resp, err := c.Get(e.srv.URL + login)
		if err != nil {
			t.Fatal(err)
		}
		v := findForm(t, readBody(t, resp), "login").hidden
		v.Set("decision", "approve")
		resp, _ = e.postPage(t, c, pathConsent, v)
		if loc := resp.Header.Get("Location"); loc != login {
			t.Errorf("POST consent with the old login: Location %q, want %q", loc, login)
		}
	}

	login := authorize("prompt", "login")
	skipToConsent(login)
	if cb, err := e.robot(c, e.srv.URL+login, bWebRedirect, bUser, bPassword, "approve"); err != nil || cb.Query().Get("code") == "" {
		t.Fatalf("after logging in again: %v, %v; want a code", cb, err)
	}

	e.clock.Advance(time.Hour)
	if loc := authorize("max_age", "7200"); !strings.HasPrefix(loc, bWebRedirect) {
		t.Errorf("max_age 7200 after an hour: Location %q, want the client (login recent enough)", loc)
	}
	loc, _ := url.Parse(authorize("max_age", "60", "prompt", "none"))
	if loc.Query().Get("error") != "login_required" {
		t.Errorf("max_age 60, prompt none after an hour: Location %s, want login_required", loc)
	}
	skipToConsent(authorize("max_age", "60"))
	if loc, _ := url.Parse(authorize("max_age", "x")); loc.Query().Get("error") != "invalid_request" {
		t.Errorf("max_age x: Location %s, want invalid_request", loc)
	}
	// OpenID Connect Core 3.1.2.1 sets max_age no upper bound: one past
	// what 32 bits hold is a bound every login meets.
	for _, big := range []string{"4294967296", "99999999999999999999999"} {
		if loc := authorize("max_age", big); !strings.HasPrefix(loc, bWebRedirect) || !strings.Contains(loc, "code=") {
			t.Errorf("max_age %s: Location %q, want a code (login recent enough)", big, loc)
		}
	}
}

// TestAuthorizePostWithoutCookieDropsCredentials: the GET form a
// cross-site POST to /authorize is sent on to carries the parameters an
// authorization request reads, not a credential a client posted along
// (client_secret, client_assertion, code_verifier), which would
// otherwise be in the 303's Location (access logs, the browser's
// history); the GET still answers with a code.
func TestAuthorizePostWithoutCookieDropsCredentials(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.webSignedIn(t)
	form := webAuthParams(testChallenge)
	form.Set("client_secret", "hunter2-secret")
	form.Set("client_assertion", "eyJhbGciOiJFUzI1NiJ9.assertion.sig")
	form.Set("code_verifier", "verifier-of-another-code")
	form.Set("extension", "x")
	resp, err := e.browser().PostForm(e.url(pathAuthorize, nil), form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	raw := resp.Header.Get("Location")
	loc, err := url.Parse(raw)
	if err != nil || resp.StatusCode != http.StatusSeeOther || loc.Path != pathAuthorize {
		t.Fatalf("POST /authorize without a cookie = %d Location %q, want 303 to GET /authorize", resp.StatusCode, raw)
	}
	for _, secret := range []string{"hunter2-secret", "assertion", "verifier-of-another-code", "extension"} {
		if strings.Contains(raw, secret) {
			t.Errorf("Location %q holds %q", raw, secret)
		}
	}
	for k := range webAuthParams(testChallenge) {
		if loc.Query().Get(k) != form.Get(k) {
			t.Errorf("Location %q: %s = %q, want %q", raw, k, loc.Query().Get(k), form.Get(k))
		}
	}
	resp, err = c.Get(e.srv.URL + loc.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, _ := url.Parse(resp.Header.Get("Location")); !strings.HasPrefix(got.String(), bWebRedirect+"?") || got.Query().Get("code") == "" {
		t.Errorf("GET after the POST: Location %q, want a code", got)
	}
}

// TestAuthorizePostWithoutCookieKeepsSession: a cross-site POST to
// /authorize arrives without the SameSite=Lax session cookie. It is sent
// on to the GET form of the same request, which the browser makes with
// its cookie, and no session is started in place of the signed-in one
// (any site could otherwise sign the user out). A pushed request is
// consumed only by that GET.
func TestAuthorizePostWithoutCookieKeepsSession(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.webSignedIn(t)
	issuerURL, _ := url.Parse(e.srv.URL)
	sessionCookie := func() string {
		for _, ck := range c.Jar.Cookies(issuerURL) {
			if ck.Name == e.iss.sessions.cookieName() {
				return ck.Value
			}
		}
		return ""
	}
	signedIn := sessionCookie()
	if signedIn == "" {
		t.Fatal("no session cookie after signing in")
	}
	requestURI, _ := e.push(t, bWebClientID, bWebRedirect, nil)
	_, tok := e.signInWithIDToken(t, bUser, idTokenParams())
	_, bobs := e.signInWithIDToken(t, "bob", idTokenParams())
	withHint := func(tok answer, prompt string) url.Values {
		f := webAuthParams(testChallenge)
		f.Set("id_token_hint", tok.str("id_token"))
		if prompt != "" {
			f.Set("prompt", prompt)
		}
		return f
	}
	tests := []struct {
		name     string
		form     url.Values
		hintKept bool // in the GET's URL
		signIn   bool // the GET answers with the sign-in page, not a code
	}{
		{"parameters", webAuthParams(testChallenge), false, false},
		{"pushed request", url.Values{"client_id": {bWebClientID}, "request_uri": {requestURI}}, false, false},
		// The GET compares the hint with the signed-in user, with any
		// prompt (TestAuthorizePromptNoneIDTokenHint): only it can.
		{"id_token_hint", withHint(tok, ""), true, false},
		{"id_token_hint, prompt=none", withHint(tok, "none"), true, false},
		{"another user's id_token_hint", withHint(bobs, ""), true, true},
		// A prompt the GET refuses reads no hint.
		{"id_token_hint, prompt refused", withHint(tok, "bogus"), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The cross-site form post: no cookie goes with it, and what
			// it answers lands in the browser's jar.
			resp, err := e.browser().PostForm(e.url(pathAuthorize, nil), tt.form)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			c.Jar.SetCookies(issuerURL, resp.Cookies())
			if got := sessionCookie(); got != signedIn {
				t.Errorf("session cookie after a cross-site POST = %q, want the signed-in one kept", got)
			}
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || resp.StatusCode != http.StatusSeeOther || loc.Path != pathAuthorize {
				t.Fatalf("POST /authorize without a cookie = %d Location %q, want 303 to GET /authorize", resp.StatusCode, resp.Header.Get("Location"))
			}
			if loc.Query().Has("id_token_hint") != tt.hintKept {
				t.Errorf("POST /authorize without a cookie: Location %q, want id_token_hint in it %v", loc, tt.hintKept)
			}
			if n := e.count(bucketPAR); tt.form.Has("request_uri") && n != 1 {
				t.Errorf("pushed requests after the POST = %d, want 1 (not consumed)", n)
			}
			// The browser follows with a GET, which carries the cookie:
			// remembered consent answers with a code at once.
			resp, err = c.Get(e.srv.URL + loc.String())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got, _ := url.Parse(resp.Header.Get("Location"))
			switch {
			case tt.signIn:
				// bob's hint in alice's browser: not a code for alice.
				if !strings.HasPrefix(got.String(), pathLogin+"?req=") {
					t.Errorf("GET after the POST: Location %q, want the sign-in page", got)
				}
			case tt.form.Get("prompt") == "bogus":
				if got.Query().Get("error") != "invalid_request" {
					t.Errorf("GET after the POST: Location %q, want invalid_request", got)
				}
			case !strings.HasPrefix(got.String(), bWebRedirect+"?") || got.Query().Get("code") == "":
				t.Errorf("GET after the POST: Location %q, want a code at %s", got, bWebRedirect)
			}
		})
	}
	resp, err := c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || strings.Contains(body, `id="login"`) {
		t.Errorf("GET /apps after the POSTs = %d, want the signed-in apps page", resp.StatusCode)
	}
}

// TestAuthorizeRequestURIFetchesNothing: the metadata says
// request_uri_parameter_supported false (OpenID Connect Discovery reads
// its absence as true): a request_uri that is a URL, not one a push
// returned, is answered with request_uri_not_supported (OpenID Connect
// Core 3.1.2.6) at the client's redirect URI, as request objects are
// with request_not_supported, and nothing is fetched from it.
func TestAuthorizeRequestURIFetchesNothing(t *testing.T) {
	e := newBrowserEnv(t, nil)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	p := webAuthParams(testChallenge)
	p.Set("request_uri", srv.URL+"/request.jwt")
	loc := locationOf(t, e.browser(), e.url(pathAuthorize, p))
	if q := loc.Query(); !strings.HasPrefix(loc.String(), bWebRedirect+"?") || q.Get("error") != "request_uri_not_supported" ||
		q.Get("state") != "st-123" || q.Get("iss") != e.iss.URL() {
		t.Errorf("request_uri of a URL: Location %s, want request_uri_not_supported with state and iss at the redirect URI", loc)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("request_uri fetched %d times", n)
	}
}

// TestAuthorizePromptNoneIDTokenHint: with prompt=none, id_token_hint
// names the user the client expects signed in (OpenID Connect Core
// 3.1.2.1): another user's session answers login_required, not a code
// for that other user; so does a hint that is no ID token this issuer
// gave the client (garbage, an access token, the user's ID token given
// to another client, one signed by a key retired since). The hint's own
// user, its token expired or not, gets the code. Without prompt=none a
// hint of another user asks for a sign-in.
func TestAuthorizePromptNoneIDTokenHint(t *testing.T) {
	e := newBrowserEnv(t, nil)
	p := webAuthParams(testChallenge)
	p.Set("scope", "openid files:read")
	signIn := func(user string) (*http.Client, answer) { return e.signInWithIDToken(t, user, p) }
	_, bob := signIn("bob")
	other := authParams(testChallenge)
	other.Set("scope", "openid files:read")
	_, otherClients := e.signInWithIDToken(t, bUser, other)
	alice, own := signIn(bUser)
	authorizeAs := func(c *http.Client, prompt, hint string) url.Values {
		t.Helper()
		q := maps.Clone(p)
		if prompt != "" {
			q.Set("prompt", prompt)
		}
		q.Set("id_token_hint", hint)
		resp, err := c.Get(e.url(pathAuthorize, q))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || !strings.HasPrefix(loc.String(), bWebRedirect+"?") {
			t.Fatalf("prompt=%q: %d Location %q, want the client's redirect URI", prompt, resp.StatusCode, resp.Header.Get("Location"))
		}
		return loc.Query()
	}
	silent := func(hint string) url.Values { t.Helper(); return authorizeAs(alice, "none", hint) }
	for _, tt := range []struct{ name, hint string }{
		{"another user's ID token", bob.str("id_token")},
		{"not a JWT", "garbage"},
		{"an access token", own.str("access_token")},
		{"the user's ID token given to another client", otherClients.str("id_token")},
	} {
		if q := silent(tt.hint); q.Get("error") != "login_required" || q.Get("code") != "" {
			t.Errorf("%s as hint: %v, want login_required and no code", tt.name, q)
		}
	}
	if q := silent(own.str("id_token")); q.Get("code") == "" {
		t.Errorf("the signed-in user's own ID token as hint: %v, want a code", q)
	}
	// Without prompt=none, a hint naming another user than the one signed
	// in sends the browser to the sign-in page: a code for whoever is
	// signed in is not the answer the hint asked for (Core 3.1.2.1: "is
	// logged in or is logged in by the request"). The own hint gets a code.
	q := maps.Clone(p)
	q.Set("id_token_hint", bob.str("id_token"))
	if loc := locationOf(t, alice, e.url(pathAuthorize, q)); !strings.HasPrefix(loc.String(), pathLogin+"?req=") {
		t.Errorf("another user's ID token as hint without prompt=none: Location %s, want the sign-in page", loc)
	}
	// So does a hint it cannot verify (README: "such a hint"), which names
	// nobody, rather than a code for whoever is signed in.
	for _, tt := range []struct{ name, hint string }{
		{"not a JWT", "garbage"},
		{"the user's ID token given to another client", otherClients.str("id_token")},
	} {
		q.Set("id_token_hint", tt.hint)
		if loc := locationOf(t, alice, e.url(pathAuthorize, q)); !strings.HasPrefix(loc.String(), pathLogin+"?req=") {
			t.Errorf("%s as hint without prompt=none: Location %s, want the sign-in page", tt.name, loc)
		}
	}
	if q := authorizeAs(alice, "", own.str("id_token")); q.Get("code") == "" {
		t.Errorf("the signed-in user's own ID token as hint without prompt=none: %v, want a code", q)
	}
	e.clock.Advance(2 * time.Hour) // the ID token expired; the session lives on
	if q := silent(own.str("id_token")); q.Get("code") == "" {
		t.Errorf("the signed-in user's own (expired) ID token as hint: %v, want a code", q)
	}

	// The key that signed own retires and is no longer published: the hint
	// cannot be verified, and a session of its user no longer counts for it.
	if _, err := e.iss.RotateSigningKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(keyPublishDelay + time.Second)
	alice, fresh := signIn(bUser) // signed by the new key
	e.clock.Advance(3 * time.Hour)
	if q := silent(fresh.str("id_token")); q.Get("code") == "" {
		t.Fatalf("the user's ID token of the current key as hint: %v, want a code", q)
	}
	if q := silent(own.str("id_token")); q.Get("error") != "login_required" || q.Get("code") != "" {
		t.Errorf("the user's ID token signed by a retired key as hint: %v, want login_required and no code", q)
	}
}

// TestAuthorizeIDTokenHintSignInAsOther: a request whose id_token_hint
// names one user, answered by a sign-in as another, gets login_required
// at the redirect URI and no code (OpenID Connect Core 3.1.2.2: a
// positive answer only when the hint's user "is logged in or is logged
// in by the request", otherwise it SHOULD return an error). A sign-in as
// the hinted user gets the code, a signed-in browser of another user
// too once it signs in as that user; a hint that is no ID token this
// issuer can read names nobody, and whoever signs in gets the code.
func TestAuthorizeIDTokenHintSignInAsOther(t *testing.T) {
	e := newBrowserEnv(t, nil)
	p := webAuthParams(testChallenge)
	p.Set("scope", "openid files:read")
	_, bob := e.signInWithIDToken(t, "bob", p)
	alice, _ := e.signInWithIDToken(t, bUser, p)
	hinted := maps.Clone(p)
	hinted.Set("id_token_hint", bob.str("id_token"))
	for _, tt := range []struct {
		name    string
		browser *http.Client
		user    string
		params  url.Values
		code    bool
	}{
		{"another user signs in", e.browser(), bUser, hinted, false},
		{"another user's session signs in as itself", alice, bUser, hinted, false},
		{"the hinted user signs in", e.browser(), "bob", hinted, true},
		{"another user's session signs in as the hinted one", alice, "bob", hinted, true},
		{"a hint naming nobody", e.browser(), bUser, func() url.Values {
			q := maps.Clone(p)
			q.Set("id_token_hint", "garbage")
			return q
		}(), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cb, err := e.robot(tt.browser, e.url(pathAuthorize, tt.params), bWebRedirect, tt.user, bPassword, "approve")
			if err != nil {
				t.Fatal(err)
			}
			q := cb.Query()
			switch {
			case tt.code && q.Get("code") == "":
				t.Errorf("redirect %v, want a code", q)
			case !tt.code && (q.Get("error") != "login_required" || q.Get("code") != "" || q.Get("state") != p.Get("state") || q.Get("iss") == ""):
				t.Errorf("redirect %v, want login_required with state and iss, no code", q)
			}
		})
	}
}

// signInWithIDToken signs user in, in a new browser, through the
// authorization request p (with openid in its scope), redeems the code
// and returns the browser and the token answer, ID token included.
func (e *testEnv) signInWithIDToken(t *testing.T, user string, p url.Values) (*http.Client, answer) {
	t.Helper()
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // RFC 7636 appendix B, testChallenge's
	c := e.browser()
	redirect, client := p.Get("redirect_uri"), p.Get("client_id")
	cb, err := e.robot(c, e.url(pathAuthorize, p), redirect, user, bPassword, "approve")
	if err != nil {
		t.Fatalf("robot %s: %v", user, err)
	}
	a := e.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")},
		"redirect_uri": {redirect}, "code_verifier": {verifier}, "client_id": {client}}, "")
	if a.str("id_token") == "" {
		t.Fatalf("%s's token answer: %s", user, a.raw)
	}
	return c, a
}

// TestAuthorizationScopeRefusalListsNoScopes: anyone may send a client's
// authorization request, a public client's push to /par answered to the
// sender, the redirect passing through the sender's browser; invalid_scope
// names the resource there, not the scopes the client may get (which
// client_credentials tells the authenticated client: TestAgentOwnTokenFailures).
func TestAuthorizationScopeRefusalListsNoScopes(t *testing.T) {
	check := func(t *testing.T, what, code, desc string) {
		t.Helper()
		if code != "invalid_scope" || !strings.HasPrefix(desc, "none of the requested scopes may be granted for ") || strings.Contains(desc, "may get") {
			t.Errorf("%s = %s %q, want invalid_scope naming the resource only", what, code, desc)
		}
	}
	t.Run("push for a public client", func(t *testing.T) {
		e := newTokEnv(t)
		a := e.post(t, pathPAR, parForm(url.Values{"scope": {"nope"}}), "")
		check(t, "unauthenticated push", a.str("error"), a.str("error_description"))
	})
	t.Run("authorization request", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		p := authParams(testChallenge)
		p.Set("scope", "nope")
		loc := locationOf(t, e.browser(), e.url(pathAuthorize, p))
		check(t, "redirect", loc.Query().Get("error"), loc.Query().Get("error_description"))
	})
}

// locationOf is the Location of c's answer to a GET of u.
func locationOf(t *testing.T, c *http.Client, u string) *url.URL {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// TestAuthorizeWithoutScope: an authorization request without scope gets
// RFC 6749 section 3.3's pre-defined default, every scope of the resource
// that the client and the user's groups allow (what MCP clients ask for
// when a challenge names none: the resource's scopes_supported), shown on
// the consent page; a consent remembered for fewer does not cover it
// (prompt=none: consent_required). A self-registered client's scope is
// echoed and limits nothing ("" as if left out): the user's groups and
// consent decide.
func TestAuthorizeWithoutScope(t *testing.T) {
	e := newBrowserEnv(t, nil)
	const cb = "https://rp.example.com/cb"
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // testChallenge's
	register := func(scope string) (string, map[string]any) {
		t.Helper()
		resp, out := e.register(t, `{"client_name":"RP","redirect_uris":["`+cb+`"],"token_endpoint_auth_method":"none"`+scope+`}`)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("register = %d %v", resp.StatusCode, out)
		}
		return out["client_id"].(string), out
	}
	if _, out := register(`,"scope":""`); out["scope"] != nil {
		t.Errorf("registration with scope \"\" answers scope %v, want none, as when left out", out["scope"])
	}
	id, out := register(`,"scope":"files:read"`)
	if out["scope"] != "files:read" {
		t.Errorf("registration answers scope %v, want files:read echoed", out["scope"])
	}
	params := func(kv ...string) url.Values {
		p := webAuthParams(testChallenge)
		p.Set("client_id", id)
		p.Set("redirect_uri", cb)
		p.Del("scope")
		for n := 0; n < len(kv); n += 2 {
			p.Set(kv[n], kv[n+1])
		}
		return p
	}
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, params("scope", "files:read")), cb, bUser, bPassword, "approve"); err != nil {
		t.Fatal(err)
	}
	if loc := locationOf(t, c, e.url(pathAuthorize, params("prompt", "none"))); loc.Query().Get("error") != "consent_required" {
		t.Errorf("prompt=none without scope, consent remembered for files:read: Location %s, want consent_required", loc)
	}
	loc, err := e.robot(c, e.url(pathAuthorize, params()), cb, bUser, bPassword, "approve")
	if err != nil {
		t.Fatal(err)
	}
	a := e.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {cb}, "code_verifier": {verifier}, "client_id": {id}}, "")
	if a.str("scope") != "files:read files:write" {
		t.Errorf("token without scope asked = %d %s, want scope \"files:read files:write\" (every scope alice's groups allow)", a.status, a.raw)
	}
}
