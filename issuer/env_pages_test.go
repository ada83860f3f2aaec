package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// Shared fixtures of the browser-side tests.
const (
	bResource    = "https://mcp.example.com/mcp"
	bOther       = "https://other.example.com/mcp"
	bClientID    = "test-app"
	bRedirect    = "http://127.0.0.1/callback"
	bWebClientID = "web-app"
	bWebRedirect = "https://app.example.com/cb"
	bUser        = "alice"
	bPassword    = "correct horse battery staple"
)

func newBrowserEnv(t *testing.T, mutate func(*Config)) *testEnv {
	t.Helper()
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	return newBrowserEnvStore(t, memory.New(memory.Options{Now: clock.Now, RunTwice: true}), clock, mutate)
}

// newBrowserEnvStore is newBrowserEnv on store st and clock.
func newBrowserEnvStore(t *testing.T, st store.Store, clock *storetest.Clock, mutate func(*Config)) *testEnv {
	t.Helper()
	e := newEnv(t, st, clock)
	hash, err := bcrypt.GenerateFromPassword([]byte(bPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Issuer: e.srv.URL,
		Now:    clock.Now,
		Users: []User{
			{Username: bUser, PasswordHash: string(hash), Groups: []string{"staff"}, Name: "Alice"},
			{Username: "bob", PasswordHash: string(hash), Groups: []string{"readers"}},
		},
		Groups: []Group{
			{Name: "staff", Scopes: map[string][]string{"*": {"files:read", "files:write"}}},
			{Name: "readers", Scopes: map[string][]string{bResource: {"files:read"}}},
		},
		Resources: []Resource{
			{URL: bResource, Scopes: []string{"files:read", "files:write", "admin"}},
			{URL: bOther, Scopes: []string{"files:read"}},
		},
		Clients: []Client{
			{ID: bClientID, Name: "Test App", RedirectURIs: []string{bRedirect, "http://localhost:8080/cb"}, TokenEndpointAuthMethod: "none"},
			{ID: bWebClientID, Name: "Web App", RedirectURIs: []string{bWebRedirect}, TokenEndpointAuthMethod: "none"},
		},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	e.serve(cfg)
	return e
}

// url returns the absolute URL of an issuer path with query parameters.
func (e *testEnv) url(path string, q url.Values) string {
	u := e.srv.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// browser is a cookie-jar HTTP client that does not follow redirects, so
// tests see every hop.
func (e *testEnv) browser() *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// webSignedIn is a browser in which bUser signed in and approved the web
// client, whose consent is remembered.
func (e *testEnv) webSignedIn(t *testing.T) *http.Client {
	t.Helper()
	c := e.browser()
	if _, err := e.robot(c, e.url(pathAuthorize, webAuthParams(testChallenge)), bWebRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatal(err)
	}
	return c
}

// authParams returns a valid authorization request for the test client.
func authParams(challenge string) url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {bClientID},
		"redirect_uri":          {bRedirect},
		"code_challenge":        {challenge},
		"code_challenge_method": {"S256"},
		"state":                 {"st-123"},
		"resource":              {bResource},
		"scope":                 {"files:read"},
	}
}

// webAuthParams is authParams for the web client: a public client with a
// loopback redirect URI sees the consent page every time, this one has
// its consent remembered.
func webAuthParams(challenge string) url.Values {
	p := authParams(challenge)
	p.Set("client_id", bWebClientID)
	p.Set("redirect_uri", bWebRedirect)
	return p
}

const testChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" // RFC 7636 appendix B

// form is a parsed HTML form.
type form struct {
	id, method, action string
	hidden             url.Values
	buttons            []string // name=value of submit buttons
}

// parseForms returns the forms of an HTML page.
func parseForms(t testing.TB, body string) []form {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("html.Parse: %v", err)
	}
	var forms []form
	var cur *form
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		attr := func(k string) string {
			for _, a := range n.Attr {
				if a.Key == k {
					return a.Val
				}
			}
			return ""
		}
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				forms = append(forms, form{id: attr("id"), method: attr("method"), action: attr("action"), hidden: url.Values{}})
				cur = &forms[len(forms)-1]
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					walk(c)
				}
				cur = nil
				return
			case "input":
				if cur != nil && attr("type") == "hidden" {
					cur.hidden.Add(attr("name"), attr("value"))
				}
			case "button":
				if cur != nil && attr("type") == "submit" {
					cur.buttons = append(cur.buttons, attr("name")+"="+attr("value"))
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return forms
}

func findForm(t testing.TB, body, id string) form {
	t.Helper()
	for _, f := range parseForms(t, body) {
		if f.id == id {
			return f
		}
	}
	t.Fatalf("page has no form#%s:\n%s", id, body)
	return form{}
}

// metaRefresh is where a page's meta refresh sends the browser, "" for
// nowhere.
func metaRefresh(t testing.TB, body string) string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for n := range doc.Descendants() {
		if n.Type != html.ElementNode || n.Data != "meta" {
			continue
		}
		var equiv, content string
		for _, a := range n.Attr {
			switch a.Key {
			case "http-equiv":
				equiv = a.Val
			case "content":
				content = a.Val
			}
		}
		if strings.EqualFold(equiv, "refresh") {
			_, u, _ := strings.Cut(content, "url=")
			return u
		}
	}
	return ""
}

// onward is where resp sends the browser: a redirect's Location, or a
// page's meta refresh (the "Continue with" button's, idpStart); "" for
// nowhere. It reads and closes the body.
func onward(t testing.TB, resp *http.Response) string {
	t.Helper()
	body := readBody(t, resp)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return resp.Header.Get("Location")
	}
	return metaRefresh(t, body)
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// robot runs the page/form automation contract: follow redirects with
// the jar, fill form#login or form#consent (decision), and stop at the
// first redirect to redirectURI, whose URL it returns.
func (e *testEnv) robot(c *http.Client, start, redirectURI, user, password, decision string) (*url.URL, error) {
	next, err := url.Parse(start)
	if err != nil {
		return nil, err
	}
	var body url.Values
	for range 10 {
		var resp *http.Response
		if body == nil {
			resp, err = c.Get(next.String())
		} else {
			req, _ := http.NewRequest(http.MethodPost, next.String(), strings.NewReader(body.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Origin", e.srv.URL)
			resp, err = c.Do(req)
		}
		if err != nil {
			return nil, err
		}
		body = nil
		if loc := resp.Header.Get("Location"); loc != "" {
			resp.Body.Close()
			u, err := next.Parse(loc)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(u.String(), redirectURI) {
				return u, nil
			}
			next = u
			continue
		}
		page := readBody(e.t, resp)
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: status %d: %s", next, resp.StatusCode, page)
		}
		var f *form
		for _, pf := range parseForms(e.t, page) {
			if pf.id == "login" || pf.id == "consent" {
				f = &pf
				break
			}
		}
		if f == nil {
			return nil, fmt.Errorf("page %s has no login or consent form", next.Path)
		}
		body = f.hidden
		if f.id == "login" {
			body.Set("username", user)
			body.Set("password", password)
		} else {
			body.Set("decision", decision)
		}
		if !strings.EqualFold(f.method, "post") {
			return nil, fmt.Errorf("form#%s method %q, want post", f.id, f.method)
		}
		if next, err = next.Parse(f.action); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("robot: too many steps")
}

// count returns the number of live entries in a bucket.
func (e *testEnv) count(bucket string) int {
	e.t.Helper()
	n := 0
	err := e.store.View(context.Background(), func(tx store.Tx) error {
		return tx.List(bucket, "", func(string, []byte) error { n++; return nil })
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// keys lists the live keys of a bucket.
func (e *testEnv) keys(bucket string) []string {
	e.t.Helper()
	var out []string
	err := e.store.View(context.Background(), func(tx store.Tx) error {
		return tx.List(bucket, "", func(k string, _ []byte) error { out = append(out, k); return nil })
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// get decodes one record.
func (e *testEnv) get(bucket, key string, v any) error {
	return e.store.View(context.Background(), func(tx store.Tx) error {
		b, err := tx.Get(bucket, key)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, v)
	})
}

func (e *testEnv) put(bucket, key string, v any, expires time.Time) {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	err = e.store.Update(context.Background(), func(tx store.Tx) error { return tx.Put(bucket, key, b, expires) })
	if err != nil {
		e.t.Fatal(err)
	}
}

// getRecord decodes the raw entry of a bucket, to check what was stored.
func getRecord(tx store.Tx, bucket, key string, v any) error {
	b, err := tx.Get(bucket, key)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// putRecord writes a raw entry, to set up what a test needs stored.
func putRecord(tx store.Tx, bucket, key string, v any, expires time.Time) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(bucket, key, b, expires)
}
