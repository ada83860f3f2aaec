package issuer

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestPageQueryStrict: the sign-in, consent and apps pages read their
// query as /authorize and /logout do: a pair URL.Query would drop (a ';'
// separator, a bad escape) or a parameter given twice is a 400 page, not
// a page for another request (the sign-in page without the pending
// request, the first of two).
func TestPageQueryStrict(t *testing.T) {
	e := newBrowserEnv(t, nil)
	c, page, _ := e.startLogin(t)
	u, err := url.Parse(page)
	if err != nil {
		t.Fatal(err)
	}
	req := u.Query().Get("req")
	get := func(path, rawQuery string) (int, string) {
		t.Helper()
		resp, err := c.Get(e.srv.URL + path + "?" + rawQuery)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readBody(t, resp)
	}
	if status, body := get(pathLogin, "req="+url.QueryEscape(req)); status != http.StatusOK || !strings.Contains(body, "Test App") {
		t.Fatalf("sign-in page = %d, want 200 naming the client", status)
	}
	for _, tt := range []struct{ path, query string }{
		{pathLogin, "req=" + url.QueryEscape(req) + ";x=1"},
		{pathLogin, "req=%zz"},
		{pathLogin, "req=" + url.QueryEscape(req) + "&req=other"},
		{pathConsent, "req=" + url.QueryEscape(req) + ";x=1"},
		{pathConsent, "req=" + url.QueryEscape(req) + "&req=other"},
		{pathApps, "revoked=1;x=1"},
		{pathApps, "revoked=1&revoked=1"},
	} {
		if status, body := get(tt.path, tt.query); status != http.StatusBadRequest || !strings.Contains(body, "could not be read") {
			t.Errorf("GET %s?%s = %d, want 400 saying the request could not be read", tt.path, tt.query, status)
		}
	}

	// Signed in, /apps reads its notice.
	resp := e.signIn(t, c, page, bUser)
	resp.Body.Close()
	if status, body := get(pathApps, "revoked=1"); status != http.StatusOK || !strings.Contains(body, "Access revoked.") {
		t.Errorf("GET /apps?revoked=1 = %d, want 200 with the notice", status)
	}
	if status, body := get(pathApps, "revoked=1;x=1"); status != http.StatusBadRequest || !strings.Contains(body, "could not be read") {
		t.Errorf("GET /apps?revoked=1;x=1 signed in = %d, want 400", status)
	}
}

// TestErrorPageRepeatedParamName: the error pages of /logout (any
// request's: anyone can send its link) and of /authorize (a self-
// registered client's early errors) name a repeated parameter only when
// its name is a plain one, as every parameter of theirs is. Named as
// sent, a name of the link author's choosing put its words on the
// issuer's page, and a right-to-left override among them turned them
// and the page's own around ("The parameter account is locked; call
// 555-0100 .detaeper si Your" in Chromium).
func TestErrorPageRepeatedParamName(t *testing.T) {
	e, _ := newCIMDEnv(t, true, nil)
	const land = "https://app.example/cb"
	resp, out := e.register(t, `{"client_name":"Notes","redirect_uris":["`+land+`"],"token_endpoint_auth_method":"none"}`)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("register = %d %v", resp.StatusCode, out)
	}
	dcrID := out["client_id"].(string)
	const words = "Your account is locked; call 555-0100"
	spoof := "\u202e" + reverse(words)
	authorize := func(name string) string {
		p := authParams(testChallenge)
		p.Set("client_id", dcrID)
		p.Set("redirect_uri", land)
		return e.url(pathAuthorize, p) + "&" + url.QueryEscape(name) + "=1&" + url.QueryEscape(name) + "=2"
	}
	logout := func(name string) string {
		return e.url(pathLogout, url.Values{name: {"1", "2"}})
	}
	for _, page := range []struct {
		name string
		url  func(string) string
	}{{"authorize", authorize}, {"logout", logout}} {
		get := func(name string) string {
			t.Helper()
			resp, err := e.browser().Get(page.url(name))
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" || !strings.Contains(body, "repeated") {
				t.Fatalf("%s with %q repeated = %d Location %q, want a 400 page saying a parameter is repeated: %s",
					page.name, name, resp.StatusCode, resp.Header.Get("Location"), body)
			}
			return body
		}
		for _, name := range []string{spoof, "call 555-0100", "x\u00a0y", strings.Repeat("s", 41)} {
			if body := get(name); strings.Contains(body, "\u202e") || strings.Contains(body, "555-0100") || strings.Contains(body, "x\u00a0y") || strings.Contains(body, strings.Repeat("s", 41)) {
				t.Errorf("%s: the page names the repeated parameter %q as sent: %s", page.name, name, body)
			}
		}
		if body := get("state"); !strings.Contains(body, "parameter state is repeated") {
			t.Errorf("%s: the page does not name the repeated parameter state: %s", page.name, body)
		}
	}
}

func reverse(s string) string {
	r := []rune(s)
	slices.Reverse(r)
	return string(r)
}

// TestCIMDErrorPageBoundsDocumentText: a client metadata document is
// anyone's to publish, and its client_id URL a link anyone can send to
// /authorize; the error page it gets quotes what the document holds that
// cannot be used in at most 40 bytes, as it does for a grant_type. An
// application_type was quoted whole: the document's author put a
// paragraph of their words (up to the document's 5 KiB) on the issuer's
// page; a redirect URI, and a post-logout one, in 100 bytes, their words
// twice over.
func TestCIMDErrorPageBoundsDocumentText(t *testing.T) {
	e, host := newCIMDEnv(t, true, nil)
	words := strings.Repeat("Your account is locked; call 555-0100 to restore access. ", 20)
	// A URI that passes every rule but a web client's.
	webURI := "http://127.0.0.1/" + strings.NewReplacer(" ", "-", ";", "").Replace(words)
	for _, tt := range []struct {
		member string
		quoted string // what the reason quotes
		extra  string // the document's members but client_id and client_name
	}{
		{"application_type", words, `"redirect_uris":["http://127.0.0.1:3000/callback"],"application_type":"` + words + `"`},
		{"grant_types", words, `"redirect_uris":["http://127.0.0.1:3000/callback"],"grant_types":["` + words + `"]`},
		{"response_types", words, `"redirect_uris":["http://127.0.0.1:3000/callback"],"response_types":["` + words + `"]`},
		{"redirect_uris", words, `"redirect_uris":["` + words + `"]`},
		{"post_logout_redirect_uris", words, `"redirect_uris":["http://127.0.0.1:3000/callback"],"post_logout_redirect_uris":["` + words + `"]`},
		{"web redirect_uris", webURI, `"redirect_uris":["` + webURI + `"],"application_type":"web"`},
	} {
		id := host.doc("/"+strings.ReplaceAll(tt.member, " ", "-")+".json", "", func(id string) string {
			return `{"client_id":"` + id + `","client_name":"Doc Client",` + tt.extra + `}`
		})
		p := authParams(testChallenge)
		p.Set("client_id", id)
		p.Set("redirect_uri", "http://127.0.0.1:3000/callback")
		resp, err := e.browser().Get(e.url(pathAuthorize, p))
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "could not be identified") || !strings.Contains(body, tt.quoted[:30]) {
			t.Fatalf("%s: authorize = %d, want a 400 page quoting the document's value: %s", tt.member, resp.StatusCode, body)
		}
		if strings.Contains(body, tt.quoted[:41]) {
			t.Errorf("%s: the page quotes more than 40 bytes of the document's %s: %s", tt.member, tt.member, body)
		}
	}
}

// TestPageFormTooLarge: a form POST to a page over the pages' 32 KiB,
// and a form body at /userinfo over it, are answered 413, as the
// back-channel endpoints answer theirs (and as Caddy answers a body over
// a request_body max_size in front: TestIssuerRequestBodyMaxSize), not
// 400 "could not be read"; one within it is read as before.
func TestPageFormTooLarge(t *testing.T) {
	e := newBrowserEnv(t, nil)
	over := "x=" + strings.Repeat("a", maxPageFormBytes)
	post := func(path, body string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Post(e.srv.URL+path, "application/x-www-form-urlencoded", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp, readBody(t, resp)
	}
	for _, path := range []string{pathLogin, pathConsent, pathLogout, pathApps, pathAuthorize} {
		if resp, page := post(path, over); resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(page, "Request too large") {
			t.Errorf("POST %s of %d bytes = %d, want 413 saying the request is too large: %s", path, len(over), resp.StatusCode, page)
		}
		if resp, page := post(path, "x=1"); resp.StatusCode == http.StatusRequestEntityTooLarge || strings.Contains(page, "Request too large") {
			t.Errorf("POST %s of 3 bytes = %d, want it read", path, resp.StatusCode)
		}
		// README: "their own 32 KiB", written out so that changing
		// maxPageFormBytes fails here.
		if resp, page := post(path, "x="+strings.Repeat("a", 32<<10-2)); resp.StatusCode == http.StatusRequestEntityTooLarge || strings.Contains(page, "Request too large") {
			t.Errorf("POST %s of 32 KiB = %d, want it read", path, resp.StatusCode)
		}
		if resp, _ := post(path, "x="+strings.Repeat("a", 32<<10-1)); resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("POST %s of 32 KiB and a byte = %d, want 413", path, resp.StatusCode)
		}
	}
	resp, _ := post(pathUserinfo, over)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_request"`) {
		t.Errorf("POST /userinfo of %d bytes = %d %q, want 413 invalid_request", len(over), resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := post(pathUserinfo, "x="+strings.Repeat("a", 32<<10-2)); resp.StatusCode == http.StatusRequestEntityTooLarge {
		t.Errorf("POST /userinfo of 32 KiB = %d, want it read", resp.StatusCode)
	}
	if resp, _ := post(pathUserinfo, "access_token=x"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST /userinfo with access_token = %d, want 400", resp.StatusCode)
	}
}
