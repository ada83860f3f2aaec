package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
)

// getReserved reads b/k through s's ViewReserved.
func getReserved(s *postgres.Store) (string, error) {
	var v []byte
	err := s.ViewReserved(context.Background(), func(tx store.Tx) error {
		var err error
		v, err = tx.Get("b", "k")
		return err
	})
	return string(v), err
}

// reservedPID is the server process of s's reserved connection, "" when
// there is none.
func reservedPID(t *testing.T, srv *pgtest.Server, dsn string) string {
	t.Helper()
	pid, err := srv.Backend(dsn, postgres.ReservedApplicationName)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestViewReservedPoolHeld: with every connection of the pool held by
// open transactions, View waits for one, and ViewReserved reads at once
// on its own connection, which Close closes.
func TestViewReservedPoolHeld(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s, err := postgres.Open(context.Background(), dsn+" pool_max_conns=1", postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := put(s, "k", "v"); err != nil {
		t.Fatal(err)
	}
	release, held := make(chan struct{}), make(chan struct{})
	var holder sync.WaitGroup
	holder.Go(func() {
		_ = s.View(context.Background(), func(store.Tx) error {
			close(held)
			<-release
			return nil
		})
	})
	<-held
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.View(ctx, func(store.Tx) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("View with the pool's one connection held = %v, want context.DeadlineExceeded (waiting for it)", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var v []byte
	if err := s.ViewReserved(ctx, func(tx store.Tx) error {
		var err error
		v, err = tx.Get("b", "k")
		return err
	}); err != nil || string(v) != "v" {
		t.Errorf("ViewReserved with the pool's one connection held = %q, %v, want v, nil", v, err)
	}
	close(release)
	holder.Wait()

	if reservedPID(t, pgtest.Shared(t), dsn) == "" {
		t.Fatal("no reserved connection in pg_stat_activity after ViewReserved")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if pid := reservedPID(t, pgtest.Shared(t), dsn); pid != "" {
		t.Errorf("reserved connection %s still open after Close", pid)
	}
	if _, err := getReserved(s); !errors.Is(err, store.ErrClosed) {
		t.Errorf("ViewReserved after Close = %v, want store.ErrClosed", err)
	}
}

// TestViewReservedReconnects: the reserved connection, lost to
// pg_terminate_backend or to a database restart, is replaced at the next
// ViewReserved, which reads; one called while the database is down fails
// with store.ErrUnavailable.
func TestViewReservedReconnects(t *testing.T) {
	srv, dsn := pgtest.Own(t, pgtest.Options{})
	s := open(t, dsn+patient, postgres.Options{})
	if err := put(s, "k", "v"); err != nil {
		t.Fatal(err)
	}
	read := func(when string) {
		t.Helper()
		if v, err := getReserved(s); err != nil || v != "v" {
			t.Fatalf("ViewReserved %s = %q, %v, want v, nil", when, v, err)
		}
	}
	read("first")
	pid := reservedPID(t, srv, dsn)
	if _, err := srv.Psql(dsn, "SELECT pg_terminate_backend("+pid+")"); err != nil {
		t.Fatal(err)
	}
	read("after its connection was terminated")
	if again := reservedPID(t, srv, dsn); again == "" || again == pid {
		t.Errorf("reserved connection after termination = %q, want a new one (was %s)", again, pid)
	}

	if err := srv.Halt(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	read("after a restart")

	if err := srv.Halt(); err != nil {
		t.Fatal(err)
	}
	if _, err := getReserved(s); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("ViewReserved with the database down = %v, want store.ErrUnavailable", err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	read("after the database came back")
}

// TestViewReservedPingStalled: with the reserved connection open and the
// database then not answering, the ping before the read hangs; it is
// bounded as the read is (store.ErrUnavailable within twice the timeout),
// and once the database answers again the next ViewReserved reads.
func TestViewReservedPingStalled(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	p := newStallProxy(t, dsn)
	const timeout = 300 * time.Millisecond
	s := open(t, p.dsn+patient, postgres.Options{Timeout: timeout})
	if err := put(s, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if v, err := getReserved(s); err != nil || v != "v" {
		t.Fatalf("ViewReserved = %q, %v, want v, nil", v, err)
	}
	p.stall.Store(true)
	for range 2 {
		start := time.Now()
		_, err := getReserved(s)
		took := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("ViewReserved against a stalled database = %v, want store.ErrUnavailable", err)
		}
		if took < timeout || took > 2*timeout+2*time.Second {
			t.Errorf("ViewReserved against a stalled database took %v, want between the timeout and twice it", took)
		}
	}
	p.stall.Store(false)
	if v, err := getReserved(s); err != nil || v != "v" {
		t.Errorf("ViewReserved after the stall = %q, %v, want v, nil", v, err)
	}
}

// TestConnectionsPoolPlusTwo: an instance holds at most pool_max_conns +
// 2 connections (README, Running on PostgreSQL): with the pool's every
// connection held, a View waiting for one, Watch listening and ViewReserved
// called from many goroutines at once, the database sees the pool's, the
// LISTEN one and one reserved, and after Close none.
func TestConnectionsPoolPlusTwo(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := pgtest.NewDatabase(t)
	const poolMax = 2
	s, err := postgres.Open(context.Background(), dsn+" pool_max_conns="+strconv.Itoa(poolMax), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := put(s, "k", "v"); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		t.Helper()
		out, err := srv.Psql(dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(out)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	listening := make(chan struct{}, 1)
	wg.Go(func() {
		s.Watch(ctx, []string{"t"}, func(string) {
			select {
			case listening <- struct{}{}:
			default:
			}
		})
	})
	<-listening
	release := make(chan struct{})
	var releaseOnce sync.Once
	stop := func() { releaseOnce.Do(func() { close(release); cancel(); wg.Wait() }) }
	defer stop() // before Close, which waits for the held connections
	var held sync.WaitGroup
	held.Add(poolMax + 1)
	for range poolMax + 1 {
		wg.Go(func() {
			// The last one waits for a connection, which the pool does
			// not open beyond pool_max_conns.
			held.Done()
			_ = s.View(ctx, func(store.Tx) error { <-release; return nil })
		})
	}
	held.Wait()
	var readers sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		readers.Go(func() {
			if v, err := getReserved(s); err != nil || v != "v" {
				errs <- fmt.Errorf("ViewReserved = %q, %v, want v, nil", v, err)
			}
		})
	}
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n := count(); n != poolMax+2; n = count() {
		if n > poolMax+2 || time.Now().After(deadline) {
			t.Fatalf("connections = %d, want pool_max_conns + 2 = %d", n, poolMax+2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 0 {
		t.Errorf("connections after Close = %d, want 0", n)
	}
}
