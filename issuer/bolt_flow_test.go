package issuer

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// TestFlowSurvivesRestartOnBolt runs the token flow on a real bbolt file,
// closes it, reopens it under a new Issuer, and checks that keys, grants
// and refresh tokens survived.
func TestFlowSurvivesRestartOnBolt(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "auth.db")
	st, err := bolt.Open(path, bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := newTokEnvStore(t, st, clock)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid", "read", "offline_access"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatalf("Exchange() error: %v", err)
	}
	keys, _ := e.jwksOf(t)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st2, err := bolt.Open(path, bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st2.Close() })
	e.restart(st2)
	// The access-token key and the RS256 key of the ID token.
	if after, _ := e.jwksOf(t); len(after) != 2 || !slices.Equal(kids(after), kids(keys)) {
		t.Fatalf("JWKS after restart = %v, want the same keys %v", kids(after), kids(keys))
	}
	verifyLikeGateway(t, e, tok.AccessToken, "ES256")
	if !e.active(t, tok.AccessToken) {
		t.Error("access token inactive after restart")
	}
	refresh := func(rt string) answer {
		return e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {tPublic}}, "")
	}
	a := refresh(tok.RefreshToken)
	if a.status != 200 {
		t.Fatalf("refresh after restart = %d %s", a.status, a.raw)
	}
	// The code stays redeemed and the old refresh token rotated.
	if _, err := e.exchange(t, tPublic, "", code, verifier); err == nil {
		t.Error("code redeemed again after restart")
	}
	if r := refresh(tok.RefreshToken); r.str("error") != "invalid_grant" {
		t.Errorf("reused refresh token after restart = %d %s, want invalid_grant", r.status, r.raw)
	}
}

// countingStore counts a real store's write transactions.
type countingStore struct {
	store.Store
	updates int
}

func (s *countingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	s.updates++
	return s.Store.Update(ctx, fn)
}

// TestRevokeDerivedChainBatched: an agent may re-exchange the token it
// got by exchange, again and again, at its client's rate: a chain tens of
// thousands long. Revoking its head must walk it in transactions of
// derivedBatch tokens, as a wide tree, not one transaction per token
// (each an fsync on bbolt): that took minutes, past any client's
// patience, and the retry of a revocation given up walked it anew.
func TestRevokeDerivedChainBatched(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	bst, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bst.Close() })
	const n = 8*128 + 1 // one past 8 batches of 128: a batch of 129 takes one transaction fewer
	exp := clock.Now().Add(time.Hour)
	jti := func(k int) string { return fmt.Sprintf("tok%05d", k) }
	err = bst.Update(t.Context(), func(tx store.Tx) error {
		for k := range n {
			if err := derivedIn(tx).add(jti(k), jti(k+1), exp); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st := &countingStore{Store: bst}
	if err := revokeTokenTree(t.Context(), st, jti(0), exp); err != nil {
		t.Fatal(err)
	}
	// README: the subject token in a transaction of its own, the others
	// in transactions of up to 128 tokens (written out, not read from
	// derivedBatch): batched, and no transaction larger than that.
	const batch = 128
	if want := (n+1)/batch + 2; st.updates > want {
		t.Errorf("revoking a chain of %d took %d transactions, want at most %d", n+1, st.updates, want)
	}
	if least := 1 + (n+batch-1)/batch; st.updates < least {
		t.Errorf("revoking a chain of %d took %d transactions, want at least %d (up to %d tokens each)", n+1, st.updates, least, batch)
	}
	err = bst.View(t.Context(), func(tx store.Tx) error {
		for k := range n + 1 {
			switch ok, err := revocationsIn(tx).revoked(jti(k), ""); {
			case err != nil:
				return err
			case !ok:
				t.Errorf("%s not revoked", jti(k))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStoreClosedAnswersUnavailable: a request that a configuration's
// issuer still serves after its store was closed (Caddy cleans up a
// replaced configuration while its server finishes the requests it
// accepted; a reload that moves the bbolt file closes the old one) is
// answered 503 temporarily_unavailable with Retry-After, as for a store
// that cannot write now, where it was a 500 server_error; the client's
// retry reaches the new configuration. Nothing was written. A page says
// "Temporarily unavailable", also where the store was to tell whether a
// client or pushed request exists (it told the user the application was
// unknown).
func TestStoreClosedAnswersUnavailable(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st, err := bolt.Open(filepath.Join(t.TempDir(), "auth.db"), bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := newTokEnvStore(t, st, clock)
	tok := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "scope": {"read"}, "resource": {tResource}}, tConf+":"+tSecret).str("access_token")
	if tok == "" {
		t.Fatal("no access token before the store closed")
	}
	// A self-registered client's authorization request and sign-out
	// request, and a pushed authorization request: the application and
	// the pushed request are not unknown, the store could not tell.
	_, reg := e.register(t, `{"redirect_uris":["https://a.example/cb"],"token_endpoint_auth_method":"none"}`)
	self, _ := reg["client_id"].(string)
	authz := url.Values{"response_type": {"code"}, "client_id": {self}, "code_challenge": {testChallenge},
		"code_challenge_method": {"S256"}, "resource": {tResource}, "scope": {"read"}}
	pushed := e.post(t, pathPAR, url.Values{"response_type": {"code"}, "client_id": {tPublic}, "code_challenge": {testChallenge},
		"code_challenge_method": {"S256"}, "resource": {tResource}, "scope": {"read"}}, "").str("request_uri")
	if pushed == "" {
		t.Fatal("no pushed request before the store closed")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{
		e.url(pathAuthorize, authz),
		e.url(pathAuthorize, url.Values{"client_id": {tPublic}, "request_uri": {pushed}}),
		e.url(pathLogout, url.Values{"client_id": {self}}),
	} {
		rec := httptest.NewRecorder()
		e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" || !strings.Contains(rec.Body.String(), "Temporarily unavailable") {
			t.Errorf("%s on a closed store = %d (Retry-After %q) %.400s, want 503 Temporarily unavailable, Retry-After 1",
				target, rec.Code, rec.Header().Get("Retry-After"), rec.Body)
		}
	}
	// The revocation check of a valid access token cannot be made: not
	// "inactive" (a resource server would refuse, and cache that, and
	// its client drop the token), nor 401 invalid_token at userinfo.
	if a := e.introspect(t, tok); a.status != http.StatusServiceUnavailable || a.str("error") != "temporarily_unavailable" {
		t.Errorf("introspection on a closed store = %d %s, want 503 temporarily_unavailable", a.status, a.raw)
	}
	req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if a := e.do(t, req); a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") != "1" || strings.Contains(a.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("userinfo on a closed store = %d %s (WWW-Authenticate %q, Retry-After %q), want 503, Retry-After 1, no invalid_token",
			a.status, a.raw, a.header.Get("WWW-Authenticate"), a.header.Get("Retry-After"))
	}
	a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "scope": {"read"}, "resource": {tResource}}, tConf+":"+tSecret)
	if a.status != http.StatusServiceUnavailable || a.str("error") != "temporarily_unavailable" || a.header.Get("Retry-After") != "1" {
		t.Errorf("client_credentials on a closed store = %d %s (Retry-After %q), want 503 temporarily_unavailable, Retry-After 1", a.status, a.raw, a.header.Get("Retry-After"))
	}
	// The key set, once its copy is older than keyReload: the keys known
	// are published, but the ID-token ring made none yet and must read.
	clock.Advance(keyReload)
	rec := httptest.NewRecorder()
	e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, pathJWKS, nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" || !strings.Contains(rec.Body.String(), "temporarily_unavailable") {
		t.Errorf("/jwks on a closed store = %d %s (Retry-After %q), want 503 temporarily_unavailable, Retry-After 1", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	rec = httptest.NewRecorder()
	e.iss.AdminHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodDelete, "/users/nobody", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
		t.Errorf("admin DELETE on a closed store = %d %s (Retry-After %q), want 503, Retry-After 1", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	// A sign-in page's lookup: the page says to try again (README).
	rec = httptest.NewRecorder()
	e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, pathLogin+"?request=abc", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" || !strings.Contains(rec.Body.String(), "Temporarily unavailable") {
		t.Errorf("sign-in page on a closed store = %d %.300s (Retry-After %q), want 503 Temporarily unavailable, Retry-After 1", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
}
