package issuer

import (
	"errors"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketSessions: tokenKey(cookie value) -> session, until it expires.
const bucketSessions = "sessions"

// session is a browser session. Every browser that reaches a form gets one,
// logged in or not, so forms can carry a CSRF token bound to it.
type session struct {
	// Browser stays the same when the session id is replaced at login; it
	// binds pending authorization requests to the browser that started them.
	Browser string `json:"browser"`
	// Issuer is the issuer URL the session was started under; it counts
	// under no other ("": a session from before the field, any).
	Issuer   string    `json:"issuer,omitempty"`
	CSRF     string    `json:"csrf"`
	User     string    `json:"user,omitempty"` // "" until login
	AuthTime time.Time `json:"auth_time,omitzero"`
	// SignedInAt is when the user signed in here, what revocations of the
	// user are ordered against (record_epochs.go). AuthTime, when the user
	// last authenticated, is earlier after a sign-in at an identity
	// provider that still had a session of its own. Zero: AuthTime (a
	// password login, which authenticates here).
	SignedInAt time.Time `json:"signed_in_at,omitzero"`
	ExpiresAt  time.Time `json:"expires_at"`
	// Credential is the tag of the configured user's password hash the
	// sign-in checked (credentialTags); "" for a user not configured, and
	// in sessions from before tags.
	Credential string `json:"cred,omitempty"`
	// Password is the tag of the stored user's password hash the sign-in
	// checked (passwordTag); "" for other users, and in sessions from
	// before it.
	Password string `json:"pw,omitempty"`
}

// passwordTag identifies a stored user's password hash, as
// credentialTags identify a configured user's.
func passwordTag(hash string) string { return fingerprint(hash)[:credentialTagLen] }

// passwordCurrent is errSignedOut when tag ("" for none) is not the tag
// of user's password hash as stored in tx, or the user is gone or
// disabled: a sign-in that checked the password a change replaced, which
// the change's time stamp (record_epochs.go) orders by clocks, refuses
// by none.
func passwordCurrent(tx store.Tx, user, tag string) error {
	if tag == "" {
		return nil
	}
	switch u, err := usersIn(tx).get(user); {
	case errors.Is(err, store.ErrNotFound):
		return errSignedOut
	case err != nil:
		return err
	case u.Disabled || passwordTag(u.PasswordHash) != tag:
		return errSignedOut
	}
	return nil
}

// storedUserCurrent is errSignedOut when user, a stored user (the admin
// API's, an identity provider's), is gone from tx or disabled there. A
// request that read the user enabled before a disabling committed, and
// records after it, is refused by the disabling's time stamp only by
// the clocks (record_epochs.go: at an instance whose clock is ahead,
// the user's sign-in is after it), and a user of an identity provider
// has no password whose tag passwordCurrent reads.
func storedUserCurrent(tx store.Tx, user string) error {
	switch u, err := usersIn(tx).get(user); {
	case errors.Is(err, store.ErrNotFound):
		return errSignedOut
	case err != nil:
		return err
	case u.Disabled:
		return errSignedOut
	}
	return nil
}

// signedIn is when a user who last authenticated at authTime signed in
// here, of a session or of a code from one: signedInAt, or authTime when
// that is zero.
func signedIn(signedInAt, authTime time.Time) time.Time {
	if signedInAt.IsZero() {
		return authTime
	}
	return signedInAt
}

// sessionRecords are the browser sessions.
type sessionRecords struct{ t table[session] }

func sessionsIn(tx store.Tx) sessionRecords {
	return sessionRecords{table[session]{tx, bucketSessions}}
}

func (r sessionRecords) get(id string) (*session, error) { return r.t.get(tokenKey(id)) }

// replace stores s under the new id and deletes the session oldID, if
// given (a new id at login prevents session fixation).
func (r sessionRecords) replace(oldID, id string, s *session) error {
	if oldID != "" {
		if err := r.delete(oldID); err != nil {
			return err
		}
	}
	return r.t.create(tokenKey(id), s, s.ExpiresAt)
}

func (r sessionRecords) delete(id string) error { return r.t.delete(tokenKey(id)) }

// deleteUsers deletes the login sessions of users. Sessions are keyed by
// their cookie, so this reads them all, once for every user; it runs
// only on account changes.
func (r sessionRecords) deleteUsers(users ...string) error {
	of := map[string]bool{}
	for _, u := range users {
		of[u] = true
	}
	return r.t.list("", func(k string, s *session) error {
		if s.User == "" || !of[s.User] {
			return nil
		}
		return r.t.delete(k)
	})
}

// bucketSignedInFrom: tokenKey(the id of an anonymous session a sign-in
// replaced) -> signedInFrom, for signedInFromTTL.
const bucketSignedInFrom = "signed_in_from"

// signedInFromTTL is how long a sign-in form posted again with the
// cookie of the session its first post replaced is still taken.
const signedInFromTTL = 30 * time.Second

// signedInFrom is what is kept of an anonymous session that a sign-in
// replaced: its browser and CSRF token. A sign-in form posted twice (a
// double-click on Sign in) sends its second request with the cookie the
// first one's answer replaced, or, as the browser drops the first
// navigation for the second, never received: the session it names is
// gone, and the second answer, which the browser shows, said "Form
// expired", the pending request out of reach of the new session the
// browser had not got. The second post is read as a sign-in of the same
// browser, its password checked again (loginPost); it is not a session,
// and the old id signs no one in by itself.
type signedInFrom struct {
	Browser string `json:"browser"`
	CSRF    string `json:"csrf"`
}

type signedInFromRecords struct{ t table[signedInFrom] }

func signedInFromIn(tx store.Tx) signedInFromRecords {
	return signedInFromRecords{table[signedInFrom]{tx, bucketSignedInFrom}}
}

func (r signedInFromRecords) get(oldID string) (*signedInFrom, error) {
	return r.t.get(tokenKey(oldID))
}

func (r signedInFromRecords) put(oldID string, f *signedInFrom, expires time.Time) error {
	return r.t.put(tokenKey(oldID), f, expires)
}
