package issuer

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// clusterEnvs starts n issuers on one new PostgreSQL database, each with
// a store (a connection pool) of its own, as separate processes have,
// and one fixed clock. It returns them and the database's DSN.
func clusterEnvs(t *testing.T, n int, opts ...envOption) ([]*testEnv, string) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	envs := make([]*testEnv, n)
	for k := range envs {
		st, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		envs[k] = newTokEnvStore(t, st, clock, opts...)
	}
	return envs, dsn
}

// watchRevocations runs iss.WatchRevocations until the test ends.
func watchRevocations(t *testing.T, iss *Issuer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); iss.WatchRevocations(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// onlyNotified leaves an instance nothing but store notifications to
// learn of other instances' revocations in a test's time.
func onlyNotified(c *Config) {
	c.RevocationResync, c.RevocationMaxStale = time.Hour, 2*time.Hour
}

// clientTokenOf is a client credentials access token from e, with its
// jti and grant id.
func clientTokenOf(t *testing.T, e *testEnv) (tok, jti, gid string) {
	t.Helper()
	a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}}, tConf+":"+tSecret)
	if a.status != 200 {
		t.Fatalf("client credentials = %d %s", a.status, a.raw)
	}
	tok = a.str("access_token")
	_, c := claimsOf(t, tok)
	return tok, c["jti"].(string), c["gid"].(string)
}

// revokeAndWait revokes tok on a (RFC 7009) and returns how long after
// the request was sent b's Revoked refused it; it fails t after within.
func revokeAndWait(t *testing.T, a, b *testEnv, tok, jti, gid string, within time.Duration) time.Duration {
	t.Helper()
	if got, err := b.iss.Revoked(t.Context(), jti, gid); got || err != nil {
		t.Fatalf("B: Revoked(fresh token) = %v, %v, want false, nil", got, err)
	}
	start := time.Now()
	if r := a.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret); r.status != 200 {
		t.Fatalf("revoke on A = %d %s", r.status, r.raw)
	}
	for {
		got, err := b.iss.Revoked(t.Context(), jti, gid)
		if err != nil {
			t.Fatal(err)
		}
		if got {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("B still accepts a token revoked on A after %s", within)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// TestRevocationNotifiedAcrossInstances measures how soon a revocation on
// A is refused by B's Revoked (what B's gateways ask) on PostgreSQL: B
// catches up when A's NOTIFY arrives, its periodic resync being an hour
// away. The delay is measured from sending the revocation to A.
func TestRevocationNotifiedAcrossInstances(t *testing.T) {
	envs, _ := clusterEnvs(t, 2, onlyNotified)
	a, b := envs[0], envs[1]
	watchRevocations(t, b.iss)
	const n = 100
	delays := make([]time.Duration, n)
	for k := range delays {
		tok, jti, gid := clientTokenOf(t, a)
		delays[k] = revokeAndWait(t, a, b, tok, jti, gid, 5*time.Second)
	}
	slices.Sort(delays)
	median, worst := delays[n/2], delays[n-1]
	t.Logf("revocation on A refused by B over %d revocations: median %s, max %s", n, median, worst)
	if worst >= time.Second {
		t.Errorf("slowest revocation reached B after %s, want under 1s", worst)
	}
}

// TestRevocationNotifyAfterListenLost kills B's LISTEN connection
// (pg_terminate_backend, as a database restart or a network cut does):
// a revocation committed while B is not listening reaches B when it has
// reconnected (it catches up then), and later ones are notified again.
func TestRevocationNotifyAfterListenLost(t *testing.T) {
	envs, dsn := clusterEnvs(t, 2, onlyNotified)
	a, b := envs[0], envs[1]
	srv := pgtest.Shared(t)
	listener := func() string {
		t.Helper()
		pid, err := srv.Psql(dsn, fmt.Sprintf(`SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = '%s'`, postgres.ListenApplicationName))
		if err != nil {
			t.Fatal(err)
		}
		return pid
	}
	waitListener := func(not string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if pid := listener(); pid != "" && pid != not {
				return pid
			}
			if time.Now().After(deadline) {
				t.Fatal("B does not listen")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	watchRevocations(t, b.iss)
	pid := waitListener("")
	tok, jti, gid := clientTokenOf(t, a)
	if _, err := srv.Psql(dsn, "SELECT pg_terminate_backend("+pid+")"); err != nil {
		t.Fatal(err)
	}
	d := revokeAndWait(t, a, b, tok, jti, gid, 5*time.Second)
	t.Logf("revoked while B's LISTEN connection was down: refused by B after %s", d)
	waitListener(pid)
	tok, jti, gid = clientTokenOf(t, a)
	if d := revokeAndWait(t, a, b, tok, jti, gid, 5*time.Second); d >= time.Second {
		t.Errorf("revocation after B reconnected reached B after %s, want under 1s", d)
	}
}
