package mcpparse

import (
	"bytes"
	"strings"
	"testing"

	// The Go SDK decodes params with segmentio's decoder, matching struct
	// fields case-sensitively (go-sdk internal/json): checkSDK's
	// jsonrpc.DecodeMessage reads only the method and id.
	sjson "github.com/segmentio/encoding/json"
)

// sdkDecode decodes as the Go SDK's internal/json does.
func sdkDecode(data []byte, v any) error {
	d := sjson.NewDecoder(bytes.NewReader(data))
	d.DontMatchCaseInsensitiveStructFields()
	return d.Decode(v)
}

// FuzzParseSDKParams: whatever Parse accepts, the Go SDK's decoder reads
// the same method, the same name (taskId for tasks/*) and uri, present or
// not, and the same argument members with the same values, each found by
// Pointer.Lookup as argument rules find it (review s14-parse).
func FuzzParseSDKParams(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"path":"/x","n":1}}}`,
		`{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///a"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"t1","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/c\u0061ll","params":{"n\u0061me":"re\u0061d_a","arguments":{"p\u0061th":"/x"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"\u006e\u0061\u006d\u0065":"read_a"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a\ud83d\ude00"}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"a":1,"A":2}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"path":"x","pat\u0068":"y"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"\u00e9":"x","e\u0301":"y"}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"a/b":1,"c~d":[1,{"e":null}]}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"summary","arguments":{"x":"1"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, _, err := Parse(body, Limits{})
		if err != nil || msgs[0].Kind == KindResponse {
			return
		}
		m := msgs[0]
		var w struct {
			Method sjson.RawMessage `json:"method"`
			Params sjson.RawMessage `json:"params,omitempty"`
		}
		if sdkDecode(body, &w) != nil {
			return
		}
		var method string
		if len(w.Method) == 0 || sdkDecode(w.Method, &method) != nil || method != m.Method {
			t.Fatalf("the SDK's decoder reads method %q in %q, Parse %q", method, body, m.Method)
		}
		if len(w.Params) == 0 || w.Params[0] != '{' {
			return
		}
		var p struct {
			Name      *string                     `json:"name"`
			URI       *string                     `json:"uri"`
			TaskID    *string                     `json:"taskId"`
			Arguments map[string]sjson.RawMessage `json:"arguments"`
		}
		if sdkDecode(w.Params, &p) != nil {
			return
		}
		same := func(what string, got *string, has bool, want string) {
			if (got != nil) != has || got != nil && *got != want {
				t.Fatalf("%s: the SDK's decoder reads %v, Parse %q (present %v) in %q", what, got, want, has, body)
			}
		}
		if targetOf(m.Method).src == srcTaskID {
			same("taskId", p.TaskID, m.HasName, m.Name)
		} else {
			same("name", p.Name, m.HasName, m.Name)
		}
		same("uri", p.URI, m.HasURI, m.URI)
		if len(m.Arguments) == 0 || m.Arguments[0] != '{' {
			return
		}
		if len(p.Arguments) == 0 && !bytes.Equal(bytes.TrimSpace(m.Arguments), []byte("{}")) {
			// The SDK's decoder may not have read the arguments as
			// an object of members (a null member value, say).
			var a map[string]sjson.RawMessage
			if sdkDecode(m.Arguments, &a) != nil || len(a) != 0 {
				t.Fatalf("the SDK's decoder reads no arguments in %q, Parse %s", body, m.Arguments)
			}
		}
		for k, raw := range p.Arguments {
			ptr, err := ParsePointer("/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k))
			if err != nil {
				t.Fatalf("argument %q: no pointer: %v", k, err)
			}
			v, found, err := ptr.Lookup(m.Arguments)
			if err != nil || !found {
				t.Fatalf("argument %q the SDK's decoder reads is not found by Lookup (%v) in %q", k, err, body)
			}
			if !bytes.Equal(bytes.TrimSpace(v.Raw()), bytes.TrimSpace(raw)) {
				t.Fatalf("argument %q: Lookup %q, the SDK's decoder %q", k, v.Raw(), raw)
			}
		}
	})
}
