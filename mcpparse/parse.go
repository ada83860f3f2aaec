package mcpparse

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// maxTokenizerDepth is jsontext's own nesting limit; deeper Limits would
// surface as a syntax error instead of ErrTooDeep.
const maxTokenizerDepth = 10000

// linearNames is how many names an object may hold before the case-variant
// check switches from pairwise comparison to a map, so that a huge object
// costs linear time and small ones cost no allocation.
const linearNames = 16

// metaProtocolVersion is the _meta key that carries a request's protocol
// version from 2026-07-28 on.
const metaProtocolVersion = "io.modelcontextprotocol/protocolVersion"

// Folded forms of the member names Parse reads. A member whose folded name
// equals one of these but which is not spelled exactly like it is refused:
// a case-insensitive decoder (encoding/json) would read it as that member.
var (
	envelopeNames = []string{"JSONRPC", "METHOD", "ID", "PARAMS", "RESULT", "ERROR"}
	paramNames    = []string{"NAME", "URI", "TASKID", "_META", "ARGUMENTS"}
	// snakeParamNames are params members that servers reading their
	// models' field names as well (the Python SDK's, which populate by
	// name) take for a member read here: TASK_ID for taskId, META for
	// _meta.
	snakeParamNames = []string{"TASK_ID", "META"}
	// looseParamNames are paramNames as looseVariant compares them.
	looseParamNames = []string{"NAME", "URI", "TASKID", "META", "ARGUMENTS"}
	metaNames       = []string{"IO.MODELCONTEXTPROTOCOL/PROTOCOLVERSION"}
	errorNames      = []string{"CODE", "MESSAGE"}
	toolNames       = []string{"NAME"}
	resultNames     = []string{"TOOLS", "CACHESCOPE"}
)

// Parse reads a request body: one message, or (if lim.AllowBatches) a
// non-empty array of messages. It validates the entire body (including
// params and arguments, for duplicates/case-variants/depth/UTF-8) but only
// extracts the envelope fields of Message. batch reports whether the body
// was an array.
//
// Beyond JSON-RPC 2.0 it refuses, so that the gateway and the upstream
// cannot disagree about a message: numeric ids that are not integers
// within ±(2^53-1) written canonically (an upstream may rewrite 1.0 as 1),
// params that are neither object nor array (null included), a target
// member that is present but not a string (params.name of tools/call and
// prompts/get, params.uri of resources/read, resources/subscribe and
// resources/unsubscribe, params.taskId of tasks/get, tasks/update,
// tasks/cancel and tasks/result), a missing target member except on the
// methods that 2026-07-28 removed (resources/subscribe,
// resources/unsubscribe, tasks/result: a request for one of them must
// reach the server to be answered "method not found", and callers that
// authorize by target refuse them without one, see Message.HasURI), and
// envelope, params and _meta members that are case variants of the
// members it reads (e.g. "Method" next to "method", or "Name" alone),
// and a member named __proto__ in any object (ErrProtoName).
//
// A body that is one request, valid but for its params, is refused with a
// *ParamsError carrying the request's id.
func Parse(body []byte, lim Limits) (msgs []Message, batch bool, err error) {
	if m, ok := parseSimple(body, depthLimit(lim.MaxDepth)); ok {
		return []Message{m}, false, nil
	}
	return parseFull(body, lim)
}

// parseFull is Parse's general reading, for every body.
func parseFull(body []byte, lim Limits) (msgs []Message, batch bool, err error) {
	maxBatch := lim.MaxBatch
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	p := newParser(body, lim.MaxDepth)
	defer p.free()
	p.request = true
	tok, err := p.read()
	if err != nil {
		return nil, false, err
	}
	switch tok.Kind() {
	case '{':
		m, err := p.message()
		if err != nil {
			if m.Kind == KindRequest && errors.Is(err, ErrInvalidParams) {
				// The request was read in full; a fault in the rest of
				// the body comes first.
				if err := p.end(); err != nil {
					return nil, false, err
				}
				return nil, false, &ParamsError{ID: m.ID, Err: err}
			}
			return nil, false, err
		}
		msgs = []Message{m}
	case '[':
		if !lim.AllowBatches {
			return nil, true, ErrBatch
		}
		if err := p.checkDepth(); err != nil {
			return nil, true, err
		}
		for {
			tok, err := p.read()
			if err != nil {
				return nil, true, err
			}
			if tok.Kind() == ']' {
				break
			}
			if tok.Kind() != '{' {
				return nil, true, fmt.Errorf("%w: batch element %d is not an object", ErrNotJSONRPC, len(msgs))
			}
			if len(msgs) == maxBatch {
				return nil, true, fmt.Errorf("%w: more than %d messages", ErrBatch, maxBatch)
			}
			m, err := p.message()
			if err != nil {
				return nil, true, fmt.Errorf("batch element %d: %w", len(msgs), err)
			}
			msgs = append(msgs, m)
		}
		if len(msgs) == 0 {
			return nil, true, fmt.Errorf("%w: empty batch", ErrBatch)
		}
		batch = true
	default:
		return nil, false, fmt.Errorf("%w: body is not an object", ErrNotJSONRPC)
	}
	if err := p.end(); err != nil {
		return nil, batch, err
	}
	return msgs, batch, nil
}

// parser walks one JSON text token by token. It checks nesting depth and
// duplicate names itself (exact duplicates and case variants alike, in
// next); jsontext checks syntax and UTF-8.
type parser struct {
	body     []byte
	src      bytes.Buffer // body, for dec: a bytes.Buffer is read in place
	dec      jsontext.Decoder
	maxDepth int

	// Folded names of the members of every open object, back to back in
	// fold, with their spans in names; an object's frame marks where its
	// own names start.
	fold  []byte
	names []span
	unq   []byte // scratch for unquoting escaped names

	// Room for the names of typical messages without further allocation.
	foldBuf  [512]byte
	namesBuf [48]span

	result *resultInfo // when set, message records where parts of result are
	// request: the body is a request's (Parse), whose objects may not
	// have a member named __proto__ (ErrProtoName).
	request bool
}

type span struct{ start, end int }

// frame is the state of one open object.
type frame struct {
	firstName int
	foldMark  int
	open      int64 // the input offset just past the object's '{'
	// reuse is where the folded name last read sits in parser.fold once
	// set holds the names: the next name overwrites it.
	reuse int
	// set holds the hashes of the folded names once there are more than
	// linearNames (nameHash), and the names are then kept neither in
	// parser.names nor in parser.fold: the names as strings beside their
	// spans took some 190 bytes a member, so that a 1 MiB body of short
	// names allocated 19 MB while it was read, and a token's
	// max_in_flight such bodies at once held a gigabyte.
	set map[uint64]struct{}
}

// nameHash hashes a big object's folded names, with a seed random per
// process, so no input can be made to collide (a variable for tests).
var nameHash = func(seed maphash.Seed) func([]byte) uint64 {
	return func(b []byte) uint64 { return maphash.Bytes(seed, b) }
}(maphash.MakeSeed())

// parsers recycles parsers: for a small message, setting up the tokenizer
// and its stacks costs about as much as the reading. A parser holds
// nothing from one use to the next (newParser sets every field, free
// drops every reference to the input).
var parsers = sync.Pool{New: func() any { return new(parser) }}

// maxPooledScratch bounds the name scratch a pooled parser keeps, so one
// huge message does not pin its names' memory.
const maxPooledScratch = 4 << 10

// depthLimit is the nesting limit Limits.MaxDepth sets.
func depthLimit(maxDepth int) int {
	if maxDepth <= 0 {
		return DefaultMaxDepth
	}
	return maxDepth
}

// newParser returns a parser for body; the caller must call free once
// done with it and with everything it returned that is not a copy.
func newParser(body []byte, maxDepth int) *parser {
	p := parsers.Get().(*parser)
	p.body = body
	p.maxDepth = min(depthLimit(maxDepth), maxTokenizerDepth)
	p.src = *bytes.NewBuffer(body)
	// Duplicate names are refused by next, which compares the folded
	// form of every name (equal names have equal folded forms): a second
	// record of every name in jsontext would only cost time.
	p.dec.Reset(&p.src, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(false))
	p.fold, p.names = p.foldBuf[:0], p.namesBuf[:0]
	p.unq = p.unq[:0]
	p.result = nil
	p.request = false
	return p
}

// free returns p to the pool.
func (p *parser) free() {
	p.body = nil
	p.src = bytes.Buffer{}
	p.dec.Reset(&p.src) // forgets the previous input
	p.result = nil
	p.fold, p.names = nil, nil
	if cap(p.unq) > maxPooledScratch {
		p.unq = nil
	}
	parsers.Put(p)
}

// read returns the next token.
func (p *parser) read() (jsontext.Token, error) {
	tok, err := p.dec.ReadToken()
	if err != nil {
		return tok, p.jsonErr(err)
	}
	return tok, nil
}

// expect reads the next token, which must be of kind; otherwise the error
// wraps sentinel and says what was wrong.
func (p *parser) expect(kind jsontext.Kind, sentinel error, what string) (jsontext.Token, error) {
	tok, err := p.read()
	if err == nil && tok.Kind() != kind {
		err = fmt.Errorf("%w: %s", sentinel, what)
	}
	return tok, err
}

// end checks that nothing but whitespace follows the top-level value.
func (p *parser) end() error {
	switch _, err := p.dec.ReadToken(); {
	case err == io.EOF:
		return nil
	case err == nil:
		return fmt.Errorf("%w: trailing data at byte %d", ErrInvalidJSON, p.dec.InputOffset())
	default:
		return p.jsonErr(err)
	}
}

// jsonErr translates a tokenizer error. It keeps the offset but not the
// tokenizer's message, which quotes the input (possibly secret arguments).
func (p *parser) jsonErr(err error) error {
	off := p.dec.InputOffset()
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		off = se.ByteOffset
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: unexpected end of input", ErrInvalidJSON)
	}
	return fmt.Errorf("%w at byte %d", ErrInvalidJSON, off)
}

// checkDepth is called right after an object or array opened.
func (p *parser) checkDepth() error {
	if p.dec.StackDepth() > p.maxDepth {
		return fmt.Errorf("%w: more than %d levels at byte %d", ErrTooDeep, p.maxDepth, p.dec.InputOffset())
	}
	return nil
}

// enter starts the name bookkeeping of an object whose '{' was just read.
func (p *parser) enter() (frame, error) {
	if err := p.checkDepth(); err != nil {
		return frame{}, err
	}
	return frame{firstName: len(p.names), foldMark: len(p.fold), open: p.dec.InputOffset()}, nil
}

// next reads the next member name of the object f, or reports ok == false
// at its end. It refuses a name that folds to the same string as an
// earlier name of the same object: an exact duplicate (after unescaping)
// or a case variant. Every object the parser reads goes through next, so
// this is the only duplicate check. name and folded are valid until the
// next call.
func (p *parser) next(f *frame) (name, folded []byte, ok bool, err error) {
	if f.set != nil {
		// The name read last is no longer valid, and set holds its hash.
		p.fold = p.fold[:f.reuse]
	}
	before := p.dec.InputOffset()
	tok, err := p.read()
	if err != nil {
		return nil, nil, false, err
	}
	if tok.Kind() == '}' {
		p.names = p.names[:f.firstName]
		p.fold = p.fold[:f.foldMark]
		return nil, nil, false, nil
	}
	// The token is the quoted name, preceded only by whitespace and a comma.
	if name, err = p.unquoted(before); err != nil {
		return nil, nil, false, err
	}
	if p.request && string(name) == "__proto__" {
		return nil, nil, false, fmt.Errorf("%w at byte %d", ErrProtoName, before)
	}
	start := len(p.fold)
	p.fold = appendFolded(p.fold, name)
	folded = p.fold[start:]

	if f.set == nil {
		for _, s := range p.names[f.firstName:] {
			if bytes.Equal(p.fold[s.start:s.end], folded) {
				return nil, nil, false, fmt.Errorf("%w at byte %d", ErrDuplicateName, before)
			}
		}
		if len(p.names)-f.firstName < linearNames {
			p.names = append(p.names, span{start, len(p.fold)})
			return name, folded, true, nil
		}
		f.set = make(map[uint64]struct{}, 2*linearNames)
		for _, s := range p.names[f.firstName:] {
			f.set[nameHash(p.fold[s.start:s.end])] = struct{}{}
		}
	}
	h := nameHash(folded)
	if _, seen := f.set[h]; seen {
		// Equal hashes: an equal name, or (rarely) another name; the
		// object's names read again tell which.
		if p.nameBefore(f, before, folded) {
			return nil, nil, false, fmt.Errorf("%w at byte %d", ErrDuplicateName, before)
		}
	}
	f.set[h] = struct{}{}
	f.reuse = start
	return name, folded, true, nil
}

// nameBefore reports whether a member of the object f that ends before
// offset end has a name that folds to folded: the exact check behind
// equal hashes in f.set. It reads the object's members again, from its
// '{' to end, which the parser has read already (valid JSON, within the
// depth limit).
func (p *parser) nameBefore(f *frame, end int64, folded []byte) bool {
	if f.open < 1 || end > int64(len(p.body)) || p.body[f.open-1] != '{' {
		// Not where an object began: say the name was seen (refusing
		// the message) rather than miss a duplicate.
		return true
	}
	d := jsontext.NewDecoder(bytes.NewReader(p.body[f.open-1:end]), jsontext.AllowDuplicateNames(true))
	if tok, err := d.ReadToken(); err != nil || tok.Kind() != '{' {
		return true
	}
	var buf []byte
	for {
		tok, err := d.ReadToken()
		if err != nil {
			// The end of what was read: past the last member before end.
			return false
		}
		if buf = appendFolded(buf[:0], []byte(tok.String())); bytes.Equal(buf, folded) {
			return true
		}
		if d.SkipValue() != nil {
			return false
		}
	}
}

// unquoted returns the value of the string token just read, which began
// after offset before (preceded only by whitespace, a comma or a colon),
// without allocating: a slice of the body, or of p.unq when it has
// escapes, valid until the next call.
func (p *parser) unquoted(before int64) ([]byte, error) {
	raw := p.body[before:p.dec.InputOffset()]
	i := bytes.IndexByte(raw, '"')
	if i < 0 || len(raw)-i < 2 {
		return nil, fmt.Errorf("%w at byte %d", ErrInvalidJSON, before)
	}
	raw = raw[i:]
	v := raw[1 : len(raw)-1]
	if bytes.IndexByte(v, '\\') >= 0 {
		var err error
		if p.unq, err = jsontext.AppendUnquote(p.unq[:0], raw); err != nil {
			return nil, fmt.Errorf("%w at byte %d", ErrInvalidJSON, before)
		}
		v = p.unq
	}
	return v, nil
}

// expectString reads a string token and returns its value as unquoted
// does; otherwise the error wraps sentinel and says what was wrong.
func (p *parser) expectString(sentinel error, what string) ([]byte, error) {
	before := p.dec.InputOffset()
	if _, err := p.expect('"', sentinel, what); err != nil {
		return nil, err
	}
	return p.unquoted(before)
}

// method returns b as a string, the same string for every message of a
// usual client method, so reading one allocates nothing.
func method(b []byte) string {
	switch string(b) {
	case "tools/call":
		return "tools/call"
	case "tools/list":
		return "tools/list"
	case "resources/read":
		return "resources/read"
	case "resources/list":
		return "resources/list"
	case "resources/templates/list":
		return "resources/templates/list"
	case "prompts/get":
		return "prompts/get"
	case "prompts/list":
		return "prompts/list"
	case "initialize":
		return "initialize"
	case "notifications/initialized":
		return "notifications/initialized"
	case "notifications/cancelled":
		return "notifications/cancelled"
	case "notifications/progress":
		return "notifications/progress"
	case "ping":
		return "ping"
	case "completion/complete":
		return "completion/complete"
	case "tasks/get":
		return "tasks/get"
	case "subscriptions/listen":
		return "subscriptions/listen"
	}
	return string(b)
}

// version returns b as a string, without allocating for the protocol
// versions a client sends today.
func version(b []byte) string {
	switch string(b) {
	case "2026-07-28":
		return "2026-07-28"
	case "2025-11-25":
		return "2025-11-25"
	case "2025-06-18":
		return "2025-06-18"
	}
	return string(b)
}

// skip consumes the next value, checking it like everything else.
func (p *parser) skip() error {
	tok, err := p.read()
	if err != nil {
		return err
	}
	return p.skipRest(tok)
}

// skipRest consumes the rest of a value whose first token was tok.
func (p *parser) skipRest(tok jsontext.Token) error {
	switch tok.Kind() {
	case '{':
		f, err := p.enter()
		if err != nil {
			return err
		}
		for {
			_, _, ok, err := p.next(&f)
			if err != nil || !ok {
				return err
			}
			if err := p.skip(); err != nil {
				return err
			}
		}
	case '[':
		if err := p.checkDepth(); err != nil {
			return err
		}
		for {
			tok, err := p.read()
			if err != nil {
				return err
			}
			if tok.Kind() == ']' {
				return nil
			}
			if err := p.skipRest(tok); err != nil {
				return err
			}
		}
	}
	return nil
}

// variant reports whether folded is one of names, which the caller has
// already failed to match exactly.
func variant(folded []byte, names []string) (string, bool) {
	for _, n := range names {
		if string(folded) == n {
			return n, true
		}
	}
	return "", false
}

// looseVariant is variant ignoring '-' and '_' in folded: Go's json/v2,
// when it matches names case-insensitively, ignores them too, so that
// "par_ams" reads as params there. names hold neither. An ASCII name
// need not be folded first (the fast path's).
func looseVariant(folded []byte, names []string) (string, bool) {
	for _, n := range names {
		i := 0
		for _, c := range folded {
			if c == '-' || c == '_' {
				continue
			}
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			if i == len(n) || n[i] != c {
				i = -1
				break
			}
			i++
		}
		if i == len(n) {
			return n, true
		}
	}
	return "", false
}

// envelope records which top-level members a message has.
type envelope struct {
	jsonrpc, method, id, nullID, params, result, error bool
}

// params holds what a message's params carry of interest, whatever the
// method: the members come in any order, method possibly last.
type params struct {
	name, uri, taskID member
	version           string
	arguments         []byte
	// invalid is the first fault of the params object. Reading goes on,
	// so that the message's envelope (its id above all) is known and the
	// rest of the body checked before the fault is reported.
	invalid error
}

// fault records an invalid params fault unless there is one already.
func (pf *params) fault(format string, args ...any) {
	if pf.invalid == nil {
		pf.invalid = fmt.Errorf("%w: "+format, append([]any{ErrInvalidParams}, args...)...)
	}
}

// member is a params member that names a target.
type member struct {
	s                 string
	present, isString bool
}

// message reads a message whose '{' was just read.
func (p *parser) message() (Message, error) {
	var (
		m   Message
		env envelope
		pf  params
	)
	start := p.dec.InputOffset() - 1
	f, err := p.enter()
	if err != nil {
		return m, err
	}
	for {
		name, folded, ok, err := p.next(&f)
		if err != nil {
			return m, err
		}
		if !ok {
			break
		}
		switch string(name) {
		case "jsonrpc":
			v, err := p.expectString(ErrNotJSONRPC, `jsonrpc is not "2.0"`)
			if err != nil {
				return m, err
			}
			if string(v) != "2.0" {
				return m, fmt.Errorf(`%w: jsonrpc is not "2.0"`, ErrNotJSONRPC)
			}
			env.jsonrpc = true
		case "method":
			v, err := p.expectString(ErrNotJSONRPC, "method is not a string")
			if err != nil {
				return m, err
			}
			m.Method = method(v)
			env.method = true
		case "id":
			if err := p.id(&m, &env); err != nil {
				return m, err
			}
		case "params":
			env.params = true
			tok, err := p.read()
			if err != nil {
				return m, err
			}
			switch tok.Kind() {
			case '{':
				err = p.params(&pf)
			case '[':
				err = p.skipRest(tok)
			default:
				err = fmt.Errorf("%w: params is neither object nor array", ErrNotJSONRPC)
			}
			if err != nil {
				return m, err
			}
		case "result":
			env.result = true
			if p.result != nil {
				err = p.resultObject()
			} else {
				err = p.skip()
			}
			if err != nil {
				return m, err
			}
		case "error":
			env.error = true
			if err := p.errorObject(); err != nil {
				return m, err
			}
		default:
			if v, ok := variant(folded, envelopeNames); ok {
				return m, fmt.Errorf("%w: member is a case variant of %q", ErrNotJSONRPC, v)
			}
			if v, ok := looseVariant(folded, envelopeNames); ok {
				return m, fmt.Errorf("%w: member %q is read as %q by decoders that ignore case, '-' and '_'", ErrNotJSONRPC, name, v)
			}
			if err := p.skip(); err != nil {
				return m, err
			}
		}
	}
	end := p.dec.InputOffset()
	m.Raw = p.body[start:end:end]

	if !env.jsonrpc {
		return m, fmt.Errorf("%w: no jsonrpc member", ErrNotJSONRPC)
	}
	switch {
	case env.method:
		if env.result || env.error {
			return m, fmt.Errorf("%w: method together with result or error", ErrNotJSONRPC)
		}
		if env.nullID {
			return m, fmt.Errorf("%w: request id is null", ErrNotJSONRPC)
		}
		m.Kind = KindNotification
		if env.id {
			m.Kind = KindRequest
		}
		if err := m.target(&pf); err != nil {
			return m, err
		}
	case env.result || env.error:
		switch {
		case env.result && env.error:
			return m, fmt.Errorf("%w: both result and error", ErrNotJSONRPC)
		case env.params:
			return m, fmt.Errorf("%w: response with params", ErrNotJSONRPC)
		case !env.id:
			return m, fmt.Errorf("%w: response without id", ErrNotJSONRPC)
		case env.nullID && !env.error:
			return m, fmt.Errorf("%w: null id outside an error response", ErrNotJSONRPC)
		}
		m.Kind = KindResponse
	default:
		return m, fmt.Errorf("%w: neither method nor result nor error", ErrNotJSONRPC)
	}
	return m, nil
}

// id reads the id member: a string, a canonical integer, or null.
func (p *parser) id(m *Message, env *envelope) error {
	switch p.dec.PeekKind() {
	case '"', '0', 'n':
		v, err := p.dec.ReadValue()
		if err != nil {
			return p.jsonErr(err)
		}
		end := int(p.dec.InputOffset())
		raw := p.body[end-len(v) : end : end]
		switch v.Kind() {
		case '0':
			if !canonicalInt(raw) {
				return fmt.Errorf("%w: numeric id is not an integer within ±(2^53-1) in canonical form", ErrNotJSONRPC)
			}
		case 'n':
			env.nullID = true
		}
		m.ID = raw
		env.id = true
		return nil
	}
	if _, err := p.read(); err != nil {
		return err
	}
	return fmt.Errorf("%w: id is neither string nor number", ErrNotJSONRPC)
}

// canonicalInt reports whether a JSON number is an integer written without
// fraction, exponent or "-0", within the range every JSON parser reads
// exactly (IEEE 754 doubles hold integers up to 2^53-1).
func canonicalInt(b []byte) bool {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 16 || (b[0] == '0' && (len(b) > 1 || neg)) {
		return false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + uint64(c-'0')
	}
	return n <= 1<<53-1
}

// params reads a params object whose '{' was just read.
func (p *parser) params(pf *params) error {
	f, err := p.enter()
	if err != nil {
		return err
	}
	for {
		name, folded, ok, err := p.next(&f)
		if err != nil || !ok {
			return err
		}
		switch string(name) {
		case "name":
			err = p.member(&pf.name)
		case "uri":
			err = p.member(&pf.uri)
		case "taskId":
			err = p.member(&pf.taskID)
		case "_meta":
			err = p.meta(pf)
		case "arguments":
			before := p.dec.InputOffset()
			err = p.skip()
			end := p.dec.InputOffset()
			pf.arguments = bytes.TrimLeft(p.body[before:end:end], " \t\r\n:")
		default:
			if v, ok := variant(folded, paramNames); ok {
				pf.fault("params member is a case variant of %q", v)
			} else if _, ok := variant(folded, snakeParamNames); ok {
				pf.fault("params member %q is another spelling of a member read here (taskId, _meta)", name)
			} else if v, ok := looseVariant(folded, looseParamNames); ok {
				pf.fault("params member %q is read as %q by decoders that ignore case, '-' and '_'", name, v)
			}
			err = p.skip()
		}
		if err != nil {
			return err
		}
	}
}

// member reads a params member that names a target if it is a string
// (target decides whether it must be one).
func (p *parser) member(mb *member) error {
	tok, err := p.read()
	if err != nil {
		return err
	}
	mb.present = true
	if tok.Kind() == '"' {
		mb.s, mb.isString = tok.String(), true
		return nil
	}
	return p.skipRest(tok)
}

// meta reads params._meta, which must be an object.
func (p *parser) meta(pf *params) error {
	tok, err := p.read()
	if err != nil {
		return err
	}
	if tok.Kind() != '{' {
		pf.fault("params._meta is not an object")
		return p.skipRest(tok)
	}
	f, err := p.enter()
	if err != nil {
		return err
	}
	for {
		name, folded, ok, err := p.next(&f)
		if err != nil || !ok {
			return err
		}
		if string(name) == metaProtocolVersion {
			before := p.dec.InputOffset()
			tok, err := p.read()
			if err != nil {
				return err
			}
			if tok.Kind() == '"' {
				v, err := p.unquoted(before)
				if err != nil {
					return err
				}
				pf.version = version(v)
				continue
			}
			pf.fault("%s is not a string", metaProtocolVersion)
			if err := p.skipRest(tok); err != nil {
				return err
			}
			continue
		}
		if _, ok := variant(folded, metaNames); ok {
			pf.fault("_meta member is a case variant of %q", metaProtocolVersion)
		}
		if err := p.skip(); err != nil {
			return err
		}
	}
}

// errorObject reads the error member of a response.
func (p *parser) errorObject() error {
	if _, err := p.expect('{', ErrNotJSONRPC, "error is not an object"); err != nil {
		return err
	}
	f, err := p.enter()
	if err != nil {
		return err
	}
	var code, message bool
	for {
		name, folded, ok, err := p.next(&f)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		switch string(name) {
		case "code":
			_, err = p.expect('0', ErrNotJSONRPC, "error.code is not a number")
			code = true
		case "message":
			_, err = p.expect('"', ErrNotJSONRPC, "error.message is not a string")
			message = true
		default:
			if v, ok := variant(folded, errorNames); ok {
				return fmt.Errorf("%w: error member is a case variant of %q", ErrNotJSONRPC, v)
			}
			err = p.skip()
		}
		if err != nil {
			return err
		}
	}
	if !code || !message {
		return fmt.Errorf("%w: error without code or message", ErrNotJSONRPC)
	}
	return nil
}

// source is the params member that names what a method acts on.
type source uint8

const (
	srcNone   source = iota
	srcName          // params.name
	srcURI           // params.uri
	srcTaskID        // params.taskId
)

// target is where a method names what it acts on.
type target struct {
	src source
	// required: the member must be present. It is not on the methods that
	// 2026-07-28 removed (resources/subscribe and resources/unsubscribe from
	// the core, tasks/result from the Tasks extension): their requests then
	// carry only _meta and must reach the server to be answered "method not
	// found" (Streamable HTTP: 404, -32601).
	required bool
	// header: 2026-07-28 mirrors the member into Mcp-Name (the transport's
	// tools/call, resources/read, prompts/get; the Tasks extension's
	// tasks/get, tasks/update, tasks/cancel).
	header bool
}

// targetOf returns where a method's target is.
func targetOf(method string) target {
	switch method {
	case "tools/call", "prompts/get":
		return target{src: srcName, required: true, header: true}
	case "resources/read":
		return target{src: srcURI, required: true, header: true}
	case "resources/subscribe", "resources/unsubscribe":
		return target{src: srcURI}
	case "tasks/get", "tasks/update", "tasks/cancel":
		return target{src: srcTaskID, required: true, header: true}
	case "tasks/result":
		return target{src: srcTaskID}
	}
	return target{}
}

// target fills Name, URI and ProtocolVersion of a request or notification.
// A target member, when there is one, must be a string even where it is
// optional: a lenient server could coerce another value (["a"] reads as
// "a" in JavaScript) into a target nobody checked.
func (m *Message) target(pf *params) error {
	if pf.invalid != nil {
		return pf.invalid
	}
	m.Name, m.HasName = pf.name.s, pf.name.isString
	m.URI, m.HasURI = pf.uri.s, pf.uri.isString
	m.ProtocolVersion = pf.version
	m.Arguments = pf.arguments
	t := targetOf(m.Method)
	var mb *member
	var what string
	switch t.src {
	case srcNone:
		return nil
	case srcName:
		mb, what = &pf.name, "params.name"
	case srcURI:
		mb, what = &pf.uri, "params.uri"
	case srcTaskID:
		mb, what = &pf.taskID, "params.taskId"
		m.Name, m.HasName = pf.taskID.s, pf.taskID.isString
	}
	if (t.required || mb.present) && !mb.isString {
		return fmt.Errorf("%w: %s needs a string %s", ErrInvalidParams, m.Method, what)
	}
	return nil
}
