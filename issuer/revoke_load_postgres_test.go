package issuer

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// TestRevocationUnderTokenLoadPostgres (review s15-token F3): on
// PostgreSQL, removing a user revokes its grants in one SERIALIZABLE
// transaction that scans the whole grants bucket (30,000 other grants
// here) and rewrites the user's. Token requests write into what it read
// many times a second: the victim's own refreshes, another user's, or a
// client's client_credentials requests. Without the store's lockAfter the
// revocation lost every conflict and gave up after 20 attempts, revoking
// nothing; it must commit, and no refresh of the user succeed after it.
func TestRevocationUnderTokenLoadPostgres(t *testing.T) {
	t.Run("victim refreshes", func(t *testing.T) { revocationUnderLoad(t, "mallory") })
	// The load is another user's ordinary refreshes: the victim does nothing.
	t.Run("others refresh", func(t *testing.T) { revocationUnderLoad(t, "bob") })
	// The load is a confidential client's client_credentials requests.
	t.Run("client credentials", func(t *testing.T) { revocationUnderLoad(t, "") })
}

func revocationUnderLoad(t *testing.T, loadUser string) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	ctx := context.Background()
	st, err := postgres.Open(ctx, dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := newTokEnvStore(t, st, clock)
	const victim = "mallory"
	if err := e.iss.PutUser(ctx, User{Username: victim, PasswordHash: passwordHash(), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	const preload = 30
	// Other principals' live grants make the revocation's scan longer.
	for b := 0; b < preload; b++ {
		err := st.Update(ctx, func(tx store.Tx) error {
			for k := 0; k < 1000; k++ {
				g := &grant{ID: fmt.Sprintf("other-%d-%d", b, k), Subject: "svc", ClientID: "svc", PrincipalType: principalClient,
					Resource: tResource, Scopes: []string{"read"}, Issuer: e.iss.URL(), CreatedAt: clock.Now(), LastUsed: clock.Now(),
					ExpiresAt: clock.Now().Add(time.Hour)}
				if err := grantsIn(tx).put(g); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if code, verifier := e.issueCode(t, codeSpec{user: victim, scopes: []string{"read", "offline_access"}}); e.post(t, pathToken, url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {tRedirect}, "client_id": {tPublic}}, "").status != 200 {
		t.Fatal("victim's code")
	}
	const families = 6
	var wg sync.WaitGroup
	var stop atomic.Bool
	var refreshes, after atomic.Int64
	var deleted atomic.Bool
	for range families {
		if loadUser == "" {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					if r := e.post(t, pathToken, url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}}, tOnlyCC+":"+tSecret); r.status == 200 {
						refreshes.Add(1)
					}
				}
			}()
			continue
		}
		code, verifier := e.issueCode(t, codeSpec{user: loadUser, scopes: []string{"read", "offline_access"}})
		a := e.post(t, pathToken, url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {tRedirect}, "client_id": {tPublic}}, "")
		rt := a.str("refresh_token")
		if rt == "" {
			t.Fatalf("code: %d %s", a.status, a.raw)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				r := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {rt}, "client_id": {tPublic}}, "")
				if r.status != 200 {
					if r.status >= 500 {
						continue // contention: retry the same token
					}
					return
				}
				refreshes.Add(1)
				if deleted.Load() && loadUser == victim {
					after.Add(1)
				}
				rt = r.str("refresh_token")
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	err = e.iss.DeleteUser(ctx, victim)
	took := time.Since(start)
	deleted.Store(err == nil)
	time.Sleep(300 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("refreshes: %d; DeleteUser took %v, err %v; refreshes after it returned: %d", refreshes.Load(), took, err, after.Load())
	if err != nil {
		t.Errorf("DeleteUser while the user's refresh tokens rotate: %v", err)
	}
	if after.Load() > 0 {
		t.Errorf("%d refreshes succeeded after the user was deleted", after.Load())
	}
}
