package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// tokenExchange is RFC 8693 token exchange of this issuer's own access
// tokens. The subject token's sub, principal and grant carry over (so
// revoking the user's grant ends every token derived from it), and so
// does its client_id: the application the user connected stays the
// client, act says who acts.
//
// With actor_token (an agent's own token), the agent becomes the newest
// actor: act = {"sub": agent, "act": <subject's act>}. The chain's length
// is bounded by the agent's MaxDepth (and MaxDelegationDepth), no agent
// appears in it twice, and the agent must allow the subject's client. A requester other than the agent
// itself must bring the agent's token for the resource the new token is
// for. This issuer never issues may_act,
// so none is read: who may act is the agent's own policy. Without actor_token the exchange keeps the act chain
// and may only narrow scopes; either way every actor in the chain is held
// to its policy of today.
//
// A user's token stays on the resource the user consented to: moving it to
// another audience would hand the client access the consent page never
// showed (invalid_target). Agent and client tokens may move to another
// resource their own policy allows.
//
// Who may exchange: the subject token's client, its newest actor, or the
// new actor itself (an agent authenticated with its own credentials).
//
// Scope: requested ⊆ subject's scopes ∩ the actor's Scopes ∩ today's
// policy for the target (client and user limits), else invalid_scope;
// no scope parameter means all of that intersection. The target is
// resource (or audience), default the subject's aud; an unknown one is
// invalid_target. No refresh token is issued, and the new token expires
// no later than the subject token, and is revoked with it (derivedRecords).
//
// DPoP (RFC 9449): the new token is bound to the request's proof key, as
// every grant's; a DPoP-bound subject or actor token is accepted only with
// a proof signed by its own key, so an exchange never moves a binding to
// another key nor drops it.
//
// As RFC 8693 section 2.2.2 says, an invalid or unacceptable subject or
// actor token (expired, revoked, depth exceeded,
// disabled agent) is invalid_request.
type tokenExchange struct{ iss *Issuer }

func (tokenExchange) name() string { return grantTokenExchange }

func (x tokenExchange) grant(ctx context.Context, req *clientRequest) (*issuance, error) {
	i, f, c := x.iss, req.form, req.client
	invalid := func(d string) *Error { return ErrInvalidRequest.WithDescription(d) }
	actRaw, actType := f.Get("actor_token"), f.Get("actor_token_type")
	switch {
	case f.Get("subject_token") == "" || f.Get("subject_token_type") == "":
		return nil, invalid("subject_token and subject_token_type are required")
	case !accessTokenType(f.Get("subject_token_type")):
		return nil, invalid("unsupported subject_token_type")
	case actRaw == "" && actType != "":
		return nil, invalid("actor_token_type without actor_token")
	case actRaw != "" && !accessTokenType(actType):
		return nil, invalid("actor_token_type must be " + tokenTypeAccessToken + " or " + tokenTypeJWT)
	case f.Get("requested_token_type") != "" && f.Get("requested_token_type") != tokenTypeAccessToken:
		return nil, invalid("only access tokens are issued")
	}
	requested, err := parseScope(f.Get("scope"))
	if err != nil {
		return nil, err
	}
	subj, err := i.verifyAccessTokenReading(ctx, f.Get("subject_token"))
	if err != nil {
		return nil, invalid("subject_token is invalid, expired or revoked").Wrap(err)
	}
	if subj.ExpiresAt.Sub(i.now()) < time.Second {
		// The new token expires with it, and expires_in is whole
		// seconds: 0 reads as "no expiry given" (golang.org/x/oauth2
		// then takes the token as valid forever).
		return nil, invalid("subject_token is invalid, expired or revoked")
	}
	signedBy := []signedToken{{headerKID(f.Get("subject_token")), invalid("subject_token is invalid, expired or revoked")}}
	if err := possessed(subj.BoundKey(), req.jkt, "subject_token"); err != nil {
		return nil, err
	}
	target, err := exchangeTarget(f, subj.Audience[0])
	if err != nil {
		return nil, err
	}
	app, u, err := x.parties(ctx, subj)
	if err != nil {
		return nil, err
	}

	act := subj.Actor
	var actor *Agent
	var actorTok *accesstoken.Claims
	actorAud := ""
	if actRaw != "" {
		if actor, actorTok, err = x.actor(ctx, actRaw, subj, req.jkt); err != nil {
			return nil, err
		}
		actorAud = actorTok.Audience[0]
		signedBy = append(signedBy, signedToken{headerKID(actRaw), invalid("actor_token is not a valid, unrevoked token of an agent acting for itself")})
		act = &accesstoken.Actor{Subject: actor.ID, Actor: subj.Actor}
		if err := headsWithin(actor, act, subj.ClientID); err != nil {
			return nil, err
		}
		if slices.Contains(subj.Actor.Chain(), actor.ID) {
			// A acting for B acting for A: the agent would act for itself
			// through another, and an actor rule reading one link of the
			// chain would see it twice.
			return nil, invalid("the actor already acts in the subject token")
		}
	}
	// Every actor the new token names, new or kept, holds what is
	// issued within its policy of today, as at a refresh of a delegated
	// grant, not the policy it had when it joined the chain: each heads
	// its part of the chain (depth, allowed_clients) and limits the
	// scopes.
	var agents []*Agent
	if actor != nil {
		agents = append(agents, actor) // held above
	}
	for link := subj.Actor; link != nil; link = link.Actor {
		a, err := i.dir.lookupAgent(ctx, link.Subject)
		if err != nil {
			return nil, invalid("an actor of the subject token is unknown or disabled").Wrap(err)
		}
		if err := headsWithin(a, link, subj.ClientID); err != nil {
			return nil, err
		}
		agents = append(agents, a)
	}
	if c.ID != subj.ClientID && (actor == nil || c.ID != actor.ID) && (subj.Actor == nil || c.ID != subj.Actor.Subject) {
		return nil, invalid("the client may not exchange this subject_token")
	}
	if err := i.notReplaced(ctx, subj.GrantID, ErrInvalidRequest.WithDescription("subject_token is invalid, expired or revoked")); err != nil {
		return nil, err
	}

	res, err := i.policy.resolveResource(app, target)
	if err != nil {
		return nil, err
	}
	if actor != nil && c.ID != actor.ID && !sameResource(actorAud, res.URL) {
		// The agent's token was presented to its audience, which holds it
		// as a bearer: it shows the agent taking part there only. Another
		// requester (the subject's client) cannot use it to name the agent
		// as actor elsewhere; the agent itself authenticates instead.
		return nil, invalid("actor_token is for another resource than the token to be issued")
	}
	if u != nil && !sameResource(res.URL, subj.Audience[0]) {
		return nil, ErrInvalidTarget.WithDescription("a user's token can only be exchanged for the resource the user consented to")
	}
	if !sameResource(res.URL, subj.Audience[0]) && (actor != nil || subj.Actor != nil || c.ID != subj.ClientID) {
		// Only the token's own principal, acting alone, may move it to
		// another resource its policy allows: a delegate holds it for
		// the audience it was given.
		return nil, ErrInvalidTarget.WithDescription("only the subject itself may exchange its token for another resource")
	}
	scopes, err := x.scopes(ctx, app, u, agents, subj, res.URL, requested)
	if err != nil {
		return nil, err
	}
	// Each exchange is recorded until its subject token expires
	// (derivedRecords): they spend the requesting client's tokens, as
	// its own do (clientTokenBurst), or exchanging one token with every
	// call would grow the store without bound.
	if err := i.clientTokens.spend(ctx, c.ID, "too many tokens for this client; retry later"); err != nil {
		return nil, err
	}
	s := tokenSubject{
		client: app, user: u, subject: subj.Subject, resource: res.URL, scopes: scopes, act: act,
		grantID: subj.GrantID, principalType: subj.PrincipalType, notAfter: subj.ExpiresAt.Time,
	}
	if actorTok != nil && actorTok.ExpiresAt.Before(s.notAfter) {
		// It ends with the actor token too: revoking that token ends
		// it (endsWith below), and an expired token can no longer be
		// revoked, so one outliving it would name the agent until the
		// subject token expired.
		s.notAfter = actorTok.ExpiresAt.Time
	}
	if u != nil && subj.AuthTime != nil {
		s.authTime = subj.AuthTime.Time
	}
	delegate := ""
	if actor != nil {
		delegate = actor.ID
	}
	return &issuance{
		grantType:     grantTokenExchange,
		subject:       s,
		exchanged:     true,
		authenticated: c,
		record: func(tx store.Tx, t *minted) error {
			if err := touchGrant(tx, subj.GrantID, i.now(), delegate); err != nil {
				return err
			}
			// The new token ends with the subject token, revoked (RFC
			// 7009) meanwhile or later: revoking it revokes this one. So
			// it does with the agent's own token that made the agent its
			// actor: an agent that finds its token leaked and revokes it
			// ends the tokens exchanged naming it with that token too.
			if err := endsWith(tx, subj, t.jti, subj.ExpiresAt.Time, invalid("subject_token is invalid, expired or revoked")); err != nil {
				return err
			}
			if actorTok == nil {
				return nil
			}
			return endsWith(tx, actorTok, t.jti, subj.ExpiresAt.Time, invalid("actor_token is not a valid, unrevoked token of an agent acting for itself"))
		},
		recording: "record token exchange",
		signedBy:  signedBy,
		// The requesting client too: it may be the actor or not be the
		// subject's client at all.
		bases: append(s.principals(req.basis, req.basis), principalBasis{clientPrincipal(c.ID), req.basis}),
	}, nil
}

func accessTokenType(t string) bool { return t == tokenTypeAccessToken || t == tokenTypeJWT }

// exchangeTarget is the resource the new token is for: resource or
// audience (one target; both only if they agree), else def.
func exchangeTarget(f url.Values, def string) (string, error) {
	res, aud := f.Get("resource"), f.Get("audience")
	switch {
	case res != "" && aud != "" && !sameResource(res, aud):
		return "", ErrInvalidTarget.WithDescription("resource and audience name different targets")
	case res != "":
		return res, nil
	case aud != "":
		return aud, nil
	}
	return def, nil
}

// parties loads the subject token's client and, for a user's
// token, the user; both must still be available. An agent's token must
// come from an enabled agent (every actor in its chain is held by grant).
func (x tokenExchange) parties(ctx context.Context, subj *accesstoken.Claims) (*Client, *User, error) {
	i := x.iss
	app, err := i.dir.lookupClient(ctx, subj.ClientID)
	if err != nil {
		return nil, nil, ErrInvalidRequest.WithDescription("the subject token's client is no longer available").Wrap(err)
	}
	if subj.PrincipalType != principalUser {
		// An agent's own token (app is the enabled agent, found above) or
		// a client's.
		return app, nil, nil
	}
	u, err := i.dir.lookupUser(ctx, subj.Subject)
	if err != nil {
		return nil, nil, ErrInvalidRequest.WithDescription("the subject token's user is unknown or disabled").Wrap(err)
	}
	return app, u, nil
}

// actor verifies actor_token (an enabled agent's own token) and
// the agent's right to act on subj; ac is the actor token's claims.
func (x tokenExchange) actor(ctx context.Context, raw string, subj *accesstoken.Claims, jkt string) (a *Agent, ac *accesstoken.Claims, err error) {
	i := x.iss
	invalid := func(d string) *Error { return ErrInvalidRequest.WithDescription(d) }
	ac, err = i.verifyAccessTokenReading(ctx, raw)
	if storeBusy(err) {
		return nil, nil, err
	}
	if err != nil || !ownAgentToken(ac) || ac.ExpiresAt.Sub(i.now()) < time.Second {
		// The new token expires with it too, as with the subject
		// token's last second.
		return nil, nil, invalid("actor_token is not a valid, unrevoked token of an agent acting for itself")
	}
	if err := possessed(ac.BoundKey(), jkt, "actor_token"); err != nil {
		return nil, nil, err
	}
	// An agent's token a lagging instance issued under its replaced
	// secret (review s16c F2).
	if err := i.notReplaced(ctx, ac.GrantID, invalid("actor_token is not a valid, unrevoked token of an agent acting for itself")); err != nil {
		return nil, nil, err
	}
	a, err = i.dir.lookupAgent(ctx, ac.Subject)
	if err != nil {
		return nil, nil, invalid("the actor is unknown or disabled").Wrap(err)
	}
	switch {
	case subj.PrincipalType != principalUser && subj.PrincipalType != principalAgent:
		// A client's own token names no user or agent; a delegated one
		// would read as a user's token at the gateway.
		return nil, nil, invalid("only a user's or an agent's token can be delegated")
	case subj.PrincipalType == principalAgent && subj.Subject == a.ID:
		return nil, nil, invalid("an agent cannot act for itself")
	}
	return a, ac, nil
}

// endsWith records, in tx, that the token jti, valid until until, was
// exchanged with parent (its subject or actor token), so that revoking
// parent revokes it (revokeTokenTree); a parent revoked since it was
// verified refuses the exchange with refused.
func endsWith(tx store.Tx, parent *accesstoken.Claims, jti string, until time.Time, refused error) error {
	if parent.ID == "" {
		return nil
	}
	switch revoked, err := revocationsIn(tx).revoked(parent.ID, ""); {
	case err != nil:
		return err
	case revoked:
		return refused
	}
	return derivedIn(tx).add(parent.ID, jti, until)
}

// headsWithin refuses act, headed by agent a, when a may not head it
// today: longer than a's max_depth, or for a client a does not allow.
func headsWithin(a *Agent, act *accesstoken.Actor, clientID string) error {
	if d := len(act.Chain()); d > a.maxDepth() {
		return ErrInvalidRequest.WithDescription(fmt.Sprintf("delegation depth %d exceeds the actor's limit of %d", d, a.maxDepth()))
	}
	if !a.allowsClient(clientID) {
		return ErrInvalidRequest.WithDescription("the actor may not act for the subject token's client")
	}
	return nil
}

// scopes narrows the subject's scopes to the request, every actor's
// limit and today's policy for the target. Only the subject's scopes can
// be had; offline_access never (no refresh token).
func (x tokenExchange) scopes(ctx context.Context, app *Client, u *User, actors []*Agent, subj *accesstoken.Claims, target string, requested []string) ([]string, error) {
	i := x.iss
	have := strings.Fields(subj.Scope)
	explicit := len(requested) > 0
	if !explicit {
		requested = have
	}
	for _, s := range requested {
		if !slices.Contains(have, s) {
			return nil, ErrInvalidScope.WithDescription(fmt.Sprintf("scope %q exceeds the subject token", s))
		}
	}
	want := slices.DeleteFunc(slices.Clone(requested), func(s string) bool { return s == scopeOfflineAccess })
	for _, a := range actors {
		want = a.limitScopes(want)
	}
	if len(want) == 0 {
		if len(have) == 0 {
			return []string{}, nil // nothing to narrow; grantScopes would read it as "everything"
		}
		return nil, ErrInvalidScope.WithDescription("none of the requested scopes may be delegated")
	}
	var out []string
	var err error
	if u != nil {
		_, out, err = i.policy.grantScopes(ctx, app, u, target, want)
	} else {
		_, out, err = i.policy.clientGrantScopes(ctx, app, target, want)
	}
	if err != nil {
		return nil, err
	}
	for _, s := range requested {
		if explicit && s != scopeOfflineAccess && !slices.Contains(out, s) {
			return nil, ErrInvalidScope.WithDescription(fmt.Sprintf("scope %q may not be granted to this actor or target", s))
		}
	}
	return out, nil
}

// notReplaced refuses, with refused, a subject or actor token whose
// grant was issued under a credential the configuration has replaced
// (credentialTags).
func (i *Issuer) notReplaced(ctx context.Context, gid string, refused error) error {
	if gid == "" {
		return nil
	}
	current := true
	err := i.store.View(ctx, func(tx store.Tx) error {
		g, err := grantsIn(tx).get(gid)
		if err != nil {
			return ignoreNotFound(err) // refused by touchGrant
		}
		current, err = i.creds.grantCurrent(tx, g)
		return err
	})
	if err != nil || current {
		return err
	}
	return i.refuseReplaced(ctx, gid, refused)
}

// touchGrant records a use of the subject's grant (last use, and the
// agent it was delegated to) and refuses a grant revoked meanwhile.
func touchGrant(tx store.Tx, gid string, now time.Time, delegate string) error {
	if gid == "" {
		return nil
	}
	switch err := grantsIn(tx).touch(gid, now, delegate); {
	case errors.Is(err, errGrantRevoked):
		return ErrInvalidRequest.WithDescription("subject_token is invalid, expired or revoked")
	case errors.Is(err, store.ErrNotFound):
		// No token outlives its grant's record (a refresh caps its
		// token at the grant's end), so the grant is over: what this
		// exchange would issue could not be revoked with it.
		return ErrInvalidRequest.WithDescription("subject_token is invalid, expired or revoked")
	default:
		return err
	}
}
