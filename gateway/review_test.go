package gateway

import (
	"bytes"
	"compress/gzip"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Tests from the adversarial review: each case is a way around the
// gateway that was tried; the refused ones must not reach the upstream.

// TestReviewResourceURIs: a resource URI that a server resolves to another
// resource than its text names (dot segments, empty segments, encoded
// characters, backslashes) is refused, so a broad prefix rule cannot
// reach what a narrower one guards.
func TestReviewResourceURIs(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	token := mint(t, func() jwt.MapClaims { c := claims(); c["scope"] = "mcp files:read"; return c }())
	read := func(uri string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":` + quote(uri) + `}}`
	}
	tests := []struct {
		uri    string
		status int
	}{
		{"file:///public/a.txt", 200},
		{"file:///public/a%20b.txt", 200},
		{"file:///public/", 200},
		{"file:///secret/key", 403},
		{"file:///public/../secret/key", 400},
		{"file:///./secret/key", 400},
		{"file:///public/..", 400},
		{"file:////secret/key", 400},
		{"file:///public//../secret/key", 400},
		{"file:///%73ecret/key", 400},
		{"file:///public/%2e%2e/secret/key", 400},
		{"file:///public/.%2E/secret/key", 400},
		{"file:///public%2f..%2fsecret/key", 400},
		{`file:///public\..\secret\key`, 400},
		{"file:///public/%zz", 400},
		{"file:///public/?/../../secret/key", 400},
		{"file:///public/..?x", 400},
		{"file:///public/..;/secret/key", 400},
		{"file://../secret/key", 400},
		{"file:///public/a.b/..c/d..", 400}, // Windows trims the trailing dots
		{"file:///public/a.b/..c/d..e", 200},
		{"file:///public/?q=a//b", 200},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{body: read(tt.uri), token: token})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("resources/read %q: status = %d, want %d (%s)", tt.uri, resp.StatusCode, tt.status, body)
			}
			if tt.status != 200 && len(h.up.requests()) != before {
				t.Fatalf("resources/read %q reached the upstream", tt.uri)
			}
		})
	}
	t.Run("subscribe", func(t *testing.T) {
		body := `{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///public/../secret/key"}}`
		resp := h.do(t, call{body: body, token: token})
		readBody(t, resp)
		if resp.StatusCode != 400 {
			t.Errorf("resources/subscribe with dot segments: status = %d, want 400", resp.StatusCode)
		}
	})
}

// TestReviewBodies: body and header shapes that two parsers could read
// differently are refused before the upstream.
func TestReviewBodies(t *testing.T) {
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
		{"json-seq", toolCall("read_a"), map[string]string{"Content-Type": "application/json-seq"}, 415},
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

// TestReviewAuditNoTokens: no log line carries token material, whatever
// the request.
func TestReviewAuditNoTokens(t *testing.T) {
	h := newHarness(t, testConfig(t), nil)
	good := mint(t, claims())
	expired := mint(t, func() jwt.MapClaims { c := claims(); c["exp"] = testNow.Add(-time.Hour).Unix(); return c }())
	for _, c := range []call{
		{body: toolCall("read_a"), token: good},
		{body: toolCall("delete_all"), token: good},
		{body: toolCall("read_a"), token: expired},
		{body: toolCall("read_a"), token: good + "x"},
		{path: "/mcp?access_token=" + good, body: toolCall("read_a")},
		{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, token: good,
			headers: map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "x"}},
	} {
		readBody(t, h.do(t, c))
	}
	var all bytes.Buffer
	for _, e := range h.logs.All() {
		all.WriteString(e.Message)
		for k, v := range e.ContextMap() {
			all.WriteString(" " + k + "=")
			all.WriteString(fmt.Sprint(v))
		}
		all.WriteString("\n")
	}
	for _, tok := range []string{good, expired} {
		for _, part := range strings.Split(tok, ".") {
			if strings.Contains(all.String(), part) {
				t.Fatalf("audit log contains token material %q:\n%s", part, all.String())
			}
		}
	}
}

// TestReviewConnectionHeader: a proxy removes every header the Connection
// header names, so a client could strip headers the gateway checked or
// set (X-MCP-Subject, Mcp-Session-Id, MCP-Protocol-Version). Such a
// request is refused; the usual connection options still pass.
func TestReviewConnectionHeader(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	h := newHarness(t, cfg, nil)
	token := mint(t, claims())
	tests := []struct {
		value  string
		status int
	}{
		{"keep-alive", 200},
		{"close", 200},
		{"TE", 200},
		{"X-Mcp-Subject", 400},
		{"keep-alive, X-MCP-Scope", 400},
		{"Mcp-Session-Id", 400},
		{"MCP-Protocol-Version", 400},
		{"Content-Type", 400},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			before := len(h.up.requests())
			resp := h.do(t, call{body: toolCall("read_a"), token: token, headers: map[string]string{"Connection": tt.value}})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("Connection: %s: status = %d, want %d (%s)", tt.value, resp.StatusCode, tt.status, body)
			}
			got := h.up.requests()
			if tt.status != 200 {
				if len(got) != before {
					t.Fatalf("Connection: %s reached the upstream", tt.value)
				}
				return
			}
			if v := got[len(got)-1].Header.Get("X-Mcp-Subject"); v != "alice" {
				t.Errorf("upstream X-Mcp-Subject = %q, want alice", v)
			}
		})
	}
}

// TestReviewUnderscoreHeaders: CGI-style servers (FastCGI, PHP, WSGI) read
// "X_Mcp_Subject" and "X-Mcp-Subject" as the same variable, so a client
// copy spelled with underscores would stand in for a header the gateway
// asserts or binds. No header with an underscore in its name reaches the
// upstream.
func TestReviewUnderscoreHeaders(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	h := newHarness(t, cfg, nil)
	resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, claims()), headers: map[string]string{
		"X_Mcp_Subject":  "mallory",
		"Mcp_Session_Id": "someone-elses-upstream-session",
		"Mcp_Name":       "delete_all",
	}})
	readBody(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	got := h.up.requests()
	for k, v := range got[len(got)-1].Header {
		if strings.Contains(k, "_") {
			t.Errorf("upstream header %s = %q, want no header with an underscore", k, v)
		}
	}
}

// TestReviewTrailers: request trailers are not part of what was
// authorized; next never sees them (Caddy's reverse_proxy forwards them).
func TestReviewTrailers(t *testing.T) {
	g := newGateway(t, testConfig(t))
	body := toolCall("read_a")
	r := httptest.NewRequest(http.MethodPost, "/mcp", io.NopCloser(strings.NewReader(body)))
	r.ContentLength = -1
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
	r.Header.Set("Trailer", "Mcp-Session-Id")
	r.Trailer = http.Header{"Mcp-Session-Id": {"someone-elses-upstream-session"}, "X-Mcp-Subject": {"mallory"}}
	var seen *http.Request
	w := httptest.NewRecorder()
	g.Serve(w, r, NextHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r })))
	if seen == nil {
		t.Fatalf("Serve did not forward (status %d, %s)", w.Code, w.Body)
	}
	if len(seen.Trailer) != 0 || len(seen.Header.Values("Trailer")) != 0 {
		t.Errorf("next saw trailers %v, Trailer header %q, want none", seen.Trailer, seen.Header.Values("Trailer"))
	}
}

// TestReviewToolsListNotification: a tools/list sent without an id is
// still a tools/list to a lenient server; whatever answers it is filtered.
func TestReviewToolsListNotification(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"},{"name":"read_a"}]}}`)
	})
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","method":"tools/list"}`, token: mint(t, claims())})
	body := readBody(t, resp)
	if strings.Contains(body, "delete_all") {
		t.Errorf("answer to a tools/list notification = %s, want delete_all filtered out", body)
	}
}

// TestReviewAcceptEncoding: a client asking for compressed answers (Go's
// client does by default) must not make a compressing upstream's
// tools/list unfilterable.
func TestReviewAcceptEncoding(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"},{"name":"read_a"}]}}`
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			io.WriteString(w, list)
			return
		}
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		io.WriteString(zw, list)
		zw.Close()
	})
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, claims()),
		headers: map[string]string{"Accept-Encoding": "gzip"}})
	raw := readBody(t, resp)
	body := raw
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(strings.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(zr)
		body = string(b)
	}
	if resp.StatusCode != 200 || !strings.Contains(body, "read_a") || strings.Contains(body, "delete_all") {
		t.Errorf("tools/list with Accept-Encoding gzip = %d %q, want 200 with read_a only", resp.StatusCode, body)
	}
}

// TestReviewTokens: JWT header and claim variants.
func TestReviewTokens(t *testing.T) {
	k := theKeys(t)
	h := newHarness(t, testConfig(t), nil)
	hdr := func(mutate func(map[string]any)) string {
		return mintWith(t, jwt.SigningMethodES256, k.ec, "ec1", claims(), mutate)
	}
	with := func(mutate func(jwt.MapClaims)) string {
		c := claims()
		mutate(c)
		return mint(t, c)
	}
	tests := []struct {
		name   string
		token  string
		query  string
		status int
	}{
		{"crit header", hdr(func(h map[string]any) { h["crit"] = []string{"exp"} }), "", 401},
		{"crit unknown extension", hdr(func(h map[string]any) { h["crit"] = []string{"x-ext"}; h["x-ext"] = true }), "", 401},
		{"typ application/at+jwt", hdr(func(h map[string]any) { h["typ"] = "application/at+jwt" }), "", 200},
		{"typ AT+JWT", hdr(func(h map[string]any) { h["typ"] = "AT+JWT" }), "", 200},
		{"typ at+jwt with parameter", hdr(func(h map[string]any) { h["typ"] = "at+jwt; x=y" }), "", 401},
		{"kid path trick", hdr(func(h map[string]any) { h["kid"] = "../ec1" }), "", 401},
		{"kid not a string", hdr(func(h map[string]any) { h["kid"] = []string{"ec1"} }), "", 401},
		// RFC 9068 §4: aud must contain the resource; other entries are allowed.
		{"aud array with us", with(func(c jwt.MapClaims) { c["aud"] = []string{"https://other.example.com", testResource} }), "", 200},
		{"aud array without us", with(func(c jwt.MapClaims) { c["aud"] = []string{"https://other.example.com"} }), "", 401},
		{"aud with trailing slash", with(func(c jwt.MapClaims) { c["aud"] = testResource + "/" }), "", 401},
		{"exp as string", with(func(c jwt.MapClaims) { c["exp"] = "9999999999" }), "", 401},
		{"iss as array", with(func(c jwt.MapClaims) { c["iss"] = []string{testIssuer} }), "", 401},
		{"sub as number", with(func(c jwt.MapClaims) { c["sub"] = 7 }), "", 401},
		{"act without sub", with(func(c jwt.MapClaims) { c["act"] = map[string]any{"client_id": "x"} }), "", 401},
		{"token in query after a semicolon", "", "?x;access_token=" + mint(t, claims()), 400},
		{"token in query, encoded name", "", "?access%5Ftoken=" + mint(t, claims()), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(h.up.requests())
			token := tt.token
			if token == "" {
				token = mint(t, claims())
			}
			resp := h.do(t, call{path: "/mcp" + tt.query, body: toolCall("read_a"), token: token})
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if tt.status != 200 && len(h.up.requests()) != before {
				t.Fatal("refused request reached the upstream")
			}
		})
	}

	for _, auth := range []string{"bearer %s", "BEARER %s", "Bearer  %s"} {
		t.Run("scheme "+strings.TrimSuffix(auth, "%s"), func(t *testing.T) {
			resp := h.do(t, call{body: toolCall("read_a"), headers: map[string]string{"Authorization": fmt.Sprintf(auth, mint(t, claims()))}})
			readBody(t, resp)
			if resp.StatusCode != 200 {
				t.Errorf("Authorization %q: status = %d, want 200", auth, resp.StatusCode)
			}
		})
	}

	t.Run("embedded keys are ignored", func(t *testing.T) {
		// Signed by a key the issuer never published, which the token
		// carries itself (jwk) or points to (jku, x5u).
		own, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		evil := mintWith(t, jwt.SigningMethodES256, own, "ec1", claims(), func(h map[string]any) {
			h["jwk"] = map[string]any{"kty": "EC", "crv": "P-256", "kid": "ec1",
				"x": base64.RawURLEncoding.EncodeToString(own.X.FillBytes(make([]byte, 32))),
				"y": base64.RawURLEncoding.EncodeToString(own.Y.FillBytes(make([]byte, 32)))}
			h["jku"] = "https://evil.example.com/jwks"
			h["x5u"] = "https://evil.example.com/cert"
		})
		resp := h.do(t, call{body: toolCall("read_a"), token: evil})
		readBody(t, resp)
		if resp.StatusCode != 401 {
			t.Errorf("status = %d, want 401", resp.StatusCode)
		}
	})
}

// TestReviewToolsListEvasions: upstream answers shaped to slip a tools/list
// past the filter (odd SSE framing, case variants, ids that match another
// request) never show a filtered-out tool to the client.
func TestReviewToolsListEvasions(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"},{"name":"read_a"}]}}`
	sse := func(chunks ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, c := range chunks {
				io.WriteString(w, c)
				w.(http.Flusher).Flush()
			}
		}
	}
	jsonAnswer := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}
	}
	tests := []struct {
		name    string
		request string
		answer  http.HandlerFunc
	}{
		{"SSE CRLF", "", sse("data: " + list + "\r\n\r\n")},
		{"SSE lone CR", "", sse("data: " + list + "\r\r")},
		{"SSE BOM, no space", "", sse("\ufeffdata:" + list + "\n\n")},
		{"SSE data split over lines", "", sse("data: {\"jsonrpc\":\"2.0\",\"id\":1,\ndata: \"result\":{\"tools\":[{\"name\":\"delete_all\"}]}}\n\n")},
		{"SSE event split across writes", "", sse("id: 1\nevent: x\nda", "ta: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\"", ":\"delete_all\"}]}}\r", "\n\r\n")},
		{"SSE batch in one event", "", sse("data: [" + list + "]\n\n")},
		{"SSE answer without a blank line", "", sse("data: " + list + "\n")},
		{"JSON Tools variant", "", jsonAnswer(`{"jsonrpc":"2.0","id":1,"result":{"Tools":[{"name":"delete_all"}]}}`)},
		{"JSON tool Name variant", "", jsonAnswer(`{"jsonrpc":"2.0","id":1,"result":{"tools":[{"Name":"delete_all","name":"read_a"}]}}`)},
		{"JSON escaped tools member", "", jsonAnswer(`{"jsonrpc":"2.0","id":1,"result":{"t\u006fols":[{"name":"delete_all"}]}}`)},
		{"JSON batch answer to one request", "", jsonAnswer(`[` + list + `,` + list + `]`)},
		{"batch: duplicate ids",
			`[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":1,"method":"ping"}]`,
			jsonAnswer(`[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"}]}}]`)},
		{"batch: answer to the notification",
			`[{"jsonrpc":"2.0","method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"ping"}]`,
			jsonAnswer(`[{"jsonrpc":"2.0","id":2,"result":{}},{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"delete_all"}]}}]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), tt.answer)
			req := tt.request
			if req == "" {
				req = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
			}
			resp := h.do(t, call{body: req, token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-03-26"}})
			body := readBody(t, resp)
			if strings.Contains(body, "delete_all") {
				t.Errorf("answer = %d %q, want delete_all filtered out", resp.StatusCode, body)
			}
		})
	}
}

// TestReviewInvalidParamsAnswer: a request that is valid but for its
// params is answered -32602 with its id (mcpparse.ParamsError), and a
// 2026-07-28 request without its _meta protocol version is invalid
// params, not a header mismatch.
func TestReviewInvalidParamsAnswer(t *testing.T) {
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

// TestReviewConcurrent: many principals at once through one gateway (the
// claims cache, session binding and the SSE pump shared): each gets its
// own session and filtered lists, and nobody's session works for another.
func TestReviewConcurrent(t *testing.T) {
	cfg := testConfig(t)
	cfg.ForwardIdentity = true
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"delete_all"},{"name":"read_a"}]}}`
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Mcp-Session-Id", "up-"+r.Header.Get("X-Mcp-Subject"))
		if strings.Contains(r.Header.Get("X-Mcp-Subject"), "odd") {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: "+list+"\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, list)
	})
	const n = 12
	tokens := make([]string, n)
	for i := range tokens {
		c := claims()
		c["sub"] = fmt.Sprintf("user-%d-%s", i, map[bool]string{true: "odd", false: "even"}[i%2 == 1])
		tokens[i] = mint(t, c)
	}
	sids := make([]string, n)
	errs := make(chan error, n*10)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: tokens[i]})
				body := readBody(t, resp)
				if resp.StatusCode != 200 || strings.Contains(body, "delete_all") || !strings.Contains(body, "read_a") {
					errs <- fmt.Errorf("principal %d: tools/list = %d %q", i, resp.StatusCode, body)
				}
				sids[i] = resp.Header.Get("Mcp-Session-Id")
			}
		}()
	}
	wg.Wait()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := (i + 1) % n
			for k, want := range map[string]int{sids[i]: 200, sids[j]: 404} {
				resp := h.do(t, call{body: toolCall("read_a"), token: tokens[i], headers: map[string]string{"Mcp-Session-Id": k}})
				readBody(t, resp)
				if resp.StatusCode != want {
					errs <- fmt.Errorf("principal %d with session of %d: status %d, want %d", i, map[bool]int{true: i, false: j}[want == 200], resp.StatusCode, want)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, r := range h.up.requests() {
		if sid := r.Header.Get("Mcp-Session-Id"); sid != "" && sid != "up-"+r.Header.Get("X-Mcp-Subject") {
			t.Errorf("upstream got session %q for %q", sid, r.Header.Get("X-Mcp-Subject"))
		}
	}
}

// TestReviewSetCookie: an MCP server cannot set cookies through the
// gateway (on a host shared with the issuer they would be the issuer's).
func TestReviewSetCookie(t *testing.T) {
	h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "__Host-mcp_auth_session", Value: "attacker", Path: "/", Secure: true})
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
	})
	for _, body := range []string{toolCall("read_a"), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`} {
		resp := h.do(t, call{body: body, token: mint(t, claims())})
		readBody(t, resp)
		if v := resp.Header.Values("Set-Cookie"); resp.StatusCode != 200 || len(v) != 0 {
			t.Errorf("answer to %s = %d, Set-Cookie %q, want 200 without cookies", body, resp.StatusCode, v)
		}
	}
}
