package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/caddymodule"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// Revocation: every way a user, client or agent is removed or re-keyed
// (admin API, Caddyfile reload) ends the tokens it holds, at the gateway,
// at introspection and at the token endpoint, and nothing else's.

const typeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// held is a token and how to use it after a revoking action.
type held struct {
	what    string
	access  string
	refresh string  // "" when none
	client  string  // the refresh token's client
	secret  *string // the client's current secret; nil for a public client
	// refreshErr is the refresh's error: invalid_grant unless set (a
	// deleted client's is invalid_client: it cannot authenticate).
	refreshErr string
}

// requireLive: each access token is forwarded by the gateway and active at
// introspection.
func (e *agentEnv) requireLive(ctx context.Context, t *testing.T, hs []held) {
	t.Helper()
	for _, h := range hs {
		if resp, body, _ := e.callRaw(ctx, t, h.access, toolPlain); resp.StatusCode != http.StatusOK {
			t.Errorf("%s at the gateway: status %d, want 200; body %.200s", h.what, resp.StatusCode, body)
		}
		if !e.active(ctx, t, h.access) {
			t.Errorf("%s: introspection says inactive, want active", h.what)
		}
	}
}

// requireRevoked: each access token is refused by the gateway (the
// upstream receives nothing) and inactive at introspection; each refresh
// token is invalid_grant.
func (e *agentEnv) requireRevoked(ctx context.Context, t *testing.T, hs []held) {
	t.Helper()
	for _, h := range hs {
		before := e.seen.total()
		resp, body, _ := e.callRaw(ctx, t, h.access, toolPlain)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s at the gateway: status %d, want 401; body %.200s", h.what, resp.StatusCode, body)
		}
		if n := e.seen.total() - before; n != 0 {
			t.Errorf("%s: the upstream received %d requests, want 0", h.what, n)
		}
		if e.active(ctx, t, h.access) {
			t.Errorf("%s: introspection says active, want inactive", h.what)
		}
		if h.refresh == "" {
			continue
		}
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {h.refresh}, "resource": {e.resource}}
		id, secret := "", ""
		if h.secret != nil {
			id, secret = h.client, *h.secret
		} else {
			form.Set("client_id", h.client)
		}
		want, wantStatus := "invalid_grant", http.StatusBadRequest
		if h.refreshErr != "" {
			want, wantStatus = h.refreshErr, http.StatusUnauthorized
		}
		if a := e.tokenRequest(ctx, t, id, secret, form); a.Status != wantStatus || a.Error != want {
			t.Errorf("%s: refresh = %v, want %d %s", h.what, a, wantStatus, want)
		}
	}
}

// active introspects token (as the configured client svc).
func (e *agentEnv) active(ctx context.Context, t *testing.T, token string) bool {
	t.Helper()
	var in struct {
		Active bool `json:"active"`
	}
	if status := e.introspect(ctx, t, token, &in); status != http.StatusOK {
		t.Fatalf("introspection: status %d, want 200", status)
	}
	return in.Active
}

// total is how many requests reached the upstream.
func (l *upstreamLog) total() int {
	n := 0
	byMethod, _ := l.counts()
	for _, c := range byMethod {
		n += c
	}
	return n
}

// userHeld is what user holds: its own token (with a refresh token), a
// delegation to agent-a (requested_actor, with a refresh token), and its
// token exchanged to agent-b as actor.
func (e *agentEnv) userHeld(ctx context.Context, t *testing.T, user string) []held {
	t.Helper()
	robot := harness.NewRobot(user, password, redirectURI)
	own := e.userToken(ctx, t, robot, scopeTools, "offline_access")
	acting := e.delegate(ctx, t, robot, agentA, e.ownToken(ctx, t, agentA, agentASecret), scopeTools, "offline_access")
	x := e.exchange(ctx, t, agentB, agentBSecret, own.AccessToken, e.ownToken(ctx, t, agentB, agentBSecret), nil)
	if x.Status != http.StatusOK {
		t.Fatalf("exchange %s's token to %s = %v, want 200", user, agentB, x)
	}
	return []held{
		{what: user + "'s token", access: own.AccessToken, refresh: own.RefreshToken, client: hostID},
		{what: user + "'s delegation to " + agentA, access: acting.AccessToken, refresh: acting.RefreshToken, client: hostID},
		{what: user + "'s token exchanged to " + agentB, access: x.AccessToken},
	}
}

// ownHeld is what a client or agent holds of its own: its client
// credentials token and that token exchanged (no actor).
func (e *agentEnv) ownHeld(ctx context.Context, t *testing.T, id, secret string) []held {
	t.Helper()
	own := e.ownToken(ctx, t, id, secret)
	x := e.exchange(ctx, t, id, secret, own, "", nil)
	if x.Status != http.StatusOK {
		t.Fatalf("exchange %s's own token = %v, want 200", id, x)
	}
	return []held{
		{what: id + "'s client credentials token", access: own},
		{what: id + "'s own token exchanged", access: x.AccessToken},
	}
}

// actingHeld is what agent holds for alice: a delegation (requested_actor,
// with a refresh token) and alice's token exchanged to it as actor.
func (e *agentEnv) actingHeld(ctx context.Context, t *testing.T, agent, secret string) []held {
	t.Helper()
	alice := harness.NewRobot(username, password, redirectURI)
	acting := e.delegate(ctx, t, alice, agent, e.ownToken(ctx, t, agent, secret), scopeTools, "offline_access")
	user := e.userToken(ctx, t, alice, scopeTools)
	x := e.exchange(ctx, t, agent, secret, user.AccessToken, e.ownToken(ctx, t, agent, secret), nil)
	if x.Status != http.StatusOK {
		t.Fatalf("exchange alice's token to %s = %v, want 200", agent, x)
	}
	return []held{
		{what: "alice's delegation to " + agent, access: acting.AccessToken, refresh: acting.RefreshToken, client: hostID},
		{what: "alice's token exchanged to " + agent, access: x.AccessToken},
	}
}

// bystanders are tokens no row touches: alice's (with refresh), svc's and
// agent-a's own.
func (e *agentEnv) bystanders(ctx context.Context, t *testing.T) []held {
	t.Helper()
	alice := e.userToken(ctx, t, harness.NewRobot(username, password, redirectURI), scopeTools, "offline_access")
	return []held{
		{what: "alice's token", access: alice.AccessToken, refresh: alice.RefreshToken, client: hostID},
		{what: "svc's token", access: e.ownToken(ctx, t, svcID, svcSecret)},
		{what: "agent-a's own token", access: e.ownToken(ctx, t, agentA, agentASecret)},
	}
}

// requireBystandersLive: the bystanders still work, refresh included.
func (e *agentEnv) requireBystandersLive(ctx context.Context, t *testing.T, hs []held) {
	t.Helper()
	e.requireLive(ctx, t, hs)
	for _, h := range hs {
		if h.refresh == "" {
			continue
		}
		a := e.tokenRequest(ctx, t, "", "", url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {h.refresh}, "client_id": {h.client}, "resource": {e.resource},
		})
		if a.Status != http.StatusOK {
			t.Errorf("%s: refresh = %v, want 200", h.what, a)
		}
	}
}

// TestRevocationByAdminAPI: deleting a client or rotating its secret,
// deleting, disabling or re-keying an agent, changing a user's password
// or deleting the user end what each holds (README: Admin API).
func TestRevocationByAdminAPI(t *testing.T) {
	e := setupAgents(t, agentOpts{admin: true})
	ctx := ctxTimeout(t, agentsTestLimit)
	bystanders := e.bystanders(ctx, t)

	addClient := func(t *testing.T, id string) *string {
		var added struct {
			Secret string `json:"client_secret"`
		}
		status := e.adminJSON(ctx, t, http.MethodPost, "/mcp-auth/clients", map[string]any{
			"client_id": id, "redirect_uris": []string{redirectURI},
			"grant_types": []string{"authorization_code", "refresh_token", "client_credentials", typeTokenExchange},
		}, &added)
		if status != http.StatusCreated || added.Secret == "" {
			t.Fatalf("POST /mcp-auth/clients %s: status %d; want 201 with a secret", id, status)
		}
		e.audit.secret(added.Secret)
		return &added.Secret
	}
	// clientHeld: the client's own tokens and alice's grant to it.
	clientHeld := func(t *testing.T, id string, secret *string) []held {
		hs := e.ownHeld(ctx, t, id, *secret)
		cfg := e.hostConfig(id, scopeTools, "offline_access")
		cfg.ClientSecret = *secret
		cfg.Endpoint.AuthStyle = oauth2.AuthStyleInHeader // client_secret_basic, as added
		ar := e.authRequest(cfg, "")
		tok, err := redeem(ctx, cfg, ar, e.code(ctx, t, harness.NewRobot(username, password, redirectURI), ar), "", "")
		if err != nil {
			t.Fatalf("alice's grant to %s: %v", id, err)
		}
		e.audit.secret(tok.AccessToken, tok.RefreshToken)
		return append(hs, held{what: "alice's grant to " + id, access: tok.AccessToken, refresh: tok.RefreshToken, client: id, secret: secret})
	}
	addAgent := func(t *testing.T, id string) string {
		var added struct {
			Secret string `json:"secret"`
		}
		if status := e.adminJSON(ctx, t, http.MethodPost, "/mcp-auth/agents", map[string]any{"agent_id": id}, &added); status != http.StatusCreated || added.Secret == "" {
			t.Fatalf("POST /mcp-auth/agents %s: status %d; want 201 with a secret", id, status)
		}
		e.audit.secret(added.Secret)
		return added.Secret
	}
	addUser := func(t *testing.T, name string) {
		if status := e.adminJSON(ctx, t, http.MethodPost, "/mcp-auth/users",
			map[string]any{"username": name, "password": password, "groups": []string{"writers"}}, nil); status != http.StatusCreated {
			t.Fatalf("POST /mcp-auth/users %s: status %d, want 201", name, status)
		}
	}
	do := func(t *testing.T, method, path string, in any, wantStatus int, out any) {
		if status := e.adminJSON(ctx, t, method, path, in, out); status != wantStatus {
			t.Fatalf("%s %s: status %d, want %d", method, path, status, wantStatus)
		}
	}

	tests := []struct {
		name string
		// run sets up what the principal holds, acts, and returns what
		// must be revoked and what must stay.
		run func(t *testing.T) (revoked, kept []held)
	}{
		{"client deleted", func(t *testing.T) ([]held, []held) {
			secret := addClient(t, "rt-client-del")
			hs := clientHeld(t, "rt-client-del", secret)
			e.requireLive(ctx, t, hs)
			do(t, http.MethodDelete, "/mcp-auth/clients/rt-client-del", nil, http.StatusNoContent, nil)
			hs[len(hs)-1].refreshErr = "invalid_client"
			return hs, nil
		}},
		{"client secret rotated", func(t *testing.T) ([]held, []held) {
			secret := addClient(t, "rt-client-rot")
			hs := clientHeld(t, "rt-client-rot", secret)
			e.requireLive(ctx, t, hs)
			var rot struct {
				Secret string `json:"client_secret"`
			}
			do(t, http.MethodPost, "/mcp-auth/clients/rt-client-rot/secret", nil, http.StatusOK, &rot)
			e.audit.secret(rot.Secret)
			*secret = rot.Secret // refresh with the new secret: the grant, not the client, is refused
			return hs, e.ownHeld(ctx, t, "rt-client-rot", rot.Secret)
		}},
		{"agent deleted", func(t *testing.T) ([]held, []held) {
			secret := addAgent(t, "rt-agent-del")
			hs := append(e.ownHeld(ctx, t, "rt-agent-del", secret), e.actingHeld(ctx, t, "rt-agent-del", secret)...)
			e.requireLive(ctx, t, hs)
			do(t, http.MethodDelete, "/mcp-auth/agents/rt-agent-del", nil, http.StatusNoContent, nil)
			return hs, nil
		}},
		{"agent disabled", func(t *testing.T) ([]held, []held) {
			secret := addAgent(t, "rt-agent-off")
			hs := append(e.ownHeld(ctx, t, "rt-agent-off", secret), e.actingHeld(ctx, t, "rt-agent-off", secret)...)
			e.requireLive(ctx, t, hs)
			do(t, http.MethodPost, "/mcp-auth/agents/rt-agent-off/disable", nil, http.StatusNoContent, nil)
			return hs, nil
		}},
		{"agent secret rotated", func(t *testing.T) ([]held, []held) {
			secret := addAgent(t, "rt-agent-rot")
			own := e.ownHeld(ctx, t, "rt-agent-rot", secret)
			acting := e.actingHeld(ctx, t, "rt-agent-rot", secret)
			e.requireLive(ctx, t, append(own, acting...))
			var rot struct {
				Secret string `json:"secret"`
			}
			do(t, http.MethodPost, "/mcp-auth/agents/rt-agent-rot/secret", nil, http.StatusOK, &rot)
			e.audit.secret(rot.Secret)
			// Users' delegations to the agent end with its own tokens; a
			// user's token exchanged to it is the user's grant, which
			// stays (README).
			return append(own, acting[0]), append(acting[1:], e.ownHeld(ctx, t, "rt-agent-rot", rot.Secret)...)
		}},
		{"user password changed", func(t *testing.T) ([]held, []held) {
			addUser(t, "rt-user-pw")
			hs := e.userHeld(ctx, t, "rt-user-pw")
			e.requireLive(ctx, t, hs)
			do(t, http.MethodPut, "/mcp-auth/users/rt-user-pw/password", map[string]any{"password": password + " new"}, http.StatusNoContent, nil)
			return hs, nil
		}},
		{"user deleted", func(t *testing.T) ([]held, []held) {
			addUser(t, "rt-user-del")
			hs := e.userHeld(ctx, t, "rt-user-del")
			e.requireLive(ctx, t, hs)
			do(t, http.MethodDelete, "/mcp-auth/users/rt-user-del", nil, http.StatusNoContent, nil)
			return hs, nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			revoked, kept := tc.run(t)
			e.requireRevoked(ctx, t, revoked)
			e.requireLive(ctx, t, kept)
		})
	}
	e.requireBystandersLive(ctx, t, bystanders)
}

// TestRevocationEndsPendingCall: a tools/call running when its token is
// revoked ends (its request to the MCP server is cancelled), and its client gets the
// refusal a new request with the token gets, a 401 invalid_token answering
// the call's id, not Caddy's bodiless 499 for a cancelled request, which
// a client reads as the server failing (CI stop 25: TestRevocationDelay
// met it when a revocation reached B's gateway during a call).
func TestRevocationEndsPendingCall(t *testing.T) {
	e := setupAgents(t, agentOpts{})
	ctx := ctxTimeout(t, 60*time.Second)
	tok := e.ownToken(ctx, t, svcID, svcSecret)
	e.audit.secret(tok)
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, body, err := rawToolCall(ctx, e.client, e.resource, tok, toolWait)
		got <- result{resp, body, err}
	}()
	select {
	case <-waiting.started:
		t.Cleanup(func() { waiting.release <- struct{}{} })
	case <-time.After(10 * time.Second):
		t.Fatal("the call of wait did not reach the MCP server")
	}
	e.revoke(ctx, t, svcID, svcSecret, tok)
	select {
	case <-waiting.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the request for wait is still open upstream 5 s after its token was revoked")
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("the call: %v", r.err)
	}
	ch, _ := challenge(r.resp.Header.Get("WWW-Authenticate"))
	var body struct {
		ID    int `json:"id"`
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.resp.StatusCode != http.StatusUnauthorized ||
		ch["error"] != "invalid_token" || body.ID != 7 || body.Error.Message != "the access token has been revoked" {
		t.Errorf("the call cut by the revocation = %d %v %s, want 401 invalid_token answering id 7", r.resp.StatusCode, r.resp.Header, r.body)
	}
	ev := e.audit.await(t, toolWait, func(ev auditEvent) bool { return ev.Tool == toolWait })
	if ev.Status != http.StatusUnauthorized || ev.Reason != "the access token has been revoked" || ev.Decision != "allow" {
		t.Errorf("audit event %+v, want the allowed call ended with 401 for the revocation", ev)
	}
}

// TestRevocationAfterReloadEndsPendingCall: a tools/call still running
// on the configuration a reload replaced (it runs on for up to 30 s)
// ends within seconds when its token is revoked after the reload, at the
// issuer of the configuration now running, as it would without the
// reload; a revocation must not wait for the old configuration's grace.
func TestRevocationAfterReloadEndsPendingCall(t *testing.T) {
	endedAfterReload(t, "its token was revoked", func(ctx context.Context, e *agentEnv, tok string) {
		e.revoke(ctx, t, svcID, svcSecret, tok)
	})
}

// TestKeyWithdrawnAfterReloadEndsPendingCall: the same for an emergency
// withdrawal of the signing key (the admin API's keys/rotate with
// withdraw) at the configuration now running.
func TestKeyWithdrawnAfterReloadEndsPendingCall(t *testing.T) {
	endedAfterReload(t, "its signing key was withdrawn", func(ctx context.Context, e *agentEnv, _ string) {
		v, err := caddy.ActiveContext().App("mcp_auth")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.(*caddymodule.App).Issuer().WithdrawSigningKeys(ctx, ""); err != nil {
			t.Fatalf("withdraw the signing keys: %v", err)
		}
	})
}

// TestRevocationAfterReloadChangingDSNEndsPendingCall: the same when
// the reload changes the DSN's text but not its database (a password
// read from a file that was rotated, a pool size, a timeout): the new
// configuration opens a store of its own on the same database, and the
// calls still running on the old one end on a revocation, or a key's
// withdrawal, made at the new one after the reload, as they do when the
// DSN stays the same.
func TestRevocationAfterReloadChangingDSNEndsPendingCall(t *testing.T) {
	for _, c := range []struct {
		what string
		end  func(ctx context.Context, e *agentEnv, tok string)
	}{
		{"its token was revoked", func(ctx context.Context, e *agentEnv, tok string) {
			e.revoke(ctx, t, svcID, svcSecret, tok)
		}},
		{"its signing key was withdrawn", func(ctx context.Context, e *agentEnv, _ string) {
			v, err := caddy.ActiveContext().App("mcp_auth")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.(*caddymodule.App).Issuer().WithdrawSigningKeys(ctx, ""); err != nil {
				t.Fatalf("withdraw the signing keys: %v", err)
			}
		}},
	} {
		t.Run(c.what, func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			endedAfterReloadOn(t, agentOpts{dsn: dsn, reloadDSN: dsn + " pool_max_conns=3"}, c.what, c.end)
		})
	}
}

// endedAfterReload begins a call of wait with a token of its own, reloads
// the same configuration, runs end, and wants the call's request to the
// MCP server ended within 5 s, on bbolt and on PostgreSQL.
func endedAfterReload(t *testing.T, what string, end func(ctx context.Context, e *agentEnv, tok string)) {
	for _, storage := range []string{"bolt", "postgres"} {
		t.Run(storage, func(t *testing.T) {
			o := agentOpts{}
			if storage == "postgres" {
				o.dsn = pgtest.NewDatabase(t)
			}
			endedAfterReloadOn(t, o, what, end)
		})
	}
}

func endedAfterReloadOn(t *testing.T, o agentOpts, what string, end func(ctx context.Context, e *agentEnv, tok string)) {
	t.Helper()
	c := callOverReload(t, o)
	select {
	case <-waiting.ended:
		t.Fatal("the call of wait ended at the reload")
	default:
	}
	end(c.ctx, c.e, c.tok)
	select {
	case <-waiting.ended:
	case <-time.After(5 * time.Second):
		// Ended here, so that the next test meets none of its signals.
		waiting.release <- struct{}{}
		c.released = true
		<-waiting.ended
		t.Fatalf("the request for wait, begun before a reload, is still open upstream 5 s after %s", what)
	}
	<-c.got
}

// pendingCall is a call of wait begun before a reload (callOverReload).
type pendingCall struct {
	e        *agentEnv
	ctx      context.Context
	tok      string
	got      chan callAnswer
	released bool // else the test's cleanup releases the tool
}

type callAnswer struct {
	status int
	body   string
	err    error
}

// callOverReload sets up the agents' configuration with o, begins a call
// of wait with a token of its own, reloads the same configuration and
// returns once the new one serves, the call still pending.
func callOverReload(t *testing.T, o agentOpts) *pendingCall {
	t.Helper()
	c := &pendingCall{e: setupAgents(t, o), ctx: ctxTimeout(t, 60*time.Second), got: make(chan callAnswer, 1)}
	c.tok = c.e.ownToken(c.ctx, t, svcID, svcSecret)
	c.e.audit.secret(c.tok)
	go func(client *http.Client) {
		resp, body, err := rawToolCall(c.ctx, client, c.e.resource, c.tok, toolWait)
		a := callAnswer{body: body, err: err}
		if resp != nil {
			a.status = resp.StatusCode
		}
		c.got <- a
	}(c.e.client)
	select {
	case <-waiting.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the call of wait did not reach the MCP server")
	}
	t.Cleanup(func() {
		if !c.released { // the tool runs on after its request ended
			waiting.release <- struct{}{}
		}
	})
	c.e.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if o.reloadDSN != "" {
		c.e.logs.dsn = o.reloadDSN
	}
	if err := harness.Load(t, c.e.caddyfile("")); err != nil {
		t.Fatalf("reload: %v", err)
	}
	settle(t, c.e.client, c.e.issuer+"/.well-known/oauth-authorization-server")
	return c
}

// TestReloadWithShortMaxStaleKeepsPendingCall: a tools/call still
// running on the configuration a reload replaced runs on to its answer,
// with revocation_max_stale shorter than the reload's grace. The old
// configuration's revocation set no longer catches up with the store
// once its app stops, and went stale max_stale later: the call ended
// then, "revocations cannot be checked at the moment", with the store
// up and the running configuration's set, which it asks since the
// reload (App.next), current.
func TestReloadWithShortMaxStaleKeepsPendingCall(t *testing.T) {
	for _, storage := range []string{"bolt", "postgres"} {
		t.Run(storage, func(t *testing.T) {
			o := agentOpts{extra: "\t\trevocation_max_stale 2s"}
			if storage == "postgres" {
				o.dsn = pgtest.NewDatabase(t)
			}
			c := callOverReload(t, o)
			select {
			case <-waiting.ended:
				a := <-c.got
				t.Fatalf("the call of wait, begun before a reload, ended within 5 s of it (revocation_max_stale 2s): %d %s %v", a.status, a.body, a.err)
			case <-time.After(5 * time.Second):
			}
			waiting.release <- struct{}{}
			c.released = true
			a := <-c.got
			<-waiting.ended
			if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, "waited") {
				t.Errorf("the call of wait = %d %s %v, want 200 with its answer", a.status, a.body, a.err)
			}
		})
	}
}

// TestReloadToAnotherDatabaseEndsPendingCallWhenStale: a reload to
// another database leaves the calls still running on the old one
// checked against the old configuration's revocation set, which no
// longer catches up with that store: once it is stale they end, as they
// did before the reload asked its successor, whose store knows nothing
// of what other instances on the old one revoke.
func TestReloadToAnotherDatabaseEndsPendingCallWhenStale(t *testing.T) {
	c := callOverReload(t, agentOpts{extra: "\t\trevocation_max_stale 2s", dsn: pgtest.NewDatabase(t), reloadDSN: pgtest.NewDatabase(t)})
	select {
	case <-waiting.ended:
	case <-time.After(8 * time.Second):
		waiting.release <- struct{}{}
		c.released = true
		<-waiting.ended
		t.Fatal("the call of wait, begun before a reload to another database, is still open upstream 8 s after it (revocation_max_stale 2s)")
	}
	<-c.got
}

// TestRevocationDuringPinFetch: a tools/call of a tool the gateway has
// not pinned yet waits for the MCP server's tools/list (pin_tools); a
// token revoked meanwhile gets the 401 invalid_token a new request with
// it gets, answering the call's id, and the call never reaches the
// server (it used to, and the tool ran for the revoked token).
func TestRevocationDuringPinFetch(t *testing.T) {
	l := &listHeld{listing: make(chan struct{}, 8), release: make(chan struct{})}
	listHold.Store(l)
	t.Cleanup(func() { listHold.Store(nil) })
	released := false
	release := func() {
		if !released {
			released = true
			close(l.release)
		}
	}
	t.Cleanup(release)
	e := setupAgents(t, agentOpts{})
	ctx := ctxTimeout(t, 60*time.Second)
	tok := e.ownToken(ctx, t, svcID, svcSecret)
	e.audit.secret(tok)
	type result struct {
		resp *http.Response
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, body, err := rawToolCall(ctx, e.client, e.resource, tok, toolWait)
		got <- result{resp, body, err}
	}()
	select {
	case <-l.listing:
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not ask the MCP server for its tools")
	}
	e.revoke(ctx, t, svcID, svcSecret, tok)
	time.Sleep(200 * time.Millisecond) // the revocation is in the gateway's set at once
	release()
	select {
	case <-waiting.started:
		waiting.release <- struct{}{}
		t.Fatal("the call of wait reached the MCP server after its token was revoked")
	case r := <-got:
		if r.err != nil {
			t.Fatalf("the call: %v", r.err)
		}
		ch, _ := challenge(r.resp.Header.Get("WWW-Authenticate"))
		var body struct {
			ID    int `json:"id"`
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(r.body), &body); err != nil || r.resp.StatusCode != http.StatusUnauthorized ||
			ch["error"] != "invalid_token" || body.ID != 7 || body.Error.Message != "the access token has been revoked" {
			t.Errorf("the call revoked during the fetch = %d %v %s, want 401 invalid_token answering id 7", r.resp.StatusCode, r.resp.Header, r.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no answer to the call 20 s after the tools list was released")
	}
	select {
	case <-waiting.started:
		waiting.release <- struct{}{}
		t.Error("the call of wait reached the MCP server after its token was revoked")
	case <-time.After(200 * time.Millisecond):
	}
}
