package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
)

// TestNotify: Watch on one store gets, for its topics only, what another
// store's transactions notified, once they commit: a transaction that
// rolls back (or a read-only one) notifies nothing. Watch first reports
// every topic, for what it missed before it listened.
func TestNotify(t *testing.T) {
	if postgres.MinListenBackoff != 100*time.Millisecond || postgres.MaxListenBackoff != 5*time.Second {
		t.Fatalf("listen backoff %v to %v; README (Running several instances) says 0.1 s to 5 s", postgres.MinListenBackoff, postgres.MaxListenBackoff)
	}
	dsn := pgtest.NewDatabase(t)
	writer, watcher := open(t, dsn, postgres.Options{}), open(t, dsn, postgres.Options{})
	got := make(chan string, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watcher.Watch(ctx, []string{"a", "b"}, func(topic string) { got <- topic })
	}()
	defer func() { cancel(); <-done }()
	next := func() string {
		t.Helper()
		select {
		case topic := <-got:
			return topic
		case <-time.After(10 * time.Second):
			t.Fatal("no notification within 10s")
			return ""
		}
	}
	if first := []string{next(), next()}; first[0] != "a" || first[1] != "b" {
		t.Fatalf("topics on listening = %v, want [a b]", first)
	}

	notify := func(tx store.Tx, topic string) error { return tx.(store.Notifier).Notify(topic) }
	errRollback := errors.New("roll back")
	if err := writer.Update(ctx, func(tx store.Tx) error {
		if err := notify(tx, "a"); err != nil {
			return err
		}
		return errRollback
	}); !errors.Is(err, errRollback) {
		t.Fatalf("Update() = %v, want %v", err, errRollback)
	}
	if err := writer.View(ctx, func(tx store.Tx) error { return notify(tx, "a") }); err == nil {
		t.Error("Notify() in View = nil, want an error")
	}
	if err := writer.Update(ctx, func(tx store.Tx) error { return notify(tx, "other") }); err != nil {
		t.Fatal(err)
	}
	if err := writer.Update(ctx, func(tx store.Tx) error {
		if err := notify(tx, "b"); err != nil {
			return err
		}
		return notify(tx, "b") // merged with the first
	}); err != nil {
		t.Fatal(err)
	}
	if topic := next(); topic != "b" {
		t.Fatalf("notification = %q, want b (nothing from the rollback, the view or another topic)", topic)
	}
	select {
	case topic := <-got:
		t.Errorf("further notification %q, want none", topic)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestCloseEndsWatch: Close ends a Watch whose context goes on (a caller
// that closes the store first, or never ends the context), with its
// LISTEN connection, and waits for it: after Close the database sees no
// session of the store, and a Watch called after Close returns at once.
func TestCloseEndsWatch(t *testing.T) {
	srv := pgtest.Shared(t)
	dsn := pgtest.NewDatabase(t)
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sessions := func() string {
		t.Helper()
		out, err := srv.Psql(dsn, "SELECT count(*) FILTER (WHERE application_name = '"+postgres.ListenApplicationName+"') || ' ' || count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	listening := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Watch(context.Background(), []string{"t"}, func(string) {
			select {
			case listening <- struct{}{}:
			default:
			}
		})
	}()
	<-listening
	if got := sessions(); got[:2] != "1 " {
		t.Fatalf("LISTEN sessions, all sessions = %s, want 1 LISTEN", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch still running 5s after Close")
	}
	got := sessions()
	for deadline := time.Now().Add(5 * time.Second); got != "0 0" && time.Now().Before(deadline); got = sessions() {
		time.Sleep(20 * time.Millisecond) // a backend ends just after its client went
	}
	if got != "0 0" {
		t.Errorf("LISTEN sessions, all sessions after Close = %s, want 0 0", got)
	}

	returned := make(chan struct{})
	go func() {
		defer close(returned)
		s.Watch(context.Background(), []string{"t"}, func(string) { t.Error("Watch after Close listened") })
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch after Close still running after 5s")
	}
}
