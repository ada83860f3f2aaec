package issuer

import (
	"net/url"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketPAR: tokenKey(the whole request_uri value) -> parRequest, until it
// expires.
const bucketPAR = "par"

// parRequest is a pushed authorization request (RFC 9126).
type parRequest struct {
	ClientID  string     `json:"client_id"`
	Params    url.Values `json:"params"`
	ExpiresAt time.Time  `json:"expires_at"`
}

// parRecords are the pushed authorization requests.
type parRecords struct{ t table[parRequest] }

func parIn(tx store.Tx) parRecords { return parRecords{table[parRequest]{tx, bucketPAR}} }

func (r parRecords) create(uri string, pr *parRequest) error {
	return r.t.create(tokenKey(uri), pr, pr.ExpiresAt)
}

// consume deletes and returns the request pushed under uri by clientID, so
// it works exactly once. One that is expired at now or was pushed by
// another client is left as it is (store.ErrNotFound): presenting a leaked
// request_uri must not let another client use up the request of the one
// that pushed it.
func (r parRecords) consume(uri, clientID string, now time.Time) (*parRequest, error) {
	k := tokenKey(uri)
	pr, err := r.t.get(k)
	if err != nil {
		return nil, err
	}
	if ids := pr.Params["client_id"]; pr.ClientID != clientID || len(ids) != 1 || ids[0] != clientID || !now.Before(pr.ExpiresAt) {
		return nil, store.ErrNotFound
	}
	return pr, r.t.delete(k)
}
