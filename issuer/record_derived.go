package issuer

import (
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketDerived: an access token's jti, "/", and the jti of a token
// exchanged from it (RFC 8693) -> the latter's marker end, until it
// expires. Revoking the former revokes the latter, and what was exchanged
// from that in turn: an exchanged token never outlives its subject token,
// revocation included. (jtis are base64url: no "/".)
const bucketDerived = "derived"

type derivedRecords struct{ t table[marker] }

func derivedIn(tx store.Tx) derivedRecords { return derivedRecords{table[marker]{tx, bucketDerived}} }

// add records that child, valid until until, was exchanged from parent.
func (r derivedRecords) add(parent, child string, until time.Time) error {
	return r.t.put(parent+"/"+child, &marker{Until: until}, until.Add(2*time.Second))
}

// revokeToken refuses the access token jti until exp, and every token
// exchanged from it, directly or not.
func (r derivedRecords) revokeToken(jti string, exp time.Time) error {
	revs := revocationsIn(r.t.tx)
	seen := map[string]bool{jti: true}
	for next := []tokenUntil{{jti, exp}}; len(next) > 0; {
		tok := next[len(next)-1]
		next = next[:len(next)-1]
		if err := revs.revokeToken(tok.jti, tok.until); err != nil {
			return err
		}
		err := r.t.list(tok.jti+"/", func(key string, m *marker) error {
			child := key[strings.IndexByte(key, '/')+1:]
			if !seen[child] {
				seen[child] = true
				next = append(next, tokenUntil{child, m.Until})
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

type tokenUntil struct {
	jti   string
	until time.Time
}
