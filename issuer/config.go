package issuer

import (
	"cmp"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// Config configures an Issuer. The caddymodule package fills it from the
// Caddyfile; tests fill it directly.
type Config struct {
	// Issuer is the issuer identifier: an https URL (http only for loopback
	// hosts), optionally with a path. Endpoints live under it
	// (<issuer>/authorize, <issuer>/token, ...).
	Issuer string

	AccessTokenTTL  time.Duration // default 1h
	RefreshTokenTTL time.Duration // default 30 days (a family's absolute lifetime)
	CodeTTL         time.Duration // default 5m (at most 10m)
	IDTokenTTL      time.Duration // default 1h
	PARTTL          time.Duration // default 60s
	SessionTTL      time.Duration // login session; default 12h

	// RevocationResync is how often the revocation set catches up with
	// the store without a RevocationsChanged signal; default
	// DefaultRevocationResync.
	RevocationResync time.Duration
	// RevocationMaxStale is how long the revocation set may go without
	// catching up before Revoked fails closed (ErrRevocationsStale);
	// default DefaultRevocationMaxStale, at least twice RevocationResync.
	RevocationMaxStale time.Duration

	// SigningAlg is ES256 (default), RS256 or EdDSA.
	SigningAlg string

	// RequirePAR refuses /authorize requests that do not use a request_uri.
	RequirePAR bool

	// DPoPNonce makes every DPoP proof at the token, PAR and revocation
	// endpoints carry a nonce this server issued (RFC 9449 section 8),
	// which bounds a proof's usefulness to minutes even if its iat is
	// forged ahead.
	// Clients learn it from the DPoP-Nonce header of any answer.
	DPoPNonce bool
	// DPoPReplay, when set, is the DPoP proof replay memory, shared with
	// the other issuers and gateways of the process and kept across
	// configuration reloads; nil gives the issuer one of its own.
	DPoPReplay *dpop.Replay
	// Limits, when set, is where the brute-force and registration limits
	// keep their counters when the store is not shared with other
	// instances (bbolt, memory), kept across configuration reloads like
	// DPoPReplay, so that a reload does not hand an attacker a fresh
	// budget; nil gives the issuer memory of its own.
	Limits *LimitMemory

	// Directory entries declared in configuration. They are not written to
	// the store; runtime-managed entries (admin API, DCR, CIMD) are.
	Users   []User
	Groups  []Group
	Clients []Client
	Agents  []Agent

	// IdentityProviders are upstream OpenID Connect providers users may
	// sign in with (idp.go); several may be configured, and local users
	// are optional.
	IdentityProviders []IdentityProvider

	// TrustedIdPs are enterprise identity providers whose ID-JAGs the
	// token endpoint redeems (grant_jwt_bearer.go).
	TrustedIdPs []TrustedIdP

	// Resources are the protected resources tokens may be issued for.
	Resources []Resource

	// CIMD (Client ID Metadata Documents).
	CIMDAllowPrivate bool          // allow loopback/private/link-local targets and http (development only)
	CIMDMaxBytes     int64         // default 5 KiB
	CIMDTimeout      time.Duration // default 5s
	// HTTPClient fetches CIMD documents and remote JWKS. When nil, a client
	// with SSRF protection is built; tests may inject one.
	HTTPClient *http.Client

	// DisableRegistration turns off Dynamic Client Registration.
	DisableRegistration bool

	// MinPasswordLength is the shortest password the admin API accepts in
	// the clear (a bcrypt hash sent instead cannot be checked); 0 or less:
	// DefaultMinPasswordLength.
	MinPasswordLength int

	// Injected for tests. Defaults: time.Now, crypto/rand.Reader, zap.NewNop().
	Now    func() time.Time
	Rand   io.Reader
	Logger *zap.Logger
	// Metrics counts tokens issued and refused logins and client
	// authentications; nil counts nothing.
	Metrics Metrics
}

// User is a local account.
type User struct {
	Username     string   `json:"username"`
	PasswordHash string   `json:"password_hash"` // bcrypt
	Groups       []string `json:"groups,omitempty"`
	Name         string   `json:"name,omitempty"`
	Email        string   `json:"email,omitempty"`
	Disabled     bool     `json:"disabled,omitempty"`
	Source       string   `json:"source,omitempty"` // config, admin or idp; set by Users

	// Users of an identity provider (Source idp) carry where they come
	// from: the provider's name, the provider's subject, the provider
	// groups of the last login that the provider's group mapping names,
	// and when the provider last let them in.
	IdentityProvider string    `json:"identity_provider,omitempty"`
	IdPSubject       string    `json:"idp_subject,omitempty"`
	IdPGroups        []string  `json:"idp_groups,omitempty"`
	LastLogin        time.Time `json:"last_login,omitzero"`
	// IdPIssuedAt is when the provider issued the token (ID token or
	// ID-JAG) the groups are from, on the provider's clock: the ID-JAGs
	// redeemed later are ordered against it, not against LastLogin,
	// our time.
	IdPIssuedAt time.Time `json:"idp_issued_at,omitzero"`
	// IdPIssuer and IdPTenant are the provider's issuer and tenant when
	// it provisioned the user: the population whose sub IdPSubject is.
	// None recorded: a release before this one provisioned the user.
	IdPIssuer string `json:"idp_issuer,omitempty"`
	IdPTenant string `json:"idp_tenant,omitempty"`
}

// IdentityProvider is an upstream OpenID Connect provider (Okta, Entra
// ID, Google, Keycloak, Auth0, ...) that users sign in with: the
// authorization code flow with PKCE, state and nonce, the ID token
// checked by go-oidc. A user of provider p has the username (and token
// sub) "<p>:<value of UserClaim>".
type IdentityProvider struct {
	// Name identifies the provider in usernames and URLs: lowercase
	// letters, digits, - and _.
	Name string `json:"name"`
	// Issuer is the provider's issuer URL; its metadata is read from
	// <issuer>/.well-known/openid-configuration.
	Issuer       string `json:"issuer"`
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"` // empty: a public client (PKCE only)
	// Scopes asked of the provider; default openid email profile.
	Scopes []string `json:"scopes,omitempty"`
	// UserClaim names the user; default sub (stable, never reassigned).
	UserClaim string `json:"user_claim,omitempty"`
	// GroupsClaim carries the user's groups (an array of strings or a
	// string); default groups.
	GroupsClaim string `json:"groups_claim,omitempty"`
	// GroupMap maps provider groups to local groups (which grant scopes);
	// the provider group "*" matches every user the provider lets in. A
	// user with no mapped group cannot sign in.
	GroupMap map[string][]string `json:"group_map"`
	// AllowedEmailDomains, when set, admit only users whose email claim
	// is in one of them (and not marked unverified).
	AllowedEmailDomains []string `json:"allowed_email_domains,omitempty"`
	// Tenant is the provider's tenant, for an issuer of several (OpenID
	// Connect Enterprise's tenant claim): its subjects are unique within
	// one tenant only. Set, only ID tokens and ID-JAGs naming it are
	// admitted; unset, none naming a tenant is.
	Tenant string `json:"tenant,omitempty"`
	// DisplayName is shown on the login button; default Name.
	DisplayName string `json:"display_name,omitempty"`
	// Recheck is how long a sign-in at the provider counts: after it,
	// the user's refresh tokens are refused and the user must sign in
	// again, which re-reads the groups; default 1h.
	Recheck time.Duration `json:"-"`
}

// TrustedIdP is an enterprise identity provider whose Identity Assertion
// JWT Authorization Grants (ID-JAG, draft-ietf-oauth-identity-assertion-
// authz-grant; MCP's enterprise-managed authorization) this issuer
// redeems for access tokens with the jwt-bearer grant (RFC 7523). Its
// users are those of an identity provider with the same issuer: an
// ID-JAG's subject is matched or provisioned exactly as a sign-in there
// would (user_claim, groups_claim, group_map, allowed_email_domains).
type TrustedIdP struct {
	// Issuer is the iss of its ID-JAGs.
	Issuer string `json:"issuer"`
	// JWKSURI is where its signing keys are published (https; http only
	// for loopback hosts).
	JWKSURI string `json:"jwks_uri"`
	// IdentityProvider names the identity provider whose users its
	// ID-JAGs name; default the one whose issuer is Issuer.
	IdentityProvider string `json:"identity_provider,omitempty"`
}

// Group grants scopes to its members, per resource. Resource "*" applies to
// every resource.
type Group struct {
	Name   string              `json:"name"`
	Scopes map[string][]string `json:"scopes"` // resource URL (or "*") -> scopes
}

// Client is an OAuth client.
type Client struct {
	ID           string   `json:"client_id"`
	Name         string   `json:"client_name,omitempty"`
	SecretHash   string   `json:"secret_hash,omitempty"` // bcrypt or "sha256:<hex>"; empty for public clients
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// PostLogoutRedirectURIs are where the client may have the browser
	// sent after it signs out (OpenID Connect RP-Initiated Logout 1.0
	// section 3.1); the post_logout_redirect_uri it names must be one of
	// them exactly.
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	// GrantTypes the client may use. Empty means authorization_code and
	// refresh_token; client_credentials must be listed explicitly.
	GrantTypes              []string `json:"grant_types,omitempty"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"` // none, client_secret_basic, client_secret_post, private_key_jwt
	JWKS                    []byte   `json:"jwks,omitempty"`                       // raw JWK Set JSON for private_key_jwt
	JWKSURI                 string   `json:"jwks_uri,omitempty"`
	ApplicationType         string   `json:"application_type,omitempty"` // web or native
	// DPoPBoundAccessTokens (RFC 9449 section 5.2): the client always
	// uses DPoP, and token requests without a proof are refused.
	DPoPBoundAccessTokens bool `json:"dpop_bound_access_tokens,omitempty"`
	// RequirePushedAuthorizationRequests (RFC 9126 section 6): the
	// client's authorization requests are refused unless pushed first
	// (PAR), as all are with Config.RequirePAR.
	RequirePushedAuthorizationRequests bool `json:"require_pushed_authorization_requests,omitempty"`
	// IDTokenAlg is the algorithm of its ID tokens (OpenID Connect
	// Dynamic Client Registration 1.0 section 2): RS256 or the issuer's
	// signing_alg; empty means RS256, as there.
	IDTokenAlg string `json:"id_token_signed_response_alg,omitempty"`
	// DefaultMaxAge, in seconds, is the max_age of the client's
	// authorization requests that send none (OpenID Connect Dynamic
	// Client Registration 1.0 section 2); nil for none.
	DefaultMaxAge *uint32 `json:"default_max_age,omitempty"`
	// TokenEndpointAuthSigningAlg is the one algorithm a private_key_jwt
	// client's assertions may be signed with (OpenID Connect Dynamic
	// Client Registration 1.0 section 2: others "MUST be rejected");
	// empty for any of the offered ones.
	TokenEndpointAuthSigningAlg string `json:"token_endpoint_auth_signing_alg,omitempty"`
	// Resources the client may get tokens for; empty means every resource
	// (for a self-registered client, DCR or CIMD, none in grants without
	// a user).
	Resources []string `json:"resources,omitempty"`
	// Scopes the client may hold; empty means every scope of the resource
	// (for a self-registered client, none in grants without a user).
	Scopes []string `json:"scopes,omitempty"`
	// Introspect marks a resource server: it may introspect every token
	// (RFC 7662), not only those issued to it. Ignored for DCR and CIMD
	// clients; a public client cannot have it.
	Introspect bool      `json:"introspect,omitempty"`
	Source     string    `json:"source,omitempty"` // config, admin, dcr, cimd
	CreatedAt  time.Time `json:"created_at,omitempty"`
	// ExpiresAt is when a DCR client that obtains no more tokens is
	// deleted; zero for the others.
	ExpiresAt time.Time `json:"expires_at,omitzero"`

	// agent is set when the client is an agent authenticating as itself.
	agent *Agent
}

// selfRegistered reports whether anyone could have created the client
// (DCR, CIMD) rather than an operator.
func (c *Client) selfRegistered() bool { return c.Source == sourceDCR || c.Source == sourceCIMD }

// idTokenAlg is the algorithm its ID tokens are signed with.
func (c *Client) idTokenAlg() string { return cmp.Or(c.IDTokenAlg, "RS256") }

// Public reports whether the client has no credentials.
func (c *Client) Public() bool {
	return c.TokenEndpointAuthMethod == "" || c.TokenEndpointAuthMethod == "none"
}

// Agent is an AI agent (MCP host) principal. It authenticates at the
// token endpoint like a confidential client, with its own id (agents and
// clients share one id namespace): a secret (client_secret_basic or
// client_secret_post) or a key (private_key_jwt), exactly one.
type Agent struct {
	ID         string `json:"agent_id"`
	Name       string `json:"name,omitempty"`
	SecretHash string `json:"secret_hash,omitempty"` // bcrypt or "sha256:<hex>"
	JWKS       []byte `json:"jwks,omitempty"`        // raw JWK Set JSON for private_key_jwt
	JWKSURI    string `json:"jwks_uri,omitempty"`
	// AllowedClients are the clients whose users may delegate to the agent
	// (requested_actor, token exchange of their tokens); empty means any.
	AllowedClients []string `json:"allowed_clients,omitempty"`
	// Scopes the agent may ever hold, alone or for a user; empty means
	// every scope.
	Scopes []string `json:"scopes,omitempty"`
	// MaxDepth bounds the act chain of tokens in which the agent is the
	// newest actor (1: only directly for a user or agent); 0 means the
	// issuer's limit, MaxDelegationDepth.
	MaxDepth  int       `json:"max_depth,omitempty"`
	Disabled  bool      `json:"disabled,omitempty"`
	Source    string    `json:"source,omitempty"` // config or admin; set by Agents
	CreatedAt time.Time `json:"created_at,omitzero"`
}

// Resource is a protected resource (an MCP server URL) and its scopes.
type Resource struct {
	URL    string   `json:"url"`
	Scopes []string `json:"scopes"`
}
