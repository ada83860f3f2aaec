// Package bolt is the embedded store.Store: one bbolt file.
//
// Layout: each store bucket is a top-level bbolt bucket of the same name,
// created by the first write to it. Each value is stored as
//
//	[8 bytes: expiry, big-endian int64 Unix nanoseconds; 0 = never][value]
//
// An expiry that falls exactly on the Unix epoch is stored as -1 ns so it
// cannot read as "never"; expiries beyond what int64 nanoseconds can hold
// (years before 1678 or after 2262) are clamped to the nearest end.
//
// Durability: bbolt fsyncs the file on every commit (its NoSync option is
// left false), so an Update that returned nil survives a crash of the
// process or the machine.
//
// bbolt holds an exclusive lock on the file, also against a second Open in
// the same process; Open waits Options.Timeout for it and then fails, so a
// caller must open a path once and share the Store.
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// DefaultTimeout is how long Open waits for the file lock by default.
const DefaultTimeout = time.Second

// DefaultPurgeBatch is Options.PurgeBatch's default: a batch of expired
// entries takes a few tens of milliseconds to delete.
const DefaultPurgeBatch = 10000

// headerLen is the size of the expiry prefix of every stored value.
const headerLen = 8

var (
	errReadOnly = errors.New("bolt: write in a read-only transaction")
	errTxDone   = errors.New("bolt: transaction used after its function returned")
	errBucket   = errors.New("bolt: empty bucket name")
	errKey      = errors.New("bolt: empty key")
	errCorrupt  = errors.New("bolt: stored value shorter than its header")
)

// Options configures Open.
type Options struct {
	// Now is the clock that decides expiry. Default time.Now.
	Now func() time.Time
	// Timeout is how long Open waits for the file lock that another open
	// Store holds. Zero or negative means DefaultTimeout; there is no way
	// to wait forever, so a double open fails instead of hanging.
	Timeout time.Duration
	// PurgeBatch is how many expired entries Purge deletes per write
	// transaction. Zero or negative means DefaultPurgeBatch.
	PurgeBatch int
}

// Store is a store.Store backed by a bbolt file.
type Store struct {
	db         *bbolt.DB
	now        func() time.Time
	purgeBatch int
	closed     atomic.Bool
	// purgeBatchDone, in tests, runs after each batch of Purge commits.
	purgeBatchDone func()
}

// Open opens or creates the bbolt file at path (mode 0600: it holds
// session state). The directory must exist.
func Open(path string, opts Options) (*Store, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	// bbolt maps the file and faults (SIGBUS) on pages past its end: a
	// truncated store (an interrupted copy) is refused with an error
	// instead. A missing or empty file is a new store.
	switch fi, err := os.Stat(path); {
	case err == nil && fi.Size() > 0:
		if err := checkSize(path); err != nil {
			return nil, fmt.Errorf("bolt: open %s: %w", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := create(path); err != nil {
			return nil, fmt.Errorf("bolt: create %s: %w", path, err)
		}
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("bolt: open %s: file locked by another open store (this or another process) after %v: %w", path, timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	batch := opts.PurgeBatch
	if batch <= 0 {
		batch = DefaultPurgeBatch
	}
	return &Store{db: db, now: now, purgeBatch: batch}, nil
}

// create makes a new store at path whole or not at all. bbolt writes a
// new file's first pages in place, and one cut off part way (the disk
// full) was refused as truncated by every later open until someone
// removed it (TestOpenOnFullDisk). The pages are written to a temporary
// file beside path, synced, and linked in as path only when whole; a
// path another process created meanwhile is kept, not replaced (that
// process may be using it).
func create(path string) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".new-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Close(); err != nil {
		return err
	}
	db, err := bbolt.Open(f.Name(), 0o600, &bbolt.Options{Timeout: DefaultTimeout})
	if err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	switch err := link(f.Name(), path); {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, errors.ErrUnsupported):
		// A file system without hard links (some FUSE and network
		// mounts): bbolt creates the file in place, as before.
		return nil
	case err != nil && !errors.Is(err, fs.ErrExist):
		return err
	}
	return SyncDir(dir)
}

// link is os.Link; tests replace it to stand for a file system without
// hard links.
var link = os.Link

// SyncDir flushes a directory's entries (a file linked or renamed into
// it) to disk. Windows opens no directory for syncing, and its renames
// are the file system's journal's to keep.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Path returns the file's path.
func (s *Store) Path() string { return s.db.Path() }

// View implements store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("bolt: view: %w", err)
	}
	err := s.db.View(func(btx *bbolt.Tx) error {
		t := &tx{btx: btx, now: s.now()}
		defer func() { t.done = true }()
		return fn(t)
	})
	return closedErr(err)
}

// Update implements store.Store. If ctx is done when fn returns, the
// transaction is rolled back and ctx.Err() returned.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("bolt: update: %w", err)
	}
	committing := false
	err := s.db.Update(func(btx *bbolt.Tx) error {
		t := &tx{btx: btx, now: s.now()}
		defer func() { t.done = true }()
		if err := fn(t); err != nil {
			return err
		}
		// A caller that gave up must not find its writes applied later.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("bolt: update: %w", err)
		}
		committing = true
		return nil
	})
	if committing && noRoom(err) {
		return fmt.Errorf("bolt: update: %w: %w", store.ErrUnavailable, err)
	}
	return closedErr(err)
}

// noRoom reports whether a commit failed for want of room to write: the
// disk or the owner's quota is full. bbolt writes the new pages first and
// the meta page that makes them the store's last, into a page the file
// has, so such a commit wrote nothing, and the store works again once
// there is room: it is store.ErrUnavailable (503, retry later), not a
// server error (TestDiskFull).
func noRoom(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Purge implements store.Store. It deletes expired entries in batches of
// Options.PurgeBatch, each in its own write transaction: bbolt has one
// writer at a time, and one transaction over a flood of expired entries
// (sessions, say) would hold every other write up for its whole length.
// Each batch goes on from where the one before stopped.
func (s *Store) Purge(ctx context.Context) (int, error) {
	if err := s.begin(ctx); err != nil {
		return 0, fmt.Errorf("bolt: purge: %w", err)
	}
	total := 0
	var from, after []byte // the bucket and key the last batch stopped at
	for {
		n, more, err := s.purgeFrom(from, after)
		if err != nil {
			return total, closedErr(fmt.Errorf("bolt: purge: %w", err))
		}
		total += n
		if s.purgeBatchDone != nil {
			s.purgeBatchDone()
		}
		if more == nil {
			return total, nil
		}
		from, after = more.bucket, more.key
		if err := ctx.Err(); err != nil {
			return total, fmt.Errorf("bolt: purge: %w", err)
		}
	}
}

// purgeStop is where a purge batch stopped: the bucket, and the last key
// it deleted there.
type purgeStop struct{ bucket, key []byte }

// purgeFrom deletes up to s.purgeBatch expired entries, from bucket from
// on, after key after in it (from its start when nil), in one write
// transaction. more is where it stopped when it found a full batch (there
// may be more), nil when it went through the last bucket.
func (s *Store) purgeFrom(from, after []byte) (n int, more *purgeStop, err error) {
	err = s.db.Update(func(btx *bbolt.Tx) error {
		n, more = 0, nil
		now := s.now()
		var names [][]byte
		err := btx.ForEach(func(name []byte, _ *bbolt.Bucket) error {
			if bytes.Compare(name, from) >= 0 {
				names = append(names, bytes.Clone(name))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range names {
			b := btx.Bucket(name)
			// Collect first: deleting under a cursor can skip entries.
			var expired [][]byte
			c := b.Cursor()
			k, v := c.First()
			if after != nil && bytes.Equal(name, from) {
				k, v = c.Seek(after)
			}
			for ; k != nil && n+len(expired) < s.purgeBatch; k, v = c.Next() {
				if v == nil {
					continue // a nested bucket; this package creates none
				}
				exp, _, err := decode(v)
				if err != nil {
					return fmt.Errorf("%s/%q: %w", name, k, err)
				}
				if !live(exp, now) {
					expired = append(expired, bytes.Clone(k))
				}
			}
			for _, k := range expired {
				if err := b.Delete(k); err != nil {
					return fmt.Errorf("delete %s/%q: %w", name, k, err)
				}
			}
			n += len(expired)
			if n == s.purgeBatch {
				more = &purgeStop{name, expired[len(expired)-1]}
				return nil
			}
		}
		return nil
	})
	return n, more, err
}

// Backup implements store.Backuper: bbolt copies the file inside one read
// transaction, so the copy is consistent and writers go on meanwhile. The
// transaction copies into a temporary file beside the store (mode 0600:
// it holds every secret hash and session) and ends before anything goes
// to w: a commit that must grow the file's memory map waits for every
// open read transaction, and every later transaction waits behind that
// commit, so a transaction held open for a slow or stalled reader of w
// (an HTTP client) would hang the whole store for as long. The copy needs
// disk space for a second store beside the first while it runs. Backup
// stops with ctx's error when ctx ends.
func (s *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	if err := s.begin(ctx); err != nil {
		return 0, fmt.Errorf("bolt: backup: %w", err)
	}
	path := s.db.Path()
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".backup-*.tmp")
	if err != nil {
		return 0, fmt.Errorf("bolt: backup: %w", err)
	}
	// Unlinked at once where the system allows it (the open file lives
	// on), so a crash leaves no copy of every secret hash behind.
	if os.Remove(f.Name()) != nil {
		defer os.Remove(f.Name())
	}
	defer f.Close()
	err = s.db.View(func(btx *bbolt.Tx) error {
		_, err := btx.WriteTo(ctxWriter{ctx, f})
		return err
	})
	if err != nil {
		return 0, closedErr(fmt.Errorf("bolt: backup: %w", err))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("bolt: backup: %w", err)
	}
	n, err := io.Copy(ctxWriter{ctx, w}, f)
	if err != nil {
		return n, fmt.Errorf("bolt: backup: %w", err)
	}
	return n, nil
}

// Export calls fn for every live entry of every bucket with its expiry
// (zero: never), in bucket and key order, from one read transaction: a
// consistent copy for moving the store to another backend. fn gets copies
// it may keep. An error from fn stops Export and is returned.
func (s *Store) Export(ctx context.Context, fn func(bucket, key string, value []byte, expires time.Time) error) error {
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("bolt: export: %w", err)
	}
	now := s.now()
	err := s.db.View(func(btx *bbolt.Tx) error {
		return btx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			return b.ForEach(func(k, raw []byte) error {
				if raw == nil {
					return nil // a nested bucket; this package creates none
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				exp, v, err := decode(raw)
				if err != nil {
					return fmt.Errorf("%s/%q: %w", name, k, err)
				}
				if !live(exp, now) {
					return nil
				}
				var expires time.Time
				if exp != 0 {
					expires = time.Unix(0, exp)
				}
				return fn(string(name), string(k), bytes.Clone(v), expires)
			})
		})
	})
	if err != nil {
		return closedErr(fmt.Errorf("bolt: export: %w", err))
	}
	return nil
}

// ctxWriter fails writes once ctx is done, so a long copy for a caller
// that gave up ends early.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Check opens the bbolt file at path read-only and verifies its page
// structure, e.g. a backup before it replaces anything. The file must not
// be open in a Store.
func Check(path string) error {
	// bbolt maps the file and faults (SIGBUS) on pages past its end, so a
	// truncated copy is refused before it is opened.
	if err := checkSize(path); err != nil {
		return fmt.Errorf("bolt: check %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: DefaultTimeout})
	if err != nil {
		return fmt.Errorf("bolt: check %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(btx *bbolt.Tx) error {
		var first error
		// Drained to the end: the checker reads the transaction until it
		// closes the channel.
		for err := range btx.Check() {
			if first == nil {
				first = fmt.Errorf("bolt: check %s: %w", path, err)
			}
		}
		return first
	})
}

// The on-disk meta page of bbolt (format version 2), in the machine's byte
// order: a 16-byte page header, then magic, version, page size, flags (4
// bytes each), root bucket (16), freelist page (8) and the high-water
// page id (8).
const (
	metaMagic      = 0xED0CDAED
	metaMagicAt    = 16
	metaPageSizeAt = 24
	metaPgidAt     = 56
	metaEnd        = 64
)

// checkSize refuses a file shorter than the pages its two meta pages
// claim.
func checkSize(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	var head [metaEnd]byte
	if _, err := f.ReadAt(head[:], 0); err != nil {
		return errors.New("not a bbolt database (too short)")
	}
	ne := binary.NativeEndian
	if ne.Uint32(head[metaMagicAt:]) != metaMagic {
		// A damaged first meta page: bbolt reads the second, one OS page
		// in (its default page size), and so does this check.
		if _, err := f.ReadAt(head[:], int64(os.Getpagesize())); err != nil || ne.Uint32(head[metaMagicAt:]) != metaMagic {
			return errors.New("not a bbolt database (no magic number)")
		}
	}
	pageSize := int64(ne.Uint32(head[metaPageSizeAt:]))
	if pageSize < 512 || pageSize > 1<<20 {
		return fmt.Errorf("not a bbolt database (page size %d)", pageSize)
	}
	need := int64(0)
	for _, at := range []int64{0, pageSize} {
		if _, err := f.ReadAt(head[:], at); err != nil {
			return fmt.Errorf("truncated: %d bytes, shorter than its meta pages", fi.Size())
		}
		if ne.Uint32(head[metaMagicAt:]) == metaMagic {
			need = max(need, int64(ne.Uint64(head[metaPgidAt:]))*pageSize)
		}
	}
	if fi.Size() < need {
		return fmt.Errorf("truncated: %d bytes, its pages need %d", fi.Size(), need)
	}
	return nil
}

// Close implements store.Store. It waits for running transactions.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return store.ErrClosed
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("bolt: close: %w", err)
	}
	return nil
}

func (s *Store) begin(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// closedErr reports bbolt's "not open" (a Close that won a race with begin)
// as store.ErrClosed.
func closedErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", store.ErrClosed, err)
	}
	return err
}

// encode returns the stored form of value.
func encode(value []byte, expires time.Time) []byte {
	buf := make([]byte, headerLen+len(value))
	binary.BigEndian.PutUint64(buf, uint64(expiryNanos(expires)))
	copy(buf[headerLen:], value)
	return buf
}

// expiryNanos is the header form of expires: 0 for never, otherwise Unix
// nanoseconds, clamped, never 0.
func expiryNanos(expires time.Time) int64 {
	switch {
	case expires.IsZero():
		return 0
	case expires.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case expires.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	if n := expires.UnixNano(); n != 0 {
		return n
	}
	return -1
}

// decode splits a stored value. The returned value aliases raw.
func decode(raw []byte) (expires int64, value []byte, err error) {
	if len(raw) < headerLen {
		return 0, nil, errCorrupt
	}
	return int64(binary.BigEndian.Uint64(raw)), raw[headerLen:], nil
}

// live reports whether an entry with header expiry exp is visible at now.
func live(exp int64, now time.Time) bool {
	return exp == 0 || now.Before(time.Unix(0, exp))
}

type tx struct {
	btx  *bbolt.Tx
	now  time.Time // one instant per transaction
	done bool
}

func (t *tx) check(bucket, key string, write bool) error {
	switch {
	case t.done:
		return errTxDone
	case write && !t.btx.Writable():
		return errReadOnly
	case bucket == "":
		return errBucket
	case key == "":
		return errKey
	}
	return nil
}

// entry returns the live value under key (aliasing bbolt memory), or
// ErrNotFound.
func (t *tx) entry(bucket, key string) ([]byte, error) {
	b := t.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil, store.ErrNotFound
	}
	raw := b.Get([]byte(key))
	if raw == nil {
		return nil, store.ErrNotFound
	}
	exp, v, err := decode(raw)
	if err != nil {
		return nil, err
	}
	if !live(exp, t.now) {
		return nil, store.ErrNotFound
	}
	return v, nil
}

func (t *tx) Get(bucket, key string) ([]byte, error) {
	if err := t.check(bucket, key, false); err != nil {
		return nil, err
	}
	v, err := t.entry(bucket, key)
	if err != nil {
		return nil, fmt.Errorf("bolt: get %s/%q: %w", bucket, key, err)
	}
	// bbolt's memory is only valid during the transaction.
	return bytes.Clone(v), nil
}

func (t *tx) Put(bucket, key string, value []byte, expires time.Time) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	return t.put(bucket, key, value, expires)
}

func (t *tx) put(bucket, key string, value []byte, expires time.Time) error {
	b, err := t.btx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bolt: put %s/%q: %w", bucket, key, err)
	}
	// encode copies value, and bbolt needs key and value unchanged until
	// commit: both are fresh slices nobody else holds.
	if err := b.Put([]byte(key), encode(value, expires)); err != nil {
		return fmt.Errorf("bolt: put %s/%q: %w", bucket, key, err)
	}
	return nil
}

func (t *tx) Create(bucket, key string, value []byte, expires time.Time) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	_, err := t.entry(bucket, key)
	switch {
	case err == nil:
		return fmt.Errorf("bolt: create %s/%q: %w", bucket, key, store.ErrAlreadyExists)
	case !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("bolt: create %s/%q: %w", bucket, key, err)
	}
	return t.put(bucket, key, value, expires)
}

func (t *tx) Delete(bucket, key string) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	b := t.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	if err := b.Delete([]byte(key)); err != nil {
		return fmt.Errorf("bolt: delete %s/%q: %w", bucket, key, err)
	}
	return nil
}

func (t *tx) List(bucket, prefix string, fn func(key string, value []byte) error) error {
	// The prefix may be empty; check a placeholder key instead.
	if err := t.check(bucket, "-", false); err != nil {
		return err
	}
	b := t.btx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	// Snapshot the matches first: fn may write to this bucket, and bbolt
	// cursors are not safe across writes.
	type kv struct {
		key   string
		value []byte
	}
	var matches []kv
	p := []byte(prefix)
	c := b.Cursor()
	for k, raw := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, raw = c.Next() {
		if raw == nil {
			continue // a nested bucket; this package creates none
		}
		exp, v, err := decode(raw)
		if err != nil {
			return fmt.Errorf("bolt: list %s/%q: %w", bucket, k, err)
		}
		if live(exp, t.now) {
			matches = append(matches, kv{string(k), bytes.Clone(v)})
		}
	}
	for _, m := range matches {
		if err := fn(m.key, m.value); err != nil {
			return err
		}
	}
	return nil
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Backuper = (*Store)(nil)
	_ store.Tx       = (*tx)(nil)
)
