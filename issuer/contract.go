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

func (i *Issuer) handleIntrospect(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
func (i *Issuer) handleUserinfo(w http.ResponseWriter, r *http.Request)   { http.NotFound(w, r) }

// ---- TOKENS half: exported API used by caddymodule (admin API, CLI, gateway) ----

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
