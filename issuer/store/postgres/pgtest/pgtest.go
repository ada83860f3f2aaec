// Package pgtest starts throwaway PostgreSQL servers for tests, from the
// initdb and pg_ctl of an installed PostgreSQL (Debian's postgresql
// package puts them in /usr/lib/postgresql/<version>/bin, off PATH).
//
// A server lives in a temporary directory, listens only on a unix socket
// there (no TCP port to collide with), trusts local connections, and runs
// as the user nobody when the tests run as root (initdb refuses root).
// Tests get a fresh database each from one server per test package:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) {
//		dsn := pgtest.NewDatabase(t)
//		...
//	}
//
// Without PostgreSQL, NewDatabase skips the test, unless the environment
// sets CI_REQUIRE_POSTGRES=1, when it fails it.
package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// RequireEnv is the environment variable that turns a missing PostgreSQL
// from a skip into a failure.
const RequireEnv = "CI_REQUIRE_POSTGRES"

// port only names the socket file: the server listens on no TCP port.
const port = 5432

// Options configures Start.
type Options struct {
	// Durable keeps PostgreSQL's default fsync, for benchmarks that
	// compare with bbolt's synced commits and tests of crashes. Tests
	// leave it off: faster, and a test server never outlives a crash.
	// synchronous_commit stays on either way, as the store sets it for
	// its commits where it is off.
	Durable bool
}

// Server is a running throwaway PostgreSQL server.
type Server struct {
	dir  string // temporary directory: data/, the socket, the log
	bin  string
	user *account // nil: run as ourselves
	opts string   // pg_ctl start's -o: where to listen, durability
	n    atomic.Int64
}

// BinDir returns the directory of the installed PostgreSQL's programs:
// that of pg_ctl on PATH (symbolic links followed: the other programs may
// not be linked there), else the newest under /usr/lib/postgresql.
func BinDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if p, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	dirs = slices.DeleteFunc(dirs, func(d string) bool {
		_, err := os.Stat(filepath.Join(d, "pg_ctl"))
		return err != nil
	})
	if len(dirs) == 0 {
		return "", errors.New("PostgreSQL not found: no pg_ctl on PATH or in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql)")
	}
	version := func(d string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(d)))
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(a) - version(b) })
	return dirs[len(dirs)-1], nil
}

// Start initialises and starts a server in a new temporary directory.
func Start(opts Options) (_ *Server, err error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()
	if os.Geteuid() == 0 {
		if s.user, err = unprivileged(); err != nil {
			return nil, err
		}
		if err := os.Chown(dir, s.user.uid, s.user.gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if err := s.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		return nil, err
	}
	s.opts = fmt.Sprintf("-k %s -p %d -c listen_addresses='' -c max_connections=300", dir, port)
	if !opts.Durable {
		s.opts += " -c fsync=off -c full_page_writes=off"
	}
	if err := s.Resume(); err != nil {
		return nil, err
	}
	return s, nil
}

// Halt stops the server as an operator's `pg_ctl stop -m fast` does: open
// connections are cut, committed transactions are kept. Resume starts it
// again; tests use the pair to take the database away under traffic.
func (s *Server) Halt() error {
	return s.run("pg_ctl", "-D", s.DataDir(), "-m", "fast", "-w", "stop")
}

// Resume starts the server (again) with its data and settings.
func (s *Server) Resume() error {
	return s.run("pg_ctl", "-D", s.DataDir(), "-l", filepath.Join(s.dir, "log"), "-w", "-t", "60", "-o", s.opts, "start")
}

// DSN is the connection string of database db on the server.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=%s sslmode=disable", s.dir, port, db)
}

// CreateDatabase creates a new, empty database and returns its DSN.
func (s *Server) CreateDatabase() (string, error) {
	db := fmt.Sprintf("test%d", s.n.Add(1))
	if err := s.run("createdb", "-h", s.dir, "-p", strconv.Itoa(port), "-U", "postgres", "--strategy=file_copy", db); err != nil {
		return "", err
	}
	return s.DSN(db), nil
}

// Stop stops the server at once (no checkpoint: nothing is kept) and
// removes its directory.
func (s *Server) Stop() error {
	err := s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "stop")
	if rmErr := os.RemoveAll(s.dir); err == nil {
		err = rmErr
	}
	return err
}

// Exec runs a PostgreSQL client or server program (psql, pg_ctl, …) of
// the server's installation as the server's user, e.g. to stop and
// restart the server in a test.
func (s *Server) Exec(prog string, args ...string) error { return s.run(prog, args...) }

// DataDir is the server's data directory, for pg_ctl.
func (s *Server) DataDir() string { return filepath.Join(s.dir, "data") }

// LogFile is the server's log, for a test of what the server logs.
func (s *Server) LogFile() string { return filepath.Join(s.dir, "log") }

func (s *Server) run(prog string, args ...string) error {
	cmd := exec.Command(filepath.Join(s.bin, prog), args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if s.user != nil {
		s.user.apply(cmd)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pgtest: %s %s: %w\n%s", prog, strings.Join(args, " "), err, out.Bytes())
	}
	return nil
}

// The server of a test package, started by the first NewDatabase and
// stopped by Main.
var shared struct {
	once    sync.Once
	started atomic.Bool // by Main
	srv     *Server
	err     error
}

// Main runs the package's tests (m.Run) and then stops the server, if a
// test started one, and exits.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main without the exit, for a TestMain that has more to clean up:
// it returns m.Run's exit code.
func Run(m *testing.M) int {
	shared.started.Store(true)
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	return code
}

// Shared returns the package's server, starting it on first use; it skips
// tb when PostgreSQL is not installed (fails it with CI_REQUIRE_POSTGRES=1).
// The package's TestMain must call Main.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	if !shared.started.Load() {
		tb.Fatal("pgtest: the test package's TestMain must call pgtest.Main or Run (they stop the server)")
	}
	installed(tb)
	shared.once.Do(func() { shared.srv, shared.err = Start(Options{}) })
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return shared.srv
}

// installed skips tb when PostgreSQL is not installed, or fails it with
// CI_REQUIRE_POSTGRES=1.
func installed(tb testing.TB) {
	tb.Helper()
	if _, err := BinDir(); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("%v, and %s=1", err, RequireEnv)
		}
		tb.Skip(err)
	}
}

// Own starts a server of tb's own, for a test that stops it or changes
// its settings, stopped when tb ends, and returns it with the DSN of a
// new database on it. It skips tb as Shared does.
func Own(tb testing.TB, opts Options) (*Server, string) {
	tb.Helper()
	installed(tb)
	srv, err := Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Stop() })
	dsn, err := srv.CreateDatabase()
	if err != nil {
		tb.Fatal(err)
	}
	return srv, dsn
}

// Backend returns the process id of the session on dsn's database whose
// application_name is name, "" when there is none.
func (s *Server) Backend(dsn, name string) (string, error) {
	return s.Psql(dsn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = '"+
		strings.ReplaceAll(name, "'", "''")+"'")
}

// NewDatabase returns the DSN of a new, empty database on the package's
// server (see Shared).
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	dsn, err := Shared(tb).CreateDatabase()
	if err != nil {
		tb.Fatal(err)
	}
	return dsn
}

// Psql runs query on the database dsn names with psql and returns its
// output, unaligned and without headers, trimmed.
func (s *Server) Psql(dsn, query string) (string, error) {
	cmd := exec.Command(filepath.Join(s.bin, "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query, dsn)
	cmd.Dir = s.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if s.user != nil {
		s.user.apply(cmd)
	}
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("pgtest: psql %q: %w\n%s", query, err, stderr.Bytes())
	}
	return strings.TrimSpace(string(out)), nil
}
