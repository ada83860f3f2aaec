package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

const (
	logoutURI     = "https://app.example.com/bye"
	logoutURIQ    = "https://app.example.com/bye?from=op" // a registered URI with a query of its own
	logoutDCRURI  = "https://dcr.example.com/bye"
	logoutWebHost = "https://app.example.com"
)

// newLogoutEnv is newBrowserEnv with post-logout redirect URIs for the web
// client (the test client has none).
func newLogoutEnv(t *testing.T) *testEnv {
	return newBrowserEnv(t, func(c *Config) {
		c.Clients[1].PostLogoutRedirectURIs = []string{logoutURI, logoutURIQ}
	})
}

// idTokenParams is the web client's authorization request for an ID token.
func idTokenParams() url.Values {
	p := webAuthParams(testChallenge)
	p.Set("scope", "openid files:read")
	return p
}

// logoutGet sends the browser to /logout with q and returns the answer
// and its page.
func (e *testEnv) logoutGet(t *testing.T, c *http.Client, q url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(e.url(pathLogout, q))
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

// signedIn reports whether c's session is signed in: /logout asks it to
// confirm rather than saying no one is.
func (e *testEnv) signedIn(t *testing.T, c *http.Client) bool {
	t.Helper()
	_, body := e.logoutGet(t, c, nil)
	return strings.Contains(body, `id="logout"`)
}

// forgeIDToken returns an ID token with claims like those of valid (same
// kid) signed by a key this issuer never had.
func forgeIDToken(t *testing.T, valid string, claims jwt.MapClaims) string {
	t.Helper()
	head, _, _ := strings.Cut(valid, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = h["kid"]
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// signIDTokenLike signs claims with the key that signs e's ID tokens for
// the web client, typed as an ID token is.
func signIDTokenLike(t *testing.T, e *testEnv, claims jwt.MapClaims) string {
	t.Helper()
	c, err := e.iss.dir.lookupClient(t.Context(), bWebClientID)
	if err != nil {
		t.Fatal(err)
	}
	k, err := e.iss.idTokenSigner(t.Context(), c, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tok := jwt.NewWithClaims(k.method, claims)
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.private)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLogoutRefused: a logout request with any invalid parameter gets an
// error page (400), never a redirect, and the session stays, whether it
// came by GET, by an application's POST, or in the confirmation form
// (which is validated again, its hidden fields being only the request):
// OpenID Connect RP-Initiated Logout 1.0 sections 2 to 4.
func TestLogoutRefused(t *testing.T) {
	e := newLogoutEnv(t)
	alice, tok := e.signInWithIDToken(t, bUser, idTokenParams())
	hint := tok.str("id_token")
	_, testApp := e.signInWithIDToken(t, bUser, func() url.Values {
		p := authParams(testChallenge)
		p.Set("scope", "openid files:read")
		return p
	}())
	forged := forgeIDToken(t, hint, jwt.MapClaims{"iss": e.srv.URL, "sub": bUser, "aud": bWebClientID, "exp": time.Now().Add(time.Hour).Unix()})
	head, _, _ := strings.Cut(hint, ".")
	foreign := forgeIDToken(t, hint, jwt.MapClaims{"iss": "https://other.example.com", "sub": bUser, "aud": bWebClientID})
	_, body, _ := strings.Cut(testApp.str("id_token"), ".")
	payloadSwapped := head + "." + body + "." + strings.Split(hint, ".")[2]
	// Another issuer's ID token signed with this issuer's own key, as
	// another mcp_issuer site on the same database would sign it: refused
	// for its iss, not its signature.
	otherIssuer := signIDTokenLike(t, e, jwt.MapClaims{"iss": "https://other.example.com", "sub": bUser, "aud": bWebClientID, "exp": time.Now().Add(time.Hour).Unix()})

	tests := []struct {
		name string
		q    url.Values
		want string // in the page
	}{
		{"post_logout_redirect_uri alone", url.Values{"post_logout_redirect_uri": {logoutURI}}, "needs an id_token_hint or a client_id"},
		{"post_logout_redirect_uri with state alone", url.Values{"post_logout_redirect_uri": {logoutURI}, "state": {"s"}}, "needs an id_token_hint or a client_id"},
		{"a redirect_uri, not a post-logout one", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {bWebRedirect}}, "not registered"},
		{"another client's URI", url.Values{"client_id": {bClientID}, "post_logout_redirect_uri": {logoutURI}}, "not registered"},
		{"a prefix", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {logoutURI + "/more"}}, "not registered"},
		{"a trailing slash", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {logoutURI + "/"}}, "not registered"},
		{"another case", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {"https://APP.example.com/bye"}}, "not registered"},
		{"another query", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {logoutURI + "?from=evil"}}, "not registered"},
		{"hint not a JWT", url.Values{"id_token_hint": {"garbage"}}, "not an ID token this server issued"},
		{"hint an access token", url.Values{"id_token_hint": {tok.str("access_token")}}, "not an ID token this server issued"},
		{"hint forged", url.Values{"id_token_hint": {forged}, "post_logout_redirect_uri": {logoutURI}}, "not an ID token this server issued"},
		{"hint of another issuer", url.Values{"id_token_hint": {foreign}, "post_logout_redirect_uri": {logoutURI}}, "not an ID token this server issued"},
		{"hint of another issuer, signed with this issuer's key", url.Values{"id_token_hint": {otherIssuer}, "post_logout_redirect_uri": {logoutURI}}, "not an ID token this server issued"},
		{"hint with another token's payload", url.Values{"id_token_hint": {payloadSwapped}}, "not an ID token this server issued"},
		{"hint for another client than client_id", url.Values{"id_token_hint": {testApp.str("id_token")}, "client_id": {bWebClientID}, "post_logout_redirect_uri": {logoutURI}}, "not issued to the application"},
		{"unknown client_id", url.Values{"client_id": {"nobody"}}, "not known"},
		{"state repeated", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {logoutURI}, "state": {"a", "b"}}, "repeated"},
		{"post_logout_redirect_uri repeated", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {logoutURI, logoutURIQ}}, "repeated"},
		{"repeated, once empty", url.Values{"client_id": {bWebClientID, ""}}, "repeated"},
		{"state too long", url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {logoutURI}, "state": {strings.Repeat("s", maxAuthorizeParam+1)}}, "too long"},
	}
	refused := func(t *testing.T, how string, resp *http.Response, page, want string) {
		t.Helper()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(page, want) {
			t.Errorf("%s: %d Location %q, want 400 and no redirect, with %q in: %s", how, resp.StatusCode, resp.Header.Get("Location"), want, page)
		}
		if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: page headers %v", how, resp.Header)
		}
		if !e.signedIn(t, alice) {
			t.Fatalf("%s: the session ended", how)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, page := e.logoutGet(t, alice, tt.q)
			refused(t, "GET", resp, page, tt.want)
			resp, page = e.postPage(t, alice, pathLogout, tt.q)
			refused(t, "POST", resp, page, tt.want)
			// The confirmation form, its CSRF token right, the request
			// changed in it.
			_, page = e.logoutGet(t, alice, nil)
			f := findForm(t, page, "logout")
			for k, v := range tt.q {
				f.hidden[k] = v
			}
			f.hidden.Set("action", "logout")
			resp, page = e.postPage(t, alice, f.action, f.hidden)
			refused(t, "confirmation", resp, page, tt.want)
		})
	}
}

// TestLogoutConfirmed: a valid request (an ID token hint, expired or not,
// or client_id, with a registered post_logout_redirect_uri and state)
// shows the signed-in user a CSRF-protected confirmation naming the
// application and where it sends the browser; "stay" keeps the session
// and redirects nowhere; "sign out" ends the session and answers 303 to
// the URI with state added to its own query; /authorize then asks to
// sign in again.
func TestLogoutConfirmed(t *testing.T) {
	for _, tt := range []struct {
		name    string
		request func(hint string) url.Values
		want    string // Location after the sign-out
	}{
		{"hint", func(h string) url.Values {
			return url.Values{"id_token_hint": {h}, "post_logout_redirect_uri": {logoutURI}, "state": {"st 1&x"}}
		}, logoutURI + "?state=st+1%26x"},
		{"hint and client_id, the URI's own query kept", func(h string) url.Values {
			return url.Values{"id_token_hint": {h}, "client_id": {bWebClientID}, "post_logout_redirect_uri": {logoutURIQ}, "state": {"st2"}}
		}, logoutURIQ + "&state=st2"},
		{"client_id, no state", func(string) url.Values {
			return url.Values{"client_id": {bWebClientID}, "post_logout_redirect_uri": {logoutURIQ}, "logout_hint": {bUser}, "ui_locales": {"de en"}}
		}, logoutURIQ},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newLogoutEnv(t)
			alice, tok := e.signInWithIDToken(t, bUser, idTokenParams())
			e.clock.Advance(2 * time.Hour) // the ID token has expired; the session lives
			q := tt.request(tok.str("id_token"))
			resp, page := e.logoutGet(t, alice, q)
			if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Web App") || !strings.Contains(page, "app.example.com") {
				t.Fatalf("GET /logout: %d, want 200 and a page naming the client and the host it returns to: %s", resp.StatusCode, page)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "form-action 'self' "+logoutWebHost+";") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("CSP %q, want the return origin in form-action and no framing", csp)
			}
			if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("page headers %v", resp.Header)
			}
			f := findForm(t, page, "logout")
			for k := range q {
				if f.hidden.Get(k) != q.Get(k) {
					t.Errorf("form field %s = %q, want %q", k, f.hidden.Get(k), q.Get(k))
				}
			}
			if want := []string{"action=stay", "action=logout"}; strings.Join(f.buttons, " ") != strings.Join(want, " ") {
				t.Errorf("buttons %v, want %v", f.buttons, want)
			}
			// Without the session's CSRF token nothing happens.
			bad := url.Values{}
			for k, v := range f.hidden {
				bad[k] = v
			}
			bad.Set(csrfField, "wrong")
			if resp, _ := e.postPage(t, alice, f.action, bad); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" || !e.signedIn(t, alice) {
				t.Fatalf("confirmation with a wrong CSRF token: %d Location %q, want 403, no redirect, the session kept", resp.StatusCode, resp.Header.Get("Location"))
			}
			stay := url.Values{"action": {"stay"}}
			for k, v := range f.hidden {
				stay[k] = v
			}
			stay.Set("action", "stay")
			if resp, page := e.postPage(t, alice, f.action, stay); resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || !strings.Contains(page, "still signed in") || !e.signedIn(t, alice) {
				t.Fatalf("stay signed in: %d Location %q, want 200, no redirect, the session kept: %s", resp.StatusCode, resp.Header.Get("Location"), page)
			}
			f.hidden.Set("action", "logout")
			resp, _ = e.postPage(t, alice, f.action, f.hidden)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != tt.want {
				t.Fatalf("sign out: %d Location %q, want 303 to %s", resp.StatusCode, resp.Header.Get("Location"), tt.want)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("redirect headers %v", resp.Header)
			}
			if n := e.count(bucketSessions); n != 0 {
				t.Errorf("sessions after sign-out = %d, want 0", n)
			}
			resp, err := alice.Get(e.url(pathAuthorize, webAuthParams(testChallenge)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pathLogin+"?") {
				t.Errorf("authorize after sign-out: Location %q, want the sign-in page", loc)
			}
		})
	}
}

// TestLogoutConfirmedTwice: a double-click on Sign out sends the
// confirmation twice, the second before the first one's answer arrives,
// with the cookie of the session the first one ends; the browser shows
// the second answer only. That answer is the one for no one signed in
// (as the GET's): the operator's client gets its post_logout_redirect_uri
// with state, a sign-out without a client the page saying so, not "Form
// expired" (try again) for a user already signed out.
func TestLogoutConfirmedTwice(t *testing.T) {
	for _, tt := range []struct {
		name string
		q    url.Values
		want string // Location of the second answer, "" for a page
	}{
		{"client", url.Values{"client_id": {bWebClientID}, "post_logout_redirect_uri": {logoutURI}, "state": {"s"}}, logoutURI + "?state=s"},
		{"no client", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newLogoutEnv(t)
			alice, _ := e.signInWithIDToken(t, bUser, idTokenParams())
			_, page := e.logoutGet(t, alice, tt.q)
			f := findForm(t, page, "logout")
			f.hidden.Set("action", "logout")
			// The browser as it sends the second click: the first one's
			// answer, which clears the cookie, not yet arrived.
			twin := e.browser()
			u, err := url.Parse(e.srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			twin.Jar.SetCookies(u, alice.Jar.Cookies(u))
			if resp, _ := e.postPage(t, alice, f.action, f.hidden); resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusOK {
				t.Fatalf("first click: %d, want the sign-out", resp.StatusCode)
			}
			resp, page := e.postPage(t, twin, f.action, f.hidden)
			switch {
			case tt.want != "" && (resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != tt.want):
				t.Errorf("second click: %d Location %q, want 303 to %s: %s", resp.StatusCode, resp.Header.Get("Location"), tt.want, page)
			case tt.want == "" && (resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || !strings.Contains(page, "not signed in")):
				t.Errorf("second click: %d Location %q, want 200 and the page saying no one is signed in: %s", resp.StatusCode, resp.Header.Get("Location"), page)
			}
			if resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Frame-Options") != "DENY" {
				t.Errorf("second click: headers %v", resp.Header)
			}
			if e.signedIn(t, alice) || e.signedIn(t, twin) {
				t.Error("signed in after the sign-out")
			}
		})
	}
}

// TestLogoutOtherUser: an ID token hint naming another user than the one
// signed in (a stale one, say) is valid: the page names who is signed in,
// says the application named someone else, and signing out ends that
// session; nothing happens without the user's confirmation.
func TestLogoutOtherUser(t *testing.T) {
	e := newLogoutEnv(t)
	_, bob := e.signInWithIDToken(t, "bob", idTokenParams())
	alice, _ := e.signInWithIDToken(t, bUser, idTokenParams())
	q := url.Values{"id_token_hint": {bob.str("id_token")}, "post_logout_redirect_uri": {logoutURI}, "state": {"s"}}
	resp, page := e.logoutGet(t, alice, q)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "<strong>"+bUser+"</strong>") || !strings.Contains(page, "another account") {
		t.Fatalf("GET /logout: %d, want the confirmation naming %s and warning of the other account: %s", resp.StatusCode, bUser, page)
	}
	if !e.signedIn(t, alice) {
		t.Fatal("the session ended unconfirmed")
	}
	f := findForm(t, page, "logout")
	f.hidden.Set("action", "logout")
	resp, _ = e.postPage(t, alice, f.action, f.hidden)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != logoutURI+"?state=s" || e.signedIn(t, alice) {
		t.Errorf("sign out: %d Location %q, want 303 to %s?state=s and the session ended", resp.StatusCode, resp.Header.Get("Location"), logoutURI)
	}
}

// TestLogoutNotSignedIn: with no one signed in there is no session to
// end, which is no error (section 4); a valid request of an operator's
// client goes on to its post_logout_redirect_uri with state, an invalid
// one still gets the error page. A self-registered client's (anyone can
// register any URI) gets a page with a link instead: /logout redirects
// unprompted to no URI a stranger chose.
func TestLogoutNotSignedIn(t *testing.T) {
	e := newLogoutEnv(t)
	_, tok := e.signInWithIDToken(t, bUser, idTokenParams())
	fresh := e.browser()
	resp, _ := e.logoutGet(t, fresh, url.Values{"id_token_hint": {tok.str("id_token")}, "post_logout_redirect_uri": {logoutURI}, "state": {"s"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != logoutURI+"?state=s" {
		t.Errorf("valid request, no session: %d Location %q, want 303 to %s?state=s", resp.StatusCode, resp.Header.Get("Location"), logoutURI)
	}
	resp, _ = e.logoutGet(t, fresh, url.Values{"id_token_hint": {"garbage"}, "post_logout_redirect_uri": {logoutURI}})
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
		t.Errorf("invalid request, no session: %d Location %q, want 400 and no redirect", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := e.logoutGet(t, fresh, nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "not signed in") {
		t.Errorf("no request, no session: %d %s", resp.StatusCode, page)
	}

	reg, out := e.register(t, `{"client_name":"DCR App","redirect_uris":["https://dcr.example.com/cb"],"post_logout_redirect_uris":["`+logoutDCRURI+`"],"token_endpoint_auth_method":"none"}`)
	if reg.StatusCode != http.StatusCreated {
		t.Fatalf("register: %d %v", reg.StatusCode, out)
	}
	dcr, _ := out["client_id"].(string)
	q := url.Values{"client_id": {dcr}, "post_logout_redirect_uri": {logoutDCRURI}, "state": {"s"}}
	resp, page = e.logoutGet(t, fresh, q)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Location") != "" || !strings.Contains(page, `href="`+logoutDCRURI+`?state=s"`) {
		t.Errorf("self-registered client, no session: %d Location %q, want 200, no redirect, a link to %s?state=s: %s", resp.StatusCode, resp.Header.Get("Location"), logoutDCRURI, page)
	}
	// Signed in, the user confirms on a page naming where it goes.
	p := idTokenParams()
	p.Set("client_id", dcr)
	p.Set("redirect_uri", "https://dcr.example.com/cb")
	c, _ := e.signInWithIDToken(t, bUser, p)
	_, page = e.logoutGet(t, c, q)
	if !strings.Contains(page, "dcr.example.com") || !strings.Contains(page, "registered itself") {
		t.Errorf("confirmation for a self-registered client: %s", page)
	}
	f := findForm(t, page, "logout")
	f.hidden.Set("action", "logout")
	resp, _ = e.postPage(t, c, f.action, f.hidden)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != logoutDCRURI+"?state=s" {
		t.Errorf("confirmed sign-out, self-registered client: %d Location %q, want 303 to %s?state=s", resp.StatusCode, resp.Header.Get("Location"), logoutDCRURI)
	}
}

// TestLogoutPostWithoutCookie: an application's POST (allowed by section
// 2) from another site arrives without the SameSite=Lax session cookie;
// it is sent on as the GET of the same request, which carries it, so that
// a signed-in user is asked rather than sent on as if signed out.
// TestLogoutQueryUnreadable: a GET whose query is not form-encoded (a
// ';' separator, a bad escape) is refused as /authorize's is, not read
// without the pair URL.Query drops: the request would go on, sending
// the browser where another reader of the URL would see other
// parameters (here the state dropped).
func TestLogoutQueryUnreadable(t *testing.T) {
	e := newLogoutEnv(t)
	alice, _ := e.signInWithIDToken(t, bUser, idTokenParams())
	good := "client_id=" + url.QueryEscape(bWebClientID) + "&post_logout_redirect_uri=" + url.QueryEscape(logoutURI)
	for _, tt := range []struct{ name, query string }{
		{"semicolon separator", good + "&state=a;state=b"},
		{"bad escape", good + "&state=%zz"},
		{"semicolon in the redirect", "client_id=" + url.QueryEscape(bWebClientID) + "&post_logout_redirect_uri=" + url.QueryEscape(logoutURI) + ";x=1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				who string
				c   *http.Client
			}{{"signed in", alice}, {"no session", e.browser()}} {
				resp, err := c.c.Get(e.srv.URL + pathLogout + "?" + tt.query)
				if err != nil {
					t.Fatal(err)
				}
				page := readBody(t, resp)
				if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(page, "could not be read") {
					t.Errorf("%s: %d Location %q, want 400, no redirect, \"could not be read\": %s", c.who, resp.StatusCode, resp.Header.Get("Location"), page)
				}
			}
			if !e.signedIn(t, alice) {
				t.Fatal("the session ended")
			}
		})
	}
}

// The ID token of such a POST stays out of that GET's URL, which the
// browser's history and access logs keep: it is checked at the POST and
// replaced by the client it names (client_id), all the GET needs of it.
func TestLogoutPostWithoutCookie(t *testing.T) {
	e := newLogoutEnv(t)
	q := url.Values{"client_id": {bWebClientID}, "post_logout_redirect_uri": {logoutURI}, "state": {"s"}}
	resp, _ := e.postPage(t, e.browser(), pathLogout, q)
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusSeeOther || loc.Path != pathLogout || loc.Query().Encode() != q.Encode() {
		t.Errorf("cross-site POST: %d Location %q, want 303 to GET %s?%s", resp.StatusCode, resp.Header.Get("Location"), pathLogout, q.Encode())
	}

	alice, tok := e.signInWithIDToken(t, bUser, idTokenParams())
	hint := tok.str("id_token")
	_, sig, _ := strings.Cut(hint[strings.LastIndex(hint, "."):], ".")
	withHint := url.Values{"id_token_hint": {hint}, "post_logout_redirect_uri": {logoutURI}, "state": {"s"}}
	resp, _ = e.postPage(t, e.browser(), pathLogout, withHint)
	loc, err = url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusSeeOther || loc.Path != pathLogout || loc.Query().Encode() != q.Encode() || strings.Contains(loc.String(), sig) {
		t.Fatalf("cross-site POST with id_token_hint: %d Location %q, want 303 to GET %s?%s, without the ID token", resp.StatusCode, resp.Header.Get("Location"), pathLogout, q.Encode())
	}
	// The browser follows it with its cookie: the user is asked, and
	// sent back with state once confirmed.
	resp, page := e.logoutGet(t, alice, loc.Query())
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="logout"`) || strings.Contains(page, sig) {
		t.Fatalf("GET it redirected to: %d, want the confirmation: %s", resp.StatusCode, page)
	}
	f := findForm(t, page, "logout")
	f.hidden.Set("action", "logout")
	resp, _ = e.postPage(t, alice, f.action, f.hidden)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != logoutURI+"?state=s" || e.signedIn(t, alice) {
		t.Errorf("confirmed: %d Location %q, want 303 to %s?state=s and the session ended", resp.StatusCode, resp.Header.Get("Location"), logoutURI)
	}

	// A request the GET would refuse is refused at the POST: no
	// redirect, and so no URL with the hint either.
	for _, bad := range []url.Values{
		{"id_token_hint": {"garbage"}, "post_logout_redirect_uri": {logoutURI}},
		{"id_token_hint": {hint}, "post_logout_redirect_uri": {logoutURI + "/more"}},
		{"id_token_hint": {hint}, "client_id": {bClientID}},
	} {
		resp, page := e.postPage(t, e.browser(), pathLogout, bad)
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || strings.Contains(page, sig) {
			t.Errorf("cross-site POST %v: %d Location %q, want 400 and no redirect: %s", bad, resp.StatusCode, resp.Header.Get("Location"), page)
		}
	}
}

// TestLogoutConfirmationCrossSite: a page of another site posting the
// sign-out confirmation form (any csrf_token) comes without the
// SameSite=Lax session cookie; the signed-in user is neither told "You
// are not signed in" nor sent on to the application as if signed out:
// the POST goes on as the GET of the request, which asks them.
func TestLogoutConfirmationCrossSite(t *testing.T) {
	for _, tt := range []struct {
		name string
		q    url.Values
	}{
		{"client", url.Values{"client_id": {bWebClientID}, "post_logout_redirect_uri": {logoutURI}, "state": {"s"}}},
		{"no client", url.Values{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newLogoutEnv(t)
			alice, _ := e.signInWithIDToken(t, bUser, idTokenParams())
			form := url.Values{csrfField: {"forged"}, "action": {"logout"}}
			for k, v := range tt.q {
				form[k] = v
			}
			resp, page := e.postPage(t, e.browser(), pathLogout, form)
			loc, err := url.Parse(resp.Header.Get("Location"))
			if err != nil || resp.StatusCode != http.StatusSeeOther || loc.Path != pathLogout || loc.Query().Encode() != tt.q.Encode() {
				t.Fatalf("cross-site confirmation: %d Location %q, want 303 to GET %s?%s: %s", resp.StatusCode, resp.Header.Get("Location"), pathLogout, tt.q.Encode(), page)
			}
			resp, page = e.logoutGet(t, alice, loc.Query())
			if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="logout"`) {
				t.Errorf("GET it redirected to: %d, want the confirmation: %s", resp.StatusCode, page)
			}
			if !e.signedIn(t, alice) {
				t.Error("the session ended unconfirmed")
			}
		})
	}
}

// TestLogoutStoredClients: the post-logout redirect URIs of the clients
// the store keeps, an operator's (admin API) and a self-registered one
// (DCR), come back from a bbolt file and from PostgreSQL and are honoured:
// with no one signed in, the operator's client is sent on at once, the
// self-registered one gets a page with a link.
func TestLogoutStoredClients(t *testing.T) {
	for _, tt := range []struct {
		name string
		open func(t *testing.T, clock *storetest.Clock) store.Store
	}{
		{"bolt", func(t *testing.T, clock *storetest.Clock) store.Store {
			st, err := bolt.Open(filepath.Join(t.TempDir(), "mcp-auth.db"), bolt.Options{Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		}},
		{"postgres", func(t *testing.T, clock *storetest.Clock) store.Store {
			st, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Options{Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			e := newEnv(t, tt.open(t, clock), clock)
			e.serve(Config{Issuer: e.srv.URL, Now: clock.Now})
			err := e.iss.PutClient(context.Background(), Client{ID: "rp", TokenEndpointAuthMethod: authNone,
				RedirectURIs: []string{"https://app.example.com/cb"}, PostLogoutRedirectURIs: []string{logoutURI}})
			if err != nil {
				t.Fatal(err)
			}
			reg, out := e.register(t, `{"redirect_uris":["https://dcr.example.com/cb"],"post_logout_redirect_uris":["`+logoutDCRURI+`"],"token_endpoint_auth_method":"none"}`)
			if reg.StatusCode != http.StatusCreated {
				t.Fatalf("register: %d %v", reg.StatusCode, out)
			}
			dcr, _ := out["client_id"].(string)

			c := e.browser()
			resp, _ := e.logoutGet(t, c, url.Values{"client_id": {"rp"}, "post_logout_redirect_uri": {logoutURI}, "state": {"s"}})
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != logoutURI+"?state=s" {
				t.Errorf("admin client: %d Location %q, want 303 to %s?state=s", resp.StatusCode, resp.Header.Get("Location"), logoutURI)
			}
			resp, page := e.logoutGet(t, c, url.Values{"client_id": {dcr}, "post_logout_redirect_uri": {logoutDCRURI}, "state": {"s"}})
			if resp.StatusCode != http.StatusOK || !strings.Contains(page, `href="`+logoutDCRURI+`?state=s"`) {
				t.Errorf("registered client: %d Location %q, want 200 and a link to %s?state=s: %s", resp.StatusCode, resp.Header.Get("Location"), logoutDCRURI, page)
			}
		})
	}
}
