package issuer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Timing of the revocation set: how often it catches up with the store,
// and how long it may go without catching up before Revoked fails closed.
const (
	// DefaultRevocationResync is Config.RevocationResync's default: a
	// revocation written by another instance on the same store is refused
	// here within about this long even when no notification reaches
	// RevocationsChanged. Catching up costs one small read when nothing
	// changed.
	DefaultRevocationResync = time.Second
	// DefaultRevocationMaxStale is Config.RevocationMaxStale's default.
	// A store outage shorter than this (a database failover, say) does
	// not interrupt gateways; a longer one makes them answer 503 rather
	// than honour tokens that another instance, still reaching the store,
	// may have revoked in the meantime.
	DefaultRevocationMaxStale = 30 * time.Second
	// revocationPruneEvery is how often expired revocations leave the set.
	revocationPruneEvery = time.Minute
)

// ErrRevocationsStale is Revoked's error when the revocation set has not
// caught up with the store for longer than Config.RevocationMaxStale, or
// the access-token keys have not been read for that long past their
// re-read interval.
var ErrRevocationsStale = errors.New("revocations unknown: the authorization server's store has not been read for too long")

// Revoked reports whether an access token must be refused because its jti
// or its grant (the gid claim) was revoked, for gateways in the same
// process. It answers from memory, without allocating: the revocation set
// is loaded by New, takes this issuer's revocations as they commit, and
// catches up with the store's revocation log (other instances'
// revocations) in WatchRevocations. When it has not caught up for longer
// than Config.RevocationMaxStale, Revoked returns ErrRevocationsStale (and
// true): the caller fails closed. So it does when the access-token keys
// were last read longer ago than that past their re-read interval
// (keyReload): the caller's key source is this issuer, which would go on
// publishing a key another instance withdrew (it leaked) for as long as
// its reads of the keys fail while those of the revocations succeed (a
// key record it cannot read, a database answering the key read's bound
// too late), as its JWKS does not (keyRing.readWithin).
//
// Tokens derived by token exchange carry their subject's gid, so revoking
// a user's grant ends them too; a client's or an agent's own tokens
// (client credentials) carry a grant of their own, so every access token
// has a gid.
func (i *Issuer) Revoked(_ context.Context, jti, grantID string) (bool, error) {
	now := i.now()
	if i.keysStale(now) {
		return true, ErrRevocationsStale
	}
	return i.revs.revoked(jti, grantID, now)
}

// keysStale reports whether the access-token keys were last read from
// the store longer ago at now than RevocationMaxStale past their re-read
// interval (keyReload): Revoked then fails closed, and /healthz says so.
func (i *Issuer) keysStale(now time.Time) bool {
	return i.keys.ageAt(now)-keyReload > i.cfg.RevocationMaxStale
}

// SyncRevocations brings the revocation set up to date with the store now
// and returns when it is (or the read failed). WatchRevocations calls it
// on its own; call it directly where waiting matters, e.g. after the store
// connection was re-established.
func (i *Issuer) SyncRevocations(ctx context.Context) error {
	return i.revs.sync(ctx, i.backgroundView())
}

// backgroundView reads the store for the catch-ups WatchRevocations runs
// (revocations, keys): not behind request traffic for the store's
// connections (store.ReservedViewer), for late by RevocationMaxStale
// every gateway would fail closed with the store up. When the reserved
// connection cannot be had (a connection limit sized before it existed,
// say), through the pool as before.
func (i *Issuer) backgroundView() func(context.Context, func(store.Tx) error) error {
	r, ok := i.backend.(store.ReservedViewer)
	if !ok {
		return i.backend.View
	}
	return func(ctx context.Context, fn func(store.Tx) error) error {
		err := r.ViewReserved(ctx, fn)
		if err != nil && ctx.Err() == nil {
			err = i.backend.View(ctx, fn)
		}
		return err
	}
}

// RevocationsChanged tells the issuer that another instance on the same
// store revoked something (a database notification arrived), so
// WatchRevocations catches up now instead of at its next tick. It does not
// block and never fails: signals arriving while a catch-up is pending are
// merged, and one that is lost costs at most Config.RevocationResync.
func (i *Issuer) RevocationsChanged() {
	select {
	case i.revsChanged <- struct{}{}:
	default:
	}
}

// WatchRevocations keeps the revocation set current until ctx ends: it
// catches up with the store every Config.RevocationResync and whenever
// RevocationsChanged is called. On a store shared between processes
// (store.Watcher, e.g. PostgreSQL's LISTEN) it also watches for other
// instances' revocations and catches up as each is notified, and again
// after the watch reconnected. It also keeps the access-token keys
// current (Withdrawals), every keyCheckEvery or RevocationResync if
// shorter. Its caller owns it (caddymodule's app runs it for as long as
// the issuer serves). Without it, Revoked fails closed once
// Config.RevocationMaxStale has passed since New.
func (i *Issuer) WatchRevocations(ctx context.Context) {
	if w, ok := i.backend.(store.Watcher); ok {
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.Watch(ctx, []string{topicRevocations}, func(string) { i.RevocationsChanged() })
		}()
		defer func() { cancel(); <-done }()
	}
	t := time.NewTicker(i.cfg.RevocationResync)
	defer t.Stop()
	// The access-token keys are checked here too, in the goroutine the
	// app owns already (keyRing.refresh): a withdrawn key's tokens end
	// no later than a revoked token's would, and within a second.
	keyCheck := time.NewTicker(min(i.cfg.RevocationResync, keyCheckEvery))
	defer keyCheck.Stop()
	view := i.backgroundView()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-keyCheck.C:
			i.keys.refresh(ctx, view)
			continue
		case <-t.C:
		case <-i.revsChanged:
		}
		err := i.SyncRevocations(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			failing = true
			i.log.Error("reading revocations; gateways fail closed if this lasts",
				zap.Duration("max_stale", i.cfg.RevocationMaxStale), zap.Error(err))
		case err == nil && failing:
			failing = false
			i.log.Info("reading revocations again")
		}
	}
}

// revocationSet is every revocation whose tokens may still be valid:
// token jtis and grant ids, each with the time after which nothing it
// refuses is valid any more. It only grows by revocations (nothing is
// ever unrevoked) and shrinks by expiry, so merging is always right and
// its size is bounded by the revocations of one access-token lifetime.
type revocationSet struct {
	now func() time.Time
	// legacyKeep is how long a marker without a recorded until (written
	// before markers recorded it) is held from loading: the access-token
	// lifetime, which bounded every until then.
	legacyKeep time.Duration
	maxStale   time.Duration

	mu     sync.RWMutex
	tokens map[string]time.Time // jti -> until
	grants map[string]time.Time // grant id -> until
	pruned time.Time

	// synced is when (unix ns) the last successful catch-up began: the set
	// holds every revocation committed before then.
	synced atomic.Int64

	syncMu sync.Mutex // one catch-up at a time; guards the fields below
	seq    uint64     // the log is read up to and including seq
	loaded bool       // the markers were loaded
	// atSeq is the log entry under seq as last read, nil for none (it
	// expired): finding another there means the log's numbers were given
	// again (a restore from backup, a failover to a replica that lacked
	// the last commits, after which the log went past seq again), so
	// what lies before seq is not what was read.
	atSeq *logEntry
}

func newRevocationSet(now func() time.Time, legacyKeep, maxStale time.Duration) *revocationSet {
	return &revocationSet{
		now: now, legacyKeep: legacyKeep, maxStale: maxStale,
		tokens: make(map[string]time.Time), grants: make(map[string]time.Time),
	}
}

// stale reports whether the set has not caught up with the store for
// longer than maxStale at now.
func (s *revocationSet) stale(now time.Time) bool {
	return now.UnixNano()-s.synced.Load() > int64(s.maxStale)
}

// revoked is Issuer.Revoked at now.
func (s *revocationSet) revoked(jti, grantID string, now time.Time) (bool, error) {
	if s.stale(now) {
		return true, ErrRevocationsStale
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if until, ok := s.tokens[jti]; ok && now.Before(until) {
		return true, nil
	}
	if until, ok := s.grants[grantID]; ok && now.Before(until) {
		return true, nil
	}
	return false, nil
}

// add merges revocations into the set.
func (s *revocationSet) add(es []logEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range es {
		m, key := s.tokens, e.Key
		if id, ok := strings.CutPrefix(e.Key, grantKeyPrefix); ok {
			m, key = s.grants, id
		}
		if e.Until.After(m[key]) {
			m[key] = e.Until
		}
	}
}

// sync catches up with the store view reads: the first time (or when
// the log's sequence went back, as after a restore from backup, or its
// entry at the last one read changed, as when it went back and forward
// again between two catch-ups, or the clock went back) by loading every
// marker, then by reading the log entries after the last one read.
func (s *revocationSet) sync(ctx context.Context, view func(context.Context, func(store.Tx) error) error) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	start := s.now()
	var (
		got    []logEntry
		last   uint64
		atLast *logEntry
	)
	err := view(ctx, func(tx store.Tx) error {
		got, atLast = got[:0], nil
		log := revocationLogIn(tx)
		var err error
		if last, err = log.lastSeq(); err != nil {
			return err
		}
		if atLast, err = log.at(last); err != nil { // the entry at s.seq next time
			return err
		}
		// A clock that reads earlier than at the last catch-up was
		// stepped back: what it read before as expired (pruned, or
		// skipped in the log) may be live again, and the markers are
		// read afresh.
		reload := !s.loaded || last < s.seq || start.UnixNano() < s.synced.Load()
		if !reload && s.seq > 0 {
			at := atLast // nothing logged since: one read
			if last != s.seq {
				if at, err = log.at(s.seq); err != nil {
					return err
				}
			}
			reload = !sameLogEntry(at, s.atSeq)
		}
		if reload {
			return revocationsIn(tx).each(func(key string, m *marker) error {
				until := m.Until
				if until.IsZero() {
					until = start.Add(s.legacyKeep)
				}
				got = append(got, logEntry{Key: key, Until: until})
				return nil
			})
		}
		return log.since(s.seq, last, func(e *logEntry) { got = append(got, *e) })
	})
	if err != nil {
		return err
	}
	s.add(got)
	s.seq, s.loaded, s.atSeq = last, true, atLast
	s.prune(start)
	s.synced.Store(start.UnixNano())
	return nil
}

// sameLogEntry reports whether two reads of a log entry found the same
// (both nil: none).
func sameLogEntry(a, b *logEntry) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Key == b.Key && a.Until.Equal(b.Until)
}

// prune drops the revocations that refuse nothing valid any more, at most
// every revocationPruneEvery (revoked checks expiry itself).
func (s *revocationSet) prune(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.pruned) < revocationPruneEvery {
		return
	}
	s.pruned = now
	for _, m := range []map[string]time.Time{s.tokens, s.grants} {
		for k, until := range m {
			if !now.Before(until) {
				delete(m, k)
			}
		}
	}
}

// size is the number of revocations held.
func (s *revocationSet) size() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.tokens) + len(s.grants)
}

// checkRevocationTiming refuses a RevocationMaxStale that the catch-ups
// could not keep ahead of: the set would fail closed between two of them.
func checkRevocationTiming(c *Config) error {
	if c.RevocationMaxStale < 2*c.RevocationResync {
		return fmt.Errorf("revocation max stale %s: must be at least twice the resync interval %s", c.RevocationMaxStale, c.RevocationResync)
	}
	return nil
}
