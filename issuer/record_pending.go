package issuer

import (
	"errors"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketPending holds authorization requests waiting for login or consent:
// tokenKey(pending id) -> pendingAuth, until it expires. The id travels in
// the login and consent URLs; it is not a bearer secret because the record
// is bound to the browser session that created it.
const bucketPending = "authreq"

// pendingAuth is an authorization request parked while the user logs in or
// decides on consent.
type pendingAuth struct {
	Browser   string      `json:"browser"`
	Request   authRequest `json:"request"`
	ExpiresAt time.Time   `json:"expires_at"`
}

var errPendingGone = errors.New("pending authorization request not found")

// pendingRecords are the parked authorization requests.
type pendingRecords struct{ t table[pendingAuth] }

func pendingIn(tx store.Tx) pendingRecords {
	return pendingRecords{table[pendingAuth]{tx, bucketPending}}
}

func (r pendingRecords) create(id string, p *pendingAuth) error {
	return r.t.create(tokenKey(id), p, p.ExpiresAt)
}

func (r pendingRecords) get(id string) (*pendingAuth, error) { return r.t.get(tokenKey(id)) }

func (r pendingRecords) delete(id string) error { return r.t.delete(tokenKey(id)) }

// finish deletes the request id, which must still exist (errPendingGone):
// a request completes once.
func (r pendingRecords) finish(id string) error {
	err := r.t.remove(tokenKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return errPendingGone
	}
	return err
}
