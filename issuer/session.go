package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// anonymousSessionTTL bounds sessions that never logged in: they exist only
// to carry a CSRF token and bind pending requests to one browser.
const anonymousSessionTTL = time.Hour

// sessions are the browsers' login sessions: the cookie, the stored
// session and its CSRF token.
type sessions struct {
	store      store.Store
	now        func() time.Time
	rand       io.Reader
	ttl        time.Duration // of a signed-in session
	origin     string        // the issuer's web origin, for CSRF checks
	issuer     string        // the issuer URL sessions are started under
	secure     bool          // https: Secure, __Host- cookies
	path       string        // the cookie's Path (cookiePath)
	anonWrites *rateLimiter  // starting an anonymous session is one
	creds      *credentialTags
}

func newSessions(st store.Store, cfg *Config, issuer *url.URL, anonWrites *rateLimiter, creds *credentialTags) *sessions {
	return &sessions{
		store: st, now: cfg.Now, rand: cfg.Rand, ttl: cfg.SessionTTL,
		origin: webOrigin(issuer), issuer: issuer.String(), secure: issuer.Scheme == "https", anonWrites: anonWrites,
		creds: creds, path: cookiePath(issuer),
	}
}

// cookiePath is the session cookie's Path: the issuer's path on plain
// http, where it has one. Cookies know no port, so on a loopback issuer
// the cookie would reach every server of its host at Path=/, a native
// client's loopback redirect listener among them; every page that reads
// the session lives under the issuer's path. A __Host- cookie (https)
// must have Path=/, and is Secure.
//
// A browser compares a cookie's Path with the path it requests, escapes
// and all, and net/http drops from a Path what a cookie cannot carry
// (";", bytes past ASCII): a path holding an escape ("/a%20b") or such
// a byte is cut back to its segments before it, which every spelling
// of the issuer's URLs starts with. Its decoded form ("/a b") was sent,
// which no request path matched: the cookie never came back, and no one
// could sign in.
func cookiePath(issuer *url.URL) string {
	if issuer.Scheme == "https" {
		return "/"
	}
	p := strings.TrimSuffix(issuer.EscapedPath(), "/")
	if i := strings.IndexFunc(p, func(r rune) bool { return !cookiePathRune(r) }); i >= 0 {
		p = strings.TrimSuffix(p[:strings.LastIndexByte(p[:i], '/')+1], "/")
	}
	if p == "" {
		return "/"
	}
	return p
}

// cookiePathRune reports whether r stands for itself in every spelling
// of a URL path a browser may request: RFC 3986's unreserved characters
// and "/".
func cookiePathRune(r rune) bool {
	return r == '/' || r == '-' || r == '.' || r == '_' || r == '~' ||
		'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

// cookieName is __Host- prefixed (Secure, host-only, Path=/) when the
// issuer is https; plain http is only allowed on loopback, where
// browsers refuse Secure cookies over http, so the prefix is dropped there.
func (ss *sessions) cookieName() string {
	if ss.secure {
		return "__Host-mcp_session"
	}
	return "mcp_session"
}

// withoutCookie is r, or a copy of it whose Cookie headers leave out
// every cookie that net/http reads as the session cookie (r.Cookie,
// readCookies: each part between ";" trimmed, and its name up to "=",
// compared exactly), the others kept as they came.
func (ss *sessions) withoutCookie(r *http.Request) *http.Request {
	name := ss.cookieName()
	values := r.Header["Cookie"]
	if !slices.ContainsFunc(values, func(v string) bool { return holdsCookie(v, name) }) {
		return r
	}
	kept := make([]string, 0, len(values))
	for _, v := range values {
		var parts []string
		for part := range strings.SplitSeq(v, ";") {
			if part = textproto.TrimString(part); part != "" && !isCookie(part, name) {
				parts = append(parts, part)
			}
		}
		if len(parts) > 0 {
			kept = append(kept, strings.Join(parts, "; "))
		}
	}
	c := *r
	c.Header = r.Header.Clone()
	delete(c.Header, "Cookie")
	if len(kept) > 0 {
		c.Header["Cookie"] = kept
	}
	return &c
}

// holdsCookie reports whether the Cookie header value v has a cookie
// named name.
func holdsCookie(v, name string) bool {
	for part := range strings.SplitSeq(v, ";") {
		if isCookie(textproto.TrimString(part), name) {
			return true
		}
	}
	return false
}

// isCookie reports whether one trimmed part of a Cookie header is the
// cookie named name.
func isCookie(part, name string) bool {
	n, _, _ := strings.Cut(part, "=")
	return textproto.TrimString(n) == name
}

// hasCookie reports whether the request carries a session cookie, live
// or not.
func (ss *sessions) hasCookie(r *http.Request) bool {
	ck, err := r.Cookie(ss.cookieName())
	return err == nil && ck.Value != ""
}

// current returns the live session of the request and its id, or
// nil when there is none.
func (ss *sessions) current(r *http.Request) (*session, string, error) {
	ck, err := r.Cookie(ss.cookieName())
	if err != nil || ck.Value == "" || len(ck.Value) > 100 {
		return nil, "", nil
	}
	var s *session
	var current bool
	err = ss.store.View(r.Context(), func(tx store.Tx) error {
		var err error
		if s, err = sessionsIn(tx).get(ck.Value); err != nil {
			return err
		}
		current, err = ss.creds.current(tx, principalUser, s.User, s.Credential)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("load session: %w", err)
	}
	if !ss.now().Before(s.ExpiresAt) {
		return nil, "", nil
	}
	if s.Issuer != "" && s.Issuer != ss.issuer {
		// Started under another issuer URL: after a change of issuer the
		// users sign in again, as their refresh tokens and codes of the
		// old URL are refused, so that a directory change made in the
		// same reload cannot be skipped (a password changed, say).
		return nil, "", nil
	}
	if !current {
		// Signed in with a password the configuration has replaced, at
		// an instance that had not reloaded yet (credentialTags).
		return nil, "", nil
	}
	return s, ck.Value, nil
}

// ensure returns the request's session, starting an anonymous one
// (and setting its cookie) when there is none. Starting one is an
// unauthenticated write: over the address's limit, the error is
// tooManySignIns.
func (ss *sessions) ensure(w http.ResponseWriter, r *http.Request) (*session, error) {
	s, _, err := ss.current(r)
	if err != nil || s != nil {
		return s, err
	}
	switch d, err := ss.anonWrites.take(r.Context(), clientAddr(r)); {
	case err != nil:
		return nil, err
	case d > 0:
		return nil, tooManySignIns(d)
	}
	browser, err := randomToken(ss.rand, 16)
	if err != nil {
		return nil, err
	}
	s = &session{Browser: browser, Issuer: ss.issuer, ExpiresAt: ss.now().Add(min(anonymousSessionTTL, ss.ttl))}
	if err := ss.start(r.Context(), w, s, ""); err != nil {
		return nil, err
	}
	return s, nil
}

// start stores s under a fresh id (with a fresh CSRF token),
// deletes the session oldID if given, and sets the cookie. A new id at
// login prevents session fixation. A user's session whose login began
// before the user's password changed or the user was removed is refused
// (errSignedOut), and so is one whose login checked a stored user's
// password hash (s.Password) that is no longer the user's: a change
// that took its time stamp before the login began may commit after the
// login read the old hash (a transaction waiting for a lock, an
// instance whose clock is behind this one's), which the time stamp
// does not refuse.
func (ss *sessions) start(ctx context.Context, w http.ResponseWriter, s *session, oldID string) error {
	id, err := randomToken(ss.rand, 32)
	if err != nil {
		return err
	}
	if s.CSRF, err = randomToken(ss.rand, 32); err != nil {
		return err
	}
	err = ss.store.Update(ctx, func(tx store.Tx) error {
		if s.User != "" {
			if err := epochsIn(tx).signedOut(s.User, signedIn(s.SignedInAt, s.AuthTime)); err != nil {
				return err
			}
			if err := passwordCurrent(tx, s.User, s.Password); err != nil {
				return err
			}
			// Signed in with a password the newest configuration
			// replaced, or as a user it removed (credentialTags).
			switch ok, err := ss.creds.current(tx, principalUser, s.User, s.Credential); {
			case err != nil:
				return err
			case !ok:
				return errSignedOut
			}
			if err := keepSignedInFrom(tx, oldID, ss.now()); err != nil {
				return err
			}
		}
		return sessionsIn(tx).replace(oldID, id, s)
	})
	if errors.Is(err, errSignedOut) {
		return err
	}
	if err != nil {
		return fmt.Errorf("store session: %w", err)
	}
	ss.setCookie(w, id, s.ExpiresAt)
	return nil
}

// keepSignedInFrom keeps the browser and CSRF token of the session
// oldID, when it is an anonymous one a sign-in replaces (signedInFrom).
func keepSignedInFrom(tx store.Tx, oldID string, now time.Time) error {
	if oldID == "" {
		return nil
	}
	switch old, err := sessionsIn(tx).get(oldID); {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	case old.User != "":
		// A signed-in session replaced (another account, a new login a
		// request asked for) ends with no trace.
		return nil
	default:
		return signedInFromIn(tx).put(oldID, &signedInFrom{Browser: old.Browser, CSRF: old.CSRF}, now.Add(signedInFromTTL))
	}
}

// signedInFrom is the anonymous session, to be read for a sign-in only,
// that the request's cookie named until a sign-in replaced it within
// signedInFromTTL; nil when there is none.
func (ss *sessions) signedInFrom(r *http.Request) (*session, error) {
	ck, err := r.Cookie(ss.cookieName())
	if err != nil || ck.Value == "" || len(ck.Value) > 100 {
		return nil, nil
	}
	var f *signedInFrom
	err = ss.store.View(r.Context(), func(tx store.Tx) error {
		var err error
		f, err = signedInFromIn(tx).get(ck.Value)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load replaced session: %w", err)
	}
	return &session{Browser: f.Browser, Issuer: ss.issuer, CSRF: f.CSRF}, nil
}

// end deletes the session and clears its cookie.
func (ss *sessions) end(ctx context.Context, w http.ResponseWriter, id string) error {
	err := ss.store.Update(ctx, func(tx store.Tx) error { return sessionsIn(tx).delete(id) })
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	ss.setCookie(w, "", time.Time{})
	return nil
}

// touch sets the session's cookie again, as it is but for its Max-Age,
// when a form changed what the pages show (a consent decision, a
// revoked connection). Chromium keeps a page in its back-forward cache,
// Cache-Control: no-store notwithstanding, unless a cookie of its origin
// changed since it was shown: Back after Allow showed the consent page
// again, its buttons live, for a request already answered (a Deny there
// said "Request expired", the access granted), and after Revoke access
// the apps page with the connection still listed.
func (ss *sessions) touch(w http.ResponseWriter, id string, s *session) {
	ss.setCookie(w, id, s.ExpiresAt)
}

// setCookie sets (or, for an empty value, clears) the session
// cookie. SameSite=Lax keeps it on the top-level GET navigations of the
// authorization flow and off cross-site POSTs.
func (ss *sessions) setCookie(w http.ResponseWriter, value string, expires time.Time) {
	c := &http.Cookie{
		Name:     ss.cookieName(),
		Value:    value,
		Path:     ss.path,
		Secure:   ss.secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.MaxAge = max(1, int(expires.Sub(ss.now())/time.Second))
	}
	http.SetCookie(w, c)
}

// tooManySignIns answers a browser whose address started too many
// sign-ins (sessions, pending requests) lately.
func tooManySignIns(d time.Duration) *Error {
	return rateLimited(ErrTemporarilyUnavailable, d, "too many sign-in requests from this address; retry later")
}
