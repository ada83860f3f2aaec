package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// BenchmarkClassify: a small tools/call from bytes to a policy decision.
func BenchmarkClassify(b *testing.B) {
	benchmarkClassify(b, testConfig(b))
}

// BenchmarkClassifyArgs: as BenchmarkClassify, with two argument rules on
// the tool (a prefix with a token placeholder, a length), which read the
// arguments the parse already delimited.
func BenchmarkClassifyArgs(b *testing.B) {
	cfg := testConfig(b)
	for i := range cfg.Tools {
		if cfg.Tools[i].Pattern == "read_*" {
			cfg.Tools[i].Args = []ArgRule{
				{Pointer: "/path", Predicate: "prefix", Values: []string{"/etc/", "/home/{token.sub}/"}},
				{Pointer: "/path", Predicate: "max_length", Values: []string{"4096"}},
			}
		}
	}
	benchmarkClassify(b, cfg)
}

func benchmarkClassify(b *testing.B, cfg Config) {
	g := newGateway(b, cfg)
	p, aerr := g.authenticate(b.Context(), nil, mint(b, claims()), g.now())
	if aerr != nil {
		b.Fatal(aerr)
	}
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/motd"}}}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		msgs, _, err := mcpparse.Parse(body, mcpparse.Limits{})
		if err != nil {
			b.Fatal(err)
		}
		d, err := g.policy.decide(p, &msgs[0], rev20250326)
		if err != nil || !d.allow {
			b.Fatal(d, err)
		}
	}
}

// nopWriter is a ResponseWriter that keeps nothing. It flushes and
// takes write deadlines, as the writer Caddy hands the gateway does
// (net/http's, through Caddy's wrappers): without them every flush of an
// event stream and every held answer's deadline made an error
// (http.ResponseController's errNotSupported), which production never
// makes, and the benchmarks counted its allocations.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header              { return w.h }
func (w *nopWriter) Write(b []byte) (int, error)      { return len(b), nil }
func (w *nopWriter) WriteHeader(int)                  {}
func (w *nopWriter) Flush()                           {}
func (w *nopWriter) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkServe: the full Serve path with a cached token and a no-op
// upstream, audit events off.
func BenchmarkServe(b *testing.B) {
	benchmarkServe(b, testConfig(b), "Bearer "+mint(b, claims()), nil)
}

// BenchmarkServeDPoP: as BenchmarkServe, with a DPoP-bound token and a
// fresh ES256 proof per request (made before the timer starts: signing
// is the client's cost). The difference to BenchmarkServe is the
// gateway's cost of DPoP.
func BenchmarkServeDPoP(b *testing.B) {
	k := newDPoPKey(b)
	token := boundToken(b, k.jkt)
	proofs := make([]string, b.N)
	for i := range proofs {
		proofs[i] = k.proof(b, http.MethodPost, testResource, token, nil)
	}
	benchmarkServe(b, testConfig(b), "DPoP "+token, proofs)
}

// BenchmarkServeAudit: as BenchmarkServe, with audit events JSON-encoded
// (as Caddy's default log encoder does) to a discarding writer.
func BenchmarkServeAudit(b *testing.B) {
	cfg := testConfig(b)
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	cfg.AuditLogger = zap.New(zapcore.NewCore(enc, zapcore.AddSync(io.Discard), zap.InfoLevel))
	cfg.RequestID = func(*http.Request) string { return "0b6a4e4e-2f1c-4f7e-9d0a-3c2b1a0f9e8d" }
	benchmarkServe(b, cfg, "Bearer "+mint(b, claims()), nil)
}

// benchmarkServe sends authorization (an Authorization value) and, when
// proofs is set, proofs[i] as the DPoP header of the i-th request.
func benchmarkServe(b *testing.B, cfg Config, authorization string, proofs []string) {
	benchmarkServeWith(b, newGateway(b, cfg), authorization, proofs)
}

func benchmarkServeWith(b *testing.B, g *Gateway, authorization string, proofs []string) {
	benchmarkServeAnswer(b, g, authorization, proofs, "application/json", []byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`))
}

// benchmarkServeAnswer is benchmarkServeWith with the upstream answering
// answer as contentType.
func benchmarkServeAnswer(b *testing.B, g *Gateway, authorization string, proofs []string, contentType string, answer []byte) {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/motd"}}}`)
	benchmarkServeBody(b, g, authorization, proofs, body, map[string]string{"Mcp-Protocol-Version": "2025-11-25"}, contentType, answer)
}

// BenchmarkServe2026: as BenchmarkServe, a stateless 2026-07-28
// tools/call (Mcp-Method, Mcp-Name, the _meta protocol version) that does
// not declare the Tasks extension.
func BenchmarkServe2026(b *testing.B) {
	benchmarkServe2026(b, meta2026)
}

// BenchmarkServe2026Tasks: as BenchmarkServe2026, declaring the Tasks
// extension, so the answer is read for a task id to wrap.
func BenchmarkServe2026Tasks(b *testing.B) {
	benchmarkServe2026(b, meta2026Tasks)
}

// BenchmarkServe2026SSE: as BenchmarkServe2026, answered with an event
// stream (the Python and TypeScript SDK servers' default), which is read
// for a request state to wrap; without resource rules, as the load test
// configures the gateway.
func BenchmarkServe2026SSE(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/motd"},` + meta2026 + `}}`)
	benchmarkServeBody(b, newGateway(b, unreadConfig(b)), "Bearer "+mint(b, claims()), nil, body,
		map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_file"},
		"text/event-stream", []byte("event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[]}}\n\n"))
}

// BenchmarkServe2026Escaped: as BenchmarkServe2026, the answer a 4 KiB
// text with the escapes Go's encoding/json writes for < > &, which spell
// no requestState: it passes unparsed.
func BenchmarkServe2026Escaped(b *testing.B) {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/motd"},` + meta2026 + `}}`)
	text := strings.Repeat(`\u003cp\u003eTom \u0026 Jerry\u003c/p\u003e `, 4<<10/40)
	benchmarkServeBody(b, newGateway(b, testConfig(b)), "Bearer "+mint(b, claims()), nil, body,
		map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_file"},
		"application/json", []byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"`+text+`"}]}}`))
}

func benchmarkServe2026(b *testing.B, meta string) {
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/motd"},` + meta + `}}`)
	benchmarkServeBody(b, newGateway(b, testConfig(b)), "Bearer "+mint(b, claims()), nil, body,
		map[string]string{"Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "read_file"},
		"application/json", []byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`))
}

func benchmarkServeBody(b *testing.B, g *Gateway, authorization string, proofs []string, body []byte, headers map[string]string, contentType string, answer []byte) {
	answerLength := strconv.Itoa(len(answer))
	next := NextFunc(func(w http.ResponseWriter, r *http.Request) error {
		// As reverse_proxy passes a small answer: its headers, then its
		// body in one write.
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", answerLength)
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(answer)
		_ = w.Header() // reverse_proxy copies the upstream's trailers (none) into it
		return err
	})
	req := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", authorization)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("User-Agent", "Go-http-client/1.1")
	req.Header.Set("Content-Length", strconv.Itoa(len(body)))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	cpu := processCPU()
	for i := 0; i < b.N; i++ {
		r := req.Clone(req.Context())
		r.Body = readCloser{bytes.NewReader(body)}
		r.ContentLength = int64(len(body))
		if proofs != nil {
			r.Header.Set("DPoP", proofs[i])
		}
		w := &nopWriter{h: http.Header{}}
		g.Serve(w, r, next)
		if w.h.Get("WWW-Authenticate") != "" {
			b.Fatalf("request %d refused: %s", i, w.h.Values("WWW-Authenticate"))
		}
	}
	b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// decideInputs are a cached token's principal and a parsed tools/call.
func decideInputs(tb testing.TB) (*Gateway, *principal, *mcpparse.Message) {
	g := newGateway(tb, testConfig(tb))
	p, aerr := g.authenticate(tb.Context(), nil, mint(tb, claims()), g.now())
	if aerr != nil {
		tb.Fatal(aerr)
	}
	msgs, _, err := mcpparse.Parse([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/motd"}}}`), mcpparse.Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	return g, p, &msgs[0]
}

// BenchmarkDecide: the policy decision alone, for a cached token.
func BenchmarkDecide(b *testing.B) {
	g, p, m := decideInputs(b)
	b.ReportAllocs()
	for b.Loop() {
		if d, err := g.policy.decide(p, m, rev20250326); err != nil || !d.allow {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkAuthenticateCached: bearer token to principal, from the
// claims cache.
func BenchmarkAuthenticateCached(b *testing.B) {
	g := newGateway(b, testConfig(b))
	token := mint(b, claims())
	b.ReportAllocs()
	for b.Loop() {
		if _, aerr := g.authenticate(b.Context(), nil, token, g.now()); aerr != nil {
			b.Fatal(aerr)
		}
	}
}

// BenchmarkBearerToken: the Authorization header to a token, its
// syntax checked.
func BenchmarkBearerToken(b *testing.B) {
	r := bearerRequest(mint(b, claims()))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, aerr := bearerToken(r); aerr != nil {
			b.Fatal(aerr)
		}
	}
}

func bearerRequest(token string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

// TestHotPathAllocations: the policy decision, the claims-cache hit and
// reading the bearer token allocate nothing (part of the design:
// per-request garbage is CPU).
func TestHotPathAllocations(t *testing.T) {
	g, p, m := decideInputs(t)
	token := mint(t, claims())
	r := bearerRequest(token)
	for name, f := range map[string]func(){
		"decide":                func() { g.policy.decide(p, m, rev20250326) },
		"authenticate (cached)": func() { g.authenticate(t.Context(), nil, token, g.now()) },
		"bearer token":          func() { bearerToken(r) },
	} {
		if n := testing.AllocsPerRun(100, f); n != 0 {
			t.Errorf("%s: %v allocations per run, want 0", name, n)
		}
	}
}

// BenchmarkUnwrapSession: a client's session id checked against its
// principal (every request of a 2025 session).
func BenchmarkUnwrapSession(b *testing.B) {
	g, p, _ := decideInputs(b)
	wrapped, err := g.wrapSession(p, "3f2a9c1e-5b7d-4e8f-a1c2-9d0e8b7a6c5f")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := g.unwrapSession(p, wrapped); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSessionMemo: the remembered session id answers exactly as the MAC
// would: only the same id passes for the same principal at the same
// gateway, and a tampered, another principal's or another gateway's id
// is still refused after a valid one was remembered.
func TestSessionMemo(t *testing.T) {
	cfg := testConfig(t)
	g := newGateway(t, cfg)
	alice := &principal{issuer: testIssuer, subject: "alice", clientID: "c"}
	bob := &principal{issuer: testIssuer, subject: "bob", clientID: "c"}
	w, err := g.wrapSession(alice, "s1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second round answers from the memo
		if up, err := g.unwrapSession(alice, w); err != nil || up != "s1" {
			t.Fatalf("round %d: unwrapSession = %q, %v, want s1", i, up, err)
		}
	}
	tampered := []byte(w)
	tampered[len(tampered)/2] ^= 1
	if _, err := g.unwrapSession(alice, string(tampered)); err == nil {
		t.Error("a tampered id passed after the valid one was remembered")
	}
	if _, err := g.unwrapSession(bob, w); err == nil {
		t.Error("alice's session id passed for bob")
	}
	cfg.SessionKey = []byte(strings.Repeat("x", 32))
	if _, err := newGateway(t, cfg).unwrapSession(alice, w); err == nil {
		t.Error("a session id remembered by one gateway passed at a gateway with another key")
	}
	// Wrapping answers from the memo only for the same upstream id.
	w2, err := g.wrapSession(alice, "s2")
	if err != nil || w2 == w {
		t.Fatalf("wrapSession(s2) = %q, %v; want a new id", w2, err)
	}
	if up, err := g.unwrapSession(alice, w); err != nil || up != "s1" {
		t.Errorf("the first session after a second one = %q, %v, want s1", up, err)
	}
	if again, _ := g.wrapSession(alice, "s1"); again != w {
		t.Errorf("wrapSession(s1) again = %q, want %q (deterministic)", again, w)
	}
}

// usualFields are the request header fields an SDK client and a proxy in
// front send.
var usualFields = []string{"Accept", "Accept-Encoding", "Authorization", "Content-Length", "Content-Type", "Mcp-Method", "Mcp-Name",
	"Mcp-Protocol-Version", "Mcp-Session-Id", "User-Agent", "X-Forwarded-For", "X-Forwarded-Proto", "Traceparent"}

// BenchmarkClientHeaderRule: the rule lookup editHeader makes for each
// field of a request, over usualFields.
func BenchmarkClientHeaderRule(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		for _, name := range usualFields {
			clientHeaderRule(name)
		}
	}
}

// TestClientHeaderRuleCandidates: the rule lookup compares each of
// usualFields, in any case, with at most one other rule's name than its
// own (part of the design: it runs for every field of every request,
// and each comparison is an EqualFold).
func TestClientHeaderRuleCandidates(t *testing.T) {
	for _, name := range usualFields {
		for _, spelling := range []string{name, strings.ToLower(name)} {
			others := 0
			for _, i := range clientHeaderRulesByLen.of(lenLastSlot(spelling)) {
				if !strings.EqualFold(clientHeaderRules[i].name, spelling) {
					others++
				}
			}
			if others > 1 {
				t.Errorf("clientHeaderRule(%q) compares %d other rules' names, want at most 1", spelling, others)
			}
		}
	}
}

// TestClientHeaderRule: a header name in any ASCII case gets the rule of
// its canonical form, and a name that only looks like one (non-ASCII
// letters that fold to ASCII ones) gets none.
func TestClientHeaderRule(t *testing.T) {
	longest := 0
	for _, r := range clientHeaderRules {
		longest = max(longest, len(r.name))
	}
	if longest != maxClientHeaderRuleName {
		t.Errorf("the longest rule name has %d bytes, maxClientHeaderRuleName is %d", longest, maxClientHeaderRuleName)
	}
	for _, r := range clientHeaderRules {
		for _, name := range []string{r.name, strings.ToLower(r.name), strings.ToUpper(r.name), swapCase(r.name)} {
			if got := clientHeaderRule(name); got != r.rule {
				t.Errorf("clientHeaderRule(%q) = %v, want %v", name, got, r.rule)
			}
			if canon := http.CanonicalHeaderKey(name); canon != r.name {
				t.Fatalf("test table: %q canonicalizes to %q", name, canon)
			}
		}
	}
	for _, name := range []string{"Coo\u212aie", "Authori\u017Fation", "Mcp-Se\u017F\u017Fion-Id", "Authorization ", "X-Mcp-Subjects", "X-Http-Method-Overrides", strings.Repeat("x", 1000), "Accept", "Content-Type", ""} {
		if got := clientHeaderRule(name); got != headerForward {
			t.Errorf("clientHeaderRule(%q) = %v, want headerForward", name, got)
		}
	}
}

// TestHeaderIndexes: each slot of the two indexes every request field is
// looked up in lists exactly the entries filed under it, in table order,
// and both indexes stay small (part of the design: a lookup per field of
// every request touches them, and a 24 KB table of slice headers cost a
// cache miss per field in a busy process).
func TestHeaderIndexes(t *testing.T) {
	for _, c := range []struct {
		name  string
		index *slotIndex
		slots int
		n     int
		slot  func(int) int
	}{
		{"clientHeaderRulesByLen", &clientHeaderRulesByLen, (maxClientHeaderRuleName + 1) * 32, len(clientHeaderRules), func(i int) int { return lenLastSlot(clientHeaderRules[i].name) }},
		{"identityPrefixesByInitials", &identityPrefixesByInitials, 32 * 32, len(identityPrefixes), func(i int) int { return initialsSlot(identityPrefixes[i]) }},
	} {
		for s := range c.slots {
			var want []uint8
			for i := range c.n {
				if c.slot(i) == s {
					want = append(want, uint8(i))
				}
			}
			if got := c.index.of(s); !slices.Equal(got, want) {
				t.Errorf("%s.of(%d) = %v, want %v", c.name, s, got, want)
			}
		}
		if size := len(c.index.start) + len(c.index.at); size > 1200 {
			t.Errorf("%s takes %d bytes, want at most 1200", c.name, size)
		}
	}
}

func swapCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'a' <= c && c <= 'z':
			b[i] = c - 32
		case 'A' <= c && c <= 'Z':
			b[i] = c + 32
		}
	}
	return string(b)
}

// BenchmarkServeSession: BenchmarkServe as the load test's requests are
// served by Caddy: in a 2025-11-25 session bound to the token, with a
// revocation source (so the upstream request can be ended, see
// streamSet) and the headers an SDK client sends.
func BenchmarkServeSession(b *testing.B) {
	cfg := testConfig(b)
	cfg.Revocations = revocationSet{}
	g := newGateway(b, cfg)
	token := mint(b, claims())
	p, aerr := g.authenticate(b.Context(), nil, token, g.now())
	if aerr != nil {
		b.Fatal(aerr)
	}
	wrapped, err := g.wrapSession(p, "3f2a9c1e-5b7d-4e8f-a1c2-9d0e8b7a6c5f")
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/motd"}}}`)
	benchmarkServeBody(b, g, "Bearer "+token, nil, body,
		map[string]string{"Mcp-Protocol-Version": "2025-11-25", "Mcp-Session-Id": wrapped},
		"application/json", []byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`))
}

// TestHeaderNamesCanonical: the names read from the header map directly
// are in the form net/http stores them.
func TestHeaderNamesCanonical(t *testing.T) {
	for _, name := range []string{hAuthorization, hConnection, hContentEncoding, hContentType, hLastEventID, hOrigin, hProtocolVersion, hSessionID, hUpgrade, dpopHeaderKey} {
		if c := http.CanonicalHeaderKey(name); c != name {
			t.Errorf("%q is not canonical (%q)", name, c)
		}
	}
	for _, name := range setNames {
		if c := http.CanonicalHeaderKey(name); c != name {
			t.Errorf("setNames: %q is not canonical (%q)", name, c)
		}
	}
}

// BenchmarkAnswerHeaderFix: what upstreamHeaders and recheckHeader, the
// edits of every answer's header, cost a usual one (the fields Caddy's
// reverse_proxy passes for a small JSON answer).
func BenchmarkAnswerHeaderFix(b *testing.B) {
	x := &exchange{r: httptest.NewRequest(http.MethodPost, "/mcp", nil)}
	h := http.Header{"Content-Type": {"application/json"}, "Content-Length": {"48"}, "Date": {"Mon, 07 Dec 2026 18:00:00 GMT"}}
	x.rw = responseWriter{w: &nopWriter{h: h}, x: x}
	b.ReportAllocs()
	for b.Loop() {
		x.rw.upstreamHeaders()
		x.rw.recheckHeader()
	}
}
