package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// TestHealth: 200 {"status":"ok"} while the store answers and holds a
// signing key; 503 with a reason and no internals once the keys are gone
// or the store is closed; GET and HEAD only.
func TestHealth(t *testing.T) {
	e := newTokEnv(t)
	get := func(method string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, e.iss.endpoint(pathHealth), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, strings.TrimSpace(readBody(t, resp))
	}
	if status, body := get(http.MethodGet); status != http.StatusOK || body != `{"status":"ok"}` {
		t.Errorf("GET healthz = %d %s, want 200 {\"status\":\"ok\"}", status, body)
	}
	if status, _ := get(http.MethodPost); status != http.StatusMethodNotAllowed {
		t.Errorf("POST healthz = %d, want 405", status)
	}
	// The store answers, but no key signs: nothing could be issued.
	var kids []string
	err := e.store.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.List(bucketKeys, "", func(k string, _ []byte) error { kids = append(kids, k); return nil }); err != nil {
			return err
		}
		for _, k := range kids {
			if err := tx.Delete(bucketKeys, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(kids) == 0 {
		t.Fatalf("delete the signing keys %v: %v", kids, err)
	}
	e.clock.Advance(keyReload)
	if status, body := get(http.MethodGet); status != http.StatusServiceUnavailable || body != `{"status":"unavailable","reason":"no signing key"}` {
		t.Errorf("GET healthz without a signing key = %d %s, want 503 no signing key", status, body)
	}
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	if status, body := get(http.MethodGet); status != http.StatusServiceUnavailable || body != `{"status":"unavailable","reason":"store unreachable"}` {
		t.Errorf("GET healthz with the store closed = %d %s, want 503 store unreachable", status, body)
	}
}

// TestHealthClockOffDatabase: instances sharing PostgreSQL decide
// expiry, replay windows and the order of a revocation and an issuance
// each by its own clock, so their clocks must agree to within
// accesstoken.Leeway. An instance whose clock is more than 5 s off the
// database server's (6 s, 30 s: NTP lost, a VM resumed from a snapshot)
// answers its health probe 503, so that an orchestrator takes it out of
// service; one within 5 s (4 s either way) answers 200.
func TestHealthClockOffDatabase(t *testing.T) {
	for _, c := range []struct {
		off    time.Duration
		status int
		body   string
	}{
		{0, http.StatusOK, `{"status":"ok"}`},
		// README: "more than 5 s apart ... it answers 503".
		{4 * time.Second, http.StatusOK, `{"status":"ok"}`},
		{-4 * time.Second, http.StatusOK, `{"status":"ok"}`},
		{6 * time.Second, http.StatusServiceUnavailable, `{"status":"unavailable","reason":"clock differs from the store's"}`},
		{-6 * time.Second, http.StatusServiceUnavailable, `{"status":"unavailable","reason":"clock differs from the store's"}`},
		{30 * time.Second, http.StatusServiceUnavailable, `{"status":"unavailable","reason":"clock differs from the store's"}`},
		{-30 * time.Second, http.StatusServiceUnavailable, `{"status":"unavailable","reason":"clock differs from the store's"}`},
	} {
		now := func() time.Time { return time.Now().Add(c.off) }
		st, err := postgres.Open(t.Context(), pgtest.NewDatabase(t), postgres.Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		e := newTokEnvStore(t, st, storetest.NewClock(now()), func(cfg *Config) { cfg.Now = now })
		resp, err := e.srv.Client().Get(e.iss.endpoint(pathHealth))
		if err != nil {
			t.Fatal(err)
		}
		if body := strings.TrimSpace(readBody(t, resp)); resp.StatusCode != c.status || body != c.body {
			t.Errorf("GET healthz with the clock %v off the database's = %d %s, want %d %s", c.off, resp.StatusCode, body, c.status, c.body)
		}
	}
}

// heldViews is a store whose reads, once held is set, are counted and
// wait for release: a database slow to answer.
type heldViews struct {
	store.Store
	held    atomic.Bool
	views   atomic.Int32
	release chan struct{}
}

func (h *heldViews) View(ctx context.Context, fn func(store.Tx) error) error {
	if h.held.Load() {
		h.views.Add(1)
		<-h.release
	}
	return h.Store.View(ctx, fn)
}

// TestHealthChecksShared: /healthz is public, and each check reads the
// store (with PostgreSQL, a transaction and the server's clock on a
// pool connection that the issuer's and gateways' requests wait for).
// Probes that arrive while a check is under way share its answer, so a
// flood of probes costs the database one check at a time, however many
// arrive; a probe that gives up does not fail the check it shares.
func TestHealthChecksShared(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &heldViews{Store: memory.New(memory.Options{Now: clock.Now}), release: make(chan struct{})}
	e := newTokEnvStore(t, st, clock)
	st.held.Store(true)
	// The first probe gives up at once: the check it started goes on.
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.iss.endpoint(pathHealth), nil)
	if err != nil {
		t.Fatal(err)
	}
	abandoned := make(chan struct{})
	go func() {
		defer close(abandoned)
		if resp, err := e.srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	for st.views.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	const probes = 20
	var wg sync.WaitGroup
	statuses := make(chan int, probes)
	for range probes {
		wg.Go(func() {
			resp, err := e.srv.Client().Get(e.iss.endpoint(pathHealth))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	time.Sleep(500 * time.Millisecond) // the probes arrive
	cancel()
	<-abandoned
	close(st.release)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != http.StatusOK {
			t.Errorf("GET healthz during a shared check = %d, want 200", s)
		}
	}
	if n := st.views.Load(); n != 1 {
		t.Errorf("%d probes during one check read the store %d times, want once", probes+1, n)
	}
}

// slowViews is a store whose reads, once slow is set, take delay to
// answer (or fail when their context ends first): a database slow to
// answer.
type slowViews struct {
	store.Store
	slow  atomic.Bool
	delay time.Duration
}

func (s *slowViews) View(ctx context.Context, fn func(store.Tx) error) error {
	if s.slow.Load() {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Store.View(ctx, fn)
}

// TestHealthStoreSlow: README (Health): "a database slower than 5 s to
// answer takes every instance sharing it out of service (`store
// unreachable`)". A store answering in 4 s is healthy; one that does not
// answer is reported 503 store unreachable after 5 s, not sooner, and
// not much later. In seconds, not through healthTimeout.
func TestHealthStoreSlow(t *testing.T) {
	for _, c := range []struct {
		name   string
		delay  time.Duration
		status int
		body   string
	}{
		{"4 s", 4 * time.Second, http.StatusOK, `{"status":"ok"}`},
		{"hung", time.Hour, http.StatusServiceUnavailable, `{"status":"unavailable","reason":"store unreachable"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			st := &slowViews{Store: memory.New(memory.Options{Now: clock.Now}), delay: c.delay}
			e := newTokEnvStore(t, st, clock)
			st.slow.Store(true)
			start := time.Now()
			resp, err := e.srv.Client().Get(e.iss.endpoint(pathHealth))
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			if body := strings.TrimSpace(readBody(t, resp)); resp.StatusCode != c.status || body != c.body {
				t.Errorf("GET healthz, the store answering in %v = %d %s, want %d %s", c.delay, resp.StatusCode, body, c.status, c.body)
			}
			if c.status == http.StatusServiceUnavailable && (took < 5*time.Second || took > 7*time.Second) {
				t.Errorf("GET healthz, the store not answering, answered after %v, want 5 s", took)
			}
		})
	}
}

// TestHealthChecksReadsNotWrites: the probe asks the store for a read, not
// a write, so a database that answers reads and refuses writes (here set
// read-only; a standby after a failover, a full disk, an absent
// synchronous standby alike) is reported healthy while a token request,
// which writes its grant, fails. README (Health) says so.
func TestHealthChecksReadsNotWrites(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	st, err := postgres.Open(t.Context(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := newTokEnvStore(t, st, storetest.NewClock(time.Now()), func(cfg *Config) { cfg.Now = time.Now })
	var db string
	for _, f := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(f, "dbname="); ok {
			db = v
		}
	}
	// New connections only; the pool's are ended so that it opens new ones.
	if _, err := pgtest.Shared(t).Psql(dsn, fmt.Sprintf(`ALTER DATABASE %[1]s SET default_transaction_read_only = on;
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '%[1]s' AND pid <> pg_backend_pid()`, db)); err != nil {
		t.Fatal(err)
	}
	var status int
	for range 50 { // the pool notices its ended connections
		resp, err := e.srv.Client().Get(e.iss.endpoint(pathHealth))
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if status = resp.StatusCode; status == http.StatusOK {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status != http.StatusOK {
		t.Fatalf("GET healthz on a read-only database = %d, want 200 (a read answers)", status)
	}
	a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {tAgent2},
		"client_secret": {tAgentSecret}, "resource": {tResource}}, "")
	if a.status == http.StatusOK {
		t.Fatalf("client_credentials on a read-only database = 200, want a failure (the grant cannot be written)")
	}
	t.Logf("client_credentials on a read-only database: %d %s", a.status, a.raw)
}

// TestHealthRevocationsStale: an instance whose revocation set has not
// caught up with the store for longer than RevocationMaxStale (its
// catch-ups failing or stuck while the store answers other reads) has
// its gateways refuse every token (ErrRevocationsStale), and its probe
// says so: 503 "revocations stale", so that an orchestrator takes it out
// of service rather than sending it requests it refuses; 200 again once
// it has caught up.
func TestHealthRevocationsStale(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.RevocationMaxStale = DefaultRevocationMaxStale })
	get := func() (int, string) {
		t.Helper()
		resp, err := e.srv.Client().Get(e.iss.endpoint(pathHealth))
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, strings.TrimSpace(readBody(t, resp))
	}
	if status, body := get(); status != http.StatusOK {
		t.Fatalf("GET healthz = %d %s, want 200", status, body)
	}
	e.clock.Advance(DefaultRevocationMaxStale + time.Second) // since the set was loaded, at New
	if _, err := e.iss.Revoked(t.Context(), "jti", "gid"); err != ErrRevocationsStale {
		t.Fatalf("Revoked = %v, want ErrRevocationsStale", err)
	}
	if status, body := get(); status != http.StatusServiceUnavailable || body != `{"status":"unavailable","reason":"revocations stale"}` {
		t.Errorf("GET healthz with the revocations stale = %d %s, want 503 revocations stale", status, body)
	}
	if err := e.iss.SyncRevocations(t.Context()); err != nil {
		t.Fatal(err)
	}
	if status, body := get(); status != http.StatusOK {
		t.Errorf("GET healthz after catching up = %d %s, want 200", status, body)
	}
}

// TestHealthKeysUnread: an instance whose reads of the signing keys fail
// while the store answers its other reads (here a key record a later
// release wrote, in an algorithm this build cannot parse) has its
// gateways refuse every token with 503 once the keys were last read
// revocation_max_stale and 5 s ago (TestGatewayFailsClosedWhileKeysUnread),
// and its /jwks answers 503 too; its probe answered 200 meanwhile, the
// revocation catch-ups succeeding, so an orchestrator kept sending it
// requests it refused. It now answers 503 "signing keys stale", and 200
// again once a read of the keys succeeds.
func TestHealthKeysUnread(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.RevocationMaxStale = DefaultRevocationMaxStale })
	get := func() (int, string) {
		t.Helper()
		resp, err := e.srv.Client().Get(e.iss.endpoint(pathHealth))
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, strings.TrimSpace(readBody(t, resp))
	}
	storeUnreadableKey(t, e)
	e.clock.Advance(keyReload + DefaultRevocationMaxStale + time.Second)
	if err := e.iss.keys.load(t.Context()); err == nil {
		t.Fatal("the key set was read with a record this build cannot parse: the test's premise is gone")
	}
	if err := e.iss.SyncRevocations(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.iss.Revoked(t.Context(), "jti", "gid"); err != ErrRevocationsStale {
		t.Fatalf("Revoked with the keys last read %s ago = %v, want ErrRevocationsStale", keyReload+DefaultRevocationMaxStale+time.Second, err)
	}
	if status, body := get(); status != http.StatusServiceUnavailable || body != `{"status":"unavailable","reason":"signing keys stale"}` {
		t.Errorf("GET healthz with the keys last read %s ago, the revocations current = %d %s, want 503 signing keys stale",
			keyReload+DefaultRevocationMaxStale+time.Second, status, body)
	}
	if err := e.store.Update(t.Context(), func(tx store.Tx) error { return keysIn(tx).t.delete("key-of-a-later-release") }); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(keyMinReload) // the next read is tried
	if status, body := get(); status != http.StatusOK {
		t.Errorf("GET healthz once the keys are read again = %d %s, want 200", status, body)
	}
}

// TestHealthKeysUnreadLogsCause: the probe's log line for signing keys
// not read lately names why the reads fail. A key record this build
// cannot parse failed every read without being recorded as the read's
// error (only a failed query was), so the line and the JWKS's 503 named
// none ("a read is under way"), and the lookups that share a failed
// read within keyMinReload (due) were told of no error: a kid the copy
// lacks was "not found", which a gateway answers 401 invalid_token
// rather than 503, and its client throws the token away.
func TestHealthKeysUnreadLogsCause(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newTokEnv(t, func(c *Config) { c.RevocationMaxStale, c.Logger = DefaultRevocationMaxStale, zap.New(core) })
	storeUnreadableKey(t, e)
	e.clock.Advance(keyReload + DefaultRevocationMaxStale + time.Second)
	if err := e.iss.SyncRevocations(t.Context()); err != nil {
		t.Fatal(err)
	}
	resp, err := e.srv.Client().Get(e.iss.endpoint(pathHealth))
	if err != nil {
		t.Fatal(err)
	}
	if body := strings.TrimSpace(readBody(t, resp)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET healthz with the keys unread = %d %s, want 503", resp.StatusCode, body)
	}
	lines := logs.FilterMessageSnippet("health check: signing keys").All()
	if len(lines) == 0 {
		t.Fatal("no health check line for the signing keys")
	}
	if cause, _ := lines[0].ContextMap()["error"].(string); !strings.Contains(cause, "key-of-a-later-release") {
		t.Errorf("health check line %v: error = %q, want the read's error naming the record it cannot parse", lines[0].ContextMap(), cause)
	}
	if err := e.iss.keys.readWithin(t.Context(), time.Second); err == nil || !strings.Contains(err.Error(), "key-of-a-later-release") {
		t.Errorf("readWithin with the keys unread = %v, want the read's error naming the record", err)
	}
	// A kid the copy lacks, looked up again within keyMinReload of the
	// failed read: the key may be published (another instance's new
	// one), so not "not found", which a gateway answers 401 and the
	// client takes to throw the token away.
	for n := range 2 {
		if _, err := e.iss.PublicKey(t.Context(), "another-instances-new-key"); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("PublicKey of a kid not in the copy, the keys unread (lookup %d) = %v, want the read's error", n+1, err)
		}
	}
}
