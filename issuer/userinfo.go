package issuer

import (
	"errors"
	"net/http"
	"slices"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// handleUserinfo is the OpenID Connect UserInfo endpoint (Core 5.3). The
// access token comes from the Authorization header only, with the DPoP
// scheme and a proof when it is DPoP-bound (RFC 9449 section 7), and
// must carry openid; claims follow the granted profile and email scopes.
func (i *Issuer) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		methodNotAllowed(w, http.MethodGet, http.MethodPost)
		return
	}
	scheme, raw, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	raw = strings.TrimSpace(raw)
	dpopScheme := strings.EqualFold(scheme, "DPoP")
	// A failure of the token is told in the challenge of the scheme it
	// came with (RFC 9449 section 7.1), where a DPoP client reads it.
	challenge := func(status int, code, desc, extra string) {
		v, d := "Bearer", dpopChallenge(nil)
		switch {
		case code != "" && dpopScheme:
			d = dpopChallenge(&dpop.Error{Code: code, Description: desc}) + extra
		case code != "":
			v += ` error="` + code + `", error_description="` + desc + `"` + extra
		}
		w.Header().Set("WWW-Authenticate", v)
		w.Header().Add("WWW-Authenticate", d)
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, http.StatusText(status), status)
	}
	if !ok || !(strings.EqualFold(scheme, "Bearer") || dpopScheme) || raw == "" || len(r.Header.Values("Authorization")) > 1 {
		challenge(http.StatusUnauthorized, "", "", "")
		return
	}
	ctx := r.Context()
	cl, err := i.verifyAccessToken(ctx, raw)
	if storeBusy(err) {
		// Not invalid_token: a client would drop a token that a retry
		// may find good.
		writeError(w, err)
		return
	}
	if err != nil {
		challenge(http.StatusUnauthorized, "invalid_token", "the access token is invalid, expired or revoked", "")
		return
	}
	if err := i.checkBinding(w, r, pathUserinfo, cl, raw, dpopScheme); err != nil {
		var e *dpop.Error
		if !errors.As(err, &e) {
			i.writeErr(w, proofError(err))
			return
		}
		w.Header().Set("WWW-Authenticate", dpopChallenge(e))
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, http.StatusText(http.StatusUnauthorized), http.StatusUnauthorized)
		return
	}
	scopes := strings.Fields(cl.Scope)
	if !slices.Contains(scopes, scopeOpenID) {
		challenge(http.StatusForbidden, "insufficient_scope", "the openid scope is required", `, scope="openid"`)
		return
	}
	u, err := i.dir.lookupUser(ctx, cl.Subject)
	if storeBusy(err) {
		writeError(w, err)
		return
	}
	if cl.PrincipalType != principalUser || err != nil {
		challenge(http.StatusUnauthorized, "invalid_token", "the token is not of a current user", "")
		return
	}
	out := map[string]any{"sub": u.Username}
	if slices.Contains(scopes, scopeProfile) {
		out["preferred_username"] = u.Username
		if u.Name != "" {
			out["name"] = u.Name
		}
	}
	if slices.Contains(scopes, scopeEmail) && u.Email != "" {
		out["email"] = u.Email
	}
	// The delegation is part of who is asking (unlike peers that drop it).
	out["principal_type"] = principalUser
	if cl.Actor != nil {
		out["act"] = cl.Actor
	}
	writeNoStoreJSON(w, http.StatusOK, out)
}
