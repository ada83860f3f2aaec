package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// The list answers of the tests below, by method: with testConfig,
// summary* needs prompts:read and other prompts have no rule (refused);
// file:/// needs files:read, file:///secret/ files:secret, db: has no
// rule. A template is shown as a completion for it would be decided: by
// every rule an expansion could fall under.
var listAnswers = map[string]struct {
	member, key string
	items       []string
}{
	"prompts/list":             {"prompts", "name", []string{"summary_day", "other", "summary\u0131"}},
	"resources/list":           {"resources", "uri", []string{"file:///docs/a", "file:///secret/key", "db://h/t", "FILE:///Secret/k2"}},
	"resources/templates/list": {"resourceTemplates", "uriTemplate", []string{"file:///docs/{name}", "file:///{path}", "file:///secret/{name}", "db://{t}", "file:///secret{x}"}},
	"tools/list":               {"tools", "name", []string{"read_a", "delete_all"}},
}

// listResult is a list method's result holding items, in JSON.
func listResult(t *testing.T, method string, items []string) string {
	t.Helper()
	l := listAnswers[method]
	var objs []map[string]string
	for _, it := range items {
		objs = append(objs, map[string]string{l.key: it, "description": "d"})
	}
	b, err := json.Marshal(map[string]any{l.member: objs, "nextCursor": "c"})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// listedKeys is what a client reads of the list in a result.
func listedKeys(t *testing.T, method string, result json.RawMessage) []string {
	t.Helper()
	l := listAnswers[method]
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(result, &obj); err != nil {
		t.Fatalf("result %s: %v", result, err)
	}
	var items []map[string]any
	if err := json.Unmarshal(obj[l.member], &items); err != nil {
		t.Fatalf("result.%s of %s: %v", l.member, result, err)
	}
	keys := []string{}
	for _, it := range items {
		keys = append(keys, it[l.key].(string))
	}
	return keys
}

// TestListsFiltered: prompts/list, resources/list and
// resources/templates/list answers are filtered per caller, as tools/list
// answers are: a prompt is listed only if a prompts/get of it would be
// allowed, a resource if a resources/read of its uri would be, a
// template if a completion for it would be (every rule an expansion
// could fall under). Before, every caller with the base scopes saw every
// name. JSON answers and event streams alike; the answer is marked
// private for caches.
func TestListsFiltered(t *testing.T) {
	tests := []struct {
		method, scope string
		want          []string
	}{
		{"prompts/list", "mcp", []string{}},
		{"prompts/list", "mcp prompts:read", []string{"summary_day"}},
		{"resources/list", "mcp", []string{}},
		{"resources/list", "mcp files:read", []string{"file:///docs/a"}},
		{"resources/list", "mcp files:read files:secret", []string{"file:///docs/a", "file:///secret/key"}},
		{"resources/templates/list", "mcp", []string{}},
		{"resources/templates/list", "mcp files:read", []string{"file:///docs/{name}"}},
		{"resources/templates/list", "mcp files:secret", []string{"file:///secret/{name}"}},
		{"resources/templates/list", "mcp files:read files:secret", []string{"file:///docs/{name}", "file:///{path}", "file:///secret/{name}", "file:///secret{x}"}},
	}
	for _, tt := range tests {
		for _, as := range []string{"json", "events"} {
			t.Run(tt.method+" "+tt.scope+" "+as, func(t *testing.T) {
				answer := `{"jsonrpc":"2.0","id":1,"result":` + listResult(t, tt.method, listAnswers[tt.method].items) + `}`
				h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Cache-Control", "public, max-age=60")
					answerAs(as, answer)(w, r)
				})
				c := claims()
				c["scope"] = tt.scope
				resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"` + tt.method + `"}`, token: mint(t, c),
					headers: map[string]string{"MCP-Protocol-Version": "2025-11-25", "Accept-Encoding": "gzip"}})
				got := readBody(t, resp)
				if resp.StatusCode != 200 {
					t.Fatalf("answer = %d %s, want 200", resp.StatusCode, got)
				}
				if as == "events" {
					got = eventData(t, got)
				}
				var m struct {
					Result json.RawMessage `json:"result"`
				}
				if err := json.Unmarshal([]byte(got), &m); err != nil {
					t.Fatalf("answer %q: %v", got, err)
				}
				if keys := listedKeys(t, tt.method, m.Result); !slices.Equal(keys, tt.want) {
					t.Errorf("listed %q, want %q (answer %s)", keys, tt.want, got)
				}
				// The cursor stays, sealed (TestListCursorsSealed).
				if !strings.Contains(got, `"nextCursor":"`) || strings.Contains(got, `"nextCursor":"c"`) {
					t.Errorf("answer %s lost its other members or its cursor unsealed", got)
				}
				if cc := resp.Header.Values("Cache-Control"); !slices.Equal(cc, []string{"private"}) {
					t.Errorf("Cache-Control = %q, want private", cc)
				}
			})
		}
	}
}

// TestListsBatchFiltered: in a batch (2025-03-26) each answer is
// filtered as the list its request's id asked for, JSON and events alike;
// an answer whose id names no request, or a list answer that is not the
// list asked for, is refused.
func TestListsBatchFiltered(t *testing.T) {
	methods := []string{"tools/list", "prompts/list", "resources/list", "resources/templates/list"}
	var reqs, answers []string
	for i, m := range methods {
		id := string(rune('1' + i))
		reqs = append(reqs, `{"jsonrpc":"2.0","id":`+id+`,"method":"`+m+`"}`)
		answers = append(answers, `{"jsonrpc":"2.0","id":`+id+`,"result":`+listResult(t, m, listAnswers[m].items)+`}`)
	}
	reqs = append(reqs, `{"jsonrpc":"2.0","id":9,"method":"ping"}`)
	answers = append(answers, `{"jsonrpc":"2.0","id":9,"result":{}}`)
	batch := "[" + strings.Join(reqs, ",") + "]"
	want := map[string][]string{
		"tools/list":               {"read_a"},
		"prompts/list":             {"summary_day"},
		"resources/list":           {"file:///docs/a"},
		"resources/templates/list": {"file:///docs/{name}"},
	}
	c := claims()
	c["scope"] = "mcp tools:read prompts:read files:read"
	for _, as := range []string{"json", "events"} {
		t.Run(as, func(t *testing.T) {
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				if as == "events" {
					w.Header().Set("Content-Type", "text/event-stream")
					for _, a := range answers {
						io.WriteString(w, "data: "+a+"\n\n")
					}
					return
				}
				writeJSONAnswer(w, r, "["+strings.Join(answers, ",")+"]")
			})
			resp := h.do(t, call{body: batch, token: mint(t, c), headers: map[string]string{"MCP-Protocol-Version": "2025-03-26"}})
			body := readBody(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("answer = %d %s, want 200", resp.StatusCode, body)
			}
			var got []struct {
				ID     int             `json:"id"`
				Result json.RawMessage `json:"result"`
			}
			if as == "events" {
				for ev := range strings.SplitSeq(strings.TrimSpace(body), "\n\n") {
					_, data, _ := strings.Cut(ev, "data: ")
					var one struct {
						ID     int             `json:"id"`
						Result json.RawMessage `json:"result"`
					}
					if err := json.Unmarshal([]byte(data), &one); err != nil {
						t.Fatalf("event %q: %v", ev, err)
					}
					got = append(got, one)
				}
			} else if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("answer %q: %v", body, err)
			}
			if len(got) != len(answers) {
				t.Fatalf("%d answers, want %d: %s", len(got), len(answers), body)
			}
			for _, a := range got {
				if a.ID == 9 {
					continue
				}
				m := methods[a.ID-1]
				if keys := listedKeys(t, m, a.Result); !slices.Equal(keys, want[m]) {
					t.Errorf("%s listed %q, want %q", m, keys, want[m])
				}
			}
		})
	}
	// The prompts/list's id answered with a resources list: the client
	// reads it as the prompts it asked for, which the gateway cannot
	// filter.
	for _, as := range []string{"json", "events"} {
		t.Run("mismatched "+as, func(t *testing.T) {
			mismatched := `[{"jsonrpc":"2.0","id":2,"result":` + listResult(t, "resources/list", []string{"file:///secret/key"}) + `}]`
			h := newHarness(t, testConfig(t), answerAs(as, mismatched))
			resp := h.do(t, call{body: batch, token: mint(t, c), headers: map[string]string{"MCP-Protocol-Version": "2025-03-26"}})
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "secret") || as == "json" && resp.StatusCode != http.StatusBadGateway || as == "events" && err == nil {
				t.Errorf("answer = %d %s (%v), want it refused", resp.StatusCode, b, err)
			}
		})
	}
}

// TestListsUnreadableRefused: a list answer that cannot be read strictly
// (a member a client may read as the list or an item's key but spelt
// otherwise, an item without its key as a string, a list that is not an
// array, no list at all) is refused: 502 for JSON, the stream ended for
// events; an error answer passes.
func TestListsUnreadableRefused(t *testing.T) {
	tests := []struct {
		method, result string
	}{
		{"prompts/list", `{"Prompts":[{"name":"other"}]}`},
		{"prompts/list", `{"prompts":[],"pro_mpts":[{"name":"other"}]}`},
		{"prompts/list", `{"prompts":[{"name":"summary_a","Name":"other"}]}`},
		{"prompts/list", `{"prompts":[{"title":"other"}]}`},
		{"prompts/list", `{"prompts":{"name":"other"}}`},
		{"prompts/list", `{"prompts":[],"prompts":[{"name":"other"}]}`},
		{"prompts/list", `{"resources":[{"uri":"file:///secret/key"}]}`},
		{"resources/list", `{"resources":[{"uri":"file:///docs/a","URI":"file:///secret/key"}]}`},
		{"resources/list", `{"resources":[{"name":"file:///secret/key"}]}`},
		{"resources/list", `{"resources":[{"uri":["file:///secret/key"]}]}`},
		{"resources/list", `{"Resources":[{"uri":"file:///secret/key"}]}`},
		{"resources/list", `{"resources":[],"cache_scope":"public"}`},
		{"resources/list", `{"resources":[],"ttlMs":1,"cachescope":"public"}`},
		{"resources/list", `{"resources":[],"resources":[{"uri":"file:///secret/key"}]}`},
		{"resources/templates/list", `{"resourceTemplates":[{"uriTemplate":"file:///docs/{n}","uri_template":"file:///secret/{n}"}]}`},
		{"resources/templates/list", `{"resource_templates":[{"uriTemplate":"file:///secret/{n}"}]}`},
		{"resources/templates/list", `{"resourceTemplates":["file:///secret/{n}"]}`},
	}
	for _, tt := range tests {
		for _, as := range []string{"json", "events"} {
			t.Run(tt.method+" "+tt.result+" "+as, func(t *testing.T) {
				answer := `{"jsonrpc":"2.0","id":1,"result":` + tt.result + `}`
				h := newHarness(t, testConfig(t), answerAs(as, answer))
				c := claims()
				c["scope"] = "mcp prompts:read files:read"
				resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"` + tt.method + `"}`, token: mint(t, c),
					headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(b), "secret") || strings.Contains(string(b), "other") {
					t.Fatalf("answer = %d %s, want the unreadable list kept from the client", resp.StatusCode, b)
				}
				if as == "json" && resp.StatusCode != http.StatusBadGateway {
					t.Errorf("answer = %d %s, want 502", resp.StatusCode, b)
				}
				if as == "events" && err == nil {
					t.Errorf("stream read to its end (%d %s), want it ended", resp.StatusCode, b)
				}
			})
		}
	}
	t.Run("error answer", func(t *testing.T) {
		answer := `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"Method not found"}}`
		h := newHarness(t, testConfig(t), answerAs("json", answer))
		resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"prompts/list"}`, token: mint(t, claims()),
			headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
		if body := readBody(t, resp); resp.StatusCode != 200 || body != answer {
			t.Errorf("answer = %d %s, want 200 %s", resp.StatusCode, body, answer)
		}
	})
}

// TestListsCacheScope: a filtered 2026-07-28 list result is marked
// cacheScope "private", also where the upstream left the member out: the
// list now depends on who asks.
func TestListsCacheScope(t *testing.T) {
	for _, method := range []string{"prompts/list", "resources/list", "resources/templates/list"} {
		for _, hints := range []string{`"ttlMs":60000,"cacheScope":"public",`, ``} {
			t.Run(method+" "+hints, func(t *testing.T) {
				result := listResult(t, method, listAnswers[method].items)
				answer := `{"jsonrpc":"2.0","id":1,"result":{` + hints + result[1:] + `}`
				h := newHarness(t, testConfig(t), answerAs("json", answer))
				body := `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
				c := claims()
				c["scope"] = "mcp prompts:read files:read"
				resp := h.do(t, call{body: body, token: mint(t, c), headers: map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}})
				got := readBody(t, resp)
				var m struct {
					Result map[string]json.RawMessage `json:"result"`
				}
				if err := json.Unmarshal([]byte(got), &m); err != nil {
					t.Fatalf("answer %d %q: %v", resp.StatusCode, got, err)
				}
				if string(m.Result["cacheScope"]) != `"private"` {
					t.Errorf("cacheScope = %s, want \"private\" (answer %s)", m.Result["cacheScope"], got)
				}
				if n := len(listedKeys(t, method, mustJSON(t, m.Result))); n != 1 {
					t.Errorf("%d items listed, want 1 (answer %s)", n, got)
				}
			})
		}
	}
}

func mustJSON(t *testing.T, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestListsFilteredOnResume: a resumed stream (GET with Last-Event-ID)
// replays the events after the one named, list answers among them (a
// 2025-11-25 server may close a request's stream after its priming event
// and answer on the resumption), so a response there whose result holds
// a prompts, resources, resourceTemplates or tools array is filtered as
// that list's answer, whatever its id and with pinning off: replayed,
// each list handed every name to every caller. One that cannot be read
// strictly ends the stream.
func TestListsFilteredOnResume(t *testing.T) {
	var replay strings.Builder
	for i, m := range []string{"prompts/list", "resources/list", "resources/templates/list", "tools/list"} {
		fmt.Fprintf(&replay, "id: s1_%d\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":%d,\"result\":%s}\n\n", i+1, 10+i, listResult(t, m, listAnswers[m].items))
	}
	replay.WriteString("id: s1_9\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"x\"}}\n\n")
	resume := func(t *testing.T, stream string) (*http.Response, string, error) {
		t.Helper()
		h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, stream)
		})
		c := claims()
		c["scope"] = "mcp tools:read prompts:read files:read"
		token := mint(t, c)
		resp := h.do(t, call{method: http.MethodGet, token: token, headers: map[string]string{
			"Mcp-Session-Id": sessionFor(t, h.g, token), "MCP-Protocol-Version": "2025-11-25", "Last-Event-ID": "s1_0"}})
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b), err
	}
	resp, body, err := resume(t, replay.String())
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, "notifications/message") {
		t.Fatalf("resumed stream = %d %s (%v), want 200 with the notification", resp.StatusCode, body, err)
	}
	for _, hidden := range []string{"other", "secret", "db://", "{path}", "delete_all"} {
		if strings.Contains(body, hidden) {
			t.Errorf("resumed stream %s shows %q, want it filtered out", body, hidden)
		}
	}
	for _, shown := range []string{"summary_day", "file:///docs/a", "file:///docs/{name}", "read_a", `"id: s1_4`[1:]} {
		if !strings.Contains(body, shown) {
			t.Errorf("resumed stream %s lacks %q", body, shown)
		}
	}
	for _, result := range []string{
		`{"Prompts":[{"name":"other"}]}`,
		`{"resources":[{"uri":"file:///docs/a","u_ri":"file:///secret/key"}]}`,
		`{"resourceTemplates":[{"name":"file:///secret/{n}"}]}`,
		// Go's encoding/json reads U+017F as s, so as "resources".
		"{\"re\u017fources\":[{\"uri\":\"file:///secret/key\"}]}",
		`{"resources":[],"res\u006furces":[{"uri":"file:///secret/key"}]}`,
	} {
		resp, body, err := resume(t, "id: s1_1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":"+result+"}\n\n")
		if err == nil || strings.Contains(body, "secret") || strings.Contains(body, "other") {
			t.Errorf("resumed stream with %s = %d %s (%v), want it ended before the event", result, resp.StatusCode, body, err)
		}
	}
}

// TestListsFilteredOnAnotherRequest: an upstream may answer a list
// request on the stream, or in the JSON answer, of another request of
// the session, and a caller can have it do so: the official TypeScript
// SDK maps a request id to the POST that carried it last, so a second
// request reusing the id of a pending resources/list (a tools/call of a
// slow tool, say) receives the list as its answer (the Python SDK
// keys the map by str(id), so 1 and "1" collide). Where the gateway
// reads every answer (tool pinning, on by default, or resource rules),
// a response whose result holds a tools, prompts, resources or
// resourceTemplates array is filtered as that list's answer whatever
// its request; before, a ping's answer carried every name.
func TestListsFilteredOnAnotherRequest(t *testing.T) {
	configs := map[string]func(t *testing.T) Config{
		"pinned":         pinnedConfig,
		"resource rules": func(t *testing.T) Config { return testConfig(t) },
	}
	hidden := map[string]string{"prompts/list": "other", "resources/list": "secret", "resources/templates/list": "db://", "tools/list": "delete_all"}
	shown := map[string]string{"prompts/list": "summary_day", "resources/list": "file:///docs/a", "resources/templates/list": "file:///docs/{name}", "tools/list": "read_a"}
	for name, config := range configs {
		for method := range listAnswers {
			for _, as := range []string{"json", "events"} {
				t.Run(name+" "+method+" "+as, func(t *testing.T) {
					answer := `{"jsonrpc":"2.0","id":1,"result":` + listResult(t, method, listAnswers[method].items) + `}`
					h := newHarness(t, config(t), answerAs(as, answer))
					c := claims()
					c["scope"] = "mcp tools:read prompts:read files:read"
					resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, token: mint(t, c),
						headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
					body := readBody(t, resp)
					if resp.StatusCode != http.StatusOK || strings.Contains(body, hidden[method]) || !strings.Contains(body, shown[method]) {
						t.Errorf("ping answered with a %s answer = %d %s, want 200 without %q, with %q", method, resp.StatusCode, body, hidden[method], shown[method])
					}
				})
			}
		}
	}
}

// TestListsOnAnotherRequestUnread: the limit README's *Lists* states.
// With pin_tools off and no resource rules no answer is read for lists
// but a list request's own, so a resources/list answer sent to another
// request (a ping) passes whole, the URIs of resources included, though
// without resource rules no caller may read any resource: a read of one
// of them is refused ("no rule") and never forwarded.
func TestListsOnAnotherRequestUnread(t *testing.T) {
	answer := `{"jsonrpc":"2.0","id":1,"result":` + listResult(t, "resources/list", []string{"file:///docs/a"}) + `}`
	h := newHarness(t, unreadConfig(t), answerAs("json", answer))
	token := mint(t, claims())
	v := map[string]string{"MCP-Protocol-Version": "2025-11-25"}
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, token: token, headers: v})
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || !strings.Contains(body, "file:///docs/a") {
		t.Errorf("ping answered with a resources/list answer = %d %s, want it passed whole", resp.StatusCode, body)
	}
	resp = h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"resources/list"}`, token: token, headers: v})
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK || strings.Contains(body, "file:///docs/a") {
		t.Errorf("resources/list = %d %s, want the resource left out", resp.StatusCode, body)
	}
	before := len(h.up.requests())
	resp = h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///docs/a"}}`, token: token, headers: v})
	if body := readBody(t, resp); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "no rule") || len(h.up.requests()) != before {
		t.Errorf("resources/read without resource rules = %d %s, want 403 (no rule), not forwarded", resp.StatusCode, body)
	}
}

// TestListsUnreadableOnAnotherRequest: an answer to another request that
// the strict read refuses passes as it did (read as encoding/json reads
// it) only when no response of it holds a list as a client reads it;
// one that does is refused, 502 or the stream ended.
func TestListsUnreadableOnAnotherRequest(t *testing.T) {
	for _, answer := range []string{
		`{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///secret/key"}],"_meta":{"a":1,"A":2}}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"content":[],"Prompts":[{"name":"other"}]}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"content":[]},"Result":{"resource_Templates":[{"uriTemplate":"file:///secret/{n}"}]}}`,
	} {
		for _, as := range []string{"json", "events"} {
			t.Run(answer+" "+as, func(t *testing.T) {
				h := newHarness(t, testConfig(t), answerAs(as, answer))
				c := claims()
				c["scope"] = "mcp prompts:read files:read"
				resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, token: mint(t, c),
					headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(b), "secret") || strings.Contains(string(b), "other") ||
					as == "json" && resp.StatusCode != http.StatusBadGateway || as == "events" && err == nil {
					t.Errorf("answer = %d %s (%v), want it refused", resp.StatusCode, b, err)
				}
			})
		}
	}
}

// TestMayListLeniently: what the lenient look at an answer the strict
// read refused takes for a list.
func TestMayListLeniently(t *testing.T) {
	for s, want := range map[string]bool{
		`{"jsonrpc":"2.0","id":1,"result":{"content":[],"structuredContent":{"tools":1,"id":1,"ID":2}}}`:            false,
		`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"a:b"}}],"content":[]}}`: false,
		`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"error":{"code":1,"message":"tools"}}]`:      false,
		`{"jsonrpc":"2.0","method":"notifications/message","params":{"prompts":[]}}`:                                false,
		`{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`:                                                            true,
		`{"jsonrpc":"2.0","id":1,"result":{"content":[]},"result":{"PROMPTS":[]}}`:                                  true,
		`{"jsonrpc":"2.0","id":1,"RESULT":{"re-sources":[]}}`:                                                       true,
		"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tool\u017f\":[]}}":                                             true,
		`{"jsonrpc":"2.0","id":1,"result":{"resourceTemplates\u0000x":[]}}`:                                         true,
		`{"jsonrpc":"2.0","id":1,"res\u0075lt":{"r\u0065sources":[]}}`:                                              true,
		`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{"tools":[]}}]`:                     true,
		`{"jsonrpc":"2.0","id":1,"result":{"tools":[]}} x`:                                                          true,
		`{"jsonrpc":"2.0","id":1,"result":{"tools":[]`:                                                              true,
		`1`: true,
	} {
		if got := mayListLeniently([]byte(s)); got != want {
			t.Errorf("mayListLeniently(%s) = %v, want %v", s, got, want)
		}
	}
}

// TestListCursorVariants: a list request's params.cursor must be one the
// gateway sealed for the caller and the list (TestListCursorsSealed);
// the upstream's own cursor, another principal's, another list's, a
// member Go's decoders read as cursor ("Cursor", "cur_sor"), a cursor
// that is not a string and a cursor in a batch are refused 400
// (-32602; -32700 where the strict parse refuses it first) and never
// forwarded; a sealed one reaches the upstream as the upstream's, and a
// null or empty one asks for the first page.
func TestListCursorVariants(t *testing.T) {
	answer := `{"jsonrpc":"2.0","id":1,"result":{"resources":[{"uri":"file:///docs/a"}],"nextCursor":"up-1"}}`
	h := newHarness(t, testConfig(t), answerAs("json", answer))
	c := claims()
	c["scope"] = "mcp files:read"
	token := mint(t, c)
	list := func(method, params string, tok string) (*http.Response, string) {
		t.Helper()
		resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"` + method + `"` + params + `}`, token: tok,
			headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
		return resp, readBody(t, resp)
	}
	resp, body := list("resources/list", "", token)
	var m struct {
		Result struct {
			NextCursor string `json:"nextCursor"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(body), &m); err != nil || resp.StatusCode != 200 {
		t.Fatalf("resources/list = %d %s", resp.StatusCode, body)
	}
	sealed := m.Result.NextCursor
	if sealed == "" || strings.Contains(sealed, "up-1") {
		t.Fatalf("nextCursor = %q, want it sealed", sealed)
	}
	before := len(h.up.requests())
	resp, body = list("resources/list", `,"params":{"cursor":"`+sealed+`"}`, token)
	if resp.StatusCode != 200 {
		t.Fatalf("resources/list with the sealed cursor = %d %s, want 200", resp.StatusCode, body)
	}
	got := h.up.requests()
	if len(got) != before+1 || !strings.Contains(string(got[before].Body), `"cursor":"up-1"`) {
		t.Fatalf("upstream got %q, want the upstream's cursor", got[before:])
	}
	for _, first := range []string{`,"params":{"cursor":null}`, `,"params":{"cursor":""}`} {
		if resp, body := list("resources/list", first, token); resp.StatusCode != 200 {
			t.Errorf("resources/list%s = %d %s, want the first page", first, resp.StatusCode, body)
		}
	}
	// In a batch (2025-03-26) a cursor is refused, sealed or not: the
	// rewritten body must be one request.
	before = len(h.up.requests())
	resp = h.do(t, call{body: `[{"jsonrpc":"2.0","id":1,"method":"resources/list","params":{"cursor":"` + sealed + `"}},{"jsonrpc":"2.0","id":2,"method":"ping"}]`, token: token})
	if body := readBody(t, resp); resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"code":-32602`) {
		t.Errorf("batch with a cursor = %d %s, want 400 -32602", resp.StatusCode, body)
	}
	if len(h.up.requests()) != before {
		t.Error("batch with a cursor reached the upstream")
	}
	other := claims()
	other["sub"], other["scope"] = "bob", "mcp files:read"
	for _, tc := range []struct{ name, method, params, token string }{
		{"upstream's cursor", "resources/list", `,"params":{"cursor":"up-1"}`, token},
		{"another principal's", "resources/list", `,"params":{"cursor":"` + sealed + `"}`, mint(t, other)},
		{"another list's", "prompts/list", `,"params":{"cursor":"` + sealed + `"}`, token},
		{"case variant", "resources/list", `,"params":{"Cursor":"up-1"}`, token},
		{"separator variant", "resources/list", `,"params":{"cur_sor":"up-1"}`, token},
		{"escaped variant", "resources/list", `,"params":{"\u0043ursor":"up-1"}`, token},
		{"beside the exact name", "resources/list", `,"params":{"cursor":"` + sealed + `","CURSOR":"up-1"}`, token},
		{"not a string", "resources/list", `,"params":{"cursor":1}`, token},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.up.requests())
			resp, body := list(tc.method, tc.params, tc.token)
			// -32602, or -32700 where the parser refuses it first.
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `"code":-32602`) && !strings.Contains(body, `"code":-32700`) {
				t.Errorf("%s = %d %s, want 400 -32602", tc.name, resp.StatusCode, body)
			}
			if n := len(h.up.requests()); n != before {
				t.Errorf("%s reached the upstream", tc.name)
			}
		})
	}
}

// TestListCursorLengthHidden: the length of a sealed cursor does not
// follow the upstream's. The Go SDK's cursor is base64 of the page's
// last item, by name or URI, so a cursor as long as the upstream's plus
// a fixed overhead told a caller the length of a hidden item that ended
// a page (TestListCursorsSealed). Cursors up to cursorBlock-1 bytes are
// sealed alike; each still opens to exactly the upstream's, whatever
// bytes it ends with.
func TestListCursorLengthHidden(t *testing.T) {
	c := claims()
	c["scope"] = "mcp files:read"
	token := mint(t, c)
	var lengths []int
	for _, up := range []string{"a", "file:///docs/secret/plan.md", strings.Repeat("x", 200), "ends\x00\x00", "ends\u0080", "\u0080\x00"} {
		quoted, _ := json.Marshal(up)
		answer := `{"jsonrpc":"2.0","id":1,"result":{"resources":[],"nextCursor":` + string(quoted) + `}}`
		h := newHarness(t, testConfig(t), answerAs("json", answer))
		list := func(params string) (*http.Response, string) {
			t.Helper()
			resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"resources/list"` + params + `}`, token: token,
				headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
			return resp, readBody(t, resp)
		}
		resp, body := list("")
		var m struct {
			Result struct {
				NextCursor string `json:"nextCursor"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil || resp.StatusCode != 200 || m.Result.NextCursor == "" {
			t.Fatalf("resources/list (upstream cursor %q) = %d %s", up, resp.StatusCode, body)
		}
		lengths = append(lengths, len(m.Result.NextCursor))
		if resp, body := list(`,"params":{"cursor":"` + m.Result.NextCursor + `"}`); resp.StatusCode != 200 {
			t.Fatalf("resources/list with the sealed cursor = %d %s", resp.StatusCode, body)
		}
		got := h.up.requests()
		var sent struct {
			Params struct {
				Cursor *string `json:"cursor"`
			} `json:"params"`
		}
		if err := json.Unmarshal(got[len(got)-1].Body, &sent); err != nil || sent.Params.Cursor == nil || *sent.Params.Cursor != up {
			t.Errorf("upstream got %s, want cursor %q", got[len(got)-1].Body, up)
		}
	}
	for _, n := range lengths[1:] {
		if n != lengths[0] {
			t.Errorf("sealed cursor lengths %v, want them equal: the length shows the upstream's", lengths)
			break
		}
	}
}
