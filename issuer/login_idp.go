package issuer

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Reasons of refused identity provider logins (security log, metrics).
const (
	idpReasonState   = "idp_state"   // unknown, used, expired or another browser's state
	idpReasonError   = "idp_error"   // the provider answered with an error
	idpReasonToken   = "idp_token"   // code exchange or ID token check failed
	idpReasonRefused = "idp_refused" // signed in, but not admitted here
)

// idpStart begins a sign-in at provider p (the login page's "Continue
// with" form): a state bound to this browser and its pending request, a
// nonce and a PKCE verifier are stored, and the browser goes to the
// provider. A pending request's demand for a new login goes with it
// (idpReauthentication).
func (i *Issuer) idpStart(p *idpClient) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !i.pages.method(w, r, http.MethodPost, "Use the sign-in page.") {
			return
		}
		s, _, ok := i.readForm(w, r)
		if !ok {
			return
		}
		ctx := r.Context()
		req := r.PostForm.Get("req")
		if !i.sessions.checkCSRF(r, s) {
			// A "Continue with" form shown before this browser signed
			// in through the same provider in another tab (loginPost).
			if s != nil && s.User != "" && i.sessions.fromOwnPage(r) {
				if u, err := i.dir.lookupUser(ctx, s.User); err == nil && u.IdentityProvider == p.cfg.Name {
					i.pages.seeOther(w, r, i.signedInNext(req))
					return
				}
			}
			i.pages.csrfPage(w)
			return
		}
		var pa *pendingAuth
		if req != "" {
			var err error
			switch pa, err = i.pending.load(ctx, req, s); {
			case errors.Is(err, errPendingGone):
				i.pages.pendingGonePage(w)
				return
			case err != nil:
				i.pages.serverErrorPage(w, err)
				return
			}
		}
		switch d, err := i.anonWrites.take(ctx, clientAddr(r)); {
		case err != nil:
			i.pages.serverErrorPage(w, err)
			return
		case d > 0:
			w.Header().Set("Retry-After", retryAfter(d))
			i.pages.errorPage(w, http.StatusTooManyRequests, "Too many requests", "Too many sign-in requests came from your network. Try again in a minute.")
			return
		}
		disc, err := p.discover(ctx)
		if err != nil {
			i.idpUnavailable(w, p, err)
			return
		}
		var l idpLogin
		state, err := i.randomToken(32)
		if err == nil {
			l.Nonce, err = i.randomToken(32)
		}
		if err == nil {
			l.Verifier, err = i.randomToken(32) // 43 characters: a valid RFC 7636 verifier
		}
		if err != nil {
			i.pages.serverErrorPage(w, err)
			return
		}
		now := i.now()
		opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(l.Verifier), oidc.Nonce(l.Nonce)}
		if pa != nil {
			var reauth []oauth2.AuthCodeOption
			l.LoginAfter, reauth = idpReauthentication(&pa.Request, now)
			opts = append(opts, reauth...)
		}
		l.Browser, l.Provider, l.Req, l.ExpiresAt = s.Browser, p.cfg.Name, req, now.Add(idpLoginTTL)
		if err := i.store.Update(ctx, func(tx store.Tx) error { return idpLoginsIn(tx).create(state, &l) }); err != nil {
			i.pages.serverErrorPage(w, err)
			return
		}
		// A page of ours sends the browser on, not a redirect: the
		// sign-in page's CSP form-action governs every redirect after its
		// POST in Chromium, and a provider may redirect on to origins no
		// form-action can name beforehand (Dex with one connector to
		// GitHub, Keycloak's identity provider redirector, Cognito's
		// identity_provider). The page's meta refresh is a navigation of
		// its own, which form-action does not govern.
		authURL := disc.oauth.AuthCodeURL(state, opts...)
		i.pages.sendOn(w, "Continue with "+p.cfg.DisplayName, "Taking you to "+p.cfg.DisplayName+" to sign in.",
			authURL, "Continue to "+p.cfg.DisplayName)
	}
}

// idpReauthentication is what a pending request that asks for a new
// login (prompt=login, or max_age the session exceeded) asks of the
// provider at now: the same, or a session the provider still has would
// sign the user in silently (OpenID Connect Core 1.0 section 3.1.2.1);
// and the earliest auth_time its ID token may then carry. A provider that
// ignores the demand answers with an older auth_time, which idpCallback
// refuses. prompt=select_account goes to the provider as it came: the
// account is chosen there, and its session may sign that account in.
func idpReauthentication(ar *authRequest, now time.Time) (time.Time, []oauth2.AuthCodeOption) {
	var opts []oauth2.AuthCodeOption
	var prompt []string
	after := ar.LoginAfter
	switch {
	case ar.prompt("login"):
		// Stricter than the max_age the request may also carry. Not
		// before the request's own time, which another instance's clock
		// may have set (freshLogin compares the session with it).
		prompt = append(prompt, "login")
		after = now
		if ar.LoginAfter.After(now) {
			after = ar.LoginAfter
		}
	case !ar.LoginAfter.IsZero():
		// Rounded down: the provider's bound is no looser than ours.
		maxAge := max(0, now.Sub(ar.LoginAfter)) / time.Second
		opts = append(opts, oauth2.SetAuthURLParam("max_age", strconv.FormatInt(int64(maxAge), 10)))
	}
	if ar.prompt("select_account") {
		prompt = append(prompt, "select_account")
	}
	if len(prompt) > 0 {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", strings.Join(prompt, " ")))
	}
	return after, opts
}

// idpAuthTime is when a verified ID token says the user authenticated
// (auth_time), never later than now; without a usable claim, the zero
// time: unknown, which no request demanding a recent login (prompt=login,
// max_age) accepts (freshLogin), since the provider may have signed the
// user in silently, and of which our tokens say nothing. When a new
// login was required (loginAfter), the claim must be there and not
// earlier than loginAfter, give or take idpClockSkew; within the skew
// the login counts as made at loginAfter, as the request asked.
func idpAuthTime(idt *oidc.IDToken, loginAfter, now time.Time) (time.Time, error) {
	var authTime any
	if err := idTokenClaim(idt, "auth_time", &authTime); err != nil {
		return time.Time{}, fmt.Errorf("reading auth_time: %w", err)
	}
	// A number of seconds since 1970 (RFC 7519 NumericDate) before year
	// 5000; anything else counts as no claim.
	secs, usable := authTime.(float64)
	usable = usable && secs >= 0 && secs < 95e9
	at := now
	if t := time.Unix(int64(secs), 0); usable && t.Before(now) {
		at = t
	}
	switch {
	case loginAfter.IsZero() && !usable:
		return time.Time{}, nil
	case loginAfter.IsZero():
		return at, nil
	case !usable:
		return time.Time{}, errors.New("a new login was required and the ID token has no usable auth_time")
	case at.Before(loginAfter.Add(-idpClockSkew)):
		return time.Time{}, fmt.Errorf("a login after %s was required and the ID token's auth_time is %s",
			loginAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	case at.Before(loginAfter):
		return loginAfter, nil
	}
	return at, nil
}

// idTokenClaim reads the claim of a verified ID token named name,
// exactly, into v, leaving v as it is when there is none. Claim names are
// case-sensitive (RFC 7519 section 4), but encoding/json, through which
// go-oidc's Claims fills a struct, takes a member in another case for a
// field's when the name itself is missing: a lone Auth_time or AZP,
// which a provider that lets users name claims of their own would sign,
// would pass for the provider's word.
func idTokenClaim(idt *oidc.IDToken, name string, v any) error {
	var claims map[string]json.RawMessage
	if err := idt.Claims(&claims); err != nil {
		return err
	}
	if raw, ok := claims[name]; ok {
		return json.Unmarshal(raw, v)
	}
	return nil
}

// readAnswer reads an authorization response's query strictly: form-encoded
// and no response parameter twice (RFC 6749 section 3.1). Which of two
// values a reader took would decide the code, state or iss it checks, and
// URL.Query drops a pair it cannot read.
func readAnswer(rawQuery string) (url.Values, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, err
	}
	for _, p := range authorizationResponseParams {
		if len(q[p]) > 1 {
			return nil, fmt.Errorf("%s is repeated", p)
		}
	}
	return q, nil
}

// idpCallback is provider p's redirect URI: it checks the state against
// this browser, redeems the code with the PKCE verifier, has go-oidc
// verify the ID token (signature, issuer, audience = our client_id,
// expiry), checks the nonce, admits and provisions the user, and starts
// the session. Any failure shows a page and issues nothing.
func (i *Issuer) idpCallback(p *idpClient) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !i.pages.method(w, r, http.MethodGet, "Use the sign-in page.") {
			return
		}
		ctx, addr := r.Context(), clientAddr(r)
		name := p.cfg.DisplayName
		q, err := readAnswer(r.URL.RawQuery)
		if err != nil {
			i.loginFailed("", addr, idpReasonError)
			i.pages.errorPage(w, http.StatusForbidden, "Not signed in", "The answer from "+name+" cannot be used.")
			return
		}
		s, sid, err := i.sessions.current(r)
		if err != nil {
			i.pages.serverErrorPage(w, err)
			return
		}
		state := q.Get("state")
		var l *idpLogin
		if s != nil && state != "" && len(state) <= 200 {
			err = i.store.Update(ctx, func(tx store.Tx) error {
				var err error
				l, err = idpLoginsIn(tx).take(state)
				return err
			})
		}
		switch {
		case err != nil && !errors.Is(err, errIdPLoginGone):
			i.pages.serverErrorPage(w, err)
			return
		case l == nil || l.Browser != s.Browser || l.Provider != p.cfg.Name || !i.now().Before(l.ExpiresAt):
			i.loginFailed("", addr, idpReasonState)
			i.pages.errorPage(w, http.StatusBadRequest, "Sign-in expired",
				"This sign-in with "+name+" has expired, was already completed, or was started in another browser. Go back to the application and connect again.")
			return
		}
		refused := func(reason, message string, err error) {
			i.loginFailed("", addr, reason)
			if err != nil {
				i.log.Info("identity provider login refused", zap.String("provider", p.cfg.Name), zap.String("reason", reason), providerError(err))
			}
			i.pages.errorPage(w, http.StatusForbidden, "Not signed in", message)
		}
		if e := q.Get("error"); e != "" {
			refused(idpReasonError, name+" did not sign you in"+errorCodeShown(e)+".", nil)
			return
		}
		disc, err := p.discover(ctx)
		if err != nil {
			i.idpUnavailable(w, p, err)
			return
		}
		// RFC 9207: a provider that names itself must name itself, and one
		// that says it always does must have (an answer without iss may
		// come from another provider, a mix-up).
		if iss := q.Get("iss"); (iss != "" && iss != p.cfg.Issuer) || (iss == "" && disc.issRequired) || q.Get("code") == "" {
			refused(idpReasonError, "The answer from "+name+" cannot be used.", nil)
			return
		}
		tok, err := disc.oauth.Exchange(oidc.ClientContext(ctx, disc.client), q.Get("code"), oauth2.VerifierOption(l.Verifier))
		var re *oauth2.RetrieveError
		switch {
		case errors.As(err, &re):
			refused(idpReasonToken, name+" did not complete the sign-in.", tokenRefusal(re))
			return
		case err != nil:
			i.idpUnavailable(w, p, err)
			return
		}
		raw, _ := tok.Extra("id_token").(string)
		var idt *oidc.IDToken
		err = accesstoken.CheckMembers(raw)
		if err == nil {
			idt, err = disc.verifier.Verify(oidc.ClientContext(ctx, disc.client), raw)
		}
		if err == nil && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(l.Nonce)) != 1 {
			err = errors.New("nonce does not match the sign-in")
		}
		if err == nil {
			err = checkAuthorizedParty(idt, p.cfg.ClientID)
		}
		now := i.now()
		if err == nil && idt.IssuedAt.After(now.Add(idpClockSkew)) {
			// go-oidc does not check iat. It orders the provider's word
			// (provisionIn, saidSince): one from the future would keep
			// this token's groups past every later sign-in and ID-JAG.
			err = errors.New("ID token issued in the future (iat)")
		}
		if err != nil {
			refused(idpReasonToken, "The sign-in answer from "+name+" is not valid.", err)
			return
		}
		authTime, err := idpAuthTime(idt, l.LoginAfter, now)
		if err != nil {
			refused(idpReasonToken, "The application asks for a recent sign-in, and "+name+" did not confirm one. Sign out at "+name+", then try again.", err)
			return
		}
		id, err := p.identity(idt)
		if err != nil {
			refused(idpReasonRefused, "Your account at "+name+" may not sign in here. Ask your administrator for access.", err)
			return
		}
		if err := i.provision(ctx, &p.cfg, id, now); err != nil {
			if errors.Is(err, errIdPRefused) {
				refused(idpReasonRefused, "Your account at "+name+" may not sign in here. Ask your administrator.", err)
				return
			}
			i.pages.serverErrorPage(w, err)
			return
		}
		// The session lasts, and revocations are ordered, from this sign-in,
		// however long ago the provider last authenticated the user.
		ns := &session{Browser: s.Browser, Issuer: i.URL(), User: id.username, AuthTime: authTime, SignedInAt: now,
			ExpiresAt: now.Add(min(i.cfg.SessionTTL, p.cfg.Recheck))}
		switch err := i.sessions.start(ctx, w, ns, sid); {
		case errors.Is(err, errSignedOut):
			refused(idpReasonRefused, "You were signed out while signing in. Try again.", err)
			return
		case err != nil:
			i.pages.serverErrorPage(w, err)
			return
		}
		if l.Req == "" {
			i.pages.seeOther(w, r, i.base+pathApps)
			return
		}
		i.pages.seeOther(w, r, i.base+pathConsent+"?req="+url.QueryEscape(l.Req))
	}
}

// provision creates or updates the provider's user from a login: the
// groups are those of this login. A name held by a local user, by another
// provider's user, by another subject of this provider (an email
// reassigned, when user_claim is email) or as a client's or agent's id
// is refused, as is a disabled user, and every user of a provider the
// configuration applied since removed or re-pointed (credentialTags).
func (i *Issuer) provision(ctx context.Context, p *IdentityProvider, id *idpIdentity, at time.Time) error {
	return i.store.Update(ctx, func(tx store.Tx) error {
		return i.provisionIn(tx, p, id, at)
	})
}

// provisionIn is provision within tx.
// A record the provider's later word wrote meanwhile (an ID-JAG issued
// after this sign-in's ID token, redeemed first) keeps its groups, as an
// older ID-JAG keeps a sign-in's (saidSince): the later word may have
// taken a group away. An ID token without iat is not older than anything:
// its word stands.
func (i *Issuer) provisionIn(tx store.Tx, p *IdentityProvider, id *idpIdentity, at time.Time) error {
	if err := i.mayProvision(tx, p, id); err != nil {
		return err
	}
	u := provisionedUser(p, id, at)
	switch old, err := usersIn(tx).get(id.username); {
	case err == nil && !id.issuedAt.IsZero() && old.IdPIssuedAt.After(id.issuedAt):
		u.Name, u.Email, u.IdPGroups, u.IdPIssuedAt = old.Name, old.Email, old.IdPGroups, old.IdPIssuedAt
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	return usersIn(tx).put(u)
}

// mayProvision returns provision's refusal (errIdPRefused) of id, read
// in tx, or nil.
func (i *Issuer) mayProvision(tx store.Tx, p *IdentityProvider, id *idpIdentity) error {
	if i.dir.configuredUser(id.username) {
		return fmt.Errorf("%w: a configured user is named %q", errIdPRefused, id.username)
	}
	switch ok, err := i.creds.mayProvision(tx, p.Name); {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: the configuration applied since removed or re-pointed identity provider %q", errIdPRefused, p.Name)
	}
	switch taken, err := i.dir.clientIDTaken(tx, id.username); {
	case err != nil:
		return err
	case taken:
		return fmt.Errorf("%w: a client or agent has the id %q", errIdPRefused, id.username)
	}
	old, err := usersIn(tx).get(id.username)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return err
	case !old.accountOf(p, id):
		return fmt.Errorf("%w: %q belongs to another account", errIdPRefused, id.username)
	case old.Disabled:
		return fmt.Errorf("%w: %q is disabled", errIdPRefused, id.username)
	}
	for _, q := range i.dir.population(p) {
		if err := disabledUnderAnotherName(tx, q, p, id); err != nil {
			return err
		}
	}
	return nil
}

// disabledUnderAnotherName refuses (errIdPRefused) id's person, signing
// in at p, when the operator disabled one of their accounts at q (p, or
// another provider of p's population) under another name: a user_claim
// other than sub (email, preferred_username) may change at the
// provider, in case alone too, and a disabled person must not come back
// as a fresh account of the same sub, nor through another account an
// earlier value of the claim made, nor through another application
// registered at the same provider. A disabled user kept unplaced at a
// re-point of p refuses its sub at p too, whatever the name. Read from
// the index of disabled accounts by sub (record_idp_disabled.go), over
// q's users until it is complete; with user_claim sub too, as accounts
// an earlier user_claim (email) named keep their sub.
func disabledUnderAnotherName(tx store.Tx, q, p *IdentityProvider, id *idpIdentity) error {
	refuses := func(u *User) bool {
		return u.Disabled && u.IdentityProvider == q.Name && u.IdPSubject == id.subject &&
			(u.accountOf(q, id) || q.Name == p.Name && u.IdPIssuer == unplacedIssuer)
	}
	var found string
	names, indexed, err := idpDisabledIn(tx).names(q.Name, id.subject)
	switch {
	case err != nil:
		return err
	case indexed:
		// The disabled accounts of the sub, read again.
		for _, name := range names {
			switch u, err := usersIn(tx).get(name); {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return err
			case refuses(u):
				found = name
			}
		}
	default:
		err = usersIn(tx).t.list(q.Name+":", func(name string, s *storedUser) error {
			if refuses(s.user()) {
				found = name
				return errStopListing
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopListing) {
			return err
		}
	}
	if found == "" {
		// A provider whose sub is per application (Entra ID's, pairwise
		// subject identifiers) gives the person another sub at each
		// sibling: the claim that names the user there is what links the
		// two accounts (sameNameAtSibling).
		switch name, err := sameNameAtSibling(tx, q, p, id.username); {
		case err != nil:
			return err
		case name != "":
			found = name
		}
	}
	if found != "" {
		return fmt.Errorf("%w: its subject's account %q is disabled", errIdPRefused, found)
	}
	return nil
}

// sameNameAtSibling is the disabled account, or "", that q, a sibling
// of p in its population (another application registered at the same
// provider), keeps under the user_claim value of username, p's account:
// the same claim of the same issuer and tenant names the same person
// (Entra ID's oid), whatever sub each application was told. A provider
// whose sub is per application would otherwise let a person disabled at
// one application in at the other, under an account of the same name.
// A value given to another person since (an email address) keeps that
// person out at q's sibling as it does at q.
func sameNameAtSibling(tx store.Tx, q, p *IdentityProvider, username string) (string, error) {
	value, ok := strings.CutPrefix(username, p.Name+":")
	if q.Name == p.Name || q.UserClaim != p.UserClaim || !ok {
		return "", nil
	}
	name := q.Name + ":" + value
	switch u, err := usersIn(tx).get(name); {
	case errors.Is(err, store.ErrNotFound):
		return "", nil
	case err != nil:
		return "", err
	case u.Disabled && u.IdentityProvider == q.Name && (u.IdPIssuer == "" || u.IdPIssuer == q.Issuer && u.IdPTenant == q.Tenant):
		return name, nil
	}
	return "", nil
}

// provisionedUser is the record provision writes for id's login at at.
func provisionedUser(p *IdentityProvider, id *idpIdentity, at time.Time) *User {
	return &User{
		Username: id.username, Name: id.name, Email: id.email, Source: sourceIdP,
		IdentityProvider: p.Name, IdPSubject: id.subject, IdPGroups: id.groups, LastLogin: at,
		IdPIssuedAt: id.issuedAt, IdPIssuer: p.Issuer, IdPTenant: p.Tenant,
	}
}

// unplacedIssuer is the issuer recorded for a disabled user that recorded
// none (an earlier release provisioned it) when its provider was
// re-pointed: no provider's issuer, so accountOf matches it to no one,
// even once an operator enables it again.
const unplacedIssuer = "(unplaced at a re-point)"

// accountOf reports whether u, a stored user, is the account of id at
// provider p: p's user of id's subject, provisioned while p pointed
// where it does now. A provider re-pointed to another issuer or tenant
// reaches another population, whose user of the same sub is someone
// else (OpenID Connect Core section 5.7): it must not take over the
// account (its consents, and what MCP servers keep under its name). A
// user a release before origins were recorded provisioned is taken as
// the same, and recorded at its next sign-in; a re-point forgets such
// users, or fences off a disabled one (ApplyConfigChanges).
func (u *User) accountOf(p *IdentityProvider, id *idpIdentity) bool {
	return u.IdentityProvider == p.Name && u.IdPSubject == id.subject &&
		(u.IdPIssuer == "" || u.IdPIssuer == p.Issuer && u.IdPTenant == p.Tenant)
}

// tokenRefusal is what the log says of a provider's refused token
// request: its status and OAuth error code, bounded. Not the error
// golang.org/x/oauth2 makes of it, which holds the whole answer (up to
// idpMaxBytes) when it is no OAuth error, and the error_description when
// it is: text of the provider's choosing, which may echo the request
// (the client secret, the code and the PKCE verifier).
func tokenRefusal(re *oauth2.RetrieveError) error {
	status := "no status"
	if re.Response != nil {
		status = strings.ToValidUTF8(truncate(re.Response.Status, 100), "?")
	}
	if re.ErrorCode == "" {
		return fmt.Errorf("the token endpoint answered %s, not an OAuth error", status)
	}
	return fmt.Errorf("the token endpoint answered %s, error %q", status, strings.ToValidUTF8(truncate(re.ErrorCode, 100), "?"))
}

// errorCodeShown is how the error page names the error code a provider
// answered a sign-in with, " (access_denied)", or "" for one not in an
// error code's form (RFC 6749's are words joined by underscores): text
// of the provider's choosing ("call +1 555 0100 to restore your
// account") would read there as the issuer's.
func errorCodeShown(code string) string {
	if len(code) > 64 || strings.Trim(code, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != "" {
		return ""
	}
	return " (" + code + ")"
}

// providerError is the log's "error" of a sign-in at a provider, cut to
// 1 KiB: go-oidc puts the whole answer of a discovery or key set endpoint
// that fails (a 500 page, a proxy's) in its error, up to idpMaxBytes,
// and a line as long for each sign-in is no log
// (TestIdPProviderPageNotLogged). The provider's text is written as
// terminalText writes it (TestIdPProviderErrorTerminalSafe).
func providerError(err error) zap.Field {
	return zap.String("error", terminalText(strings.ToValidUTF8(truncate(err.Error(), 1<<10), "?")))
}

// terminalText is s with every character a terminal may not show as it
// is written as a JSON escape (\u009b), and a backslash as \\: a C1
// control (U+009B is CSI, which erases the operator's screen), DEL, a
// bidirectional or other format character (U+202E writes what follows
// backwards, U+200B shows nothing), a line or paragraph separator, a
// private-use or unassigned code point. zap escapes only C0 controls.
// The backslash is always doubled, so that the text reads back as it
// was sent, as a JSON string's text; s itself when nothing needs
// escaping. (The gateway's auditText does the same for its events; the
// issuer may not import the gateway.)
func terminalText(s string) string {
	shown := func(r rune) bool {
		return r < utf8.RuneSelf && r != 0x7f || unicode.IsGraphic(r) && !unicode.Is(unicode.Cf, r)
	}
	if strings.IndexFunc(s, func(r rune) bool { return r == '\\' || !shown(r) }) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case shown(r):
			b.WriteRune(r)
		default:
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&b, `\u%04x`, u)
			}
		}
	}
	return b.String()
}

// idpUnavailable answers when provider p cannot be reached.
func (i *Issuer) idpUnavailable(w http.ResponseWriter, p *idpClient, err error) {
	i.log.Warn("identity provider unavailable", zap.String("provider", p.cfg.Name), providerError(err))
	i.pages.errorPage(w, http.StatusBadGateway, "Sign-in unavailable",
		p.cfg.DisplayName+" cannot be reached right now. Try again in a moment.")
}

// checkAuthorizedParty applies OpenID Connect Core 1.0 §3.1.3.7 (6, 7),
// which go-oidc leaves to its caller: an ID token issued to several
// audiences must name this client as the party it was issued to (azp),
// and one that names a party must name this client. The token of a sign-
// in at another application that merely lists this one among its
// audiences does not sign anyone in here.
func checkAuthorizedParty(idt *oidc.IDToken, clientID string) error {
	var azp *string
	if err := idTokenClaim(idt, "azp", &azp); err != nil {
		return fmt.Errorf("reading azp: %w", err)
	}
	switch {
	case azp != nil && *azp != clientID:
		return fmt.Errorf("ID token issued to another party (azp %q)", *azp)
	case azp == nil && len(idt.Audience) > 1:
		return errors.New("ID token for several audiences names none as its authorized party (azp)")
	}
	return nil
}
