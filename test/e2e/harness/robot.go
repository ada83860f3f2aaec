package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"golang.org/x/net/html"
)

// Form is an HTML form as the robot sees it.
type Form struct {
	ID      string
	Method  string     // lowercased; "" means get
	Action  string     // as written in the page
	Hidden  url.Values // hidden inputs
	Inputs  []string   // names of the other (visible) inputs, in order
	Buttons []Button   // submit buttons that carry a name
}

// Button is a named submit button.
type Button struct {
	Name, Value string
}

// Page is an HTML page the robot fetched.
type Page struct {
	URL    *url.URL // after redirects
	Status int
	Header http.Header
	Body   string
	Forms  []Form
	// Refresh is where the page's meta refresh sends the browser, ""
	// for nowhere.
	Refresh string
}

// Form returns the form with the given id, or nil.
func (p *Page) Form(id string) *Form {
	for i := range p.Forms {
		if p.Forms[i].ID == id {
			return &p.Forms[i]
		}
	}
	return nil
}

// Text returns the page's visible text with whitespace collapsed, for
// assertions that should not depend on markup.
func (p *Page) Text() string {
	doc, err := html.Parse(strings.NewReader(p.Body))
	if err != nil {
		return ""
	}
	var b strings.Builder
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "script" || n.Data == "style") {
			return
		}
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return strings.Join(strings.Fields(b.String()), " ")
}

// ParseForms reads every form of an HTML document.
func ParseForms(r io.Reader) ([]Form, error) {
	doc, err := html.Parse(r)
	if err != nil {
		return nil, fmt.Errorf("parse html: %w", err)
	}
	var forms []Form
	var cur *Form
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "form":
				forms = append(forms, Form{
					ID:     attr(n, "id"),
					Method: strings.ToLower(attr(n, "method")),
					Action: attr(n, "action"),
					Hidden: url.Values{},
				})
				prev := cur
				cur = &forms[len(forms)-1]
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					walk(c)
				}
				cur = prev
				return
			case "input":
				if cur != nil && attr(n, "name") != "" {
					switch strings.ToLower(attr(n, "type")) {
					case "hidden":
						cur.Hidden.Add(attr(n, "name"), attr(n, "value"))
					case "submit":
						cur.Buttons = append(cur.Buttons, Button{attr(n, "name"), attr(n, "value")})
					default:
						cur.Inputs = append(cur.Inputs, attr(n, "name"))
					}
				}
			case "button":
				t := strings.ToLower(attr(n, "type"))
				if cur != nil && attr(n, "name") != "" && (t == "" || t == "submit") {
					cur.Buttons = append(cur.Buttons, Button{attr(n, "name"), attr(n, "value")})
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return forms, nil
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// ErrLoginRefused is returned by Robot.Authorize when the login page comes
// back after the robot submitted its credentials.
var ErrLoginRefused = errors.New("login refused")

// Robot completes the authorization code flow over HTTP with a cookie jar,
// as a user's browser would: follow redirects; on the login page submit
// the hidden inputs plus username and password; on the consent page submit
// the hidden inputs plus the decision; stop at the client's redirect URI.
type Robot struct {
	Client      *http.Client
	Username    string
	Password    string
	Decision    string // "approve" or "deny"
	RedirectURI string // following stops at any URL with this prefix
	// Pages lists every HTML page the robot saw, in order.
	Pages []*Page
}

// NewRobot returns a robot with an empty cookie jar that approves.
func NewRobot(username, password, redirectURI string) *Robot {
	jar, err := cookiejar.New(nil)
	if err != nil {
		panic(err) // cookiejar.New never fails without options
	}
	r := &Robot{Username: username, Password: password, Decision: "approve", RedirectURI: redirectURI}
	r.Client = &http.Client{
		Jar: jar,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), r.RedirectURI) {
				return http.ErrUseLastResponse
			}
			if len(via) >= 10 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
	return r
}

// Authorize opens authURL and drives login and consent until the issuer
// redirects to the client. It returns the query of that redirect (code,
// state, iss; or error, error_description, state, iss).
func (r *Robot) Authorize(ctx context.Context, authURL string) (url.Values, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return nil, fmt.Errorf("authorize request: %w", err)
	}
	loggedIn := false
	for range 10 {
		resp, err := r.Client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
		}
		if q, done, err := r.final(resp); done || err != nil {
			resp.Body.Close()
			return q, err
		}
		page, err := readPage(resp)
		if err != nil {
			return nil, err
		}
		r.Pages = append(r.Pages, page)
		var form *Form
		vals := url.Values{}
		switch {
		case page.Form("login") != nil:
			if loggedIn {
				return nil, fmt.Errorf("%w: %s", ErrLoginRefused, page.Text())
			}
			loggedIn = true
			form = page.Form("login")
			vals.Set("username", r.Username)
			vals.Set("password", r.Password)
		case page.Form("consent") != nil:
			form = page.Form("consent")
			vals.Set("decision", r.Decision)
		default:
			return nil, fmt.Errorf("page %s (status %d) has no login or consent form: %.300s", page.URL, page.Status, page.Text())
		}
		for k, vs := range form.Hidden {
			vals[k] = vs
		}
		req, err = r.formRequest(ctx, page.URL, form, vals)
		if err != nil {
			return nil, err
		}
	}
	return nil, errors.New("authorize: no redirect to the client after 10 pages")
}

// final reports whether resp is the redirect to the client, and its query.
func (r *Robot) final(resp *http.Response) (url.Values, bool, error) {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil, false, nil
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, true, fmt.Errorf("redirect without location: %w", err)
	}
	if !strings.HasPrefix(loc.String(), r.RedirectURI) {
		return nil, true, fmt.Errorf("redirect to %s stopped", loc)
	}
	return loc.Query(), true, nil
}

// formRequest builds the POST a browser would send for form on pageURL.
func (r *Robot) formRequest(ctx context.Context, pageURL *url.URL, form *Form, vals url.Values) (*http.Request, error) {
	if form.Method != "post" {
		return nil, fmt.Errorf("form %q: method %q, want post", form.ID, form.Method)
	}
	action, err := pageURL.Parse(form.Action)
	if err != nil {
		return nil, fmt.Errorf("form %q action %q: %w", form.ID, form.Action, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, action.String(), strings.NewReader(vals.Encode()))
	if err != nil {
		return nil, fmt.Errorf("form request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// A browser's same-origin form post carries the page's origin.
	req.Header.Set("Origin", pageURL.Scheme+"://"+pageURL.Host)
	return req, nil
}

func readPage(resp *http.Response) (*Page, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", resp.Request.URL, err)
	}
	forms, err := ParseForms(strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	return &Page{URL: resp.Request.URL, Status: resp.StatusCode, Header: resp.Header, Body: string(body), Forms: forms, Refresh: metaRefresh(string(body))}, nil
}

// metaRefresh is the URL a page's meta refresh names, "" for none.
func metaRefresh(body string) string {
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		return ""
	}
	for n := range doc.Descendants() {
		if n.Type == html.ElementNode && n.Data == "meta" && strings.EqualFold(attr(n, "http-equiv"), "refresh") {
			_, u, _ := strings.Cut(attr(n, "content"), "url=")
			return u
		}
	}
	return ""
}

// Get fetches a page with the robot's cookies, following redirects.
func (r *Robot) Get(ctx context.Context, u string) (*Page, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("get request: %w", err)
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	return readPage(resp)
}

// Submit posts form (from page) with its hidden inputs plus extra, and
// returns the resulting page (after redirects, except to the client).
func (r *Robot) Submit(ctx context.Context, page *Page, form *Form, extra url.Values) (*http.Response, error) {
	vals := url.Values{}
	for k, vs := range form.Hidden {
		vals[k] = vs
	}
	for k, vs := range extra {
		vals[k] = vs
	}
	req, err := r.formRequest(ctx, page.URL, form, vals)
	if err != nil {
		return nil, err
	}
	resp, err := r.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("post %s: %w", req.URL, err)
	}
	return resp, nil
}

// ReadPage reads resp (and closes its body) as a Page.
func ReadPage(resp *http.Response) (*Page, error) { return readPage(resp) }

// CodeFetcher is the Go SDK OAuth handler's AuthorizationCodeFetcher
// signing in with r; seen, if not nil, gets each authorization URL first.
func (r *Robot) CodeFetcher(seen func(*url.URL)) auth.AuthorizationCodeFetcher {
	return func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		u, err := url.Parse(args.URL)
		if err != nil {
			return nil, err
		}
		if seen != nil {
			seen(u)
		}
		q, err := r.Authorize(ctx, args.URL)
		if err != nil {
			return nil, err
		}
		return &auth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
	}
}
