package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// paramTools is a tools/list result whose read_a mirrors arguments into
// Mcp-Param-* headers (x-mcp-header, 2026-07-28) and read_b mirrors none.
const paramTools = `{"tools":[` +
	`{"name":"read_a","inputSchema":{"type":"object","properties":{` +
	`"region":{"type":"string","x-mcp-header":"Region"},` +
	`"count":{"type":"integer","x-mcp-header":"Count"},` +
	`"flag":{"type":"boolean","x-mcp-header":"flag"},` +
	`"scope":{"type":"object","properties":{"tenant":{"type":"string","x-mcp-header":"Tenant"}}},` +
	`"query":{"type":"string"}}}},` +
	`{"name":"read_b","inputSchema":{"type":"object","properties":{"region":{"type":"string"}}}}]}`

// TestParamHeaders: an Mcp-Param-* header must carry the value of the
// argument the tool's (pinned) definition mirrors into it, as the
// 2026-07-28 transport requires of a server that reads the body ("MUST
// validate that encoded header values, after decoding if Base64-encoded,
// match the corresponding values in the request body"): an upstream or a
// router in front of it may act on the header while the gateway decided
// on the body. One it cannot check is refused, never forwarded; before
// 2026-07-28 the headers mean nothing and are not forwarded. The
// gateway's own tools/list, which learns the definitions the headers are
// checked against, carries none of them.
func TestParamHeaders(t *testing.T) {
	answer := func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.Unmarshal(body, &m)
		w.Header().Set("Content-Type", "application/json")
		result := `{}`
		if m.Method == "tools/list" {
			result = paramTools
		}
		io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":`+result+`}`)
	}
	meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
	call26 := func(tool, args string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `,` + meta + `}}`
	}
	h26 := func(tool string, params map[string]string) map[string]string {
		h := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": tool}
		for k, v := range params {
			h["Mcp-Param-"+k] = v
		}
		return h
	}
	args := `{"region":"us-west1","count":42,"flag":true,"scope":{"tenant":"acme"},"query":"x"}`
	all := map[string]string{"Region": "us-west1", "Count": "42", "Flag": "true", "Tenant": "acme"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range all {
			m[a] = b
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name    string
		pins    bool
		body    string
		headers map[string]string
		status  int // 0: forwarded
		code    int
		want    map[string]string // Mcp-Param-* the upstream gets
	}{
		{"all match", true, call26("read_a", args), h26("read_a", all), 0, 0, all},
		{"none needed", true, call26("read_a", `{"query":"x"}`), h26("read_a", nil), 0, 0, nil},
		{"none needed for null values", true, call26("read_a", `{"region":null,"scope":{"tenant":null},"query":"x"}`), h26("read_a", nil), 0, 0, nil},
		{"none for a tool without any", true, call26("read_b", `{"region":"us-west1"}`), h26("read_b", nil), 0, 0, nil},
		// "Client omits header but value is in body: Server MUST reject":
		// a router acting on the header would act on its absence.
		{"none sent", true, call26("read_a", args), h26("read_a", nil), 400, codeHeaderMismatch, nil},
		{"one left out", true, call26("read_a", args), h26("read_a", with("Region", "")), 400, codeHeaderMismatch, nil},
		{"nested one left out", true, call26("read_a", args), h26("read_a", with("Tenant", "")), 400, codeHeaderMismatch, nil},
		{"left out in a call without an id", true, strings.Replace(call26("read_a", args), `"id":1,`, "", 1), h26("read_a", nil), 400, codeHeaderMismatch, nil},
		{"integer left out", true, call26("read_a", `{"count":0}`), h26("read_a", nil), 400, codeHeaderMismatch, nil},
		{"left out, value not a primitive", true, call26("read_a", `{"region":{"a":1}}`), h26("read_a", nil), 400, codeHeaderMismatch, nil},
		{"left out, value in another case", true, call26("read_a", `{"REGION":"us-west1"}`), h26("read_a", nil), 400, codeHeaderMismatch, nil},
		{"base64 match", true, call26("read_a", `{"region":"Hello, 世界"}`), h26("read_a", map[string]string{"Region": "=?base64?SGVsbG8sIOS4lueVjA==?="}), 0, 0, map[string]string{"Region": "=?base64?SGVsbG8sIOS4lueVjA==?="}},
		{"integer compared numerically", true, call26("read_a", `{"count":42.0}`), h26("read_a", map[string]string{"Count": "42"}), 0, 0, map[string]string{"Count": "42"}},
		{"header name in another case", true, call26("read_a", `{"region":"us-west1"}`), map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_a", "mcp-param-REGION": "us-west1"}, 0, 0, map[string]string{"Region": "us-west1"}},
		{"string disagrees", true, call26("read_a", args), h26("read_a", with("Region", "us-east1")), 400, codeHeaderMismatch, nil},
		{"nested disagrees", true, call26("read_a", args), h26("read_a", with("Tenant", "other")), 400, codeHeaderMismatch, nil},
		{"integer disagrees", true, call26("read_a", args), h26("read_a", with("Count", "43")), 400, codeHeaderMismatch, nil},
		{"integer not decimal", true, call26("read_a", args), h26("read_a", with("Count", "0x2a")), 400, codeHeaderMismatch, nil},
		{"boolean disagrees", true, call26("read_a", args), h26("read_a", with("Flag", "True")), 400, codeHeaderMismatch, nil},
		{"base64 disagrees", true, call26("read_a", `{"region":"us-west1"}`), h26("read_a", map[string]string{"Region": "=?base64?dXMtZWFzdDE=?="}), 400, codeHeaderMismatch, nil},
		{"malformed base64", true, call26("read_a", `{"region":"us-west1"}`), h26("read_a", map[string]string{"Region": "=?base64?dXMtd2VzdDE?="}), 400, codeHeaderMismatch, nil},
		{"value absent from the body", true, call26("read_a", `{"query":"x"}`), h26("read_a", map[string]string{"Region": "us-west1"}), 400, codeHeaderMismatch, nil},
		{"value only in another case", true, call26("read_a", `{"REGION":"us-west1"}`), h26("read_a", map[string]string{"Region": "us-west1"}), 400, codeHeaderMismatch, nil},
		{"value only as a separator variant", true, call26("read_a", `{"re_gion":"us-west1"}`), h26("read_a", map[string]string{"Region": "us-west1"}), 400, codeHeaderMismatch, nil},
		{"value beside a separator variant", true, call26("read_a", `{"region":"us-west1","re-gion":"us-east1"}`), h26("read_a", map[string]string{"Region": "us-west1"}), 400, codeHeaderMismatch, nil},
		{"value beside a separator variant up to a NUL", true, call26("read_a", `{"region":"us-west1","re-gion\u0000x":"us-east1"}`), h26("read_a", map[string]string{"Region": "us-west1"}), 400, codeHeaderMismatch, nil},
		{"nested value only in another case", true, call26("read_a", `{"scope":{"TENANT":"acme"}}`), h26("read_a", map[string]string{"Tenant": "acme"}), 400, codeHeaderMismatch, nil},
		{"nested value beside a separator variant", true, call26("read_a", `{"region":"us-west1","scope":{"tenant":"acme","te-nant":"evil"}}`), h26("read_a", map[string]string{"Region": "us-west1", "Tenant": "acme"}), 400, codeHeaderMismatch, nil},
		{"nested under a variant of its parent", true, call26("read_a", `{"region":"us-west1","Scope":{"tenant":"acme"}}`), h26("read_a", map[string]string{"Region": "us-west1"}), 400, codeHeaderMismatch, nil},
		{"value null in the body", true, call26("read_a", `{"region":null}`), h26("read_a", map[string]string{"Region": "null"}), 400, codeHeaderMismatch, nil},
		{"header the tool does not declare", true, call26("read_a", args), h26("read_a", with("Query", "x")), 400, codeHeaderMismatch, nil},
		{"header on a tool without any", true, call26("read_b", `{"region":"us-west1"}`), h26("read_b", map[string]string{"Region": "us-west1"}), 400, codeHeaderMismatch, nil},
		{"header on another method", true, `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{` + meta + `}}`, map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list", "Mcp-Param-Region": "us-west1"}, 400, codeHeaderMismatch, nil},
		{"without pinning nothing to check against", false, call26("read_a", `{"region":"us-west1"}`), h26("read_a", map[string]string{"Region": "us-west1"}), 400, codeHeaderMismatch, nil},
		{"without pinning and without headers", false, call26("read_a", `{"region":"us-west1"}`), h26("read_a", nil), 0, 0, nil},
		// Servers on the Python SDK decode a top-level string argument
		// of JSON text (pre_parse_json): tenant acme to them, a string to
		// the others, so no header agrees with both readings.
		{"nested left out, its parent JSON text", true, call26("read_a", `{"scope":"{\"tenant\":\"acme\"}"}`), h26("read_a", nil), 400, codeHeaderMismatch, nil},
		{"nested sent, its parent JSON text", true, call26("read_a", `{"scope":"{\"tenant\":\"acme\"}"}`), h26("read_a", map[string]string{"Tenant": "acme"}), 400, codeHeaderMismatch, nil},
		{"nested, its parent JSON text Python reads", true, call26("read_a", `{"scope":"{\"tenant\":NaN}"}`), h26("read_a", nil), 400, codeHeaderMismatch, nil},
		{"the value JSON text for null", true, call26("read_a", `{"count":"null"}`), h26("read_a", map[string]string{"Count": "null"}), 400, codeHeaderMismatch, nil},
		{"the value JSON text for an object", true, call26("read_a", `{"region":"{\"a\":1}"}`), h26("read_a", map[string]string{"Region": `{"a":1}`}), 400, codeHeaderMismatch, nil},
		{"the value JSON text for an array", true, call26("read_a", `{"region":"[\"eu\"]"}`), h26("read_a", map[string]string{"Region": `["eu"]`}), 400, codeHeaderMismatch, nil},
		{"nested absent from its parent's JSON text", true, call26("read_a", `{"scope":"{\"other\":\"acme\"}"}`), h26("read_a", nil), 0, 0, nil},
		{"nested null in its parent's JSON text", true, call26("read_a", `{"scope":"{\"tenant\":null}"}`), h26("read_a", nil), 0, 0, nil},
		{"the value text no decoder reads", true, call26("read_a", `{"region":"[eu]"}`), h26("read_a", map[string]string{"Region": "[eu]"}), 0, 0, map[string]string{"Region": "[eu]"}},
		{"2025 request: not forwarded", true, toolCall("read_a"), map[string]string{"MCP-Protocol-Version": "2025-11-25", "Mcp-Param-Region": "us-east1"}, 0, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			if tt.pins {
				cfg.PinTools, cfg.Pins = PinFirstUse, newMemPins()
			}
			h := newHarness(t, cfg, answer)
			c := claims()
			c["scope"] = "mcp tools:read"
			resp := h.do(t, call{body: tt.body, token: mint(t, c), headers: tt.headers})
			body := readBody(t, resp)
			var calls []received
			for _, r := range h.up.requests() {
				if !strings.Contains(string(r.Body), `"mcp-auth-pin-`) {
					calls = append(calls, r)
					continue
				}
				// The gateway's own tools/list, sent before the headers
				// are checked, carries none of them (a router reading
				// them would choose where the definitions come from).
				for k := range r.Header {
					if isParamHeader(k) {
						t.Errorf("the pin fetch carried the client's %s", k)
					}
				}
			}
			if tt.status != 0 {
				code, _, _ := rpcErr(t, body)
				if resp.StatusCode != tt.status || code != tt.code || len(calls) != 0 {
					t.Fatalf("answer = %d %s, forwarded %d; want %d with code %d, not forwarded", resp.StatusCode, body, len(calls), tt.status, tt.code)
				}
				return
			}
			if resp.StatusCode != http.StatusOK || len(calls) != 1 {
				t.Fatalf("answer = %d %s, forwarded %d; want 200, forwarded", resp.StatusCode, body, len(calls))
			}
			got := map[string]string{}
			for k, v := range calls[0].Header {
				if name, ok := strings.CutPrefix(k, "Mcp-Param-"); ok {
					got[name] = strings.Join(v, ",")
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("upstream Mcp-Param-* = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("upstream Mcp-Param-%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}

	t.Run("two values", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.PinTools, cfg.Pins = PinFirstUse, newMemPins()
		h := newHarness(t, cfg, answer)
		hd := h26("read_a", map[string]string{"Region": "us-west1\x00us-east1"})
		resp := doMulti(t, h, call{body: call26("read_a", `{"region":"us-west1"}`), token: mint(t, claims()), headers: hd})
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("answer = %d %s, want 400", resp.StatusCode, body)
		}
	})
}

// missingParamExchange is a tools/call of a tool declaring n parameter
// headers, none of whose arguments it sends, with n other headers.
func missingParamExchange(n int) (*Gateway, *exchange) {
	declared := map[string][]string{}
	for i := range n {
		declared["p"+strconv.Itoa(i)] = []string{"p" + strconv.Itoa(i)}
	}
	g := &Gateway{pins: &pinSet{}}
	g.pins.view.Store(&pinView{params: toolMapOf(map[string]map[string][]string{"t": declared, "plain": {}})})
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	for i := range n {
		r.Header.Set("X-Filler-"+strconv.Itoa(i), "x")
	}
	r.Header.Set("Mcp-Param-P0", "x")
	x := &exchange{r: r, msgs: []mcpparse.Message{{Kind: mcpparse.KindRequest, Method: "tools/call", Name: "t", HasName: true, Arguments: []byte(`{"p0":"x"}`)}}}
	return g, x
}

// BenchmarkMissingParamManyHeaders: the sent Mcp-Param-* names are
// read once per call (sentParams), not once per declared header, so a
// hostile server declaring thousands of them and a caller sending
// thousands of headers cost the gateway thousands of steps, not
// millions (4,000 of each: 350 ms a call with the old loop, 13 ms with
// the arguments read again for each declared header, 0.3 ms now, on one
// core).
func BenchmarkMissingParamManyHeaders(b *testing.B) {
	g, x := missingParamExchange(4000)
	b.ReportAllocs()
	for b.Loop() {
		if name, err := g.missingParam(x, &argObject{raw: x.msgs[0].Arguments}); err != nil {
			b.Fatal(name, err)
		}
	}
}

// TestMissingParamPlainToolAllocatesNothing: a call of a tool declaring
// no parameter header reads none of the request's headers.
func TestMissingParamPlainToolAllocatesNothing(t *testing.T) {
	g, x := missingParamExchange(100)
	x.msgs[0].Name = "plain"
	if n := testing.AllocsPerRun(100, func() { g.missingParam(x, &argObject{raw: x.msgs[0].Arguments}) }); n != 0 {
		t.Errorf("missingParam of a tool without parameter headers: %v allocations, want 0", n)
	}
	x.msgs[0].Name = "t"
	if name, err := g.missingParam(x, &argObject{raw: x.msgs[0].Arguments}); err != nil {
		t.Errorf("missingParam = %s %v, want nothing missing", name, err)
	}
	x.msgs[0].Arguments = []byte(`{"p0":"x","p7":"y"}`)
	if name, err := g.missingParam(x, &argObject{raw: x.msgs[0].Arguments}); name != "Mcp-Param-P7" || err == nil {
		t.Errorf("missingParam = %q %v, want Mcp-Param-P7 missing", name, err)
	}
}

// manyDeclaredExchange is a 2026-07-28 call of a tool whose definition
// declares n top-level parameter headers, of which the call sends the
// first, with arguments of k members more.
func manyDeclaredExchange(n, k int) (*Gateway, *exchange) {
	g, x := missingParamExchange(n)
	var b strings.Builder
	b.WriteString(`{"p0":"x"`)
	for i := range k {
		b.WriteString(`,"k` + strconv.Itoa(i) + `":"` + strings.Repeat("v", 40) + `"`)
	}
	b.WriteString("}")
	x.msgs[0].Arguments = []byte(b.String())
	x.headerChecked = true
	return g, x
}

// TestParamsManyDeclaredReadArgumentsOnce: a call's arguments are read
// once for all the parameter headers its tool declares, not once per
// header with every member name compared with each: a server turned
// hostile declaring 20,000 headers in a definition under the 1 MiB pin
// bound made each call with 100 KB of arguments cost 50 s of the
// gateway's CPU (a call with 5 KB, 2 s), for every resource the Caddy
// serves. Counted in allocations, which each read of the arguments
// makes per member.
func TestParamsManyDeclaredReadArgumentsOnce(t *testing.T) {
	const declared, members = 2000, 500
	g, x := manyDeclaredExchange(declared, members)
	if f := g.checkParams(x); f != nil {
		t.Fatalf("checkParams = %v, want the call allowed", f.message)
	}
	n := testing.AllocsPerRun(1, func() { g.checkParams(x) })
	if limit := 10.0 * (declared + members); n > limit {
		t.Errorf("checkParams of a call with %d declared headers and %d arguments: %v allocations, want at most %v", declared, members, n, limit)
	}
}

// BenchmarkParamsManyDeclared: a call with 100 KB of arguments of a tool
// declaring 4,000 parameter headers (7.8 s a call when each header read
// the arguments again).
func BenchmarkParamsManyDeclared(b *testing.B) {
	g, x := manyDeclaredExchange(4000, 2000)
	b.ReportAllocs()
	for b.Loop() {
		if f := g.checkParams(x); f != nil {
			b.Fatal(f.message)
		}
	}
}
