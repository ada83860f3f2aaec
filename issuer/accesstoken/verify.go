package accesstoken

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Header errors of Parse.
var (
	ErrWrongType = errors.New("token type is not at+jwt")
	ErrNoKid     = errors.New("token has no kid")
	ErrCritical  = errors.New("token has critical header extensions")
	// ErrIDToken is a token accepted for its typ JWT (or none) whose
	// claims are those of an ID token.
	ErrIDToken = errors.New("token is an ID token")
)

// RefuseCritical refuses a JWS with a crit header: its recipient must
// refuse extensions it does not understand (RFC 7515 section 4.1.11),
// and golang-jwt understands none. Every JWS the module verifies calls it.
func RefuseCritical(t *jwt.Token) error {
	if _, ok := t.Header["crit"]; ok {
		return ErrCritical
	}
	return nil
}

// KeyFunc returns the public key published under kid.
type KeyFunc func(ctx context.Context, kid string) (any, error)

// Options relax Parse for access tokens of other authorization servers.
type Options struct {
	// AnyJWTType also accepts the typ JWT (or application/jwt, any case)
	// or no typ, as many identity providers send. RFC 9068's at+jwt is
	// what keeps an ID token from passing as an access token; a token
	// accepted without it is refused when it carries nonce or at_hash or
	// has its own client (client_id or azp) as audience, as ID tokens do.
	AnyJWTType bool
}

// Parse verifies an access token with p, which must pin the algorithms
// (WithValidMethods, a subset of Algorithms), the issuer, expiry and the
// clock; the audience when the caller is a resource server. It refuses
// a crit header (no extension is understood), a typ other than at+jwt, a
// missing kid, a key that does not fit the algorithm, and claims without
// sub or client_id (RFC 9068 §2.2). Claim errors are *ClaimError.
func Parse(ctx context.Context, p *jwt.Parser, raw string, key KeyFunc) (*Claims, error) {
	return ParseWith(ctx, p, raw, key, Options{})
}

// ParseWith is Parse with opts.
func ParseWith(ctx context.Context, p *jwt.Parser, raw string, key KeyFunc, opts Options) (*Claims, error) {
	c := new(Claims)
	atJWT := true
	alg := ""
	_, err := p.ParseWithClaims(raw, c, func(t *jwt.Token) (any, error) {
		if err := RefuseCritical(t); err != nil {
			return nil, err
		}
		typ, isString := t.Header["typ"].(string)
		_, present := t.Header["typ"]
		switch {
		case strings.EqualFold(typ, Type) || strings.EqualFold(typ, "application/"+Type):
		case opts.AnyJWTType && (!present || isString && (strings.EqualFold(typ, "JWT") || strings.EqualFold(typ, "application/jwt"))):
			atJWT = false
		default:
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
		if ak, ok := k.(AlgKey); ok {
			if ak.Alg != t.Method.Alg() {
				return nil, fmt.Errorf("key %q: %w", kid, ErrKeyAlg)
			}
			k = ak.Key
		}
		if err := KeyFitsAlg(t.Method.Alg(), k); err != nil {
			return nil, err
		}
		alg = t.Method.Alg()
		return k, nil
	})
	if err != nil {
		return nil, err
	}
	c.Alg = alg
	if !atJWT && (c.IDTokenClaims || c.ClientID != "" && slices.Contains(c.Audience, c.ClientID)) {
		return nil, ErrIDToken
	}
	if err := c.CheckRequired(); err != nil {
		return nil, err
	}
	return c, nil
}

// CheckRequired refuses claims without sub or client_id (RFC 9068 §2.2),
// whatever form they arrived in (a JWT, an introspection answer).
func (c *Claims) CheckRequired() error {
	switch {
	case c.Subject == "":
		return &ClaimError{"the access token lacks sub"}
	case c.ClientID == "":
		return &ClaimError{"the access token lacks client_id"}
	}
	return nil
}
