package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
)

// A backup taken while writers commit is one instant of the store: every
// write committed before Backup started is in it, and of each writer's
// sequence of writes it holds a prefix (no later write without the earlier
// ones). The copy opens as a store, expiries included.
func TestBackupUnderWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := open(t, filepath.Join(dir, "store.db"), bolt.Options{Now: clock})

	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Put("b", "forever", []byte("v"), time.Time{}); err != nil {
			return err
		}
		return tx.Put("b", "gone", []byte("v"), now.Add(-time.Second))
	})
	if err != nil {
		t.Fatal(err)
	}

	const writers = 4
	var (
		wg      sync.WaitGroup
		stop    = make(chan struct{})
		started = make(chan struct{}, writers)
		mu      sync.Mutex
		before  = map[string]bool{} // committed before Backup began
		backing bool
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%d-%06d", w, i)
				if err := s.Update(ctx, func(tx store.Tx) error {
					return tx.Put("seq", key, bytes.Repeat([]byte("x"), 512), time.Time{})
				}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if !backing {
					before[key] = true
				}
				mu.Unlock()
				if i == 20 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range writers {
		<-started
	}
	mu.Lock()
	backing = true
	mu.Unlock()
	var buf bytes.Buffer
	n, err := s.Backup(ctx, &buf)
	close(stop)
	wg.Wait()
	if err != nil || n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup() = %d, %v; wrote %d bytes", n, err, buf.Len())
	}

	copyPath := filepath.Join(dir, "copy.db")
	if err := os.WriteFile(copyPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bolt.Check(copyPath); err != nil {
		t.Fatalf("Check(copy) = %v", err)
	}
	c := open(t, copyPath, bolt.Options{Now: clock})
	err = c.View(ctx, func(tx store.Tx) error {
		if _, err := tx.Get("b", "forever"); err != nil {
			t.Errorf("copy: Get(forever) = %v", err)
		}
		if _, err := tx.Get("b", "gone"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("copy: Get(gone) = %v, want ErrNotFound (expired before the backup)", err)
		}
		for key := range before {
			if _, err := tx.Get("seq", key); err != nil {
				t.Errorf("copy: %s, committed before the backup: %v", key, err)
			}
		}
		next := map[int]int{} // writer -> its next expected index
		return tx.List("seq", "", func(key string, _ []byte) error {
			var w, i int
			if _, err := fmt.Sscanf(key, "w%d-%d", &w, &i); err != nil {
				return err
			}
			if i != next[w] {
				t.Errorf("copy holds %s but not w%d-%06d: not one instant", key, w, next[w])
			}
			next[w] = i + 1
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup under %d writers: %d bytes, %d writes committed before it", writers, n, len(before))
}

// A backup client that reads slowly or not at all (a suspended `caddy
// mcp-auth backup`, a slow link to another host) must not stop the store.
// Were the read transaction open while the client reads, the first commit
// that grows the file past bbolt's memory map would wait for it, and every
// later transaction, reads included, behind that commit: logins and token
// requests would hang until the client read on. The copy waits for its
// reader in a temporary file beside the store (mode 0600, gone when Backup
// returns) with the transaction ended.
func TestBackupStalledReaderDoesNotBlock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t, filepath.Join(dir, "store.db"), bolt.Options{})
	val := make([]byte, 64<<10)
	put := func(n int) error {
		return s.Update(ctx, func(tx store.Tx) error {
			return tx.Put("sessions", fmt.Sprint(n), val, time.Time{})
		})
	}
	if err := put(0); err != nil {
		t.Fatal(err)
	}

	w := stalledWriter{writing: make(chan struct{}, 1), release: make(chan struct{})}
	backed := make(chan error, 1)
	go func() {
		_, err := s.Backup(ctx, w)
		backed <- err
	}()
	defer func() {
		close(w.release)
		if err := <-backed; err != nil {
			t.Errorf("Backup() = %v", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("after Backup the store's directory holds %v, want only store.db", entries)
		}
	}()
	<-w.writing // the copy has reached its reader, which reads no more

	// The temporary copy is unlinked while the backup holds it open (on
	// Unix), so a crash leaves no copy of the store behind; where it can
	// be seen it is the owner's only.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == "store.db" {
			continue
		}
		if runtime.GOOS != "windows" {
			t.Errorf("backup's temporary file %s is in the store's directory while the backup runs, want it unlinked", e.Name())
		}
		if fi, err := e.Info(); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("backup's temporary file %s: %v, %v, want mode 0600", e.Name(), fi, err)
		}
	}

	done := make(chan error, 1)
	go func() {
		// Ordinary traffic that grows the file past its memory map.
		for n := 1; n <= 20; n++ {
			if err := put(n); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("writes blocked for 10s behind a backup whose reader stalled")
	}
}

// stalledWriter is a backup client that stopped reading: its first Write
// reports on writing, then every Write blocks until release is closed.
type stalledWriter struct{ writing, release chan struct{} }

func (w stalledWriter) Write(p []byte) (int, error) {
	select {
	case w.writing <- struct{}{}:
	default:
	}
	<-w.release
	return len(p), nil
}

func TestBackupRefused(t *testing.T) {
	s, err := bolt.Open(filepath.Join(t.TempDir(), "store.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var buf bytes.Buffer
	if _, err := s.Backup(ctx, &buf); !errors.Is(err, context.Canceled) || buf.Len() != 0 {
		t.Errorf("Backup(canceled ctx) = %v and %d bytes, want context.Canceled and none", err, buf.Len())
	}
	// bbolt keeps only the failing writer's message.
	if _, err := s.Backup(context.Background(), failWriter{}); err == nil || !strings.Contains(err.Error(), errWrite.Error()) {
		t.Errorf("Backup(failing writer) = %v, want its error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(context.Background(), &buf); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Backup(closed) = %v, want ErrClosed", err)
	}
}

var errWrite = errors.New("disk full")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := bolt.Open(good, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put("b", "k", []byte("v"), time.Time{}) }); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := s.Backup(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := bolt.Check(good); err != nil {
		t.Errorf("Check(good) = %v", err)
	}
	for name, content := range map[string][]byte{
		"empty":     nil,
		"text":      []byte(`{"error": "not a database"}`),
		"truncated": buf.Bytes()[:buf.Len()/2],
		"one page":  buf.Bytes()[:4096],
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := bolt.Check(p); err == nil {
			t.Errorf("Check(%s) = nil, want an error", name)
		}
		if name == "empty" {
			continue // an empty file opens as a new store
		}
		// Opening it as a store gives an error too, not a fault (a
		// truncated file would make bbolt read past its end: SIGBUS).
		if st, err := bolt.Open(p, bolt.Options{}); err == nil {
			st.Close()
			t.Errorf("Open(%s) = nil error, want one", name)
		}
	}
	// A damaged first meta page: bbolt recovers from the second, and the
	// size check must not refuse what bbolt opens.
	damaged := filepath.Join(dir, "meta0")
	content := bytes.Clone(buf.Bytes())
	clear(content[:64])
	if err := os.WriteFile(damaged, content, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(damaged, bolt.Options{})
	if err != nil {
		t.Fatalf("Open(first meta page damaged) = %v, want it opened from the second", err)
	}
	st.Close()
}
