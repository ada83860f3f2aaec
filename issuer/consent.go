package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// scopeDescriptions explain the OpenID Connect scopes on the consent page;
// resource scopes are shown by name.
var scopeDescriptions = map[string]string{
	"openid":         "confirm who you are",
	"profile":        "see your name",
	"email":          "see your email address",
	"offline_access": "stay connected while you are away",
}

type scopeView struct{ Name, Description string }

type consentView struct {
	Action, CSRF, Req string
	ClientName        string
	ClientID          string
	RedirectHost      string // of a web redirect URI
	RedirectScheme    string // of a private-use one ("com.example.app:")
	Resource          string
	User              string
	Agent             string
	AgentName         string
	LocalOnly         bool
	Scopes            []scopeView
	ScopeList         string
	SelfRegistered    bool // DCR or CIMD: the name is the client's own claim
}

// handleConsent shows the consent page for a pending request (GET) and
// takes the decision (POST).
func (i *Issuer) handleConsent(w http.ResponseWriter, r *http.Request) {
	i.pages.formPage(w, r, i.consentGet, i.consentPost, "Use the consent form.")
}

func (i *Issuer) consentGet(w http.ResponseWriter, r *http.Request) {
	q, ok := i.pages.query(w, r)
	if !ok {
		return
	}
	s, sid, err := i.sessions.current(r)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	id := q.Get("req")
	p, err := i.pending.load(r.Context(), id, s)
	if errors.Is(err, errPendingGone) {
		i.pages.pendingGonePage(w)
		return
	}
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	if !p.Request.freshLogin(s, sid) {
		i.pages.seeOther(w, r, i.base+pathLogin+"?req="+url.QueryEscape(id))
		return
	}
	i.proceed(w, r, s, &p.Request, id)
}

func (i *Issuer) consentPost(w http.ResponseWriter, r *http.Request) {
	s, sid, ok := i.postedForm(w, r, true)
	if !ok {
		return
	}
	i.sessions.touch(w, sid, s)
	ctx := r.Context()
	id := r.PostForm.Get("req")
	p, err := i.pending.load(ctx, id, s)
	if errors.Is(err, errPendingGone) {
		// A double-click: the first post of the decision answered it.
		i.repeatedDecision(w, r, s, id, r.PostForm.Get("decision"))
		return
	}
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	ar := &p.Request
	if !ar.freshLogin(s, sid) {
		// prompt=login or max_age asked for a login this session lacks.
		i.pages.seeOther(w, r, i.base+pathLogin+"?req="+url.QueryEscape(id))
		return
	}
	// The user has seen the consent page, which names the client and
	// where it sends them: errors go to the client, at a redirect URI it
	// still registers (an update may have taken it away meanwhile, and
	// with it the state and the browser: the issuer's page instead).
	redirectError := func(err error) {
		c, cerr := i.dir.lookupClient(ctx, ar.ClientID)
		var gone *Error // unknown, disabled, a document no longer usable
		switch {
		case cerr != nil && !errors.As(cerr, &gone) && !errors.Is(cerr, store.ErrNotFound):
			i.pages.serverErrorPage(w, cerr)
		case cerr != nil || !matchRedirectURI(c.RedirectURIs, ar.RedirectURI):
			i.pages.clientChangedPage(w)
		default:
			i.pages.redirectError(w, r, ar.RedirectURI, ar.State, err)
		}
	}
	fail := func(err error) {
		i.pending.delete(ctx, id)
		redirectError(err)
	}
	switch r.PostForm.Get("decision") {
	case "deny":
		if ar.prompt("consent") {
			// Asked again (prompt=consent), the user said no: the
			// approval given before must not pass the client's next
			// request without it. A page shown for more scopes than
			// were approved leaves the approval as it was.
			err := i.store.Update(ctx, func(tx store.Tx) error {
				return consentsIn(tx).delete(s.User, ar.ClientID, r.PostForm.Get("resource"), ar.Actor)
			})
			if err != nil {
				i.pages.serverErrorPage(w, err)
				return
			}
		}
		denied := ErrAccessDenied.WithDescription("the user denied the request")
		// Kept for a repeat of the Deny (answeredDecision), when
		// redirectError will send it to the client.
		c, cerr := i.dir.lookupClient(ctx, ar.ClientID)
		loc, lerr := withQuery(ar.RedirectURI, i.pages.errorResponse(ar.State, denied))
		if cerr == nil && lerr == nil && matchRedirectURI(c.RedirectURIs, ar.RedirectURI) {
			i.pending.answer(ctx, id, s, "deny", loc)
		} else {
			i.pending.delete(ctx, id)
		}
		redirectError(denied)
	case "approve":
		c, u, err := i.requestParties(ctx, s, ar)
		if errors.Is(err, errClientChanged) {
			i.pending.delete(ctx, id)
			i.pages.clientChangedPage(w)
			return
		}
		if err == nil {
			// Signed in again, as another user, since the page showed.
			err = ar.otherThanHinted(s)
		}
		if err != nil {
			fail(err)
			return
		}
		resource, scopes, err := i.requestScopes(ctx, c, u, ar)
		if err != nil {
			fail(err)
			return
		}
		if r.PostForm.Get("resource") != resource {
			// The request means another resource than the page named: a
			// request without one means the only one configured, which a
			// reload may have replaced. Ask again, naming it.
			i.renderConsent(ctx, w, s, c, u, ar, id, resource, scopes)
			return
		}
		// Grant no more than the page showed, even if policy changed since.
		shown := strings.Fields(r.PostForm.Get("scope"))
		scopes = slices.DeleteFunc(scopes, func(sc string) bool { return !slices.Contains(shown, sc) })
		i.finish(w, r, s, c, ar, id, resource, scopes, true, redirectError)
	default:
		i.pages.errorPage(w, http.StatusBadRequest, "Invalid request", "Choose Allow or Deny.")
	}
}

// renderConsent shows the consent page. Only grantable scopes are listed.
func (i *Issuer) renderConsent(ctx context.Context, w http.ResponseWriter, s *session, c *Client, u *User, ar *authRequest, pendingID, resource string, scopes []string) {
	v := consentView{
		Action:     i.base + pathConsent,
		CSRF:       maskCSRF(s.CSRF),
		Req:        pendingID,
		ClientName: c.Name,
		ClientID:   c.ID,
		Resource:   resource,
		User:       u.Username,
		Agent:      ar.Actor,
		LocalOnly:  localRedirect(ar.RedirectURI),
		ScopeList:  strings.Join(scopes, " "),
	}
	v.RedirectHost, v.RedirectScheme = redirectTarget(ar.RedirectURI)
	// Anyone may register under an operator's client's name, with its
	// redirect URI: only this tells the two pages apart.
	v.SelfRegistered = c.selfRegistered()
	if v.ClientName == "" {
		v.ClientName = c.ID
	}
	if u.Name != "" {
		v.User = u.Name + " (" + u.Username + ")"
	}
	if ar.Actor != "" {
		if a, err := i.dir.lookupAgent(ctx, ar.Actor); err == nil && a.Name != "" {
			v.AgentName = a.Name
		}
	}
	for _, sc := range scopes {
		v.Scopes = append(v.Scopes, scopeView{Name: sc, Description: scopeDescriptions[sc]})
	}
	i.pages.render(w, http.StatusOK, "consent", "Allow access?", v, cspSource(ar.RedirectURI))
}

// redirectTarget is what the consent page shows as the destination: the
// host (and port) of an http(s) redirect URI, or the scheme of a
// private-use one. Such a URI goes to whichever app on the device claims
// the scheme, whatever its "host" says (RFC 8252 section 7.1), so
// com.evil.app://accounts.google.com/cb must not read as going to
// accounts.google.com.
func redirectTarget(uri string) (host, scheme string) {
	u, err := url.Parse(uri)
	if err != nil {
		return uri, ""
	}
	if u.Scheme == "http" || u.Scheme == "https" {
		return u.Host, ""
	}
	return "", u.Scheme + ":"
}

// localRedirect reports whether a redirect URI points at the user's own
// device, a loopback host or a private-use scheme, so the page can warn
// that any local program could be the one asking.
func localRedirect(uri string) bool {
	u, err := url.Parse(uri)
	if err != nil {
		return false
	}
	if u.Scheme == "http" || u.Scheme == "https" {
		return isLoopbackHost(u.Hostname())
	}
	return true
}

// consentEveryTime reports whether remembered consent must not be used
// for c redirecting to redirectURI: a public client whose redirect URI is
// on the user's machine (loopback or a private-use scheme) cannot prove
// who it is, since any local program can claim its client_id and receive
// the code on any loopback port, so the user decides every time and
// prompt=none cannot succeed (RFC 8252 section 8.6; MCP "Localhost
// Redirect URI Risks"). That holds for an operator's client as much as
// for a self-registered one: the operator vouches for the application,
// not for whichever local program uses its client_id.
func consentEveryTime(c *Client, redirectURI string) bool {
	if !c.Public() {
		return false
	}
	k, err := classifyRedirectURI(redirectURI)
	return err != nil || k != redirectWeb
}

// consentTarget is the redirect host (or private-use scheme) a remembered
// consent of c must have been given for, as the consent page named it
// (redirectTarget; a loopback IP literal's whatever the port, as its
// redirect URIs match), "" when any of c's redirect URIs will do. A client
// metadata document's publisher may add redirect URIs at any time, and
// whoever takes the document over (an expired domain, a hijacked static
// host) would otherwise have a code sent to a host of theirs, by a link,
// for every user who approved the app before
// (draft-ietf-oauth-client-id-metadata-document, "Changes in Client
// Metadata"). The operator's clients change only as the operator says,
// and a registration's redirect URIs not at all.
func consentTarget(c *Client, redirectURI string) string {
	if c.Source != sourceCIMD {
		return ""
	}
	host, scheme := redirectTarget(redirectURI)
	if u, err := url.Parse(redirectURI); err == nil && u.Scheme == "http" && isLoopbackIP(u.Hostname()) {
		host = u.Hostname() // any port of it matches (matchRedirectURI)
	}
	return strings.ToLower(host) + scheme
}

// consents are what users approved: remembered consents and, with the live
// grants, the connections listed on the apps page.
type consents struct {
	store store.Store
	dir   *directory // names of clients and agents
}

// approvedClient reports whether the user approved the client before, a
// consent for it remembered (any resource or actor), for redirect host
// target unless it is "".
func (co *consents) approvedClient(ctx context.Context, user, clientID, target string) (bool, error) {
	var ok bool
	err := co.store.View(ctx, func(tx store.Tx) error {
		var err error
		ok, err = consentsIn(tx).hasClient(user, clientID, target)
		return err
	})
	return ok, err
}

// has reports whether the user already approved at least scopes for this
// client, resource and actor, and redirect host target unless it is "".
func (co *consents) has(ctx context.Context, user, clientID, resource, actor string, scopes []string, target string) (bool, error) {
	var ok bool
	err := co.store.View(ctx, func(tx store.Tx) error {
		var err error
		ok, err = consentsIn(tx).covers(user, clientID, resource, actor, scopes, target)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("load consent: %w", err)
	}
	return ok, nil
}
