package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

func TestCodeExchangeWithOAuth2Client(t *testing.T) {
	e := newTokEnv(t)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid", "profile", "read", "offline_access"}, nonce: "n-0S6_WzA2Mj"})
	tok, err := e.exchange(t, tPublic, "", code, verifier, oauth2.SetAuthURLParam("resource", tResource))
	if err != nil {
		t.Fatalf("Exchange() error: %v", err)
	}
	if tok.TokenType != "Bearer" || tok.RefreshToken == "" {
		t.Errorf("token_type = %q, refresh_token set = %v; want Bearer, true", tok.TokenType, tok.RefreshToken != "")
	}
	if got, want := tok.Extra("scope"), "openid profile read offline_access"; got != want {
		t.Errorf("scope = %v, want %q", got, want)
	}
	if got := tok.ExpiresIn; got != 3600 {
		t.Errorf("expires_in = %d, want 3600", got)
	}

	h, c := claimsOf(t, tok.AccessToken)
	if h["typ"] != "at+jwt" || h["alg"] != "ES256" || h["kid"] == nil {
		t.Errorf("access token header = %v, want typ at+jwt, alg ES256, kid", h)
	}
	now := float64(e.clock.Now().Unix())
	want := map[string]any{
		"iss": e.iss.URL(), "sub": tUser, "aud": tResource, "client_id": tPublic,
		"scope": "openid profile read offline_access", "iat": now, "exp": now + 3600,
		"auth_time": now - 60,
	}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("access token claim %s = %v, want %v", k, c[k], v)
		}
	}
	if c["jti"] == nil || c["gid"] == nil || c["act"] != nil {
		t.Errorf("access token jti, gid, act = %v, %v, %v; want jti, gid, no act", c["jti"], c["gid"], c["act"])
	}

	idt, _ := tok.Extra("id_token").(string)
	if idt == "" {
		t.Fatal("no id_token for an openid grant")
	}
	ih, ic := claimsOf(t, idt)
	sum := sha256.Sum256([]byte(tok.AccessToken))
	wantID := map[string]any{
		"iss": e.iss.URL(), "sub": tUser, "aud": tPublic, "azp": tPublic, "nonce": "n-0S6_WzA2Mj",
		"at_hash": base64.RawURLEncoding.EncodeToString(sum[:16]), "auth_time": now - 60, "exp": now + 3600,
	}
	for k, v := range wantID {
		if ic[k] != v {
			t.Errorf("id token claim %s = %v, want %v", k, ic[k], v)
		}
	}
	// OpenID Connect's default algorithm, from a key of its own that the
	// JWKS publishes beside the access tokens' (TestIDTokenAlgorithms).
	if ih["alg"] != "RS256" || ih["kid"] == h["kid"] {
		t.Errorf("id token header = %v, want alg RS256 and another kid than the access token's %v", ih, h["kid"])
	}
	verifyIDToken(t, e, idt, "RS256")
}

// verifyIDToken checks raw's signature with a key of the issuer's JWKS,
// as a relying party does, and that its algorithm is alg.
func verifyIDToken(t *testing.T, e *testEnv, raw, alg string) {
	t.Helper()
	keys, _ := e.jwksOf(t)
	_, err := jwt.Parse(raw, func(tok *jwt.Token) (any, error) {
		for _, k := range keys {
			if k.Kid == tok.Header["kid"] && k.Alg == alg {
				return k.PublicKey()
			}
		}
		return nil, errors.New("kid not in the JWKS")
	}, jwt.WithValidMethods([]string{alg}), jwt.WithIssuer(e.iss.URL()), jwt.WithTimeFunc(e.clock.Now))
	if err != nil {
		t.Fatalf("verify ID token: %v", err)
	}
}

func TestTokenResponseHeaders(t *testing.T) {
	e := newTokEnv(t)
	code, verifier := e.issueCode(t, codeSpec{})
	a := e.post(t, pathToken, url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {tRedirect}, "client_id": {tPublic},
	}, "")
	if a.status != http.StatusOK {
		t.Fatalf("status = %d, want 200 (%s)", a.status, a.raw)
	}
	for k, v := range map[string]string{"Cache-Control": "no-store", "Pragma": "no-cache", "Content-Type": "application/json", "Access-Control-Allow-Origin": "*"} {
		if got := a.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if _, ok := a.body["refresh_token"]; ok {
		t.Error("refresh_token issued without offline_access")
	}
	if _, ok := a.body["id_token"]; ok {
		t.Error("id_token issued without openid")
	}
	if a.str("scope") != "read" {
		t.Errorf("scope = %q, want read", a.str("scope"))
	}
}

func TestCodeGrantFailures(t *testing.T) {
	e := newTokEnv(t)
	// agent-1's token for another resource than the codes': one that
	// resource, holding it, could replay.
	a1Other := e.tokenExchange(t, tAgent1+":"+tAgentSecret, url.Values{"subject_token": {e.agentToken(t, tAgent1, tAgentSecret)},
		"subject_token_type": {tokenTypeAccessToken}, "resource": {tOther}}).str("access_token")
	if a1Other == "" {
		t.Fatal("no token of agent-1 for " + tOther)
	}
	tests := []struct {
		name      string
		spec      codeSpec
		mutate    func(v url.Values)
		basic     string
		wantCode  string
		wantState int
	}{
		{name: "wrong verifier", mutate: func(v url.Values) { v.Set("code_verifier", oauth2.GenerateVerifier()) }, wantCode: "invalid_grant"},
		{name: "missing verifier", mutate: func(v url.Values) { v.Del("code_verifier") }, wantCode: "invalid_grant"},
		{name: "short verifier", mutate: func(v url.Values) { v.Set("code_verifier", "abc") }, wantCode: "invalid_grant"},
		{name: "code without challenge", spec: codeSpec{noChallenge: true}, wantCode: "invalid_grant"},
		{name: "plain challenge method", spec: codeSpec{challengeMethod: "plain"}, wantCode: "invalid_grant"},
		{name: "redirect mismatch", mutate: func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:9999/other") }, wantCode: "invalid_grant"},
		{name: "redirect missing", mutate: func(v url.Values) { v.Del("redirect_uri") }, wantCode: "invalid_grant"},
		{name: "unknown code", mutate: func(v url.Values) { v.Set("code", "nope") }, wantCode: "invalid_grant"},
		{name: "missing code", mutate: func(v url.Values) { v.Del("code") }, wantCode: "invalid_request"},
		{name: "expired code", spec: codeSpec{ttl: -time.Second}, wantCode: "invalid_grant"},
		{name: "unknown client", mutate: func(v url.Values) { v.Set("client_id", "who") }, wantCode: "invalid_client", wantState: 401},
		{name: "code of another client", spec: codeSpec{client: tNarrow}, wantCode: "invalid_grant"},
		{name: "confidential client without secret", spec: codeSpec{client: tConf}, mutate: func(v url.Values) { v.Set("client_id", tConf) }, wantCode: "invalid_client", wantState: 401},
		{name: "bad client secret", spec: codeSpec{client: tConf}, mutate: func(v url.Values) { v.Del("client_id") }, basic: tConf + ":wrong", wantCode: "invalid_client", wantState: 401},
		{name: "secret of a client for another client's code", spec: codeSpec{client: tPublic}, mutate: func(v url.Values) { v.Del("client_id") }, basic: tConf + ":" + tSecret, wantCode: "invalid_grant"},
		{name: "resource differs", mutate: func(v url.Values) { v.Set("resource", tOther) }, wantCode: "invalid_target"},
		{name: "disabled user", spec: codeSpec{user: "carol"}, wantCode: "invalid_grant"},
		{name: "actor token without requested actor", mutate: func(v url.Values) { v.Set("actor_token", "x") }, wantCode: "invalid_request"},
		{name: "delegated code without actor token", spec: codeSpec{actor: "agent-1"}, wantCode: "invalid_grant"},
		{name: "delegated code with a bogus actor token", spec: codeSpec{actor: "agent-1"}, mutate: func(v url.Values) { v.Set("actor_token", "a.b.c") }, wantCode: "invalid_grant"},
		{name: "delegated code with the actor's token for another resource", spec: codeSpec{actor: "agent-1"}, mutate: func(v url.Values) { v.Set("actor_token", a1Other) }, wantCode: "invalid_grant"},
		{name: "missing grant type", mutate: func(v url.Values) { v.Del("grant_type") }, wantCode: "invalid_request"},
		{name: "unsupported grant type", mutate: func(v url.Values) { v.Set("grant_type", "password") }, wantCode: "unsupported_grant_type"},
		{name: "grant type not allowed", spec: codeSpec{client: tOnlyCC}, mutate: func(v url.Values) { v.Del("client_id") }, basic: tOnlyCC + ":" + tSecret, wantCode: "unauthorized_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, verifier := e.issueCode(t, tt.spec)
			v := url.Values{
				"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
				"redirect_uri": {tRedirect}, "client_id": {tPublic},
			}
			if tt.mutate != nil {
				tt.mutate(v)
			}
			a := e.post(t, pathToken, v, tt.basic)
			want := tt.wantState
			if want == 0 {
				want = http.StatusBadRequest
			}
			if a.status != want || a.str("error") != tt.wantCode {
				t.Fatalf("token = %d %s, want %d %s (%s)", a.status, a.str("error"), want, tt.wantCode, a.raw)
			}
			// Bad input changes nothing: the code still works afterwards
			// unless it was unusable to begin with.
			if reflect.DeepEqual(tt.spec, codeSpec{}) && tt.mutate != nil && v.Get("code") == code {
				tok, err := e.exchange(t, tPublic, "", code, verifier)
				if err != nil || tok.AccessToken == "" {
					t.Errorf("after a refused attempt, Exchange() error = %v, want the code still usable", err)
				}
			}
		})
	}
}

// TestCodeReuseRevokesFirstTokens: a second use of a code revokes what
// the first issued (RFC 6749 section 4.1.2), also once the code itself
// has expired: its record lives as long as the grant.
func TestCodeReuseRevokesFirstTokens(t *testing.T) {
	for _, tt := range []struct {
		name  string
		after time.Duration // between the two uses; the code lives a minute
	}{
		{"at once", 0},
		{"after the code's lifetime", 2 * time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTokEnv(t)
			code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read", "offline_access"}, ttl: time.Minute})
			tok, err := e.exchange(t, tPublic, "", code, verifier)
			if err != nil {
				t.Fatal(err)
			}
			if !e.active(t, tok.AccessToken) {
				t.Fatal("first access token not active before the replay")
			}
			e.clock.Advance(tt.after)
			_, err = e.exchange(t, tPublic, "", code, verifier)
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
				t.Fatalf("second Exchange() error = %v, want invalid_grant", err)
			}
			if e.active(t, tok.AccessToken) {
				t.Error("access token of the first redemption still active after code reuse")
			}
			_, c := claimsOf(t, tok.AccessToken)
			if !e.revoked(t, c["jti"].(string), "") {
				t.Error("Revoked(jti) = false after code reuse, want true")
			}
			a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, "")
			if a.str("error") != "invalid_grant" {
				t.Errorf("refresh after code reuse = %d %s, want invalid_grant", a.status, a.raw)
			}
		})
	}
}

// TestUsedCodeOfAnotherKeepsTheGrant: a used code presented by another
// client (the other confidential client, or a public client's id without
// the verifier) is refused and revokes nothing: only the code's own
// client with its verifier revokes the grant by reusing it (review
// s11-cluster F6).
func TestUsedCodeOfAnotherKeepsTheGrant(t *testing.T) {
	e := newTokEnv(t)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read", "offline_access"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		form  url.Values
		basic string
	}{
		{"another client", url.Values{"code_verifier": {verifier}}, tConf + ":" + tSecret},
		{"the public client's id without the verifier", url.Values{"client_id": {tPublic}, "code_verifier": {strings.Repeat("x", 43)}}, ""},
		{"the public client's id, no verifier", url.Values{"client_id": {tPublic}}, ""},
	} {
		tt.form.Set("grant_type", "authorization_code")
		tt.form.Set("code", code)
		tt.form.Set("redirect_uri", tRedirect)
		if a := e.post(t, pathToken, tt.form, tt.basic); a.str("error") != "invalid_grant" {
			t.Errorf("%s: used code = %d %s, want invalid_grant", tt.name, a.status, a.raw)
		}
		if !e.active(t, tok.AccessToken) {
			t.Fatalf("%s: the grant was revoked by a request that did not prove the code's client and verifier", tt.name)
		}
	}
}

func TestRefreshRotationAndReuse(t *testing.T) {
	e := newTokEnv(t)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read", "write", "offline_access"}})
	first, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	refresh := func(rt string, extra url.Values) answer {
		v := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {tPublic}}
		for k, vs := range extra {
			v[k] = vs
		}
		return e.post(t, pathToken, v, "")
	}

	e.clock.Advance(time.Minute)
	a := refresh(first.RefreshToken, nil)
	if a.status != 200 || a.str("refresh_token") == "" || a.str("refresh_token") == first.RefreshToken {
		t.Fatalf("refresh = %d %s, want 200 with a new refresh token", a.status, a.raw)
	}
	if a.str("scope") != "read write offline_access" {
		t.Errorf("refresh scope = %q, want the grant's scope", a.str("scope"))
	}
	_, c1 := claimsOf(t, first.AccessToken)
	_, c2 := claimsOf(t, a.str("access_token"))
	if c1["gid"] != c2["gid"] || c2["aud"] != tResource {
		t.Errorf("refreshed token gid, aud = %v, %v; want %v, %s", c2["gid"], c2["aud"], c1["gid"], tResource)
	}
	second := a.str("refresh_token")

	t.Run("narrowing", func(t *testing.T) {
		a := refresh(second, url.Values{"scope": {"read"}})
		if a.status != 200 || a.str("scope") != "read" {
			t.Fatalf("narrowing refresh = %d %s, want scope read", a.status, a.raw)
		}
		second = a.str("refresh_token")
		// The grant keeps its scope: a later refresh without scope gets it all.
		a = refresh(second, nil)
		if a.str("scope") != "read write offline_access" {
			t.Fatalf("refresh after narrowing scope = %q, want the grant's scope", a.str("scope"))
		}
		second = a.str("refresh_token")
	})

	for _, tt := range []struct {
		name, code string
		extra      url.Values
		basic      string
	}{
		{"widening scope", "invalid_scope", url.Values{"scope": {"read admin"}}, ""},
		// Each scope value was compared with every other: a 64 KiB scope
		// cost seconds of CPU, and a refused request spends nothing.
		{"scope too long", "invalid_request", url.Values{"scope": {strings.Repeat("read ", maxAuthorizeParam/5+1)}}, ""},
		// README (Limits: Unauthenticated writes): "a scope at /token
		// ... 2000 bytes", written out: 2000 bytes are read (and
		// refused for admin), 2001 are too long.
		{"scope of 2000 bytes", "invalid_scope", url.Values{"scope": {"admin" + strings.Repeat(" read", 399)}}, ""},
		{"scope of 2001 bytes", "invalid_request", url.Values{"scope": {"admin" + strings.Repeat(" read", 399) + "d"}}, ""},
		{"other resource", "invalid_target", url.Values{"resource": {tOther}}, ""},
		{"other client", "invalid_grant", url.Values{"client_id": {tNarrow}}, ""},
		{"missing token", "invalid_request", url.Values{"refresh_token": {""}}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := refresh(second, tt.extra)
			if a.str("error") != tt.code {
				t.Fatalf("refresh = %d %s, want %s", a.status, a.raw, tt.code)
			}
		})
	}

	t.Run("reuse revokes the family", func(t *testing.T) {
		a := refresh(first.RefreshToken, nil) // rotated long ago
		if a.str("error") != "invalid_grant" {
			t.Fatalf("reuse = %d %s, want invalid_grant", a.status, a.raw)
		}
		if a := refresh(second, nil); a.str("error") != "invalid_grant" {
			t.Errorf("current refresh token after reuse = %d %s, want invalid_grant", a.status, a.raw)
		}
		if e.active(t, first.AccessToken) {
			t.Error("access token of the family still active after reuse")
		}
	})
}

func TestRefreshTokenOnlyWithOfflineAccess(t *testing.T) {
	e := newTokEnv(t)
	tests := []struct {
		name, client, secret string
		scopes               []string
		wantRefresh          bool
		wantScope            string
	}{
		{"offline_access granted", tPublic, "", []string{"read", "offline_access"}, true, "read offline_access"},
		{"no offline_access", tPublic, "", []string{"read"}, false, "read"},
		// tPost may not use refresh_token, so offline_access is dropped.
		{"client without refresh grant", tPost, tSecret2, []string{"read", "offline_access"}, false, "read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, verifier := e.issueCode(t, codeSpec{client: tt.client, scopes: tt.scopes})
			v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
				"redirect_uri": {tRedirect}, "client_id": {tt.client}}
			if tt.secret != "" {
				v.Set("client_secret", tt.secret)
			}
			a := e.post(t, pathToken, v, "")
			if a.status != 200 {
				t.Fatalf("token = %d %s", a.status, a.raw)
			}
			if got := a.str("refresh_token") != ""; got != tt.wantRefresh || a.str("scope") != tt.wantScope {
				t.Errorf("refresh issued, scope = %v, %q; want %v, %q", got, a.str("scope"), tt.wantRefresh, tt.wantScope)
			}
		})
	}
}

func TestClientCredentials(t *testing.T) {
	e := newTokEnv(t)
	tests := []struct {
		name      string
		form      url.Values
		basic     string
		wantCode  string
		wantScope string
		wantAud   string
	}{
		{name: "all scopes of the resource", form: url.Values{"resource": {tResource}}, basic: tConf + ":" + tSecret, wantScope: "read write admin", wantAud: tResource},
		{name: "requested scopes", form: url.Values{"resource": {tOther}, "scope": {"write openid nonsense"}}, basic: tConf + ":" + tSecret, wantScope: "write", wantAud: tOther},
		{name: "client scope limit", form: url.Values{"resource": {tResource}}, basic: tOnlyCC + ":" + tSecret, wantScope: "read", wantAud: tResource},
		{name: "secret post", form: url.Values{"resource": {tResource}, "scope": {"admin"}, "client_id": {tPost}, "client_secret": {tSecret2}}, wantScope: "admin", wantAud: tResource},
		{name: "resource required with several", form: url.Values{}, basic: tConf + ":" + tSecret, wantCode: "invalid_target"},
		{name: "unknown resource", form: url.Values{"resource": {"https://nope.example.com/mcp"}}, basic: tConf + ":" + tSecret, wantCode: "invalid_target"},
		{name: "two resources", form: url.Values{"resource": {tResource, tOther}}, basic: tConf + ":" + tSecret, wantCode: "invalid_target"},
		{name: "resource with fragment", form: url.Values{"resource": {tResource + "#x"}}, basic: tConf + ":" + tSecret, wantCode: "invalid_target"},
		{name: "scope nobody may grant", form: url.Values{"resource": {tResource}, "scope": {"delete"}}, basic: tConf + ":" + tSecret, wantCode: "invalid_scope"},
		{name: "scope outside the client's", form: url.Values{"resource": {tResource}, "scope": {"admin"}}, basic: tOnlyCC + ":" + tSecret, wantCode: "invalid_scope"},
		{name: "malformed scope", form: url.Values{"resource": {tResource}, "scope": {"a\"b"}}, basic: tConf + ":" + tSecret, wantCode: "invalid_scope"},
		{name: "public client", form: url.Values{"resource": {tResource}, "client_id": {tPublic}}, wantCode: "unauthorized_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.form.Set("grant_type", "client_credentials")
			a := e.post(t, pathToken, tt.form, tt.basic)
			if tt.wantCode != "" {
				if a.str("error") != tt.wantCode {
					t.Fatalf("token = %d %s, want %s", a.status, a.raw, tt.wantCode)
				}
				return
			}
			if a.status != 200 || a.str("scope") != tt.wantScope || a.str("refresh_token") != "" {
				t.Fatalf("token = %d %s, want scope %q and no refresh token", a.status, a.raw, tt.wantScope)
			}
			_, c := claimsOf(t, a.str("access_token"))
			id := c["client_id"]
			if c["sub"] != id || c["aud"] != tt.wantAud || c["auth_time"] != nil || c["principal_type"] != "client" {
				t.Errorf("claims sub, client_id, aud, auth_time, principal_type = %v, %v, %v, %v, %v; want principal_type client",
					c["sub"], id, c["aud"], c["auth_time"], c["principal_type"])
			}
			// A resource server that reads an absent principal_type as a
			// user learns the truth from introspection too.
			if in := e.introspect(t, a.str("access_token")); in.str("principal_type") != "client" {
				t.Errorf("introspection = %s, want principal_type client", in.raw)
			}
		})
	}
}

func TestResourcePolicy(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	narrow, _ := e.iss.dir.lookupClient(ctx, tNarrow)
	pub, _ := e.iss.dir.lookupClient(ctx, tPublic)
	alice, _ := e.iss.dir.lookupUser(ctx, tUser)
	bob, _ := e.iss.dir.lookupUser(ctx, "bob")
	tests := []struct {
		name      string
		c         *Client
		u         *User
		resource  string
		requested []string
		want      []string
		wantErr   error
	}{
		{"user gets group scopes", pub, alice, tResource, nil, []string{"read", "write"}, nil},
		{"wildcard group scopes", pub, alice, tOther, nil, []string{"read", "write"}, nil},
		{"group for every resource", pub, bob, tOther, []string{"read", "write"}, []string{"read"}, nil},
		{"oidc scopes pass for users", pub, bob, tResource, []string{"openid", "email", "write"}, []string{"openid", "email"}, nil},
		{"client scope limit", narrow, alice, tResource, []string{"read", "write"}, []string{"read"}, nil},
		{"client resource limit", narrow, alice, tOther, nil, nil, ErrInvalidTarget},
		{"nothing grantable", pub, bob, tResource, []string{"write"}, nil, ErrInvalidScope},
		{"trailing slash is the same resource", pub, alice, tResource + "/", []string{"read"}, []string{"read"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, got, err := e.iss.policy.grantScopes(ctx, tt.c, tt.u, tt.resource, tt.requested)
			if !errors.Is(err, tt.wantErr) || !slices.Equal(got, tt.want) {
				t.Fatalf("grantScopes() = %v, %v; want %v, %v", got, err, tt.want, tt.wantErr)
			}
			if err == nil && res != strings.TrimSuffix(tt.resource, "/") {
				t.Errorf("grantScopes() resource = %q, want the configured URL", res)
			}
		})
	}

	t.Run("runtime resource", func(t *testing.T) {
		e.iss.AddResource(Resource{URL: "https://new.example.com/mcp", Scopes: []string{"x"}})
		_, got, err := e.iss.policy.grantScopes(ctx, pub, nil, "https://new.example.com/mcp", nil)
		if err != nil || !slices.Equal(got, []string{"x"}) {
			t.Fatalf("grantScopes(runtime resource) = %v, %v; want [x]", got, err)
		}
		e.iss.AddResource(Resource{URL: tResource, Scopes: []string{"only"}})
		_, got, _ = e.iss.policy.grantScopes(ctx, pub, nil, tResource, nil)
		if !slices.Equal(got, []string{"only"}) {
			t.Fatalf("grantScopes after re-adding = %v, want [only]", got)
		}
	})
}

func TestTokenRequestFormat(t *testing.T) {
	e := newTokEnv(t)
	code, verifier := e.issueCode(t, codeSpec{})
	body := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {tRedirect}, "client_id": {tPublic}}.Encode()
	tests := []struct {
		name, method, ctype, body string
		wantStatus                int
	}{
		{"duplicate parameter", http.MethodPost, "application/x-www-form-urlencoded", body + "&code=" + code, 400},
		{"duplicate parameter, once empty", http.MethodPost, "application/x-www-form-urlencoded", body + "&code=", 400},
		{"json body", http.MethodPost, "application/json", `{"grant_type":"authorization_code"}`, 400},
		{"GET", http.MethodGet, "", "", 405},
		{"oversized body", http.MethodPost, "application/x-www-form-urlencoded", body + "&pad=" + strings.Repeat("a", 70<<10), 413},
		{"malformed body", http.MethodPost, "application/x-www-form-urlencoded", "a=%zz", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, e.iss.endpoint(pathToken), strings.NewReader(tt.body))
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			a := e.do(t, req)
			if a.status != tt.wantStatus || a.str("error") != "invalid_request" {
				t.Fatalf("token = %d %s, want %d invalid_request", a.status, a.raw, tt.wantStatus)
			}
		})
	}
	// None of that consumed the code. Parameters sent without a value
	// count as omitted (RFC 6749 section 3.1): a public client's empty
	// client_secret is no secret.
	if a := e.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {tRedirect}, "client_id": {tPublic}, "client_secret": {""}, "scope": {""}}, ""); a.status != http.StatusOK {
		t.Fatalf("token after bad requests, with empty client_secret and scope = %d %s, want 200", a.status, a.raw)
	}
}

// verifyLikeGateway verifies an access token the way a resource server
// must (RFC 9068 section 4), with jwt/v5 and pinned options.
func verifyLikeGateway(t testing.TB, e *testEnv, raw, alg string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
		if tok.Header["typ"] != "at+jwt" {
			return nil, errors.New("typ")
		}
		return e.iss.PublicKey(t.Context(), tok.Header["kid"].(string))
	}, jwt.WithValidMethods([]string{alg}), jwt.WithIssuer(e.iss.URL()), jwt.WithAudience(tResource),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(e.clock.Now))
	if err != nil {
		t.Fatalf("verify access token: %v", err)
	}
	return claims
}

// TestClientCredentialsSelfRegistered: a DCR or CIMD client that lists
// client_credentials (stored before registration refused it) gets no
// token of its own: its empty Resources and Scopes mean none without a
// user. Its user grants are unaffected.
func TestClientCredentialsSelfRegistered(t *testing.T) {
	e := newTokEnv(t)
	const dcrSecret = "dcr-secret"
	const cimdID = "https://app.example.com/client.json"
	e.putClientRecord(t, bucketClients, "dcr-cc", Client{ID: "dcr-cc", SecretHash: hashClientSecret(dcrSecret),
		TokenEndpointAuthMethod: authClientSecretBasic, RedirectURIs: []string{tRedirect},
		GrantTypes: []string{"authorization_code", "client_credentials"}, Source: sourceDCR})
	e.putClientRecord(t, bucketClients, "dcr-limited", Client{ID: "dcr-limited", SecretHash: hashClientSecret(dcrSecret),
		TokenEndpointAuthMethod: authClientSecretBasic, GrantTypes: []string{"client_credentials"},
		Resources: []string{tResource}, Source: sourceDCR}) // resources but no scopes: still none
	cimdAssertion := e.putKeyedCIMDClient(t, cimdID, "authorization_code", "client_credentials")()

	tests := []struct {
		name  string
		form  url.Values
		basic string
	}{
		{"dcr", url.Values{"resource": {tResource}}, "dcr-cc:" + dcrSecret},
		{"dcr with scope", url.Values{"resource": {tResource}, "scope": {"read"}}, "dcr-cc:" + dcrSecret},
		{"dcr with resources only", url.Values{"resource": {tResource}}, "dcr-limited:" + dcrSecret},
		{"cimd", url.Values{"resource": {tResource}, "client_assertion_type": {jwtBearerAssertion}, "client_assertion": {cimdAssertion}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.form.Set("grant_type", "client_credentials")
			a := e.post(t, pathToken, tt.form, tt.basic)
			if a.status != http.StatusBadRequest || a.str("error") != "unauthorized_client" || a.str("access_token") != "" {
				t.Errorf("client_credentials = %d %s, want 400 unauthorized_client", a.status, a.raw)
			}
		})
	}

	// The same DCR client still gets a user's token, bounded by the user.
	code, verifier := e.issueCode(t, codeSpec{client: "dcr-cc", scopes: []string{"read", "write"}})
	tok, err := e.exchange(t, "dcr-cc", dcrSecret, code, verifier)
	if err != nil {
		t.Fatalf("code exchange by a DCR client: %v", err)
	}
	if got := tok.Extra("scope"); got != "read write" {
		t.Errorf("user token scope = %v, want read write", got)
	}
}

// putClientRecord writes a record (a stored client, a cached CIMD
// document) straight into the store.
func (e *testEnv) putClientRecord(t *testing.T, bucket, key string, v any) {
	t.Helper()
	err := e.store.Update(context.Background(), func(tx store.Tx) error { return putRecord(tx, bucket, key, v, time.Time{}) })
	if err != nil {
		t.Fatal(err)
	}
}

// putKeyedCIMDClient caches a client metadata document of a
// private_key_jwt client id, whose key is the environment's jwtKey, with
// redirect URI tRedirect and grantTypes; it returns a maker of the
// client's assertions.
func (e *testEnv) putKeyedCIMDClient(t *testing.T, id string, grantTypes ...string) func() string {
	t.Helper()
	pub, err := publicJWK(e.jwtKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	// Public: cached by an issuer without cimd_allow_private, as this
	// one is (an entry without the mark is fetched again: ce8f1b2).
	e.putClientRecord(t, bucketCIMD, id, cimdEntry{ExpiresAt: e.clock.Now().Add(time.Hour), Public: true, Client: storedClient{
		ID: id, TokenEndpointAuthMethod: authPrivateKeyJWT, JWKS: jwks, RedirectURIs: []string{tRedirect},
		GrantTypes: grantTypes, Source: sourceCIMD}})
	return func() string {
		return e.clientAssertion(t, func(c jwt.MapClaims, tok *jwt.Token) {
			c["iss"], c["sub"] = id, id
			delete(tok.Header, "kid")
		})
	}
}

// TestRefreshedTokenEndsWithItsGrant: a refresh near the end of its
// family's absolute lifetime (refresh_token_ttl) gets an access token
// that ends with the grant, not access_token_ttl later: the grant's
// record ends then, and revoking what a user, client or agent holds
// finds grants by their records, so a token outliving it could not be
// revoked (review s13-agents F1). A token exchanged from a token whose
// grant record is gone (one from before this rule) is refused: it could
// not be revoked either.
func TestRefreshedTokenEndsWithItsGrant(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	if err := e.iss.PutAgent(ctx, Agent{ID: "rt", SecretHash: hashClientSecret("rt")}); err != nil {
		t.Fatal(err)
	}
	del := e.delegated(t, "rt", e.agentToken(t, "rt", "rt"), "read", "offline_access")
	_, c := claimsOf(t, del.AccessToken)
	gid := c["gid"].(string)
	var g grant
	if err := e.get(bucketGrants, gid, &g); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(g.ExpiresAt.Sub(e.clock.Now()) - time.Minute)
	a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {del.RefreshToken}, "client_id": {tPublic}}, "")
	if a.status != 200 {
		t.Fatalf("refresh = %d %s", a.status, a.raw)
	}
	at := a.str("access_token")
	_, c = claimsOf(t, at)
	if exp := time.Unix(int64(c["exp"].(float64)), 0); exp.After(g.ExpiresAt) {
		t.Errorf("refreshed access token expires %v, after its grant (%v)", exp, g.ExpiresAt)
	}
	if got, _ := a.body["expires_in"].(float64); got > 60 {
		t.Errorf("expires_in = %v, want at most the 60 s its grant has left", got)
	}
	// While it lives, revoking the agent's delegations finds it.
	if err := e.iss.DisableAgent(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	if !e.revokedToken(t, at) {
		t.Error("the refreshed delegation of a disabled agent is not revoked")
	}
	if err := e.iss.EnableAgent(ctx, "rt"); err != nil {
		t.Fatal(err)
	}

	// A token whose grant record is gone is not exchanged.
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	_, c = claimsOf(t, tok.AccessToken)
	if err := e.store.Update(ctx, func(tx store.Tx) error { return tx.Delete(bucketGrants, c["gid"].(string)) }); err != nil {
		t.Fatal(err)
	}
	x := e.tokenExchange(t, "rt:rt", exchangeForm(tok.AccessToken, e.agentToken(t, "rt", "rt")))
	if x.status != 400 || x.str("error") != "invalid_request" {
		t.Errorf("exchange of a token without its grant record = %d %s, want 400 invalid_request", x.status, x.raw)
	}
}

// TestTokenEndsWithItsGrant: with a refresh_token_ttl below the
// access_token_ttl, the code's first access token ends with its grant
// too (the same holds for client credentials and jwt-bearer, whose
// grants end with their token), so a live token's grant record is there
// for revoking an agent to find; and a refresh in a family's last second
// is refused rather than answered with a token already expired (review
// s13-fresh2 F2, F4).
func TestTokenEndsWithItsGrant(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.RefreshTokenTTL = 10 * time.Minute })
	ctx := t.Context()
	if err := e.iss.PutAgent(ctx, Agent{ID: "rt", SecretHash: hashClientSecret("rt")}); err != nil {
		t.Fatal(err)
	}
	del := e.delegated(t, "rt", e.agentToken(t, "rt", "rt"), "read", "offline_access")
	_, c := claimsOf(t, del.AccessToken)
	g := e.grantOf(t, c["gid"].(string))
	if exp := time.Unix(int64(c["exp"].(float64)), 0); exp.After(g.ExpiresAt) {
		t.Errorf("the code's access token expires %v, after its grant (%v)", exp, g.ExpiresAt)
	}
	e.clock.Advance(10*time.Minute - 500*time.Millisecond)
	a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {del.RefreshToken}, "client_id": {tPublic}}, "")
	if a.status != 400 || a.str("error") != "invalid_grant" {
		t.Errorf("refresh in the family's last second = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
}

// TestDefaultLifetimes: the defaults README gives (mcp_auth's
// access_token_ttl ... id_token_ttl, revocation_resync and
// revocation_max_stale): an access and an ID token live an hour, and a
// refresh family 720 hours, rotations or not; the store's revocations
// are read every second and may go unread for 30. (A code's 5 minutes:
// TestAuthorizeFlowIssuesCode.)
func TestDefaultLifetimes(t *testing.T) {
	e := newTokEnv(t)
	start := e.clock.Now()
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid", "read", "offline_access"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	_, c := claimsOf(t, tok.AccessToken)
	idt, _ := tok.Extra("id_token").(string)
	_, ic := claimsOf(t, idt)
	if exp, iexp := int64(c["exp"].(float64)), int64(ic["exp"].(float64)); exp != start.Add(time.Hour).Unix() || iexp != exp {
		t.Errorf("access token exp %d, ID token exp %d, want both %d (1h)", exp, iexp, start.Add(time.Hour).Unix())
	}
	if g := e.grantOf(t, c["gid"].(string)); !g.ExpiresAt.Equal(start.Add(720 * time.Hour)) {
		t.Errorf("grant expires %v, want %v (refresh_token_ttl 720h)", g.ExpiresAt, start.Add(720*time.Hour))
	}
	refresh := func(rt string) answer {
		return e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {rt}, "client_id": {tPublic}}, "")
	}
	rt := tok.RefreshToken
	for _, step := range []time.Duration{300 * time.Hour, 300 * time.Hour, 120*time.Hour - time.Minute} {
		e.clock.Advance(step)
		a := refresh(rt)
		if a.status != 200 {
			t.Fatalf("refresh %v after the sign-in = %d %s, want 200", e.clock.Now().Sub(start), a.status, a.raw)
		}
		rt = a.str("refresh_token")
	}
	e.clock.Advance(2 * time.Minute)
	if a := refresh(rt); a.status != 400 || a.str("error") != "invalid_grant" {
		t.Errorf("refresh past 720h = %d %s, want 400 invalid_grant", a.status, a.str("error"))
	}

	cfg := Config{}
	applyDefaults(&cfg)
	if cfg.RevocationResync != time.Second || cfg.RevocationMaxStale != 30*time.Second {
		t.Errorf("revocation_resync, revocation_max_stale defaults = %v, %v, want 1s, 30s", cfg.RevocationResync, cfg.RevocationMaxStale)
	}
}

// TestRefreshFamilyStaysOneRecord (review s15-token F1): a client
// refreshing in a loop kept one record per rotation until its family's
// end (30 days), 300 bytes a refresh without bound. A family is one
// record now, however often it rotates, and the first token of a
// thousand rotations ago still revokes the family when presented again.
func TestRefreshFamilyStaysOneRecord(t *testing.T) {
	e := newTokEnv(t)
	code, verifier := e.issueCode(t, codeSpec{client: tPublic, scopes: []string{"read", "offline_access"}})
	first, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	refresh := func(rt string) answer {
		return e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {rt}, "client_id": {tPublic}}, "")
	}
	rt := first.RefreshToken
	const n = 1000
	for range n {
		r := refresh(rt)
		if r.status != 200 {
			t.Fatalf("refresh: %d %s", r.status, r.raw)
		}
		rt = r.str("refresh_token")
	}
	if got := e.count(bucketRefresh); got != 1 {
		t.Errorf("one refresh family holds %d records after %d rotations, want 1", got, n)
	}
	if a := refresh(first.RefreshToken); a.str("error") != "invalid_grant" {
		t.Fatalf("the first token again = %d %s, want invalid_grant", a.status, a.raw)
	}
	if a := refresh(rt); a.str("error") != "invalid_grant" {
		t.Errorf("the newest token after the first was reused = %d %s, want invalid_grant (family revoked)", a.status, a.raw)
	}
}
