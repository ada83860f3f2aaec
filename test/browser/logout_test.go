package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestRPInitiatedLogout: OpenID Connect RP-Initiated Logout in Chromium.
// The user signs in to the client (openid), which later sends the browser
// to the end_session_endpoint of the OpenID discovery document with its
// ID token as id_token_hint, its post_logout_redirect_uri and a state.
// The issuer asks the user, who signs out; the browser lands back at the
// client with the state (through the confirmation page's CSP
// form-action, which Chrome applies to the redirect too), and a new
// authorization request asks to sign in again.
func TestRPInitiatedLogout(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	tok := signedInToken(t, e, ctx, "openid", scopeRead)
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" {
		t.Fatal("no ID token")
	}

	tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(tctx, http.MethodGet, e.issuer+"/.well-known/openid-configuration", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var md struct {
		EndSession string `json:"end_session_endpoint"`
	}
	err = json.NewDecoder(resp.Body).Decode(&md)
	resp.Body.Close()
	if err != nil || md.EndSession != e.issuer+"/logout" {
		t.Fatalf("end_session_endpoint = %q, %v, want %s/logout", md.EndSession, err, e.issuer)
	}

	const state = "logout-state-1"
	logout := md.EndSession + "?" + url.Values{
		"id_token_hint":            {idToken},
		"post_logout_redirect_uri": {e.callback.signedOutURI()},
		"state":                    {state},
	}.Encode()
	do(t, ctx, "open the end_session_endpoint",
		chromedp.Navigate(logout),
		chromedp.WaitVisible(chromedp.CSS(`form#logout`)),
	)
	text := bodyText(t, ctx)
	for _, want := range []string{username, clientName, strings.TrimPrefix(e.callback.srv.URL, "http://")} {
		if !strings.Contains(text, want) {
			t.Errorf("confirmation page text lacks %q; text: %s", want, text)
		}
	}
	screenshot(t, ctx, "confirm")
	restingClick(t, ctx, `form#logout button[value=logout]`)
	select {
	case got := <-e.callback.signedOut:
		if got.Get("state") != state {
			t.Errorf("back at the client with state %q, want %q", got.Get("state"), state)
		}
	case <-time.After(15 * time.Second):
		screenshot(t, ctx, "not-back")
		t.Fatalf("the browser never reached the post_logout_redirect_uri; page: %s", bodyText(t, ctx))
	}

	settledAt(t, ctx, e.callback.signedOutURI())
	again := harness.NewAuthRequest(e.cfg, e.resource)
	do(t, ctx, "authorize again",
		chromedp.Navigate(again.URL),
		chromedp.WaitVisible(chromedp.CSS(`form#login`)),
	)
}

// TestSignOutArmsLate: the sign-out confirmation's Sign out button takes
// clicks only once the pointer has rested on the buttons for a second, as
// the consent page's Allow does (TestConsentAllowArmsLate): a site that
// sends the browser to the end_session_endpoint under the pointer between
// the two clicks of a double-click must not have the second one sign the
// user out.
func TestSignOutArmsLate(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	signedInToken(t, e, ctx, "openid", scopeRead)
	for _, q := range []url.Values{
		{"client_id": {clientID}, "post_logout_redirect_uri": {e.callback.signedOutURI()}},
		nil, // the user's own sign-out, no application
	} {
		do(t, ctx, "open the end_session_endpoint",
			chromedp.Navigate(e.issuer+"/logout?"+q.Encode()),
			chromedp.WaitVisible(chromedp.CSS(`form#logout`)),
		)
		armsLate(t, ctx, `form#logout button[value=logout]`)
	}
	restingClick(t, ctx, `form#logout button[value=logout]`)
	do(t, ctx, "signed out", chromedp.WaitNotPresent(chromedp.CSS(`form#logout`)))
	again := harness.NewAuthRequest(e.cfg, e.resource)
	do(t, ctx, "authorize again",
		chromedp.Navigate(again.URL),
		chromedp.WaitVisible(chromedp.CSS(`form#login`)),
	)
}

// TestSignOutDoubleClick: a double-click on Sign out over a network slow
// enough that the first click's answer has not arrived when the second
// click comes (400 ms) sends the confirmation twice, and the browser
// shows the second answer only. The first ended the session; the second,
// with its cookie, gets the answer for no one signed in: the browser goes
// on to the client's post_logout_redirect_uri with the state, not to a
// "Form expired" page telling a user already signed out to try again.
func TestSignOutDoubleClick(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	signedInToken(t, e, ctx, "openid", scopeRead)
	q := url.Values{"client_id": {clientID}, "post_logout_redirect_uri": {e.callback.signedOutURI()}, "state": {"twice"}}
	do(t, ctx, "open the end_session_endpoint",
		chromedp.Navigate(e.issuer+"/logout?"+q.Encode()),
		chromedp.WaitVisible(chromedp.CSS(`form#logout`)),
	)
	slowNetwork(t, ctx, 400)
	doubleClick(t, ctx, `form#logout button[value=logout]`)
	select {
	case got := <-e.callback.signedOut:
		if got.Get("state") != "twice" {
			t.Errorf("back at the client with state %q, want twice", got.Get("state"))
		}
	case <-time.After(15 * time.Second):
		screenshot(t, ctx, "not-back")
		t.Fatalf("the browser never reached the post_logout_redirect_uri; page: %s", bodyText(t, ctx))
	}
	settledAt(t, ctx, e.callback.signedOutURI())
	do(t, ctx, "apps page",
		chromedp.Navigate(e.issuer+"/apps"),
		chromedp.WaitVisible(chromedp.CSS(`form#login`)),
	)
}

// slowNetwork makes every answer reach the browser ms milliseconds
// after its request was sent.
func slowNetwork(t *testing.T, ctx context.Context, ms float64) {
	t.Helper()
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("enable network domain: %v", err)
	}
	_, err := chromedp.Call(ctx, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
		MatchedNetworkConditions: []*network.Conditions{{Latency: ms, DownloadThroughput: -1, UploadThroughput: -1}},
	})
	if err != nil {
		t.Fatalf("emulate a slow network: %v", err)
	}
}

// doubleClick rests the pointer on the button selector selects until it
// takes clicks (armsLate), then double-clicks it: two clicks 150 ms
// apart, the second one counted as a double-click's.
func doubleClick(t *testing.T, ctx context.Context, selector string) {
	t.Helper()
	h := run(t, ctx, "find "+selector, chromedp.Evaluate[allowHit](fmt.Sprintf(hitTest, selector)))
	do(t, ctx, "point at "+selector, chromedp.MouseEvent(chromedp.MouseMoved, h.X, h.Y))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`getComputedStyle(document.querySelector(%q)).pointerEvents !== "none"`, selector))); err != nil {
		t.Fatalf("wait for %s to take clicks: %v", selector, err)
	}
	do(t, ctx, "double-click "+selector,
		chromedp.MouseClickXY(h.X, h.Y),
		chromedp.Sleep(150*time.Millisecond),
		chromedp.MouseClickXY(h.X, h.Y, chromedp.ClickCount(2)),
	)
}
