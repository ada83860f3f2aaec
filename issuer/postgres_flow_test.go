package issuer

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// TestFlowSurvivesMigrationToPostgres runs the token flow on bbolt, copies
// the store into PostgreSQL (what `caddy mcp-auth migrate-storage` does),
// and continues on PostgreSQL under a new Issuer: same signing key, the
// access token still valid, the refresh token rotates once, and its reuse
// is still detected.
func TestFlowSurvivesMigrationToPostgres(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "auth.db")
	src, err := bolt.Open(path, bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := newTokEnvStore(t, src, clock)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid", "read", "offline_access"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatalf("Exchange() error: %v", err)
	}
	keys, _ := e.jwksOf(t)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	src, err = bolt.Open(path, bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := postgres.Open(context.Background(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	if n, err := dst.Import(context.Background(), src.Export); err != nil || n == 0 {
		t.Fatalf("Import() = %d, %v, want entries, nil", n, err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	e.restart(dst)
	// The access-token key and the RS256 key of the ID token.
	if after, _ := e.jwksOf(t); len(after) != 2 || !slices.Equal(kids(after), kids(keys)) {
		t.Fatalf("JWKS after migration = %v, want the same keys %v", kids(after), kids(keys))
	}
	if !e.active(t, tok.AccessToken) {
		t.Error("access token inactive after migration")
	}
	refresh := func(rt string) answer {
		return e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {tPublic}}, "")
	}
	a := refresh(tok.RefreshToken)
	if a.status != 200 || a.str("refresh_token") == "" {
		t.Fatalf("refresh after migration = %d %s, want 200 with a new refresh token", a.status, a.raw)
	}
	if again := refresh(tok.RefreshToken); again.status != 400 || again.str("error") != "invalid_grant" {
		t.Fatalf("reuse of the rotated refresh token = %d %s, want 400 invalid_grant", again.status, again.raw)
	}
	if next := refresh(a.str("refresh_token")); next.status != 400 {
		t.Fatalf("refresh token of a family revoked for reuse = %d %s, want 400", next.status, next.raw)
	}
}

// TestMakeIDTokenKeyConcurrently: two instances starting at once on one
// PostgreSQL store each make an RS256 ID-token key; one is kept, and
// both publish and sign with it.
func TestMakeIDTokenKeyConcurrently(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	var envs [2]*testEnv
	for n := range envs {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		envs[n] = newTokEnvStore(t, st, clock)
	}
	errs := make(chan error, len(envs))
	for _, e := range envs {
		go func() { errs <- e.iss.MakeIDTokenKey(context.Background()) }()
	}
	for range envs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	a, _ := envs[0].jwksOf(t)
	b, _ := envs[1].jwksOf(t)
	if len(a) != 2 || !slices.Equal(kids(a), kids(b)) {
		t.Fatalf("JWKS = %v and %v, want the same two keys (one RS256 ID-token key)", kids(a), kids(b))
	}
	for _, e := range envs {
		code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid"}})
		tok, err := e.exchange(t, tPublic, "", code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		idt, _ := tok.Extra("id_token").(string)
		if h, _ := claimsOf(t, idt); h["kid"] != a[1].Kid {
			t.Errorf("ID token kid = %v, want the one key %s", h["kid"], a[1].Kid)
		}
	}
}

// TestAdminNamesRaceReloadPostgres: instances on one PostgreSQL database,
// each with a pool of its own. While one (A) starts a configuration that
// declares a new user (New has checked the store), another (B, not
// reloaded) adds a user of that name through its admin API at the same
// moment: never do both succeed, which would leave the stored user
// hidden behind the configured one and A's configuration unable to
// start again (TestAdminNamesOfNewerConfiguration on bbolt).
func TestAdminNamesRaceReloadPostgres(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	open := func() *testEnv {
		st, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return newTokEnvStore(t, st, clock)
	}
	a, b := open(), open()
	if err := b.iss.ApplyConfigChanges(t.Context()); err != nil {
		t.Fatal(err)
	}
	hash := secretHash()
	for k := range 8 {
		name := fmt.Sprintf("racer%d", k)
		cfg := b.iss.cfg
		cfg.Users = append(slices.Clone(cfg.Users), User{Username: name, PasswordHash: hash})
		reloaded, err := New(cfg, a.store)
		if err != nil {
			t.Fatal(err)
		}
		added := make(chan error, 1)
		go func() { added <- b.iss.PutUser(context.Background(), User{Username: name, PasswordHash: hash}) }()
		applied := reloaded.ApplyConfigChanges(t.Context())
		if err := <-added; err == nil && applied == nil {
			t.Fatalf("%s: both the admin API's creation and the reload declaring it succeeded", name)
		}
		if applied != nil {
			// The reload failed: the stored user goes, as an operator
			// would remove it, for the next round.
			if err := b.iss.DeleteUser(t.Context(), name); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestRevokeHugeDerivedTreePostgres: revoking a token at /revoke revokes
// every token exchanged from it, and an agent may exchange at its
// client's rate for as long as the token lives (tens of thousands). Done
// in one transaction, that outlasted the store's bound and was rolled
// back: 503, and the token itself stayed valid, so the very delegate the
// revocation was to stop could keep it from happening. The token is now
// revoked in a transaction of its own and the tree in bounded ones.
func TestRevokeHugeDerivedTreePostgres(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	// A short bound (each transaction is abandoned after twice it), as a
	// loaded database makes the default one.
	st, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	seed, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = seed.Close() })
	e := newTokEnvStore(t, st, clock)
	user := e.userToken(t, tPublic, "read").AccessToken
	claims, err := e.iss.parseAccessToken(t.Context(), user, 0)
	if err != nil {
		t.Fatal(err)
	}
	// What an agent's exchanges record (derivedIn(...).add), written
	// directly: 6,000 exchanges take ten minutes at the client's rate.
	const n = 6000
	child := func(k int) string { return fmt.Sprintf("child%05d", k) }
	for k := 0; k < n; k += 500 {
		err := seed.Update(t.Context(), func(tx store.Tx) error {
			for j := k; j < k+500; j++ {
				if err := derivedIn(tx).add(claims.ID, child(j), claims.ExpiresAt.Time); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// A client retries a 503 (storage busy). On a loaded machine even a
	// small transaction can outlast the short bound once; one that holds
	// the whole tree outlasts it every time.
	r := e.post(t, pathRevoke, url.Values{"token": {user}, "client_id": {tPublic}}, "")
	for try := 0; try < 10 && r.status == http.StatusServiceUnavailable; try++ {
		r = e.post(t, pathRevoke, url.Values{"token": {user}, "client_id": {tPublic}}, "")
	}
	if r.status != http.StatusOK {
		t.Errorf("revoke a token with %d exchanged from it = %d %s, want 200", n, r.status, r.raw)
	}
	for _, jti := range []string{claims.ID, child(0), child(n - 1)} {
		err := seed.View(t.Context(), func(tx store.Tx) error {
			switch ok, err := revocationsIn(tx).revoked(jti, ""); {
			case err != nil:
				return err
			case !ok:
				t.Errorf("%s not revoked", jti)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsentApprovalsConcurrentPostgres: a user at the bound of
// remembered consents (maxUserConsents, each of a few kilobytes) keeps
// approving new apps while other users approve theirs, on PostgreSQL.
// Every approval succeeds (none gives up after its serialization-failure
// retries, which the user would see as "temporarily unavailable"), no
// write transaction reads a user's whole range of consents (which, in the
// one-table store, conflicts with every concurrent write near it and
// cost each such approval ~120 ms), and the user's consents end at most
// at the bound.
func TestConsentApprovalsConcurrentPostgres(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st, err := postgres.Open(context.Background(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := newTokEnvStore(t, st, clock)
	ctx := t.Context()
	const big = "heavy"
	pad := strings.Repeat("h", 2400)
	err = st.Update(ctx, func(tx store.Tx) error {
		for n := range maxUserConsents {
			at := clock.Now().Add(time.Duration(n-maxUserConsents) * time.Minute)
			cs := &consent{Scopes: []string{"read"}, GrantedAt: at, RedirectHosts: []string{pad}}
			if err := consentsIn(tx).t.put(consentKey(big, fmt.Sprintf("https://seed.example.com/%d.json", n), tResource, ""), cs, time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	lists := &listCounted{Store: st, bucket: bucketConsents, writesOnly: true}
	e.store = lists
	e.serve(e.iss.cfg)
	c := &Client{ID: tPublic, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none"}
	approve := func(user string, n int) error {
		s := &session{User: user, AuthTime: clock.Now()}
		ar := &authRequest{ClientID: fmt.Sprintf("https://app.example.com/%s/%d.json", user, n), RedirectURI: tRedirect,
			CodeChallenge: testChallenge, CodeChallengeMethod: "S256"}
		_, err := e.iss.issueCode(ctx, s, c, ar, "", tResource, []string{"read"}, true)
		return err
	}
	users := []string{big, big, big, big, big, big, big, big, "u1", "u2", "u3", "u4"}
	const each = 6
	errs := make(chan error, len(users)*each)
	var wg sync.WaitGroup
	for g, user := range users {
		wg.Go(func() {
			for n := range each {
				if err := approve(user, g*each+n); err != nil {
					errs <- fmt.Errorf("%s approval %d: %w", user, n, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 3 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d approvals failed, want none", failed, len(users)*each)
	}
	if n := lists.listed.Load(); n != 0 {
		t.Errorf("write transactions listed %d consents, want none", n)
	}
	// One more approval of the user, alone, brings the consents within
	// the bound whatever the concurrent ones left.
	if err := approve(big, 1000); err != nil {
		t.Fatal(err)
	}
	n := 0
	err = st.View(ctx, func(tx store.Tx) error {
		return consentsIn(tx).ofUser(big, func(string, string, string, *consent) error { n++; return nil })
	})
	if err != nil || n > maxUserConsents {
		t.Fatalf("user's consents = %d, %v, want at most %d", n, err, maxUserConsents)
	}
}
