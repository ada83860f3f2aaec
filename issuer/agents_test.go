package issuer

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// agentToken gets an agent's own token with the x/oauth2 client
// credentials client (secret in the Basic header).
func (e *testEnv) agentToken(t *testing.T, id, secret string, scopes ...string) string {
	t.Helper()
	tok, err := e.agentTokenErr(id, secret, scopes...)
	if err != nil {
		t.Fatalf("agent %s: client credentials error: %v", id, err)
	}
	return tok
}

func (e *testEnv) agentTokenErr(id, secret string, scopes ...string) (string, error) {
	cc := clientcredentials.Config{
		ClientID: id, ClientSecret: secret, TokenURL: e.iss.endpoint(pathToken), Scopes: scopes,
		EndpointParams: url.Values{"resource": {tResource}}, AuthStyle: oauth2.AuthStyleInHeader,
	}
	tok, err := cc.Token(e.ctx())
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

func TestAgentOwnToken(t *testing.T) {
	e := newTokEnv(t)
	tok := e.agentToken(t, tAgent1, tAgentSecret, "read", "write", "admin")
	c := verifyLikeGateway(t, e, tok, "ES256")
	for k, want := range map[string]any{
		"sub": tAgent1, "client_id": tAgent1, "principal_type": "agent", "scope": "read write", "aud": tResource,
	} {
		if c[k] != want {
			t.Errorf("claim %s = %v, want %v", k, c[k], want)
		}
	}
	if _, ok := c["act"]; ok {
		t.Errorf("act = %v, want none on an agent's own token", c["act"])
	}
	gid, _ := c["gid"].(string)
	if g := e.grantOf(t, gid); g.PrincipalType != principalAgent || g.Subject != tAgent1 {
		t.Errorf("agent grant %q = %+v; want an agent grant", gid, g)
	}

	// client_secret_post works as well.
	a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {tAgent2},
		"client_secret": {tAgentSecret}, "resource": {tResource}}, "")
	if a.status != http.StatusOK || a.str("refresh_token") != "" {
		t.Fatalf("client_secret_post agent token = %d %s, want 200 without refresh token", a.status, a.raw)
	}
	if _, c := claimsOf(t, a.str("access_token")); c["scope"] != "read write admin" || c["principal_type"] != "agent" {
		t.Errorf("agent-2 scope, principal_type = %v, %v; want every scope, agent", c["scope"], c["principal_type"])
	}

	// private_key_jwt, with the key in the agent's JWKS.
	assertion := e.clientAssertion(t, func(m jwt.MapClaims, _ *jwt.Token) { m["iss"], m["sub"] = tAgentKey, tAgentKey })
	a = e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}, "scope": {"read"},
		"client_assertion_type": {jwtBearerAssertion}, "client_assertion": {assertion}}, "")
	if a.status != http.StatusOK {
		t.Fatalf("private_key_jwt agent token = %d %s, want 200", a.status, a.raw)
	}
	if _, c := claimsOf(t, a.str("access_token")); c["sub"] != tAgentKey || c["principal_type"] != "agent" {
		t.Errorf("private_key_jwt agent claims sub, principal_type = %v, %v", c["sub"], c["principal_type"])
	}
}

func TestAgentOwnTokenFailures(t *testing.T) {
	e := newTokEnv(t)
	tests := []struct {
		name, basic string
		form        url.Values
		wantStatus  int
		wantCode    string
		wantDesc    string // error_description, when set
	}{
		{"wrong secret", tAgent1 + ":nope", url.Values{}, 401, "invalid_client", ""},
		{"disabled agent", tAgentOff + ":" + tAgentSecret, url.Values{}, 401, "invalid_client", "agent disabled"},
		{"unknown agent", "agent-x:" + tAgentSecret, url.Values{}, 401, "invalid_client", "unknown client"},
		{"no credentials", "", url.Values{"client_id": {tAgent1}}, 401, "invalid_client", ""},
		{"scope the agent may not hold", tAgent1 + ":" + tAgentSecret, url.Values{"scope": {"admin"}}, 400, "invalid_scope", "none of the requested scopes may be granted for " + tResource + "; this client may get: read write"},
		{"unknown resource", tAgent1 + ":" + tAgentSecret, url.Values{"resource": {"https://nowhere.example/mcp"}}, 400, "invalid_target", ""},
		{"authorization code grant", tAgent1 + ":" + tAgentSecret, url.Values{"grant_type": {"authorization_code"}, "code": {"x"}}, 400, "unauthorized_client", ""},
		{"refresh grant", tAgent1 + ":" + tAgentSecret, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}}, 400, "unauthorized_client", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}}
			for k, v := range tt.form {
				f[k] = v
			}
			a := e.post(t, pathToken, f, tt.basic)
			if a.status != tt.wantStatus || a.str("error") != tt.wantCode || (tt.wantDesc != "" && a.str("error_description") != tt.wantDesc) {
				t.Fatalf("token = %d %s, want %d %s %q", a.status, a.raw, tt.wantStatus, tt.wantCode, tt.wantDesc)
			}
		})
	}
}

func TestAgentConfigValidation(t *testing.T) {
	sec := hashClientSecret("s")
	pub, err := publicJWK(jwtTestKey().Public())
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}}) // a valid set: refused for the pair alone
	tests := []struct {
		name    string
		agents  []Agent
		wantErr string
	}{
		{"ok", []Agent{{ID: "a", SecretHash: sec, MaxDepth: MaxDelegationDepth}}, ""},
		{"id of a client", []Agent{{ID: "c", SecretHash: sec}}, "a client has it"},
		{"repeated id", []Agent{{ID: "a", SecretHash: sec}, {ID: "a", SecretHash: sec}}, "repeated id"},
		{"empty id", []Agent{{SecretHash: sec}}, "agent id must be"},
		{"no credentials", []Agent{{ID: "a"}}, "exactly one of"},
		{"two credentials", []Agent{{ID: "a", SecretHash: sec, JWKSURI: "https://k.example/jwks"}}, "exactly one of"},
		// README: exactly one of secret, jwks_uri, jwks: each pair, and all three.
		{"secret and jwks", []Agent{{ID: "a", SecretHash: sec, JWKS: keys}}, "exactly one of"},
		{"jwks and jwks_uri", []Agent{{ID: "a", JWKS: keys, JWKSURI: "https://k.example/jwks"}}, "exactly one of"},
		{"three credentials", []Agent{{ID: "a", SecretHash: sec, JWKS: keys, JWKSURI: "https://k.example/jwks"}}, "exactly one of"},
		{"jwks alone", []Agent{{ID: "a", JWKS: keys}}, ""},
		{"depth 5", []Agent{{ID: "a", SecretHash: sec, MaxDepth: 5}}, ""},
		{"depth 6", []Agent{{ID: "a", SecretHash: sec, MaxDepth: 6}}, "max_depth must be 1 to 5"},
		{"bad secret hash", []Agent{{ID: "a", SecretHash: "plain"}}, "secret hash"},
		{"http jwks_uri", []Agent{{ID: "a", JWKSURI: "http://k.example/jwks"}}, "https"},
		// 0 reads as left out (the issuer's limit); the entry points
		// refuse it given (max_depth 0: want at least 1), so the message
		// names the range one may write.
		{"negative depth", []Agent{{ID: "a", SecretHash: sec, MaxDepth: -1}}, "max_depth must be 1 to 5, or left out for 5"},
		{"depth over the limit", []Agent{{ID: "a", SecretHash: sec, MaxDepth: MaxDelegationDepth + 1}}, "max_depth must be 1 to 5, or left out for 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Issuer: "https://issuer.example", Clients: []Client{{ID: "c"}}, Agents: tt.agents}
			_, err := New(cfg, newMemStore())
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("New() error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestAgentManagement(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	iss := e.iss
	rt := Agent{ID: "rt", Name: "Runtime", SecretHash: hashClientSecret("first"), Scopes: []string{"read"}}
	if err := iss.PutAgent(ctx, rt); err != nil {
		t.Fatalf("PutAgent() error = %v", err)
	}
	for _, tt := range []struct {
		name string
		a    Agent
		want error
	}{
		{"configured", Agent{ID: tAgent1, SecretHash: hashClientSecret("x")}, ErrConfigured},
		{"id of a configured client", Agent{ID: tConf, SecretHash: hashClientSecret("x")}, ErrInvalidEntry},
		{"no credentials", Agent{ID: "nocred"}, ErrInvalidEntry},
		{"space in id", Agent{ID: "a b", SecretHash: hashClientSecret("x")}, ErrInvalidEntry},
	} {
		if err := iss.PutAgent(ctx, tt.a); !errors.Is(err, tt.want) {
			t.Errorf("PutAgent(%s) error = %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := iss.PutClient(ctx, Client{ID: "stored-client", TokenEndpointAuthMethod: "none"}); err != nil {
		t.Fatal(err)
	}
	if err := iss.PutAgent(ctx, Agent{ID: "stored-client", SecretHash: hashClientSecret("x")}); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("PutAgent(id of a stored client) error = %v, want ErrInvalidEntry", err)
	}
	// A configured agent may not take a stored client's id either.
	cfg := e.config()
	cfg.Agents = append(cfg.Agents, Agent{ID: "stored-client", SecretHash: hashClientSecret("x")})
	if _, err := New(cfg, e.store); err == nil || !strings.Contains(err.Error(), "stored client") {
		t.Errorf("New(agent with a stored client's id) error = %v, want refusal", err)
	}
	for _, id := range []string{"rt", tAgent1} {
		if err := iss.PutClient(ctx, Client{ID: id, TokenEndpointAuthMethod: "none"}); !errors.Is(err, ErrInvalidEntry) {
			t.Errorf("PutClient(id of agent %s) error = %v, want ErrInvalidEntry", id, err)
		}
	}

	list, err := iss.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range list {
		ids = append(ids, a.ID+"/"+a.Source)
		if a.SecretHash != "" {
			t.Errorf("Agents() shows the secret hash of %s", a.ID)
		}
	}
	if got, want := strings.Join(ids, " "), "agent-1/config agent-2/config agent-key/config agent-narrow/config agent-off/config rt/admin"; got != want {
		t.Errorf("Agents() = %s, want %s", got, want)
	}
	if a, err := iss.Agent(ctx, "rt"); err != nil || a.Name != "Runtime" || a.SecretHash != "" || a.CreatedAt.IsZero() {
		t.Errorf("Agent(rt) = %+v, %v; want it without secret hash, with a creation time", a, err)
	}
	if _, err := iss.Agent(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Agent(nobody) error = %v, want store.ErrNotFound", err)
	}

	// Rotation: the old secret stops working, the new one works, the
	// agent's own tokens are revoked.
	old := e.agentToken(t, "rt", "first")
	secret, err := iss.RotateAgentSecret(ctx, "rt")
	if err != nil || secret == "" {
		t.Fatalf("RotateAgentSecret() = %q, %v", secret, err)
	}
	if _, err := e.agentTokenErr("rt", "first"); err == nil {
		t.Error("old secret still works after rotation")
	}
	if e.revokedToken(t, old) != true {
		t.Error("token from before the rotation not revoked")
	}
	tok := e.agentToken(t, "rt", secret)
	if _, err := iss.RotateAgentSecret(ctx, tAgent1); !errors.Is(err, ErrConfigured) {
		t.Errorf("RotateAgentSecret(configured) error = %v, want ErrConfigured", err)
	}

	// Disable: can't authenticate, tokens revoked at once; enable again.
	if err := iss.DisableAgent(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	if !e.revokedToken(t, tok) {
		t.Error("token of a disabled agent not revoked")
	}
	if _, err := e.agentTokenErr("rt", secret); err == nil {
		t.Error("disabled agent got a token")
	}
	if a, err := iss.Agent(ctx, "rt"); err != nil || !a.Disabled {
		t.Errorf("Agent(rt) after disable = %+v, %v; want disabled", a, err)
	}
	if err := iss.EnableAgent(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	tok = e.agentToken(t, "rt", secret)
	if e.revokedToken(t, tok) {
		t.Error("token after enable is revoked")
	}
	if err := iss.DisableAgent(ctx, tAgent1); !errors.Is(err, ErrConfigured) {
		t.Errorf("DisableAgent(configured) error = %v, want ErrConfigured", err)
	}

	// Delete: gone, its tokens and the delegations to it revoked.
	code, verifier := e.issueCode(t, codeSpec{actor: "rt", scopes: []string{"read", "offline_access"}})
	del, err := e.exchange(t, tPublic, "", code, verifier, oauth2.SetAuthURLParam("actor_token", tok))
	if err != nil {
		t.Fatalf("delegation to rt: %v", err)
	}
	if err := iss.DeleteAgent(ctx, "rt"); err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Agent(ctx, "rt"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Agent(rt) after delete error = %v, want store.ErrNotFound", err)
	}
	if !e.revokedToken(t, tok) || !e.revokedToken(t, del.AccessToken) {
		t.Error("after DeleteAgent its own or delegated tokens are not revoked")
	}
	r := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {del.RefreshToken}, "client_id": {tPublic}}, "")
	if r.str("error") != "invalid_grant" {
		t.Errorf("refresh of a deleted agent's delegation = %s, want invalid_grant", r.raw)
	}
	if err := iss.DeleteAgent(ctx, "rt"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteAgent twice error = %v, want store.ErrNotFound", err)
	}
}

// revokedToken reports what a gateway's Revoked hook says of a token.
func (e *testEnv) revokedToken(t *testing.T, raw string) bool {
	t.Helper()
	_, c := claimsOf(t, raw)
	jti, _ := c["jti"].(string)
	gid, _ := c["gid"].(string)
	return e.revoked(t, jti, gid)
}

// newMemStore is a memory store on a fixed clock for tests that only need
// New to run.
func newMemStore() store.Store {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	return memory.New(memory.Options{Now: clock.Now, RunTwice: true})
}

// newAgentSecret gives the configured agent id a new secret hash.
func newAgentSecret(id string) envOption {
	return func(c *Config) {
		c.Agents = slices.Clone(c.Agents)
		for n := range c.Agents {
			if c.Agents[n].ID == id {
				c.Agents[n].SecretHash = hashClientSecret("new secret")
			}
		}
	}
}

// rekeyEnv is a token environment, its configuration applied, and the
// agent a test re-keys how: "admin rotation", a runtime agent whose
// secret the admin API rotates, or "configuration", the configured
// tAgent1, re-keyed by reconfigure. rekey reports its failure with
// t.Error: it may run in a request's goroutine.
func rekeyEnv(t *testing.T, how string, reconfigure func(e *testEnv)) (e *testEnv, id, secret string, rekey func()) {
	t.Helper()
	e = newTokEnv(t)
	if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
		t.Fatal(err)
	}
	if how != "admin rotation" {
		return e, tAgent1, tAgentSecret, func() { reconfigure(e) }
	}
	if err := e.iss.PutAgent(t.Context(), Agent{ID: "rt", SecretHash: hashClientSecret("first")}); err != nil {
		t.Fatal(err)
	}
	return e, "rt", "first", func() {
		if _, err := e.iss.RotateAgentSecret(t.Context(), "rt"); err != nil {
			t.Error(err)
		}
	}
}

// TestAgentRekeyEndsDelegations: replacing an agent's credentials (the
// admin API's rotation; a new secret hash or keys in the configuration)
// ends the users' delegations to it (requested_actor), access and
// refresh tokens, with its own tokens: their act names the agent as its
// old credentials proved it, and a leak of those, or of the agent,
// handed them to whoever holds the agent's tokens. A user's own grant
// whose token was exchanged to the agent stays (revoking it would end
// the user's use of that client); the exchanged token ends with it.
func TestAgentRekeyEndsDelegations(t *testing.T) {
	for _, how := range []string{"admin rotation", "configuration"} {
		t.Run(how, func(t *testing.T) {
			e, id, secret, rekey := rekeyEnv(t, how, func(e *testEnv) {
				e.restart(e.store, newAgentSecret(tAgent1))
				if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
					t.Fatal(err)
				}
			})
			own := e.agentToken(t, id, secret)
			del := e.delegated(t, id, own, "read", "offline_access")
			user := e.userToken(t, tConf, "read")
			x := e.tokenExchange(t, id+":"+secret, exchangeForm(user.AccessToken, own))
			if x.status != http.StatusOK {
				t.Fatalf("exchange of the user's token to %s = %d %s", id, x.status, x.raw)
			}

			rekey()
			for what, tok := range map[string]string{"own token": own, "delegated token": del.AccessToken} {
				if !e.revokedToken(t, tok) {
					t.Errorf("%s of the re-keyed agent not revoked", what)
				}
			}
			r := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {del.RefreshToken}, "client_id": {tPublic}}, "")
			if r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
				t.Errorf("refresh of the delegation to the re-keyed agent = %d %s, want invalid_grant", r.status, r.raw)
			}
			if e.revokedToken(t, user.AccessToken) {
				t.Error("the user's grant whose token was exchanged to the agent was revoked")
			}
			// As README says (Limits: agents re-keyed or narrowed): the
			// exchanged token, naming the agent, stays until its exp,
			// which is no later than its subject token's.
			_, xc := claimsOf(t, x.str("access_token"))
			_, uc := claimsOf(t, user.AccessToken)
			if e.revokedToken(t, x.str("access_token")) || xc["act"] == nil || xc["exp"].(float64) > uc["exp"].(float64) {
				t.Errorf("token exchanged to the re-keyed agent: revoked %v, act %v, exp %v (subject's %v); want unrevoked, naming it, ending with its subject",
					e.revokedToken(t, x.str("access_token")), xc["act"], xc["exp"], uc["exp"])
			}
		})
	}
}

// TestAgentRekeyRacesRefresh: a refresh of a user's delegation to an
// agent that is signed before the agent is re-keyed (the admin API's
// rotation, or another instance applying a configuration with a new
// secret hash) and recorded after it issues nothing: the re-key stamps
// the agent as an actor (revokeAgentRekeyed), and the refresh rests on it
// as the grant was made.
func TestAgentRekeyRacesRefresh(t *testing.T) {
	for _, how := range []string{"admin rotation", "configuration"} {
		t.Run(how, func(t *testing.T) {
			e, id, secret, rekey := rekeyEnv(t, how, func(e *testEnv) {
				// Another instance applies the configuration.
				cfg := e.config()
				newAgentSecret(tAgent1)(&cfg)
				other, err := New(cfg, e.store)
				if err == nil {
					err = other.ApplyConfigChanges(t.Context())
				}
				if err != nil {
					t.Error(err)
				}
			})
			del := e.delegated(t, id, e.agentToken(t, id, secret), "read", "offline_access")
			e.clock.Advance(time.Second)
			e.iss.mint.beforeRecord = func() {
				e.iss.mint.beforeRecord = nil
				e.clock.Advance(time.Second)
				rekey()
			}
			r := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {del.RefreshToken}, "client_id": {tPublic}}, "")
			if r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
				t.Errorf("refresh of the delegation racing the re-key = %d %s, want invalid_grant", r.status, r.raw)
			}
		})
	}
}

// TestAgentJWKSURIRolloverRevokesNothing: a configured agent's keys
// served at its jwks_uri may change at any time (a key rollover the agent
// does itself), which no reload sees: the configuration, and so the
// agent's credential, is unchanged, and nothing is revoked, its own
// tokens and users' delegations to it included, however often Caddy
// reloads; the new key authenticates once fetched. Changing the
// jwks_uri in the configuration is a re-key and ends them
// (revokeAgentRekeyed).
func TestAgentJWKSURIRolloverRevokesNothing(t *testing.T) {
	var served atomic.Pointer[[]byte]
	keys := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*served.Load())
	}))
	defer keys.Close()
	const id = "remote-agent"
	withAgent := func(uri string) envOption {
		return func(c *Config) {
			c.HTTPClient, c.CIMDAllowPrivate = keys.Client(), true
			c.Agents = append(slices.Clone(c.Agents), Agent{ID: id, JWKSURI: uri})
		}
	}
	e := newTokEnv(t, withAgent(keys.URL+"/jwks.json"))
	apply := func(uri string) {
		t.Helper()
		e.restart(e.store, withAgent(uri))
		if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	apply(keys.URL + "/jwks.json")
	pub, _ := publicJWK(e.jwtKey.Public())
	serve := func(kid string) {
		pub.Kid = kid
		b, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
		served.Store(&b)
	}
	ownToken := func(kid string) answer {
		return e.post(t, pathToken, ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion},
			"client_assertion": {e.clientAssertion(t, func(c jwt.MapClaims, tk *jwt.Token) {
				c["iss"], c["sub"] = id, id
				tk.Header["kid"] = kid
			})}}), "")
	}
	serve("k1")
	own := ownToken("k1")
	if own.status != http.StatusOK {
		t.Fatalf("the agent's own token = %d %s", own.status, own.raw)
	}
	del := e.delegated(t, id, own.str("access_token"), "read", "offline_access")

	serve("k2") // the agent rolls its key over
	apply(keys.URL + "/jwks.json")
	e.clock.Advance(jwksMinRefetch)
	if a := ownToken("k2"); a.status != http.StatusOK {
		t.Errorf("the agent's new key = %d %s, want 200", a.status, a.raw)
	}
	for what, tok := range map[string]string{"own token": own.str("access_token"), "delegated token": del.AccessToken} {
		if e.revokedToken(t, tok) {
			t.Errorf("%s revoked by a key rollover at an unchanged jwks_uri", what)
		}
	}
	r := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {del.RefreshToken}, "client_id": {tPublic}}, "")
	if r.status != http.StatusOK {
		t.Fatalf("refresh of the delegation after the rollover = %d %s, want 200", r.status, r.raw)
	}

	apply(keys.URL + "/jwks-2.json") // the operator re-keys it
	if !e.revokedToken(t, r.str("access_token")) {
		t.Error("a new jwks_uri in the configuration left the delegation")
	}
}

// TestAgentEndEndsExchangedTokens: as README says (Limits: agents
// re-keyed or narrowed), disabling or removing an agent, unlike
// re-keying it, ends the tokens exchanged to it from a user's grant,
// by revoking that grant (the user's token from it with them), and its
// own tokens and users' delegations to it (requested_actor): through
// the admin API, and by a configuration that removes it or, in JSON,
// disables it.
func TestAgentEndEndsExchangedTokens(t *testing.T) {
	removeAgent1 := func(c *Config) {
		c.Agents = slices.DeleteFunc(slices.Clone(c.Agents), func(a Agent) bool { return a.ID == tAgent1 })
	}
	disableAgent1 := withEntry(func(c *Config) *[]Agent { return &c.Agents }, func(a *Agent) bool { return a.ID == tAgent1 }, func(a *Agent) { a.Disabled = true })
	for _, tt := range []struct {
		how string
		end func(t *testing.T, e *testEnv, id string)
	}{
		{"admin disable", func(t *testing.T, e *testEnv, id string) {
			if err := e.iss.DisableAgent(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}},
		{"admin delete", func(t *testing.T, e *testEnv, id string) {
			if err := e.iss.DeleteAgent(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}},
		{"configuration removal", func(t *testing.T, e *testEnv, _ string) { e.applyConfig(t, removeAgent1) }},
		{"configuration disabled", func(t *testing.T, e *testEnv, _ string) { e.applyConfig(t, disableAgent1) }},
	} {
		t.Run(tt.how, func(t *testing.T) {
			e := newTokEnv(t)
			e.applyConfig(t)
			id, secret := tAgent1, tAgentSecret
			if strings.HasPrefix(tt.how, "admin") {
				id, secret = "rt", "rt-secret"
				if err := e.iss.PutAgent(t.Context(), Agent{ID: id, SecretHash: hashClientSecret(secret)}); err != nil {
					t.Fatal(err)
				}
			}
			own := e.agentToken(t, id, secret)
			user := e.userToken(t, tConf, "read")
			x := e.tokenExchange(t, id+":"+secret, exchangeForm(user.AccessToken, own))
			if x.status != http.StatusOK {
				t.Fatalf("exchange of the user's token to %s = %d %s", id, x.status, x.raw)
			}
			del := e.delegated(t, id, own, "read", "offline_access")
			tt.end(t, e, id)
			e.requireRevoked(t, tt.how, map[string]string{"exchanged token": x.str("access_token"), "user's token": user.AccessToken, "own token": own, "delegation": del.AccessToken},
				"exchanged token", "user's token", "own token", "delegation")
			r := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {del.RefreshToken}, "client_id": {tPublic}}, "")
			if r.str("error") != "invalid_grant" {
				t.Errorf("%s: refresh of the delegation = %d %s, want invalid_grant", tt.how, r.status, r.raw)
			}
		})
	}
}
