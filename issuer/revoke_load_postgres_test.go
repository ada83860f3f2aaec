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

// TestManyGrantsRevokedPostgres: on PostgreSQL, removing, disabling or
// re-keying a principal that holds many live grants (a user signing in
// hundreds of times an hour, a service client taking a token a second)
// succeeds and revokes all of them. Each grant revoked costs about ten
// statements; revoked in the transaction that ends the principal, they
// passed the store's bound on one transaction (here twice 200 ms, by
// default 20 s: about 10,000 grants) and the change failed with
// store.ErrUnavailable every time, leaving the principal and its grants
// as they were.
func TestManyGrantsRevokedPostgres(t *testing.T) {
	const (
		grants = 1500
		user   = "mallory"
		client = "busy-service"
		agent  = "busy-agent"
	)
	for _, tt := range []struct {
		name   string
		grant  func(g *grant) // makes g one the change revokes
		change func(ctx context.Context, i *Issuer) error
	}{
		{"user removed", userGrant(user), func(ctx context.Context, i *Issuer) error { return i.DeleteUser(ctx, user) }},
		{"user disabled", userGrant(user), func(ctx context.Context, i *Issuer) error { return i.DisableUser(ctx, user) }},
		{"password set", userGrant(user), func(ctx context.Context, i *Issuer) error { return i.SetPassword(ctx, user, passwordHash()) }},
		{"client removed", clientGrant(client), func(ctx context.Context, i *Issuer) error { return i.DeleteClient(ctx, client) }},
		{"client secret rotated", clientGrant(client), func(ctx context.Context, i *Issuer) error {
			_, err := i.RotateClientSecret(ctx, client)
			return err
		}},
		{"agent removed", agentGrant(agent), func(ctx context.Context, i *Issuer) error { return i.DeleteAgent(ctx, agent) }},
		{"agent secret rotated", agentGrant(agent), func(ctx context.Context, i *Issuer) error {
			_, err := i.RotateAgentSecret(ctx, agent)
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			ctx := context.Background()
			st, err := postgres.Open(ctx, pgtest.NewDatabase(t), postgres.Options{Now: clock.Now, Timeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			e := newTokEnvStore(t, st, clock)
			if err := e.iss.PutUser(ctx, User{Username: user, PasswordHash: passwordHash()}); err != nil {
				t.Fatal(err)
			}
			if err := e.iss.PutClient(ctx, Client{ID: client, SecretHash: secretHash(), GrantTypes: []string{grantClientCredentials}}); err != nil {
				t.Fatal(err)
			}
			if err := e.iss.PutAgent(ctx, Agent{ID: agent, SecretHash: hashClientSecret(tAgentSecret)}); err != nil {
				t.Fatal(err)
			}
			now := clock.Now()
			ids := make([]string, grants)
			for b := 0; b < grants; b += 100 {
				err := st.Update(ctx, func(tx store.Tx) error {
					for k := b; k < b+100; k++ {
						ids[k] = fmt.Sprintf("g%05d", k)
						g := &grant{ID: ids[k], Resource: tResource, Scopes: []string{"read"}, Issuer: e.iss.URL(),
							CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(time.Hour)}
						tt.grant(g)
						if err := grantsIn(tx).create(g); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := tt.change(ctx, e.iss); err != nil {
				t.Fatalf("the change with %d live grants = %v, want nil", grants, err)
			}
			for _, id := range ids {
				if revoked, err := e.iss.Revoked(ctx, "", id); !revoked || err != nil {
					t.Fatalf("Revoked(grant %s) after the change = %v, %v; want true", id, revoked, err)
				}
			}
		})
	}
}

// userGrant, clientGrant and agentGrant make a grant the user's (to a
// client), the client's own or the agent's own.
func userGrant(user string) func(*grant) {
	return func(g *grant) { g.Subject, g.ClientID = user, tPublic }
}

func clientGrant(client string) func(*grant) {
	return func(g *grant) { g.Subject, g.ClientID, g.PrincipalType = client, client, principalClient }
}

func agentGrant(agent string) func(*grant) {
	return func(g *grant) { g.Subject, g.ClientID, g.PrincipalType = agent, agent, principalAgent }
}
