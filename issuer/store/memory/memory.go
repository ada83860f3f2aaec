// Package memory is an in-memory store.Store, for tests and for
// deployments that accept losing all state (sessions, refresh tokens,
// registered clients) on restart.
//
// Transactions are copy-on-write per bucket: the first write to a bucket in
// an Update clones that bucket's map, and commit swaps the clones in. Until
// then the shared maps are untouched, so a failed or panicking fn leaves
// nothing behind. Values are copied in and out and never mutated in place,
// so clones can share them. Updates are serialized by a mutex; Views run
// concurrently with each other.
package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
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
	buckets map[string]bucket
}

type bucket map[string]entry

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
	return &Store{now: now, runTwice: opts.RunTwice, buckets: make(map[string]bucket)}
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
		discard := &tx{s: s, now: s.now(), writable: true, dirty: make(map[string]bucket)}
		_ = fn(discard)
		discard.done = true
	}
	t := &tx{s: s, now: s.now(), writable: true, dirty: make(map[string]bucket)}
	defer func() { t.done = true }()
	if err := fn(t); err != nil {
		return err
	}
	// A caller that gave up must not find its writes applied later.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: update: %w", err)
	}
	maps.Copy(s.buckets, t.dirty)
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
		for k, e := range b {
			if !e.live(now) {
				delete(b, k)
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
	dirty    map[string]bucket // clones of the buckets this Update wrote
}

// read returns the bucket as this transaction sees it (nil if absent).
func (t *tx) read(name string) bucket {
	if b, ok := t.dirty[name]; ok {
		return b
	}
	return t.s.buckets[name]
}

// write returns this transaction's private clone of the bucket.
func (t *tx) write(name string) bucket {
	b, ok := t.dirty[name]
	if !ok {
		b = maps.Clone(t.s.buckets[name])
		if b == nil {
			b = make(bucket)
		}
		t.dirty[name] = b
	}
	return b
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
	e, ok := t.read(bucket)[key]
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
	t.write(bucket)[key] = entry{value: v, expires: expires}
	return nil
}

func (t *tx) Create(bucket, key string, value []byte, expires time.Time) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	if e, ok := t.read(bucket)[key]; ok && e.live(t.now) {
		return fmt.Errorf("memory: create %s/%q: %w", bucket, key, store.ErrAlreadyExists)
	}
	return t.Put(bucket, key, value, expires)
}

func (t *tx) Delete(bucket, key string) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	if _, ok := t.read(bucket)[key]; ok {
		delete(t.write(bucket), key)
	}
	return nil
}

func (t *tx) List(bucket, prefix string, fn func(key string, value []byte) error) error {
	// The prefix may be empty; check a placeholder key instead.
	if err := t.check(bucket, "-", false); err != nil {
		return err
	}
	b := t.read(bucket)
	var keys []string
	for k, e := range b {
		if strings.HasPrefix(k, prefix) && e.live(t.now) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys) // string order is byte order
	// Snapshot the values first so fn may write to this bucket.
	values := make([][]byte, len(keys))
	for i, k := range keys {
		values[i] = bytes.Clone(b[k].value)
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
