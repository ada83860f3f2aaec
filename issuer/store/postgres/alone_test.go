package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
)

// TestRunAloneOnlyWhenAsked: an Update that failed to serialize lockAfter
// times runs its next attempts alone, the table locked against other
// writers, only when its function asked (store.MayRunAlone: a revocation
// scanning the grants); any other Update is run again as it was, however
// often it fails, so that a fight over one hot entry never stalls every
// writer (review s15-fresh F5).
func TestRunAloneOnlyWhenAsked(t *testing.T) {
	if lockAfter != 4 {
		t.Fatalf("lockAfter = %d, README (Running on PostgreSQL, Consistency) says it runs alone from the fifth time on", lockAfter)
	}
	ctx := context.Background()
	s, err := Open(ctx, pgtest.NewDatabase(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	const fails = lockAfter + 2
	for _, asks := range []bool{false, true} {
		var locked []bool
		err := s.Update(ctx, func(stx store.Tx) error {
			if asks {
				store.MayRunAlone(stx)
			}
			var n int
			err := stx.(*tx).ptx.QueryRow(ctx, `SELECT count(*) FROM pg_locks
				WHERE relation = 'mcp_auth_entries'::regclass AND pid = pg_backend_pid() AND mode = 'ShareRowExclusiveLock'`).Scan(&n)
			if err != nil {
				return err
			}
			locked = append(locked, n > 0)
			if len(locked) <= fails {
				return &pgconn.PgError{Code: "40001", Message: "could not serialize access (test)"}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("asks %v: %v", asks, err)
		}
		want := make([]bool, fails+1)
		for i := lockAfter; asks && i < len(want); i++ {
			want[i] = true
		}
		if fmt.Sprint(locked) != fmt.Sprint(want) {
			t.Errorf("asks %v: table locked on attempts %v, want %v", asks, locked, want)
		}
	}
}
