package issuer

import "net/http"

// cors answers CORS preflights and marks responses readable from any
// origin, for browser-based MCP clients on the back-channel endpoints
// (metadata, JWKS, registration, token, PAR, revocation, introspection,
// userinfo). A wildcard origin is safe there: none of them uses cookies,
// and browsers never send credentials to a wildcard-origin response.
// The cookie-based pages (authorize, login, consent) are not wrapped.
func cors(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		if r.Method == http.MethodOptions {
			hd.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			// Authorization is never covered by a wildcard; list it.
			hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version, DPoP")
			hd.Set("Access-Control-Max-Age", "86400")
			hd.Set("Allow", "GET, POST, OPTIONS")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		hd.Set("Access-Control-Expose-Headers", "WWW-Authenticate, Retry-After, DPoP-Nonce")
		h(w, r)
	}
}
