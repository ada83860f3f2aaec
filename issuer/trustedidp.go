package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// validateTrustedIdPs checks the trusted IdPs and links each to its
// identity provider (run after validateIdentityProviders).
func validateTrustedIdPs(cfg *Config) error {
	seen := map[string]bool{}
	for n := range cfg.TrustedIdPs {
		t := &cfg.TrustedIdPs[n]
		if _, err := parseIssuerURL(t.Issuer); err != nil || seen[t.Issuer] {
			return fmt.Errorf("trusted_idp %q: want a unique https issuer URL", t.Issuer)
		}
		seen[t.Issuer] = true
		if err := checkKeySetURL(t.JWKSURI); err != nil {
			return fmt.Errorf("trusted_idp %q: jwks_uri %w", t.Issuer, err)
		}
		p, err := t.provider(cfg.IdentityProviders)
		if err != nil {
			return fmt.Errorf("trusted_idp %q: %w", t.Issuer, err)
		}
		t.IdentityProvider = p.Name
	}
	return nil
}

// checkKeySetURL checks a trusted IdP's jwks_uri: read as an issuer URL
// is (parseIssuerURL: https, http for loopback hosts only, no fragment or
// userinfo, a port a client can reach) but for a query, which a key set's
// URL may have and an issuer's may not: Microsoft Entra ID serves the
// keys of an application with its own signing key at
// .../discovery/v2.0/keys?appid=<id>, which was refused as "not an https
// URL".
func checkKeySetURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("must be an https URL (http only for loopback hosts), absolute, without fragment or userinfo")
	}
	u.RawQuery, u.ForceQuery = "", false
	if _, err := parseIssuerURL(u.String()); err != nil || strings.Contains(s, "#") {
		return errors.New("must be an https URL (http only for loopback hosts), absolute, without fragment or userinfo")
	}
	return nil
}

// provider is the identity provider whose users t's ID-JAGs name: the one
// named, or the only one with t's issuer. It must have t's issuer: a
// provider's namespace holds the subjects of one issuer only.
func (t *TrustedIdP) provider(ps []IdentityProvider) (*IdentityProvider, error) {
	var found *IdentityProvider
	for n := range ps {
		p := &ps[n]
		switch {
		case t.IdentityProvider != "" && p.Name == t.IdentityProvider:
			if p.Issuer != t.Issuer {
				return nil, fmt.Errorf("identity_provider %s has issuer %q, not this one", p.Name, p.Issuer)
			}
			return p, nil
		case t.IdentityProvider == "" && p.Issuer == t.Issuer:
			if found != nil {
				return nil, errors.New("several identity providers have this issuer: name one (identity_provider)")
			}
			found = p
		}
	}
	if found == nil {
		return nil, errors.New("no identity_provider with this issuer: its users are that provider's (user_claim, group mapping), declare it")
	}
	return found, nil
}

// trustedIdP is a trusted IdP at run time: its provider's user rules and
// its keys.
type trustedIdP struct {
	cfg  TrustedIdP
	idp  *IdentityProvider
	jwks *jwksCache
}

func newTrustedIdPs(cfg *Config) map[string]*trustedIdP {
	if len(cfg.TrustedIdPs) == 0 {
		return nil
	}
	jwks := newJWKSCache(newIdPHTTPClient(), cfg.Now)
	out := make(map[string]*trustedIdP, len(cfg.TrustedIdPs))
	for _, t := range cfg.TrustedIdPs {
		for n := range cfg.IdentityProviders {
			if cfg.IdentityProviders[n].Name == t.IdentityProvider {
				out[t.Issuer] = &trustedIdP{cfg: t, idp: &cfg.IdentityProviders[n], jwks: jwks}
			}
		}
	}
	return out
}

// keys returns the IdP's key that fits the ID-JAG's kid and alg,
// refetching its JWK Set (rate-limited) when none fits: the IdP rotated.
func (t *trustedIdP) keys(ctx context.Context, tok *jwt.Token) (any, error) {
	kid, _ := tok.Header["kid"].(string)
	for _, refresh := range []bool{false, true} {
		set, err := t.jwks.keys(ctx, t.cfg.JWKSURI, refresh)
		if err != nil {
			return nil, err
		}
		if key, err := keyFor(set, kid, tok.Method.Alg()); !errors.Is(err, errNoKeyFits) {
			return key, err
		}
	}
	return nil, errors.New("no key of the identity provider fits the ID-JAG")
}

// isIDJAGType reports whether a JWS typ header names an ID-JAG: media
// types compare case-insensitively, with or without "application/"
// (RFC 7515 section 4.1.9).
func isIDJAGType(typ string) bool {
	typ = strings.ToLower(typ)
	return strings.TrimPrefix(typ, "application/") == idJAGType
}
