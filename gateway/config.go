// Package gateway is the resource-server side of caddy-mcp-auth as plain
// net/http middleware: protected-resource metadata, bearer validation, a
// policy decision per JSON-RPC message, response filtering, session binding
// and audit events.
package gateway

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// Config configures a Gateway.
type Config struct {
	// Resource is this MCP endpoint's resource URL (RFC 8707 / RFC 9728),
	// e.g. https://mcp.example.com/mcp. Tokens must carry it in aud.
	Resource string
	// Issuer is the authorization server's issuer identifier; tokens must
	// carry it in iss, and it is published in authorization_servers.
	Issuer string
	// ResourceName is the optional human-readable resource_name published
	// in the protected resource metadata.
	ResourceName string
	// RootMetadata also serves the metadata at the root well-known URL
	// (/.well-known/oauth-protected-resource) when the resource has a path.
	// Several MCP servers on one host each serve their own path-inserted
	// URL; set this on at most one of them (the host's primary server). A
	// resource at the root path always serves the root URL.
	RootMetadata bool
	// Keys verifies token signatures.
	Keys KeySource
	// Algorithms pinned for access tokens. Default: ES256, RS256, EdDSA.
	Algorithms []string

	// Audience is the value tokens must carry in aud instead of Resource,
	// for authorization servers that cannot put the resource URL there
	// (RFC 8707) and name an API instead (Auth0 API identifiers, Entra
	// ID's api://...). The protected resource metadata still names
	// Resource. Default: Resource.
	Audience string
	// AcceptTypJWT also accepts JWT access tokens with typ JWT or none
	// (RFC 9068 says at+jwt); ID tokens are then refused by their claims
	// (accesstoken.Options.AnyJWTType). Default false.
	AcceptTypJWT bool
	// RefuseActorClaims refuses, 401 invalid_token, a token that carries
	// this project's principal_type claim or an RFC 8693 act, for an
	// issuer that does not vouch for them (a remote issuer other than a
	// caddy-mcp-auth one): such an issuer may let users add claims of
	// their own, and a user's token marked "agent", or naming an agent in
	// act, would pass require_agent rules, a client's marked "user" user
	// rules. Default false: the claims are read.
	RefuseActorClaims bool
	// Introspector, when set, checks tokens that are not JWTs (opaque
	// tokens) with the issuer's introspection endpoint (RFC 7662).
	// Without it, opaque tokens are refused.
	Introspector Introspector
	// IntrospectionCache is the longest an active introspection answer
	// is reused (never past the token's exp): a token revoked at the
	// issuer is refused at the latest this long after. Default
	// DefaultIntrospectionCache.
	IntrospectionCache time.Duration
	// InactiveCache is how long an inactive answer is reused for the
	// same token. Default DefaultInactiveCache.
	InactiveCache time.Duration

	// BaseScopes are needed for any access (initialize, tools/list, ping, ...).
	BaseScopes []string
	// Implies maps a broad scope to the narrower scopes it includes.
	Implies map[string][]string
	// Tools, Prompts and ResourceRules decide tools/call by tool name,
	// prompts/get by prompt name (glob patterns, first match wins), and
	// resources/read by URI prefix (longest prefix wins). A call that
	// matches no rule is denied.
	Tools         []Rule
	Prompts       []Rule
	ResourceRules []Rule
	// Methods pass requests and notifications whose method the request's
	// protocol revision does not define (extensions), by glob on the
	// method name, first match wins; every other undefined method is
	// refused with -32601. A pattern that matches a method some revision
	// defines, ignoring case, is refused by New.
	Methods []Rule

	// AllowedOrigins lists Origin values accepted (scheme://host[:port]);
	// requests without Origin are accepted; any other Origin gets 403.
	AllowedOrigins []string
	// MaxBodySize bounds request bodies (default 1 MiB); larger → 413.
	MaxBodySize int64
	// ForwardIdentity adds X-MCP-Subject / X-MCP-Client / X-MCP-Actor /
	// X-MCP-Scope headers to the upstream request (client copies are
	// always removed).
	ForwardIdentity bool
	// SessionKey is the HMAC key binding Mcp-Session-Id values to the
	// principal; gateways sharing it can check each other's sessions.
	SessionKey []byte

	// RequireDPoP refuses access tokens that are not DPoP-bound (RFC
	// 9449): bearer tokens get 401 with a DPoP challenge. Bound tokens
	// always need a valid proof, whatever this says.
	RequireDPoP bool
	// DPoPNonce makes every DPoP proof carry a nonce the gateway issued
	// (RFC 9449 §9, DPoP-Nonce header), keyed by SessionKey.
	DPoPNonce bool
	// DPoPReplay, when set, is the DPoP proof replay memory, shared with
	// the other gateways and issuers of the process and kept across
	// configuration reloads; nil gives the gateway one of its own.
	DPoPReplay *dpop.Replay
	// DPoPLedger, when set, records spent proofs where the other
	// instances see them (a store they share), so that a proof used at
	// one is refused at all; a request whose proof it cannot record is
	// refused with 503.
	DPoPLedger dpop.Ledger

	// Revocations, when set, is asked on every request whether the token
	// has been revoked.
	Revocations Revocations
	// StreamCheckInterval is how often the open event streams (GET
	// streams, SSE answers) are checked against Revocations and, for
	// introspected tokens, the time their answer may be reused until; a
	// revoked token's or grant's streams, and those of an introspected
	// token past that time, are closed at the next check. Default
	// DefaultStreamCheckInterval.
	StreamCheckInterval time.Duration
	// MaxInFlight bounds the requests one principal (issuer, principal
	// type and subject: a user through all their clients and tokens) has
	// in flight upstream at once through this gateway: GET event
	// streams, event-stream answers and calls whose answer has not come.
	// One more is refused 429 with Retry-After, and nothing is
	// forwarded. Default DefaultMaxInFlight.
	MaxInFlight int
	// MaxInFlightPerClient bounds, within MaxInFlight, the requests one
	// client of a principal (the client_id, and the outermost actor of a
	// delegated token) has in flight, so that one of a user's clients (a
	// runaway agent, a reconnect loop) cannot take every one the user
	// has. At most MaxInFlight; default DefaultMaxInFlightPerClient.
	MaxInFlightPerClient int

	// PinTools pins tool definitions (see PinMode); Pins keeps the pins
	// and is required unless PinTools is PinOff (the default). PinReload
	// is how often the pins are reloaded from Pins (default
	// DefaultPinReload): the longest an approval made elsewhere takes to
	// apply here.
	PinTools  PinMode
	Pins      PinStore
	PinReload time.Duration

	// ErrorStatus maps an error next returned without writing a response
	// to the status its error handler answers with, for the audit event.
	// Default: 500.
	ErrorStatus func(error) int

	// WriteTimeout, when set, returns the server's write timeout for r
	// (Caddy's write_timeout; 0: none), counted from the request's start:
	// a held answer's write deadline never passes it, and it is the
	// deadline put back after the write. Without it the deadline is
	// lifted to none.
	WriteTimeout func(r *http.Request) time.Duration

	// RequestID, when set, returns an id for the HTTP request (Caddy's
	// request UUID) to put in audit events.
	RequestID func(r *http.Request) string

	// ClientAddr, when set, returns the client's address for audit
	// events (remote_addr) and the share of introspection calls
	// (maxIntrospectionsPerAddress); default r.RemoteAddr, the peer,
	// which behind a load balancer is the balancer for every request.
	// Caddy's adapter gives its client_ip, which honours trusted_proxies.
	ClientAddr func(r *http.Request) string

	// OwnRequestContext, when set, gives the context of a request the
	// gateway makes of its own to next (a tools/list fetch for pinning)
	// whatever next keeps per request there, copied from the caller's:
	// Caddy's request variables, which reverse_proxy writes and its
	// dialer reads on a goroutine that may outlive the request, must not
	// be one map for two requests.
	OwnRequestContext func(ctx context.Context) context.Context

	// AuditDenialsOnly leaves out the audit events of allowed decisions
	// (requests forwarded to the upstream), for deployments whose log
	// volume matters more than a record of every access. Default false:
	// every decision is audited.
	AuditDenialsOnly bool
	// AuditArguments adds the arguments of every tools/call to its audit
	// events. Default false: argument values may be personal data or
	// secrets, and refusals name only the argument's pointer.
	AuditArguments bool

	Now         func() time.Time // default time.Now
	Logger      *zap.Logger      // operational log
	AuditLogger *zap.Logger      // one event per decision
	Metrics     Metrics          // default: counts nothing
}

// Rule says which scopes a tool, prompt or resource needs, and which actors
// may use it.
type Rule struct {
	Pattern string   // glob (tools, prompts) or URI prefix (resources)
	Scopes  []string // all required
	Actor   ActorRule
	// Args are conditions on a tools/call's arguments (tool rules only),
	// all of which must hold; they are checked once scopes and actor
	// rules allow the call.
	Args []ArgRule
}

// ArgRule is a condition on one argument of a tools/call, read from
// params.arguments exactly as forwarded.
//
// Pointer is an RFC 6901 JSON pointer into the arguments ("/to",
// "/filter/owner", "/ids/0"). Predicate is one of:
//
//   - equals <value>, one_of <value...>: a string equals a value exactly
//     (after JSON unescaping; no case folding or normalization); a number
//     equals a value that is a number, exactly (1e2 = 100 = 100.0, -0 = 0,
//     no rounding); true, false and null equal themselves.
//   - glob <pattern...>: a string matches a pattern ('*' any run of
//     characters, '/' and '@' included; '?' one character; '\' escapes).
//   - prefix <prefix...>: a string starts with a prefix.
//   - regex <re2>: a string matches the RE2 expression as a whole (it is
//     anchored at both ends).
//   - max_length <n>: a string has at most n Unicode code points.
//   - min <number>, max <number>: a number, compared exactly.
//   - present, absent: the argument exists (null included), or does not.
//   - type <type...>: the JSON type is one of string, number, integer
//     (a number without fraction: 1.0 and 1e2 count), boolean, null,
//     object, array.
//
// Values of equals, one_of, glob and prefix may contain {token.sub},
// {token.client_id}, {token.email} or any {token.<claim>.<member>}: the
// access token's claim, which must be a non-empty string, or the
// predicate fails. Any other brace is a configuration error.
//
// Strings tested by equals, one_of, glob, prefix and regex must be in
// Unicode NFC and free of control characters and of U+2028 and U+2029, or
// the predicate fails (an upstream may normalize them, or stop at NUL or a
// line break). On an
// array, a predicate other than present, absent and type holds for every
// element of a non-empty array (an empty one fails). A missing argument
// fails every predicate but absent, unless Optional is set.
type ArgRule struct {
	Pointer   string
	Predicate string
	Values    []string
	Optional  bool // a missing argument passes (null is not missing)
}

// ActorRule restricts who may call, by the token's top-level claims and its
// outermost act (RFC 8693).
type ActorRule struct {
	AllowedAgents []string // if non-empty, an acting agent (outermost act.sub, or sub of an agent-only token) must be listed
	RequireUser   bool     // refuse tokens whose principal is not a user (principal_type other than absent or "user")
	RequireAgent  bool     // refuse tokens without an agent (neither act nor principal_type "agent")
	UserOnly      bool     // only a user acting directly: refuse delegated (act), agent-only and client tokens
	MaxDepth      int      // maximum act nesting; 0 = unlimited
}

// KeySource returns the public key for a kid. The local issuer and a remote
// JWKS (RemoteKeys) both implement it. The key must fit the token's
// algorithm (accesstoken.KeyFitsAlg) or the token is refused. An error
// wrapping ErrKeysUnavailable means the source cannot tell now (its
// store cannot be read): the request is refused with 503, no challenge,
// and the client keeps its token; any other error refuses the token,
// 401 invalid_token.
type KeySource interface {
	PublicKey(ctx context.Context, kid string) (any, error)
}

// ErrKeysUnavailable is wrapped by a KeySource's error when it cannot
// tell whether it publishes the kid (not the token's fault).
var ErrKeysUnavailable = errors.New("signing keys cannot be read at the moment")

// keyWithdrawals is a KeySource that may withdraw a key it gave out
// (RemoteKeys: the issuer stops publishing it, a compromised key rotated
// out; the local issuer, issuer.Issuer: a retired key's publication
// ends once every token it signed has expired): a token verified before
// is then accepted, and its streams go on, only while its key is still
// published (Gateway.keyPublished).
type keyWithdrawals interface {
	// Withdrawals counts the withdrawals so far: while it stays the
	// same, a key found published is still.
	Withdrawals() uint64
	// Published reports whether kid still names key, as PublicKey
	// returned it, or for the algorithm an accesstoken.AlgKey names.
	Published(kid string, key any) bool
}

// keyRenewals is a KeySource whose issuer may give a kid another key
// (RemoteKeys): a signature the key known under its kid does not verify
// asks for the keys again (Renewed), as an unknown kid does.
type keyRenewals interface {
	// Renewed fetches the keys again unless that was tried lately, and
	// reports whether kid names another key than stale now; an error
	// wrapping ErrKeysUnavailable when it cannot tell (the keys cannot
	// be fetched).
	Renewed(ctx context.Context, kid string, stale any) (bool, error)
}

// Revocations knows which access tokens were revoked before they expired.
// It is asked on every request, so it must answer from memory, without
// allocating, and fail closed.
type Revocations interface {
	// Revoked reports whether the token jti, or the grant grantID it
	// belongs to ("" when the token names none), has been revoked. An
	// error means it cannot tell (its state is too old): the request is
	// refused with 503, whatever the bool says.
	Revoked(ctx context.Context, jti, grantID string) (bool, error)
}
