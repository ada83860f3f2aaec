package issuer

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

func TestUserinfo(t *testing.T) {
	e := newTokEnv(t)
	token := func(scopes ...string) string {
		code, verifier := e.issueCode(t, codeSpec{scopes: scopes})
		tok, err := e.exchange(t, tPublic, "", code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	get := func(auth string) answer {
		req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo), nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return e.do(t, req)
	}
	tests := []struct {
		name, auth string
		status     int
		want       map[string]any
		challenge  string
	}{
		{name: "openid only", auth: "Bearer " + token("openid", "read"), status: 200, want: map[string]any{"sub": tUser, "principal_type": "user"}},
		{name: "profile and email", auth: "Bearer " + token("openid", "profile", "email"), status: 200,
			want: map[string]any{"sub": tUser, "name": "Alice A.", "preferred_username": tUser, "email": "alice@example.com", "principal_type": "user"}},
		{name: "no token", status: 401, challenge: "Bearer"},
		{name: "basic scheme", auth: "Basic eDp5", status: 401, challenge: "Bearer"},
		{name: "bad token", auth: "Bearer abc.def.ghi", status: 401, challenge: `error="invalid_token"`},
		{name: "without openid", auth: "Bearer " + token("read"), status: 403, challenge: `error="insufficient_scope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := get(tt.auth)
			if a.status != tt.status {
				t.Fatalf("userinfo = %d %s, want %d", a.status, a.raw, tt.status)
			}
			if tt.challenge != "" && !strings.Contains(a.header.Get("WWW-Authenticate"), tt.challenge) {
				t.Errorf("WWW-Authenticate = %q, want it to contain %q", a.header.Get("WWW-Authenticate"), tt.challenge)
			}
			if tt.want != nil && len(a.body) != len(tt.want) {
				t.Errorf("userinfo = %v, want %v", a.body, tt.want)
			}
			for k, v := range tt.want {
				if a.body[k] != v {
					t.Errorf("userinfo %s = %v, want %v", k, a.body[k], v)
				}
			}
		})
	}
	// The token is read from the Authorization header only (README,
	// Limits: OpenID Connect), never from a form body or the query
	// (RFC 6750 sections 2.2 and 2.3), where it would be logged or
	// sent by a page's form. One there, beside the header or not, or two
	// Authorization headers, is a malformed request (RFC 6750 section
	// 3.1: invalid_request, 400), as at the gateway: served beside the
	// header, a client's token would keep landing in logs unnoticed.
	tok := token("openid", "read")
	for _, tt := range []struct {
		name string
		req  func() *http.Request
	}{
		{"in the form body", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, e.iss.endpoint(pathUserinfo), strings.NewReader(url.Values{"access_token": {tok}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return req
		}},
		{"in the query", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo)+"?access_token="+url.QueryEscape(tok), nil)
			return req
		}},
		{"in the form body beside the header", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, e.iss.endpoint(pathUserinfo), strings.NewReader(url.Values{"access_token": {tok}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			req.Header.Set("Authorization", "Bearer "+tok)
			return req
		}},
		{"in the query beside the header", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo)+"?access_token="+url.QueryEscape(tok), nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			return req
		}},
		// Go skips a pair holding a ";"; a server or proxy that splits
		// on it reads the token, and the log holds it anyway.
		{"in the query after a semicolon", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo)+"?x=1;access_token="+url.QueryEscape(tok), nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			return req
		}},
		{"in the query before a semicolon", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo)+"?access_token="+url.QueryEscape(tok)+";", nil)
			return req
		}},
		{"in the form body after a semicolon", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, e.iss.endpoint(pathUserinfo), strings.NewReader("x=1;access_token="+url.QueryEscape(tok)))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer "+tok)
			return req
		}},
		// Go skips a pair whose value holds a bad escape; the log
		// holds the token before it all the same.
		{"in the query before a bad escape", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo)+"?access_token="+url.QueryEscape(tok)+"%zz", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			return req
		}},
		{"in the form body before a bad escape", func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, e.iss.endpoint(pathUserinfo), strings.NewReader("access_token="+url.QueryEscape(tok)+"%"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "Bearer "+tok)
			return req
		}},
		{"in two Authorization headers", func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo), nil)
			req.Header.Add("Authorization", "Bearer "+tok)
			req.Header.Add("Authorization", "Bearer "+tok)
			return req
		}},
	} {
		if a := e.do(t, tt.req()); a.status != http.StatusBadRequest || a.body["sub"] != nil || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), `Bearer error="invalid_request"`) {
			t.Errorf("userinfo with the token %s = %d %s (%q), want 400 with a Bearer invalid_request challenge and no claims", tt.name, a.status, a.raw, a.header.Get("WWW-Authenticate"))
		}
	}
	// A form body without a token, and a query of other parameters, are
	// no token elsewhere.
	req, _ := http.NewRequest(http.MethodPost, e.iss.endpoint(pathUserinfo)+"?x=1;z=3&access_token_hint=%zz&y=access_token", strings.NewReader("y=2"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Bearer "+tok)
	if a := e.do(t, req); a.status != http.StatusOK || a.body["sub"] != tUser {
		t.Errorf("userinfo POST with a form body of other parameters = %d %s, want 200 with the claims", a.status, a.raw)
	}
}

// TestUserinfoDPoP: UserInfo is a protected resource (RFC 9449 section
// 7): a DPoP-bound token is accepted only with the DPoP scheme and a
// proof of its key for this request, never as a bearer token; an unbound
// token only as Bearer.
func TestUserinfoDPoP(t *testing.T) {
	e := newTokEnv(t)
	alice, mallory := newDPoPKey(t), newDPoPKey(t)
	tokenURL, infoURL := e.iss.endpoint(pathToken), e.iss.endpoint(pathUserinfo)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid", "read"}})
	f := url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {tRedirect}, "client_id": {tPublic}}
	tok := e.postDPoP(t, pathToken, f, "", alice.proof(t, e, tokenURL, nil))
	wantBound(t, "token", tok, alice)
	bound := tok.str("access_token")
	code, verifier = e.issueCode(t, codeSpec{scopes: []string{"openid", "read"}})
	bearerTok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	bearer := bearerTok.AccessToken
	code, verifier = e.issueCode(t, codeSpec{scopes: []string{"read"}})
	f.Set("code", code)
	f.Set("code_verifier", verifier)
	noOpenID := e.postDPoP(t, pathToken, f, "", alice.proof(t, e, tokenURL, nil)).str("access_token")
	code, verifier = e.issueCode(t, codeSpec{scopes: []string{"read"}})
	noOpenIDTok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	bearerNoOpenID := noOpenIDTok.AccessToken
	ath := func(tok string) string {
		sum := sha256.Sum256([]byte(tok))
		return base64.RawURLEncoding.EncodeToString(sum[:])
	}
	proof := func(k *dpopKey, method, tok string) string {
		return k.proof(t, e, infoURL, jwt.MapClaims{"htm": method, "ath": ath(tok)})
	}
	replayed := proof(alice, http.MethodGet, bound)
	tests := []struct {
		name, method, auth, proof string
		status                    int
		challenge                 string // in a WWW-Authenticate value
	}{
		{"bound token with its proof", http.MethodGet, "DPoP " + bound, replayed, 200, ""},
		{"bound token with a POST proof", http.MethodPost, "DPoP " + bound, proof(alice, http.MethodPost, bound), 200, ""},
		{"bound token as Bearer", http.MethodGet, "Bearer " + bound, "", 401, `DPoP error="invalid_token"`},
		{"bound token as Bearer with a proof", http.MethodGet, "Bearer " + bound, proof(alice, http.MethodGet, bound), 401, `DPoP error="invalid_token"`},
		{"bound token without a proof", http.MethodGet, "DPoP " + bound, "", 401, `DPoP error="invalid_dpop_proof"`},
		{"bound token with another key's proof", http.MethodGet, "DPoP " + bound, proof(mallory, http.MethodGet, bound), 401, `DPoP error="invalid_dpop_proof"`},
		{"replayed proof", http.MethodGet, "DPoP " + bound, replayed, 401, `DPoP error="invalid_dpop_proof"`},
		{"proof for another method", http.MethodGet, "DPoP " + bound, proof(alice, http.MethodPost, bound), 401, `DPoP error="invalid_dpop_proof"`},
		{"proof for another token", http.MethodGet, "DPoP " + bound, proof(alice, http.MethodGet, bearer), 401, `DPoP error="invalid_dpop_proof"`},
		{"proof for the token endpoint", http.MethodGet, "DPoP " + bound, alice.proof(t, e, tokenURL, jwt.MapClaims{"htm": http.MethodGet, "ath": ath(bound)}), 401, `DPoP error="invalid_dpop_proof"`},
		{"unbound token as DPoP", http.MethodGet, "DPoP " + bearer, proof(alice, http.MethodGet, bearer), 401, `DPoP error="invalid_token"`},
		{"unbound token as Bearer", http.MethodGet, "Bearer " + bearer, "", 200, ""},
		{"no token", http.MethodGet, "", "", 401, `DPoP algs=`},
		// A token that fails is told in the challenge of its scheme
		// (RFC 9449 section 7.1), where a DPoP client reads it.
		{"invalid token as DPoP", http.MethodGet, "DPoP not.a.token", proof(alice, http.MethodGet, "not.a.token"), 401, `DPoP error="invalid_token"`},
		{"invalid token as Bearer", http.MethodGet, "Bearer not.a.token", "", 401, `Bearer error="invalid_token"`},
		{"bound token without openid", http.MethodGet, "DPoP " + noOpenID, proof(alice, http.MethodGet, noOpenID), 403, `DPoP error="insufficient_scope"`},
		{"unbound token without openid", http.MethodGet, "Bearer " + bearerNoOpenID, "", 403, `Bearer error="insufficient_scope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, infoURL, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			if tt.proof != "" {
				req.Header.Set("DPoP", tt.proof)
			}
			a := e.do(t, req)
			if a.status != tt.status {
				t.Fatalf("userinfo = %d %s (%q), want %d", a.status, a.raw, a.header.Values("WWW-Authenticate"), tt.status)
			}
			if tt.status == 200 && a.body["sub"] != tUser {
				t.Errorf("userinfo = %s, want the user's claims", a.raw)
			}
			if tt.status != 200 && (a.body["sub"] != nil || !strings.Contains(strings.Join(a.header.Values("WWW-Authenticate"), "\n"), tt.challenge)) {
				t.Errorf("userinfo = %s, WWW-Authenticate %q; want no claims and a challenge with %q", a.raw, a.header.Values("WWW-Authenticate"), tt.challenge)
			}
			for _, v := range a.header.Values("WWW-Authenticate") {
				if strings.HasPrefix(tt.challenge, "DPoP error=") && strings.HasPrefix(v, "Bearer") && strings.Contains(v, "error=") {
					t.Errorf("Bearer challenge %q carries the DPoP request's error", v)
				}
				if tt.status == http.StatusForbidden && strings.HasPrefix(v, tt.challenge[:4]) && !strings.Contains(v, `scope="openid"`) {
					t.Errorf("challenge %q does not name the scope openid", v)
				}
			}
		})
	}
}

// TestUserinfoDPoPNonce: with dpop_nonce, /userinfo asks a proof for a
// nonce too (README, dpop_nonce): the first proof is refused 401
// use_dpop_nonce with a DPoP-Nonce to use, and one carrying it is taken.
func TestUserinfoDPoPNonce(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.DPoPNonce = true })
	k := newDPoPKey(t)
	tokenURL, infoURL := e.iss.endpoint(pathToken), e.iss.endpoint(pathUserinfo)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid", "read"}})
	f := url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {tRedirect}, "client_id": {tPublic}}
	a := e.postDPoP(t, pathToken, f, "", k.proof(t, e, tokenURL, nil))
	nonce := a.header.Get("DPoP-Nonce")
	if a.str("error") != "use_dpop_nonce" || nonce == "" {
		t.Fatalf("token without a nonce = %d %s, want use_dpop_nonce", a.status, a.raw)
	}
	a = e.postDPoP(t, pathToken, f, "", k.proof(t, e, tokenURL, jwt.MapClaims{"nonce": nonce}))
	wantBound(t, "token", a, k)
	tok := a.str("access_token")
	sum := sha256.Sum256([]byte(tok))
	ath := base64.RawURLEncoding.EncodeToString(sum[:])
	get := func(claims jwt.MapClaims) answer {
		claims["htm"], claims["ath"] = http.MethodGet, ath
		req, _ := http.NewRequest(http.MethodGet, infoURL, nil)
		req.Header.Set("Authorization", "DPoP "+tok)
		req.Header.Set("DPoP", k.proof(t, e, infoURL, claims))
		return e.do(t, req)
	}
	a = get(jwt.MapClaims{})
	nonce = a.header.Get("DPoP-Nonce")
	if a.status != http.StatusUnauthorized || a.body["sub"] != nil || nonce == "" ||
		!strings.Contains(strings.Join(a.header.Values("WWW-Authenticate"), "\n"), `error="use_dpop_nonce"`) {
		t.Fatalf("userinfo with a proof without a nonce = %d %s, WWW-Authenticate %q, DPoP-Nonce %q; want 401 use_dpop_nonce with a nonce",
			a.status, a.raw, a.header.Values("WWW-Authenticate"), nonce)
	}
	if a = get(jwt.MapClaims{"nonce": "not-a-nonce"}); a.status != http.StatusUnauthorized || a.body["sub"] != nil {
		t.Fatalf("userinfo with a made-up nonce = %d %s, want 401", a.status, a.raw)
	}
	if a = get(jwt.MapClaims{"nonce": nonce}); a.status != http.StatusOK || a.body["sub"] != tUser {
		t.Fatalf("userinfo with the nonce = %d %s, want 200 with the user's claims", a.status, a.raw)
	}
}
