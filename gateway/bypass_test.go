package gateway

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestBypass: every known way around an MCP gateway is refused, and the
// upstream sees nothing at all.
func TestBypass(t *testing.T) {
	k := theKeys(t)
	good := mint(t, claims())
	pub, err := x509.MarshalPKIXPublicKey(&k.ec.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	with := func(mutate func(jwt.MapClaims)) string {
		c := claims()
		mutate(c)
		return mint(t, c)
	}
	v2026 := func(method, name string) map[string]string {
		h := map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": method}
		if name != "" {
			h["Mcp-Name"] = name
		}
		return h
	}
	meta26 := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}`
	call26 := func(name string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":` + quote(name) + `,"arguments":{},` + meta26 + `}}`
	}
	batch := `[` + toolCall("read_a") + `,{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all"}},{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"read_b"}}]`
	okBatch := `[` + toolCall("read_a") + `,{"jsonrpc":"2.0","id":2,"method":"tools/list"}]`
	deep := strings.Repeat(`{"a":`, 200) + `1` + strings.Repeat(`}`, 200)

	tests := []struct {
		name   string
		c      call
		status int
	}{
		// Batches.
		{"batch with one forbidden call (2025-03-26)", call{body: batch, headers: map[string]string{"MCP-Protocol-Version": "2025-03-26"}}, 403},
		{"batch with one forbidden call (no version)", call{body: batch}, 403},
		{"batch on 2025-06-18", call{body: okBatch, headers: map[string]string{"MCP-Protocol-Version": "2025-06-18"}}, 400},
		{"batch on 2025-11-25", call{body: okBatch, headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}}, 400},
		{"batch on 2026-07-28", call{body: `[` + call26("read_a") + `]`, headers: v2026("tools/call", "read_a")}, 400},
		{"empty batch", call{body: `[]`}, 400},
		// Keys two parsers read differently.
		{"duplicate name", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","name":"delete_all"}}`}, 400},
		{"name and Name", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"delete_all","name":"read_a"}}`}, 400},
		{"NAME only", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"delete_all"}}`}, 400},
		{"duplicate method", call{body: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"delete_all"}}`}, 400},
		{"Kelvin sign variant of taskId", call{body: `{"jsonrpc":"2.0","id":1,"method":"tasks/get","params":{"taskId":"a","tas\u212Aid":"b"}}`}, 400},
		{"long s variant of params", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a"},"param\u017f":{"name":"delete_all"}}`}, 400},
		{"escaped duplicate name", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","n\u0061me":"delete_all"}}`}, 400},
		// C-string decoders (cJSON) end a name at its first NUL.
		{"name with NUL before name", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name\u0000":"delete_all","name":"read_a"}}`}, 400},
		{"method with NUL before method", call{body: `{"jsonrpc":"2.0","id":1,"method\u0000x":"tools/call","method":"ping","params":{"name":"delete_all"}}`}, 400},
		{"params with NUL before params", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params\u0000":{"name":"delete_all"},"params":{"name":"read_a"}}`}, 400},
		{"invalid UTF-8", call{body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"read_\xff\"}}"}, 400},
		{"trailing data", call{body: toolCall("read_a") + `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_all"}}`}, 400},
		{"trailing garbage", call{body: toolCall("read_a") + `x`}, 400},
		{"deeply nested", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":` + deep + `}}`}, 400},
		{"tools/call as a notification", call{body: `{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_all"}}`}, 403},
		{"params as array", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_all"]}`}, 400},
		{"name not a string", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_all"]}}`}, 400},
		{"not JSON-RPC", call{body: `{"id":1,"method":"tools/call","params":{"name":"read_a"}}`}, 400},
		{"empty body", call{body: ""}, 400},
		// Size and encodings.
		{"body over limit", call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"x":"` + strings.Repeat("a", 1<<20) + `"}}}`}, 413},
		{"text/plain", call{body: toolCall("read_a"), headers: map[string]string{"Content-Type": "text/plain"}}, 415},
		{"multipart", call{body: toolCall("read_a"), headers: map[string]string{"Content-Type": "multipart/form-data; boundary=x"}}, 415},
		{"form", call{body: toolCall("read_a"), headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415},
		{"missing Content-Type", call{body: toolCall("read_a"), headers: map[string]string{"Content-Type": ""}}, 415},
		{"JSON with odd parameter", call{body: toolCall("read_a"), headers: map[string]string{"Content-Type": "application/json; charset=utf-16"}}, 415},
		{"gzip", call{body: toolCall("read_a"), headers: map[string]string{"Content-Encoding": "gzip"}}, 415},
		{"identity, gzip", call{body: toolCall("read_a"), headers: map[string]string{"Content-Encoding": "identity, gzip"}}, 415},
		// Tokens.
		{"token in query", call{path: "/mcp?access_token=" + good, token: "-", body: toolCall("read_a")}, 400},
		{"token only in query", call{path: "/mcp?access_token=" + good, body: toolCall("read_a")}, 400},
		// A session in the query, which a legacy HTTP+SSE upstream reads
		// unbound (review s11-streams F3).
		{"sessionId in query", call{path: "/mcp?sessionId=upsess-1", body: toolCall("read_a")}, 400},
		{"session_id in query", call{path: "/mcp?x=1&session_id=upsess-1", body: toolCall("read_a")}, 400},
		{"SESSION-ID in query", call{path: "/mcp?SESSION-ID=upsess-1", body: toolCall("read_a")}, 400},
		{"mcp-session-id in query", call{path: "/mcp?mcp-session-id=upsess-1", body: toolCall("read_a")}, 400},
		{"session.id[] in query", call{path: "/mcp?session.id[]=upsess-1", body: toolCall("read_a")}, 400},
		{"get stream, sessionId in query", call{method: http.MethodGet, path: "/mcp?sessionId=upsess-1"}, 400},
		// A method override in the query, which Express's method-override
		// (given a query key), Symfony and Laravel, gorilla/handlers,
		// Spring's HiddenHttpMethodFilter and Hono read: the authorized
		// POST would reach the upstream as a GET stream or a DELETE, which
		// need the caller's session (checkSessionless).
		{"_method=GET in query", call{path: "/mcp?_method=GET", body: toolCall("read_a")}, 400},
		{"_method=DELETE in query", call{path: "/mcp?x=1&_method=DELETE", body: toolCall("read_a")}, 400},
		{"_METHOD in query", call{path: "/mcp?_METHOD=get", body: toolCall("read_a")}, 400},
		{".method[] in query", call{path: "/mcp?.method[]=GET", body: toolCall("read_a")}, 400},
		{"other audience", call{token: with(func(c jwt.MapClaims) { c["aud"] = "https://other.example.com/mcp" }), body: toolCall("read_a")}, 401},
		{"audience prefix", call{token: with(func(c jwt.MapClaims) { c["aud"] = testResource + "/x" }), body: toolCall("read_a")}, 401},
		{"alg none", call{token: mintWith(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "ec1", claims(), nil), body: toolCall("read_a")}, 401},
		{"HS256 with public key bytes", call{token: mintWith(t, jwt.SigningMethodHS256, pub, "ec1", claims(), nil), body: toolCall("read_a")}, 401},
		{"wrong typ", call{token: mintWith(t, jwt.SigningMethodES256, k.ec, "ec1", claims(), func(h map[string]any) { h["typ"] = "JWT" }), body: toolCall("read_a")}, 401},
		{"no typ", call{token: mintWith(t, jwt.SigningMethodES256, k.ec, "ec1", claims(), func(h map[string]any) { delete(h, "typ") }), body: toolCall("read_a")}, 401},
		{"expired", call{token: with(func(c jwt.MapClaims) { c["exp"] = testNow.Add(-time.Minute).Unix() }), body: toolCall("read_a")}, 401},
		{"expired beyond the leeway", call{token: with(func(c jwt.MapClaims) { c["exp"] = testNow.Add(-6 * time.Second).Unix() }), body: toolCall("read_a")}, 401},
		{"no exp", call{token: with(func(c jwt.MapClaims) { delete(c, "exp") }), body: toolCall("read_a")}, 401},
		{"nbf in future", call{token: with(func(c jwt.MapClaims) { c["nbf"] = testNow.Add(time.Hour).Unix() }), body: toolCall("read_a")}, 401},
		{"iat in future", call{token: with(func(c jwt.MapClaims) { c["iat"] = testNow.Add(time.Hour).Unix() }), body: toolCall("read_a")}, 401},
		{"wrong iss", call{token: with(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com" }), body: toolCall("read_a")}, 401},
		{"unknown kid", call{token: mintWith(t, jwt.SigningMethodES256, k.ec, "nope", claims(), nil), body: toolCall("read_a")}, 401},
		{"no kid", call{token: mintWith(t, jwt.SigningMethodES256, k.ec, "", claims(), nil), body: toolCall("read_a")}, 401},
		{"ES256 header, RSA kid", call{token: mintWith(t, jwt.SigningMethodES256, k.ec, "rsa1", claims(), nil), body: toolCall("read_a")}, 401},
		{"signed by another key", call{token: mintWith(t, jwt.SigningMethodRS256, k.rsa, "ec1", claims(), nil), body: toolCall("read_a")}, 401},
		{"no sub", call{token: with(func(c jwt.MapClaims) { delete(c, "sub") }), body: toolCall("read_a")}, 401},
		{"no client_id", call{token: with(func(c jwt.MapClaims) { delete(c, "client_id") }), body: toolCall("read_a")}, 401},
		{"scope not a string", call{token: with(func(c jwt.MapClaims) { c["scope"] = []string{"mcp", "admin"} }), body: toolCall("delete_a")}, 401},
		// Paths: only the resource's path exactly, whatever the token allows.
		{"//mcp", call{path: "//mcp", body: toolCall("read_a")}, 404},
		{"/mcp/", call{path: "/mcp/", body: toolCall("read_a")}, 404},
		{"/./mcp", call{path: "/./mcp", body: toolCall("read_a")}, 404},
		{"%2fmcp", call{path: "/%2fmcp", body: toolCall("read_a")}, 404},
		{"metadata path with a body", call{path: "/.well-known/oauth-protected-resource/mcp/x", body: toolCall("read_a")}, 404},
		// 2026-07-28 request metadata.
		{"Mcp-Method disagrees", call{body: call26("read_a"), headers: v2026("tools/list", "read_a")}, 400},
		{"Mcp-Method missing", call{body: call26("read_a"), headers: map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Name": "read_a"}}, 400},
		{"Mcp-Name disagrees", call{body: call26("delete_all"), headers: v2026("tools/call", "read_a")}, 400},
		{"Mcp-Name missing", call{body: call26("read_a"), headers: v2026("tools/call", "")}, 400},
		{"Mcp-Name base64 disagrees", call{body: call26("delete_all"), headers: v2026("tools/call", "=?base64?cmVhZF9h?=")}, 400},
		{"Mcp-Name malformed base64", call{body: call26("read_a"), headers: v2026("tools/call", "=?base64?cmVhZF9h=?=")}, 400},
		{"downgraded header on a 2026 body", call{body: call26("read_a"), headers: map[string]string{"MCP-Protocol-Version": "2025-06-18"}}, 400},
		{"no header on a 2026 body", call{body: call26("read_a")}, 400},
		{"2026 header, no _meta version", call{body: toolCall("read_a"), headers: v2026("tools/call", "read_a")}, 400},
		{"2026 header, other _meta version", call{body: strings.Replace(call26("read_a"), "2026-07-28", "2025-11-25", 1), headers: v2026("tools/call", "read_a")}, 400},
		{"unknown protocol version", call{body: toolCall("read_a"), headers: map[string]string{"MCP-Protocol-Version": "2099-01-01"}}, 400},
		{"2026 response from client", call{body: `{"jsonrpc":"2.0","id":1,"result":{}}`, headers: v2026("", "")}, 400},
		// Sessions.
		{"forged session id", call{body: toolCall("read_a"), headers: map[string]string{"Mcp-Session-Id": "upstream-session-1"}}, 404},
	}
	h := newHarness(t, testConfig(t), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			switch tt.c.token {
			case "":
				tt.c.token = good
			case "-":
				tt.c.token = mint(t, claims())
			}
			if strings.HasPrefix(tt.c.path, "/mcp?access_token") && tt.name == "token only in query" {
				tt.c.token = ""
			}
			resp := h.do(t, tt.c)
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d (body %s)", resp.StatusCode, tt.status, body)
			}
			if resp.StatusCode >= 400 && resp.StatusCode != 405 {
				rpcErr(t, body) // every refusal is a JSON-RPC error
			}
			if got := h.up.requests(); len(got) != 0 {
				t.Fatalf("upstream saw %d requests (%s %s), want none", len(got), got[0].Method, got[0].Body)
			}
		})
	}
}

// TestEndpointPathOnly: the gateway forwards only requests to its
// resource's path exactly as the upstream will receive it; any other path
// that reaches it (a gateway without a matcher sees the whole site) is
// answered 404 whatever the token allows, so an upstream's other routes
// (health, admin, a legacy /sse transport) stay out of reach.
func TestEndpointPathOnly(t *testing.T) {
	for _, resource := range []string{testResource, "https://mcp.example.com", "https://mcp.example.com/a/mcp/"} {
		t.Run(resource, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Resource = resource
			h := newHarness(t, cfg, nil)
			c := claims()
			c["aud"] = resource
			token := mint(t, c)
			u, _ := url.Parse(resource)
			p := u.Path
			if p == "" {
				p = "/"
			}
			resp := h.do(t, call{path: p, token: token, body: toolCall("read_a")})
			if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
				t.Fatalf("POST %s: status %d (%s), want 200", p, resp.StatusCode, body)
			}
			if got := h.up.requests(); len(got) != 1 || got[0].Path != p {
				t.Fatalf("upstream saw %v, want one request to %s", got, p)
			}
			trimmed := strings.TrimSuffix(p, "/")
			variants := []string{
				p + "/", p + "x", p + ";x", p + "%2F", p + "%2f", p + "/x", p + "/.", p + "/..", p + "%00", p + "%20", p + ".",
				strings.ToUpper(p), "/" + p, trimmed + "//", trimmed + "/./", "/x/.." + p, "/%2e" + p,
				trimmed + "%2F", p + "%252E", p + "%252e%252e/", "/%25" + p, "/sse", "/health", "/admin",
				"/.well-known/oauth-protected-resource" + p + "x",
			}
			if p != "/" {
				last := strings.LastIndex(trimmed, "/")
				variants = append(variants, trimmed, "/", trimmed[:last]+"//"+trimmed[last+1:],
					fmt.Sprintf("%s/%%%02x%s", trimmed[:last], trimmed[last+1], trimmed[last+2:]),
					fmt.Sprintf("%s/%%%02X%s", trimmed[:last], trimmed[last+1], trimmed[last+2:]))
			}
			for _, v := range variants {
				if v == p || !strings.HasPrefix(v, "/") {
					continue
				}
				for _, m := range []string{http.MethodPost, http.MethodGet, http.MethodDelete, http.MethodOptions} {
					t.Run(m+" "+v, func(t *testing.T) {
						var body string
						if m == http.MethodPost {
							body = toolCall("read_a")
						}
						resp := h.do(t, call{method: m, path: v, token: token, body: body, headers: map[string]string{
							"Mcp-Session-Id": "", "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}})
						got := readBody(t, resp)
						if resp.StatusCode != http.StatusNotFound {
							t.Errorf("status = %d (%s), want 404", resp.StatusCode, got)
						}
						rpcErr(t, got)
					})
				}
			}
			if got := h.up.requests(); len(got) != 1 {
				t.Errorf("upstream saw %d requests, want only the one to %s; the last: %s %s", len(got), p, got[len(got)-1].Method, got[len(got)-1].Path)
			}
		})
	}
}

// TestHeaderMismatchBody: the 2026-07-28 mismatch answer is a JSON-RPC
// error with code -32020 and the request id, so clients do not fall back.
func TestHeaderMismatchBody(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	body := `{"jsonrpc":"2.0","id":"r1","method":"tools/call","params":{"name":"read_a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
	resp := h.do(t, call{body: body, token: mint(t, claims()), headers: map[string]string{
		"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "delete_all"}})
	got := readBody(t, resp)
	code, id, _ := rpcErr(t, got)
	if resp.StatusCode != http.StatusBadRequest || code != codeHeaderMismatch || string(id) != `"r1"` {
		t.Errorf("answer = %d %s, want 400 with code -32020 and id \"r1\"", resp.StatusCode, got)
	}

	resp = h.do(t, call{body: toolCall("read_a"), token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2099-01-01"}})
	got = readBody(t, resp)
	if code, _, _ := rpcErr(t, got); code != codeUnsupportedProtocol || !strings.Contains(got, `"supported":["2026-07-28"`) {
		t.Errorf("unknown version answer = %s, want code -32022 listing supported versions", got)
	}
}

// TestAmbiguousBodies: body and header shapes that two parsers could read
// differently are refused before the upstream.
func TestAmbiguousBodies(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	token := mint(t, claims())
	tests := []struct {
		name    string
		body    string
		headers map[string]string
		status  int
	}{
		{"UTF-8 BOM", "\xef\xbb\xbf" + toolCall("read_a"), nil, 400},
		{"UTF-16 with BOM", "\xff\xfe{\x00}\x00", nil, 400},
		{"overlong slash", "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools\xc0\xafcall\",\"params\":{\"name\":\"delete_all\"}}", nil, 400},
		{"lone surrogate in name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all\ud800"}}`, nil, 400},
		{"escaped method", `{"jsonrpc":"2.0","id":1,"method":"tools\/call","params":{"name":"delete_all"}}`, nil, 403},
		{"escaped name member", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n\u0061me":"delete_all"}}`, nil, 403},
		{"escaped tool name", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete\u005fall"}}`, nil, 403},
		{"jsonrpc 2.00", `{"jsonrpc":"2.00","id":1,"method":"tools/call","params":{"name":"delete_all"}}`, nil, 400},
		{"jsonrpc number", `{"jsonrpc":2.0,"id":1,"method":"tools/call","params":{"name":"delete_all"}}`, nil, 400},
		{"id 1.0", `{"jsonrpc":"2.0","id":1.0,"method":"tools/call","params":{"name":"read_a"}}`, nil, 400},
		{"id object", `{"jsonrpc":"2.0","id":{},"method":"tools/call","params":{"name":"read_a"}}`, nil, 400},
		{"id true", `{"jsonrpc":"2.0","id":true,"method":"tools/call","params":{"name":"read_a"}}`, nil, 400},
		{"nested batch", `[[` + toolCall("delete_all") + `]]`, nil, 400},
		{"batch of notification calls", `[{"jsonrpc":"2.0","method":"tools/call","params":{"name":"read_a"}},{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_all"}}]`, nil, 403},
		{"batch with same ids", `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a"}},{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}]`, nil, 400},
		{"batch with same ids, escaped", `[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"read_a"}},{"jsonrpc":"2.0","id":"\u0061","method":"ping"}]`, nil, 400},
		{"method and result", `{"jsonrpc":"2.0","id":1,"method":"tools/call","result":{},"params":{"name":"delete_all"}}`, nil, 400},
		{"two Content-Type headers", toolCall("read_a"), map[string]string{"Content-Type": "application/json, text/plain"}, 415},
		{"charset utf-16", toolCall("read_a"), map[string]string{"Content-Type": "application/json; charset=utf-16"}, 415},
		{"charset twice", toolCall("read_a"), map[string]string{"Content-Type": "application/json; charset=utf-8; charset=utf-16"}, 415},
		// Go's mime.ParseMediaType takes an RFC 2231 charset* over charset;
		// Express's body-parser (the TypeScript SDK's createMcpExpressApp)
		// reads charset and decodes the body as UTF-7.
		{"charset beside RFC 2231 charset*", toolCall("read_a"), map[string]string{"Content-Type": "application/json; charset=utf-7; charset*=utf-8''utf-8"}, 415},
		{"RFC 2231 charset* before charset", toolCall("read_a"), map[string]string{"Content-Type": "application/json; charset*=utf-8''utf-8; charset=utf-7"}, 415},
		{"charset beside RFC 2231 continuation", toolCall("read_a"), map[string]string{"Content-Type": "application/json; charset=utf-7; charset*0=utf-8"}, 415},
		{"json-seq", toolCall("read_a"), map[string]string{"Content-Type": "application/json-seq"}, 415},
		// Go's mime package takes Unicode spaces for whitespace and folds
		// "İ" to "i"; RFC 9110 allows neither in a media type.
		{"Unicode space after the type", toolCall("read_a"), map[string]string{"Content-Type": "application/json\u0085"}, 415},
		{"dotted capital I in the type", toolCall("read_a"), map[string]string{"Content-Type": "appl\u0130cation/json"}, 415},
		{"no-break space before charset", toolCall("read_a"), map[string]string{"Content-Type": "application/json;\u00a0charset=utf-8"}, 415},
		{"deflate", toolCall("read_a"), map[string]string{"Content-Encoding": "deflate"}, 415},
		{"version list", toolCall("read_a"), map[string]string{"MCP-Protocol-Version": "2025-06-18, 2026-07-28"}, 400},
		{"version case", toolCall("read_a"), map[string]string{"MCP-Protocol-Version": "2025-06-18X"}, 400},
		{"session list", toolCall("read_a"), map[string]string{"Mcp-Session-Id": "a, b"}, 404},
		{"Authorization list", toolCall("read_a"), map[string]string{"Authorization": "Bearer " + token + ", Bearer " + token}, 401},
		{"Basic scheme", toolCall("read_a"), map[string]string{"Authorization": "Basic " + token}, 401},
		{"Bearer with tab", toolCall("read_a"), map[string]string{"Authorization": "Bearer\t" + token}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{body: tt.body, token: token, headers: tt.headers})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if len(h.up.requests()) != before {
				t.Fatal("refused request reached the upstream")
			}
		})
	}

	for _, m := range []string{"HEAD", "OPTIONS", "PUT", "PATCH", "post", "TRACE"} {
		t.Run("method "+m, func(t *testing.T) {
			before := len(h.up.requests())
			req, _ := http.NewRequest(m, h.front.URL+"/mcp", strings.NewReader(toolCall("delete_all")))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+mint(t, claims()))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readBody(t, resp)
			if resp.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s: status = %d, want 405", m, resp.StatusCode)
			}
			if len(h.up.requests()) != before {
				t.Fatalf("%s reached the upstream", m)
			}
		})
	}

	t.Run("Expect 100-continue, not forwarded", func(t *testing.T) {
		before := len(h.up.requests())
		req, _ := http.NewRequest(http.MethodPost, h.front.URL+"/mcp", strings.NewReader(toolCall("read_a")))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Expect", "100-continue")
		req.Header.Set("Authorization", "Bearer "+mint(t, claims()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		got := h.up.requests()
		if resp.StatusCode != 200 || len(got) != before+1 {
			t.Fatalf("status = %d, %d upstream requests; want 200 and one", resp.StatusCode, len(got)-before)
		}
		if v := got[before].Header.Values("Expect"); len(v) != 0 || string(got[before].Body) != toolCall("read_a") {
			t.Errorf("upstream got Expect %q and body %s; want no expectation for the body the gateway read, whole", v, got[before].Body)
		}
	})
	t.Run("Expect 100-continue, refused without reading", func(t *testing.T) {
		before := len(h.up.requests())
		req, _ := http.NewRequest(http.MethodPost, h.front.URL+"/mcp", strings.NewReader(toolCall("delete_all")))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Expect", "100-continue")
		req.Header.Set("Authorization", "Bearer "+mint(t, claims()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readBody(t, resp)
		if resp.StatusCode != 403 || len(h.up.requests()) != before {
			t.Errorf("status = %d, want 403 and no upstream request", resp.StatusCode)
		}
	})
}

// TestOtherQueryForwarded: a query that names no session, token or method
// override passes with the authorized request (the control of the query
// rows of TestBypass), and isSessionParam and isMethodOverrideParam read
// names as PHP and loose frameworks do.
func TestOtherQueryForwarded(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	resp := h.do(t, call{path: "/mcp?v=1&session=x&method=x", token: mint(t, claims()), body: toolCall("read_a")})
	if body := readBody(t, resp); resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d (%s), want 200", resp.StatusCode, body)
	}
	if got := h.up.requests(); len(got) != 1 {
		t.Errorf("upstream requests = %+v, want one", got)
	}
	for name, want := range map[string]bool{
		"sessionId": true, "session_id": true, "Session-Id": true, "mcp-session-id": true, "MCP_SESSION_ID": true,
		"session.id": true, "session id": true, "sessionid[]": true, "[sessionId": true,
		"session[id": true, "mcp[session_id": true, // PHP reads an unclosed "[" as "_"
		// Letters whose upper case is ASCII (toUpperCase, EqualFold).
		"\u017fessionId": true, "sess\u0131onId": true, "mcp-\u017fession-id": true, "SESS\u0130ONID": true,
		"se\u00dfionId": true, "mcp-se\u00dfion-id": true, "MCP_SE\u00dfION_ID": true, "SE\u1e9eIONID": true, // ß, ẞ: SS
		"session": false, "sessions": false, "id": false, "mcp": false,
	} {
		if got := isSessionParam(name); got != want {
			t.Errorf("isSessionParam(%q) = %v, want %v", name, got, want)
		}
	}
	for name, want := range map[string]bool{
		"_method": true, "_METHOD": true, "_Method": true, ".method": true, " _method": true, "_method[]": true,
		"[_method]": true, "_method\x00x": true,
		"method": false, "methods": false, "_methods": false, "x_method": false, "m": false,
	} {
		if got := isMethodOverrideParam(name); got != want {
			t.Errorf("isMethodOverrideParam(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestForwardedContentTypeIsWhatWasRead: the upstream gets the media type
// the gateway read the body as, spelled one way, not the client's
// spelling of it, so that no parameter, case or quoting a server's parser
// reads otherwise than Go's mime package reaches it (f497334: a charset*
// beside a charset was UTF-8 here and UTF-7 in Express's body-parser).
func TestForwardedContentTypeIsWhatWasRead(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	token := mint(t, claims())
	for _, ct := range []string{
		"application/json",
		"application/json; charset=utf-8",
		"application/json;charset=UTF-8",
		`application/json; charset="utf-8"`,
		"Application/JSON",
		"application/json ; charset=Utf-8",
	} {
		t.Run(ct, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{body: toolCall("read_a"), token: token, headers: map[string]string{"Content-Type": ct}})
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status = %d, want 200 (%s)", resp.StatusCode, body)
			}
			got := h.up.requests()
			if len(got) != before+1 {
				t.Fatalf("upstream got %d requests, want 1", len(got)-before)
			}
			if v := got[len(got)-1].Header.Values("Content-Type"); len(v) != 1 || v[0] != "application/json" {
				t.Fatalf("upstream Content-Type = %q, want exactly application/json", v)
			}
		})
	}
}
