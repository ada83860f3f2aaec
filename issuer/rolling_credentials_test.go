package issuer

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"golang.org/x/oauth2"
)

// TestCredentialTagsSteady (review s16c): instances on the same configuration, and a
// reload changing only names, scopes and redirects: confidential (secret
// and private_key_jwt) and public clients refresh alternately at both, no
// refusal, no revocation, and the grant's client tag does not flap.
func TestCredentialTagsSteady(t *testing.T) {
	e := newTokEnv(t)
	apply, at := e.rolling(t)
	apply()
	a := e.iss
	cfg := a.cfg
	cfg.Clients = slices.Clone(cfg.Clients)
	for n := range cfg.Clients {
		cfg.Clients[n].Name = "renamed"
		cfg.Clients[n].RedirectURIs = append(slices.Clone(cfg.Clients[n].RedirectURIs), "https://app.example.com/cb2")
	}
	e.serve(cfg) // B: only names and redirects differ
	apply()
	b := e.iss

	type client struct {
		id, secret string
		jwt        bool
	}
	for _, c := range []client{{id: tConf, secret: tSecret}, {id: tJWT, jwt: true}, {id: tPublic}} {
		t.Run(c.id, func(t *testing.T) {
			at(a)
			code, verifier := e.issueCode(t, codeSpec{client: c.id, scopes: []string{"read", scopeOfflineAccess}})
			form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {tRedirect}}
			send := func(f url.Values) answer {
				basic := ""
				switch {
				case c.jwt:
					f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
					f.Set("client_assertion", e.clientAssertion(t, nil))
				case c.secret != "":
					basic = c.id + ":" + c.secret
				default:
					f.Set("client_id", c.id)
				}
				return e.post(t, pathToken, f, basic)
			}
			r := send(form)
			if r.status != http.StatusOK {
				t.Fatalf("code: %d %s", r.status, r.raw)
			}
			_, cl := claimsOf(t, r.str("access_token"))
			gid := cl["gid"].(string)
			first := e.grantOf(t, gid).ClientCredential
			if first == "" {
				t.Errorf("the grant of configured client %s records no client tag", c.id)
			}
			rt := r.str("refresh_token")
			for n := range 6 {
				at([]*Issuer{a, b}[n%2])
				r := send(url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {rt}})
				if r.status != http.StatusOK {
					t.Fatalf("refresh %d: %d %s", n, r.status, r.raw)
				}
				rt = r.str("refresh_token")
				if got := e.grantOf(t, gid).ClientCredential; got != first {
					t.Errorf("refresh %d: client tag %q, was %q", n, got, first)
				}
			}
			at(b)
			e.serve(cfg)
			apply() // an unchanged reload
			if e.revokedToken(t, r.str("access_token")) {
				t.Error("revoked by an unchanged reload")
			}
		})
	}
}

// TestRollingPublicBecomesConfidential (review s16c F1): the
// configuration makes public client tPublic confidential. A applies it
// (every grant of tPublic revoked). B, not reloaded, lets nobody redeem
// a code without a secret then; one it let redeem while its own
// configuration was recorded (appliedWhile) records the public client's
// tag, so B's reload ends it, as one made with a replaced secret.
func TestRollingPublicBecomesConfidential(t *testing.T) {
	const newSecret = "new secret"
	e := newTokEnv(t)
	apply, at := e.rolling(t)
	apply()
	b := e.iss
	cfg := b.cfg
	cfg.Clients = slices.Clone(cfg.Clients)
	for n := range cfg.Clients {
		if cfg.Clients[n].ID == tPublic {
			cfg.Clients[n].TokenEndpointAuthMethod = authClientSecretBasic
			cfg.Clients[n].SecretHash = hashClientSecret(newSecret)
		}
	}
	e.serve(cfg) // A
	apply()
	a := e.iss

	at(b)
	code, verifier := e.issueCode(t, codeSpec{client: tPublic, scopes: []string{"read", scopeOfflineAccess}})
	if _, err := e.exchange(t, tPublic, "", code, verifier); err == nil {
		t.Error("at B, A's configuration applied: public redemption succeeded, want refused")
	}
	var tok *oauth2.Token
	appliedWhile(t, b, a, func() { // B's own configuration recorded
		code, verifier := e.issueCode(t, codeSpec{client: tPublic, scopes: []string{"read", scopeOfflineAccess}})
		var err error
		if tok, err = e.exchange(t, tPublic, "", code, verifier); err != nil {
			t.Fatalf("at B: public redemption: %v", err)
		}
	})

	at(a)
	e.serve(cfg) // B reloads
	apply()
	if !e.revokedToken(t, tok.AccessToken) {
		t.Error("after B's reload: the grant B issued to tPublic without the secret the configuration now requires is not revoked")
	}
	r := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {tok.RefreshToken}}, tPublic+":"+newSecret)
	if r.status == http.StatusOK {
		t.Errorf("after B's reload: the grant B issued publicly refreshes under the new secret")
	} else {
		t.Logf("refresh at A with the new secret: %d %s", r.status, r.raw)
	}
}

// TestRollingActorTokenOfReplacedSecret (review s16c F2): agent
// tAgent1's secret is replaced; B, not reloaded, gives it no token under
// the old secret then, and one it gave while its own configuration was
// recorded (appliedWhile) is refused at A as the actor_token of an
// exchange, as it is as a subject_token.
func TestRollingActorTokenOfReplacedSecret(t *testing.T) {
	const newSecret = "new secret"
	e := newTokEnv(t)
	apply, at := e.rolling(t)
	apply()
	b := e.iss
	cfg := b.cfg
	cfg.Agents = slices.Clone(cfg.Agents)
	for n := range cfg.Agents {
		if cfg.Agents[n].ID == tAgent1 {
			cfg.Agents[n].SecretHash = hashClientSecret(newSecret)
		}
	}
	e.serve(cfg) // A
	apply()
	a := e.iss
	code, verifier := e.issueCode(t, codeSpec{client: tConf, scopes: []string{"read"}})
	user, err := e.exchange(t, tConf, tSecret, code, verifier)
	if err != nil {
		t.Fatal(err)
	}

	at(b)
	cc := url.Values{"grant_type": {grantClientCredentials}, "resource": {tResource}}
	if r := e.post(t, pathToken, cc, tAgent1+":"+tAgentSecret); r.status != http.StatusBadRequest {
		t.Errorf("at B, A's configuration applied: agent's own token with the old secret = %d %s, want 400", r.status, r.raw)
	}
	var own answer
	appliedWhile(t, b, a, func() { // B's own configuration recorded
		if own = e.post(t, pathToken, cc, tAgent1+":"+tAgentSecret); own.status != http.StatusOK {
			t.Fatalf("at B: agent's own token with the old secret: %d %s", own.status, own.raw)
		}
	})

	at(a)
	if r := e.tokenExchange(t, tAgent1+":"+newSecret, exchangeForm(own.str("access_token"), "")); r.status == http.StatusOK {
		t.Errorf("at A: the agent's token from B as subject_token accepted")
	}
	if r := e.tokenExchange(t, tConf+":"+tSecret, exchangeForm(user.AccessToken, own.str("access_token"))); r.status == http.StatusOK {
		t.Errorf("at A: the agent's token B issued under its replaced secret accepted as actor_token")
	} else {
		t.Logf("actor exchange: %d %s", r.status, r.raw)
	}
	// Nor as the actor_token of a code the user delegated to the agent
	// (requested_actor): the code grant read it as the exchange did
	// before s16c F2, and issued a delegated grant on it.
	code, verifier = e.issueCode(t, codeSpec{actor: tAgent1, scopes: []string{"read"}})
	r := e.post(t, pathToken, url.Values{"grant_type": {grantAuthorizationCode}, "code": {code}, "code_verifier": {verifier},
		"redirect_uri": {tRedirect}, "client_id": {tPublic}, "actor_token": {own.str("access_token")}}, "")
	if r.status == http.StatusOK || r.str("error") != "invalid_grant" {
		t.Errorf("at A: the agent's token from B as a delegated code's actor_token: %d %s, want invalid_grant", r.status, r.raw)
	}
}
