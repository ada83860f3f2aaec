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

// Storage is implemented by modules in the mcp_auth.storage namespace. The
// store is valid from Provision until Cleanup.
type Storage interface {
	Store() store.Store
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

	key string
	st  store.Store
}

// CaddyModule returns the Caddy module information.
func (BoltStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mcp_auth.storage.bolt",
		New: func() caddy.Module { return new(BoltStorage) },
	}
}

// Provision opens the database, or shares the handle a previous config
// opened.
func (b *BoltStorage) Provision(ctx caddy.Context) error {
	path := b.Path
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "mcp-auth", "mcp-auth.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("storage path %q: %w", path, err)
	}
	b.key = "bolt:" + abs
	v, _, err := stores.LoadOrNew(b.key, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
			return nil, fmt.Errorf("storage directory: %w", err)
		}
		st, err := bolt.Open(abs, bolt.Options{})
		if err != nil {
			return nil, err
		}
		return pooledStore{st}, nil
	})
	if err != nil {
		return err
	}
	b.st = v.(pooledStore).Store
	return nil
}

// Store implements Storage.
func (b *BoltStorage) Store() store.Store { return b.st }

// Cleanup releases this config's reference; the file is closed when no
// config uses it any more.
func (b *BoltStorage) Cleanup() error {
	if b.key == "" {
		return nil
	}
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

// Provision creates the store, or shares the one a previous config created.
func (m *MemoryStorage) Provision(ctx caddy.Context) error {
	v, _, err := stores.LoadOrNew(memoryKey, func() (caddy.Destructor, error) {
		return pooledStore{memory.New(memory.Options{})}, nil
	})
	if err != nil {
		return err
	}
	m.st = v.(pooledStore).Store
	return nil
}

// Store implements Storage.
func (m *MemoryStorage) Store() store.Store { return m.st }

// Cleanup releases this config's reference.
func (m *MemoryStorage) Cleanup() error {
	if m.st == nil {
		return nil
	}
	_, err := stores.Delete(memoryKey)
	return err
}

// Interface guards
var (
	_ Storage            = (*BoltStorage)(nil)
	_ caddy.Provisioner  = (*BoltStorage)(nil)
	_ caddy.CleanerUpper = (*BoltStorage)(nil)
	_ Storage            = (*MemoryStorage)(nil)
	_ caddy.Provisioner  = (*MemoryStorage)(nil)
	_ caddy.CleanerUpper = (*MemoryStorage)(nil)
)
