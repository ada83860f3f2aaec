// Package gateway is the resource-server side of caddy-mcp-auth as plain
// net/http middleware: protected-resource metadata, bearer validation, a
// policy decision per JSON-RPC message, response filtering, session binding
// and audit events.
package gateway

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"
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

	// Revocations, when set, is asked on every request whether the token
	// has been revoked.
	Revocations Revocations
	// StreamCheckInterval is how often the open event streams (GET
	// streams, SSE answers) are checked against Revocations; a revoked
	// token's or grant's streams are closed at the next check. Default
	// DefaultStreamCheckInterval.
	StreamCheckInterval time.Duration

	// ErrorStatus maps an error next returned without writing a response
	// to the status its error handler answers with, for the audit event.
	// Default: 500.
	ErrorStatus func(error) int

	// RequestID, when set, returns an id for the HTTP request (Caddy's
	// request UUID) to put in audit events.
	RequestID func(r *http.Request) string

	// AuditDenialsOnly leaves out the audit events of allowed decisions
	// (requests forwarded to the upstream), for deployments whose log
	// volume matters more than a record of every access. Default false:
	// every decision is audited.
	AuditDenialsOnly bool

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
// algorithm (accesstoken.KeyFitsAlg) or the token is refused.
type KeySource interface {
	PublicKey(ctx context.Context, kid string) (any, error)
}

// Revocations knows which access tokens were revoked before they expired.
// It is asked on every request, so it must answer from memory or a fast
// local store, and fail closed: an error it cannot resolve is "revoked".
type Revocations interface {
	// Revoked reports whether the token jti, or the grant grantID it
	// belongs to ("" when the token names none), has been revoked.
	Revoked(ctx context.Context, jti, grantID string) bool
}
