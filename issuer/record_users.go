package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketUsers: username -> storedUser (admin-managed; never expires).
const bucketUsers = "users"

// storedUser is a User as the store keeps it. It is a type of its own so
// that User, the public API type, can change without changing what is on
// disk; the field names are the format of existing databases.
type storedUser struct {
	Username     string   `json:"username"`
	PasswordHash string   `json:"password_hash"`
	Groups       []string `json:"groups,omitempty"`
	Name         string   `json:"name,omitempty"`
	Email        string   `json:"email,omitempty"`
	Disabled     bool     `json:"disabled,omitempty"`
	Source       string   `json:"source,omitempty"`
	// Users of an identity provider (source idp).
	IdentityProvider string    `json:"identity_provider,omitempty"`
	IdPSubject       string    `json:"idp_subject,omitempty"`
	IdPGroups        []string  `json:"idp_groups,omitempty"`
	LastLogin        time.Time `json:"last_login,omitzero"`
	IdPIssuedAt      time.Time `json:"idp_issued_at,omitzero"`
	IdPIssuer        string    `json:"idp_issuer,omitempty"`
	IdPTenant        string    `json:"idp_tenant,omitempty"`
}

func userRecord(u *User) *storedUser {
	return &storedUser{
		Username:     u.Username,
		PasswordHash: u.PasswordHash,
		Groups:       u.Groups,
		Name:         u.Name,
		Email:        u.Email,
		Disabled:     u.Disabled,
		Source:       u.Source,

		IdentityProvider: u.IdentityProvider,
		IdPSubject:       u.IdPSubject,
		IdPGroups:        u.IdPGroups,
		LastLogin:        u.LastLogin,
		IdPIssuedAt:      u.IdPIssuedAt,
		IdPIssuer:        u.IdPIssuer,
		IdPTenant:        u.IdPTenant,
	}
}

func (s *storedUser) user() *User {
	return &User{
		Username:     s.Username,
		PasswordHash: s.PasswordHash,
		Groups:       s.Groups,
		Name:         s.Name,
		Email:        s.Email,
		Disabled:     s.Disabled,
		Source:       s.Source,

		IdentityProvider: s.IdentityProvider,
		IdPSubject:       s.IdPSubject,
		IdPGroups:        s.IdPGroups,
		LastLogin:        s.LastLogin,
		IdPIssuedAt:      s.IdPIssuedAt,
		IdPIssuer:        s.IdPIssuer,
		IdPTenant:        s.IdPTenant,
	}
}

// userRecords are the runtime-managed users.
type userRecords struct{ t table[storedUser] }

func usersIn(tx store.Tx) userRecords { return userRecords{table[storedUser]{tx, bucketUsers}} }

func (r userRecords) has(name string) (bool, error) { return r.t.has(name) }

func (r userRecords) get(name string) (*User, error) {
	s, err := r.t.get(name)
	if err != nil {
		return nil, err
	}
	return s.user(), nil
}

func (r userRecords) put(u *User) error {
	return r.t.put(u.Username, userRecord(u), time.Time{})
}

// remove deletes the user, or returns store.ErrNotFound.
func (r userRecords) remove(name string) error { return r.t.remove(name) }

// each calls fn for every stored user.
func (r userRecords) each(fn func(*User) error) error {
	return r.t.list("", func(_ string, s *storedUser) error { return fn(s.user()) })
}

// signOutUser ends the user's login sessions and revokes the user's
// grants (refresh tokens, and access tokens, delegated and exchanged ones
// included) until rv.until, and stamps the user: whoever knew the old
// password holds nothing any more, and what they requested with it is
// refused (record_epochs.go).
func signOutUser(tx store.Tx, name string, rv revocation) error {
	return signOutUsers(tx, []string{name}, rv)
}

// signOutUsers is signOutUser for each of names, reading the sessions
// once (sessionRecords.deleteUsers).
func signOutUsers(tx store.Tx, names []string, rv revocation) error {
	if len(names) == 0 {
		return nil
	}
	if err := sessionsIn(tx).deleteUsers(names...); err != nil {
		return err
	}
	for _, name := range names {
		if err := grantsIn(tx).revokeUser(name, rv); err != nil {
			return err
		}
	}
	return nil
}

// forgetUser is what removing a user does: signOutUser, and its consents
// are deleted, so a later user of the same name inherits nothing.
func forgetUser(tx store.Tx, name string, rv revocation) error {
	if err := consentsIn(tx).deleteUser(name); err != nil {
		return err
	}
	return signOutUser(tx, name, rv)
}
