package accesstoken

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Header errors of Parse.
var (
	ErrWrongType = errors.New("token type is not at+jwt")
	ErrNoKid     = errors.New("token has no kid")
	ErrCritical  = errors.New("token has critical header extensions")
)

// KeyFunc returns the public key published under kid.
type KeyFunc func(ctx context.Context, kid string) (any, error)

// Parse verifies an access token with p, which must pin the algorithms
// (WithValidMethods, a subset of Algorithms), the issuer, expiry and the
// clock; the audience when the caller is a resource server. It refuses
// a crit header (no extension is understood), a typ other than at+jwt, a
// missing kid, a key that does not fit the algorithm, and claims without
// sub or client_id (RFC 9068 §2.2). Claim errors are *ClaimError.
func Parse(ctx context.Context, p *jwt.Parser, raw string, key KeyFunc) (*Claims, error) {
	c := new(Claims)
	_, err := p.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			return nil, ErrCritical
		}
		typ, _ := t.Header["typ"].(string)
		if !strings.EqualFold(typ, Type) && !strings.EqualFold(typ, "application/"+Type) {
			return nil, ErrWrongType
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, ErrNoKid
		}
		k, err := key(ctx, kid)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", kid, err)
		}
		if err := KeyFitsAlg(t.Method.Alg(), k); err != nil {
			return nil, err
		}
		return k, nil
	})
	if err != nil {
		return nil, err
	}
	switch {
	case c.Subject == "":
		return nil, &ClaimError{"the access token lacks sub"}
	case c.ClientID == "":
		return nil, &ClaimError{"the access token lacks client_id"}
	}
	return c, nil
}
