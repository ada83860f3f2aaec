package issuer

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
)

// csrfField is the form field that carries the session's CSRF token.
const csrfField = "csrf_token"

// checkCSRF verifies that a form POST comes from one of the issuer's own
// pages: the form must echo the CSRF token of the browser's session (a
// synchronizer token; the cookie is HttpOnly and the token is only ever in
// our pages), and the browser's own cross-origin signals, when sent, must
// agree. r.ParseForm must have been called.
func (ss *sessions) checkCSRF(r *http.Request, s *session) bool {
	if s == nil || s.CSRF == "" {
		return false
	}
	// Browsers send "Origin: null" under some referrer policies even for
	// same-origin posts; accept it only when Fetch Metadata vouches for
	// the same origin. An origin's scheme and host are case-insensitive
	// in ASCII only: browsers send them in lower case, whatever case the
	// issuer URL has (webOrigin lowers it), and strings.EqualFold would
	// take "ſ" for "s".
	if !ss.fromOwnPage(r) {
		return false
	}
	vals := r.PostForm[csrfField]
	if len(vals) != 1 {
		return false
	}
	token := []byte(s.CSRF)
	return subtle.ConstantTimeCompare(unmaskCSRF(vals[0]), token) == 1 ||
		subtle.ConstantTimeCompare([]byte(vals[0]), token) == 1
}

// fromOwnPage reports whether the browser's own cross-origin signals,
// when sent, say a request comes from a page of the issuer's origin.
func (ss *sessions) fromOwnPage(r *http.Request) bool {
	site := r.Header.Get("Sec-Fetch-Site")
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, ss.origin) && (o != "null" || site != "same-origin") {
		return false
	}
	switch site {
	case "", "same-origin", "none":
		return true
	}
	return false
}

// maskCSRF is the session's CSRF token as one page carries it: a fresh
// random pad, then the token XORed with it, in base64url. The token
// stays the session's, but no two pages hold the same bytes for it, so
// an answer compressed next to text an attacker chooses (a
// self-registered client's name on the consent page; `encode` in a
// `route` before mcp_issuer, or a CDN in front) does not give the token
// away by its length (BREACH). checkCSRF takes the token itself too:
// 56f3eb5's pages carry it so, and whoever holds it can mask it.
func maskCSRF(token string) string {
	b := make([]byte, 2*len(token))
	_, _ = rand.Read(b[:len(token)]) // never fails (crypto/rand)
	for i := 0; i < len(token); i++ {
		b[len(token)+i] = b[i] ^ token[i]
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// unmaskCSRF is the token a maskCSRF value carries, nil for a value
// that cannot be one. (The token itself, unmasked, is taken too: whoever
// holds it can mask it.)
func unmaskCSRF(v string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) == 0 || len(b)%2 != 0 {
		return nil
	}
	n := len(b) / 2
	for i := 0; i < n; i++ {
		b[n+i] ^= b[i]
	}
	return b[n:]
}

// sameOrigin reports whether an Origin header is origin (webOrigin's)
// up to ASCII case.
func sameOrigin(header, origin string) bool {
	lower, ascii := asciiLower(header)
	return ascii && lower == origin
}

// webOrigin is the web origin (scheme://host[:port]) of u, its host in
// ASCII lower case.
func webOrigin(u *url.URL) string {
	h, port := u.Hostname(), u.Port()
	h, _ = asciiLower(h) // a host past ASCII never matches what a browser sends
	if defaultPort(u.Scheme, port) {
		port = ""
	}
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	if port != "" {
		h += ":" + port
	}
	return u.Scheme + "://" + h
}

// defaultPort reports whether port is scheme's default, the same as none.
func defaultPort(scheme, port string) bool {
	return (scheme == "https" && port == "443") || (scheme == "http" && port == "80")
}

// postedForm reads the form POST of one of the issuer's pages and checks
// that it comes from the browser's own session (checkCSRF); needUser also
// requires a signed-in session. On failure it has answered the request
// and ok is false.
func (i *Issuer) postedForm(w http.ResponseWriter, r *http.Request, needUser bool) (s *session, sid string, ok bool) {
	s, sid, ok = i.readForm(w, r)
	if !ok {
		return nil, "", false
	}
	if !i.sessions.checkCSRF(r, s) || (needUser && s.User == "") {
		i.pages.csrfPage(w)
		return nil, "", false
	}
	return s, sid, true
}

// readForm reads the form POST of one of the issuer's pages and the
// browser's session (nil for none), unchecked. On failure it has
// answered the request and ok is false.
func (i *Issuer) readForm(w http.ResponseWriter, r *http.Request) (s *session, sid string, ok bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxPageFormBytes)
	if err := r.ParseForm(); err != nil {
		i.pages.unreadableForm(w, err, "The form could not be read.")
		return nil, "", false
	}
	s, sid, err := i.sessions.current(r)
	if err != nil {
		i.pages.serverErrorPage(w, err)
		return nil, "", false
	}
	return s, sid, true
}
