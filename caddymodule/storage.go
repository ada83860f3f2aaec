package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
)

func init() {
	caddy.RegisterModule(BoltStorage{})
	caddy.RegisterModule(MemoryStorage{})
}

// Storage is implemented by modules in the mcp_auth.storage namespace.
// Provision only checks the configuration and touches nothing: `caddy
// validate` provisions while another Caddy may hold the store. Open, called
// from App.Start, opens the store (at most once); it is valid until Cleanup.
type Storage interface {
	Open() (store.Store, error)
}

// stores holds open stores across config reloads. bbolt locks its file, so
// a second open of the same path in this process would block forever; the
// new config must share the old config's handle instead. Keys are
// "bolt:<absolute path>" and "memory".
var stores = caddy.NewUsagePool()

// pooledStore closes the store when the last config using it is cleaned up.
type pooledStore struct{ store.Store }

// Destruct implements caddy.Destructor.
func (p pooledStore) Destruct() error { return p.Close() }

// BoltStorage keeps the issuer's state in a bbolt database file.
type BoltStorage struct {
	// Path of the database file. Default:
	// "<caddy data dir>/mcp-auth/mcp-auth.db".
	Path string `json:"path,omitempty"`

	abs string // Path, absolute
	key string // in stores
	st  store.Store
}

// CaddyModule returns the Caddy module information.
func (BoltStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mcp_auth.storage.bolt",
		New: func() caddy.Module { return new(BoltStorage) },
	}
}

// Provision resolves the database path. It opens nothing: see Storage.
func (b *BoltStorage) Provision(ctx caddy.Context) error {
	path := b.Path
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "mcp-auth", "mcp-auth.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("storage path %q: %w", path, err)
	}
	b.abs, b.key = abs, "bolt:"+abs
	return nil
}

// Open opens the database, creating its directory, or shares the handle
// a previous config opened.
func (b *BoltStorage) Open() (store.Store, error) {
	abs := b.abs
	v, _, err := stores.LoadOrNew(b.key, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
			return nil, fmt.Errorf("storage directory: %w", err)
		}
		st, err := bolt.Open(abs, bolt.Options{})
		if err != nil {
			return nil, fmt.Errorf("storage %s: %w", abs, err)
		}
		return pooledStore{st}, nil
	})
	if err != nil {
		return nil, err
	}
	b.st = v.(pooledStore).Store
	return b.st, nil
}

// Cleanup releases this config's reference; the file is closed when no
// config uses it any more.
func (b *BoltStorage) Cleanup() error {
	if b.st == nil {
		return nil
	}
	b.st = nil
	_, err := stores.Delete(b.key)
	return err
}

// MemoryStorage keeps the issuer's state in memory: it survives config
// reloads but not a restart, so every user session, refresh token,
// registered client and signing key is lost when Caddy stops.
type MemoryStorage struct {
	st store.Store
}

// CaddyModule returns the Caddy module information.
func (MemoryStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mcp_auth.storage.memory",
		New: func() caddy.Module { return new(MemoryStorage) },
	}
}

// memoryKey is the pool key of the in-memory store: there is one mcp_auth
// app per config, so one memory store per process.
const memoryKey = "memory"

// Open creates the store, or shares the one a previous config created.
func (m *MemoryStorage) Open() (store.Store, error) {
	v, _, err := stores.LoadOrNew(memoryKey, func() (caddy.Destructor, error) {
		return pooledStore{memory.New(memory.Options{})}, nil
	})
	if err != nil {
		return nil, err
	}
	m.st = v.(pooledStore).Store
	return m.st, nil
}

// Cleanup releases this config's reference.
func (m *MemoryStorage) Cleanup() error {
	if m.st == nil {
		return nil
	}
	m.st = nil
	_, err := stores.Delete(memoryKey)
	return err
}

// Interface guards
var (
	_ Storage            = (*BoltStorage)(nil)
	_ caddy.Provisioner  = (*BoltStorage)(nil)
	_ caddy.CleanerUpper = (*BoltStorage)(nil)
	_ Storage            = (*MemoryStorage)(nil)
	_ caddy.CleanerUpper = (*MemoryStorage)(nil)
)
