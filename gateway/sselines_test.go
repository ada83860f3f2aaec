package gateway

import (
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// universalNewlines are the characters that SSE clients built on
// universal line splitting end lines with besides CR and LF: Python's
// str.splitlines, which httpx's iter_lines uses and so httpx-sse before
// 0.4.2 (the MCP Python SDK's SSE client; it does not require a later
// one), and the LineDecoder ported from it to TypeScript SDKs.
var universalNewlines = strings.NewReplacer(
	"\v", "\n", "\f", "\n", "\x1c", "\n", "\x1d", "\n", "\x1e", "\n",
	"\u0085", "\n", "\u2028", "\n", "\u2029", "\n",
)

// splitlinesEvents reads body as such a client does.
func splitlinesEvents(t *testing.T, body string) []mcpparse.Event {
	t.Helper()
	rd := mcpparse.NewReader(strings.NewReader(universalNewlines.Replace(body)), 0)
	var evs []mcpparse.Event
	for {
		ev, err := rd.Next()
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return evs
		}
		if err != nil {
			t.Fatalf("reading %q: %v", body, err)
		}
		evs = append(evs, ev)
	}
}

// TestSSEFieldsCannotCarryLines: an upstream cannot hide a message from
// the gateway in an event's comment, id or event type, or in a JSON
// string, by a character that SSE clients using universal line splitting
// take for a line end: those clients must read the gateway's stream as
// the gateway does, so that no tools/list answer reaches them unfiltered.
func TestSSEFieldsCannotCarryLines(t *testing.T) {
	hidden := `data: {"jsonrpc":"2.0","id":1,"result":{"tools":` + toolsJSON + `}}`
	real := "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":" + toolsJSON + "}}\n\n"
	for _, nl := range []string{"\u2028", "\u2029", "\u0085", "\v", "\f", "\x1c", "\x1d", "\x1e"} {
		for name, stream := range map[string]string{
			"comment": ":" + nl + nl + hidden + nl + nl + "\n" + real,
			"id":      "id: 1" + nl + nl + hidden + nl + nl + "\n" + real,
			"event":   "event: x" + nl + nl + hidden + nl + nl + "\n" + real,
		} {
			g := newGateway(t, pinnedConfig(t))
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Accept", "application/json, text/event-stream")
			r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
			r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			w := httptest.NewRecorder()
			// Refusing the event (the stream is aborted) is a right answer
			// too; what matters is what reached the client.
			g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(http.StatusOK)
				_, err := io.WriteString(w, stream)
				return err
			}))
			for _, ev := range splitlinesEvents(t, w.Body.String()) {
				if strings.Contains(ev.Data, `"tools"`) && strings.Contains(ev.Data, "delete_all") {
					t.Errorf("%q in the %s: a client splitting lines on it reads the unfiltered list from %.80q...", nl, name, w.Body.String())
				}
			}
		}
	}
}

// requestsText is an event stream's body as requests decodes it for
// iter_lines(decode_unicode=True): in the charset the Content-Type names,
// and a text type that names none as ISO-8859-1, each byte a character.
func requestsText(ct, body string) string {
	if _, params, _ := mime.ParseMediaType(ct); strings.EqualFold(params["charset"], "utf-8") {
		return body
	}
	r := make([]rune, len(body))
	for i := 0; i < len(body); i++ {
		r[i] = rune(body[i])
	}
	return string(r)
}

// TestSSEFieldsCannotCarryLinesInLatin1: a client on requests decodes an
// event stream whose type names no charset as ISO-8859-1, in which the
// second byte of "ą" (C4 85), and of any UTF-8 character ending in 0x85,
// is NEL, and its iter_lines ends lines there, as str.splitlines does. An
// upstream's event id, type or comment holding one would then carry a
// line, a whole event, that the gateway reads as part of the field: the
// gateway says the stream is UTF-8, as it reads and writes it.
func TestSSEFieldsCannotCarryLinesInLatin1(t *testing.T) {
	hidden := `data: {"jsonrpc":"2.0","id":1,"result":{"tools":` + toolsJSON + `}}`
	real := "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":" + toolsJSON + "}}\n\n"
	for _, ct := range []string{"text/event-stream", "Text/Event-Stream", "text/event-stream; charset=utf-8"} {
		for name, stream := range map[string]string{
			"comment": ":\u0105" + hidden + "\n\n" + real,
			"id":      "id: 1\u0105" + hidden + "\n\n" + real,
			"event":   "event: x\u0105" + hidden + "\n\n" + real,
		} {
			g := newGateway(t, pinnedConfig(t))
			w := serveDirect(t, g, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(http.StatusOK)
				_, err := io.WriteString(w, stream)
				return err
			})
			got := w.Header().Get("Content-Type")
			for _, ev := range splitlinesEvents(t, requestsText(got, w.Body.String())) {
				if strings.Contains(ev.Data, `"tools"`) && strings.Contains(ev.Data, "delete_all") {
					t.Errorf("%q, \"ą\" in the %s: answered as %q, a client on requests reads the unfiltered list from %.80q...", ct, name, got, w.Body.String())
				}
			}
		}
	}
}

// TestToolsListAnswerAnySuccessStatus: a tools/list answer is filtered
// whatever 2xx status it comes with: MCP clients (the TypeScript SDK
// checks response.ok, then the content type) read the body of a 201, 203
// or 206 as they read a 200's.
func TestToolsListAnswerAnySuccessStatus(t *testing.T) {
	for _, status := range []int{http.StatusCreated, http.StatusNonAuthoritativeInfo, http.StatusPartialContent} {
		for _, ct := range []string{"text/event-stream", "application/json"} {
			body := `{"jsonrpc":"2.0","id":1,"result":{"tools":` + toolsJSON + `}}`
			if ct == "text/event-stream" {
				body = "data: " + body + "\n\n"
			}
			g := newGateway(t, pinnedConfig(t))
			w := serveDirect(t, g, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", ct)
				w.WriteHeader(status)
				_, err := io.WriteString(w, body)
				return err
			})
			if w.Code >= 200 && w.Code < 300 && strings.Contains(w.Body.String(), "delete_all") {
				t.Errorf("status %d, %s: the unfiltered list reaches the client: %.100q", status, ct, w.Body.String())
			}
		}
	}
}

// TestToolsListFilterAnyReadableAnswer: without pinning, a requested
// tools/list answer is filtered (or refused) under any status a client
// reads it under (205 and 3xx included), however its type names JSON or
// an event stream: a tool the caller may not use never reaches it.
func TestToolsListFilterAnyReadableAnswer(t *testing.T) {
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":` + toolsJSON + `}}`
	events := "data: " + list + "\n\n"
	for _, status := range []int{http.StatusOK, http.StatusResetContent, http.StatusMultipleChoices, http.StatusTemporaryRedirect} {
		for _, tt := range []struct {
			cts  []string
			body string
		}{
			{[]string{"application/json"}, list},
			{[]string{"application/json-rpc"}, list},
			{[]string{"text/json"}, list},
			{[]string{"text/event-stream"}, events},
			{[]string{"text/plain", "application/json"}, list},
			{[]string{"text/plain", "text/event-stream"}, events},
		} {
			g := newGateway(t, testConfig(t))
			w := serveDirect(t, g, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(w http.ResponseWriter, r *http.Request) error {
				w.Header()["Content-Type"] = tt.cts
				w.WriteHeader(status)
				_, err := io.WriteString(w, tt.body)
				return err
			})
			if strings.Contains(w.Body.String(), "delete_all") {
				t.Errorf("status %d, %q: the unfiltered list reaches the client: %d %.100q", status, tt.cts, w.Code, w.Body.String())
			}
		}
	}
}
