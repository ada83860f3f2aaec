package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketUsers: username -> User (admin-managed; never expires).
const bucketUsers = "users"

// userRecords are the runtime-managed users.
type userRecords struct{ table[User] }

func usersIn(tx store.Tx) userRecords { return userRecords{table[User]{tx, bucketUsers}} }

func (r userRecords) put(u *User) error { return r.table.put(u.Username, u, time.Time{}) }

// each calls fn for every stored user.
func (r userRecords) each(fn func(*User) error) error {
	return r.list("", func(_ string, u *User) error { return fn(u) })
}

// signOutUser ends the user's login sessions and revokes the user's
// grants (refresh tokens, and access tokens, delegated and exchanged ones
// included) until revokeUntil: whoever knew the old password holds
// nothing any more.
func signOutUser(tx store.Tx, name string, revokeUntil time.Time) error {
	if err := sessionsIn(tx).deleteUser(name); err != nil {
		return err
	}
	return grantsIn(tx).revokeUser(name, revokeUntil)
}

// forgetUser is what removing a user does: signOutUser, and its consents
// are deleted, so a later user of the same name inherits nothing.
func forgetUser(tx store.Tx, name string, revokeUntil time.Time) error {
	if err := consentsIn(tx).deleteUser(name); err != nil {
		return err
	}
	return signOutUser(tx, name, revokeUntil)
}
