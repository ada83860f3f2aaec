package issuer

import "net/http"

// cors answers CORS preflights and marks responses readable from any
// origin, for browser-based MCP clients on the back-channel endpoints
// (metadata, JWKS, registration, token, PAR, revocation, introspection,
// userinfo). A wildcard origin is safe there: none of them uses cookies,
// and browsers never send credentials to a wildcard-origin response.
// The cookie-based pages (authorize, login, consent) are not wrapped.
// allow is what the handler serves, the Allow of its 405 (RFC 9110
// section 10.2.1: the methods the target resource supports); the
// preflight's Allow is it and OPTIONS.
func cors(h http.HandlerFunc, allow string) http.HandlerFunc {
	allow += ", OPTIONS"
	return func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		if r.Method == http.MethodOptions {
			hd.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
			// Authorization is never covered by a wildcard; list it.
			hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, MCP-Protocol-Version, DPoP")
			hd.Set("Access-Control-Max-Age", "86400")
			hd.Set("Allow", allow)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		hd.Set("Access-Control-Expose-Headers", "WWW-Authenticate, Retry-After, DPoP-Nonce")
		h(w, r)
	}
}

// The methods of the back-channel endpoints, as their 405s list them.
const (
	allowPost = "POST"      // token, PAR, registration, revocation, introspection
	allowGet  = "GET, HEAD" // metadata, JWKS
)
