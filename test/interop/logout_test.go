package interop

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestOpenIDClientEndSession: openid-client, a certified relying party
// library, discovers the issuer and builds the RP-Initiated Logout URL
// with buildEndSessionUrl (test/node/logout.mjs) from the discovery
// document's end_session_endpoint, with the client's ID token as
// id_token_hint, its post_logout_redirect_uri and a state. The signed-in
// browser that opens it is asked, and signing out sends it to the URI
// with the state; a browser signed in nowhere is sent there at once.
func TestOpenIDClientEndSession(t *testing.T) {
	nt := requireNode(t)
	const (
		rpID     = "portal"
		callback = "http://127.0.0.1/callback"
		back     = "http://127.0.0.1/signed-out"
		state    = "logout-state-7"
	)
	s := startStackWith(t, startDemo(t), `		client `+rpID+` {
			name "Portal"
			public
			redirect_uri `+callback+`
			post_logout_redirect_uri `+back+`
		}`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	md, err := harness.Discover(ctx, s.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := md.Config(rpID, callback, "openid", baseScope)
	ar := harness.NewAuthRequest(cfg, s.Resource)
	robot := harness.NewRobot(userName, userPassword, callback)
	q, err := robot.Authorize(ctx, ar.URL)
	if err != nil || q.Get("code") == "" {
		t.Fatalf("sign-in: %v, %v", q, err)
	}
	tok, err := ar.Exchange(ctx, cfg, q.Get("code"))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	out, err := nt.run(ctx, t, nil, "logout.mjs", "--issuer", s.Issuer, "--client-id", rpID, "--id-token", idToken,
		"--post-logout-redirect-uri", back, "--state", state)
	if err != nil {
		t.Fatalf("logout.mjs: %v", err)
	}
	endSession, err := url.Parse(strings.TrimSpace(string(out)))
	if err != nil || endSession.Path != "/logout" || endSession.Query().Get("id_token_hint") != idToken {
		t.Fatalf("buildEndSessionUrl = %q, %v, want the issuer's /logout with the ID token", out, err)
	}
	want := back + "?state=" + state

	browser := &http.Client{Jar: robot.Client.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := browser.Get(endSession.String())
	if err != nil {
		t.Fatal(err)
	}
	forms, err := harness.ParseForms(resp.Body)
	resp.Body.Close()
	var confirm *harness.Form
	for n := range forms {
		if forms[n].ID == "logout" {
			confirm = &forms[n]
		}
	}
	if err != nil || resp.StatusCode != http.StatusOK || confirm == nil {
		t.Fatalf("signed in, the end-session URL: %d, %v, want 200 and the confirmation form", resp.StatusCode, err)
	}
	vals := confirm.Hidden
	vals.Set("action", "logout")
	action, err := endSession.Parse(confirm.Action)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(vals.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", s.Issuer)
	resp, err = browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
		t.Fatalf("sign out: %d Location %q, want 303 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}

	resp, err = (&http.Client{CheckRedirect: browser.CheckRedirect}).Get(endSession.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
		t.Errorf("signed in nowhere, the end-session URL: %d Location %q, want 303 to %s", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}
