package mcpparse

import (
	"cmp"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

// toolNamesOf decodes result.tools[].name with encoding/json, independently
// of the code under test.
func toolNamesOf(t *testing.T, msg []byte) []string {
	t.Helper()
	var v struct {
		Result struct {
			Tools []struct {
				Name string `json:"name"`
			} `json:"tools"`
		} `json:"result"`
	}
	if err := json.Unmarshal(msg, &v); err != nil {
		t.Fatalf("json.Unmarshal(%s) error = %v", msg, err)
	}
	var names []string
	for _, tool := range v.Result.Tools {
		names = append(names, tool.Name)
	}
	return names
}

func TestFilterToolsList(t *testing.T) {
	deny := func(names ...string) func(string) bool {
		return func(n string) bool { return !slices.Contains(names, n) }
	}
	tests := []struct {
		name  string
		msg   string
		allow func(string) bool
		want  string // "" = the input unchanged
	}{
		{"keep all", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}`, deny(), ""},
		{"drop first", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}`, deny("a"),
			`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"b"}]}}`},
		{"drop last", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}`, deny("b"),
			`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}]}}`},
		{"drop all", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}`, deny("a", "b"),
			`{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`},
		{"empty list", `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`, deny("a"), ""},
		{"other members untouched", "{\"id\" : 7,\n \"result\": {\"nextCursor\": \"c\",\n  \"tools\" : [ {\"name\":\"a\", \"inputSchema\":{\"type\":\"object\"}} ,\n {\"description\":\"x\",\"name\":\"b\"} ],\"cacheScope\":\"public\"},\"jsonrpc\":\"2.0\"}\n",
			deny("a"),
			"{\"id\" : 7,\n \"result\": {\"nextCursor\": \"c\",\n  \"tools\" : [{\"description\":\"x\",\"name\":\"b\"}],\"cacheScope\":\"public\"},\"jsonrpc\":\"2.0\"}\n"},
		{"escaped name", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"dr\u006fp"},{"name":"keep"}]}}`, deny("drop"),
			`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"keep"}]}}`},
		{"error response", `{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"boom"}}`, deny("a"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FilterToolsList([]byte(tt.msg), tt.allow)
			if err != nil {
				t.Fatalf("FilterToolsList() error = %v", err)
			}
			want := tt.want
			if want == "" {
				want = tt.msg
			}
			if string(got) != want {
				t.Errorf("FilterToolsList() = %s, want %s", got, want)
			}
		})
	}
}

func TestFilterToolsListCorpus(t *testing.T) {
	for _, name := range []string{
		"2024-11-05/tools-list-result.json",
		"2025-03-26/tools-list-result-annotations.json",
		"2025-06-18/tools-list-result.json",
		"2025-11-25/tools-list-result-icons.json",
		"2026-07-28/tools-list-result.json",
	} {
		t.Run(name, func(t *testing.T) {
			msg := readCorpus(t, name)
			all := toolNamesOf(t, msg)
			for _, dropped := range all {
				got, err := FilterToolsList(msg, func(n string) bool { return n != dropped })
				if err != nil {
					t.Fatalf("FilterToolsList(without %s) error = %v", dropped, err)
				}
				want := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == dropped })
				if names := toolNamesOf(t, got); !slices.Equal(names, want) {
					t.Errorf("FilterToolsList(without %s) tools = %v, want %v", dropped, names, want)
				}
				if _, _, err := Parse(got, Limits{}); err != nil {
					t.Errorf("Parse(filtered) error = %v", err)
				}
			}
		})
	}
}

func TestFilterToolsListRefuses(t *testing.T) {
	tests := []struct {
		name    string
		msg     string
		wantErr error
	}{
		{"duplicate tools", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"tools":[{"name":"evil"}]}}`, ErrDuplicateName},
		{"case variant tools", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"Tools":[{"name":"evil"}]}}`, ErrDuplicateName},
		{"case variant tools alone", `{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"evil"}]}}`, ErrNotJSONRPC},
		{"duplicate name", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"evil"}]}}`, ErrDuplicateName},
		{"case variant name", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","Name":"evil"}]}}`, ErrDuplicateName},
		{"case variant name alone", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"NAME":"evil"}]}}`, ErrNotJSONRPC},
		// Go's json/v2, matching names case-insensitively, also ignores
		// '_' and '-': it reads these as tools and name.
		{"separator variant tools", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"t_ools":[{"name":"evil"}]}}`, ErrNotJSONRPC},
		{"separator variant cacheScope", `{"jsonrpc":"2.0","id":1,"result":{"tools":[],"cache-scope":"public"}}`, ErrNotJSONRPC},
		{"separator variant name", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","n_ame":"evil"}]}}`, ErrNotJSONRPC},
		{"duplicate result", `{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"evil"}]}}`, ErrDuplicateName},
		{"nameless tool", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"title":"x"}]}}`, ErrNotJSONRPC},
		{"name not a string", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":["a"]}]}}`, ErrNotJSONRPC},
		{"tool not an object", `{"jsonrpc":"2.0","id":1,"result":{"tools":["a"]}}`, ErrNotJSONRPC},
		{"tools not an array", `{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"a"}}}`, ErrNotJSONRPC},
		{"no tools", `{"jsonrpc":"2.0","id":1,"result":{}}`, ErrNotJSONRPC},
		{"result not an object", `{"jsonrpc":"2.0","id":1,"result":[]}`, ErrNotJSONRPC},
		{"request", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, ErrNotJSONRPC},
		{"batch", `[{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}]`, ErrNotJSONRPC},
		{"trailing data", `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}{}`, ErrInvalidJSON},
		{"invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"\xff\"}]}}", ErrInvalidJSON},
		{"too deep", `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","inputSchema":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}]}}`, ErrTooDeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FilterToolsList([]byte(tt.msg), func(string) bool { return true })
			if !errors.Is(err, tt.wantErr) || got != nil {
				t.Errorf("FilterToolsList() = %q, %v; want nil, %v", got, err, tt.wantErr)
			}
		})
	}
}

func TestFilterToolsListCallsAllowOnce(t *testing.T) {
	msg := readCorpus(t, "2026-07-28/tools-list-result.json")
	calls := map[string]int{}
	if _, err := FilterToolsList(msg, func(n string) bool { calls[n]++; return n == "get_weather" }); err != nil {
		t.Fatal(err)
	}
	for n, c := range calls {
		if c != 1 {
			t.Errorf("allow(%q) called %d times, want 1", n, c)
		}
	}
	if len(calls) != 3 {
		t.Errorf("allow called for %d tools, want 3", len(calls))
	}
}

func TestResponseID(t *testing.T) {
	tests := []struct {
		msg     string
		want    string
		wantErr error
	}{
		{`{"jsonrpc":"2.0","id":1,"result":{}}`, "1", nil},
		{`{"jsonrpc":"2.0","id":"a\u0062","result":{}}`, `"a\u0062"`, nil},
		{`{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}`, "null", nil},
		{`{"jsonrpc":"2.0","id":1,"method":"ping"}`, "", ErrNotJSONRPC},
		{`{"jsonrpc":"2.0","id":1.5,"result":{}}`, "", ErrNotJSONRPC},
		{`{"jsonrpc":"2.0","id":1,"result":{},"id":2}`, "", ErrDuplicateName},
		{`{"jsonrpc":"2.0","id":1,"result":{},"ID":2}`, "", ErrDuplicateName},
		{`{"jsonrpc":"2.0","id":1,"result":{}} x`, "", ErrInvalidJSON},
	}
	for _, tt := range tests {
		got, err := ResponseID([]byte(tt.msg))
		if string(got) != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("ResponseID(%s) = %s, %v; want %s, %v", tt.msg, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSameID(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"1", "1", true},
		{"1", "2", false},
		{`"1"`, "1", false},
		{`"abc"`, `"abc"`, true},
		{`"abc"`, `"a\u0062c"`, true},
		{`"\u00e9"`, `"é"`, true},
		{`"\/"`, `"/"`, true},
		{`"a"`, `"A"`, false},
		{"null", "null", false},
		{"", "", false},
		{"-1", "-1", true},
	}
	for _, tt := range tests {
		if got := SameID([]byte(tt.a), []byte(tt.b)); got != tt.want {
			t.Errorf("SameID(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestMarkPrivate(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want string // "" = the input unchanged
	}{
		{"public becomes private", `{"jsonrpc":"2.0","id":4,"result":{"ttlMs":1,"cacheScope":"public","tools":[]}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"ttlMs":1,"cacheScope":"private","tools":[]}}`},
		{"escaped value is rewritten", `{"jsonrpc":"2.0","id":4,"result":{"cacheScope" : "publ\u0069c"}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"cacheScope" : "private"}}`},
		{"already private", `{"jsonrpc":"2.0","id":4,"result":{"cacheScope":"private"}}`, ""},
		{"inserted first", `{"jsonrpc":"2.0","id":4,"result":{ "tools":[]}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"cacheScope":"private", "tools":[]}}`},
		{"inserted in an empty result", `{"jsonrpc":"2.0","id":4,"result":{}}`,
			`{"jsonrpc":"2.0","id":4,"result":{"cacheScope":"private"}}`},
		{"error response", `{"jsonrpc":"2.0","id":4,"error":{"code":1,"message":"m"}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MarkPrivate([]byte(tt.msg))
			want := tt.want
			if want == "" {
				want = tt.msg
			}
			if err != nil || string(got) != want {
				t.Errorf("MarkPrivate() = %s, %v; want %s", got, err, want)
			}
		})
	}
	for _, bad := range []string{
		`{"jsonrpc":"2.0","id":4,"result":{"cacheScope":"public","cacheScope":"private"}}`,
		`{"jsonrpc":"2.0","id":4,"result":{"cacheScope":"public","CacheScope":"private"}}`,
		`{"jsonrpc":"2.0","id":4,"result":{"cachescope":"public"}}`,
		`{"jsonrpc":"2.0","id":4,"result":{"cacheScope":1}}`,
		`{"jsonrpc":"2.0","id":4,"result":[]}`,
		`{"jsonrpc":"2.0","id":4,"method":"tools/list"}`,
	} {
		if got, err := MarkPrivate([]byte(bad)); err == nil {
			t.Errorf("MarkPrivate(%s) = %s, want an error", bad, got)
		}
	}
	// Every corpus result reads back with cacheScope "private".
	for _, name := range corpusFiles(t, revisions...) {
		msg := readCorpus(t, name)
		if m, _, err := Parse(msg, Limits{}); err != nil || m[0].Kind != KindResponse || !strings.Contains(string(msg), `"result"`) {
			continue
		}
		got, err := MarkPrivate(msg)
		if err != nil {
			t.Errorf("MarkPrivate(%s) error = %v", name, err)
			continue
		}
		var v struct {
			Result map[string]json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(got, &v); err != nil || string(v.Result["cacheScope"]) != `"private"` {
			t.Errorf("MarkPrivate(%s) = %s (%v), want cacheScope \"private\"", name, got, err)
		}
	}
}

// TestFilterList: every list result is filtered by the key of its items
// (prompts and tools by name, resources by uri, resource templates by
// uriTemplate), read strictly as result.tools is.
func TestFilterList(t *testing.T) {
	deny := func(keys ...string) func(string, []byte) bool {
		return func(k string, _ []byte) bool { return !slices.Contains(keys, k) }
	}
	const env = `{"jsonrpc":"2.0","id":1,"result":`
	tests := []struct {
		name  string
		list  List
		msg   string // the result
		allow func(string, []byte) bool
		want  string // the result; "" = the input unchanged
	}{
		{"prompts keep all", ListPrompts, `{"prompts":[{"name":"a"},{"name":"b"}]}`, deny(), ""},
		{"prompts drop one", ListPrompts, `{"prompts":[{"name":"a","arguments":[{"name":"b"}]},{"name":"b"}]}`, deny("a"), `{"prompts":[{"name":"b"}]}`},
		{"prompts drop all", ListPrompts, `{"nextCursor":"c","prompts":[{"name":"a"},{"name":"b"}]}`, deny("a", "b"), `{"nextCursor":"c","prompts":[]}`},
		{"prompts escaped name", ListPrompts, `{"prompts":[{"name":"dr\u006fp"},{"name":"keep"}]}`, deny("drop"), `{"prompts":[{"name":"keep"}]}`},
		{"prompts beside a tools member", ListPrompts, `{"tools":[{"x":1}],"prompts":[{"name":"a"}]}`, deny("a"), `{"tools":[{"x":1}],"prompts":[]}`},
		{"resources by uri", ListResources, `{"resources":[{"uri":"file:///a","name":"keep"},{"name":"file:///b","uri":"file:///secret"}]}`, deny("file:///secret"),
			`{"resources":[{"uri":"file:///a","name":"keep"}]}`},
		{"resources name is not the key", ListResources, `{"resources":[{"uri":"file:///a","name":"file:///secret"}]}`, deny("file:///secret"), ""},
		{"resources escaped uri", ListResources, `{"resources":[{"uri":"file:\/\/\/s\u0065cret"},{"uri":"x:"}]}`, deny("file:///secret"), `{"resources":[{"uri":"x:"}]}`},
		{"templates by uriTemplate", ListResourceTemplates, `{"resourceTemplates":[{"uriTemplate":"file:///{p}","name":"a"},{"uriTemplate":"db://{t}","uri":"file:///{p}"}]}`, deny("db://{t}"),
			`{"resourceTemplates":[{"uriTemplate":"file:///{p}","name":"a"}]}`},
		{"tools as a list", ListTools, `{"tools":[{"name":"a"},{"name":"b"}]}`, deny("b"), `{"tools":[{"name":"a"}]}`},
		{"cacheScope kept", ListResources, `{"cacheScope":"public","resources":[{"uri":"a:"},{"uri":"b:"}]}`, deny("a:"), `{"cacheScope":"public","resources":[{"uri":"b:"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FilterList([]byte(env+tt.msg+`}`), tt.list, tt.allow)
			if err != nil {
				t.Fatalf("FilterList() error = %v", err)
			}
			want := env + cmp.Or(tt.want, tt.msg) + `}`
			if string(got) != want {
				t.Errorf("FilterList() = %s, want %s", got, want)
			}
		})
	}
	errorAnswer := `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no prompts"}}`
	if got, err := FilterList([]byte(errorAnswer), ListPrompts, deny()); err != nil || string(got) != errorAnswer {
		t.Errorf("FilterList(error answer) = %s, %v; want it unchanged", got, err)
	}
}

// TestFilterListItemBytes: allow gets each item's bytes as the message
// has them.
func TestFilterListItemBytes(t *testing.T) {
	msg := `{"jsonrpc":"2.0","id":1,"result":{"resources":[ {"uri":"a:", "size":1} ,{"uri":"b:"}]}}`
	var items []string
	if _, err := FilterList([]byte(msg), ListResources, func(_ string, item []byte) bool { items = append(items, string(item)); return true }); err != nil {
		t.Fatal(err)
	}
	if want := []string{`{"uri":"a:", "size":1}`, `{"uri":"b:"}`}; !slices.Equal(items, want) {
		t.Errorf("items = %q, want %q", items, want)
	}
}

// TestFilterListRefuses: a list answer that cannot be read strictly is
// an error, as for tools: what a client would read is not known.
func TestFilterListRefuses(t *testing.T) {
	const env = `{"jsonrpc":"2.0","id":1,"result":`
	tests := []struct {
		name    string
		list    List
		result  string
		wantErr error
	}{
		{"no prompts", ListPrompts, `{"tools":[]}`, ErrNoList},
		{"no resources", ListResources, `{}`, ErrNoList},
		{"templates asked, resources given", ListResourceTemplates, `{"resources":[]}`, ErrNoList},
		{"prompts not an array", ListPrompts, `{"prompts":{"name":"a"}}`, ErrNotJSONRPC},
		{"prompts null", ListPrompts, `{"prompts":null}`, ErrNotJSONRPC},
		{"prompt not an object", ListPrompts, `{"prompts":["a"]}`, ErrNotJSONRPC},
		{"prompt without a name", ListPrompts, `{"prompts":[{"title":"a"}]}`, ErrNotJSONRPC},
		{"prompt name not a string", ListPrompts, `{"prompts":[{"name":1}]}`, ErrNotJSONRPC},
		{"prompt Name variant", ListPrompts, `{"prompts":[{"name":"a","Name":"b"}]}`, ErrDuplicateName},
		{"prompt NAME alone", ListPrompts, `{"prompts":[{"NAME":"b"}]}`, ErrNotJSONRPC},
		{"prompt na_me", ListPrompts, `{"prompts":[{"name":"a","na_me":"b"}]}`, ErrNotJSONRPC},
		{"Prompts variant alone", ListPrompts, `{"Prompts":[{"name":"b"}]}`, ErrNotJSONRPC},
		{"Prompts beside prompts", ListPrompts, `{"prompts":[],"Prompts":[{"name":"b"}]}`, ErrDuplicateName},
		{"prompts with a separator", ListPrompts, `{"prompts":[],"pro-mpts":[{"name":"b"}]}`, ErrNotJSONRPC},
		{"prompts with a long s", ListPrompts, `{"prompts":[],"prompt\u017f":[{"name":"b"}]}`, ErrDuplicateName},
		{"prompts escaped separator", ListPrompts, `{"prompts":[],"prom\u005fpts":[{"name":"b"}]}`, ErrNotJSONRPC},
		{"prompts twice", ListPrompts, `{"prompts":[],"prompts":[{"name":"b"}]}`, ErrDuplicateName},
		{"resource without a uri", ListResources, `{"resources":[{"name":"a"}]}`, ErrNotJSONRPC},
		{"resource uri not a string", ListResources, `{"resources":[{"uri":["a:"]}]}`, ErrNotJSONRPC},
		{"resource URI variant", ListResources, `{"resources":[{"uri":"a:","URI":"b:"}]}`, ErrDuplicateName},
		{"resource u_ri", ListResources, `{"resources":[{"uri":"a:","u_ri":"b:"}]}`, ErrNotJSONRPC},
		{"Resources variant", ListResources, `{"Resources":[{"uri":"b:"}]}`, ErrNotJSONRPC},
		{"resources with a separator", ListResources, `{"resources":[],"re_sources":[{"uri":"b:"}]}`, ErrNotJSONRPC},
		{"template without a uriTemplate", ListResourceTemplates, `{"resourceTemplates":[{"uri":"a:"}]}`, ErrNotJSONRPC},
		{"template uri_template", ListResourceTemplates, `{"resourceTemplates":[{"uriTemplate":"a:","uri_template":"b:"}]}`, ErrNotJSONRPC},
		{"template UriTemplate", ListResourceTemplates, `{"resourceTemplates":[{"UriTemplate":"b:"}]}`, ErrNotJSONRPC},
		{"resource_templates", ListResourceTemplates, `{"resourceTemplates":[],"resource_templates":[{"uriTemplate":"b:"}]}`, ErrNotJSONRPC},
		{"cache-scope", ListResources, `{"resources":[],"cache-scope":"public"}`, ErrNotJSONRPC},
		{"invalid UTF-8", ListResources, "{\"resources\":[{\"uri\":\"\xff\"}]}", ErrInvalidJSON},
		{"too deep", ListPrompts, `{"prompts":[{"name":"a","x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}]}`, ErrTooDeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FilterList([]byte(env+tt.result+`}`), tt.list, func(string, []byte) bool { return true })
			if !errors.Is(err, tt.wantErr) || got != nil {
				t.Errorf("FilterList() = %q, %v; want nil, %v", got, err, tt.wantErr)
			}
		})
	}
}

// TestFilterListCorpus: each list result of the corpus, one item dropped
// at a time, reads back (encoding/json) as the others, in order.
func TestFilterListCorpus(t *testing.T) {
	for _, tt := range []struct {
		file     string
		list     List
		member   string
		key      string
		wantKeys int
	}{
		{"2025-06-18/prompts-list-result.json", ListPrompts, "prompts", "name", 3},
		{"2026-07-28/prompts-list-result.json", ListPrompts, "prompts", "name", 2},
		{"2025-06-18/resources-list-result.json", ListResources, "resources", "uri", 3},
		{"2025-06-18/resources-templates-list-result.json", ListResourceTemplates, "resourceTemplates", "uriTemplate", 3},
		{"2026-07-28/tools-list-result.json", ListTools, "tools", "name", 3},
	} {
		t.Run(tt.file, func(t *testing.T) {
			keysOf := func(msg []byte) []string {
				t.Helper()
				var r struct {
					Result map[string]json.RawMessage `json:"result"`
				}
				if err := json.Unmarshal(msg, &r); err != nil {
					t.Fatalf("json.Unmarshal(%s) error = %v", msg, err)
				}
				var items []map[string]any
				if err := json.Unmarshal(r.Result[tt.member], &items); err != nil {
					t.Fatalf("result.%s: %v", tt.member, err)
				}
				var keys []string
				for _, it := range items {
					keys = append(keys, it[tt.key].(string))
				}
				return keys
			}
			msg := readCorpus(t, tt.file)
			all := keysOf(msg)
			if len(all) != tt.wantKeys {
				t.Fatalf("corpus has %d items, want %d", len(all), tt.wantKeys)
			}
			for _, dropped := range all {
				got, err := FilterList(msg, tt.list, func(k string, _ []byte) bool { return k != dropped })
				if err != nil {
					t.Fatalf("FilterList(without %s) error = %v", dropped, err)
				}
				want := slices.DeleteFunc(slices.Clone(all), func(k string) bool { return k == dropped })
				if keys := keysOf(got); !slices.Equal(keys, want) {
					t.Errorf("FilterList(without %s) = %v, want %v", dropped, keys, want)
				}
				if _, _, err := Parse(got, Limits{}); err != nil {
					t.Errorf("Parse(filtered) error = %v", err)
				}
			}
		})
	}
}
