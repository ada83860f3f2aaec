package caddymodule

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// dpopProof is an ES256 DPoP proof of key for method and htu, with ath
// when tok is not empty.
func dpopProof(t *testing.T, key *ecdsa.PrivateKey, method, htu, tok string) string {
	t.Helper()
	raw, _ := key.PublicKey.Bytes()
	b64 := base64.RawURLEncoding.EncodeToString
	c := jwt.MapClaims{"jti": rand.Text(), "htm": method, "htu": htu, "iat": time.Now().Unix()}
	if tok != "" {
		sum := sha256.Sum256([]byte(tok))
		c["ath"] = b64(sum[:])
	}
	j := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	j.Header["typ"] = "dpop+jwt"
	j.Header["jwk"] = map[string]any{"kty": "EC", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])}
	s, err := j.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDPoPReplayAcrossReload: a config reload provisions new handlers;
// a proof seen before it must stay refused after it, and one gateway's
// proof at another gateway of the same process, as Caddy runs them.
func TestDPoPReplayAcrossReload(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	provision := func() *GatewayHandler {
		h := &GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Tools: []Rule{{Match: "*"}}}
		if err := h.Provision(ctx); err != nil {
			t.Fatalf("Provision() = %v", err)
		}
		return h
	}
	// As a reload or a second site block would: handlers of their own.
	before, after := provision(), provision()
	app := startApp(t, ctx)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

	form := url.Values{"grant_type": {"client_credentials"}, "resource": {gatewayResource}, "scope": {"mcp"}}
	req := httptest.NewRequest("POST", testIssuer+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", dpopProof(t, key, "POST", testIssuer+"/token", ""))
	req.SetBasicAuth("svc", svcSecret)
	rec := httptest.NewRecorder()
	app.Issuer().ServeHTTP(rec, req)
	var res struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if json.Unmarshal(rec.Body.Bytes(), &res) != nil || res.TokenType != "DPoP" {
		t.Fatalf("token = %d %s, want a DPoP-bound token", rec.Code, rec.Body)
	}
	proof := dpopProof(t, key, "POST", gatewayResource, res.AccessToken)
	call := func(h *GatewayHandler) int {
		r := mcpRequest("")
		r.Header.Set("Authorization", "DPoP "+res.AccessToken)
		r.Header.Set("DPoP", proof)
		rec := httptest.NewRecorder()
		_ = h.ServeHTTP(rec, r, &recordingNext{})
		return rec.Code
	}
	if got := call(before); got != http.StatusTeapot {
		t.Fatalf("first use = %d, want next's 418", got)
	}
	if got := call(before); got != http.StatusUnauthorized {
		t.Errorf("replay = %d, want 401", got)
	}
	if got := call(after); got != http.StatusUnauthorized {
		t.Errorf("replay at the gateway a reload provisions = %d, want 401", got)
	}
}
