package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketJTI: client_id + NUL + jti of a client assertion, or NUL +
// issuer + NUL + jti of an ID-JAG, -> an empty marker, until the
// assertion has expired (RFC 7523 replay check).
const bucketJTI = "jti"

// assertionRecords are the client assertions seen.
type assertionRecords struct{ t table[struct{}] }

func assertionsIn(tx store.Tx) assertionRecords {
	return assertionRecords{table[struct{}]{tx, bucketJTI}}
}

// use records the assertion jti of clientID until until; a second use is
// store.ErrAlreadyExists.
func (r assertionRecords) use(clientID, jti string, until time.Time) error {
	return r.t.create(assertionKey(clientID, jti), &struct{}{}, until)
}

// used reports whether the assertion jti of clientID is recorded as used.
func (r assertionRecords) used(clientID, jti string) (bool, error) {
	return r.t.has(assertionKey(clientID, jti))
}

// useIDJAG records the jti of an ID-JAG of issuer iss until until; a
// second use is store.ErrAlreadyExists.
func (r assertionRecords) useIDJAG(iss, jti string, until time.Time) error {
	return r.t.create(idJAGKey(iss, jti), &struct{}{}, until)
}

// usedIDJAG reports whether the jti of an ID-JAG of issuer iss is
// recorded as used.
func (r assertionRecords) usedIDJAG(iss, jti string) (bool, error) {
	return r.t.has(idJAGKey(iss, jti))
}

// assertionKey is the key of a client assertion's jti.
func assertionKey(clientID, jti string) string { return clientID + "\x00" + jti }

// idJAGKey is the key of an ID-JAG's jti. The leading NUL keeps these
// keys apart from client assertions' (no client_id is empty).
func idJAGKey(iss, jti string) string { return "\x00" + iss + "\x00" + jti }
