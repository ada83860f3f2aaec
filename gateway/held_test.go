package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const wholePlain = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}]}}`

type heldCase struct {
	name string
	next func(w http.ResponseWriter) []error
}

func writeString(w http.ResponseWriter, s string) error {
	_, err := io.WriteString(w, s)
	return err
}

func heldCases() []heldCase {
	n := strconv.Itoa(len(wholePlain))
	evil := changedToolsList
	prefix := `{"jsonrpc":"2.0","id":7,"result":{"`
	rest := strings.TrimPrefix(evil, prefix)
	set := func(w http.ResponseWriter, v ...string) {
		w.Header().Set("Content-Type", "application/json")
		if v != nil {
			w.Header()["Content-Length"] = v
		}
	}
	// late: next sets the upstream's session id, announces trailers or
	// not, writes pieces, then sets Set-Cookie and another session id as
	// reverse proxies copy trailers after the body.
	late := func(announce bool, pieces ...string) func(w http.ResponseWriter) []error {
		return func(w http.ResponseWriter) []error {
			set(w, n)
			w.Header().Set("Mcp-Session-Id", "upstream-raw-session")
			if announce {
				w.Header().Set("Trailer", "Set-Cookie, Mcp-Session-Id, X-After")
			}
			w.WriteHeader(200)
			var errs []error
			for _, p := range pieces {
				errs = append(errs, writeString(w, p))
			}
			w.Header().Add("Set-Cookie", "issuer_session=attacker; Path=/")
			w.Header().Add("Mcp-Session-Id", "upstream-raw-session-2")
			w.Header().Add("X-After", "1")
			return errs
		}
	}
	return []heldCase{
		{"whole", func(w http.ResponseWriter) []error { set(w, n); return []error{writeString(w, wholePlain)} }},
		{"plus sign", func(w http.ResponseWriter) []error { set(w, "+"+n); return []error{writeString(w, wholePlain)} }},
		{"leading space", func(w http.ResponseWriter) []error { set(w, " "+n); return []error{writeString(w, wholePlain)} }},
		{"leading zero", func(w http.ResponseWriter) []error { set(w, "0"+n); return []error{writeString(w, wholePlain)} }},
		{"duplicate values", func(w http.ResponseWriter) []error { set(w, n, n); return []error{writeString(w, wholePlain)} }},
		{"negative", func(w http.ResponseWriter) []error { set(w, "-1"); return []error{writeString(w, wholePlain)} }},
		{"huge", func(w http.ResponseWriter) []error {
			set(w, "9223372036854775807")
			return []error{writeString(w, wholePlain)}
		}},
		{"overflow", func(w http.ResponseWriter) []error {
			set(w, "99999999999999999999")
			return []error{writeString(w, wholePlain)}
		}},
		{"whole then tools list", func(w http.ResponseWriter) []error {
			set(w, n)
			return []error{writeString(w, wholePlain), writeString(w, evil)}
		}},
		{"prefix whole then rest with tools", func(w http.ResponseWriter) []error {
			set(w, strconv.Itoa(len(prefix)))
			return []error{writeString(w, prefix), writeString(w, rest)}
		}},
		{"CL grown after WriteHeader", func(w http.ResponseWriter) []error {
			set(w, n)
			w.WriteHeader(200)
			w.Header().Set("Content-Length", strconv.Itoa(len(wholePlain)+len(evil)))
			return []error{writeString(w, wholePlain), writeString(w, evil)}
		}},
		{"CL removed after WriteHeader", func(w http.ResponseWriter) []error {
			set(w, n)
			w.WriteHeader(200)
			w.Header().Del("Content-Length")
			return []error{writeString(w, wholePlain), writeString(w, evil)}
		}},
		{"CL shrunk after WriteHeader", func(w http.ResponseWriter) []error {
			set(w, n)
			w.WriteHeader(200)
			w.Header().Set("Content-Length", "5")
			return []error{writeString(w, wholePlain)}
		}},
		{"WriteHeader twice", func(w http.ResponseWriter) []error {
			set(w, n)
			w.WriteHeader(200)
			w.Header().Set("Content-Length", "3")
			w.WriteHeader(201)
			return []error{writeString(w, wholePlain), writeString(w, evil)}
		}},
		{"1xx first", func(w http.ResponseWriter) []error {
			set(w, strconv.Itoa(len(evil)))
			w.WriteHeader(103)
			w.Header().Set("Content-Length", n)
			w.WriteHeader(200)
			return []error{writeString(w, wholePlain), writeString(w, evil)}
		}},
		{"flush, empty writes", func(w http.ResponseWriter) []error {
			set(w, n)
			w.(http.Flusher).Flush()
			e1 := writeString(w, "")
			e2 := writeString(w, wholePlain)
			w.(http.Flusher).Flush()
			return []error{e1, e2, writeString(w, ""), writeString(w, evil)}
		}},
		{"201 whole", func(w http.ResponseWriter) []error {
			set(w, n)
			w.WriteHeader(201)
			return []error{writeString(w, wholePlain)}
		}},
		{"whole tools list", func(w http.ResponseWriter) []error {
			set(w, strconv.Itoa(len(evil)))
			return []error{writeString(w, evil)}
		}},
		{"session id and cookie set after write (trailer style)", late(true, wholePlain)},
		{"session id and cookie set after write, in parts, not announced", late(false, wholePlain[:10], wholePlain[10:])},
		{"session id and cookie set after write, in parts (held)", late(true, wholePlain[:10], wholePlain[10:])},
	}
}

var dateLine = regexp.MustCompile(`(?m)^Date: .*\r\n`)

// TestPinJSONAnswerWire: with pinning on, whatever next does with a JSON
// answer (Content-Length variants, changed after WriteHeader, a 1xx
// first, writes after the whole answer, an answer in parts, trailers set
// after the body as reverse proxies copy them), the bytes a client reads
// off the wire never hold a changed tool definition, an upstream
// Set-Cookie or the upstream's own session id.
func TestPinJSONAnswerWire(t *testing.T) {
	for _, tc := range heldCases() {
		t.Run(tc.name, func(t *testing.T) {
			g := pinnedReadFile(t)
			var errs []error
			var serveErr error
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				serveErr = g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
					errs = tc.next(w)
					return nil
				}))
			}))
			defer front.Close()
			body := toolCall("read_file")
			c, err := net.Dial("tcp", front.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
				front.Listener.Addr().String(), mint(t, claims()), len(body), body)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			raw, rerr := io.ReadAll(bufio.NewReader(c))
			out := dateLine.ReplaceAllString(string(raw), "")
			if rerr != nil || !strings.HasPrefix(out, "HTTP/1.1 ") {
				t.Fatalf("reading the answer: %v (writes %v, Serve %v):\n%s", rerr, errs, serveErr, out)
			}
			if strings.Contains(out, "evil.example") {
				t.Errorf("the changed definition reached the client:\n%s", out)
			}
			if strings.Contains(out, "issuer_session=attacker") || strings.Contains(out, "upstream-raw-session") {
				t.Errorf("an upstream Set-Cookie or raw session id reached the client:\n%s", out)
			}
		})
	}
}

// TestHeldAnswerTrailers: a held answer (pinning on, here one with
// trailers, so no Content-Length) is written after next returns, and
// httputil.ReverseProxy and Caddy's reverse_proxy copy the upstream's
// announced trailers into the header map after the body: trailers named
// Set-Cookie and Mcp-Session-Id must not reach the client as header
// fields (upstreamHeaders drops the one and wraps the other), nor at all.
func TestHeldAnswerTrailers(t *testing.T) {
	st := newPinnedStage(t)
	st.answerWith(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Trailer", "Set-Cookie, Mcp-Session-Id")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, wholePlain)
		w.Header().Set("Set-Cookie", "issuer_session=attacker; Path=/; HttpOnly")
		w.Header().Set("Mcp-Session-Id", "upstream-raw-session")
	})
	resp := st.h.do(t, st.call(http.MethodPost))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != wholePlain {
		t.Fatalf("answer = %d %s, want 200 %s", resp.StatusCode, body, wholePlain)
	}
	for _, h := range []http.Header{resp.Header, resp.Trailer} {
		if v := h.Values("Set-Cookie"); len(v) > 0 {
			t.Errorf("upstream Set-Cookie reached the client: %q", v)
		}
		if v := h.Values("Mcp-Session-Id"); len(v) > 0 {
			t.Errorf("the upstream's raw Mcp-Session-Id reached the client: %q", v)
		}
	}
}

// TestHeldAnswerTrailersToolsList: as TestHeldAnswerTrailers without
// pinning, on a tools/list answer (held to be filtered).
func TestHeldAnswerTrailersToolsList(t *testing.T) {
	cfg := testConfig(t)
	cfg.Tools = []Rule{{Pattern: "*", Scopes: []string{"tools:read"}}}
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Trailer", "Set-Cookie")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}`)
		w.Header().Set("Set-Cookie", "issuer_session=attacker; Path=/; HttpOnly")
	})
	resp := h.do(t, call{body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-06-18"}})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tools"`) {
		t.Fatalf("answer = %d %s, want 200 with the tools list", resp.StatusCode, body)
	}
	for _, h := range []http.Header{resp.Header, resp.Trailer} {
		if v := h.Values("Set-Cookie"); len(v) > 0 {
			t.Errorf("upstream Set-Cookie reached the client: %q", v)
		}
	}
}

// TestPassedAnswerTrailers: the upstream's trailers are not forwarded on
// an answer the gateway passes either (no pinning, a tools/call):
// announced ones not at all, and of those not announced (copied under
// http.TrailerPrefix) not Set-Cookie or Mcp-Session-Id.
func TestPassedAnswerTrailers(t *testing.T) {
	for _, announce := range []bool{true, false} {
		cfg := testConfig(t)
		cfg.Tools = []Rule{{Pattern: "*", Scopes: []string{"tools:read"}}}
		h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			prefix := http.TrailerPrefix
			if announce {
				w.Header().Set("Trailer", "Set-Cookie, Mcp-Session-Id, X-Upstream")
				prefix = ""
			}
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, wholePlain)
			w.(http.Flusher).Flush() // chunked, so trailers can be sent
			w.Header().Set(prefix+"Set-Cookie", "issuer_session=attacker; Path=/; HttpOnly")
			w.Header().Set(prefix+"Mcp-Session-Id", "upstream-raw-session")
			w.Header().Set(prefix+"X-Upstream", "1")
		})
		resp := h.do(t, call{body: toolCall("read_file"), token: mint(t, claims()), headers: map[string]string{"MCP-Protocol-Version": "2025-06-18"}})
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != wholePlain {
			t.Fatalf("announced %v: answer = %d %s, want 200 %s", announce, resp.StatusCode, body, wholePlain)
		}
		for _, h := range []http.Header{resp.Header, resp.Trailer} {
			for _, k := range []string{"Set-Cookie", "Mcp-Session-Id"} {
				if v := h.Values(k); len(v) > 0 {
					t.Errorf("announced %v: the upstream's %s reached the client: %q", announce, k, v)
				}
			}
		}
		if v := resp.Trailer.Get("X-Upstream"); announce && v != "" {
			t.Errorf("an announced upstream trailer was forwarded: X-Upstream %q", v)
		}
	}
}

// TestHeldCountsCapacity: a held answer is counted in held by the
// memory its buffer takes, not by the bytes it holds: bytes.Buffer
// doubles its capacity as it grows, so counting length let the
// process's held answers take up to about twice maxHeldBytes.
func TestHeldCountsCapacity(t *testing.T) {
	g := newGateway(t, testConfig(t))
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_a","description":"` + strings.Repeat("a", 300<<10) + `"}]}}`
	writes := 0
	w := serveDirect(t, g, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		for rest := list; rest != ""; writes++ {
			n := min(len(rest), 10<<10+1) // not a power of two
			if _, err := io.WriteString(w, rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
			if held, c := g.held.bytes(), w.(*responseWriter).buf.Cap(); held < int64(c) {
				t.Fatalf("after %d bytes: held %d, want at least the buffer's capacity %d", len(list)-len(rest), held, c)
			}
		}
		return nil
	})
	if w.Code != http.StatusOK || writes < 2 {
		t.Errorf("answer = %d after %d writes, want 200", w.Code, writes)
	}
}
