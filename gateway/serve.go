package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

const corsAllowHeaders = "Authorization, DPoP, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Last-Event-ID"

// exchange is one request on its way through the gateway.
type exchange struct {
	r     *http.Request
	start time.Time
	rev   revision
	// otherCharset: the upstream's answer, read as JSON though its type
	// is neither JSON nor an event stream, names a charset other than
	// UTF-8 (or another parameter), in which a client may read what the
	// gateway does not see; refused unless empty (responseWriter). Here,
	// in rev's padding: the writer's flags fill their word, and the
	// exchange is at the edge of its size class (TestExchangeSizeClass).
	otherCharset bool
	upStart      time.Time // when next was called
	p            *principal
	body         []byte
	msgs         []mcpparse.Message
	dec          []decision
	session      string // upstream session id, "" when none
	// ownNonce: the DPoP-Nonce Serve set, the only one the client gets.
	ownNonce string
	// task: the task a task request names, once verified (see task.go);
	// nil for every other request.
	task *taskFollowUp
	// createdTask is the upstream task id of the answer to this
	// tools/call (the response with its id), once seen: the only task a
	// notifications/tasks on its stream may name for the caller.
	createdTask string
	// cancel ends the upstream request (the exchange is in g.streams
	// while it runs), and endedBy says why when g.streams did.
	cancel  context.CancelFunc
	endedBy atomic.Pointer[authError]
	// tasks memoizes rewritesTasks once tasksKnown (asked after the
	// messages are final).
	tasks, tasksKnown bool
	// pinned: tool pinning is on, so every answer may be read for a
	// tools list.
	pinned bool
	// dpop: the Authorization header's scheme is DPoP (authError.of).
	dpop bool
	// batch: the body is a JSON-RPC batch.
	batch bool
	// headerChecked: Mcp-Method / Mcp-Name were validated against the body.
	headerChecked bool
	// answered: the tools/call's own answer (the first response with its
	// id) has been seen; stateAnswered likewise for its requestState
	// (state.go).
	answered, stateAnswered bool
	// listen: the request is a 2026-07-28 subscriptions/listen, that
	// revision's GET stream (listens).
	listen bool
	// (The bools are together: apart, each took a word of padding, and
	// the exchange its size class; TestExchangeSizeClass.)

	// What a request needs along the way, allocated with the exchange:
	// the decision of a single message, the URL, body and header edit of
	// the request next gets, and the writer next writes to.
	decBuf [1]decision
	upURL  url.URL
	upBody requestBody
	hdr    headerEdit
	rw     responseWriter
}

// Next is where an authorized request goes: the reverse proxy. Its method
// has the shape of caddyhttp.Handler: it may return an error instead of
// writing a response, and leave the answer to an error handler.
type Next interface {
	ServeHTTP(http.ResponseWriter, *http.Request) error
}

// NextFunc adapts a function to Next.
type NextFunc func(http.ResponseWriter, *http.Request) error

// ServeHTTP calls f.
func (f NextFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) error { return f(w, r) }

// NextHandler adapts an http.Handler, which answers every request itself,
// to Next.
func NextHandler(h http.Handler) Next {
	return NextFunc(func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	})
}

// Serve handles one request: metadata at the metadata paths; otherwise the
// request is MCP traffic, checked in full and, only if every message is
// allowed, passed to next (the reverse proxy) with exactly the authorized
// bytes. Anything that cannot be classified with certainty is refused and
// next never sees it. It returns next's error, after recording the status
// the error will be answered with (Config.ErrorStatus) in the audit event.
func (g *Gateway) Serve(w http.ResponseWriter, r *http.Request, next Next) (err error) {
	if g.isMetadataPath(r.URL) {
		g.serveMetadata(w, r)
		return nil
	}
	// Registered first, so it runs last, after restore: whatever the
	// answer, the handlers around the gateway run on r once it returns.
	defer dropCredentials(r.Header)
	x := &exchange{r: r, start: g.now(), pinned: g.pins != nil}
	if !g.isEndpoint(r.URL) {
		f := &refusal{status: http.StatusNotFound, code: codeRefused, message: "not found: the MCP endpoint is " + g.endpointEscaped}
		f.write(w)
		g.auditRefusal(x, f)
		return nil
	}
	origin, f := g.checkOrigin(w, r)
	if f == nil && r.Method == http.MethodOptions && origin && r.Header.Get("Access-Control-Request-Method") != "" {
		g.preflight(w, r)
		return nil
	}
	// reserved: the request holds one of its principal's max_in_flight
	// (reserveInFlight, once its token is verified).
	var reserved bool
	defer func() {
		if reserved {
			g.streams.release(x.p.holder, x.p.client)
		}
	}()
	if f == nil {
		f = g.admit(x, w, &reserved)
	}
	if f == nil {
		f = g.checkPins(x, next)
	}
	if f == nil {
		f = g.checkParams(x)
	}
	if n := g.proofs.Nonces(); n != nil && f == nil && x.p != nil && x.p.jkt != "" {
		// A fresh nonce with every answer spares the client a refusal
		// when the one it holds expires (RFC 9449 §8.2).
		x.ownNonce = n.Current(g.now())
		w.Header().Set(dpop.NonceHeader, x.ownNonce)
	}
	if f != nil {
		f.write(w)
		g.auditRefusal(x, f)
		return nil
	}

	// The request ends, the event stream of its answer included, when its
	// token expires or is revoked, and after its configuration is
	// unloaded (see streamSet). It is registered before it is sent: an
	// upstream answering in JSON sends nothing until its work is done,
	// and that work must not run on for a principal revoked meanwhile
	// (review s15-gateway F2).
	rw := x.responseWriter(w, g)
	defer rw.doneWrites() // last: after finish and any answer instead
	ctx, cancel := context.WithCancel(r.Context())
	x.cancel = cancel
	up := g.upstreamRequest(x, ctx)
	x.listen = len(x.msgs) == 1 && x.msgs[0].Kind == mcpparse.KindRequest && x.msgs[0].Method == "subscriptions/listen"
	g.streams.add(x)
	defer func() {
		x.hdr.restore()
		g.streams.remove(x)
		cancel()
		why := x.endedBy.Load()
		ended := why != nil && rw.unsent()
		if !ended && (rw.mode == modeRefuse || rw.mode == modeRedirect) {
			// Refused as it began (errAnswerRefused): next's abort for
			// the copy it could not finish is not let through to throw
			// away the 502 finish writes.
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				panic(p)
			}
			if errors.Is(err, errAnswerRefused) {
				err = nil // next passed on the refusal: the 502 is the answer
			}
		}
		if ended {
			// Ended by the registry before any of its answer reached the
			// client (nothing written, or JSON the gateway holds): nothing
			// next wrote goes out, and the proxy's abort for the body it
			// could not finish copying (http.ErrAbortHandler) is not let
			// through to throw away the answer below (review s16 F1, F2).
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				panic(p)
			}
			rw.mode = modeEnded
			rw.dropHeld()
		}
		rw.finish()
		if ended {
			// The client gets the refusal a new request would get now,
			// not the proxy's error for a cancelled request (a 499 under
			// Caddy).
			rw.answerInstead(g.authRefusal(why.of(x.dpop)))
			err = nil
			g.auditForwarded(x, rw.status, why.desc)
			return
		}
		status := rw.status
		if err != nil && !rw.wroteHeader {
			status = g.cfg.ErrorStatus(err)
		}
		reason := rw.refused // an answer the gateway refused in its place
		if why != nil {
			reason = why.desc // an answer cut after it began
		}
		g.auditForwarded(x, status, reason)
	}()
	return next.ServeHTTP(rw, up)
}

// Names of the request header fields the gateway reads on every request,
// in canonical form: read from the map directly, since http.Header.Values
// canonicalizes its argument on every call.
const (
	hAuthorization   = "Authorization"
	hConnection      = "Connection"
	hContentEncoding = "Content-Encoding"
	hContentLength   = "Content-Length"
	hContentType     = "Content-Type"
	hEarlyData       = "Early-Data"
	hLastEventID     = "Last-Event-Id"
	hOrigin          = "Origin"
	hAllowOrigin     = "Access-Control-Allow-Origin"
	hProtocolVersion = "Mcp-Protocol-Version"
	hSessionID       = "Mcp-Session-Id"
	hUpgrade         = "Upgrade"
)

// first is a field's first value, "" when absent (http.Header.Get).
func first(values []string) string {
	if len(values) == 0 {
		return ""
	}
	return values[0]
}

// checkOrigin refuses a present Origin that is not allowed (DNS rebinding
// protection) and sets CORS response headers for an allowed one; it
// reports whether there was one. A request that goes on therefore has no
// Origin or one allowed Origin (upstreamHeaders relies on it).
func (g *Gateway) checkOrigin(w http.ResponseWriter, r *http.Request) (bool, *refusal) {
	values := r.Header[hOrigin]
	switch len(values) {
	case 0:
		return false, nil
	case 1:
	default:
		return false, &refusal{status: http.StatusForbidden, code: codeRefused, message: "more than one Origin header"}
	}
	if !g.origins[strings.ToLower(values[0])] {
		return false, &refusal{status: http.StatusForbidden, code: codeRefused, message: "origin not allowed"}
	}
	h := w.Header()
	h[hAllowOrigin] = values[:1:1]
	h.Add("Vary", "Origin")
	// None is CORS-safelisted: without them a page's script reads no
	// session, no challenge, no nonce and no Retry-After (429, 503).
	h.Set("Access-Control-Expose-Headers", "Mcp-Session-Id, WWW-Authenticate, DPoP-Nonce, Retry-After")
	return true, nil
}

// preflight answers a CORS preflight from an allowed origin. Requested
// headers are allowed too: 2026-07-28 tools add Mcp-Param-* headers of
// their own choosing.
func (g *Gateway) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	allow := corsAllowHeaders
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		allow += ", " + req
	}
	h.Set("Access-Control-Allow-Methods", "POST, GET, DELETE")
	h.Set("Access-Control-Allow-Headers", allow)
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// admit runs every check; nil means forward. w is the request's writer,
// whose read deadline ends the read of its body on revocation.
func (g *Gateway) admit(x *exchange, w http.ResponseWriter, reserved *bool) *refusal {
	r := x.r
	if r.TLS != nil && !r.TLS.HandshakeComplete || len(r.Header[hEarlyData]) != 0 {
		// HTTP/3 0-RTT data (Caddy accepts it): anyone who captured it
		// may send it again, and a tool call would run again; quic-go
		// leaves it to the server to refuse what must not be replayed.
		// Early-Data is a proxy's in front saying it took the request so
		// (Caddy's reverse_proxy sets it), however this hop's handshake
		// went; any value counts (RFC 8470 section 5.1).
		// RFC 8470: the client retries once the handshake completes.
		return &refusal{status: http.StatusTooEarly, code: codeRefused, message: "too early: retry once the TLS handshake completes"}
	}
	switch r.Method {
	case http.MethodPost, http.MethodGet, http.MethodDelete:
	default:
		return &refusal{status: http.StatusMethodNotAllowed, code: codeRefused, message: "method not allowed", allow: "POST, GET, DELETE"}
	}
	if len(r.Header[hUpgrade]) != 0 {
		// An upgraded connection would be an uninspected tunnel.
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "protocol upgrades are not allowed"}
	}
	if f := checkConnection(r); f != nil {
		return f
	}
	if f := checkQueryNames(r); f != nil {
		return f
	}
	unsupported := g.protocolVersion(x)
	if unsupported != nil && unsupported.code != codeUnsupportedProtocol {
		return unsupported
	}
	if (r.Method == http.MethodGet && !x.rev.hasGetStream()) || (r.Method == http.MethodDelete && !x.rev.hasSessions()) {
		return &refusal{status: http.StatusMethodNotAllowed, code: codeRefused, message: r.Method + " is not part of protocol version " + x.rev.String(), allow: "POST"}
	}
	if r.Method == http.MethodPost {
		if f := checkContentHeaders(r); f != nil {
			return f
		}
	} else if r.ContentLength > 0 || r.ContentLength < 0 && r.ProtoMajor != 3 {
		// HTTP/3 (quic-go) leaves the length of every request without
		// Content-Length unknown (-1), a GET whose HEADERS frame ended
		// its stream too; a body sent anyway is never forwarded
		// (nextRequest gives next none).
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: r.Method + " requests must not have a body"}
	}

	token, scheme, aerr := bearerToken(r)
	x.dpop = scheme == schemeDPoP
	if aerr == nil {
		x.p, aerr = g.authenticate(r.Context(), r, token, x.start)
	}
	if aerr == nil {
		aerr = g.checkBinding(r, x.p, token, scheme)
	}
	if aerr != nil {
		return g.authRefusal(aerr.of(x.dpop))
	}
	// In flight from here, before the body is read: a body may arrive
	// slowly, and holds a connection and its bytes meanwhile.
	if f := g.reserveInFlight(x, reserved); f != nil {
		return f
	}
	if unsupported != nil {
		// Answered after authentication, which allows reading the body
		// for the request id the answer must carry.
		if r.Method == http.MethodPost {
			f := g.readBodyInFlight(x, w)
			if x.endedBy.Load() != nil {
				return f
			}
			if f == nil {
				unsupported.id = requestID(x.body)
			}
		}
		return unsupported
	}

	if f := g.checkSession(x); f != nil {
		return f
	}
	if f := checkSessionless(x); f != nil {
		return f
	}
	if f := checkResume(x); f != nil {
		return f
	}
	if r.Method != http.MethodPost {
		// GET (server stream) and DELETE (end session) need the base scopes.
		x.dec = x.decBuf[:1]
		x.dec[0] = g.policy.check(x.p, decision{kind: kindBase, required: g.policy.base}, nil)
		if !x.dec[0].allow {
			return g.denial(x)
		}
		return nil
	}
	if f := g.readBodyInFlight(x, w); f != nil {
		return f
	}
	if f := g.classify(x); f != nil {
		return f
	}
	return nil
}

// readBodyInFlight is readBody for a request counted in max_in_flight:
// registered meanwhile, so that what ends an event stream (its token's
// revocation, expiry, ...) ends the read (streamSet.reading) and the
// request, answered as a new request with the token would be.
func (g *Gateway) readBodyInFlight(x *exchange, w http.ResponseWriter) *refusal {
	var f *refusal
	if g.streams.reading(x, w) {
		f = g.readBodyRegistered(x)
	}
	if why := x.endedBy.Load(); why != nil {
		return g.authRefusal(why.of(x.dpop))
	}
	return f
}

// readBodyRegistered reads the body of x, which reading registered, and
// ends the registration however the read ends: an entry left behind
// would have the checker set a read deadline on a writer that is done.
func (g *Gateway) readBodyRegistered(x *exchange) *refusal {
	defer g.streams.read(x)
	return g.readBody(x)
}

// reserveInFlight takes one of the principal's max_in_flight (and its
// client's), setting *reserved, or answers 429: before the body is read,
// so without the request's id.
func (g *Gateway) reserveInFlight(x *exchange, reserved *bool) *refusal {
	ok, perClient := g.streams.reserve(x.p.holder, x.p.client)
	if ok {
		*reserved = true
		return nil
	}
	who, bound := "this caller", g.cfg.MaxInFlight
	if perClient {
		who, bound = "this client of the caller", g.cfg.MaxInFlightPerClient
	}
	return &refusal{status: http.StatusTooManyRequests, code: codeRefused, retryAfter: "1",
		message: "too many requests in flight for " + who + " (at most " + strconv.Itoa(bound) + "): retry when one has ended"}
}

// authRefusal is the answer to a failed authentication.
func (g *Gateway) authRefusal(aerr *authError) *refusal {
	if aerr.status == http.StatusServiceUnavailable {
		// The token or its proof could not be checked (revocations,
		// introspection, the shared DPoP replay record): no challenge,
		// the client may retry, after a second (as the issuer's 503s
		// say: RFC 9110 section 10.2.3).
		return &refusal{status: aerr.status, code: codeRefused, message: aerr.desc, retryAfter: "1"}
	}
	f := &refusal{status: aerr.status, code: codeRefused, message: authMessage(aerr), challenge: g.challenge(aerr)}
	if aerr.status == http.StatusUnauthorized {
		f.dpopChallenge = g.dpopChallenge(aerr)
		if n := g.proofs.Nonces(); n != nil {
			f.dpopNonce = n.Current(g.now())
		}
	}
	return f
}

func authMessage(a *authError) string {
	if a.code == "" {
		return "authorization required"
	}
	return a.desc
}

// protocolVersion chooses the request's revision from MCP-Protocol-Version
// (parseRevision).
func (g *Gateway) protocolVersion(x *exchange) *refusal {
	values := x.r.Header[hProtocolVersion]
	v := ""
	switch len(values) {
	case 0:
	case 1:
		v = values[0]
	default:
		return &refusal{status: http.StatusBadRequest, code: codeHeaderMismatch, message: "more than one MCP-Protocol-Version header"}
	}
	rev, ok := parseRevision(v)
	if !ok {
		return &refusal{status: http.StatusBadRequest, code: codeUnsupportedProtocol, message: "Unsupported protocol version",
			data: map[string]any{"supported": supportedVersions, "requested": v}}
	}
	x.rev = rev
	return nil
}

// checkConnection refuses a Connection header that names anything but the
// usual connection options: a proxy removes every header it names, so a
// client could strip headers the gateway checked or sets (Mcp-Session-Id,
// MCP-Protocol-Version, X-MCP-Subject) on their way to the upstream.
func checkConnection(r *http.Request) *refusal {
	for _, v := range r.Header[hConnection] {
		for _, opt := range strings.Split(v, ",") {
			switch strings.ToLower(strings.TrimSpace(opt)) {
			case "", "close", "keep-alive", "te":
			default:
				return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "Connection may name only close, keep-alive and TE"}
			}
		}
	}
	return nil
}

// checkQueryNames refuses a query parameter that names a session
// (sessionId, session_id, mcp-session-id, in any case and PHP spelling):
// Streamable HTTP carries the session in Mcp-Session-Id, which the
// gateway binds to the caller, but an upstream that also serves the
// legacy HTTP+SSE transport on the same path reads it from the query,
// where it would reach the upstream unbound. It refuses a method
// override (_method) too, as the override headers are dropped
// (clientHeaderRules). A query Go cannot parse is left to bearerToken,
// which refuses it.
func checkQueryNames(r *http.Request) *refusal {
	if r.URL.RawQuery == "" {
		return nil
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil
	}
	for k := range q {
		if isSessionParam(k) {
			return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "session ids are accepted in the Mcp-Session-Id header only"}
		}
		if isMethodOverrideParam(k) {
			return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "the HTTP method cannot be overridden in the query"}
		}
	}
	return nil
}

// isMethodOverrideParam reports whether a query parameter name is _method
// as a server framework may read it (phpParam): Express's method-override given a
// query key, Symfony and Laravel, gorilla/handlers, Spring's
// HiddenHttpMethodFilter and Hono take the request's method from it, so
// that the authorized POST would reach the upstream as a GET event
// stream or a DELETE, which the gateway admits only in the caller's
// session (checkSessionless).
func isMethodOverrideParam(k string) bool {
	return beforeBracket(phpParam(k)) == "_method"
}

// isSessionParam reports whether a query parameter name reads as a
// session id's, ignoring case (upperFold) and separators (- _ . space),
// as PHP reads names (its array brackets, and an unclosed "[" read as
// "_": session[id), as isAccessTokenParam does.
func isSessionParam(k string) bool {
	k = upperFold(phpName(k))
	for _, name := range [...]string{beforeBracket(k), beforeBracket(strings.Replace(k, "[", "_", 1))} {
		name = strings.Map(func(r rune) rune {
			switch r {
			case '_', '-', '.', ' ':
				return -1
			}
			return r
		}, name)
		if name == "sessionid" || name == "mcpsessionid" {
			return true
		}
	}
	return false
}

// sharpS spells ß and ẞ as an upstream's upper casing or full case
// folding reads them (toUpperCase, upper(), casefold(): SS, ss).
var sharpS = strings.NewReplacer("ß", "ss", "ẞ", "ss")

// upperFold is a parameter name in lower case as an upstream that
// compares names with toUpperCase, upper() or EqualFold reads it: lower
// of upper, so "ſ" reads as s, "ı" as i and the Kelvin sign as k, and ß
// as ss.
func upperFold(s string) string {
	return strings.Map(func(r rune) rune { return unicode.ToLower(unicode.ToUpper(r)) }, sharpS.Replace(s))
}

// strictMediaType parses a Content-Type as mime.ParseMediaType does,
// refusing (ok false) what that parser reads otherwise than others: it
// takes an RFC 2231 charset* (or charset*0, ...) over a charset beside
// it, where Express's body-parser and Python's email package read the
// charset and decode the body in it ("charset=utf-7;
// charset*=utf-8”utf-8" would be UTF-8 here and UTF-7 there), takes
// Unicode spaces for whitespace and folds "İ" to "i", which RFC 9110
// allows in no media type.
func strictMediaType(ct string) (mt string, params map[string]string, ok bool) {
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; c == '*' || c > 0x7e || (c < 0x20 && c != '\t') {
			return "", nil, false
		}
	}
	mt, params, err := mime.ParseMediaType(ct)
	return mt, params, err == nil
}

// checkContentHeaders accepts exactly what the gateway reads: JSON
// (charset utf-8 at most) with no content coding.
func checkContentHeaders(r *http.Request) *refusal {
	unsupported := func(msg string) *refusal {
		return &refusal{status: http.StatusUnsupportedMediaType, code: codeRefused, message: msg}
	}
	ct := r.Header[hContentType]
	if len(ct) != 1 {
		return unsupported("Content-Type must be application/json")
	}
	// The usual value needs no parsing (ParseMediaType allocates).
	if ct[0] != "application/json" {
		mt, params, ok := strictMediaType(ct[0])
		if !ok || mt != "application/json" {
			return unsupported("Content-Type must be application/json, with at most charset=utf-8")
		}
		for k, v := range params {
			if k != "charset" || !strings.EqualFold(v, "utf-8") {
				return unsupported("Content-Type parameters other than charset=utf-8 are not accepted")
			}
		}
		// The upstream gets the media type the body was read as, spelled
		// one way: no case, quoting or parameter its parser could read
		// otherwise than the mime package did reaches it.
		ct[0] = "application/json"
	}
	if encoded(r.Header) {
		return unsupported("Content-Encoding is not accepted")
	}
	return nil
}

// checkSession verifies a 2025 session id against the principal. A
// mismatch is answered 404 (session not found), which makes a client start
// a new session, and reveals nothing about the session's existence.
// 2026-07-28 has no sessions: the header is ignored and not forwarded.
func (g *Gateway) checkSession(x *exchange) *refusal {
	if !x.rev.hasSessions() {
		return nil
	}
	values := x.r.Header[hSessionID]
	switch len(values) {
	case 0:
		return nil
	case 1:
	default:
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "more than one Mcp-Session-Id header"}
	}
	up, err := g.unwrapSession(x.p, values[0])
	if err != nil {
		return &refusal{status: http.StatusNotFound, code: codeSessionNotFound, message: "Session not found"}
	}
	x.session = up
	return nil
}

// checkSessionless refuses, in the 2025 revisions, a GET or DELETE
// outside a session bound to the caller. The gateway stores nothing, so it
// cannot tell an upstream without sessions from a client that left its
// session out; and an upstream without sessions may have one transport for
// every caller (the TypeScript SDK's stateless mode), whose GET stream
// carries the server's messages to whoever listens and whose event ids
// replay any caller's stream. GET is answered as a server without a GET
// stream answers it (405, Allow: POST), which clients take as "no
// stream"; DELETE, which names the session it ends, as a request without
// its required session id (400): the method itself is allowed. An
// upstream with sessions refuses both itself.
func checkSessionless(x *exchange) *refusal {
	if x.session != "" || !x.rev.hasSessions() {
		return nil
	}
	switch x.r.Method {
	case http.MethodGet:
		return &refusal{status: http.StatusMethodNotAllowed, code: codeRefused, message: "GET opens the event stream of a session: send the session's Mcp-Session-Id", allow: "POST"}
	case http.MethodDelete:
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "DELETE ends a session: send the session's Mcp-Session-Id"}
	}
	return nil
}

// checkResume refuses a GET with more than one Last-Event-ID. A
// resumption happens only in a session bound to the caller
// (checkSessionless); elsewhere the header is dropped (forwardsHeader):
// resumption is always a GET, and 2026-07-28 streams are not resumable.
func checkResume(x *exchange) *refusal {
	if x.r.Method == http.MethodGet && len(x.r.Header[hLastEventID]) > 1 {
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "more than one Last-Event-ID header"}
	}
	return nil
}

// readBody reads the whole body within MaxBodySize. Nothing is forwarded
// that was not read in full.
func (g *Gateway) readBody(x *exchange) *refusal {
	limit := g.cfg.MaxBodySize
	tooLarge := func() *refusal {
		return &refusal{status: http.StatusRequestEntityTooLarge, code: codeInvalidRequest,
			message: "request body exceeds " + strconv.FormatInt(limit, 10) + " bytes"}
	}
	unreadable := func(err error) *refusal {
		if mb, ok := errors.AsType[*http.MaxBytesError](err); ok {
			// A handler in front bounds the body tighter (Caddy's
			// request_body max_size, a chunked body over it): too
			// large, as the body over MaxBodySize is.
			return &refusal{status: http.StatusRequestEntityTooLarge, code: codeInvalidRequest,
				message: "request body exceeds " + strconv.FormatInt(mb.Limit, 10) + " bytes"}
		}
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "could not read the request body"}
	}
	if x.r.ContentLength > limit {
		return tooLarge()
	}
	if n := x.r.ContentLength; n >= 0 {
		// net/http stops the body at Content-Length.
		body, err := readDeclared(x.r.Body, n)
		if err != nil {
			return unreadable(err)
		}
		x.body = body
		return nil
	}
	// One byte past the limit tells a body over it; a limit of the
	// largest int64 has no byte past it (limit+1 would read nothing).
	body, err := io.ReadAll(io.LimitReader(x.r.Body, min(limit, math.MaxInt64-1)+1))
	if err != nil {
		return unreadable(err)
	}
	if int64(len(body)) > limit {
		return tooLarge()
	}
	x.body = body
	return nil
}

// bodyFirstRead is how much of a declared body is allocated before any of
// it arrives.
const bodyFirstRead = 16 << 10

// readDeclared reads exactly n bytes, the body's Content-Length, into a
// buffer that grows with what arrives: allocated whole ahead, n bytes
// declared and none sent held n bytes for as long as the client kept its
// connection (no read timeout by default), so a thousand connections of
// headers held a thousand times max_body_size. A body of at most
// bodyFirstRead bytes still costs one allocation of its size.
func readDeclared(r io.Reader, n int64) ([]byte, error) {
	b := make([]byte, 0, min(n, bodyFirstRead))
	for int64(len(b)) < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, int(min(n-int64(len(b)), int64(len(b)))))
		}
		m, err := r.Read(b[len(b):min(int64(cap(b)), n)])
		b = b[:len(b)+m]
		if err == io.EOF && int64(len(b)) < n {
			return nil, io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
	}
	return b, nil
}

// classify parses the body strictly, checks the 2026-07-28 headers and
// decides every message.
func (g *Gateway) classify(x *exchange) *refusal {
	msgs, batch, err := mcpparse.Parse(x.body, mcpparse.Limits{AllowBatches: x.rev.allowsBatches()})
	if err != nil {
		return parseRefusal(err, x.rev)
	}
	x.msgs, x.batch = msgs, batch
	if f := checkBatchIDs(msgs); f != nil {
		return f
	}
	if !x.rev.clientAnswers() && msgs[0].Kind == mcpparse.KindResponse {
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "clients do not send responses in protocol version " + x.rev.String(), id: msgs[0].ID}
	}
	if x.session == "" {
		if f := sessionlessMessages(msgs, batch, x.rev); f != nil {
			return f
		}
	}
	if f := checkMetadataHeaders(x); f != nil {
		return f
	}
	if len(msgs) <= len(x.decBuf) {
		x.dec = x.decBuf[:len(msgs)]
	} else {
		x.dec = make([]decision, len(msgs))
	}
	for i := range msgs {
		d, err := g.policy.decide(x.p, &msgs[i], x.rev)
		if err != nil {
			x.dec = nil
			return decideRefusal(err, &msgs[i], x)
		}
		x.dec[i] = d
	}
	for i := range x.dec {
		if !x.dec[i].allow {
			return g.denial(x)
		}
	}
	if f := g.bindTasks(x); f != nil {
		return f
	}
	if f := g.bindRequestState(x); f != nil {
		return f
	}
	return g.bindCursors(x)
}

// sessionlessMessages refuses, in a request without a session, the
// messages that speak of the state of one session: a client's answer to a
// server's request (sampling, elicitation, roots), and the client
// notifications that name a request (cancelled), a progress token
// (progress) or the session's roots (roots/list_changed), by method
// whatever the message's kind (a lenient server may run one sent with an
// id as the notification). Without a session they are tied to the
// principal only by their JSON-RPC id, so an upstream with one transport
// for every caller would route them by that alone, and any caller could
// answer another's elicitation (review s13-sse F2) or cancel another's
// call. An upstream without such a transport has nothing to route them
// to: a stateless server that starts afresh for each request has no call
// of the caller in flight. notifications/initialized belongs to every
// handshake, stateless ones' included, and passes; so do methods a method
// rule admits, which the operator decided. logging/setLevel sets the level
// of one session's log messages: without one, an upstream with one
// transport for every caller would set it for all of them.
//
// A lone notification is answered 202 and dropped, not refused: a client
// of an upstream without sessions sends notifications/cancelled when it
// gives up on a call, and a refusal without an id, which a JSON-RPC error
// for a notification must be, is no message the Go SDK client can read:
// it takes the connection for broken and fails every later call
// (TestStatelessClientCancelsThroughGateway). Such an upstream has
// nothing in flight to cancel anyway.
//
// 2026-07-28 has no sessions and defines no client notification over
// Streamable HTTP: closing the answer's event stream cancels a call, and
// notifications/cancelled is for stdio. One sent over HTTP names a call
// by its JSON-RPC id alone, so an upstream bridging to one stdio server
// for every caller would cancel whichever caller's call has that id: it
// is dropped (or refused) likewise. So are the client notifications of
// the earlier revisions, which 2026-07-28 removed but a dual-era client
// library may still send: the Go SDK client sends
// notifications/roots/list_changed when its roots change, and a refusal
// (404, method not found, without an id) ends its connection
// (TestRootsChangedThroughGateway).
func sessionlessMessages(msgs []mcpparse.Message, batch bool, rev revision) *refusal {
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.Kind == mcpparse.KindResponse:
			return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "a response to a server's request needs the Mcp-Session-Id of the session that asked", id: m.ID}
		case m.Method == "logging/setLevel" && rev.hasSessions():
			return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "logging/setLevel sets the level of a session: send the session's Mcp-Session-Id", id: m.ID}
		case strings.HasPrefix(m.Method, "notifications/") && m.Method != "notifications/initialized" && rev.defines(m.Method),
			!rev.hasSessions() && strings.HasPrefix(m.Method, "notifications/") && clientMethods[m.Method] != 0:
			return sessionNotification(m, batch, rev)
		}
	}
	return nil
}

// sessionNotification drops a lone client notification sessionlessMessages
// names (202) and refuses one with an id or in a batch (400).
func sessionNotification(m *mcpparse.Message, batch bool, rev revision) *refusal {
	lone := !batch && m.ID == nil
	if !rev.hasSessions() {
		why := m.Method + " is not sent over HTTP in " + rev.String()
		if m.Method == "notifications/cancelled" {
			why += " (closing the answer's event stream cancels a call)"
		}
		if lone {
			return &refusal{status: http.StatusAccepted, message: why + ": dropped"}
		}
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: why, id: m.ID}
	}
	if lone {
		return &refusal{status: http.StatusAccepted, message: m.Method + " speaks of a session: dropped without the session's Mcp-Session-Id"}
	}
	return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: m.Method + " speaks of a session: send the session's Mcp-Session-Id", id: m.ID}
}

// decideRefusal answers a message decide refused before any rule. An
// unknown method is "Method not found" (-32601).
func decideRefusal(err error, m *mcpparse.Message, x *exchange) *refusal {
	if errors.Is(err, errMethodNotFound) {
		return &refusal{status: x.rev.methodNotFoundStatus(), code: codeMethodNotFound, message: "Method not found: " + strconv.Quote(m.Method), id: singleID(x),
			data: map[string]string{"method": m.Method}}
	}
	return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, message: err.Error(), id: singleID(x)}
}

// checkBatchIDs refuses a batch whose requests share an id (MCP: a
// requestor never reuses an id in a session), so that every answer
// matches exactly one request and is filtered as its request needs.
func checkBatchIDs(msgs []mcpparse.Message) *refusal {
	for i := range msgs {
		if msgs[i].Kind != mcpparse.KindRequest {
			continue
		}
		for j := range msgs[:i] {
			if msgs[j].Kind == mcpparse.KindRequest && mcpparse.SameID(msgs[i].ID, msgs[j].ID) {
				return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "invalid batch: requests " + strconv.Itoa(j) + " and " + strconv.Itoa(i) + " share an id"}
			}
		}
	}
	return nil
}

func parseRefusal(err error, rev revision) *refusal {
	f := &refusal{status: http.StatusBadRequest, code: codeParseError, message: "parse error: " + err.Error()}
	switch {
	case errors.Is(err, mcpparse.ErrBatch) && rev.allowsBatches():
		f.code = codeInvalidRequest
		f.message = "invalid batch: " + err.Error()
	case errors.Is(err, mcpparse.ErrBatch):
		f.code = codeInvalidRequest
		f.message = "batches are not allowed in protocol version " + rev.String()
	case errors.Is(err, mcpparse.ErrInvalidParams):
		f.code = codeInvalidParams
		f.message = "invalid params: " + err.Error()
		if pe := (*mcpparse.ParamsError)(nil); errors.As(err, &pe) {
			f.id = pe.ID
		}
	case errors.Is(err, mcpparse.ErrNotJSONRPC):
		f.code = codeInvalidRequest
		f.message = "invalid request: " + err.Error()
	}
	return f
}

// checkMetadataHeaders enforces the 2026-07-28 request metadata rules
// (mcpparse.CheckHeaders: MCP-Protocol-Version equal to the body's _meta
// version, Mcp-Method, Mcp-Name) whenever the header or any message says
// 2026-07-28 or later, so omitting or "downgrading" the header cannot skip
// them while a dual-era upstream serves the body as 2026-07-28. On older
// versions the headers are not validated, so they are not forwarded
// either (see upstreamRequest).
func checkMetadataHeaders(x *exchange) *refusal {
	if !mcpparse.NeedsHeaderCheck(x.r.Header, x.msgs) {
		return nil
	}
	x.headerChecked = true
	for i := range x.msgs {
		m := &x.msgs[i]
		if err := mcpparse.CheckHeaders(x.r.Header, *m); err != nil {
			code := codeHeaderMismatch
			if errors.Is(err, mcpparse.ErrInvalidParams) {
				code = codeInvalidParams // no _meta protocol version: nothing to compare
			}
			return &refusal{status: http.StatusBadRequest, code: code, message: strings.TrimPrefix(err.Error(), "mcpparse: "), id: m.ID}
		}
	}
	return nil
}

// requestID is the id of a body that is one request, nil otherwise.
func requestID(body []byte) []byte {
	msgs, _, err := mcpparse.Parse(body, mcpparse.Limits{})
	var pe *mcpparse.ParamsError
	switch {
	case err == nil && msgs[0].Kind == mcpparse.KindRequest:
		return msgs[0].ID
	case errors.As(err, &pe):
		return pe.ID
	}
	return nil
}

func singleID(x *exchange) []byte {
	if x.batch || len(x.msgs) != 1 {
		return nil
	}
	return x.msgs[0].ID
}

// denial builds the 403 for a request with at least one denied message. If
// more scope would cure every denial, the answer is an insufficient_scope
// challenge naming every scope the whole request needs (base included);
// otherwise (no rule, actor rule, argument rule) it is a JSON-RPC error
// naming the rule (and the argument's pointer).
func (g *Gateway) denial(x *exchange) *refusal {
	var required []string
	for i := range x.dec {
		d := &x.dec[i]
		required = append(required, d.required...)
		if !d.allow && !d.scopeOnly {
			msg := "forbidden: " + d.reason
			if d.target != "" {
				msg = fmt.Sprintf("forbidden: %s %q: %s", targetNoun(d.kind), d.target, d.reason)
			}
			data := map[string]string{"reason": d.reason}
			if d.rule != "" {
				data["rule"] = d.rule
				msg += " (rule " + strconv.Quote(d.rule) + ")"
			}
			if d.argument != "" {
				data["argument"] = d.argument
			}
			return &refusal{status: http.StatusForbidden, code: codeRefused, message: msg, id: singleID(x), data: data}
		}
	}
	required = sortedSet(required)
	bearer, dpop := g.scopeChallenges(required, x.dpop)
	return &refusal{
		status:        http.StatusForbidden,
		code:          codeRefused,
		message:       "insufficient scope: this request needs " + strings.Join(required, " "),
		id:            singleID(x),
		data:          map[string]any{"required_scopes": required},
		challenge:     bearer,
		dpopChallenge: dpop,
	}
}

func targetNoun(kind string) string {
	switch kind {
	case kindTool:
		return "tool"
	case kindPrompt:
		return "prompt"
	case kindResource:
		return "resource"
	}
	return "target"
}

// upstreamRequest is the request next sees: the authorized bytes, the
// upstream's own session id, and no client credentials. Cookie is dropped
// too: MCP's transport does not use cookies, and on a host shared with the
// issuer they would hand the user's login session to the MCP server.
//
// It is a shallow copy of the client's request (with context ctx unless
// nil) with its own URL (next may change it in place). Its header is the
// client's, edited in place (x.hdr) and restored by Serve once next is
// done: Caddy's reverse proxy copies the header before it changes it,
// placeholders that read the client's header during next see what is
// forwarded, and logs and error routes afterwards see it as it came.
func (g *Gateway) upstreamRequest(x *exchange, ctx context.Context) *http.Request {
	var rd io.ReadCloser
	if x.r.Method == http.MethodPost {
		x.upBody.Reset(x.body)
		rd = &x.upBody
	}
	out, e := g.nextRequest(x, ctx, x.body, rd)
	if x.task != nil {
		e.removeAll(mcpparse.HeaderName)
		e.set(setName, x.task.upName)
	}
	x.upStart = g.now()
	return out
}

// nextRequest is a request to next made from the client's: a shallow copy
// with context ctx (unless nil), its own URL, the resource's Host, the body rd reads (body's
// bytes; no body when rd is nil), no trailers (they arrive after the body
// was authorized, and a proxy that forwards them would deliver headers
// nobody checked), and the client's header edited in place (editHeader),
// which the caller restores once next is done.
func (g *Gateway) nextRequest(x *exchange, ctx context.Context, body []byte, rd io.ReadCloser) (*http.Request, *headerEdit) {
	var out *http.Request
	if ctx != nil {
		out = x.r.WithContext(ctx)
	} else {
		out = new(http.Request)
		*out = *x.r
	}
	x.upURL = *x.r.URL
	out.URL = &x.upURL
	// The request is authorized for the resource, so it goes to the
	// resource's host, whatever Host (or absolute-form target) the client
	// sent: a site that answers any host would otherwise pass a request
	// authorized for one MCP server to whichever server an upstream that
	// routes by host (an ingress, virtual hosts) serves under another name.
	out.Host = g.host
	out.Trailer, out.TransferEncoding = nil, nil
	if rd != nil {
		out.Body = rd
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	} else {
		out.Body = http.NoBody
		out.ContentLength = 0
		out.GetBody = nil
	}
	return out, g.editHeader(x)
}

// editHeader edits the client's header in place for a request to next:
// only the fields that may be forwarded, the X-MCP-* identity headers
// (Config.ForwardIdentity) and the upstream's session id. The caller
// restores it (x.hdr.restore) once next is done.
func (g *Gateway) editHeader(x *exchange) *headerEdit {
	e := &x.hdr
	e.begin(x.r.Header)
	for k, vv := range e.h {
		if !x.forwardsHeader(k) {
			e.take(k, vv)
		}
	}
	if g.cfg.ForwardIdentity {
		p := x.p
		e.set(setSubject, headerSafe(p.subject))
		e.set(setClient, headerSafe(p.clientID))
		if len(p.actors) > 0 {
			e.set(setActor, headerSafe(p.actors[0]))
		}
		e.set(setScope, headerSafe(p.scope))
		e.set(setPrincipalType, headerSafe(principalKind(p)))
	}
	if x.session != "" {
		e.set(setSession, x.session)
	}
	return e
}

// credentialFields are the client's credentials for this request, which
// upstreamRequest keeps from next.
var credentialFields = [...]string{"Authorization", "Cookie", "Dpop"}

// dropCredentials takes the client's credentials out of the header of a
// request Serve is done with, whose header restore has put back as it
// came. Caddy runs handlers on the client's request after the gateway:
// the site's error routes (handle_errors) when next fails, and the
// handle_response routes of an intercept (ordered before mcp_gateway)
// matching the gateway's answer, a refusal or the MCP server's own. A
// route that proxies to an error-page service (`handle_errors {
// reverse_proxy error-pages:8080 }`, or the same in an intercept's
// handle_response) would forward the access token, its DPoP proof and the
// issuer's session cookie there, which the MCP server itself never gets
// (TestErrorRoutesGetNoCredentials, TestInterceptRoutesGetNoCredentials).
func dropCredentials(h http.Header) {
	for _, name := range credentialFields {
		delete(h, name)
	}
}

// headerEdit is upstreamRequest's change of the client's header in place:
// the fields it removed or replaced, and which of setNames it set, so that
// restore puts the header back as it came.
type headerEdit struct {
	h        http.Header // nil until begin
	saved    []headerField
	savedBuf [4]headerField
	added    uint16                   // bit i: setNames[i] was set
	vals     [len(setNames)][1]string // the values set, by name
}

// setNames are the fields the gateway sets, in canonical form.
var setNames = [...]string{"X-Mcp-Subject", "X-Mcp-Client", "X-Mcp-Actor", "X-Mcp-Scope", "Mcp-Session-Id", mcpparse.HeaderName,
	"Content-Type", "Accept", mcpparse.HeaderMethod, "X-Mcp-Principal-Type"}

type headerField struct {
	name   string
	values []string
}

func (e *headerEdit) begin(h http.Header) {
	e.h, e.saved, e.added = h, e.savedBuf[:0], 0
}

// remove takes out a field, keeping it for restore.
func (e *headerEdit) remove(name string) {
	if vv, ok := e.h[name]; ok {
		e.take(name, vv)
	}
}

// take takes out a field present with values vv, keeping it for restore.
func (e *headerEdit) take(name string, vv []string) {
	e.saved = append(e.saved, headerField{name, vv})
	delete(e.h, name)
}

// removeAll takes out every spelling of the field name (canonical).
func (e *headerEdit) removeAll(name string) {
	for k := range e.h {
		if len(k) == len(name) && strings.EqualFold(k, name) {
			e.remove(k)
		}
	}
}

// set sets setNames[i] to one value.
func (e *headerEdit) set(i int, value string) {
	name := setNames[i]
	if e.added&(1<<i) == 0 {
		e.remove(name) // the client's, kept for restore (a value set here is not)
	}
	e.added |= 1 << i
	e.vals[i][0] = value
	e.h[name] = e.vals[i][:]
}

// restore undoes the edit; a second call does nothing.
func (e *headerEdit) restore() {
	if e.h == nil {
		return
	}
	for i, name := range setNames {
		if e.added&(1<<i) != 0 {
			delete(e.h, name)
		}
	}
	for _, f := range e.saved {
		e.h[f.name] = f.values
	}
	e.h = nil
}

// Indexes in setNames.
const (
	setSubject = iota
	setClient
	setActor
	setScope
	setSession
	setName
	setContentType
	setAccept
	setMethod
	setPrincipalType
)

// forwardsHeader reports whether a client header field may reach the
// upstream.
func (x *exchange) forwardsHeader(name string) bool {
	if isParamHeader(name) {
		// Checked by checkParams when the revision defines them.
		return x.headerChecked
	}
	rule := clientHeaderRule(name)
	if rule == headerForward && len(name) >= 3 {
		for _, i := range identityPrefixesByInitials.of(initialsSlot(name)) {
			if p := identityPrefixes[i]; len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) {
				return false
			}
		}
	}
	if strings.IndexByte(name, '_') >= 0 {
		// CGI-style servers (FastCGI, PHP, WSGI) read "X_Mcp_Subject" or
		// "Mcp_Session_Id" as the dashed header, so no client header with
		// an underscore may stand in for one removed, checked or set here.
		return false
	}
	switch rule {
	case headerDrop:
		return false
	case headerAcceptEncoding:
		// A compressed answer could not be read (list filters, task
		// ids, request states, an initialize result's capabilities, caching
		// hints, a resources/read's contents, and with pinning every
		// answer, and in 2026-07-28 every answer, for other callers'
		// notifications/tasks): the upstream answers
		// uncompressed, or the transport decodes.
		// (x.rw is made before the upstream request.)
		return !x.pinned && !x.rev.bindsTaskIDs() && !x.asksLists() && !x.rewritesTasks() && !x.rewritesStates() && !x.rewritesCache() && !x.rw.resources() && x.initializeIDs() == nil
	case headerChecked:
		return x.headerChecked
	case headerLastEventID:
		// Checked by checkSessionless and checkResume.
		return x.r.Method == http.MethodGet && x.session != ""
	}
	return true
}

// identityPrefixes begin the families of identity fields that
// authenticating proxies set and servers behind them trust: oauth2-proxy
// (X-Auth-Request-User, -Email, ...), AWS ALB (X-Amzn-Oidc-Identity,
// -Data, and its mTLS X-Amzn-Mtls-Clientcert*), Azure App Service
// (X-Ms-Client-Principal, -Name, -Id, and its token store's
// X-Ms-Token-*), Cloudflare Access, Google IAP, Tailscale, authentik,
// Pomerium, caddy-security (X-Token-User-Email, ...), Vouch, Grafana's
// X-Webauth-*, Kong's X-Consumer-Id, -Username, -Custom-Id, -Groups, the
// client certificate nginx and HAProxy pass on (X-Ssl-Client-Cert,
// -Verify, -S-Dn, ...) and Traefik's (X-Forwarded-Tls-Client-Cert,
// -Info); and X-Mcp-*, the gateway's own family (ForwardIdentity), but
// for the options MCP servers let clients choose (headerServerOption).
// Keycloak Gatekeeper's X-Auth-* are dropped by name (clientHeaderRules:
// X-Auth-Token is many APIs' credential). The list is a best effort: an
// upstream should trust no client header the gateway does not set.
var identityPrefixes = [...]string{"X-Auth-Request-", "X-Amzn-Oidc-", "X-Amzn-Mtls-", "X-Ms-Client-Principal", "X-Ms-Token-",
	"Cf-Access-Authenticated-User-", "Cf-Access-Jwt-Assertion", "X-Goog-Authenticated-User-", "X-Goog-Iap-Jwt-Assertion",
	"Tailscale-User-", "X-Authentik-", "X-Pomerium-", "X-Token-", "X-Vouch-", "X-Webauth-", "X-Consumer-",
	"X-Ssl-Client-", "X-Forwarded-Tls-Client-Cert", "X-Remote-Extra-", "X-Mcp-"}

// identityPrefixesByInitials indexes identityPrefixes by the low five
// bits of their first and third bytes, the same for a letter in either
// case: most field names (Accept, Authorization, Mcp-*, X-Request-Id)
// find no prefix there and cost forwardsHeader no comparison, and an
// X- name one or two, not every X- prefix. (Other bytes that share the
// bits only cost a comparison.)
var identityPrefixesByInitials = newSlotIndex(32*32, len(identityPrefixes), func(i int) int {
	return initialsSlot(identityPrefixes[i])
})

// initialsSlot is the slot of identityPrefixesByInitials a name of at
// least 3 bytes looks in.
func initialsSlot(name string) int { return int(name[0]&0x1f)<<5 | int(name[2]&0x1f) }

// slotIndex files the entries of a table (at most 255) under small slot
// numbers, in two flat byte arrays: of(s) lists the entries of slot s.
// It is read for every field of every request, and small: a 32×32 array
// of slice headers took 24 KB, of which each field's lookup touched a
// cache line the rest of the process had long evicted by the next
// request, where the whole of this takes about 1 KB.
type slotIndex struct {
	start []uint8 // slot s has the entries at[start[s]:start[s+1]]
	at    []uint8
}

func newSlotIndex(slots, n int, slot func(i int) int) slotIndex {
	x := slotIndex{start: make([]uint8, slots+1), at: make([]uint8, n)}
	for i := range n {
		x.start[slot(i)+1]++
	}
	for s := range slots {
		x.start[s+1] += x.start[s]
	}
	next := slices.Clone(x.start)
	for i := range n {
		s := slot(i)
		x.at[next[s]] = uint8(i)
		next[s]++
	}
	return x
}

func (x *slotIndex) of(s int) []uint8 { return x.at[x.start[s]:x.start[s+1]] }

type headerRule uint8

const (
	headerForward headerRule = iota
	headerDrop
	headerAcceptEncoding
	headerChecked // Mcp-Method, Mcp-Name: forwarded when validated
	headerLastEventID
	headerServerOption // forwarded, though in a family of identityPrefixes
)

// clientHeaderRules are the client header fields forwardsHeader does not
// simply forward, in canonical form.
var clientHeaderRules = [...]struct {
	name string
	rule headerRule
}{
	{"Authorization", headerDrop},
	{"Cookie", headerDrop},
	// The gateway read the body (net/http answered the client's
	// 100-continue then), and the upstream gets it whole at once: an
	// expectation would ask it for a 100 no one waits for, and make a
	// proxy that honours it (expect_continue_timeout) hold the body back.
	{"Expect", headerDrop},
	// The DPoP proof is for this request to the gateway only.
	{"Dpop", headerDrop},
	// Some server frameworks let these turn the authorized POST into
	// another method.
	{"X-Http-Method-Override", headerDrop},
	{"X-Http-Method", headerDrop},
	{"X-Method-Override", headerDrop},
	// Some (IIS, older Symfony and Laminas) route by these instead of
	// the authorized path.
	{"X-Original-Url", headerDrop},
	{"X-Rewrite-Url", headerDrop},
	// Identity that servers behind oauth2-proxy, Authelia and the like
	// trust: never the client's to assert either (and the families in
	// identityPrefixes).
	{"Remote-User", headerDrop},
	{"Remote-Name", headerDrop},
	{"Remote-Email", headerDrop},
	{"Remote-Groups", headerDrop},
	{"X-Auth-Userid", headerDrop},
	{"X-Auth-Username", headerDrop},
	{"X-Auth-Email", headerDrop},
	{"X-Auth-Subject", headerDrop},
	{"X-Auth-Groups", headerDrop},
	{"X-Auth-Roles", headerDrop},
	{"X-Original-Uri", headerDrop},
	{"X-Remote-User", headerDrop},
	// Kubernetes' authenticating proxy (X-Remote-Extra-* in
	// identityPrefixes), and oauth2-proxy's Gap-Auth.
	{"X-Remote-Group", headerDrop},
	{"Gap-Auth", headerDrop},
	{"X-Forwarded-User", headerDrop},
	{"X-Forwarded-Email", headerDrop},
	{"X-Forwarded-Groups", headerDrop},
	{"X-Forwarded-Preferred-Username", headerDrop},
	{"X-Forwarded-Access-Token", headerDrop},
	// Kong's (the families in identityPrefixes too), and the OIDC
	// plugins' user info.
	{"X-Credential-Identifier", headerDrop},
	{"X-Credential-Username", headerDrop},
	{"X-Anonymous-Consumer", headerDrop},
	{"X-Authenticated-Userid", headerDrop},
	{"X-Authenticated-Scope", headerDrop},
	{"X-Authenticated-Groups", headerDrop},
	{"X-Userinfo", headerDrop},
	// The client certificate a TLS-terminating proxy checked: Envoy's
	// (and Istio's), and the names others give it.
	{"X-Forwarded-Client-Cert", headerDrop},
	{"X-Client-Cert", headerDrop},
	{"Ssl-Client-Cert", headerDrop},
	{"X-Client-Dn", headerDrop},
	{"X-Client-Verify", headerDrop},
	{"X-Arr-Clientcert", headerDrop}, // Azure App Service's
	// The original request a forward-auth server (Traefik's) judged.
	{"X-Forwarded-Method", headerDrop},
	{"X-Forwarded-Uri", headerDrop},
	// Who and where the client is, as proxies in front of a server say
	// and servers' IP allow-lists and URL builders read: Caddy sets none
	// of these. (X-Forwarded-For and -Proto it replaces with its own
	// unless the client is one of its trusted_proxies, which may speak
	// for the client, so they are Caddy's to judge.)
	{"Forwarded", headerDrop},
	// The host the client named, which a trusted proxy passes on and
	// Caddy then keeps: the request is for the resource's host (see
	// nextRequest), which Caddy sets here when the field is absent.
	{"X-Forwarded-Host", headerDrop},
	{"X-Real-Ip", headerDrop},
	{"True-Client-Ip", headerDrop},
	{"X-Client-Ip", headerDrop},
	{"Cf-Connecting-Ip", headerDrop},
	{"Fastly-Client-Ip", headerDrop},
	{"X-Cluster-Client-Ip", headerDrop},
	{"X-Original-Forwarded-For", headerDrop},
	{"X-Forwarded-Prefix", headerDrop},
	{"X-Forwarded-Port", headerDrop},
	{"X-Forwarded-Ssl", headerDrop},
	{"X-Forwarded-Server", headerDrop},
	// The gateway's to assert (ForwardIdentity), never the client's; so
	// is the rest of the X-Mcp- family (identityPrefixes).
	{"X-Mcp-Subject", headerDrop},
	{"X-Mcp-Client", headerDrop},
	{"X-Mcp-Actor", headerDrop},
	{"X-Mcp-Scope", headerDrop},
	{"X-Mcp-Principal-Type", headerDrop},
	// Except the options of GitHub's MCP server, which clients send to
	// choose what it offers (the gateway decides every call all the
	// same).
	{"X-Mcp-Toolsets", headerServerOption},
	{"X-Mcp-Tools", headerServerOption},
	{"X-Mcp-Exclude-Tools", headerServerOption},
	{"X-Mcp-Readonly", headerServerOption},
	{"X-Mcp-Lockdown", headerServerOption},
	{"X-Mcp-Insiders", headerServerOption},
	{"X-Mcp-Features", headerServerOption},
	// The upstream's session id replaces the client's.
	{"Mcp-Session-Id", headerDrop},
	{"Trailer", headerDrop},
	{"Content-Length", headerDrop},
	{"Accept-Encoding", headerAcceptEncoding},
	{"Mcp-Method", headerChecked},
	{"Mcp-Name", headerChecked},
	{"Last-Event-Id", headerLastEventID},
}

// clientHeaderRule is the rule for a header field name in any case. The
// names are ASCII, so a name of the same length that EqualFold matches
// is an ASCII case variant (what canonicalizing it would find), without
// the cost of canonicalizing every name of every request.
func clientHeaderRule(name string) headerRule {
	if len(name) == 0 || len(name) > maxClientHeaderRuleName {
		return headerForward // empty, or longer than every rule's name
	}
	for _, i := range clientHeaderRulesByLen.of(lenLastSlot(name)) {
		if r := &clientHeaderRules[i]; name == r.name || strings.EqualFold(name, r.name) {
			return r.rule
		}
	}
	return headerForward
}

// clientHeaderRulesByLen indexes clientHeaderRules by name length and
// the low five bits of the last byte (the same for a letter in either
// case), so a field name is compared only with the rules' names of its
// length and last letter (one, mostly none) rather than every name of
// its length: Content-Length had twelve, each an EqualFold per request.
// (Other bytes that share the bits only cost a comparison.) The last
// byte tells apart more names than the first: many rules' names begin
// "X-".
var clientHeaderRulesByLen = newSlotIndex((maxClientHeaderRuleName+1)*32, len(clientHeaderRules), func(i int) int {
	return lenLastSlot(clientHeaderRules[i].name)
})

// maxClientHeaderRuleName is the length of the longest name in
// clientHeaderRules (TestClientHeaderRule).
const maxClientHeaderRuleName = 30

// lenLastSlot is the slot of clientHeaderRulesByLen a name of at most
// maxClientHeaderRuleName bytes looks in.
func lenLastSlot(name string) int { return len(name)<<5 | int(name[len(name)-1]&0x1f) }

// requestBody is the authorized body as next reads it.
type requestBody struct{ bytes.Reader }

func (*requestBody) Close() error { return nil }

// headerSafe returns s, or its MCP base64 sentinel form when s is not
// plain visible ASCII (or looks like the sentinel), so identity headers
// can never inject or fail.
func headerSafe(s string) string {
	plain := !(strings.HasPrefix(s, "=?base64?") && strings.HasSuffix(s, "?="))
	for i := 0; plain && i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			plain = false
		}
	}
	if plain && s == strings.TrimSpace(s) {
		return s
	}
	return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
}
