package issuer

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"go.uber.org/zap"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// pageNames are the templates/<name>.html files rendered inside layout.html.
var pageNames = []string{"error", "login", "consent", "logout", "apps", "message"}

// parsePages parses every page with the layout.
func parsePages(assets, issuer string, log *zap.Logger) (*pages, error) {
	funcs := template.FuncMap{
		"date": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return t.UTC().Format("2006-01-02 15:04 UTC")
		},
	}
	byName := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		byName[name] = t
	}
	css, err := assetFS.ReadFile("assets/style.css")
	if err != nil {
		return nil, err
	}
	// The stylesheet's URL changes with it: it is cached for an hour
	// (serveAsset), by shared caches too, and the one cached before an
	// upgrade would leave the consent page without the arming of its
	// Allow button (review s17-fresh3 F2).
	sum := sha256.Sum256(css)
	style := assets + "style.css?v=" + hex.EncodeToString(sum[:6])
	return &pages{byName: byName, assets: assets, style: style, issuer: issuer, log: log}, nil
}

// pages answers the browser: the issuer's HTML pages, and redirects to
// clients (authorization responses and errors).
type pages struct {
	byName map[string]*template.Template // page name -> layout + page
	assets string                        // URL path prefix of the embedded assets
	style  string                        // URL of the stylesheet, with its version
	issuer string                        // iss of authorization error redirects (RFC 9207)
	log    *zap.Logger
}

// page is what every template gets; Data is the page's own content.
type page struct {
	Title  string
	Assets string // URL path prefix of the embedded assets
	Style  string // URL of the stylesheet, with its version
	// Refresh is where the page sends the browser on at once (a meta
	// refresh, which no CSP directive governs); "" for nowhere.
	Refresh string
	Data    any
}

// render writes an HTML page with the security headers every page carries.
// formTargets are the origins a form on the page may end up at through
// redirects after its POST (CSP form-action applies to the whole redirect
// chain in Chrome), in addition to the issuer itself.
func (p *pages) render(w http.ResponseWriter, status int, name, title string, data any, formTargets ...string) {
	p.renderPage(w, status, name, page{Title: title, Data: data}, formTargets...)
}

// renderPage is render with the page's fields given; its Assets and
// Style are set here.
func (p *pages) renderPage(w http.ResponseWriter, status int, name string, pg page, formTargets ...string) {
	pg.Assets, pg.Style = p.assets, p.style
	var buf bytes.Buffer
	err := p.byName[name].ExecuteTemplate(&buf, "layout", pg)
	if err != nil {
		p.log.Error("render page", zap.String("page", name), zap.Error(err))
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString("internal error\n")
	}
	pageHeaders(w, formTargets...)
	if status == http.StatusServiceUnavailable && w.Header().Get("Retry-After") == "" {
		// "Temporarily unavailable": when to retry, as the JSON
		// endpoints' 503s say (writeError).
		w.Header().Set("Retry-After", retryAfter(storeRetryAfter))
	}
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// pageHeaders sets the headers of every HTML answer (and of redirects out
// of pages): not frameable, no caching, no referrer, strict CSP.
func pageHeaders(w http.ResponseWriter, formTargets ...string) {
	formAction := "'self'"
	for _, t := range formTargets {
		if t != "" {
			formAction += " " + t
		}
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action "+formAction+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// errorPage renders a page for an error that must not be sent to a
// redirect URI (unknown client, untrusted redirect URI, CSRF failure).
func (p *pages) errorPage(w http.ResponseWriter, status int, heading, message string) {
	p.render(w, status, "error", heading, struct{ Heading, Message string }{heading, message})
}

// unreadableForm answers a page's form POST that r.ParseForm refused:
// 413 when the body passed a bound (the page's maxPageFormBytes, or a
// request_body max_size in front), as the back-channel endpoints answer
// it; else 400, with message.
func (p *pages) unreadableForm(w http.ResponseWriter, err error, message string) {
	if bodyTooLarge(err) {
		p.errorPage(w, http.StatusRequestEntityTooLarge, "Request too large", "The form was larger than this server accepts.")
		return
	}
	p.errorPage(w, http.StatusBadRequest, "Invalid request", message)
}

// cspSourceChars is what a CSP source expression built from a URL may
// contain; anything else is dropped rather than risk injecting directives.
var cspSourceChars = regexp.MustCompile(`^[a-z][a-z0-9+.-]*:(//[A-Za-z0-9.\-\[\]:]+)?$`)

// cspSource returns the CSP source expression that allows navigation to
// the redirect URI s: its origin, or its scheme for private-use schemes.
// A host-source cannot name an IPv6 literal: Chromium ignores
// "http://[::1]:3000" as invalid. It needs none: a browser (Sec-Fetch-Dest:
// document) gets redirectTo's page after the form's POST, not a redirect
// form-action would hold (TestIPv6LoopbackRedirect). No wildcard stands in
// for it ("http://*" would be every host at ports 80 and 443).
func cspSource(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	src := u.Scheme + ":"
	if u.Scheme == "http" || u.Scheme == "https" {
		src = u.Scheme + "://" + u.Host
	}
	if !cspSourceChars.MatchString(src) {
		return ""
	}
	return src
}

// serveAsset serves the embedded stylesheet and images.
func (p *pages) serveAsset(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, p.assets)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if name == "" || !fs.ValidPath(name) {
		http.NotFound(w, r)
		return
	}
	b, err := fs.ReadFile(assetFS, "assets/"+name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	switch {
	case strings.HasSuffix(name, ".css"):
		h.Set("Content-Type", "text/css; charset=utf-8")
	case strings.HasSuffix(name, ".svg"):
		h.Set("Content-Type", "image/svg+xml")
	default:
		h.Set("Content-Type", "application/octet-stream")
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "public, max-age=3600")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// formPage dispatches a page that is shown with GET and submitted with
// POST; any other method gets an error page saying how to use it.
func (p *pages) formPage(w http.ResponseWriter, r *http.Request, get, post http.HandlerFunc, hint string) {
	switch r.Method {
	case http.MethodGet:
		get(w, r)
	case http.MethodPost:
		post(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		p.errorPage(w, http.StatusMethodNotAllowed, "Invalid request", hint)
	}
}

// query reads a page's query as strictly as /authorize and /logout read
// theirs, answering 400 when it cannot: URL.Query drops a pair it cannot
// read (a ';' separator, a bad escape), which other readers of the same
// URL split or decode otherwise, and Get takes the first of a parameter
// given twice (RFC 6749 section 3.1 has none given twice).
func (p *pages) query(w http.ResponseWriter, r *http.Request) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil || repeatedParam(q) != "" {
		p.errorPage(w, http.StatusBadRequest, "Invalid request", "The request could not be read.")
		return nil, false
	}
	return q, true
}

// method reports whether r uses method m, answering 405 with hint when
// not.
func (p *pages) method(w http.ResponseWriter, r *http.Request, m, hint string) bool {
	if r.Method == m {
		return true
	}
	w.Header().Set("Allow", m)
	p.errorPage(w, http.StatusMethodNotAllowed, "Invalid request", hint)
	return false
}

func (p *pages) csrfPage(w http.ResponseWriter) {
	p.errorPage(w, http.StatusForbidden, "Form expired",
		"This form is no longer valid (it may have expired or come from another site). Go back, reload the page and try again.")
}

func (p *pages) serverErrorPage(w http.ResponseWriter, err error) {
	p.log.Error("page", zap.Error(err))
	if storeBusy(err) {
		p.errorPage(w, http.StatusServiceUnavailable, "Temporarily unavailable", "The server cannot complete this step right now. Try again in a moment.")
		return
	}
	p.errorPage(w, http.StatusInternalServerError, "Something went wrong", "The server could not complete this step. Try again in a moment.")
}

// pendingGonePage answers a login or consent step whose request is gone.
func (p *pages) pendingGonePage(w http.ResponseWriter) {
	p.errorPage(w, http.StatusBadRequest, "Request expired",
		"This sign-in request has expired, was already completed, or was started in another browser. Go back to the application and connect again.")
}

// clientChangedPage ends a request whose client's registration changed
// meanwhile (errClientChanged).
func (p *pages) clientChangedPage(w http.ResponseWriter) {
	p.errorPage(w, http.StatusBadRequest, "Application changed",
		"The application's registration changed while you were signing in. Go back to the application and connect again.")
}

// redirectTo sends the browser to a client's redirect URI with v added
// to its query (withQuery). A browser's top-level navigation to a web
// (http or https) URI gets a page that sends it on at once (a meta
// refresh, and a link), as the "Continue with" provider button does:
// Chromium holds every redirect after a form's POST (sign-in, consent,
// sign-out) to the page's CSP form-action, and a client's callback may
// redirect on to an origin no form-action can name (api.example.com
// redeeming the code and sending the user to app.example.com); the
// refresh is a navigation of its own, and replaces the page in the
// history. Programs (no Sec-Fetch-Dest: document), frames (a silent
// prompt=none in an iframe, which frame-ancestors would refuse a page),
// and private-use schemes, which leave the browser, get a 303.
func (p *pages) redirectTo(w http.ResponseWriter, r *http.Request, redirectURI string, v url.Values) {
	loc, err := withQuery(redirectURI, v)
	if err != nil {
		p.errorPage(w, http.StatusBadRequest, "Invalid redirect URI", "The redirect URI cannot be used.")
		return
	}
	p.sendTo(w, r, loc)
}

// sendTo is redirectTo's answer for loc, the redirect URI with its
// parameters.
func (p *pages) sendTo(w http.ResponseWriter, r *http.Request, loc string) {
	u, err := url.Parse(loc)
	if err != nil || r.Header.Get("Sec-Fetch-Dest") != "document" || (u.Scheme != "https" && u.Scheme != "http") {
		p.seeOther(w, r, loc)
		return
	}
	p.sendOn(w, "Returning to the application", "Taking you back to "+u.Host+".", loc, "Continue")
}

// sendOn answers a page titled title that sends the browser on to loc at
// once (a meta refresh, and a link reading linkText): a navigation of its
// own, which the CSP form-action of the page whose form was posted does
// not govern, as it governs every redirect after that POST in Chromium.
func (p *pages) sendOn(w http.ResponseWriter, title, message, loc, linkText string) {
	p.renderPage(w, http.StatusOK, "message", page{Title: title, Refresh: loc, Data: messageView{
		Heading: title, Message: message, Link: loc, LinkText: linkText,
	}})
}

// withQuery returns uri with v added to its query, keeping the URI's own
// query as registered. A URI whose query carries a response parameter
// already (a registration from before classifyRedirect refused them) is
// an error: the parameter would come twice.
func withQuery(uri string, v url.Values) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", err
	}
	if name, err := responseParamIn(u.RawQuery); err != nil {
		return "", err
	} else if name != "" {
		return "", errors.New("the redirect URI's query carries " + name)
	}
	switch q := v.Encode(); {
	case q == "":
	case u.RawQuery != "":
		u.RawQuery += "&" + q
	default:
		u.RawQuery = q
	}
	return u.String(), nil
}

// seeOther answers 303, with the page headers (no caching, no referrer).
func (p *pages) seeOther(w http.ResponseWriter, r *http.Request, location string) {
	pageHeaders(w)
	w.Header().Del("Content-Type")
	http.Redirect(w, r, location, http.StatusSeeOther)
}

// tooManyLogins answers a login refused by the brute-force limiter.
func (p *pages) tooManyLogins(w http.ResponseWriter, v loginView, target string, d time.Duration) {
	secs := retryAfter(d)
	w.Header().Set("Retry-After", secs)
	unit := " seconds"
	if secs == "1" {
		unit = " second"
	}
	v.Error = "Too many failed attempts. Wait " + secs + unit + " and try again."
	p.render(w, http.StatusTooManyRequests, "login", "Sign in", v, target)
}

// earlyError answers an authorization error raised before the user has
// seen any page of this request. An operator's client (config, admin) gets
// the error at its redirect URI (RFC 6749 section 4.1.2.1). A
// self-registered one (DCR, CIMD), or one that could not be loaded, gets
// an error page instead: anyone can register any redirect URI, and
// sending browsers there unprompted would make /authorize an open
// redirector (RFC 9700 section 4.11.2). That holds until the user has
// answered the consent page, which names the client and where it sends
// them: the steps before it are reached by redirects alone (a sign-in
// page may not have been shown at all), and a self-registered client can
// make them fail at will. After it, errors redirect as usual.
func (p *pages) earlyError(w http.ResponseWriter, r *http.Request, c *Client, redirectURI, state string, err error) {
	if c != nil && !c.selfRegistered() {
		p.redirectError(w, r, redirectURI, state, err)
		return
	}
	e := protocolError(err)
	status := http.StatusBadRequest
	switch {
	case e.Code == ErrTemporarilyUnavailable.Code && e.Err != nil:
		p.log.Error("authorize", zap.Error(e.Err))
		status = e.Status
	case e.Code == ErrServerError.Code:
		if e.Err != nil {
			p.log.Error("authorize", zap.Error(e.Err))
		}
		status = http.StatusInternalServerError
	case e.RetryAfter > 0:
		status = e.Status
		w.Header().Set("Retry-After", retryAfter(e.RetryAfter))
	}
	msg := "The application's request cannot be completed (" + e.Code + ")."
	if e.Description != "" {
		msg = "The application's request cannot be completed: " + e.Description + " (" + e.Code + ")."
	}
	p.errorPage(w, status, "Request not accepted", msg)
}

// redirectError sends an authorization error response to the client
// (RFC 6749 section 4.1.2.1, with RFC 9207 iss).
func (p *pages) redirectError(w http.ResponseWriter, r *http.Request, redirectURI, state string, err error) {
	e := protocolError(err)
	if (e.Code == ErrServerError.Code || e.Code == ErrTemporarilyUnavailable.Code) && e.Err != nil {
		p.log.Error("authorize", zap.Error(e.Err))
	}
	p.redirectTo(w, r, redirectURI, p.errorResponse(state, e))
}

// errorResponse is the query of an authorization error response.
func (p *pages) errorResponse(state string, e *Error) url.Values {
	v := url.Values{"error": {e.Code}}
	if e.Description != "" {
		v.Set("error_description", errorDescription(e.Description))
	}
	if state != "" {
		v.Set("state", state)
	}
	v.Set("iss", p.issuer)
	return v
}
