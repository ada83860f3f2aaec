package issuer

import (
	"context"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// clientCredentials issues a token to a confidential client acting
// for itself (RFC 6749 4.4): sub is the client, principal_type client, no
// refresh token. An agent gets its own token the same way, marked
// principal_type agent. Either is recorded as a grant of its own, so that
// deleting the client or agent, disabling the agent, or rotating its
// secret revokes the token at once (through its gid, as a user's grant).
// A grant per token, kept until it expires, so a client asking for one
// with every call would grow the store without bound: a client gets at
// most clientTokenBurst a minute (per process, kept across reloads).
type clientCredentials struct{ iss *Issuer }

func (clientCredentials) name() string { return grantClientCredentials }

func (cg clientCredentials) grant(ctx context.Context, req *clientRequest) (*issuance, error) {
	i, f, c := cg.iss, req.form, req.client
	requested, err := parseScope(f.Get("scope"))
	if err != nil {
		return nil, err
	}
	resource, scopes, err := i.policy.clientGrantScopes(ctx, c, f.Get("resource"), requested)
	if err != nil {
		return nil, err
	}
	if err := i.clientTokens.spend(ctx, c.ID, "too many tokens for this client; retry later"); err != nil {
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
		Scopes: scopes, Issuer: i.URL(), CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(i.cfg.AccessTokenTTL),
		Credential: i.creds.of(s.principalType, c.ID), ClientCredential: i.creds.client(c),
	}
	s.notAfter = g.ExpiresAt
	return &issuance{
		grantType: grantClientCredentials,
		subject:   s,
		record:    func(tx store.Tx, _ *minted) error { return grantsIn(tx).create(g) },
		recording: "store client credentials grant",
		bases:     s.principals(req.basis, req.basis),
	}, nil
}
