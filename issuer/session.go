package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// anonymousSessionTTL bounds sessions that never logged in: they exist only
// to carry a CSRF token and bind pending requests to one browser.
const anonymousSessionTTL = time.Hour

// sessionCookieName is __Host- prefixed (Secure, host-only, Path=/) when
// the issuer is https; plain http is only allowed on loopback, where
// browsers refuse Secure cookies over http, so the prefix is dropped there.
func (i *Issuer) sessionCookieName() string {
	if i.secureCookies() {
		return "__Host-mcp_session"
	}
	return "mcp_session"
}

func (i *Issuer) secureCookies() bool { return i.issuer.Scheme == "https" }

// currentSession returns the live session of the request and its id, or
// nil when there is none.
func (i *Issuer) currentSession(r *http.Request) (*session, string, error) {
	ck, err := r.Cookie(i.sessionCookieName())
	if err != nil || ck.Value == "" || len(ck.Value) > 100 {
		return nil, "", nil
	}
	var s *session
	err = i.store.View(r.Context(), func(tx store.Tx) error {
		var err error
		s, err = sessionsIn(tx).get(ck.Value)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("load session: %w", err)
	}
	if !i.now().Before(s.ExpiresAt) {
		return nil, "", nil
	}
	return s, ck.Value, nil
}

// ensureSession returns the request's session, starting an anonymous one
// (and setting its cookie) when there is none. Starting one is an
// unauthenticated write: over the address's limit, the error is
// tooManySignIns.
func (i *Issuer) ensureSession(w http.ResponseWriter, r *http.Request) (*session, error) {
	s, _, err := i.currentSession(r)
	if err != nil || s != nil {
		return s, err
	}
	if d := i.anonWrites.take(clientAddr(r), i.now()); d > 0 {
		return nil, tooManySignIns(d)
	}
	browser, err := i.randomToken(16)
	if err != nil {
		return nil, err
	}
	s = &session{Browser: browser, ExpiresAt: i.now().Add(min(anonymousSessionTTL, i.cfg.SessionTTL))}
	if err := i.startSession(r.Context(), w, s, ""); err != nil {
		return nil, err
	}
	return s, nil
}

// startSession stores s under a fresh id (with a fresh CSRF token),
// deletes the session oldID if given, and sets the cookie. A new id at
// login prevents session fixation.
func (i *Issuer) startSession(ctx context.Context, w http.ResponseWriter, s *session, oldID string) error {
	id, err := i.randomToken(32)
	if err != nil {
		return err
	}
	if s.CSRF, err = i.randomToken(32); err != nil {
		return err
	}
	err = i.store.Update(ctx, func(tx store.Tx) error { return sessionsIn(tx).replace(oldID, id, s) })
	if err != nil {
		return fmt.Errorf("store session: %w", err)
	}
	i.setSessionCookie(w, id, s.ExpiresAt)
	return nil
}

// endSession deletes the session and clears its cookie.
func (i *Issuer) endSession(ctx context.Context, w http.ResponseWriter, id string) error {
	err := i.store.Update(ctx, func(tx store.Tx) error { return sessionsIn(tx).delete(id) })
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	i.setSessionCookie(w, "", time.Time{})
	return nil
}

// setSessionCookie sets (or, for an empty value, clears) the session
// cookie. SameSite=Lax keeps it on the top-level GET navigations of the
// authorization flow and off cross-site POSTs.
func (i *Issuer) setSessionCookie(w http.ResponseWriter, value string, expires time.Time) {
	c := &http.Cookie{
		Name:     i.sessionCookieName(),
		Value:    value,
		Path:     "/",
		Secure:   i.secureCookies(),
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.MaxAge = max(1, int(expires.Sub(i.now())/time.Second))
	}
	http.SetCookie(w, c)
}

// tooManySignIns answers a browser whose address started too many
// sign-ins (sessions, pending requests) lately.
func tooManySignIns(d time.Duration) *Error {
	return rateLimited(ErrTemporarilyUnavailable, d, "too many sign-in requests from this address; retry later")
}
