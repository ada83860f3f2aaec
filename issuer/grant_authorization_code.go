package issuer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"slices"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// authorizationCode redeems a code (RFC 6749 4.1.3, RFC 7636 4.6), once:
// a replay revokes what the first redemption issued.
type authorizationCode struct{ iss *Issuer }

func (authorizationCode) name() string { return grantAuthorizationCode }

func (g authorizationCode) grant(ctx context.Context, req *clientRequest) (*issuance, error) {
	i, f, c := g.iss, req.form, req.client
	code := f.Get("code")
	if code == "" {
		return nil, ErrInvalidRequest.WithDescription("code is required")
	}
	// Read first: lookups of the user and agent must not run inside the
	// write transaction. The write below re-checks that nothing changed.
	var ac *authCode
	var current bool
	err := i.store.View(ctx, func(tx store.Tx) error {
		var err error
		if ac, err = codesIn(tx).get(code); err != nil {
			return err
		}
		current, err = i.creds.current(tx, principalUser, ac.Subject, ac.Credential)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
	}
	if err != nil {
		return nil, err
	}
	if ac.Redeemed {
		// Only the code's own client, with the code's verifier, revokes
		// the grant by using the code again: anyone else who learned a
		// used code (a log, a Referer, a history) could otherwise end the
		// user's grant with it, under a client of their own or a public
		// client's id, and nothing is written for them.
		if ac.ClientID != c.ID || checkPKCE(ac.CodeChallenge, ac.CodeChallengeMethod, f.Get("code_verifier")) != nil {
			return nil, ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
		}
		// A code bound to a key (dpop_jkt), as a bound refresh token:
		// only that key's holder, with a proof not used before, revokes
		// (the client's request, captured and sent again, is no reuse).
		if ac.DPoPJKT != "" && req.jkt != ac.DPoPJKT {
			return nil, codeKeyNeeded()
		}
		if err := i.spendReused(ctx, req); err != nil {
			return nil, err
		}
		return nil, g.replayed(ctx, code, ac)
	}
	now := i.now()
	switch {
	case !now.Before(ac.ExpiresAt):
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
	case !i.issued(ac.Issuer):
		// Issued at another URL of the store: the directory this
		// issuer's reloads compare against never saw it.
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
	case !current:
		// Signed in with a password the configuration has replaced, at
		// an instance that had not reloaded yet (credentialTags).
		return nil, errPrincipalRevoked
	case ac.ClientID != c.ID:
		return nil, ErrInvalidGrant.WithDescription("authorization code was issued to another client")
	case f.Get("redirect_uri") != ac.RedirectURI:
		return nil, ErrInvalidGrant.WithDescription("redirect_uri does not match the authorization request")
	case !sentToRegistered(c, ac):
		return nil, errNotSentToRegistered
	}
	if ac.DPoPJKT != "" && req.jkt != ac.DPoPJKT {
		return nil, codeKeyNeeded()
	}
	if err := checkPKCE(ac.CodeChallenge, ac.CodeChallengeMethod, f.Get("code_verifier")); err != nil {
		return nil, err
	}
	if res := f.Get("resource"); res != "" && !sameResource(res, ac.Resource) {
		return nil, ErrInvalidTarget.WithDescription("resource differs from the authorization request")
	}
	u, err := i.dir.lookupUser(ctx, ac.Subject)
	if err != nil {
		return nil, ErrInvalidGrant.WithDescription("user is unknown or disabled").Wrap(err)
	}
	agent, actorTok, err := g.checkActorToken(ctx, f, ac.Actor, c.ID, ac.Resource, req.jkt)
	if err != nil {
		return nil, err
	}
	var signedBy []signedToken
	scopes := ac.Scopes
	if len(scopes) > 0 {
		// The user's groups may have lost a scope since the code was
		// issued (a reload, which could not revoke this grant): no more
		// than they allow now, as a refresh re-applies them.
		if _, scopes, err = i.policy.grantScopes(ctx, c, u, ac.Resource, scopes); err != nil {
			return nil, err
		}
	}
	if agent != nil {
		signedBy = []signedToken{{headerKID(f.Get("actor_token")), ErrInvalidGrant.WithDescription("actor_token is not a valid token of the requested actor")}}
		// The user delegated no more than the agent may ever hold. None
		// of it, at an instance whose configuration the agent's new
		// scopes have not reached yet, is refused as the refresh is:
		// never a token with an empty scope.
		held := agent.limitScopes(scopes)
		if len(held) == 0 && len(scopes) > 0 {
			return nil, ErrInvalidScope.WithDescription("the actor may hold none of the granted scopes")
		}
		scopes = held
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
	gr := &grant{
		ID: gid, Subject: ac.Subject, ClientID: c.ID, Actor: ac.Actor, Resource: ac.Resource,
		Scopes: scopes, Issuer: i.URL(), AuthTime: ac.AuthTime, CreatedAt: now, LastUsed: now,
		ExpiresAt: now.Add(i.cfg.AccessTokenTTL), Credential: ac.Credential, ClientCredential: i.creds.client(c),
		ClientAuthenticated: !c.Public(),
	}
	if offline {
		gr.ExpiresAt = now.Add(i.cfg.RefreshTokenTTL)
	}
	if c.Public() {
		// A confidential client's refresh token is bound by its
		// authentication already (RFC 9449 section 5).
		gr.DPoPJKT = req.jkt
	}
	used := ErrInvalidGrant.WithDescription("invalid, expired or used authorization code")
	s := tokenSubject{
		client: c, user: u, subject: ac.Subject, resource: ac.Resource, scopes: scopes,
		act: actorOf(ac.Actor), grantID: gid, authTime: ac.AuthTime, nonce: ac.Nonce,
		notAfter: gr.ExpiresAt, // a refresh_token_ttl below access_token_ttl
	}
	return &issuance{
		grantType: grantAuthorizationCode,
		subject:   s,
		// The user rests on the login the code came from: a password
		// change or removal after it refuses the code, whenever redeemed.
		// The client and actor rest on the code's issue.
		// A redirect URI removed since refuses it too, and so does the
		// user's revoking the connection on the connected apps page.
		bases: append(s.principals(ac.IssuedAt, signedIn(ac.SignedInAt, ac.AuthTime)),
			principalBasis{redirectsPrincipal(c.ID), ac.IssuedAt},
			principalBasis{connectionPrincipal(ac.Subject, c.ID, ac.Resource, ac.Actor), ac.IssuedAt}),
		refresh: offline,
		record: func(tx store.Tx, t *minted) error {
			// The password the login checked was changed since: at an
			// instance whose clock is behind the one that signed in,
			// the change's stamp may not be after the login (bases).
			switch err := passwordCurrent(tx, ac.Subject, ac.Password); {
			case errors.Is(err, errSignedOut):
				return refuse(errPrincipalRevoked)
			case err != nil:
				return err
			}
			// The stored user was disabled or removed since it was read
			// above: the stamp may not be after the login either.
			if u.Source != sourceConfig {
				switch err := storedUserCurrent(tx, ac.Subject); {
				case errors.Is(err, errSignedOut):
					return refuse(errPrincipalRevoked)
				case err != nil:
					return err
				}
			}
			// A redirect URI taken from the client's registration since
			// it was read: the update's stamp may not be after the
			// code's issue either.
			if to := cmp.Or(ac.SentTo, ac.RedirectURI); to != "" {
				switch err := stillRegistered(tx, c, to); {
				case errors.Is(err, errClientChanged):
					return refuse(errNotSentToRegistered)
				case err != nil:
					return err
				}
			}
			// The agent's own token was revoked since it was verified
			// above (the agent disabled, removed or re-keyed): the
			// change's stamp may not be after the code's issue either.
			if actorTok != nil {
				switch revoked, err := revocationsIn(tx).revoked(actorTok.ID, actorTok.GrantID); {
				case err != nil:
					return err
				case revoked:
					return refuse(ErrInvalidGrant.WithDescription("actor_token is not a valid token of the requested actor"))
				}
			}
			// The user revoked the connection after the code's issue,
			// which may have begun after the revocation's stamp.
			if ac.Connection != nil {
				at, err := epochsIn(tx).at(connectionPrincipal(ac.Subject, c.ID, ac.Resource, ac.Actor))
				if err != nil {
					return err
				}
				if !at.IsZero() && !at.Equal(*ac.Connection) {
					return refuse(errPrincipalRevoked)
				}
			}
			// Lost a race with another redemption: revoke what it issued.
			switch replayed, err := codesIn(tx).redeem(code, gid, t.jti, gr.ExpiresAt, i.revokeUntil()); {
			case err != nil:
				return err
			case replayed:
				return refuse(used)
			}
			grants := grantsIn(tx)
			if offline {
				switch err := grants.admit(gr, i.revokeUntil()); {
				case errors.Is(err, errTooManyGrants):
					return refuse(ErrInvalidGrant.WithDescription(fmt.Sprintf(
						"the user holds %d grants with refresh tokens, the most allowed: revoke some at %s", maxUserGrants, i.endpoint(pathApps))))
				case err != nil:
					return err
				}
			}
			gr.Refresh = ""
			if t.refreshToken != "" {
				gr.Refresh, _, _ = refreshKey(t.refreshToken)
			}
			if err := grants.create(gr); err != nil {
				return err
			}
			if actorTok != nil {
				// The agent's own token proved the delegation: the agent
				// revoking it (leaked) ends the grant, as it ends the
				// tokens exchanged with it as actor_token.
				if err := derivedIn(tx).addGrant(actorTok.ID, gid, actorTok.ExpiresAt.Time); err != nil {
					return err
				}
			}
			if t.refreshToken == "" {
				return nil
			}
			return refreshIn(tx).issue(t.refreshToken, gr, c.ID)
		},
		recording: "redeem code",
		gone:      used,
		signedBy:  signedBy,
	}, nil
}

// codeKeyNeeded refuses a code bound to a DPoP key (dpop_jkt) without a
// proof of that key.
func codeKeyNeeded() error {
	return ErrInvalidDPoPProof.WithDescription("the authorization request named a DPoP key (dpop_jkt): the request needs a DPoP proof signed by it")
}

// replayed handles a second use of a code: RFC 6749 4.1.2 says deny
// and revoke what the first use issued.
// The event names the client, user and grant, so the operator knows
// whose grant ended and which client's code leaked.
func (g authorizationCode) replayed(ctx context.Context, code string, ac *authCode) error {
	i := g.iss
	err := i.store.Update(ctx, func(tx store.Tx) error { return codesIn(tx).replayed(code, i.revokeUntil()) })
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("revoke replayed code: %w", err)
	}
	i.securityEvent(ctx, zap.WarnLevel, "authorization code reused; its grant is revoked",
		zap.String("client_id", ac.ClientID), zap.String("sub", ac.Subject), zap.String("grant", ac.GrantID))
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
// client; failures are invalid_grant. The token must be for the code's
// resource: a resource the agent called holds its token, and must not
// redeem a code for another resource in the agent's name, as in a token
// exchange. actor_token_type is optional here
// (clients send it or not); when sent it must name an access token or a
// JWT, else invalid_request. A code without an actor refuses actor_token
// (invalid_request) rather than ignore a delegation the user never saw.
// It returns the agent and the actor token's claims, whose revocation
// the redemption's transaction reads again; nil for a code without an
// actor.
func (g authorizationCode) checkActorToken(ctx context.Context, f url.Values, actor, clientID, resource, jkt string) (*Agent, *accesstoken.Claims, error) {
	i := g.iss
	raw, typ := f.Get("actor_token"), f.Get("actor_token_type")
	if actor == "" {
		if raw != "" || typ != "" {
			return nil, nil, ErrInvalidRequest.WithDescription("actor_token is only accepted for a requested_actor authorization")
		}
		return nil, nil, nil
	}
	if raw == "" {
		return nil, nil, ErrInvalidGrant.WithDescription("actor_token is required: the authorization names an actor")
	}
	if typ != "" && typ != tokenTypeAccessToken && typ != tokenTypeJWT {
		return nil, nil, ErrInvalidRequest.WithDescription("unsupported actor_token_type")
	}
	claims, err := i.verifyAccessTokenReading(ctx, raw)
	if storeBusy(err) {
		return nil, nil, err
	}
	if err != nil || !ownAgentToken(claims) || claims.Subject != actor || !sameResource(claims.Audience[0], resource) {
		return nil, nil, ErrInvalidGrant.WithDescription("actor_token is not a valid token of the requested actor")
	}
	if err := possessed(claims.BoundKey(), jkt, "actor_token"); err != nil {
		return nil, nil, err
	}
	// An agent's token a lagging instance issued under its replaced
	// secret, as in a token exchange (review s16c F2).
	if err := i.notReplaced(ctx, claims.GrantID, ErrInvalidGrant.WithDescription("actor_token is not a valid token of the requested actor")); err != nil {
		return nil, nil, err
	}
	agent, err := i.dir.agentFor(ctx, actor, clientID)
	if err != nil {
		return nil, nil, err
	}
	return agent, claims, nil
}

// ownAgentToken reports whether c is an agent's token for itself: not a
// user's, not delegated.
func ownAgentToken(c *accesstoken.Claims) bool {
	return c.PrincipalType == principalAgent && c.Subject == c.ClientID && c.Actor == nil
}

// errNotSentToRegistered: the code went to a redirect URI its client no
// longer registers.
var errNotSentToRegistered = ErrInvalidGrant.WithDescription("the code was sent to a redirect URI the client no longer registers")

// sentToRegistered reports whether the redirect URI code ac was sent to is
// still one of client c's: a configuration reload, or a client metadata
// document, may have dropped it since (review s17-as F4). The
// management API's change stamps the client too (redirectsPrincipal),
// which also refuses codes still being issued, and the redemption reads
// a stored client's redirect URIs again as it records (stillRegistered).
func sentToRegistered(c *Client, ac *authCode) bool {
	to := cmp.Or(ac.SentTo, ac.RedirectURI)
	return to == "" || matchRedirectURI(c.RedirectURIs, to)
}
