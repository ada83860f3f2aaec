package issuer

import (
	"net/http"
	"net/url"
	"testing"
)

// validDescription: RFC 6749 section 5.2 error_description characters.
func validDescription(s string) bool {
	for _, r := range s {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return false
		}
	}
	return true
}

func TestErrorDescriptionCharacters(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`unsupported grant_type "x"`, `unsupported grant_type 'x'`},
		{`a\b`, `a/b`},
		{"tab\there", "tab?here"},
		{"redirect URI \"https://é.example/…\"", "redirect URI 'https://?.example/?'"},
		{"plain ~!#$%&()*+,-./:;<=>?@[]^_`{|}", "plain ~!#$%&()*+,-./:;<=>?@[]^_`{|}"},
	} {
		if got := errorDescription(tt.in); got != tt.want {
			t.Errorf("errorDescription(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}

	// Both answers carry client input in descriptions: the JSON body ...
	e := newBrowserEnv(t, nil)
	resp, err := e.srv.Client().PostForm(e.url(pathToken, nil), url.Values{"grant_type": {`x"\é`}, "client_id": {bClientID}})
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := decodeJSONObject([]byte(readBody(t, resp)), &body); err != nil || body.Error != "unsupported_grant_type" || !validDescription(body.Description) {
		t.Errorf("token error = %+v, %v; want unsupported_grant_type with a valid error_description", body, err)
	}
	// ... and the authorization error redirect.
	p := authParams(testChallenge)
	p.Set("prompt", `x"\é`)
	r, err := e.browser().Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil || r.StatusCode != http.StatusSeeOther {
		t.Fatalf("authorize = %d %q, want a redirect", r.StatusCode, r.Header.Get("Location"))
	}
	if d := loc.Query().Get("error_description"); loc.Query().Get("error") != "invalid_request" || d == "" || !validDescription(d) {
		t.Errorf("authorize error = %v, want invalid_request with a valid error_description", loc.Query())
	}
}
