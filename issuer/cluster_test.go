package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
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
		envs[k] = postgresEnv(t, dsn, clock, opts...)
	}
	return envs, dsn
}

// postgresEnv is an issuer on a store of its own (a pool) on the
// database dsn names, closed when the test ends.
func postgresEnv(t *testing.T, dsn string, clock *storetest.Clock, opts ...envOption) *testEnv {
	t.Helper()
	st, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return newTokEnvStore(t, st, clock, opts...)
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
	return waitRevoked(t, b.iss, jti, gid, start, within)
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
		pid, err := srv.Backend(dsn, postgres.ListenApplicationName)
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

// holdPool holds every connection of e's pool of conns in an open
// transaction until the test ends (token traffic on a slow database).
func holdPool(t *testing.T, e *testEnv, conns int) {
	t.Helper()
	release := make(chan struct{})
	held := make(chan struct{}, conns)
	var holders sync.WaitGroup
	for range conns {
		holders.Go(func() {
			_ = e.store.View(context.Background(), func(tx store.Tx) error {
				held <- struct{}{}
				<-release
				return nil
			})
		})
	}
	t.Cleanup(holders.Wait)
	t.Cleanup(func() { close(release) })
	for range conns {
		<-held
	}
	queued, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := e.store.View(queued, func(store.Tx) error { return nil }); err == nil {
		t.Fatal("View with every connection held = nil, want it to wait for a connection past its deadline")
	}
}

// TestRevocationCatchUpPoolSaturated: while transactions hold every
// connection of A's pool (token traffic on a slow database), A still
// catches up at once with a revocation B committed, and A's Revoked, what
// its gateways ask, does not go stale: the catch-up reads on a connection
// of its own (store.ReservedViewer) instead of queueing behind the
// requests until RevocationMaxStale has passed and every gateway answers
// 503 with the database up.
func TestRevocationCatchUpPoolSaturated(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	staleAfter := func(c *Config) { c.RevocationMaxStale = DefaultRevocationMaxStale }
	const conns = 2
	a := postgresEnv(t, dsn+fmt.Sprintf(" pool_max_conns=%d", conns), clock, staleAfter)
	b := postgresEnv(t, dsn, clock, staleAfter)
	tok, jti, gid := clientTokenOf(t, b)

	holdPool(t, a, conns)
	if r := b.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret); r.status != 200 {
		t.Fatalf("revoke on B = %d %s", r.status, r.raw)
	}
	clock.Advance(DefaultRevocationMaxStale + time.Second) // since A's last catch-up, at New
	// Less than the idle-in-transaction timeout, which would end the
	// holders' sessions and free the pool.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.iss.SyncRevocations(ctx); err != nil {
		t.Fatalf("A: SyncRevocations with its pool held = %v after %s, want nil", err, time.Since(start))
	}
	t.Logf("A caught up in %s with its pool held", time.Since(start))
	if got, err := a.iss.Revoked(t.Context(), jti, gid); !got || err != nil {
		t.Errorf("A: Revoked(token revoked on B) = %v, %v, want true, nil", got, err)
	}
	if got, err := a.iss.Revoked(t.Context(), "other-jti", "other-gid"); got || err != nil {
		t.Errorf("A: Revoked(another token) = %v, %v, want false, nil (not stale)", got, err)
	}
}

// TestRevocationCatchUpReservedRefused: a database that admits the pool's
// connections but not one more (a role's or the server's connection
// limit, sized before the reserved connection existed) still has the
// catch-up read through the pool, not every gateway failing closed.
func TestRevocationCatchUpReservedRefused(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := pgtest.NewDatabase(t)
	const conns = 2
	role := fmt.Sprintf("limited%d", time.Now().UnixNano())
	db := dsn[strings.Index(dsn, "dbname=")+len("dbname="):]
	db = strings.Fields(db)[0]
	if _, err := srv.Psql(dsn, fmt.Sprintf("CREATE ROLE %s LOGIN CONNECTION LIMIT %d; ALTER DATABASE %s OWNER TO %s", role, conns, db, role)); err != nil {
		t.Fatal(err)
	}
	limited := strings.Replace(dsn, "user=postgres", "user="+role, 1) + fmt.Sprintf(" pool_max_conns=%d", conns)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	staleAfter := func(c *Config) { c.RevocationMaxStale = DefaultRevocationMaxStale }
	a := postgresEnv(t, limited, clock, staleAfter)
	b := postgresEnv(t, dsn, clock, staleAfter)
	tok, jti, gid := clientTokenOf(t, b)

	// The reserved connection is ended, then the pool opens both its
	// connections: the reserved one cannot come back within the limit.
	if _, err := srv.Psql(dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"+role+"' AND application_name = 'mcp-auth reserved'"); err != nil {
		t.Fatal(err)
	}
	var both sync.WaitGroup
	held := make(chan error, conns)
	release := make(chan struct{})
	for range conns {
		both.Go(func() {
			err := a.store.View(t.Context(), func(store.Tx) error { held <- nil; <-release; return nil })
			if err != nil {
				held <- err
			}
		})
	}
	for range conns {
		if err := <-held; err != nil {
			close(release)
			t.Fatalf("opening the pool's connections: %v", err)
		}
	}
	close(release)
	both.Wait()

	if r := b.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret); r.status != 200 {
		t.Fatalf("revoke on B = %d %s", r.status, r.raw)
	}
	clock.Advance(DefaultRevocationMaxStale + time.Second)
	if err := a.iss.SyncRevocations(t.Context()); err != nil {
		t.Fatalf("A: SyncRevocations with no room for its reserved connection = %v, want nil (read through the pool)", err)
	}
	if got, err := a.iss.Revoked(t.Context(), jti, gid); !got || err != nil {
		t.Errorf("A: Revoked(token revoked on B) = %v, %v, want true, nil", got, err)
	}
}

// verifiedBy checks tok's signature with the key e's verification finds
// for its kid, as e's gateways do.
func verifiedBy(t *testing.T, e *testEnv, tok string) error {
	t.Helper()
	_, err := jwt.Parse(tok, func(tk *jwt.Token) (any, error) {
		kid, _ := tk.Header["kid"].(string)
		return e.iss.PublicKey(t.Context(), kid)
	}, jwt.WithValidMethods(signingAlgs), jwt.WithTimeFunc(e.clock.Now))
	return err
}

// TestKeyRotationAcrossInstances: a key rotated on A is in B's JWKS and
// accepted by B's verification within keyReload (5 s), and no instance
// signs with it before keyPublishDelay (70 s, what the README says); from
// then on both sign with it and verify each other's tokens, and tokens of
// the old key still verify on both.
func TestKeyRotationAcrossInstances(t *testing.T) {
	if keyPublishDelay != 70*time.Second || keyReload != 5*time.Second || jwksMaxAge != time.Minute {
		t.Fatalf("keyPublishDelay %s, keyReload %s, jwksMaxAge %s: the README says 70 s, 5 s and 60 s", keyPublishDelay, keyReload, jwksMaxAge)
	}
	envs, _ := clusterEnvs(t, 2)
	a, b := envs[0], envs[1]
	old := a.clientToken(t)
	oldKid := a.signedWith(t)
	kid, err := a.iss.RotateSigningKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(keyReload)
	if keys, _ := b.jwksOf(t); !slices.Contains(kids(keys), kid) {
		t.Fatalf("B's JWKS %s after the rotation on A = %v, want %s in it", keyReload, kids(keys), kid)
	}
	if _, err := b.iss.PublicKey(t.Context(), kid); err != nil {
		t.Fatalf("B: PublicKey(new kid) %s after the rotation = %v", keyReload, err)
	}
	b.clock.Advance(keyPublishDelay - keyReload - time.Nanosecond)
	for name, e := range map[string]*testEnv{"A": a, "B": b} {
		if got := e.signedWith(t); got != oldKid {
			t.Errorf("%s signs with %s just before keyPublishDelay, want the old key %s", name, got, oldKid)
		}
	}
	b.clock.Advance(time.Nanosecond)
	fromA, fromB := a.clientToken(t), b.clientToken(t)
	for _, tt := range []struct {
		name     string
		tok      string
		verifier *testEnv
		kid      string
	}{
		{"A's new token at B", fromA, b, kid},
		{"B's new token at A", fromB, a, kid},
		{"old token at B", old, b, oldKid},
		{"old token at A", old, a, oldKid},
	} {
		if h, _ := claimsOf(t, tt.tok); h["kid"] != tt.kid {
			t.Errorf("%s: kid %v, want %s", tt.name, h["kid"], tt.kid)
		}
		if err := verifiedBy(t, tt.verifier, tt.tok); err != nil {
			t.Errorf("%s: verification = %v", tt.name, err)
		}
	}
}

// TestLimitsSharedAcrossInstances: two issuers on one PostgreSQL database
// draw on one brute-force budget and one registration budget, so adding
// instances does not multiply an attacker's: failures alternated between
// A and B block the pair after limitFreePair in all, on both, and
// registrations alternated between them stop after registrationBurst in
// all; a refusal writes nothing, and what is written expires.
func TestLimitsSharedAcrossInstances(t *testing.T) {
	envs, dsn := clusterEnvs(t, 2)
	a, b := envs[0], envs[1]
	both := []*testEnv{a, b}
	const attacker = "203.0.113.9:4000"
	guess := ccForm(url.Values{"client_id": {tPost}, "client_secret": {"wrong"}})
	for n := range limitFreePair + 1 {
		if w := both[n%2].postFrom(attacker, pathToken, guess); w.Code != http.StatusUnauthorized {
			t.Fatalf("failure %d, on %s = %d %s, want 401", n+1, "AB"[n%2:n%2+1], w.Code, w.Body)
		}
	}
	right := ccForm(url.Values{"client_id": {tPost}, "client_secret": {tSecret2}})
	for k, e := range both {
		if w := e.postFrom(attacker, pathToken, right); w.Code != http.StatusTooManyRequests {
			t.Errorf("%s after %d failures split over A and B = %d %s, want 429", "AB"[k:k+1], limitFreePair+1, w.Code, w.Body)
		}
	}

	const body = `{"client_name":"CLI","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`
	const registrant = "198.51.100.7:1000"
	for n := range registrationBurst {
		if w := registerFrom(both[n%2].iss, registrant, body); w.Code != http.StatusCreated {
			t.Fatalf("registration %d = %d %s, want 201", n+1, w.Code, w.Body)
		}
	}
	rows := func() string {
		t.Helper()
		n, err := pgtest.Shared(t).Psql(dsn, `SELECT count(*) FROM mcp_auth_entries WHERE bucket = 'limits'::bytea`)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// pair, account, address; and the registrant's and the global bucket
	before := rows()
	if before != "5" {
		t.Errorf("limit counters stored = %s, want 5 (one per key)", before)
	}
	for k, e := range both {
		if w := registerFrom(e.iss, registrant, body); w.Code != http.StatusTooManyRequests {
			t.Errorf("registration on %s past the burst over A and B = %d %s, want 429", "AB"[k:k+1], w.Code, w.Body)
		}
	}
	if after := rows(); after != before {
		t.Errorf("limit counters after refusals = %s, want %s", after, before)
	}
	if n := a.count(bucketClients); n != registrationBurst {
		t.Errorf("registered clients = %d, want %d", n, registrationBurst)
	}

	// A signed-in user's authorization requests that store something.
	for n := range userWriteBurst {
		if d, err := both[n%2].iss.userWrites.take(t.Context(), bUser); err != nil || d != 0 {
			t.Fatalf("signed-in write %d = wait %v, %v", n+1, d, err)
		}
	}
	for k, e := range both {
		if d, err := e.iss.userWrites.take(t.Context(), bUser); err != nil || d == 0 {
			t.Errorf("signed-in write on %s past the burst over A and B = wait %v, %v; want a wait", "AB"[k:k+1], d, err)
		}
	}

	// Counters expire once they no longer matter, and Purge reclaims them.
	a.clock.Advance(24 * time.Hour)
	if _, err := a.store.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := rows(); got != "0" {
		t.Errorf("limit counters a day later, purged = %s, want 0", got)
	}
}

// TestLimitsKeepNoTypedName: on a shared database the brute-force
// counters are entries of the store, and what a user typed as a username
// is part of their keys. A name that matches no account may be a password
// typed in the wrong field (hence the security log leaves it out), so it
// is never stored as typed, nor a client id as sent: the counters still
// block the pair (TestLimitsSharedAcrossInstances).
func TestLimitsKeepNoTypedName(t *testing.T) {
	envs, dsn := clusterEnvs(t, 1)
	e := envs[0]
	const typed = "Correct-Horse-Battery-Staple-42"
	if code, _ := e.loginFrom(t, "203.0.113.9:4000", typed, "whatever"); code != http.StatusUnauthorized {
		t.Fatalf("login as %q = %d, want 401", typed, code)
	}
	if w := e.postFrom("203.0.113.9:4000", pathToken, ccForm(url.Values{"client_id": {typed}, "client_secret": {"x"}})); w.Code != http.StatusUnauthorized {
		t.Fatalf("client %q = %d %s, want 401", typed, w.Code, w.Body)
	}
	keys, err := pgtest.Shared(t).Psql(dsn, `SELECT count(*), string_agg(encode(key, 'escape'), ' ') FROM mcp_auth_entries WHERE bucket = 'limits'::bytea`)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(keys, "0|") {
		t.Fatalf("limit counters stored: %q, want the login's", keys)
	}
	if strings.Contains(strings.ToLower(keys), strings.ToLower(typed)) {
		t.Errorf("limit counter keys %q hold the typed name %q", keys, typed)
	}
}

// behindOneURL makes each env's client reach its own server at the
// issuer URL the envs share (as behind a load balancer), so that DPoP
// proofs name the same htu at every instance.
func behindOneURL(envs []*testEnv) {
	for _, e := range envs {
		addr := e.srv.Listener.Addr().String()
		e.srv.Client().Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return new(net.Dialer).DialContext(ctx, network, addr)
		}
	}
}

// TestDPoPReplayAcrossInstances: a DPoP proof spent at one instance is
// refused at another on the same database (each has its own replay
// memory), its record expires with the proof's acceptance window, and a
// proof the database cannot record is refused with temporarily_unavailable
// and issues nothing, at /token, /par and userinfo.
func TestDPoPReplayAcrossInstances(t *testing.T) {
	// One issuer URL, as behind a load balancer: proofs name it in htu.
	envs, dsn := clusterEnvs(t, 2, func(c *Config) { c.Issuer = "http://localhost:9" })
	a, b := envs[0], envs[1]
	behindOneURL(envs)
	k := newDPoPKey(t)
	form := url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}}
	tokenURL := a.iss.endpoint(pathToken)

	proof := k.proof(t, a, tokenURL, nil)
	wantBound(t, "first use at A", a.postDPoP(t, pathToken, form, tConf+":"+tSecret, proof), k)
	for _, e := range []*testEnv{b, a} {
		r := e.postDPoP(t, pathToken, form, tConf+":"+tSecret, proof)
		if r.status != http.StatusBadRequest || !strings.Contains(r.str("error_description"), "used before") || r.str("access_token") != "" {
			t.Errorf("the proof replayed = %d %s, want 400 invalid_dpop_proof", r.status, r.raw)
		}
	}
	wantBound(t, "a fresh proof at B", b.postDPoP(t, pathToken, form, tConf+":"+tSecret, k.proof(t, b, tokenURL, nil)), k)
	if n := a.count(bucketDPoP); n != 2 {
		t.Errorf("DPoP records = %d, want 2 (one per proof spent)", n)
	}
	// Kept while an instance could accept the proof, then gone.
	a.clock.Advance(dpop.DefaultWindow)
	if n := a.count(bucketDPoP); n != 2 {
		t.Errorf("DPoP records at the window's end = %d, want 2", n)
	}
	a.clock.Advance(time.Minute + postgres.DefaultPurgeGrace)
	if _, err := a.store.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := a.count(bucketDPoP); n != 0 {
		t.Errorf("DPoP records past the window, purged = %d, want 0", n)
	}

	// A user's token bound to the key, for userinfo below.
	code, verifier := a.issueCode(t, codeSpec{scopes: []string{"openid", "read"}})
	redeem := url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {tRedirect}, "client_id": {tPublic}}
	user := a.postDPoP(t, pathToken, redeem, "", k.proof(t, a, tokenURL, nil))
	wantBound(t, "user's token", user, k)

	// The database refuses the record: fail closed.
	db := pgtest.Shared(t)
	if _, err := db.Psql(dsn, `CREATE FUNCTION refuse_dpop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
		CREATE TRIGGER refuse_dpop BEFORE INSERT OR UPDATE ON mcp_auth_entries FOR EACH ROW WHEN (NEW.bucket = 'dpop'::bytea) EXECUTE FUNCTION refuse_dpop()`); err != nil {
		t.Fatal(err)
	}
	tokens := a.count(bucketGrants)
	r := b.postDPoP(t, pathToken, form, tConf+":"+tSecret, k.proof(t, b, tokenURL, nil))
	if r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" || r.str("access_token") != "" {
		t.Errorf("with the DPoP record refused = %d %s, want 503 temporarily_unavailable", r.status, r.raw)
	}
	if n := a.count(bucketGrants); n != tokens {
		t.Errorf("grants = %d, want %d: nothing issued", n, tokens)
	}
	// So at /par (nothing pushed) and userinfo (no claims), as README says.
	parURL := b.iss.endpoint(pathPAR)
	push := url.Values{"client_id": {tPublic}, "response_type": {"code"}, "redirect_uri": {tRedirect}, "scope": {"read"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"}, "resource": {tResource}}
	if r := b.postDPoP(t, pathPAR, push, "", k.proof(t, b, parURL, nil)); r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" || r.str("request_uri") != "" {
		t.Errorf("PAR with the DPoP record refused = %d %s, want 503 temporarily_unavailable", r.status, r.raw)
	}
	infoURL := b.iss.endpoint(pathUserinfo)
	sum := sha256.Sum256([]byte(user.str("access_token")))
	req, _ := http.NewRequest(http.MethodGet, infoURL, nil)
	req.Header.Set("Authorization", "DPoP "+user.str("access_token"))
	req.Header.Set("DPoP", k.proof(t, b, infoURL, jwt.MapClaims{"htm": http.MethodGet, "ath": base64.RawURLEncoding.EncodeToString(sum[:])}))
	if r := b.do(t, req); r.status != http.StatusServiceUnavailable || r.str("error") != "temporarily_unavailable" || r.body["sub"] != nil {
		t.Errorf("userinfo with the DPoP record refused = %d %s, want 503 temporarily_unavailable", r.status, r.raw)
	}
	// Bearer requests need no record.
	if r := b.post(t, pathToken, form, tConf+":"+tSecret); r.status != http.StatusOK {
		t.Errorf("bearer token request = %d %s, want 200", r.status, r.raw)
	}
}

// TestClockBehindAnotherInstance: instances' clocks agree to within
// milliseconds (NTP), never exactly, and an access token's iat is whole
// seconds. An instance whose clock is a little behind the one that issued
// a token a moment ago still takes it at its own endpoints: introspection
// says it is active, and RFC 7009 revocation revokes it (answering 200
// and revoking nothing would leave the client believing it ended).
func TestClockBehindAnotherInstance(t *testing.T) {
	envs, _ := clusterEnvs(t, 2, func(c *Config) { c.Issuer = "http://localhost:9" })
	a, b := envs[0], envs[1]
	behindOneURL(envs)
	b.restart(b.store, func(c *Config) {
		c.Issuer = "http://localhost:9"
		c.Now = func() time.Time { return a.clock.Now().Add(-50 * time.Millisecond) }
	})
	tok, jti, gid := clientTokenOf(t, a)
	if r := b.post(t, pathIntrospect, url.Values{"token": {tok}}, tConf+":"+tSecret); r.status != 200 || r.body["active"] != true {
		t.Errorf("introspection at B of A's token = %d %s, want active", r.status, r.raw)
	}
	if r := b.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret); r.status != 200 {
		t.Fatalf("revoke at B = %d %s", r.status, r.raw)
	}
	if err := a.iss.SyncRevocations(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, err := a.iss.Revoked(t.Context(), jti, gid); !got || err != nil {
		t.Errorf("A: Revoked(token revoked at B) = %v, %v, want true, nil", got, err)
	}
	if got := revokedIn(t, b.iss, jti, gid); !got {
		t.Errorf("B: revokedInStore(token revoked at B) = false, want true")
	}
}

// TestInFlightLeftByCrashForgotten: an instance killed while it checked
// a client's secret (or whose settlement the store refused) leaves the
// check counted in flight in the shared database. A crash between the
// two is not rare (each instance killed during a busy client's check
// leaves one), and each slot left takes one failure off the pair's
// budget: with limitFreePair of them, one wrong secret leaves the
// client no room, and its right secret waits and is refused 503. What
// was left is forgotten within two inFlightTTL even while the client
// keeps authenticating every 20 s: counts in flight are kept per
// generation and a generation is never extended by later traffic.
func TestInFlightLeftByCrashForgotten(t *testing.T) {
	envs, _ := clusterEnvs(t, 2)
	a, b := envs[0], envs[1]
	const remote, addr = "203.0.113.77:4000", "203.0.113.77"
	account := "client:" + tPost // its secret goes in the form (client_secret_post)
	for range limitFreePair {
		// B reserves the check and is killed before it settles it.
		if _, _, err := b.iss.limiter.reserveAttempt(t.Context(), account, addr); err != nil {
			t.Fatal(err)
		}
	}
	waits := 0
	a.iss.limiter.pause = func(context.Context, time.Duration) error { waits++; return nil }
	right := ccForm(url.Values{"client_id": {tPost}, "client_secret": {tSecret2}})
	for k := range 9 {
		a.clock.Advance(20 * time.Second)
		if w := a.postFrom(remote, pathToken, right); w.Code != http.StatusOK {
			t.Fatalf("right secret %d, %v after the crash = %d %s, want 200", k+1, time.Duration(k+1)*20*time.Second, w.Code, w.Body)
		}
		if k != 5 {
			continue
		}
		// README (Limits): "forgotten within two minutes". The crash
		// came at a minute's start (the clock's), the latest a check
		// left in it is forgotten: exactly two minutes later.
		if w := a.postFrom(remote, pathToken, ccForm(url.Values{"client_id": {tPost}, "client_secret": {"wrong"}})); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong secret = %d %s, want 401", w.Code, w.Body)
		}
		if w := a.postFrom(remote, pathToken, right); w.Code != http.StatusOK {
			t.Errorf("right secret after one wrong one, 2 minutes after the crash = %d %s (after %d waits for room), want 200", w.Code, w.Body, waits)
		}
	}
}

// proofSpentBesidePurger opens instance B's store on dsn, its clock
// ahead of a's by ahead, for its purge, and spends a DPoP proof at a's
// token endpoint; it returns B's store, the token request and the proof.
func proofSpentBesidePurger(t *testing.T, a *testEnv, dsn string, ahead time.Duration) (*postgres.Store, url.Values, string) {
	t.Helper()
	b, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: func() time.Time { return a.clock.Now().Add(ahead) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	k := newDPoPKey(t)
	form := url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}}
	proof := k.proof(t, a, a.iss.endpoint(pathToken), nil)
	wantBound(t, "first use at A", a.postDPoP(t, pathToken, form, tConf+":"+tSecret, proof), k)
	return b, form, proof
}

// TestDPoPReplayAfterPurgeAhead: instance B's clock runs 30 s ahead of
// the others' (NTP lost, a VM resumed from a snapshot). Its purge loop
// (caddymodule's App.purge) must not delete what the others still read
// as live: a DPoP proof spent at A, 45 s later, is within C's acceptance
// window, and its replay record must still refuse it there. The record
// goes once every instance is past it.
func TestDPoPReplayAfterPurgeAhead(t *testing.T) {
	envs, dsn := clusterEnvs(t, 2, func(c *Config) { c.Issuer = "http://localhost:9" })
	a, c := envs[0], envs[1]
	behindOneURL(envs)
	b, form, proof := proofSpentBesidePurger(t, a, dsn, 30*time.Second)

	a.clock.Advance(45 * time.Second)
	if _, err := b.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r := c.postDPoP(t, pathToken, form, tConf+":"+tSecret, proof); r.status != http.StatusBadRequest || r.str("access_token") != "" {
		t.Errorf("the proof replayed at C after B's purge = %d %s, want 400 invalid_dpop_proof", r.status, r.raw)
	}
	a.clock.Advance(dpop.DefaultWindow + postgres.DefaultPurgeGrace)
	if _, err := b.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := a.count(bucketDPoP); n != 0 {
		t.Errorf("DPoP records once past every instance's window, purged = %d, want 0", n)
	}
}

// TestDPoPReplayAfterPurgeFarAhead: instance B's clock runs 5 minutes
// ahead of the database's and the other instances' (NTP stepped it
// wrong, or was spoofed), past what the purge's grace allows for. Its
// /healthz answers 503 (TestHealthClockOffDatabase), but its purge loop
// (caddymodule's App.purge) goes on, and what it deletes is gone for
// every instance: the others' DPoP replay records, client assertion
// jtis, revocation markers (a restarted instance takes the revoked
// tokens again), brute-force counters. It must delete only what the
// database's clock, which the others agree with, has seen expire too: a
// proof spent at A is refused at C after B's purge.
func TestDPoPReplayAfterPurgeFarAhead(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Now()) // the database's time
	oneURL := func(c *Config) { c.Issuer = "http://localhost:9" }
	a, c := postgresEnv(t, dsn, clock, oneURL), postgresEnv(t, dsn, clock, oneURL)
	behindOneURL([]*testEnv{a, c})
	b, form, proof := proofSpentBesidePurger(t, a, dsn, 5*time.Minute)

	if _, err := b.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := a.count(bucketDPoP); n != 1 {
		t.Errorf("DPoP records after the purge of an instance 5 minutes ahead = %d, want 1", n)
	}
	if r := c.postDPoP(t, pathToken, form, tConf+":"+tSecret, proof); r.status != http.StatusBadRequest || r.str("access_token") != "" {
		t.Errorf("the proof replayed at C after B's purge = %d %s, want 400 invalid_dpop_proof", r.status, r.raw)
	}
}

// TestExchangedTokensRevokedAcrossInstances: tokens an agent exchanged
// on instance B from a user's token of instance A, delegated and then
// chained, carry the user's grant, so the user revoking it on A ends them
// on B at once: B's Revoked, introspection and a further exchange.
func TestExchangedTokensRevokedAcrossInstances(t *testing.T) {
	// One issuer URL, as behind a load balancer.
	envs, _ := clusterEnvs(t, 2, onlyNotified, func(c *Config) { c.Issuer = "http://localhost:9" })
	a, b := envs[0], envs[1]
	behindOneURL(envs)
	watchRevocations(t, b.iss)
	user := a.userToken(t, tPublic, "read", "write", "offline_access")
	one := b.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user.AccessToken, b.agentToken(t, tAgent1, tAgentSecret)))
	a2 := b.agentToken(t, tAgent2, tAgentSecret)
	two := b.tokenExchange(t, tAgent2+":"+tAgentSecret, url.Values{
		"subject_token": {one.str("access_token")}, "subject_token_type": {tokenTypeAccessToken},
		"actor_token": {a2}, "actor_token_type": {tokenTypeAccessToken}, "scope": {"read"},
	})
	if one.status != 200 || two.status != 200 {
		t.Fatalf("exchanges on B = %d %s %s, %d %s; want 200", one.status, one.str("error"), one.str("error_description"), two.status, two.str("error"))
	}
	start := time.Now()
	if r := a.post(t, pathRevoke, url.Values{"token": {user.RefreshToken}, "client_id": {tPublic}}, ""); r.status != 200 {
		t.Fatalf("revoke on A = %d %s", r.status, r.raw)
	}
	for n, tok := range []string{one.str("access_token"), two.str("access_token")} {
		_, c := claimsOf(t, tok)
		waitRevoked(t, b.iss, c["jti"].(string), c["gid"].(string), start, 5*time.Second)
		if b.active(t, tok) {
			t.Errorf("exchanged token %d active at B after A revoked the user's grant", n+1)
		}
	}
	if x := b.tokenExchange(t, tAgent2+":"+tAgentSecret, exchangeForm(two.str("access_token"), "")); x.str("error") != "invalid_request" {
		t.Errorf("exchange on B of a token of the revoked grant = %d %s, want invalid_request", x.status, x.str("error"))
	}
}

// TestAgentRekeyAcrossInstances: an agent's secret rotated on instance A
// ends, at instance B (its Revoked, what B's gateways ask, and its token
// endpoint), the users' delegations to it made on B, refresh tokens
// included, and a delegated code B issued before the rotation, redeemed
// after it with the agent's new token; the old secret no longer works on
// B. Another agent's delegation and the user's own grant stay.
func TestAgentRekeyAcrossInstances(t *testing.T) {
	envs, _ := clusterEnvs(t, 2, onlyNotified, func(c *Config) { c.Issuer = "http://localhost:9" })
	a, b := envs[0], envs[1]
	behindOneURL(envs)
	watchRevocations(t, b.iss)
	ctx := t.Context()
	if err := a.iss.PutAgent(ctx, Agent{ID: "rt", SecretHash: hashClientSecret("first")}); err != nil {
		t.Fatal(err)
	}
	del := b.delegated(t, "rt", b.agentToken(t, "rt", "first"), "read", "offline_access")
	kept := map[string]*oauth2.Token{
		"another agent's delegation": b.delegated(t, tAgent2, b.agentToken(t, tAgent2, tAgentSecret), "read", "offline_access"),
		"the user's own grant":       b.userToken(t, tPublic, "read", "offline_access"),
	}
	code, verifier := b.issueCode(t, codeSpec{actor: "rt", scopes: []string{"read"}})
	b.clock.Advance(2 * time.Second)

	start := time.Now()
	secret, err := a.iss.RotateAgentSecret(ctx, "rt")
	if err != nil {
		t.Fatal(err)
	}
	_, c := claimsOf(t, del.AccessToken)
	waitRevoked(t, b.iss, c["jti"].(string), c["gid"].(string), start, 5*time.Second)
	refresh := func(tok *oauth2.Token) answer {
		return b.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, "")
	}
	if r := refresh(del); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
		t.Errorf("refresh on B of the delegation to the rotated agent = %d %s, want invalid_grant", r.status, r.raw)
	}
	if _, err := b.exchange(t, tPublic, "", code, verifier,
		oauth2.SetAuthURLParam("actor_token", b.agentToken(t, "rt", secret)), oauth2.SetAuthURLParam("actor_token_type", tokenTypeAccessToken)); err == nil {
		t.Error("a delegated code issued before the rotation was redeemed on B after it")
	}
	if _, err := b.agentTokenErr("rt", "first"); err == nil {
		t.Error("the rotated secret still works on B")
	}
	for what, tok := range kept {
		if b.revokedToken(t, tok.AccessToken) {
			t.Errorf("%s revoked by another agent's rotation", what)
		}
		if r := refresh(tok); r.status != http.StatusOK {
			t.Errorf("refresh on B of %s = %d %s, want 200", what, r.status, r.raw)
		}
	}
}

// TestReplayedAssertionRaceRevokesNothing: a private_key_jwt client's
// token request (a code exchange, a refresh), sent again with its client
// assertion while the original is under way (by a proxy or log that sees
// it), must not revoke the grant as the client's own reuse of a redeemed
// code or rotated refresh token would: a copy that finds the code
// redeemed or the token rotated finds its assertion spent with them, and
// is refused invalid_client. The copies race the original at two
// instances on one PostgreSQL database, and at one on a memory store.
func TestReplayedAssertionRaceRevokesNothing(t *testing.T) {
	t.Run("memory", func(t *testing.T) { assertionReplayRace(t, []*testEnv{newTokEnv(t)}) })
	t.Run("postgres", func(t *testing.T) {
		envs, _ := clusterEnvs(t, 2, func(c *Config) { c.Issuer = "http://localhost:9" })
		assertionReplayRace(t, envs)
	})
}

func assertionReplayRace(t *testing.T, envs []*testEnv) {
	const rounds = 15
	e := envs[0]
	for round := range rounds {
		code, verifier := e.issueCode(t, codeSpec{client: tJWT, scopes: []string{"read", "offline_access"}})
		issued := raceCopies(t, envs, round, "code exchange", url.Values{"grant_type": {grantAuthorizationCode}, "code": {code},
			"code_verifier": {verifier}, "redirect_uri": {tRedirect}})
		raceCopies(t, envs, round, "refresh", url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {issued.RefreshToken}})
		if e.revokedToken(t, issued.AccessToken) {
			t.Fatalf("round %d: the grant was revoked by copies of its client's requests", round)
		}
	}
}

// raceCopies sends copies of one token request of tJWT, with one client
// assertion, at once, from addresses of their own (a refused assertion
// counts against its address), spread over envs; one must be answered
// 200, with what it returns.
func raceCopies(t *testing.T, envs []*testEnv, round int, what string, form url.Values) (issued struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}) {
	t.Helper()
	const copies = 8
	form.Set("client_assertion_type", jwtBearerAssertion)
	form.Set("client_assertion", envs[0].clientAssertion(t, nil))
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string]int{}
	start := make(chan struct{})
	for k := range copies {
		wg.Go(func() {
			<-start
			w := envs[k%len(envs)].postFrom(fmt.Sprintf("198.51.100.%d:4000", round*copies+k+1), pathToken, form)
			var refused struct{ Error string }
			_ = json.Unmarshal(w.Body.Bytes(), &refused)
			mu.Lock()
			defer mu.Unlock()
			answers[fmt.Sprintf("%d %s", w.Code, refused.Error)]++
			if w.Code == http.StatusOK {
				_ = json.Unmarshal(w.Body.Bytes(), &issued)
			}
		})
	}
	close(start)
	wg.Wait()
	if answers["200 "] != 1 || issued.RefreshToken == "" {
		t.Fatalf("round %d, %s: answers %v, want one 200 with a refresh token", round, what, answers)
	}
	return issued
}

// TestRevocationsKeptAcrossClockStepBack: an instance whose clock a
// wrong time source steps ahead reads the revocations that end before
// its reading as expired (the store compares expiry with its clock): it
// prunes those it held and skips those logged meanwhile, its gateways
// refusing their tokens as expired anyway. Once the clock is stepped
// back, those tokens are live again, and the store still holds their
// markers (Purge waits for the database server's clock too); but the
// instance had read past them in the log, and unless the entry it last
// read had expired too (which made it load the markers again), it
// refused them no more, while every other instance did. It now loads
// the markers again whenever its clock reads earlier than at its last
// catch-up.
func TestRevocationsKeptAcrossClockStepBack(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	a := postgresEnv(t, dsn, storetest.NewClock(start))
	b := postgresEnv(t, dsn, storetest.NewClock(start))
	ctx := t.Context()
	sync := func() {
		t.Helper()
		if err := b.iss.SyncRevocations(ctx); err != nil {
			t.Fatal(err)
		}
	}
	revoke := func(tok string) {
		t.Helper()
		if r := a.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret); r.status != 200 {
			t.Fatalf("revoke on A = %d %s", r.status, r.raw)
		}
		sync()
	}
	// Two tokens of an hour, revoked 40 minutes on: one before B's clock
	// goes 30 minutes ahead, one while it is.
	before, jtiBefore, gidBefore := clientTokenOf(t, a)
	during, jtiDuring, gidDuring := clientTokenOf(t, a)
	a.clock.Advance(40 * time.Minute)
	b.clock.Advance(40 * time.Minute)
	revoke(before)
	if got, err := b.iss.Revoked(ctx, jtiBefore, gidBefore); !got || err != nil {
		t.Fatalf("B: Revoked(token revoked on A) = %v, %v, want true, nil", got, err)
	}

	b.clock.Advance(30 * time.Minute)
	sync()
	revoke(during)
	// The last revocation B reads while ahead is one it reads as live.
	fresh, jtiFresh, gidFresh := clientTokenOf(t, a)
	revoke(fresh)
	b.clock.Advance(-30 * time.Minute)
	sync()
	for _, tok := range []struct{ name, jti, gid string }{
		{"revoked before the clock went ahead", jtiBefore, gidBefore},
		{"revoked while it was ahead", jtiDuring, gidDuring},
		{"revoked last", jtiFresh, gidFresh},
	} {
		if got, err := a.iss.Revoked(ctx, tok.jti, tok.gid); !got || err != nil {
			t.Fatalf("A: Revoked(token %s) = %v, %v, want true, nil", tok.name, got, err)
		}
		if got, err := b.iss.Revoked(ctx, tok.jti, tok.gid); !got || err != nil {
			t.Errorf("B, its clock back: Revoked(token %s) = %v, %v, want true, nil", tok.name, got, err)
		}
	}
}
