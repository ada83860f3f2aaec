package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"go.uber.org/zap"
)

// logoutParams are the parameters of OpenID Connect RP-Initiated Logout
// 1.0 section 2, which /logout (the end_session_endpoint) reads from a
// GET query or a POST form, and its confirmation form carries back.
// logout_hint and ui_locales are accepted and not used: the page names
// the signed-in user, and is in English.
var logoutParams = []string{"id_token_hint", "logout_hint", "client_id", "post_logout_redirect_uri", "state", "ui_locales"}

// logoutRequest is a validated RP-Initiated Logout request.
type logoutRequest struct {
	params url.Values // its logoutParams, for the confirmation form
	// client is the application asking: client_id, or the audience of
	// id_token_hint; nil when neither was given.
	client *Client
	hinted string // sub of id_token_hint
	// redirect is the post_logout_redirect_uri, one the client
	// registered; "" for none.
	redirect string
}

// parseLogout validates a logout request (RP-Initiated Logout 1.0
// sections 2 to 4). A non-empty message refuses it: the browser gets an
// error page, never a redirect, and nothing changes. An error is a store
// that could not tell whether the application exists (storeBusy).
func (i *Issuer) parseLogout(ctx context.Context, params url.Values) (*logoutRequest, string, error) {
	omitEmptyParams(params)
	if k := repeatedParam(params); k != "" {
		return nil, repeatedMessage(k, true), nil
	}
	lr := &logoutRequest{params: url.Values{}}
	for _, k := range logoutParams {
		if v := params.Get(k); len(v) > maxAuthorizeParam {
			return nil, fmt.Sprintf("The parameter %s is too long.", k), nil
		} else if v != "" {
			lr.params.Set(k, v)
		}
	}
	clientID := params.Get("client_id")
	if hint := params.Get("id_token_hint"); hint != "" {
		// Section 2: this issuer signed it; an expired one still names
		// whom the client saw signed in.
		claims := i.idTokenHint(ctx, hint)
		switch {
		case claims == nil:
			return nil, "The id_token_hint is not an ID token this server issued.", nil
		case clientID != "" && !slices.Contains(claims.Audience, clientID):
			return nil, "The id_token_hint was not issued to the application client_id names.", nil
		case clientID == "" && len(claims.Audience) != 1:
			return nil, "The id_token_hint names several applications: say which with client_id.", nil
		case clientID == "":
			clientID = claims.Audience[0]
		}
		lr.hinted = claims.Subject
	}
	if clientID != "" {
		c, err := i.dir.lookupClient(ctx, clientID)
		if storeBusy(err) {
			// The store could not tell: not an unknown application.
			return nil, "", err
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidClient) {
				i.log.Error("logout: look up client", zap.Error(err))
			}
			return nil, "The application (client_id) is not known to this server.", nil
		}
		lr.client = c
	}
	if uri := params.Get("post_logout_redirect_uri"); uri != "" {
		// Section 3: exactly one the client registered for this, never
		// its redirect_uris; without a client, none is.
		switch {
		case lr.client == nil:
			return nil, "A post_logout_redirect_uri needs an id_token_hint or a client_id naming the application.", nil
		case !slices.Contains(lr.client.PostLogoutRedirectURIs, uri):
			return nil, "The post_logout_redirect_uri is not registered for this application.", nil
		}
		lr.redirect = uri
	}
	return lr, "", nil
}

type logoutView struct {
	Action, CSRF, User string
	Params             []logoutParam // the request, carried by the form
	ClientName         string
	SelfRegistered     bool
	OtherUser          bool   // id_token_hint names another user
	ReturnHost         string // of an http(s) post_logout_redirect_uri
	ReturnScheme       string // of a private-use one
}

type logoutParam struct{ Name, Value string }

// handleLogout is the end_session_endpoint (OpenID Connect RP-Initiated
// Logout 1.0). A request (GET, or an application's POST) is validated and
// the signed-in user asked to confirm, always: section 2 requires it
// without a valid id_token_hint, and with one an ID token (which a page
// of any site can send, expired ones too) still says nothing of what the
// user wants. The confirmation's CSRF-protected POST validates the
// request again (its hidden fields are the request, not a verdict), ends
// the session and sends the browser to the post_logout_redirect_uri.
func (i *Issuer) handleLogout(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		// Read as strictly as /authorize's GET: URL.Query drops a pair
		// it cannot read, which other readers split or decode otherwise.
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			i.pages.errorPage(w, http.StatusBadRequest, "Invalid request", "The sign-out request could not be read.")
			return
		}
		i.logoutAsk(w, r, q)
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
		if err := r.ParseForm(); err != nil {
			i.pages.unreadableForm(w, err, "The sign-out request could not be read.")
			return
		}
		if r.PostForm.Has(csrfField) {
			i.logoutConfirmed(w, r)
			return
		}
		if !i.sessions.hasCookie(r) {
			// An application's POST, cross-site: it came without the
			// SameSite=Lax session cookie, and a signed-in user would look
			// signed out (redirected at once, the session left). The GET
			// of the same request carries the cookie, as at /authorize.
			i.logoutAgain(w, r)
			return
		}
		i.logoutAsk(w, r, r.PostForm)
	default:
		w.Header().Set("Allow", "GET, POST")
		i.pages.errorPage(w, http.StatusMethodNotAllowed, "Invalid request", "Use the sign-out form.")
	}
}

// logoutAgain sends an application's POST on as the GET of the same
// request, without its ID token: in a URL it would stay in the browser's
// history and in access logs. The request is checked here, and the
// id_token_hint replaced by the client it names (client_id), which is
// what the GET needs of it (what it loses is the warning that the hint
// names another user than the one signed in).
func (i *Issuer) logoutAgain(w http.ResponseWriter, r *http.Request) {
	lr, msg, err := i.parseLogout(r.Context(), r.PostForm)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	if msg != "" {
		i.pages.errorPage(w, http.StatusBadRequest, "Sign-out request not accepted", msg)
		return
	}
	q := lr.params
	if q.Has("id_token_hint") {
		q.Del("id_token_hint")
		q.Set("client_id", lr.client.ID)
	}
	i.pages.seeOther(w, r, i.base+pathLogout+"?"+q.Encode())
}

// logoutAsk answers a logout request: the confirmation page for a
// signed-in user; for no one, there is no session to end (section 4:
// not an error), so the browser goes on as after a sign-out.
func (i *Issuer) logoutAsk(w http.ResponseWriter, r *http.Request, params url.Values) {
	lr, msg, err := i.parseLogout(r.Context(), params)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	if msg != "" {
		i.pages.errorPage(w, http.StatusBadRequest, "Sign-out request not accepted", msg)
		return
	}
	s, _, err := i.sessions.current(r)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	if s == nil || s.User == "" {
		i.loggedOut(w, r, lr, "You are not signed in.", false)
		return
	}
	v := logoutView{Action: i.base + pathLogout, CSRF: maskCSRF(s.CSRF), User: s.User, OtherUser: lr.hinted != "" && lr.hinted != s.User}
	for _, k := range logoutParams {
		if lr.params.Has(k) {
			v.Params = append(v.Params, logoutParam{k, lr.params.Get(k)})
		}
	}
	if lr.client != nil {
		v.ClientName, v.SelfRegistered = lr.client.ID, lr.client.selfRegistered()
		if lr.client.Name != "" {
			v.ClientName = lr.client.Name
		}
	}
	v.ReturnHost, v.ReturnScheme = redirectTarget(lr.redirect)
	i.pages.render(w, http.StatusOK, "logout", "Sign out", v, cspSource(lr.redirect))
}

// logoutConfirmed is the confirmation form's POST: "stay" keeps the
// session and sends nobody anywhere; otherwise the session ends. A
// confirmation that finds no one signed in is answered as the request
// itself is then (logoutAsk): the second click of a double-click on Sign
// out, which the browser sends before the first one's answer arrives and
// then shows instead of it, finds the session the first one ended, and
// got "Form expired" (try again) where the user had been signed out,
// and the application never got its post_logout_redirect_uri. Signing
// out no one changes nothing, so no CSRF token is needed for it: a page
// of any site can send the browser to GET /logout with the same request.
// A confirmation without the session cookie at all is a page of another
// site's POST (the SameSite=Lax cookie stays behind), made to look like
// one: a signed-in user would be told "You are not signed in", or sent on
// to the application as if signed out, the session left. It goes on as
// the GET of the request (logoutAgain), which carries the cookie and asks
// a signed-in user; the double-click's second POST carries its cookie.
func (i *Issuer) logoutConfirmed(w http.ResponseWriter, r *http.Request) {
	if !i.sessions.hasCookie(r) {
		i.logoutAgain(w, r)
		return
	}
	switch s, _, err := i.sessions.current(r); {
	case err != nil:
		i.pages.serverErrorPage(w, err)
		return
	case s == nil || s.User == "":
		i.logoutAsk(w, r, r.PostForm)
		return
	}
	_, sid, ok := i.postedForm(w, r, false)
	if !ok {
		return
	}
	lr, msg, err := i.parseLogout(r.Context(), r.PostForm)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	if msg != "" {
		i.pages.errorPage(w, http.StatusBadRequest, "Sign-out request not accepted", msg)
		return
	}
	if r.PostForm.Get("action") == "stay" {
		i.pages.render(w, http.StatusOK, "message", "Still signed in", messageView{
			Heading: "Still signed in", Message: "You are still signed in.", Link: i.base + pathApps, LinkText: "Your connected apps",
		})
		return
	}
	if err := i.sessions.end(r.Context(), w, sid); err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	i.loggedOut(w, r, lr, "You have been signed out.", true)
}

// loggedOut sends the browser on after a sign-out, or after a request
// with no one signed in (confirmed false): to the post_logout_redirect_uri
// with state (section 3), or to a page saying msg. Unconfirmed, the
// browser of a self-registered client (DCR, CIMD) gets the page, with a
// link to the URI: anyone can register any URI, and a redirect with no
// page of ours seen would make /logout an open redirector, as earlyError
// avoids at /authorize (an ID token of the attacker's own, expired ones
// accepted, would not stop it).
func (i *Issuer) loggedOut(w http.ResponseWriter, r *http.Request, lr *logoutRequest, msg string, confirmed bool) {
	var state url.Values
	if st := lr.params.Get("state"); st != "" {
		state = url.Values{"state": {st}}
	}
	if lr.redirect != "" && (confirmed || !lr.client.selfRegistered()) {
		i.pages.redirectTo(w, r, lr.redirect, state)
		return
	}
	v := messageView{Heading: "Signed out", Message: msg}
	if confirmed {
		v.Link, v.LinkText = i.base+pathApps, "Sign in again"
	}
	if host, _ := redirectTarget(lr.redirect); host != "" {
		// A link is followed by the user's choice; html/template would
		// blank one of a private-use scheme. One withQuery refuses gets
		// none.
		if link, err := withQuery(lr.redirect, state); err == nil {
			v.Link, v.LinkText = link, "Return to "+host
		}
	}
	i.pages.render(w, http.StatusOK, "message", "Signed out", v)
}
