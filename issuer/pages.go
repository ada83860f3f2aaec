package issuer

import (
	"bytes"
	"embed"
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
func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"date": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			return t.UTC().Format("2006-01-02 15:04 UTC")
		},
	}
	pages := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("parse template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// page is what every template gets; Data is the page's own content.
type page struct {
	Title  string
	Assets string // URL path prefix of the embedded assets
	Data   any
}

// render writes an HTML page with the security headers every page carries.
// formTargets are the origins a form on the page may end up at through
// redirects after its POST (CSP form-action applies to the whole redirect
// chain in Chrome), in addition to the issuer itself.
func (i *Issuer) render(w http.ResponseWriter, status int, name, title string, data any, formTargets ...string) {
	var buf bytes.Buffer
	err := i.pages[name].ExecuteTemplate(&buf, "layout", page{Title: title, Assets: i.base + pathAssets, Data: data})
	if err != nil {
		i.log.Error("render page", zap.String("page", name), zap.Error(err))
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString("internal error\n")
	}
	i.pageHeaders(w, formTargets...)
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// pageHeaders sets the headers of every HTML answer (and of redirects out
// of pages): not frameable, no caching, no referrer, strict CSP.
func (i *Issuer) pageHeaders(w http.ResponseWriter, formTargets ...string) {
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
func (i *Issuer) errorPage(w http.ResponseWriter, status int, heading, message string) {
	i.render(w, status, "error", heading, struct{ Heading, Message string }{heading, message})
}

// cspSourceChars is what a CSP source expression built from a URL may
// contain; anything else is dropped rather than risk injecting directives.
var cspSourceChars = regexp.MustCompile(`^[a-z][a-z0-9+.-]*:(//[A-Za-z0-9.\-\[\]:]+)?$`)

// cspSource returns the CSP source expression that allows navigation to
// the redirect URI s: its origin, or its scheme for private-use schemes.
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

// handleAssets serves the embedded stylesheet.
func (i *Issuer) handleAssets(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, i.base+pathAssets)
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
func (i *Issuer) formPage(w http.ResponseWriter, r *http.Request, get, post http.HandlerFunc, hint string) {
	switch r.Method {
	case http.MethodGet:
		get(w, r)
	case http.MethodPost:
		post(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		i.errorPage(w, http.StatusMethodNotAllowed, "Invalid request", hint)
	}
}
