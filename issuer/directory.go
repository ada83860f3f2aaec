package issuer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Sources of directory entries.
const (
	sourceConfig = "config"
	sourceAdmin  = "admin"
	sourceDCR    = "dcr"  // Dynamic Client Registration: anyone may have made it
	sourceCIMD   = "cimd" // Client ID Metadata Document: anyone may host one
)

// directory finds users, clients and agents: the configured ones first,
// then those in the store (management API, DCR), then Client ID Metadata
// Documents. Changing entries (manage.go, agents.go) stays with the Issuer,
// which revokes what a change takes away.
type directory struct {
	cfg    *Config
	store  store.Store
	cimd   *cimdFetcher
	hashes *hashGate
	dummy  dummyPassword
	now    func() time.Time
	// wait pads a password check (dummyPassword.pad); injected by tests.
	wait func(context.Context, time.Duration) error
}

// dummyPassword is what unknown users' passwords are checked against: a
// login for a missing account must take as long as a wrong password.
type dummyPassword struct {
	mu   sync.Mutex
	cost int    // the highest bcrypt cost of a known user's hash; 0: none seen
	hash []byte // made lazily at cost (a cost-14 hash takes about a second)
}

// note records the cost of a user's password hash.
func (d *dummyPassword) note(hash string) {
	c, err := bcrypt.Cost([]byte(hash))
	if err != nil || c > MaxPasswordCost {
		return // never checked (checkPassword)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cost = max(d.cost, c)
}

// check spends the time of checking password against a hash of the
// highest cost seen (bcrypt.DefaultCost when no user is known).
func (d *dummyPassword) check(password string) {
	d.mu.Lock()
	cost := d.cost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if c, err := bcrypt.Cost(d.hash); err != nil || c != cost {
		h, err := bcrypt.GenerateFromPassword([]byte("no such user"), cost)
		if err == nil {
			d.hash = h
		}
	}
	h := d.hash
	d.mu.Unlock()
	_ = bcrypt.CompareHashAndPassword(h, []byte(password))
}

// maxPasswordPad bounds dummyPassword.pad (hashes at wildly different
// costs, a check slowed by load).
const maxPasswordPad = 5 * time.Second

// pad is how much longer a check of hash, which took took, must wait to
// take as long as a check of the dummy, at the highest cost: bcrypt's
// time doubles with each step of cost, so a user whose hash is cheaper
// (added through the admin API at bcrypt.DefaultCost, beside Caddyfile
// users hashed by `caddy hash-password` at 14) would answer in a
// fraction of the time an unknown name takes, and one attempt would tell
// that the name exists. Scaled from the check's own time, the pad
// follows the machine's load as the dummy's time does.
func (d *dummyPassword) pad(hash string, took time.Duration) time.Duration {
	c, err := bcrypt.Cost([]byte(hash))
	d.mu.Lock()
	top := cmp.Or(d.cost, bcrypt.DefaultCost)
	d.mu.Unlock()
	if err != nil || c >= top {
		return 0
	}
	return min(took*time.Duration(1<<min(top-c, 16)-1), maxPasswordPad)
}

// noteStoredUsers feeds the costs of the configured and stored users'
// hashes to the dummy password.
func (d *directory) noteStoredUsers(ctx context.Context) error {
	for _, u := range d.cfg.Users {
		d.dummy.note(u.PasswordHash)
	}
	return d.store.View(ctx, func(tx store.Tx) error {
		return usersIn(tx).each(func(u *User) error {
			d.dummy.note(u.PasswordHash)
			return nil
		})
	})
}

// validateConfig checks and normalizes the configured users,
// groups, clients, agents and resources once, at New. Slices are copied
// so the caller's Config is not modified.
func (d *directory) validateConfig() error {
	seen := map[string]bool{}
	for _, u := range d.cfg.Users {
		if u.Username == "" || seen[u.Username] {
			return fmt.Errorf("user %q: empty or repeated username", u.Username)
		}
		// As the admin API and a provider's sign-in refuse them: a sub
		// that reads as another's, or holds a store key's separator.
		if !usableName(u.Username, 200) {
			return fmt.Errorf("user %q: %s", u.Username, nameRule("username", 200))
		}
		if _, ok := documentURL(u.Username); ok {
			return fmt.Errorf("user %q: %s", u.Username, errDocumentName)
		}
		seen[u.Username] = true
		if err := CheckPasswordHash(u.PasswordHash); err != nil {
			return fmt.Errorf("user %q: password hash: %w", u.Username, err)
		}
	}
	clear(seen)
	for _, g := range d.cfg.Groups {
		if g.Name == "" || seen[g.Name] {
			return fmt.Errorf("group %q: empty or repeated name", g.Name)
		}
		seen[g.Name] = true
		for target, scopes := range g.Scopes {
			for _, sc := range scopes {
				if sc != "*" && !accesstoken.ValidScope(sc) {
					return fmt.Errorf("group %q: %s: %w", g.Name, target, errScopeToken(sc))
				}
			}
		}
	}
	clear(seen)
	clients := slices.Clone(d.cfg.Clients)
	for n := range clients {
		c := &clients[n]
		if c.ID == "" || seen[c.ID] {
			return fmt.Errorf("client %q: empty or repeated id", c.ID)
		}
		if !usableName(c.ID, 500) {
			return fmt.Errorf("client %q: %s", c.ID, nameRule("client id", 500))
		}
		if d.configuredUser(c.ID) {
			return fmt.Errorf("client %q: a user has this name", c.ID)
		}
		seen[c.ID] = true
		normalizeAuthMethod(c)
		if err := validateClientAuth(c); err != nil {
			return entryErr("client", c.ID, err)
		}
		// As the admin API refuses them (validateClient): a typo or a
		// grant the client cannot use would load and leave it without
		// the tokens the operator wrote (review s17-ops F6).
		for _, g := range c.GrantTypes {
			switch g {
			case grantAuthorizationCode, grantRefreshToken, grantClientCredentials, grantTokenExchange:
			case grantJWTBearer:
				if len(d.cfg.TrustedIdPs) == 0 {
					return fmt.Errorf("client %q: grant type %q needs a trusted_idp", c.ID, g)
				}
			default:
				return fmt.Errorf("client %q: unsupported grant type %q", c.ID, g)
			}
		}
		if c.Public() && slices.ContainsFunc(c.GrantTypes, needsConfidential) {
			return fmt.Errorf("client %q: client_credentials, token exchange and jwt-bearer need a confidential client (a secret or keys)", c.ID)
		}
		// The rules of a registered client's redirect URIs: codes go
		// nowhere in clear, nor to a host a browser reads otherwise
		// (review s16-admin F2: configured clients skipped them).
		if err := checkRedirectURICount(c.RedirectURIs); err != nil {
			return fmt.Errorf("client %q: %s", c.ID, err.Description)
		}
		if err := checkRedirectURICount(c.PostLogoutRedirectURIs); err != nil {
			return fmt.Errorf("client %q: post_logout_redirect_uris: %s", c.ID, err.Description)
		}
		for _, u := range slices.Concat(c.RedirectURIs, c.PostLogoutRedirectURIs) {
			if err := configuredRedirectURI(u); err != nil {
				return entryErr("client", c.ID, err)
			}
		}
		if err := validateIDTokenAlg(c.IDTokenAlg, idTokenAlgs(d.cfg.SigningAlg)); err != nil {
			return entryErr("client", c.ID, err)
		}
	}
	d.cfg.Clients = clients
	// Agents authenticate as clients: one id namespace, so seen carries on.
	agents := slices.Clone(d.cfg.Agents)
	for n := range agents {
		a := &agents[n]
		if seen[a.ID] {
			return fmt.Errorf("agent %q: repeated id, or a client has it", a.ID)
		}
		if d.configuredUser(a.ID) {
			return fmt.Errorf("agent %q: a user has this name", a.ID)
		}
		seen[a.ID] = true
		if err := validateAgent(a); err != nil {
			return entryErr("agent", a.ID, err)
		}
	}
	d.cfg.Agents = agents
	if err := validateIdentityProviders(d.cfg); err != nil {
		return err
	}
	resources := map[string]bool{}
	for _, r := range d.cfg.Resources {
		// First: the errors below quote the URL as written.
		if u, err := url.Parse(r.URL); err == nil {
			if err := configuredResourcePath(u); err != nil {
				return err
			}
		}
		if err := validateResourceURL(r.URL); err != nil {
			return err
		}
		// The first would win, silently: an imported snippet's scopes
		// undone by a later declaration (or ignored where it came first).
		if resources[CanonicalResource(r.URL)] {
			return fmt.Errorf("resource %q: declared more than once (also as the same URL with another case of scheme or host, its default port, or a trailing slash)", r.URL)
		}
		resources[CanonicalResource(r.URL)] = true
		for _, sc := range r.Scopes {
			if !accesstoken.ValidScope(sc) {
				return fmt.Errorf("resource %q: %w", r.URL, errScopeToken(sc))
			}
		}
		// Its tokens are bearer tokens: sent in clear, as a gateway
		// refuses to be (review s17-ops F2).
		if u, _ := url.Parse(r.URL); u.Scheme != "https" && (u.Scheme != "http" || !isLoopbackHost(u.Hostname())) {
			return fmt.Errorf("resource %q: want an https URL (http only for loopback hosts)", r.URL)
		}
	}
	return nil
}

// configuredResourcePath refuses a configured resource URL that names
// the resource otherwise than clients do, as a gateway's resource is
// refused (gateway.Config.Resource): userinfo ("https://deploy:pw@h/mcp"),
// which no client sends, since a resource's metadata names it without,
// and which every token's aud would carry to its clients and the consent
// page would show (the error names the URL without it); a dot segment,
// which every client resolves ("/x/../mcp" is /mcp to them). Either
// loaded, and the resource's clients got invalid_target.
func configuredResourcePath(u *url.URL) error {
	if u.User != nil {
		bare := *u
		bare.User = nil
		return fmt.Errorf("resource %s: written with userinfo (name@ or name:password@), which no client sends and every token's aud would carry: write it without", bare.String())
	}
	for _, seg := range strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == "." || seg == ".." {
			return fmt.Errorf("resource %q: dot segments are not allowed in the path (every client resolves them, naming another resource)", u.String())
		}
	}
	return nil
}

// normalizeAuthMethod infers the method of a client declared without one,
// so a configured secret or key is never silently ignored (an empty method
// would make the client public).
func normalizeAuthMethod(c *Client) {
	if c.TokenEndpointAuthMethod != "" {
		return
	}
	switch {
	case c.SecretHash != "":
		c.TokenEndpointAuthMethod = authClientSecretBasic
	case len(c.JWKS) > 0 || c.JWKSURI != "":
		c.TokenEndpointAuthMethod = authPrivateKeyJWT
	default:
		c.TokenEndpointAuthMethod = authNone
	}
}

// validateClientAuth checks that a client's credentials fit its method,
// and a key set as a private_key_jwt client's whatever the method: one
// beside a secret is stored too.
func validateClientAuth(c *Client) error {
	if err := validateAuthSigningAlg(c); err != nil {
		return err
	}
	if len(c.JWKS) > 0 {
		if err := checkJWKS(c.JWKS); err != nil {
			return err
		}
	}
	switch c.TokenEndpointAuthMethod {
	case authNone:
		if c.SecretHash != "" || len(c.JWKS) > 0 || c.JWKSURI != "" {
			return errors.New("a public client has no secret or keys")
		}
		if c.Introspect {
			return errors.New("a public client cannot introspect (introspection needs client authentication)")
		}
	case authClientSecretBasic, authClientSecretPost:
		if CheckSecretHash(c.SecretHash) != nil {
			return errors.New(`secret hash must be bcrypt or "sha256:<hex>"`)
		}
	case authPrivateKeyJWT:
		if (len(c.JWKS) > 0) == (c.JWKSURI != "") {
			return errors.New("private_key_jwt needs exactly one of jwks and jwks_uri")
		}
		if c.JWKSURI != "" {
			if u, err := url.Parse(c.JWKSURI); err != nil || u.Scheme != "https" || u.Host == "" {
				return errors.New("jwks_uri must be an https URL")
			}
		}
	default:
		return fmt.Errorf("unsupported token_endpoint_auth_method %q", c.TokenEndpointAuthMethod)
	}
	return nil
}

// clientShown is how the sign-in page names client id: its name (its id
// when it has none or is not found), and whether that name is the
// client's own claim (selfRegistered), not the operator's.
func (d *directory) clientShown(ctx context.Context, id string) (name string, self bool) {
	return shownAs(id, true)(d.findClient(ctx, id, true))
}

// clientHeld is clientShown from what the issuer holds: a Client ID
// Metadata Document neither cached nor remembered is not fetched, and its
// client is named by its URL. The apps page lists up to maxUserConsents
// such clients: fetching each would send a request per row, each up to
// the fetch timeout of a host the client's publisher runs, and spend the
// fetch budget of the user's address (TestAppsPageFetchesNoDocument).
func (d *directory) clientHeld(ctx context.Context, id string) (name string, self bool) {
	return shownAs(id, d.cimd.isClientID(id))(d.findClient(ctx, id, false))
}

// shownAs names client id by c, or by the id, self-registered if
// unknownSelf, when it was not found (err).
func shownAs(id string, unknownSelf bool) func(c *Client, err error) (string, bool) {
	return func(c *Client, err error) (string, bool) {
		switch {
		case err != nil:
			return id, unknownSelf && errors.Is(err, errNotHeld)
		case c.Name != "":
			return c.Name, c.selfRegistered()
		}
		return id, c.selfRegistered()
	}
}

// idWithheld is an error of a failed store read (not a missing entry) by
// a client id a request named, read without that id: the stores quote the
// key they read (%q), and a caller that swapped its credentials (the
// secret in the id's place, as in a deployment's settings) had its secret
// written to the error log when the database failed during the lookup
// (a connection ended: seen on the binary), where an unknown id is never
// named (clientAuthFailed).
type idWithheld struct {
	err error
	id  string
}

func (e idWithheld) Error() string {
	return strings.ReplaceAll(e.err.Error(), strconv.Quote(e.id), `"(the client id)"`)
}

func (e idWithheld) Unwrap() error { return e.err }

// errNotHeld: a Client ID Metadata Document findClient was not to fetch.
var errNotHeld = ErrInvalidClient.WithDescription("client metadata document not held")

// lookupClient finds a client by id: configured clients, then the store
// (admin/DCR), then, for an https URL with a path, a Client ID Metadata
// Document via cimdFetcher.fetch. Unknown -> ErrInvalidClient-wrapped error.
func (d *directory) lookupClient(ctx context.Context, id string) (*Client, error) {
	return d.findClient(ctx, id, true)
}

// findClient is lookupClient; without fetch, a Client ID Metadata Document
// comes only from the cache or memory (cimdFetcher.held), else errNotHeld.
func (d *directory) findClient(ctx context.Context, id string, fetch bool) (*Client, error) {
	if id == "" {
		return nil, ErrInvalidClient.WithDescription("client_id is required")
	}
	for _, c := range d.cfg.Clients {
		if c.ID == id {
			c.Source = sourceConfig
			return &c, nil
		}
	}
	var c *Client
	err := d.store.View(ctx, func(tx store.Tx) error {
		var err error
		c, err = clientsIn(tx).get(id)
		return err
	})
	switch {
	case err == nil:
		return c, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("look up client: %w", idWithheld{err, id})
	}
	// An agent authenticates as itself; a disabled one cannot.
	a, aerr := d.lookupAgent(ctx, id)
	switch {
	case aerr == nil:
		return agentClient(a), nil
	case errors.Is(aerr, errAgentDisabled):
		return nil, ErrInvalidClient.WithDescription("agent disabled").Wrap(aerr)
	case !errors.Is(aerr, store.ErrNotFound):
		return nil, fmt.Errorf("look up agent: %w", idWithheld{aerr, id})
	case d.cimd.isClientID(id) && !fetch:
		if c, ok := d.cimd.held(ctx, id); ok {
			return c, nil
		}
		return nil, errNotHeld
	case d.cimd.isClientID(id):
		return d.cimd.fetch(ctx, id)
	}
	return nil, ErrInvalidClient.WithDescription("unknown client").Wrap(err)
}

// lookupUser finds a user by username: configuration, then the store.
// Unknown or disabled -> store.ErrNotFound-wrapped error.
func (d *directory) lookupUser(ctx context.Context, username string) (*User, error) {
	u, err := d.findUser(ctx, username)
	if err != nil {
		return nil, err
	}
	if u.Disabled {
		return nil, fmt.Errorf("user %q disabled: %w", username, store.ErrNotFound)
	}
	p := d.identityProvider(u.IdentityProvider)
	switch {
	case p == nil:
	case !d.now().Before(u.LastLogin.Add(p.Recheck)):
		// The provider has not vouched for the user within recheck: the
		// user signs in there again, which re-reads the groups.
		return nil, fmt.Errorf("user %q: %w", username, errSignInAgain)
	case !p.emailAdmitted(u.Email):
		// Today's allowed_email_domains, as today's group mapping
		// (storedUser): a reload that took the user's domain out (or
		// listed domains where there were none) admits the user no
		// more, as a sign-in would not.
		return nil, fmt.Errorf("user %q: %w", username, errDomainNotAllowed)
	}
	return u, nil
}

// errDomainNotAllowed: an identity provider's user whose address is
// outside its allowed_email_domains as configured now.
var errDomainNotAllowed = fmt.Errorf("email domain not allowed by the identity provider's allowed_email_domains: %w", store.ErrNotFound)

// errSignInAgain: an identity provider's user whose last sign-in there
// is older than the provider's recheck interval.
var errSignInAgain = fmt.Errorf("last sign-in at the identity provider is too old: %w", store.ErrNotFound)

// identityProvider returns the configured provider name, or nil.
func (d *directory) identityProvider(name string) *IdentityProvider {
	if name == "" {
		return nil
	}
	for n := range d.cfg.IdentityProviders {
		if d.cfg.IdentityProviders[n].Name == name {
			return &d.cfg.IdentityProviders[n]
		}
	}
	return nil
}

// population is p and the other configured identity providers at p's
// issuer and tenant: applications registered at one provider, whose
// users are one population, in which a sub names one person (OpenID
// Connect Core section 5.7).
func (d *directory) population(p *IdentityProvider) []*IdentityProvider {
	out := []*IdentityProvider{p}
	for n := range d.cfg.IdentityProviders {
		if q := &d.cfg.IdentityProviders[n]; q.Name != p.Name && q.Issuer == p.Issuer && q.Tenant == p.Tenant {
			out = append(out, q)
		}
	}
	return out
}

// findUser is lookupUser that also returns disabled users (management).
func (d *directory) findUser(ctx context.Context, username string) (*User, error) {
	if username == "" {
		return nil, fmt.Errorf("user: %w", store.ErrNotFound)
	}
	for _, u := range d.cfg.Users {
		if u.Username == username {
			u.Source = sourceConfig
			return &u, nil
		}
	}
	var u *User
	err := d.store.View(ctx, func(tx store.Tx) error {
		var err error
		u, err = usersIn(tx).get(username)
		return err
	})
	if err != nil {
		return nil, entryErr("user", username, err)
	}
	return d.storedUser(u)
}

// storedUser completes a user read from the store: an identity
// provider's user has the local groups today's mapping gives the
// provider groups of the last login, and exists only while the provider
// is configured.
func (d *directory) storedUser(u *User) (*User, error) {
	if u.IdentityProvider == "" {
		u.Source = sourceAdmin
		return u, nil
	}
	u.Source = sourceIdP
	p := d.identityProvider(u.IdentityProvider)
	if p == nil {
		return nil, fmt.Errorf("user %q: identity provider %q is not configured: %w", u.Username, u.IdentityProvider, store.ErrNotFound)
	}
	u.Groups = p.localGroups(u.IdPGroups)
	return u, nil
}

// lookupAgent finds an enabled agent by id: configuration, then the store.
// Unknown or disabled -> store.ErrNotFound-wrapped error.
func (d *directory) lookupAgent(ctx context.Context, id string) (*Agent, error) {
	a, err := d.findAgent(ctx, id)
	if err != nil {
		return nil, err
	}
	if a.Disabled {
		return nil, fmt.Errorf("agent %q: %w", id, errAgentDisabled)
	}
	return a, nil
}

// errAgentDisabled is a disabled agent's lookup error: not found for
// every purpose, but said as it is to the operator and the agent.
var errAgentDisabled = fmt.Errorf("agent disabled: %w", store.ErrNotFound)

// findAgent is lookupAgent that also returns disabled agents (management,
// names on pages).
func (d *directory) findAgent(ctx context.Context, id string) (*Agent, error) {
	if id == "" {
		return nil, fmt.Errorf("agent: %w", store.ErrNotFound)
	}
	for _, a := range d.cfg.Agents {
		if a.ID == id {
			a.Source = sourceConfig
			return &a, nil
		}
	}
	var a *Agent
	err := d.store.View(ctx, func(tx store.Tx) error {
		var err error
		a, err = agentsIn(tx).get(id)
		return err
	})
	if err != nil {
		return nil, entryErr("agent", id, err)
	}
	a.Source = sourceAdmin
	return a, nil
}

// checkPassword verifies a password against a user's bcrypt hash in
// constant time (and spends the same time for unknown or disabled users),
// in a slot of the hash gate (known: the account's password checked
// right from this address lately, hashGate). An error (errHashBusy, or
// ctx's) means no check ran.
func (d *directory) checkPassword(ctx context.Context, u *User, password string, known bool) (ok bool, err error) {
	err = d.hashes.run(ctx, known, func() {
		// A hash costlier than MaxPasswordCost (stored by an earlier
		// version) is never run: it would hold the slot for minutes.
		if u == nil || u.Disabled || CheckPasswordHash(u.PasswordHash) != nil {
			d.dummy.check(password)
			return
		}
		// A hash stored through another instance's admin API may cost
		// more than any this one has seen: from now on the dummy costs
		// as much (review s17-fresh F2).
		d.dummy.note(u.PasswordHash)
		start := time.Now()
		ok = bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) == nil
		if pad := d.dummy.pad(u.PasswordHash, time.Since(start)); !ok && pad > 0 {
			// Only a failure waits: a success says more than its time
			// does. It waits as the dummy's check runs: in the gate's
			// slot, and to the end when the caller has gone away. A
			// slot (and a place in flight) freed sooner would tell a
			// probe sent meanwhile that the name exists (review
			// s17-fresh F1); an unknown name holds one as long.
			_ = d.wait(context.WithoutCancel(ctx), pad)
		}
	})
	return ok && err == nil, err
}

// agentFor loads the enabled agent actor and checks it may act for the
// users of clientID. Errors are invalid_grant.
func (d *directory) agentFor(ctx context.Context, actor, clientID string) (*Agent, error) {
	a, err := d.lookupAgent(ctx, actor)
	if err != nil {
		return nil, ErrInvalidGrant.WithDescription("the actor is unknown or disabled").Wrap(err)
	}
	if !a.allowsClient(clientID) {
		return nil, ErrInvalidGrant.WithDescription("the actor may not act for this client")
	}
	return a, nil
}

// checkStoredIDs refuses a configured user, client or agent whose name a
// stored principal of any kind already has (added through the admin API
// or DCR, or for a user by an identity provider's sign-in). Of the same
// kind, the configured entry would shadow the stored one, and removing
// the entry from the configuration would bring the stored one back, old
// credentials and all; of another kind, the two would share a token's
// sub, client_id or act.sub (see userNameTaken), and a client and an
// agent of one id would shadow each other at the token endpoint. It also
// refuses stored principals in a configured identity provider's
// namespace.
func (d *directory) checkStoredIDs(ctx context.Context) error {
	return d.store.View(ctx, func(tx store.Tx) error { return d.storedIDsClash(tx, d.cfg.IdentityProviders) })
}

// storedIDsClash is checkStoredIDs in tx, looking for stored principals
// in the namespaces of providers only.
func (d *directory) storedIDsClash(tx store.Tx, providers []IdentityProvider) error {
	kinds := []struct {
		kind       string
		configured []string
		stored     func(string) (bool, error)
	}{
		{"user", d.configuredUserNames(), usersIn(tx).has},
		{"client", d.configuredClientIDs(), clientsIn(tx).has},
		{"agent", d.configuredAgentIDs(), agentsIn(tx).has},
	}
	for _, c := range kinds {
		for _, name := range c.configured {
			for _, s := range kinds {
				switch taken, err := s.stored(name); {
				case err != nil:
					return fmt.Errorf("check %s names: %w", c.kind, err)
				case taken && s.kind == c.kind:
					return fmt.Errorf("%s %q: one of this name is also stored (added through the admin API, or for a user by the sign-in of an identity provider no longer configured); %s", c.kind, name, removeFirst)
				case taken:
					return fmt.Errorf("%s %q: a stored %s has this name; %s", c.kind, name, s.kind, removeFirst)
				}
			}
		}
	}
	if len(providers) == 0 {
		return nil
	}
	// Stored clients and agents in a provider's namespace (added
	// before the provider was configured).
	inNamespace := func(kind, id string) error {
		if p := idpOfUsername(providers, id); p != nil {
			return fmt.Errorf("stored %s %q: names starting with %q belong to identity_provider %s's users; remove the stored %s through the admin API before configuring the provider", kind, id, p.Name+":", p.Name, kind)
		}
		return nil
	}
	if err := clientsIn(tx).each(func(c *Client) error { return inNamespace("client", c.ID) }); err != nil {
		return err
	}
	if err := agentsIn(tx).each(func(a *Agent) error { return inNamespace("agent", a.ID) }); err != nil {
		return err
	}
	// Local users (admin API) named in a provider's namespace, which
	// the provider's user of that name could not sign in beside.
	return usersIn(tx).each(func(u *User) error {
		if u.IdentityProvider != "" {
			return nil
		}
		return inNamespace("local user", u.Username)
	})
}

// removeFirst tells an operator how to resolve a clash between the
// configuration and what the store holds: the admin API runs only with a
// configuration that loads.
const removeFirst = "remove the stored one through the admin API (caddy mcp-auth) of an instance still running the old configuration, or start once without the clashing configuration entry (which ends that entry's grants, sessions and consents), remove the stored one, then restore the entry"

// userNameTaken reports whether a user (configured or stored) has name.
// Users and clients or agents never share a name: a token's sub is the
// user's name or the client's id, and policies that compare it (argument
// rules with {token.sub}, forwarded identity headers) must not take one
// for the other.
func (d *directory) userNameTaken(tx store.Tx, name string) (bool, error) {
	if d.configuredUser(name) {
		return true, nil
	}
	return usersIn(tx).has(name)
}

// clientIDTaken reports whether a client or an agent (configured or
// stored) has id (see userNameTaken).
func (d *directory) clientIDTaken(tx store.Tx, id string) (bool, error) {
	if d.configuredClient(id) || d.configuredAgent(id) {
		return true, nil
	}
	if taken, err := clientsIn(tx).has(id); taken || err != nil {
		return taken, err
	}
	return agentsIn(tx).has(id)
}

func (d *directory) configuredUserNames() []string {
	names := make([]string, len(d.cfg.Users))
	for n, u := range d.cfg.Users {
		names[n] = u.Username
	}
	return names
}

func (d *directory) configuredClientIDs() []string {
	ids := make([]string, len(d.cfg.Clients))
	for n, c := range d.cfg.Clients {
		ids[n] = c.ID
	}
	return ids
}

func (d *directory) configuredAgentIDs() []string {
	ids := make([]string, len(d.cfg.Agents))
	for n, a := range d.cfg.Agents {
		ids[n] = a.ID
	}
	return ids
}

func (d *directory) configuredAgent(id string) bool {
	return slices.ContainsFunc(d.cfg.Agents, func(a Agent) bool { return a.ID == id })
}

func (d *directory) configuredUser(name string) bool {
	return slices.ContainsFunc(d.cfg.Users, func(u User) bool { return u.Username == name })
}

func (d *directory) configuredClient(id string) bool {
	return slices.ContainsFunc(d.cfg.Clients, func(c Client) bool { return c.ID == id })
}

// agentName is the display name of an agent, or its id.
func (d *directory) agentName(ctx context.Context, id string) string {
	if a, err := d.findAgent(ctx, id); err == nil && a.Name != "" {
		return a.Name
	}
	return id
}

// snapshot is what ApplyConfigChanges compares: the configured entries
// and fingerprints of their credentials.
func (d *directory) snapshot() directorySnapshot {
	s := directorySnapshot{Users: map[string]string{}, Clients: map[string]string{}, Agents: map[string]string{}}
	for _, u := range d.cfg.Users {
		s.Users[u.Username] = fingerprint(u.PasswordHash)
	}
	s.ClientLimits = map[string]clientLimits{}
	for _, c := range d.cfg.Clients {
		s.Clients[c.ID] = credentialFingerprint(c.SecretHash, c.JWKS, c.JWKSURI)
		s.ClientLimits[c.ID] = clientLimits{GrantTypes: c.GrantTypes, Resources: c.Resources, Scopes: c.Scopes, DPoP: c.DPoPBoundAccessTokens}
	}
	s.AgentLimits = map[string]agentLimits{}
	for _, a := range d.cfg.Agents {
		s.Agents[a.ID] = credentialFingerprint(a.SecretHash, a.JWKS, a.JWKSURI)
		s.AgentLimits[a.ID] = limitsOf(&a)
	}
	s.IdentityProviders, s.IdentityProviderTenants = map[string]string{}, map[string]string{}
	gl := &groupLimits{Groups: map[string]map[string][]string{}, Users: map[string][]string{}, Providers: map[string]map[string][]string{}}
	for _, p := range d.cfg.IdentityProviders {
		s.IdentityProviders[p.Name] = fingerprint(p.Issuer + "\x00" + p.ClientID)
		s.IdentityProviderTenants[p.Name] = fingerprint(p.Tenant)
		gl.Providers[p.Name] = p.GroupMap
	}
	for _, g := range d.cfg.Groups {
		gl.Groups[g.Name] = g.Scopes
	}
	for _, u := range d.cfg.Users {
		gl.Users[u.Username] = u.Groups
	}
	s.GroupLimits = gl
	return s
}

// errScopeToken refuses a configured scope that is not one RFC 6749
// scope-token: the token's scope claim joins scopes with spaces, so
// "notes:read notes:admin", one scope here, would be read as two by every
// resource server.
func errScopeToken(s string) error {
	return fmt.Errorf("scope %q: want one RFC 6749 scope-token (printable ASCII without spaces, quotes or backslashes)", s)
}
