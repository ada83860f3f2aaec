package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// testIdP is an enterprise IdP that publishes its keys and mints ID-JAGs.
type testIdP struct {
	srv     *httptest.Server
	key     *ecdsa.PrivateKey
	fetches atomic.Int32
	lastURI atomic.Pointer[string] // of the last key set fetch
}

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &testIdP{key: k}
	pub, err := publicJWK(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub.Kid = "idp1"
	set, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		uri := r.URL.RequestURI()
		p.lastURI.Store(&uri)
		_, _ = w.Write(set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// withTrustedIdP trusts p, whose users are those of identity provider
// corp (group eng maps to staff), and lets tConf use the jwt-bearer grant.
func withTrustedIdP(p *testIdP) envOption {
	return func(c *Config) {
		c.IdentityProviders = []IdentityProvider{{Name: "corp", Issuer: p.srv.URL, ClientID: "mcp",
			GroupMap: map[string][]string{"eng": {"staff"}}}}
		c.TrustedIdPs = []TrustedIdP{{Issuer: p.srv.URL, JWKSURI: p.srv.URL + "/jwks"}}
		for n := range c.Clients {
			// Not tPublic: a public client with jwt-bearer does not
			// load (review s17-ops F6); it is refused the grant all the
			// same.
			if c.Clients[n].ID == tConf {
				c.Clients[n].GrantTypes = append(c.Clients[n].GrantTypes, grantJWTBearer)
			}
		}
	}
}

// idJAG mints an ID-JAG of p for tConf, user u1 (group eng), on tResource
// with scopes read write admin; mutate changes it before signing.
func (p *testIdP) idJAG(t *testing.T, e *testEnv, mutate func(jwt.MapClaims, *jwt.Token)) string {
	t.Helper()
	now := e.clock.Now()
	claims := jwt.MapClaims{
		"iss": p.srv.URL, "sub": "u1", "aud": e.iss.URL(), "client_id": tConf, "resource": tResource,
		"scope": "read write admin", "groups": []string{"eng"}, "email": "u1@corp.example",
		"exp": now.Add(5 * time.Minute).Unix(), "iat": now.Unix(), "jti": rand.Text(),
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["typ"] = idJAGType
	tok.Header["kid"] = "idp1"
	if mutate != nil {
		mutate(claims, tok)
	}
	key := any(p.key)
	switch tok.Method {
	case jwt.SigningMethodNone:
		key = jwt.UnsafeAllowNoneSignatureType
	case jwt.SigningMethodHS256:
		key = []byte("a shared secret of thirty-two bytes!")
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *testEnv) redeem(t *testing.T, basic, assertion string, extra url.Values) answer {
	t.Helper()
	f := url.Values{"grant_type": {grantJWTBearer}, "assertion": {assertion}}
	for k, v := range extra {
		f[k] = v
	}
	return e.post(t, pathToken, f, basic)
}

// TestIDJAGRedeemed: an ID-JAG of a trusted IdP yields an access token for
// the ID-JAG's resource, to the ID-JAG's user (provisioned as the
// identity provider's user), with the scopes of the ID-JAG its groups
// allow; the metadata says so.
func TestIDJAGRedeemed(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil)
	if a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	if a.str("scope") != "read write" || a.str("token_type") != "Bearer" || a.str("refresh_token") != "" {
		t.Errorf("answer = %s, want scope read write (admin: not for the user's groups), Bearer, no refresh token", a.raw)
	}
	// The ID-JAG draft's processing rules: "MUST include the granted
	// resource (if any)" in the access token response.
	if a.str("resource") != tResource {
		t.Errorf("answer = %s, want resource %s", a.raw, tResource)
	}
	_, c := claimsOf(t, a.str("access_token"))
	if c["sub"] != "corp:u1" || c["client_id"] != tConf || c["aud"] != tResource || c["principal_type"] != principalUser {
		t.Errorf("claims = %v, want sub corp:u1, client %s, aud %s, a user's token", c, tConf, tResource)
	}
	if !e.active(t, a.str("access_token")) {
		t.Error("the token is not active")
	}
	u, err := e.iss.dir.lookupUser(e.ctx(), "corp:u1")
	if err != nil || u.IdentityProvider != "corp" || u.IdPSubject != "u1" || !slices.Equal(u.Groups, []string{"staff"}) {
		t.Errorf("user = %+v, %v; want corp's u1 in group staff", u, err)
	}

	// No refresh token, offline_access or not (README): the client asks
	// its IdP for a new ID-JAG.
	// Nor is offline_access granted, as a code's is not to a client
	// without the refresh grant (OpenID Connect Core section 11: the
	// server may ignore it): the answer would claim a grant the client
	// does not hold.
	a = e.redeem(t, conf, idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = "read offline_access" }), nil)
	if _, c := claimsOf(t, a.str("access_token")); a.status != http.StatusOK || a.str("refresh_token") != "" || a.str("scope") != "read" || c["scope"] != "read" {
		t.Errorf("redeem with offline_access = %d %s, want 200, scope read and no refresh token", a.status, a.raw)
	}
	a = e.redeem(t, conf, idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = "offline_access" }), nil)
	if a.status != http.StatusBadRequest || a.str("error") != "invalid_scope" || a.str("access_token") != "" {
		t.Errorf("redeem with offline_access alone = %d %s, want 400 invalid_scope", a.status, a.raw)
	}

	// A narrower request gets what it asks; the scope parameter alone.
	a = e.redeem(t, conf, idp.idJAG(t, e, nil), url.Values{"scope": {"read"}, "resource": {tResource}})
	if a.status != http.StatusOK || a.str("scope") != "read" {
		t.Errorf("narrow redeem = %d %s, want 200 scope read", a.status, a.raw)
	}

	m := e.iss.metadataDocument()
	if !slices.Contains(m.GrantTypesSupported, grantJWTBearer) || !slices.Equal(m.AuthorizationGrantProfilesSupported, []string{grantProfileIDJAG}) {
		t.Errorf("metadata grant_types_supported %v, authorization_grant_profiles_supported %v", m.GrantTypesSupported, m.AuthorizationGrantProfilesSupported)
	}
}

// TestIDJAGRefused: each defect of an ID-JAG or its request is refused
// with its OAuth error, and nothing is issued or provisioned.
func TestIDJAGRefused(t *testing.T) {
	idp := newTestIdP(t)
	other := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	type mut = func(jwt.MapClaims, *jwt.Token)
	tests := []struct {
		name   string
		client string
		mutate mut
		extra  url.Values
		status int
		code   string
	}{
		{"wrong typ", conf, func(_ jwt.MapClaims, t *jwt.Token) { t.Header["typ"] = "JWT" }, nil, 400, "invalid_grant"},
		{"no typ", conf, func(_ jwt.MapClaims, t *jwt.Token) { delete(t.Header, "typ") }, nil, 400, "invalid_grant"},
		{"access token typ", conf, func(_ jwt.MapClaims, t *jwt.Token) { t.Header["typ"] = "at+jwt" }, nil, 400, "invalid_grant"},
		{"wrong aud", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = "https://other-as.example" }, nil, 400, "invalid_grant"},
		{"aud of several servers", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = []string{e.iss.URL(), "https://other-as.example"} }, nil, 400, "invalid_grant"},
		{"expired", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = e.clock.Now().Add(-time.Minute).Unix() }, nil, 400, "invalid_grant"},
		{"no exp", conf, func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "exp") }, nil, 400, "invalid_grant"},
		{"issued in the future", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["iat"] = e.clock.Now().Add(time.Minute).Unix() }, nil, 400, "invalid_grant"},
		{"no iat", conf, func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "iat") }, nil, 400, "invalid_grant"},
		{"lives too long", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = e.clock.Now().Add(2 * time.Hour).Unix() }, nil, 400, "invalid_grant"},
		{"jti too long", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["jti"] = strings.Repeat("j", maxJTILen+1) }, nil, 400, "invalid_grant"},
		{"no jti", conf, func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "jti") }, nil, 400, "invalid_grant"},
		{"no sub", conf, func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "sub") }, nil, 400, "invalid_grant"},
		{"untrusted issuer", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["iss"] = other.srv.URL }, nil, 400, "invalid_grant"},
		{"signed by another key", conf, nil, nil, 400, "invalid_grant"},
		{"alg none", conf, func(_ jwt.MapClaims, t *jwt.Token) { t.Method = jwt.SigningMethodNone }, nil, 400, "invalid_grant"},
		{"alg HS256", conf, func(_ jwt.MapClaims, t *jwt.Token) { t.Method = jwt.SigningMethodHS256 }, nil, 400, "invalid_grant"},
		{"client_id of another client", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["client_id"] = tJWT }, nil, 400, "invalid_grant"},
		{"no client_id", conf, func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "client_id") }, nil, 400, "invalid_grant"},
		{"resource not registered", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["resource"] = "https://unknown.example/mcp" }, nil, 400, "invalid_grant"},
		{"resource parameter differs", conf, nil, url.Values{"resource": {tOther}}, 400, "invalid_target"},
		{"resource claim not a string", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["resource"] = []string{tResource} }, url.Values{"resource": {tOther}}, 400, "invalid_grant"},
		{"resource claim empty", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["resource"] = "" }, url.Values{"resource": {tOther}}, 400, "invalid_grant"},
		{"crit header", conf, func(_ jwt.MapClaims, t *jwt.Token) { t.Header["crit"] = []string{"x-ext"}; t.Header["x-ext"] = true }, nil, 400, "invalid_grant"},
		// A member named twice, or in two cases: readers disagree on
		// which counts (before: the last, here).
		{"sub twice", conf, func(c jwt.MapClaims, t *jwt.Token) { t.Claims = twice{c, "sub", `"u2"`} }, nil, 400, "invalid_grant"},
		{"client_id twice", conf, func(c jwt.MapClaims, t *jwt.Token) { t.Claims = twice{c, "client_id", `"` + tJWT + `"`} }, nil, 400, "invalid_grant"},
		{"sub in another case", conf, func(c jwt.MapClaims, t *jwt.Token) { t.Claims = twice{c, "SUB", `"u2"`} }, nil, 400, "invalid_grant"},
		{"iss with a trailing slash", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["iss"] = idp.srv.URL + "/" }, nil, 400, "invalid_grant"},
		{"aud with a trailing slash", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = e.iss.URL() + "/" }, nil, 400, "invalid_grant"},
		{"scope claim an array", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = []string{"read"} }, nil, 400, "invalid_scope"},
		{"signed by a key in its header", conf, func(_ jwt.MapClaims, t *jwt.Token) {
			pub, _ := publicJWK(other.key.Public())
			t.Header["jwk"] = pub
			delete(t.Header, "kid")
		}, nil, 400, "invalid_grant"},
		{"scope outside the assertion", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = "read" }, url.Values{"scope": {"write"}}, 400, "invalid_scope"},
		{"an actor (act)", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["act"] = map[string]any{"sub": "agent-x"} }, nil, 400, "invalid_grant"},
		{"an empty act", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["act"] = map[string]any{} }, nil, 400, "invalid_grant"},
		// RFC 8693 section 4.4: who may act for the user; a token
		// without it would let any agent this server allows act.
		{"who may act (may_act)", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["may_act"] = map[string]any{"sub": tAgent1} }, nil, 400, "invalid_grant"},
		{"an empty may_act", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["may_act"] = map[string]any{} }, nil, 400, "invalid_grant"},
		{"a null may_act", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["may_act"] = nil }, nil, 400, "invalid_grant"},
		{"may_act given twice", conf, func(c jwt.MapClaims, t *jwt.Token) {
			c["may_act"] = map[string]any{"sub": tAgent1}
			t.Claims = twice{c, "may_act", `{}`}
		}, nil, 400, "invalid_grant"},
		// Enterprise-managed authorization, section 7.6.2: the scope
		// claim is validated against the resource's registered scopes,
		// and one that does not match is invalid_grant, not dropped.
		{"a scope the resource does not register", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = "read nope" }, nil, 400, "invalid_grant"},
		{"a scope another resource registers", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["resource"] = tOther; c["scope"] = "read admin" }, nil, 400, "invalid_grant"},
		{"a scope the resource does not register, not requested", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = "read nope" }, url.Values{"scope": {"read"}}, 400, "invalid_grant"},
		{"no scope in the assertion", conf, func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "scope") }, nil, 400, "invalid_scope"},
		{"user in no mapped group", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["groups"] = []string{"sales"} }, nil, 400, "invalid_grant"},
		{"scopes the user's groups do not allow", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = "admin" }, nil, 400, "invalid_scope"},
		{"public client", "", func(c jwt.MapClaims, _ *jwt.Token) { c["client_id"] = tPublic }, url.Values{"client_id": {tPublic}}, 400, "unauthorized_client"},
		{"client without the grant type", tOnlyCC + ":" + tSecret, func(c jwt.MapClaims, _ *jwt.Token) { c["client_id"] = tOnlyCC }, nil, 400, "unauthorized_client"},
		{"bound to a key, no proof", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["cnf"] = map[string]any{"jkt": newDPoPKey(t).jkt} }, nil, 400, "invalid_grant"},
		{"cnf of a certificate", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["cnf"] = map[string]any{"x5t#S256": "abc"} }, nil, 400, "invalid_grant"},
		{"cnf with more than jkt", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["cnf"] = map[string]any{"jkt": "abc", "x5t#S256": "abc"} }, nil, 400, "invalid_grant"},
		{"cnf with an empty jkt", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["cnf"] = map[string]any{"jkt": ""} }, nil, 400, "invalid_grant"},
		{"cnf not an object", conf, func(c jwt.MapClaims, _ *jwt.Token) { c["cnf"] = "abc" }, nil, 400, "invalid_grant"},
		{"no assertion", conf, nil, url.Values{"assertion": {""}}, 400, "invalid_request"},
		{"not a JWT", conf, nil, url.Values{"assertion": {"not-a-jwt"}}, 400, "invalid_grant"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			grants, users := e.count(bucketGrants), e.count(bucketUsers)
			raw := idp.idJAG(t, e, tt.mutate)
			if tt.name == "signed by a key in its header" {
				raw = other.idJAG(t, e, func(c jwt.MapClaims, tok *jwt.Token) { c["iss"] = idp.srv.URL; tt.mutate(c, tok) })
			}
			if tt.name == "signed by another key" {
				// The header says ES256 and kid idp1; the signature is another key's.
				raw = other.idJAG(t, e, nil)
				parts, own := strings.Split(raw, "."), strings.Split(idp.idJAG(t, e, nil), ".")
				raw = own[0] + "." + own[1] + "." + parts[2]
			}
			a := e.redeem(t, tt.client, raw, tt.extra)
			if a.status != tt.status || a.str("error") != tt.code || a.str("access_token") != "" {
				t.Errorf("redeem = %d %s, want %d %s and no token", a.status, a.raw, tt.status, tt.code)
			}
			if g, u := e.count(bucketGrants), e.count(bucketUsers); g != grants || u != users {
				t.Errorf("grants %d -> %d, users %d -> %d: something was recorded", grants, g, users, u)
			}
		})
	}
	// README: exp and iat valid with 30 s leeway, exp at most an hour
	// ahead (written out, not read from idJAGLeeway or
	// maxAssertionLifetime): each bound from both sides.
	t.Run("clock bounds", func(t *testing.T) {
		e := newTokEnv(t, withTrustedIdP(idp))
		now := e.clock.Now()
		for _, tt := range []struct {
			name     string
			exp, iat time.Duration // from now
			status   int
		}{
			{"expired 25 s ago, within the leeway", -25 * time.Second, -time.Minute, 200},
			{"expired 35 s ago, past the leeway", -35 * time.Second, -time.Minute, 400},
			{"issued 25 s ahead, within the leeway", 10 * time.Minute, 25 * time.Second, 200},
			{"issued 35 s ahead, past the leeway", 10 * time.Minute, 35 * time.Second, 400},
			{"expiring an hour ahead", time.Hour, 0, 200},
			{"expiring an hour and 5 s ahead", time.Hour + 5*time.Second, 0, 400},
		} {
			raw := idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) {
				c["exp"] = now.Add(tt.exp).Unix()
				c["iat"] = now.Add(tt.iat).Unix()
			})
			if a := e.redeem(t, conf, raw, nil); a.status != tt.status || tt.status == 400 && a.str("error") != "invalid_grant" {
				t.Errorf("%s: redeem = %d %s, want %d", tt.name, a.status, a.raw, tt.status)
			}
		}
	})
}

// TestIDJAGTenant: a multi-tenant IdP's subjects are unique within
// iss + tenant only (draft-ietf-oauth-identity-assertion-authz-grant,
// "Tenant Relationships with Issuer and Client ID"), so one tenant's u1
// is not another's. An identity provider declared with a tenant admits
// only ID-JAGs naming that tenant; one declared without admits none that
// names a tenant, which it could not keep apart from the other tenants'.
func TestIDJAGTenant(t *testing.T) {
	idp := newTestIdP(t)
	conf := tConf + ":" + tSecret
	withTenant := func(c jwt.MapClaims, _ *jwt.Token) { c["tenant"] = "acme" }
	t.Run("provider without a tenant", func(t *testing.T) {
		e := newTokEnv(t, withTrustedIdP(idp))
		if a := e.redeem(t, conf, idp.idJAG(t, e, withTenant), nil); a.status != 400 || a.str("error") != "invalid_grant" {
			t.Errorf("ID-JAG naming a tenant = %d %s, want invalid_grant", a.status, a.raw)
		}
		if a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); a.status != 200 {
			t.Errorf("ID-JAG naming no tenant = %d %s, want 200", a.status, a.raw)
		}
	})
	t.Run("provider of one tenant", func(t *testing.T) {
		e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.IdentityProviders[0].Tenant = "acme" })
		for _, tt := range []struct {
			name   string
			tenant any // nil: no claim
			status int
		}{
			{"its tenant", "acme", 200},
			{"another tenant", "fabrikam", 400},
			{"another case", "ACME", 400},
			{"no tenant", nil, 400},
			{"not a string", []string{"acme"}, 400},
		} {
			raw := idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) {
				if c["tenant"] = tt.tenant; tt.tenant == nil {
					delete(c, "tenant")
				}
			})
			if a := e.redeem(t, conf, raw, nil); a.status != tt.status || tt.status == 400 && a.str("error") != "invalid_grant" {
				t.Errorf("%s: redeem = %d %s, want %d", tt.name, a.status, a.raw, tt.status)
			}
		}
	})
	// Moved to another tenant, the provider's user of the same sub there
	// is someone else: the kept account is not theirs
	// (TestIdPRepointedAccountNotTakenOver for sign-ins).
	t.Run("provider moved to another tenant", func(t *testing.T) {
		tenant := func(name string) envOption { return func(c *Config) { c.IdentityProviders[0].Tenant = name } }
		e := newTokEnv(t, withTrustedIdP(idp), tenant("acme"))
		if a := e.redeem(t, conf, idp.idJAG(t, e, withTenant), nil); a.status != 200 {
			t.Fatalf("acme's u1: redeem = %d %s, want 200", a.status, a.raw)
		}
		if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
			t.Fatal(err)
		}
		e.restart(e.store, withTrustedIdP(idp), tenant("fabrikam"))
		if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
			t.Fatal(err)
		}
		raw := idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["tenant"] = "fabrikam" })
		if a := e.redeem(t, conf, raw, nil); a.status != 400 || a.str("error") != "invalid_grant" {
			t.Errorf("fabrikam's u1 after the move: redeem = %d %s, want 400 invalid_grant", a.status, a.raw)
		}
		var u User
		if err := e.get(bucketUsers, "corp:u1", &u); err != nil || u.IdPTenant != "acme" {
			t.Errorf("corp:u1 after fabrikam's refusal: tenant %q (%v), want acme's account unchanged", u.IdPTenant, err)
		}
	})
}

// TestIDJAGScopeIntersection: a request for more scopes than the ID-JAG
// carries gets their intersection (MCP enterprise-managed authorization,
// stable, section 7.2.1: "issue access tokens with scopes that are the
// intersection of the requested scopes and the scopes present in the
// ID-JAG"), narrowed by the user's groups as ever; an empty intersection
// is invalid_scope (in TestIDJAGRefused).
func TestIDJAGScopeIntersection(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	tests := []struct {
		name, jag, requested, want string
	}{
		{"one beyond", "read", "read write", "read"},
		{"beyond and not for the groups", "read admin", "read write admin", "read"},
		{"within", "read write", "write", "write"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["scope"] = tt.jag })
			a := e.redeem(t, conf, raw, url.Values{"scope": {tt.requested}})
			if a.status != http.StatusOK || a.str("scope") != tt.want {
				t.Fatalf("redeem(ID-JAG %q, scope %q) = %d %s, want 200 scope %q", tt.jag, tt.requested, a.status, a.raw, tt.want)
			}
			if _, c := claimsOf(t, a.str("access_token")); c["scope"] != tt.want {
				t.Errorf("token scope = %v, want %q", c["scope"], tt.want)
			}
		})
	}
}

// TestIDJAGMetadataDocumentClient: a client that is not registered here
// redeems an ID-JAG with its Client ID Metadata Document as client_id,
// authenticating with private_key_jwt (MCP enterprise-managed
// authorization, stable, section 5); a document of a public client
// (token_endpoint_auth_method none) listing the grant is refused: an
// ID-JAG stays a bearer artifact until redeemed, so it takes a client
// that authenticates.
func TestIDJAGMetadataDocumentClient(t *testing.T) {
	idp := newTestIdP(t)
	host := newCIMDHost(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.HTTPClient = host.client(); c.CIMDAllowPrivate = true })
	pub, err := publicJWK(e.jwtKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	doc := func(method, keys string) func(string) string {
		return func(id string) string {
			return `{"client_id":"` + id + `","client_name":"EMA Client","redirect_uris":["http://127.0.0.1:3000/callback"],` +
				`"grant_types":["authorization_code","` + grantJWTBearer + `"],"token_endpoint_auth_method":"` + method + `"` + keys + `}`
		}
	}
	redeem := func(id string, auth url.Values) answer {
		raw := idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["client_id"] = id })
		return e.redeem(t, "", raw, auth)
	}

	id := host.doc("/ema.json", "", doc(authPrivateKeyJWT, `,"jwks":`+string(jwks)))
	assertion := e.clientAssertion(t, func(c jwt.MapClaims, tok *jwt.Token) {
		c["iss"], c["sub"] = id, id
		delete(tok.Header, "kid")
	})
	a := redeem(id, url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {assertion}})
	if a.status != http.StatusOK || a.str("scope") != "read write" {
		t.Fatalf("redeem by a private_key_jwt document client = %d %s, want 200 scope read write", a.status, a.raw)
	}
	if _, c := claimsOf(t, a.str("access_token")); c["client_id"] != id || c["sub"] != "corp:u1" || c["aud"] != tResource {
		t.Errorf("claims = %v, want client %s, sub corp:u1, aud %s", c, id, tResource)
	}

	pubID := host.doc("/public.json", "", doc("none", ""))
	grants := e.count(bucketGrants)
	if a := redeem(pubID, url.Values{"client_id": {pubID}}); a.status == http.StatusOK || a.str("access_token") != "" {
		t.Errorf("redeem by a public document client = %d %s, want a refusal", a.status, a.raw)
	}
	if g := e.count(bucketGrants); g != grants {
		t.Errorf("grants %d -> %d after a refusal", grants, g)
	}
}

// TestIDJAGReplay: an ID-JAG is redeemed once, by every issuer instance
// sharing the store; the refusal issues nothing.
func TestIDJAGReplay(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	raw := idp.idJAG(t, e, nil)
	if a := e.redeem(t, conf, raw, nil); a.status != http.StatusOK {
		t.Fatalf("first redeem = %d %s", a.status, a.raw)
	}
	grants := e.count(bucketGrants)
	e.restart(e.store, withTrustedIdP(idp)) // another instance on the same store
	a := e.redeem(t, conf, raw, nil)
	if a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" || a.str("access_token") != "" {
		t.Errorf("replay = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	if g := e.count(bucketGrants); g != grants {
		t.Errorf("grants %d -> %d after a replay", grants, g)
	}
}

// TestIDJAGKeyFetches: made-up kids cost the IdP at most one fetch per
// jwksMinRefetch.
func TestIDJAGKeyFetches(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	for range 5 {
		raw := idp.idJAG(t, e, func(_ jwt.MapClaims, t *jwt.Token) { t.Header["kid"] = rand.Text() })
		if a := e.redeem(t, conf, raw, nil); a.str("error") != "invalid_grant" {
			t.Fatalf("unknown kid = %d %s, want invalid_grant", a.status, a.raw)
		}
	}
	if n := idp.fetches.Load(); n != 1 {
		t.Errorf("JWKS fetches = %d, want 1", n)
	}
	e.clock.Advance(jwksMinRefetch)
	if a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); a.status != http.StatusOK {
		t.Errorf("redeem = %d %s", a.status, a.raw)
	}
}

// TestIDJAGNotTrusted: without a trusted IdP neither the grant nor the
// profile is offered.
func TestIDJAGNotTrusted(t *testing.T) {
	e := newTokEnv(t)
	m := e.iss.metadataDocument()
	if slices.Contains(m.GrantTypesSupported, grantJWTBearer) || m.AuthorizationGrantProfilesSupported != nil {
		t.Errorf("metadata offers %v, %v", m.GrantTypesSupported, m.AuthorizationGrantProfilesSupported)
	}
	a := e.redeem(t, tConf+":"+tSecret, "x.y.z", nil)
	if a.str("error") != "unsupported_grant_type" {
		t.Errorf("redeem = %d %s, want unsupported_grant_type", a.status, a.raw)
	}
}

// TestTrustedIdPConfig: load-time checks of trusted IdPs.
func TestTrustedIdPConfig(t *testing.T) {
	base := func() Config {
		return Config{Issuer: "https://auth.example.com", Groups: []Group{{Name: "g"}},
			IdentityProviders: []IdentityProvider{{Name: "corp", Issuer: "https://idp.example.com", ClientID: "c", GroupMap: map[string][]string{"*": {"g"}}}},
			TrustedIdPs:       []TrustedIdP{{Issuer: "https://idp.example.com", JWKSURI: "https://idp.example.com/keys"}}}
	}
	tests := []struct {
		name    string
		edit    func(c *Config)
		wantErr string
	}{
		{"valid", func(c *Config) {}, ""},
		{"named provider", func(c *Config) { c.TrustedIdPs[0].IdentityProvider = "corp" }, ""},
		{"no provider with the issuer", func(c *Config) { c.TrustedIdPs[0].Issuer = "https://other.example.com" }, "no identity_provider with this issuer"},
		{"named provider of another issuer", func(c *Config) {
			c.TrustedIdPs[0].Issuer, c.TrustedIdPs[0].IdentityProvider = "https://other.example.com", "corp"
		}, "has issuer"},
		{"http jwks_uri", func(c *Config) { c.TrustedIdPs[0].JWKSURI = "http://idp.example.com/keys" }, "jwks_uri must be an https URL"},
		// Microsoft Entra ID's keys of an application with its own
		// signing key (TestTrustedIdPKeySetURLWithQuery).
		{"jwks_uri with a query", func(c *Config) {
			c.TrustedIdPs[0].JWKSURI = "https://idp.example.com/discovery/v2.0/keys?appid=6731de76-14a6-49ae-97bc-6eba6914391e"
		}, ""},
		{"jwks_uri with userinfo", func(c *Config) { c.TrustedIdPs[0].JWKSURI = "https://u:p@idp.example.com/keys" }, "jwks_uri must be an https URL"},
		{"jwks_uri with a fragment", func(c *Config) { c.TrustedIdPs[0].JWKSURI = "https://idp.example.com/keys?a=1#k" }, "jwks_uri must be an https URL"},
		{"jwks_uri with an empty fragment", func(c *Config) { c.TrustedIdPs[0].JWKSURI = "https://idp.example.com/keys#" }, "jwks_uri must be an https URL"},
		{"jwks_uri on port 0443", func(c *Config) { c.TrustedIdPs[0].JWKSURI = "https://idp.example.com:0443/keys?a=1" }, "jwks_uri must be an https URL"},
		{"repeated", func(c *Config) { c.TrustedIdPs = append(c.TrustedIdPs, c.TrustedIdPs[0]) }, "unique"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			tt.edit(&cfg)
			checkConfigErr(t, cfg, tt.wantErr)
		})
	}
}

// TestTrustedIdPKeySetURLWithQuery: a trusted IdP's jwks_uri may carry a
// query, as Microsoft Entra ID's keys of an application with its own
// signing key do (.../discovery/v2.0/keys?appid=<id>): it loads, the
// keys are fetched with the query, and the IdP's ID-JAG is redeemed. It
// was refused as "not an https URL".
func TestTrustedIdPKeySetURLWithQuery(t *testing.T) {
	idp := newTestIdP(t)
	const path = "/discovery/v2.0/keys?appid=6731de76-14a6-49ae-97bc-6eba6914391e"
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.TrustedIdPs[0].JWKSURI = idp.srv.URL + path })
	if a := e.redeem(t, tConf+":"+tSecret, idp.idJAG(t, e, nil), nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	if uri := idp.lastURI.Load(); uri == nil || *uri != path {
		t.Errorf("key set fetched at %v, want %s", uri, path)
	}
}

// TestClientCredentialsExtension: what MCP's OAuth client credentials
// extension asks of an authorization server: the metadata names
// private_key_jwt and client_secret_basic and the assertion algorithms,
// and a client_credentials request authenticated by a JWT assertion
// alone (no client_id, RFC 7523 section 3) gets a token.
func TestClientCredentialsExtension(t *testing.T) {
	e := newTokEnv(t)
	m := e.iss.metadataDocument()
	if !slices.Contains(m.TokenEndpointAuthMethodsSupported, authPrivateKeyJWT) || !slices.Contains(m.TokenEndpointAuthMethodsSupported, authClientSecretBasic) ||
		len(m.TokenEndpointAuthSigningAlgValuesSupported) == 0 || !slices.Contains(m.GrantTypesSupported, grantClientCredentials) {
		t.Errorf("metadata: auth methods %v, signing algs %v, grant types %v", m.TokenEndpointAuthMethodsSupported,
			m.TokenEndpointAuthSigningAlgValuesSupported, m.GrantTypesSupported)
	}
	a := e.post(t, pathToken, url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}, "scope": {"read"},
		"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {e.clientAssertion(t, nil)}}, "")
	if a.status != http.StatusOK || a.str("scope") != "read" {
		t.Fatalf("client_credentials with an assertion = %d %s", a.status, a.raw)
	}
	if _, c := claimsOf(t, a.str("access_token")); c["sub"] != tJWT || c["principal_type"] != principalClient {
		t.Errorf("claims = %v, want the client's own token", c)
	}
}

// TestIDJAGRedeemedOnce: concurrent redemptions of one ID-JAG issue one
// token, and a re-encoding of its signature (ECDSA's s and n-s both
// verify) is the same ID-JAG, refused as a replay.
func TestIDJAGRedeemedOnce(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	raw := idp.idJAG(t, e, nil)
	const n = 8
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers <- e.redeem(t, conf, raw, nil)
		}()
	}
	wg.Wait()
	close(answers)
	ok := 0
	for a := range answers {
		switch {
		case a.status == http.StatusOK:
			ok++
		case a.str("error") != "invalid_grant":
			t.Errorf("a losing redemption = %d %s, want invalid_grant", a.status, a.raw)
		}
	}
	if ok != 1 || e.count(bucketGrants) != 1 {
		t.Errorf("%d of %d concurrent redemptions succeeded, %d grants; want 1", ok, n, e.count(bucketGrants))
	}

	parts := strings.Split(raw, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	s := new(big.Int).SetBytes(sig[32:])
	s.Sub(elliptic.P256().Params().N, s)
	s.FillBytes(sig[32:])
	malleated := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
	if a := e.redeem(t, conf, malleated, nil); a.str("error") != "invalid_grant" {
		t.Errorf("the same ID-JAG with s = n-s = %d %s, want invalid_grant (replay)", a.status, a.raw)
	}
}

// TestIDJAGKeysPerIdP: each trusted IdP's ID-JAGs verify with its own
// keys only, and jti values are its own: another IdP's equal jti is not a
// replay.
func TestIDJAGKeysPerIdP(t *testing.T) {
	a, b := newTestIdP(t), newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(a), func(c *Config) {
		c.IdentityProviders = append(c.IdentityProviders, IdentityProvider{Name: "corp2", Issuer: b.srv.URL, ClientID: "mcp",
			GroupMap: map[string][]string{"eng": {"staff"}}})
		c.TrustedIdPs = append(c.TrustedIdPs, TrustedIdP{Issuer: b.srv.URL, JWKSURI: b.srv.URL + "/jwks"})
	})
	conf := tConf + ":" + tSecret
	// a's key (kid idp1, as b's) signs an assertion in b's name.
	forged := a.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["iss"] = b.srv.URL })
	if r := e.redeem(t, conf, forged, nil); r.str("error") != "invalid_grant" {
		t.Errorf("b's ID-JAG signed by a's key = %d %s, want invalid_grant", r.status, r.raw)
	}
	jti := func(c jwt.MapClaims, _ *jwt.Token) { c["jti"] = "shared" }
	for _, p := range []*testIdP{a, b} {
		if r := e.redeem(t, conf, p.idJAG(t, e, jti), nil); r.status != http.StatusOK {
			t.Errorf("jti shared with the other IdP = %d %s, want 200", r.status, r.raw)
		}
	}
	if u, err := e.iss.dir.lookupUser(e.ctx(), "corp2:u1"); err != nil || u.IdPSubject != "u1" {
		t.Errorf("b's u1 = %+v, %v; want corp2:u1, apart from corp:u1", u, err)
	}
}

// TestIDJAGFixableRefusalKeepsIt: a request the client can correct (a
// scope the assertion carries but the user may not have) does not spend
// the ID-JAG.
func TestIDJAGFixableRefusalKeepsIt(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	raw := idp.idJAG(t, e, nil)
	// The client is told the resource, not which scopes the user's groups
	// allow.
	want := "none of the requested scopes may be granted for " + tResource
	if a := e.redeem(t, conf, raw, url.Values{"scope": {"admin"}}); a.str("error") != "invalid_scope" || a.str("error_description") != want {
		t.Fatalf("scope admin = %d %s, want invalid_scope %q", a.status, a.raw, want)
	}
	if a := e.redeem(t, conf, raw, url.Values{"scope": {"read"}}); a.status != http.StatusOK || a.str("scope") != "read" {
		t.Errorf("then scope read = %d %s, want 200 read", a.status, a.raw)
	}
}

// TestIDJAGRefusedRequestKeepsIt: a request refused after its ID-JAG
// checked out (its DPoP proof a replay) spends nothing; the corrected
// retry redeems the ID-JAG, and the redemption that issued a token
// spends it.
func TestIDJAGRefusedRequestKeepsIt(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	k := newDPoPKey(t)
	tokenURL := e.iss.endpoint(pathToken)
	spent := k.proof(t, e, tokenURL, nil)
	cc := url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}}
	wantBound(t, "an earlier request with the proof", e.postDPoP(t, pathToken, cc, conf, spent), k)
	grants := e.count(bucketGrants)

	f := url.Values{"grant_type": {grantJWTBearer}, "assertion": {idp.idJAG(t, e, nil)}}
	wantRefused(t, "an ID-JAG with the spent proof", e.postDPoP(t, pathToken, f, conf, spent), "invalid_dpop_proof")
	if n := e.count(bucketJTI); n != 0 {
		t.Errorf("jti records after the refusal = %d, want 0", n)
	}
	if n := e.count(bucketUsers); n != 0 {
		t.Errorf("users after the refusal = %d, want 0: a refused request provisions nobody", n)
	}
	wantBound(t, "the ID-JAG with a fresh proof", e.postDPoP(t, pathToken, f, conf, k.proof(t, e, tokenURL, nil)), k)
	if n := e.count(bucketUsers); n != 1 {
		t.Errorf("users after the redemption = %d, want 1", n)
	}
	wantRefused(t, "the ID-JAG again", e.postDPoP(t, pathToken, f, conf, k.proof(t, e, tokenURL, nil)), "invalid_grant")
	if n := e.count(bucketGrants); n != grants+1 {
		t.Errorf("grants %d -> %d, want one more", grants, n)
	}
}

// TestIDJAGBoundToAKey: an ID-JAG bound to a DPoP key (cnf.jkt) is
// redeemed only with a proof of that key, and yields a token bound to it;
// a proof of another key or none is refused and spends nothing.
func TestIDJAGBoundToAKey(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	k, other := newDPoPKey(t), newDPoPKey(t)
	tokenURL := e.iss.endpoint(pathToken)
	f := url.Values{"grant_type": {grantJWTBearer}, "assertion": {idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) {
		c["cnf"] = map[string]any{"jkt": k.jkt}
	})}}
	// draft-ietf-oauth-identity-assertion-authz-grant, "Proof-of-Possession
	// During ID-JAG Exchange": no proof, or a proof of another key, is
	// invalid_grant.
	wantRefused(t, "without a proof", e.postDPoP(t, pathToken, f, conf, ""), "invalid_grant")
	wantRefused(t, "with another key's proof", e.postDPoP(t, pathToken, f, conf, other.proof(t, e, tokenURL, nil)), "invalid_grant")
	if n := e.count(bucketJTI); n != 0 {
		t.Errorf("jti records after the refusals = %d, want 0", n)
	}
	wantBound(t, "with its key's proof", e.postDPoP(t, pathToken, f, conf, k.proof(t, e, tokenURL, nil)), k)
}

// TestIDJAGRedeemedWhileRecording: of two redemptions of one ID-JAG, the
// one that records first wins, even when the other passed every check
// before it: the jti is spent in the transaction that records the grant.
func TestIDJAGRedeemedWhileRecording(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	raw := idp.idJAG(t, e, nil)
	var inner answer
	e.iss.mint.beforeRecord = func() {
		e.iss.mint.beforeRecord = nil
		inner = e.redeem(t, conf, raw, nil)
	}
	outer := e.redeem(t, conf, raw, nil)
	if inner.status != http.StatusOK {
		t.Errorf("redemption recorded first = %d %s, want 200", inner.status, inner.raw)
	}
	wantRefused(t, "redemption recorded second", outer, "invalid_grant")
	if n := e.count(bucketGrants); n != 1 {
		t.Errorf("grants = %d, want 1", n)
	}
}

// TestIDJAGUserTakenWhileRecording: the user is provisioned in the
// transaction that records the grant, with provisioning's checks read
// again there: an account of the same name stored between the checks and
// the record refuses the grant, and nothing is written (no grant, no
// spent jti, the other account as it was).
func TestIDJAGUserTakenWhileRecording(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	other := &User{Username: "corp:u1", IdentityProvider: "corp", IdPSubject: "someone-else", Source: sourceIdP,
		IdPGroups: []string{"eng"}, LastLogin: e.clock.Now()}
	e.iss.mint.beforeRecord = func() {
		e.iss.mint.beforeRecord = nil
		if err := e.store.Update(t.Context(), func(tx store.Tx) error { return usersIn(tx).put(other) }); err != nil {
			t.Error(err)
		}
	}
	wantRefused(t, "redemption", e.redeem(t, conf, idp.idJAG(t, e, nil), nil), "invalid_grant")
	if g, j, u := e.count(bucketGrants), e.count(bucketJTI), e.count(bucketUsers); g != 0 || j != 0 || u != 1 {
		t.Errorf("grants, jti records, users = %d, %d, %d, want 0, 0, 1", g, j, u)
	}
	var u User
	if err := e.get(bucketUsers, "corp:u1", &u); err != nil || u.IdPSubject != "someone-else" {
		t.Errorf("the other account = %+v (%v), want it unchanged", u, err)
	}
}

// TestIDJAGNotLogged: no log entry holds an ID-JAG or its signature,
// whether it was redeemed, replayed or refused, or its client failed to
// authenticate.
func TestIDJAGNotLogged(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.Logger = zap.New(core) })
	conf := tConf + ":" + tSecret
	var sent []string
	send := func(basic, raw string) {
		sent = append(sent, raw)
		e.redeem(t, basic, raw, nil)
	}
	ok := idp.idJAG(t, e, nil)
	send(conf, ok)
	send(conf, ok)
	send(conf, idp.idJAG(t, e, func(_ jwt.MapClaims, t *jwt.Token) { t.Header["typ"] = "JWT" }))
	send(conf, idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["groups"] = []string{"sales"} }))
	send(tConf+":wrong", idp.idJAG(t, e, nil))
	for _, entry := range logs.All() {
		text := fmt.Sprint(entry.Message, entry.ContextMap())
		for _, raw := range sent {
			if strings.Contains(text, raw[strings.LastIndex(raw, ".")+1:]) {
				t.Errorf("log entry %q holds an ID-JAG", text)
			}
		}
	}
	if len(logs.All()) == 0 {
		t.Error("nothing was logged: the failed client authentication should be")
	}
}

// TestIDJAGReplayUntilExpiry: the jti is remembered as long as the ID-JAG
// verifies (exp plus the leeway); after that it is refused as expired.
func TestIDJAGReplayUntilExpiry(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	raw := idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = e.clock.Now().Add(time.Minute).Unix() })
	if a := e.redeem(t, conf, raw, nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s", a.status, a.raw)
	}
	start := e.clock.Now()
	for _, d := range []time.Duration{time.Minute + idJAGLeeway - time.Second, 2 * time.Second} {
		e.clock.Advance(d)
		a := e.redeem(t, conf, raw, nil)
		if a.str("error") != "invalid_grant" || a.str("access_token") != "" {
			t.Errorf("replay %v later = %d %s, want invalid_grant", e.clock.Now().Sub(start), a.status, a.raw)
		}
	}
	if n := e.count(bucketGrants); n != 1 {
		t.Errorf("grants = %d, want 1", n)
	}
}

// TestIDJAGEmailAsName: with user_claim email an ID-JAG names its user
// by address only if it says the address is verified; otherwise the
// grant is refused and no user is provisioned.
func TestIDJAGEmailAsName(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.IdentityProviders[0].UserClaim = "email" })
	conf := tConf + ":" + tSecret
	for _, tt := range []struct {
		verified any // nil: no claim
		want     int
	}{{nil, http.StatusBadRequest}, {false, http.StatusBadRequest}, {"false", http.StatusBadRequest}, {true, http.StatusOK}} {
		a := e.redeem(t, conf, idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) {
			if tt.verified != nil {
				c["email_verified"] = tt.verified
			}
		}), nil)
		if a.status != tt.want || tt.want != http.StatusOK && a.str("error") != "invalid_grant" {
			t.Errorf("email_verified %v: redeem = %d %s, want %d", tt.verified, a.status, a.raw, tt.want)
		}
		_, err := e.iss.dir.lookupUser(e.ctx(), "corp:u1@corp.example")
		if provisioned := err == nil; provisioned != (tt.want == http.StatusOK) {
			t.Errorf("email_verified %v: user provisioned %v", tt.verified, provisioned)
		}
	}
}

// TestIDJAGDisabledUserUnderAnotherName: an ID-JAG of a person whose
// account an operator disabled is refused under any name its user_claim
// gives them (an address changed at the IdP, in case alone too), as at a
// sign-in (TestIdPDisabledUserUnderAnotherName), and provisions nobody.
func TestIDJAGDisabledUserUnderAnotherName(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.IdentityProviders[0].UserClaim = "email" })
	conf := tConf + ":" + tSecret
	redeem := func(sub, email string) answer {
		t.Helper()
		return e.redeem(t, conf, idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) {
			c["sub"], c["email"], c["email_verified"] = sub, email, true
		}), nil)
	}
	if a := redeem("u1", "u1@corp.example"); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	if err := e.iss.DisableUser(e.ctx(), "corp:u1@corp.example"); err != nil {
		t.Fatal(err)
	}
	users := e.count(bucketUsers)
	if a := redeem("u1", "U1@corp.example"); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("the disabled user under another address: redeem = %d %s, want invalid_grant", a.status, a.raw)
	}
	if n := e.count(bucketUsers); n != users {
		t.Errorf("users = %d after the refusal, want %d", n, users)
	}
	if a := redeem("u2", "u2@corp.example"); a.status != http.StatusOK {
		t.Errorf("another user: redeem = %d %s, want 200", a.status, a.raw)
	}
}

// TestIDJAGUserAdmitted: an ID-JAG's user is admitted by its identity
// provider's rules as at a sign-in there: an address outside
// allowed_email_domains is refused, and so is a user the operator
// disabled, until enabled again; a refusal issues nothing.
func TestIDJAGUserAdmitted(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.IdentityProviders[0].AllowedEmailDomains = []string{"corp.example"} })
	conf := tConf + ":" + tSecret
	redeem := func(email string) answer {
		t.Helper()
		return e.redeem(t, conf, idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["email"] = email }), nil)
	}
	refused := func(what string, a answer) {
		t.Helper()
		if a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" || a.str("access_token") != "" {
			t.Errorf("%s: redeem = %d %s, want invalid_grant", what, a.status, a.raw)
		}
	}
	refused("an address of another domain", redeem("u1@other.example"))
	if _, err := e.iss.dir.lookupUser(e.ctx(), "corp:u1"); err == nil {
		t.Error("a refused ID-JAG provisioned its user")
	}
	if a := redeem("u1@corp.example"); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	grants := e.count(bucketGrants)
	if err := e.iss.DisableUser(e.ctx(), "corp:u1"); err != nil {
		t.Fatal(err)
	}
	refused("a disabled user", redeem("u1@corp.example"))
	if n := e.count(bucketGrants); n > grants {
		t.Errorf("grants = %d after the refusal, want at most %d", n, grants)
	}
	if err := e.iss.EnableUser(e.ctx(), "corp:u1"); err != nil {
		t.Fatal(err)
	}
	if a := redeem("u1@corp.example"); a.status != http.StatusOK {
		t.Errorf("redeem after enable = %d %s, want 200", a.status, a.raw)
	}
}

// TestIDJAGLoginTime: an ID-JAG counts as a sign-in at its identity
// provider made when the IdP issued it (iat), not when it is redeemed, so
// recheck bounds it as it bounds a sign-in: one issued recheck ago or
// earlier is refused, the user's last sign-in is the ID-JAG's iat, and an
// ID-JAG issued before the last sign-in changes neither its time nor its
// groups (the user's grants refresh with those).
func TestIDJAGLoginTime(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) {
		c.IdentityProviders[0].Recheck = time.Hour
		c.IdentityProviders[0].GroupMap["ops"] = []string{"staff"}
	})
	conf := tConf + ":" + tSecret
	issuedAgo := func(d time.Duration, groups ...string) string {
		return idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) {
			c["iat"] = e.clock.Now().Add(-d).Unix()
			if groups != nil {
				c["groups"] = groups
			}
		})
	}
	stored := func() *User {
		t.Helper()
		u, err := e.iss.dir.findUser(e.ctx(), "corp:u1")
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	lastLogin := func() time.Time { t.Helper(); return stored().LastLogin }
	if a := e.redeem(t, conf, issuedAgo(61*time.Minute), nil); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("an ID-JAG issued past recheck: redeem = %d %s, want invalid_grant", a.status, a.raw)
	}
	issued := e.clock.Now().Add(-50 * time.Minute)
	if a := e.redeem(t, conf, issuedAgo(50*time.Minute), nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	if got := lastLogin(); !got.Equal(issued) {
		t.Errorf("last sign-in = %v, want the ID-JAG's iat %v", got, issued)
	}
	e.clock.Advance(11 * time.Minute)
	if _, err := e.iss.dir.lookupUser(e.ctx(), "corp:u1"); !errors.Is(err, errSignInAgain) {
		t.Errorf("an hour after the ID-JAG's iat: lookupUser = %v, want %v", err, errSignInAgain)
	}
	fresh := e.clock.Now()
	if a := e.redeem(t, conf, issuedAgo(0), nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	if a := e.redeem(t, conf, issuedAgo(30*time.Minute, "eng", "ops"), nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	if u := stored(); !u.LastLogin.Equal(fresh) || !slices.Equal(u.IdPGroups, []string{"eng"}) {
		t.Errorf("after an older ID-JAG: last sign-in %v, groups %v; want %v, [eng]", u.LastLogin, u.IdPGroups, fresh)
	}
	// A sign-in since (in the browser, say) that recorded the user
	// without eng, which the IdP took away, judges an older ID-JAG too:
	// its groups are the IdP's word from before.
	e.clock.Advance(time.Minute)
	u := stored()
	u.IdPGroups, u.LastLogin = []string{"sales"}, e.clock.Now()
	if err := e.iss.store.Update(e.ctx(), func(tx store.Tx) error { return usersIn(tx).put(u) }); err != nil {
		t.Fatal(err)
	}
	if a := e.redeem(t, conf, issuedAgo(5*time.Minute), nil); a.status == http.StatusOK {
		t.Errorf("an ID-JAG issued before a sign-in without its groups: redeem = 200 (scope %q), want refused", a.str("scope"))
	}
	if a := e.redeem(t, conf, issuedAgo(0, "sales"), nil); a.status == http.StatusOK {
		t.Errorf("a fresh ID-JAG without eng: redeem = 200 (scope %q), want refused", a.str("scope"))
	}
}

// TestIDJAGOrderedOnTheIdPsClock: an IdP whose clock runs ahead of ours
// (within the leeway) issues an ID-JAG with the user in eng, then the
// user signs in in the browser, the IdP having moved them to ops; the
// ID-JAG, redeemed after that sign-in, is the older word of the IdP and
// gives back neither eng nor what it grants. Its iat and the sign-in's
// ID token are both the IdP's times, compared as such; its iat is ahead
// of our time of the sign-in.
func TestIDJAGOrderedOnTheIdPsClock(t *testing.T) {
	e, stub := stubJAGEnv(t, 20*time.Second)
	const name = stubIdPName + ":u-1"
	jag := stub.idJAG(t, e, stub.now(), "files:read files:write", "eng")

	e.clock.Advance(10 * time.Second)
	stub.set(func(s *stubIdP) { s.claims["groups"] = []string{"ops"} })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	e.clock.Advance(time.Second)
	a := e.redeem(t, "svc:"+tSecret, jag, nil)
	if a.status == http.StatusOK && strings.Contains(a.str("scope"), "files:write") {
		t.Errorf("the ID-JAG issued before the sign-in: scope %q, want no files:write (the sign-in's ops)", a.str("scope"))
	}
	var u User
	if err := e.get(bucketUsers, name, &u); err != nil || !slices.Equal(u.IdPGroups, []string{"ops"}) {
		t.Errorf("user %s after the older ID-JAG: groups %v (%v), want [ops] of the sign-in", name, u.IdPGroups, err)
	}

	// A later ID-JAG, by the IdP's clock, is its later word.
	jag = stub.idJAG(t, e, stub.now().Add(time.Second), "files:read files:write", "eng")
	if a := e.redeem(t, "svc:"+tSecret, jag, nil); a.status != http.StatusOK || a.str("scope") != "files:read files:write" {
		t.Errorf("a later ID-JAG with eng: redeem = %d %s, want 200 with files:write", a.status, a.raw)
	}
}

// TestSignInAfterLaterIDJAG: the converse of TestIDJAGOrderedOnTheIdPsClock.
// The IdP issues a sign-in's ID token with the user in eng, then takes eng
// away and issues an ID-JAG, which is redeemed before the sign-in
// completes. The sign-in, the IdP's older word, records the user without
// giving eng back.
func TestSignInAfterLaterIDJAG(t *testing.T) {
	e, stub := stubJAGEnv(t, 0)
	const name = stubIdPName + ":u-1"
	signInIssued := stub.now()
	e.clock.Advance(10 * time.Second)
	iat := stub.now()
	jag := stub.idJAG(t, e, iat, "files:read", "ops")
	if a := e.redeem(t, "svc:"+tSecret, jag, nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}

	e.clock.Advance(time.Second)
	stub.set(func(s *stubIdP) {
		s.claims["groups"] = []string{"eng"}
		s.editToken = func(c jwt.MapClaims) { c["iat"] = signInIssued.Unix() }
	})
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	var u User
	if err := e.get(bucketUsers, name, &u); err != nil || !slices.Equal(u.IdPGroups, []string{"ops"}) || !u.IdPIssuedAt.Equal(iat.Truncate(time.Second)) {
		t.Errorf("user %s after the older sign-in: groups %v, provider time %v (%v); want [ops] and %v of the ID-JAG", name, u.IdPGroups, u.IdPIssuedAt, err, iat)
	}
	if !u.LastLogin.Equal(e.clock.Now()) {
		t.Errorf("last sign-in = %v, want the sign-in's %v", u.LastLogin, e.clock.Now())
	}
}

// TestSignInWithoutIatAfterIDJAG: an ID token without iat (OpenID
// Connect requires it; the verifier does not) says nothing of when the
// provider said it, so it cannot be older than a redeemed ID-JAG: the
// sign-in records the groups it carries, as before the provider's times
// were compared, and does not keep the ID-JAG's for good (every later
// sign-in of that provider being without iat too).
func TestSignInWithoutIatAfterIDJAG(t *testing.T) {
	e, stub := stubJAGEnv(t, 0)
	const name = stubIdPName + ":u-1"
	jag := stub.idJAG(t, e, stub.now(), "files:read", "ops")
	if a := e.redeem(t, "svc:"+tSecret, jag, nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	e.clock.Advance(time.Minute)
	stub.set(func(s *stubIdP) {
		s.claims["groups"] = []string{"eng"}
		s.editToken = func(c jwt.MapClaims) { delete(c, "iat") }
	})
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	var u User
	if err := e.get(bucketUsers, name, &u); err != nil || !slices.Equal(u.IdPGroups, []string{"eng"}) {
		t.Errorf("user %s after a sign-in without iat: groups %v (%v); want [eng], the sign-in's", name, u.IdPGroups, err)
	}
}

// stubJAGEnv is a browser environment signing in at stub, whose clock is
// ahead of ours by ahead, and trusting it for ID-JAGs (client svc).
func stubJAGEnv(t *testing.T, ahead time.Duration) (*testEnv, *stubIdP) {
	t.Helper()
	var stub *stubIdP
	e := newBrowserEnv(t, func(c *Config) {
		now := c.Now
		stub = newStubIdP(t, func() time.Time { return now().Add(ahead) })
		c.IdentityProviders = []IdentityProvider{{Name: stubIdPName, Issuer: stub.srv.URL, ClientID: "mcp-auth", ClientSecret: "stub-secret",
			GroupMap: map[string][]string{"eng": {"staff"}, "ops": {"readers"}}}}
		c.TrustedIdPs = []TrustedIdP{{Issuer: stub.srv.URL, JWKSURI: stub.srv.URL + "/jwks"}}
		c.Clients = append(c.Clients, Client{ID: "svc", SecretHash: hashClientSecret(tSecret), GrantTypes: []string{grantJWTBearer}})
	})
	return e, stub
}

// idJAG is an ID-JAG the stub issued at iat for its user u-1 in groups,
// to client svc for bResource.
func (s *stubIdP) idJAG(t *testing.T, e *testEnv, iat time.Time, scope string, groups ...string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": s.srv.URL, "sub": "u-1", "aud": e.iss.URL(), "client_id": "svc", "resource": bResource,
		"scope": scope, "groups": groups, "iat": iat.Unix(), "exp": iat.Add(5 * time.Minute).Unix(), "jti": rand.Text(),
	})
	tok.Header["typ"], tok.Header["kid"] = idJAGType, "stub"
	jag, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return jag
}

// TestIDJAGRateLimited: each redeemed ID-JAG is a grant of its own, kept
// until the token expires, as a client's own token is, so a client that
// redeems one with every call (its IdP issuing them at will) grew the
// store without bound, past the client_credentials budget. A user's
// redemptions now spend the user's writes (userWriteBurst a minute,
// shared with its authorization requests); past them 429
// temporarily_unavailable with Retry-After, nothing stored, other users
// unaffected.
func TestIDJAGRateLimited(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	conf := tConf + ":" + tSecret
	sub := func(s string) func(jwt.MapClaims, *jwt.Token) {
		return func(c jwt.MapClaims, _ *jwt.Token) { c["sub"] = s }
	}
	for k := range userWriteBurst {
		if a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); a.status != http.StatusOK {
			t.Fatalf("redemption %d = %d %s, want 200", k, a.status, a.raw)
		}
	}
	a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil)
	if a.status != http.StatusTooManyRequests || a.str("error") != "temporarily_unavailable" || a.header.Get("Retry-After") == "" {
		t.Fatalf("redemption past the user's budget = %d %v %s, want 429 temporarily_unavailable with Retry-After", a.status, a.header, a.raw)
	}
	if n := countBucket(t, e, bucketGrants); n != userWriteBurst {
		t.Errorf("stored grants = %d, want %d (the refused redemption stores nothing)", n, userWriteBurst)
	}
	if a := e.redeem(t, conf, idp.idJAG(t, e, sub("u2")), nil); a.status != http.StatusOK {
		t.Errorf("another user's redemption = %d %s, want 200", a.status, a.raw)
	}
	e.clock.Advance(time.Minute)
	if a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); a.status != http.StatusOK {
		t.Errorf("redemption a minute later = %d %s, want 200 (the budget refills)", a.status, a.raw)
	}
}

// TestIDJAGDisabledAtSiblingProvider: two identity providers at the
// trusted IdP's issuer (two applications registered there) name one
// population of users. A person the operator disabled at the one the
// trusted IdP is not linked to gets no token from an ID-JAG naming
// their sub: the ID-JAG would provision them at the other, as its
// sign-in is refused there (TestFederatedDisabledAtSiblingProvider).
func TestIDJAGDisabledAtSiblingProvider(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) {
		sibling := c.IdentityProviders[0]
		sibling.Name = "sso"
		c.IdentityProviders = append(c.IdentityProviders, sibling)
		c.TrustedIdPs[0].IdentityProvider = "corp"
	})
	sso := e.iss.dir.identityProvider("sso")
	signedIn := &idpIdentity{username: "sso:u1", subject: "u1", groups: []string{"eng"}}
	if err := e.iss.provision(e.ctx(), sso, signedIn, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := e.iss.DisableUser(e.ctx(), "sso:u1"); err != nil {
		t.Fatal(err)
	}
	conf := tConf + ":" + tSecret
	users := e.count(bucketUsers)
	if a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("the person disabled at the sibling provider: redeem = %d %s, want invalid_grant", a.status, a.raw)
	}
	if n := e.count(bucketUsers); n != users {
		t.Errorf("users = %d after the refusal, want %d", n, users)
	}
	if a := e.redeem(t, conf, idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["sub"] = "u2" }), nil); a.status != http.StatusOK {
		t.Errorf("another user: redeem = %d %s, want 200", a.status, a.raw)
	}
	if err := e.iss.EnableUser(e.ctx(), "sso:u1"); err != nil {
		t.Fatal(err)
	}
	if a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); a.status != http.StatusOK {
		t.Errorf("once enabled: redeem = %d %s, want 200", a.status, a.raw)
	}
}

// TestIDJAGIssuedBeforeSignOut: an ID-JAG counts as a sign-in at its
// identity provider made at its iat, so what signs the user out here
// (removing the user, disabling it) ends the ID-JAGs issued before, as
// it ends a code of a sign-in before: redeemed after, even once the user
// is enabled again, they are invalid_grant and provision nobody, for as
// long as they live (an hour), however short access_token_ttl is. An
// ID-JAG issued after is redeemed, as the next sign-in creates the
// removed user again.
func TestIDJAGIssuedBeforeSignOut(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.AccessTokenTTL = 5 * time.Minute })
	conf := tConf + ":" + tSecret
	// Lives 55 minutes: within the hour an ID-JAG may live, and recheck.
	issued := func() string {
		return idp.idJAG(t, e, func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = e.clock.Now().Add(55 * time.Minute).Unix() })
	}
	refused := func(what string, a answer) {
		t.Helper()
		if a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" || a.str("access_token") != "" {
			t.Errorf("%s: redeem = %d %s, want invalid_grant", what, a.status, a.raw)
		}
	}
	redeemed := func(what string, a answer) {
		t.Helper()
		if a.status != http.StatusOK {
			t.Fatalf("%s: redeem = %d %s, want 200", what, a.status, a.raw)
		}
	}
	redeemed("first", e.redeem(t, conf, issued(), nil))

	before := issued()
	e.clock.Advance(time.Minute)
	if err := e.iss.DeleteUser(e.ctx(), "corp:u1"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(30 * time.Minute) // past the removal's access tokens, and its stamp's first keep
	refused("an ID-JAG issued before the user was removed", e.redeem(t, conf, before, nil))
	if _, err := e.iss.dir.findUser(e.ctx(), "corp:u1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the refusal: findUser = %v, want not found (nothing provisioned)", err)
	}
	redeemed("an ID-JAG issued after the removal", e.redeem(t, conf, issued(), nil))

	before = issued()
	e.clock.Advance(time.Minute)
	if err := e.iss.DisableUser(e.ctx(), "corp:u1"); err != nil {
		t.Fatal(err)
	}
	if err := e.iss.EnableUser(e.ctx(), "corp:u1"); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	refused("an ID-JAG issued before the user was disabled, enabled since", e.redeem(t, conf, before, nil))
	redeemed("an ID-JAG issued after", e.redeem(t, conf, issued(), nil))
}
