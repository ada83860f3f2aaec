package gateway

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTokenAccepted(t *testing.T) {
	k := theKeys(t)
	tests := []struct {
		name  string
		token func() string
		auth  string // Authorization header format, %s = token
	}{
		{"ES256", func() string { return mint(t, claims()) }, "Bearer "},
		{"RS256", func() string { return mintWith(t, jwt.SigningMethodRS256, k.rsa, "rsa1", claims(), nil) }, "Bearer "},
		{"EdDSA", func() string { return mintWith(t, jwt.SigningMethodEdDSA, k.ed, "ed1", claims(), nil) }, "Bearer "},
		{"scheme case-insensitive", func() string { return mint(t, claims()) }, "bEaReR "},
		{"typ application/at+jwt", func() string {
			return mintWith(t, jwt.SigningMethodES256, k.ec, "ec1", claims(), func(h map[string]any) { h["typ"] = "application/AT+JWT" })
		}, "Bearer "},
		{"aud array", func() string {
			c := claims()
			c["aud"] = []string{"https://other.example.com", testResource}
			return mint(t, c)
		}, "Bearer "},
		{"within leeway", func() string {
			c := claims()
			c["exp"] = testNow.Add(-3 * time.Second).Unix()
			return mint(t, c)
		}, "Bearer "},
	}
	h := newHarness(t, testConfig(t), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.do(t, call{body: toolCall("read_a"), headers: map[string]string{"Authorization": tt.auth + tt.token()}})
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status = %d, want 200 (%s, %s)", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"*", "anything/at/all", true},
		{"*", "", true},
		{"read_*", "read_", true},
		{"read_*", "read_file", true},
		{"read_*", "Read_file", false},
		{"read_*", "xread_file", false},
		{"*_file", "read_file", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"get_?", "get_é", true},
		{"get_?", "get_éé", false},
		{"get_??", "get_é", false},
		{`lit\*`, "lit*", true},
		{`lit\*`, "litx", false},
		{`a\?`, "a?", true},
		{"exact", "exact", true},
		{"exact", "exact2", false},
		{"kill", "\u212Aill", false},
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.name); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
		}
	}
}

func TestClaimsCacheBounded(t *testing.T) {
	c := newClaimsCache(100)
	for i := 0; i < 1000; i++ {
		var key [32]byte
		key[0], key[1] = byte(i), byte(i>>8)
		c.put(key, &principal{}, testNow.Add(time.Hour), testNow)
	}
	if n := len(c.entries); n > 100 {
		t.Errorf("cache size = %d, want at most 100", n)
	}
	var key [32]byte
	c.put(key, &principal{}, testNow.Add(time.Second), testNow)
	if p, ok := c.get(key, testNow.Add(2*time.Second)); p != nil || ok {
		t.Error("expired entry returned")
	}
}

// TestPrincipalTypes: principal_type decides who the top-level principal
// is. A client's own token (principal_type "client", as the issuer sends
// for client credentials) is neither a user nor an agent; absent is a
// user unless the other claims say otherwise (TestForeignClientTokens).
func TestPrincipalTypes(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	tests := []struct {
		principalType string // "-" leaves the claim out
		tool          string
		status        int
	}{
		{"-", "human", http.StatusOK},
		{"user", "human", http.StatusOK},
		{"client", "human", http.StatusForbidden},
		{"agent", "human", http.StatusForbidden},
		{"robot", "human", http.StatusForbidden},
		{"client", "agent_only", http.StatusForbidden},
		{"client", "read_file", http.StatusOK},
		{"client", "user_only", http.StatusForbidden},
		{"-", "user_only", http.StatusOK},
		{"-", "agent_only", http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.principalType+" "+tt.tool, func(t *testing.T) {
			c := claims()
			if tt.principalType != "-" {
				c["sub"], c["client_id"] = "svc", "svc"
				c["principal_type"] = tt.principalType
			}
			resp := h.do(t, call{body: toolCall(tt.tool), token: mint(t, c)})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Errorf("tools/call %s with principal_type %s: status %d, want %d (%s)", tt.tool, tt.principalType, resp.StatusCode, tt.status, body)
			}
		})
	}
}

// TestForeignClientTokens (review s15-gateway F1): another issuer's
// client credentials token carries no principal_type; its claims say it
// is a client's own all the same, and then it is neither a user for
// require_user and user_only nor forwarded as one. A user's token of the
// same issuers stays a user's.
func TestForeignClientTokens(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	var gotType atomic.Value
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		gotType.Store(r.Header.Get("X-Mcp-Principal-Type"))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	})
	tests := []struct {
		name   string
		claims map[string]any
		client bool
	}{
		{"sub is the client (RFC 9068 2.2, Okta)", map[string]any{"sub": "svc-app", "client_id": "svc-app"}, true},
		{"Auth0 client credentials", map[string]any{"sub": "svc-app@clients", "client_id": "svc-app", "gty": "client-credentials"}, true},
		{"Entra ID app token", map[string]any{"sub": "0f6c-sp-oid", "client_id": "svc-app", "idtyp": "app"}, true},
		{"Keycloak service account", map[string]any{"sub": "6d1f-uuid", "client_id": "svc-app", "preferred_username": "service-account-svc-app"}, true},
		{"Keycloak service account, name lower-cased", map[string]any{"sub": "6d1f-uuid", "client_id": "Svc-App", "preferred_username": "service-account-svc-app"}, true},
		{"a user (Auth0)", map[string]any{"sub": "auth0|alice", "client_id": "svc-app", "gty": "password"}, false},
		{"a user (Entra ID)", map[string]any{"sub": "alice-oid", "client_id": "svc-app", "idtyp": "user"}, false},
		{"a user (Keycloak)", map[string]any{"sub": "a1-uuid", "client_id": "svc-app", "preferred_username": "alice"}, false},
		{"a user named like a service account of another client", map[string]any{"sub": "a2-uuid", "client_id": "svc-app", "preferred_username": "service-account-other"}, false},
		// Keycloak lower-cases with Java's String.toLowerCase, whose full
		// mapping makes U+0130 two characters and a word's last capital
		// sigma final sigma, where strings.ToLower makes "i" and sigma.
		{"Keycloak service account, dotted capital I", map[string]any{"sub": "6d1f-uuid", "client_id": "\u0130K-PORTAL", "preferred_username": "service-account-i\u0307k-portal"}, true},
		{"Keycloak service account, final sigma", map[string]any{"sub": "6d1f-uuid", "client_id": "\u039b\u039f\u0393\u0399\u03a3\u03a4\u0397\u03a3", "preferred_username": "service-account-\u03bb\u03bf\u03b3\u03b9\u03c3\u03c4\u03b7\u03c2"}, true},
		{"Keycloak service account, sigma before a hyphen", map[string]any{"sub": "6d1f-uuid", "client_id": "\u0391\u03a3-\u0392", "preferred_username": "service-account-\u03b1\u03c3-\u03b2"}, true},
		{"a user named like a service account with one character more", map[string]any{"sub": "a5-uuid", "client_id": "\u0130K", "preferred_username": "service-account-i\u0307kx"}, false},
		{"a user named like a service account with one character less", map[string]any{"sub": "a6-uuid", "client_id": "\u0130K", "preferred_username": "service-account-i\u0307"}, false},
		// Keycloak names a service account "service-account-" and the
		// client id, lower-cased; a user whose name folds to it under
		// Unicode's simple folding (U+017F, long s, folds to s) is a user.
		{"a user named like a service account in another case", map[string]any{"sub": "a3-uuid", "client_id": "svc-app", "preferred_username": "\u017fervice-account-svc-app"}, false},
		{"a user named like a service account with a Kelvin sign", map[string]any{"sub": "a4-uuid", "client_id": "k-app", "preferred_username": "service-account-\u212a-app"}, false},
		// Claim names are case-sensitive (RFC 7519 section 4): a lone
		// variant is another claim, which an issuer that lets users name
		// claims of their own would sign for a user.
		{"a user with GTY client-credentials", map[string]any{"sub": "auth0|bob", "client_id": "svc-app", "GTY": "client-credentials"}, false},
		{"a user with Idtyp app", map[string]any{"sub": "bob-oid", "client_id": "svc-app", "Idtyp": "app"}, false},
		{"a user with Preferred_Username of a service account", map[string]any{"sub": "b1-uuid", "client_id": "svc-app", "Preferred_Username": "service-account-svc-app"}, false},
	}
	for _, tt := range tests {
		for _, tool := range []string{"human", "user_only"} {
			t.Run(tt.name+" "+tool, func(t *testing.T) {
				c := claims()
				for k, v := range tt.claims {
					c[k] = v
				}
				gotType.Store("")
				resp := h.do(t, call{body: toolCall(tool), token: mint(t, c)})
				body := readBody(t, resp)
				switch {
				case tt.client && resp.StatusCode != http.StatusForbidden:
					t.Errorf("a client's own token called %s: %d %s, want 403", tool, resp.StatusCode, body)
				case !tt.client && resp.StatusCode != http.StatusOK:
					t.Errorf("a user's token called %s: %d %s, want 200", tool, resp.StatusCode, body)
				case !tt.client && gotType.Load() != "user":
					t.Errorf("a user's token forwarded as %q", gotType.Load())
				}
			})
		}
		if tt.client {
			t.Run(tt.name+" forwarded", func(t *testing.T) {
				c := claims()
				for k, v := range tt.claims {
					c[k] = v
				}
				resp := h.do(t, call{body: toolCall("read_file"), token: mint(t, c)})
				if body := readBody(t, resp); resp.StatusCode != http.StatusOK || gotType.Load() != "client" {
					t.Errorf("read_file: %d %s, forwarded as %q, want 200 as client", resp.StatusCode, body, gotType.Load())
				}
			})
		}
	}
}

// TestTokenVariants: JWT header and claim variants.
func TestTokenVariants(t *testing.T) {
	k := theKeys(t)
	h := newHarness(t, testConfig(t), nil)
	hdr := func(mutate func(map[string]any)) string {
		return mintWith(t, jwt.SigningMethodES256, k.ec, "ec1", claims(), mutate)
	}
	with := func(mutate func(jwt.MapClaims)) string {
		c := claims()
		mutate(c)
		return mint(t, c)
	}
	tests := []struct {
		name   string
		token  string
		query  string
		status int
	}{
		{"crit header", hdr(func(h map[string]any) { h["crit"] = []string{"exp"} }), "", 401},
		{"crit unknown extension", hdr(func(h map[string]any) { h["crit"] = []string{"x-ext"}; h["x-ext"] = true }), "", 401},
		{"typ application/at+jwt", hdr(func(h map[string]any) { h["typ"] = "application/at+jwt" }), "", 200},
		{"typ AT+JWT", hdr(func(h map[string]any) { h["typ"] = "AT+JWT" }), "", 200},
		{"typ at+jwt with parameter", hdr(func(h map[string]any) { h["typ"] = "at+jwt; x=y" }), "", 401},
		{"kid path trick", hdr(func(h map[string]any) { h["kid"] = "../ec1" }), "", 401},
		{"kid not a string", hdr(func(h map[string]any) { h["kid"] = []string{"ec1"} }), "", 401},
		// RFC 9068 §4: aud must contain the resource; other entries are allowed.
		{"aud array with us", with(func(c jwt.MapClaims) { c["aud"] = []string{"https://other.example.com", testResource} }), "", 200},
		{"aud array without us", with(func(c jwt.MapClaims) { c["aud"] = []string{"https://other.example.com"} }), "", 401},
		{"aud with trailing slash", with(func(c jwt.MapClaims) { c["aud"] = testResource + "/" }), "", 401},
		{"exp as string", with(func(c jwt.MapClaims) { c["exp"] = "9999999999" }), "", 401},
		{"iss as array", with(func(c jwt.MapClaims) { c["iss"] = []string{testIssuer} }), "", 401},
		{"sub as number", with(func(c jwt.MapClaims) { c["sub"] = 7 }), "", 401},
		{"act without sub", with(func(c jwt.MapClaims) { c["act"] = map[string]any{"client_id": "x"} }), "", 401},
		{"token in query after a semicolon", "", "?x;access_token=" + mint(t, claims()), 400},
		{"token in query, encoded name", "", "?access%5Ftoken=" + mint(t, claims()), 400},
		{"token in query, upper case", "", "?ACCESS_TOKEN=" + mint(t, claims()), 400},
		{"token in query, mixed case", "", "?x=1&Access_Token=" + mint(t, claims()), 400},
		{"token in query, array name", "", "?access_token[]=" + mint(t, claims()), 400},
		{"token in query, array name encoded", "", "?access_token%5B0%5D=" + mint(t, claims()), 400},
		{"token in query, NUL in name", "", "?access_token%00x=" + mint(t, claims()), 400},
		// Letters an upstream's toUpperCase or EqualFold reads as ASCII.
		{"token in query, long s", "", "?acce%C5%BF%C5%BF_token=" + mint(t, claims()), 400},
		{"token in query, sharp s", "", "?acce%C3%9F_token=" + mint(t, claims()), 400},
		{"token in query, Kelvin sign", "", "?access_to%E2%84%AAen=" + mint(t, claims()), 400},
		// As PHP reads names: $_GET["access_token"] for each.
		{"token in query, PHP dot", "", "?access.token=" + mint(t, claims()), 400},
		{"token in query, PHP plus", "", "?access+token=" + mint(t, claims()), 400},
		{"token in query, PHP space", "", "?access%20token=" + mint(t, claims()), 400},
		{"token in query, PHP leading space", "", "?%20access_token=" + mint(t, claims()), 400},
		{"token in query, PHP unclosed bracket", "", "?access%5Btoken=" + mint(t, claims()), 400},
		{"token in query, PHP dot and array", "", "?access.token%5B%5D=" + mint(t, claims()), 400},
		// With brackets around it: Express's qs, Rack.
		{"token in query, bracketed", "", "?%5Baccess_token%5D=" + mint(t, claims()), 400},
		{"token in query, trailing bracket", "", "?access_token%5D=" + mint(t, claims()), 400},
		{"token in query, leading bracket", "", "?%5Daccess_token=" + mint(t, claims()), 400},
		{"token in query, leading open bracket", "", "?%5Baccess_token=" + mint(t, claims()), 400},
		{"token in query, double brackets", "", "?%5B%5Baccess_token%5D%5D=" + mint(t, claims()), 400},
		{"token in query, Spring field default", "", "?%21access_token=" + mint(t, claims()), 400},
		{"other query parameter", "", "?access_tokens=1&token=2&access=3&x.token=4&access_token_x=5&%5Baccess%5D=6", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			token := tt.token
			if token == "" {
				token = mint(t, claims())
			}
			resp := h.do(t, call{path: "/mcp" + tt.query, body: toolCall("read_a"), token: token})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if tt.status != 200 && len(h.up.requests()) != before {
				t.Fatal("refused request reached the upstream")
			}
		})
	}

	for _, auth := range []string{"bearer %s", "BEARER %s", "Bearer  %s"} {
		t.Run("scheme "+strings.TrimSuffix(auth, "%s"), func(t *testing.T) {
			resp := h.do(t, call{body: toolCall("read_a"), headers: map[string]string{"Authorization": fmt.Sprintf(auth, mint(t, claims()))}})
			readBody(t, resp)
			if resp.StatusCode != 200 {
				t.Errorf("Authorization %q: status = %d, want 200", auth, resp.StatusCode)
			}
		})
	}

	t.Run("embedded keys are ignored", func(t *testing.T) {
		// Signed by a key the issuer never published, which the token
		// carries itself (jwk) or points to (jku, x5u).
		own, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		evil := mintWith(t, jwt.SigningMethodES256, own, "ec1", claims(), func(h map[string]any) {
			h["jwk"] = map[string]any{"kty": "EC", "crv": "P-256", "kid": "ec1",
				"x": base64.RawURLEncoding.EncodeToString(own.X.FillBytes(make([]byte, 32))),
				"y": base64.RawURLEncoding.EncodeToString(own.Y.FillBytes(make([]byte, 32)))}
			h["jku"] = "https://evil.example.com/jwks"
			h["x5u"] = "https://evil.example.com/cert"
		})
		resp := h.do(t, call{body: toolCall("read_a"), token: evil})
		readBody(t, resp)
		if resp.StatusCode != 401 {
			t.Errorf("status = %d, want 401", resp.StatusCode)
		}
	})
}

// TestB64TokenChar: the bit sets hold exactly RFC 6750's b64token
// characters (ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/").
func TestB64TokenChar(t *testing.T) {
	for c := 0; c < 256; c++ {
		want := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/", byte(c)) >= 0
		if got := b64TokenChar(byte(c)); got != want {
			t.Errorf("b64TokenChar(%q) = %v, want %v", rune(c), got, want)
		}
	}
}

// TestEarlyDataMarkedByRFC8470Only: a request a proxy in front passed on
// as TLS early data is refused 425 when the proxy says so with RFC
// 8470's Early-Data (any value; Caddy's reverse_proxy, Cloudflare and
// Google Cloud's load balancers send it) and reaches no upstream. No
// other header is read as that mark: a proxy that marks early data its
// own way, or not at all, must not pass it on to the gateway (see HTTP/3
// in the README).
func TestEarlyDataMarkedByRFC8470Only(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	for _, tt := range []struct {
		header, value string
		status        int
	}{
		{"Early-Data", "1", http.StatusTooEarly},
		{"early-data", "0", http.StatusTooEarly},
		{"Cf-0rtt-Unique", "a1b2", http.StatusOK},
		{"X-Early-Data", "1", http.StatusOK},
	} {
		before := len(h.up.requests())
		resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, claims()), headers: map[string]string{tt.header: tt.value}})
		body := readBody(t, resp)
		if resp.StatusCode != tt.status {
			t.Errorf("%s: %s: %d %s, want %d", tt.header, tt.value, resp.StatusCode, body, tt.status)
		}
		if forwarded := len(h.up.requests()) > before; forwarded != (tt.status == http.StatusOK) {
			t.Errorf("%s: %s: forwarded %v", tt.header, tt.value, forwarded)
		}
	}
}

// TestUntrustedActorClaims: a remote issuer that lets users add claims
// of their own (a Keycloak user attribute mapper, an Auth0 Action) signs
// whatever a user puts in them. principal_type "agent" and an act naming
// an agent both make a user's token pass require_agent (and list the
// agent-only tools), so, from an issuer not trusted for them
// (Config.RefuseActorClaims), a token carrying either is refused, by JWT
// and by introspection; one without them is read as a user's. act can
// only narrow elsewhere (agents, user_only, max_depth), but require_agent
// grants with it.
func TestUntrustedActorClaims(t *testing.T) {
	f := newFakeIntrospection(t)
	cfg := introspectionConfig(t, f, nil)
	cfg.RefuseActorClaims = true
	h := newHarness(t, cfg, nil)
	tests := []struct {
		name   string
		extra  map[string]any
		tool   string
		status int
	}{
		{"no actor claims", nil, "read_a", 200},
		{"no actor claims, agent-only tool", nil, "agent_only", 403},
		{"act naming an agent", map[string]any{"act": map[string]any{"sub": "agent-1"}}, "agent_only", 401},
		{"act nested", map[string]any{"act": map[string]any{"sub": "agent-1", "act": map[string]any{"sub": "agent-2"}}}, "read_a", 401},
		{"principal_type agent", map[string]any{"principal_type": "agent"}, "agent_only", 401},
		{"principal_type user", map[string]any{"principal_type": "user"}, "read_a", 401},
		// Another spelling is another claim (RFC 7519 section 4),
		// which nothing reads: the token is a user's.
		{"Act in another case", map[string]any{"Act": map[string]any{"sub": "agent-1"}}, "agent_only", 403},
		{"act not an object", map[string]any{"act": "agent-1"}, "read_a", 401},
		{"act null", map[string]any{"act": nil}, "read_a", 401},
	}
	for i, tt := range tests {
		for _, kind := range []string{"jwt", "introspected"} {
			t.Run(tt.name+" "+kind, func(t *testing.T) {
				var token string
				if kind == "jwt" {
					c := claims()
					maps.Copy(c, tt.extra)
					token = mint(t, c)
				} else {
					a := active()
					maps.Copy(a, tt.extra)
					token = fmt.Sprintf("opaque-actor-%d", i)
					f.set(token, a)
				}
				before := len(h.up.requests())
				resp := h.do(t, call{body: toolCall(tt.tool), token: token})
				body := readBody(t, resp)
				if resp.StatusCode != tt.status {
					t.Fatalf("status = %d, want %d (%s %s)", resp.StatusCode, tt.status, body, resp.Header.Get("WWW-Authenticate"))
				}
				if tt.status == 401 && !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
					t.Errorf("WWW-Authenticate = %q, want invalid_token", resp.Header.Get("WWW-Authenticate"))
				}
				if tt.status != 200 && len(h.up.requests()) != before {
					t.Error("refused request reached the upstream")
				}
			})
		}
	}
}
