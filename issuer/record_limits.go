package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketLimits: the abuse limiters' counters on a store that several
// instances share (counters.go), limiter prefix + key -> counter, until
// the counter no longer matters. One entry per key: a failure or a
// registration rewrites it, so the writes are those of the attempts the
// limits let through, and refusals write nothing.
const bucketLimits = "limits"

// Limiter prefixes in bucketLimits.
const (
	limitsBruteForce       = "bf:"
	limitsRegistrations    = "reg:"
	limitsRegistrationsAll = "regall:"
	limitsUserWrites       = "user:"
	limitsUserRefreshes    = "refresh:"
)

type limitRecords struct{ t table[counter] }

func limitsIn(tx store.Tx) limitRecords { return limitRecords{table[counter]{tx, bucketLimits}} }

func (r limitRecords) get(key string) (*counter, error) { return r.t.get(key) }

func (r limitRecords) put(key string, c *counter, expires time.Time) error {
	return r.t.put(key, c, expires)
}

func (r limitRecords) del(key string) error { return r.t.delete(key) }
