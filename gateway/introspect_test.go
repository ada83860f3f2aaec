package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	gwClientID     = "gateway-rs"
	gwClientSecret = "gateway secret/+&"
)

// fakeIntrospection is an RFC 7662 endpoint that checks the gateway's
// credentials and answers from a table of tokens.
type fakeIntrospection struct {
	srv     *httptest.Server
	calls   atomic.Int32
	mu      sync.Mutex
	answers map[string]func(w http.ResponseWriter) // by token
}

func newFakeIntrospection(t *testing.T) *fakeIntrospection {
	f := &fakeIntrospection{answers: map[string]func(http.ResponseWriter){}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.calls.Add(1)
		// RFC 6749 §2.3.1: both are form-encoded before Basic.
		id, secret, ok := r.BasicAuth()
		secret, err := url.QueryUnescape(secret)
		if r.Method != http.MethodPost || !ok || err != nil || id != gwClientID || secret != gwClientSecret {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		if r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.FormValue("token_type_hint") != "access_token" {
			http.Error(w, `{"error":"invalid_request"}`, http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		answer := f.answers[r.PostFormValue("token")]
		f.mu.Unlock()
		if answer == nil {
			io.WriteString(w, `{"active":false}`)
			return
		}
		answer(w)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// set makes token's answer v as JSON (a string is sent as is).
func (f *fakeIntrospection) set(token string, v any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[token] = func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		if s, ok := v.(string); ok {
			io.WriteString(w, s)
			return
		}
		json.NewEncoder(w).Encode(v)
	}
}

func (f *fakeIntrospection) setFunc(token string, fn func(w http.ResponseWriter)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[token] = fn
}

// active is an answer for an active token; mutate to taste.
func active() map[string]any {
	return map[string]any{
		"active": true, "iss": testIssuer, "aud": testResource, "sub": "alice",
		"client_id": "client-1", "scope": "mcp tools:read", "token_type": "Bearer",
		"iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix(), "jti": "op-1",
	}
}

// padJSON is v as a JSON object padded with spaces to size bytes.
func padJSON(t *testing.T, v map[string]any, size int) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil || len(b) > size {
		t.Fatalf("padJSON: %d bytes, %v", len(b), err)
	}
	return string(b[:len(b)-1]) + strings.Repeat(" ", size-len(b)) + "}"
}

// dupMember is v as a JSON object that names name first with raw and
// then with v's own value (or only with raw, when v has none).
func dupMember(v map[string]any, name, raw string) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return `{"` + name + `":` + raw + `,` + string(b[1:])
}

// clock is a settable test clock, safe to read from the server's
// goroutines (audit events are written after the response).
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time)     { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }

func introspectionConfig(t *testing.T, f *fakeIntrospection, now *clock) Config {
	t.Helper()
	ri, err := NewRemoteIntrospection(testIssuer, f.srv.URL+"/introspect", gwClientID, gwClientSecret, f.srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	// The call's own timeout stays RemoteIntrospection's 5 s: a loaded
	// machine (every package at once, under -race) must still get the
	// fake endpoint's answers; the tests of the timeout set their own.
	cfg := testConfig(t)
	cfg.Introspector = ri
	cfg.IntrospectionCache = 5 * time.Minute
	if now != nil {
		cfg.Now = now.now
	}
	return cfg
}

// TestIntrospectionAnswers: what an introspection answer must say for an
// opaque token to pass, and how every failure of the endpoint is refused.
func TestIntrospectionAnswers(t *testing.T) {
	f := newFakeIntrospection(t)
	h := newHarness(t, introspectionConfig(t, f, nil), nil)
	with := func(mutate func(map[string]any)) map[string]any {
		a := active()
		mutate(a)
		return a
	}
	tests := []struct {
		name   string
		answer any // JSON value, or a raw string
		fn     func(w http.ResponseWriter)
		tool   string
		status int
		desc   string // in the answer's body
	}{
		{"active", active(), nil, "read_a", 200, ""},
		{"inactive", map[string]any{"active": false}, nil, "read_a", 401, "not active"},
		{"wrong audience", with(func(a map[string]any) { a["aud"] = "https://other.example.com/mcp" }), nil, "read_a", 401, "not for this resource"},
		{"audience array with us", with(func(a map[string]any) { a["aud"] = []string{"https://other.example.com", testResource} }), nil, "read_a", 200, ""},
		{"no audience", with(func(a map[string]any) { delete(a, "aud") }), nil, "read_a", 401, "lacks a required claim"},
		{"expired", with(func(a map[string]any) { a["exp"] = testNow.Add(-time.Minute).Unix() }), nil, "read_a", 401, "expired"},
		{"no exp", with(func(a map[string]any) { delete(a, "exp") }), nil, "read_a", 401, "lacks a required claim"},
		{"other issuer", with(func(a map[string]any) { a["iss"] = "https://evil.example.com" }), nil, "read_a", 401, "another issuer"},
		{"no issuer", with(func(a map[string]any) { delete(a, "iss") }), nil, "read_a", 401, "lacks a required claim"},
		{"refresh token", with(func(a map[string]any) { a["token_type"] = "refresh_token" }), nil, "read_a", 401, "not an access token"},
		{"no token_type", with(func(a map[string]any) { delete(a, "token_type") }), nil, "read_a", 200, ""},
		// Duende IdentityServer's words for what the token is.
		{"token_type access_token", with(func(a map[string]any) { a["token_type"] = "access_token" }), nil, "read_a", 200, ""},
		{"token_type access_token, bound, sent as Bearer", with(func(a map[string]any) {
			a["token_type"] = "access_token"
			a["cnf"] = map[string]any{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
		}), nil, "read_a", 401, "DPoP-bound"},
		{"token_type id_token", with(func(a map[string]any) { a["token_type"] = "id_token" }), nil, "read_a", 401, "not an access token"},
		// Other servers' words for a refresh or ID token (Hydra, Keycloak).
		{"token_use refresh_token", with(func(a map[string]any) { a["token_use"] = "refresh_token" }), nil, "read_a", 401, "not an access token"},
		{"token_use access_token", with(func(a map[string]any) { a["token_use"] = "access_token" }), nil, "read_a", 200, ""},
		{"typ Refresh", with(func(a map[string]any) { a["typ"] = "Refresh" }), nil, "read_a", 401, "not an access token"},
		{"typ ID", with(func(a map[string]any) { delete(a, "token_type"); a["typ"] = "ID" }), nil, "read_a", 401, "not an access token"},
		{"typ Bearer", with(func(a map[string]any) { a["typ"] = "Bearer" }), nil, "read_a", 200, ""},
		{"typ not a string", with(func(a map[string]any) { a["typ"] = 1 }), nil, "read_a", 401, "not an access token"},
		{"DPoP-bound, sent as Bearer", with(func(a map[string]any) {
			a["token_type"] = "DPoP"
			a["cnf"] = map[string]any{"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
		}), nil, "read_a", 401, "DPoP-bound"},
		{"token_type DPoP without cnf", with(func(a map[string]any) { a["token_type"] = "DPoP" }), nil, "read_a", 401, "names no key"},
		{"no sub", with(func(a map[string]any) { delete(a, "sub") }), nil, "read_a", 401, "lacks sub"},
		{"azp for client_id", with(func(a map[string]any) { delete(a, "client_id"); a["azp"] = "client-1" }), nil, "read_a", 200, ""},
		{"azp and client_id differ", with(func(a map[string]any) { a["azp"] = "client-2" }), nil, "read_a", 401, "malformed azp"},
		{"no client", with(func(a map[string]any) { delete(a, "client_id") }), nil, "read_a", 401, "lacks client_id"},
		{"scp array", with(func(a map[string]any) { delete(a, "scope"); a["scp"] = []string{"mcp", "tools:read"} }), nil, "read_a", 200, ""},
		{"scp string", with(func(a map[string]any) { delete(a, "scope"); a["scp"] = "mcp tools:read" }), nil, "read_a", 200, ""},
		{"scp lacking the scope", with(func(a map[string]any) { delete(a, "scope"); a["scp"] = []string{"mcp"} }), nil, "read_a", 403, "insufficient_scope"},
		{"scp element with a space", with(func(a map[string]any) { delete(a, "scope"); a["scp"] = []string{"mcp tools:read"} }), nil, "read_a", 401, "malformed scp"},
		{"scope and scp", with(func(a map[string]any) { a["scp"] = []string{"admin"} }), nil, "read_a", 401, "malformed scp"},
		{"act read", with(func(a map[string]any) { a["act"] = map[string]any{"sub": "agent-1"} }), nil, "agent_only", 200, ""},
		{"no act", active(), nil, "agent_only", 403, "an agent is required"},
		// RFC 9449 §6.2: the binding of an opaque token is in the answer.
		{"DPoP-bound, sent as Bearer", with(func(a map[string]any) { a["token_type"] = "DPoP"; a["cnf"] = map[string]any{"jkt": "abc"} }), nil, "read_a", 401, "DPoP-bound"},
		{"bound to a certificate", with(func(a map[string]any) { a["cnf"] = map[string]any{"x5t#S256": "abc"} }), nil, "read_a", 401, "malformed cnf"},
		{"active as a string", with(func(a map[string]any) { a["active"] = "true" }), nil, "read_a", 503, "cannot be checked"},
		{"no active", with(func(a map[string]any) { delete(a, "active") }), nil, "read_a", 503, "cannot be checked"},
		{"not JSON", "<html>hello</html>", nil, "read_a", 503, "cannot be checked"},
		// A member named twice is read as the last by some parsers and
		// the first by others: the answer is not read at all.
		{"active twice", dupMember(active(), "active", "false"), nil, "read_a", 503, "cannot be checked"},
		{"aud twice", dupMember(active(), "aud", `"https://other.example.com/mcp"`), nil, "read_a", 503, "cannot be checked"},
		{"active in another case", dupMember(active(), "Active", "false"), nil, "read_a", 503, "cannot be checked"},
		{"JSON array", `[{"active":true}]`, nil, "read_a", 503, "cannot be checked"},
		{"server error", nil, func(w http.ResponseWriter) { http.Error(w, "down", http.StatusInternalServerError) }, "read_a", 503, "cannot be checked"},
		{"oversized answer", nil, func(w http.ResponseWriter) {
			io.WriteString(w, `{"active":true,"x":"`+strings.Repeat("a", 70<<10)+`"}`)
		}, "read_a", 503, "cannot be checked"},
		// README: more than 64 KiB cannot be read; 64 KiB can.
		{"answer of 64 KiB", nil, func(w http.ResponseWriter) { io.WriteString(w, padJSON(t, active(), 64<<10)) }, "read_a", 200, ""},
		{"answer of 64 KiB and a byte", nil, func(w http.ResponseWriter) { io.WriteString(w, padJSON(t, active(), 64<<10+1)) }, "read_a", 503, "cannot be checked"},
	}
	ri, err := NewRemoteIntrospection(testIssuer, "https://as.example/introspect", gwClientID, gwClientSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	if documented := 5 * time.Second; ri.timeout != documented || ri.maxBytes != 64<<10 {
		t.Errorf("introspection call timeout, answer limit = %v, %d; README says %v, 64 KiB", ri.timeout, ri.maxBytes, documented)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := "opaque-" + strings.Repeat("x", i+1)
			if tt.fn != nil {
				f.setFunc(token, tt.fn)
			} else {
				f.set(token, tt.answer)
			}
			before := len(h.up.requests())
			resp := h.do(t, call{body: toolCall(tt.tool), token: token})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if got := body + resp.Header.Get("WWW-Authenticate"); !strings.Contains(got, tt.desc) {
				t.Errorf("answer %q lacks %q", got, tt.desc)
			}
			if tt.status == 503 && (resp.Header.Get("WWW-Authenticate") != "" || resp.Header.Get("Retry-After") != "1") {
				t.Errorf("503 with a challenge %q, Retry-After %q; want none, 1", resp.Header.Get("WWW-Authenticate"), resp.Header.Get("Retry-After"))
			}
			if tt.status != 200 && len(h.up.requests()) != before {
				t.Fatal("refused request reached the upstream")
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		// An endpoint that answers active, but only after the gateway
		// has given up (it waits for the call to be abandoned): a
		// gateway without the timeout would let the token pass.
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.ParseForm() // the body read, the server watches the connection
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(active())
		}))
		defer srv.Close()
		ri, err := NewRemoteIntrospection(testIssuer, srv.URL+"/introspect", gwClientID, gwClientSecret, srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		ri.timeout = 200 * time.Millisecond
		cfg := testConfig(t)
		cfg.Introspector = ri
		h := newHarness(t, cfg, nil)
		resp := h.do(t, call{body: toolCall("read_a"), token: "opaque-slow"})
		if body := readBody(t, resp); resp.StatusCode != 503 || !strings.Contains(body, "cannot be checked") {
			t.Fatalf("status = %d %s, want 503 cannot be checked", resp.StatusCode, body)
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		ri, err := NewRemoteIntrospection(testIssuer, f.srv.URL+"/introspect", gwClientID, "wrong", f.srv.Client())
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t)
		cfg.Introspector = ri
		f.set("opaque-creds", active())
		h := newHarness(t, cfg, nil)
		resp := h.do(t, call{body: toolCall("read_a"), token: "opaque-creds"})
		if body := readBody(t, resp); resp.StatusCode != 503 {
			t.Fatalf("status = %d, want 503 (%s)", resp.StatusCode, body)
		}
	})
	t.Run("without an introspector", func(t *testing.T) {
		f.set("opaque-none", active())
		h := newHarness(t, testConfig(t), nil)
		before := f.calls.Load()
		resp := h.do(t, call{body: toolCall("read_a"), token: "opaque-none"})
		if body := readBody(t, resp); resp.StatusCode != 401 {
			t.Fatalf("status = %d, want 401 (%s)", resp.StatusCode, body)
		}
		if f.calls.Load() != before {
			t.Error("introspection asked without an introspector")
		}
	})
	t.Run("opaque tokens with two dots are introspected", func(t *testing.T) {
		// Tokens of other formats have two dots too (a PASETO local
		// token without footer, a product's prefix.key.secret): they
		// are no JWT, whose header is a JSON object, and only the
		// issuer can say what they are.
		for _, token := range []string{"v4.local.c2VjcmV0LWJsb2I", "at.k1.c2VjcmV0", "WzFd.a.b"} {
			f.set(token, active())
			before := f.calls.Load()
			resp := h.do(t, call{body: toolCall("read_a"), token: token})
			if body := readBody(t, resp); resp.StatusCode != 200 {
				t.Fatalf("%s: status = %d, want 200 (%s)", token, resp.StatusCode, body)
			}
			if f.calls.Load() != before+1 {
				t.Errorf("%s: introspection calls = %d, want 1", token, f.calls.Load()-before)
			}
		}
	})
	t.Run("forged JWTs are not introspected", func(t *testing.T) {
		// A JWT whose signature fails is refused as a JWT: it is not
		// sent on to the endpoint, which would take it for a token of
		// its own format.
		good := mint(t, claims())
		parts := strings.Split(good, ".")
		forged := parts[0] + "." + parts[1] + ".c2lnbmF0dXJl"
		f.set(forged, active())
		before := f.calls.Load()
		resp := h.do(t, call{body: toolCall("read_a"), token: forged})
		if body := readBody(t, resp); resp.StatusCode != 401 {
			t.Fatalf("status = %d, want 401 (%s)", resp.StatusCode, body)
		}
		if f.calls.Load() != before {
			t.Error("a JWT was sent to introspection")
		}
	})
	t.Run("leniently encoded JWT headers are not introspected", func(t *testing.T) {
		// JWT libraries read headers more leniently than base64url JSON:
		// the standard alphabet and characters outside it (Node's
		// Buffer, Python's urlsafe_b64decode, Nimbus), a dangling
		// character, a BOM, data after the object (Jackson, so jjwt),
		// names unquoted (Gson, so Nimbus). A token such a reader takes
		// for a JWT is one, and is not sent on to introspection.
		enc := func(h string) string { return base64.RawStdEncoding.EncodeToString([]byte(h)) }
		good := mint(t, claims())
		parts := strings.Split(good, ".")
		body := "." + parts[1] + ".c2lnbmF0dXJl"
		std := enc(`{"alg":"ES256","typ":"at+jwt","kid":"ec1","x":"???>>>"}`)
		if !strings.ContainsAny(std, "+/") {
			t.Fatalf("header %s has no character of the standard alphabet", std)
		}
		for name, head := range map[string]string{
			"standard alphabet": std,
			"tilde inside":      parts[0][:4] + "~" + parts[0][4:],
			"dangling":          parts[0] + "A",
			"BOM":               enc("\ufeff" + `{"alg":"ES256","typ":"at+jwt","kid":"ec1"}`),
			"leading space":     enc(` {"alg":"ES256","typ":"at+jwt","kid":"ec1"}`),
			"data after":        enc(`{"alg":"ES256","typ":"at+jwt","kid":"ec1"}x`),
			"unquoted names":    enc(`{alg:"ES256",typ:"at+jwt",kid:"ec1"}`),
		} {
			forged := head + body
			f.set(forged, active())
			before := f.calls.Load()
			resp := h.do(t, call{body: toolCall("read_a"), token: forged})
			if body := readBody(t, resp); resp.StatusCode != 401 {
				t.Errorf("%s: status = %d, want 401 (%s)", name, resp.StatusCode, body)
			}
			if f.calls.Load() != before {
				t.Errorf("%s: a JWT was sent to introspection", name)
			}
		}
	})
	t.Run("JWTs are not introspected", func(t *testing.T) {
		before := f.calls.Load()
		resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, claims())})
		if body := readBody(t, resp); resp.StatusCode != 200 {
			t.Fatalf("status = %d, want 200 (%s)", resp.StatusCode, body)
		}
		if f.calls.Load() != before {
			t.Error("a JWT was sent to introspection")
		}
	})
}

// TestIntrospectionCache: an active answer is reused until the cache
// ceiling or the token's exp, whichever comes first; an inactive one for
// InactiveCache; failures are not cached.
func TestIntrospectionCache(t *testing.T) {
	f := newFakeIntrospection(t)
	now := &clock{t: testNow}
	cfg := introspectionConfig(t, f, now)
	cfg.InactiveCache = 10 * time.Second
	h := newHarness(t, cfg, nil)
	status := func(token string) int {
		t.Helper()
		resp := h.do(t, call{body: toolCall("read_a"), token: token})
		readBody(t, resp)
		return resp.StatusCode
	}
	calls := func() int32 { return f.calls.Load() }

	t.Run("ceiling", func(t *testing.T) {
		f.set("tok-ceiling", active())
		start := calls()
		for range 3 {
			if s := status("tok-ceiling"); s != 200 {
				t.Fatalf("status = %d, want 200", s)
			}
		}
		if n := calls() - start; n != 1 {
			t.Errorf("introspection calls = %d, want 1 (cached)", n)
		}
		// Revoked at the issuer: still served from the cache until the
		// ceiling, refused after.
		f.set("tok-ceiling", map[string]any{"active": false})
		now.add(5*time.Minute - time.Second)
		if s := status("tok-ceiling"); s != 200 {
			t.Fatalf("within the ceiling: status = %d, want 200", s)
		}
		now.add(time.Second)
		if s := status("tok-ceiling"); s != 401 {
			t.Fatalf("at the ceiling: status = %d, want 401", s)
		}
		now.set(testNow)
	})
	t.Run("exp before the ceiling", func(t *testing.T) {
		a := active()
		a["exp"] = now.now().Add(time.Minute).Unix()
		f.set("tok-exp", a)
		if s := status("tok-exp"); s != 200 {
			t.Fatalf("status = %d, want 200", s)
		}
		start := calls()
		now.add(time.Minute + tokenLeeway + time.Second)
		if s := status("tok-exp"); s != 401 {
			t.Fatalf("after exp: status = %d, want 401", s)
		}
		if calls() == start {
			t.Error("the cached answer was used past the token's exp")
		}
		now.set(testNow)
	})
	t.Run("inactive", func(t *testing.T) {
		f.set("tok-inactive", map[string]any{"active": false})
		start := calls()
		for range 3 {
			if s := status("tok-inactive"); s != 401 {
				t.Fatalf("status = %d, want 401", s)
			}
		}
		if n := calls() - start; n != 1 {
			t.Errorf("introspection calls = %d, want 1 (negative cache)", n)
		}
		f.set("tok-inactive", active())
		now.add(10 * time.Second)
		if s := status("tok-inactive"); s != 200 {
			t.Fatalf("after the negative cache: status = %d, want 200", s)
		}
		now.set(testNow)
	})
	t.Run("failures are not cached", func(t *testing.T) {
		f.setFunc("tok-down", func(w http.ResponseWriter) { http.Error(w, "down", http.StatusBadGateway) })
		if s := status("tok-down"); s != 503 {
			t.Fatalf("status = %d, want 503", s)
		}
		f.set("tok-down", active())
		if s := status("tok-down"); s != 200 {
			t.Fatalf("after recovery: status = %d, want 200", s)
		}
	})
	// README (Introspection): an active answer is reused for at most
	// `cache`, default 1m; an inactive one for 10 s, at most `cache`.
	t.Run("documented defaults", func(t *testing.T) {
		for _, tt := range []struct {
			name, token      string
			cache            time.Duration // configured; 0 the default
			active, inactive time.Duration // reuse documented
		}{
			{"cache left out", "unset", 0, time.Minute, 10 * time.Second},
			{"cache 3s", "3s", 3 * time.Second, 3 * time.Second, 3 * time.Second},
		} {
			t.Run(tt.name, func(t *testing.T) {
				now := &clock{t: testNow}
				cfg := introspectionConfig(t, f, now)
				cfg.IntrospectionCache = tt.cache
				h := newHarness(t, cfg, nil)
				status := func(token string) int {
					t.Helper()
					resp := h.do(t, call{body: toolCall("read_a"), token: token})
					readBody(t, resp)
					return resp.StatusCode
				}
				// Each answer is cached once, then the endpoint says the
				// opposite: the cached answer stands until the documented
				// bound, and not at it.
				for _, c := range []struct {
					token       string
					first, then map[string]any
					reuse       time.Duration
					cached, new int
				}{
					{"tok-default-active-" + tt.token, active(), map[string]any{"active": false}, tt.active, 200, 401},
					{"tok-default-inactive-" + tt.token, map[string]any{"active": false}, active(), tt.inactive, 401, 200},
				} {
					now.set(testNow)
					f.set(c.token, c.first)
					if s := status(c.token); s != c.cached {
						t.Fatalf("%s: status = %d, want %d", c.token, s, c.cached)
					}
					f.set(c.token, c.then)
					now.add(c.reuse - time.Second)
					if s := status(c.token); s != c.cached {
						t.Errorf("%s: %v after the answer: status = %d, want %d (reused for %v)", c.token, c.reuse-time.Second, s, c.cached, c.reuse)
					}
					now.add(time.Second)
					if s := status(c.token); s != c.new {
						t.Errorf("%s: %v after the answer: status = %d, want %d (reused no longer than %v)", c.token, c.reuse, s, c.new, c.reuse)
					}
				}
			})
		}
	})
	t.Run("negative cache bounded", func(t *testing.T) {
		g := h.g
		for i := range 3 * inactiveCacheSize / 2 {
			var key [32]byte
			key[0], key[1], key[2] = byte(i), byte(i>>8), byte(i>>16)
			g.inactive.put(key, nil, now.now().Add(time.Hour), now.now())
		}
		if n := len(g.inactive.entries); n > inactiveCacheSize {
			t.Errorf("negative cache size = %d, want at most %d", n, inactiveCacheSize)
		}
		// README: "for at most 10,000 tokens", in numbers, not through
		// inactiveCacheSize: full, it holds no more, and no fewer than
		// the nine tenths a full cache is cut to.
		if n := len(g.inactive.entries); n > 10_000 || n < 9_000 {
			t.Errorf("negative cache size after %d inactive tokens = %d, want 9,000 to 10,000 (README: at most 10,000)", 3*inactiveCacheSize/2, n)
		}
	})
}

// TestIntrospectionFanOut: made-up opaque tokens cost the gateway's
// client calls of the remote introspection endpoint (review s13-dos F4).
// One token sent many times at once costs one call, whose answer every
// request shares; distinct tokens at once have at most
// maxIntrospectionsInFlight calls open, and the requests that find no
// free call within introspectionSlotWait are refused with 503, as when
// the endpoint is unavailable.
func TestIntrospectionFanOut(t *testing.T) {
	f := newFakeIntrospection(t)
	cfg := introspectionConfig(t, f, nil)
	// Held calls must not time out before the test lets them answer.
	cfg.Introspector.(*RemoteIntrospection).timeout = 10 * time.Second
	// As Caddy's adapter gives its client_ip: made-up tokens from many
	// addresses, each within its share.
	cfg.ClientAddr = func(r *http.Request) string { return r.Header.Get("X-Test-Client") }
	h := newHarness(t, cfg, nil)
	// README: "at most 16 open at once: a request that finds none free
	// within 3 s is refused", in numbers, not through the constants the
	// checks below count with.
	if maxIntrospectionsInFlight != 16 || h.g.introspections.slotWait != 3*time.Second {
		t.Errorf("introspection calls open at once, wait for a free one = %d, %v; README says 16, 3s", maxIntrospectionsInFlight, h.g.introspections.slotWait)
	}
	var inFlight, maxInFlight atomic.Int32
	// held answers with body once release is closed, counting the calls
	// open meanwhile.
	held := func(release <-chan struct{}, body string) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := maxInFlight.Load(); n > m && !maxInFlight.CompareAndSwap(m, n); m = maxInFlight.Load() {
			}
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}
	}
	// status sends a tool call with token, from an address of its own;
	// safe off the test goroutine.
	status := func(token string) int {
		sum := sha256.Sum256([]byte(token))
		return statusFrom(t, h, fmt.Sprintf("10.%d.%d.%d:1000", sum[0], sum[1], sum[2]), token)
	}
	waitFor := func(cond func() bool) {
		for deadline := time.Now().Add(10 * time.Second); !cond() && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}

	t.Run("one token at once", func(t *testing.T) {
		const n = 50
		release := make(chan struct{})
		answer, _ := json.Marshal(active())
		f.setFunc("opaque-same", held(release, string(answer)))
		start := f.calls.Load()
		statuses := make(chan int, n)
		for range n {
			go func() { statuses <- status("opaque-same") }()
		}
		// Every request waits for the one call before it answers; one
		// that came after the answer would make a call of its own.
		key := sha256.Sum256([]byte("opaque-same"))
		waitFor(func() bool {
			h.g.introspections.mu.Lock()
			defer h.g.introspections.mu.Unlock()
			c := h.g.introspections.calls[key]
			return c != nil && c.waiters == n
		})
		close(release)
		for range n {
			if s := <-statuses; s != http.StatusOK {
				t.Errorf("status = %d, want 200 (the shared active answer)", s)
			}
		}
		if calls := f.calls.Load() - start; calls != 1 {
			t.Errorf("%d requests with one token at once made %d introspection calls, want 1", n, calls)
		}
	})

	t.Run("distinct made-up tokens", func(t *testing.T) {
		const n = 4 * maxIntrospectionsInFlight
		release := make(chan struct{})
		for i := range n {
			f.setFunc(fmt.Sprintf("opaque-made-up-%d", i), held(release, `{"active":false}`))
		}
		start := f.calls.Load()
		maxInFlight.Store(0)
		statuses := make(chan int, n)
		for i := range n {
			go func() { statuses <- status(fmt.Sprintf("opaque-made-up-%d", i)) }()
		}
		// The calls are held: every request beyond the bound must be
		// refused before any call answers. Each waits slotWait for a call
		// from when it arrives; the rest of the bound is headroom for a
		// loaded machine to send them all.
		var open int32
		count := heldStatuses(statuses, n, n-maxIntrospectionsInFlight, h.g.introspections.slotWait+10*time.Second, func() {
			open = inFlight.Load()
			close(release)
		})
		if m := maxInFlight.Load(); m > maxIntrospectionsInFlight || open > maxIntrospectionsInFlight {
			t.Errorf("%d made-up tokens at once: %d introspection calls open at most (%d when the excess was refused), want at most %d",
				n, m, open, maxIntrospectionsInFlight)
		}
		if calls := f.calls.Load() - start; calls != maxIntrospectionsInFlight {
			t.Errorf("introspection calls = %d, want %d", calls, maxIntrospectionsInFlight)
		}
		want := map[int]int{http.StatusServiceUnavailable: n - maxIntrospectionsInFlight, http.StatusUnauthorized: maxIntrospectionsInFlight}
		if !maps.Equal(count, want) {
			t.Errorf("statuses = %v, want %v (the excess 503, the calls made answered inactive)", count, want)
		}
	})
}

// TestIntrospectionCallEndsWithItsCaller: the call of the introspection
// endpoint for a request whose client leaves is cancelled then, not run
// on to its timeout for no one (review s13-dos F4).
func TestIntrospectionCallEndsWithItsCaller(t *testing.T) {
	started, aborted := make(chan struct{}, 1), make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm() // the body read, the server watches the connection
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			aborted <- struct{}{}
		case <-time.After(10 * time.Second):
			io.WriteString(w, `{"active":false}`)
		}
	}))
	defer srv.Close()
	ri, err := NewRemoteIntrospection(testIssuer, srv.URL+"/introspect", gwClientID, gwClientSecret, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	ri.timeout = 10 * time.Second
	cfg := testConfig(t)
	cfg.Introspector = ri
	h := newHarness(t, cfg, nil)

	// A GET has no body, so the front server notices the client leave.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.front.URL+"/mcp", nil)
	req.Header.Set("Authorization", "Bearer opaque-left")
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the introspection endpoint was not called")
	}
	cancel()
	<-done
	select {
	case <-aborted:
	case <-time.After(3 * time.Second):
		t.Error("the introspection call ran on after its only caller left")
	}
}

// introspectorFunc is an Introspector of a function.
type introspectorFunc func(ctx context.Context, token string) ([]byte, error)

func (f introspectorFunc) Introspect(ctx context.Context, token string) ([]byte, error) {
	return f(ctx, token)
}

// TestIntrospectionSharedCallOutlivesFirstCaller: a call shared by two
// requests goes on when the one that started it leaves, and answers the
// other; it is cancelled when the last one leaves.
func TestIntrospectionSharedCallOutlivesFirstCaller(t *testing.T) {
	in := newIntrospections()
	callCtx := make(chan context.Context, 2)
	answer := make(chan struct{})
	var calls atomic.Int32
	ask := introspectorFunc(func(ctx context.Context, token string) ([]byte, error) {
		calls.Add(1)
		callCtx <- ctx
		select {
		case <-answer:
			return []byte(`{"active":false}`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	key := sha256.Sum256([]byte("tok"))
	waiters := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			in.mu.Lock()
			c := in.calls[key]
			ok := c != nil && c.waiters == n
			in.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("never %d waiters", n)
			}
		}
	}
	type result struct {
		body []byte
		err  error
	}
	run := func(ctx context.Context) <-chan result {
		r := make(chan result, 1)
		go func() {
			body, err := in.do(ctx, ask, key, "tok", "")
			r <- result{body, err}
		}()
		return r
	}

	first, leave := context.WithCancel(context.Background())
	r1 := run(first)
	waiters(1)
	r2 := run(context.Background())
	waiters(2)
	leave()
	if r := <-r1; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("the caller that left got %q, %v; want its context's error", r.body, r.err)
	}
	ctx := <-callCtx
	if ctx.Err() != nil {
		t.Fatal("the shared call was cancelled when its first caller left")
	}
	close(answer)
	if r := <-r2; r.err != nil || string(r.body) != `{"active":false}` {
		t.Fatalf("the remaining caller got %q, %v", r.body, r.err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("calls = %d, want 1", n)
	}

	// Once everyone has left, the call is cancelled and forgotten.
	answer = make(chan struct{})
	a, leaveA := context.WithCancel(context.Background())
	b, leaveB := context.WithCancel(context.Background())
	ra := run(a)
	waiters(1)
	rb := run(b)
	waiters(2)
	leaveA()
	leaveB()
	<-ra
	<-rb
	select {
	case <-(<-callCtx).Done():
	case <-time.After(5 * time.Second):
		t.Error("the call ran on after all its callers left")
	}
	left := func() (slots, calls int) {
		in.mu.Lock()
		defer in.mu.Unlock()
		return len(in.slots), len(in.calls)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if s, c := left(); s == 0 && c == 0 {
			return
		}
	}
	s, c := left()
	t.Errorf("after the calls: %d slots taken, %d calls recorded, want none", s, c)
}

// TestIntrospectionDiscovery: without a configured endpoint, the one in
// the issuer's metadata is used, and the metadata's issuer must match.
func TestIntrospectionDiscovery(t *testing.T) {
	f := newFakeIntrospection(t)
	var issuer string
	md := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/oauth-authorization-server" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": issuer, "introspection_endpoint": f.srv.URL + "/introspect"})
	}))
	t.Cleanup(md.Close)
	issuer = md.URL
	ri, err := NewRemoteIntrospection(md.URL, "", gwClientID, gwClientSecret, md.Client())
	if err != nil {
		t.Fatal(err)
	}
	f.set("tok", active())
	body, err := ri.Introspect(context.Background(), "tok")
	if err != nil || !strings.Contains(string(body), `"active":true`) {
		t.Fatalf("Introspect = %s, %v", body, err)
	}
	other, _ := NewRemoteIntrospection(md.URL+"/other", "", gwClientID, gwClientSecret, md.Client())
	if _, err := other.Introspect(context.Background(), "tok"); err == nil {
		t.Error("Introspect with a mismatched metadata issuer succeeded")
	}
}

// TestIntrospectionDiscoveryFailureThrottled: while the issuer's
// metadata cannot be read and the introspection endpoint is not known
// yet (a gateway started or reloaded while the issuer is down), made-up
// opaque tokens, each a call, cost one read of the metadata per refetch
// interval, not one each; the read after it finds the endpoint. A
// request that leaves during the read does not end it.
func TestIntrospectionDiscoveryFailureThrottled(t *testing.T) {
	f := newFakeIntrospection(t)
	f.set("tok", active())
	var up atomic.Bool
	var reads atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reads.Add(1)
		if !up.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "introspection_endpoint": f.srv.URL + "/introspect"})
	}))
	t.Cleanup(srv.Close)
	ri, err := NewRemoteIntrospection(srv.URL, "", gwClientID, gwClientSecret, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := testNow
	ri.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	for i := range 20 {
		if _, err := ri.Introspect(t.Context(), fmt.Sprint("made-up-", i)); err == nil {
			t.Fatal("Introspect succeeded with the metadata unreadable")
		}
	}
	// The two places of the metadata (RFC 8414, OpenID Connect), once.
	if n := reads.Load(); n != 2 {
		t.Errorf("metadata reads for 20 tokens = %d, want 2 (one read)", n)
	}
	up.Store(true)
	advance(rereadInterval - time.Second)
	if _, err := ri.Introspect(t.Context(), "tok"); err == nil || reads.Load() != 2 {
		t.Errorf("Introspect within the interval = %v after %d reads, want the read's failure and no read", err, reads.Load())
	}
	advance(time.Second)
	// A caller that has left already: the read goes on for the others.
	gone, cancel := context.WithCancel(t.Context())
	cancel()
	ri.Introspect(gone, "tok")
	if body, err := ri.Introspect(t.Context(), "tok"); err != nil || !strings.Contains(string(body), `"active":true`) || reads.Load() != 3 {
		t.Errorf("Introspect once the interval passed = %s, %v after %d reads, want the answer after 3", body, err, reads.Load())
	}
}

// TestIntrospectionEndpointMoved: an issuer whose metadata comes to name
// another introspection_endpoint, the old one failing, has its tokens
// introspected at the new one once the refetch interval has passed since
// the metadata was read (they were refused 503 until a reload); while
// calls succeed the metadata is not read again, and an endpoint given in
// the configuration is never replaced.
func TestIntrospectionEndpointMoved(t *testing.T) {
	var path atomic.Value // the endpoint's path the metadata names; others 404
	path.Store("/introspect/v1")
	var mdReads atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			mdReads.Add(1)
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "introspection_endpoint": srv.URL + path.Load().(string)})
		case path.Load().(string):
			io.WriteString(w, `{"active":false,"at":"`+r.URL.Path+`"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	ri, err := NewRemoteIntrospection(srv.URL, "", gwClientID, gwClientSecret, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	now := testNow
	ri.now = func() time.Time { return now }
	ctx := context.Background()
	ask := func() string {
		body, err := ri.Introspect(ctx, "tok")
		if err != nil {
			return err.Error()
		}
		return string(body)
	}
	if got := ask(); !strings.Contains(got, `"at":"/introspect/v1"`) {
		t.Fatalf("Introspect = %s, want an answer of v1", got)
	}
	now = now.Add(time.Hour)
	if got := ask(); !strings.Contains(got, `"at":"/introspect/v1"`) || mdReads.Load() != 1 {
		t.Fatalf("Introspect = %s with %d metadata reads, want v1's answer and 1 read", got, mdReads.Load())
	}
	path.Store("/introspect/v2")
	if got := ask(); !strings.Contains(got, "404") {
		t.Fatalf("Introspect at the old endpoint = %s, want its 404", got)
	}
	now = now.Add(rereadInterval)
	if got := ask(); !strings.Contains(got, `"at":"/introspect/v2"`) {
		t.Fatalf("Introspect after the move = %s, want an answer of v2", got)
	}
	if got := ask(); !strings.Contains(got, `"at":"/introspect/v2"`) || mdReads.Load() != 2 {
		t.Errorf("Introspect = %s with %d metadata reads, want v2's answer and 2 reads", got, mdReads.Load())
	}

	// An endpoint given is the operator's: never replaced by the
	// metadata's.
	given, err := NewRemoteIntrospection(srv.URL, srv.URL+"/introspect/v1", gwClientID, gwClientSecret, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	given.now = ri.now
	for range 2 {
		if _, err := given.Introspect(ctx, "tok"); err == nil || !strings.Contains(err.Error(), "404") {
			t.Fatalf("Introspect at the given endpoint = %v, want its 404", err)
		}
		now = now.Add(rereadInterval)
	}
	if n := mdReads.Load(); n != 2 {
		t.Errorf("metadata reads = %d with an endpoint given, want none (2 before)", n)
	}
}

// TestIntrospectionEndsStreams: an event stream opened with an opaque
// token ends when its introspection answer may no longer be reused (the
// cache ceiling, or exp before it), as later requests with the token are
// refused then: a token revoked at the issuer keeps no open stream.
func TestIntrospectionEndsStreams(t *testing.T) {
	f := newFakeIntrospection(t)
	now := &clock{t: testNow}
	cfg := introspectionConfig(t, f, now)
	cfg.StreamCheckInterval = 10 * time.Millisecond
	up := newStreamUpstream(func(r *http.Request) string { return r.Header.Get("X-Test-Stream") })
	h := newHarness(t, cfg, up.serve)
	short := active()
	short["exp"] = testNow.Add(2 * time.Minute).Unix()
	f.set("tok-long", active())
	f.set("tok-short", short)
	open := func(name, tok string) *http.Response {
		t.Helper()
		resp := h.do(t, call{method: http.MethodGet, token: tok, headers: map[string]string{"X-Test-Stream": name, "Mcp-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sessionFor(t, h.g, tok)}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status = %d, want 200: %s", name, resp.StatusCode, readBody(t, resp))
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	open("long", "tok-long")
	open("short", "tok-short")
	jwt := open("jwt", mint(t, claims()))
	defer jwt.Body.Close()
	isOpen := func(name string) bool {
		select {
		case <-up.done(name):
			return false
		case <-time.After(100 * time.Millisecond):
			return true
		}
	}
	waitEnded := func(name string) {
		t.Helper()
		select {
		case <-up.done(name):
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: stream still open 5 s after its introspection answer ran out", name)
		}
	}
	f.set("tok-long", map[string]any{"active": false})
	if !isOpen("long") || !isOpen("short") {
		t.Fatal("a stream ended within its introspection answer's life")
	}
	now.add(2 * time.Minute) // tok-short's exp
	waitEnded("short")
	if !isOpen("long") {
		t.Fatal("tok-long's stream ended before the cache ceiling")
	}
	now.add(3 * time.Minute) // the 5 min ceiling: tok-long was revoked
	waitEnded("long")
	if !isOpen("jwt") {
		t.Error("a JWT's stream was ended by introspection deadlines")
	}
}

// TestRemoteFetchesRefuseCrossOriginRedirects: an introspection endpoint,
// metadata or JWKS URL that redirects to another origin (another port or
// scheme of the same host included, to which Go would resend the Basic
// credentials and the posted token) is not followed: introspection fails
// closed (503), the keys stay unknown.
func TestRemoteFetchesRefuseCrossOriginRedirects(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		io.WriteString(w, `{"active":true,"keys":[]}`)
	}))
	defer other.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()

	ri, err := NewRemoteIntrospection(testIssuer, redirect.URL+"/introspect", gwClientID, gwClientSecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := ri.Introspect(context.Background(), "opaque-token"); err == nil {
		t.Errorf("introspection through a cross-origin redirect answered %s", body)
	}
	rk := NewRemoteKeys(redirect.URL, nil, nil)
	t.Cleanup(rk.Close)
	if _, err := rk.PublicKey(context.Background(), "k1"); err == nil {
		t.Error("a key was found through a cross-origin redirect")
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the other origin got %d requests, want 0", n)
	}
}

// TestIntrospectionBurstOfRealUsers: a burst of real users whose tokens
// are not cached (every client of a gateway reconnecting after a reload)
// waits for the bounded calls rather than getting 503: 48 at 250 ms a
// call (review s13-final R1).
func TestIntrospectionBurstOfRealUsers(t *testing.T) {
	f := newFakeIntrospection(t)
	cfg := introspectionConfig(t, f, nil)
	cfg.Introspector.(*RemoteIntrospection).timeout = 5 * time.Second
	h := newHarness(t, cfg, nil)
	const n = 48
	for i := range n {
		a := active()
		a["sub"] = fmt.Sprintf("user-%d", i)
		a["jti"] = fmt.Sprintf("op-%d", i)
		body, _ := json.Marshal(a)
		f.setFunc(fmt.Sprintf("opaque-user-%d", i), func(w http.ResponseWriter) {
			time.Sleep(250 * time.Millisecond)
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		})
	}
	statuses := make(chan int, n)
	for i := range n {
		go func() {
			req, _ := http.NewRequest(http.MethodPost, h.front.URL+"/mcp", strings.NewReader(toolCall("read_a")))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", fmt.Sprintf("Bearer opaque-user-%d", i))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	count := map[int]int{}
	for range n {
		count[<-statuses]++
	}
	if count[http.StatusOK] != n {
		t.Errorf("%d active users at once, introspection taking 250 ms: statuses %v, want all 200", n, count)
	}
}

// TestRemoteMetadataEndpointsHTTPS: the jwks_uri and introspection_endpoint
// an https issuer's metadata names must be https too. Plain http, on a
// loopback host, is for an http (loopback) issuer only: an https issuer's
// metadata naming http://127.0.0.1:2019/stop, Caddy's admin endpoint,
// had the gateway post there (with its introspection credentials) for
// any made-up opaque token anyone sent, and Caddy exited.
func TestRemoteMetadataEndpointsHTTPS(t *testing.T) {
	var hits atomic.Int32
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, `{"active":true,"keys":[]}`) // Caddy answers /stop with 200 and exits
	}))
	defer admin.Close()
	var issuer string
	md := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/oauth-authorization-server" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"issuer": issuer,
			"introspection_endpoint": admin.URL + "/stop", "jwks_uri": admin.URL + "/config/"})
	}))
	defer md.Close()
	issuer = md.URL
	ri, err := NewRemoteIntrospection(issuer, "", gwClientID, gwClientSecret, md.Client())
	if err != nil {
		t.Fatal(err)
	}
	keys := NewRemoteKeys(issuer, md.Client(), nil)
	t.Cleanup(keys.Close)
	cfg := testConfig(t)
	cfg.Issuer, cfg.Keys, cfg.Introspector = issuer, keys, ri
	h := newHarness(t, cfg, nil)
	c := claims()
	c["iss"] = issuer
	for _, tt := range []struct {
		name, token string
		status      int
	}{
		{"opaque token", "made-up-opaque-token", http.StatusServiceUnavailable},
		// Keys that cannot be fetched: the token cannot be checked
		// (TestRemoteKeysUnavailable).
		{"JWT", mint(t, c), http.StatusServiceUnavailable},
	} {
		resp := h.do(t, call{token: tt.token, body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`})
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.status)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the plain-http loopback service the https issuer's metadata named got %d requests, want 0", n)
	}
}

// TestIntrospectionShareOfOneAddress: one address (an IPv6 /64 counts as
// one) sending made-up opaque tokens kept every introspection call slot
// busy, each held as long as the endpoint took to answer, so every other
// user whose token was not cached got 503. One address now has at most
// maxIntrospectionsPerAddress calls open; its excess waits for its own
// and is refused as before, while other addresses' tokens are checked.
func TestIntrospectionShareOfOneAddress(t *testing.T) {
	f := newFakeIntrospection(t)
	cfg := introspectionConfig(t, f, nil)
	cfg.Introspector.(*RemoteIntrospection).timeout = 10 * time.Second
	// As Caddy's adapter gives its client_ip.
	cfg.ClientAddr = func(r *http.Request) string { return r.Header.Get("X-Test-Client") }
	h := newHarness(t, cfg, nil)
	var inFlight atomic.Int32
	release := make(chan struct{})
	const n = 4 * maxIntrospectionsInFlight
	for i := range n {
		f.setFunc(fmt.Sprintf("opaque-flood-%d", i), func(w http.ResponseWriter) {
			inFlight.Add(1)
			defer inFlight.Add(-1)
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
			io.WriteString(w, `{"active":false}`)
		})
	}
	answer, _ := json.Marshal(active())
	users := []string{"198.51.100.20:2000", "[2001:db8:0:2::1]:2000"}
	for i := range users {
		f.setFunc(fmt.Sprintf("opaque-user-%d", i), func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(answer)
		})
	}
	status := func(addr, token string) int { return statusFrom(t, h, addr, token) }
	statuses := make(chan int, n)
	for i := range n {
		// Addresses of one /64, each its own port.
		addr := fmt.Sprintf("[2001:db8:0:1::%x]:%d", i+1, 40000+i)
		go func() { statuses <- status(addr, fmt.Sprintf("opaque-flood-%d", i)) }()
	}
	for deadline := time.Now().Add(10 * time.Second); inFlight.Load() < maxIntrospectionsPerAddress && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // any call beyond the share would have started
	if open := inFlight.Load(); open != maxIntrospectionsPerAddress {
		t.Errorf("calls open for one /64's made-up tokens = %d, want %d", open, maxIntrospectionsPerAddress)
	}
	for i, addr := range users {
		if s := status(addr, fmt.Sprintf("opaque-user-%d", i)); s != http.StatusOK {
			t.Errorf("a user at %s while one /64 floods: status %d, want 200", addr, s)
		}
	}
	// The flood's excess is refused while its calls are held.
	count := heldStatuses(statuses, n, n-maxIntrospectionsPerAddress, h.g.introspections.slotWait+10*time.Second, func() { close(release) })
	want := map[int]int{http.StatusServiceUnavailable: n - maxIntrospectionsPerAddress, http.StatusUnauthorized: maxIntrospectionsPerAddress}
	if !maps.Equal(count, want) {
		t.Errorf("the flood's statuses = %v, want %v", count, want)
	}
}

// heldStatuses counts n statuses from statuses: the first early of them
// (those refused while the calls are held) within wait, then, after
// release (which lets the held calls answer), the rest.
func heldStatuses(statuses <-chan int, n, early int, wait time.Duration, release func()) map[int]int {
	count, got := map[int]int{}, 0
	timeout := time.After(wait)
held:
	for ; got < early; got++ {
		select {
		case s := <-statuses:
			count[s]++
		case <-timeout:
			break held
		}
	}
	release()
	for ; got < n; got++ {
		count[<-statuses]++
	}
	return count
}

// statusFrom sends a tool call with token from client address addr (the
// X-Test-Client header a test's Config.ClientAddr reads) and returns the
// status; safe off the test goroutine.
func statusFrom(t *testing.T, h *harness, addr, token string) int {
	req, _ := http.NewRequest(http.MethodPost, h.front.URL+"/mcp", strings.NewReader(toolCall("read_a")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Test-Client", addr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestIntrospectionEndsBodyArriving: a request whose body is still
// arriving, sent with an opaque token, ends when the token's
// introspection answer may no longer be reused, as an event stream does
// (TestIntrospectionEndsStreams): the gateway learns of a revocation at
// the issuer only by introspecting again, and a body arrives for as long
// as its client likes, so a token revoked at the issuer kept its
// principal's max_in_flight with bodies that never end.
func TestIntrospectionEndsBodyArriving(t *testing.T) {
	f := newFakeIntrospection(t)
	now := &clock{t: testNow}
	cfg := introspectionConfig(t, f, now)
	cfg.MaxInFlight = 1
	cfg.StreamCheckInterval = 10 * time.Millisecond
	g := newGateway(t, cfg)
	front := bodyFront(t, g, false)
	f.set("tok-stolen", active())
	status := postBodyArriving(t, g, front, "tok-stolen")
	f.set("tok-stolen", map[string]any{"active": false}) // revoked at the issuer
	now.add(5 * time.Minute)                             // the cache ceiling
	select {
	case s := <-status:
		if s != 0 && s != http.StatusServiceUnavailable {
			t.Errorf("a request whose body was arriving when its introspection answer ran out = %d, want 503", s)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a request whose body is still arriving still runs 3 s after its introspection answer ran out")
	}
	if n := inFlightCount(g); n != 0 {
		t.Errorf("%d of max_in_flight still held", n)
	}
}

// TestIntrospectionPrincipalTypeRefused: README (the issuer's agent_claims option)
// says a token carrying principal_type from an issuer the gateway is not
// told to trust for it is refused 401 invalid_token by introspection as
// by JWT, and read (an agent acting alone) when it is trusted.
func TestIntrospectionPrincipalTypeRefused(t *testing.T) {
	f := newFakeIntrospection(t)
	agentOnly := active()
	agentOnly["sub"], agentOnly["client_id"], agentOnly["principal_type"] = "agent-1", "agent-1", "agent"
	f.set("opaque-agent", agentOnly)
	for _, refuse := range []bool{true, false} {
		cfg := introspectionConfig(t, f, nil)
		cfg.RefuseActorClaims = refuse
		h := newHarness(t, cfg, nil)
		before := len(h.up.requests())
		resp := h.do(t, call{body: toolCall("agent_only"), token: "opaque-agent"})
		body := readBody(t, resp)
		switch {
		case refuse && (resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) || len(h.up.requests()) != before):
			t.Errorf("untrusted issuer: %d %s (challenge %q), want 401 invalid_token, not forwarded", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
		case !refuse && resp.StatusCode != 200:
			t.Errorf("trusted issuer: %d %s, want 200 (an agent acting alone)", resp.StatusCode, body)
		}
	}
}

// TestIntrospectionRefusedEndpointCut: an introspection_endpoint the
// gateway refuses to call (one Go cannot parse, a port out of range)
// is the issuer's value, as long as its metadata; the error, logged
// with every request whose token is not cached while it stays, names it
// cut, not as the half megabyte a hostile or broken server may put
// there.
func TestIntrospectionRefusedEndpointCut(t *testing.T) {
	long := strings.Repeat("x", 48<<10) // the metadata is read within 64 KiB here
	for name, endpoint := range map[string]func(base string) string{
		"bad escape": func(base string) string { return base + "/" + long + "%zz" },
		"bad port":   func(base string) string { return "https://h.example:1" + long + "/introspect" },
		"long port":  func(base string) string { return "https://h.example:" + strings.Repeat("1", 48<<10) + "/introspect" },
	} {
		t.Run(name, func(t *testing.T) {
			var srv *httptest.Server
			srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "introspection_endpoint": endpoint(srv.URL)})
			}))
			t.Cleanup(srv.Close)
			ri, err := NewRemoteIntrospection(srv.URL, "", gwClientID, gwClientSecret, srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			_, err = ri.Introspect(t.Context(), "tok")
			if err == nil || !strings.Contains(err.Error(), "introspection_endpoint") || len(err.Error()) > 2<<10 {
				t.Errorf("Introspect = error of %d bytes (%.200v…), want the refusal with the endpoint cut", len(fmt.Sprint(err)), err)
			}
		})
	}
}
