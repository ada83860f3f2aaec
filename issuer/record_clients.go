package issuer

import (
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketClients: client_id -> Client (admin-managed, or registered by DCR
// and expiring at its ExpiresAt).
const bucketClients = "clients"

// clientRecords are the stored (admin, DCR) clients.
type clientRecords struct{ table[Client] }

func clientsIn(tx store.Tx) clientRecords { return clientRecords{table[Client]{tx, bucketClients}} }

func (r clientRecords) put(c *Client) error { return r.table.put(c.ID, c, c.ExpiresAt) }

func (r clientRecords) create(c *Client) error { return r.table.create(c.ID, c, c.ExpiresAt) }

// each calls fn for every stored client.
func (r clientRecords) each(fn func(*Client) error) error {
	return r.list("", func(_ string, c *Client) error { return fn(c) })
}
