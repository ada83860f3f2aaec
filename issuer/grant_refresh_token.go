package issuer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// refreshToken rotates a refresh token (OAuth 2.1 4.3, 6.1); presenting
// a rotated one again revokes its family.
type refreshTokenGrant struct{ iss *Issuer }

func (refreshTokenGrant) name() string { return grantRefreshToken }

func (rg refreshTokenGrant) grant(ctx context.Context, req *clientRequest) (*issuance, error) {
	i, f, c := rg.iss, req.form, req.client
	rt := f.Get("refresh_token")
	if rt == "" {
		return nil, ErrInvalidRequest.WithDescription("refresh_token is required")
	}
	var rec *refreshToken
	var g *grant
	var current, marked bool
	err := i.store.View(ctx, func(tx store.Tx) error {
		var err error
		if rec, g, err = refreshIn(tx).family(rt); err != nil {
			return err
		}
		if current, err = i.creds.grantCurrent(tx, g); err != nil || g.Actor == "" || g.Revoked {
			return err
		}
		marked, err = revocationsIn(tx).revoked("", g.ID)
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
	// Without its family's key a token issued under the binding proves
	// nothing of the client, rotated or not: refused as the current one
	// is below, nothing revoked (RFC 9449 section 5), so a leaked old
	// token cannot end the user's grant.
	keyNeeded := ErrInvalidDPoPProof.WithDescription("the refresh token is DPoP-bound: the request needs a DPoP proof signed by its key")
	if rec.Rotated {
		if rec.keyless(g, req.jkt) {
			return nil, keyNeeded
		}
		// The client's request, captured and sent again with its proof
		// or client assertion, is no reuse: refused as a replay,
		// revoking nothing.
		if err := i.spendReused(ctx, req); err != nil {
			return nil, err
		}
		return nil, rg.reused(ctx, g)
	}
	if g.DPoPJKT != "" && req.jkt != g.DPoPJKT {
		// Before any other check, so that without the key a stolen
		// token does not even tell whether its grant still lives.
		return nil, keyNeeded
	}
	now := i.now()
	// A family is this issuer URL's: one an issuer at another URL of the
	// same store created (or this one before its URL changed) is not, and
	// the revocations of a reload compare against its own URL's
	// directory only (ApplyConfigChanges). Families from before grants
	// recorded their issuer are taken as this one's. In its last second a
	// family would give an access token already expired (exp is whole
	// seconds, capped at the grant's end): it counts as ended.
	if g.Revoked || g.ExpiresAt.Sub(now) < time.Second || !now.Before(rec.ExpiresAt) || !i.issued(g.Issuer) {
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
	}
	if g.ClientAuthenticated && c.Public() {
		// Issued to the client as a confidential one, and so bound to
		// its credentials (RFC 9449 section 5), now presented without
		// them: the client id's registration says none since (a client
		// metadata document, which its publisher may change at any
		// time). A copy of the token taken while it was bound to the
		// client's key must not become a bearer token then; the grant
		// ends, as a registration changed to another kind of
		// authentication ends the client's grants: once (an ended
		// grant is refused above, writing nothing).
		return nil, rg.unbound(ctx, g)
	}
	if marked {
		// A delegation whose tokens are refused by its grant's marker but
		// which is not revoked: an instance of an earlier release
		// (1370cef) revoked the agent token it was redeemed with, walking
		// the derived records, and took the grant's record there
		// (grantChild) for a token's, writing its marker alone. Ended
		// here as this release ends it, refresh token and all, rather
		// than refreshing into tokens refused until the agent token's
		// end and taken again after it.
		if err := i.store.Update(ctx, func(tx store.Tx) error { return grantsIn(tx).revoke(g.ID, i.revokeUntil()) }); err != nil {
			return nil, fmt.Errorf("revoke the delegation of a revoked actor token: %w", err)
		}
		return nil, ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
	}
	if !current {
		return nil, i.refuseReplaced(ctx, g.ID, ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token"))
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
	u, err := i.dir.lookupUser(ctx, g.Subject)
	if err != nil {
		return nil, ErrInvalidGrant.WithDescription("user is unknown or disabled").Wrap(err)
	}
	// A self-registered client's assertion is stored for up to an hour,
	// and a refresh token may be used as often as its holder likes: such
	// refreshes are bounded per user, as authorization requests are, but
	// apart from them: an app the user connected, anyone's to make,
	// refreshing in a loop must not keep the user from authorizing others.
	if req.assertion != nil && c.selfRegistered() {
		if err := i.userRefreshes.spend(ctx, u.Username, "too many refreshes for this account; retry later"); err != nil {
			return nil, err
		}
	}
	// Re-apply today's policy: a user who lost a group loses its scopes.
	_, scopes, err := i.policy.grantScopes(ctx, c, u, g.Resource, requested)
	if err != nil {
		return nil, err
	}
	if g.Actor != "" {
		// The delegation was proven at redemption; it lasts while the agent
		// does, within what the agent may hold today.
		a, err := i.dir.agentFor(ctx, g.Actor, c.ID)
		if err != nil {
			return nil, err
		}
		if scopes = a.limitScopes(scopes); len(scopes) == 0 {
			return nil, ErrInvalidScope.WithDescription("the actor may hold none of the granted scopes")
		}
	}
	// A public client's family is bound to the key of its first request
	// with a proof, the code's or a refresh's: from then on a stolen
	// refresh token is useless without the key, and cannot end the
	// grant either (above, and at /revoke). A confidential client's
	// refresh tokens are bound by its authentication (RFC 9449 section 5);
	// each of its refreshes may use another key.
	bind := ""
	if c.Public() {
		bind = req.jkt
	}
	invalid := ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
	// The grant now rests on the client credential of this refresh: one
	// a lagging instance still takes ends with that instance's reload
	// (credentialTags).
	clientTag := i.creds.client(c)
	// No access token outlives its grant: the grant's record ends then,
	// and revoking what a user, client or agent holds finds grants by
	// their records (review s13-agents F1).
	s := tokenSubject{
		client: c, user: u, subject: g.Subject, resource: g.Resource, scopes: scopes,
		act: actorOf(g.Actor), grantID: g.ID, authTime: g.AuthTime, notAfter: g.ExpiresAt,
	}
	// The grant rests on its principals as they were when it was made: a
	// revocation of one since ends it even where the revocation's search
	// missed the grant (one an earlier version's instance wrote, which
	// the index does not list: record_grant_index.go). Made is read with
	// the leeway instances' clocks are allowed (the code may have been
	// checked against a stamp on a clock ahead of the one that wrote the
	// grant); grants of earlier versions without a creation time rest on
	// the request's.
	basis := req.basis
	if made := g.CreatedAt.Add(accesstoken.Leeway); !g.CreatedAt.IsZero() && made.Before(basis) {
		basis = made
	}
	return &issuance{
		grantType: grantRefreshToken,
		subject:   s,
		bases:     s.principals(basis, basis),
		refresh:   true,
		family:    refreshFamily(rt),
		record: func(tx store.Tx, t *minted) error {
			switch refused, err := refreshIn(tx).rotate(rt, t.refreshToken, c.ID, bind, now, i.revokeUntil()); {
			case err != nil:
				return err
			case refused:
				return refuse(invalid)
			case clientTag != g.ClientCredential || !c.Public() && !g.ClientAuthenticated:
				return grantsIn(tx).setClientCredential(g.ID, clientTag, !c.Public())
			}
			return nil
		},
		recording: "rotate refresh token",
		gone:      invalid,
	}, nil
}

// unbound revokes grant g, whose refresh token its client, once
// confidential, presented without authenticating (see the grant's
// ClientAuthenticated). The event names the grant, its client and its
// subject.
func (rg refreshTokenGrant) unbound(ctx context.Context, g *grant) error {
	i := rg.iss
	err := i.store.Update(ctx, func(tx store.Tx) error { return grantsIn(tx).revoke(g.ID, i.revokeUntil()) })
	if err != nil {
		return fmt.Errorf("revoke grant of a refresh token presented without client authentication: %w", err)
	}
	i.securityEvent(ctx, zap.WarnLevel, "refresh token of a confidential client presented without client authentication; its grant is revoked",
		zap.String("client_id", g.ClientID), zap.String("sub", g.Subject), zap.String("grant", g.ID))
	return ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
}

// reused revokes the family of a rotated refresh token that was
// presented again: either the client or an attacker holds a stolen copy.
// The event names the grant, its client and its subject.
func (rg refreshTokenGrant) reused(ctx context.Context, g *grant) error {
	i := rg.iss
	err := i.store.Update(ctx, func(tx store.Tx) error { return grantsIn(tx).revoke(g.ID, i.revokeUntil()) })
	if err != nil {
		return fmt.Errorf("revoke reused refresh token family: %w", err)
	}
	i.securityEvent(ctx, zap.WarnLevel, "rotated refresh token reused; its grant is revoked",
		zap.String("client_id", g.ClientID), zap.String("sub", g.Subject), zap.String("grant", g.ID))
	return ErrInvalidGrant.WithDescription("invalid, expired or revoked refresh token")
}
