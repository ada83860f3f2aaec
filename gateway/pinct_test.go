package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestPinUnsolicitedToolsListAnyContentType: an unsolicited tools/list
// answer (another request's id) is filtered whatever content type the
// upstream labels it with, as TestPinUnsolicitedToolsList checks for
// text/event-stream: MCP clients match answers by id, read a POST's JSON
// body as they read its events, take "text/event-stream" anywhere in the
// type for an event stream (the TypeScript SDK's includes()), and read a
// GET's body as events whatever its type.
func TestPinUnsolicitedToolsListAnyContentType(t *testing.T) {
	changed := changedToolsList
	sse := "event: message\ndata: " + changed + "\n\n"
	tests := []struct {
		name, method string
		status       int      // 0: 200
		cts          []string // the Content-Type values
		body         string
	}{
		{"tools/call, JSON batch", http.MethodPost, 0, []string{"application/json"}, "[" + changed + `,{"jsonrpc":"2.0","id":1,"result":{"content":[]}}]`},
		{"tools/call, JSON", http.MethodPost, 0, []string{"application/json"}, changed},
		{"tools/call, event stream in a parameter", http.MethodPost, 0, []string{"text/plain; x=text/event-stream"}, sse},
		{"GET, octet-stream", http.MethodGet, 0, []string{"application/octet-stream"}, sse},
		{"GET, no type", http.MethodGet, 0, []string{""}, sse},
		// Types the Python SDK (startswith) or the TypeScript SDK
		// (includes) reads as JSON.
		{"tools/call, application/json-rpc", http.MethodPost, 0, []string{"application/json-rpc"}, changed},
		{"tools/call, application/jsonx", http.MethodPost, 0, []string{"application/jsonx"}, changed},
		{"tools/call, upper case", http.MethodPost, 0, []string{"APPLICATION/JSON-RPC"}, changed},
		{"tools/call, JSON in a parameter", http.MethodPost, 0, []string{"text/plain; x=application/json"}, changed},
		{"tools/call, text/json", http.MethodPost, 0, []string{"text/json"}, changed},
		{"tools/call, problem+json", http.MethodPost, 0, []string{"application/problem+json"}, changed},
		{"tools/call, two types, JSON second", http.MethodPost, 0, []string{"text/plain", "application/json"}, changed},
		{"tools/call, two types, stream second", http.MethodPost, 0, []string{"text/plain", "text/event-stream"}, sse},
		{"GET, two types", http.MethodGet, 0, []string{"text/event-stream", "text/plain"}, sse},
		// Other statuses a client reads a body under: the Python and Go
		// SDKs a 205, the Python SDK a 3xx it does not follow.
		{"tools/call, 205 JSON", http.MethodPost, http.StatusResetContent, []string{"application/json"}, changed},
		{"tools/call, 205 event stream", http.MethodPost, http.StatusResetContent, []string{"text/event-stream"}, sse},
		{"tools/call, 300 JSON", http.MethodPost, http.StatusMultipleChoices, []string{"application/json"}, changed},
		{"tools/call, 300 event stream", http.MethodPost, http.StatusMultipleChoices, []string{"text/event-stream"}, sse},
		{"tools/call, 302 JSON", http.MethodPost, http.StatusFound, []string{"application/json"}, changed},
		{"tools/call, 307 JSON", http.MethodPost, http.StatusTemporaryRedirect, []string{"application/json"}, changed},
		{"tools/call, 308 event stream", http.MethodPost, http.StatusPermanentRedirect, []string{"text/event-stream"}, sse},
		{"tools/call, 300, two types", http.MethodPost, http.StatusMultipleChoices, []string{"text/plain", "application/json"}, changed},
		// Types no SDK reads as JSON, but a client that reads every
		// answer that is not an event stream as JSON does (requests'
		// json(), whatever the type).
		{"tools/call, text/plain", http.MethodPost, 0, []string{"text/plain"}, changed},
		{"tools/call, text/html", http.MethodPost, 0, []string{"text/html"}, changed},
		{"tools/call, octet-stream", http.MethodPost, 0, []string{"application/octet-stream"}, changed},
		{"tools/call, no type", http.MethodPost, 0, nil, changed},
		{"tools/call, 202 text/plain", http.MethodPost, http.StatusAccepted, []string{"text/plain"}, changed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newPinnedStage(t)
			st.answerWith(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = tt.cts
				if tt.status != 0 {
					w.WriteHeader(tt.status)
				}
				io.WriteString(w, tt.body)
			})
			resp := st.h.do(t, st.call(tt.method))
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), "evil.example") {
				t.Fatalf("%s answered %d as %q: the changed definition reaches the client: %.120q", tt.method, resp.StatusCode, tt.cts, b)
			}
		})
	}
}

// TestPinErrorAnswersPass: error answers (4xx, 5xx), from which no
// client takes a result, reach the client unchanged, status and body,
// with pinning on (or, below, the tools/list filter), whatever their
// type; a GET stream's 405 is not refused for not being a stream.
func TestPinErrorAnswersPass(t *testing.T) {
	rpcError := `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no such thing"}}`
	problem := `{"type":"about:blank","title":"Forbidden","status":403}`
	tests := []struct {
		name, method string
		status       int
		ct, body     string
	}{
		{"tools/call, 400 JSON-RPC error", http.MethodPost, http.StatusBadRequest, "application/json", rpcError},
		{"tools/call, 403 problem+json", http.MethodPost, http.StatusForbidden, "application/problem+json", problem},
		{"tools/call, 400 a tools list", http.MethodPost, http.StatusBadRequest, "application/json", changedToolsList},
		{"tools/call, 500 other JSON", http.MethodPost, http.StatusInternalServerError, "application/json", `{"detail":"database down"}`},
		{"tools/call, 500 HTML", http.MethodPost, http.StatusInternalServerError, "text/html", "<h1>oops</h1>"},
		{"tools/call, 503 no type", http.MethodPost, http.StatusServiceUnavailable, "", "busy"},
		{"GET, 405 JSON", http.MethodGet, http.StatusMethodNotAllowed, "application/json", `{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Method not allowed."}}`},
		{"GET, 405 text", http.MethodGet, http.StatusMethodNotAllowed, "text/plain", "Method Not Allowed"},
		{"tools/call, 500 event stream", http.MethodPost, http.StatusInternalServerError, "text/event-stream", "event: message\ndata: " + rpcError + "\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newPinnedStage(t)
			st.answerWith(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ct)
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			resp := st.h.do(t, st.call(tt.method))
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || string(b) != tt.body {
				t.Fatalf("%s answered %d %q = %d %q, want it unchanged", tt.method, tt.status, tt.body, resp.StatusCode, b)
			}
		})
	}
	for _, tt := range []struct {
		status   int
		ct, body string
	}{
		{http.StatusBadRequest, "application/json", rpcError},
		{http.StatusBadRequest, "application/json", `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Bad Request: Mcp-Session-Id header is required"}}`},
		{http.StatusInternalServerError, "application/json", `{"detail":"database down"}`},
		{http.StatusBadGateway, "application/json", "upstream connect error"},
		{http.StatusForbidden, "application/problem+json", problem},
		{http.StatusUnauthorized, "application/json", `{"error":"invalid_token"}`},
	} {
		g := newGateway(t, testConfig(t))
		w := serveDirect(t, g, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", tt.ct)
			w.WriteHeader(tt.status)
			_, err := io.WriteString(w, tt.body)
			return err
		})
		if w.Code != tt.status || w.Body.String() != tt.body {
			t.Errorf("tools/list answered %d %s %q = %d %.100q, want it unchanged", tt.status, tt.ct, tt.body, w.Code, w.Body.String())
		}
	}
}

// TestPinRedirectRefused: with pinning on or a tools/list filter, an
// upstream's redirect is refused (502): clients follow it, the Go SDK's
// http.Client with the request's body, to an answer the gateway never
// reads. Without either it passes.
func TestPinRedirectRefused(t *testing.T) {
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: message\ndata: "+changedToolsList+"\n\n")
	}))
	defer evil.Close()
	redirect := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", evil.URL+"/mcp")
			w.WriteHeader(status)
		}
	}
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		st := newPinnedStage(t)
		st.answerWith(redirect(status))
		for _, c := range []call{st.call(http.MethodPost), st.call(http.MethodGet), {body: `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`, token: st.token, headers: st.headers}} {
			resp := st.h.do(t, c)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway || strings.Contains(string(b), "evil.example") ||
				!strings.Contains(string(b), "redirect") || resp.Header.Get("Location") != "" {
				t.Errorf("%d to %s, %s %.30s: = %d %.80q (Location %q), want 502 naming the redirect, no Location", status, evil.URL, c.method, c.body, resp.StatusCode, b, resp.Header.Get("Location"))
			}
		}
	}
	// Without pinning too: the harness's client, Go's, would follow the
	// redirect with the token to another port of the host (the upstream's
	// own there), as the Go SDK's does (TestUpstreamRedirectKeepsToken).
	h := newHarness(t, unreadConfig(t), redirect(http.StatusTemporaryRedirect))
	resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, claims())})
	if b := readBody(t, resp); resp.StatusCode != http.StatusBadGateway || strings.Contains(b, "evil.example") || resp.Header.Get("Location") != "" {
		t.Errorf("without pinning, a tools/call's 307 = %d %.80q, want 502 (not followed)", resp.StatusCode, b)
	}
}

// TestRefusedAnswerNotReadToItsEnd: an answer refused as it begins (with
// pinning, a GET answered 200 with another type than an event stream,
// which clients read as events all the same) was read to its end, and
// dropped, before the 502 went out: one that does not end kept the client
// waiting, and the upstream sending, for as long as the upstream went on.
// It is now refused at once, and the upstream's request ends.
func TestRefusedAnswerNotReadToItsEnd(t *testing.T) {
	for _, ct := range []string{"application/json", "text/plain"} {
		st := newPinnedStage(t)
		ended := make(chan struct{})
		st.answerWith(func(w http.ResponseWriter, r *http.Request) {
			defer close(ended)
			w.Header().Set("Content-Type", ct)
			w.WriteHeader(http.StatusOK)
			for stop := time.Now().Add(8 * time.Second); time.Now().Before(stop); {
				if _, err := io.WriteString(w, `{"jsonrpc":"2.0","method":"notifications/message","params":{}}`+"\n"); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
		done := make(chan struct{})
		var status int
		var body []byte
		go func() {
			defer close(done)
			resp := st.h.do(t, st.call(http.MethodGet))
			status = resp.StatusCode
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s: GET answered %s still unanswered after 5 s", ct, ct)
			<-done // the upstream stops after 8 s
		}
		if status != http.StatusBadGateway || !strings.Contains(string(body), `"code":-32000`) {
			t.Errorf("%s: GET = %d %.80q, want 502 with a JSON-RPC error", ct, status, body)
		}
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Errorf("%s: the upstream's answer still being read 5 s after the refusal", ct)
		}
	}
}

// TestPinJSONAnswerTooLarge: with pinning on, a JSON answer is held to be
// looked at for a tools list up to maxFilteredBody; a larger one is not
// passed unread but refused (502), and one within the limit passes whole;
// written in reverse_proxy's 32 KiB pieces, or in one write as long as its
// Content-Length (which a smaller answer may pass unheld).
func TestPinJSONAnswerTooLarge(t *testing.T) {
	if maxFilteredBody != 16<<20 {
		t.Fatalf("maxFilteredBody = %d, README (Tool pinning, resource_rule) says a held answer is read up to 16 MiB", maxFilteredBody)
	}
	for _, size := range []int{maxTaskBody + 1, maxFilteredBody + 1} {
		for _, whole := range []bool{false, true} {
			g := pinnedReadFile(t)
			head := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"`
			answer := head + strings.Repeat("a", size-len(head)-len(`"}]}}`)) + `"}]}}`
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_file")))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
			w := httptest.NewRecorder()
			g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "application/json")
				if whole {
					w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
					_, err := io.WriteString(w, answer)
					return err
				}
				for rest := answer; rest != ""; {
					n := min(len(rest), 32<<10) // as reverse_proxy copies
					if _, err := io.WriteString(w, rest[:n]); err != nil {
						return err
					}
					rest = rest[n:]
				}
				return nil
			}))
			switch {
			case size > maxFilteredBody && w.Code != http.StatusBadGateway:
				t.Errorf("%d-byte answer (in one write: %v) = %d (%d bytes), want 502", size, whole, w.Code, w.Body.Len())
			case size <= maxFilteredBody && (w.Code != http.StatusOK || w.Body.Len() != size):
				t.Errorf("%d-byte answer (in one write: %v) = %d with %d bytes, want 200 with all of it", size, whole, w.Code, w.Body.Len())
			}
		}
	}
}

// TestPinCompressedAnswer: with pinning on, the gateway asks the upstream
// for uncompressed answers (it reads every one for a tools list), and an
// answer compressed all the same is refused (502), not passed unread;
// without pinning a tools/call keeps the client's Accept-Encoding and a
// compressed answer passes.
func TestPinCompressedAnswer(t *testing.T) {
	for _, pinned := range []bool{true, false} {
		for _, ct := range []string{"application/json", "text/event-stream"} {
			cfg := unreadConfig(t)
			cfg.Tools = []Rule{{Pattern: "*", Scopes: []string{"tools:read"}}}
			if pinned {
				cfg.PinTools, cfg.Pins = PinFirstUse, newMemPins()
			}
			g := newGateway(t, cfg)
			if pinned {
				if _, _, err := g.pins.listed(t.Context(), "read_file", []byte(`{"name":"read_file","inputSchema":{"type":"object"}}`)); err != nil {
					t.Fatal(err)
				}
			}
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_file")))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Accept-Encoding", "gzip, br")
			r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
			var sent string
			w := httptest.NewRecorder()
			g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
				sent = r.Header.Get("Accept-Encoding")
				w.Header().Set("Content-Type", ct)
				w.Header().Set("Content-Encoding", "br")
				_, err := io.WriteString(w, "\x1b\x03\x00\xf8\xa5\x02compressed")
				return err
			}))
			switch {
			case pinned && (sent != "" || w.Code != http.StatusBadGateway):
				t.Errorf("pinned, %s: upstream Accept-Encoding %q, answer %d; want none and 502", ct, sent, w.Code)
			case !pinned && (sent != "gzip, br" || w.Code != http.StatusOK):
				t.Errorf("not pinned, %s: upstream Accept-Encoding %q, answer %d; want the client's and 200", ct, sent, w.Code)
			}
		}
	}
}

// TestPinJSONAnswerWhole: with pinning on, a JSON answer that arrives
// whole in one write (its Content-Length, as reverse_proxy copies a small
// answer) and names no tools list is written at once rather than held;
// anything written after it is refused, never passed unread. An answer
// in parts, or one whose length does not match, is held as before, and
// one naming a tools list is held and read whatever its length.
func TestPinJSONAnswerWhole(t *testing.T) {
	plain := `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}]}}`
	tests := []struct {
		name      string
		length    int      // Content-Length; 0: none
		writes    []string // what next writes, in order
		early     bool     // the answer reaches the client before next returns
		want      string   // the client's body
		extraErr  bool     // a write after the whole answer fails
		learnsNew bool     // a changed definition: not in the body
	}{
		{name: "whole", length: len(plain), writes: []string{plain}, early: true, want: plain},
		{name: "whole, then more", length: len(plain), writes: []string{plain, `{"jsonrpc":"2.0","id":2,"result":{}}`}, early: true, want: plain, extraErr: true},
		{name: "in parts", length: len(plain), writes: []string{plain[:20], plain[20:]}, want: plain},
		{name: "no Content-Length", writes: []string{plain}, want: plain},
		{name: "Content-Length larger", length: len(plain) + 5, writes: []string{plain}, want: plain},
		{name: "Content-Length smaller", length: len(plain) - 5, writes: []string{plain}, want: plain},
		{name: "whole, names a tools list", length: len(changedToolsList), writes: []string{changedToolsList}, learnsNew: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := pinnedReadFile(t)
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_file")))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
			rec := httptest.NewRecorder()
			var early bool
			var errs []error
			g.Serve(rec, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "application/json")
				if tt.length > 0 {
					w.Header().Set("Content-Length", strconv.Itoa(tt.length))
				}
				for _, s := range tt.writes {
					_, err := io.WriteString(w, s)
					errs = append(errs, err)
				}
				early = rec.Body.Len() > 0
				return nil
			}))
			if early != tt.early {
				t.Errorf("answer written before next returned: %v, want %v", early, tt.early)
			}
			for i, err := range errs {
				if wantErr := tt.extraErr && i > 0; (err != nil) != wantErr {
					t.Errorf("write %d: error %v, want error %v", i, err, wantErr)
				}
			}
			body := rec.Body.String()
			if tt.learnsNew {
				if strings.Contains(body, "evil.example") {
					t.Fatalf("body = %q: the changed definition reached the client", body)
				}
				return
			}
			if rec.Code != http.StatusOK || body != tt.want {
				t.Errorf("answer = %d %q, want 200 %q", rec.Code, body, tt.want)
			}
		})
	}
}

// pinnedReadFile is a gateway with pinning on that has pinned read_file.
func pinnedReadFile(t *testing.T) *Gateway {
	t.Helper()
	cfg := pinnedConfig(t)
	cfg.Tools = []Rule{{Pattern: "*", Scopes: []string{"tools:read"}}}
	g := newGateway(t, cfg)
	if _, _, err := g.pins.listed(t.Context(), "read_file", []byte(`{"name":"read_file","description":"Reads a file.","inputSchema":{"type":"object"}}`)); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestAnswerInAnotherCharset: an answer the gateway reads for tools lists
// (pinning) or resources (resource rules) is read as UTF-8, so one a
// client decodes otherwise is refused (502), never passed unread. Python's
// json.loads reads a JSON body from bytes in UTF-16 or UTF-32 (as httpx's
// and requests' json() do), and httpx, under the Python SDK client's
// event streams (httpx-sse), and requests decode text in the charset the
// Content-Type names: in UTF-7 "+AHQ-ools" is "tools" and "+AHI-esource"
// "resource". So is a type with any parameter but charset, which requests
// reads by splitting at every ';' and stripping quotes ("'charset'=utf-7"
// is UTF-7 to it, no charset to Go). An answer labelled charset=utf-8 is
// read as before.
func TestAnswerInAnotherCharset(t *testing.T) {
	utf16 := func(s string, bom bool) string {
		var b strings.Builder
		if bom {
			b.WriteString("\xff\xfe")
		}
		for _, c := range s {
			b.WriteByte(byte(c))
			b.WriteByte(0)
		}
		return b.String()
	}
	utf32 := func(s string) string {
		var b strings.Builder
		for _, c := range s {
			b.WriteString("\x00\x00\x00")
			b.WriteByte(byte(c))
		}
		return b.String()
	}
	events := func(data string) string { return "event: message\ndata: " + data + "\n\n" }
	// What the client reads is the unsolicited changed tools list, and
	// the contents of a resource the caller may not read.
	list := strings.Replace(changedToolsList, `"tools"`, `"+AHQ-ools"`, 1)
	const secret = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"file:///secret/key","text":"TOPSECRET"}}]}}`
	embedded := strings.ReplaceAll(secret, `"resource"`, `"+AHI-esource"`)
	tests := []struct {
		name, ct string
		// body is the answer, given the payload as JSON and as it is
		// spelt for a client that decodes UTF-7.
		body   func(json, utf7 string) string
		status int
	}{
		{"JSON in UTF-16", "application/json", func(j, _ string) string { return utf16(j, false) }, 502},
		{"JSON in UTF-16 with a byte order mark", "application/json", func(j, _ string) string { return utf16(j, true) }, 502},
		{"JSON in UTF-32", "application/json", func(j, _ string) string { return utf32(j) }, 502},
		{"JSON in UTF-16, charset named", "application/json; charset=utf-16", func(j, _ string) string { return utf16(j, true) }, 502},
		{"JSON, charset=utf-7", "application/json; charset=utf-7", func(_, u string) string { return u }, 502},
		{"JSON, charset=\"UTF-7\"", `application/json; charset="UTF-7"`, func(_, u string) string { return u }, 502},
		{"events, charset=utf-7", "text/event-stream; charset=utf-7", func(_, u string) string { return events(u) }, 502},
		{"events, charset* utf-7", "text/event-stream; charset=utf-8; charset*=utf-8''utf-7", func(_, u string) string { return events(u) }, 502},
		{"events, charset*", "text/event-stream; charset*=utf-8''utf-8", func(_, u string) string { return events(u) }, 502},
		{"events in UTF-16", "text/event-stream; charset=utf-16", func(j, _ string) string { return utf16(events(j), true) }, 502},
		// requests splits the type at every ';', strips quotes from
		// names and values, and takes the last charset: UTF-7 to it,
		// no charset or UTF-8 to Go.
		{"JSON, 'charset'=utf-7", "application/json; 'charset'=utf-7", func(_, u string) string { return u }, 502},
		{"JSON, charset=utf-7 quoted in another parameter", `application/json; x="; charset=utf-7"`, func(_, u string) string { return u }, 502},
		{"JSON, charset=utf-8 beside charset=utf-7 quoted", `application/json; charset=utf-8; x="a;charset=utf-7"`, func(_, u string) string { return u }, 502},
		{"events, 'charset'=utf-7", "text/event-stream; 'charset'=utf-7", func(_, u string) string { return events(u) }, 502},
		{"JSON, charset=utf-8", "application/json; charset=utf-8", func(j, _ string) string { return j }, 200},
		{"JSON, charset=\"utf-8\"", `application/json; charset="utf-8"`, func(j, _ string) string { return j }, 200},
		{"events, charset=UTF-8", "text/event-stream; charset=UTF-8", func(j, _ string) string { return events(j) }, 200},
	}
	for _, tt := range tests {
		t.Run("pinning, "+tt.name, func(t *testing.T) {
			st := newPinnedStage(t)
			st.answerWith(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ct)
				io.WriteString(w, tt.body(changedToolsList, list))
			})
			resp := st.h.do(t, st.call(http.MethodPost))
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || strings.Contains(strings.ReplaceAll(string(b), "\x00", ""), "evil.example") {
				t.Fatalf("answered %d %.160q, want %d without the changed definition", resp.StatusCode, b, tt.status)
			}
		})
		t.Run("resource rules, "+tt.name, func(t *testing.T) {
			h := newHarness(t, testConfig(t), func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ct)
				io.WriteString(w, tt.body(secret, embedded))
			})
			c := claims()
			c["scope"] = "mcp tools:read files:read"
			resp := h.do(t, call{body: toolCall("read_a"), token: mint(t, c), headers: map[string]string{"MCP-Protocol-Version": "2025-11-25"}})
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || strings.Contains(strings.ReplaceAll(string(b), "\x00", ""), "TOPSECRET") {
				t.Fatalf("answered %d %.160q, want %d without file:///secret/key's contents", resp.StatusCode, b, tt.status)
			}
		})
	}
}

// TestRefusedAnswerTypeLoggedCut: the type of an answer the gateway
// refuses (502) is the upstream's, as long as its header may be (10 MiB
// under reverse_proxy), and is logged with every such answer: a server
// turned malicious must not write megabytes to the log per request, so
// it is cut as a name in an audit event is.
func TestRefusedAnswerTypeLoggedCut(t *testing.T) {
	long := strings.Repeat("x", 512<<10)
	for _, ct := range []string{
		"application/json; charset=utf-7; x=" + long,
		"text/html; x=" + long,
	} {
		t.Run(ct[:16], func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			cfg := pinnedConfig(t)
			cfg.Logger = zap.New(core)
			h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", ct)
				io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
			})
			resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-06-18"}})
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("answered %d, want 502", resp.StatusCode)
			}
			entries := logs.FilterMessage("response not filterable").All()
			if len(entries) != 1 {
				t.Fatalf("%d entries \"response not filterable\", want 1", len(entries))
			}
			got, _ := entries[0].ContextMap()["content_type"].(string)
			if want, _ := auditBound(ct, maxAuditName); got != want {
				t.Errorf("content_type logged %d bytes (%.60q…), want %d, cut", len(got), got, len(want))
			}
		})
	}
}

// TestPinFetchErrorLoggedCut: what the gateway's own tools/list fetch
// fails on is logged with each call that made it fetch; the upstream's
// JSON-RPC error and its answer's type are the upstream's, as long as
// an answer (16 MiB) or a header (10 MiB under reverse_proxy) may be,
// and are cut as a reason in an audit event is.
func TestPinFetchErrorLoggedCut(t *testing.T) {
	long := strings.Repeat("x", 512<<10)
	for _, tt := range []struct{ name, ct, body string }{
		{"error", "application/json", `{"jsonrpc":"2.0","id":"x","error":{"code":-32000,"message":"` + long + `"}}`},
		{"type", "application/" + long, `{}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			cfg := pinnedConfig(t)
			cfg.Logger = zap.New(core)
			h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ct)
				io.WriteString(w, tt.body)
			})
			resp := h.do(t, call{body: toolCall("read_new"), token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-06-18"}})
			resp.Body.Close()
			entries := logs.FilterMessage("tool definitions not learned").All()
			if len(entries) == 0 {
				t.Fatalf("nothing logged as \"tool definitions not learned\" (answered %d)", resp.StatusCode)
			}
			for _, e := range entries {
				if msg := fmt.Sprint(e.ContextMap()["error"]); len(msg) > maxAuditText+len(auditCut) {
					t.Errorf("logged error of %d bytes (%.80q…), want the upstream's value cut", len(msg), msg)
				}
			}
		})
	}
}

// TestAnswerMemberVariantLoggedCut: an answer refused (502) for a member
// a client may read as one the gateway checks ("Resource", or "resource"
// cut at a NUL: exactMember) names that member in the error it logs, and
// after a NUL the name may run on for as long as the answer may
// (maxFilteredBody): it is cut as a name in an audit event is. Before,
// one small request had 512 KiB written to the log.
func TestAnswerMemberVariantLoggedCut(t *testing.T) {
	long := strings.Repeat("x", 512<<10)
	for _, tt := range []struct{ name, answer string }{
		{"resource", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"notes://a","text":"a"},"Resource\u0000` + long + `":1}]}}`},
		{"uri", `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"resource","resource":{"uri":"notes://a","URI\u0000` + long + `":"x","text":"a"}}]}}`},
		{"contents", `{"jsonrpc":"2.0","id":1,"result":{"contents":[{"uri":"notes://a","text":"a"}],"Contents\u0000` + long + `":1}}`},
	} {
		for _, ct := range []string{"application/json", "text/event-stream"} {
			t.Run(tt.name+" "+ct, func(t *testing.T) {
				core, logs := observer.New(zap.DebugLevel)
				cfg := testConfig(t)
				cfg.Logger = zap.New(core)
				h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", ct)
					if ct == "text/event-stream" {
						io.WriteString(w, "data: "+tt.answer+"\n\n")
						return
					}
					io.WriteString(w, tt.answer)
				})
				resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{}}}`, token: mint(t, claims())})
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(got), "notes://a") {
					t.Errorf("answered %d %.100q, want the resource refused", resp.StatusCode, got)
				}
				var n int
				for _, e := range logs.All() {
					for _, f := range e.Context {
						if err, ok := f.Interface.(error); ok && len(err.Error()) > maxAuditText {
							t.Errorf("%q logged %s of %d bytes: %.80q…", e.Message, f.Key, len(err.Error()), err.Error())
						}
					}
					n++
				}
				if n == 0 {
					t.Error("nothing logged, want the refusal")
				}
			})
		}
	}
}
