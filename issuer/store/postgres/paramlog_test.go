package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestParameterLogging: a server that logs statements (log_statement =
// mod, an auditing setting) writes their parameters, every record the
// store writes (a signing key's private part among them), to its log;
// ParameterLogging names the setting, and none once
// log_parameter_max_length is 0, which keeps the parameters out.
func TestParameterLogging(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	db := sql(t, dsn, "SELECT current_database()")
	check := func(settings, want string, logs bool) {
		t.Helper()
		if settings != "" {
			sql(t, dsn, "ALTER DATABASE "+db+" "+settings)
		}
		s := open(t, dsn, postgres.Options{}) // new sessions: the settings apply
		got, err := s.ParameterLogging(ctx)
		if err != nil || got != want {
			t.Errorf("after %q: ParameterLogging() = %q, %v; want %q", settings, got, err, want)
		}
		// What the server logs of a record written now.
		secret := writeSecret(t, s)
		_ = s.Close()
		wait := 2 * time.Second
		if !logs {
			wait = 0 // as before: read once where none is expected
		}
		if logged := recordLogged(t, secret, wait); logged != logs {
			t.Errorf("after %q: the server's log holds the record: %v, want %v", settings, logged, logs)
		}
	}
	check("", "", false)
	check("SET log_statement = 'mod'", "log_statement = mod", true)
	check("SET log_min_duration_statement = 0", "log_statement = mod, log_min_duration_statement = 0", true)
	check("SET log_parameter_max_length = 0", "", false)
	check("RESET ALL", "", false)
	// A failed statement's (none fails here).
	check("SET log_parameter_max_length_on_error = 64", "log_parameter_max_length_on_error = 64B", false)
}

// TestParameterLoggingAutoExplain: auto_explain logs the parameters of the
// statements it explains from PostgreSQL 16 on, as
// auto_explain.log_parameter_max_length says; before 16 that setting does
// not exist and its plans name none. ParameterLogging names
// auto_explain.log_min_duration where the server's log then holds the
// record, and only there: on PostgreSQL 13 to 15 it named it, and
// migrate-storage refused to copy, though nothing it writes reached the
// log and no setting could say so.
func TestParameterLoggingAutoExplain(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	db := sql(t, dsn, "SELECT current_database()")
	sql(t, dsn, "ALTER DATABASE "+db+" SET session_preload_libraries = 'auto_explain'")
	sql(t, dsn, "ALTER DATABASE "+db+" SET auto_explain.log_min_duration = 0")
	logsParameters := sql(t, dsn, "SELECT current_setting('server_version_num')::int >= 160000") == "t"
	s := open(t, dsn, postgres.Options{})
	want := ""
	if logsParameters {
		want = "auto_explain.log_min_duration = 0"
	}
	if got, err := s.ParameterLogging(ctx); err != nil || got != want {
		t.Errorf("ParameterLogging() = %q, %v; want %q", got, err, want)
	}
	secret := writeSecret(t, s)
	// auto_explain writes its plan of the write before the write returns:
	// once a later statement's plan is in the log, the write's is too.
	marker := "after-" + rand.Text()
	sql(t, dsn, "SELECT '"+marker+"'")
	b := logAfter(t, marker)
	if logged := bytes.Contains(b, []byte(hex.EncodeToString([]byte(secret)))); logged != logsParameters {
		t.Errorf("the server's log holds the record: %v, want %v", logged, logsParameters)
	}
}

// TestParameterLoggingAutoExplainVerbose: auto_explain's plan of a
// write made for the values given (a custom plan) holds them as
// constants, and auto_explain.log_verbose shows them, every record the
// store writes, in the plan's output columns: on PostgreSQL 15, whose
// auto_explain README said names no parameter, and on 16 with
// auto_explain.log_parameter_max_length = 0. ParameterLogging named
// nothing there: no warning, and migrate-storage copied.
func TestParameterLoggingAutoExplainVerbose(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	db := sql(t, dsn, "SELECT current_database()")
	settings := []string{"session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = 0", "auto_explain.log_verbose = on"}
	if sql(t, dsn, "SELECT current_setting('server_version_num')::int >= 160000") == "t" {
		settings = append(settings, "auto_explain.log_parameter_max_length = 0")
	}
	for _, s := range settings {
		sql(t, dsn, "ALTER DATABASE "+db+" SET "+s)
	}
	s := open(t, dsn, postgres.Options{})
	if got, err := s.ParameterLogging(ctx); err != nil || got != "auto_explain.log_min_duration = 0, auto_explain.log_verbose = on" {
		t.Errorf("ParameterLogging() = %q, %v; want auto_explain.log_min_duration and log_verbose named", got, err)
	}
	secret := writeSecret(t, s)
	// As in TestParameterLoggingAutoExplain: once a later statement's
	// plan is in the log, the write's is too.
	marker := "after-" + rand.Text()
	sql(t, dsn, "SELECT '"+marker+"'")
	b := logAfter(t, marker)
	if !bytes.Contains(b, []byte(hex.EncodeToString([]byte(secret)))) {
		t.Error("the server's log does not hold the record: the test does not test")
	}
}

// TestParameterLoggingDebugPrintPlan: debug_print_plan, a debugging
// setting any role may set, prints each statement's plan tree, and the
// plan PostgreSQL makes for the unnamed statement with the values given
// holds every value a write sends as a constant (in decimal bytes), on
// the DETAIL line, whatever log_parameter_max_length says. The log held
// every record the store wrote and ParameterLogging named nothing: Caddy
// did not warn and migrate-storage copied. terse keeps DETAIL out of a
// text log, and the plan with it; log_min_messages fatal keeps its LOG
// line out.
func TestParameterLoggingDebugPrintPlan(t *testing.T) {
	ctx := context.Background()
	// The marker is raised in a database of its own: log_min_messages
	// fatal would keep it out of the log too.
	markerDSN := pgtest.NewDatabase(t)
	for _, tt := range []struct {
		settings []string
		want     string
		logs     bool
	}{
		{[]string{"debug_print_plan = on", "log_parameter_max_length = 0"}, "debug_print_plan = on", true},
		{[]string{"debug_print_plan = on", "log_error_verbosity = terse"}, "", false},
		{[]string{"debug_print_plan = on", "log_min_messages = fatal"}, "", false},
	} {
		dsn := pgtest.NewDatabase(t)
		db := sql(t, dsn, "SELECT current_database()")
		for _, s := range tt.settings {
			sql(t, dsn, "ALTER DATABASE "+db+" SET "+s)
		}
		s := open(t, dsn, postgres.Options{})
		if got, err := s.ParameterLogging(ctx); err != nil || got != tt.want {
			t.Errorf("%v: ParameterLogging() = %q, %v; want %q", tt.settings, got, err, tt.want)
		}
		secret := "private-" + rand.Text()
		if err := s.Update(ctx, func(tx store.Tx) error {
			return tx.Put("keys", "kid", []byte(`{"d":"`+secret+`"}`), time.Time{})
		}); err != nil {
			t.Fatal(err)
		}
		// Logged at LOG on a line of its own after the write's plan:
		// once it is in the log, the plan would be.
		marker := "after-" + rand.Text()
		sql(t, markerDSN, "DO $$BEGIN RAISE LOG '"+marker+"'; END$$")
		var b []byte
		for deadline := time.Now().Add(5 * time.Second); !bytes.Contains(b, []byte(marker)); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%v: the marker is not in the log: the test does not test", tt.settings)
			}
			var err error
			if b, err = os.ReadFile(pgtest.Shared(t).LogFile()); err != nil {
				t.Fatal(err)
			}
		}
		// The plan dump writes a constant's bytes in decimal, its lines
		// wrapped (within a number too) and indented.
		var dec strings.Builder
		for _, c := range []byte(secret) {
			dec.WriteString(strconv.Itoa(int(c)))
		}
		flat := strings.Join(strings.Fields(string(b)), "")
		if logged := strings.Contains(flat, dec.String()); logged != tt.logs {
			t.Errorf("%v: the server's log holds the record: %v, want %v", tt.settings, logged, tt.logs)
		}
	}
}

// TestParameterLoggingOnError: with log_parameter_max_length_on_error
// other than 0, PostgreSQL adds a failed statement's parameters to the
// CONTEXT of its ERROR, which the log holds whenever log_min_messages lets
// ERROR through, whatever log_min_error_statement says (that one adds the
// STATEMENT only). ParameterLogging named nothing where
// log_min_error_statement was panic: the warning was missing, and
// migrate-storage copied.
func TestParameterLoggingOnError(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		settings []string
		want     string
		logs     bool
	}{
		{[]string{"log_min_error_statement = panic"}, "log_parameter_max_length_on_error = 64B", true},
		{[]string{"log_min_error_statement = panic", "log_min_messages = fatal"}, "", false},
	} {
		dsn := pgtest.NewDatabase(t)
		db := sql(t, dsn, "SELECT current_database()")
		for _, s := range append(tt.settings, "log_parameter_max_length_on_error = 64") {
			sql(t, dsn, "ALTER DATABASE "+db+" SET "+s)
		}
		s := open(t, dsn, postgres.Options{})
		if got, err := s.ParameterLogging(ctx); err != nil || got != tt.want {
			t.Errorf("%v: ParameterLogging() = %q, %v; want %q", tt.settings, got, err, tt.want)
		}
		// A statement that fails, with a parameter, as the store's may
		// (a serialization failure).
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		secret := "private-" + rand.Text()
		if _, err := conn.Exec(ctx, "SELECT length($1::text) / 0", secret); err == nil {
			t.Fatal("the statement did not fail")
		}
		_ = conn.Close(ctx)
		// The server writes its log a moment later (none expected: a
		// moment is waited for all the same).
		if logged := logHolds(t, []byte(secret), 2*time.Second); logged != tt.logs {
			t.Errorf("%v: the server's log holds the parameter: %v, want %v", tt.settings, logged, tt.logs)
		}
	}
}

// TestParameterLoggingTerse: log_error_verbosity = terse leaves a logged
// statement's DETAIL and a failed one's CONTEXT, the lines that hold
// their parameters, out of the text log, and ParameterLogging names no
// setting there; csvlog (and jsonlog), which the logging collector
// writes, keep them, and it names the settings there. It named them
// under terse too, where the log held none of the parameters.
func TestParameterLoggingTerse(t *testing.T) {
	ctx := context.Background()
	srv, dsn := pgtest.Own(t, pgtest.Options{})
	db := sql(t, dsn, "SELECT current_database()")
	for _, s := range []string{"log_statement = 'mod'", "log_parameter_max_length_on_error = 64", "log_error_verbosity = terse"} {
		sql(t, dsn, "ALTER DATABASE "+db+" SET "+s)
	}
	check := func(label, want string, logs bool) {
		t.Helper()
		s := open(t, dsn, postgres.Options{})
		if got, err := s.ParameterLogging(ctx); err != nil || got != want {
			t.Errorf("%s: ParameterLogging() = %q, %v; want %q", label, got, err, want)
		}
		// A record written, and a statement that fails, as the store's
		// may (a serialization failure).
		written, failed := writeSecret(t, s), "private-"+rand.Text()
		_ = s.Close()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT length($1::text) / 0", failed); err == nil {
			t.Fatal("the statement did not fail")
		}
		// Logged after both (log_statement = mod logs it, no parameter
		// in it): once it is in the log, they would be.
		marker := "after-" + rand.Text()
		if _, err := conn.Exec(ctx, `CREATE TEMP TABLE "`+marker+`" (v int)`); err != nil {
			t.Fatal(err)
		}
		_ = conn.Close(ctx)
		var b []byte
		for deadline := time.Now().Add(5 * time.Second); !bytes.Contains(b, []byte(marker)); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the statement after is not in the log: the test does not test", label)
			}
			b = nil
			files, _ := filepath.Glob(filepath.Join(srv.DataDir(), "log", "*"))
			for _, f := range append(files, srv.LogFile()) {
				if l, err := os.ReadFile(f); err == nil {
					b = append(b, l...)
				}
			}
		}
		if got := bytes.Contains(b, []byte(hex.EncodeToString([]byte(written)))); got != logs {
			t.Errorf("%s: the server's log holds the record written: %v, want %v", label, got, logs)
		}
		if got := bytes.Contains(b, []byte(failed)); got != logs {
			t.Errorf("%s: the server's log holds the failed statement's parameter: %v, want %v", label, got, logs)
		}
	}
	check("terse, stderr", "", false)
	sql(t, dsn, "ALTER SYSTEM SET log_destination = 'stderr, csvlog'")
	sql(t, dsn, "SELECT pg_reload_conf()")
	// Without the collector, csvlog is written as stderr's text.
	check("terse, csvlog without the collector", "", false)
	sql(t, dsn, "ALTER SYSTEM SET logging_collector = on")
	if err := srv.Halt(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	check("terse, csvlog", "log_statement = mod, log_parameter_max_length_on_error = 64B", true)
}

// TestOpenRefusesSimpleProtocol: with default_query_exec_mode
// simple_protocol in its DSN (a setting for connection poolers), pgx
// writes every value into the statement's text, so a server that logs
// statements logged every record the store wrote, the signing keys'
// private parts among them, even with log_parameter_max_length = 0, the
// setting README gives to keep them out, and ParameterLogging named
// nothing (no warning, and migrate-storage copied). Open refuses such a
// DSN, naming the setting; with exec, the pooler's other mode, the
// record stays out of the log.
func TestOpenRefusesSimpleProtocol(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	db := sql(t, dsn, "SELECT current_database()")
	sql(t, dsn, "ALTER DATABASE "+db+" SET log_statement = 'mod'")
	sql(t, dsn, "ALTER DATABASE "+db+" SET log_parameter_max_length = 0")
	for _, d := range []string{dsn + " default_query_exec_mode=simple_protocol", dsn + " default_query_exec_mode='simple_protocol'"} {
		s, err := postgres.Open(ctx, d, postgres.Options{})
		if err == nil {
			secret := writeSecret(t, s)
			_ = s.Close()
			t.Fatalf("Open(simple_protocol) = nil, want an error; the server's log holds the record: %v", recordLogged(t, secret, 0))
		}
		if !strings.Contains(err.Error(), "default_query_exec_mode simple_protocol") {
			t.Errorf("Open(simple_protocol) = %v, want it named", err)
		}
	}
	s := open(t, dsn+" default_query_exec_mode=exec", postgres.Options{})
	if got, err := s.ParameterLogging(ctx); got != "" || err != nil {
		t.Errorf("ParameterLogging() = %q, %v; want none", got, err)
	}
	secret := writeSecret(t, s)
	_ = s.Close()
	// The server writes its log line a moment later.
	if recordLogged(t, secret, time.Second) {
		t.Error("with default_query_exec_mode exec the server's log holds the record")
	}
}

// TestParameterLoggingMinMessages: statements are logged at LOG, which
// log_min_messages = fatal (or panic) keeps out of the log with their
// parameters; ParameterLogging named log_statement and the like there
// all the same. At error, LOG still reaches the log.
func TestParameterLoggingMinMessages(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		level, want string
		logs        bool
	}{
		{"fatal", "", false},
		{"panic", "", false},
		{"error", "log_statement = mod, log_min_duration_statement = 0", true},
	} {
		dsn := pgtest.NewDatabase(t)
		db := sql(t, dsn, "SELECT current_database()")
		for _, s := range []string{"log_statement = 'mod'", "log_min_duration_statement = 0", "log_min_messages = " + tt.level} {
			sql(t, dsn, "ALTER DATABASE "+db+" SET "+s)
		}
		s := open(t, dsn, postgres.Options{})
		if got, err := s.ParameterLogging(ctx); err != nil || got != tt.want {
			t.Errorf("log_min_messages = %s: ParameterLogging() = %q, %v; want %q", tt.level, got, err, tt.want)
		}
		secret := writeSecret(t, s)
		_ = s.Close()
		// The server writes its log a moment later (none expected: a
		// moment is waited for all the same).
		if logged := recordLogged(t, secret, 2*time.Second); logged != tt.logs {
			t.Errorf("log_min_messages = %s: the server's log holds the record: %v, want %v", tt.level, logged, tt.logs)
		}
	}
}

// writeSecret writes a record holding a fresh secret through s, as the
// store writes a signing key, and returns the secret.
func writeSecret(t *testing.T, s store.Store) string {
	t.Helper()
	secret := "private-" + rand.Text()
	if err := s.Update(context.Background(), func(tx store.Tx) error {
		return tx.Put("keys", "kid", []byte(`{"d":"`+secret+`"}`), time.Time{})
	}); err != nil {
		t.Fatal(err)
	}
	return secret
}

// recordLogged reports whether the shared server's log holds the record
// writeSecret wrote (as the hex of a bytea parameter). The server writes
// its log a moment after the statement: it is read again until it holds
// the record or wait has passed (waited out whole where none is
// expected).
func recordLogged(t *testing.T, secret string, wait time.Duration) bool {
	t.Helper()
	return logHolds(t, []byte(hex.EncodeToString([]byte(secret))), wait)
}

// logHolds reports whether the shared server's log holds b within wait.
func logHolds(t *testing.T, b []byte, wait time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		l, err := os.ReadFile(pgtest.Shared(t).LogFile())
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(l, b) || time.Now().After(deadline) {
			return bytes.Contains(l, b)
		}
	}
}

// logAfter is the shared server's log once it holds marker, which a
// statement run after the ones a test looks for wrote: what they log is
// in it then. It fails the test when marker is not there within 5 s.
func logAfter(t *testing.T, marker string) []byte {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, err := os.ReadFile(pgtest.Shared(t).LogFile())
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(marker)) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatal("the statement after is not in the log: the test does not test")
		}
	}
}

// TestParameterLoggingPgauditRole: pgaudit's object audit logging logs
// every statement on a table the role pgaudit.role names has a privilege
// on (a column's too), with its parameters under pgaudit.log_parameter,
// though pgaudit.log is none: with pgaudit 1.7 on PostgreSQL 15, a role
// granted INSERT on mcp_auth_entries put each record the store wrote,
// in hex, on an AUDIT line of the server's log, and ParameterLogging
// named nothing. It names the role where it has such a privilege, and
// only there. (The server here need not load pgaudit: its settings are
// then placeholders, which the store's sessions read all the same.)
func TestParameterLoggingPgauditRole(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	db := sql(t, dsn, "SELECT current_database()")
	// A role name as pgaudit reads it: exact, not an identifier.
	role := "Auditor " + strings.ToLower(rand.Text())
	quoted := `"` + role + `"`
	sql(t, dsn, "CREATE ROLE "+quoted+" NOLOGIN")
	t.Cleanup(func() {
		sql(t, dsn, "DROP OWNED BY "+quoted)
		sql(t, dsn, "DROP ROLE "+quoted)
	})
	sql(t, dsn, "ALTER DATABASE "+db+" SET pgaudit.log_parameter = on")
	sql(t, dsn, "ALTER DATABASE "+db+" SET pgaudit.role = '"+role+"'")
	check := func(grant, want string) {
		t.Helper()
		if grant != "" {
			sql(t, dsn, grant)
		}
		s := open(t, dsn, postgres.Options{})
		if got, err := s.ParameterLogging(ctx); err != nil || got != want {
			t.Errorf("after %q: ParameterLogging() = %q, %v; want %q", grant, got, err, want)
		}
		_ = s.Close()
	}
	open(t, dsn, postgres.Options{}).Close() // the table
	check("", "")
	check("GRANT SELECT ON mcp_auth_schema TO "+quoted, "")
	audited := "pgaudit.role = " + role + ", pgaudit.log_parameter = on"
	check("GRANT INSERT (value) ON mcp_auth_entries TO "+quoted, audited)
	check("REVOKE ALL ON mcp_auth_entries FROM "+quoted, "")
	check("GRANT DELETE ON mcp_auth_entries TO "+quoted, audited)
	check("REVOKE ALL ON mcp_auth_entries FROM "+quoted+"; GRANT SELECT ON mcp_auth_entries TO PUBLIC", audited)
	check("ALTER DATABASE "+db+" SET pgaudit.log_parameter = off", "")
}
