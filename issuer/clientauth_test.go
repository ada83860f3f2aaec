package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

func ccForm(extra url.Values) url.Values {
	v := url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}}
	for k, vs := range extra {
		v[k] = vs
	}
	return v
}

func TestClientSecretBasicEncoding(t *testing.T) {
	e := newTokEnv(t)
	// x/oauth2 form-urlencodes id and secret before Basic encoding, as
	// RFC 6749 2.3.1 says; the secret has characters that change.
	cc := clientcredentials.Config{
		ClientID: tConf, ClientSecret: tSecret, TokenURL: e.iss.endpoint(pathToken),
		EndpointParams: url.Values{"resource": {tResource}}, AuthStyle: oauth2.AuthStyleInHeader,
	}
	tok, err := cc.Token(e.ctx())
	if err != nil {
		t.Fatalf("clientcredentials Token() error: %v", err)
	}
	if tok.AccessToken == "" {
		t.Fatal("no access token")
	}

	// Without the form-urlencoding the same secret does not match.
	raw := e.postRawBasic(t, ccForm(nil), base64.StdEncoding.EncodeToString([]byte(tConf+":"+tSecret)))
	if raw.status != http.StatusUnauthorized || raw.str("error") != "invalid_client" {
		t.Errorf("unencoded Basic credentials = %d %s, want 401 invalid_client", raw.status, raw.raw)
	}
	if raw.header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
}

func (e *testEnv) postRawBasic(t *testing.T, form url.Values, basicB64 string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.iss.endpoint(pathToken), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+basicB64)
	return e.do(t, req)
}

func TestClientAuthenticationMethods(t *testing.T) {
	e := newTokEnv(t)
	tests := []struct {
		name       string
		form       url.Values
		basic      string
		wantStatus int
		wantCode   string
	}{
		{name: "basic", basic: tConf + ":" + tSecret, wantStatus: 200},
		{name: "post", form: url.Values{"client_id": {tPost}, "client_secret": {tSecret2}}, wantStatus: 200},
		// RFC 7591 section 2: the method registered is the one used.
		{name: "post for a basic client", form: url.Values{"client_id": {tConf}, "client_secret": {tSecret}}, wantStatus: 401, wantCode: "invalid_client"},
		{name: "basic for a post client", basic: tPost + ":" + tSecret2, wantStatus: 401, wantCode: "invalid_client"},
		{name: "two methods", form: url.Values{"client_id": {tPost}, "client_secret": {tSecret2}}, basic: tConf + ":" + tSecret, wantStatus: 400, wantCode: "invalid_request"},
		{name: "basic and assertion", form: url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {"x"}}, basic: tConf + ":" + tSecret, wantStatus: 400, wantCode: "invalid_request"},
		{name: "client_id differs from basic", form: url.Values{"client_id": {tPost}}, basic: tConf + ":" + tSecret, wantStatus: 401, wantCode: "invalid_client"},
		{name: "wrong secret", basic: tConf + ":nope", wantStatus: 401, wantCode: "invalid_client"},
		{name: "sha256 secret wrong", form: url.Values{"client_id": {tPost}, "client_secret": {"nope"}}, wantStatus: 401, wantCode: "invalid_client"},
		{name: "unknown client", basic: "ghost:" + tSecret, wantStatus: 401, wantCode: "invalid_client"},
		{name: "secret for a public client", form: url.Values{"client_id": {tPublic}, "client_secret": {"x"}}, wantStatus: 401, wantCode: "invalid_client"},
		{name: "no authentication", wantStatus: 401, wantCode: "invalid_client"},
		{name: "secret for a private_key_jwt client", form: url.Values{"client_id": {tJWT}, "client_secret": {"x"}}, wantStatus: 401, wantCode: "invalid_client"},
		// RFC 6749 section 3.2: a parameter without a value is omitted.
		{name: "basic and an empty client_secret", form: url.Values{"client_secret": {""}}, basic: tConf + ":" + tSecret, wantStatus: 200},
		{name: "post and an empty client_assertion_type", form: url.Values{"client_id": {tPost}, "client_secret": {tSecret2}, "client_assertion_type": {""}}, wantStatus: 200},
		{name: "empty client_secret alone", form: url.Values{"client_id": {tPost}, "client_secret": {""}}, wantStatus: 401, wantCode: "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.iss.limiter = newLimiter(e.clock.Now, nil, nil)
			a := e.post(t, pathToken, ccForm(tt.form), tt.basic)
			if a.status != tt.wantStatus || a.str("error") != tt.wantCode {
				t.Fatalf("token = %d %s, want %d %q", a.status, a.raw, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

// TestClientSecretMethodEnforced: a client authenticates at the token,
// PAR, revocation and introspection endpoints only with the secret method
// it registered (RFC 7591 section 2), 401 invalid_client otherwise, with
// a Basic challenge (RFC 6749 section 5.2). Its secret is not checked and
// the refusal not counted as a failure: golang.org/x/oauth2's
// AuthStyleAutoDetect tries the header first, then the form, and a
// client it drives would otherwise slow itself down. Agents register no
// method and may use either.
func TestClientSecretMethodEnforced(t *testing.T) {
	e := newTokEnv(t)
	byBasic := func(id, secret string) (url.Values, string) { return nil, id + ":" + secret }
	byPost := func(id, secret string) (url.Values, string) {
		return url.Values{"client_id": {id}, "client_secret": {secret}}, ""
	}
	type send func(id, secret string) (url.Values, string)
	for _, path := range []string{pathToken, pathPAR, pathRevoke, pathIntrospect} {
		form := map[string]url.Values{
			pathToken:      ccForm(nil),
			pathPAR:        {"response_type": {"code"}, "redirect_uri": {tRedirect}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"}, "resource": {tResource}},
			pathRevoke:     {"token": {"not-a-token"}},
			pathIntrospect: {"token": {"not-a-token"}},
		}[path]
		for _, tt := range []struct {
			name, id, secret string
			send             send
			refused          bool
		}{
			{"basic client, basic", tConf, tSecret, byBasic, false},
			{"basic client, post", tConf, tSecret, byPost, true},
			{"post client, post", tPost, tSecret2, byPost, false},
			{"post client, basic", tPost, tSecret2, byBasic, true},
			{"agent, basic", tAgent1, tAgentSecret, byBasic, false},
			{"agent, post", tAgent1, tAgentSecret, byPost, false},
		} {
			t.Run(strings.TrimPrefix(path, "/")+" "+tt.name, func(t *testing.T) {
				e.iss.limiter = newLimiter(e.clock.Now, nil, nil)
				extra, basic := tt.send(tt.id, tt.secret)
				f := url.Values{}
				for k, v := range form {
					f[k] = v
				}
				for k, v := range extra {
					f[k] = v
				}
				a := e.post(t, path, f, basic)
				if !tt.refused {
					if a.status == http.StatusUnauthorized || a.status == http.StatusTooManyRequests {
						t.Fatalf("%s = %d %s, want the client authenticated", path, a.status, a.raw)
					}
					return
				}
				if a.status != http.StatusUnauthorized || a.str("error") != "invalid_client" {
					t.Fatalf("%s = %d %s, want 401 invalid_client", path, a.status, a.raw)
				}
				if h := a.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Basic ") {
					t.Errorf("WWW-Authenticate = %q, want a Basic challenge", h)
				}
			})
		}
	}

	// Not counted: many refusals leave the client's own method working
	// from the same address, unslowed.
	e.iss.limiter = newLimiter(e.clock.Now, nil, nil)
	for n := range 3 * limitFreeAddr {
		if a := e.post(t, pathToken, ccForm(nil), tPost+":"+tSecret2); a.status != http.StatusUnauthorized {
			t.Fatalf("refusal %d = %d %s, want 401", n, a.status, a.raw)
		}
	}
	if a := e.post(t, pathToken, ccForm(url.Values{"client_id": {tPost}, "client_secret": {tSecret2}}), ""); a.status != http.StatusOK {
		t.Fatalf("post after basic refusals = %d %s, want 200", a.status, a.raw)
	}

	// A self-registered client: RFC 7591's default is client_secret_basic,
	// which the registration answers.
	for _, tt := range []struct{ method, want string }{{"", authClientSecretBasic}, {authClientSecretPost, authClientSecretPost}} {
		body := `{"redirect_uris":["` + tRedirect + `"]`
		if tt.method != "" {
			body += `,"token_endpoint_auth_method":"` + tt.method + `"`
		}
		resp, reg := e.register(t, body+"}")
		id, _ := reg["client_id"].(string)
		secret, _ := reg["client_secret"].(string)
		if resp.StatusCode != http.StatusCreated || reg["token_endpoint_auth_method"] != tt.want || secret == "" {
			t.Fatalf("register %s = %d %v, want 201 with a secret and method %s", body, resp.StatusCode, reg, tt.want)
		}
		revoke := url.Values{"token": {"not-a-token"}}
		post := url.Values{"token": {"not-a-token"}, "client_id": {id}, "client_secret": {secret}}
		basicStatus, postStatus := e.post(t, pathRevoke, revoke, id+":"+secret).status, e.post(t, pathRevoke, post, "").status
		want := map[string][2]int{authClientSecretBasic: {200, 401}, authClientSecretPost: {401, 200}}[tt.want]
		if basicStatus != want[0] || postStatus != want[1] {
			t.Errorf("DCR client (%s): revoke with basic, post = %d, %d; want %d, %d", tt.want, basicStatus, postStatus, want[0], want[1])
		}
	}

	// x/oauth2's AuthStyleAutoDetect finds each client's method.
	for _, c := range []struct{ id, secret string }{{tConf, tSecret}, {tPost, tSecret2}} {
		cc := clientcredentials.Config{
			ClientID: c.id, ClientSecret: c.secret, TokenURL: e.iss.endpoint(pathToken),
			EndpointParams: url.Values{"resource": {tResource}}, AuthStyle: oauth2.AuthStyleAutoDetect,
		}
		if _, err := cc.Token(e.ctx()); err != nil {
			t.Errorf("%s: clientcredentials Token() with AuthStyleAutoDetect: %v", c.id, err)
		}
	}
}

func TestPrivateKeyJWT(t *testing.T) {
	e := newTokEnv(t)
	send := func(assertion string, extra url.Values) answer {
		f := ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {assertion}})
		for k, v := range extra {
			f[k] = v
		}
		return e.post(t, pathToken, f, "")
	}

	good := e.clientAssertion(t, nil)
	if a := send(good, nil); a.status != 200 {
		t.Fatalf("private_key_jwt = %d %s, want 200", a.status, a.raw)
	}
	if a := send(good, nil); a.status != 401 || a.str("error") != "invalid_client" {
		t.Errorf("replayed assertion = %d %s, want invalid_client", a.status, a.raw)
	}

	other := jwtOtherKey(t)
	tests := []struct {
		name   string
		mutate func(jwt.MapClaims, *jwt.Token)
		sign   func(*jwt.Token) (string, error)
		extra  url.Values
		ok     bool
	}{
		{name: "aud is the issuer", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = e.iss.URL() }, ok: true},
		{name: "aud is the issuer in a list", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = []string{e.iss.URL()} }, ok: true},
		{name: "aud list with another server", mutate: func(c jwt.MapClaims, _ *jwt.Token) {
			c["aud"] = []string{"https://as.example.com", e.iss.endpoint(pathToken)}
		}},
		{name: "aud list of the issuer and the endpoint", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = []string{e.iss.URL(), e.iss.endpoint(pathToken)} }},
		{name: "aud is another endpoint", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = e.iss.endpoint(pathRevoke) }},
		{name: "matching client_id param", extra: url.Values{"client_id": {tJWT}}, ok: true},
		{name: "no kid", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { delete(tk.Header, "kid") }, ok: true},
		{name: "wrong aud", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = "https://elsewhere.example.com/token" }},
		{name: "no aud", mutate: func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "aud") }},
		{name: "iss differs from sub", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["iss"] = tConf }},
		{name: "sub of another client", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["sub"], c["iss"] = tConf, tConf }},
		{name: "expired", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = e.clock.Now().Add(-time.Hour).Unix() }},
		{name: "no exp", mutate: func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "exp") }},
		{name: "lives too long", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = e.clock.Now().Add(3 * time.Hour).Unix() }},
		// README (Limits: Unauthenticated writes): an assertion is kept
		// until it expires, "up to an hour", written out.
		{name: "lives an hour", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = e.clock.Now().Add(time.Hour).Unix() }, ok: true},
		{name: "lives an hour and a second", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["exp"] = e.clock.Now().Add(time.Hour + time.Second).Unix() }},
		{name: "no jti", mutate: func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "jti") }},
		// Issued in the future: only within the leeway of exp and nbf.
		{name: "iat within the clock skew ahead", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["iat"] = e.clock.Now().Add(20 * time.Second).Unix() }, ok: true},
		{name: "iat in the future", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["iat"] = e.clock.Now().Add(10 * time.Minute).Unix() }},
		{name: "iat an hour ahead", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["iat"] = e.clock.Now().Add(59 * time.Minute).Unix() }},
		{name: "no iat", mutate: func(c jwt.MapClaims, _ *jwt.Token) { delete(c, "iat") }, ok: true},
		{name: "nbf in the future", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["nbf"] = e.clock.Now().Add(10 * time.Minute).Unix() }},
		// Explicit typing (RFC 8725 section 3.11): no typ, JWT, or the
		// client authentication type of draft-ietf-oauth-rfc7523bis; a
		// JWT typed as another kind is not a client assertion.
		{name: "typ JWT", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = "JWT" }, ok: true},
		{name: "no typ", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { delete(tk.Header, "typ") }, ok: true},
		// A client that types its assertion client-authentication+jwt
		// follows draft-ietf-oauth-rfc7523bis, which has the issuer
		// identifier as the sole aud: the endpoint URLs older clients
		// may send are refused for it (the audience injection the draft
		// closes).
		{name: "typ client-authentication+jwt", mutate: func(c jwt.MapClaims, tk *jwt.Token) {
			tk.Header["typ"], c["aud"] = "client-authentication+jwt", e.iss.URL()
		}, ok: true},
		{name: "typ application/client-authentication+jwt", mutate: func(c jwt.MapClaims, tk *jwt.Token) {
			tk.Header["typ"], c["aud"] = "application/Client-Authentication+JWT", []string{e.iss.URL()}
		}, ok: true},
		{name: "typ client-authentication+jwt, aud the token endpoint", mutate: func(c jwt.MapClaims, tk *jwt.Token) {
			tk.Header["typ"], c["aud"] = "client-authentication+jwt", e.iss.endpoint(pathToken)
		}},
		{name: "typ client-authentication+jwt, aud the endpoint it went to", mutate: func(c jwt.MapClaims, tk *jwt.Token) {
			tk.Header["typ"], c["aud"] = "application/client-authentication+jwt", e.iss.endpoint(pathToken)
		}},
		{name: "typ at+jwt", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = "at+jwt" }},
		{name: "typ application/at+jwt", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = "application/at+jwt" }},
		{name: "typ dpop+jwt", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = "dpop+jwt" }},
		{name: "typ oauth-id-jag+jwt", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = "oauth-id-jag+jwt" }},
		{name: "typ logout+JWT", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = "logout+JWT" }},
		{name: "typ at+jwt with a parameter", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = "at+jwt; v=1" }},
		{name: "typ at+jwt with a space", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = " at+jwt " }},
		{name: "typ client-authentication+jwt with a parameter, aud the token endpoint", mutate: func(c jwt.MapClaims, tk *jwt.Token) {
			tk.Header["typ"], c["aud"] = "client-authentication+jwt; v=1", e.iss.endpoint(pathToken)
		}},
		{name: "typ client-authentication+jwt with a parameter, aud the issuer", mutate: func(c jwt.MapClaims, tk *jwt.Token) {
			tk.Header["typ"], c["aud"] = "client-authentication+jwt ;v=1", e.iss.URL()
		}, ok: true},
		{name: "typ not a string", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["typ"] = 7 }},
		// Kept in the store: bounded (review s13-cluster F2).
		{name: "jti too long", mutate: func(c jwt.MapClaims, _ *jwt.Token) { c["jti"] = strings.Repeat("j", maxJTILen+1) }},
		{name: "crit header", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["crit"] = []string{"x-ext"}; tk.Header["x-ext"] = true }},
		{name: "unknown kid", mutate: func(_ jwt.MapClaims, tk *jwt.Token) { tk.Header["kid"] = "k9" }},
		{name: "client_id param differs", extra: url.Values{"client_id": {tConf}}},
		{name: "wrong assertion type", extra: url.Values{"client_assertion_type": {"urn:other"}}},
		{name: "signed by another key", sign: func(tk *jwt.Token) (string, error) { return tk.SignedString(other) }},
		{name: "alg none", sign: func(tk *jwt.Token) (string, error) {
			tk.Method = jwt.SigningMethodNone
			tk.Header["alg"] = "none"
			return tk.SignedString(jwt.UnsafeAllowNoneSignatureType)
		}},
		// A member named twice, or in two cases: readers disagree on
		// which counts (before: the last, here).
		{name: "sub twice", mutate: func(c jwt.MapClaims, tk *jwt.Token) { tk.Claims = twice{c, "sub", `"` + tConf + `"`} }},
		{name: "aud twice", mutate: func(c jwt.MapClaims, tk *jwt.Token) {
			tk.Claims = twice{c, "aud", `"https://elsewhere.example.com/token"`}
		}},
		{name: "jti in another case", mutate: func(c jwt.MapClaims, tk *jwt.Token) { tk.Claims = twice{c, "JTI", `"x"`} }},
		{name: "kid twice", sign: func(tk *jwt.Token) (string, error) { return signHeaderTwice(t, tk, e.jwtKey, "kid", `"k9"`), nil }},
		{name: "alg twice", sign: func(tk *jwt.Token) (string, error) { return signHeaderTwice(t, tk, e.jwtKey, "alg", `"none"`), nil }},
		{name: "HS256 keyed with the public key", sign: func(tk *jwt.Token) (string, error) {
			pub, _ := publicJWK(e.jwtKey.Public())
			b, _ := json.Marshal(pub)
			tk.Method = jwt.SigningMethodHS256
			tk.Header["alg"] = "HS256"
			return tk.SignedString(b)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw string
			if tt.sign != nil {
				now := e.clock.Now()
				tk := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": tJWT, "sub": tJWT,
					"aud": e.iss.endpoint(pathToken), "exp": now.Add(time.Minute).Unix(), "jti": rand.Text()})
				tk.Header["kid"] = "k1"
				var err error
				if raw, err = tt.sign(tk); err != nil {
					t.Fatal(err)
				}
			} else {
				raw = e.clientAssertion(t, tt.mutate)
			}
			e.iss.limiter = newLimiter(e.clock.Now, nil, nil) // judge the check, not the slow-down
			a := send(raw, tt.extra)
			if tt.ok != (a.status == 200) || (!tt.ok && (a.status != 401 || a.str("error") != "invalid_client")) {
				t.Fatalf("private_key_jwt = %d %s, want ok = %v (else 401 invalid_client)", a.status, a.raw, tt.ok)
			}
		})
	}
	// At another endpoint, its own URL is an accepted aud too (RFC 9126
	// says so for PAR); the token endpoint's still is.
	for _, aud := range []string{e.iss.endpoint(pathRevoke), e.iss.endpoint(pathToken), e.iss.URL()} {
		raw := e.clientAssertion(t, func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = aud })
		a := e.post(t, pathRevoke, url.Values{"token": {"unknown"}, "client_assertion_type": {jwtBearerAssertion}, "client_assertion": {raw}}, "")
		if a.status != 200 {
			t.Errorf("revoke with aud %s = %d %s, want 200", aud, a.status, a.raw)
		}
	}
	// An assertion typed client-authentication+jwt names the issuer
	// identifier at every endpoint, never the endpoint's own URL.
	for _, path := range []string{pathPAR, pathRevoke, pathIntrospect} {
		form := map[string]url.Values{
			pathPAR:        parForm(url.Values{"client_id": {tJWT}}),
			pathRevoke:     {"token": {"unknown"}},
			pathIntrospect: {"token": {"unknown"}},
		}[path]
		for _, aud := range []any{e.iss.endpoint(path), e.iss.URL() + "/", e.iss.URL(), []string{e.iss.URL()}} {
			e.iss.limiter = newLimiter(e.clock.Now, nil, nil)
			raw := e.clientAssertion(t, func(c jwt.MapClaims, tk *jwt.Token) {
				tk.Header["typ"], c["aud"] = "application/client-authentication+jwt", aud
			})
			f := url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {raw}}
			for k, v := range form {
				f[k] = v
			}
			a := e.post(t, path, f, "")
			ok := aud != e.iss.endpoint(path) && aud != e.iss.URL()+"/"
			if ok != (a.status/100 == 2) || (!ok && (a.status != 401 || a.str("error") != "invalid_client")) {
				t.Errorf("%s with a typed assertion, aud %v = %d %s, want ok = %v (else 401 invalid_client)", path, aud, a.status, a.raw, ok)
			}
		}
	}
}

// TestPrivateKeyJWTRefusedRequestKeepsIt: a request refused after its
// client authenticated (for something the client can fix: a DPoP nonce,
// the grant type, a scope, a missing parameter) does not spend its client
// assertion, at any endpoint: the corrected retry authenticates with it,
// and the request that succeeds spends it.
func TestPrivateKeyJWTRefusedRequestKeepsIt(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.DPoPNonce = true })
	k := newDPoPKey(t)
	tokenURL := e.iss.endpoint(pathToken)
	withAssertion := func(aud string, f url.Values) url.Values {
		f.Set("client_assertion_type", jwtBearerAssertion)
		f.Set("client_assertion", e.clientAssertion(t, func(c jwt.MapClaims, _ *jwt.Token) { c["aud"] = aud }))
		return f
	}
	cc := func(extra url.Values) url.Values { return withAssertion(tokenURL, ccForm(extra)) }
	par := func(extra url.Values) url.Values {
		return withAssertion(e.iss.endpoint(pathPAR), parForm(url.Values{"client_id": {tJWT}, "resource": extra["resource"]}))
	}
	for _, tt := range []struct {
		name    string
		path    string
		refused url.Values
		proof   string // of the refused request
		error   string // of the refused request
		fix     func(f url.Values) (proof string)
		want    int
	}{
		{name: "unsupported grant type", path: pathToken, refused: cc(url.Values{"grant_type": {"bogus"}}), error: "unsupported_grant_type",
			fix: func(f url.Values) string { f.Set("grant_type", grantClientCredentials); return "" }, want: 200},
		{name: "DPoP nonce", path: pathToken, refused: cc(nil), proof: k.proof(t, e, tokenURL, nil), error: "use_dpop_nonce",
			fix: func(url.Values) string {
				nonce := e.iss.proofs.Nonces().Current(e.clock.Now())
				return k.proof(t, e, tokenURL, jwt.MapClaims{"nonce": nonce})
			}, want: 200},
		{name: "scope", path: pathToken, refused: cc(url.Values{"scope": {"nope"}}), error: "invalid_scope",
			fix: func(f url.Values) string { f.Del("scope"); return "" }, want: 200},
		{name: "pushed request", path: pathPAR, refused: par(url.Values{"resource": {"https://nope.example.com/"}}), error: "invalid_target",
			fix: func(f url.Values) string { f.Set("resource", tResource); return "" }, want: 201},
		{name: "revocation", path: pathRevoke, refused: withAssertion(e.iss.endpoint(pathRevoke), url.Values{}), error: "invalid_request",
			fix: func(f url.Values) string { f.Set("token", "unknown"); return "" }, want: 200},
		{name: "introspection", path: pathIntrospect, refused: withAssertion(e.iss.endpoint(pathIntrospect), url.Values{}), error: "invalid_request",
			fix: func(f url.Values) string { f.Set("token", "unknown"); return "" }, want: 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.refused
			if a := e.postDPoP(t, tt.path, f, "", tt.proof); a.status != http.StatusBadRequest || a.str("error") != tt.error {
				t.Fatalf("refused request = %d %s, want 400 %s", a.status, a.raw, tt.error)
			}
			if a := e.postDPoP(t, tt.path, f, "", tt.fix(f)); a.status != tt.want {
				t.Fatalf("corrected retry with the same assertion = %d %s, want %d", a.status, a.raw, tt.want)
			}
			a := e.postDPoP(t, tt.path, f, "", tt.fix(f))
			if a.status != http.StatusUnauthorized || a.str("error") != "invalid_client" {
				t.Errorf("the assertion again = %d %s, want 401 invalid_client", a.status, a.raw)
			}
		})
	}
}

// TestPrivateKeyJWTSpentOnce: of concurrent token requests with one
// client assertion one gets a token; the assertion is spent in the
// transaction that records the token, so a request that passed every
// check before another recorded is refused too, and writes nothing.
func TestPrivateKeyJWTSpentOnce(t *testing.T) {
	e := newTokEnv(t)
	f := ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {e.clientAssertion(t, nil)}})
	const n = 8
	answers := make(chan answer, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers <- e.post(t, pathToken, f, "")
		}()
	}
	wg.Wait()
	close(answers)
	ok := 0
	for a := range answers {
		switch {
		case a.status == http.StatusOK:
			ok++
		case a.status != http.StatusUnauthorized || a.str("error") != "invalid_client":
			t.Errorf("a losing request = %d %s, want 401 invalid_client", a.status, a.raw)
		}
	}
	if ok != 1 || e.count(bucketGrants) != 1 {
		t.Errorf("%d of %d concurrent requests got a token, %d grants; want 1", ok, n, e.count(bucketGrants))
	}

	f.Set("client_assertion", e.clientAssertion(t, nil))
	var inner answer
	e.iss.mint.beforeRecord = func() {
		e.iss.mint.beforeRecord = nil
		inner = e.post(t, pathToken, f, "")
	}
	outer := e.post(t, pathToken, f, "")
	if inner.status != http.StatusOK {
		t.Errorf("request recorded first = %d %s, want 200", inner.status, inner.raw)
	}
	if outer.status != http.StatusUnauthorized || outer.str("error") != "invalid_client" {
		t.Errorf("request recorded second = %d %s, want 401 invalid_client", outer.status, outer.raw)
	}
	if n := e.count(bucketGrants); n != 2 {
		t.Errorf("grants = %d, want 2", n)
	}
}

func jwtOtherKey(t *testing.T) any {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPrivateKeyJWTFromJWKSURI(t *testing.T) {
	var jwks atomic.Pointer[[]byte]
	var fetches atomic.Int32
	keys := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*jwks.Load())
	}))
	defer keys.Close()
	e := newTokEnv(t, func(c *Config) { c.HTTPClient = keys.Client(); c.CIMDAllowPrivate = true })
	pub, _ := publicJWK(e.jwtKey.Public())
	pub.Kid = "k1"
	b, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	jwks.Store(&b)
	err := e.iss.PutClient(t.Context(), Client{ID: "remote", JWKSURI: keys.URL + "/jwks.json",
		GrantTypes: []string{"client_credentials"}})
	if err != nil {
		t.Fatal(err)
	}
	assertion := func() string {
		return e.clientAssertion(t, func(c jwt.MapClaims, _ *jwt.Token) { c["iss"], c["sub"] = "remote", "remote" })
	}
	for n := range 2 {
		a := e.post(t, pathToken, ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {assertion()}}), "")
		if a.status != 200 {
			t.Fatalf("attempt %d: private_key_jwt via jwks_uri = %d %s, want 200", n, a.status, a.raw)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("jwks_uri fetched %d times, want 1 (cached)", n)
	}
	// A rotated client key: the unknown kid triggers one refetch, at most
	// one per jwksMinRefetch (made-up kids cannot make us fetch at will).
	pub.Kid = "k2"
	b, _ = json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	jwks.Store(&b)
	rotated := func() answer {
		return e.post(t, pathToken, ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion},
			"client_assertion": {e.clientAssertion(t, func(c jwt.MapClaims, tk *jwt.Token) {
				c["iss"], c["sub"] = "remote", "remote"
				tk.Header["kid"] = "k2"
			})}}), "")
	}
	if a, n := rotated(), fetches.Load(); a.status != 401 || n != 1 {
		t.Errorf("rotated key within %v of the fetch = %d %s with %d fetches, want 401 with 1", jwksMinRefetch, a.status, a.raw, n)
	}
	e.clock.Advance(jwksMinRefetch)
	if a, n := rotated(), fetches.Load(); a.status != 200 || n != 2 {
		t.Errorf("after client key rotation = %d %s with %d fetches, want 200 with 2", a.status, a.raw, n)
	}
}

// TestPrivateKeyJWTConcurrentFetchOnce: token requests that arrive
// together for a client whose JWK Set is not cached make one fetch of its
// jwks_uri, which they all wait for. Anyone may name a jwks_uri (a Client
// ID Metadata Document's): each request fetched it for itself, so a burst
// of assertions sent the issuer's fetches to that URL (another's server,
// or a slow one holding them to the timeout) as many at once.
func TestPrivateKeyJWTConcurrentFetchOnce(t *testing.T) {
	var fetches atomic.Int32
	release := make(chan struct{})
	var b []byte
	keys := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	}))
	defer keys.Close()
	e := newTokEnv(t, func(c *Config) { c.HTTPClient = keys.Client(); c.CIMDAllowPrivate = true })
	pub, _ := publicJWK(e.jwtKey.Public())
	pub.Kid = "k1"
	b, _ = json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	if err := e.iss.PutClient(t.Context(), Client{ID: "remote", JWKSURI: keys.URL + "/jwks.json",
		GrantTypes: []string{"client_credentials"}}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	forms := make([]url.Values, n)
	for k := range forms {
		forms[k] = ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {e.clientAssertion(t,
			func(c jwt.MapClaims, _ *jwt.Token) { c["iss"], c["sub"] = "remote", "remote" })}})
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for k := range forms {
		wg.Go(func() { answers[k] = e.post(t, pathToken, forms[k], "") })
	}
	// Every request has had the time to reach the fetch before the JWK
	// Set comes.
	time.Sleep(300 * time.Millisecond)
	close(release)
	wg.Wait()
	for k, a := range answers {
		if a.status != http.StatusOK {
			t.Errorf("request %d = %d %s, want 200", k, a.status, a.raw)
		}
	}
	if got := fetches.Load(); got != 1 {
		t.Errorf("%d concurrent requests fetched the jwks_uri %d times, want 1", n, got)
	}
}

func TestClientAuthRateLimited(t *testing.T) {
	e := newTokEnv(t)
	for n := range limitFreePair + 1 {
		if a := e.post(t, pathToken, ccForm(nil), tConf+":wrong"); a.status != http.StatusUnauthorized {
			t.Fatalf("failure %d = %d %s, want 401", n, a.status, a.raw)
		}
	}
	// Now blocked from this address, even with the right secret.
	a := e.post(t, pathToken, ccForm(nil), tConf+":"+tSecret)
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") != "1" {
		t.Fatalf("while slowed = %d Retry-After %q (%s), want 429 with Retry-After 1", a.status, a.header.Get("Retry-After"), a.raw)
	}
	// Other clients from the same address are not affected yet.
	if a := e.post(t, pathToken, ccForm(nil), tOnlyCC+":"+tSecret); a.status != 200 {
		t.Fatalf("another client = %d %s, want 200", a.status, a.raw)
	}
	e.clock.Advance(2 * time.Second)
	if a := e.post(t, pathToken, ccForm(nil), tConf+":"+tSecret); a.status != 200 {
		t.Fatalf("after the delay = %d %s, want 200", a.status, a.raw)
	}
}

// TestPrivateKeyJWTFailuresCountPerAddress: forged assertions for a
// private_key_jwt client block the address that sends them, never the
// client (a signature cannot be guessed).
func TestPrivateKeyJWTFailuresCountPerAddress(t *testing.T) {
	e := newTokEnv(t)
	other := jwtOtherKey(t)
	forged := func() url.Values {
		now := e.clock.Now()
		tk := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"iss": tJWT, "sub": tJWT,
			"aud": e.iss.URL(), "exp": now.Add(time.Minute).Unix(), "jti": rand.Text()})
		raw, err := tk.SignedString(other)
		if err != nil {
			t.Fatal(err)
		}
		return ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {raw}})
	}
	attacker, client := "203.0.113.9:4000", "198.51.100.7:4000"
	blocked := false
	for range 3 * limitFreeAddr {
		if code := e.serveFrom(t, attacker, forged()); code == http.StatusTooManyRequests {
			blocked = true
		}
	}
	if !blocked {
		t.Errorf("forged assertions from one address: never 429, want the address blocked")
	}
	good := ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {e.clientAssertion(t, nil)}})
	if code := e.serveFrom(t, client, good); code != http.StatusOK {
		t.Errorf("the client from its own address after forged assertions = %d, want 200", code)
	}
}

// serveFrom posts form to the token endpoint as if from remote (the
// issuer's own handler: httptest servers are all on one address).
func (e *testEnv) serveFrom(t *testing.T, remote string, form url.Values) int {
	t.Helper()
	return e.postFrom(remote, pathToken, form).Code
}

// postFrom posts form to an endpoint path as if from remote.
func (e *testEnv) postFrom(remote, path string, form url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, e.iss.endpoint(path), strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	e.iss.ServeHTTP(w, r)
	return w
}

// TestLimiter runs on both places the limiter keeps its scores: this
// process's memory, and a store (a memory store that runs every Update
// twice, as PostgreSQL may; TestLimitsSharedAcrossInstances runs two
// issuers on PostgreSQL).
func TestLimiter(t *testing.T) {
	for _, inStore := range []bool{false, true} {
		t.Run(fmt.Sprintf("store=%v", inStore), func(t *testing.T) {
			clock := storetest.NewClock(time.Unix(1e9, 0))
			var c counters
			if inStore {
				c = storeCounters{memory.New(memory.Options{Now: clock.Now, RunTwice: true}), limitsBruteForce}
			}
			testLimiter(t, clock, newLimiter(clock.Now, c, nil))
		})
	}
}

func testLimiter(t *testing.T, clock *storetest.Clock, l *limiter) {
	ctx := t.Context()
	const acct, addr, other = "client:x", "192.0.2.1", "198.51.100.7"
	fail := func(n int, from string) {
		for range n {
			l.recordFailure(ctx, acct, from)
		}
	}
	delay := func(account, from string) time.Duration {
		t.Helper()
		d, err := l.attemptDelay(ctx, account, from)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	slowness := func() time.Duration {
		t.Helper()
		d, err := l.accountSlowness(ctx, acct)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	fail(limitFreePair, addr)
	if d := delay(acct, addr); d != 0 {
		t.Fatalf("attemptDelay after the free failures = %v, want 0", d)
	}
	fail(4, addr)
	if d := delay(acct, addr); d != 8*time.Second {
		t.Fatalf("attemptDelay after 4 failures past the free ones = %v, want 8s (doubling)", d)
	}
	fail(30, addr)
	if d := delay(acct, addr); d != limitMaxDelay {
		t.Fatalf("attemptDelay after many failures = %v, want the cap %v", d, limitMaxDelay)
	}
	// The account itself is never blocked elsewhere, only slowed, and
	// by no more than limitMaxSlow.
	if d := delay(acct, other); d != 0 {
		t.Fatalf("attemptDelay from another address = %v, want 0", d)
	}
	if d := slowness(); d != limitMaxSlow {
		t.Fatalf("accountSlowness after many failures = %v, want %v", d, limitMaxSlow)
	}
	// A quiet period forgives: no permanent lockout.
	clock.Advance(3 * time.Hour)
	if d := delay(acct, addr); d != 0 {
		t.Fatalf("attemptDelay after 3 quiet hours = %v, want 0", d)
	}
	if d := slowness(); d != 0 {
		t.Fatalf("accountSlowness after 3 quiet hours = %v, want 0", d)
	}
	fail(1, addr)
	if d := delay(acct, addr); d != 0 {
		t.Fatalf("attemptDelay for one failure after decay = %v, want 0", d)
	}
	// The address has its own, higher budget, over all accounts.
	for range limitFreeAddr + 1 {
		l.recordFailure(ctx, "", addr)
	}
	if d := delay("client:other", addr); d == 0 {
		t.Fatal("attemptDelay for a slowed address = 0, want a delay")
	}
	l.attemptSucceeded(ctx, acct, addr, time.Time{}) // nothing was in flight
	if d := delay("client:y", addr); d == 0 {
		t.Fatal("a success for one account reset the address, want it kept")
	}
	testInFlight(t, clock, l)
}

// testInFlight: a pair admits as many checks in flight as it has
// failures left before a block; a success frees a slot, failures end in
// a block, and settled attempts leave no in-flight count.
func testInFlight(t *testing.T, clock *storetest.Clock, l *limiter) {
	ctx := t.Context()
	clock.Advance(24 * time.Hour)
	const acct, addr = "client:z", "203.0.113.50"
	var gens []time.Time
	try := func() (time.Duration, bool) {
		t.Helper()
		d, gen, room, err := l.tryReserve(ctx, acct, addr)
		if err != nil {
			t.Fatal(err)
		}
		if room {
			gens = append(gens, gen)
		}
		return d, room
	}
	settle := func(f func(context.Context, string, string, time.Time)) {
		t.Helper()
		if len(gens) == 0 {
			t.Fatal("no attempt in flight to settle")
		}
		f(ctx, acct, addr, gens[0])
		gens = gens[1:]
	}
	for k := range limitFreePair + 1 {
		if d, room := try(); d != 0 || !room {
			t.Fatalf("check %d in flight = %v, %v; want admitted", k+1, d, room)
		}
	}
	if d, room := try(); d != 0 || room {
		t.Fatalf("check past the budget in flight = %v, %v; want to wait for room", d, room)
	}
	waits := 0
	l.pause = func(context.Context, time.Duration) error { waits++; return nil }
	if _, _, err := l.reserveAttempt(ctx, acct, addr); !errors.Is(err, errHashBusy) || waits == 0 {
		t.Fatalf("reserveAttempt with no room = %v after %d waits, want errHashBusy after waiting", err, waits)
	}
	settle(l.attemptSucceeded)
	if d, room := try(); d != 0 || !room {
		t.Fatalf("check after a success settled = %v, %v; want admitted", d, room)
	}
	for range limitFreePair + 1 {
		settle(l.attemptFailed)
	}
	if d, room := try(); d == 0 || room {
		t.Fatalf("check after the budget failed = %v, %v; want a block", d, room)
	}
	err := l.c.run(ctx, false, func(tx counterTx) error {
		for _, b := range budgets(acct, addr) {
			if n := inFlight(tx, b.key, clock.Now()); n != 0 {
				t.Errorf("in flight under %q after all settled = %v, want 0", b.key, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestClientAddr(t *testing.T) {
	for _, tt := range []struct{ remote, want string }{
		{"192.0.2.1:1234", "192.0.2.1"},
		{"[2001:db8::1]:443", "2001:db8::/56"},
		{"[2001:db8::ffff:1]:443", "2001:db8::/56"},
		{"[2001:db8:0:ff::1]:443", "2001:db8::/56"},
		{"[2001:db8:0:100::1]:443", "2001:db8:0:100::/56"},
		{"[::ffff:192.0.2.1]:1", "192.0.2.1"},
		{"[64:ff9b::c000:201]:1", "192.0.2.1"},                    // NAT64 / SIIT, RFC 6052's well-known prefix
		{"[64:ff9b::c000:202]:1", "192.0.2.2"},                    // another IPv4 client of the same translator
		{"[64:ff9b:1::c000:201]:1", "64:ff9b:1::/56"},             // a local prefix: where the IPv4 sits is the network's choice
		{"[2002:c000:201:5::1]:1", "192.0.2.1"},                   // 6to4, RFC 3056: the /48 of 192.0.2.1
		{"[2001:0:4136:e378:8000:63bf:3fff:fdfe]:1", "192.0.2.1"}, // Teredo, RFC 4380: the client's address, inverted
		{"[fe80::1%eth0]:1", "fe80::/56"},
		{"[::1]:1", "::/56"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.RemoteAddr = tt.remote
		if got := clientAddr(r); got != tt.want {
			t.Errorf("clientAddr(%q) = %q, want %q", tt.remote, got, tt.want)
		}
	}
}

// TestGeneratedSecretFailuresCountPerAddress: wrong secrets for a client
// whose secret the issuer generated (256 random bits, sha256: stored: a
// self-registered client's) block the addresses that send them, never
// slow the client down: such a secret cannot be guessed, as a signature
// cannot, and anyone who knows the client_id could otherwise make its
// every token, PAR, revocation and introspection request wait
// limitMaxSlow. An operator's bcrypt secret, which may be guessable, still
// slows its client down after failures from anywhere.
func TestGeneratedSecretFailuresCountPerAddress(t *testing.T) {
	e := newTokEnv(t)
	var mu sync.Mutex
	slept := map[string]time.Duration{}
	var current string
	e.iss.limiter.sleep = func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		slept[current] += d
		return nil
	}
	resp, out := e.register(t, `{"client_name":"Service","redirect_uris":["https://app.example.com/cb"]}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d %v", resp.StatusCode, out)
	}
	dcrID, _ := out["client_id"].(string)
	dcrSecret, _ := out["client_secret"].(string)
	revoke := func(remote, id, secret string) int {
		r := httptest.NewRequest(http.MethodPost, e.iss.endpoint(pathRevoke), strings.NewReader("token=not-a-token"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret)) // RFC 6749 section 2.3.1
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		e.iss.ServeHTTP(w, r)
		return w.Code
	}
	for _, tt := range []struct {
		name, id, secret string
		slowed           bool
	}{
		{"generated secret", dcrID, dcrSecret, false},
		{"operator's bcrypt secret", tConf, tSecret, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Each attacker address stays within its free failures, so
			// none of them is blocked.
			for a := range 4 {
				for range limitFreePair {
					if code := revoke(fmt.Sprintf("203.0.113.%d:4000", a+1), tt.id, "wrong"); code != http.StatusUnauthorized {
						t.Fatalf("wrong secret = %d, want 401", code)
					}
				}
			}
			mu.Lock()
			current = tt.id
			mu.Unlock()
			if code := revoke("198.51.100.7:4000", tt.id, tt.secret); code != http.StatusOK {
				t.Fatalf("the client from its own address = %d, want 200", code)
			}
			mu.Lock()
			defer mu.Unlock()
			if got := slept[tt.id] > 0; got != tt.slowed {
				t.Errorf("the client's own request slowed by %v after %d wrong secrets from elsewhere, want slowed %v", slept[tt.id], 4*limitFreePair, tt.slowed)
			}
		})
	}
}

// TestSelfRegisteredAssertionWritesRateLimited: each private_key_jwt
// assertion spent at /revoke or /introspect is a store write kept until
// the assertion expires (up to an hour), and anyone can make such a
// client (a registration or a client metadata document with a key of
// their own), so an address spends them from its budget of writes before
// anyone signs in (anonWriteBurst a minute), as a public client's pushed
// requests are: past it 429, nothing stored. Another address keeps its
// own budget, and an operator's client is not charged.
func TestSelfRegisteredAssertionWritesRateLimited(t *testing.T) {
	e := newTokEnv(t)
	pub, err := publicJWK(e.jwtKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub.Kid = "k1"
	jwks, err := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	if err != nil {
		t.Fatal(err)
	}
	resp, out := e.register(t, `{"redirect_uris":["https://rp.example.com/cb"],"token_endpoint_auth_method":"private_key_jwt","jwks":`+string(jwks)+`}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d %v, want 201", resp.StatusCode, out)
	}
	id := out["client_id"].(string)
	send := func(remote, path, client string) *httptest.ResponseRecorder {
		t.Helper()
		a := e.clientAssertion(t, func(c jwt.MapClaims, _ *jwt.Token) { c["iss"], c["sub"] = client, client })
		return e.postFrom(remote, path, url.Values{"token": {"not-a-token"}, "client_assertion_type": {jwtBearerAssertion}, "client_assertion": {a}})
	}
	before := e.count(bucketJTI)
	for n := range anonWriteBurst {
		path := pathRevoke
		if n%2 == 1 {
			path = pathIntrospect
		}
		if w := send("192.0.2.1:1234", path, id); w.Code != http.StatusOK {
			t.Fatalf("request %d at %s = %d %s, want 200", n, path, w.Code, w.Body)
		}
	}
	for _, path := range []string{pathRevoke, pathIntrospect} {
		w := send("192.0.2.1:1234", path, id)
		if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "temporarily_unavailable") || w.Header().Get("Retry-After") == "" {
			t.Errorf("past the budget, %s = %d %s, want 429 temporarily_unavailable with Retry-After", path, w.Code, w.Body)
		}
	}
	if got := e.count(bucketJTI) - before; got != anonWriteBurst {
		t.Errorf("%d assertions recorded, want %d", got, anonWriteBurst)
	}
	if w := send("198.51.100.1:1234", pathRevoke, id); w.Code != http.StatusOK {
		t.Errorf("from another address: revoke = %d %s, want 200", w.Code, w.Body)
	}
	for n := range anonWriteBurst + 5 {
		if w := send("192.0.2.1:1234", pathRevoke, tJWT); w.Code != http.StatusOK {
			t.Fatalf("configured client, request %d: revoke = %d %s, want 200", n, w.Code, w.Body)
		}
	}
	// Its pushed requests, each an assertion spent, are charged to the
	// address as well as to the client.
	push := func() *httptest.ResponseRecorder {
		a := e.clientAssertion(t, func(c jwt.MapClaims, _ *jwt.Token) { c["iss"], c["sub"] = id, id })
		return e.pushFrom("203.0.113.5:1234", parForm(url.Values{"client_id": {id}, "redirect_uri": {"https://rp.example.com/cb"},
			"scope": nil, "client_assertion_type": {jwtBearerAssertion}, "client_assertion": {a}}))
	}
	for n := range anonWriteBurst {
		if w := push(); w.Code != http.StatusCreated {
			t.Fatalf("push %d = %d %s, want 201", n, w.Code, w.Body)
		}
	}
	if w := push(); w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"slow_down"`) {
		t.Errorf("push past the address's budget = %d %s, want 429 slow_down with Retry-After", w.Code, w.Body)
	}
}

// TestSelfRegisteredAssertionRefreshesRateLimited: a refresh by a
// self-registered private_key_jwt client stores its assertion for up to
// an hour, and a refresh token may be used as often as its holder likes,
// so such refreshes spend the user's writes (userWriteBurst a minute), as
// the user's authorization requests do: past them 429, nothing stored.
func TestSelfRegisteredAssertionRefreshesRateLimited(t *testing.T) {
	e := newTokEnv(t)
	rt, assertion := keyedCIMDRefreshToken(t, e)
	refresh := func() answer {
		return e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
			"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {assertion()}}, "")
	}
	for n := range userWriteBurst {
		a := refresh()
		if a.status != http.StatusOK {
			t.Fatalf("refresh %d = %d %s, want 200", n, a.status, a.raw)
		}
		rt = a.str("refresh_token")
	}
	before := e.count(bucketJTI)
	if a := refresh(); a.status != http.StatusTooManyRequests || a.str("error") != "temporarily_unavailable" || a.header.Get("Retry-After") == "" {
		t.Errorf("refresh past the user's writes = %d %s, want 429 temporarily_unavailable with Retry-After", a.status, a.raw)
	}
	if n := e.count(bucketJTI); n != before {
		t.Errorf("refused refresh stored %d assertions, want none", n-before)
	}
}

// keyedCIMDRefreshToken redeems a code of tUser's for a private_key_jwt
// metadata document client: its refresh token and assertion maker.
func keyedCIMDRefreshToken(t *testing.T, e *testEnv) (string, func() string) {
	t.Helper()
	const id = "https://app.example.com/client.json"
	assertion := e.putKeyedCIMDClient(t, id, "authorization_code", "refresh_token")
	code, verifier := e.issueCode(t, codeSpec{client: id, scopes: []string{"read", "offline_access"}})
	a := e.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {tRedirect}, "client_assertion_type": {jwtBearerAssertion}, "client_assertion": {assertion()}}, "")
	rt := a.str("refresh_token")
	if a.status != http.StatusOK || rt == "" {
		t.Fatalf("code = %d %s, want 200 with a refresh token", a.status, a.raw)
	}
	return rt, assertion
}

// TestSelfRegisteredRefreshesLeaveUserAuthorizing: the refreshes a
// self-registered private_key_jwt client is charged for are bounded per
// user, but apart from the user's authorization requests: an app the
// user once connected (anyone's to make) refreshing in a loop must not
// keep the user from signing in to every other app.
func TestSelfRegisteredRefreshesLeaveUserAuthorizing(t *testing.T) {
	e := newTokEnv(t)
	// The user is signed in, and has connected another app before.
	conf := &oauth2.Config{ClientID: tPublic, RedirectURL: tRedirect, Scopes: []string{"read"},
		Endpoint: oauth2.Endpoint{AuthURL: e.url(pathAuthorize, nil), TokenURL: e.url(pathToken, nil), AuthStyle: oauth2.AuthStyleInParams}}
	start := conf.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("resource", tResource))
	browser := e.browser()
	if _, err := e.robot(browser, start, tRedirect, tUser, tPassword, "approve"); err != nil {
		t.Fatalf("sign-in: %v", err)
	}
	rt, assertion := keyedCIMDRefreshToken(t, e)
	refreshed := 0
	for range userWriteBurst + 1 {
		a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt},
			"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {assertion()}}, "")
		if a.status != http.StatusOK {
			break
		}
		refreshed++
		rt = a.str("refresh_token")
	}
	if refreshed != userWriteBurst {
		t.Errorf("refreshes before 429 = %d, want %d", refreshed, userWriteBurst)
	}
	resp, err := browser.Get(start)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Its consent page (a pending request stored) or a code, not 429.
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pathConsent+"?") && !strings.HasPrefix(loc, tRedirect+"?code=") {
		t.Errorf("the user's authorization of another app after the refreshes = %d %q, want its consent page or a code", resp.StatusCode, loc)
	}
}

// TestSHA256SecretHashAnySecret backs README's `client`: a secret
// given as sha256:<hex> is checked with one SHA-256 and no work factor,
// whatever the secret (a three-letter one too: the hash does not show
// its length), so it is safe for long random secrets only, such as the
// 256-bit ones RotateClientSecret generates; a chosen secret belongs in
// bcrypt.
func TestSHA256SecretHashAnySecret(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	if err := e.iss.PutClient(ctx, Client{ID: "short", SecretHash: hashClientSecret("foo"), GrantTypes: []string{"client_credentials"}}); err != nil {
		t.Fatalf("PutClient(sha256 of a three-letter secret) = %v, want it taken", err)
	}
	if a := e.post(t, pathToken, ccForm(nil), "short:foo"); a.status != 200 {
		t.Errorf("client credentials with the short secret = %d %s, want 200", a.status, a.raw)
	}
	secret, err := e.iss.RotateClientSecret(ctx, "short")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := base64.RawURLEncoding.DecodeString(secret); err != nil || len(b) < 32 {
		t.Errorf("generated secret %q: %d random bytes (%v), want at least 32", secret, len(b), err)
	}
	c, err := e.iss.dir.lookupClient(ctx, "short")
	if err != nil || c.SecretHash != hashClientSecret(secret) {
		t.Errorf("stored hash of the generated secret = %q (%v), want its sha256:<hex>", c.SecretHash, err)
	}
}
