package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketCodes: tokenKey(code) -> authCode, until the code expires or,
// once redeemed, until the grant it created expires if that is later.
const bucketCodes = "codes"

// authCode is an issued authorization code (single use).
type authCode struct {
	ClientID string `json:"client_id"`
	// RedirectURI is the redirect_uri parameter of the authorization
	// request ("" if it was omitted); the token request must repeat it.
	RedirectURI string `json:"redirect_uri"`
	// SentTo is the redirect URI the code was sent to ("" in codes from
	// before it was recorded: RedirectURI, when not ""). A code whose
	// URI the client no longer registers is refused: one a reload or a
	// client metadata document dropped, perhaps for a domain lost.
	SentTo              string   `json:"sent_to,omitempty"`
	CodeChallenge       string   `json:"code_challenge"`
	CodeChallengeMethod string   `json:"code_challenge_method"`
	Subject             string   `json:"sub"`
	Scopes              []string `json:"scopes"`
	Resource            string   `json:"resource"`
	Nonce               string   `json:"nonce,omitempty"`
	Actor               string   `json:"actor,omitempty"` // requested_actor (agent id)
	// DPoPJKT is the authorization request's dpop_jkt (RFC 9449 section
	// 10): the code is redeemed only with a proof of that key.
	DPoPJKT  string    `json:"dpop_jkt,omitempty"`
	AuthTime time.Time `json:"auth_time"`
	// SignedInAt is the session's (session.SignedInAt; zero: AuthTime).
	SignedInAt time.Time `json:"signed_in_at,omitzero"`
	// Credential is the session's (session.Credential), which the grant
	// the code creates records.
	Credential string `json:"cred,omitempty"`
	// Password is the session's (session.Password): the code is redeemed
	// only while it is the user's password's tag.
	Password string `json:"pw,omitempty"`
	// Connection is the stamp of the code's connection (the user's
	// revocation of it on the apps page, connectionPrincipal) its issue
	// read, zero for none; nil in codes from before it. Another stamp at
	// the redemption is a revocation after the issue in the store's
	// order, which the times may not tell: a code issued on the consent
	// a revocation was deleting commits before it, though it began
	// after its stamp.
	Connection *time.Time `json:"conn,omitempty"`
	// IssuedAt and Issuer (the issuer URL) are zero in codes from before
	// they were recorded: such a code is refused once its client, user or
	// agent has been revoked, and taken as this issuer's.
	IssuedAt  time.Time `json:"iat,omitzero"`
	Issuer    string    `json:"iss,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
	// Redeemed is set on first use; the record is then kept as long as
	// the grant it created can live, so a replay, however late, can
	// revoke what the code issued (GrantID, JTI).
	Redeemed bool   `json:"redeemed,omitempty"`
	GrantID  string `json:"grant_id,omitempty"`
	JTI      string `json:"jti,omitempty"`
}

// codeRecords are the authorization codes.
type codeRecords struct{ t table[authCode] }

func codesIn(tx store.Tx) codeRecords { return codeRecords{table[authCode]{tx, bucketCodes}} }

func (c codeRecords) get(code string) (*authCode, error) { return c.t.get(tokenKey(code)) }

func (c codeRecords) create(code string, ac *authCode) error {
	return c.t.create(tokenKey(code), ac, ac.ExpiresAt)
}

// redeem marks the code used by grant gid, which expires at grantExpires,
// and access token jti. A code redeemed before is a replay (RFC 6749
// 4.1.2): what its first use issued is revoked until revokeUntil and
// replayed is true; the caller commits that revocation and refuses the
// request.
func (c codeRecords) redeem(code, gid, jti string, grantExpires, revokeUntil time.Time) (replayed bool, err error) {
	ac, err := c.get(code)
	if err != nil {
		return false, err
	}
	if ac.Redeemed {
		return true, c.revokeIssued(ac, revokeUntil)
	}
	ac.Redeemed, ac.GrantID, ac.JTI = true, gid, jti
	// Kept past the code's own expiry: a replay after it must still find
	// the grant to revoke (the grant checks Redeemed before expiry).
	until := ac.ExpiresAt
	if grantExpires.After(until) {
		until = grantExpires
	}
	return false, c.t.put(tokenKey(code), ac, until)
}

// replayed revokes what the redeemed code issued.
func (c codeRecords) replayed(code string, revokeUntil time.Time) error {
	ac, err := c.get(code)
	if err != nil {
		return err
	}
	return c.revokeIssued(ac, revokeUntil)
}

// revokeIssued revokes the grant and access token a redeemed code issued;
// any token of the code expires by until (one access-token lifetime).
func (c codeRecords) revokeIssued(ac *authCode, until time.Time) error {
	if !ac.Redeemed {
		return nil
	}
	if ac.JTI != "" {
		if err := revocationsIn(c.t.tx).revokeToken(ac.JTI, until); err != nil {
			return err
		}
	}
	if ac.GrantID != "" {
		return grantsIn(c.t.tx).revoke(ac.GrantID, until)
	}
	return nil
}
