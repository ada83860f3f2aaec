// Package mcpparse reads MCP JSON-RPC traffic strictly.
//
// It refuses anything two parsers could read differently: invalid JSON or
// UTF-8, duplicate object names, names that differ only in case where a
// case-insensitive decoder would merge them, excessive nesting and trailing
// data. Envelope classification never decodes tool arguments it does not
// need. All functions are pure over bytes and readers.
//
// CONTRACT (written before the implementation; the gateway codes against it):
// exported names and signatures below are fixed; add, do not change.
package mcpparse

import "errors"

// Kind is the kind of a JSON-RPC message.
type Kind uint8

const (
	KindRequest      Kind = iota + 1 // has method and id
	KindNotification                 // has method, no id
	KindResponse                     // has result or error, and id
)

// Message is the envelope of one JSON-RPC message.
type Message struct {
	Kind   Kind
	Method string // "" for responses
	// ID is the raw JSON of the id member (a string or number literal),
	// nil when absent.
	ID []byte
	// Name is params.name (tools/call, prompts/get) when present and a
	// string. For tasks/* methods it is params.taskId (see spec).
	Name string
	// URI is params.uri (resources/read, resources/subscribe, ...).
	URI string
	// HasName / HasURI tell an absent member from an empty string.
	HasName, HasURI bool
	// Raw is the exact bytes of this message within the body.
	Raw []byte
}

// Limits bounds what Parse accepts.
type Limits struct {
	MaxDepth     int // nesting depth of objects/arrays; 0 = DefaultMaxDepth
	MaxBatch     int // elements in a batch; 0 = DefaultMaxBatch
	AllowBatches bool
}

const (
	DefaultMaxDepth = 64
	DefaultMaxBatch = 100
)

// Errors. Parse wraps one of them; callers use errors.Is.
var (
	ErrInvalidJSON   = errors.New("mcpparse: invalid JSON")          // syntax, UTF-8, trailing data
	ErrDuplicateName = errors.New("mcpparse: duplicate object name") // incl. case-insensitive duplicates
	ErrTooDeep       = errors.New("mcpparse: nesting too deep")
	ErrBatch         = errors.New("mcpparse: batch not allowed") // or empty / too large
	ErrNotJSONRPC    = errors.New("mcpparse: not a JSON-RPC 2.0 message")
)

// Parse reads a request body: one message, or (if lim.AllowBatches) a
// non-empty array of messages. It validates the entire body (including
// params and arguments, for duplicates/case-variants/depth/UTF-8) but only
// extracts the envelope fields of Message. batch reports whether the body
// was an array.
//
//	func Parse(body []byte, lim Limits) (msgs []Message, batch bool, err error)

// Header checks for the 2026-07-28 transport.
//
// DecodeHeaderValue decodes an Mcp-Name / Mcp-Method header value, including
// the "=?base64?<b64>?=" form for non-ASCII values; it refuses malformed
// encodings and control characters.
//
//	func DecodeHeaderValue(v string) (string, error)
//
// CheckHeaders compares the Mcp-Method and Mcp-Name headers of an HTTP
// request with the message. It returns nil when they agree, or a
// *HeaderMismatchError. For tools/call, resources/read and prompts/get,
// Mcp-Name is required (params.name or params.uri); for tasks/* it is the
// task id. A missing Mcp-Method is a mismatch.
//
//	func CheckHeaders(h http.Header, m Message) error
//
// HeaderMismatchError carries what disagreed; CodeHeaderMismatch is the
// JSON-RPC error code (-32020) answered with it.
//
//	type HeaderMismatchError struct{ Header, Header Value, Body Value string }
//	const CodeHeaderMismatch = -32020

// Server-sent events.
//
// SSE: a Reader returns events one by one from an upstream text/event-stream
// (fields event, data (multi-line joined with "\n"), id, retry; comments
// kept so they can be re-emitted), and WriteEvent writes one back in
// canonical form. Neither buffers more than one event (bounded by a
// max event size).
//
//	type Event struct { Event, ID, Data string; Retry string; Comment string }
//	func NewReader(r io.Reader, maxEvent int) *Reader
//	func (r *Reader) Next() (Event, error)   // io.EOF at the end
//	func WriteEvent(w io.Writer, ev Event) error
//
// Response rewriting.
//
// FilterToolsList takes one JSON-RPC response message (a tools/list result)
// and returns it with result.tools reduced to those for which allow(name)
// is true, every other member byte-for-byte unchanged where possible. It
// returns the input unchanged if the message is an error response.
//
//	func FilterToolsList(msg []byte, allow func(name string) bool) ([]byte, error)
//
// ResponseID returns the raw id of a response message (to match it with the
// request that asked for tools/list).
//
//	func ResponseID(msg []byte) ([]byte, error)
