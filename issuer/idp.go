package issuer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// sourceIdP marks users provisioned by an identity provider's login.
const sourceIdP = "idp"

const (
	defaultRecheck = time.Hour
	// idpTimeout bounds every request to an identity provider (discovery,
	// keys, token endpoint).
	idpTimeout = 10 * time.Second
	// idpMaxBytes bounds what an identity provider's answers may weigh.
	idpMaxBytes = 1 << 20
	// idpRetryAfter is how long a failed discovery is remembered: a
	// provider that is down is not asked again at every page view.
	idpRetryAfter = 10 * time.Second
	// maxIdPGroups bounds the mapped provider groups kept per user.
	maxIdPGroups = 100
	// idpClockSkew is how far the provider's clock may be behind ours
	// when its auth_time is held to a new login (as for assertions).
	idpClockSkew = 30 * time.Second
)

var idpNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// validateIdentityProviders checks and fills in the defaults of the
// configured providers; users is the local users, whose names must not
// fall in a provider's namespace ("<name>:").
func validateIdentityProviders(cfg *Config) error {
	groups := map[string]bool{}
	for _, g := range cfg.Groups {
		groups[g.Name] = true
	}
	ps := slices.Clone(cfg.IdentityProviders)
	seen := map[string]bool{}
	for n := range ps {
		p := &ps[n]
		if !idpNameRE.MatchString(p.Name) || seen[p.Name] {
			return fmt.Errorf("identity_provider %q: the name must be unique, 1 to 32 of a-z, 0-9, - and _", p.Name)
		}
		seen[p.Name] = true
		if err := p.validate(groups); err != nil {
			return fmt.Errorf("identity_provider %q: %w", p.Name, err)
		}
	}
	for _, u := range cfg.Users {
		if p := idpOfUsername(ps, u.Username); p != nil {
			return fmt.Errorf("user %q: names starting with %q belong to identity_provider %s", u.Username, p.Name+":", p.Name)
		}
	}
	// A provider's users' names are not client or agent ids either (see
	// userNameTaken).
	for _, c := range cfg.Clients {
		if p := idpOfUsername(ps, c.ID); p != nil {
			return fmt.Errorf("client %q: names starting with %q belong to identity_provider %s's users", c.ID, p.Name+":", p.Name)
		}
	}
	for _, a := range cfg.Agents {
		if p := idpOfUsername(ps, a.ID); p != nil {
			return fmt.Errorf("agent %q: names starting with %q belong to identity_provider %s's users", a.ID, p.Name+":", p.Name)
		}
	}
	cfg.IdentityProviders = ps
	return validateTrustedIdPs(cfg)
}

func (p *IdentityProvider) validate(groups map[string]bool) error {
	if _, err := parseIssuerURL(p.Issuer); err != nil {
		return err
	}
	if p.ClientID == "" {
		return errors.New("client_id is required")
	}
	if len(p.Scopes) == 0 {
		p.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	if !slices.Contains(p.Scopes, oidc.ScopeOpenID) {
		return errors.New("scopes must include openid")
	}
	if p.UserClaim == "" {
		p.UserClaim = "sub"
	}
	if p.GroupsClaim == "" {
		p.GroupsClaim = "groups"
	}
	if p.DisplayName == "" {
		p.DisplayName = p.Name
	}
	switch {
	case p.Recheck < 0:
		return errors.New("recheck must be positive")
	case p.Recheck == 0:
		p.Recheck = defaultRecheck
	}
	if len(p.GroupMap) == 0 {
		return errors.New("no group mapping: its users could get no scope (map the provider's groups to local groups; group * <local-group> maps everyone)")
	}
	for idpGroup, local := range p.GroupMap {
		if idpGroup == "" || len(local) == 0 {
			return fmt.Errorf("group %q: want a provider group and one or more local groups", idpGroup)
		}
		for _, g := range local {
			if !groups[g] {
				return fmt.Errorf("group %q maps to %q, which is not a declared group", idpGroup, g)
			}
		}
	}
	domains := make([]string, len(p.AllowedEmailDomains))
	for n, d := range p.AllowedEmailDomains {
		d, ascii := asciiLower(strings.TrimPrefix(d, "@"))
		if !ascii || !emailDomain(d) {
			// A wildcard, an empty label (a trailing dot) or anything
			// but a host name matches no address's domain: written as
			// `*.example.com`, say, it admitted nobody, silently.
			return fmt.Errorf("allowed_email_domains: %q is not a domain: want labels of letters, digits and -, with no wildcard or trailing dot, listing each subdomain (an internationalized one in its IDNA xn-- form)", p.AllowedEmailDomains[n])
		}
		domains[n] = d
	}
	p.AllowedEmailDomains = domains
	return nil
}

// emailDomain reports whether d, in lower case, is a domain an address
// can be in: dot-separated labels of a-z, 0-9 and -.
func emailDomain(d string) bool {
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// idpOfUsername returns the provider whose namespace name is in, if any.
func idpOfUsername(ps []IdentityProvider, name string) *IdentityProvider {
	prefix, _, ok := strings.Cut(name, ":")
	if !ok {
		return nil
	}
	for n := range ps {
		if ps[n].Name == prefix {
			return &ps[n]
		}
	}
	return nil
}

// localGroups are the local groups the mapping gives idpGroups.
func (p *IdentityProvider) localGroups(idpGroups []string) []string {
	var out []string
	add := func(gs []string) {
		for _, g := range gs {
			if !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	add(p.GroupMap["*"])
	for _, g := range idpGroups {
		add(p.GroupMap[g])
	}
	return out
}

// mappedGroups keeps the provider groups the mapping names (a provider
// may send thousands), at most maxIdPGroups.
func (p *IdentityProvider) mappedGroups(idpGroups []string) []string {
	var out []string
	for _, g := range idpGroups {
		if _, ok := p.GroupMap[g]; ok && g != "*" && !slices.Contains(out, g) && len(out) < maxIdPGroups {
			out = append(out, g)
		}
	}
	return out
}

// idpClient is a provider at run time: its discovered endpoints and ID
// token verifier, made at first use (a provider that is down when the
// configuration loads does not stop the issuer).
type idpClient struct {
	cfg         IdentityProvider
	redirectURI string
	// client talks to the provider; nil (as configured): one made at
	// discovery that dials only the kinds of address the provider's
	// issuer host has (idpReachOf).
	client *http.Client
	now    func() time.Time

	// disc is the provider's metadata once read: the login page reads it
	// without waiting for a discovery in progress (review s16-idp F3).
	disc atomic.Pointer[idpDiscovered]
	// fetch serializes discoveries, and guards the last failure.
	fetch    sync.Mutex
	failedAt time.Time
	failure  error
}

type idpDiscovered struct {
	client   *http.Client // for the code exchange and the keys
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	// issRequired: the provider's metadata says its authorization
	// responses carry iss (authorization_response_iss_parameter_supported),
	// so one without it is refused (RFC 9207 section 2.4).
	issRequired bool
}

// newIdPHTTPClient is the client for the operator's identity providers
// (login and trusted IdPs): time- and size-limited.
func newIdPHTTPClient() *http.Client { return idpHTTPClient(nil) }

// idpHTTPClient is newIdPHTTPClient dialing with dial (nil: the default
// transport's, anywhere).
func idpHTTPClient(dial func(ctx context.Context, network, address string) (net.Conn, error)) *http.Client {
	rt := http.DefaultTransport
	if t, ok := rt.(*http.Transport); ok && dial != nil {
		t = t.Clone()
		t.DialContext = dial
		rt = t
	}
	return &http.Client{
		Timeout:   idpTimeout,
		Transport: limitedTransport{rt, idpMaxBytes},
		// The provider's endpoints answer directly; a redirect is not
		// followed to wherever it points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// idpReach is where the issuer may dial for a provider: the kinds of
// address reach allows, and, through a proxy, the proxy's address
// (host:port as the transport dials it) with the kinds it resolves to.
type idpReach struct {
	reach
	proxy      string
	proxyReach reach
}

// idpReachOf is where the issuer may connect for the provider at issuer:
// to public addresses, and to the kinds of other address (loopback,
// internal) its issuer host resolves to: a provider inside the
// operator's network or on this machine. So the provider's metadata
// cannot send the code exchange with the client secret, or a key fetch,
// to another internal service, such as Caddy's admin endpoint's /stop
// (review s16-idp F1). Through a proxy (HTTPS_PROXY) it is the proxy's
// host that is resolved, for the dials to the proxy only: the network it
// sits in may not resolve outside names at all (review s16b F3), and the
// hosts Go dials directly whatever the proxy (loopback ones, NO_PROXY's)
// are held to public addresses, or a provider's metadata naming
// https://127.0.0.1:<port>/ would reach this machine's services beside a
// proxy on it. The https rule for the endpoints (backChannelURL) keeps
// plain-http services out of the proxy's reach.
func idpReachOf(ctx context.Context, issuer string) (idpReach, error) {
	var r idpReach
	u, err := url.Parse(issuer)
	if err != nil {
		return r, err
	}
	host, into := u.Hostname(), &r.reach
	if proxy, err := http.ProxyFromEnvironment(&http.Request{URL: u}); err == nil && proxy != nil {
		host, into = proxy.Hostname(), &r.proxyReach
		r.proxy = net.JoinHostPort(host, cmp.Or(proxy.Port(), proxyDefaultPorts[proxy.Scheme]))
	}
	addrs, err := lookupAddrs(ctx, host)
	if err != nil {
		return r, err
	}
	for _, a := range addrs {
		into.add(a)
	}
	return r, nil
}

// proxyDefaultPorts are the ports net/http dials a proxy URL without one at.
var proxyDefaultPorts = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}

// dial dials address if r allows it: by the proxy's kinds when it is the
// proxy's address, by reach's otherwise, judged on the address actually
// connected to.
func (r idpReach) dial(timeout time.Duration) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		control := r.control
		if r.proxy != "" && address == r.proxy {
			control = r.proxyReach.control
		}
		d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: control}
		return d.DialContext(ctx, network, address)
	}
}

// ReachDialContext dials, for the authorization server at issuerURL,
// where the issuer dials for an identity provider (idpReachOf, resolved
// at each dial): public addresses, and the kinds of other address its
// host, or proxy, resolves to. For a gateway's calls to the URLs a remote
// issuer's metadata names, which must not reach Caddy's admin endpoint
// or another service inside the network when the issuer is outside it.
func ReachDialContext(issuerURL string, timeout time.Duration) func(ctx context.Context, network, address string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		r, err := idpReachOf(ctx, issuerURL)
		if err != nil {
			return nil, err
		}
		return r.dial(timeout)(ctx, network, address)
	}
}

// lookupAddrs is host's addresses: itself when it is an IP literal.
func lookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

func newIdPClients(cfg *Config, callback func(name string) string) map[string]*idpClient {
	out := make(map[string]*idpClient, len(cfg.IdentityProviders))
	for _, p := range cfg.IdentityProviders {
		out[p.Name] = &idpClient{cfg: p, redirectURI: callback(p.Name), now: cfg.Now}
	}
	return out
}

// errIdPUnavailable: the provider's metadata could not be read.
var errIdPUnavailable = errors.New("identity provider unavailable")

// discover returns the provider's endpoints, reading its metadata once.
// The reading is not the visitor's who asked for it but everyone's, so it
// goes on if that visitor leaves (review s16-idp F2), bounded by
// idpTimeout.
func (c *idpClient) discover(ctx context.Context) (*idpDiscovered, error) {
	if d := c.disc.Load(); d != nil {
		return d, nil
	}
	c.fetch.Lock()
	defer c.fetch.Unlock()
	if d := c.disc.Load(); d != nil {
		return d, nil
	}
	if !c.failedAt.IsZero() && c.now().Sub(c.failedAt) < idpRetryAfter {
		return nil, c.failure
	}
	d, err := c.read(context.WithoutCancel(ctx))
	if err != nil {
		c.failedAt, c.failure = c.now(), fmt.Errorf("%w: %s: %w", errIdPUnavailable, c.cfg.Name, err)
		return nil, c.failure
	}
	c.disc.Store(d)
	return d, nil
}

// read reads the provider's metadata.
func (c *idpClient) read(ctx context.Context) (*idpDiscovered, error) {
	client := c.client
	if client == nil {
		reach, err := idpReachOf(ctx, c.cfg.Issuer)
		if err != nil {
			return nil, err
		}
		client = idpHTTPClient(reach.dial(idpTimeout))
	}
	// go-oidc keeps this client for its key fetches: keys checks the key
	// set once the document below named it.
	keys := &keySetCheck{rt: cmp.Or[http.RoundTripper](client.Transport, http.DefaultTransport)}
	checked := *client
	checked.Transport = keys
	client = &checked
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, client), c.cfg.Issuer)
	if err != nil {
		return nil, err
	}
	// go-oidc read the document as encoding/json does: the last of two
	// members of one name, a field under any case of its name.
	var doc json.RawMessage
	if err := p.Claims(&doc); err != nil || mcpparse.CheckValue(doc, 0) != nil {
		return nil, errors.New("metadata names a member twice, or in two cases")
	}
	var meta struct {
		IssParameter bool   `json:"authorization_response_iss_parameter_supported"`
		JWKSURI      string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	ep := p.Endpoint()
	if _, err := parseIssuerURL(ep.AuthURL); err != nil || ep.TokenURL == "" {
		return nil, errors.New("metadata lacks usable endpoints")
	}
	for _, e := range []string{ep.TokenURL, meta.JWKSURI} {
		if err := backChannelURL(c.cfg.Issuer, e); err != nil {
			return nil, err
		}
	}
	if u, err := url.Parse(meta.JWKSURI); err == nil {
		keys.uri.Store(new(u.String()))
	}
	ep.AuthStyle = oauth2.AuthStyleInHeader
	if c.cfg.ClientSecret == "" {
		ep.AuthStyle = oauth2.AuthStyleInParams
	}
	return &idpDiscovered{
		client: client,
		oauth: oauth2.Config{
			ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret,
			Endpoint: ep, RedirectURL: c.redirectURI, Scopes: c.cfg.Scopes,
		},
		verifier:    p.Verifier(&oidc.Config{ClientID: c.cfg.ClientID, Now: c.now}),
		issRequired: meta.IssParameter,
	}, nil
}

// backChannelURL checks an endpoint of a provider's metadata that the
// issuer calls itself, with the code and its client secret (token) or for
// keys: https, or http only on a loopback host beside an http (loopback)
// issuer (review s16-idp F1).
func backChannelURL(issuer, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || u.User != nil {
		return fmt.Errorf("metadata endpoint %q is not an absolute URL", endpoint)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && strings.HasPrefix(issuer, "http://") && isLoopbackHost(u.Hostname()):
	default:
		return fmt.Errorf("metadata endpoint %q must be https", endpoint)
	}
	return nil
}

// idpIdentity is what an ID token says about the user, checked against
// the provider's rules.
type idpIdentity struct {
	username, subject, name, email string
	groups                         []string  // mapped provider groups
	issuedAt                       time.Time // the token's iat, on the provider's clock
}

// errIdPRefused: the provider signed the user in, but the configuration
// does not admit them (email domain, no mapped group, unusable claims).
var errIdPRefused = errors.New("not admitted")

// identity reads and admits the user of a verified ID token.
func (c *idpClient) identity(tok *oidc.IDToken) (*idpIdentity, error) {
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %w", errIdPRefused, err)
	}
	id, err := c.cfg.identity(claims, tok.Subject)
	if err != nil {
		return nil, err
	}
	id.issuedAt = tok.IssuedAt
	return id, nil
}

// emailVerified reads the email_verified claim: stated reports whether it
// is there at all. A boolean counts, and so do the strings "true" and
// "false" (some providers, Sign in with Apple among them, send strings);
// any other value is stated and not verified.
func emailVerified(claims map[string]any) (verified, stated bool) {
	switch v := claims["email_verified"].(type) {
	case nil:
		return false, false
	case bool:
		return v, true
	case string:
		return v == "true", true
	}
	return false, true
}

// identity reads and admits the user the provider's verified claims name
// (an ID token's, or an ID-JAG's of a trusted IdP linked to p); subject
// is their sub.
func (p *IdentityProvider) identity(claims map[string]any, subject string) (*idpIdentity, error) {
	value, _ := claims[p.UserClaim].(string)
	if !usableName(value, 200) {
		return nil, fmt.Errorf("%w: claim %s is missing or not a usable name", errIdPRefused, p.UserClaim)
	}
	if (p.Name == "http" || p.Name == "https") && strings.HasPrefix(value, "//") {
		// "https://app.example/client" is a Client ID Metadata
		// Document's client id (cimdFetcher.isClientID): the user's
		// tokens for that client would hold sub equal to client_id, a
		// client's own token to a resource server (configured clients
		// and agents are kept out of providers' namespaces likewise).
		return nil, fmt.Errorf("%w: claim %s would make the user's name a URL, a client's id", errIdPRefused, p.UserClaim)
	}
	if subject == "" || len(subject) > maxSubject || strings.ContainsFunc(subject, misleading) {
		// Kept as the account's idp_subject, which tells its later
		// sign-ins from another subject's with the same name: one without
		// a sub would match any other such.
		return nil, fmt.Errorf("%w: sub is missing, longer than %d bytes or holds a control or bidirectional character", errIdPRefused, maxSubject)
	}
	// A multi-tenant issuer's sub is unique within its tenant only
	// (OpenID Connect Enterprise; the ID-JAG draft's iss + tenant +
	// sub): another tenant's user of the same sub, or of the same
	// user_claim, must not sign in as this tenant's account.
	switch tenant, named := claims["tenant"]; {
	case p.Tenant == "" && named:
		return nil, fmt.Errorf("%w: the provider names a tenant, which its configuration does not declare (tenant)", errIdPRefused)
	case p.Tenant != "" && tenant != p.Tenant:
		return nil, fmt.Errorf("%w: the provider names another tenant than %q, or none", errIdPRefused, p.Tenant)
	}
	id := &idpIdentity{username: p.Name + ":" + value, subject: subject}
	id.name = profileClaim(claims, "name", maxProfileName)
	id.email = profileClaim(claims, "email", maxEmailLen)
	verified, stated := emailVerified(claims)
	if stated && !verified {
		// Not kept, so never served as the user's (userinfo, ID tokens).
		id.email = ""
	}
	if p.UserClaim == "email" && !verified {
		// The address becomes the account's name (the token's sub): an
		// address the provider has not verified could be anyone's.
		return nil, fmt.Errorf("%w: claim email names the user and the provider does not say it is verified", errIdPRefused)
	}
	if !p.emailAdmitted(id.email) {
		return nil, fmt.Errorf("%w: email domain not allowed", errIdPRefused)
	}
	if len(p.AllowedEmailDomains) > 0 && p.googleAccounts() && !googleVouchesForDomain(claims, id.email) {
		return nil, fmt.Errorf("%w: Google does not vouch for the address's domain: a personal account (no hd claim)", errIdPRefused)
	}
	switch g := claims[p.GroupsClaim].(type) {
	case string:
		id.groups = p.mappedGroups([]string{g})
	case []any:
		names := make([]string, 0, len(g))
		for _, v := range g {
			if s, ok := v.(string); ok {
				names = append(names, s)
			}
		}
		id.groups = p.mappedGroups(names)
	}
	if len(p.localGroups(id.groups)) == 0 {
		return nil, fmt.Errorf("%w: no mapped group", errIdPRefused)
	}
	return id, nil
}

// emailAdmitted reports whether allowed_email_domains admits address (any
// address when it lists none). ASCII case only: Unicode case folding maps
// other domains onto allowed ones (U+0130 to "i", the Kelvin sign to "k";
// review s16-idp F4), and an address in a domain's Unicode form is
// refused rather than guessed at.
func (p *IdentityProvider) emailAdmitted(address string) bool {
	if len(p.AllowedEmailDomains) == 0 {
		return true
	}
	_, domain, ok := strings.Cut(address, "@")
	domain, ascii := asciiLower(domain)
	return ok && ascii && slices.Contains(p.AllowedEmailDomains, domain)
}

// googleIssuer is Google's issuer: its accounts are anyone's.
const googleIssuer = "https://accounts.google.com"

// googleAccounts reports whether p signs in Google accounts.
func (p *IdentityProvider) googleAccounts() bool {
	return strings.TrimSuffix(p.Issuer, "/") == googleIssuer
}

// googleVouchesForDomain reports whether Google is authoritative for the
// domain of address, a verified email claim of its ID token: an address
// at gmail.com, or one of a Workspace or Cloud Identity account, which
// carries the organization's domain as hd. A personal Google account
// can be made with any address its maker could receive mail at once,
// and email_verified stays true after the mailbox has gone to someone
// else or away (a former employee's), so allowed_email_domains, read
// on the address alone, would admit it as the domain's (Google's
// OpenID Connect guide: check hd to restrict access to a domain's
// members; without hd and outside gmail.com, Google is not
// authoritative for the address).
func googleVouchesForDomain(claims map[string]any, address string) bool {
	if hd, _ := claims["hd"].(string); hd != "" {
		return true
	}
	_, domain, _ := strings.Cut(address, "@")
	domain, _ = asciiLower(domain)
	return domain == "gmail.com" || domain == "googlemail.com"
}

// Bounds of the claims kept from a provider: an address past RFC 5321's
// 254 bytes is no address, a sub past OpenID Connect Core's 255 ASCII
// characters no subject.
const (
	maxProfileName = 256
	maxEmailLen    = 254
	maxSubject     = 255
)

// profileClaim is the string claim name, or "" when it is longer than max
// bytes or holds a control or bidirectional character: the user may edit
// it at the provider, and it is kept in the user's record and copied into
// our ID tokens, userinfo and the consent page ("eve<U+202E>nimda").
func profileClaim(claims map[string]any, name string, max int) string {
	s, _ := claims[name].(string)
	if len(s) > max || strings.ContainsFunc(s, misleading) {
		return ""
	}
	return s
}

// keySetCheck checks the provider's key set as it arrives (a 200 answer
// to a request for uri), before go-oidc reads it as encoding/json does:
// the last of two members of one name, a member under any case of its
// name. A set with "keys" twice, or a key with "kid" twice, is refused,
// as the discovery document is. uri is set once the document named it.
type keySetCheck struct {
	rt  http.RoundTripper
	uri atomic.Pointer[string]
}

func (t *keySetCheck) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if u := t.uri.Load(); u == nil || resp.StatusCode != http.StatusOK || r.URL.String() != *u {
		return resp, nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if mcpparse.CheckValue(b, 0) != nil {
		return nil, errors.New("key set names a member twice, or in two cases")
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

// limitedTransport fails responses longer than max bytes.
type limitedTransport struct {
	rt  http.RoundTripper
	max int64
}

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{rc: resp.Body, left: t.max}
	return resp, nil
}

// limitedBody reads up to left bytes and fails when there are more: one
// byte past left is read to tell a body of exactly left bytes (which
// ends there) from a longer one.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, errors.New("response too large")
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return n - 1, errors.New("response too large")
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// idpCallbackURL is the exact redirect URI registered at provider name.
func (i *Issuer) idpCallbackURL(name string) string {
	return i.endpoint(pathLogin + "/" + url.PathEscape(name) + "/callback")
}

// asciiLower is s with ASCII letters lowered, and whether s is all ASCII.
func asciiLower(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return s, false
		}
	}
	return strings.ToLower(s), true
}
