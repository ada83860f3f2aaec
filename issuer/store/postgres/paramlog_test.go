package postgres_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
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
		secret := "private-" + rand.Text()
		if err := s.Update(ctx, func(tx store.Tx) error {
			return tx.Put("keys", "kid", []byte(`{"d":"`+secret+`"}`), time.Time{})
		}); err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		var logged bool
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			b, err := os.ReadFile(pgtest.Shared(t).LogFile())
			if err != nil {
				t.Fatal(err)
			}
			logged = bytes.Contains(b, []byte(hex.EncodeToString([]byte(secret))))
			if logged || !logs || time.Now().After(deadline) {
				break
			}
		}
		if logged != logs {
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
