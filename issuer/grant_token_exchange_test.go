package issuer

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// tokenExchange posts an RFC 8693 request; basic is "id:secret".
func (e *testEnv) tokenExchange(t *testing.T, basic string, f url.Values) answer {
	t.Helper()
	v := url.Values{"grant_type": {grantTokenExchange}}
	for k, vals := range f {
		v[k] = vals
	}
	return e.post(t, pathToken, v, basic)
}

// exchangeForm is a request by an agent for itself: subject token, its
// own token as actor token.
func exchangeForm(subject, actor string) url.Values {
	v := url.Values{"subject_token": {subject}, "subject_token_type": {tokenTypeAccessToken}}
	if actor != "" {
		v.Set("actor_token", actor)
		v.Set("actor_token_type", tokenTypeAccessToken)
	}
	return v
}

// userToken is alice's token for client (tPublic or tConf).
func (e *testEnv) userToken(t *testing.T, client string, scopes ...string) *oauth2.Token {
	t.Helper()
	code, verifier := e.issueCode(t, codeSpec{client: client, scopes: scopes})
	secret := ""
	if client == tConf {
		secret = tSecret
	}
	tok, err := e.exchange(t, client, secret, code, verifier)
	if err != nil {
		t.Fatalf("user token: %v", err)
	}
	return tok
}

func TestTokenExchange(t *testing.T) {
	e := newTokEnv(t)
	user := e.userToken(t, tPublic, "read", "write", "openid", "offline_access")
	_, uc := claimsOf(t, user.AccessToken)
	gid := uc["gid"].(string)
	e.clock.Advance(10 * time.Minute)

	// agent-1 turns the user's token into a token it acts with.
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	a := e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user.AccessToken, a1))
	if a.status != http.StatusOK {
		t.Fatalf("exchange = %d %s, want 200", a.status, a.raw)
	}
	if a.str("issued_token_type") != tokenTypeAccessToken || a.str("token_type") != "Bearer" || a.str("refresh_token") != "" || a.str("scope") != "read write openid" {
		t.Errorf("exchange response = %s, want an access token (Bearer, no refresh token) for read write openid", a.raw)
	}
	if exp, _ := a.body["expires_in"].(float64); exp != 50*60 {
		t.Errorf("expires_in = %v, want %d: no longer than the subject token", a.body["expires_in"], 50*60)
	}
	one := a.str("access_token")
	c := verifyLikeGateway(t, e, one, "ES256")
	want := map[string]any{"sub": tUser, "client_id": tPublic, "principal_type": "user", "gid": gid, "exp": uc["exp"]}
	for k, v := range want {
		if c[k] != v {
			t.Errorf("claim %s = %v, want %v", k, c[k], v)
		}
	}
	if got := fmt.Sprint(c["act"]); got != "map[sub:agent-1]" {
		t.Errorf("act = %s, want {sub: agent-1}", got)
	}
	g := e.grantOf(t, gid)
	if !g.LastUsed.Equal(e.clock.Now()) || !hasAll(g.Delegates, tAgent1) {
		t.Errorf("grant last use, delegates = %v, %v; want now, [agent-1]", g.LastUsed, g.Delegates)
	}

	// agent-2 takes over from agent-1: the chain nests, newest outermost.
	a2 := e.agentToken(t, tAgent2, tAgentSecret)
	a = e.tokenExchange(t, tAgent2+":"+tAgentSecret, exchangeForm(one, a2))
	if a.status != http.StatusOK {
		t.Fatalf("second exchange = %d %s, want 200", a.status, a.raw)
	}
	two := a.str("access_token")
	if _, c := claimsOf(t, two); fmt.Sprint(c["act"]) != "map[act:map[sub:agent-1] sub:agent-2]" || c["sub"] != tUser || c["gid"] != gid {
		t.Errorf("chained sub, act, gid = %v, %v, %v; want %s, {sub: agent-2, act: {sub: agent-1}}, %s", c["sub"], c["act"], c["gid"], tUser, gid)
	}
	in := e.introspect(t, two)
	if !strings.Contains(in.raw, `"act":{"sub":"agent-2","act":{"sub":"agent-1"}}`) || in.str("principal_type") != "user" {
		t.Errorf("introspection = %s, want the full act chain and principal_type user", in.raw)
	}
	req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo), nil)
	req.Header.Set("Authorization", "Bearer "+two)
	if ui := e.do(t, req); !strings.Contains(ui.raw, `"act":{"sub":"agent-2","act":{"sub":"agent-1"}}`) {
		t.Errorf("userinfo = %d %s, want the full act chain", ui.status, ui.raw)
	}

	// agent-1 (max depth 2) cannot come back as a third actor.
	a = e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(two, a1))
	if a.str("error") != "invalid_request" || !strings.Contains(a.str("error_description"), "depth 3") {
		t.Errorf("third actor = %s, want invalid_request for depth", a.raw)
	}

	// Revoking the user's grant ends every derived token at once.
	if r := e.post(t, pathRevoke, url.Values{"token": {user.RefreshToken}, "client_id": {tPublic}}, ""); r.status != 200 {
		t.Fatal(r.raw)
	}
	for n, tok := range []string{user.AccessToken, one, two} {
		if !e.revokedToken(t, tok) || e.active(t, tok) {
			t.Errorf("token %d still valid after its grant was revoked", n)
		}
	}
	if a := e.tokenExchange(t, tAgent2+":"+tAgentSecret, exchangeForm(one, a2)); a.str("error") != "invalid_request" {
		t.Errorf("exchange of a revoked grant's token = %s, want invalid_request", a.raw)
	}
}

// TestTokenExchangeDepthLimit: a chain of distinct agents, each with max
// depth 0 (the issuer's limit), ends at MaxDelegationDepth.
func TestTokenExchangeDepthLimit(t *testing.T) {
	const documentedDepth = 5 // README (Tokens and agents: at most 5); not the constant
	e := newTokEnv(t)
	tok := e.userToken(t, tPublic, "read").AccessToken
	for depth := 1; depth <= documentedDepth+1; depth++ {
		id := fmt.Sprintf("chain-%d", depth)
		if err := e.iss.PutAgent(t.Context(), Agent{ID: id, SecretHash: hashClientSecret(tAgentSecret)}); err != nil {
			t.Fatal(err)
		}
		a := e.tokenExchange(t, id+":"+tAgentSecret, exchangeForm(tok, e.agentToken(t, id, tAgentSecret)))
		if depth > documentedDepth {
			if a.str("error") != "invalid_request" || !strings.Contains(a.str("error_description"), "depth") {
				t.Fatalf("depth %d = %s, want invalid_request for depth", depth, a.raw)
			}
			return
		}
		if a.status != http.StatusOK {
			t.Fatalf("depth %d = %d %s, want 200", depth, a.status, a.raw)
		}
		tok = a.str("access_token")
	}
}

func TestTokenExchangeWithoutActor(t *testing.T) {
	e := newTokEnv(t)
	conf := tConf + ":" + tSecret
	user := e.userToken(t, tConf, "read", "write")

	// The client narrows its own token; it may not move it to a resource
	// the user never consented to.
	if a := e.tokenExchange(t, conf, url.Values{"subject_token": {user.AccessToken}, "subject_token_type": {tokenTypeJWT},
		"audience": {tOther}, "scope": {"read"}}); a.str("error") != "invalid_target" {
		t.Errorf("moving a user's token to another resource = %d %s, want invalid_target", a.status, a.raw)
	}
	a := e.tokenExchange(t, conf, url.Values{"subject_token": {user.AccessToken}, "subject_token_type": {tokenTypeJWT},
		"scope": {"read"}})
	if a.status != 200 {
		t.Fatalf("down-scoping exchange = %d %s", a.status, a.raw)
	}
	if _, c := claimsOf(t, a.str("access_token")); c["aud"] != tResource || c["scope"] != "read" || c["sub"] != tUser || c["act"] != nil {
		t.Errorf("claims aud, scope, sub, act = %v, %v, %v, %v; want %s, read, %s, none", c["aud"], c["scope"], c["sub"], c["act"], tResource, tUser)
	}
	if a := e.tokenExchange(t, conf, url.Values{"subject_token": {a.str("access_token")}, "subject_token_type": {tokenTypeJWT},
		"scope": {"read write"}}); a.str("error") != "invalid_scope" {
		t.Errorf("widening a narrowed token = %s, want invalid_scope", a.raw)
	}

	// The agent acting in a token may narrow it; the act chain stays.
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	del := e.delegated(t, tAgent1, a1, "read", "write").AccessToken
	a = e.tokenExchange(t, tAgent1+":"+tAgentSecret, url.Values{"subject_token": {del}, "subject_token_type": {tokenTypeAccessToken}, "scope": {"read"}})
	if _, c := claimsOf(t, a.str("access_token")); fmt.Sprint(c["act"]) != "map[sub:agent-1]" || c["scope"] != "read" {
		t.Errorf("agent narrowing = %s; act, scope = %v, %v", a.raw, c["act"], c["scope"])
	}

	// An agent's own token, moved to another resource by the agent.
	a = e.tokenExchange(t, tAgent1+":"+tAgentSecret, url.Values{"subject_token": {a1}, "subject_token_type": {tokenTypeAccessToken}, "resource": {tOther}})
	if _, c := claimsOf(t, a.str("access_token")); c["sub"] != tAgent1 || c["principal_type"] != "agent" || c["aud"] != tOther {
		t.Errorf("agent re-audience = %s; sub, principal_type, aud = %v, %v, %v", a.raw, c["sub"], c["principal_type"], c["aud"])
	}
}

// TestExchangeDelegateKeepsAudience (review s16-grants F1): only a token's
// own principal, acting alone, moves it to another resource. agent-1 hands
// agent-2 its token for tResource so that agent-2 acts for it there;
// agent-2 may not turn it into a token for tOther, as an actor
// (actor_token) or as the newest actor of a delegated token, nor may the
// subject's agent move its own token once another acts in it.
func TestExchangeDelegateKeepsAudience(t *testing.T) {
	e := newTokEnv(t)
	a1 := e.agentToken(t, tAgent1, tAgentSecret, "read") // aud tResource
	a2 := e.agentToken(t, tAgent2, tAgentSecret)
	as2 := tAgent2 + ":" + tAgentSecret
	d := e.tokenExchange(t, as2, exchangeForm(a1, a2))
	if d.status != 200 {
		t.Fatalf("agent-2 acting for agent-1 on its resource = %d %s, want 200", d.status, d.raw)
	}
	moved := exchangeForm(a1, a2)
	moved.Set("resource", tOther)
	for _, tt := range []struct {
		name, auth string
		form       url.Values
	}{
		{"agent-2 as actor, to another resource", as2, moved},
		{"agent-2 as the newest actor, to another audience", as2, url.Values{"subject_token": {d.str("access_token")},
			"subject_token_type": {tokenTypeAccessToken}, "audience": {tOther}}},
		{"agent-1, its token with agent-2 acting, to another resource", tAgent1 + ":" + tAgentSecret, url.Values{"subject_token": {d.str("access_token")},
			"subject_token_type": {tokenTypeAccessToken}, "resource": {tOther}}},
	} {
		if a := e.tokenExchange(t, tt.auth, tt.form); a.status != 400 || a.str("error") != "invalid_target" {
			t.Errorf("%s = %d %s, want 400 invalid_target", tt.name, a.status, a.raw)
		}
	}
	// The subject itself, alone, still moves its own token.
	a := e.tokenExchange(t, tAgent1+":"+tAgentSecret, url.Values{"subject_token": {a1}, "subject_token_type": {tokenTypeAccessToken}, "resource": {tOther}})
	if _, c := claimsOf(t, a.str("access_token")); a.status != 200 || c["sub"] != tAgent1 || c["aud"] != tOther || c["act"] != nil {
		t.Errorf("agent-1 moving its own token = %d %s, want 200 with sub agent-1, aud %s, no act", a.status, a.raw, tOther)
	}
}

func TestTokenExchangeFailures(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	conf := tConf + ":" + tSecret
	agent1 := tAgent1 + ":" + tAgentSecret
	revokedUser := e.userToken(t, tPublic, "read").AccessToken
	if r := e.post(t, pathRevoke, url.Values{"token": {revokedUser}, "client_id": {tPublic}}, ""); r.status != 200 {
		t.Fatal(r.raw)
	}
	revokedActor := e.agentToken(t, tAgent1, tAgentSecret)
	if r := e.post(t, pathRevoke, url.Values{"token": {revokedActor}}, agent1); r.status != 200 {
		t.Fatal(r.raw)
	}
	// A runtime agent disabled after it got its token.
	if err := e.iss.PutAgent(ctx, Agent{ID: "rt", SecretHash: hashClientSecret("rt")}); err != nil {
		t.Fatal(err)
	}
	disabled := e.agentToken(t, "rt", "rt")
	if err := e.iss.DisableAgent(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	expiredUser := e.userToken(t, tPublic, "read").AccessToken
	expiredActor := e.agentToken(t, tAgent1, tAgentSecret)
	e.clock.Advance(time.Hour + time.Second)
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	narrow := e.agentToken(t, tAgentNarrow, tAgentSecret)
	userPub := e.userToken(t, tPublic, "read").AccessToken
	userConf := e.userToken(t, tConf, "read", "write").AccessToken
	cc := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}}, conf)
	clientTok := cc.str("access_token")

	with := func(v url.Values, kv ...string) url.Values {
		for n := 0; n < len(kv); n += 2 {
			if kv[n+1] == "" {
				v.Del(kv[n])
			} else {
				v.Set(kv[n], kv[n+1])
			}
		}
		return v
	}
	tests := []struct {
		name, basic string
		form        url.Values
		wantStatus  int
		wantCode    string
	}{
		{"happy path (control)", agent1, exchangeForm(userPub, a1), 200, ""},
		{"scope widening", agent1, with(exchangeForm(userPub, a1), "scope", "read write"), 400, "invalid_scope"},
		{"scope the actor may not hold", tAgentNarrow + ":" + tAgentSecret, with(exchangeForm(userConf, narrow), "scope", "write"), 400, "invalid_scope"},
		{"scope outside the resource", agent1, with(exchangeForm(userPub, a1), "scope", "admin"), 400, "invalid_scope"},
		{"unknown audience", agent1, with(exchangeForm(userPub, a1), "audience", "https://nowhere.example/mcp"), 400, "invalid_target"},
		{"unknown resource", agent1, with(exchangeForm(userPub, a1), "resource", "https://nowhere.example/mcp"), 400, "invalid_target"},
		{"resource and audience differ", agent1, with(exchangeForm(userPub, a1), "resource", tResource, "audience", tOther), 400, "invalid_target"},
		{"user's token to another resource", agent1, with(exchangeForm(userPub, a1), "resource", tOther), 400, "invalid_target"},
		{"subject token revoked", agent1, exchangeForm(revokedUser, a1), 400, "invalid_request"},
		{"subject token expired", agent1, exchangeForm(expiredUser, a1), 400, "invalid_request"},
		{"subject token not a token", agent1, exchangeForm("a.b.c", a1), 400, "invalid_request"},
		{"actor token revoked", agent1, exchangeForm(userPub, revokedActor), 400, "invalid_request"},
		{"actor token expired", agent1, exchangeForm(userPub, expiredActor), 400, "invalid_request"},
		{"actor token is a user's", conf, exchangeForm(userConf, userPub), 400, "invalid_request"},
		{"actor disabled", conf, exchangeForm(userConf, disabled), 400, "invalid_request"},
		{"actor not allowed for the subject's client", tAgentNarrow + ":" + tAgentSecret, exchangeForm(userPub, narrow), 400, "invalid_request"},
		{"actor acting for itself", agent1, exchangeForm(a1, a1), 400, "invalid_request"},
		{"client's own token delegated", conf, exchangeForm(clientTok, a1), 400, "invalid_request"},
		{"client is no party to the subject token", conf, exchangeForm(userPub, a1), 400, "invalid_request"},
		{"another agent without actor token", tAgent2 + ":" + tAgentSecret, exchangeForm(userPub, ""), 400, "invalid_request"},
		{"public client", "", with(exchangeForm(userPub, a1), "client_id", tPublic), 400, "unauthorized_client"},
		{"client without the grant type", tOnlyCC + ":" + tSecret, exchangeForm(userPub, a1), 400, "unauthorized_client"},
		{"missing subject_token_type", agent1, with(exchangeForm(userPub, a1), "subject_token_type", ""), 400, "invalid_request"},
		{"unsupported subject_token_type", agent1, with(exchangeForm(userPub, a1), "subject_token_type", "urn:ietf:params:oauth:token-type:refresh_token"), 400, "invalid_request"},
		{"actor_token without type", agent1, with(exchangeForm(userPub, a1), "actor_token_type", ""), 400, "invalid_request"},
		{"actor_token_type without actor_token", agent1, with(exchangeForm(userPub, a1), "actor_token", ""), 400, "invalid_request"},
		{"requested_token_type refresh token", agent1, with(exchangeForm(userPub, a1), "requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"), 400, "invalid_request"},
		{"wrong agent secret", tAgent1 + ":nope", exchangeForm(userPub, a1), 401, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := e.tokenExchange(t, tt.basic, tt.form)
			if a.status != tt.wantStatus || a.str("error") != tt.wantCode {
				t.Fatalf("exchange = %d %s, want %d %q", a.status, a.raw, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

// TestExchangeActorTokenAudience: an agent's token shows the agent taking
// part at its audience only, which holds it as a bearer. The subject's
// client may not name the agent as actor with its token for another
// resource (a resource replaying a token it was sent); with its token for
// the resource, or by the agent itself authenticating, it may.
func TestExchangeActorTokenAudience(t *testing.T) {
	e := newTokEnv(t)
	conf := tConf + ":" + tSecret
	as2 := tAgent2 + ":" + tAgentSecret
	a2 := e.agentToken(t, tAgent2, tAgentSecret) // aud tResource
	o := e.tokenExchange(t, as2, url.Values{"subject_token": {a2}, "subject_token_type": {tokenTypeAccessToken}, "resource": {tOther}})
	if o.status != 200 {
		t.Fatalf("agent-2's token for %s = %d %s", tOther, o.status, o.raw)
	}
	a2Other := o.str("access_token")
	for _, tt := range []struct {
		name, auth, actor string
		status            int
		code              string
	}{
		{"client with the agent's token for another resource", conf, a2Other, 400, "invalid_request"},
		{"client with the agent's token for the resource", conf, a2, 200, ""},
		{"the agent itself with its token for another resource", as2, a2Other, 200, ""},
	} {
		user := e.userToken(t, tConf, "read").AccessToken // aud tResource
		a := e.tokenExchange(t, tt.auth, exchangeForm(user, tt.actor))
		if a.status != tt.status || a.str("error") != tt.code {
			t.Errorf("%s = %d %s, want %d %q", tt.name, a.status, a.raw, tt.status, tt.code)
			continue
		}
		if a.status != 200 {
			continue
		}
		if _, c := claimsOf(t, a.str("access_token")); fmt.Sprint(c["act"]) != "map[sub:agent-2]" || c["aud"] != tResource {
			t.Errorf("%s: act, aud = %v, %v; want {sub: agent-2}, %s", tt.name, c["act"], c["aud"], tResource)
		}
	}
}

// TestExchangeActorRepeated: an agent already in the subject token's act
// chain may not become its newest actor (A acting for B acting for A),
// though the chain would be within its depth limit.
func TestExchangeActorRepeated(t *testing.T) {
	e := newTokEnv(t)
	user := e.userToken(t, tPublic, "read").AccessToken
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	a2 := e.agentToken(t, tAgent2, tAgentSecret) // max depth 5
	as1, as2 := tAgent1+":"+tAgentSecret, tAgent2+":"+tAgentSecret
	one := e.tokenExchange(t, as2, exchangeForm(user, a2))
	two := e.tokenExchange(t, as1, exchangeForm(one.str("access_token"), a1))
	if one.status != 200 || two.status != 200 {
		t.Fatalf("agent-1 acting for agent-2 acting for the user = %d %s, %d %s; want 200", one.status, one.raw, two.status, two.raw)
	}
	a := e.tokenExchange(t, as2, exchangeForm(two.str("access_token"), a2))
	if a.status != 400 || a.str("error") != "invalid_request" || !strings.Contains(a.str("error_description"), "already acts") {
		t.Errorf("agent-2 again, for agent-1 acting for agent-2 = %d %s, want 400 invalid_request (already acts)", a.status, a.raw)
	}
}

// TestExchangeSeveralTargets: RFC 8693 section 2.1 allows several
// resource and audience values, and section 2.2.2 has the server unwilling
// to issue for them answer invalid_target; this one issues one audience
// per token, so it refuses either repeated as such, not as a malformed
// request (invalid_request).
func TestExchangeSeveralTargets(t *testing.T) {
	e := newTokEnv(t)
	agent1 := tAgent1 + ":" + tAgentSecret
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	user := e.userToken(t, tPublic, "read").AccessToken
	for _, tt := range []struct {
		name string
		set  url.Values
	}{
		{"two resources", url.Values{"resource": {tResource, tOther}}},
		{"two audiences", url.Values{"audience": {tResource, tOther}}},
		{"the same audience twice", url.Values{"audience": {tResource, tResource}}},
	} {
		f := exchangeForm(user, a1)
		for k, v := range tt.set {
			f[k] = v
		}
		if a := e.tokenExchange(t, agent1, f); a.status != 400 || a.str("error") != "invalid_target" {
			t.Errorf("%s = %d %s, want 400 invalid_target", tt.name, a.status, a.raw)
		}
	}
}

// TestExchangeKeepsActorWithinTodaysPolicy: a delegated token exchanged
// without a new actor keeps its act chain, so what it issues is the
// outermost actor's token and stays within that agent's policy of today,
// as a refresh of a delegated grant does: after a reload narrows the
// agent's scopes or allowed_clients, neither the agent nor the subject's
// client gets a fresh token beyond them.
func TestExchangeKeepsActorWithinTodaysPolicy(t *testing.T) {
	for _, tt := range []struct {
		name     string
		reload   envOption
		scope    string
		wantCode string
		want     string
	}{
		{"scopes narrowed", narrowAgent1(func(a *Agent) { a.Scopes = []string{"read"} }), "", "", "read"},
		{"scopes narrowed, asked for the lost one", narrowAgent1(func(a *Agent) { a.Scopes = []string{"read"} }), "write", "invalid_scope", ""},
		{"client no longer allowed", narrowAgent1(func(a *Agent) { a.AllowedClients = []string{tConf} }), "", "invalid_request", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTokEnv(t)
			user := e.userToken(t, tPublic, "read", "write").AccessToken
			a1 := e.agentToken(t, tAgent1, tAgentSecret)
			d := e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user, a1))
			if d.status != 200 || d.str("scope") != "read write" {
				t.Fatalf("delegation = %d %s, want 200 read write", d.status, d.raw)
			}
			e.restart(e.store, tt.reload)
			f := exchangeForm(d.str("access_token"), "")
			if tt.scope != "" {
				f.Set("scope", tt.scope)
			}
			a := e.tokenExchange(t, tAgent1+":"+tAgentSecret, f)
			if a.str("error") != tt.wantCode || a.str("scope") != tt.want {
				t.Errorf("agent-1 exchanging its delegated token = %d, error %q, scope %q; want error %q, scope %q", a.status, a.str("error"), a.str("scope"), tt.wantCode, tt.want)
			}
		})
	}
}

// TestExchangeSubjectAboutToExpire: the new token never outlives the
// subject token, and expires_in is whole seconds, so a subject token with
// less than a second left would give a token answered with expires_in 0,
// which clients read as "no expiry given" (golang.org/x/oauth2 then
// leaves Expiry zero: a token it takes as valid forever). Such a subject
// token is refused as expired; one with a second left still works.
func TestExchangeSubjectAboutToExpire(t *testing.T) {
	e := newTokEnv(t)
	agent1 := tAgent1 + ":" + tAgentSecret
	for _, tt := range []struct {
		name     string
		left     time.Duration
		wantCode string
		wantIn   float64
	}{
		{"a second left", time.Second, "", 1},
		{"half a second left", 500 * time.Millisecond, "invalid_request", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			user := e.userToken(t, tPublic, "read").AccessToken
			_, c := claimsOf(t, user)
			exp := time.Unix(int64(c["exp"].(float64)), 0)
			e.clock.Advance(exp.Sub(e.clock.Now()) - tt.left)
			a1 := e.agentToken(t, tAgent1, tAgentSecret)
			a := e.tokenExchange(t, agent1, exchangeForm(user, a1))
			in, _ := a.body["expires_in"].(float64)
			if a.str("error") != tt.wantCode || in != tt.wantIn {
				t.Errorf("exchange = %d, error %q, expires_in %v; want error %q, expires_in %v", a.status, a.str("error"), a.body["expires_in"], tt.wantCode, tt.wantIn)
			}
		})
	}
}

// TestExchangeExpiresInNeverZero: the check that the subject token has a
// second left and the minter's expires_in read the clock apart, so a
// subject with just a second left at the check could still be answered
// expires_in 0 ("no expiry given"). With each read of the issuer's clock
// a millisecond later than the last, no subject token's remaining time
// gives an exchange answered with expires_in below 1.
func TestExchangeExpiresInNeverZero(t *testing.T) {
	var stepping atomic.Bool
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	e := newTokEnvStore(t, memory.New(memory.Options{Now: clock.Now}), clock, func(c *Config) {
		c.Now = func() time.Time {
			if stepping.Load() {
				clock.Advance(time.Millisecond)
			}
			return clock.Now()
		}
	})
	agent1 := tAgent1 + ":" + tAgentSecret
	issued := 0
	for extra := range 30 {
		user := e.userToken(t, tPublic, "read").AccessToken
		a1 := e.agentToken(t, tAgent1, tAgentSecret)
		_, c := claimsOf(t, user)
		exp := time.Unix(int64(c["exp"].(float64)), 0)
		e.clock.Advance(exp.Sub(e.clock.Now()) - time.Second - time.Duration(extra)*time.Millisecond)
		stepping.Store(true)
		a := e.tokenExchange(t, agent1, exchangeForm(user, a1))
		stepping.Store(false)
		if a.status != http.StatusOK {
			continue
		}
		issued++
		if in, _ := a.body["expires_in"].(float64); in < 1 {
			t.Errorf("subject with 1s+%dms left: exchange answered expires_in %v, want at least 1", extra, a.body["expires_in"])
		}
	}
	if issued == 0 {
		t.Fatal("no exchange issued a token: the test checked nothing")
	}
}

// TestExchangeKeepsInnerActorsWithinTodaysPolicy: an exchange keeps
// every agent of the subject token's chain in the token it issues, not
// only the newest, so each is held to its policy of today: after a
// reload narrows the inner agent-1, neither agent-2 joining the chain
// (actor_token) nor agent-2 exchanging the token it heads gets a token
// naming agent-1 beyond agent-1's scopes or allowed_clients.
func TestExchangeKeepsInnerActorsWithinTodaysPolicy(t *testing.T) {
	for _, tt := range []struct {
		name     string
		reload   envOption
		wantCode string
		want     string
	}{
		{"inner scopes narrowed", narrowAgent1(func(a *Agent) { a.Scopes = []string{"read"} }), "", "read"},
		{"inner client no longer allowed", narrowAgent1(func(a *Agent) { a.AllowedClients = []string{tConf} }), "invalid_request", ""},
		{"inner disabled", narrowAgent1(func(a *Agent) { a.Disabled = true }), "invalid_request", ""},
		{"inner removed", func(c *Config) {
			c.Agents = slices.DeleteFunc(c.Agents, func(a Agent) bool { return a.ID == tAgent1 })
		}, "invalid_request", ""},
		// agent-1 heads only the innermost link (depth 1): max_depth is
		// counted from the chain's inner end up to the agent.
		{"inner max_depth 1", narrowAgent1(func(a *Agent) { a.MaxDepth = 1 }), "", "read write"},
	} {
		for _, withActor := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, actor_token %v", tt.name, withActor), func(t *testing.T) {
				e := newTokEnv(t)
				user := e.userToken(t, tPublic, "read", "write").AccessToken
				a1 := e.agentToken(t, tAgent1, tAgentSecret)
				one := e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user, a1))
				if one.status != 200 || one.str("scope") != "read write" {
					t.Fatalf("delegation to agent-1 = %d %s", one.status, one.raw)
				}
				subject := one.str("access_token")
				if !withActor {
					two := e.tokenExchange(t, tAgent2+":"+tAgentSecret, exchangeForm(subject, e.agentToken(t, tAgent2, tAgentSecret)))
					if two.status != 200 || two.str("scope") != "read write" {
						t.Fatalf("delegation to agent-2 = %d %s", two.status, two.raw)
					}
					subject = two.str("access_token")
				}
				e.restart(e.store, tt.reload)
				actor := ""
				if withActor {
					actor = e.agentToken(t, tAgent2, tAgentSecret)
				}
				a := e.tokenExchange(t, tAgent2+":"+tAgentSecret, exchangeForm(subject, actor))
				if a.str("error") != tt.wantCode || a.str("scope") != tt.want {
					t.Errorf("agent-2 exchanging = %d, error %q, scope %q; want error %q, scope %q", a.status, a.str("error"), a.str("scope"), tt.wantCode, tt.want)
				}
			})
		}
	}
}

// TestExchangeInnerActorDepthOfItsPart: user -> agent-2 -> agent-1, then
// a reload cuts agent-1's max_depth to 1. agent-1 heads a chain of 2, so
// neither it (keeping the chain) nor agent-2 joining again may exchange:
// the depth an agent is held to is that of the part it heads, and an
// agent appears in a chain once.
func TestExchangeInnerActorDepthOfItsPart(t *testing.T) {
	e := newTokEnv(t)
	agent1, agent2 := tAgent1+":"+tAgentSecret, tAgent2+":"+tAgentSecret
	user := e.userToken(t, tPublic, "read", "write").AccessToken
	one := e.tokenExchange(t, agent2, exchangeForm(user, e.agentToken(t, tAgent2, tAgentSecret)))
	two := e.tokenExchange(t, agent1, exchangeForm(one.str("access_token"), e.agentToken(t, tAgent1, tAgentSecret)))
	if two.status != 200 {
		t.Fatalf("user -> agent-2 -> agent-1 = %d %s", two.status, two.raw)
	}
	chain := two.str("access_token")
	if a := e.tokenExchange(t, agent2, exchangeForm(chain, e.agentToken(t, tAgent2, tAgentSecret))); a.str("error") != "invalid_request" {
		t.Errorf("agent-2 joining a chain it is in = %d %s, want invalid_request", a.status, a.raw)
	}
	e.restart(e.store, narrowAgent1(func(a *Agent) { a.MaxDepth = 1 }))
	if a := e.tokenExchange(t, agent1, exchangeForm(chain, "")); a.str("error") != "invalid_request" {
		t.Errorf("agent-1 heading depth 2 under max_depth 1 = %d %s, want invalid_request", a.status, a.raw)
	}
}

// narrowAgent1 changes agent-1's configuration by f (a reload).
func narrowAgent1(f func(a *Agent)) envOption {
	return func(c *Config) {
		for n := range c.Agents {
			if c.Agents[n].ID == tAgent1 {
				f(&c.Agents[n])
			}
		}
	}
}

// TestExchangeRacingSubjectRevocation: an exchange whose subject token is
// revoked (RFC 7009) after it was verified, before the new token is
// recorded, issues nothing: the revocation could not find that token to
// revoke it with its subject (TestExchangedTokenEndsWithItsSubject).
func TestExchangeRacingSubjectRevocation(t *testing.T) {
	e := newTokEnv(t)
	user := e.userToken(t, tPublic, "read").AccessToken
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	e.iss.mint.beforeRecord = func() {
		e.iss.mint.beforeRecord = nil
		if r := e.post(t, pathRevoke, url.Values{"token": {user}, "client_id": {tPublic}}, ""); r.status != http.StatusOK {
			t.Errorf("revoke the subject token = %d %s, want 200", r.status, r.raw)
		}
	}
	a := e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user, a1))
	if a.status != http.StatusBadRequest || a.str("error") != "invalid_request" {
		t.Errorf("exchange racing the subject's revocation = %d %s, want 400 invalid_request", a.status, a.raw)
	}
}

// TestTokenExchangeRateLimited: every exchange is recorded until its
// subject token expires (bucketDerived), so a client exchanging the same
// token with every call would grow the store without bound: exchanges
// spend the requesting client's tokens (clientTokenBurst), as its
// client_credentials tokens do; past them 429 and nothing is recorded.
func TestTokenExchangeRateLimited(t *testing.T) {
	e := newTokEnv(t)
	user := e.userToken(t, tPublic, "read").AccessToken
	a1 := e.agentToken(t, tAgent1, tAgentSecret) // spends one
	ok := 0
	var a answer
	for range clientTokenBurst {
		if a = e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user, a1)); a.status != http.StatusOK {
			break
		}
		ok++
	}
	if a.status != http.StatusTooManyRequests || a.str("error") != "temporarily_unavailable" || a.header.Get("Retry-After") == "" {
		t.Fatalf("exchange past the client's burst (after %d) = %d %v %s, want 429 temporarily_unavailable with Retry-After", ok, a.status, a.header, a.raw)
	}
	if ok != clientTokenBurst-1 {
		t.Errorf("exchanges before 429 = %d, want %d (its client_credentials token spent one)", ok, clientTokenBurst-1)
	}
	// Each exchange is recorded under its subject token and under the
	// agent's token it named as actor.
	if n := countBucket(t, e, bucketDerived); n != 2*ok {
		t.Errorf("recorded exchanges = %d, want %d (the refused one records nothing)", n, 2*ok)
	}
	e.clock.Advance(time.Minute)
	if a := e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user, a1)); a.status != http.StatusOK {
		t.Errorf("exchange a minute later = %d %s, want 200 (the budget refills)", a.status, a.raw)
	}
}

// TestRevokeSubjectInLeewayRevokesExchanged: a subject token is still
// revoked up to accesstoken.Leeway past its exp, since gateways still
// take it; the tokens exchanged from it, which end with it and are taken
// as long, must be revoked with it then too.
func TestRevokeSubjectInLeewayRevokesExchanged(t *testing.T) {
	e := newTokEnv(t)
	user := e.userToken(t, tPublic, "read").AccessToken
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	_, c := claimsOf(t, user)
	exp := time.Unix(int64(c["exp"].(float64)), 0)
	e.clock.Advance(exp.Sub(e.clock.Now()) - 2*time.Second)
	x := e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user, a1))
	child := x.str("access_token")
	if x.status != http.StatusOK || child == "" {
		t.Fatalf("exchange = %d %s, want 200", x.status, x.raw)
	}
	e.clock.Advance(accesstoken.Leeway - time.Second + 2*time.Second) // past exp, within the leeway
	if r := e.post(t, pathRevoke, url.Values{"token": {user}, "client_id": {tPublic}}, ""); r.status != http.StatusOK {
		t.Fatalf("revoke = %d %s", r.status, r.raw)
	}
	if !e.revokedToken(t, user) {
		t.Fatal("subject token not revoked within the leeway")
	}
	if !e.revokedToken(t, child) {
		t.Error("token exchanged from a subject revoked within the leeway is not revoked, and gateways still take it")
	}
}

// failAfterRevoked is a real store whose next Update fails, once, after
// the access token jti is revoked: a store lost part way through
// revokeTokenTree.
type failAfterRevoked struct {
	store.Store
	t    *testing.T
	jti  string
	done bool
}

func (s *failAfterRevoked) Update(ctx context.Context, fn func(store.Tx) error) error {
	if s.jti != "" && !s.done {
		var revoked bool
		err := s.Store.View(ctx, func(tx store.Tx) (err error) {
			revoked, err = revocationsIn(tx).revoked(s.jti, "")
			return err
		})
		if err != nil {
			s.t.Fatal(err)
		}
		if revoked {
			s.done = true
			return store.ErrUnavailable
		}
	}
	return s.Store.Update(ctx, fn)
}

// TestRevokeRetryAfterPartialFailure: a /revoke that fails after the
// subject token is revoked, before the tokens exchanged from it are,
// answers 503, and the client's retry revokes them (README: token
// exchange).
func TestRevokeRetryAfterPartialFailure(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &failAfterRevoked{Store: memory.New(memory.Options{Now: clock.Now, RunTwice: true}), t: t}
	e := newTokEnvStore(t, st, clock)
	agent1 := tAgent1 + ":" + tAgentSecret
	user := e.userToken(t, tPublic, "read").AccessToken
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	x1 := e.tokenExchange(t, agent1, exchangeForm(user, a1)).str("access_token")
	x2 := e.tokenExchange(t, agent1, exchangeForm(x1, "")).str("access_token")
	if x1 == "" || x2 == "" {
		t.Fatal("exchanges failed")
	}
	_, c := claimsOf(t, user)
	st.jti = c["jti"].(string)
	if r := e.post(t, pathRevoke, url.Values{"token": {user}, "client_id": {tPublic}}, ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("revoke with the store lost part way = %d %s, want 503", r.status, r.raw)
	}
	if !e.revokedToken(t, user) || e.revokedToken(t, x1) {
		t.Fatalf("after the 503: subject revoked %v, exchanged revoked %v; want true, false", e.revokedToken(t, user), e.revokedToken(t, x1))
	}
	if r := e.post(t, pathRevoke, url.Values{"token": {user}, "client_id": {tPublic}}, ""); r.status != http.StatusOK {
		t.Fatalf("retry = %d %s, want 200", r.status, r.raw)
	}
	for n, tok := range []string{user, x1, x2} {
		if !e.revokedToken(t, tok) {
			t.Errorf("token %d not revoked after the retry", n)
		}
	}
}

// TestExchangedTokenEndsWithActorToken: a token exchanged with an
// agent's own token as actor_token expires no later than that token, as
// no later than its subject token: revoking the actor token ends what was
// exchanged with it (TestRevokeActorTokenRevokesExchanged), and an
// expired token can no longer be revoked, so a token that outlived it
// would name the agent, leaked or not, until its subject token expired.
func TestExchangedTokenEndsWithActorToken(t *testing.T) {
	e := newTokEnv(t)
	agent1 := tAgent1 + ":" + tAgentSecret
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	e.clock.Advance(e.iss.cfg.AccessTokenTTL / 2)
	user := e.userToken(t, tPublic, "read").AccessToken
	x := e.tokenExchange(t, agent1, exchangeForm(user, a1))
	child := x.str("access_token")
	if x.status != http.StatusOK || child == "" {
		t.Fatalf("exchange = %d %s, want 200", x.status, x.raw)
	}
	if in, _ := x.body["expires_in"].(float64); time.Duration(in)*time.Second > e.iss.cfg.AccessTokenTTL/2 {
		t.Errorf("exchanged token expires_in = %v s, want at most the actor token's remaining %v", in, e.iss.cfg.AccessTokenTTL/2)
	}
	e.clock.Advance(e.iss.cfg.AccessTokenTTL/2 + accesstoken.Leeway + time.Second)
	if e.active(t, a1) {
		t.Fatal("the actor token is still active past its expiry")
	}
	if e.active(t, child) {
		t.Error("the token exchanged with the actor token is active past the actor token's expiry, where it can no longer be revoked")
	}
	if !e.active(t, user) {
		t.Error("the subject token expired with the actor token")
	}
	// An actor token with under a second left is refused, as such a
	// subject token is: the new token's expires_in would be 0.
	a1 = e.agentToken(t, tAgent1, tAgentSecret)
	e.clock.Advance(e.iss.cfg.AccessTokenTTL - 500*time.Millisecond)
	user = e.userToken(t, tPublic, "read").AccessToken
	if a := e.tokenExchange(t, agent1, exchangeForm(user, a1)); a.status != http.StatusBadRequest || a.str("error") != "invalid_request" {
		t.Errorf("exchange with an actor token half a second from expiry = %d %s, want 400 invalid_request", a.status, a.raw)
	}
}

// TestRevokeActorTokenRevokesExchanged: revoking (RFC 7009) the agent's
// own token that was the actor_token of an exchange revokes the token
// exchanged with it, and what was exchanged from that in turn, and
// leaves the subject token alone: an agent that finds its token leaked
// ends what was minted naming it with that token. An exchange whose
// actor token is revoked after it was verified, before the new token is
// recorded, issues nothing.
func TestRevokeActorTokenRevokesExchanged(t *testing.T) {
	e := newTokEnv(t)
	agent1, agent2 := tAgent1+":"+tAgentSecret, tAgent2+":"+tAgentSecret
	user := e.userToken(t, tPublic, "read").AccessToken
	a1 := e.agentToken(t, tAgent1, tAgentSecret)
	x := e.tokenExchange(t, agent1, exchangeForm(user, a1))
	child := x.str("access_token")
	if x.status != http.StatusOK || child == "" {
		t.Fatalf("exchange = %d %s, want 200", x.status, x.raw)
	}
	y := e.tokenExchange(t, agent2, exchangeForm(child, e.agentToken(t, tAgent2, tAgentSecret)))
	grandchild := y.str("access_token")
	if y.status != http.StatusOK || grandchild == "" {
		t.Fatalf("agent-2 joining the chain = %d %s, want 200", y.status, y.raw)
	}
	if r := e.post(t, pathRevoke, url.Values{"token": {a1}}, agent1); r.status != http.StatusOK {
		t.Fatalf("revoke the actor token = %d %s, want 200", r.status, r.raw)
	}
	if !e.revokedToken(t, a1) {
		t.Fatal("the actor token is not revoked")
	}
	if !e.revokedToken(t, child) || e.active(t, child) {
		t.Error("the token exchanged with the revoked actor token is not revoked: it names the agent until its subject token expires")
	}
	if !e.revokedToken(t, grandchild) || e.active(t, grandchild) {
		t.Error("the token exchanged from that one is not revoked")
	}
	if e.revokedToken(t, user) || !e.active(t, user) {
		t.Error("the subject token was revoked with the agent's token")
	}

	// Racing the actor token's revocation.
	a1 = e.agentToken(t, tAgent1, tAgentSecret)
	e.iss.mint.beforeRecord = func() {
		e.iss.mint.beforeRecord = nil
		if r := e.post(t, pathRevoke, url.Values{"token": {a1}}, agent1); r.status != http.StatusOK {
			t.Errorf("revoke the actor token = %d %s, want 200", r.status, r.raw)
		}
	}
	before := countBucket(t, e, bucketDerived)
	if a := e.tokenExchange(t, agent1, exchangeForm(user, a1)); a.status != http.StatusBadRequest || a.str("error") != "invalid_request" {
		t.Errorf("exchange racing the actor token's revocation = %d %s, want 400 invalid_request", a.status, a.raw)
	}
	if n := countBucket(t, e, bucketDerived); n != before {
		t.Errorf("derived records after the refused exchange = %d, want %d", n, before)
	}
}
