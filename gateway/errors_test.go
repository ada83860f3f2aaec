package gateway

import (
	"testing"
)

// TestInvalidParamsAnswer: a request that is valid but for its
// params is answered -32602 with its id (mcpparse.ParamsError), and a
// 2026-07-28 request without its _meta protocol version is invalid
// params, not a header mismatch.
func TestInvalidParamsAnswer(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	tests := []struct {
		name    string
		body    string
		headers map[string]string
		code    int
		id      string
	}{
		{"name not a string", `{"jsonrpc":"2.0","id":"r7","method":"tools/call","params":{"name":7}}`, nil, codeInvalidParams, `"r7"`},
		{"no name", `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}`, nil, codeInvalidParams, `8`},
		{"2026 without _meta version", `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"read_a"}}`,
			map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_a"}, codeInvalidParams, `9`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.do(t, call{body: tt.body, token: mint(t, claims()), headers: tt.headers})
			body := readBody(t, resp)
			code, id, _ := rpcErr(t, body)
			if resp.StatusCode != 400 || code != tt.code || string(id) != tt.id {
				t.Errorf("answer = %d %s, want 400 with code %d and id %s", resp.StatusCode, body, tt.code, tt.id)
			}
			if len(h.up.requests()) != 0 {
				t.Fatal("refused request reached the upstream")
			}
		})
	}
}
