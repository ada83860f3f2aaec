package e2e

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// stepper is a browser-like HTTP client that does not follow redirects, so
// each step of the flow can be checked.
type stepper struct {
	t       *testing.T
	client  *http.Client
	cookies []*http.Cookie // every Set-Cookie seen
}

func newStepper(t *testing.T) *stepper {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &stepper{t: t, client: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// with returns a stepper sharing s's cookies that reports to t.
func (s *stepper) with(t *testing.T) *stepper {
	return &stepper{t: t, client: s.client}
}

func (s *stepper) do(req *http.Request) *harness.Page {
	s.t.Helper()
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	s.cookies = append(s.cookies, resp.Cookies()...)
	p, err := harness.ReadPage(resp)
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *stepper) get(ctx context.Context, u string) *harness.Page {
	s.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return s.do(req)
}

func (s *stepper) post(ctx context.Context, page *harness.Page, form *harness.Form, extra url.Values) *harness.Page {
	s.t.Helper()
	vals := url.Values{}
	for k, v := range form.Hidden {
		vals[k] = v
	}
	for k, v := range extra {
		vals[k] = v
	}
	action, err := page.URL.Parse(form.Action)
	if err != nil {
		s.t.Fatalf("form action %q: %v", form.Action, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(vals.Encode()))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", page.URL.Scheme+"://"+page.URL.Host)
	return s.do(req)
}

// location returns the redirect target of a 303 answer.
func location(t *testing.T, p *harness.Page, what string) *url.URL {
	t.Helper()
	if p.Status != http.StatusSeeOther {
		t.Fatalf("%s: status %d, want 303; page %.300s", what, p.Status, p.Text())
	}
	loc, err := p.URL.Parse(p.Header.Get("Location"))
	if err != nil || p.Header.Get("Location") == "" {
		t.Fatalf("%s: Location %q: %v", what, p.Header.Get("Location"), err)
	}
	return loc
}

// follow GETs u and any same-issuer 303s until a page that is not a
// redirect.
func (s *stepper) follow(ctx context.Context, u *url.URL, issuerHost string) *harness.Page {
	s.t.Helper()
	for range 5 {
		if u.Host != issuerHost {
			s.t.Fatalf("redirect left the issuer to %s", redact(u.String()))
		}
		p := s.get(ctx, u.String())
		if p.Status != http.StatusSeeOther {
			return p
		}
		u = location(s.t, p, "follow "+u.String())
	}
	s.t.Fatalf("too many redirects from %s", u)
	return nil
}

// TestCodeFlowPages walks the authorization code flow through the real
// login and consent pages over HTTP, step by step, per the page contract.
func TestCodeFlowPages(t *testing.T) {
	e := setup(t)
	ctx := ctxTimeout(t, 30*time.Second)
	cfg := e.oauthConfig(scopeRead, scopeWrite)
	ar := harness.NewAuthRequest(cfg, e.legacy)
	s := newStepper(t)
	host := strings.TrimPrefix(e.issuer, "http://")

	// 1. /authorize without a session: 303 to the login page.
	loginURL := location(t, s.get(ctx, ar.URL), "authorize")
	if loginURL.Host != host || loginURL.Path != "/login" {
		t.Errorf("authorize redirected to %s, want the login page %s/login", loginURL, e.issuer)
	}
	login := s.follow(ctx, loginURL, host)
	if login.Status != http.StatusOK {
		t.Fatalf("login page: status %d", login.Status)
	}
	lf := login.Form("login")
	if lf == nil {
		t.Fatalf("login page has no form#login: %.300s", login.Text())
	}
	if lf.Method != "post" {
		t.Errorf("login form method = %q, want post", lf.Method)
	}
	for _, f := range []string{"username", "password"} {
		if !slices.Contains(lf.Inputs, f) {
			t.Errorf("login form inputs = %q, want %q", lf.Inputs, f)
		}
	}
	if len(lf.Hidden) == 0 {
		t.Errorf("login form has no hidden inputs (CSRF token, request reference)")
	}

	// 2. A wrong password: the login page again, no redirect anywhere.
	bad := s.post(ctx, login, lf, url.Values{"username": {username}, "password": {"not it"}})
	if bad.Status == http.StatusSeeOther {
		t.Fatalf("wrong password answered 303 to %s", bad.Header.Get("Location"))
	}
	if bad.Form("login") == nil {
		t.Errorf("wrong password: status %d, page without the login form: %.300s", bad.Status, bad.Text())
	} else {
		login, lf = bad, bad.Form("login") // a fresh CSRF token may come with it
	}

	// 3. The right password: 303 back to the authorize flow, then consent.
	back := location(t, s.post(ctx, login, lf, url.Values{"username": {username}, "password": {password}}), "login")
	if back.Host != host {
		t.Fatalf("login redirected off the issuer to %s", back)
	}
	consent := s.follow(ctx, back, host)
	cf := consent.Form("consent")
	if cf == nil {
		t.Fatalf("after login: status %d at %s, no form#consent: %.300s", consent.Status, consent.URL, consent.Text())
	}
	if cf.Method != "post" {
		t.Errorf("consent form method = %q, want post", cf.Method)
	}
	for _, v := range []string{"approve", "deny"} {
		if !slices.Contains(cf.Buttons, harness.Button{Name: "decision", Value: v}) {
			t.Errorf("consent buttons = %+v, want decision=%s", cf.Buttons, v)
		}
	}
	text := consent.Text()
	for _, want := range []string{clientName, "127.0.0.1", scopeRead, scopeWrite, e.legacy} {
		if !strings.Contains(text, want) {
			t.Errorf("consent page lacks %q: %s", want, text)
		}
	}

	// 4. Approve: 303 to the client with code, state and iss.
	cb := location(t, s.post(ctx, consent, cf, url.Values{"decision": {"approve"}}), "consent")
	if !strings.HasPrefix(cb.String(), redirectURI+"?") {
		t.Fatalf("consent redirected to %s, want %s", cb, redirectURI)
	}
	q := cb.Query()
	if q.Get("state") != ar.State || q.Get("iss") != e.issuer || q.Get("code") == "" {
		t.Fatalf("authorization response %q: want code, state %q, iss %q", q.Encode(), ar.State, e.issuer)
	}

	tok, err := ar.Exchange(ctx, cfg, q.Get("code"))
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	claims, err := harness.Claims(tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if aud := harness.Audience(claims); !slices.Equal(aud, []string{e.legacy}) {
		t.Errorf("aud = %q, want [%q]", aud, e.legacy)
	}
	if _, err := ar.Exchange(ctx, cfg, q.Get("code")); err == nil {
		t.Errorf("second Exchange of the same code succeeded, want invalid_grant")
	}

	// Cookies over plain http on loopback: no Secure/__Host- (the jar
	// would not send them back), and never readable by scripts.
	if len(s.cookies) == 0 {
		t.Errorf("the flow set no cookies")
	}
	for _, c := range s.cookies {
		if c.MaxAge < 0 {
			continue // deletion
		}
		if !c.HttpOnly {
			t.Errorf("cookie %s is not HttpOnly", c.Name)
		}
		if c.Secure || strings.HasPrefix(c.Name, "__Host-") {
			t.Errorf("cookie %s: Secure=%v over http, want plain cookies for an http loopback issuer", c.Name, c.Secure)
		}
		if c.SameSite != http.SameSiteLaxMode && c.SameSite != http.SameSiteStrictMode {
			t.Errorf("cookie %s: SameSite=%v, want Lax or Strict", c.Name, c.SameSite)
		}
	}
}

// TestConsentTamper changes each hidden input of the consent form in turn
// (CSRF token, request reference, shown scopes, ...). A change must be
// refused, or, where the page's own data can only narrow the grant (the
// scope list shown), the token must hold no scope the page did not show.
func TestConsentTamper(t *testing.T) {
	e := setup(t)
	ctx := ctxTimeout(t, 60*time.Second)
	host := strings.TrimPrefix(e.issuer, "http://")
	s := newStepper(t)

	// consentPage starts a flow for scopes and returns its consent page.
	consentPage := func(t *testing.T, resource string, scopes ...string) (*harness.Page, harness.AuthRequest, *oauth2.Config) {
		t.Helper()
		s := s.with(t)
		cfg := e.oauthConfig(scopes...)
		ar := harness.NewAuthRequest(cfg, resource)
		p := s.follow(ctx, location(t, s.get(ctx, ar.URL), "authorize"), host)
		if lf := p.Form("login"); lf != nil {
			back := location(t, s.post(ctx, p, lf, url.Values{"username": {username}, "password": {password}}), "login")
			p = s.follow(ctx, back, host)
		}
		if p.Form("consent") == nil {
			t.Fatalf("no consent form: status %d: %.300s", p.Status, p.Text())
		}
		return p, ar, cfg
	}
	// submit posts the consent form with one hidden input replaced and
	// returns the scopes granted, or nil when the issuer refused.
	submit := func(t *testing.T, p *harness.Page, ar harness.AuthRequest, cfg *oauth2.Config, name, value string) []string {
		t.Helper()
		s := s.with(t)
		f := *p.Form("consent")
		f.Hidden = url.Values{}
		for k, v := range p.Form("consent").Hidden {
			f.Hidden[k] = v
		}
		f.Hidden.Set(name, value)
		got := s.post(ctx, p, &f, url.Values{"decision": {"approve"}})
		if got.Status != http.StatusSeeOther {
			if name == "resource" && got.Status == http.StatusOK {
				// The resource field names what the page showed; a
				// mismatch shows the consent page again, naming the
				// resource the request means (ed4f73e): no code.
				again := got.Form("consent")
				if again == nil || again.Hidden.Get("resource") != p.Form("consent").Hidden.Get("resource") {
					t.Errorf("consent with resource altered: status 200 without the consent page naming %s again: %.200s", p.Form("consent").Hidden.Get("resource"), got.Text())
				}
				return nil
			}
			if got.Status < 400 {
				t.Errorf("consent with %s altered: status %d, want 4xx or a redirect: %.200s", name, got.Status, got.Text())
			}
			return nil
		}
		loc := location(t, got, "consent")
		if !strings.HasPrefix(loc.String(), redirectURI+"?") {
			t.Fatalf("consent with %s altered redirected to %s", name, redact(loc.String()))
		}
		if loc.Query().Get("code") == "" {
			return nil // an error response to the client is a refusal too
		}
		tok, err := ar.Exchange(ctx, cfg, loc.Query().Get("code"))
		if err != nil {
			t.Fatalf("Exchange after consent with %s altered: %v", name, err)
		}
		claims, err := harness.Claims(tok.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		granted, _ := claims["scope"].(string)
		return strings.Fields(granted)
	}

	first, _, _ := consentPage(t, e.legacy, scopeRead, scopeWrite)
	for name := range first.Form("consent").Hidden {
		t.Run(name, func(t *testing.T) {
			p, ar, cfg := consentPage(t, e.legacy, scopeRead, scopeWrite)
			granted := submit(t, p, ar, cfg, name, p.Form("consent").Hidden.Get(name)+"x")
			switch {
			case granted == nil: // refused
			case name == "scope":
				// The page's scope list may only narrow the grant.
				for _, sc := range granted {
					if sc != scopeRead && sc != scopeWrite {
						t.Errorf("consent with the scope list altered granted %q, which the page did not show", sc)
					}
				}
			default:
				t.Errorf("consent with %s altered was accepted and granted %q, want a refusal", name, granted)
			}
		})
	}

	// The page showed notes:read only; a form that claims more must not
	// widen the grant. (The other resource: no earlier consent covers it.)
	t.Run("widen", func(t *testing.T) {
		p, ar, cfg := consentPage(t, e.modern, scopeRead)
		if _, ok := p.Form("consent").Hidden["scope"]; !ok {
			t.Skip("the consent form carries no scope list")
		}
		granted := submit(t, p, ar, cfg, "scope", strings.Join([]string{scopeRead, scopeWrite, scopeAdmin}, " "))
		if !slices.Equal(granted, []string{scopeRead}) {
			t.Errorf("consent for %s with a widened scope list granted %q, want [%s]", scopeRead, granted, scopeRead)
		}
	})
}

// redact hides the code in a redirect URL for messages.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable)"
	}
	q := p.Query()
	if q.Has("code") {
		q.Set("code", "REDACTED")
	}
	p.RawQuery = q.Encode()
	return p.String()
}
