package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Task binding (2026-07-28, Tasks extension io.modelcontextprotocol/tasks,
// modelcontextprotocol/ext-tasks specification/2026-07-28/tasks.md).
//
// The protocol is stateless: a tools/call may answer with a task
// (CreateTaskResult, result.taskId), and tasks/get, tasks/update and
// tasks/cancel name it in params.taskId and Mcp-Name with nothing else tying
// them to the caller. So task ids are bound like 2025 session ids (see
// session.go): the client only ever sees
//
//	base64url(tool || 0x00 || upstreamID || HMAC-SHA256(SessionKey, "mcp-task-v2", resource, iss, principal type, sub, client_id, act.sub, tool || 0x00 || upstreamID))
//
// tool is the name of the tools/call that created the task (tool names
// hold no NUL): a follow-up must pass that tool's rule again, its scopes
// and actor rule, for the current token, since it reads the call's
// result or feeds it input (SPEC: follow-ups are authorized in the
// context of the call that created the task; review s15-gateway F4).
//
// Answers to the requests that carry task ids (tools/call, tasks/*,
// subscriptions/listen) have result.taskId and the params.taskId of
// notifications/tasks wrapped on the way back (JSON answers are read
// whole, up to maxFilteredBody, SSE event by event). A follow-up's id is
// verified for the current token's principal; a mismatch is answered as an
// unknown task and never forwarded, otherwise the upstream gets the body
// with exactly that string replaced, parsed and decided again.
//
// Shapes that cannot be rewritten with certainty are refused: task ids in
// arrays (subscriptions/listen params.notifications.taskIds and its
// acknowledgement), and tasks/list and tasks/result, which the extension
// does not define but an older server could answer with every caller's
// tasks or for an unbound id (answered "method not found", as every method
// the revision does not define: method.go). A task id anywhere
// else (a result of another method) is passed as is and is then useless
// as a follow-up, since it does not verify.

const maxUpstreamTask = 1024 // bytes; far above what servers mint

// wrapTask returns the client-facing task id for an upstream one, created
// by a call of tool.
func (g *Gateway) wrapTask(p *principal, tool, upstream string) (string, error) {
	if upstream == "" || len(upstream) > maxUpstreamTask {
		return "", errors.New("upstream task id is empty or too long")
	}
	if !validToolName(tool) {
		return "", errors.New("the task's tool name is not valid")
	}
	return g.wrapBound(labelTask, p, tool+"\x00"+upstream), nil
}

// unwrapTask verifies a client-facing task id against the principal and
// returns the tool that created the task and the upstream id.
func (g *Gateway) unwrapTask(p *principal, wrapped string) (tool, upstream string, ok bool) {
	ref, ok := g.unwrapBound(labelTask, p, wrapped, maxToolName+1+maxUpstreamTask)
	if !ok {
		return "", "", false
	}
	tool, upstream, ok = strings.Cut(ref, "\x00")
	return tool, upstream, ok && upstream != "" && len(upstream) <= maxUpstreamTask
}

// taskRequest reports whether a method names a task in params.taskId.
func taskRequest(method string) bool {
	switch method {
	case "tasks/get", "tasks/update", "tasks/cancel":
		return true
	}
	return false
}

// rewritesTasks reports whether the answer may carry task ids to wrap.
func (x *exchange) rewritesTasks() bool {
	if x.tasksKnown {
		return x.tasks
	}
	x.tasks, x.tasksKnown = false, true
	if !x.rev.bindsTaskIDs() {
		return false
	}
	for i := range x.msgs {
		m := &x.msgs[i]
		if m.Kind == mcpparse.KindRequest && (m.Method == "tools/call" && declaresTasks(m.Raw) || m.Method == "subscriptions/listen" || taskRequest(m.Method)) {
			x.tasks = true
			return true
		}
	}
	return false
}

// tasksExtension is where a request declares the Tasks extension: its
// per-request client capabilities.
var tasksExtension = mustPointer("/params/_meta/io.modelcontextprotocol~1clientCapabilities/extensions/io.modelcontextprotocol~1tasks")

// mustPointer parses a constant JSON Pointer.
func mustPointer(s string) mcpparse.Pointer {
	p, err := mcpparse.ParsePointer(s)
	if err != nil {
		panic(err)
	}
	return p
}

// hasMember reports whether raw has the member p points at; anything
// unclear counts as present. mayName spares the lookup for the usual
// request.
func hasMember(raw []byte, p mcpparse.Pointer, word string) bool {
	if !mayName(raw, word) {
		return false
	}
	_, found, err := p.Lookup(raw)
	return found || err != nil
}

// mayName reports whether raw may hold a member named word (lower-case
// ASCII letters) in a spelling an upstream could read as word: word in
// any ASCII case, or anything a byte scan cannot rule out: a \u escape
// that may stand for one of its letters, or one of the two non-ASCII
// letters whose case folds to an ASCII one, ſ (s) and the Kelvin sign K
// (k) ("taſk"; matched by encoding/json and strings.EqualFold). Other
// escapes spell no letter of word: "\u003c", which Go's encoding/json
// writes for "<", leaves an answer unread.
func mayName(raw []byte, word string) bool { return maySpell(raw, word, "") }

// maySpell is mayName for a word that may also have any of seps between
// its letters. Each byte it looks for is found with bytes.IndexByte (or
// bytes.Index), which pass over the rest many bytes at a time: this runs
// on every body and answer of a request that may carry task ids or a
// request state.
func maySpell(raw []byte, word, seps string) bool {
	return mayEscapeLetters(raw, word, seps) || spelt(raw, word, seps)
}

// looseSeps are what Go's json/v2, matching member names without case,
// also ignores between their letters ("con_tents" reads as contents):
// the seps of a member name the gateway reads for what a client gets.
const looseSeps = "_-"

// mayEscapeLetters reports whether raw holds a \u escape, or one of ſ
// and K, that may stand for one of letters (lower-case ASCII) or seps:
// maySpell's check of what is not spelt in plain bytes. letters may be
// the letters of several words, so that one pass serves them all.
func mayEscapeLetters(raw []byte, letters, seps string) bool {
	if bytes.IndexByte(raw, 0) >= 0 {
		// A NUL byte, which JSON text in UTF-8 never holds (none
		// outside strings, escaped within): the text is UTF-16 or
		// UTF-32, which Python's json.loads detects and reads from bytes
		// (as httpx's json() does), each letter spelt in bytes that no
		// scan here finds.
		return true
	}
	if strings.IndexByte(letters, 's') >= 0 && bytes.Contains(raw, []byte("\u017f")) ||
		strings.IndexByte(letters, 'k') >= 0 && bytes.Contains(raw, []byte("\u212a")) {
		return true
	}
	for rest := raw; ; {
		i := bytes.Index(rest, []byte(`\u`))
		if i < 0 {
			return false
		}
		rest = rest[i+2:]
		if mayEscape(rest, letters, seps) {
			return true
		}
	}
}

// spelt reports whether raw holds word (lower-case ASCII letters) in
// plain bytes, in any ASCII case, with any of seps between its letters.
func spelt(raw []byte, word, seps string) bool {
	for _, c := range [2]byte{word[0], word[0] &^ 0x20} {
		for rest := raw; ; {
			i := bytes.IndexByte(rest, c)
			if i < 0 {
				break
			}
			if spells(rest[i+1:], word[1:], seps) {
				return true
			}
			rest = rest[i+1:]
		}
	}
	return false
}

// mayEscape reports whether the \u escape whose hex digits hex begins
// with may stand for a letter of word, in any case, or one of seps: what
// cannot be read as four hex digits may.
func mayEscape(hex []byte, word, seps string) bool {
	if len(hex) < 4 {
		return true
	}
	var r rune
	for _, c := range hex[:4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c|0x20 && c|0x20 <= 'f':
			r = r<<4 | rune(c|0x20-'a'+10)
		default:
			return true
		}
	}
	switch {
	case r < utf8.RuneSelf:
		return strings.IndexByte(seps, byte(r)) >= 0 || unicode.IsLetter(r) && strings.IndexByte(word, byte(r)|0x20) >= 0
	case r == 'ſ':
		return strings.IndexByte(word, 's') >= 0
	case r == '\u212a':
		return strings.IndexByte(word, 'k') >= 0
	}
	return false // no other rune folds to an ASCII letter
}

// spells reports whether b begins with word (lower-case ASCII letters)
// in any ASCII case, with any of seps between its letters.
func spells(b []byte, word, seps string) bool {
	k := 0
	for _, c := range b {
		if k == len(word) {
			break
		}
		switch {
		case c|0x20 == word[k]:
			k++
		case strings.IndexByte(seps, c) < 0:
			return false
		}
	}
	return k == len(word)
}

// declaresTasks reports whether a request may be answered with a task: a
// server must never return one to a request that does not declare the
// Tasks extension, so the answer to any other tools/call is not read for
// task ids to wrap (a notifications/tasks there, another caller's, is
// dropped: filterMessage). Should an upstream return a task all the
// same, its id reaches the client unwrapped, and an unwrapped id names
// no task through the gateway (rewriteTaskRequest refuses it): the
// client loses a usable id, never gains another caller's task. Anything
// unclear counts as declared.
func declaresTasks(raw []byte) bool { return hasMember(raw, tasksExtension, "tasks") }

// bindTasks checks the task ids of an authorized 2026-07-28 request and
// replaces a wrapped one with the upstream's, in the body and Mcp-Name.
// Before 2026-07-28 it refuses tasks (see refuseTasks2025).
func (g *Gateway) bindTasks(x *exchange) *refusal {
	if !x.rev.bindsTaskIDs() {
		return refuseTasks2025(x)
	}
	if len(x.msgs) != 1 || x.batch {
		// Parse allows no batches in this revision; stay sure of it.
		return &refusal{status: http.StatusBadRequest, code: codeInvalidRequest, message: "batches are not allowed in protocol version " + x.rev.String()}
	}
	m := &x.msgs[0]
	if m.Kind == mcpparse.KindResponse {
		return nil
	}
	switch {
	case m.Method == "subscriptions/listen":
		has, err := hasTaskIDs(m.Raw)
		if err != nil || has {
			return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, id: m.ID,
				message: "task notifications are not available through this gateway (params.notifications.taskIds); poll tasks/get"}
		}
		return nil
	case taskRequest(m.Method) && m.HasName:
		return g.rewriteTaskRequest(x)
	}
	return nil
}

// refuseTasks2025 refuses task requests (tasks/*) and task-augmented
// requests (params.task) in the revisions before 2026-07-28 (2025-11-25
// defines tasks). There a task is named by its id alone, and servers need
// not keep tasks per session (the TypeScript SDK's task store does not),
// so the bound session does not bind the task: another principal holding
// or guessing an id, or listing tasks, would reach a task that is not
// theirs. Binding the ids would mean rewriting every shape 2025-11-25
// carries them in; tasks are offered through the gateway with 2026-07-28,
// where they are bound, instead.
func refuseTasks2025(x *exchange) *refusal {
	for i := range x.msgs {
		m := &x.msgs[i]
		switch {
		case m.Kind == mcpparse.KindResponse:
		case strings.HasPrefix(m.Method, "tasks/"):
			return &refusal{status: x.rev.methodNotFoundStatus(), code: codeMethodNotFound, id: m.ID,
				message: "Method not found: " + strconv.Quote(m.Method) + ": tasks are available through this gateway in protocol version " + rev20260728.String() + " only",
				data:    map[string]string{"method": m.Method}}
		case m.Kind == mcpparse.KindRequest && augmentsTask(m.Raw):
			return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, id: m.ID,
				message: "task-augmented requests (params.task) are available through this gateway in protocol version " + rev20260728.String() + " only"}
		}
	}
	return nil
}

// taskAugmentation is where a 2025-11-25 request asks to run as a task.
var taskAugmentation = mustPointer("/params/task")

// augmentsTask reports whether a request has params.task (anything
// unclear counts as augmented).
func augmentsTask(raw []byte) bool { return hasMember(raw, taskAugmentation, "task") }

// taskFollowUp is what a task request's exchange keeps of its task: the
// Mcp-Name the upstream gets (the upstream's task id, header-safe) and
// the tool whose call created the task.
type taskFollowUp struct{ upName, tool string }

// rewriteTaskRequest verifies params.taskId and readies the body and
// Mcp-Name the upstream gets.
func (g *Gateway) rewriteTaskRequest(x *exchange) *refusal {
	m := x.msgs[0]
	tool, up, ok := g.unwrapTask(x.p, m.Name)
	if !ok {
		// The answer for a task that does not exist (the extension's
		// invalid params), so a foreign id reveals nothing.
		return &refusal{status: http.StatusNotFound, code: codeInvalidParams, message: "Task not found", id: m.ID}
	}
	// The tool's rule, as the call that created the task passed it
	// (its arguments were checked then); a tool the rules no longer
	// classify with certainty (a reload since) is refused.
	d, err := g.policy.decideCaseless(x.p, kindTool, g.policy.tools, tool)
	if err != nil {
		d = decision{kind: kindTool, target: tool, reason: err.Error()}
	}
	if !d.allow {
		x.dec[0] = d
		return g.denial(x)
	}
	if err := g.replaceTaskID(x, m, tool, up); err != nil {
		g.log.Warn("task request not rewritten", zap.Error(err))
		return &refusal{status: http.StatusBadRequest, code: codeInvalidParams, message: "the task id could not be rewritten", id: m.ID}
	}
	return nil
}

// replaceTaskID replaces exactly the params.taskId string, then reads the
// new body again and decides it anew (redecide).
func (g *Gateway) replaceTaskID(x *exchange, m mcpparse.Message, tool, up string) error {
	span, found, err := mcpparse.LocateString(x.body, "params", "taskId")
	if err != nil || !found || span.Value != m.Name {
		return fmt.Errorf("locating params.taskId: found %v: %w", found, err)
	}
	body, err := mcpparse.ReplaceString(x.body, span, up)
	if err != nil {
		return err
	}
	name := headerSafe(up)
	if err := g.redecide(x, m, body, name, func(n *mcpparse.Message) bool { return n.HasName && n.Name == up }); err != nil {
		return err
	}
	x.task = &taskFollowUp{upName: name, tool: tool}
	return nil
}

// redecide reads body, x's one message m with a value the gateway
// replaced, again and decides it anew: it must be the same request (same,
// as the new Mcp-Name name and the body agree), authorized the same way,
// so that what is forwarded is exactly what was authorized. On success
// body becomes x's.
func (g *Gateway) redecide(x *exchange, m mcpparse.Message, body []byte, name string, same func(n *mcpparse.Message) bool) error {
	msgs, batch, err := mcpparse.Parse(body, mcpparse.Limits{})
	if err != nil {
		return fmt.Errorf("reading the rewritten body: %w", err)
	}
	n := &msgs[0]
	if batch || len(msgs) != 1 || n.Kind != m.Kind || n.Method != m.Method || !mcpparse.SameID(n.ID, m.ID) ||
		n.ProtocolVersion != m.ProtocolVersion || !same(n) {
		return errors.New("the rewritten body is another request")
	}
	if x.headerChecked {
		h := http.Header{}
		for _, k := range []string{mcpparse.HeaderMethod, mcpparse.HeaderProtocolVersion} {
			h[k] = x.r.Header.Values(k)
		}
		if name != "" {
			h.Set(mcpparse.HeaderName, name)
		}
		if err := mcpparse.CheckHeaders(h, *n); err != nil {
			return fmt.Errorf("checking the rewritten headers: %w", err)
		}
	}
	d, err := g.policy.decide(x.p, n, x.rev)
	if err != nil || !d.allow || d.kind != x.dec[0].kind {
		return errors.New("the rewritten request is decided differently")
	}
	x.body, x.msgs, x.dec[0] = body, msgs, d
	return nil
}

// hasTaskIDs reports whether a message has params.notifications.taskIds.
// A case variant of the name counts as well: more is refused, never less.
func hasTaskIDs(raw []byte) (bool, error) {
	n, err := listenNotifications(raw)
	if err != nil {
		return false, err
	}
	_, has, err := looseMember(n, "taskIds")
	return has, err
}

// resourceSubscriptions returns the URIs of a subscriptions/listen
// request's params.notifications.resourceSubscriptions, which replaces
// resources/subscribe in 2026-07-28.
func resourceSubscriptions(raw []byte) ([]string, error) {
	n, err := listenNotifications(raw)
	if err != nil {
		return nil, err
	}
	v, ok, err := looseMember(n, "resourceSubscriptions")
	if err != nil || !ok {
		return nil, err
	}
	var uris []string
	if err := json.Unmarshal(v, &uris); err != nil {
		return nil, errors.New("params.notifications.resourceSubscriptions is not a list of URIs")
	}
	return uris, nil
}

// listenNotifications returns params.notifications of a
// subscriptions/listen request or its acknowledgement.
func listenNotifications(raw []byte) (map[string]json.RawMessage, error) {
	var msg struct {
		Params map[string]json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(raw, &msg); err != nil {
		return nil, errors.New("params is not an object")
	}
	v, ok, err := looseMember(msg.Params, "notifications")
	if err != nil || !ok {
		return nil, err
	}
	var n map[string]json.RawMessage
	if err := json.Unmarshal(v, &n); err != nil {
		return nil, errors.New("params.notifications is not an object")
	}
	return n, nil
}

// looseMember returns the member of n (params, its notifications, a
// completion's params.ref, a tools/call's arguments) named name in any
// case and with or without underscores and dashes, as servers read it
// that match names case-insensitively (Go's json/v2 then ignores '-' and
// '_' too) or, like the Python SDK's models, also by their snake_case
// field names (resource_subscriptions, task_ids): more is refused, never
// less; up to a NUL, as decoders that keep names as C strings read them
// (mcpparse.SameLooseName, as the argument rules compare). Two members
// that read as one are an error, since which a server takes cannot be
// told.
func looseMember(n map[string]json.RawMessage, name string) (json.RawMessage, bool, error) {
	var v json.RawMessage
	found := false
	for k, kv := range n {
		if !mcpparse.SameLooseName(k, name) {
			continue
		}
		if found {
			return nil, false, fmt.Errorf("member %q is spelled twice, in case or with '-' or '_'", name)
		}
		v, found = kv, true
	}
	return v, found, nil
}

// exactMember is m's member name, refusing one a client may read as it
// but spelt otherwise (in case, with '-' or '_', cut at a NUL:
// mcpparse.SameLooseName), where looseMember would read it as name. The
// refusal names that member cut as an audit event's name is: in an
// upstream's answer it is logged, and after a NUL it may run on for
// megabytes ("Resource\x00…").
func exactMember(m map[string]json.RawMessage, name string) (json.RawMessage, bool, error) {
	for k := range m {
		if k != name && mcpparse.SameLooseName(k, name) {
			shown, _ := auditBound(k, maxAuditName)
			return nil, false, fmt.Errorf("member %q may be read as %s", shown, name)
		}
	}
	v, ok := m[name]
	return v, ok, nil
}

// wrapTaskIDs wraps the task ids of one message of the upstream's answer:
// result.taskId of a response (CreateTaskResult, tasks/get) and
// params.taskId of notifications/tasks. An acknowledgement listing task
// ids cannot be rewritten with certainty: it is an error, so the answer
// passes unchanged where it may (passUnwrapped) and is refused where it
// must be read; on a subscriptions/listen stream it passes as it came
// (the caller asked for no task, and an id unwrapped names none through
// the gateway: the acknowledgement carries no status or result).
//
// Only ids the caller is entitled to are wrapped, so an upstream that
// leaks another caller's task never turns it into a usable handle: ids
// in answers to a tools/call (the task it creates: the result of the
// response with its id, and notifications naming that task after it),
// and in answers to
// tasks/get|update|cancel only the id the request named. Answers to
// subscriptions/listen carry none the caller asked for (task
// subscriptions are refused), so nothing there is wrapped. An id left
// unwrapped names no task through the gateway.
//
// A notifications/tasks naming a task that is not the caller's is
// dropped (nil, nil), not passed unwrapped: it carries the task's status
// and may carry its final result (another caller's tool output), which
// an upstream broadcasting every task's status would hand to whoever
// listens. On a subscriptions/listen stream none is the caller's.
func (g *Gateway) wrapTaskIDs(x *exchange, m *mcpparse.Message, msg []byte) ([]byte, error) {
	req := &x.msgs[0]
	if req.Method == "subscriptions/listen" {
		if m.Kind == mcpparse.KindNotification && m.Method == "notifications/tasks" {
			return nil, nil
		}
		return msg, nil
	}
	var path [2]string
	switch {
	case m.Kind == mcpparse.KindResponse:
		path = [2]string{"result", "taskId"}
	case m.Method == "notifications/tasks":
		path = [2]string{"params", "taskId"}
	case m.Method == "notifications/subscriptions/acknowledged":
		has, err := hasTaskIDs(msg)
		if err != nil || has {
			return nil, errors.New("task ids in a subscription acknowledgement")
		}
		return msg, nil
	default:
		return msg, nil
	}
	created := false
	if m.Kind == mcpparse.KindResponse && !taskRequest(req.Method) {
		// A tools/call's own answer, the first response with its id
		// (task or not, readable or not), may create its task; a
		// response with another id on its stream (misrouted), or a later
		// one with its id (ids collide across callers: every SDK counts
		// from 0 or 1), is another caller's (review s13-sse F1,
		// s13-fresh4 F2, s13-fresh5 F1).
		if !mcpparse.SameID(m.ID, req.ID) || x.answered {
			return msg, nil
		}
		x.answered, created = true, true
	}
	span, found, err := mcpparse.LocateString(msg, path[:]...)
	switch {
	case err != nil:
		return nil, fmt.Errorf("task id: %w", err)
	case !found && m.Kind != mcpparse.KindResponse:
		return nil, errors.New("notifications/tasks without params.taskId")
	case !found:
		return msg, nil
	}
	tool := req.Name
	switch {
	case taskRequest(req.Method):
		if x.task == nil || span.Value != req.Name {
			// Not the task this caller asked about (or a request
			// that named none: mcpparse refuses it).
			return othersTask(m, msg)
		}
		tool = x.task.tool
	case created:
		x.createdTask = span.Value
	case span.Value != x.createdTask:
		// A status of a task this call did not create (an upstream that
		// broadcasts every task's status), or of its own before its
		// answer named it: a response left unwrapped, a handle to
		// nothing; a notification dropped.
		return othersTask(m, msg)
	}
	wrapped, err := g.wrapTask(x.p, tool, span.Value)
	if err != nil {
		return nil, err
	}
	return mcpparse.ReplaceString(msg, span, wrapped)
}

// othersTask is what goes out of a message naming a task that is not the
// caller's: a response unchanged (its id unwrapped names no task through
// the gateway, and dropping it could leave the caller's request
// unanswered), a notifications/tasks not at all, since its status and
// result are another caller's.
func othersTask(m *mcpparse.Message, msg []byte) ([]byte, error) {
	if m.Kind == mcpparse.KindNotification {
		return nil, nil
	}
	return msg, nil
}
