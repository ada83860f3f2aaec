package issuer

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// introspection is the RFC 7662 section 2.2 answer.
type introspection struct {
	Active    bool               `json:"active"`
	Scope     string             `json:"scope,omitempty"`
	ClientID  string             `json:"client_id,omitempty"`
	TokenType string             `json:"token_type,omitempty"`
	Exp       int64              `json:"exp,omitempty"`
	Iat       int64              `json:"iat,omitempty"`
	Sub       string             `json:"sub,omitempty"`
	Aud       string             `json:"aud,omitempty"`
	Iss       string             `json:"iss,omitempty"`
	Jti       string             `json:"jti,omitempty"`
	Act       *accesstoken.Actor `json:"act,omitempty"` // the full chain, newest actor outermost
	// PrincipalType is "user", "agent" or "client".
	PrincipalType string `json:"principal_type,omitempty"`
	// Cnf is a DPoP-bound token's key (RFC 9449 section 6.2).
	Cnf *accesstoken.Confirmation `json:"cnf,omitempty"`
	// refresh marks a refresh token's answer (TokenType "refresh_token").
	refresh bool
}

// handleIntrospect is RFC 7662 token introspection. Only authenticated
// (confidential) clients may call it, and a token is active only to a
// caller entitled to see it (mayIntrospect); revoked, expired, unknown
// and foreign tokens alike are {"active":false} (RFC 7662 section 2.2),
// so a caller learns nothing of tokens that are not its business.
func (i *Issuer) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	req, ok := i.authenticatedPost(w, r)
	if !ok {
		return
	}
	c := req.client
	if c.Public() {
		i.writeErr(w, ErrInvalidClient.WithDescription("introspection requires client authentication"))
		return
	}
	tok := req.form.Get("token")
	if tok == "" {
		i.writeErr(w, ErrInvalidRequest.WithDescription("token is required"))
		return
	}
	ctx := r.Context()
	if err := i.spendAssertion(ctx, req); err != nil {
		i.writeErr(w, err)
		return
	}
	resp := &introspection{}
	if strings.Count(tok, ".") == 2 {
		// A token of a key this instance has not read yet is not
		// "inactive": a resource server keeps that (a gateway, 10 s) and
		// has the client throw a good token away
		// (TestIntrospectTokenOfKeyNotYetRead).
		cl, err := i.verifyAccessTokenReading(ctx, tok)
		switch {
		case storeBusy(err):
			// Not "inactive": a resource server would refuse the token,
			// and its client drop it, where a retry may succeed.
			writeError(w, err)
			return
		case err == nil:
			resp = &introspection{
				Active: true, Scope: cl.Scope, ClientID: cl.ClientID, TokenType: "Bearer",
				Exp: cl.ExpiresAt.Unix(), Iat: cl.IssuedAt.Unix(), Sub: cl.Subject, Aud: cl.Audience[0],
				Iss: cl.Issuer, Jti: cl.ID, Act: cl.Actor, PrincipalType: cl.PrincipalType,
				Cnf: cl.Confirmation,
			}
			if cl.BoundKey() != "" {
				resp.TokenType = "DPoP"
			}
		}
	} else {
		var err error
		if resp, err = i.introspectRefresh(ctx, tok); err != nil {
			i.writeErr(w, err)
			return
		}
	}
	if resp.Active && !c.mayIntrospect(resp) {
		resp = &introspection{}
	}
	writeNoStoreJSON(w, http.StatusOK, resp)
}

// mayIntrospect reports whether c may see that token t is active: the
// client it was issued to; an agent acting in it (anywhere in its act
// chain) or, acting alone, its subject; or a client the operator marked
// as a resource server (Introspect), which learns little it could not
// read from a JWT but whether the token is revoked. A self-registered
// client (DCR, CIMD), which anyone can create, is never a resource
// server. Agents and clients share one id namespace, so an id names one
// party.
//
// A refresh token is active only to the client it was issued to: a
// resource server has no use for one, and an answer it could read as an
// access token's would let the refresh token pass for one, without the
// DPoP key or client secret that guards it (review s13-remote F1).
func (c *Client) mayIntrospect(t *introspection) bool {
	switch {
	case t.refresh:
		return t.ClientID == c.ID
	case c.Introspect && !c.selfRegistered():
		return true
	}
	return c.holds(t.ClientID, t.PrincipalType, t.Sub, t.Act)
}

// holds reports whether c is a party an access token (client_id,
// principal_type, sub, act) was issued to: its client; an agent acting
// in it (anywhere in its act chain), since a token exchange issues the
// delegate's token under the subject's client_id; or, for an agent's own
// token, that agent.
func (c *Client) holds(clientID, principalType, sub string, act *accesstoken.Actor) bool {
	switch {
	case clientID == c.ID:
		return true
	case c.agent == nil:
		return false
	case principalType == principalAgent && sub == c.ID:
		return true
	}
	return slices.Contains(act.Chain(), c.ID)
}

// introspectRefresh describes a live refresh token, token_type
// "refresh_token" (which no resource server takes for an access token's);
// mayIntrospect shows it to its client only (so never a DPoP-bound one:
// only public clients' families are bound, and they cannot introspect). A token of a grant another issuer
// URL created, or issued under a credential the configuration has
// replaced (credentialTags), or of a user the refresh grant cannot find
// now (disabled, or an identity provider's user past recheck), is not
// active here, as the refresh grant refuses it.
func (i *Issuer) introspectRefresh(ctx context.Context, tok string) (*introspection, error) {
	var rec *refreshToken
	var g *grant
	var current bool
	err := i.store.View(ctx, func(tx store.Tx) error {
		var err error
		if rec, g, err = refreshIn(tx).family(tok); err != nil {
			return err
		}
		current, err = i.creds.grantCurrent(tx, g)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return &introspection{}, nil
	}
	if err != nil {
		return nil, err
	}
	now := i.now()
	if rec.Rotated || g.Revoked || !current || !now.Before(rec.ExpiresAt) || !now.Before(g.ExpiresAt) || !i.issued(g.Issuer) {
		return &introspection{}, nil
	}
	// The refresh grant refuses a user it cannot find now: disabled, or
	// an identity provider's user to sign in there again (recheck).
	switch _, err := i.dir.lookupUser(ctx, g.Subject); {
	case errors.Is(err, store.ErrNotFound):
		return &introspection{}, nil
	case err != nil:
		return nil, err
	}
	t := &introspection{
		Active: true, Scope: strings.Join(g.Scopes, " "), ClientID: rec.ClientID, TokenType: "refresh_token",
		Exp: rec.ExpiresAt.Unix(), Iat: g.CreatedAt.Unix(), Sub: g.Subject, Aud: g.Resource, Iss: i.URL(),
		Act: actorOf(g.Actor), PrincipalType: principalUser, refresh: true,
	}
	return t, nil
}
