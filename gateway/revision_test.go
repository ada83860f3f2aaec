package gateway

import (
	"net/http"
	"testing"
)

// TestRevisionErrors: what the official conformance tool checks of a
// 2026-07-28 server's refusals (status, code, the request id) holds for
// the gateway's own, and methods that 2026-07-28 does not define are
// answered "method not found" (404, -32601).
func TestRevisionErrors(t *testing.T) {
	const meta26 = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
	v2026 := func(method, name string) map[string]string {
		h := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
		if name != "" {
			h["Mcp-Name"] = name
		}
		return h
	}
	request := func(id, method, params string) string {
		return `{"jsonrpc":"2.0","id":` + id + `,"method":"` + method + `","params":{` + params + `}}`
	}
	token := mint(t, claims())
	tests := []struct {
		name   string
		c      call
		status int    // 0: forwarded
		code   int    // JSON-RPC error code of a refusal
		id     string // id of a refusal, "" for none
	}{
		// A required _meta field missing is invalid params, not a header
		// mismatch (basic/index: per-request protocol fields).
		{name: "no _meta", c: call{body: request("101", "server/discover", ""), headers: v2026("server/discover", "")},
			status: 400, code: codeInvalidParams, id: "101"},
		{name: "_meta without version", c: call{body: request(`"r2"`, "server/discover", `"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}`), headers: v2026("server/discover", "")},
			status: 400, code: codeInvalidParams, id: `"r2"`},
		{name: "header and _meta disagree", c: call{body: request("302", "server/discover", `"_meta":{"io.modelcontextprotocol/protocolVersion":"v999"}`), headers: v2026("server/discover", "")},
			status: 400, code: codeHeaderMismatch, id: "302"},
		// The unsupported-version answer carries the id too.
		{name: "unsupported version", c: call{body: request("301", "server/discover", `"_meta":{"io.modelcontextprotocol/protocolVersion":"v999.0.0"}`), headers: map[string]string{"MCP-Protocol-Version": "v999.0.0", "Mcp-Method": "server/discover"}},
			status: 400, code: codeUnsupportedProtocol, id: "301"},
		{name: "unsupported version, body no request", c: call{body: `{"jsonrpc":"2.0","method":"x"}`, headers: map[string]string{"MCP-Protocol-Version": "v999.0.0"}},
			status: 400, code: codeUnsupportedProtocol},
		{name: "unsupported version, unauthenticated", c: call{body: request("1", "server/discover", ""), headers: map[string]string{"MCP-Protocol-Version": "v999.0.0", "Authorization": ""}},
			status: 401, code: codeRefused},
		// Invalid params found by the parser carry the id.
		{name: "tools/call without name", c: call{body: request("7", "tools/call", meta26), headers: v2026("tools/call", "")},
			status: 400, code: codeInvalidParams, id: "7"},
		{name: "2025 subscribe without uri", c: call{body: request("8", "resources/subscribe", ""), headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}},
			status: 400, code: codeInvalidParams, id: "8"},
		// Methods 2026-07-28 does not define are answered as a conforming
		// server does, never forwarded: an upstream still serving them would
		// take unbound task ids (task.go) or subscriptions nobody checked.
		{name: "subscribe without uri", c: call{body: request("500", "resources/subscribe", meta26), headers: v2026("resources/subscribe", "")},
			status: 404, code: codeMethodNotFound, id: "500"},
		{name: "unsubscribe without uri", c: call{body: request("501", "resources/unsubscribe", meta26), headers: v2026("resources/unsubscribe", "")},
			status: 404, code: codeMethodNotFound, id: "501"},
		{name: "tasks/result", c: call{body: request("10", "tasks/result", `"taskId":"t1",`+meta26), headers: v2026("tasks/result", "")},
			status: 404, code: codeMethodNotFound, id: "10"},
		{name: "tasks/result without taskId", c: call{body: request("11", "tasks/result", meta26), headers: v2026("tasks/result", "")},
			status: 404, code: codeMethodNotFound, id: "11"},
		{name: "tasks/list", c: call{body: request("12", "tasks/list", meta26), headers: v2026("tasks/list", "")},
			status: 404, code: codeMethodNotFound, id: "12"},
		{name: "subscribe to a uri", c: call{body: request("502", "resources/subscribe", `"uri":"file:///a",`+meta26), headers: v2026("resources/subscribe", "")},
			status: 404, code: codeMethodNotFound, id: "502"},
		{name: "ping", c: call{body: request("503", "ping", meta26), headers: v2026("ping", "")},
			status: 404, code: codeMethodNotFound, id: "503"},
		{name: "initialize", c: call{body: request("504", "initialize", meta26), headers: v2026("initialize", "")},
			status: 404, code: codeMethodNotFound, id: "504"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), nil)
			if _, ok := tt.c.headers["Authorization"]; !ok {
				tt.c.token = token
			}
			checkAnswer(t, h, h.do(t, tt.c), tt.status, tt.code, tt.id)
		})
	}
}

// checkAnswer checks that an answer is the upstream's (status 0), or a
// refusal with that status, JSON-RPC code and id that never reached the
// upstream.
func checkAnswer(t *testing.T, h *harness, resp *http.Response, status, code int, id string) {
	t.Helper()
	body := readBody(t, resp)
	forwarded := len(h.up.requests()) > 0
	if status == 0 {
		if !forwarded || resp.StatusCode != http.StatusOK {
			t.Errorf("answer = %d %s (forwarded %v), want the upstream's", resp.StatusCode, body, forwarded)
		}
		return
	}
	if forwarded {
		t.Errorf("refused request reached the upstream")
	}
	if got, gotID, _ := rpcErr(t, body); resp.StatusCode != status || got != code || string(gotID) != id {
		t.Errorf("answer = %d %s, want %d with code %d and id %q", resp.StatusCode, body, status, code, id)
	}
}

func TestParseRevision(t *testing.T) {
	tests := []struct {
		header string
		want   revision
		ok     bool
	}{
		{"", rev20250326, true},
		{"2024-11-05", rev20241105, true},
		{"2025-03-26", rev20250326, true},
		{"2025-06-18", rev20250618, true},
		{"2025-11-25", rev20251125, true},
		{"2026-07-28", rev20260728, true},
		{"2026-07-28 ", 0, false},
		{"2025-06-18, 2026-07-28", 0, false},
		{"unknown", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRevision(tt.header)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRevision(%q) = %v, %v, want %v, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
	for _, r := range revisions {
		if got, ok := parseRevision(r.String()); !ok || got != r {
			t.Errorf("parseRevision(%v.String()) = %v, %v", r, got, ok)
		}
	}
}

// TestListenResourceSubscriptions: in 2026-07-28, subscriptions/listen
// params.notifications.resourceSubscriptions replaces resources/subscribe,
// so each URI is checked and decided by the resource rules as a
// resources/subscribe of it is in 2025 revisions; what is refused never
// reaches the upstream.
func TestListenResourceSubscriptions(t *testing.T) {
	listen := func(key, notifications string) string {
		return `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"` + key + `":` + notifications + `,` + meta2026 + `}}`
	}
	headers := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}
	withScope := func(s string) string {
		c := claims()
		c["scope"] = s
		return mint(t, c)
	}
	tests := []struct {
		name, scope, notifications string
		status                     int // 0: forwarded
		code                       int
	}{
		{"no resources", "mcp", `{"toolsListChanged":true}`, 0, 0},
		{"empty list", "mcp", `{"resourceSubscriptions":[]}`, 0, 0},
		{"allowed", "mcp files:read", `{"resourceSubscriptions":["file:///etc/motd"]}`, 0, 0},
		{"allowed, longest prefix", "mcp files:secret", `{"resourceSubscriptions":["file:///secret/key"]}`, 0, 0},
		{"scope missing", "mcp", `{"resourceSubscriptions":["file:///etc/motd"]}`, 403, codeRefused},
		{"one of two needs more scope", "mcp files:read", `{"resourceSubscriptions":["file:///etc/motd","file:///secret/key"]}`, 403, codeRefused},
		{"no rule", "mcp files:read files:secret", `{"resourceSubscriptions":["https://x/"]}`, 403, codeRefused},
		{"dot segments", "mcp files:read", `{"resourceSubscriptions":["file:///etc/../secret/key"]}`, 400, codeInvalidParams},
		{"case-insensitive member name", "mcp files:read", `{"ResourceSubscriptions":["file:///secret/key"]}`, 403, codeRefused},
		// The Python SDK's models also read their snake_case field names.
		{"snake_case member name", "mcp files:read", `{"resource_subscriptions":["file:///secret/key"]}`, 403, codeRefused},
		{"both spellings", "mcp files:read files:secret", `{"resourceSubscriptions":["file:///etc/motd"],"resource_subscriptions":["file:///secret/key"]}`, 400, codeInvalidParams},
		// Go's json/v2 ignoring case ignores '-' as well as '_'.
		{"dashed member name", "mcp files:read", `{"Resource-Subscriptions":["file:///secret/key"]}`, 403, codeRefused},
		{"dashed notifications", "mcp files:read", `{"resourceSubscriptions":["file:///secret/key"]}`, 403, codeRefused},
		{"notifications twice", "mcp files:read", `{"resourceSubscriptions":["file:///etc/motd"]},"noti_fications":{"resourceSubscriptions":["file:///secret/key"]}`, 400, codeInvalidParams},
		{"not a list", "mcp files:read files:secret", `{"resourceSubscriptions":"file:///etc/motd"}`, 400, codeInvalidParams},
		{"not strings", "mcp files:read files:secret", `{"resourceSubscriptions":[{"uri":"file:///etc/motd"}]}`, 400, codeInvalidParams},
		{"null entry", "mcp files:read files:secret", `{"resourceSubscriptions":[null]}`, 400, codeInvalidParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), nil)
			key := "notifications"
			if tt.name == "dashed notifications" {
				key = "Noti-fications"
			}
			resp := h.do(t, call{body: listen(key, tt.notifications), token: withScope(tt.scope), headers: headers})
			checkAnswer(t, h, resp, tt.status, tt.code, "7")
		})
	}
}
