package issuer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// maxPageFormBytes bounds form bodies of the browser endpoints.
const maxPageFormBytes = 32 << 10

// authorizeParams are the authorization request parameters this server
// reads (authorizeClient, authorizeRedirectURI, parseAuthorize; request
// and request_uri are refused or consumed). A pushed request stores only
// these, others are ignored (RFC 6749 section 3.1). Each value is bounded
// by maxAuthorizeParam and all together by maxAuthorizeParams, so what a
// request parks in the store (pushed or pending) stays small.
var authorizeParams = []string{
	"client_id", "response_type", "response_mode", "redirect_uri", "scope", "state",
	"code_challenge", "code_challenge_method", "resource", "nonce", "requested_actor",
	"prompt", "max_age", "dpop_jkt", "id_token_hint",
}

// forwardedAuthorizeParams are the parameters of a cross-site POST that
// its GET form carries on: those an authorization request reads
// (authorizeParams), and request and request_uri, answered as they are.
// Others would be ignored, and a client that posts its client_secret,
// a client_assertion or a code_verifier here would have it in a URL,
// which the browser's history and access logs (Location) keep.
func forwardedAuthorizeParams(params url.Values) url.Values {
	out := url.Values{}
	for _, k := range slices.Concat(authorizeParams, []string{"request", "request_uri"}) {
		if v, ok := params[k]; ok {
			out[k] = v
		}
	}
	return out
}

const (
	maxAuthorizeParam  = 2000 // as long as a client_id or redirect URI may be
	maxAuthorizeParams = 4 << 10
)

// errOneResource refuses several resource parameters: RFC 8707 section 2
// allows them, as an error of the resource (invalid_target) rather than
// of a repeated parameter, but this server issues one audience per token.
var errOneResource = ErrInvalidTarget.WithDescription("only one resource per request is supported")

// repeatedParam names a parameter params holds more than once (RFC 6749
// section 3.1: parameters MUST NOT be included more than once), "" when
// none is.
func repeatedParam(params url.Values) string {
	for k, v := range params {
		if len(v) > 1 {
			return k
		}
	}
	return ""
}

// repeatedMessage says that the parameter k is repeated, naming it
// (capitalised: "The parameter state is repeated") when its name is a
// plain one, as every parameter of this server's is: letters, digits,
// '_', '-' and '.', at most 40 bytes. A name is the sender's to choose,
// and the message reaches the issuer's error pages (any request's at
// /logout, whose link anyone can send; a self-registered client's early
// errors at /authorize): named as sent, it put the link author's words
// there, and a right-to-left override among them turned those and the
// page's own around (TestErrorPageRepeatedParamName).
func repeatedMessage(k string, capitalised bool) string {
	plain := k != "" && len(k) <= 40 && !strings.ContainsFunc(k, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
	})
	switch {
	case plain && capitalised:
		return "The parameter " + k + " is repeated."
	case plain:
		return "parameter " + k + " is repeated"
	case capitalised:
		return "A parameter is repeated."
	}
	return "a parameter is repeated"
}

// omitEmptyParams deletes the parameters sent once with an empty value:
// RFC 6749 section 3.1 has them treated as omitted ("redirect_uri=" picks
// the only registered URI, "request=" is no request object). One that is
// repeated stays, and is refused as repeated.
func omitEmptyParams(params url.Values) {
	for k, v := range params {
		if len(v) == 1 && v[0] == "" {
			delete(params, k)
		}
	}
}

// authRequest is a validated authorization request.
type authRequest struct {
	ClientID string `json:"client_id"`
	// RedirectURI is where the response goes; RedirectParam is the
	// redirect_uri parameter as sent ("" when omitted), which the token
	// request must repeat.
	RedirectURI         string   `json:"redirect_uri"`
	RedirectParam       string   `json:"redirect_param,omitempty"`
	State               string   `json:"state,omitempty"`
	CodeChallenge       string   `json:"code_challenge"`
	CodeChallengeMethod string   `json:"code_challenge_method"`
	Resource            string   `json:"resource,omitempty"` // as requested ("" = default)
	Scopes              []string `json:"scopes,omitempty"`   // as requested
	Nonce               string   `json:"nonce,omitempty"`
	Prompt              []string `json:"prompt,omitempty"`
	Actor               string   `json:"actor,omitempty"` // requested_actor
	DPoPJKT             string   `json:"dpop_jkt,omitempty"`
	// Hinted (id_token_hint) is the user the client expects signed in:
	// the hint's sub, or noUser for a hint that is no ID token this
	// issuer gave the client. A session of another user goes to the
	// sign-in page (prompt=none: login_required), and a sign-in as
	// another user than a readable hint's ends in login_required
	// (otherThanHinted).
	Hinted string `json:"hinted,omitempty"`
	// LoginAfter (max_age; prompt=login: the request's time) is the
	// earliest login time the request accepts.
	LoginAfter time.Time `json:"login_after,omitzero"`
	// StaleSession (prompt=login or select_account, an id_token_hint of
	// another user) is the storage key of the session that was logged in
	// when the request came. The user must sign in again, and every
	// sign-in replaces the session, so it must not be the one.
	StaleSession string `json:"stale_session,omitempty"`
}

func (a *authRequest) prompt(v string) bool { return slices.Contains(a.Prompt, v) }

// otherThanHinted is login_required when s is signed in as another user
// than the one id_token_hint names (OpenID Connect Core 3.1.2.2: a
// positive answer only when that user "is logged in or is logged in by
// the request"; otherwise it SHOULD return an error), nil otherwise. A
// hint that names nobody this issuer can read (noUser) asks for a
// sign-in, and whoever signs in answers it: refusing them all would
// leave a client holding an ID token of a retired key no way in.
func (a *authRequest) otherThanHinted(s *session) error {
	if a.Hinted == "" || a.Hinted == noUser || s.User == a.Hinted {
		return nil
	}
	return &Error{Code: "login_required", Description: "the user signed in is not the one id_token_hint names"}
}

// signInAsked reports whether the request asks for the sign-in page
// whatever the session: prompt=login, and prompt=select_account (OpenID
// Connect Core 3.1.2.1), since the sign-in page is where a user chooses
// the account; going on with the signed-in one would choose for them.
func (a *authRequest) signInAsked() bool { return a.prompt("login") || a.prompt("select_account") }

// freshLogin reports whether s (with id sid) is a login this request
// accepts (max_age, prompt=login).
func (a *authRequest) freshLogin(s *session, sid string) bool {
	return s != nil && s.User != "" && !s.AuthTime.Before(a.LoginAfter) &&
		(a.StaleSession == "" || tokenKey(sid) != a.StaleSession)
}

// handleAuthorize is the authorization endpoint (RFC 6749 section 4.1.1,
// with PKCE, resource indicators, PAR and RFC 9207 iss).
func (i *Issuer) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	var params url.Values
	switch r.Method {
	case http.MethodGet:
		// Read as strictly as a POST's form (ParseForm) and the
		// back-channel bodies: URL.Query drops a pair it cannot read (a
		// ';' separator, a bad escape), which other readers of the same
		// URL split or decode otherwise.
		var err error
		if params, err = url.ParseQuery(r.URL.RawQuery); err != nil {
			i.pages.errorPage(w, http.StatusBadRequest, "Invalid request", "The authorization request could not be read.")
			return
		}
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
		if err := r.ParseForm(); err != nil {
			i.pages.unreadableForm(w, err, "The authorization request could not be read.")
			return
		}
		params = r.PostForm
		if !i.sessions.hasCookie(r) {
			// A cross-site POST arrives without the SameSite=Lax session
			// cookie, so a signed-in browser would look anonymous here and
			// get a new session in place of its own (signed out by any
			// site). The GET form of the same request carries the cookie;
			// nothing is read or stored before it (a pushed request is
			// consumed there). An ID token (id_token_hint) goes along:
			// only the GET, with the cookie, can compare the user it
			// names with the signed-in one, whatever the prompt. With a
			// prompt the GET refuses it is read by no one, and left out
			// of the URL the browser's history and access logs keep.
			if _, err := parsePrompt(params.Get("prompt")); len(params["id_token_hint"]) == 1 && err != nil {
				params.Del("id_token_hint")
			}
			i.pages.seeOther(w, r, i.base+pathAuthorize+"?"+forwardedAuthorizeParams(params).Encode())
			return
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		i.pages.errorPage(w, http.StatusMethodNotAllowed, "Invalid request", "The authorization endpoint accepts GET and POST.")
		return
	}
	ctx := r.Context()

	omitEmptyParams(params)
	c, params, usedPAR, msg, err := i.authorizeClient(ctx, params)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	if msg != "" {
		i.pages.errorPage(w, http.StatusBadRequest, "Invalid request", msg)
		return
	}
	redirectURI, redirectParam, msg := authorizeRedirectURI(c, params)
	if msg != "" {
		i.pages.errorPage(w, http.StatusBadRequest, "Invalid redirect URI", msg)
		return
	}
	// From here on, errors go back to the client's redirect URI, if the
	// client may have them unprompted (earlyError).
	state := params.Get("state")
	fail := func(err error) { i.pages.earlyError(w, r, c, redirectURI, state, err) }
	ar, err := i.parseAuthorize(ctx, c, params, usedPAR)
	if err != nil {
		fail(err)
		return
	}
	ar.RedirectURI, ar.RedirectParam = redirectURI, redirectParam

	s, sid, err := i.sessions.current(r)
	if err != nil {
		fail(ErrServerError.Wrap(err))
		return
	}
	loggedIn := ar.freshLogin(s, sid)
	if ar.prompt("none") && !loggedIn {
		i.silentError(w, r, s, c, ar, &Error{Code: "login_required", Description: "the user is not logged in, or not recently enough"})
		return
	}
	// OpenID Connect Core 3.1.2.1: the user the ID token names is not the
	// one signed in. The answer is for the user logged in by the request,
	// which prompt=none cannot ask for.
	otherUser := loggedIn && ar.Hinted != "" && s.User != ar.Hinted
	if otherUser && ar.prompt("none") {
		i.silentError(w, r, s, c, ar, &Error{Code: "login_required", Description: "the user id_token_hint names is not the one signed in"})
		return
	}
	if !loggedIn || ar.signInAsked() || otherUser {
		if loggedIn {
			ar.StaleSession = tokenKey(sid)
		}
		if s == nil || s.User == "" {
			// Nobody has signed in: the pending request is an
			// unauthenticated write.
			switch d, err := i.anonWrites.take(ctx, clientAddr(r)); {
			case err != nil:
				fail(err)
				return
			case d > 0:
				fail(tooManySignIns(d))
				return
			}
		} else if err := i.signedInWrite(ctx, s.User); err != nil {
			fail(err)
			return
		}
		if s == nil {
			if s, err = i.sessions.ensure(w, r); err != nil {
				fail(err)
				return
			}
		}
		id, err := i.pending.save(ctx, s, ar)
		if err != nil {
			fail(ErrServerError.Wrap(err))
			return
		}
		i.pages.seeOther(w, r, i.base+pathLogin+"?req="+url.QueryEscape(id))
		return
	}
	i.proceed(w, r, s, ar, "")
}

// authorizeClient resolves the client and, for a pushed request, replaces
// params by the pushed ones. A non-empty message means the request cannot
// be answered at any redirect URI and gets an error page. An error is a
// store that could not tell (storeBusy): not an unknown client or pushed
// request, which the user would give up on, but "Temporarily
// unavailable".
func (i *Issuer) authorizeClient(ctx context.Context, params url.Values) (*Client, url.Values, bool, string, error) {
	ids := params["client_id"]
	if len(ids) != 1 || ids[0] == "" {
		return nil, nil, false, "The request has no valid client_id.", nil
	}
	c, err := i.dir.lookupClient(ctx, ids[0])
	if storeBusy(err) {
		return nil, nil, false, "", err
	}
	if err != nil {
		var e *Error
		if !errors.Is(err, ErrInvalidClient) {
			i.log.Error("authorize: look up client", zap.Error(err))
		}
		if errors.As(err, &e) && e.Description != "" && i.cimd.isClientID(ids[0]) {
			return nil, nil, false, "The application could not be identified: " + e.Description + ".", nil
		}
		return nil, nil, false, "The application (client_id) is not known to this server.", nil
	}
	uris := params["request_uri"]
	if len(uris) == 0 {
		return c, params, false, "", nil
	}
	if len(uris) != 1 {
		return nil, nil, false, "The request_uri parameter is repeated.", nil
	}
	if !strings.HasPrefix(uris[0], requestURIPrefix) {
		// No pushed request's: a request object to fetch, which
		// parseAuthorize answers with request_uri_not_supported at the
		// redirect URI the query names.
		return c, params, false, "", nil
	}
	pr, err := i.consumePAR(ctx, c, uris[0])
	if storeBusy(err) {
		return nil, nil, false, "", err
	}
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			i.log.Error("authorize: consume pushed request", zap.Error(err))
		}
		return nil, nil, false, "The pushed authorization request is unknown, expired, already used, or belongs to another application.", nil
	}
	// RFC 9126 section 4: only the pushed parameters count; client_id and
	// request_uri in the query only find them. handlePAR omitted the
	// empty ones.
	return c, pr.Params, true, "", nil
}

// consumePAR redeems a pushed request for client c: read, checked and
// deleted in one transaction, so a request_uri works exactly once. One
// that is expired or was pushed by another client is left as it is
// (store.ErrNotFound): presenting a leaked request_uri must not let
// another client use up the request of the one that pushed it.
func (i *Issuer) consumePAR(ctx context.Context, c *Client, requestURI string) (*parRequest, error) {
	var pr *parRequest
	err := i.store.Update(ctx, func(tx store.Tx) error {
		var err error
		pr, err = parIn(tx).consume(requestURI, c.ID, i.now())
		return err
	})
	if err != nil {
		return nil, err
	}
	return pr, nil
}

// authorizeRedirectURI picks the redirect URI: the redirect_uri parameter
// if it matches a registered one, or the only registered one when the
// parameter is omitted from an OAuth request. An OpenID Connect request
// (openid in scope) must name it (OpenID Connect Core 3.1.2.1).
func authorizeRedirectURI(c *Client, params url.Values) (uri, param, msg string) {
	rs := params["redirect_uri"]
	switch {
	case len(rs) > 1:
		return "", "", "The redirect_uri parameter is repeated."
	case len(rs) == 0 && slices.Contains(strings.Fields(params.Get("scope")), scopeOpenID):
		return "", "", "An OpenID Connect request (scope openid) must carry redirect_uri."
	case len(rs) == 0 && len(c.RedirectURIs) == 1:
		return c.RedirectURIs[0], "", ""
	case len(rs) == 0:
		return "", "", "The request has no redirect_uri and the application has not registered exactly one."
	case !matchRedirectURI(c.RedirectURIs, rs[0]):
		return "", "", "The redirect_uri is not registered for this application."
	}
	return rs[0], rs[0], ""
}

// matchRedirectURI compares a requested redirect URI with the registered
// ones: exactly, except that for http loopback IP literals the port is
// ignored (RFC 8252 section 7.3: native apps get an ephemeral port), if
// it is one (accesstoken.ValidPort: a browser reads :05555 as :5555).
// "localhost" is matched exactly, like any other host name.
func matchRedirectURI(registered []string, got string) bool {
	if slices.Contains(registered, got) {
		return true
	}
	g, err := url.Parse(got)
	if err != nil || g.Scheme != "http" || g.User != nil || g.Fragment != "" || strings.Contains(got, "#") || !isLoopbackIP(g.Hostname()) ||
		!accesstoken.ValidPort(g.Port()) {
		return false
	}
	for _, reg := range registered {
		u, err := url.Parse(reg)
		if err != nil || u.Scheme != "http" || u.User != nil || u.Fragment != "" {
			continue
		}
		if u.Hostname() == g.Hostname() && u.EscapedPath() == g.EscapedPath() &&
			u.RawQuery == g.RawQuery && u.ForceQuery == g.ForceQuery {
			return true
		}
	}
	return false
}

func isLoopbackIP(h string) bool {
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback() && !strings.Contains(h, "%")
}

// parseAuthorize validates the parameters after client and redirect URI.
// Errors are *Error and go to the redirect URI.
func (i *Issuer) parseAuthorize(ctx context.Context, c *Client, params url.Values, usedPAR bool) (*authRequest, error) {
	invalid := func(d string) error { return ErrInvalidRequest.WithDescription(d) }
	if !usedPAR && params.Has("request_uri") {
		// OpenID Connect Core 3.1.2.6; request_uri_parameter_supported
		// is false: nothing is fetched.
		return nil, &Error{Code: "request_uri_not_supported", Description: "request_uri is supported only as the answer of the pushed authorization request endpoint"}
	}
	switch {
	case usedPAR:
	case i.cfg.RequirePAR:
		return nil, invalid("this server requires pushed authorization requests (request_uri)")
	case c.RequirePushedAuthorizationRequests:
		return nil, invalid("this client is registered with require_pushed_authorization_requests: push the request first (request_uri)")
	}
	if len(params["resource"]) > 1 {
		return nil, errOneResource
	}
	if k := repeatedParam(params); k != "" {
		return nil, invalid(repeatedMessage(k, false))
	}
	if params.Has("request") {
		return nil, &Error{Code: "request_not_supported", Description: "request objects are not supported; use PAR"}
	}
	total := 0
	for _, k := range authorizeParams {
		n := len(params.Get(k))
		if n > maxAuthorizeParam {
			return nil, invalid(fmt.Sprintf("parameter %s is too long", k))
		}
		total += n
	}
	if total > maxAuthorizeParams {
		return nil, invalid("the request's parameters are too long")
	}
	switch rt := params.Get("response_type"); rt {
	case "code":
	case "":
		return nil, invalid("response_type is required")
	default:
		return nil, ErrUnsupportedResponseType.WithDescription("only response_type code is supported")
	}
	if len(c.GrantTypes) > 0 && !slices.Contains(c.GrantTypes, "authorization_code") {
		return nil, ErrUnauthorizedClient.WithDescription("the client may not use the authorization code grant")
	}
	if m := params.Get("response_mode"); m != "" && m != "query" {
		return nil, invalid("only response_mode query is supported")
	}
	ar := &authRequest{
		ClientID:            c.ID,
		State:               params.Get("state"),
		CodeChallenge:       params.Get("code_challenge"),
		CodeChallengeMethod: params.Get("code_challenge_method"),
		Resource:            params.Get("resource"),
		Nonce:               params.Get("nonce"),
		Actor:               params.Get("requested_actor"),
	}
	// OAuth 2.1: PKCE is required and plain is not accepted.
	if ar.DPoPJKT = params.Get("dpop_jkt"); ar.DPoPJKT != "" && !validJKT(ar.DPoPJKT) {
		return nil, invalid("dpop_jkt is not a base64url SHA-256 JWK thumbprint")
	}
	if ar.CodeChallenge == "" {
		return nil, invalid("code_challenge is required (PKCE)")
	}
	if ar.CodeChallengeMethod != "S256" {
		return nil, invalid("code_challenge_method must be S256")
	}
	if !validS256Challenge(ar.CodeChallenge) {
		return nil, invalid("code_challenge is not a base64url SHA-256 value")
	}
	if ar.Resource != "" {
		u, err := url.Parse(ar.Resource)
		if err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(ar.Resource, "#") {
			return nil, ErrInvalidTarget.WithDescription("resource must be an absolute URI without a fragment")
		}
	}
	scopes, err := parseScope(params.Get("scope"))
	if err != nil {
		return nil, err
	}
	if slices.Contains(scopes, scopeOpenID) {
		// An unknown target is refused below (authorizationScopes).
		if res, err := i.policy.resolveResource(c, ar.Resource); err == nil {
			scopes = slices.DeleteFunc(scopes, func(s string) bool {
				return slices.Contains(unheldClaimScopes, s) && !slices.Contains(res.Scopes, s)
			})
		}
	}
	ar.Scopes = scopes
	if slices.Contains(scopes, scopeOpenID) {
		if err := i.idTokenAlgOffered(c); err != nil {
			return nil, err
		}
	}
	if ar.Prompt, err = parsePrompt(params.Get("prompt")); err != nil {
		return nil, err
	}
	if v := params.Get("max_age"); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if errors.Is(err, strconv.ErrRange) {
			// No upper bound (OpenID Connect Core 3.1.2.1): every
			// login with a known auth_time is within 136 years.
			n, err = math.MaxUint32, nil
		}
		if err != nil {
			return nil, invalid("max_age must be a number of seconds")
		}
		ar.LoginAfter = i.now().Add(-time.Duration(n) * time.Second)
	} else if c.DefaultMaxAge != nil {
		ar.LoginAfter = i.now().Add(-time.Duration(*c.DefaultMaxAge) * time.Second)
	}
	if hint := params.Get("id_token_hint"); hint != "" {
		ar.Hinted = i.hintedUser(ctx, c, hint)
	}
	if ar.prompt("login") {
		// A login after this request: a new session alone is not one,
		// since a sign-in at an identity provider without this request
		// (the login page's button) is silent when the provider has a
		// session, and its session's AuthTime is the provider's.
		// prompt=select_account asks for a choice of account, not for
		// a new authentication: the sign-in page (StaleSession) is it,
		// and a provider's session may answer it.
		ar.LoginAfter = i.now()
	}
	if len(ar.State) > 2000 || len(ar.Nonce) > 2000 || len(ar.Actor) > 500 {
		return nil, invalid("state, nonce or requested_actor too long")
	}
	if params.Has("requested_actor") {
		// The consent page names the agent, so it must be one we know.
		// Unknown, disabled and not allowed for this client read alike:
		// anyone may send a client's authorization request, and the
		// answer passes through their browser (as invalid_scope's).
		if a, err := i.dir.lookupAgent(ctx, ar.Actor); err != nil || !a.allowsClient(c.ID) {
			return nil, invalid("requested_actor is not an agent that may act for this client")
		}
	}
	// Check the target and the client's own limits before asking anyone to
	// log in; the user's share is decided after login.
	// OpenID Connect scopes are about the user, so they are left out here.
	resourceScopes := slices.DeleteFunc(slices.Clone(ar.Scopes), func(s string) bool { return slices.Contains(oidcScopes, s) })
	if err := i.policy.authorizationScopes(ctx, c, ar.Resource, resourceScopes); err != nil {
		return nil, err
	}
	return ar, nil
}

// validS256Challenge: BASE64URL(SHA-256(verifier)) is 43 characters.
func validS256Challenge(s string) bool {
	if len(s) != 43 {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// parseScope splits a scope parameter (RFC 6749 section 3.3), dropping
// duplicates.
func parseScope(s string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(s, " ") {
		if t == "" {
			continue
		}
		if !accesstoken.ValidScope(t) {
			return nil, ErrInvalidScope.WithDescription("scope contains characters RFC 6749 does not allow")
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// noUser names no user: hintedUser's answer for a hint it cannot read.
const noUser = "\x00"

// hintedUser is the sub of id_token_hint, an ID token this issuer signed
// for c, expired or not (OpenID Connect Core 3.1.2.1); noUser when it is
// not one (another client's, forged, signed by a key retired since).
func (i *Issuer) hintedUser(ctx context.Context, c *Client, raw string) string {
	claims := i.idTokenHint(ctx, raw)
	if claims == nil || !slices.Contains(claims.Audience, c.ID) {
		return noUser
	}
	return claims.Subject
}

// idTokenHint reads an id_token_hint: the claims of an ID token this
// issuer signed, expired or not (a hint names who the client saw signed
// in, whenever that was), with a sub and an audience; nil when it is not
// one (forged, another issuer's, an access token, signed by a key
// retired since).
func (i *Issuer) idTokenHint(ctx context.Context, raw string) *jwt.RegisteredClaims {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); typ != "JWT" {
			return nil, errors.New("an ID token is typed JWT") // an access token is at+jwt
		}
		kid, _ := t.Header["kid"].(string)
		return i.idTokenKey(ctx, kid)
	}, jwt.WithValidMethods(signingAlgs), jwt.WithoutClaimsValidation()) // expired hints count
	if err != nil || claims.Issuer != i.URL() || claims.Subject == "" || len(claims.Audience) == 0 {
		return nil
	}
	return &claims
}

// parsePrompt reads the OpenID Connect prompt parameter.
func parsePrompt(s string) ([]string, error) {
	vals := strings.Fields(s)
	for _, v := range vals {
		switch v {
		case "none", "login", "consent", "select_account":
		default:
			return nil, ErrInvalidRequest.WithDescription(fmt.Sprintf("unsupported prompt value %q", truncate(v, 40)))
		}
	}
	if slices.Contains(vals, "none") && len(vals) > 1 {
		return nil, ErrInvalidRequest.WithDescription("prompt none cannot be combined with other values")
	}
	return vals, nil
}

// proceed continues a request for a logged-in session: it decides the
// scopes, then issues a code right away when consent is remembered, or
// shows the consent page (via /consent?req=… when called from /authorize,
// pendingID "").
//
// The user has seen no consent page of the request yet, so its errors go
// through earlyError, also when called from the consent step: the browser
// gets there by redirects alone (from /authorize, or from a sign-in that
// a link began), and whatever a self-registered client can make fail here
// (a metadata document that stops validating, say) must not turn into a
// redirect to a URI it chose.
func (i *Issuer) proceed(w http.ResponseWriter, r *http.Request, s *session, ar *authRequest, pendingID string) {
	ctx := r.Context()
	var c *Client
	fail := func(err error) {
		if pendingID != "" {
			i.pending.delete(ctx, pendingID)
		}
		i.pages.earlyError(w, r, c, ar.RedirectURI, ar.State, err)
	}
	c, u, err := i.requestParties(ctx, s, ar)
	if errors.Is(err, errClientChanged) {
		if pendingID != "" {
			i.pending.delete(ctx, pendingID)
		}
		i.pages.clientChangedPage(w)
		return
	}
	if err == nil {
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
	if !ar.prompt("consent") && !consentEveryTime(c, ar.RedirectURI) {
		ok, err := i.consents.has(ctx, u.Username, c.ID, resource, ar.Actor, scopes, consentTarget(c, ar.RedirectURI))
		if err != nil {
			fail(ErrServerError.Wrap(err))
			return
		}
		if ok {
			if pendingID == "" {
				if err := i.signedInWrite(ctx, s.User); err != nil {
					fail(err)
					return
				}
			}
			i.finish(w, r, s, c, ar, pendingID, resource, scopes, false, fail)
			return
		}
	}
	if ar.prompt("none") {
		if pendingID != "" {
			i.pending.delete(ctx, pendingID)
		}
		i.silentError(w, r, s, c, ar, &Error{Code: "consent_required", Description: "the user has not approved this application"})
		return
	}
	if pendingID == "" {
		if err := i.signedInWrite(ctx, s.User); err != nil {
			fail(err)
			return
		}
		id, err := i.pending.save(ctx, s, ar)
		if err != nil {
			fail(ErrServerError.Wrap(err))
			return
		}
		i.pages.seeOther(w, r, i.base+pathConsent+"?req="+url.QueryEscape(id))
		return
	}
	i.renderConsent(ctx, w, s, c, u, ar, pendingID, resource, scopes)
}

// silentError answers an error of a prompt=none request, which must end
// at the client (OpenID Connect Core 3.1.2.1). A self-registered client
// gets early errors on the error page (earlyError), but not once the
// signed-in user approved it before, its consent remembered: the user
// trusts its redirect URIs (RFC 9700 section 4.11.2), to which a silent
// success would go unprompted as well (a metadata document client's
// redirect hosts the user approved, consentTarget). A store that cannot tell keeps
// the page.
func (i *Issuer) silentError(w http.ResponseWriter, r *http.Request, s *session, c *Client, ar *authRequest, err error) {
	if c != nil && c.selfRegistered() && s != nil && s.User != "" && !consentEveryTime(c, ar.RedirectURI) {
		if ok, lookupErr := i.consents.approvedClient(r.Context(), s.User, c.ID, consentTarget(c, ar.RedirectURI)); lookupErr == nil && ok {
			i.pages.redirectError(w, r, ar.RedirectURI, ar.State, err)
			return
		}
	}
	i.pages.earlyError(w, r, c, ar.RedirectURI, ar.State, err)
}

// signedInWrite spends one of a signed-in user's authorization requests
// that store something (userWriteBurst), or returns the error to answer
// past them.
func (i *Issuer) signedInWrite(ctx context.Context, user string) error {
	return i.userWrites.spend(ctx, user, "too many authorization requests from this account; retry later")
}

// requestScopes decides a request's resource and scopes for the user
// (grantScopes), narrowed to what its agent, if any, may hold: the
// consent page shows no more than the token will carry.
func (i *Issuer) requestScopes(ctx context.Context, c *Client, u *User, ar *authRequest) (string, []string, error) {
	resource, scopes, err := i.policy.grantScopes(ctx, c, u, ar.Resource, ar.Scopes)
	if err != nil || ar.Actor == "" {
		return resource, scopes, err
	}
	a, err := i.dir.agentFor(ctx, ar.Actor, c.ID)
	if err != nil {
		return "", nil, ErrInvalidRequest.WithDescription("requested_actor is unknown, disabled or may not act for this client").Wrap(err)
	}
	limited := a.limitScopes(scopes)
	if len(limited) == 0 && len(scopes) > 0 {
		return "", nil, ErrInvalidScope.WithDescription("the agent may hold none of the requested scopes")
	}
	return resource, limited, nil
}

// requestParties loads the client and the logged-in user of a request.
// The client is returned even when the user is not available. A client
// whose registration no longer holds the request's redirect URI (changed
// through the admin API, or by a reload, while the user signed in) is
// errClientChanged.
func (i *Issuer) requestParties(ctx context.Context, s *session, ar *authRequest) (*Client, *User, error) {
	c, err := i.dir.lookupClient(ctx, ar.ClientID)
	if err != nil {
		return nil, nil, ErrUnauthorizedClient.WithDescription("the client is no longer available").Wrap(err)
	}
	if !matchRedirectURI(c.RedirectURIs, ar.RedirectURI) {
		return c, nil, errClientChanged
	}
	u, err := i.dir.lookupUser(ctx, s.User)
	if err != nil {
		return c, nil, ErrAccessDenied.WithDescription("the user account is not available").Wrap(err)
	}
	return c, u, nil
}

// finish issues the code for client c as requestParties read it
// (consuming the pending request and, when remember is set, storing the
// consent in the same transaction; else checking there that the
// remembered consent it rests on still covers scopes) and redirects to
// the client. fail answers an error: earlyError before the user has seen
// the consent page, redirectError after.
func (i *Issuer) finish(w http.ResponseWriter, r *http.Request, s *session, c *Client, ar *authRequest, pendingID, resource string, scopes []string, remember bool, fail func(error)) {
	code, err := i.issueCode(r.Context(), s, c, ar, pendingID, resource, scopes, remember)
	if errors.Is(err, errPendingGone) {
		if remember {
			// Allow posted again while the first one was answered.
			i.repeatedDecision(w, r, s, pendingID, "approve")
			return
		}
		i.pages.pendingGonePage(w)
		return
	}
	if errors.Is(err, errClientChanged) {
		i.pages.clientChangedPage(w)
		return
	}
	if errors.Is(err, errSignedOut) {
		fail(ErrAccessDenied.WithDescription("the user signed out"))
		return
	}
	if errors.Is(err, errConsentRevoked) {
		fail(ErrAccessDenied.WithDescription("the user revoked the application's access"))
		return
	}
	if err != nil {
		fail(ErrServerError.Wrap(fmt.Errorf("issue code: %w", err)))
		return
	}
	i.pages.redirectTo(w, r, ar.RedirectURI, i.codeResponse(ar, code))
}

// codeResponse is the query of the authorization response to ar with
// code.
func (i *Issuer) codeResponse(ar *authRequest, code string) url.Values {
	v := url.Values{"code": {code}}
	if ar.State != "" {
		v.Set("state", ar.State)
	}
	v.Set("iss", i.URL())
	return v
}

// repeatedDecision answers a consent page's decision posted again for a
// request the same browser's first post of it finished: with that one's
// answer, or the "Request expired" page (answeredDecision).
func (i *Issuer) repeatedDecision(w http.ResponseWriter, r *http.Request, s *session, pendingID, decision string) {
	loc, err := i.pending.answered(r.Context(), pendingID, s, decision)
	switch {
	case err != nil:
		i.pages.serverErrorPage(w, err)
	case loc == "":
		i.pages.pendingGonePage(w)
	default:
		i.pages.sendTo(w, r, loc)
	}
}

func (i *Issuer) issueCode(ctx context.Context, s *session, c *Client, ar *authRequest, pendingID, resource string, scopes []string, remember bool) (string, error) {
	code, err := i.randomToken(32)
	if err != nil {
		return "", err
	}
	now := i.now()
	ac := authCode{
		ClientID:            ar.ClientID,
		RedirectURI:         ar.RedirectParam,
		SentTo:              ar.RedirectURI,
		CodeChallenge:       ar.CodeChallenge,
		CodeChallengeMethod: ar.CodeChallengeMethod,
		Subject:             s.User,
		Scopes:              scopes,
		Resource:            resource,
		Nonce:               ar.Nonce,
		Actor:               ar.Actor,
		DPoPJKT:             ar.DPoPJKT,
		AuthTime:            s.AuthTime,
		SignedInAt:          s.SignedInAt,
		Credential:          s.Credential,
		Password:            s.Password,
		IssuedAt:            now,
		Issuer:              i.URL(),
		ExpiresAt:           now.Add(i.cfg.CodeTTL),
	}
	if ac.Scopes == nil {
		ac.Scopes = []string{}
	}
	// The consent page's Allow: its answer is kept for a repeat of it
	// (answeredDecision).
	var answer *answeredDecision
	if remember && pendingID != "" {
		// One withQuery refuses gets its error page, repeated or not.
		if loc, err := withQuery(ar.RedirectURI, i.codeResponse(ar, code)); err == nil {
			if answer, err = newAnswer(i.cfg.Rand, pendingID, s, "approve", loc, now); err != nil {
				return "", err
			}
		}
	}
	var forget []string
	if remember {
		err := i.store.View(ctx, func(tx store.Tx) error {
			var err error
			forget, err = consentsIn(tx).toForget(s.User, ar.ClientID, resource, ar.Actor)
			return err
		})
		if err != nil {
			return "", err
		}
	}
	err = i.store.Update(ctx, func(tx store.Tx) error {
		// A session the user's password change or removal ended while
		// this request ran stores no consent (a later user of the same
		// name would inherit it) and no code.
		if err := epochsIn(tx).signedOut(s.User, signedIn(s.SignedInAt, s.AuthTime)); err != nil {
			return err
		}
		if err := passwordCurrent(tx, s.User, s.Password); err != nil {
			return err
		}
		conn, err := epochsIn(tx).at(connectionPrincipal(s.User, c.ID, resource, ar.Actor))
		if err != nil {
			return err
		}
		ac.Connection = &conn
		if err := stillRegistered(tx, c, ar.RedirectURI); err != nil {
			return err
		}
		if pendingID != "" {
			if err := pendingIn(tx).finish(pendingID); err != nil {
				return err
			}
		}
		if answer != nil {
			if err := answeredIn(tx).put(pendingID, answer); err != nil {
				return err
			}
		}
		target := consentTarget(c, ar.RedirectURI)
		if remember {
			if err := consentsIn(tx).add(s.User, ar.ClientID, resource, ar.Actor, scopes, target, now, forget); err != nil {
				return err
			}
		} else {
			// The remembered consent proceed found may have been revoked
			// since (the apps page): its stamp is older than this code,
			// which would reconnect the app with no consent behind it.
			switch ok, err := consentsIn(tx).covers(s.User, ar.ClientID, resource, ar.Actor, scopes, target); {
			case err != nil:
				return err
			case !ok:
				return errConsentRevoked
			}
		}
		return codesIn(tx).create(code, &ac)
	})
	if err != nil {
		return "", err
	}
	return code, nil
}

// errConsentRevoked: the remembered consent a code was to be issued
// under was revoked while the authorization request ran.
var errConsentRevoked = errors.New("the user revoked the consent during the authorization request")

// errClientChanged: the client's registration changed while the
// authorization request ran (UpdateClient, DeleteClient, a reload): it no
// longer holds the request's redirect URI, or allows less than when the
// request read it. The request ends on the issuer's page, never at the
// redirect URI, which may be the one taken away.
var errClientChanged = errors.New("the client's registration changed during the authorization request")

// stillRegistered checks, in the transaction that issues a code, that a
// stored client c, as the request read it, is still stored, no narrower
// (registrationNarrowed) and with the redirect URI: an update committing
// after the read would otherwise let the code carry what it took away.
// Configured clients change only with a configuration, CIMD clients with
// their document.
func stillRegistered(tx store.Tx, c *Client, redirectURI string) error {
	if c.agent != nil || (c.Source != sourceAdmin && c.Source != sourceDCR) {
		return nil
	}
	stored, err := clientsIn(tx).get(c.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errClientChanged
	case err != nil:
		return err
	case registrationNarrowed(c, stored) || !matchRedirectURI(stored.RedirectURIs, redirectURI):
		return errClientChanged
	}
	return nil
}
