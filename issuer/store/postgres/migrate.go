package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are the schema's versions in order: migrations[n] takes the
// schema from version n to n+1. Append only; a released migration never
// changes, since databases record which versions they have applied.
var migrations = []string{
	// 1: the entries table, and the index Purge scans.
	`CREATE TABLE mcp_auth_entries (
		bucket  bytea  NOT NULL,
		key     bytea  NOT NULL,
		value   bytea  NOT NULL,
		expires bigint,
		PRIMARY KEY (bucket, key)
	);
	CREATE INDEX mcp_auth_entries_expires ON mcp_auth_entries (expires) WHERE expires IS NOT NULL`,
}

// SchemaVersion is the schema version this build creates and reads.
var SchemaVersion = len(migrations)

// migrateLock is the advisory lock key that serializes migrations of
// instances starting at once on one database ("mcp_auth" in ASCII).
const migrateLock int64 = 0x6d63705f61757468

// ErrSchemaTooNew: the database was migrated by a newer build.
var ErrSchemaTooNew = errors.New("postgres: database schema is newer than this build")

// migrate brings the schema to SchemaVersion in one transaction, recording
// each version applied in mcp_auth_schema. The advisory lock makes a
// second instance starting at the same time wait, then find the work done.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// The store's statement and lock timeouts (Options.Timeout) are
		// for requests: here an instance waits for another's migration,
		// however long, within the caller's context (the app's start).
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0`); err != nil {
			return fmt.Errorf("postgres: migrate: %w", err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
			return fmt.Errorf("postgres: migrate: lock: %w", err)
		}
		// Created only when missing: PostgreSQL checks the CREATE
		// privilege for CREATE TABLE IF NOT EXISTS even when the table
		// exists, and a role that holds only what the store reads and
		// writes must start on a database that is at this version.
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('mcp_auth_schema') IS NOT NULL`).Scan(&exists); err != nil {
			return fmt.Errorf("postgres: migrate: %w", err)
		}
		if !exists {
			_, err := tx.Exec(ctx, `CREATE TABLE mcp_auth_schema (
				version    integer     PRIMARY KEY,
				applied_at timestamptz NOT NULL DEFAULT now()
			)`)
			if err != nil {
				return fmt.Errorf("postgres: migrate: %w", err)
			}
		}
		var cur int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM mcp_auth_schema`).Scan(&cur); err != nil {
			return fmt.Errorf("postgres: migrate: read version: %w", err)
		}
		if cur > len(migrations) {
			return fmt.Errorf("%w: the database is at schema version %d, this build knows versions up to %d; run the newer caddy-mcp-auth that migrated it, or another database",
				ErrSchemaTooNew, cur, len(migrations))
		}
		for v := cur + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("postgres: migrate to version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO mcp_auth_schema (version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("postgres: migrate to version %d: %w", v, err)
			}
		}
		return nil
	})
}
