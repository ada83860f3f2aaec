package issuer

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// stubIdPName is the identity provider the stub stands for.
const stubIdPName = "corp"

// stubIdP is a minimal OpenID provider whose answers a test shapes: for
// what the real provider of test/idp (oidc-provider) cannot be made to
// do, such as answering too much, too late, or with a token it should
// not have signed. It checks what a provider checks (PKCE S256, the
// redirect URI, the code used once).
type stubIdP struct {
	t   *testing.T
	srv *httptest.Server
	key *ecdsa.PrivateKey
	now func() time.Time

	mu sync.Mutex
	// The next sign-ins' user and the test's changes.
	claims                jwt.MapClaims                            // sub, email, groups...
	editToken             func(jwt.MapClaims)                      // last changes to the ID token's claims
	signWith              *ecdsa.PrivateKey                        // nil: the published key
	editRedirect          func(q url.Values)                       // changes to the redirect back
	padDiscovery, padJWKS int                                      // bytes of filler in those answers
	issParameter          bool                                     // metadata says answers carry iss (RFC 9207)
	hangToken             bool                                     // the token endpoint never answers
	failToken             func(http.ResponseWriter, *http.Request) // answers token requests instead
	codes                 map[string]stubCode                      // issued, not yet redeemed
	tokenAuth             []string                                 // Authorization header of each token request
	tokenTwice            [2]string                                // a claim named first with a raw value, then as claims has it
	discoveryTwice        [2]string                                // a metadata member named first with a raw value
	jwksTwice             [2]string                                // a key set member named first with a raw value
	forge                 func(jwt.MapClaims) string               // the ID token instead of one signed with the key
	metaIssuer            string                                   // the issuer the metadata names, when not its own
	failPage              string                                   // the page "/discovery" or "/jwks" answers 500 with
	failOn                string
}

type stubCode struct {
	nonce, challenge, redirect, clientID string
}

func newStubIdP(t *testing.T, now func() time.Time) *stubIdP {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &stubIdP{t: t, key: key, now: now, codes: map[string]stubCode{},
		claims: jwt.MapClaims{"sub": "u-1", "email": "alice@corp.example", "email_verified": true, "groups": []string{"eng", "unmapped"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", s.discovery)
	mux.HandleFunc("GET /jwks", s.jwks)
	mux.HandleFunc("GET /auth", s.authorize)
	mux.HandleFunc("POST /token", s.token)
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *stubIdP) set(f func(s *stubIdP)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *stubIdP) writeJSON(w http.ResponseWriter, v map[string]any, pad int) {
	if pad > 0 {
		v["filler"] = strings.Repeat("x", pad)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *stubIdP) discovery(w http.ResponseWriter, _ *http.Request) {
	if s.failed(w, "/discovery") {
		return
	}
	s.mu.Lock()
	pad, iss, dup, named := s.padDiscovery, s.issParameter, s.discoveryTwice, cmp.Or(s.metaIssuer, s.srv.URL)
	s.mu.Unlock()
	u := s.srv.URL
	meta := map[string]any{
		"issuer": named, "authorization_endpoint": u + "/auth", "token_endpoint": u + "/token", "jwks_uri": u + "/jwks",
		"response_types_supported": []string{"code"}, "id_token_signing_alg_values_supported": []string{"ES256"},
	}
	if iss {
		meta["authorization_response_iss_parameter_supported"] = true
	}
	if dup[0] != "" {
		b, _ := json.Marshal(meta)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(withMemberFirst(b, dup[0], dup[1]))
		return
	}
	s.writeJSON(w, meta, pad)
}

// failed answers 500 with failPage when the test fails the endpoint.
func (s *stubIdP) failed(w http.ResponseWriter, endpoint string) bool {
	s.mu.Lock()
	page, on := s.failPage, s.failOn
	s.mu.Unlock()
	if on != endpoint {
		return false
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = io.WriteString(w, page)
	return true
}

func (s *stubIdP) jwks(w http.ResponseWriter, _ *http.Request) {
	if s.failed(w, "/jwks") {
		return
	}
	s.mu.Lock()
	pad, dup := s.padJWKS, s.jwksTwice
	s.mu.Unlock()
	pub, err := publicJWK(s.key.Public())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pub.Kid = "stub"
	if dup[0] != "" {
		b, _ := json.Marshal(map[string]any{"keys": []accesstoken.JWK{pub}})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(withMemberFirst(b, dup[0], dup[1]))
		return
	}
	s.writeJSON(w, map[string]any{"keys": []accesstoken.JWK{pub}}, pad)
}

// authorize signs the user in at once and sends the browser back.
func (s *stubIdP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("nonce") == "" || q.Get("state") == "" {
		http.Error(w, "want PKCE S256, nonce and state", http.StatusBadRequest)
		return
	}
	code := rand.Text()
	back := url.Values{"code": {code}, "state": {q.Get("state")}, "iss": {s.srv.URL}}
	s.mu.Lock()
	s.codes[code] = stubCode{nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"), clientID: q.Get("client_id")}
	if s.editRedirect != nil {
		s.editRedirect(back)
	}
	s.mu.Unlock()
	http.Redirect(w, r, q.Get("redirect_uri")+"?"+back.Encode(), http.StatusSeeOther)
}

func (s *stubIdP) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.tokenAuth = append(s.tokenAuth, r.Header.Get("Authorization"))
	c, ok := s.codes[r.PostForm.Get("code")]
	delete(s.codes, r.PostForm.Get("code"))
	hang, edit, key, dup, forge, fail := s.hangToken, s.editToken, s.signWith, s.tokenTwice, s.forge, s.failToken
	claims := jwt.MapClaims{}
	for k, v := range s.claims {
		claims[k] = v
	}
	s.mu.Unlock()
	if hang {
		<-r.Context().Done() // the client gives up
		return
	}
	if fail != nil {
		fail(w, r)
		return
	}
	if !ok || r.PostForm.Get("redirect_uri") != c.redirect ||
		oauth2.S256ChallengeFromVerifier(r.PostForm.Get("code_verifier")) != c.challenge {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
		return
	}
	now := s.now()
	claims["iss"], claims["aud"], claims["nonce"] = s.srv.URL, c.clientID, c.nonce
	claims["iat"], claims["exp"] = now.Unix(), now.Add(5*time.Minute).Unix()
	if edit != nil {
		edit(claims)
	}
	if key == nil {
		key = s.key
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	if dup[0] != "" {
		tok.Claims = twice{claims, dup[0], dup[1]}
	}
	tok.Header["kid"] = "stub"
	idToken, err := tok.SignedString(key)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if forge != nil {
		idToken = forge(claims)
	}
	s.writeJSON(w, map[string]any{"access_token": "at-" + rand.Text(), "token_type": "Bearer", "expires_in": 300, "id_token": idToken}, 0)
}

// forgedIDToken signs the stub's ID token claims with method and key,
// naming kid.
func forgedIDToken(method jwt.SigningMethod, kid string, key any) func(jwt.MapClaims) string {
	return func(c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(method, c)
		tok.Header["kid"] = kid
		raw, _ := tok.SignedString(key)
		return raw
	}
}

// signInResult is where a sign-in through the provider ended: the
// answer of our issuer after the provider, or before it when it did not
// get there.
type signInResult struct {
	status   int
	location string // of a redirect
	body     string
	provider url.Values // the authorization request at the provider
	callback string     // the redirect URI with the provider's answer
}

// idpSignIn starts an authorization request in browser c, presses
// "Continue with" on the login page and follows the provider's answer
// back to our callback.
func (e *testEnv) idpSignIn(t *testing.T, c *http.Client) signInResult {
	t.Helper()
	return e.idpSignInWith(t, c, nil)
}

// idpSignInWith is idpSignIn of an authorization request with the
// parameters extra set.
func (e *testEnv) idpSignInWith(t *testing.T, c *http.Client, extra url.Values) signInResult {
	t.Helper()
	return e.idpSignInAt(t, c, stubIdPName, extra, "")
}

// idpSignInAt is idpSignInWith at provider name, whose answer the
// browser takes to the callback path answerTo instead of the provider's
// own when answerTo is set.
func (e *testEnv) idpSignInAt(t *testing.T, c *http.Client, name string, extra url.Values, answerTo string) signInResult {
	t.Helper()
	own := "/login/" + name + "/callback"
	p := authParams(testChallenge)
	maps.Copy(p, extra)
	resp, err := c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	login, err := url.Parse(e.srv.URL)
	if err == nil {
		login, err = login.Parse(resp.Header.Get("Location"))
	}
	if err != nil || login.Path != pathLogin {
		t.Fatalf("authorize: %d to %q, want the login page", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, err = c.Get(login.String()); err != nil {
		t.Fatal(err)
	}
	f := findForm(t, readBody(t, resp), "idp-"+name)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+f.action, strings.NewReader(f.hidden.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.srv.URL)
	var callback string
	var provider url.Values
	for n := range 3 { // our button, the provider, our callback
		if n == 1 {
			provider = req.URL.Query()
		}
		if resp, err = c.Do(req); err != nil {
			t.Fatal(err)
		}
		loc := resp.Header.Get("Location")
		if n == 0 && resp.StatusCode == http.StatusOK {
			// The button's page sends the browser on (idpStart).
			body := readBody(t, resp)
			if loc = metaRefresh(t, body); loc == "" {
				return signInResult{status: resp.StatusCode, body: body}
			}
			req, _ = http.NewRequest(http.MethodGet, loc, nil)
			continue
		}
		if resp.StatusCode != http.StatusSeeOther || strings.HasPrefix(req.URL.Path, "/login/") && strings.HasSuffix(req.URL.Path, "/callback") {
			return signInResult{status: resp.StatusCode, location: loc, body: readBody(t, resp), provider: provider, callback: callback}
		}
		resp.Body.Close()
		if strings.Contains(loc, own) {
			if answerTo != "" {
				loc = strings.Replace(loc, own, answerTo, 1)
			}
			callback = loc
		}
		req, _ = http.NewRequest(http.MethodGet, loc, nil)
	}
	t.Fatal("sign-in: too many redirects")
	return signInResult{}
}

// newIdPEnv is the browser environment with the stub as identity provider
// corp (group eng -> staff); its security log is recorded.
func newIdPEnv(t *testing.T, mutate func(*IdentityProvider)) (*testEnv, *stubIdP, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	var stub *stubIdP
	e := newBrowserEnv(t, func(c *Config) {
		stub = newStubIdP(t, c.Now)
		p := IdentityProvider{Name: stubIdPName, Issuer: stub.srv.URL, ClientID: "mcp-auth", ClientSecret: "stub-secret",
			GroupMap: map[string][]string{"eng": {"staff"}}, AllowedEmailDomains: []string{"corp.example"}}
		if mutate != nil {
			mutate(&p)
		}
		c.IdentityProviders = []IdentityProvider{p}
		c.Logger = zap.New(core)
		c.Metrics = &countingMetrics{counts: map[string]int{}}
	})
	return e, stub, logs
}

// loginFailures are the reasons of the security log's failed logins.
func loginFailures(logs *observer.ObservedLogs) []string {
	var out []string
	for _, e := range logs.FilterLoggerName("security").FilterMessage("login failed").TakeAll() {
		r, _ := e.ContextMap()["reason"].(string)
		out = append(out, r)
	}
	return out
}

// TestIdPUserNameNotAClientID: a provider's user is named
// "<name>:<claim>", and a Client ID Metadata Document's client is named
// by its https (or, for development, http) URL: a provider named https
// (or http) whose user may choose a claim starting with "//" would make
// a user of a client's id, whose tokens for that client hold sub equal
// to client_id, which a resource server reads as the client's own token
// (as the gateway does, with no principal_type: clientOwnToken). Such a
// name is refused; the provider's other users sign in.
func TestIdPUserNameNotAClientID(t *testing.T) {
	for _, tt := range []struct {
		name, provider, sub string
		wantStatus          int
	}{
		{"https, an ordinary name", "https", "u-1", http.StatusSeeOther},
		{"https, a URL's authority", "https", "//app.example/client", http.StatusForbidden},
		{"http, a URL's authority", "http", "//127.0.0.1:8080/client", http.StatusForbidden},
		{"corp, a URL's authority", "corp", "//app.example/client", http.StatusSeeOther},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, stub, logs := newIdPEnv(t, func(p *IdentityProvider) { p.Name = tt.provider })
			stub.set(func(s *stubIdP) { s.claims["sub"] = tt.sub })
			res := e.idpSignInAt(t, e.browser(), tt.provider, nil, "")
			if res.status != tt.wantStatus {
				t.Fatalf("sign-in of %q at provider %s = %d %q, want %d", tt.sub, tt.provider, res.status, res.body, tt.wantStatus)
			}
			var u User
			err := e.get(bucketUsers, tt.provider+":"+tt.sub, &u)
			if tt.wantStatus == http.StatusForbidden {
				if !errors.Is(err, store.ErrNotFound) || !slices.Equal(loginFailures(logs), []string{idpReasonRefused}) {
					t.Errorf("refused sign-in: user stored %v, login failures %v; want none stored, [%s]", err, loginFailures(logs), idpReasonRefused)
				}
			} else if err != nil {
				t.Errorf("admitted sign-in: user %s:%s not stored: %v", tt.provider, tt.sub, err)
			}
		})
	}
	// A trusted IdP's ID-JAG names its user through the same provider.
	for _, tt := range []struct {
		name, sub  string
		wantStatus int
	}{
		{"ID-JAG, an ordinary name", "u-1", http.StatusOK},
		{"ID-JAG, a URL's authority", "//app.example/client", http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			idp := newTestIdP(t)
			e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.IdentityProviders[0].Name = "https" })
			a := e.redeem(t, tConf+":"+tSecret, idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["sub"] = tt.sub }), nil)
			if a.status != tt.wantStatus {
				t.Fatalf("ID-JAG of %q at provider https = %d %s, want %d", tt.sub, a.status, a.raw, tt.wantStatus)
			}
			var u User
			err := e.get(bucketUsers, "https:"+tt.sub, &u)
			if tt.wantStatus != http.StatusOK {
				if a.str("access_token") != "" || !errors.Is(err, store.ErrNotFound) {
					t.Errorf("refused ID-JAG: token %q, user stored %v; want neither", a.str("access_token"), err)
				}
			} else if err != nil {
				t.Errorf("admitted ID-JAG: user https:%s not stored: %v", tt.sub, err)
			}
		})
	}
}

// TestIdPSignInAnswers: what the provider answers decides the sign-in:
// an answer naming another issuer, or naming none from a provider whose
// metadata says its answers do (RFC 9207), an error, an ID token that
// go-oidc must refuse (another key, another issuer, expired, another
// nonce), a replayed state; each shows an error page, issues nothing and
// is a security event with its reason. A sign-in that works goes on to
// our consent page.
func TestIdPSignInAnswers(t *testing.T) {
	tests := []struct {
		name       string
		set        func(s *stubIdP)
		wantStatus int
		wantText   string
		wantReason string
	}{
		{"admitted", func(s *stubIdP) {}, http.StatusSeeOther, "", ""},
		{"iss of another issuer", func(s *stubIdP) {
			s.editRedirect = func(q url.Values) { q.Set("iss", "https://evil.example") }
		}, http.StatusForbidden, "cannot be used", idpReasonError},
		{"no iss, though the provider says it sends one", func(s *stubIdP) {
			s.issParameter = true
			s.editRedirect = func(q url.Values) { q.Del("iss") }
		}, http.StatusForbidden, "cannot be used", idpReasonError},
		{"no iss, as the provider says", func(s *stubIdP) {
			s.editRedirect = func(q url.Values) { q.Del("iss") }
		}, http.StatusSeeOther, "", ""},
		{"iss, as the provider says", func(s *stubIdP) { s.issParameter = true }, http.StatusSeeOther, "", ""},
		// RFC 6749 section 3.1: a response parameter comes once; which of
		// two values is read would decide what is checked.
		{"iss twice, the provider's first", func(s *stubIdP) {
			s.issParameter = true
			s.editRedirect = func(q url.Values) { q.Add("iss", "https://evil.example") }
		}, http.StatusForbidden, "cannot be used", idpReasonError},
		{"code twice", func(s *stubIdP) {
			s.editRedirect = func(q url.Values) { q.Add("code", "planted") }
		}, http.StatusForbidden, "cannot be used", idpReasonError},
		{"state twice", func(s *stubIdP) {
			s.editRedirect = func(q url.Values) { q.Add("state", "other") }
		}, http.StatusForbidden, "cannot be used", idpReasonError},
		{"error from the provider", func(s *stubIdP) {
			s.editRedirect = func(q url.Values) { q.Del("code"); q.Set("error", "access_denied") }
		}, http.StatusForbidden, "did not sign you in (access_denied)", idpReasonError},
		// The provider's error code is shown only in an error code's
		// form: markup or a sentence in it is not shown, and
		// error_description is not shown at all.
		{"error from the provider with markup", func(s *stubIdP) {
			s.editRedirect = func(q url.Values) {
				q.Del("code")
				q.Set("error", `<script>alert(1)</script>`)
				q.Set("error_description", "Call +1 555 0100 to restore your account")
			}
		}, http.StatusForbidden, "did not sign you in.", idpReasonError},
		{"error from the provider that is a sentence", func(s *stubIdP) {
			s.editRedirect = func(q url.Values) {
				q.Del("code")
				q.Set("error", "Call +1 555 0100 to restore your account")
			}
		}, http.StatusForbidden, "did not sign you in.", idpReasonError},
		{"error from the provider, long", func(s *stubIdP) {
			s.editRedirect = func(q url.Values) { q.Del("code"); q.Set("error", strings.Repeat("x", 65)) }
		}, http.StatusForbidden, "did not sign you in.", idpReasonError},
		{"ID token signed by another key", func(s *stubIdP) {
			s.signWith, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token of another issuer", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token for another client", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["aud"] = "other-app" }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token for several clients, no azp", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["aud"] = []string{c["aud"].(string), "other-app"} }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token issued to another party", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["azp"] = "other-app" }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token for several clients, issued to another", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["azp"] = "other-app"; c["aud"] = []string{c["aud"].(string), "other-app"} }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		// Claim names are case-sensitive (RFC 7519 section 4): a lone
		// member in another case, which a provider letting users name
		// claims of their own would sign, is no azp.
		{"ID token for several clients, AZP naming this one", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["AZP"] = c["aud"]; c["aud"] = []string{c["aud"].(string), "other-app"} }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token for several clients, issued to this one", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["azp"] = c["aud"]; c["aud"] = []string{c["aud"].(string), "other-app"} }
		}, http.StatusSeeOther, "", ""},
		// Algorithms go-oidc must refuse whatever the key set holds:
		// none, and HMAC keyed with the provider's public key.
		{"ID token with alg none", func(s *stubIdP) {
			s.forge = forgedIDToken(jwt.SigningMethodNone, "stub", jwt.UnsafeAllowNoneSignatureType)
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token with HS256 keyed by the public key", func(s *stubIdP) {
			pub, _ := publicJWK(s.key.Public())
			pub.Kid = "stub"
			b, _ := json.Marshal(pub)
			s.forge = forgedIDToken(jwt.SigningMethodHS256, "stub", b)
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token naming a kid the provider does not publish", func(s *stubIdP) {
			s.forge = forgedIDToken(jwt.SigningMethodES256, "other", s.key)
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token not yet valid", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["nbf"] = s.now().Add(10 * time.Minute).Unix() }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"expired ID token", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["exp"] = s.now().Add(-time.Minute).Unix() }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		// Its iat orders the provider's word (groups): one from the
		// future would keep its groups past every later sign-in.
		{"ID token issued in the future", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["iat"] = s.now().Add(idpClockSkew + time.Minute).Unix() }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token issued within the clock skew", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["iat"] = s.now().Add(idpClockSkew).Unix() }
		}, http.StatusSeeOther, "", ""},
		// README (What happens at sign-in): its iat no more than 30 s
		// ahead of our clock.
		{"ID token issued 30 s ahead", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["iat"] = s.now().Add(30 * time.Second).Unix() }
		}, http.StatusSeeOther, "", ""},
		{"ID token issued 31 s ahead", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["iat"] = s.now().Add(31 * time.Second).Unix() }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token with another nonce", func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["nonce"] = "not-this-sign-in" }
		}, http.StatusForbidden, "is not valid", idpReasonToken},
		// A member named twice, or in two cases: readers disagree on
		// which counts (before: the last, here).
		{"ID token with nonce twice", func(s *stubIdP) { s.tokenTwice = [2]string{"nonce", `"not-this-sign-in"`} }, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token with sub twice", func(s *stubIdP) { s.tokenTwice = [2]string{"sub", `"u-2"`} }, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token with email twice", func(s *stubIdP) { s.tokenTwice = [2]string{"email", `"ceo@corp.example"`} }, http.StatusForbidden, "is not valid", idpReasonToken},
		{"ID token with groups in another case", func(s *stubIdP) { s.tokenTwice = [2]string{"Groups", `["admins"]`} }, http.StatusForbidden, "is not valid", idpReasonToken},
		{"email not verified", func(s *stubIdP) {
			s.claims["email_verified"] = false
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		{"email not verified, as a string", func(s *stubIdP) {
			s.claims["email_verified"] = "false"
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		{"email verification neither true nor false", func(s *stubIdP) {
			s.claims["email_verified"] = 1
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		{"email verified, as a string", func(s *stubIdP) {
			s.claims["email_verified"] = "true"
		}, http.StatusSeeOther, "", ""},
		// A name the admin API could not address, or that Caddy's remote
		// admin access control would read as another (review s13-fresh3).
		{"a dot-dot segment in the user's name", func(s *stubIdP) {
			s.claims["sub"] = "u-1/../../clients/x"
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		// A claim the user may choose must not act on a terminal (CSI) or
		// make the name read as another (bidi override, isolate).
		{"a C1 control in the user's name", func(s *stubIdP) {
			s.claims["sub"] = "u-1\u009b2J"
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		{"a bidi override in the user's name", func(s *stubIdP) {
			s.claims["sub"] = "eve\u202enimda"
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		{"a bidi isolate in the user's name", func(s *stubIdP) {
			s.claims["sub"] = "eve\u2066x"
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		// A name NFKC changes, which an upstream normalising it would
		// read as another user's (u-1 here).
		{"a fullwidth user's name", func(s *stubIdP) {
			s.claims["sub"] = "\uff55-1"
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		// Invisible, and ignored by collations (a database's "u-1\ufe0f"
		// equals "u-1").
		{"a variation selector in the user's name", func(s *stubIdP) {
			s.claims["sub"] = "u-1\ufe0f"
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		// Unassigned here (Unicode 15.0), U+1CCF1 OUTLINED DIGIT ONE
		// since Unicode 16.0, which a newer upstream's NFKC makes "1".
		{"a user's name of a newer Unicode", func(s *stubIdP) {
			s.claims["sub"] = "u-\U0001CCF1"
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
		// README (Users): a value longer than 200 bytes is refused; one
		// of 200 signs in (below).
		{"a user's name of 201 bytes", func(s *stubIdP) {
			s.claims["sub"] = strings.Repeat("u", 201)
		}, http.StatusForbidden, "may not sign in here", idpReasonRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, stub, logs := newIdPEnv(t, nil)
			stub.set(tt.set)
			c := e.browser()
			res := e.idpSignIn(t, c)
			if res.status != tt.wantStatus || !strings.Contains(res.body, tt.wantText) {
				t.Fatalf("sign-in = %d %q, want %d %q", res.status, res.body, tt.wantStatus, tt.wantText)
			}
			if strings.Contains(res.body, "<script") || strings.Contains(res.body, "555 0100") {
				t.Errorf("the page shows the provider's markup or error_description: %q", res.body)
			}
			if tt.wantStatus == http.StatusSeeOther {
				if !strings.HasPrefix(res.location, pathConsent+"?") {
					t.Errorf("admitted sign-in goes to %q, want our consent page", res.location)
				}
				// Only the provider groups the mapping names are kept.
				var u User
				if err := e.get(bucketUsers, stubIdPName+":u-1", &u); err != nil || strings.Join(u.IdPGroups, ",") != "eng" {
					t.Errorf("provisioned user's groups = %v (%v), want [eng]", u.IdPGroups, err)
				}
				// The answer again (its state used): refused.
				resp, err := c.Get(res.callback)
				if err != nil {
					t.Fatal(err)
				}
				if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Sign-in expired") {
					t.Errorf("replayed answer = %d %q, want 400 Sign-in expired", resp.StatusCode, body)
				}
				tt.wantReason = idpReasonState
			} else if n := e.count(bucketUsers); n != 0 {
				t.Errorf("%d users provisioned by a refused sign-in", n)
			}
			got := loginFailures(logs)
			if want := []string{tt.wantReason}; strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("security log reasons = %v, want %v", got, want)
			}
			// The caddy_mcp_issuer_login_failures_total series, by reason.
			m := e.iss.metrics.(*countingMetrics)
			m.mu.Lock()
			defer m.mu.Unlock()
			if n := m.counts["login "+tt.wantReason]; n != 1 || len(m.counts) != 1 {
				t.Errorf("metrics counted %v, want one login failure %q", m.counts, tt.wantReason)
			}
		})
	}
	t.Run("a user's name of 200 bytes", func(t *testing.T) {
		sub := strings.Repeat("u", 200)
		e, stub, _ := newIdPEnv(t, nil)
		stub.set(func(s *stubIdP) { s.claims["sub"] = sub })
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
			t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
		}
		var u User
		if err := e.get(bucketUsers, stubIdPName+":"+sub, &u); err != nil {
			t.Errorf("user %s:<200 bytes> not provisioned: %v", stubIdPName, err)
		}
	})
}

// TestIdPAnswerLimits: every request to the provider has a 10 s timeout
// and a 1 MiB answer limit (go-oidc would read its metadata and keys
// whole): an oversized discovery document makes the provider
// unavailable, oversized keys make its ID token unverifiable, a token
// endpoint that does not answer is given up after 10 s. Answers under
// the limit are read.
func TestIdPAnswerLimits(t *testing.T) {
	tests := []struct {
		name       string
		set        func(s *stubIdP)
		wantStatus int
		wantText   string
	}{
		{"answers under 1 MiB", func(s *stubIdP) { s.padDiscovery, s.padJWKS = 900<<10, 900<<10 }, http.StatusSeeOther, ""},
		{"discovery over 1 MiB", func(s *stubIdP) { s.padDiscovery = 1 << 20 }, http.StatusBadGateway, "cannot be reached"},
		{"keys over 1 MiB", func(s *stubIdP) { s.padJWKS = 1 << 20 }, http.StatusForbidden, "is not valid"},
		// A member named twice: readers disagree on which counts
		// (before: the last, here).
		{"discovery with jwks_uri twice", func(s *stubIdP) { s.discoveryTwice = [2]string{"jwks_uri", `"https://keys.example/jwks"`} }, http.StatusBadGateway, "cannot be reached"},
		{"discovery with Issuer and issuer", func(s *stubIdP) { s.discoveryTwice = [2]string{"Issuer", `"https://evil.example"`} }, http.StatusBadGateway, "cannot be reached"},
		// go-oidc reads the key set as encoding/json does: the last keys.
		{"keys with keys twice", func(s *stubIdP) { s.jwksTwice = [2]string{"keys", `[]`} }, http.StatusForbidden, "is not valid"},
		{"keys with Keys and keys", func(s *stubIdP) { s.jwksTwice = [2]string{"Keys", `[]`} }, http.StatusForbidden, "is not valid"},
		{"token endpoint silent", func(s *stubIdP) { s.hangToken = true }, http.StatusBadGateway, "cannot be reached"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // the silent endpoint takes the 10 s
			e, stub, _ := newIdPEnv(t, nil)
			stub.set(tt.set)
			start := time.Now()
			res := e.idpSignIn(t, e.browser())
			took := time.Since(start)
			if res.status != tt.wantStatus || !strings.Contains(res.body, tt.wantText) {
				t.Fatalf("sign-in = %d %q, want %d %q", res.status, res.body, tt.wantStatus, tt.wantText)
			}
			if documented := 10 * time.Second; stub.hangToken && (took < documented || took > documented+5*time.Second) {
				t.Errorf("gave up on the silent token endpoint after %v, want %v", took, documented)
			}
			if n := e.count(bucketUsers); tt.wantStatus != http.StatusSeeOther && n != 0 {
				t.Errorf("%d users provisioned", n)
			}
		})
	}
}

// TestIdPAnswerLimitExact: the 1 MiB limit is on the answer's bytes: an
// answer of exactly 1 MiB is read whole, one of a byte more fails.
func TestIdPAnswerLimitExact(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		_, _ = w.Write([]byte(strings.Repeat("a", n)))
	}))
	defer srv.Close()
	client := &http.Client{Transport: limitedTransport{srv.Client().Transport, idpMaxBytes}}
	for _, tt := range []struct {
		n  int
		ok bool
	}{{idpMaxBytes - 1, true}, {idpMaxBytes, true}, {idpMaxBytes + 1, false}} {
		resp, err := client.Get(srv.URL + "/?n=" + strconv.Itoa(tt.n))
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if (err == nil) != tt.ok || (tt.ok && len(b) != tt.n) || len(b) > idpMaxBytes {
			t.Errorf("answer of %d bytes: read %d bytes, %v, want ok %v", tt.n, len(b), err, tt.ok)
		}
	}
}

// TestIdPTokenErrorAnswerNotLogged: a provider's token endpoint that
// fails with a page of its own (not an OAuth error) has its page kept out
// of the log. golang.org/x/oauth2 puts the whole answer, up to 1 MiB, in
// its error, and the log wrote that error: a page that echoes the
// request (a debugging proxy's, a misconfigured provider's) put the
// issuer's client secret at the provider, the code and the PKCE verifier
// in the log, and every failed sign-in wrote a line as long as the page.
// The log names the status and the OAuth error code instead.
func TestIdPTokenErrorAnswerNotLogged(t *testing.T) {
	const filler = "filler-of-the-provider-page-"
	tests := []struct {
		name     string
		answer   func(w http.ResponseWriter, echo string)
		wantLogs string
	}{
		{"a page echoing the request", func(w http.ResponseWriter, echo string) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, "<pre>"+echo+"</pre>"+strings.Repeat(filler, 4<<10))
		}, "500 Internal Server Error"},
		{"an OAuth error whose description echoes the request", func(w http.ResponseWriter, echo string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": echo + strings.Repeat(filler, 4<<10)})
		}, "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, stub, logs := newIdPEnv(t, nil)
			var mu sync.Mutex
			var sent []string
			stub.set(func(s *stubIdP) {
				s.failToken = func(w http.ResponseWriter, r *http.Request) {
					echo := r.Header.Get("Authorization") + "\n" + r.PostForm.Encode()
					mu.Lock()
					sent = append(sent, r.Header.Get("Authorization"), r.PostForm.Get("code"), r.PostForm.Get("code_verifier"))
					mu.Unlock()
					tt.answer(w, echo)
				}
			})
			res := e.idpSignIn(t, e.browser())
			if res.status != http.StatusForbidden || !strings.Contains(res.body, "did not complete the sign-in") {
				t.Fatalf("sign-in = %d %q, want 403 did not complete the sign-in", res.status, res.body)
			}
			mu.Lock()
			secrets := append([]string{"stub-secret", filler}, sent...)
			mu.Unlock()
			named := false
			for _, entry := range logs.All() {
				line := entry.Message + fmt.Sprint(entry.ContextMap())
				for _, s := range secrets {
					if s != "" && strings.Contains(line, s) {
						t.Errorf("log %q holds %.40q of the provider's answer or the request: %.300s", entry.Message, s, line)
					}
				}
				if len(line) > 2<<10 {
					t.Errorf("log %q is %d bytes long", entry.Message, len(line))
				}
				named = named || entry.Message == "identity provider login refused" && strings.Contains(line, tt.wantLogs)
			}
			if !named {
				t.Errorf("no log of the refused sign-in naming %q", tt.wantLogs)
			}
		})
	}
}

// TestIdPProviderPageNotLogged: go-oidc puts the whole answer of a
// provider's discovery or key set endpoint that fails (a 500 page, a
// proxy's error page) in its error, up to the 1 MiB answer limit, and the
// log wrote that error: a line as long as the page for every sign-in
// started while the metadata cannot be read, and for every one finished
// while the keys cannot. The log bounds what it says of such an error.
func TestIdPProviderPageNotLogged(t *testing.T) {
	const filler = "filler-of-the-provider-page-"
	page := "<html>" + strings.Repeat(filler, 4<<10) + "</html>"
	for _, tt := range []struct {
		endpoint, want string
		status         int
	}{
		{"/discovery", "cannot be reached", http.StatusBadGateway},
		{"/jwks", "is not valid", http.StatusForbidden},
	} {
		t.Run(tt.endpoint, func(t *testing.T) {
			e, stub, logs := newIdPEnv(t, nil)
			stub.set(func(s *stubIdP) { s.failPage, s.failOn = page, tt.endpoint })
			res := e.idpSignIn(t, e.browser())
			if res.status != tt.status || !strings.Contains(res.body, tt.want) {
				t.Fatalf("sign-in = %d %q, want %d %q", res.status, res.body, tt.status, tt.want)
			}
			logged := false
			for _, entry := range logs.All() {
				line := entry.Message + fmt.Sprint(entry.ContextMap())
				logged = logged || strings.Contains(line, "identity provider")
				if n := strings.Count(line, filler); len(line) > 2<<10 || n > 64 {
					t.Errorf("log %q is %d bytes long, %d times the page's filler", entry.Message, len(line), n)
				}
			}
			if !logged {
				t.Error("the failure was not logged")
			}
		})
	}
}

// TestIdPProviderErrorTerminalSafe: a provider's failing page reaches
// the log in go-oidc's error, and zap escapes only C0 controls: a CSI
// (U+009B) in the page erased the screen of an operator following the
// log, U+202E wrote what followed backwards, and a literal "\u009b"
// read as an escape. The log writes each as an escape and doubles the
// backslash, as the gateway's audit events do.
func TestIdPProviderErrorTerminalSafe(t *testing.T) {
	const page = "<html>down\u009b2J\u202egnp.exe\u2028\u200b\U000f0000\x7f and \\u009b</html>"
	for _, endpoint := range []string{"/discovery", "/jwks"} {
		t.Run(endpoint, func(t *testing.T) {
			e, stub, logs := newIdPEnv(t, nil)
			stub.set(func(s *stubIdP) { s.failPage, s.failOn = page, endpoint })
			e.idpSignIn(t, e.browser())
			logged := false
			for _, entry := range logs.All() {
				v, ok := entry.ContextMap()["error"].(string)
				if !ok || !strings.Contains(v, "down") {
					continue
				}
				logged = true
				if i := strings.IndexFunc(v, func(r rune) bool {
					return r == 0x7f || r >= 0x80 && r < 0xa0 || r >= utf8.RuneSelf && (!unicode.IsGraphic(r) || unicode.Is(unicode.Cf, r))
				}); i >= 0 {
					t.Errorf("log %q: error %+q holds %U raw", entry.Message, v, []rune(v[i:])[0])
				}
				for _, want := range []string{`down\u009b2J\u202egnp.exe\u2028\u200b\udb80\udc00\u007f and \\u009b`} {
					if !strings.Contains(v, want) {
						t.Errorf("log %q: error %q, want it to hold %q", entry.Message, v, want)
					}
				}
			}
			if !logged {
				t.Error("the provider's page was not logged")
			}
		})
	}
}

// TestIdPReassignedName: with user_claim email, another subject of the
// provider presenting the address of an existing user (an address given
// to someone else) is refused until an operator deletes the old user.
func TestIdPReassignedName(t *testing.T) {
	e, stub, logs := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("first sign-in = %d %q, want 303", res.status, res.body)
	}
	const name = stubIdPName + ":alice@corp.example"
	stub.set(func(s *stubIdP) { s.claims["sub"] = "u-2" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden || !strings.Contains(res.body, "may not sign in here") {
		t.Fatalf("another subject with the address = %d %q, want 403 may not sign in here", res.status, res.body)
	}
	var u User
	if err := e.get(bucketUsers, name, &u); err != nil || u.IdPSubject != "u-1" {
		t.Errorf("user %s after the refusal: subject %q (%v), want u-1", name, u.IdPSubject, err)
	}
	if got := loginFailures(logs); strings.Join(got, ",") != idpReasonRefused {
		t.Errorf("security log reasons = %v, want [%s]", got, idpReasonRefused)
	}
	if err := e.iss.DeleteUser(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in after the old user was deleted = %d %q, want 303", res.status, res.body)
	}
	if err := e.get(bucketUsers, name, &u); err != nil || u.IdPSubject != "u-2" {
		t.Errorf("user %s: subject %q (%v), want u-2", name, u.IdPSubject, err)
	}
}

// TestIdPDisabledUserUnderAnotherName: disabling a provider's user keeps
// that person out (README, admin API: "it cannot sign in, at its provider
// either"), whatever name the user_claim gives them next. With
// user_claim email (or preferred_username) the person's address may
// change at the provider, in case alone too, and the sign-in under the
// new name would otherwise create a fresh, enabled account for the sub
// the operator disabled; by ID-JAG as well. Another person is not held
// to it, and enabling the account lets the person in again.
func TestIdPDisabledUserUnderAnotherName(t *testing.T) {
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("first sign-in = %d %q, want 303", res.status, res.body)
	}
	const name = stubIdPName + ":alice@corp.example"
	if err := e.iss.DisableUser(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	for _, address := range []string{"Alice@corp.example", "alice.smith@corp.example"} {
		stub.set(func(s *stubIdP) { s.claims["email"] = address })
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden || !strings.Contains(res.body, "may not sign in here") {
			t.Errorf("the disabled user's sign-in as %s = %d %q, want 403 may not sign in here", address, res.status, res.body)
		}
		if err := e.get(bucketUsers, stubIdPName+":"+address, new(User)); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("user %s:%s after the refusal: %v, want none", stubIdPName, address, err)
		}
	}
	// Another person, with an address of their own: signed in.
	stub.set(func(s *stubIdP) { s.claims["sub"], s.claims["email"] = "u-2", "bob@corp.example" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Errorf("another user's sign-in = %d %q, want 303", res.status, res.body)
	}
	if err := e.iss.EnableUser(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	stub.set(func(s *stubIdP) { s.claims["sub"], s.claims["email"] = "u-1", "Alice@corp.example" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Errorf("sign-in under the new address once enabled = %d %q, want 303", res.status, res.body)
	}
}

// TestIdPDisabledUserOtherAccount: a person with two accounts at a
// provider (the user_claim changed once, both signed in) whose operator
// disabled one cannot sign in with the other, kept enabled, by going
// back to its name: disabling keeps the person out, not one of their
// names. Enabling the disabled account lets them in again.
func TestIdPDisabledUserOtherAccount(t *testing.T) {
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
	const name = stubIdPName + ":alice@corp.example"
	for _, address := range []string{"Alice@corp.example", "alice@corp.example"} {
		stub.set(func(s *stubIdP) { s.claims["email"] = address })
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
			t.Fatalf("sign-in as %s = %d %q, want 303", address, res.status, res.body)
		}
	}
	if err := e.iss.DisableUser(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	stub.set(func(s *stubIdP) { s.claims["email"] = "Alice@corp.example" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden || !strings.Contains(res.body, "may not sign in here") {
		t.Errorf("the disabled person's sign-in with its other account = %d %q, want 403 may not sign in here", res.status, res.body)
	}
	if err := e.iss.EnableUser(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Errorf("sign-in with the other account once enabled = %d %q, want 303", res.status, res.body)
	}
}

// TestIdPDeletedUserLeavesNoIndexEntry: deleting a disabled account of
// a provider takes its name out of the index of disabled accounts by
// sub (record_idp_disabled.go), where it stayed: the account's name (an
// email address, with user_claim email) and the provider's sub outlived
// the account in the store and its backups. Another disabled account of
// the same sub stays indexed, and keeps the person out.
func TestIdPDeletedUserLeavesNoIndexEntry(t *testing.T) {
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
	const sub = "u-del"
	names := []string{stubIdPName + ":alice@corp.example", stubIdPName + ":alice.old@corp.example"}
	for _, address := range []string{"alice@corp.example", "alice.old@corp.example"} {
		stub.set(func(s *stubIdP) { s.claims["sub"], s.claims["email"] = sub, address })
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
			t.Fatalf("sign-in as %s = %d %q, want 303", address, res.status, res.body)
		}
	}
	for _, name := range names {
		if err := e.iss.DisableUser(t.Context(), name); err != nil {
			t.Fatal(err)
		}
	}
	key := idpDisabledKey(stubIdPName, sub)
	if err := e.iss.DeleteUser(t.Context(), names[0]); err != nil {
		t.Fatal(err)
	}
	var entry idpDisabledEntry
	if err := e.get(bucketIdPDisabled, key, &entry); err != nil || !slices.Equal(entry.Names, names[1:]) {
		t.Fatalf("index entry after deleting %s = %v (%v), want %v", names[0], entry.Names, err, names[1:])
	}
	stub.set(func(s *stubIdP) { s.claims["email"] = "alice@corp.example" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden {
		t.Errorf("sign-in of the sub with one account still disabled = %d %q, want 403", res.status, res.body)
	}
	if err := e.iss.DeleteUser(t.Context(), names[1]); err != nil {
		t.Fatal(err)
	}
	if err := e.get(bucketIdPDisabled, key, &entry); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("index entry after deleting both accounts: %v (%v), want none", entry.Names, err)
	}
}

// TestIdPEmailAsNameVerified: with user_claim email the address is the
// account's name (the token's sub), so a sign-in whose address the
// provider does not say is verified is refused, and creates no user.
func TestIdPEmailAsNameVerified(t *testing.T) {
	for _, tt := range []struct {
		name     string
		verified any // nil: no claim
		want     int
	}{
		{"verified", true, http.StatusSeeOther},
		{"verified, as a string", "true", http.StatusSeeOther},
		{"not verified", false, http.StatusForbidden},
		{"not verified, as a string", "false", http.StatusForbidden},
		{"no claim", nil, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email"; p.AllowedEmailDomains = nil })
			stub.set(signInWithAddress("attacker-sub", tt.verified))
			res := e.idpSignIn(t, e.browser())
			if res.status != tt.want {
				t.Fatalf("sign-in = %d %q, want %d", res.status, res.body, tt.want)
			}
			var u User
			err := e.get(bucketUsers, stubIdPName+":ceo@corp.example", &u)
			if created := err == nil; created != (tt.want == http.StatusSeeOther) {
				t.Errorf("user created: %v, want %v", created, tt.want == http.StatusSeeOther)
			}
		})
	}
}

// TestIdPTenant: a sign-in's ID token naming a tenant (OpenID Connect
// Enterprise; a multi-tenant issuer's sub is unique within its tenant
// only) signs in only at a provider declared with that tenant, and one
// declared with a tenant signs in only ID tokens naming it: another
// tenant's user of the same sub must not become this tenant's account.
func TestIdPTenant(t *testing.T) {
	for _, tt := range []struct {
		name            string
		declared, named string // "": none
		want            int
	}{
		{"undeclared, none named", "", "", http.StatusSeeOther},
		{"undeclared, one named", "", "acme", http.StatusForbidden},
		{"declared, named", "acme", "acme", http.StatusSeeOther},
		{"declared, another named", "acme", "fabrikam", http.StatusForbidden},
		{"declared, none named", "acme", "", http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.Tenant = tt.declared })
			stub.set(func(s *stubIdP) {
				if tt.named != "" {
					s.claims["tenant"] = tt.named
				}
			})
			if res := e.idpSignIn(t, e.browser()); res.status != tt.want {
				t.Fatalf("sign-in = %d %q, want %d", res.status, res.body, tt.want)
			}
		})
	}
}

// signInWithAddress makes the provider's next sign-in subject sub with
// the address ceo@corp.example and email_verified (nil: no claim).
func signInWithAddress(sub string, verified any) func(s *stubIdP) {
	return func(s *stubIdP) {
		s.claims["sub"], s.claims["email"] = sub, "ceo@corp.example"
		if verified == nil {
			delete(s.claims, "email_verified")
		} else {
			s.claims["email_verified"] = verified
		}
	}
}

// TestIdPUnverifiedEmailNotKept: an address the provider says is not
// verified is not stored, so userinfo and the admin API never hand it
// out as the user's; one it says is verified, or says nothing about, is.
func TestIdPUnverifiedEmailNotKept(t *testing.T) {
	for _, tt := range []struct {
		verified any // nil: no claim
		want     string
	}{
		{false, ""},
		{"false", ""},
		{true, "ceo@corp.example"},
		{nil, "ceo@corp.example"},
	} {
		e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.AllowedEmailDomains = nil })
		stub.set(signInWithAddress("u-9", tt.verified))
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
			t.Fatalf("email_verified %v: sign-in = %d %q", tt.verified, res.status, res.body)
		}
		var u User
		if err := e.get(bucketUsers, stubIdPName+":u-9", &u); err != nil {
			t.Fatal(err)
		}
		if u.Email != tt.want {
			t.Errorf("email_verified %v: stored email = %q, want %q", tt.verified, u.Email, tt.want)
		}
	}
}

// TestIdPProfileClaimsBounded: the provider's name and email claims are
// what the user may edit there, kept in the user's record and copied into
// every ID token and userinfo answer of ours. One past a sane length (a
// name of a few hundred KiB, an address longer than RFC 5321's 254
// bytes), or holding a control or bidirectional character (U+202E makes
// "eve<U+202E>nimda" read as "eveadmin" on the consent page), is not kept;
// the sign-in goes on without it.
func TestIdPProfileClaimsBounded(t *testing.T) {
	long := strings.Repeat("a", 300<<10)
	for _, tt := range []struct {
		name, email         string
		wantName, wantEmail string
	}{
		{"Alice Example", "alice@corp.example", "Alice Example", "alice@corp.example"},
		{"Zoë 李", "alice@corp.example", "Zoë 李", "alice@corp.example"},
		{long, "alice@corp.example", "", "alice@corp.example"},
		{"eve\u202enimda", "alice@corp.example", "", "alice@corp.example"},
		{"Alice\nExample", "alice@corp.example", "", "alice@corp.example"},
		{"Alice", strings.Repeat("a", 250) + "@corp.example", "Alice", ""},
		// README (Users): kept only when at most 256 and 254 bytes long.
		{strings.Repeat("é", 128), "alice@corp.example", strings.Repeat("é", 128), "alice@corp.example"},
		{strings.Repeat("é", 128) + "a", "alice@corp.example", "", "alice@corp.example"},
		{"Alice", strings.Repeat("a", 241) + "@corp.example", "Alice", strings.Repeat("a", 241) + "@corp.example"},
		{"Alice", strings.Repeat("a", 242) + "@corp.example", "Alice", ""},
		{"Alice", long + "@corp.example", "Alice", ""},
		{"Alice", "alice@corp.example\r\nBcc: eve@evil.example", "Alice", ""},
	} {
		e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.AllowedEmailDomains = nil })
		stub.set(func(s *stubIdP) { s.claims["name"], s.claims["email"] = tt.name, tt.email })
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
			t.Fatalf("name %.20q, email %.20q: sign-in = %d %q", tt.name, tt.email, res.status, res.body)
		}
		var u User
		if err := e.get(bucketUsers, stubIdPName+":u-1", &u); err != nil {
			t.Fatal(err)
		}
		if u.Name != tt.wantName || u.Email != tt.wantEmail {
			t.Errorf("name %.20q, email %.20q: stored %.20q, %.20q; want %q, %q", tt.name, tt.email, u.Name, u.Email, tt.wantName, tt.wantEmail)
		}
	}
	// An address not kept is no address: allowed_email_domains refuses it.
	e, stub, _ := newIdPEnv(t, nil)
	stub.set(func(s *stubIdP) { s.claims["email"] = strings.Repeat("a", 250) + "@corp.example" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden {
		t.Errorf("overlong address under allowed_email_domains: sign-in = %d, want 403", res.status)
	}
}

// TestIdPSubjectBounded: the provider's sub is kept as the account's
// idp_subject whatever claim names the user, so with user_claim email one
// past OpenID Connect's 255 characters, with a control or bidirectional
// character, or none at all (which any other subject without one would
// match) refuses the sign-in and stores nothing.
func TestIdPSubjectBounded(t *testing.T) {
	for _, tt := range []struct {
		sub  any // nil: no claim
		want int
	}{
		{"u-1", http.StatusSeeOther},
		{strings.Repeat("s", 255), http.StatusSeeOther},
		{strings.Repeat("s", 256), http.StatusForbidden},
		{strings.Repeat("s", 300<<10), http.StatusForbidden},
		{"u-1\u009b2J", http.StatusForbidden},
		{"eve\u202enimda", http.StatusForbidden},
		{"", http.StatusForbidden},
		{nil, http.StatusForbidden},
	} {
		e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
		stub.set(func(s *stubIdP) {
			if tt.sub == nil {
				delete(s.claims, "sub")
			} else {
				s.claims["sub"] = tt.sub
			}
		})
		res := e.idpSignIn(t, e.browser())
		if res.status != tt.want {
			t.Errorf("sub %.20q: sign-in = %d %.200q, want %d", tt.sub, res.status, res.body, tt.want)
			continue
		}
		var u User
		err := e.get(bucketUsers, stubIdPName+":alice@corp.example", &u)
		if created := err == nil; created != (tt.want == http.StatusSeeOther) || created && u.IdPSubject != tt.sub {
			t.Errorf("sub %.20q: user created %v with subject %.20q, want created %v", tt.sub, created, u.IdPSubject, tt.want == http.StatusSeeOther)
		}
	}
}

// TestIdPClientAuth: with a client_secret the code is redeemed with HTTP
// Basic authentication; without one the client is public: no secret,
// its client_id in the form, PKCE alone.
func TestIdPClientAuth(t *testing.T) {
	for _, secret := range []string{"stub-secret", ""} {
		e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.ClientSecret = secret })
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
			t.Fatalf("secret %q: sign-in = %d %q, want 303", secret, res.status, res.body)
		}
		want := ""
		if secret != "" {
			req := &http.Request{Header: http.Header{}}
			req.SetBasicAuth("mcp-auth", secret)
			want = req.Header.Get("Authorization")
		}
		if got := strings.Join(stub.tokenAuth, ","); got != want {
			t.Errorf("secret %q: token request Authorization = %q, want %q", secret, got, want)
		}
	}
}

// TestIdPLoginPage: the provider's button sits beside the password form
// while local users exist; pressing it needs the page's CSRF token, and
// a provider's user has no password.
func TestIdPLoginPage(t *testing.T) {
	e, stub, _ := newIdPEnv(t, nil)
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	b := e.browser()
	resp, err := b.Get(e.url(pathLogin, nil))
	if err != nil {
		t.Fatal(err)
	}
	page := readBody(t, resp)
	findForm(t, page, "login")
	button := findForm(t, page, "idp-"+stubIdPName)

	t.Run("CSRF token", func(t *testing.T) {
		press := func(form url.Values) (int, string) {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+button.action, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", e.srv.URL)
			resp, err := b.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			return resp.StatusCode, onward(t, resp)
		}
		for name, form := range map[string]url.Values{
			"none":    {"req": button.hidden["req"]},
			"another": {"req": button.hidden["req"], "csrf_token": {"x" + button.hidden.Get("csrf_token")}},
		} {
			if code, loc := press(form); code != http.StatusForbidden || loc != "" {
				t.Errorf("button with CSRF token %s = %d to %q; want 403, not sent to the provider", name, code, loc)
			}
		}
		if code, loc := press(button.hidden); code != http.StatusOK || !strings.HasPrefix(loc, stub.srv.URL+"/auth?") {
			t.Errorf("button with the page's CSRF token = %d to %q; want the page sending the browser to the provider", code, loc)
		}
	})

	t.Run("no password", func(t *testing.T) {
		if code, _ := e.loginFrom(t, "198.51.100.9:1", bUser, bPassword); code != http.StatusSeeOther {
			t.Fatalf("password login of a local user = %d, want 303", code)
		}
		for _, password := range []string{"", "stub-secret", "x"} {
			if code, _ := e.loginFrom(t, "198.51.100.9:1", stubIdPName+":u-1", password); code == http.StatusSeeOther || code == http.StatusOK {
				t.Errorf("password login as the provider's user with %q = %d, want refused", password, code)
			}
		}
	})
}

// TestIdPConfigChanges: a group mapping that takes a scope away revokes
// the user's grants holding it; the others apply it at their next
// refresh, and the session stays; re-pointing the provider (another issuer)
// or removing it signs its users out (refresh refused, browser session
// ended) but keeps them, so the provider configured again finds them.
func TestIdPConfigChanges(t *testing.T) {
	e, _, _ := newIdPEnv(t, nil)
	ctx := t.Context()
	base := e.iss.cfg
	apply := func(edit func(p *IdentityProvider) bool) {
		t.Helper()
		cfg := base
		cfg.IdentityProviders = nil
		p := base.IdentityProviders[0]
		p.GroupMap = maps.Clone(p.GroupMap)
		if edit(&p) {
			cfg.IdentityProviders = []IdentityProvider{p}
		}
		e.serve(cfg)
		if err := e.iss.ApplyConfigChanges(ctx); err != nil {
			t.Fatal(err)
		}
	}
	unchanged := func(*IdentityProvider) bool { return true }
	apply(unchanged) // the first configuration records itself
	const user = stubIdPName + ":u-1"
	browser := e.browser()
	if res := e.idpSignIn(t, browser); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	var tok *oauth2.Token
	grantOf := func(scopes ...string) *oauth2.Token {
		t.Helper()
		code, verifier := e.issueCode(t, codeSpec{client: bClientID, user: user, redirect: bRedirect, resource: bResource, scopes: scopes})
		tok, err := e.exchange(t, bClientID, "", code, verifier, oauth2.SetAuthURLParam("redirect_uri", bRedirect))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	newGrant := func() { t.Helper(); tok = grantOf("files:read", "files:write", "offline_access") }
	newGrant()
	refreshOf := func(tok *oauth2.Token) answer {
		t.Helper()
		a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {bClientID}}, "")
		if rt := a.str("refresh_token"); rt != "" {
			tok.RefreshToken = rt
		}
		return a
	}
	refresh := func() answer { t.Helper(); return refreshOf(tok) }
	sessionLive := func() bool {
		t.Helper()
		resp, err := browser.Get(e.url(pathAuthorize, authParams(testChallenge)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return !strings.HasPrefix(resp.Header.Get("Location"), pathLogin)
	}

	if a := refresh(); a.status != http.StatusOK || a.str("scope") != "files:read files:write offline_access" {
		t.Fatalf("refresh = %d %q %s, want 200 files:read files:write offline_access", a.status, a.str("scope"), a.raw)
	}
	// A mapping that takes files:write away revokes the grant holding it
	// (TestReloadNarrowingGroupsRevokes); one holding files:read only
	// stays, and so does the session.
	reader := grantOf("files:read", "offline_access")
	apply(func(p *IdentityProvider) bool { p.GroupMap["eng"] = []string{"readers"}; return true })
	if a := refresh(); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("refresh of the grant holding files:write after the mapping took it = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	if a := refreshOf(reader); a.status != http.StatusOK || a.str("scope") != "files:read offline_access" {
		t.Errorf("refresh of the grant holding files:read after the mapping changed = %d %q %s, want 200 files:read offline_access", a.status, a.str("scope"), a.raw)
	}
	if !sessionLive() {
		t.Errorf("a changed mapping ended the session")
	}
	for _, tt := range []struct {
		name string
		edit func(p *IdentityProvider) bool
	}{
		{"another issuer", func(p *IdentityProvider) bool { p.Issuer = "http://127.0.0.1:1"; return true }},
		{"removed", func(p *IdentityProvider) bool { return false }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			apply(unchanged)                 // configured again (after another issuer: a change too)
			e.clock.Advance(5 * time.Minute) // past the sign-out
			browser = e.browser()
			if res := e.idpSignIn(t, browser); res.status != http.StatusSeeOther {
				t.Fatalf("sign-in with the provider configured again = %d %q, want 303", res.status, res.body)
			}
			newGrant()
			apply(tt.edit)
			if a := refresh(); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
				t.Errorf("refresh = %d %s, want 400 invalid_grant", a.status, a.raw)
			}
			if sessionLive() {
				t.Errorf("the user's session outlived the change")
			}
			var u User
			if err := e.get(bucketUsers, user, &u); err != nil || u.IdentityProvider != stubIdPName {
				t.Errorf("user %s after the change: %+v (%v), want kept", user, u, err)
			}
		})
	}
}

// TestIdPReauthentication: an authorization request that asks for a new
// login (prompt=login, or max_age) sends the browser to the provider
// with the same demand, so that a session the provider still has does
// not sign the user in silently (OpenID Connect Core 1.0 section
// 3.1.2.1), and the provider's ID token must then say (auth_time) that
// the user authenticated since, give or take 30 s of clock skew: one
// that does not (a provider that ignored the demand) is refused and
// starts no session. The ID token we issue carries the provider's
// auth_time (never one in the future), not the time of our sign-in; a
// provider's authentication older than the user's removal here still
// signs in: revocations are ordered from our sign-in.
func TestIdPReauthentication(t *testing.T) {
	const noClaim = time.Duration(-1 << 62)
	tests := []struct {
		name                   string
		params                 url.Values    // of the authorization request
		authAge                time.Duration // of the provider's auth_time
		removed                bool          // the user was removed here before
		wantPrompt, wantMaxAge string        // asked of the provider
		wantStatus             int
		wantAuthAge            time.Duration // of our ID token's auth_time
	}{
		{"prompt=login, authenticated again", url.Values{"prompt": {"login"}}, 0, false, "login", "", http.StatusSeeOther, 0},
		{"prompt=login, within the clock skew", url.Values{"prompt": {"login"}}, 20 * time.Second, false, "login", "", http.StatusSeeOther, 0},
		// README (A new login): 30 s of clock skew allowed, no more.
		{"prompt=login, 30 s before the request", url.Values{"prompt": {"login"}}, 30 * time.Second, false, "login", "", http.StatusSeeOther, 0},
		{"prompt=login, 31 s before the request", url.Values{"prompt": {"login"}}, 31 * time.Second, false, "login", "", http.StatusForbidden, 0},
		{"max_age, 31 s before the request", url.Values{"max_age": {"0"}}, 31 * time.Second, false, "", "0", http.StatusForbidden, 0},
		{"prompt=login, the provider's old session", url.Values{"prompt": {"login"}}, 10 * time.Minute, false, "login", "", http.StatusForbidden, 0},
		{"prompt=login, no auth_time", url.Values{"prompt": {"login"}}, noClaim, false, "login", "", http.StatusForbidden, 0},
		{"max_age, authenticated within it", url.Values{"max_age": {"600"}}, 5 * time.Minute, false, "", "600", http.StatusSeeOther, 5 * time.Minute},
		{"max_age, authenticated before it", url.Values{"max_age": {"600"}}, 11 * time.Minute, false, "", "600", http.StatusForbidden, 0},
		{"max_age, no auth_time", url.Values{"max_age": {"600"}}, noClaim, false, "", "600", http.StatusForbidden, 0},
		// select_account asks the provider to let the user choose the
		// account, not to authenticate again (Core 3.1.2.1): the
		// provider's session signs in, as the account chosen there.
		{"prompt=select_account, the provider's old session", url.Values{"prompt": {"select_account"}}, 2 * time.Hour, false, "select_account", "", http.StatusSeeOther, 2 * time.Hour},
		{"prompt=select_account and max_age", url.Values{"prompt": {"select_account"}, "max_age": {"600"}}, 5 * time.Minute, false, "select_account", "600", http.StatusSeeOther, 5 * time.Minute},
		{"prompt=select_account and max_age, authenticated before it", url.Values{"prompt": {"select_account"}, "max_age": {"600"}}, 11 * time.Minute, false, "select_account", "600", http.StatusForbidden, 0},
		{"prompt=login select_account", url.Values{"prompt": {"login select_account"}}, 0, false, "login select_account", "", http.StatusSeeOther, 0},
		{"no demand, the provider's old session", nil, 2 * time.Hour, false, "", "", http.StatusSeeOther, 2 * time.Hour},
		// Unknown: our tokens say nothing (and no later demand for a recent
		// login accepts the session: TestIdPPromptLoginWithoutTheRequest).
		{"no demand, no auth_time", nil, noClaim, false, "", "", http.StatusSeeOther, noClaim},
		{"auth_time in the future", nil, -time.Hour, false, "", "", http.StatusSeeOther, 0},
		{"authenticated before the user was removed here", nil, 30 * time.Minute, true, "", "", http.StatusSeeOther, 30 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, stub, logs := newIdPEnv(t, nil)
			if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
				t.Fatalf("first sign-in = %d %q", res.status, res.body)
			}
			e.clock.Advance(time.Hour)
			if tt.removed {
				if err := e.iss.DeleteUser(t.Context(), stubIdPName+":u-1"); err != nil {
					t.Fatal(err)
				}
				e.clock.Advance(time.Minute)
			}
			logs.TakeAll()
			now := e.clock.Now()
			stub.set(func(s *stubIdP) {
				s.editToken = func(c jwt.MapClaims) {
					if tt.authAge != noClaim {
						c["auth_time"] = now.Add(-tt.authAge).Unix()
					}
				}
			})
			verifier := oauth2.GenerateVerifier()
			params := url.Values{"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "scope": {"openid files:read"}}
			maps.Copy(params, tt.params)
			c := e.browser()
			res := e.idpSignInWith(t, c, params)
			if got := res.provider; got.Get("prompt") != tt.wantPrompt || got.Get("max_age") != tt.wantMaxAge {
				t.Errorf("provider asked prompt %q, max_age %q; want %q, %q", got.Get("prompt"), got.Get("max_age"), tt.wantPrompt, tt.wantMaxAge)
			}
			if res.status != tt.wantStatus {
				t.Fatalf("sign-in = %d %q, want %d", res.status, res.body, tt.wantStatus)
			}
			if tt.wantStatus != http.StatusSeeOther {
				if !strings.Contains(res.body, "asks for a recent sign-in") {
					t.Errorf("refusal page = %q, want it to say why", res.body)
				}
				if got := loginFailures(logs); strings.Join(got, ",") != idpReasonToken {
					t.Errorf("security log reasons = %v, want [%s]", got, idpReasonToken)
				}
				if resp, err := c.Get(e.url(pathApps, nil)); err != nil || resp.StatusCode != http.StatusSeeOther {
					t.Errorf("apps page after a refused sign-in = %v (%v), want the login page (no session)", resp.Status, err)
				}
				return
			}
			cb, err := e.robot(c, e.srv.URL+res.location, bRedirect, "", "", "approve")
			if err != nil {
				t.Fatalf("consent: %v", err)
			}
			tok := e.post(t, pathToken, url.Values{
				"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")}, "redirect_uri": {bRedirect},
				"client_id": {bClientID}, "code_verifier": {verifier},
			}, "")
			if tok.status != http.StatusOK {
				t.Fatalf("token = %d %s, want 200", tok.status, tok.raw)
			}
			_, claims := claimsOf(t, tok.str("id_token"))
			if tt.wantAuthAge == noClaim {
				if v, ok := claims["auth_time"]; ok {
					t.Errorf("ID token auth_time = %v, want none", v)
				}
				return
			}
			if got, want := int64(claims["auth_time"].(float64)), now.Add(-tt.wantAuthAge).Unix(); got != want {
				t.Errorf("ID token auth_time = now - %v, want now - %v", now.Sub(time.Unix(got, 0)), tt.wantAuthAge)
			}
		})
	}
}

// TestIdPIDTokenHintSignInAsOther: a sign-in at an identity provider
// answers an id_token_hint as a password sign-in does
// (TestAuthorizeIDTokenHintSignInAsOther): the provider signing in
// another user than the one the hint names ends in login_required at the
// redirect URI, with state and iss and no code (OpenID Connect Core
// 3.1.2.2); the hinted user signing in there gets the code.
func TestIdPIDTokenHintSignInAsOther(t *testing.T) {
	e, stub, _ := newIdPEnv(t, nil)
	// signIn sends a new browser through the provider with the request
	// params, and returns where the request ended.
	signIn := func(t *testing.T, params url.Values) *url.URL {
		t.Helper()
		c := e.browser()
		res := e.idpSignInWith(t, c, params)
		if res.status != http.StatusSeeOther {
			t.Fatalf("sign-in = %d %q", res.status, res.body)
		}
		cb, err := e.robot(c, e.srv.URL+res.location, bRedirect, "", "", "approve")
		if err != nil {
			t.Fatalf("after the sign-in: %v", err)
		}
		return cb
	}
	// An ID token of the provider's user u-1, the stub's default.
	verifier := oauth2.GenerateVerifier()
	openid := url.Values{"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "scope": {"openid files:read"}}
	tok := e.post(t, pathToken, url.Values{
		"grant_type": {"authorization_code"}, "code": {signIn(t, openid).Query().Get("code")}, "redirect_uri": {bRedirect},
		"client_id": {bClientID}, "code_verifier": {verifier},
	}, "")
	hint := tok.str("id_token")
	if hint == "" {
		t.Fatalf("token = %d %s, want an ID token", tok.status, tok.raw)
	}
	for _, tt := range []struct {
		name, sub string
		code      bool
	}{
		{"the provider signs in another user", "u-2", false},
		{"the provider signs in the hinted user", "u-1", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stub.set(func(s *stubIdP) {
				s.claims = jwt.MapClaims{"sub": tt.sub, "email": tt.sub + "@corp.example", "email_verified": true, "groups": []string{"eng"}}
			})
			params := maps.Clone(openid)
			params.Set("id_token_hint", hint)
			q := signIn(t, params).Query()
			switch {
			case tt.code && q.Get("code") == "":
				t.Errorf("redirect %v, want a code", q)
			case !tt.code && (q.Get("error") != "login_required" || q.Get("code") != "" || q.Get("state") != "st-123" || q.Get("iss") == ""):
				t.Errorf("redirect %v, want login_required with state and iss, no code", q)
			}
		})
	}
}

// TestIdPAuthTimeByExactName: a demand for a new login is met by the
// provider's auth_time only, not by a lone member of another case
// (Auth_time), which encoding/json, and so go-oidc's Claims, would read
// for it: claim names are case-sensitive (RFC 7519 section 4), and a
// provider that lets users name claims of their own would sign one
// saying the user has just authenticated.
func TestIdPAuthTimeByExactName(t *testing.T) {
	e, stub, _ := newIdPEnv(t, nil)
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("first sign-in = %d %q", res.status, res.body)
	}
	e.clock.Advance(time.Hour)
	now := e.clock.Now()
	stub.set(func(s *stubIdP) {
		s.editToken = func(c jwt.MapClaims) { c["Auth_time"] = now.Unix() }
	})
	verifier := oauth2.GenerateVerifier()
	params := url.Values{"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "scope": {"openid files:read"}, "prompt": {"login"}}
	if res := e.idpSignInWith(t, e.browser(), params); res.status != http.StatusForbidden || !strings.Contains(res.body, "asks for a recent sign-in") {
		t.Errorf("sign-in with prompt=login and only Auth_time = %d %q, want 403 asking for a recent sign-in", res.status, res.body)
	}
}

// TestIdPRecheckEndsSession: the login session of a provider's user ends
// with recheck: after it, an authorization request goes to the login
// page, and so to the provider, again.
func TestIdPRecheckEndsSession(t *testing.T) {
	e, _, _ := newIdPEnv(t, func(p *IdentityProvider) { p.Recheck = 10 * time.Minute })
	browser := e.browser()
	if res := e.idpSignIn(t, browser); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	for _, tt := range []struct {
		after     time.Duration
		wantLogin bool
	}{{9 * time.Minute, false}, {2 * time.Minute, true}} {
		e.clock.Advance(tt.after)
		resp, err := browser.Get(e.url(pathAuthorize, authParams(testChallenge)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if login := strings.HasPrefix(resp.Header.Get("Location"), pathLogin); login != tt.wantLogin {
			t.Errorf("authorize %v later goes to %q; want the login page %v", tt.after, resp.Header.Get("Location"), tt.wantLogin)
		}
	}
}

// TestIdPPromptLoginWithoutTheRequest: prompt=login demands a login
// after the request. The provider is asked for one (prompt=login) only
// when the sign-in carries the pending request; a sign-in started without
// it (the apps page's "Continue with", or the login form with req
// removed) is silent at the provider, with its old auth_time, and must
// not satisfy the pending request at /consent: a new session alone is no
// new login (review s13-fresh F1).
func TestIdPPromptLoginWithoutTheRequest(t *testing.T) {
	// The provider's silent sign-in says when its session began, says
	// nothing, or says something unusable (review s13-fresh2 F1).
	for _, authTime := range []string{"old", "none", "a string"} {
		t.Run("auth_time "+authTime, func(t *testing.T) { promptLoginWithoutTheRequest(t, authTime) })
	}
}

func promptLoginWithoutTheRequest(t *testing.T, authTime string) {
	e, stub, _ := newIdPEnv(t, nil)
	b := e.browser()
	if res := e.idpSignIn(t, b); res.status != http.StatusSeeOther {
		t.Fatalf("first sign-in = %d %q", res.status, res.body)
	}
	e.clock.Advance(time.Hour)
	first := e.clock.Now().Add(-time.Hour)
	// The provider still has its session of an hour ago: it signs in
	// silently unless asked for a new login.
	stub.set(func(s *stubIdP) {
		s.editToken = func(c jwt.MapClaims) {
			switch authTime {
			case "old":
				c["auth_time"] = first.Unix()
			case "a string":
				c["auth_time"] = first.Format(time.RFC3339)
			}
		}
	})

	// The client asks for a new login.
	p := authParams(testChallenge)
	p.Set("prompt", "login")
	resp, err := b.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	login, _ := url.Parse(e.srv.URL)
	login, _ = login.Parse(resp.Header.Get("Location"))
	if login.Path != pathLogin {
		t.Fatalf("authorize prompt=login -> %q, want the login page", resp.Header.Get("Location"))
	}
	reqID := login.Query().Get("req")

	// Whoever is at the browser presses "Continue with" without the request.
	if resp, err = b.Get(login.String()); err != nil {
		t.Fatal(err)
	}
	f := findForm(t, readBody(t, resp), "idp-"+stubIdPName)
	f.hidden.Del("req")
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+f.action, strings.NewReader(f.hidden.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.srv.URL)
	var providerQuery url.Values
	for n := range 3 {
		if n == 1 {
			providerQuery = req.URL.Query()
		}
		if resp, err = b.Do(req); err != nil {
			t.Fatal(err)
		}
		loc := onward(t, resp)
		if loc == "" {
			t.Fatalf("step %d = %d, sending the browser nowhere", n, resp.StatusCode)
		}
		req, _ = http.NewRequest(http.MethodGet, loc, nil)
		if !req.URL.IsAbs() {
			req, _ = http.NewRequest(http.MethodGet, e.srv.URL+loc, nil)
		}
	}
	if providerQuery.Get("prompt") != "" {
		t.Fatalf("provider was asked prompt=%q", providerQuery.Get("prompt"))
	}

	// The pending prompt=login request now proceeds on that silent sign-in.
	resp, err = b.Get(e.url(pathConsent, url.Values{"req": {reqID}}))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode == http.StatusOK && strings.Contains(body, `id="consent"`) {
		t.Fatalf("consent page shown for a prompt=login request on a provider session authenticated %v ago (no new login happened)", e.clock.Now().Sub(first))
	}
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, pathLogin) {
		t.Fatalf("consent = %d %q, want the login page", resp.StatusCode, loc)
	}
}

// TestIdPAuthTimeUnusable: an auth_time that is no NumericDate (a date
// string), or one out of range, counts as none: a sign-in that demanded
// no new login goes on (as when auth_time was not read), and the
// session's time is then now, never one the store cannot hold (review
// s13-fresh F2).
func TestIdPAuthTimeUnusable(t *testing.T) {
	for _, v := range []any{"2025-01-01T00:00:00Z", -1e12, 1e20, true} {
		e, stub, _ := newIdPEnv(t, nil)
		stub.set(func(s *stubIdP) {
			s.editToken = func(c jwt.MapClaims) { c["auth_time"] = v }
		})
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
			t.Errorf("sign-in without prompt or max_age, auth_time %v = %d %q; want it signed in", v, res.status, res.body)
		}
	}
}

// TestIdPReauthenticationAfterTheRequest: the login prompt=login asks of
// the provider is after the request's own time even when this instance's
// clock runs behind the one that took the request (freshLogin compares
// the session with the request's time).
func TestIdPReauthenticationAfterTheRequest(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	ar := &authRequest{Prompt: []string{"login"}, LoginAfter: now.Add(2 * time.Second)}
	if after, _ := idpReauthentication(ar, now); !after.Equal(ar.LoginAfter) {
		t.Errorf("login asked after %v, want the request's time %v", after, ar.LoginAfter)
	}
	ar.LoginAfter = now.Add(-time.Second)
	if after, _ := idpReauthentication(ar, now); !after.Equal(now) {
		t.Errorf("login asked after %v, want now %v", after, now)
	}
}

// TestIdPReloadWindowSignsNoOneIn: after a reload that re-pointed the
// identity provider (another client_id there) has been applied (B), the
// old configuration's servers (A), which still trust it as it was, sign
// none of its users in: 403 may not sign in here, no user or session
// written. A's session stood otherwise, accepted by B (the same provider
// name), and no reload came after to sign it out (TestReloadWindowProvisionsNothing
// for ID-JAGs).
func TestIdPReloadWindowSignsNoOneIn(t *testing.T) {
	e, _, logs := newIdPEnv(t, nil)
	apply, at := e.rolling(t)
	apply()
	a := e.iss
	cfg := a.cfg
	cfg.IdentityProviders = append([]IdentityProvider(nil), cfg.IdentityProviders...)
	cfg.IdentityProviders[0].ClientID = "mcp-auth-2"
	e.serve(cfg)
	apply()

	at(a)
	users := e.count(bucketUsers)
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden || !strings.Contains(res.body, "may not sign in here") {
		t.Errorf("sign-in at A after B re-pointed the provider = %d %q, want 403 may not sign in here", res.status, res.body)
	}
	if u := e.count(bucketUsers); u != users {
		t.Errorf("users after A's refusal = %d, want %d", u, users)
	}
	if got := loginFailures(logs); strings.Join(got, ",") != idpReasonRefused {
		t.Errorf("security log reasons = %v, want [%s]", got, idpReasonRefused)
	}
	for _, k := range e.keys(bucketSessions) {
		var s session
		if err := e.get(bucketSessions, k, &s); err != nil || s.User != "" {
			t.Errorf("session %s after A's refusal: user %q (%v), want none signed in", k[:4], s.User, err)
		}
	}
}

// newTwoIdPEnv is the browser environment with two stub providers, corp
// and evil (an attacker's), each mapping eng to staff; its security log
// is recorded.
func newTwoIdPEnv(t *testing.T) (*testEnv, map[string]*stubIdP, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	stubs := map[string]*stubIdP{}
	e := newBrowserEnv(t, func(c *Config) {
		for _, name := range []string{"corp", "evil"} {
			stubs[name] = newStubIdP(t, c.Now)
			c.IdentityProviders = append(c.IdentityProviders, IdentityProvider{Name: name, Issuer: stubs[name].srv.URL,
				ClientID: "mcp-auth", ClientSecret: "stub-secret", GroupMap: map[string][]string{"eng": {"staff"}, "ops": {"readers"}}})
		}
		c.Logger = zap.New(core)
	})
	return e, stubs, logs
}

// TestIdPAnswerBoundToItsProvider: with two identity providers, one of
// them an attacker's, a provider's answer (code, state, iss) taken to
// the other's redirect URI is refused before any code exchange: the
// state names the provider the sign-in started with, so neither
// provider's token endpoint sees the other's code, and the state is
// spent. Coverage of a mix-up (RFC 9207 section 1; distinct redirect
// URIs per provider and the state's binding).
func TestIdPAnswerBoundToItsProvider(t *testing.T) {
	for _, tt := range []struct{ from, to string }{{"corp", "evil"}, {"evil", "corp"}} {
		t.Run(tt.from+" to "+tt.to, func(t *testing.T) {
			e, stubs, logs := newTwoIdPEnv(t)
			c := e.browser()
			res := e.idpSignInAt(t, c, tt.from, nil, "/login/"+tt.to+"/callback")
			if res.status != http.StatusBadRequest || !strings.Contains(res.body, "Sign-in expired") {
				t.Fatalf("%s's answer at %s's callback = %d %q, want 400 Sign-in expired", tt.from, tt.to, res.status, res.body)
			}
			for name, s := range stubs {
				s.mu.Lock()
				if len(s.tokenAuth) != 0 {
					t.Errorf("%s's token endpoint was called %d times, want none", name, len(s.tokenAuth))
				}
				s.mu.Unlock()
			}
			if n := e.count(bucketUsers); n != 0 {
				t.Errorf("%d users provisioned, want none", n)
			}
			// The state was spent: the answer at its own callback now.
			own := strings.Replace(res.callback, "/login/"+tt.to+"/", "/login/"+tt.from+"/", 1)
			resp, err := c.Get(own)
			if err != nil {
				t.Fatal(err)
			}
			if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Sign-in expired") {
				t.Errorf("the answer at its own callback after = %d %q, want 400 Sign-in expired", resp.StatusCode, body)
			}
			if got := loginFailures(logs); strings.Join(got, ",") != idpReasonState+","+idpReasonState {
				t.Errorf("security log reasons = %v, want two %s", got, idpReasonState)
			}
			// A sign-in at either that keeps to its own callback works.
			if res := e.idpSignInAt(t, e.browser(), tt.from, nil, ""); res.status != http.StatusSeeOther {
				t.Errorf("sign-in at %s = %d %q, want 303", tt.from, res.status, res.body)
			}
		})
	}
}

// TestIdPDiscoveryIssuer: the provider's metadata must name the
// configured issuer exactly (OpenID Connect Discovery section 4.3; go-oidc
// checks): metadata naming another issuer, or the same with a trailing
// slash, makes the provider unavailable (502) and signs no one in, and
// it is read again after idpRetryAfter. Metadata read once is kept: a
// provider whose metadata names another issuer later (an attacker who
// took its host, say) cannot have ID tokens of that issuer accepted.
func TestIdPDiscoveryIssuer(t *testing.T) {
	e, stub, _ := newIdPEnv(t, nil)
	for _, named := range []string{"https://evil.example", stub.srv.URL + "/"} {
		stub.set(func(s *stubIdP) { s.metaIssuer = named })
		if res := e.idpSignIn(t, e.browser()); res.status != http.StatusBadGateway || !strings.Contains(res.body, "cannot be reached") {
			t.Fatalf("metadata naming %q: sign-in = %d %q, want 502", named, res.status, res.body)
		}
		e.clock.Advance(idpRetryAfter)
	}
	stub.set(func(s *stubIdP) { s.metaIssuer = "" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("metadata naming the issuer: sign-in = %d %q, want 303", res.status, res.body)
	}
	const evil = "https://evil.example"
	stub.set(func(s *stubIdP) {
		s.metaIssuer = evil
		s.editToken = func(c jwt.MapClaims) { c["iss"] = evil }
	})
	e.clock.Advance(idpRetryAfter)
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden || !strings.Contains(res.body, "is not valid") {
		t.Fatalf("metadata and ID token naming another issuer later: sign-in = %d %q, want 403", res.status, res.body)
	}
}

// TestIdPAccountsNotLinked: an attacker's provider whose user has the
// same sub, address and name as another provider's user signs in as an
// account of its own: nothing is linked by sub or email across
// providers, and the other account keeps its groups (coverage; OpenID Connect Core section 5.7:
// only iss and sub together identify a user).
func TestIdPAccountsNotLinked(t *testing.T) {
	e, stubs, _ := newTwoIdPEnv(t)
	for _, s := range stubs {
		s.set(func(s *stubIdP) { s.claims["email"] = "alice@corp.example" })
	}
	if res := e.idpSignInAt(t, e.browser(), "corp", nil, ""); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in at corp = %d %q, want 303", res.status, res.body)
	}
	stubs["evil"].set(func(s *stubIdP) { s.claims["groups"] = []string{"ops"}; s.claims["name"] = "Alice" })
	if res := e.idpSignInAt(t, e.browser(), "evil", nil, ""); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in at evil = %d %q, want 303", res.status, res.body)
	}
	for _, want := range []User{
		{Username: "corp:u-1", IdentityProvider: "corp", IdPGroups: []string{"eng"}},
		{Username: "evil:u-1", IdentityProvider: "evil", IdPGroups: []string{"ops"}},
	} {
		var u User
		if err := e.get(bucketUsers, want.Username, &u); err != nil || u.IdentityProvider != want.IdentityProvider || !slices.Equal(u.IdPGroups, want.IdPGroups) {
			t.Errorf("user %s = provider %q, groups %v (%v); want %q, %v", want.Username, u.IdentityProvider, u.IdPGroups, err, want.IdentityProvider, want.IdPGroups)
		}
	}
	if n := e.count(bucketUsers); n != 2 {
		t.Errorf("%d stored users, want 2", n)
	}
}

// TestIdPRepointedAccountNotTakenOver: after an operator re-points a
// provider to another issuer or tenant, that side's user with the same
// sub is another person (OpenID Connect Core section 5.7: iss and sub
// together, and a multi-tenant issuer's sub is unique in its tenant
// only). It does not sign in as the kept account of the same name, which
// would hand it the account's consents, name and groups, and what MCP
// servers keep under its sub: the sign-in is refused as one whose name
// belongs to another account, and the account is unchanged. A provider
// re-pointed back signs the account's own user in again, and one given
// another client_id at the same issuer and tenant keeps its users.
func TestIdPRepointedAccountNotTakenOver(t *testing.T) {
	for _, tt := range []struct {
		name     string
		repoint  func(p *IdentityProvider, other *stubIdP)
		takeOver bool
	}{
		{"another tenant", func(p *IdentityProvider, _ *stubIdP) { p.Tenant = "fabrikam" }, false},
		{"another issuer", func(p *IdentityProvider, other *stubIdP) { p.Issuer = other.srv.URL }, false},
		{"another client_id", func(p *IdentityProvider, _ *stubIdP) { p.ClientID = "mcp-auth-2" }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.Tenant = "acme" })
			apply, _ := e.rolling(t)
			apply()
			stub.set(func(s *stubIdP) { s.claims["tenant"], s.claims["name"] = "acme", "Alice" })
			if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
				t.Fatalf("sign-in of acme's u-1 = %d %q, want 303", res.status, res.body)
			}
			first := e.iss.cfg
			other := newStubIdP(t, e.clock.Now)
			cfg := first
			cfg.IdentityProviders = slices.Clone(cfg.IdentityProviders)
			tt.repoint(&cfg.IdentityProviders[0], other)
			e.serve(cfg)
			apply()
			for _, s := range []*stubIdP{stub, other} {
				s.set(func(s *stubIdP) {
					s.claims["tenant"], s.claims["name"], s.claims["groups"] = cfg.IdentityProviders[0].Tenant, "Mallory", []string{"eng"}
				})
			}
			res := e.idpSignIn(t, e.browser())
			var u User
			if err := e.get(bucketUsers, stubIdPName+":u-1", &u); err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.takeOver && (res.status != http.StatusSeeOther || u.Name != "Mallory"):
				t.Fatalf("same issuer and tenant, u-1 signs in: %d, account name %q; want 303, the same account", res.status, u.Name)
			case tt.takeOver:
				return
			case res.status != http.StatusForbidden || !strings.Contains(res.body, "may not sign in here"):
				t.Errorf("the new population's u-1 signs in = %d %q, want 403 may not sign in here", res.status, res.body)
			}
			if u.Name != "Alice" {
				t.Errorf("the account's name after the new population's sign-in = %q, want Alice's, unchanged", u.Name)
			}
			e.serve(first)
			apply()
			stub.set(func(s *stubIdP) { s.claims["tenant"], s.claims["name"] = "acme", "Alice" })
			if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
				t.Errorf("re-pointed back, acme's u-1 signs in = %d %q, want 303", res.status, res.body)
			}
		})
	}
}

// TestIdPRepointForgetsUnplacedUsers: a user an earlier release
// provisioned records no issuer or tenant. Its sign-in while the provider
// points where it did is taken as its own, and records them, as does a
// configuration applied with the provider pointing where it did (the
// upgrade); a re-point cannot tell where such a user (provisioned by an
// instance of the earlier release during a rolling upgrade) came from,
// so it deletes the account (as DeleteUser does, its consents with it)
// rather than hand it to the new population's user of the same sub, who
// signs in as a new account.
func TestIdPRepointForgetsUnplacedUsers(t *testing.T) {
	const name = stubIdPName + ":u-1"
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.Tenant = "acme" })
	apply, _ := e.rolling(t)
	apply()
	stub.set(func(s *stubIdP) { s.claims["tenant"], s.claims["name"] = "acme", "Alice" })
	unplace := func() {
		t.Helper()
		err := e.store.Update(t.Context(), func(tx store.Tx) error {
			u, err := usersIn(tx).get(name)
			if err != nil {
				return err
			}
			u.IdPIssuer, u.IdPTenant = "", ""
			if err := usersIn(tx).put(u); err != nil {
				return err
			}
			return consentsIn(tx).add(name, bClientID, bResource, "", []string{"files:read"}, "", e.clock.Now(), nil)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	stored := func() (User, error) {
		var u User
		err := e.get(bucketUsers, name, &u)
		return u, err
	}
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	unplace()
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in of the earlier release's user = %d %q, want 303", res.status, res.body)
	}
	if u, err := stored(); err != nil || u.IdPIssuer != stub.srv.URL || u.IdPTenant != "acme" {
		t.Fatalf("the earlier release's user after its sign-in: issuer %q, tenant %q (%v); want %q, acme recorded", u.IdPIssuer, u.IdPTenant, err, stub.srv.URL)
	}

	unplace()
	e.serve(e.iss.cfg)
	apply()
	if u, err := stored(); err != nil || u.IdPIssuer != stub.srv.URL || u.IdPTenant != "acme" {
		t.Fatalf("the earlier release's user after an unchanged reload: issuer %q, tenant %q (%v); want %q, acme recorded", u.IdPIssuer, u.IdPTenant, err, stub.srv.URL)
	}

	unplace()
	cfg := e.iss.cfg
	cfg.IdentityProviders = slices.Clone(cfg.IdentityProviders)
	cfg.IdentityProviders[0].Tenant = "fabrikam"
	e.serve(cfg)
	apply()
	if _, err := stored(); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the earlier release's user after the re-point: %v, want it deleted", err)
	}
	if n := e.count(bucketConsents); n != 0 {
		t.Errorf("%d consents after the re-point, want the deleted user's gone", n)
	}
	stub.set(func(s *stubIdP) { s.claims["tenant"], s.claims["name"] = "fabrikam", "Mallory" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in of fabrikam's u-1 = %d %q, want 303, a new account", res.status, res.body)
	}
	if u, err := stored(); err != nil || u.Name != "Mallory" || u.IdPTenant != "fabrikam" {
		t.Errorf("fabrikam's u-1: name %q, tenant %q (%v); want a new account, Mallory of fabrikam", u.Name, u.IdPTenant, err)
	}
}

// TestIdPRepointKeepsDisabledUnplacedUser: a user an earlier release
// provisioned (no issuer recorded) whom an administrator disabled is not
// deleted by a re-point of its provider, as one not disabled is
// (TestIdPRepointForgetsUnplacedUsers): deleted, it would sign in again
// as a new, enabled account. Kept, it stays refused, whoever signs in
// with its sub.
func TestIdPRepointKeepsDisabledUnplacedUser(t *testing.T) {
	const name = stubIdPName + ":u-1"
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.Tenant = "acme" })
	apply, _ := e.rolling(t)
	apply()
	stub.set(func(s *stubIdP) { s.claims["tenant"] = "acme" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	if err := e.iss.DisableUser(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	err := e.store.Update(t.Context(), func(tx store.Tx) error {
		u, err := usersIn(tx).get(name)
		if err != nil {
			return err
		}
		u.IdPIssuer, u.IdPTenant = "", ""
		return usersIn(tx).put(u)
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.iss.cfg
	cfg.IdentityProviders = slices.Clone(cfg.IdentityProviders)
	cfg.IdentityProviders[0].Tenant = "fabrikam"
	e.serve(cfg)
	apply()
	var u User
	if err := e.get(bucketUsers, name, &u); err != nil || !u.Disabled {
		t.Fatalf("the disabled user after the re-point: disabled %v (%v), want kept, disabled", u.Disabled, err)
	}
	// README: the admin view shows it as unplaced.
	w := httptest.NewRecorder()
	e.iss.newAdmin(bcrypt.MinCost).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/users/"+url.PathEscape(name), nil))
	var view map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &view); err != nil || w.Code != http.StatusOK || view["idp_issuer"] != "(unplaced at a re-point)" {
		t.Errorf("admin view of the kept user = %d %s, want idp_issuer \"(unplaced at a re-point)\"", w.Code, w.Body)
	}
	stub.set(func(s *stubIdP) { s.claims["tenant"] = "fabrikam" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden {
		t.Errorf("sign-in with the disabled user's sub after the re-point = %d, want 403", res.status)
	}
	// Enabled again by an operator, it is still the account of the
	// population before the re-point: the new tenant's user with its sub
	// is refused, not given it.
	if err := e.iss.EnableUser(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden {
		t.Errorf("sign-in with its sub after an operator enabled the kept user = %d, want 403 (another account)", res.status)
	}
}

// TestIdPSignInReadsNoOtherUsers: whether a person has a disabled
// account under another name (TestIdPDisabledUserOtherAccount) is read
// from an index of the disabled accounts by sub, not over every user of
// the provider: that took each sign-in and ID-JAG of a provider with
// user_claim email about 1 s per 50,000 users, in a write transaction
// (on bbolt every other write waited; on PostgreSQL concurrent sign-ins
// failed to serialize and gave up). An account disabled by an earlier
// version, which wrote no index, is indexed at the start.
func TestIdPSignInReadsNoOtherUsers(t *testing.T) {
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
	signIn := func(address string, want int) {
		t.Helper()
		stub.set(func(s *stubIdP) { s.claims["email"] = address })
		if res := e.idpSignIn(t, e.browser()); res.status != want {
			t.Errorf("sign-in as %s = %d %q, want %d", address, res.status, res.body, want)
		}
	}
	signIn("Alice@corp.example", http.StatusSeeOther)
	signIn("alice@corp.example", http.StatusSeeOther)
	// Disabled by an earlier version: the record alone.
	var u User
	if err := e.get(bucketUsers, stubIdPName+":alice@corp.example", &u); err != nil {
		t.Fatal(err)
	}
	u.Disabled = true
	e.put(bucketUsers, u.Username, userRecord(&u), time.Time{})
	for k := range 200 {
		name := fmt.Sprintf("%s:user%03d@corp.example", stubIdPName, k)
		e.put(bucketUsers, name, userRecord(&User{Username: name, Source: sourceIdP, IdentityProvider: stubIdPName,
			IdPSubject: fmt.Sprintf("sub-%03d", k), IdPIssuer: u.IdPIssuer}), time.Time{})
	}
	counted := &listCounted{Store: e.store, bucket: bucketUsers}
	e.store = counted
	e.serve(e.iss.cfg)
	counted.listed.Store(0)
	listedNone := func() {
		t.Helper()
		if n := counted.listed.Load(); n != 0 {
			t.Errorf("the sign-ins listed %d users of the provider, want none", n)
		}
	}
	signIn("Alice@corp.example", http.StatusForbidden)
	if err := e.iss.EnableUser(t.Context(), u.Username); err != nil {
		t.Fatal(err)
	}
	signIn("Alice@corp.example", http.StatusSeeOther)
	listedNone()
	if err := e.iss.DisableUser(t.Context(), stubIdPName+":Alice@corp.example"); err != nil {
		t.Fatal(err)
	}
	counted.listed.Store(0) // disabling, an operator's act, may
	signIn("alice@corp.example", http.StatusForbidden)
	stub.set(func(s *stubIdP) { s.claims["sub"] = "bob-sub" })
	signIn("bob@corp.example", http.StatusSeeOther)
	listedNone()
}

// TestIdPDisableEndsOtherAccountsSessions: disabling a provider's user
// ends the login sessions and grants of the person's other accounts at
// that provider too (the same sub, another name its user_claim gave),
// which TestIdPDisabledUserOtherAccount keeps from signing in again: the
// person must not go on, until recheck, in a session or with a refresh
// token of an account prepared before. Its refresh token is refused and
// its access token revoked at the gateway; another person's are kept.
func TestIdPDisableEndsOtherAccountsSessions(t *testing.T) {
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
	browsers := map[string]*http.Client{}
	for _, address := range []string{"Alice@corp.example", "alice@corp.example", "bob@corp.example"} {
		stub.set(func(s *stubIdP) { s.claims["email"] = address; s.claims["sub"] = strings.ToLower(address)[:3] })
		browsers[address] = e.browser()
		if res := e.idpSignIn(t, browsers[address]); res.status != http.StatusSeeOther {
			t.Fatalf("sign-in as %s = %d %q, want 303", address, res.status, res.body)
		}
	}
	grants := map[string]*oauth2.Token{}
	for _, address := range []string{"alice@corp.example", "bob@corp.example"} {
		code, verifier := e.issueCode(t, codeSpec{client: bClientID, user: stubIdPName + ":" + address, redirect: bRedirect,
			resource: bResource, scopes: []string{"files:read", "offline_access"}})
		tok, err := e.exchange(t, bClientID, "", code, verifier, oauth2.SetAuthURLParam("redirect_uri", bRedirect))
		if err != nil {
			t.Fatal(err)
		}
		grants[address] = tok
	}
	if err := e.iss.DisableUser(t.Context(), stubIdPName+":Alice@corp.example"); err != nil {
		t.Fatal(err)
	}
	for address, wantLogin := range map[string]bool{"alice@corp.example": true, "bob@corp.example": false} {
		resp, err := browsers[address].Get(e.url(pathAuthorize, authParams(testChallenge)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if login := strings.HasPrefix(resp.Header.Get("Location"), pathLogin); login != wantLogin {
			t.Errorf("%s's session: authorize goes to %q; want the login page %v", address, resp.Header.Get("Location"), wantLogin)
		}
		want := http.StatusOK
		if wantLogin {
			want = http.StatusBadRequest
		}
		tok := grants[address]
		a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {bClientID}}, "")
		if a.status != want {
			t.Errorf("%s's refresh after the disable = %d %s, want %d", address, a.status, a.raw, want)
		}
		if revoked := e.revokedToken(t, tok.AccessToken); revoked != wantLogin {
			t.Errorf("%s's access token revoked at the gateway after the disable = %v, want %v", address, revoked, wantLogin)
		}
	}
}

// TestIdPDisabledAtSiblingPairwiseSub: two applications registered at
// one provider whose sub is per application (Entra ID's: pairwise
// subject identifiers), both naming users by the same claim (oid, which
// is the person's at every application). Disabling the person's account
// at either keeps them out at the other: its login session ends, its
// refresh is refused, and its sign-in is refused; enabling it again lets
// them in. Their subs differ, so the sub alone, which links the
// accounts of a provider whose sub is the person's, linked nothing: the
// person disabled at one application went on at the other.
func TestIdPDisabledAtSiblingPairwiseSub(t *testing.T) {
	for _, disabled := range []string{"corp", "corp-b"} {
		t.Run(disabled, func(t *testing.T) {
			var stub *stubIdP
			e := newBrowserEnv(t, func(c *Config) {
				stub = newStubIdP(t, c.Now)
				for _, app := range []struct{ name, clientID string }{{"corp", "app-a"}, {"corp-b", "app-b"}} {
					c.IdentityProviders = append(c.IdentityProviders, IdentityProvider{Name: app.name, Issuer: stub.srv.URL,
						ClientID: app.clientID, ClientSecret: "stub-secret", UserClaim: "oid", GroupMap: map[string][]string{"eng": {"staff"}}})
				}
			})
			stub.set(func(s *stubIdP) {
				s.claims["oid"] = "o-1"
				s.editToken = func(c jwt.MapClaims) { c["sub"] = "pairwise-" + c["aud"].(string) }
			})
			other := map[string]string{"corp": "corp-b", "corp-b": "corp"}[disabled]
			browser := e.browser()
			for _, name := range []string{other, disabled} {
				b := e.browser()
				if name == other {
					b = browser
				}
				if res := e.idpSignInAt(t, b, name, nil, ""); res.status != http.StatusSeeOther {
					t.Fatalf("sign-in at %s = %d %q, want 303", name, res.status, res.body)
				}
			}
			var u User
			if err := e.get(bucketUsers, other+":o-1", &u); err != nil || u.IdPSubject != "pairwise-"+map[string]string{"corp": "app-a", "corp-b": "app-b"}[other] {
				t.Fatalf("user %s: sub %q (%v), want its application's", other+":o-1", u.IdPSubject, err)
			}
			code, verifier := e.issueCode(t, codeSpec{client: bClientID, user: other + ":o-1", redirect: bRedirect,
				resource: bResource, scopes: []string{"files:read", "offline_access"}})
			tok, err := e.exchange(t, bClientID, "", code, verifier, oauth2.SetAuthURLParam("redirect_uri", bRedirect))
			if err != nil {
				t.Fatal(err)
			}
			if err := e.iss.DisableUser(t.Context(), disabled+":o-1"); err != nil {
				t.Fatal(err)
			}
			resp, err := browser.Get(e.url(pathAuthorize, authParams(testChallenge)))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pathLogin) {
				t.Errorf("%s's session after the disable at %s: authorize goes to %q, want the login page", other, disabled, loc)
			}
			a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {bClientID}}, "")
			if a.status != http.StatusBadRequest {
				t.Errorf("%s's refresh after the disable at %s = %d %s, want 400", other, disabled, a.status, a.raw)
			}
			if res := e.idpSignInAt(t, e.browser(), other, nil, ""); res.status != http.StatusForbidden || !strings.Contains(res.body, "may not sign in here") {
				t.Errorf("sign-in at %s after the disable at %s = %d %q, want 403 may not sign in here", other, disabled, res.status, res.body)
			}
			if err := e.iss.EnableUser(t.Context(), disabled+":o-1"); err != nil {
				t.Fatal(err)
			}
			if res := e.idpSignInAt(t, e.browser(), other, nil, ""); res.status != http.StatusSeeOther {
				t.Errorf("sign-in at %s once enabled = %d %q, want 303", other, res.status, res.body)
			}
		})
	}
}

// TestIdPDisabledUserAfterUserClaimSub: a person disabled while the
// provider named its users by email stays refused after the operator
// changes user_claim to sub (or drops it: sub is the default): the
// person's sign-in then names a new account, p:<sub>, and must not be
// taken as a fresh person's. Disabling an account of the sub era signs
// out (and, at sign-in, refuses) the person's accounts of the email era
// likewise.
func TestIdPDisabledUserAfterUserClaimSub(t *testing.T) {
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
	const emailName = stubIdPName + ":alice@corp.example"
	stub.set(func(s *stubIdP) { s.claims["email"] = "alice@corp.example" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in by email = %d %q, want 303", res.status, res.body)
	}
	var u User
	if err := e.get(bucketUsers, emailName, &u); err != nil {
		t.Fatal(err)
	}
	if err := e.iss.DisableUser(t.Context(), emailName); err != nil {
		t.Fatal(err)
	}
	cfg := e.iss.cfg
	cfg.IdentityProviders = slices.Clone(cfg.IdentityProviders)
	userClaim := func(claim string) {
		cfg.IdentityProviders[0].UserClaim = claim
		e.serve(cfg)
		if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	userClaim("sub")
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden {
		t.Errorf("the disabled person's sign-in after user_claim sub = %d %q, want 403", res.status, res.body)
	}
	if err := e.iss.EnableUser(t.Context(), emailName); err != nil {
		t.Fatal(err)
	}
	browser := e.browser()
	if res := e.idpSignIn(t, browser); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in once enabled = %d %q, want 303", res.status, res.body)
	}
	// Now disable the sub era's account: the email era's is signed out
	// and its sign-in refused. Bring back user_claim email.
	subName := stubIdPName + ":" + u.IdPSubject
	if err := e.iss.DisableUser(t.Context(), subName); err != nil {
		t.Fatal(err)
	}
	userClaim("email")
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden {
		t.Errorf("the person's sign-in by email with its sub account disabled = %d %q, want 403", res.status, res.body)
	}
}

// TestIdPEmailDomainNarrowed: allowed_email_domains is today's rule, as
// the group mapping is: after a reload takes a user's domain out of it
// (or lists domains where there were none), the user gets no new token,
// from a refresh, a code issued before the reload or the signed-in
// session, as for a user the provider would not let in now; a sign-in
// is refused too. The users of a domain still listed keep theirs.
func TestIdPEmailDomainNarrowed(t *testing.T) {
	e, stub, _ := newIdPEnv(t, nil)
	ctx := t.Context()
	base := e.iss.cfg
	apply := func(domains ...string) {
		t.Helper()
		cfg := base
		p := base.IdentityProviders[0]
		p.AllowedEmailDomains = domains
		cfg.IdentityProviders = []IdentityProvider{p}
		e.serve(cfg)
		if err := e.iss.ApplyConfigChanges(ctx); err != nil {
			t.Fatal(err)
		}
	}
	grantOf := func(user string) *oauth2.Token {
		t.Helper()
		code, verifier := e.issueCode(t, codeSpec{client: bClientID, user: user, redirect: bRedirect, resource: bResource, scopes: []string{"openid", "files:read", "offline_access"}})
		tok, err := e.exchange(t, bClientID, "", code, verifier, oauth2.SetAuthURLParam("redirect_uri", bRedirect))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	refresh := func(tok *oauth2.Token) answer {
		t.Helper()
		a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {bClientID}}, "")
		if rt := a.str("refresh_token"); rt != "" {
			tok.RefreshToken = rt
		}
		return a
	}
	// Before any domain is listed, carol signs in with an address her
	// provider did not verify: none is kept for her.
	apply()
	const carol = stubIdPName + ":u-3"
	stub.set(func(s *stubIdP) {
		s.claims["sub"], s.claims["email"], s.claims["email_verified"] = "u-3", "carol@corp.example", false
	})
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in of carol = %d %q, want 303", res.status, res.body)
	}
	carolTok := grantOf(carol)
	stub.set(func(s *stubIdP) {
		s.claims["sub"], s.claims["email"], s.claims["email_verified"] = "u-1", "alice@corp.example", true
	})
	apply("corp.example")
	// Listing domains where there were none cut carol off: no address
	// of hers is kept, and none is inside a list.
	if a := refresh(carolTok); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("refresh of a user without a kept address once domains are listed = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	const alice, bob = stubIdPName + ":u-1", stubIdPName + ":u-2"
	aliceBrowser := e.browser()
	if res := e.idpSignIn(t, aliceBrowser); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	stub.set(func(s *stubIdP) { s.claims["sub"], s.claims["email"] = "u-2", "bob@lab.example" })
	apply("corp.example", "lab.example")
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in of bob = %d %q, want 303", res.status, res.body)
	}
	aliceTok, bobTok := grantOf(alice), grantOf(bob)
	code, verifier := e.issueCode(t, codeSpec{client: bClientID, user: bob, redirect: bRedirect, resource: bResource, scopes: []string{"files:read"}})

	apply("corp.example") // lab.example taken out
	if a := refresh(bobTok); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("refresh of a user whose domain was taken out = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	var re *oauth2.RetrieveError
	if _, err := e.exchange(t, bClientID, "", code, verifier, oauth2.SetAuthURLParam("redirect_uri", bRedirect)); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("a code issued before the domain was taken out: %v, want invalid_grant", err)
	}
	if a := refresh(aliceTok); a.status != http.StatusOK {
		t.Errorf("refresh of a user whose domain is still allowed = %d %s, want 200", a.status, a.raw)
	}
	userinfo := func(tok *oauth2.Token) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo), nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		return e.do(t, req).status
	}
	if got := userinfo(bobTok); got != http.StatusUnauthorized {
		t.Errorf("userinfo of a user whose domain was taken out = %d, want 401", got)
	}
	if got := userinfo(aliceTok); got != http.StatusOK {
		t.Errorf("userinfo of a user whose domain is still allowed = %d, want 200", got)
	}
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusForbidden {
		t.Errorf("sign-in of a user whose domain was taken out = %d %q, want 403", res.status, res.body)
	}

	apply("lab.example") // and corp.example taken out: alice's signed-in session authorizes nothing
	resp, err := aliceBrowser.Get(e.url(pathAuthorize, authParams(testChallenge)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "error=access_denied") {
		t.Errorf("authorization in the session of a user whose domain was taken out: %d %q, want an access_denied redirect", resp.StatusCode, loc)
	}
	if a := refresh(aliceTok); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("refresh of alice after her domain was taken out = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	apply("corp.example", "lab.example") // put back: nothing was revoked
	if a := refresh(aliceTok); a.status != http.StatusOK {
		t.Errorf("refresh of alice after her domain was put back = %d %s, want 200", a.status, a.raw)
	}
}

// TestIdPButtonShownBeforeSignInElsewhere: a "Continue with" button on a
// sign-in page shown before the browser signed in through that provider
// in another tab carries the token of the session the sign-in replaced.
// It goes on to its request's consent page, as a GET of it would, rather
// than "Form expired"; not in a browser signed in otherwise (a local
// user's password), nor from another site.
func TestIdPButtonShownBeforeSignInElsewhere(t *testing.T) {
	e, _, _ := newIdPEnv(t, nil)
	stalePage := func(c *http.Client) (form, string) {
		t.Helper()
		resp, err := c.Get(e.url(pathAuthorize, authParams(testChallenge)))
		if err != nil {
			t.Fatal(err)
		}
		loc := resp.Header.Get("Location")
		resp.Body.Close()
		if resp, err = c.Get(e.srv.URL + loc); err != nil {
			t.Fatal(err)
		}
		return findForm(t, readBody(t, resp), "idp-"+stubIdPName), loc
	}
	press := func(c *http.Client, f form, origin string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+f.action, strings.NewReader(f.hidden.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, onward(t, resp)
	}

	c := e.browser()
	button, _ := stalePage(c)
	if res := e.idpSignIn(t, c); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in in the other tab = %d %q, want 303", res.status, res.body)
	}
	if code, loc := press(c, button, "https://evil.example"); code != http.StatusForbidden || loc != "" {
		t.Errorf("stale button from another site = %d to %q, want 403", code, loc)
	}
	want := pathConsent + "?req=" + url.QueryEscape(button.hidden.Get("req"))
	if code, loc := press(c, button, e.srv.URL); code != http.StatusSeeOther || loc != want {
		t.Errorf("stale button, signed in through the provider = %d to %q, want 303 to %q", code, loc, want)
	}

	// Signed in with a local user's password in the other tab.
	c = e.browser()
	button, _ = stalePage(c)
	resp, err := c.Get(e.url(pathLogin, nil))
	if err != nil {
		t.Fatal(err)
	}
	lf := findForm(t, readBody(t, resp), "login")
	lf.hidden.Set("username", bUser)
	lf.hidden.Set("password", bPassword)
	if resp, _ := e.postPage(t, c, lf.action, lf.hidden); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("password sign-in in the other tab = %d, want 303", resp.StatusCode)
	}
	if code, loc := press(c, button, e.srv.URL); code != http.StatusForbidden || loc != "" {
		t.Errorf("stale button, signed in with a password = %d to %q, want 403", code, loc)
	}
}
