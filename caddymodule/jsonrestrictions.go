package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/gateway"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
)

// UnmarshalJSON reads a rule, refusing "max_depth": 0 as the Caddyfile
// does (maxDepthArg): 0 is what an absent max_depth reads as, no limit,
// so written to allow no delegation it would allow the most (review
// s17-fresh3 F3); and "agents": [] for the same reason (any agent).
func (r *Rule) UnmarshalJSON(b []byte) error {
	type plain Rule
	if err := decodeStrict(b, (*plain)(r)); err != nil {
		return err
	}
	return entryRefused("rule", r.Match, maxDepthGiven(b, "no limit; user_only refuses delegated tokens"),
		refuseEmptyLists(b, emptyMeans{"agents", "any agent may act"}))
}

// UnmarshalJSON reads an agent, refusing "max_depth": 0 (see Rule's) and
// empty allowed_clients or scopes.
func (a *Agent) UnmarshalJSON(b []byte) error {
	type plain Agent
	if err := decodeStrict(b, (*plain)(a)); err != nil {
		return err
	}
	return entryRefused("agent", a.ID, maxDepthGiven(b, "the issuer's limit, 5"),
		refuseEmptyLists(b, emptyMeans{"allowed_clients", "any client may use the agent"}, emptyMeans{"scopes", "the agent may hold any scope"}))
}

// UnmarshalJSON reads a client strictly, refusing an empty resources or
// scopes list (see refuseEmptyLists), and an empty grant_types, which
// reads as the default grant types.
func (c *Client) UnmarshalJSON(b []byte) error {
	type plain Client
	if err := decodeStrict(b, (*plain)(c)); err != nil {
		return err
	}
	return entryRefused("client", c.ID, refuseEmptyLists(b, emptyMeans{"resources", "every resource"}, emptyMeans{"scopes", "every scope of a resource"},
		emptyMeans{"grant_types", "the default grant types, authorization_code and refresh_token"}))
}

// entryRefused is the first of errs, naming the entry (kind and id or
// match) it was found in: a configuration may hold many entries with the
// same member, and one an earlier version loaded must be found to be
// fixed.
func entryRefused(kind, name string, errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("%s %q: %w", kind, name, err)
		}
	}
	return nil
}

// UnmarshalJSON reads an identity provider strictly, refusing an empty
// allowed_email_domains (see refuseEmptyLists), and "recheck": 0 (or
// "0s"), which the Caddyfile cannot write (durationArg): 0 reads as the
// default, an hour, so written to have every refresh wait for a new
// sign-in at the provider it would let a person the provider has
// disabled go on refreshing for an hour.
func (p *IdentityProvider) UnmarshalJSON(b []byte) error {
	type plain IdentityProvider
	if err := decodeStrict(b, (*plain)(p)); err != nil {
		return err
	}
	if err := refuseEmptyLists(b, emptyMeans{"allowed_email_domains", "every email domain: any account the provider has may sign in"}); err != nil {
		return err
	}
	var given struct {
		Recheck *caddy.Duration `json:"recheck"`
	}
	if err := json.Unmarshal(b, &given); err != nil {
		return err
	}
	if given.Recheck != nil && *given.Recheck == 0 {
		return fmt.Errorf("identity_provider %q: recheck 0: want a duration of at least 1s, such as \"1s\" (0 would mean the default, an hour)", p.Name)
	}
	return nil
}

// emptyMeans names a restriction list and what it reads as when empty.
type emptyMeans struct{ field, means string }

// refuseEmptyLists refuses each of lists given as [] (or null, what a
// generator writes for a nil list) in the JSON object b: an empty list
// reads as an absent one, no restriction, so written to allow nothing it
// would allow everything. (The Caddyfile cannot write
// one: a directive needs an argument.) Names match in any case, as
// encoding/json decodes them.
func refuseEmptyLists(b []byte, lists ...emptyMeans) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		return err
	}
	for _, l := range lists {
		if v := issuer.EmptyList(members, l.field, true); v != "" {
			return fmt.Errorf("%s %s: list at least one entry, or leave %s out (empty, it means %s)", l.field, v, l.field, l.means)
		}
	}
	return nil
}

// maxDepthGiven refuses a max_depth given as 0 in the JSON object b,
// which would mean zero.
func maxDepthGiven(b []byte, zero string) error {
	var given struct {
		MaxDepth *int `json:"max_depth"`
	}
	if err := json.Unmarshal(b, &given); err != nil {
		return err
	}
	if given.MaxDepth != nil && *given.MaxDepth == 0 {
		return fmt.Errorf("max_depth 0: want at least 1 (0 would mean %s)", zero)
	}
	return nil
}

// decodeStrict decodes b into v as Caddy decodes a config: a type's own
// UnmarshalJSON would otherwise let a misspelt field inside it load
// unnoticed.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// UnmarshalJSON reads the introspection settings, refusing "cache": 0 (or
// "0s"), which the Caddyfile cannot write (durationArg): 0 is what an
// absent cache reads as, the default of a minute, so written to have
// every request asked of the issuer it would let a token revoked there
// pass for a minute more.
func (in *Introspection) UnmarshalJSON(b []byte) error {
	type plain Introspection
	if err := decodeStrict(b, (*plain)(in)); err != nil {
		return err
	}
	var given struct {
		Cache *caddy.Duration `json:"cache"`
	}
	if err := json.Unmarshal(b, &given); err != nil {
		return err
	}
	if given.Cache != nil && *given.Cache == 0 {
		return fmt.Errorf("introspection cache 0: want a positive duration such as 5s (0 would mean the default, %v; 1ns reuses no answer)", gateway.DefaultIntrospectionCache)
	}
	return nil
}
