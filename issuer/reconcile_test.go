package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// TestApplyConfigChanges: a configuration applied after another to the
// same store revokes what it removed or re-keyed, and nothing else;
// another issuer's configuration in the same store is not a change.
func TestApplyConfigChanges(t *testing.T) {
	e := newTokEnv(t)
	apply := func(opts ...envOption) { t.Helper(); e.applyConfig(t, opts...) }
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

// applyConfig restarts e's issuer on its store with opts and applies the
// configuration's changes, as a reload does.
func (e *testEnv) applyConfig(t *testing.T, opts ...envOption) {
	t.Helper()
	e.restart(e.store, opts...)
	if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
		t.Fatalf("ApplyConfigChanges: %v", err)
	}
}

// withEntry edits, with edit, the entries of a list of the configuration
// (list: its Users, Clients, Agents, Groups) that match selects.
func withEntry[T any](list func(*Config) *[]T, selects func(*T) bool, edit func(*T)) envOption {
	return func(c *Config) {
		l := list(c)
		*l = slices.Clone(*l)
		for n := range *l {
			if selects(&(*l)[n]) {
				edit(&(*l)[n])
			}
		}
	}
}

// requireRevoked checks that of toks (name -> access token) exactly
// those want names are revoked.
func (e *testEnv) requireRevoked(t *testing.T, step string, toks map[string]string, want ...string) {
	t.Helper()
	for name, tok := range toks {
		if got := e.revokedToken(t, tok); got != slices.Contains(want, name) {
			t.Errorf("%s: %s revoked = %v, want %v", step, name, got, !got)
		}
	}
}

// editRecordedConfig changes the configuration recorded as applied to
// e's store, say into what an earlier version recorded.
func (e *testEnv) editRecordedConfig(t *testing.T, edit func(*directorySnapshot)) {
	t.Helper()
	if err := e.store.Update(t.Context(), func(tx store.Tx) error {
		configs := configIn(tx)
		prev, err := configs.get(e.iss.URL())
		if err != nil {
			return err
		}
		edit(prev)
		return configs.put(e.iss.URL(), prev)
	}); err != nil {
		t.Fatal(err)
	}
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
		ss := newSessions(st, &cfg, tt.at, nil, &credentialTags{issuer: tt.at.String()})
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

// TestRollingCredentialChange: instances sharing a store take a new
// configuration one after the other. Once A has applied it, B, not
// reloaded yet, still knows the credential it replaced (a user's
// password, a client's or an agent's secret) but issues nothing on it,
// nor on what A issued. What B issued on it while its own configuration
// was the one recorded (appliedWhile: a user's session, code and grant;
// a client's or agent's own token) is refused at A, and B's own reload
// revokes it. What A issued under the new credential works after B's
// reload, and grants from before grants recorded their credential keep
// working.
func TestRollingCredentialChange(t *testing.T) {
	const (
		svc, bot             = "svc", "bot"
		oldSecret, newSecret = "old secret", "new secret"
	)
	type tokens struct {
		access, refresh string
		// A user's browser, signed in, and a code it got, not redeemed.
		browser        *http.Client
		code, verifier string
	}
	rekey := func(id string) func(*Config) {
		return func(c *Config) {
			c.Clients, c.Agents = slices.Clone(c.Clients), slices.Clone(c.Agents)
			for n := range c.Clients {
				if c.Clients[n].ID == id {
					c.Clients[n].SecretHash = hashClientSecret(newSecret)
				}
			}
			for n := range c.Agents {
				if c.Agents[n].ID == id {
					c.Agents[n].SecretHash = hashClientSecret(newSecret)
				}
			}
		}
	}
	conf := func(e *testEnv) *oauth2.Config {
		return &oauth2.Config{
			ClientID: bClientID, RedirectURL: bRedirect, Scopes: []string{"files:read", "offline_access"},
			Endpoint: oauth2.Endpoint{AuthURL: e.url(pathAuthorize, nil), TokenURL: e.url(pathToken, nil), AuthStyle: oauth2.AuthStyleInParams},
		}
	}
	resource := oauth2.SetAuthURLParam("resource", bResource)
	// authorize runs an authorization request in browser c, signing in
	// with password when asked, and returns the code and its verifier.
	authorize := func(e *testEnv, c *http.Client, password string) (code, verifier string, err error) {
		verifier = oauth2.GenerateVerifier()
		cb, err := e.robot(c, conf(e).AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), resource), bRedirect, bUser, password, "approve")
		if err != nil {
			return "", "", err
		}
		return cb.Query().Get("code"), verifier, nil
	}
	redeem := func(e *testEnv, code, verifier string) (*oauth2.Token, error) {
		return conf(e).Exchange(e.ctx(), code, oauth2.VerifierOption(verifier), resource)
	}
	clientToken := func(t *testing.T, e *testEnv, id, secret string) tokens {
		t.Helper()
		a := e.post(t, pathToken, url.Values{"grant_type": {grantClientCredentials}, "resource": {bResource}}, id+":"+secret)
		if a.status != http.StatusOK {
			t.Fatalf("%s: client credentials with its secret = %d %s, want 200", id, a.status, a.raw)
		}
		return tokens{access: a.str("access_token")}
	}
	// ownExchange is the client's or agent's exchange of its own token.
	ownExchange := func(t *testing.T, e *testEnv, id string, tok *tokens, secret string) answer {
		t.Helper()
		return e.tokenExchange(t, id+":"+secret, exchangeForm(tok.access, ""))
	}
	tests := []struct {
		name     string
		old, new string // the principal's credential before and after
		rekey    func(*Config)
		issue    func(t *testing.T, e *testEnv, credential string) tokens
		// use uses tok at the issuer e serves, whose configuration has
		// credential; refused is the error of a refused use.
		use     func(t *testing.T, e *testEnv, tok *tokens, credential string) answer
		refused string
	}{
		{
			name: "user's password", old: bPassword, new: tPassword,
			rekey: func(c *Config) {
				c.Users = slices.Clone(c.Users)
				c.Users[0].PasswordHash = passwordHash() // tPassword's
			},
			issue: func(t *testing.T, e *testEnv, password string) tokens {
				t.Helper()
				tok := tokens{browser: e.browser()}
				code, verifier, err := authorize(e, tok.browser, password)
				if err != nil {
					t.Fatalf("sign-in: %v", err)
				}
				ot, err := redeem(e, code, verifier)
				if err != nil {
					t.Fatalf("redeem: %v", err)
				}
				tok.access, tok.refresh = ot.AccessToken, ot.RefreshToken
				if tok.code, tok.verifier, err = authorize(e, tok.browser, ""); err != nil {
					t.Fatalf("authorization in the session: %v", err)
				}
				return tok
			},
			use: func(t *testing.T, e *testEnv, tok *tokens, _ string) answer {
				t.Helper()
				a := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {tok.refresh}, "client_id": {bClientID}}, "")
				if a.status == http.StatusOK {
					tok.refresh = a.str("refresh_token")
				}
				return a
			},
			refused: "invalid_grant",
		},
		{
			name: "client's secret", old: oldSecret, new: newSecret, rekey: rekey(svc),
			issue: func(t *testing.T, e *testEnv, secret string) tokens { return clientToken(t, e, svc, secret) },
			use: func(t *testing.T, e *testEnv, tok *tokens, secret string) answer {
				return ownExchange(t, e, svc, tok, secret)
			},
			refused: "invalid_request", // RFC 8693 2.2.2: an invalid subject_token
		},
		{
			name: "agent's secret", old: oldSecret, new: newSecret, rekey: rekey(bot),
			issue: func(t *testing.T, e *testEnv, secret string) tokens { return clientToken(t, e, bot, secret) },
			use: func(t *testing.T, e *testEnv, tok *tokens, secret string) answer {
				return ownExchange(t, e, bot, tok, secret)
			},
			refused: "invalid_request",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newBrowserEnv(t, func(c *Config) {
				c.Clients = append(c.Clients, Client{ID: svc, SecretHash: hashClientSecret(oldSecret),
					GrantTypes: []string{grantClientCredentials, grantTokenExchange}, Scopes: []string{"files:read"}})
				c.Agents = append(c.Agents, Agent{ID: bot, SecretHash: hashClientSecret(oldSecret), Scopes: []string{"files:read"}})
			})
			apply, at := e.rolling(t)
			// refusedAt checks, where e serves, that a session and a code
			// of the old password are refused.
			refusedAt := func(where string, tok tokens) {
				t.Helper()
				if tok.browser == nil {
					return
				}
				if _, _, err := authorize(e, tok.browser, ""); err == nil {
					t.Errorf("%s: the session signed in with the old password authorizes", where)
				}
				if _, err := redeem(e, tok.code, tok.verifier); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
					t.Errorf("%s: redeeming a code of the old password: %v, want invalid_grant", where, err)
				}
			}
			apply()
			b := e.iss
			cfg := b.cfg
			tt.rekey(&cfg)

			// A applies the new configuration first; what it issues
			// carries the new credential.
			e.serve(cfg)
			a := e.iss
			apply()
			fresh := tt.issue(t, e, tt.new)

			// B, not reloaded yet, issues nothing for the principal
			// while A's configuration is the one applied
			// (TestReloadWindowIssuesNothing), but did while its own
			// was, and takes the session A signed in.
			at(b)
			var stale []tokens
			var legacy tokens
			appliedWhile(t, b, a, func() {
				stale = []tokens{tt.issue(t, e, tt.old), tt.issue(t, e, tt.old)}
				legacy = tt.issue(t, e, tt.old)
			})
			_, lc := claimsOf(t, legacy.access)
			g := e.grantOf(t, lc["gid"].(string))
			g.Credential, g.ClientCredential = "", "" // as recorded before grants recorded them
			e.put(bucketGrants, g.ID, &g, g.ExpiresAt)
			if r := tt.use(t, e, &fresh, tt.old); r.status != http.StatusBadRequest {
				t.Errorf("at B, not reloaded: use of what A issued = %d %s, want 400 (B declares a replaced credential)", r.status, r.raw)
			}
			if fresh.browser != nil {
				if _, _, err := authorize(e, fresh.browser, ""); err != nil {
					t.Errorf("at B, not reloaded: the session signed in at A: %v", err)
				}
			}

			// At A, what B issued under the old credential is refused;
			// the refusal revokes nothing (an instance whose reload
			// failed refuses so too, review s16b F1): B's reload does.
			at(a)
			if r := tt.use(t, e, &stale[0], tt.new); r.status != http.StatusBadRequest || r.str("error") != tt.refused {
				t.Errorf("at A: use of what B issued under the old credential = %d %s, want 400 %s", r.status, r.raw, tt.refused)
			}
			refusedAt("at A", stale[0])

			// B reloads: what it issued under the old credential is
			// revoked, used or not.
			e.serve(cfg)
			apply()
			for n, tok := range stale {
				if !e.revokedToken(t, tok.access) {
					t.Errorf("after B's reload: access token %d B issued under the old credential is not revoked", n)
				}
			}
			if r := tt.use(t, e, &stale[1], tt.new); r.status != http.StatusBadRequest || r.str("error") != tt.refused {
				t.Errorf("after B's reload: use of what B issued under the old credential = %d %s, want 400 %s", r.status, r.raw, tt.refused)
			}
			refusedAt("after B's reload", stale[1])
			for name, tok := range map[string]*tokens{"issued by A": &fresh, "recorded without a credential": &legacy} {
				if e.revokedToken(t, tok.access) {
					t.Errorf("after B's reload: access token %s is revoked", name)
				}
				if r := tt.use(t, e, tok, tt.new); r.status != http.StatusOK {
					t.Errorf("after B's reload: use of a grant %s = %d %s, want 200", name, r.status, r.raw)
				}
			}
			if fresh.browser != nil {
				if _, _, err := authorize(e, fresh.browser, ""); err != nil {
					t.Errorf("after B's reload: the session signed in at A: %v", err)
				}
			}
		})
	}
}

// TestRollingClientSecretChange: a configured confidential client's
// secret is replaced, and instances sharing a store reload one after the
// other. Replacing it ends every grant the client holds
// (ApplyConfigChanges); B, not reloaded yet, issues nothing to the
// client then, and what it issued under the old secret while its own
// configuration was the one recorded (appliedWhile: a user's code or an
// ID-JAG redeemed) records that secret's tag: A refuses its refresh and
// token exchange, without revoking it, and B's own reload revokes it.
// Grants A made, which B refused, and one recorded before grants
// recorded their client's credential keep working under the new
// secret.
func TestRollingClientSecretChange(t *testing.T) {
	const newSecret = "new secret"
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	apply, at := e.rolling(t)
	// userGrant is alice's grant to tConf, its code redeemed with secret.
	userGrant := func(secret string) *oauth2.Token {
		t.Helper()
		code, verifier := e.issueCode(t, codeSpec{client: tConf, scopes: []string{"read", scopeOfflineAccess}})
		tok, err := e.exchange(t, tConf, secret, code, verifier)
		if err != nil {
			t.Fatalf("code redeemed with the client's secret: %v", err)
		}
		return tok
	}
	refresh := func(tok *oauth2.Token, secret string) answer {
		t.Helper()
		a := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {tok.RefreshToken}}, tConf+":"+secret)
		if a.status == http.StatusOK {
			tok.AccessToken, tok.RefreshToken = a.str("access_token"), a.str("refresh_token")
		}
		return a
	}
	exchange := func(access, secret string) answer {
		t.Helper()
		return e.tokenExchange(t, tConf+":"+secret, exchangeForm(access, ""))
	}
	apply()
	b := e.iss
	cfg := b.cfg
	cfg.Clients = slices.Clone(cfg.Clients)
	for n := range cfg.Clients {
		if cfg.Clients[n].ID == tConf {
			cfg.Clients[n].SecretHash = hashClientSecret(newSecret)
		}
	}

	// A applies the new secret first.
	e.serve(cfg)
	a := e.iss
	apply()
	kept, moved := userGrant(newSecret), userGrant(newSecret)

	// B, not reloaded yet, issues nothing to the client while A's
	// configuration is the one applied (TestReloadWindowIssuesNothing),
	// but took the old secret while its own was.
	at(b)
	var stale []*oauth2.Token
	var jag answer
	var legacy *oauth2.Token
	appliedWhile(t, b, a, func() {
		stale = []*oauth2.Token{userGrant(tSecret), userGrant(tSecret)}
		jag = e.redeem(t, tConf+":"+tSecret, idp.idJAG(t, e, nil), nil)
		if jag.status != http.StatusOK {
			t.Fatalf("at B: ID-JAG redeemed with the old secret = %d %s, want 200", jag.status, jag.raw)
		}
		legacy = userGrant(tSecret)
	})
	_, lc := claimsOf(t, legacy.AccessToken)
	g := e.grantOf(t, lc["gid"].(string))
	g.ClientCredential = "" // as recorded before grants recorded it
	e.put(bucketGrants, g.ID, &g, g.ExpiresAt)
	if r := exchange(kept.AccessToken, tSecret); r.status != http.StatusBadRequest {
		t.Errorf("at B: exchange with the old secret of a grant A made = %d %s, want 400", r.status, r.raw)
	}
	if r := refresh(moved, tSecret); r.status != http.StatusBadRequest {
		t.Errorf("at B: refresh with the old secret of a grant A made = %d %s, want 400", r.status, r.raw)
	}

	// At A, what B issued under the old secret is refused; the refusal
	// revokes nothing (TestFailedReloadKeepsNewGrants).
	at(a)
	for name, tok := range map[string]*oauth2.Token{"made at B": stale[0]} {
		if r := refresh(tok, newSecret); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
			t.Errorf("at A: refresh of a grant %s under the old secret = %d %s, want 400 invalid_grant", name, r.status, r.raw)
		}
	}
	for name, access := range map[string]string{"user's grant": stale[0].AccessToken, "ID-JAG's grant": jag.str("access_token")} {
		if r := exchange(access, newSecret); r.status != http.StatusBadRequest || r.str("error") != "invalid_request" {
			t.Errorf("at A: exchange of the %s B made under the old secret = %d %s, want 400 invalid_request", name, r.status, r.raw)
		}
		if e.revokedToken(t, access) {
			t.Errorf("at A: the refused %s is revoked", name)
		}
	}

	// B reloads: what the old secret got there is revoked, used or not.
	e.serve(cfg)
	apply()
	for name, access := range map[string]string{
		"user's grant refused at A": stale[0].AccessToken, "user's grant": stale[1].AccessToken,
		"ID-JAG's grant": jag.str("access_token"),
	} {
		if !e.revokedToken(t, access) {
			t.Errorf("after B's reload: the %s under the old secret is not revoked", name)
		}
	}
	for name, tok := range map[string]*oauth2.Token{"made at B": stale[1]} {
		if r := refresh(tok, newSecret); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
			t.Errorf("after B's reload: refresh of a grant %s under the old secret = %d %s, want 400 invalid_grant", name, r.status, r.raw)
		}
	}
	for name, tok := range map[string]*oauth2.Token{"A made": kept, "A made, refused at B": moved, "recorded without its client's credential": legacy} {
		if e.revokedToken(t, tok.AccessToken) {
			t.Errorf("after B's reload: the access token of the grant %s is revoked", name)
		}
		if r := refresh(tok, newSecret); r.status != http.StatusOK {
			t.Errorf("after B's reload: refresh of the grant %s = %d %s, want 200", name, r.status, r.raw)
		}
	}
}

// TestFailedReloadKeepsNewGrants (review s16b F1): two instances, a new
// password. B reloads and issues a grant under it. A's reload fails
// after its ApplyConfigChanges ran (another app of the configuration did
// not start): Caddy keeps A's configuration, whose Stop records it as
// the applied one again. The grant B issued under the new password then
// reads as replaced: its refresh is refused, at A and at B too (the
// configuration recorded has the old password), but the grant is not
// revoked. (A's next reload then sees the password change against the
// record and revokes the user's grants, as before the tags.)
func TestFailedReloadKeepsNewGrants(t *testing.T) {
	e := newBrowserEnv(t, nil)
	apply, at := e.rolling(t)
	apply()
	a := e.iss
	cfg := a.cfg
	cfg.Users = slices.Clone(cfg.Users)
	cfg.Users[0].PasswordHash = passwordHash() // tPassword's

	e.serve(cfg) // B reloads
	apply()
	b := e.iss
	oc := &oauth2.Config{ClientID: bClientID, RedirectURL: bRedirect, Scopes: []string{"files:read", "offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: e.url(pathAuthorize, nil), TokenURL: e.url(pathToken, nil), AuthStyle: oauth2.AuthStyleInParams}}
	verifier := oauth2.GenerateVerifier()
	res := oauth2.SetAuthURLParam("resource", bResource)
	cb, err := e.robot(e.browser(), oc.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), res), bRedirect, bUser, tPassword, "approve")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := oc.Exchange(e.ctx(), cb.Query().Get("code"), oauth2.VerifierOption(verifier), res)
	if err != nil {
		t.Fatal(err)
	}
	rt := tok.RefreshToken
	e.serve(cfg) // A's reload: its app starts and applies, then the configuration fails
	apply()
	if err := a.RecordConfig(t.Context()); err != nil { // App.Stop: the one running records itself again
		t.Fatal(err)
	}
	refresh := func() answer {
		a := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {rt}, "client_id": {bClientID}}, "")
		if a.status == http.StatusOK {
			rt = a.str("refresh_token")
		}
		return a
	}
	at(a)
	if r := refresh(); r.status != http.StatusBadRequest {
		t.Errorf("at A, its failed reload's configuration kept: refresh of B's grant = %d %s, want 400", r.status, r.raw)
	}
	if e.revokedToken(t, tok.AccessToken) {
		t.Fatal("the grant B issued under the new password is revoked")
	}
	at(b)
	if r := refresh(); r.status != http.StatusBadRequest {
		t.Errorf("at B, A's configuration recorded: refresh of its grant = %d %s, want 400", r.status, r.raw)
	}
	if e.revokedToken(t, tok.AccessToken) {
		t.Fatal("the grant B issued under the new password is revoked by B's refusal")
	}
}

// appliedWhile records iss's configuration as the one applied while fn
// runs, then next's again: what an instance not reloaded issues on a
// credential the next configuration replaced, it issues while the store
// records its own configuration (before the next is applied, or after a
// failed reload of the next recorded it again: App.Stop), and an
// instance of an earlier version, which did not check, at any time.
func appliedWhile(t *testing.T, iss, next *Issuer, fn func()) {
	t.Helper()
	if err := iss.RecordConfig(t.Context()); err != nil {
		t.Fatal(err)
	}
	fn()
	if err := next.RecordConfig(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// rolling is what the tests of a rolling reload use: apply runs
// ApplyConfigChanges on the issuer e serves, at makes e serve iss (one
// instance of a cluster on e's store).
func (e *testEnv) rolling(t *testing.T) (apply func(), at func(*Issuer)) {
	apply = func() {
		t.Helper()
		if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return apply, func(iss *Issuer) { e.iss = iss; e.handler.Store(iss) }
}

// TestRedirectURIDroppedByReload (review s17-as F4): a configuration that
// no longer lists a client's redirect URI refuses the codes already sent
// there, as the management API's change does (TestUpdateClientRedirectURIs):
// the URI may have been dropped for a domain lost. A code sent to a URI
// still listed is redeemed, and so is a loopback URI on another port,
// which matches the registered one.
func TestRedirectURIDroppedByReload(t *testing.T) {
	e := newTokEnv(t)
	const other = "https://app.example.com/cb"
	withRedirects := func(uris ...string) envOption {
		return func(c *Config) {
			c.Clients = slices.Clone(c.Clients)
			for n := range c.Clients {
				if c.Clients[n].ID == tPublic {
					c.Clients[n].RedirectURIs = uris
				}
			}
		}
	}
	e.restart(e.store, withRedirects(tRedirect, other))
	dropped, droppedVerifier := e.issueCode(t, codeSpec{redirect: other})
	kept, keptVerifier := e.issueCode(t, codeSpec{})
	loopback, loopbackVerifier := e.issueCode(t, codeSpec{redirect: "http://127.0.0.1:4321/cb"})
	e.restart(e.store, withRedirects(tRedirect))

	a := e.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {dropped}, "redirect_uri": {other},
		"code_verifier": {droppedVerifier}, "client_id": {tPublic}}, "")
	if a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
		t.Errorf("code sent to a dropped redirect URI: %d %s, want 400 invalid_grant", a.status, a.raw)
	}
	for _, c := range []struct{ code, verifier, redirect string }{{kept, keptVerifier, tRedirect}, {loopback, loopbackVerifier, "http://127.0.0.1:4321/cb"}} {
		a := e.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {c.code}, "redirect_uri": {c.redirect},
			"code_verifier": {c.verifier}, "client_id": {tPublic}}, "")
		if a.status != http.StatusOK || a.str("access_token") == "" {
			t.Errorf("code sent to %s, still registered: %d %s, want a token", c.redirect, a.status, a.raw)
		}
	}
}

// TestReloadWindowIssuesNothing: after a reload that removed a user and
// replaced a client's secret has been applied (B), the old
// configuration's servers (A) still answer for a moment and still know
// the user's password and the client's old secret. They sign nobody in
// on them and issue nothing: the user's sign-in is refused as a wrong
// password, the client's token request with invalid_grant, and no
// session, code or grant is written for either. No reload comes after B
// to revoke what A would issue, and gateways do not read credential
// tags. B, the newest, takes the new secret. On a bbolt file, as Caddy's
// reload shares one.
func TestReloadWindowIssuesNothing(t *testing.T) {
	const newSecret = "new secret"
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st, err := bolt.Open(filepath.Join(t.TempDir(), "auth.db"), bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := newTokEnvStore(t, st, clock)
	apply, at := e.rolling(t)
	apply()
	a := e.iss
	e.restart(st, func(c *Config) {
		c.Users = slices.DeleteFunc(slices.Clone(c.Users), func(u User) bool { return u.Username == tUser })
		c.Clients = slices.Clone(c.Clients)
		for n := range c.Clients {
			if c.Clients[n].ID == tConf {
				c.Clients[n].SecretHash = hashClientSecret(newSecret)
			}
		}
	})
	apply()
	b := e.iss
	at(a)

	userSessions := func() int {
		t.Helper()
		n := 0
		for _, k := range e.keys(bucketSessions) {
			var s session
			if err := e.get(bucketSessions, k, &s); err != nil {
				t.Fatal(err)
			}
			if s.User == tUser {
				n++
			}
		}
		return n
	}
	codes, grants := e.count(bucketCodes), e.count(bucketGrants)
	conf := &oauth2.Config{ClientID: tPublic, RedirectURL: tRedirect, Scopes: []string{"read"},
		Endpoint: oauth2.Endpoint{AuthURL: e.url(pathAuthorize, nil), TokenURL: e.url(pathToken, nil), AuthStyle: oauth2.AuthStyleInParams}}
	start := conf.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("resource", tResource))
	if cb, err := e.robot(e.browser(), start, tRedirect, tUser, tPassword, "approve"); err == nil {
		t.Errorf("at A after B removed %s: sign-in and consent reached %s, want the sign-in refused", tUser, cb)
	}
	cc := url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}}
	if r := e.post(t, pathToken, cc, tConf+":"+tSecret); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
		t.Errorf("at A after B replaced %s's secret: client credentials with the old one = %d %s, want 400 invalid_grant", tConf, r.status, r.raw)
	}
	if n := userSessions(); n != 0 {
		t.Errorf("sessions of %s written at A = %d, want 0", tUser, n)
	}
	if c, g := e.count(bucketCodes), e.count(bucketGrants); c != codes || g != grants {
		t.Errorf("codes, grants after A's refusals = %d, %d, want %d, %d (nothing written)", c, g, codes, grants)
	}

	at(b)
	if r := e.post(t, pathToken, cc, tConf+":"+newSecret); r.status != http.StatusOK {
		t.Errorf("at B: client credentials with the new secret = %d %s, want 200", r.status, r.raw)
	}
}

// TestReloadWindowProvisionsNothing: after a reload that re-pointed an
// identity provider (another client_id there, its users signed out) has
// been applied (B), the old configuration's servers (A) still trust the
// provider as it was. A user it vouches for there is not provisioned and
// gets nothing: an ID-JAG is refused with invalid_grant and no user or
// grant is written. Users of a provider carry no credential tag, so
// without this A's sign-in stood: B, the newest, found the user by name
// under the same provider, and no reload came after to sign it out.
func TestReloadWindowProvisionsNothing(t *testing.T) {
	idp := newTestIdP(t)
	e := newTokEnv(t, withTrustedIdP(idp))
	apply, at := e.rolling(t)
	apply()
	a := e.iss
	e.restart(e.store, withTrustedIdP(idp), func(c *Config) { c.IdentityProviders[0].ClientID = "mcp-new" })
	apply()
	b := e.iss
	conf := tConf + ":" + tSecret

	at(a)
	users, grants := e.count(bucketUsers), e.count(bucketGrants)
	if r := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
		t.Errorf("at A after B re-pointed the provider: ID-JAG = %d %s, want 400 invalid_grant", r.status, r.raw)
	}
	if u, g := e.count(bucketUsers), e.count(bucketGrants); u != users || g != grants {
		t.Errorf("users, grants after A's refusal = %d, %d, want %d, %d (nothing written)", u, g, users, grants)
	}

	at(b)
	if r := e.redeem(t, conf, idp.idJAG(t, e, nil), nil); r.status != http.StatusOK {
		t.Errorf("at B: ID-JAG = %d %s, want 200", r.status, r.raw)
	}
}

// TestReloadNarrowingClientRevokes: a configuration that narrows a
// configured client (a scope, resource or grant type taken away) revokes
// every grant the client holds, as the admin API's update of a client
// does (TestUpdateClientGrants); one that keeps or widens it revokes
// nothing, and so does a configuration applied after one of a version
// that recorded no registrations.
func TestReloadNarrowingClientRevokes(t *testing.T) {
	e := newTokEnv(t)
	apply := func(opts ...envOption) { t.Helper(); e.applyConfig(t, opts...) }
	client := func(id string, f func(c *Client)) envOption {
		return withEntry(func(c *Config) *[]Client { return &c.Clients }, func(c *Client) bool { return c.ID == id }, f)
	}
	confScopes := func(s ...string) envOption { return client(tConf, func(c *Client) { c.Scopes = s }) }
	confGrants := func(g ...string) envOption { return client(tConf, func(c *Client) { c.GrantTypes = g }) }
	publicResources := func(r ...string) envOption { return client(tPublic, func(c *Client) { c.Resources = r }) }
	var cc, user string
	issue := func() {
		t.Helper()
		cc = e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}, "scope": {"read write"}}, tConf+":"+tSecret).str("access_token")
		user = e.userToken(t, tPublic, "read").AccessToken
	}
	revoked := func(step string, want map[string]bool) {
		t.Helper()
		for name, tok := range map[string]string{"client": cc, "user": user} {
			if got := e.revokedToken(t, tok); got != want[name] {
				t.Errorf("%s: %s's token revoked = %v, want %v", step, name, got, want[name])
			}
		}
	}
	apply()
	issue()
	apply()
	revoked("same configuration", nil)
	apply(confScopes("read", "write"))
	revoked("client's scopes restricted", map[string]bool{"client": true})
	issue()
	apply(confScopes("read", "write"))
	revoked("client's scopes given again", nil)
	apply(confScopes("read"))
	revoked("client's scope taken away", map[string]bool{"client": true})
	issue()
	apply(confScopes("read", "write"))
	revoked("client's scope added", nil)
	apply()
	revoked("client's scopes no longer restricted", nil)
	apply(confGrants(grantAuthorizationCode, grantRefreshToken, grantTokenExchange))
	revoked("client's grant type taken away", map[string]bool{"client": true})
	apply()
	issue()
	apply(publicResources(tResource))
	revoked("public client's resources restricted", map[string]bool{"user": true})
	issue()
	apply(publicResources(tResource), client(tConf, func(c *Client) { c.DPoPBoundAccessTokens = true }))
	revoked("client made to use DPoP", map[string]bool{"client": true})
	apply(publicResources(tResource))

	// A configuration recorded by an earlier version holds no
	// registrations: nothing to compare, nothing revoked.
	issue()
	e.editRecordedConfig(t, func(s *directorySnapshot) { s.ClientLimits = nil })
	apply(confScopes("read", "write"), publicResources(tResource))
	revoked("narrowed since a record without registrations", nil)
	apply(confScopes("read"), publicResources(tResource))
	revoked("narrowed since a record with them", map[string]bool{"client": true})
}

// TestReloadWindowNarrowedClientIssuesNothing: after a configuration
// that narrowed a client has been applied (B), the old configuration's
// servers (A) still allow it what B took away; they issue the client
// nothing, as for a client B re-keyed (TestReloadWindowIssuesNothing),
// since no later reload would revoke a grant made there. Other clients
// are served, and B serves the narrowed client within its limits.
func TestReloadWindowNarrowedClientIssuesNothing(t *testing.T) {
	e := newTokEnv(t)
	apply, at := e.rolling(t)
	apply()
	a := e.iss
	e.restart(e.store, func(c *Config) {
		c.Clients = slices.Clone(c.Clients)
		for n := range c.Clients {
			if c.Clients[n].ID == tConf {
				c.Clients[n].Scopes = []string{"read"}
			}
		}
	})
	apply()
	b := e.iss
	at(a)
	grants := e.count(bucketGrants)
	for _, scope := range []string{"read write", "read"} {
		cc := url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}, "scope": {scope}}
		if r := e.post(t, pathToken, cc, tConf+":"+tSecret); r.status != http.StatusBadRequest || r.str("error") != "invalid_grant" {
			t.Errorf("at A after B narrowed %s: client credentials for %q = %d %s, want 400 invalid_grant", tConf, scope, r.status, r.raw)
		}
	}
	if g := e.count(bucketGrants); g != grants {
		t.Errorf("grants after A's refusals = %d, want %d (nothing written)", g, grants)
	}
	if tok := e.userToken(t, tPublic, "read"); tok.AccessToken == "" {
		t.Errorf("at A: a client B did not narrow got no token")
	}
	at(b)
	cc := url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}, "scope": {"read"}}
	if r := e.post(t, pathToken, cc, tConf+":"+tSecret); r.status != http.StatusOK {
		t.Errorf("at B: client credentials for read = %d %s, want 200", r.status, r.raw)
	}
}

// TestIdPTenantChangeSignsOut: a reload that moves an identity provider
// to another tenant (or declares one where there was none) signs its
// users out, as one that moves it to another issuer does: a multi-tenant
// issuer's sub is unique within its tenant only, so the new tenant is
// another population of users. The old configuration's servers sign none
// of them in meanwhile. A configuration an earlier release recorded names
// no tenant: one declaring a tenant applied over it (the upgrade) signs
// nobody out and does not stop a lagging instance's sign-ins, and is
// recorded, so that a later change of tenant counts.
func TestIdPTenantChangeSignsOut(t *testing.T) {
	onEachStore(t, func(t *testing.T, st store.Store, clock *storetest.Clock) {
		ctx := t.Context()
		corp := func(tenant string) envOption {
			return func(c *Config) {
				c.IdentityProviders = []IdentityProvider{{Name: "corp", Issuer: "https://idp.example", ClientID: "c", Tenant: tenant, GroupMap: map[string][]string{"*": {"readers"}}}}
			}
		}
		e := newTokEnvStore(t, st, clock, corp(""))
		apply, _ := e.rolling(t)
		apply()
		if err := st.Update(ctx, func(tx store.Tx) error {
			return usersIn(tx).put(&User{Username: "corp:u-1", Source: sourceIdP, IdentityProvider: "corp", IdPSubject: "u-1", IdPIssuer: "https://idp.example"})
		}); err != nil {
			t.Fatal(err)
		}
		n := 0
		grantNow := func() string {
			t.Helper()
			n++
			return createGrants(t, e, st, 1, func(g *grant) { userGrant("corp:u-1")(g); g.ID = fmt.Sprintf("t%d", n) })[0]
		}
		revoked := func(id string) bool {
			t.Helper()
			r, err := e.iss.Revoked(ctx, "", id)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		mayProvision := func(iss *Issuer) bool {
			t.Helper()
			var ok bool
			if err := st.View(ctx, func(tx store.Tx) (err error) { ok, err = iss.creds.mayProvision(tx, "corp"); return err }); err != nil {
				t.Fatal(err)
			}
			return ok
		}

		// The upgrade: the earlier release's record, then this release
		// declaring the tenant.
		recordAsEarlierRelease(t, st, e.iss.URL())
		old := grantNow()
		e.restart(st, corp("acme"))
		if !mayProvision(e.iss) {
			t.Error("before the upgraded configuration is applied: an instance declaring the tenant may not provision, want it may")
		}
		apply()
		if revoked(old) {
			t.Error("the upgrade, declaring the tenant over the earlier release's record, revoked the user's grant; want it kept")
		}
		e.restart(st, corp("acme"))
		apply()
		if revoked(old) {
			t.Error("an unchanged reload revoked the user's grant; want it kept")
		}

		for _, tenant := range []string{"fabrikam", ""} {
			g := grantNow()
			lagging := e.iss
			e.restart(st, corp(tenant))
			apply()
			if !revoked(g) {
				t.Errorf("a reload moving the provider to tenant %q kept the user's grant; want it revoked", tenant)
			}
			if mayProvision(lagging) {
				t.Errorf("after the provider moved to tenant %q: the old configuration's server may provision, want it may not", tenant)
			}
			if !mayProvision(e.iss) {
				t.Errorf("after the provider moved to tenant %q: the new configuration may not provision, want it may", tenant)
			}
		}
	})
}

// recordAsEarlierRelease rewrites the configuration recorded under
// issuer as a release before tenants counted wrote it: without
// identity_provider_tenants.
func recordAsEarlierRelease(t *testing.T, st store.Store, issuer string) {
	t.Helper()
	err := st.Update(t.Context(), func(tx store.Tx) error {
		raw := table[map[string]json.RawMessage]{tx, bucketConfig}
		m, err := raw.get(issuer)
		if err != nil {
			return err
		}
		delete(*m, "identity_provider_tenants")
		return raw.put(issuer, m, time.Time{})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReloadNarrowingGroupsRevokes: a configuration that takes a scope
// away from what a user's groups allow for a resource (a group's scopes
// narrowed, a configured user's groups changed, an identity provider's
// group mapping narrowed) revokes that user's grants that hold the scope
// for the resource, whoever the user is (configured, added through the
// admin API, an identity provider's); the user's other grants, and the
// users whose scopes did not shrink, keep theirs. A configuration that
// narrows nothing revokes nothing, and neither does one applied after
// one of a version that recorded no group limits.
func TestReloadNarrowingGroupsRevokes(t *testing.T) {
	corp := func(c *Config) {
		c.IdentityProviders = []IdentityProvider{{Name: "corp", Issuer: "https://idp.example", ClientID: "c",
			GroupMap: map[string][]string{"eng": {"staff"}, "ops": {"readers"}}}}
	}
	e := newTokEnv(t, corp)
	apply := func(opts ...envOption) { t.Helper(); e.applyConfig(t, append([]envOption{corp}, opts...)...) }
	staff := func(scopes map[string][]string) envOption {
		return withEntry(func(c *Config) *[]Group { return &c.Groups }, func(g *Group) bool { return g.Name == "staff" },
			func(g *Group) { g.Scopes = scopes })
	}
	aliceGroups := func(g ...string) envOption {
		return withEntry(func(c *Config) *[]User { return &c.Users }, func(u *User) bool { return u.Username == tUser },
			func(u *User) { u.Groups = g })
	}
	mapping := func(m map[string][]string) envOption {
		return func(c *Config) { c.IdentityProviders[0].GroupMap = m }
	}
	e.putUsers(t,
		&User{Username: "dan", PasswordHash: passwordHash(), Groups: []string{"staff"}},
		&User{Username: "corp:eve", IdentityProvider: "corp", IdPSubject: "eve", IdPGroups: []string{"eng"}, LastLogin: e.clock.Now()})

	toks := map[string]string{}
	issue := e.issuer(t, toks)
	issueAll := func() {
		t.Helper()
		issue("alice write", tUser, tResource, "read", "write")
		issue("alice read", tUser, tResource, "read")
		issue("alice other write", tUser, tOther, "write")
		issue("bob read", "bob", tResource, "read")
		issue("dan write", "dan", tResource, "read", "write")
		issue("eve write", "corp:eve", tResource, "read", "write")
	}
	revoked := func(step string, want ...string) { t.Helper(); e.requireRevoked(t, step, toks, want...) }
	apply()
	issueAll()
	apply()
	revoked("same configuration")
	apply(staff(map[string][]string{tResource: {"read", "write", "admin"}, tOther: {"*"}}))
	revoked("staff's scopes widened")
	apply(staff(map[string][]string{tResource: {"read"}, tOther: {"*"}}))
	revoked("staff's write taken away", "alice write", "dan write", "eve write")
	issueAll() // alice, dan and eve get read only now
	apply(staff(map[string][]string{tResource: {"read"}, tOther: {"*"}}))
	revoked("narrowed configuration again")
	apply()
	revoked("staff's write given back")
	issueAll()
	apply(aliceGroups("readers"))
	revoked("alice moved to readers", "alice write", "alice other write")
	apply()
	issueAll()
	apply(mapping(map[string][]string{"eng": {"readers"}, "ops": {"readers"}}))
	revoked("eng mapped to readers", "eve write")
	apply()
	issueAll()
	apply(staff(map[string][]string{tResource: {"read", "write"}, tOther: {"read", "write"}}))
	revoked("staff's * spelt out")

	// A configuration recorded by an earlier version holds no group
	// limits: nothing to compare, nothing revoked.
	e.editRecordedConfig(t, func(s *directorySnapshot) { s.GroupLimits = nil })
	apply(staff(map[string][]string{tResource: {"read"}}))
	revoked("narrowed since a record without group limits")
	apply(staff(map[string][]string{tResource: {"admin"}}))
	revoked("narrowed since a record with them", "alice write", "alice read", "dan write", "eve write")
}

// TestReloadNarrowingGroupsInFlight: what was under way when a
// configuration took a scope away from a user's groups gets none of it.
// A code issued before the reload gives, redeemed after it, no more than
// the groups allow now (as a refresh does): the reload could not revoke
// the grant it makes. And while the old configuration's servers still
// answer (A, after B applied the narrowing), they issue that user
// nothing (invalid_grant, nothing written), as they do for a narrowed
// client (TestReloadWindowNarrowedClientIssuesNothing); a user whose
// scopes did not shrink gets tokens there.
func TestReloadNarrowingGroupsInFlight(t *testing.T) {
	e := newTokEnv(t)
	apply, at := e.rolling(t)
	apply()
	a := e.iss
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read", "write"}})
	codeA, verifierA := e.issueCode(t, codeSpec{scopes: []string{"read", "write"}})
	readCodeA, readVerifierA := e.issueCode(t, codeSpec{scopes: []string{"read"}})
	bobCodeA, bobVerifierA := e.issueCode(t, codeSpec{user: "bob", scopes: []string{"read"}})
	e.restart(e.store, func(c *Config) {
		c.Groups = slices.Clone(c.Groups)
		c.Groups[0] = Group{Name: "staff", Scopes: map[string][]string{tResource: {"read"}, tOther: {"*"}}}
	})
	apply()
	b := e.iss

	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatalf("at B: code issued before the narrowing: %v", err)
	}
	if _, c := claimsOf(t, tok.AccessToken); c["scope"] != "read" {
		t.Errorf("at B: code issued with read write before the narrowing gave scope %q, want read", c["scope"])
	}

	at(a)
	grants := e.count(bucketGrants)
	if _, err := e.exchange(t, tPublic, "", codeA, verifierA); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("at A after B narrowed staff: code for read write = %v, want invalid_grant", err)
	}
	if g := e.count(bucketGrants); g != grants {
		t.Errorf("grants after A's refusal = %d, want %d (nothing written)", g, grants)
	}
	if _, err := e.exchange(t, tPublic, "", readCodeA, readVerifierA); err != nil {
		t.Errorf("at A: code for read, which B still allows: %v", err)
	}
	if _, err := e.exchange(t, tPublic, "", bobCodeA, bobVerifierA); err != nil {
		t.Errorf("at A: code of a user B did not narrow: %v", err)
	}
	at(b)
}

// TestReloadNarrowingAgentRevokes: a configuration that narrows a
// configured agent (a scope or allowed client taken away, max_depth
// lowered) revokes what re-keying it does: its own tokens and the users'
// delegations to it (requested_actor); one that keeps or widens it, or
// narrows another agent, revokes nothing, and neither does one applied
// after a record of a version that recorded no agent limits.
func TestReloadNarrowingAgentRevokes(t *testing.T) {
	e := newTokEnv(t)
	apply := func(opts ...envOption) { t.Helper(); e.applyConfig(t, opts...) }
	agent := func(id string, f func(a *Agent)) envOption {
		return withEntry(func(c *Config) *[]Agent { return &c.Agents }, func(a *Agent) bool { return a.ID == id }, f)
	}
	scopes := func(s ...string) envOption { return agent(tAgent1, func(a *Agent) { a.Scopes = s }) }
	toks := map[string]string{}
	issue := func() {
		t.Helper()
		toks["own"] = e.agentToken(t, tAgent1, tAgentSecret, "read", "write")
		code, verifier := e.issueCode(t, codeSpec{actor: tAgent1, scopes: []string{"read"}})
		r := e.post(t, pathToken, url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "code_verifier": {verifier},
			"redirect_uri": {tRedirect}, "client_id": {tPublic}, "actor_token": {e.agentToken(t, tAgent1, tAgentSecret)}}, "")
		if r.status != http.StatusOK {
			t.Fatalf("delegation to %s = %d %s", tAgent1, r.status, r.raw)
		}
		toks["delegated"] = r.str("access_token")
		toks["other agent"] = e.agentToken(t, tAgent2, tAgentSecret, "read")
	}
	revoked := func(step string, want ...string) { t.Helper(); e.requireRevoked(t, step, toks, want...) }
	apply()
	issue()
	apply()
	revoked("same configuration")
	apply(scopes("read", "write", "admin"), agent(tAgent1, func(a *Agent) { a.MaxDepth = 3 }))
	revoked("agent widened")
	apply()
	revoked("widening undone", "own", "delegated")
	issue()
	apply(agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))
	revoked("another agent narrowed", "other agent")
	issue()
	apply(scopes("read"), agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))
	revoked("a scope taken away", "own", "delegated")
	issue()
	apply(scopes("read"), agent(tAgent1, func(a *Agent) { a.AllowedClients = []string{tConf} }), agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))
	revoked("allowed clients restricted", "own", "delegated")
	apply(agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))
	issue()
	apply(agent(tAgent1, func(a *Agent) { a.MaxDepth = 1 }), agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))
	revoked("max_depth lowered", "own", "delegated")
	// Disabled in a JSON configuration (the Caddyfile has no such
	// option): as the admin API's disable does.
	apply(agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))
	issue()
	apply(agent(tAgent1, func(a *Agent) { a.Disabled = true }), agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))
	revoked("disabled", "own", "delegated")
	apply(agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))

	// A configuration recorded by an earlier version holds no agent
	// limits: nothing to compare, nothing revoked.
	issue()
	e.editRecordedConfig(t, func(s *directorySnapshot) { s.AgentLimits = nil })
	apply(scopes("read"), agent(tAgent2, func(a *Agent) { a.Scopes = []string{"read"} }))
	revoked("narrowed since a record without agent limits")
}

// TestReloadRespellingClientRevokesNothing: a reload that writes a
// configured client's resources another way that names the same
// resource (case of scheme or host, a default port, a trailing slash),
// or lists its scopes in another order, narrows nothing: its users stay
// signed in, as its requests are matched (sameResource).
func TestReloadRespellingClientRevokesNothing(t *testing.T) {
	e := newTokEnv(t)
	limits := func(res []string, scopes ...string) envOption {
		return func(c *Config) {
			c.Clients = slices.Clone(c.Clients)
			for n := range c.Clients {
				switch c.Clients[n].ID {
				case tPublic:
					c.Clients[n].Resources = res
				case tConf:
					c.Clients[n].Scopes = scopes
				}
			}
		}
	}
	e.applyConfig(t, limits([]string{tResource}, "read", "write"))
	cc := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}, "scope": {"read write"}}, tConf+":"+tSecret).str("access_token")
	user := e.userToken(t, tPublic, "read").AccessToken
	e.applyConfig(t, limits([]string{"HTTPS://MCP.Example.com:443/mcp/"}, "write", "read"))
	for name, tok := range map[string]string{"client": cc, "user": user} {
		if e.revokedToken(t, tok) {
			t.Errorf("%s's token revoked by a reload that only respelled the client's limits", name)
		}
	}
	if tok := e.userToken(t, tPublic, "read").AccessToken; tok == "" {
		t.Error("the respelled resource no longer matches the client's requests")
	}
}

// TestReloadSpellingOutGroupNarrowsNothing: a configuration that spells
// out the scopes a group's "*" allowed (the same scopes) takes nothing
// away: an instance still running the "*" one issues the user's tokens,
// the OpenID Connect scopes among them (they are no group's to allow),
// and the reload revokes nothing.
func TestReloadSpellingOutGroupNarrowsNothing(t *testing.T) {
	e := newTokEnv(t)
	apply, at := e.rolling(t)
	apply()
	a := e.iss
	kept, keptVerifier := e.issueCode(t, codeSpec{resource: tOther, scopes: []string{"openid", "offline_access", "read", "write"}})
	tok, err := e.exchange(t, tPublic, "", kept, keptVerifier)
	if err != nil {
		t.Fatal(err)
	}
	code, verifier := e.issueCode(t, codeSpec{resource: tOther, scopes: []string{"openid", "offline_access", "read", "write"}})
	e.restart(e.store, func(c *Config) {
		c.Groups = slices.Clone(c.Groups)
		c.Groups[0] = Group{Name: "staff", Scopes: map[string][]string{tResource: {"read", "write"}, tOther: {"write", "read"}}}
	})
	apply()
	b := e.iss
	if r := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, ""); r.status != http.StatusOK {
		t.Errorf("refresh after the reload spelled out staff's *: %d %s", r.status, r.raw)
	}
	at(a)
	if _, err := e.exchange(t, tPublic, "", code, verifier); err != nil {
		t.Errorf("at A, after B spelled out staff's * for %s: %v", tOther, err)
	}
	at(b)
}

// TestReloadNarrowingGroupRevokesExactly: the one walk over every user's
// index entries (narrowedUserGrants) revokes the narrowed users' grants
// holding the taken scope for that resource and nothing else, whatever
// prefixes or separators user names share, on every store.
func TestReloadNarrowingGroupRevokesExactly(t *testing.T) {
	onEachStore(t, func(t *testing.T, st store.Store, clock *storetest.Clock) {
		editors := func(c *Config) {
			c.Groups = append(slices.Clone(c.Groups), Group{Name: "editors", Scopes: map[string][]string{tResource: {"read", "write"}}})
		}
		e := newTokEnvStore(t, st, clock, editors)
		var users []*User
		for g, names := range map[string][]string{"staff": {"al", "x:al"}, "editors": {"a", "alice2", "al:ice", "x:al:1"}} {
			for _, name := range names {
				users = append(users, &User{Username: name, PasswordHash: passwordHash(), Groups: []string{g}})
			}
		}
		e.putUsers(t, users...)
		toks := map[string]string{}
		issue := e.issuer(t, toks)
		for _, u := range []string{tUser, "al", "x:al", "a", "alice2", "al:ice", "x:al:1"} {
			issue(u+" write", u, tResource, "read", "write")
			issue(u+" read", u, tResource, "read")
		}
		for _, u := range []string{tUser, "al", "x:al"} {
			issue(u+" other write", u, tOther, "write")
		}
		e.applyConfig(t, editors)
		e.requireRevoked(t, "same configuration", toks)
		e.applyConfig(t, editors, withEntry(func(c *Config) *[]Group { return &c.Groups }, func(g *Group) bool { return g.Name == "staff" },
			func(g *Group) { g.Scopes = map[string][]string{tResource: {"read"}, tOther: {"*"}} }))
		e.requireRevoked(t, "staff's write taken away", toks, tUser+" write", "al write", "x:al write")
	})
}

// TestReloadNarrowingGroupWalksIndexOnce: a reload narrowing a group
// walks every user's index entries once ahead (and once in its own
// transaction), however many grants users outside the group hold.
// revokeAhead's batches each walked them from their front to where the
// last stopped: 20,000 grants of users not narrowed, 1.3-2.7 s; 60,000,
// about ten times that; each batch on PostgreSQL reading every entry.
func TestReloadNarrowingGroupWalksIndexOnce(t *testing.T) {
	const n = 5000
	onEachStore(t, func(t *testing.T, st store.Store, clock *storetest.Clock) {
		counted := &listCounted{Store: st, bucket: bucketGrantIndex}
		e := newTokEnvStore(t, counted, clock)
		if err := e.iss.ApplyConfigChanges(t.Context()); err != nil {
			t.Fatal(err)
		}
		k := 0
		createGrants(t, e, st, n, func(g *grant) { g.Subject, g.ClientID = fmt.Sprintf("u%05d", k/10), tPublic; k++ })
		mine := createGrants(t, e, st, 1, func(g *grant) { g.ID, g.Subject, g.ClientID, g.Scopes = "h0", tUser, tPublic, []string{"write"} })
		counted.listed.Store(0)
		e.applyConfig(t, withEntry(func(c *Config) *[]Group { return &c.Groups }, func(g *Group) bool { return g.Name == "staff" },
			func(g *Group) { g.Scopes = map[string][]string{tResource: {"read"}} }))
		wantRevoked(t, e, mine)
		if got := counted.listed.Load(); got > 4*n { // ahead, and the change's transaction (run twice on memory)
			t.Errorf("the reload listed %d index entries for %d grants, want at most %d", got, n, 4*n)
		}
	})
}

// putUsers stores users.
func (e *testEnv) putUsers(t *testing.T, users ...*User) {
	t.Helper()
	err := e.store.Update(t.Context(), func(tx store.Tx) error {
		for _, u := range users {
			if err := usersIn(tx).put(u); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// issuer returns a function that issues toks[name], user's access token
// for resource and scopes, by a code to tPublic.
func (e *testEnv) issuer(t *testing.T, toks map[string]string) func(name, user, resource string, scopes ...string) {
	return func(name, user, resource string, scopes ...string) {
		t.Helper()
		code, verifier := e.issueCode(t, codeSpec{user: user, resource: resource, scopes: scopes})
		tok, err := e.exchange(t, tPublic, "", code, verifier)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		toks[name] = tok.AccessToken
	}
}

// listCounted counts the entries its transactions (its write
// transactions only, when writesOnly) list in bucket under a prefix (not
// those of a listing of the whole bucket).
type listCounted struct {
	store.Store
	bucket     string
	writesOnly bool
	listed     atomic.Int64
}

func (s *listCounted) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(&listCountedTx{tx, s}) })
}

func (s *listCounted) View(ctx context.Context, fn func(store.Tx) error) error {
	if s.writesOnly {
		return s.Store.View(ctx, fn)
	}
	return s.Store.View(ctx, func(tx store.Tx) error { return fn(&listCountedTx{tx, s}) })
}

type listCountedTx struct {
	store.Tx
	s *listCounted
}

func (t *listCountedTx) MayRunAlone() { store.MayRunAlone(t.Tx) }

func (t *listCountedTx) List(bucket, prefix string, fn func(key string, value []byte) error) error {
	return t.Tx.List(bucket, prefix, func(k string, v []byte) error {
		if bucket == t.s.bucket && prefix != "" { // not indexGrants's, at the restart
			t.s.listed.Add(1)
		}
		return fn(k, v)
	})
}

// TestReloadReformattedJWKSRevokes: a configured client's or agent's keys
// are fingerprinted as written (credentialFingerprint over the JWK Set's
// bytes, which grants record as their credential tag), so a file
// rewritten with the same keys (indented, say) counts as new keys and
// revokes what re-keying does, as README says (Limits: agents and
// clients re-keyed); the same bytes revoke nothing.
func TestReloadReformattedJWKSRevokes(t *testing.T) {
	e := newTokEnv(t)
	var indented bytes.Buffer
	if err := json.Indent(&indented, e.config().Clients[slices.IndexFunc(e.config().Clients, func(c Client) bool { return c.ID == tJWT })].JWKS, "", "  "); err != nil {
		t.Fatal(err)
	}
	reformatClient := withEntry(func(c *Config) *[]Client { return &c.Clients }, func(c *Client) bool { return c.ID == tJWT }, func(c *Client) { c.JWKS = indented.Bytes() })
	reformatAgent := withEntry(func(c *Config) *[]Agent { return &c.Agents }, func(a *Agent) bool { return a.ID == tAgentKey }, func(a *Agent) { a.JWKS = indented.Bytes() })
	token := func(id string) string {
		t.Helper()
		a := e.post(t, pathToken, ccForm(url.Values{"client_assertion_type": {jwtBearerAssertion},
			"client_assertion": {e.clientAssertion(t, func(m jwt.MapClaims, _ *jwt.Token) { m["iss"], m["sub"] = id, id })}}), "")
		if a.status != http.StatusOK {
			t.Fatalf("%s's token = %d %s", id, a.status, a.raw)
		}
		return a.str("access_token")
	}
	e.applyConfig(t)
	toks := map[string]string{"client": token(tJWT), "agent": token(tAgentKey)}
	e.applyConfig(t)
	e.requireRevoked(t, "the same keys, the same bytes", toks)
	e.applyConfig(t, reformatClient, reformatAgent)
	e.requireRevoked(t, "the same keys, indented", toks, "client", "agent")
}
