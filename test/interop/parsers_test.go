package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	sjson "github.com/segmentio/encoding/json"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// TestParseDifferential feeds the same bodies to mcpparse.Parse and to the
// JSON readers of the official SDKs' servers: JSON.parse behind the
// TypeScript SDK's transport and its message schemas
// (test/node/jsonparse.mjs), and pydantic_core.from_json and json.loads,
// as releases of the Python SDK read a body (testdata/jsonloads.py). (Go's encoding/json and the Go
// SDK's jsonrpc.DecodeMessage are compared in mcpparse's FuzzParse.)
// Whatever Parse accepts, each must read as the same value, and the
// TypeScript SDK's message, when it takes one, as Parse's method, id,
// target and arguments: otherwise the gateway would decide on one
// message and the server run another. Bodies Parse refuses need nothing.
func TestParseDifferential(t *testing.T) {
	nt := requireNode(t)
	bodies := differentialBodies(t)
	encoded, err := json.Marshal(bodies) // []byte marshals as base64
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Both read at once: starting Node with the SDK takes most of the time.
	var node []nodeReading
	nodeDone := make(chan error, 1)
	go func() {
		out, err := nt.runInput(ctx, t, nil, encoded, "jsonparse.mjs")
		if err == nil {
			err = json.Unmarshal(out, &node)
		}
		nodeDone <- err
	}()
	var python []pythonReading
	if py, err := exec.LookPath("python3"); err != nil {
		t.Logf("python3 not found: Python's readers not compared")
	} else {
		cmd := exec.CommandContext(ctx, py, "testdata/jsonloads.py")
		cmd.Stdin = bytes.NewReader(encoded)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err == nil {
			err = json.Unmarshal(out, &python)
		}
		if err != nil || len(python) != len(bodies) {
			t.Fatalf("jsonloads.py read %d bodies of %d: %v", len(python), len(bodies), err)
		}
	}
	if err := <-nodeDone; err != nil || len(node) != len(bodies) {
		t.Fatalf("jsonparse.mjs read %d bodies of %d: %v", len(node), len(bodies), err)
	}

	accepted := 0
	for i, body := range bodies {
		msgs, _, err := mcpparse.Parse(body, mcpparse.Limits{AllowBatches: true})
		if err != nil {
			continue
		}
		accepted++
		want := goTree(t, body)
		if !node[i].OK {
			t.Errorf("Parse accepted %s, JSON.parse refuses it", quoteBody(body))
		} else if d := diffTree(want, node[i].Tree, false); d != "" {
			t.Errorf("JSON.parse reads %s otherwise than Parse's tokenizer: %s", quoteBody(body), d)
		}
		if python != nil {
			readers := []struct {
				name string
				r    *reading
			}{{"json.loads", &python[i].reading}, {"pydantic_core.from_json", python[i].Jiter}}
			for _, p := range readers {
				switch {
				case p.r == nil: // no pydantic_core
				case !p.r.OK:
					t.Errorf("Parse accepted %s, %s refuses it", quoteBody(body), p.name)
				default:
					if d := diffTree(want, p.r.Tree, true); d != "" {
						t.Errorf("%s reads %s otherwise than Parse's tokenizer: %s", p.name, quoteBody(body), d)
					}
				}
			}
		}
		for j, m := range msgs {
			if d := diffGoSDK(t, m); d != "" {
				t.Errorf("the Go SDK's decoder reads message %d of %s otherwise than Parse: %s", j, quoteBody(body), d)
			}
		}
		if !node[i].OK || len(node[i].SDK) != len(msgs) {
			continue
		}
		for j, m := range msgs {
			s := node[i].SDK[j]
			if !s.OK {
				continue // the server refuses what it cannot read
			}
			if d := diffMessage(t, m, s.Tree, true); d != "" {
				t.Errorf("the TypeScript SDK's transport reads message %d of %s otherwise than Parse: %s", j, quoteBody(body), d)
			}
			if s.Request != nil && s.Request.OK {
				if d := diffMessage(t, m, s.Request.Tree, false); d != "" {
					t.Errorf("the TypeScript SDK's %s handler reads message %d of %s otherwise than Parse: %s", m.Method, j, quoteBody(body), d)
				}
			}
		}
	}
	t.Logf("%d bodies, %d accepted by Parse", len(bodies), accepted)
	if accepted < len(bodies)/10 {
		t.Errorf("Parse accepted only %d of %d bodies: the cases test too little", accepted, len(bodies))
	}
}

// reading is what a parser made of one body: a tagged tree (see
// test/node/jsonparse.mjs).
type reading struct {
	OK   bool `json:"ok"`
	Tree any  `json:"tree"`
}

type pythonReading struct {
	reading
	Jiter *reading `json:"jiter"`
}

type nodeReading struct {
	reading
	SDK []struct {
		reading
		Request *reading `json:"request"`
	} `json:"sdk"`
}

func quoteBody(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%q... (%d bytes)", b[:300], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// goTree is body as jsontext reads it, tagged as jsonparse.mjs tags
// (numbers as their literal), keeping duplicate names and invalid UTF-8
// (which Parse must have refused) to show them.
func goTree(t *testing.T, body []byte) any {
	t.Helper()
	dec := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	var read func() any
	read = func() any {
		tok, err := dec.ReadToken()
		if err != nil {
			t.Fatalf("jsontext reading %s: %v", quoteBody(body), err)
		}
		switch tok.Kind() {
		case 'n':
			return []any{"z"}
		case 't':
			return []any{"t"}
		case 'f':
			return []any{"f"}
		case '"':
			return []any{"s", tok.String(), utf8.ValidString(tok.String())}
		case '0':
			return []any{"n", tok.String()}
		case '[':
			elems := []any{}
			for dec.PeekKind() != ']' {
				elems = append(elems, read())
			}
			dec.ReadToken()
			return []any{"a", elems}
		case '{':
			members := []any{}
			for dec.PeekKind() != '}' {
				k, err := dec.ReadToken()
				if err != nil {
					t.Fatal(err)
				}
				members = append(members, []any{k.String(), read()})
			}
			dec.ReadToken()
			return []any{"o", members}
		}
		t.Fatalf("token %v", tok)
		return nil
	}
	return read()
}

// diffTree describes how got, a parser's tagged tree, differs from want,
// Go's: "" when it does not. Numbers compare as IEEE doubles (JavaScript
// has no others; the gateway compares numbers exactly, which rounding
// to the nearest double never turns from refused to allowed); Python's
// integers, which it keeps exact, as the literal's exact value.
func diffTree(want, got any, python bool) string {
	w, g := want.([]any), asSlice(got)
	if len(g) == 0 {
		return fmt.Sprintf("not a tagged value: %v", got)
	}
	wt, gt := w[0].(string), g[0]
	if wt == "n" {
		lit := w[1].(string)
		switch gt {
		case "n":
			f, ok := parseFloatTag(g[1])
			if !ok || !sameFloat(literalFloat(lit), f) {
				return fmt.Sprintf("number %s read as %v", lit, g[1])
			}
			return ""
		case "i":
			if !python {
				break
			}
			v, ok := new(big.Int).SetString(fmt.Sprint(g[1]), 10)
			x, isInt := new(big.Int).SetString(lit, 10) // Python reads only these as int
			if !ok || !isInt || x.Cmp(v) != 0 {
				return fmt.Sprintf("number %s read as %v", lit, g[1])
			}
			return ""
		}
		return fmt.Sprintf("number %s read as %v", lit, g)
	}
	if wt != gt {
		return fmt.Sprintf("%v read as %v", w, g)
	}
	switch wt {
	case "s":
		if len(g) != 3 || g[1] != w[1] || g[2] != true || w[2] != true {
			return fmt.Sprintf("string %q read as %v", w[1], g[1:])
		}
	case "a":
		we, ge := w[1].([]any), asSlice(g[1])
		if len(we) != len(ge) {
			return fmt.Sprintf("array of %d read as one of %d", len(we), len(ge))
		}
		for i := range we {
			if d := diffTree(we[i], ge[i], python); d != "" {
				return fmt.Sprintf("[%d]: %s", i, d)
			}
		}
	case "o":
		wm, gm := w[1].([]any), asSlice(g[1])
		if len(wm) != len(gm) {
			return fmt.Sprintf("object of %d members %v read as one of %d %v", len(wm), names(wm), len(gm), names(gm))
		}
		// JavaScript orders integer-like names first: compare by name,
		// which is unique in what Parse accepts.
		byName := map[string]any{}
		for _, m := range gm {
			kv := asSlice(m)
			byName[fmt.Sprint(kv[0])] = kv[1]
		}
		for _, m := range wm {
			kv := m.([]any)
			k := kv[0].(string)
			v, ok := byName[k]
			if !ok {
				return fmt.Sprintf("member %q missing among %v", k, names(gm))
			}
			if d := diffTree(kv[1], v, python); d != "" {
				return fmt.Sprintf("%q: %s", k, d)
			}
		}
	}
	return ""
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func names(members []any) []string {
	var out []string
	for _, m := range members {
		out = append(out, fmt.Sprint(asSlice(m)[0]))
	}
	return out
}

// literalFloat is a JSON number literal as the nearest double, ±Inf
// beyond the range.
func literalFloat(lit string) float64 {
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil && !math.IsInf(f, 0) {
		return math.NaN()
	}
	return f
}

// parseFloatTag reads a number as JavaScript's String or Python's repr
// writes it.
func parseFloatTag(v any) (float64, bool) {
	s, _ := v.(string)
	switch s {
	case "Infinity", "inf":
		return math.Inf(1), true
	case "-Infinity", "-inf":
		return math.Inf(-1), true
	}
	f, err := strconv.ParseFloat(s, 64)
	return f, err == nil
}

func sameFloat(a, b float64) bool {
	return a == b && math.Signbit(a) == math.Signbit(b) || a == 0 && b == 0
}

// diffMessage compares what Parse read of a message with the TypeScript
// SDK's reading of it (a tagged tree): method, id (with envelope: a
// request handler is given the request without it), the target member
// of the method (params.name, params.uri, params.taskId) and arguments.
func diffMessage(t *testing.T, m mcpparse.Message, tree any, envelope bool) string {
	t.Helper()
	get := func(tree any, name string) any {
		g := asSlice(tree)
		if len(g) < 2 || g[0] != "o" {
			return nil
		}
		for _, kv := range asSlice(g[1]) {
			if p := asSlice(kv); p[0] == name {
				return p[1]
			}
		}
		return nil
	}
	str := func(v any) (string, bool) {
		g := asSlice(v)
		if len(g) == 3 && g[0] == "s" && g[2] == true {
			return g[1].(string), true
		}
		return "", false
	}
	method, hasMethod := str(get(tree, "method"))
	if get(tree, "method") != nil && !hasMethod {
		return fmt.Sprintf("method %v", get(tree, "method"))
	}
	if hasMethod != (m.Kind != mcpparse.KindResponse) || method != m.Method {
		return fmt.Sprintf("method %q (present %v), Parse %q (a %s)", method, hasMethod, m.Method, m.Kind)
	}
	id := get(tree, "id")
	switch {
	case !envelope:
	case id == nil:
		if m.ID != nil {
			return fmt.Sprintf("no id, Parse %s", m.ID)
		}
	case m.ID == nil:
		return fmt.Sprintf("id %v, Parse none", id)
	default:
		if d := diffTree(goTree(t, m.ID), id, false); d != "" {
			return "id: " + d
		}
	}
	if m.Kind == mcpparse.KindResponse {
		return ""
	}
	params := get(tree, "params")
	name := "name"
	switch m.Method {
	case "tasks/get", "tasks/update", "tasks/cancel", "tasks/result":
		name = "taskId" // Parse's Name is params.taskId there
	}
	for _, c := range []struct {
		member string
		got    string
		has    bool
	}{
		{name, m.Name, m.HasName},
		{"uri", m.URI, m.HasURI},
	} {
		if !envelope && !targets(m.Method, c.member) {
			continue // a request handler's schema drops what it does not read
		}
		v, ok := str(get(params, c.member))
		if ok != c.has || v != c.got {
			return fmt.Sprintf("params.%s %q (present %v), Parse %q (present %v)", c.member, v, ok, c.got, c.has)
		}
	}
	args := get(params, "arguments")
	if !envelope && m.Method != "tools/call" && m.Method != "prompts/get" {
		return ""
	}
	if (args == nil) != (m.Arguments == nil) {
		return fmt.Sprintf("arguments %v, Parse %q", args, m.Arguments)
	}
	if args != nil {
		if d := diffTree(goTree(t, m.Arguments), args, false); d != "" {
			return "arguments: " + d
		}
	}
	return ""
}

// diffGoSDK compares what Parse read of a message with what the Go SDK's
// decoder (segmentio's, struct fields matched case-sensitively, as its
// internal/json sets it up) reads of its method, target and arguments.
func diffGoSDK(t *testing.T, m mcpparse.Message) string {
	t.Helper()
	decode := func(data []byte, v any) error {
		d := sjson.NewDecoder(bytes.NewReader(data))
		d.DontMatchCaseInsensitiveStructFields()
		return d.Decode(v)
	}
	var env struct {
		Method *string          `json:"method"`
		Params sjson.RawMessage `json:"params"`
	}
	if decode(m.Raw, &env) != nil {
		return "" // the server refuses what it cannot read
	}
	if (env.Method != nil) != (m.Kind != mcpparse.KindResponse) || env.Method != nil && *env.Method != m.Method {
		return fmt.Sprintf("method %v, Parse %q", env.Method, m.Method)
	}
	if len(env.Params) == 0 || env.Params[0] != '{' {
		return ""
	}
	var p struct {
		Name      *string `json:"name"`
		URI       *string `json:"uri"`
		TaskID    *string `json:"taskId"`
		Arguments any     `json:"arguments"`
	}
	if decode(env.Params, &p) != nil {
		return ""
	}
	name := p.Name
	switch m.Method {
	case "tasks/get", "tasks/update", "tasks/cancel", "tasks/result":
		name = p.TaskID
	}
	for _, c := range []struct {
		what string
		got  *string
		has  bool
		want string
	}{{"name", name, m.HasName, m.Name}, {"uri", p.URI, m.HasURI, m.URI}} {
		if (c.got != nil) != c.has || c.got != nil && *c.got != c.want {
			return fmt.Sprintf("params.%s %v, Parse %q (present %v)", c.what, c.got, c.want, c.has)
		}
	}
	if m.Arguments != nil && p.Arguments != nil {
		if d := diffTree(goTree(t, m.Arguments), tagGo(p.Arguments), false); d != "" {
			return "arguments: " + d
		}
	}
	return ""
}

// tagGo tags a value decoded into any as jsonparse.mjs tags.
func tagGo(v any) any {
	switch v := v.(type) {
	case nil:
		return []any{"z"}
	case bool:
		if v {
			return []any{"t"}
		}
		return []any{"f"}
	case float64:
		return []any{"n", strconv.FormatFloat(v, 'g', -1, 64)}
	case string:
		return []any{"s", v, utf8.ValidString(v)}
	case []any:
		elems := []any{}
		for _, e := range v {
			elems = append(elems, tagGo(e))
		}
		return []any{"a", elems}
	case map[string]any:
		members := []any{}
		for k, e := range v {
			members = append(members, []any{k, tagGo(e)})
		}
		return []any{"o", members}
	}
	return []any{"?", fmt.Sprint(v)}
}

// targets reports whether member names what method acts on.
func targets(method, member string) bool {
	switch method {
	case "tools/call", "prompts/get":
		return member == "name"
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		return member == "uri"
	case "tasks/get", "tasks/update", "tasks/cancel", "tasks/result":
		return member == "taskId"
	}
	return false
}

// differentialBodies is every corpus message, the hand-made cases below
// and seeded mutations of both.
func differentialBodies(t *testing.T) [][]byte {
	t.Helper()
	files, err := filepath.Glob("../../mcpparse/testdata/*/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no corpus: %v", err)
	}
	var bodies [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, b)
	}
	bodies = append(bodies, handMadeBodies()...)
	rnd := rand.New(rand.NewPCG(26, 7))
	var small [][]byte
	for _, b := range bodies {
		if len(b) < 4<<10 {
			small = append(small, b)
		}
	}
	for range 3000 {
		bodies = append(bodies, mutate(rnd, small[rnd.IntN(len(small))]))
	}
	return bodies
}

// call is a tools/call request with the given parts spliced in.
func call(id, name, args string) []byte {
	return []byte(`{"jsonrpc":"2.0","id":` + id + `,"method":"tools/call","params":{"name":` + name + `,"arguments":` + args + `}}`)
}

func handMadeBodies() [][]byte {
	var out [][]byte
	add := func(s ...string) {
		for _, b := range s {
			out = append(out, []byte(b))
		}
	}
	const ok = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read","arguments":{"a":1}}}`
	// Duplicate names at every level, exact, escaped and case variants.
	for _, k := range []string{"jsonrpc", "id", "method", "params"} {
		v := map[string]string{"jsonrpc": `"2.0"`, "id": `2`, "method": `"tools/list"`, "params": `{"name":"delete"}`}[k]
		add(strings.Replace(ok, `{"jsonrpc"`, `{"`+k+`":`+v+`,"jsonrpc"`, 1),
			strings.TrimSuffix(ok, "}")+`,"`+k+`":`+v+`}`,
			strings.TrimSuffix(ok, "}")+`,"`+escapeAll(k)+`":`+v+`}`,
			strings.TrimSuffix(ok, "}")+`,"`+strings.ToUpper(k[:1])+k[1:]+`":`+v+`}`,
			strings.TrimSuffix(ok, "}")+`,"`+k+`\u0000":`+v+`}`,
			strings.TrimSuffix(ok, "}")+`,"`+k+` ":`+v+`}`,
			strings.TrimSuffix(ok, "}")+`,"`+fullWidth(k)+`":`+v+`}`)
	}
	for _, k := range []string{"name", "arguments", "_meta", "uri", "taskId"} {
		v := map[string]string{"name": `"delete"`, "arguments": `{"a":2}`, "_meta": `{}`, "uri": `"file:///etc"`, "taskId": `"t"`}[k]
		add(strings.Replace(ok, `"params":{`, `"params":{"`+k+`":`+v+`,`, 1),
			strings.Replace(ok, `"params":{`, `"params":{"`+escapeAll(k)+`":`+v+`,`, 1),
			strings.Replace(ok, `"params":{`, `"params":{"`+strings.ToUpper(k)+`":`+v+`,`, 1),
			strings.Replace(ok, `"params":{`, `"params":{"`+k+`\u0000x":`+v+`,`, 1),
			strings.Replace(ok, `"params":{`, `"params":{"`+fullWidth(k)+`":`+v+`,`, 1))
	}
	add(strings.Replace(ok, `{"a":1}`, `{"a":1,"a":2}`, 1),
		strings.Replace(ok, `{"a":1}`, `{"a":1,"\u0061":2}`, 1),
		strings.Replace(ok, `{"a":1}`, `{"a":1,"A":2}`, 1),
		strings.Replace(ok, `{"a":1}`, `{"k":1,"\u212a":2}`, 1),  // Kelvin sign
		strings.Replace(ok, `{"a":1}`, `{"s":1,"\u017f":2}`, 1),  // long s
		strings.Replace(ok, `{"a":1}`, `{"s":1,"ſ":2}`, 1),       // long s, raw
		strings.Replace(ok, `{"a":1}`, `{"a":{"b":1,"b":2}}`, 1), // deeper
		strings.Replace(ok, `{"a":1}`, `[{"b":1,"b":2}]`, 1),
	)
	// Names and values spelt with other code points: each is its own
	// name to every parser; Parse must read them as the others do.
	for _, name := range []string{`"re\u0061d"`, `"read\/x"`, `"\u212aelvin"`, `"ſum"`, `"ｒｅａｄ"`, `"read\u0000"`, `"re\u0000ad"`,
		`"\ud83d\ude00"`, `"😀"`, `"\ud800"`, `"\udc00"`, `"\udc00\ud800"`, `"\ud800x"`, `"a\u2028b"`, "\"a\u2028b\"", `"\u00e9"`, `"e\u0301"`,
		"\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "\"\xff\"", "\"a\x00b\"", "\"a\tb\"", "\"a\x7fb\"", `"\uFEFFread"`, "\"\uFEFFread\""} {
		add(string(call("1", name, `{}`)), string(call("1", `"read"`, `{"x":`+name+`}`)), string(call("1", `"read"`, `{`+name+`:1}`)))
	}
	// Byte order marks, NUL and whitespace around and inside the message.
	for _, pre := range []string{"\uFEFF", "\xfe\xff", "\x00", " \t\r\n", "\v", "\f", "\u00a0", "\u2028", "\u3000", "\x1c", "\x85"} {
		add(pre+ok, ok+pre, strings.Replace(ok, `,"id"`, `,`+pre+`"id"`, 1), strings.Replace(ok, `:1,`, `:`+pre+`1,`, 1))
	}
	// Ids.
	for _, id := range []string{`1`, `0`, `-0`, `1.0`, `1e0`, `1E0`, `10e-1`, `-1`, `9007199254740991`, `9007199254740992`,
		`9007199254740993`, `-9007199254740991`, `1e400`, `-1e400`, `1e-400`, `123456789012345678901234567890`, `01`, `+1`, `.5`,
		`0x10`, `NaN`, `Infinity`, `-Infinity`, `"1"`, `""`, `"\u0031"`, `true`, `null`, `[]`, `{}`, `[1]`} {
		add(string(call(id, `"read"`, `{}`)))
	}
	// Numbers, literals and extensions in the arguments.
	for _, v := range []string{`NaN`, `Infinity`, `-Infinity`, `1e400`, `-1e400`, `1e-400`, `-0`, `0.1`, `1.7976931348623157e308`,
		`9007199254740993`, `123456789012345678901234567890`, `1e99999`, `True`, `None`, `undefined`, `'x'`, `0x1`, `1_000`, `.1`, `1.`} {
		add(string(call("1", `"read"`, `{"n":`+v+`}`)))
	}
	// Trailing data and comments.
	add(ok+ok, ok+" "+ok, ok+"x", ok+"\x00", ok+"//c", ok+"/*c*/", "/*c*/"+ok, "//c\n"+ok,
		strings.Replace(ok, `,"id"`, `/*c*/,"id"`, 1), ok+"]", ok+"}", "["+ok+"]", "["+ok+","+ok+"]", "["+ok+",]",
		"[["+ok+"]]", "["+ok+",["+ok+"]]", "[]", "[1]", "["+ok+",1]", "[[]]", `"x"`, `1`, `null`, ``, ` `,
		strings.Replace(ok, `}}`, `},}`, 1), strings.Replace(ok, `{"a":1}`, `{"a":1,}`, 1))
	// __proto__ and its spellings.
	for _, k := range []string{`__proto__`, `\u005f_proto__`, `__proto__\u0000`, `constructor`, `prototype`, `__PROTO__`} {
		add(string(call("1", `"read"`, `{"`+k+`":{"admin":true}}`)),
			strings.Replace(ok, `"params":{`, `"params":{"`+k+`":{"name":"delete"},`, 1),
			strings.TrimSuffix(ok, "}")+`,"`+k+`":{"method":"tools/list"}}`)
	}
	// Nesting at and around the limit, and far beyond.
	for _, d := range []int{30, 61, 62, 63, 64, 65, 1000, 100000} {
		add(string(call("1", `"read"`, strings.Repeat("[", d)+strings.Repeat("]", d))),
			string(call("1", `"read"`, strings.Repeat(`{"a":`, d)+"1"+strings.Repeat("}", d))))
	}
	// Big strings and many members.
	big := strings.Repeat("x", 1<<20)
	var many strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&many, `"m%d":%d,`, i, i)
	}
	add(string(call("1", `"read"`, `{"s":"`+big+`"}`)), string(call("1", `"`+big+`"`, `{}`)),
		string(call("1", `"read"`, `{`+many.String()+`"name":1}`)),
		string(call("1", `"read"`, `{`+many.String()+`"m17":1}`)))
	// Other methods and their targets.
	for _, m := range []string{`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":{"a":"b"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t"}}`,
		`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		`{"jsonrpc":"2.0","id":1,"result":{}}`,
		`{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"x"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"read"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools\u002fcall","params":{"name":"read"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call\u0000","params":{"name":"read"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"TOOLS/CALL","params":{"name":"read"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["read"]}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["read"]}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call"}`,
		`{"jsonrpc":2.0,"id":1,"method":"tools/call","params":{"name":"read"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read"},"result":{}}`} {
		add(m)
	}
	return out
}

// escapeAll spells every character of an ASCII name as a \u escape.
func escapeAll(s string) string {
	var b strings.Builder
	for _, c := range s {
		fmt.Fprintf(&b, `\u%04x`, c)
	}
	return b.String()
}

// fullWidth spells an ASCII name in full-width forms (U+FF01..U+FF5E).
func fullWidth(s string) string {
	return strings.Map(func(r rune) rune {
		if r > ' ' && r < 0x7f {
			return r - '!' + 0xFF01
		}
		return r
	}, s)
}

// mutate changes b in one of a few ways that break parsers differently:
// a byte replaced, removed or repeated, a member duplicated, an escape, a
// BOM.
func mutate(rnd *rand.Rand, b []byte) []byte {
	b = bytes.Clone(b)
	if len(b) == 0 {
		return b
	}
	i := rnd.IntN(len(b))
	special := []string{`"`, `\`, `\u0000`, "\x00", "\xff", "\xed\xa0\x80", `\ud800`, `,`, `:`, `{`, `}`, `[`, `]`, "\uFEFF", " ", "\v", "ſ", "\u212a", `"id":2,`, `"method":"x",`, `"name":"x",`, `"__proto__":{},`}
	switch rnd.IntN(6) {
	case 0:
		b[i] = byte(rnd.IntN(256))
	case 1:
		b = append(b[:i], b[i+1:]...)
	case 2:
		b = append(b[:i:i], append([]byte(special[rnd.IntN(len(special))]), b[i:]...)...)
	case 3:
		// Duplicate a member: copy a "name": prefix found after i.
		if j := bytes.IndexByte(b[i:], '"'); j >= 0 {
			k := bytes.Index(b[i+j:], []byte(`":`))
			if k > 0 && k < 64 {
				start := i + j
				end := start + k + 2
				if v := bytes.IndexAny(b[end:], ",}"); v >= 0 {
					b = append(b[:start:start], append(bytes.Clone(b[start:end+v]), append([]byte(","), b[start:]...)...)...)
				}
			}
		}
	case 4:
		// Escape one letter of a string.
		if c := b[i]; 'a' <= c && c <= 'z' {
			b = append(b[:i:i], append([]byte(fmt.Sprintf(`\u%04x`, c)), b[i+1:]...)...)
		}
	case 5:
		// Upper-case one letter.
		if c := b[i]; 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return b
}
