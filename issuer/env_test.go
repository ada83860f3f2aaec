package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// Fixtures of the token-side tests.
const (
	tResource = "https://mcp.example.com/mcp"
	tOther    = "https://other.example.com/mcp"
	tRedirect = "http://127.0.0.1:9999/cb"
	tUser     = "alice"
	tPassword = "alice password"

	tPublic  = "pub"    // public, code + refresh
	tConf    = "conf"   // client_secret_basic, every grant
	tPost    = "post"   // client_secret_post, sha256 secret hash
	tJWT     = "jwtc"   // private_key_jwt, inline JWKS
	tNarrow  = "narrow" // public, limited to tResource and "read"
	tOnlyCC  = "svc"    // confidential, client_credentials only; a resource server (Introspect)
	tSecret  = "s3cr=t p&ss+%/é"
	tSecret2 = "post-secret"

	tAgent1      = "agent-1"      // read+write, max depth 2, any client
	tAgent2      = "agent-2"      // every scope, default depth
	tAgentNarrow = "agent-narrow" // read only, only for tConf's users, depth 1
	tAgentKey    = "agent-key"    // private_key_jwt (the tJWT key)
	tAgentOff    = "agent-off"    // disabled
	tAgentSecret = "agent secret"
)

// testEnv is an issuer served over real HTTP, on a store sharing the fixed
// clock; its issuer URL is the test server's URL (plus an optional path).
// newTokEnv configures the token-side fixtures (t*), newBrowserEnv the
// browser-side ones (b*).
type testEnv struct {
	t      testing.TB
	iss    *Issuer
	srv    *httptest.Server
	store  store.Store
	clock  *storetest.Clock
	jwtKey *ecdsa.PrivateKey // tJWT's signing key

	handler atomic.Pointer[Issuer] // what the server serves; swapped by restart
}

// newEnv starts the server of an environment; serve puts an issuer behind it.
func newEnv(t testing.TB, st store.Store, clock *storetest.Clock) *testEnv {
	t.Helper()
	e := &testEnv{t: t, store: st, clock: clock}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { e.handler.Load().ServeHTTP(w, r) }))
	t.Cleanup(e.srv.Close)
	return e
}

// serve builds an Issuer from cfg on the environment's store and serves it.
func (e *testEnv) serve(cfg Config) {
	e.t.Helper()
	if cfg.RevocationMaxStale == 0 {
		// The tests move the fixed clock freely and run no
		// WatchRevocations: every revocation they see refused joined the
		// set as it committed.
		cfg.RevocationMaxStale = neverStale
	}
	iss, err := New(cfg, e.store)
	if err != nil {
		e.t.Fatalf("New() error: %v", err)
	}
	e.iss = iss
	e.handler.Store(iss)
}

type envOption func(*Config)

func withPath(p string) envOption {
	return func(c *Config) { c.Issuer += p }
}

func newTokEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	return newTokEnvStore(t, memory.New(memory.Options{Now: clock.Now, RunTwice: true}), clock, opts...)
}

func newTokEnvStore(t testing.TB, st store.Store, clock *storetest.Clock, opts ...envOption) *testEnv {
	t.Helper()
	e := newEnv(t, st, clock)
	e.restart(st, opts...)
	return e
}

// restart builds a new Issuer on st behind the same URL, as a config
// reload or a process restart does.
func (e *testEnv) restart(st store.Store, opts ...envOption) {
	e.t.Helper()
	cfg := e.config()
	for _, o := range opts {
		o(&cfg)
	}
	e.store = st
	e.serve(cfg)
}

// jwtTestKey is generated once per process: key generation is slow under
// -race and the key carries no state.
var jwtTestKey = sync.OnceValue(func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

var secretHash = sync.OnceValue(func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(tSecret), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
})

var passwordHash = sync.OnceValue(func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(tPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
})

func (e *testEnv) config() Config {
	e.jwtKey = jwtTestKey()
	pub, err := publicJWK(e.jwtKey.Public())
	if err != nil {
		e.t.Fatal(err)
	}
	pub.Kid = "k1"
	jwks, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	sum := sha256.Sum256([]byte(tSecret2))
	return Config{
		Issuer: e.srv.URL,
		Now:    e.clock.Now,
		Users: []User{
			{Username: tUser, PasswordHash: passwordHash(), Groups: []string{"staff"}, Name: "Alice A.", Email: "alice@example.com"},
			{Username: "bob", PasswordHash: passwordHash(), Groups: []string{"readers"}},
			{Username: "carol", PasswordHash: passwordHash(), Disabled: true, Groups: []string{"staff"}},
		},
		Groups: []Group{
			{Name: "staff", Scopes: map[string][]string{tResource: {"read", "write"}, tOther: {"*"}}},
			{Name: "readers", Scopes: map[string][]string{"*": {"read"}}},
		},
		Clients: []Client{
			{ID: tPublic, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none"},
			{ID: tConf, SecretHash: secretHash(), RedirectURIs: []string{tRedirect},
				GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials", grantTokenExchange}},
			{ID: tPost, SecretHash: "sha256:" + hexString(sum[:]), TokenEndpointAuthMethod: "client_secret_post",
				RedirectURIs: []string{tRedirect}, GrantTypes: []string{"authorization_code", "client_credentials"}},
			{ID: tJWT, JWKS: jwks, RedirectURIs: []string{tRedirect},
				GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"}},
			{ID: tNarrow, RedirectURIs: []string{tRedirect}, Resources: []string{tResource}, Scopes: []string{"read"}},
			{ID: tOnlyCC, SecretHash: secretHash(), GrantTypes: []string{"client_credentials"}, Scopes: []string{"read"}, Introspect: true},
		},
		Agents: []Agent{
			{ID: tAgent1, Name: "Agent One", SecretHash: hashClientSecret(tAgentSecret), Scopes: []string{"read", "write"}, MaxDepth: 2},
			{ID: tAgent2, Name: "Agent Two", SecretHash: hashClientSecret(tAgentSecret)},
			{ID: tAgentNarrow, SecretHash: hashClientSecret(tAgentSecret), AllowedClients: []string{tConf}, Scopes: []string{"read"}, MaxDepth: 1},
			{ID: tAgentKey, JWKS: jwks},
			{ID: tAgentOff, SecretHash: hashClientSecret(tAgentSecret), Disabled: true},
		},
		Resources: []Resource{
			{URL: tResource, Scopes: []string{"read", "write", "admin"}},
			{URL: tOther, Scopes: []string{"read", "write"}},
		},
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// codeSpec describes an authorization code written straight into the
// store, as /authorize would after login and consent.
type codeSpec struct {
	client, user, redirect, resource, nonce, actor string
	scopes                                         []string
	ttl                                            time.Duration
	challengeMethod                                string // default S256
	noChallenge                                    bool
	dpopJKT                                        string
	at                                             time.Time // the issue; default the clock's now
}

// issueCode stores an authorization code and returns it with its PKCE
// verifier.
func (e *testEnv) issueCode(t testing.TB, s codeSpec) (code, verifier string) {
	t.Helper()
	if s.client == "" {
		s.client = tPublic
	}
	if s.user == "" {
		s.user = tUser
	}
	if s.redirect == "" {
		s.redirect = tRedirect
	}
	if s.resource == "" {
		s.resource = tResource
	}
	if s.scopes == nil {
		s.scopes = []string{"read"}
	}
	if s.ttl == 0 {
		s.ttl = 5 * time.Minute
	}
	if s.challengeMethod == "" {
		s.challengeMethod = "S256"
	}
	if s.at.IsZero() {
		s.at = e.clock.Now()
	}
	code = rand.Text()
	verifier = oauth2.GenerateVerifier()
	ac := authCode{
		ClientID: s.client, RedirectURI: s.redirect, Subject: s.user, Scopes: s.scopes,
		Resource: s.resource, Nonce: s.nonce, Actor: s.actor, AuthTime: s.at.Add(-time.Minute),
		IssuedAt: s.at, Issuer: e.iss.URL(), ExpiresAt: s.at.Add(s.ttl),
		CodeChallengeMethod: s.challengeMethod, DPoPJKT: s.dpopJKT,
	}
	if !s.noChallenge {
		ac.CodeChallenge = oauth2.S256ChallengeFromVerifier(verifier)
	}
	err := e.store.Update(context.Background(), func(tx store.Tx) error {
		return codesIn(tx).create(code, &ac)
	})
	if err != nil {
		t.Fatal(err)
	}
	return code, verifier
}

// oauthConfig is a golang.org/x/oauth2 client for this issuer.
func (e *testEnv) oauthConfig(clientID, secret string, style oauth2.AuthStyle) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     clientID,
		ClientSecret: secret,
		RedirectURL:  tRedirect,
		Endpoint: oauth2.Endpoint{
			AuthURL:   e.iss.endpoint(pathAuthorize),
			TokenURL:  e.iss.endpoint(pathToken),
			AuthStyle: style,
		},
	}
}

func (e *testEnv) ctx() context.Context {
	return context.WithValue(context.Background(), oauth2.HTTPClient, e.srv.Client())
}

// exchange redeems a code with the x/oauth2 client.
func (e *testEnv) exchange(t testing.TB, clientID, secret, code, verifier string, opts ...oauth2.AuthCodeOption) (*oauth2.Token, error) {
	t.Helper()
	style := oauth2.AuthStyleInHeader
	if secret == "" {
		style = oauth2.AuthStyleInParams
	}
	opts = append(opts, oauth2.VerifierOption(verifier))
	return e.oauthConfig(clientID, secret, style).Exchange(e.ctx(), code, opts...)
}

// answer is a decoded JSON response.
type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (a answer) str(k string) string {
	s, _ := a.body[k].(string)
	return s
}

// post sends a form to an endpoint path; basic, when set, is "id:secret"
// (sent form-urlencoded, as RFC 6749 2.3.1 says).
func (e *testEnv) post(t testing.TB, path string, form url.Values, basic string) answer {
	t.Helper()
	return e.postRaw(t, path, form.Encode(), basic)
}

func (e *testEnv) postRaw(t testing.TB, path, body, basic string) answer {
	t.Helper()
	return e.do(t, e.postRequest(t, path, body, basic))
}

// postRequest is the request postRaw sends.
func (e *testEnv) postRequest(t testing.TB, path, body, basic string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.iss.endpoint(path), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic != "" {
		id, secret, _ := strings.Cut(basic, ":")
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	return req
}

func (e *testEnv) do(t testing.TB, req *http.Request) answer {
	t.Helper()
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	_ = json.Unmarshal(b, &a.body)
	return a
}

// clientAssertion signs an RFC 7523 client assertion for tJWT.
func (e *testEnv) clientAssertion(t *testing.T, mutate func(jwt.MapClaims, *jwt.Token)) string {
	t.Helper()
	now := e.clock.Now()
	claims := jwt.MapClaims{
		"iss": tJWT, "sub": tJWT, "aud": e.iss.endpoint(pathToken),
		"exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": rand.Text(),
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = "k1"
	if mutate != nil {
		mutate(claims, tok)
	}
	s, err := tok.SignedString(e.jwtKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claimsOf decodes a JWT's claims without verifying it (tests verify
// separately where it matters).
func claimsOf(t *testing.T, raw string) (map[string]any, map[string]any) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", raw)
	}
	var h, c map[string]any
	for n, v := range []*map[string]any{&h, &c} {
		b, err := base64.RawURLEncoding.DecodeString(parts[n])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	return h, c
}

// introspect asks whether a token is active, as the resource server
// tOnlyCC, which may see every token.
func (e *testEnv) introspect(t *testing.T, tok string) answer {
	t.Helper()
	return e.post(t, pathIntrospect, url.Values{"token": {tok}}, tOnlyCC+":"+tSecret)
}

func (e *testEnv) active(t *testing.T, tok string) bool {
	t.Helper()
	a := e.introspect(t, tok)
	if a.status != http.StatusOK {
		t.Fatalf("introspect status = %d, want 200 (%s)", a.status, a.raw)
	}
	v, _ := a.body["active"].(bool)
	return v
}

// twice are a JWT's claims written with the member name given first as
// raw and then as the claims have it (or only as raw): readers disagree
// on which counts.
type twice struct {
	jwt.MapClaims
	name, raw string
}

func (d twice) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(d.MapClaims)
	if err != nil {
		return nil, err
	}
	return withMemberFirst(b, d.name, d.raw), nil
}

// withMemberFirst is the JSON object obj with the member name: raw
// written before its own members.
func withMemberFirst(obj []byte, name, raw string) []byte {
	out := []byte(`{"` + name + `":` + raw)
	if len(obj) > 2 {
		out = append(out, ',')
	}
	return append(out, obj[1:]...)
}

// signHeaderTwice signs tok with key as tok.SignedString does, its
// header written with the member name given first as raw.
func signHeaderTwice(t *testing.T, tok *jwt.Token, key any, name, raw string) string {
	t.Helper()
	tok.Header["alg"] = tok.Method.Alg()
	h, err := json.Marshal(tok.Header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(tok.Claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	s := enc(withMemberFirst(h, name, raw)) + "." + enc(c)
	sig, err := tok.Method.Sign(s, key)
	if err != nil {
		t.Fatal(err)
	}
	return s + "." + enc(sig)
}
