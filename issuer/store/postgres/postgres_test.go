package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open opens dsn and closes the store at the end of the test.
func open(t *testing.T, dsn string, opts postgres.Options) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("Open() = %v, want nil", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		// The suite's Purge deletes what expired a moment ago; the
		// grace is TestPurgeGrace's.
		return open(t, pgtest.NewDatabase(t), postgres.Options{Now: now, PurgeGrace: -1})
	})
}

// sql runs statements on the database as a plain client would, beneath
// the Store.
func sql(t *testing.T, dsn, query string) string {
	t.Helper()
	out, err := pgtest.Shared(t).Psql(dsn, query)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMigrations(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := open(t, dsn, postgres.Options{})
	if got, want := sql(t, dsn, "SELECT string_agg(version::text, ',' ORDER BY version) FROM mcp_auth_schema"), versions(postgres.SchemaVersion); got != want {
		t.Fatalf("recorded versions after first Open = %q, want %q", got, want)
	}
	ctx := context.Background()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "k", []byte("v"), time.Time{}) }); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	// A second start migrates nothing and keeps the data.
	s = open(t, dsn, postgres.Options{})
	if got, want := sql(t, dsn, "SELECT count(*) FROM mcp_auth_schema"), fmt.Sprint(postgres.SchemaVersion); got != want {
		t.Fatalf("recorded versions after second Open = %s, want %s", got, want)
	}
	err := s.View(ctx, func(tx store.Tx) error {
		v, err := tx.Get("b", "k")
		if err == nil && string(v) != "v" {
			err = fmt.Errorf("Get = %q, want v", v)
		}
		return err
	})
	if err != nil {
		t.Fatalf("View after reopening = %v, want nil", err)
	}
	_ = s.Close()

	// A newer build migrated the database: this one refuses it.
	newer := postgres.SchemaVersion + 1
	sql(t, dsn, fmt.Sprintf("INSERT INTO mcp_auth_schema (version) VALUES (%d)", newer))
	_, err = postgres.Open(ctx, dsn, postgres.Options{})
	if !errors.Is(err, postgres.ErrSchemaTooNew) || !strings.Contains(err.Error(), fmt.Sprintf("schema version %d", newer)) {
		t.Fatalf("Open(newer schema) = %v, want ErrSchemaTooNew naming version %d", err, newer)
	}
}

// TestLaterStartsNeedNoCreate: only the first start creates tables
// (README: the role needs CREATE for it), so a role without CREATE on the
// schema, holding only what the store reads and writes, starts on a
// database at the current version and works: PostgreSQL checks CREATE
// for CREATE TABLE IF NOT EXISTS even when the table exists, and such
// an instance could not start at all.
func TestLaterStartsNeedNoCreate(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	open(t, dsn, postgres.Options{}).Close()
	// Roles are the server's, not the database's: one of this test's own.
	var role string
	for _, f := range strings.Fields(dsn) {
		if db, ok := strings.CutPrefix(f, "dbname="); ok {
			role = "app_" + db
		}
	}
	sql(t, dsn, fmt.Sprintf(`CREATE ROLE %[1]s LOGIN;
		REVOKE CREATE ON SCHEMA public FROM PUBLIC;
		GRANT SELECT, INSERT, UPDATE, DELETE ON mcp_auth_entries TO %[1]s;
		GRANT SELECT ON mcp_auth_schema TO %[1]s`, role))
	if got := sql(t, dsn, fmt.Sprintf("SELECT has_schema_privilege('%s', 'public', 'CREATE')", role)); got != "f" {
		t.Fatalf("the role may create tables (%s): the test proves nothing", got)
	}
	roleDSN := strings.Replace(dsn, "user=postgres", "user="+role, 1)
	s := open(t, roleDSN, postgres.Options{})
	ctx := context.Background()
	if err := s.Update(ctx, func(tx store.Tx) error {
		return tx.Put("b", "k", []byte("v"), time.Now().Add(-postgres.DefaultPurgeGrace-time.Second))
	}); err != nil {
		t.Fatalf("Update as a role without CREATE = %v, want nil", err)
	}
	if err := s.View(ctx, func(tx store.Tx) error { return tx.List("b", "", func(string, []byte) error { return nil }) }); err != nil {
		t.Fatalf("View as a role without CREATE = %v, want nil", err)
	}
	if n, err := s.Purge(ctx); err != nil || n != 1 {
		t.Fatalf("Purge as a role without CREATE = %d, %v; want 1, nil", n, err)
	}
	// What an Update run alone takes (lockAfter).
	sql(t, roleDSN, "BEGIN; LOCK TABLE mcp_auth_entries IN SHARE ROW EXCLUSIVE MODE; COMMIT")
}

// TestTablesFoundThroughSearchPath: the store names its tables without a
// schema, so PostgreSQL finds them through the role's search_path, by
// default the schema named after the role first, then public. A schema
// of the role's name that another role created, holding tables of the
// store's names, is used in place of public's: whoever may create
// schemas (or tables in a schema the path reaches first) in the
// instances' database could have them read and write a table of theirs.
// README (Running on PostgreSQL, Schema) says so and what to do.
func TestTablesFoundThroughSearchPath(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	s := open(t, dsn, postgres.Options{})
	ctx := context.Background()
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "k", []byte("public's"), time.Time{}) }); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	var role string
	for _, f := range strings.Fields(dsn) {
		if db, ok := strings.CutPrefix(f, "dbname="); ok {
			role = "app_" + db
		}
	}
	other := "other_" + strings.TrimPrefix(role, "app_")
	sql(t, dsn, fmt.Sprintf(`CREATE ROLE %[1]s LOGIN;
		CREATE ROLE %[2]s;
		REVOKE CREATE ON SCHEMA public FROM PUBLIC;
		GRANT SELECT, INSERT, UPDATE, DELETE ON mcp_auth_entries TO %[1]s;
		GRANT SELECT ON mcp_auth_schema TO %[1]s;
		CREATE SCHEMA %[1]s AUTHORIZATION %[2]s;
		CREATE TABLE %[1]s.mcp_auth_schema (LIKE public.mcp_auth_schema INCLUDING ALL);
		INSERT INTO %[1]s.mcp_auth_schema SELECT * FROM public.mcp_auth_schema;
		CREATE TABLE %[1]s.mcp_auth_entries (LIKE public.mcp_auth_entries INCLUDING ALL);
		ALTER TABLE %[1]s.mcp_auth_schema OWNER TO %[2]s;
		ALTER TABLE %[1]s.mcp_auth_entries OWNER TO %[2]s;
		SET ROLE %[2]s;
		INSERT INTO %[1]s.mcp_auth_entries VALUES ('b'::bytea, 'k'::bytea, convert_to('theirs', 'UTF8'), NULL);
		GRANT USAGE ON SCHEMA %[1]s TO %[1]s;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %[1]s TO %[1]s`, role, other))
	s = open(t, strings.Replace(dsn, "user=postgres", "user="+role, 1), postgres.Options{})
	var got []byte
	if err := s.View(ctx, func(tx store.Tx) error {
		var err error
		got, err = tx.Get("b", "k")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "theirs" {
		t.Errorf("Get = %q, want the table of the schema named after the role (%q): the search_path decides", got, "theirs")
	}
}

func versions(n int) string {
	var v []string
	for i := 1; i <= n; i++ {
		v = append(v, fmt.Sprint(i))
	}
	return strings.Join(v, ",")
}

// TestConcurrentFirstStarts opens one fresh database from several
// instances at once: every Open succeeds and the schema is created once.
func TestConcurrentFirstStarts(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	const instances = 8
	var wg sync.WaitGroup
	errs := make([]error, instances)
	for n := range instances {
		wg.Go(func() {
			s, err := postgres.Open(context.Background(), dsn, postgres.Options{})
			if err == nil {
				err = s.Update(context.Background(), func(tx store.Tx) error {
					return tx.Put("b", fmt.Sprint(n), nil, time.Time{})
				})
				_ = s.Close()
			}
			errs[n] = err
		})
	}
	wg.Wait()
	for n, err := range errs {
		if err != nil {
			t.Errorf("instance %d: %v", n, err)
		}
	}
	if got, want := sql(t, dsn, "SELECT count(*) FROM mcp_auth_schema"), fmt.Sprint(postgres.SchemaVersion); got != want {
		t.Fatalf("recorded versions = %s, want %s", got, want)
	}
	if got := sql(t, dsn, "SELECT count(*) FROM mcp_auth_entries"); got != fmt.Sprint(instances) {
		t.Fatalf("entries = %s, want %d", got, instances)
	}
}

// conflict runs fn in an Update whose first run reads "b"/"k", then lets
// another Update change it and commit, then writes it: a serialization
// failure. It returns Update's error and how often fn ran.
func conflict(t *testing.T, s *postgres.Store) (error, int) {
	t.Helper()
	ctx := context.Background()
	runs := 0
	read := make(chan struct{})
	written := make(chan error)
	go func() {
		<-read
		written <- s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "k", []byte("other"), time.Time{}) })
	}()
	err := s.Update(ctx, func(tx store.Tx) error {
		runs++
		v, err := tx.Get("b", "k")
		if err != nil {
			return err
		}
		if runs == 1 {
			close(read)
			if err := <-written; err != nil {
				return fmt.Errorf("concurrent Update: %w", err)
			}
		}
		return tx.Put("b", "k", append(v, "+mine"...), time.Time{})
	})
	return err, runs
}

func TestRetry(t *testing.T) {
	if postgres.DefaultMaxAttempts != 20 || postgres.MaxBackoff != 50*time.Millisecond {
		t.Fatalf("DefaultMaxAttempts %d, MaxBackoff %v; README (Running on PostgreSQL, Consistency) says up to 20 times with a backoff of at most 50 ms", postgres.DefaultMaxAttempts, postgres.MaxBackoff)
	}
	t.Run("retried", func(t *testing.T) {
		s := open(t, pgtest.NewDatabase(t), postgres.Options{MaxAttempts: 2})
		if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put("b", "k", []byte("first"), time.Time{}) }); err != nil {
			t.Fatal(err)
		}
		err, runs := conflict(t, s)
		if err != nil || runs != 2 {
			t.Fatalf("Update(conflicting) = %v after %d runs, want nil after 2", err, runs)
		}
		// The second run read what the concurrent Update committed.
		err = s.View(context.Background(), func(tx store.Tx) error {
			v, err := tx.Get("b", "k")
			if err == nil && string(v) != "other+mine" {
				err = fmt.Errorf("Get = %q, want other+mine", v)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("gives up", func(t *testing.T) {
		s := open(t, pgtest.NewDatabase(t), postgres.Options{MaxAttempts: 1})
		if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put("b", "k", []byte("first"), time.Time{}) }); err != nil {
			t.Fatal(err)
		}
		err, runs := conflict(t, s)
		if !errors.Is(err, store.ErrUnavailable) || runs != 1 {
			t.Fatalf("Update(conflicting, 1 attempt) = %v after %d runs, want ErrUnavailable after 1", err, runs)
		}
		err = s.View(context.Background(), func(tx store.Tx) error {
			v, err := tx.Get("b", "k")
			if err == nil && string(v) != "other" {
				err = fmt.Errorf("Get = %q, want other (the failed Update wrote nothing)", v)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestPurgeBatches purges more expired entries than one batch holds.
func TestPurgeBatches(t *testing.T) {
	if postgres.DefaultPurgeBatch != 500 || postgres.DefaultPurgeGrace != time.Minute {
		t.Fatalf("DefaultPurgeBatch %d, DefaultPurgeGrace %v; README (Running on PostgreSQL, Purging) says batches of 500 rows, a minute after expiry", postgres.DefaultPurgeBatch, postgres.DefaultPurgeGrace)
	}
	// Before the server's clock: Purge also waits for that (TestPurgeGrace).
	clock := storetest.NewClock(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, pgtest.NewDatabase(t), postgres.Options{Now: clock.Now, PurgeBatch: 3})
	ctx := context.Background()
	err := s.Update(ctx, func(tx store.Tx) error {
		for i := range 10 {
			if err := tx.Put("b", fmt.Sprintf("exp%d", i), nil, clock.Now().Add(time.Minute)); err != nil {
				return err
			}
		}
		return tx.Put("b", "live", nil, clock.Now().Add(time.Hour))
	})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute + postgres.DefaultPurgeGrace)
	if n, err := s.Purge(ctx); err != nil || n != 10 {
		t.Fatalf("Purge() = %d, %v, want 10, nil", n, err)
	}
	if n, err := s.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("second Purge() = %d, %v, want 0, nil", n, err)
	}
}

// TestPurgeGrace: Purge leaves an entry for Options.PurgeGrace past its
// expiry (by the purging instance's clock, which may run ahead of the
// others'), then deletes it. An instance whose clock runs further ahead
// than the grace (NTP stepped it wrong) deletes only what the server's
// clock, which the others agree with, has seen expire past the grace
// too (TestDPoPReplayAfterPurgeFarAhead).
func TestPurgeGrace(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	ahead := open(t, dsn, postgres.Options{Now: func() time.Time { return time.Now().Add(time.Hour) }})
	ctx := context.Background()
	if err := ahead.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "live", nil, time.Now().Add(time.Minute)) }); err != nil {
		t.Fatal(err)
	}
	if n, err := ahead.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("Purge() by an instance an hour ahead of the server = %d, %v, want 0, nil", n, err)
	}

	clock := storetest.NewClock(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC))
	s := open(t, pgtest.NewDatabase(t), postgres.Options{Now: clock.Now})
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", "k", nil, clock.Now()) }); err != nil {
		t.Fatal(err)
	}
	clock.Advance(postgres.DefaultPurgeGrace - time.Second)
	if n, err := s.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("Purge() within the grace = %d, %v, want 0, nil", n, err)
	}
	clock.Advance(time.Second)
	if n, err := s.Purge(ctx); err != nil || n != 1 {
		t.Fatalf("Purge() after the grace = %d, %v, want 1, nil", n, err)
	}
}

// TestOpenErrorsHidePassword: a DSN's password never shows in an error.
func TestOpenErrorsHidePassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://mcp:s3cret-pw@127.0.0.1:1/mcp?connect_timeout=2",
		"host=127.0.0.1 port=1 user=mcp password=s3cret-pw dbname=mcp connect_timeout=2",
		"postgres://mcp:s3cret-pw@127.0.0.1:1/mcp?sslmode=nonsense",
		// Passwords pgx's best-effort masking of a DSN it cannot read
		// missed (s28-pg): spaces around '=' (which README's DSNs
		// allow), a quoted password with an escaped quote, a
		// placeholder's password with spaces left unquoted, an '@' in
		// a URL's password.
		"host=127.0.0.1 port=1 user=mcp password = 's3cret-pw' sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
		"host=127.0.0.1 port=1 user=mcp password = s3cret-pw sslmode=nonsense",
		`host=127.0.0.1 port=1 user=mcp password='a\' s3cret-pw' sslmode=nonsense`,
		"host=127.0.0.1 port=1 user=mcp dbname=mcp password=correct horse s3cret-pw",
		"host=127.0.0.1 port=1 password=correct s3cret-pw user=mcp",
		"postgres://mcp:pw@s3cret-pw@127.0.0.1:1/mcp?sslmode=nonsense",
	} {
		_, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err == nil {
			t.Fatalf("Open(unreachable) = nil, want an error")
		}
		if strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("Open error shows the password: %v", err)
		}
		// It still says what is wrong.
		for in, cause := range map[string]string{"sslmode=nonsense": "sslmode is invalid", "/nonexistent/ca.pem": "/nonexistent/ca.pem"} {
			if strings.Contains(dsn, in) && !strings.Contains(err.Error(), cause) {
				t.Errorf("Open error = %v, want it to name %q", err, cause)
			}
		}
	}
}

// TestUpdateNoSync: UpdateNoSync is Update without waiting for the WAL
// flush: as serialized (20 concurrent compare-and-swap increments end at
// 20), and a failing fn writes nothing.
func TestUpdateNoSync(t *testing.T) {
	s := open(t, pgtest.NewDatabase(t), postgres.Options{})
	ctx := context.Background()
	const workers = 20
	errs := make(chan error, workers)
	for range workers {
		go func() {
			errs <- s.UpdateNoSync(ctx, func(tx store.Tx) error {
				v, err := tx.Get("b", "n")
				if err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				return tx.Put("b", "n", append(v, 'x'), time.Time{})
			})
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatalf("UpdateNoSync(increment) = %v", err)
		}
	}
	errFail := errors.New("fail")
	if err := s.UpdateNoSync(ctx, func(tx store.Tx) error {
		if err := tx.Put("b", "n", nil, time.Time{}); err != nil {
			return err
		}
		return errFail
	}); !errors.Is(err, errFail) {
		t.Fatalf("UpdateNoSync(failing) = %v, want %v", err, errFail)
	}
	err := s.View(ctx, func(tx store.Tx) error {
		v, err := tx.Get("b", "n")
		if err == nil && len(v) != workers {
			t.Errorf("value after %d increments and a failed Update = %d bytes, want %d", workers, len(v), workers)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStandbyNotUsed: a DSN naming two hosts, as one of a primary and its
// standby does, names after a failover first the old primary, back as
// the new one's standby. The store connected to the first that answered,
// the standby: its reads were the standby's, as far as it had replayed
// (a revocation the primary took was not seen, the instance's gateways
// honouring tokens the others refuse, while its read of the revocation
// log counted as current), and every write failed. It now connects only
// to a server that is not in recovery (target_session_attrs=primary,
// unless the DSN sets it), here the second host.
func TestStandbyNotUsed(t *testing.T) {
	srv, dsn := pgtest.Own(t, pgtest.Options{Durable: true})
	a := open(t, dsn+patient, postgres.Options{})
	if err := put(a, "k", "before"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(srv.DataDir())
	standby := filepath.Join(dir, "standby")
	if err := srv.Exec("pg_basebackup", "-h", dir, "-p", "5432", "-U", "postgres", "-D", standby, "-R", "-X", "stream"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec("pg_ctl", "-D", standby, "-l", filepath.Join(standby, "log"), "-w", "-t", "60",
		"-o", "-k "+standby+" -p 5432 -c listen_addresses='' -c max_connections=300", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(standby, "log"))
		t.Fatalf("%v\n%s", err, log)
	}
	t.Cleanup(func() { _ = srv.Exec("pg_ctl", "-D", standby, "-m", "immediate", "-w", "stop") })
	standbyDSN := strings.Replace(dsn, "host="+dir, "host="+standby, 1)
	psql := func(dsn, q string) string {
		t.Helper()
		out, err := srv.Psql(dsn, q)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := psql(standbyDSN, "SELECT pg_is_in_recovery()"); got != "t" {
		t.Fatalf("standby in recovery = %q, want t", got)
	}
	// Its replay stopped: what the primary takes from now on is not there.
	psql(standbyDSN, "SELECT pg_wal_replay_pause()")
	if err := put(a, "k", "after"); err != nil {
		t.Fatal(err)
	}
	both := strings.Replace(dsn, "host="+dir+" port=5432", "host="+standby+","+dir+" port=5432,5432", 1)
	if both == dsn {
		t.Fatalf("no host in %q", dsn)
	}
	b, err := postgres.Open(context.Background(), both+patient, postgres.Options{})
	if err != nil {
		t.Fatalf("Open(the standby, then the primary) = %v, want the primary", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if v, err := get(b, "k"); err != nil || v != "after" {
		t.Errorf("Get = %q, %v; want after (the primary's)", v, err)
	}
	if err := put(b, "k", "b's"); err != nil {
		t.Errorf("Update = %v, want nil (on the primary)", err)
	}
	if v, err := get(a, "k"); err != nil || v != "b's" {
		t.Errorf("Get on the primary = %q, %v; want b's", v, err)
	}
	// With only the standby, nothing: 503 rather than its reads.
	if s, err := postgres.Open(context.Background(), standbyDSN+patient, postgres.Options{}); err == nil {
		_ = s.Close()
		t.Errorf("Open(the standby alone) = nil, want an error")
	}
	// Unless the DSN chooses.
	s, err := postgres.Open(context.Background(), standbyDSN+patient+" target_session_attrs=any", postgres.Options{})
	if err != nil {
		t.Fatalf("Open(the standby, target_session_attrs=any) = %v, want nil", err)
	}
	defer s.Close()
	if v, err := get(s, "k"); err != nil || v != "before" {
		t.Errorf("Get on the standby = %q, %v; want before (its replay paused)", v, err)
	}
	// Or the environment, as libpq reads it.
	t.Setenv("PGTARGETSESSIONATTRS", "any")
	e, err := postgres.Open(context.Background(), standbyDSN+patient, postgres.Options{})
	if err != nil {
		t.Fatalf("Open(the standby, PGTARGETSESSIONATTRS=any) = %v, want nil", err)
	}
	defer e.Close()
	if v, err := get(e, "k"); err != nil || v != "before" {
		t.Errorf("Get on the standby (PGTARGETSESSIONATTRS=any) = %q, %v; want before", v, err)
	}
}
