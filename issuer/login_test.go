package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// startLogin runs /authorize in a fresh browser and returns the browser,
// the login page URL and its form.
func (e *testEnv) startLogin(t *testing.T) (*http.Client, string, form) {
	t.Helper()
	c := e.browser()
	resp, err := c.Get(e.url(pathAuthorize, authParams(testChallenge)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, pathLogin+"?req=") {
		t.Fatalf("authorize without session = %d %q, want 303 to the login page", resp.StatusCode, loc)
	}
	page := e.srv.URL + loc
	resp, err = c.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	f := findForm(t, body, "login")
	if f.hidden.Get(csrfField) == "" || f.hidden.Get("req") == "" || !strings.Contains(body, `name="username"`) || !strings.Contains(body, `name="password"`) {
		t.Fatalf("login form lacks fields: %s", body)
	}
	if !strings.Contains(body, "Test App") {
		t.Errorf("login page does not name the client")
	}
	return c, page, f
}

// signIn signs user in with c through the sign-in page at page (a URL)
// and returns the answer to its form.
func (e *testEnv) signIn(t *testing.T, c *http.Client, page, user string) *http.Response {
	t.Helper()
	resp, err := c.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	f := findForm(t, readBody(t, resp), "login")
	v := f.hidden
	v.Set("username", user)
	v.Set("password", bPassword)
	resp, _ = e.postPage(t, c, f.action, v)
	return resp
}

// post submits a form with the issuer's Origin.
func (e *testEnv) postPage(t *testing.T, c *http.Client, action string, v url.Values) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+action, strings.NewReader(v.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.srv.URL)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, readBody(t, resp)
}

func TestLoginFailuresAreGenericAndSlowedDown(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c, _, f := e.startLogin(t)
	try := func(user, pw string) (*http.Response, string) {
		v := f.hidden
		v.Set("username", user)
		v.Set("password", pw)
		return e.postPage(t, c, f.action, v)
	}
	for _, tt := range []struct{ name, user, pw string }{
		{"wrong password", bUser, "wrong"},
		{"unknown user", "mallory", "wrong"},
	} {
		resp, body := try(tt.user, tt.pw)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Invalid username or password.") {
			t.Errorf("%s: status %d, want 401 with the generic message; body %s", tt.name, resp.StatusCode, body)
		}
		if resp.Header.Get("Location") != "" {
			t.Errorf("%s: redirected to %q", tt.name, resp.Header.Get("Location"))
		}
	}
	// Keep failing for alice until the limiter steps in.
	var limited *http.Response
	var limitedBody string
	for n := 0; n < 10 && limited == nil; n++ {
		if resp, body := try(bUser, "wrong"); resp.StatusCode == http.StatusTooManyRequests {
			limited, limitedBody = resp, body
		}
	}
	if limited == nil || limited.Header.Get("Retry-After") == "" {
		t.Fatalf("no 429 with Retry-After after repeated failures")
	}
	// The page says how long, in words that read right for one second too.
	wait := "Wait " + limited.Header.Get("Retry-After") + " seconds and try again."
	if limited.Header.Get("Retry-After") == "1" {
		wait = "Wait 1 second and try again."
	}
	if !strings.Contains(limitedBody, wait) {
		t.Errorf("throttled page does not say %q: %s", wait, limitedBody)
	}
	// Even the right password waits while slowed down.
	if resp, _ := try(bUser, bPassword); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("right password while slowed: status %d, want 429", resp.StatusCode)
	}
	e.clock.Advance(10 * time.Minute)
	resp, _ := try(bUser, bPassword)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), pathConsent+"?req=") {
		t.Fatalf("login after waiting = %d %q, want 303 to consent", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// loginFrom signs in at the login page (no pending request) as if from
// remote, through the issuer's own handler (httptest servers are all on
// one address), and returns the status and Retry-After of the POST.
func (e *testEnv) loginFrom(t *testing.T, remote, user, password string) (int, time.Duration) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, e.url(pathLogin, nil), nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	e.iss.ServeHTTP(w, r)
	f := findForm(t, w.Body.String(), "login")
	v := f.hidden
	v.Set("username", user)
	v.Set("password", password)
	r = httptest.NewRequest(http.MethodPost, e.srv.URL+f.action, strings.NewReader(v.Encode()))
	r.RemoteAddr = remote
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", e.srv.URL)
	for _, ck := range w.Result().Cookies() {
		r.AddCookie(ck)
	}
	w = httptest.NewRecorder()
	e.iss.ServeHTTP(w, r)
	secs, _ := strconv.Atoi(w.Header().Get("Retry-After"))
	return w.Code, time.Duration(secs) * time.Second
}

// TestLoginAttackerCannotLockOutUser: failing for alice from one address,
// for as long as the attacker likes, slows that address down but never
// locks alice out at hers; her attempts are only slowed, by at most
// limitMaxSlow.
func TestLoginAttackerCannotLockOutUser(t *testing.T) {
	e := newBrowserEnv(t, nil)
	var mu sync.Mutex
	var slept []time.Duration
	e.iss.limiter.sleep = func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		slept = append(slept, d)
		return nil
	}
	const attacker, alice = "203.0.113.9:4000", "198.51.100.7:4000"
	// The attacker guesses for 6 hours, each time its block ends; alice
	// signs in once an hour, right after one of its failures.
	start := e.clock.Now()
	guesses, nextAlice := 0, start.Add(30*time.Minute)
	for e.clock.Now().Sub(start) < 6*time.Hour {
		switch code, retry := e.loginFrom(t, attacker, bUser, "wrong"); code {
		case http.StatusUnauthorized:
			guesses++
		case http.StatusTooManyRequests:
			e.clock.Advance(retry)
			continue
		default:
			t.Fatalf("attacker's attempt = %d, want 401 or 429", code)
		}
		if !e.clock.Now().Before(nextAlice) {
			if code, _ := e.loginFrom(t, alice, bUser, bPassword); code != http.StatusSeeOther {
				t.Fatalf("alice at her own address %v into the attack = %d, want 303", e.clock.Now().Sub(start), code)
			}
			nextAlice = nextAlice.Add(time.Hour)
		}
		e.clock.Advance(time.Second)
	}
	// Unthrottled, one guess a second would be 21600; the blocks settle
	// near one guess in 100 seconds.
	if guesses > 6*60 {
		t.Errorf("attacker's guesses in 6 hours from one address = %d, want fewer than one a minute", guesses)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(slept) == 0 {
		t.Errorf("alice's attempts were never slowed, want the account's failures to slow them")
	}
	for _, d := range slept {
		if d <= 0 || d > limitMaxSlow {
			t.Errorf("slowed by %v, want (0, %v]", d, limitMaxSlow)
		}
	}
}

// TestLoginLimiterHidesUnknownNames: the brute-force limiter answers a
// name that is no account as it answers a user's, so its blocks and
// slow-downs do not tell which usernames exist: past limitFreePair + 1
// wrong passwords from one address both are refused with 429, and past
// limitFreeAccount from anywhere both are slowed.
func TestLoginLimiterHidesUnknownNames(t *testing.T) {
	for _, name := range []string{bUser, "mallory", "carol"} { // a user, no account, a disabled user
		t.Run(name, func(t *testing.T) {
			e := newBrowserEnv(t, func(c *Config) {
				c.Users = append(c.Users, User{Username: "carol", PasswordHash: c.Users[0].PasswordHash, Disabled: true})
			})
			var slept []time.Duration
			e.iss.limiter.sleep = func(_ context.Context, d time.Duration) error {
				slept = append(slept, d)
				return nil
			}
			var codes []int
			for range limitFreePair + 2 {
				code, _ := e.loginFrom(t, "203.0.113.9:4000", name, "wrong")
				codes = append(codes, code)
			}
			want := []int{401, 401, 401, 401, 401, 401, 429}
			if !slices.Equal(codes, want) {
				t.Errorf("wrong passwords from one address = %v, want %v", codes, want)
			}
			for n := range limitFreeAccount + 1 {
				e.loginFrom(t, fmt.Sprintf("198.51.100.%d:4000", n), name, "wrong")
			}
			if len(slept) == 0 {
				t.Errorf("attempts after %d failures from many addresses were not slowed", limitFreeAccount+limitFreePair)
			}
		})
	}
}

// TestLoginTimingHidesCheaperHashes: a name that is no account is checked
// against a dummy hash of the highest bcrypt cost among the users, so a
// user whose hash is cheaper (one added through the admin API, at
// bcrypt.DefaultCost, beside Caddyfile users hashed by `caddy
// hash-password` at 14) answered in a fraction of that time, and one
// request told that the name exists. Such a user's failed check now
// waits out the difference; one at the highest cost, an unknown name and
// a success do not wait.
func TestLoginTimingHidesCheaperHashes(t *testing.T) {
	costly, err := bcrypt.GenerateFromPassword([]byte(bPassword), bcrypt.MinCost+3)
	if err != nil {
		t.Fatal(err)
	}
	e := newBrowserEnv(t, func(c *Config) {
		c.Users = append(c.Users, User{Username: "erin", PasswordHash: string(costly), Groups: []string{"staff"}})
	})
	var waited []time.Duration
	e.iss.dir.wait = func(_ context.Context, d time.Duration) error {
		waited = append(waited, d)
		return nil
	}
	for n, tt := range []struct {
		name, password string
		code           int
		wait           bool
	}{
		{"mallory", "wrong", http.StatusUnauthorized, false}, // the dummy, at the highest cost
		{"erin", "wrong", http.StatusUnauthorized, false},    // the highest cost
		{bUser, "wrong", http.StatusUnauthorized, true},      // bcrypt.MinCost
		{bUser, bPassword, http.StatusSeeOther, false},       // a success tells more than its time
	} {
		waited = nil
		if code, _ := e.loginFrom(t, fmt.Sprintf("198.51.100.%d:4000", n), tt.name, tt.password); code != tt.code {
			t.Fatalf("login %s = %d, want %d", tt.name, code, tt.code)
		}
		if got := len(waited) == 1 && waited[0] > 0; got != tt.wait || len(waited) > 1 {
			t.Errorf("login %s waited %v, want a wait: %v", tt.name, waited, tt.wait)
		}
	}
}

func TestLoginRotatesSessionCookie(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c, page, f := e.startLogin(t)
	u, _ := url.Parse(page)
	before := c.Jar.Cookies(u)
	if len(before) != 1 || before[0].Name != "mcp_session" {
		t.Fatalf("cookies before login = %v, want one mcp_session", before)
	}
	v := f.hidden
	v.Set("username", bUser)
	v.Set("password", bPassword)
	resp, _ := e.postPage(t, c, f.action, v)
	var set *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "mcp_session" {
			set = ck
		}
	}
	if set == nil || !set.HttpOnly || set.SameSite != http.SameSiteLaxMode || set.Path != "/" || set.Secure {
		t.Fatalf("session cookie = %+v, want HttpOnly, SameSite=Lax, Path=/, not Secure on http", set)
	}
	if set.Value == before[0].Value {
		t.Errorf("session id not replaced at login")
	}
	// The old session is gone from the store.
	var s session
	if err := e.get(bucketSessions, tokenKey(before[0].Value), &s); err == nil {
		t.Errorf("pre-login session still stored")
	}
}

func TestSessionCookieNameOnHTTPS(t *testing.T) {
	e := newBrowserEnv(t, nil)
	e.iss.sessions.secure = true // as for an https issuer; only the cookie attributes are under test
	if got := e.iss.sessions.cookieName(); got != "__Host-mcp_session" {
		t.Errorf("cookieName() = %q, want __Host-mcp_session", got)
	}
	rec := httptest.NewRecorder()
	e.iss.sessions.setCookie(rec, "v", e.clock.Now().Add(time.Hour))
	ck := rec.Result().Cookies()
	if len(ck) != 1 || !ck[0].Secure || ck[0].Path != "/" || ck[0].Domain != "" {
		t.Errorf("cookie = %+v, want Secure, Path=/, no Domain", ck)
	}
}

// TestCSRFTokenMaskedPerPage: the session's CSRF token is in every page
// masked with a fresh pad, so that no two pages hold the same bytes for
// it: a page compressed next to text an attacker chooses (a
// self-registered client's name, `encode` in a `route` before
// mcp_issuer or a CDN in front) does not give it away by its length
// (BREACH). Every page's value is taken, an older page's too, and the
// session's own token never appears in a page, though it is taken as
// well (a page of 56f3eb5 carries it so during a rolling upgrade).
func TestCSRFTokenMaskedPerPage(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c, page, f := e.startLogin(t)
	resp, err := c.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	f2 := findForm(t, body, "login")
	first, second := f.hidden.Get(csrfField), f2.hidden.Get(csrfField)
	if first == "" || first == second {
		t.Fatalf("two pages of one session carry CSRF values %q and %q, want a fresh mask each", first, second)
	}
	var tokens []string
	err = e.store.View(context.Background(), func(tx store.Tx) error {
		return tx.List(bucketSessions, "", func(_ string, v []byte) error {
			var s session
			if err := json.Unmarshal(v, &s); err != nil {
				return err
			}
			tokens = append(tokens, s.CSRF)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 1 || tokens[0] == "" {
		t.Fatalf("sessions' CSRF tokens = %q, want one", tokens)
	}
	if strings.Contains(body, tokens[0]) {
		t.Errorf("the login page holds the session's CSRF token itself")
	}
	signIn := func(csrf string) int {
		v := url.Values{}
		for k, vs := range f.hidden { // the older page's form
			v[k] = append([]string(nil), vs...)
		}
		if csrf != "" {
			v.Set(csrfField, csrf)
		}
		v.Set("username", bUser)
		v.Set("password", bPassword)
		resp, _ := e.postPage(t, c, f.action, v)
		return resp.StatusCode
	}
	if got := signIn(""); got != http.StatusSeeOther {
		t.Errorf("sign-in with the first page's CSRF value = %d, want 303", got)
	}
	c2, _, f3 := e.startLogin(t)
	c, f = c2, f3
	var raw string
	_ = e.store.View(context.Background(), func(tx store.Tx) error {
		return tx.List(bucketSessions, "", func(_ string, v []byte) error {
			var s session
			if json.Unmarshal(v, &s) == nil && s.User == "" {
				raw = s.CSRF
			}
			return nil
		})
	})
	if raw == "" {
		t.Fatal("no session awaiting sign-in")
	}
	if got := signIn(raw); got != http.StatusSeeOther {
		t.Errorf("sign-in with the session's token unmasked = %d, want 303", got)
	}

	// The other pages of a signed-in session: consent, connected apps
	// and the sign-out confirmation, each loaded twice.
	c = e.browser()
	p := authParams(testChallenge)
	p.Set("scope", "openid files:read offline_access")
	resp, err = c.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp = e.signIn(t, c, e.srv.URL+resp.Header.Get("Location"), bUser)
	consent := resp.Header.Get("Location")
	if !strings.HasPrefix(consent, pathConsent) {
		t.Fatalf("after sign-in: Location %q, want the consent step", consent)
	}
	var raws []string // every session's token, this browser's among them
	_ = e.store.View(context.Background(), func(tx store.Tx) error {
		return tx.List(bucketSessions, "", func(_ string, v []byte) error {
			var s session
			if json.Unmarshal(v, &s) == nil && s.CSRF != "" {
				raws = append(raws, s.CSRF)
			}
			return nil
		})
	})
	if len(raws) == 0 {
		t.Fatal("no session")
	}
	csrfValue := regexp.MustCompile(`name="csrf_token" value="([^"]*)"`)
	load := func(page string) (string, []string) {
		t.Helper()
		resp, err := c.Get(e.srv.URL + page)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		var vals []string
		for _, m := range csrfValue.FindAllStringSubmatch(body, -1) {
			vals = append(vals, m[1])
		}
		if resp.StatusCode != http.StatusOK || len(vals) == 0 {
			t.Fatalf("GET %s = %d with CSRF values %q, want 200 with a form", page, resp.StatusCode, vals)
		}
		return body, vals
	}
	check := func(page string) {
		t.Helper()
		body1, first := load(page)
		body2, second := load(page)
		for _, raw := range raws {
			if strings.Contains(body1+body2, raw) {
				t.Errorf("%s holds the session's CSRF token itself", page)
			}
		}
		if first[0] == second[0] {
			t.Errorf("%s loaded twice carries CSRF value %q both times, want a fresh mask each", page, first[0])
		}
	}
	check(consent)
	body, _ = load(consent)
	cf := findForm(t, body, "consent")
	cf.hidden.Set("decision", "approve")
	if resp, _ := e.postPage(t, c, cf.action, cf.hidden); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("approve = %d, want 303", resp.StatusCode)
	}
	check(pathApps)
	check(pathLogout)
}

func TestCSRFRequired(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c, _, f := e.startLogin(t)
	sessions := e.count(bucketSessions)
	good := func() url.Values {
		v := url.Values{}
		for k, vs := range f.hidden {
			v[k] = append([]string(nil), vs...)
		}
		v.Set("username", bUser)
		v.Set("password", bPassword)
		return v
	}
	tests := []struct {
		name   string
		edit   func(url.Values)
		origin string
	}{
		{"missing token", func(v url.Values) { v.Del(csrfField) }, ""},
		{"wrong token", func(v url.Values) { v.Set(csrfField, "x"+v.Get(csrfField)) }, ""},
		{"repeated token", func(v url.Values) { v.Add(csrfField, "other") }, ""},
		{"cross-site origin", func(url.Values) {}, "https://evil.example"},
		{"null origin without fetch metadata", func(url.Values) {}, "null"},
	}
	for _, tt := range tests {
		t.Run("login "+tt.name, func(t *testing.T) {
			v := good()
			tt.edit(v)
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+f.action, strings.NewReader(v.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
				t.Fatalf("status %d cookies %v, want 403 and no cookie", resp.StatusCode, resp.Cookies())
			}
			if n := e.count(bucketSessions); n != sessions {
				t.Errorf("sessions = %d, want %d (nothing written)", n, sessions)
			}
		})
	}
	// Another browser's token does not work for this one.
	t.Run("login token of another browser", func(t *testing.T) {
		_, _, f2 := e.startLogin(t)
		v := good()
		v.Set(csrfField, f2.hidden.Get(csrfField))
		resp, _ := e.postPage(t, c, f.action, v)
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})

	// Log in properly and reach the consent form.
	resp, _ := e.postPage(t, c, f.action, good())
	resp, err := c.Get(e.srv.URL + resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	cf := findForm(t, readBody(t, resp), "consent")
	pending := e.count(bucketPending)
	for _, tt := range tests {
		t.Run("consent "+tt.name, func(t *testing.T) {
			v := url.Values{}
			for k, vs := range cf.hidden {
				v[k] = append([]string(nil), vs...)
			}
			v.Set("decision", "approve")
			tt.edit(v)
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+cf.action, strings.NewReader(v.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if tt.origin != "" {
				req.Header.Set("Origin", tt.origin)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Location") != "" {
				t.Fatalf("status %d Location %q, want 403 and no redirect", resp.StatusCode, resp.Header.Get("Location"))
			}
			if e.count(bucketCodes) != 0 || e.count(bucketConsents) != 0 || e.count(bucketPending) != pending {
				t.Errorf("state changed: codes %d consents %d pending %d, want 0 0 %d",
					e.count(bucketCodes), e.count(bucketConsents), e.count(bucketPending), pending)
			}
		})
	}

	// The sign-in form shown before the sign-in (another tab's) carries
	// the token of the session it replaced: the same user's goes on to
	// the consent page, as a GET of it would, without a new session;
	// another account's, or one from another site, is still refused.
	sessions = e.count(bucketSessions)
	stale := []struct {
		name, user, origin string
		want               int
	}{
		{"stale sign-in form, same user", bUser, "", http.StatusSeeOther},
		{"stale sign-in form, same user, same origin", bUser, e.srv.URL, http.StatusSeeOther},
		{"stale sign-in form, another account", "mallory", "", http.StatusForbidden},
		{"stale sign-in form, no user name", "", "", http.StatusForbidden},
		{"stale sign-in form, cross-site origin", bUser, "https://evil.example", http.StatusForbidden},
		{"stale sign-in form, cross-site fetch", bUser, "cross-site", http.StatusForbidden},
	}
	for _, tt := range stale {
		t.Run(tt.name, func(t *testing.T) {
			v := good()
			v.Set("username", tt.user)
			v.Set("password", "not checked")
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+f.action, strings.NewReader(v.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			switch tt.origin {
			case "":
			case "cross-site":
				req.Header.Set("Sec-Fetch-Site", "cross-site")
			default:
				req.Header.Set("Origin", tt.origin)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			wantLoc := ""
			if tt.want == http.StatusSeeOther {
				wantLoc = "/consent?req=" + url.QueryEscape(f.hidden.Get("req"))
			}
			if resp.StatusCode != tt.want || resp.Header.Get("Location") != wantLoc || len(resp.Cookies()) != 0 {
				t.Fatalf("status %d Location %q cookies %v, want %d, Location %q and no cookie", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies(), tt.want, wantLoc)
			}
			if n := e.count(bucketSessions); n != sessions {
				t.Errorf("sessions = %d, want %d (nothing written)", n, sessions)
			}
		})
	}
}

func TestLogout(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, authParams(testChallenge)), bRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(e.url(pathLogout, nil))
	if err != nil {
		t.Fatal(err)
	}
	f := findForm(t, readBody(t, resp), "logout")
	// A POST with a wrong token does nothing; one without is a request
	// (RP-Initiated Logout allows POST), which asks again.
	if resp, _ := e.postPage(t, c, f.action, url.Values{csrfField: {"wrong"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logout with a wrong CSRF token: status %d, want 403", resp.StatusCode)
	}
	if resp, body := e.postPage(t, c, f.action, url.Values{}); resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="logout"`) {
		t.Fatalf("logout without CSRF: status %d, want 200 and the confirmation again: %s", resp.StatusCode, body)
	}
	if n := e.count(bucketSessions); n != 1 {
		t.Fatalf("sessions after logouts without CSRF = %d, want 1", n)
	}
	resp, body := e.postPage(t, c, f.action, f.hidden)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "signed out") {
		t.Fatalf("logout: status %d body %s", resp.StatusCode, body)
	}
	if n := e.count(bucketSessions); n != 0 {
		t.Errorf("sessions after logout = %d, want 0", n)
	}
	// Authorizing again asks for login.
	resp, err = c.Get(e.url(pathAuthorize, authParams(testChallenge)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pathLogin) {
		t.Errorf("authorize after logout: Location %q, want login", loc)
	}
}

func TestPageHeaders(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c, page, _ := e.startLogin(t)
	resp, err := c.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	html := readBody(t, resp)
	// The stylesheet's URL changes with it (review s17-fresh3 F2): it is
	// cached for an hour, by shared caches too, and the one cached before
	// an upgrade would leave the consent page without what its Allow
	// button's arming (TestConsentAllowArmsLate) needs.
	css, _ := assetFS.ReadFile("assets/style.css")
	sum := sha256.Sum256(css)
	if href := `href="` + pathAssets + "style.css?v=" + hex.EncodeToString(sum[:6]) + `"`; !strings.Contains(html, href) {
		t.Errorf("page does not link the stylesheet by its version: want %s in %s", href, html)
	}
	h := resp.Header
	want := map[string]string{
		"X-Frame-Options":        "DENY",
		"Referrer-Policy":        "same-origin",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
	}
	for k, v := range want {
		if h.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, h.Get(k), v)
		}
	}
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self' http://127.0.0.1"} {
		if !strings.Contains(csp, d) {
			t.Errorf("CSP %q lacks %q", csp, d)
		}
	}
	// The stylesheet is served.
	resp, err = c.Get(e.url(pathAssets+"style.css", nil))
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") || !strings.Contains(body, "font") {
		t.Errorf("style.css: status %d type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = c.Get(e.url(pathAssets+"../issuer.go", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("asset path traversal: status %d, want 404", resp.StatusCode)
	}
}

// TestPagesHSTS: an https issuer's answers carry Strict-Transport-Security,
// so that after one visit a network attacker cannot strip TLS from the
// sign-in page (and read the password typed into it); a policy the
// operator set in front of the issuer is kept; an http (loopback) issuer
// sends none (review s17-pages F1).
func TestPagesHSTS(t *testing.T) {
	e := newBrowserEnv(t, func(c *Config) { c.Issuer = "https://auth.example.com" })
	for _, path := range []string{pathLogin, pathLogout, pathAuthorize, pathToken, "/.well-known/oauth-authorization-server"} {
		rec := httptest.NewRecorder()
		e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://auth.example.com"+path, nil))
		if got := rec.Header().Get("Strict-Transport-Security"); got != "max-age=31536000" {
			t.Errorf("GET %s: Strict-Transport-Security = %q, want max-age=31536000", path, got)
		}
	}
	rec := httptest.NewRecorder()
	rec.Header().Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
	e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://auth.example.com"+pathLogin, nil))
	if got := rec.Header().Get("Strict-Transport-Security"); got != "max-age=63072000; includeSubDomains" {
		t.Errorf("operator's policy replaced: %q", got)
	}
	plain := newBrowserEnv(t, nil)
	resp, err := http.Get(plain.url(pathLogin, nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Strict-Transport-Security"); got != "" {
		t.Errorf("http issuer: Strict-Transport-Security = %q, want none", got)
	}
}

func TestCSPSource(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://127.0.0.1:5000/cb", "http://127.0.0.1:5000"},
		{"https://app.example.com/cb?x=1", "https://app.example.com"},
		// Invalid in a host-source, and ignored; never a wildcard
		// (TestIPv6LoopbackFormActionNamesNoOtherHost).
		{"http://[::1]:3000/cb", "http://[::1]:3000"},
		{"http://[::1]/cb", "http://[::1]"},
		{"https://[2001:db8::1]/cb", "https://[2001:db8::1]"},
		{"https://a*b.example/cb", ""},
		{"com.example.app:/cb", "com.example.app:"},
		{"https://a.example;script-src *", ""},
	}
	for _, tt := range tests {
		if got := cspSource(tt.in); got != tt.want {
			t.Errorf("cspSource(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCheckCSRFOrigin(t *testing.T) {
	e := newBrowserEnv(t, nil)
	s := &session{CSRF: "tok"}
	tests := []struct {
		origin, site string
		want         bool
	}{
		{"", "", true},
		{e.srv.URL, "same-origin", true},
		// Scheme and host are case-insensitive (TestSignInIssuerHostNotLowercase).
		{strings.ToUpper(e.srv.URL), "same-origin", true},
		// Chromium sends Origin: null for same-origin posts under some
		// referrer policies; Fetch Metadata vouches for them.
		{"null", "same-origin", true},
		{"null", "", false},
		{"null", "cross-site", false},
		{"https://evil.example", "same-origin", false},
		{e.srv.URL, "cross-site", false},
	}
	for _, tt := range tests {
		checkOrigin(t, e.iss.sessions, s, tt.origin, tt.site, tt.want)
	}
	// An issuer host with capitals and letters that Unicode case folding
	// maps onto ASCII ones: "ſ" (U+017F) folds to "s", but no browser
	// sends it for this origin.
	u, err := url.Parse("https://Issuer.Example:8443")
	if err != nil {
		t.Fatal(err)
	}
	ss := &sessions{origin: webOrigin(u)}
	for _, tt := range []struct {
		origin string
		want   bool
	}{
		{"https://issuer.example:8443", true},
		{"HTTPS://ISSUER.EXAMPLE:8443", true},
		{"https://iſſuer.example:8443", false},
		{"https://issuer.example", false},
	} {
		checkOrigin(t, ss, s, tt.origin, "same-origin", tt.want)
	}
}

func checkOrigin(t *testing.T, ss *sessions, s *session, origin, site string, want bool) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader(csrfField+"=tok"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	if site != "" {
		r.Header.Set("Sec-Fetch-Site", site)
	}
	if err := r.ParseForm(); err != nil {
		t.Fatal(err)
	}
	if got := ss.checkCSRF(r, s); got != want {
		t.Errorf("checkCSRF(Origin %q, Sec-Fetch-Site %q) = %v, want %v", origin, site, got, want)
	}
}

// TestUnknownUserPasswordCost: a login for a missing account checks a
// dummy hash of the highest cost among known users, so it takes as long
// as a wrong password for the slowest real account.
func TestUnknownUserPasswordCost(t *testing.T) {
	e := newBrowserEnv(t, nil) // configured users' hashes have bcrypt.MinCost
	dummyCost := func(i *Issuer) int {
		t.Helper()
		if ok, _ := i.dir.checkPassword(t.Context(), nil, "guess", false); ok {
			t.Fatal("checkPassword(nil) = true")
		}
		c, err := bcrypt.Cost(i.dir.dummy.hash)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := dummyCost(e.iss); c != bcrypt.MinCost {
		t.Errorf("dummy hash cost = %d, want %d (the configured users')", c, bcrypt.MinCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost+2)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.iss.PutUser(t.Context(), User{Username: "dave", PasswordHash: string(h)}); err != nil {
		t.Fatal(err)
	}
	if c := dummyCost(e.iss); c != bcrypt.MinCost+2 {
		t.Errorf("dummy hash cost after adding a cost %d user = %d, want %d", bcrypt.MinCost+2, c, bcrypt.MinCost+2)
	}
	// A new instance on the same store counts the stored users.
	i2, err := New(Config{Issuer: e.srv.URL, Now: e.clock.Now}, e.store)
	if err != nil {
		t.Fatal(err)
	}
	if c := dummyCost(i2); c != bcrypt.MinCost+2 {
		t.Errorf("dummy hash cost of a new instance = %d, want %d (the stored user's)", c, bcrypt.MinCost+2)
	}
}

// TestLoginTimingPadHoldsItsSlot: the wait a cheaper hash's failed check
// pads with is spent as the dummy's check is, in its slot of the hash
// gate and whether or not the caller is still there. Waited outside the
// gate, or cut short when the caller went away, it left the slot (and the
// attempt's place in flight) free long before an unknown name's check
// did: N wrong passwords for a name, sent at once and dropped, then a
// probe that got a slot at once or waited told that the name exists
// (review s17-fresh F1).
func TestLoginTimingPadHoldsItsSlot(t *testing.T) {
	costly, err := bcrypt.GenerateFromPassword([]byte(bPassword), bcrypt.MinCost+3)
	if err != nil {
		t.Fatal(err)
	}
	e := newBrowserEnv(t, func(c *Config) {
		c.Users = append(c.Users, User{Username: "erin", PasswordHash: string(costly), Groups: []string{"staff"}})
	})
	u, err := e.iss.dir.lookupUser(context.Background(), bUser)
	if err != nil {
		t.Fatal(err)
	}
	var waits, outside, cut int
	e.iss.dir.wait = func(ctx context.Context, d time.Duration) error {
		waits++
		if len(e.iss.hashes.slots) == 0 {
			outside++
		}
		if ctx.Err() != nil {
			cut++
		}
		return nil
	}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := e.iss.dir.checkPassword(gone, u, "wrong", false); ok || err != nil {
		t.Fatalf("checkPassword = %v, %v; want a failed check", ok, err)
	}
	if waits != 1 || outside != 0 || cut != 0 {
		t.Errorf("pads = %d, outside the gate = %d, cut short with the caller = %d; want 1, 0, 0", waits, outside, cut)
	}
}

// TestLoginTimingLearnsCostlierHashes: a user whose hash costs more than
// the dummy's, stored by another instance on a shared store (its admin
// API noted the cost there only), raises the dummy's cost at its first
// check here: otherwise each wrong password for that name took longer
// than any unknown name's, which told that it exists (review s17-fresh
// F2).
func TestLoginTimingLearnsCostlierHashes(t *testing.T) {
	e := newBrowserEnv(t, nil)
	cost := bcrypt.MinCost + 4
	h, err := bcrypt.GenerateFromPassword([]byte(bPassword), cost)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// As another instance's AddUser stores it.
	if err := e.iss.store.Update(ctx, func(tx store.Tx) error {
		return usersIn(tx).put(&User{Username: "frank", PasswordHash: string(h)})
	}); err != nil {
		t.Fatal(err)
	}
	if code, _ := e.loginFrom(t, "198.51.100.7:4000", "frank", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("login frank = %d, want 401", code)
	}
	e.iss.dir.dummy.mu.Lock()
	got := e.iss.dir.dummy.cost
	e.iss.dir.dummy.mu.Unlock()
	if got != cost {
		t.Errorf("dummy cost after a check of a cost-%d hash = %d, want %d", cost, got, cost)
	}
}

// costlyHash is a well-formed bcrypt hash of cost, made up: making one
// of cost 20 takes about a minute.
func costlyHash(cost int) string {
	return fmt.Sprintf("$2a$%02d$", cost) + strings.Repeat("a", 53)
}

// TestPasswordHashCostBounded: a bcrypt hash costlier than
// MaxPasswordCost is refused where one is given (the admin API,
// configuration: TestAdminUsers, TestConfigValidation), never hashed
// (HashPassword), and, stored by an earlier version, never run: a login
// under that name fails at once and the dummy that unknown names are
// checked against does not learn its cost, which would make every
// unknown name's login hold a slot of the hash gate for a minute.
func TestPasswordHashCostBounded(t *testing.T) {
	for _, tt := range []struct {
		cost    int
		wantErr string
	}{
		{bcrypt.MinCost, ""},
		{14, ""},
		{MaxPasswordCost, ""},
		{MaxPasswordCost + 1, "bcrypt cost 17 is above the most accepted, 16"},
		{20, "bcrypt cost 20 is above the most accepted, 16"},
		{bcrypt.MaxCost, "bcrypt cost 31 is above"},
	} {
		err := CheckPasswordHash(costlyHash(tt.cost))
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("CheckPasswordHash(cost %d) = %v, want %q", tt.cost, err, tt.wantErr)
		}
		if tt.wantErr != "" {
			if err := CheckSecretHash(costlyHash(tt.cost)); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("CheckSecretHash(cost %d) = %v, want %q", tt.cost, err, tt.wantErr)
			}
		}
	}
	if _, err := HashPassword("long enough", MaxPasswordCost+1); err == nil || !strings.Contains(err.Error(), "bcrypt cost 17 is above") {
		t.Errorf("HashPassword(cost 17) error = %v, want the cost refused", err)
	}

	e := newBrowserEnv(t, nil)
	ctx := context.Background()
	if err := e.iss.store.Update(ctx, func(tx store.Tx) error {
		return usersIn(tx).put(&User{Username: "frank", PasswordHash: costlyHash(20), Source: sourceAdmin})
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if code, _ := e.loginFrom(t, "198.51.100.7:4000", "frank", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("login frank = %d, want 401", code)
	}
	e.iss.dir.dummy.mu.Lock()
	got := e.iss.dir.dummy.cost
	e.iss.dir.dummy.mu.Unlock()
	if got > MaxPasswordCost {
		t.Errorf("dummy cost after a login under a cost-20 hash = %d, want at most %d", got, MaxPasswordCost)
	}
	t.Logf("login under a stored cost-20 hash answered in %v", time.Since(start))
}

// TestSessionCookiePathOfAPathIssuer: a plain-http (loopback) issuer
// with a path keeps its session cookie to that path. Cookies know no
// port: at Path=/ the browser would send the cookie to every server on
// the issuer's host, a native client's loopback redirect listener
// among them, which could then use the user's session here.
func TestSessionCookiePathOfAPathIssuer(t *testing.T) {
	e := newBrowserEnv(t, func(c *Config) { c.Issuer += "/t1" })
	c := e.browser()
	resp, err := c.Get(e.url("/t1"+pathAuthorize, authParams(testChallenge)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/t1"+pathLogin+"?req=") {
		t.Fatalf("authorize = %d %q, want 303 to /t1%s", resp.StatusCode, loc, pathLogin)
	}
	has := func(path string) bool {
		u, _ := url.Parse(e.srv.URL + path)
		for _, ck := range c.Jar.Cookies(u) {
			if ck.Name == "mcp_session" {
				return true
			}
		}
		return false
	}
	for path, want := range map[string]bool{"/t1" + pathLogin: true, "/t1" + pathConsent: true, "/t1": true, "/cb": false, "/": false, "/t10/login": false} {
		if got := has(path); got != want {
			t.Errorf("session cookie sent to %s = %v, want %v", path, got, want)
		}
	}
	// What the path cannot do (README, Sessions on a plain-http loopback
	// issuer): a program on another port of the host gets the cookie for
	// any path under the issuer's, which it chooses (its redirect URI, or
	// a page's top-level navigation, which carries SameSite=Lax cookies).
	other, _ := url.Parse(e.srv.URL)
	other.Host = other.Hostname() + ":1"
	for _, path := range []string{"/t1/cb", "/t1" + pathLogin} {
		other.Path = path
		sent := false
		for _, ck := range c.Jar.Cookies(other) {
			sent = sent || ck.Name == "mcp_session"
		}
		if !sent {
			t.Errorf("session cookie sent to %s = false: the limit README states no longer holds, update it", other)
		}
	}
}

// TestCookiePathAsBrowsersMatch: the session cookie's Path is one a
// browser finds at the start of every path it requests under the
// issuer's, escapes and all (TestSignInIssuerPathEscaped in Chromium):
// a path holding an escape, or a byte a cookie cannot carry, is cut back
// to the segments before it.
func TestCookiePathAsBrowsersMatch(t *testing.T) {
	for issuer, want := range map[string]string{
		"http://127.0.0.1:8080":               "/",
		"http://127.0.0.1:8080/":              "/",
		"http://127.0.0.1:8080/t1":            "/t1",
		"http://127.0.0.1:8080/t1/":           "/t1",
		"http://127.0.0.1:8080/x/t-1_a.b~c":   "/x/t-1_a.b~c",
		"http://127.0.0.1:8080/a%20b":         "/",
		"http://127.0.0.1:8080/x/a%20b":       "/x",
		"http://127.0.0.1:8080/x/y/%C3%A9t/z": "/x/y",
		"http://127.0.0.1:8080/a;b":           "/",
		"http://127.0.0.1:8080/x/a%41b":       "/x",
		"http://127.0.0.1:8080/x/a(b)":        "/x",
		"https://issuer.example/t1":           "/",
		"https://issuer.example/a%20b":        "/",
	} {
		u, err := parseIssuerURL(issuer)
		if err != nil {
			t.Fatalf("%s: %v", issuer, err)
		}
		if got := cookiePath(u); got != want {
			t.Errorf("cookiePath(%s) = %q, want %q", issuer, got, want)
		}
	}
}

// TestLoginNamesCompareExactly: a user name is compared exactly (README,
// Limits: Names compare exactly): another case or a compatibility form of
// it signs nobody in, even with the user's password. (Spaces around the
// name typed are trimmed: no user name holds one.)
func TestLoginNamesCompareExactly(t *testing.T) {
	e := newBrowserEnv(t, nil)
	try := func(user string) *http.Response {
		// Past the limiter's budget for this address, with a fresh request.
		e.clock.Advance(10 * time.Minute)
		c, _, f := e.startLogin(t)
		v := f.hidden
		v.Set("username", user)
		v.Set("password", bPassword)
		resp, _ := e.postPage(t, c, f.action, v)
		return resp
	}
	for _, user := range []string{"Alice", "ALICE", "alİce", "ａｌｉｃｅ", "alice\x00"} {
		if resp := try(user); resp.StatusCode == http.StatusSeeOther || resp.Header.Get("Location") != "" {
			t.Errorf("login as %q with %s's password = %d %q, want it refused", user, bUser, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp := try(bUser); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("login as %q = %d, want 303", bUser, resp.StatusCode)
	}
}

// TestSignInPostedTwice: a sign-in form posted again with the cookie of
// the anonymous session its first post replaced (a double-click on Sign
// in: the browser sends the second request before the first one's answer
// arrives, and drops that answer, its new cookie with it) signs the
// same browser in, its password checked again, and goes on to the
// pending request's consent page. It said "Form expired", and the
// pending request, bound to the browser, was out of reach: the user had
// to start again from the application. The old cookie alone signs no
// one in, and is taken for a sign-in only with its own form's CSRF token
// and within 30 seconds; a signed-in session replaced leaves
// nothing behind.
func TestSignInPostedTwice(t *testing.T) {
	post := func(t *testing.T, e *testEnv, cookie string, v url.Values) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, e.srv.URL+pathLogin, strings.NewReader(v.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", e.srv.URL)
		req.AddCookie(&http.Cookie{Name: "mcp_session", Value: cookie})
		resp, err := e.browser().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		return resp
	}
	sessionCookie := func(resp *http.Response) string {
		for _, ck := range resp.Cookies() {
			if ck.Name == "mcp_session" && ck.MaxAge > 0 {
				return ck.Value
			}
		}
		return ""
	}
	// signedInTwice posts the sign-in form, then the form as change
	// makes it with the cookie the first post replaced, clock advanced
	// by wait; it returns the second answer.
	signedInTwice := func(t *testing.T, e *testEnv, wait time.Duration, change func(url.Values)) *http.Response {
		t.Helper()
		c, page, f := e.startLogin(t)
		u, _ := url.Parse(page)
		old := c.Jar.Cookies(u)[0].Value
		v := f.hidden
		v.Set("username", bUser)
		v.Set("password", bPassword)
		first := post(t, e, old, v)
		if first.StatusCode != http.StatusSeeOther || !strings.HasPrefix(first.Header.Get("Location"), pathConsent+"?req=") || sessionCookie(first) == "" {
			t.Fatalf("first post = %d %q, want 303 to the consent page and a new session", first.StatusCode, first.Header.Get("Location"))
		}
		e.clock.Advance(wait)
		if change != nil {
			change(v)
		}
		return post(t, e, old, v)
	}
	t.Run("again", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		second := signedInTwice(t, e, 2*time.Second, nil)
		loc := second.Header.Get("Location")
		sid := sessionCookie(second)
		if second.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, pathConsent+"?req=") || sid == "" {
			t.Fatalf("second post = %d %q, cookie %q, want 303 to the consent page and a session", second.StatusCode, loc, sid)
		}
		// The pending request is the new session's.
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+loc, nil)
		req.AddCookie(&http.Cookie{Name: "mcp_session", Value: sid})
		resp, err := e.browser().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if body := readBody(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(body, `id="consent"`) {
			t.Fatalf("consent page of the second sign-in = %d, want the consent form:\n%s", resp.StatusCode, body)
		}
	})
	refused := []struct {
		name   string
		wait   time.Duration
		change func(url.Values)
		status int
	}{
		{"wrong password", time.Second, func(v url.Values) { v.Set("password", "not-the-password") }, http.StatusUnauthorized},
		{"another CSRF token", time.Second, func(v url.Values) { v.Set(csrfField, maskCSRF("2IXS08Q2W8QlOyzOqnwCYAJ3LLUdJK4IGJws5hPpAUM")) }, http.StatusForbidden},
		{"no CSRF token", time.Second, func(v url.Values) { v.Del(csrfField) }, http.StatusForbidden},
		{"after the grace", 31 * time.Second, nil, http.StatusForbidden},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			e := newBrowserEnv(t, nil)
			second := signedInTwice(t, e, tc.wait, tc.change)
			if second.StatusCode != tc.status || sessionCookie(second) != "" {
				t.Errorf("second post = %d, cookie %q, want %d and no session", second.StatusCode, sessionCookie(second), tc.status)
			}
		})
	}
	t.Run("signed-in session replaced", func(t *testing.T) {
		// bob signs in over alice's session: alice's old cookie and
		// form are no sign-in of anyone's.
		e := newBrowserEnv(t, nil)
		c, page, f := e.startLogin(t)
		v := f.hidden
		v.Set("username", bUser)
		v.Set("password", bPassword)
		if resp, _ := e.postPage(t, c, f.action, v); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in = %d, want 303", resp.StatusCode)
		}
		u, _ := url.Parse(page)
		alice := c.Jar.Cookies(u)[0].Value
		resp, err := c.Get(page)
		if err != nil {
			t.Fatal(err)
		}
		g := findForm(t, readBody(t, resp), "login")
		w := g.hidden
		w.Set("username", "bob")
		w.Set("password", bPassword)
		if resp := post(t, e, alice, w); resp.StatusCode != http.StatusSeeOther || sessionCookie(resp) == "" {
			t.Fatalf("bob's sign-in = %d, want 303 and a session", resp.StatusCode)
		}
		if resp := post(t, e, alice, w); resp.StatusCode != http.StatusForbidden || sessionCookie(resp) != "" {
			t.Errorf("bob's form again with alice's replaced cookie = %d, cookie %q, want 403 and no session", resp.StatusCode, sessionCookie(resp))
		}
	})
}
