package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

func methodConfig(t testing.TB) Config {
	cfg := testConfig(t)
	cfg.Methods = []Rule{
		{Pattern: "x-acme/*"},
		{Pattern: "admin-ext/*", Scopes: []string{"admin"}},
		{Pattern: "agents-ext/run", Actor: ActorRule{RequireAgent: true}},
	}
	// A catch-all, so a case variant of delete_* would otherwise pass on
	// tools:read.
	cfg.Tools = append(cfg.Tools, Rule{Pattern: "*", Scopes: []string{"tools:read"}})
	// Admin prompts and a catch-all, so a name an upstream reads as admin_x
	// or σ_x would otherwise pass on prompts:read.
	cfg.Prompts = append([]Rule{
		{Pattern: "admin_*", Scopes: []string{"admin"}},
		{Pattern: "σ_*", Scopes: []string{"admin"}},
	}, cfg.Prompts...)
	cfg.Prompts = append(cfg.Prompts, Rule{Pattern: "*", Scopes: []string{"prompts:read"}})
	return cfg
}

// TestNameWithTrailingDots: Windows drops the dots a path segment ends
// with ("secret." is the file or URL path secret), so a server there that
// puts a tool's or prompt's name in a path reads "delete_db." as
// delete_db. Such a name is refused where it falls under another rule
// than its reading without them (as a resource URI's segment ending in
// "." is: TestResourceURIs); other names ending in dots pass.
func TestNameWithTrailingDots(t *testing.T) {
	cfg := testConfig(t)
	cfg.Tools = []Rule{
		{Pattern: "delete_db", Scopes: []string{"admin"}},
		{Pattern: "*", Scopes: []string{"tools:read"}},
	}
	cfg.Prompts = []Rule{
		{Pattern: "report", Scopes: []string{"admin"}},
		{Pattern: "team/secrets", Scopes: []string{"admin"}},
		{Pattern: "*", Scopes: []string{"prompts:read"}},
	}
	invoke := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + quote(name) + `,"arguments":{}}}`
	}
	get := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":` + quote(name) + `}}`
	}
	for _, tt := range []struct {
		name, body string
		status     int // 0: forwarded
		code       int
	}{
		{"tool", invoke("delete_db."), 400, codeInvalidParams},
		{"tool, two dots", invoke("delete_db.."), 400, codeInvalidParams},
		{"tool itself", invoke("delete_db"), 403, codeRefused},
		{"tool under the same rule", invoke("notes."), 0, 0},
		{"prompt", get("report."), 400, codeInvalidParams},
		{"prompt, last segment", get("team/secrets."), 400, codeInvalidParams},
		{"prompt, inner segment", get("team./secrets"), 400, codeInvalidParams},
		{"prompt, backslash", get(`team.\secrets`), 400, codeInvalidParams},
		{"prompt completion", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"report."},"argument":{"name":"a","value":""}}}`, 400, codeInvalidParams},
		{"prompt, data stream", get("team/secrets::$DATA"), 400, codeInvalidParams},
		{"prompt, data stream in lower case", get("report::$data"), 400, codeInvalidParams},
		{"prompt, dot and data stream", get("report.::$DATA"), 400, codeInvalidParams},
		{"prompt, data stream and dot", get("report::$DATA."), 400, codeInvalidParams},
		{"prompt, directory stream", get(`team::$INDEX_ALLOCATION\secrets`), 400, codeInvalidParams},
		{"prompt, named directory stream", get("team:$I30:$INDEX_ALLOCATION/secrets"), 400, codeInvalidParams},
		{"prompt completion, data stream", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"report::$DATA"},"argument":{"name":"a","value":""}}}`, 400, codeInvalidParams},
		{"prompt under the same rule", get("tips."), 0, 0},
		{"prompt's data stream under the same rule", get("tips::$DATA"), 0, 0},
		{"prompt with another stream", get("report:notes"), 0, 0},
		{"prompt with inner dots", get("v1.2/notes"), 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfg, nil)
			c := claims()
			c["scope"] = "mcp tools:read prompts:read"
			resp := h.do(t, call{body: tt.body, token: mint(t, c)})
			checkAnswer(t, h, resp, tt.status, tt.code, "1")
		})
	}
	for _, tt := range []struct{ method, answer, kept string }{
		{"tools/list", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_db.","inputSchema":{"type":"object"}},{"name":"notes.","inputSchema":{"type":"object"}}]}}`, "notes."},
		{"prompts/list", `{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"report."},{"name":"tips."}]}}`, "tips."},
	} {
		t.Run(tt.method, func(t *testing.T) {
			h := newHarness(t, cfg, answerAs("json", tt.answer))
			c := claims()
			c["scope"] = "mcp tools:read prompts:read"
			resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"` + tt.method + `"}`, token: mint(t, c)})
			if body := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(body, quote(tt.kept)) || strings.Count(body, `."`) != 1 {
				t.Fatalf("%s = %d %s, want %s alone", tt.method, resp.StatusCode, body, tt.kept)
			}
		})
	}
}

// TestPromptNameWithADrive: a server on Windows that joins a prompt's
// name, or each of its segments, to its prompts directory (os.path.join
// and pathlib, Node's path.win32.resolve, Java's Path.resolve) reads a
// segment that begins with a drive letter and ':' as a path on that
// drive: "C:report" is report in the directory of a server on drive C,
// "C:/srv/prompts/report" the absolute path, and "team/C:secrets"
// team/secrets when the segments are joined one by one. Such a name is
// refused, as "/report" and "../report" are, and left out of lists.
func TestPromptNameWithADrive(t *testing.T) {
	cfg := testConfig(t)
	cfg.Prompts = []Rule{
		{Pattern: "report", Scopes: []string{"admin"}},
		{Pattern: "team/secrets", Scopes: []string{"admin"}},
		{Pattern: "*", Scopes: []string{"prompts:read"}},
	}
	get := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":` + quote(name) + `}}`
	}
	for _, tt := range []struct {
		name, body string
		status     int // 0: forwarded
		code       int
	}{
		{"drive-relative", get("C:report"), 400, codeInvalidParams},
		{"drive-relative, lower case", get("c:report"), 400, codeInvalidParams},
		{"another drive", get("D:report"), 400, codeInvalidParams},
		{"absolute", get("C:/srv/prompts/report"), 400, codeInvalidParams},
		{"absolute, backslashes", get(`C:\srv\prompts\report`), 400, codeInvalidParams},
		{"a drive alone", get("C:"), 400, codeInvalidParams},
		{"a drive in a later segment", get("team/C:secrets"), 400, codeInvalidParams},
		{"a drive after a backslash", get(`team\c:secrets`), 400, codeInvalidParams},
		{"completion", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"C:report"},"argument":{"name":"a","value":""}}}`, 400, codeInvalidParams},
		{"the prompt itself", get("report"), 403, codeRefused},
		{"a longer name before the colon", get("notes:report"), 0, 0},
		{"a colon later in the segment", get("team/ab:c"), 0, 0},
		{"a digit and a colon", get("1:report"), 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfg, nil)
			c := claims()
			c["scope"] = "mcp prompts:read"
			resp := h.do(t, call{body: tt.body, token: mint(t, c)})
			checkAnswer(t, h, resp, tt.status, tt.code, "1")
		})
	}
	t.Run("prompts/list", func(t *testing.T) {
		answer := `{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"C:report"},{"name":"team/C:secrets"},{"name":"notes"}]}}`
		h := newHarness(t, cfg, answerAs("json", answer))
		c := claims()
		c["scope"] = "mcp prompts:read"
		resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"prompts/list"}`, token: mint(t, c)})
		if body := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(body, `"notes"`) || strings.Contains(body, "C:") {
			t.Fatalf("prompts/list = %d %s, want notes alone", resp.StatusCode, body)
		}
	})
}

// TestNameLikeAShortName: on a Windows volume with 8.3 names, a server
// that puts a prompt's name in a file path reads "REPORT~1" as the file
// whose short name it is, report_q3 (or "REPORT~1.MD" as report_q3.md),
// which the gateway cannot tell from the name. Such a name is refused
// where another rule than its own exists, which the longer name could
// fall under (as a resource URI's "~" and digit are: TestResourceURIs),
// and left out of lists; under its own rule alone it passes. (Tool names
// hold no '~'.)
func TestNameLikeAShortName(t *testing.T) {
	cfg := testConfig(t)
	cfg.Prompts = []Rule{
		{Pattern: "report_*", Scopes: []string{"admin"}},
		{Pattern: "*", Scopes: []string{"prompts:read"}},
	}
	get := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":` + quote(name) + `}}`
	}
	for _, tt := range []struct {
		name, body string
		status     int // 0: forwarded
		code       int
	}{
		{"prompt", get("REPORT~1"), 400, codeInvalidParams},
		{"prompt with an extension", get("report~1.md"), 400, codeInvalidParams},
		{"prompt, a later number", get("REPORT~12"), 400, codeInvalidParams},
		{"prompt in a directory", get(`team\SECRET~1\x`), 400, codeInvalidParams},
		{"prompt completion", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"REPORT~1"},"argument":{"name":"a","value":""}}}`, 400, codeInvalidParams},
		{"a tilde alone", get("notes~"), 0, 0},
		{"a tilde and a letter", get("notes~x"), 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfg, nil)
			c := claims()
			c["scope"] = "mcp prompts:read"
			resp := h.do(t, call{body: tt.body, token: mint(t, c)})
			checkAnswer(t, h, resp, tt.status, tt.code, "1")
		})
	}
	t.Run("prompts/list", func(t *testing.T) {
		answer := `{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"REPORT~1"},{"name":"notes"}]}}`
		h := newHarness(t, cfg, answerAs("json", answer))
		c := claims()
		c["scope"] = "mcp prompts:read"
		resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"prompts/list"}`, token: mint(t, c)})
		if body := readBody(t, resp); resp.StatusCode != 200 || !strings.Contains(body, `"notes"`) || strings.Contains(body, "~1") {
			t.Fatalf("prompts/list = %d %s, want notes alone", resp.StatusCode, body)
		}
	})
	// Under its own rule alone every longer name is decided as the
	// short one is.
	t.Run("its own rule alone", func(t *testing.T) {
		cfg := cfg
		cfg.Prompts = []Rule{{Pattern: "*", Scopes: []string{"prompts:read"}}}
		h := newHarness(t, cfg, nil)
		c := claims()
		c["scope"] = "mcp prompts:read"
		resp := h.do(t, call{body: get("REPORT~1"), token: mint(t, c)})
		checkAnswer(t, h, resp, 0, 0, "1")
	})
}

// TestPromptNameCutWhereAURLPathEnds: a server that puts a prompt's name
// in a URL, as the dot-segment refusals have it, ends the URL's path at
// "?" or "#" ("report?x" is the prompt report there), and a servlet
// container drops ";" and what follows: a name is refused where it falls
// under another rule than its text up to such a character does, in
// prompts/get, in a completion and in a prompts/list answer; other names
// holding them pass.
func TestPromptNameCutWhereAURLPathEnds(t *testing.T) {
	cfg := testConfig(t)
	cfg.Prompts = []Rule{
		{Pattern: "report", Scopes: []string{"admin"}},
		{Pattern: "*_admin", Scopes: []string{"admin"}},
		{Pattern: "team/secrets", Scopes: []string{"admin"}},
		{Pattern: "*", Scopes: []string{"prompts:read"}},
	}
	get := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":` + quote(name) + `}}`
	}
	tests := []struct {
		name, body string
		status     int // 0: forwarded
		code       int
	}{
		{"query", get("report?x"), 400, codeInvalidParams},
		{"empty query", get("report?"), 400, codeInvalidParams},
		{"fragment", get("report#x"), 400, codeInvalidParams},
		{"path parameter", get("report;x"), 400, codeInvalidParams},
		{"under a suffix glob", get("team_admin?x"), 400, codeInvalidParams},
		{"in another case", get("Report?x"), 400, codeInvalidParams},
		{"completion", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"report#x"},"argument":{"name":"a","value":""}}}`, 400, codeInvalidParams},
		{"path parameter in a segment", get("team;x/secrets"), 400, codeInvalidParams},
		{"path parameters in two segments", get("team;x/secrets;y"), 400, codeInvalidParams},
		{"dot segment with a path parameter", get("x/..;/report"), 400, codeInvalidParams},
		// A WHATWG URL parser (Node's URL and fetch) reads "\\" in an
		// http URL's path as "/".
		{"backslash for a slash", get(`team\secrets`), 400, codeInvalidParams},
		{"backslash for a slash, in another case", get(`Team\Secrets`), 400, codeInvalidParams},
		{"backslash and a path parameter", get(`team;x\secrets`), 400, codeInvalidParams},
		{"backslash after a path parameter", get(`team\secrets;x`), 400, codeInvalidParams},
		// Each reading also with "\" for "/": the text up to ";" (the
		// path-parameter reading is team/secrets/y, under "*"), and a
		// dot segment once the path parameter is dropped.
		{"backslash, cut at a path parameter", get(`team\secrets;x\y`), 400, codeInvalidParams},
		{"backslash, dot segment with a path parameter", get(`x\..;\report`), 400, codeInvalidParams},
		{"a backslash under the same rule", get(`c\tips`), 0, 0},
		// A server that resolves the name against a base URL of the
		// name's scheme (new URL(name, base), Python's urljoin) drops
		// the scheme: "http:team/secrets" is team/secrets there, and
		// "file:/report" the absolute path /report.
		{"a scheme a base URL drops", get("http:team/secrets"), 400, codeInvalidParams},
		{"a scheme in another case", get("HTTP:team/secrets"), 400, codeInvalidParams},
		{"a file scheme", get("file:team/secrets"), 400, codeInvalidParams},
		{"a scheme and a query", get("https:report?x"), 400, codeInvalidParams},
		{"a scheme and an absolute path", get("http:/c_tips"), 400, codeInvalidParams},
		{"a file scheme and an absolute path", get("file:/etc/passwd"), 400, codeInvalidParams},
		{"a scheme and a backslash", get(`http:\c_tips`), 400, codeInvalidParams},
		// After "file:" a Windows drive letter begins an absolute path
		// too: "file:C:/x" is file:///C:/x whatever the base.
		{"a file scheme and a drive letter", get("file:C:/c_tips"), 400, codeInvalidParams},
		{"a file scheme and a drive letter with a bar", get("File:c|/c_tips"), 400, codeInvalidParams},
		{"a file scheme and a drive letter alone", get("file:C:"), 400, codeInvalidParams},
		{"a file scheme and a name with a colon", get("file:c:tips"), 0, 0},
		// Without a scheme too: new URL("C|/x", "file:///srv/prompts/")
		// is file:///C:/x.
		{"a drive letter with a bar", get("C|/c_tips"), 400, codeInvalidParams},
		{"a drive letter with a bar alone", get("c|"), 400, codeInvalidParams},
		{"a bar after a letter and more", get("c|tips"), 0, 0},
		// Against a base of another scheme, WHATWG reads the text after
		// a special scheme up to its first '/' as a host, the rest as
		// an absolute path: "https:store/prompts/c_tips" is
		// https://store/prompts/c_tips against http://store/prompts/.
		{"a host and a path after a special scheme", get("https:store/prompts/c_tips"), 400, codeInvalidParams},
		{"a host and a path after a special scheme, with a backslash", get(`WS:store\c_tips`), 400, codeInvalidParams},
		{"a drive letter after another scheme, read as a host", get("http:C:/c_tips"), 400, codeInvalidParams},
		{"a scheme, completed", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"ws:report"},"argument":{"name":"a","value":""}}}`, 400, codeInvalidParams},
		{"a scheme under the same rule", get("http:c_tips"), 0, 0},
		{"a colon after no such scheme", get("notes:report"), 0, 0},
		{"a colon after a path", get("team/http:secrets"), 0, 0},
		{"a segment of path parameters only", get("team/;x/secrets"), 400, codeInvalidParams},
		{"a first segment of path parameters only", get(";x/team/secrets"), 400, codeInvalidParams},
		{"a last segment of path parameters only", get("report/;x"), 400, codeInvalidParams},
		{"a query after a slash", get("report/?x"), 400, codeInvalidParams},
		{"a fragment after a slash", get("report/#x"), 400, codeInvalidParams},
		{"the prompt itself", get("report"), 403, codeRefused},
		{"the team's prompt", get("team/secrets"), 403, codeRefused},
		{"a path parameter under the same rule", get("c;x/tips"), 0, 0},
		{"under the same rule", get("c#_tips"), 0, 0},
		{"a question", get("what?"), 0, 0},
		{"from the start", get("#general"), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfg, nil)
			c := claims()
			c["scope"] = "mcp prompts:read"
			resp := h.do(t, call{body: tt.body, token: mint(t, c)})
			checkAnswer(t, h, resp, tt.status, tt.code, "1")
		})
	}
	t.Run("list", func(t *testing.T) {
		h := newHarness(t, cfg, answerAs("json", `{"jsonrpc":"2.0","id":1,"result":{"prompts":[{"name":"report?x"},{"name":"http:report"},{"name":"c#_tips"}]}}`))
		c := claims()
		c["scope"] = "mcp prompts:read"
		resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"prompts/list"}`, token: mint(t, c)})
		if body := readBody(t, resp); resp.StatusCode != 200 || strings.Contains(body, "report") || !strings.Contains(body, "c#_tips") {
			t.Fatalf("prompts/list = %d %s, want c#_tips alone", resp.StatusCode, body)
		}
	})
}

// TestMethodVariants: a method the request's revision does not define is
// refused with -32601 (404 in 2026-07-28, 400 before) and the upstream sees
// nothing; defined methods and methods a method rule names reach it byte
// for byte. Tool and prompt names that a server could trim, fold or
// normalise are refused the same way.
func TestMethodVariants(t *testing.T) {
	const meta26 = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
	h := newHarness(t, methodConfig(t), nil)
	token := mint(t, func() jwt.MapClaims { c := claims(); c["scope"] = "mcp tools:read prompts:read"; return c }())
	req := func(method, params string) string {
		return `{"jsonrpc":"2.0","id":1,"method":` + quote(method) + `,"params":{` + params + `}}`
	}
	note := func(method string) string { return `{"jsonrpc":"2.0","method":` + quote(method) + `}` }
	v := func(version string) map[string]string { return map[string]string{"MCP-Protocol-Version": version} }
	v26 := func(method, name string) map[string]string {
		h := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
		if name != "" {
			h["Mcp-Name"] = name
		}
		return h
	}
	call26 := func(name string) string { return req("tools/call", `"name":`+quote(name)+`,`+meta26) }
	tests := []struct {
		name    string
		body    string
		headers map[string]string
		status  int // 200/202: forwarded
		code    int
	}{
		// Loose spellings of defined methods.
		{"Tools/Call", req("Tools/Call", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"TOOLS/CALL", req("TOOLS/CALL", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"trailing space", req("tools/call ", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"leading space", req(" tools/call", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"trailing NUL", req("tools/call\x00", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"trailing tab", req("tools/call\t", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"trailing newline", req("tools/call\n", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"zero-width space", req("tools/call\u200b", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"fullwidth t", req("\uff54ools/call", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"Cyrillic o", req("t\u043eols/call", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"trailing slash", req("tools/call/", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"double slash", req("tools//call", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"backslash", req(`tools\call`, `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"dot", req("tools.call", `"name":"delete_all"`), nil, 400, codeMethodNotFound},
		{"resources/Read", req("resources/Read", `"uri":"file:///secret/key"`), nil, 400, codeMethodNotFound},
		{"empty method", req("", ""), nil, 400, 0},
		{"unknown", req("admin/shutdown", ""), nil, 400, codeMethodNotFound},
		// Notifications.
		{"notification Tools/Call", `{"jsonrpc":"2.0","method":"Tools/Call","params":{"name":"delete_all"}}`, nil, 400, codeMethodNotFound},
		{"notifications/Initialized", note("notifications/Initialized"), nil, 400, codeMethodNotFound},
		{"notifications/cancelled with space", note("notifications/cancelled "), nil, 400, codeMethodNotFound},
		{"server notification from a client", note("notifications/tools/list_changed"), nil, 400, codeMethodNotFound},
		{"notifications/initialized", note("notifications/initialized"), nil, 200, 0},
		// Batches (2025-03-26): one undefined method refuses all.
		{"batch with Tools/Call", `[` + req("tools/list", "") + `,{"jsonrpc":"2.0","id":2,"method":"Tools/Call","params":{"name":"delete_all"}}]`, nil, 400, codeMethodNotFound},
		// Per revision.
		{"ping 2025-06-18", req("ping", ""), v("2025-06-18"), 200, 0},
		{"tasks/get 2025-06-18", req("tasks/get", `"taskId":"t"`), v("2025-06-18"), 400, codeMethodNotFound},
		{"tasks/list 2025-06-18", req("tasks/list", ""), v("2025-06-18"), 400, codeMethodNotFound},
		{"notifications/tasks/status 2025-03-26", note("notifications/tasks/status"), v("2025-03-26"), 400, codeMethodNotFound},
		{"server/discover 2025-11-25", req("server/discover", ""), v("2025-11-25"), 400, codeMethodNotFound},
		{"subscriptions/listen 2025-11-25", req("subscriptions/listen", ""), v("2025-11-25"), 400, codeMethodNotFound},
		{"tasks/update 2025-11-25", req("tasks/update", `"taskId":"t"`), v("2025-11-25"), 400, codeMethodNotFound},
		{"server/discover 2026", req("server/discover", meta26), v26("server/discover", ""), 200, 0},
		{"ping 2026", req("ping", meta26), v26("ping", ""), 404, codeMethodNotFound},
		{"logging/setLevel 2026", req("logging/setLevel", `"level":"debug",`+meta26), v26("logging/setLevel", ""), 404, codeMethodNotFound},
		{"Tools/Call 2026", req("Tools/Call", `"name":"delete_all",`+meta26), v26("Tools/Call", ""), 404, codeMethodNotFound},
		// Method rules pass extension methods, exactly as written.
		{"x-acme/run", req("x-acme/run", ""), nil, 200, 0},
		{"x-acme/run notification", note("x-acme/run"), nil, 200, 0},
		{"X-ACME/run", req("X-ACME/run", ""), nil, 400, codeMethodNotFound},
		{"x-acme/run with space", req("x-acme/run ", ""), nil, 400, codeMethodNotFound},
		{"x-acme/run with NUL", req("x-acme/run\x00", ""), nil, 400, codeMethodNotFound},
		{"x-acme/run with é", req("x-acme/r\u00e9n", ""), nil, 400, codeMethodNotFound},
		{"x-acme/run 2026", req("x-acme/run", meta26), v26("x-acme/run", ""), 200, 0},
		{"admin-ext without admin", req("admin-ext/do", ""), nil, 403, codeRefused},
		{"agent-only extension for a user", req("agents-ext/run", ""), nil, 403, codeRefused},
		// Tool names: SEP-986.
		{"tool read_a", call26("read_a.b/c-D"), v26("tools/call", "read_a.b/c-D"), 200, 0},
		{"tool with trailing space", toolCall("read_a "), nil, 400, codeInvalidParams},
		{"tool with leading space", toolCall(" delete_all"), nil, 400, codeInvalidParams},
		{"tool with NUL", toolCall("read_a\x00"), nil, 400, codeInvalidParams},
		{"tool with tab", toolCall("read_a\t"), nil, 400, codeInvalidParams},
		{"tool with zero-width space", toolCall("read_\u200bdelete_all"), nil, 400, codeInvalidParams},
		{"tool with fullwidth letter", toolCall("read_\uff41"), nil, 400, codeInvalidParams},
		{"tool with Kelvin sign", toolCall("read_\u212a"), nil, 400, codeInvalidParams},
		{"tool with soft hyphen", toolCall("read_\u00ada"), nil, 400, codeInvalidParams},
		{"tool with colon", toolCall("read_a:b"), nil, 400, codeInvalidParams},
		{"tool name of 129 characters", toolCall("read_" + strings.Repeat("a", 124)), nil, 400, codeInvalidParams},
		{"tool name of 128 characters", toolCall("read_" + strings.Repeat("a", 123)), nil, 200, 0},
		{"empty tool name", toolCall(""), nil, 400, codeInvalidParams},
		// Case variants that fall under another rule than their lower-case
		// form (delete_* needs admin; * only tools:read).
		{"tool delete_all", toolCall("delete_all"), nil, 403, 0},
		{"tool Delete_all", toolCall("Delete_all"), nil, 400, codeInvalidParams},
		{"tool DELETE_ALL", toolCall("DELETE_ALL"), nil, 400, codeInvalidParams},
		{"tool deLete_all", toolCall("deLete_all"), nil, 400, codeInvalidParams},
		{"tool Delete_all 2026", call26("Delete_all"), v26("tools/call", "Delete_all"), 400, codeInvalidParams},
		{"tool Other_thing", toolCall("Other_thing"), nil, 200, 0},
		// Separator variants, which an upstream may read as '_'.
		{"tool delete-all", toolCall("delete-all"), nil, 400, codeInvalidParams},
		{"tool delete.all", toolCall("delete.all"), nil, 400, codeInvalidParams},
		{"tool delete/all", toolCall("delete/all"), nil, 400, codeInvalidParams},
		{"tool Delete-All", toolCall("Delete-All"), nil, 400, codeInvalidParams},
		{"tool write-x", toolCall("write-x"), nil, 400, codeInvalidParams},
		{"tool read-a", toolCall("read-a"), nil, 400, codeInvalidParams}, // read_* rather than *: refused too
		{"tool delete-all 2026", call26("delete-all"), v26("tools/call", "delete-all"), 400, codeInvalidParams},
		{"tool other-thing.v2", toolCall("other-thing.v2"), nil, 200, 0},
		// Dot and empty segments, which a server mapping names to paths
		// (files, URLs) resolves: read_/../delete_all is delete_all there.
		{"tool read_/../delete_all", toolCall("read_/../delete_all"), nil, 400, codeInvalidParams},
		{"tool read_/./x", toolCall("read_/./x"), nil, 400, codeInvalidParams},
		{"tool ..", toolCall(".."), nil, 400, codeInvalidParams},
		{"tool /delete_all", toolCall("/delete_all"), nil, 400, codeInvalidParams},
		{"tool read_//x", toolCall("read_//x"), nil, 400, codeInvalidParams},
		{"tool read_/x/", toolCall("read_/x/"), nil, 400, codeInvalidParams},
		{"tool read_/...x", toolCall("read_/...x"), nil, 200, 0},
		{"prompt summary/../admin_x", req("prompts/get", `"name":"summary/../admin_x"`), nil, 400, codeInvalidParams},
		{"prompt summary\\..\\admin_x", req("prompts/get", `"name":"summary\\..\\admin_x"`), nil, 400, codeInvalidParams},
		{"prompt /admin_x", req("prompts/get", `"name":"/admin_x"`), nil, 400, codeInvalidParams},
		// Percent-encoded octets: a URL parser resolves "%2e%2e" as "..", and
		// a server that decodes the name sees "/" and "\\" (and, decoding
		// twice, "%252e" as ".").
		{"prompt summary/%2e%2e/admin_x", req("prompts/get", `"name":"summary/%2e%2e/admin_x"`), nil, 400, codeInvalidParams},
		{"prompt summary/.%2E/admin_x", req("prompts/get", `"name":"summary/.%2E/admin_x"`), nil, 400, codeInvalidParams},
		{"prompt summary/%2E./admin_x", req("prompts/get", `"name":"summary/%2E./admin_x"`), nil, 400, codeInvalidParams},
		{"prompt %2e%2e/admin_x", req("prompts/get", `"name":"%2e%2e/admin_x"`), nil, 400, codeInvalidParams},
		{"prompt summary%2F..%2Fadmin_x", req("prompts/get", `"name":"summary%2F..%2Fadmin_x"`), nil, 400, codeInvalidParams},
		{"prompt summary%5c..%5cadmin_x", req("prompts/get", `"name":"summary%5c..%5cadmin_x"`), nil, 400, codeInvalidParams},
		{"prompt summary/%252e%252e/admin_x", req("prompts/get", `"name":"summary/%252e%252e/admin_x"`), nil, 400, codeInvalidParams},
		{"completion summary/%2e%2e/admin_x", req("completion/complete", `"ref":{"type":"ref/prompt","name":"summary/%2e%2e/admin_x"},"argument":{"name":"a","value":""}`), nil, 400, codeInvalidParams},
		{"prompt 100%", req("prompts/get", `"name":"summary_100%"`), nil, 200, 0},
		{"prompt 5%x", req("prompts/get", `"name":"summary_5%x"`), nil, 200, 0},
		{"prompt summary/x.y", req("prompts/get", `"name":"summary/x.y"`), nil, 200, 0},
		{"prompt summary-x", req("prompts/get", `"name":"summary-x"`), nil, 200, 0},
		{"prompt Summary", req("prompts/get", `"name":"Summary"`), nil, 400, codeInvalidParams},
		{"fullwidth tool 2026", call26("\uff44elete_all"), v26("tools/call", "=?base64?772EZWxldGVfYWxs?="), 400, codeInvalidParams},
		// Prompt names: no controls, whitespace, invisible or compatibility characters.
		{"prompt summary_é", req("prompts/get", `"name":"summary_\u00e9"`), nil, 200, 0},
		{"prompt with trailing space", req("prompts/get", `"name":"summary "`), nil, 400, codeInvalidParams},
		{"prompt with inner space", req("prompts/get", `"name":"summary x"`), nil, 400, codeInvalidParams},
		{"prompt with NUL", req("prompts/get", `"name":"summary\u0000"`), nil, 400, codeInvalidParams},
		{"prompt with newline", req("prompts/get", `"name":"summary\n"`), nil, 400, codeInvalidParams},
		{"prompt with fullwidth letter", req("prompts/get", `"name":"\uff53ummary"`), nil, 400, codeInvalidParams},
		{"prompt with zero-width joiner", req("prompts/get", `"name":"summary\u200d"`), nil, 400, codeInvalidParams},
		{"prompt with BOM", req("prompts/get", `"name":"\ufeffsummary"`), nil, 400, codeInvalidParams},
		{"prompt with ideographic space", req("prompts/get", `"name":"summary\u3000"`), nil, 400, codeInvalidParams},
		{"prompt decomposed", req("prompts/get", `"name":"summary_e\u0301"`), nil, 400, codeInvalidParams},
		// Prompt names whose full case mappings (upper, lower, fold, Turkish,
		// Lithuanian) give ASCII, several characters or another case class:
		// an upstream comparing with toUpperCase, upper() or casefold()
		// reads them as the admin prompt.
		{"prompt admin_x", req("prompts/get", `"name":"admin_x"`), nil, 403, codeRefused},
		{"prompt dotless ı", req("prompts/get", `"name":"adm\u0131n_x"`), nil, 400, codeInvalidParams},
		{"prompt dotted İ", req("prompts/get", `"name":"ADM\u0130N_X"`), nil, 400, codeInvalidParams},
		{"prompt i and dot above", req("prompts/get", `"name":"admi\u0307n_x"`), nil, 400, codeInvalidParams},
		{"prompt sharp s", req("prompts/get", `"name":"stra\u00dfe"`), nil, 400, codeInvalidParams},
		{"prompt capital sharp s", req("prompts/get", `"name":"STRA\u1e9eE"`), nil, 400, codeInvalidParams},
		{"prompt long s", req("prompts/get", `"name":"\u017fummary"`), nil, 400, codeInvalidParams},
		{"prompt Kelvin sign", req("prompts/get", `"name":"\u212aey"`), nil, 400, codeInvalidParams},
		{"prompt Angstrom sign", req("prompts/get", `"name":"\u212bngstrom"`), nil, 400, codeInvalidParams},
		{"prompt fi ligature", req("prompts/get", `"name":"\ufb01le"`), nil, 400, codeInvalidParams},
		{"prompt final sigma", req("prompts/get", `"name":"\u03c2_x"`), nil, 400, codeInvalidParams}, // casefold: σ_x
		{"prompt capital sigma", req("prompts/get", `"name":"\u03a3_x"`), nil, 400, codeInvalidParams},
		{"prompt σ_x", req("prompts/get", `"name":"\u03c3_x"`), nil, 403, codeRefused},
		// Ordinary non-ASCII names pass unchanged.
		{"prompt résumé", req("prompts/get", `"name":"r\u00e9sum\u00e9_\u00c9"`), nil, 200, 0},
		{"prompt über", req("prompts/get", `"name":"\u00fcber_\u00dcBER"`), nil, 200, 0},
		{"prompt Cyrillic", req("prompts/get", `"name":"\u0441\u0432\u043e\u0434\u043a\u0430"`), nil, 200, 0},
		{"prompt CJK", req("prompts/get", `"name":"\u8981\u7d04"`), nil, 200, 0},
		{"prompt Greek word", req("prompts/get", `"name":"\u03bb\u03cc\u03b3\u03bf\u03c2"`), nil, 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{body: tt.body, token: token, headers: tt.headers})
			got := readBody(t, resp)
			reqs := h.up.requests()[before:]
			if tt.status == 200 {
				if resp.StatusCode >= 300 || len(reqs) != 1 || string(reqs[0].Body) != tt.body {
					t.Fatalf("answer %d %s, upstream saw %d requests; want the exact body forwarded", resp.StatusCode, got, len(reqs))
				}
				return
			}
			if len(reqs) != 0 {
				t.Fatalf("upstream saw %q", reqs[0].Body)
			}
			code, _, msg := rpcErr(t, got)
			if resp.StatusCode != tt.status || tt.code != 0 && code != tt.code {
				t.Fatalf("answer = %d %s, want %d with code %d", resp.StatusCode, got, tt.status, tt.code)
			}
			if code == codeMethodNotFound {
				// The name quoted, so that "tools/call " or a NUL shows.
				var m struct{ Method string }
				if json.Unmarshal([]byte(tt.body), &m) == nil && !strings.HasPrefix(msg, "Method not found: "+strconv.Quote(m.Method)) {
					t.Errorf("message %q, want Method not found: %s", msg, strconv.Quote(m.Method))
				}
			}
		})
	}
}

// TestMethodRuleLoad: a method rule cannot take a method any revision
// defines, in any case, from its dedicated handling.
func TestMethodRuleLoad(t *testing.T) {
	for _, p := range []string{
		"*", "tools/*", "Tools/Call", "TOOLS/*", "*/call", "t?ols/call", "tools/call*", "resources/*",
		"*/read", "prompts/get", "tasks/*", "TASKS/LIST", "notifications/*", "*initialize*", "ping",
		"logging/SETLEVEL", "server/*", "subscriptions/listen", "x y", "x\tz", "x-\u00e9", "", `x\`,
	} {
		cfg := testConfig(t)
		cfg.Methods = []Rule{{Pattern: p}}
		if _, err := New(cfg); err == nil {
			t.Errorf("New accepted method rule %q", p)
		}
	}
	cfg := testConfig(t)
	cfg.Methods = []Rule{{Pattern: "x-acme/*"}, {Pattern: "tools/x-*"}, {Pattern: "notifications/x-acme/*"}}
	if _, err := New(cfg); err != nil {
		t.Errorf("New: %v", err)
	}
}

// TestToolsListHidesRefusedNames: a listed tool the gateway would refuse
// to call, for its rule or for its name, is left out.
func TestToolsListHidesRefusedNames(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[` +
		`{"name":"read_a","inputSchema":{"type":"object"}},` +
		`{"name":"read_a ","inputSchema":{"type":"object"}},` +
		`{"name":"read_\u212a","inputSchema":{"type":"object"}},` +
		`{"name":"read_\u0000","inputSchema":{"type":"object"}},` +
		`{"name":"read_` + strings.Repeat("b", 124) + `","inputSchema":{"type":"object"}},` +
		`{"name":"delete_all","inputSchema":{"type":"object"}},` +
		`{"name":"delete-all","inputSchema":{"type":"object"}},` +
		`{"name":"Delete_all","inputSchema":{"type":"object"}},` +
		`{"name":"other-tool","inputSchema":{"type":"object"}}]}}`
	cfg := testConfig(t)
	cfg.Tools = append(cfg.Tools, Rule{Pattern: "*", Scopes: []string{"tools:read"}})
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, list)
	})
	token := mint(t, func() jwt.MapClaims { c := claims(); c["scope"] = "mcp tools:read"; return c }())
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: token})
	got := readBody(t, resp)
	if diff := cmp.Diff([]string{"other-tool", "read_a"}, toolNames(t, got)); diff != "" {
		t.Errorf("tools (-want +got):\n%s", diff)
	}
}

// TestLooseNameAllocs: the loose reading of a name allocates only when it
// changes the name.
func TestLooseNameAllocs(t *testing.T) {
	cfg := methodConfig(t)
	p, err := newPolicy(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		allocs float64
	}{{"delete_all", 0}, {"read_a_b", 0}, {"summary_\u00e9", 0}, {"delete-all", 1}, {"Read_A", 1}} {
		if got := testing.AllocsPerRun(100, func() { stableRule(p.tools, tt.name) }); got != tt.allocs {
			t.Errorf("stableRule(%q): %v allocations, want %v", tt.name, got, tt.allocs)
		}
	}
}

// TestCompletionTemplateValues: a completion of a resource template is
// decided by the rules its expansions fall under, so the values it gives
// the template's variables may not take an expansion out of them: with
// file:///secret/{name}, the value "../etc/" expands to
// file:///secret/../etc/, file:///etc/ to every URL parser, whose rule
// (file:///, files:read) the caller, holding files:secret alone, lacks;
// a server completing the value as a path would list /etc. Such values
// are refused as dot segments in a resource URI are.
func TestCompletionTemplateValues(t *testing.T) {
	complete := func(uri, rest string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"` + uri + `"},` + rest + `}}`
	}
	const tmpl = "file:///secret/{dir}/{name}"
	tests := []struct {
		name   string
		body   string
		status int // 0: forwarded
	}{
		{"a name", complete(tmpl, `"argument":{"name":"name","value":"notes.txt"}`), 0},
		{"a hidden file's name", complete(tmpl, `"argument":{"name":"name","value":".bashrc"}`), 0},
		{"a path", complete(tmpl, `"argument":{"name":"name","value":"a.b/c..d/"},"context":{"arguments":{"dir":"x"}}`), 0},
		{"nothing typed yet", complete(tmpl, `"argument":{"name":"name","value":""}`), 0},
		{"parent directory", complete(tmpl, `"argument":{"name":"name","value":"../etc/"}`), 400},
		{"parent directory alone", complete(tmpl, `"argument":{"name":"name","value":".."}`), 400},
		{"parent directory inside", complete(tmpl, `"argument":{"name":"name","value":"a/../../etc"}`), 400},
		{"current directory", complete(tmpl, `"argument":{"name":"name","value":"./x"}`), 400},
		{"three dots", complete(tmpl, `"argument":{"name":"name","value":".../x"}`), 400},
		{"backslashes", complete(tmpl, `"argument":{"name":"name","value":"..\\etc"}`), 400},
		{"before path parameters", complete(tmpl, `"argument":{"name":"name","value":"..;/etc"}`), 400},
		{"before a query", complete(tmpl, `"argument":{"name":"name","value":"..?x"}`), 400},
		{"before a fragment", complete(tmpl, `"argument":{"name":"name","value":"..#x"}`), 400},
		{"percent-encoded dots", complete(tmpl, `"argument":{"name":"name","value":"%2e%2E/etc"}`), 400},
		{"percent-encoded space between dots", complete(tmpl, `"argument":{"name":"name","value":".%20./etc"}`), 400},
		{"dots beside spaces", complete(tmpl, `"argument":{"name":"name","value":". ./etc"}`), 400},
		{"percent-encoded slash", complete(tmpl, `"argument":{"name":"name","value":"..%2fetc"}`), 400},
		{"percent-encoded dots and slash", complete(tmpl, `"argument":{"name":"name","value":"%2e%2e%2Fetc"}`), 400},
		{"percent-encoded backslash", complete(tmpl, `"argument":{"name":"name","value":"..%5cetc"}`), 400},
		{"percent-encoded twice", complete(tmpl, `"argument":{"name":"name","value":"%252e%252e/etc"}`), 400},
		{"a tab between dots", complete(tmpl, `"argument":{"name":"name","value":".\t./etc"}`), 400},
		{"fullwidth dots", complete(tmpl, `"argument":{"name":"name","value":"\uff0e\uff0e/etc"}`), 400},
		// A reader of C strings stops at a NUL ("..\u0000x" is ".."), and
		// IDNA mapping and NFKC_Casefold drop default-ignorable
		// characters (".\u200c." is ".."), which a resource URI may not
		// hold either (checkEscape).
		{"a NUL after dots", complete(tmpl, `"argument":{"name":"name","value":"..\u0000x/etc"}`), 400},
		{"a percent-encoded NUL after dots", complete(tmpl, `"argument":{"name":"name","value":"..%00x/etc"}`), 400},
		{"a NUL before a parent directory", complete(tmpl, `"argument":{"name":"name","value":"a\u0000/../../etc"}`), 400},
		{"a zero-width non-joiner between dots", complete(tmpl, `"argument":{"name":"name","value":".\u200c./etc"}`), 400},
		{"a percent-encoded zero-width space after dots", complete(tmpl, `"argument":{"name":"name","value":"..%E2%80%8B/etc"}`), 400},
		{"a soft hyphen after dots", complete(tmpl, `"argument":{"name":"name","value":"..\u00ad/etc"}`), 400},
		{"a byte order mark before dots", complete(tmpl, `"argument":{"name":"name","value":"\ufeff../etc"}`), 400},
		{"a zero-width joiner in a name", complete(tmpl, `"argument":{"name":"name","value":"\u0915\u094d\u200d\u0937.txt"}`), 0},
		{"an escaped slash in a name", complete(tmpl, `"argument":{"name":"name","value":"a%2Fb.txt"}`), 0},
		{"a percent sign", complete(tmpl, `"argument":{"name":"name","value":"100%.txt"}`), 0},
		{"in the context", complete(tmpl, `"argument":{"name":"name","value":"p"},"context":{"arguments":{"dir":".."}}`), 400},
		{"value not a string", complete(tmpl, `"argument":{"name":"name","value":[".."]}`), 400},
		{"context arguments not an object", complete(tmpl, `"argument":{"name":"name","value":"p"},"context":{"arguments":[".."]}`), 400},
		{"value spelt otherwise", complete(tmpl, `"argument":{"name":"name","Va_lue":".."}`), 400},
		{"value spelt twice", complete(tmpl, `"argument":{"name":"name","value":"p","va-lue":".."}`), 400},
		// Without variables there is nothing to expand.
		{"a resource, not a template", complete("file:///secret/a", `"argument":{"name":"name","value":".."}`), 0},
		// After a '/' of the template's path, a value that begins with a
		// slash is an absolute path to a server that joins it to the
		// template's directory (os.path.join("/srv/secret", "/etc/") is
		// /etc/), outside file:///secret/.
		{"an absolute path", complete(tmpl, `"argument":{"name":"name","value":"/etc/"}`), 400},
		{"an absolute path with a backslash", complete(tmpl, `"argument":{"name":"name","value":"\\etc"}`), 400},
		{"a percent-encoded absolute path", complete(tmpl, `"argument":{"name":"name","value":"%2Fetc"}`), 400},
		{"a fullwidth solidus", complete(tmpl, `"argument":{"name":"name","value":"\uff0fetc"}`), 400},
		{"an absolute path after an invisible character", complete(tmpl, `"argument":{"name":"name","value":"\u200b/etc"}`), 400},
		{"an absolute path in the context", complete(tmpl, `"argument":{"name":"name","value":"p"},"context":{"arguments":{"dir":"/etc"}}`), 400},
		{"an absolute path after a path-segment expression", complete("file:///secret{/dir}", `"argument":{"name":"dir","value":"/etc"}`), 400},
		// On Windows a value that begins with a drive letter is a path
		// on that drive: os.path.join("C:\\srv\\secret", "C:/x"),
		// Path.resolve and path.resolve discard the directory.
		{"a drive letter", complete(tmpl, `"argument":{"name":"name","value":"C:/Windows"}`), 400},
		{"a drive letter with a backslash", complete(tmpl, `"argument":{"name":"name","value":"d:\\x"}`), 400},
		{"a drive letter alone", complete(tmpl, `"argument":{"name":"name","value":"D:"}`), 400},
		{"a drive-relative path", complete(tmpl, `"argument":{"name":"name","value":"D:x"}`), 400},
		{"a percent-encoded drive letter", complete(tmpl, `"argument":{"name":"name","value":"C%3A%5Cx"}`), 400},
		{"a fullwidth drive letter", complete(tmpl, `"argument":{"name":"name","value":"\uff23\uff1a/x"}`), 400},
		{"a drive letter in the context", complete(tmpl, `"argument":{"name":"name","value":"p"},"context":{"arguments":{"dir":"C:"}}`), 400},
		// A drive at the start of a later segment of the value: the
		// expansion's path has one, which a server on Windows joining
		// the path, or its segments, to its directory reads as a path on
		// that drive ("a/C:secret" is secret there).
		{"a drive letter after a slash", complete(tmpl, `"argument":{"name":"name","value":"a/C:secret"}`), 400},
		{"a drive letter after a backslash", complete(tmpl, `"argument":{"name":"name","value":"a\\d:/x"}`), 400},
		{"a percent-encoded drive letter after a slash", complete(tmpl, `"argument":{"name":"name","value":"a%2FC%3Asecret"}`), 400},
		{"a drive letter after a slash in the context", complete(tmpl, `"argument":{"name":"name","value":"p"},"context":{"arguments":{"dir":"x/C:"}}`), 400},
		{"a drive letter after a slash, after no '/'", complete("file:///secret/x{+name}", `"argument":{"name":"name","value":"a/C:x"}`), 400},
		{"a drive letter after a slash and a NUL", complete(tmpl, `"argument":{"name":"name","value":"a/\u0000C:x"}`), 400},
		{"a word and a colon after a slash", complete(tmpl, `"argument":{"name":"name","value":"a/ab:c"}`), 0},
		// A server that resolves the value against the template's
		// directory as a URL reference (new URL(value, base), urljoin)
		// reads a URL, or a path after a scheme it drops, as what it
		// names, outside file:///secret/.
		{"a whole URL", complete(tmpl, `"argument":{"name":"name","value":"file:///etc/"}`), 400},
		{"a URL of another host", complete(tmpl, `"argument":{"name":"name","value":"https://other.example/x"}`), 400},
		{"a URL of another scheme", complete(tmpl, `"argument":{"name":"name","value":"db://main/salaries"}`), 400},
		{"a URL with an absolute path only", complete(tmpl, `"argument":{"name":"name","value":"FILE:/etc"}`), 400},
		{"a URL with a backslash", complete(tmpl, `"argument":{"name":"name","value":"file:\\etc"}`), 400},
		{"a URL after a space", complete(tmpl, `"argument":{"name":"name","value":" file:/etc"}`), 400},
		{"a URL with a tab in its scheme", complete(tmpl, `"argument":{"name":"name","value":"fi\tle:/etc"}`), 400},
		{"a percent-encoded URL", complete(tmpl, `"argument":{"name":"name","value":"file%3A%2F%2F%2Fetc"}`), 400},
		{"a URL in the context", complete(tmpl, `"argument":{"name":"name","value":"p"},"context":{"arguments":{"dir":"file:///etc"}}`), 400},
		{"a parent directory after a scheme", complete(tmpl, `"argument":{"name":"name","value":"file:../etc"}`), 400},
		{"a drive letter after a scheme", complete(tmpl, `"argument":{"name":"name","value":"file:C:/x"}`), 400},
		{"a host after a scheme", complete(tmpl, `"argument":{"name":"name","value":"https:other.example/x"}`), 400},
		// A WHATWG URL parser drops a special scheme only against a base
		// of the same scheme: new URL("https:other", "file:///secret/a/")
		// is https://other/, new URL("file:etc", "https://docs.example/a/")
		// file:///etc.
		{"a host after another scheme", complete(tmpl, `"argument":{"name":"name","value":"https:other.example"}`), 400},
		{"a host after another scheme in capitals", complete(tmpl, `"argument":{"name":"name","value":"WSS:other.example"}`), 400},
		{"a host after another scheme in the context", complete(tmpl, `"argument":{"name":"name","value":"p"},"context":{"arguments":{"dir":"ftp:other"}}`), 400},
		{"a file after another scheme", complete("https://docs.example/a/{name}", `"argument":{"name":"name","value":"file:etc"}`), 400},
		{"a name after the template's scheme", complete("https://docs.example/a/{name}", `"argument":{"name":"name","value":"HTTPS:notes"}`), 0},
		{"a name in a template of another scheme", complete("https://docs.example/a/{name}", `"argument":{"name":"name","value":"notes"}`), 0},
		{"a relative path after a scheme", complete(tmpl, `"argument":{"name":"name","value":"file:notes.txt"}`), 0},
		{"a word and a colon before a path", complete(tmpl, `"argument":{"name":"name","value":"ab:c/d"}`), 0},
		{"a URL after no '/'", complete("file:///secret/x{+name}", `"argument":{"name":"name","value":"file:///etc"}`), 0},
		{"a colon after a word", complete(tmpl, `"argument":{"name":"name","value":"ab:c"}`), 0},
		{"a drive letter after no '/'", complete("file:///secret/x{+name}", `"argument":{"name":"name","value":"C:/x"}`), 0},
		{"a slash inside a name", complete(tmpl, `"argument":{"name":"name","value":"a/b"}`), 0},
		{"a slash after no '/'", complete("file:///secret/x{+name}", `"argument":{"name":"name","value":"/etc"}`), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.ResourceRules = append(cfg.ResourceRules, Rule{Pattern: "https://docs.example/", Scopes: []string{"files:secret"}})
			h := newHarness(t, cfg, nil)
			c := claims()
			c["scope"] = "mcp files:secret"
			resp := h.do(t, call{body: tt.body, token: mint(t, c)})
			code := 0
			if tt.status != 0 {
				code = codeInvalidParams
			}
			checkAnswer(t, h, resp, tt.status, code, "1")
		})
	}
}

// TestCompletionValueMovingTheHost: a template whose text before the
// first '{' ends inside its authority ("notes://all{+x}") is decided as
// if an expansion continued the host name, by the broader rule of
// "notes://"; a value with '@' makes what the literal held user
// information and puts the host after it, "notes://all@other/x" being on
// host other to a URL parser, under a rule of its own that the
// completion did not need (and a URI the gateway refuses to read, user
// information in its authority). Such a value is refused, in any
// encoding, as dot segments are; where the literal names no host yet,
// every rule of the scheme is needed anyway, and after the authority an
// address is a value like any other.
func TestCompletionValueMovingTheHost(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = []Rule{
		{Pattern: "notes://all", Scopes: []string{"notes:all"}},
		{Pattern: "notes://other/", Scopes: []string{"notes:other"}},
		{Pattern: "notes://", Scopes: []string{"notes:any"}},
	}
	complete := func(uri, value string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"` + uri + `"},"argument":{"name":"x","value":"` + value + `"}}}`
	}
	const tmpl = "notes://all{+x}"
	for _, tt := range []struct {
		name, scope, body string
		status            int // 0: forwarded
	}{
		{"a path", "notes:all notes:any", complete(tmpl, "/docs/a"), 0},
		{"a port", "notes:all notes:any", complete(tmpl, ":8443/docs"), 0},
		{"a longer host", "notes:all notes:any", complete(tmpl, ".evil.example/x"), 0},
		{"user information", "notes:all notes:any", complete(tmpl, "@other/x"), 400},
		{"user information, percent-encoded", "notes:all notes:any", complete(tmpl, "%40other/x"), 400},
		{"user information, percent-encoded twice", "notes:all notes:any", complete("notes://all{x}", "%2540other/x"), 400},
		{"user information in the context", "notes:all notes:any", `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"` + tmpl + `"},"argument":{"name":"q","value":""},"context":{"arguments":{"x":"@other/x"}}}}`, 400},
		{"user information, every scope", "notes:all notes:any notes:other", complete(tmpl, "@other/x"), 400},
		{"an address after the authority", "notes:all notes:any", complete("notes://all/users/{email}", "bob@example.com"), 0},
		{"an address where no host is named yet", "notes:all notes:any notes:other", complete("notes://{host}/x", "bob@other"), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfg, nil)
			c := claims()
			c["scope"] = "mcp " + tt.scope
			resp := h.do(t, call{body: tt.body, token: mint(t, c)})
			code := 0
			if tt.status != 0 {
				code = codeInvalidParams
			}
			checkAnswer(t, h, resp, tt.status, code, "1")
		})
	}
}

// TestCompletionValuesCostPerValue: checking a completion's values
// costs each value a few hundred bytes, whatever its text. Each value's
// dot-segment check built a strings.Replacer (a 256-entry table, some
// 6 KB) to read '\' as '/': a 1 MiB completion/complete of 95,000
// context arguments, which any token holder allowed to complete a
// template may send, allocated 580 MB and took half a second to a
// second of CPU, ten times a tools/call of the same size. Bytes
// allocated rather than time, so that a loaded machine does not decide.
func TestCompletionValuesCostPerValue(t *testing.T) {
	const n = 20000
	var args strings.Builder
	for i := range n {
		if i > 0 {
			args.WriteByte(',')
		}
		fmt.Fprintf(&args, `"a%d":"x y\\\\z"`, i)
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///secret/{dir}/{name}"},` +
		`"argument":{"name":"name","value":"p"},"context":{"arguments":{` + args.String() + `}}}}`
	h := newHarness(t, testConfig(t), nil)
	c := claims()
	c["scope"] = "mcp files:secret"
	token := mint(t, c)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	resp := h.do(t, call{body: body, token: token})
	runtime.ReadMemStats(&after)
	checkAnswer(t, h, resp, 0, 0, "1")
	perValue := (after.TotalAlloc - before.TotalAlloc) / n
	if perValue > 2048 {
		t.Errorf("a completion of %d context arguments allocated %d bytes per argument, want at most 2048", n, perValue)
	}
	if testing.Verbose() {
		t.Logf("%d bytes per context argument (%d bytes of body each)", perValue, len(body)/n)
	}
}

// TestCompletionRefusalNamesNoValue: a completion value refused for a
// dot segment or an '@' is an argument's value (what is typed, or what
// the other variables hold), which may be a secret: the refusal, which
// is the client's answer and the audit event's reason, names where the
// value is and not the value, as argument rules name only a pointer
// (audit_arguments off).
func TestCompletionRefusalNamesNoValue(t *testing.T) {
	cfg := testConfig(t)
	cfg.ResourceRules = append(cfg.ResourceRules, Rule{Pattern: "notes://all", Scopes: []string{"files:secret"}}, Rule{Pattern: "notes://", Scopes: []string{"files:secret"}})
	const secret = "pw-7f3K9qLm2xVb8Rt4"
	complete := func(uri, rest string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"` + uri + `"},` + rest + `}}`
	}
	for _, tt := range []struct{ name, body, place string }{
		{"dot segment typed", complete("file:///secret/{dir}/{name}", `"argument":{"name":"name","value":"../`+secret+`"}`), "params.argument.value"},
		{"dot segment in the context", complete("file:///secret/{dir}/{name}", `"argument":{"name":"name","value":"p"},"context":{"arguments":{"dir":"`+secret+`/.."}}`), `params.context.arguments["dir"]`},
		{"'@' typed", complete("notes://all{+x}", `"argument":{"name":"x","value":"`+secret+`@other/x"}`), "params.argument.value"},
		{"'@' in the context", complete("notes://all{+x}", `"argument":{"name":"q","value":""},"context":{"arguments":{"x":"`+secret+`%40other"}}`), `params.context.arguments["x"]`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, cfg, nil)
			c := claims()
			c["scope"] = "mcp files:secret"
			resp := h.do(t, call{body: tt.body, token: mint(t, c)})
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, strings.ReplaceAll(tt.place, `"`, `\"`)) {
				t.Fatalf("answer %d %s; want 400 naming %s", resp.StatusCode, body, tt.place)
			}
			if strings.Contains(body, secret) {
				t.Errorf("the answer holds the value: %s", body)
			}
			entries := h.logs.All()
			if len(entries) == 0 {
				t.Fatal("no audit event")
			}
			for _, e := range entries {
				line := fmt.Sprint(e.Message, e.ContextMap())
				if strings.Contains(line, secret) {
					t.Errorf("the log holds the value: %s", line)
				}
			}
			if reason := fmt.Sprint(entries[len(entries)-1].ContextMap()["reason"]); !strings.Contains(reason, tt.place) {
				t.Errorf("audit reason %q; want it to name %s", reason, tt.place)
			}
		})
	}
}

// TestCompletionRef: completion/complete is decided by the rules of the
// prompt or resource its params.ref names, as prompts/get or
// resources/read of it would be: completions can reveal what the prompt
// or resource holds. A resource template is decided by every rule an
// expansion could fall under.
func TestCompletionRef(t *testing.T) {
	complete := func(ref string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":` + ref + `,"argument":{"name":"a","value":""}}}`
	}
	tests := []struct {
		name   string
		scope  string
		ref    string
		status int // 0: forwarded
		code   int
	}{
		{"prompt allowed", "mcp prompts:read", `{"type":"ref/prompt","name":"summary"}`, 0, 0},
		{"prompt without its scope", "mcp", `{"type":"ref/prompt","name":"summary"}`, 403, codeRefused},
		{"prompt without a rule", "mcp prompts:read", `{"type":"ref/prompt","name":"other"}`, 403, codeRefused},
		{"prompt name invalid", "mcp prompts:read", `{"type":"ref/prompt","name":"summary\u0000"}`, 400, codeInvalidParams},
		{"prompt case variant of a rule", "mcp prompts:read", `{"type":"ref/prompt","name":"Summary"}`, 400, codeInvalidParams},
		{"resource allowed", "mcp files:read", `{"type":"ref/resource","uri":"file:///a/b"}`, 0, 0},
		{"resource under a narrower rule", "mcp files:read", `{"type":"ref/resource","uri":"file:///secret/b"}`, 403, codeRefused},
		{"resource with both scopes", "mcp files:read files:secret", `{"type":"ref/resource","uri":"file:///secret/b"}`, 0, 0},
		{"resource without a rule", "mcp files:read", `{"type":"ref/resource","uri":"https://x.example/a"}`, 403, codeRefused},
		{"resource with a dot segment", "mcp files:read", `{"type":"ref/resource","uri":"file:///a/../secret/b"}`, 400, codeInvalidParams},
		{"template inside one rule", "mcp files:read files:secret", `{"type":"ref/resource","uri":"file:///secret/{name}"}`, 0, 0},
		{"template reaching a narrower rule", "mcp files:read", `{"type":"ref/resource","uri":"file:///{path}"}`, 403, codeRefused},
		{"template reaching a narrower rule, both scopes", "mcp files:read files:secret", `{"type":"ref/resource","uri":"file:///{path}"}`, 0, 0},
		// An expansion that continues the literal's last name leaves the
		// directory rule that decides the literal without its "/":
		// file:///secret{x} expands to file:///secretive, under file:///.
		{"template continuing a directory's name, its rule's scope only", "mcp files:secret", `{"type":"ref/resource","uri":"file:///secret{x}"}`, 403, codeRefused},
		{"template continuing a directory's name, both scopes", "mcp files:read files:secret", `{"type":"ref/resource","uri":"file:///secret{x}"}`, 0, 0},
		{"resource continuing a directory's name", "mcp files:secret", `{"type":"ref/resource","uri":"file:///secretive"}`, 403, codeRefused},
		{"template under a case variant of a rule", "mcp files:read", `{"type":"ref/resource","uri":"file:///SECRET/{name}"}`, 400, codeInvalidParams},
		{"template without a literal prefix", "mcp files:read files:secret", `{"type":"ref/resource","uri":"{uri}"}`, 400, codeInvalidParams},
		{"no ref", "mcp files:read", `null`, 400, codeInvalidParams},
		{"ref not an object", "mcp files:read", `"ref/prompt"`, 400, codeInvalidParams},
		{"unknown ref type", "mcp files:read", `{"type":"ref/tool","name":"summary"}`, 400, codeInvalidParams},
		{"ref type case variant", "mcp prompts:read", `{"type":"Ref/Prompt","name":"summary"}`, 400, codeInvalidParams},
		{"prompt ref without a name", "mcp prompts:read", `{"type":"ref/prompt"}`, 400, codeInvalidParams},
		{"resource ref without a uri", "mcp files:read", `{"type":"ref/resource","name":"x"}`, 400, codeInvalidParams},
		{"prompt ref with a uri too", "mcp prompts:read", `{"type":"ref/prompt","name":"summary","uri":"file:///secret/x"}`, 400, codeInvalidParams},
		{"resource ref with a name too", "mcp files:read", `{"type":"ref/resource","uri":"file:///a","name":"other"}`, 400, codeInvalidParams},
		{"name not a string", "mcp prompts:read", `{"type":"ref/prompt","name":["summary"]}`, 400, codeInvalidParams},
		// Members a decoder that ignores case, '-' and '_' (Go's json/v2
		// matching names without case) reads as the ones decided on.
		{"prompt name beside a separator variant", "mcp prompts:read", `{"type":"ref/prompt","na_me":"other","name":"summary"}`, 400, codeInvalidParams},
		{"prompt name as a separator variant alone", "mcp prompts:read", `{"type":"ref/prompt","na-me":"other"}`, 403, codeRefused},
		{"prompt ref with a separator variant of uri", "mcp prompts:read", `{"type":"ref/prompt","name":"summary","u_ri":"file:///secret/x"}`, 400, codeInvalidParams},
		{"type beside a separator variant", "mcp prompts:read", `{"ty_pe":"ref/resource","type":"ref/prompt","name":"summary"}`, 400, codeInvalidParams},
		{"ref beside a separator variant", "mcp prompts:read", `{"type":"ref/prompt","name":"summary"},"r_ef":{"type":"ref/prompt","name":"other"}`, 400, codeInvalidParams},
		{"type not a string", "mcp prompts:read", `{"type":1,"name":"summary"}`, 400, codeInvalidParams},
		// A variant up to a NUL, as the argument rules read names
		// (mcpparse's loose folding): a decoder that keeps names as C
		// strings reads "na_me\u0000x" as "na_me".
		{"prompt name beside a separator variant up to a NUL", "mcp prompts:read", `{"type":"ref/prompt","Na_me\u0000x":"other","name":"summary"}`, 400, codeInvalidParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), nil)
			c := claims()
			c["scope"] = tt.scope
			resp := h.do(t, call{body: complete(tt.ref), token: mint(t, c)})
			checkAnswer(t, h, resp, tt.status, tt.code, "1")
		})
	}
}
