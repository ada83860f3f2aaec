package issuer

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// tokenOutsideHeader names what makes r carry an access token other than
// in its one Authorization header: two such headers, or access_token in
// the query or a form body (RFC 6750 sections 2.2 and 2.3, which this
// endpoint does not read); "" for none. A form body that cannot be read
// is named too, with status 413 when it passed a bound (this endpoint's,
// or a request_body max_size in front), as the back-channel endpoints
// answer it; status is 400 otherwise.
func tokenOutsideHeader(w http.ResponseWriter, r *http.Request) (status int, msg string) {
	if len(r.Header.Values("Authorization")) > 1 {
		return http.StatusBadRequest, "more than one Authorization header"
	}
	if namesAccessToken(r.URL.RawQuery) {
		return http.StatusBadRequest, "access tokens are accepted in the Authorization header only"
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); r.Method != http.MethodPost || mt != "application/x-www-form-urlencoded" {
		return 0, ""
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPageFormBytes))
	if bodyTooLarge(err) {
		return http.StatusRequestEntityTooLarge, "request body too large"
	}
	if err != nil {
		return http.StatusBadRequest, "the request body could not be read"
	}
	if namesAccessToken(string(body)) {
		return http.StatusBadRequest, "access tokens are accepted in the Authorization header only"
	}
	return 0, ""
}

// namesAccessToken reports whether the query or form body q has an
// access_token pair, with ";" read as a separator too: Go skips a pair
// holding one ("x=1;access_token=…" and "access_token=…;x=1" name none to
// it), where servers and proxies that split on it (older Go, Python
// before 3.9.2, Rack) read the token, and the access log holds it all
// the same. Only the names are read: Go skips a pair whose value holds
// a bad escape too ("access_token=…%"), which logs the token as well.
func namesAccessToken(q string) bool {
	for pair := range strings.FieldsFuncSeq(q, func(r rune) bool { return r == '&' || r == ';' }) {
		name, _, _ := strings.Cut(pair, "=")
		if n, err := url.QueryUnescape(name); err == nil && n == "access_token" {
			return true
		}
	}
	return false
}

// handleUserinfo is the OpenID Connect UserInfo endpoint (Core 5.3). The
// access token comes from the Authorization header only, with the DPoP
// scheme and a proof when it is DPoP-bound (RFC 9449 section 7), and
// must carry openid; claims follow the granted profile and email scopes.
// A request with a token elsewhere too (tokenOutsideHeader) is refused.
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
	// A token sent another way too, or in two headers, is a malformed
	// request (RFC 6750 section 3.1), as at the gateway: served beside
	// the header, it would keep landing in logs unnoticed.
	if status, msg := tokenOutsideHeader(w, r); msg != "" {
		challenge(status, "invalid_request", msg, "")
		return
	}
	if !ok || !(strings.EqualFold(scheme, "Bearer") || dpopScheme) || raw == "" {
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
