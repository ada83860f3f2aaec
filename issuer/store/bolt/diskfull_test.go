//go:build linux

package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
)

// smallFilesystem mounts a tmpfs of size bytes on a new directory and
// returns it; the test is skipped where mounting is not allowed (not
// root).
func smallFilesystem(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("mount a tmpfs for a full disk: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes a file until the filesystem of dir is full, and returns its
// path: removing it frees the space.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return path
		}
	}
}

// TestDiskFull: a commit the disk has no room for is store.ErrUnavailable
// (the issuer's 503: the write may be tried again once there is room),
// writes nothing, and leaves the store working: what was committed
// before reads back, the next commit once there is room succeeds, and the
// file passes bbolt's check when reopened.
func TestDiskFull(t *testing.T) {
	dir := smallFilesystem(t, 1<<20)
	path := filepath.Join(dir, "store.db")
	ctx := context.Background()
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	value := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 16<<10) }
	put := func(key string, i int) error {
		return s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", key, value(i), time.Time{}) })
	}
	if err := put("before", 1); err != nil {
		t.Fatal(err)
	}
	filler := fill(t, dir)

	// The file has free pages left: write until a commit needs more.
	var failed error
	written := 0
	for i := range 1000 {
		if failed = put(fmt.Sprintf("full%03d", i), 2); failed != nil {
			break
		}
		written++
	}
	if failed == nil {
		t.Fatal("1000 commits of 16 KiB on a full 1 MiB filesystem all succeeded")
	}
	if !errors.Is(failed, store.ErrUnavailable) || !errors.Is(failed, syscall.ENOSPC) {
		t.Fatalf("Update on a full disk = %v, want store.ErrUnavailable wrapping ENOSPC", failed)
	}
	check := func(when string) {
		t.Helper()
		err := s.View(ctx, func(tx store.Tx) error {
			if got, err := tx.Get("b", "before"); err != nil || !bytes.Equal(got, value(1)) {
				return fmt.Errorf("Get(before) = %d bytes, %v; want the committed value", len(got), err)
			}
			if _, err := tx.Get("b", fmt.Sprintf("full%03d", written)); !errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("Get of the failed write = %v, want ErrNotFound", err)
			}
			for i := range written {
				if _, err := tx.Get("b", fmt.Sprintf("full%03d", i)); err != nil {
					return fmt.Errorf("Get of commit %d before the disk filled: %v", i, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
	}
	check("disk full")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := put("after", 3); err != nil {
		t.Fatalf("Update once there is room again = %v, want nil", err)
	}
	check("room again")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bolt.Check(path); err != nil {
		t.Fatalf("Check after the disk was full: %v", err)
	}
	s, err = bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("reopened")
}

// TestOpenOnFullDisk: a new store that the disk has no room for is an
// error at open that leaves nothing behind, so the next open, once there
// is room, makes the store: bbolt wrote a new file's pages in place, and
// one cut off part way (8 KiB of 16) was refused by every later open as
// truncated until someone removed it.
func TestOpenOnFullDisk(t *testing.T) {
	dir := smallFilesystem(t, 1<<20)
	path := filepath.Join(dir, "store.db")
	filler := fill(t, dir)
	// Room for two of the four pages a new store writes first.
	if err := os.Truncate(filler, 0); err != nil {
		t.Fatal(err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		t.Fatal(err)
	}
	keep := int64(2 * os.Getpagesize())
	if err := os.WriteFile(filler, make([]byte, int64(fs.Bavail)*fs.Bsize-keep), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bolt.Open(path, bolt.Options{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Open of a new store on a full disk = %v, want ENOSPC", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "filler" {
			info, _ := e.Info()
			t.Errorf("left after the failed open: %s (%d bytes)", e.Name(), info.Size())
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open once there is room = %v, want a new store", err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "k", []byte("v"), time.Time{}) }); err != nil {
		t.Fatal(err)
	}
}
