package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// maxFilteredBody bounds a tools/list response (JSON body or one SSE
// event) the gateway must read whole to filter.
const maxFilteredBody = 16 << 20

// maxTaskBody bounds how much of an answer is held to wrap its task ids;
// a larger one streams unchanged (see passUnwrapped).
const maxTaskBody = 1 << 20

// maxHeldBytes bounds what the process's gateways hold of answers at
// once: JSON answers held to be read whole and the unfinished events of
// streams they read. Each is bounded (maxFilteredBody), their number is
// not: many callers listing a large set of tools at once would otherwise
// take the process's memory. Past it, an answer that must be held is
// refused as one over maxFilteredBody is (502, nothing of it passed), and
// a stream's event that does not fit ends the stream.
const maxHeldBytes = 256 << 20

// heldShare and heldRoom share maxHeldBytes among principals
// (heldShares); heldFirst is how much of a principal's first piece is held
// whenever it fits.
const (
	heldShare = 8
	heldRoom  = heldShare - 1
	heldFirst = 64 << 10
)

// held is what the process's gateways hold now (responseWriter.hold,
// through Gateway.held, which tests give a count of their own).
var held = newHeldShares(maxHeldBytes)

// heldShares counts the bytes of answers held, in all and per principal
// (its issuer, type and subject: a user's answers through every client
// count as one). A principal's answers are held until written, and a
// caller that reads slowly holds them meanwhile (up to heldWriteTime), so
// once half the bound is taken the room is shared: a principal holding n
// bytes may then grow to m while m is at most maxHeldBytes/heldShare and
// m·heldRoom at most the room left, but for the first heldFirst bytes of
// a principal holding nothing, held whenever they fit. So a principal
// alone may use half the bound, and k principals holding answers unread
// stop at about (1+k/(k+7))/2 of it, the rest left to others (review
// s14-fresh F1, s14-fresh2 M1, L1, L2).
type heldShares struct {
	max   int64 // the bound
	mu    sync.Mutex
	total int64
	by    map[string]int64
}

func newHeldShares(max int64) *heldShares {
	return &heldShares{max: max, by: map[string]int64{}}
}

// grow changes holder's bytes by d: false, with nothing changed, when
// growing would pass its share or the bound.
func (s *heldShares) grow(holder string, d int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.by[holder]
	m := n + d
	if d > 0 && (s.total+d > s.max ||
		2*(s.total+d) > s.max && !(n == 0 && d <= heldFirst) &&
			(m > s.max/heldShare || m*heldRoom > s.max-s.total)) {
		return false
	}
	s.total += d
	if m == 0 {
		delete(s.by, holder)
	} else {
		s.by[holder] = m
	}
	return true
}

// bytes is what is held in all.
func (s *heldShares) bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// errAnswerRefused: the answer is replaced by a 502 (modeRefuse,
// modeRedirect), and no more of it is read.
var errAnswerRefused = errors.New("the upstream's answer is refused")

// errHeldBudget: holding the answer would pass the caller's share of
// maxHeldBytes, or the bound.
var errHeldBudget = errors.New("the answers held by the gateway for this caller, or in all, are at their bound")

type writeMode uint8

const (
	modePass     writeMode = iota // stream through untouched
	modeJSON                      // buffer, filter, write at finish
	modeSSE                       // filter event by event as next writes (no goroutine)
	modeRefuse                    // a tools/list answer we cannot read: 502
	modeWhole                     // a JSON answer written whole: nothing may follow
	modeRedirect                  // a redirect, which clients would follow unchecked: 502
	modeEnded                     // the request was ended before its answer (exchange.endedBy)
)

// listFilter says which response messages answer a list request
// (listMethod), and which list each asks for.
type listFilter struct {
	single bool          // one request: every response message answers it
	list   mcpparse.List // single: the list asked for
	lists  []listID      // batch: the list requests
	allIDs [][]byte      // batch: ids of every request
}

// listID is a list request of a batch.
type listID struct {
	id   []byte
	list mcpparse.List
}

// listMethod is the list a method asks for: those whose answers are
// filtered per caller.
func listMethod(method string) (mcpparse.List, bool) {
	switch method {
	case "tools/list":
		return mcpparse.ListTools, true
	case "prompts/list":
		return mcpparse.ListPrompts, true
	case "resources/list":
		return mcpparse.ListResources, true
	case "resources/templates/list":
		return mcpparse.ListResourceTemplates, true
	}
	return 0, false
}

// answers reports which list the response id answers, if any. In a batch
// answer every response must carry the id of one of the requests, so no
// answer goes unexamined.
func (f *listFilter) answers(id []byte) (mcpparse.List, bool, error) {
	if f.single {
		return f.list, true, nil
	}
	if !containsID(f.allIDs, id) {
		return 0, false, errors.New("response id matches no request")
	}
	for _, l := range f.lists {
		if mcpparse.SameID(l.id, id) {
			return l.list, true, nil
		}
	}
	return 0, false, nil
}

// responseWriter sits between next and the client: it rewrites
// Mcp-Session-Id, filters list answers (listMethod), wraps task ids
// (task.go) and otherwise streams untouched, flushing when next flushes.
type responseWriter struct {
	w      http.ResponseWriter
	g      *Gateway
	x      *exchange
	filter *listFilter
	// prior holds the values of each hostFields field the header held
	// before next wrote to it: the server's and the operator's, which
	// stay (see keepPrior); nil when it held none, as for most requests.
	prior *[len(hostFields)][]string
	// initIDs are the ids of 2025 initialize requests, whose answers lose
	// the tasks capability (stripTasksCapability); initOnly: the request
	// is one initialize and nothing else, so every response answers it
	// (a client matches "7" to 7, say).
	initIDs  [][]byte
	initOnly bool
	tasks    bool // wrap the task ids of a 2026-07-28 answer
	states   bool // wrap the requestState of a 2026-07-28 answer (state.go)
	cache    bool // mark a 2026-07-28 cacheable result private (rewritesCache)
	// contents: take out of a resources/read answer the contents the
	// caller's resource rules refuse (checksContents). embedded: resource
	// rules are configured, so every answer is read for the resources it
	// holds (checkResources), as strictly as with pinning but for the
	// strict reading of the whole message: tool output may hold any JSON
	// (a member twice in structuredContent), so an answer the strict
	// parse refuses is checked as encoding/json reads it (leniently).
	contents, embedded bool

	wroteHeader bool
	mode        writeMode
	status      int
	// refused is the message of the refusal answered instead of the
	// upstream's answer (answerInstead), "" when none: the audit
	// event's reason.
	refused string
	length  int64  // the JSON answer's Content-Length, -1 if none
	wrapped string // the session id set by rewriteSession
	buf     bytes.Buffer
	sse     *mcpparse.Splitter
	// trailers are the fields the upstream announced as trailers, and
	// trailerHeld what the header held under those names when it was
	// written by next (nil unless any): see dropTrailers.
	trailers    []string
	trailerHeld http.Header
	// holding is what the answer holds (counted in held): nil until it
	// holds anything, since the exchange is at the edge of its size class
	// (TestExchangeSizeClass).
	holding *holding
	// ending is set when the registry ends the request (endWrites), or
	// to writesDone as Serve returns (doneWrites), whichever comes first.
	ending atomic.Pointer[writeEnd]
}

// holding is what an answer holds, and whose (heldShares' holder).
type holding struct {
	n      int64
	holder string
}

// hold makes what the answer holds n bytes: false, with nothing changed,
// when growing would pass its principal's share or the bound
// (heldShares).
func (rw *responseWriter) hold(n int) bool {
	h := rw.holding
	if h == nil {
		if n == 0 {
			return true
		}
		h = &holding{holder: "-"} // admitted requests all have a principal
		if p := rw.x.p; p != nil {
			h.holder = p.holder
		}
		rw.holding = h
	}
	d := int64(n) - h.n
	if d == 0 {
		return true
	}
	if !rw.g.held.grow(h.holder, d) {
		return false
	}
	h.n = int64(n)
	return true
}

// responseWriter readies the exchange's writer to next.
func (x *exchange) responseWriter(w http.ResponseWriter, g *Gateway) *responseWriter {
	x.rw = responseWriter{w: w, g: g, x: x, tasks: x.rewritesTasks(), states: x.rewritesStates(), cache: x.rewritesCache(), contents: x.checksContents(), embedded: len(g.policy.resources) > 0 && x.r.Method != http.MethodDelete, initIDs: x.initializeIDs()}
	h := w.Header()
	for i, k := range hostFields {
		if v := h[k]; len(v) > 0 {
			if x.rw.prior == nil {
				x.rw.prior = new([len(hostFields)][]string)
			}
			x.rw.prior[i] = slices.Clone(v)
		}
	}
	x.rw.initOnly = len(x.rw.initIDs) == 1 && len(x.msgs) == 1 && !x.batch
	if !x.asksLists() {
		return &x.rw
	}
	f := &listFilter{single: !x.batch}
	for i := range x.msgs {
		m := &x.msgs[i]
		list, isList := listMethod(m.Method)
		if f.single && m.Kind != mcpparse.KindResponse && isList {
			f.list = list
		}
		if m.Kind != mcpparse.KindRequest {
			continue
		}
		f.allIDs = append(f.allIDs, m.ID)
		if isList {
			f.lists = append(f.lists, listID{m.ID, list})
		}
	}
	x.rw.filter = f
	return &x.rw
}

// listAllow says whether an item of list may be shown to x's caller: a
// tool as toolAllow says, a prompt if a prompts/get of it would be
// allowed, a resource if a resources/read of its uri would be, a
// resource template if a completion for it would be.
func (g *Gateway) listAllow(x *exchange, list mcpparse.List) func(key string, item []byte) bool {
	p := x.p
	switch list {
	case mcpparse.ListPrompts:
		return func(name string, _ []byte) bool { return g.policy.allowPrompt(p, name) }
	case mcpparse.ListResources:
		return func(uri string, _ []byte) bool { return g.mayRead(p, uri) }
	case mcpparse.ListResourceTemplates:
		return func(template string, _ []byte) bool { return g.policy.allowTemplate(p, template) }
	}
	return g.toolAllow(x)
}

// toolAllow says whether a listed tool may be shown to x's caller: by
// the policy's decision for a call of it, and by its pin.
func (g *Gateway) toolAllow(x *exchange) func(name string, def []byte) bool {
	p := x.p
	return func(name string, def []byte) bool {
		if !g.policy.allowTool(p, name) {
			return false
		}
		if g.pins == nil {
			return true
		}
		keep, _, _ := g.pins.listed(x.r.Context(), name, def)
		return keep
	}
}

// asksLists reports whether the answer must be filtered: a message asks
// for a list (listMethod). A notification counts too, since a lenient
// server may answer it all the same.
func (x *exchange) asksLists() bool {
	for i := range x.msgs {
		if _, ok := listMethod(x.msgs[i].Method); ok && x.msgs[i].Kind != mcpparse.KindResponse {
			return true
		}
	}
	return false
}

// initializeIDs are the ids of the initialize requests of a revision
// before 2026-07-28, nil when there are none.
func (x *exchange) initializeIDs() [][]byte {
	if x.rev.bindsTaskIDs() {
		return nil
	}
	var ids [][]byte
	for i := range x.msgs {
		if m := &x.msgs[i]; m.Kind == mcpparse.KindRequest && m.Method == "initialize" {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// rewrites reports whether the answer is read to change it where it can,
// and passed unchanged where it cannot: task ids to wrap, an initialize
// result's tasks capability to remove, caching hints to mark private.
func (rw *responseWriter) rewrites() bool { return rw.resources() || rw.rewritesOther() }

// resources reports whether the answer is read for resources
// (checkResources).
func (rw *responseWriter) resources() bool { return rw.contents || rw.embedded }

// rewritesOther is rewrites but for the resources checked.
func (rw *responseWriter) rewritesOther() bool {
	return rw.tasks || rw.states || rw.cache || rw.initIDs != nil
}

// rewritesJSON is rewrites for a JSON answer b, one message or batch
// answer read whole: a requestState to wrap, or caching hints to mark
// private, must be named in it.
func (rw *responseWriter) rewritesJSON(b []byte) bool {
	switch {
	case rw.tasks || rw.initIDs != nil || rw.mayBeTaskStatus(b):
		return true
	case !rw.resources() && !rw.states && !rw.cache:
		return false
	case mayEscapeLetters(b, rewrittenLetters, looseSeps):
		// One pass over the escapes for every word below (an answer of
		// escaped text has many): one that may stand for a letter of
		// any of them has the answer read.
		return true
	}
	return rw.resources() && (spelt(b, "resource", looseSeps) || spelt(b, "contents", looseSeps)) ||
		rw.states && spelt(b, "requeststate", looseSeps) ||
		rw.cache && (spelt(b, "cachescope", looseSeps) || spelt(b, "ttlms", looseSeps))
}

// rewrittenLetters are the letters of the member names rewritesJSON
// looks for.
const rewrittenLetters = "resourcecontentsrequeststatecachescopettlms"

// rewritesCache reports whether the answer is a 2026-07-28 result that
// carries caching hints (SEP-2549: server/discover, resources/read and
// the list methods; tools/list is filtered, and marked there). Its
// cacheScope "public" lets any shared cache (a gateway or proxy in front,
// a client host serving several users) serve it across authorization
// contexts, but behind the gateway every answer depends on the token: a
// resources/read of a resource_rule's URI is for holders of its scopes
// only, however public the upstream, which does not see the rules,
// calls it. So the request's own answer leaves marked private.
func (x *exchange) rewritesCache() bool {
	if !x.rev.requiresCacheScope() || len(x.msgs) != 1 || x.batch || x.msgs[0].Kind != mcpparse.KindRequest {
		return false
	}
	switch x.msgs[0].Method {
	case "resources/read", "resources/list", "resources/templates/list", "prompts/list", "server/discover":
		return true
	}
	return false
}

// cachingHints reports whether an answer may carry SEP-2549 caching
// hints: without ttlMs a result is stale at once, and no cache serves it.
func cachingHints(b []byte) bool {
	return mayEscapeLetters(b, "cachescopettlms", looseSeps) || spelt(b, "cachescope", looseSeps) || spelt(b, "ttlms", looseSeps)
}

func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

// recheckHeader undoes, once next is done, what it did after WriteHeader
// to the fields upstreamHeaders fixed. net/http ignores such changes, but
// they go out as header fields when the header is written later: a held
// answer, or one whose header a handler in front of the gateway delays
// (Caddy's encode, until a body comes). reverse_proxy and
// httputil.ReverseProxy do make them: they copy the upstream's trailers
// into the header after the body (under http.TrailerPrefix when not
// announced, which net/http sends as trailers; those forms go too).
func (rw *responseWriter) recheckHeader() {
	h := rw.w.Header()
	rw.dropFields(h, true)
	rw.keepPrior(h)
	rw.keepOwnNonce(h)
	if v := h[hSessionID]; len(v) > 1 || len(v) == 1 && v[0] != rw.wrapped {
		delete(h, hSessionID)
		if rw.wrapped != "" {
			h[hSessionID] = []string{rw.wrapped}
		}
	}
}

// noteTrailers remembers the fields announced as trailers (values of
// the Trailer field) and what the header holds under those names now.
func (rw *responseWriter) noteTrailers(h http.Header, announced []string) {
	for _, v := range announced {
		for name := range strings.SplitSeq(v, ",") {
			name = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			rw.trailers = append(rw.trailers, name)
			if vv, ok := h[name]; ok {
				if rw.trailerHeld == nil {
					rw.trailerHeld = http.Header{}
				}
				rw.trailerHeld[name] = slices.Clone(vv)
			}
		}
	}
}

// dropTrailers puts the header back as next wrote it, before the
// upstream's trailers came: reverse_proxy copies them into the header
// after the body, announced ones under their own names (added to any
// values), others under http.TrailerPrefix, and an answer the gateway
// holds or refuses goes out after that. Written as header fields, a trailer Location would
// turn a held answer into a redirect the client follows to an answer the
// gateway never reads (review s13-sse F0), and a trailer Content-Type
// would change how the client reads the checked body.
//
// Announced fields are put back for every answer, not only the held ones:
// a handler in front of the gateway may hold the header of one passed
// through (Caddy's encode, with an empty body, until its Close) and write
// it after the trailers came (review s13-fresh4 F1). The unannounced ones,
// under http.TrailerPrefix, net/http sends as trailers only, so they are
// dropped only from an answer whose header the gateway writes itself.
func (rw *responseWriter) dropTrailers() {
	h := rw.w.Header()
	for _, name := range rw.trailers {
		if vv, ok := rw.trailerHeld[name]; ok {
			h[name] = vv
		} else {
			delete(h, name)
		}
	}
	switch rw.mode {
	case modeJSON, modeRefuse, modeRedirect, modeEnded:
		for k := range h {
			if strings.HasPrefix(k, http.TrailerPrefix) {
				delete(h, k)
			}
		}
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }

func (rw *responseWriter) WriteHeader(code int) {
	if rw.wroteHeader {
		return
	}
	if code >= 100 && code < 200 {
		rw.upstreamHeaders()
		rw.w.WriteHeader(code)
		return
	}
	rw.upstreamHeaders()
	rw.wroteHeader = true
	rw.status = code
	h := rw.w.Header()
	// The upstream's trailers are not announced to the client: those it
	// announced are then not sent as trailers (see recheckHeader), and a
	// header written later must not carry them (dropTrailers).
	if tr := h["Trailer"]; len(tr) > 0 {
		rw.noteTrailers(h, tr)
	}
	delete(h, "Trailer")
	if rw.x.endedBy.Load() != nil {
		// Ended before its answer began: whatever next writes now (the
		// upstream's answer that raced the end, or next's error for the
		// cancelled request) is dropped, and Serve answers instead.
		rw.mode = modeEnded
		return
	}
	// Clients read a body under any status below 400 but 204 and 304:
	// MCP clients read a 201, 203 or 206 as a 200, the Python and Go SDKs
	// a 205, the Python SDK a 3xx it does not follow. None takes a result
	// from an error answer (4xx, 5xx), which passes unread; an event
	// stream is ended on revocation whatever its status.
	read := code >= 200 && code < 400 && code != http.StatusNoContent && code != http.StatusNotModified
	if rw.cache && read {
		// The HTTP answer is the caller's as its result is (rewritesCache),
		// whether or not the result can be read to mark it.
		markPrivate(h)
	}
	cts := h[hContentType]
	ct := first(cts)
	if anyEventStream(cts) {
		rw.g.streams.stream(rw.x)
	}
	if read && code >= 300 && len(h["Location"]) > 0 {
		// Clients follow a redirect (the Go and Python SDKs a 307 or 308
		// with the request's body) to an answer the gateway never reads,
		// and take the token along: Go's http.Client keeps Authorization
		// for the same host name at any port or scheme, and for its
		// subdomains, and a client whose transport adds the token adds
		// it anywhere. The upstream would get the token the gateway
		// strips, whatever the configuration reads.
		rw.mode = modeRedirect
		return
	}
	// watch: the answer is read for a tools list (a filter, or pinning);
	// with task ids to wrap only, an answer that cannot be read passes.
	watch := rw.filter != nil || rw.x.pinned || rw.resources()
	// statuses: every 2026-07-28 answer is read, if only for other
	// callers' notifications/tasks (mayBeTaskStatus): a
	// completion/complete's, which nothing else reads without pinning or
	// resource rules, one of a type clients read as JSON, and one of a
	// type no SDK reads (text/plain, none), which a client that reads
	// every answer that is not an event stream as JSON (requests'
	// json()) reads, as a watched answer is read for that. So it must
	// be read as the client reads it, as a watched answer is:
	// uncompressed, of one type, in UTF-8.
	statuses := rw.x.rev.bindsTaskIDs()
	if (watch || rw.rewrites() || statuses) && read {
		mt := mediaType(ct)
		switch {
		case encoded(h) && (watch || statuses):
			// The gateway asks for answers it can read uncompressed; an
			// upstream that compresses all the same cannot be read.
			rw.mode = modeRefuse
			return
		case len(cts) > 1 && (watch || statuses):
			// Clients join the values or take either one: the type the
			// client reads is not known.
			rw.mode = modeRefuse
			return
		case (watch || statuses) && (mt == "application/json" || mt == "text/event-stream") && !utf8Type(ct):
			// A client may decode the body in the charset the type
			// names (utf8Type), and read in it what the gateway,
			// reading UTF-8, does not see.
			rw.mode = modeRefuse
			return
		case mt != "text/event-stream" && (code < 300 && rw.x.r.Method == http.MethodGet || containsFold(ct, "text/event-stream")) && (watch || rw.tasks || rw.states || statuses):
			// Clients read a GET's body as events whatever its type, and
			// take "text/event-stream" anywhere in the type for a stream
			// (the TypeScript SDK's includes()): such an answer cannot be
			// read as the client will read it.
			rw.mode = modeRefuse
			return
		case mt != "application/json" && containsFold(ct, "json") && (watch || rw.x.rev.bindsTaskIDs()):
			// Likewise for JSON: the Python SDK reads any type starting
			// with "application/json" as JSON ("application/json-rpc"),
			// the TypeScript SDK any that contains it. A type that names
			// JSON is read as JSON or refused, never passed unread, and
			// so in 2026-07-28, where any answer may carry another
			// caller's notifications/tasks.
			rw.mode = modeRefuse
			return
		case (watch || statuses) && rw.filter == nil && mt != "text/event-stream" && mt != "application/json":
			// Watching for tools lists or resources (with task ids or a
			// request state to wrap too, as in a 2026-07-28 tools/call's
			// answer), or for other callers' notifications/tasks
			// (statuses), in an answer that is neither JSON nor an
			// event stream (a notification's
			// 202 "Accepted"): the SDKs' clients read no message from it,
			// but a client that reads every answer that is not an event
			// stream as JSON (requests' json() reads any type) does. It
			// is read as a JSON answer: passed as it came when it can
			// name no list, resource or task, refused when it may and
			// cannot be read. Such a client decodes it in the charset its type
			// names (requests' json() reads "text/plain; charset=utf-7"
			// as UTF-7, where "+AHQ-ools" is "tools"), as for JSON
			// (utf8Type).
			rw.x.otherCharset = ct != "" && !utf8Type(ct)
			fallthrough
		case mt == "application/json":
			rw.mode = modeJSON
			rw.length = -1
			if v := h[hContentLength]; len(v) == 1 {
				if n, err := strconv.ParseInt(v[0], 10, 64); err == nil {
					rw.length = n
				}
			}
			return // written at finish, with the filtered length
		case mt == "text/event-stream":
			rw.mode = modeSSE
			if rw.filter != nil {
				markPrivate(h)
			}
			if len(cts) == 1 && !namesCharset(ct) {
				// The stream is read, and written (WriteEvent), as
				// UTF-8: say so, as clients decode a text type that
				// names no charset otherwise. requests decodes it as
				// ISO-8859-1, where the second byte of "ą" (C4 85) is
				// NEL, and its iter_lines splits lines as
				// str.splitlines does, at NEL: an event's id, type or
				// comment holding one would carry a line, a whole
				// event, that the gateway reads as part of a field.
				h[hContentType] = []string{"text/event-stream; charset=utf-8"}
			}
			h.Del("Content-Length")
			rw.w.WriteHeader(code)
			http.NewResponseController(rw.w).Flush()
			rw.sse = mcpparse.NewSplitter(maxFilteredBody)
			return
		default:
			if !rw.passUnwrapped() {
				rw.mode = modeRefuse
				return
			}
			// Only task ids to wrap: an answer we cannot read goes
			// through unchanged (see passUnwrapped).
		}
	}
	rw.w.WriteHeader(code)
}

// utf8Type reports whether a Content-Type lets a client decode the body
// as the gateway reads it, in UTF-8: no charset parameter, or
// charset=utf-8. Clients that decode in the charset named read other
// text: httpx, under the Python SDK client's event streams (httpx-sse),
// and requests' json() decode UTF-7, in which "+AHQ-ools" is "tools",
// so a tools list or an embedded resource would pass unread. A type
// strictMediaType refuses (an RFC 2231 charset*) is refused as in a
// request's type (checkContentHeaders), and so is any parameter but
// charset, as there: requests splits the type at every ';' and strips
// quotes from names and values, the last charset winning, so that
// "'charset'=utf-7", `x="; charset=utf-7"` or `charset=utf-8;
// x="a;charset=utf-7"`, which hold no charset or UTF-8 to Go, are UTF-7
// to its text and json().
func utf8Type(ct string) bool {
	switch ct {
	case "application/json", "text/event-stream":
		return true
	}
	_, params, ok := strictMediaType(ct)
	if !ok {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}

// namesCharset reports whether a Content-Type has a charset parameter
// (or one that cannot be parsed, which is left as it is).
func namesCharset(ct string) bool {
	if ct == "text/event-stream" {
		return false
	}
	_, params, ok := strictMediaType(ct)
	if !ok {
		return true
	}
	_, named := params["charset"]
	return named
}

// anyEventStream reports whether any of the Content-Type values may be
// read as an event stream: one that has text/event-stream anywhere, as
// clients look for it (the Python SDK by prefix, the TypeScript SDK and
// httpx-sse anywhere).
func anyEventStream(cts []string) bool {
	for _, ct := range cts {
		if containsFold(ct, "text/event-stream") {
			return true
		}
	}
	return false
}

// anyJSON reports whether any of the Content-Type values names JSON,
// as clients look for it (the Python SDK by prefix, the TypeScript SDK
// anywhere).
func anyJSON(cts []string) bool {
	for _, ct := range cts {
		if containsFold(ct, "json") {
			return true
		}
	}
	return false
}

// passUnwrapped reports whether an answer whose task ids cannot be
// rewritten may pass unchanged: when no tools/list filter and no check of
// a resources/read answer's contents applies. An
// upstream task id the client sees unwrapped names no task through the
// gateway (follow-ups must carry a wrapped id, and 2025 task requests
// need a bound session), so this costs the client a usable id, never
// another caller's task; the tools/list filter, which hides tools, and
// the contents check fail closed instead.
func (rw *responseWriter) passUnwrapped() bool { return rw.filter == nil && !rw.contents }

// optional reports whether the answer is read only to wrap task ids or a
// request state, so that one too large to read or hold passes unchanged:
// no tools/list filter, no pinning, no initialize result to change.
func (rw *responseWriter) optional() bool {
	return rw.passUnwrapped() && !rw.x.pinned && rw.initIDs == nil && !rw.embedded
}

func (rw *responseWriter) Write(b []byte) (int, error) {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	switch rw.mode {
	case modeJSON:
		if rw.buf.Len() == 0 && len(b) > 0 && int64(len(b)) == rw.length && len(b) <= maxFilteredBody &&
			rw.filter == nil && !rw.x.otherCharset && !rw.rewritesJSON(b) && !(rw.watchesLists() && mayList(unsafeString(b))) {
			// The whole answer in one write, held only to be looked at
			// for a list (watchesLists), and it holds none: write it
			// now, as finish would, without keeping a copy.
			rw.mode = modeWhole
			rw.w.WriteHeader(rw.status)
			return rw.w.Write(b)
		}
		if rw.optional() && !rw.tasks && (rw.buf.Len()+len(b) > maxTaskBody || !rw.hold(rw.heldCap(len(b)))) {
			// Too large to hold for task ids or a request state (a
			// completed task's result, say), or past the caller's share
			// of what is held: stream it unchanged from here on. With
			// pinning it is held up to maxFilteredBody all the same, to
			// be looked at for a tools list, and so is a 2026-07-28
			// answer whose task ids are read, as its stream is not
			// detached (writeEvents): it may carry other callers'
			// notifications/tasks, whose final result makes it large.
			rw.mode = modePass
			rw.recheckHeader()
			rw.w.WriteHeader(rw.status)
			if _, err := rw.w.Write(rw.buf.Bytes()); err != nil {
				return 0, err
			}
			rw.dropHeld()
			return rw.w.Write(b)
		}
		if rw.buf.Len()+len(b) > maxFilteredBody {
			rw.mode = modeRefuse
			rw.dropHeld()
			return 0, errors.New("response too large to filter")
		}
		if !rw.hold(rw.heldCap(len(b))) {
			rw.g.log.Warn("answer refused", zap.Error(errHeldBudget), zap.Int64("max_bytes", rw.g.held.max))
			rw.mode = modeRefuse
			rw.dropHeld()
			return 0, errHeldBudget
		}
		n, err := rw.buf.Write(b)
		// The allocator rounds the capacity up to its size class: count
		// what was taken, which passes the estimate by an eighth at most.
		rw.hold(rw.buf.Cap())
		return n, err
	case modeSSE:
		return rw.writeEvents(b)
	case modeRefuse, modeRedirect:
		// Nothing of it goes out, and the client waits for the 502
		// finish writes: the error stops next's copy, so that an answer
		// that does not end (a GET stream of another type) is not read
		// for as long as the upstream sends it (Serve recovers next's
		// abort for it).
		return 0, errAnswerRefused
	case modeEnded:
		return len(b), nil
	case modeWhole:
		if len(b) > 0 {
			// Cannot happen through net/http's transport, which stops
			// at Content-Length; never pass bytes nobody looked at.
			return 0, errors.New("response longer than its Content-Length")
		}
		return 0, nil
	}
	return rw.w.Write(b)
}

// heldCap is what the held answer takes once n more bytes are written
// to it: the buffer's capacity, which bytes.Buffer doubles when it grows
// (growSlice), not the bytes it holds, which may be half of it.
func (rw *responseWriter) heldCap(n int) int {
	need, c := rw.buf.Len()+n, rw.buf.Cap()
	if need <= c {
		return c
	}
	return max(need, 2*c)
}

// Flush passes flushes through when streaming untouched; writeEvents
// flushes the events it writes itself, and JSON is written at the end.
func (rw *responseWriter) Flush() {
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.mode == modePass {
		http.NewResponseController(rw.w).Flush()
	}
}

// heldWriteTime is how long writing a held answer of n bytes may take
// before the connection is given up: 30 s, and a second per 128 KiB. A
// held answer stays counted in held until written, so a caller that does
// not read must not keep it there for good. Gateway.heldWriteTime, which
// tests shorten.
func heldWriteTime(n int) time.Duration {
	return 30*time.Second + time.Duration(n)*time.Second/(128<<10)
}

// writeHeld writes n held bytes (a held answer, or an event that came in
// pieces) with write, within heldWriteTime (never past the server's write
// timeout), flushed before the deadline is lifted: lifting it also lifts,
// under Caddy, the write idle timeout (write_idle_timeout) it set for the
// write, and the flush net/http does after the handler would have none
// (review s14-fresh3 M1).
func (rw *responseWriter) writeHeld(n int, write func() error) error {
	rc := http.NewResponseController(rw.w)
	hard := rw.hardWriteDeadline()
	d := time.Now().Add(rw.g.heldWriteTime(n))
	if !hard.IsZero() && hard.Before(d) {
		d = hard
	}
	if rw.setWriteDeadline(rc, d) == nil {
		defer func() {
			// What the response had before: the server's write
			// timeout, or none. The flush (of nothing: the answer was
			// flushed) rearms Caddy's write idle timeout, for what
			// net/http writes after the handler (a chunked answer's
			// last chunk).
			rw.setWriteDeadline(rc, hard)
			rc.Flush()
		}()
	}
	if err := write(); err != nil {
		return err
	}
	return rc.Flush()
}

// setWriteDeadline sets the answer's write deadline to d (zero: none),
// or to when the writes of an ended request are given up (endWrites) if
// that is sooner.
func (rw *responseWriter) setWriteDeadline(rc *http.ResponseController, d time.Time) error {
	if e := rw.ending.Load(); e != nil && e != writesDone {
		e.mu.Lock()
		defer e.mu.Unlock()
		if d.IsZero() || e.at.Before(d) {
			d = e.at
		}
	}
	return rc.SetWriteDeadline(d)
}

// writeEnd is when the writes of an ended request are given up
// (endWrites); mu orders the deadlines the registry's goroutine and the
// handler's set.
type writeEnd struct {
	mu sync.Mutex
	at time.Time
}

// writesDone in responseWriter.ending: Serve has returned (or is
// returning), and the writer is no longer the registry's to touch.
var writesDone = new(writeEnd)

// endWrites gives up the answer's writes endWriteGrace from now (see
// exchange.end), unless the server's write timeout comes first. It is
// called from the registry's goroutine, and does nothing once Serve has
// returned (doneWrites).
func (rw *responseWriter) endWrites() {
	e := &writeEnd{at: time.Now().Add(endWriteGrace)}
	e.mu.Lock() // before it is seen: doneWrites waits for the deadline
	defer e.mu.Unlock()
	if !rw.ending.CompareAndSwap(nil, e) {
		return // Serve has returned, or the request was ended before
	}
	if hard := rw.hardWriteDeadline(); !hard.IsZero() && hard.Before(e.at) {
		e.at = hard
		return
	}
	http.NewResponseController(connWriter(rw.w)).SetWriteDeadline(e.at)
}

// connWriter is the writer under every wrapper of w: the server's own,
// whose SetWriteDeadline may be called from another goroutine than the
// handler's (net/http's for HTTP/1 and HTTP/2, quic-go's for HTTP/3).
// A wrapper's is the handler's alone: Caddy's write idle timeout
// (caddyhttp.IdleTimeoutWriter) keeps the deadline in a field its
// writes read, so endWrites, on the registry's goroutine, sets the
// connection's deadline past it; the wrapper's next write may move it
// again, by its own idle timeout, which ends a write the client does
// not take too.
func connWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// doneWrites is called as Serve returns: endWrites no longer applies,
// and a deadline it set that has not passed is put back as the server
// had it, since the connection may serve another request. One that has
// passed stays: a write may have failed on it, and net/http must not
// reuse the connection. One atomic operation for a request not ended.
func (rw *responseWriter) doneWrites() {
	if rw.ending.CompareAndSwap(nil, writesDone) {
		return
	}
	e := rw.ending.Load()
	e.mu.Lock()
	defer e.mu.Unlock()
	if time.Now().Before(e.at) {
		http.NewResponseController(rw.w).SetWriteDeadline(rw.hardWriteDeadline())
	}
}

// hardWriteDeadline is when the server's write timeout (Config.WriteTimeout)
// ends the response, zero when it has none.
func (rw *responseWriter) hardWriteDeadline() time.Time {
	if f := rw.g.cfg.WriteTimeout; f != nil {
		if t := f(rw.x.r); t > 0 {
			return rw.x.start.Add(t)
		}
	}
	return time.Time{}
}

// writeHeldBytes writes a held answer (writeHeld).
func (rw *responseWriter) writeHeldBytes(b []byte) {
	rw.writeHeld(len(b), func() error { _, err := rw.w.Write(b); return err })
}

// unsent reports whether nothing of the answer has been written to the
// client yet: no header, or one the gateway holds (JSON read whole, a
// refusal or a redirect answered at finish, an ended request's).
func (rw *responseWriter) unsent() bool {
	if !rw.wroteHeader {
		return true
	}
	switch rw.mode {
	case modeJSON, modeRefuse, modeRedirect, modeEnded:
		return true
	}
	return false
}

// dropHeld lets go of what the answer holds.
func (rw *responseWriter) dropHeld() {
	rw.buf = bytes.Buffer{}
	rw.hold(0)
}

// finish completes the response after next returns.
func (rw *responseWriter) finish() {
	defer rw.hold(0)
	if !rw.wroteHeader {
		// next wrote nothing: under Caddy that is the error path, and the
		// error handler answers after us. Leave the status to it, but
		// never leave the upstream's session id in the headers.
		rw.upstreamHeaders()
		return
	}
	rw.recheckHeader()
	rw.dropTrailers()
	switch rw.mode {
	case modeJSON:
		if rw.x.otherCharset && rw.buf.Len() > 0 {
			rw.g.log.Warn("response not filterable", zap.String("reason", "a type that is not JSON names a charset other than utf-8"))
			rw.badGateway()
			return
		}
		// Watching only (watchesLists): a list answer may come as the
		// answer to another request, which clients match by id.
		anyList := rw.watchesLists() && mayList(unsafeString(rw.buf.Bytes()))
		if rw.filter == nil && !rw.rewritesJSON(rw.buf.Bytes()) && !anyList {
			rw.w.WriteHeader(rw.status)
			rw.writeHeldBytes(rw.buf.Bytes())
			return
		}
		out, err := rw.filterJSON(rw.buf.Bytes(), anyList)
		if err != nil && anyList && rw.filter == nil && !mayListLeniently(rw.buf.Bytes()) {
			// Not readable strictly (a member twice in a tool's output,
			// say), but no response of it holds a list a client reads:
			// the answer is not one to look at for lists.
			anyList = false
			out, err = rw.buf.Bytes(), nil
			if rw.rewritesJSON(out) {
				out, err = rw.filterJSON(out, false)
			}
		}
		if err != nil && rw.passUnwrapped() && !anyList {
			rw.g.log.Debug("answer not rewritten", zap.Error(err))
			out, err = rw.leniently(rw.buf.Bytes())
			if out == nil && err == nil {
				err = errors.New("no message of the answer is the caller's to read")
			}
		}
		if err != nil {
			rw.g.log.Warn("response not filterable", zap.Error(err))
			rw.badGateway()
			return
		}
		// What is written is held now, not what came: the two differ
		// when the answer was rewritten.
		rw.buf = bytes.Buffer{}
		if !rw.hold(len(out)) {
			rw.g.log.Warn("answer refused", zap.Error(errHeldBudget), zap.Int64("max_bytes", rw.g.held.max))
			rw.badGateway()
			return
		}
		h := rw.w.Header()
		if rw.filter != nil {
			markPrivate(h)
		}
		h.Set("Content-Length", strconv.Itoa(len(out)))
		rw.w.WriteHeader(rw.status)
		rw.writeHeldBytes(out)
	case modeSSE:
		// An unfinished last event is discarded, as a browser does.
		if err := rw.sse.End(); err != nil {
			rw.g.log.Debug("event stream ended", zap.Error(err))
		}
	case modeRefuse:
		// The type is the upstream's, as long as its header may be (10
		// MiB under reverse_proxy), and may hold what a terminal acts on
		// (a header value may hold any byte from 0x80): cut and escaped
		// as a name in an audit event is.
		ct, _, _ := auditText(rw.w.Header().Get("Content-Type"), maxAuditName, false)
		rw.g.log.Warn("response not filterable", zap.String("content_type", ct))
		rw.badGateway()
	case modeRedirect:
		rw.g.log.Warn("upstream redirect refused", zap.Int("status", rw.status))
		rw.badGateway()
	}
}

func (rw *responseWriter) badGateway() {
	rw.answerInstead(&refusal{status: http.StatusBadGateway, code: codeRefused, message: rw.badGatewayMessage()})
}

// answerInstead answers f, with the request's id, instead of the
// upstream's answer, none of which was written: the header fields that
// describe the upstream's body go. It is a refusal to the client, and
// counted as one.
func (rw *responseWriter) answerInstead(f *refusal) {
	rw.g.metrics.Refusal(refusalReason(f))
	h := rw.w.Header()
	for _, k := range []string{"Content-Length", "Content-Encoding", "ETag", "Last-Modified", "Location", "Mcp-Session-Id", "Set-Cookie"} {
		h.Del(k)
	}
	rw.status, rw.refused = f.status, f.message
	f.id = singleID(rw.x)
	f.write(rw.w)
}

func (rw *responseWriter) badGatewayMessage() string {
	switch {
	case rw.mode == modeRedirect:
		return "the upstream answered with a redirect, which the gateway does not pass: clients would follow it to an answer it cannot check"
	case rw.filter != nil:
		return "the upstream list answer (tools/list, prompts/list, resources/list or resources/templates/list) could not be filtered"
	case rw.resources():
		return "the upstream answer's resources could not be checked against the resource rules"
	case rw.x.pinned:
		return "the upstream answer could not be checked for tool definitions"
	}
	return "the upstream answer's task ids could not be rewritten"
}

// markPrivate keeps shared caches from serving one caller's answer (a
// filtered list, a result with caching hints) to another.
func markPrivate(h http.Header) {
	h.Set("Cache-Control", "private")
	h.Del("ETag")
	h.Del("Last-Modified")
}

// Canonical names of response fields the gateway owns.
const (
	hWWWAuthenticate = "Www-Authenticate"
	hDPoPNonce       = "Dpop-Nonce"
	hClearSiteData   = "Clear-Site-Data"
)

// upstreamDropped are the upstream's response fields upstreamHeaders
// drops: Set-Cookie and WWW-Authenticate (why: there), and those whose
// effect in a browser reaches past the answer to the whole origin, the
// issuer's pages on a shared host included: Clear-Site-Data, and NEL
// with the Report-To it names, a network error logging policy the
// browser keeps and under which it reports every request to the origin,
// its URL (an /authorize request's state, a redirect's code) included,
// to the collector named (review s17-fresh F3); and
// Access-Control-Allow-Credentials: the gateway decides CORS (its
// preflight allows no credentials, and Allow-Origin is its own).
var upstreamDropped = [...]string{"Set-Cookie", hWWWAuthenticate, hClearSiteData, "Nel", "Report-To", "Access-Control-Allow-Credentials"}

// upstreamTrailersDropped are the trailer forms (http.TrailerPrefix) that
// recheckHeader drops: those of upstreamDropped and hostFields, and of the
// fields whose header value the gateway sets (DPoP-Nonce, Mcp-Session-Id).
var upstreamTrailersDropped = func() []string {
	var out []string
	for _, k := range slices.Concat(upstreamDropped[:], hostFields[:], []string{hDPoPNonce, hSessionID}) {
		out = append(out, http.TrailerPrefix+k)
	}
	return out
}()

// upstreamHeaders fixes the upstream's response headers before they are
// written: the session id is wrapped, and Set-Cookie is dropped, as
// Cookie is on the way up: MCP does not use cookies, and on a host
// shared with the issuer an MCP server could otherwise set the issuer's
// login cookies (session fixation). Clear-Site-Data goes for the same
// reason: "cookies" would end the user's login session at the issuer,
// "storage" the tokens of a browser client on the host; NEL and
// Report-To likewise (upstreamDropped). WWW-Authenticate
// is dropped too: the gateway is the resource server clients authorize
// for, and an upstream challenge naming other metadata
// (resource_metadata) would send them to another authorization server.
func (rw *responseWriter) upstreamHeaders() {
	h := rw.w.Header()
	rw.dropFields(h, false)
	if origin := rw.x.r.Header[hOrigin]; len(origin) != 0 {
		// An upstream answering CORS itself (Access-Control-Allow-Origin:
		// *) has its value added to the gateway's, and a browser reads
		// no answer with two: the gateway decides who may read. The
		// request got here with one allowed Origin (checkOrigin); it is
		// read again rather than kept in the exchange, which would leave
		// its size class (TestExchangeSizeClass).
		h[hAllowOrigin] = origin[:1:1]
	}
	rw.keepPrior(h)
	rw.keepOwnNonce(h)
	rw.rewriteSession(h)
}

// hostFields are response fields a browser applies to the whole host, the
// issuer's pages on a shared host included: Strict-Transport-Security
// (an upstream's max-age=0 would lift the HSTS policy those pages rely
// on, where the operator sets none in front) and Alt-Svc (it would send
// the browser's next connections to the host elsewhere, or clear
// Caddy's own HTTP/3). Their values set before the gateway, by the server
// and the operator, stay; the upstream's, which reverse_proxy adds after
// them, go (review s17-fresh2).
var hostFields = [...]string{hHSTS, hAltSvc}

const (
	hHSTS   = "Strict-Transport-Security"
	hAltSvc = "Alt-Svc"
)

// dropFields deletes from h, in one pass over its fields, what the
// upstream may not set: the upstreamDropped fields, with trailers the
// upstreamTrailersDropped forms, and the fields keepPrior and
// keepOwnNonce then set where the gateway has values of its own (a
// hostFields field held before next, the gateway's DPoP-Nonce). An
// answer's header holds a few fields, while a deletion per name to drop,
// most of them absent, hashed some twenty names on every answer.
func (rw *responseWriter) dropFields(h http.Header, trailers bool) {
	for k := range h {
		if rw.drops(k, trailers) {
			delete(h, k)
		}
	}
}

// drops reports whether dropFields deletes the field named k.
func (rw *responseWriter) drops(k string, trailers bool) bool {
	switch {
	case slices.Contains(upstreamDropped[:], k):
		return true
	case k == hDPoPNonce:
		return rw.x.ownNonce == ""
	case trailers && strings.HasPrefix(k, http.TrailerPrefix):
		return slices.Contains(upstreamTrailersDropped, k)
	}
	for i, f := range hostFields {
		if k == f {
			return rw.prior == nil || len(rw.prior[i]) == 0
		}
	}
	return false
}

// keepPrior leaves each hostFields field with the values it had before
// next wrote to the header, put back rather than counted: after a 1xx
// httputil.ReverseProxy clears the whole header and reverse_proxy puts
// back what it held before the 1xx's fields, so the values the header
// holds by the final answer are not the operator's followed by the
// upstream's (review s17-fresh3 F1). Those it held none of went in
// dropFields.
func (rw *responseWriter) keepPrior(h http.Header) {
	if rw.prior == nil {
		return
	}
	for i, k := range hostFields {
		if v := rw.prior[i]; len(v) > 0 {
			h[k] = v[:len(v):len(v)] // an Add after copies, never writes into prior
		}
	}
}

// keepOwnNonce leaves only the gateway's own DPoP-Nonce, the one Serve
// set (x.ownNonce, set again here: httputil.ReverseProxy clears the
// header after a 1xx): the gateway checks the proofs, and an upstream's
// nonce beside or instead of its own would spoil the client's next
// proof. Without one of its own, the upstream's went in dropFields.
func (rw *responseWriter) keepOwnNonce(h http.Header) {
	own := rw.x.ownNonce
	if own == "" {
		return
	}
	if v := h[hDPoPNonce]; len(v) != 1 || v[0] != own {
		h[hDPoPNonce] = []string{own}
	}
}

// rewriteSession replaces the upstream's Mcp-Session-Id with the wrapped,
// principal-bound one. 2026-07-28 has no sessions: an upstream id is
// dropped rather than echoed.
func (rw *responseWriter) rewriteSession(h http.Header) {
	values := h[hSessionID]
	if len(values) == 0 || (len(values) == 1 && values[0] == rw.wrapped) {
		return // none, or already rewritten (a 1xx went first)
	}
	h.Del("Mcp-Session-Id")
	if !rw.x.rev.hasSessions() {
		return
	}
	wrapped, err := rw.g.wrapSession(rw.x.p, values[0])
	if err != nil {
		rw.g.log.Warn("upstream session id dropped", zap.Error(err))
		return
	}
	h.Set("Mcp-Session-Id", wrapped)
	rw.wrapped = wrapped
}

// filterJSON filters the tools/list answers in a JSON response body (one
// message, or a batch answer).
func (rw *responseWriter) filterJSON(body []byte, anyList bool) ([]byte, error) {
	msgs, batch, err := mcpparse.Parse(body, mcpparse.Limits{AllowBatches: true})
	if err != nil && anyList {
		return nil, fmt.Errorf("%w: %w", errListUnreadable, err)
	}
	if err != nil {
		return nil, err
	}
	parts := make([][]byte, 0, len(msgs))
	for i := range msgs {
		part, err := rw.filterMessage(&msgs[i], anyList)
		if err != nil {
			return nil, err
		}
		if part != nil {
			parts = append(parts, part)
		}
	}
	if len(parts) == 0 {
		return nil, errors.New("no message of the answer is the caller's to read")
	}
	if !batch {
		return parts[0], nil
	}
	out := []byte{'['}
	out = append(out, bytes.Join(parts, []byte{','})...)
	return append(out, ']'), nil
}

// filterMessage returns the message, filtered if it answers a list
// request (with anyList, if it is any response with a list),
// with its task ids wrapped if the request may produce some.
func (rw *responseWriter) filterMessage(m *mcpparse.Message, anyList bool) ([]byte, error) {
	out := m.Raw
	if m.Kind == mcpparse.KindResponse && (rw.filter != nil || anyList) {
		var err error
		if out, err = rw.filterList(m, anyList); err != nil {
			return nil, err
		}
	}
	if rw.resources() && mayCarryResources(out) {
		var err error
		if out, err = rw.g.checkResources(rw.x.p, m, out, rw.embedded); out == nil || err != nil {
			return nil, err // nil, nil: the message is dropped
		}
	}
	if rw.initIDs != nil && m.Kind == mcpparse.KindResponse && (rw.initOnly || containsID(rw.initIDs, m.ID)) {
		var err error
		if out, err = stripTasksCapability(out); err != nil {
			return nil, err
		}
	}
	if rw.cache && m.Kind == mcpparse.KindResponse && mcpparse.SameID(m.ID, rw.x.msgs[0].ID) && cachingHints(out) {
		var err error
		if out, err = privateCacheScope(out, true); err != nil {
			return nil, err
		}
	}
	if rw.states {
		var err error
		if out, err = rw.g.wrapRequestState(rw.x, m, out); err != nil {
			return nil, err
		}
	}
	if rw.tasks {
		return rw.g.wrapTaskIDs(rw.x, m, out)
	}
	if m.Kind == mcpparse.KindNotification && m.Method == "notifications/tasks" && rw.x.rev.bindsTaskIDs() {
		// The request can have no task of the caller's (rewritesTasks),
		// so the task this names is another's: dropped, as wrapTaskIDs
		// drops those on the streams it reads.
		return nil, nil
	}
	return out, nil
}

// mayBeTaskStatus reports whether b, an answer (or an event's data) to
// a 2026-07-28 request that can have no task of the caller's (not a
// tools/call declaring the Tasks extension, a task request or a
// subscriptions/listen, whose answers wrapTaskIDs reads), may hold a
// notifications/tasks, which is then another caller's (filterMessage):
// an upstream that broadcasts every task's status sends them on every
// stream, the status and final result of another caller's call.
func (rw *responseWriter) mayBeTaskStatus(b []byte) bool {
	return !rw.tasks && rw.x.rev.bindsTaskIDs() && mayName(b, "tasks")
}

// leniently is an answer the strict read refused (duplicate members, say),
// as it goes out: unchanged, except that its caching hints are marked
// private (rewritesCache), and the answer to a lone initialize
// loses its tasks capability as encoding/json reads the answer (the last
// of duplicate members, every spelling of tasks), which this does not
// depend on to be safe: the gateway refuses task requests there anyway.
//
// With resource rules its resources are checked as encoding/json reads
// it (checkLeniently): nil, nil when every message of it is dropped;
// and, where task ids are bound, nil, nil for a notifications/tasks, and
// for any message on a subscriptions/listen stream.
func (rw *responseWriter) leniently(msg []byte) ([]byte, error) {
	if rw.tasks && rw.x.listen || rw.x.rev.bindsTaskIDs() && isTaskStatus(msg) {
		// Whose task a notifications/tasks the strict read refused
		// names cannot be told (wrapTaskIDs drops those of others, and
		// filterMessage every one where the request can have no task
		// of the caller's), and on a subscriptions/listen stream none
		// is the caller's and any message may be one as some client
		// reads it: dropped.
		return nil, nil
	}
	if rw.embedded && mayCarryResources(msg) {
		var err error
		if msg, err = rw.g.checkLeniently(rw.x.p, msg); msg == nil || err != nil {
			return nil, err
		}
	}
	if rw.cache && cachingHints(msg) {
		// As filterMessage would: a result read leniently is still
		// the caller's only.
		var err error
		if msg, err = privateCacheScope(msg, true); err != nil {
			return nil, err
		}
	}
	if !rw.initOnly {
		return msg, nil
	}
	if out, err := stripTasksCapability(msg); err == nil {
		return out, nil
	}
	return msg, nil
}

// isTaskStatus reports whether msg, read as encoding/json reads it (its
// first JSON value, as the Go SDK's client reads a message), is or holds
// a notifications/tasks under any member a client may read as method
// (its exact name, as the TypeScript and Python SDKs read it, beside a
// variant encoding/json would take instead: SameLooseName). A leading
// UTF-8 byte order mark is dropped first, as the TypeScript SDK's
// client drops it (fetch's json()). Text encoding/json still cannot read
// that may name tasks counts as one (mayName, which a NUL byte, as UTF-16
// and UTF-32 text holds, always satisfies): clients read what it
// refuses, the Python SDK's NaN and Infinity (pydantic reads them),
// UTF-16 and UTF-32 text (Python's json.loads).
func isTaskStatus(msg []byte) bool {
	msg = bytes.TrimPrefix(msg, []byte("\ufeff"))
	var v json.RawMessage
	if json.NewDecoder(bytes.NewReader(msg)).Decode(&v) != nil {
		return mayName(msg, "tasks")
	}
	var batch []json.RawMessage
	if json.Unmarshal(v, &batch) != nil {
		batch = []json.RawMessage{v}
	}
	for _, raw := range batch {
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			continue
		}
		for name, value := range m {
			var method string
			if mcpparse.SameLooseName(name, "method") && json.Unmarshal(value, &method) == nil && method == "notifications/tasks" {
				return true
			}
		}
	}
	return false
}

// checkLeniently is checkResources for an answer (one message or a batch)
// the strict parse refused, read as encoding/json reads it: the last of
// a member given twice, as JavaScript's, Python's and Go's decoders take
// it; a member spelt like one checked but for case, '-' or '_' is an
// error all the same (exactMember). An answer that is not JSON is an
// error: the Go SDK's client reads a message's first JSON value and
// ignores what follows it (segmentio's Decoder.Decode), so a message
// with text after it is read all the same.
func (g *Gateway) checkLeniently(p *principal, msg []byte) ([]byte, error) {
	var batch []json.RawMessage
	if json.Unmarshal(msg, &batch) != nil {
		batch = nil
		if !json.Valid(msg) {
			return nil, errors.New("an answer that may carry resources is not JSON")
		}
	}
	one := batch == nil
	if one {
		batch = []json.RawMessage{msg}
	}
	kept, changed := batch[:0], false
	for _, raw := range batch {
		var env struct {
			Method *string          `json:"method"`
			ID     json.RawMessage  `json:"id"`
			Result *json.RawMessage `json:"result"`
		}
		m := mcpparse.Message{Kind: mcpparse.KindRequest}
		if json.Unmarshal(raw, &env) == nil {
			switch {
			case env.Method != nil && env.ID == nil:
				m.Kind, m.Method = mcpparse.KindNotification, *env.Method
			case env.Method != nil:
				m.Method = *env.Method
			case env.Method == nil:
				m.Kind = mcpparse.KindResponse
			}
		}
		out, err := g.checkResources(p, &m, raw, true)
		if err != nil {
			return nil, err
		}
		changed = changed || !bytes.Equal(out, raw)
		if out != nil {
			kept = append(kept, out)
		}
	}
	switch {
	case !changed:
		return msg, nil
	case len(kept) == 0:
		return nil, nil
	case one:
		return kept[0], nil
	}
	return json.Marshal(kept)
}

// stripTasksCapability removes the tasks capability from an initialize
// result of a revision before 2026-07-28, where the gateway refuses task
// requests (refuseTasks2025): a client that saw it would send its tool
// calls as tasks, and have them refused, rather than plainly. Every
// member of result.capabilities that a JSON decoder may read as "tasks"
// goes (case variants, and those encoding/json folds, such as U+017F for
// s), under every member that may read as "capabilities"; the rest is
// kept. An error answer, or a result without such members, is returned
// as it is.
func stripTasksCapability(msg []byte) ([]byte, error) {
	return editResult(msg, func(result map[string]json.RawMessage) (bool, error) {
		changed := false
		for name, v := range result {
			if !mcpparse.SameName(name, "capabilities") {
				continue
			}
			var caps map[string]json.RawMessage
			if json.Unmarshal(v, &caps) != nil {
				continue // not an object: no capability to take out
			}
			n := len(caps)
			maps.DeleteFunc(caps, func(k string, _ json.RawMessage) bool { return mcpparse.SameName(k, "tasks") })
			if len(caps) == n {
				continue
			}
			b, err := json.Marshal(caps)
			if err != nil {
				return false, err
			}
			result[name], changed = b, true
		}
		return changed, nil
	})
}

// checksContents reports whether the answer's resources are checked
// (checkResources). A read may be answered with the contents of other
// URIs than its own (a collection resolving into its items, which MCP
// allows), and a caller allowed file:/// must not get file:///secret/'s
// that way. Every caller is refused some URI (those of a scheme no rule
// names: "no rule"), so every caller's reads are checked: the answer to
// a request with a resources/read (a notification too, which a lenient
// server may answer), and a resumption (a GET with Last-Event-ID), whose
// stream replays the answers after the event named, a read's among them
// (a 2025-11-25 server may close a read's stream after its priming event
// and answer there). With resource rules configured, every answer is
// read for resources besides (responseWriter.embedded).
func (x *exchange) checksContents() bool {
	if x.r.Method == http.MethodGet {
		return len(x.r.Header[hLastEventID]) > 0
	}
	for i := range x.msgs {
		if m := &x.msgs[i]; m.Kind != mcpparse.KindResponse && m.Method == "resources/read" {
			return true
		}
	}
	return false
}

// mayCarryResources reports whether an answer may hold what
// checkResources checks: a member or value that reads as contents or
// resource (resources/updated among them), as mayName finds them.
func mayCarryResources(b []byte) bool {
	return mayEscapeLetters(b, "resourcecontents", looseSeps) || spelt(b, "resource", looseSeps) || spelt(b, "contents", looseSeps)
}

// checkResources takes out of one message of an answer what p's resource
// rules refuse, as a resources/read of the URI would be decided
// (decideURI): of a response's result.contents (a read's answer, on any
// stream), the contents whose uri p may not read; of its result.content
// (a tool's result) and of each of result.messages' content (a prompt's),
// an embedded resource (type "resource") whose resource.uri p may not
// read, replaced by withheldResource. A notifications/resources/updated
// for such a URI is dropped (nil). Only result.contents is checked unless
// embedded (resource rules are configured: checksContents). A resource_link names a URI only and
// passes. What cannot be judged is an error, which fails the answer: a
// content that is not an object, an embedded resource without a string
// uri, and a member a client may read as one of these but spelt
// otherwise (in case, with '-' or '_', cut at a NUL). msg was read
// strictly (no member twice), so encoding/json reads the same members.
func (g *Gateway) checkResources(p *principal, m *mcpparse.Message, msg []byte, embedded bool) ([]byte, error) {
	if !embedded {
		if m.Kind != mcpparse.KindResponse {
			return msg, nil
		}
		return editResult(msg, func(result map[string]json.RawMessage) (bool, error) { return g.checkReadContents(p, result) })
	}
	switch {
	case m.Kind == mcpparse.KindNotification && m.Method == "notifications/resources/updated":
		uri, err := updatedURI(msg)
		if err != nil {
			return nil, err
		}
		if !g.mayRead(p, uri) {
			return nil, nil
		}
		return msg, nil
	case m.Kind == mcpparse.KindNotification && m.Method == "notifications/tasks":
		return editMember(msg, "params", func(params map[string]json.RawMessage) (bool, error) { return g.checkCarried(p, params, false) })
	case m.Kind != mcpparse.KindResponse:
		// A server's request: a sampling request's messages may hold
		// tool results, and those embedded resources.
		return editMember(msg, "params", func(params map[string]json.RawMessage) (bool, error) { return g.checkRequestParams(p, params) })
	}
	return editResult(msg, func(result map[string]json.RawMessage) (bool, error) {
		changed, err := g.checkReadContents(p, result)
		if err != nil {
			return false, err
		}
		c, err := g.checkCarried(p, result, false)
		return changed || c, err
	})
}

// checkCarried checks, in place, the contents a result (or a task's
// notifications/tasks params) may carry: content (a tool's), messages
// (a prompt's), the requests of inputRequests (an input-required result
// or task, 2026-07-28), and, unless nested, a task's final result (the
// Tasks extension: tasks/get, notifications/tasks) as a result.
func (g *Gateway) checkCarried(p *principal, obj map[string]json.RawMessage, nested bool) (bool, error) {
	changed, err := editIn(obj, "content", func(v *json.RawMessage) (bool, error) { return g.checkEmbedded(p, v, true, false) })
	if err != nil {
		return false, err
	}
	c, err := editIn(obj, "messages", func(v *json.RawMessage) (bool, error) { return g.checkMessages(p, v) })
	if err != nil {
		return false, err
	}
	changed = changed || c
	c, err = editIn(obj, "inputRequests", func(v *json.RawMessage) (bool, error) {
		var reqs map[string]map[string]json.RawMessage
		if json.Unmarshal(*v, &reqs) != nil {
			return false, errors.New("inputRequests is not an object of requests")
		}
		c := false
		for _, req := range reqs {
			ch, err := editIn(req, "params", func(params *json.RawMessage) (bool, error) {
				return editObject(params, func(m map[string]json.RawMessage) (bool, error) { return g.checkRequestParams(p, m) })
			})
			if err != nil {
				return false, err
			}
			c = c || ch
		}
		if !c {
			return false, nil
		}
		b, err := json.Marshal(reqs)
		*v = b
		return err == nil, err
	})
	if err != nil {
		return false, err
	}
	changed = changed || c
	if nested {
		return changed, nil
	}
	v, ok, err := exactMember(obj, "result")
	if err != nil || !ok || len(v) == 0 || v[0] != '{' {
		return changed, err // a result that is no object carries none
	}
	c, err = editObject(&v, func(m map[string]json.RawMessage) (bool, error) {
		changed, err := g.checkReadContents(p, m)
		if err != nil {
			return false, err
		}
		c, err := g.checkCarried(p, m, true)
		return changed || c, err
	})
	if c {
		obj["result"], changed = v, true
	}
	return changed, err
}

// checkRequestParams checks the params of a server's request (sampling's
// messages, whose tool results may embed resources).
func (g *Gateway) checkRequestParams(p *principal, params map[string]json.RawMessage) (bool, error) {
	v, ok, err := exactMember(params, "messages")
	if err != nil || !ok {
		return false, err
	}
	c, err := g.checkMessages(p, &v)
	if c {
		params["messages"] = v
	}
	return c, err
}

// checkReadContents takes out of result.contents the contents whose uri
// p may not read.
func (g *Gateway) checkReadContents(p *principal, result map[string]json.RawMessage) (bool, error) {
	v, ok, err := exactMember(result, "contents")
	if err != nil || !ok {
		return false, err
	}
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return false, errors.New("result.contents is not an array")
	}
	kept := items[:0]
	for _, it := range items {
		uri, err := contentURI(it, "a content of result.contents")
		if err != nil {
			return false, err
		}
		if g.mayRead(p, uri) {
			kept = append(kept, it)
		}
	}
	if len(kept) == len(items) {
		return false, nil
	}
	b, err := json.Marshal(kept)
	if err != nil {
		return false, err
	}
	result["contents"] = b
	return true, nil
}

// withheldResource replaces an embedded resource its reader may not read:
// a text content, so that a prompt message keeps a content and a tool
// result its order.
const withheldResource = `{"type":"text","text":"[a resource was withheld by the gateway: the caller may not read it]"}`

// checkMessages checks the content of each of a prompt's messages
// (checkEmbedded), v in place.
func (g *Gateway) checkMessages(p *principal, v *json.RawMessage) (bool, error) {
	var msgs []map[string]json.RawMessage
	if err := json.Unmarshal(*v, &msgs); err != nil {
		return false, errors.New("result.messages is not an array of objects")
	}
	changed := false
	for _, pm := range msgs {
		c, ok, err := exactMember(pm, "content")
		if err != nil {
			return false, err
		}
		if !ok {
			continue
		}
		ch, err := g.checkEmbedded(p, &c, len(c) > 0 && c[0] == '[', false)
		if err != nil {
			return false, err
		}
		if ch {
			pm["content"], changed = c, true
		}
	}
	if !changed {
		return false, nil
	}
	b, err := json.Marshal(msgs)
	*v = b
	return err == nil, err
}

// checkEmbedded replaces in v, one content or (list) an array of them,
// each embedded resource p may not read by withheldResource, checking
// a tool_result's content (sampling) so unless inner: one nested
// deeper cannot be judged.
func (g *Gateway) checkEmbedded(p *principal, v *json.RawMessage, list, inner bool) (bool, error) {
	items := []json.RawMessage{*v}
	if list {
		if err := json.Unmarshal(*v, &items); err != nil {
			return false, errors.New("result.content is not an array")
		}
	}
	changed := false
	for i, it := range items {
		var c map[string]json.RawMessage
		if json.Unmarshal(it, &c) != nil {
			return false, errors.New("a content is not an object")
		}
		t, ok, err := exactMember(c, "type")
		if err != nil {
			return false, err
		}
		var typ string
		if ok && json.Unmarshal(t, &typ) != nil {
			return false, errors.New("a content's type is not a string")
		}
		if typ == "tool_result" {
			if inner {
				return false, errors.New("a tool_result inside a tool_result")
			}
			rc, ok, err := exactMember(c, "content")
			if err != nil || !ok {
				if err != nil {
					return false, err
				}
				continue
			}
			ch, err := g.checkEmbedded(p, &rc, true, true)
			if err != nil {
				return false, err
			}
			if ch {
				c["content"] = rc
				b, err := json.Marshal(c)
				if err != nil {
					return false, err
				}
				items[i], changed = b, true
			}
			continue
		}
		r, hasResource, err := exactMember(c, "resource")
		if err != nil {
			return false, err
		}
		if typ != "resource" && !hasResource {
			continue
		}
		uri, err := contentURI(r, "an embedded resource")
		if err != nil {
			return false, err
		}
		if !g.mayRead(p, uri) {
			items[i], changed = json.RawMessage(withheldResource), true
		}
	}
	if !changed {
		return false, nil
	}
	if !list {
		*v = items[0]
		return true, nil
	}
	b, err := json.Marshal(items)
	*v = b
	return err == nil, err
}

// updatedURI is params.uri of a notifications/resources/updated.
func updatedURI(msg []byte) (string, error) {
	var n struct {
		Params map[string]json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(msg, &n); err != nil {
		return "", errors.New("params is not an object")
	}
	return memberURI(n.Params, "the params of notifications/resources/updated")
}

// contentURI is the uri of item, a resource's contents (what names it:
// what).
func contentURI(item json.RawMessage, what string) (string, error) {
	var members map[string]json.RawMessage
	if json.Unmarshal(item, &members) != nil || members == nil {
		return "", errors.New(what + " is not an object")
	}
	return memberURI(members, what)
}

// memberURI is the uri member of members, a string.
func memberURI(members map[string]json.RawMessage, what string) (string, error) {
	v, ok, err := exactMember(members, "uri")
	if err != nil {
		return "", err
	}
	var uri string
	if !ok || len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &uri) != nil {
		return "", errors.New(what + " has no string uri")
	}
	return uri, nil
}

// mayRead reports whether p may read uri: a resources/read of it would be
// allowed.
func (g *Gateway) mayRead(p *principal, uri string) bool {
	d, err := g.policy.decideURI(p, uri)
	return err == nil && d.allow
}

// encoded reports whether a request or an answer has a content coding
// other than identity.
func encoded(h http.Header) bool {
	for _, v := range h[hContentEncoding] {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return true
			}
		}
	}
	return false
}

// unsafeString views b as a string for reading while b is not changed.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// unsafeBytes views s as bytes for reading only.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// containsFold reports whether s contains the ASCII string sub in any
// case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// errListUnreadable: an event that may hold a list answer could not be
// read strictly. It ends the stream, whatever else it carries.
var errListUnreadable = errors.New("an event that may hold a list answer could not be read")

// anyLists are the lists looked for in any response of a stream (see
// filterList), tools first.
var anyLists = [...]mcpparse.List{mcpparse.ListTools, mcpparse.ListPrompts, mcpparse.ListResources, mcpparse.ListResourceTemplates}

// replays reports whether the answer is a resumed stream (a GET with
// Last-Event-ID): it replays the events after the one named, the
// answers of earlier requests among them, whose ids the gateway does not
// know.
func (rw *responseWriter) replays() bool {
	return rw.x.r.Method == http.MethodGet && len(rw.x.r.Header[hLastEventID]) > 0
}

// watchesLists reports whether every response of the answer is looked
// at for a list (filterList's anyList), whatever request it answers:
// where every answer is read anyway (tool pinning, resource rules), and
// on a resumed stream. An upstream may send a list answer on the stream,
// or in the JSON answer, of another request, and a caller can make it:
// the TypeScript SDK sends an answer to the POST that carried its id
// last (a tools/call reusing the id of a pending resources/list gets the
// list), the Python SDK to the one whose id is equal as a string (1 and
// "1").
func (rw *responseWriter) watchesLists() bool {
	return rw.x.pinned || rw.embedded || rw.replays()
}

// filterList filters a response that answers a list request (the
// filter's) as the list it asked for. With anyList (watchesLists), any
// response whose result has one of the lists is filtered as that list's
// answer too: clients match answers by id on any stream.
func (rw *responseWriter) filterList(m *mcpparse.Message, anyList bool) ([]byte, error) {
	out, filtered := m.Raw, false
	asked, answers := mcpparse.List(0), false
	if f := rw.filter; f != nil {
		var err error
		if asked, answers, err = f.answers(m.ID); err != nil {
			return nil, err
		}
		if answers {
			if out, err = mcpparse.FilterList(out, asked, rw.g.listAllow(rw.x, asked)); err != nil {
				return nil, err
			}
			filtered = true
		}
	}
	sealFor := asked
	for _, list := range anyLists {
		if !anyList || answers && list == asked || !mayHoldList(out, list) {
			continue
		}
		kept, err := mcpparse.FilterList(out, list, rw.g.listAllow(rw.x, list))
		switch {
		case errors.Is(err, mcpparse.ErrNoList):
		case err != nil:
			return nil, fmt.Errorf("%w: %w", errListUnreadable, err)
		default:
			out, filtered = kept, true
			if !answers {
				sealFor = list
			}
		}
	}
	if !filtered {
		return out, nil
	}
	out, err := rw.g.sealNextCursor(rw.x, sealFor, out)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errListUnreadable, err)
	}
	return privateCacheScope(out, rw.x.rev.requiresCacheScope())
}

// privateCacheScope marks a filtered list result cacheScope
// "private" (2026-07-28, SEP-2549): the list now depends on who asks. A
// 2026-07-28 result gets the member even if the upstream left it out;
// older results are changed only if they carry one. A member Go's
// decoders may read as cacheScope ("cachescope", which encoding/json
// takes when it comes last, "cache_scope" to json/v2) is taken out: its
// scope is not the one left. Maps keep names exact.
func privateCacheScope(msg []byte, required bool) ([]byte, error) {
	return editResult(msg, func(result map[string]json.RawMessage) (bool, error) {
		scope, has := result["cacheScope"]
		variant := false
		for k := range result {
			if k != "cacheScope" && mcpparse.SameLooseName(k, "cacheScope") {
				delete(result, k)
				variant = true
			}
		}
		if !variant && ((!has && !required) || string(scope) == `"private"`) {
			return false, nil
		}
		result["cacheScope"] = json.RawMessage(`"private"`)
		return true, nil
	})
}

// editResult returns msg with its result changed by edit, msg itself when
// edit changes nothing or msg is an error answer. Maps keep names exact.
func editResult(msg []byte, edit func(result map[string]json.RawMessage) (bool, error)) ([]byte, error) {
	return editMember(msg, "result", edit)
}

// editMember is editResult for msg's member name (params, result),
// which must be an object where it is given. A member spelt like it but
// for case, '-' or '_' is an error: Go's decoders, matching names
// without case, read "Result" as the result (an answer the strict
// parse refuses comes here as encoding/json reads it).
func editMember(msg []byte, name string, edit func(map[string]json.RawMessage) (bool, error)) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(msg, &top); err != nil {
		return nil, err
	}
	// Without the member: an error response, a request without params.
	changed, err := editIn(top, name, func(v *json.RawMessage) (bool, error) { return editObject(v, edit) })
	if err != nil || !changed {
		return msg, err
	}
	return json.Marshal(top)
}

// editIn changes obj's member name by edit, if obj has it (exactMember:
// a member spelt like it but for case, '-' or '_' is an error).
func editIn(obj map[string]json.RawMessage, name string, edit func(*json.RawMessage) (bool, error)) (bool, error) {
	v, ok, err := exactMember(obj, name)
	if err != nil || !ok {
		return false, err
	}
	changed, err := edit(&v)
	if err != nil || !changed {
		return false, err
	}
	obj[name] = v
	return true, nil
}

// editObject changes the object v by edit, in place.
func editObject(v *json.RawMessage, edit func(map[string]json.RawMessage) (bool, error)) (bool, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(*v, &obj); err != nil {
		return false, err
	}
	if changed, err := edit(obj); err != nil || !changed {
		return false, err
	}
	b, err := json.Marshal(obj)
	*v = b
	return err == nil, err
}

func containsID(ids [][]byte, id []byte) bool {
	for _, x := range ids {
		if mcpparse.SameID(x, id) {
			return true
		}
	}
	return false
}

// writeEvents takes the upstream's event stream as next writes it, in
// next's goroutine: each event it completes is filtered, written, and
// flushed at once; only the bytes of an unfinished event are held between
// writes, none while the stream is idle. An error (an event too large or
// unreadable, a failed write to the client) is returned, and again for
// every later write, so that next's copy stops and the upstream request
// ends.
func (rw *responseWriter) writeEvents(b []byte) (int, error) {
	wrote := false
	err := rw.sse.Feed(b, func(ev mcpparse.Event) error {
		wrote = true
		return rw.writeEvent(ev)
	})
	fits := err == nil && rw.hold(rw.sse.Held())
	if !fits && rw.optional() && !rw.tasks {
		// Where task ids are bound, the rest of the stream is read
		// all the same: it may carry other callers' notifications/tasks,
		// which are dropped (leniently), with their status and final
		// result.
		if rest, ok := rw.sse.Detach(); ok {
			// An event the gateway cannot read (over maxFilteredBody,
			// not UTF-8) or hold (past the caller's share) in a stream
			// read only to wrap a request state: the rest of the stream
			// passes unread, as a large JSON answer does.
			rw.mode = modePass
			rw.dropHeld()
			if _, err := rw.w.Write(rest); err != nil {
				return 0, err
			}
			http.NewResponseController(rw.w).Flush()
			return len(b), nil
		}
	}
	if err == nil && !fits {
		// An unfinished event is held until it ends: past the bound the
		// stream ends here, as for an event over maxFilteredBody.
		rw.g.log.Warn("event stream ended", zap.Error(errHeldBudget), zap.Int64("max_bytes", rw.g.held.max))
		rw.sse.End() // drops the unfinished event; later writes fail too
		rw.dropHeld()
		err = errHeldBudget
	}
	if err == nil && wrote {
		if err = http.NewResponseController(rw.w).Flush(); err != nil {
			rw.g.log.Debug("event stream ended", zap.Error(err))
		}
	}
	if err != nil {
		rw.sse.End() // drops what the splitter kept for Detach
		return 0, err
	}
	return len(b), nil
}

// writeEvent writes one event, its tools/list answer filtered and its
// task ids wrapped.
func (rw *responseWriter) writeEvent(ev mcpparse.Event) error {
	if ev.Data != "" {
		err := rw.filterEvent(&ev, true)
		if errors.Is(err, errListUnreadable) && rw.filter == nil && !mayListLeniently(unsafeBytes(ev.Data)) {
			// As for a JSON answer (finish): no list a client reads.
			err = rw.filterEvent(&ev, false)
		}
		if err != nil {
			if !rw.passUnwrapped() || errors.Is(err, errListUnreadable) {
				return err
			}
			rw.g.log.Debug("answer not rewritten", zap.Error(err)) // the event goes out as it came
			out, err := rw.leniently([]byte(ev.Data))
			if err != nil {
				return err
			}
			ev.Data, ev.HasData = string(out), out != nil
		}
	}
	if h := rw.holding; h != nil && h.n > 0 {
		// The event came in pieces and is held (counted in held) while
		// it is written: as a held answer.
		return rw.writeHeld(len(ev.Raw), func() error { return mcpparse.WriteEvent(rw.w, ev) })
	}
	return mcpparse.WriteEvent(rw.w, ev)
}

// filterEvent filters an event's messages as filterMessage does; with
// lists, any response there is looked at for a list (watchesLists).
func (rw *responseWriter) filterEvent(ev *mcpparse.Event, lists bool) error {
	// A list answer is looked for on every stream that is read anyway,
	// and on a resumed one (watchesLists).
	anyList := lists && rw.watchesLists() && mayList(ev.Data)
	if rw.filter == nil && !rw.rewritesOther() && !(rw.resources() && mayCarryResources(unsafeBytes(ev.Data))) && !anyList && !mayChangeList(ev.Data) && !rw.mayBeTaskStatus(unsafeBytes(ev.Data)) {
		return nil // watching only, and no list_changed or tools here
	}
	msgs, batch, err := mcpparse.Parse([]byte(ev.Data), mcpparse.Limits{AllowBatches: true})
	if err != nil && anyList {
		return fmt.Errorf("%w: %w", errListUnreadable, err)
	}
	if err != nil {
		return err
	}
	if rw.x.pinned {
		for i := range msgs {
			if msgs[i].Kind == mcpparse.KindNotification && msgs[i].Method == "notifications/tools/list_changed" {
				rw.g.pins.listChanged()
			}
		}
	}
	changed := false
	parts := make([][]byte, 0, len(msgs))
	for i := range msgs {
		part, err := rw.filterMessage(&msgs[i], anyList)
		if err != nil {
			return err
		}
		changed = changed || !bytes.Equal(part, msgs[i].Raw)
		if part != nil {
			parts = append(parts, part)
		}
	}
	switch {
	case !changed:
		return nil
	case len(parts) == 0:
		// Every message dropped (checkResources): the event keeps its
		// id, for resumption, and carries no data, which clients skip.
		ev.Data, ev.HasData = "", false
		return nil
	case batch:
		ev.Data = "[" + string(bytes.Join(parts, []byte{','})) + "]"
	default:
		ev.Data = string(parts[0])
	}
	return nil
}

// listWords are the result members of anyLists, as maySpell reads them.
var listWords = [...]string{
	mcpparse.ListTools:             "tools",
	mcpparse.ListPrompts:           "prompts",
	mcpparse.ListResources:         "resources",
	mcpparse.ListResourceTemplates: "resourcetemplates",
}

// mayHoldList reports whether an answer may hold the list's result
// member as a lenient client reads it: its name in any ASCII case, with
// '_' or '-' between its letters (Go's json/v2 ignores them when it
// matches names case-insensitively), with U+017F (long s) for an s,
// which encoding/json matches as s, or escapes that could spell it
// (maySpell). The strict read refuses variants; this spares it the
// answers that cannot hold one.
func mayHoldList(b []byte, list mcpparse.List) bool {
	return maySpell(b, listWords[list], looseSeps)
}

// mayList reports whether an answer may hold any of the lists
// (mayHoldList), with one pass over its escapes.
func mayList(data string) bool {
	b := unsafeBytes(data)
	return mayEscapeLetters(b, "toolspromptsresourcetemplates", looseSeps) ||
		spelt(b, "tools", looseSeps) || spelt(b, "prompts", looseSeps) || spelt(b, "resource", looseSeps)
}

// mayListLeniently reports whether an answer that the strict read
// refused (a member twice in a tool's output, say) may hold a list as a
// client reads it: a message whose result, or a member a lenient
// decoder reads as result, has a member a lenient decoder reads as a
// list's (SameLooseName: case, '-' and '_', U+017F and the Kelvin sign,
// a NUL's end), however often either comes. What it cannot read counts
// as a list.
func mayListLeniently(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return true
	}
	if tok == json.Delim('[') {
		for dec.More() {
			if tok, err = dec.Token(); err != nil || tok != json.Delim('{') || listedIn(dec, "result") {
				return true
			}
		}
		if _, err := dec.Token(); err != nil {
			return true
		}
	} else if tok != json.Delim('{') || listedIn(dec, "result") {
		return true
	}
	_, err = dec.Token()
	return err != io.EOF
}

// listedIn reads the rest of an object whose '{' was just read and
// reports whether it has a member that reads as in (SameLooseName)
// holding an object with a member that reads as a list's (in
// "result"), or a member that reads as a list's itself (in ""); or
// whether the object cannot be read.
func listedIn(dec *json.Decoder, in string) bool {
	for dec.More() {
		tok, err := dec.Token()
		name, ok := tok.(string)
		if err != nil || !ok {
			return true
		}
		switch {
		case in == "":
			for _, w := range listWords {
				if mcpparse.SameLooseName(name, w) {
					return true
				}
			}
		case mcpparse.SameLooseName(name, in):
			tok, err := dec.Token()
			switch {
			case err != nil:
				return true
			case tok == json.Delim('{'):
				if listedIn(dec, "") {
					return true
				}
			case tok == json.Delim('['):
				if skipRest(dec) != nil {
					return true
				}
			}
			continue
		}
		if skipValue(dec) != nil {
			return true
		}
	}
	_, err := dec.Token()
	return err != nil
}

// skipValue reads the next value of dec.
func skipValue(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == json.Delim('{') || tok == json.Delim('[') {
		return skipRest(dec)
	}
	return nil
}

// skipRest reads the rest of an object or array whose first token was
// just read.
func skipRest(dec *json.Decoder) error {
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// mayChangeList reports whether an event's data may hold
// notifications/tools/list_changed: it names it, or it has escapes that
// could spell it.
func mayChangeList(data string) bool {
	return strings.Contains(data, "list_changed") || strings.Contains(data, `\u`)
}
