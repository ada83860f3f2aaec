package issuer

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// delegated redeems a code bound to actor with actorTok, as the MCP client
// tPublic does with x/oauth2.
func (e *testEnv) delegated(t *testing.T, actor, actorTok string, scopes ...string) *oauth2.Token {
	t.Helper()
	code, verifier := e.issueCode(t, codeSpec{actor: actor, scopes: scopes})
	tok, err := e.exchange(t, tPublic, "", code, verifier,
		oauth2.SetAuthURLParam("actor_token", actorTok), oauth2.SetAuthURLParam("actor_token_type", tokenTypeAccessToken))
	if err != nil {
		t.Fatalf("delegated code for %s: %v", actor, err)
	}
	return tok
}

func TestOnBehalfOf(t *testing.T) {
	e := newTokEnv(t)
	agentTok := e.agentToken(t, tAgent1, tAgentSecret)
	// admin is in the code but agent-1 may never hold it.
	tok := e.delegated(t, tAgent1, agentTok, "read", "write", "admin", "openid", "offline_access")
	c := verifyLikeGateway(t, e, tok.AccessToken, "ES256")
	act, _ := c["act"].(map[string]any)
	if c["sub"] != tUser || c["client_id"] != tPublic || c["principal_type"] != "user" || act["sub"] != tAgent1 || len(act) != 1 {
		t.Fatalf("claims sub, client_id, principal_type, act = %v, %v, %v, %v; want %s, %s, user, {sub: %s}",
			c["sub"], c["client_id"], c["principal_type"], c["act"], tUser, tPublic, tAgent1)
	}
	if c["scope"] != "read write openid offline_access" {
		t.Errorf("scope = %v, want the code's scopes the agent may hold", c["scope"])
	}

	// Introspection and userinfo show the delegation.
	in := e.introspect(t, tok.AccessToken)
	if ia, _ := in.body["act"].(map[string]any); ia["sub"] != tAgent1 || in.str("principal_type") != "user" {
		t.Errorf("introspection = %s, want act {sub: %s} and principal_type user", in.raw, tAgent1)
	}
	req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo), nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	if ui := e.do(t, req); ui.status != 200 || ui.body["act"].(map[string]any)["sub"] != tAgent1 {
		t.Errorf("userinfo = %d %s, want act {sub: %s}", ui.status, ui.raw, tAgent1)
	}

	// Refresh keeps the delegation without a new actor token, and never
	// widens it.
	refresh := func(rt, scope string) answer {
		v := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {tPublic}}
		if scope != "" {
			v.Set("scope", scope)
		}
		return e.post(t, pathToken, v, "")
	}
	if a := refresh(tok.RefreshToken, "read admin"); a.str("error") != "invalid_scope" {
		t.Errorf("refresh asking for admin = %s, want invalid_scope", a.raw)
	}
	a := refresh(tok.RefreshToken, "read offline_access")
	if a.status != 200 {
		t.Fatalf("narrowing refresh = %d %s", a.status, a.raw)
	}
	_, rc := claimsOf(t, a.str("access_token"))
	if ract, _ := rc["act"].(map[string]any); ract["sub"] != tAgent1 || rc["scope"] != "read offline_access" || rc["sub"] != tUser {
		t.Errorf("refreshed sub, act, scope = %v, %v, %v; want %s, {sub: %s}, read offline_access", rc["sub"], rc["act"], rc["scope"], tUser, tAgent1)
	}
	a = refresh(a.str("refresh_token"), "")
	if _, rc := claimsOf(t, a.str("access_token")); rc["scope"] != "read write openid offline_access" {
		// Refresh without scope gives the grant back, no more.
		t.Errorf("refresh without scope: scope = %v (%s)", rc["scope"], a.raw)
	}
}

// TestRevokeActorTokenRevokesDelegatedGrant: the agent's own token proves
// a delegated code's actor (requested_actor), as it proves a token
// exchange's. An agent that finds that token leaked and revokes it at
// /revoke ends the delegations redeemed with it, refresh tokens and the
// tokens exchanged from them included, as it ends the tokens exchanged
// with it (TestRevokeActorTokenRevokesExchanged); the user's own grant
// of the client, and a delegation redeemed with another of the agent's
// tokens, stay.
func TestRevokeActorTokenRevokesDelegatedGrant(t *testing.T) {
	e := newTokEnv(t)
	agent1 := tAgent1 + ":" + tAgentSecret
	leaked := e.agentToken(t, tAgent1, tAgentSecret)
	other := e.agentToken(t, tAgent1, tAgentSecret)
	delegated := e.delegated(t, tAgent1, leaked, "read", "offline_access")
	kept := e.delegated(t, tAgent1, other, "read", "offline_access")
	own := e.userToken(t, tPublic, "read", "offline_access")
	x := e.tokenExchange(t, agent1, exchangeForm(delegated.AccessToken, ""))
	if x.status != http.StatusOK {
		t.Fatalf("the agent exchanging its delegated token = %d %s, want 200", x.status, x.raw)
	}
	exchanged := x.str("access_token")

	if r := e.post(t, pathRevoke, url.Values{"token": {leaked}}, agent1); r.status != http.StatusOK {
		t.Fatalf("revoke the actor token = %d %s, want 200", r.status, r.raw)
	}
	for name, tok := range map[string]string{"delegated access token": delegated.AccessToken, "token exchanged from it": exchanged} {
		if !e.revokedToken(t, tok) || e.active(t, tok) {
			t.Errorf("%s of the revoked actor token: not revoked", name)
		}
	}
	refresh := func(rt string) answer {
		return e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {tPublic}}, "")
	}
	if a := refresh(delegated.RefreshToken); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("refresh of the delegation made with the revoked actor token = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	for name, tok := range map[string]*oauth2.Token{"delegation made with another token of the agent": kept, "the user's own grant": own} {
		if e.revokedToken(t, tok.AccessToken) || !e.active(t, tok.AccessToken) {
			t.Errorf("%s: revoked with the agent's token", name)
		}
		if a := refresh(tok.RefreshToken); a.status != http.StatusOK {
			t.Errorf("refresh of %s = %d %s, want 200", name, a.status, a.raw)
		}
	}
}

// TestDelegatedCodeAtInstanceOnOldAgentScopes: during a rolling reload
// that gives an agent a scope, a user's delegation to it authorized at an
// instance already on the new configuration may be redeemed at one still
// on the old, where the agent may hold none of the code's scopes. That is
// invalid_scope, as the same delegation's refresh there is, never a token
// with an empty scope (which every method that needs no scope accepts);
// a code the agent may hold some of is narrowed to them, as before.
func TestDelegatedCodeAtInstanceOnOldAgentScopes(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := memory.New(memory.Options{Now: clock.Now, RunTwice: true})
	oneURL := func(c *Config) { c.Issuer = "http://localhost:9" }
	agent1 := func(scopes ...string) envOption {
		return withEntry(func(c *Config) *[]Agent { return &c.Agents }, func(a *Agent) bool { return a.ID == tAgent1 },
			func(a *Agent) { a.Scopes = scopes })
	}
	a, b := newTokEnvStore(t, st, clock, oneURL, agent1("read")), newTokEnvStore(t, st, clock, oneURL, agent1("read"))
	behindOneURL([]*testEnv{a, b})
	a.applyConfig(t, oneURL, agent1("read"))
	a.applyConfig(t, oneURL, agent1("read", "write"))
	redeem := func(at *testEnv, scopes ...string) answer {
		t.Helper()
		code, verifier := a.issueCode(t, codeSpec{actor: tAgent1, scopes: scopes})
		return at.post(t, pathToken, url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "code_verifier": {verifier},
			"redirect_uri": {tRedirect}, "client_id": {tPublic}, "actor_token": {at.agentToken(t, tAgent1, tAgentSecret)},
			"actor_token_type": {tokenTypeAccessToken}}, "")
	}
	for _, tt := range []struct {
		at        *testEnv
		name      string
		scopes    []string
		wantScope string // "" for invalid_scope
	}{
		{a, "new configuration", []string{"write"}, "write"},
		{b, "old configuration", []string{"write"}, ""},
		{b, "old configuration", []string{"read", "write", "offline_access"}, "read offline_access"},
	} {
		r := redeem(tt.at, tt.scopes...)
		if tt.wantScope == "" {
			if r.status != http.StatusBadRequest || r.str("error") != "invalid_scope" || r.str("access_token") != "" {
				t.Errorf("code for %v redeemed at the instance on the %s = %d %s, want 400 invalid_scope", tt.scopes, tt.name, r.status, r.raw)
			}
			continue
		}
		if r.status != http.StatusOK {
			t.Errorf("code for %v redeemed at the instance on the %s = %d %s, want 200", tt.scopes, tt.name, r.status, r.raw)
			continue
		}
		if _, c := claimsOf(t, r.str("access_token")); c["scope"] != tt.wantScope {
			t.Errorf("code for %v redeemed at the instance on the %s: scope = %v, want %q", tt.scopes, tt.name, c["scope"], tt.wantScope)
		}
	}
}

func TestOnBehalfOfFailures(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	agentTok := e.agentToken(t, tAgent1, tAgentSecret)
	otherAgentTok := e.agentToken(t, tAgent2, tAgentSecret)
	userTok := e.delegated(t, tAgent1, agentTok, "read").AccessToken // a user's token, delegated

	revokedTok := e.agentToken(t, tAgent1, tAgentSecret)
	if a := e.post(t, pathRevoke, url.Values{"token": {revokedTok}}, tAgent1+":"+tAgentSecret); a.status != 200 {
		t.Fatalf("agent revoking its token = %d %s", a.status, a.raw)
	}

	// A runtime agent disabled after it got its token.
	if err := e.iss.PutAgent(ctx, Agent{ID: "rt", SecretHash: hashClientSecret("rt")}); err != nil {
		t.Fatal(err)
	}
	disabledTok := e.agentToken(t, "rt", "rt")
	if err := e.iss.DisableAgent(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	narrowTok := e.agentToken(t, tAgentNarrow, tAgentSecret)

	// An expired agent token: minted an access-token lifetime ago.
	expiredTok := e.agentToken(t, tAgent1, tAgentSecret)
	e.clock.Advance(time.Hour + time.Second)
	agentTok = e.agentToken(t, tAgent1, tAgentSecret)

	tests := []struct {
		name, actor, actorTok, actorType, wantCode string
	}{
		{"no actor token", tAgent1, "", "", "invalid_grant"},
		{"actor token of a different agent", tAgent1, otherAgentTok, tokenTypeAccessToken, "invalid_grant"},
		{"expired actor token", tAgent1, expiredTok, tokenTypeAccessToken, "invalid_grant"},
		{"revoked actor token", tAgent1, revokedTok, tokenTypeAccessToken, "invalid_grant"},
		{"user token as actor token", tAgent1, userTok, tokenTypeAccessToken, "invalid_grant"},
		{"not a token", tAgent1, "a.b.c", tokenTypeAccessToken, "invalid_grant"},
		{"disabled agent", "rt", disabledTok, tokenTypeAccessToken, "invalid_grant"},
		{"agent not allowed for the client", tAgentNarrow, narrowTok, tokenTypeAccessToken, "invalid_grant"},
		{"wrong actor_token_type", tAgent1, agentTok, "urn:ietf:params:oauth:token-type:id_token", "invalid_request"},
		{"actor token without requested_actor", "", agentTok, tokenTypeAccessToken, "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, verifier := e.issueCode(t, codeSpec{actor: tt.actor, scopes: []string{"read"}})
			v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
				"redirect_uri": {tRedirect}, "client_id": {tPublic}}
			if tt.actorTok != "" {
				v.Set("actor_token", tt.actorTok)
			}
			if tt.actorType != "" {
				v.Set("actor_token_type", tt.actorType)
			}
			a := e.post(t, pathToken, v, "")
			if a.status != http.StatusBadRequest || a.str("error") != tt.wantCode {
				t.Fatalf("token = %d %s, want 400 %s", a.status, a.raw, tt.wantCode)
			}
			// A refused attempt does not use up the code.
			if tt.actor == tAgent1 {
				v.Set("actor_token", agentTok)
				v.Set("actor_token_type", tokenTypeJWT) // the other accepted name
				if a := e.post(t, pathToken, v, ""); a.status != 200 {
					t.Errorf("code after a refused attempt = %d %s, want 200", a.status, a.raw)
				}
			}
		})
	}
}

// TestAuthorizeRequestedActor: an authorization request naming an agent
// that is unknown, disabled or not allowed for the client is refused with
// one description for all three: the redirect passes through the
// sender's browser, and anyone may send a public client's request.
func TestAuthorizeRequestedActor(t *testing.T) {
	e := newTokEnv(t)
	c := e.srv.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, tt := range []struct {
		actor, wantErr string
	}{
		// One answer for all three: whoever sends the request sees it,
		// and must not learn which agents exist or whom they serve.
		{tAgentNarrow, "requested_actor is not an agent that may act for this client"},
		{tAgentOff, "requested_actor is not an agent that may act for this client"},
		{"no-such-agent", "requested_actor is not an agent that may act for this client"},
		{tAgent1, ""}, // on to login
	} {
		t.Run(tt.actor, func(t *testing.T) {
			q := url.Values{"client_id": {tPublic}, "redirect_uri": {tRedirect}, "response_type": {"code"},
				"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"},
				"scope": {"read"}, "resource": {tResource}, "requested_actor": {tt.actor}}
			resp, err := c.Get(e.iss.endpoint(pathAuthorize) + "?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc, _ := url.Parse(resp.Header.Get("Location"))
			toClient := strings.HasPrefix(loc.String(), tRedirect)
			if tt.wantErr == "" {
				if resp.StatusCode != http.StatusSeeOther || toClient {
					t.Fatalf("authorize = %d %s, want 303 to login", resp.StatusCode, loc)
				}
				return
			}
			if !toClient || loc.Query().Get("error") != "invalid_request" || loc.Query().Get("error_description") != tt.wantErr {
				t.Fatalf("authorize redirect = %s, want invalid_request %q", loc, tt.wantErr)
			}
		})
	}
}

// grantOf reads a grant record.
func (e *testEnv) grantOf(t *testing.T, gid string) grant {
	t.Helper()
	var g *grant
	err := e.store.View(t.Context(), func(tx store.Tx) error {
		var err error
		g, err = grantsIn(tx).get(gid)
		return err
	})
	if err != nil {
		t.Fatalf("grant %q: %v", gid, err)
	}
	return *g
}

func hasAll(list []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(list, w) {
			return false
		}
	}
	return true
}

// TestRefreshDelegationActorRevokedByEarlierRelease: an instance of
// 1370cef, beside this release on one database or after a downgrade,
// revoking the agent token a delegated code was redeemed with walks the
// derived records this release wrote and takes the grant's (grantChild)
// for a token's: it writes the grant's marker alone, as it writes it
// here, and leaves the grant and its refresh token. The delegation then
// refreshed, at both releases, into access tokens refused until the
// agent token's end and taken again after it. This release's refresh
// now ends it as its own revocation does (the upgrade test runs it with
// 1370cef's binary: TestUpgradeFromPreviousRelease).
func TestRefreshDelegationActorRevokedByEarlierRelease(t *testing.T) {
	e := newTokEnv(t)
	leaked := e.agentToken(t, tAgent1, tAgentSecret)
	delegated := e.delegated(t, tAgent1, leaked, "read", "offline_access")
	_, ac := claimsOf(t, leaked)
	_, dc := claimsOf(t, delegated.AccessToken)
	gid, _ := dc["gid"].(string)
	exp := time.Unix(int64(ac["exp"].(float64)), 0)
	// What 1370cef's revokeTokenTree writes for the actor token and its
	// derived child grantChild+gid.
	err := e.store.Update(t.Context(), func(tx store.Tx) error {
		revs := revocationsIn(tx)
		if err := revs.revokeToken(ac["jti"].(string), exp); err != nil {
			return err
		}
		return revs.revokeToken(grantChild+gid, exp)
	})
	if err != nil || gid == "" {
		t.Fatalf("the earlier release's revocation (grant %q): %v", gid, err)
	}
	refresh := func() answer {
		return e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {delegated.RefreshToken}, "client_id": {tPublic}}, "")
	}
	if a := refresh(); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Fatalf("refresh of the delegation whose actor token 1370cef revoked = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	var g *grant
	if err := e.store.View(t.Context(), func(tx store.Tx) (err error) { g, err = grantsIn(tx).get(gid); return err }); err != nil || !g.Revoked {
		t.Fatalf("the delegation after its refresh was refused: %+v, %v; want revoked", g, err)
	}
	// Past the agent token's end, its marker gone, still ended.
	e.clock.Advance(exp.Sub(e.clock.Now()) + time.Hour)
	if a := refresh(); a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("refresh past the actor token's end = %d %s, want 400 invalid_grant", a.status, a.raw)
	}
}
