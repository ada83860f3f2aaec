package caddymodule

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

func newContext(t *testing.T) caddy.Context {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx
}

// within fails the test if fn does not return in time: a second bbolt open
// of a locked file would block instead of sharing the handle.
func within(t *testing.T, d time.Duration, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
		return nil
	}
}

func put(st store.Store, key string) error {
	return st.Update(context.Background(), func(tx store.Tx) error {
		return tx.Put("test", key, []byte("v"), time.Time{})
	})
}

func TestBoltStorageSharedAcrossProvisions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "mcp-auth.db")
	ctx := newContext(t)

	// The old and the new config of a reload, the second naming the same
	// file by a relative path.
	old := &BoltStorage{Path: path}
	if err := within(t, 5*time.Second, "first Provision", func() error { return old.Provision(ctx) }); err != nil {
		t.Fatalf("Provision(old) = %v", err)
	}
	t.Chdir(dir)
	cur := &BoltStorage{Path: filepath.Join("sub", "mcp-auth.db")}
	if err := within(t, 5*time.Second, "second Provision", func() error { return cur.Provision(ctx) }); err != nil {
		t.Fatalf("Provision(new) = %v", err)
	}
	if old.Store() != cur.Store() {
		t.Fatalf("Store() differs between two provisions of %s, want the shared handle", path)
	}
	if refs, ok := stores.References(cur.key); !ok || refs != 2 {
		t.Errorf("References(%s) = %d, %v, want 2, true", cur.key, refs, ok)
	}

	// The old config goes away; the new one keeps working.
	if err := old.Cleanup(); err != nil {
		t.Fatalf("Cleanup(old) = %v", err)
	}
	if err := put(cur.Store(), "after-old-cleanup"); err != nil {
		t.Fatalf("Update after the old config's Cleanup = %v, want nil", err)
	}

	// The last user closes the file, and a later config can open it again.
	st := cur.Store()
	if err := cur.Cleanup(); err != nil {
		t.Fatalf("Cleanup(new) = %v", err)
	}
	if err := put(st, "after-close"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after the last Cleanup = %v, want %v", err, store.ErrClosed)
	}
	again := &BoltStorage{Path: path}
	if err := within(t, 5*time.Second, "Provision after close", func() error { return again.Provision(ctx) }); err != nil {
		t.Fatalf("Provision after close = %v", err)
	}
	defer again.Cleanup()
	err := again.Store().View(context.Background(), func(tx store.Tx) error {
		_, err := tx.Get("test", "after-old-cleanup")
		return err
	})
	if err != nil {
		t.Errorf("Get(after-old-cleanup) after reopen = %v, want the value written before", err)
	}
}

func TestBoltStorageDistinctPaths(t *testing.T) {
	ctx := newContext(t)
	a := &BoltStorage{Path: filepath.Join(t.TempDir(), "a.db")}
	b := &BoltStorage{Path: filepath.Join(t.TempDir(), "b.db")}
	for _, s := range []*BoltStorage{a, b} {
		if err := s.Provision(ctx); err != nil {
			t.Fatalf("Provision(%s) = %v", s.Path, err)
		}
		defer s.Cleanup()
	}
	if a.Store() == b.Store() {
		t.Errorf("Store() is shared between %s and %s, want separate handles", a.Path, b.Path)
	}
}

func TestBoltStorageDefaultPath(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	s := &BoltStorage{}
	if err := s.Provision(newContext(t)); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	defer s.Cleanup()
	want := filepath.Join(data, "caddy", "mcp-auth", "mcp-auth.db")
	if _, err := os.Stat(want); err != nil {
		t.Errorf("default database %s: %v", want, err)
	}
}

func TestMemoryStorageShared(t *testing.T) {
	ctx := newContext(t)
	old, cur := new(MemoryStorage), new(MemoryStorage)
	for _, m := range []*MemoryStorage{old, cur} {
		if err := m.Provision(ctx); err != nil {
			t.Fatalf("Provision() = %v", err)
		}
	}
	if old.Store() != cur.Store() {
		t.Fatal("Store() differs between two provisions, want the shared store")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := put(cur.Store(), "k"); err != nil {
		t.Errorf("Update after the old config's Cleanup = %v, want nil", err)
	}
	st := cur.Store()
	if err := cur.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := put(st, "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after the last Cleanup = %v, want %v", err, store.ErrClosed)
	}
}
