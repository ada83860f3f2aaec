// Package memory is an in-memory store.Store, for tests and for
// deployments that accept losing all state (sessions, refresh tokens,
// registered clients) on restart.
//
// An Update writes to a change set of its own, key by key (a deletion is
// a tombstone), which its reads see over the shared maps and commit
// applies to them. Until then the shared maps are untouched, so a failed
// or panicking fn leaves nothing behind, and a write costs the keys it
// writes, not the size of its bucket. Each bucket keeps its keys in order
// too (order.go), so that a List costs the keys under its prefix. Values
// are copied in and out and never mutated in place. Updates are
// serialized by a mutex; Views run concurrently with each other.
package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

var (
	errReadOnly = errors.New("memory: write in a read-only transaction")
	errTxDone   = errors.New("memory: transaction used after its function returned")
	errBucket   = errors.New("memory: empty bucket name")
	errKey      = errors.New("memory: empty key")
)

// Options configures a Store.
type Options struct {
	// Now is the clock that decides expiry. Default time.Now.
	Now func() time.Time
	// RunTwice runs every Update's fn twice and commits only the second
	// run, as a backend that retries a transaction after a conflict may
	// (see store.Store.Update). Tests set it to catch a caller whose fn
	// is not safe to run again.
	RunTwice bool
}

// Store is an in-memory store.Store. The zero value is not usable; call New.
type Store struct {
	now      func() time.Time
	runTwice bool

	mu      sync.RWMutex
	closed  bool
	buckets map[string]*bucket
}

// bucket is a bucket's entries, and their keys in order.
type bucket struct {
	entries map[string]entry
	order   *order
}

func newBucket() *bucket { return &bucket{entries: make(map[string]entry), order: newOrder()} }

// set stores e under key.
func (b *bucket) set(key string, e entry) {
	if _, ok := b.entries[key]; !ok {
		b.order.insert(key)
	}
	b.entries[key] = e
}

// remove deletes key.
func (b *bucket) remove(key string) {
	if _, ok := b.entries[key]; ok {
		delete(b.entries, key)
		b.order.remove(key)
	}
}

// entry is immutable once stored.
type entry struct {
	value   []byte
	expires time.Time // zero: never
}

func (e entry) live(now time.Time) bool {
	return e.expires.IsZero() || now.Before(e.expires)
}

// New returns an empty Store.
func New(opts Options) *Store {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Store{now: now, runTwice: opts.RunTwice, buckets: make(map[string]*bucket)}
}

// View implements store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: view: %w", err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return store.ErrClosed
	}
	t := &tx{s: s, now: s.now()}
	defer func() { t.done = true }()
	return fn(t)
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: update: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	if s.runTwice {
		// A run whose writes and result are thrown away, as after a
		// serialization failure.
		discard := &tx{s: s, now: s.now(), writable: true, dirty: make(map[string]changes)}
		_ = fn(discard)
		discard.done = true
	}
	t := &tx{s: s, now: s.now(), writable: true, dirty: make(map[string]changes)}
	defer func() { t.done = true }()
	if err := fn(t); err != nil {
		return err
	}
	// A caller that gave up must not find its writes applied later.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: update: %w", err)
	}
	for name, cs := range t.dirty {
		b := s.buckets[name]
		if b == nil {
			b = newBucket()
			s.buckets[name] = b
		}
		for k, c := range cs {
			if c.deleted {
				b.remove(k)
			} else {
				b.set(k, c.entry)
			}
		}
	}
	return nil
}

// Purge implements store.Store.
func (s *Store) Purge(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("memory: purge: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, store.ErrClosed
	}
	now := s.now()
	n := 0
	for _, b := range s.buckets {
		for k, e := range b.entries {
			if !e.live(now) {
				b.remove(k)
				n++
			}
		}
	}
	return n, nil
}

// Close implements store.Store. It waits for running transactions.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	s.closed = true
	s.buckets = nil
	return nil
}

type tx struct {
	s        *Store
	now      time.Time // one instant per transaction
	writable bool
	done     bool
	// dirty is what this Update wrote, by bucket and key: commit applies
	// it. Cloning a whole bucket on its first write instead made every
	// write cost the bucket's size, under the lock every other Update
	// waits for (a flood of sign-ins, each a session and a pending
	// request, slowed every write to those buckets down as it grew).
	dirty map[string]changes
}

// changes are an Update's writes to one bucket.
type changes map[string]change

// change is a key's entry as an Update wrote it, or its deletion.
type change struct {
	entry
	deleted bool
}

// get returns key's entry as this transaction sees it, live or not.
func (t *tx) get(name, key string) (entry, bool) {
	if c, ok := t.dirty[name][key]; ok {
		return c.entry, !c.deleted
	}
	if b := t.s.buckets[name]; b != nil {
		e, ok := b.entries[key]
		return e, ok
	}
	return entry{}, false
}

// write records key's change.
func (t *tx) write(name, key string, c change) {
	cs, ok := t.dirty[name]
	if !ok {
		cs = make(changes)
		t.dirty[name] = cs
	}
	cs[key] = c
}

func (t *tx) check(bucket, key string, write bool) error {
	switch {
	case t.done:
		return errTxDone
	case write && !t.writable:
		return errReadOnly
	case bucket == "":
		return errBucket
	case key == "":
		return errKey
	}
	return nil
}

func (t *tx) Get(bucket, key string) ([]byte, error) {
	if err := t.check(bucket, key, false); err != nil {
		return nil, err
	}
	e, ok := t.get(bucket, key)
	if !ok || !e.live(t.now) {
		return nil, fmt.Errorf("memory: get %s/%q: %w", bucket, key, store.ErrNotFound)
	}
	return bytes.Clone(e.value), nil
}

func (t *tx) Put(bucket, key string, value []byte, expires time.Time) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	// Clone of nil is nil; store an empty value instead so Get returns
	// a non-nil slice, like bbolt.
	v := append(make([]byte, 0, len(value)), value...)
	t.write(bucket, key, change{entry: entry{value: v, expires: expires}})
	return nil
}

func (t *tx) Create(bucket, key string, value []byte, expires time.Time) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	if e, ok := t.get(bucket, key); ok && e.live(t.now) {
		return fmt.Errorf("memory: create %s/%q: %w", bucket, key, store.ErrAlreadyExists)
	}
	return t.Put(bucket, key, value, expires)
}

func (t *tx) Delete(bucket, key string) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	if _, ok := t.get(bucket, key); ok {
		t.write(bucket, key, change{deleted: true})
	}
	return nil
}

func (t *tx) List(bucket, prefix string, fn func(key string, value []byte) error) error {
	// The prefix may be empty; check a placeholder key instead.
	if err := t.check(bucket, "-", false); err != nil {
		return err
	}
	cs := t.dirty[bucket]
	var keys []string
	if b := t.s.buckets[bucket]; b != nil {
		for k := range b.order.from(prefix) {
			if !strings.HasPrefix(k, prefix) {
				break
			}
			if _, changed := cs[k]; !changed && b.entries[k].live(t.now) {
				keys = append(keys, k)
			}
		}
	}
	merged := false
	for k, c := range cs {
		if !c.deleted && strings.HasPrefix(k, prefix) && c.live(t.now) {
			keys, merged = append(keys, k), true
		}
	}
	if merged {
		slices.Sort(keys) // string order is byte order
	}
	// Snapshot the values first so fn may write to this bucket.
	values := make([][]byte, len(keys))
	for i, k := range keys {
		e, _ := t.get(bucket, k)
		values[i] = bytes.Clone(e.value)
	}
	for i, k := range keys {
		if err := fn(k, values[i]); err != nil {
			return err
		}
	}
	return nil
}

var (
	_ store.Store = (*Store)(nil)
	_ store.Tx    = (*tx)(nil)
)
