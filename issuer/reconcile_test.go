package issuer

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// TestApplyConfigChanges: a configuration applied after another to the
// same store revokes what it removed or re-keyed, and nothing else;
// another issuer's configuration in the same store is not a change.
func TestApplyConfigChanges(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	apply := func(opts ...envOption) {
		t.Helper()
		e.restart(e.store, opts...)
		if err := e.iss.ApplyConfigChanges(ctx); err != nil {
			t.Fatalf("ApplyConfigChanges: %v", err)
		}
	}
	withoutUser := func(c *Config) {
		c.Users = slices.DeleteFunc(slices.Clone(c.Users), func(u User) bool { return u.Username == tUser })
	}
	rekeyClient := func(c *Config) {
		c.Clients = slices.Clone(c.Clients)
		for n := range c.Clients {
			if c.Clients[n].ID == tOnlyCC {
				c.Clients[n].SecretHash = hashClientSecret("new secret")
			}
		}
	}
	rekeyAgent := func(c *Config) {
		pub, err := publicJWK(e.jwtKey.Public())
		if err != nil {
			t.Fatal(err)
		}
		pub.Kid = "k2" // another key set: a rotation, as for a secret
		jwks, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
		c.Agents = slices.Clone(c.Agents)
		for n := range c.Agents {
			if c.Agents[n].ID == tAgentKey {
				c.Agents[n].JWKS = jwks
			}
		}
	}
	apply() // the first configuration only records itself

	user := e.userToken(t, tPublic, "read").AccessToken
	cc := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}}, tOnlyCC+":"+tSecret).str("access_token")
	agent := e.agentToken(t, tAgent1, tAgentSecret)
	assertion := e.clientAssertion(t, func(m jwt.MapClaims, _ *jwt.Token) { m["iss"], m["sub"] = tAgentKey, tAgentKey })
	keyAgent := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}, "scope": {"read"},
		"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {assertion}}, "").str("access_token")
	revoked := func(want map[string]bool) {
		t.Helper()
		for name, tok := range map[string]string{"user": user, "client": cc, "agent": agent, "key agent": keyAgent} {
			if got := e.revokedToken(t, tok); got != want[name] {
				t.Errorf("%s's token revoked = %v, want %v", name, got, want[name])
			}
		}
	}

	apply()
	revoked(map[string]bool{})
	apply(withPath("/other"), withoutUser) // another issuer sharing the store
	revoked(map[string]bool{})
	apply(rekeyClient)
	revoked(map[string]bool{"client": true})
	apply(rekeyClient, withoutUser)
	revoked(map[string]bool{"client": true, "user": true})
	apply(rekeyClient, withoutUser, rekeyAgent)
	revoked(map[string]bool{"client": true, "user": true, "key agent": true})
}
