package issuer

import (
	"crypto/subtle"
	"errors"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketRefresh: tokenKey(family) -> refreshToken, until it expires with
// its grant; for tokens of the old form, tokenKey(token).
const bucketRefresh = "refresh"

// A refresh token is "<family>.<secret>": its family's record, under
// tokenKey(family), holds the tokenKey of the newest secret, and rotation
// replaces it. So a family is one record however often it rotates
// (review s15-token F1: one record per rotation, kept for the family's
// life, grew the store by 300 bytes per refresh without bound), and any
// other secret with the family (a token rotated already: only its holders
// know the family) is a reused token, which revokes the whole grant.
// Tokens of the old form (no ".", one record each, the old ones marked
// Rotated) are read until they expire; rotating one starts a family.

// refreshToken is a family's record (or an old-form token's).
type refreshToken struct {
	GrantID  string `json:"grant_id"`
	ClientID string `json:"client_id"`
	// Current is the tokenKey of the family's newest secret ("" for an
	// old-form token).
	Current string `json:"current,omitempty"`
	// PreBinding is the tokenKey of the secret the refresh that bound
	// the family to a DPoP key rotated (RFC 9449 section 5): the one token
	// of a bound family issued before the binding whose reuse, whoever
	// presents it, still revokes the family.
	PreBinding string `json:"pre_binding,omitempty"`
	// Rotated: the token presented is not the newest of its family (an
	// old-form token records it; a family's is set when read).
	Rotated   bool      `json:"rotated,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// DPoPBound: the token presented was issued while its family was
	// bound to a DPoP key (a public client's), so only ever usable with
	// it: presented without the key, it proves nothing of the client and
	// ends nothing, rotated or not (review s15-token F2). An old-form
	// token records it; a family's is set when read: every secret but
	// PreBinding, in a bound family (which ones of a family bound later
	// were issued before the binding is not kept: they end nothing
	// without the key either).
	DPoPBound bool `json:"dpop_bound,omitempty"`
}

// keyless reports whether a request with the DPoP key jkt ("" for none)
// lacks the key rec was bound to when issued, in family g.
func (rec *refreshToken) keyless(g *grant, jkt string) bool {
	return rec.DPoPBound && g.DPoPJKT != "" && jkt != g.DPoPJKT
}

// refreshKey is the record key of tok, and its secret when tok is of the
// family form.
func refreshKey(tok string) (key, secret string, isFamily bool) {
	family, secret, isFamily := strings.Cut(tok, ".")
	if !isFamily {
		return tokenKey(tok), "", false
	}
	return tokenKey(family), secret, true
}

// newRefreshToken draws a token of family, of a new family when family is
// "".
func newRefreshToken(family string, random func(int) (string, error)) (string, error) {
	if family == "" {
		var err error
		if family, err = random(16); err != nil {
			return "", err
		}
	}
	secret, err := random(32)
	if err != nil {
		return "", err
	}
	return family + "." + secret, nil
}

// refreshFamily is the family of a family-form token, "" for another.
func refreshFamily(tok string) string {
	if family, _, ok := strings.Cut(tok, "."); ok {
		return family
	}
	return ""
}

// refreshRecords are the refresh tokens, in families by grant.
type refreshRecords struct{ t table[refreshToken] }

func refreshIn(tx store.Tx) refreshRecords {
	return refreshRecords{table[refreshToken]{tx, bucketRefresh}}
}

// family returns the refresh token and its grant.
func (r refreshRecords) family(tok string) (*refreshToken, *grant, error) {
	_, rec, err := r.get(tok)
	if err != nil {
		return nil, nil, err
	}
	g, err := grantsIn(r.t.tx).get(rec.GrantID)
	if err != nil {
		return nil, nil, err
	}
	return rec, g, nil
}

// get reads tok's record (store.ErrNotFound for no token): Rotated when
// tok is not the newest of its family.
func (r refreshRecords) get(tok string) (string, *refreshToken, error) {
	key, secret, isFamily := refreshKey(tok)
	rec, err := r.t.get(key)
	switch {
	case err != nil:
		return "", nil, err
	case isFamily != (rec.Current != ""):
		// A family's name alone, or an old-form record named as a
		// family: no token.
		return "", nil, store.ErrNotFound
	case isFamily:
		k := tokenKey(secret)
		rec.Rotated = subtle.ConstantTimeCompare([]byte(k), []byte(rec.Current)) != 1
		rec.DPoPBound = k != rec.PreBinding
	}
	return key, rec, nil
}

// issue records tok as the newest refresh token of g, for clientID.
func (r refreshRecords) issue(tok string, g *grant, clientID string) error {
	key, secret, isFamily := refreshKey(tok)
	rec := &refreshToken{GrantID: g.ID, ClientID: clientID, ExpiresAt: g.ExpiresAt}
	if isFamily {
		rec.Current = tokenKey(secret)
	} else {
		rec.DPoPBound = g.DPoPJKT != ""
	}
	return r.t.put(key, rec, g.ExpiresAt)
}

// rotate replaces tok by next in its family and records the use of the
// grant at now. bind, when not "", is the DPoP key of a public client's
// refresh: an unbound family is bound to it from now on (RFC 9449 section
// 5), in this transaction, and a family bound to another key is refused.
// It refuses (refused true, after revoking the family until revokeUntil
// when tok was rotated already: a concurrent refresh won) a rotated
// token or a revoked grant; the caller commits and refuses.
func (r refreshRecords) rotate(tok, next, clientID, bind string, now, revokeUntil time.Time) (refused bool, err error) {
	key, cur, err := r.get(tok)
	if err != nil {
		return false, err
	}
	grants := grantsIn(r.t.tx)
	g, err := grants.get(cur.GrantID)
	if err != nil {
		return false, err
	}
	if cur.Rotated {
		if cur.keyless(g, bind) {
			return true, nil
		}
		return true, grants.revoke(cur.GrantID, revokeUntil)
	}
	if g.Revoked || (bind != "" && g.DPoPJKT != "" && g.DPoPJKT != bind) {
		return true, nil
	}
	nextKey, nextSecret, _ := refreshKey(next)
	if cur.Current != "" && nextKey != key {
		return false, errors.New("refresh token rotated into another family")
	}
	if bind != "" && g.DPoPJKT == "" {
		g.DPoPJKT = bind
		cur.PreBinding = cur.Current
	}
	if cur.Current == "" {
		g.Refresh = nextKey // next starts a family (below)
	}
	g.LastUsed = now
	if err := grants.put(g); err != nil {
		return false, err
	}
	if cur.Current == "" {
		// An old-form token: kept, marked, and next starts a family.
		cur.Rotated = true
		if err := r.t.put(key, cur, cur.ExpiresAt); err != nil {
			return false, err
		}
		return false, r.issue(next, g, clientID)
	}
	// A family's record now holds next's secret.
	cur.Current, cur.DPoPBound = tokenKey(nextSecret), false
	return false, r.t.put(key, cur, cur.ExpiresAt)
}

// endWith makes g's refresh-token family's record (Refresh) expire with
// g: revoke shortened g's life.
func (r refreshRecords) endWith(g *grant) error {
	if g.Refresh == "" {
		return nil
	}
	rec, err := r.t.get(g.Refresh)
	if err != nil || rec.GrantID != g.ID {
		return ignoreNotFound(err)
	}
	rec.ExpiresAt = g.ExpiresAt
	return r.t.put(g.Refresh, rec, g.ExpiresAt)
}

// familyKey is the DPoP key that clientID's refresh token tok needs to
// end its family: the key the family is bound to, for a token issued
// under the binding; "" for an unbound family, the token the binding
// rotated (PreBinding, whose reuse ends the family whoever presents it),
// an unknown token or another client's.
func (r refreshRecords) familyKey(tok, clientID string) (string, error) {
	rec, g, err := r.family(tok)
	if err != nil || rec.ClientID != clientID || !rec.DPoPBound {
		return "", ignoreNotFound(err)
	}
	return g.DPoPJKT, nil
}

// revokeFamily revokes the grant of clientID's refresh token tok, given
// the DPoP key of the request (jkt, "" for none); an unknown token,
// another client's, or one issued under a binding to another key
// (keyless) is left alone.
func (r refreshRecords) revokeFamily(tok, clientID, jkt string, until time.Time) error {
	rec, g, err := r.family(tok)
	if err != nil || rec.ClientID != clientID || rec.keyless(g, jkt) {
		return ignoreNotFound(err)
	}
	return grantsIn(r.t.tx).revoke(rec.GrantID, until)
}
