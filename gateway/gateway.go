package gateway

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// Gateway is the policy-enforcing front of one MCP endpoint. It is safe for
// concurrent use.
//
// Decisions worth knowing (see also SPEC.md "Gateway duties"):
//
//   - Paths. Only the resource's own path is MCP traffic, compared
//     exactly as the upstream will receive it (the escaped form and the
//     decoded one); the MetadataPaths are answered with public metadata,
//     and every other path that reaches the gateway (a gateway without a
//     matcher sees the whole site) is answered 404, whatever the token,
//     method or body: an upstream's other routes (health, admin, a legacy
//     /sse transport) stay out of reach, and "/mcp/", "//mcp", "/mcp;x",
//     "/MCP", "/m%63p", "/mcp%2F" or "%252E" spellings are not the path.
//   - Metadata. The path-inserted RFC 9728 URL is always served; the root
//     form only for a resource at "/" or with Config.RootMetadata (one
//     gateway per host), since several MCP servers may share a host.
//   - Tokens come from the Authorization header only (Bearer, any case,
//     exactly one header). A query access_token (in any case, cut by a
//     NUL, or as PHP reads names: access.token, access_token[]; or a
//     query that does not parse) is refused with 400 invalid_request, never read. Tokens
//     are RFC 9068 JWTs (another issuer's may also be typ JWT with
//     Config.AcceptTypJWT, or opaque, checked by Config.Introspector):
//     sub and client_id (or azp) required; scope or scp; aud must contain
//     the resource or Config.Audience (other audiences may be listed,
//     RFC 9068 §4); a crit
//     header is refused (no extension is understood); the claim
//     principal_type "agent" marks an agent-only token (the agent acting
//     on its own); act is RFC 8693 delegation, decided on its outermost
//     sub, depth = nesting count.
//   - Refusals carry a JSON-RPC error body (with the request id when one
//     message was read), so 2026-07-28 clients do not fall back. More scope
//     curing a denial → 403 insufficient_scope naming every scope the whole
//     request needs; no rule or an actor rule → 403 naming the rule, no
//     challenge. Any denied message refuses the whole batch, and so
//     do two requests sharing an id (answers must match one request).
//   - Sessions (2025 revisions) are MAC-bound to iss, sub, client_id and
//     the outermost act.sub (see session.go). A session id that does not
//     verify for the caller is answered 404 "Session not found": the client
//     starts a new session, and nothing is said about the session's
//     existence. 2026-07-28 has no sessions: the header is dropped.
//     Without a session, a GET (405, Allow: POST), a DELETE (400), a
//     client's response and logging/setLevel (400) are refused, and the
//     client's notifications but notifications/initialized are dropped
//     (202): only the session ties
//     them to the caller (checkSessionless, sessionlessMessages). So a
//     stream resumption (GET with Last-Event-ID) passes only in a
//     verified session; Last-Event-ID is dropped elsewhere.
//   - Resource rules match URI text, so a URI a server could resolve to
//     another resource (dot or empty segments, encoded unreserved
//     characters or separators, backslashes) is refused as invalid params
//     (see checkURI).
//   - completion/complete is decided by the prompt or resource its
//     params.ref names (a resource template by every rule an expansion
//     could fall under, see decideCompletion).
//   - tasks/* (2026-07-28) carry task ids bound to the principal and the
//     tool that created the task (task.go), and must pass that tool's
//     rule again; before 2026-07-28 tasks are refused. The requestState
//     of a multi round-trip request is bound to the principal and the
//     request it answered (state.go).
//   - Upstream request: Authorization and Cookie are removed (MCP does not
//     use cookies, and on a host shared with the issuer they would hand
//     the login session to the MCP server), as are client copies of the
//     X-MCP-* identity headers, method-override headers (and a query
//     with _method is refused), and Mcp-Method /
//     Mcp-Name when they were not validated (protocol versions before
//     2026-07-28), headers with an underscore in their name (CGI-style
//     servers read them as the dashed ones) and request trailers. Upgrade
//     requests are refused: a tunnel is uninspectable. So is a Connection
//     header naming other headers, which a proxy would strip after the
//     gateway checked or set them.
//   - Upstream answers: Mcp-Session-Id is wrapped (above) and Set-Cookie
//     dropped, as Cookie is on the way up, and Clear-Site-Data, NEL and
//     Report-To with it (upstreamDropped); the upstream's
//     Strict-Transport-Security and Alt-Svc go, and the values set in
//     front of the gateway stay (hostFields). A redirect is refused (502),
//     whatever the configuration reads: clients follow it with the token.
//   - tools/list answers are filtered by the same decision as tools/call
//     (actor rules included) and marked private; one the gateway cannot
//     read is replaced by 502. A tools/list notification's answer is
//     filtered too, and Accept-Encoding is not forwarded with a
//     tools/list, so that the answer arrives readable. With pinning or
//     resource rules (every answer read), and on a resumed GET stream,
//     any response whose result has a tools, prompts, resources or
//     resourceTemplates array is filtered as that list's answer, whatever
//     request it answers (clients match answers by id on any stream, and
//     a caller can have an SDK deliver a list answer to another of its
//     requests). Known gap, with neither: a list answer sent on another
//     request's stream or JSON answer is not filtered; calls are still
//     enforced.
//   - A resources/read answer loses the contents whose uri the caller
//     could not read (checkResources: a rule refuses the caller, or none
//     covers the uri), in the read's answer and on a resumed GET stream
//     (Last-Event-ID). With resource rules configured every answer is
//     read for resources, GET streams included: a read's answer on any
//     stream is checked so, a resource embedded in a tool's or prompt's
//     result that the caller could not read is withheld, and
//     notifications/resources/updated for such a URI is dropped. Known
//     gap: without resource rules, where every read is refused ("no
//     rule"), a read's answer sent on another stream is not checked.
//   - Mcp-Param-* headers (2026-07-28) must each carry the argument the
//     called tool's pinned definition mirrors into them (param.go); with
//     PinOff, or before 2026-07-28, none passes.
//   - Tool pinning (Config.PinTools, pin.go): a tool whose listed
//     definition differs from its pin is left out of tools/list answers
//     and its calls are refused (403, rule "pin_tools"); a call naming a
//     tool not seen listed, or after notifications/tools/list_changed,
//     makes the gateway fetch tools/list itself first, and is refused if
//     the definition still cannot be learned (503 when only its pin
//     cannot be recorded: the store is unavailable).
type Gateway struct {
	cfg    Config
	now    func() time.Time
	log    *zap.Logger
	audit  *zap.Logger
	policy *policy
	// held counts the answers held, shared by the process's gateways
	// (response.go); heldWriteTime bounds writing one.
	held          *heldShares
	heldWriteTime func(n int) time.Duration
	parser        *jwt.Parser
	// validator checks the claims of an introspection answer as parser
	// checks a JWT's.
	validator *jwt.Validator
	cache     *claimsCache
	inactive  *claimsCache // inactive tokens, nil entries
	// withdrawals is Config.Keys when it may withdraw keys, else nil.
	withdrawals keyWithdrawals
	proofs      *dpop.Verifier
	origin      string // the resource URL's scheme://host, for htu
	host        string // the resource URL's host, the Host next's requests carry
	// streams: open event streams, closed on revocation or when an
	// introspection answer runs out (nil without Config.Revocations or
	// Config.Introspector).
	streams *streamSet
	// introspections: the calls of the introspection endpoint in flight,
	// shared by the requests presenting the same token, and their bound.
	introspections *introspections

	// endpoint is the resource's path, the only one forwarded: decoded
	// and as sent (escaped).
	endpoint, endpointEscaped string

	metadataURL   string
	metadataPaths []string
	// metadataEscaped are metadataPaths as spelled on the wire, escapes
	// normalized (dpop.NormalPercent).
	metadataEscaped []string
	metadataJSON    []byte
	scopes          []string
	origins         map[string]bool

	metrics Metrics
	pins    *pinSet     // nil when PinTools is PinOff
	macs    sync.Pool   // of *macState keyed with Config.SessionKey
	cursors cipher.AEAD // seals list cursors (cursor.go)
}

// Defaults.
const (
	DefaultMaxBodySize = 1 << 20
	// DefaultMaxInFlight is Config.MaxInFlight's default: far above what
	// a user's clients keep open (a GET stream per session, a few calls
	// at once), far below what would take the process's connections.
	DefaultMaxInFlight = 100
	minSessionKey      = 32
)

// DefaultMaxInFlightPerClient is Config.MaxInFlightPerClient's default
// for a MaxInFlight of max: three quarters of it (rounded up), so that
// one client of a principal leaves the others a quarter. Written as max
// less a quarter rounded down, not (3*max+3)/4, which overflows for a
// max above a third of the largest int (a "max_in_flight
// 4000000000000000000" written for no limit): negative, it refused
// every request 429.
func DefaultMaxInFlightPerClient(max int) int { return max - max/4 }

// New validates cfg and builds a Gateway.
func New(cfg Config) (*Gateway, error) {
	res, err := parseHTTPSURL(cfg.Resource)
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	// An empty fragment ("…/mcp#") parses as none; the URL is still what
	// tokens carry as aud, which RFC 8707 says has no fragment.
	if res.RawQuery != "" || res.Fragment != "" || res.ForceQuery || strings.Contains(cfg.Resource, "#") {
		return nil, errors.New("resource: must not have a query or fragment")
	}
	if err := checkResourcePath(res); err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	if cfg.Issuer == "" {
		return nil, errors.New("issuer is required")
	}
	if _, err := parseHTTPSURL(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if cfg.Keys == nil {
		return nil, errors.New("keys are required")
	}
	if len(cfg.SessionKey) < minSessionKey {
		return nil, fmt.Errorf("session key must be at least %d bytes", minSessionKey)
	}
	if cfg.MaxBodySize < 0 {
		return nil, errors.New("max body size is negative")
	}
	if cfg.MaxBodySize == 0 {
		cfg.MaxBodySize = DefaultMaxBodySize
	}
	if len(cfg.Algorithms) == 0 {
		cfg.Algorithms = []string{"ES256", "RS256", "EdDSA"}
	}
	for _, a := range cfg.Algorithms {
		if !accesstoken.Supported(a) {
			return nil, fmt.Errorf("algorithm %q is not supported (asymmetric JWS algorithms only)", a)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ErrorStatus == nil {
		cfg.ErrorStatus = func(error) int { return http.StatusInternalServerError }
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.AuditLogger == nil {
		cfg.AuditLogger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = nopMetrics{}
	}
	if cfg.PinTools != PinOff && cfg.Pins == nil {
		return nil, fmt.Errorf("pin_tools %s needs a pin store", cfg.PinTools)
	}
	if cfg.PinReload <= 0 {
		cfg.PinReload = DefaultPinReload
	}
	if cfg.Audience == "" {
		cfg.Audience = cfg.Resource
	}
	if cfg.IntrospectionCache < 0 || cfg.InactiveCache < 0 {
		return nil, errors.New("introspection cache durations are negative")
	}
	if cfg.IntrospectionCache == 0 {
		cfg.IntrospectionCache = DefaultIntrospectionCache
	}
	if cfg.InactiveCache == 0 {
		cfg.InactiveCache = min(DefaultInactiveCache, cfg.IntrospectionCache)
	}
	if cfg.StreamCheckInterval < 0 {
		return nil, errors.New("stream check interval is negative")
	}
	if cfg.StreamCheckInterval == 0 {
		cfg.StreamCheckInterval = DefaultStreamCheckInterval
	}
	if cfg.MaxInFlight < 0 {
		return nil, errors.New("max in flight is negative")
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	switch {
	case cfg.MaxInFlightPerClient < 0:
		return nil, errors.New("max in flight per client is negative")
	case cfg.MaxInFlightPerClient > cfg.MaxInFlight:
		return nil, fmt.Errorf("max in flight per client (%d) is above max in flight (%d), which bounds every client of a principal together", cfg.MaxInFlightPerClient, cfg.MaxInFlight)
	case cfg.MaxInFlightPerClient == 0:
		cfg.MaxInFlightPerClient = DefaultMaxInFlightPerClient(cfg.MaxInFlight)
	}
	pol, err := newPolicy(&cfg)
	if err != nil {
		return nil, err
	}
	origins, err := allowedOrigins(cfg.AllowedOrigins)
	if err != nil {
		return nil, err
	}

	g := &Gateway{
		cfg:           cfg,
		now:           cfg.Now,
		held:          held,
		heldWriteTime: heldWriteTime,
		log:           cfg.Logger,
		audit:         cfg.AuditLogger,
		policy:        pol,
		cache:         newClaimsCache(claimsCacheSize),
		inactive:      newClaimsCache(inactiveCacheSize),
		origins:       origins,
		scopes:        collectScopes(&cfg),
		metrics:       cfg.Metrics,
		proofs:        newProofs(&cfg),
		origin:        res.Scheme + "://" + res.Host,
		host:          strings.ToLower(res.Host),

		introspections: newIntrospections(),
	}
	g.macs.New = func() any { return newMACState(g.cfg.SessionKey) }
	g.cursors = newCursorAEAD(g.cfg.SessionKey)
	if cfg.PinTools != PinOff {
		g.pins = newPinSet(g, &g.cfg)
	}
	g.streams = newStreamSet(cfg.Revocations, cfg.Now, cfg.StreamCheckInterval, cfg.MaxInFlight, cfg.MaxInFlightPerClient, cfg.Logger)
	if g.withdrawals, _ = cfg.Keys.(keyWithdrawals); g.withdrawals != nil {
		g.streams.published = g.keyPublished
	}
	checks := []jwt.ParserOption{
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(tokenLeeway),
		jwt.WithTimeFunc(cfg.Now),
	}
	g.parser = jwt.NewParser(append(checks, jwt.WithValidMethods(cfg.Algorithms), jwt.WithStrictDecoding())...)
	g.validator = jwt.NewValidator(checks...)
	g.endpoint, g.endpointEscaped = res.Path, res.EscapedPath()
	if g.endpoint == "" {
		g.endpoint, g.endpointEscaped = "/", "/"
	}
	var path, escaped string
	path, escaped, g.metadataURL = metadataLocation(res)
	g.metadataPaths, g.metadataEscaped = []string{path}, []string{dpop.NormalPercent(escaped)}
	if cfg.RootMetadata && path != wellKnownPRM {
		g.metadataPaths = append(g.metadataPaths, wellKnownPRM)
		g.metadataEscaped = append(g.metadataEscaped, wellKnownPRM)
	}
	if g.metadataJSON, err = buildMetadata(&cfg, g.scopes); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	return g, nil
}

// CheckRules reports what New would refuse in cfg's scopes, rules and
// allowed origins, which need nothing else of cfg: a configuration
// format can check them where it reads them, and say where.
func CheckRules(cfg *Config) error {
	if _, err := newPolicy(cfg); err != nil {
		return err
	}
	_, err := allowedOrigins(cfg.AllowedOrigins)
	return err
}

// allowedOrigins is Config.AllowedOrigins in normal form, as a set.
func allowedOrigins(list []string) (map[string]bool, error) {
	origins := make(map[string]bool, len(list))
	for _, o := range list {
		n, err := normalizeOrigin(o)
		if err != nil {
			return nil, fmt.Errorf("allowed origin %q: %w", o, err)
		}
		origins[n] = true
	}
	return origins, nil
}

// checkResourcePath refuses a resource path that clients would not send
// as written (dot or empty segments, backslashes: URL parsers resolve or
// rewrite them, a raw character to escape that makes the spelling mean
// two paths) or that an upstream decoding twice would read as another
// path (%25): requests are forwarded only to the path exactly.
func checkResourcePath(res *url.URL) error {
	p := res.EscapedPath()
	if strings.Contains(p, "%25") || strings.ContainsAny(res.Path, "\\;") {
		return errors.New("path must not contain %25, ';' or a backslash")
	}
	if sp := dpop.SpelledPath(res); sp != p {
		// A character to escape written raw beside what Go's
		// URL.EscapedPath then respells (a "%2F" it decodes, a "!" it
		// escapes): the issuer reads the path as spelled
		// (CanonicalResource), the gateway as Go sends it upstream: two
		// paths, the second another resource's.
		return fmt.Errorf("path spells a character a URI must escape raw beside escapes read two ways (as %s or %s): write it escaped, %s", sp, p, sp)
	}
	if p == "" || p == "/" {
		return nil
	}
	if res.Path == wellKnownPRM || strings.HasPrefix(res.Path, wellKnownPRM+"/") {
		// Every gateway's metadata is served there (RFC 9728 section
		// 3.1): an endpoint there is another gateway's metadata path,
		// or this one's with root metadata, and one of the two gets the
		// other's requests.
		return fmt.Errorf("path %s is under %s, where protected resource metadata is served: a request there could be answered as metadata instead of MCP traffic, or the reverse; serve the MCP endpoint at another path", p, wellKnownPRM)
	}
	for _, seg := range strings.Split(strings.TrimSuffix(p[1:], "/"), "/") {
		if d, err := url.PathUnescape(seg); err != nil || d == "" || d == "." || d == ".." {
			return errors.New("path must not contain empty or dot segments")
		}
	}
	return nil
}

// isEndpoint reports whether the request is for the resource's path,
// exactly as the upstream will receive it.
func (g *Gateway) isEndpoint(u *url.URL) bool {
	return u.Opaque == "" && u.Path == g.endpoint && u.EscapedPath() == g.endpointEscaped
}

// parseHTTPSURL accepts an absolute https URL, or http for loopback hosts
// (local development and tests).
func parseHTTPSURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		// Cut: the URL may be a remote issuer's (metadataEndpoint), as
		// long as its metadata, and logged with each failed fetch.
		return nil, cutURLError(err)
	}
	if u.Host == "" || u.User != nil {
		return nil, errors.New("must be an absolute URL with a host and no user info")
	}
	if p := u.Port(); !accesstoken.ValidPort(p) {
		return nil, fmt.Errorf("port %q: want 1 to 65535, without leading zeros", cutURL(p))
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, errors.New("http is allowed for loopback hosts only")
		}
	default:
		return nil, errors.New("scheme must be https")
	}
	return u, nil
}

// metadataEndpoint checks a URL the issuer's metadata names for the
// gateway to call (jwks_uri, introspection_endpoint): parseHTTPSURL's
// rules, and plain http only beside an http (loopback) issuer. An https
// issuer's metadata naming http://127.0.0.1:2019/stop would otherwise
// have the gateway post its introspection credentials and any opaque
// token anyone sends to Caddy's admin endpoint, which exits.
func metadataEndpoint(issuer, s string) (*url.URL, error) {
	u, err := parseHTTPSURL(s)
	if err == nil && u.Scheme == "http" && !strings.HasPrefix(issuer, "http://") {
		err = errors.New("must be https, as the issuer is")
	}
	return u, err
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// normalizeOrigin returns scheme://host[:port] in lower case, as browsers
// send Origin (RFC 6454 section 6.2): without the scheme's default port,
// which an allowed origin written with it would otherwise never match. It
// refuses anything with a path, query or user info, and what no browser
// sends, a wildcard or a host not in its xn-- form.
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	if u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", errors.New("must be scheme://host[:port]")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	switch {
	case host == "":
		return "", errors.New("must be scheme://host[:port]")
	case strings.Contains(host, "*"):
		return "", errors.New("a wildcard matches no Origin (browsers send scheme://host[:port]): list each origin")
	case strings.ContainsFunc(host, func(r rune) bool { return r >= utf8.RuneSelf }):
		return "", errors.New("write the host as browsers send it, in its xn-- (IDNA) form")
	}
	if port != "" {
		// A number, as browsers write it: 0443 is 443.
		// Port 0 is no port a page is served from.
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return "", errors.New("port out of range (1 to 65535)")
		}
		port = strconv.FormatUint(n, 10)
	}
	if u.Scheme == "https" && port == "443" || u.Scheme == "http" && port == "80" {
		port = ""
	}
	if strings.Contains(host, ":") {
		h, err := originIPv6(host)
		if err != nil {
			return "", err
		}
		host = h
	} else if endsInNumber(host) {
		// Browsers read such a host as an IPv4 address, in any of its
		// forms (127.1, 0x7f.0.0.1, 0177.0.0.1, a trailing dot), and
		// send it in dotted decimal.
		if a, err := netip.ParseAddr(host); err != nil || !a.Is4() || a.String() != host {
			return "", errors.New("write the IPv4 address as browsers send it, in dotted decimal (127.0.0.1)")
		}
	}
	if port != "" {
		host += ":" + port
	}
	return u.Scheme + "://" + host, nil
}

// endsInNumber reports whether the WHATWG URL standard reads host as an
// IPv4 address: its last label (before a trailing dot) is decimal digits
// or 0x and hexadecimal ones.
func endsInNumber(host string) bool {
	labels := strings.Split(host, ".")
	last := labels[len(labels)-1]
	if last == "" && len(labels) > 1 {
		last = labels[len(labels)-2]
	}
	if last != "" && strings.Trim(last, "0123456789") == "" {
		return true
	}
	hex, ok := strings.CutPrefix(last, "0x")
	return ok && strings.Trim(hex, "0123456789abcdef") == ""
}

// originIPv6 is an IPv6 literal host (without its brackets) as browsers
// serialize it in Origin (the WHATWG URL standard): bracketed, in its
// shortest form (RFC 5952), an IPv4-mapped address in hexadecimal too
// ([::ffff:7f00:1]), never with a zone.
func originIPv6(host string) (string, error) {
	a, err := netip.ParseAddr(host)
	switch {
	case err != nil || !a.Is6():
		return "", errors.New("host is not an IPv6 address")
	case a.Zone() != "":
		return "", errors.New("an IPv6 zone is never in an Origin")
	case a.Is4In6():
		b := a.As16()
		return fmt.Sprintf("[::ffff:%x:%x]", uint16(b[12])<<8|uint16(b[13]), uint16(b[14])<<8|uint16(b[15])), nil
	}
	return "[" + a.String() + "]", nil
}
