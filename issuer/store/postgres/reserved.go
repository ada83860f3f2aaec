package postgres

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// ReservedApplicationName is the application_name of ViewReserved's
// connection, so it can be told apart in pg_stat_activity.
const ReservedApplicationName = "mcp-auth reserved"

// reservedConfig is the configuration of ViewReserved's pool: one
// connection, with the pool's settings and timeouts (cfg's), opened at
// the first call and checked before each, so that one lost (a database
// restart) is replaced at once rather than failing a call first.
func reservedConfig(cfg *pgxpool.Config) *pgxpool.Config {
	r := cfg.Copy()
	r.MaxConns, r.MinConns, r.MinIdleConns = 1, 0, 0
	r.ConnConfig.RuntimeParams["application_name"] = ReservedApplicationName
	r.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	return r
}

// ViewReserved implements store.ReservedViewer: View on a connection of
// its own, outside the pool that View and Update share, bounded and
// failing as View does.
func (s *Store) ViewReserved(ctx context.Context, fn func(store.Tx) error) error {
	bctx, cancel := s.bounded(ctx)
	defer cancel()
	return unavailable(ctx, bctx, s.view(bctx, s.reserved, fn))
}

var _ store.ReservedViewer = (*Store)(nil)
