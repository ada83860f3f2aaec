package issuer

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketGrants: grant id -> grant, until the grant expires.
const bucketGrants = "grants"

// grant is what a user granted a client, or a client's or an agent's own
// token (client credentials): the unit a refresh-token family belongs to,
// the row of the "connected apps" page, and what the gid claim names.
// Revoking it ends its refresh tokens and (via bucketRevoked) its access
// tokens.
type grant struct {
	ID       string `json:"id"`
	Subject  string `json:"sub"`
	ClientID string `json:"client_id"`
	// PrincipalType is principalAgent or principalClient for an agent's or
	// a client's own token (Subject is the agent or client); "" for a
	// user's grant.
	PrincipalType string `json:"principal_type,omitempty"`
	// Issuer is the issuer URL that created the grant ("" before grants
	// recorded it): a refresh at another URL is refused.
	Issuer string `json:"iss,omitempty"`
	Actor  string `json:"actor,omitempty"` // requested_actor the code was bound to
	// Delegates are the agents that got tokens of this grant by token
	// exchange; revoking the grant ends theirs too (they carry its id).
	Delegates []string  `json:"delegates,omitempty"`
	Resource  string    `json:"resource"`
	Scopes    []string  `json:"scopes"`
	AuthTime  time.Time `json:"auth_time,omitzero"` // user login time, for ID tokens on refresh
	CreatedAt time.Time `json:"created_at"`
	LastUsed  time.Time `json:"last_used"`
	ExpiresAt time.Time `json:"expires_at"`
	Revoked   bool      `json:"revoked,omitempty"`
	// DPoPJKT binds the refresh tokens of a public client's grant to the
	// DPoP key of the first request of the family that carried a proof,
	// the code's or a refresh's (RFC 9449 section 5): a refresh needs a
	// proof of that key.
	DPoPJKT string `json:"dpop_jkt,omitempty"`
	// Refresh is the record key of the grant's refresh-token family
	// (bucketRefresh), "" for none or one made by an earlier version:
	// revoking the grant ends that record with the grant's.
	Refresh string `json:"refresh,omitempty"`
	// Credential is the tag of the credential of the configured
	// principal the grant was issued under: the user's password hash
	// (from the sign-in), a client's or an agent's own secret hash and
	// keys (credentialTags). "" for a principal not configured, and in
	// grants from before tags, or rewritten by a binary without them.
	Credential string `json:"cred,omitempty"`
	// ClientCredential is the tag of the secret hash and keys of the
	// configured confidential client that authenticated when the grant
	// was made or its refresh token last rotated (credentialTags). ""
	// for public, DCR, CIMD and runtime clients, and in grants from
	// before it was recorded.
	ClientCredential string `json:"client_cred,omitempty"`
	// ClientAuthenticated: a confidential client authenticated when the
	// grant was made or its refresh token last rotated, so its refresh
	// tokens are bound to the client's credentials (RFC 9449 section 5).
	// A refresh without them, the client id's registration since made
	// public (a client metadata document that now says none), is refused
	// and ends the grant. false in grants from before it was recorded.
	ClientAuthenticated bool `json:"client_auth,omitempty"`
}

// principal is the principal type of the grant's subject, the kind of
// the configured principal its Credential belongs to.
func (g *grant) principal() string {
	if g.PrincipalType == "" {
		return principalUser
	}
	return g.PrincipalType
}

// ofUser reports whether g is a grant of the user name (not an agent's or
// a client's own, whose Subject may be the same string).
func (g *grant) ofUser(name string) bool { return g.PrincipalType == "" && g.Subject == name }

// ownAgentGrant reports whether g is the agent id's own (client
// credentials) grant.
func (g *grant) ownAgentGrant(id string) bool {
	return g.PrincipalType == principalAgent && g.Subject == id
}

// errGrantRevoked: the grant was revoked.
var errGrantRevoked = errors.New("grant revoked")

// grantRecords are the grants.
type grantRecords struct{ t table[grant] }

func grantsIn(tx store.Tx) grantRecords { return grantRecords{table[grant]{tx, bucketGrants}} }

func (r grantRecords) get(id string) (*grant, error) { return r.t.get(id) }

func (r grantRecords) put(g *grant) error { return r.t.put(g.ID, g, g.ExpiresAt) }

// create records a new grant and indexes it (record_grant_index.go).
func (r grantRecords) create(g *grant) error {
	if err := r.put(g); err != nil {
		return err
	}
	return grantIndexIn(r.t.tx).add(g)
}

// each calls fn for every grant: the bucket is scanned.
func (r grantRecords) each(fn func(*grant) error) error {
	return r.t.list("", func(_ string, g *grant) error { return fn(g) })
}

// selected calls fn for every live, unrevoked grant match selects among
// those indexed under prefix (bucketGrantIndex); while the index is not
// complete yet, among every grant, which is scanned. fn may write grants.
func (r grantRecords) selected(sel grantSelection, fn func(*grant) error) error {
	match := sel.match
	index := grantIndexIn(r.t.tx)
	var found []*grant
	switch done, err := index.complete(); {
	case err != nil:
		return err
	case !done:
		err = r.each(func(g *grant) error {
			if !g.Revoked && match(g) {
				found = append(found, g)
			}
			return nil
		})
		if err != nil {
			return err
		}
	default:
		keys, err := index.selectedKeys(sel)
		if err != nil {
			return err
		}
		for _, k := range keys {
			id := indexedID(k)
			switch g, err := r.get(id); {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return err
			case !g.Revoked && match(g):
				found = append(found, g)
			}
		}
	}
	for _, g := range found {
		if err := fn(g); err != nil {
			return err
		}
	}
	return nil
}

// touch records a use of the grant now, by the agent delegate when not
// "", and refuses a revoked grant (errGrantRevoked).
func (r grantRecords) touch(id string, now time.Time, delegate string) error {
	g, err := r.get(id)
	if err != nil {
		return err
	}
	if g.Revoked {
		return errGrantRevoked
	}
	g.LastUsed = now
	if delegate != "" && !slices.Contains(g.Delegates, delegate) {
		g.Delegates = append(g.Delegates, delegate)
		if err := grantIndexIn(r.t.tx).add(g); err != nil {
			return err
		}
	}
	return r.put(g)
}

// setClientCredential records tag as the grant's ClientCredential: the
// client authenticated with that credential to rotate its refresh token.
// authenticated (a confidential client's refresh) sets
// ClientAuthenticated, which nothing clears.
func (r grantRecords) setClientCredential(id, tag string, authenticated bool) error {
	g, err := r.get(id)
	if err != nil || g.ClientCredential == tag && (g.ClientAuthenticated || !authenticated) {
		return err
	}
	g.ClientCredential = tag
	g.ClientAuthenticated = g.ClientAuthenticated || authenticated
	return r.put(g)
}

// revoke marks the grant revoked (ending its refresh tokens) and refuses
// its access tokens until until, when the last of them has expired. A
// grant record already gone still gets the marker. The grant leaves the
// index, and its record and its refresh-token family's end with the
// marker: past it they refuse nothing the marker does not, and a
// revoked grant kept for the rest of its 30 days would let a user who
// authorizes and revokes again and again grow the store.
func (r grantRecords) revoke(id string, until time.Time) error {
	until, err := revocationsIn(r.t.tx).revokeGrantTokens(id, until)
	if err != nil {
		return err
	}
	g, err := r.get(id)
	if err != nil {
		return ignoreNotFound(err)
	}
	// Also when revoked already: by an earlier version, which left them.
	if err := grantIndexIn(r.t.tx).remove(g); err != nil {
		return err
	}
	g.Revoked = true
	if until.Before(g.ExpiresAt) {
		g.ExpiresAt = until
		if err := refreshIn(r.t.tx).endWith(g); err != nil {
			return err
		}
	}
	return r.put(g)
}

// grantSelection is what a revocation revokes: the live grants indexed
// under prefix that match selects.
type grantSelection struct {
	prefix string
	match  func(*grant) bool
	// user, when set, skips the entries under allUserGrantsPrefix of
	// the users it refuses before their grants are read
	// (narrowedUserGrants: one walk over every user's entries, reading
	// the narrowed users' grants only).
	user func(name string) bool
}

// skips reports whether the index entry k is one sel does not read.
func (sel grantSelection) skips(k string) bool {
	if sel.user == nil {
		return false
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(k, allUserGrantsPrefix), "\x00")
	return !sel.user(name)
}

// revokeWhere revokes every grant sel selects (selected). The grants it
// reads may be those a stream of refreshes writes (a user's, whose tokens
// rotate while the user is removed), so its transaction may run alone
// (store.MayRunAlone).
func (r grantRecords) revokeWhere(sel grantSelection, until time.Time) error {
	store.MayRunAlone(r.t.tx)
	return r.selected(sel, func(g *grant) error { return r.revoke(g.ID, until) })
}

// revokeSome revokes up to limit of the grants sel selects indexed under
// its prefix after the key from ("" for the first), reading at most
// revokeReads times as many, and returns the last key it read, from
// which the next call goes on, and whether entries are left; none while
// the index is incomplete (revokeWhere reads every grant then). It walks
// the index with that key rather than from its front because entries it
// leaves may lie there, as many as the principal has: grants that do not
// match (exchanged to a re-keyed agent, of another resource of a
// connection), which cost only a read each. The entries of grants gone
// or revoked (by an earlier version, which left them) it deletes, each
// counting as one revoked.
func (r grantRecords) revokeSome(sel grantSelection, until time.Time, limit int, from string) (string, bool, error) {
	store.MayRunAlone(r.t.tx)
	index := grantIndexIn(r.t.tx)
	if done, err := index.complete(); err != nil || !done {
		return "", false, err
	}
	keys, more, err := index.after(sel.prefix, from, revokeReads*limit)
	if err != nil {
		return "", false, err
	}
	read, err := r.revokeListed(sel, until, limit, keys)
	switch {
	case err != nil:
		return "", false, err
	case read < len(keys):
		return keys[read-1], true, nil
	case len(keys) > 0:
		from = keys[len(keys)-1]
	}
	return from, more, nil
}

// revokeListed revokes up to limit of the grants sel selects among the
// index entries keys, in their order, and returns how many of keys it
// went through (revokeSome).
func (r grantRecords) revokeListed(sel grantSelection, until time.Time, limit int, keys []string) (int, error) {
	store.MayRunAlone(r.t.tx)
	index := grantIndexIn(r.t.tx)
	n := 0
	for read, k := range keys {
		if n == limit {
			return read, nil
		}
		if sel.skips(k) {
			continue
		}
		g, err := r.get(indexedID(k))
		switch {
		case errors.Is(err, store.ErrNotFound):
			err = index.t.delete(k)
		case err != nil:
		case g.Revoked:
			err = index.remove(g)
		case sel.match(g):
			err = r.revoke(g.ID, until)
		default:
			continue
		}
		if err != nil {
			return 0, err
		}
		n++
	}
	return len(keys), nil
}

// revokeReads is how many entries revokeSome reads for each grant it may
// revoke: a read costs a tenth of a revocation.
const revokeReads = 10

// Limits on the offline grants of one user (review s17-as F5): a code
// redeemed with offline_access records a grant that lives as long as its
// refresh tokens (refresh_token_ttl, 30 days by default), and a user may
// authorize hundreds of times a minute. A grant without refresh tokens
// (an ID-JAG's, or a code's without offline_access) ends with its access
// token and is not counted, so that runs of a script signing in as one
// user, many at once, do not end each other.
const (
	// maxConnectionGrants is how many offline grants a user may hold for
	// one connection (client, resource and agent; a row of the apps
	// page): one per device or install of the app. A new one past it
	// revokes the oldest, as re-authorizing an app is expected to (as
	// GitHub keeps ten tokens per user, app and scope).
	maxConnectionGrants = 10
	// maxUserGrants is how many offline grants a user may hold in all; a
	// code redeemed past it is refused (errTooManyGrants).
	maxUserGrants = 1000
)

// errTooManyGrants: the user holds maxUserGrants grants.
var errTooManyGrants = errors.New("user holds too many grants")

// admit makes room for g, a user's new offline grant, before it is
// created: errTooManyGrants refuses it, revoking nothing, when the user
// would still hold maxUserGrants offline grants; else the oldest offline
// grants of its connection beyond maxConnectionGrants-1 are revoked until
// until. Only indexed grants count, and only the index is read: not the
// grants, which the user's other devices' refreshes rewrite.
func (r grantRecords) admit(g *grant, until time.Time) error {
	type entry struct {
		id      string
		created time.Time
	}
	var same []entry
	index := grantIndexIn(r.t.tx)
	err := index.entries(offlineClientGrantsPrefix(g.Subject, g.ClientID), func(id string, e *grantIndexEntry) error {
		if e.Resource == g.Resource && e.Actor == g.Actor {
			same = append(same, entry{id, e.CreatedAt})
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(same, func(a, b entry) int { return a.created.Compare(b.created) })
	evict := same[:max(0, len(same)-(maxConnectionGrants-1))]
	// The ceiling first: a refused code's transaction commits, and must
	// not have revoked the connection's oldest grants.
	n, limit := 0, maxUserGrants+len(evict)
	err = index.ids(offlineGrantsPrefix(g.Subject), func(string) error {
		if n++; n >= limit {
			return errTooManyGrants
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, old := range evict {
		if err := r.revoke(old.id, until); err != nil {
			return err
		}
	}
	return nil
}

// revokeUser revokes the user's grants (delegated and exchanged tokens
// included) and stamps the user (record_epochs.go).
func (r grantRecords) revokeUser(name string, rv revocation) error {
	if err := epochsIn(r.t.tx).stamp(userPrincipal(name), rv); err != nil {
		return err
	}
	return r.revokeWhere(userGrants(name), rv.until)
}

// userGrants selects the user's grants (delegated and exchanged tokens
// included).
func userGrants(name string) grantSelection {
	return grantSelection{userGrantsPrefix(name), func(g *grant) bool { return g.ofUser(name) }, nil}
}

// narrowedUserGrants selects the grants of the users of taken (user ->
// canonical resource URL -> scopes: scopesTaken) that hold a scope taken
// from their user for their resource, and the tokens exchanged and
// delegated from them: one walk over every user's index entries,
// however many users a group holds.
func narrowedUserGrants(taken map[string]map[string][]string) grantSelection {
	return grantSelection{allUserGrantsPrefix, func(g *grant) bool {
		scopes := taken[g.Subject][CanonicalResource(g.Resource)]
		return g.ofUser(g.Subject) && slices.ContainsFunc(g.Scopes, func(s string) bool { return slices.Contains(scopes, s) })
	}, func(name string) bool { return taken[name] != nil }}
}

// revokeClient revokes every grant the client holds: the users' grants to
// it (and the tokens exchanged from them) and its own client credentials
// tokens; and stamps the client.
func (r grantRecords) revokeClient(id string, rv revocation) error {
	if err := epochsIn(r.t.tx).stamp(clientPrincipal(id), rv); err != nil {
		return err
	}
	return r.revokeWhere(clientGrants(id), rv.until)
}

// clientGrants selects every grant the client holds.
func clientGrants(id string) grantSelection {
	return grantSelection{clientGrantsPrefix(id), func(g *grant) bool { return g.ClientID == id }, nil}
}

// revokeAgent revokes the agent's own grants, the grants bound to it by
// requested_actor, and those whose tokens were exchanged to it; and
// stamps it as a client and as an actor.
func (r grantRecords) revokeAgent(id string, rv revocation) error {
	if err := epochsIn(r.t.tx).stamp(agentPrincipal(id), rv); err != nil {
		return err
	}
	if err := epochsIn(r.t.tx).stamp(clientPrincipal(id), rv); err != nil {
		return err
	}
	return r.revokeWhere(agentGrants(id), rv.until)
}

// agentGrants selects the agent's own grants, those bound to it by
// requested_actor and those whose tokens were exchanged to it.
func agentGrants(id string) grantSelection {
	return grantSelection{agentGrantsPrefix(id), func(g *grant) bool {
		return g.ownAgentGrant(id) || g.Actor == id || slices.Contains(g.Delegates, id)
	}, nil}
}

// revokeAgentRekeyed revokes what rests on the credentials an agent's
// re-keying replaced: its own tokens (client credentials) and what was
// exchanged from them, and the users' delegations to it
// (requested_actor), whose act names it as those credentials proved it
// (a leak of them, or of the agent, hands over what it holds: a rotation
// that left its delegations would leave the leak open). It stamps the
// agent as a client and as an actor: what was requested with, or for,
// the old credentials is refused. The users' own grants whose tokens
// were exchanged to it stay, as their end would end the users' use of
// their client; the exchanged tokens end with their subject token.
func (r grantRecords) revokeAgentRekeyed(id string, rv revocation) error {
	if err := epochsIn(r.t.tx).stamp(agentPrincipal(id), rv); err != nil {
		return err
	}
	if err := epochsIn(r.t.tx).stamp(clientPrincipal(id), rv); err != nil {
		return err
	}
	return r.revokeWhere(agentRekeyedGrants(id), rv.until)
}

// agentRekeyedGrants selects the agent's own grants (client credentials)
// and what was exchanged from them, and those bound to it by
// requested_actor.
func agentRekeyedGrants(id string) grantSelection {
	return grantSelection{agentGrantsPrefix(id), func(g *grant) bool { return g.ownAgentGrant(id) || g.Actor == id }, nil}
}
