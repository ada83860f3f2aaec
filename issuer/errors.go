package issuer

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Error is an OAuth 2.0 protocol error (RFC 6749 section 5.2 and friends).
type Error struct {
	Code        string // error
	Description string // error_description
	Status      int    // HTTP status for JSON answers; 400 when zero
	// RetryAfter, when positive, is sent as a Retry-After header (slowed
	// brute force).
	RetryAfter time.Duration
	Err        error // underlying cause, never shown to clients
}

func (e *Error) Error() string {
	if e.Description != "" {
		return e.Code + ": " + e.Description
	}
	return e.Code
}

func (e *Error) Unwrap() error { return e.Err }

// Is matches errors with the same Code, so errors.Is(err, ErrInvalidGrant)
// works for any description.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// WithDescription returns a copy with the description set.
func (e *Error) WithDescription(d string) *Error {
	c := *e
	c.Description = d
	return &c
}

// Wrap returns a copy carrying cause.
func (e *Error) Wrap(cause error) *Error {
	c := *e
	c.Err = cause
	return &c
}

// Protocol errors.
var (
	ErrInvalidRequest          = &Error{Code: "invalid_request", Status: http.StatusBadRequest}
	ErrInvalidClient           = &Error{Code: "invalid_client", Status: http.StatusUnauthorized}
	ErrInvalidGrant            = &Error{Code: "invalid_grant", Status: http.StatusBadRequest}
	ErrUnauthorizedClient      = &Error{Code: "unauthorized_client", Status: http.StatusBadRequest}
	ErrUnsupportedGrantType    = &Error{Code: "unsupported_grant_type", Status: http.StatusBadRequest}
	ErrUnsupportedResponseType = &Error{Code: "unsupported_response_type", Status: http.StatusBadRequest}
	ErrInvalidScope            = &Error{Code: "invalid_scope", Status: http.StatusBadRequest}
	ErrInvalidTarget           = &Error{Code: "invalid_target", Status: http.StatusBadRequest}
	ErrAccessDenied            = &Error{Code: "access_denied", Status: http.StatusForbidden}
	ErrServerError             = &Error{Code: "server_error", Status: http.StatusInternalServerError}
	ErrTemporarilyUnavailable  = &Error{Code: "temporarily_unavailable", Status: http.StatusServiceUnavailable}
	ErrInvalidRedirectURI      = &Error{Code: "invalid_redirect_uri", Status: http.StatusBadRequest}
	ErrInvalidClientMetadata   = &Error{Code: "invalid_client_metadata", Status: http.StatusBadRequest}
	ErrInvalidToken            = &Error{Code: "invalid_token", Status: http.StatusUnauthorized}
	ErrSlowDown                = &Error{Code: "slow_down", Status: http.StatusTooManyRequests}
)

// storeRetryAfter is the Retry-After of an answer the store could not
// give: conflicts clear at once, and a database that is away stays away
// for longer than a client should wait between tries.
const storeRetryAfter = time.Second

// storeBusy reports whether err is a store's that could not run a
// transaction now and wrote nothing: its database unreachable, conflicts
// past its retries, or the store closed under a request the server was
// still answering (Caddy cleans up a replaced configuration while its
// server finishes the requests it accepted; a reload to another bbolt
// file closes the old one). A retry may succeed.
func storeBusy(err error) bool {
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrClosed)
}

// protocolError is the protocol error to answer err with: err's *Error,
// except that a store that could not run a transaction now (storeBusy)
// is temporarily_unavailable, whatever wrapped it; any other error is
// server_error, without its text.
func protocolError(err error) *Error {
	var e *Error
	switch {
	case storeBusy(err):
		e := ErrTemporarilyUnavailable.WithDescription("the server's storage is busy or unreachable; retry later").Wrap(err)
		e.RetryAfter = storeRetryAfter
		return e
	case errors.As(err, &e):
		return e
	}
	return ErrServerError
}

// writeError answers with an RFC 6749 JSON error (see protocolError).
func writeError(w http.ResponseWriter, err error) {
	e := protocolError(err)
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	h := w.Header()
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Basic realm="token", charset="UTF-8"`)
	}
	switch {
	case e.RetryAfter > 0:
		h.Set("Retry-After", retryAfter(e.RetryAfter))
	case status == http.StatusServiceUnavailable:
		// A retry may get past every 503 (a key withdrawn while the
		// token was signed, a replay check that could not be made):
		// say when, as for a busy store.
		h.Set("Retry-After", retryAfter(storeRetryAfter))
	}
	body := map[string]string{"error": e.Code}
	if e.Description != "" {
		body["error_description"] = errorDescription(e.Description)
	}
	writeNoStoreJSON(w, status, body)
}

// errorDescription fits a description to RFC 6749's error_description
// syntax (%x20-21 / %x23-5B / %x5D-7E): double quotes become single
// ones, backslashes slashes, anything else outside it '?'. Descriptions
// may quote client input.
func errorDescription(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '"':
			return '\''
		case r == '\\':
			return '/'
		case r < 0x20 || r > 0x7e:
			return '?'
		}
		return r
	}, s)
}

// retryAfter is a Retry-After value: d in whole seconds, rounded up
// (without adding to d, which may be the largest Duration: a rate
// bucket's wait saturates).
func retryAfter(d time.Duration) string {
	s := d / time.Second
	if d%time.Second > 0 {
		s++
	}
	return strconv.FormatInt(int64(s), 10)
}
