package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// neverStale is a RevocationMaxStale no test clock reaches.
const neverStale = 100 * 365 * 24 * time.Hour

// revoked is what the gateway's Revoked hook says of a jti and grant id;
// the set must be current.
func (e *testEnv) revoked(t testing.TB, jti, gid string) bool {
	t.Helper()
	got, err := e.iss.Revoked(t.Context(), jti, gid)
	if err != nil {
		t.Fatalf("Revoked(%q, %q) error: %v", jti, gid, err)
	}
	return got
}

// TestRevocationPathsJoinTheSet: whatever revokes a token, the gateway's
// Revoked refuses it on the very next request, with nothing catching up
// in between (no WatchRevocations runs here), and the set agrees with the
// store. The apps page, code reuse, agents and config removal are checked
// the same way in their own tests (e.revoked, e.revokedToken).
func TestRevocationPathsJoinTheSet(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	owner := tConf + ":" + tSecret
	tests := []struct {
		name   string
		revoke func(t *testing.T, user, at, rt string)
	}{
		{"RFC 7009 access token", func(t *testing.T, _, at, _ string) {
			e.post(t, pathRevoke, url.Values{"token": {at}}, owner)
		}},
		{"RFC 7009 refresh token", func(t *testing.T, _, _, rt string) {
			e.post(t, pathRevoke, url.Values{"token": {rt}}, owner)
		}},
		{"refresh token reuse", func(t *testing.T, _, _, rt string) {
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}
			if a := e.post(t, pathToken, form, owner); a.status != 200 {
				t.Fatalf("first refresh = %d %s", a.status, a.raw)
			}
			if a := e.post(t, pathToken, form, owner); a.status != 400 {
				t.Fatalf("reused refresh = %d %s, want 400", a.status, a.raw)
			}
		}},
		{"user deleted", func(t *testing.T, user, _, _ string) {
			if err := e.iss.DeleteUser(ctx, user); err != nil {
				t.Fatal(err)
			}
		}},
		{"password changed", func(t *testing.T, user, _, _ string) {
			if err := e.iss.SetPassword(ctx, user, passwordHash()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("user%d", n)
			if err := e.iss.PutUser(ctx, User{Username: user, PasswordHash: passwordHash(), Groups: []string{"staff"}}); err != nil {
				t.Fatal(err)
			}
			code, verifier := e.issueCode(t, codeSpec{client: tConf, user: user, scopes: []string{"read", "offline_access"}})
			tok, err := e.exchange(t, tConf, tSecret, code, verifier)
			if err != nil {
				t.Fatal(err)
			}
			_, c := claimsOf(t, tok.AccessToken)
			jti, gid := c["jti"].(string), c["gid"].(string)
			if e.revoked(t, jti, gid) {
				t.Fatal("fresh token revoked")
			}
			tt.revoke(t, user, tok.AccessToken, tok.RefreshToken)
			if !e.revoked(t, jti, gid) {
				t.Error("Revoked = false right after the revocation, want true")
			}
			if !revokedIn(t, e.iss, jti, gid) {
				t.Error("the store does not hold the revocation the set has")
			}
		})
	}
}

// TestRevocationsAcrossInstances: two issuers on one store, as two
// instances on one database. A revocation on A reaches B's set at B's
// next catch-up (WatchRevocations, every RevocationResync) or at once on
// RevocationsChanged, and B's own reads of the log are incremental.
func TestRevocationsAcrossInstances(t *testing.T) {
	e := newTokEnv(t)
	const resync = 50 * time.Millisecond
	b, err := New(Config{Issuer: e.srv.URL, Now: e.clock.Now, RevocationResync: resync}, e.store)
	if err != nil {
		t.Fatal(err)
	}
	watch := func(t *testing.T, iss *Issuer) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); iss.WatchRevocations(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	watch(t, b)
	revokeOnA := func(t *testing.T) (jti, gid string) {
		t.Helper()
		tok := e.userToken(t, tConf, "read")
		_, c := claimsOf(t, tok.AccessToken)
		jti, gid = c["jti"].(string), c["gid"].(string)
		if got, err := b.Revoked(t.Context(), jti, gid); got || err != nil {
			t.Fatalf("B: Revoked(fresh token) = %v, %v", got, err)
		}
		e.post(t, pathRevoke, url.Values{"token": {tok.AccessToken}}, tConf+":"+tSecret)
		return jti, gid
	}
	waitRevoked := func(t *testing.T, jti, gid string, within time.Duration) time.Duration {
		t.Helper()
		return waitRevoked(t, b, jti, gid, time.Now(), within)
	}
	t.Run("periodic", func(t *testing.T) {
		var worst time.Duration
		for range 5 {
			jti, gid := revokeOnA(t)
			worst = max(worst, waitRevoked(t, jti, gid, 20*resync))
		}
		t.Logf("revocation on A refused by B after at most %s (RevocationResync %s)", worst, resync)
	})
	t.Run("notified", func(t *testing.T) {
		slow, err := New(Config{Issuer: e.srv.URL, Now: e.clock.Now, RevocationResync: time.Hour, RevocationMaxStale: 2 * time.Hour}, e.store)
		if err != nil {
			t.Fatal(err)
		}
		b = slow
		watch(t, b)
		jti, gid := revokeOnA(t)
		b.RevocationsChanged()
		d := waitRevoked(t, jti, gid, 10*time.Second)
		t.Logf("revocation on A refused by B %s after RevocationsChanged (no tick in an hour)", d)
	})
}

// waitRevoked returns how long after start iss's Revoked refused jti and
// gid, polling; it fails t when that takes longer than within.
func waitRevoked(t *testing.T, iss *Issuer, jti, gid string, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	for {
		got, err := iss.Revoked(t.Context(), jti, gid)
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

// failingStore fails every View while down, as a store out of reach,
// counting the reads it failed.
type failingStore struct {
	store.Store
	down   atomic.Bool
	failed atomic.Int64
}

func (s *failingStore) View(ctx context.Context, fn func(store.Tx) error) error {
	if s.down.Load() {
		s.failed.Add(1)
		return errors.New("store unreachable")
	}
	return s.Store.View(ctx, fn)
}

// TestRevocationsStale: while the store cannot be read, Revoked keeps
// answering from the set until RevocationMaxStale has passed since the
// last catch-up, 30 s by default (README, When the database is down),
// then fails closed with ErrRevocationsStale for every token; a catch-up
// after the store is back ends that.
func TestRevocationsStale(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &failingStore{Store: memory.New(memory.Options{Now: clock.Now})}
	iss, err := New(Config{Issuer: "https://issuer.example", Now: clock.Now}, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	st.down.Store(true)
	if err := iss.SyncRevocations(ctx); err == nil {
		t.Fatal("SyncRevocations with the store down: no error")
	}
	clock.Advance(30 * time.Second) // the documented default, not the constant
	if got, err := iss.Revoked(ctx, "jti", "gid"); got || err != nil {
		t.Errorf("Revoked at exactly RevocationMaxStale (30 s) = %v, %v, want false, nil", got, err)
	}
	clock.Advance(time.Nanosecond)
	if got, err := iss.Revoked(ctx, "jti", "gid"); !got || !errors.Is(err, ErrRevocationsStale) {
		t.Errorf("Revoked past RevocationMaxStale (30 s) = %v, %v, want true, ErrRevocationsStale", got, err)
	}
	st.down.Store(false)
	if err := iss.SyncRevocations(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := iss.Revoked(ctx, "jti", "gid"); got || err != nil {
		t.Errorf("Revoked after the store is back = %v, %v, want false, nil", got, err)
	}
	if _, err := New(Config{Issuer: "https://issuer.example", RevocationResync: time.Minute, RevocationMaxStale: time.Minute}, st); err == nil {
		t.Error("New accepted a RevocationMaxStale shorter than two resync intervals")
	}
	st.down.Store(true)
	if _, err := New(Config{Issuer: "https://issuer.example", Now: clock.Now}, st); err == nil {
		t.Error("New with the store unreadable: no error (it must load the revocations before serving)")
	}
}

// TestRevocationSetBounded: the set holds only revocations whose tokens
// may still be valid. Revoking many tokens over several access-token
// lifetimes leaves at most about one lifetime's worth (plus a prune
// period) in the set, however many were revoked in all; another instance
// loading the store later holds the same, and the log stays bounded too.
func TestRevocationSetBounded(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := memory.New(memory.Options{Now: clock.Now})
	const ttl = 10 * time.Minute
	cfg := Config{Issuer: "https://issuer.example", Now: clock.Now, AccessTokenTTL: ttl, RevocationMaxStale: neverStale}
	iss, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	// follower reads only the log after its first load: its set must
	// match across the log's slot boundaries.
	follower, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const perMinute, minutes = 200, 60 // 12,000 revocations over six lifetimes
	peak := 0
	for m := range minutes {
		err := iss.store.Update(ctx, func(tx store.Tx) error {
			for k := range perMinute {
				if err := revocationsIn(tx).revokeToken(fmt.Sprintf("jti-%d-%d", m, k), clock.Now().Add(ttl)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := iss.SyncRevocations(ctx); err != nil {
			t.Fatal(err)
		}
		if err := follower.SyncRevocations(ctx); err != nil {
			t.Fatal(err)
		}
		peak = max(peak, iss.revs.size())
		if a, b := iss.revs.size(), follower.revs.size(); a != b {
			t.Fatalf("minute %d: the follower holds %d revocations, the writer %d", m, b, a)
		}
		clock.Advance(time.Minute)
	}
	bound := perMinute * int((ttl+revocationPruneEvery)/time.Minute+1)
	t.Logf("%d revocations in all; set peak %d, bound %d", perMinute*minutes, peak, bound)
	if peak > bound {
		t.Errorf("set peaked at %d revocations, want at most %d", peak, bound)
	}
	if got, err := iss.Revoked(ctx, fmt.Sprintf("jti-%d-0", minutes-1), ""); !got || err != nil {
		t.Errorf("Revoked(latest) = %v, %v, want true", got, err)
	}
	if got, _ := iss.Revoked(ctx, "jti-0-0", ""); got {
		t.Error("Revoked(expired) = true: a revocation outlived its tokens")
	}
	other, err := New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	if n := other.revs.size(); n > perMinute*int(ttl/time.Minute) {
		t.Errorf("a new instance loaded %d revocations, want at most %d (the live ones)", n, perMinute*int(ttl/time.Minute))
	}
}

// BenchmarkRevoked is the gateway's revocation check: no store access and
// no allocation, over a set of 10,000 revocations. The InStore variant is
// the same answer read from bbolt, as the issuer's endpoints (and gateways
// before the set) get it.
func BenchmarkRevoked(b *testing.B) {
	st, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	iss, err := New(Config{Issuer: "https://issuer.example"}, st)
	if err != nil {
		b.Fatal(err)
	}
	err = iss.store.Update(b.Context(), func(tx store.Tx) error {
		for k := range 5000 {
			until := time.Now().Add(time.Hour)
			if err := revocationsIn(tx).revokeToken(fmt.Sprintf("jti-%d", k), until); err != nil {
				return err
			}
			if _, err := revocationsIn(tx).revokeGrantTokens(fmt.Sprintf("gid-%d", k), until); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	if allocs := testing.AllocsPerRun(100, func() { iss.Revoked(ctx, "some-jti", "some-gid") }); allocs != 0 {
		b.Fatalf("Revoked allocates %v times per call, want 0", allocs)
	}
	if got, err := iss.Revoked(ctx, "jti-1", "gid-x"); !got || err != nil {
		b.Fatalf("Revoked(revoked jti) = %v, %v", got, err)
	}
	b.Run("Set", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			iss.Revoked(ctx, "some-jti", "some-gid")
		}
	})
	b.Run("InStore", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			iss.revokedInStore(ctx, "", "some-jti", "some-gid")
		}
	})
}

// TestGrantRevocationOutlastsLongerTokens: a grant revoked after
// access_token_ttl was lowered stays revoked until its tokens issued
// under the longer TTL expire (the marker lasts until the token horizon),
// not only for the new, shorter TTL, after which the token would pass
// again (review s11-cluster F1).
func TestGrantRevocationOutlastsLongerTokens(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.AccessTokenTTL = 10 * time.Minute })
	ctx := t.Context()
	if err := e.iss.PutUser(ctx, User{Username: "ttl", PasswordHash: passwordHash(), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	code, verifier := e.issueCode(t, codeSpec{client: tConf, user: "ttl", scopes: []string{"read", "offline_access"}})
	tok, err := e.exchange(t, tConf, tSecret, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	_, c := claimsOf(t, tok.AccessToken)
	jti, gid := c["jti"].(string), c["gid"].(string)
	exp := time.Unix(int64(c["exp"].(float64)), 0)
	// The next configuration lowers the TTL, as a reload would.
	e.iss.cfg.AccessTokenTTL = time.Minute
	if a := e.post(t, pathRevoke, url.Values{"token": {tok.RefreshToken}}, tConf+":"+tSecret); a.status != 200 {
		t.Fatalf("revoke = %d %s", a.status, a.raw)
	}
	for _, step := range []time.Duration{2 * time.Minute, 7 * time.Minute} { // 2 and 9 minutes after issuance
		e.clock.Advance(step)
		if !e.revoked(t, jti, gid) || !revokedIn(t, e.iss, jti, gid) {
			t.Errorf("token exp in %v: grant no longer revoked (set %v, store %v)", exp.Sub(e.clock.Now()),
				e.revoked(t, jti, gid), revokedIn(t, e.iss, jti, gid))
		}
	}
}

// TestRevocationLogGoneBackAndForth: the store's log numbers are given
// again (a restore from an older backup, a failover to a replica that
// lacked the last commits) and pass the number this instance had read
// before it catches up: the entry it last read is another now, so it
// loads every marker rather than read only the entries after that number
// and miss the new revocations below it (review s11-cluster F2).
func TestRevocationLogGoneBackAndForth(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	until := e.clock.Now().Add(time.Hour)
	revoke := func(jtis ...string) {
		t.Helper()
		if err := e.store.Update(ctx, func(tx store.Tx) error {
			for _, jti := range jtis {
				if err := revocationsIn(tx).revokeToken(jti, until); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	revoke("jti-a", "jti-b", "jti-c")
	if err := e.iss.SyncRevocations(ctx); err != nil {
		t.Fatal(err)
	}
	// The database as it was after jti-a: b and c, and their log entries,
	// are gone; the next revocations get numbers 2, 3 and 4.
	if err := e.store.Update(ctx, func(tx store.Tx) error {
		log := revocationLogIn(tx)
		for _, seq := range []uint64{2, 3} {
			if err := log.log.delete(logKey(seq)); err != nil {
				return err
			}
		}
		for _, jti := range []string{"jti-b", "jti-c"} {
			if err := revocationsIn(tx).t.delete(jti); err != nil {
				return err
			}
		}
		one := uint64(1)
		return log.last.put(logKeyLast, &one, time.Time{})
	}); err != nil {
		t.Fatal(err)
	}
	revoke("jti-x", "jti-y", "jti-z")
	if err := e.iss.SyncRevocations(ctx); err != nil {
		t.Fatal(err)
	}
	for _, jti := range []string{"jti-a", "jti-x", "jti-y", "jti-z"} {
		if !e.revoked(t, jti, "") {
			t.Errorf("%s: not revoked after the catch-up", jti)
		}
	}
}

// revokedIn is what i's store says of jti and gid; a failed read fails t.
func revokedIn(t *testing.T, i *Issuer, jti, gid string) bool {
	t.Helper()
	revoked, err := i.revokedInStore(t.Context(), "", jti, gid)
	if err != nil {
		t.Fatalf("revokedInStore = %v", err)
	}
	return revoked
}

// TestRevocationAtOnceAcrossReload: a configuration reload runs the old
// configuration's issuer beside the new one's, on one store in one
// process, until the old one's servers have finished the requests they
// accepted. A revocation either answers 200 for is refused by the other's
// gateways at once, as by its own, not at the other's next catch-up with
// the store (revocation_resync, a second; bbolt and the memory store
// notify no one).
func TestRevocationAtOnceAcrossReload(t *testing.T) {
	for _, tt := range []struct {
		name string
		open func(t *testing.T, clock *storetest.Clock) store.Store
	}{
		{"memory", func(t *testing.T, clock *storetest.Clock) store.Store {
			return memory.New(memory.Options{Now: clock.Now, RunTwice: true})
		}},
		{"bolt", func(t *testing.T, clock *storetest.Clock) store.Store {
			st, err := bolt.Open(filepath.Join(t.TempDir(), "mcp-auth.db"), bolt.Options{Now: clock.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			st := tt.open(t, clock)
			old := newTokEnvStore(t, st, clock)
			next := newTokEnvStore(t, st, clock) // the reload's: its set is loaded
			name := map[*testEnv]string{old: "the old configuration's", next: "the new configuration's"}
			for _, took := range []*testEnv{old, next} {
				tok, jti, gid := clientTokenOf(t, took)
				if r := took.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret); r.status != 200 {
					t.Fatalf("revoke at %s issuer = %d %s", name[took], r.status, r.raw)
				}
				for _, e := range []*testEnv{old, next} {
					if got, err := e.iss.Revoked(t.Context(), jti, gid); !got || err != nil {
						t.Errorf("Revoked at %s issuer right after a revocation at %s = %v, %v, want true", name[e], name[took], got, err)
					}
				}
			}
		})
	}
}
