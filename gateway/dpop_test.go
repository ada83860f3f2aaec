package gateway

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// dpopKey is a client's DPoP key pair with its public JWK and thumbprint.
type dpopKey struct {
	priv *ecdsa.PrivateKey
	jwk  map[string]any
	jkt  string
}

func newDPoPKey(t testing.TB) *dpopKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := k.PublicKey.Bytes()
	b64 := base64.RawURLEncoding.EncodeToString
	x, y := b64(raw[1:33]), b64(raw[33:])
	// RFC 7638 thumbprint, written out here as a client would compute it.
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	return &dpopKey{priv: k, jwk: map[string]any{"kty": "EC", "crv": "P-256", "x": x, "y": y}, jkt: b64(sum[:])}
}

// proof makes a DPoP proof for a request with token; edit changes the
// header or claims before signing.
func (k *dpopKey) proof(t testing.TB, method, htu, token string, edit func(h map[string]any, c jwt.MapClaims)) string {
	t.Helper()
	jti := make([]byte, 12)
	rand.Read(jti)
	sum := sha256.Sum256([]byte(token))
	c := jwt.MapClaims{
		"jti": base64.RawURLEncoding.EncodeToString(jti), "htm": method, "htu": htu, "iat": testNow.Unix(),
		"ath": base64.RawURLEncoding.EncodeToString(sum[:]),
	}
	h := map[string]any{"typ": "dpop+jwt", "jwk": k.jwk}
	var m jwt.SigningMethod = jwt.SigningMethodES256
	var key any = k.priv
	if edit != nil {
		edit(h, c)
		switch h["alg"] {
		case "none":
			m, key = jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType
		case "HS256":
			m, key = jwt.SigningMethodHS256, []byte(k.jwk["x"].(string))
		}
	}
	tok := jwt.NewWithClaims(m, c)
	for name, v := range h {
		if name != "alg" {
			tok.Header[name] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func boundToken(t testing.TB, jkt string) string {
	t.Helper()
	c := claims()
	c["cnf"] = map[string]any{"jkt": jkt}
	return mint(t, c)
}

// dpopCall is a tools/call with the DPoP scheme and the given proof ("":
// none).
func dpopCall(token, proof string) call {
	h := map[string]string{"Authorization": "DPoP " + token}
	if proof != "" {
		h["DPoP"] = proof
	}
	return call{body: toolCall("read_file"), headers: h}
}

func TestDPoP(t *testing.T) {
	alice, mallory := newDPoPKey(t), newDPoPKey(t)
	token := boundToken(t, alice.jkt)
	malloryToken := boundToken(t, mallory.jkt)
	proof := func(edit func(h map[string]any, c jwt.MapClaims)) string {
		return alice.proof(t, http.MethodPost, testResource, token, edit)
	}
	replayed := proof(nil)
	tests := []struct {
		name  string
		calls []call // the last one's answer is checked; every one before must pass
		code  string // error in the DPoP challenge; "" for success
	}{
		{"valid proof", []call{dpopCall(token, proof(nil))}, ""},
		{"scheme in lower case", []call{{body: toolCall("read_file"), headers: map[string]string{"Authorization": "dpop " + token, "DPoP": proof(nil)}}}, ""},
		{"bound token sent as Bearer", []call{{body: toolCall("read_file"), token: token}}, "invalid_token"},
		{"bound token as Bearer with a proof", []call{{body: toolCall("read_file"), token: token, headers: map[string]string{"DPoP": proof(nil)}}}, "invalid_token"},
		{"bearer token with the DPoP scheme", []call{dpopCall(mint(t, claims()), proof(nil))}, "invalid_token"},
		{"no proof", []call{dpopCall(token, "")}, "invalid_dpop_proof"},
		{"wrong htm", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { c["htm"] = "GET" }))}, "invalid_dpop_proof"},
		{"wrong htu", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { c["htu"] = "https://mcp.example.com/other" }))}, "invalid_dpop_proof"},
		{"htu escaping a slash beside a character to escape", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { c["htu"] = "https://mcp.example.com/x|/..%2Fmcp" }))}, "invalid_dpop_proof"},
		{"htu with a dot segment", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { c["htu"] = "https://mcp.example.com/x|/../mcp" }))}, ""},
		{"htu of another host", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { c["htu"] = "https://evil.example.com/mcp" }))}, "invalid_dpop_proof"},
		{"missing ath", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { delete(c, "ath") }))}, "invalid_dpop_proof"},
		{"ath of another token", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { c["ath"] = "AAAA" }))}, "invalid_dpop_proof"},
		{"stale iat", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { c["iat"] = testNow.Add(-2 * time.Minute).Unix() }))}, "invalid_dpop_proof"},
		{"future iat", []call{dpopCall(token, proof(func(_ map[string]any, c jwt.MapClaims) { c["iat"] = testNow.Add(2 * time.Minute).Unix() }))}, "invalid_dpop_proof"},
		{"replayed jti", []call{dpopCall(token, replayed), dpopCall(token, replayed)}, "invalid_dpop_proof"},
		{"alg none", []call{dpopCall(token, proof(func(h map[string]any, _ jwt.MapClaims) { h["alg"] = "none" }))}, "invalid_dpop_proof"},
		{"alg HS256", []call{dpopCall(token, proof(func(h map[string]any, _ jwt.MapClaims) { h["alg"] = "HS256" }))}, "invalid_dpop_proof"},
		{"typ JWT", []call{dpopCall(token, proof(func(h map[string]any, _ jwt.MapClaims) { h["typ"] = "JWT" }))}, "invalid_dpop_proof"},
		{"jwk with the private key", []call{dpopCall(token, proof(func(h map[string]any, _ jwt.MapClaims) {
			j := map[string]any{"d": base64.RawURLEncoding.EncodeToString(alice.priv.D.FillBytes(make([]byte, 32)))}
			for k, v := range alice.jwk {
				j[k] = v
			}
			h["jwk"] = j
		}))}, "invalid_dpop_proof"},
		{"proof signed by another key than its jwk", []call{dpopCall(token, proof(func(h map[string]any, _ jwt.MapClaims) { h["jwk"] = mallory.jwk }))}, "invalid_dpop_proof"},
		// Mallory stole Alice's token: her own valid proof does not help.
		{"stolen token with the thief's key", []call{dpopCall(token, mallory.proof(t, http.MethodPost, testResource, token, nil))}, "invalid_dpop_proof"},
		{"thief's own token is fine", []call{dpopCall(malloryToken, mallory.proof(t, http.MethodPost, testResource, malloryToken, nil))}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), nil)
			var resp *http.Response
			var body string
			for i, c := range tt.calls {
				resp = h.do(t, c)
				body = readBody(t, resp)
				if i < len(tt.calls)-1 && resp.StatusCode != http.StatusOK {
					t.Fatalf("call %d = %d %s, want 200", i, resp.StatusCode, body)
				}
			}
			got := h.up.requests()
			if tt.code == "" {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status = %d %s, want 200", resp.StatusCode, body)
				}
				last := got[len(got)-1]
				if last.Header.Get("Authorization") != "" || last.Header.Get("DPoP") != "" {
					t.Errorf("upstream received Authorization %q, DPoP %q; want neither", last.Header.Get("Authorization"), last.Header.Get("DPoP"))
				}
				return
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status = %d %s, want 401", resp.StatusCode, body)
			}
			if len(got) != len(tt.calls)-1 {
				t.Errorf("upstream received %d requests, want %d", len(got), len(tt.calls)-1)
			}
			var dpopChallenge string
			for _, v := range resp.Header.Values("WWW-Authenticate") {
				if strings.HasPrefix(v, "DPoP ") {
					dpopChallenge = v
				} else if strings.Contains(v, "error=") {
					t.Errorf("Bearer challenge %q carries the DPoP failure's error", v)
				}
			}
			if !strings.HasPrefix(dpopChallenge, `DPoP error="`+tt.code+`"`) || !strings.Contains(dpopChallenge, `algs="ES256 `) ||
				!strings.Contains(dpopChallenge, `resource_metadata="`+testPRM+`"`) {
				t.Errorf("DPoP challenge = %q, want error %q, algs and resource_metadata", dpopChallenge, tt.code)
			}
		})
	}
}

func TestRequireDPoP(t *testing.T) {
	cfg := testConfig(t)
	cfg.RequireDPoP = true
	h := newHarness(t, cfg, nil)
	alice := newDPoPKey(t)
	token := boundToken(t, alice.jkt)

	resp := h.do(t, call{body: toolCall("read_file"), token: mint(t, claims())})
	readBody(t, resp)
	ch := resp.Header.Values("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || len(ch) != 1 || !strings.HasPrefix(ch[0], `DPoP error="invalid_token"`) {
		t.Errorf("bearer token: %d %q, want 401 with only a DPoP invalid_token challenge", resp.StatusCode, ch)
	}
	// An unbound token sent with the DPoP scheme (and a proof) is told
	// what the resource needs, not to use the Bearer scheme, which it
	// refuses.
	unbound := mint(t, claims())
	resp = h.do(t, dpopCall(unbound, alice.proof(t, http.MethodPost, testResource, unbound, nil)))
	readBody(t, resp)
	ch = resp.Header.Values("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || len(ch) != 1 ||
		!strings.HasPrefix(ch[0], `DPoP error="invalid_token", error_description="this resource requires DPoP-bound access tokens"`) {
		t.Errorf("unbound token as DPoP: %d %q, want 401 with only a DPoP invalid_token challenge saying DPoP-bound tokens are required", resp.StatusCode, ch)
	}
	resp = h.do(t, call{body: toolCall("read_file")})
	readBody(t, resp)
	ch = resp.Header.Values("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || len(ch) != 1 || !strings.HasPrefix(ch[0], `DPoP algs="`) {
		t.Errorf("no token: %d %q, want 401 with only a DPoP challenge without error", resp.StatusCode, ch)
	}
	if resp := h.do(t, dpopCall(token, alice.proof(t, http.MethodPost, testResource, token, nil))); resp.StatusCode != http.StatusOK {
		t.Errorf("bound token with proof: %d %s, want 200", resp.StatusCode, readBody(t, resp))
	}
	if len(h.up.requests()) != 1 {
		t.Errorf("upstream received %d requests, want 1", len(h.up.requests()))
	}

	resp = h.do(t, call{method: http.MethodGet, path: "/.well-known/oauth-protected-resource/mcp"})
	var md map[string]any
	if err := json.Unmarshal([]byte(readBody(t, resp)), &md); err != nil {
		t.Fatal(err)
	}
	if md["dpop_bound_access_tokens_required"] != true {
		t.Errorf("metadata dpop_bound_access_tokens_required = %v, want true", md["dpop_bound_access_tokens_required"])
	}
}

// TestDPoPTokenErrorInItsScheme: a token that fails (expired, signed by
// an unknown key, for another resource, too long) is answered in the challenge of
// the scheme it came with (RFC 9449 §7.1, RFC 6750 §3.1): sent as DPoP,
// the DPoP challenge says invalid_token and the Bearer one says nothing
// of it; sent as Bearer, the other way round. The DPoP challenge names
// the scopes, as the Bearer one does: with require_dpop it is the only
// challenge, and it said neither why the token was refused nor which
// scopes to ask for.
func TestDPoPTokenErrorInItsScheme(t *testing.T) {
	alice := newDPoPKey(t)
	bad := map[string]func(c jwt.MapClaims) string{
		"expired": func(c jwt.MapClaims) string {
			c["exp"] = testNow.Add(-time.Hour).Unix()
			return mint(t, c)
		},
		"another resource": func(c jwt.MapClaims) string {
			c["aud"] = "https://other.example.com/mcp"
			return mint(t, c)
		},
		"unknown key": func(c jwt.MapClaims) string {
			return mintWith(t, jwt.SigningMethodES256, newDPoPKey(t).priv, "ec1", c, nil)
		},
		"too long": func(jwt.MapClaims) string { return strings.Repeat("a", maxTokenLen+1) },
	}
	for _, require := range []bool{false, true} {
		for name, mintBad := range bad {
			for _, scheme := range []string{"DPoP", "Bearer"} {
				if require && scheme == "Bearer" {
					continue // only the DPoP challenge then
				}
				t.Run(fmt.Sprintf("require_dpop %v, %s, sent as %s", require, name, scheme), func(t *testing.T) {
					cfg := testConfig(t)
					cfg.RequireDPoP = require
					h := newHarness(t, cfg, nil)
					c := claims()
					c["cnf"] = map[string]any{"jkt": alice.jkt}
					token := mintBad(c)
					call := dpopCall(token, alice.proof(t, http.MethodPost, testResource, token, nil))
					if scheme == "Bearer" {
						call.headers["Authorization"] = "Bearer " + token
					}
					resp := h.do(t, call)
					readBody(t, resp)
					var bearer, dpopCh string
					for _, v := range resp.Header.Values("WWW-Authenticate") {
						if strings.HasPrefix(v, "DPoP ") {
							dpopCh = v
						} else {
							bearer = v
						}
					}
					inDPoP, inBearer := strings.Contains(dpopCh, `error="invalid_token"`), strings.Contains(bearer, `error="invalid_token"`)
					if resp.StatusCode != http.StatusUnauthorized || inDPoP != (scheme == "DPoP") || inBearer != (scheme == "Bearer") {
						t.Errorf("%d, challenges %q; want 401 with invalid_token in the %s challenge only", resp.StatusCode, resp.Header.Values("WWW-Authenticate"), scheme)
					}
					if !strings.Contains(dpopCh, `scope="mcp"`) || (!require && !strings.Contains(bearer, `scope="mcp"`)) {
						t.Errorf("challenges %q; want the scopes in each", resp.Header.Values("WWW-Authenticate"))
					}
					if len(h.up.requests()) != 0 {
						t.Error("the upstream received the request")
					}
				})
			}
		}
	}
}

// TestDPoPInsufficientScopeInItsScheme: a 403 insufficient_scope gives
// the challenges a 401 gives, Bearer (but with require_dpop) and DPoP
// (with algs), both naming the scopes the call needs and the resource
// metadata, and says insufficient_scope in the challenge of the scheme
// the token came with (RFC 6750 §3.1, RFC 9449 §7.1): with require_dpop
// the DPoP challenge said nothing, only a Bearer challenge did, which the
// gateway refuses (and the refusal was counted as "forbidden").
func TestDPoPInsufficientScopeInItsScheme(t *testing.T) {
	alice := newDPoPKey(t)
	const scope = `scope="admin mcp", resource_metadata="` + testPRM + `"`
	dpopCh := `DPoP algs="` + dpopAlgs + `", ` + scope
	dpopErr := `DPoP error="insufficient_scope", algs="` + dpopAlgs + `", ` + scope
	tests := []struct {
		require bool
		scheme  string
		want    []string
	}{
		{false, "Bearer", []string{`Bearer error="insufficient_scope", ` + scope, dpopCh}},
		{false, "DPoP", []string{`Bearer ` + scope, dpopErr}},
		{true, "DPoP", []string{dpopErr}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("require_dpop %v, sent as %s", tt.require, tt.scheme), func(t *testing.T) {
			m := &countingMetrics{counts: map[string]int{}}
			cfg := testConfig(t)
			cfg.RequireDPoP = tt.require
			cfg.Metrics = m
			h := newHarness(t, cfg, nil)
			c := call{body: toolCall("delete_x"), token: mint(t, claims())}
			if tt.scheme == "DPoP" {
				token := boundToken(t, alice.jkt)
				c = dpopCall(token, alice.proof(t, http.MethodPost, testResource, token, nil))
				c.body = toolCall("delete_x")
			}
			resp := h.do(t, c)
			body := readBody(t, resp)
			if got := resp.Header.Values("WWW-Authenticate"); resp.StatusCode != http.StatusForbidden || !slices.Equal(got, tt.want) {
				t.Errorf("call needing admin = %d %s, challenges\n%q\nwant 403 with\n%q", resp.StatusCode, body, got, tt.want)
			}
			if len(h.up.requests()) != 0 {
				t.Error("the upstream received the request")
			}
			if n := m.counts["refusal insufficient_scope"]; n != 1 {
				t.Errorf("refusals counted as insufficient_scope = %d, want 1 (%v)", n, m.counts)
			}
		})
	}
}

func TestDPoPNonce(t *testing.T) {
	cfg := testConfig(t)
	cfg.DPoPNonce = true
	h := newHarness(t, cfg, nil)
	alice := newDPoPKey(t)
	token := boundToken(t, alice.jkt)

	resp := h.do(t, dpopCall(token, alice.proof(t, http.MethodPost, testResource, token, nil)))
	readBody(t, resp)
	nonce := resp.Header.Get("DPoP-Nonce")
	if resp.StatusCode != http.StatusUnauthorized || nonce == "" || !strings.Contains(strings.Join(resp.Header.Values("WWW-Authenticate"), "\n"), `DPoP error="use_dpop_nonce"`) {
		t.Fatalf("proof without nonce: %d, DPoP-Nonce %q, %q; want 401 use_dpop_nonce with a nonce", resp.StatusCode, nonce, resp.Header.Values("WWW-Authenticate"))
	}
	withNonce := func(n string) string {
		return alice.proof(t, http.MethodPost, testResource, token, func(_ map[string]any, c jwt.MapClaims) { c["nonce"] = n })
	}
	resp = h.do(t, dpopCall(token, withNonce(nonce)))
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || resp.Header.Get("DPoP-Nonce") == "" {
		t.Fatalf("proof with the nonce: %d %s, DPoP-Nonce %q; want 200 with a nonce", resp.StatusCode, body, resp.Header.Get("DPoP-Nonce"))
	}
	resp = h.do(t, dpopCall(token, withNonce("made-up")))
	readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("proof with a made-up nonce: %d, want 401", resp.StatusCode)
	}
	if n := len(h.up.requests()); n != 1 {
		t.Errorf("upstream received %d requests, want 1 (the proof with the nonce only)", n)
	}

	// README: the nonce is keyed by session_key, so another gateway
	// sharing the key (another instance) takes it, and one with another
	// key refuses it and forwards nothing.
	other := newHarness(t, cfg, nil)
	resp = other.do(t, dpopCall(token, withNonce(nonce)))
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Errorf("the nonce at another gateway with the same session_key: %d %s, want 200", resp.StatusCode, body)
	}
	cfg.SessionKey = bytes.Repeat([]byte("otherkey"), 4)
	stranger := newHarness(t, cfg, nil)
	resp = stranger.do(t, dpopCall(token, withNonce(nonce)))
	readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(strings.Join(resp.Header.Values("WWW-Authenticate"), "\n"), `DPoP error="use_dpop_nonce"`) {
		t.Errorf("the nonce at a gateway with another session_key: %d %q, want 401 use_dpop_nonce", resp.StatusCode, resp.Header.Values("WWW-Authenticate"))
	}
	if n := len(stranger.up.requests()); n != 0 {
		t.Errorf("the gateway with another session_key forwarded %d requests, want 0", n)
	}
}

// TestUpstreamDPoPNonceDropped: the client sees only the gateway's
// DPoP-Nonce, never the upstream's, as a header or a late one (a
// trailer of a held answer), also after a 1xx, with a bound token and
// nonces on, and none at all with a Bearer token.
func TestUpstreamDPoPNonceDropped(t *testing.T) {
	for _, tt := range []struct{ late, hints bool }{{false, false}, {true, false}, {false, true}} {
		late := tt.late
		cfg := testConfig(t)
		cfg.DPoPNonce = true
		h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
			if tt.hints {
				// httputil.ReverseProxy clears the header after a 1xx,
				// the gateway's nonce with it.
				w.Header().Set("Link", "</x>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
			}
			w.Header().Set("Content-Type", "application/json")
			if late {
				w.Header().Set("Trailer", "DPoP-Nonce")
			} else {
				w.Header().Set("DPoP-Nonce", "upstream-nonce")
			}
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
			if late {
				w.Header().Set("DPoP-Nonce", "upstream-nonce")
			}
		})
		alice := newDPoPKey(t)
		token := boundToken(t, alice.jkt)
		resp := h.do(t, dpopCall(token, alice.proof(t, http.MethodPost, testResource, token, nil)))
		readBody(t, resp)
		nonce := resp.Header.Get("DPoP-Nonce")
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
		proof := alice.proof(t, http.MethodPost, testResource, token, func(_ map[string]any, c jwt.MapClaims) { c["nonce"] = nonce })
		c := dpopCall(token, proof)
		c.body = body
		resp = h.do(t, c)
		readBody(t, resp)
		if v := resp.Header.Values("DPoP-Nonce"); resp.StatusCode != http.StatusOK || len(v) != 1 || v[0] == "upstream-nonce" || len(resp.Trailer.Values("DPoP-Nonce")) != 0 {
			t.Errorf("late %v, 103 first %v: bound token: %d, DPoP-Nonce %q (trailer %q), want 200 and the gateway's only", late, tt.hints, resp.StatusCode, v, resp.Trailer.Values("DPoP-Nonce"))
		}
		resp = h.do(t, call{body: body, token: mint(t, claims())})
		readBody(t, resp)
		if v := resp.Header.Values("DPoP-Nonce"); resp.StatusCode != http.StatusOK || len(v) != 0 {
			t.Errorf("late %v, 103 first %v: bearer token: %d, DPoP-Nonce %q, want 200 and none", late, tt.hints, resp.StatusCode, v)
		}
	}
}

// TestDPoPHolderAcrossIssuers: the replay memory is one per process
// (caddymodule's dpopReplay), shared by the issuer and every gateway, and
// a gateway charges a proof to the token's principal, its issuer
// included (dpop.HolderOf): a caller of another gateway of the process,
// whose issuer mints tokens with the same client_id and sub (a CIMD
// client id is the same URL at every issuer), does not fill the victim's
// share (review s13-fresh4 F3).
func TestDPoPHolderAcrossIssuers(t *testing.T) {
	replay := dpop.NewReplay(16, time.Time{}) // a share of 2
	const otherIssuer = "https://attacker-issuer.example"
	cfgA := testConfig(t)
	cfgA.DPoPReplay = replay
	cfgB := testConfig(t)
	cfgB.Issuer = otherIssuer
	cfgB.DPoPReplay = replay
	hA := newHarness(t, cfgA, nil)
	hB := newHarness(t, cfgB, nil)

	mallory := newDPoPKey(t)
	mc := claims()
	mc["iss"] = otherIssuer
	mc["cnf"] = map[string]any{"jkt": mallory.jkt}
	mtok := mint(t, mc) // same client_id and sub as alice's, another issuer
	for i := range 2 {
		resp := hB.do(t, dpopCall(mtok, mallory.proof(t, http.MethodPost, testResource, mtok, nil)))
		if b := readBody(t, resp); resp.StatusCode != http.StatusOK {
			t.Fatalf("mallory's request %d at her gateway: %d %s", i, resp.StatusCode, b)
		}
	}
	alice := newDPoPKey(t)
	atok := boundToken(t, alice.jkt)
	resp := hA.do(t, dpopCall(atok, alice.proof(t, http.MethodPost, testResource, atok, nil)))
	if b := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Errorf("alice's first proof at her own gateway, after another issuer's tokens with her client and subject filled the share: %d %s %q",
			resp.StatusCode, b, resp.Header.Values("WWW-Authenticate"))
	}
}

// A thief holding a bound token but not its key must not spend the
// token's principal's share of the replay memory with proofs of another
// key: they are refused before anything is remembered.
func TestDPoPWrongKeyProofsSpendNothing(t *testing.T) {
	cfg := testConfig(t)
	cfg.DPoPReplay = dpop.NewReplay(16, time.Time{}) // a share of 2
	h := newHarness(t, cfg, nil)
	alice, mallory := newDPoPKey(t), newDPoPKey(t)
	token := boundToken(t, alice.jkt)
	for i := range 3 {
		resp := h.do(t, dpopCall(token, mallory.proof(t, http.MethodPost, testResource, token, nil)))
		if b := readBody(t, resp); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("the thief's request %d with the stolen token and her own key's proof: %d %s", i, resp.StatusCode, b)
		}
	}
	resp := h.do(t, dpopCall(token, alice.proof(t, http.MethodPost, testResource, token, nil)))
	if b := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Errorf("alice's proof after a thief's proofs of another key with her token: %d %s %q",
			resp.StatusCode, b, resp.Header.Values("WWW-Authenticate"))
	}
}
