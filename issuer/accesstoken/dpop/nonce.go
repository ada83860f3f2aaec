package dpop

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// Nonces issues and checks server nonces (RFC 9449 §8, §9) without
// state: a nonce is a time slot and its MAC, valid in its slot and the
// next, so every instance sharing the key accepts every other's nonces.
type Nonces struct {
	key    []byte
	period time.Duration
}

// NewNonces returns nonces under key (at least 32 bytes) that change
// every period (default 5 minutes); a nonce is accepted for one to two
// periods.
func NewNonces(key []byte, period time.Duration) *Nonces {
	if period <= 0 {
		period = 5 * time.Minute
	}
	return &Nonces{key: key, period: period}
}

// Current is the nonce to send in DPoP-Nonce at now.
func (n *Nonces) Current(now time.Time) string {
	return n.at(now.UnixNano() / int64(n.period))
}

func (n *Nonces) at(slot int64) string {
	var b [8 + 16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(slot))
	m := hmac.New(sha256.New, n.key)
	m.Write([]byte("dpop-nonce"))
	m.Write(b[:8])
	copy(b[8:], m.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// valid reports whether s is the nonce of now's slot or the one before;
// or of the next, within accesstoken.Leeway of it: another instance whose
// clock is a little ahead hands that one out already.
func (n *Nonces) valid(s string, now time.Time) bool {
	cur := now.UnixNano() / int64(n.period)
	ahead := now.Add(accesstoken.Leeway).UnixNano() / int64(n.period)
	for _, slot := range [...]int64{cur, cur - 1, ahead} {
		if hmac.Equal([]byte(s), []byte(n.at(slot))) {
			return true
		}
	}
	return false
}
