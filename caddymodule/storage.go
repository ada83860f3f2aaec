package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
)

func init() {
	caddy.RegisterModule(BoltStorage{})
	caddy.RegisterModule(MemoryStorage{})
	caddy.RegisterModule(PostgresStorage{})
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
// "bolt:<absolute path, symbolic links resolved>", "memory" and "postgres:<SHA-256 of the DSN>".
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
	log *zap.Logger
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
	// A path is not a secret: its placeholders are not replaced, so
	// "{env.STATE_DIRECTORY}/mcp-auth.db" would open a directory of that
	// name below the working directory, the signing keys, revocations
	// and users kept where nobody looks (and lost with a container).
	if ph := placeholder.FindString(path); ph != "" {
		return fmt.Errorf("storage bolt: path %q holds the placeholder %s, which is not replaced in a path: write the path itself (in a Caddyfile {$NAME} is replaced when the file is adapted)", path, ph)
	}
	if path == "" {
		path = filepath.Join(caddy.AppDataDir(), "mcp-auth", "mcp-auth.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("storage path %q: %w", path, err)
	}
	b.abs, b.log = abs, ctx.Logger()
	return nil
}

// Open opens the database, creating its directory, or shares the handle
// a previous config opened on the same file, however its path is
// spelled.
func (b *BoltStorage) Open() (store.Store, error) {
	abs := b.abs
	b.key = "bolt:" + resolved(abs)
	v, _, err := stores.LoadOrNew(b.key, func() (caddy.Destructor, error) {
		if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
			return nil, fmt.Errorf("storage directory: %w", err)
		}
		st, err := bolt.Open(abs, bolt.Options{})
		if err != nil {
			return nil, fmt.Errorf("storage %s: %w", abs, err)
		}
		b.ownerOnly()
		return pooledStore{st}, nil
	})
	if err != nil {
		return nil, err
	}
	b.st = v.(pooledStore).Store
	return b.st, nil
}

// resolved is path with its symbolic links resolved, also where they
// lead to what does not exist yet (a link to a file not yet created, a
// directory to be made below a linked one): the key of a file opened
// through a link must be the same as through its own path, and the same
// before and after the first open creates it, since a second open of the
// file in this process would wait for the first one's lock and fail the
// reload.
func resolved(path string) string {
	hops := maxLinkHops
	return resolvedWithin(path, &hops)
}

// maxLinkHops bounds the links resolved follows for a path that does not
// exist yet, as the kernel bounds them (ELOOP): over all of the path's
// directories, since a link into itself (a -> a/b) leads resolving its
// directory back to it.
const maxLinkHops = 40

// resolvedWithin is resolved spending the hops left; with none left the
// path is kept as it is, and opening it fails with ELOOP.
func resolvedWithin(path string, hops *int) string {
	for ; *hops > 0; *hops-- {
		if p, err := filepath.EvalSymlinks(path); err == nil {
			return p
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			break
		}
		target, err := os.Readlink(path)
		if err != nil {
			return path
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
	}
	// Missing: its directory resolved, as far as that exists.
	dir := filepath.Dir(path)
	if dir == path || *hops <= 0 {
		return path
	}
	*hops--
	return filepath.Join(resolvedWithin(dir, hops), filepath.Base(path))
}

// ownerOnly makes the store file readable by its owner only, as bbolt
// creates it: one restored with cp or written by curl -o has the umask's
// mode, 0644 say, and every local user could read the signing keys and
// forge any token (review s17-ops F5).
func (b *BoltStorage) ownerOnly() {
	fi, err := os.Stat(b.abs)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	if err := os.Chmod(b.abs, fi.Mode().Perm()&0o600); err != nil {
		b.log.Warn("the store file is readable by other users: it holds the signing keys, secret hashes and sessions; make it mode 0600",
			zap.String("path", b.abs), zap.Stringer("mode", fi.Mode().Perm()), zap.Error(err))
		return
	}
	b.log.Warn("the store file was readable by other users (it holds the signing keys, secret hashes and sessions); made it readable and writable by its owner only",
		zap.String("path", b.abs), zap.Stringer("was", fi.Mode().Perm()), zap.Stringer("now", fi.Mode().Perm()&0o600))
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

// PostgresStorage keeps the issuer's state in a PostgreSQL database, which
// several Caddy instances may share. The schema is created or migrated
// when the app starts.
type PostgresStorage struct {
	// DSN is the database's connection string: a libpq "key=value ..."
	// string or a postgres:// URL. Caddy shows its configuration (adapted
	// JSON, the admin API, autosave.json), so the DSN must not hold a
	// password in clear: make the whole DSN a placeholder
	// ({env.MCP_AUTH_DSN}, {file./run/secrets/mcp-auth-dsn}), or the
	// password alone ("postgres://mcp:{env.PGPASSWORD_MCP}@db/mcp"), or
	// leave it out and let PGPASSWORD or a .pgpass file supply it.
	// Placeholders are replaced when the app starts.
	DSN string `json:"dsn,omitempty"`

	key string // in stores
	st  store.Store
	log *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (PostgresStorage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mcp_auth.storage.postgres",
		New: func() caddy.Module { return new(PostgresStorage) },
	}
}

// Provision checks the DSN. It connects to nothing: see Storage.
func (p *PostgresStorage) Provision(ctx caddy.Context) error {
	p.log = ctx.Logger()
	return checkDSN(p.DSN)
}

// postgresOpenTimeout bounds connecting and migrating at start.
const postgresOpenTimeout = 30 * time.Second

// Open replaces the DSN's placeholders, connects and migrates the schema,
// or shares the store a previous config opened on the same DSN.
func (p *PostgresStorage) Open() (store.Store, error) {
	dsn, err := expandSecret(caddy.NewReplacer(), p.DSN)
	if err != nil {
		return nil, fmt.Errorf("storage postgres: dsn: %w", err)
	}
	sum := sha256.Sum256([]byte(dsn))
	key := "postgres:" + hex.EncodeToString(sum[:])
	v, _, err := stores.LoadOrNew(key, func() (caddy.Destructor, error) {
		ctx, cancel := context.WithTimeout(context.Background(), postgresOpenTimeout)
		defer cancel()
		st, err := postgres.Open(ctx, dsn, postgres.Options{})
		if err != nil {
			return nil, fmt.Errorf("storage: %w", err)
		}
		p.warnParameterLogging(ctx, st)
		p.warnUnsynced(ctx, st)
		return pooledStore{st}, nil
	})
	if err != nil {
		return nil, err
	}
	p.key, p.st = key, v.(pooledStore).Store
	return p.st, nil
}

// warnParameterLogging warns when the server writes the parameters of
// the store's statements to its log, where every record the store writes
// would end up: a log is often kept longer, read by more people or sent
// further than the database.
func (p *PostgresStorage) warnParameterLogging(ctx context.Context, st *postgres.Store) {
	if p.log == nil {
		return
	}
	why, err := st.ParameterLogging(ctx)
	if err != nil {
		p.log.Debug("storage postgres: the server's logging settings could not be read", zap.Error(err))
		return
	}
	if why != "" {
		p.log.Warn("storage postgres: the server writes the parameters of the store's statements to its log, and with them every record the store writes: the signing keys' private parts, the gateways' session key, sessions; as a superuser, run ALTER ROLE <the store's role> SET log_parameter_max_length = 0 (and log_parameter_max_length_on_error = 0), or end that logging",
			zap.String("settings", why))
	}
}

// warnUnsynced warns when the server runs with fsync off (a tuning for
// speed, or a test server's): the store's writes are answered as made
// before they are on disk, which a crash of the database's machine may
// undo, bringing back a revoked token, a withdrawn key or a spent code.
func (p *PostgresStorage) warnUnsynced(ctx context.Context, st *postgres.Store) {
	if p.log == nil {
		return
	}
	off, err := st.Unsynced(ctx)
	if err != nil {
		p.log.Debug("storage postgres: the server's fsync setting could not be read", zap.Error(err))
		return
	}
	if off {
		p.log.Warn("storage postgres: the server runs with fsync = off, so a write the issuer answered as made (a revocation, a signing key's withdrawal, a code's redemption) may be lost, and the database corrupted, when the database's machine crashes: revoked tokens and spent codes would then be taken again; turn fsync on (ALTER SYSTEM SET fsync = on, then reload the server's configuration)")
	}
}

// Cleanup releases this config's reference; the pool is closed when no
// config uses it any more.
func (p *PostgresStorage) Cleanup() error {
	if p.st == nil {
		return nil
	}
	p.st = nil
	_, err := stores.Delete(p.key)
	return err
}

// checkDSN refuses an empty DSN and one that holds a password in clear
// (see PostgresStorage.DSN): the password, or the TLS key's passphrase
// (sslpassword). A password that is one placeholder is fine.
func checkDSN(dsn string) error {
	if strings.TrimSpace(dsn) == "" {
		return errors.New("storage postgres: the dsn is empty")
	}
	if strings.Contains(dsn, `\{`) || strings.Contains(dsn, `\}`) || strings.Contains(strings.ToLower(dsn), sentinelName) {
		// Caddy reads an escaped brace as a literal one, so "{hunter2\}"
		// is no placeholder; this check's reading of placeholders is not
		// Caddy's in full. Its own names for placeholders must not be
		// written as text either.
		return errors.New("storage postgres: the dsn holds an escaped brace (or the text " + sentinelName + "); give the whole dsn as a placeholder ({env.MCP_AUTH_DSN} or {file.<path>}) instead")
	}
	if dsnHoldsSecret(dsn) {
		return errors.New("storage postgres: the dsn holds a password in clear, which Caddy would show in its configuration; " +
			"give the whole dsn as a placeholder ({env.MCP_AUTH_DSN} or {file.<path>}), the password as one, or use PGPASSWORD or a .pgpass file")
	}
	return nil
}

// sentinelName (and a number) stands for a placeholder in the DSN
// dsnHoldsSecret reads.
const sentinelName = "caddyplaceholder"

// placeholder is one Caddy placeholder in a DSN, not yet replaced.
var placeholder = regexp.MustCompile(`\{[^{}]*\}`)

// statedSecret is how a DSN may state a password or sslpassword here:
// the key, "=", and the value (quoted or not), which must be one
// placeholder; any other mention of "password" is refused.
var statedSecret = regexp.MustCompile(`(?i)(ssl)?password(\s*=\s*('?)(` + sentinelName + `\d+)('?)(?:$|[\s&]))?`)

// dsnHoldsSecret reports whether a DSN states a password or sslpassword
// that is not one whole placeholder. Whether it states one at all is
// pgx's reading (postgres.DSNKeys: a URL's userinfo, query keys
// percent-decoded, key/value pairs however spaced); each one it states
// must then be written in a form read here for certain, with a
// placeholder for the value: user:{...}@ in a URL, or password={...}.
// Anything else that names a password, percent-encoded included, is
// refused (fail closed).
func dsnHoldsSecret(dsn string) bool {
	// Placeholders become names pgx can hold, so that a password that is
	// one placeholder reads as exactly one such name.
	names := map[string]bool{}
	sentinel := placeholder.ReplaceAllStringFunc(dsn, func(string) string {
		name := sentinelName + strconv.Itoa(len(names))
		names[name] = true
		return name
	})
	// A DSN pgx cannot read before the placeholders are replaced (one
	// that is a placeholder, or built from several) is judged by its
	// text alone.
	keys, _ := postgres.DSNKeys(sentinel)
	decoded, err := url.PathUnescape(sentinel)
	if err != nil {
		decoded = sentinel // a '%' that escapes nothing, as pgx reads it too
	}
	stated := map[string]bool{}
	for _, m := range statedSecret.FindAllStringSubmatch(decoded, -1) {
		if m[2] == "" || m[3] != m[5] || !names[m[4]] {
			return true // a mention of a password this reading is not sure of
		}
		stated[strings.ToLower(m[1])+"password"] = true
	}
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		rest, ok := strings.CutPrefix(sentinel, scheme)
		if !ok {
			continue
		}
		// pgx: the userinfo ends at the first '@' before the first '/'.
		auth, _, _ := strings.Cut(rest, "/")
		userinfo, _, found := strings.Cut(auth, "@")
		if _, pw, hasPW := strings.Cut(userinfo, ":"); found && hasPW {
			if !names[pw] {
				return true
			}
			stated["password"] = true
		}
	}
	return keys["password"] && !stated["password"] || keys["sslpassword"] && !stated["sslpassword"]
}

// Interface guards
var (
	_ Storage            = (*BoltStorage)(nil)
	_ caddy.Provisioner  = (*BoltStorage)(nil)
	_ caddy.CleanerUpper = (*BoltStorage)(nil)
	_ Storage            = (*MemoryStorage)(nil)
	_ caddy.CleanerUpper = (*MemoryStorage)(nil)
	_ Storage            = (*PostgresStorage)(nil)
	_ caddy.Provisioner  = (*PostgresStorage)(nil)
	_ caddy.CleanerUpper = (*PostgresStorage)(nil)
)
