package interop

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPDifferentialCorpus is TestHTTPDifferential over a generated
// corpus: members injected beside the ones the gateway reads at every
// level (envelope, params, arguments, params._meta), spelt every way two
// readers may take for one name or one reader for two (escapes, case,
// Kelvin sign and long s, NUL, lone surrogates, BOM, zero-width space,
// full-width forms, overlong and invalid UTF-8, '-' and '_'); target and
// argument values spelt likewise; ids, methods, whitespace kinds,
// comments, trailing data and batches; and seeded random mutations of
// the calls. Each body goes first straight to each upstream (the Go
// SDK's stateless server under 2025-03-26, 2025-11-25 and 2026-07-28 and
// its server with sessions answering in event streams, within a session
// the gateway bound, the TypeScript SDK's on its own and in Express),
// which shows which bodies
// would run a forbidden call there, and then through the gateway, which
// must forward none of them: delete_notes never runs, echo runs only
// with the text its argument rule allows (hello, or none), and a
// tools/list answer never names delete_notes.
func TestHTTPDifferentialCorpus(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st := startDiffStack(t)
	base, goRuns, tsRuns, expressRuns, sessionsRuns := st.base, st.goRuns, st.tsRuns, st.expressRuns, st.sessionsRuns

	type target struct {
		site, upstream, version string
		runs                    *toolRuns
		sessions                bool           // initialize first, send Mcp-Session-Id
		dangerous               map[int]string // case index: what the upstream ran straight
		listed                  int            // answers straight that list delete_notes
	}
	tokens := map[string]string{}
	for _, site := range []string{"go", "ts", "express", "sessions"} {
		tokens[site] = readToken(ctx, t, base, base+"/"+site+"/mcp")
	}
	goAddr, tsAddr, expressAddr := st.goAddr, st.tsAddr, st.expressAddr
	targets := []*target{
		{site: "go", upstream: goAddr, version: "2025-11-25", runs: goRuns},
		{site: "go", upstream: goAddr, version: "2026-07-28", runs: goRuns},
		{site: "go", upstream: goAddr, version: "2025-03-26", runs: goRuns},
		{site: "ts", upstream: tsAddr, version: "2025-11-25", runs: tsRuns},
		{site: "ts", upstream: tsAddr, version: "2025-03-26", runs: tsRuns},
		{site: "express", upstream: expressAddr, version: "2025-11-25", runs: expressRuns},
		{site: "express", upstream: expressAddr, version: "2025-03-26", runs: expressRuns},
		{site: "sessions", upstream: st.sessionsAddr, version: "2025-11-25", runs: sessionsRuns, sessions: true},
		{site: "sessions", upstream: st.sessionsAddr, version: "2025-03-26", runs: sessionsRuns, sessions: true},
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	t.Cleanup(client.CloseIdleConnections)

	// Straight to each upstream: which bodies run a forbidden call there.
	var straight atomic.Int64
	t.Run("straight", func(t *testing.T) {
		for _, tg := range targets {
			t.Run(tg.site+"/"+tg.version, func(t *testing.T) {
				t.Parallel()
				tg.dangerous = map[int]string{}
				url := "http://" + tg.upstream + "/mcp"
				session := ""
				if tg.sessions {
					session = initSession(t, client, url, "", tg.version)
				}
				for i, c := range corpusCases(tg.version) {
					status, answer := corpusPost(t, client, url, "", session, tg.version, c)
					if tg.sessions && sessionEnded(status, answer) {
						session = initSession(t, client, url, "", tg.version)
						status, answer = corpusPost(t, client, url, "", session, tg.version, c)
					}
					straight.Add(1)
					if status == http.StatusOK && strings.Contains(answer, `"name":"delete_notes"`) {
						tg.listed++
					}
					if bad := forbiddenRun(answer); bad != "" {
						tg.dangerous[i] = bad
					}
				}
			})
		}
	})

	// Through the gateway: nothing forbidden runs.
	var through, ran, refused atomic.Int64
	before := map[*toolRuns][2]int{}
	for _, r := range []*toolRuns{goRuns, tsRuns, expressRuns, sessionsRuns} {
		before[r] = [2]int{r.count("delete_notes"), r.count("echo")}
	}
	t.Run("gateway", func(t *testing.T) {
		for _, tg := range targets {
			t.Run(tg.site+"/"+tg.version, func(t *testing.T) {
				t.Parallel()
				cases := corpusCases(tg.version)
				url := base + "/" + tg.site + "/mcp"
				session := ""
				if tg.sessions {
					session = initSession(t, client, url, tokens[tg.site], tg.version)
				}
				for _, c := range cases {
					status, answer := corpusPost(t, client, url, tokens[tg.site], session, tg.version, c)
					if tg.sessions && sessionEnded(status, answer) {
						session = initSession(t, client, url, tokens[tg.site], tg.version)
						status, answer = corpusPost(t, client, url, tokens[tg.site], session, tg.version, c)
					}
					through.Add(1)
					if status >= 400 {
						refused.Add(1)
					}
					if strings.Contains(answer, "ran echo") {
						ran.Add(1)
					}
					if bad := forbiddenRun(answer); bad != "" {
						t.Errorf("%s (%q): through the gateway the upstream %s (answer %d %.300s)", c.name, c.body, bad, status, answer)
					}
					if status == http.StatusOK && strings.Contains(answer, `"name":"delete_notes"`) {
						t.Errorf("%s (%q): the answer names delete_notes (%.300s)", c.name, c.body, answer)
					}
				}
				kinds := map[string]int{}
				for i := range tg.dangerous {
					kinds[strings.Fields(cases[i].name)[0]]++
				}
				t.Logf("%d cases; straight at the upstream %d ran a forbidden call, by kind: %v; %d listed delete_notes", len(cases), len(tg.dangerous), kinds, tg.listed)
			})
		}
	})
	time.Sleep(200 * time.Millisecond) // the Node servers' last lines
	for _, r := range []*toolRuns{goRuns, tsRuns, expressRuns, sessionsRuns} {
		if n := r.count("delete_notes") - before[r][0]; n > 0 {
			t.Errorf("delete_notes ran %d times through the gateway", n)
		}
		for _, text := range r.textsOf("echo", before[r][1]) {
			if !allowedText(text) {
				t.Errorf("echo ran through the gateway with text %s", text)
			}
		}
	}
	dangerous, listed := 0, 0
	for _, tg := range targets {
		dangerous, listed = dangerous+len(tg.dangerous), listed+tg.listed
	}
	t.Logf("%d requests straight to the upstreams: %d ran a forbidden call, %d listed delete_notes; %d through the gateway: %d refused, %d ran echo as allowed",
		straight.Load(), dangerous, listed, through.Load(), refused.Load(), ran.Load())
	if dangerous == 0 || ran.Load() == 0 {
		t.Errorf("the corpus tests too little: %d bodies ran a forbidden call straight, %d ran echo through the gateway", dangerous, ran.Load())
	}
}

// ranPattern finds the "ran <tool> <text>" of the upstreams' answers.
var ranPattern = regexp.MustCompile(`ran (echo|delete_notes) ([A-Za-z0-9%+\-_.!~*'()]*)`)

// forbiddenRun says what forbidden call an answer shows the upstream ran,
// or "".
func forbiddenRun(answer string) string {
	switch {
	case strings.Contains(answer, "served secret"):
		return "read file:///secret/a"
	case strings.Contains(answer, "prompted admin_prompt"):
		return "got the prompt admin_prompt"
	}
	for _, m := range ranPattern.FindAllStringSubmatch(answer, -1) {
		if m[1] == "delete_notes" {
			return "ran delete_notes"
		}
		if !allowedText(m[2]) {
			return "ran echo with text " + m[2]
		}
	}
	return ""
}

// allowedText reports whether echo's rule allows a text argument as the
// servers report it (JSON, percent-encoded): none, or "hello".
func allowedText(enc string) bool {
	text, err := url.QueryUnescape(enc)
	return err == nil && (text == "null" || text == `"hello"`)
}

// sessionEnded reports whether an answer says the session is gone or
// cannot take the case: the Go SDK's server closes a session on some
// malformed messages, and keeps the id of some in flight (the cases all
// use one id).
func sessionEnded(status int, answer string) bool {
	return status == http.StatusNotFound || strings.Contains(answer, "session is closing") || strings.Contains(answer, "duplicate in-flight request ID")
}

// initSession opens a session at url (with a bearer token unless token is
// "") and returns its Mcp-Session-Id.
func initSession(t *testing.T, client *http.Client, url, token, version string) string {
	t.Helper()
	status, _, h := corpusExchange(t, client, url, token, "", version, corpusCase{name: "initialize", method: "initialize",
		body: []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"` + version + `","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)})
	session := h.Get("Mcp-Session-Id")
	if status != http.StatusOK || session == "" {
		t.Fatalf("initialize: %d, session %q", status, session)
	}
	if status, answer := corpusPost(t, client, url, token, session, version, corpusCase{name: "initialized", method: "notifications/initialized",
		body: []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)}); status != http.StatusAccepted {
		t.Fatalf("notifications/initialized: %d %s", status, answer)
	}
	return session
}

// corpusPost sends a case's body to url with the headers of version (and
// a bearer token unless token is "", a session unless session is ""), and
// returns the answer.
func corpusPost(t *testing.T, client *http.Client, url, token, session, version string, c corpusCase) (int, string) {
	t.Helper()
	status, answer, _ := corpusExchange(t, client, url, token, session, version, c)
	return status, answer
}

// corpusExchange is corpusPost returning the answer's header too.
func corpusExchange(t *testing.T, client *http.Client, url, token, session, version string, c corpusCase) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", version)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	if version >= "2026-07-28" {
		req.Header.Set("Mcp-Method", c.method)
		if c.target != "" {
			req.Header.Set("Mcp-Name", c.target)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// corpusCase is one body, with the method and target its 2026-07-28
// headers name (those of the call it was made from).
type corpusCase struct {
	name           string
	body           []byte
	method, target string
}

// corpusCases generates the corpus for a protocol version.
func corpusCases(version string) []corpusCase {
	v2026 := version >= "2026-07-28"
	metaBody := `"progressToken":1`
	if v2026 {
		metaBody = strings.TrimPrefix(meta2026, `,"_meta":{`)
		metaBody = strings.TrimSuffix(metaBody, "}")
	}
	metaObj := "{" + metaBody + "}"
	// at names where an injected member goes: env, params, args or meta,
	// each < (first) or > (last).
	build := func(at, member, method, name, text, id string) []byte {
		ins := func(where string) (string, string) {
			switch at {
			case where + "<":
				return member + ",", ""
			case where + ">":
				return "", "," + member
			}
			return "", ""
		}
		mb, ma := ins("meta")
		ab, aa := ins("args")
		pb, pa := ins("params")
		eb, ea := ins("env")
		args := "{" + ab + `"text":` + text + aa + "}"
		if text == "" {
			args = "{" + ab + strings.TrimPrefix(aa, ",") + "}"
		}
		params := "{" + pb + `"name":` + name + `,"arguments":` + args + `,"_meta":{` + mb + metaBody + ma + "}" + pa + "}"
		return []byte("{" + eb + `"jsonrpc":"2.0","id":` + id + `,"method":` + method + `,"params":` + params + ea + "}")
	}
	call := func(name, text string) []byte { return build("", "", `"tools/call"`, name, text, "7") }
	echo, del, evil := call(`"echo"`, `"hello"`), call(`"delete_notes"`, `"hello"`), call(`"echo"`, `"evil"`)
	list := []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":` + metaObj + `}}`)

	var out []corpusCase
	add := func(name string, body []byte) {
		out = append(out, corpusCase{name: name, body: body, method: "tools/call", target: "echo"})
	}

	// Members injected at every level, every spelling, both ends.
	delParams := `{"name":"delete_notes","arguments":{},"_meta":` + metaObj + `}`
	evilParams := `{"name":"echo","arguments":{"text":"evil"},"_meta":` + metaObj + `}`
	levels := []struct {
		at     string
		key    string
		values []string
	}{
		{"env", "method", []string{`"tools/list"`, `"ping"`, `"tools/call"`}},
		{"env", "params", []string{delParams, evilParams}},
		{"env", "id", []string{`8`, `null`}},
		{"env", "jsonrpc", []string{`"2.0"`, `"1.0"`}},
		{"params", "name", []string{`"delete_notes"`, `"echo"`}},
		{"params", "arguments", []string{`{"text":"evil"}`, `{}`}},
		{"params", "_meta", []string{metaObj, `{}`}},
		{"params", "text", []string{`"evil"`}},
		{"args", "text", []string{`"evil"`, `null`, `["evil"]`, `"hello"`}},
		{"meta", "io.modelcontextprotocol/protocolVersion", []string{`"2025-11-25"`, `"2026-07-28"`}},
	}
	for _, l := range levels {
		for _, k := range append(keySpellings(l.key), "__proto__", `\u005f_proto__`) {
			for _, v := range l.values {
				for _, end := range []string{"<", ">"} {
					add(fmt.Sprintf("%s%s %q:%s", l.at, end, k, v), build(l.at+end, `"`+k+`":`+v, `"tools/call"`, `"echo"`, `"hello"`, "7"))
				}
			}
		}
	}
	// Target and argument values.
	for _, v := range valueSpellings("delete_notes") {
		add("name "+v, call(`"`+v+`"`, `"hello"`))
	}
	for _, v := range valueSpellings("hello") {
		add("text "+v, call(`"echo"`, `"`+v+`"`))
	}
	for _, v := range []string{`["hello"]`, `["hello","evil"]`, `{"hello":1}`, `1`, `true`, `{}`} {
		add("text "+v, call(`"echo"`, v))
	}
	// Methods and ids.
	for _, m := range []string{`"Tools/call"`, `"TOOLS/CALL"`, `"tools/call "`, `" tools/call"`, `"tools/call\u0000"`, `"tools\/call"`,
		`"tools\u002fcall"`, `"tools//call"`, `"tools/call\ud800"`, `"\ufefftools/call"`, `"tools/Call"`, `"tools.call"`, `"tools_call"`,
		`"tools/call/"`, `"/tools/call"`, `"tools/calL"`, `"ｔools/call"`, `"tools/ca\u013Al"`, `["tools/call"]`, `null`} {
		add("method "+m, build("", "", m, `"delete_notes"`, `"hello"`, "7"))
	}
	for _, id := range []string{`1e0`, `-0`, `1.0`, `1E0`, `7.0`, `9007199254740993`, `1e400`, `-1`, `0`, `"7"`, `""`, `null`, `true`,
		`{}`, `[]`, `[7]`, `"\ud800"`, `"\u0000"`, `123456789012345678901234567890`, `-9007199254740992`} {
		add("id "+id, build("", "", `"tools/call"`, `"delete_notes"`, `"hello"`, id))
		add("id "+id+" evil", build("", "", `"tools/call"`, `"echo"`, `"evil"`, id))
	}
	// Whitespace kinds, comments, BOM and NUL around and between tokens.
	for _, ws := range []string{" ", "\t", "\r\n", "\n", "\v", "\f", "\x00", "\u00a0", "\u2028", "\u3000", "\ufeff", "\x1e", "\x85", "/**/", "//x\n", "#x\n"} {
		for _, b := range [][]byte{del, evil} {
			add(fmt.Sprintf("ws %q before", ws), append([]byte(ws), b...))
			add(fmt.Sprintf("ws %q after", ws), append(bytes.Clone(b), ws...))
			add(fmt.Sprintf("ws %q inside", ws), bytes.Replace(b, []byte(`,"method"`), []byte(ws+`,`+ws+`"method"`+ws), 1))
		}
	}
	// Trailing data, second messages and batches.
	notif := bytes.Replace(del, []byte(`"id":7,`), nil, 1)
	for _, b := range []struct {
		name string
		body []byte
	}{
		{"echo then delete", append(bytes.Clone(echo), del...)},
		{"echo newline delete", append(append(bytes.Clone(echo), '\n'), del...)},
		{"echo then evil", append(bytes.Clone(echo), evil...)},
		{"echo then x", append(bytes.Clone(echo), 'x')},
		{"echo then ]", append(bytes.Clone(echo), ']')},
		{"echo then }", append(bytes.Clone(echo), '}')},
		{"batch echo delete", []byte("[" + string(echo) + "," + string(del) + "]")},
		{"batch echo evil", []byte("[" + string(echo) + "," + string(evil) + "]")},
		{"batch delete", []byte("[" + string(del) + "]")},
		{"batch notification", []byte("[" + string(notif) + "]")},
		{"batch nested", []byte("[" + string(echo) + ",[" + string(del) + "]]")},
		{"batch trailing comma", []byte("[" + string(echo) + "," + string(del) + ",]")},
		{"batch echo list", []byte("[" + string(echo) + "," + string(list) + "]")},
		{"notification delete", notif},
		{"id absent evil", bytes.Replace(evil, []byte(`"id":7,`), nil, 1)},
		{"params array", []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":["delete_notes"]}`)},
		{"params null", []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":null}`)},
		{"arguments string", []byte(strings.Replace(string(echo), `{"text":"hello"}`, `"{\"text\":\"evil\"}"`, 1))},
		{"arguments array", []byte(strings.Replace(string(echo), `{"text":"hello"}`, `["evil"]`, 1))},
		{"arguments null", []byte(strings.Replace(string(echo), `{"text":"hello"}`, `null`, 1))},
		{"deep arguments", []byte(strings.Replace(string(evil), `"evil"`, strings.Repeat("[", 10000)+strings.Repeat("]", 10000), 1))},
	} {
		add(b.name, b.body)
	}
	// tools/list, whose answer is filtered, with members injected.
	for _, k := range []string{`"cursor":"x"`, `"method":"tools/call"`, `"name":"delete_notes"`, `"Method":"tools/list"`} {
		out = append(out, corpusCase{name: "list " + k, body: bytes.Replace(list, []byte(`"params":{`), []byte(`"params":{`+k+`,`), 1), method: "tools/list"},
			corpusCase{name: "list env " + k, body: bytes.Replace(list, []byte(`{"jsonrpc"`), []byte(`{`+k+`,"jsonrpc"`), 1), method: "tools/list"})
	}
	out = append(out, corpusCase{name: "list", body: list, method: "tools/list"})
	// Batches whose answers the gateway must tell apart by id to filter
	// the list's: ids one reader may take for another's.
	withID := func(b []byte, id string) string {
		return string(bytes.Replace(b, []byte(`"id":7`), []byte(`"id":`+id), 1))
	}
	ping := []byte(`{"jsonrpc":"2.0","id":7,"method":"ping"}`)
	for _, ids := range [][2]string{{`7`, `"7"`}, {`"7"`, `7`}, {`"7"`, `"\u0037"`}, {`"a"`, `"a\u0000"`}, {`"a"`, `"A"`}, {`7`, `7.0`},
		{`7`, `70e-1`}, {`0`, `-0`}, {`"a"`, `"a "`}, {`"\ud800"`, `"\udc00"`}, {`9007199254740991`, `9007199254740990`}, {`"ſ"`, `"s"`}} {
		for _, pair := range [][2][]byte{{list, echo}, {echo, list}, {list, ping}, {ping, list}} {
			out = append(out, corpusCase{name: "batch list ids " + ids[0] + " " + ids[1], body: []byte("[" + withID(pair[0], ids[0]) + "," + withID(pair[1], ids[1]) + "]"), method: "tools/list"})
		}
	}
	// Resources and prompts: URIs that some URL parser reads as the
	// secret one, prompt names, and members injected beside uri and name.
	read := func(uri string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":7,"method":"resources/read","params":{"uri":` + uri + `,"_meta":` + metaObj + `}}`)
	}
	prompt := func(name string) []byte {
		return []byte(`{"jsonrpc":"2.0","id":7,"method":"prompts/get","params":{"name":` + name + `,"_meta":` + metaObj + `}}`)
	}
	addRead := func(name string, body []byte) {
		out = append(out, corpusCase{name: name, body: body, method: "resources/read", target: "file:///public/a"})
	}
	addPrompt := func(name string, body []byte) {
		out = append(out, corpusCase{name: name, body: body, method: "prompts/get", target: "greet"})
	}
	addRead("read", read(`"file:///public/a"`))
	addPrompt("prompt", prompt(`"greet"`))
	for _, u := range []string{"file:///secret/a", "file:///public/../secret/a", "file:///public/%2e%2e/secret/a", "file:///public/%2E%2E/secret/a",
		"file:///public/.%2e/secret/a", "file:///public/./../secret/a", "file:///public/a/../../secret/a", "file:///public/..%2fsecret/a",
		`file:///public\\..\\secret/a`, "file:///public/..\\\\secret/a", "FILE:///secret/a", "file://localhost/secret/a", "file://LOCALHOST/public/../secret/a",
		"file:/secret/a", "file:secret/a", "file:////secret/a", "file:///public//../secret/a", "file:///public/\\t../secret/a",
		"file:///public/%09../secret/a", "file:///public/a#/../../secret/a", "file:///public/a?/../../secret/a", "file:///public/a/..",
		"file:///publi%63/../secret/a", "file:///public/%2e%2e%2fsecret/a", "file:///public/．．/secret/a", "file:///public/%c0%ae%c0%ae/secret/a",
		"file:///C:/public/../secret/a", "file:///public/../secret/a\\u0000", " file:///public/../secret/a", "file:///public/.../secret/a",
		"file:///public/\\u002e\\u002e/secret/a", "file://127.0.0.1/public/../secret/a", "file:///public/..;/secret/a", "file:///public/%2e./secret/a"} {
		addRead("uri "+u, read(`"`+u+`"`))
	}
	for _, k := range append(keySpellings("uri"), "__proto__") {
		addRead(fmt.Sprintf("read params< %q", k), bytes.Replace(read(`"file:///public/a"`), []byte(`"params":{`), []byte(`"params":{"`+k+`":"file:///secret/a",`), 1))
		addRead(fmt.Sprintf("read params> %q", k), bytes.Replace(read(`"file:///public/a"`), []byte(`,"_meta"`), []byte(`,"`+k+`":"file:///secret/a","_meta"`), 1))
	}
	for _, v := range valueSpellings("admin_prompt") {
		addPrompt("prompt "+v, prompt(`"`+v+`"`))
	}
	for _, k := range append(keySpellings("name"), "__proto__") {
		addPrompt(fmt.Sprintf("prompt params< %q", k), bytes.Replace(prompt(`"greet"`), []byte(`"params":{`), []byte(`"params":{"`+k+`":"admin_prompt",`), 1))
		addPrompt(fmt.Sprintf("prompt params> %q", k), bytes.Replace(prompt(`"greet"`), []byte(`,"_meta"`), []byte(`,"`+k+`":"admin_prompt","_meta"`), 1))
	}
	// Seeded mutations of the calls and the list.
	rnd := rand.New(rand.NewPCG(29, uint64(len(version))))
	seeds := []corpusCase{{body: echo, method: "tools/call", target: "echo"}, {body: del, method: "tools/call", target: "echo"},
		{body: evil, method: "tools/call", target: "echo"}, {body: list, method: "tools/list"},
		{body: read(`"file:///public/a"`), method: "resources/read", target: "file:///public/a"},
		{body: read(`"file:///secret/a"`), method: "resources/read", target: "file:///public/a"},
		{body: prompt(`"greet"`), method: "prompts/get", target: "greet"}}
	for i := range 2000 {
		s := seeds[rnd.IntN(len(seeds))]
		b := s.body
		for range 1 + rnd.IntN(3) {
			b = mutate(rnd, b)
		}
		out = append(out, corpusCase{name: fmt.Sprintf("mutation %d", i), body: b, method: s.method, target: s.target})
	}
	return out
}

// keySpellings are ways to write a member name (as JSON string content)
// that some reader may take for k, or that may hide k from one.
func keySpellings(k string) []string {
	overlong := func(c byte) string { return string([]byte{0xc0 | c>>6, 0x80 | c&0x3f}) }
	swap := func(from, to string) string { return strings.Replace(k, from, to, 1) }
	out := []string{
		k, fmt.Sprintf(`\u%04x`, k[0]) + k[1:], escapeAll(k), strings.ToUpper(k[:1]) + k[1:], strings.ToUpper(k),
		k + `\u0000`, k + `\u0000x`, `\u0000` + k, k + " ", " " + k, fullWidth(k), "\ufeff" + k, `\ufeff` + k, k + `\u200b`,
		k + `\ud800`, `\udc00` + k, k + "\xff", overlong(k[0]) + k[1:], k[:1] + "_" + k[1:], k[:1] + "-" + k[1:], k + `\/`,
		"\xed\xa0\x80" + k,
	}
	for _, s := range [][2]string{{"s", "ſ"}, {"k", "\u212a"}, {"i", "ı"}, {"K", "\u212a"}, {"S", "ſ"}} {
		if strings.Contains(k, s[0]) {
			out = append(out, swap(s[0], s[1]))
		}
	}
	return out
}

// valueSpellings are ways to write a string value (as JSON string
// content) that is v to some reader or close to it.
func valueSpellings(v string) []string {
	out := keySpellings(v)
	return append(out, v+`\n`, v+`\r`, v+"\t", v+`\t`, `\u0020`+v, v[:len(v)-1]+`\u0301`+v[len(v)-1:], v+"\u0301",
		strings.ReplaceAll(v, "e", "е"), // Cyrillic e
		v+`\u0000evil`, v+"\x00", v+`\ud83d`, v+`\udfff`, strings.ToUpper(v))
}
