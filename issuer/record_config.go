package issuer

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketConfig: issuer URL -> directorySnapshot of the configuration last
// applied.
const bucketConfig = "config"

// directorySnapshot is what a configuration declared: each user, client
// and agent with a fingerprint of its credential, and what each client
// may use. Config-declared principals live in memory only, so this
// record is how the next configuration learns which of them it removed,
// re-keyed or narrowed.
type directorySnapshot struct {
	Users   map[string]string `json:"users"`
	Clients map[string]string `json:"clients"`
	Agents  map[string]string `json:"agents"`
	// IdentityProviders: name -> fingerprint of issuer and client_id.
	IdentityProviders map[string]string `json:"identity_providers,omitempty"`
	// ClientLimits: client id -> what its registration allows, so that
	// a narrowing revokes as the admin API's update does. None in the
	// records of earlier versions: nothing to compare.
	ClientLimits map[string]clientLimits `json:"client_limits,omitempty"`
	// IdentityProviderTenants: name -> fingerprint of the tenant (of ""
	// when none is declared), for every provider. Releases before
	// tenants counted recorded none (samePoint).
	IdentityProviderTenants map[string]string `json:"identity_provider_tenants,omitempty"`
	// GroupLimits: what decides the scopes users' groups allow, so that
	// a narrowing revokes the grants holding what it took away. Nil in
	// the records of earlier versions: nothing to compare.
	GroupLimits *groupLimits `json:"group_limits,omitempty"`
	// AgentLimits: agent id -> what the agent may hold, so that a
	// narrowing revokes as re-keying it does. None in the records of
	// earlier versions: nothing to compare.
	AgentLimits map[string]agentLimits `json:"agent_limits,omitempty"`
}

// agentLimits is what of a configured agent's declaration its tokens and
// the delegations to it rest on besides its credential.
type agentLimits struct {
	AllowedClients []string `json:"allowed_clients,omitempty"`
	Scopes         []string `json:"scopes,omitempty"`
	MaxDepth       int      `json:"max_depth"` // MaxDelegationDepth for 0
	Disabled       bool     `json:"disabled,omitempty"`
}

func limitsOf(a *Agent) agentLimits {
	depth := a.MaxDepth
	if depth == 0 {
		depth = MaxDelegationDepth
	}
	return agentLimits{AllowedClients: a.AllowedClients, Scopes: a.Scopes, MaxDepth: depth, Disabled: a.Disabled}
}

// narrowed reports whether cur allows the agent less than l: a scope or
// allowed client taken away (allowsAll, the rule of a client's update),
// a shorter act chain, or disabled (a JSON configuration's "disabled").
func (l agentLimits) narrowed(cur agentLimits) bool {
	return !allowsAll(cur.AllowedClients, l.AllowedClients) || !allowsAll(cur.Scopes, l.Scopes) || cur.MaxDepth < l.MaxDepth ||
		cur.Disabled && !l.Disabled
}

// groupLimits is what of a configuration decides a user's group scopes
// (policy.groupScopes): the groups' scopes, the configured users' groups
// and the identity providers' group mappings.
type groupLimits struct {
	Groups    map[string]map[string][]string `json:"groups"`    // group -> resource URL or "*" -> scopes
	Users     map[string][]string            `json:"users"`     // configured user -> groups
	Providers map[string]map[string][]string `json:"providers"` // identity provider -> provider group -> local groups
}

// groups are l's groups as a configuration declares them.
func (l *groupLimits) groups() []Group {
	out := make([]Group, 0, len(l.Groups))
	for name, scopes := range l.Groups {
		out = append(out, Group{Name: name, Scopes: scopes})
	}
	return out
}

// scopesTaken are the scopes that the groups cur declares no longer
// allow a user for a resource and prev's did: user -> canonical
// resource URL -> scopes, for each of resources (as they are now, so
// that only the groups' change counts). The users are the configured
// ones both declare and those stored (added through the admin API, or
// by an identity provider both configure). None when prev recorded no
// group limits (an earlier version's record: taken as unchanged) or
// they are the same, when no user is read.
func scopesTaken(tx store.Tx, prev, cur *directorySnapshot, resources []Resource) (map[string]map[string][]string, error) {
	was, now := prev.GroupLimits, cur.GroupLimits
	if was == nil || now == nil {
		return nil, nil
	}
	if a, err := json.Marshal(was); err != nil {
		return nil, err
	} else if b, err := json.Marshal(now); err != nil || string(a) == string(b) {
		return nil, err
	}
	wasGroups, nowGroups := was.groups(), now.groups()
	out := map[string]map[string][]string{}
	note := func(u *User) {
		before, ok := was.groupsOf(u)
		after, kept := now.groupsOf(u)
		if !ok || !kept {
			return // not configured in both: removed or added, not narrowed
		}
		for _, r := range resources {
			if taken := scopesTakenFrom(wasGroups, nowGroups, before, after, r); len(taken) > 0 {
				if out[u.Username] == nil {
					out[u.Username] = map[string][]string{}
				}
				out[u.Username][CanonicalResource(r.URL)] = taken
			}
		}
	}
	for name := range now.Users {
		note(&User{Username: name, Source: sourceConfig})
	}
	err := usersIn(tx).each(func(u *User) error { note(u); return nil })
	return out, err
}

// groupsOf is the local groups l gives user u: a configured user's
// declared ones, an identity provider's user's by the provider's mapping
// (of the provider groups of its last sign-in), another stored user's
// own. ok is false when l does not declare the configured user or the
// provider.
func (l *groupLimits) groupsOf(u *User) (groups []string, ok bool) {
	switch {
	case u.Source == sourceConfig:
		groups, ok = l.Users[u.Username]
		return groups, ok
	case u.IdentityProvider != "":
		m, ok := l.Providers[u.IdentityProvider]
		if !ok {
			return nil, false
		}
		return (&IdentityProvider{GroupMap: m}).localGroups(u.IdPGroups), true
	}
	return u.Groups, true
}

// scopesTakenFrom are the scopes that wasGroups allow a member of before
// for r and nowGroups do not allow a member of after (groupScopes).
func scopesTakenFrom(wasGroups, nowGroups []Group, before, after []string, r Resource) []string {
	allowed := groupScopes(nowGroups, after, r)
	var taken []string
	for _, s := range groupScopes(wasGroups, before, r) {
		if !slices.Contains(allowed, s) && !slices.Contains(taken, s) {
			taken = append(taken, s)
		}
	}
	return taken
}

// clientLimits is what of a configured client's registration a grant
// rests on besides its credential (registrationNarrowed).
type clientLimits struct {
	GrantTypes []string `json:"grant_types,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Scopes     []string `json:"scopes,omitempty"`
	DPoP       bool     `json:"dpop_bound_access_tokens,omitempty"`
}

// narrowed reports whether cur allows less than l, as
// registrationNarrowed judges a client's update.
func (l clientLimits) narrowed(cur clientLimits) bool {
	return registrationNarrowed(l.client(), cur.client())
}

func (l clientLimits) client() *Client {
	return &Client{GrantTypes: l.GrantTypes, Resources: l.Resources, Scopes: l.Scopes, DPoPBoundAccessTokens: l.DPoP}
}

// samePoint reports whether cur points identity provider name where
// prev, the configuration applied before it (or after it, for an
// instance not reloaded yet), does: at the same issuer, client_id and
// tenant, the same population of users. A tenant prev does not record
// (a release before tenants counted recorded it) is taken as the same,
// so that the upgrade signs nobody out; the configuration applied next
// records it.
func samePoint(prev, cur *directorySnapshot, name string) bool {
	fp, kept := cur.IdentityProviders[name]
	if !kept || prev.IdentityProviders[name] != fp {
		return false
	}
	tenant, recorded := prev.IdentityProviderTenants[name]
	return !recorded || tenant == cur.IdentityProviderTenants[name]
}

// digest identifies the snapshot: a digest of its JSON (sorted keys).
func (s *directorySnapshot) digest() (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("encode %s record: %w", bucketConfig, err)
	}
	return fingerprint(string(b)), nil
}

// snapshotDigest is stored beside each snapshot, under digestKey: one
// small read tells an issuer whether the configuration applied is its
// own, without decoding every principal's fingerprint.
type snapshotDigest struct {
	Digest string `json:"digest"`
}

// digestKey is the key of the digest of the snapshot under issuer (an
// issuer URL never starts with "digest:").
func digestKey(issuer string) string { return "digest:" + issuer }

// configRecords are the snapshots of the configurations applied, one per
// issuer URL, and their digests.
type configRecords struct {
	t       table[directorySnapshot]
	digests table[snapshotDigest]
}

func configIn(tx store.Tx) configRecords {
	return configRecords{table[directorySnapshot]{tx, bucketConfig}, table[snapshotDigest]{tx, bucketConfig}}
}

func (r configRecords) get(issuer string) (*directorySnapshot, error) { return r.t.get(issuer) }

// digest is the digest of the snapshot under issuer; store.ErrNotFound
// when none is recorded (or it was recorded before digests were).
func (r configRecords) digest(issuer string) (string, error) {
	d, err := r.digests.get(digestKey(issuer))
	if err != nil {
		return "", err
	}
	return d.Digest, nil
}

func (r configRecords) put(issuer string, d *directorySnapshot) error {
	sum, err := d.digest()
	if err != nil {
		return err
	}
	if err := r.t.put(issuer, d, time.Time{}); err != nil {
		return err
	}
	return r.digests.put(digestKey(issuer), &snapshotDigest{Digest: sum}, time.Time{})
}
