package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestIssuerSessionCookieNotPassedOn: mcp_issuer passes the requests
// that are not for its endpoints on to the handlers after it in its
// site, here an application behind reverse_proxy on the issuer's host.
// The browser sends the issuer's session cookie to every path of that
// host, and the application got it with every request: with it, it could
// sign in at the issuer as the user and approve its own client on the
// consent page (the form's CSRF token is on the page the cookie opens,
// and the Origin check reads headers a server sets as it likes). The
// application gets its own cookies, not the issuer's, in every spelling
// net/http reads as the issuer's.
func TestIssuerSessionCookieNotPassedOn(t *testing.T) {
	var mu sync.Mutex
	var seen []string // the Cookie headers the application got, joined by "\n"
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, strings.Join(r.Header.Values("Cookie"), "\n"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(app.Close)
	dir, hash := t.TempDir(), harness.HashPassword(t, password)
	var issuer string
	harness.StartFree(t, func(port int) string {
		issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	mcp_auth {
		issuer %[2]s
		storage memory
		user %[3]s %[4]s {
			groups readers
		}
		group readers {
			scopes * %[5]s
		}
		client %[6]s {
			public
			redirect_uri %[7]s
		}
		resource %[2]s/mcp {
			scopes %[5]s
		}
	}
}

%[2]s {
	mcp_issuer
	reverse_proxy %[8]s
}
`, dir, issuer, username, hash, scopeRead, clientID, redirectURI, app.Listener.Addr())
	})
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	ctx := ctxTimeout(t, 30*time.Second)
	md, err := harness.Discover(ctx, issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", issuer, err)
	}
	robot := harness.NewRobot(username, password, redirectURI)
	ar := harness.NewAuthRequest(md.Config(clientID, redirectURI, scopeRead), issuer+"/mcp")
	if q, err := robot.Authorize(ctx, ar.URL); err != nil || q.Get("code") == "" {
		t.Fatalf("authorize: %v %v", q, err)
	}
	iss, _ := url.Parse(issuer)
	var session *http.Cookie
	for _, c := range robot.Client.Jar.Cookies(iss) {
		if strings.HasSuffix(c.Name, "mcp_session") {
			session = c
		}
	}
	if session == nil {
		t.Fatal("no session cookie after signing in")
	}
	robot.Client.Jar.SetCookies(iss, []*http.Cookie{{Name: "theme", Value: "dark", Path: "/"}})

	get := func(cookies ...string) string {
		t.Helper()
		mu.Lock()
		seen = nil
		mu.Unlock()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/app/page", nil)
		client := http.DefaultClient
		if cookies == nil {
			client = robot.Client // the browser's own Cookie header
		}
		for _, c := range cookies {
			req.Header.Add("Cookie", c)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		mu.Lock()
		defer mu.Unlock()
		if resp.StatusCode != http.StatusNoContent || len(seen) != 1 {
			t.Fatalf("GET /app/page = %d, application saw %d requests; want 204 from the application", resp.StatusCode, len(seen))
		}
		return seen[0]
	}
	v := session.Value
	for _, tt := range []struct {
		name    string
		cookies []string
		want    string
	}{
		{"browser", nil, "theme=dark"},
		{"alone", []string{session.Name + "=" + v}, ""},
		{"padded name", []string{"theme=dark;  " + session.Name + " =" + v + " ;x=1"}, "theme=dark; x=1"},
		{"second header", []string{"theme=dark", session.Name + "=" + v + "; " + session.Name + "=" + v}, "theme=dark"},
		{"quoted value", []string{session.Name + `="` + v + `"; theme=dark`}, "theme=dark"},
		// Not the issuer's: passed as they came.
		{"other names", []string{"x" + session.Name + "=" + v + "; " + strings.ToUpper(session.Name) + "=1"}, "x" + session.Name + "=" + v + "; " + strings.ToUpper(session.Name) + "=1"},
	} {
		got := get(tt.cookies...)
		if got != tt.want {
			t.Errorf("%s: the application got Cookie %q, want %q", tt.name, got, tt.want)
		}
	}

	// The issuer still reads the session the browser sends it.
	page, err := robot.Get(ctx, issuer+"/apps")
	if err != nil || page.Status != http.StatusOK || page.URL.Path != "/apps" || page.Form("login") != nil {
		t.Fatalf("GET /apps after the application's requests: err %v; want the signed-in user's page", err)
	}
}
