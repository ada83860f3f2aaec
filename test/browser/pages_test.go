package browser

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// registered registers a public client with Dynamic Client Registration
// under name, redirecting to the env's callback, and returns the
// authorization request of a sign-in with it.
func registered(t *testing.T, e *env, name string) harness.AuthRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, out, err := harness.Register(ctx, e.md, map[string]any{
		"client_name":                name,
		"redirect_uris":              []string{e.callback.uri()},
		"token_endpoint_auth_method": "none",
	})
	id, _ := out["client_id"].(string)
	if err != nil || status != 201 || id == "" {
		t.Fatalf("Register = %d, %v, %v", status, out, err)
	}
	cfg := *e.cfg
	cfg.ClientID = id
	return harness.NewAuthRequest(&cfg, e.resource)
}

// TestConsentLongNameKeepsPageReadable: a self-registered client names
// itself with 100 characters and no space. On a phone's screen the
// consent page must still show, within the screen, where it sends the
// user and the warning that the name is the client's own claim.
func TestConsentLongNameKeepsPageReadable(t *testing.T) {
	e := setup(t)
	ar := registered(t, e, strings.Repeat("W", 100))
	ctx := newBrowser(t)
	do(t, ctx, "phone screen", chromedp.EmulateViewport(390, 844))
	requireConsent(t, ctx, login(t, ctx, ar.URL, password))
	screenshot(t, ctx, "long-name")
	// Right edges of the text itself (a Range), not of the boxes, which
	// a grid column may stretch.
	type widths struct {
		Screen float64 `json:"screen"`
		Page   float64 `json:"page"`
		Host   float64 `json:"host"`
		Note   float64 `json:"note"`
	}
	got := run(t, ctx, "measure", chromedp.Evaluate[widths](`(() => {
		const right = (sel) => {
			const r = document.createRange();
			r.selectNodeContents(document.querySelector(sel));
			return Math.max(...Array.from(r.getClientRects(), (b) => b.right));
		};
		return {
			screen: document.documentElement.clientWidth,
			page: document.documentElement.scrollWidth,
			host: right(".host"),
			note: right(".facts .muted"),
		};
	})()`))
	if got.Page > got.Screen || got.Host > got.Screen || got.Note > got.Screen {
		t.Errorf("consent page on a %v px screen: %v px wide, redirect host ends at %v px, self-registration note at %v px; want all within the screen",
			got.Screen, got.Page, got.Host, got.Note)
	}
}

// TestRevokeArmsLate: the apps page's Revoke access takes clicks only
// once the pointer has rested on it, as the consent page's Allow and the
// sign-out confirmation do (TestConsentAllowArmsLate): a site that sends
// the browser to the apps page under the pointer between the two clicks
// of a double-click must not have the second one end a connection (the
// app's refresh tokens, the agents it passed access to).
func TestRevokeArmsLate(t *testing.T) {
	e := setup(t)
	ctx := newBrowser(t)
	signedInToken(t, e, ctx, scopeRead, "offline_access")
	do(t, ctx, "open apps page",
		chromedp.Navigate(e.issuer+"/apps"),
		chromedp.WaitVisible(chromedp.CSS(`button[name=action][value=revoke]`)),
	)
	armsLate(t, ctx, `button[name=action][value=revoke]`)
}
