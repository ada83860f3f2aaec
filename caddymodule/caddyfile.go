package caddymodule

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/dustin/go-humanize"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/gateway"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("mcp_auth", parseGlobalOption)
}

func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		return nil, d.Err("mcp_auth may be given only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "mcp_auth", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from the global mcp_auth option.
// Syntax:
//
//	mcp_auth {
//		issuer <url>
//		storage bolt [<path>]
//		storage memory
//		storage postgres <dsn>
//		access_token_ttl <duration>
//		refresh_token_ttl <duration>
//		code_ttl <duration>
//		id_token_ttl <duration>
//		revocation_resync <duration>
//		revocation_max_stale <duration>
//		signing_alg ES256|RS256|EdDSA
//		require_par
//		dpop_nonce
//		disable_registration
//		cimd_allow_private
//		min_password_length <n>
//
//		user <name> <bcrypt-hash> {
//			groups <group...>
//			name <display name>
//			email <address>
//		}
//		group <name> {
//			scopes <resource-url|*> <scope...>
//		}
//		client <client_id> {
//			name <display name>
//			secret <bcrypt-hash|sha256:hex>
//			public
//			redirect_uri <uri...>
//			post_logout_redirect_uri <uri...>
//			grant_types <grant-type...>
//			auth_method none|client_secret_basic|client_secret_post|private_key_jwt
//			jwks_uri <url>
//			jwks <file>
//			resources <resource-url...>
//			scopes <scope...>
//			introspect
//			dpop_bound_access_tokens
//			require_pushed_authorization_requests
//			id_token_alg RS256|<signing_alg>
//			auth_signing_alg <alg>
//		}
//		agent <agent_id> {
//			name <display name>
//			secret <bcrypt-hash|sha256:hex>
//			jwks_uri <url>
//			jwks <file>
//			allowed_clients <client_id...>
//			scopes <scope...>
//			max_depth <n>
//		}
//		resource <url> {
//			scopes <scope...>
//		}
//		identity_provider <name> {
//			issuer <url>
//			client_id <id>
//			client_secret <secret>
//			scopes <scope...>
//			user_claim <claim>
//			groups_claim <claim>
//			group <provider-group|*> <local-group...>
//			allowed_email_domains <domain...>
//			display_name <text>
//			tenant <id>
//			recheck <duration>
//		}
//		trusted_idp <issuer> {
//			jwks_uri <url>
//			identity_provider <name>
//		}
//	}
//
// Hashes and secrets may be placeholders ({env.NAME}, {file.PATH}),
// replaced when the config is loaded; {$NAME} is replaced when the
// Caddyfile is adapted.
// The user, group, client, agent, redirect_uri, post_logout_redirect_uri,
// scopes, resource, identity_provider and trusted_idp subdirectives (and group inside
// identity_provider) may repeat.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	block := d.Token()
	if d.NextArg() {
		return d.ArgErr()
	}
	// Users may name groups declared further down: checked at the end,
	// with the line of the user's groups.
	type groupRef struct {
		user, group string
		at          caddyfile.Token
	}
	var refs []groupRef
	var minPasswordGiven bool
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "issuer":
			err = oneArg(d, &a.IssuerURL)
		case "storage":
			if a.StorageRaw != nil {
				return d.Errf("storage: given more than once")
			}
			a.StorageRaw, err = parseStorage(d)
		case "access_token_ttl":
			err = durationArg(d, &a.AccessTokenTTL)
		case "refresh_token_ttl":
			err = durationArg(d, &a.RefreshTokenTTL)
		case "code_ttl":
			err = durationArg(d, &a.CodeTTL)
		case "id_token_ttl":
			err = durationArg(d, &a.IDTokenTTL)
		case "revocation_resync":
			err = durationArg(d, &a.RevocationResync)
		case "revocation_max_stale":
			err = durationArg(d, &a.RevocationMaxStale)
		case "signing_alg":
			err = oneArg(d, &a.SigningAlg)
			if err == nil && a.SigningAlg != "ES256" && a.SigningAlg != "RS256" && a.SigningAlg != "EdDSA" {
				err = d.Errf("signing_alg %q: want ES256, RS256 or EdDSA", a.SigningAlg)
			}
		case "require_par":
			err = flag(d, &a.RequirePAR)
		case "dpop_nonce":
			err = flag(d, &a.DPoPNonce)
		case "disable_registration":
			err = flag(d, &a.DisableRegistration)
		case "cimd_allow_private":
			err = flag(d, &a.CIMDAllowPrivate)
		case "min_password_length":
			err = intArg(d, &a.MinPasswordLength, &minPasswordGiven)
		case "user":
			var u User
			var at caddyfile.Token
			u, at, err = parseUser(d)
			a.Users = append(a.Users, u)
			for _, g := range u.Groups {
				refs = append(refs, groupRef{fmt.Sprintf("user %q", u.Username), g, at})
			}
		case "group":
			err = a.parseGroup(d)
		case "client":
			var c Client
			c, err = parseClient(d)
			a.Clients = append(a.Clients, c)
		case "agent":
			var ag Agent
			ag, err = parseAgent(d)
			a.Agents = append(a.Agents, ag)
		case "resource":
			err = a.parseResource(d)
		case "identity_provider":
			var p IdentityProvider
			var at caddyfile.Token
			p, at, err = parseIdentityProvider(d)
			a.IdentityProviders = append(a.IdentityProviders, p)
			for _, local := range p.GroupMap {
				for _, g := range local {
					refs = append(refs, groupRef{"identity_provider " + p.Name, g, at})
				}
			}
		case "trusted_idp":
			var t issuer.TrustedIdP
			t, err = parseTrustedIdP(d)
			a.TrustedIdPs = append(a.TrustedIdPs, t)
		default:
			return d.Errf("unrecognized subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	for _, r := range refs {
		if !slices.ContainsFunc(a.Groups, func(g issuer.Group) bool { return g.Name == r.group }) {
			return errAt(r.at, "%s: %s", r.user, unknownGroup(r.group, a.Groups))
		}
	}
	// Provision would refuse it too, but with no line to look at.
	if a.IssuerURL == "" {
		return errAt(block, "mcp_auth: issuer is required: add `issuer <url>`, the URL of the site that serves mcp_issuer")
	}
	return nil
}

// errAt is a Caddyfile error at the line of tok.
func errAt(tok caddyfile.Token, format string, args ...any) error {
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.Errf(format, args...)
}

// isPlaceholder reports whether a configured value is replaced at load
// (and can only be checked then).
func isPlaceholder(s string) bool { return strings.Contains(s, "{") }

// secretArg reads a secret hash, checking it now unless it is a
// placeholder.
func secretArg(d *caddyfile.Dispenser, v *string) error {
	if err := oneArg(d, v); err != nil {
		return err
	}
	if !isPlaceholder(*v) {
		if err := issuer.CheckSecretHash(*v); err != nil {
			return d.Errf("%v", err)
		}
	}
	return nil
}

func parseStorage(d *caddyfile.Dispenser) ([]byte, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	switch d.Val() {
	case "bolt":
		var b BoltStorage
		if d.NextArg() {
			b.Path = d.Val()
		}
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		return caddyconfig.JSONModuleObject(b, "module", "bolt", nil), nil
	case "memory":
		if d.NextArg() {
			return nil, d.ArgErr()
		}
		return caddyconfig.JSONModuleObject(MemoryStorage{}, "module", "memory", nil), nil
	case "postgres":
		var p PostgresStorage
		if !d.Args(&p.DSN) || d.NextArg() {
			return nil, d.Errf("storage postgres: want one <dsn> (quoted if it has spaces)")
		}
		if err := checkDSN(p.DSN); err != nil {
			return nil, d.Errf("%v", err)
		}
		return caddyconfig.JSONModuleObject(p, "module", "postgres", nil), nil
	default:
		return nil, d.Errf("unknown storage %q: want bolt, memory or postgres", d.Val())
	}
}

func parseUser(d *caddyfile.Dispenser) (User, caddyfile.Token, error) {
	var u User
	at := d.Token()
	if !d.Args(&u.Username, &u.PasswordHash) {
		return u, at, d.Errf("user: want <name> <bcrypt-hash>")
	}
	if d.NextArg() {
		return u, at, d.ArgErr()
	}
	if !isPlaceholder(u.PasswordHash) {
		if err := issuer.CheckPasswordHash(u.PasswordHash); err != nil {
			return u, at, d.Errf("user %q: password hash: %v", u.Username, err)
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "groups":
			at = d.Token()
			err = listArg(d, &u.Groups)
		case "name":
			err = oneArg(d, &u.Name)
		case "email":
			err = oneArg(d, &u.Email)
		default:
			return u, at, d.Errf("unrecognized user subdirective %q", d.Val())
		}
		if err != nil {
			return u, at, err
		}
	}
	return u, at, nil
}

func (a *App) parseGroup(d *caddyfile.Dispenser) error {
	var name string
	if err := oneArg(d, &name); err != nil {
		return err
	}
	scopes := map[string][]string{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "scopes":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("scopes: want <resource-url|*> <scope...>")
			}
			scopes[args[0]] = append(scopes[args[0]], args[1:]...)
		default:
			return d.Errf("unrecognized group subdirective %q", d.Val())
		}
	}
	a.Groups = append(a.Groups, issuer.Group{Name: name, Scopes: scopes})
	return nil
}

func parseIdentityProvider(d *caddyfile.Dispenser) (IdentityProvider, caddyfile.Token, error) {
	var p IdentityProvider
	if err := oneArg(d, &p.Name); err != nil {
		return p, d.Token(), err
	}
	at := d.Token()
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "issuer":
			err = oneArg(d, &p.Issuer)
		case "client_id":
			err = oneArg(d, &p.ClientID)
		case "client_secret":
			err = secretValueArg(d, &p.ClientSecret)
		case "scopes":
			err = listArg(d, &p.Scopes)
		case "user_claim":
			err = oneArg(d, &p.UserClaim)
		case "groups_claim":
			err = oneArg(d, &p.GroupsClaim)
		case "group":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return p, at, d.Errf("group: want <provider-group|*> <local-group...>")
			}
			if p.GroupMap == nil {
				p.GroupMap = map[string][]string{}
			}
			p.GroupMap[args[0]] = append(p.GroupMap[args[0]], args[1:]...)
			at = d.Token()
		case "allowed_email_domains":
			err = listArg(d, &p.AllowedEmailDomains)
		case "display_name":
			err = oneArg(d, &p.DisplayName)
		case "tenant":
			err = oneArg(d, &p.Tenant)
		case "recheck":
			err = durationArg(d, &p.Recheck)
		default:
			return p, at, d.Errf("unrecognized identity_provider subdirective %q", d.Val())
		}
		if err != nil {
			return p, at, err
		}
	}
	return p, at, nil
}

func parseTrustedIdP(d *caddyfile.Dispenser) (issuer.TrustedIdP, error) {
	var t issuer.TrustedIdP
	if err := oneArg(d, &t.Issuer); err != nil {
		return t, err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "jwks_uri":
			err = oneArg(d, &t.JWKSURI)
		case "identity_provider":
			err = oneArg(d, &t.IdentityProvider)
		default:
			return t, d.Errf("unrecognized trusted_idp subdirective %q", d.Val())
		}
		if err != nil {
			return t, err
		}
	}
	if t.JWKSURI == "" {
		return t, d.Errf("trusted_idp %s: jwks_uri is required", t.Issuer)
	}
	return t, nil
}

func parseClient(d *caddyfile.Dispenser) (Client, error) {
	var c Client
	if err := oneArg(d, &c.ID); err != nil {
		return c, err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "name":
			err = oneArg(d, &c.Name)
		case "secret":
			err = secretArg(d, &c.SecretHash)
		case "public":
			err = flag(d, &c.Public)
		case "redirect_uri", "redirect_uris":
			err = listArg(d, &c.RedirectURIs)
		case "post_logout_redirect_uri", "post_logout_redirect_uris":
			err = listArg(d, &c.PostLogoutRedirectURIs)
		case "grant_types":
			err = listArg(d, &c.GrantTypes)
		case "auth_method":
			err = oneArg(d, &c.AuthMethod)
		case "jwks_uri":
			err = oneArg(d, &c.JWKSURI)
		case "jwks":
			err = oneArg(d, &c.JWKSFile)
		case "resources":
			err = listArg(d, &c.Resources)
		case "scopes":
			err = listArg(d, &c.Scopes)
		case "introspect":
			err = flag(d, &c.Introspect)
		case "dpop_bound_access_tokens":
			err = flag(d, &c.DPoPBoundAccessTokens)
		case "require_pushed_authorization_requests":
			err = flag(d, &c.RequirePushedAuthorizationRequests)
		case "id_token_alg":
			err = oneArg(d, &c.IDTokenAlg)
		case "auth_signing_alg":
			err = oneArg(d, &c.AuthSigningAlg)
		default:
			return c, d.Errf("unrecognized client subdirective %q", d.Val())
		}
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

func parseAgent(d *caddyfile.Dispenser) (Agent, error) {
	var ag Agent
	if err := oneArg(d, &ag.ID); err != nil {
		return ag, err
	}
	var maxDepthGiven bool
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "name":
			err = oneArg(d, &ag.Name)
		case "secret":
			err = secretArg(d, &ag.SecretHash)
		case "jwks_uri":
			err = oneArg(d, &ag.JWKSURI)
		case "jwks":
			err = oneArg(d, &ag.JWKSFile)
		case "allowed_clients":
			err = listArg(d, &ag.AllowedClients)
		case "scopes":
			err = listArg(d, &ag.Scopes)
		case "max_depth":
			err = maxDepthArg(d, &ag.MaxDepth, &maxDepthGiven, "the issuer's limit, 5")
		default:
			return ag, d.Errf("unrecognized agent subdirective %q", d.Val())
		}
		if err != nil {
			return ag, err
		}
	}
	return ag, nil
}

func (a *App) parseResource(d *caddyfile.Dispenser) error {
	var url string
	if err := oneArg(d, &url); err != nil {
		return err
	}
	var scopes []string
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "scopes":
			if err := listArg(d, &scopes); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized resource subdirective %q", d.Val())
		}
	}
	a.Resources = append(a.Resources, issuer.Resource{URL: url, Scopes: scopes})
	return nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	mcp_gateway [<matcher>] {
//		resource <url>
//		issuer local|<issuer-url> [{
//			accept_typ_jwt
//			agent_claims
//			audience <aud>
//			introspection {
//				endpoint <url>
//				client_id <id>
//				client_secret <secret>
//				cache <duration>
//			}
//		}]
//		scope <scope...>
//		scope_implies <broad-scope> <narrow-scope...>
//		tool <name|glob> [<scope...>] [{
//			agents <agent_id...>
//			require_user
//			require_agent
//			user_only
//			max_depth <n>
//			arg <json-pointer> [optional] <predicate> [<value...>]
//		}]
//		prompt <name|glob> [<scope...>] [{ ...as for tool... }]
//		resource_rule <uri-prefix> [<scope...>] [{ ...as for tool... }]
//		method <name|glob> [<scope...>] [{ ...as for tool... }]
//		allowed_origins <origin...>
//		max_body_size <size>
//		max_in_flight <n>
//		max_in_flight_per_client <n>
//		forward_identity
//		audit all|denials_only
//		audit_arguments
//		session_key <base64-key>
//		pin_tools off|first_use|approved
//		require_dpop
//		dpop_nonce
//	}
//
// scope (the base scopes every request needs), scope_implies, tool,
// prompt, resource_rule, method and allowed_origins may repeat. Tools,
// prompts and methods are matched in order (first match wins); a call that
// matches no rule is refused. A method rule passes an extension method the
// request's protocol revision does not define (every other one is refused
// as not found); it cannot match an MCP method. Sizes take units (1MB,
// 512KiB).
//
// arg (tool rules only, may repeat, all must hold) checks one argument of
// a tools/call, named by an RFC 6901 pointer into params.arguments, with
// a predicate: equals <v>, one_of <v...>, glob <pattern...>,
// prefix <prefix...>, regex <re2>, max_length <n>, min <n>, max <n>,
// present, absent, type <type...>. Values of equals, one_of, glob and
// prefix may hold {token.sub}, {token.email}, {token.client_id} or any
// {token.<claim>}. optional lets a missing argument pass. See
// gateway.ArgRule for the exact semantics.

func (h *GatewayHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	block := d.Token()
	if d.NextArg() {
		return d.ArgErr()
	}
	maxInFlightGiven, perClientGiven := false, false
	for d.NextBlock(0) {
		var err error
		switch d.Val() {
		case "resource":
			err = oneArg(d, &h.Resource)
		case "issuer":
			err = h.parseIssuer(d)
		case "scope", "scopes":
			err = listArg(d, &h.Scopes)
		case "scope_implies":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("scope_implies: want <broad-scope> <narrow-scope...>")
			}
			if h.ScopeImplies == nil {
				h.ScopeImplies = map[string][]string{}
			}
			h.ScopeImplies[args[0]] = append(h.ScopeImplies[args[0]], args[1:]...)
		case "tool":
			err = appendRule(d, &h.Tools)
		case "prompt":
			err = appendRule(d, &h.Prompts)
		case "resource_rule":
			err = appendRule(d, &h.ResourceRules)
		case "method":
			err = appendRule(d, &h.Methods)
		case "allowed_origins":
			err = listArg(d, &h.AllowedOrigins)
		case "max_body_size":
			var s string
			if err = oneArg(d, &s); err == nil {
				size, perr := humanize.ParseBytes(s)
				if perr != nil || size == 0 || size > 1<<40 {
					return d.Errf("max_body_size %q: want a size such as 1MB", s)
				}
				if h.MaxBodySize != 0 {
					return d.Errf("max_body_size: given more than once")
				}
				h.MaxBodySize = int64(size)
			}
		case "max_in_flight":
			if err = intArg(d, &h.MaxInFlight, &maxInFlightGiven); err == nil && h.MaxInFlight == 0 {
				return d.Errf("max_in_flight 0: want at least 1")
			}
		case "max_in_flight_per_client":
			if err = intArg(d, &h.MaxInFlightPerClient, &perClientGiven); err == nil && h.MaxInFlightPerClient == 0 {
				return d.Errf("max_in_flight_per_client 0: want at least 1")
			}
		case "forward_identity":
			err = flag(d, &h.ForwardIdentity)
		case "audit_arguments":
			err = flag(d, &h.AuditArguments)
		case "audit":
			if err = oneArg(d, &h.Audit); err == nil && h.Audit != "all" && h.Audit != "denials_only" {
				return d.Errf("audit %q: want all or denials_only", h.Audit)
			}
		case "session_key":
			err = secretValueArg(d, &h.SessionKey)
		case "pin_tools":
			if err = oneArg(d, &h.PinTools); err == nil {
				if _, perr := gateway.ParsePinMode(h.PinTools); perr != nil {
					return d.Errf("pin_tools: %v", perr)
				}
			}
		case "require_dpop":
			err = flag(d, &h.RequireDPoP)
		case "dpop_nonce":
			err = flag(d, &h.DPoPNonce)
		default:
			return d.Errf("unrecognized subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	if h.Resource == "" {
		return errAt(block, "mcp_gateway: resource is required: add `resource <url>`, the MCP endpoint's URL as clients use it")
	}
	// What Provision would refuse without the rest of the config is
	// refused here, where the block's line can be named.
	if (h.Issuer == "" || h.Issuer == "local") && h.remoteOptions() {
		return errAt(block, "mcp_gateway %s: %v", h.Resource, errLocalRemoteOptions)
	}
	if max := cmp.Or(h.MaxInFlight, gateway.DefaultMaxInFlight); h.MaxInFlightPerClient > max {
		return errAt(block, "mcp_gateway %s: max_in_flight_per_client %d is above max_in_flight (%d), which bounds all of a principal's clients together", h.Resource, h.MaxInFlightPerClient, max)
	}
	cfg := h.rulesConfig()
	if err := gateway.CheckRules(&cfg); err != nil {
		return errAt(block, "mcp_gateway %s: %v", h.Resource, err)
	}
	return nil
}

// parseIssuer reads issuer <url> and its block of options for tokens of
// a remote issuer.
func (h *GatewayHandler) parseIssuer(d *caddyfile.Dispenser) error {
	if err := oneArg(d, &h.Issuer); err != nil {
		return err
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "accept_typ_jwt":
			err = flag(d, &h.AcceptTypJWT)
		case "agent_claims":
			err = flag(d, &h.AgentClaims)
		case "audience":
			err = oneArg(d, &h.Audience)
		case "introspection":
			if d.NextArg() {
				return d.ArgErr()
			}
			if h.Introspection != nil {
				return d.Errf("introspection: given more than once")
			}
			in := new(Introspection)
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				var err error
				switch d.Val() {
				case "endpoint":
					err = oneArg(d, &in.Endpoint)
				case "client_id":
					err = oneArg(d, &in.ClientID)
				case "client_secret":
					err = secretValueArg(d, &in.ClientSecret)
				case "cache":
					err = durationArg(d, &in.Cache)
				default:
					return d.Errf("unrecognized introspection subdirective %q", d.Val())
				}
				if err != nil {
					return err
				}
			}
			if in.ClientID == "" {
				return d.Errf("introspection: client_id is required")
			}
			h.Introspection = in
		default:
			return d.Errf("unrecognized issuer subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func appendRule(d *caddyfile.Dispenser, rules *[]Rule) error {
	kind := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s: want <pattern> [<scope...>]", kind)
	}
	r := Rule{Match: args[0], Scopes: args[1:]}
	var maxDepthGiven bool
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "agents":
			err = listArg(d, &r.Agents)
		case "require_user":
			err = flag(d, &r.RequireUser)
		case "require_agent":
			err = flag(d, &r.RequireAgent)
		case "user_only":
			err = flag(d, &r.UserOnly)
		case "max_depth":
			err = maxDepthArg(d, &r.MaxDepth, &maxDepthGiven, "no limit; user_only refuses delegated tokens")
		case "arg":
			if kind != "tool" {
				return d.Errf("arg: argument rules apply to tool rules only")
			}
			args := d.RemainingArgs()
			a := ArgRule{}
			if len(args) > 1 && args[1] == "optional" {
				a.Optional = true
				args = slices.Delete(args, 1, 2)
			}
			if len(args) < 2 {
				return d.Errf("arg: want <json-pointer> [optional] <predicate> [<value...>]")
			}
			a.Pointer, a.Predicate, a.Values = args[0], args[1], args[2:]
			r.Args = append(r.Args, a)
		default:
			return d.Errf("unrecognized %s subdirective %q", kind, d.Val())
		}
		if err != nil {
			return err
		}
	}
	*rules = append(*rules, r)
	return nil
}

// oneArg reads exactly one argument.
func oneArg(d *caddyfile.Dispenser, dst *string) error {
	return oneValue(d, dst, true)
}

// secretValueArg reads one argument that is a secret (a client_secret,
// the gateway's session_key), as oneArg does, but never names its value
// in an error: Caddy writes the error to its log, and a {$NAME} the
// Caddyfile adapter replaced, or a secret in clear, would be there.
func secretValueArg(d *caddyfile.Dispenser, dst *string) error {
	return oneValue(d, dst, false)
}

// oneValue is oneArg; show says whether an error may quote the values.
func oneValue(d *caddyfile.Dispenser, dst *string, show bool) error {
	name := d.Val()
	if !d.NextArg() {
		return d.Errf("%s: missing argument", name)
	}
	val := d.Val()
	if d.NextArg() {
		return d.Errf("%s: too many arguments", name)
	}
	if *dst != "" {
		// The last would win, silently: an imported hardened snippet
		// followed by "pin_tools off" or "audit denials_only".
		if !show {
			return d.Errf("%s: given more than once", name)
		}
		return d.Errf("%s: given more than once (%q, then %q)", name, *dst, val)
	}
	*dst = val
	return nil
}

// listArg appends one or more arguments.
func listArg(d *caddyfile.Dispenser, dst *[]string) error {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s: missing argument", name)
	}
	*dst = append(*dst, args...)
	return nil
}

// flag sets a boolean subdirective, which takes no arguments.
func flag(d *caddyfile.Dispenser, dst *bool) error {
	name := d.Val()
	if d.NextArg() {
		return d.Errf("%s: takes no arguments", name)
	}
	*dst = true
	return nil
}

func durationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	v, err := caddy.ParseDuration(s)
	if err != nil || v <= 0 {
		return d.Errf("%s %q: want a positive duration such as 5m", name, s)
	}
	if *dst != 0 {
		return d.Errf("%s: given more than once", name)
	}
	*dst = caddy.Duration(v)
	return nil
}

// intArg reads one non-negative integer into dst; given, which the
// caller keeps per block, records that it was, since 0 is a value too
// ("max_depth 0" then "max_depth 3" is a repeat).
func intArg(d *caddyfile.Dispenser, dst *int, given *bool) error {
	name := d.Val()
	var s string
	if err := oneArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return d.Errf("%s %q: want a non-negative integer", name, s)
	}
	if *given {
		return d.Errf("%s: given more than once", name)
	}
	*dst, *given = n, true
	return nil
}

// maxDepthArg reads a max_depth, which must be at least 1: 0 is what an
// absent max_depth reads as (zero says what it means then), so
// "max_depth 0", written to allow no delegation, would allow the most.
func maxDepthArg(d *caddyfile.Dispenser, dst *int, given *bool, zero string) error {
	if err := intArg(d, dst, given); err != nil {
		return err
	}
	if *dst == 0 {
		return d.Errf("max_depth 0: want at least 1 (0 would mean %s)", zero)
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*GatewayHandler)(nil)
)
