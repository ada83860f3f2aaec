package issuer

import (
	"context"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// revokedInStore is Revoked read from the store, for the issuer's own
// endpoints (introspection, userinfo, actor tokens, revocation): they are
// what resource servers elsewhere rely on, so they see a revocation
// committed by any instance at once, not at the set's next catch-up, and
// a store they cannot read fails them anyway. A store error counts as
// revoked (fail closed).
func (i *Issuer) revokedInStore(ctx context.Context, jti, grantID string) bool {
	var revoked bool
	err := i.store.View(ctx, func(tx store.Tx) error {
		var err error
		revoked, err = revocationsIn(tx).revoked(jti, grantID)
		return err
	})
	if err != nil {
		i.log.Error("revocation check", zap.Error(err))
		return true
	}
	return revoked
}

// handleRevoke is RFC 7009 token revocation. A refresh token ends its whole
// grant; an access token is refused until it expires. Unknown tokens,
// tokens of other clients and already revoked ones all get 200, so the
// endpoint reveals nothing.
func (i *Issuer) handleRevoke(w http.ResponseWriter, r *http.Request) {
	req, ok := i.authenticatedPost(w, r)
	if !ok {
		return
	}
	c := req.client
	tok := req.form.Get("token")
	if tok == "" {
		i.writeErr(w, ErrInvalidRequest.WithDescription("token is required"))
		return
	}
	// token_type_hint only orders the lookups; both are cheap, so it is
	// not needed (RFC 7009 section 2.1 lets the server ignore it).
	ctx := r.Context()
	if err := i.spendAssertion(ctx, req); err != nil {
		i.writeErr(w, err)
		return
	}
	if err := i.revokeRefreshToken(ctx, c, tok); err != nil {
		i.writeErr(w, err)
		return
	}
	if err := i.revokeAccessToken(ctx, c, tok); err != nil {
		i.writeErr(w, err)
		return
	}
	i.securityEvent(ctx, zap.InfoLevel, "token revocation requested", zap.String("client_id", c.ID))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

func (i *Issuer) revokeRefreshToken(ctx context.Context, c *Client, tok string) error {
	return i.store.Update(ctx, func(tx store.Tx) error { return refreshIn(tx).revokeFamily(tok, c.ID, i.revokeUntil()) })
}

func (i *Issuer) revokeAccessToken(ctx context.Context, c *Client, tok string) error {
	claims, err := i.parseAccessToken(ctx, tok)
	if err != nil || claims.ClientID != c.ID {
		return nil // not ours, expired, or another client's: nothing to do
	}
	return i.store.Update(ctx, func(tx store.Tx) error {
		return revocationsIn(tx).revokeToken(claims.ID, claims.ExpiresAt.Time)
	})
}
