package issuer

import (
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// BenchmarkIssueAccessToken measures signing one RFC 9068 access token
// (claims, random jti, signature) per algorithm.
func BenchmarkIssueAccessToken(b *testing.B) {
	for _, alg := range signingAlgs {
		b.Run(alg, func(b *testing.B) {
			e := newTokEnv(b, func(c *Config) { c.SigningAlg = alg })
			s := tokenSubject{client: &Client{ID: tPublic}, user: &User{Username: tUser}, subject: tUser,
				resource: tResource, scopes: []string{"read", "write"}, grantID: "g", authTime: e.clock.Now()}
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				if _, _, _, err := e.iss.signAccessToken(ctx, s, e.iss.expiry(s)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyAccessToken measures what a resource server does per
// request: parse and verify with jwt/v5, pinned algorithm, typ, iss, aud
// and exp (the key already resolved by kid).
func BenchmarkVerifyAccessToken(b *testing.B) {
	for _, alg := range signingAlgs {
		b.Run(alg, func(b *testing.B) {
			e := newTokEnv(b, func(c *Config) { c.SigningAlg = alg })
			raw := e.clientToken(b)
			h, _, _ := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
			key, err := e.iss.PublicKey(b.Context(), h.Header["kid"].(string))
			if err != nil {
				b.Fatal(err)
			}
			p := jwt.NewParser(jwt.WithValidMethods([]string{alg}), jwt.WithIssuer(e.iss.URL()),
				jwt.WithAudience(tResource), jwt.WithExpirationRequired(), jwt.WithTimeFunc(e.clock.Now))
			keyfunc := func(t *jwt.Token) (any, error) {
				if t.Header["typ"] != "at+jwt" {
					return nil, jwt.ErrTokenInvalidClaims
				}
				return key, nil
			}
			b.ReportAllocs()
			for b.Loop() {
				var c accesstoken.Claims
				if _, err := p.ParseWithClaims(raw, &c, keyfunc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
