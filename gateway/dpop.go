package gateway

import (
	"errors"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// dpopHeaderKey is dpop.Header as net/http stores it (canonical form),
// for a lookup without canonicalizing the name on every request.
var dpopHeaderKey = http.CanonicalHeaderKey(dpop.Header)

// dpopAlgs is the algs parameter of DPoP challenges (RFC 9449 §7.1).
var dpopAlgs = strings.Join(dpop.Algorithms(), " ")

// newProofs builds the proof verifier; nonces are keyed by the session
// key (domain-separated inside dpop.Nonces), so gateways sharing it
// accept each other's nonces.
func newProofs(cfg *Config) *dpop.Verifier {
	o := dpop.Options{Now: cfg.Now, Replay: cfg.DPoPReplay, Ledger: cfg.DPoPLedger}
	if cfg.DPoPNonce {
		o.Nonces = dpop.NewNonces(cfg.SessionKey, 0)
	}
	return dpop.New(o)
}

// requestURI is the htu a proof must name: the resource URL's scheme and
// host (what the client addressed, whatever a TLS-terminating proxy in
// front forwarded) and the request's path.
func (g *Gateway) requestURI(r *http.Request) string {
	return g.origin + r.URL.EscapedPath()
}

// checkBinding enforces DPoP on an authenticated request (RFC 9449 §7):
// a cnf.jkt-bound token only with the DPoP scheme and a valid proof for
// this request signed by the bound key; the DPoP scheme only with a bound
// token; with RequireDPoP, bound tokens only, whatever the scheme (an
// unbound one sent as DPoP must not be told to use Bearer, refused here).
func (g *Gateway) checkBinding(r *http.Request, p *principal, token string, scheme string) *authError {
	if p.jkt == "" && g.cfg.RequireDPoP {
		return &authError{status: http.StatusUnauthorized, code: dpop.CodeInvalidToken, dpop: true,
			desc: "this resource requires DPoP-bound access tokens"}
	}
	// The proof and the request URI are built only when Bound reads them
	// (a Bearer request would pay for both on every call).
	var proofs []string
	var req dpop.Request
	if dpop.ProofChecked(p.jkt, scheme == schemeDPoP) {
		proofs = r.Header[dpopHeaderKey]
		req = dpop.Request{Method: r.Method, URI: g.requestURI(r), AccessToken: token,
			Holder: dpop.HolderOf(p.issuer, principalKind(p), p.clientID, p.subject)}
	}
	err := g.proofs.Bound(r.Context(), proofs, req, p.jkt, scheme == schemeDPoP)
	if err == nil {
		return nil
	}
	return g.bindingError(err)
}

// bindingError is the answer to Bound's error (apart, so that the
// successful path does not allocate errors.As's target).
func (g *Gateway) bindingError(err error) *authError {
	var e *dpop.Error
	if errors.As(err, &e) {
		return &authError{status: http.StatusUnauthorized, code: e.Code, desc: e.Description, dpop: true}
	}
	g.log.Warn("DPoP replay check failed", zap.Error(err))
	return errReplayUnknown
}

// dpopChallenge is the DPoP challenge of a 401: with the error when the
// failure concerns a DPoP request, always with algs and the resource
// metadata, and the scopes as in the Bearer challenge (with require_dpop
// this one is alone).
func (g *Gateway) dpopChallenge(a *authError) string {
	var b strings.Builder
	b.WriteString("DPoP ")
	if a.dpop && a.code != "" {
		b.WriteString(`error="` + a.code + `", `)
		if a.desc != "" {
			b.WriteString(`error_description="` + a.desc + `", `)
		}
	}
	b.WriteString(`algs="` + dpopAlgs + `", resource_metadata="` + g.metadataURL + `"`)
	if a.status == http.StatusUnauthorized && len(g.policy.base) > 0 {
		b.WriteString(`, scope="` + strings.Join(g.policy.base, " ") + `"`)
	}
	return b.String()
}
