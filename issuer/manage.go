package issuer

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Errors of the management API. Callers test them with errors.Is; a
// missing entry is store.ErrNotFound.
var (
	// ErrConfigured: the entry is declared in the Caddyfile and can only be
	// changed there.
	ErrConfigured = errors.New("declared in the Caddyfile; change it there")
	// ErrInvalidEntry: the entry does not validate.
	ErrInvalidEntry = errors.New("invalid entry")
)

func invalidEntry(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidEntry, fmt.Sprintf(format, a...))
}

// entryErr is err about the user, client or agent name, in the operator's
// words: `user "bob" not found`, not the store's key path. errors.Is sees
// err.
func entryErr(kind, name string, err error) error {
	return &entryError{kind: kind, name: name, err: err}
}

type entryError struct {
	kind, name string
	err        error
}

func (e *entryError) Error() string {
	switch {
	case errors.Is(e.err, store.ErrNotFound):
		return fmt.Sprintf("%s %q not found", e.kind, e.name)
	case errors.Is(e.err, store.ErrAlreadyExists):
		return fmt.Sprintf("%s %q already exists", e.kind, e.name)
	}
	return fmt.Sprintf("%s %q: %v", e.kind, e.name, e.err)
}

func (e *entryError) Unwrap() error { return e.err }

// notFound is a missing entry in the operator's words alone: not the
// store's (its key, "store: not found"), which differ between bbolt and
// PostgreSQL. errors.Is sees store.ErrNotFound.
type notFound string

func (e notFound) Error() string { return string(e) }
func (e notFound) Unwrap() error { return store.ErrNotFound }

// PutUser creates a runtime-managed user. PasswordHash must be a bcrypt
// hash (the output of `caddy hash-password`). A user of that name is
// store.ErrAlreadyExists, decided in the write's transaction, so that of
// two concurrent creations one fails rather than both being told their
// password took (changing one is SetPassword, which also signs out).
func (i *Issuer) PutUser(ctx context.Context, u User) error {
	if !usableName(u.Username, 200) {
		return invalidEntry("%s", nameRule("username", 200))
	}
	if _, ok := documentURL(u.Username); ok {
		return invalidEntry("user %q: %s", u.Username, errDocumentName)
	}
	if i.dir.configuredUser(u.Username) {
		return entryErr("user", u.Username, ErrConfigured)
	}
	if p := idpOfUsername(i.cfg.IdentityProviders, u.Username); p != nil {
		return invalidEntry("user %q: names starting with %q belong to identity provider %s", u.Username, p.Name+":", p.Name)
	}
	if err := CheckPasswordHash(u.PasswordHash); err != nil {
		return invalidEntry("user %q: password hash: %v", u.Username, err)
	}
	for _, g := range u.Groups {
		if !slices.ContainsFunc(i.cfg.Groups, func(cg Group) bool { return cg.Name == g }) {
			return invalidEntry("user %q: unknown group %q", u.Username, g)
		}
	}
	u.Source = sourceAdmin
	i.dir.dummy.note(u.PasswordHash)
	defer i.localUsers.forget()
	return i.store.Update(ctx, func(tx store.Tx) error {
		if err := i.appliedNameClash(tx, principalUser, u.Username); err != nil {
			return err
		}
		switch taken, err := i.dir.clientIDTaken(tx, u.Username); {
		case err != nil:
			return err
		case taken:
			return invalidEntry("user %q: a client or agent has this id", u.Username)
		}
		users := usersIn(tx)
		// An identity provider's user (of a provider since removed) is
		// deleted first, so the new account inherits none of its grants.
		switch old, err := users.get(u.Username); {
		case err == nil && old.IdentityProvider != "":
			return invalidEntry("user %q: an identity provider's user has this name; delete it first", u.Username)
		case err == nil:
			return entryErr("user", u.Username, store.ErrAlreadyExists)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		return users.put(&u)
	})
}

// Users lists configured and runtime-managed users, by name, without
// their password hashes.
func (i *Issuer) Users(ctx context.Context) ([]User, error) {
	var out []User
	for _, u := range i.cfg.Users {
		u.Source = sourceConfig
		out = append(out, u)
	}
	err := i.store.View(ctx, func(tx store.Tx) error {
		return usersIn(tx).each(func(u *User) error {
			if i.dir.configuredUser(u.Username) {
				return nil
			}
			if su, err := i.dir.storedUser(u); err == nil {
				u = su
			} else {
				u.Source = sourceIdP // of a provider no longer configured
			}
			out = append(out, *u)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	for n := range out {
		out[n].PasswordHash = ""
	}
	slices.SortFunc(out, func(a, b User) int { return cmp.Compare(a.Username, b.Username) })
	return out, nil
}

// appliedNameClash refuses name to a new entry of kind (PutUser,
// PutClient, PutAgent) when the configuration last applied to the store
// under this issuer URL declares it, as a principal of any kind or in
// an identity provider's namespace, though this one does not: an
// instance sharing the store reloaded first (a rolling reload), or a
// reload of this process is starting. Stored, the entry would hide
// behind the configured one, and that configuration would not start
// again (checkStoredIDs). Checked in the write's transaction, as
// ApplyConfigChanges checks the store in its own: of the two, the later
// sees the other.
func (i *Issuer) appliedNameClash(tx store.Tx, kind, name string) error {
	applied, err := configIn(tx).get(i.URL())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	}
	for _, d := range []struct {
		kind  string
		names map[string]string
	}{{principalUser, applied.Users}, {principalClient, applied.Clients}, {principalAgent, applied.Agents}} {
		switch _, ok := d.names[name]; {
		case ok && d.kind == kind:
			return entryErr(kind, name, ErrConfigured)
		case ok:
			return invalidEntry("%s %q: a configured %s has this name", kind, name, d.kind)
		}
	}
	if prefix, _, ok := strings.Cut(name, ":"); ok {
		if _, ok := applied.IdentityProviders[prefix]; ok {
			return invalidEntry("%s %q: names starting with %q belong to identity provider %s's users", kind, name, prefix+":", prefix)
		}
	}
	return nil
}

// DeleteUser removes a runtime-managed user, revokes its grants and
// deletes its consents and login sessions, so a later user of the same
// name inherits nothing.
func (i *Issuer) DeleteUser(ctx context.Context, name string) error {
	if i.dir.configuredUser(name) {
		return entryErr("user", name, ErrConfigured)
	}
	if err := i.revokeAhead(ctx, userGrants(name), userExists(name)); err != nil {
		return err
	}
	return i.store.Update(ctx, func(tx store.Tx) error {
		u, err := usersIn(tx).get(name)
		if err != nil {
			return entryErr("user", name, err)
		}
		if err := usersIn(tx).remove(name); err != nil {
			return entryErr("user", name, err)
		}
		if err := idpDisabledIn(tx).forget(u); err != nil {
			return err
		}
		return forgetUser(tx, name, i.revocation())
	})
}

// revokeBatch is how many grants revokeAhead revokes per transaction.
const revokeBatch = 50

// revokeAhead revokes the grants sel selects in transactions of
// revokeBatch grants, before the one transaction that ends a principal
// and revokes what is left: on PostgreSQL each grant revoked costs about
// ten statements, and revoking all of them in that transaction passed
// its time bound (twice postgres.Options.Timeout) at about 10,000
// grants, which a user signing in 300 times a minute, or a service
// client taking a token every 0.2 s, holds within the hour its access
// tokens live: removing, disabling or re-keying it failed every time
// with 503, and what it held stayed valid. Each batch first runs check,
// the change's own refusals, so that a refused change revokes nothing.
// The batches walk the index once (revokeSome); a grant created meanwhile
// is the change's own transaction's to revoke.
func (i *Issuer) revokeAhead(ctx context.Context, sel grantSelection, check func(store.Tx) error) error {
	if sel.user != nil {
		return i.revokeAheadListed(ctx, sel, check)
	}
	for from, more := "", true; more; {
		start := from // the same on every run of the Update
		err := i.store.Update(ctx, func(tx store.Tx) (err error) {
			if err := check(tx); err != nil {
				return err
			}
			from, more, err = grantsIn(tx).revokeSome(sel, i.revocation().until, revokeBatch, start)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// revokeAheadListed is revokeAhead for a selection of users
// (grantSelection.user) among every user's index entries: it lists them
// once, before the batches, keeping the entries of the users selected,
// rather than each batch walking every user's entries from their front
// to where the last stopped (on PostgreSQL, reading them all), which
// took seconds for tens of thousands of grants of users not selected.
func (i *Issuer) revokeAheadListed(ctx context.Context, sel grantSelection, check func(store.Tx) error) error {
	var keys []string
	err := i.store.View(ctx, func(tx store.Tx) (err error) {
		keys = nil
		index := grantIndexIn(tx)
		if done, err := index.complete(); err != nil || !done {
			return err // incomplete: the change's own transaction scans
		}
		keys, err = index.selectedKeys(sel)
		return err
	})
	if err != nil {
		return err
	}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), revokeReads*revokeBatch)]
		read := 0
		err := i.store.Update(ctx, func(tx store.Tx) (err error) {
			if err := check(tx); err != nil {
				return err
			}
			read, err = grantsIn(tx).revokeListed(sel, i.revocation().until, revokeBatch, batch)
			return err
		})
		if err != nil {
			return err
		}
		keys = keys[read:]
	}
	return nil
}

// userExists refuses a user the store does not hold (revokeAhead's check).
func userExists(name string) func(store.Tx) error {
	return func(tx store.Tx) error {
		if _, err := usersIn(tx).get(name); err != nil {
			return entryErr("user", name, err)
		}
		return nil
	}
}

// SetPassword stores a new bcrypt hash (hash, not the password), ends the
// user's login sessions and revokes the user's grants (signOutUser).
func (i *Issuer) SetPassword(ctx context.Context, name, bcryptHash string) error {
	if i.dir.configuredUser(name) {
		return entryErr("user", name, ErrConfigured)
	}
	if err := CheckPasswordHash(bcryptHash); err != nil {
		return invalidEntry("password hash: %v", err)
	}
	i.dir.dummy.note(bcryptHash)
	passworded := func(tx store.Tx) (*User, error) {
		u, err := usersIn(tx).get(name)
		if err != nil {
			return nil, entryErr("user", name, err)
		}
		if u.IdentityProvider != "" {
			return nil, invalidEntry("user %q signs in at identity provider %s and has no password", name, u.IdentityProvider)
		}
		return u, nil
	}
	if err := i.revokeAhead(ctx, userGrants(name), func(tx store.Tx) error { _, err := passworded(tx); return err }); err != nil {
		return err
	}
	return i.store.Update(ctx, func(tx store.Tx) error {
		users := usersIn(tx)
		u, err := passworded(tx)
		if err != nil {
			return err
		}
		u.PasswordHash = bcryptHash
		if err := users.put(u); err != nil {
			return err
		}
		return signOutUser(tx, name, i.revocation())
	})
}

// DisableUser disables a stored user, one an identity provider's sign-in
// created included: it cannot sign in, at its provider either, until
// enabled, and its login sessions and grants end (signOutUser). Removing
// a provider's user only signs it out, as its next sign-in there creates
// it again (review s16-idp F5).
func (i *Issuer) DisableUser(ctx context.Context, name string) error {
	return i.setUserDisabled(ctx, name, true)
}

// EnableUser enables a disabled stored user. Revoked grants stay revoked.
func (i *Issuer) EnableUser(ctx context.Context, name string) error {
	return i.setUserDisabled(ctx, name, false)
}

func (i *Issuer) setUserDisabled(ctx context.Context, name string, disabled bool) error {
	if i.dir.configuredUser(name) {
		return entryErr("user", name, ErrConfigured)
	}
	if disabled {
		if err := i.revokeAhead(ctx, userGrants(name), userExists(name)); err != nil {
			return err
		}
	}
	return i.store.Update(ctx, func(tx store.Tx) error {
		users := usersIn(tx)
		u, err := users.get(name)
		if err != nil {
			return entryErr("user", name, err)
		}
		u.Disabled = disabled
		if err := users.put(u); err != nil {
			return err
		}
		if !disabled {
			return nil
		}
		if err := idpDisabledIn(tx).add(u); err != nil {
			return err
		}
		others, err := i.sameSubAccounts(tx, u)
		if err != nil {
			return err
		}
		return signOutUsers(tx, append(others, name), i.revocation())
	})
}

// sameSubAccounts names u's person's other accounts at its provider and
// at the other providers of its population (directory.population): the
// same sub and population under another name that a user_claim other
// than sub gave, now or under an earlier user_claim, or that another
// application registered at the same provider gave, and at such a
// sibling the account of u's user_claim value, which a provider whose
// sub is per application gave another sub (sameNameAtSibling). Disabling u ends
// their sessions and grants too, as their sign-ins are refused
// (disabledUnderAnotherName).
func (i *Issuer) sameSubAccounts(tx store.Tx, u *User) ([]string, error) {
	p := i.dir.identityProvider(u.IdentityProvider)
	if p == nil {
		return nil, nil
	}
	var names []string
	for _, q := range i.dir.population(p) {
		err := usersIn(tx).t.list(q.Name+":", func(name string, s *storedUser) error {
			if name != u.Username && s.IdentityProvider == q.Name && s.IdPSubject == u.IdPSubject &&
				(s.IdPIssuer == "" || u.IdPIssuer == "" || s.IdPIssuer == u.IdPIssuer && s.IdPTenant == u.IdPTenant) {
				names = append(names, name)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		// The account of the same user_claim value at a sibling whose
		// sub for the person is another (sameNameAtSibling).
		value, ok := strings.CutPrefix(u.Username, p.Name+":")
		if q.Name == p.Name || q.UserClaim != p.UserClaim || !ok || slices.Contains(names, q.Name+":"+value) {
			continue
		}
		switch s, err := usersIn(tx).get(q.Name + ":" + value); {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return nil, err
		case s.IdentityProvider == q.Name && (s.IdPIssuer == "" || u.IdPIssuer == "" || s.IdPIssuer == u.IdPIssuer && s.IdPTenant == u.IdPTenant):
			names = append(names, s.Username)
		}
	}
	return names, nil
}

// PutClient creates a runtime-managed client. A confidential client's
// SecretHash is bcrypt or "sha256:<hex>" (RotateClientSecret makes one); a
// method left empty is inferred from the credentials given. A stored
// client of that id (admin, DCR, CIMD) is store.ErrAlreadyExists, decided
// in the write's transaction: of two concurrent creations one fails,
// rather than both answering a secret of which only one works.
func (i *Issuer) PutClient(ctx context.Context, c Client) error {
	if err := i.checkClient(&c, false); err != nil {
		return err
	}
	c.Source, c.ExpiresAt = sourceAdmin, time.Time{}
	return i.store.Update(ctx, func(tx store.Tx) error {
		if err := i.appliedNameClash(tx, principalClient, c.ID); err != nil {
			return err
		}
		switch taken, err := agentsIn(tx).has(c.ID); {
		case err != nil:
			return err
		case taken:
			return invalidEntry("client %q: an agent has this id", c.ID)
		}
		switch taken, err := i.dir.userNameTaken(tx, c.ID); {
		case err != nil:
			return err
		case taken:
			return invalidEntry("client %q: a user has this name", c.ID)
		}
		clients := clientsIn(tx)
		switch _, err := clients.get(c.ID); {
		case err == nil:
			return entryErr("client", c.ID, store.ErrAlreadyExists)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		c.CreatedAt = i.now()
		return clients.put(&c)
	})
}

// errSelfRegistered: the client registered itself (Dynamic Client
// Registration); its registration is its own. It answers 409.
var errSelfRegistered = errors.New("registered by the client itself (dynamic client registration), not through the admin API; remove it, and add it through the admin API to manage it here")

// UpdateClient replaces the registration of a client added with
// PutClient by c (c.ID names it) and returns it as stored, without its
// secret hash. It keeps the client's secret: c.SecretHash must be empty;
// a client that authenticates with a secret and still does keeps its own,
// one that switches to none or private_key_jwt drops it, and one without a
// secret (public, or private_key_jwt) cannot switch to a secret method
// here, which would have to make a secret and show it (remove the client
// and add it again: PutClient). The method must be given unless keys are
// (then private_key_jwt).
//
// What the client holds and still fits the new registration stays: when
// the registration is narrower in anything a grant, a token or a code
// rests on (registrationNarrowed: credentials, grant types, resources,
// scopes), every grant the client holds is revoked as by DeleteClient,
// and codes and token requests from before are refused. A change of name,
// redirect URIs or introspect alone revokes nothing, but a removed
// redirect URI refuses every code issued before the change
// (redirectsPrincipal) and every authorization request still pending for
// that URI.
//
// A configured client is ErrConfigured, a missing one store.ErrNotFound,
// a self-registered one errSelfRegistered; they are decided, and the
// change made, in one transaction, so a concurrent removal or update is
// wholly before or after it.
func (i *Issuer) UpdateClient(ctx context.Context, c Client) (Client, error) {
	out, _, err := i.UpdateClientIfMatch(ctx, c, nil)
	return out, err
}

// ErrClientChanged: UpdateClientIfMatch's etag is not the stored
// client's (someone changed it since it was read).
var ErrClientChanged = errors.New("the client changed since it was read")

// ClientETag names a client's stored registration as it is now (an HTTP
// entity tag): any change to it, the secret's rotation included, changes
// it.
func ClientETag(c Client) string {
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`
}

// UpdateClientIfMatch is UpdateClient on the condition that the stored
// client's ClientETag is one of etags (none: no condition; a weak tag
// never matches): ErrClientChanged otherwise, with nothing changed. It
// returns the new ClientETag too.
func (i *Issuer) UpdateClientIfMatch(ctx context.Context, c Client, etags []string) (Client, string, error) {
	if c.SecretHash != "" {
		return Client{}, "", invalidEntry("client %q: an update keeps the client's secret; rotate it with RotateClientSecret", c.ID)
	}
	if c.TokenEndpointAuthMethod == "" && len(c.JWKS) == 0 && c.JWKSURI == "" {
		return Client{}, "", invalidEntry("client %q: token_endpoint_auth_method is required", c.ID)
	}
	if err := i.checkClient(&c, true); err != nil {
		return Client{}, "", err
	}
	// The update as the store is now: the stored client and c as it
	// would be stored, or why it is refused.
	updated := func(tx store.Tx) (old, cur *Client, err error) {
		old, err = clientsIn(tx).get(c.ID)
		if err != nil {
			return nil, nil, entryErr("client", c.ID, err)
		}
		if old.Source != sourceAdmin {
			return nil, nil, entryErr("client", c.ID, errSelfRegistered)
		}
		if etags != nil && !slices.Contains(etags, ClientETag(*old)) {
			return nil, nil, ErrClientChanged
		}
		cur = new(Client)
		*cur = c // fn may run again: c stays as given
		cur.Source, cur.CreatedAt, cur.ExpiresAt = old.Source, old.CreatedAt, old.ExpiresAt
		// Not in an admin client's registration; kept as it is.
		cur.ApplicationType = old.ApplicationType
		if secretMethod(cur.TokenEndpointAuthMethod) {
			if !secretMethod(old.TokenEndpointAuthMethod) {
				return nil, nil, invalidEntry("client %q has no secret, and an update makes none: to give it one, remove the client and add it again (the answer holds the secret)", c.ID)
			}
			cur.SecretHash = old.SecretHash
			if err := validateClientAuth(cur); err != nil {
				return nil, nil, invalidEntry("client %q: %v", c.ID, err)
			}
		}
		return old, cur, nil
	}
	// A narrowing revokes every grant of the client: ahead, in batches,
	// as removing the client does (revokeAhead), while the update is
	// still one the store would make and still narrows.
	err := i.revokeAhead(ctx, clientGrants(c.ID), func(tx store.Tx) error {
		old, cur, err := updated(tx)
		if err == nil && !registrationNarrowed(old, cur) {
			return errNotNarrowed
		}
		return err
	})
	if err != nil && !errors.Is(err, errNotNarrowed) {
		return Client{}, "", err
	}
	var out Client
	var tag string
	err = i.store.Update(ctx, func(tx store.Tx) error {
		old, cur, err := updated(tx)
		if err != nil {
			return err
		}
		if err := clientsIn(tx).put(cur); err != nil {
			return err
		}
		rv := i.revocation()
		if registrationNarrowed(old, cur) {
			if err := grantsIn(tx).revokeClient(c.ID, rv); err != nil {
				return err
			}
		}
		if slices.ContainsFunc(old.RedirectURIs, func(u string) bool { return !slices.Contains(cur.RedirectURIs, u) }) {
			if err := epochsIn(tx).stamp(redirectsPrincipal(c.ID), rv); err != nil {
				return err
			}
		}
		out, tag = *cur, ClientETag(*cur)
		return nil
	})
	out.SecretHash = ""
	return out, tag, err
}

// errNotNarrowed: the update revokes nothing (UpdateClientIfMatch).
var errNotNarrowed = errors.New("the update does not narrow the client")

// registrationNarrowed reports whether cur, a client's registration,
// allows less than old in anything a grant, a token or a code rests on:
// the credentials (method, secret, keys), grant types, resources and
// scopes (an empty list allows every resource or scope; no grant types
// are authorization_code and refresh_token), and what only a
// registration by the client itself sets. A change that only adds
// (another scope, say) is not narrower; any other change of these is.
// Name, redirect URIs (see redirectsPrincipal) and introspect (read at
// each introspection) are not in it.
func registrationNarrowed(old, cur *Client) bool {
	// The two secret methods are one credential: the same secret, sent in
	// the header or the form; switching between them changes who can
	// authenticate in no way.
	sameMethod := old.TokenEndpointAuthMethod == cur.TokenEndpointAuthMethod ||
		secretMethod(old.TokenEndpointAuthMethod) && secretMethod(cur.TokenEndpointAuthMethod)
	return !sameMethod || old.SecretHash != cur.SecretHash ||
		!bytes.Equal(old.JWKS, cur.JWKS) || old.JWKSURI != cur.JWKSURI ||
		!allowsAll(grantTypesOf(cur), grantTypesOf(old)) ||
		!allowsAll(canonicalResources(cur.Resources), canonicalResources(old.Resources)) ||
		!allowsAll(cur.Scopes, old.Scopes) ||
		old.Source != cur.Source || old.ApplicationType != cur.ApplicationType ||
		old.DPoPBoundAccessTokens != cur.DPoPBoundAccessTokens
}

// allowsAll reports whether list cur allows all that list old does, an
// empty list allowing everything.
func allowsAll(cur, old []string) bool {
	if len(cur) == 0 {
		return true
	}
	return len(old) > 0 && !slices.ContainsFunc(old, func(v string) bool { return !slices.Contains(cur, v) })
}

// canonicalResources are rs as the client's requests are matched with
// them (sameResource): another spelling of the same resource (case of
// scheme or host, default port, trailing slash) narrows nothing.
func canonicalResources(rs []string) []string {
	out := make([]string, len(rs))
	for n, r := range rs {
		out[n] = CanonicalResource(r)
	}
	return out
}

// grantTypesOf is the grant types c may use (clientMayUse).
func grantTypesOf(c *Client) []string {
	if len(c.GrantTypes) == 0 {
		return []string{grantAuthorizationCode, grantRefreshToken}
	}
	return c.GrantTypes
}

// checkClient validates a runtime-managed client's registration (an
// omitted method is inferred from the credentials). With keepsSecret, a
// method that takes a secret passes without one: an update keeps the
// stored client's.
func (i *Issuer) checkClient(c *Client, keepsSecret bool) error {
	if !usableName(c.ID, 500) {
		return invalidEntry("%s", nameRule("client id", 500))
	}
	if i.dir.configuredClient(c.ID) {
		return entryErr("client", c.ID, ErrConfigured)
	}
	if i.dir.configuredAgent(c.ID) {
		return invalidEntry("client %q: an agent has this id", c.ID)
	}
	if p := idpOfUsername(i.cfg.IdentityProviders, c.ID); p != nil {
		return invalidEntry("client %q: names starting with %q belong to identity provider %s's users", c.ID, p.Name+":", p.Name)
	}
	normalizeAuthMethod(c)
	if !keepsSecret || !secretMethod(c.TokenEndpointAuthMethod) {
		if err := validateClientAuth(c); err != nil {
			return invalidEntry("client %q: %v", c.ID, err)
		}
	}
	for _, g := range c.GrantTypes {
		if _, ok := i.grants[g]; !ok {
			return invalidEntry("client %q: unsupported grant type %q", c.ID, g)
		}
	}
	if c.Public() && slices.ContainsFunc(c.GrantTypes, needsConfidential) {
		return invalidEntry("client %q: client_credentials, token exchange and jwt-bearer need a confidential client", c.ID)
	}
	// The rules of Dynamic Client Registration: an operator's typo must not
	// become a redirect to plain http or a wildcard.
	_, appType, err := validateRedirectURIs(c.RedirectURIs, c.ApplicationType, false)
	if err == nil {
		_, err = validatePostLogoutRedirectURIs(c.PostLogoutRedirectURIs, appType)
	}
	if err == nil {
		err = validateIDTokenAlg(c.IDTokenAlg, idTokenAlgs(i.cfg.SigningAlg))
	}
	if err != nil {
		var oe *Error
		errors.As(err, &oe)
		return invalidEntry("client %q: %s", c.ID, oe.Description)
	}
	for _, r := range c.Resources {
		if err := validateResourceURL(r); err != nil {
			return invalidEntry("client %q: %v", c.ID, err)
		}
		if err := i.policy.checkResource(r); err != nil {
			return invalidEntry("client %q: %v", c.ID, err)
		}
	}
	if err := i.policy.checkScopes(c.Scopes); err != nil {
		return invalidEntry("client %q: %v", c.ID, err)
	}
	return nil
}

// Clients lists configured and stored (admin, DCR) clients, by id,
// without their secret hashes.
func (i *Issuer) Clients(ctx context.Context) ([]Client, error) {
	var out []Client
	for _, c := range i.cfg.Clients {
		c.Source = sourceConfig
		out = append(out, c)
	}
	err := i.store.View(ctx, func(tx store.Tx) error {
		return clientsIn(tx).each(func(c *Client) error {
			if !i.dir.configuredClient(c.ID) {
				out = append(out, *c)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	for n := range out {
		out[n].SecretHash = ""
	}
	slices.SortFunc(out, func(a, b Client) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// DeleteClient removes a stored client, revokes every grant it holds
// (grantRecords.revokeClient) and deletes the consents users gave it: a
// client added later under the same id asks for consent again.
func (i *Issuer) DeleteClient(ctx context.Context, id string) error {
	if i.dir.configuredClient(id) {
		return entryErr("client", id, ErrConfigured)
	}
	stored := func(tx store.Tx) error {
		if _, err := clientsIn(tx).get(id); err != nil {
			return entryErr("client", id, err)
		}
		return nil
	}
	if err := i.revokeAhead(ctx, clientGrants(id), stored); err != nil {
		return err
	}
	return i.store.Update(ctx, func(tx store.Tx) error {
		if err := clientsIn(tx).remove(id); err != nil {
			return entryErr("client", id, err)
		}
		if err := consentsIn(tx).deleteNaming(id); err != nil {
			return err
		}
		return grantsIn(tx).revokeClient(id, i.revocation())
	})
}

// RotateClientSecret generates a new secret for a confidential client,
// stores only its hash, and returns it once. The old secret stops working
// and every grant the client holds is revoked (a rotation usually means
// the old secret leaked, and with it what the client held).
func (i *Issuer) RotateClientSecret(ctx context.Context, id string) (string, error) {
	if i.dir.configuredClient(id) {
		return "", entryErr("client", id, ErrConfigured)
	}
	secret, hash, err := i.newSecret()
	if err != nil {
		return "", err
	}
	rotatable := func(tx store.Tx) (*Client, error) {
		c, err := clientsIn(tx).get(id)
		if err != nil {
			return nil, entryErr("client", id, err)
		}
		if !secretMethod(c.TokenEndpointAuthMethod) {
			return nil, invalidEntry("client %q does not authenticate with a secret", id)
		}
		return c, nil
	}
	if err := i.revokeAhead(ctx, clientGrants(id), func(tx store.Tx) error { _, err := rotatable(tx); return err }); err != nil {
		return "", err
	}
	err = i.store.Update(ctx, func(tx store.Tx) error {
		clients := clientsIn(tx)
		c, err := rotatable(tx)
		if err != nil {
			return err
		}
		c.SecretHash = hash
		if err := clients.put(c); err != nil {
			return err
		}
		return grantsIn(tx).revokeClient(id, i.revocation())
	})
	if err != nil {
		return "", err
	}
	return secret, nil
}

// misleading reports whether r, in a name people read (on the consent
// page, in the CLI's tables, in logs), could act on a terminal or change
// how the text around it reads: a control (C0 or C1, such as CSI), a
// bidirectional control (an override, an isolate, a mark), or U+FFFD,
// which also stands for bytes that are not UTF-8.
func misleading(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) || r == unicode.ReplacementChar
}

func spaceOrMisleading(r rune) bool { return unicode.IsSpace(r) || misleading(r) }

// invisible reports a rune that shows nothing where it stands, so that a
// name holding it reads as another ("alice\u200b"): a format character
// (zero-width space, word joiner, soft hyphen, BOM, tags; but the
// zero-width joiner and non-joiner, which Persian and Indic names need
// where joinersInContext allows them),
// a Hangul filler, the combining grapheme joiner (review s15-fresh2 F1),
// a variation selector (U+FE0F after a letter, the Mongolian free ones)
// and the other default-ignorable code points (Khmer's U+17B4): collations
// (UCA: ICU, MySQL's utf8mb4_0900_*) and IDNA ignore them all, so that
// "alice\ufe0f" equals alice to a database even case- and accent-
// sensitively. And the symbols fonts draw as a space, the blank Braille
// pattern, the musical null notehead (U+1D159, a notehead meant to
// show nothing) and the Egyptian hieroglyph full and half blanks
// (U+13441, U+13442: the empty space of a quadrat, letters to Unicode):
// "alice\u2800admin" reads as "alice admin", a name with a space, which
// names cannot have.
func invisible(r rune) bool {
	switch r {
	case '\u200c', '\u200d':
		return false
	case '\u2800', '\U0001D159', '\U00013441', '\U00013442':
		return true
	}
	// The Hangul fillers and U+034F are Other_Default_Ignorable_Code_Point.
	return unicode.In(r, unicode.Cf, unicode.Variation_Selector, unicode.Other_Default_Ignorable_Code_Point)
}

// unassigned reports a code point the Unicode version of this build's
// tables (unicode.Version) assigns to no character. A later version may
// give it a compatibility mapping that this build's NFKC cannot know:
// U+1CCD6 OUTLINED LATIN CAPITAL LETTER A (Unicode 16.0) is "A" to an
// upstream on newer tables (Node's String.prototype.normalize). PRECIS
// (RFC 8264 section 9.14) disallows unassigned code points for the same
// reason. Private use characters are assigned, and no version maps them.
// (unicode.C also holds the unassigned code points: its parts are named.)
func unassigned(r rune) bool {
	return !unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs)
}

// usableName reports whether a user's name or a client's or agent's id
// may be created: 1 to max bytes, no spaces (Unicode's), misleading,
// invisible or unassigned runes, unchanged by Unicode NFKC, and no "." or
// ".." segment between slashes. NFKC: an upstream that normalises what it
// is given (a file system, a database collation, an NFKC-folding library)
// would read "\uff41lice" (fullwidth) as alice, so that an argument rule
// on {token.sub} admitting one user's name would hand it another's; no two
// names kept unchanged by NFKC become one under it, in this Unicode
// version or a later one (unassigned). A user's name may
// come from an identity provider's claim, which the user may choose. An id "." or ".." no admin API path can
// name (a cleaned path drops it), so such an entry could not be shown,
// disabled or removed; and in "bob/../clients/x" Caddy's remote admin
// access control, which judges the decoded and cleaned path, would see
// another resource than the one the route acts on.
func usableName(s string, max int) bool {
	if s == "" || len(s) > max || strings.ContainsFunc(s, spaceOrMisleading) || strings.ContainsFunc(s, invisible) || strings.ContainsFunc(s, unassigned) || !norm.NFKC.IsNormalString(s) || !joinersInContext(s) {
		return false
	}
	for seg := range strings.SplitSeq(s, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// joinersInContext reports whether each zero-width joiner and non-joiner
// of s stands where RFC 5892's CONTEXTJ rules (appendix A.1, A.2) allow
// it: after a virama (Indic conjuncts), or, a non-joiner, after a letter
// that joins the one after it and before one that joins the one before
// (Unicode's Joining_Type: Persian
// "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"), transparent marks
// between them allowed. Elsewhere it shows nothing and collations ignore
// it, as they do what invisible refuses: after a Latin letter
// ("alice\u200c"), and after an Arabic letter that joins nothing after
// it ("\u0627\u200c\u0628", alef, reads as "\u0627\u0628"). Go's unicode
// has no Joining_Type table; x/net/idna's joiner check (IDNA2008) has,
// and judges the letter before a non-joiner by it. It is given s's
// letters, marks and joiners, every other character a Latin letter (as
// non-joining as it), behind one more: one label, which neither begins
// with a mark nor is punycode to decode. It lets a non-joiner before any
// character that is not a left-joining letter pass, so the letter after
// one must also be of a joining script (joiningLetter).
func joinersInContext(s string) bool {
	if !strings.ContainsAny(s, "\u200c\u200d") {
		return true
	}
	letters := strings.Map(func(r rune) rune {
		if r == '\u200c' || r == '\u200d' || unicode.In(r, unicode.L, unicode.M) {
			return r
		}
		return 'x'
	}, s)
	if _, err := joinerCheck.ToUnicode("x" + letters); err != nil {
		return false
	}
	for i, r := range s {
		if r != '\u200c' {
			continue
		}
		before, _ := utf8.DecodeLastRuneInString(s[:i])
		next, _ := utf8.DecodeRuneInString(strings.TrimLeftFunc(s[i+len("\u200c"):], isMn))
		if norm.NFC.PropertiesString(string(before)).CCC() != 9 && !joiningLetter(next) {
			return false
		}
	}
	return true
}

// joinerCheck applies IDNA2008's CONTEXTJ rules and nothing else.
var joinerCheck = idna.New(idna.CheckJoiners(true))

func isMn(r rune) bool { return unicode.Is(unicode.Mn, r) }

// joiningLetter reports a letter of a script whose letters join (cursive).
func joiningLetter(r rune) bool {
	return unicode.IsLetter(r) && unicode.In(r, unicode.Arabic, unicode.Syriac, unicode.Nko, unicode.Mongolian,
		unicode.Mandaic, unicode.Manichaean, unicode.Psalter_Pahlavi, unicode.Adlam, unicode.Hanifi_Rohingya,
		unicode.Sogdian, unicode.Old_Uyghur, unicode.Chorasmian, unicode.Phags_Pa)
}

// nameRule says what usableName asks of what (a username, a client or
// agent id), in the bytes it counts: 70 CJK characters are 210.
func nameRule(what string, max int) string {
	return fmt.Sprintf("%s must be 1 to %d bytes in Unicode NFKC form (no fullwidth letters or ligatures; accents composed, not combining marks), without spaces, control, invisible or unassigned characters, or a . or .. segment between slashes", what, max)
}
