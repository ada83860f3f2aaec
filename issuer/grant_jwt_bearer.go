package issuer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

const (
	grantJWTBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer" // RFC 7523 section 2.1
	// grantProfileIDJAG is the authorization_grant_profiles_supported
	// value of ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant
	// section 7.2), which MCP's enterprise-managed authorization reads.
	grantProfileIDJAG = "urn:ietf:params:oauth:grant-profile:id-jag"
	idJAGType         = "oauth-id-jag+jwt"
	// idJAGLeeway is the clock skew allowed on exp and iat.
	idJAGLeeway = 30 * time.Second
	// maxIDJAGBytes bounds an assertion before it is parsed.
	maxIDJAGBytes = 16 << 10
	// maxJTILen bounds the jti kept in the store until exp.
	maxJTILen = 256
)

// jwtBearer redeems an ID-JAG (Identity Assertion JWT Authorization
// Grant) of a trusted IdP with the jwt-bearer grant (RFC 7523 section
// 2.1; draft-ietf-oauth-identity-assertion-authz-grant section 4.4; MCP
// enterprise-managed authorization). The assertion must be:
//
//   - typed oauth-id-jag+jwt, from a trusted IdP's iss, signed by one of
//     its keys with an allowed asymmetric alg;
//   - addressed to this issuer (aud, one value), within its validity
//     (exp, iat, small leeway; at most maxAssertionLifetime ahead; iat,
//     when the IdP let the user in, less than the identity provider's
//     recheck ago, the user's last sign-in), with a sub and a jti, each
//     jti used once until exp (in the store, so every instance sees it;
//     recorded in the transaction that records the grant it yields, so
//     a request refused at any step spends nothing);
//   - issued to the authenticated client (client_id), for a registered
//     resource (resource, when present), with scopes that resource (or
//     OpenID Connect) registers, naming no actor
//     (act: one this server could not identify, nor drop);
//   - when bound to a key (cnf, RFC 7800), bound to one DPoP key (jkt)
//     whose proof the request carries: the token issued is bound to it
//     too, so the IdP's binding is not dropped on the way.
//
// Any failure is invalid_grant (RFC 7523 section 3.1; a missing proof
// of the bound key too, as the ID-JAG draft has it), except scopes
// (invalid_scope) and a resource parameter the assertion does not name
// (invalid_target). The user is the subject's account at the IdP's
// identity provider, matched or provisioned as at a sign-in there (in
// the transaction that records the grant, so a refused request
// provisions nobody); the token's scopes are requested ∩ the
// assertion's ∩ what the user's groups and the client allow, requested
// defaulting to the assertion's (none in common: invalid_scope). No
// refresh token: the client asks its IdP for a new ID-JAG.
type jwtBearer struct{ iss *Issuer }

func (jwtBearer) name() string { return grantJWTBearer }

func (g jwtBearer) grant(ctx context.Context, req *clientRequest) (*issuance, error) {
	i, f, c := g.iss, req.form, req.client
	raw := f.Get("assertion")
	if raw == "" {
		return nil, ErrInvalidRequest.WithDescription("assertion is required")
	}
	if len(raw) > maxIDJAGBytes {
		return nil, ErrInvalidGrant.WithDescription("assertion is too large")
	}
	requested, err := parseScope(f.Get("scope"))
	if err != nil {
		return nil, err
	}
	invalid := func(d string) *Error { return ErrInvalidGrant.WithDescription(d) }
	if err := accesstoken.CheckMembers(raw); err != nil {
		return nil, invalid("the assertion is not a JWT: " + err.Error())
	}
	var peek jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(raw, &peek); err != nil {
		return nil, invalid("assertion is not a JWT")
	}
	idp := i.trusted[peek.Issuer]
	if idp == nil {
		return nil, invalid("the assertion's issuer is not a trusted identity provider")
	}
	claims := jwt.MapClaims{}
	_, err = jwt.NewParser(jwt.WithValidMethods(accesstoken.Algorithms()), jwt.WithIssuer(idp.cfg.Issuer),
		jwt.WithAudience(i.URL()), jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(idJAGLeeway),
		jwt.WithTimeFunc(i.now)).ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		if err := accesstoken.RefuseCritical(t); err != nil {
			return nil, err
		}
		if typ, _ := t.Header["typ"].(string); !isIDJAGType(typ) {
			return nil, errors.New("typ is not " + idJAGType)
		}
		return idp.keys(ctx, t)
	})
	if err != nil {
		return nil, invalid("the assertion is not a valid ID-JAG of its issuer").Wrap(err)
	}
	str := func(name string) string { s, _ := claims[name].(string); return s }
	aud, _ := claims.GetAudience()
	exp, _ := claims.GetExpirationTime()
	iat, _ := claims.GetIssuedAt()
	sub, jti, clientID, resource := str("sub"), str("jti"), str("client_id"), str("resource")
	_, hasResource := claims["resource"]
	_, hasActor := claims["act"]
	_, hasMayAct := claims["may_act"]
	now := i.now()
	switch {
	case hasActor:
		// The IdP says someone acts for the user. Nothing here can
		// identify that actor, and a token without act would pass as the
		// user's own to the gateway's actor rules (user_only, agents).
		return nil, invalid("the ID-JAG names an actor (act), which this server does not honour")
	case hasMayAct:
		// The IdP says who may act for the user (RFC 8693 section 4.4).
		// The token issued would not say it, and any agent this
		// server's policy allows could then act with it.
		return nil, invalid("the ID-JAG says who may act for the user (may_act), which this server does not honour")
	case hasResource && resource == "":
		// Not one URL (an array, an empty string): the IdP meant some
		// restriction, and reading it as none would drop it.
		return nil, invalid("the ID-JAG's resource must be one URL")
	case len(aud) != 1:
		return nil, invalid("the ID-JAG's aud must be this issuer alone")
	case iat == nil || sub == "" || jti == "":
		return nil, invalid("the ID-JAG needs iat, sub and jti")
	case len(jti) > maxJTILen:
		return nil, invalid("the ID-JAG's jti is too long")
	case exp.Sub(now) > maxAssertionLifetime:
		return nil, invalid("the ID-JAG lives too long")
	case clientID != c.ID:
		return nil, invalid("the ID-JAG was issued to another client")
	}
	// The IdP let the user in when it issued the ID-JAG, not when it is
	// redeemed: recheck counts from then, as from a sign-in there.
	loginAt := now
	if iat.Before(now) {
		loginAt = iat.Time
	}
	if !now.Before(loginAt.Add(idp.idp.Recheck)) {
		return nil, invalid("the ID-JAG was issued longer ago than its identity provider's recheck")
	}
	bound, ok := boundKey(claims)
	if !ok {
		return nil, invalid("the ID-JAG's cnf must name one DPoP key (jkt)")
	}
	if bound != "" && bound != req.jkt {
		// Not invalid_dpop_proof as for a bound token: the ID-JAG draft
		// (Proof-of-Possession During ID-JAG Exchange) makes a missing or
		// other key's proof invalid_grant.
		return nil, invalid("the ID-JAG is DPoP-bound: the request needs a DPoP proof signed by its key")
	}
	if resource != "" {
		if !slices.ContainsFunc(i.policy.resources(), func(r Resource) bool { return sameResource(r.URL, resource) }) {
			return nil, invalid("the ID-JAG's resource is not registered here")
		}
		if p := f.Get("resource"); p != "" && !sameResource(p, resource) {
			return nil, ErrInvalidTarget.WithDescription("resource differs from the ID-JAG's")
		}
	} else {
		resource = f.Get("resource")
	}
	granted, err := parseScope(str("scope"))
	if err != nil || len(granted) == 0 {
		return nil, ErrInvalidScope.WithDescription("the ID-JAG grants no scope")
	}
	// Enterprise-managed authorization, section 7.6.2: the scope claim
	// must match the resource's registered scopes, or the request is
	// invalid_grant. An IdP that grants a scope the resource does not
	// have meant another resource (a namespace shared across servers):
	// its grant is refused, not redeemed for the scopes that happen to
	// match. A scope the user's groups do not allow is policy, as ever
	// (grantScopes).
	res, err := i.policy.resolveResource(c, resource)
	if err != nil {
		return nil, err
	}
	if k := slices.IndexFunc(granted, func(s string) bool { return !slices.Contains(res.Scopes, s) && !slices.Contains(oidcScopes, s) }); k >= 0 {
		return nil, invalid(fmt.Sprintf("the ID-JAG's scope %q is not a scope of %s", truncate(granted[k], 40), res.URL))
	}
	// The scopes asked for that the ID-JAG carries (enterprise-managed
	// authorization, section 7.2.1: the intersection, not a refusal).
	if len(requested) > 0 {
		requested = slices.DeleteFunc(requested, func(s string) bool { return !slices.Contains(granted, s) })
		if len(requested) == 0 {
			return nil, ErrInvalidScope.WithDescription("none of the requested scopes is in the ID-JAG's")
		}
	} else {
		requested = granted
	}
	// No refresh token comes of an ID-JAG, so offline_access is not
	// granted (OpenID Connect Core section 11 lets the server ignore it),
	// as a code's is not to a client without the refresh grant.
	requested = slices.DeleteFunc(slices.Clone(requested), func(s string) bool { return s == scopeOfflineAccess })
	if len(requested) == 0 {
		return nil, ErrInvalidScope.WithDescription("offline_access alone grants nothing: no refresh token comes of an ID-JAG")
	}
	refused := func(err error) error {
		return ErrInvalidGrant.WithDescription("the ID-JAG's user may not use this server").Wrap(err)
	}
	id, err := idp.idp.identity(claims, sub)
	if err != nil {
		return nil, refused(err)
	}
	id.issuedAt = iat.Time
	// The user as provisioning will record it, whose resource and
	// scopes are judged: a request the client can fix provisions nothing.
	asserted, err := i.assertedUser(ctx, idp.idp, id, loginAt)
	if err != nil {
		return nil, err
	}
	u, err := i.dir.storedUser(asserted)
	if err != nil {
		return nil, refused(err)
	}
	resource, scopes, err := i.policy.grantScopes(ctx, c, u, resource, requested)
	if err != nil {
		return nil, err
	}
	// A replay is refused before anything is signed. The jti is spent,
	// and the user provisioned, only by record, with the grant: a request
	// refused after this point (its DPoP proof a replay, say) changes
	// nothing and leaves the ID-JAG to the client's corrected retry, and
	// of concurrent redemptions one commits.
	used := invalid("the ID-JAG was already used")
	var spent bool
	err = i.store.View(ctx, func(tx store.Tx) (err error) {
		if spent, err = assertionsIn(tx).usedIDJAG(idp.cfg.Issuer, jti); err != nil || spent {
			return err
		}
		return i.mayProvision(tx, idp.idp, id)
	})
	switch {
	case errors.Is(err, errIdPRefused):
		return nil, refused(err)
	case err != nil:
		return nil, err
	case spent:
		return nil, used
	}
	// A grant per token, kept until it expires, as a client's own
	// (clientTokenBurst): a client redeeming one with every call would
	// grow the store without bound. They spend the user's writes, as its
	// authorization requests do.
	if err := i.userWrites.spend(ctx, u.Username, "too many tokens for this account; retry later"); err != nil {
		return nil, err
	}
	gid, err := i.randomToken(16)
	if err != nil {
		return nil, err
	}
	s := tokenSubject{client: c, user: u, subject: u.Username, resource: resource, scopes: scopes, grantID: gid}
	gr := &grant{
		ID: gid, Subject: u.Username, ClientID: c.ID, Resource: resource, Scopes: scopes, Issuer: i.URL(),
		CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(i.cfg.AccessTokenTTL), ClientCredential: i.creds.client(c),
	}
	s.notAfter = gr.ExpiresAt
	return &issuance{
		grantType: grantJWTBearer,
		subject:   s,
		record: func(tx store.Tx, _ *minted) error {
			switch err := assertionsIn(tx).useIDJAG(idp.cfg.Issuer, jti, exp.Add(idJAGLeeway)); {
			case errors.Is(err, store.ErrAlreadyExists):
				// A concurrent redemption won; nothing was written.
				return refuse(used)
			case err != nil:
				return err
			}
			switch err := i.provisionAssertedIn(tx, idp.idp, id, loginAt); {
			case errors.Is(err, errIdPRefused):
				return refused(err) // and nothing is written
			case err != nil:
				return err
			}
			return grantsIn(tx).create(gr)
		},
		recording: "redeem ID-JAG",
		// The user rests on the login the ID-JAG vouches for, at its
		// iat, as a code rests on its sign-in: a removal or disabling
		// of the user since refuses it (signOutUser), even once the user
		// is enabled again.
		bases: s.principals(req.basis, loginAt),
	}, nil
}

// assertedUser is the record of the user of an ID-JAG, let in by the IdP
// at at (its iat), as provisionAssertedIn leaves it: the ID-JAG's, or
// that of the same account's sign-in since, whose groups are the IdP's
// later word (one it took a group away in).
func (i *Issuer) assertedUser(ctx context.Context, p *IdentityProvider, id *idpIdentity, at time.Time) (*User, error) {
	u := provisionedUser(p, id, at)
	err := i.store.View(ctx, func(tx store.Tx) error {
		switch old, err := usersIn(tx).get(id.username); {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return err
		case saidSince(old, id, at) && old.accountOf(p, id):
			u = old
		}
		return nil
	})
	return u, err
}

// provisionAssertedIn is provisionIn for the user of an ID-JAG, let in
// by the IdP at at (its iat): a sign-in recorded since stays, its groups
// and time with it, and nothing is written.
func (i *Issuer) provisionAssertedIn(tx store.Tx, p *IdentityProvider, id *idpIdentity, at time.Time) error {
	switch old, err := usersIn(tx).get(id.username); {
	case err == nil && saidSince(old, id, at):
		return i.mayProvision(tx, p, id)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	return i.provisionIn(tx, p, id, at)
}

// saidSince reports whether old, a user of the provider, was recorded
// from a token the provider issued no earlier than id's ID-JAG: both
// iat are the provider's times, so a provider clock ahead of ours, as
// the leeway allows, cannot put an older ID-JAG after a sign-in (our
// time). A record without the provider's time (stored before it was
// kept) is judged by its last sign-in against at.
func saidSince(old *User, id *idpIdentity, at time.Time) bool {
	if !old.IdPIssuedAt.IsZero() {
		return !id.issuedAt.After(old.IdPIssuedAt)
	}
	return old.LastLogin.After(at)
}

// boundKey is the thumbprint of the DPoP key an ID-JAG's cnf binds it to,
// "" for none. A cnf naming anything else (a certificate thumbprint, a
// key) is not ok, as in access tokens (accesstoken.Confirmation): a
// binding that cannot be checked must not be read as none.
func boundKey(claims jwt.MapClaims) (jkt string, ok bool) {
	raw, has := claims["cnf"]
	if !has {
		return "", true
	}
	cnf, _ := raw.(map[string]any)
	jkt, _ = cnf["jkt"].(string)
	return jkt, len(cnf) == 1 && jkt != ""
}

// grantProfiles is authorization_grant_profiles_supported: ID-JAG when
// some IdP is trusted.
func (i *Issuer) grantProfiles() []string {
	if len(i.trusted) == 0 {
		return nil
	}
	return []string{grantProfileIDJAG}
}
