package issuer

import (
	"errors"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketIdPLogins: tokenKey(state) -> idpLogin, until it expires. The state
// travels through the identity provider; the record binds it to the
// browser that started the login, and its nonce and PKCE verifier.
const bucketIdPLogins = "idplogin"

// idpLoginTTL is how long a user has to sign in at the provider.
const idpLoginTTL = 10 * time.Minute

// idpLogin is a sign-in at an identity provider in progress.
type idpLogin struct {
	Browser  string `json:"browser"`
	Provider string `json:"provider"`
	// Req is the pending authorization request the login is for; "" when
	// the user signs in to the apps page.
	Req      string `json:"req,omitempty"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"` // PKCE code_verifier
	// LoginAfter is the earliest auth_time the ID token may carry when
	// Req asks for a new login (prompt=login, max_age); zero when any
	// will do.
	LoginAfter time.Time `json:"login_after,omitzero"`
	ExpiresAt  time.Time `json:"expires_at"`
}

var errIdPLoginGone = errors.New("identity provider login not found")

type idpLoginRecords struct{ t table[idpLogin] }

func idpLoginsIn(tx store.Tx) idpLoginRecords {
	return idpLoginRecords{table[idpLogin]{tx, bucketIdPLogins}}
}

func (r idpLoginRecords) create(state string, l *idpLogin) error {
	return r.t.create(tokenKey(state), l, l.ExpiresAt)
}

// take returns and deletes the login of state: a state, and the nonce with
// it, is used once, whatever the outcome.
func (r idpLoginRecords) take(state string) (*idpLogin, error) {
	l, err := r.t.get(tokenKey(state))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errIdPLoginGone
	}
	if err != nil {
		return nil, err
	}
	return l, r.t.delete(tokenKey(state))
}
