package bolt_test

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Options{Now: now})
		if err != nil {
			t.Fatalf("Open() = %v, want nil", err)
		}
		return s
	})
}

// rawView runs fn in a bbolt read transaction on the closed store file at
// path, to look beneath the Store.
func rawView(t *testing.T, path string, fn func(tx *bbolt.Tx)) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("bbolt.Open(%s) = %v, want nil", path, err)
	}
	defer db.Close()
	if err := db.View(func(tx *bbolt.Tx) error { fn(tx); return nil }); err != nil {
		t.Fatalf("bbolt View = %v, want nil", err)
	}
}

// open opens path and closes it at the end of the test.
func open(t *testing.T, path string, opts bolt.Options) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s) = %v, want nil", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	s := open(t, path, bolt.Options{Now: clock})
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Put("b", "forever", []byte("v1"), time.Time{}); err != nil {
			return err
		}
		return tx.Put("b", "hour", []byte("v2"), now.Add(time.Hour))
	})
	if err != nil {
		t.Fatalf("Update = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}

	// Expiry is kept in the file, not in memory.
	now = now.Add(30 * time.Minute)
	s = open(t, path, bolt.Options{Now: clock})
	got := map[string]string{}
	err = s.View(ctx, func(tx store.Tx) error {
		return tx.List("b", "", func(k string, v []byte) error { got[k] = string(v); return nil })
	})
	if err != nil || len(got) != 2 || got["forever"] != "v1" || got["hour"] != "v2" {
		t.Fatalf("List after reopen = %v, %v, want forever=v1 hour=v2", got, err)
	}
	now = now.Add(30 * time.Minute)
	err = s.View(ctx, func(tx store.Tx) error { _, err := tx.Get("b", "hour"); return err })
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(hour) after its expiry = %v, want ErrNotFound", err)
	}
}

// TestFormat pins the documented on-disk layout: bucket per bucket, value
// = 8-byte big-endian Unix-nano expiry (0 = never) + value.
func TestFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	exp := time.Date(2030, 1, 1, 0, 0, 0, 123, time.UTC)
	s := open(t, path, bolt.Options{})
	err := s.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.Put("clients", "never", []byte("abc"), time.Time{}); err != nil {
			return err
		}
		return tx.Put("clients", "exp", []byte("xyz"), exp)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	rawView(t, path, func(tx *bbolt.Tx) {
		b := tx.Bucket([]byte("clients"))
		if b == nil {
			t.Fatalf("bucket clients missing")
		}
		tests := []struct {
			key     string
			expires uint64
			value   string
		}{
			{"never", 0, "abc"},
			{"exp", uint64(exp.UnixNano()), "xyz"},
		}
		for _, tt := range tests {
			raw := b.Get([]byte(tt.key))
			if len(raw) != 8+len(tt.value) {
				t.Fatalf("raw %s = %x, want 8-byte header + %q", tt.key, raw, tt.value)
			}
			if got := binary.BigEndian.Uint64(raw); got != tt.expires {
				t.Errorf("raw %s expiry = %d, want %d", tt.key, got, tt.expires)
			}
			if got := string(raw[8:]); got != tt.value {
				t.Errorf("raw %s value = %q, want %q", tt.key, got, tt.value)
			}
		}
	})
}

// TestCorrupt: a value too short for its header is an error, not a miss
// (fail closed: "not found" could let a revoked token pass).
func TestCorrupt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		return b.Put([]byte("short"), []byte("1234567"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := open(t, path, bolt.Options{})
	ops := []struct {
		name string
		fn   func() error
	}{
		{"Get", func() error {
			return s.View(ctx, func(tx store.Tx) error { _, err := tx.Get("b", "short"); return err })
		}},
		{"Create", func() error {
			return s.Update(ctx, func(tx store.Tx) error { return tx.Create("b", "short", nil, time.Time{}) })
		}},
		{"List", func() error {
			return s.View(ctx, func(tx store.Tx) error {
				return tx.List("b", "", func(string, []byte) error { return nil })
			})
		}},
		{"Purge", func() error { _, err := s.Purge(ctx); return err }},
	}
	for _, op := range ops {
		err := op.fn()
		if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("%s on a corrupt value = %v, want a corruption error", op.name, err)
		}
	}
	// Put replaces the corrupt value.
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "short", []byte("ok"), time.Time{}) }); err != nil {
		t.Fatalf("Put over a corrupt value = %v, want nil", err)
	}
}

// TestDoubleOpen: bbolt's file lock also excludes a second open in the same
// process; Open must fail after the timeout instead of hanging.
func TestDoubleOpen(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
	}{
		{"explicit timeout", 50 * time.Millisecond},
		{"default timeout", 0},
	}
	path := filepath.Join(t.TempDir(), "store.db")
	first := open(t, path, bolt.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				s, err := bolt.Open(path, bolt.Options{Timeout: tt.timeout})
				if err == nil {
					_ = s.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, bolterrors.ErrTimeout) {
					t.Fatalf("second Open(%s) = %v, want ErrTimeout", path, err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("second Open(%s) still blocked after 30s, want an error after %v", path, tt.timeout)
			}
		})
	}
	// Once the first is closed the file opens again.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	open(t, path, bolt.Options{Timeout: 50 * time.Millisecond})
}

func TestOpenError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing-dir", "store.db")
	if s, err := bolt.Open(path, bolt.Options{}); err == nil {
		_ = s.Close()
		t.Fatalf("Open(%s) = nil error, want an error", path)
	}
}
