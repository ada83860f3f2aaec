// Package accesstoken is the access-token format that the issuer mints and
// the gateway verifies, defined once: the claims of an RFC 9068 JWT access
// token (with the RFC 8693 act chain and this project's principal_type and
// grant id), its verification, JWK parsing and the signature algorithms
// that may verify it. It imports nothing else of the issuer, so that the
// gateway can depend on it.
package accesstoken

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Type is the JWS typ of an access token (RFC 9068 §2.1); verification
// also accepts its long form, application/at+jwt, in any case.
const Type = "at+jwt"

// Values of the principal_type claim.
const (
	PrincipalUser   = "user"   // a user's token, delegated or not
	PrincipalAgent  = "agent"  // an agent acting on its own (sub is the agent)
	PrincipalClient = "client" // a client's own token (client credentials)
)

// Leeway is how far past its exp (and iat before the verifier's clock)
// an access token is still taken, for clocks that disagree: those of the
// issuer's instances, and of a gateway in front of a remote issuer. A
// revocation refuses a token that long past its exp too.
const Leeway = 5 * time.Second

// MaxActDepth bounds the act nesting a token may carry; deeper chains are
// refused as malformed.
const MaxActDepth = 32

// Claims are the claims of an access token. Names are matched exactly
// (not case-insensitively as encoding/json would), a null or wrongly
// typed known claim is refused, and unknown claims are ignored.
type Claims struct {
	// Alg is the algorithm of the verified signature (set by ParseWith;
	// not a claim).
	Alg       string           `json:"-"`
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  Audience         `json:"aud"`
	ClientID  string           `json:"client_id"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	ExpiresAt *jwt.NumericDate `json:"exp"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	ID        string           `json:"jti"`
	Scope     string           `json:"scope,omitempty"`
	AuthTime  *jwt.NumericDate `json:"auth_time,omitempty"`
	Actor     *Actor           `json:"act,omitempty"`
	// PrincipalType is PrincipalUser, PrincipalAgent or PrincipalClient.
	// Other issuers do not send it (RFC 9068 has no such claim); absent
	// is read as a user by the gateway.
	PrincipalType string `json:"principal_type,omitempty"`
	// GrantID names the grant (refresh family) the token belongs to, so
	// that a resource server can refuse every token of a revoked grant.
	GrantID string `json:"gid,omitempty"`
	// Confirmation binds the token to a key (RFC 7800); nil for a bearer
	// token.
	Confirmation *Confirmation `json:"cnf,omitempty"`
	// IDTokenClaims is set when the claims include nonce or at_hash,
	// which only ID tokens carry (OpenID Connect Core §2, §3.1.3.6).
	IDTokenClaims bool `json:"-"`
}

// Confirmation is the cnf claim of a DPoP-bound token (RFC 9449 §6.1).
// A cnf naming another confirmation method (a certificate thumbprint, a
// key) is refused as malformed: a binding that cannot be checked must not
// be read as none.
type Confirmation struct {
	// JKT is the RFC 7638 thumbprint of the key that must sign every
	// DPoP proof presented with the token.
	JKT string `json:"jkt"`
}

// BoundKey is the thumbprint the token is bound to, "" for a bearer token.
func (c *Claims) BoundKey() string {
	if c.Confirmation == nil {
		return ""
	}
	return c.Confirmation.JKT
}

// Actor is the RFC 8693 act claim; chains nest, the newest actor outermost.
type Actor struct {
	Subject string `json:"sub"`
	Actor   *Actor `json:"act,omitempty"`
}

// Chain lists the actors, newest (outermost) first.
func (a *Actor) Chain() []string {
	var out []string
	for ; a != nil; a = a.Actor {
		out = append(out, a.Subject)
	}
	return out
}

// Audience is the aud claim: one resource per token as this issuer mints
// it (a single string on the wire), several as other issuers may send.
type Audience []string

// MarshalJSON writes a single audience as a string (RFC 7519 §4.1.3).
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// ClaimError is a claim that is missing or malformed. Its message is
// fixed, never derived from the token, so it may be shown to the client.
type ClaimError struct{ msg string }

func (e *ClaimError) Error() string { return e.msg }

func malformed(name string) error {
	return &ClaimError{"the access token has a malformed " + name + " claim"}
}

// UnmarshalJSON reads the claims the project decides on, by exact name.
// It also reads the forms other authorization servers use: scopes in scp
// (a space-separated string or an array, as Entra ID and Okta send it)
// when scope is absent, and the client in azp when client_id is absent
// (Auth0, Entra ID). A token with both forms of one claim is refused as
// malformed rather than read one way here and another elsewhere.
func (c *Claims) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	strs := []struct {
		name string
		dst  *string
	}{
		{"iss", &c.Issuer}, {"sub", &c.Subject}, {"client_id", &c.ClientID}, {"jti", &c.ID},
		{"scope", &c.Scope}, {"principal_type", &c.PrincipalType}, {"gid", &c.GrantID},
	}
	for _, s := range strs {
		if raw, ok := m[s.name]; ok {
			if err := decodeString(raw, s.dst); err != nil {
				return malformed(s.name)
			}
		}
	}
	dates := []struct {
		name string
		dst  **jwt.NumericDate
	}{
		{"iat", &c.IssuedAt}, {"exp", &c.ExpiresAt}, {"nbf", &c.NotBefore}, {"auth_time", &c.AuthTime},
	}
	for _, d := range dates {
		if raw, ok := m[d.name]; ok {
			// jwt.NumericDate also reads a number in a string; a
			// NumericDate is a JSON number (RFC 7519 §2).
			nd := new(jwt.NumericDate)
			if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) || nd.UnmarshalJSON(raw) != nil {
				return malformed(d.name)
			}
			*d.dst = nd
		}
	}
	if raw, ok := m["scp"]; ok {
		var scp Audience // a string or an array of strings, as aud
		_, both := m["scope"]
		// An array element is one scope: one with a space would read as
		// two once joined.
		isArray := len(raw) > 0 && raw[0] == '['
		if both || scp.decode(raw) != nil || isArray && slices.ContainsFunc(scp, func(s string) bool {
			return s == "" || strings.ContainsAny(s, " \t\r\n")
		}) {
			return malformed("scp")
		}
		c.Scope = strings.Join(scp, " ")
	}
	if raw, ok := m["azp"]; ok {
		var azp string
		if err := decodeString(raw, &azp); err != nil {
			return malformed("azp")
		}
		if _, both := m["client_id"]; both && azp != c.ClientID {
			return malformed("azp")
		}
		c.ClientID = azp
	}
	_, nonce := m["nonce"]
	_, atHash := m["at_hash"]
	c.IDTokenClaims = nonce || atHash
	if raw, ok := m["aud"]; ok {
		if err := c.Audience.decode(raw); err != nil {
			return malformed("aud")
		}
	}
	if raw, ok := m["cnf"]; ok {
		var cnf map[string]json.RawMessage
		if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &cnf) != nil || len(cnf) != 1 {
			return malformed("cnf")
		}
		c.Confirmation = new(Confirmation)
		if err := decodeString(cnf["jkt"], &c.Confirmation.JKT); err != nil || c.Confirmation.JKT == "" {
			return malformed("cnf")
		}
	}
	if raw, ok := m["act"]; ok {
		act, err := decodeActor(raw, c.Issuer)
		if err != nil {
			return err
		}
		c.Actor = act
	}
	return nil
}

// decodeString reads a JSON string; null is not one.
func decodeString(raw json.RawMessage, dst *string) error {
	if len(raw) == 0 || raw[0] != '"' {
		return errors.New("not a string")
	}
	return json.Unmarshal(raw, dst)
}

func (a *Audience) decode(raw json.RawMessage) error {
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		*a = Audience{s}
		return nil
	}
	if len(raw) == 0 || raw[0] != '[' {
		return errors.New("not a string or an array")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return err
	}
	out := make(Audience, len(list))
	for i, v := range list {
		if err := decodeString(v, &out[i]); err != nil {
			return err
		}
	}
	*a = out
	return nil
}

// decodeActor reads a nested act claim iteratively, so that its depth is
// bounded before it is read rather than after. An actor whose iss is not
// the token's issuer is refused: its sub is of another issuer's namespace
// (RFC 8693 section 4.1), which agent rules, sessions and pins, keyed by
// sub alone, would take for this issuer's agent of that name.
func decodeActor(raw json.RawMessage, issuer string) (*Actor, error) {
	var head *Actor
	link := &head
	for depth := 1; ; depth++ {
		if depth > MaxActDepth {
			return nil, &ClaimError{"the access token's act chain is too deep"}
		}
		if len(raw) == 0 || raw[0] != '{' {
			return nil, malformed("act")
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, malformed("act")
		}
		a := new(Actor)
		if err := decodeString(m["sub"], &a.Subject); err != nil || a.Subject == "" {
			return nil, &ClaimError{"the access token has an act claim without sub"}
		}
		if iss, ok := m["iss"]; ok {
			var s string
			if decodeString(iss, &s) != nil || s != issuer {
				return nil, &ClaimError{"the access token's act names an actor of another issuer"}
			}
		}
		*link, link = a, &a.Actor
		next, ok := m["act"]
		if !ok {
			return head, nil
		}
		raw = next
	}
}

// The jwt.Claims methods, for the parser's validation.

func (c *Claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }
func (c *Claims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt, nil }
func (c *Claims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore, nil }
func (c *Claims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *Claims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *Claims) GetAudience() (jwt.ClaimStrings, error)       { return jwt.ClaimStrings(c.Audience), nil }

var _ jwt.Claims = (*Claims)(nil)

// ValidScope reports whether s is one RFC 6749 scope-token (section 3.3:
// %x21 / %x23-5B / %x5D-7E). The scope claim is such tokens joined by
// spaces, so a scope holding a space would be read as two; the quote and
// backslash excluded also keep a scope safe in a quoted
// WWW-Authenticate parameter.
func ValidScope(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c == '"' || c == '\\' || c > 0x7e {
			return false
		}
	}
	return true
}

// ValidPort reports whether port, a URL's port (url.URL.Port), is none
// or one a connection can use (1 to 65535; url.Parse checks only that
// it is digits), written as every URL parser writes it back: without a
// leading zero. A browser reads https://h:0443 as https://h, and
// http://127.0.0.1:05555 as port 5555, so a URL so written is not the
// string its users compare (an issuer identifier, a resource, a
// redirect URI).
func ValidPort(port string) bool {
	if port == "" {
		return true
	}
	if len(port) > 5 || port[0] == '0' {
		return false
	}
	n := 0
	for i := 0; i < len(port); i++ {
		c := port[i]
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	return n <= 65535
}
