package issuer

import (
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

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
