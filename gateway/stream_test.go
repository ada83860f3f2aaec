package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

func TestSessionBinding(t *testing.T) {
	h := newHarness(t, unreadConfig(t), sessionUpstream(`{"tools":[]}`))
	alice := mint(t, claims())
	other := func(mutate func(jwt.MapClaims)) string {
		c := claims()
		mutate(c)
		return mint(t, c)
	}
	bob := other(func(c jwt.MapClaims) { c["sub"] = "bob" })
	otherClient := other(func(c jwt.MapClaims) { c["client_id"] = "client-2" })
	viaAgent := other(func(c jwt.MapClaims) { c["act"] = map[string]any{"sub": "agent-a"} })
	aliceRefreshed := other(func(c jwt.MapClaims) { c["jti"] = "jti-2"; c["iat"] = testNow.Add(-time.Minute).Unix() })
	aliceSaysUser := other(func(c jwt.MapClaims) { c["principal_type"] = "user" })
	clientOwnToken := other(func(c jwt.MapClaims) { c["principal_type"] = "client" })
	agentOwnToken := other(func(c jwt.MapClaims) { c["principal_type"] = "agent" })

	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	resp := h.do(t, call{body: init, token: alice})
	readBody(t, resp)
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" || strings.Contains(sid, "upstream-session-1") {
		t.Fatalf("client session id = %q, want a wrapped id", sid)
	}
	tampered := []byte(sid)
	tampered[len(tampered)-2] ^= 1

	tests := []struct {
		name   string
		method string
		token  string
		sid    string
		status int
	}{
		{"same principal POST", http.MethodPost, alice, sid, 200},
		{"same principal GET", http.MethodGet, alice, sid, 200},
		{"same principal DELETE", http.MethodDelete, alice, sid, 200},
		{"refreshed token keeps the session", http.MethodPost, aliceRefreshed, sid, 200},
		{"other user POST", http.MethodPost, bob, sid, 404},
		{"other user GET", http.MethodGet, bob, sid, 404},
		{"other user DELETE", http.MethodDelete, bob, sid, 404},
		{"other client", http.MethodPost, otherClient, sid, 404},
		{"same user via agent", http.MethodPost, viaAgent, sid, 404},
		{"principal_type user is no principal_type", http.MethodPost, aliceSaysUser, sid, 200},
		{"same names, a client's own token", http.MethodPost, clientOwnToken, sid, 404},
		{"same names, an agent's own token", http.MethodGet, agentOwnToken, sid, 404},
		{"tampered MAC POST", http.MethodPost, alice, string(tampered), 404},
		{"tampered MAC GET", http.MethodGet, alice, string(tampered), 404},
		{"tampered MAC DELETE", http.MethodDelete, alice, string(tampered), 404},
		{"raw upstream id", http.MethodPost, alice, "upstream-session-1", 404},
		{"truncated", http.MethodPost, alice, sid[:10], 404},
		{"not base64", http.MethodPost, alice, sid + "!", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			c := call{method: tt.method, token: tt.token, headers: map[string]string{"Mcp-Session-Id": tt.sid, "MCP-Protocol-Version": "2025-11-25"}}
			if tt.method == http.MethodPost {
				c.body = toolCall("read_a")
			}
			resp := h.do(t, c)
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			got := h.up.requests()
			if tt.status != 200 {
				if len(got) != before {
					t.Fatal("refused request reached the upstream")
				}
				if code, _, _ := rpcErr(t, body); code != codeSessionNotFound {
					t.Errorf("code = %d, want %d", code, codeSessionNotFound)
				}
				return
			}
			if up := got[len(got)-1].Header.Get("Mcp-Session-Id"); up != "upstream-session-1" {
				t.Errorf("upstream Mcp-Session-Id = %q, want upstream-session-1", up)
			}
			if back := resp.Header.Get("Mcp-Session-Id"); back != sid {
				t.Errorf("answer Mcp-Session-Id = %q, want the wrapped %q", back, sid)
			}
		})
	}

	t.Run("2026-07-28 ignores sessions", func(t *testing.T) {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
		resp := h.do(t, call{body: body, token: alice, headers: map[string]string{
			"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_a", "Mcp-Session-Id": "forged"}})
		readBody(t, resp)
		if resp.StatusCode != 200 {
			t.Fatalf("status = %d, want 200", resp.StatusCode)
		}
		got := h.up.requests()
		last := got[len(got)-1]
		if v := last.Header.Values("Mcp-Session-Id"); len(v) != 0 {
			t.Errorf("upstream Mcp-Session-Id = %q, want none", v)
		}
		if v := last.Header.Get("Mcp-Name"); v != "read_a" {
			t.Errorf("upstream Mcp-Name = %q, want read_a (validated headers are forwarded)", v)
		}
		if v := resp.Header.Values("Mcp-Session-Id"); len(v) != 0 {
			t.Errorf("answer Mcp-Session-Id = %q, want none", v)
		}
	})
}

// TestSessionOfOneOutermostAgent: a session is bound to the user, client,
// principal type and outermost actor, the one acting, as task ids are:
// every token naming agent-a outermost was issued against agent-a's own
// token, so a deeper or shallower chain under it is agent-a again and
// shares its session (its GET stream, its answers to the server's
// requests), as does another grant of theirs with fewer scopes, while
// each request made there still passes the rules for its own token (a
// tool's scopes and max_depth); another outermost agent, whatever the
// inner chain, or the agent acting alone, has no session there.
func TestSessionOfOneOutermostAgent(t *testing.T) {
	h := newHarness(t, unreadConfig(t), sessionUpstream(`{"content":[]}`))
	delegated := func(c jwt.MapClaims, actors ...string) string { return mint(t, withActors(c, actors...)) }
	chain := func(actors ...string) string { return delegated(claims(), actors...) }
	narrowed := claims()
	narrowed["gid"], narrowed["jti"], narrowed["scope"] = "grant-2", "jti-2", "mcp"
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	resp := h.do(t, call{body: init, token: chain("agent-a")})
	readBody(t, resp)
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		t.Fatal("no session id")
	}
	answer := `{"jsonrpc":"2.0","id":"elicit-1","result":{"action":"decline"}}`

	// The gateway keeps no record of sessions: an upstream that hands
	// another caller the same session id (this one gives every caller
	// upstream-session-1) puts that caller in the same upstream session,
	// under an id of its own. README: upstreams must not.
	c := claims()
	c["sub"] = "bob"
	resp = h.do(t, call{body: init, token: mint(t, c)})
	readBody(t, resp)
	bobs := resp.Header.Get("Mcp-Session-Id")
	if bobs == "" || bobs == sid {
		t.Fatalf("another caller's session id = %q, want one of its own (not %q)", bobs, sid)
	}
	resp = h.do(t, call{method: http.MethodGet, token: mint(t, c), headers: map[string]string{"Mcp-Session-Id": bobs, "MCP-Protocol-Version": "2025-11-25"}})
	readBody(t, resp)
	if got := h.up.requests(); resp.StatusCode != 200 || got[len(got)-1].Header.Get("Mcp-Session-Id") != "upstream-session-1" {
		t.Fatalf("GET with the other caller's own id = %d, want 200 into the upstream's one session", resp.StatusCode)
	}
	for _, tt := range []struct {
		name   string
		token  string
		method string
		body   string
		status int
	}{
		{"deeper chain: GET stream", chain("agent-a", "agent-b"), http.MethodGet, "", 200},
		{"deeper chain: answer to the server", chain("agent-a", "agent-b"), http.MethodPost, answer, 202},
		{"deeper chain: a tool its depth allows", chain("agent-a", "agent-b"), http.MethodPost, toolCall("read_a"), 200},
		{"deeper chain: a tool of max_depth 1", chain("agent-a", "agent-b"), http.MethodPost, toolCall("shallow"), 403},
		{"the creating chain: a tool of max_depth 1", chain("agent-a"), http.MethodPost, toolCall("shallow"), 200},
		{"another grant without the tools' scope: GET stream", delegated(narrowed, "agent-a"), http.MethodGet, "", 200},
		{"another grant without the tools' scope: answer to the server", delegated(narrowed, "agent-a"), http.MethodPost, answer, 202},
		{"another grant without the tools' scope: a tool", delegated(narrowed, "agent-a"), http.MethodPost, toolCall("read_a"), 403},
		{"another outermost agent: GET stream", chain("agent-b", "agent-a"), http.MethodGet, "", 404},
		{"another outermost agent: answer to the server", chain("agent-b", "agent-a"), http.MethodPost, answer, 404},
		{"agent-a alone, no user", func() string {
			c := claims()
			c["sub"], c["principal_type"] = "agent-a", "agent"
			return mint(t, c)
		}(), http.MethodGet, "", 404},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{method: tt.method, body: tt.body, token: tt.token,
				headers: map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status && !(tt.status == 202 && resp.StatusCode == 200) {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			got := h.up.requests()
			if forwarded := len(got) - before; forwarded != 0 && tt.status >= 400 || forwarded != 1 && tt.status < 400 {
				t.Fatalf("upstream saw %d requests", forwarded)
			}
			if tt.status < 400 {
				if up := got[len(got)-1].Header.Get("Mcp-Session-Id"); up != "upstream-session-1" {
					t.Errorf("upstream Mcp-Session-Id = %q", up)
				}
			}
		})
	}
}

// sessionUpstream answers as an upstream with one session for all:
// Mcp-Session-Id upstream-session-1, and result to every POST.
func sessionUpstream(result string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Mcp-Session-Id", "upstream-session-1")
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":`+result+`}`)
	}
}

func TestSessionWrapAnyInstance(t *testing.T) {
	cfg := testConfig(t)
	g1, g2 := newGateway(t, cfg), newGateway(t, cfg)
	p := &principal{issuer: testIssuer, subject: "alice", clientID: "c"}
	w, err := g1.wrapSession(p, "abc")
	if err != nil {
		t.Fatal(err)
	}
	if up, err := g2.unwrapSession(p, w); err != nil || up != "abc" {
		t.Errorf("unwrapSession on another instance = %q, %v, want abc", up, err)
	}
	other := cfg
	other.Resource = "https://mcp.example.com/other"
	if _, err := newGateway(t, other).unwrapSession(p, w); err == nil {
		t.Error("unwrapSession for another resource with the same key succeeded")
	}
	cfg.SessionKey = []byte(strings.Repeat("x", 32))
	g3 := newGateway(t, cfg)
	if _, err := g3.unwrapSession(p, w); err == nil {
		t.Error("unwrapSession with another key succeeded")
	}
	if _, err := g1.wrapSession(p, "bad id"); err == nil {
		t.Error("wrapSession accepted an id with a space")
	}
}

// TestSSEStreaming proves the gateway streams: the client reads the first
// event while the upstream is still blocked before its second.
func TestSSEStreaming(t *testing.T) {
	for _, method := range []string{"tools/call", "tools/list"} { // pass-through and filtering paths
		t.Run(method, func(t *testing.T) {
			release := make(chan struct{})
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n\n")
			})
			body := `{"jsonrpc":"2.0","id":1,"method":"` + method + `","params":{"name":"read_a"}}`
			resp := h.do(t, call{body: body, token: mint(t, claims())})
			defer resp.Body.Close()
			// A stream the gateway reads (both here: testConfig has
			// resource rules) says it is UTF-8, as the gateway reads it
			// (TestSSEFieldsCannotCarryLinesInLatin1).
			const want = "text/event-stream; charset=utf-8"
			if ct := resp.Header.Get("Content-Type"); ct != want {
				t.Fatalf("Content-Type = %q, want %q", ct, want)
			}
			br := bufio.NewReader(resp.Body)
			first := make(chan string, 1)
			go func() {
				var sb strings.Builder
				for {
					line, err := br.ReadString('\n')
					sb.WriteString(line)
					if err != nil || line == "\n" {
						first <- sb.String()
						return
					}
				}
			}()
			select {
			case ev := <-first:
				if !strings.Contains(ev, "notifications/progress") {
					t.Fatalf("first event = %q", ev)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("first event not delivered while the upstream was still streaming: buffered")
			}
			close(release)
			rest, _ := io.ReadAll(br)
			if !strings.Contains(string(rest), `"id":1`) {
				t.Errorf("rest of stream = %q, want the response", rest)
			}
		})
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(cancelled)
	})
	resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, claims())})
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request not cancelled after the client went away")
	}
}

const toolsJSON = `[{"name":"read_a","inputSchema":{"type":"object"}},{"name":"delete_all","description":"boom"},{"name":"write_b"},{"name":"unlisted"},{"name":"read_c","annotations":{"x":1}}]`

func toolNames(t *testing.T, msg string) []string {
	t.Helper()
	var m struct {
		Result struct {
			Tools []struct {
				Name string `json:"name"`
			} `json:"tools"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(msg), &m); err != nil {
		t.Fatalf("decoding %q: %v", msg, err)
	}
	var names []string
	for _, tl := range m.Result.Tools {
		names = append(names, tl.Name)
	}
	sort.Strings(names)
	return names
}

func TestToolsListFiltering(t *testing.T) {
	jsonAnswer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Cache-Control", "public, max-age=60")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":`+toolsJSON+`,"nextCursor":"c2"}}`)
	}
	sseAnswer := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"delete_all\"}}\n\n")
		io.WriteString(w, "id: 7\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":"+toolsJSON+"}}\n\n")
	}
	tests := []struct {
		name   string
		answer http.HandlerFunc
		scope  string
		want   []string
	}{
		{"JSON, read scope", jsonAnswer, "mcp tools:read", []string{"read_a", "read_c"}},
		{"JSON, write scope", jsonAnswer, "mcp tools:write", []string{"read_a", "read_c", "write_b"}},
		{"JSON, admin", jsonAnswer, "mcp admin", []string{"delete_all", "read_a", "read_c", "write_b"}},
		{"SSE, read scope", sseAnswer, "mcp tools:read", []string{"read_a", "read_c"}},
		{"SSE, admin", sseAnswer, "mcp admin", []string{"delete_all", "read_a", "read_c", "write_b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), tt.answer)
			c := claims()
			c["scope"] = tt.scope
			resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, c)})
			body := readBody(t, resp)
			if resp.StatusCode != 200 {
				t.Fatalf("status = %d (%s)", resp.StatusCode, body)
			}
			if got := resp.Header.Get("Cache-Control"); got != "private" {
				t.Errorf("Cache-Control = %q, want private", got)
			}
			if got := resp.Header.Get("ETag"); got != "" {
				t.Errorf("ETag = %q, want none", got)
			}
			msg := body
			if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				if !strings.Contains(body, "notifications/message") || !strings.Contains(body, "id: 7") {
					t.Errorf("stream lost events or ids: %q", body)
				}
				_, after, _ := strings.Cut(body, "id: 7\n")
				_, msg, _ = strings.Cut(after, "data: ")
				msg, _, _ = strings.Cut(msg, "\n")
			} else if !strings.Contains(body, `"nextCursor":"`) || strings.Contains(body, `"nextCursor":"c2"`) {
				t.Errorf("other result members lost, or the cursor unsealed (TestListCursorsSealed): %s", body)
			}
			if diff := cmp.Diff(tt.want, toolNames(t, msg)); diff != "" {
				t.Errorf("tools (-want +got):\n%s", diff)
			}
		})
	}
}

func TestToolsListFilterActorRules(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"agent_only"},{"name":"user_only"},{"name":"read_a"}]}}`)
	})
	c := claims()
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, c)})
	if diff := cmp.Diff([]string{"read_a", "user_only"}, toolNames(t, readBody(t, resp))); diff != "" {
		t.Errorf("user tools (-want +got):\n%s", diff)
	}
	c["act"] = map[string]any{"sub": "agent-a"}
	resp = h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, c)})
	if diff := cmp.Diff([]string{"agent_only", "read_a"}, toolNames(t, readBody(t, resp))); diff != "" {
		t.Errorf("delegated tools (-want +got):\n%s", diff)
	}
}

func TestToolsListFailClosed(t *testing.T) {
	tests := []struct {
		name   string
		answer http.HandlerFunc
	}{
		{"text/plain answer", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"}]}}`)
		}},
		{"duplicate keys in answer", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[],"tools":[{"name":"delete_all"}]}}`)
		}},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"tools":[{"name":"delete_all"}`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), tt.answer)
			resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, claims())})
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusBadGateway || strings.Contains(body, "delete_all") {
				t.Errorf("answer = %d %s, want 502 without the list", resp.StatusCode, body)
			}
		})
	}
}

func TestToolsListBatch(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[{"jsonrpc":"2.0","id":"a","result":{}},{"jsonrpc":"2.0","id":"b","result":{"tools":`+toolsJSON+`}}]`)
	})
	body := `[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","id":"b","method":"tools/list"}]`
	resp := h.do(t, call{body: body, token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-03-26"}})
	got := readBody(t, resp)
	var msgs []json.RawMessage
	if err := json.Unmarshal([]byte(got), &msgs); err != nil || len(msgs) != 2 {
		t.Fatalf("batch answer = %s (%v)", got, err)
	}
	if string(msgs[0]) != `{"jsonrpc":"2.0","id":"a","result":{}}` {
		t.Errorf("ping answer changed: %s", msgs[0])
	}
	if diff := cmp.Diff([]string{"read_a", "read_c"}, toolNames(t, string(msgs[1]))); diff != "" {
		t.Errorf("tools (-want +got):\n%s", diff)
	}
}

func TestProtocol2026(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	body := `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"réad","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	// The prompt "réad" matches no rule: a base64 Mcp-Name that agrees is
	// decoded and the body decides (403 no rule, not 400 mismatch).
	resp := h.do(t, call{body: body, token: mint(t, claims()), headers: map[string]string{
		"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "prompts/get", "Mcp-Name": "=?base64?csOpYWQ=?="}})
	got := readBody(t, resp)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(got, "no rule") {
		t.Errorf("answer = %d %s, want 403 no rule", resp.StatusCode, got)
	}
	body = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	resp = h.do(t, call{body: body, token: mint(t, claims()), headers: map[string]string{
		"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_a"}})
	readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200", resp.StatusCode)
	}
	if n := len(h.up.requests()); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

func TestToolsListCacheScope(t *testing.T) {
	tests := []struct {
		name    string
		version string
		result  string
		want    string // cacheScope member in the answer, "" = absent
	}{
		{"2026 public becomes private", "2026-07-28", `{"ttlMs":300000,"cacheScope":"public","tools":[{"name":"read_a"}]}`, `"private"`},
		{"2026 absent is added", "2026-07-28", `{"tools":[{"name":"read_a"}]}`, `"private"`},
		{"2025 absent stays absent", "2025-11-25", `{"tools":[{"name":"read_a"}]}`, ``},
		{"2025 public becomes private", "2025-11-25", `{"cacheScope":"public","tools":[{"name":"read_a"}]}`, `"private"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":`+tt.result+`}`)
			})
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
			headers := map[string]string{"MCP-Protocol-Version": tt.version}
			if tt.version == "2026-07-28" {
				body = `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
				headers["Mcp-Method"] = "tools/list"
			}
			resp := h.do(t, call{body: body, token: mint(t, claims()), headers: headers})
			got := readBody(t, resp)
			var m struct {
				Result map[string]json.RawMessage `json:"result"`
			}
			if err := json.Unmarshal([]byte(got), &m); err != nil {
				t.Fatalf("answer %q: %v", got, err)
			}
			if string(m.Result["cacheScope"]) != tt.want {
				t.Errorf("cacheScope = %s, want %s (answer %s)", m.Result["cacheScope"], tt.want, got)
			}
			if m.Result["tools"] == nil {
				t.Errorf("tools lost: %s", got)
			}
		})
	}
}

// TestCacheableResultsPrivate: in 2026-07-28 the results of
// resources/read, the other list methods and server/discover carry
// caching hints (SEP-2549), and "public" lets a shared cache (a gateway or
// proxy in front, a client host serving several users) serve the result
// across authorization contexts. Behind the gateway every result depends
// on the caller's token: a resources/read of file:///secret/ is for
// holders of files:secret only, however public the upstream calls it. So
// the request's answer, JSON or event, leaves marked private, also when
// the client asks for compressed answers (the upstream then gets no
// Accept-Encoding, as for a tools/list).
func TestCacheableResultsPrivate(t *testing.T) {
	const hints = `"ttlMs":300000,"cacheScope":"public"`
	tests := []struct {
		method, params, name string
		result               string
		want                 string // cacheScope in the answer, "" = absent
	}{
		{"resources/read", `"uri":"file:///secret/a",`, "file:///secret/a", `{"contents":[{"uri":"file:///secret/a","text":"s"}],` + hints + `}`, `"private"`},
		{"resources/read", `"uri":"file:///secret/a",`, "file:///secret/a", `{"contents":[],"ttlMs":300000}`, `"private"`},
		{"resources/read", `"uri":"file:///secret/a",`, "file:///secret/a", `{"contents":[],"cacheScope":"private"}`, `"private"`},
		{"resources/read", `"uri":"file:///secret/a",`, "file:///secret/a", `{"contents":[]}`, ``},
		{"resources/list", ``, "", `{"resources":[],` + hints + `}`, `"private"`},
		{"resources/templates/list", ``, "", `{"resourceTemplates":[],` + hints + `}`, `"private"`},
		{"prompts/list", ``, "", `{"prompts":[],` + hints + `}`, `"private"`},
		{"server/discover", ``, "", `{"supportedVersions":["2026-07-28"],"capabilities":{},` + hints + `}`, `"private"`},
		// Go's decoders read these as cacheScope and ttlMs (encoding/json
		// the last of "cacheScope" and "cachescope" given, json/v2
		// without case also "cache_scope"): each is marked too. (A list
		// answer spelt so is refused: TestListsUnreadableRefused.)
		{"server/discover", ``, "", `{"supportedVersions":["2026-07-28"],"ttlMs":300000,"cachescope":"public"}`, `"private"`},
		{"server/discover", ``, "", `{"supportedVersions":["2026-07-28"],"ttl_ms":300000,"cache_scope":"public"}`, `"private"`},
		{"server/discover", ``, "", `{"supportedVersions":["2026-07-28"],"ttlMs":300000,"cacheScope":"public","CacheScope":"public","cache-Scope":"public"}`, `"private"`},
		// An answer the strict read refuses (a member given twice) is
		// marked as encoding/json reads it.
		{"server/discover", ``, "", `{"capabilities":{},"capabilities":{},` + hints + `}`, `"private"`},
	}
	for _, tt := range tests {
		for _, as := range []string{"json", "events", "gzip"} {
			t.Run(tt.method+" "+tt.result+" "+as, func(t *testing.T) {
				answer := `{"jsonrpc":"2.0","id":1,"result":` + tt.result + `}`
				h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Cache-Control", "public, max-age=300")
					w.Header().Set("ETag", `"v1"`)
					w.Header().Set("Last-Modified", "Mon, 07 Dec 2026 12:00:00 GMT")
					answerAs(as, answer)(w, r)
				})
				body := `{"jsonrpc":"2.0","id":1,"method":"` + tt.method + `","params":{` + tt.params + `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
				headers := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": tt.method}
				if tt.name != "" {
					headers["Mcp-Name"] = tt.name
				}
				if as == "gzip" {
					headers["Accept-Encoding"] = "gzip"
				}
				c := claims()
				c["scope"] = "mcp files:read files:secret"
				resp := h.do(t, call{body: body, token: mint(t, c), headers: headers})
				got := readBody(t, resp)
				if resp.Header.Get("Content-Encoding") == "gzip" {
					t.Fatalf("the answer came compressed: the gateway could not read it")
				}
				// The upstream's HTTP caching headers say public too.
				if cc, etag, lm := resp.Header.Values("Cache-Control"), resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"); !slices.Equal(cc, []string{"private"}) || etag != "" || lm != "" {
					t.Errorf("Cache-Control %q, ETag %q, Last-Modified %q; want private and none", cc, etag, lm)
				}
				if as == "events" {
					got = eventData(t, got)
				}
				var m struct {
					Result map[string]json.RawMessage `json:"result"`
				}
				if err := json.Unmarshal([]byte(got), &m); err != nil {
					t.Fatalf("status %d, answer %q: %v", resp.StatusCode, got, err)
				}
				if string(m.Result["cacheScope"]) != tt.want {
					t.Errorf("cacheScope = %s, want %s (answer %s)", m.Result["cacheScope"], tt.want, got)
				}
				for k, v := range m.Result {
					if k != "cacheScope" && mcpparse.SameLooseName(k, "cacheScope") {
						t.Errorf("%s = %s is left, which Go's decoders read as cacheScope (answer %s)", k, v, got)
					}
				}
				if len(m.Result) == 0 {
					t.Errorf("result lost its members: %s", got)
				}
			})
		}
	}
}

// TestBodyLimit: a body of exactly MaxBodySize bytes is forwarded, one
// byte more is refused 413 and never reaches the upstream, with and
// without Content-Length; without max_body_size the limit is README's
// "default 1 MiB".
func TestBodyLimit(t *testing.T) {
	for _, set := range []int64{1024, 0} {
		limit := set
		if limit == 0 {
			limit = 1 << 20
		}
		t.Run(fmt.Sprintf("max_body_size=%d", set), func(t *testing.T) {
			testBodyLimit(t, set, int(limit))
		})
	}
}

func testBodyLimit(t *testing.T, set int64, limit int) {
	cfg := testConfig(t)
	cfg.MaxBodySize = set
	h := newHarness(t, cfg, nil)
	// sized is a tools/call of exactly n bytes.
	sized := func(n int) string {
		head, tail := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"x":"`, `"}}}`
		return head + strings.Repeat("a", n-len(head)-len(tail)) + tail
	}
	for _, chunked := range []bool{false, true} {
		for _, tt := range []struct {
			name   string
			body   string
			status int
		}{
			{"small", toolCall("read_a"), 200},
			{"at the limit", sized(limit), 200},
			{"one byte over", sized(limit + 1), 413},
			{"far over", sized(2 * limit), 413},
		} {
			t.Run(fmt.Sprintf("%s chunked=%v", tt.name, chunked), func(t *testing.T) {
				before := len(h.up.requests())
				var body io.Reader = strings.NewReader(tt.body)
				if chunked {
					pr, pw := io.Pipe()
					go func() { io.WriteString(pw, tt.body); pw.Close() }()
					body = pr
				}
				req, _ := http.NewRequest(http.MethodPost, h.front.URL+"/mcp", body)
				if chunked != (req.ContentLength <= 0) {
					t.Fatalf("ContentLength = %d, chunked %v", req.ContentLength, chunked)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+mint(t, claims()))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got := readBody(t, resp)
				if resp.StatusCode != tt.status {
					t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.status, got)
				}
				reqs := h.up.requests()
				if tt.status != 200 {
					if len(reqs) != before {
						t.Fatal("over-limit body reached the upstream")
					}
					if code, _, _ := rpcErr(t, got); code != codeInvalidRequest {
						t.Errorf("JSON-RPC error code = %d, want %d (README: 413, -32600)", code, codeInvalidRequest)
					}
					return
				}
				if len(reqs) != before+1 || string(reqs[len(reqs)-1].Body) != tt.body {
					t.Errorf("upstream got %d requests, want the body forwarded as sent", len(reqs)-before)
				}
			})
		}
	}
}

// TestBodyLimitLargest: a max_body_size as large as an int64 (an
// operator's "unlimited", which the JSON configuration takes) bounds
// nothing, and a chunked body is read in full: reading it up to one byte
// past the limit overflowed there, read none of it, and the call was
// refused as an empty body.
func TestBodyLimitLargest(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxBodySize = math.MaxInt64
	h := newHarness(t, cfg, nil)
	for _, chunked := range []bool{false, true} {
		body := toolCall("read_a")
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			pr, pw := io.Pipe()
			go func() { io.WriteString(pw, body); pw.Close() }()
			rd = pr
		}
		before := len(h.up.requests())
		req, _ := http.NewRequest(http.MethodPost, h.front.URL+"/mcp", rd)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+mint(t, claims()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := readBody(t, resp)
		reqs := h.up.requests()
		if resp.StatusCode != http.StatusOK || len(reqs) != before+1 || string(reqs[len(reqs)-1].Body) != body {
			t.Errorf("chunked %v: status %d (%s), upstream got %d requests; want 200 and the body forwarded as sent", chunked, resp.StatusCode, got, len(reqs)-before)
		}
	}
}

// stalledBody is a request body that blocks in its first Read until
// released, saying when that Read began.
type stalledBody struct {
	reading chan<- struct{}
	release <-chan struct{}
}

func (b *stalledBody) Read([]byte) (int, error) {
	b.reading <- struct{}{}
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

func (*stalledBody) Close() error { return nil }

// TestDeclaredBodyNotHeldAhead: the memory held for a request's body grows
// with the bytes that arrive, not with the Content-Length the client
// declares: a caller that declares max_body_size and sends nothing (a
// thousand connections, each ~700 bytes of headers) held max_body_size
// per connection for as long as it kept the connection open (no read
// timeout by default).
func TestDeclaredBodyNotHeldAhead(t *testing.T) {
	const (
		limit = 8 << 20
		conns = 8
	)
	cfg := testConfig(t)
	cfg.MaxBodySize = limit
	g := newGateway(t, cfg)
	token := mint(t, claims())
	next := NextFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	reading, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	for range conns {
		req := httptest.NewRequest(http.MethodPost, testResource, nil)
		req.Body = &stalledBody{reading: reading, release: release}
		req.ContentLength = limit
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		go func() {
			defer func() { done <- struct{}{} }()
			g.Serve(httptest.NewRecorder(), req, next)
		}()
	}
	for range conns {
		<-reading
	}
	held := int64(heap()) - int64(before)
	close(release)
	for range conns {
		<-done
	}
	if held > conns<<20 {
		t.Errorf("%d requests declaring %d bytes, none sent, hold %d bytes; want what arrived, not what was declared", conns, limit, held)
	}
}

// TestResumeBoundToSession: a stream resumption (GET with Last-Event-ID)
// reaches the upstream only inside a session bound to the caller (a GET
// without one is refused as TestSessionlessRefused shows), so an
// upstream that finds streams by event id alone (a shared event store, or
// no sessions at all) cannot replay another principal's stream. The
// header goes nowhere else: resumption is always a GET (2025-11-25), and
// 2026-07-28 has no resumable streams.
func TestResumeBoundToSession(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Mcp-Session-Id", "upstream-session-1")
		if r.Method == http.MethodGet {
			// A resumption is answered with events, and read as such
			// (TestReadContentsFilteredOnResume).
			w.Header().Set("Content-Type", "text/event-stream")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
		}
	})
	alice := mint(t, claims())
	bobClaims := claims()
	bobClaims["sub"] = "bob"
	bob := mint(t, bobClaims)
	init := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	resp := h.do(t, call{body: init, token: alice})
	readBody(t, resp)
	sid := resp.Header.Get("Mcp-Session-Id")
	v25 := "2025-11-25"
	call26 := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`

	tests := []struct {
		name    string
		c       call
		status  int    // 0: forwarded
		lastID  string // the Last-Event-ID the upstream must get when forwarded
		rawHead []string
	}{
		{"GET in the caller's session", call{method: http.MethodGet, token: alice, headers: map[string]string{"Mcp-Session-Id": sid, "Last-Event-ID": "stream-1_7", "MCP-Protocol-Version": v25}}, 0, "stream-1_7", nil},
		{"GET without a session", call{method: http.MethodGet, token: alice, headers: map[string]string{"Last-Event-ID": "stream-1_7", "MCP-Protocol-Version": v25}}, 405, "", nil},
		{"GET without a session, no version", call{method: http.MethodGet, token: bob, headers: map[string]string{"Last-Event-ID": "stream-1_7"}}, 405, "", nil},
		{"GET in another principal's session", call{method: http.MethodGet, token: bob, headers: map[string]string{"Mcp-Session-Id": sid, "Last-Event-ID": "stream-1_7", "MCP-Protocol-Version": v25}}, 404, "", nil},
		{"two Last-Event-ID headers", call{method: http.MethodGet, token: alice, headers: map[string]string{"Mcp-Session-Id": sid, "MCP-Protocol-Version": v25}}, 400, "", []string{"stream-1_7", "stream-2_1"}},
		{"POST drops it", call{body: toolCall("read_a"), token: alice, headers: map[string]string{"Mcp-Session-Id": sid, "Last-Event-ID": "stream-1_7", "MCP-Protocol-Version": v25}}, 0, "", nil},
		{"POST without a session drops it", call{body: toolCall("read_a"), token: bob, headers: map[string]string{"Last-Event-ID": "stream-1_7", "MCP-Protocol-Version": v25}}, 0, "", nil},
		{"DELETE drops it", call{method: http.MethodDelete, token: alice, headers: map[string]string{"Mcp-Session-Id": sid, "Last-Event-ID": "stream-1_7", "MCP-Protocol-Version": v25}}, 0, "", nil},
		{"2026-07-28 drops it", call{body: call26, token: bob, headers: map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_a", "Last-Event-ID": "stream-1_7"}}, 0, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			if tt.rawHead != nil {
				tt.c.headers["Last-Event-ID"] = strings.Join(tt.rawHead, "\x00")
			}
			resp := doMulti(t, h, tt.c)
			body := readBody(t, resp)
			got := h.up.requests()
			if tt.status != 0 {
				if resp.StatusCode != tt.status || len(got) != before {
					t.Fatalf("status = %d (%s), forwarded %v; want %d, not forwarded", resp.StatusCode, body, len(got) != before, tt.status)
				}
				rpcErr(t, body)
				return
			}
			if resp.StatusCode != http.StatusOK || len(got) != before+1 {
				t.Fatalf("status = %d (%s), forwarded %v; want 200, forwarded", resp.StatusCode, body, len(got) != before)
			}
			if v := got[len(got)-1].Header.Values("Last-Event-Id"); tt.lastID == "" && len(v) != 0 || tt.lastID != "" && (len(v) != 1 || v[0] != tt.lastID) {
				t.Errorf("upstream Last-Event-ID = %q, want %q", v, tt.lastID)
			}
		})
	}
}

// TestSessionlessRefused: in the 2025 revisions, what only a session gives
// a meaning to is refused without one, so that an upstream with one
// transport for every caller (the TypeScript SDK's stateless mode) never
// hands one caller's server messages, answers or cancellations to
// another: a GET stream (405, Allow: POST, as a server without a GET
// stream answers), a DELETE (400), and a response to a server's request
// (elicitation, sampling, roots: any caller could answer another's,
// review s13-sse F2) or a client notification but
// notifications/initialized (400). The stateless flows (initialize,
// notifications/initialized, requests) pass, as does all of it in a
// session of the caller's, on the base scopes. In 2026-07-28, which has no
// sessions, notifications/cancelled is dropped (or refused) likewise.
func TestSessionlessRefused(t *testing.T) {
	h := newHarness(t, unreadConfig(t), func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && !strings.Contains(r.Header.Get("Mcp-Method"), "notifications/") {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	alice := mint(t, claims())
	sid := sessionFor(t, h.g, alice)
	v25 := func(extra ...string) map[string]string {
		m := map[string]string{"MCP-Protocol-Version": "2025-11-25"}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	v26 := func(extra ...string) map[string]string {
		m := map[string]string{"MCP-Protocol-Version": "2026-07-28"}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	cancelled := `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1,"reason":"user"}}`
	answer := `{"jsonrpc":"2.0","id":0,"result":{"action":"accept","content":{}}}`
	const getMsg = "GET opens the event stream of a session: send the session's Mcp-Session-Id"
	tests := []struct {
		name   string
		c      call
		status int    // 0: forwarded
		code   int    // the JSON-RPC error code of a refusal
		id     string // the refusal's id, "" for none
		reason string // the audit event's
	}{
		{"GET", call{method: http.MethodGet, token: alice, headers: v25()}, 405, codeRefused, "", getMsg},
		{"GET, no version", call{method: http.MethodGet, token: alice}, 405, codeRefused, "", getMsg},
		{"GET 2025-06-18, resuming", call{method: http.MethodGet, token: alice, headers: map[string]string{"MCP-Protocol-Version": "2025-06-18", "Last-Event-ID": "s_1"}}, 405, codeRefused, "", getMsg},
		{"GET, empty session id", call{method: http.MethodGet, token: alice, headers: v25("Mcp-Session-Id", " ")}, 404, codeSessionNotFound, "", "Session not found"},
		{"GET without a token", call{method: http.MethodGet, headers: v25()}, 401, codeRefused, "", "authorization required"},
		{"DELETE", call{method: http.MethodDelete, token: alice, headers: v25()}, 400, codeInvalidRequest, "", "DELETE ends a session: send the session's Mcp-Session-Id"},
		{"DELETE, no version", call{method: http.MethodDelete, token: alice}, 400, codeInvalidRequest, "", "DELETE ends a session: send the session's Mcp-Session-Id"},
		{"notifications/cancelled", call{body: cancelled, token: alice, headers: v25()}, 202, 0, "", "notifications/cancelled speaks of a session: dropped without the session's Mcp-Session-Id"},
		{"notifications/cancelled, no version", call{body: cancelled, token: alice}, 202, 0, "", "notifications/cancelled speaks of a session: dropped without the session's Mcp-Session-Id"},
		{"notifications/cancelled with an id", call{body: `{"jsonrpc":"2.0","id":5,"method":"notifications/cancelled","params":{"requestId":1}}`, token: alice, headers: v25()}, 400, codeInvalidRequest, "5", "notifications/cancelled speaks of a session: send the session's Mcp-Session-Id"},
		{"notifications/progress", call{body: `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":0,"progress":1}}`, token: alice, headers: v25()}, 202, 0, "", "notifications/progress speaks of a session: dropped without the session's Mcp-Session-Id"},
		{"notifications/roots/list_changed", call{body: `{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}`, token: alice, headers: v25()}, 202, 0, "", "notifications/roots/list_changed speaks of a session: dropped without the session's Mcp-Session-Id"},
		{"batch with a cancellation", call{body: `[` + toolCall("read_a") + `,` + cancelled + `]`, token: alice}, 400, codeInvalidRequest, "", "notifications/cancelled speaks of a session: send the session's Mcp-Session-Id"},
		// The refusal carries the response's id: MCP allows an error
		// without one, which the Go SDK client cannot decode and takes
		// for a broken connection (as README states).
		{"elicitation answer", call{body: answer, token: alice, headers: v25()}, 400, codeInvalidRequest, "0", "a response to a server's request needs the Mcp-Session-Id of the session that asked"},
		{"elicitation answer in a batch", call{body: "[" + answer + "]", token: alice, headers: map[string]string{"MCP-Protocol-Version": "2025-03-26"}}, 400, codeInvalidRequest, "0", "a response to a server's request needs the Mcp-Session-Id of the session that asked"},
		{"error answer", call{body: `{"jsonrpc":"2.0","id":"s-1","error":{"code":-1,"message":"declined"}}`, token: alice, headers: v25()}, 400, codeInvalidRequest, `"s-1"`, "a response to a server's request needs the Mcp-Session-Id of the session that asked"},
		{"logging/setLevel", call{body: `{"jsonrpc":"2.0","id":7,"method":"logging/setLevel","params":{"level":"debug"}}`, token: alice, headers: v25()}, 400, codeInvalidRequest, "7", "logging/setLevel sets the level of a session: send the session's Mcp-Session-Id"},
		{"logging/setLevel in a batch", call{body: `[{"jsonrpc":"2.0","id":7,"method":"logging/setLevel","params":{"level":"debug"}}]`, token: alice, headers: map[string]string{"MCP-Protocol-Version": "2025-03-26"}}, 400, codeInvalidRequest, "7", "logging/setLevel sets the level of a session: send the session's Mcp-Session-Id"},
		// Stateless and in-session flows pass.
		{"initialize", call{body: `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, token: alice}, 0, 0, "", ""},
		{"notifications/initialized", call{body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, token: alice, headers: v25()}, 0, 0, "", ""},
		{"tools/call", call{body: toolCall("read_a"), token: alice, headers: v25()}, 0, 0, "", ""},
		{"GET in a session", call{method: http.MethodGet, token: alice, headers: v25("Mcp-Session-Id", sid)}, 0, 0, "", ""},
		{"DELETE in a session", call{method: http.MethodDelete, token: alice, headers: v25("Mcp-Session-Id", sid)}, 0, 0, "", ""},
		{"notifications/cancelled in a session", call{body: cancelled, token: alice, headers: v25("Mcp-Session-Id", sid)}, 0, 0, "", ""},
		{"elicitation answer in a session", call{body: answer, token: alice, headers: v25("Mcp-Session-Id", sid)}, 0, 0, "", ""},
		{"logging/setLevel in a session", call{body: `{"jsonrpc":"2.0","id":7,"method":"logging/setLevel","params":{"level":"debug"}}`, token: alice, headers: v25("Mcp-Session-Id", sid)}, 0, 0, "", ""},
		// 2026-07-28 cancels by closing the answer's stream; the
		// notification is for stdio, and over HTTP names a call by id
		// alone.
		{"notifications/cancelled 2026-07-28", call{body: cancelled, token: alice, headers: v26("Mcp-Method", "notifications/cancelled")}, 202, 0, "", "notifications/cancelled is not sent over HTTP in 2026-07-28 (closing the answer's event stream cancels a call): dropped"},
		{"notifications/cancelled 2026-07-28 with an id", call{body: `{"jsonrpc":"2.0","id":5,"method":"notifications/cancelled","params":{"requestId":1}}`, token: alice, headers: v26("Mcp-Method", "notifications/cancelled")}, 400, codeInvalidRequest, "5", "notifications/cancelled is not sent over HTTP in 2026-07-28 (closing the answer's event stream cancels a call)"},
		// The client notifications 2026-07-28 removed, which a dual-era
		// client library may still send (the Go SDK's roots/list_changed):
		// dropped, never refused, as a refusal without an id ends a Go SDK
		// client's connection (TestRootsChangedThroughGateway).
		{"notifications/roots/list_changed 2026-07-28", call{body: `{"jsonrpc":"2.0","method":"notifications/roots/list_changed","params":{}}`, token: alice, headers: v26("Mcp-Method", "notifications/roots/list_changed")}, 202, 0, "", "notifications/roots/list_changed is not sent over HTTP in 2026-07-28: dropped"},
		{"notifications/roots/list_changed 2026-07-28, no Mcp-Method", call{body: `{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}`, token: alice, headers: v26()}, 202, 0, "", "notifications/roots/list_changed is not sent over HTTP in 2026-07-28: dropped"},
		{"notifications/progress 2026-07-28", call{body: `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":0,"progress":1}}`, token: alice, headers: v26("Mcp-Method", "notifications/progress")}, 202, 0, "", "notifications/progress is not sent over HTTP in 2026-07-28: dropped"},
		{"notifications/initialized 2026-07-28", call{body: `{"jsonrpc":"2.0","method":"notifications/initialized"}`, token: alice, headers: v26("Mcp-Method", "notifications/initialized")}, 202, 0, "", "notifications/initialized is not sent over HTTP in 2026-07-28: dropped"},
		{"notifications/roots/list_changed 2026-07-28 with an id", call{body: `{"jsonrpc":"2.0","id":6,"method":"notifications/roots/list_changed"}`, token: alice, headers: v26("Mcp-Method", "notifications/roots/list_changed")}, 400, codeInvalidRequest, "6", "notifications/roots/list_changed is not sent over HTTP in 2026-07-28"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, tt.c)
			body := readBody(t, resp)
			forwarded := len(h.up.requests()) != before
			// The event is written after the answer, the forwarded
			// one's once the proxy returns.
			for deadline := time.Now().Add(5 * time.Second); h.logs.Len() == 0 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			events := h.logs.TakeAll()
			// One event per message read: a batch refused before the
			// policy decided it has one for each of its messages.
			wantEvents := 1
			if tt.name == "batch with a cancellation" {
				wantEvents = 2
			}
			if len(events) != wantEvents {
				t.Fatalf("audit events = %d, want %d", len(events), wantEvents)
			}
			ev := events[len(events)-1].ContextMap()
			if tt.status == 0 {
				if !forwarded || resp.StatusCode >= 300 {
					t.Fatalf("status = %d (%s), forwarded %v; want forwarded", resp.StatusCode, body, forwarded)
				}
				if ev["decision"] != "allow" {
					t.Errorf("audit decision = %v, want allow", ev["decision"])
				}
				return
			}
			if resp.StatusCode != tt.status || forwarded {
				t.Fatalf("status = %d (%s), forwarded %v; want %d, not forwarded", resp.StatusCode, body, forwarded, tt.status)
			}
			method := tt.c.method
			if method == "" {
				method = http.MethodPost
			}
			want := map[string]any{"decision": "deny", "status": int64(tt.status), "http_method": method, "reason": tt.reason}
			for k, v := range want {
				if ev[k] != v {
					t.Errorf("audit %s = %v, want %v", k, ev[k], v)
				}
			}
			if tt.status == http.StatusAccepted {
				// Dropped: answered as a notification taken.
				if body != "" || resp.Header.Get("Content-Type") != "" {
					t.Errorf("dropped notification answered %q (Content-Type %q), want no body", body, resp.Header.Get("Content-Type"))
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if allow := resp.Header.Get("Allow"); (tt.status == http.StatusMethodNotAllowed) != (allow == "POST") {
				t.Errorf("Allow = %q with status %d, want POST with 405 only", allow, tt.status)
			}
			code, id, msg := rpcErr(t, body)
			if code != tt.code || string(id) != tt.id || msg != tt.reason {
				t.Errorf("error = %d %q id %s, want %d %q id %q", code, msg, id, tt.code, tt.reason, tt.id)
			}
		})
	}
}

// doMulti is h.do, with a header value holding NUL-separated values sent
// as several header fields.
func doMulti(t *testing.T, h *harness, c call) *http.Response {
	t.Helper()
	multi := map[string][]string{}
	for k, v := range c.headers {
		if strings.Contains(v, "\x00") {
			multi[k] = strings.Split(v, "\x00")
			delete(c.headers, k)
		}
	}
	if len(multi) == 0 {
		return h.do(t, c)
	}
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	if c.method == "" {
		c.method = http.MethodPost
	}
	req, err := http.NewRequest(c.method, h.front.URL+"/mcp", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if c.method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	for k, vv := range multi {
		for _, v := range vv {
			req.Header.Add(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// serveDirect serves one POST of body through g.Serve with next, as
// Caddy calls it, and returns what the client received.
func serveDirect(t *testing.T, g *Gateway, body string, next NextFunc) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
	r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	w := httptest.NewRecorder()
	if err := g.Serve(w, r, next); err != nil {
		t.Fatalf("Serve() = %v", err)
	}
	return w
}

// pinnedConfig is testConfig with tool pinning on, as by default: every
// event stream is read event by event.
func pinnedConfig(t *testing.T) Config {
	cfg := testConfig(t)
	cfg.PinTools, cfg.Pins = PinFirstUse, newMemPins()
	return cfg
}

// TestSSEByteByByte: an event stream written one byte at a time (each
// byte its own Write and Flush, as reverse_proxy passes on what it reads)
// is filtered as when written whole: every line terminator, a "\r\n" cut
// between its bytes, the tools/list answer filtered.
func TestSSEByteByByte(t *testing.T) {
	stream := ": hello\r\n\r\n" +
		"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"delete_all\"}}\r\r\n" +
		"id: 7\nevent: message\rdata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":" + toolsJSON + "}}\n\n" +
		"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"" // unfinished: discarded
	for _, size := range []int{1, 2, 7, len(stream)} {
		g := newGateway(t, pinnedConfig(t))
		w := serveDirect(t, g, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			for p := stream; len(p) > 0; {
				n := min(size, len(p))
				if _, err := io.WriteString(w, p[:n]); err != nil {
					return err
				}
				w.(http.Flusher).Flush()
				p = p[n:]
			}
			return nil
		})
		rd := mcpparse.NewReader(w.Body, 0)
		var evs []mcpparse.Event
		for {
			ev, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("written %d bytes at a time: reading the answer %q: %v", size, w.Body, err)
			}
			ev.Raw = nil
			evs = append(evs, ev)
		}
		if len(evs) != 3 {
			t.Fatalf("written %d bytes at a time: %d events, want 3: %+v", size, len(evs), evs)
		}
		if ev := evs[0]; ev.Comment != " hello" || ev.HasData {
			t.Errorf("written %d bytes at a time: first event %+v, want the comment", size, ev)
		}
		if ev := evs[1]; !strings.Contains(ev.Data, "notifications/message") {
			t.Errorf("written %d bytes at a time: second event %+v, want the notification", size, ev)
		}
		if ev := evs[2]; ev.ID != "7" || ev.Event != "message" {
			t.Errorf("written %d bytes at a time: third event %+v, want id 7", size, ev)
		}
		if diff := cmp.Diff([]string{"read_a", "read_c"}, toolNames(t, evs[2].Data)); diff != "" {
			t.Errorf("written %d bytes at a time: tools (-want +got):\n%s", size, diff)
		}
	}
}

// TestSSEIdleStreamCost: an open event stream that the gateway reads
// (tool pinning on) runs on next's goroutine alone, and holds no buffer
// while it waits between events.
func TestSSEIdleStreamCost(t *testing.T) {
	const streams = 8
	g := newGateway(t, pinnedConfig(t))
	if keep, _, _ := g.pins.listed(t.Context(), "read_a", []byte(`{"name":"read_a","inputSchema":{"type":"object"}}`)); !keep {
		t.Fatal("definition not pinned")
	}
	before := runtime.NumGoroutine()
	idle := make(chan int)
	release := make(chan struct{})
	done := make(chan struct{})
	for i := range streams {
		go func() {
			defer func() { done <- struct{}{} }()
			serveDirect(t, g, toolCall("read_a"), func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				// A whole event, and one cut in two: the second write
				// completes it.
				io.WriteString(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\nevent: mess")
				io.WriteString(w, fmt.Sprintf("age\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":%d}}\n\n", i))
				idle <- w.(*responseWriter).sse.Held()
				<-release
				return nil
			})
		}()
	}
	for range streams {
		if held := <-idle; held != 0 {
			t.Errorf("an idle stream holds a %d-byte buffer, want none", held)
		}
	}
	// Each stream has the goroutine that serves it; the gateway adds at
	// most the one that checks all open streams for revocation.
	if extra := runtime.NumGoroutine() - before - streams; extra > 1 {
		t.Errorf("%d streams open: %d goroutines more than the streams' own", streams, extra)
	}
	buf := make([]byte, 1<<20)
	if stacks := string(buf[:runtime.Stack(buf, true)]); strings.Contains(stacks, "gateway.(*responseWriter)") {
		t.Errorf("a goroutine of the gateway's response writer runs while the streams are idle:\n%s", stacks)
	}
	close(release)
	for range streams {
		<-done
	}
}
