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
