package issuer

import (
	"context"
	"errors"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// revokedInStore is Revoked read from the store, for the issuer's own
// endpoints (introspection, userinfo, actor tokens, revocation): they are
// what resource servers elsewhere rely on, so they see a revocation
// committed by any instance at once, not at the set's next catch-up, and
// a store they cannot read fails them anyway. A store error counts as
// revoked (fail closed). So does, with kid (not ""), a token of a key
// the store no longer holds: withdrawn at another instance (it leaked)
// since this one last read its keys, or while its reads of them fail,
// its copy still holding the key.
func (i *Issuer) revokedInStore(ctx context.Context, kid, jti, grantID string) (bool, error) {
	var revoked bool
	err := i.store.View(ctx, func(tx store.Tx) error {
		var err error
		if revoked, err = revocationsIn(tx).revoked(jti, grantID); err != nil || revoked || kid == "" {
			return err
		}
		published, err := keySetIn(tx, i.keys.bucket).t.has(kid)
		revoked = !published
		return err
	})
	if err != nil {
		i.log.Error("revocation check", zap.Error(err))
		return true, err
	}
	return revoked, nil
}

// handleRevoke is RFC 7009 token revocation. A refresh token ends its whole
// grant; an access token is refused until it expires. Unknown tokens,
// tokens of other clients and already revoked ones all get 200, so the
// endpoint reveals nothing.
//
// A public client has no credentials: what proves it is the DPoP key its
// tokens are bound to. A token bound to a key (a refresh token issued
// under its family's binding, a cnf-bound access token) is revoked for a
// public client only with a DPoP proof of that key for this endpoint
// (RFC 9449 section 4), else the answer is 200 and nothing is revoked:
// such a request is treated as one with an invalid token (RFC 7009
// section 2.2), so
// whoever holds a token that is useless to them without the key can
// neither end the user's grant with it nor learn from the answer whether
// it is live. The refresh token whose refresh bound an unbound family
// was issued before the binding: it ends the family without the key, as
// its reuse at the token endpoint does, so that a client that uses no
// DPoP still ends a family a thief bound to a key of their own. A proof
// that is sent is checked, and refused as at the token endpoint
// (invalid_dpop_proof, use_dpop_nonce).
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
	proof, err := i.dpopProof(w, r, pathRevoke, c)
	if err != nil {
		i.writeErr(w, err)
		return
	}
	// token_type_hint only orders the lookups; both are cheap, so it is
	// not needed (RFC 7009 section 2.1 lets the server ignore it).
	ctx := r.Context()
	if err := i.spendAssertion(ctx, req); err != nil {
		i.writeErr(w, err)
		return
	}
	if err := i.revokeRefreshToken(ctx, c, tok, proof); err != nil {
		i.writeErr(w, err)
		return
	}
	if err := i.revokeAccessToken(ctx, c, tok, proof); err != nil {
		i.writeErr(w, err)
		return
	}
	i.securityEvent(ctx, zap.InfoLevel, "token revocation requested", zap.String("client_id", c.ID))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// revokeRefreshToken ends the grant of c's refresh token tok; a family
// bound to a DPoP key only with a proof of that key, which is spent then
// (the transaction that revokes checks the binding again: a family bound
// meanwhile is left alone).
func (i *Issuer) revokeRefreshToken(ctx context.Context, c *Client, tok string, proof *dpop.Proof) error {
	var bound string
	err := i.store.View(ctx, func(tx store.Tx) (err error) {
		bound, err = refreshIn(tx).familyKey(tok, c.ID)
		return err
	})
	if err != nil {
		return err
	}
	switch ok, err := mayRevoke(ctx, bound, proof); {
	case err != nil:
		return err
	case !ok:
		return nil
	}
	return i.store.Update(ctx, func(tx store.Tx) error { return refreshIn(tx).revokeFamily(tok, c.ID, jktOf(proof), i.revokeUntil()) })
}

// revokeAccessToken refuses c's access token tok until it expires, and
// the tokens exchanged from it (revokeTokenTree): one
// c holds (its own, or, for an agent, one it acts in: a delegate's token
// carries the subject's client_id); a public client's token bound to a
// DPoP key only with a proof of that key.
// A token up to accesstoken.Leeway past its exp is revoked too: gateways
// still take it.
func (i *Issuer) revokeAccessToken(ctx context.Context, c *Client, tok string, proof *dpop.Proof) error {
	claims, err := i.parseAccessToken(ctx, tok, accesstoken.Leeway)
	if missing := (notInCopy{}); errors.As(err, &missing) {
		// Its key is not in this instance's copy, which is re-read for an
		// unknown kid at most every keyMinReload: another instance's key
		// made since (a withdrawal's new key signs at once), or the copy
		// could not be read. Read the keys now, as the revocation
		// endpoint reads the store anyway: answered 200, the revocation
		// must hold. A store that cannot be read answers 503, nothing
		// revoked.
		if lerr := i.keys.load(ctx); lerr != nil {
			return lerr
		}
		claims, err = i.parseAccessToken(ctx, tok, accesstoken.Leeway)
	}
	if err != nil || !c.holds(claims.ClientID, claims.PrincipalType, claims.Subject, claims.Actor) {
		return nil // not ours, expired, or another party's: nothing to do
	}
	if c.Public() {
		switch ok, err := mayRevoke(ctx, claims.BoundKey(), proof); {
		case err != nil:
			return err
		case !ok:
			return nil
		}
	}
	// With every token exchanged from it: none outlives it.
	return revokeTokenTree(ctx, i.store, claims.ID, claims.ExpiresAt.Time)
}

// mayRevoke reports whether a request with proof (nil for none) may revoke
// a token bound to the DPoP key bound ("" for a bearer token or an unbound
// family), spending the proof when it is what allows it.
func mayRevoke(ctx context.Context, bound string, proof *dpop.Proof) (bool, error) {
	switch {
	case bound == "":
		return true, nil
	case jktOf(proof) != bound:
		return false, nil
	}
	return true, spendProof(ctx, proof)
}
