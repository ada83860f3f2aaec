package issuer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

func TestAppsListAndRevoke(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.browser()
	conf := &oauth2.Config{
		ClientID:    bClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: e.url(pathAuthorize, nil), TokenURL: e.url(pathToken, nil), AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: bRedirect,
		Scopes:      []string{"files:read", "offline_access"},
	}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
	cb, err := e.robot(c, authURL, bRedirect, bUser, bPassword, "approve")
	if err != nil {
		t.Fatalf("robot: %v", err)
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.srv.Client())
	tok, err := conf.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
	if err != nil {
		t.Fatalf("Exchange() error = %v", err)
	}
	if tok.RefreshToken == "" {
		t.Fatalf("no refresh token for offline_access")
	}

	resp, err := c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Test App") || !strings.Contains(body, "files:read") || !strings.Contains(body, bResource) {
		t.Fatalf("apps page: status %d, want the connection listed: %s", resp.StatusCode, body)
	}
	forms := parseForms(t, body)
	if len(forms) != 1 || forms[0].hidden.Get("client_id") != bClientID {
		t.Fatalf("apps page forms = %+v, want one revoke form for %s", forms, bClientID)
	}
	f := forms[0]

	// Without the CSRF token nothing changes.
	v := f.hidden
	v.Set("action", "revoke")
	bad := map[string][]string{"action": {"revoke"}, "client_id": {bClientID}, "resource": {bResource}, "actor": {""}}
	if resp, _ := e.postPage(t, c, f.action, bad); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("revoke without CSRF: status %d, want 403", resp.StatusCode)
	}
	if e.count(bucketConsents) != 1 || e.count(bucketRevoked) != 0 {
		t.Fatalf("revoke without CSRF changed state")
	}

	resp, _ = e.postPage(t, c, f.action, v)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: status %d, want 303", resp.StatusCode)
	}
	if n := e.count(bucketConsents); n != 0 {
		t.Errorf("consents after revoke = %d, want 0", n)
	}
	var gs []grant
	var g grant
	for _, k := range e.keys(bucketGrants) {
		if err := e.get(bucketGrants, k, &g); err != nil {
			t.Fatal(err)
		}
		gs = append(gs, g)
	}
	if len(gs) != 1 || !gs[0].Revoked {
		t.Fatalf("grants after revoke = %+v, want one revoked", gs)
	}
	if !e.revoked(t, "", gs[0].ID) {
		t.Errorf("Revoked(grant) = false, want true")
	}
	// The refresh token no longer works.
	tok.Expiry = time.Now().Add(-time.Minute) // oauth2 uses the wall clock; force a refresh
	if _, err := conf.TokenSource(ctx, tok).Token(); err == nil {
		t.Errorf("refresh after revoke succeeded")
	}
	// The page is empty now.
	resp, err = c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); strings.Contains(body, "Test App") {
		t.Errorf("revoked app still listed")
	}
}

func TestAppsNeedsLogin(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.browser()
	resp, err := c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != pathLogin {
		t.Fatalf("apps without session = %d %q, want 303 to login", resp.StatusCode, resp.Header.Get("Location"))
	}
	// A plain login (no pending request) lands on the apps page.
	resp = e.signIn(t, c, e.url(pathLogin, nil), bUser)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != pathApps {
		t.Fatalf("login = %d %q, want 303 to apps", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	if body := readBody(t, resp); !strings.Contains(body, "No apps or agents") {
		t.Errorf("apps page for a new user: %s", body)
	}
}

// TestAppsAgentsRevoke runs the whole agent story in one issuer: an agent
// gets its own token, the user delegates to it through login and consent
// (requested_actor), a second agent takes over by token exchange, the
// apps page names both, and revoking the row there ends every one of
// those tokens at once (Revoked, as a gateway asks) and the refresh token.
func TestAppsAgentsRevoke(t *testing.T) {
	e := newBrowserEnv(t, func(c *Config) {
		c.Agents = []Agent{
			{ID: "planner", Name: "Planner Bot", SecretHash: hashClientSecret("planner secret"), Scopes: []string{"files:read"}},
			{ID: "helper", Name: "Helper Bot", SecretHash: hashClientSecret("helper secret")},
		}
	})
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.srv.Client())
	agentToken := func(id, secret string) string {
		cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: e.url(pathToken, nil),
			EndpointParams: url.Values{"resource": {bResource}}}
		tok, err := cc.Token(ctx)
		if err != nil {
			t.Fatalf("agent %s token: %v", id, err)
		}
		return tok.AccessToken
	}
	planner := agentToken("planner", "planner secret")

	c := e.browser()
	conf := &oauth2.Config{
		ClientID:    bClientID,
		Endpoint:    oauth2.Endpoint{AuthURL: e.url(pathAuthorize, nil), TokenURL: e.url(pathToken, nil), AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: bRedirect,
		Scopes:      []string{"files:read", "files:write", "offline_access"},
	}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("resource", bResource), oauth2.SetAuthURLParam("requested_actor", "planner"))
	cb, err := e.robot(c, authURL, bRedirect, bUser, bPassword, "approve")
	if err != nil {
		t.Fatalf("robot: %v", err)
	}
	tok, err := conf.Exchange(ctx, cb.Query().Get("code"), oauth2.VerifierOption(verifier),
		oauth2.SetAuthURLParam("resource", bResource), oauth2.SetAuthURLParam("actor_token", planner))
	if err != nil {
		t.Fatalf("Exchange() error = %v", err)
	}
	if got := tok.Extra("scope"); got != "files:read offline_access" {
		t.Errorf("delegated scope = %v, want files:read offline_access (the agent may hold no more)", got)
	}

	// helper takes over from planner by token exchange.
	form := url.Values{"grant_type": {grantTokenExchange}, "subject_token": {tok.AccessToken},
		"subject_token_type": {tokenTypeAccessToken}, "actor_token": {agentToken("helper", "helper secret")},
		"actor_token_type": {tokenTypeAccessToken}}
	req, _ := http.NewRequest(http.MethodPost, e.url(pathToken, nil), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("helper", url.QueryEscape("helper secret"))
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var ex struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&ex); err != nil || resp.StatusCode != 200 {
		t.Fatalf("token exchange = %d, %v", resp.StatusCode, err)
	}
	resp.Body.Close()

	resp, err = c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	for _, want := range []string{"Test App", "Planner Bot", "Helper Bot", "files:read"} {
		if !strings.Contains(body, want) {
			t.Errorf("apps page lacks %q: %s", want, body)
		}
	}
	forms := parseForms(t, body)
	if len(forms) != 1 || forms[0].hidden.Get("actor") != "planner" {
		t.Fatalf("apps page forms = %+v, want one revoke form for planner", forms)
	}
	v := forms[0].hidden
	v.Set("action", "revoke")
	if resp, _ := e.postPage(t, c, forms[0].action, v); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: status %d, want 303", resp.StatusCode)
	}

	for name, raw := range map[string]string{"delegated": tok.AccessToken, "exchanged": ex.AccessToken} {
		var claims struct {
			JTI string `json:"jti"`
			GID string `json:"gid"`
		}
		parts := strings.Split(raw, ".")
		b, _ := base64.RawURLEncoding.DecodeString(parts[1])
		if err := json.Unmarshal(b, &claims); err != nil || claims.GID == "" {
			t.Fatalf("%s token claims: %v, gid %q", name, err, claims.GID)
		}
		if !e.revoked(t, claims.JTI, claims.GID) {
			t.Errorf("Revoked(%s token) = false after revoking on the apps page, want true", name)
		}
	}
	tok.Expiry = time.Now().Add(-time.Minute) // oauth2 uses the wall clock; force a refresh
	if _, err := conf.TokenSource(ctx, tok).Token(); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("refresh after revoke error = %v, want invalid_grant", err)
	}
}

// TestAppsRevokeRefusesEarlierCodes (review s15-issuer F1): a code the
// app obtained before the user revoked it on the apps page (silently,
// through the remembered consent, prompt=none would do) is refused after
// it, instead of giving the app a new grant and putting it back on the
// page; a code issued after it, with the user's consent, redeems.
func TestAppsRevokeRefusesEarlierCodes(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.browser()
	conf := webApp(e, "files:read", "offline_access")
	ctx := e.ctx()
	code := func() (string, string) {
		verifier := oauth2.GenerateVerifier()
		authURL := conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
		cb, err := e.robot(c, authURL, bWebRedirect, bUser, bPassword, "approve")
		if err != nil {
			t.Fatalf("robot: %v", err)
		}
		return cb.Query().Get("code"), verifier
	}
	exchange := func(code, verifier string) (*oauth2.Token, error) {
		return conf.Exchange(ctx, code, oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
	}
	c1, v1 := code()
	if _, err := exchange(c1, v1); err != nil {
		t.Fatalf("first exchange: %v", err)
	}
	held, heldVerifier := code() // remembered consent: no page shown
	e.clock.Advance(time.Second)

	forms := appsForms(t, e, c)
	v := forms[0].hidden
	v.Set("action", "revoke")
	if resp, _ := e.postPage(t, c, forms[0].action, v); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: status %d", resp.StatusCode)
	}

	tok, err := exchange(held, heldVerifier)
	if err == nil {
		t.Fatalf("a code issued before the user revoked the app still redeems after it: refresh token %v", tok.RefreshToken != "")
	}
	if !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("redeeming the earlier code: %v, want invalid_grant", err)
	}
	// Connecting again afterwards is the user's choice: the consent page,
	// then a code that redeems.
	c3, v3 := code()
	if _, err := exchange(c3, v3); err != nil {
		t.Errorf("a code issued after the revocation, with the user's consent: %v", err)
	}
}

// TestAppsRevokeOfNothingStoresNothing (review s15-fresh F1,
// s15-fresh2 F2, F3): the apps page's revoke form posts whatever
// connection its poster types. One the page does not list stores nothing
// (it would be stamped under the posted names) and starts no write
// transaction; and revocations do not count against the user's writes,
// which any page the user visits can spend through /authorize: with
// them spent, the real connection is still revoked, and stamped.
func TestAppsRevokeOfNothingStoresNothing(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.browser()
	conf := webApp(e, "files:read")
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
	if _, err := e.robot(c, authURL, bWebRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatalf("robot: %v", err)
	}
	forms := appsForms(t, e, c)
	before := e.count(bucketEpochs)
	for k := range 50 {
		v := maps.Clone(forms[0].hidden)
		v.Set("action", "revoke")
		v.Set("client_id", fmt.Sprintf("junk-%d", k))
		if resp, _ := e.postPage(t, c, forms[0].action, v); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("revoke %d: status %d", k, resp.StatusCode)
		}
	}
	if after := e.count(bucketEpochs); after != before {
		t.Errorf("revoking connections that do not exist stored %d records", after-before)
	}
	// The user's writes spent (a page the user visited sending the
	// browser to /authorize again and again), the real connection is
	// still revoked.
	for range userWriteBurst {
		e.iss.userWrites.take(t.Context(), bUser)
	}
	if err := e.iss.signedInWrite(t.Context(), bUser); err == nil {
		t.Fatal("the user's writes are not spent")
	}
	v := maps.Clone(forms[0].hidden)
	v.Set("action", "revoke")
	if resp, _ := e.postPage(t, c, forms[0].action, v); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoking the real connection: status %d", resp.StatusCode)
	}
	if after := e.count(bucketEpochs); after != before+1 {
		t.Errorf("revoking the real connection stored %d records, want its stamp", after-before)
	}
}

// webApp is the browser env's web client as an x/oauth2 client.
func webApp(e *testEnv, scopes ...string) *oauth2.Config {
	conf := e.oauthConfig(bWebClientID, "", oauth2.AuthStyleInParams)
	conf.RedirectURL, conf.Scopes = bWebRedirect, scopes
	return conf
}

// appsForms are the revoke forms of the apps page browser c sees: one
// connection's, else the test ends.
func appsForms(t *testing.T, e *testEnv, c *http.Client) []form {
	t.Helper()
	resp, err := c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	forms := parseForms(t, readBody(t, resp))
	if len(forms) != 1 {
		t.Fatalf("apps page forms = %+v, want one", forms)
	}
	return forms
}

// consentReadStore runs after, once armed, after the first read
// transaction that reads a remembered consent has ended: what happens
// between /authorize finding the consent and issuing the code.
type consentReadStore struct {
	store.Store
	armed atomic.Bool
	after func()
}

func (s *consentReadStore) View(ctx context.Context, fn func(store.Tx) error) error {
	read := false
	err := s.Store.View(ctx, func(tx store.Tx) error { return fn(consentReadTx{tx, &read}) })
	if read && s.armed.CompareAndSwap(true, false) {
		s.after()
	}
	return err
}

type consentReadTx struct {
	store.Tx
	read *bool
}

func (t consentReadTx) Get(bucket, key string) ([]byte, error) {
	if bucket == bucketConsents {
		*t.read = true
	}
	return t.Tx.Get(bucket, key)
}

// TestAppsRevokeWhileRememberedConsentIsUsed: the user revokes an app on
// the apps page just after /authorize (prompt=none, say) found its
// remembered consent and before it issued the code. The code is not
// issued: the revocation's stamp is older than the code, and its grant
// would put the app back on the page with no consent behind it.
func TestAppsRevokeWhileRememberedConsentIsUsed(t *testing.T) {
	e := newBrowserEnv(t, nil)
	st := &consentReadStore{Store: e.store}
	e.store = st
	e.serve(e.iss.cfg)
	c := e.browser()
	conf := webApp(e, "files:read")
	verifier := oauth2.GenerateVerifier()
	authURL := func(opts ...oauth2.AuthCodeOption) string {
		opts = append(opts, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
		return conf.AuthCodeURL("s", opts...)
	}
	if _, err := e.robot(c, authURL(), bWebRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatalf("first sign-in: %v", err)
	}
	st.after = func() {
		e.clock.Advance(time.Second)
		if err := e.iss.revokeConnection(context.Background(), bUser, bWebClientID, bResource, ""); err != nil {
			t.Errorf("revokeConnection: %v", err)
		}
		e.clock.Advance(time.Second)
	}
	st.armed.Store(true)
	resp, err := c.Get(authURL(oauth2.SetAuthURLParam("prompt", "none")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st.armed.Load() {
		t.Fatal("the remembered consent was not read")
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if code := loc.Query().Get("code"); code != "" {
		_, err := conf.Exchange(e.ctx(), code, oauth2.VerifierOption(verifier), oauth2.SetAuthURLParam("resource", bResource))
		t.Errorf("a code was issued under the consent the user revoked meanwhile (redeems: %v)", err == nil)
	}
	if rows, err := e.iss.consents.connections(context.Background(), bUser); err != nil || len(rows) != 0 {
		t.Errorf("connections after the revocation = %v, %v, want none", rows, err)
	}
}

// TestAppsPageFetchesNoDocument: the apps page and its revoke button name
// a client metadata document client from what the issuer holds, never by
// fetching its document: a user's remembered consents (up to
// maxUserConsents, most of them such clients) would otherwise send a
// request per row, each up to the fetch timeout of a host the client's
// publisher runs (who so sets how long revoking it takes), and spend the
// fetch budget of the user's address, which then refuses the user's next
// sign-in to a new app.
func TestAppsPageFetchesNoDocument(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	ctx := t.Context()
	const seeded = cimdFetchBurst + 5
	paths := make([]string, seeded)
	err := e.store.Update(ctx, func(tx store.Tx) error {
		for n := range seeded {
			paths[n] = fmt.Sprintf("/seed%d.json", n)
			id := host.doc(paths[n], "no-store", validDoc)
			cs := &consent{Scopes: []string{"files:read"}, GrantedAt: e.clock.Now(), RedirectHosts: []string{"127.0.0.1"}}
			if err := consentsIn(tx).t.put(consentKey(bUser, id, bResource, ""), cs, time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	first := host.doc("/first.json", "no-store", func(id string) string {
		return `{"client_id":"` + id + `","client_name":"First","redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"none"}`
	})
	p := authParams(testChallenge)
	p.Set("client_id", first)
	p.Set("redirect_uri", "https://app.example.com/cb")
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, p), "https://app.example.com/cb", bUser, bPassword, "approve"); err != nil {
		t.Fatalf("authorization: %v", err)
	}
	resp, err := c.Get(e.url(pathApps, nil))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	forms := parseForms(t, body)
	if resp.StatusCode != http.StatusOK || len(forms) != seeded+1 || !strings.Contains(body, host.srv.URL+paths[0]) {
		t.Fatalf("apps page: status %d, %d forms, want %d rows naming the documents' URLs", resp.StatusCode, len(forms), seeded+1)
	}
	v := forms[0].hidden
	v.Set("action", "revoke")
	if resp, _ := e.postPage(t, c, forms[0].action, v); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: status %d, want 303", resp.StatusCode)
	}
	var fetched int64
	for _, path := range paths {
		fetched += host.count(path)
	}
	if fetched != 0 {
		t.Errorf("the apps page and a revoke fetched %d client metadata documents, want none", fetched)
	}
	// The user's address may still fetch the document of a new app.
	next := host.doc("/next.json", "no-store", func(id string) string {
		return `{"client_id":"` + id + `","client_name":"Next","redirect_uris":["https://app.example.com/cb"],"token_endpoint_auth_method":"none"}`
	})
	p.Set("client_id", next)
	if _, err := e.robot(c, e.url(pathAuthorize, p), "https://app.example.com/cb", bUser, bPassword, "approve"); err != nil {
		t.Errorf("authorizing a new app after the apps page: %v", err)
	}
}
