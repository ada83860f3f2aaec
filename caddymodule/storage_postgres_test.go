package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
)

func TestCheckDSN(t *testing.T) {
	tests := []struct {
		dsn string
		ok  bool
	}{
		{"{env.MCP_AUTH_DSN}", true},
		{"{file./run/secrets/dsn}", true},
		{"postgres://mcp@db.internal/mcp?sslmode=verify-full", true},
		{"postgres://mcp:{env.PW}@db.internal/mcp", true},
		{"postgresql://mcp:{file./run/pw}@db.internal:5432/mcp", true},
		{"host=db user=mcp dbname=mcp", true},
		{"host=db user=mcp password={env.PW} dbname=mcp", true},
		{"host=db user=mcp password='{env.PW}' dbname=mcp", true},
		{"postgres://db.internal/mcp?user=mcp&password={env.PW}", true},
		{"postgres://mcp:hunter2@db.internal/mcp", false},
		{"postgresql://mcp:hunter2@db.internal/mcp", false},
		{"postgres://mcp:x{env.PW}@db/mcp", false},
		{"postgres://mcp:{env.A}{env.B}@db/mcp", false},
		{"host=db user=mcp password=hunter2 dbname=mcp", false},
		{"host=db user=mcp password = 'hunter 2' dbname=mcp", false},
		{"password=hunter2", false},
		{"postgres://mcp@db/mcp?sslmode=require&password=hunter2", false},
		// Read as pgx reads them (review s11-config F3): the userinfo
		// before the first '/', query keys percent-decoded, and the TLS
		// key's passphrase.
		{"postgres://mcp:hunter2@db/mcp?application_name=a@b", false},
		{"postgres://db/mcp?pass%77ord=hunter2", false},
		{"postgres://db/mcp?Password=hunter2", false},
		{"postgres://mcp@db/mcp?sslpassword=hunter2", false},
		{"postgres://mcp@db/mcp?sslpassword={env.KEYPASS}", true},
		{"host=db sslpassword=hunter2", false},
		{"host=db sslpassword={file./run/keypass}", true},
		{"postgres://mcp:{env.PW}@db/mcp?application_name=a@b", true},
		{"postgres://mcp:%7Benv.PW%7D@db/mcp", false}, // not a placeholder to Caddy: a password
		{"postgres://mcp:hunter2@db:notaport/mcp", false},
		// Caddy's escaped braces are literal (review s11-fresh2 F3).
		{`host=db user=mcp password={hunter2\} sslmode=disable`, false},
		{`postgres://mcp:{hunter2\}@db/mcp`, false},
		{"host=db password=caddyplaceholder0 user={env.U}", false}, // the check's own name for a placeholder, as text
		// pgx's own URL and key/value readings (review s11-fresh F2).
		{"postgres://app:#S3cret@db.internal/mcp", false},
		{"postgres://app:?S3cret@db.internal/mcp", false},
		{"postgres://app:5432?S3cret@db.internal/mcp", false},
		{"postgres://app@db.internal/mcp?password=S3c;ret", false},
		{"postgres://app@db.internal/mcp?sslmode=disable&password=a;b", false},
		{"host=db dbname='mcp'password=S3cret", false},
		{"host=db\vpassword=S3cret", false},
		{"host=db password\v=S3cret", false},
		{"postgres://mcp@db/mcp?password={env.PW}&pass%77ord=hunter2", false},
		{"postgres://mcp:%68unter2@db/mcp", false},
		{"postgres://%2Fvar%2Frun%2Fpostgresql/mcp?user=mcp&password={env.PW}", true},
		{"host=/var/run/postgresql user=mcp password = '{env.PW}' sslpassword={file./run/kp}", true},
		{"postgres://mcp@db/mcp?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", true},
		{"", false},
		{"   ", false},
	}
	for _, tt := range tests {
		err := checkDSN(tt.dsn)
		if (err == nil) != tt.ok {
			t.Errorf("checkDSN(%q) = %v, want ok=%v", tt.dsn, err, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), "hunter") {
			t.Errorf("checkDSN(%q) error shows the password: %v", tt.dsn, err)
		}
	}
}

// TestPostgresStorage: Provision connects to nothing and refuses a
// password in clear; Open replaces the placeholder, and a second config
// on the same DSN shares the pool until the last one is cleaned up.
func TestPostgresStorage(t *testing.T) {
	ctx := newContext(t)
	if err := (&PostgresStorage{DSN: "postgres://mcp:hunter2@127.0.0.1:1/mcp"}).Provision(ctx); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Provision(password in clear) = %v, want a refusal that does not show it", err)
	}
	if err := (&PostgresStorage{DSN: "host=127.0.0.1 port=1 dbname=none"}).Provision(ctx); err != nil {
		t.Fatalf("Provision(unreachable database) = %v, want nil: it connects to nothing", err)
	}
	unset := &PostgresStorage{DSN: "{env.MCP_AUTH_TEST_UNSET_DSN}"}
	if _, err := open(ctx, unset); err == nil || !strings.Contains(err.Error(), "{env.MCP_AUTH_TEST_UNSET_DSN} resolves to nothing") {
		t.Fatalf("Open(unset placeholder) = %v, want an error naming the placeholder", err)
	}

	t.Setenv("MCP_AUTH_TEST_DSN", pgtest.NewDatabase(t))
	a, b := &PostgresStorage{DSN: "{env.MCP_AUTH_TEST_DSN}"}, &PostgresStorage{DSN: "{env.MCP_AUTH_TEST_DSN}"}
	sa, err := open(ctx, a)
	if err != nil {
		t.Fatalf("Open() = %v, want nil", err)
	}
	sb, err := open(ctx, b)
	if err != nil {
		t.Fatalf("second Open() = %v, want nil", err)
	}
	if sa != sb {
		t.Fatalf("two configs on one DSN got different stores")
	}
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := put(sb, "k"); err != nil {
		t.Fatalf("Update after the first config's Cleanup = %v, want nil", err)
	}
	if err := b.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if err := put(sb, "k"); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Update after the last Cleanup = %v, want ErrClosed", err)
	}
}

// TestPostgresParameterLoggingWarned: a server that logs the store's
// statements with their parameters (log_statement = mod, an auditing
// setting) gets every record the store writes, the signing keys among
// them, in its log: Caddy warns at start, naming the setting, and does not
// once log_parameter_max_length = 0 keeps the parameters out.
func TestPostgresParameterLoggingWarned(t *testing.T) {
	ctx := newContext(t)
	dsn := pgtest.NewDatabase(t)
	srv := pgtest.Shared(t)
	db, err := srv.Psql(dsn, "SELECT current_database()")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		settings string
		warned   bool
	}{
		{"RESET ALL", false},
		{"SET log_statement = 'mod'", true},
		{"SET log_parameter_max_length = 0", false},
	} {
		if _, err := srv.Psql(dsn, "ALTER DATABASE "+db+" "+tt.settings); err != nil {
			t.Fatal(err)
		}
		p := &PostgresStorage{DSN: dsn}
		if err := p.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.WarnLevel)
		p.log = zap.New(core)
		if _, err := p.Open(); err != nil {
			t.Fatal(err)
		}
		if err := p.Cleanup(); err != nil {
			t.Fatal(err)
		}
		warned := logs.FilterMessageSnippet("log_parameter_max_length = 0").FilterField(zap.String("settings", "log_statement = mod")).Len() == 1
		// The shared test server runs with fsync off, which is warned
		// of too (TestPostgresFsyncOffWarned).
		unsynced := logs.FilterMessageSnippet("fsync = off").Len()
		if warned != tt.warned || unsynced != 1 || logs.Len() != map[bool]int{true: 1}[tt.warned]+unsynced {
			t.Errorf("after %s: warned %v, want %v (%v)", tt.settings, warned, tt.warned, logs.All())
		}
	}
}

// TestPostgresFsyncOffWarned: a server running with fsync off answers
// the store's commits before they are on disk, whatever synchronous_commit
// the store sets, so a crash of its machine may undo a revocation, a key's
// withdrawal or a code's redemption the issuer answered as made: Caddy
// warns at start, and does not where fsync is on (PostgreSQL's default).
func TestPostgresFsyncOffWarned(t *testing.T) {
	ctx := newContext(t)
	_, durable := pgtest.Own(t, pgtest.Options{Durable: true})
	for _, tt := range []struct {
		name   string
		dsn    string
		warned bool
	}{
		{"fsync off (the shared test server)", pgtest.NewDatabase(t), true},
		{"fsync on", durable, false},
	} {
		p := &PostgresStorage{DSN: tt.dsn}
		if err := p.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.WarnLevel)
		p.log = zap.New(core)
		if _, err := p.Open(); err != nil {
			t.Fatal(err)
		}
		if err := p.Cleanup(); err != nil {
			t.Fatal(err)
		}
		if warned := logs.FilterMessageSnippet("fsync = off").Len() == 1; warned != tt.warned || logs.Len() != map[bool]int{true: 1}[tt.warned] {
			t.Errorf("%s: warned %v, want %v (%v)", tt.name, warned, tt.warned, logs.All())
		}
	}
}

// TestMigrateStorageWhereTheServerLogsParameters: migrate-storage into a
// database whose server logs the statements' parameters is refused before
// it copies anything, since every record, the signing keys among them,
// would be in that log; once log_parameter_max_length = 0, it copies.
func TestMigrateStorageWhereTheServerLogsParameters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mcp-auth.db")
	src, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	secret := "private-" + rand.Text()
	if err := src.Update(context.Background(), func(tx store.Tx) error {
		return tx.Put("keys", "kid-1", []byte(secret), time.Time{})
	}); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.NewDatabase(t)
	srv := pgtest.Shared(t)
	psql := func(q string) string {
		t.Helper()
		out, err := srv.Psql(dsn, q)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	db := psql("SELECT current_database()")
	psql("ALTER DATABASE " + db + " SET log_statement = 'mod'")
	_, _, err = runCLI(t, "localhost:1", "", "migrate-storage", "--from", path, "--to", dsn)
	if err == nil || !strings.Contains(err.Error(), "log_statement = mod") || !strings.Contains(err.Error(), "nothing was copied") {
		t.Fatalf("migrate-storage where the server logs parameters = %v, want a refusal naming log_statement", err)
	}
	if n := psql("SELECT count(*) FROM mcp_auth_entries"); n != "0" {
		t.Errorf("%s entries copied by the refused migration", n)
	}
	if log, err := os.ReadFile(srv.LogFile()); err != nil || strings.Contains(string(log), hex.EncodeToString([]byte(secret))) {
		t.Errorf("the server's log holds the signing key (%v)", err)
	}
	psql("ALTER DATABASE " + db + " SET log_parameter_max_length = 0")
	if out, _, err := runCLI(t, "localhost:1", "", "migrate-storage", "--from", path, "--to", dsn); err != nil || !strings.Contains(out, "copied 1 entries") {
		t.Fatalf("migrate-storage once parameters are kept out of the log = %q, %v, want 1 entry copied", out, err)
	}
	if log, err := os.ReadFile(srv.LogFile()); err != nil || strings.Contains(string(log), hex.EncodeToString([]byte(secret))) {
		t.Errorf("the server's log holds the signing key (%v)", err)
	}
}

// TestMigrateStorage copies a bolt store into PostgreSQL with the command
// and reads back every live entry with its expiry; expired entries stay
// behind, a second copy into the same database is refused whole, and a
// bolt file in use is refused.
// TestMigrateStorageIntoDatabaseInUse: migrate-storage copies into an
// empty database only. Into one another deployment uses (another issuer
// URL: signing keys, users and clients under keys of their own, none the
// copy's), it was refused only for an entry under one of the copy's own
// keys, so the two stores were merged: each deployment's keys, users and
// clients beside the other's. It is refused, copying nothing; a database
// holding only expired entries, which no reader sees, takes the copy.
func TestMigrateStorageIntoDatabaseInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mcp-auth.db")
	src, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Update(context.Background(), func(tx store.Tx) error { return tx.Put("keys", "ours", []byte("private"), time.Time{}) }); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		expires time.Time // of the entry the database holds
		refused bool
	}{
		{"another deployment's live entry", time.Time{}, true},
		{"an expired entry only", time.Now().Add(-time.Minute), false},
	} {
		dsn := pgtest.NewDatabase(t)
		dst, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.Update(context.Background(), func(tx store.Tx) error { return tx.Put("keys", "theirs", []byte("private"), tt.expires) }); err != nil {
			t.Fatal(err)
		}
		out, _, err := runCLI(t, "localhost:1", "", "migrate-storage", "--from", path, "--to", dsn)
		if refused := err != nil && strings.Contains(err.Error(), "already holds entries"); refused != tt.refused || !tt.refused && !strings.Contains(out, "copied 1 entries") {
			t.Errorf("%s: migrate-storage = %q, %v; want refused %v", tt.name, out, err, tt.refused)
		}
		err = dst.View(context.Background(), func(tx store.Tx) error {
			_, err := tx.Get("keys", "ours")
			return err
		})
		if copied := err == nil; copied == tt.refused {
			t.Errorf("%s: Get(keys/ours) after migrate-storage = %v, want copied %v", tt.name, err, !tt.refused)
		}
		dst.Close()
	}
}

func TestMigrateStorage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mcp-auth.db")
	clock := time.Now()
	src, err := bolt.Open(path, bolt.Options{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		bucket, key, value string
		expires            time.Time
	}
	live := []entry{
		{"grants", "g1", `{"id":"g1"}`, time.Time{}},
		{"grants", "g2", "", clock.Add(time.Hour)},
		{"refresh", "\x00\xffbinary", "\x01\x02", clock.Add(30 * 24 * time.Hour)},
		{"keys", "kid-1", "private", time.Time{}},
	}
	expired := entry{"codes", "c1", "old", clock.Add(time.Second)}
	err = src.Update(context.Background(), func(tx store.Tx) error {
		for _, e := range append(live, expired) {
			if err := tx.Put(e.bucket, e.key, []byte(e.value), e.expires); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.NewDatabase(t)
	if _, _, err := runCLI(t, "localhost:1", "", "migrate-storage", "--from", path, "--to", dsn); err == nil || !strings.Contains(err.Error(), "stop Caddy first") {
		t.Fatalf("migrate-storage of a bolt file in use = %v, want a refusal", err)
	}
	clock = clock.Add(time.Second) // expired's time is up
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	t.Setenv("MCP_AUTH_TEST_DSN", dsn)
	out, _, err := runCLI(t, "localhost:1", "", "migrate-storage", "--from", path, "--to", "{env.MCP_AUTH_TEST_DSN}")
	if err != nil || !strings.Contains(out, fmt.Sprintf("copied %d entries", len(live))) {
		t.Fatalf("migrate-storage = %q, %v, want %d entries copied", out, err, len(live))
	}

	// Read back at the bolt clock, then just before and at each expiry.
	at := clock
	dst, err := postgres.Open(context.Background(), dsn, postgres.Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	read := func(e entry) ([]byte, error) {
		var v []byte
		err := dst.View(context.Background(), func(tx store.Tx) error {
			var err error
			v, err = tx.Get(e.bucket, e.key)
			return err
		})
		return v, err
	}
	for _, e := range live {
		if v, err := read(e); err != nil || string(v) != e.value {
			t.Errorf("Get(%s/%q) after migration = %q, %v, want %q", e.bucket, e.key, v, err, e.value)
		}
		if e.expires.IsZero() {
			continue
		}
		at = e.expires.Add(-time.Nanosecond)
		if _, err := read(e); err != nil {
			t.Errorf("Get(%s/%q) just before its expiry = %v, want it live", e.bucket, e.key, err)
		}
		at = e.expires
		if _, err := read(e); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get(%s/%q) at its expiry = %v, want ErrNotFound", e.bucket, e.key, err)
		}
		at = clock
	}
	if _, err := read(expired); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired entry copied: Get = %v, want ErrNotFound", err)
	}

	// Again into the same database: refused, and nothing changes.
	if err := dst.Update(context.Background(), func(tx store.Tx) error { return tx.Put("grants", "g1", []byte("changed"), time.Time{}) }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "localhost:1", "", "migrate-storage", "--from", path, "--to", dsn); err == nil || !strings.Contains(err.Error(), "already holds entries") {
		t.Fatalf("second migrate-storage = %v, want a refusal", err)
	}
	if v, err := read(live[0]); err != nil || string(v) != "changed" {
		t.Errorf("after the refused copy Get(grants/g1) = %q, %v, want changed", v, err)
	}
	// Into a database holding only one of the entries, the last the copy
	// comes to (bbolt exports its buckets in order: refresh after grants
	// and keys): refused, and the entries written before it are rolled
	// back with it (README: "one transaction ... or nothing").
	partial := pgtest.NewDatabase(t)
	pdst, err := postgres.Open(context.Background(), partial, postgres.Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	defer pdst.Close()
	if err := pdst.Update(context.Background(), func(tx store.Tx) error { return tx.Put(live[2].bucket, live[2].key, []byte("theirs"), time.Time{}) }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "localhost:1", "", "migrate-storage", "--from", path, "--to", partial); err == nil || !strings.Contains(err.Error(), "already holds entries") {
		t.Fatalf("migrate-storage into a database holding one of the entries = %v, want a refusal", err)
	}
	err = pdst.View(context.Background(), func(tx store.Tx) error {
		for _, e := range live {
			v, err := tx.Get(e.bucket, e.key)
			switch {
			case e == live[2] && (err != nil || string(v) != "theirs"):
				t.Errorf("after the refused copy Get(%s/%q) = %q, %v, want theirs", e.bucket, e.key, v, err)
			case e != live[2] && !errors.Is(err, store.ErrNotFound):
				t.Errorf("after the refused copy Get(%s/%q) = %q, %v, want nothing copied", e.bucket, e.key, v, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "localhost:1", "", "migrate-storage", "--from", filepath.Join(t.TempDir(), "none.db"), "--to", dsn); err == nil {
		t.Errorf("migrate-storage from a missing file = nil, want an error")
	}
	empty := filepath.Join(t.TempDir(), "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, "localhost:1", "", "migrate-storage", "--from", empty, "--to", dsn); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("migrate-storage from an empty file = %v, want a refusal", err)
	}
	if fi, err := os.Stat(empty); err != nil || fi.Size() != 0 {
		t.Errorf("migrate-storage wrote into its empty source (%v)", err)
	}
}
