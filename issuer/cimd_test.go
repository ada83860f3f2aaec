package issuer

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// cimdHost serves client metadata documents over TLS on loopback and
// counts requests per path.
type cimdHost struct {
	srv  *httptest.Server
	mu   sync.Mutex
	docs map[string]func(w http.ResponseWriter, r *http.Request)
	hits sync.Map // path -> *atomic.Int64
}

func newCIMDHost(t *testing.T) *cimdHost {
	h := &cimdHost{docs: map[string]func(http.ResponseWriter, *http.Request){}}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := h.hits.LoadOrStore(r.URL.Path, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		h.mu.Lock()
		f := h.docs[r.URL.Path]
		h.mu.Unlock()
		if f == nil {
			http.NotFound(w, r)
			return
		}
		f(w, r)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// serve registers a handler for path and returns the document URL.
func (h *cimdHost) serve(path string, f func(w http.ResponseWriter, r *http.Request)) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.docs[path] = f
	return h.srv.URL + path
}

// doc serves body as JSON with the given Cache-Control.
func (h *cimdHost) doc(path, cacheControl string, body func(id string) string) string {
	id := h.srv.URL + path
	return h.serve(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		_, _ = w.Write([]byte(body(id)))
	})
}

// docOn serves a valid document at path under a name of its own,
// name.example.com (the test certificate's wildcard), which the client
// of newCIMDEnv with private targets allowed dials at this server: a
// host of its own for the issuer's per-host budgets.
func (h *cimdHost) docOn(name, path, cacheControl string) string {
	id := "https://" + name + ".example.com:" + h.srv.URL[strings.LastIndex(h.srv.URL, ":")+1:] + path
	h.serve(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		_, _ = w.Write([]byte(validDoc(id)))
	})
	return id
}

// exampleHosts dials every host under example.com at the server (other
// hosts as they are). It is not an *http.Transport, so newFetchClient
// uses it as it is: only with private targets allowed.
type exampleHosts struct{ *http.Transport }

func (h *cimdHost) client() *http.Client {
	t := h.srv.Client().Transport.(*http.Transport).Clone()
	var d net.Dialer
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, _ := net.SplitHostPort(addr); strings.HasSuffix(host, ".example.com") {
			addr = h.srv.Listener.Addr().String()
		}
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: exampleHosts{t}}
}

func (h *cimdHost) count(path string) int64 {
	n, ok := h.hits.Load(path)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func validDoc(id string) string {
	return `{"client_id":"` + id + `","client_name":"Doc Client","redirect_uris":["http://127.0.0.1:3000/callback"],
		"grant_types":["authorization_code"],"response_types":["code"],"token_endpoint_auth_method":"none"}`
}

func newCIMDEnv(t *testing.T, allowPrivate bool, mutate func(*Config)) (*testEnv, *cimdHost) {
	host := newCIMDHost(t)
	e := newBrowserEnv(t, func(c *Config) {
		c.HTTPClient = host.srv.Client()
		if allowPrivate {
			c.HTTPClient = host.client()
		}
		c.CIMDAllowPrivate = allowPrivate
		if mutate != nil {
			mutate(c)
		}
	})
	return e, host
}

func TestCIMDAuthorizeFlow(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	id := host.doc("/client.json", "", validDoc)
	p := authParams(testChallenge)
	p.Set("client_id", id)
	p.Set("redirect_uri", "http://127.0.0.1:3000/callback")

	// Check the consent page on the way: names, host, localhost warning.
	c := e.browser()
	resp, err := c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp = e.signIn(t, c, e.srv.URL+resp.Header.Get("Location"), bUser)
	resp, err = c.Get(e.srv.URL + resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	for _, want := range []string{"Doc Client", id, "127.0.0.1:3000", "This app runs on your computer", bResource, "files:read"} {
		if !strings.Contains(body, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	cf := findForm(t, body, "consent")
	if len(cf.buttons) != 2 || !strings.Contains(strings.Join(cf.buttons, " "), "decision=approve") || !strings.Contains(strings.Join(cf.buttons, " "), "decision=deny") {
		t.Errorf("consent buttons = %v", cf.buttons)
	}
	cv := cf.hidden
	cv.Set("decision", "approve")
	resp, _ = e.postPage(t, c, cf.action, cv)
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if !strings.HasPrefix(loc.String(), "http://127.0.0.1:3000/callback?") || loc.Query().Get("code") == "" {
		t.Fatalf("approve: Location %s, want the client's callback with a code", loc)
	}
	if host.count("/client.json") != 1 {
		t.Errorf("document fetched %d times, want 1 (cached)", host.count("/client.json"))
	}
}

// TestCIMDMadePublicRefreshRefused: a refresh token issued to a client
// metadata document's private_key_jwt client is bound to the client's
// keys. Once the document says token_endpoint_auth_method none, which
// its publisher may write at any time, a copy of the token (taken from
// the app's storage while only the key made it usable) is refused
// without client authentication, and its grant ends, as an admin API
// client changed to another kind of authentication loses its grants. A
// client public from the start refreshes without authentication as ever.
func TestCIMDMadePublicRefreshRefused(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e, host := newCIMDEnv(t, true, func(c *Config) { c.Logger = zap.New(core) })
	key := jwtTestKey()
	pub, err := publicJWK(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub.Kid = "k1"
	jwks, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	const redirect = "http://127.0.0.1:3000/callback"
	var madePublic atomic.Bool
	doc := func(public bool) func(id string) string {
		return func(id string) string {
			method := `"private_key_jwt","jwks":` + string(jwks)
			if public || madePublic.Load() {
				method = `"none"`
			}
			return `{"client_id":"` + id + `","client_name":"Doc App","redirect_uris":["` + redirect + `"],
				"grant_types":["authorization_code","refresh_token"],"token_endpoint_auth_method":` + method + `}`
		}
	}
	// Read anew at every request (no-store): the switch applies at once.
	confidential := host.doc("/confidential.json", "no-store", doc(false))
	public := host.doc("/public.json", "no-store", doc(true))
	assertion := func(id string) url.Values {
		now := e.clock.Now()
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"iss": id, "sub": id, "aud": e.iss.URL(), "exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": rand.Text(),
		})
		tok.Header["kid"] = "k1"
		raw, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {raw}}
	}
	redeem := func(id string, auth url.Values) string {
		t.Helper()
		code, verifier := e.issueCode(t, codeSpec{client: id, user: bUser, redirect: redirect, resource: bResource,
			scopes: []string{"files:read", scopeOfflineAccess}})
		f := url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "redirect_uri": {redirect}, "code_verifier": {verifier}}
		maps.Copy(f, auth)
		a := e.post(t, pathToken, f, "")
		if a.status != http.StatusOK || a.str("refresh_token") == "" {
			t.Fatalf("%s: code = %d %s, want 200 with a refresh token", id, a.status, a.raw)
		}
		return a.str("refresh_token")
	}
	refresh := func(rt string, auth url.Values) answer {
		f := url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {rt}}
		maps.Copy(f, auth)
		return e.post(t, pathToken, f, "")
	}

	// A public document client: no authentication, ever.
	rt := redeem(public, url.Values{"client_id": {public}})
	if a := refresh(rt, url.Values{"client_id": {public}}); a.status != http.StatusOK {
		t.Fatalf("public document client: refresh = %d %s, want 200", a.status, a.raw)
	}

	// The confidential one: a grant made with its key, and one whose
	// refresh token the client then rotated with it, made by an earlier
	// release, which did not record the authentication (the rotation
	// does).
	copied := redeem(confidential, assertion(confidential))
	rotated := redeem(confidential, assertion(confidential))
	err = e.store.Update(t.Context(), func(tx store.Tx) error {
		_, g, err := refreshIn(tx).family(rotated)
		if err != nil {
			return err
		}
		g.ClientAuthenticated = false
		return grantsIn(tx).put(g)
	})
	if err != nil {
		t.Fatal(err)
	}
	a := refresh(rotated, assertion(confidential))
	if a.status != http.StatusOK {
		t.Fatalf("confidential document client: refresh = %d %s, want 200", a.status, a.raw)
	}
	rotated = a.str("refresh_token")
	if a := refresh(copied, url.Values{"client_id": {confidential}}); a.status != http.StatusUnauthorized {
		t.Fatalf("refresh without authentication while the document says private_key_jwt = %d %s, want 401", a.status, a.raw)
	}

	madePublic.Store(true)
	for name, rt := range map[string]string{"as issued": copied, "of an earlier release, rotated with the key": rotated} {
		for range 2 {
			a := refresh(rt, url.Values{"client_id": {confidential}})
			if a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
				t.Errorf("%s: refresh without authentication once the document says none = %d %s, want 400 invalid_grant", name, a.status, a.raw)
			}
		}
	}
	// Each grant ended once: presented again, an ended grant is refused
	// as any, with nothing written.
	const event = "refresh token of a confidential client presented without client authentication; its grant is revoked"
	if n := logs.FilterMessage(event).Len(); n != 2 {
		t.Errorf("%d security events %q, want 2 (one per grant)", n, event)
	}
	// The grants ended: the key does not bring them back.
	madePublic.Store(false)
	for name, rt := range map[string]string{"as issued": copied, "of an earlier release, rotated with the key": rotated} {
		if a := refresh(rt, assertion(confidential)); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
			t.Errorf("%s: refresh with the key after the refusal = %d %s, want 400 invalid_grant (grant revoked)", name, a.status, a.raw)
		}
	}
}

// TestCIMDIDTokenAlg: a document's id_token_signed_response_alg is the
// client's, and the cached client keeps it.
func TestCIMDIDTokenAlg(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	for _, tt := range []struct{ path, member, want string }{
		{"/es.json", `,"id_token_signed_response_alg":"ES256"`, "ES256"},
		{"/default.json", ``, "RS256"},
	} {
		id := host.doc(tt.path, "", func(id string) string { return strings.TrimSuffix(validDoc(id), "}") + tt.member + "}" })
		for range 2 { // fetched, then cached
			c, err := e.iss.cimd.fetch(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.idTokenAlg(); got != tt.want {
				t.Errorf("%s: ID-token algorithm %s, want %s", tt.path, got, tt.want)
			}
		}
		if n := host.count(tt.path); n != 1 {
			t.Errorf("%s fetched %d times, want once (then cached)", tt.path, n)
		}
	}
}

// TestCIMDDefaultMaxAge: a document's default_max_age is the client's,
// and the cached client keeps it.
func TestCIMDDefaultMaxAge(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	id := host.doc("/maxage.json", "", func(id string) string { return strings.TrimSuffix(validDoc(id), "}") + `,"default_max_age":60}` })
	for range 2 { // fetched, then cached
		c, err := e.iss.cimd.fetch(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if c.DefaultMaxAge == nil || *c.DefaultMaxAge != 60 {
			t.Errorf("default_max_age = %v, want 60", c.DefaultMaxAge)
		}
	}
}

// cimdUnfetched is the reason shown for every document the issuer could
// not get.
const cimdUnfetched = "client metadata document could not be used: the document could not be fetched"

// TestCIMDRefused: a document that cannot be had, or says what it must
// not, is refused with invalid_client and never cached. The reason shown
// is the document's own when one came (status 200), and one and the same
// for a timeout, a redirect or another status: it tells no one which
// ports answer the issuer.
func TestCIMDRefused(t *testing.T) {
	e, host := newCIMDEnv(t, true, func(c *Config) {
		c.CIMDMaxBytes = 512
		// Long enough that a loaded CI machine (every package at once,
		// under -race) still fetches the documents that do answer; the
		// timeout row waits this out.
		c.CIMDTimeout = 2 * time.Second
	})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	jsonDoc := func(body string) func(w http.ResponseWriter, r *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(body))
		}
	}
	id := func(path string) string { return host.srv.URL + path }
	tests := []struct {
		name    string
		path    string
		handler func(w http.ResponseWriter, r *http.Request)
		fetched bool // a document came (status 200): its own reason is shown
	}{
		{"client_id mismatch", "/mismatch", jsonDoc(validDoc(id("/other"))), true},
		{"no client_name", "/noname", jsonDoc(`{"client_id":"` + id("/noname") + `","redirect_uris":["http://127.0.0.1/cb"]}`), true},
		{"no redirect_uris", "/noredirect", jsonDoc(`{"client_id":"` + id("/noredirect") + `","client_name":"x"}`), true},
		{"client secret", "/secret", jsonDoc(`{"client_id":"` + id("/secret") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"client_secret":"s"}`), true},
		{"secret auth method", "/basic", jsonDoc(`{"client_id":"` + id("/basic") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"client_secret_basic"}`), true},
		{"private_key_jwt without keys", "/pkjwt", jsonDoc(`{"client_id":"` + id("/pkjwt") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"private_key_jwt"}`), true},
		{"client_credentials", "/cc", jsonDoc(`{"client_id":"` + id("/cc") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"grant_types":["authorization_code","client_credentials"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `}]}}`), true},
		{"private key in jwks", "/privatekey", jsonDoc(`{"client_id":"` + id("/privatekey") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}]}}`), true},
		{"symmetric key in jwks", "/symmetric", jsonDoc(`{"client_id":"` + id("/symmetric") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"oct","k":"c2hhcmVkLXNlY3JldA"}]}}`), true},
		{"private factors in jwks", "/factors", jsonDoc(`{"client_id":"` + id("/factors") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{` + testECKey + `,"p":"c2VjcmV0","q":"c2VjcmV0"}]}}`), true},
		{"stacked combining marks in client_name", "/marks", jsonDoc(`{"client_id":"` + id("/marks") + `","client_name":"N\u0300\u0301\u0302\u0303\u0304","redirect_uris":["http://127.0.0.1/cb"]}`), true},
		{"bad redirect uri", "/badredirect", jsonDoc(`{"client_id":"` + id("/badredirect") + `","client_name":"x","redirect_uris":["http://evil.example/cb"]}`), true},
		{"bad post-logout redirect uri", "/badlogout", jsonDoc(`{"client_id":"` + id("/badlogout") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"post_logout_redirect_uris":["http://evil.example/bye"]}`), true},
		{"dpop_bound_access_tokens null", "/dpopnull", jsonDoc(`{"client_id":"` + id("/dpopnull") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"dpop_bound_access_tokens":null}`), true},
		{"require_pushed_authorization_requests not a boolean", "/parstring", jsonDoc(`{"client_id":"` + id("/parstring") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"require_pushed_authorization_requests":"yes"}`), true},
		{"unsigned ID tokens", "/idnone", jsonDoc(`{"client_id":"` + id("/idnone") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"id_token_signed_response_alg":"none"}`), true},
		{"ID tokens in an algorithm not offered", "/ideddsa", jsonDoc(`{"client_id":"` + id("/ideddsa") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"id_token_signed_response_alg":"EdDSA"}`), true},
		{"encrypted ID tokens", "/encrypted", jsonDoc(`{"client_id":"` + id("/encrypted") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"id_token_encrypted_response_alg":"RSA-OAEP"}`), true},
		{"pairwise subject identifiers", "/pairwise", jsonDoc(`{"client_id":"` + id("/pairwise") + `","client_name":"x","redirect_uris":["http://127.0.0.1/cb"],"subject_type":"pairwise"}`), true},
		{"repeated member", "/repeated", jsonDoc(`{"client_id":"` + id("/repeated") + `","client_name":"x","redirect_uris":["http://evil.example/cb"],"redirect_uris":["http://127.0.0.1/cb"]}`), true},
		{"member in another case", "/case", jsonDoc(`{"client_id":"` + id("/case") + `","client_name":"x","Redirect_URIs":["http://127.0.0.1/cb"]}`), true},
		{"not json", "/notjson", jsonDoc(`<html></html>`), true},
		{"wrong content type", "/ctype", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(validDoc(id("/ctype"))))
		}, true},
		{"oversize", "/big", jsonDoc(`{"client_id":"` + id("/big") + `","client_name":"` + strings.Repeat("x", 600) + `","redirect_uris":["http://127.0.0.1/cb"]}`), true},
		{"oversize streamed", "/bigstream", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			for range 10 {
				_, _ = w.Write([]byte(strings.Repeat(" ", 100)))
				w.(http.Flusher).Flush()
			}
		}, true},
		{"timeout", "/slow", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, false},
		{"redirect", "/redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/client.json", http.StatusFound)
		}, false},
		{"not found", "/missing", nil, false},
		{"server error", "/fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.handler != nil {
				host.serve(tt.path, tt.handler)
			}
			start := time.Now()
			c, err := e.iss.cimd.fetch(t.Context(), id(tt.path))
			if err == nil {
				t.Fatalf("cimd.fetch(%s) = %+v, want an error", tt.path, c)
			}
			if !errors.Is(err, ErrInvalidClient) {
				t.Errorf("cimd.fetch(%s) error = %v, want invalid_client", tt.path, err)
			}
			var oe *Error
			switch errors.As(err, &oe); {
			case tt.fetched && oe.Description == cimdUnfetched:
				t.Errorf("cimd.fetch(%s) description = %q, want the document's own reason", tt.path, oe.Description)
			case !tt.fetched && oe.Description != cimdUnfetched:
				t.Errorf("cimd.fetch(%s) description = %q, want %q", tt.path, oe.Description, cimdUnfetched)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("cimd.fetch took %v", time.Since(start))
			}
			if n := e.count(bucketCIMD); n != 0 {
				t.Errorf("cached entries = %d, want 0 (errors are never cached)", n)
			}
		})
	}
	// The authorize endpoint shows an error page, never a redirect.
	p := authParams(testChallenge)
	p.Set("client_id", id("/mismatch"))
	resp, err := e.browser().Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(body, "client_id does not equal") {
		t.Errorf("authorize with bad document: %d %q %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
}

// TestCIMDUnfetchedLooksAlike: anyone can name any URL as a client_id
// and read the error page. A name that resolves to a loopback address and
// one that does not resolve get the same reason, so the page tells no one
// which internal names exist; the log tells the operator which it was.
func TestCIMDUnfetchedLooksAlike(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newBrowserEnv(t, func(c *Config) { c.Logger = zap.New(core) })
	for _, id := range []string{
		"https://localhost/client.json",       // a loopback address
		"https://no-such-host.invalid/c.json", // no address (RFC 2606)
	} {
		p := authParams(testChallenge)
		p.Set("client_id", id)
		resp, err := e.browser().Get(e.url(pathAuthorize, p))
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if want := "The application could not be identified: " + cimdUnfetched + "."; resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, want) {
			t.Errorf("authorize with client_id %s = %d %s, want 400 %q", id, resp.StatusCode, body, want)
		}
	}
	var reasons []string
	for _, l := range logs.FilterMessage("client metadata document refused").TakeAll() {
		reasons = append(reasons, l.ContextMap()["error"].(string))
	}
	if len(reasons) != 2 || !strings.Contains(reasons[0], errForbiddenAddress.Error()) || strings.Contains(reasons[1], errForbiddenAddress.Error()) {
		t.Errorf("logged reasons = %q, want the loopback address's and another", reasons)
	}
}

// TestCIMDPrivateAddressRefused: with private targets not allowed, a
// document on loopback is refused before any request reaches it.
func TestCIMDPrivateAddressRefused(t *testing.T) {
	e, host := newCIMDEnv(t, false, nil)
	id := host.doc("/client.json", "", validDoc)
	localhost := strings.Replace(host.srv.URL, "127.0.0.1", "localhost", 1) + "/client.json"
	for _, u := range []string{id, localhost} {
		if _, err := e.iss.cimd.fetch(t.Context(), u); !errors.Is(err, errForbiddenAddress) {
			t.Errorf("cimd.fetch(%s) error = %v, want errForbiddenAddress", u, err)
		}
	}
	// http is refused outright.
	httpID := strings.Replace(id, "https://", "http://", 1)
	if _, err := e.iss.cimd.fetch(t.Context(), httpID); err == nil {
		t.Errorf("cimd.fetch(%s) succeeded, want an error", httpID)
	}
	if n := host.count("/client.json"); n != 0 {
		t.Errorf("requests reaching the server = %d, want 0", n)
	}
}

// TestCIMDPrivateCacheNotKeptAfterReload: a document fetched from a
// private address while cimd_allow_private was on is not taken from the
// store's cache by the issuer a reload turning it off makes (nor by
// another instance without it): that issuer fetches the document again
// and refuses its address.
func TestCIMDPrivateCacheNotKeptAfterReload(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	id := host.doc("/client.json", "public, max-age=3600", validDoc)
	if _, err := e.iss.cimd.fetch(t.Context(), id); err != nil {
		t.Fatalf("cimd.fetch(%s) with private targets allowed: %v", id, err)
	}
	if n := e.count(bucketCIMD); n != 1 {
		t.Fatalf("cached documents = %d, want 1", n)
	}
	cfg := e.iss.cfg
	cfg.CIMDAllowPrivate, cfg.HTTPClient = false, host.srv.Client()
	e.serve(cfg)
	if _, err := e.iss.cimd.fetch(t.Context(), id); !errors.Is(err, errForbiddenAddress) {
		t.Errorf("cimd.fetch(%s) after the reload = %v, want errForbiddenAddress", id, err)
	}
	if n := host.count("/client.json"); n != 1 {
		t.Errorf("requests reaching the server = %d, want the first fetch's only", n)
	}
	// Allowed again, the document cached while they were is used.
	cfg.CIMDAllowPrivate, cfg.HTTPClient = true, host.client()
	e.serve(cfg)
	if _, err := e.iss.cimd.fetch(t.Context(), id); err != nil {
		t.Errorf("cimd.fetch(%s) allowed again: %v", id, err)
	}
	if n := host.count("/client.json"); n != 1 {
		t.Errorf("requests reaching the server = %d, want 1 (the cached document used)", n)
	}
}

// TestCIMDPrivateCacheOfPreviousRelease: 7de412a cached a document
// fetched with cimd_allow_private on under its client_id, as every
// other; upgraded with the option turned off, the issuer fetches such an
// entry again (and refuses a private address's) rather than taking it
// until it expires, up to 24 hours.
func TestCIMDPrivateCacheOfPreviousRelease(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	id := host.doc("/client.json", "public, max-age=3600", validDoc)
	c, err := e.iss.cimd.fetch(t.Context(), id)
	if err != nil {
		t.Fatalf("cimd.fetch(%s) with private targets allowed: %v", id, err)
	}
	// The entry as 7de412a wrote it: under the client_id, no marker.
	err = e.store.Update(t.Context(), func(tx store.Tx) error {
		return cimdIn(tx).put(id, &cimdEntry{Client: *clientRecord(c), ExpiresAt: e.clock.Now().Add(time.Hour)})
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.iss.cfg
	cfg.CIMDAllowPrivate, cfg.HTTPClient = false, host.srv.Client()
	e.serve(cfg)
	if _, err := e.iss.cimd.fetch(t.Context(), id); !errors.Is(err, errForbiddenAddress) {
		t.Errorf("cimd.fetch(%s) after the upgrade without the option = %v, want errForbiddenAddress", id, err)
	}
	if n := host.count("/client.json"); n != 1 {
		t.Errorf("requests reaching the server = %d, want the first fetch's only", n)
	}
}

func TestCIMDCaching(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	fetch := func(id string) {
		t.Helper()
		if _, err := e.iss.cimd.fetch(t.Context(), id); err != nil {
			t.Fatalf("cimd.fetch(%s): %v", id, err)
		}
	}
	// serve publishes a valid document at path with these header fields.
	serve := func(path string, header map[string]string) string {
		return host.serve(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			for k, v := range header {
				w.Header().Set(k, v)
			}
			_, _ = w.Write([]byte(validDoc(host.srv.URL + path)))
		})
	}
	t.Run("max-age honoured", func(t *testing.T) {
		id := host.doc("/maxage.json", "public, max-age=60", validDoc)
		fetch(id)
		fetch(id)
		if n := host.count("/maxage.json"); n != 1 {
			t.Fatalf("fetches = %d, want 1", n)
		}
		e.clock.Advance(61 * time.Second)
		fetch(id)
		if n := host.count("/maxage.json"); n != 2 {
			t.Fatalf("fetches after max-age = %d, want 2", n)
		}
	})
	// RFC 9111 section 4.2.1: with more than one max-age, the first is
	// used or the answer is stale; here it is stale, as the most
	// restrictive reading, whichever of them is the longer.
	t.Run("max-age twice", func(t *testing.T) {
		for _, c := range []struct{ path, cc string }{
			{"/maxage-twice.json", "max-age=60, max-age=86400"},
			{"/maxage-twice-short-last.json", "max-age=86400, max-age=60"},
		} {
			id := host.doc(c.path, c.cc, validDoc)
			fetch(id)
			fetch(id)
			if n := host.count(c.path); n != 2 {
				t.Errorf("fetches of a document with Cache-Control %q = %d, want 2 (stale)", c.cc, n)
			}
		}
		if got := cacheLifetime(http.Header{"Cache-Control": {"max-age=60", "max-age=86400"}}, time.Now()); got != 0 {
			t.Errorf("cacheLifetime(max-age in two field lines) = %v, want 0", got)
		}
	})
	t.Run("no-store", func(t *testing.T) {
		id := host.doc("/nostore.json", "no-store", validDoc)
		fetch(id)
		fetch(id)
		if n := host.count("/nostore.json"); n != 2 {
			t.Fatalf("fetches = %d, want 2", n)
		}
	})
	// A copy from a CDN has been in its cache for Age seconds of its
	// max-age (RFC 9111 section 4.2.3): a redirect URI or key its client
	// withdrew is dropped when the client asked, not max-age later.
	t.Run("age counted", func(t *testing.T) {
		id := host.serve("/aged.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "public, max-age=600")
			w.Header().Set("Age", "590")
			_, _ = w.Write([]byte(validDoc(host.srv.URL + "/aged.json")))
		})
		fetch(id)
		e.clock.Advance(11 * time.Second)
		fetch(id)
		if n := host.count("/aged.json"); n != 2 {
			t.Fatalf("fetches 11 s after a copy of age 590 s of max-age 600 = %d, want 2", n)
		}
	})
	// Without max-age, Expires is the lifetime (RFC 9111 section 4.2.1),
	// and an invalid one, "0" above all, is in the past (section 5.3).
	t.Run("expires", func(t *testing.T) {
		date := time.Now().UTC()
		serve := func(path, expires string) string {
			return serve(path, map[string]string{"Date": date.Format(http.TimeFormat), "Expires": expires})
		}
		later := serve("/expires.json", date.Add(30*time.Second).Format(http.TimeFormat))
		fetch(later)
		fetch(later)
		e.clock.Advance(31 * time.Second)
		fetch(later)
		if n := host.count("/expires.json"); n != 2 {
			t.Fatalf("fetches of a document expiring in 30 s, twice then 31 s later = %d, want 2", n)
		}
		now := serve("/expired.json", "0")
		fetch(now)
		fetch(now)
		if n := host.count("/expired.json"); n != 2 {
			t.Fatalf("fetches of a document with Expires: 0 = %d, want 2", n)
		}
	})
	// A copy's age is also how long before the issuer's clock its origin
	// dated it (RFC 9111 section 4.2.3, apparent_age): a cache that sends
	// no Age (an HTTP/1.0 one) keeps Date. A document used past the
	// Expires it carries, or past its max-age since its Date, keeps what
	// its client withdrew since.
	t.Run("date counted", func(t *testing.T) {
		now := e.clock.Now()
		// Each row's document is fetched, then again after the wait.
		for _, c := range []struct {
			path   string
			header map[string]string
			wait   time.Duration
			want   int64
		}{
			{"/dated-maxage.json", map[string]string{"Date": now.Add(-590 * time.Second).Format(http.TimeFormat), "Cache-Control": "max-age=600"}, 11 * time.Second, 2},
			{"/dated-expires.json", map[string]string{"Date": now.Add(-23 * time.Hour).Format(http.TimeFormat), "Expires": now.Add(time.Hour).Format(http.TimeFormat)}, 61 * time.Minute, 2},
			// Dated after the issuer's clock (the host's runs ahead): no age.
			{"/dated-ahead.json", map[string]string{"Date": now.Add(2 * time.Hour).Format(http.TimeFormat), "Cache-Control": "max-age=600"}, 599 * time.Second, 1},
		} {
			id := serve(c.path, c.header)
			fetch(id)
			e.clock.Advance(c.wait)
			fetch(id)
			if n := host.count(c.path); n != c.want {
				t.Errorf("fetches %v apart of a document served with %v = %d, want %d", c.wait, c.header, n, c.want)
			}
		}
	})
	t.Run("default and cap", func(t *testing.T) {
		if got := cacheLifetime(http.Header{}, time.Now()); got != time.Hour {
			t.Errorf("cacheLifetime(none) = %v, want 1h", got)
		}
		if got := cacheLifetime(http.Header{"Cache-Control": {"max-age=99999999999"}}, time.Now()); got != 24*time.Hour {
			t.Errorf("cacheLifetime(huge) = %v, want 24h", got)
		}
		if got := cacheLifetime(http.Header{"Cache-Control": {"max-age=0"}}, time.Now()); got != 0 {
			t.Errorf("cacheLifetime(max-age=0) = %v, want 0", got)
		}
		// An Age past int64 is huge (RFC 9111 section 1.2.2), not absent.
		if got := cacheLifetime(http.Header{"Cache-Control": {"max-age=600"}, "Age": {"99999999999999999999"}}, time.Now()); got != 0 {
			t.Errorf("cacheLifetime(max-age=600, Age past int64) = %v, want 0", got)
		}
	})
	t.Run("errors not cached", func(t *testing.T) {
		var fail atomic.Bool
		fail.Store(true)
		id := host.srv.URL + "/flaky.json"
		host.serve("/flaky.json", func(w http.ResponseWriter, r *http.Request) {
			if fail.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(validDoc(id)))
		})
		if _, err := e.iss.cimd.fetch(t.Context(), id); err == nil {
			t.Fatal("cimd.fetch during outage succeeded")
		}
		fail.Store(false)
		fetch(id)
		if n := host.count("/flaky.json"); n != 2 {
			t.Fatalf("fetches = %d, want 2", n)
		}
	})
}

func TestCIMDURLRules(t *testing.T) {
	e := newBrowserEnv(t, nil)
	tests := []struct {
		id string
		ok bool
	}{
		{"https://app.example.com/client.json", true},
		{"https://app.example.com:8443/oauth/client", true},
		{"https://app.example.com", false},
		{"https://app.example.com/", false},
		{"http://app.example.com/client.json", false},
		{"https://app.example.com/a/../client.json", false},
		{"https://app.example.com/a/./client.json", false},
		{"https://app.example.com/a/%2e%2e/client.json", false},
		{"https://user@app.example.com/client.json", false},
		{"https://app.example.com/client.json#frag", false},
		{"https://app.example.com/my client.json", false},
		{"https://app.example.com/cl\u0456ent.json", false},
		{"https://xn--pp-8sb.example.com/client.json", true},
	}
	for _, tt := range tests {
		if err := e.iss.cimd.checkURL(tt.id); (err == nil) != tt.ok {
			t.Errorf("cimd.checkURL(%q) = %v, want ok %v", tt.id, err, tt.ok)
		}
	}
}

// fetchFrom fetches a document as a request from addr would.
func (e *testEnv) fetchFrom(t *testing.T, addr, id string) error {
	t.Helper()
	_, err := e.iss.cimd.fetch(context.WithValue(t.Context(), addrContextKey{}, addr), id)
	return err
}

// TestCIMDCacheBounded: anyone can name documents of their own, so at
// most cimdCacheBurst new ones an hour are cached in the store, whatever
// the number of addresses and hosts, and at most cimdHostBurst of one
// host; past that a document still works, kept in memory: fetched once
// for all its uses, not at each.
func TestCIMDCacheBounded(t *testing.T) {
	const perHost = 10  // an hour of one host, README (Limits); not the constant
	const perHour = 100 // an hour over all hosts, README (Limits); not the constant
	e, host := newCIMDEnv(t, true, nil)
	fetch := func(n int, id string) {
		t.Helper()
		if err := e.fetchFrom(t, fmt.Sprintf("198.51.100.%d", n%250), id); err != nil {
			t.Fatalf("cimd.fetch(%s): %v", id, err)
		}
	}
	for n := range perHost + 5 {
		id := host.docOn("one", fmt.Sprintf("/one%d.json", n), "")
		if n%2 == 1 {
			// README: "of one host (its name, the port aside)": the
			// documents of one name on other ports share its budget.
			path := fmt.Sprintf("/one%d.json", n)
			id = fmt.Sprintf("https://one.example.com:%d%s", 20000+n, path)
			host.serve(path, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(validDoc(id)))
			})
		}
		fetch(n, id)
	}
	if n := e.count(bucketCIMD); n != perHost {
		t.Fatalf("cached documents of one host, on several ports = %d, want %d", n, perHost)
	}
	for n := range perHour {
		fetch(n, host.docOn(fmt.Sprintf("h%d", n), fmt.Sprintf("/doc%d.json", n), ""))
	}
	if n := e.count(bucketCIMD); n != perHour {
		t.Fatalf("cached documents = %d, want %d", n, perHour)
	}
	id := host.docOn("over", "/over.json", "")
	fetch(1, id)
	fetch(2, id)
	if n := e.count(bucketCIMD); n != perHour {
		t.Errorf("cached documents = %d, want still %d", n, perHour)
	}
	if n := host.count("/over.json"); n != 1 {
		t.Errorf("fetches of a document past the budget = %d, want 1 (kept in memory)", n)
	}
	e.clock.Advance(time.Hour / perHour)
	id = host.docOn("later", "/later.json", "")
	fetch(3, id)
	if n := e.count(bucketCIMD); n != perHour+1 {
		t.Errorf("cached documents after the budget refilled = %d, want %d", n, perHour+1)
	}
}

// TestCIMDJunkDocumentsSpareOthers: one address naming throwaway
// documents on hosts of its own spends the cache budget of those hosts,
// and with enough hosts the budget of all, but neither a popular client's
// caching nor its uses: before, one address spent the one budget of all
// (100 an hour), and from then on every use of every document fetched it
// again, at the cost of a store write of its user's address, so a hosted
// client's 61st token request in a minute from its address was refused.
func TestCIMDJunkDocumentsSpareOthers(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	// One address names 100 documents on its own host: at two a minute it
	// keeps up with the hour's refill.
	for n := range cimdCacheBurst {
		e.clock.Advance(30 * time.Second)
		if err := e.fetchFrom(t, "203.0.113.1", host.docOn("junk", fmt.Sprintf("/junk%d.json", n), "")); err != nil {
			t.Fatalf("junk %d: %v", n, err)
		}
	}
	uses := func(id, path string) {
		t.Helper()
		refused := 0
		for range 2 * cimdFetchBurst {
			if err := e.fetchFrom(t, "198.51.100.7", id); err != nil {
				refused++
			}
		}
		if refused > 0 || host.count(path) != 1 {
			t.Errorf("a hosted client's %d uses from its address: %d refused, document fetched %d times; want none refused, one fetch",
				2*cimdFetchBurst, refused, host.count(path))
		}
	}
	uses(host.docOn("client", "/popular.json", ""), "/popular.json")
	// Junk spread over enough hosts spends the budget of all hosts: a
	// client seen since is kept in memory.
	for n := range 2 * cimdCacheBurst {
		if err := e.fetchFrom(t, fmt.Sprintf("203.0.113.%d", 10+n/cimdFetchBurst), host.docOn(fmt.Sprintf("junk%d", n), fmt.Sprintf("/spread%d.json", n), "")); err != nil {
			t.Fatalf("junk %d: %v", n, err)
		}
	}
	if d, err := e.iss.cimd.caches.take(t.Context(), ""); err != nil || d == 0 {
		t.Fatalf("the budget of all hosts: wait %v, %v; want it spent (the test's premise)", d, err)
	}
	uses(host.docOn("newcomer", "/newcomer.json", ""), "/newcomer.json")
}

// TestCIMDUncachedFetchSpendsNoWrites: a document fetched and not cached
// (no-store here; or past its budgets) writes nothing, so it spends none
// of the caller's address's store writes, which its sign-ins need; one
// cached in the store spends one.
func TestCIMDUncachedFetchSpendsNoWrites(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	const from = "203.0.113.9"
	id := host.docOn("client", "/nostore.json", "no-store")
	for n := range cimdFetchBurst {
		if err := e.fetchFrom(t, from, id); err != nil {
			t.Fatalf("fetch %d: %v", n, err)
		}
	}
	if n := host.count("/nostore.json"); n != cimdFetchBurst {
		t.Fatalf("fetches of a no-store document = %d, want %d", n, cimdFetchBurst)
	}
	for k := range anonWriteBurst / 2 {
		if w := e.getFrom(from+":4000", pathAuthorize, authParams(testChallenge)); w.Code != http.StatusSeeOther ||
			!strings.HasPrefix(w.Header().Get("Location"), pathLogin) {
			t.Fatalf("sign-in %d after %d uncached fetches = %d %q, want 303 to the login page", k, cimdFetchBurst, w.Code, w.Header().Get("Location"))
		}
	}

	const other = "203.0.113.10"
	for n := range anonWriteBurst {
		if err := e.fetchFrom(t, other, host.docOn(fmt.Sprintf("c%d", n), fmt.Sprintf("/c%d.json", n), "")); err != nil {
			t.Fatalf("fetch %d: %v", n, err)
		}
	}
	if n := e.count(bucketCIMD); n != anonWriteBurst {
		t.Fatalf("cached documents = %d, want %d", n, anonWriteBurst)
	}
	if w := e.getFrom(other+":4000", pathAuthorize, authParams(testChallenge)); !strings.Contains(w.Header().Get("Location"), "error=temporarily_unavailable") {
		t.Errorf("sign-in after %d documents cached = %d %q, want temporarily_unavailable", anonWriteBurst, w.Code, w.Header().Get("Location"))
	}
}

// TestCIMDHostsTracked: the hosts whose budgets are tracked are bounded
// (10,000, README); a document of a host past that is kept in memory.
func TestCIMDHostsTracked(t *testing.T) {
	const hostsTracked = 10_000 // README (Limits); not the constant
	e, host := newCIMDEnv(t, true, nil)
	for n := range hostsTracked {
		if d, err := e.iss.cimd.hosts.take(t.Context(), fmt.Sprintf("h%d.example.net", n)); err != nil || d != 0 {
			t.Fatalf("host %d: wait %v, %v", n, d, err)
		}
	}
	id := host.docOn("untracked", "/untracked.json", "")
	for range 2 {
		if err := e.fetchFrom(t, "198.51.100.1", id); err != nil {
			t.Fatal(err)
		}
	}
	if n, f := e.count(bucketCIMD), host.count("/untracked.json"); n != 0 || f != 1 {
		t.Errorf("a host past the tracked ones: %d cached in the store, fetched %d times; want 0, 1 (kept in memory)", n, f)
	}
}

// TestCIMDMemoryBounded: the documents kept in memory are at most its
// bound, the least recently used going first, and expire.
func TestCIMDMemoryBounded(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newCIMDMemory(3)
	rec := func(id string) *storedClient { return clientRecord(&Client{ID: id, Name: id}) }
	for _, id := range []string{"a", "b", "c"} {
		m.put(id, rec(id), now.Add(time.Hour))
	}
	if _, ok := m.get("a", now); !ok {
		t.Fatal("get(a) found nothing")
	}
	m.put("d", rec("d"), now.Add(time.Hour))
	if n := m.len(); n != 3 {
		t.Errorf("len = %d, want 3", n)
	}
	for id, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if c, ok := m.get(id, now); ok != want || ok && c.ID != id {
			t.Errorf("get(%s) = %v, %v; want found %v", id, c, ok, want)
		}
	}
	if _, ok := m.get("d", now.Add(time.Hour)); ok {
		t.Error("get(d) at its expiry found it")
	}
	if n := m.len(); n != 2 {
		t.Errorf("len after an expired get = %d, want 2", n)
	}

	// README: the issuer's memory holds at most 1,000 documents, the
	// least recently used going first (written out, not read from
	// cimdMemoryEntries, so that changing the constant fails here).
	e, _ := newCIMDEnv(t, true, nil)
	mem := e.iss.cimd.memory
	for n := range 1001 {
		id := fmt.Sprintf("https://app.example/%d.json", n)
		mem.put(id, rec(id), now.Add(time.Hour))
	}
	if n := mem.len(); n != 1000 {
		t.Errorf("the issuer's memory after 1001 documents holds %d, want 1000", n)
	}
	if _, ok := mem.get("https://app.example/0.json", now); ok {
		t.Error("the least recently used document was kept")
	}
	if _, ok := mem.get("https://app.example/1000.json", now); !ok {
		t.Error("the newest document was not kept")
	}
}

// TestCIMDRecordBounded: a document whose client would not fit the
// stored-record bound of a registration is refused.
func TestCIMDRecordBounded(t *testing.T) {
	e, host := newCIMDEnv(t, true, func(c *Config) { c.CIMDMaxBytes = 64 << 10 })
	id := host.doc("/big.json", "", func(id string) string {
		var uris []string
		for n := range 5 {
			uris = append(uris, fmt.Sprintf(`"http://127.0.0.1/%d/%s"`, n, strings.Repeat("p", 900)))
		}
		return `{"client_id":"` + id + `","client_name":"Big","redirect_uris":[` + strings.Join(uris, ",") + `],"token_endpoint_auth_method":"none"}`
	})
	if _, err := e.iss.cimd.fetch(t.Context(), id); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("cimd.fetch(document of 5 redirect URIs of 900 bytes) = %v, want too large", err)
	}
	if n := e.count(bucketCIMD); n != 0 {
		t.Errorf("cached documents = %d, want 0", n)
	}
}

// TestCIMDFailureBeforeConsentPage: a document that validates at
// /authorize and fails at the consent step (served with no-store, so it
// is fetched again) gets an error page, not a redirect to the redirect
// URI it names: the browser got there by redirects alone, with no page
// naming the client, whether it was signed in already or signed in on the
// way (RFC 9700 section 4.11.2).
func TestCIMDFailureBeforeConsentPage(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	const landing = "https://attacker.example/landing"
	tests := []struct {
		name     string
		signedIn bool
		fetches  int64 // the fetch at the consent step is the first to fail
	}{
		// /authorize reads the document twice (the request, then the
		// signed-in user's step), the consent step a third time.
		{"signed in", true, 3},
		// /authorize reads it once, the sign-in page and its POST for
		// the client's name, the consent step a fourth time.
		{"signing in", false, 4},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := fmt.Sprintf("/failing%d.json", n)
			var served atomic.Int64
			id := host.serve(path, func(w http.ResponseWriter, r *http.Request) {
				if served.Add(1) >= tt.fetches {
					http.Error(w, "gone", http.StatusNotFound)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Cache-Control", "no-store")
				_, _ = w.Write([]byte(`{"client_id":"` + host.srv.URL + path + `","client_name":"Doc Client","redirect_uris":["` + landing + `"],"token_endpoint_auth_method":"none"}`))
			})
			c := e.browser()
			if tt.signedIn {
				if _, err := e.robot(c, e.url(pathAuthorize, webAuthParams(testChallenge)), bWebRedirect, bUser, bPassword, "approve"); err != nil {
					t.Fatal(err)
				}
			}
			p := authParams(testChallenge)
			p.Set("client_id", id)
			p.Set("redirect_uri", landing)
			next := e.url(pathAuthorize, p)
			var resp *http.Response
			var body string
			for range 5 {
				var err error
				if resp, err = c.Get(next); err != nil {
					t.Fatal(err)
				}
				body = readBody(t, resp)
				if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, "/") {
					next = e.srv.URL + loc
					continue
				}
				if resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="login"`) {
					break
				}
				f := findForm(t, body, "login")
				v := f.hidden
				v.Set("username", bUser)
				v.Set("password", bPassword)
				resp, _ = e.postPage(t, c, f.action, v)
				next = e.srv.URL + resp.Header.Get("Location")
			}
			if got := served.Load(); got != tt.fetches {
				t.Errorf("document fetched %d times, want %d (the last one failing)", got, tt.fetches)
			}
			if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusBadRequest || loc != "" {
				t.Fatalf("consent step with a failing document = %d Location %q, want 400 and an error page", resp.StatusCode, loc)
			}
			if !strings.Contains(body, "unauthorized_client") {
				t.Errorf("error page does not say unauthorized_client:\n%s", body)
			}
			if n := e.count(bucketPending); n != 0 {
				t.Errorf("pending requests = %d, want 0", n)
			}
		})
	}
}

// TestCIMDHostASCII: a client_id is shown on the consent, sign-in and
// apps pages as the application's identity, so its host must read as a
// browser's address bar shows it: ASCII (the xn-- form of an
// internationalized name). A document at https://аpp.example.com/... (a
// Cyrillic а) was fetched, at its punycode name, and its client_id shown
// as a look-alike of app.example.com; RFC 3986 admits no such character
// in a URI anyway. Nothing is fetched for such a client_id.
func TestCIMDHostASCII(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	plain := host.docOn("app", "/plain.json", "")
	if err := e.fetchFrom(t, "192.0.2.1", plain); err != nil {
		t.Fatalf("ASCII host refused: %v", err)
	}
	for _, tt := range []struct{ name, path string }{
		{"\u0430pp", "/cyrillic.json"},           // Cyrillic а
		{"\uff41pp", "/fullwidth.json"},          // fullwidth ａ, which IDNA maps to a
		{"app\u200d", "/joiner.json"},            // an invisible joiner
		{"%D0%B0pp", "/escaped.json"},            // the Cyrillic а percent-encoded
		{"xn--pp-8sb", "/punycode-is-fine.json"}, // the same name in its ASCII form
	} {
		id := host.docOn(tt.name, tt.path, "")
		err := e.fetchFrom(t, "192.0.2.1", id)
		if ascii := strings.HasPrefix(tt.name, "xn--"); ascii {
			if err != nil {
				t.Errorf("%q: the xn-- form refused: %v", id, err)
			}
			continue
		}
		if err == nil || !errors.Is(err, ErrInvalidClient) {
			t.Errorf("%q: fetch = %v, want invalid_client", id, err)
		}
		if n := host.count(tt.path); n != 0 {
			t.Errorf("%q: document fetched %d times, want none", id, n)
		}
	}
}

// TestCIMDRememberedConsentKeepsItsRedirectHost: a remembered consent to
// a metadata document client covers the redirect hosts the user saw on
// the consent page, not every redirect URI its publisher lists later
// (draft-ietf-oauth-client-id-metadata-document, "Changes in Client
// Metadata"; MCP: the consent page names the redirect host). Whoever
// takes over the document (an expired domain, a hijacked static host)
// and adds a redirect URI of theirs must face each user's consent page
// naming it, not collect a code from every user who approved the app
// before by a link.
func TestCIMDRememberedConsentKeepsItsRedirectHost(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	var uris atomic.Value
	uris.Store(`["https://app.example.com/cb"]`)
	id := host.doc("/web.json", "no-store", func(id string) string {
		return `{"client_id":"` + id + `","client_name":"Doc Client","redirect_uris":` + uris.Load().(string) +
			`,"token_endpoint_auth_method":"none"}`
	})
	params := func(redirect string) url.Values {
		p := authParams(testChallenge)
		p.Set("client_id", id)
		p.Set("redirect_uri", redirect)
		return p
	}
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, params("https://app.example.com/cb")), "https://app.example.com/cb", bUser, bPassword, "approve"); err != nil {
		t.Fatalf("first authorization: %v", err)
	}
	uris.Store(`["https://app.example.com/cb","https://app.example.com/other","https://taken.example.net/cb"]`)
	for _, tt := range []struct {
		redirect string
		silent   bool
	}{
		{"https://app.example.com/cb", true},
		{"https://app.example.com/other", true}, // the host the user approved
		{"https://taken.example.net/cb", false},
	} {
		resp, err := c.Get(e.url(pathAuthorize, params(tt.redirect)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		code := strings.HasPrefix(loc, tt.redirect+"?") && strings.Contains(loc, "code=")
		if code != tt.silent || (!tt.silent && !strings.HasPrefix(loc, pathConsent+"?req=")) {
			t.Errorf("authorize to %s after the consent: Location %q, want a code %v (else the consent page)", tt.redirect, loc, tt.silent)
		}
	}
	// Nor does it make the new host one the user trusts for silent
	// errors: prompt=none there is an error page, not a redirect to it
	// (RFC 9700 section 4.11.2), while the approved host gets its error.
	for _, tt := range []struct {
		redirect string
		status   int
	}{
		{"https://taken.example.net/cb", http.StatusBadRequest},
		{"https://app.example.com/cb", http.StatusSeeOther},
	} {
		p := params(tt.redirect)
		p.Set("prompt", "none")
		p.Set("scope", "files:read files:write") // more than approved: consent_required
		resp, err := c.Get(e.url(pathAuthorize, p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != tt.status || (tt.status == http.StatusSeeOther) != strings.HasPrefix(loc, tt.redirect+"?error=consent_required") {
			t.Errorf("prompt=none to %s = %d %q, want %d", tt.redirect, resp.StatusCode, loc, tt.status)
		}
	}
}

// TestConsentTarget: what a metadata document client's remembered
// consent is for: the redirect host as the consent page names it, but
// for loopback IP literals, whose every port matches the registered URI
// (RFC 8252 section 7.3), the address alone; nothing for other clients.
func TestConsentTarget(t *testing.T) {
	doc, dcr := &Client{Source: sourceCIMD}, &Client{Source: sourceDCR}
	for _, tt := range []struct {
		c         *Client
		uri, want string
	}{
		{doc, "https://App.Example.com/cb", "app.example.com"},
		{doc, "https://app.example.com:8443/cb", "app.example.com:8443"},
		{doc, "http://127.0.0.1:5555/callback", "127.0.0.1"},
		{doc, "http://[::1]:5555/callback", "::1"},
		{doc, "http://localhost:5555/callback", "localhost:5555"},
		{doc, "com.example.app:/cb", "com.example.app:"},
		{dcr, "https://app.example.com/cb", ""},
	} {
		if got := consentTarget(tt.c, tt.uri); got != tt.want {
			t.Errorf("consentTarget(%s, %s) = %q, want %q", tt.c.Source, tt.uri, got, tt.want)
		}
	}
}

// TestCIMDURLOnlyURICharacters: a client_id is a URL (RFC 3986), with
// none of the characters a URI cannot hold (\ " < > ^ ` { | }), which
// readers take differently: a WHATWG URL parser (browsers, Node) reads \
// as /, so https://host/official/..\~mallory\client.json is to them
// https://host/~mallory/client.json, a path with the dot segments the
// draft forbids, while the pages show it as an id under /official/; a
// server that reads \ as / (IIS) serves Mallory's document there. Such an
// id is refused and nothing is fetched.
func TestCIMDURLOnlyURICharacters(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	for _, path := range []string{
		`/official/..\~mallory\client.json`,
		`/official/a%5Cclient.json`, // escaped, it is a URL: fetched (..%5C is a dot segment: TestCIMDURLDotSegmentsAnySpelling)
		"/a|b.json", "/a^b.json", "/a`b.json", "/a{b}.json", `/a"b.json`, "/a<b>.json",
	} {
		served, _ := url.PathUnescape(path)
		fetchAtPath(t, e, host, path, served, strings.Contains(path, "%5C"))
	}
}

// fetchAtPath serves a document for the id of path on host (at served,
// as the server reads the path) and fetches it: the document if ok, else
// invalid_client with nothing fetched.
func fetchAtPath(t *testing.T, e *testEnv, host *cimdHost, path, served string, ok bool) {
	t.Helper()
	id := "https://app.example.com:" + host.srv.URL[strings.LastIndex(host.srv.URL, ":")+1:] + path
	host.serve(served, func(w http.ResponseWriter, r *http.Request) {
		doc, _ := json.Marshal(map[string]any{"client_id": id, "client_name": "Doc Client",
			"redirect_uris": []string{"http://127.0.0.1:3000/callback"}, "token_endpoint_auth_method": "none"})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})
	err := e.fetchFrom(t, "192.0.2.1", id)
	if ok {
		if err != nil {
			t.Errorf("%q: fetch = %v, want the document", id, err)
		}
		return
	}
	if !errors.Is(err, ErrInvalidClient) {
		t.Errorf("%q: fetch = %v, want invalid_client", id, err)
	}
	if n := host.count(served); n != 0 {
		t.Errorf("%q: document fetched %d times, want none", id, n)
	}
}

// TestCIMDURLDotSegmentsAnySpelling: the draft forbids dot segments in a
// client_id, and servers read more as one than RFC 3986's "..": IIS a
// "..%5C" (\ is / to it), nginx a "..%2F" (it decodes %2F before
// resolving dot segments), Tomcat and Jetty a "..;x" (a path parameter),
// and servers that decode twice a "%252e%252e". Each would serve
// https://host/official/<such>/~mallory/client.json as Mallory's
// /~mallory/client.json, which the pages would show as an id under
// /official/. Such an id is refused and nothing is fetched; a \ or ; that
// makes no dot segment is fetched as before.
func TestCIMDURLDotSegmentsAnySpelling(t *testing.T) {
	fetchEachAtPath(t, []pathCase{
		{"/official/..%5C~mallory%5Cclient.json", false},
		{"/official/..%5c~mallory/client.json", false},
		{"/official/%2e%2e%5C~mallory/client.json", false},
		{"/official/..%2F~mallory/client.json", false},
		{"/official/.%2e%2f~mallory/client.json", false},
		{"/official/..;/~mallory/client.json", false},
		{"/official/..;x=1/~mallory/client.json", false},
		{"/official/.;/client.json", false},
		{"/official/%252e%252e/~mallory/client.json", false},
		{"/official/a%5Cb.json", true},
		{"/official/client;v=1.json", true},
		{"/official/..a/client.json", true},
	})
}

// TestCIMDURLDotSegmentsDecodedTwice: a server that decodes a path twice
// (the reason %252e%252e is refused) reads a separator, or a segment's
// ;parameters, that the second decoding makes as it reads one made
// plain: ..%255C is ..\ to it, ..%252F is ../, ..%253Bx is ..;x, and
// %25252e%25252e, decoded once more, %252e%252e. Such an id is refused
// and nothing is fetched; a %25 that makes no dot segment is fetched.
func TestCIMDURLDotSegmentsDecodedTwice(t *testing.T) {
	fetchEachAtPath(t, []pathCase{
		{"/official/..%255C~mallory%255Cclient.json", false},
		{"/official/..%255c~mallory/client.json", false},
		{"/official/..%252F~mallory/client.json", false},
		{"/official/%252e%252e%252f~mallory/client.json", false},
		{"/official/.%252e%255c~mallory/client.json", false},
		{"/official/..%253Bx/~mallory/client.json", false},
		{"/official/%25252e%25252e/~mallory/client.json", false},
		{"/official/100%25off/client.json", true},
		{"/official/a%255Cb.json", true},
		{"/official/v%252e1/client.json", true},
	})
}

// TestCIMDURLPathDecodesToASCII: a client_id's path decodes, however
// often, to printable ASCII only. Spellings of ".." that no RFC reads
// as one but some server may: an overlong UTF-8 dot (%c0%ae, IIS 4 and
// 5 read it as .), a fullwidth full stop (%EF%BC%8E, which NFKC
// normalisation and Windows' best-fit mapping make a .), a NUL that a C
// server ends the segment at (..%00), also encoded twice; rather than
// chase spellings, an id whose path decodes to a control character or a
// byte outside ASCII is refused and nothing is fetched (no client
// metadata document needs one), as one written with such characters
// plain already is (TestCIMDHostASCII). Printable escapes pass.
func TestCIMDURLPathDecodesToASCII(t *testing.T) {
	fetchEachAtPath(t, []pathCase{
		{"/official/%c0%ae%c0%ae/~mallory/client.json", false},
		{"/official/%C0%AE./~mallory/client.json", false},
		{"/official/%EF%BC%8E%EF%BC%8E/~mallory/client.json", false},
		{"/official/..%00/~mallory/client.json", false},
		{"/official/..%2500/~mallory/client.json", false},
		{"/official/%25c0%25ae%25c0%25ae/~mallory/client.json", false},
		{"/official/client%0A.json", false},
		{"/official/%7F.json", false},
		{"/official/caf%C3%A9.json", false},
		{"/official/client%20v1.json", true},
		{"/official/%7Emallory/client.json", true},
	})
}

// pathCase is a client_id path and whether its document is fetched.
type pathCase struct {
	path string
	ok   bool
}

// fetchEachAtPath runs fetchAtPath for each case, the document served at
// the path its id names once decoded.
func fetchEachAtPath(t *testing.T, cases []pathCase) {
	t.Helper()
	e, host := newCIMDEnv(t, true, nil)
	for _, tt := range cases {
		u, _ := url.Parse("https://h" + tt.path)
		fetchAtPath(t, e, host, tt.path, u.Path, tt.ok)
	}
}

// TestCIMDURLEscapeDepthBounded: checkURL decodes a client_id's path
// again until it no longer changes (TestCIMDURLDotSegmentsDecodedTwice),
// and a path of one %25 chain 300 deep and 700 segments took some 1,000
// decodings, each splitting the path: 30 to 70 ms of CPU for one
// unauthenticated /authorize, before any rate limit, where any other
// client_id takes 1 ms. A path that a fourth decoding still changes is
// refused (no document nests its escapes so deep) and never fetched; one
// of three levels is fetched as before.
func TestCIMDURLEscapeDepthBounded(t *testing.T) {
	fetchEachAtPath(t, []pathCase{
		{"/official/%252541.json", true},
		{"/official/%25252541.json", false},
	})
	f := &cimdFetcher{cfg: &Config{}}
	id := "https://a.example/%" + strings.Repeat("25", 300) + "41"
	id += strings.Repeat("/a", (maxClientIDLen-len(id))/2)
	if err := f.checkURL(id); err == nil {
		t.Errorf("an id escaped 300 deep was accepted")
	}
	if n := testing.AllocsPerRun(5, func() { _ = f.checkURL(id) }); n > 50 {
		t.Errorf("checking an id escaped 300 deep made %.0f allocations, want a few (a bounded number of decodings)", n)
	}
}

// TestUserNamedAsDocumentClientGetsNoToken: a user the store holds
// under a client metadata document's client id (added by an earlier
// release's admin API, which took such names; this release refuses them
// but keeps the ones stored) is not issued a token for that client: its
// sub would equal its client_id, a client's own token to a resource
// server. For another client, the user signs in and gets tokens as before.
func TestUserNamedAsDocumentClientGetsNoToken(t *testing.T) {
	const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // testChallenge's
	e, host := newCIMDEnv(t, true, nil)
	id := host.doc("/client.json", "", validDoc)
	other := host.doc("/other.json", "", validDoc)
	// As an earlier release's POST /mcp-auth/users stored it.
	hash, err := bcrypt.GenerateFromPassword([]byte(bPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	e.put(bucketUsers, id, &User{Username: id, PasswordHash: string(hash), Groups: []string{"staff"}, Source: sourceAdmin}, time.Time{})
	for _, tt := range []struct {
		client string
		want   bool
	}{{id, false}, {other, true}} {
		p := authParams(testChallenge)
		p.Set("client_id", tt.client)
		p.Set("redirect_uri", "http://127.0.0.1:3000/callback")
		cb, err := e.robot(e.browser(), e.url(pathAuthorize, p), "http://127.0.0.1:3000/callback", id, bPassword, "approve")
		if err != nil {
			t.Fatalf("%s: authorize as %s: %v", tt.client, id, err)
		}
		tok, err := e.exchange(t, tt.client, "", cb.Query().Get("code"), verifier,
			oauth2.SetAuthURLParam("redirect_uri", "http://127.0.0.1:3000/callback"), oauth2.SetAuthURLParam("resource", bResource))
		switch {
		case !tt.want && err == nil:
			_, c := claimsOf(t, tok.AccessToken)
			t.Errorf("user %s for the client of that id: a token (sub %v, client_id %v), want refused", id, c["sub"], c["client_id"])
		case !tt.want && !strings.Contains(err.Error(), "invalid_grant"):
			t.Errorf("user %s for the client of that id: %v, want invalid_grant", id, err)
		case tt.want && err != nil:
			t.Errorf("user %s for another client (%s): %v, want a token", id, tt.client, err)
		}
	}
}
