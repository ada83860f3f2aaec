package postgres_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
)

// get reads b/k through s.
func get(s store.Store, k string) (string, error) {
	var v []byte
	err := s.View(context.Background(), func(tx store.Tx) error {
		var err error
		v, err = tx.Get("b", k)
		return err
	})
	return string(v), err
}

func put(s store.Store, k, v string) error {
	return s.Update(context.Background(), func(tx store.Tx) error { return tx.Put("b", k, []byte(v), time.Time{}) })
}

// patient ends a DSN whose connection attempts are not what a test
// checks: connect_timeout in the DSN takes the place of Options.Timeout
// for them (TestOpenAgainstSilentDatabase checks that), so that a loaded
// CI machine still connects (PostgreSQL starting a backend beside every
// package's tests took more than 300 ms). Within a transaction,
// connecting stays bounded by twice the timeout.
const patient = " connect_timeout=10"

// readAndWrite runs a View of b/k, the same on the reserved connection
// (ViewReserved), and an Update of it on s, and hands each one's error
// and duration to check.
func readAndWrite(s *postgres.Store, check func(name string, err error, took time.Duration)) {
	for _, op := range []struct {
		name string
		run  func() error
	}{
		{"View", func() error { _, err := get(s, "k"); return err }},
		{"ViewReserved", func() error {
			return s.ViewReserved(context.Background(), func(tx store.Tx) error { _, err := tx.Get("b", "k"); return err })
		}},
		{"Update", func() error { return put(s, "k", "during") }},
	} {
		start := time.Now()
		err := op.run()
		check(op.name, err, time.Since(start))
	}
}

// TestLockWaitEndsAtTimeout: while another client holds the table's
// lock (an operator's migration, a stuck session), reads (ViewReserved's
// too) and writes give up after Options.Timeout with
// store.ErrUnavailable, which the issuer answers with 503, write nothing,
// and work again once the lock is gone.
func TestLockWaitEndsAtTimeout(t *testing.T) {
	if postgres.DefaultTimeout != 10*time.Second {
		t.Fatalf("DefaultTimeout = %v, README (Running on PostgreSQL) says statements are cancelled after 10 s, transactions abandoned after 20 s", postgres.DefaultTimeout)
	}
	dsn := pgtest.NewDatabase(t)
	const timeout = 300 * time.Millisecond
	s := open(t, dsn+patient, postgres.Options{Timeout: timeout})
	if err := put(s, "k", "before"); err != nil {
		t.Fatal(err)
	}
	lock := lockTable(t, dsn)
	readAndWrite(s, func(name string, err error, took time.Duration) {
		// lock_timeout (55P03) or statement_timeout (57014), both the
		// timeout: whichever PostgreSQL's timers fire first.
		if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "55P03") && !strings.Contains(err.Error(), "57014") {
			t.Errorf("%s with the table locked = %v, want store.ErrUnavailable (lock_timeout or statement_timeout)", name, err)
		}
		if took < timeout || took > 2*timeout+time.Second {
			t.Errorf("%s with the table locked took %v, want about the timeout %v", name, took, timeout)
		}
	})
	if err := lock.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, err := get(s, "k"); err != nil || v != "before" {
		t.Fatalf("after the lock: Get = %q, %v, want before, nil (the refused Update wrote nothing)", v, err)
	}
	if err := put(s, "k", "after"); err != nil {
		t.Fatalf("Update after the lock = %v, want nil", err)
	}
}

// TestDSNTimeoutsWin: lock_timeout or statement_timeout set in the DSN
// is the operator's choice and is kept; the other one still ends the
// wait, and with both off the transaction still ends, at twice the
// timeout, with store.ErrUnavailable.
func TestDSNTimeoutsWin(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const timeout = 200 * time.Millisecond
	s := open(t, dsn+patient+" lock_timeout=0", postgres.Options{Timeout: timeout})
	lockTable(t, dsn)
	// statement_timeout, which the DSN leaves to the store, still ends
	// the wait (57014) at the timeout.
	start := time.Now()
	_, err := get(s, "k")
	if took := time.Since(start); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "57014") || took < timeout {
		t.Errorf("View with lock_timeout=0 in the DSN = %v after %v, want store.ErrUnavailable from statement_timeout (57014) after %v", err, took, timeout)
	}
	// And lock_timeout, when the DSN turns statement_timeout off (55P03).
	s2 := open(t, dsn+patient+" statement_timeout=0", postgres.Options{Timeout: timeout})
	start = time.Now()
	_, err = get(s2, "k")
	if took := time.Since(start); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "55P03") || took < timeout {
		t.Errorf("View with statement_timeout=0 in the DSN = %v after %v, want store.ErrUnavailable from lock_timeout (55P03) after %v", err, took, timeout)
	}
	s3 := open(t, dsn+patient+" lock_timeout=0 statement_timeout=0", postgres.Options{Timeout: timeout})
	start = time.Now()
	_, err = get(s3, "k")
	if took := time.Since(start); !errors.Is(err, store.ErrUnavailable) || took < 2*timeout {
		t.Errorf("View with both timeouts off in the DSN = %v after %v, want store.ErrUnavailable after twice the timeout (%v)", err, took, 2*timeout)
	}
}

// lockTable holds the store's table locked, from another client, until
// the returned transaction ends (at the latest with the test).
func lockTable(t *testing.T, dsn string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	lock, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Rollback(ctx) })
	if _, err := lock.Exec(ctx, "LOCK TABLE mcp_auth_entries IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	return lock
}

// TestStalledDatabaseEndsAtTimeout: a database that stops answering (a
// network partition: the connection stays open, nothing comes back) holds
// a transaction for at most twice Options.Timeout, and the store works
// again once it answers. The stall is a socket proxy in front of the
// real server that stops passing bytes.
func TestStalledDatabaseEndsAtTimeout(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	p := newStallProxy(t, dsn)
	const timeout = 300 * time.Millisecond
	s := open(t, p.dsn+patient, postgres.Options{Timeout: timeout})
	if err := put(s, "k", "before"); err != nil {
		t.Fatal(err)
	}
	p.stall.Store(true)
	readAndWrite(s, func(name string, err error, took time.Duration) {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s against a stalled database = %v, want store.ErrUnavailable", name, err)
		}
		// Twice the timeout at most, a new connection needed or not
		// (patient leaves only the transaction's bound on connecting).
		if took < timeout || took > 2*timeout+2*time.Second {
			t.Errorf("%s against a stalled database took %v, want between the timeout and twice it (%v)", name, took, 2*timeout)
		}
	})
	// A caller's own deadline is its own: not marked unavailable.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.View(ctx, func(tx store.Tx) error { _, err := tx.Get("b", "k"); return err })
	if err == nil || errors.Is(err, store.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("View with the caller's 100 ms deadline = %v, want the caller's context.DeadlineExceeded, not ErrUnavailable", err)
	}
	p.stall.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := get(s, "k")
		if err == nil {
			if v != "before" {
				t.Fatalf("after the stall: Get = %q, want before (the abandoned Update wrote nothing)", v)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the stall: Get = %v, want the store working again", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestStalledClientReleasesItsRows: an instance that stops talking in
// the middle of a transaction (its machine frozen, or cut off by the
// network without a reset, so PostgreSQL sees no end of its connection
// until TCP keepalive, hours by default) holds the rows it wrote. Other
// instances' writes of those rows (the revocation log's last number,
// which every revocation writes) must work again within about the
// timeout: PostgreSQL ends a session idle in its transaction that long,
// which rolls back what the stalled instance wrote.
func TestStalledClientReleasesItsRows(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	p := newStallProxy(t, dsn)
	t.Cleanup(func() { p.stall.Store(false) }) // before the proxy's
	const timeout = 300 * time.Millisecond
	stalled := open(t, p.dsn+patient, postgres.Options{Timeout: timeout})
	other := open(t, dsn+patient, postgres.Options{Timeout: timeout})
	if err := put(other, "k", "before"); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		var once sync.Once
		done <- stalled.Update(context.Background(), func(tx store.Tx) error {
			if err := tx.Put("b", "k", []byte("stalled"), time.Time{}); err != nil {
				return err
			}
			p.stall.Store(true)
			once.Do(func() { close(wrote) })
			_, err := tx.Get("b", "k")
			return err
		})
	}()
	<-wrote
	start := time.Now()
	for {
		err := put(other, "k", "after")
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Update of the row a stalled instance wrote = %v, want nil or store.ErrUnavailable", err)
		}
		if time.Since(start) > 10*timeout {
			t.Fatalf("Update of the row a stalled instance wrote still fails after %v: %v", time.Since(start), err)
		}
	}
	if err := <-done; !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("the stalled instance's Update = %v, want store.ErrUnavailable", err)
	}
	p.stall.Store(false)
	if v, err := get(other, "k"); err != nil || v != "after" {
		t.Errorf("Get = %q, %v, want after, nil (the stalled transaction wrote nothing)", v, err)
	}
}

// stallProxy passes a Unix socket's connections through to the test
// server's, and holds every byte while stall is set. With cutRequest
// (cutReply) set, the next bytes the client (the server) sends end their
// connection instead of passing, as a lost network would, once; and with
// stallAfterCut, stall is set then.
type stallProxy struct {
	dsn                  string
	stall                atomic.Bool
	cutRequest, cutReply atomic.Bool
	stallAfterCut        atomic.Bool
}

func newStallProxy(t *testing.T, dsn string) *stallProxy {
	t.Helper()
	fields := map[string]string{}
	for _, f := range strings.Fields(dsn) {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	target := filepath.Join(fields["host"], ".s.PGSQL."+fields["port"])
	dir, err := os.MkdirTemp("", "stall")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL."+fields["port"]))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	p := &stallProxy{dsn: strings.Replace(dsn, "host="+fields["host"], "host="+dir, 1)}
	var conns sync.Map
	t.Cleanup(func() {
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
	})
	pass := func(dst, src net.Conn, cut *atomic.Bool) {
		defer wg.Done()
		defer dst.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			for p.stall.Load() {
				time.Sleep(10 * time.Millisecond)
			}
			if n > 0 && cut.CompareAndSwap(true, false) {
				if p.stallAfterCut.Load() {
					p.stall.Store(true)
				}
				src.Close()
				return
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					src.Close()
				}
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", target)
			if err != nil {
				c.Close()
				continue
			}
			conns.Store(c, nil)
			conns.Store(up, nil)
			wg.Add(2)
			go pass(up, c, &p.cutRequest)
			go pass(c, up, &p.cutReply)
		}
	}()
	return p
}

// TestImportOutlastsTimeout: copying a whole store (migrate-storage) is
// one transaction of many short statements, which may take longer than
// twice the timeout: it is not abandoned, only a statement that waits
// too long would be.
func TestImportOutlastsTimeout(t *testing.T) {
	// The timeout also bounds each connection attempt and statement:
	// 300 ms, as in the other tests here, leaves a loaded CI machine room
	// for those.
	const timeout = 300 * time.Millisecond
	s := open(t, pgtest.NewDatabase(t)+patient, postgres.Options{Timeout: timeout})
	n, err := s.Import(context.Background(), func(ctx context.Context, put func(bucket, key string, value []byte, expires time.Time) error) error {
		for i := range 4 {
			time.Sleep(timeout)
			if err := put("b", string(rune('a'+i)), []byte("v"), time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || n != 4 {
		t.Fatalf("Import over %v = %d, %v, want 4, nil", 4*timeout, n, err)
	}
	if v, err := get(s, "d"); err != nil || v != "v" {
		t.Fatalf("after Import: Get = %q, %v, want v, nil", v, err)
	}
}

// TestStalledRollbackBounded: a database that stops answering after a
// transaction's last statement holds neither the call nor the store's
// Close: the rollback waits at most the timeout, and the function's own
// error stays its own (review s12-fresh P1).
func TestStalledRollbackBounded(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	p := newStallProxy(t, dsn)
	const timeout = 300 * time.Millisecond
	s, err := postgres.Open(context.Background(), p.dsn+patient, postgres.Options{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	if err := put(s, "k", "v"); err != nil {
		t.Fatal(err)
	}
	errApp := errors.New("invalid_grant")
	for _, op := range []struct {
		name string
		run  func() error
		want error
	}{
		{"View", func() error {
			return s.View(context.Background(), func(tx store.Tx) error {
				_, err := tx.Get("b", "k")
				p.stall.Store(true) // the database stops answering now
				return err
			})
		}, nil},
		{"Update", func() error {
			return s.Update(context.Background(), func(tx store.Tx) error {
				if _, err := tx.Get("b", "k"); err != nil {
					return err
				}
				p.stall.Store(true)
				return errApp
			})
		}, errApp},
	} {
		done := make(chan error, 1)
		go func() { done <- op.run() }()
		select {
		case err := <-done:
			if !errors.Is(err, op.want) || op.want != nil && errors.Is(err, store.ErrUnavailable) {
				t.Errorf("%s stalled before its rollback = %v, want %v", op.name, err, op.want)
			}
		case <-time.After(3*timeout + 5*time.Second):
			p.stall.Store(false)
			t.Fatalf("%s stalled before its rollback still waits after %v, want at most about the timeout (%v) more", op.name, 3*timeout+5*time.Second, timeout)
		}
		p.stall.Store(false)
	}
	// No call holds a connection: Close returns (pgx closes a connection
	// it gave up on within its own 15 s).
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Errorf("Close still waiting 5 s after a stalled rollback")
	}
}

// TestOpenWaitsForMigration: an instance starting while another migrates
// waits for it, however much longer than the timeout that takes
// (review s12-fresh P3).
func TestOpenWaitsForMigration(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	lock, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", postgres.MigrateLock); err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	go func() { time.Sleep(time.Second); lock.Rollback(ctx); close(released) }()
	defer func() { <-released }() // before conn.Close: the connection is the goroutine's until then
	start := time.Now()
	s, err := postgres.Open(ctx, dsn+patient, postgres.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open while another instance migrates for 1 s (timeout 200 ms) = %v, want it to wait", err)
	}
	s.Close()
	if took := time.Since(start); took < time.Second {
		t.Errorf("Open returned after %v, before the other migration ended", took)
	}
}

// TestSyncStandbyCommitNotAbandoned: a commit that PostgreSQL holds for a
// synchronous standby is not abandoned at the store's timeout, which
// would answer 503 for a write that happened; it is waited for as long as
// the caller waits (review s12-fresh P2).
func TestSyncStandbyCommitNotAbandoned(t *testing.T) {
	const timeout = 200 * time.Millisecond
	s, _, _ := syncStandbyServer(t, postgres.Options{Timeout: timeout})
	const wait = 1500 * time.Millisecond
	start := time.Now() // before the deadline is set, which it is from
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "k", []byte("v"), time.Time{}) })
	took := time.Since(start)
	if errors.Is(err, store.ErrUnavailable) || took < wait {
		t.Errorf("Update waiting for an absent synchronous standby = %v after %v, want the caller's own deadline after %v (not ErrUnavailable at twice the timeout)", err, took, wait)
	}
}

// syncStandbyServer starts a server of the test's own and opens a store
// on it with opts, then makes the server's commits wait for a
// synchronous standby it does not have; it returns the store, the server
// and the DSN of the store's database.
func syncStandbyServer(t *testing.T, opts postgres.Options) (*postgres.Store, *pgtest.Server, string) {
	t.Helper()
	srv, dsn := pgtest.Own(t, pgtest.Options{Durable: true})
	s := open(t, dsn+patient, opts)
	for _, q := range []string{"ALTER SYSTEM SET synchronous_standby_names = 'standby1'", "SELECT pg_reload_conf()"} {
		if _, err := srv.Psql(dsn, q); err != nil {
			t.Fatal(err)
		}
	}
	// The server has read the setting once a new connection sees it; it
	// signalled the store's connections then, which read it before their
	// next statement.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := srv.Psql(dsn, "SHOW synchronous_standby_names")
		if err != nil {
			t.Fatal(err)
		}
		if out == "standby1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("synchronous_standby_names = %q 10 s after pg_reload_conf, want standby1", out)
		}
	}
	return s, srv, dsn
}

// TestCommitTerminated: a session ended by pg_terminate_backend (an
// operator, a failover tool) while its commit waits for a synchronous
// standby has committed on the primary (PostgreSQL warns so, and ends
// the session with FATAL 57P01): the store learns that on a new
// connection (TestCommitCutOff) and reports the write made, not failed.
func TestCommitTerminated(t *testing.T) {
	s, srv, dsn := syncStandbyServer(t, postgres.Options{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(context.Background(), func(tx store.Tx) error { return tx.Put("b", "k", []byte("v"), time.Time{}) })
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		out, err := srv.Psql(dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
		if err != nil {
			t.Fatal(err)
		}
		if out == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no commit waited for the standby within 10 s")
		}
	}
	if err := <-done; err != nil {
		t.Errorf("Update whose session was ended waiting for the standby = %v, want nil (it committed)", err)
	}
	if v, err := get(s, "k"); err != nil || v != "v" {
		t.Errorf("Get = %q, %v; want v", v, err)
	}
}

// TestStalledPurgeEndsAtTimeout: purging against a database that stopped
// answering gives up after twice the timeout (store.ErrUnavailable), and
// keeps no connection of the pool.
func TestStalledPurgeEndsAtTimeout(t *testing.T) {
	p := newStallProxy(t, pgtest.NewDatabase(t))
	const timeout = 300 * time.Millisecond
	s := open(t, p.dsn+patient, postgres.Options{Timeout: timeout})
	p.stall.Store(true)
	done := make(chan error, 1)
	start := time.Now()
	go func() { _, err := s.Purge(context.Background()); done <- err }()
	select {
	case err := <-done:
		if took := time.Since(start); !errors.Is(err, store.ErrUnavailable) || took < 2*timeout {
			t.Errorf("Purge against a stalled database = %v after %v, want store.ErrUnavailable after twice the timeout", err, took)
		}
	case <-time.After(2*timeout + 5*time.Second):
		p.stall.Store(false)
		t.Fatalf("Purge against a stalled database still waits after %v", 2*timeout+5*time.Second)
	}
	p.stall.Store(false)
}

// TestOpenAgainstSilentDatabase: Open against a server that accepts the
// connection and never answers fails after the timeout rather than
// waiting for the caller, unless the DSN sets connect_timeout itself.
func TestOpenAgainstSilentDatabase(t *testing.T) {
	p := newStallProxy(t, pgtest.NewDatabase(t))
	p.stall.Store(true)
	defer p.stall.Store(false)
	const timeout = 300 * time.Millisecond
	for _, tt := range []struct {
		dsn  string
		want time.Duration
	}{
		{p.dsn, timeout},
		{p.dsn + " connect_timeout=1", time.Second},
	} {
		// A bound the test keeps, so that an Open that waits for good
		// fails the test instead of hanging it.
		ctx, cancel := context.WithTimeout(context.Background(), tt.want+5*time.Second)
		start := time.Now()
		s, err := postgres.Open(ctx, tt.dsn, postgres.Options{Timeout: timeout})
		took := time.Since(start)
		cancel()
		if err == nil {
			s.Close()
		}
		if err == nil || took < tt.want || took >= tt.want+5*time.Second {
			t.Errorf("Open(%q) against a silent server = %v after %v, want an error after about %v", tt.dsn, err, took, tt.want)
		}
	}
}

// TestIdleTransactionEndedIsUnavailable: a transaction whose instance
// went quiet between two statements longer than the timeout (descheduled
// on a starved machine, a long pause) is ended by PostgreSQL
// (idle_in_transaction_session_timeout); the statement after the pause
// fails as one that waited too long does, with store.ErrUnavailable (503,
// try again), not as an internal error.
func TestIdleTransactionEndedIsUnavailable(t *testing.T) {
	const timeout = 300 * time.Millisecond
	s := open(t, pgtest.NewDatabase(t)+patient, postgres.Options{Timeout: timeout})
	err := s.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.Put("b", "k", []byte("v"), time.Time{}); err != nil {
			return err
		}
		time.Sleep(3 * timeout / 2) // within the 2×timeout the attempt is given
		_, err := tx.Get("b", "k")
		return err
	})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Update idle past the timeout = %v, want store.ErrUnavailable", err)
	}
	if err := put(s, "k", "after"); err != nil {
		t.Errorf("the next Update = %v, want nil (a connection of the pool's)", err)
	}
}

// TestCommitCutOff: a commit whose connection is lost (the network, a
// failover, pg_terminate_backend) has an outcome the client did not
// hear; the store asks the database on a new connection
// (pg_xact_status) and answers it: nil when the commit landed, so that a
// refresh token rotated in it is handed out rather than reported failed
// (the client's retry with the old one was then taken for reuse, which
// revokes the grant), and store.ErrUnavailable (503, try again) when it
// did not. It answered an error that was neither, 500, either way. A
// database that cannot be asked within twice the timeout leaves the
// outcome unknown: ErrUnavailable, though the write may have landed.
func TestCommitCutOff(t *testing.T) {
	for _, tt := range []struct {
		name   string
		cut    func(p *stallProxy)
		landed bool
		err    bool
	}{
		{"COMMIT lost on the way", func(p *stallProxy) { p.cutRequest.Store(true) }, false, true},
		{"COMMIT's answer lost", func(p *stallProxy) { p.cutReply.Store(true) }, true, false},
		{"COMMIT's answer lost, the database then unreachable", func(p *stallProxy) {
			p.stallAfterCut.Store(true)
			p.cutReply.Store(true)
		}, true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newStallProxy(t, pgtest.NewDatabase(t))
			t.Cleanup(func() { p.stall.Store(false) }) // before the proxy's
			s := open(t, p.dsn+patient, postgres.Options{Timeout: time.Second})
			if err := put(s, "k", "before"); err != nil {
				t.Fatal(err)
			}
			runs := 0
			err := s.Update(context.Background(), func(tx store.Tx) error {
				runs++
				if err := tx.Put("b", "k", []byte("cut"), time.Time{}); err != nil {
					return err
				}
				tt.cut(p) // the next message is the COMMIT, or its answer
				return nil
			})
			if tt.err && !errors.Is(err, store.ErrUnavailable) || !tt.err && err != nil {
				t.Errorf("Update = %v, want store.ErrUnavailable: %v", err, tt.err)
			}
			p.stall.Store(false)
			want := "before"
			if tt.landed {
				want = "cut"
			}
			if runs != 1 {
				t.Errorf("fn ran %d times, want once (the outcome is the first run's)", runs)
			}
			if v, err := get(s, "k"); err != nil || v != want {
				t.Errorf("Get after the cut = %q, %v; want %q", v, err, want)
			}
		})
	}
}

// TestCommitLostInCrashNotTakenForAnother: a database that crashes while
// a transaction ends, before any of its write-ahead log is on disk (here
// a server stopped with -m immediate between its last statement and its
// COMMIT, the log writer held off), has lost the transaction, and after
// the restart gives its id to the next transaction that writes (another
// instance's). The store, asking txid_status on a new connection
// (TestCommitCutOff), found that one committed and reported the lost
// write made: a refresh token handed out that was never stored, a user's
// removal or a key's withdrawal answered done and not done. It now
// checks that the rows the transaction wrote hold what it wrote, as its
// own, and else answers that the outcome is unknown (503).
func TestCommitLostInCrashNotTakenForAnother(t *testing.T) {
	srv, dsn := pgtest.Own(t, pgtest.Options{Durable: true})
	psql := func(q string) string {
		t.Helper()
		out, err := srv.Psql(dsn, q)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// No log written but at commits; no transaction of the server's own
	// takes the id first.
	psql("ALTER SYSTEM SET wal_writer_delay = '10s'")
	psql("ALTER SYSTEM SET autovacuum = off")
	psql("SELECT pg_reload_conf()")
	s := open(t, dsn+patient, postgres.Options{Timeout: 5 * time.Second})
	if err := put(s, "k", "before"); err != nil {
		t.Fatal(err)
	}
	psql("CHECKPOINT")
	var ours string
	other := make(chan string, 1)
	err := s.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.Put("b", "k", []byte("lost"), time.Time{}); err != nil {
			return err
		}
		ours = psql("SELECT backend_xid FROM pg_stat_activity WHERE datname = current_database() AND backend_xid IS NOT NULL")
		if err := srv.Exec("pg_ctl", "-D", srv.DataDir(), "-m", "immediate", "-w", "stop"); err != nil {
			t.Error(err)
		}
		go func() { // another instance, writing as soon as the database is back
			var xid int64
			err := srv.Resume()
			if err == nil {
				ctx := context.Background()
				var c *pgx.Conn
				if c, err = pgx.Connect(ctx, dsn); err == nil {
					defer c.Close(ctx)
					err = c.QueryRow(ctx, `INSERT INTO mcp_auth_entries (bucket, key, value) VALUES ('b', 'other', 'v') RETURNING txid_current() % 4294967296`).Scan(&xid)
				}
			}
			if err != nil {
				t.Error(err)
			}
			other <- strconv.FormatInt(xid, 10)
		}()
		return nil
	})
	if o := <-other; o != ours {
		t.Fatalf("the transaction after the restart has id %s, the one lost %s: the crash kept the lost one's log", o, ours)
	}
	v, gerr := get(s, "k")
	if gerr != nil || v != "before" {
		t.Fatalf("Get after the crash = %q, %v; want before (the write was lost)", v, gerr)
	}
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Update whose write the crash lost = %v, want store.ErrUnavailable (the id's transaction after the restart is another's)", err)
	}
}

// TestCommitDurableWhereSynchronousCommitOff: an Update returns once its
// commit is on the database's disk (store.Store's contract: a write a
// client was told about survives a crash), whatever synchronous_commit
// the server, the database or the role set. With it off (a tuning
// PostgreSQL's documentation offers for speed) PostgreSQL answers a
// COMMIT before its log is written, and a crash within the WAL writer's
// delay lost writes the store had reported made: a revocation, a key's
// withdrawal, a code's redemption (its code usable again).
func TestCommitDurableWhereSynchronousCommitOff(t *testing.T) {
	srv, dsn := pgtest.Own(t, pgtest.Options{Durable: true})
	psql := func(q string) string {
		t.Helper()
		out, err := srv.Psql(dsn, q)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// No log written but at commits that wait for it.
	psql("ALTER SYSTEM SET wal_writer_delay = '10s'")
	psql("ALTER SYSTEM SET autovacuum = off")
	psql("ALTER SYSTEM SET synchronous_commit = off")
	psql("SELECT pg_reload_conf()")
	s := open(t, dsn+patient, postgres.Options{Timeout: 5 * time.Second})
	if err := put(s, "k", "before"); err != nil {
		t.Fatal(err)
	}
	psql("CHECKPOINT")
	if err := put(s, "k", "after"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec("pg_ctl", "-D", srv.DataDir(), "-m", "immediate", "-w", "stop"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	// The pool's connections from before the crash fail once each
	// (broken pipe) and are dropped: read until one that is new answers.
	v, err := get(s, "k")
	for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		v, err = get(s, "k")
	}
	if err != nil || v != "after" {
		t.Errorf("Get after a crash = %q, %v; want after (the write Update reported made)", v, err)
	}
	// The store's own writes that need no durability (store.NoSyncUpdater)
	// still do not wait for the disk: not asserted, a crash would tell.
}

// TestSynchronousCommitOffWaitsForNoStandby: where synchronous_commit is
// off and synchronous_standby_names names a standby (here one that is
// not connected), an Update's commit waits for the database's own disk
// (synchronous_commit local) and survives a crash, but not for the
// standby, which the setting kept the store's commits from waiting for
// before the store turned it on for its writes: set `on`, every write
// waited for the standby, and an instance upgraded beside one that was
// down neither started nor wrote anything.
func TestSynchronousCommitOffWaitsForNoStandby(t *testing.T) {
	srv, dsn := pgtest.Own(t, pgtest.Options{Durable: true})
	psql := func(q string) string {
		t.Helper()
		out, err := srv.Psql(dsn, q)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	psql("ALTER SYSTEM SET wal_writer_delay = '10s'")
	psql("ALTER SYSTEM SET autovacuum = off")
	psql("ALTER SYSTEM SET synchronous_commit = off")
	psql("SELECT pg_reload_conf()")
	s := open(t, dsn+patient, postgres.Options{Timeout: 5 * time.Second})
	if err := put(s, "k", "before"); err != nil {
		t.Fatal(err)
	}
	psql("CHECKPOINT")
	// The store's connections read the setting before their next
	// statement once a new connection sees it (syncStandbyServer).
	psql("ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
	psql("SELECT pg_reload_conf()")
	for deadline := time.Now().Add(10 * time.Second); psql("SHOW synchronous_standby_names") != "standby1"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("synchronous_standby_names not standby1 10 s after pg_reload_conf")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "k", []byte("after"), time.Time{}) }); err != nil {
		t.Fatalf("Update with synchronous_commit off and a synchronous standby absent = %v after %v, want nil without waiting for the standby", err, time.Since(start))
	}
	if err := srv.Exec("pg_ctl", "-D", srv.DataDir(), "-m", "immediate", "-w", "stop"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	v, err := get(s, "k")
	for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		v, err = get(s, "k")
	}
	if err != nil || v != "after" {
		t.Errorf("Get after a crash = %q, %v; want after (the write Update reported made)", v, err)
	}
}
