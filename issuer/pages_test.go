package issuer

import (
	"net/http"
	"net/url"
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
