package issuer

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketDerived: an access token's jti, "/", and the jti of a token
// exchanged from it (RFC 8693) -> the latter's marker end, until it
// expires. Revoking the former revokes the latter, and what was exchanged
// from that in turn: an exchanged token never outlives its subject token,
// revocation included. (jtis are base64url: no "/".) The child may also
// be grantChild and a grant id: the grant of a delegated code
// (requested_actor) that the token, the agent's own, proved as its
// actor_token; revoking the token revokes that grant, as it revokes the
// tokens exchanged with it as actor_token.
const bucketDerived = "derived"

// grantChild begins the child of a derived record that names a grant.
// Neither jtis nor grant ids (base64url) hold a ':', so no token's record
// reads as one. It is the prefix of a grant's revocation marker
// (grantKeyPrefix): an earlier release walking the tree revokes it as a
// jti, which refuses the grant's access tokens until the actor token's
// end, though not its refresh token.
const grantChild = "grant:"

type derivedRecords struct{ t table[marker] }

func derivedIn(tx store.Tx) derivedRecords { return derivedRecords{table[marker]{tx, bucketDerived}} }

// add records that child, valid until until, was exchanged from parent.
// The record outlives until by accesstoken.Leeway: parent is revoked
// (revokeAccessToken) and child taken by gateways as long.
func (r derivedRecords) add(parent, child string, until time.Time) error {
	return r.t.put(parent+"/"+child, &marker{Until: until}, until.Add(accesstoken.Leeway+2*time.Second))
}

// addGrant records that grant gid was made with parent, a token valid
// until until: revoking parent (possible until it expires) revokes gid.
func (r derivedRecords) addGrant(parent, gid string, until time.Time) error {
	return r.add(parent, grantChild+gid, until)
}

// derivedBatch is how many tokens revokeTokenTree revokes per
// transaction after the first.
const derivedBatch = 128

// revokeTokenTree refuses the access token jti until exp, and every token
// exchanged from it, directly or not, and revokes the grants made with
// one of them (addGrant). An agent may exchange at its
// client's rate for as long as the token lives, tens of thousands: in one
// transaction they would outlast the store's bound and the token itself
// would stay valid. So the token is revoked in a transaction of its own
// and the rest in batches of derivedBatch, however they are arranged (a
// chain of re-exchanges as a wide tree); each token's revocation and
// the listing of those exchanged from it share a transaction, and an
// exchange is refused once its subject is revoked (tokenExchange), so
// none exchanged meanwhile is missed. A failure part way is reported, and
// the client's retry (RFC 7009 section 2.2.1) walks the tree again.
func revokeTokenTree(ctx context.Context, st store.Store, jti string, exp time.Time) error {
	seen := map[string]bool{jti: true}
	next := []tokenUntil{{jti, exp}}
	for limit := 1; len(next) > 0; limit = derivedBatch {
		var pending []tokenUntil
		var found []string
		err := st.Update(ctx, func(tx store.Tx) error {
			// fn may run again: from what the last commit left.
			for _, j := range found {
				delete(seen, j)
			}
			found, pending = found[:0], slices.Clone(next)
			revs, derived := revocationsIn(tx), derivedIn(tx)
			for range limit {
				if len(pending) == 0 {
					break
				}
				tok := pending[len(pending)-1]
				pending = pending[:len(pending)-1]
				if gid, ok := strings.CutPrefix(tok.jti, grantChild); ok {
					// Its tokens are refused by the grant's id, those
					// exchanged from them included (they carry it).
					if err := grantsIn(tx).revoke(gid, tok.until); err != nil {
						return err
					}
					continue
				}
				if err := revs.revokeToken(tok.jti, tok.until); err != nil {
					return err
				}
				err := derived.t.list(tok.jti+"/", func(key string, m *marker) error {
					child := key[strings.IndexByte(key, '/')+1:]
					if !seen[child] {
						seen[child] = true
						found = append(found, child)
						pending = append(pending, tokenUntil{child, m.Until})
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		next = pending
	}
	return nil
}

type tokenUntil struct {
	jti   string
	until time.Time
}
