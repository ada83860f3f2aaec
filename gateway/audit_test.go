package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestAudit(t *testing.T) {
	cfg := testConfig(t)
	cfg.RequestID = func(*http.Request) string { return "req-42" }
	// The client's address as Caddy determined it (trusted_proxies), not
	// the peer's, which behind a load balancer is the balancer's.
	cfg.ClientAddr = func(*http.Request) string { return "198.51.100.7:4711" }
	h := newHarness(t, cfg, nil)
	c := claims()
	c["act"] = map[string]any{"sub": "agent-a", "act": map[string]any{"sub": "agent-b"}}
	token := mint(t, c)

	resp := h.do(t, call{body: toolCall("read_file"), token: token})
	readBody(t, resp)
	resp = h.do(t, call{body: toolCall("delete_all"), token: token})
	readBody(t, resp)
	resp = h.do(t, call{body: toolCall("read_file")})
	readBody(t, resp)

	entries := h.logs.All()
	if len(entries) != 3 {
		t.Fatalf("audit events = %d, want 3", len(entries))
	}
	allow := entries[0].ContextMap()
	delete(allow, "latency")
	want := map[string]any{
		"principal":      "alice",
		"client":         "client-1",
		"act":            []any{"agent-a", "agent-b"},
		"principal_type": "",
		"resource":       testResource,
		"http_method":    "POST",
		"method":         "tools/call",
		"jsonrpc_id":     "1",
		"tool":           "read_file",
		"rule":           "read_*",
		"decision":       "allow",
		"status":         int64(200),
		"request_id":     "req-42",
		"remote_addr":    "198.51.100.7:4711",
	}
	if diff := cmp.Diff(want, allow); diff != "" {
		t.Errorf("allow event (-want +got):\n%s", diff)
	}
	deny := entries[1].ContextMap()
	if deny["decision"] != "deny" || deny["rule"] != "delete_*" || deny["status"] != int64(403) ||
		!strings.Contains(fmt.Sprint(deny["reason"]), "insufficient scope") {
		t.Errorf("deny event = %v", deny)
	}
	anon := entries[2].ContextMap()
	if anon["decision"] != "deny" || anon["status"] != int64(401) || anon["principal"] != nil {
		t.Errorf("unauthenticated event = %v", anon)
	}
	for _, e := range entries {
		if s := fmt.Sprint(e.ContextMap()); strings.Contains(s, token) || strings.Contains(s, token[len(token)-20:]) {
			t.Fatal("audit event contains the token")
		}
	}
}

func TestAuditBatch(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	body := `[` + toolCall("read_a") + `,{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all"}}]`
	resp := h.do(t, call{body: body, token: mint(t, claims())})
	readBody(t, resp)
	entries := h.logs.All()
	if len(entries) != 2 {
		t.Fatalf("audit events = %d, want one per message (2)", len(entries))
	}
	for i, wantReason := range []string{"refused with its batch", "insufficient scope: missing admin"} {
		m := entries[i].ContextMap()
		if m["decision"] != "deny" || m["reason"] != wantReason {
			t.Errorf("event %d = %v, want deny with reason %q", i, m, wantReason)
		}
	}
}

// TestNextWritesNothing: under Caddy a failed proxy returns an error
// without writing; the gateway must leave the status to the error
// handler, and must not leak the upstream session id.
func TestNextWritesNothing(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	cfg := testConfig(t)
	cfg.AuditLogger = zap.New(core)
	g := newGateway(t, cfg)
	req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_a")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+mint(t, claims()))
	rec := httptest.NewRecorder()
	g.Serve(rec, req, NextHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Mcp-Session-Id", "upstream-1")
	})))
	if rec.Flushed || rec.Header().Get("Mcp-Session-Id") == "upstream-1" {
		t.Errorf("after an empty next: flushed=%v session=%q", rec.Flushed, rec.Header().Get("Mcp-Session-Id"))
	}
	if e := logs.All(); len(e) != 1 || e[0].ContextMap()["status"] != int64(0) {
		t.Errorf("audit = %v, want one event with status 0", e)
	}
}

// TestNextError: a Caddy reverse_proxy that cannot reach its upstream
// writes nothing and returns an error (with status 502), which Serve
// returns for Caddy's error handler and records, mapped by ErrorStatus,
// in the audit event. A status the upstream already wrote wins.
func TestNextError(t *testing.T) {
	errUpstream := errors.New("dial upstream: connection refused")
	tests := []struct {
		name        string
		errorStatus func(error) int
		next        NextFunc
		want        int
	}{
		{"default status", nil, func(w http.ResponseWriter, r *http.Request) error { return errUpstream }, http.StatusInternalServerError},
		{"mapped status", func(err error) int {
			if errors.Is(err, errUpstream) {
				return http.StatusBadGateway
			}
			return 0
		}, func(w http.ResponseWriter, r *http.Request) error { return errUpstream }, http.StatusBadGateway},
		{"written status wins", func(error) int { return http.StatusBadGateway }, func(w http.ResponseWriter, r *http.Request) error {
			w.WriteHeader(http.StatusTeapot)
			return errUpstream
		}, http.StatusTeapot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			cfg := testConfig(t)
			cfg.AuditLogger = zap.New(core)
			cfg.ErrorStatus = tt.errorStatus
			g := newGateway(t, cfg)
			req := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_a")))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+mint(t, claims()))
			if err := g.Serve(httptest.NewRecorder(), req, tt.next); !errors.Is(err, errUpstream) {
				t.Errorf("Serve() = %v, want next's error", err)
			}
			if e := logs.All(); len(e) != 1 || e[0].ContextMap()["status"] != int64(tt.want) {
				t.Errorf("audit = %v, want one event with status %d", e, tt.want)
			}
		})
	}
}

// TestAuditDenialsOnly: with AuditDenialsOnly, forwarded requests leave no
// event and refused ones (a denied batch included, message by message)
// are audited as always.
func TestAuditDenialsOnly(t *testing.T) {
	cfg := testConfig(t)
	cfg.AuditDenialsOnly = true
	h := newHarness(t, cfg, nil)
	token := mint(t, claims())
	for _, c := range []call{
		{body: toolCall("read_file"), token: token},
		{body: `[` + toolCall("read_a") + `,{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_b"}}]`, token: token},
		{method: http.MethodGet, token: token, headers: map[string]string{"Mcp-Session-Id": sessionFor(t, h.g, token)}},
		{body: toolCall("delete_all"), token: token},
		{body: `[` + toolCall("read_a") + `,{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all"}}]`, token: token},
		{body: toolCall("read_file")},
	} {
		readBody(t, h.do(t, c))
	}
	if n := len(h.up.requests()); n != 3 {
		t.Fatalf("upstream requests = %d, want 3", n)
	}
	var got []string
	for _, e := range h.logs.All() {
		m := e.ContextMap()
		got = append(got, fmt.Sprintf("%v %v %v", m["decision"], m["tool"], m["status"]))
	}
	want := []string{
		// The harness's upstream answers the GET in JSON, which clients
		// read as events whatever its type: the gateway refuses it in
		// the upstream's place (TestAuditAnswerRefused).
		"allow <nil> 502",
		"deny delete_all 403",
		"deny read_a 403", "deny delete_all 403",
		"deny <nil> 401",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
}

// TestAuditNoTokens: no log line carries token material, whatever
// the request.
func TestAuditNoTokens(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	good := mint(t, claims())
	expired := mint(t, func() jwt.MapClaims { c := claims(); c["exp"] = testNow.Add(-time.Hour).Unix(); return c }())
	for _, c := range []call{
		{body: toolCall("read_a"), token: good},
		{body: toolCall("delete_all"), token: good},
		{body: toolCall("read_a"), token: expired},
		{body: toolCall("read_a"), token: good + "x"},
		{path: "/mcp?access_token=" + good, body: toolCall("read_a")},
		{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, token: good,
			headers: map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "x"}},
	} {
		readBody(t, h.do(t, c))
	}
	var all bytes.Buffer
	for _, e := range h.logs.All() {
		all.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			all.WriteString(" " + k + "=")
			all.WriteString(fmt.Sprint(v))
		}
		all.WriteString("\n")
	}
	for _, tok := range []string{good, expired} {
		for _, part := range strings.Split(tok, ".") {
			if strings.Contains(all.String(), part) {
				t.Fatalf("audit log contains token material %q:\n%s", part, all.String())
			}
		}
	}
}

// TestAuditReasonOfLoneRequest (review s15-gateway F3): a single
// request refused after its message was decided allowed (a task id that
// does not verify for the caller: another principal's, or forged; an
// Mcp-Param mismatch; a failed pin fetch) is audited with the refusal's
// own reason, not "refused with its batch": there is no batch, and
// task-id probing across principals must show in the log.
func TestAuditReasonOfLoneRequest(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	body := `{"jsonrpc":"2.0","id":5,"method":"tasks/get","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"},"taskId":"someone-elses"}}`
	resp := h.do(t, call{body: body, token: mint(t, claims()), headers: map[string]string{
		"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tasks/get", "Mcp-Name": "someone-elses"}})
	if got := readBody(t, resp); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("tasks/get of a task id that does not verify: %d %s, want 404", resp.StatusCode, got)
	}
	entries := h.logs.All()
	if len(entries) != 1 {
		t.Fatalf("audit events = %d, want 1", len(entries))
	}
	if reason := entries[0].ContextMap()["reason"]; reason != "Task not found" {
		t.Errorf("audit reason = %q, want %q", reason, "Task not found")
	}
}

// TestAuditFieldsBounded: what the request names (the JSON-RPC id, the
// method, the tool, prompt or resource URI, the reason that may quote
// them, and the HTTP method) is cut in the audit event to 256 bytes (2 KiB for URIs
// and reasons), at a character boundary, marked "…(truncated)" and with
// truncated: true; before, each went into the event whole, up to
// max_body_size, so a caller could write megabytes to the audit log per
// request. Values that fit are written as they are, with no truncated
// field.
func TestAuditFieldsBounded(t *testing.T) {
	if maxAuditArguments != 4<<10 {
		t.Fatalf("maxAuditArguments = %d, README (audit_arguments) says arguments past 4 KiB are cut to 4 KiB", maxAuditArguments)
	}
	if maxAuditName != 256 || maxAuditText != 2<<10 {
		t.Fatalf("maxAuditName, maxAuditText = %d, %d; README (Audit) says names at 256 bytes, uri and reason at 2 KiB", maxAuditName, maxAuditText)
	}
	long := func(prefix string, n int) string { return prefix + strings.Repeat("a", n-len(prefix)) }
	// A two-byte character across byte 256: cut before it.
	straddling := long("p", 255) + "é" + strings.Repeat("b", 100)
	tests := []struct {
		name    string
		body    string
		http    string // the HTTP method, default POST
		methods bool   // a method rule passes x/*
		args    bool   // AuditArguments
		field   string
		want    string // the field's value; "" for the long value cut to max
		max     int
		cut     bool
	}{
		{"jsonrpc id", `{"jsonrpc":"2.0","id":"` + long("", 100_000) + `","method":"tools/call","params":{"name":"read_file","arguments":{}}}`, "", false, false, "jsonrpc_id", "", maxAuditName, true},
		{"method", `{"jsonrpc":"2.0","id":1,"method":"` + long("x/", 100_000) + `"}`, "", true, false, "method", "", maxAuditName, true},
		{"reason quoting the method", `{"jsonrpc":"2.0","id":1,"method":"` + long("x/", 100_000) + `"}`, "", false, false, "reason", "", maxAuditText, true},
		{"reason quoting the tool", toolCall(long("read_", 100_000)), "", false, false, "reason", "", maxAuditText, true},
		{"prompt", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"` + long("p", 100_000) + `"}}`, "", false, false, "prompt", "", maxAuditName, true},
		{"prompt at a character boundary", `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"` + straddling + `"}}`, "", false, false, "prompt", straddling[:255] + auditCut, maxAuditName, true},
		{"uri", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"` + long("file:///", 100_000) + `"}}`, "", false, false, "uri", "", maxAuditText, true},
		{"uri that fits", `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"` + long("file:///", maxAuditText) + `"}}`, "", false, false, "uri", long("file:///", maxAuditText), maxAuditText, false},
		{"tool that fits", toolCall(long("read_", maxToolName)), "", false, false, "tool", long("read_", maxToolName), maxAuditName, false},
		{"http method", "", strings.Repeat("X", 100_000), false, false, "http_method", "", maxAuditName, true},
		{"arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"` + long("", 100_000) + `"}}}`, "", false, true, "arguments", "", maxAuditArguments, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tt.methods {
				cfg.Methods = []Rule{{Pattern: "x/*"}}
			}
			cfg.AuditArguments = tt.args
			h := newHarness(t, cfg, nil)
			readBody(t, h.do(t, call{method: tt.http, body: tt.body, token: mint(t, claims())}))
			// A refusal's event follows its answer.
			for deadline := time.Now().Add(5 * time.Second); h.logs.Len() == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			entries := h.logs.All()
			if len(entries) != 1 {
				t.Fatalf("audit events = %d, want 1", len(entries))
			}
			ev := entries[0].ContextMap()
			got, _ := ev[tt.field].(string)
			want := tt.want
			if want == "" {
				want = got[:min(len(got), tt.max)] + auditCut
			}
			if got != want || len(got) > tt.max+len(auditCut) || !utf8.ValidString(got) {
				t.Errorf("%s = %q (%d bytes), want %q, at most %d bytes and a marker", tt.field, got, len(got), want, tt.max)
			}
			if tt.cut != strings.HasSuffix(got, auditCut) || (ev["truncated"] == true) != tt.cut {
				t.Errorf("%s cut %v, truncated %v; want %v", tt.field, strings.HasSuffix(got, auditCut), ev["truncated"], tt.cut)
			}
			if n := len(fmt.Sprint(ev)); n > 8*1024 {
				t.Errorf("audit event of %d bytes, want at most a few KiB", n)
			}
		})
	}
}

// TestPinWarningToolBounded: the operational log's warning for a tool
// definition it hides names the server's tool bounded, as the pin events
// do: a name past SEP-986's 128 characters is only hidden from callers,
// and an upstream listing megabyte names must not write them whole per
// listing.
func TestPinWarningToolBounded(t *testing.T) {
	cfg := testConfig(t)
	core, warnings := observer.New(zap.WarnLevel)
	cfg.Logger = zap.New(core)
	cfg.PinTools, cfg.Pins = PinFirstUse, newMemPins()
	name := "read_" + strings.Repeat("t", 300)
	// 1e9999999 is JSON no canonical form holds: the definition is hidden.
	h := newHarness(t, cfg, pinUpstream(func() string {
		return `{"name":"` + name + `","inputSchema":{"type":"object","maximum":1e9999999}}`
	}))
	readBody(t, h.do(t, call{body: toolCall("read_file"), token: mint(t, claims())}))
	events := warnings.FilterMessage("tool definition hidden: not canonicalizable").All()
	if len(events) == 0 {
		t.Fatal("no warning for the hidden definition")
	}
	for _, e := range events {
		if got, want := e.ContextMap()["tool"], name[:maxAuditName]+auditCut; got != want {
			t.Errorf("warning names a tool of %d bytes, want %d with the marker", len(fmt.Sprint(got)), len(want))
		}
	}
}

// TestPinAuditToolBounded: a tool name the server lists is bounded in the
// pin events as a caller's is in the request events (a list the gateway
// fetches, for a call of a tool no list showed, is learned whole; a
// name past SEP-986's 128 characters is only hidden from callers).
func TestPinAuditToolBounded(t *testing.T) {
	cfg := testConfig(t)
	cfg.PinTools, cfg.Pins = PinApproved, newMemPins()
	m := &countingMetrics{counts: map[string]int{}}
	cfg.Metrics = m
	name := "read_" + strings.Repeat("t", 300)
	h := newHarness(t, cfg, pinUpstream(func() string { return `{"name":"` + name + `","inputSchema":{"type":"object"}}` }))
	readBody(t, h.do(t, call{body: toolCall("read_file"), token: mint(t, claims())}))
	events := h.logs.FilterMessage("tool definition changed").All()
	if len(events) != 1 {
		t.Fatalf("pin events = %d, want 1", len(events))
	}
	// A tool not approved yet is a definition to review (README,
	// Monitoring: the metric's "changed").
	m.mu.Lock()
	changed := m.counts["tool pin changed"]
	m.mu.Unlock()
	if changed != 1 {
		t.Errorf("tool pin changed count of a tool not approved yet = %d, want 1", changed)
	}
	ev := events[0].ContextMap()
	if want := name[:maxAuditName] + auditCut; ev["tool"] != want || ev["truncated"] != true {
		t.Errorf("pin event tool of %d bytes, truncated %v; want %d bytes and a marker, truncated true", len(fmt.Sprint(ev["tool"])), ev["truncated"], len(want))
	}
}

// TestPinAuditChangesBounded: the changed members a pin event lists are
// JSON Pointers into the server's definition, whose keys the server
// chooses: each is bounded as the request events' fields are (2 KiB,
// marked, truncated: true), so that a server that changes a definition
// (what pinning is there to catch) cannot write megabytes into the audit
// log per new definition with a long property name or deep nesting.
func TestPinAuditChangesBounded(t *testing.T) {
	long := strings.Repeat("k", 100_000)
	deep := func(v string) string {
		return strings.Repeat(`{"`+strings.Repeat("a", 1000)+`":`, 50) + v + strings.Repeat("}", 50)
	}
	for name, tt := range map[string]struct{ pinned, changed string }{
		"long key":     {`{"type":"object","properties":{}}`, `{"type":"object","properties":{"` + long + `":{"type":"string"}}}`},
		"deep nesting": {`{"type":"object","x":` + deep("1") + `}`, `{"type":"object","x":` + deep("2") + `}`},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.PinTools, cfg.Pins = PinFirstUse, newMemPins()
			schema := tt.pinned
			h := newHarness(t, cfg, pinUpstream(func() string { return `{"name":"read_file","inputSchema":` + schema + `}` }))
			list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
			readBody(t, h.do(t, call{body: list, token: mint(t, claims())}))
			schema = tt.changed
			readBody(t, h.do(t, call{body: list, token: mint(t, claims())}))
			events := h.logs.FilterMessage("tool definition changed").All()
			if len(events) != 1 {
				t.Fatalf("pin events = %d, want 1", len(events))
			}
			ev := events[0].ContextMap()
			changes := toStrings(ev["changes"])
			if len(changes) == 0 {
				t.Fatalf("pin event lists no change: %v", ev)
			}
			for _, c := range changes {
				if len(c) > maxAuditText+len(auditCut) {
					t.Errorf("a change of %d bytes, want at most %d and a marker", len(c), maxAuditText)
				}
			}
			if ev["truncated"] != true {
				t.Errorf("truncated = %v, want true", ev["truncated"])
			}
		})
	}
}

// TestAuditAnswerRefused: an upstream answer the gateway refuses in its
// place (here one it must read for the resource rules, compressed
// anyway: 502) is a refusal the client gets, counted as one, and is
// audited as one: with the refusal's message as reason, and so also
// with AuditDenialsOnly. Before, its event had no reason, and
// AuditDenialsOnly left it out: the operator's denials log missed a call
// the upstream ran and whose answer the client never got.
func TestAuditAnswerRefused(t *testing.T) {
	for _, denialsOnly := range []bool{false, true} {
		cfg := testConfig(t)
		cfg.AuditDenialsOnly = denialsOnly
		h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "br")
			io.WriteString(w, "compressed")
		})
		resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, claims())})
		readBody(t, resp)
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("compressed answer = %d, want 502", resp.StatusCode)
		}
		entries := h.logs.All()
		if len(entries) != 1 {
			t.Fatalf("denials only %v: audit events = %d, want 1", denialsOnly, len(entries))
		}
		ev := entries[0].ContextMap()
		if reason, _ := ev["reason"].(string); ev["status"] != int64(http.StatusBadGateway) || ev["tool"] != "read_a" || !strings.Contains(reason, "could not be checked") {
			t.Errorf("denials only %v: audit event %v, want read_a, status 502 and the refusal's reason", denialsOnly, ev)
		}
	}
}

// TestAuditBatchRefusedAfterPolicy: a batch every message of which the
// policy allowed, refused by a later step (here a list cursor, which must
// come alone), names that step's reason on each message's event; before,
// each said only "refused with its batch", and no event of the batch
// told why it was refused.
func TestAuditBatchRefusedAfterPolicy(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	body := `[` + toolCall("read_a") + `,{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"someone-elses"}}]`
	resp := h.do(t, call{body: body, token: mint(t, claims())})
	if got := readBody(t, resp); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("batch with a cursor: %d %s, want 400", resp.StatusCode, got)
	}
	entries := h.logs.All()
	if len(entries) != 2 {
		t.Fatalf("audit events = %d, want one per message (2)", len(entries))
	}
	const want = "invalid params: a list request with a cursor must be sent alone"
	for i, e := range entries {
		m := e.ContextMap()
		if m["decision"] != "deny" || m["reason"] != want || m["status"] != int64(400) {
			t.Errorf("event %d = %v, want deny, 400, reason %q", i, m, want)
		}
	}
}

// TestAuditMessagesRefusedUndecided: messages read but refused before the
// policy decided them (a batch whose requests share an id, a method no
// revision defines) are audited one event per message, each naming its
// method and JSON-RPC id; before, the request had one event that named
// neither, so the audit log did not say what had been asked.
func TestAuditMessagesRefusedUndecided(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	token := mint(t, claims())
	body := `[` + toolCall("read_a") + `,{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}]`
	resp := h.do(t, call{body: body, token: token})
	if got := readBody(t, resp); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("batch with a shared id: %d %s, want 400", resp.StatusCode, got)
	}
	resp = h.do(t, call{body: `{"jsonrpc":"2.0","id":7,"method":"no/such","params":{}}`, token: token})
	readBody(t, resp)
	entries := h.logs.All()
	if len(entries) != 3 {
		t.Fatalf("audit events = %d, want one per message (3)", len(entries))
	}
	for i, want := range []struct{ method, id, reason string }{
		{"tools/call", "1", "invalid batch: requests 0 and 1 share an id"},
		{"prompts/get", "1", "invalid batch: requests 0 and 1 share an id"},
		{"no/such", "7", `Method not found: "no/such"`},
	} {
		m := entries[i].ContextMap()
		if m["decision"] != "deny" || m["method"] != want.method || m["jsonrpc_id"] != want.id || m["reason"] != want.reason {
			t.Errorf("event %d = %v, want deny of %s (id %s) for %q", i, m, want.method, want.id, want.reason)
		}
	}
}

// TestAuditCompletionNamesTemplate: the event of a completion/complete of
// a resource template names the template the request completes as its
// uri, as a resources/read's names its URI, whatever rules decided it:
// it named the rules' prefixes (joined by spaces when allowed, the
// refusing one when refused), so the log said a caller asked about
// file:///secret/ and never what it sent.
func TestAuditCompletionNamesTemplate(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	complete := func(uri string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"` + uri + `"},"argument":{"name":"name","value":"x"}}}`
	}
	for _, tt := range []struct {
		name, scope, uri string
		status           int64
		rule             any // nil: none
	}{
		{"allowed by two rules", "mcp files:read files:secret", "file:///{name}", 200, nil},
		{"allowed by one rule", "mcp files:read files:secret", "file:///pub/{name}", 200, nil},
		{"refused by the longer rule", "mcp files:read", "file:///{name}", 403, "file:///secret/"},
		{"refused by no rule", "mcp files:read files:secret", "notes://{name}", 403, nil},
		{"not a template", "mcp files:read", "file:///pub/a", 200, "file:///"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := h.logs.Len()
			c := claims()
			c["scope"] = tt.scope
			readBody(t, h.do(t, call{body: complete(tt.uri), token: mint(t, c), headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}}))
			// A forwarded request's event is written once its answer
			// has gone out.
			for deadline := time.Now().Add(5 * time.Second); h.logs.Len() == before && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			entries := h.logs.All()[before:]
			if len(entries) != 1 {
				t.Fatalf("audit events = %d, want 1", len(entries))
			}
			m := entries[0].ContextMap()
			if m["uri"] != tt.uri || m["status"] != tt.status || m["rule"] != tt.rule {
				t.Errorf("event = %v, want uri %q, status %d, rule %v", m, tt.uri, tt.status, tt.rule)
			}
		})
	}
}

// TestAuditTaskRequestNamesTool: a tasks/* request is decided by the rule
// of the tool whose call created its task (the task id names it), and
// its audit event names that tool, allowed or refused, as the call's
// did: an operator following a tool's use reads its tasks' follow-ups
// too, where an allowed one named no tool at all.
func TestAuditTaskRequestNamesTool(t *testing.T) {
	h := newHarness(t, testConfig(t), taskUpstream("786512e2-9e0d-44bd-8f29-789f320fe840", false))
	wrapped := createTask(t, h, mint(t, claims()), false)
	for deadline := time.Now().Add(5 * time.Second); h.logs.Len() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond) // the call's event, written once its answer has gone out
	}
	for _, tt := range []struct {
		method, scope string
		status        int64
	}{
		{"tasks/get", "", 200},
		{"tasks/cancel", "", 200},
		{"tasks/get", "mcp", 403}, // read_a needs files:read
	} {
		before := h.logs.Len()
		c := claims()
		if tt.scope != "" {
			c["scope"] = tt.scope
		}
		readBody(t, h.do(t, call{body: taskRequestBody("7", tt.method, wrapped), token: mint(t, c), headers: taskHeaders(tt.method, wrapped)}))
		for deadline := time.Now().Add(5 * time.Second); h.logs.Len() == before && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		entries := h.logs.All()[before:]
		if len(entries) != 1 {
			t.Fatalf("%s: audit events = %d, want 1", tt.method, len(entries))
		}
		if m := entries[0].ContextMap(); m["method"] != tt.method || m["tool"] != "read_a" || m["status"] != tt.status {
			t.Errorf("%s event = %v, want method %s, tool read_a, status %d", tt.method, m, tt.method, tt.status)
		}
	}
}

// TestAuditFieldsTerminalSafe: what the request names reaches the audit
// log with no character a terminal acts on or that hides or reorders what
// follows (C1 controls such as CSI, DEL, bidirectional and other format
// characters, line and paragraph separators): zap escapes only C0
// controls, so a caller's JSON-RPC id (a call forwarded as allowed), a
// method or, with audit_arguments, an argument holding U+009B "2K" erased
// the line of its own event on the terminal of an operator following the
// log (tail -f), or U+202E made it read backwards. Such a character is
// written escaped as in JSON text, the event carrying "escaped": true;
// the JSON values (jsonrpc_id, arguments) read the same.
func TestAuditFieldsTerminalSafe(t *testing.T) {
	const csi, rlo = "\u009b", "\u202e"
	tests := []struct {
		name    string
		body    string
		methods bool
		args    bool
		field   string
		want    string // the field as a JSON reader of the log gets it
		allowed bool
		claims  map[string]any // the token's, over claims()
	}{
		{"jsonrpc id of an allowed call", `{"jsonrpc":"2.0","id":"a` + csi + `1A` + csi + `2K","method":"tools/call","params":{"name":"read_file","arguments":{}}}`, false, false, "jsonrpc_id", `"a\u009b1A\u009b2K"`, true, nil},
		{"jsonrpc id, bidi", `{"jsonrpc":"2.0","id":"` + rlo + `wolla","method":"tools/call","params":{"name":"read_file","arguments":{}}}`, false, false, "jsonrpc_id", `"\u202ewolla"`, true, nil},
		{"method refused", `{"jsonrpc":"2.0","id":1,"method":"x/` + csi + `2K\\u2028\u2029"}`, false, false, "method", `x/\u009b2K\\u2028\u2029`, false, nil},
		{"method with backslashes", `{"jsonrpc":"2.0","id":1,"method":"x/` + rlo + `\\\\\u007f"}`, true, false, "method", `x/\u202e\\\\\u007f`, false, nil},
		{"arguments", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"` + csi + `2K\u00ad"}}}`, false, true, "arguments", `{"path":"\u009b2K\u00ad"}`, true, nil},
		// The token's names (a remote issuer's may hold anything) are
		// escaped whole: not cut after their first escape, where
		// "\u200bbob" and "\u200balice" read alike.
		{"principal", toolCall("read_file"), false, false, "principal", `\u200balice\u009b1A\u009b2K\u202e`, true, map[string]any{"sub": "\u200balice" + csi + "1A" + csi + "2K" + rlo}},
		{"client", toolCall("read_file"), false, false, "client", `\u200bapp\u202e`, true, map[string]any{"client_id": "\u200bapp" + rlo}},
		{"act", toolCall("read_file"), false, false, "act", `\u200bagent\u202e`, true, map[string]any{"act": map[string]any{"sub": "\u200bagent" + rlo}}},
	}
	// Escaped, a field stays within its bound.
	if got, cut, esc := auditText(strings.Repeat(csi, 100_000), maxAuditName, false); len(got) > maxAuditName+len(auditCut) || !cut || !esc || !strings.HasPrefix(got, `\u009b\u009b`) {
		t.Errorf("100,000 CSI cut to %d: %d bytes %q, cut %v, escaped %v", maxAuditName, len(got), got[:min(len(got), 20)], cut, esc)
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tt.methods {
				cfg.Methods = []Rule{{Pattern: "x/*"}}
			}
			cfg.AuditArguments = tt.args
			h := newHarness(t, cfg, nil)
			c := claims()
			for k, v := range tt.claims {
				c[k] = v
			}
			readBody(t, h.do(t, call{body: tt.body, token: mint(t, c)}))
			for deadline := time.Now().Add(5 * time.Second); h.logs.Len() == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			entries := h.logs.All()
			if len(entries) != 1 {
				t.Fatalf("audit events = %d, want 1", len(entries))
			}
			buf, err := enc.EncodeEntry(entries[0].Entry, entries[0].Context)
			if err != nil {
				t.Fatal(err)
			}
			line := buf.String()
			for _, r := range line {
				if r != '\n' && (!unicode.IsGraphic(r) || unicode.Is(unicode.Cf, r)) {
					t.Errorf("the event's line holds %U: %s", r, line)
				}
			}
			var ev map[string]any
			if err := json.Unmarshal(buf.Bytes(), &ev); err != nil {
				t.Fatal(err)
			}
			got := ev[tt.field]
			want := any(tt.want)
			if tt.field == "act" {
				want = []any{tt.want}
			}
			if ev["truncated"] != nil {
				t.Errorf("truncated = %v, want none: no field is past its bound", ev["truncated"])
			}
			if tt.args {
				// The same value as the request's.
				if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
					t.Fatal(err)
				}
			}
			if !cmp.Equal(got, want) || ev["escaped"] != true || (ev["decision"] == "allow") != tt.allowed {
				t.Errorf("%s = %q, escaped %v, decision %v; want %q, escaped, allowed %v", tt.field, got, ev["escaped"], ev["decision"], want, tt.allowed)
			}
		})
	}
}

// TestPinAuditTerminalSafe: the pin events name what the server lists,
// a tool's name and the pointers of its changed members, escaped as the
// request events' fields are (TestAuditFieldsTerminalSafe; the pointers
// by the same auditText): a server
// turned malicious, which pinning is there to catch, listed a tool named
// with U+009B "2K" and erased the event that reports it from the
// terminal of an operator following the audit log.
func TestPinAuditTerminalSafe(t *testing.T) {
	cfg := testConfig(t)
	cfg.PinTools, cfg.Pins = PinApproved, newMemPins()
	name := "read_\u009b1A\u009b2K\u202e"
	h := newHarness(t, cfg, pinUpstream(func() string {
		return `{"name":"` + name + `","inputSchema":{"type":"object"}}`
	}))
	readBody(t, h.do(t, call{body: toolCall("read_file"), token: mint(t, claims())}))
	events := h.logs.FilterMessage("tool definition changed").All()
	if len(events) != 1 {
		t.Fatalf("pin events = %d, want 1", len(events))
	}
	buf, err := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()).EncodeEntry(events[0].Entry, events[0].Context)
	if err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	for _, r := range line {
		if r != '\n' && (!unicode.IsGraphic(r) || unicode.Is(unicode.Cf, r)) {
			t.Errorf("the pin event's line holds %U: %s", r, line)
		}
	}
	ev := events[0].ContextMap()
	if ev["tool"] != `read_\u009b1A\u009b2K\u202e` || ev["escaped"] != true {
		t.Errorf("pin event = %v, want the tool escaped, escaped true", ev)
	}
}

// TestOperationalLogTerminalSafe: the operational log's warnings quote
// what the MCP server or the token says (a tools/list error, an
// answer's type, the principal and client of a stream ended), which may
// hold what a terminal acts on, as a pin event's tool name may (U+009B
// "1A" U+009B "2K" erased the line on an operator's terminal following
// Caddy's log): each is escaped as in the audit events.
func TestOperationalLogTerminalSafe(t *testing.T) {
	const hostile = "\u009b1A\u009b2K\u202e"
	lineSafe := func(t *testing.T, e observer.LoggedEntry, key, want string) {
		t.Helper()
		buf, err := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()).EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatal(err)
		}
		line := buf.String()
		for _, r := range line {
			if r != '\n' && (!unicode.IsGraphic(r) || unicode.Is(unicode.Cf, r)) {
				t.Errorf("%q's line holds %U: %s", e.Message, r, line)
			}
		}
		if got := fmt.Sprint(e.ContextMap()[key]); !strings.Contains(got, want) {
			t.Errorf("%s = %q, want it to hold %q", key, got, want)
		}
	}
	const escaped = `\u009b1A\u009b2K\u202e`
	t.Run("tools/list error", func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		cfg := pinnedConfig(t)
		cfg.Logger = zap.New(core)
		h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":"x","error":{"code":-32000,"message":"`+hostile+`"}}`)
		})
		resp := h.do(t, call{body: toolCall("read_new"), token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-06-18"}})
		resp.Body.Close()
		entries := logs.FilterMessage("tool definitions not learned").All()
		if len(entries) == 0 {
			t.Fatalf("nothing logged as \"tool definitions not learned\" (answered %d)", resp.StatusCode)
		}
		for _, e := range entries {
			lineSafe(t, e, "error", escaped)
		}
	})
	t.Run("answer type", func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		cfg := pinnedConfig(t)
		cfg.Logger = zap.New(core)
		h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; x="+hostile)
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
		})
		resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-06-18"}})
		resp.Body.Close()
		entries := logs.FilterMessage("response not filterable").All()
		if len(entries) != 1 {
			t.Fatalf("%d entries \"response not filterable\" (answered %d), want 1", len(entries), resp.StatusCode)
		}
		lineSafe(t, entries[0], "content_type", escaped)
	})
	t.Run("stream ended", func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		var clock atomic.Int64 // seconds after testNow
		cfg := testConfig(t)
		cfg.Logger = zap.New(core)
		cfg.Now = func() time.Time { return testNow.Add(time.Duration(clock.Load()) * time.Second) }
		cfg.StreamCheckInterval = 10 * time.Millisecond
		up := newStreamUpstream(func(r *http.Request) string { return r.Method })
		h := newHarness(t, cfg, up.serve)
		c := claims()
		c["sub"], c["client_id"], c["exp"] = "alice"+hostile, "app"+hostile, testNow.Add(time.Minute).Unix()
		tok := mint(t, c)
		resp := h.do(t, call{method: http.MethodGet, token: tok, headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sessionFor(t, h.g, tok)}})
		defer resp.Body.Close()
		if line, _ := bufio.NewReader(resp.Body).ReadString('\n'); !strings.HasPrefix(line, ": open") {
			t.Fatalf("first line %q, want the stream open", line)
		}
		clock.Store(60)
		select {
		case <-up.done("GET"):
		case <-time.After(5 * time.Second):
			t.Fatal("stream still open 5 s after its token expired")
		}
		var entries []observer.LoggedEntry
		for deadline := time.Now().Add(5 * time.Second); len(entries) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			entries = logs.FilterMessageSnippet("request to the upstream ended").All()
		}
		if len(entries) != 1 {
			t.Fatalf("%d entries \"request to the upstream ended\", want 1", len(entries))
		}
		lineSafe(t, entries[0], "principal", "alice"+escaped)
		lineSafe(t, entries[0], "client", "app"+escaped)
	})
}
