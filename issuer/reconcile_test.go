package issuer

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
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

// TestGrantsBoundToIssuerURL: a reload that changes the issuer URL (and,
// say, a user's password at the same time) compares against no earlier
// directory of the new URL, so it revokes nothing; the refresh tokens and
// codes of the old URL are refused at the new one instead, and its refresh
// tokens introspect as inactive there. Grants from before grants recorded
// their issuer stay valid.
func TestGrantsBoundToIssuerURL(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	if err := e.iss.ApplyConfigChanges(ctx); err != nil {
		t.Fatal(err)
	}
	tok := e.userToken(t, tPublic, "read", "offline_access")
	legacy := e.userToken(t, tPublic, "read", "offline_access")
	// Refresh tokens introspect as active only to their (confidential)
	// client.
	confTok := e.userToken(t, tConf, "read", "offline_access")
	confLegacy := e.userToken(t, tConf, "read", "offline_access")
	for _, at := range []string{legacy.AccessToken, confLegacy.AccessToken} {
		_, lc := claimsOf(t, at)
		g := e.grantOf(t, lc["gid"].(string))
		g.Issuer = ""
		e.put(bucketGrants, g.ID, &g, g.ExpiresAt)
	}
	introspect := func(rt string) answer {
		return e.post(t, pathIntrospect, url.Values{"token": {rt}}, tConf+":"+tSecret)
	}
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read"}})

	newPassword := func(c *Config) {
		c.Users = slices.Clone(c.Users)
		c.Users[0].PasswordHash = secretHash()
	}
	e.restart(e.store, withPath("/auth"), newPassword)
	if err := e.iss.ApplyConfigChanges(ctx); err != nil {
		t.Fatal(err)
	}
	refresh := func(rt string) answer {
		return e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {rt}, "client_id": {tPublic}}, "")
	}
	if a := refresh(tok.RefreshToken); a.status != 400 || a.str("error") != "invalid_grant" {
		t.Errorf("refresh of the old URL's grant at the new URL = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	if a := introspect(confTok.RefreshToken); a.status != 200 || a.body["active"] != false {
		t.Errorf("introspection of the old URL's refresh token at the new URL = %d %s, want inactive", a.status, a.raw)
	}
	if a := introspect(confLegacy.RefreshToken); a.body["active"] != true {
		t.Errorf("introspection of a refresh token whose grant recorded no issuer = %s, want active", a.raw)
	}
	if _, err := e.exchange(t, tPublic, "", code, verifier); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("code of the old URL redeemed at the new URL: %v, want invalid_grant", err)
	}
	if a := refresh(legacy.RefreshToken); a.status != 200 {
		t.Errorf("refresh of a grant that recorded no issuer = %d %s, want 200", a.status, a.raw)
	}
	// Back at the old URL, the reload's password change is seen: alice's
	// grants there are revoked.
	e.restart(e.store, newPassword)
	if err := e.iss.ApplyConfigChanges(ctx); err != nil {
		t.Fatal(err)
	}
	if a := refresh(tok.RefreshToken); a.status != 400 || a.str("error") != "invalid_grant" {
		t.Errorf("refresh after the password change at the old URL = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
}

// TestSessionBoundToIssuerURL: a login session counts only under the
// issuer URL it was started under, so after a change of issuer (with a
// password changed in the same reload, say) its users sign in again, as
// their refresh tokens and codes of the old URL are refused; a session
// recorded before sessions named their URL counts under any.
func TestSessionBoundToIssuerURL(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	st := memory.New(memory.Options{Now: func() time.Time { return now }})
	cfg := Config{Now: func() time.Time { return now }, SessionTTL: time.Hour}
	old, _ := url.Parse("http://127.0.0.1:8080")
	moved, _ := url.Parse("http://127.0.0.1:8080/v2")
	for id, issuer := range map[string]string{"sid-old": old.String(), "sid-any": ""} {
		err := st.Update(t.Context(), func(tx store.Tx) error {
			return sessionsIn(tx).replace("", id, &session{Browser: "b", Issuer: issuer, User: "bob", AuthTime: now, ExpiresAt: now.Add(time.Hour)})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		at   *url.URL
		id   string
		want bool
	}{
		{old, "sid-old", true},
		{moved, "sid-old", false},
		{old, "sid-any", true},
		{moved, "sid-any", true},
	} {
		ss := newSessions(st, &cfg, tt.at, nil)
		r := httptest.NewRequest(http.MethodGet, tt.at.String()+"/authorize", nil)
		r.AddCookie(&http.Cookie{Name: ss.cookieName(), Value: tt.id})
		s, _, err := ss.current(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := s != nil && s.User == "bob"; got != tt.want {
			t.Errorf("session %s under %s: signed in %v, want %v", tt.id, tt.at, got, tt.want)
		}
	}
}
