package issuer

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

type loginView struct {
	Action, CSRF, Req string
	ClientName        string
	SelfRegistered    bool // DCR or CIMD: the name is the client's own claim
	Username          string
	Error             string
	// Providers are the identity providers' "Continue with" buttons;
	// Password shows the password form (some local user may exist).
	Providers []providerButton
	Password  bool
}

// providerButton is a "Continue with" form.
type providerButton struct{ ID, Action, Name string }

// handleLogin shows the login form (GET) and checks credentials (POST).
func (i *Issuer) handleLogin(w http.ResponseWriter, r *http.Request) {
	i.pages.formPage(w, r, i.loginGet, i.loginPost, "Use the sign-in form.")
}

func (i *Issuer) loginGet(w http.ResponseWriter, r *http.Request) {
	q, ok := i.pages.query(w, r)
	if !ok {
		return
	}
	s, err := i.sessions.ensure(w, r)
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > 0 {
		w.Header().Set("Retry-After", retryAfter(e.RetryAfter))
		i.pages.errorPage(w, e.Status, "Too many requests", "Too many sign-in requests came from your network. Try again in a minute.")
		return
	}
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return
	}
	id := q.Get("req")
	if id == "" && s.User != "" {
		i.pages.seeOther(w, r, i.base+pathApps)
		return
	}
	v := loginView{Action: i.base + pathLogin, CSRF: maskCSRF(s.CSRF), Req: id}
	target, ok := i.loginContext(w, r, s, id, &v)
	if !ok {
		return
	}
	i.pages.render(w, http.StatusOK, "login", "Sign in", v, target)
}

// loginContext fills the client name for a login that belongs to a
// pending request and returns the CSP source of its redirect URI (the
// login POST redirects on to the consent step, which may redirect to the
// client at once). It answers the request itself and reports false when
// the pending request is gone.
func (i *Issuer) loginContext(w http.ResponseWriter, r *http.Request, s *session, id string, v *loginView) (string, bool) {
	// A provider's form answers with a page of ours (idpStart).
	for _, p := range i.cfg.IdentityProviders {
		v.Providers = append(v.Providers, providerButton{ID: "idp-" + p.Name, Action: i.base + pathLogin + "/" + p.Name, Name: p.DisplayName})
	}
	v.Password = i.passwordLogin(r.Context())
	if id == "" {
		return "", true
	}
	p, err := i.pending.load(r.Context(), id, s)
	if errors.Is(err, errPendingGone) {
		i.pages.pendingGonePage(w)
		return "", false
	}
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return "", false
	}
	v.ClientName, v.SelfRegistered = i.dir.clientShown(r.Context(), p.Request.ClientID)
	return cspSource(p.Request.RedirectURI), true
}

// passwordLogin reports whether the password form is shown: without
// identity providers always, with them when a local user exists.
func (i *Issuer) passwordLogin(ctx context.Context) bool {
	if len(i.cfg.IdentityProviders) == 0 || len(i.cfg.Users) > 0 {
		return true
	}
	return i.localUsers.exist(ctx, i.now(), func(ctx context.Context) bool {
		found := errors.New("found")
		err := i.store.View(ctx, func(tx store.Tx) error {
			return usersIn(tx).each(func(u *User) error {
				if u.IdentityProvider == "" {
					return found
				}
				return nil
			})
		})
		return err != nil // found, or unknown: show the form
	})
}

// localUsersRecheck is how long passwordLogin's answer is reused.
const localUsersRecheck = 10 * time.Second

// localUsers remembers whether a local user is stored, which the login
// page asks on every view: found by reading every stored user until a
// local one, that read made once per view let anyone holding a session
// cookie (no write, no budget) make the issuer decode every account an
// identity provider provisioned, as often as they liked. It is read
// again at most every localUsersRecheck, by one request while the
// others wait for its answer; PutUser forgets it, so that a local user
// added here shows the form at once (elsewhere within the recheck). The
// form is only shown or not: a password sent either way is checked.
type localUsers struct {
	mu    sync.Mutex
	at    time.Time // when found was read; zero: never, or forgotten
	found bool
}

// exist returns the answer read within localUsersRecheck of now, or
// reads it with read.
func (l *localUsers) exist(ctx context.Context, now time.Time, read func(context.Context) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.at.IsZero() && now.Sub(l.at) < localUsersRecheck && !now.Before(l.at) {
		return l.found
	}
	// Not cut short by its request's end: the others wait for this
	// answer, and one that was cut short would say nothing, to be read
	// again by the next request, and the next.
	l.found, l.at = read(context.WithoutCancel(ctx)), now
	return l.found
}

// forget makes the next exist read the store.
func (l *localUsers) forget() {
	l.mu.Lock()
	l.at = time.Time{}
	l.mu.Unlock()
}

func (i *Issuer) loginPost(w http.ResponseWriter, r *http.Request) {
	s, sid, ok := i.readForm(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	id := r.PostForm.Get("req")
	if s == nil {
		// The form posted again, with the cookie of the session its
		// first post replaced (a double-click on Sign in): the same
		// browser signs in, its password checked again.
		var err error
		if s, err = i.sessions.signedInFrom(r); err != nil {
			i.pages.serverErrorPage(w, err)
			return
		}
	}
	if !i.sessions.checkCSRF(r, s) {
		if s != nil && s.User != "" && strings.TrimSpace(r.PostForm.Get("username")) == s.User && i.sessions.fromOwnPage(r) {
			// A sign-in form shown before this browser signed in, in
			// another tab (an MCP host connecting two servers opens
			// two): it carries the token of the session that sign-in
			// replaced. The same user is signed in now: the request goes
			// on as a GET of its consent page would take it, which any
			// link can ask for. The password is not checked (the
			// session's own sign-in was); another account's sign-in
			// still gets "Form expired".
			i.pages.seeOther(w, r, i.signedInNext(id))
			return
		}
		i.pages.csrfPage(w)
		return
	}
	v := loginView{Action: i.base + pathLogin, CSRF: maskCSRF(s.CSRF), Req: id}
	target, ok := i.loginContext(w, r, s, id, &v)
	if !ok {
		return
	}
	username := strings.TrimSpace(r.PostForm.Get("username"))
	password := r.PostForm.Get("password")
	v.Username = username
	if username == "" || password == "" || len(username) > 200 || len(password) > 1000 {
		v.Error = "Enter your username and password."
		i.pages.render(w, http.StatusBadRequest, "login", "Sign in", v, target)
		return
	}

	// The login happened before the password was checked: a password
	// change or removal committed while it was checked ends it
	// (sessions.start, record_epochs.go).
	authTime := i.now()
	account, addr := "user:"+strings.ToLower(username), clientAddr(r)
	switch d, err := i.limiter.attemptDelay(ctx, account, addr); {
	case err != nil:
		i.pages.serverErrorPage(w, err)
		return
	case d > 0:
		i.loginFailed("", addr, "throttled") // before the lookup: the name may be no account
		i.pages.tooManyLogins(w, v, target, d)
		return
	}
	if err := i.limiter.slowAttempt(ctx, account); err != nil {
		if ctx.Err() == nil {
			i.pages.serverErrorPage(w, err)
		}
		return // else the browser went away
	}
	u, err := i.dir.lookupUser(ctx, username)
	if err != nil {
		// A name that is no account (or a disabled one) is counted
		// as a user's is: blocks and slow-downs that only users got would
		// tell which usernames exist. What a flood of made-up names adds
		// to the scores is bounded by its addresses' blocks.
		u = nil
	}
	d, gen, err := i.limiter.reserveAttempt(ctx, account, addr)
	switch {
	case err != nil:
		i.loginNotRun(w, r, v, target, err)
		return
	case d > 0:
		i.loginFailed(accountName(u), addr, "throttled")
		i.pages.tooManyLogins(w, v, target, d)
		return
	}
	// checkPassword spends the same time for unknown users, so timing does
	// not reveal which usernames exist.
	ok, err = i.dir.checkPassword(ctx, u, password, u != nil && i.limiter.isKnown(account, u.PasswordHash, addr))
	if err != nil {
		i.limiter.attemptNotRun(ctx, account, addr, gen)
		i.loginNotRun(w, r, v, target, err)
		return
	}
	if !ok {
		i.limiter.attemptFailed(ctx, account, addr, gen)
		reason := "wrong_password"
		if u == nil {
			reason = "unknown_user"
		}
		i.loginFailed(accountName(u), addr, reason)
		v.Error = "Invalid username or password."
		i.pages.render(w, http.StatusUnauthorized, "login", "Sign in", v, target)
		return
	}
	i.limiter.attemptSucceeded(ctx, account, addr, gen)
	i.limiter.remember(account, u.PasswordHash, addr)

	ns := &session{Browser: s.Browser, Issuer: i.URL(), User: u.Username, AuthTime: authTime, ExpiresAt: i.now().Add(i.cfg.SessionTTL),
		Credential: i.creds.of(principalUser, u.Username)}
	if u.Source == sourceAdmin {
		// Read again as the session starts, a code is issued and
		// redeemed; a configured user's credential tag is checked there.
		ns.Password = passwordTag(u.PasswordHash)
	}
	switch err := i.sessions.start(ctx, w, ns, sid); {
	case errors.Is(err, errSignedOut):
		v.Error = "Invalid username or password."
		i.pages.render(w, http.StatusUnauthorized, "login", "Sign in", v, target)
		return
	case err != nil:
		i.pages.serverErrorPage(w, err)
		return
	}
	if id == "" {
		i.pages.seeOther(w, r, i.base+pathApps)
		return
	}
	pageHeaders(w, target)
	w.Header().Del("Content-Type")
	http.Redirect(w, r, i.signedInNext(id), http.StatusSeeOther)
}

// signedInNext is where a sign-in for pending request id (none: "") goes
// on once the browser is signed in.
func (i *Issuer) signedInNext(id string) string {
	if id == "" {
		return i.base + pathApps
	}
	return i.base + pathConsent + "?req=" + url.QueryEscape(id)
}

type messageView struct {
	Heading, Message, Link, LinkText string
}

// loginNotRun answers a login whose password was not checked: the browser
// went away, the server had no capacity to check it (busy, with
// Retry-After), or the limiter's scores could not be read.
func (i *Issuer) loginNotRun(w http.ResponseWriter, r *http.Request, v loginView, target string, err error) {
	switch {
	case r.Context().Err() != nil:
		// the browser went away
	case errors.Is(err, errHashBusy):
		w.Header().Set("Retry-After", retryAfter(hashRetryAfter))
		v.Error = "The server is busy. Try again in a few seconds."
		i.pages.render(w, http.StatusServiceUnavailable, "login", "Sign in", v, target)
	default:
		i.pages.serverErrorPage(w, err)
	}
}
