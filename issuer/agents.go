package issuer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"slices"
)

// MaxDelegationDepth is the longest act chain this issuer mints (RFC 8693
// section 4.1 nesting), whatever an agent's MaxDepth says.
const MaxDelegationDepth = 5

// principal_type claim values. User tokens carry principalUser; tokens of
// an agent acting alone (sub is the agent) carry principalAgent; a
// client's own tokens (client credentials) carry principalClient, so a
// resource server that reads an absent claim as a user is never misled.
const (
	principalUser   = accesstoken.PrincipalUser
	principalAgent  = accesstoken.PrincipalAgent
	principalClient = accesstoken.PrincipalClient
)

// sourceAgent marks the Client an agent authenticates as.
const sourceAgent = "agent"

// validateAgent checks an agent's id, credentials and limits.
func validateAgent(a *Agent) error {
	if !usableName(a.ID, 500) {
		return errors.New(nameRule("agent id", 500))
	}
	if a.MaxDepth < 0 || a.MaxDepth > MaxDelegationDepth {
		// 0 is max_depth left out; given, the entry points refuse it.
		return fmt.Errorf("max_depth must be 1 to %d, or left out for %[1]d", MaxDelegationDepth)
	}
	// An agent without credentials could never prove itself; refusing it
	// keeps "public agent" from meaning "anyone who knows the id".
	n := 0
	for _, set := range []bool{a.SecretHash != "", len(a.JWKS) > 0, a.JWKSURI != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("needs exactly one of a secret hash, jwks or jwks_uri")
	}
	return validateClientAuth(agentClient(a))
}

// maxDepth is the longest act chain the agent may head.
func (a *Agent) maxDepth() int {
	if a.MaxDepth <= 0 || a.MaxDepth > MaxDelegationDepth {
		return MaxDelegationDepth
	}
	return a.MaxDepth
}

// allowsClient reports whether users of client id may delegate to a.
func (a *Agent) allowsClient(id string) bool {
	return len(a.AllowedClients) == 0 || slices.Contains(a.AllowedClients, id)
}

// limitScopes keeps the scopes the agent may hold. OpenID Connect scopes
// are about the user, who approved them, and pass.
func (a *Agent) limitScopes(scopes []string) []string {
	if len(a.Scopes) == 0 {
		return slices.Clone(scopes)
	}
	return slices.DeleteFunc(slices.Clone(scopes), func(s string) bool {
		return !slices.Contains(a.Scopes, s) && !slices.Contains(oidcScopes, s)
	})
}

// agentClient is the confidential client an agent authenticates as at the
// back-channel endpoints: its own credentials, client_credentials (its
// own token) and token exchange, its scope limit.
func agentClient(a *Agent) *Client {
	c := &Client{
		ID: a.ID, Name: a.Name, SecretHash: a.SecretHash, JWKS: a.JWKS, JWKSURI: a.JWKSURI,
		GrantTypes: []string{grantClientCredentials, grantTokenExchange},
		Scopes:     a.Scopes, Source: sourceAgent, agent: a,
	}
	normalizeAuthMethod(c)
	return c
}

// ---- management API ----

// PutAgent creates a runtime-managed agent; one that exists is
// store.ErrAlreadyExists (review s16-admin F1: it was replaced, and of two
// concurrent creations only the last secret worked). SecretHash is bcrypt
// or "sha256:<hex>" (RotateAgentSecret makes one), or JWKS / JWKSURI for
// private_key_jwt. The id must not be a client's. Creating an agent with
// Disabled set revokes any grants left under its id, as DisableAgent does.
func (i *Issuer) PutAgent(ctx context.Context, a Agent) error {
	if err := validateAgent(&a); err != nil {
		return invalidEntry("agent %q: %v", a.ID, err)
	}
	if err := i.policy.checkScopes(a.Scopes); err != nil {
		return invalidEntry("agent %q: %v", a.ID, err)
	}
	if i.dir.configuredAgent(a.ID) {
		return entryErr("agent", a.ID, ErrConfigured)
	}
	if i.dir.configuredClient(a.ID) {
		return invalidEntry("agent %q: a client has this id", a.ID)
	}
	if p := idpOfUsername(i.cfg.IdentityProviders, a.ID); p != nil {
		return invalidEntry("agent %q: names starting with %q belong to identity provider %s's users", a.ID, p.Name+":", p.Name)
	}
	a.Source = sourceAdmin
	return i.store.Update(ctx, func(tx store.Tx) error {
		if err := i.appliedNameClash(tx, principalAgent, a.ID); err != nil {
			return err
		}
		switch taken, err := clientsIn(tx).has(a.ID); {
		case err != nil:
			return err
		case taken:
			return invalidEntry("agent %q: a client has this id", a.ID)
		}
		switch taken, err := i.dir.userNameTaken(tx, a.ID); {
		case err != nil:
			return err
		case taken:
			return invalidEntry("agent %q: a user has this name", a.ID)
		}
		agents := agentsIn(tx)
		// Decided here, not by the caller's earlier read: of two
		// concurrent creations one fails, rather than both answering a
		// secret of which only one works (as PutUser, PutClient).
		switch _, err := agents.get(a.ID); {
		case err == nil:
			return entryErr("agent", a.ID, store.ErrAlreadyExists)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		a.CreatedAt = i.now()
		if err := agents.put(&a); err != nil {
			return err
		}
		if a.Disabled {
			return grantsIn(tx).revokeAgent(a.ID, i.revocation())
		}
		return nil
	})
}

// Agents lists configured and runtime-managed agents, by id, without their
// secret hashes.
func (i *Issuer) Agents(ctx context.Context) ([]Agent, error) {
	var out []Agent
	for _, a := range i.cfg.Agents {
		a.Source = sourceConfig
		out = append(out, a)
	}
	err := i.store.View(ctx, func(tx store.Tx) error {
		return agentsIn(tx).each(func(a *Agent) error {
			if !i.dir.configuredAgent(a.ID) {
				a.Source = sourceAdmin
				out = append(out, *a)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	for n := range out {
		out[n].SecretHash = ""
	}
	slices.SortFunc(out, func(a, b Agent) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Agent returns one agent, disabled or not, without its secret hash. An
// unknown id is store.ErrNotFound.
func (i *Issuer) Agent(ctx context.Context, id string) (Agent, error) {
	a, err := i.dir.findAgent(ctx, id)
	if err != nil {
		return Agent{}, err
	}
	a.SecretHash = ""
	return *a, nil
}

// DeleteAgent removes a runtime-managed agent, revokes every grant it
// holds or acts in (its own tokens, the users' delegations to it, and the
// grants whose tokens were exchanged to it) and deletes the users'
// consents to it: an agent added later under the same id is asked for
// again.
func (i *Issuer) DeleteAgent(ctx context.Context, id string) error {
	if i.dir.configuredAgent(id) {
		return entryErr("agent", id, ErrConfigured)
	}
	if err := i.revokeAhead(ctx, agentGrants(id), agentExists(id)); err != nil {
		return err
	}
	return i.store.Update(ctx, func(tx store.Tx) error {
		if err := agentsIn(tx).remove(id); err != nil {
			return entryErr("agent", id, err)
		}
		if err := consentsIn(tx).deleteNaming(id); err != nil {
			return err
		}
		return grantsIn(tx).revokeAgent(id, i.revocation())
	})
}

// agentExists refuses an agent the store does not hold (revokeAhead's
// check).
func agentExists(id string) func(store.Tx) error {
	return func(tx store.Tx) error {
		if _, err := agentsIn(tx).get(id); err != nil {
			return entryErr("agent", id, err)
		}
		return nil
	}
}

// DisableAgent disables a runtime-managed agent and revokes its grants
// (as DeleteAgent). It can no longer authenticate, act, or be requested.
func (i *Issuer) DisableAgent(ctx context.Context, id string) error {
	return i.setAgentDisabled(ctx, id, true)
}

// EnableAgent enables a disabled runtime-managed agent. Revoked grants
// stay revoked.
func (i *Issuer) EnableAgent(ctx context.Context, id string) error {
	return i.setAgentDisabled(ctx, id, false)
}

func (i *Issuer) setAgentDisabled(ctx context.Context, id string, disabled bool) error {
	if i.dir.configuredAgent(id) {
		return entryErr("agent", id, ErrConfigured)
	}
	if disabled {
		if err := i.revokeAhead(ctx, agentGrants(id), agentExists(id)); err != nil {
			return err
		}
	}
	return i.store.Update(ctx, func(tx store.Tx) error {
		agents := agentsIn(tx)
		a, err := agents.get(id)
		if err != nil {
			return entryErr("agent", id, err)
		}
		a.Disabled = disabled
		if err := agents.put(a); err != nil {
			return err
		}
		if disabled {
			return grantsIn(tx).revokeAgent(id, i.revocation())
		}
		return nil
	})
}

// RotateAgentSecret generates a new secret for an agent that
// authenticates with one, stores only its hash, and returns it once. The
// old secret stops working, and the agent's own tokens and the users'
// delegations to it are revoked (a rotation usually means the old secret
// leaked: revokeAgentRekeyed).
func (i *Issuer) RotateAgentSecret(ctx context.Context, id string) (string, error) {
	if i.dir.configuredAgent(id) {
		return "", entryErr("agent", id, ErrConfigured)
	}
	secret, hash, err := i.newSecret()
	if err != nil {
		return "", err
	}
	rotatable := func(tx store.Tx) (*Agent, error) {
		a, err := agentsIn(tx).get(id)
		if err != nil {
			return nil, entryErr("agent", id, err)
		}
		if a.SecretHash == "" {
			return nil, invalidEntry("agent %q does not authenticate with a secret", id)
		}
		return a, nil
	}
	if err := i.revokeAhead(ctx, agentRekeyedGrants(id), func(tx store.Tx) error { _, err := rotatable(tx); return err }); err != nil {
		return "", err
	}
	err = i.store.Update(ctx, func(tx store.Tx) error {
		agents := agentsIn(tx)
		a, err := rotatable(tx)
		if err != nil {
			return err
		}
		a.SecretHash = hash
		if err := agents.put(a); err != nil {
			return err
		}
		return grantsIn(tx).revokeAgentRekeyed(id, i.revocation())
	})
	if err != nil {
		return "", err
	}
	return secret, nil
}
