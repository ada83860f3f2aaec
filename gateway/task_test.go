package gateway

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf16"

	"github.com/golang-jwt/jwt/v5"
)

const meta2026 = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`

// meta2026Tasks also declares the Tasks extension in the request's client
// capabilities, without which a server returns no task.
const meta2026Tasks = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":{"io.modelcontextprotocol/tasks":{}}}}`

// taskUpstream answers like a Tasks extension server: tools/call creates
// task upTask (as JSON, or as SSE after a notifications/tasks event when
// sse is set), tasks/get reports the task it was asked for, tasks/update
// and tasks/cancel acknowledge.
func taskUpstream(upTask string, sse bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				TaskID string `json:"taskId"`
			} `json:"params"`
		}
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &req)
		var result string
		switch req.Method {
		case "tools/call":
			result = `{"resultType":"task","taskId":` + quote(upTask) + `,"status":"working","createdAt":"2026-03-01T12:00:00Z","lastUpdatedAt":"2026-03-01T12:00:00Z","ttlMs":60000}`
		case "tasks/get":
			result = `{"resultType":"complete","taskId":` + quote(req.Params.TaskID) + `,"status":"completed","result":{"content":[{"type":"text","text":"taskId ` + req.Params.TaskID + `"}]}}`
		default:
			result = `{"resultType":"complete"}`
		}
		answer := `{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":` + result + `}`
		if sse {
			w.Header().Set("Content-Type", "text/event-stream")
			// The answer names the task; a status of it follows (one
			// before the answer names nothing the client asked for, and
			// is left unwrapped: TestTaskIDsOfOthersOnToolCallStream).
			io.WriteString(w, "data: "+answer+"\n\n")
			io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tasks\",\"params\":{\"taskId\":"+quote(upTask)+",\"status\":\"working\"}}\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}
}

func taskHeaders(method, name string) map[string]string {
	h := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
	switch name {
	case "":
	case "-":
		h["Mcp-Name"] = "=?base64??=" // the empty string
	default:
		h["Mcp-Name"] = name
	}
	return h
}

func taskRequestBody(id, method, taskID string) string {
	extra := ""
	if method == "tasks/update" {
		extra = `"inputResponses":{},`
	}
	return `{"jsonrpc":"2.0","id":` + id + `,"method":"` + method + `","params":{"taskId":` + quote(taskID) + `,` + extra + meta2026 + `}}`
}

// createTask makes alice's tools/call and returns the task id she sees.
func createTask(t *testing.T, h *harness, token string, sse bool) string {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026Tasks + `}}`
	resp := h.do(t, call{body: body, token: token, headers: taskHeaders("tools/call", "read_a")})
	got := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/call = %d %s, want 200", resp.StatusCode, got)
	}
	ids := taskIDs(t, got)
	if want := map[bool]int{false: 1, true: 2}[sse]; len(ids) != want || ids[0] != ids[len(ids)-1] {
		t.Fatalf("task ids = %q, want %d, equal", ids, want)
	}
	return ids[0]
}

// taskIDs returns the task id of a JSON answer, or of every event of an
// SSE answer.
func taskIDs(t *testing.T, answer string) []string {
	t.Helper()
	if !strings.HasPrefix(answer, "data: ") {
		return []string{resultTaskID(t, answer)}
	}
	var ids []string
	for _, line := range strings.Split(answer, "\n") {
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			ids = append(ids, resultTaskID(t, data))
		}
	}
	return ids
}

// resultTaskID returns result.taskId or params.taskId of a message.
func resultTaskID(t *testing.T, msg string) string {
	t.Helper()
	var m struct {
		Result, Params *struct {
			TaskID string `json:"taskId"`
		}
	}
	if err := json.Unmarshal([]byte(msg), &m); err != nil {
		t.Fatalf("message %q: %v", msg, err)
	}
	switch {
	case m.Result != nil:
		return m.Result.TaskID
	case m.Params != nil:
		return m.Params.TaskID
	}
	t.Fatalf("message %q has no task id", msg)
	return ""
}

func TestTaskBinding(t *testing.T) {
	alice := &principal{issuer: testIssuer, subject: "alice", clientID: "client-1"}
	for _, tt := range []struct {
		name, upTask string
		sse          bool
	}{
		{"JSON", "786512e2-9e0d-44bd-8f29-789f320fe840", false},
		{"SSE", "786512e2-9e0d-44bd-8f29-789f320fe840", true},
		{"non-ASCII upstream id", "tâche 1", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), taskUpstream(tt.upTask, tt.sse))
			tokenA := mint(t, claims())
			wrapped := createTask(t, h, tokenA, tt.sse)
			if want, _ := h.g.wrapTask(alice, "read_a", tt.upTask); wrapped != want {
				t.Fatalf("client task id = %q, want %q (the upstream's, bound to alice)", wrapped, want)
			}

			for _, method := range []string{"tasks/get", "tasks/update", "tasks/cancel"} {
				before := len(h.up.requests())
				body := taskRequestBody("7", method, wrapped)
				resp := h.do(t, call{body: body, token: tokenA, headers: taskHeaders(method, wrapped)})
				got := readBody(t, resp)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("alice's %s = %d %s, want 200", method, resp.StatusCode, got)
				}
				reqs := h.up.requests()
				if len(reqs) != before+1 {
					t.Fatalf("upstream saw %d requests, want %d", len(reqs), before+1)
				}
				r := reqs[len(reqs)-1]
				if want := taskRequestBody("7", method, tt.upTask); string(r.Body) != want {
					t.Errorf("%s upstream body = %s, want %s", method, r.Body, want)
				}
				if got, want := r.Header.Values("Mcp-Name"), []string{headerSafe(tt.upTask)}; len(got) != 1 || got[0] != want[0] {
					t.Errorf("%s upstream Mcp-Name = %q, want %q", method, got, want)
				}
				if method == "tasks/get" {
					for _, id := range taskIDs(t, got) {
						if id != wrapped {
							t.Errorf("tasks/get answer task id = %q, want %q", id, wrapped)
						}
					}
				}
			}
		})
	}
}

func TestTaskBindingRefusals(t *testing.T) {
	const upTask = "task-01" // wrapped, 46 bytes: padded base64 differs
	h := newHarness(t, testConfig(t), taskUpstream(upTask, false))
	tokenA := mint(t, claims())
	wrapped := createTask(t, h, tokenA, false)
	raw, _ := base64.RawURLEncoding.DecodeString(wrapped)
	if len(raw)%3 == 0 {
		t.Fatalf("the wrapped id is %d bytes: its padded base64 would be the same string", len(raw))
	}
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)-1] ^= 1
	alice := &principal{issuer: testIssuer, subject: "alice", clientID: "client-1"}
	session, _ := h.g.wrapSession(alice, upTask)

	other := func(mut func(jwt.MapClaims)) string {
		c := claims()
		mut(c)
		return mint(t, c)
	}
	tokenB := other(func(c jwt.MapClaims) { c["sub"] = "bob" })
	tokenOtherClient := other(func(c jwt.MapClaims) { c["client_id"] = "client-2" })
	tokenAgent := other(func(c jwt.MapClaims) { c["act"] = map[string]any{"sub": "agent-a"} })
	tokenClientOwn := other(func(c jwt.MapClaims) { c["principal_type"] = "client" })

	for _, tt := range []struct {
		name, token, taskID string
	}{
		{"another user", tokenB, wrapped},
		{"a client's own token with alice's names", tokenClientOwn, wrapped},
		{"another client of alice", tokenOtherClient, wrapped},
		{"an agent acting for alice", tokenAgent, wrapped},
		{"tampered MAC", tokenA, base64.RawURLEncoding.EncodeToString(flipped)},
		{"truncated", tokenA, wrapped[:len(wrapped)-4]},
		{"the upstream id", tokenA, upTask},
		{"padded base64", tokenA, base64.URLEncoding.EncodeToString(raw)},
		{"alice's session id for the same string", tokenA, session},
		// Before a task id named its tool (mcp-task-v2).
		{"alice's id of the first form", tokenA, h.g.wrapBound("mcp-task-v1", alice, upTask)},
		{"empty", tokenA, ""},
	} {
		for _, method := range []string{"tasks/get", "tasks/update", "tasks/cancel"} {
			t.Run(tt.name+"/"+method, func(t *testing.T) {
				before := len(h.up.requests())
				name := tt.taskID
				if name == "" {
					name = "-"
				}
				resp := h.do(t, call{body: taskRequestBody(`"q1"`, method, tt.taskID), token: tt.token, headers: taskHeaders(method, name)})
				got := readBody(t, resp)
				code, id, _ := rpcErr(t, got)
				if resp.StatusCode != http.StatusNotFound || code != codeInvalidParams || string(id) != `"q1"` {
					t.Errorf("answer = %d %s, want 404 with code %d and id \"q1\"", resp.StatusCode, got, codeInvalidParams)
				}
				if n := len(h.up.requests()); n != before {
					t.Errorf("upstream saw %d more requests, want none", n-before)
				}
			})
		}
	}

	t.Run("Mcp-Name disagrees", func(t *testing.T) {
		before := len(h.up.requests())
		for _, name := range []string{upTask, wrapped + "x", "read_a"} {
			resp := h.do(t, call{body: taskRequestBody("3", "tasks/get", wrapped), token: tokenA, headers: taskHeaders("tasks/get", name)})
			got := readBody(t, resp)
			if code, _, _ := rpcErr(t, got); resp.StatusCode != http.StatusBadRequest || code != codeHeaderMismatch {
				t.Errorf("Mcp-Name %q: answer = %d %s, want 400 with code %d", name, resp.StatusCode, got, codeHeaderMismatch)
			}
		}
		if n := len(h.up.requests()); n != before {
			t.Errorf("upstream saw %d more requests, want none", n-before)
		}
	})

	t.Run("subscriptions/listen with task ids", func(t *testing.T) {
		before := len(h.up.requests())
		for _, notif := range []string{`{"taskIds":[` + quote(wrapped) + `]}`, `{"TaskIDs":[]}`, `{"task_ids":[]}`, `[]`} {
			body := `{"jsonrpc":"2.0","id":4,"method":"subscriptions/listen","params":{"notifications":` + notif + `,` + meta2026 + `}}`
			resp := h.do(t, call{body: body, token: tokenA, headers: taskHeaders("subscriptions/listen", "")})
			got := readBody(t, resp)
			if code, _, _ := rpcErr(t, got); resp.StatusCode != http.StatusBadRequest || code != codeInvalidParams {
				t.Errorf("notifications %s: answer = %d %s, want 400 with code %d", notif, resp.StatusCode, got, codeInvalidParams)
			}
		}
		if n := len(h.up.requests()); n != before {
			t.Errorf("upstream saw %d more requests, want none", n-before)
		}
	})
}

// TestTaskAnswersUnreadable: an answer whose task ids cannot be wrapped
// with certainty reaches the client unchanged (an unwrapped id names no
// task through the gateway), rather than breaking tools with unusual
// output; a notifications/tasks naming no task is dropped, as no one's
// the gateway can tell (TestTaskStatusOfOthersDropped).
func TestTaskAnswersUnreadable(t *testing.T) {
	for _, tt := range []struct {
		name, contentType, body string
	}{
		{"task id not a string", "application/json", `{"jsonrpc":"2.0","id":1,"result":{"resultType":"task","taskId":7}}`},
		{"result not an object", "application/json", `{"jsonrpc":"2.0","id":1,"result":["taskId"]}`},
		{"empty task id", "application/json", `{"jsonrpc":"2.0","id":1,"result":{"taskId":""}}`},
		{"not JSON", "text/plain", `taskId: up`},
		{"case-variant keys in tool output", "application/json", `{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"id":1,"ID":2}}}`},
		{"larger than held for task ids", "application/json", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"` + strings.Repeat("x", maxTaskBody) + `"}]}}`},
		{"event that is not JSON", "text/event-stream", "data: hello\n\n"},
		{"acknowledgement with task ids", "text/event-stream", "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/subscriptions/acknowledged\",\"params\":{\"notifications\":{\"taskIds\":[\"up\"]}}}\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				io.WriteString(w, tt.body)
			})
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a",` + meta2026Tasks + `}}`
			resp := h.do(t, call{body: body, token: mint(t, claims()), headers: taskHeaders("tools/call", "read_a")})
			got := readBody(t, resp)
			if resp.StatusCode != http.StatusOK || got != tt.body {
				t.Errorf("answer = %d %q, want 200 %q unchanged", resp.StatusCode, got, tt.body)
			}
		})
	}
}

// TestTasks2025Refused: before 2026-07-28 a task is named by its id
// alone and the upstream need not keep tasks per session, so task requests
// and task-augmented requests are refused (with or without a session) and
// never forwarded; other requests pass.
func TestTasks2025Refused(t *testing.T) {
	up := taskUpstream("task-25", false)
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Mcp-Session-Id", "s-25")
		up(w, r)
	})
	token := mint(t, claims())
	hdr := map[string]string{"MCP-Protocol-Version": "2025-11-25"}
	resp := h.do(t, call{body: toolCall("read_a"), token: token, headers: hdr})
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("2025-11-25 tools/call = %d, want 200", resp.StatusCode)
	}
	session := resp.Header.Get("Mcp-Session-Id")
	withSession := map[string]string{"MCP-Protocol-Version": "2025-11-25", "Mcp-Session-Id": session}
	for _, tt := range []struct {
		body string
		code int
	}{
		{`{"jsonrpc":"2.0","id":2,"method":"tasks/get","params":{"taskId":"task-25"}}`, codeMethodNotFound},
		{`{"jsonrpc":"2.0","id":2,"method":"tasks/result","params":{"taskId":"task-25"}}`, codeMethodNotFound},
		{`{"jsonrpc":"2.0","id":2,"method":"tasks/cancel","params":{"taskId":"task-25"}}`, codeMethodNotFound},
		{`{"jsonrpc":"2.0","id":2,"method":"tasks/list"}`, codeMethodNotFound},
		{`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_a","task":{"ttl":60000}}}`, codeInvalidParams},
		{`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_a","\u0074ask":{}}}`, codeInvalidParams},
		{`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"task":{},"name":"read_a"}}`, codeInvalidParams},
		// Other spellings an upstream could read as task.
		{`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_a","Task":{"ttl":60000}}}`, codeInvalidParams},
		{`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_a","TASK":{}}}`, codeInvalidParams},
		{`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_a","taſk":{}}}`, codeInvalidParams},
		{"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{\"name\":\"read_a\",\"tas\u212a\":{}}}", codeInvalidParams},
	} {
		for _, headers := range []map[string]string{hdr, withSession} {
			before := len(h.up.requests())
			resp := h.do(t, call{body: tt.body, token: token, headers: headers})
			got := readBody(t, resp)
			var e struct {
				Error struct{ Code int } `json:"error"`
			}
			json.Unmarshal([]byte(got), &e)
			if resp.StatusCode != http.StatusBadRequest || e.Error.Code != tt.code || len(h.up.requests()) != before {
				t.Errorf("2025-11-25 %s (session %v) = %d %s, want 400 with %d and nothing forwarded", tt.body, headers["Mcp-Session-Id"] != "", resp.StatusCode, got, tt.code)
			}
		}
	}
	// Tool calls whose arguments merely mention a task pass.
	for _, args := range []string{`{"task":"write the report"}`, `{"Task":"écrire le rapport"}`} {
		resp = h.do(t, call{body: `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_a","arguments":` + args + `}}`, token: token, headers: withSession})
		if got := readBody(t, resp); resp.StatusCode != http.StatusOK {
			t.Errorf("tools/call with arguments %s = %d %s, want 200", args, resp.StatusCode, got)
		}
	}
}

// TestTaskIDsOnlyForTheCaller: ids the caller is not entitled to are never
// wrapped, so an upstream leaking another caller's task gives no handle.
func TestTaskIDsOnlyForTheCaller(t *testing.T) {
	const mine, other = "task-mine", "task-other"
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case strings.Contains(string(body), `"subscriptions/listen"`):
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tasks\",\"params\":{\"taskId\":"+quote(other)+",\"status\":\"completed\"}}\n\n")
		default: // tasks/get answered for another task than asked
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":2,"result":{"resultType":"complete","taskId":`+quote(other)+`,"status":"completed"}}`)
		}
	})
	token := mint(t, claims())
	body := `{"jsonrpc":"2.0","id":3,"method":"subscriptions/listen","params":{"notifications":{},` + meta2026 + `}}`
	resp := h.do(t, call{body: body, token: token, headers: taskHeaders("subscriptions/listen", "")})
	if got := readBody(t, resp); strings.Contains(got, "notifications/tasks") {
		// Dropped, not only left unwrapped: its status is another
		// caller's (TestTaskStatusOfOthersDropped).
		t.Errorf("subscriptions/listen stream = %q, want the foreign task's status %q dropped", got, other)
	}
	wrapped := wrapFor(t, h, token, mine)
	resp = h.do(t, call{body: taskRequestBody("2", "tasks/get", wrapped), token: token, headers: taskHeaders("tasks/get", wrapped)})
	if got := readBody(t, resp); resultTaskID(t, got) != other {
		t.Errorf("tasks/get answer naming another task = %s, want its id %q left unwrapped", got, other)
	}
}

// wrapFor returns the id the gateway hands token's principal for an
// upstream task id.
func wrapFor(t *testing.T, h *harness, token, upstream string) string {
	t.Helper()
	p, aerr := h.g.verify(context.Background(), token)
	if aerr != nil {
		t.Fatal(aerr)
	}
	w, err := h.g.wrapTask(p, "read_a", upstream)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestTaskUndeclared: a server returns a task only to a request that
// declares the Tasks extension in its client capabilities, so only those
// answers are read for task ids. One that does not is passed through
// unread; should the upstream answer it with a task all the same, the
// client gets the upstream's bare id, which the gateway then refuses as a
// follow-up, for its holder as for anyone else (fail closed).
func TestTaskUndeclared(t *testing.T) {
	const upTask = "task-undeclared"
	alice := &principal{issuer: testIssuer, subject: "alice", clientID: "client-1"}
	wrapped := func(h *harness) string { w, _ := h.g.wrapTask(alice, "read_a", upTask); return w }
	declared := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"extensions":%s}}`
	for _, tt := range []struct {
		name, meta string
		wrap       bool
	}{
		{"no client capabilities", meta2026, false},
		{"other extensions", strings.Replace(declared, "%s", `{"io.modelcontextprotocol/ui":{}}`, 1), false},
		{"tasks only in the arguments", meta2026 + `,"arguments":{"q":"list my tasks","io.modelcontextprotocol/tasks":{}}`, false},
		{"escaped arguments", meta2026 + `,"arguments":{"q":"t\u00e2che"}`, false},
		{"declared", meta2026Tasks, true},
		{"declared, escaped solidus", strings.Replace(declared, "%s", `{"io.modelcontextprotocol\/tasks":{}}`, 1), true},
		{"declared, escaped letters", strings.Replace(declared, "%s", `{"io.modelcontextprotocol/ta\u0073ks":{}}`, 1), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), taskUpstream(upTask, false))
			token := mint(t, claims())
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a",` + tt.meta + `}}`
			resp := h.do(t, call{body: body, token: token, headers: taskHeaders("tools/call", "read_a")})
			got := readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("tools/call = %d %s, want 200", resp.StatusCode, got)
			}
			want := upTask
			if tt.wrap {
				want = wrapped(h)
			}
			id := resultTaskID(t, got)
			if id != want {
				t.Fatalf("client task id = %q, want %q", id, want)
			}
			before := len(h.up.requests())
			resp = h.do(t, call{body: taskRequestBody("2", "tasks/get", id), token: token, headers: taskHeaders("tasks/get", id)})
			got = readBody(t, resp)
			if tt.wrap != (resp.StatusCode == http.StatusOK) {
				t.Errorf("tasks/get with the id handed out = %d %s, want forwarded %v", resp.StatusCode, got, tt.wrap)
			}
			if !tt.wrap {
				if code, _, _ := rpcErr(t, got); resp.StatusCode != http.StatusNotFound || code != codeInvalidParams {
					t.Errorf("tasks/get with the bare upstream id = %d %s, want 404 with code %d", resp.StatusCode, got, codeInvalidParams)
				}
				if n := len(h.up.requests()); n != before {
					t.Errorf("upstream saw %d more requests, want none", n-before)
				}
			}
		})
	}
}

// TestMayName: the byte scan before a member lookup never rules out a
// spelling an upstream could read as the name (with seps, maySpell, one
// with those between its letters), and rules out escapes that spell none
// of its letters.
func TestMayName(t *testing.T) {
	for raw, want := range map[string]bool{
		`{"task":1}`: true, `{"Task":1}`: true, `{"TASK":1}`: true, `{"tAsK":1}`: true,
		`{"ta\u0073k":1}`: true, `{"\u0054ask":1}`: true, `{"ta\u017fk":1}`: true, `{"tas\u212A":1}`: true,
		`{"taſk":1}`: true, `{"tas\u212a":1}`: true, "{\"tas\u212a\":1}": true, `{"x":"\u00"}`: true, `{"x":"\u00g0"}`: true,
		`{"x":"é"}`: false, `{"x":"東京"}`: false, `{"x":"\u003c\u0026"}`: false, `{"x":"\ud83d\ude00"}`: false,
		`{"tas":1}`: false, `{"ask":1}`: false, `{"t":"ask"}`: false, `{"x":"ta"}`: false, ``: false, `t`: false,
		`{"ta_sk":1}`: false, `{"t\u005fask":1}`: false,
	} {
		if got := mayName([]byte(raw), "task"); got != want {
			t.Errorf("mayName(%s, task) = %v, want %v", raw, got, want)
		}
	}
	for raw, want := range map[string]bool{
		`{"request_state":1}`: true, `{"Request-State":1}`: true, `{"r_e_q_u_e_s_t_s_t_a_t_e":1}`: true, `{"request\u005fstate":1}`: true,
		`{"_request":"state"}`: false, `{"request":"state"}`: false, `{"x":"\u003c"}`: false,
	} {
		if got := maySpell([]byte(raw), "requeststate", "_-"); got != want {
			t.Errorf("maySpell(%s, requeststate, _-) = %v, want %v", raw, got, want)
		}
	}
	// The scan looks for a few bytes and passes over the rest; it finds
	// what a test of every byte at every position finds.
	relevant := func(r rune, word, seps string) bool {
		if strings.ContainsRune(seps, r) {
			return true
		}
		for _, c := range word {
			if strings.EqualFold(string(r), string(c)) {
				return true
			}
		}
		return false
	}
	every := func(raw []byte, word, seps string) bool {
		for i := range raw {
			rest := raw[i:]
			if bytes.HasPrefix(rest, []byte(`\u`)) {
				if len(rest) < 6 {
					return true
				}
				r, err := strconv.ParseUint(string(rest[2:6]), 16, 32)
				if err != nil || relevant(rune(r), word, seps) {
					return true
				}
			}
			if bytes.HasPrefix(rest, []byte("ſ")) && strings.Contains(word, "s") || bytes.HasPrefix(rest, []byte("\u212a")) && strings.Contains(word, "k") {
				return true
			}
			k := 0
			for _, c := range rest {
				if k == len(word) {
					break
				}
				if bytes.EqualFold([]byte{c}, []byte{word[k]}) {
					k++
				} else if k == 0 || !strings.ContainsRune(seps, rune(c)) {
					break
				}
			}
			if k == len(word) {
				return true
			}
		}
		return false
	}
	pieces := []string{"t", "T", "a", "A", "s", "S", "k", "K", "_", "-", "x", `"`, "0", "f", "ſ", "\u212a",
		`\u`, `\u0073`, `\u0053`, `\u017f`, `\u212a`, `\u003c`, `\u005f`, `\u002d`, `\u00`, `\uzz`}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var raw []byte
		for range rng.IntN(8) {
			raw = append(raw, pieces[rng.IntN(len(pieces))]...)
		}
		for _, word := range []string{"task", "tasks", "ask"} {
			for _, seps := range []string{"", "_-"} {
				if got, want := maySpell(raw, word, seps), every(raw, word, seps); got != want {
					t.Fatalf("maySpell(%q, %s, %q) = %v, a test of every byte finds %v", raw, word, seps, got, want)
				}
			}
		}
	}
}

// TestRewritesJSONMissesNoWord: rewritesJSON, mayCarryResources and
// cachingHints pass over an answer's escapes once for all their words:
// each still finds every answer maySpell finds for any of its words,
// with '_' or '-' between its letters as json/v2 reads them.
func TestRewritesJSONMissesNoWord(t *testing.T) {
	pieces := []string{"r", "R", "e", "s", "o", "u", "c", "C", "n", "t", "q", "a", "h", "p", "l", "m", "x", `"`,
		"resour", "ce", "conten", "ts", "request", "state", "cachesc", "ope", "ttl", "Ms", "ſ", "\u212a", "k", "tas", "ks", `\u006b`,
		`\u`, `\u0072`, `\u0052`, `\u017f`, `\u003c`, `\u0026`, `\u00`, `\uzz`, `\u006d`, "_", "-", `\u005f`, `\u002d`}
	rng := rand.New(rand.NewPCG(3, 4))
	any := func(raw []byte, words ...string) bool {
		for _, w := range words {
			if maySpell(raw, w, looseSeps) {
				return true
			}
		}
		return false
	}
	for range 20000 {
		var raw []byte
		for range rng.IntN(8) {
			raw = append(raw, pieces[rng.IntN(len(pieces))]...)
		}
		if any(raw, "resource", "contents") && !mayCarryResources(raw) {
			t.Fatalf("mayCarryResources(%q) = false, maySpell finds a word", raw)
		}
		if any(raw, "cachescope", "ttlms") && !cachingHints(raw) {
			t.Fatalf("cachingHints(%q) = false, maySpell finds a word", raw)
		}
		x, x2026 := &exchange{}, &exchange{rev: rev20260728}
		for _, rw := range []*responseWriter{{x: x, contents: true}, {x: x, embedded: true}, {x: x, states: true}, {x: x, cache: true}, {x: x2026}} {
			want := rw.resources() && any(raw, "resource", "contents") || rw.states && any(raw, "requeststate") ||
				rw.cache && any(raw, "cachescope", "ttlms") ||
				rw.x.rev.bindsTaskIDs() && maySpell(raw, "tasks", "") // a notifications/tasks, dropped there
			if want && !rw.rewritesJSON(raw) {
				t.Fatalf("rewritesJSON(%q) with %+v = false, maySpell finds a word", raw, rw)
			}
		}
	}
}

// TestInitializeDropsTasksCapability: before 2026-07-28 the gateway
// refuses task requests, so an initialize result it forwards does not
// offer tasks (in any spelling a client's decoder reads as "tasks"),
// as JSON or as an event, and keeps every other capability; other
// answers, and 2026-07-28, keep theirs.
func TestInitializeDropsTasksCapability(t *testing.T) {
	const caps = `{"tools":{"listChanged":true},%s:{"list":{},"cancel":{},"requests":{"tools":{"call":{}}}},"logging":{}}`
	result := func(name string) string {
		return `{"protocolVersion":"2025-11-25","capabilities":` + fmt.Sprintf(caps, name) + `,"serverInfo":{"name":"up","version":"1"}}`
	}
	var answer atomic.Value // the result the upstream gives, and how
	var sse atomic.Bool
	h := newHarness(t, unreadConfig(t), func(w http.ResponseWriter, r *http.Request) {
		var req struct{ ID json.RawMessage }
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &req)
		msg := `{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":` + answer.Load().(string) + `}`
		w.Header().Set("Mcp-Session-Id", "s-init")
		if sse.Load() {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "event: message\ndata: "+msg+"\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, msg)
	})
	token := mint(t, claims())
	initialize := func(version string) string {
		return `{"jsonrpc":"2.0","id":7,"method":"initialize","params":{"protocolVersion":"` + version + `","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	}
	capabilities := func(t *testing.T, body string) map[string]json.RawMessage {
		t.Helper()
		if i := strings.Index(body, "data: "); i >= 0 {
			body = strings.TrimSpace(body[i+len("data: "):])
		}
		var m struct {
			Result struct {
				Capabilities map[string]json.RawMessage `json:"capabilities"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("answer %s: %v", body, err)
		}
		return m.Result.Capabilities
	}
	for _, name := range []string{`"tasks"`, `"Tasks"`, `"TASKS"`, `"taſks"`, `"ta\u0073ks"`, `"tasks\u0000x"`} {
		for _, stream := range []bool{false, true} {
			answer.Store(result(name))
			sse.Store(stream)
			resp := h.do(t, call{body: initialize("2025-11-25"), token: token, headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
			body := readBody(t, resp)
			got := capabilities(t, body)
			if resp.StatusCode != http.StatusOK || len(got) != 2 || got["tools"] == nil || got["logging"] == nil {
				t.Errorf("initialize answered with capability %s (event stream %v) = %d, capabilities %v, want tools and logging only", name, stream, resp.StatusCode, got)
			}
		}
	}
	// An answer that names no tools at all, in one write of its
	// Content-Length as reverse_proxy writes a small one (which the
	// gateway otherwise writes at once, unread).
	serve := func(body string, next NextFunc) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("MCP-Protocol-Version", "2025-11-25")
		r.Header.Set("Accept-Encoding", "gzip, br")
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		h.g.Serve(w, r, next)
		return w
	}
	whole := `{"jsonrpc":"2.0","id":7,"result":{"protocolVersion":"2025-11-25","capabilities":{"tasks":{"list":{}},"logging":{}},"serverInfo":{"name":"up","version":"1"}}}`
	w := serve(initialize("2025-11-25"), func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(whole)))
		_, err := io.WriteString(w, whole)
		return err
	})
	if got := capabilities(t, w.Body.String()); w.Code != http.StatusOK || len(got) != 1 || got["logging"] == nil {
		t.Errorf("initialize answered whole with tasks and logging = %d %v, want logging only", w.Code, got)
	}
	// Answers a client takes for the initialize answer all the same (review
	// s12-fresh2 F2): its id spelled as a string, members given twice
	// (which the strict read refuses, and encoding/json reads as the
	// last), a result past the 1 MiB of task answers; as JSON and as an
	// event.
	pad := `"pad":"` + strings.Repeat("x", 1<<20+10) + `",`
	for _, tt := range []struct{ name, msg string }{
		{"id as a string", `{"jsonrpc":"2.0","id":"7","result":{"capabilities":{"tasks":{},"logging":{}}}}`},
		{"tasks twice", `{"jsonrpc":"2.0","id":7,"result":{"capabilities":{"tasks":{},"logging":{},"tasks":{"list":{}}}}}`},
		{"Tasks and tasks", `{"jsonrpc":"2.0","id":7,"result":{"capabilities":{"Tasks":{},"logging":{},"tasks":{}}}}`},
		{"past 1 MiB", `{"jsonrpc":"2.0","id":7,"result":{` + pad + `"capabilities":{"tasks":{},"logging":{}}}}`},
	} {
		for _, stream := range []bool{false, true} {
			w := serve(initialize("2025-11-25"), func(w http.ResponseWriter, r *http.Request) error {
				if stream {
					w.Header().Set("Content-Type", "text/event-stream")
					_, err := io.WriteString(w, "data: "+tt.msg+"\n\n")
					return err
				}
				w.Header().Set("Content-Type", "application/json")
				_, err := io.WriteString(w, tt.msg)
				return err
			})
			if got := capabilities(t, w.Body.String()); w.Code != http.StatusOK || len(got) != 1 || got["logging"] == nil {
				t.Errorf("%s (event stream %v) = %d, capabilities %v, want logging only", tt.name, stream, w.Code, got)
			}
		}
	}
	// A type clients read either way is not refused (review s12-fresh2
	// F1): the capability is a convenience, not a check, and the gateway
	// refuses task requests regardless.
	for _, ct := range []string{"application/json, text/event-stream", "application/json; text/event-stream"} {
		w := serve(initialize("2025-11-25"), func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", ct)
			_, err := io.WriteString(w, whole)
			return err
		})
		if got := capabilities(t, w.Body.String()); w.Code != http.StatusOK || got["logging"] == nil {
			t.Errorf("initialize answered as %q = %d %q, want 200 and the answer (as it came, or read as JSON)", ct, w.Code, w.Body.String())
		}
	}
	// The answer is asked for uncompressed, to be read; a tools/call
	// (no pinning here) keeps the client's Accept-Encoding.
	for _, tt := range []struct{ body, want string }{{initialize("2025-11-25"), ""}, {toolCall("read_a"), "gzip, br"}} {
		sent := "(not forwarded)"
		serve(tt.body, func(w http.ResponseWriter, r *http.Request) error {
			sent = r.Header.Get("Accept-Encoding")
			return nil
		})
		if sent != tt.want {
			t.Errorf("%s forwarded with Accept-Encoding %q, want %q", tt.body, sent, tt.want)
		}
	}
	// Kept: in 2026-07-28, and in the answer to anything but initialize.
	answer.Store(result(`"tasks"`))
	sse.Store(false)
	resp := h.do(t, call{body: toolCall("read_a"), token: token, headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
	if got := capabilities(t, readBody(t, resp)); got["tasks"] == nil {
		t.Errorf("a tools/call answer's result.capabilities = %v, want it unchanged", got)
	}
	resp = h.do(t, call{body: initialize("2026-07-28"), token: token, headers: map[string]string{"MCP-Protocol-Version": "2026-07-28"}})
	if body := readBody(t, resp); resp.StatusCode == http.StatusOK {
		if got := capabilities(t, body); got["tasks"] == nil {
			t.Errorf("a 2026-07-28 initialize answer's capabilities = %v, want tasks kept (bound there)", got)
		}
	}
}

// TestTaskIDsOfOthersOnToolCallStream: in the answer to a task-declaring
// tools/call, only the task it creates is wrapped for the caller: the
// result of the response with the call's id, and notifications naming
// that task after it. An upstream that leaks another caller's task on
// that stream (a status broadcast to every open stream, a response
// misrouted from another request) hands the caller no handle for it; it
// did before, and tasks/get then forwarded it as the other caller's
// upstream id (review s13-sse F1).
func TestTaskIDsOfOthersOnToolCallStream(t *testing.T) {
	const mine, bobs = "task-alice", "task-bob"
	for _, tt := range []struct {
		name, leak string
	}{
		{"notification for another task", `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":` + quote(bobs) + `,"status":"completed"}}`},
		{"response with another id", `{"jsonrpc":"2.0","id":99,"result":{"resultType":"task","taskId":` + quote(bobs) + `,"status":"completed"}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				var req struct {
					ID     json.RawMessage `json:"id"`
					Method string          `json:"method"`
					Params struct {
						TaskID string `json:"taskId"`
					} `json:"params"`
				}
				body, _ := io.ReadAll(r.Body)
				json.Unmarshal(body, &req)
				switch req.Method {
				case "tools/call":
					w.Header().Set("Content-Type", "text/event-stream")
					io.WriteString(w, "data: "+tt.leak+"\n\n")
					io.WriteString(w, `data: {"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":{"resultType":"task","taskId":`+quote(mine)+`,"status":"working"}}`+"\n\n")
				default: // tasks/get: the upstream keeps no owner, as the gateway assumes
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":{"resultType":"complete","taskId":`+quote(req.Params.TaskID)+`,"status":"completed","result":{"content":[{"type":"text","text":"secret of `+req.Params.TaskID+`"}]}}}`)
				}
			})
			token := mint(t, claims()) // alice
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026Tasks + `}}`
			resp := h.do(t, call{body: body, token: token, headers: taskHeaders("tools/call", "read_a")})
			got := readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("tools/call = %d %s", resp.StatusCode, got)
			}
			leaked, _ := h.g.wrapTask(&principal{issuer: testIssuer, subject: "alice", clientID: "client-1"}, "read_a", bobs)
			if !strings.Contains(got, leaked) {
				return // not wrapped: fine
			}
			t.Errorf("alice's tools/call stream carries bob's task %q wrapped for alice: %s", bobs, got)
			before := len(h.up.requests())
			resp = h.do(t, call{body: taskRequestBody("2", "tasks/get", leaked), token: token, headers: taskHeaders("tasks/get", leaked)})
			got = readBody(t, resp)
			if reqs := h.up.requests(); len(reqs) > before && strings.Contains(string(reqs[len(reqs)-1].Body), quote(bobs)) {
				t.Errorf("and alice's tasks/get with it reached the upstream as %s; answer %d %s", reqs[len(reqs)-1].Body, resp.StatusCode, got)
			}
		})
	}
}

// TestSecondResponseWithTheCallsID: on a task-declaring tools/call's
// stream only the first response with the call's id creates the caller's
// task: an upstream that sends alice's own answer and then a response
// with the same id naming bob's task (ids collide across callers: every
// SDK numbers its requests from 0 or 1) hands alice no handle to bob's
// (review s13-fresh4 F2). A misrouted response that comes first cannot
// be told from her own by its id; the README says so.
func TestSecondResponseWithTheCallsID(t *testing.T) {
	const mine, bobs = "task-alice", "task-bob"
	for _, tt := range []struct {
		name  string
		order []string
	}{
		{"bob's after alice's own", []string{mine, bobs}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				var req struct {
					ID     json.RawMessage `json:"id"`
					Method string          `json:"method"`
				}
				body, _ := io.ReadAll(r.Body)
				json.Unmarshal(body, &req)
				w.Header().Set("Content-Type", "text/event-stream")
				for _, task := range tt.order {
					io.WriteString(w, `data: {"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":{"resultType":"task","taskId":`+quote(task)+`,"status":"working"}}`+"\n\n")
				}
			})
			token := mint(t, claims()) // alice
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026Tasks + `}}`
			resp := h.do(t, call{body: body, token: token, headers: taskHeaders("tools/call", "read_a")})
			got := readBody(t, resp)
			leaked, _ := h.g.wrapTask(&principal{issuer: testIssuer, subject: "alice", clientID: "client-1"}, "read_a", bobs)
			if strings.Contains(got, leaked) {
				t.Errorf("alice's tools/call stream carries bob's task wrapped for alice: %s", got)
			}
		})
	}
}

// TestFirstResponseWithoutTask: the tools/call's own answer is the first
// response with its id, whether it creates a task or not (a plain result,
// an error, a task id that is no string): a later response with the same
// id naming another caller's task is no handle for the caller (review
// s13-fresh5 F1).
func TestFirstResponseWithoutTask(t *testing.T) {
	const bobs = "task-bob"
	for _, tt := range []struct {
		name  string
		first string // alice's own answer, %ID% for the id
	}{
		{"plain result first", `{"jsonrpc":"2.0","id":%ID%,"result":{"content":[{"type":"text","text":"done"}]}}`},
		{"error first", `{"jsonrpc":"2.0","id":%ID%,"error":{"code":-32603,"message":"failed"}}`},
		{"non-string taskId first", `{"jsonrpc":"2.0","id":%ID%,"result":{"resultType":"task","taskId":7,"status":"working"}}`},
	} {
		for _, sse := range []bool{true, false} {
			name := tt.name + map[bool]string{true: " (SSE)", false: " (JSON batch)"}[sse]
			t.Run(name, func(t *testing.T) {
				h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
					var req struct {
						ID json.RawMessage `json:"id"`
					}
					body, _ := io.ReadAll(r.Body)
					json.Unmarshal(body, &req)
					first := strings.ReplaceAll(tt.first, "%ID%", string(req.ID))
					second := `{"jsonrpc":"2.0","id":` + string(req.ID) + `,"result":{"resultType":"task","taskId":` + quote(bobs) + `,"status":"working"}}`
					if sse {
						w.Header().Set("Content-Type", "text/event-stream")
						io.WriteString(w, "data: "+first+"\n\ndata: "+second+"\n\n")
						return
					}
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, "["+first+","+second+"]")
				})
				token := mint(t, claims()) // alice
				body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026Tasks + `}}`
				resp := h.do(t, call{body: body, token: token, headers: taskHeaders("tools/call", "read_a")})
				got := readBody(t, resp)
				leaked, _ := h.g.wrapTask(&principal{issuer: testIssuer, subject: "alice", clientID: "client-1"}, "read_a", bobs)
				if strings.Contains(got, leaked) {
					t.Errorf("alice's tools/call answer carries bob's task wrapped for alice: %s", got)
				}
			})
		}
	}
}

// TestTaskFollowUpsKeepTheToolsRule (review s15-gateway F4): a follow-up
// (tasks/get, tasks/update, tasks/cancel) reads the result of the call
// that created the task or feeds it input, so it must pass that tool's
// rule again for the current token: a token of the same principal that
// has lost the tool's scope (a narrowed consent, a down-scoped token), or
// a delegation deeper than the rule allows, is refused as the call would
// be, and never forwarded; one that still passes it gets the task.
func TestTaskFollowUpsKeepTheToolsRule(t *testing.T) {
	h := newHarness(t, testConfig(t), taskUpstream("task-admin", false))
	create := func(tool, token string) string {
		t.Helper()
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{},` + meta2026Tasks + `}}`
		resp := h.do(t, call{body: body, token: token, headers: taskHeaders("tools/call", tool)})
		got := readBody(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("tools/call %s = %d %s, want 200", tool, resp.StatusCode, got)
		}
		return resultTaskID(t, got)
	}
	token := func(scope string, actors ...string) string {
		c := claims()
		c["scope"] = scope
		return mint(t, withActors(c, actors...))
	}
	adminTask := create("delete_all", token("mcp tools:read admin"))
	shallowTask := create("shallow", token("mcp tools:read", "agent-a"))
	for _, tt := range []struct {
		name, token, task string
		status            int
		want              string
	}{
		{"the scope still held", token("mcp tools:read admin"), adminTask, http.StatusOK, ""},
		{"the tool's scope lost", token("mcp tools:read"), adminTask, http.StatusForbidden, "insufficient scope"},
		{"one delegation, as created", token("mcp tools:read", "agent-a"), shallowTask, http.StatusOK, ""},
		{"a deeper delegation, same outermost agent", token("mcp tools:read", "agent-a", "agent-b"), shallowTask, http.StatusForbidden, "delegation depth"},
	} {
		for _, method := range []string{"tasks/get", "tasks/update", "tasks/cancel"} {
			t.Run(tt.name+"/"+method, func(t *testing.T) {
				before := len(h.up.requests())
				resp := h.do(t, call{body: taskRequestBody("7", method, tt.task), token: tt.token, headers: taskHeaders(method, tt.task)})
				got := readBody(t, resp)
				if resp.StatusCode != tt.status || !strings.Contains(got, tt.want) {
					t.Fatalf("%s = %d %s, want %d %q", method, resp.StatusCode, got, tt.status, tt.want)
				}
				if forwarded := len(h.up.requests()) - before; (tt.status == http.StatusOK) != (forwarded == 1) {
					t.Errorf("upstream saw %d requests", forwarded)
				}
			})
		}
	}
}

// TestTaskStatusOfOthersDropped: a notifications/tasks the gateway cannot
// attribute to the caller carries another caller's task status and final
// result (tool output), so it is dropped, not passed with its id
// unwrapped: on a 2026-07-28 subscriptions/listen stream (task
// subscriptions are refused, so none there is the caller's), also when
// the strict read refuses it (a member twice), and on a tools/call's
// stream for a task its answer did not create.
func TestTaskStatusOfOthersDropped(t *testing.T) {
	const bobs = "task-bob"
	leak := `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":` + quote(bobs) + `,"status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}`
	leakTwice := `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":` + quote(bobs) + `,"status":"completed","status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}`
	noID := `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}`
	escaped := `{"jsonrpc":"2.0","method":"notifications/\u0074asks","params":{"taskId":` + quote(bobs) + `,"status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}`
	changed := `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`
	plainCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026 + `}}`
	for _, tt := range []struct {
		name, body string
		headers    map[string]string
		want       []string // in the answer
		// json: the upstream answers in JSON, a batch of its
		// notifications and the answer, which the TypeScript SDK's
		// client reads message by message; noResources: no
		// resource_rule, so the answer is read for nothing else.
		json, noResources bool
		scope             string // the token's, when not claims()'
	}{
		{name: "listen", body: `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},` + meta2026 + `}}`,
			headers: map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}, want: []string{changed}},
		{name: "tools/call", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026Tasks + `}}`,
			headers: taskHeaders("tools/call", "read_a"), want: []string{changed, `"resultType":"task"`}},
		// A call that does not declare the Tasks extension can have no
		// task: every notifications/tasks on its answer is another's.
		{name: "tools/call without tasks", body: plainCall, headers: taskHeaders("tools/call", "read_a"), want: []string{changed, `"text":"done"`}},
		{name: "tools/call without tasks, no resource rules", body: plainCall, headers: taskHeaders("tools/call", "read_a"), want: []string{changed, `"text":"done"`}, noResources: true},
		{name: "tools/call without tasks, JSON", body: plainCall, headers: taskHeaders("tools/call", "read_a"), want: []string{changed, `"text":"done"`}, json: true},
		{name: "tools/call without tasks, JSON, no resource rules", body: plainCall, headers: taskHeaders("tools/call", "read_a"), want: []string{changed, `"text":"done"`}, json: true, noResources: true},
		// Read for nothing else without resource rules (nor pinning).
		{name: "completion/complete, no resource rules", body: `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"summary"},"argument":{"name":"a","value":""},` + meta2026 + `}}`,
			headers: taskHeaders("completion/complete", ""), want: []string{changed}, noResources: true, scope: "mcp prompts:read"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tt.noResources {
				cfg.ResourceRules = nil
			}
			h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
				var req struct {
					ID     json.RawMessage `json:"id"`
					Method string          `json:"method"`
					Params struct {
						Meta map[string]json.RawMessage `json:"_meta"`
					} `json:"params"`
				}
				body, _ := io.ReadAll(r.Body)
				json.Unmarshal(body, &req)
				msgs := []string{leak, leakTwice, noID, escaped, changed}
				if req.Method == "tools/call" {
					result := `{"content":[{"type":"text","text":"done"}]}`
					if _, tasks := req.Params.Meta["io.modelcontextprotocol/clientCapabilities"]; tasks {
						result = `{"resultType":"task","taskId":"task-alice","status":"working"}`
					}
					msgs = append(msgs, `{"jsonrpc":"2.0","id":`+string(req.ID)+`,"result":`+result+`}`)
				}
				if tt.json {
					// Without leakTwice: a batch the strict read refuses
					// is refused whole.
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, "["+strings.Join(slices.DeleteFunc(msgs, func(m string) bool { return m == leakTwice }), ",")+"]")
					return
				}
				w.Header().Set("Content-Type", "text/event-stream")
				for _, m := range msgs {
					io.WriteString(w, "data: "+m+"\n\n")
				}
			})
			c := claims()
			if tt.scope != "" {
				c["scope"] = tt.scope
			}
			resp := h.do(t, call{body: tt.body, token: mint(t, c), headers: tt.headers})
			got := readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("answer = %d %s, want 200", resp.StatusCode, got)
			}
			if strings.Contains(got, "secret of bob") || strings.Contains(got, bobs) {
				t.Errorf("alice's %s answer carries bob's task status and result: %s", tt.name, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("answer lacks %s: %s", w, got)
				}
			}
		})
	}
}

// TestTaskStatusOfOthersDroppedInJSON: a JSON answer whose task ids are
// read (a subscriptions/listen's, a tools/call's declaring the Tasks
// extension), read for nothing else (pinning off, no resource rules), is
// held and read for other callers' notifications/tasks past the size up
// to which task ids are wrapped (maxTaskBody: bob's final result is what
// makes it large) and past the caller's share of what is held, where it
// passed unread; and a 2026-07-28 answer of a type the SDKs' clients read
// as JSON ("application/json-rpc": the Python SDK by prefix, the
// TypeScript SDK anywhere) is refused, where it passed unread.
func TestTaskStatusOfOthersDroppedInJSON(t *testing.T) {
	leak := func(n int) string {
		return `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"task-bob","status":"completed","result":{"content":[{"type":"text","text":"secret of bob` + strings.Repeat("a", n) + `"}]}}}`
	}
	listen := `{"jsonrpc":"2.0","id":1,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},` + meta2026 + `}}`
	listenHeaders := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}
	toolCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026Tasks + `}}`
	plainCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026 + `}}`
	prompt := `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summary",` + meta2026 + `}}`
	for _, tt := range []struct {
		name, body string
		headers    map[string]string
		scope, ct  string
		leak       string
		held       int64 // the held bound, 0 for maxHeldBytes
		status     int   // 200: the answer without bob's status; else refused
	}{
		{"listen, over maxTaskBody", listen, listenHeaders, "", "application/json", leak(maxTaskBody), 0, 200},
		{"tools/call, over maxTaskBody", toolCall, taskHeaders("tools/call", "read_a"), "", "application/json", leak(maxTaskBody), 0, 200},
		{"listen, past the held share", listen, listenHeaders, "", "application/json", leak(256 << 10), 128 << 10, 502},
		{"listen, application/json-rpc", listen, listenHeaders, "", "application/json-rpc", leak(0), 0, 502},
		{"tools/call, application/json-rpc", toolCall, taskHeaders("tools/call", "read_a"), "", "application/json-rpc", leak(0), 0, 502},
		{"tools/call without tasks, application/json-rpc", plainCall, taskHeaders("tools/call", "read_a"), "", "application/json-rpc", leak(0), 0, 502},
		{"prompts/get, application/json-rpc", prompt, taskHeaders("prompts/get", "summary"), "mcp prompts:read", "application/json-rpc", leak(0), 0, 502},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ResourceRules = nil
			h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ct)
				io.WriteString(w, "["+tt.leak+`,{"jsonrpc":"2.0","id":1,"result":{"content":[]}}]`)
			})
			if tt.held > 0 {
				h.g.held = newHeldShares(tt.held)
			}
			c := claims()
			if tt.scope != "" {
				c["scope"] = tt.scope
			}
			resp := h.do(t, call{body: tt.body, token: mint(t, c), headers: tt.headers})
			got := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Errorf("answer = %d %.300s, want %d", resp.StatusCode, got, tt.status)
			}
			if strings.Contains(got, "secret of bob") || strings.Contains(got, "task-bob") {
				t.Errorf("alice's %s answer carries bob's task status and result: %.300s", tt.name, got)
			}
		})
	}
}

// TestTaskStatusOfOthersDroppedAsClientsRead: a 2026-07-28 answer read
// for other callers' notifications/tasks only (a completion/complete's, a
// tools/call's that does not declare the Tasks extension, with pinning
// off and no resource rules) is read as clients read it, as a watched
// answer is: the client's Accept-Encoding is not forwarded, so that a
// compressing upstream's answer arrives readable (it was, and the
// compressed answer passed unread); and an answer compressed all the
// same, of two types (the TypeScript SDK's client reads the values
// joined, and takes "text/event-stream" anywhere in them for a stream),
// of a type naming "text/event-stream" elsewhere, or in a charset other
// than UTF-8 (requests and httpx decode UTF-7, where "+AHQ-asks" is
// "tasks") is refused (502), where it passed unread, bob's task status
// and final result with it. An answer of a type no SDK reads as JSON
// (text/plain, application/octet-stream, none), which requests' json()
// reads whatever its type, is read as JSON for them too: it passed
// unread.
func TestTaskStatusOfOthersDroppedAsClientsRead(t *testing.T) {
	leak := `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"task-bob","status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}`
	leakUTF7 := strings.ReplaceAll(strings.ReplaceAll(leak, "tasks", "+AHQ-asks"), "secret of bob", "+AHM-ecret of bob")
	complete := `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"summary"},"argument":{"name":"a","value":""},` + meta2026 + `}}`
	plainCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026 + `}}`
	answer := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"done"}],"completion":{"values":[]}}}`
	events := func(msgs ...string) string {
		var b strings.Builder
		for _, m := range msgs {
			b.WriteString("data: " + m + "\n\n")
		}
		return b.String()
	}
	batch := "[" + leak + "," + answer + "]"
	for _, tt := range []struct {
		name     string
		cts      []string
		body     string
		encoding string // the upstream's Content-Encoding: gzip only when asked, deflate always
		status   int    // 200: the answer without bob's status
		want     string // in a 200 answer
		toolCall bool   // a tools/call without tasks, not a completion/complete
	}{
		{name: "JSON, gzip when asked", cts: []string{"application/json"}, body: batch, encoding: "gzip", status: 200, want: `"values":[]`},
		{name: "events, gzip when asked", cts: []string{"text/event-stream"}, body: events(leak, answer), encoding: "gzip", status: 200, want: `"values":[]`},
		{name: "tools/call, JSON, gzip when asked", cts: []string{"application/json"}, body: batch, encoding: "gzip", status: 200, want: `"text":"done"`, toolCall: true},
		{name: "JSON, deflate though not asked", cts: []string{"application/json"}, body: batch, encoding: "deflate", status: 502},
		{name: "events, deflate though not asked", cts: []string{"text/event-stream"}, body: events(leak, answer), encoding: "deflate", status: 502},
		{name: "JSON and events", cts: []string{"application/json", "text/event-stream"}, body: events(leak, answer), status: 502},
		{name: "tools/call, JSON and events", cts: []string{"application/json", "text/event-stream"}, body: events(leak, answer), status: 502, toolCall: true},
		{name: "text and events", cts: []string{"text/plain", "text/event-stream"}, body: events(leak, answer), status: 502},
		{name: "text and JSON", cts: []string{"text/plain", "application/json"}, body: batch, status: 502},
		{name: "events named in a parameter", cts: []string{"text/plain; x=text/event-stream"}, body: events(leak, answer), status: 502},
		{name: "JSON in UTF-7", cts: []string{"application/json; charset=utf-7"}, body: "[" + leakUTF7 + "," + answer + "]", status: 502},
		{name: "events in UTF-7", cts: []string{"text/event-stream; charset=utf-7"}, body: events(leakUTF7, answer), status: 502},
		{name: "JSON typed as text", cts: []string{"text/plain"}, body: batch, status: 200, want: `"values":[]`},
		{name: "tools/call, JSON typed as text", cts: []string{"text/plain; charset=utf-8"}, body: batch, status: 200, want: `"text":"done"`, toolCall: true},
		{name: "JSON typed as bytes", cts: []string{"application/octet-stream"}, body: batch, status: 200, want: `"values":[]`},
		{name: "JSON untyped", body: batch, status: 200, want: `"values":[]`},
		{name: "JSON typed as text in UTF-7", cts: []string{"text/plain; charset=utf-7"}, body: "[" + leakUTF7 + "," + answer + "]", status: 502},
		{name: "JSON typed as text twice", cts: []string{"text/plain", "application/octet-stream"}, body: batch, status: 502},
		{name: "JSON typed as text, deflate though not asked", cts: []string{"text/plain"}, body: batch, encoding: "deflate", status: 502},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ResourceRules = nil
			h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = tt.cts
				var out io.Writer = w
				switch {
				case tt.encoding == "gzip" && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip"):
					w.Header().Set("Content-Encoding", "gzip")
					zw := gzip.NewWriter(w)
					defer zw.Close()
					out = zw
				case tt.encoding == "deflate":
					w.Header().Set("Content-Encoding", "deflate")
					zw := zlib.NewWriter(w)
					defer zw.Close()
					out = zw
				}
				io.WriteString(out, tt.body)
			})
			c := claims()
			c["scope"] = "mcp prompts:read"
			body, hd := complete, taskHeaders("completion/complete", "")
			if tt.toolCall {
				c["scope"] = "mcp tools:read"
				body, hd = plainCall, taskHeaders("tools/call", "read_a")
			}
			hd["Accept-Encoding"] = "gzip, deflate"
			resp := h.do(t, call{body: body, token: mint(t, c), headers: hd})
			b, _ := io.ReadAll(resp.Body) // a refused stream may end unfinished
			resp.Body.Close()
			got := string(b)
			switch resp.Header.Get("Content-Encoding") {
			case "gzip":
				if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
					d, _ := io.ReadAll(zr)
					got = string(d)
				}
			case "deflate":
				if zr, err := zlib.NewReader(bytes.NewReader(b)); err == nil {
					d, _ := io.ReadAll(zr)
					got = string(d)
				}
			}
			if strings.Contains(got, "secret of bob") || strings.Contains(got, "task-bob") || strings.Contains(got, "ecret of bob") {
				t.Errorf("alice's answer carries bob's task status and result: %d %.300s", resp.StatusCode, got)
			}
			if resp.StatusCode != tt.status || tt.status == 200 && !strings.Contains(got, tt.want) {
				t.Errorf("answer = %d %.300s, want %d with %s", resp.StatusCode, got, tt.status, tt.want)
			}
			if forwarded := h.up.requests()[0].Header.Get("Accept-Encoding"); strings.Contains(forwarded, "deflate") {
				t.Errorf("upstream got the client's Accept-Encoding %q", forwarded)
			}
		})
	}
}

// TestTaskStatusOfOthersDroppedAsClientsParse: a notifications/tasks the
// strict read refuses is read again as encoding/json reads it
// (isTaskStatus) for whether it is one; where clients read it otherwise
// it is dropped all the same: a JSON answer after a BOM, which the
// TypeScript SDK's client reads (fetch's json() drops it), NaN or
// Infinity in it, which the Python SDK's reads (pydantic), and a method
// given twice in two cases, which encoding/json reads as the last and the
// SDKs as the exactly spelt one. Each passed unread, bob's task status
// and final result with it.
func TestTaskStatusOfOthersDroppedAsClientsParse(t *testing.T) {
	leak := `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"task-bob","status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}`
	with := func(extra string) string {
		return strings.Replace(leak, `"status":"completed"`, `"status":"completed",`+extra, 1)
	}
	caseTwice := strings.Replace(leak, `"method":"notifications/tasks"`, `"method":"notifications/tasks","Method":"ping"`, 1)
	answer := `{"jsonrpc":"2.0","id":1,"result":{"completion":{"values":["kept"]}}}`
	complete := `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"summary"},"argument":{"name":"a","value":""},` + meta2026 + `}}`
	for _, tt := range []struct {
		name, leak string
		bom        bool // before the JSON answer
	}{
		{"BOM", leak, true},
		{"NaN", with(`"n":NaN`), false},
		{"Infinity", with(`"n":-Infinity`), false},
		{"method in two cases", caseTwice, false},
	} {
		for _, as := range []string{"json", "events"} {
			if tt.bom && as == "events" {
				continue // eventsource parsers drop a BOM at the stream's start only, the gateway too
			}
			t.Run(tt.name+"/"+as, func(t *testing.T) {
				cfg := testConfig(t)
				cfg.ResourceRules = nil
				h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
					if as == "events" {
						w.Header().Set("Content-Type", "text/event-stream")
						io.WriteString(w, "data: "+tt.leak+"\n\ndata: "+answer+"\n\n")
						return
					}
					w.Header().Set("Content-Type", "application/json")
					if tt.bom {
						io.WriteString(w, "\ufeff")
					}
					io.WriteString(w, "["+tt.leak+","+answer+"]")
				})
				c := claims()
				c["scope"] = "mcp prompts:read"
				resp := h.do(t, call{body: complete, token: mint(t, c), headers: taskHeaders("completion/complete", "")})
				got := readBody(t, resp)
				if strings.Contains(got, "secret of bob") || strings.Contains(got, "task-bob") {
					t.Errorf("alice's answer carries bob's task status and result: %d %.300s", resp.StatusCode, got)
				}
				// A JSON answer is one read: refused whole. An event
				// stream loses that event.
				if want := map[string]int{"json": 502, "events": 200}[as]; resp.StatusCode != want || as == "events" && !strings.Contains(got, `"kept"`) {
					t.Errorf("answer = %d %.300s, want %d", resp.StatusCode, got, want)
				}
			})
		}
	}
}

// TestTaskStatusOfOthersDroppedPastUnreadEvent: a stream whose task ids
// are bound, read for nothing else (pinning off, no resource rules), is
// still read for other callers' notifications/tasks past an event the
// gateway cannot read (not UTF-8, over maxFilteredBody) or hold (past
// the caller's share of what is held): the stream ends there rather
// than passing its rest unread, bob's task status and result with it.
func TestTaskStatusOfOthersDroppedPastUnreadEvent(t *testing.T) {
	leak := `data: {"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"task-bob","status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}` + "\n\n"
	changed := `data: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}` + "\n\n"
	logged := func(data string) string {
		return `data: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"` + data + `"}}` + "\n\n"
	}
	listen := `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},` + meta2026 + `}}`
	listenHeaders := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}
	toolCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026Tasks + `}}`
	for _, tt := range []struct {
		name, body string
		headers    map[string]string
		event      string // before bob's status
		held       int64  // the held bound, 0 for maxHeldBytes
	}{
		{"listen, not UTF-8", listen, listenHeaders, logged("\xff"), 0},
		{"listen, over maxFilteredBody", listen, listenHeaders, logged(strings.Repeat("a", maxFilteredBody)), 0},
		{"listen, past the held share", listen, listenHeaders, logged(strings.Repeat("a", 256<<10)), 128 << 10},
		{"tools/call, not UTF-8", toolCall, taskHeaders("tools/call", "read_a"), logged("\xff"), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ResourceRules = nil
			h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, changed)
				io.WriteString(w, tt.event)
				io.WriteString(w, leak)
			})
			if tt.held > 0 {
				h.g.held = newHeldShares(tt.held)
			}
			resp := h.do(t, call{body: tt.body, token: mint(t, claims()), headers: tt.headers})
			b, err := io.ReadAll(resp.Body) // the stream ends, unfinished
			resp.Body.Close()
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("reading the stream: %v", err)
			}
			got := string(b)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("answer = %d %.300s, want 200", resp.StatusCode, got)
			}
			if strings.Contains(got, "secret of bob") || strings.Contains(got, "task-bob") {
				t.Errorf("alice's %s stream carries bob's task status and result: %.300s", tt.name, got[max(0, len(got)-300):])
			}
		})
	}
}

// TestTaskStatusOfOthersDroppedInJSONOtherEncodings: a 2026-07-28 JSON
// answer that the gateway's strict read refuses is read leniently for
// other callers' notifications/tasks, as encoding/json reads it; clients
// read more: after a UTF-8 byte order mark (fetch's json(), the
// TypeScript SDK client's reader, drops it) and in UTF-16 or UTF-32
// (Python's json.loads on bytes, as httpx's json() reads it). Such an
// answer carried bob's task status and result to alice, on a tools/call
// with or without the Tasks extension. It is refused now (502), or read
// past its byte order mark; one without another's task status passes
// as before.
func TestTaskStatusOfOthersDroppedInJSONOtherEncodings(t *testing.T) {
	leak := `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"task-bob","status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}`
	answer := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"your tasks"}]}}`
	utf16le := func(s string) string {
		var b strings.Builder
		for _, u := range utf16.Encode([]rune(s)) {
			b.WriteByte(byte(u))
			b.WriteByte(byte(u >> 8))
		}
		return b.String()
	}
	plainCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026 + `}}`
	toolCall := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{},` + meta2026Tasks + `}}`
	for _, tt := range []struct {
		name, body, answer string
		status             int // 200: passed as sent
	}{
		{"tools/call without tasks, byte order mark", plainCall, "\ufeff[" + leak + "," + answer + "]", 502},
		{"tools/call without tasks, byte order mark, alone", plainCall, "\ufeff" + leak, 502},
		{"tools/call without tasks, UTF-16", plainCall, utf16le("[" + leak + "," + answer + "]"), 502},
		{"tools/call, byte order mark", toolCall, "\ufeff[" + leak + "," + answer + "]", 502},
		{"tools/call, UTF-16", toolCall, utf16le("[" + leak + "," + answer + "]"), 502},
		{"tools/call without tasks, byte order mark, no task status", plainCall, "\ufeff" + answer, 200},
		{"tools/call, byte order mark, no task status", toolCall, "\ufeff" + answer, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ResourceRules = nil
			h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, tt.answer)
			})
			resp := h.do(t, call{body: tt.body, token: mint(t, claims()), headers: taskHeaders("tools/call", "read_a")})
			got := readBody(t, resp)
			if resp.StatusCode != tt.status || tt.status == 200 && got != tt.answer {
				t.Errorf("answer = %d %.300q, want %d", resp.StatusCode, got, tt.status)
			}
			if strings.Contains(got, "task-bob") || strings.Contains(got, utf16le("task-bob")) {
				t.Errorf("alice's %s answer carries bob's task status and result: %.300q", tt.name, got)
			}
		})
	}
}

// TestTaskStatusOfOthersDroppedInCompressedAnswers: every 2026-07-28
// JSON or event-stream answer is read for other callers'
// notifications/tasks, so its request no longer carries the client's
// Accept-Encoding (the transport asks for gzip and decodes it), and an
// answer compressed all the same is refused (502), as where the gateway
// watches answers. Before, a completion/complete (read for nothing else
// without pinning or resource rules) forwarded "deflate, gzip": a
// server compressing as asked had its event stream pass unread, bob's
// task status and result with it, and its JSON answer refused 502 or
// passed unread by whether the compressed bytes could spell "tasks".
func TestTaskStatusOfOthersDroppedInCompressedAnswers(t *testing.T) {
	leak := `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"task-bob","status":"completed","result":{"content":[{"type":"text","text":"secret of bob"}]}}}`
	answer := `{"jsonrpc":"2.0","id":1,"result":{"completion":{"values":["alice's value"]}}}`
	complete := `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"summary"},"argument":{"name":"x","value":""},` + meta2026 + `}}`
	for _, ct := range []string{"application/json", "text/event-stream"} {
		for _, always := range []bool{false, true} { // true: deflate, whatever was asked
			t.Run(fmt.Sprintf("%s, deflate always %v", ct, always), func(t *testing.T) {
				cfg := testConfig(t)
				cfg.ResourceRules = nil
				cfg.Prompts = []Rule{{Pattern: "*", Scopes: []string{"mcp"}}}
				var asked string
				h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
					asked = r.Header.Get("Accept-Encoding")
					body := "[" + leak + "," + answer + "]"
					if ct == "text/event-stream" {
						body = "data: " + leak + "\n\ndata: " + answer + "\n\n"
					}
					var b bytes.Buffer
					var zw io.WriteCloser
					switch {
					case always || strings.Contains(asked, "deflate"):
						w.Header().Set("Content-Encoding", "deflate")
						zw = zlib.NewWriter(&b)
					case strings.Contains(asked, "gzip"):
						w.Header().Set("Content-Encoding", "gzip")
						zw = gzip.NewWriter(&b)
					}
					if zw != nil {
						io.WriteString(zw, body)
						zw.Close()
						body = b.String()
					}
					w.Header().Set("Content-Type", ct)
					io.WriteString(w, body)
				})
				headers := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "completion/complete", "Accept-Encoding": "deflate, gzip"}
				resp := h.do(t, call{body: complete, token: mint(t, claims()), headers: headers})
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got := string(raw)
				if strings.Contains(resp.Header.Get("Content-Encoding"), "deflate") {
					if zr, err := zlib.NewReader(bytes.NewReader(raw)); err == nil {
						plain, _ := io.ReadAll(zr)
						got = string(plain)
					}
				}
				if strings.Contains(asked, "deflate") {
					t.Errorf("the client's Accept-Encoding was forwarded (%q)", asked)
				}
				if strings.Contains(got, "task-bob") {
					t.Errorf("alice's answer carries bob's task status and result: %d %.300q", resp.StatusCode, got)
				}
				if want := !always; want != (resp.StatusCode == 200 && strings.Contains(got, "alice's value")) {
					t.Errorf("answer = %d %.300q, want alice's answer %v (else 502)", resp.StatusCode, got, want)
				}
				if always && resp.StatusCode != http.StatusBadGateway {
					t.Errorf("answer = %d, want 502", resp.StatusCode)
				}
			})
		}
	}
}
