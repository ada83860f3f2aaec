package caddymodule

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/gateway"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
)

func init() {
	caddy.RegisterModule(GatewayHandler{})
	httpcaddyfile.RegisterHandlerDirective("mcp_gateway", parseGatewayHandler)
	// Early, right after encode and templates and before handle, route,
	// respond and reverse_proxy: a top-level mcp_gateway must run before
	// any handle block that proxies, or that block would bypass it.
	// Running after encode lets it read upstream responses uncompressed.
	httpcaddyfile.RegisterDirectiveOrder("mcp_gateway", httpcaddyfile.Before, "invoke")
}

// dpopReplay is the process's DPoP proof replay memory, shared by every
// issuer and gateway and kept across configuration reloads: each builds
// its handlers anew, and a memory of their own would accept again, once
// per reload or per site, a proof captured within its minute. It begins
// with the process: a proof made before, which a store without a Ledger
// (bbolt) cannot say was used, is refused.
var dpopReplay = dpop.NewReplay(0, time.Now())

// limitMemories are the process's memories of an issuer's brute-force
// and registration limits on a store no other instance shares, by issuer
// URL, kept across configuration reloads like dpopReplay: a reload must
// not reset them. One per issuer, since a memory serves one
// (LimitMemory): a process that runs one configuration after another
// with other issuers (tests do) does not charge one issuer's sign-ins to
// the next. The most recent few are kept.
var limitMemories struct {
	sync.Mutex
	byIssuer map[string]*issuer.LimitMemory
	order    []string // least recently used first
}

// maxLimitMemories bounds limitMemories: more issuers than configurations
// a process ever runs at once.
const maxLimitMemories = 16

// limitMemory returns the limit memory of issuer iss, however it is
// spelt: a reload that only respells it (a trailing slash, the case of
// its scheme and host) keeps the counters and blocks.
func limitMemory(iss string) *issuer.LimitMemory {
	iss = issuer.CanonicalResource(iss)
	l := &limitMemories
	l.Lock()
	defer l.Unlock()
	if l.byIssuer == nil {
		l.byIssuer = make(map[string]*issuer.LimitMemory)
	}
	m, ok := l.byIssuer[iss]
	if !ok {
		m = issuer.NewLimitMemory()
		l.byIssuer[iss] = m
		if len(l.order) == maxLimitMemories {
			delete(l.byIssuer, l.order[0])
			l.order = l.order[1:]
		}
	} else {
		l.order = slices.DeleteFunc(l.order, func(s string) bool { return s == iss })
	}
	l.order = append(l.order, iss)
	return m
}

// GatewayHandler enforces MCP authorization in front of an upstream MCP
// server (usually reached through reverse_proxy after it). Every request
// that reaches it is authorized or refused; it also serves the resource's
// OAuth protected resource metadata (RFC 9728).
//
// Audit events (one per decision) go to the logger named
// "http.handlers.mcp_gateway.audit", which a Caddy `log` configuration can
// route to its own output.
type GatewayHandler struct {
	// Resource is this MCP endpoint's URL as clients use it, e.g.
	// https://mcp.example.com/mcp. Tokens must name it in aud.
	Resource string `json:"resource"`
	// Issuer is "local" (default: the mcp_auth app of this config) or the
	// issuer URL of a remote authorization server, whose keys are fetched
	// from its metadata. The URL of this config's own issuer means local.
	Issuer string `json:"issuer,omitempty"`
	// AcceptTypJWT accepts JWT access tokens of a remote issuer whose typ
	// is JWT or absent, not only RFC 9068's at+jwt; ID tokens are still
	// refused (nonce or at_hash present, or aud naming the token's own
	// client). Remote issuers only.
	AcceptTypJWT bool `json:"accept_typ_jwt,omitempty"`
	// AgentClaims says the remote issuer vouches for this project's
	// principal_type claim and for act (another caddy-mcp-auth): its
	// tokens' principal_type says whether a user, an agent or a client
	// is the principal, act which agent acts for it. Without it a remote
	// issuer's token carrying either is refused, since an issuer that
	// lets users add claims would sign a user's "agent" or act. Remote
	// issuers only.
	AgentClaims bool `json:"agent_claims,omitempty"`
	// Audience is the aud value tokens must carry instead of Resource,
	// for authorization servers that name an API there (Auth0 API
	// identifiers, Entra ID api://...). Remote issuers only.
	Audience string `json:"audience,omitempty"`
	// Introspection checks opaque tokens of a remote issuer with its
	// introspection endpoint (RFC 7662).
	Introspection *Introspection `json:"introspection,omitempty"`
	// Scopes are needed for any access (initialize, tools/list, ping, ...).
	Scopes []string `json:"scopes,omitempty"`
	// ScopeImplies maps a broad scope to the narrower ones it includes.
	ScopeImplies map[string][]string `json:"scope_implies,omitempty"`
	// Tools decide tools/call by tool name (glob; first match wins).
	Tools []Rule `json:"tools,omitempty"`
	// Prompts decide prompts/get by prompt name (glob; first match wins).
	Prompts []Rule `json:"prompts,omitempty"`
	// ResourceRules decide resources/read by URI prefix (longest wins).
	ResourceRules []Rule `json:"resource_rules,omitempty"`
	// Methods pass methods the request's protocol revision does not
	// define (extensions) by glob on the method name (first match wins);
	// any other such method is refused. A glob that matches an MCP
	// method, in any case, is a configuration error.
	Methods []Rule `json:"methods,omitempty"`
	// AllowedOrigins are the accepted Origin header values
	// (scheme://host[:port]); requests without Origin are accepted.
	AllowedOrigins []string `json:"allowed_origins,omitempty"`
	// MaxBodySize bounds request bodies in bytes. Default 1 MiB.
	MaxBodySize int64 `json:"max_body_size,omitempty"`
	// MaxInFlight bounds the requests one principal (a user through all
	// their clients) has in flight upstream at once: GET event streams,
	// event-stream answers, calls not yet answered. One more is refused
	// 429 with Retry-After. Default 100.
	MaxInFlight int `json:"max_in_flight,omitempty"`
	// MaxInFlightPerClient bounds, within MaxInFlight, the requests one
	// client of a principal (client_id, and the outermost actor of a
	// delegated token) has in flight, so that one client cannot take all
	// of its user's. At most MaxInFlight; default three quarters of it
	// (75 of the default 100).
	MaxInFlightPerClient int `json:"max_in_flight_per_client,omitempty"`
	// ForwardIdentity sends X-MCP-Subject, X-MCP-Client, X-MCP-Actor and
	// X-MCP-Scope to the upstream.
	ForwardIdentity bool `json:"forward_identity,omitempty"`
	// Audit is "all" (default: an audit event for every decision) or
	// "denials_only" (events for refused requests only).
	Audit string `json:"audit,omitempty"`
	// AuditArguments adds each tools/call's arguments to its audit
	// events. Default false: refusals then name only the argument's
	// pointer, never its value.
	AuditArguments bool `json:"audit_arguments,omitempty"`
	// SessionKey is the base64 HMAC key (at least 32 bytes) that binds
	// MCP sessions to their principal; placeholders such as {env.KEY} are
	// replaced. Default: a random key kept in the mcp_auth store, so every
	// instance sharing the store and every reload agree.
	SessionKey string `json:"session_key,omitempty"`
	// PinTools pins tool definitions: "first_use" (default: the first
	// definition seen of each tool is pinned), "approved" (only
	// definitions an operator approved through the admin API or `caddy
	// mcp-auth tools`) or "off". A tool whose definition differs from its
	// pin is hidden from tools/list and its calls are refused. Pins are
	// kept in the mcp_auth app's store; without an mcp_auth app,
	// first_use keeps them in memory (per process) and approved is an
	// error.
	PinTools string `json:"pin_tools,omitempty"`
	// RequireDPoP refuses access tokens that are not DPoP-bound (RFC 9449).
	RequireDPoP bool `json:"require_dpop,omitempty"`
	// DPoPNonce makes DPoP proofs carry a nonce the gateway issued.
	DPoPNonce bool `json:"dpop_nonce,omitempty"`

	app   *App           // the config's mcp_auth app, if any: it finishes the gateway at Start
	local bool           // the app is the issuer
	cfg   gateway.Config // what start completes
	gw    *gateway.Gateway
	keys  *gateway.RemoteKeys // a remote issuer's: its refresh ends at Cleanup
	// config is the configuration of a gateway without an mcp_auth app,
	// under which applessGateways holds it.
	config caddy.Module
}

// Introspection configures RFC 7662 introspection of opaque tokens.
type Introspection struct {
	// Endpoint is the introspection endpoint. Default: the
	// introspection_endpoint of the issuer's metadata.
	Endpoint string `json:"endpoint,omitempty"`
	// ClientID and ClientSecret are the gateway's own credentials at the
	// issuer (HTTP Basic). The secret may be a placeholder ({env.NAME},
	// {file.PATH}).
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret,omitempty"`
	// Cache is the longest an active answer is reused (never past the
	// token's exp): a token revoked at the issuer is refused at the
	// latest this long after. Default 1m.
	Cache caddy.Duration `json:"cache,omitempty"`
}

// Rule says which scopes a tool, prompt or resource needs and which actors
// may use it.
type Rule struct {
	// Match is a glob (tools, prompts, methods) or URI prefix (resources).
	Match string `json:"match"`
	// Scopes are all required, in addition to the base scopes.
	Scopes []string `json:"scopes,omitempty"`
	// Agents, if set, are the only agents that may act (outermost act.sub);
	// an empty list is refused.
	Agents []string `json:"agents,omitempty"`
	// RequireUser refuses tokens without a user (agent-only tokens).
	RequireUser bool `json:"require_user,omitempty"`
	// RequireAgent refuses tokens without an acting agent.
	RequireAgent bool `json:"require_agent,omitempty"`
	// UserOnly admits only a user acting directly: delegated (act),
	// agent-only and client-credentials tokens are refused.
	UserOnly bool `json:"user_only,omitempty"`
	// MaxDepth is the maximum act nesting; absent: unlimited (0 is
	// refused: see UnmarshalJSON).
	MaxDepth int `json:"max_depth,omitempty"`
	// Args are conditions on a tools/call's arguments (tool rules only),
	// all of which must hold (see gateway.ArgRule).
	Args []ArgRule `json:"args,omitempty"`
}

// ArgRule is a condition on one argument of a tools/call.
type ArgRule struct {
	// Pointer is an RFC 6901 JSON pointer into params.arguments.
	Pointer string `json:"pointer"`
	// Predicate is equals, one_of, glob, prefix, regex, max_length, min,
	// max, present, absent or type.
	Predicate string `json:"predicate"`
	// Values are the predicate's operands; equals, one_of, glob and
	// prefix values may hold {token.<claim>} placeholders.
	Values []string `json:"values,omitempty"`
	// Optional lets a missing argument pass.
	Optional bool `json:"optional,omitempty"`
}

func (r Rule) gatewayRule() gateway.Rule {
	var args []gateway.ArgRule
	for _, a := range r.Args {
		args = append(args, gateway.ArgRule(a))
	}
	return gateway.Rule{
		Pattern: r.Match,
		Scopes:  r.Scopes,
		Actor: gateway.ActorRule{
			AllowedAgents: r.Agents,
			RequireUser:   r.RequireUser,
			RequireAgent:  r.RequireAgent,
			UserOnly:      r.UserOnly,
			MaxDepth:      r.MaxDepth,
		},
		Args: args,
	}
}

// CaddyModule returns the Caddy module information.
func (GatewayHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.mcp_gateway",
		New: func() caddy.Module { return new(GatewayHandler) },
	}
}

// localIssuer is the local issuer as the gateway's key source and
// revocation list. The gateway asks only while serving, after the app
// started (see ServeHTTP), so the issuer is looked up then.
type localIssuer struct{ app *App }

// PublicKey is the issuer's: a key it does not publish is
// store.ErrNotFound, any other error (the store could not be read) is
// one it cannot tell now (gateway.ErrKeysUnavailable).
func (l localIssuer) PublicKey(ctx context.Context, kid string) (any, error) {
	k, err := l.app.iss.PublicKey(ctx, kid)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", gateway.ErrKeysUnavailable, err)
	}
	return k, err
}

// Withdrawals and Published make the local issuer a key source that
// withdraws keys (issuer.Issuer.Withdrawals): a token verified before is
// refused, and its event streams end, once its key is no longer
// published, whatever exp it carries.
// Like Revoked, they ask the issuers of the apps that replaced this one
// too (App.next), which alone see a key withdrawn after the reload.
// Each app of the chain counts one besides its withdrawals: an app
// that replaced this one read the keys when it started, and a key
// withdrawn at another instance before then, which this app had not
// read yet, is missing there without being counted as a withdrawal;
// its joining the chain is one.
func (l localIssuer) Withdrawals() uint64 {
	var n uint64
	for a := l.app; a != nil; a = a.next.Load() {
		n += a.iss.Withdrawals() + 1
	}
	return n
}

func (l localIssuer) Published(kid string, key any) bool {
	for a := l.app; a != nil; a = a.next.Load() {
		if !a.iss.Published(kid, key) {
			return false
		}
	}
	return true
}

// Revoked asks the app's issuer and, once a reload has replaced the app,
// the issuers of the apps that replaced it (App.next): a request still in
// flight on this configuration (a call runs on for up to 30 s) ends when
// its token is revoked after the reload, which only they see. A replaced
// app's set no longer catches up with the store and goes stale
// revocation_max_stale after the reload: that is no reason to end the
// request while its successor's set, loaded from the same store, is
// current; the last app's answer, stale or not, stands. A successor on
// another store (a DSN spelt otherwise, or another database) may lack
// what was revoked in this one's: it adds its revocations, and a stale
// set here stays the answer.
func (l localIssuer) Revoked(ctx context.Context, jti, grantID string) (bool, error) {
	for a := l.app; ; {
		revoked, err := a.iss.Revoked(ctx, jti, grantID)
		next := a.next.Load()
		if next == nil || revoked && err == nil || err != nil && (!errors.Is(err, issuer.ErrRevocationsStale) || next.st != a.st) {
			return revoked, err
		}
		a = next
	}
}

// appLedger is the app's record of spent DPoP proofs for a gateway
// (issuer.DPoPLedger: the store, when other instances share it). The
// store is opened by the app's Start, so it is asked when a proof is
// spent.
type appLedger struct{ app *App }

func (l appLedger) Spend(ctx context.Context, key string, until time.Time) error {
	if d := l.app.iss.DPoPLedger(); d != nil {
		return d.Spend(ctx, key, until)
	}
	return nil
}

// Recording reports whether the app's store records spent proofs: not
// on bbolt, where the gateway's verifier must then refuse proofs made
// before the process started, as the issuer's does (dpop.NewReplay).
func (l appLedger) Recording() bool { return l.app.iss != nil && l.app.iss.DPoPLedger() != nil }

// Provision checks the gateway's configuration and builds it; with an
// mcp_auth app in the config, the app's Start finishes it (see start).
func (h *GatewayHandler) Provision(ctx caddy.Context) error {
	log := ctx.Logger()
	if h.Resource == "" {
		return errors.New("mcp_gateway: resource URL is required")
	}
	if err := h.addressesNotReplaced(); err != nil {
		return err
	}
	cfg := h.rulesConfig()
	cfg.Resource = h.Resource
	cfg.MaxBodySize = h.MaxBodySize
	cfg.MaxInFlight = h.MaxInFlight
	cfg.MaxInFlightPerClient = h.MaxInFlightPerClient
	cfg.ForwardIdentity = h.ForwardIdentity
	cfg.AuditArguments = h.AuditArguments
	cfg.RequireDPoP = h.RequireDPoP
	cfg.DPoPNonce = h.DPoPNonce
	cfg.DPoPReplay = dpopReplay
	cfg.Logger = log
	cfg.AuditLogger = log.Named("audit")
	cfg.ErrorStatus = errorStatus
	cfg.WriteTimeout = writeTimeout
	cfg.ClientAddr = clientAddr
	cfg.OwnRequestContext = ownRequestContext
	vecs, err := newGatewayVecs(ctx.GetMetricsRegistry())
	if err != nil {
		return fmt.Errorf("mcp_gateway: metrics: %w", err)
	}
	cfg.Metrics = newGatewayMetrics(vecs, h.Resource)
	switch h.Audit {
	case "", "all":
	case "denials_only":
		cfg.AuditDenialsOnly = true
	default:
		return fmt.Errorf("mcp_gateway: audit %q: want all or denials_only", h.Audit)
	}

	var app *App
	local := h.Issuer == "" || h.Issuer == "local"
	if local {
		var err error
		if app, err = authApp(ctx, "mcp_gateway with the local issuer"); err != nil {
			return err
		}
	} else if v, err := ctx.AppIfConfigured("mcp_auth"); err == nil {
		// The app also provides the shared session key; and a gateway
		// naming this config's own issuer by URL is local, so that its
		// resource gets registered rather than its keys fetched over HTTP
		// (however the URL is spelt: a default port, capitals in the host).
		app = v.(*App)
		local = issuer.CanonicalResource(h.Issuer) == issuer.CanonicalResource(app.url)
	} else if !errors.Is(err, caddy.ErrNotConfigured) {
		return err
	}
	if local {
		warnOpenRules(log, h)
		if h.remoteOptions() {
			return fmt.Errorf("mcp_gateway: %w", errLocalRemoteOptions)
		}
		cfg.Issuer = app.url
		cfg.Keys = localIssuer{app}
		cfg.Revocations = localIssuer{app}
	} else if err := h.remoteConfig(&cfg, log); err != nil {
		return err
	}

	if app != nil {
		cfg.DPoPLedger = appLedger{app}
	}
	if err := h.pinConfig(&cfg, app, log); err != nil {
		return err
	}
	key, err := h.sessionKey(app, log)
	if err != nil {
		return err
	}
	cfg.SessionKey = key
	if key == nil {
		// The key is in the store, which only Start opens; a stand-in
		// lets gateway.New check the rest of the configuration now.
		cfg.SessionKey = make([]byte, 32)
	}
	h.gw, err = gateway.New(cfg)
	if err != nil {
		return fmt.Errorf("mcp_gateway %s: %w", h.Resource, err)
	}
	if app != nil {
		if key == nil {
			h.gw, h.cfg = nil, cfg
		}
		h.app, h.local = app, local
		app.gateways = append(app.gateways, h)
		return nil
	}
	return h.joinAppless(ctx, log)
}

// applessGateways are the gateways of the configurations without an
// mcp_auth app (gateways in front of another authorization server) by
// configuration: the first module of a handler's lineage, its http app.
// Each is compared with those of its configuration provisioned before
// it, as the app's Start compares the gateways of a configuration with
// the app (checkGatewayResources); it leaves at its Cleanup, when its
// configuration failed to load or was replaced.
var applessGateways struct {
	sync.Mutex
	byConfig map[caddy.Module][]*GatewayHandler
}

// joinAppless refuses h when a gateway of its configuration provisioned
// before it is for the same resource and configured otherwise (see
// checkGatewayResources), warns when one for another resource takes
// tokens of its issuer by the same audience (see warnSharedAudiences,
// once for each issuer and audience), and records h for the gateways
// after it.
func (h *GatewayHandler) joinAppless(ctx caddy.Context, log *zap.Logger) error {
	mods := ctx.Modules()
	if len(mods) == 0 || reflect.TypeOf(mods[0]).Kind() != reflect.Pointer {
		return nil // provisioned outside a configuration (tests)
	}
	config := mods[0]
	g := &applessGateways
	g.Lock()
	defer g.Unlock()
	res := issuer.CanonicalResource(h.Resource)
	for _, prev := range g.byConfig[config] {
		if issuer.CanonicalResource(prev.Resource) == res {
			if err := sameGateway(prev, h); err != nil {
				return err
			}
			break
		}
	}
	var same []*GatewayHandler
	for _, o := range g.byConfig[config] {
		if o.Issuer == h.Issuer && o.tokenAudience() == h.tokenAudience() {
			same = append(same, o)
		}
	}
	// Earlier ones for two resources were warned about already.
	if len(same) > 0 && !slices.ContainsFunc(same, func(o *GatewayHandler) bool {
		return issuer.CanonicalResource(o.Resource) != issuer.CanonicalResource(same[0].Resource)
	}) {
		warnSharedAudiences([]*GatewayHandler{same[0], h}, log)
	}
	if g.byConfig == nil {
		g.byConfig = make(map[caddy.Module][]*GatewayHandler)
	}
	g.byConfig[config] = append(g.byConfig[config], h)
	h.config = config
	return nil
}

// leaveAppless takes h out of applessGateways.
func (h *GatewayHandler) leaveAppless() {
	if h.config == nil {
		return
	}
	g := &applessGateways
	g.Lock()
	defer g.Unlock()
	if rest := slices.DeleteFunc(g.byConfig[h.config], func(o *GatewayHandler) bool { return o == h }); len(rest) > 0 {
		g.byConfig[h.config] = rest
	} else {
		delete(g.byConfig, h.config)
	}
	h.config = nil
}

// addressesNotReplaced refuses a placeholder in the gateway's URLs and
// its introspection client_id (see notReplaced): only the session_key
// and the introspection client_secret have theirs replaced, so
// `issuer https://kc.example.com/realms/{env.REALM}` loaded as written
// and every token was refused, the realm's keys never found.
func (h *GatewayHandler) addressesNotReplaced() error {
	errs := []error{notReplaced("mcp_gateway", "", "resource", h.Resource), notReplaced("mcp_gateway", "", "issuer", h.Issuer),
		notReplaced("mcp_gateway", "", "audience", h.Audience)}
	if in := h.Introspection; in != nil {
		errs = append(errs, notReplaced("mcp_gateway", "", "introspection endpoint", in.Endpoint), notReplaced("mcp_gateway", "", "introspection client_id", in.ClientID))
	}
	// A prompt's name may hold braces ("summarize_{topic}"), and so may
	// a method pattern (visible ASCII); a tool's and a resource rule's
	// may not (gateway.CheckRules): only Caddy's own placeholders are
	// refused in a prompt or method pattern. `prompt {env.ADMIN_PROMPT}
	// admin` before `prompt * read` (or `method {env.ADMIN_METHOD} admin`
	// before `method acme/* read`) matched no prompt (method) of the name
	// meant, which fell to the rule after it: less than the rule said it
	// needed.
	for _, k := range []struct {
		kind  string
		rules []Rule
	}{{"prompt", h.Prompts}, {"method", h.Methods}} {
		for _, r := range k.rules {
			if ph := caddyPlaceholder.FindString(r.Match); ph != "" {
				errs = append(errs, fmt.Errorf("mcp_gateway: %s %q: the pattern holds the placeholder %s, which is not replaced there: it would match no %s of the name meant, leaving it to the rules after it; write the name itself (in a Caddyfile {$NAME} is replaced when the file is adapted)", k.kind, r.Match, ph, k.kind))
			}
		}
	}
	return cmp.Or(errs...)
}

// caddyPlaceholder matches Caddy's global placeholders ({env.NAME},
// {file.PATH}), which replace nothing where they are not replaced.
var caddyPlaceholder = regexp.MustCompile(`\{(?:env|file)\.[^{}]*\}`)

// errLocalRemoteOptions: options for a remote issuer's tokens given to a
// gateway of the local issuer.
var errLocalRemoteOptions = errors.New("accept_typ_jwt, audience, introspection and agent_claims are for a remote issuer (issuer <url>); the local issuer's tokens need none of them")

// remoteOptions reports whether h has options for a remote issuer's
// tokens.
func (h *GatewayHandler) remoteOptions() bool {
	return h.AcceptTypJWT || h.AgentClaims || h.Audience != "" || h.Introspection != nil
}

// rulesConfig is the part of the gateway's configuration that
// gateway.CheckRules checks: its scopes, rules and allowed origins.
func (h *GatewayHandler) rulesConfig() gateway.Config {
	cfg := gateway.Config{BaseScopes: h.Scopes, Implies: h.ScopeImplies, AllowedOrigins: h.AllowedOrigins}
	for _, r := range h.Tools {
		cfg.Tools = append(cfg.Tools, r.gatewayRule())
	}
	for _, r := range h.Prompts {
		cfg.Prompts = append(cfg.Prompts, r.gatewayRule())
	}
	for _, r := range h.ResourceRules {
		cfg.ResourceRules = append(cfg.ResourceRules, r.gatewayRule())
	}
	for _, r := range h.Methods {
		cfg.Methods = append(cfg.Methods, r.gatewayRule())
	}
	return cfg
}

// warnOpenRules warns that a gateway of the local issuer without base
// scopes admits every user to the calls its rules need no scope for:
// the issuer gives every user (and every client allowed
// client_credentials) a token for any resource, without scopes, when
// no group grants one; groups decide scopes, not who may connect.
func warnOpenRules(log *zap.Logger, h *GatewayHandler) {
	if len(h.Scopes) > 0 {
		return
	}
	var open []string
	for _, rs := range []struct {
		kind  string
		rules []Rule
	}{{"tool", h.Tools}, {"prompt", h.Prompts}, {"resource_rule", h.ResourceRules}, {"method", h.Methods}} {
		for _, r := range rs.rules {
			if len(r.Scopes) == 0 {
				open = append(open, rs.kind+" "+r.Match)
			}
		}
	}
	if len(open) == 0 {
		return
	}
	log.Warn("mcp_gateway " + h.Resource + ": no base scope, and " + strings.Join(open, ", ") + " need no scope either: every user of the issuer, whatever their groups, and every client allowed client_credentials gets a token for the resource and may make those calls; add `scope <scope>` and grant it to the groups that may connect")
}

// remoteConfig sets up a remote issuer: its keys, the token formats
// accepted and introspection.
func (h *GatewayHandler) remoteConfig(cfg *gateway.Config, log *zap.Logger) error {
	client := h.remoteClient()
	cfg.Issuer = h.Issuer
	h.keys = gateway.NewRemoteKeys(h.Issuer, client, log)
	cfg.Keys = h.keys
	cfg.AcceptTypJWT = h.AcceptTypJWT
	cfg.RefuseActorClaims = !h.AgentClaims
	cfg.Audience = h.Audience
	in := h.Introspection
	if in == nil {
		return nil
	}
	warnInClear(log, "mcp_gateway: introspection client_secret", in.ClientSecret, true)
	secret, err := expandSecret(caddy.NewReplacer(), in.ClientSecret)
	if err != nil {
		return fmt.Errorf("mcp_gateway: introspection client_secret: %w", err)
	}
	if in.Endpoint != "" {
		// The operator's choice, which may be inside the network.
		client = &http.Client{Timeout: remoteTimeout}
	}
	if cfg.Introspector, err = gateway.NewRemoteIntrospection(h.Issuer, in.Endpoint, in.ClientID, secret, client); err != nil {
		return fmt.Errorf("mcp_gateway: %w", err)
	}
	cfg.IntrospectionCache = time.Duration(in.Cache)
	return nil
}

// remoteClient is the client for the calls made to URLs the remote
// issuer's metadata names (its keys, its introspection endpoint): it
// connects to public addresses and to the kinds of other address the
// issuer's host has (issuer.ReachDialContext), so a hostile document
// cannot point the gateway at a service on its machine or network.
func (h *GatewayHandler) remoteClient() *http.Client {
	c := &http.Client{Timeout: remoteTimeout}
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		t = t.Clone()
		t.DialContext = issuer.ReachDialContext(h.Issuer, remoteTimeout)
		c.Transport = t
	}
	return c
}

// remoteTimeout bounds a call to a remote issuer.
const remoteTimeout = 10 * time.Second

// start finishes the gateway once the app has opened the store and built
// the issuer: the session key from the store, the resource registered
// with the local issuer.
func (h *GatewayHandler) start(a *App) error {
	if h.gw == nil {
		key, err := a.SessionKey(context.Background())
		if err != nil {
			return fmt.Errorf("mcp_gateway %s: %w", h.Resource, err)
		}
		h.cfg.SessionKey = key
		if h.gw, err = gateway.New(h.cfg); err != nil {
			return fmt.Errorf("mcp_gateway %s: %w", h.Resource, err)
		}
	}
	if h.local {
		a.iss.AddResource(issuer.Resource{URL: h.Resource, Scopes: h.gw.Scopes()})
	}
	return nil
}

// pinConfig sets the pin mode and where pins are kept.
func (h *GatewayHandler) pinConfig(cfg *gateway.Config, app *App, log *zap.Logger) error {
	mode := gateway.PinFirstUse
	if h.PinTools != "" {
		var err error
		if mode, err = gateway.ParsePinMode(h.PinTools); err != nil {
			return fmt.Errorf("mcp_gateway: %w", err)
		}
	}
	cfg.PinTools = mode
	switch {
	case mode == gateway.PinOff:
	case app != nil:
		cfg.Pins = appPins{app}
	case mode == gateway.PinApproved:
		return errors.New("mcp_gateway: pin_tools approved needs the mcp_auth app, whose store keeps the approvals (add an mcp_auth global option with its storage)")
	default:
		log.Warn("no mcp_auth app: tool pins (pin_tools first_use) are kept in memory, so they are not shared with other instances and a restart pins definitions afresh")
		cfg.Pins = memoryPins()
	}
	return nil
}

// memoryPins are the tool pins of the gateways without an mcp_auth app:
// one store for the process, kept across configuration reloads like
// dpopReplay. Each reload builds its gateways anew, and a store of their
// own forgot every pin at each reload, pinning as first seen whatever
// definition a server offered next: a tool changed after its review
// passed unnoticed once Caddy reloaded.
var memoryPins = sync.OnceValue(func() toolPins {
	return toolPins{issuer.NewToolPins(memory.New(memory.Options{}), nil)}
})

// appPins are the tool pins in the app's store, which only Start opens:
// the gateway asks only while serving.
type appPins struct{ app *App }

func (a appPins) LoadPins(ctx context.Context, resource string) (map[string]gateway.Pin, error) {
	return toolPins{a.app.iss.ToolPins()}.LoadPins(ctx, resource)
}

func (a appPins) ObservePin(ctx context.Context, resource, tool, hash string, def []byte, firstUse bool) (gateway.Pin, []byte, bool, error) {
	return toolPins{a.app.iss.ToolPins()}.ObservePin(ctx, resource, tool, hash, def, firstUse)
}

// toolPins is issuer.ToolPins as the gateway's pin store.
type toolPins struct{ p *issuer.ToolPins }

func (t toolPins) LoadPins(ctx context.Context, resource string) (map[string]gateway.Pin, error) {
	list, err := t.p.List(ctx, resource)
	if err != nil {
		return nil, err
	}
	out := make(map[string]gateway.Pin, len(list))
	for _, p := range list {
		out[p.Tool] = gatewayPin(p)
	}
	return out, nil
}

func (t toolPins) ObservePin(ctx context.Context, resource, tool, hash string, def []byte, firstUse bool) (gateway.Pin, []byte, bool, error) {
	p, changed, err := t.p.Observe(ctx, resource, tool, hash, def, firstUse)
	if err != nil {
		return gateway.Pin{}, nil, false, err
	}
	var pinnedDef []byte
	if p.Pinned != nil && p.Pinned.Hash != hash {
		pinnedDef = p.Pinned.Definition
	}
	return gatewayPin(p), pinnedDef, changed, nil
}

func gatewayPin(p issuer.ToolPin) gateway.Pin {
	var g gateway.Pin
	if p.Pinned != nil {
		g.Pinned, g.Operator = p.Pinned.Hash, p.Pinned.By == issuer.PinnedByOperator
		g.Size += int64(len(p.Pinned.Definition))
	}
	if p.Pending != nil {
		g.Pending = p.Pending.Hash
		g.Size += int64(len(p.Pending.Definition))
	}
	return g
}

// sessionKey returns the configured key; nil when the app's store holds
// it (start reads it); with neither, a random key.
func (h *GatewayHandler) sessionKey(app *App, log *zap.Logger) ([]byte, error) {
	switch {
	case h.SessionKey != "":
		warnInClear(log, "mcp_gateway: session_key", h.SessionKey, true)
		s, err := expandSecret(caddy.NewReplacer(), h.SessionKey)
		if err != nil {
			return nil, fmt.Errorf("mcp_gateway: session_key: %w", err)
		}
		key, err := decodeKey(s)
		if err != nil {
			return nil, fmt.Errorf("mcp_gateway: session_key: %w", err)
		}
		return key, nil
	case app != nil:
		return nil, nil
	}
	log.Warn("no session_key and no mcp_auth app: MCP sessions are bound with a random per-process key, so they do not survive a reload and other instances cannot check them")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("mcp_gateway: session key: %w", err)
	}
	return key, nil
}

// decodeKey accepts standard or URL-safe base64, padded or not.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "=")
	var key []byte
	var err error
	if strings.ContainsAny(s, "-_") {
		key, err = base64.RawURLEncoding.DecodeString(s)
	} else {
		key, err = base64.RawStdEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("not base64")
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("%d bytes, want at least 32", len(key))
	}
	if distinctBytes(key) < minKeyVariety {
		// 32 random bytes hold 8 or more distinct values but with a
		// chance below 2^-100; zeros or a short pattern repeated are
		// a placeholder value, not a key.
		return nil, errors.New("not random (too few distinct bytes): make one with `openssl rand -base64 32`")
	}
	return key, nil
}

// minKeyVariety is how many distinct byte values a key must hold.
const minKeyVariety = 8

func distinctBytes(b []byte) int {
	var seen [256]bool
	n := 0
	for _, c := range b {
		if !seen[c] {
			seen[c], n = true, n+1
		}
	}
	return n
}

// ServeHTTP implements caddyhttp.MiddlewareHandler. The gateway calls next
// only for requests it authorized; next's error is returned to Caddy.
func (h *GatewayHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.app != nil && !h.app.started(r.Context()) {
		return notRunning(w)
	}
	if r.Host == h.gw.Host() && placeholderHostport(r) == h.gw.Host() && (r.TLS == nil || r.TLS.ServerName == resourceSNI(r.Host)) {
		// As a client that names the resource sends it: the
		// placeholders already read the resource's host. They read the
		// request Caddy began with, which a handler before this one may
		// have passed on a copy of and set the copy's Host (tracing, then
		// request_header): r.Host alone does not say what they read. Nor
		// does it say what the client named in TLS (SNI), which Caddy
		// lets differ from Host.
		return h.gw.Serve(w, r, next)
	}
	return h.gw.Serve(w, r, hostNext{next})
}

// placeholderHostport is what {http.request.hostport} reads for r, ""
// without a replacer.
func placeholderHostport(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	v, _ := repl.GetString("http.request.hostport")
	return v
}

// hostNext is next with Caddy's host placeholders ({host},
// {http.request.host}, {http.request.hostport}, {http.request.port} and
// the labels {http.request.host.labels.N}, {labels.N} in a Caddyfile)
// reading the Host of the request the gateway forwards, the resource's,
// until next returns: they read the request Caddy began with, whose Host
// the client chose, so `header_up Host {host}`, or an upstream address
// made of them (a wildcard site's `reverse_proxy {labels.2}.internal`),
// would send a request authorized for this resource to the host the
// client named. Error routes and logs afterwards see the Host as it
// came, as they see the client's header. Over TLS the server name the
// client sent (SNI, {http.request.tls.server_name}), which Caddy lets
// differ from Host unless strict_sni_host is on, reads the resource's
// host too (resourceSNI): a transport's `tls_server_name` or an
// upstream address made of it would send the request where the client's
// TLS handshake named.
type hostNext struct{ next caddyhttp.Handler }

// tlsServerNamePlaceholder is Caddy's placeholder of the server name the
// client sent in its TLS handshake.
const tlsServerNamePlaceholder = "http.request.tls.server_name"

// resourceSNI is the server name a client that names the resource at
// hostport sends in its TLS handshake: its host in lower case, none for
// an IP address (RFC 6066 allows only DNS names).
func resourceSNI(hostport string) string {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(host) != nil {
		return ""
	}
	return strings.ToLower(host)
}

func (n hostNext) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return n.next.ServeHTTP(w, r)
	}
	// Labels past the resource's last one read empty, as Caddy reads
	// them past a host's: set as many as the client's host has, up to
	// a DNS name's most.
	clientHost, _ := repl.GetString("http.request.host")
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, "" // no port, as Caddy reads it
	}
	labels := strings.Split(host, ".")
	count := min(max(len(labels), strings.Count(clientHost, ".")+1), maxHostLabels)
	repl.Set("http.request.host", host)
	repl.Set("http.request.hostport", r.Host)
	if p, err := strconv.Atoi(port); err == nil {
		repl.Set("http.request.port", p) // as Caddy gives it
	} else {
		repl.Set("http.request.port", port)
	}
	for i := range count {
		var label string
		if i < len(labels) {
			label = strings.ToLower(labels[len(labels)-i-1])
		}
		repl.Set(hostLabelPlaceholder+strconv.Itoa(i), label)
	}
	if r.TLS != nil {
		repl.Set(tlsServerNamePlaceholder, resourceSNI(r.Host))
	}
	defer func() {
		if r.TLS != nil {
			repl.Delete(tlsServerNamePlaceholder)
		}
		repl.Delete("http.request.host")
		repl.Delete("http.request.hostport")
		repl.Delete("http.request.port")
		for i := range count {
			repl.Delete(hostLabelPlaceholder + strconv.Itoa(i))
		}
	}()
	return n.next.ServeHTTP(w, r)
}

// hostLabelPlaceholder is the prefix of Caddy's host label
// placeholders; maxHostLabels is the most labels a DNS name has (253
// characters).
const (
	hostLabelPlaceholder = "http.request.host.labels."
	maxHostLabels        = 127
)

// Cleanup implements caddy.CleanerUpper: when the configuration is
// unloaded (a reload, a stop), the gateway's open event streams end, so
// their clients reconnect to the configuration now running, and a remote
// issuer's keys are no longer refreshed. When the process is exiting
// (SIGTERM, SIGINT, `caddy stop`), this runs once the servers' grace
// period is over, and the process exits right after: every request
// still in flight is ended now, and waited for until audited (at most
// gateway.StopWait), or its audit event would be lost although the
// upstream had it; those of configurations reloaded away too (unloaded).
func (h *GatewayHandler) Cleanup() error {
	if h.gw != nil {
		if caddy.Exiting() {
			stopUnloaded(h.gw)
		} else {
			h.gw.Close()
			unloaded.add(h.gw)
		}
	}
	if h.keys != nil {
		h.keys.Close()
	}
	h.leaveAppless()
	return nil
}

// unloaded holds the gateways of configurations a reload unloaded whose
// requests were still in flight: a call answered in JSON runs on to its
// end past a reload (gateway.Gateway.Close ends only event streams), so
// if the process exits first, it must be ended and audited as the
// current configuration's requests are, or its audit event is lost
// though the upstream had it. Entries go once nothing is in flight.
var unloaded = unloadedGateways{m: make(map[*gateway.Gateway]struct{})}

type unloadedGateways struct {
	mu sync.Mutex
	m  map[*gateway.Gateway]struct{}
	// exit registers, once for the process, the stop of the gateways
	// kept at its exit: the configuration running then may have no
	// mcp_gateway, whose Cleanup would stop them (a reload took it
	// out), and they were never stopped.
	exit sync.Once
}

// add keeps gw if it has requests in flight, and lets go of those that
// have none left.
func (u *unloadedGateways) add(gw *gateway.Gateway) {
	u.exit.Do(func() { caddy.OnExit(func(context.Context) { stopUnloaded(nil) }) })
	u.mu.Lock()
	defer u.mu.Unlock()
	u.m[gw] = struct{}{}
	for g := range u.m {
		if !g.InFlight() {
			delete(u.m, g)
		}
	}
}

// take returns the gateways kept, and keeps none.
func (u *unloadedGateways) take() []*gateway.Gateway {
	u.mu.Lock()
	defer u.mu.Unlock()
	gws := slices.Collect(maps.Keys(u.m))
	clear(u.m)
	return gws
}

// stopUnloaded stops gw (if any) and, at once, the gateways of
// configurations unloaded earlier that still have requests in flight,
// each waiting at most gateway.StopWait: the process is exiting.
func stopUnloaded(gw *gateway.Gateway) {
	gws := unloaded.take()
	if gw != nil {
		gws = append(gws, gw)
	}
	var wg sync.WaitGroup
	for _, g := range gws {
		wg.Go(func() { g.Stop(gateway.StopWait) })
	}
	wg.Wait()
}

// errorStatus is the status Caddy answers a handler error with.
func errorStatus(err error) int {
	var he caddyhttp.HandlerError
	if errors.As(err, &he) && he.StatusCode != 0 {
		return he.StatusCode
	}
	return http.StatusInternalServerError
}

// ownRequestContext gives a request the gateway makes of its own (a
// tools/list fetch) a copy of the caller's request variables: reverse_proxy
// sets its dial information there, and the dialer of an earlier fetch,
// which net/http may run on past its request, reads it (a data race on
// one map when the gateway fetched a second page).
func ownRequestContext(ctx context.Context) context.Context {
	vars, ok := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	if !ok || vars == nil {
		return ctx
	}
	return context.WithValue(ctx, caddyhttp.VarsCtxKey, maps.Clone(vars))
}

// writeTimeout is the write timeout of the Caddy server that serves r.
func writeTimeout(r *http.Request) time.Duration {
	if srv, ok := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		return time.Duration(srv.WriteTimeout)
	}
	return 0
}

func parseGatewayHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(GatewayHandler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*GatewayHandler)(nil)
	_ caddy.CleanerUpper          = (*GatewayHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*GatewayHandler)(nil)
	_ gateway.PinStore            = appPins{}
	_ gateway.PinStore            = toolPins{}
)
