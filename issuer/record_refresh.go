package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketRefresh: tokenKey(refresh token) -> refreshToken, until it
// expires with its grant.
const bucketRefresh = "refresh"

// refreshToken is one refresh token of a grant's family. Rotation marks the
// old one Rotated; presenting a Rotated token revokes the whole grant.
type refreshToken struct {
	GrantID   string    `json:"grant_id"`
	ClientID  string    `json:"client_id"`
	Rotated   bool      `json:"rotated,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// refreshRecords are the refresh tokens, in families by grant.
type refreshRecords struct{ t table[refreshToken] }

func refreshIn(tx store.Tx) refreshRecords {
	return refreshRecords{table[refreshToken]{tx, bucketRefresh}}
}

// family returns the refresh token and its grant.
func (r refreshRecords) family(tok string) (*refreshToken, *grant, error) {
	rec, err := r.t.get(tokenKey(tok))
	if err != nil {
		return nil, nil, err
	}
	g, err := grantsIn(r.t.tx).get(rec.GrantID)
	if err != nil {
		return nil, nil, err
	}
	return rec, g, nil
}

// issue records tok as the newest refresh token of g, for clientID.
func (r refreshRecords) issue(tok string, g *grant, clientID string) error {
	return r.t.put(tokenKey(tok), &refreshToken{GrantID: g.ID, ClientID: clientID, ExpiresAt: g.ExpiresAt}, g.ExpiresAt)
}

// rotate replaces tok by next in its family and records the use of the
// grant at now. bind, when not "", is the DPoP key of a public client's
// refresh: an unbound family is bound to it from now on (RFC 9449 section
// 5), in this transaction, and a family bound to another key is refused.
// It refuses (refused true, after revoking the family until revokeUntil
// when tok was rotated already: a concurrent refresh won) a rotated
// token or a revoked grant; the caller commits and refuses.
func (r refreshRecords) rotate(tok, next, clientID, bind string, now, revokeUntil time.Time) (refused bool, err error) {
	key := tokenKey(tok)
	cur, err := r.t.get(key)
	if err != nil {
		return false, err
	}
	grants := grantsIn(r.t.tx)
	if cur.Rotated {
		return true, grants.revoke(cur.GrantID, revokeUntil)
	}
	g, err := grants.get(cur.GrantID)
	if err != nil {
		return false, err
	}
	if g.Revoked || (bind != "" && g.DPoPJKT != "" && g.DPoPJKT != bind) {
		return true, nil
	}
	if bind != "" {
		g.DPoPJKT = bind
	}
	cur.Rotated = true
	if err := r.t.put(key, cur, cur.ExpiresAt); err != nil {
		return false, err
	}
	g.LastUsed = now
	if err := grants.put(g); err != nil {
		return false, err
	}
	return false, r.issue(next, g, clientID)
}

// revokeFamily revokes the grant of clientID's refresh token tok; an
// unknown token or another client's is left alone.
func (r refreshRecords) revokeFamily(tok, clientID string, until time.Time) error {
	rec, err := r.t.get(tokenKey(tok))
	if err != nil || rec.ClientID != clientID {
		return ignoreNotFound(err)
	}
	return grantsIn(r.t.tx).revoke(rec.GrantID, until)
}
