package issuer

// This file holds the internal contract between the two halves of the
// issuer while they are written in parallel:
//
//   - TOKENS half (keys.go, metadata.go, token.go, clientauth.go, par.go,
//     revoke.go, introspect.go, userinfo.go, directory.go, policy.go,
//     manage.go): signing keys and JWKS, metadata, every grant at /token,
//     client authentication, PAR endpoint, revocation, introspection,
//     userinfo, directory lookups, scope policy, the exported management API.
//   - BROWSER half (authorize.go, login.go, consent.go, pages.go,
//     templates/, assets/, apps.go, register.go, cimd.go): /authorize, login
//     and consent pages, logout, connected apps page, assets, Dynamic Client
//     Registration, Client ID Metadata Documents.
//
// Each stub below names its owner. The owner implements it in their own file
// and deletes the stub from here. Signatures are fixed; ask before changing.

import (
	"context"
	"errors"
	"net/http"
)

var errUnimplemented = errors.New("unimplemented")

type state struct {
	tokenState
	browserState
}

func (i *Issuer) init() error {
	if err := i.initTokens(); err != nil {
		return err
	}
	return i.initBrowser()
}

// ---- TOKENS half ----

// tokenState holds the TOKENS half's fields (key cache, limiter, ...).
type tokenState struct{}

// initTokens loads or generates the signing key.
func (i *Issuer) initTokens() error { return nil }

func (i *Issuer) handleMetadata(w http.ResponseWriter, r *http.Request)   { http.NotFound(w, r) }
func (i *Issuer) handleJWKS(w http.ResponseWriter, r *http.Request)       { http.NotFound(w, r) }
func (i *Issuer) handleToken(w http.ResponseWriter, r *http.Request)      { http.NotFound(w, r) }
func (i *Issuer) handlePAR(w http.ResponseWriter, r *http.Request)        { http.NotFound(w, r) }
func (i *Issuer) handleRevoke(w http.ResponseWriter, r *http.Request)     { http.NotFound(w, r) }
func (i *Issuer) handleIntrospect(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
func (i *Issuer) handleUserinfo(w http.ResponseWriter, r *http.Request)   { http.NotFound(w, r) }

// lookupClient finds a client by id: configured clients, then the store
// (admin/DCR), then, for an https URL with a path, a Client ID Metadata
// Document via fetchCIMD. Unknown -> ErrInvalidClient-wrapped error.
func (i *Issuer) lookupClient(ctx context.Context, id string) (*Client, error) {
	return nil, errUnimplemented
}

// lookupUser finds a user by username: configuration, then the store.
// Unknown or disabled -> store.ErrNotFound-wrapped error.
func (i *Issuer) lookupUser(ctx context.Context, username string) (*User, error) {
	return nil, errUnimplemented
}

// checkPassword verifies a password against a user's bcrypt hash in
// constant time (and spends the same time for unknown users).
func (i *Issuer) checkPassword(u *User, password string) bool { return false }

// grantScopes resolves a request's target and scopes: resource "" means the
// single configured resource (or invalid_target if there are several);
// an unknown resource or one the client may not use -> ErrInvalidTarget; the
// result is requested ∩ client's scopes ∩ (for user != nil) the user's group
// scopes for that resource; requested empty means all of the resource's
// scopes the others allow; an empty result when scopes were requested ->
// ErrInvalidScope. OIDC scopes (openid, profile, email, offline_access) pass
// through for user tokens when requested and are not resource scopes.
func (i *Issuer) grantScopes(ctx context.Context, c *Client, u *User, resource string, requested []string) (string, []string, error) {
	return "", nil, errUnimplemented
}

// authenticateClient authenticates the client of a back-channel request
// (token, PAR, revocation, introspection): none (public client, client_id
// form field), client_secret_basic, client_secret_post, private_key_jwt.
// Slowed per client and per address on failure. Errors are *Error
// (invalid_client).
func (i *Issuer) authenticateClient(r *http.Request) (*Client, error) {
	return nil, errUnimplemented
}

// ---- BROWSER half ----

// browserState holds the BROWSER half's fields (templates, CSRF key, login limiter, ...).
type browserState struct{}

func (i *Issuer) initBrowser() error { return nil }

func (i *Issuer) handleAuthorize(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
func (i *Issuer) handleLogin(w http.ResponseWriter, r *http.Request)     { http.NotFound(w, r) }
func (i *Issuer) handleConsent(w http.ResponseWriter, r *http.Request)   { http.NotFound(w, r) }
func (i *Issuer) handleLogout(w http.ResponseWriter, r *http.Request)    { http.NotFound(w, r) }
func (i *Issuer) handleApps(w http.ResponseWriter, r *http.Request)      { http.NotFound(w, r) }
func (i *Issuer) handleAssets(w http.ResponseWriter, r *http.Request)    { http.NotFound(w, r) }
func (i *Issuer) handleRegister(w http.ResponseWriter, r *http.Request)  { http.NotFound(w, r) }

// fetchCIMD fetches, validates and caches a Client ID Metadata Document
// (SSRF-protected, size/time limited, HTTP caching honoured, errors never
// cached) and returns it as a public (or private_key_jwt) Client.
func (i *Issuer) fetchCIMD(ctx context.Context, clientID string) (*Client, error) {
	return nil, errUnimplemented
}

// ---- TOKENS half: exported API used by caddymodule (admin API, CLI, gateway) ----

// AddResource registers a protected resource at runtime (every mcp_gateway
// in the same Caddy config registers itself while Caddy provisions).
// Safe for concurrent use; re-adding a URL replaces its scopes.
func (i *Issuer) AddResource(r Resource) {}

// PublicKey returns the public key of a published signing key (current or
// retired but still published), for gateways in the same process.
func (i *Issuer) PublicKey(ctx context.Context, kid string) (any, error) {
	return nil, errUnimplemented
}

// RotateSigningKey generates a new signing key that signs from now on; the
// old one stays published until its tokens expire. Returns the new kid.
func (i *Issuer) RotateSigningKey(ctx context.Context) (string, error) {
	return "", errUnimplemented
}

// Runtime-managed directory (store-backed; configured entries are
// read-only and listed with Source "config").
func (i *Issuer) PutUser(ctx context.Context, u User) error         { return errUnimplemented }
func (i *Issuer) Users(ctx context.Context) ([]User, error)         { return nil, errUnimplemented }
func (i *Issuer) DeleteUser(ctx context.Context, name string) error { return errUnimplemented }

// SetPassword stores a new bcrypt hash (hash, not the password).
func (i *Issuer) SetPassword(ctx context.Context, name, bcryptHash string) error {
	return errUnimplemented
}
func (i *Issuer) PutClient(ctx context.Context, c Client) error     { return errUnimplemented }
func (i *Issuer) Clients(ctx context.Context) ([]Client, error)     { return nil, errUnimplemented }
func (i *Issuer) DeleteClient(ctx context.Context, id string) error { return errUnimplemented }

// RotateClientSecret generates a new secret for a confidential client,
// stores only its hash, and returns it once.
func (i *Issuer) RotateClientSecret(ctx context.Context, id string) (string, error) {
	return "", errUnimplemented
}
