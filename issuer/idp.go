package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
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
		d = strings.ToLower(strings.TrimPrefix(d, "@"))
		if d == "" || strings.ContainsAny(d, "@ /") {
			return fmt.Errorf("allowed_email_domains: %q is not a domain", p.AllowedEmailDomains[n])
		}
		domains[n] = d
	}
	p.AllowedEmailDomains = domains
	return nil
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
	client      *http.Client
	now         func() time.Time

	mu       sync.Mutex
	disc     *idpDiscovered
	failedAt time.Time
	failure  error
}

type idpDiscovered struct {
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	// issRequired: the provider's metadata says its authorization
	// responses carry iss (authorization_response_iss_parameter_supported),
	// so one without it is refused (RFC 9207 section 2.4).
	issRequired bool
	// formTarget is the CSP source of the authorization endpoint: the
	// login form's POST redirects there.
	formTarget string
}

// newIdPHTTPClient is the client for the operator's identity providers
// (login and trusted IdPs): time- and size-limited.
func newIdPHTTPClient() *http.Client {
	return &http.Client{
		Timeout:   idpTimeout,
		Transport: limitedTransport{http.DefaultTransport, idpMaxBytes},
		// The provider's endpoints answer directly; a redirect is not
		// followed to wherever it points.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func newIdPClients(cfg *Config, callback func(name string) string) map[string]*idpClient {
	client := newIdPHTTPClient()
	out := make(map[string]*idpClient, len(cfg.IdentityProviders))
	for _, p := range cfg.IdentityProviders {
		out[p.Name] = &idpClient{cfg: p, redirectURI: callback(p.Name), client: client, now: cfg.Now}
	}
	return out
}

// errIdPUnavailable: the provider's metadata could not be read.
var errIdPUnavailable = errors.New("identity provider unavailable")

// discover returns the provider's endpoints, reading its metadata once.
func (c *idpClient) discover(ctx context.Context) (*idpDiscovered, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.disc != nil {
		return c.disc, nil
	}
	if !c.failedAt.IsZero() && c.now().Sub(c.failedAt) < idpRetryAfter {
		return nil, c.failure
	}
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, c.client), c.cfg.Issuer)
	if err != nil {
		c.failedAt, c.failure = c.now(), fmt.Errorf("%w: %s: %w", errIdPUnavailable, c.cfg.Name, err)
		return nil, c.failure
	}
	ep := p.Endpoint()
	if _, err := parseIssuerURL(ep.AuthURL); err != nil || ep.TokenURL == "" {
		c.failedAt, c.failure = c.now(), fmt.Errorf("%w: %s: metadata lacks usable endpoints", errIdPUnavailable, c.cfg.Name)
		return nil, c.failure
	}
	var meta struct {
		IssParameter bool `json:"authorization_response_iss_parameter_supported"`
	}
	if err := p.Claims(&meta); err != nil {
		c.failedAt, c.failure = c.now(), fmt.Errorf("%w: %s: metadata: %w", errIdPUnavailable, c.cfg.Name, err)
		return nil, c.failure
	}
	ep.AuthStyle = oauth2.AuthStyleInHeader
	if c.cfg.ClientSecret == "" {
		ep.AuthStyle = oauth2.AuthStyleInParams
	}
	c.disc = &idpDiscovered{
		oauth: oauth2.Config{
			ClientID: c.cfg.ClientID, ClientSecret: c.cfg.ClientSecret,
			Endpoint: ep, RedirectURL: c.redirectURI, Scopes: c.cfg.Scopes,
		},
		verifier:    p.Verifier(&oidc.Config{ClientID: c.cfg.ClientID, Now: c.now}),
		issRequired: meta.IssParameter,
		formTarget:  cspSource(ep.AuthURL),
	}
	return c.disc, nil
}

// formTarget is the CSP source the login page's form for this provider
// may redirect to: the discovered authorization endpoint's origin, or the
// issuer's until the metadata was read.
func (c *idpClient) formTarget() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.disc != nil {
		return c.disc.formTarget
	}
	return cspSource(c.cfg.Issuer)
}

// idpIdentity is what an ID token says about the user, checked against
// the provider's rules.
type idpIdentity struct {
	username, subject, name, email string
	groups                         []string // mapped provider groups
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
	return c.cfg.identity(claims, tok.Subject)
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
	id := &idpIdentity{username: p.Name + ":" + value, subject: subject}
	id.name, _ = claims["name"].(string)
	id.email, _ = claims["email"].(string)
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
	if len(p.AllowedEmailDomains) > 0 {
		_, domain, ok := strings.Cut(strings.ToLower(id.email), "@")
		if !ok || !slices.Contains(p.AllowedEmailDomains, domain) {
			return nil, fmt.Errorf("%w: email domain not allowed", errIdPRefused)
		}
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

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("response too large")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// idpCallbackURL is the exact redirect URI registered at provider name.
func (i *Issuer) idpCallbackURL(name string) string {
	return i.endpoint(pathLogin + "/" + url.PathEscape(name) + "/callback")
}
