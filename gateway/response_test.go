package gateway

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestToolsListNotificationFiltered: a tools/list sent without an id is
// still a tools/list to a lenient server; whatever answers it is filtered.
func TestToolsListNotificationFiltered(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"},{"name":"read_a"}]}}`)
	})
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","method":"tools/list"}`, token: mint(t, claims())})
	body := readBody(t, resp)
	if strings.Contains(body, "delete_all") {
		t.Errorf("answer to a tools/list notification = %s, want delete_all filtered out", body)
	}
}

// TestToolsListAcceptEncoding: a client asking for compressed answers (Go's
// client does by default) must not make a compressing upstream's
// tools/list unfilterable.
func TestToolsListAcceptEncoding(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		writeJSONAnswer(w, r, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"},{"name":"read_a"}]}}`)
	})
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, claims()),
		headers: map[string]string{"Accept-Encoding": "gzip"}})
	body := decoded(t, resp, readBody(t, resp))
	if resp.StatusCode != 200 || !strings.Contains(body, "read_a") || strings.Contains(body, "delete_all") {
		t.Errorf("tools/list with Accept-Encoding gzip = %d %q, want 200 with read_a only", resp.StatusCode, body)
	}
}

// decoded is body as sent before the Content-Encoding gzip of resp, if
// it has one.
func decoded(t *testing.T, resp *http.Response, body string) string {
	t.Helper()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		return body
	}
	zr, err := gzip.NewReader(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(zr)
	return string(b)
}

// TestToolsListEvasions: upstream answers shaped to slip a tools/list
// past the filter (odd SSE framing, case variants, ids that match another
// request) never show a filtered-out tool to the client.
func TestToolsListEvasions(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"},{"name":"read_a"}]}}`
	sse := func(chunks ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, c := range chunks {
				io.WriteString(w, c)
				w.(http.Flusher).Flush()
			}
		}
	}
	jsonAnswer := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}
	}
	tests := []struct {
		name    string
		request string
		answer  http.HandlerFunc
	}{
		{"SSE CRLF", "", sse("data: " + list + "\r\n\r\n")},
		{"SSE lone CR", "", sse("data: " + list + "\r\r")},
		{"SSE BOM, no space", "", sse("\ufeffdata:" + list + "\n\n")},
		{"SSE data split over lines", "", sse("data: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: \"result\":{\"tools\":[{\"name\":\"delete_all\"}]}}\n\n")},
		{"SSE event split across writes", "", sse("id: 1\nevent: x\nda", "ta: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\"", ":\"delete_all\"}]}}\r", "\n\r\n")},
		{"SSE batch in one event", "", sse("data: [" + list + "]\n\n")},
		{"SSE answer without a blank line", "", sse("data: " + list + "\n")},
		{"JSON Tools variant", "", jsonAnswer(`{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"delete_all"}]}}`)},
		{"JSON tool Name variant", "", jsonAnswer(`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"Name":"delete_all","name":"read_a"}]}}`)},
		{"JSON escaped tools member", "", jsonAnswer(`{"jsonrpc":"2.0","id":1,"result":{"t\u006fols":[{"name":"delete_all"}]}}`)},
		{"JSON batch answer to one request", "", jsonAnswer(`[` + list + `,` + list + `]`)},
		{"batch: duplicate ids",
			`[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
			jsonAnswer(`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"}]}}]`)},
		{"batch: answer to the notification",
			`[{"jsonrpc":"2.0","method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"ping"}]`,
			jsonAnswer(`[{"jsonrpc":"2.0","id":2,"result":{}},{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"delete_all"}]}}]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), tt.answer)
			req := tt.request
			if req == "" {
				req = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
			}
			resp := h.do(t, call{body: req, token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-03-26"}})
			body := readBody(t, resp)
			if strings.Contains(body, "delete_all") {
				t.Errorf("answer = %d %q, want delete_all filtered out", resp.StatusCode, body)
			}
		})
	}
}

// TestReadContentsFiltered: a resources/read answer may hold contents of
// other URIs than the one read (a collection resolving into its items, a
// pattern MCP supports), so the contents of a URI the caller's rules
// refuse are taken out, as a tools/list answer's tools are: with
// file:/// open to files:read and file:///secret/ needing files:secret, a
// read of file:///docs/ that the upstream answered with the contents of
// file:///secret/key handed them to a caller without files:secret. A
// content the gateway cannot judge (no uri, a uri that is not a string,
// a member a client may read as uri or contents) fails the answer (502).
func TestReadContentsFiltered(t *testing.T) {
	const secret = `{"uri":"file:///secret/key","text":"TOPSECRET"}`
	const public = `{"uri":"file:///docs/a","text":"public"}`
	tests := []struct {
		name     string
		contents string // result.contents' items, or the whole result when it starts with {
		scope    string
		status   int
		want     string // in the answer ("" when refused)
	}{
		{"another URI's contents", public + `,` + secret, "mcp files:read", 200, "public"},
		{"only another URI's", secret, "mcp files:read", 200, `"contents":[]`},
		{"dot segments", public + `,{"uri":"file:///docs/../secret/key","text":"TOPSECRET"}`, "mcp files:read", 200, "public"},
		{"case of the scheme", public + `,{"uri":"FILE:///secret/key","text":"TOPSECRET"}`, "mcp files:read", 200, "public"},
		{"URI variant", public + `,{"URI":"file:///secret/key","text":"TOPSECRET"}`, "mcp files:read", 502, ""},
		{"uri and a variant", `{"uri":"file:///docs/b","u_ri":"file:///secret/key","text":"TOPSECRET"}`, "mcp files:read", 502, ""},
		{"no uri", `{"text":"TOPSECRET"}`, "mcp files:read", 502, ""},
		{"uri not a string", `{"uri":["file:///secret/key"],"text":"TOPSECRET"}`, "mcp files:read", 502, ""},
		{"item not an object", `"TOPSECRET"`, "mcp files:read", 502, ""},
		{"Contents variant", `{"contents":[` + public + `],"Contents":[` + secret + `]}`, "mcp files:read", 502, ""},
		// Go's decoders read "Result" as the result when no "result" is given.
		{"Result variant", `{"jsonrpc":"2.0","id":1,"Result":{"contents":[` + secret + `]}}`, "mcp files:read", 502, ""},
		// Go's json/v2, matching names without case, also ignores '_' and
		// '-': it reads "con_tents" as the contents.
		{"contents spelt with a separator", `{"jsonrpc":"2.0","id":1,"result":{"con_tents":[` + secret + `]}}`, "mcp files:read", 502, ""},
		{"contents spelt with an escaped separator", `{"jsonrpc":"2.0","id":1,"result":{"con\u005ftents":[` + secret + `]}}`, "mcp files:read", 502, ""},
		{"caller who may read both", public + `,` + secret, "mcp files:read files:secret", 200, "TOPSECRET"},
		// No rule covers db:, so a read of it is refused whatever the
		// scopes ("no rule"), and so are its contents.
		{"a URI no rule covers", public + `,{"uri":"db://h/secret","text":"TOPSECRET"}`, "mcp files:read files:secret", 200, "public"},
		{"a URI no rule covers, caller refused some", public + `,{"uri":"db://h/secret","text":"TOPSECRET"}`, "mcp files:read", 200, "public"},
	}
	for _, tt := range tests {
		for _, as := range []string{"json", "events"} {
			t.Run(tt.name+" "+as, func(t *testing.T) {
				result := `{"contents":[` + tt.contents + `]}`
				if strings.HasPrefix(tt.contents, "{\"contents\"") {
					result = tt.contents
				}
				answer := `{"jsonrpc":"2.0","id":1,"result":` + result + `}`
				if strings.HasPrefix(tt.contents, "{\"jsonrpc\"") {
					answer = tt.contents
				}
				h := newHarness(t, testConfig(t), answerAs(as, answer))
				c := claims()
				c["scope"] = tt.scope
				resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///docs/"}}`, token: mint(t, c),
					headers: map[string]string{"MCP-Protocol-Version": "2025-11-25", "Accept-Encoding": "gzip"}})
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				body := string(b)
				// An event that cannot be checked ends the stream: the
				// client does not take it for a complete answer.
				if aborted := err != nil; as == "events" && aborted != (tt.status == 502) {
					t.Fatalf("reading the stream: %v, want aborted %v", err, tt.status == 502)
				}
				body = decoded(t, resp, body)
				if tt.want != "TOPSECRET" && strings.Contains(body, "TOPSECRET") {
					t.Fatalf("answer = %d %s, want file:///secret/key's contents kept from a caller without files:secret", resp.StatusCode, body)
				}
				if as == "json" && resp.StatusCode != tt.status || tt.want != "" && !strings.Contains(body, tt.want) {
					t.Errorf("answer = %d %s, want %d with %s", resp.StatusCode, body, tt.status, tt.want)
				}
			})
		}
	}
}

// TestReadContentsFilteredOnResume: a resumed stream (GET with
// Last-Event-ID) replays the events after the one named, the answer to a
// resources/read among them (a 2025-11-25 server may close the read's
// stream after its priming event and answer on the resumption), so its
// contents are checked there too: a read answer replayed there handed
// file:///secret/key's text to a caller without files:secret.
func TestReadContentsFilteredOnResume(t *testing.T) {
	const answer = `{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"file:///docs/a","text":"public"},{"uri":"file:///secret/key","text":"TOPSECRET"}]}}`
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "id: s1_1\nevent: message\ndata: "+answer+"\n\n"+
			"id: s1_2\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"x\"}}\n\n")
	})
	for _, tt := range []struct {
		scope string
		want  string
	}{
		{"mcp files:read", "public"},
		{"mcp files:read files:secret", "TOPSECRET"},
	} {
		c := claims()
		c["scope"] = tt.scope
		token := mint(t, c)
		resp := h.do(t, call{method: http.MethodGet, token: token, headers: map[string]string{
			"Mcp-Session-Id": sessionFor(t, h.g, token), "MCP-Protocol-Version": "2025-11-25", "Last-Event-ID": "s1_0"}})
		body := readBody(t, resp)
		if tt.want != "TOPSECRET" && strings.Contains(body, "TOPSECRET") {
			t.Fatalf("%s: resumed stream = %d %s, want file:///secret/key's contents kept from a caller without files:secret", tt.scope, resp.StatusCode, body)
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, tt.want) || !strings.Contains(body, "notifications/message") {
			t.Errorf("%s: resumed stream = %d %s, want 200 with %s and the notification", tt.scope, resp.StatusCode, body, tt.want)
		}
	}
}

// TestEmbeddedResourcesAnyType: an answer of a type no SDK reads as JSON
// (text/plain, none) is read by a client that takes every answer that is
// not an event stream for JSON (requests' json() reads any type): with
// resource rules, its embedded resources are checked as a JSON answer's,
// and one that may carry them but is not JSON is refused; one that names
// none, a notification's 202 "Accepted", passes as it came.
func TestEmbeddedResourcesAnyType(t *testing.T) {
	const answer = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"file:///secret/key","text":"TOPSECRET"}}]}}`
	const utf7Answer = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"+AHI-esource","+AHI-esource":{"uri":"file:///secret/key","text":"TOPSECRET"}}]}}`
	tests := []struct {
		ct           []string
		status       int
		body         string
		wantStatus   int
		want, refuse string
	}{
		{[]string{"text/plain"}, 200, answer, 200, "withheld", "TOPSECRET"},
		{[]string{"text/html"}, 200, answer, 200, "withheld", "TOPSECRET"},
		{[]string{"application/octet-stream"}, 200, answer, 200, "withheld", "TOPSECRET"},
		{nil, 200, answer, 200, "withheld", "TOPSECRET"},
		{[]string{"text/plain"}, 202, answer, 202, "withheld", "TOPSECRET"},
		{[]string{"text/plain"}, 200, "resource: " + answer, 502, "", "TOPSECRET"},
		{[]string{"text/plain; charset=utf-8"}, 202, "Accepted", 202, "Accepted", ""},
		// requests' json() decodes the body in the charset the type
		// names: in UTF-7 "+AHI-esource" is "resource".
		{[]string{"text/plain; charset=utf-7"}, 200, utf7Answer, 502, "", "TOPSECRET"},
		{[]string{"application/octet-stream; charset=UTF-7"}, 200, utf7Answer, 502, "", "TOPSECRET"},
		{[]string{`text/plain; x="; charset=utf-7"`}, 200, utf7Answer, 502, "", "TOPSECRET"},
		{[]string{"text/plain; charset=iso-8859-1"}, 202, "", 202, "", ""},
		{nil, 200, "", 200, "", ""},
	}
	for _, tt := range tests {
		// A 2026-07-28 call's answer is read for its request state too
		// (rewritesOther), and was passed unread where it was not JSON.
		for _, rev := range []string{"2025-11-25", "2026-07-28"} {
			request, headers, answer := toolCall("read_a"), map[string]string{"MCP-Protocol-Version": rev}, tt.body
			if rev == "2026-07-28" {
				request, headers = roundTrip("tools/call", "read_a", nil)
				answer = strings.Replace(answer, `"id":1`, `"id":2`, 1)
			}
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = tt.ct
				w.WriteHeader(tt.status)
				io.WriteString(w, answer)
			})
			c := claims()
			c["scope"] = "mcp tools:read files:read"
			resp := h.do(t, call{body: request, token: mint(t, c), headers: headers})
			body := readBody(t, resp)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(body, tt.want) || tt.refuse != "" && strings.Contains(body, tt.refuse) {
				t.Errorf("%s: %d %q %.40q = %d %.160q, want %d with %q", rev, tt.status, tt.ct, answer, resp.StatusCode, body, tt.wantStatus, tt.want)
			}
		}
	}
}

// TestEmbeddedResourcesChecked: with resource rules configured, the
// resources an answer embeds are checked as a resources/read of their
// URI would be. A tool's or prompt's result may embed a resource's
// contents (type "resource"), a read's answer may come on another
// request's stream or on a GET stream, and a resources/updated
// notification names a URI: a caller without files:secret got
// file:///secret/key's text through a tool call, a prompt, or a read
// answer sent on the stream of a tool call or the GET stream. Such an
// embedded resource is replaced by a text content, such contents taken
// out, such a notification dropped; a resource_link (a URI only)
// passes; what cannot be judged fails the answer (502, a stream ended).
func TestEmbeddedResourcesChecked(t *testing.T) {
	const secret = `{"type":"resource","resource":{"uri":"file:///secret/key","text":"TOPSECRET"}}`
	const public = `{"type":"resource","resource":{"uri":"file:///docs/a","text":"public"}}`
	const secretRead = `{"jsonrpc":"2.0","id":7,"result":{"contents":[{"uri":"file:///secret/key","text":"TOPSECRET"}]}}`
	tool := func(content string) string {
		return `{"jsonrpc":"2.0","id":1,"result":{"content":[` + content + `]}}`
	}
	prompt := func(content string) string {
		return `{"jsonrpc":"2.0","id":1,"result":{"messages":[{"role":"user","content":` + content + `}]}}`
	}
	const promptGet = `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summary"}}`
	samplingRequest := func(content string) string {
		return `{"method":"sampling/createMessage","params":{"messages":[{"role":"user","content":` + content + `}],"maxTokens":10}}`
	}
	sampling := func(content string) string {
		return `{"jsonrpc":"2.0","id":"s1",` + samplingRequest(content)[1:]
	}
	tests := []struct {
		name    string
		request string // "" for a GET stream
		answer  string // messages, each its own event ("\n" between) when events
		status  int
		want    string // in the answer
	}{
		{"tool result", toolCall("read_a"), tool(`{"type":"text","text":"see"},` + secret + `,` + public), 200, "public"},
		{"tool result, resource_link passes", toolCall("read_a"), tool(`{"type":"resource_link","uri":"file:///secret/key","name":"key"}`), 200, "resource_link"},
		{"tool result, type missing", toolCall("read_a"), tool(`{"resource":{"uri":"file:///secret/key","text":"TOPSECRET"}}`), 200, "withheld"},
		{"tool result, no uri", toolCall("read_a"), tool(`{"type":"resource","resource":{"text":"TOPSECRET"}}`), 502, ""},
		{"tool result, Resource variant", toolCall("read_a"), tool(`{"type":"resource","resource":{"uri":"file:///docs/a","text":"x"},"Resource":{"uri":"file:///secret/key","text":"TOPSECRET"}}`), 502, ""},
		{"tool result, Content variant", toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"result":{"content":[],"Content":[` + secret + `]}}`, 502, ""},
		{"tool result, a content not an object", toolCall("read_a"), tool(`"a resource: TOPSECRET"`), 502, ""},
		// Tool output may hold any JSON: an answer the strict reading
		// refuses is checked as encoding/json reads it.
		{"tool result, a member twice in structuredContent", toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"result":{"content":[` + secret + `],"structuredContent":{"id":1,"ID":2}}}`, 200, "withheld"},
		// The Go SDK's client reads the first JSON value of a message
		// and ignores what follows it (segmentio's Decoder.Decode):
		// an answer that is not JSON as a whole is still read.
		{"tool result, text after it", toolCall("read_a"), tool(secret) + " x", 502, ""},
		{"tool result, NUL after it", toolCall("read_a"), tool(secret) + "\x00", 502, ""},
		{"tool result, a second message after it", toolCall("read_a"), tool(secret) + tool(public), 502, ""},
		{"read answer on a tool call's stream, text after it", toolCall("read_a"), secretRead + " x", 502, ""},
		{"read answer on a tool call's stream, NUL after it", toolCall("read_a"), secretRead + "\x00", 502, ""},
		// The TypeScript SDK's client reads a JSON body with fetch's
		// json(), which drops a UTF-8 byte order mark before it.
		{"read answer on a tool call's stream, byte order mark before it", toolCall("read_a"), "\ufeff" + secretRead, 502, ""},
		// The Go SDK's client trims Unicode spaces around an event's data.
		{"read answer on a tool call's stream, no-break space before it", toolCall("read_a"), "\u00a0" + secretRead, 502, ""},
		{"sampling request, brace after it", "", sampling(`[{"type":"tool_result","toolUseId":"u1","content":[`+secret+`]}]`) + "}", 502, ""},
		{"tool result, uri twice", toolCall("read_a"), tool(`{"type":"resource","resource":{"uri":"file:///docs/a","uri":"file:///secret/key","text":"TOPSECRET"}}`), 200, "withheld"},
		{"prompt message", promptGet, prompt(secret), 200, "withheld"},
		{"prompt message, allowed", promptGet, prompt(public), 200, "public"},
		{"read answer on a tool call's stream", toolCall("read_a"), secretRead + "\n" + tool(`{"type":"text","text":"done"}`), 200, "done"},
		{"read answer on the GET stream", "", secretRead + "\n" + `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}`, 200, "notifications/message"},
		// The same contents reach the client inside other shapes: a
		// server's sampling request (a tool_result's content, in a
		// message's content or a list of them), an input-required
		// result's inputRequests (2026-07-28), and a task's result in a
		// tasks/get answer or notifications/tasks (the Tasks extension).
		{"sampling request on a tool call's stream", toolCall("read_a"), sampling(`[{"type":"tool_result","toolUseId":"u1","content":[`+secret+`]}]`) + "\n" + tool(`{"type":"text","text":"done"}`), 200, "withheld"},
		{"sampling request on the GET stream", "", sampling(`{"type":"tool_result","toolUseId":"u1","content":[` + secret + `,` + public + `]}`), 200, "public"},
		{"sampling request, a tool_result's content not an array", "", sampling(`[{"type":"tool_result","toolUseId":"u1","content":` + secret + `}]`), 502, ""},
		{"sampling request, tool_result in a tool_result", "", sampling(`[{"type":"tool_result","toolUseId":"u1","content":[{"type":"tool_result","toolUseId":"u2","content":[` + secret + `]}]}]`), 502, ""},
		{"input required result", toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"s":` + samplingRequest(`[{"type":"tool_result","toolUseId":"u1","content":[`+secret+`]}]`) + `},"requestState":""}}`, 200, "withheld"},
		{"input required result, Params variant", toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{"s":{"method":"sampling/createMessage","params":{"messages":[]},"Params":{"messages":[{"role":"user","content":{"type":"tool_result","toolUseId":"u1","content":[` + secret + `]}}]}}}}}`, 502, ""},
		{"sampling request, Params variant", "", `{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","Params":{"messages":[{"role":"user","content":{"type":"tool_result","toolUseId":"u1","content":[` + secret + `]}}]}}`, 502, ""},
		{"task notification, Params variant", "", `{"jsonrpc":"2.0","method":"notifications/tasks","Params":{"taskId":"t1","status":"completed","result":{"content":[` + secret + `]}}}`, 502, ""},
		{"tool result, Result variant", toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"Result":{"content":[` + secret + `]}}`, 502, ""},
		{"task result", toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"result":{"taskId":"t1","status":"completed","result":{"content":[` + secret + `]}}}`, 200, "withheld"},
		{"task notification", "", `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t1","status":"completed","result":{"content":[` + secret + `,` + public + `]}}}`, 200, "public"},
		{"task notification, input required", "", `{"jsonrpc":"2.0","method":"notifications/tasks","params":{"taskId":"t1","status":"input_required","inputRequests":{"s":` + samplingRequest(`{"type":"tool_result","toolUseId":"u1","content":[`+secret+`,`+public+`]}`) + `}}}`, 200, "public"},
		{"updated notification on the GET stream", "", `{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///secret/key","title":"TOPSECRET"}}` + "\n" +
			`{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///docs/a"}}`, 200, "file:///docs/a"},
	}
	for _, tt := range tests {
		for _, as := range []string{"json", "events"} {
			if as == "json" && (tt.request == "" || strings.Contains(tt.answer, "\n")) {
				continue // a JSON answer is one message
			}
			t.Run(tt.name+" "+as, func(t *testing.T) {
				h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
					if as == "events" {
						w.Header().Set("Content-Type", "text/event-stream")
						for i, m := range strings.Split(tt.answer, "\n") {
							fmt.Fprintf(w, "id: e%d\nevent: message\ndata: %s\n\n", i, m)
						}
						return
					}
					writeJSONAnswer(w, r, tt.answer)
				})
				c := claims()
				c["scope"] = "mcp tools:read prompts:read files:read"
				token := mint(t, c)
				hd := map[string]string{"MCP-Protocol-Version": "2025-11-25", "Accept-Encoding": "gzip", "Mcp-Session-Id": sessionFor(t, h.g, token)}
				cl := call{body: tt.request, token: token, headers: hd}
				if tt.request == "" {
					cl.method = http.MethodGet
				}
				resp := h.do(t, cl)
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				body := decoded(t, resp, string(b))
				if strings.Contains(body, "TOPSECRET") {
					t.Fatalf("answer = %d %s, want file:///secret/key's contents kept from a caller without files:secret", resp.StatusCode, body)
				}
				if aborted := err != nil; as == "events" && aborted != (tt.status == 502) {
					t.Fatalf("reading the stream: %v, want aborted %v", err, tt.status == 502)
				}
				if as == "json" && resp.StatusCode != tt.status || tt.want != "" && !strings.Contains(body, tt.want) {
					t.Errorf("answer = %d %s, want %d with %s", resp.StatusCode, body, tt.status, tt.want)
				}
			})
		}
	}
	// The answer is read as with pinning: the client's Accept-Encoding
	// is not forwarded, and an answer compressed all the same is refused,
	// not passed unread.
	answer := tool(secret)
	var encoding string
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_a")))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
	r.Header.Set("Accept-Encoding", "gzip")
	w := httptest.NewRecorder()
	newGateway(t, testConfig(t)).Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
		encoding = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		_, err := io.WriteString(w, "\x1f\x8b compressed "+answer)
		return err
	}))
	if w.Code != http.StatusBadGateway || strings.Contains(w.Body.String(), "TOPSECRET") || encoding != "" {
		t.Errorf("answer compressed though not asked = %d %.80q (upstream Accept-Encoding %q), want 502 and none forwarded", w.Code, w.Body.String(), encoding)
	}
	// Without resource rules, answers are not read for resources: a
	// tool's result passes as the upstream wrote it.
	h := newHarness(t, unreadConfig(t), func(w http.ResponseWriter, r *http.Request) { writeJSONAnswer(w, r, answer) })
	resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, claims())})
	if body := readBody(t, resp); resp.StatusCode != 200 || body != answer {
		t.Errorf("without resource rules: answer = %d %s, want 200 %s", resp.StatusCode, body, answer)
	}
}

// TestUpstreamSetCookie: an MCP server cannot set cookies through the
// gateway (on a host shared with the issuer they would be the issuer's),
// nor clear them and the site's storage (Clear-Site-Data: the issuer's
// login session, a browser client's tokens), in a header or a trailer.
func TestUpstreamSetCookie(t *testing.T) {
	for _, late := range []bool{false, true} {
		h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
			http.SetCookie(w, &http.Cookie{Name: "__Host-mcp_auth_session", Value: "attacker", Path: "/", Secure: true})
			w.Header().Set("Content-Type", "application/json")
			if late {
				w.Header().Set("Trailer", "Clear-Site-Data")
			} else {
				w.Header().Set("Clear-Site-Data", `"cookies", "storage"`)
			}
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
			if late {
				w.Header().Set("Clear-Site-Data", `"cookies", "storage"`)
			}
		})
		for _, body := range []string{toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`} {
			resp := h.do(t, call{body: body, token: mint(t, claims())})
			readBody(t, resp)
			if v := resp.Header.Values("Set-Cookie"); resp.StatusCode != 200 || len(v) != 0 {
				t.Errorf("answer to %s = %d, Set-Cookie %q, want 200 without cookies", body, resp.StatusCode, v)
			}
			for _, hd := range []http.Header{resp.Header, resp.Trailer} {
				if v := hd.Values("Clear-Site-Data"); len(v) != 0 {
					t.Errorf("answer to %s (trailer %v): Clear-Site-Data %q reached the client", body, late, v)
				}
			}
		}
	}
}

// TestUpstreamReportingDropped: the upstream's NEL and Report-To never
// reach the client, in a header or as a trailer. A browser keeps a
// network error logging policy for the whole origin: on a host shared
// with the issuer an MCP server could have every request there reported
// to a collector of its own, the issuer's /authorize with its state and
// a browser client's redirect with its code (review s17-fresh F3).
func TestUpstreamReportingDropped(t *testing.T) {
	const (
		nel      = `{"report_to":"mcp","max_age":31536000,"include_subdomains":true,"success_fraction":1.0}`
		reportTo = `{"group":"mcp","max_age":31536000,"endpoints":[{"url":"https://evil.example/reports"}]}`
	)
	for _, late := range []bool{false, true} {
		h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if late {
				w.Header().Set("Trailer", "NEL, Report-To")
			} else {
				w.Header().Set("NEL", nel)
				w.Header().Set("Report-To", reportTo)
			}
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
			if late {
				w.Header().Set("NEL", nel)
				w.Header().Set("Report-To", reportTo)
			}
		})
		for _, body := range []string{toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`} {
			resp := h.do(t, call{body: body, token: mint(t, claims())})
			readBody(t, resp)
			if resp.StatusCode != 200 {
				t.Errorf("answer to %s = %d, want 200", body, resp.StatusCode)
			}
			for _, hd := range []http.Header{resp.Header, resp.Trailer} {
				for _, k := range []string{"NEL", "Report-To"} {
					if v := hd.Values(k); len(v) != 0 {
						t.Errorf("answer to %s (trailer %v): %s %q reached the client", body, late, k, v)
					}
				}
			}
		}
	}
}

// TestUpstreamHostFieldsDropped (review s17-fresh2): an upstream's
// Strict-Transport-Security and Alt-Svc apply in a browser to the whole
// host, the issuer's pages on a shared host included (max-age=0 lifts
// their HSTS policy), so they never reach the client, as header fields
// or trailers, held answers or not; the values the server and the
// operator set in front of the gateway (Caddy's Alt-Svc for HTTP/3, a
// header directive's HSTS) stay, alone.
func TestUpstreamHostFieldsDropped(t *testing.T) {
	const (
		hsts   = "max-age=63072000; includeSubDomains"
		altSvc = `h3=":443"; ma=2592000`
	)
	for _, tt := range []struct {
		name  string
		late  bool // the upstream sends them as trailers
		front bool // the operator set its own in front
		// early: the upstream sends a 103 first, with them ("fields") or
		// without ("plain"); after it httputil.ReverseProxy clears the
		// whole header, the operator's values among them, and
		// reverse_proxy ("caddy", copied here) puts back what the header
		// held before the 103's fields were added (review s17-fresh3 F1).
		early string
	}{
		{"header", false, false, ""},
		{"header, operator's in front", false, true, ""},
		{"trailer", true, false, ""},
		{"trailer, operator's in front", true, true, ""},
		{"103 first, operator's in front", false, true, "fields"},
		{"103 without them first, operator's in front", false, true, "plain"},
		{"103 first through reverse_proxy, operator's in front", false, true, "caddy"},
		{"103 first through reverse_proxy", false, false, "caddy"},
	} {
		h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			set := func() {
				w.Header().Set("Strict-Transport-Security", "max-age=0")
				w.Header().Set("Alt-Svc", `h2="evil.example:443"`)
			}
			switch tt.early {
			case "fields":
				w.Header().Set("Strict-Transport-Security", "max-age=1")
				w.Header().Set("Alt-Svc", `h2="early.example:443"`)
				w.WriteHeader(http.StatusEarlyHints)
			case "plain":
				w.Header().Set("Link", "</style.css>; rel=preload; as=style")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Del("Link")
			}
			if tt.late {
				w.Header().Set("Trailer", "Strict-Transport-Security, Alt-Svc")
			} else {
				set()
			}
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
			if tt.late {
				set()
			}
		})
		target, _ := url.Parse(h.up.srv.URL)
		var next Next = NextHandler(httputil.NewSingleHostReverseProxy(target))
		if tt.early == "caddy" {
			// reverse_proxy's Got1xxResponse, then its copyHeader of the
			// final answer's fields.
			next = NextFunc(func(w http.ResponseWriter, r *http.Request) error {
				h := w.Header()
				own := h.Clone()
				h.Add("Strict-Transport-Security", "max-age=1")
				h.Add("Alt-Svc", `h2="early.example:443"`)
				w.WriteHeader(http.StatusEarlyHints)
				clear(h)
				maps.Copy(h, own)
				h.Add("Content-Type", "application/json")
				h.Add("Strict-Transport-Security", "max-age=0")
				h.Add("Alt-Svc", `h2="evil.example:443"`)
				io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
				return nil
			})
		}
		h.front.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tt.front {
				w.Header().Set("Strict-Transport-Security", hsts)
				w.Header().Set("Alt-Svc", altSvc)
			}
			h.g.Serve(w, r, next)
		})
		for _, body := range []string{toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`} {
			resp := h.do(t, call{body: body, token: mint(t, claims())})
			readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: answer to %s = %d, want 200", tt.name, body, resp.StatusCode)
			}
			want := map[string][]string{"Strict-Transport-Security": nil, "Alt-Svc": nil}
			if tt.front {
				want = map[string][]string{"Strict-Transport-Security": {hsts}, "Alt-Svc": {altSvc}}
			}
			for k, w := range want {
				if v := resp.Header.Values(k); !slices.Equal(v, w) {
					t.Errorf("%s: answer to %s: %s %q, want %q", tt.name, body, k, v, w)
				}
				if v := resp.Trailer.Values(k); len(v) != 0 {
					t.Errorf("%s: answer to %s: %s %q as a trailer", tt.name, body, k, v)
				}
			}
		}
	}
}

// TestUpstreamAllowOriginReplaced: an MCP server that answers CORS
// itself (the TypeScript SDK's examples: cors() with origin '*') has
// its Access-Control-Allow-Origin added by reverse_proxy beside the
// gateway's, and a browser refuses an answer with two values (Fetch's
// CORS check reads them as one, "https://app.example.com, *"): browser
// clients on an allowed origin could read no answer. The gateway decides
// who may read (allowed_origins), so its value is the only one; without
// an Origin the upstream's passes, as no browser reads it.
func TestUpstreamAllowOriginReplaced(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.Header().Set("Access-Control-Expose-Headers", "Mcp-Session-Id")
		w.Header().Set("Access-Control-Allow-Credentials", "true")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
	})
	for _, body := range []string{toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`} {
		for _, origin := range []string{"https://app.example.com", "https://APP.example.com", ""} {
			c := call{body: body, token: mint(t, claims())}
			want := []string{"*"}
			if origin != "" {
				c.headers = map[string]string{"Origin": origin}
				want = []string{origin}
			}
			resp := h.do(t, c)
			readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("answer to %s from %q = %d, want 200", body, origin, resp.StatusCode)
			}
			if got := resp.Header.Values("Access-Control-Allow-Origin"); !slices.Equal(got, want) {
				t.Errorf("Access-Control-Allow-Origin of the answer to %s from %q = %q, want %q", body, origin, got, want)
			}
			// The gateway's preflight allows no credentials, nor may an
			// upstream's answer: the gateway decides who reads with what.
			if got := resp.Header.Values("Access-Control-Allow-Credentials"); len(got) != 0 {
				t.Errorf("Access-Control-Allow-Credentials of the answer to %s from %q = %q, want none", body, origin, got)
			}
		}
	}
}

// TestUpstreamChallengeDropped: an upstream's WWW-Authenticate never
// reaches the client, in a header or as a trailer (held answer or not),
// so an upstream cannot point clients at other protected-resource
// metadata and another authorization server.
func TestUpstreamChallengeDropped(t *testing.T) {
	const evil = `Bearer resource_metadata="https://evil.example/.well-known/oauth-protected-resource"`
	for _, tt := range []struct {
		name   string
		status int
		late   bool // sent after the body (trailer)
	}{
		{"401", http.StatusUnauthorized, false},
		{"403", http.StatusForbidden, false},
		{"200", http.StatusOK, false},
		{"200, trailer", http.StatusOK, true},
		{"401, trailer", http.StatusUnauthorized, true},
	} {
		for _, body := range []string{toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`} {
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				if tt.late {
					w.Header().Set("Trailer", "WWW-Authenticate")
				} else {
					w.Header().Set("WWW-Authenticate", evil)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
				if tt.late {
					w.Header().Set("WWW-Authenticate", evil)
				}
			})
			resp := h.do(t, call{body: body, token: mint(t, claims())})
			readBody(t, resp)
			for _, hd := range []http.Header{resp.Header, resp.Trailer} {
				if v := hd.Values("WWW-Authenticate"); len(v) != 0 {
					t.Errorf("%s answer to %.40s: the upstream's WWW-Authenticate reached the client: %q", tt.name, body, v)
				}
			}
		}
	}
}

// TestMayList: the pre-check that spares the strict read of answers
// never misses a spelling of a list's member ("tools", "prompts",
// "resources", "resourceTemplates") a lenient decoder matches.
func TestMayList(t *testing.T) {
	for s, want := range map[string]bool{
		"tools": true, "TOOLS": true, "tOoLs": true, "tool\u017f": true, "xtoolsx": true, `"t\u006fols"`: true, `\u0074ools`: true,
		"tool_s": true, "prompts": true, "PROMPT-S": true, "reſources": true, "Resource_Templates": true, `"pr\u006fmpts"`: true,
		"tool": false, "tool ": false, "ools": false, "l": false, "": false, "tooltip": false, "a tool, listed": false,
		`\u003cp\u003e`: false, "prompt s": false, "resour ce": false,
	} {
		if got := mayList(s); got != want {
			t.Errorf("mayList(%q) = %v, want %v", s, got, want)
		}
	}
}

// TestTrailerRedirectRefused: an upstream redirect is refused (502)
// because clients follow it to an answer the gateway never reads
// (TestPinRedirectRefused), and a held JSON answer's header, which goes
// out only at finish, after reverse_proxy (and httputil.ReverseProxy)
// copied the upstream's trailers into the header map, carries none of
// them: a 3xx whose Location came as a trailer went out as a redirect,
// and the client followed it to an unfiltered, unpinned list (review
// s13-sse F0).
func TestTrailerRedirectRefused(t *testing.T) {
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, changedToolsList)
	}))
	defer evil.Close()
	trailerRedirect := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Trailer", "Location")
		w.WriteHeader(http.StatusTemporaryRedirect)
		io.WriteString(w, `{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}`)
		w.Header().Set("Location", evil.URL+"/mcp")
	}
	// Pinning on: a tools/call and a tools/list.
	st := newPinnedStage(t)
	st.answerWith(trailerRedirect)
	for _, c := range []call{st.call(http.MethodPost), {body: `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`, token: st.token, headers: st.headers}} {
		resp := st.h.do(t, c) // the harness's client follows redirects, as the SDKs' do
		b := readBody(t, resp)
		if strings.Contains(b, "evil.example") {
			t.Errorf("%.40s: the client followed a trailer Location to an unread answer: %d %.120q", c.body, resp.StatusCode, b)
		}
	}
	// Without pinning, a tools/list's answer is held to be filtered too.
	h := newHarness(t, testConfig(t), trailerRedirect)
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`, token: mint(t, claims())})
	if b := readBody(t, resp); strings.Contains(b, "evil.example") {
		t.Errorf("tools/list (no pinning): the client followed a trailer Location to an unfiltered list: %d %.120q", resp.StatusCode, b)
	}
	// A redirect in the header gets the 502, counted as a refusal: the
	// gateway answered instead of the upstream.
	cfg := testConfig(t)
	m := &countingMetrics{counts: map[string]int{}}
	cfg.Metrics = m
	h = newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, evil.URL+"/mcp", http.StatusTemporaryRedirect)
	})
	resp = h.do(t, call{body: `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`, token: mint(t, claims())})
	if b := readBody(t, resp); resp.StatusCode != http.StatusBadGateway {
		t.Errorf("tools/list answered with a redirect: got %d %.120q, want 502", resp.StatusCode, b)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counts["refusal refused"] != 1 {
		t.Errorf("metrics %v, want the 502 counted as refusal \"refused\"", m.counts)
	}
}

// TestHeldAnswersBounded: what the gateways of a process hold of answers
// at once is bounded (maxHeldBytes) and, past half of it, shared among
// principals (heldShares). A principal that stalls its answers (a caller
// that never reads, review s14-fresh F1) takes half the bound at most:
// its further answers are refused (no tool shown), while another
// principal's answer is still filtered and answered; an event stream's
// unfinished event past a share ends the stream; nothing stays counted
// once answers are done.
func TestHeldAnswersBounded(t *testing.T) {
	held := newHeldShares(4 << 20) // half 2 MiB, a share 512 KiB
	const piece = 500 << 10
	stop := make(chan struct{})
	release := map[string]chan struct{}{}
	for _, id := range []string{"m1", "m2", "m3", "m4", "m5", "b1"} {
		release[id] = make(chan struct{})
	}
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		var m struct{ ID string }
		body, _ := io.ReadAll(r.Body)
		json.Unmarshal(body, &m)
		if m.ID == "sse" {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, `data: {"jsonrpc":"2.0","id":"sse","result":{"tools":[{"name":"read_a","description":"`)
			for range 40 { // 640 KiB of one unfinished event
				io.WriteString(w, strings.Repeat("y", 16<<10))
				w.(http.Flusher).Flush()
			}
			io.WriteString(w, `"}]}}`+"\n\n")
			return
		}
		size := piece
		if m.ID == "b1" {
			size = 100 << 10
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":"`+m.ID+`","result":{"tools":[{"name":"read_a","description":"`+strings.Repeat("x", size))
		w.(http.Flusher).Flush()
		select {
		case <-release[m.ID]:
		case <-stop:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, strings.Repeat("x", size)+`"},{"name":"delete_all"}]}}`)
	})
	h.g.held = held
	t.Cleanup(func() { close(stop) }) // before the harness's servers close
	tokens := map[byte]string{}
	for _, who := range []string{"mallory", "bob"} {
		c := claims()
		c["sub"] = who
		tokens[who[0]] = mint(t, c)
	}
	type answer struct {
		status int
		body   string
		err    error
	}
	answers := map[string]chan answer{}
	send := func(id string) {
		ch := make(chan answer, 1)
		answers[id] = ch
		go func() {
			resp, err := h.try(call{body: `{"jsonrpc":"2.0","id":"` + id + `","method":"tools/list"}`, token: tokens[id[0]]})
			if err != nil {
				ch <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			ch <- answer{resp.StatusCode, string(body), err}
		}()
	}
	// Refused: a 502, or (as reverse_proxy aborts the connection when
	// its write fails) no answer at all; never a tool.
	refused := func(id string) {
		t.Helper()
		select {
		case a := <-answers[id]:
			if a.err == nil && a.status != http.StatusBadGateway || strings.Contains(a.body, "read_a") || strings.Contains(a.body, "delete_all") {
				t.Errorf("tools/list %s past its share = %d %.200s (%v), want 502 showing no tool", id, a.status, a.body, a.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("tools/list %s past its share: no answer, held %d", id, held.bytes())
		}
	}
	waitHeld := func(atLeast int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); held.bytes() < atLeast; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("held bytes = %d, want %d or more", held.bytes(), atLeast)
			}
		}
	}
	// Mallory's answers stall: four first pieces are held (below half of
	// the bound a principal grows as it likes), the fifth takes mallory
	// past half and is refused.
	for i, id := range []string{"m1", "m2", "m3", "m4"} {
		send(id)
		waitHeld(int64(i+1) * piece)
	}
	send("m5")
	refused("m5")
	mallory := held.bytes()
	if mallory > held.max/2+64<<10 {
		t.Fatalf("held bytes with mallory's stalled lists = %d, want about half the bound", mallory)
	}
	// Bob's answer still fits: filtered and answered.
	send("b1")
	waitHeld(mallory + 100<<10)
	close(release["b1"])
	b := <-answers["b1"]
	if b.err != nil || b.status != http.StatusOK || !strings.Contains(b.body, "read_a") || strings.Contains(b.body, "delete_all") {
		t.Errorf("bob's tools/list = %d %.200s (%v), want 200 with read_a only", b.status, b.body, b.err)
	}
	// Bob's event past a share ends its stream undelivered.
	resp, err := h.try(call{body: `{"jsonrpc":"2.0","id":"sse","method":"tools/list"}`, token: tokens['b']})
	if err == nil {
		body, _ := io.ReadAll(resp.Body) // the stream is cut
		resp.Body.Close()
		if strings.Contains(string(body), "read_a") || strings.Contains(string(body), "yyyy") {
			t.Errorf("stream with an event past the share delivered %d bytes of it", strings.Count(string(body), "y"))
		}
	}
	// Mallory's held lists go on (the first past its share; what comes
	// once the holding is below half again grows as it likes).
	close(release["m1"])
	refused("m1")
	for _, id := range []string{"m2", "m3", "m4"} {
		close(release[id])
		<-answers[id]
	}
	for deadline := time.Now().Add(10 * time.Second); held.bytes() != 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("held bytes = %d after every answer, want 0", held.bytes())
		}
	}
}

// TestHeldAnswerWriteDeadline: a held answer its caller does not read (a
// JSON answer, or an event that came in pieces) is given up after
// heldWriteTime, and stops being counted.
func TestHeldAnswerWriteDeadline(t *testing.T) {
	if got, want := heldWriteTime(16<<20), 30*time.Second+128*time.Second; got != want {
		t.Errorf("heldWriteTime(16 MiB) = %v, want 30 s and a second per 128 KiB, %v", got, want)
	}
	held := newHeldShares(maxHeldBytes)
	const size = 16<<20 - 100
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		sse := strings.Contains(r.Header.Get("X-Test"), "sse")
		if sse {
			// One event in two pieces: held by the splitter until whole.
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: ")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_a","description":"`)
		w.(http.Flusher).Flush()
		io.WriteString(w, strings.Repeat("d", size)+`"}]}}`)
		if sse {
			io.WriteString(w, "\n\n")
		}
	})
	h.g.held, h.g.heldWriteTime = held, func(int) time.Duration { return 300 * time.Millisecond }
	addr := strings.TrimPrefix(h.front.URL, "http://")
	token := mint(t, claims())
	for _, kind := range []string{"json", "sse"} {
		t.Run(kind, func(t *testing.T) {
			conn := dialSmallReceiveBuffer(t, addr)
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
			fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nX-Test: %s\r\nContent-Length: %d\r\n\r\n%s",
				addr, token, kind, len(body), body)
			// Never read: the answer is held, then given up.
			for deadline := time.Now().Add(60 * time.Second); held.bytes() < size; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("held bytes = %d, want the whole answer", held.bytes())
				}
			}
			for deadline := time.Now().Add(60 * time.Second); held.bytes() != 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("held bytes = %d while the caller reads nothing, want 0 after the write deadline", held.bytes())
				}
			}
		})
	}
}

// TestHeldShares: the arithmetic of heldShares. Below half the bound a
// principal grows as it likes; past it a principal holds at most an
// eighth, the first heldFirst bytes of one holding nothing are held
// whenever they fit, k principals each growing as far as they may stop
// short of the bound so that a newcomer's answer still fits, and nothing
// passes the bound.
func TestHeldShares(t *testing.T) {
	if maxHeldBytes != 256<<20 || heldShare != 8 || heldFirst != 64<<10 {
		t.Fatalf("maxHeldBytes, heldShare, heldFirst = %d, %d, %d; README (Tool pinning) says at most 256 MiB, an eighth of it for one principal, its first 64 KiB held whenever they fit", maxHeldBytes, heldShare, heldFirst)
	}
	const maxHeldBytes int64 = 16 << 20
	share := maxHeldBytes / heldShare
	s := newHeldShares(maxHeldBytes)
	if !s.grow("a", maxHeldBytes/2) || s.grow("a", 1) {
		t.Fatalf("alone: half the bound, then 1 more: want held, then refused")
	}
	if !s.grow("a", -maxHeldBytes/2) || s.total != 0 || len(s.by) != 0 {
		t.Fatalf("after release: total %d, %d holders, want none", s.total, len(s.by))
	}
	for _, k := range []int{1, 8, 32, 200} {
		s := newHeldShares(maxHeldBytes)
		// Each floods in 32 KiB pieces, in turns, as far as it may.
		for grew := true; grew; {
			grew = false
			for i := range k {
				if s.grow(strconv.Itoa(i), 32<<10) {
					grew = true
				}
				if s.total > maxHeldBytes {
					t.Fatalf("%d holders: total %d over the bound", k, s.total)
				}
			}
		}
		for h, n := range s.by {
			if n > max(share, maxHeldBytes/2/int64(k)+32<<10) {
				t.Errorf("%d holders flooding: %s holds %d, past its share", k, h, n)
			}
		}
		// A newcomer's answer of what is left over 8 still fits.
		free := maxHeldBytes - s.total
		want := free / heldShare
		if free < maxHeldBytes/40 || !s.grow("new", 32<<10) || !s.grow("new", want-32<<10) {
			t.Errorf("%d holders flooding left %d: a newcomer could not hold %d", k, free, want)
		}
	}
	// Past half, a first piece is held whenever it fits up to heldFirst,
	// and any piece only within the bound.
	s = newHeldShares(maxHeldBytes)
	for i := 0; s.grow(strconv.Itoa(i), heldFirst); i++ {
	}
	if s.total > maxHeldBytes || s.total < maxHeldBytes-heldFirst {
		t.Errorf("first pieces of %d: total %d, want the bound filled", heldFirst, s.total)
	}
	s = &heldShares{max: maxHeldBytes, by: map[string]int64{"a": maxHeldBytes - 4*heldFirst}, total: maxHeldBytes - 4*heldFirst}
	if s.grow("b", heldFirst+1) || !s.grow("c", heldFirst) {
		t.Errorf("with %d left, a first piece of heldFirst+1 held, or one of heldFirst refused", 4*heldFirst)
	}
}

// TestHeldHolderIsThePrincipal: the answers of one user through several
// clients are one holder, as the README says; another user, or a client
// named as the user, is another.
func TestHeldHolderIsThePrincipal(t *testing.T) {
	held := newHeldShares(maxHeldBytes)
	holderOf := func(p *principal) string {
		p.holder = holderOf(p) // as principalOf sets it
		rw := &responseWriter{g: &Gateway{held: held}, x: &exchange{p: p}}
		if !rw.hold(1) {
			t.Fatal("hold(1) refused")
		}
		defer rw.hold(0)
		return rw.holding.holder
	}
	alice1 := holderOf(&principal{issuer: "https://as", subject: "alice", clientID: "app1"})
	alice2 := holderOf(&principal{issuer: "https://as", subject: "alice", clientID: "app2"})
	bob := holderOf(&principal{issuer: "https://as", subject: "bob", clientID: "app1"})
	client := holderOf(&principal{issuer: "https://as", subject: "alice", clientID: "alice", principalType: "client"})
	other := holderOf(&principal{issuer: "https://other", subject: "alice", clientID: "app1"})
	if alice1 != alice2 || alice1 == bob || alice1 == client || alice1 == other {
		t.Errorf("holders: alice via app1 %q, via app2 %q, bob %q, client alice %q, alice of another issuer %q", alice1, alice2, bob, client, other)
	}
	if n := held.bytes(); n != 0 {
		t.Errorf("held bytes after = %d", n)
	}
}

// deadlineRecorder records the write deadlines, writes and flushes a
// handler makes through http.ResponseController.
type deadlineRecorder struct {
	http.ResponseWriter
	calls []string
	start time.Time
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	if t.IsZero() {
		d.calls = append(d.calls, "deadline none")
	} else {
		d.calls = append(d.calls, "deadline +"+t.Sub(d.start).Round(time.Second).String())
	}
	return nil
}

func (d *deadlineRecorder) Flush() { d.calls = append(d.calls, "flush") }

// TestHeldWriteDeadlineRestored: writeHeld bounds a held write by
// heldWriteTime but never past the server's write timeout, puts that
// timeout's deadline back afterwards (none without one), and flushes
// once more after, which under Caddy rearms its write idle timeout for
// what net/http writes after the handler (TestHeldEventKeepsWriteTimeout
// and TestHeldAnswerKeepsWriteIdleTimeout run it in Caddy).
func TestHeldWriteDeadlineRestored(t *testing.T) {
	start := time.Now().Add(-time.Second)
	r := httptest.NewRequest("POST", "/mcp", nil)
	for _, c := range []struct {
		timeout time.Duration
		want    string
	}{
		{0, "deadline +31s write flush deadline none flush"},
		{time.Hour, "deadline +31s write flush deadline +1h0m0s flush"},
		{10 * time.Second, "deadline +10s write flush deadline +10s flush"},
	} {
		rec := &deadlineRecorder{ResponseWriter: httptest.NewRecorder(), start: start}
		g := &Gateway{heldWriteTime: heldWriteTime}
		if c.timeout > 0 {
			g.cfg.WriteTimeout = func(*http.Request) time.Duration { return c.timeout }
		}
		rw := &responseWriter{w: rec, g: g, x: &exchange{r: r, start: start}}
		rw.writeHeld(100, func() error { rec.calls = append(rec.calls, "write"); return nil })
		if got := strings.Join(rec.calls, " "); got != c.want {
			t.Errorf("write timeout %v: %s, want %s", c.timeout, got, c.want)
		}
	}
}

// TestRewriteOnlyAnswerPasses: an answer read only to wrap a request
// state or task ids (a 2026-07-28 tools/call's, nothing to filter) that
// the gateway cannot hold or read passes unchanged, as a JSON answer over
// maxTaskBody does: JSON past the caller's share of maxHeldBytes, and an
// event stream's event past that share, over maxFilteredBody or not
// UTF-8. An unwrapped state or task id only fails its follow-up, while
// ending the answer failed a call whose answer passes the gateway
// untouched when it is not read.
func TestRewriteOnlyAnswerPasses(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, open, close string
		pieces                         int
		text                           string
	}{
		{"json past the share", "application/json", `{"jsonrpc":"2.0","id":2,"result":{"content":[`, `]}}`, 16, strings.Repeat("x", 32<<10)},
		{"event past the share", "text/event-stream", `data: {"jsonrpc":"2.0","id":2,"result":{"content":[`, "]}}\n\n", 16, strings.Repeat("x", 32<<10)},
		{"event over maxFilteredBody", "text/event-stream", `data: {"jsonrpc":"2.0","id":2,"result":{"content":[`, "]}}\n\n", 17, strings.Repeat("x", 1<<20)},
		{"event not UTF-8", "text/event-stream", `data: {"jsonrpc":"2.0","id":2,"result":{"content":[`, "]}}\n\n", 1, "x\xffx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var answer strings.Builder
			h := newHarness(t, unreadConfig(t), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				io.WriteString(w, tc.open)
				for i := range tc.pieces { // in pieces, no Content-Length
					if i > 0 {
						io.WriteString(w, ",")
					}
					io.WriteString(w, `{"type":"text","text":"`+tc.text+`"}`)
					w.(http.Flusher).Flush()
				}
				io.WriteString(w, tc.close)
			})
			held := newHeldShares(512 << 10) // a principal alone holds up to half
			h.g.held = held
			answer.WriteString(tc.open)
			for i := range tc.pieces {
				if i > 0 {
					answer.WriteString(",")
				}
				answer.WriteString(`{"type":"text","text":"` + tc.text + `"}`)
			}
			answer.WriteString(tc.close)
			body, hdr := roundTrip("tools/call", "read_a", nil)
			resp, err := h.try(call{body: body, token: mint(t, claims()), headers: hdr})
			if err != nil {
				t.Fatalf("answer refused: %v", err) // the upstream's answer began: the connection is aborted
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || err != nil || string(got) != answer.String() {
				t.Errorf("answer = %d (%d bytes, %v), want 200 and the upstream's %d bytes", resp.StatusCode, len(got), err, answer.Len())
			}
			if n := held.bytes(); n != 0 {
				t.Errorf("held bytes after the answer = %d, want 0", n)
			}
		})
	}
}

// TestDropFieldsAsEachName: the one pass of dropFields, keepPrior and
// keepOwnNonce leaves the header as deleting each name to drop, then
// putting back the gateway's own values, does, for every field it may
// drop, spelt as net/http stores it and otherwise, with and without
// values held before next and a nonce of the gateway's own.
func TestDropFieldsAsEachName(t *testing.T) {
	names := []string{"Content-Type", "Content-Length", "Date", "Set-Cookie", "set-cookie", "Trailer:Set-Cookie", "Trailer:Content-Type", "Trailer:Alt-Svc", "Trailer:Mcp-Session-Id"}
	names = append(names, upstreamDropped[:]...)
	names = append(names, upstreamTrailersDropped...)
	names = append(names, hostFields[:]...)
	names = append(names, hDPoPNonce, "Dpop-Nonce", hSessionID)
	var prior [len(hostFields)][]string
	prior[1] = []string{"h3=\":443\""}
	for _, own := range []string{"", "own-nonce"} {
		for _, withPrior := range []bool{false, true} {
			for _, trailers := range []bool{false, true} {
				h := http.Header{}
				for _, k := range names {
					h[k] = []string{"upstream " + k}
				}
				want := h.Clone()
				// The deletions dropFields replaced.
				for _, k := range upstreamDropped {
					delete(want, k)
				}
				if trailers {
					for _, k := range upstreamTrailersDropped {
						delete(want, k)
					}
				}
				for i, k := range hostFields {
					if !withPrior || len(prior[i]) == 0 {
						delete(want, k)
					} else {
						want[k] = prior[i]
					}
				}
				if own == "" {
					delete(want, hDPoPNonce)
				} else {
					want[hDPoPNonce] = []string{own}
				}

				rw := &responseWriter{x: &exchange{ownNonce: own}}
				if withPrior {
					rw.prior = &prior
				}
				rw.dropFields(h, trailers)
				rw.keepPrior(h)
				rw.keepOwnNonce(h)
				if !reflect.DeepEqual(h, want) {
					t.Errorf("own nonce %q, prior %v, trailers %v: header\n%v\nwant\n%v", own, withPrior, trailers, h, want)
				}
			}
		}
	}
}
