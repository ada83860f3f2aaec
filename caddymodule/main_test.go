package caddymodule

import (
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
)

// TestMain stops the PostgreSQL server the storage tests start.
func TestMain(m *testing.M) { pgtest.Main(m) }
