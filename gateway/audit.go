package gateway

import (
	"encoding/json"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Audit events: one per JSON-RPC message (one per request for GET and
// DELETE, and for requests refused before their messages were read),
// logged after the upstream answered so the upstream status is part of it;
// with Config.AuditDenialsOnly, for refused requests only.
// Fields: principal, client, act (full chain, outermost first),
// principal_type, resource, http_method, method, tool | prompt | uri
// (for tasks/*, the tool whose call created the task), jsonrpc_id, rule, argument (the pointer of a refusing argument rule),
// arguments (a tools/call's arguments, only with Config.AuditArguments;
// past maxAuditArguments bytes the JSON text cut, as a string),
// decision, reason, status, latency, request_id, remote_addr, truncated,
// escaped (a field holds characters written as JSON escapes: auditText).
// Never a token or session id. What the request names (http_method,
// method, jsonrpc_id, the tool, prompt or uri, the arguments, and the
// reason, which may quote them) is cut to maxAuditName or maxAuditText bytes, marked with
// auditCut and truncated: true, so that a caller cannot write megabytes
// into the audit log per request.

const auditMessage = "mcp request"

// Bounds of the audit event's fields that the request's body names.
const (
	maxAuditName = 256      // http_method, method, jsonrpc_id, tool, prompt
	maxAuditText = 2 * 1024 // uri, reason
	// maxAuditArguments bounds a tools/call's arguments (AuditArguments):
	// past it they are written as a string, cut, rather than as JSON.
	maxAuditArguments = 4 * 1024
)

// unbounded is the bound of a field auditText escapes but does not cut.
const unbounded = math.MaxInt

// auditCut ends a value cut to its bound.
const auditCut = "…(truncated)"

// auditBound is s cut to max bytes (at a character boundary) and marked
// with auditCut, and whether it was cut; s itself, allocating nothing,
// when it fits.
func auditBound(s string, max int) (string, bool) {
	if len(s) <= max {
		return s, false
	}
	n := max
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + auditCut, true
}

// shownAsIs reports whether a terminal shows r as it is: not a C1
// control (U+009B is CSI), DEL, a bidirectional or other format character
// (U+202E writes what follows backwards, U+200B shows nothing), a line or
// paragraph separator, a private-use or unassigned code point. zap writes
// such characters raw, escaping only C0 controls.
func shownAsIs(r rune) bool {
	return r < utf8.RuneSelf && r != 0x7f || unicode.IsGraphic(r) && !unicode.Is(unicode.Cf, r)
}

// auditText is s bounded as auditBound bounds it, with every character
// shownAsIs refuses written as a JSON escape (\u009b; beyond the BMP
// as its surrogate pair), so that what a caller sends cannot act on the
// terminal of an operator who follows the audit log or hide what it
// says; escaped reports it. In text (json false) a backslash is then
// written \\ too, so that the field reads as JSON string text; JSON text
// (json true: an id, arguments) keeps its backslashes, which are its
// escapes, and reads as the same value. Characters below U+007F are
// zap's (it escapes C0 controls). s itself, allocating nothing, when no
// character needs escaping and it fits.
func auditText(s string, max int, json bool) (out string, cut, escaped bool) {
	if shownWhole(s) {
		out, cut = auditBound(s, max)
		return out, cut, false
	}
	var b strings.Builder
	b.Grow(min(len(s), max) + len(auditCut))
	var esc [12]byte
	for _, r := range s {
		piece := esc[:0]
		switch {
		case r == '\\' && !json:
			piece = append(piece, `\\`...)
		case r == utf8.RuneError || shownAsIs(r):
			piece = utf8.AppendRune(piece, r)
		default:
			for _, u := range utf16.Encode([]rune{r}) {
				piece = append(piece, '\\', 'u', hexDigit[u>>12], hexDigit[u>>8&15], hexDigit[u>>4&15], hexDigit[u&15])
			}
		}
		if b.Len()+len(piece) > max {
			b.WriteString(auditCut)
			return b.String(), true, true
		}
		b.Write(piece)
	}
	return b.String(), false, true
}

const hexDigit = "0123456789abcdef"

// shownWhole reports whether auditText would escape nothing in s.
func shownWhole[T ~string | ~[]byte](s T) bool {
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf && s[i] != 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && n == 1 || shownAsIs(r) {
			i += n // invalid UTF-8: zap writes \ufffd
			continue
		}
		return false
	}
	return true
}

// auditForwarded counts and logs the decisions of a forwarded request
// (logs them unless only denials are audited, and the request ran to its
// end: reason says why the gateway ended it early or answered in the
// upstream's place, "" when it did neither).
// Status 0 means next wrote nothing (under Caddy: the proxy failed and
// its error handler answers).
func (g *Gateway) auditForwarded(x *exchange, status int, reason string) {
	end := g.now()
	g.metrics.Upstream(end.Sub(x.upStart))
	g.countDecisions(x, true)
	if g.cfg.AuditDenialsOnly && reason == "" {
		return
	}
	latency := end.Sub(x.start)
	if len(x.dec) == 0 {
		g.auditOne(x, nil, nil, true, status, reason, latency)
		return
	}
	for i := range x.dec {
		g.auditOne(x, &x.dec[i], x.message(i), true, status, reason, latency)
	}
}

// auditRefusal counts and logs a refused request: an event for each
// message if the messages were read (decided or not), otherwise one event
// with the refusal's reason.
func (g *Gateway) auditRefusal(x *exchange, f *refusal) {
	latency := g.now().Sub(x.start)
	g.metrics.Refusal(refusalReason(f))
	g.countDecisions(x, false)
	if len(x.dec) == 0 && len(x.msgs) > 0 {
		// Read, and refused before the policy decided them (a batch's
		// shared id, an unknown method, a notification without its
		// session): each message's event names its method and id.
		for i := range x.msgs {
			g.auditOne(x, nil, &x.msgs[i], false, f.status, f.message, latency)
		}
		return
	}
	if len(x.dec) == 0 || len(x.dec) != max(len(x.msgs), 1) {
		g.auditOne(x, nil, nil, false, f.status, f.message, latency)
		return
	}
	// denied: a message was denied by the policy or a pin; otherwise
	// every message was allowed and a later step refused the request (a
	// task id that is not the caller's, an Mcp-Param header, a pin
	// fetch, a list cursor in a batch), whose reason each event names.
	denied := false
	for i := range x.dec {
		denied = denied || !x.dec[i].allow
	}
	for i := range x.dec {
		d := &x.dec[i]
		reason := d.reason
		switch {
		case d.allow && !denied:
			reason = f.message
		case d.allow:
			// An allowed message shares the fate of its denied batch mates.
			reason = "refused with its batch"
		}
		g.auditOne(x, d, x.message(i), false, f.status, reason, latency)
	}
}

func (x *exchange) message(i int) *mcpparse.Message {
	if i < len(x.msgs) {
		return &x.msgs[i]
	}
	return nil
}

// auditEvent is one audit event. It encodes its own fields (zap.Inline),
// so an event costs no []zap.Field and no per-field conversions. It is
// not changed once written: a core may encode it later (zaptest's
// observer does).
type auditEvent struct {
	g         *Gateway
	x         *exchange
	d         *decision         // nil when no message was decided
	m         *mcpparse.Message // nil when no message was read
	allowed   bool
	status    int
	reason    string
	latency   time.Duration
	requestID string
	addr      string       // the client's (Config.ClientAddr)
	field     [1]zap.Field // the event as ce.Write's argument
	act       auditNames   // the act chain, as MarshalLogObject writes it
}

// auditOne writes one event, made only when the audit logger takes it;
// latency is the request's, the same for each of its events.
func (g *Gateway) auditOne(x *exchange, d *decision, m *mcpparse.Message, allowed bool, status int, reason string, latency time.Duration) {
	ce := g.audit.Check(zapcore.InfoLevel, auditMessage)
	if ce == nil {
		return
	}
	if d != nil && reason == "" {
		reason = d.reason
	}
	e := &auditEvent{g: g, x: x, d: d, m: m, allowed: allowed, status: status, reason: reason, latency: latency, addr: x.r.RemoteAddr}
	if g.cfg.RequestID != nil {
		e.requestID = g.cfg.RequestID(x.r)
	}
	if g.cfg.ClientAddr != nil {
		e.addr = g.cfg.ClientAddr(x.r)
	}
	e.field[0] = zap.Inline(e)
	ce.Write(e.field[:]...)
}

// MarshalLogObject writes the event's fields, in the order of the list
// above; request_id only when Config.RequestID is set.
func (e *auditEvent) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	truncated, escaped := false, false
	text := func(s string, max int, json bool) string {
		s, cut, esc := auditText(s, max, json)
		truncated, escaped = truncated || cut, escaped || esc
		return s
	}
	add := func(key, s string, max int) { enc.AddString(key, text(s, max, false)) }
	if p := e.x.p; p != nil {
		// The token's names: a remote issuer's may hold anything. They
		// are not bounded (the token is), so escaped they are written
		// whole (unbounded): a bound of the name's own length cut it
		// after its first escape, "\u200bbob" and "\u200balice" both
		// the same "\u200b…(truncated)".
		add("principal", p.subject, unbounded)
		add("client", p.clientID, unbounded)
		e.act = auditNames{names: p.actors}
		if err := enc.AddArray("act", &e.act); err != nil {
			return err
		}
		escaped = escaped || e.act.escaped
		enc.AddString("principal_type", p.principalType)
	}
	enc.AddString("resource", e.g.cfg.Resource)
	add("http_method", e.x.r.Method, maxAuditName) // any token net/http reads
	if m := e.m; m != nil {
		add("method", m.Method, maxAuditName)
		switch {
		case m.ID == nil:
		case len(m.ID) <= maxAuditName && shownWhole(m.ID):
			enc.AddByteString("jsonrpc_id", m.ID)
		default:
			enc.AddString("jsonrpc_id", text(string(m.ID), maxAuditName, true))
		}
	}
	if d := e.d; d != nil {
		switch {
		case d.target != "":
			max := maxAuditName
			if d.kind == kindResource {
				max = maxAuditText
			}
			add(d.kind, d.target, max)
		case e.x.task != nil:
			// A tasks/* request passed the rule of the tool that
			// created its task (rewriteTaskRequest): named as a refusal
			// by that rule names it.
			add(kindTool, e.x.task.tool, maxAuditName)
		}
		if d.rule != "" {
			enc.AddString("rule", d.rule)
		}
		if d.argument != "" {
			enc.AddString("argument", d.argument)
		}
	}
	if m := e.m; m != nil && e.g.cfg.AuditArguments && m.Method == "tools/call" && m.Arguments != nil {
		switch {
		case len(m.Arguments) <= maxAuditArguments && shownWhole(m.Arguments):
			if err := enc.AddReflected("arguments", json.RawMessage(m.Arguments)); err != nil {
				return err
			}
		default:
			// Escaped, the JSON text reads as the same value.
			if args := text(string(m.Arguments), maxAuditArguments, true); len(m.Arguments) > maxAuditArguments || len(args) > maxAuditArguments {
				enc.AddString("arguments", args)
			} else if err := enc.AddReflected("arguments", json.RawMessage(args)); err != nil {
				return err
			}
		}
	}
	decision := "deny"
	if e.allowed {
		decision = "allow"
	}
	enc.AddString("decision", decision)
	if e.reason != "" {
		add("reason", e.reason, maxAuditText)
	}
	enc.AddInt64("status", int64(e.status))
	enc.AddDuration("latency", e.latency)
	enc.AddString("remote_addr", e.addr)
	if e.g.cfg.RequestID != nil {
		enc.AddString("request_id", e.requestID)
	}
	if truncated {
		enc.AddBool("truncated", true)
	}
	if escaped {
		enc.AddBool("escaped", true)
	}
	return nil
}

// auditNames encodes the act chain's names as an array, each escaped as
// auditText escapes text.
type auditNames struct {
	names   []string
	escaped bool // a name was escaped
}

func (a *auditNames) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, s := range a.names {
		s, _, esc := auditText(s, unbounded, false)
		a.escaped = a.escaped || esc
		enc.AppendString(s)
	}
	return nil
}
