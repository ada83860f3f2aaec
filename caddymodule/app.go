package caddymodule

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

func init() {
	caddy.RegisterModule(App{})
}

// App is the mcp_auth app: the authorization server shared by every
// mcp_issuer and mcp_gateway handler of the config. It owns the store,
// the signing keys and the directory of users, groups, clients and agents.
type App struct {
	// IssuerURL is the issuer identifier: an https URL (http only for
	// loopback hosts), optionally with a path. Its endpoints are served
	// by the mcp_issuer handler on the site with that address.
	IssuerURL string `json:"issuer,omitempty"`

	// StorageRaw selects where state (keys, sessions, refresh tokens,
	// runtime-managed users and clients) lives. Default: bolt at
	// "<caddy data dir>/mcp-auth/mcp-auth.db".
	StorageRaw json.RawMessage `json:"storage,omitempty" caddy:"namespace=mcp_auth.storage inline_key=module"`

	// Token and code lifetimes. Defaults: access 1h, refresh 30 days
	// (a refresh family's absolute lifetime), code 5m (at most 10m),
	// ID token 1h.
	AccessTokenTTL  caddy.Duration `json:"access_token_ttl,omitempty"`
	RefreshTokenTTL caddy.Duration `json:"refresh_token_ttl,omitempty"`
	CodeTTL         caddy.Duration `json:"code_ttl,omitempty"`
	IDTokenTTL      caddy.Duration `json:"id_token_ttl,omitempty"`

	// RevocationResync is how often this instance reads the revocations
	// other instances on the store committed, besides when notified of
	// them (PostgreSQL's NOTIFY); default 1s. RevocationMaxStale is how
	// long it may fail to before its gateways answer 503 rather than
	// honour tokens that may have been revoked; default 30s, at least
	// twice RevocationResync.
	RevocationResync   caddy.Duration `json:"revocation_resync,omitempty"`
	RevocationMaxStale caddy.Duration `json:"revocation_max_stale,omitempty"`

	// SigningAlg is ES256 (default), RS256 or EdDSA.
	SigningAlg string `json:"signing_alg,omitempty"`

	// RequirePAR refuses authorization requests not pushed first (RFC 9126).
	RequirePAR bool `json:"require_par,omitempty"`
	// DPoPNonce makes DPoP proofs at the token, PAR and revocation
	// endpoints carry a server nonce (RFC 9449 section 8).
	DPoPNonce bool `json:"dpop_nonce,omitempty"`
	// DisableRegistration turns off Dynamic Client Registration (RFC 7591).
	DisableRegistration bool `json:"disable_registration,omitempty"`
	// CIMDAllowPrivate lets Client ID Metadata Documents be fetched from
	// loopback, private and link-local addresses and over http. For
	// development only.
	CIMDAllowPrivate bool `json:"cimd_allow_private,omitempty"`
	// MinPasswordLength is the shortest password the admin API accepts
	// in the clear. Default: 8.
	MinPasswordLength int `json:"min_password_length,omitempty"`

	// Users are local accounts. Password hashes are bcrypt (the output of
	// `caddy hash-password`) and may be placeholders such as {env.HASH}.
	Users []User `json:"users,omitempty"`
	// Groups grant scopes to their members, per resource ("*": any).
	Groups []issuer.Group `json:"groups,omitempty"`
	// Clients are pre-registered OAuth clients.
	Clients []Client `json:"clients,omitempty"`
	// Agents are AI agent principals that may act on behalf of users.
	Agents []Agent `json:"agents,omitempty"`
	// Resources are protected resources in addition to the ones every
	// mcp_gateway with the local issuer registers (e.g. a resource served
	// by another Caddy instance).
	Resources []issuer.Resource `json:"resources,omitempty"`

	// IdentityProviders are upstream OpenID Connect providers users sign
	// in with ("Continue with <display_name>" on the login page).
	IdentityProviders []IdentityProvider `json:"identity_providers,omitempty"`

	// TrustedIdPs are enterprise identity providers whose ID-JAGs (MCP
	// enterprise-managed authorization) the token endpoint redeems with
	// the jwt-bearer grant; see issuer.TrustedIdP.
	TrustedIdPs []issuer.TrustedIdP `json:"trusted_idps,omitempty"`

	ctx        caddy.Context
	cfg        issuer.Config     // checked at Provision
	url        string            // the issuer identifier, as the issuer spells it
	gateways   []*GatewayHandler // provisioned with this app; finished by Start
	storage    Storage
	st         store.Store // opened by Start
	iss        *issuer.Issuer
	ready      chan struct{} // closed when Start returns
	running    bool          // Start succeeded; read after ready is closed
	stopped    bool          // Stop ran (Caddy's goroutine only)
	log        *zap.Logger
	purgeEvery time.Duration
	stop       context.CancelFunc // ends the purge loop and the revocation watch
	done       chan struct{}      // closed when both have returned
	// next is the app of the configuration that replaced this one, set
	// by Stop: this app's revocation set and signing keys are no longer
	// kept current, and its gateways' calls still in flight ask next too
	// (localIssuer). On another store too: a DSN spelt otherwise (a
	// password read from a rotated file, a pool size) opens a store of
	// its own on the same database, where next alone sees what is
	// revoked or withdrawn after the reload.
	// Made by Provision (a pointer: App is copied by value).
	next *atomic.Pointer[App]
}

// User is a local account.
type User struct {
	Username string `json:"username"`
	// PasswordHash is a bcrypt hash, as printed by `caddy hash-password`;
	// a placeholder such as {env.ALICE_HASH} is replaced at load.
	PasswordHash string   `json:"password_hash"`
	Groups       []string `json:"groups,omitempty"`
	Name         string   `json:"name,omitempty"`
	Email        string   `json:"email,omitempty"`
}

// IdentityProvider is an upstream OpenID Connect provider; see
// issuer.IdentityProvider. ClientSecret may be a placeholder such as
// {env.IDP_SECRET}, replaced at load.
type IdentityProvider struct {
	issuer.IdentityProvider
	// Recheck is how long a sign-in at the provider counts (default 1h):
	// after it, the user's refresh tokens are refused until the user
	// signs in there again.
	Recheck caddy.Duration `json:"recheck,omitempty"`
}

// Client is a pre-registered OAuth client.
type Client struct {
	ID   string `json:"client_id"`
	Name string `json:"client_name,omitempty"`
	// SecretHash is the bcrypt hash (or "sha256:<hex>") of the client
	// secret; a placeholder such as {env.CLIENT_HASH} is replaced at load.
	SecretHash string `json:"secret_hash,omitempty"`
	// Public marks a client without credentials (token_endpoint_auth_method
	// none). A client must be public or have a secret or a key set.
	Public       bool     `json:"public,omitempty"`
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// PostLogoutRedirectURIs are where OpenID Connect RP-Initiated
	// Logout may send the browser after the client signs the user out:
	// the post_logout_redirect_uri it names must be one of them exactly.
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes             []string `json:"grant_types,omitempty"`
	// AuthMethod is the token_endpoint_auth_method. Default: none for
	// public clients, client_secret_basic with a secret, private_key_jwt
	// with a key set.
	AuthMethod string `json:"token_endpoint_auth_method,omitempty"`
	// JWKSURI or JWKSFile (a JWK Set JSON file read at load) hold the
	// client's keys for private_key_jwt.
	JWKSURI  string `json:"jwks_uri,omitempty"`
	JWKSFile string `json:"jwks_file,omitempty"`
	// Resources the client may get tokens for; absent: all (an empty
	// list is refused).
	Resources []string `json:"resources,omitempty"`
	// Scopes the client may hold; absent: all of the resource's (an
	// empty list is refused).
	Scopes []string `json:"scopes,omitempty"`
	// Introspect marks a resource server: the client may introspect
	// every token, not only its own. It needs client authentication.
	Introspect bool `json:"introspect,omitempty"`
	// DPoPBoundAccessTokens: the client always uses DPoP (RFC 9449
	// section 5.2); token requests without a proof are refused.
	DPoPBoundAccessTokens bool `json:"dpop_bound_access_tokens,omitempty"`
	// RequirePushedAuthorizationRequests: the client's authorization
	// requests are refused unless pushed first (PAR, RFC 9126 section 6).
	RequirePushedAuthorizationRequests bool `json:"require_pushed_authorization_requests,omitempty"`
	// IDTokenAlg is the algorithm of the client's ID tokens: RS256 (the
	// default, as OpenID Connect's) or signing_alg.
	IDTokenAlg string `json:"id_token_signed_response_alg,omitempty"`
	// AuthSigningAlg is the one algorithm the client's private_key_jwt
	// assertions may be signed with (token_endpoint_auth_signing_alg);
	// default: any asymmetric one offered.
	AuthSigningAlg string `json:"token_endpoint_auth_signing_alg,omitempty"`
}

// Agent is an AI agent (MCP host) principal.
type Agent struct {
	ID   string `json:"agent_id"`
	Name string `json:"name,omitempty"`
	// Exactly one of SecretHash, JWKSURI and JWKSFile authenticates the
	// agent at the token endpoint (as for clients; agents and clients
	// share one id namespace).
	SecretHash string `json:"secret_hash,omitempty"`
	JWKSURI    string `json:"jwks_uri,omitempty"`
	JWKSFile   string `json:"jwks_file,omitempty"`
	// AllowedClients may request tokens acting as this agent; absent:
	// any (an empty list is refused).
	AllowedClients []string `json:"allowed_clients,omitempty"`
	// Scopes the agent may ever hold; absent: any (an empty list is
	// refused).
	Scopes []string `json:"scopes,omitempty"`
	// MaxDepth bounds the act chain of tokens the agent heads (1: only
	// directly for a user); absent: the issuer's limit (0 is refused:
	// see UnmarshalJSON).
	MaxDepth int `json:"max_depth,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "mcp_auth",
		New: func() caddy.Module { return new(App) },
	}
}

// Provision checks the configuration. It opens no store and writes
// nothing, so that `caddy validate` works beside a running Caddy and has no
// side effects: Start opens the store and builds the issuer.
func (a *App) Provision(ctx caddy.Context) error {
	a.ctx = ctx
	a.log = ctx.Logger()
	a.ready = make(chan struct{})
	a.next = new(atomic.Pointer[App])
	if a.purgeEvery == 0 {
		a.purgeEvery = 5 * time.Minute
	}
	cfg, err := a.issuerConfig()
	if err != nil {
		return err
	}
	cfg.Logger = a.log
	if cfg.Metrics, err = newIssuerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := issuer.CheckConfig(cfg); err != nil {
		return err
	}
	a.cfg = cfg
	u, err := url.Parse(a.IssuerURL)
	if err != nil {
		return fmt.Errorf("issuer %q: %w", a.IssuerURL, err)
	}
	// As issuer.New does: RawPath too, or an escape Go would not write
	// (%2F) is lost with the trailing slash.
	u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/"), strings.TrimSuffix(u.RawPath, "/")
	a.url = u.String()

	if a.StorageRaw == nil {
		a.StorageRaw = caddyconfig.JSONModuleObject(BoltStorage{}, "module", "bolt", nil)
	}
	mod, err := ctx.LoadModule(a, "StorageRaw")
	if err != nil {
		return fmt.Errorf("loading storage module: %w", err)
	}
	a.storage = mod.(Storage)
	return nil
}

// issuerConfig translates the app's configuration, expanding placeholders
// in secrets and reading key files.
func (a *App) issuerConfig() (issuer.Config, error) {
	if a.IssuerURL == "" {
		return issuer.Config{}, errors.New("issuer URL is required")
	}
	switch a.SigningAlg {
	case "", "ES256", "RS256", "EdDSA":
	default:
		return issuer.Config{}, fmt.Errorf("signing_alg %q: want ES256, RS256 or EdDSA", a.SigningAlg)
	}
	if a.MinPasswordLength < 0 {
		return issuer.Config{}, fmt.Errorf("min_password_length %d: want a non-negative integer", a.MinPasswordLength)
	}
	// bcrypt refuses a longer password: above it, every password the
	// admin API or the CLI was given was refused, too short or too long.
	if a.MinPasswordLength > issuer.MaxPasswordBytes {
		return issuer.Config{}, fmt.Errorf("min_password_length %d: no password could be set, since bcrypt takes at most %d bytes: want at most %d", a.MinPasswordLength, issuer.MaxPasswordBytes, issuer.MaxPasswordBytes)
	}
	// A negative duration would read as unset, the default (the
	// Caddyfile refuses it already).
	for _, d := range []struct {
		name string
		v    caddy.Duration
	}{
		{"access_token_ttl", a.AccessTokenTTL}, {"refresh_token_ttl", a.RefreshTokenTTL}, {"code_ttl", a.CodeTTL},
		{"id_token_ttl", a.IDTokenTTL}, {"revocation_resync", a.RevocationResync}, {"revocation_max_stale", a.RevocationMaxStale},
	} {
		if d.v < 0 {
			return issuer.Config{}, fmt.Errorf("%s %v: want a positive duration", d.name, time.Duration(d.v))
		}
		if err := atLeastASecond(d.name, d.v); err != nil {
			return issuer.Config{}, err
		}
	}
	if err := a.addressesNotReplaced(); err != nil {
		return issuer.Config{}, err
	}
	repl := caddy.NewReplacer()
	cfg := issuer.Config{
		Issuer:              a.IssuerURL,
		AccessTokenTTL:      time.Duration(a.AccessTokenTTL),
		RefreshTokenTTL:     time.Duration(a.RefreshTokenTTL),
		CodeTTL:             time.Duration(a.CodeTTL),
		IDTokenTTL:          time.Duration(a.IDTokenTTL),
		RevocationResync:    time.Duration(a.RevocationResync),
		RevocationMaxStale:  time.Duration(a.RevocationMaxStale),
		SigningAlg:          a.SigningAlg,
		RequirePAR:          a.RequirePAR,
		DPoPNonce:           a.DPoPNonce,
		DPoPReplay:          dpopReplay,
		Limits:              limitMemory(a.IssuerURL),
		DisableRegistration: a.DisableRegistration,
		CIMDAllowPrivate:    a.CIMDAllowPrivate,
		MinPasswordLength:   a.MinPasswordLength,
		Groups:              a.Groups,
		Resources:           a.Resources,
	}
	// The issuer validates the directory (unique names, hash formats,
	// credentials fitting the auth method); this only translates, with
	// hints for mistakes that are easy to make in a Caddyfile.
	groups := make(map[string]bool, len(a.Groups))
	for _, g := range a.Groups {
		if err := notReplaced("group", g.Name, "name", g.Name); err != nil {
			return cfg, err
		}
		groups[g.Name] = true
	}
	for _, u := range a.Users {
		if err := cmp.Or(notReplaced("user", u.Username, "name", u.Username), notReplaced("user", u.Username, "email", u.Email)); err != nil {
			return cfg, err
		}
		hash, err := expandSecret(repl, u.PasswordHash)
		if err == nil {
			err = issuer.CheckPasswordHash(hash)
		}
		if err != nil {
			return cfg, fmt.Errorf("user %q: password hash: %w", u.Username, err)
		}
		for _, g := range u.Groups {
			if !groups[g] {
				return cfg, fmt.Errorf("user %q: %s", u.Username, unknownGroup(g, a.Groups))
			}
		}
		cfg.Users = append(cfg.Users, issuer.User{
			Username:     u.Username,
			PasswordHash: hash,
			Groups:       u.Groups,
			Name:         u.Name,
			Email:        u.Email,
			Source:       "config",
		})
	}
	for _, p := range a.IdentityProviders {
		ip := p.IdentityProvider
		ip.Recheck = time.Duration(p.Recheck)
		if err := atLeastASecond("recheck", p.Recheck); err != nil {
			return cfg, fmt.Errorf("identity_provider %q: %w", p.Name, err)
		}
		var err error
		warnInClear(a.log, "mcp_auth: identity_provider "+p.Name+": client_secret", ip.ClientSecret, false)
		warnOpenProvider(a.log, ip)
		if ip.ClientSecret, err = expandSecret(repl, ip.ClientSecret); err != nil {
			return cfg, fmt.Errorf("identity_provider %q: client_secret: %w", p.Name, err)
		}
		cfg.IdentityProviders = append(cfg.IdentityProviders, ip)
	}
	cfg.TrustedIdPs = a.TrustedIdPs
	for _, c := range a.Clients {
		if err := notReplaced("client", c.ID, "id", c.ID); err != nil {
			return cfg, err
		}
		ic, err := c.issuerClient(repl)
		if err != nil {
			return cfg, fmt.Errorf("client %q: %w", c.ID, err)
		}
		cfg.Clients = append(cfg.Clients, ic)
	}
	for _, ag := range a.Agents {
		if err := notReplaced("agent", ag.ID, "id", ag.ID); err != nil {
			return cfg, err
		}
		ia, err := ag.issuerAgent(repl)
		if err != nil {
			return cfg, fmt.Errorf("agent %q: %w", ag.ID, err)
		}
		cfg.Agents = append(cfg.Agents, ia)
	}
	return cfg, nil
}

// atLeastASecond refuses a lifetime or interval under a second (0 is
// the default). None means anything that short: a token's exp counts
// whole seconds, so it would be expired when issued, and a
// revocation_resync that short reads the store in a busy loop. In a
// JSON configuration a number is nanoseconds (caddy.Duration), so
// "access_token_ttl": 3600, written for an hour, is one.
//
// The JSON hint is given for a value that is no whole number of
// milliseconds, one a number of seconds read as nanoseconds makes; a
// Caddyfile's "500ms" is refused without it.
func atLeastASecond(name string, d caddy.Duration) error {
	if d <= 0 || d >= caddy.Duration(time.Second) {
		return nil
	}
	if d%caddy.Duration(time.Millisecond) == 0 {
		return fmt.Errorf("%s %v: want at least 1s", name, time.Duration(d))
	}
	return fmt.Errorf("%s %v: want at least 1s (a JSON number is nanoseconds: %d is %v; write a duration string such as \"1h\")", name, time.Duration(d), int64(d), time.Duration(d))
}

func (c Client) issuerClient(repl *caddy.Replacer) (issuer.Client, error) {
	secret, err := expandSecret(repl, c.SecretHash)
	if err != nil {
		return issuer.Client{}, fmt.Errorf("secret: %w", err)
	}
	ic := issuer.Client{
		ID:                                 c.ID,
		Name:                               c.Name,
		SecretHash:                         secret,
		RedirectURIs:                       c.RedirectURIs,
		PostLogoutRedirectURIs:             c.PostLogoutRedirectURIs,
		GrantTypes:                         c.GrantTypes,
		TokenEndpointAuthMethod:            c.AuthMethod,
		JWKSURI:                            c.JWKSURI,
		Resources:                          c.Resources,
		Scopes:                             c.Scopes,
		Introspect:                         c.Introspect,
		DPoPBoundAccessTokens:              c.DPoPBoundAccessTokens,
		RequirePushedAuthorizationRequests: c.RequirePushedAuthorizationRequests,
		IDTokenAlg:                         c.IDTokenAlg,
		TokenEndpointAuthSigningAlg:        c.AuthSigningAlg,
		Source:                             "config",
	}
	if ic.JWKS, err = readJWKS(c.JWKSFile); err != nil {
		return ic, err
	}
	if c.SecretHash != "" {
		if err := issuer.CheckSecretHash(ic.SecretHash); err != nil {
			return ic, err
		}
	}
	// Public is explicit: a client declared without credentials is a
	// mistake more often than a wish for a public client.
	switch {
	case c.Public && ic.TokenEndpointAuthMethod != "" && ic.TokenEndpointAuthMethod != "none":
		return ic, errors.New("a public client's auth method is none")
	case c.Public:
		ic.TokenEndpointAuthMethod = "none"
	case ic.TokenEndpointAuthMethod == "" && ic.SecretHash == "" && ic.JWKS == nil && ic.JWKSURI == "":
		return ic, errors.New("needs a secret, a key set (jwks, jwks_uri), or public")
	}
	return ic, nil
}

func (ag Agent) issuerAgent(repl *caddy.Replacer) (issuer.Agent, error) {
	secret, err := expandSecret(repl, ag.SecretHash)
	if err != nil {
		return issuer.Agent{}, fmt.Errorf("secret: %w", err)
	}
	ia := issuer.Agent{
		ID:             ag.ID,
		Name:           ag.Name,
		SecretHash:     secret,
		JWKSURI:        ag.JWKSURI,
		AllowedClients: ag.AllowedClients,
		Scopes:         ag.Scopes,
		MaxDepth:       ag.MaxDepth,
	}
	if ia.JWKS, err = readJWKS(ag.JWKSFile); err != nil {
		return ia, err
	}
	if ag.SecretHash != "" {
		if err := issuer.CheckSecretHash(ia.SecretHash); err != nil {
			return ia, err
		}
	}
	return ia, nil
}

// notReplaced refuses a placeholder in a name or address of the
// directory (field of the kind entry name): only hashes and secrets have
// theirs replaced, so `user {env.ADMIN_USER} ...` made a user named
// "{env.ADMIN_USER}", `client {env.CLIENT_ID}` a client of that id, and
// the operator's own was never declared, as a storage path's is refused
// (BoltStorage.Provision).
func notReplaced(kind, name, field, v string) error {
	ph := placeholder.FindString(v)
	if ph == "" {
		return nil
	}
	entry := kind
	if name != "" {
		entry = fmt.Sprintf("%s %q", kind, name)
	}
	return fmt.Errorf("%s: the %s holds the placeholder %s, which is not replaced there (only hashes and secrets take placeholders): write the %s itself (in a Caddyfile {$NAME} is replaced when the file is adapted)", entry, field, ph, field)
}

// notReplacedIn is notReplaced for each of vs.
func notReplacedIn(kind, name, field string, vs []string) error {
	for _, v := range vs {
		if err := notReplaced(kind, name, field, v); err != nil {
			return err
		}
	}
	return nil
}

// addressesNotReplaced refuses a placeholder in a URL or id the issuer
// reads (see notReplaced): an identity provider's issuer or client_id
// (`https://login.microsoftonline.com/{env.TENANT_ID}/v2.0`, written
// beside a client_secret that is replaced), a redirect URI, a key set's
// URL, the issuer's own URL. Each loaded as written, and the sign-ins,
// redirects or key reads that needed the value failed at run time,
// with nothing said at load.
func (a *App) addressesNotReplaced() error {
	errs := []error{notReplaced("mcp_auth", "", "issuer", a.IssuerURL)}
	for _, r := range a.Resources {
		errs = append(errs, notReplaced("resource", r.URL, "URL", r.URL))
	}
	for _, p := range a.IdentityProviders {
		errs = append(errs, notReplaced("identity_provider", p.Name, "issuer", p.Issuer),
			notReplaced("identity_provider", p.Name, "client_id", p.ClientID),
			notReplaced("identity_provider", p.Name, "tenant", p.Tenant))
	}
	for _, t := range a.TrustedIdPs {
		errs = append(errs, notReplaced("trusted_idp", t.Issuer, "issuer", t.Issuer),
			notReplaced("trusted_idp", t.Issuer, "jwks_uri", t.JWKSURI),
			notReplaced("trusted_idp", t.Issuer, "identity_provider", t.IdentityProvider))
	}
	for _, c := range a.Clients {
		errs = append(errs, notReplacedIn("client", c.ID, "redirect_uri", c.RedirectURIs),
			notReplacedIn("client", c.ID, "post_logout_redirect_uri", c.PostLogoutRedirectURIs),
			notReplaced("client", c.ID, "jwks_uri", c.JWKSURI),
			notReplacedIn("client", c.ID, "resources entry", c.Resources))
	}
	for _, ag := range a.Agents {
		errs = append(errs, notReplaced("agent", ag.ID, "jwks_uri", ag.JWKSURI),
			notReplacedIn("agent", ag.ID, "allowed_clients entry", ag.AllowedClients))
	}
	return cmp.Or(errs...)
}

// expandSecret replaces the placeholders ({env.NAME}, {file.PATH}) of a
// configured hash or key. One that resolves to nothing is an error naming
// the placeholder, never a value.
func expandSecret(repl *caddy.Replacer, raw string) (string, error) {
	var empty []string
	out, err := repl.ReplaceFunc(raw, func(name string, val any) (any, error) {
		if val == nil || fmt.Sprint(val) == "" {
			empty = append(empty, "{"+name+"}")
		}
		return val, nil
	})
	if err != nil {
		return "", err
	}
	if len(empty) > 0 {
		return "", fmt.Errorf("%s resolves to nothing (an unset environment variable, or a missing or empty file)", strings.Join(empty, ", "))
	}
	return out, nil
}

// warnInClear warns that the secret of field is written, in whole or in
// part, in the configuration itself (or was, by a {$NAME} the Caddyfile
// adapter replaced), which Caddy shows: in the admin API's /config, in
// autosave.json and in `caddy adapt`, and, for a field of the http app
// (inHTTPApp: a handler's), in its log at DEBUG level, where the http
// app logs its configuration as loaded ("adjusted config"). A password
// hash is no such secret; a DSN's password is refused (checkDSN).
func warnInClear(log *zap.Logger, field, raw string, inHTTPApp bool) {
	if strings.TrimSpace(placeholder.ReplaceAllString(raw, "")) == "" {
		return
	}
	shown := "the admin API's /config, autosave.json, caddy adapt"
	if inHTTPApp {
		shown += ", its log at DEBUG level"
	}
	log.Warn(field + " is written in the configuration, which Caddy shows (" + shown + "): give it as a placeholder, {env.NAME} or {file.<path>}")
}

// warnOpenProvider warns that a provider any account can sign in at
// (Google: every Google account, unless its OAuth app is "Internal" to a
// Workspace) admits everyone into a local group: `group *` with no
// allowed_email_domains (review s17-ops F3).
func warnOpenProvider(log *zap.Logger, p issuer.IdentityProvider) {
	if strings.TrimSuffix(p.Issuer, "/") != "https://accounts.google.com" || len(p.AllowedEmailDomains) > 0 || len(p.GroupMap["*"]) == 0 {
		return
	}
	log.Warn("mcp_auth: identity_provider " + p.Name + ": every Google account may sign in and gets the groups of `group *` (" + strings.Join(p.GroupMap["*"], ", ") + "), unless the OAuth app is Internal to a Workspace: admit your domain with allowed_email_domains")
}

// unknownGroup says that a user's group is not declared.
func unknownGroup(name string, groups []issuer.Group) string {
	if len(groups) == 0 {
		return fmt.Sprintf("group %q is not declared (no group is): add `group %s { scopes <resource> <scope...> }` to mcp_auth", name, name)
	}
	names := make([]string, len(groups))
	for n, g := range groups {
		names[n] = g.Name
	}
	return fmt.Sprintf("group %q is not declared (groups: %s)", name, strings.Join(names, ", "))
}

func readJWKS(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) == 0 {
		return nil, fmt.Errorf("jwks %s: not a JWK Set with keys", path)
	}
	return b, nil
}

// Start checks the config against the http app's sites, opens the store,
// builds the issuer and finishes the gateways provisioned with the app
// (session keys from the store, resources registered). Then it revokes
// what this config took away from the previous one (removed or re-keyed
// users, clients and agents; see issuer.ApplyConfigChanges), warns about
// reverse proxies that bypass the gateways, and starts purging expired
// entries from the store and keeping the issuer's revocation set current
// (issuer.WatchRevocations). It runs once the whole config has provisioned: a
// config that fails to load revokes nothing, and only now is the http app,
// with every route, provisioned.
//
// Caddy starts apps in no particular order, so the http app may already
// serve requests: the handlers wait until Start returns (see started).
func (a *App) Start() error {
	defer close(a.ready)
	var httpApp *caddyhttp.App
	if v, err := a.ctx.AppIfConfigured("http"); err == nil {
		httpApp = v.(*caddyhttp.App)
	}
	if err := a.checkAgainstSites(httpApp); err != nil {
		return err
	}
	st, err := a.storage.Open()
	if err != nil {
		return err
	}
	a.st = st
	if a.iss, err = issuer.New(a.cfg, st); err != nil {
		return err
	}
	// Before ApplyConfigChanges: a config that fails to start applies
	// nothing.
	if err := a.iss.MakeIDTokenKey(context.Background()); err != nil {
		return err
	}
	for _, h := range a.gateways {
		if err := h.start(a); err != nil {
			return err
		}
	}
	// Once the gateways have registered the scopes their rules name.
	if err := a.iss.CheckConfiguredScopes(); err != nil {
		return err
	}
	if err := a.iss.ApplyConfigChanges(context.Background()); err != nil {
		return err
	}
	if httpApp != nil {
		warnUnguardedProxies(httpApp, a.log)
		warnCookieProxies(httpApp, a.log)
		warnHostCopies(httpApp, a.log)
		warnLenientProxies(httpApp, a.log)
		warnIssuerOffSite(a.url, httpApp, a.log)
		urls := []string{a.url}
		for _, h := range a.gateways {
			urls = append(urls, h.Resource)
		}
		warnPlainHTTPListeners(urls, httpApp, a.log)
	}
	warnSharedAudiences(a.gateways, a.log)
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	a.done = make(chan struct{})
	go func() {
		defer close(a.done)
		var wg sync.WaitGroup
		wg.Go(func() { a.iss.WatchRevocations(ctx) })
		a.purge(ctx)
		wg.Wait()
	}()
	a.running = true
	// Where the state lives, for the operator's backups; never the DSN,
	// which may hold a password.
	a.log.Info("mcp_auth started", zap.String("issuer", a.IssuerURL), zap.String("store", storeName(a.storage)),
		zap.Int("gateways", len(a.gateways)))
	return nil
}

// storeName names the store for the operational log.
func storeName(s Storage) string {
	switch s := s.(type) {
	case *BoltStorage:
		return "bolt " + s.abs
	case *MemoryStorage:
		return "memory (forgotten when Caddy stops)"
	case *PostgresStorage:
		return "postgres"
	}
	return fmt.Sprintf("%T", s)
}

// started waits until Start has returned and reports whether it
// succeeded; false as well when ctx ends or the config is unloaded first.
func (a *App) started(ctx context.Context) bool {
	// Started first: once the config is unloaded after a reload, a.ctx is
	// done too, and requests still in flight on the old config must not
	// be refused at random by select's choice.
	select {
	case <-a.ready:
		return a.running
	default:
	}
	select {
	case <-a.ready:
		return a.running
	case <-ctx.Done():
	case <-a.ctx.Done():
	}
	return false
}

// Stop stops the purge loop and the issuer's revocation watch and waits
// for them. Caddy also stops the apps of a configuration that failed to
// start after this one started, and keeps the old configuration running:
// this app has applied its changes (ApplyConfigChanges) all the same, so
// the running configuration's app records itself again
// (issuer.RecordConfig), and the next configuration is compared with the
// one that ran, not with this one (what the running one granted
// meanwhile under the old credentials is ended then). After a successful
// reload the running app is the new one and records what it recorded at
// its own start.
func (a *App) Stop() error {
	a.stopped = true
	if a.stop != nil {
		a.stop()
		<-a.done
	}
	if a.iss == nil {
		return nil
	}
	if v, err := caddy.ActiveContext().AppIfConfigured("mcp_auth"); err == nil {
		if running, ok := v.(*App); ok && running != a && running.iss != nil {
			a.next.Store(running)
			if err := running.iss.RecordConfig(context.Background()); err != nil {
				a.log.Error("recording the running configuration again", zap.Error(err))
			}
		}
	}
	return nil
}

// Cleanup runs when the configuration is unloaded. Caddy calls Stop
// first, on a normal unload and when another app of the configuration
// fails to start; when the configuration fails after all its apps started
// (a failing admin config loader, say), it only unloads it, and this app
// stops here, as in Stop: the running configuration records itself again.
func (a *App) Cleanup() error {
	if a.running && !a.stopped {
		return a.Stop()
	}
	return nil
}

func (a *App) purge(ctx context.Context) {
	t := time.NewTicker(a.purgeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n, err := a.st.Purge(ctx)
			if err != nil {
				if ctx.Err() == nil {
					a.log.Error("purging expired entries", zap.Error(err))
				}
				continue
			}
			if n > 0 {
				a.log.Debug("purged expired entries", zap.Int("count", n))
			}
		}
	}
}

// Issuer returns the authorization server, waiting for Start; nil if the
// app did not start.
func (a *App) Issuer() *issuer.Issuer {
	if !a.started(context.Background()) {
		return nil
	}
	return a.iss
}

// Store returns the app's store, waiting for Start; nil if the app did
// not start.
func (a *App) Store() store.Store {
	if !a.started(context.Background()) {
		return nil
	}
	return a.st
}

// SessionKey returns the default HMAC key for gateway session binding,
// shared by every instance on the store. The store must be open (Start).
func (a *App) SessionKey(ctx context.Context) ([]byte, error) {
	return a.iss.GatewaySessionKey(ctx)
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
)
