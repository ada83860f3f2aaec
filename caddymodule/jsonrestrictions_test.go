package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// TestJSONMaxDepthZeroRefused (review s17-fresh3 F3): "max_depth": 0 in
// a JSON config is refused as max_depth 0 in the Caddyfile is: it reads
// as the default (no limit for a rule, the issuer's 5 for an agent), so
// written to allow no delegation it would allow the most. Other values
// load, and a misspelt field in a rule or agent is still refused.
func TestJSONMaxDepthZeroRefused(t *testing.T) {
	for _, tt := range []struct {
		json string
		err  string // "" to load
	}{
		{`{"tools":[{"match":"*","max_depth":0}]}`, `rule "*": max_depth 0`},
		{`{"tools":[{"match":"*","max_depth":2}]}`, ""},
		{`{"tools":[{"match":"*"}]}`, ""},
		{`{"tools":[{"match":"*","max_dpeth":2}]}`, "unknown field"},
		{`{"tools":[{"match":"*","args":[{"pointer":"/a","predicate":"present","optinal":true}]}]}`, "unknown field"},
	} {
		var h GatewayHandler
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &h)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want %q", tt.json, err, tt.err)
		}
		if tt.err == "" && strings.Contains(tt.json, `"max_depth":2`) && h.Tools[0].MaxDepth != 2 {
			t.Errorf("%s: max_depth %d", tt.json, h.Tools[0].MaxDepth)
		}
	}
	for _, tt := range []struct {
		json string
		err  string
	}{
		{`{"agents":[{"agent_id":"a","max_depth":0}]}`, `agent "a": max_depth 0`},
		{`{"agents":[{"agent_id":"a","max_depth":1}]}`, ""},
		{`{"agents":[{"agent_id":"a","scope":["x"]}]}`, "unknown field"},
	} {
		var a App
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &a)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want %q", tt.json, err, tt.err)
		}
	}
}

// TestJSONEmptyRestrictionRefused: in a JSON config, a restriction list
// given empty ("agents": [] in a rule, "allowed_clients" or "scopes" of
// an agent, "resources" or "scopes" of a client) is refused: an empty
// list reads as an absent one, no restriction, so written to allow no
// agent, client, scope or resource it would allow every one. The
// Caddyfile cannot write one (a directive needs an argument). The error
// names the entry (client, agent, or the rule by its match), as a
// configuration an earlier version loaded may hold many. Lists with
// entries load, and a misspelt client field is still refused.
func TestJSONEmptyRestrictionRefused(t *testing.T) {
	for _, tt := range []struct {
		json string
		err  string // "" to load
	}{
		{`{"tools":[{"match":"*","agents":[]}]}`, `rule "*": agents []`},
		{`{"prompts":[{"match":"p","agents":["a"]},{"match":"q*","agents":[]}]}`, `rule "q*": agents []`},
		{`{"tools":[{"match":"*","agents":["a"]}]}`, ""},
		// null is what a generator writes for a nil list: as ambiguous.
		{`{"tools":[{"match":"*","agents":null}]}`, `agents null`},
	} {
		var h GatewayHandler
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &h)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want %q", tt.json, err, tt.err)
		}
	}
	for _, tt := range []struct {
		json string
		err  string
	}{
		{`{"agents":[{"agent_id":"a","allowed_clients":[]}]}`, `agent "a": allowed_clients []`},
		{`{"agents":[{"agent_id":"a","scopes":["x"]},{"agent_id":"b","scopes":[]}]}`, `agent "b": scopes []`},
		{`{"agents":[{"agent_id":"a","allowed_clients":["c"],"scopes":["x"]}]}`, ""},
		{`{"clients":[{"client_id":"c","public":true,"scopes":["x"]},{"client_id":"d","public":true,"scopes":[]}]}`, `client "d": scopes []`},
		{`{"clients":[{"client_id":"c","public":true,"resources":[]}]}`, `client "c": resources []`},
		{`{"clients":[{"client_id":"c","public":true,"resources":["https://h/mcp"],"scopes":["x"]}]}`, ""},
		{`{"clients":[{"client_id":"c","public":true,"scope":["x"]}]}`, "unknown field"},
		{`{"agents":[{"agent_id":"a","scopes":null}]}`, `scopes null`},
		{`{"clients":[{"client_id":"c","public":true,"resources": null }]}`, `resources null`},
		{`{"clients":[{"client_id":"c","public":true,"grant_types":[]}]}`, `client "c": grant_types []`},
		{`{"clients":[{"client_id":"c","public":true,"grant_types":null}]}`, `client "c": grant_types null`},
		{`{"clients":[{"client_id":"c","public":true,"grant_types":["authorization_code"]}]}`, ""},
	} {
		var a App
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &a)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want %q", tt.json, err, tt.err)
		}
	}
}

// TestJSONEmptyEmailDomainsRefused: an identity provider's
// "allowed_email_domains": [] is refused as the other restriction lists
// are (TestJSONEmptyRestrictionRefused): empty, it reads as one left out,
// every email domain, so written to admit no domain it admitted every
// account the provider has (at Google or a multi-tenant Entra endpoint,
// anyone's) to its group_map's groups, at sign-in and through its
// ID-JAGs. Lists with entries load; a misspelt field is still refused.
func TestJSONEmptyEmailDomainsRefused(t *testing.T) {
	const idp = `"name":"corp","issuer":"https://idp.example","client_id":"c","group_map":{"*":["users"]}`
	for _, tt := range []struct {
		json string
		err  string // "" to load
	}{
		{`{"identity_providers":[{` + idp + `,"allowed_email_domains":[]}]}`, `allowed_email_domains []`},
		{`{"identity_providers":[{` + idp + `,"allowed_email_domains":[ ]}]}`, `allowed_email_domains []`},
		{`{"identity_providers":[{` + idp + `,"allowed_email_domains":null}]}`, `allowed_email_domains null`},
		{`{"identity_providers":[{` + idp + `,"allowed_email_domains":["example.com"],"recheck":"2h"}]}`, ""},
		{`{"identity_providers":[{` + idp + `}]}`, ""},
		{`{"identity_providers":[{` + idp + `,"allowed_email_domain":["example.com"]}]}`, "unknown field"},
	} {
		var a App
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &a)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want %q", tt.json, err, tt.err)
		}
		if tt.err == "" && strings.Contains(tt.json, "recheck") && (len(a.IdentityProviders) != 1 || a.IdentityProviders[0].AllowedEmailDomains[0] != "example.com" || a.IdentityProviders[0].Recheck == 0) {
			t.Errorf("%s: read as %+v", tt.json, a.IdentityProviders)
		}
	}
}

// TestJSONRecheckZeroRefused: in a JSON config, an identity provider's
// "recheck" of 0 (a number or "0s") is refused, as `recheck 0` is in the
// Caddyfile: 0 reads as the default, an hour, so an operator who wrote
// it to have every refresh wait for a new sign-in at the provider let a
// person disabled there refresh for an hour more. A positive recheck and
// none load, as written.
func TestJSONRecheckZeroRefused(t *testing.T) {
	const idp = `"name":"corp","issuer":"https://idp.example","client_id":"c"`
	for _, tt := range []struct {
		json string
		err  string // "" to load
		want caddy.Duration
	}{
		{`{"identity_providers":[{` + idp + `,"recheck":0}]}`, `identity_provider "corp": recheck 0: want a duration of at least 1s`, 0},
		{`{"identity_providers":[{` + idp + `,"recheck":"0s"}]}`, "recheck 0: want", 0},
		{`{"identity_providers":[{` + idp + `,"RECHECK":"0m"}]}`, "recheck 0: want", 0},
		{`{"identity_providers":[{` + idp + `,"recheck":"1s"}]}`, "", caddy.Duration(time.Second)},
		{`{"identity_providers":[{` + idp + `}]}`, "", 0},
	} {
		var a App
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &a)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want %q", tt.json, err, tt.err)
			continue
		}
		if tt.err == "" && (len(a.IdentityProviders) != 1 || a.IdentityProviders[0].Recheck != tt.want) {
			t.Errorf("%s: read as %+v, want recheck %v", tt.json, a.IdentityProviders, tt.want)
		}
	}
}

// TestJSONIntrospectionCacheZeroRefused: in a JSON config, an
// introspection "cache" of 0 (a number or "0s") is refused, as `cache 0`
// is in the Caddyfile: 0 reads as the default, a minute, so an operator
// who wrote it to have every request asked of the issuer got a token
// revoked there taken for a minute more. A positive cache, 1ns (every
// request asks), and none load; a misspelt field is still refused.
func TestJSONIntrospectionCacheZeroRefused(t *testing.T) {
	const in = `"issuer":"https://as.example","introspection":{"client_id":"gw"`
	for _, tt := range []struct {
		json string
		err  string // "" to load
		want caddy.Duration
	}{
		{`{` + in + `,"cache":0}}`, "introspection cache 0: want a positive duration", 0},
		{`{` + in + `,"cache":"0s"}}`, "introspection cache 0: want a positive duration", 0},
		{`{` + in + `,"cache":"0"}}`, "introspection cache 0: want a positive duration", 0},
		{`{` + in + `,"cache":"5s"}}`, "", caddy.Duration(5 * time.Second)},
		{`{` + in + `,"cache":1}}`, "", 1},
		{`{` + in + `}}`, "", 0},
		{`{` + in + `,"cahce":"5s"}}`, "unknown field", 0},
	} {
		var h GatewayHandler
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &h)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want %q", tt.json, err, tt.err)
			continue
		}
		if tt.err == "" && (h.Introspection == nil || h.Introspection.ClientID != "gw" || h.Introspection.Cache != tt.want) {
			t.Errorf("%s: read as %+v, want cache %d", tt.json, h.Introspection, tt.want)
		}
	}
}

// TestJSONRevocationMaxStaleZeroRefused: in a JSON config,
// "revocation_max_stale": 0 (or "0s") is refused, as the Caddyfile
// cannot write it: 0 reads as the default, 30 seconds, so an operator who
// wrote it to have the gateways refuse tokens as soon as the revocations
// may be stale had them take tokens revoked elsewhere for 30 seconds
// more. A duration loads, and so does leaving it out.
func TestJSONRevocationMaxStaleZeroRefused(t *testing.T) {
	for _, tt := range []struct {
		json string
		err  string // "" to load
		want caddy.Duration
	}{
		{`{"revocation_max_stale":0}`, "revocation_max_stale 0: want a duration", 0},
		{`{"revocation_max_stale":"0s"}`, "revocation_max_stale 0: want a duration", 0},
		{`{"revocation_max_stale":"2s"}`, "", caddy.Duration(2 * time.Second)},
		{`{}`, "", 0},
		{`{"revocation_max_stale":"2s","REVOCATION_MAX_STALE":0}`, "twice", 0},
	} {
		var a App
		err := caddy.StrictUnmarshalJSON([]byte(tt.json), &a)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("%s: %v, want %q", tt.json, err, tt.err)
			continue
		}
		if tt.err == "" && a.RevocationMaxStale != tt.want {
			t.Errorf("%s: read as %v, want %v", tt.json, a.RevocationMaxStale, tt.want)
		}
	}
}
