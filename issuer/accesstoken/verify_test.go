package accesstoken

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testIssuer = "https://auth.example.com"

var testNow = time.Unix(1700000000, 0)

func TestParse(t *testing.T) {
	k := newTestKeys(t)
	keys := map[string]any{"ec": &k.p256.PublicKey, "rsa": &k.rsa.PublicKey, "ed": k.ed.Public()}
	keyFunc := func(_ context.Context, kid string) (any, error) {
		if key, ok := keys[kid]; ok {
			return key, nil
		}
		return nil, errors.New("unknown kid")
	}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"ES256", "RS256", "EdDSA"}), jwt.WithIssuer(testIssuer),
		jwt.WithAudience("https://mcp.example.com/mcp"), jwt.WithExpirationRequired(), jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return testNow }))
	claims := func() jwt.MapClaims {
		return jwt.MapClaims{"iss": testIssuer, "sub": "alice", "aud": "https://mcp.example.com/mcp", "client_id": "app",
			"iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix(), "jti": "j1"}
	}
	sign := func(m jwt.SigningMethod, key any, kid string, c jwt.MapClaims, hdr func(map[string]any)) string {
		t.Helper()
		tok := jwt.NewWithClaims(m, c)
		tok.Header["typ"], tok.Header["kid"] = Type, kid
		if hdr != nil {
			hdr(tok.Header)
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	es := func(c jwt.MapClaims, hdr func(map[string]any)) string {
		return sign(jwt.SigningMethodES256, k.p256, "ec", c, hdr)
	}
	without := func(name string) jwt.MapClaims { c := claims(); delete(c, name); return c }
	rsaDER := x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)
	tests := []struct {
		name  string
		token string
		err   error // nil: accepted; errAny: any error
	}{
		{"ES256", es(claims(), nil), nil},
		{"RS256", sign(jwt.SigningMethodRS256, k.rsa, "rsa", claims(), nil), nil},
		{"EdDSA", sign(jwt.SigningMethodEdDSA, k.ed, "ed", claims(), nil), nil},
		{"typ long form", es(claims(), func(h map[string]any) { h["typ"] = "application/AT+JWT" }), nil},
		{"typ JWT", es(claims(), func(h map[string]any) { h["typ"] = "JWT" }), ErrWrongType},
		{"no typ", es(claims(), func(h map[string]any) { delete(h, "typ") }), ErrWrongType},
		{"crit", es(claims(), func(h map[string]any) { h["crit"] = []string{"exp"} }), ErrCritical},
		{"no kid", es(claims(), func(h map[string]any) { delete(h, "kid") }), ErrNoKid},
		{"unknown kid", sign(jwt.SigningMethodES256, k.p256, "nope", claims(), nil), errAny},
		{"RSA key under an ES256 kid", sign(jwt.SigningMethodRS256, k.rsa, "ec", claims(), nil), ErrKeyType},
		{"HS256 with the public key as secret", sign(jwt.SigningMethodHS256, rsaDER, "rsa", claims(), nil), jwt.ErrTokenSignatureInvalid},
		{"other audience", es(func() jwt.MapClaims { c := claims(); c["aud"] = "https://x.example"; return c }(), nil), jwt.ErrTokenInvalidAudience},
		{"expired", es(func() jwt.MapClaims { c := claims(); c["exp"] = testNow.Add(-time.Minute).Unix(); return c }(), nil), jwt.ErrTokenExpired},
		{"not yet valid", es(func() jwt.MapClaims { c := claims(); c["nbf"] = testNow.Add(time.Minute).Unix(); return c }(), nil), jwt.ErrTokenNotValidYet},
		{"no exp", es(without("exp"), nil), jwt.ErrTokenRequiredClaimMissing},
		{"no sub", es(without("sub"), nil), errClaim},
		{"no client_id", es(without("client_id"), nil), errClaim},
		{"malformed scope", es(func() jwt.MapClaims { c := claims(); c["scope"] = 1; return c }(), nil), errClaim},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(t.Context(), parser, tt.token, keyFunc)
			switch {
			case tt.err == nil && err != nil:
				t.Fatalf("Parse() error: %v", err)
			case tt.err == nil:
				if c.Subject != "alice" || c.ClientID != "app" || c.ID != "j1" {
					t.Errorf("Parse() = %+v, want alice/app/j1", c)
				}
			case err == nil:
				t.Fatalf("Parse() = %+v, want error %v", c, tt.err)
			case tt.err == errClaim:
				var ce *ClaimError
				if !errors.As(err, &ce) {
					t.Errorf("Parse() error = %v, want a *ClaimError", err)
				}
			case tt.err != errAny && !errors.Is(err, tt.err):
				t.Errorf("Parse() error = %v, want %v", err, tt.err)
			}
		})
	}
}

var (
	errAny   = errors.New("any error")
	errClaim = errors.New("a *ClaimError")
)
