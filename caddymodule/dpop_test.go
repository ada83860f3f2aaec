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

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// dpopProof is an ES256 DPoP proof of key for method and htu, with ath
// when tok is not empty.
func dpopProof(t *testing.T, key *ecdsa.PrivateKey, method, htu, tok string) string {
	t.Helper()
	return dpopProofAt(t, key, method, htu, tok, time.Now())
}

// dpopProofAt is dpopProof made at iat.
func dpopProofAt(t *testing.T, key *ecdsa.PrivateKey, method, htu, tok string, iat time.Time) string {
	t.Helper()
	raw, _ := key.PublicKey.Bytes()
	b64 := base64.RawURLEncoding.EncodeToString
	c := jwt.MapClaims{"jti": rand.Text(), "htm": method, "htu": htu, "iat": iat.Unix()}
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

// TestDPoPProofBeforeStartRefusedAtGateway: on bbolt, where no store
// records spent proofs, a restart forgets the replay memory, so a proof
// made before the process started is refused (README, DPoP replay
// memory): at a gateway of a config with an mcp_auth app as at its
// issuer. The app's ledger, which records nothing on bbolt, made the
// gateway's verifier skip that rule, so a proof captured in the minute
// before a restart was accepted once more after it.
func TestDPoPProofBeforeStartRefusedAtGateway(t *testing.T) {
	started := time.Now()
	saved := dpopReplay
	dpopReplay = dpop.NewReplay(0, started) // as a process starting now
	t.Cleanup(func() { dpopReplay = saved })
	ctx := caddyContext(t, testApp(t))
	h := &GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Tools: []Rule{{Match: "*"}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	app := startApp(t, ctx)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	before := started.Add(-10 * time.Second)

	token := func(proof string) *httptest.ResponseRecorder {
		form := url.Values{"grant_type": {"client_credentials"}, "resource": {gatewayResource}, "scope": {"mcp"}}
		req := httptest.NewRequest("POST", testIssuer+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("DPoP", proof)
		req.SetBasicAuth("svc", svcSecret)
		rec := httptest.NewRecorder()
		app.Issuer().ServeHTTP(rec, req)
		return rec
	}
	if rec := token(dpopProofAt(t, key, "POST", testIssuer+"/token", "", before)); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "before this server started") {
		t.Errorf("token with a proof made before the start = %d %s, want 400 invalid_dpop_proof", rec.Code, rec.Body)
	}
	rec := token(dpopProof(t, key, "POST", testIssuer+"/token", ""))
	var res struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if json.Unmarshal(rec.Body.Bytes(), &res) != nil || res.TokenType != "DPoP" {
		t.Fatalf("token = %d %s, want a DPoP-bound token", rec.Code, rec.Body)
	}
	call := func(proof string) *httptest.ResponseRecorder {
		r := mcpRequest("")
		r.Header.Set("Authorization", "DPoP "+res.AccessToken)
		r.Header.Set("DPoP", proof)
		rec := httptest.NewRecorder()
		_ = h.ServeHTTP(rec, r, &recordingNext{})
		return rec
	}
	if got := call(dpopProofAt(t, key, "POST", gatewayResource, res.AccessToken, before)); got.Code != http.StatusUnauthorized ||
		!strings.Contains(strings.Join(got.Header().Values("WWW-Authenticate"), "\n"), "before this server started") {
		t.Errorf("gateway call with a proof made before the start = %d %q, want 401 invalid_dpop_proof", got.Code, got.Header().Values("WWW-Authenticate"))
	}
	if got := call(dpopProof(t, key, "POST", gatewayResource, res.AccessToken)); got.Code != http.StatusTeapot {
		t.Errorf("gateway call with a fresh proof = %d, want next's 418", got.Code)
	}
}
