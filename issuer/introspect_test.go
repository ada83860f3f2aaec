package issuer

import (
	"errors"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIntrospection(t *testing.T) {
	e := newTokEnv(t)
	code, verifier := e.issueCode(t, codeSpec{client: tConf, actor: "", scopes: []string{"read", "offline_access"}})
	tok, err := e.exchange(t, tConf, tSecret, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	a := e.introspect(t, tok.AccessToken)
	now := float64(e.clock.Now().Unix())
	want := map[string]any{
		"active": true, "scope": "read offline_access", "client_id": tConf, "sub": tUser, "aud": tResource,
		"iss": e.iss.URL(), "exp": now + 3600, "iat": now, "token_type": "Bearer",
	}
	for k, v := range want {
		if a.body[k] != v {
			t.Errorf("introspect access token %s = %v, want %v", k, a.body[k], v)
		}
	}
	if a.str("jti") == "" || a.header.Get("Cache-Control") != "no-store" {
		t.Errorf("introspection jti, Cache-Control = %q, %q", a.str("jti"), a.header.Get("Cache-Control"))
	}

	r := e.post(t, pathIntrospect, url.Values{"token": {tok.RefreshToken}}, tConf+":"+tSecret)
	if r.body["active"] != true || r.str("sub") != tUser || r.str("client_id") != tConf || r.str("token_type") != "refresh_token" {
		t.Errorf("introspect own refresh token = %s, want active, token_type refresh_token", r.raw)
	}
	// Not to a resource server: it has no use for one, and an answer it
	// could read as an access token's would let the refresh token pass
	// for one (review s13-remote F1; TestRefreshTokenNotAnAccessToken).
	if r := e.introspect(t, tok.RefreshToken); r.raw != "{\"active\":false}\n" {
		t.Errorf("a resource server's introspection of a refresh token = %q, want only active false", r.raw)
	}
	if o := e.post(t, pathIntrospect, url.Values{"token": {tok.RefreshToken}, "client_id": {tPost}, "client_secret": {tSecret2}}, ""); o.raw != "{\"active\":false}\n" {
		t.Errorf("introspect another client's refresh token = %q, want only active false", o.raw)
	}

	for _, tt := range []struct {
		name, token, basic string
		form               url.Values
		status             int
		code               string
	}{
		{name: "no client authentication", token: tok.AccessToken, status: 401, code: "invalid_client"},
		{name: "public client", token: tok.AccessToken, form: url.Values{"client_id": {tPublic}}, status: 401, code: "invalid_client"},
		{name: "bad secret", token: tok.AccessToken, basic: tConf + ":x", status: 401, code: "invalid_client"},
		{name: "no token", basic: tConf + ":" + tSecret, status: 400, code: "invalid_request"},
		{name: "garbage", token: "not-a-token", basic: tConf + ":" + tSecret, status: 200},
		{name: "tampered", token: tok.AccessToken[:len(tok.AccessToken)-4] + "AAAA", basic: tConf + ":" + tSecret, status: 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := url.Values{}
			if tt.token != "" {
				f.Set("token", tt.token)
			}
			for k, v := range tt.form {
				f[k] = v
			}
			a := e.post(t, pathIntrospect, f, tt.basic)
			if a.status != tt.status || a.str("error") != tt.code {
				t.Fatalf("introspect = %d %s, want %d %q", a.status, a.raw, tt.status, tt.code)
			}
			if tt.status == 200 && a.body["active"] != false {
				t.Fatalf("introspect = %s, want active false", a.raw)
			}
		})
	}

	e.clock.Advance(time.Hour)
	if e.active(t, tok.AccessToken) {
		t.Error("expired access token is active")
	}
	req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathIntrospect), nil)
	if a := e.do(t, req); a.status != 405 {
		t.Errorf("GET introspect = %d, want 405", a.status)
	}
}

// TestIntrospectionEntitlement: a token is active only to its own client,
// an agent acting in it (or, alone, its subject) and a resource server
// the operator marked (Introspect); every other caller gets exactly
// {"active":false}, access and refresh tokens alike. A self-registered
// client is never a resource server, whatever its record says.
func TestIntrospectionEntitlement(t *testing.T) {
	e := newTokEnv(t)
	const dcrSecret, forgedSecret = "dcr-secret", "forged-secret"
	for id, secret := range map[string]string{"dcr": dcrSecret, "forged": forgedSecret} {
		e.putClientRecord(t, bucketClients, id, Client{ID: id, SecretHash: hashClientSecret(secret), Introspect: id == "forged",
			TokenEndpointAuthMethod: authClientSecretBasic, RedirectURIs: []string{tRedirect}, Source: sourceDCR})
	}
	confTok := e.userToken(t, tConf, "read", "offline_access")             // alice through tConf
	agent1 := e.agentToken(t, tAgent1, tAgentSecret)                       // agent-1 alone
	delegated := e.delegated(t, tAgent1, agent1, "read", "offline_access") // alice through tPublic, agent-1 acting
	chained := e.tokenExchange(t, tAgent2+":"+tAgentSecret, exchangeForm(delegated.AccessToken, e.agentToken(t, tAgent2, tAgentSecret)))
	if chained.status != http.StatusOK {
		t.Fatalf("token exchange = %d %s", chained.status, chained.raw)
	}
	ccTok := e.clientToken(t) // tConf alone
	code, verifier := e.issueCode(t, codeSpec{client: "dcr"})
	dcrTok, err := e.exchange(t, "dcr", dcrSecret, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{
		"conf access":                  confTok.AccessToken,
		"conf refresh":                 confTok.RefreshToken,
		"conf client credentials":      ccTok,
		"agent-1 alone":                agent1,
		"delegated access":             delegated.AccessToken,
		"delegated refresh":            delegated.RefreshToken,
		"chained agent-2 over agent-1": chained.str("access_token"),
		"dcr access":                   dcrTok.AccessToken,
	}
	for _, tt := range []struct {
		caller, basic string
		form          url.Values
		active        []string // the tokens this caller sees active; all others must be inactive
	}{
		{caller: "own client (basic)", basic: tConf + ":" + tSecret, active: []string{"conf access", "conf refresh", "conf client credentials"}},
		{caller: "other client (post)", form: url.Values{"client_id": {tPost}, "client_secret": {tSecret2}}},
		// Refresh tokens are active to their client only.
		{caller: "resource server", basic: tOnlyCC + ":" + tSecret, active: slices.DeleteFunc(slices.Collect(maps.Keys(tokens)), func(n string) bool { return strings.HasSuffix(n, " refresh") })},
		{caller: "agent in the act chain, alone too", basic: tAgent1 + ":" + tAgentSecret,
			active: []string{"agent-1 alone", "delegated access", "chained agent-2 over agent-1"}},
		{caller: "agent outermost in a chain", basic: tAgent2 + ":" + tAgentSecret, active: []string{"chained agent-2 over agent-1"}},
		{caller: "unrelated agent", basic: tAgentNarrow + ":" + tAgentSecret},
		{caller: "dcr client", basic: "dcr:" + dcrSecret, active: []string{"dcr access"}},
		{caller: "dcr client whose record says introspect", basic: "forged:" + forgedSecret},
	} {
		for name, tok := range tokens {
			t.Run(tt.caller+", "+name, func(t *testing.T) {
				f := url.Values{"token": {tok}}
				for k, v := range tt.form {
					f[k] = v
				}
				a := e.post(t, pathIntrospect, f, tt.basic)
				want := slices.Contains(tt.active, name)
				if a.status != http.StatusOK || a.body["active"] != want {
					t.Fatalf("introspect = %d %s, want active %v", a.status, a.raw, want)
				}
				if !want && a.raw != "{\"active\":false}\n" {
					t.Errorf("introspect = %q, want only active false", a.raw)
				}
			})
		}
	}
	for _, tt := range []struct{ caller, basic string }{
		{"own client, wrong secret", tConf + ":x"},
		{"resource server, wrong secret", tOnlyCC + ":x"},
		{"agent, wrong secret", tAgent1 + ":x"},
		{"disabled agent", tAgentOff + ":" + tAgentSecret},
		{"unknown client", "ghost:" + tSecret},
	} {
		t.Run(tt.caller, func(t *testing.T) {
			a := e.post(t, pathIntrospect, url.Values{"token": {confTok.AccessToken}}, tt.basic)
			if a.status != http.StatusUnauthorized || a.str("error") != "invalid_client" {
				t.Errorf("introspect = %d %s, want 401 invalid_client", a.status, a.raw)
			}
		})
	}
}

// TestIntrospectOption: only an operator's confidential client can be a
// resource server.
func TestIntrospectOption(t *testing.T) {
	e := newTokEnv(t)
	cfg := e.config()
	cfg.Clients = append(cfg.Clients, Client{ID: "rs-public", TokenEndpointAuthMethod: authNone, Introspect: true})
	if _, err := New(cfg, e.store); err == nil || !strings.Contains(err.Error(), "introspect") {
		t.Errorf("New() with a public introspect client: error = %v, want one about introspection", err)
	}
	err := e.iss.PutClient(t.Context(), Client{ID: "rs-public", TokenEndpointAuthMethod: authNone, Introspect: true})
	if !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("PutClient(public, introspect) error = %v, want ErrInvalidEntry", err)
	}
	const secret = "rs-secret"
	if err := e.iss.PutClient(t.Context(), Client{ID: "rs-admin", SecretHash: hashClientSecret(secret), Introspect: true}); err != nil {
		t.Fatal(err)
	}
	tok := e.userToken(t, tConf, "read")
	if a := e.post(t, pathIntrospect, url.Values{"token": {tok.AccessToken}}, "rs-admin:"+secret); a.body["active"] != true {
		t.Errorf("introspect as an admin-API resource server = %s, want active", a.raw)
	}
}

// TestIntrospectRefreshSignInAgain: a refresh token is active only while
// the refresh grant would take it: an identity provider's user whose last
// sign-in there is older than recheck gets no new tokens
// (errSignInAgain), so the user's refresh tokens are inactive then, not
// active, as they were, until the family expired (up to
// refresh_token_ttl); a sign-in at the provider makes them active again.
func TestIntrospectRefreshSignInAgain(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp), func(c *Config) { c.IdentityProviders[0].Recheck = time.Hour })
	conf := tConf + ":" + tSecret
	// The ID-JAG provisions corp:u1, signed in at the IdP now.
	if a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	code, verifier := e.issueCode(t, codeSpec{client: tConf, user: "corp:u1", scopes: []string{"read", "offline_access"}})
	tok, err := e.exchange(t, tConf, tSecret, code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	active := func() bool {
		t.Helper()
		a := e.post(t, pathIntrospect, url.Values{"token": {tok.RefreshToken}}, conf)
		if a.status != http.StatusOK {
			t.Fatalf("introspect = %d %s, want 200", a.status, a.raw)
		}
		return a.body["active"] == true
	}
	if !active() {
		t.Fatal("the refresh token is not active after the sign-in")
	}
	e.clock.Advance(61 * time.Minute)
	if a := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {tok.RefreshToken}}, conf); a.str("error") != "invalid_grant" {
		t.Fatalf("refresh past recheck = %d %s, want invalid_grant", a.status, a.raw)
	}
	if active() {
		t.Error("past recheck, introspection says active a refresh token the refresh grant refuses")
	}
	if a := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); a.status != http.StatusOK {
		t.Fatalf("redeem = %d %s, want 200", a.status, a.raw)
	}
	if !active() {
		t.Error("signed in at the IdP again, the refresh token is not active")
	}
}
