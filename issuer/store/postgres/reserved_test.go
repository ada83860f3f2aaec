package postgres_test

import (
	"context"
	"errors"
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
