package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
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

// storageModule is what the tests need of a storage module.
type storageModule interface {
	Storage
	caddy.Provisioner
	caddy.CleanerUpper
}

// open provisions s and opens its store, as a config's Provision and Start do.
func open(ctx caddy.Context, s storageModule) (store.Store, error) {
	if err := s.Provision(ctx); err != nil {
		return nil, err
	}
	return s.Open()
}

// Provision, as `caddy validate` runs it, creates no file or directory.
func TestBoltStorageProvisionTouchesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	s := &BoltStorage{Path: filepath.Join(dir, "mcp-auth.db")}
	if err := s.Provision(newContext(t)); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	if err := s.Cleanup(); err != nil {
		t.Fatalf("Cleanup() = %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Stat(%s) after Provision = %v, want it not to exist", dir, err)
	}
}

func TestBoltStorageSharedAcrossProvisions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "mcp-auth.db")
	ctx := newContext(t)

	// The old and the new config of a reload, the second naming the same
	// file by a relative path.
	old := &BoltStorage{Path: path}
	var oldSt, curSt store.Store
	if err := within(t, 5*time.Second, "first Open", func() (err error) { oldSt, err = open(ctx, old); return err }); err != nil {
		t.Fatalf("Open(old) = %v", err)
	}
	t.Chdir(dir)
	cur := &BoltStorage{Path: filepath.Join("sub", "mcp-auth.db")}
	if err := within(t, 5*time.Second, "second Open", func() (err error) { curSt, err = open(ctx, cur); return err }); err != nil {
		t.Fatalf("Open(new) = %v", err)
	}
	if oldSt != curSt {
		t.Fatalf("Store() differs between two provisions of %s, want the shared handle", path)
	}
	if refs, ok := stores.References(cur.key); !ok || refs != 2 {
		t.Errorf("References(%s) = %d, %v, want 2, true", cur.key, refs, ok)
	}

	// The old config goes away; the new one keeps working.
	if err := old.Cleanup(); err != nil {
		t.Fatalf("Cleanup(old) = %v", err)
	}
	if err := put(curSt, "after-old-cleanup"); err != nil {
		t.Fatalf("Update after the old config's Cleanup = %v, want nil", err)
	}

	// The last user closes the file, and a later config can open it again.
	if err := cur.Cleanup(); err != nil {
		t.Fatalf("Cleanup(new) = %v", err)
	}
	if err := put(curSt, "after-close"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after the last Cleanup = %v, want %v", err, store.ErrClosed)
	}
	again := &BoltStorage{Path: path}
	var st store.Store
	if err := within(t, 5*time.Second, "Open after close", func() (err error) { st, err = open(ctx, again); return err }); err != nil {
		t.Fatalf("Open after close = %v", err)
	}
	defer again.Cleanup()
	err := st.View(context.Background(), func(tx store.Tx) error {
		_, err := tx.Get("test", "after-old-cleanup")
		return err
	})
	if err != nil {
		t.Errorf("Get(after-old-cleanup) after reopen = %v, want the value written before", err)
	}
}

// A reload of the same path shares the handle when the first open made
// what the path's links point to: a link to a file not yet created, or a
// directory not yet made below a linked one. The first open's key was
// the path as it then resolved, the reload's the file it now reaches.
func TestBoltStorageLinkResolvedLater(t *testing.T) {
	for _, tt := range []struct {
		name string
		path func(t *testing.T, dir string) string
	}{
		{"link to a file not yet created", func(t *testing.T, dir string) string {
			link := filepath.Join(dir, "mcp-auth.db")
			if err := os.Symlink(filepath.Join(dir, "target.db"), link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
		{"relative link to a file not yet created", func(t *testing.T, dir string) string {
			link := filepath.Join(dir, "mcp-auth.db")
			if err := os.Symlink("target.db", link); err != nil {
				t.Fatal(err)
			}
			return link
		}},
		{"directory not yet made below a linked one", func(t *testing.T, dir string) string {
			realDir := filepath.Join(dir, "realDir")
			if err := os.Mkdir(realDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(realDir, filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "link", "new", "mcp-auth.db")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t, t.TempDir())
			ctx := newContext(t)
			old := &BoltStorage{Path: path}
			oldSt, err := open(ctx, old)
			if err != nil {
				t.Fatalf("Open(%s) = %v", path, err)
			}
			defer old.Cleanup()
			cur := &BoltStorage{Path: path}
			var curSt store.Store
			if err := within(t, 5*time.Second, "second Open", func() (err error) { curSt, err = open(ctx, cur); return err }); err != nil {
				t.Fatalf("reload Open(%s) = %v, want the shared handle", path, err)
			}
			if curSt != oldSt {
				t.Errorf("reload Open(%s) = another handle, want the shared one", path)
			}
			if err := cur.Cleanup(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A path through links that lead back below themselves (a link to a
// path inside itself, two links to each other's insides) is refused
// with the system's error at Open, in bounded time (half a second on a
// quiet machine; the 30 s limit is for a loaded one): resolving it hung Open,
// and with it Caddy's start or the reload, for ever.
func TestBoltStorageLinkLoopRefused(t *testing.T) {
	for _, tt := range []struct {
		name string
		path func(t *testing.T, dir string) string
	}{
		{"link into itself", func(t *testing.T, dir string) string {
			if err := os.Symlink(filepath.Join(dir, "a", "b"), filepath.Join(dir, "a")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "a", "mcp-auth.db")
		}},
		{"relative links into each other", func(t *testing.T, dir string) string {
			if err := os.Symlink("b/c", filepath.Join(dir, "a")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("a", filepath.Join(dir, "b")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "a", "mcp-auth.db")
		}},
		{"link to itself", func(t *testing.T, dir string) string {
			if err := os.Symlink("a", filepath.Join(dir, "a")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "a", "mcp-auth.db")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t, t.TempDir())
			s := &BoltStorage{Path: path}
			err := within(t, 30*time.Second, "Open", func() error {
				_, err := open(newContext(t), s)
				return err
			})
			if err == nil {
				s.Cleanup()
				t.Fatalf("Open(%s) = nil, want an error", path)
			}
		})
	}
}

// A reload whose path names the same file through a symbolic link (to
// the file or to its directory) shares the open handle: a second open of
// the file would wait for the first's lock and fail the reload.
func TestBoltStorageSymlinkedPath(t *testing.T) {
	dir := t.TempDir()
	realDir := filepath.Join(dir, "realDir")
	if err := os.Mkdir(realDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(realDir, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	ctx := newContext(t)
	old := &BoltStorage{Path: filepath.Join(realDir, "mcp-auth.db")}
	oldSt, err := open(ctx, old)
	if err != nil {
		t.Fatalf("Open(%s) = %v", old.Path, err)
	}
	defer old.Cleanup()
	if err := os.Symlink(old.Path, filepath.Join(dir, "file.db")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(dir, "link", "mcp-auth.db"), filepath.Join(dir, "file.db")} {
		cur := &BoltStorage{Path: path}
		var curSt store.Store
		if err := within(t, 5*time.Second, "second Open", func() (err error) { curSt, err = open(ctx, cur); return err }); err != nil {
			t.Fatalf("Open(%s) while %s is open = %v, want the shared handle", path, old.Path, err)
		}
		if curSt != oldSt {
			t.Errorf("Open(%s) = another handle than %s's, want the shared one", path, old.Path)
		}
		if err := cur.Cleanup(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBoltStorageDistinctPaths(t *testing.T) {
	ctx := newContext(t)
	a := &BoltStorage{Path: filepath.Join(t.TempDir(), "a.db")}
	b := &BoltStorage{Path: filepath.Join(t.TempDir(), "b.db")}
	var sts []store.Store
	for _, s := range []*BoltStorage{a, b} {
		st, err := open(ctx, s)
		if err != nil {
			t.Fatalf("Open(%s) = %v", s.Path, err)
		}
		defer s.Cleanup()
		sts = append(sts, st)
	}
	if sts[0] == sts[1] {
		t.Errorf("Store() is shared between %s and %s, want separate handles", a.Path, b.Path)
	}
}

func TestBoltStorageDefaultPath(t *testing.T) {
	data := t.TempDir()
	t.Setenv("XDG_DATA_HOME", data)
	s := &BoltStorage{}
	if _, err := open(newContext(t), s); err != nil {
		t.Fatalf("Open() = %v", err)
	}
	defer s.Cleanup()
	want := filepath.Join(data, "caddy", "mcp-auth", "mcp-auth.db")
	if _, err := os.Stat(want); err != nil {
		t.Errorf("default database %s: %v", want, err)
	}
}

func TestMemoryStorageShared(t *testing.T) {
	old, cur := new(MemoryStorage), new(MemoryStorage)
	oldSt, err := old.Open()
	if err != nil {
		t.Fatal(err)
	}
	st, err := cur.Open()
	if err != nil {
		t.Fatal(err)
	}
	if oldSt != st {
		t.Fatal("Store() differs between two provisions, want the shared store")
	}
	if err := old.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := put(st, "k"); err != nil {
		t.Errorf("Update after the old config's Cleanup = %v, want nil", err)
	}
	if err := cur.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := put(st, "k"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after the last Cleanup = %v, want %v", err, store.ErrClosed)
	}
}

// The start log names a bbolt store's file, never a DSN (which may hold a
// password).
func TestStoreName(t *testing.T) {
	for _, tt := range []struct {
		s    Storage
		want string
	}{
		{&BoltStorage{abs: "/var/lib/caddy/mcp-auth.db"}, "bolt /var/lib/caddy/mcp-auth.db"},
		{&MemoryStorage{}, "memory (forgotten when Caddy stops)"},
		{&PostgresStorage{DSN: "postgres://mcp:secret@db/mcp"}, "postgres"},
	} {
		if got := storeName(tt.s); got != tt.want {
			t.Errorf("storeName(%T) = %q, want %q", tt.s, got, tt.want)
		}
	}
}

// keyFailStorage is a memory store whose writes of the RS256 ID-token
// key set fail while keyFail is set, as a store that breaks while Start
// makes that key.
type keyFailStorage struct{}

var (
	keyFailStore = memory.New(memory.Options{})
	keyFail      atomic.Bool
)

func (keyFailStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "mcp_auth.storage.keyfail_test", New: func() caddy.Module { return new(keyFailStorage) }}
}

func (keyFailStorage) Open() (store.Store, error) { return keyFailingStore{keyFailStore}, nil }

type keyFailingStore struct{ store.Store }

func (s keyFailingStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(keyFailingTx{tx}) })
}

// Close keeps the shared store open across the test's configs.
func (keyFailingStore) Close() error { return nil }

type keyFailingTx struct{ store.Tx }

func (tx keyFailingTx) Create(bucket, key string, value []byte, expires time.Time) error {
	if bucket == "id_token_keys" && keyFail.Load() {
		return errors.New("store failed")
	}
	return tx.Tx.Create(bucket, key, value, expires)
}

// A config whose Start fails making the RS256 ID-token key changes
// nothing: the configuration changes it carries (a removed client) are
// not applied, so the running config and the store still agree.
func TestStartFailingIDTokenKeyAppliesNothing(t *testing.T) {
	caddy.RegisterModule(keyFailStorage{})
	t.Cleanup(func() { _ = caddy.Stop() })
	load := func(signingAlg string, clients ...string) error {
		var cs []map[string]any
		for _, id := range clients {
			cs = append(cs, map[string]any{"client_id": id, "public": true, "redirect_uris": []string{"http://127.0.0.1:9/cb"}})
		}
		cfg, err := json.Marshal(map[string]any{
			"admin": map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
			"apps": map[string]any{"mcp_auth": map[string]any{
				"issuer": "http://127.0.0.1:9", "storage": map[string]any{"module": "keyfail_test"},
				"signing_alg": signingAlg, "clients": cs,
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return caddy.Load(cfg, true)
	}
	if err := load("RS256", "app-a", "app-b"); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		var v []byte
		_ = keyFailStore.View(context.Background(), func(tx store.Tx) error {
			v, _ = tx.Get("config", "http://127.0.0.1:9")
			return nil
		})
		return string(v)
	}
	before := snapshot()
	if before == "" {
		t.Fatal("no configuration recorded")
	}
	keyFail.Store(true)
	if err := load("ES256", "app-a"); err == nil {
		t.Fatal("Load with the ID-token key unmade = nil, want an error")
	}
	keyFail.Store(false)
	if after := snapshot(); after != before {
		t.Errorf("the configuration that failed to start was applied: recorded %s, was %s", after, before)
	}
}

// A placeholder in the bolt path is not replaced: the path is refused,
// naming it, rather than a directory "{env.NAME}" made below the
// working directory holding the store.
func TestBoltStoragePlaceholderPathRefused(t *testing.T) {
	t.Setenv("S33_STATE", t.TempDir())
	t.Chdir(t.TempDir())
	for _, path := range []string{"{env.S33_STATE}/mcp-auth.db", "state/{file.dir-name}/mcp-auth.db"} {
		s := &BoltStorage{Path: path}
		_, err := open(newContext(t), s)
		if err == nil {
			s.Cleanup()
			t.Errorf("storage bolt %s loaded", path)
			continue
		}
		if !strings.Contains(err.Error(), "placeholder") || !strings.Contains(err.Error(), path) {
			t.Errorf("storage bolt %s: %v, want it to name the path and its placeholder", path, err)
		}
	}
	if entries, _ := os.ReadDir("."); len(entries) > 0 {
		t.Errorf("working directory holds %v, want nothing made", entries)
	}
}
