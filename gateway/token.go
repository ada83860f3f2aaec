package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Token handling limits.
const (
	maxTokenLen = 16 << 10 // bytes; far above any access token we issue
	maxActDepth = 32       // act nesting beyond this is refused outright
	// tokenLeeway tolerates clock skew with a remote issuer; an expired
	// token is refused within seconds, not half a minute.
	tokenLeeway     = 5 * time.Second
	claimsCacheSize = 10000
	minRSABits      = 2048
)

// principal is who a verified access token speaks for.
type principal struct {
	issuer   string
	subject  string
	clientID string
	// principalType is the principal_type claim: "agent" marks an
	// agent-only token (the agent acts on its own), "client" a client's
	// own token (client credentials); absent or "user" is a user. Absent
	// means user because other issuers do not send the claim (RFC 9068
	// has none) and mostly issue tokens for users; this project's issuer
	// always sends it, so its client tokens never pass as a user's.
	// Any other value is neither a user nor an agent.
	principalType string
	actors        []string // act chain, outermost (newest actor) first
	scope         string   // the scope claim as issued
	scopes        map[string]struct{}
	claims        map[string]any
	expiry        time.Time
}

// agent returns the acting agent: the outermost act.sub of a delegated
// token, the subject of an agent-only token, or "".
func (p *principal) agent() string {
	if len(p.actors) > 0 {
		return p.actors[0]
	}
	if p.principalType == "agent" {
		return p.subject
	}
	return ""
}

// isUser reports whether the top-level principal is a user: not an
// agent, not a client, nothing unknown.
func (p *principal) isUser() bool {
	return p.principalType == "" || p.principalType == "user"
}

// authError is a failed authentication, answered with a Bearer challenge.
type authError struct {
	status int
	code   string // RFC 6750 error code; "" when no token was presented
	desc   string // fixed, never derived from the token
}

func (e *authError) Error() string {
	if e.code == "" {
		return "no bearer token"
	}
	return e.code + ": " + e.desc
}

var (
	errNoToken = &authError{status: http.StatusUnauthorized}
)

func invalidToken(desc string) *authError {
	return &authError{status: http.StatusUnauthorized, code: "invalid_token", desc: desc}
}

func invalidRequest(desc string) *authError {
	return &authError{status: http.StatusBadRequest, code: "invalid_request", desc: desc}
}

// bearerToken takes the access token from the Authorization header only
// (RFC 6750 §2.1); a token in the query is refused, never read.
func bearerToken(r *http.Request) (string, *authError) {
	if r.URL.RawQuery != "" {
		// A query Go cannot parse (";" separators, bad escapes) may still
		// carry access_token to a server that reads it another way.
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return "", invalidRequest("the query string is malformed")
		}
		if q.Has("access_token") {
			return "", invalidRequest("access tokens are accepted in the Authorization header only")
		}
	}
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return "", errNoToken
	case 1:
	default:
		return "", invalidRequest("more than one Authorization header")
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		// Another scheme is no bearer token: challenge as for none.
		return "", errNoToken
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || len(token) > maxTokenLen || !validB64Token(token) {
		return "", invalidToken("malformed bearer token")
	}
	return token, nil
}

// validB64Token checks RFC 6750 b64token syntax.
func validB64Token(s string) bool {
	end := len(s)
	for end > 0 && s[end-1] == '=' {
		end--
	}
	if end == 0 {
		return false
	}
	for i := 0; i < end; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/':
		default:
			return false
		}
	}
	return true
}

// authenticate verifies a bearer token and returns its principal. Verified
// claims are cached by token hash until expiry; the Revoked hook is asked
// every time.
func (g *Gateway) authenticate(ctx context.Context, token string) (*principal, *authError) {
	key := sha256.Sum256([]byte(token))
	p := g.cache.get(key, g.now())
	if p == nil {
		var err *authError
		if p, err = g.verify(ctx, token); err != nil {
			return nil, err
		}
		g.cache.put(key, p, g.now())
	}
	if g.cfg.Revoked != nil && g.cfg.Revoked(ctx, p.claims) {
		return nil, invalidToken("the access token has been revoked")
	}
	return p, nil
}

// verify checks an RFC 9068 JWT access token: pinned algorithm, typ
// at+jwt, kid, key type matching the algorithm, iss, aud, exp, iat, nbf.
func (g *Gateway) verify(ctx context.Context, token string) (*principal, *authError) {
	claims := jwt.MapClaims{}
	_, err := g.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		if _, ok := t.Header["crit"]; ok {
			// RFC 7515 §4.1.11: extensions listed in crit must be
			// understood, and none is here.
			return nil, errCritical
		}
		typ, _ := t.Header["typ"].(string)
		if !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
			return nil, errWrongType
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errNoKid
		}
		key, err := g.cfg.Keys.Key(ctx, kid)
		if err != nil {
			return nil, fmt.Errorf("key %q: %w", kid, err)
		}
		if err := keyFitsAlg(t.Method.Alg(), key); err != nil {
			return nil, err
		}
		return key, nil
	})
	if err != nil {
		return nil, invalidToken(describeJWTError(err))
	}
	p, err := principalFromClaims(claims)
	if err != nil {
		return nil, invalidToken(err.Error())
	}
	granted := strings.Fields(p.scope)
	p.scopes = g.policy.effectiveScopes(granted)
	return p, nil
}

var (
	errWrongType = errors.New("token type is not at+jwt")
	errNoKid     = errors.New("token has no kid")
	errKeyType   = errors.New("key does not fit the algorithm")
	errCritical  = errors.New("token has critical header extensions")
)

// describeJWTError maps a validation failure to a fixed description.
func describeJWTError(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the access token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "the access token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the access token is not for this resource"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the access token is from another issuer"
	case errors.Is(err, errWrongType):
		return "the token is not a JWT access token (typ at+jwt)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the access token lacks a required claim"
	default:
		return "the access token is invalid"
	}
}

// keyFitsAlg refuses a key of the wrong type or size for alg, so that a
// key source can never be tricked into verifying with, say, an RSA key
// under an ECDSA header. HMAC and none never reach here (pinned methods).
func keyFitsAlg(alg string, key any) error {
	switch alg {
	case "ES256", "ES384", "ES512":
		k, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return errKeyType
		}
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		if k.Curve != want {
			return errKeyType
		}
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		k, ok := key.(*rsa.PublicKey)
		if !ok || k.N == nil || k.N.BitLen() < minRSABits {
			return errKeyType
		}
	case "EdDSA":
		k, ok := key.(ed25519.PublicKey)
		if !ok || len(k) != ed25519.PublicKeySize {
			return errKeyType
		}
	default:
		return errKeyType
	}
	return nil
}

// principalFromClaims reads the claims the gateway decides on. Required
// (RFC 9068): sub and client_id strings. Wrongly typed optional claims are
// refused rather than ignored.
func principalFromClaims(c jwt.MapClaims) (*principal, error) {
	p := &principal{claims: c}
	var ok bool
	if p.issuer, ok = c["iss"].(string); !ok {
		return nil, errors.New("the access token lacks iss")
	}
	if p.subject, ok = c["sub"].(string); !ok || p.subject == "" {
		return nil, errors.New("the access token lacks sub")
	}
	if p.clientID, ok = c["client_id"].(string); !ok || p.clientID == "" {
		return nil, errors.New("the access token lacks client_id")
	}
	if v, present := c["scope"]; present {
		if p.scope, ok = v.(string); !ok {
			return nil, errors.New("the access token has a malformed scope")
		}
	}
	if v, present := c["principal_type"]; present {
		if p.principalType, ok = v.(string); !ok {
			return nil, errors.New("the access token has a malformed principal_type")
		}
	}
	if v, present := c["act"]; present {
		chain, err := actChain(v)
		if err != nil {
			return nil, err
		}
		p.actors = chain
	}
	exp, err := c.GetExpirationTime()
	if err != nil || exp == nil {
		return nil, errors.New("the access token lacks exp")
	}
	p.expiry = exp.Time
	return p, nil
}

// actChain flattens nested act claims (RFC 8693 §4.1), outermost first.
func actChain(v any) ([]string, error) {
	var chain []string
	for {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, errors.New("the access token has a malformed act claim")
		}
		sub, ok := m["sub"].(string)
		if !ok || sub == "" {
			return nil, errors.New("the access token has an act claim without sub")
		}
		chain = append(chain, sub)
		if len(chain) > maxActDepth {
			return nil, errors.New("the access token's act chain is too deep")
		}
		next, present := m["act"]
		if !present {
			return chain, nil
		}
		v = next
	}
}

// claimsCache maps token hashes to verified principals until they expire.
// Bounded: when full, expired entries go first, then arbitrary ones (map
// order), which is enough to bound memory without bookkeeping.
type claimsCache struct {
	mu      sync.Mutex
	max     int
	entries map[[sha256.Size]byte]*principal
}

func newClaimsCache(max int) *claimsCache {
	return &claimsCache{max: max, entries: make(map[[sha256.Size]byte]*principal)}
}

func (c *claimsCache) get(key [sha256.Size]byte, now time.Time) *principal {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.entries[key]
	if p != nil && !now.Before(p.expiry) {
		delete(c.entries, key)
		return nil
	}
	return p
}

func (c *claimsCache) put(key [sha256.Size]byte, p *principal, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.expiry) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < c.max*9/10 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = p
}
