package issuer

import (
	"context"
	"sync"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// counter is an abuse limiter's state under one key (ratelimit.go): a
// failure score or a token bucket's tokens (N), as of At, and for a score
// the end of its block.
type counter struct {
	N     float64   `json:"n"`
	At    time.Time `json:"at"`
	Until time.Time `json:"until,omitzero"`
	// Prev is, for checks in flight (inFlightKey), those of the
	// generation before At's (ratelimit.go).
	Prev float64 `json:"prev,omitempty"`
}

// counters hold the limiters' counters, each until it expires. Where
// depends on who else draws on the same budget: a store that other
// instances share (store.Watcher) holds them (storeCounters), so that
// adding instances does not multiply an attacker's budget; otherwise
// this process's memory does (memCounters), which costs no store write.
type counters interface {
	// run runs fn atomically on the counters: what it reads and, with
	// write, what it puts and deletes form one transaction, kept once fn
	// returns nil. fn may run more than once (store.Store.Update).
	run(ctx context.Context, write bool, fn func(counterTx) error) error
}

// counterTx is one run's view of the counters.
type counterTx interface {
	// get returns key's counter, if it has a live one.
	get(key string) (counter, bool)
	// put keeps c under key until expires. It reports false when a
	// memory bound refused a new key (nothing is kept then).
	put(key string, c counter, expires time.Time) bool
	del(key string)
}

// countersFor returns the counters of one limiter, named by prefix, for a
// store: in it when other instances share it, else nil (the limiter keeps
// them in memory).
func countersFor(st store.Store, prefix string) counters {
	if _, shared := st.(store.Watcher); shared {
		return storeCounters{st, prefix}
	}
	return nil
}

// LimitMemory holds the counters of the limits that the store would hold
// if other instances shared it (countersFor): one per process keeps them
// across configuration reloads (Config.Limits). Its keys do not name the
// issuer: it serves one issuer at a time (Caddy's mcp_auth app, across
// its reloads), and issuers given the same one share its budgets.
type LimitMemory struct {
	bruteForce, registrations, registrationsAll, userWrites, userRefreshes *memCounters
	// anonWrites, parClients and clientTokens bound this instance's own
	// writes, and cimdFetches the documents it fetches, on any store: a
	// reload does not hand their keys a fresh budget either.
	anonWrites, parClients, clientTokens, cimdFetches *memCounters
	// anonWritesWide and cimdFetchesWide are the budgets of IPv6 /48s
	// beside anonWrites' and cimdFetches' of /56s (wideByPrefix).
	anonWritesWide, cimdFetchesWide *memCounters
	// known are the pairs whose credential checked right lately
	// (limiter.known), in this process's memory whatever the store.
	known *memCounters
}

// NewLimitMemory returns an empty LimitMemory on the wall clock.
func NewLimitMemory() *LimitMemory { return newLimitMemory(time.Now) }

func newLimitMemory(now func() time.Time) *LimitMemory {
	return &LimitMemory{
		bruteForce:       newMemCounters(now, limitMaxEntries, true),
		registrations:    newMemCounters(now, maxRateBuckets, false),
		registrationsAll: newMemCounters(now, maxRateBuckets, false),
		userWrites:       newMemCounters(now, maxRateBuckets, false),
		userRefreshes:    newMemCounters(now, maxRateBuckets, false),
		anonWrites:       newMemCounters(now, maxRateBuckets, false),
		parClients:       newMemCounters(now, maxRateBuckets, false),
		clientTokens:     newMemCounters(now, maxRateBuckets, false),
		cimdFetches:      newMemCounters(now, maxRateBuckets, false),
		anonWritesWide:   newMemCounters(now, maxRateBuckets, false),
		cimdFetchesWide:  newMemCounters(now, maxRateBuckets, false),
		known:            newMemCounters(now, limitMaxEntries, false),
	}
}

// memCounters are counters in memory, at most max of them, attempts in
// flight (inFlightKey) aside: those last seconds, one per check running.
// A full memory drops the expired counters (at most once per sweepEvery,
// a pass over all of them under the lock). If it is still full, failure
// scores (evictScores) make room by dropping the weakest of a few
// sampled: the one counting the fewest failures, which is what a flood
// from ever new addresses leaves behind. So a flood can
// neither lock everyone out (no room for anyone's next check) nor stop
// the counting of the failures against an account it is guessing at,
// whose score is high. Rate buckets refuse a new key instead: forgetting
// one would hand its key a full budget.
type memCounters struct {
	now         func() time.Time
	max         int
	evictScores bool
	mu          sync.Mutex
	m           map[string]memCounter
	swept       time.Time // when expired counters were last dropped
}

// sweepEvery spaces the sweeps of a full memory.
const sweepEvery = time.Second

// evictSample is how many counters a full memory compares to drop one.
const evictSample = 8

type memCounter struct {
	c       counter
	expires time.Time
}

func newMemCounters(now func() time.Time, max int, evictScores bool) *memCounters {
	return &memCounters{now: now, max: max, evictScores: evictScores, m: make(map[string]memCounter)}
}

func (mc *memCounters) run(_ context.Context, _ bool, fn func(counterTx) error) error {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return fn(memCounterTx{mc, mc.now()})
}

type memCounterTx struct {
	mc  *memCounters
	now time.Time
}

func (t memCounterTx) get(key string) (counter, bool) {
	e, ok := t.mc.m[key]
	if !ok || !t.now.Before(e.expires) {
		return counter{}, false
	}
	return e.c, true
}

func (t memCounterTx) put(key string, c counter, expires time.Time) bool {
	m := t.mc.m
	if _, ok := m[key]; !ok && len(m) >= t.mc.max && !isInFlightKey(key) {
		if t.now.Sub(t.mc.swept) >= sweepEvery {
			t.mc.swept = t.now
			for k, e := range m {
				if !t.now.Before(e.expires) {
					delete(m, k)
				}
			}
		}
		if len(m) >= t.mc.max {
			if !t.mc.evictScores {
				return false
			}
			t.evict()
		}
	}
	m[key] = memCounter{c, expires}
	return true
}

// evict drops the weakest of evictSample counters (map order is random):
// the one counting the fewest failures. An account's score never blocks
// by itself (it slows), so a block is no sign of strength: a flood whose
// addresses each block would otherwise push out the score of the account
// it is guessing at. Attempts in flight are never dropped.
func (t memCounterTx) evict() {
	victim, seen := "", 0
	var weakest float64
	for k, e := range t.mc.m {
		if isInFlightKey(k) {
			continue
		}
		if n := decayed(e.c, t.now); victim == "" || n < weakest {
			victim, weakest = k, n
		}
		if seen++; seen == evictSample {
			break
		}
	}
	if victim != "" {
		delete(t.mc.m, victim)
	}
}

func (t memCounterTx) del(key string) { delete(t.mc.m, key) }

// storeCounters are counters in the store (record_limits.go), their keys
// prefixed with the limiter's name. The store purges expired ones. Their
// writes do not wait for stable storage where the store allows it
// (store.NoSyncUpdater): a database crash may forget the last moments'
// counts, which costs less than a durable commit on every credential
// check.
type storeCounters struct {
	st     store.Store
	prefix string
}

func (sc storeCounters) run(ctx context.Context, write bool, fn func(counterTx) error) error {
	run := sc.st.View
	if write {
		run = sc.st.Update
		if ns, ok := sc.st.(store.NoSyncUpdater); ok {
			run = ns.UpdateNoSync
		}
	}
	return run(ctx, func(tx store.Tx) error {
		t := &storeCounterTx{limitsIn(tx), sc.prefix, nil}
		if err := fn(t); err != nil {
			return err
		}
		return t.err
	})
}

// storeCounterTx keeps the first store error, which fails the run.
type storeCounterTx struct {
	r      limitRecords
	prefix string
	err    error
}

func (t *storeCounterTx) get(key string) (counter, bool) {
	if t.err != nil {
		return counter{}, false
	}
	c, err := t.r.get(t.prefix + key)
	if err != nil {
		t.err = ignoreNotFound(err)
		return counter{}, false
	}
	return *c, true
}

func (t *storeCounterTx) put(key string, c counter, expires time.Time) bool {
	if t.err == nil {
		t.err = t.r.put(t.prefix+key, &c, expires)
	}
	return true
}

func (t *storeCounterTx) del(key string) {
	if t.err == nil {
		t.err = t.r.del(t.prefix + key)
	}
}
