package issuer

import (
	"errors"
	"slices"
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

// each calls fn for every grant. Grants have no per-user or per-client
// index; the bucket is scanned, which suits an embedded issuer's sizes.
func (r grantRecords) each(fn func(*grant) error) error {
	return r.t.list("", func(_ string, g *grant) error { return fn(g) })
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
	}
	return r.put(g)
}

// setClientCredential records tag as the grant's ClientCredential: the
// client authenticated with that credential to rotate its refresh token.
func (r grantRecords) setClientCredential(id, tag string) error {
	g, err := r.get(id)
	if err != nil || g.ClientCredential == tag {
		return err
	}
	g.ClientCredential = tag
	return r.put(g)
}

// revoke marks the grant revoked (ending its refresh tokens) and refuses
// its access tokens until until, when the last of them has expired. A
// grant record already gone still gets the marker.
func (r grantRecords) revoke(id string, until time.Time) error {
	switch g, err := r.get(id); {
	case err == nil:
		if !g.Revoked {
			g.Revoked = true
			if err := r.put(g); err != nil {
				return err
			}
		}
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	return revocationsIn(r.t.tx).revokeGrantTokens(id, until)
}

// revokeWhere revokes every live grant match selects. It reads every
// grant, so its transaction may run alone (store.MayRunAlone).
func (r grantRecords) revokeWhere(match func(*grant) bool, until time.Time) error {
	store.MayRunAlone(r.t.tx)
	var ids []string
	err := r.each(func(g *grant) error {
		if !g.Revoked && match(g) {
			ids = append(ids, g.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := r.revoke(id, until); err != nil {
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
	return r.revokeWhere(func(g *grant) bool { return g.ofUser(name) }, rv.until)
}

// revokeClient revokes every grant the client holds: the users' grants to
// it (and the tokens exchanged from them) and its own client credentials
// tokens; and stamps the client.
func (r grantRecords) revokeClient(id string, rv revocation) error {
	if err := epochsIn(r.t.tx).stamp(clientPrincipal(id), rv); err != nil {
		return err
	}
	return r.revokeWhere(func(g *grant) bool { return g.ClientID == id }, rv.until)
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
	return r.revokeWhere(func(g *grant) bool {
		return g.ownAgentGrant(id) || g.Actor == id || slices.Contains(g.Delegates, id)
	}, rv.until)
}

// revokeAgentOwn revokes the agent's own tokens (client credentials) and
// what was exchanged from them, and stamps it as a client: what it
// requested with its old credentials is refused.
func (r grantRecords) revokeAgentOwn(id string, rv revocation) error {
	if err := epochsIn(r.t.tx).stamp(clientPrincipal(id), rv); err != nil {
		return err
	}
	return r.revokeWhere(func(g *grant) bool { return g.ownAgentGrant(id) }, rv.until)
}
