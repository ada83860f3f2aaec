package mcpparse

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// sameAsFull checks the fast path's one property: when parseSimple answers,
// the full reading returns that message alone and no error. It reports
// whether parseSimple answered.
func sameAsFull(t *testing.T, body []byte, maxDepth int) bool {
	t.Helper()
	eff := maxDepth
	if eff <= 0 {
		eff = DefaultMaxDepth
	}
	m, ok := parseSimple(body, eff)
	if !ok {
		return false
	}
	msgs, batch, err := parseFull(body, Limits{MaxDepth: maxDepth})
	if err != nil || batch || len(msgs) != 1 {
		t.Fatalf("parseSimple(%q) = %+v, but the full reading = %d messages, batch %v, error %v", body, m, len(msgs), batch, err)
	}
	// reflect.DeepEqual compares byte slices at memory speed (cmp walks
	// them element by element, the bulk of a fuzzing run); it too tells
	// nil from empty.
	if !reflect.DeepEqual(msgs[0], m) {
		t.Fatalf("parseSimple(%q) differs from the full reading (-full +simple):\n%s", body, cmp.Diff(msgs[0], m))
	}
	return true
}

// FuzzParseSimple: differential, the fast path against the full reading.
func FuzzParseSimple(f *testing.F) {
	addCorpus(f, func(b []byte) { f.Add(b, uint8(0)) })
	for _, b := range simpleTakes {
		f.Add([]byte(b), uint8(0))
	}
	for _, b := range simpleLeaves {
		f.Add([]byte(b), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, depth uint8) {
		sameAsFull(t, body, int(depth))
	})
}

// simpleTakes are bodies the fast path must answer (the usual requests).
var simpleTakes = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`,
	` {"method":"tools/call" , "params":{"arguments":{"a":[1,-2,0.5,1e9,-0E+2,true,false,null,{},[]]},"name":"x"},"jsonrpc":"2.0","id":"a-1"}` + "\r\n\t",
	`{"jsonrpc":"2.0","id":9007199254740991,"method":"tools/list","params":{}}`,
	`{"jsonrpc":"2.0","id":-9007199254740991,"method":"tools/list"}`,
	`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
	`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3,"reason":"x"}}`,
	`{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"notes://a/b?c=d"}}`,
	`{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{}}`,
	`{"jsonrpc":"2.0","id":3,"method":"tasks/get","params":{"taskId":"t-1"}}`,
	`{"jsonrpc":"2.0","id":3,"method":"custom/thing","params":[1,2,{"a":1}]}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},` +
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"}}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"a":{"b":{"c":{}}}},"clientInfo":{"name":"x","version":"1.0"}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"Name":1,"b":{"NAME":2,"c":{"Name":3}}}}}`, // case alone matters per object
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"s":"~!@#$%^&*()_+{}[]:;'<>,.?/|` + "\x7f" + `"}}}`,
}

// simpleLeaves are bodies the fast path must leave to the full reading.
var simpleLeaves = []string{
	``, ` `, `[]`, `null`, `"x"`, `{`, `{}`, `{} {}`, `{}x`,
	`[{"jsonrpc":"2.0","id":1,"method":"ping"}]`,                // batch
	`{"jsonrpc":"2.0","id":1,"result":{}}`,                      // response
	`{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}`, // response
	`{"jsonrpc":"2.0","id":null,"method":"ping"}`,               // null id
	`{"jsonrpc":"2.0","id":1.0,"method":"ping"}`,                // not canonical
	`{"jsonrpc":"2.0","id":9007199254740992,"method":"ping"}`,   // too large
	`{"jsonrpc":"2.0","id":true,"method":"ping"}`,               // not an id
	`{"jsonrpc":"2.0","id":1,"method":"ping","Method":"x"}`,     // case variant
	`{"jsonrpc":"2.0","id":1,"method":"ping","METHOD":"x"}`,     // case variant
	`{"jsonrpc":"2.0","id":1,"Params":{},"method":"ping"}`,      // case variant alone
	`{"jsonrpc":"2.0","id":1,"method":"ping","method":"ping"}`,  // duplicate
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","Name":"b"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":1,"X":2}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_META":{}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":[]}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"io.modelcontextprotocol/protocolversion":"x"}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"io.modelcontextprotocol/protocolVersion":1}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":1}}`, // name not a string
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}`,         // no name
	`{"jsonrpc":"2.0","id":1,"method":"tools/call"}`,                     // no params
	`{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":["a"]}}`,
	`{"jsonrpc":"2.0","id":1,"method":"ping","params":null}`,                                                           // params not a container
	`{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}`,                                                            // params not a container
	`{"jsonrpc":"1.0","id":1,"method":"ping"}`,                                                                         // version
	`{"id":1,"method":"ping"}`,                                                                                         // no jsonrpc
	`{"jsonrpc":"2.0","id":1}`,                                                                                         // no method
	`{"jsonrpc":"2.0","id":1,"method":1}`,                                                                              // method not a string
	`{"jsonrpc":"2.0","id":1,"method":"p\u0069ng"}`,                                                                    // escape
	`{"jsonrpc":"2.0","id":1,"method":"pïng"}`,                                                                         // non-ASCII
	`{"jsonrpc":"2.0","id":1,"method":"ping` + "\t" + `"}`,                                                             // control character
	"\ufeff" + `{"jsonrpc":"2.0","id":1,"method":"ping"}`,                                                              // BOM
	`{"jsonrpc":"2.0","id":1,"method":"ping",}`,                                                                        // trailing comma
	`{"jsonrpc":"2.0","id":1,,"method":"ping"}`,                                                                        // double comma
	`{"jsonrpc":"2.0" "id":1,"method":"ping"}`,                                                                         // no comma
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":01}`,                                                                  // leading zero
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":1.}`,                                                                  // bad fraction
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":1e}`,                                                                  // bad exponent
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":-}`,                                                                   // bad number
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":+1}`,                                                                  // bad number
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":tru}`,                                                                 // bad literal
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":truex}`,                                                               // bad literal
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":[1,]}`,                                                                // trailing comma
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":[1 2]}`,                                                               // no comma
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":{"a"}}`,                                                               // no colon
	`{"jsonrpc":"2.0","id":1,"method":"ping"}}`,                                                                        // trailing data
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}`, // deeper than the fast path goes
	`{"jsonrpc":"2.0","id":1,"method":"ping","x":{"a":{"b":{}}}}`,                                                      // deeper than MaxDepth 3 (seeded with it)
}

// TestParseSimpleTakesAndLeaves: the usual requests take the fast path,
// with the full reading's result, and what it must not decide does not.
func TestParseSimpleTakesAndLeaves(t *testing.T) {
	for _, b := range simpleTakes {
		if !sameAsFull(t, []byte(b), 0) {
			t.Errorf("parseSimple(%q) left a usual request to the full reading", b)
		}
	}
	// An object of 16 names fits, one of 17 does not.
	object := func(n int) string {
		var sb strings.Builder
		for i := range n {
			fmt.Fprintf(&sb, `,"n%d":%d`, i, i)
		}
		return `{"jsonrpc":"2.0","method":"ping","params":{` + sb.String()[1:] + `}}`
	}
	if !sameAsFull(t, []byte(object(simpleObjectNames)), 0) {
		t.Errorf("parseSimple left an object of %d names", simpleObjectNames)
	}
	if sameAsFull(t, []byte(object(simpleObjectNames+1)), 0) {
		t.Errorf("parseSimple answered an object of %d names", simpleObjectNames+1)
	}
	// 64 names in all open objects fit, 65 do not.
	for _, total := range []int{simpleNames, simpleNames + 1} {
		if got := sameAsFull(t, []byte(openNames(total)), 0); got != (total <= simpleNames) {
			t.Errorf("parseSimple with %d open names answered %v", total, got)
		}
	}
	for _, b := range simpleLeaves {
		if sameAsFull(t, []byte(b), 3) {
			t.Errorf("parseSimple(%q) answered; want the full reading", b)
		}
	}
	// Parse answers as the full reading either way.
	for _, b := range append(simpleTakes, simpleLeaves...) {
		msgs, batch, err := Parse([]byte(b), Limits{MaxDepth: 3, AllowBatches: true})
		fmsgs, fbatch, ferr := parseFull([]byte(b), Limits{MaxDepth: 3, AllowBatches: true})
		if d := cmp.Diff(fmsgs, msgs); d != "" || batch != fbatch || fmt.Sprint(err) != fmt.Sprint(ferr) {
			t.Errorf("Parse(%q) = %v %v, full reading %v %v (-full +Parse):\n%s", b, batch, err, fbatch, ferr, d)
		}
	}
}

// openNames is a ping whose open objects, nested in params, hold total
// names together (the envelope's 3 included), each at most
// simpleObjectNames.
func openNames(total int) string {
	var sb strings.Builder
	sb.WriteString(`{"jsonrpc":"2.0","method":"ping","params":`)
	left, depth := total-3, 0
	for left > 0 {
		sb.WriteByte('{')
		depth++
		n := min(left, simpleObjectNames)
		for i := range n - 1 {
			fmt.Fprintf(&sb, `"k%d":%d,`, i, i)
		}
		left -= n
		if left == 0 {
			sb.WriteString(`"last":0`)
			break
		}
		sb.WriteString(`"o":`)
	}
	sb.WriteString(strings.Repeat("}", depth) + "}")
	return sb.String()
}

// TestParseSimpleRandom: 30,000 random messages built from the pieces the
// two readings treat differently (names in and out of case, escapes,
// non-ASCII, numbers, nesting), compared; the fast path must answer a
// good share of them, or the comparison proves nothing.
func TestParseSimpleRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 11))
	const n = 30000
	took := 0
	for range n {
		b := randomMessage(rnd)
		if sameAsFull(t, []byte(b), 1+rnd.IntN(40)) {
			took++
		}
	}
	t.Logf("fast path answered %d of %d random messages", took, n)
	if took < n/10 {
		t.Errorf("fast path answered only %d of %d random messages", took, n)
	}
}

// randomMessage is a message-like object, valid more often than not.
func randomMessage(rnd *rand.Rand) string {
	// Mostly the first (valid) choice, now and then any.
	pick := func(s ...string) string {
		if rnd.IntN(6) > 0 {
			return s[0]
		}
		return s[rnd.IntN(len(s))]
	}
	var b strings.Builder
	members := []string{
		`"jsonrpc":` + pick(`"2.0"`, `"2.0"`, `"2.0"`, `"1.0"`, `2`),
		`"method":` + pick(`"tools/call"`, `"tools/call"`, `"resources/read"`, `"tasks/get"`, `"ping"`, `"x/y"`, `"t\u006fols/call"`, `1`),
	}
	if rnd.IntN(4) > 0 {
		members = append(members, `"id":`+pick(`1`, `0`, `-0`, `"a"`, `null`, `1.5`, `9007199254740992`, `-12`, `"é"`))
	}
	if rnd.IntN(5) > 0 {
		members = append(members, `"params":`+randomParams(rnd, pick))
	}
	for range rnd.IntN(2) {
		members = append(members, pick(`"extra":[1,{"a":null}]`, `"Method":"x"`, `"result":{}`, `"error":{"code":1,"message":"m"}`, `"extra":[1,{"a":null}]`, `"jsonrpc":"2.0"`, `"ID":1`))
	}
	rnd.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	b.WriteString(pick("", " ", "\n"))
	b.WriteString("{")
	for i, m := range members {
		if i > 0 {
			b.WriteString(pick(",", ",", ", ", " ,\t"))
		}
		b.WriteString(m)
	}
	b.WriteString("}")
	b.WriteString(pick("", "", " ", "\r\n", "x", "}", "{}"))
	return b.String()
}

func randomParams(rnd *rand.Rand, pick func(...string) string) string {
	if rnd.IntN(8) == 0 {
		return pick(`[]`, `[1,"a"]`, `null`, `"p"`)
	}
	members := []string{}
	if rnd.IntN(4) > 0 {
		members = append(members, pick(`"name":"echo"`, `"name":"ec\"ho"`, `"name":1`, `"Name":"echo"`, `"uri":"notes://x"`, `"uri":["a"]`, `"taskId":"t"`, `"name":"ëcho"`))
	}
	if rnd.IntN(2) == 0 {
		members = append(members, `"arguments":`+randomValue(rnd, pick, rnd.IntN(6)))
	}
	if rnd.IntN(3) == 0 {
		members = append(members, `"_meta":`+pick(`{}`, `{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`,
			`{"io.modelcontextprotocol/protocolVersion":1}`, `{"IO.modelcontextprotocol/protocolVersion":"x"}`, `[]`, `{"a":{"b":[]}}`))
	}
	if rnd.IntN(4) == 0 {
		members = append(members, pick(`"other":true`, `"ARGUMENTS":{}`, `"name":"dup"`, `"x":{"y":1,"Y":2}`))
	}
	rnd.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
	return "{" + strings.Join(members, ",") + "}"
}

func randomValue(rnd *rand.Rand, pick func(...string) string, depth int) string {
	if depth == 0 {
		if rnd.IntN(10) > 0 {
			valid := []string{`1`, `-0.5e+3`, `0`, `12E-7`, `"s"`, `"a b"`, `true`, `false`, `null`, `""`, "\"\x7f\""}
			return valid[rnd.IntN(len(valid))]
		}
		return pick(`1`, `-0.5e+3`, `0`, `01`, `1.`, `"s"`, `"s\n"`, `"\u00e9"`, `"é"`, `true`, `false`, `null`, `nul`, `""`, "\"\x7f\"", "\"\x1f\"")
	}
	switch rnd.IntN(3) {
	case 0:
		var parts []string
		for range rnd.IntN(4) {
			parts = append(parts, randomValue(rnd, pick, depth-1))
		}
		return "[" + strings.Join(parts, pick(",", ", ")) + "]"
	default:
		var parts []string
		for i := range rnd.IntN(4) {
			parts = append(parts, fmt.Sprintf(`"%s":%s`, pick(fmt.Sprint("k", i), "k", "K", "a b", "é"), randomValue(rnd, pick, depth-1)))
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
}
