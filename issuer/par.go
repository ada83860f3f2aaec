package issuer

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// requestURIPrefix is RFC 9126 section 2.2's request_uri form.
const requestURIPrefix = "urn:ietf:params:oauth:request_uri:"

type parResponse struct {
	RequestURI string `json:"request_uri"`
	ExpiresIn  int64  `json:"expires_in"`
}

// handlePAR is the RFC 9126 pushed authorization request endpoint. The
// request is validated now, as /authorize would, so errors reach the
// client directly; /authorize consumes the stored request once, for the
// same client only. Only the parameters /authorize reads are stored
// (parseAuthorize bounds their size), and pushes are rate limited
// (ratelimit.go): per client for confidential clients, per address for
// public clients, which anyone can push for. Over the limit: 429 (RFC
// 9126 section 2.3) with slow_down and Retry-After, as at registration.
func (i *Issuer) handlePAR(w http.ResponseWriter, r *http.Request) {
	req, ok := i.authenticatedPost(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	c, f := req.client, req.form // readForm left out empty parameters
	switch {
	case f.Has("request_uri"):
		i.writeErr(w, ErrInvalidRequest.WithDescription("request_uri is not allowed in a pushed authorization request"))
		return
	case f.Get("client_id") != "" && f.Get("client_id") != c.ID:
		i.writeErr(w, ErrInvalidRequest.WithDescription("client_id does not match the authenticated client"))
		return
	}
	// A proof binds the code as dpop_jkt does (RFC 9449 section 10.1).
	proof, err := i.dpopProof(w, r, pathPAR, c)
	switch jkt := jktOf(proof); {
	case err != nil:
		i.writeErr(w, err)
		return
	case jkt != "" && f.Has("dpop_jkt") && f.Get("dpop_jkt") != jkt:
		i.writeErr(w, ErrInvalidDPoPProof.WithDescription("dpop_jkt is not the thumbprint of the DPoP proof's key"))
		return
	case jkt != "":
		f.Set("dpop_jkt", jkt)
	}
	if _, _, msg := authorizeRedirectURI(c, f); msg != "" {
		i.writeErr(w, ErrInvalidRequest.WithDescription(msg))
		return
	}
	if _, err := i.parseAuthorize(ctx, c, f, true); err != nil {
		i.writeErr(w, err)
		return
	}

	// A confidential client's pushes are charged to the client. Anyone
	// may push for a public client's id (a CIMD app's), so its pushes are
	// charged to the address alone: a budget of the client's would let a
	// few addresses spend it and lock the app's other users out, as a
	// DPoP share per public client did (bddb9a9).
	type budget struct {
		l         *rateLimiter
		key, desc string
	}
	budgets := []budget{{i.parClients, c.ID, "too many pushed requests for this client; retry later"}}
	if c.Public() {
		budgets[0] = budget{i.anonWrites, clientAddr(r), "too many pushed requests from this address; retry later"}
	} else if req.assertion != nil && c.selfRegistered() {
		// Its assertion is stored until it expires (up to an hour), and
		// anyone can make such clients, each with a budget of its own:
		// the address pays too (spendAssertion).
		budgets = append(budgets, budget{i.anonWrites, clientAddr(r), "too many client assertions from this address; retry later"})
	}
	for _, b := range budgets {
		switch d, err := b.l.take(ctx, b.key); {
		case err != nil:
			i.writeErr(w, err)
			return
		case d > 0:
			i.writeErr(w, rateLimited(ErrSlowDown, d, b.desc))
			return
		}
	}
	if err := spendProof(ctx, proof); err != nil {
		i.writeErr(w, err)
		return
	}

	params := url.Values{}
	for _, k := range authorizeParams {
		if v, ok := f[k]; ok {
			params[k] = v
		}
	}
	params.Set("client_id", c.ID)
	tail, err := i.randomToken(32)
	if err != nil {
		i.writeErr(w, err)
		return
	}
	uri := requestURIPrefix + tail
	exp := i.now().Add(i.cfg.PARTTL)
	err = i.store.Update(ctx, func(tx store.Tx) error {
		if err := req.assertion.use(tx); err != nil {
			return err
		}
		return parIn(tx).create(uri, &parRequest{ClientID: c.ID, Params: params, ExpiresAt: exp})
	})
	switch {
	case errors.Is(err, errAssertionUsed):
		i.writeErr(w, i.assertionErr(ctx, req.assertion, err))
		return
	case errors.Is(err, store.ErrAlreadyExists):
		err = errors.New("request_uri collision")
	}
	if err != nil {
		i.writeErr(w, fmt.Errorf("store pushed request: %w", err))
		return
	}
	writeNoStoreJSON(w, http.StatusCreated, parResponse{RequestURI: uri, ExpiresIn: int64(i.cfg.PARTTL.Seconds())})
}
