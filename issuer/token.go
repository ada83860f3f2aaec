package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// Grant types.
const (
	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token"
	grantClientCredentials = "client_credentials"
	grantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange" // RFC 8693
)

// Token types of RFC 8693 (subject_token_type, actor_token_type,
// issued_token_type). This issuer's tokens are JWT access tokens; either
// name is accepted for them.
const (
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
)

// OIDC scopes: granted to user tokens when requested, never resource scopes.
const (
	scopeOpenID        = "openid"
	scopeProfile       = "profile"
	scopeEmail         = "email"
	scopeOfflineAccess = "offline_access"
)

var oidcScopes = []string{scopeOpenID, scopeProfile, scopeEmail, scopeOfflineAccess}

// unheldClaimScopes are OpenID Connect scope values (Core 5.4) for claims
// no user here has: an OpenID Connect request ignores them (Core
// 3.1.2.1), unless its resource offers a scope of that name.
var unheldClaimScopes = []string{"address", "phone"}

// tokenGrant is one grant type of the token endpoint, in a file of its
// own (grant_*.go). It checks a request read once and says what to issue;
// the minter signs and records that.
type tokenGrant interface {
	name() string // the grant_type value
	grant(ctx context.Context, req *clientRequest) (*issuance, error)
}

// tokenGrants are the grant types the issuer supports, in the order its
// metadata lists them. A new grant type is a grant_*.go file and its line
// here.
func tokenGrants(i *Issuer) []tokenGrant {
	gs := []tokenGrant{
		authorizationCode{i},
		refreshTokenGrant{i},
		clientCredentials{i},
		tokenExchange{i},
	}
	if len(i.trusted) > 0 {
		gs = append(gs, jwtBearer{i})
	}
	return gs
}

// tokenResponse is the RFC 6749 section 5.1 answer.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"` // RFC 8693
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
	// Resource is the granted resource, for the jwt-bearer grant only:
	// the ID-JAG draft's processing rules require it there.
	Resource     string `json:"resource,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	IDToken      string `json:"id_token,omitempty"`
}

func (i *Issuer) handleToken(w http.ResponseWriter, r *http.Request) {
	req, ok := i.authenticatedPost(w, r)
	if !ok {
		return
	}
	proof, err := i.dpopProof(w, r, pathToken, req.client)
	if err == nil {
		err = requireDPoP(req.client, jktOf(proof))
	}
	if err != nil {
		i.writeErr(w, err)
		return
	}
	req.jkt, req.proof = jktOf(proof), proof
	c, gt := req.client, req.form.Get("grant_type")
	if gt == "" {
		i.writeErr(w, ErrInvalidRequest.WithDescription("grant_type is required"))
		return
	}
	grant, ok := i.grants[gt]
	if !ok {
		i.writeErr(w, ErrUnsupportedGrantType.WithDescription(fmt.Sprintf("grant_type %q is not supported", gt)))
		return
	}
	if !clientMayUse(c, gt) {
		i.writeErr(w, ErrUnauthorizedClient.WithDescription(fmt.Sprintf("client may not use grant_type %q", gt)))
		return
	}
	is, err := grant.grant(r.Context(), req)
	if err == nil {
		// Spent only now: a request without a valid grant must not fill
		// the bounded replay memory.
		err = spendProof(r.Context(), proof)
	}
	if err != nil {
		i.writeErr(w, err)
		return
	}
	// Every grant binds its access token to the proof's key (RFC 9449
	// section 5), if the request has one.
	is.subject.jkt = req.jkt
	is.assertion = req.assertion
	resp, err := i.mint.issue(r.Context(), is)
	if err != nil {
		i.writeErr(w, i.assertionErr(r.Context(), req.assertion, err))
		return
	}
	i.keepRegistration(r.Context(), c)
	writeNoStoreJSON(w, http.StatusOK, resp)
}

// spendReused spends a token request's DPoP proof and client assertion
// before a code or refresh token used again revokes its grant. A copy of
// the client's own request (captured and sent again, even while the
// original is under way: the original spends both as it issues) then
// finds them spent and is refused (invalid_dpop_proof, invalid_client),
// revoking nothing.
func (i *Issuer) spendReused(ctx context.Context, req *clientRequest) error {
	if err := spendProof(ctx, req.proof); err != nil {
		return err
	}
	return i.spendAssertion(ctx, req)
}

// clientMayUse reports whether c may use a grant type: the listed ones, or
// authorization_code and refresh_token when none are listed. Grants
// without a user need a confidential client.
func clientMayUse(c *Client, gt string) bool {
	if needsConfidential(gt) && c.Public() {
		return false
	}
	if len(c.GrantTypes) == 0 {
		return gt == grantAuthorizationCode || gt == grantRefreshToken
	}
	return slices.Contains(c.GrantTypes, gt)
}

// needsConfidential reports whether grant type gt is only for clients
// that authenticate: grants without a user, and the jwt-bearer grant (an
// ID-JAG is a bearer artifact until redeemed).
func needsConfidential(gt string) bool {
	return gt == grantClientCredentials || gt == grantTokenExchange || gt == grantJWTBearer
}

// actorOf is the act claim of a single actor, nil for none.
func actorOf(id string) *accesstoken.Actor {
	if id == "" {
		return nil
	}
	return &accesstoken.Actor{Subject: id}
}

// signAccessToken signs an access token of s valid until exp; it returns
// the token, its jti and the kid of the key that signed it.
func (i *Issuer) signAccessToken(ctx context.Context, s tokenSubject, exp time.Time) (string, string, string, error) {
	k, err := i.keys.signer(ctx, exp.Add(accesstoken.Leeway))
	if err != nil {
		return "", "", "", err
	}
	jti, err := i.randomToken(16)
	if err != nil {
		return "", "", "", err
	}
	now := i.now()
	c := &accesstoken.Claims{
		Issuer:        i.URL(),
		Subject:       s.subject,
		Audience:      accesstoken.Audience{s.resource},
		ClientID:      s.client.ID,
		IssuedAt:      jwt.NewNumericDate(now),
		ExpiresAt:     jwt.NewNumericDate(exp),
		ID:            jti,
		Scope:         strings.Join(s.scopes, " "),
		Actor:         s.act,
		PrincipalType: s.principalType,
		GrantID:       s.grantID,
	}
	if s.jkt != "" {
		c.Confirmation = &accesstoken.Confirmation{JKT: s.jkt}
	}
	if s.user != nil {
		c.PrincipalType = principalUser
		if !s.authTime.IsZero() {
			c.AuthTime = jwt.NewNumericDate(s.authTime)
		}
	}
	t := jwt.NewWithClaims(k.method, c)
	t.Header["typ"] = accesstoken.Type
	t.Header["kid"] = k.kid
	raw, err := t.SignedString(k.private)
	if err != nil {
		return "", "", "", fmt.Errorf("sign access token: %w", err)
	}
	return raw, jti, k.kid, nil
}

// verifyAccessToken verifies an access token this issuer signed, for any
// audience, and refuses revoked ones and those of a key withdrawn since
// this instance read its keys (revokedInStore). Used by introspection,
// userinfo, revocation and actor tokens.
func (i *Issuer) verifyAccessToken(ctx context.Context, raw string) (*accesstoken.Claims, error) {
	c, err := i.parseAccessToken(ctx, raw, 0)
	if err != nil {
		return nil, err
	}
	switch revoked, err := i.revokedInStore(ctx, headerKID(raw), c.ID, c.GrantID); {
	case err != nil:
		// Not known to be live: refused, and a store that cannot
		// answer now is told as such (storeBusy), not as a bad token.
		return nil, fmt.Errorf("access token: revocation check: %w", err)
	case revoked:
		return nil, errors.New("token revoked")
	}
	return c, nil
}

// verifyAccessTokenReading is verifyAccessToken for a caller that may
// have the store read: a token of a key this instance's copy lacks is
// verified against the keys read again rather than refused. The copy is
// re-read for an unknown kid at most every keyMinReload, and another
// instance's key may be newer than it (a withdrawal's new key signs at
// once). For introspection and the token endpoint's subject and actor
// tokens, whose callers authenticated (or hold a code and its verifier)
// and whose verification reads the store anyway; not for /userinfo or
// the gateways, which anyone may send a made-up kid.
func (i *Issuer) verifyAccessTokenReading(ctx context.Context, raw string) (*accesstoken.Claims, error) {
	c, err := i.verifyAccessToken(ctx, raw)
	if missing := (notInCopy{}); errors.As(err, &missing) {
		if err = i.keys.load(ctx); err == nil {
			c, err = i.verifyAccessToken(ctx, raw)
		}
	}
	return c, err
}

// headerKID is the kid in the header of raw, a JWT verified already.
func headerKID(raw string) string {
	t, _, err := jwt.NewParser().ParseUnverified(raw, jwt.MapClaims{})
	if err != nil {
		return ""
	}
	kid, _ := t.Header["kid"].(string)
	return kid
}

// parseAccessToken checks signature, typ, iss, expiry and iat, not
// revocation. iat may be up to accesstoken.Leeway ahead of this clock:
// another instance on the store may have signed the token a moment ago
// by a clock a little ahead (clocks agree to within milliseconds, never
// exactly, and iat is whole seconds). exp is stretched by expLeeway only:
// revocation takes a token as long as a gateway may (accesstoken.Leeway).
func (i *Issuer) parseAccessToken(ctx context.Context, raw string, expLeeway time.Duration) (*accesstoken.Claims, error) {
	p := jwt.NewParser(jwt.WithValidMethods(signingAlgs), jwt.WithIssuer(i.URL()), jwt.WithExpirationRequired(),
		jwt.WithLeeway(expLeeway), jwt.WithTimeFunc(i.now))
	c, err := accesstoken.Parse(ctx, p, raw, i.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if c.ID == "" || len(c.Audience) != 1 || c.Audience[0] == "" {
		return nil, errors.New("access token: missing claims")
	}
	if c.IssuedAt != nil && c.IssuedAt.After(i.now().Add(accesstoken.Leeway)) {
		return nil, fmt.Errorf("access token: %w", jwt.ErrTokenUsedBeforeIssued)
	}
	return c, nil
}

// revokeUntil is how long a revocation issued now must last: until every
// access token issued so far has expired.
func (i *Issuer) revokeUntil() time.Time { return i.revocation().until }

// issued reports whether a grant or code recorded as created by the issuer
// URL iss is this issuer's: the same URL, or none recorded (records from
// before the URL was recorded stay valid across an upgrade).
func (i *Issuer) issued(iss string) bool { return iss == "" || iss == i.URL() }

// revocation is a revoking action happening now (record_epochs.go).
func (i *Issuer) revocation() revocation {
	now := i.now()
	return revocation{at: now, until: now.Add(i.cfg.AccessTokenTTL)}
}
