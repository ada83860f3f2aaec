package issuer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// ErrInvalidDPoPProof is RFC 9449 section 5's error for a refused proof.
var ErrInvalidDPoPProof = &Error{Code: dpop.CodeInvalidProof, Status: http.StatusBadRequest}

// newDPoP builds the token endpoint's proof verifier; with nonces, their
// key is the gateways' shared key (domain-separated by dpop.Nonces), so
// every instance sharing the store accepts every other's nonces.
func (i *Issuer) newDPoP(ctx context.Context) error {
	o := dpop.Options{Now: i.now, Replay: i.cfg.DPoPReplay, Ledger: i.DPoPLedger()}
	if i.cfg.DPoPNonce {
		var key []byte
		err := i.store.Update(ctx, func(tx store.Tx) (err error) {
			key, err = gatewayIn(tx).sessionKey(i.cfg.Rand)
			return err
		})
		if err != nil {
			return fmt.Errorf("dpop nonce key: %w", err)
		}
		o.Nonces = dpop.NewNonces(key, 0)
	}
	i.proofs = dpop.New(o)
	return nil
}

// dpopProof checks the DPoP proof of a request to endpoint (RFC 9449
// section 5): nil when the request carries none. A refused proof is
// invalid_dpop_proof, or use_dpop_nonce with a DPoP-Nonce header set on
// w. With nonces, every answer carries the current one (section 8.2), so
// clients need not fail to learn it. The caller spends the proof
// (spendProof) once the rest of the request is found valid.
func (i *Issuer) dpopProof(w http.ResponseWriter, r *http.Request, endpoint string, c *Client) (*dpop.Proof, error) {
	n := i.proofs.Nonces()
	if n != nil {
		w.Header().Set(dpop.NonceHeader, n.Current(i.now()))
	}
	values := r.Header.Values(dpop.Header)
	if len(values) == 0 {
		return nil, nil
	}
	// A confidential client's proofs are charged to it, whatever keys it
	// uses (a fresh key per client credentials request costs nothing). A
	// public client's to the key: everyone may use a public client's id
	// (a Client ID Metadata Document's), so a share per client would let
	// one user of a popular app lock out its other users; and a public
	// client's new key needs a grant of its own (a login), its refresh
	// tokens being bound to their family's key.
	holder := ""
	if !c.Public() {
		holder = dpop.HolderOf(i.URL(), principalClient, c.ID, c.ID)
	}
	p, err := i.proofs.Check(values, dpop.Request{Method: r.Method, URI: i.endpoint(endpoint), Holder: holder})
	return p, proofError(err)
}

// DPoPLedger is where spent DPoP proofs are recorded for every instance
// to see, for the issuer's and the gateways' verifiers: the store, when
// other instances share it (store.Watcher, as for the limiters'
// counters); nil otherwise, where this process's replay memory sees every
// proof and a store write would buy nothing.
func (i *Issuer) DPoPLedger() dpop.Ledger {
	if _, shared := i.backend.(store.Watcher); !shared {
		return nil
	}
	return dpopLedger{i.backend}
}

// dpopLedger records spent proofs in the store. Its writes do not wait
// for stable storage where the store allows it (store.NoSyncUpdater): a
// database crash may forget the last moments' proofs, which a thief
// could then replay within their minute; a durable commit on every DPoP
// request would cost far more.
type dpopLedger struct{ st store.Store }

func (l dpopLedger) Spend(ctx context.Context, key string, until time.Time) error {
	update := l.st.Update
	if ns, ok := l.st.(store.NoSyncUpdater); ok {
		update = ns.UpdateNoSync
	}
	err := update(ctx, func(tx store.Tx) error { return dpopIn(tx).spend(key, until) })
	if errors.Is(err, store.ErrAlreadyExists) {
		return dpop.ErrReplayed
	}
	return err
}

// spendProof refuses a replayed proof; nil for none. A proof the shared
// replay record cannot take is temporarily_unavailable: it might have
// been used at another instance.
func spendProof(ctx context.Context, p *dpop.Proof) error {
	if p == nil {
		return nil
	}
	return proofError(p.Use(ctx))
}

// jktOf is the thumbprint of the proof's key, "" for none.
func jktOf(p *dpop.Proof) string {
	if p == nil {
		return ""
	}
	return p.JKT
}

func proofError(err error) error {
	var e *dpop.Error
	switch {
	case errors.As(err, &e):
		return &Error{Code: e.Code, Description: e.Description, Status: http.StatusBadRequest}
	case errors.Is(err, dpop.ErrUnavailable):
		return ErrTemporarilyUnavailable.WithDescription("the DPoP proof cannot be checked for replay at the moment; retry later").Wrap(err)
	}
	return err
}

// checkBinding enforces DPoP at the issuer's own protected resource
// (UserInfo), as the gateway does at its (RFC 9449 section 7): a
// cnf.jkt-bound token only with the DPoP scheme and a valid proof for
// this request, signed by the bound key; the DPoP scheme only with a
// bound token. A stolen bound token must not read the user's claims.
// An error that is not a *dpop.Error wraps dpop.ErrUnavailable.
func (i *Issuer) checkBinding(w http.ResponseWriter, r *http.Request, endpoint string, cl *accesstoken.Claims, token string, dpopScheme bool) error {
	if n := i.proofs.Nonces(); n != nil {
		w.Header().Set(dpop.NonceHeader, n.Current(i.now()))
	}
	return i.proofs.Bound(r.Context(), r.Header.Values(dpop.Header), dpop.Request{Method: r.Method, URI: i.endpoint(endpoint), AccessToken: token,
		Holder: dpop.HolderOf(i.URL(), cmp.Or(cl.PrincipalType, principalUser), cl.ClientID, cl.Subject)}, cl.BoundKey(), dpopScheme)
}

// dpopChallenge is a DPoP WWW-Authenticate value (RFC 9449 section 7.1),
// with e's error when not nil.
func dpopChallenge(e *dpop.Error) string {
	v := "DPoP "
	if e != nil {
		v += `error="` + e.Code + `", error_description="` + e.Description + `", `
	}
	return v + `algs="` + strings.Join(dpop.Algorithms(), " ") + `"`
}

// requireDPoP refuses a token request without a proof from a client
// registered with dpop_bound_access_tokens (RFC 9449 section 5.2).
func requireDPoP(c *Client, jkt string) error {
	if c.DPoPBoundAccessTokens && jkt == "" {
		return ErrInvalidDPoPProof.WithDescription("this client is registered with dpop_bound_access_tokens: a DPoP proof is required")
	}
	return nil
}

// possessed refuses a DPoP-bound token presented at the token endpoint
// (subject_token, actor_token, a bound ID-JAG), bound to the key whose
// thumbprint is bound, unless the request's proof is signed by that key:
// a grant must not turn a stolen bound token into one bound to the
// thief's key, or into a bearer token.
func possessed(bound, jkt string, what string) error {
	if bound != "" && bound != jkt {
		return ErrInvalidDPoPProof.WithDescription(what + " is DPoP-bound: the request needs a DPoP proof signed by its key")
	}
	return nil
}

// validJKT: a dpop_jkt is a base64url SHA-256 thumbprint.
func validJKT(s string) bool { return validS256Challenge(s) }
