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
	"errors"
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
//
// Implemented in keys.go, token.go, clientauth.go, ... (see above). For the
// BROWSER half: the brute-force limiter in ratelimit.go is shared —
// attemptDelay(account, addr) (refuse while positive) and
// slowAttempt(ctx, account) before a credential check; a check that
// hashes reserves its attempt first (reserveAttempt) and settles it
// (attemptSucceeded, attemptNotRun), others recordFailure(account, addr);
// hashing runs through i.hashes (hashgate.go). clientAddr(r) is the
// address key.
// Client accounts are "client:"+id. i.cors(h) wraps back-channel handlers.
