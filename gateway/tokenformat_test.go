package gateway

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestTokenFormatsOfOtherIssuers: the JWT forms other authorization
// servers issue. typ JWT or none is refused unless AcceptTypJWT, and even
// then an ID token is refused; scp and azp stand in for scope and
// client_id; Audience replaces the resource in aud.
func TestTokenFormatsOfOtherIssuers(t *testing.T) {
	k := theKeys(t)
	token := func(typ any, mutate func(jwt.MapClaims)) string {
		c := claims()
		if mutate != nil {
			mutate(c)
		}
		return mintWith(t, jwt.SigningMethodES256, k.ec, "ec1", c, func(h map[string]any) {
			if typ == nil {
				delete(h, "typ")
			} else {
				h["typ"] = typ
			}
		})
	}
	scp := func(v any) func(jwt.MapClaims) {
		return func(c jwt.MapClaims) { delete(c, "scope"); c["scp"] = v }
	}
	const api = "api://mcp-notes"
	tests := []struct {
		name            string
		token           string
		audience        string
		strict, lenient int // status without and with AcceptTypJWT
		desc            string
	}{
		{"at+jwt", token("at+jwt", nil), "", 200, 200, ""},
		{"typ JWT", token("JWT", nil), "", 401, 200, "typ at+jwt"},
		{"typ jwt lower case", token("jwt", nil), "", 401, 200, "typ at+jwt"},
		{"typ application/jwt", token("application/jwt", nil), "", 401, 200, "typ at+jwt"},
		{"no typ", token(nil, nil), "", 401, 200, "typ at+jwt"},
		{"typ not a string", token(7, nil), "", 401, 401, "typ at+jwt"},
		{"typ id_token+jwt", token("id_token+jwt", nil), "", 401, 401, "typ at+jwt"},
		{"typ JWT with scp array", token("JWT", scp([]string{"mcp", "tools:read"})), "", 401, 200, "typ at+jwt"},
		{"at+jwt with scp string", token("at+jwt", scp("mcp tools:read")), "", 200, 200, ""},
		{"scp without the scope", token("at+jwt", scp([]string{"mcp"})), "", 403, 403, "insufficient_scope"},
		{"scope and scp", token("at+jwt", func(c jwt.MapClaims) { c["scp"] = "admin" }), "", 401, 401, "malformed scp"},
		{"scp a number", token("at+jwt", scp(7)), "", 401, 401, "malformed scp"},
		{"azp for client_id", token("JWT", func(c jwt.MapClaims) { delete(c, "client_id"); c["azp"] = "client-1" }), "", 401, 200, "typ at+jwt"},
		{"azp and client_id differ", token("at+jwt", func(c jwt.MapClaims) { c["azp"] = "client-2" }), "", 401, 401, "malformed azp"},
		// ID tokens: refused by claims when typ does not tell.
		{"ID token with nonce", token("JWT", func(c jwt.MapClaims) { c["nonce"] = "n" }), "", 401, 401, "invalid_token"},
		{"ID token with at_hash", token(nil, func(c jwt.MapClaims) { c["at_hash"] = "h" }), "", 401, 401, "invalid_token"},
		{"ID token: aud is the client (azp)", token("JWT", func(c jwt.MapClaims) {
			delete(c, "client_id")
			c["azp"], c["aud"] = "client-1", []string{testResource, "client-1"}
		}), "", 401, 401, ""},
		{"ID token: aud is the client (client_id)", token("JWT", func(c jwt.MapClaims) { c["aud"] = []string{"client-1", testResource} }), "", 401, 401, ""},
		{"ID token for a client used as audience", token("JWT", func(c jwt.MapClaims) {
			delete(c, "client_id")
			c["aud"], c["nonce"] = "client-1", "n"
		}), "client-1", 401, 401, ""},
		// Audience: an API identifier in place of the resource URL.
		{"API audience", token("at+jwt", func(c jwt.MapClaims) { c["aud"] = api }), api, 200, 200, ""},
		{"resource audience when an API audience is set", token("at+jwt", nil), api, 401, 401, "not for this resource"},
		{"API audience not configured", token("at+jwt", func(c jwt.MapClaims) { c["aud"] = api }), "", 401, 401, "not for this resource"},
	}
	for _, lenient := range []bool{false, true} {
		for _, tt := range tests {
			t.Run(tt.name+map[bool]string{false: " strict", true: " lenient"}[lenient], func(t *testing.T) {
				cfg := testConfig(t)
				cfg.AcceptTypJWT = lenient
				cfg.Audience = tt.audience
				h := newHarness(t, cfg, nil)
				resp := h.do(t, call{body: toolCall("read_a"), token: tt.token})
				body := readBody(t, resp)
				want := tt.strict
				if lenient {
					want = tt.lenient
				}
				if resp.StatusCode != want {
					t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, want, body)
				}
				if got := body + resp.Header.Get("WWW-Authenticate"); want != 200 && !strings.Contains(got, tt.desc) {
					t.Errorf("answer %q lacks %q", got, tt.desc)
				}
				if lenient && strings.HasPrefix(tt.name, "ID token") && (!strings.Contains(body, "an ID token is not an access token") ||
					!strings.Contains(resp.Header.Get("WWW-Authenticate"), `error_description="an ID token is not an access token"`)) {
					t.Errorf("body = %s, WWW-Authenticate = %q; want the ID token refusal in both", body, resp.Header.Get("WWW-Authenticate"))
				}
				if want != 200 && len(h.up.requests()) != 0 {
					t.Fatal("refused request reached the upstream")
				}
			})
		}
	}
	t.Run("metadata names the resource with an API audience", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Audience = api
		h := newHarness(t, cfg, nil)
		resp := h.do(t, call{method: http.MethodGet, path: "/.well-known/oauth-protected-resource/mcp"})
		if body := readBody(t, resp); !strings.Contains(body, `"resource":"`+testResource+`"`) || strings.Contains(body, api) {
			t.Errorf("metadata = %s, want resource %s and no %s", body, testResource, api)
		}
	})
}

// TestRemoteKeysUnknownKidFlood: requests for made-up kids, concurrent
// and over several refetch intervals, refetch the JWKS at most once per
// interval.
func TestRemoteKeysUnknownKidFlood(t *testing.T) {
	k := theKeys(t)
	f := newFakeIssuer(t, "", false)
	f.jwks.Store([]map[string]any{edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
	rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
	t.Cleanup(rk.Close)
	var mu sync.Mutex
	now := testNow
	rk.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	const intervals = 4
	for i := range intervals {
		var wg sync.WaitGroup
		for j := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := rk.PublicKey(context.Background(), "made-up-"+string(rune('a'+j%26))); err == nil {
					t.Error("a made-up kid was found")
				}
			}()
		}
		wg.Wait()
		if got, want := f.jwksHits.Load(), int32(i+1); got != want {
			t.Fatalf("after interval %d: JWKS fetches = %d, want %d", i+1, got, want)
		}
		mu.Lock()
		now = now.Add(rk.refetchInterval)
		mu.Unlock()
	}
	// The known key is still served from memory.
	before := f.jwksHits.Load()
	if _, err := rk.PublicKey(context.Background(), "ed1"); err != nil {
		t.Fatal(err)
	}
	if f.jwksHits.Load() != before {
		t.Error("a known kid caused a fetch")
	}
}

// TestScopeSeparators: scopes are separated by the space character only
// (RFC 6749 §3.3). A scope an issuer issued as one, holding another
// white space (a dynamic scope's parameter, say), is one scope that no
// rule names, not several: "tools:read<NBSP>admin" is not admin.
func TestScopeSeparators(t *testing.T) {
	f := newFakeIntrospection(t)
	h := newHarness(t, introspectionConfig(t, f, nil), nil)
	for _, sep := range []string{"\u00a0", "\u2003", "\u3000", "\u0085", "\t", "\n", "\v", "\f", "\r"} {
		scope := "mcp tools:read" + sep + "admin"
		for form, mk := range map[string]func() string{
			"scope": func() string { c := claims(); c["scope"] = scope; return mint(t, c) },
			"scp": func() string {
				c := claims()
				delete(c, "scope")
				c["scp"] = scope
				return mint(t, c)
			},
			"scp array": func() string {
				c := claims()
				delete(c, "scope")
				c["scp"] = []string{"mcp", "tools:read" + sep + "admin"}
				return mint(t, c)
			},
			"introspection": func() string {
				a := active()
				a["scope"] = scope
				tok := "opaque-" + strings.Trim(strconv.Quote(sep), `"\`) + "-scope"
				f.set(tok, a)
				return tok
			},
		} {
			t.Run(strconv.QuoteToASCII(sep)+" "+form, func(t *testing.T) {
				resp := h.do(t, call{body: toolCall("delete_x"), token: mk()})
				body := readBody(t, resp)
				if resp.StatusCode == http.StatusOK {
					t.Fatalf("delete_x with scope %q passed as admin: %s", scope, body)
				}
			})
		}
	}
}

// TestRemoteKeysUnknownKidCheap: within the refetch interval a made-up
// kid, which anyone may send, is refused from memory: no fetch call is
// begun for it (a goroutine, a channel), so it allocates nothing.
func TestRemoteKeysUnknownKidCheap(t *testing.T) {
	k := theKeys(t)
	f := newFakeIssuer(t, "", false)
	f.jwks.Store([]map[string]any{edJWK("ed1", k.ed.Public().(ed25519.PublicKey))})
	rk := NewRemoteKeys(f.issuer, f.srv.Client(), nil)
	t.Cleanup(rk.Close)
	rk.now = func() time.Time { return testNow }
	ctx := context.Background()
	if _, err := rk.PublicKey(ctx, "ed1"); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := rk.PublicKey(ctx, "made-up"); !errors.Is(err, ErrUnknownKey) {
			t.Errorf("PublicKey(made-up) = %v, want ErrUnknownKey", err)
		}
	})
	if allocs != 0 {
		t.Errorf("PublicKey(made-up) within the refetch interval: %v allocations, want 0", allocs)
	}
	if n := f.jwksHits.Load(); n != 1 {
		t.Errorf("JWKS fetches = %d, want 1", n)
	}
}
