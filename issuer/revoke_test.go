package issuer

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

func TestRevocation(t *testing.T) {
	e := newTokEnv(t)
	newGrant := func(t *testing.T) (at, rt string) {
		t.Helper()
		code, verifier := e.issueCode(t, codeSpec{client: tConf, scopes: []string{"read", "offline_access"}})
		tok, err := e.exchange(t, tConf, tSecret, code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken, tok.RefreshToken
	}
	revoke := func(t *testing.T, tok, hint, basic string) answer {
		t.Helper()
		v := url.Values{"token": {tok}}
		if hint != "" {
			v.Set("token_type_hint", hint)
		}
		return e.post(t, pathRevoke, v, basic)
	}
	refreshWorks := func(t *testing.T, rt string) bool {
		t.Helper()
		a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}, tConf+":"+tSecret)
		return a.status == 200
	}
	owner := tConf + ":" + tSecret

	t.Run("refresh token ends the grant", func(t *testing.T) {
		at, rt := newGrant(t)
		if a := revoke(t, rt, "refresh_token", owner); a.status != 200 || a.raw != "" {
			t.Fatalf("revoke = %d %q, want 200 and no body", a.status, a.raw)
		}
		if refreshWorks(t, rt) {
			t.Error("refresh works after revocation")
		}
		if e.active(t, at) {
			t.Error("access token of a revoked grant still active")
		}
		_, c := claimsOf(t, at)
		if !e.revoked(t, c["jti"].(string), c["gid"].(string)) {
			t.Error("Revoked(jti, gid) = false, want true")
		}
	})
	t.Run("access token only", func(t *testing.T) {
		at, rt := newGrant(t)
		if a := revoke(t, at, "", owner); a.status != 200 {
			t.Fatalf("revoke = %d %s", a.status, a.raw)
		}
		if e.active(t, at) {
			t.Error("revoked access token still active")
		}
		if !refreshWorks(t, rt) {
			t.Error("revoking an access token ended its grant")
		}
	})
	t.Run("wrong hint is ignored", func(t *testing.T) {
		_, rt := newGrant(t)
		revoke(t, rt, "access_token", owner)
		if refreshWorks(t, rt) {
			t.Error("refresh works after revocation with a wrong hint")
		}
	})
	t.Run("another client's token", func(t *testing.T) {
		at, rt := newGrant(t)
		for _, tok := range []string{at, rt} {
			if a := revoke(t, tok, "", tOnlyCC+":"+tSecret); a.status != 200 {
				t.Fatalf("revoke foreign token = %d %s, want 200", a.status, a.raw)
			}
		}
		if !e.active(t, at) || !refreshWorks(t, rt) {
			t.Error("another client revoked the tokens")
		}
	})
	t.Run("unknown token", func(t *testing.T) {
		if a := revoke(t, "nonsense", "", owner); a.status != 200 {
			t.Errorf("revoke unknown = %d %s, want 200", a.status, a.raw)
		}
	})
	t.Run("errors", func(t *testing.T) {
		if a := revoke(t, "", "", owner); a.status != 400 || a.str("error") != "invalid_request" {
			t.Errorf("revoke without token = %d %s, want invalid_request", a.status, a.raw)
		}
		if a := revoke(t, "x", "", tConf+":bad"); a.status != 401 || a.str("error") != "invalid_client" {
			t.Errorf("revoke with a bad secret = %d %s, want invalid_client", a.status, a.raw)
		}
		req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathRevoke), nil)
		if a := e.do(t, req); a.status != 405 {
			t.Errorf("GET revoke = %d, want 405", a.status)
		}
	})
	t.Run("public client revokes its own refresh token", func(t *testing.T) {
		code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read", "offline_access"}})
		tok, err := e.exchange(t, tPublic, "", code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		if a := e.post(t, pathRevoke, url.Values{"token": {tok.RefreshToken}, "client_id": {tPublic}}, ""); a.status != 200 {
			t.Fatalf("revoke = %d %s", a.status, a.raw)
		}
		a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, "")
		if a.str("error") != "invalid_grant" {
			t.Errorf("refresh after revocation = %d %s, want invalid_grant", a.status, a.raw)
		}
	})
}

// TestRevokedTokenOutlastsLeeway: a gateway takes an access token up to
// accesstoken.Leeway past its exp (clocks disagree), so a revocation
// refuses it that long too: in this instance's set, in the store a
// restarted instance loads, and after a purge; not a moment longer.
func TestRevokedTokenOutlastsLeeway(t *testing.T) {
	e := newTokEnv(t)
	tok, jti, gid := clientTokenOf(t, e)
	if a := e.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret); a.status != http.StatusOK {
		t.Fatalf("revoke = %d %s", a.status, a.raw)
	}
	_, c := claimsOf(t, tok)
	exp := time.Unix(int64(c["exp"].(float64)), 0)
	e.clock.Advance(exp.Add(accesstoken.Leeway - time.Second).Sub(e.clock.Now()))
	if _, err := e.store.Purge(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !e.revoked(t, jti, gid) {
		t.Errorf("Revoked %v past exp, within the gateways' leeway = false, want true", accesstoken.Leeway-time.Second)
	}
	e.restart(e.store)
	if !e.revoked(t, jti, gid) {
		t.Errorf("after a restart: Revoked %v past exp = false, want true", accesstoken.Leeway-time.Second)
	}
	e.clock.Advance(time.Second)
	if e.revoked(t, jti, gid) {
		t.Errorf("Revoked once a gateway refuses the token as expired = true, want false")
	}
}

// TestRevokeWithinLeeway: a token a gateway still takes, up to
// accesstoken.Leeway past its exp, can still be revoked at /revoke: one
// sent a moment past exp (by this clock, or by an instance's a little
// ahead of the gateway's) answered 200 and revoked nothing, and the
// gateways went on taking the token for the rest of the leeway.
func TestRevokeWithinLeeway(t *testing.T) {
	e := newTokEnv(t)
	tok, jti, gid := clientTokenOf(t, e)
	_, c := claimsOf(t, tok)
	exp := time.Unix(int64(c["exp"].(float64)), 0)
	e.clock.Advance(exp.Add(time.Second).Sub(e.clock.Now()))
	if a := e.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret); a.status != http.StatusOK {
		t.Fatalf("revoke = %d %s", a.status, a.raw)
	}
	if !e.revoked(t, jti, gid) {
		t.Errorf("Revoked after a revocation 1 s past exp, within the gateways' leeway = false, want true")
	}
}

// TestRevokeByActingAgent: a token exchange issues an agent's delegated
// token under the subject's client_id, so the agent it was issued to
// could introspect it but not revoke it (200, nothing revoked; RFC 7009
// section 2.1 lets a client revoke what was issued to it). An agent
// acting in a token revokes it; a party neither its client nor acting in
// it still revokes nothing.
func TestRevokeByActingAgent(t *testing.T) {
	e := newTokEnv(t)
	delegated := func(t *testing.T) (user, tok string) {
		t.Helper()
		u := e.userToken(t, tPublic, "read")
		a := e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(u.AccessToken, e.agentToken(t, tAgent1, tAgentSecret)))
		if a.status != http.StatusOK {
			t.Fatalf("exchange = %d %s, want 200", a.status, a.raw)
		}
		return u.AccessToken, a.str("access_token")
	}
	for _, tc := range []struct {
		name, basic string
		revoked     bool
	}{
		{"the acting agent", tAgent1 + ":" + tAgentSecret, true},
		{"another agent", tAgent2 + ":" + tAgentSecret, false},
		{"another confidential client", tConf + ":" + tSecret, false},
		// A resource server may introspect every token, not revoke it.
		{"a resource server (introspect)", tOnlyCC + ":" + tSecret, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, tok := delegated(t)
			if a := e.post(t, pathRevoke, url.Values{"token": {tok}}, tc.basic); a.status != http.StatusOK {
				t.Fatalf("revoke = %d %s, want 200", a.status, a.raw)
			}
			if got := !e.active(t, tok); got != tc.revoked {
				t.Errorf("delegated token revoked = %v, want %v", got, tc.revoked)
			}
			if !e.active(t, user) {
				t.Error("the user's own token was revoked with the delegate's")
			}
		})
	}
}
