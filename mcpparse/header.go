package mcpparse

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// CodeHeaderMismatch is the JSON-RPC error code (HeaderMismatch, 2026-07-28)
// answered, with HTTP 400, when request headers and body disagree.
const CodeHeaderMismatch = -32020

// The 2026-07-28 Streamable HTTP request metadata headers, in canonical
// form (this package reads them from the header map directly, as
// http.Header.Values would after canonicalizing its argument).
const (
	HeaderProtocolVersion = "Mcp-Protocol-Version"
	HeaderMethod          = "Mcp-Method"
	HeaderName            = "Mcp-Name"
)

// HeaderRevision is the first protocol revision whose requests mirror body
// fields into headers.
const HeaderRevision = "2026-07-28"

// The sentinel around a Base64-encoded header value; case-sensitive.
const (
	base64Prefix = "=?base64?"
	base64Suffix = "?="
)

// ErrMalformedHeader is wrapped by DecodeHeaderValue's errors.
var ErrMalformedHeader = errors.New("mcpparse: malformed header value")

// ErrMissingProtocolVersion is CheckHeaders' error for a request without
// params._meta["io.modelcontextprotocol/protocolVersion"], or without
// _meta at all. 2026-07-28 makes that field required and a request
// without it malformed: invalid params (-32602, HTTP 400), not a header
// mismatch, since there is no body value to compare. It wraps
// ErrInvalidParams.
var ErrMissingProtocolVersion error = &subError{"mcpparse: request params._meta has no " + metaProtocolVersion, ErrInvalidParams}

// DecodeHeaderValue decodes an Mcp-Name (or Mcp-Param-*) header value,
// including the "=?base64?<b64>?=" form for values that are not plain
// ASCII. It refuses what a client may not send as a plain value: bytes
// outside visible ASCII, space and tab (control characters, non-ASCII),
// leading or trailing whitespace, and malformed encodings (non-canonical
// or unpadded Base64, a decoded value that is not UTF-8). A decoded value
// may contain any character, newlines included: that is what the encoding
// is for.
func DecodeHeaderValue(v string) (string, error) {
	if err := checkPlain(v); err != nil {
		return "", err
	}
	if !strings.HasPrefix(v, base64Prefix) || !strings.HasSuffix(v, base64Suffix) {
		return v, nil
	}
	if len(v) < len(base64Prefix)+len(base64Suffix) {
		return "", fmt.Errorf("%w: truncated base64 sentinel", ErrMalformedHeader)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(v[len(base64Prefix) : len(v)-len(base64Suffix)])
	if err != nil {
		return "", fmt.Errorf("%w: bad base64", ErrMalformedHeader)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%w: base64 value is not UTF-8", ErrMalformedHeader)
	}
	return string(b), nil
}

// checkPlain accepts an RFC 9110 field value as a client must send it:
// visible ASCII, space and tab, without leading or trailing whitespace.
func checkPlain(v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c > 0x7e {
			return fmt.Errorf("%w: byte 0x%02x at %d", ErrMalformedHeader, c, i)
		}
	}
	if v != strings.Trim(v, " \t") {
		return fmt.Errorf("%w: leading or trailing whitespace", ErrMalformedHeader)
	}
	return nil
}

// HeaderMismatchError carries what disagreed; CodeHeaderMismatch is the
// JSON-RPC error code answered with it.
type HeaderMismatchError struct {
	Header      string // canonical header name
	HeaderValue string // as received; "" when missing
	BodyValue   string // what the body says; "" when it says nothing
	// Reason is "missing", "repeated", "malformed" or "mismatch".
	Reason string
}

func (e *HeaderMismatchError) Error() string {
	switch e.Reason {
	case "missing":
		return fmt.Sprintf("mcpparse: header mismatch: %s header is missing", e.Header)
	case "repeated":
		return fmt.Sprintf("mcpparse: header mismatch: %s header is repeated", e.Header)
	case "malformed":
		return fmt.Sprintf("mcpparse: header mismatch: %s header value %q is malformed", e.Header, e.HeaderValue)
	}
	return fmt.Sprintf("mcpparse: header mismatch: %s header value %q does not match body value %q",
		e.Header, e.HeaderValue, e.BodyValue)
}

// NeedsHeaderCheck reports whether a request must pass CheckHeaders: its
// MCP-Protocol-Version is HeaderRevision or one that sorts after it (an
// unknown later revision included), or one of its messages carries a
// _meta protocol version, which only such revisions define. The second
// case keeps a client from skipping the checks by omitting or downgrading
// the header.
func NeedsHeaderCheck(h http.Header, msgs []Message) bool {
	for _, v := range h[HeaderProtocolVersion] {
		if v >= HeaderRevision {
			return true
		}
	}
	for _, m := range msgs {
		if m.ProtocolVersion != "" {
			return true
		}
	}
	return false
}

// CheckHeaders compares the Mcp-Method and Mcp-Name headers of an HTTP
// request with the message. It returns nil when they agree,
// ErrMissingProtocolVersion for a request whose body has no protocol
// version to compare, or a *HeaderMismatchError. A missing Mcp-Method is
// a mismatch.
//
// It applies the 2026-07-28 rules (see NeedsHeaderCheck for when):
// MCP-Protocol-Version is required and must equal the message's _meta
// protocol version (which every request must carry, an empty string
// counting as none; a notification only if it carries one); Mcp-Method is
// required for every message and compared as is (the spec allows the
// Base64 form for Mcp-Name only), so a response never passes, clients may
// not POST responses in this revision; Mcp-Name is decoded with
// DecodeHeaderValue, required where the spec mirrors a target into it
// (params.name of tools/call and prompts/get, params.uri of
// resources/read, params.taskId of the Tasks extension's tasks/get,
// tasks/update and tasks/cancel), and refused on every other method, since
// the body cannot agree with it. Each header must appear once.
func CheckHeaders(h http.Header, m Message) error {
	method, err := single(h, HeaderMethod, m.Method)
	if err != nil {
		return err
	}
	if checkPlain(method) != nil {
		return &HeaderMismatchError{Header: HeaderMethod, HeaderValue: method, BodyValue: m.Method, Reason: "malformed"}
	}
	if m.Kind == KindResponse || method != m.Method {
		return &HeaderMismatchError{Header: HeaderMethod, HeaderValue: method, BodyValue: m.Method, Reason: "mismatch"}
	}

	version, err := single(h, HeaderProtocolVersion, m.ProtocolVersion)
	if err != nil {
		return err
	}
	if checkPlain(version) != nil {
		return &HeaderMismatchError{Header: HeaderProtocolVersion, HeaderValue: version, BodyValue: m.ProtocolVersion, Reason: "malformed"}
	}
	if m.Kind == KindRequest && m.ProtocolVersion == "" {
		return ErrMissingProtocolVersion
	}
	if m.ProtocolVersion != "" && version != m.ProtocolVersion {
		return &HeaderMismatchError{Header: HeaderProtocolVersion, HeaderValue: version, BodyValue: m.ProtocolVersion, Reason: "mismatch"}
	}

	t := targetOf(m.Method)
	body := m.Name
	switch {
	case !t.header:
		body = ""
		if len(h[HeaderName]) == 0 {
			return nil
		}
	case t.src == srcURI:
		body = m.URI
	}
	raw, err := single(h, HeaderName, body)
	if err != nil {
		return err
	}
	name, err := DecodeHeaderValue(raw)
	if err != nil {
		return &HeaderMismatchError{Header: HeaderName, HeaderValue: raw, BodyValue: body, Reason: "malformed"}
	}
	if !t.header || name != body {
		return &HeaderMismatchError{Header: HeaderName, HeaderValue: raw, BodyValue: body, Reason: "mismatch"}
	}
	return nil
}

// single returns the one value of a header that must appear exactly once.
func single(h http.Header, name, body string) (string, error) {
	switch vs := h[name]; len(vs) {
	case 0:
		return "", &HeaderMismatchError{Header: name, BodyValue: body, Reason: "missing"}
	case 1:
		return vs[0], nil
	default:
		return "", &HeaderMismatchError{Header: name, HeaderValue: vs[0], BodyValue: body, Reason: "repeated"}
	}
}
