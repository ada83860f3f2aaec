package issuer

import (
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
)

// TestMain stops the PostgreSQL server the postgres tests start.
func TestMain(m *testing.M) { pgtest.Main(m) }
