// Package store defines the storage contract of the authorization server.
//
// A Store is a transactional key/value store of named buckets whose entries
// may expire. Every implementation runs the conformance suite in
// storetest. The contract is deliberately small so that a networked backend
// (postgres: one table, serializable transactions retried on conflict) can
// implement it as well as the embedded bbolt one.
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Implementations return them (possibly wrapped) so callers
// can test with errors.Is.
var (
	// ErrNotFound: the key does not exist or its entry has expired.
	ErrNotFound = errors.New("store: not found")
	// ErrAlreadyExists: Create found a live entry under the key.
	ErrAlreadyExists = errors.New("store: already exists")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrUnavailable: the store could not run the transaction now (a
	// networked backend that cannot reach its database, or an Update that
	// kept conflicting with concurrent ones until its retries ran out).
	// Nothing was written; the caller may try again later. (Except when
	// a networked backend lost its connection at a commit and could not
	// learn afterwards whether the commit landed: it says so in the
	// error, and the write may be there.)
	ErrUnavailable = errors.New("store: temporarily unavailable")
)

// Store is the issuer's storage.
type Store interface {
	// View runs fn in a read-only transaction. Writes inside fn fail.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write transaction. If fn returns nil, all
	// its writes are committed atomically and durably (synced to stable
	// storage) before Update returns nil. If fn returns an error, or the
	// commit fails, nothing is written and the error is returned.
	// Concurrent Updates are serialized, which gives compare-and-swap
	// semantics: read, compare, write in one fn. View, Update and Purge
	// do nothing and return the ctx error (wrapped) if ctx is done before
	// they start; Update also writes nothing if ctx is done when fn returns.
	//
	// An implementation may run fn more than once (postgres retries a
	// transaction after a serialization failure or deadlock), and only the
	// last run counts: its writes are committed, its return value is
	// Update's. Callers therefore keep fn free of side effects outside the
	// transaction: no sending, no logging, no metrics, no appending to an
	// outer slice without resetting it; any outer variable fn sets is set
	// afresh on every run, and a value that must be the same on every run
	// (a random id, a token) is drawn before Update. Reading the clock or
	// randomness inside fn is fine when the last run's reading is the one
	// wanted. memory.Options.RunTwice runs every fn twice to catch callers
	// that break this.
	Update(ctx context.Context, fn func(Tx) error) error
	// Purge deletes expired entries and reports how many it removed.
	// Expired entries are already invisible to Get and List; Purge only
	// reclaims space.
	Purge(ctx context.Context) (int, error)
	// Close releases the store. Further calls return ErrClosed.
	Close() error
}

// Backuper is implemented by a Store that can copy itself while in use.
// A store without it (memory) has nothing that outlives the process.
type Backuper interface {
	// Backup writes a consistent copy of the whole store, as of one
	// instant, to w while other transactions go on, and returns the number
	// of bytes written. The copy is a file the store can open in place of
	// its own (for bolt, a bbolt database file): that is the restore.
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// NoSyncUpdater is implemented by a store that can commit without waiting
// for stable storage, which costs a networked store's commits most of
// their time.
type NoSyncUpdater interface {
	// UpdateNoSync is Update, except that the commit is not durable when
	// it returns: a crash of the store soon after may lose it. It is as
	// atomic and serialized as Update, and other transactions see its
	// writes once it returns. For state whose loss costs little.
	UpdateNoSync(ctx context.Context, fn func(Tx) error) error
}

// ReservedViewer is implemented by a store whose transactions share a
// bounded set of connections (postgres: a pool), so that one read that
// must not wait behind them has a connection of its own.
type ReservedViewer interface {
	// ViewReserved is View on a connection reserved for it: it never
	// waits for a connection that View, Update and Purge use, only for
	// another ViewReserved; a lost connection is replaced at the next
	// call. It is for one short, periodic read whose lateness costs more
	// than a request's (the issuer's revocation catch-up: once it is late
	// by RevocationMaxStale, every gateway fails closed).
	ViewReserved(ctx context.Context, fn func(Tx) error) error
}

// ServerClock is implemented by a store that several processes share on
// a server of its own (postgres), whose clock they can all read.
type ServerClock interface {
	// ServerTime returns the server's clock reading. Each process decides
	// expiry by its own clock (an entry is live while its reading is
	// before the expiry), so processes compare theirs with this common
	// one to find out that they disagree.
	ServerTime(ctx context.Context) (time.Time, error)
}

// Notifier is implemented by the Tx of a store that several processes
// share, so that a writer can tell the others to read what it wrote.
type Notifier interface {
	// Notify sends a notification on topic to every Watch on the store,
	// when and only if the transaction commits. Notifications are hints to
	// read the store now, never the data: they may be merged, and a
	// watcher that was disconnected misses them (Watch makes up for that).
	Notify(topic string) error
}

// Watcher is implemented by a store that several processes share: it
// delivers the notifications other processes' transactions sent.
type Watcher interface {
	// Watch calls fn(topic) for each notification on one of topics until
	// ctx ends, then returns. It holds a connection of its own; when that
	// is lost it reconnects with backoff, and after every (re)connection
	// it calls fn for each topic, since notifications sent meanwhile were
	// lost. fn runs on Watch's goroutine: it should return quickly.
	Watch(ctx context.Context, topics []string, fn func(topic string))
}

// MayRunAlone marks the Update tx belongs to as one that may run alone
// should it fail to serialize again and again, when the store has
// several writers at once (postgres: it then locks out the other writers
// until it commits). A transaction that reads much, such as a revocation
// scanning the grants, loses every conflict to a steady stream of short
// ones writing what it read, however often it is run again; a short one
// never needs this, and is never run alone, so that contention on one
// hot entry does not stall every writer (review s15-fresh F5). Stores
// whose writers take turns ignore it.
func MayRunAlone(tx Tx) {
	if a, ok := tx.(interface{ MayRunAlone() }); ok {
		a.MayRunAlone()
	}
}

// Tx is one transaction. It must not be used after its fn returns.
//
// Bucket names and keys must not be empty: an empty one is an error (not
// ErrNotFound) and writes nothing. An entry is live while the transaction's
// clock reading is before its expiry. A bucket that was never written
// reads as empty.
type Tx interface {
	// Get returns a copy of the value under key, or ErrNotFound.
	Get(bucket, key string) ([]byte, error)
	// Put stores value under key, replacing any entry. A zero expires
	// means the entry never expires.
	Put(bucket, key string, value []byte, expires time.Time) error
	// Create is Put that fails with ErrAlreadyExists if a live entry exists.
	Create(bucket, key string, value []byte, expires time.Time) error
	// Delete removes the entry; deleting a missing key is not an error.
	Delete(bucket, key string) error
	// List calls fn for every live entry whose key starts with prefix, in
	// key order. fn gets copies it may keep. An error from fn stops List
	// and is returned. An empty prefix lists the whole bucket. List works
	// from a snapshot taken before the first call, so fn may Put and
	// Delete in the listed bucket.
	List(bucket, prefix string, fn func(key string, value []byte) error) error
}
