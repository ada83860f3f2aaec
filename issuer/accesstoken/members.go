package accesstoken

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// ErrAmbiguous is a JWS whose header or claims name a member twice, or
// in two cases (CheckMembers); ErrMalformed one that is no compact JWS
// of base64url JSON at all.
var (
	ErrAmbiguous = errors.New("token names a member twice, or in two cases")
	ErrMalformed = errors.New("token is not a compact JWS of JSON")
)

// CheckMembers refuses a compact JWS whose header or claims are not one
// JSON value that names each member once, in one case and without NUL
// variants (mcpparse.CheckValue, the reader the gateway uses for MCP
// messages). encoding/json, and so golang-jwt and go-oidc, read the last
// of two members of one name, and a struct field under any case of its
// name, while the party that signed the token, or another reader of it,
// may read the first: such a token says nothing for certain. Every JWS
// from outside (a client assertion, an ID-JAG, a DPoP proof, an identity
// provider's ID token) is checked before anything reads it; tokens this
// module signed need not be.
func CheckMembers(raw string) error {
	for range 2 {
		part, rest, ok := strings.Cut(raw, ".")
		if !ok {
			return ErrMalformed
		}
		// go-jose (go-oidc) accepts padding; golang-jwt refuses it.
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(part, "="))
		if err != nil || !json.Valid(b) {
			return ErrMalformed
		}
		if mcpparse.CheckValue(b, 0) != nil {
			return ErrAmbiguous
		}
		raw = rest
	}
	return nil
}
