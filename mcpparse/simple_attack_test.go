package mcpparse

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// adversarialNames is a ~1 MB tools/call whose arguments hold objects of
// n names each, all of length l, equal but for case except in their last
// two bytes.
func adversarialNames(n, l int) []byte {
	var sb strings.Builder
	sb.WriteString(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[`)
	for o := 0; sb.Len() < 1<<20-(n*(l+5)+100); o++ {
		if o > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('{')
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteByte('"')
			for j := range l - 2 {
				if (i+j)%2 == 0 {
					sb.WriteByte('a')
				} else {
					sb.WriteByte('A')
				}
			}
			fmt.Fprintf(&sb, `%02d":0`, i)
		}
		sb.WriteByte('}')
	}
	sb.WriteString(`]}}`)
	return []byte(sb.String())
}

// BenchmarkParseSimpleNames: the fast path's worst case, ~1 MB of
// objects with as many names as it holds, equal in length and equal but
// for case up to their last bytes (every pair compared in full), beside
// the full reading of the same body.
func BenchmarkParseSimpleNames(b *testing.B) {
	for _, c := range []struct{ n, l int }{{simpleObjectNames, 16}, {simpleObjectNames, 64}, {simpleObjectNames, 1000}} {
		body := adversarialNames(c.n, c.l)
		b.Run(fmt.Sprintf("names%d_len%d/simple", c.n, c.l), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, ok := parseSimple(body, DefaultMaxDepth); !ok {
					b.Fatal("fast path left the body")
				}
			}
		})
		b.Run(fmt.Sprintf("names%d_len%d/full", c.n, c.l), func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, _, err := parseFull(body, Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// mutationBases are usual bodies TestParseSimpleMutations mutates.
var mutationBases = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"a":[1,-0.5e+3,true,null,{"b":"c"}]},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
	`{"jsonrpc":"2.0","id":"x","method":"resources/read","params":{"uri":"u://a"}}`,
	`{"jsonrpc":"2.0","id":-7,"method":"tasks/get","params":{"taskId":"t"}}`,
	`{"jsonrpc":"2.0","method":"resources/subscribe","params":[]}`,
	`{"jsonrpc":"2.0","id":0,"method":"ping","params":{"name":1,"uri":[],"taskId":{}}}`,
}

// TestParseSimpleMutations: every one-byte substitution, insertion and
// deletion of some usual bodies, and every prefix, at two depth limits;
// where the fast path answers, encoding/json and the SDK read the same.
func TestParseSimpleMutations(t *testing.T) {
	bases := mutationBases
	if testing.Short() {
		bases = bases[:1]
	}
	took := 0
	for _, base := range bases {
		b := []byte(base)
		check := func(body []byte) {
			for _, d := range []int{0, 3} {
				if sameAsFull(t, body, d) {
					took++
					if d == 0 {
						m, _ := parseSimple(body, DefaultMaxDepth)
						sameSlices(t, body, m)
						checkV1(t, m)
						checkSDK(t, m)
					}
				}
			}
		}
		for i := range len(b) + 1 {
			check(b[:i])
			if i < len(b) {
				del := append(append([]byte{}, b[:i]...), b[i+1:]...)
				check(del)
			}
			// Bytes from 0x80 up are all alike to the fast path (it
			// refuses them everywhere); 0x80 stands for them.
			for c := range 0x81 {
				ins := append(append(append([]byte{}, b[:i]...), byte(c)), b[i:]...)
				check(ins)
				if i < len(b) {
					sub := append([]byte{}, b...)
					sub[i] = byte(c)
					check(sub)
				}
			}
		}
	}
	t.Logf("fast path answered %d mutated bodies", took)
	if took < 1000 {
		t.Errorf("fast path answered only %d mutated bodies", took)
	}
}

// TestParseSimpleCaseVariants: every case spelling of every name the readers
// know, in every place.
func TestParseSimpleCaseVariants(t *testing.T) {
	spell := func(s string, mask int) string {
		r := []byte(s)
		k := 0
		for i, c := range r {
			if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
				if mask>>k&1 == 1 {
					r[i] ^= 0x20
				}
				k++
			}
		}
		return string(r)
	}
	tmpl := []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"%s":"x"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","%s":"x"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"%s":"x"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"%s":"x","name":1}}}`,
		`{"%s":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t","%s":"y"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"%s":"u"}}`,
	}
	names := []string{"jsonrpc", "method", "id", "params", "result", "error", "name", "uri", "taskId", "_meta", "arguments", "code", "message", "tools"}
	n := 0
	for _, tp := range tmpl {
		for _, nm := range names {
			for mask := range 1 << min(len(nm), 10) {
				for _, d := range []int{0, 3} {
					if sameAsFull(t, []byte(fmt.Sprintf(tp, spell(nm, mask))), d) {
						n++
					}
				}
			}
		}
		// the protocol version key, a few spellings
		for mask := range 64 {
			sameAsFull(t, []byte(fmt.Sprintf(tp, spell(metaProtocolVersion, mask<<20|mask))), 0)
		}
	}
	t.Logf("fast path answered %d", n)
	if n == 0 {
		t.Error("fast path answered no spelling")
	}
}

// TestParseSimpleDepth: nesting at and around every limit, objects and arrays,
// in params, arguments, _meta, other members and params arrays.
func TestParseSimpleDepth(t *testing.T) {
	for depth := 0; depth <= 40; depth++ {
		arr := strings.Repeat("[", depth) + strings.Repeat("]", depth)
		obj := strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
		mix := strings.Repeat(`[{"a":`, depth) + "1" + strings.Repeat("}]", depth)
		for _, v := range []string{arr, obj, mix} {
			if v == "" {
				v = "0"
			}
			for _, tp := range []string{
				`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":%s}}`,
				`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":{"x":%s}}}`,
				`{"jsonrpc":"2.0","id":1,"method":"x","params":[%s]}`,
				`{"jsonrpc":"2.0","id":1,"method":"x","y":%s}`,
				`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%s}}`,
			} {
				for lim := 0; lim <= 45; lim++ {
					sameAsFull(t, []byte(fmt.Sprintf(tp, v)), lim)
				}
				sameAsFull(t, []byte(fmt.Sprintf(tp, v)), 1<<20)
				sameAsFull(t, []byte(fmt.Sprintf(tp, v)), -1)
			}
		}
	}
}

// TestParseSimpleEdges: ids, numbers, whitespace, names count.
func TestParseSimpleEdges(t *testing.T) {
	ids := []string{"0", "-0", "00", "01", "-", "+1", "1e2", "1.0", "9007199254740991", "-9007199254740991", "9007199254740992",
		"99999999999999999", "12345678901234567", "0x1", `""`, `"\""`, `"a`, "1 ", " 1", "1\t", "true", "null", "[]", "{}", "NaN", "Infinity"}
	for _, id := range ids {
		sameAsFull(t, []byte(`{"jsonrpc":"2.0","id":`+id+`,"method":"ping"}`), 0)
		sameAsFull(t, []byte(`{"jsonrpc":"2.0","method":"ping","id":`+id+`}`), 0)
	}
	for c := range 256 {
		ws := string(rune(c))
		if c >= 0x80 {
			ws = string([]byte{byte(c)})
		}
		for _, tp := range []string{`%s{"jsonrpc":"2.0","method":"ping"}`, `{"jsonrpc":"2.0","method":"ping"}%s`,
			`{%s"jsonrpc"%s:%s"2.0"%s,"method":"ping"}`, `{"jsonrpc":"2.0","method":"ping","x":[1%s,%s2]}`} {
			sameAsFull(t, []byte(strings.ReplaceAll(tp, "%s", ws)), 0)
		}
	}
	// Names up to and past the bound, spread over open objects of at
	// most simpleObjectNames names each.
	for total := 60; total <= 68; total++ {
		if took := sameAsFull(t, []byte(openNames(total)), 0); took != (total <= simpleNames) {
			t.Errorf("%d open names: fast path answered %v", total, took)
		}
	}
}

// TestParseSimpleTrees: random trees whose objects draw names from a few
// spellings (so duplicates and case variants turn up at any depth, next
// to siblings), as arguments, _meta and other members.
func TestParseSimpleTrees(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 5))
	keys := []string{"a", "b", "A", "B", "name", "Name", "uri", "_meta", "id", "method", "params"}
	var gen func(d int) string
	gen = func(d int) string {
		if d == 0 || rnd.IntN(4) == 0 {
			return []string{`1`, `"s"`, `null`, `[]`, `{}`, `-2.5E3`}[rnd.IntN(6)]
		}
		if rnd.IntN(3) == 0 {
			var p []string
			for range rnd.IntN(4) {
				p = append(p, gen(d-1))
			}
			return "[" + strings.Join(p, ",") + "]"
		}
		var p []string
		for range rnd.IntN(4) {
			p = append(p, `"`+keys[rnd.IntN(len(keys))]+`":`+gen(d-1))
		}
		return "{" + strings.Join(p, ",") + "}"
	}
	took := 0
	const n = 30000
	for range n {
		body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","x":%s,"params":{"name":"n","arguments":%s,"_meta":{"k":%s}}}`, gen(4), gen(6), gen(3))
		if sameAsFull(t, []byte(body), rnd.IntN(12)) {
			took++
		}
	}
	t.Logf("fast path answered %d of %d", took, n)
	if took < n/10 {
		t.Errorf("fast path answered only %d of %d", took, n)
	}
}

// sameSlices checks that Raw, ID and Arguments of the fast path's answer
// are the full reading's slices of the body: same start, length and
// capacity (an append must not write into the body differently).
func sameSlices(t *testing.T, body []byte, m Message) {
	t.Helper()
	msgs, _, err := parseFull(body, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	f := msgs[0]
	for _, c := range []struct {
		what string
		s, f []byte
	}{{"Raw", m.Raw, f.Raw}, {"ID", m.ID, f.ID}, {"Arguments", m.Arguments, f.Arguments}} {
		if len(c.s) != len(c.f) || cap(c.s) != cap(c.f) || (len(c.s) > 0 && &c.s[0] != &c.f[0]) {
			t.Fatalf("%s of %q: fast path len %d cap %d, full reading len %d cap %d (or another start)", c.what, body, len(c.s), cap(c.s), len(c.f), cap(c.f))
		}
	}
}
