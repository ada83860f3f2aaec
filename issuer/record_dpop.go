package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketDPoP: a spent DPoP proof's replay key (dpop.Ledger: a hash of its
// key's thumbprint and jti) -> an empty marker, until no instance can
// accept the proof any more. Written only on a store that several
// instances share.
const bucketDPoP = "dpop"

type dpopRecords struct{ t table[struct{}] }

func dpopIn(tx store.Tx) dpopRecords { return dpopRecords{table[struct{}]{tx, bucketDPoP}} }

// spend records key until until; a second spend is store.ErrAlreadyExists.
func (r dpopRecords) spend(key string, until time.Time) error {
	return r.t.create(key, &struct{}{}, until)
}
