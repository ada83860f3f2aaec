package dpop

import (
	"crypto"
	"encoding/base64"
	"sync"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// maxKeys bounds the keys a Verifier remembers: a client makes its
// proofs with one key for as long as it runs, so a proof's key is
// usually one seen before, and decoding it again (base64, a point on a
// curve or an RSA modulus, the small-order test of an Ed25519 key) and
// hashing its thumbprint cost about as many allocations as the rest of
// the proof. An RSA-4096 entry is about 2 KB.
const maxKeys = 1024

// jwkMembers are the members of a proof's jwk header that decide its
// key and thumbprint (JWK.PublicKey and JWK.Thumbprint read no other),
// exactly as decoded, so that a remembered key is used only for the very
// same members.
type jwkMembers struct{ kty, crv, x, y, n, e string }

func membersOf(j accesstoken.JWK) jwkMembers {
	return jwkMembers{kty: j.Kty, crv: j.Crv, x: j.X, y: j.Y, n: j.N, e: j.E}
}

// decodedKey is what JWK.PublicKey and JWK.Thumbprint make of a jwk.
type decodedKey struct {
	key crypto.PublicKey
	jkt string
}

// keyCache remembers the decoded keys of proofs whose signature
// verified, up to maxKeys: a full cache forgets one, any, for each new
// key. Only the decoding is remembered; every check of a proof (its
// algorithm against the key, the signature, the claims, the replay) is
// made for every proof. Safe for concurrent use.
type keyCache struct {
	mu   sync.Mutex
	keys map[jwkMembers]decodedKey
}

// decode returns the key and thumbprint of j, remembered or decoded now
// (fresh reports which). A key PublicKey refuses is never remembered.
func (c *keyCache) decode(j accesstoken.JWK) (d decodedKey, fresh bool, err error) {
	m := membersOf(j)
	c.mu.Lock()
	d, ok := c.keys[m]
	c.mu.Unlock()
	if ok {
		return d, false, nil
	}
	key, err := j.PublicKey()
	if err != nil {
		return decodedKey{}, false, err
	}
	return decodedKey{key: key, jkt: j.Thumbprint()}, true, nil
}

// maxModulusLen is the longest n of an RSA key PublicKey accepts, without
// leading zero bytes: MaxRSABits in base64url.
var maxModulusLen = base64.RawURLEncoding.EncodedLen(accesstoken.MaxRSABits / 8)

// rememberable reports whether j is a key the cache may hold: one of no
// members beside those its key type decodes, and an RSA modulus no longer
// than MaxRSABits spell it (PublicKey reads past leading zero bytes), so
// that an entry stays the size of the largest key. Anyone can sign
// proofs with keys of other members (a P-256 key with a 4 KB "n"), each
// a new entry: remembered, 1,024 of them held about 5.5 MB where keys as
// clients send them hold 0.7 MB. Such a key is still accepted, decoded
// for every proof.
func rememberable(j accesstoken.JWK) bool {
	switch j.Kty {
	case "EC": // x and y of the curve's size: PublicKey
		return j.N == "" && j.E == ""
	case "OKP": // x of 32 bytes: PublicKey
		return j.Y == "" && j.N == "" && j.E == ""
	case "RSA": // e of at most 4 bytes: PublicKey
		return j.Crv == "" && j.X == "" && j.Y == "" && len(j.N) <= maxModulusLen
	}
	return false
}

// add remembers the decoding of j, once a proof signed by it verified,
// when j is rememberable.
func (c *keyCache) add(j accesstoken.JWK, d decodedKey) {
	if !rememberable(j) {
		return
	}
	m := membersOf(j)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = make(map[jwkMembers]decodedKey)
	}
	if len(c.keys) >= maxKeys {
		for k := range c.keys {
			delete(c.keys, k)
			break
		}
	}
	c.keys[m] = d
}

// len is the number of keys remembered.
func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}
