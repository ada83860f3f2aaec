package issuer

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
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

// maxFormBytes bounds back-channel request bodies.
const maxFormBytes = 64 << 10

// tokenState holds the TOKENS half's fields.
type tokenState struct {
	keys       keyRing
	limiter    *limiter
	anonWrites *rateLimiter // unauthenticated store writes per address
	parClients *rateLimiter // pushed requests per client

	resMu            sync.RWMutex
	runtimeResources map[string]Resource // by URL, from AddResource

	// grants maps a grant_type to its handler.
	grants map[string]grantHandler

	jwksClient *http.Client // fetches private_key_jwt clients' jwks_uri
	jwksMu     sync.Mutex
	jwksCache  map[string]cachedJWKS

	dummy  dummyPassword // checked for unknown users
	hashes *hashGate     // bounds concurrent password and secret hashing
}

// grantHandler runs one grant type for an authenticated client.
type grantHandler func(ctx context.Context, f url.Values, c *Client) (*tokenResponse, error)

// initTokens validates the configured directory and loads (or generates
// and persists) the signing key.
func (i *Issuer) initTokens() error {
	i.limiter = newLimiter(i.now)
	i.hashes = newHashGate()
	i.anonWrites = newRateLimiter(anonWriteBurst, time.Minute)
	i.parClients = newRateLimiter(parClientBurst, time.Minute)
	i.runtimeResources = make(map[string]Resource)
	i.jwksCache = make(map[string]cachedJWKS)
	i.grants = map[string]grantHandler{
		grantAuthorizationCode: i.grantAuthorizationCode,
		grantRefreshToken:      i.grantRefreshToken,
		grantClientCredentials: i.grantClientCredentials,
		grantTokenExchange:     i.grantTokenExchange,
	}
	fc, err := newFetchClient(i.cfg.HTTPClient, i.cfg.CIMDAllowPrivate, i.cfg.CIMDTimeout)
	if err != nil {
		return err
	}
	i.jwksClient = fc
	if err := i.validateConfigDirectory(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := i.checkAgentIDs(ctx); err != nil {
		return err
	}
	if err := i.noteStoredUsers(ctx); err != nil {
		return fmt.Errorf("read users: %w", err)
	}
	return i.initKeys(ctx)
}

// tokenResponse is the RFC 6749 section 5.1 answer.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"` // RFC 8693
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	IDToken         string `json:"id_token,omitempty"`
}

func (i *Issuer) handleToken(w http.ResponseWriter, r *http.Request) {
	c, ok := i.authenticatedPost(w, r)
	if !ok {
		return
	}
	gt := r.PostForm.Get("grant_type")
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
	resp, err := grant(r.Context(), r.PostForm, c)
	if err != nil {
		i.writeErr(w, err)
		return
	}
	i.keepRegistration(r.Context(), c)
	writeNoStoreJSON(w, http.StatusOK, resp)
}

// clientMayUse reports whether c may use a grant type: the listed ones, or
// authorization_code and refresh_token when none are listed. Grants
// without a user need a confidential client.
func clientMayUse(c *Client, gt string) bool {
	if (gt == grantClientCredentials || gt == grantTokenExchange) && c.Public() {
		return false
	}
	if len(c.GrantTypes) == 0 {
		return gt == grantAuthorizationCode || gt == grantRefreshToken
	}
	return slices.Contains(c.GrantTypes, gt)
}

// grantAuthorizationCode redeems a code (RFC 6749 4.1.3, RFC 7636 4.6).
func (i *Issuer) grantAuthorizationCode(ctx context.Context, f url.Values, c *Client) (*tokenResponse, error) {
	code := f.Get("code")
	if code == "" {
		return nil, ErrInvalidRequest.WithDescription("code is required")
	}
	// Read first: lookups of the user and agent must not run inside the
	// write transaction. The write below re-checks that nothing changed.
	var ac *authCode
	err := i.store.View(ctx, func(tx store.Tx) error {
		var err error
		ac, err = codesIn(tx).get(code)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
	}
	if err != nil {
		return nil, err
	}
	if ac.Redeemed {
		return nil, i.codeReplayed(ctx, code)
	}
	now := i.now()
	switch {
	case !now.Before(ac.ExpiresAt):
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
	case ac.ClientID != c.ID:
		return nil, ErrInvalidGrant.WithDescription("authorization code was issued to another client")
	case f.Get("redirect_uri") != ac.RedirectURI:
		return nil, ErrInvalidGrant.WithDescription("redirect_uri does not match the authorization request")
	}
	if err := checkPKCE(ac.CodeChallenge, ac.CodeChallengeMethod, f.Get("code_verifier")); err != nil {
		return nil, err
	}
	if res := f.Get("resource"); res != "" && !sameResource(res, ac.Resource) {
		return nil, ErrInvalidTarget.WithDescription("resource differs from the authorization request")
	}
	u, err := i.lookupUser(ctx, ac.Subject)
	if err != nil {
		return nil, ErrInvalidGrant.WithDescription("user is unknown or disabled").Wrap(err)
	}
	agent, err := i.checkActorToken(ctx, f, ac.Actor, c.ID)
	if err != nil {
		return nil, err
	}
	scopes := ac.Scopes
	if agent != nil {
		// The user delegated no more than the agent may ever hold.
		scopes = agent.limitScopes(scopes)
	}
	if !clientMayUse(c, grantRefreshToken) {
		// The client could never use a refresh token; say so in scope.
		scopes = slices.DeleteFunc(slices.Clone(scopes), func(s string) bool { return s == scopeOfflineAccess })
	}
	offline := slices.Contains(scopes, scopeOfflineAccess)

	gid, err := i.randomToken(16)
	if err != nil {
		return nil, err
	}
	g := grant{
		ID: gid, Subject: ac.Subject, ClientID: c.ID, Actor: ac.Actor, Resource: ac.Resource,
		Scopes: scopes, AuthTime: ac.AuthTime, CreatedAt: now, LastUsed: now,
		ExpiresAt: now.Add(i.cfg.AccessTokenTTL),
	}
	if offline {
		g.ExpiresAt = now.Add(i.cfg.RefreshTokenTTL)
	}
	resp, jti, rt, err := i.issueTokens(ctx, tokenSubject{
		client: c, user: u, subject: ac.Subject, resource: ac.Resource, scopes: scopes,
		act: actorOf(ac.Actor), grantID: gid, authTime: ac.AuthTime, nonce: ac.Nonce,
	}, offline)
	if err != nil {
		return nil, err
	}

	var replayed bool
	err = i.store.Update(ctx, func(tx store.Tx) error {
		var err error
		// Lost a race with another redemption: revoke what it issued.
		if replayed, err = codesIn(tx).redeem(code, gid, jti, i.revokeUntil()); err != nil || replayed {
			return err
		}
		if err := grantsIn(tx).put(&g); err != nil {
			return err
		}
		if rt == "" {
			return nil
		}
		return refreshIn(tx).issue(rt, &g, c.ID)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
	}
	if err != nil {
		return nil, fmt.Errorf("redeem code: %w", err)
	}
	if replayed {
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
	}
	i.logIssued(grantAuthorizationCode, c.ID, ac.Subject, actorOf(ac.Actor), ac.Resource, scopes, gid)
	return resp, nil
}

// codeReplayed handles a second use of a code: RFC 6749 4.1.2 says deny
// and revoke what the first use issued.
func (i *Issuer) codeReplayed(ctx context.Context, code string) error {
	err := i.store.Update(ctx, func(tx store.Tx) error { return codesIn(tx).replayed(code, i.revokeUntil()) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("revoke replayed code: %w", err)
	}
	i.log.Warn("authorization code replayed; its grant is revoked")
	return ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
}

// checkPKCE verifies an RFC 7636 S256 code_verifier.
func checkPKCE(challenge, method, verifier string) error {
	if challenge == "" || (method != "S256" && method != "") {
		// authorize never issues such a code; refuse rather than skip PKCE.
		return ErrInvalidGrant.WithDescription("authorization code has no S256 code challenge")
	}
	if verifier == "" {
		return ErrInvalidGrant.WithDescription("code_verifier is required")
	}
	if !validVerifier(verifier) {
		return ErrInvalidGrant.WithDescription("code_verifier must be 43 to 128 unreserved characters")
	}
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) != 1 {
		return ErrInvalidGrant.WithDescription("code_verifier does not match the code challenge")
	}
	return nil
}

// validVerifier: RFC 7636 section 4.1, 43*128 unreserved characters.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, b := range []byte(v) {
		if !isUnreserved(b) {
			return false
		}
	}
	return true
}

func isUnreserved(b byte) bool {
	return 'A' <= b && b <= 'Z' || 'a' <= b && b <= 'z' || '0' <= b && b <= '9' ||
		b == '-' || b == '.' || b == '_' || b == '~'
}

// checkActorToken enforces the agent-on-behalf-of-user binding
// (draft-oauth-ai-agents-on-behalf-of-user): a code bound to an actor
// requires actor_token, the agent's own access token from this issuer
// (valid, not revoked, principal_type agent, sub and client_id the actor,
// no act of its own), and the agent must still be enabled and allow the
// client; failures are invalid_grant. actor_token_type is optional here
// (clients send it or not); when sent it must name an access token or a
// JWT, else invalid_request. A code without an actor refuses actor_token
// (invalid_request) rather than ignore a delegation the user never saw.
func (i *Issuer) checkActorToken(ctx context.Context, f url.Values, actor, clientID string) (*Agent, error) {
	raw, typ := f.Get("actor_token"), f.Get("actor_token_type")
	if actor == "" {
		if raw != "" || typ != "" {
			return nil, ErrInvalidRequest.WithDescription("actor_token is only accepted for a requested_actor authorization")
		}
		return nil, nil
	}
	if raw == "" {
		return nil, ErrInvalidGrant.WithDescription("actor_token is required: the authorization names an actor")
	}
	if typ != "" && typ != tokenTypeAccessToken && typ != tokenTypeJWT {
		return nil, ErrInvalidRequest.WithDescription("unsupported actor_token_type")
	}
	claims, err := i.verifyAccessToken(ctx, raw)
	if err != nil || !ownAgentToken(claims) || claims.Subject != actor {
		return nil, ErrInvalidGrant.WithDescription("actor_token is not a valid token of the requested actor")
	}
	return i.agentFor(ctx, actor, clientID)
}

// ownAgentToken reports whether c is an agent's token for itself: not a
// user's, not delegated.
func ownAgentToken(c *accessClaims) bool {
	return c.PrincipalType == principalAgent && c.Subject == c.ClientID && c.Actor == nil
}

// grantRefreshToken rotates a refresh token (OAuth 2.1 4.3, 6.1).
func (i *Issuer) grantRefreshToken(ctx context.Context, f url.Values, c *Client) (*tokenResponse, error) {
	rt := f.Get("refresh_token")
	if rt == "" {
		return nil, ErrInvalidRequest.WithDescription("refresh_token is required")
	}
	var rec *refreshToken
	var g *grant
	err := i.store.View(ctx, func(tx store.Tx) error {
		var err error
		rec, g, err = refreshIn(tx).family(rt)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
	}
	if err != nil {
		return nil, err
	}
	if rec.ClientID != c.ID {
		return nil, ErrInvalidGrant.WithDescription("refresh token was issued to another client")
	}
	if rec.Rotated {
		return nil, i.refreshReused(ctx, rec.GrantID)
	}
	now := i.now()
	if g.Revoked || !now.Before(g.ExpiresAt) || !now.Before(rec.ExpiresAt) {
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
	}
	if res := f.Get("resource"); res != "" && !sameResource(res, g.Resource) {
		return nil, ErrInvalidTarget.WithDescription("a refresh token cannot change the resource")
	}
	requested, err := parseScope(f.Get("scope"))
	if err != nil {
		return nil, err
	}
	for _, s := range requested {
		if !slices.Contains(g.Scopes, s) {
			return nil, ErrInvalidScope.WithDescription(fmt.Sprintf("scope %q was not granted", s))
		}
	}
	if len(requested) == 0 {
		requested = g.Scopes
	}
	u, err := i.lookupUser(ctx, g.Subject)
	if err != nil {
		return nil, ErrInvalidGrant.WithDescription("user is unknown or disabled").Wrap(err)
	}
	// Re-apply today's policy: a user who lost a group loses its scopes.
	_, scopes, err := i.grantScopes(ctx, c, u, g.Resource, requested)
	if err != nil {
		return nil, err
	}
	if g.Actor != "" {
		// The delegation was proven at redemption; it lasts while the agent
		// does, within what the agent may hold today.
		a, err := i.agentFor(ctx, g.Actor, c.ID)
		if err != nil {
			return nil, err
		}
		if scopes = a.limitScopes(scopes); len(scopes) == 0 {
			return nil, ErrInvalidScope.WithDescription("the actor may hold none of the granted scopes")
		}
	}
	resp, _, newRT, err := i.issueTokens(ctx, tokenSubject{
		client: c, user: u, subject: g.Subject, resource: g.Resource, scopes: scopes,
		act: actorOf(g.Actor), grantID: g.ID, authTime: g.AuthTime,
	}, true)
	if err != nil {
		return nil, err
	}
	var refused bool
	err = i.store.Update(ctx, func(tx store.Tx) error {
		var err error
		refused, err = refreshIn(tx).rotate(rt, newRT, c.ID, now, i.revokeUntil())
		return err
	})
	if errors.Is(err, store.ErrNotFound) || refused {
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
	}
	if err != nil {
		return nil, fmt.Errorf("rotate refresh token: %w", err)
	}
	i.logIssued(grantRefreshToken, c.ID, g.Subject, actorOf(g.Actor), g.Resource, scopes, g.ID)
	return resp, nil
}

// refreshReused revokes the family of a rotated refresh token that was
// presented again: either the client or an attacker holds a stolen copy.
func (i *Issuer) refreshReused(ctx context.Context, grantID string) error {
	err := i.store.Update(ctx, func(tx store.Tx) error { return grantsIn(tx).revoke(grantID, i.revokeUntil()) })
	if err != nil {
		return fmt.Errorf("revoke reused refresh token family: %w", err)
	}
	i.log.Warn("rotated refresh token reused; its grant is revoked", zap.String("grant", grantID))
	return ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
}

// grantClientCredentials issues a token to a confidential client acting
// for itself (RFC 6749 4.4): sub is the client, principal_type client, no
// refresh token. An agent gets its own token the same way, marked
// principal_type agent. Either is recorded as a grant of its own, so that
// deleting the client or agent, disabling the agent, or rotating its
// secret revokes the token at once (through its gid, as a user's grant).
func (i *Issuer) grantClientCredentials(ctx context.Context, f url.Values, c *Client) (*tokenResponse, error) {
	requested, err := parseScope(f.Get("scope"))
	if err != nil {
		return nil, err
	}
	resource, scopes, err := i.clientGrantScopes(ctx, c, f.Get("resource"), requested)
	if err != nil {
		return nil, err
	}
	gid, err := i.randomToken(16)
	if err != nil {
		return nil, err
	}
	s := tokenSubject{client: c, subject: c.ID, resource: resource, scopes: scopes, principalType: principalClient, grantID: gid}
	if c.agent != nil {
		s.principalType = principalAgent
	}
	now := i.now()
	g := &grant{
		ID: gid, Subject: c.ID, ClientID: c.ID, PrincipalType: s.principalType, Resource: resource,
		Scopes: scopes, CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(i.cfg.AccessTokenTTL),
	}
	resp, _, _, err := i.issueTokens(ctx, s, false)
	if err != nil {
		return nil, err
	}
	err = i.store.Update(ctx, func(tx store.Tx) error { return grantsIn(tx).put(g) })
	if err != nil {
		return nil, fmt.Errorf("store client credentials grant: %w", err)
	}
	i.logIssued(grantClientCredentials, c.ID, c.ID, nil, resource, scopes, s.grantID)
	return resp, nil
}

func (i *Issuer) logIssued(gt, client, sub string, act *actorClaim, resource string, scopes []string, grantID string) {
	if ce := i.log.Check(zap.InfoLevel, "token issued"); ce != nil {
		ce.Write(zap.String("grant_type", gt), zap.String("client_id", client), zap.String("sub", sub),
			zap.Strings("act", act.chain()), zap.String("resource", resource), zap.Strings("scopes", scopes),
			zap.String("grant", grantID))
	}
}

// tokenSubject is what a token is issued for.
type tokenSubject struct {
	client   *Client
	user     *User // nil for client and agent tokens
	subject  string
	resource string
	scopes   []string
	act      *actorClaim // who acts for the subject, newest outermost
	grantID  string
	authTime time.Time
	nonce    string
	// principalType is the claim when user is nil (principalAgent,
	// principalClient); a user's token always says principalUser.
	principalType string
	// notAfter, when set, caps the access token's expiry (an exchanged
	// token never outlives its subject token).
	notAfter time.Time
}

// expiry is when an access token issued now for s expires.
func (i *Issuer) expiry(s tokenSubject) time.Time {
	exp := i.now().Add(i.cfg.AccessTokenTTL)
	if !s.notAfter.IsZero() && s.notAfter.Before(exp) {
		exp = s.notAfter
	}
	return exp
}

// issueTokens signs the access token (and ID token when openid was
// granted) and draws a refresh token when refresh is set. It writes
// nothing; the caller stores the refresh token in its transaction.
func (i *Issuer) issueTokens(ctx context.Context, s tokenSubject, refresh bool) (*tokenResponse, string, string, error) {
	at, jti, err := i.signAccessToken(ctx, s)
	if err != nil {
		return nil, "", "", err
	}
	resp := &tokenResponse{
		AccessToken: at,
		TokenType:   "Bearer",
		ExpiresIn:   int64(i.expiry(s).Sub(i.now()) / time.Second),
		Scope:       strings.Join(s.scopes, " "),
	}
	if refresh {
		if resp.RefreshToken, err = i.randomToken(32); err != nil {
			return nil, "", "", err
		}
	}
	if s.user != nil && slices.Contains(s.scopes, scopeOpenID) {
		if resp.IDToken, err = i.signIDToken(ctx, s, at); err != nil {
			return nil, "", "", err
		}
	}
	return resp, jti, resp.RefreshToken, nil
}

// actorClaim is the RFC 8693 act claim; chains nest, newest outermost.
type actorClaim struct {
	Subject string      `json:"sub"`
	Actor   *actorClaim `json:"act,omitempty"`
}

// actorOf is the act claim of a single actor, nil for none.
func actorOf(id string) *actorClaim {
	if id == "" {
		return nil
	}
	return &actorClaim{Subject: id}
}

// chain lists the actors, newest first.
func (a *actorClaim) chain() []string {
	var out []string
	for ; a != nil; a = a.Actor {
		out = append(out, a.Subject)
	}
	return out
}

// accessClaims are the claims of an RFC 9068 access token. aud is a single
// string: one resource per token (RFC 8707).
type accessClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"`
	Audience  string           `json:"aud"`
	ClientID  string           `json:"client_id"`
	IssuedAt  *jwt.NumericDate `json:"iat"`
	ExpiresAt *jwt.NumericDate `json:"exp"`
	ID        string           `json:"jti"`
	Scope     string           `json:"scope,omitempty"`
	AuthTime  *jwt.NumericDate `json:"auth_time,omitempty"`
	Actor     *actorClaim      `json:"act,omitempty"`
	// PrincipalType is "user" for a user's tokens (delegated or not),
	// "agent" for an agent acting alone, "client" for a client's own.
	PrincipalType string `json:"principal_type,omitempty"`
	// GrantID names the grant (refresh family) the token belongs to, so a
	// resource server can refuse tokens of a revoked grant (Issuer.Revoked).
	GrantID string `json:"gid,omitempty"`
}

func (c *accessClaims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }
func (c *accessClaims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt, nil }
func (c *accessClaims) GetNotBefore() (*jwt.NumericDate, error)      { return nil, nil }
func (c *accessClaims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *accessClaims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *accessClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings{c.Audience}, nil
}

func (i *Issuer) signAccessToken(ctx context.Context, s tokenSubject) (string, string, error) {
	k, err := i.currentKey(ctx)
	if err != nil {
		return "", "", err
	}
	jti, err := i.randomToken(16)
	if err != nil {
		return "", "", err
	}
	now := i.now()
	c := &accessClaims{
		Issuer:        i.URL(),
		Subject:       s.subject,
		Audience:      s.resource,
		ClientID:      s.client.ID,
		IssuedAt:      jwt.NewNumericDate(now),
		ExpiresAt:     jwt.NewNumericDate(i.expiry(s)),
		ID:            jti,
		Scope:         strings.Join(s.scopes, " "),
		Actor:         s.act,
		PrincipalType: s.principalType,
		GrantID:       s.grantID,
	}
	if s.user != nil {
		c.PrincipalType = principalUser
		if !s.authTime.IsZero() {
			c.AuthTime = jwt.NewNumericDate(s.authTime)
		}
	}
	t := jwt.NewWithClaims(k.method, c)
	t.Header["typ"] = "at+jwt"
	t.Header["kid"] = k.kid
	raw, err := t.SignedString(k.private)
	if err != nil {
		return "", "", fmt.Errorf("sign access token: %w", err)
	}
	return raw, jti, nil
}

// signIDToken signs an OpenID Connect ID token (Core 2, 3.1.3.6).
func (i *Issuer) signIDToken(ctx context.Context, s tokenSubject, accessToken string) (string, error) {
	k, err := i.currentKey(ctx)
	if err != nil {
		return "", err
	}
	now := i.now()
	c := jwt.MapClaims{
		"iss":     i.URL(),
		"sub":     s.subject,
		"aud":     s.client.ID,
		"azp":     s.client.ID,
		"iat":     now.Unix(),
		"exp":     now.Add(i.cfg.IDTokenTTL).Unix(),
		"at_hash": atHash(k.alg, accessToken),
	}
	if !s.authTime.IsZero() {
		c["auth_time"] = s.authTime.Unix()
	}
	if s.nonce != "" {
		c["nonce"] = s.nonce
	}
	t := jwt.NewWithClaims(k.method, c)
	t.Header["kid"] = k.kid
	raw, err := t.SignedString(k.private)
	if err != nil {
		return "", fmt.Errorf("sign id token: %w", err)
	}
	return raw, nil
}

// atHash is OIDC Core 3.1.3.6's at_hash: the left half of the hash the
// signing algorithm uses (SHA-512 for Ed25519).
func atHash(alg, token string) string {
	var h hash.Hash = sha256.New()
	if alg == "EdDSA" {
		h = sha512.New()
	}
	h.Write([]byte(token))
	sum := h.Sum(nil)
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

// verifyAccessToken verifies an access token this issuer signed, for any
// audience, and refuses revoked ones. Used by introspection, userinfo,
// revocation and actor tokens.
func (i *Issuer) verifyAccessToken(ctx context.Context, raw string) (*accessClaims, error) {
	c, err := i.parseAccessToken(ctx, raw)
	if err != nil {
		return nil, err
	}
	if i.Revoked(ctx, c.ID, c.GrantID) {
		return nil, errors.New("token revoked")
	}
	return c, nil
}

// parseAccessToken checks signature, typ, iss and expiry, not revocation.
func (i *Issuer) parseAccessToken(ctx context.Context, raw string) (*accessClaims, error) {
	var c accessClaims
	_, err := jwt.ParseWithClaims(raw, &c, func(t *jwt.Token) (any, error) {
		if typ, _ := t.Header["typ"].(string); !strings.EqualFold(typ, "at+jwt") && !strings.EqualFold(typ, "application/at+jwt") {
			return nil, errors.New("not an access token")
		}
		kid, _ := t.Header["kid"].(string)
		k, err := i.verificationKey(ctx, kid)
		if err != nil {
			return nil, err
		}
		if t.Method.Alg() != k.alg {
			return nil, errors.New("algorithm does not match the key")
		}
		return k.public, nil
	}, jwt.WithValidMethods(signingAlgs), jwt.WithIssuer(i.URL()), jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(), jwt.WithTimeFunc(i.now))
	if err != nil {
		return nil, fmt.Errorf("access token: %w", err)
	}
	if c.ID == "" || c.Subject == "" || c.ClientID == "" || c.Audience == "" {
		return nil, errors.New("access token: missing claims")
	}
	return &c, nil
}

// revokeUntil is how long a revocation issued now must last: until every
// access token issued so far has expired.
func (i *Issuer) revokeUntil() time.Time { return i.now().Add(i.cfg.AccessTokenTTL) }

// ---- request and response helpers for the back-channel endpoints ----

// readForm reads a back-channel POST body: form-encoded, at most
// maxFormBytes, no parameter repeated (RFC 6749 section 3.2). It fills
// r.PostForm and may be called again.
func readForm(r *http.Request) error {
	if r.PostForm != nil {
		return nil
	}
	if r.Method != http.MethodPost {
		return ErrInvalidRequest.WithDescription("POST required")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return ErrInvalidRequest.WithDescription("body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxFormBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return (&Error{Code: "invalid_request", Status: http.StatusRequestEntityTooLarge}).WithDescription("request body too large")
		}
		return ErrInvalidRequest.WithDescription("unreadable body").Wrap(err)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return ErrInvalidRequest.WithDescription("malformed form body")
	}
	for k, v := range vals {
		switch {
		case len(v) > 1 && k == "resource":
			// RFC 8707 allows several; this server issues one audience per token.
			return ErrInvalidTarget.WithDescription("only one resource per request is supported")
		case len(v) > 1:
			return ErrInvalidRequest.WithDescription(fmt.Sprintf("parameter %q is repeated", k))
		}
	}
	r.PostForm = vals
	return nil
}

func writeNoStoreJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeErr logs unexpected errors (never protocol ones, which may carry
// client input) and answers with the OAuth error.
func (i *Issuer) writeErr(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		i.log.Error("request failed", zap.Error(err))
	}
	writeError(w, err)
}

func methodNotAllowed(w http.ResponseWriter, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, &Error{Code: "invalid_request", Description: "method not allowed", Status: http.StatusMethodNotAllowed})
}
