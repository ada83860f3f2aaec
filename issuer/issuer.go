// Package issuer is the OAuth 2.1 / OpenID Connect authorization server for
// MCP as a plain http.Handler built from a Config and a store.Store.
//
// Agents are principals of their own. Access tokens (RFC 9068) say who is
// who:
//
//   - a user's token: sub = user, client_id = the client, principal_type
//     "user"; delegated to an agent it also has act = {"sub": agent}
//     (requested_actor at /authorize, then actor_token at /token), and
//     token exchange (RFC 8693) nests further actors, newest outermost;
//   - an agent acting alone (client_credentials with the agent's own
//     credentials): sub = client_id = the agent, principal_type "agent";
//   - a client's own token (client_credentials): sub = client_id = the
//     client, principal_type "client".
//
// gid names the grant a token belongs to; Revoked(jti, gid) is how a
// resource server learns that it was revoked.
package issuer

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Endpoint paths, relative to the issuer URL's path.
const (
	pathAuthorize  = "/authorize"
	pathToken      = "/token"
	pathPAR        = "/par"
	pathRegister   = "/register"
	pathRevoke     = "/revoke"
	pathIntrospect = "/introspect"
	pathUserinfo   = "/userinfo"
	pathJWKS       = "/jwks"
	pathLogin      = "/login"
	pathConsent    = "/consent"
	pathLogout     = "/logout"
	pathApps       = "/apps"    // connected apps and agents
	pathAssets     = "/assets/" // embedded CSS
	pathHealth     = "/healthz" // orchestrator probe (health.go)
)

// Issuer is the authorization server.
type Issuer struct {
	cfg   Config
	store store.Store // backend, with revocations joining revs as they commit
	// backend is the store as given to New.
	backend store.Store
	// revs answers Revoked (revocations.go); revsChanged wakes
	// WatchRevocations.
	revs        *revocationSet
	revsChanged chan struct{}
	log         *zap.Logger
	now         func() time.Time
	issuer      *url.URL
	base        string // issuer URL path without trailing slash ("" for a root issuer)

	routes    map[string]http.HandlerFunc // exact request path -> handler
	wellKnown map[string]http.HandlerFunc // well-known metadata paths

	keys     *keyRing // signing_alg's: access tokens, ID tokens in it
	idKeys   *keyRing // RS256 ID tokens when signing_alg is another
	sessions *sessions
	grants   map[string]tokenGrant // by grant_type
	mint     minter
	pages    *pages
	dir      *directory             // users, clients, agents
	creds    *credentialTags        // of the configured users, clients and agents
	policy   *policy                // resources and the scopes they grant
	cimd     *cimdFetcher           // outbound: CIMD documents, client jwks_uri
	pending  *pendingRequests       // authorization requests waiting for login or consent
	consents *consents              // approvals, connected apps
	idps     map[string]*idpClient  // upstream identity providers by name
	trusted  map[string]*trustedIdP // IdPs whose ID-JAGs are redeemed, by issuer

	// Abuse limits (ratelimit.go, hashgate.go).
	limiter       *limiter
	anonWrites    *rateLimiter // unauthenticated store writes per address
	parClients    *rateLimiter // pushed requests per client
	clientTokens  *rateLimiter // client_credentials and exchanged tokens per client
	registrations *rateLimiter // DCR requests per address
	// registrationsAll is DCR over all addresses (one key, "").
	registrationsAll *rateLimiter
	userWrites       *rateLimiter // a signed-in user's authorization requests that store something
	// userRefreshes are the refreshes of a user's grants that store a
	// self-registered client's assertion: apart from userWrites, so that
	// an app refreshing in a loop does not keep its user from signing in
	// to others.
	userRefreshes *rateLimiter
	hashes        *hashGate    // bounds concurrent password and secret hashing
	health        healthChecks // probes share the check under way
	localUsers    localUsers   // whether the login page shows the password form

	proofs *dpop.Verifier // DPoP proofs at the token, PAR and revocation endpoints

	metrics Metrics
	sec     *zap.Logger // security events (security.go)
}

// New builds an Issuer. It validates cfg, applies defaults, and loads (or
// generates and persists) the signing key.
func New(cfg Config, st store.Store) (*Issuer, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	applyDefaults(&cfg)
	u, err := parseOwnIssuerURL(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	if err := checkRevocationTiming(&cfg); err != nil {
		return nil, err
	}
	revs := newRevocationSet(cfg.Now, cfg.AccessTokenTTL, cfg.RevocationMaxStale)
	i := &Issuer{
		cfg:         cfg,
		store:       revocationStore{st, revs},
		backend:     st,
		revs:        revs,
		revsChanged: make(chan struct{}, 1),
		log:         cfg.Logger,
		now:         cfg.Now,
		issuer:      u,
		base:        strings.TrimSuffix(u.Path, "/"),
	}
	i.mint = minter{iss: i}
	i.metrics, i.sec = cfg.Metrics, cfg.Logger.Named("security")
	if i.metrics == nil {
		i.metrics = nopMetrics{}
	}
	if err := i.init(); err != nil {
		return nil, err
	}
	i.grants = make(map[string]tokenGrant)
	for _, g := range tokenGrants(i) {
		i.grants[g.name()] = g
	}
	// Before the set is first loaded: the revocations another issuer of
	// this process on st commits from now on join it as they commit, and
	// the load reads those committed before.
	sameProcess.join(st, revs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := i.SyncRevocations(ctx); err != nil {
		return nil, fmt.Errorf("load revocations: %w", err)
	}
	if err := i.indexGrants(ctx); err != nil {
		// Readers scan every grant until a pass completes; a store too
		// slow to read them all in one go must not stop the start.
		i.log.Warn("grants written by an earlier version could not be indexed; the next start tries again", zap.Error(err))
	}
	if err := i.indexDisabledUsers(ctx); err != nil {
		// Sign-ins read every user of their provider until a pass
		// completes.
		i.log.Warn("users disabled by an earlier version could not be indexed; the next start tries again", zap.Error(err))
	}
	i.routes = map[string]http.HandlerFunc{
		i.base + pathAuthorize:  i.handleAuthorize,
		i.base + pathToken:      cors(i.handleToken, allowPost),
		i.base + pathPAR:        cors(i.handlePAR, allowPost),
		i.base + pathRevoke:     cors(i.handleRevoke, allowPost),
		i.base + pathIntrospect: cors(i.handleIntrospect, allowPost),
		i.base + pathUserinfo:   cors(i.handleUserinfo, "GET, POST"),
		i.base + pathJWKS:       cors(i.handleJWKS, allowGet),
		i.base + pathLogin:      i.handleLogin,
		i.base + pathConsent:    i.handleConsent,
		i.base + pathLogout:     i.handleLogout,
		i.base + pathApps:       i.handleApps,
		i.base + pathHealth:     i.handleHealth,
	}
	// Registration turned off answers 404 to every method, a preflight
	// too: not 204 saying POST is allowed where POST is not found. The
	// route stays the issuer's (Match), so nothing behind it answers.
	i.routes[i.base+pathRegister] = i.handleRegister
	if !i.cfg.DisableRegistration {
		i.routes[i.base+pathRegister] = cors(i.handleRegister, allowPost)
	}
	for name, p := range i.idps {
		i.routes[i.base+pathLogin+"/"+name] = i.idpStart(p)
		i.routes[i.base+pathLogin+"/"+name+"/callback"] = i.idpCallback(p)
	}
	tail := i.base // "" or "/t1"
	meta := cors(i.handleMetadata, allowGet)
	i.wellKnown = map[string]http.HandlerFunc{
		"/.well-known/oauth-authorization-server" + tail: meta,
		"/.well-known/openid-configuration" + tail:       meta,
	}
	if tail != "" {
		i.wellKnown[tail+"/.well-known/openid-configuration"] = meta
		i.wellKnown[tail+"/.well-known/oauth-authorization-server"] = meta
	}
	return i, nil
}

// CheckConfig reports the configuration errors New would report, without
// a store: Caddy checks a config (caddy validate) without opening storage.
func CheckConfig(cfg Config) error {
	applyDefaults(&cfg)
	if _, err := parseOwnIssuerURL(cfg.Issuer); err != nil {
		return err
	}
	if err := checkRevocationTiming(&cfg); err != nil {
		return err
	}
	d := &directory{cfg: &cfg, now: cfg.Now}
	return d.validateConfig()
}

// init builds the limiters and clients, validates the configured
// directory against the store, and loads (or generates and persists) the
// signing key.
func (i *Issuer) init() error {
	var err error
	if i.pages, err = parsePages(i.base+pathAssets, i.URL(), i.log); err != nil {
		return err
	}
	// The brute-force and registration limits and signed-in users'
	// writes are shared with the other instances on the store, else kept
	// across reloads (Config.Limits);
	// the others bound this instance's own writes, kept across reloads
	// too.
	mem := i.cfg.Limits
	if mem == nil {
		mem = newLimitMemory(i.now)
	}
	bruteForce, registrations, registrationsAll, userWrites, userRefreshes := countersFor(i.backend, limitsBruteForce), countersFor(i.backend, limitsRegistrations),
		countersFor(i.backend, limitsRegistrationsAll), countersFor(i.backend, limitsUserWrites), countersFor(i.backend, limitsUserRefreshes)
	if bruteForce == nil { // a store no other instance shares
		bruteForce, registrations, registrationsAll, userWrites, userRefreshes = mem.bruteForce, mem.registrations, mem.registrationsAll, mem.userWrites, mem.userRefreshes
	}
	i.limiter = newLimiter(i.now, bruteForce, i.log)
	i.limiter.known = mem.known
	i.hashes = newHashGate()
	i.anonWrites = newRateLimiter(i.now, anonWriteBurst, time.Minute, mem.anonWrites).wideByPrefix(anonWideShare, mem.anonWritesWide)
	i.parClients = newRateLimiter(i.now, parClientBurst, time.Minute, mem.parClients)
	i.clientTokens = newRateLimiter(i.now, clientTokenBurst, time.Minute, mem.clientTokens)
	i.registrations = newRateLimiter(i.now, registrationBurst, time.Hour, registrations)
	i.registrationsAll = newRateLimiter(i.now, registrationGlobalBurst, time.Hour, registrationsAll)
	i.userWrites = newRateLimiter(i.now, userWriteBurst, time.Minute, userWrites)
	i.userRefreshes = newRateLimiter(i.now, userWriteBurst, time.Minute, userRefreshes)
	i.policy = newPolicy(&i.cfg)
	i.pending = &pendingRequests{store: i.store, now: i.now, rand: i.cfg.Rand, log: i.log}
	cimdFetches := newRateLimiter(i.now, cimdFetchBurst, time.Minute, mem.cimdFetches).wideByPrefix(anonWideShare, mem.cimdFetchesWide)
	if i.cimd, err = newCIMDFetcher(&i.cfg, i.store, i.log, i.now, i.anonWrites, cimdFetches); err != nil {
		return err
	}
	i.dir = &directory{cfg: &i.cfg, store: i.store, cimd: i.cimd, hashes: i.hashes, now: i.now, wait: sleepContext}
	i.consents = &consents{store: i.store, dir: i.dir}
	if err := i.newDPoP(context.Background()); err != nil {
		return err
	}
	if err := i.dir.validateConfig(); err != nil {
		return err
	}
	if i.creds, err = newCredentialTags(i.dir.snapshot(), i.URL()); err != nil {
		return err
	}
	i.sessions = newSessions(i.store, &i.cfg, i.issuer, i.anonWrites, i.creds)
	i.idps = newIdPClients(&i.cfg, i.idpCallbackURL)
	i.trusted = newTrustedIdPs(&i.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := i.dir.checkStoredIDs(ctx); err != nil {
		return err
	}
	if err := i.dir.noteStoredUsers(ctx); err != nil {
		return fmt.Errorf("read users: %w", err)
	}
	i.keys, err = newKeyRing(ctx, i.store, i.now, i.cfg.Rand, i.cfg.SigningAlg, max(i.cfg.AccessTokenTTL, i.cfg.IDTokenTTL))
	if err != nil {
		return err
	}
	i.idKeys, err = newIDTokenKeyRing(ctx, i.store, i.now, i.cfg.Rand, i.cfg.SigningAlg, i.keys.signsFrom(), i.cfg.IDTokenTTL)
	return err
}

// Match reports whether r is for one of the issuer's endpoints. A host
// handler passes every other request on.
func (i *Issuer) Match(r *http.Request) bool {
	p := r.URL.Path
	if _, ok := i.routes[p]; ok {
		return true
	}
	if _, ok := i.wellKnown[p]; ok {
		return true
	}
	return strings.HasPrefix(p, i.base+pathAssets)
}

// PassedOn is r as a host handler passes it on to the handlers after it
// (Match false): without the issuer's session cookie, which the browser
// sends to every path of the issuer's host. An application served
// there (a reverse_proxy in the issuer's site, forward_auth) would
// otherwise get the signed-in user's session, and with it sign in here
// as the user and approve its own client on the consent page (the CSRF
// check reads Origin and Sec-Fetch-Site, which a server sets as it
// likes). r itself is left as it is, for the access log.
func (i *Issuer) PassedOn(r *http.Request) *http.Request {
	return i.sessions.withoutCookie(r)
}

// ServeHTTP serves the issuer's endpoints and answers 404 for anything else.
func (i *Issuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if i.issuer.Scheme == "https" && w.Header().Get("Strict-Transport-Security") == "" {
		// Without it, a network attacker can keep a browser on http at its
		// next visit and serve the sign-in page itself (review s17-pages
		// F1). A policy the operator set in front (Caddy's header
		// directive) is kept.
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
	}
	if h, ok := i.wellKnown[p]; ok {
		h(w, r)
		return
	}
	if h, ok := i.routes[p]; ok {
		// HTTP/3 0-RTT data (Caddy accepts it) reaches here before the
		// TLS handshake completes: its source address is unverified,
		// anyone with a session ticket may send it as anyone's, and the
		// limits would charge that address. So is a request a proxy in
		// front took so and passed on, marked Early-Data (any value,
		// RFC 8470 section 5.1; Caddy's reverse_proxy sets it), however
		// this hop's handshake went. RFC 8470: the client retries once
		// the handshake completes.
		if r.TLS != nil && !r.TLS.HandshakeComplete || len(r.Header["Early-Data"]) != 0 {
			http.Error(w, "too early: retry once the TLS handshake completes", http.StatusTooEarly)
			return
		}
		h(w, withClientAddr(r))
		return
	}
	if strings.HasPrefix(p, i.base+pathAssets) {
		i.pages.serveAsset(w, r)
		return
	}
	http.NotFound(w, r)
}

// URL returns the issuer identifier.
func (i *Issuer) URL() string { return i.issuer.String() }

// endpoint returns the absolute URL of an endpoint path.
func (i *Issuer) endpoint(path string) string {
	u := *i.issuer
	u.Path = i.base + path
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

// parseOwnIssuerURL is parseIssuerURL for this issuer's identifier,
// which clients compare as a string with the iss of its metadata, tokens
// and authorization responses (RFC 8414 section 3.3, RFC 9207), and
// which names its endpoints: so the URL every client reads. A raw space
// or "é" goes on the wire escaped ("%20"), the identifier with it; a
// dot segment ("/a/../t", "/%2e%2e/t") is resolved by every client that
// fetches an endpoint under it, which this issuer would not then serve.
func parseOwnIssuerURL(s string) (*url.URL, error) {
	u, err := parseIssuerURL(s)
	if err != nil {
		return nil, err
	}
	if strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return nil, fmt.Errorf("issuer %q: must be printable ASCII: write it escaped, %s", s, u)
	}
	// Printable ASCII that a URL must escape too ("\", "{", "|", "^",
	// '"'...): the identifier would be the escaped form. The scheme's
	// case is left alone (it is read lowercase, as before).
	if v, _ := url.Parse(s); v != nil {
		if w := v.String(); len(w) != len(s) || w[len(v.Scheme):] != s[len(v.Scheme):] {
			return nil, fmt.Errorf("issuer %q: must be written as a URL is sent: %s", s, w)
		}
	}
	for _, seg := range strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == "." || seg == ".." {
			return nil, fmt.Errorf("issuer %q: dot segments are not allowed in the path", s)
		}
	}
	// The identifier is the URL as written, less a trailing "/": an
	// escaped one ("%2F") is trimmed from the decoded path only, and the
	// identifier would then be the path without it, another issuer to
	// every client (TestConfigValidation).
	if id, want := u.String(), strings.TrimSuffix(s, "/"); len(id) != len(want) || id[len(u.Scheme):] != want[len(u.Scheme):] {
		return nil, fmt.Errorf("issuer %q: its identifier would be %s: write that", s, id)
	}
	return u, nil
}

func parseIssuerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	// An empty fragment ("…#") parses as none, but the string is the
	// issuer identifier, whose endpoints would follow the "#".
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || strings.Contains(s, "#") || u.User != nil {
		return nil, fmt.Errorf("issuer %q: must be an absolute URL without query, fragment or userinfo", s)
	}
	if !accesstoken.ValidPort(u.Port()) {
		return nil, fmt.Errorf("issuer %q: the port must be 1 to 65535, without leading zeros", s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopbackHost(u.Hostname()) {
			return nil, fmt.Errorf("issuer %q: http is allowed only for loopback hosts", s)
		}
	default:
		return nil, fmt.Errorf("issuer %q: scheme must be https", s)
	}
	// The escaped path too: a path written with an escape Go would not
	// write (%2F, %41) keeps its spelling in RawPath, which String uses
	// only while it still decodes to Path.
	u.Path, u.RawPath = strings.TrimSuffix(u.Path, "/"), strings.TrimSuffix(u.RawPath, "/")
	return u, nil
}

// isLoopbackHost reports whether a URL host (without port) names the
// machine itself as a browser reads it: localhost or a name under it
// (RFC 6761 section 6.3; browsers resolve them to loopback), in any case
// and with a trailing dot or not, or a loopback IP literal. Other names
// are not resolved: "127.evil.example" is whatever its DNS says.
// Numeric hosts that are not plain IP literals (0x7f.1, 2130706433) are
// loopback to a browser too; classifyRedirectURI refuses them.
func isLoopbackHost(h string) bool {
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

func applyDefaults(c *Config) {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.AccessTokenTTL, time.Hour)
	def(&c.RefreshTokenTTL, 30*24*time.Hour)
	def(&c.CodeTTL, 5*time.Minute)
	def(&c.IDTokenTTL, time.Hour)
	def(&c.PARTTL, 60*time.Second)
	def(&c.SessionTTL, 12*time.Hour)
	def(&c.CIMDTimeout, 5*time.Second)
	def(&c.RevocationResync, DefaultRevocationResync)
	def(&c.RevocationMaxStale, DefaultRevocationMaxStale)
	if c.CodeTTL > 10*time.Minute {
		c.CodeTTL = 10 * time.Minute
	}
	if c.CIMDMaxBytes <= 0 {
		c.CIMDMaxBytes = 5 << 10
	}
	if c.SigningAlg == "" {
		c.SigningAlg = "ES256"
	}
}

// randomToken returns n random bytes, base64url encoded.
func (i *Issuer) randomToken(n int) (string, error) { return randomToken(i.cfg.Rand, n) }

// randomToken returns n bytes of r, base64url encoded.
func randomToken(r io.Reader, n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenKey is the storage key of an opaque secret: its SHA-256, so a copy of
// the database yields no usable codes or refresh tokens.
func tokenKey(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return base64.RawURLEncoding.EncodeToString(s[:])
}
