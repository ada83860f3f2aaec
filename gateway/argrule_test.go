package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/text/unicode/norm"
)

// argConfig has one tool rule per argument predicate (the tool is named
// after it).
func argConfig(t testing.TB) Config {
	cfg := testConfig(t)
	a := func(ptr, pred string, values ...string) ArgRule {
		return ArgRule{Pointer: ptr, Predicate: pred, Values: values}
	}
	cfg.Tools = []Rule{
		{Pattern: "equals", Args: []ArgRule{a("/v", "equals", "hello")}},
		{Pattern: "equals_num", Args: []ArgRule{a("/n", "equals", "100")}},
		{Pattern: "one_of", Args: []ArgRule{a("/v", "one_of", "a", "b", "1.5", "true")}},
		{Pattern: "equals_zero", Args: []ArgRule{a("/limit", "equals", "0")}},
		{Pattern: "one_of_ids", Args: []ArgRule{a("/id", "one_of", "007", "1001", "x1")}},
		{Pattern: "glob_digits", Args: []ArgRule{a("/id", "glob", "1001")}},
		{Pattern: "equals_false", Args: []ArgRule{a("/force", "equals", "false")}},
		{Pattern: "equals_null", Args: []ArgRule{a("/x", "equals", "null")}},
		{Pattern: "glob", Args: []ArgRule{a("/to", "glob", "*@example.com")}},
		{Pattern: "prefix", Args: []ArgRule{a("/path", "prefix", "/home/{token.sub}/")}},
		{Pattern: "regex", Args: []ArgRule{a("/to", "regex", `[a-z0-9._%+-]+@example\.com`)}},
		{Pattern: "max_length", Args: []ArgRule{a("/s", "max_length", "3")}},
		{Pattern: "max_length_200", Args: []ArgRule{a("/s", "max_length", "200")}},
		{Pattern: "min", Args: []ArgRule{a("/n", "min", "-1")}},
		{Pattern: "max", Args: []ArgRule{a("/n", "max", "9007199254740992")}},
		{Pattern: "present", Args: []ArgRule{a("/x", "present")}},
		{Pattern: "absent", Args: []ArgRule{a("/x", "absent")}},
		{Pattern: "type", Args: []ArgRule{a("/x", "type", "integer", "null")}},
		{Pattern: "optional", Args: []ArgRule{{Pointer: "/cc", Predicate: "glob", Values: []string{"*@example.com"}, Optional: true}}},
		{Pattern: "optional_nested", Args: []ArgRule{{Pointer: "/filter/cc", Predicate: "glob", Values: []string{"*@example.com"}, Optional: true}}},
		{Pattern: "nested", Args: []ArgRule{a("/filter/a~1b/0", "equals", "x")}},
		{Pattern: "tilde", Args: []ArgRule{a("/a~0b~01", "equals", "x")}},
		{Pattern: "glob_marks", Args: []ArgRule{a("/v", "glob", `a?c\*`, "*/x")}},
		{Pattern: "types", Args: []ArgRule{a("/x", "type", "string", "boolean", "object", "array")}},
		{Pattern: "type_number", Args: []ArgRule{a("/x", "type", "number")}},
		{Pattern: "own", Args: []ArgRule{a("/owner", "equals", "{token.sub}")}},
		{Pattern: "from", Args: []ArgRule{a("/from", "equals", "{token.email}")}},
		{Pattern: "org", Args: []ArgRule{a("/org", "glob", "{token.org.id}/*")}},
		{Pattern: "unset_claim", Args: []ArgRule{a("/x", "equals", "{token.missing}")}},
		{Pattern: "two", Args: []ArgRule{a("/a", "equals", "1"), a("/b", "equals", "2")}},
		{Pattern: "scoped", Scopes: []string{"admin"}, Args: []ArgRule{a("/v", "equals", "ok")}},
		// The README's read_file and transfer examples.
		{Pattern: "read_file", Args: []ArgRule{a("/path", "prefix", "/srv/shared/", "/home/{token.sub}/"), a("/path", "regex", "(?:[^/]|/[^./])*")}},
		{Pattern: "transfer", Args: []ArgRule{a("/amount", "min", "0.01"), a("/amount", "max", "100"), a("/currency", "one_of", "EUR"), a("/note", "absent")}},
		// Rules a string of JSON text passes, but not the value it spells.
		{Pattern: "read_files", Args: []ArgRule{a("/paths", "regex", "(?:[^/]|/[^./])*")}},
		{Pattern: "word", Args: []ArgRule{a("/owner", "regex", "[a-z]+")}},
		{Pattern: "*"},
	}
	return cfg
}

func argToken(t testing.TB) string {
	c := claims()
	c["email"], c["email_verified"] = "alice@example.com", true
	c["org"] = map[string]any{"id": "acme*"} // a glob metacharacter matches only itself
	return mint(t, c)
}

// TestArgRules: a table per predicate; each case asserts the status and
// what reached the upstream (the exact body, or nothing).
func TestArgRules(t *testing.T) {
	h := newHarness(t, argConfig(t), nil)
	token := argToken(t)
	const (
		pass   = 200
		refuse = 403
		bad    = 400
	)
	tests := map[string][]struct {
		args   string // the arguments member, verbatim; "" for none
		status int
	}{
		"equals": {
			{`{"v":"hello"}`, pass},
			{`{"v":"h\u0065llo"}`, pass}, // compared after unescaping
			{`{"v":"Hello"}`, refuse},    // no case folding
			{`{"v":"hello "}`, refuse},
			{`{}`, refuse},            // missing
			{``, refuse},              // no arguments at all
			{`{"v":null}`, refuse},    // null is not missing
			{`{"v":["hello"]}`, pass}, // every element
			{`{"v":["hello","x"]}`, refuse},
			{`{"v":[]}`, refuse}, // empty array
			{`{"v":[["hello"]]}`, refuse},
			{`{"v":{"hello":1}}`, refuse},
			{`{"v":"hello\u0000"}`, refuse},
			{`{"V":"hello"}`, refuse},                  // the pointer names /v: missing
			{`{"v":"hello","V":"x"}`, bad},             // case variant: refused by the parser
			{`{"v":"hello","v":"x"}`, bad},             // duplicate
			{`{"v":"hello","\u0076":"x"}`, bad},        // escaped duplicate
			{`{"v":"\ud800"}`, bad},                    // lone surrogate
			{`"hello"`, refuse},                        // arguments not an object
			{`{"v":"hello","w":{"a":1,"a":2}}`, bad},   // nested duplicate elsewhere
			{`{"v":"hello","w":[{"a":1,"A":2}]}`, bad}, // nested case variant in an array
		},
		"equals_num": {
			{`{"n":100}`, pass},
			{`{"n":100.0}`, pass},
			{`{"n":1e2}`, pass},
			{`{"n":1E+2}`, pass},
			{`{"n":10000e-2}`, pass},
			{`{"n":0.1e3}`, pass},
			{`{"n":100.000000000000000000001}`, refuse}, // no rounding
			{`{"n":99.99999999999999999999}`, refuse},
			{`{"n":"100"}`, refuse}, // a number equals numbers only (see equals_zero)
			{`{"n":"100.0"}`, refuse},
			{`{"n":-100}`, refuse},
			{`{"n":[100,1e2]}`, pass},
		},
		"one_of": {
			{`{"v":"a"}`, pass},
			{`{"v":"b"}`, pass},
			{`{"v":"c"}`, refuse},
			{`{"v":1.5}`, pass},
			{`{"v":15e-1}`, pass},
			{`{"v":1.50}`, pass},
			{`{"v":1.4999999999999999999}`, refuse},
			{`{"v":true}`, pass},
			{`{"v":"true"}`, refuse}, // true is the literal (see equals_false)
			{`{"v":false}`, refuse},
			{`{"v":["a","b","a"]}`, pass},
			{`{"v":["a","c"]}`, refuse},
		},
		// A number equals numbers only: JavaScript and Python read the
		// string "0" as true (if (args.limit), if args.limit:), so that
		// "0" would pass a rule that the limit be off.
		"equals_zero": {
			{`{"limit":0}`, pass},
			{`{"limit":-0}`, pass},
			{`{"limit":0.0}`, pass},
			{`{"limit":"0"}`, refuse},
			{`{"limit":["0"]}`, refuse},
			{`{"limit":[0,"0"]}`, refuse},
			{`{"limit":false}`, refuse},
			{`{"limit":null}`, refuse},
		},
		// Values that do not spell a JSON number ("007") are strings; one
		// that does equals numbers only, and glob matches the string.
		"one_of_ids": {
			{`{"id":"007"}`, pass},
			{`{"id":"x1"}`, pass},
			{`{"id":1001}`, pass},
			{`{"id":"1001"}`, refuse},
			{`{"id":7}`, refuse},
		},
		"glob_digits": {
			{`{"id":"1001"}`, pass},
			{`{"id":1001}`, refuse},
		},
		// true, false and null are the JSON literals only: JavaScript reads
		// the strings "false" and "null" as true (if (args.force), zod's
		// z.coerce.boolean()), so that "false" would pass a rule that
		// the flag be off.
		"equals_false": {
			{`{"force":false}`, pass},
			{`{"force":[false]}`, pass},
			{`{"force":"false"}`, refuse},
			{`{"force":["false"]}`, refuse},
			{`{"force":true}`, refuse},
			{`{"force":"true"}`, refuse},
			{`{"force":0}`, refuse},
			{`{"force":null}`, refuse},
		},
		"equals_null": {
			{`{"x":null}`, pass},
			{`{"x":"null"}`, refuse},
			{`{"x":" null"}`, refuse},
			{`{"x":false}`, refuse},
		},
		"glob": {
			{`{"to":"bob@example.com"}`, pass},
			{`{"to":"bob@example.com.evil"}`, refuse},
			{`{"to":"eve@evil.com,bob@example.com"}`, pass}, // what a glob says (the README's caveat; use a regex)
			{`{"to":"bob@EXAMPLE.com"}`, refuse},
			{`{"to":"bob@evil.com\u0000@example.com"}`, refuse}, // NUL
			{`{"to":"bob@evil.com\r\n@example.com"}`, refuse},   // line break
			// Line breaks that are no control characters: Python's
			// str.splitlines and YAML 1.1 (PyYAML) end a line there.
			{`{"to":"bob@evil.com\u2028@example.com"}`, refuse},
			{`{"to":"bob@evil.com\u2029@example.com"}`, refuse},
			{"{\"to\":\"bob@evil.com\u2028@example.com\"}", refuse}, // raw, not escaped
			{`{"to":["a@example.com","b@example.com"]}`, pass},
			{`{"to":["a@example.com","b@evil.com"]}`, refuse},
			{`{"to":"bob@exampl\u0065.com"}`, pass},
			{`{"to":42}`, refuse},
			{`{"\u0074o":"bob@example.com"}`, pass},
			{`{"to":"bob@example.com","t\u006f":"x@evil.com"}`, bad},
		},
		// README: `*` any run of characters (`/`, `@` and `,` included),
		// `?` one character, `\` escapes.
		"glob_marks": {
			{`{"v":"abc*"}`, pass},
			{`{"v":"a\u00e9c*"}`, pass}, // one character, two bytes
			{`{"v":"a😀c*"}`, pass},      // one character, a surrogate pair in UTF-16
			{`{"v":"ac*"}`, refuse},     // ? is one character, not none
			{`{"v":"abbc*"}`, refuse},   // nor two
			{`{"v":"abcx"}`, refuse},    // \* is a literal *
			{`{"v":"abc"}`, refuse},
			{`{"v":"a/b/x"}`, pass},   // * takes /
			{`{"v":"a@b,c/x"}`, pass}, // and @ and ,
			{`{"v":"/x"}`, pass},      // and nothing
			{`{"v":"a/b/xy"}`, refuse},
		},
		"prefix": {
			{`{"path":"/home/alice/notes.txt"}`, pass},
			{`{"path":"/home/alice"}`, refuse},
			{`{"path":"/home/alicex/a"}`, refuse},
			{`{"path":"/home/bob/a"}`, refuse},
			{`{"path":"/home/ali\u0063e/a"}`, pass},
			{`{"path":"/home/alice/e\u0301"}`, refuse}, // not NFC
			{`{"path":"/home/alice/\u00e9"}`, pass},
		},
		"regex": {
			{`{"to":"bob@example.com"}`, pass},
			{`{"to":"bob@example.com\n"}`, refuse},
			{`{"to":"a@x.com,bob@example.com"}`, refuse}, // anchored, no comma
			{`{"to":"xbob@example.comx"}`, refuse},
			{`{"to":["bob@example.com"]}`, pass},
		},
		"max_length": {
			{`{"s":"abc"}`, pass},
			{`{"s":"abcd"}`, refuse},
			{`{"s":"\u00e9\u00e9\u00e9"}`, pass}, // code points, not bytes
			{`{"s":"😀😀😀"}`, pass},
			{`{"s":"\ud83d\ude00\ud83d\ude00\ud83d\ude00\ud83d\ude00"}`, refuse},
			{`{"s":"` + strings.Repeat("a", 100000) + `"}`, refuse},
			{`{"s":3}`, refuse},
			{`{"s":["ab","abc"]}`, pass},
			{`{"s":"[1]"}`, refuse}, // JSON text: decoded, an array of a number, which max_length refuses as [1]
			{`{"s":"{}"}`, refuse},  // decoded, an object, refused as {} is
			{`{"s":"nul"}`, pass},   // no JSON text: a string
			{`{"s":["ab","abcd"]}`, refuse},
		},
		// A string of JSON text holds max_length as a string and decoded,
		// as a server on the Python SDK reads it: "null" is null there,
		// which a rule that the value be a short string refuses.
		"max_length_200": {
			{`{"s":"hello"}`, pass},
			{`{"s":null}`, refuse},
			{`{"s":"null"}`, refuse},
			{`{"s":" null "}`, refuse},
			{`{"s":"nullify"}`, pass},
			{`{"s":{"a":"b"}}`, refuse},
			{`{"s":"{\"a\":\"b\"}"}`, refuse},
			{`{"s":["ab","cd"]}`, pass},
			{`{"s":"[\"ab\",\"cd\"]"}`, pass}, // decoded, strings each within the bound
			{`{"s":"[\"ab\",1]"}`, refuse},
			{`{"s":"[\"ab\",[\"cd\"]]"}`, refuse},
			{`{"s":"[NaN]"}`, refuse}, // Python reads it; the gateway cannot check it
		},
		"min": {
			{`{"n":-1}`, pass},
			{`{"n":-1.0}`, pass},
			{`{"n":-0.1e1}`, pass},
			{`{"n":-1.0000000000000000001}`, refuse},
			{`{"n":-0}`, pass},
			{`{"n":0}`, pass},
			{`{"n":1e400}`, pass},
			{`{"n":-1e400}`, refuse},
			{`{"n":-1e-400}`, pass},
			{`{"n":"5"}`, refuse},
			{`{"n":[0,5,-1]}`, pass},
			{`{"n":[0,-2]}`, refuse},
		},
		"max": {
			{`{"n":9007199254740992}`, pass},
			{`{"n":9007199254740993}`, refuse}, // the same float64, not the same number
			{`{"n":9007199254740992.0000001}`, refuse},
			{`{"n":9.007199254740992e15}`, pass},
			{`{"n":1e999999999999999999999999}`, refuse},
			{`{"n":-1e999999999999999999999999}`, pass},
			{`{"n":123456789012345678901234567890}`, refuse},
			{`{"n":true}`, refuse},
		},
		"present": {
			{`{"x":null}`, pass},
			{`{"x":0}`, pass},
			{`{}`, refuse},
			{`{"X":1}`, refuse},
		},
		"absent": {
			{`{}`, pass},
			{``, pass},
			{`{"x":null}`, refuse},
			{`{"\u0078":1}`, refuse},
			// A case or NUL variant is read as x by lenient decoders
			// (encoding/json v1, cJSON): not absent.
			{`{"X":1}`, refuse},
			{`{"x\u0000y":1}`, refuse},
			{`{"_x":1}`, refuse}, // json/v2 ignoring case ignores - and _ too
			{`{"y":1}`, pass},
			// A JavaScript server that copies the arguments with
			// Object.assign reads x from __proto__: refused by the parser.
			{`{"__proto__":{"x":1}}`, bad},
			{`{"\u005f_proto__":{"x":1}}`, bad},
		},
		"type": {
			{`{"x":1}`, pass},
			{`{"x":1.0}`, pass},
			{`{"x":1e2}`, pass},
			{`{"x":1.5}`, refuse},
			{`{"x":null}`, pass},
			{`{"x":"1"}`, refuse},
			{`{"x":[1]}`, refuse}, // type applies to the value itself
			{`{}`, refuse},
		},
		// Every JSON type the README names, each alone.
		"types": {
			{`{"x":"s"}`, pass},
			{`{"x":true}`, pass},
			{`{"x":false}`, pass},
			{`{"x":{}}`, pass},
			{`{"x":[]}`, pass},
			{`{"x":[1]}`, pass},
			{`{"x":1}`, refuse},
			{`{"x":null}`, refuse},
			{`{}`, refuse},
		},
		"type_number": {
			{`{"x":1}`, pass},
			{`{"x":1.5}`, pass},
			{`{"x":-1e400}`, pass},
			{`{"x":"1"}`, refuse},
			{`{"x":true}`, refuse},
			{`{"x":null}`, refuse},
			{`{"x":[1]}`, refuse},
		},
		"optional": {
			{`{}`, pass},
			{``, pass},
			{`{"cc":"a@example.com"}`, pass},
			{`{"cc":"a@evil.com"}`, refuse},
			{`{"cc":null}`, refuse},
			{`{"cc":[]}`, refuse},
			{`{"CC":"a@evil.com"}`, refuse}, // not missing: encoding/json v1 reads it as cc
			{`{"cC":"a@example.com"}`, refuse},
			{`{"cc\u0000":"a@evil.com"}`, refuse}, // C-string decoders read cc
			{`{"c_c":"a@evil.com"}`, refuse},      // json/v2 ignoring case reads cc
			{`{"C-c":"a@evil.com"}`, refuse},
			// Beside cc, in either order: json/v2 allowing duplicate
			// names and pydantic's camel-case aliases read the variant.
			{`{"cc":"a@example.com","c_c":"a@evil.com"}`, refuse},
			{`{"c_c":"a@evil.com","cc":"a@example.com"}`, refuse},
			{`{"bcc":"a@evil.com"}`, pass}, // another member
			{`{"__proto__":{"cc":"a@evil.com"}}`, bad},
		},
		// README: a pointer through a value that is not an object or
		// array fails even when optional, as do arguments that are not
		// an object.
		"optional_nested": {
			{`{}`, pass},
			{`{"filter":{}}`, pass},
			{`{"filter":{"cc":"a@example.com"}}`, pass},
			{`{"filter":"x"}`, refuse},
			{`{"filter":5}`, refuse},
			{`{"filter":null}`, refuse},
			{`{"filter":true}`, refuse},
			{`"x"`, refuse},
			{`[]`, refuse},
			{`5`, refuse},
		},
		"nested": {
			{`{"filter":{"a/b":["x"]}}`, pass},
			{`{"filter":{"a/b":["y","x"]}}`, refuse},
			{`{"filter":{"a/b":[]}}`, refuse},
			{`{"filter":{"a\/b":["x"]}}`, pass},
			{`{"filter":{"a/b":"x"}}`, refuse}, // through a string
			{`{"filter":"x"}`, refuse},
			{`{"filter":{"a/b":["x"],"A/B":["y"]}}`, bad},
			{`{"filter":{"A/B":["y"]}}`, refuse},
			{`{"FILTER":{"a/b":["x"]}}`, refuse},
		},
		// RFC 6901: ~0 is ~, ~1 is /, read in that order (~01 is ~1).
		"tilde": {
			{`{"a~b~1":"x"}`, pass},
			{`{"a~b/":"x"}`, refuse},
			{`{"a/b~1":"x"}`, refuse},
			{`{"a~0b~01":"x"}`, refuse},
		},
		"own": {
			{`{"owner":"alice"}`, pass},
			{`{"owner":"bob"}`, refuse},
			{`{"owner":"Alice"}`, refuse},
			{`{"owner":["alice","alice"]}`, pass},
			{`{"owner":["alice","bob"]}`, refuse},
		},
		"from": {
			{`{"from":"alice@example.com"}`, pass},
			{`{"from":"bob@example.com"}`, refuse},
		},
		"org": {
			{`{"org":"acme*/x"}`, pass},
			{`{"org":"acmeX/x"}`, refuse}, // the claim's * is literal
		},
		"unset_claim": {
			{`{"x":""}`, refuse},
			{`{"x":"{token.missing}"}`, refuse},
		},
		"read_file": {
			{`{"path":"/srv/shared/a.txt"}`, pass},
			{`{"path":"/home/alice/notes"}`, pass},
			{`{"path":"/home/alice/../bob/notes"}`, refuse},
			{`{"path":"/home/bob/notes"}`, refuse},
			{`{"path":"/srv/shared/.hidden"}`, refuse},
			{`{"path":"/home/alice//etc"}`, refuse},
			{`{"path":"/home/alice/./x"}`, refuse},
			{`{"path":"/srv/shared/a\u2028/etc/passwd"}`, refuse}, // two lines to str.splitlines
			{`{"path":"/srv/shared/a\u2029/etc/passwd"}`, refuse},
			{`{"path":"/srv/shared/a\u2027b"}`, pass},
		},
		"transfer": {
			{`{"amount":100,"currency":"EUR"}`, pass},
			{`{"amount":0.01,"currency":"EUR"}`, pass},
			{`{"amount":1e2,"currency":"EUR"}`, pass},
			{`{"amount":100.000000000000000001,"currency":"EUR"}`, refuse},
			{`{"amount":0.00999999999999999999,"currency":"EUR"}`, refuse},
			{`{"amount":"50","currency":"EUR"}`, refuse},
			{`{"amount":50,"currency":"eur"}`, refuse},
			{`{"amount":50,"currency":"EUR","note":null}`, refuse},
			{`{"amount":50,"currency":"EUR","Note":"x"}`, refuse},
			{`{"amount":50,"currency":"EUR","no\u0074e\u0000":"x"}`, refuse},
		},
		// Servers on the Python SDK decode a string argument that is JSON
		// text for an array, an object or null (pre_parse_json) before the
		// tool runs: the rule holds for both readings.
		"read_files": {
			{`{"paths":["/srv/a/b"]}`, pass},
			{`{"paths":["/srv/shared/../../etc/shadow"]}`, refuse},
			{`{"paths":"[\"/srv/shared/\\u002e\\u002e/\\u002e\\u002e/etc/shadow\"]"}`, refuse},
			{`{"paths":"[\"/srv/a\\u0000b\\nc\"]"}`, refuse}, // control characters once decoded
			{`{"paths":"[\"/srv/a\\u2028/etc\"]"}`, refuse},  // a line break once decoded
			{`{"paths":"  [\"/srv/ok\"] "}`, pass},           // JSON whitespace around it
			{`{"paths":"[\"/srv/ok\",\"/x/../y\"]"}`, refuse},
			{`{"paths":"{\"a\":\"/x/../y\"}"}`, refuse}, // an object: regex compares strings
			{`{"paths":"{\"a\":1,\"a\":2}"}`, refuse},   // duplicate names, which Python reads
			{`{"paths":"{\"a\":1,\"A\":2}"}`, refuse},   // case variants
			{`{"paths":"[NaN]"}`, refuse},               // Python reads NaN
			{`{"paths":"[-Infinity]"}`, refuse},
			{`{"paths":"[\"\\ud800\"]"}`, refuse},                                             // a lone surrogate, which Python reads
			{`{"paths":"` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `"}`, refuse}, // deeper than checked
			{`{"paths":"[abc]"}`, pass},                                                       // no JSON decoder reads it: a string
			{`{"paths":"[\"/srv/a\"] x"}`, pass},                                              // trailing text: not JSON
			{`{"paths":"\"[x]\""}`, pass},                                                     // JSON text for a string stays a string
		},
		"word": {
			{`{"owner":"bob"}`, pass},
			{`{"owner":"null"}`, refuse}, // decoded: null, which "no owner" may mean
			{`{"owner":"nullify"}`, pass},
			{`{"owner":"Null"}`, refuse}, // by the regex
		},
		"two": {
			{`{"a":1,"b":2.0}`, pass},
			{`{"a":1,"b":3}`, refuse},
			{`{"a":1,"b":"2"}`, refuse},
		},
	}
	for tool, cases := range tests {
		for _, tt := range cases {
			params := `"name":` + quote(tool)
			if tt.args != "" {
				params += `,"arguments":` + tt.args
			}
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{` + params + `}}`
			before := len(h.up.requests())
			resp := h.do(t, call{body: body, token: token})
			got := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Errorf("%s %s: status %d, want %d (%s)", tool, shorten(tt.args), resp.StatusCode, tt.status, got)
				continue
			}
			reqs := h.up.requests()[before:]
			if tt.status == pass {
				if len(reqs) != 1 || string(reqs[0].Body) != body {
					t.Errorf("%s %s: upstream got %d requests, want the body unchanged", tool, shorten(tt.args), len(reqs))
				}
				continue
			}
			if len(reqs) != 0 {
				t.Errorf("%s %s: refused, but the upstream got %s", tool, shorten(tt.args), reqs[0].Body)
			}
			if tt.status == refuse {
				checkArgRefusal(t, resp, got, tool)
			}
		}
	}
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// checkArgRefusal: an argument refusal is a JSON-RPC error naming the
// rule and the argument, with no scope challenge.
func checkArgRefusal(t *testing.T, resp *http.Response, body, rule string) {
	t.Helper()
	if c := resp.Header.Get("WWW-Authenticate"); c != "" {
		t.Errorf("WWW-Authenticate = %q, want none (no scope cures an argument)", c)
	}
	var b struct {
		Error struct {
			Code    int               `json:"code"`
			Message string            `json:"message"`
			Data    map[string]string `json:"data"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatal(err)
	}
	// README: JSON-RPC error -32000, written out, not read from codeRefused.
	if b.Error.Code != -32000 || b.Error.Data["rule"] != rule || !strings.Contains(b.Error.Message, `(rule "`+rule+`")`) {
		t.Errorf("refusal %s: want code -32000 naming rule %q", body, rule)
	}
	// The argument's pointer is named, but where arguments is no object.
	if arg := b.Error.Data["argument"]; arg == "" && !strings.Contains(b.Error.Message, "arguments is not an object") || arg != "" && !strings.Contains(b.Error.Message, `argument "`+arg+`"`) {
		t.Errorf("refusal %s: message does not name argument %q", body, arg)
	}
}

// TestArgRuleConfig: mistakes in argument rules are load errors.
func TestArgRuleConfig(t *testing.T) {
	tests := []struct {
		name string
		arg  ArgRule
	}{
		{"pointer without slash", ArgRule{Pointer: "to", Predicate: "equals", Values: []string{"x"}}},
		{"bad escape", ArgRule{Pointer: "/a~2", Predicate: "equals", Values: []string{"x"}}},
		{"pointer -", ArgRule{Pointer: "/a/-", Predicate: "equals", Values: []string{"x"}}},
		{"unknown predicate", ArgRule{Pointer: "/a", Predicate: "contains", Values: []string{"x"}}},
		{"equals two values", ArgRule{Pointer: "/a", Predicate: "equals", Values: []string{"x", "y"}}},
		{"one_of none", ArgRule{Pointer: "/a", Predicate: "one_of"}},
		{"unknown placeholder", ArgRule{Pointer: "/a", Predicate: "equals", Values: []string{"{http.request.host}"}}},
		{"token without claim", ArgRule{Pointer: "/a", Predicate: "equals", Values: []string{"{token}"}}},
		{"empty claim segment", ArgRule{Pointer: "/a", Predicate: "equals", Values: []string{"{token.org..id}"}}},
		{"unbalanced brace", ArgRule{Pointer: "/a", Predicate: "prefix", Values: []string{"/home/{token.sub"}}},
		// An empty prefix would hold for every string: a typo, never a rule.
		{"empty prefix", ArgRule{Pointer: "/a", Predicate: "prefix", Values: []string{"/srv/", ""}}},
		{"stray closing brace", ArgRule{Pointer: "/a", Predicate: "prefix", Values: []string{"/home/}"}}},
		{"value not NFC", ArgRule{Pointer: "/a", Predicate: "equals", Values: []string{"e\u0301"}}},
		{"glob ending in backslash", ArgRule{Pointer: "/a", Predicate: "glob", Values: []string{`a\`}}},
		// The backslash would escape the quoting of the claim's first
		// character: a sub starting with "*" would be a wildcard.
		{"glob backslash before a placeholder", ArgRule{Pointer: "/a", Predicate: "glob", Values: []string{`C:\Users\{token.sub}\*`}}},
		{"glob three backslashes before a placeholder", ArgRule{Pointer: "/a", Predicate: "glob", Values: []string{`/x\\\{token.sub}`}}},
		{"bad regex", ArgRule{Pointer: "/a", Predicate: "regex", Values: []string{"a("}}},
		// Wrapped as ^(?:…)$ it would compile, its ")|(" ending the
		// anchoring group: "^(?:/srv/x)|(.*)$" holds for every string.
		{"regex closing the anchoring group", ArgRule{Pointer: "/a", Predicate: "regex", Values: []string{"/srv/x)|(.*"}}},
		{"placeholder in regex", ArgRule{Pointer: "/a", Predicate: "regex", Values: []string{"{token.sub}"}}},
		{"max_length negative", ArgRule{Pointer: "/a", Predicate: "max_length", Values: []string{"-1"}}},
		{"max_length not a number", ArgRule{Pointer: "/a", Predicate: "max_length", Values: []string{"ten"}}},
		{"min not a JSON number", ArgRule{Pointer: "/a", Predicate: "min", Values: []string{"0x10"}}},
		{"max with leading zero", ArgRule{Pointer: "/a", Predicate: "max", Values: []string{"01"}}},
		{"max huge exponent", ArgRule{Pointer: "/a", Predicate: "max", Values: []string{"1e9999999"}}},
		{"present with a value", ArgRule{Pointer: "/a", Predicate: "present", Values: []string{"x"}}},
		{"optional absent", ArgRule{Pointer: "/a", Predicate: "absent", Optional: true}},
		{"unknown type", ArgRule{Pointer: "/a", Predicate: "type", Values: []string{"int"}}},
	}
	for _, tt := range tests {
		cfg := testConfig(t)
		cfg.Tools = []Rule{{Pattern: "t", Args: []ArgRule{tt.arg}}}
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", tt.name, tt.arg)
		}
	}
	cfg := testConfig(t)
	cfg.Prompts = []Rule{{Pattern: "p", Args: []ArgRule{{Pointer: "/a", Predicate: "present"}}}}
	if _, err := New(cfg); err == nil {
		t.Error("New accepted argument rules on a prompt rule")
	}
	if _, err := New(argConfig(t)); err != nil {
		t.Errorf("New(argConfig) = %v", err)
	}
	// An escaped backslash before a placeholder is a literal one.
	cfg = testConfig(t)
	cfg.Tools = []Rule{{Pattern: "t", Args: []ArgRule{{Pointer: "/a", Predicate: "glob", Values: []string{`C:\\Users\\{token.sub}\\*`}}}}}
	if _, err := New(cfg); err != nil {
		t.Errorf("New refused a glob with an escaped backslash before {token.sub}: %v", err)
	}
}

// TestArgRuleOrder: scopes are checked first (a caller without them gets
// the step-up challenge and learns nothing of the argument rules); with
// them, the argument refusal has no challenge. tools/list still lists
// the tool, its schema untouched.
func TestArgRuleOrder(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"scoped","inputSchema":{"type":"object","properties":{"v":{"type":"string"}}}}]}}`
	h := newHarness(t, argConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(list))
	})
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"scoped","arguments":{"v":"no"}}}`
	resp := h.do(t, call{body: body, token: argToken(t)})
	readBody(t, resp)
	if resp.StatusCode != 403 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "insufficient_scope") {
		t.Errorf("without scope: %d %q, want 403 insufficient_scope", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	c := claims()
	c["scope"] = "mcp admin"
	admin := mint(t, c)
	resp = h.do(t, call{body: body, token: admin})
	checkArgRefusal(t, resp, readBody(t, resp), "scoped")
	if resp.StatusCode != 403 {
		t.Errorf("with scope, bad argument: %d, want 403", resp.StatusCode)
	}
	resp = h.do(t, call{body: `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, token: admin})
	if got := readBody(t, resp); got != list {
		t.Errorf("tools/list = %s, want the upstream's answer unchanged", got)
	}
	if n := len(h.up.requests()); n != 1 {
		t.Errorf("upstream got %d requests, want only the tools/list", n)
	}
}

// TestArgRule2026: on 2026-07-28 (Mcp-Name header, _meta version) the
// same rules hold.
func TestArgRule2026(t *testing.T) {
	h := newHarness(t, argConfig(t), nil)
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
	hdr := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "own"}
	for owner, want := range map[string]int{"alice": 200, "bob": 403} {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"own","arguments":{"owner":"` + owner + `"},` + meta + `}}`
		before := len(h.up.requests())
		resp := h.do(t, call{body: body, token: argToken(t), headers: hdr})
		got := readBody(t, resp)
		if resp.StatusCode != want {
			t.Errorf("owner %s: %d %s, want %d", owner, resp.StatusCode, got, want)
		}
		if forwarded := len(h.up.requests()) - before; forwarded != map[bool]int{true: 1, false: 0}[want == 200] {
			t.Errorf("owner %s: upstream got %d requests", owner, forwarded)
		}
	}
}

// TestArgRuleAudit: the audit event names the rule and the argument;
// argument values appear only with AuditArguments.
func TestArgRuleAudit(t *testing.T) {
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"own","arguments":{"owner":"bob-secret"}}}`
	for _, withArgs := range []bool{false, true} {
		cfg := argConfig(t)
		cfg.AuditArguments = withArgs
		h := newHarness(t, cfg, nil)
		readBody(t, h.do(t, call{body: body, token: argToken(t)}))
		entries := h.logs.All()
		if len(entries) != 1 {
			t.Fatalf("audit events = %d, want 1", len(entries))
		}
		e := entries[0].ContextMap()
		if e["decision"] != "deny" || e["rule"] != "own" || e["argument"] != "/owner" || e["tool"] != "own" {
			t.Errorf("audit event %v, want a denial naming rule own and argument /owner", e)
		}
		args, logged := e["arguments"]
		if logged != withArgs {
			t.Errorf("AuditArguments %v: arguments logged = %v (%v)", withArgs, logged, args)
		}
		if withArgs && !strings.Contains(fmtAny(args), "bob-secret") {
			t.Errorf("arguments = %v, want the call's arguments", args)
		}
		if !withArgs && strings.Contains(fmtAny(e), "bob-secret") {
			t.Errorf("audit event %v carries an argument value", e)
		}
	}
}

func fmtAny(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestDecimal(t *testing.T) {
	equal := [][]string{
		{"100", "100.0", "1e2", "1E+2", "10000e-2", "0.1e3", "100.000"},
		{"0", "-0", "0.0", "-0.0e5", "0e-10"},
		{"-1.5", "-15e-1", "-0.15E1"},
		{"9007199254740993", "9.007199254740993e15"},
		{"0.000123", "1.23e-4", "123e-6"},
	}
	for _, group := range equal {
		for _, a := range group {
			for _, b := range group {
				if c := mustDecimal(t, a).cmp(mustDecimal(t, b)); c != 0 {
					t.Errorf("cmp(%s, %s) = %d, want 0", a, b, c)
				}
			}
		}
	}
	ascending := []string{"-1e400", "-9007199254740993", "-9007199254740992", "-1", "-0.5", "-1e-400", "0", "1e-400",
		"0.1", "0.10000000000000000001", "1", "1.5", "10", "99.999999999999999999", "100", "100.00000000000000001",
		"9007199254740992", "9007199254740993", "123456789012345678901234567890", "1e400", "1e99999999999999999999"}
	for i := range ascending {
		for j := range ascending {
			if c := mustDecimal(t, ascending[i]).cmp(mustDecimal(t, ascending[j])); c != compare(i, j) {
				t.Errorf("cmp(%s, %s) = %d, want %d", ascending[i], ascending[j], c, compare(i, j))
			}
		}
	}
	for n, want := range map[string]bool{"1": true, "1.0": true, "1e2": true, "1.5": false, "15e-1": false, "0": true, "1e-1": false, "1.5e1": true} {
		if got := mustDecimal(t, n).isInteger(); got != want {
			t.Errorf("isInteger(%s) = %v, want %v", n, got, want)
		}
	}
	for _, bad := range []string{"", "-", "01", "1.", ".5", "1e", "1e+", "+1", "0x1", "1_000", "NaN", "Infinity", " 1"} {
		if _, err := parseDecimal(bad); err == nil {
			t.Errorf("parseDecimal(%q) accepted", bad)
		}
	}
}

func mustDecimal(t *testing.T, s string) decimal {
	t.Helper()
	d, err := parseDecimal(s)
	if err != nil {
		t.Fatalf("parseDecimal(%q): %v", s, err)
	}
	return d
}

// TestArgRuleEmptyClaim: a placeholder whose claim is empty, absent or
// not a string makes its value fail (never the empty string, which would
// make prefix "{token.email}" or glob "*{token.email}" hold for
// anything); the other values of the line still count.
func TestArgRuleEmptyClaim(t *testing.T) {
	cfg := testConfig(t)
	a := func(pred string, values ...string) []ArgRule {
		return []ArgRule{{Pointer: "/v", Predicate: pred, Values: values}}
	}
	cfg.Tools = []Rule{
		{Pattern: "prefix", Args: a("prefix", "{token.email}")},
		{Pattern: "glob", Args: a("glob", "*{token.email}")},
		{Pattern: "equals", Args: a("equals", "{token.email}")},
		{Pattern: "one_of", Args: a("one_of", "{token.email}", "public")},
		{Pattern: "*"},
	}
	h := newHarness(t, cfg, nil)
	for name, email := range map[string]any{"empty": "", "absent": nil, "number": 5, "array": []string{"x"}, "object": map[string]any{}} {
		c := claims()
		if email != nil {
			c["email"] = email
		}
		token := mint(t, c)
		for tool, args := range map[string][]string{
			"prefix": {`{"v":"anything"}`, `{"v":""}`},
			"glob":   {`{"v":"anything"}`, `{"v":""}`, `{"v":"*"}`},
			"equals": {`{"v":""}`},
			"one_of": {`{"v":""}`, `{"v":"x"}`},
		} {
			for _, arg := range args {
				body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + quote(tool) + `,"arguments":` + arg + `}}`
				before := len(h.up.requests())
				resp := h.do(t, call{body: body, token: token})
				got := readBody(t, resp)
				if resp.StatusCode != http.StatusForbidden || len(h.up.requests()) != before {
					t.Errorf("email %s: %s %s: status %d, want 403, nothing forwarded (%s)", name, tool, arg, resp.StatusCode, got)
				}
			}
		}
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"one_of","arguments":{"v":"public"}}}`
		if resp := h.do(t, call{body: body, token: token}); resp.StatusCode != http.StatusOK {
			t.Errorf("email %s: one_of public: status %d, want 200 (the literal value still holds)", name, resp.StatusCode)
		}
	}
}

// TestArgRuleEmailUnverified: {token.email} holds only for an address
// the issuer says it verified (email_verified true, or "true"), in a JWT
// and in an introspection answer alike: a Keycloak user who registered
// with someone else's address, unverified, gets a token saying so, and
// must not send mail as that address nor reach its files. Other claims
// are taken as they come.
func TestArgRuleEmailUnverified(t *testing.T) {
	rules := []Rule{
		{Pattern: "send_mail", Args: []ArgRule{{Pointer: "/from", Predicate: "equals", Values: []string{"{token.email}"}}}},
		{Pattern: "read_file", Args: []ArgRule{{Pointer: "/path", Predicate: "prefix", Values: []string{"/home/{token.email}/"}}}},
		{Pattern: "org", Args: []ArgRule{{Pointer: "/org", Predicate: "equals", Values: []string{"{token.org}"}}}},
		{Pattern: "*"},
	}
	const victim = "ceo@example.com"
	calls := map[string]string{
		"send_mail": `{"from":"` + victim + `"}`,
		"read_file": `{"path":"/home/` + victim + `/payroll.xlsx"}`,
	}
	call200 := func(t *testing.T, h *harness, token, tool, args string) int {
		t.Helper()
		before := len(h.up.requests())
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + quote(tool) + `,"arguments":` + args + `}}`
		resp := h.do(t, call{body: body, token: token})
		got := readBody(t, resp)
		if forwarded := len(h.up.requests()) != before; forwarded != (resp.StatusCode == http.StatusOK) {
			t.Fatalf("%s: status %d but forwarded %v (%s)", tool, resp.StatusCode, forwarded, got)
		}
		return resp.StatusCode
	}
	verified := map[string]any{
		"absent": nil, "false": false, `"false"`: "false", "1": 1, "null": "null",
		`"yes"`: "yes", `"True"`: "True", "true": true, `"true"`: "true",
	}
	want := func(name string) int {
		if name == "true" || name == `"true"` {
			return http.StatusOK
		}
		return http.StatusForbidden
	}

	t.Run("jwt", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Tools = rules
		h := newHarness(t, cfg, nil)
		for name, v := range verified {
			c := claims()
			c["email"], c["org"], c["jti"] = victim, "acme", "jti-"+name
			switch v {
			case nil:
			case "null":
				c["email_verified"] = nil
			default:
				c["email_verified"] = v
			}
			token := mint(t, c)
			for tool, args := range calls {
				if got := call200(t, h, token, tool, args); got != want(name) {
					t.Errorf("email_verified %s: %s: status %d, want %d", name, tool, got, want(name))
				}
			}
			if got := call200(t, h, token, "org", `{"org":"acme"}`); got != http.StatusOK {
				t.Errorf("email_verified %s: {token.org}: status %d, want 200 (other claims as they come)", name, got)
			}
		}
	})

	t.Run("introspection", func(t *testing.T) {
		f := newFakeIntrospection(t)
		cfg := introspectionConfig(t, f, nil)
		cfg.Now = func() time.Time { return testNow }
		cfg.Tools = rules
		h := newHarness(t, cfg, nil)
		for name, v := range verified {
			answer := active()
			answer["email"] = victim
			switch v {
			case nil:
			case "null":
				answer["email_verified"] = nil
			default:
				answer["email_verified"] = v
			}
			token := "opaque-" + strings.NewReplacer(`"`, "q").Replace(name)
			f.set(token, answer)
			for tool, args := range calls {
				if got := call200(t, h, token, tool, args); got != want(name) {
					t.Errorf("email_verified %s: %s: status %d, want %d", name, tool, got, want(name))
				}
			}
		}
	})
}

// TestArgRulePrefixNameWithSlash backs README's argument rules: a claim
// fills a prefix as it is, so `prefix /home/{token.sub}/` gives user x
// the home of user x/alice (names may hold "/": a metadata document's
// URL is a client id, an identity provider's subject may hold one), the
// README's regex beside it too; the gateway cannot tell that a path
// under one user's prefix is another's.
func TestArgRulePrefixNameWithSlash(t *testing.T) {
	h := newHarness(t, argConfig(t), nil)
	c := claims()
	c["sub"] = "x"
	x := mint(t, c)
	c["sub"], c["jti"] = "x/alice", "jti-2"
	xAlice := mint(t, c)
	for _, tt := range []struct {
		who, token, path string
		status           int
	}{
		{"x", x, "/home/x/notes", http.StatusOK},
		{"x/alice", xAlice, "/home/x/alice/notes", http.StatusOK},
		{"x", x, "/home/x/alice/notes", http.StatusOK}, // x/alice's, to x's rule
		{"x/alice", xAlice, "/home/x/notes", http.StatusForbidden},
	} {
		for _, tool := range []string{"prefix", "read_file"} {
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"path":` + quote(tt.path) + `}}}`
			resp := h.do(t, call{body: body, token: tt.token})
			got := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Errorf("%s: %s %s = %d, want %d (%s)", tt.who, tool, tt.path, resp.StatusCode, tt.status, got)
			}
		}
	}
}

// TestArgRuleCompatibilityCharacters: strings are compared exactly, and
// compatibility characters are ordinary text (refusing them would refuse
// CJK text, which writes them): the README's read_file rule holds for a
// path whose fullwidth full stops and solidus ("．．／") only a server
// that normalises to NFKC reads as "../", and the upstream receives it
// as sent (README, Limits and known gaps: compatibility characters).
func TestArgRuleCompatibilityCharacters(t *testing.T) {
	h := newHarness(t, argConfig(t), nil)
	tok := mint(t, claims())
	for _, tt := range []struct {
		path   string
		status int
	}{
		{"/srv/shared/../etc/passwd", http.StatusForbidden},
		{"/srv/shared/\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc/passwd", http.StatusOK},
		{"/srv/shared/\u30e1\u30e2\uff08\uff11\uff09.txt", http.StatusOK}, // メモ（１）.txt
	} {
		body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":` + quote(tt.path) + `}}}`
		resp := h.do(t, call{body: body, token: tok})
		got := readBody(t, resp)
		if resp.StatusCode != tt.status {
			t.Errorf("read_file %s = %d, want %d (%s)", tt.path, resp.StatusCode, tt.status, got)
		}
	}
	reqs := h.up.requests()
	if len(reqs) != 2 || !bytes.Contains(reqs[0].Body, []byte("\uff0e\uff0e\uff0f\uff0e\uff0e\uff0f")) {
		t.Fatalf("upstream received %d requests, want 2, the first with the path as sent", len(reqs))
	}
	if got := norm.NFKC.String("/srv/shared/\uff0e\uff0e\uff0f\uff0e\uff0e\uff0fetc/passwd"); got != "/srv/shared/../../etc/passwd" {
		t.Errorf("NFKC of the path = %q, want the path a normalising server reads", got)
	}
}

// With pinning, the gateway knows each tool's input schema, and so the
// default a server fills in for an argument a call leaves out: an
// optional argument rule holds for that default too, as if it had been
// sent. Without pinning the default is not known (README: optional).
func TestArgRuleOptionalDefault(t *testing.T) {
	tools := `{"name":"records","inputSchema":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}}},` +
		`{"name":"mine","inputSchema":{"type":"object","properties":{"owner":{"type":"string","default":"alice"}}}},` +
		`{"name":"filtered","inputSchema":{"type":"object","properties":{"filter":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}}}}},` +
		`{"name":"nullable","inputSchema":{"type":"object","properties":{"owner":{"anyOf":[{"type":"string"},{"type":"null"}],"default":null}}}},` +
		`{"name":"plain","inputSchema":{"type":"object","properties":{"owner":{"type":"string"}}}},` +
		// A default filled in gets its own properties' defaults (Go SDK,
		// zod's prefault).
		`{"name":"nested_default","inputSchema":{"type":"object","properties":{"filter":{"type":"object","default":{},"properties":{"owner":{"type":"string","default":"admin"}}}}}},` +
		// Python's nested model: its defaults behind a $ref.
		`{"name":"model","inputSchema":{"type":"object","properties":{"filter":{"$ref":"#/$defs/Filter","default":{"owner":"alice"}}},"$defs":{"Filter":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}}}}},` +
		// A $ref to definitions without defaults hides none.
		`{"name":"model_plain","inputSchema":{"type":"object","properties":{"filter":{"$ref":"#/$defs/Filter"}},"$defs":{"Filter":{"type":"object","properties":{"owner":{"type":"string"}}}}}},` +
		// The Go SDK's struct schemas: no other members.
		`{"name":"go_struct","inputSchema":{"type":"object","additionalProperties":{"not":{}},"properties":{"owner":{"type":"string"}}}},` +
		// Defaults of array items and of other members.
		`{"name":"items","inputSchema":{"type":"object","properties":{"items":{"type":"array","default":[],"items":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}}}}}},` +
		`{"name":"byname","inputSchema":{"type":"object","properties":{"byname":{"type":"object","additionalProperties":{"$ref":"#/$defs/Item"}}},"$defs":{"Item":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}}}}},` +
		// zod 3's reused schema: a $ref to another property.
		`{"name":"reused","inputSchema":{"type":"object","properties":{"a":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}},"filter":{"$ref":"#/properties/a"}}}},` +
		// zod tuples with a rest element: draft-7 additionalItems.
		`{"name":"tuple","inputSchema":{"type":"object","properties":{"t":{"type":"array","items":[{"type":"string"}],"additionalItems":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}}}}}},` +
		// The TypeScript SDK lists a refined or union zod schema as an
		// empty object, and applies its defaults all the same.
		`{"name":"listed_empty","inputSchema":{"type":"object","properties":{}}},` +
		// pydantic's Json[Filter] = '{}': a string default it decodes.
		`{"name":"json_default","inputSchema":{"type":"object","properties":{"filter":{"type":"string","default":"{}","contentMediaType":"application/json","contentSchema":{"$ref":"#/$defs/Filter"}}},"$defs":{"Filter":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}}}}},` +
		// zod 3's reused schema without defaults, beside a default elsewhere.
		`{"name":"reused_plain","inputSchema":{"type":"object","properties":{"limit":{"type":"number","default":10},"a":{"type":"object","properties":{"owner":{"type":"string"}}},"filter":{"$ref":"#/properties/a"}}}},` +
		// Python's dict[str, Item] = {}.
		`{"name":"dict","inputSchema":{"type":"object","properties":{"byname":{"type":"object","default":{},"additionalProperties":{"$ref":"#/$defs/Item"}}},"$defs":{"Item":{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}}}}},` +
		// zod's .default("admin").nullable(): the default in a branch.
		`{"name":"nullable_default","inputSchema":{"type":"object","properties":{"owner":{"anyOf":[{"type":"string","default":"admin"},{"type":"null"}]}}}},` +
		`{"name":"nullable_object","inputSchema":{"type":"object","properties":{"filter":{"anyOf":[{"type":"object","properties":{"owner":{"type":"string"}},"default":{"owner":"admin"}},{"type":"null"}]}}}},` +
		// ... and .nullable().optional() of an object whose member has a
		// default: nothing is filled in when it is left out.
		`{"name":"nullable_plain","inputSchema":{"type":"object","properties":{"filter":{"anyOf":[{"type":"object","properties":{"owner":{"type":"string","default":"admin"}}},{"type":"null"}]}}}},` +
		// zod 3's reused leaf: a $ref to a property with a default.
		`{"name":"reused_leaf","inputSchema":{"type":"object","properties":{"a":{"type":"string","default":"admin"},"owner":{"$ref":"#/properties/a"}}}},` +
		// Free-form objects: nothing declared, nothing filled in.
		`{"name":"free","inputSchema":{"type":"object","properties":{"meta":{"type":"object","default":{}},"limit":{"type":"number","default":10}}}},` +
		// zod 4's record over an enum fills in every key with the
		// value's default.
		`{"name":"enum_record","inputSchema":{"type":"object","properties":{"scope":{"type":"object","propertyNames":{"enum":["owner","team"]},"additionalProperties":{"type":"string","default":"admin"}}}}},` +
		// zod 4's tuple with a default element, and pydantic's
		// NamedTuple (prefixItems behind a $ref): a trailing element
		// left out is filled in.
		`{"name":"tuple_default","inputSchema":{"type":"object","properties":{"t":{"type":"array","items":[{"type":"string"},{"type":"string","default":"admin"}]}}}},` +
		`{"name":"named_tuple","inputSchema":{"type":"object","properties":{"p":{"anyOf":[{"$ref":"#/$defs/Pt"},{"type":"null"}],"default":null}},"$defs":{"Pt":{"type":"array","maxItems":2,"minItems":1,"prefixItems":[{"type":"string"},{"type":"string","default":"admin"}]}}}},` +
		// Tuples with a default element inside a list and a map.
		`{"name":"tuple_rows","inputSchema":{"type":"object","properties":{"rows":{"type":"array","items":{"type":"array","items":[{"type":"string"},{"type":"string","default":"admin"}]}},"m":{"type":"object","additionalProperties":{"type":"array","items":[{"type":"string"},{"type":"string","default":"admin"}]}}}}},` +
		`{"name":"string_rows","inputSchema":{"type":"object","properties":{"rows":{"type":"array","items":{"type":"array","items":{"type":"string"}}}}}},` +
		// An ordinary list whose items have defaults adds no element.
		`{"name":"list","inputSchema":{"type":"object","properties":{"l":{"type":"array","items":{"type":"string","default":"admin"}}}}},` +
		`{"name":"listed_nested","inputSchema":{"type":"object","properties":{}}},` +
		`{"name":"undeclared","inputSchema":{"type":"object","additionalProperties":{"not":{}},"properties":{"to":{"type":"string"}}}},` +
		// A property named "" is a property like any other.
		`{"name":"empty_name","inputSchema":{"type":"object","properties":{"":{"type":"string","default":"x"},"owner":{"type":"string"}}}}`
	own := func(ptr string) []ArgRule {
		return []ArgRule{{Pointer: ptr, Predicate: "equals", Values: []string{"{token.sub}"}, Optional: true}}
	}
	rules := []Rule{
		{Pattern: "records", Args: own("/owner")},
		{Pattern: "mine", Args: own("/owner")},
		{Pattern: "filtered", Args: own("/filter/owner")},
		{Pattern: "nullable", Args: []ArgRule{{Pointer: "/owner", Predicate: "regex", Values: []string{"[a-z]+"}, Optional: true}}},
		{Pattern: "plain", Args: own("/owner")},
		{Pattern: "nested_default", Args: own("/filter/owner")},
		{Pattern: "model", Args: own("/filter/owner")},
		{Pattern: "model_plain", Args: own("/filter/owner")},
		{Pattern: "go_struct", Args: own("/owner")},
		{Pattern: "empty_name", Args: own("/owner")},
		{Pattern: "items", Args: own("/items/0/owner")},
		{Pattern: "byname", Args: own("/byname/x/owner")},
		{Pattern: "reused", Args: own("/filter/owner")},
		{Pattern: "tuple", Args: own("/t/1/owner")},
		{Pattern: "listed_empty", Args: own("/owner")},
		{Pattern: "json_default", Args: own("/filter/owner")},
		{Pattern: "reused_plain", Args: own("/filter/owner")},
		{Pattern: "dict", Args: own("/byname/x/owner")},
		{Pattern: "nullable_default", Args: own("/owner")},
		{Pattern: "nullable_object", Args: own("/filter/owner")},
		{Pattern: "nullable_plain", Args: own("/filter/owner")},
		{Pattern: "reused_leaf", Args: own("/owner")},
		{Pattern: "free", Args: own("/meta/owner")},
		{Pattern: "undeclared", Args: own("/cc")},
		{Pattern: "listed_nested", Args: own("/filter/owner")},
		{Pattern: "enum_record", Args: own("/scope/owner")},
		{Pattern: "tuple_default", Args: own("/t/1")},
		{Pattern: "named_tuple", Args: own("/p/1")},
		{Pattern: "list", Args: own("/l/0")},
		{Pattern: "tuple_rows", Args: append(own("/rows/0/1"), own("/m/x/1")...)},
		{Pattern: "string_rows", Args: own("/rows/0/1")},
	}
	tests := []struct {
		tool, args       string
		pinned, unpinned int // status with and without pinning
	}{
		{"records", `{}`, 403, 200},
		{"records", `{"owner":"alice"}`, 200, 200},
		{"records", `{"owner":"admin"}`, 403, 403},
		{"mine", `{}`, 200, 200}, // the default is the caller's own
		{"filtered", `{"filter":{}}`, 403, 200},
		{"filtered", `{}`, 403, 200}, // the Go SDK creates filter to fill in owner
		{"filtered", `{"filter":{"owner":"alice"}}`, 200, 200},
		{"nullable", `{}`, 403, 200}, // null, which "no owner" may mean
		{"nullable", `{"owner":"bob"}`, 200, 200},
		{"plain", `{}`, 200, 200},          // no default
		{"nested_default", `{}`, 403, 200}, // filter becomes {"owner":"admin"}
		{"nested_default", `{"filter":{"owner":"alice"}}`, 200, 200},
		{"model", `{}`, 200, 200},            // filter becomes {"owner":"alice"}
		{"model", `{"filter":{}}`, 403, 200}, // owner: Filter's default, behind the $ref
		{"model", `{"filter":{"owner":"alice"}}`, 200, 200},
		{"model_plain", `{"filter":{}}`, 200, 200},
		{"go_struct", `{}`, 200, 200},
		{"empty_name", `{}`, 200, 200},
		{"items", `{"items":[{}]}`, 403, 200}, // the item's owner: a default of array items
		{"items", `{"items":[{"owner":"alice"}]}`, 200, 200},
		{"items", `{}`, 200, 200}, // items: [], no element
		{"byname", `{"byname":{"x":{}}}`, 403, 200},
		{"byname", `{"byname":{"x":{"owner":"alice"}}}`, 200, 200},
		{"reused", `{"filter":{}}`, 403, 200},
		{"reused", `{"filter":{"owner":"alice"}}`, 200, 200},
		{"tuple", `{"t":["a",{}]}`, 403, 200},
		{"tuple", `{"t":["a",{"owner":"alice"}]}`, 200, 200},
		{"tuple", `{"t":["a"]}`, 200, 200},
		{"listed_empty", `{}`, 403, 200}, // the schema does not declare owner
		{"listed_empty", `{"owner":"alice"}`, 200, 200},
		{"json_default", `{}`, 403, 200},
		{"reused_plain", `{"filter":{}}`, 200, 200},
		{"dict", `{}`, 200, 200}, // {}: no key x, and none is added
		{"dict", `{"byname":{"x":{}}}`, 403, 200},
		{"listed_nested", `{"filter":{}}`, 403, 200}, // beneath an undeclared member too
		{"listed_nested", `{}`, 403, 200},
		{"enum_record", `{"scope":{}}`, 403, 200},
		{"enum_record", `{"scope":{"owner":"alice"}}`, 200, 200},
		{"enum_record", `{}`, 200, 200}, // no scope, nothing filled in
		{"tuple_default", `{"t":["a"]}`, 403, 200},
		{"tuple_default", `{"t":["a","alice"]}`, 200, 200},
		{"named_tuple", `{"p":["a"]}`, 403, 200},
		{"named_tuple", `{"p":["a","alice"]}`, 200, 200},
		{"list", `{"l":[]}`, 200, 200},
		{"tuple_rows", `{"rows":[["a"]]}`, 403, 200},
		{"tuple_rows", `{"m":{"x":["a"]}}`, 403, 200},
		{"tuple_rows", `{"rows":[["a","alice"]],"m":{"x":["a","alice"]}}`, 200, 200},
		{"string_rows", `{"rows":[["a"]]}`, 200, 200}, // no default above: nothing added
		{"listed_nested", `{"filter":{"owner":"alice"}}`, 200, 200},
		{"nullable_default", `{}`, 403, 200},
		{"nullable_default", `{"owner":"alice"}`, 200, 200},
		{"nullable_object", `{}`, 403, 200},
		{"nullable_plain", `{}`, 200, 200},
		{"reused_leaf", `{}`, 403, 200},
		{"reused_leaf", `{"owner":"alice"}`, 200, 200},
		{"free", `{}`, 200, 200},
		{"free", `{"meta":{}}`, 200, 200},
		{"undeclared", `{}`, 200, 200}, // a rule on a member the tool does not have
	}
	for _, pinning := range []bool{true, false} {
		cfg := testConfig(t)
		cfg.Tools = append(rules, Rule{Pattern: "*"})
		if pinning {
			cfg.PinTools, cfg.Pins = PinFirstUse, newMemPins()
		}
		h := newHarness(t, cfg, pinUpstream(func() string { return tools }))
		token := mint(t, claims())
		readBody(t, h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: token}))
		for _, tt := range tests {
			want := tt.unpinned
			if pinning {
				want = tt.pinned
			}
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + quote(tt.tool) + `,"arguments":` + tt.args + `}}`
			before := len(h.up.requests())
			resp := h.do(t, call{body: body, token: token})
			got := readBody(t, resp)
			forwarded := len(h.up.requests()) - before
			if resp.StatusCode != want || (want == 200) != (forwarded == 1) {
				t.Errorf("pinning %v, %s %s: status %d, %d forwarded; want %d (%s)", pinning, tt.tool, tt.args, resp.StatusCode, forwarded, want, got)
				continue
			}
			if want == 403 {
				checkArgRefusal(t, resp, got, tt.tool)
				if fromDefault := tt.unpinned == 200; fromDefault && !strings.Contains(got, "is left out, and the") {
					t.Errorf("%s %s: refusal %s does not say it was the default", tt.tool, tt.args, got)
				}
			}
		}
	}
}

// TestReadDefaultsReferencesBounded: reading where a tool's schema may
// give defaults follows $refs and branches, and reads a schema again
// for each path that reaches it: a definition of about a kilobyte whose
// sixteen definitions each name the next four times over
// ({"anyOf":[{"$ref":"#/$defs/d1"},…]}) was read 4^16 times, hours of
// CPU in the gateway for each such definition a server lists (any
// caller's tools/list, pinning on). The reading is bounded now; past
// the bound a schema may give a default only if the input schema has
// one anywhere (as for a $ref not followed), and this one has none
// (its chain of $refs, deeper than 16, counts as giving tuple defaults,
// as before).
func TestReadDefaultsReferencesBounded(t *testing.T) {
	var defs []string
	for d := range 16 {
		ref := fmt.Sprintf(`{"$ref":"#/$defs/d%d"}`, d+1)
		defs = append(defs, fmt.Sprintf(`"d%d":{"anyOf":[%s,%s,%s,%s]}`, d, ref, ref, ref, ref))
	}
	defs = append(defs, `"d16":{"type":"string"}`)
	def := `{"inputSchema":{"$defs":{` + strings.Join(defs, ",") + `},"anyOf":[{"$ref":"#/$defs/d0"}],"type":"object"},"name":"t"}`
	done := make(chan *schemaDefaults, 1)
	go func() { done <- readDefaults([]byte(def)) }()
	select {
	case d := <-done:
		if len(d.opaque) > 0 || len(d.mapValues) > 0 {
			t.Errorf("readDefaults of a schema without defaults: opaque %v, map values %v, want none", d.opaque, d.mapValues)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("readDefaults of a %d-byte definition still running after 60 s", len(def))
	}
}

// TestReadDefaultsReferencesRemembered: under maxRefReading alone, a
// definition of 1.8 KB whose definitions name the next four times over
// was read to the bound, 16,000 schemas (57 ms of CPU), and a listing
// of a megabyte holds some 570 such definitions, each new one read at
// the caller's tools/list: half a minute of CPU per listing. refTo keeps
// each reference's answer per reading and depth, so such a schema is
// read once per depth, far below the bound, with the same answers.
func TestReadDefaultsReferencesRemembered(t *testing.T) {
	var defs []string
	for d := range 16 {
		ref := fmt.Sprintf(`{"$ref":"#/$defs/d%d"}`, d+1)
		defs = append(defs, fmt.Sprintf(`"d%d":{"anyOf":[%s,%s,%s,%s]}`, d, ref, ref, ref, ref))
	}
	for _, last := range []string{`{"type":"string"}`, `{"type":"string","default":"x"}`, `{"prefixItems":[{"default":1}]}`} {
		schema := `{"$defs":{` + strings.Join(defs, ",") + `,"d16":` + last + `},"anyOf":[{"$ref":"#/$defs/d0"}],"type":"object"}`
		var members map[string]json.RawMessage
		if err := json.Unmarshal([]byte(schema), &members); err != nil {
			t.Fatal(err)
		}
		r := refReader{root: json.RawMessage(schema)}
		own, tuple, follow := r.branchDefault(members, 0), r.tupleDefault([]byte(schema), 0), r.mayDefault([]byte(`{"anyOf":[{"$ref":"#/$defs/d0"}]}`))
		// d16 is reached at depth 17 through anyOf and $ref alternately,
		// past maxRefDepth: a default may be there, as for any schema that
		// deep.
		if !own || !tuple || follow != strings.Contains(last, "default") {
			t.Errorf("last %s: own %v, tuple %v, follow %v, want true, true, %v", last, own, tuple, follow, strings.Contains(last, "default"))
		}
		if r.read > maxRefReading/64 {
			t.Errorf("last %s: %d bytes counted read for a %d-byte schema, want at most %d", last, r.read, len(schema), maxRefReading/64)
		}
	}
}

// TestReadDefaultsLookupsBounded: finding a $ref's target reads the
// whole input schema (Lookup reads each object on its path to its end),
// which maxRefReading did not count: a definition of a megabyte whose
// properties each name a definition of their own ("p5": {"$ref":
// "#/zzz/d5"}) read it once per property (23 s at 225 KB, growing with
// the square of the size), and one whose definitions name each other four
// times over read a padded input schema at each of the bound's 16,000
// readings (19 s at 80 KB). Each reference is now looked up once, and each
// lookup counts the input schema's length; the answers stay as the
// unbounded reading gives them while the bound is not reached.
func TestReadDefaultsLookupsBounded(t *testing.T) {
	var props, targets []string
	for i := range 16000 {
		props = append(props, fmt.Sprintf(`"p%d":{"$ref":"#/zzz/d%d"}`, i, i))
		targets = append(targets, fmt.Sprintf(`"d%d":{"type":"string"}`, i))
	}
	distinct := `{"inputSchema":{"properties":{` + strings.Join(props, ",") + `},"type":"object","zzz":{` + strings.Join(targets, ",") + `}},"name":"t"}`
	var defs []string
	for d := range 16 {
		ref := fmt.Sprintf(`{"$ref":"#/zzz/d%d"}`, d+1)
		defs = append(defs, fmt.Sprintf(`"d%d":{"anyOf":[%s,%s,%s,%s]}`, d, ref, ref, ref, ref))
	}
	defs = append(defs, `"d16":{"type":"string"}`)
	padded := `{"inputSchema":{"aaa":[` + strings.Repeat(`{"a":1},`, 100000) + `{"a":1}],"anyOf":[{"$ref":"#/zzz/d0"}],"type":"object","zzz":{` + strings.Join(defs, ",") + `}},"name":"t"}`
	for name, def := range map[string]string{"distinct references": distinct, "padded references": padded} {
		done := make(chan *schemaDefaults, 1)
		go func() { done <- readDefaults([]byte(def)) }()
		select {
		case d := <-done:
			if len(d.opaque) > 0 || len(d.selfDefault) > 0 || len(d.mapValues) > 0 {
				t.Errorf("%s: readDefaults of a schema without defaults: opaque %v, self %v, map values %v, want none", name, d.opaque, d.selfDefault, d.mapValues)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: readDefaults of a %d-byte definition still running after 60 s", name, len(def))
		}
	}
	// Within the bound, a reference is followed as before: its target's
	// default is found, and one that names nothing is not.
	d := readDefaults([]byte(`{"inputSchema":{"$defs":{"a":{"default":1},"b":{"type":"string"}},"properties":{"x":{"$ref":"#/$defs/a"},"y":{"$ref":"#/$defs/a"},"z":{"$ref":"#/$defs/b"}},"type":"object"},"name":"t"}`))
	if !d.selfDefault["/x"] || !d.selfDefault["/y"] || d.selfDefault["/z"] {
		t.Errorf("readDefaults self defaults = %v, want /x and /y (a $ref to a default), not /z", d.selfDefault)
	}
}

// A schema whose properties nest deeper than the gateway reads them (a
// tools/list answer that deep is refused whole, so only a definition
// read otherwise gets here) has unknown defaults: an optional argument
// left out is refused.
func TestReadDefaults(t *testing.T) {
	def := `{"name":"deep","inputSchema":{"type":"object","properties":{"owner":{"type":"string"},"x":` +
		strings.Repeat(`{"type":"object","properties":{"x":`, maxSchemaDepth+1) + `{}` + strings.Repeat(`}}`, maxSchemaDepth+1) + `}}}`
	checks, err := compileArgs([]ArgRule{{Pointer: "/owner", Predicate: "equals", Values: []string{"{token.sub}"}, Optional: true}})
	if err != nil {
		t.Fatal(err)
	}
	p := &principal{subject: "alice"}
	deep := readDefaults([]byte(def))
	if _, reason := defaultRefusal(checks, p, []byte(`{}`), deep); !strings.Contains(reason, "not read here") {
		t.Errorf("left out: reason %q, want a refusal for the unreadable schema", reason)
	}
	if _, reason := defaultRefusal(checks, p, []byte(`{"owner":"alice"}`), deep); reason != "" {
		t.Errorf("sent: reason %q, want none", reason)
	}
	d := readDefaults([]byte(`{"name":"x","inputSchema":{"properties":{"a":{"default":1,"properties":{"b":{"default":{"c":null}},"c/d~":{"default":2}}},"e":{"anyOf":[{"type":"string","default":"y"}]},"f":{"items":{"type":"string"}}}}}`))
	want := map[string]string{"/a": "1", "/a/b": `{"c":null}`, "/a/c~1d~0": "2"}
	if len(d.values) != len(want) || d.unreadable {
		t.Errorf("readDefaults = %q (unreadable %v), want %q", d.values, d.unreadable, want)
	}
	for k, v := range want {
		if string(d.values[k]) != v {
			t.Errorf("default %s = %s, want %s", k, d.values[k], v)
		}
	}
	if !d.opaque["/e"] || d.opaque["/f"] || d.opaque["/a"] || d.opaque[""] {
		t.Errorf("opaque = %v, want /e only (anyOf with a default; items without)", d.opaque)
	}
}

// TestSchemaPathsBounded: a definition nesting long property names
// maxSchemaDepth deep (a 1 MiB one fits a tools/list answer) made paths
// of thirty times its size, kept as the keys of the gateway's defaults
// of it (36 MB for 1 MiB). Past pathBudget the definition's defaults are
// unreadable (an argument left out is refused) and its parameter
// headers none, as for one nested too deep; a definition's paths, as
// kept, stay within the budget.
func TestSchemaPathsBounded(t *testing.T) {
	// README (2026-07-28 parameter headers): deeper than 32, paths past
	// four times the definition's size and 4 KiB, property schemas past
	// eight times its size and 64 KiB.
	for _, n := range []int{0, 1000, 1 << 20} {
		if maxSchemaDepth != 32 || pathBudget(n) != 4*n+4<<10 || parseBudget(n) != 8*n+64<<10 {
			t.Fatalf("maxSchemaDepth %d, pathBudget(%d) %d, parseBudget(%d) %d; README says 32, 4×%[2]d + 4 KiB, 8×%[2]d + 64 KiB", maxSchemaDepth, n, pathBudget(n), n, parseBudget(n))
		}
	}
	name := strings.Repeat("n", 4<<10)
	var b strings.Builder
	b.WriteString(`{"name":"t","inputSchema":{"type":"object","properties":{"owner":{"type":"string"},"x":`)
	for range maxSchemaDepth - 2 {
		b.WriteString(`{"type":"object","properties":{"` + name + `":`)
	}
	b.WriteString(`{"type":"string","default":"x","x-mcp-header":"Deep"}`)
	b.WriteString(strings.Repeat(`}}`, maxSchemaDepth-2) + `}}}`)
	def := []byte(b.String())
	d := readDefaults(def)
	keys := 0
	for k := range d.declared {
		keys += len(k)
	}
	for k := range d.beneath {
		keys += len(k)
	}
	if keys > pathBudget(len(def)) {
		t.Errorf("defaults of a %d-byte definition keyed by %d bytes of paths, want at most %d", len(def), keys, pathBudget(len(def)))
	}
	checks, err := compileArgs([]ArgRule{{Pointer: "/owner", Predicate: "equals", Values: []string{"{token.sub}"}, Optional: true}})
	if err != nil {
		t.Fatal(err)
	}
	if _, reason := defaultRefusal(checks, &principal{subject: "alice"}, []byte(`{}`), d); !strings.Contains(reason, "not read here") {
		t.Errorf("left out: reason %q, want a refusal for the unreadable schema", reason)
	}
	if h := paramHeaders(def); len(h) != 0 {
		t.Errorf("parameter headers of a definition past the budget = %v, want none", h)
	}
	// A short name at the same depth is read as before.
	short := strings.ReplaceAll(string(def), name, "n")
	if d := readDefaults([]byte(short)); d.unreadable || len(paramHeaders([]byte(short))) != 1 {
		t.Errorf("a definition of short names %d deep: unreadable %v, headers %v; want read, one header", maxSchemaDepth-1, d.unreadable, paramHeaders([]byte(short)))
	}
}

// TestSchemaParseBounded: each property's schema is read again by the
// walk of each of its ancestors', so a large schema nested 31 properties
// deep cost seconds of the gateway's time to learn (3.9 s for 1 MiB).
// Past parseBudget the definition is not read for defaults or headers,
// as one nested too deep; the same bytes a property deep are read.
func TestSchemaParseBounded(t *testing.T) {
	blob := strings.Repeat("y", 256<<10)
	deep := func(depth int) []byte {
		var b strings.Builder
		b.WriteString(`{"name":"t","inputSchema":{"type":"object","properties":{"owner":{"type":"string"},"x":`)
		for range depth - 1 {
			b.WriteString(`{"type":"object","properties":{"n":`)
		}
		b.WriteString(`{"type":"string","default":"x","x-mcp-header":"Deep","description":"` + blob + `"}`)
		b.WriteString(strings.Repeat(`}}`, depth-1) + `}}}`)
		return []byte(b.String())
	}
	checks, err := compileArgs([]ArgRule{{Pointer: "/owner", Predicate: "equals", Values: []string{"{token.sub}"}, Optional: true}})
	if err != nil {
		t.Fatal(err)
	}
	def := deep(maxSchemaDepth - 1)
	if _, reason := defaultRefusal(checks, &principal{subject: "alice"}, []byte(`{}`), readDefaults(def)); !strings.Contains(reason, "not read here") {
		t.Errorf("left out: reason %q, want a refusal for the schema past the budget", reason)
	}
	if h := paramHeaders(def); len(h) != 0 {
		t.Errorf("parameter headers of a definition past the budget = %v, want none", h)
	}
	shallow := deep(2)
	if d := readDefaults(shallow); d.unreadable || len(paramHeaders(shallow)) != 1 {
		t.Errorf("the same bytes 2 deep: unreadable %v, headers %v; want read, one header", d.unreadable, paramHeaders(shallow))
	}
}

// TestArgRulesHoldOnArgumentsOnly: `arg` lines read params.arguments and
// nothing else (README, Argument rules): what a 2026-07-28 client answers
// a server's input request with, in a retried tools/call's
// inputResponses, reaches the server unchecked, whatever it holds, while
// the same value in the arguments is refused.
func TestArgRulesHoldOnArgumentsOnly(t *testing.T) {
	h := newHarness(t, argConfig(t), nil)
	token := argToken(t)
	call2026 := func(args, responses string) string {
		return `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"prefix","arguments":` + args +
			`,"inputResponses":{"where":{"action":"accept","content":{"path":` + quote(responses) + `}}},` + meta2026 + `}}`
	}
	for _, tt := range []struct {
		name, body string
		status     int
	}{
		{"a path outside the rule in inputResponses", call2026(`{"path":"/home/alice/notes"}`, "/etc/passwd"), http.StatusOK},
		{"the same path in the arguments", call2026(`{"path":"/etc/passwd"}`, "/home/alice/notes"), http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.do(t, call{body: tt.body, token: token, headers: taskHeaders("tools/call", "prefix")})
			if body := readBody(t, resp); resp.StatusCode != tt.status {
				t.Errorf("tools/call = %d %s, want %d", resp.StatusCode, body, tt.status)
			}
		})
	}
}
