package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// Token handling limits.
const (
	maxTokenLen = 16 << 10 // bytes; far above any access token we issue
	// tokenLeeway tolerates clock skew with a remote issuer; an expired
	// token is refused within seconds, not half a minute. The issuer's
	// revocations outlast exp by as much.
	tokenLeeway     = accesstoken.Leeway
	claimsCacheSize = 10000
)

// principal is who a verified access token speaks for.
type principal struct {
	issuer   string
	subject  string
	clientID string
	// principalType is the principal_type claim: "agent" marks an
	// agent-only token (the agent acts on its own), "client" a client's
	// own token (client credentials); "user" is a user. This project's
	// issuer always sends it; other issuers do not (RFC 9068 has no such
	// claim), and their tokens are a client's when their claims say so
	// (clientOwnToken), a user's otherwise. Any other value is neither a
	// user nor an agent.
	principalType string
	actors        []string // act chain, outermost (newest actor) first
	scope         string   // the scope claim as issued
	scopes        map[string]struct{}
	jti           string // for revocation
	grantID       string // gid: the grant the token belongs to, for revocation
	expiry        time.Time
	// recheck is when an introspected token's answer may no longer be
	// reused (min of exp and the cache ceiling): its open streams end
	// then. Zero for a JWT.
	recheck time.Time
	jkt     string // cnf.jkt: the DPoP key the token is bound to, "" for a bearer token
	// kid and key verified the token, when its KeySource may withdraw
	// keys (keyWithdrawals; nil key otherwise, and for an introspected
	// token), key as an accesstoken.AlgKey for the token's algorithm;
	// keys is that source's count of withdrawals when the key was last
	// found published (Gateway.keyPublished).
	kid    string
	key    any
	keys   atomic.Uint64
	claims map[string]string // string claims argument rules read, by dotted path

	// holder names the principal across its tokens and clients (its
	// issuer, type and subject): whose answers are held (heldShares) and
	// whose requests are in flight (streamSet).
	holder string
	// client names one client of the principal (clientKey), whose
	// requests in flight streamSet counts too.
	client string

	// session is the last session id checked or issued for this
	// principal (see unwrapSession): a client sends the same one on every
	// request of its session, and the principal is shared by all of them
	// through the claims cache.
	session atomic.Pointer[sessionMemo]
}

// claim is the string claim at a dotted path ("sub", "email",
// "org.id"), "" when absent or not a string.
func (p *principal) claim(path string) string {
	switch path {
	case "sub":
		return p.subject
	case "client_id":
		return p.clientID
	}
	return p.claims[path]
}

// stringClaims reads the string claims at paths from a verified token's
// claims (a JWT payload or an introspection answer), by exact member names
// (as accesstoken reads the claims it knows). Claims absent or of another
// type are left out, so rules that need them fail, and so is email unless
// email_verified says the issuer verified it (emailVerified).
func stringClaims(payload []byte, paths []string) map[string]string {
	if len(paths) == 0 {
		return nil
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(payload, &top) != nil {
		return nil
	}
	out := make(map[string]string, len(paths))
	for _, path := range paths {
		obj := top
		names := strings.Split(path, ".")
		for i, name := range names {
			raw, ok := obj[name]
			if !ok {
				break
			}
			if i < len(names)-1 {
				if obj = nil; json.Unmarshal(raw, &obj) != nil || obj == nil {
					break
				}
				continue
			}
			var s string
			if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
				out[path] = s
			}
		}
	}
	if _, ok := out["email"]; ok && !emailVerified(top["email_verified"]) {
		delete(out, "email")
	}
	return out
}

// emailVerified reports whether an email_verified claim says the address
// in email was verified: true, or the string "true" that some providers
// send (as the issuer reads an identity provider's). An address nobody
// verified names no one: Keycloak's users set their own when they
// register or edit their profile (its access tokens carry both claims),
// Entra ID's optional email claim is whatever the account's own tenant
// set, unverified (nOAuth), so
// {token.email} holding for it would let anyone write as, or reach the
// files of, whoever's address they typed.
func emailVerified(raw json.RawMessage) bool {
	s := string(raw)
	return s == "true" || s == `"true"`
}

// jwtPayload is the decoded payload of a compact JWT, nil if it has none.
func jwtPayload(token string) []byte {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	return payload
}

// agent returns the acting agent: the outermost act.sub of a delegated
// token, the subject of an agent-only token, or "".
func (p *principal) agent() string {
	if len(p.actors) > 0 {
		return p.actors[0]
	}
	if p.principalType == accesstoken.PrincipalAgent {
		return p.subject
	}
	return ""
}

// isUser reports whether the top-level principal is a user: not an
// agent, not a client, nothing unknown.
func (p *principal) isUser() bool {
	return p.principalType == "" || p.principalType == accesstoken.PrincipalUser
}

// authError is a failed authentication, answered with a Bearer challenge.
type authError struct {
	status int
	code   string // RFC 6750 error code; "" when no token was presented
	desc   string // fixed, never derived from the token
	// dpop marks a failure of a DPoP request or of DPoP rules: its error
	// goes in the DPoP challenge, not the Bearer one.
	dpop bool
}

// of is e for a token presented with the DPoP scheme (dpop) or not: a
// DPoP request's token failure is told in the DPoP challenge (RFC 9449
// §7.1; RFC 6750 §3.1 for the scheme the request used), where a DPoP
// client reads it, and, with require_dpop, the only challenge. A copy:
// errors are shared.
func (e *authError) of(dpop bool) *authError {
	if !dpop || e.dpop || e.code == "" {
		return e
	}
	c := *e
	c.dpop = true
	return &c
}

func (e *authError) Error() string {
	if e.code == "" {
		return "no bearer token"
	}
	return e.code + ": " + e.desc
}

var (
	errNoToken        = &authError{status: http.StatusUnauthorized}
	errMalformedToken = invalidToken("malformed bearer token")
	// errRevocationsUnknown: the token may have been revoked without this
	// gateway knowing (Revocations cannot tell); not the token's fault, so
	// no challenge, and the client may retry.
	errRevocationsUnknown = &authError{status: http.StatusServiceUnavailable,
		desc: "revocations cannot be checked at the moment; retry later"}
	// errReplayUnknown: the shared DPoP replay record could not be
	// written, so the proof may have been used at another instance.
	errReplayUnknown = &authError{status: http.StatusServiceUnavailable,
		desc: "the DPoP proof cannot be checked for replay at the moment; retry later"}
	// errKeysUnknown: the key source cannot tell whether it publishes
	// the token's key (ErrKeysUnavailable: the local issuer's store
	// cannot be read, or a remote issuer's keys cannot be fetched); not
	// the token's fault, so no challenge: a good token must not be
	// thrown away for that, and the client may retry.
	errKeysUnknown = &authError{status: http.StatusServiceUnavailable,
		desc: "the access token's signing key cannot be read at the moment; retry later"}
)

func invalidToken(desc string) *authError {
	return &authError{status: http.StatusUnauthorized, code: "invalid_token", desc: desc}
}

func invalidRequest(desc string) *authError {
	return &authError{status: http.StatusBadRequest, code: "invalid_request", desc: desc}
}

// isAccessTokenParam reports whether a query parameter name is
// access_token as some server may read it: in any case (upperFold), cut by a NUL, as
// PHP reads names (leading spaces dropped, " " and "." read as "_", what
// follows a "[" an array index: access_token[], or an unclosed "[" read
// as "_": access[token), with brackets around it (Express's qs reads
// [access_token], Rack drops leading brackets and a trailing "]"), and
// after a "!" (Spring's field default).
func isAccessTokenParam(k string) bool {
	k = phpParam(k)
	return beforeBracket(k) == "access_token" || beforeBracket(strings.Replace(k, "[", "_", 1)) == "access_token"
}

// phpParam is a query parameter name as PHP reads it (phpName, with " "
// and "." read as "_"), in any case (upperFold).
func phpParam(k string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '.' {
			return '_'
		}
		return r
	}, upperFold(phpName(k)))
}

// phpName is a query parameter name as PHP starts reading it: up to a
// NUL, without leading spaces and brackets.
func phpName(k string) string {
	k, _, _ = strings.Cut(k, "\x00")
	return strings.TrimLeft(k, " []!")
}

// beforeBracket is s up to its first "[" or "]".
func beforeBracket(s string) string {
	if i := strings.IndexAny(s, "[]"); i >= 0 {
		return s[:i]
	}
	return s
}

// Authorization schemes that carry an access token.
const (
	schemeBearer = "Bearer"
	schemeDPoP   = "DPoP"
)

// bearerToken takes the access token from the Authorization header only
// (RFC 6750 §2.1), with the Bearer or the DPoP scheme (RFC 9449 §7.1),
// and returns it with its scheme; a token in the query is refused, never
// read.
func bearerToken(r *http.Request) (string, string, *authError) {
	if r.URL.RawQuery != "" {
		// A query Go cannot parse (";" separators, bad escapes) may still
		// carry access_token to a server that reads it another way.
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			return "", "", invalidRequest("the query string is malformed")
		}
		for k := range q {
			if isAccessTokenParam(k) {
				return "", "", invalidRequest("access tokens are accepted in the Authorization header only")
			}
		}
	}
	values := r.Header[hAuthorization]
	switch len(values) {
	case 0:
		return "", "", errNoToken
	case 1:
	default:
		return "", "", invalidRequest("more than one Authorization header")
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	switch {
	case ok && strings.EqualFold(scheme, schemeBearer):
		scheme = schemeBearer
	case ok && strings.EqualFold(scheme, schemeDPoP):
		scheme = schemeDPoP
	default:
		// Another scheme is no access token: challenge as for none.
		return "", "", errNoToken
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || len(token) > maxTokenLen {
		return "", scheme, errMalformedToken
	}
	// Its syntax (validB64Token) is checked by authenticate, only when
	// the token is not among the verified ones.
	return token, scheme, nil
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
		if !b64TokenChar(s[i]) {
			return false
		}
	}
	return true
}

// The b64token characters (RFC 6750 §2.1) as bit sets: below 64 the
// digits and "+/-.", from 64 to 127 the letters and "_~". A token is
// read once per request, and this is the whole per-character cost.
const (
	b64TokenLow  = 0x03ffe80000000000
	b64TokenHigh = 0x47fffffe87fffffe
)

func b64TokenChar(c byte) bool {
	if c < 64 {
		return b64TokenLow>>c&1 == 1
	}
	return c < 128 && b64TokenHigh>>(c-64)&1 == 1
}

// authenticate verifies a bearer token and returns its principal. Verified
// claims are cached by token hash until expiry (an introspected token's
// for at most Config.IntrospectionCache), inactive answers of the
// introspection endpoint briefly; revocation is asked every time. r is
// the request presenting the token (nil: none), whose client address
// has a share of the introspection calls.
func (g *Gateway) authenticate(ctx context.Context, r *http.Request, token string, now time.Time) (*principal, *authError) {
	// Hashed in place: a copy of the token would be an allocation per
	// request, and Sum256 only reads its input.
	key := sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
	p, _ := g.cache.get(key, now)
	if p != nil && !g.keyPublished(p) {
		p = nil // verified again, without the withdrawn key
	}
	g.metrics.TokenCache(p != nil)
	if p == nil {
		if !validB64Token(token) {
			return nil, errMalformedToken
		}
		var err *authError
		until := time.Time{}
		introspected := g.cfg.Introspector != nil && !isJWT(token)
		if introspected {
			if _, inactive := g.inactive.get(key, now); inactive {
				return nil, errInactive
			}
			p, until, err = g.introspect(ctx, r, key, token)
			if err == errInactive {
				g.inactive.put(key, nil, now.Add(g.cfg.InactiveCache), now)
			}
		} else {
			p, err = g.verify(ctx, token)
		}
		if err != nil {
			return nil, err
		}
		if until.IsZero() || p.expiry.Before(until) {
			until = p.expiry
		}
		if introspected {
			p.recheck = until
		}
		g.cache.put(key, p, until, now)
	}
	if g.cfg.Revocations != nil {
		switch revoked, err := g.cfg.Revocations.Revoked(ctx, p.jti, p.grantID); {
		case err != nil:
			return nil, errRevocationsUnknown
		case revoked:
			return nil, invalidToken("the access token has been revoked")
		}
	}
	return p, nil
}

// isJWT reports whether token has the shape of a compact JWS: three
// parts, the first of which, decoded as leniently as any JWT library
// reads a header, begins a JSON object. Anything else is an opaque
// token, which only its issuer can judge, two dots or not (PASETO's
// "v4.local.…", a product's "prefix.id.secret"). A token this calls a
// JWT is never introspected: one whose signature fails is refused, not
// passed on to an endpoint that would take it for a token of its own.
// Hence lenient: the standard alphabet and characters outside both are
// read as Node's Buffer, Python's urlsafe_b64decode and Nimbus read
// them, a BOM and whitespace skipped, and what follows the "{" not
// judged (Jackson reads data after the object, Gson unquoted names).
// Only asked on a cache miss, with an introspector.
func isJWT(token string) bool {
	head, rest, _ := strings.Cut(token, ".")
	if strings.Count(rest, ".") != 1 {
		return false
	}
	b := make([]byte, 0, len(head))
	for i := 0; i < len(head); i++ {
		switch c := head[i]; {
		case c == '+':
			b = append(b, '-')
		case c == '/':
			b = append(b, '_')
		case c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
			b = append(b, c)
		}
	}
	if len(b)%4 == 1 {
		b = b[:len(b)-1] // a dangling character carries no byte
	}
	h := make([]byte, base64.RawURLEncoding.DecodedLen(len(b)))
	n, err := base64.RawURLEncoding.Decode(h, b)
	if err != nil {
		return false
	}
	h = bytes.TrimLeft(bytes.TrimPrefix(bytes.TrimLeft(h[:n], " \t\r\n"), []byte("\ufeff")), " \t\r\n")
	return len(h) > 0 && h[0] == '{'
}

// verify checks a JWT access token (accesstoken.ParseWith): pinned
// algorithm, typ at+jwt (or JWT or none with Config.AcceptTypJWT, ID
// tokens refused), kid, key type matching the algorithm, iss, aud, exp,
// iat, nbf, sub and client_id.
func (g *Gateway) verify(ctx context.Context, token string) (*principal, *authError) {
	keyOf := g.cfg.Keys.PublicKey
	var kid string
	var key any
	var seen uint64
	if g.withdrawals != nil {
		// Counted before the key is read: a withdrawal after that is
		// looked into at the token's next use.
		seen = g.withdrawals.Withdrawals()
		keyOf = func(ctx context.Context, id string) (any, error) {
			k, err := g.cfg.Keys.PublicKey(ctx, id)
			kid, key = id, k
			return k, err
		}
	}
	opts := accesstoken.Options{AnyJWTType: g.cfg.AcceptTypJWT}
	c, err := accesstoken.ParseWith(ctx, g.parser, token, keyOf, opts)
	if err != nil && key != nil && (errors.Is(err, jwt.ErrTokenSignatureInvalid) ||
		errors.Is(err, accesstoken.ErrKeyType) || errors.Is(err, accesstoken.ErrKeyAlg)) {
		// The issuer may have given the kid another key, of another
		// type or algorithm too; while its keys cannot be fetched, that
		// cannot be told, and the token is not found bad (503, as for
		// a kid not known then).
		if r, ok := g.cfg.Keys.(keyRenewals); ok {
			switch renewed, rerr := r.Renewed(ctx, kid, key); {
			case renewed:
				c, err = accesstoken.ParseWith(ctx, g.parser, token, keyOf, opts)
			case errors.Is(rerr, ErrKeysUnavailable):
				err = rerr
			}
		}
	}
	switch {
	case errors.Is(err, ErrKeysUnavailable):
		return nil, errKeysUnknown
	case err != nil:
		return nil, invalidToken(describeTokenError(err))
	}
	// A remote issuer's token naming a member twice (or in two cases) is
	// read here as the last, and maybe as the first where it was written.
	// Asked once the signature holds, so that a token that is no JWT at
	// all is refused as such; only on a cache miss, and the local
	// issuer's tokens pass at no cost worth sparing them.
	if err := accesstoken.CheckMembers(token); err != nil {
		return nil, invalidToken(err.Error())
	}
	if err := g.checkActorClaims(c); err != nil {
		return nil, err
	}
	p := g.principalOf(c, jwtPayload(token))
	if _, named := key.(accesstoken.AlgKey); key != nil && !named {
		// The key is for any algorithm: what must stay published is
		// the key for the token's, which the issuer may come to name.
		key = accesstoken.AlgKey{Key: key, Alg: c.Alg}
	}
	p.kid, p.key = kid, key
	p.keys.Store(seen)
	return p, nil
}

// keyPublished reports whether the key that verified p's token is still
// published (keyWithdrawals): verified claims are kept until the token's
// exp, which whoever holds a key chooses, so a token of a key the issuer
// withdrew must not pass on them, nor its streams go on. Always true for
// an introspected token and a KeySource that withdraws no key.
func (g *Gateway) keyPublished(p *principal) bool {
	if g.withdrawals == nil || p.key == nil {
		return true
	}
	n := g.withdrawals.Withdrawals()
	if p.keys.Load() == n {
		return true
	}
	if !g.withdrawals.Published(p.kid, p.key) {
		return false
	}
	p.keys.Store(n)
	return true
}

// checkActorClaims refuses a principal_type or an act the issuer does
// not vouch for (Config.RefuseActorClaims). An empty principal_type reads
// as none.
func (g *Gateway) checkActorClaims(c *accesstoken.Claims) *authError {
	switch {
	case !g.cfg.RefuseActorClaims:
	case c.PrincipalType != "":
		return invalidToken("the access token carries principal_type, which this issuer is not trusted for")
	case c.Actor != nil:
		return invalidToken("the access token carries act, which this issuer is not trusted for")
	}
	return nil
}

// principalOf is the principal of verified claims; payload is the JSON
// they were read from, for the claims argument rules name.
func (g *Gateway) principalOf(c *accesstoken.Claims, payload []byte) *principal {
	p := &principal{
		issuer:        c.Issuer,
		subject:       c.Subject,
		clientID:      c.ClientID,
		principalType: c.PrincipalType,
		actors:        c.Actor.Chain(),
		scope:         c.Scope,
		jti:           c.ID,
		grantID:       c.GrantID,
		expiry:        c.ExpiresAt.Time,
		claims:        stringClaims(payload, g.policy.claims),
		jkt:           c.BoundKey(),
	}
	if p.principalType == "" && clientOwnToken(p, payload) {
		p.principalType = accesstoken.PrincipalClient
	}
	// Scopes are separated by the space character only (RFC 6749 §3.3):
	// a scope an issuer issued as one, holding another white space, stays
	// one that no rule names rather than becoming several.
	p.scopes = g.policy.effectiveScopes(strings.FieldsFunc(p.scope, func(r rune) bool { return r == ' ' }))
	p.holder, p.client = holderOf(p), clientKey(p)
	return p
}

// holderOf is principal.holder: p's issuer, type and subject.
func holderOf(p *principal) string { return dpop.HolderOf(p.issuer, principalKind(p), "", p.subject) }

// clientOwnToken reports whether claims without principal_type (another
// issuer's: RFC 9068 has no such claim) are those of a client's own
// token, which actor rules must not take for a user's (review s15-gateway
// F1): sub names the client, as RFC 9068 section 2.2 asks of client
// credentials tokens (Okta, and this project's); Auth0's gty
// "client-credentials" (its sub is "<client>@clients"); Entra ID's
// optional idtyp "app"; Keycloak's service account, whose
// preferred_username is "service-account-<client>".
func clientOwnToken(p *principal, payload []byte) bool {
	if p.subject == p.clientID {
		return true
	}
	// By exact name (RFC 7519 section 4), as accesstoken reads claims:
	// encoding/json would take a lone GTY or Preferred_Username, another
	// claim, which an issuer letting users name claims of their own
	// signs, for these, and a user's token for a client's.
	var m map[string]json.RawMessage
	if json.Unmarshal(payload, &m) != nil {
		// Verified claims that do not decode: nothing says user.
		return true
	}
	var gty, idtyp, username string
	for name, dst := range map[string]*string{"gty": &gty, "idtyp": &idtyp, "preferred_username": &username} {
		if raw, ok := m[name]; ok && json.Unmarshal(raw, dst) != nil {
			return true // not a string: nothing says user
		}
	}
	return gty == "client-credentials" || idtyp == "app" ||
		keycloakServiceAccount(username, p.clientID)
}

// keycloakServiceAccount reports whether username is the name Keycloak
// gives clientID's service account: "service-account-" and the client
// id lower-cased by Java's String.toLowerCase. Not by Unicode's folding,
// under which a user named "\u017fervice-account-app" (long s) would be
// the client's service account; nor by strings.ToLower alone, whose
// one-to-one mapping is not Java's where it differs: U+0130 (capital I
// with dot) is "i\u0307" in Java, and a capital sigma ending a word (by
// Java's own rule of where words end) is final sigma, U+03C2. A client
// id holding either (a Turkish "İK-PORTAL", a Greek one ending in Σ) had
// its service account's tokens read as a user's, passing require_user
// and user_only; sigma is taken in either form.
func keycloakServiceAccount(username, clientID string) bool {
	rest, ok := strings.CutPrefix(username, "service-account-")
	if !ok {
		return false
	}
	for _, r := range clientID {
		var taken bool
		switch r {
		case '\u0130':
			rest, taken = strings.CutPrefix(rest, "i\u0307")
		case '\u03a3':
			if rest, taken = strings.CutPrefix(rest, "\u03c3"); !taken {
				rest, taken = strings.CutPrefix(rest, "\u03c2")
			}
		default:
			l, n := utf8.DecodeRuneInString(rest)
			rest, taken = rest[n:], n > 0 && l == unicode.ToLower(r)
		}
		if !taken {
			return false
		}
	}
	return rest == ""
}

// describeTokenError maps a validation failure to a fixed description.
func describeTokenError(err error) string {
	var ce *accesstoken.ClaimError
	switch {
	case errors.As(err, &ce):
		return ce.Error()
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the access token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "the access token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the access token is not for this resource"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the access token is from another issuer"
	case errors.Is(err, accesstoken.ErrWrongType):
		return "the token is not a JWT access token (typ at+jwt)"
	case errors.Is(err, accesstoken.ErrIDToken):
		return "an ID token is not an access token"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the access token lacks a required claim"
	default:
		return "the access token is invalid"
	}
}

// claimsCache maps token hashes to verified principals until a time, or
// to nil (an inactive token). Bounded: when full, expired entries go
// first, then arbitrary ones (map order), which is enough to bound memory
// without bookkeeping.
type claimsCache struct {
	mu      sync.Mutex
	max     int
	entries map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	p     *principal
	until time.Time
}

func newClaimsCache(max int) *claimsCache {
	return &claimsCache{max: max, entries: make(map[[sha256.Size]byte]cacheEntry)}
}

// get returns the entry under key and whether there is one.
func (c *claimsCache) get(key [sha256.Size]byte, now time.Time) (*principal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if ok && !now.Before(e.until) {
		delete(c.entries, key)
		return nil, false
	}
	return e.p, ok
}

func (c *claimsCache) put(key [sha256.Size]byte, p *principal, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.until) {
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
	c.entries[key] = cacheEntry{p, until}
}
