package idp

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// siblingName is a second identity provider at the same issuer as corp:
// another application registered at the same provider (its own group
// mapping, say), whose users are the same population.
const siblingName = "partners"

const siblingCaddyfile = `{
	admin %[5]s
	persist_config off
	auto_https off
	storage file_system %[4]s
	mcp_auth {
		issuer %[1]s
		storage memory
		group eng {
			scopes * %[6]s %[7]s
		}
		group readers {
			scopes * %[6]s
		}
		resource %[1]s/mcp {
			scopes %[6]s %[7]s
		}
		client %[8]s {
			public
			redirect_uri %[1]s/cb
			grant_types authorization_code refresh_token
		}
		identity_provider corp {
			issuer %[2]s
			client_id %[9]s
			client_secret {env.IDP_TEST_CLIENT_SECRET}
			scopes openid email profile groups offline_access
			group engineers eng
			allowed_email_domains corp.example
		}
		identity_provider partners {
			issuer %[2]s
			client_id %[9]s
			client_secret {env.IDP_TEST_CLIENT_SECRET}
			scopes openid email profile groups offline_access
			group * readers
		}
	}
}

http://:%[3]d {
	bind 127.0.0.1
	mcp_issuer
}
`

// TestFederatedDisabledAtSiblingProvider: two identity providers at one
// issuer (two applications registered at the same oidc-provider) name
// one population of users, in which a sub is one person (OpenID Connect
// Core section 5.7). Disabling the person's account at one keeps them
// out at the other as well: their sign-in there is refused, and the
// account they hold there is signed out (its login session ended, its
// refresh token refused).
// Enabling the account again lets them in at both.
func TestFederatedDisabledAtSiblingProvider(t *testing.T) {
	port := harness.FreePort(t)
	iss := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startProviderWith(t, []map[string]any{{
		"client_id": idpClientID, "client_secret": idpSecret,
		"redirect_uris": []string{iss + "/login/" + idpName + "/callback", iss + "/login/" + siblingName + "/callback"},
	}}, nil)
	p.setAccounts(t, map[string]account{accountAlice: alice})
	t.Setenv("IDP_TEST_CLIENT_SECRET", idpSecret)
	adminAddr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	harness.Start(t, fmt.Sprintf(siblingCaddyfile, iss, p.Issuer, port, t.TempDir(), adminAddr, readScope, writeScope, clientID, idpClientID))
	t.Cleanup(func() {
		// caddy.Stop leaves the admin endpoint running; a configuration
		// without one shuts it down.
		if err := caddy.Load([]byte(`{"admin":{"disabled":true,"config":{"persist":false}}}`), true); err != nil {
			t.Errorf("stop admin endpoint: %v", err)
		}
	})
	harness.WaitReady(t, iss+"/.well-known/oauth-authorization-server")
	meta, err := harness.Discover(context.Background(), iss)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{Issuer: iss, Resource: iss + "/mcp", Redirect: iss + "/cb", idp: p, meta: meta}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// viaIn signs alice in through provider name in browser r: the
	// refresh token, or the page the sign-in ended on.
	viaIn := func(r *harness.Robot, name string) (string, outcome) {
		t.Helper()
		cfg := s.meta.Config(clientID, s.Redirect, readScope, "offline_access")
		ar := harness.NewAuthRequest(cfg, s.Resource)
		out := signInVia(t, ctx, r, ar.URL, name, accountAlice, nil)
		if out.query == nil || out.query.Get("code") == "" {
			return "", out
		}
		tok, err := ar.Exchange(ctx, cfg, out.query.Get("code"))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		return tok.RefreshToken, out
	}
	via := func(name string) (string, outcome) {
		t.Helper()
		return viaIn(harness.NewRobot("", "", s.Redirect), name)
	}
	// signedIn reports whether browser r has a login session here: the
	// connected-apps page answers, not the sign-in page.
	signedIn := func(r *harness.Robot) bool {
		t.Helper()
		pg, err := r.Get(ctx, iss+"/apps")
		if err != nil {
			t.Fatal(err)
		}
		return pg.URL.Path == "/apps"
	}
	admin := func(action string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+adminAddr+"/mcp-auth/users/"+url.PathEscape(idpName+":"+accountAlice)+"/"+action, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s:%s = %d", action, idpName, accountAlice, resp.StatusCode)
		}
	}
	if rt, out := via(idpName); rt == "" {
		t.Fatalf("sign-in at %s ended on %s: %s", idpName, out.page.URL, out.page.Text())
	}
	browser := harness.NewRobot("", "", s.Redirect)
	sibling, out := viaIn(browser, siblingName)
	if sibling == "" {
		t.Fatalf("sign-in at %s ended on %s: %s", siblingName, out.page.URL, out.page.Text())
	}
	if !signedIn(browser) {
		t.Fatalf("no login session after the sign-in at %s", siblingName)
	}

	admin("disable")
	if rt, out := via(siblingName); rt != "" || out.page.Status != http.StatusForbidden || !strings.Contains(out.page.Text(), "may not sign in here") {
		t.Errorf("the disabled person's sign-in at %s: refresh token %t, last page %d %.200q; want 403 may not sign in here", siblingName, rt != "", out.page.Status, out.page.Text())
	}
	if tr, err := harness.Refresh(ctx, s.meta, clientID, sibling, s.Resource); err != nil || tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
		t.Errorf("refresh of the disabled person's grant at %s = %d %s %v, want 400 invalid_grant", siblingName, tr.Status, tr.Error, err)
	}
	if signedIn(browser) {
		t.Errorf("the disabled person's login session as %s:%s goes on", siblingName, accountAlice)
	}

	admin("enable")
	if rt, out := via(siblingName); rt == "" {
		t.Errorf("sign-in at %s once enabled ended on %s: %s", siblingName, out.page.URL, out.page.Text())
	}
}
