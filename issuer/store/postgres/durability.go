package postgres

import (
	"context"
	"fmt"
)

// Unsynced reports whether the server runs with fsync off. PostgreSQL
// then never forces its log or its data to disk: a commit the store
// waits for (synchronous_commit local, which it sets where the setting
// is off) is answered before it is durable, and a crash of the
// database's machine, not of PostgreSQL alone, may lose writes the issuer
// answered as made (a revocation, a key's withdrawal, a code's
// redemption) or leave the database corrupt. fsync is the server's
// setting (postgresql.conf, ALTER SYSTEM), the same for every database
// and role; any role reads it.
func (s *Store) Unsynced(ctx context.Context) (bool, error) {
	if err := s.begin(ctx); err != nil {
		return false, fmt.Errorf("postgres: read fsync: %w", err)
	}
	bctx, cancel := s.bounded(ctx)
	defer cancel()
	var v string
	if err := s.pool.QueryRow(bctx, "SELECT current_setting('fsync')").Scan(&v); err != nil {
		return false, s.beginErr(ctx, "read fsync", unavailable(ctx, bctx, err))
	}
	return v == "off", nil
}
