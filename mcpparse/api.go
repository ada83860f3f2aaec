// Package mcpparse reads MCP JSON-RPC traffic strictly.
//
// It refuses anything two parsers could read differently: invalid JSON or
// UTF-8, duplicate object names, names that differ only in case where a
// case-insensitive decoder would merge them, excessive nesting and trailing
// data. Envelope classification never decodes tool arguments it does not
// need. All functions are pure over bytes and readers.
//
// What is read:
//
//   - [Parse]: a request body, one message or a batch, into [Message]
//     envelopes (kind, method, id, params.name / params.uri / params.taskId,
//     the _meta protocol version, the raw params.arguments); a
//     [ParamsError] carries the id of a request refused for its params.
//   - [ParsePointer], [Pointer.Lookup]: a value inside the arguments, by
//     RFC 6901 pointer, without parsing the body again.
//   - [CheckHeaders], [DecodeHeaderValue], [NeedsHeaderCheck]: the
//     2026-07-28 Streamable HTTP request metadata headers against the body,
//     and the body's required _meta protocol version.
//   - [Reader], [WriteEvent], [CopyEvent]: server-sent event streams,
//     event by event.
//   - [FilterToolsList], [FilterList], [MarkPrivate], [ResponseID], [SameID]: responses.
//
// Spec sources: docs/specification/2026-07-28/basic/transports/streamable-http.mdx
// (headers, Base64 sentinel, HeaderMismatch -32020) and basic/index.mdx
// (per-request _meta fields; a request missing a required one is invalid
// params, -32602) in modelcontextprotocol/modelcontextprotocol, and the
// Tasks extension
// (modelcontextprotocol/ext-tasks, specification/2026-07-28/tasks.md:
// Mcp-Name carries params.taskId for tasks/get, tasks/update, tasks/cancel;
// tasks/result is gone).
package mcpparse

import "errors"

// Kind is the kind of a JSON-RPC message.
type Kind uint8

const (
	KindRequest      Kind = iota + 1 // has method and id
	KindNotification                 // has method, no id
	KindResponse                     // has result or error, and id
)

// String returns "request", "notification" or "response".
func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResponse:
		return "response"
	}
	return "invalid"
}

// Message is the envelope of one JSON-RPC message.
type Message struct {
	Kind   Kind
	Method string // "" for responses
	// ID is the raw JSON of the id member (a string or number literal),
	// nil when absent. It is the literal null only in an error response
	// whose id is null. Numbers are always canonical integers (see Parse);
	// compare ids with SameID, not bytes.Equal, since equal strings may be
	// escaped differently.
	ID []byte
	// Name is params.name (tools/call, prompts/get) when present and a
	// string. For tasks/get, tasks/update, tasks/cancel and tasks/result
	// it is params.taskId (see spec).
	Name string
	// URI is params.uri (resources/read, resources/subscribe, ...).
	URI string
	// HasName / HasURI tell an absent member from an empty string. Parse
	// requires the target of most methods (see Parse), but not the
	// params.uri of resources/subscribe and resources/unsubscribe: a
	// caller that authorizes them by URI must refuse them when HasURI is
	// false.
	HasName, HasURI bool
	// ProtocolVersion is params._meta["io.modelcontextprotocol/protocolVersion"]
	// (2026-07-28: every request carries it), "" when absent.
	ProtocolVersion string
	// Arguments is params.arguments as written (tools/call, prompts/get),
	// a slice of the body, nil when absent. Its values can be read with
	// Pointer.Lookup without parsing the body again.
	Arguments []byte
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
	// ErrNoList: FilterList (FilterTools) was given a result without
	// the list's array (an answer to something other than the list
	// method); it wraps ErrNotJSONRPC too.
	ErrNoList = errors.New("mcpparse: result has no list array")

	// ErrProtoName: a member named __proto__ in a request. A JavaScript
	// server that copies an object with [[Set]] (Object.assign, a for-in
	// loop) makes that member's value the copy's prototype, whose
	// members then read as the copy's own wherever it has none: an
	// argument the gateway found absent (optional, absent) would be
	// present upstream.
	ErrProtoName = errors.New("mcpparse: a member named __proto__")

	// ErrInvalidParams reports params that an MCP method needs but that are
	// missing or of the wrong type (tools/call without a string
	// params.name, ...) and members that are case variants of the ones
	// read. It wraps ErrNotJSONRPC, so callers that only know that error still
	// classify it.
	ErrInvalidParams error = &subError{"mcpparse: invalid MCP params", ErrNotJSONRPC}
)

// ParamsError is Parse's error for a body that is a single request, valid
// JSON-RPC but for its params, so that the answer (invalid params) can
// carry the request's id. It wraps an ErrInvalidParams error.
type ParamsError struct {
	ID  []byte // the raw id of the request, a string or canonical integer
	Err error
}

func (e *ParamsError) Error() string { return e.Err.Error() }
func (e *ParamsError) Unwrap() error { return e.Err }

// subError is a sentinel error that also matches a broader sentinel.
type subError struct {
	msg    string
	parent error
}

func (e *subError) Error() string { return e.msg }
func (e *subError) Unwrap() error { return e.parent }
