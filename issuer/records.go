package issuer

import (
	"net/url"
	"time"
)

// Store buckets. Values are JSON encodings of the record types below.
// Opaque secrets (codes, refresh tokens, request_uri tails) are never keys:
// keys are tokenKey(secret).
const (
	bucketClients  = "clients"  // client_id -> Client (admin, DCR)
	bucketUsers    = "users"    // username -> User (admin-managed)
	bucketAgents   = "agents"   // agent id -> Agent (admin-managed)
	bucketKeys     = "keys"     // kid -> signingKey
	bucketCodes    = "codes"    // tokenKey(code) -> authCode
	bucketPAR      = "par"      // tokenKey(the whole request_uri value) -> parRequest
	bucketRefresh  = "refresh"  // tokenKey(refresh token) -> refreshToken
	bucketGrants   = "grants"   // grant id -> grant (a refresh family / connected app)
	bucketConsents = "consents" // consentKey(...) -> consent
	bucketRevoked  = "revoked"  // jti or "grant:"+id -> revocation (expires with the tokens)
	bucketCIMD     = "cimd"     // client_id URL -> cached document (with expiry from HTTP caching)
	bucketJTI      = "jti"      // client_id + "\x00" + jti of a client assertion -> seen (until its exp), RFC 7523 replay check
	bucketConfig   = "config"   // issuer URL -> directorySnapshot of the configuration last applied
)

// authCode is an issued authorization code (single use).
type authCode struct {
	ClientID string `json:"client_id"`
	// RedirectURI is the redirect_uri parameter of the authorization
	// request ("" if it was omitted); the token request must repeat it.
	RedirectURI         string    `json:"redirect_uri"`
	CodeChallenge       string    `json:"code_challenge"`
	CodeChallengeMethod string    `json:"code_challenge_method"`
	Subject             string    `json:"sub"`
	Scopes              []string  `json:"scopes"`
	Resource            string    `json:"resource"`
	Nonce               string    `json:"nonce,omitempty"`
	Actor               string    `json:"actor,omitempty"` // requested_actor (agent id)
	AuthTime            time.Time `json:"auth_time"`
	ExpiresAt           time.Time `json:"expires_at"`
	// Redeemed is set on first use; the record is kept until expiry so a
	// replay can revoke what the code issued (GrantID, JTI).
	Redeemed bool   `json:"redeemed,omitempty"`
	GrantID  string `json:"grant_id,omitempty"`
	JTI      string `json:"jti,omitempty"`
}

// parRequest is a pushed authorization request (RFC 9126).
type parRequest struct {
	ClientID  string     `json:"client_id"`
	Params    url.Values `json:"params"`
	ExpiresAt time.Time  `json:"expires_at"`
}

// grant is what a user granted a client, or a client's or an agent's own
// token (client credentials): the unit a refresh-token family belongs to,
// the row of the "connected apps" page, and what the gid claim names.
// Revoking it ends its refresh tokens and (via bucketRevoked) its access
// tokens.
type grant struct {
	ID       string `json:"id"`
	Subject  string `json:"sub"`
	ClientID string `json:"client_id"`
	// PrincipalType is principalAgent or principalClient for an agent's or
	// a client's own token (Subject is the agent or client); "" for a
	// user's grant.
	PrincipalType string `json:"principal_type,omitempty"`
	Actor         string `json:"actor,omitempty"` // requested_actor the code was bound to
	// Delegates are the agents that got tokens of this grant by token
	// exchange; revoking the grant ends theirs too (they carry its id).
	Delegates []string  `json:"delegates,omitempty"`
	Resource  string    `json:"resource"`
	Scopes    []string  `json:"scopes"`
	AuthTime  time.Time `json:"auth_time,omitzero"` // user login time, for ID tokens on refresh
	CreatedAt time.Time `json:"created_at"`
	LastUsed  time.Time `json:"last_used"`
	ExpiresAt time.Time `json:"expires_at"`
	Revoked   bool      `json:"revoked,omitempty"`
}

// ofUser reports whether g is a grant of the user name (not an agent's or
// a client's own, whose Subject may be the same string).
func (g *grant) ofUser(name string) bool { return g.PrincipalType == "" && g.Subject == name }

// refreshToken is one refresh token of a grant's family. Rotation marks the
// old one Rotated; presenting a Rotated token revokes the whole grant.
type refreshToken struct {
	GrantID   string    `json:"grant_id"`
	ClientID  string    `json:"client_id"`
	Rotated   bool      `json:"rotated,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

// consent remembers that a user approved scopes for a client, resource and
// actor, so the consent page is not shown again for the same or fewer scopes.
type consent struct {
	Scopes    []string  `json:"scopes"`
	GrantedAt time.Time `json:"granted_at"`
}

// consentKey is the bucketConsents key.
func consentKey(user, clientID, resource, actor string) string {
	return user + "\x00" + clientID + "\x00" + resource + "\x00" + actor
}

// signingKey is a persisted signing key.
type signingKey struct {
	KID        string    `json:"kid"`
	Alg        string    `json:"alg"`
	PrivatePEM []byte    `json:"private_pem"` // PKCS#8
	CreatedAt  time.Time `json:"created_at"`
	// RetiredAt is set when a newer key takes over; the key stays published
	// in the JWKS until RetiredAt + keyRetention.
	RetiredAt time.Time `json:"retired_at,omitempty"`
}
