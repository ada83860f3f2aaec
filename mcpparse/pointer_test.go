package mcpparse

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestParsePointer(t *testing.T) {
	good := map[string][]string{
		"":        nil,
		"/":       {""},
		"/a/b":    {"a", "b"},
		"/a~1b":   {"a/b"},
		"/m~0n":   {"m~n"},
		"/~01":    {"~1"}, // ~0 first, then a literal 1: not "/"
		"/0/10":   {"0", "10"},
		"/a b/%/": {"a b", "%", ""},
	}
	for in, want := range good {
		p, err := ParsePointer(in)
		if err != nil || p.String() != in || len(p.tokens) != len(want) {
			t.Errorf("ParsePointer(%q) = %q, %v; want tokens %q", in, p.tokens, err, want)
			continue
		}
		for i := range want {
			if p.tokens[i] != want[i] {
				t.Errorf("ParsePointer(%q) tokens = %q, want %q", in, p.tokens, want)
			}
		}
	}
	for _, in := range []string{"a", "a/b", "/~", "/~2", "/a~", "/-", "/a/-"} {
		if _, err := ParsePointer(in); err == nil {
			t.Errorf("ParsePointer(%q) accepted", in)
		}
	}
}

// TestParsePointerCostPerToken: a pointer's tokens cost what they hold,
// not a strings.Replacer each (935 bytes per token before; a gateway
// resolves the $refs of a tool schema its upstream lists: "#/a/a/…" of
// a megabyte built half a million of them).
func TestParsePointerCostPerToken(t *testing.T) {
	const n = 20000
	s := strings.Repeat("/a~1b~0", n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, err := ParsePointer(s)
	runtime.ReadMemStats(&after)
	if err != nil || p.Len() != n || p.Tokens()[0] != "a/b~" {
		t.Fatalf("ParsePointer = %d tokens (%q…), %v; want %d of a/b~", p.Len(), p.Tokens()[:1], err, n)
	}
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 256 {
		t.Errorf("ParsePointer allocated %d bytes per token, want at most 256", per)
	}
}

func TestLookup(t *testing.T) {
	doc := []byte(`{"a":{"b":[10,{"c":"x"},[1,2]],"\u0074o":"t","x/y":1,"m~n":2,"":3},"z":null,"\u212a":1,"\u017f":2,"cc\u0000x":3,"d_d":4,"e-E":5,"f":{"g_h":1,"j":2,"gH":3,"i":4,"I_":5}}`)
	tests := []struct {
		ptr   string
		raw   string
		found bool
		err   error
	}{
		{"", string(doc), true, nil},
		{"/a/b/0", "10", true, nil},
		{"/a/b/1/c", `"x"`, true, nil},
		{"/a/b/2/1", "2", true, nil},
		{"/a/b/3", "", false, nil},
		{"/a/to", `"t"`, true, nil}, // escaped name, compared unescaped
		{"/a/x~1y", "1", true, nil},
		{"/a/m~0n", "2", true, nil},
		{"/a/", "3", true, nil},
		{"/z", "null", true, nil},
		{"/missing", "", false, nil},
		{"/a/missing/deeper", "", false, nil},
		{"/a/to/x", "", false, ErrNotContainer}, // through a string
		{"/z/x", "", false, ErrNotContainer},    // through null
		{"/a/b/x", "", false, ErrNotContainer},  // not an index
		{"/a/b/01", "", false, ErrNotContainer}, // leading zero
		// A name a lenient decoder reads as the token's is neither found
		// nor absent: encoding/json v1 matches names case-insensitively
		// (Kelvin sign and long s included), C-string decoders stop at NUL.
		{"/A", "", false, ErrNameVariant},
		{"/Z/x", "", false, ErrNameVariant},
		{"/a/TO", "", false, ErrNameVariant},
		{"/k", "", false, ErrNameVariant},
		{"/s", "", false, ErrNameVariant},
		{"/cc", "", false, ErrNameVariant},
		{"/cc2", "", false, nil}, // not a variant: absent
		{"/a/b/1/C", "", false, ErrNameVariant},
		// Go's json/v2 matching names case-insensitively also ignores
		// '-' and '_' in them.
		{"/d_d", "4", true, nil},
		{"/dd", "", false, ErrNameVariant},
		{"/D-d", "", false, ErrNameVariant},
		{"/ee", "", false, ErrNameVariant},
		{"/e_e", "", false, ErrNameVariant},
		{"/e-E", "5", true, nil},
		// A variant after the exact name too: a decoder that allows
		// duplicates (json/v2 with AllowDuplicateNames) takes the last,
		// pydantic the camel-case alias.
		{"/f/g_h", "", false, ErrNameVariant},
		{"/f/gH", "", false, ErrNameVariant},
		{"/f/i", "", false, ErrNameVariant},
		{"/f/j", "2", true, nil},
	}
	for _, tt := range tests {
		p, err := ParsePointer(tt.ptr)
		if err != nil {
			t.Fatal(err)
		}
		v, found, err := p.Lookup(doc)
		if string(v.Raw()) != tt.raw || found != tt.found || !errors.Is(err, tt.err) {
			t.Errorf("Lookup(%q) = %s, %v, %v; want %s, %v, %v", tt.ptr, v.Raw(), found, err, tt.raw, tt.found, tt.err)
		}
	}
}

func TestArguments(t *testing.T) {
	tests := []struct{ body, args string }{
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"a":1}}}`, `{"a":1}`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments" :  {"a":[1 , 2]} ,"name":"t"}}`, `{"a":[1 , 2]}`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":"s"}}`, `"s"`},
		{`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}`, ``},
	}
	for _, tt := range tests {
		msgs, _, err := Parse([]byte(tt.body), Limits{})
		if err != nil || string(msgs[0].Arguments) != tt.args {
			t.Errorf("Parse(%s).Arguments = %s, %v; want %s", tt.body, msgs[0].Arguments, err, tt.args)
		}
	}
	// A case variant of arguments would be read as it by a case-insensitive
	// decoder, unchecked.
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","Arguments":{"a":1}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{},"ARGUMENTS":{"a":1}}}`,
	} {
		if _, _, err := Parse([]byte(body), Limits{}); !errors.Is(err, ErrInvalidParams) && !errors.Is(err, ErrDuplicateName) {
			t.Errorf("Parse(%s) = %v, want a refusal", body, err)
		}
	}
}

func TestElements(t *testing.T) {
	var got []string
	err := Value{[]byte(`[ "a", 1 ,{"b":[2]}, [] ]`)}.Elements(func(v Value) bool {
		got = append(got, string(v.Raw()))
		return true
	})
	want := []string{`"a"`, "1", `{"b":[2]}`, "[]"}
	if err != nil || len(got) != len(want) {
		t.Fatalf("Elements = %q, %v; want %q", got, err, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("element %d = %s, want %s", i, got[i], want[i])
		}
	}
}

func TestPointerCut(t *testing.T) {
	doc := []byte(`{"a/b":{"c":[1,{"d":"x"}]}}`)
	for _, tt := range []struct{ ptr, first, rest string }{
		{"/a~1b", "/a~1b", ""},
		{"/a~1b/c/1/d", "/a~1b", "/c/1/d"},
		{"/", "/", ""},
		{"//x", "/", "/x"},
	} {
		p, err := ParsePointer(tt.ptr)
		if err != nil {
			t.Fatal(err)
		}
		first, rest := p.Cut(1)
		if first.String() != tt.first || rest.String() != tt.rest || first.Len() != 1 || rest.Len() != p.Len()-1 {
			t.Errorf("Cut(%q, 1) = %q, %q; want %q, %q", tt.ptr, first, rest, tt.first, tt.rest)
		}
		if all, none := p.Cut(p.Len()); all.String() != tt.ptr || none.String() != "" {
			t.Errorf("Cut(%q, Len) = %q, %q", tt.ptr, all, none)
		}
		// The first's value, then the rest inside it, is the whole pointer's.
		want, wantFound, wantErr := p.Lookup(doc)
		v, found, err := first.Lookup(doc)
		if err == nil && found {
			v, found, err = rest.Lookup(v.Raw())
		}
		if string(v.Raw()) != string(want.Raw()) || found != wantFound || (err == nil) != (wantErr == nil) {
			t.Errorf("%q: split lookup = %s %v %v, want %s %v %v", tt.ptr, v.Raw(), found, err, want.Raw(), wantFound, wantErr)
		}
	}
	if head, rest := (Pointer{}).Cut(0); head.String() != "" || rest.String() != "" {
		t.Error(`Cut("", 0) is not two empty pointers`)
	}
}

func TestCheckValue(t *testing.T) {
	for doc, want := range map[string]error{
		`[1,{"a":"b"}]`:         nil,
		` null `:                nil,
		`"s"`:                   nil,
		`{"a":1,"a":2}`:         ErrDuplicateName,
		`{"a":1,"A":2}`:         ErrDuplicateName,
		`[{"x":{"k":1,"K":1}}]`: ErrDuplicateName,
		`[NaN]`:                 ErrInvalidJSON,
		`["\ud800"]`:            ErrInvalidJSON,
		`[1] x`:                 ErrInvalidJSON,
		`[1`:                    ErrInvalidJSON,
		"[\"\xff\"]":            ErrInvalidJSON,
		"":                      ErrInvalidJSON,
		`[[[[[[[[[[1]]]]]]]]]]`: ErrTooDeep,
	} {
		err := CheckValue([]byte(doc), 8)
		if (want == nil) != (err == nil) || (want != nil && !errors.Is(err, want)) {
			t.Errorf("CheckValue(%q) = %v, want %v", doc, err, want)
		}
	}
}
