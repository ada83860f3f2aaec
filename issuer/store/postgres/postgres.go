// Package postgres is a store.Store on PostgreSQL, so that several
// instances can share one authorization server's state. It is the only
// package that imports pgx.
//
// Layout: one table, mcp_auth_entries (bucket, key, value, expires), with
// bucket and key as bytea so any Go string is a key and key order is byte
// order, as on bbolt; expires is Unix nanoseconds (NULL: never), compared
// with the store's clock, which the queries pass in. The schema is created
// on first Open and migrated by the ordered, versioned migrations in
// migrate.go, each recorded in mcp_auth_schema.
//
// Update runs its function in a SERIALIZABLE transaction and runs it again
// after a serialization failure or deadlock (see Options.MaxAttempts), so
// concurrent Updates on any number of instances behave as if run one after
// the other: the compare-and-swap the issuer relies on. View runs in a
// read-only REPEATABLE READ transaction: one consistent snapshot.
//
// Durability: an Update returns nil once PostgreSQL has committed, which
// with the default synchronous_commit=on means the commit is flushed to
// its write-ahead log (and, with synchronous replication configured, to
// the standbys that setting names). Where the server, the database or
// the role turned synchronous_commit off, an Update that writes sets it
// to local for its own transaction (tx.write), so what it reports made
// is on the server's disk and survives a crash, without waiting for
// standbys the setting did not wait for; UpdateNoSync's commits do not
// wait.
package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Defaults of Options.
const (
	DefaultMaxAttempts = 20
	DefaultPurgeBatch  = 500
	DefaultPurgeGrace  = time.Minute
	DefaultTimeout     = 10 * time.Second
)

// lockAfter is how many attempts of an Update that asked for it
// (store.MayRunAlone) may fail to serialize before the next ones run
// alone: a transaction that reads much (a revocation scanning the grants)
// loses every conflict with a steady stream of short ones writing what it
// read (token requests), however often it is run again. Alone, it first
// waits for the writers running, and the writers after it wait for its
// commit; readers are not held. Other Updates never run alone: a fight
// over one hot entry must not stall every writer (review s15-fresh F5).
const lockAfter = 4

// Retry backoff: a random wait up to minBackoff doubled per attempt, at
// most maxBackoff, so that conflicting transactions spread out.
const (
	minBackoff = time.Millisecond
	maxBackoff = 50 * time.Millisecond
)

var (
	errReadOnly = errors.New("postgres: write in a read-only transaction")
	errTxDone   = errors.New("postgres: transaction used after its function returned")
	errBucket   = errors.New("postgres: empty bucket name")
	errKey      = errors.New("postgres: empty key")
)

// Options configures Open.
type Options struct {
	// Now is the clock that decides expiry. Default time.Now. Instances
	// sharing a database need clocks that agree (NTP): an entry expires
	// when the clock of the instance reading it passes its expiry.
	Now func() time.Time
	// MaxAttempts bounds how many times Update runs a transaction that
	// fails to serialize before it gives up with store.ErrUnavailable.
	// Zero or negative means DefaultMaxAttempts.
	MaxAttempts int
	// PurgeBatch is how many expired entries Purge deletes per statement;
	// each batch is its own short transaction. Zero or negative means
	// DefaultPurgeBatch.
	PurgeBatch int
	// PurgeGrace is how long past its expiry, by this instance's clock
	// and by the database server's, Purge leaves an entry. Every instance
	// reads expiry by its own clock, so a clock ahead of the others' (NTP
	// lost or stepped wrong, a VM resumed from a snapshot) only shortens
	// what that instance accepts, except in Purge: deleting what the
	// others still read as live would let them accept again what the
	// entry refused (a spent DPoP proof's replay record, kept only 10 s
	// past the proof's window; a revocation marker). The grace covers a
	// clock a little ahead, the server's clock, which the others agree
	// with (their /healthz checks it), one far ahead. Zero means
	// DefaultPurgeGrace; negative means none, by this instance's clock
	// alone.
	PurgeGrace time.Duration
	// Timeout bounds how long a transaction waits for the database (and a
	// connection attempt, unless the DSN sets connect_timeout): a
	// statement that waits for a lock or runs longer than this is
	// cancelled by PostgreSQL (lock_timeout and statement_timeout, unless
	// the DSN sets them), and a View or an attempt of Update that has
	// not finished after twice this (a database that stopped answering)
	// is abandoned. Either fails with store.ErrUnavailable, so a stalled
	// database answers requests with 503 instead of holding them. A
	// session idle in a transaction this long (an instance that stopped
	// mid-transaction) is ended by PostgreSQL (idle_in_transaction_session_timeout,
	// unless the DSN sets it), which releases what it held. Zero or
	// negative means DefaultTimeout.
	Timeout time.Duration
}

// Store is a store.Store on a PostgreSQL database.
type Store struct {
	pool        *pgxpool.Pool
	reserved    *pgxpool.Pool // ViewReserved's one connection
	now         func() time.Time
	maxAttempts int
	purgeBatch  int
	purgeGrace  time.Duration
	timeout     time.Duration
	closed      atomic.Bool

	// closing ends when Close is called, and with it every Watch;
	// watches counts the running ones, which Close waits for. watchMu
	// orders a Watch's start with Close (sync.WaitGroup: no Add once
	// Wait may have begun).
	closing    context.Context
	endWatches context.CancelFunc
	watchMu    sync.Mutex
	watches    sync.WaitGroup
}

// Open connects to the database dsn names (a libpq connection string or
// URL, see pgxpool.ParseConfig), creates or migrates its schema, and
// returns the Store. It refuses a database whose schema is newer than
// this build knows. Several instances may Open the same database at once.
// Errors never contain the DSN's password.
//
// It connects only to a server that is not in recovery, as
// target_session_attrs=primary does, unless the DSN or
// PGTARGETSESSIONATTRS chooses (any, pgx's default, included): a DSN
// naming a primary and
// its standby names, after a failover, the old primary back as a
// standby, often first; connected there, the store would read the
// standby's data as far as it has replayed (a revocation log behind the
// primary's counting as current) and could write nothing
// (TestStandbyNotUsed).
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", parseErr(err))
	}
	if cfg.ConnConfig.DefaultQueryExecMode == pgx.QueryExecModeSimpleProtocol {
		return nil, errSimpleProtocol
	}
	if cfg.ConnConfig.ValidateConnect == nil && !statesTargetSessionAttrs(dsn) {
		cfg.ConnConfig.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsPrimary
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	serverTimeouts(cfg.ConnConfig.RuntimeParams, timeout)
	if cfg.ConnConfig.ConnectTimeout == 0 {
		// Unless the DSN sets connect_timeout: a connection attempt (at
		// Open, or the NOTIFY listener's) to a database that does not
		// answer ends too.
		cfg.ConnConfig.ConnectTimeout = timeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	reserved, err := pgxpool.NewWithConfig(ctx, reservedConfig(cfg))
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{
		pool:        pool,
		reserved:    reserved,
		now:         opts.Now,
		maxAttempts: opts.MaxAttempts,
		purgeBatch:  opts.PurgeBatch,
		purgeGrace:  opts.PurgeGrace,
		timeout:     timeout,
	}
	s.closing, s.endWatches = context.WithCancel(context.Background())
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxAttempts <= 0 {
		s.maxAttempts = DefaultMaxAttempts
	}
	if s.purgeBatch <= 0 {
		s.purgeBatch = DefaultPurgeBatch
	}
	switch {
	case s.purgeGrace == 0:
		s.purgeGrace = DefaultPurgeGrace
	case s.purgeGrace < 0:
		s.purgeGrace = 0
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		reserved.Close()
		return nil, err
	}
	return s, nil
}

// statesTargetSessionAttrs reports whether the DSN, or the environment,
// chooses target_session_attrs (any included): otherwise Open connects
// only to a primary.
func statesTargetSessionAttrs(dsn string) bool {
	if os.Getenv("PGTARGETSESSIONATTRS") != "" {
		return true
	}
	keys, err := DSNKeys(dsn)
	return err == nil && keys["target_session_attrs"]
}

// errSimpleProtocol refuses a DSN whose default_query_exec_mode is
// simple_protocol: pgx then writes every value into the statement's text
// rather than send it as a parameter, so the server's log (log_statement,
// and a failed statement's STATEMENT line at the default
// log_min_error_statement) and pg_stat_activity hold every record the
// store writes, the signing keys' private parts among them, whatever
// log_parameter_max_length says (TestOpenRefusesSimpleProtocol). The
// mode exec sends parameters apart without naming a prepared statement,
// as a pooler in transaction mode needs.
var errSimpleProtocol = errors.New("postgres: the dsn's default_query_exec_mode simple_protocol writes every value the store sends into the statement's text, which the server's log and pg_stat_activity show: leave it out, or use exec behind a connection pooler")

// parseErr is pgx's error for a DSN it cannot read, without the DSN:
// pgx shows it with the passwords it recognizes masked, which misses
// some in a DSN it could not read (spaces around '=', an escaped quote
// in a quoted value, a placeholder's password with spaces unquoted, an
// '@' in a URL's password), and the syntax errors it wraps quote pieces
// of it ("missing "=" after <word>"), so they are left out too: what
// remains names what is wrong (sslmode is invalid, a CA file that cannot
// be read, an invalid port).
func parseErr(err error) error {
	var pe *pgconn.ParseConfigError
	if !errors.As(err, &pe) {
		return err
	}
	bare := *pe
	bare.ConnString = ""
	msg := strings.TrimPrefix(bare.Error(), "cannot parse ``: ")
	if inner := pe.Unwrap(); inner != nil && strings.Contains(inner.Error(), `"`) {
		msg = strings.TrimSuffix(msg, " ("+inner.Error()+")")
	}
	return errors.New("cannot read the dsn: " + msg)
}

// serverTimeouts has PostgreSQL cancel a statement that waits for a lock,
// or runs, longer than d (Options.Timeout), and end a session idle in a
// transaction that long, on every connection: unless the DSN chose
// otherwise for these parameters. The store's transactions never wait
// for anything between their statements; one that does is an instance
// that stopped (frozen, or cut off without a reset, which PostgreSQL
// notices only at TCP keepalive, hours by default), and the rows it
// wrote would refuse every other instance's writes until then.
func serverTimeouts(params map[string]string, d time.Duration) {
	ms := strconv.FormatInt(max(d.Milliseconds(), 1), 10)
	for _, name := range []string{"lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"} {
		if _, set := params[name]; !set {
			params[name] = ms
		}
	}
}

// bounded is ctx ending after twice the timeout, for one transaction:
// PostgreSQL ends a statement that waits or runs too long itself (a
// clean error, nothing written), so this ends only a transaction whose
// database stopped answering.
func (s *Store) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, 2*s.timeout, errStalled)
}

// errStalled ends a transaction whose database did not answer within
// twice Options.Timeout.
var errStalled = errors.New("postgres: the database did not answer in time")

// unavailable marks err, of a transaction run under bounded(ctx), as
// store.ErrUnavailable when the database made it wait too long: a
// statement PostgreSQL cancelled for lock_timeout (55P03) or
// statement_timeout (57014), or the transaction abandoned after twice
// the timeout while the caller still waits. The caller may retry.
func unavailable(ctx, bctx context.Context, err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) {
		return err
	}
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && (pe.Code == "55P03" || pe.Code == "57014"),
		ctx.Err() == nil && errors.Is(context.Cause(bctx), errStalled) && (errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)):
		// The function's own errors (invalid_grant, say) stay its own.
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// View implements store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	bctx, cancel := s.bounded(ctx)
	defer cancel()
	return unavailable(ctx, bctx, s.view(bctx, s.pool, fn))
}

// view runs fn in a read-only transaction on a connection of pool.
func (s *Store) view(ctx context.Context, pool *pgxpool.Pool, fn func(store.Tx) error) error {
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("postgres: view: %w", err)
	}
	ptx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return s.beginErr(ctx, "view", err)
	}
	t := &tx{ctx: ctx, ptx: ptx, now: nanos(s.now())}
	defer func() {
		t.done = true
		s.rollback(ctx, ptx)
	}()
	if err := fn(t); err != nil {
		return err
	}
	return t.err
}

// Update implements store.Store. fn runs in a SERIALIZABLE transaction; on
// a serialization failure or deadlock the transaction is rolled back and
// fn runs again in a new one, up to Options.MaxAttempts times, after
// which Update returns an error wrapping store.ErrUnavailable.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.update(ctx, fn, true, true)
}

// UpdateNoSync implements store.NoSyncUpdater: Update with
// synchronous_commit off for its transaction, so the commit does not wait
// for the write-ahead log to be flushed.
func (s *Store) UpdateNoSync(ctx context.Context, fn func(store.Tx) error) error {
	return s.update(ctx, fn, false, true)
}

// update runs fn in a transaction, again on a serialization failure;
// bounded: each attempt is abandoned after twice the timeout (see
// bounded), which an import of a whole store, one long transaction of
// short statements, is not.
func (s *Store) update(ctx context.Context, fn func(store.Tx) error, sync, bounded bool) error {
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("postgres: update: %w", err)
	}
	mayRunAlone := false
	for attempt := 1; ; attempt++ {
		bctx, cancel := ctx, context.CancelFunc(func() {})
		if bounded {
			bctx, cancel = s.bounded(ctx)
		}
		asked, err := s.attempt(bctx, ctx, fn, sync, mayRunAlone && attempt > lockAfter)
		mayRunAlone = mayRunAlone || asked
		err = unavailable(ctx, bctx, err)
		cancel()
		if !retryable(err) {
			return err
		}
		if attempt >= s.maxAttempts {
			return fmt.Errorf("postgres: update: %w: still conflicting after %d attempts: %w", store.ErrUnavailable, attempt, err)
		}
		wait := time.Duration(rand.Int64N(int64(min(minBackoff<<attempt, maxBackoff)) + 1))
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres: update: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

// rollback ends a transaction that is not committed, even when ctx has
// ended, but waits for the database at most the timeout: one that
// stopped answering would otherwise hold the call, and the pool's Close,
// for good.
func (s *Store) rollback(ctx context.Context, ptx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	_ = ptx.Rollback(rctx)
}

// attempt runs fn once in its own transaction under ctx (bounded, see
// bounded) and commits it under commitCtx, the caller's: a commit is
// waited for as long as the caller waits, since PostgreSQL may hold it
// for a synchronous standby, and abandoning it would report a failure
// for a write that happened.
//
// alone: the transaction first locks the table against other writers
// (lockAfter).
func (s *Store) attempt(ctx, commitCtx context.Context, fn func(store.Tx) error, sync, alone bool) (mayRunAlone bool, err error) {
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	ptx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.Serializable})
	if err != nil {
		return false, s.beginErr(ctx, "update", err)
	}
	t := &tx{ctx: ctx, ptx: ptx, now: nanos(s.now()), writable: true, durable: sync}
	committed := false
	defer func() {
		t.done = true
		if !committed { // also when fn panics
			s.rollback(ctx, ptx)
		}
	}()
	if alone {
		// Before any read, so that the snapshot is taken once the
		// writers it waited for have ended. Readers go on; writers of
		// any instance wait for the commit (up to Options.Timeout, the
		// lock timeout, when this one is slow).
		if _, err := ptx.Exec(ctx, "LOCK TABLE mcp_auth_entries IN SHARE ROW EXCLUSIVE MODE"); err != nil {
			return t.alone, fmt.Errorf("postgres: update: lock: %w", err)
		}
	}
	if !sync {
		if _, err := ptx.Exec(ctx, "SET LOCAL synchronous_commit = off"); err != nil {
			return t.alone, fmt.Errorf("postgres: update: %w", err)
		}
	}
	ferr := fn(t)
	switch {
	case retryable(t.err):
		// fn decided on a transaction that cannot commit: run it again,
		// whatever it returned.
		return t.alone, t.err
	case ferr != nil:
		return t.alone, ferr
	case t.err != nil:
		// fn ignored a database error; PostgreSQL has aborted the
		// transaction, so nothing fn wrote can commit.
		return t.alone, t.err
	}
	// A caller that gave up must not find its writes applied later.
	if err := ctx.Err(); err != nil {
		return t.alone, fmt.Errorf("postgres: update: %w", err)
	}
	if err := ptx.Commit(commitCtx); err != nil {
		// The database's own answer (a serialization failure) but one
		// that ended the session, or the caller gave up (pgx closes the
		// connection then). Not asked of the connection: Commit has
		// given it back to the pool.
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Severity != "FATAL" && pe.Severity != "PANIC" || commitCtx.Err() != nil {
			return t.alone, fmt.Errorf("postgres: commit: %w", err)
		}
		err = s.outcome(commitCtx, t.xid, t.wrote, err)
		committed = err == nil
		return t.alone, err
	}
	committed = true
	return t.alone, nil
}

// errCommitUnknown: the connection was lost at commit, and the database
// could not tell whether the transaction committed.
var errCommitUnknown = errors.New("postgres: the commit's outcome is unknown")

// outcome learns, on a new connection, what became of the transaction
// xid (0 if it wrote nothing) whose connection was
// lost at commit with err: nil when it committed, so that what the
// caller wrote is reported as written (a rotated refresh token handed
// out, not reported failed and then taken for reuse on the client's
// retry); store.ErrUnavailable when it did not. A transaction the
// database still runs (which got no COMMIT: it ends it once it sees the
// connection gone, or after idle_in_transaction_session_timeout) is
// waited for up to twice the timeout; past that, or when the database
// cannot be asked, the error wraps store.ErrUnavailable too (503, retry)
// and errCommitUnknown: the write may have landed.
//
// txid_status alone is not the answer: a database that crashed before
// any of the transaction's write-ahead log reached its disk (a crash
// of the server, or of one of its sessions, which restarts them all;
// a failover to a standby the log had not reached) gives its id again
// after the restart, and another instance's transaction under that id
// reads as this one's. So "committed" counts only when the rows the
// transaction wrote (wrote, some of them) hold what it wrote, as rows
// of its id (landed); otherwise the write may have landed or not.
func (s *Store) outcome(ctx context.Context, xid int64, wrote []written, err error) error {
	if xid == 0 {
		return fmt.Errorf("postgres: commit: %w: %w", store.ErrUnavailable, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*s.timeout)
	defer cancel()
	var asking error
	for {
		var status *string
		asking = s.pool.QueryRow(ctx, "SELECT txid_status($1)", xid).Scan(&status)
		if asking == nil && status != nil && *status == "committed" {
			var ours bool
			if ours, asking = s.landed(ctx, xid, wrote); asking == nil && !ours {
				return fmt.Errorf("postgres: commit: %w: %w: %w (its transaction id was given again)", store.ErrUnavailable, errCommitUnknown, err)
			}
		}
		switch {
		case asking != nil: // the database not reachable yet: again
		case status == nil: // too old to tell, which a transaction of now is not
			return fmt.Errorf("postgres: commit: %w: %w: %w", store.ErrUnavailable, errCommitUnknown, err)
		case *status == "committed":
			return nil
		case *status == "aborted":
			return fmt.Errorf("postgres: commit: %w: %w", store.ErrUnavailable, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres: commit: %w: %w: %w (asking: %v)", store.ErrUnavailable, errCommitUnknown, err, asking)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// written is a row a transaction changed, as it left it: the hash of
// the value it wrote, or deleted.
type written struct {
	bucket, key string
	sum         [sha256.Size]byte
	deleted     bool
}

// maxWritten bounds the rows a transaction keeps (tx.wrote) for landed:
// a few rows of its own are evidence enough, and an import writes a
// whole store.
const maxWritten = 16

// landed reports whether the rows wrote still hold what the transaction
// xid left there: each value written is there, as a row whose xmin (a
// transaction id's low 32 bits) is xid's, and each row deleted is gone.
// Another transaction under the same id, given again after a crash,
// wrote rows of its own. A row changed since by a later transaction
// makes it false too, though the commit landed: the outcome is then
// unknown.
func (s *Store) landed(ctx context.Context, xid int64, wrote []written) (bool, error) {
	if len(wrote) == 0 {
		return false, nil
	}
	for _, w := range wrote {
		var value []byte
		var xmin int64
		err := s.pool.QueryRow(ctx, `SELECT value, xmin::text::bigint FROM mcp_auth_entries WHERE bucket = $1 AND key = $2`,
			[]byte(w.bucket), []byte(w.key)).Scan(&value, &xmin)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if !w.deleted {
				return false, nil
			}
		case err != nil:
			return false, err
		case w.deleted || xmin != xid&math.MaxUint32 || sha256.Sum256(value) != w.sum:
			return false, nil
		}
	}
	return true, nil
}

// Purge implements store.Store. It deletes entries expired for
// Options.PurgeGrace, by this instance's clock and the server's, in
// batches of Options.PurgeBatch, each in its own
// short transaction that skips rows other transactions hold, so it never
// blocks writers for long and instances purging at the same time do not
// wait for each other.
func (s *Store) Purge(ctx context.Context) (int, error) {
	if err := s.begin(ctx); err != nil {
		return 0, fmt.Errorf("postgres: purge: %w", err)
	}
	cutoff := s.now()
	if s.purgeGrace > 0 {
		server, err := s.ServerTime(ctx)
		if err != nil {
			return 0, fmt.Errorf("postgres: purge: %w", err)
		}
		if server.Before(cutoff) {
			cutoff = server
		}
	}
	now := nanos(cutoff.Add(-s.purgeGrace))
	total := 0
	for {
		// Each batch under the bound, so that a database that stopped
		// answering does not keep one of the pool's connections.
		bctx, cancel := s.bounded(ctx)
		tag, err := s.pool.Exec(bctx, `
			DELETE FROM mcp_auth_entries e
			USING (
				SELECT bucket, key FROM mcp_auth_entries
				WHERE expires <= $1
				LIMIT $2
				FOR UPDATE SKIP LOCKED
			) d
			WHERE e.bucket = d.bucket AND e.key = d.key`, now, s.purgeBatch)
		err = unavailable(ctx, bctx, err)
		cancel()
		if err != nil {
			if s.closed.Load() {
				err = fmt.Errorf("%w: %w", store.ErrClosed, err)
			}
			return total, fmt.Errorf("postgres: purge: %w", err)
		}
		n := int(tag.RowsAffected())
		total += n
		if n < s.purgeBatch {
			return total, nil
		}
	}
}

// Import copies entries into the store in one transaction, as Create
// does: it fails with store.ErrAlreadyExists, writing nothing, if the
// store already holds a live entry, under one of their keys or any
// other, so it fills an empty database and never mixes two states (a
// database another deployment uses, under another issuer URL, holds
// signing keys, users and clients under keys of their own, which a copy
// checked for its own keys only would sit beside). entries calls put for
// each entry (an exporter such as bolt.Store.Export); Import returns how
// many it copied.
func (s *Store) Import(ctx context.Context, entries func(ctx context.Context, put func(bucket, key string, value []byte, expires time.Time) error) error) (int, error) {
	n := 0
	err := s.update(ctx, func(st store.Tx) error {
		n = 0
		// entries may be slow to read between two statements (a large
		// file): the session is not ended as one that stopped
		// (serverTimeouts) while it idles in this transaction.
		t := st.(*tx)
		if _, err := t.ptx.Exec(t.ctx, "SET LOCAL idle_in_transaction_session_timeout = 0"); err != nil {
			return err
		}
		var held bool
		if err := t.ptx.QueryRow(t.ctx, "SELECT EXISTS (SELECT 1 FROM mcp_auth_entries WHERE expires IS NULL OR expires > $1)", t.now).Scan(&held); err != nil {
			return err
		}
		if held {
			return fmt.Errorf("the database holds live entries: %w", store.ErrAlreadyExists)
		}
		return entries(ctx, func(bucket, key string, value []byte, expires time.Time) error {
			if err := st.Create(bucket, key, value, expires); err != nil {
				return err
			}
			n++
			return nil
		})
	}, true, false)
	if err != nil {
		return 0, fmt.Errorf("postgres: import: %w", err)
	}
	return n, nil
}

// Close implements store.Store. It ends every Watch, with its LISTEN
// connection, and waits for it and for running transactions.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return store.ErrClosed
	}
	s.watchMu.Lock()
	s.endWatches()
	s.watchMu.Unlock()
	s.watches.Wait()
	s.pool.Close()
	s.reserved.Close()
	return nil
}

func (s *Store) begin(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// beginErr explains a failure to start a transaction under ctx: the
// store was closed meanwhile, ctx ended, or the database cannot be reached
// or did not answer in time (store.ErrUnavailable: nothing was sent, so
// nothing was written).
func (s *Store) beginErr(ctx context.Context, op string, err error) error {
	switch {
	case s.closed.Load():
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrClosed, err)
	case ctx.Err() != nil:
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrUnavailable, err)
}

// retryable reports a serialization failure or deadlock: PostgreSQL rolled
// the transaction back, and running it again may succeed.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return pe.Code == "40001" || pe.Code == "40P01"
}

// nanos is t as Unix nanoseconds, clamped to what int64 holds.
func nanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// expiry is the stored form of expires: NULL for never.
func expiry(expires time.Time) *int64 {
	if expires.IsZero() {
		return nil
	}
	n := nanos(expires)
	return &n
}

type tx struct {
	ctx      context.Context
	ptx      pgx.Tx
	now      int64 // one instant per transaction, Unix nanoseconds
	writable bool
	done     bool
	// alone: fn called store.MayRunAlone (see lockAfter).
	alone bool
	// err is the first database error. PostgreSQL aborts the transaction
	// on it, so every later operation fails with it too.
	err error
	// xid is the transaction's id, read with the first write that
	// changed a row (xidReturning), for outcome; 0 before.
	xid int64
	// durable: its commit must be on disk when Update returns (not
	// UpdateNoSync's); synced: the first write found synchronous_commit
	// off for the connection and set it on for this transaction.
	durable, synced bool
	// wrote are the first rows it changed, up to maxWritten, as it left
	// them (outcome's evidence: landed).
	wrote []written
}

// changed records that the transaction left the row bucket/key holding
// value, or deleted it.
func (t *tx) changed(bucket, key string, value []byte, deleted bool) {
	w := written{bucket: bucket, key: key, deleted: deleted}
	if !deleted {
		w.sum = sha256.Sum256(value)
	}
	for k := range t.wrote {
		if t.wrote[k].bucket == bucket && t.wrote[k].key == key {
			t.wrote[k] = w
			return
		}
	}
	if len(t.wrote) < maxWritten {
		t.wrote = append(t.wrote, w)
	}
}

// xidReturning ends a write statement: it returns the transaction's id
// for each row changed, and whether synchronous_commit is off, which
// costs no round trip of its own.
// (txid_current and txid_status rather than their PostgreSQL 13 names,
// pg_current_xact_id and pg_xact_status: PostgreSQL 10 has them.)
const xidReturning = " RETURNING txid_current(), current_setting('synchronous_commit') = 'off'"

// write runs the write statement sql (ending with xidReturning) and
// reports whether it changed a row.
func (t *tx) write(sql string, args ...any) (bool, error) {
	var xid int64
	var async bool
	switch err := t.ptx.QueryRow(t.ctx, sql, args...).Scan(&xid, &async); {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil
	case err != nil:
		return false, err
	}
	t.xid = xid
	if async && t.durable && !t.synced {
		// synchronous_commit off for the server, the database or the
		// role: the commit would be answered before its log is on
		// disk, and a crash then loses what Update reported made. Set
		// here, at the first write, rather than before the commit,
		// which stays the transaction's last statement. local, not on:
		// the log on this server's disk is what the store needs, and
		// on would also wait for the synchronous standbys
		// (synchronous_standby_names), which the setting kept these
		// commits from waiting for, so a standby that is down would
		// hold every write.
		if _, err := t.ptx.Exec(t.ctx, "SET LOCAL synchronous_commit = local"); err != nil {
			return true, err
		}
		t.synced = true
	}
	return true, nil
}

// MayRunAlone implements store.MayRunAlone.
func (t *tx) MayRunAlone() { t.alone = true }

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
	return t.err
}

// fail records err as the transaction's database error. One that ended
// the session while the transaction's context still runs (PostgreSQL ended
// it idle in the transaction longer than Options.Timeout, see
// serverTimeouts; or the connection was lost) wrote nothing:
// store.ErrUnavailable, the caller may retry.
func (t *tx) fail(op, bucket, key string, err error) error {
	var pe *pgconn.PgError
	if t.ctx.Err() == nil && (errors.As(err, &pe) && pe.Code == "25P03" || t.ptx.Conn().IsClosed()) {
		err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	err = fmt.Errorf("postgres: %s %s/%q: %w", op, bucket, key, err)
	if t.err == nil {
		t.err = err
	}
	return err
}

func (t *tx) Get(bucket, key string) ([]byte, error) {
	if err := t.check(bucket, key, false); err != nil {
		return nil, err
	}
	var v []byte
	err := t.ptx.QueryRow(t.ctx, `
		SELECT value FROM mcp_auth_entries
		WHERE bucket = $1 AND key = $2 AND (expires IS NULL OR expires > $3)`,
		[]byte(bucket), []byte(key), t.now).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, fmt.Errorf("postgres: get %s/%q: %w", bucket, key, store.ErrNotFound)
	case err != nil:
		return nil, t.fail("get", bucket, key, err)
	}
	return v, nil // pgx scans bytea into a fresh slice
}

func (t *tx) Put(bucket, key string, value []byte, expires time.Time) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	if value == nil {
		value = []byte{} // nil would be NULL
	}
	_, err := t.write(`
		INSERT INTO mcp_auth_entries (bucket, key, value, expires) VALUES ($1, $2, $3, $4)
		ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value, expires = EXCLUDED.expires`+xidReturning,
		[]byte(bucket), []byte(key), value, expiry(expires))
	if err != nil {
		return t.fail("put", bucket, key, err)
	}
	t.changed(bucket, key, value, false)
	return nil
}

func (t *tx) Create(bucket, key string, value []byte, expires time.Time) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	if value == nil {
		value = []byte{}
	}
	// Replaces only an expired entry; a live one leaves the row alone and
	// reports no row affected, without aborting the transaction.
	changed, err := t.write(`
		INSERT INTO mcp_auth_entries (bucket, key, value, expires) VALUES ($1, $2, $3, $4)
		ON CONFLICT (bucket, key) DO UPDATE SET value = EXCLUDED.value, expires = EXCLUDED.expires
		WHERE mcp_auth_entries.expires IS NOT NULL AND mcp_auth_entries.expires <= $5`+xidReturning,
		[]byte(bucket), []byte(key), value, expiry(expires), t.now)
	if err != nil {
		return t.fail("create", bucket, key, err)
	}
	if !changed {
		return fmt.Errorf("postgres: create %s/%q: %w", bucket, key, store.ErrAlreadyExists)
	}
	t.changed(bucket, key, value, false)
	return nil
}

func (t *tx) Delete(bucket, key string) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	deleted, err := t.write(`DELETE FROM mcp_auth_entries WHERE bucket = $1 AND key = $2`+xidReturning, []byte(bucket), []byte(key))
	if err != nil {
		return t.fail("delete", bucket, key, err)
	}
	if deleted {
		t.changed(bucket, key, nil, true)
	}
	return nil
}

func (t *tx) List(bucket, prefix string, fn func(key string, value []byte) error) error {
	// The prefix may be empty; check a placeholder key instead.
	if err := t.check(bucket, "-", false); err != nil {
		return err
	}
	// Every key with the prefix sorts in [prefix, end); no end when the
	// prefix is empty or all 0xff bytes.
	var end []byte
	if e, ok := prefixEnd([]byte(prefix)); ok {
		end = e
	}
	rows, err := t.ptx.Query(t.ctx, `
		SELECT key, value FROM mcp_auth_entries
		WHERE bucket = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3)
		  AND (expires IS NULL OR expires > $4)
		ORDER BY key`,
		[]byte(bucket), []byte(prefix), end, t.now)
	if err != nil {
		return t.fail("list", bucket, prefix, err)
	}
	// Read every match before calling fn: fn may write to this bucket,
	// and the connection serves one statement at a time.
	type kv struct {
		key   []byte
		value []byte
	}
	var matches []kv
	for rows.Next() {
		var m kv
		if err := rows.Scan(&m.key, &m.value); err != nil {
			rows.Close()
			return t.fail("list", bucket, prefix, err)
		}
		matches = append(matches, m)
	}
	if err := rows.Err(); err != nil {
		return t.fail("list", bucket, prefix, err)
	}
	for _, m := range matches {
		if err := fn(string(m.key), m.value); err != nil {
			return err
		}
	}
	return nil
}

// prefixEnd returns the least byte string greater than every string with
// prefix p, and false when there is none (p empty or all 0xff).
func prefixEnd(p []byte) ([]byte, bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0xff {
			end := append([]byte(nil), p[:i+1]...)
			end[i]++
			return end, true
		}
	}
	return nil, false
}

// ServerTime implements store.ServerClock: PostgreSQL's clock_timestamp().
func (s *Store) ServerTime(ctx context.Context) (time.Time, error) {
	if err := s.begin(ctx); err != nil {
		return time.Time{}, fmt.Errorf("postgres: server time: %w", err)
	}
	bctx, cancel := s.bounded(ctx)
	defer cancel()
	var at time.Time
	if err := s.pool.QueryRow(bctx, "SELECT clock_timestamp()").Scan(&at); err != nil {
		return time.Time{}, s.beginErr(ctx, "server time", unavailable(ctx, bctx, err))
	}
	return at, nil
}

var (
	_ store.Store         = (*Store)(nil)
	_ store.Watcher       = (*Store)(nil)
	_ store.NoSyncUpdater = (*Store)(nil)
	_ store.ServerClock   = (*Store)(nil)
	_ store.Tx            = (*tx)(nil)
	_ store.Notifier      = (*tx)(nil)
)
