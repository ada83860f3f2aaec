package issuer

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// validDescription: RFC 6749 section 5.2 error_description characters.
func validDescription(s string) bool {
	for _, r := range s {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

func TestErrorDescriptionCharacters(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`unsupported grant_type "x"`, `unsupported grant_type 'x'`},
		{`a\b`, `a/b`},
		{"tab\there", "tab?here"},
		{"redirect URI \"https://é.example/…\"", "redirect URI 'https://?.example/?'"},
		{"plain ~!#$%&()*+,-./:;<=>?@[]^_`{|}", "plain ~!#$%&()*+,-./:;<=>?@[]^_`{|}"},
	} {
		if got := errorDescription(tt.in); got != tt.want {
			t.Errorf("errorDescription(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}

	// Both answers carry client input in descriptions: the JSON body ...
	e := newBrowserEnv(t, nil)
	resp, err := e.srv.Client().PostForm(e.url(pathToken, nil), url.Values{"grant_type": {`x"\é`}, "client_id": {bClientID}})
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := decodeJSONObject([]byte(readBody(t, resp)), &body); err != nil || body.Error != "unsupported_grant_type" || !validDescription(body.Description) {
		t.Errorf("token error = %+v, %v; want unsupported_grant_type with a valid error_description", body, err)
	}
	// ... and the authorization error redirect.
	p := authParams(testChallenge)
	p.Set("prompt", `x"\é`)
	r, err := e.browser().Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || r.StatusCode != http.StatusSeeOther {
		t.Fatalf("authorize = %d %q, want a redirect", r.StatusCode, r.Header.Get("Location"))
	}
	if d := loc.Query().Get("error_description"); loc.Query().Get("error") != "invalid_request" || d == "" || !validDescription(d) {
		t.Errorf("authorize error = %v, want invalid_request with a valid error_description", loc.Query())
	}
}

// unavailableStore fails every Update, once down is set, as a store whose
// database is unreachable or whose retries ran out.
type unavailableStore struct {
	store.Store
	down atomic.Bool
}

func (s *unavailableStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if s.down.Load() {
		return fmt.Errorf("test store: %w", store.ErrUnavailable)
	}
	return s.Store.Update(ctx, fn)
}

// TestStoreUnavailable: while the store cannot write, token requests
// (codes and refreshes), registrations, revocations and pushed
// authorization requests answer 503 temporarily_unavailable (not
// server_error) with Retry-After, the authorization endpoint sends the
// client temporarily_unavailable, the admin API 503, and nothing is
// issued, rotated or revoked; afterwards the same requests succeed.
// TestRetryAfterSeconds: Retry-After is d rounded up to whole seconds,
// for the largest Duration too (a rate bucket's saturated wait), which
// rounding by adding a second less a nanosecond wrapped to a negative
// value, an invalid header.
func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{time.Nanosecond, "1"},
		{time.Second, "1"},
		{1500 * time.Millisecond, "2"},
		{time.Hour, "3600"},
		{math.MaxInt64, "9223372037"},
	} {
		if got := retryAfter(tc.d); got != tc.want {
			t.Errorf("retryAfter(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestStoreUnavailable(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &unavailableStore{Store: memory.New(memory.Options{Now: clock.Now, RunTwice: true})}
	e := newTokEnvStore(t, st, clock)
	code, verifier := e.issueCode(t, codeSpec{client: tPublic, scopes: []string{"read"}})
	grants := e.count(bucketGrants)

	st.down.Store(true)
	requests := []struct {
		name  string
		form  url.Values
		basic string
	}{
		{"authorization_code", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
			"client_id": {tPublic}, "redirect_uri": {tRedirect}}, ""},
		{"client_credentials", url.Values{"grant_type": {"client_credentials"}, "scope": {"read"}, "resource": {tResource}}, tConf + ":" + tSecret},
	}
	for _, r := range requests {
		a := e.post(t, pathToken, r.form, r.basic)
		if a.status != http.StatusServiceUnavailable || a.str("error") != "temporarily_unavailable" || a.header.Get("Retry-After") != "1" {
			t.Errorf("%s while the store is down = %d %s (Retry-After %q), want 503 temporarily_unavailable, Retry-After 1", r.name, a.status, a.raw, a.header.Get("Retry-After"))
		}
	}
	if got := e.count(bucketGrants); got != grants {
		t.Fatalf("grants after refused requests = %d, want %d", got, grants)
	}
	rec := httptest.NewRecorder()
	e.iss.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodDelete, "/users/nobody", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("admin DELETE while the store is down = %d %s, want 503", rec.Code, rec.Body)
	}
	// Dynamic Client Registration answers as the token endpoint does.
	resp, err := e.srv.Client().Post(e.srv.URL+pathRegister, "application/json",
		strings.NewReader(`{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"client_secret_basic"}`))
	if err != nil {
		t.Fatal(err)
	}
	if raw := readBody(t, resp); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(raw, `"temporarily_unavailable"`) || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("registration while the store is down = %d %s (Retry-After %q), want 503 temporarily_unavailable, Retry-After 1", resp.StatusCode, raw, resp.Header.Get("Retry-After"))
	}

	// The other endpoints that write (README: "The issuer's endpoints
	// answer such a store 503 temporarily_unavailable with Retry-After:
	// 1"): a refresh, a revocation, a pushed request; the authorization
	// endpoint answers the client's redirect URI with the same error.
	st.down.Store(false)
	code, verifier = e.issueCode(t, codeSpec{client: tPublic, scopes: []string{"read", "offline_access"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	st.down.Store(true)
	authz := url.Values{"response_type": {"code"}, "client_id": {tPublic}, "redirect_uri": {tRedirect}, "code_challenge": {testChallenge},
		"code_challenge_method": {"S256"}, "state": {"s"}, "resource": {tResource}, "scope": {"read"}}
	for _, r := range []struct {
		name, path string
		form       url.Values
	}{
		{"refresh", pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}},
		{"revocation of a refresh token", pathRevoke, url.Values{"token": {tok.RefreshToken}, "client_id": {tPublic}}},
		{"revocation of an access token", pathRevoke, url.Values{"token": {tok.AccessToken}, "client_id": {tPublic}}},
		{"pushed authorization request", pathPAR, authz},
	} {
		if a := e.post(t, r.path, r.form, ""); a.status != http.StatusServiceUnavailable || a.str("error") != "temporarily_unavailable" || a.header.Get("Retry-After") != "1" {
			t.Errorf("%s while the store is down = %d %s (Retry-After %q), want 503 temporarily_unavailable, Retry-After 1", r.name, a.status, a.raw, a.header.Get("Retry-After"))
		}
	}
	noFollow := e.srv.Client()
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = noFollow.Get(e.url(pathAuthorize, authz))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc, _ := url.Parse(resp.Header.Get("Location")); loc == nil || !strings.HasPrefix(loc.String(), tRedirect+"?") || loc.Query().Get("error") != "temporarily_unavailable" {
		t.Errorf("authorization request while the store is down = %d %q, want the client told temporarily_unavailable", resp.StatusCode, resp.Header.Get("Location"))
	}

	st.down.Store(false)
	for _, r := range requests {
		if a := e.post(t, pathToken, r.form, r.basic); a.status != http.StatusOK {
			t.Errorf("%s after the store is back = %d %s, want 200", r.name, a.status, a.raw)
		}
	}
	// Nothing was rotated or revoked meanwhile: the refresh token works.
	if a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, ""); a.status != http.StatusOK {
		t.Errorf("refresh after the store is back = %d %s, want 200", a.status, a.raw)
	}
}

// TestUnavailableAnswersRetryAfter: every 503 the issuer answers says
// when to retry, not only a busy store's: a code redeemed at an instance
// that signed with a key another instance withdrew meanwhile (nothing is
// spent, and the retry gets a token of the new key), and the pages'
// "Temporarily unavailable" (a self-registered client's authorization
// request whose session cannot be stored: an error page, not a redirect).
func TestUnavailableAnswersRetryAfter(t *testing.T) {
	t.Run("key withdrawn while signing", func(t *testing.T) {
		a, b, _ := twoOnMemory(t)
		if _, err := a.iss.WithdrawSigningKeys(t.Context(), b.signedWith(t)); err != nil {
			t.Fatal(err)
		}
		code, verifier := b.issueCode(t, codeSpec{scopes: []string{"read"}})
		r := b.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
			"client_id": {tPublic}, "redirect_uri": {tRedirect}}, "")
		if r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" || r.header.Get("Retry-After") != "1" {
			t.Errorf("code redeemed at B after A withdrew B's key = %d %s (Retry-After %q), want 503 temporarily_unavailable, Retry-After 1",
				r.status, r.raw, r.header.Get("Retry-After"))
		}
	})
	t.Run("health", func(t *testing.T) {
		e := newTokEnv(t)
		if err := e.store.Close(); err != nil {
			t.Fatal(err)
		}
		resp, err := e.srv.Client().Get(e.iss.endpoint(pathHealth))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("healthz with the store closed = %d (Retry-After %q), want 503, Retry-After 1", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})
	t.Run("page", func(t *testing.T) {
		clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
		st := &unavailableStore{Store: memory.New(memory.Options{Now: clock.Now, RunTwice: true})}
		e := newTokEnvStore(t, st, clock)
		_, reg := e.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`)
		id, _ := reg["client_id"].(string)
		st.down.Store(true)
		rec := httptest.NewRecorder()
		e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, e.url(pathAuthorize, url.Values{"response_type": {"code"}, "client_id": {id},
			"code_challenge": {testChallenge}, "code_challenge_method": {"S256"}, "resource": {tResource}, "scope": {"read"}}), nil))
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
			t.Errorf("self-registered client's authorization request while the store is down = %d (Retry-After %q) %.300s, want 503, Retry-After 1",
				rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
	})
}

// TestJSONAnswersNoSniff: every JSON answer, success or error, tells the
// browser its type is final, so none that reflects a caller's input is
// ever read as script or a page.
func TestJSONAnswersNoSniff(t *testing.T) {
	e := newTokEnv(t)
	get := func(path string) (int, http.Header) {
		resp, err := e.srv.Client().Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	post := func(path string, form url.Values) func() (int, http.Header) {
		return func() (int, http.Header) {
			a := e.post(t, path, form, "")
			return a.status, a.header
		}
	}
	for _, tt := range []struct {
		name   string
		answer func() (int, http.Header)
		status int
		cache  string
	}{
		{"metadata", func() (int, http.Header) { return get("/.well-known/oauth-authorization-server") }, 200, "public, max-age=300"},
		{"jwks", func() (int, http.Header) { return get(pathJWKS) }, 200, "public, max-age=60"},
		{"health", func() (int, http.Header) { return get(pathHealth) }, 200, "no-store"},
		{"token success", post(pathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {tPost}, "client_secret": {tSecret2}, "resource": {tResource}}), 200, "no-store"},
		{"token error", post(pathToken, url.Values{"grant_type": {"<script>"}}), 401, "no-store"},
		{"registration", post(pathRegister, url.Values{}), 400, "no-store"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, h := tt.answer()
			if status != tt.status {
				t.Fatalf("status = %d, want %d", status, tt.status)
			}
			if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			if got := h.Get("Cache-Control"); got != tt.cache {
				t.Errorf("Cache-Control = %q, want %q", got, tt.cache)
			}
		})
	}
}
