package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// fingerprint identifies a credential hash without storing it again.
func fingerprint(hash string) string {
	sum := sha256.Sum256([]byte(hash))
	return hex.EncodeToString(sum[:])
}

// credentialFingerprint identifies a client's or agent's credentials:
// its secret hash and its keys (a JWK Set or its URL), so that re-keying
// a private_key_jwt principal in the configuration counts as a rotation.
// Without keys it is fingerprint(secretHash), as before keys counted.
func credentialFingerprint(secretHash string, jwks []byte, jwksURI string) string {
	if len(jwks) == 0 && jwksURI == "" {
		return fingerprint(secretHash)
	}
	return fingerprint(secretHash + "\x00jwks\x00" + string(jwks) + "\x00" + jwksURI)
}

// credentialTagLen is how many hex digits of a credential's fingerprint
// a tag keeps: 64 bits tell one credential from the next; the hash itself
// is never stored.
const credentialTagLen = 16

// tag is the tag of the credential s declares for the principal of
// principal type pt (principalUser, principalClient, principalAgent)
// named name: the start of its fingerprint, "" when s declares none.
func (s *directorySnapshot) tag(pt, name string) string {
	var fps map[string]string
	switch pt {
	case principalUser:
		fps = s.Users
	case principalClient:
		fps = s.Clients
	case principalAgent:
		fps = s.Agents
	}
	fp := fps[name]
	return fp[:min(len(fp), credentialTagLen)]
}

// credentialTags judge what rests on the credential of a configured
// principal. A session, code and grant of a configured user, and a
// configured client's or agent's own grant, record the tag of the
// credential they were issued under (the password hash, the secret hash
// and keys); a grant also records the tag of the configured confidential
// client that authenticated when it was made or last rotated, as
// replacing a client's secret or keys ends every grant it holds.
// Instances sharing a store take a new configuration one after the
// other, and after a reload the old configuration's servers still
// answer for a moment; one not yet reloaded still accepts the
// credential the newest configuration replaced, or the principal it
// removed. Nothing is issued on it there (mayIssue), and what such an
// instance issued before the newest was applied was not there when the
// configurations were compared (ApplyConfigChanges): its tag tells it
// apart, a use of it is refused wherever the replaced credential is no
// longer current, and the reload of that instance revokes it.
type credentialTags struct {
	declared directorySnapshot // this configuration's
	digest   string            // declared's (directorySnapshot.digest)
	issuer   string            // the issuer URL configurations are recorded under
}

func newCredentialTags(declared directorySnapshot, issuer string) (*credentialTags, error) {
	d, err := declared.digest()
	if err != nil {
		return nil, err
	}
	return &credentialTags{declared: declared, digest: d, issuer: issuer}, nil
}

// of is the tag of the credential this configuration declares for the
// principal ("" for none: not configured).
func (c *credentialTags) of(pt, name string) string { return c.declared.tag(pt, name) }

// applied is the configuration last applied to the store under this
// issuer URL, this one when none is. When it is this one (most calls),
// that costs one small read.
func (c *credentialTags) applied(tx store.Tx) (*directorySnapshot, error) {
	configs := configIn(tx)
	switch d, err := configs.digest(c.issuer); {
	case err == nil && d == c.digest:
		return &c.declared, nil
	case ignoreNotFound(err) != nil:
		return nil, err
	}
	s, err := configs.get(c.issuer)
	if errors.Is(err, store.ErrNotFound) {
		return &c.declared, nil
	}
	return s, err
}

// current reports whether tag, recorded for the principal, is its
// credential's in the configuration last applied to the store under
// this issuer URL: an instance that has not reloaded yet accepts what
// the reloaded ones issue, and no longer what it issued on a credential
// the newest configuration replaced. An empty tag is current (a
// principal not configured, or a record from before tags, whose
// credential changes the comparison of configurations handles).
func (c *credentialTags) current(tx store.Tx, pt, name, tag string) (bool, error) {
	if tag == "" {
		return true, nil
	}
	applied, err := c.applied(tx)
	if err != nil {
		return false, err
	}
	return tag == applied.tag(pt, name), nil
}

// mayIssue reports whether the principals of an issuance for s (its
// client, user and actors, and the client that authenticated the request
// when another) have in the configuration last applied the credentials
// this one declares for them: an instance still running a configuration
// that another removed or re-keyed one in (an old configuration's
// servers finishing after a reload, an instance of a cluster not
// reloaded yet) issues nothing on the old credential, nor beyond a
// client's narrowed registration, an agent's narrowed limits or a user's
// narrowed groups, which no reload would revoke once the newest is
// applied.
func (c *credentialTags) mayIssue(tx store.Tx, s tokenSubject, authenticated *Client) (bool, error) {
	applied, err := c.applied(tx)
	if err != nil || applied == &c.declared {
		return err == nil, err
	}
	same := func(pt, name string) bool { return c.of(pt, name) == applied.tag(pt, name) }
	// A client the newest configuration narrowed gets nothing here
	// either: this one would issue it what that one took away.
	agent := func(id string) bool { return same(principalAgent, id) && !agentNarrowed(&c.declared, applied, id) }
	client := func(id string) bool {
		return same(principalClient, id) && agent(id) && !clientNarrowed(&c.declared, applied, id)
	}
	ok := client(s.client.ID)
	if authenticated != nil {
		ok = ok && client(authenticated.ID)
	}
	if s.user != nil {
		ok = ok && same(principalUser, s.subject)
		// A provider's user carries no credential tag: the newest
		// configuration removed or re-pointed the provider, and
		// signed its users out, by a stamp another instance's clock
		// may not order after this user's sign-in (as mayProvision).
		if p := s.user.IdentityProvider; p != "" {
			ok = ok && samePoint(applied, &c.declared, p)
		}
	}
	for _, a := range s.act.Chain() {
		ok = ok && agent(a)
	}
	return ok && !c.groupsNarrowed(applied, s), nil
}

// groupsNarrowed reports whether the groups of the configuration applied
// no longer allow the user of s a scope that s gives it for its resource
// and this configuration's groups allow: a user whose groups the newest
// configuration narrowed gets nothing here, where the old ones would give
// what that one took away, which no reload would revoke. Not when either
// recorded no group limits (an earlier version's record).
func (c *credentialTags) groupsNarrowed(applied *directorySnapshot, s tokenSubject) bool {
	was, now := c.declared.GroupLimits, applied.GroupLimits
	if s.user == nil || was == nil || now == nil {
		return false
	}
	before, ok := was.groupsOf(s.user)
	after, kept := now.groupsOf(s.user)
	if !ok || !kept {
		return false // the user's credential tags or provider decide
	}
	// The resource scopes issued stand for the resource's: a group's "*"
	// allows each of them. The OpenID Connect scopes are no group's to
	// allow or take (grantScopes passes them).
	scopes := slices.DeleteFunc(slices.Clone(s.scopes), func(sc string) bool { return slices.Contains(oidcScopes, sc) })
	taken := scopesTakenFrom(was.groups(), now.groups(), before, after, Resource{URL: s.resource, Scopes: scopes})
	return slices.ContainsFunc(scopes, func(sc string) bool { return slices.Contains(taken, sc) })
}

// mayProvision reports whether the configuration last applied declares
// identity provider name as this one does (samePoint: the same issuer,
// client_id and tenant): an instance still running a configuration that another
// removed or re-pointed the provider in signs in none of its users, who
// carry no credential tag, and whom no reload would sign out once the
// newest is applied.
func (c *credentialTags) mayProvision(tx store.Tx, name string) (bool, error) {
	applied, err := c.applied(tx)
	if err != nil || applied == &c.declared {
		return err == nil, err
	}
	return samePoint(applied, &c.declared, name), nil
}

// client is the tag of the credential this configuration declares for
// client cl when cl is a configured client, a public one too (made
// confidential, what a lagging instance let it take without a secret
// ends; review s16c F1), "" otherwise (DCR, CIMD and runtime clients;
// agents).
func (c *credentialTags) client(cl *Client) string {
	if cl.Source != sourceConfig {
		return ""
	}
	return c.of(principalClient, cl.ID)
}

// grantCurrent is current for the principal of grant g and for its
// client.
func (c *credentialTags) grantCurrent(tx store.Tx, g *grant) (bool, error) {
	ok, err := c.current(tx, g.principal(), g.Subject, g.Credential)
	if err != nil || !ok {
		return ok, err
	}
	return c.current(tx, principalClient, g.ClientID, g.ClientCredential)
}

// replaced lists the principals ("user alice", "client app") of grant g
// whose credential tag g records differs from this configuration's.
func (c *credentialTags) replaced(g *grant) []string {
	var out []string
	if g.Credential != "" && g.Credential != c.of(g.principal(), g.Subject) {
		out = append(out, g.principal()+" "+g.Subject)
	}
	if g.ClientCredential != "" && g.ClientCredential != c.of(principalClient, g.ClientID) {
		out = append(out, principalClient+" "+g.ClientID)
	}
	return out
}

// RecordConfig records this configuration as the one applied to the
// store under its issuer URL, the one ApplyConfigChanges compares the
// next with, and changes nothing else. A configuration still running
// records itself again when a newer one applied its changes and then
// failed to start (Caddy keeps the old one), so that the next
// configuration is compared with the one that ran: what was granted
// under it meanwhile is ended then.
func (i *Issuer) RecordConfig(ctx context.Context) error {
	cur := i.dir.snapshot()
	return i.store.Update(ctx, func(tx store.Tx) error { return configIn(tx).put(i.URL(), &cur) })
}

// ApplyConfigChanges ends what this configuration took away from the one
// applied before it to the same store under the same issuer URL, exactly
// as the management API does for runtime-managed entries:
//
//   - a removed user: DeleteUser (grants revoked, sessions ended, consents
//     deleted); a changed password hash: SetPassword (grants revoked,
//     sessions ended);
//   - a removed client, or a changed secret hash or keys: DeleteClient and
//     RotateClientSecret (every grant the client holds revoked, its
//     client credentials tokens included; a removed one's consents
//     deleted);
//   - a removed agent: DeleteAgent (its own tokens, delegations to it,
//     grants exchanged to it, consents to it); a changed secret hash or
//     keys, or a narrowing (a scope or allowed client taken away,
//     max_depth lowered): RotateAgentSecret (its own tokens, delegations
//     to it);
//   - a removed identity provider, or one whose issuer, client_id or
//     tenant changed (samePoint): every user it provisioned is signed out (grants revoked,
//     sessions ended). Its users are not deleted: the same provider
//     configured again finds them (and their consents) by name, and a
//     user of the same name from where it points now is refused
//     (User.accountOf). Those that record no issuer (provisioned by a
//     release before this one, not signed in since) cannot be told
//     apart: they are deleted as DeleteUser does (a disabled one is
//     kept, and refuses whoever signs in with its sub). Such users of a
//     provider pointing where it did are given its issuer and tenant
//     (placeUsers);
//   - a scope the groups no longer allow a user for a resource (a
//     group's scopes narrowed, a configured user's groups or a
//     provider's group mapping changed; scopesTaken): the user's grants
//     holding it for that resource are revoked, and what was exchanged
//     or delegated from them. The user's other grants and sessions stay:
//     their refreshes re-apply today's groups.
//
// It also revokes this issuer URL's grants recorded under a credential
// of a configured principal, or of their configured client, other than
// the one this configuration declares (credentialTags): those an
// instance still running the previous configuration issued after
// another applied this one. They are found by a read; most reloads find
// none and write nothing more.
//
// It fails, recording nothing, on a stored principal New would refuse
// (checkStoredIDs), which the running configuration's admin API may
// have added since New looked.
//
// Applying the same configuration again changes nothing; the first
// configuration applied to a store only records itself. Call it when the
// configuration takes effect (Caddy: the app's Start, so a configuration
// that fails to load changes nothing). Instances sharing a store should
// load the same directory: each one applied counts as a change.
func (i *Issuer) ApplyConfigChanges(ctx context.Context) error {
	cur := i.dir.snapshot()
	if err := i.revokeChangedAhead(ctx, &cur); err != nil {
		return fmt.Errorf("apply configuration changes: %w", err)
	}
	var ended, narrowed []string
	var unmoved map[string]bool // providers pointing where they did
	err := i.store.Update(ctx, func(tx store.Tx) error {
		ended, narrowed, unmoved = ended[:0], nil, map[string]bool{} // the function may run again
		configs := configIn(tx)
		prev, err := configs.get(i.URL())
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		// New checked the store; the running configuration's admin API
		// may have added a name this one declares since, which this
		// transaction sees, or which sees this one (appliedNameClash).
		// Only a provider new here has a namespace not checked then.
		if err := i.dir.storedIDsClash(tx, providersAdded(prev, i.cfg.IdentityProviders)); err != nil {
			return err
		}
		if prev == nil {
			return configs.put(i.URL(), &cur)
		}
		for name := range cur.IdentityProviders {
			unmoved[name] = samePoint(prev, &cur, name)
		}
		rv := i.revocation()
		grants := grantsIn(tx)
		var removed []string // clients and agents, whose consents go too
		for _, c := range configChanges(prev, &cur) {
			var err error
			switch {
			case c.kind == principalUser && c.removed:
				err = forgetUser(tx, c.name, rv)
			case c.kind == principalUser:
				err = signOutUser(tx, c.name, rv)
			case c.kind == principalClient:
				err = grants.revokeClient(c.name, rv)
			case c.ended:
				err = grants.revokeAgent(c.name, rv)
			default:
				err = grants.revokeAgentRekeyed(c.name, rv)
			}
			if err != nil {
				return err
			}
			if c.removed && c.kind != principalUser {
				removed = append(removed, c.name)
			}
			ended = append(ended, c.kind+" "+c.name)
		}
		if err := consentsIn(tx).deleteNaming(removed...); err != nil {
			return err
		}
		taken, err := scopesTaken(tx, prev, &cur, i.policy.resources())
		if err != nil {
			return err
		}
		if len(taken) > 0 {
			if err := grants.revokeWhere(narrowedUserGrants(taken), rv.until); err != nil {
				return err
			}
		}
		narrowed = slices.Sorted(maps.Keys(taken))
		if changed := providerChanges(prev, &cur); len(changed) > 0 {
			var users, unplaced, fenced []string
			err := usersIn(tx).each(func(u *User) error {
				if changed[u.IdentityProvider] {
					users = append(users, u.Username)
					// A disabled one is kept: deleted, it would sign
					// in again as a new account, enabled. It is fenced
					// off instead, so that enabled again it is still
					// no one's from where the provider points now.
					switch {
					case u.IdPIssuer != "":
					case u.Disabled:
						fenced = append(fenced, u.Username)
					default:
						unplaced = append(unplaced, u.Username)
					}
				}
				return nil
			})
			for _, name := range fenced {
				var u *User
				if err == nil {
					u, err = usersIn(tx).get(name)
				}
				if err == nil {
					u.IdPIssuer = unplacedIssuer
					err = usersIn(tx).put(u)
				}
			}
			if err == nil {
				err = signOutUsers(tx, users, rv)
			}
			// What forgetUser does besides signing out, the sessions
			// read once for all.
			for _, name := range unplaced {
				if err == nil {
					err = usersIn(tx).remove(name)
				}
				if err == nil {
					err = consentsIn(tx).deleteUser(name)
				}
			}
			if err != nil {
				return err
			}
			for name := range changed {
				ended = append(ended, "identity_provider "+name)
			}
		}
		return configs.put(i.URL(), &cur)
	})
	if err != nil {
		return fmt.Errorf("apply configuration changes: %w", err)
	}
	if len(ended) > 0 {
		i.sec.Info("configuration removed or re-keyed principals; their grants are revoked", zap.Strings("principals", ended))
	}
	if len(narrowed) > 0 {
		i.sec.Info("configuration took scopes away from users' groups; their grants holding them are revoked", zap.Strings("users", narrowed))
	}
	if err := i.placeUsers(ctx, unmoved); err != nil {
		// Those not placed are deleted by a re-point, not kept.
		i.log.Warn("users an earlier release provisioned could not be given their identity provider's issuer", zap.Error(err))
	}
	if err := i.revokeReplacedGrants(ctx); err != nil {
		// The configuration is applied; such grants are refused at
		// every use all the same (credentialTags), and their access
		// tokens end at expiry. A store too slow to scan every grant in
		// one read must not stop every reload (review s16b F6).
		i.log.Warn("grants issued under replaced credentials could not be looked for; each is refused at its next use", zap.Error(err))
	}
	return nil
}

// providersAdded are the providers of ps that prev (nil: none applied
// yet) does not declare.
func providersAdded(prev *directorySnapshot, ps []IdentityProvider) []IdentityProvider {
	if prev == nil {
		return ps
	}
	var added []IdentityProvider
	for _, p := range ps {
		if _, ok := prev.IdentityProviders[p.Name]; !ok {
			added = append(added, p)
		}
	}
	return added
}

// configChange is a principal that a configuration removed, or whose
// credential it replaced, since the one applied before.
type configChange struct {
	kind    string // principalUser, principalClient or principalAgent
	name    string
	removed bool
	// ended: removed, or an agent disabled (Agent.Disabled in the
	// Config), which loses all it holds, as the admin API's disabling
	// makes it (revokeAgent), the users' grants exchanged to it included.
	ended bool
}

// configChanges are the principals cur removed or re-keyed since prev,
// the clients it narrowed (a scope, resource or grant type taken away),
// which lose their grants as an update through the admin API makes them
// (UpdateClientIfMatch), and the agents it narrowed, which lose what
// re-keying them ends.
func configChanges(prev, cur *directorySnapshot) []configChange {
	var out []configChange
	for _, d := range []struct {
		kind      string
		prev, cur map[string]string
	}{{principalUser, prev.Users, cur.Users}, {principalClient, prev.Clients, cur.Clients}, {principalAgent, prev.Agents, cur.Agents}} {
		for name, fp := range d.prev {
			now, kept := d.cur[name]
			if !kept || now != fp || d.kind == principalClient && clientNarrowed(prev, cur, name) ||
				d.kind == principalAgent && agentNarrowed(prev, cur, name) {
				ended := !kept || d.kind == principalAgent && agentDisabled(prev, cur, name)
				out = append(out, configChange{d.kind, name, !kept, ended})
			}
		}
	}
	return out
}

// clientNarrowed reports whether cur allows client id less than prev
// did; not when either recorded no limits for it (an earlier version's
// record).
func clientNarrowed(prev, cur *directorySnapshot, id string) bool {
	return narrowedIn(prev.ClientLimits, cur.ClientLimits, id)
}

// agentNarrowed reports whether cur allows agent id less than prev did;
// not when either recorded no limits for it (an earlier version's
// record).
func agentNarrowed(prev, cur *directorySnapshot, id string) bool {
	return narrowedIn(prev.AgentLimits, cur.AgentLimits, id)
}

// agentDisabled reports whether cur disables agent id, which prev did
// not.
func agentDisabled(prev, cur *directorySnapshot, id string) bool {
	was, ok := prev.AgentLimits[id]
	now, kept := cur.AgentLimits[id]
	return ok && kept && now.Disabled && !was.Disabled
}

// narrowedIn reports whether the limits cur records for id allow less
// than those prev records; not when either records none.
func narrowedIn[L interface{ narrowed(L) bool }](prev, cur map[string]L, id string) bool {
	was, ok := prev[id]
	now, kept := cur[id]
	return ok && kept && was.narrowed(now)
}

// grants selects the grants ApplyConfigChanges revokes for c: a
// re-keyed agent loses its own and the delegations to it, not the
// grants exchanged to it.
func (c configChange) grants() grantSelection {
	switch {
	case c.kind == principalUser:
		return userGrants(c.name)
	case c.kind == principalClient:
		return clientGrants(c.name)
	case c.ended:
		return agentGrants(c.name)
	}
	return agentRekeyedGrants(c.name)
}

// errConfigApplied: another configuration was applied to the store
// since revokeChangedAhead compared with the one before.
var errConfigApplied = errors.New("another configuration was applied meanwhile")

// revokeChangedAhead revokes ahead (revokeAhead) the grants of the users,
// clients and agents the configuration cur removed or re-keyed since the
// one applied to the store, which ApplyConfigChanges then revokes in one
// transaction: many of them (a configured service client taking a token
// every 0.2 s holds 18,000) passed PostgreSQL's bound on one
// transaction, and the configuration failed to load, the replaced secret
// working on; and those of the users of an identity provider it removed
// or re-pointed. It stops, leaving the rest to ApplyConfigChanges, when
// another configuration was applied meanwhile.
func (i *Issuer) revokeChangedAhead(ctx context.Context, cur *directorySnapshot) error {
	var prev *directorySnapshot
	err := i.store.View(ctx, func(tx store.Tx) (err error) {
		prev, err = configIn(tx).get(i.URL())
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	same := func(tx store.Tx) error {
		now, err := configIn(tx).get(i.URL())
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(now, prev) {
			return errConfigApplied
		}
		return nil
	}
	var sels []grantSelection
	for _, c := range configChanges(prev, cur) {
		sels = append(sels, c.grants())
	}
	err = i.store.View(ctx, func(tx store.Tx) error {
		taken, err := scopesTaken(tx, prev, cur, i.policy.resources())
		if err != nil {
			return err
		}
		if len(taken) > 0 {
			sels = append(sels, narrowedUserGrants(taken))
		}
		changed := providerChanges(prev, cur)
		if len(changed) == 0 {
			return nil
		}
		return usersIn(tx).each(func(u *User) error {
			if changed[u.IdentityProvider] {
				sels = append(sels, userGrants(u.Username))
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, sel := range sels {
		err := i.revokeAhead(ctx, sel, same)
		if errors.Is(err, errConfigApplied) || errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// providerChanges are the identity providers cur removed or re-pointed
// (another issuer, client_id or tenant: samePoint) since prev, whose
// users are signed out.
func providerChanges(prev, cur *directorySnapshot) map[string]bool {
	out := map[string]bool{}
	for name := range prev.IdentityProviders {
		if !samePoint(prev, cur, name) {
			out[name] = true
		}
	}
	return out
}

// placeUsers records on the users of the providers in unmoved (pointing
// where the configuration applied before pointed them) that record no
// issuer (an earlier release provisioned them) the issuer and tenant
// they are users of: a later re-point keeps them, and refuses their
// names to the new population, rather than deleting them
// (ApplyConfigChanges). In transactions of indexBatch users, each while
// this configuration is still the one applied.
func (i *Issuer) placeUsers(ctx context.Context, unmoved map[string]bool) error {
	var names []string
	err := i.store.View(ctx, func(tx store.Tx) error {
		names = names[:0]
		return usersIn(tx).each(func(u *User) error {
			if u.IdPIssuer == "" && unmoved[u.IdentityProvider] {
				names = append(names, u.Username)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for batch := range slices.Chunk(names, indexBatch) {
		err := i.store.Update(ctx, func(tx store.Tx) error {
			if d, err := configIn(tx).digest(i.URL()); err != nil || d != i.creds.digest {
				return errors.Join(errConfigApplied, err)
			}
			users := usersIn(tx)
			for _, name := range batch {
				u, err := users.get(name)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if p := i.dir.identityProvider(u.IdentityProvider); p != nil && u.IdPIssuer == "" {
					u.IdPIssuer, u.IdPTenant = p.Issuer, p.Tenant
					if err := users.put(u); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if errors.Is(err, errConfigApplied) {
			return nil // the newer configuration's to place
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// indexBatch is how many grants one transaction of indexGrants indexes.
const indexBatch = 500

// indexGrants indexes the grants that lack an entry in the grant index
// (bucketGrantIndex): those an earlier version wrote, before the upgrade
// or, during a rolling upgrade, beside this instance, and those it
// rewrote (an agent it added to a grant's Delegates). It runs at each
// start; the first pass to complete marks the index complete, and until
// then readers scan every grant. A crash in the middle leaves entries
// that are true and no marker: the next start goes on. Entries are
// written in batches, each grant read again in its batch's transaction,
// so a grant revoked or gone meanwhile gets none.
func (i *Issuer) indexGrants(ctx context.Context) error {
	var missing []string
	err := i.store.View(ctx, func(tx store.Tx) error {
		missing = missing[:0]
		keys, err := grantIndexIn(tx).keys()
		if err != nil {
			return err
		}
		return grantsIn(tx).each(func(g *grant) error {
			if !g.Revoked && g.lacks(keys) {
				missing = append(missing, g.ID)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("index grants: %w", err)
	}
	for len(missing) > 0 {
		batch := missing[:min(indexBatch, len(missing))]
		missing = missing[len(batch):]
		err := i.store.Update(ctx, func(tx store.Tx) error {
			grants, index := grantsIn(tx), grantIndexIn(tx)
			for _, id := range batch {
				switch g, err := grants.get(id); {
				case errors.Is(err, store.ErrNotFound):
				case err != nil:
					return err
				case !g.Revoked:
					if err := index.add(g); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("index grants: %w", err)
		}
	}
	err = i.store.Update(ctx, func(tx store.Tx) error {
		index := grantIndexIn(tx)
		if done, err := index.complete(); err != nil || done {
			return err
		}
		return index.markComplete()
	})
	if err != nil {
		return fmt.Errorf("index grants: %w", err)
	}
	return nil
}

// revokeReplacedGrants revokes this issuer URL's grants whose credential
// tag, or client credential tag, is not the one this configuration
// declares for their principal or client.
func (i *Issuer) revokeReplacedGrants(ctx context.Context) error {
	var ids, principals []string
	err := i.store.View(ctx, func(tx store.Tx) error {
		ids, principals = ids[:0], principals[:0]
		return grantsIn(tx).each(func(g *grant) error {
			if g.Revoked || !i.issued(g.Issuer) {
				return nil
			}
			replaced := i.creds.replaced(g)
			if len(replaced) == 0 {
				return nil
			}
			ids = append(ids, g.ID)
			for _, p := range replaced {
				if !slices.Contains(principals, p) {
					principals = append(principals, p)
				}
			}
			return nil
		})
	})
	if err != nil || len(ids) == 0 {
		return err
	}
	// In transactions of revokeBatch, as revokeAhead's: an instance not
	// reloaded for long may have issued more than one transaction can
	// revoke within the store's bound.
	until := i.revokeUntil()
	for batch := range slices.Chunk(ids, revokeBatch) {
		err := i.store.Update(ctx, func(tx store.Tx) error {
			for _, id := range batch {
				if err := grantsIn(tx).revoke(id, until); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	i.sec.Info("grants issued under credentials the configuration replaced are revoked",
		zap.Int("grants", len(ids)), zap.Strings("principals", principals))
	return nil
}

// refuseReplaced returns refused for grant gid, used although issued
// under a credential the configuration has replaced, and logs it. It
// does not revoke the grant: an instance whose reload failed runs, and
// records as applied, the configuration before, and would read the
// newer credential's grants as replaced (review s16b F1); the reload of
// the instance that issued it revokes a grant truly replaced
// (revokeReplacedGrants), and every use is refused until then.
func (i *Issuer) refuseReplaced(ctx context.Context, gid string, refused error) error {
	i.securityEvent(ctx, zap.WarnLevel, "grant issued under a credential the configuration replaced used; refused", zap.String("grant", gid))
	return refused
}
