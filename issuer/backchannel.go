package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"go.uber.org/zap"
)

// Reading and answering the back-channel endpoints (token, PAR,
// revocation, introspection, registration).

// maxFormBytes bounds back-channel request bodies.
const maxFormBytes = 64 << 10

// readForm reads a back-channel POST body: form-encoded, at most
// maxFormBytes, no parameter repeated (RFC 6749 section 3.2), scope no
// longer than at /authorize, and a parameter sent without a value left
// out, as if omitted (sections 3.1, 3.2): client_secret= from a public
// client is no secret. A repeat is refused even when one of its values
// is empty: readers that take the first value and readers that take the
// last would disagree on it.
func readForm(r *http.Request) (url.Values, error) {
	if r.Method != http.MethodPost {
		return nil, ErrInvalidRequest.WithDescription("POST required")
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, ErrInvalidRequest.WithDescription("body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxFormBytes))
	if err != nil {
		if bodyTooLarge(err) {
			return nil, (&Error{Code: "invalid_request", Status: http.StatusRequestEntityTooLarge}).WithDescription("request body too large")
		}
		return nil, ErrInvalidRequest.WithDescription("unreadable body").Wrap(err)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, ErrInvalidRequest.WithDescription("malformed form body")
	}
	for k, v := range vals {
		switch {
		case len(v) > 1 && k == "resource":
			return nil, errOneResource
		case len(v) > 1 && k == "audience":
			// RFC 8693 sections 2.1, 2.2.2: several audiences are a
			// target this server will not issue for, as resources are.
			return nil, ErrInvalidTarget.WithDescription("only one audience per request is supported")
		case len(v) > 1:
			return nil, ErrInvalidRequest.WithDescription(fmt.Sprintf("parameter %q is repeated", k))
		case k == "scope" && len(v[0]) > maxAuthorizeParam:
			// As at /authorize: parseScope compares each value with every
			// other, and a body's worth of them cost seconds of CPU (a
			// refused refresh spends nothing, so it could be sent again).
			return nil, ErrInvalidRequest.WithDescription("parameter scope is too long")
		case v[0] == "":
			delete(vals, k)
		}
	}
	return vals, nil
}

// bodyTooLarge reports whether err is a read of a body past a bound
// (http.MaxBytesReader, here or in a request_body in front).
func bodyTooLarge(err error) bool {
	_, ok := errors.AsType[*http.MaxBytesError](err)
	return ok
}

func writeNoStoreJSON(w http.ResponseWriter, status int, v any) {
	_ = writeJSON(w, status, "application/json", "no-store", v)
}

// writeJSON answers with v as JSON: every JSON answer of the issuer goes
// through here, so each carries nosniff (a browser never reads one as
// another type, whatever it reflects) and its cache rule. A no-store
// answer also carries the Pragma of RFC 6749 section 5.1, for HTTP/1.0
// caches.
func writeJSON(w http.ResponseWriter, status int, contentType, cacheControl string, v any) error {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", cacheControl)
	if cacheControl == "no-store" {
		h.Set("Pragma", "no-cache")
	}
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// writeErr logs unexpected errors (never protocol ones, which may carry
// client input) and answers with the OAuth error.
func (i *Issuer) writeErr(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		i.log.Error("request failed", zap.Error(err))
	}
	writeError(w, err)
}

func methodNotAllowed(w http.ResponseWriter, allow ...string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeError(w, &Error{Code: "invalid_request", Description: "method not allowed", Status: http.StatusMethodNotAllowed})
}
