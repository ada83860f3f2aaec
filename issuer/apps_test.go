package issuer

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
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
	if resp, _ := e.post(t, c, f.action, bad); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("revoke without CSRF: status %d, want 403", resp.StatusCode)
	}
	if e.count(bucketConsents) != 1 || e.count(bucketRevoked) != 0 {
		t.Fatalf("revoke without CSRF changed state")
	}

	resp, _ = e.post(t, c, f.action, v)
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
	if !e.iss.Revoked(context.Background(), "", gs[0].ID) {
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
	resp, err = c.Get(e.url(pathLogin, nil))
	if err != nil {
		t.Fatal(err)
	}
	f := findForm(t, readBody(t, resp), "login")
	v := f.hidden
	v.Set("username", bUser)
	v.Set("password", bPassword)
	resp, _ = e.post(t, c, f.action, v)
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
