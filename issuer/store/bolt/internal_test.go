package bolt

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// TestSyncOnCommit guards the durability promise: bbolt must fsync on
// every commit.
func TestSyncOnCommit(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "store.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.db.NoSync || s.db.NoGrowSync {
		t.Fatalf("NoSync, NoGrowSync = %v, %v, want false, false", s.db.NoSync, s.db.NoGrowSync)
	}
}

func TestExpiryNanos(t *testing.T) {
	tests := []struct {
		name    string
		expires time.Time
		want    int64
	}{
		{"never", time.Time{}, 0},
		{"ordinary", time.Unix(1700000000, 5), 1700000000*1e9 + 5},
		{"unix epoch is not never", time.Unix(0, 0), -1},
		{"before 1970", time.Unix(-10, 0), -10e9},
		{"far future clamps", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxInt64},
		{"far past clamps", time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), math.MinInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expiryNanos(tt.expires); got != tt.want {
				t.Errorf("expiryNanos(%v) = %d, want %d", tt.expires, got, tt.want)
			}
		})
	}
}

func TestLive(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name string
		exp  int64
		want bool
	}{
		{"never", 0, true},
		{"future", expiryNanos(now.Add(time.Nanosecond)), true},
		{"at expiry", expiryNanos(now), false},
		{"past", expiryNanos(now.Add(-time.Hour)), false},
		{"clamped far future", math.MaxInt64, true},
		{"clamped far past", math.MinInt64, false},
		{"epoch", -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := live(tt.exp, now); got != tt.want {
				t.Errorf("live(%d, %v) = %v, want %v", tt.exp, now, got, tt.want)
			}
		})
	}
}

// TestPurgeBatches: Purge deletes expired entries in batches of
// Options.PurgeBatch, each its own write transaction, across buckets and
// past live entries: bbolt has one writer at a time, and one transaction
// over a flood of expired sessions held every token request up for its
// whole length (300,000 entries: about a second). Writers go on between
// batches.
func TestPurgeBatches(t *testing.T) {
	if DefaultPurgeBatch != 10000 {
		t.Fatalf("DefaultPurgeBatch = %d, README (Backup and restore, Size) says 10,000 per write transaction", DefaultPurgeBatch)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := Open(filepath.Join(t.TempDir(), "store.db"), Options{Now: func() time.Time { return now }, PurgeBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	err = s.Update(ctx, func(tx store.Tx) error {
		for _, k := range []string{"a0", "a2", "a3", "a4", "a5", "a6", "b0", "b1", "b2", "b3"} {
			if err := tx.Put(k[:1], k, []byte("x"), now.Add(time.Minute)); err != nil {
				return err
			}
		}
		for _, k := range []string{"a1", "b4"} {
			if err := tx.Put(k[:1], k, []byte("x"), time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	batches := 0
	s.purgeBatchDone = func() {
		batches++
		// Between batches the store takes writes.
		if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("c", fmt.Sprint(batches), nil, time.Time{}) }); err != nil {
			t.Errorf("Update between purge batches = %v", err)
		}
	}
	if n, err := s.Purge(ctx); err != nil || n != 10 || batches != 4 {
		t.Fatalf("Purge() = %d, %v in %d batches, want 10, nil in 4", n, err, batches)
	}
	if n, err := s.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("second Purge() = %d, %v, want 0, nil", n, err)
	}
	var keys []string
	err = s.View(ctx, func(tx store.Tx) error {
		for _, b := range []string{"a", "b", "c"} {
			if err := tx.List(b, "", func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if got, want := strings.Join(keys, " "), "a1 b4 1 2 3 4 5"; err != nil || got != want {
		t.Errorf("entries after Purge = %q, %v, want %q", got, err, want)
	}
}

// TestCreateWithoutHardLinks: on a file system without hard links (some
// FUSE and network mounts answer EPERM or ENOTSUP) a new store is
// created in place, as bbolt does, rather than not at all; nothing
// temporary is left beside it.
func TestCreateWithoutHardLinks(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EPERM, syscall.ENOTSUP} {
		t.Run(errno.Error(), func(t *testing.T) {
			defer func(l func(string, string) error) { link = l }(link)
			link = func(string, string) error { return &os.LinkError{Op: "link", Err: errno} }
			dir := t.TempDir()
			s, err := Open(filepath.Join(dir, "store.db"), Options{})
			if err != nil {
				t.Fatalf("Open without hard links = %v, want a new store", err)
			}
			defer s.Close()
			if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put("b", "k", []byte("v"), time.Time{}) }); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 || entries[0].Name() != "store.db" {
				t.Errorf("directory after Open = %v, want store.db alone", entries)
			}
		})
	}
}
