package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketClients: client_id -> storedClient (admin-managed, or registered
// by DCR and expiring at its ExpiresAt).
const bucketClients = "clients"

// storedClient is a Client as the store keeps it (stored clients, cached
// CIMD documents). It is a type of its own so that Client, the public API
// type, can change without changing what is on disk; the field names are
// the format of existing databases.
type storedClient struct {
	ID                      string    `json:"client_id"`
	Name                    string    `json:"client_name,omitempty"`
	SecretHash              string    `json:"secret_hash,omitempty"`
	RedirectURIs            []string  `json:"redirect_uris,omitempty"`
	PostLogoutRedirectURIs  []string  `json:"post_logout_redirect_uris,omitempty"`
	GrantTypes              []string  `json:"grant_types,omitempty"`
	TokenEndpointAuthMethod string    `json:"token_endpoint_auth_method,omitempty"`
	JWKS                    []byte    `json:"jwks,omitempty"`
	JWKSURI                 string    `json:"jwks_uri,omitempty"`
	ApplicationType         string    `json:"application_type,omitempty"`
	Resources               []string  `json:"resources,omitempty"`
	Scopes                  []string  `json:"scopes,omitempty"`
	Introspect              bool      `json:"introspect,omitempty"`
	DPoPBoundAccessTokens   bool      `json:"dpop_bound_access_tokens,omitempty"`
	RequirePAR              bool      `json:"require_pushed_authorization_requests,omitempty"`
	IDTokenAlg              string    `json:"id_token_signed_response_alg,omitempty"`
	DefaultMaxAge           *uint32   `json:"default_max_age,omitempty"`
	AuthSigningAlg          string    `json:"token_endpoint_auth_signing_alg,omitempty"`
	Source                  string    `json:"source,omitempty"`
	CreatedAt               time.Time `json:"created_at,omitempty"`
	ExpiresAt               time.Time `json:"expires_at,omitzero"`
}

func clientRecord(c *Client) *storedClient {
	return &storedClient{
		ID:                      c.ID,
		Name:                    c.Name,
		SecretHash:              c.SecretHash,
		RedirectURIs:            c.RedirectURIs,
		PostLogoutRedirectURIs:  c.PostLogoutRedirectURIs,
		GrantTypes:              c.GrantTypes,
		TokenEndpointAuthMethod: c.TokenEndpointAuthMethod,
		JWKS:                    c.JWKS,
		JWKSURI:                 c.JWKSURI,
		ApplicationType:         c.ApplicationType,
		Resources:               c.Resources,
		Scopes:                  c.Scopes,
		Introspect:              c.Introspect,
		DPoPBoundAccessTokens:   c.DPoPBoundAccessTokens,
		RequirePAR:              c.RequirePushedAuthorizationRequests,
		IDTokenAlg:              c.IDTokenAlg,
		DefaultMaxAge:           c.DefaultMaxAge,
		AuthSigningAlg:          c.TokenEndpointAuthSigningAlg,
		Source:                  c.Source,
		CreatedAt:               c.CreatedAt,
		ExpiresAt:               c.ExpiresAt,
	}
}

func (s *storedClient) client() *Client {
	return &Client{
		ID:                                 s.ID,
		Name:                               s.Name,
		SecretHash:                         s.SecretHash,
		RedirectURIs:                       s.RedirectURIs,
		PostLogoutRedirectURIs:             s.PostLogoutRedirectURIs,
		GrantTypes:                         s.GrantTypes,
		TokenEndpointAuthMethod:            s.TokenEndpointAuthMethod,
		JWKS:                               s.JWKS,
		JWKSURI:                            s.JWKSURI,
		ApplicationType:                    s.ApplicationType,
		Resources:                          s.Resources,
		Scopes:                             s.Scopes,
		Introspect:                         s.Introspect,
		DPoPBoundAccessTokens:              s.DPoPBoundAccessTokens,
		RequirePushedAuthorizationRequests: s.RequirePAR,
		IDTokenAlg:                         s.IDTokenAlg,
		DefaultMaxAge:                      s.DefaultMaxAge,
		TokenEndpointAuthSigningAlg:        s.AuthSigningAlg,
		Source:                             s.Source,
		CreatedAt:                          s.CreatedAt,
		ExpiresAt:                          s.ExpiresAt,
	}
}

// clientRecords are the stored (admin, DCR) clients.
type clientRecords struct{ t table[storedClient] }

func clientsIn(tx store.Tx) clientRecords {
	return clientRecords{table[storedClient]{tx, bucketClients}}
}

func (r clientRecords) get(id string) (*Client, error) {
	s, err := r.t.get(id)
	if err != nil {
		return nil, err
	}
	return s.client(), nil
}

// has reports whether a live client is stored under id.
func (r clientRecords) has(id string) (bool, error) { return r.t.has(id) }

func (r clientRecords) put(c *Client) error { return r.t.put(c.ID, clientRecord(c), c.ExpiresAt) }

// create is put that fails with store.ErrAlreadyExists for a taken id.
func (r clientRecords) create(c *Client) error {
	return r.t.create(c.ID, clientRecord(c), c.ExpiresAt)
}

// remove deletes the client, or returns store.ErrNotFound.
func (r clientRecords) remove(id string) error { return r.t.remove(id) }

// each calls fn for every stored client.
func (r clientRecords) each(fn func(*Client) error) error {
	return r.t.list("", func(_ string, s *storedClient) error { return fn(s.client()) })
}
