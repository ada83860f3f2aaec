package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// lockedRevocations is a Revocations the test changes while the
// gateway's stream checker reads it.
type lockedRevocations struct {
	mu     sync.Mutex
	grants map[string]bool
}

func (s *lockedRevocations) Revoked(_ context.Context, _, grantID string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants[grantID], nil
}

func (s *lockedRevocations) revoke(grantID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[grantID] = true
}

// streamUpstream is an upstream that answers every request with an
// event stream open until the request is cancelled.
type streamUpstream struct {
	key   func(*http.Request) string // names a request's stream
	mu    sync.Mutex
	ended map[string]chan struct{} // closed when the stream's request ends
}

func newStreamUpstream(key func(*http.Request) string) *streamUpstream {
	return &streamUpstream{key: key, ended: map[string]chan struct{}{}}
}

func (s *streamUpstream) serve(w http.ResponseWriter, r *http.Request) {
	done := make(chan struct{})
	s.mu.Lock()
	s.ended[s.key(r)] = done
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, ": open\n\n")
	w.(http.Flusher).Flush()
	<-r.Context().Done()
	close(done)
}

// done is closed when the stream named key has ended.
func (s *streamUpstream) done(key string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended[key]
}

// TestRevocationClosesStreams: revoking a grant ends that principal's
// open GET stream and SSE answer within the check interval (the
// upstream request is cancelled, the client's stream ends), and leaves
// another principal's stream open; the checker ends with the last stream.
func TestRevocationClosesStreams(t *testing.T) {
	cfg := testConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	cfg.AuditDenialsOnly = true // streams ended by the gateway are logged all the same
	up := newStreamUpstream(func(r *http.Request) string { return r.Method + " " + r.Header.Get("X-Test-Stream") })
	h := newHarness(t, cfg, up.serve)
	token := func(sub, grant string) string {
		c := claims()
		c["sub"], c["gid"], c["jti"] = sub, grant, sub+"-jti"
		return mint(t, c)
	}
	alice, bob := token("alice", "grant-alice"), token("bob", "grant-bob")
	type stream struct {
		key  string
		resp *http.Response
	}
	open := func(method, name, tok string) stream {
		t.Helper()
		c := call{method: method, token: tok, headers: map[string]string{"X-Test-Stream": name, "Mcp-Protocol-Version": "2025-11-25"}}
		if method == http.MethodPost {
			c.body = toolCall("read_a")
		} else {
			c.headers["Mcp-Session-Id"] = sessionFor(t, h.g, tok)
		}
		resp := h.do(t, c)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: status = %d, want 200: %s", method, name, resp.StatusCode, readBody(t, resp))
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, ": open") {
			t.Fatalf("%s %s: first line = %q, %v, want the upstream's comment", method, name, line, err)
		}
		return stream{method + " " + name, resp}
	}
	aliceGet := open(http.MethodGet, "alice-get", alice)
	alicePost := open(http.MethodPost, "alice-post", alice)
	bobGet := open(http.MethodGet, "bob-get", bob)
	if n := h.g.streams.len(); n != 3 {
		t.Fatalf("open streams = %d, want 3", n)
	}

	revs.revoke("grant-alice")
	for _, s := range []stream{aliceGet, alicePost} {
		select {
		case <-up.done(s.key):
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: upstream request still open 5 s after its grant was revoked", s.key)
		}
		finished := make(chan struct{})
		go func() { io.Copy(io.Discard, s.resp.Body); close(finished) }()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: client stream still open 5 s after its grant was revoked", s.key)
		}
		s.resp.Body.Close()
	}
	bobDone := up.done(bobGet.key)
	select {
	case <-bobDone:
		t.Fatal("bob's stream was closed by the revocation of alice's grant")
	case <-time.After(100 * time.Millisecond):
	}
	bobGet.resp.Body.Close()
	<-bobDone
	h.g.streams.waitIdle()
	if n := h.g.streams.len(); n != 0 {
		t.Errorf("open streams after all ended = %d, want 0", n)
	}
	// The two streams the revocation ended are audited with why (their
	// answers had begun: status 200), bob's, which he closed, is not.
	var ended []string
	for _, ev := range h.logs.FilterMessage(auditMessage).All() {
		m := ev.ContextMap()
		if m["principal"] != "alice" || m["reason"] != "the access token has been revoked" || m["status"] != int64(http.StatusOK) {
			t.Errorf("audit event %v, want alice's streams ended by the revocation", m)
		}
		ended = append(ended, fmt.Sprint(m["method"]))
	}
	if len(ended) != 2 {
		t.Errorf("audit events for %v, want alice's GET stream and tools/call", ended)
	}
}

// TestStreamsEndAtExpiry: without any revocation source (a gateway that
// verifies a remote issuer's JWTs) an event stream still ends once the
// token it was authorized with expires, within the check interval; a
// stream whose token lives on stays open.
func TestStreamsEndAtExpiry(t *testing.T) {
	var clock atomic.Int64 // seconds after testNow
	cfg := testConfig(t)
	cfg.Now = func() time.Time { return testNow.Add(time.Duration(clock.Load()) * time.Second) }
	cfg.StreamCheckInterval = 10 * time.Millisecond
	up := newStreamUpstream(func(r *http.Request) string { return r.Method + " " + r.Header.Get("X-Mcp-Subject") })
	cfg.ForwardIdentity = true
	h := newHarness(t, cfg, up.serve)
	open := func(sub string, ttl time.Duration) *http.Response {
		c := claims()
		c["sub"], c["jti"], c["exp"] = sub, sub+"-jti", testNow.Add(ttl).Unix()
		tok := mint(t, c)
		resp := h.do(t, call{method: http.MethodGet, token: tok, headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sessionFor(t, h.g, tok)}})
		if line, _ := bufio.NewReader(resp.Body).ReadString('\n'); !strings.HasPrefix(line, ": open") {
			t.Fatalf("%s: first line %q", sub, line)
		}
		return resp
	}
	short, long := open("alice", time.Minute), open("bob", time.Hour)
	defer short.Body.Close()
	defer long.Body.Close()
	clock.Store(59)
	select {
	case <-up.done("GET alice"):
		t.Fatal("alice's stream ended before her token expired")
	case <-time.After(100 * time.Millisecond):
	}
	clock.Store(60)
	select {
	case <-up.done("GET alice"):
	case <-time.After(5 * time.Second):
		t.Fatal("alice's stream still open 5 s after her token expired")
	}
	select {
	case <-up.done("GET bob"):
		t.Fatal("bob's stream ended with alice's token")
	case <-time.After(100 * time.Millisecond):
	}
}

// TestCloseEndsStreams: Close (the configuration is unloaded) ends every
// open GET stream at once, and any that opens after it, but not a tool
// call's answer in progress.
func TestCloseEndsStreams(t *testing.T) {
	cfg := testConfig(t)
	cfg.StreamCheckInterval = time.Hour // no check would end them
	up := newStreamUpstream(func(r *http.Request) string { return r.Header.Get("X-Mcp-Subject") })
	cfg.ForwardIdentity = true
	h := newHarness(t, cfg, up.serve)
	get := func(sub string) *http.Response {
		c := claims()
		c["sub"], c["jti"] = sub, sub+"-jti"
		tok := mint(t, c)
		return h.do(t, call{method: http.MethodGet, token: tok, headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sessionFor(t, h.g, tok)}})
	}
	before := get("alice")
	defer before.Body.Close()
	if line, _ := bufio.NewReader(before.Body).ReadString('\n'); !strings.HasPrefix(line, ": open") {
		t.Fatalf("first line %q", line)
	}
	// A tool call's event-stream answer runs on to its end (cutting it
	// would lose the result); expiry and revocations still end it.
	c := claims()
	c["sub"], c["jti"] = "carol", "carol-jti"
	answer := h.do(t, call{token: mint(t, c), body: toolCall("read_a"), headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25"}})
	defer answer.Body.Close()
	h.g.Close()
	select {
	case <-up.done("carol"):
		t.Error("a tool call's event-stream answer was cut by Close")
	case <-time.After(100 * time.Millisecond):
	}
	select {
	case <-up.done("alice"):
	case <-time.After(5 * time.Second):
		t.Fatal("alice's stream still open 5 s after Close")
	}
	// One opened after Close is not even sent upstream.
	after := get("bob")
	ended := make(chan struct{})
	go func() { io.ReadAll(after.Body); close(ended) }()
	select {
	case <-ended:
	case <-up.done("bob"):
	case <-time.After(5 * time.Second):
		t.Fatal("bob's stream, opened after Close, still open 5 s later")
	}
	after.Body.Close()
	if _, err := io.ReadAll(before.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("client stream after Close: %v", err)
	}
	if n := h.g.streams.len(); n != 1 {
		t.Errorf("open streams after Close = %d, want 1 (the answer)", n)
	}
}

// TestMediaType: mediaType reads every Content-Type as
// mime.ParseMediaType does, the values it answers without parsing
// included (TestMediaTypeAllocations: without allocating).
func TestMediaType(t *testing.T) {
	for _, ct := range []string{
		"application/json", "text/event-stream", "Application/JSON",
		"application/json; charset=utf-8", "application/json ", " application/json",
		"text/event-stream;", "text/event-stream; x", "application/json,text/html",
		"application/jsonx", "application/", "", ";", "text/plain",
	} {
		want, _, _ := mime.ParseMediaType(ct)
		if got := mediaType(ct); got != want {
			t.Errorf("mediaType(%q) = %q, want %q", ct, got, want)
		}
	}
}

func TestIsEventStream(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/event-stream":                true,
		"Text/Event-Stream; charset=utf-8": true,
		" text/event-stream":               true,
		"text/event-stream ;x=y":           true,
		"text/event-streamx":               false,
		"text/event":                       false,
		"application/json":                 false,
		"":                                 false,
	} {
		if got := isEventStream(ct); got != want {
			t.Errorf("isEventStream(%q) = %v, want %v", ct, got, want)
		}
	}
}

// TestRevocationClosesStreamsAnyStatus: an event stream is registered and
// ended when its grant is revoked whatever its status (a 205, read by the
// Python and Go SDKs; an unfollowed 3xx, Python SDK; an error answer) and
// however loosely its type names one, and a GET's whatever its type.
func TestRevocationClosesStreamsAnyStatus(t *testing.T) {
	for _, tt := range []struct {
		method string
		status int
		ct     string // "-": none
	}{
		{http.MethodPost, http.StatusResetContent, "text/event-stream"},
		{http.MethodPost, http.StatusMultipleChoices, "text/event-stream"},
		{http.MethodPost, http.StatusInternalServerError, "text/event-stream"},
		// Types clients read as a stream (Python SDK: by prefix;
		// httpx-sse and the TypeScript SDK: anywhere).
		{http.MethodPost, http.StatusOK, "text/event-streamx"},
		{http.MethodPost, http.StatusOK, "text/event-stream,x"},
		// A GET's answer is read as events whatever its type
		// (TypeScript SDK).
		{http.MethodGet, http.StatusOK, "-"},
		{http.MethodGet, http.StatusOK, "text/plain"},
		{http.MethodGet, http.StatusOK, "application/octet-stream"},
	} {
		status := tt.status
		cfg := unreadConfig(t)
		revs := &lockedRevocations{grants: map[string]bool{}}
		cfg.Revocations = revs
		cfg.StreamCheckInterval = 10 * time.Millisecond
		ended := make(chan struct{})
		h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
			if tt.ct == "-" {
				w.Header()["Content-Type"] = nil // no sniffing
			} else {
				w.Header().Set("Content-Type", tt.ct)
			}
			w.WriteHeader(status)
			io.WriteString(w, ": open\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			close(ended)
		})
		c := claims()
		c["sub"], c["gid"], c["jti"] = "alice", "grant-alice", "alice-jti"
		req := call{token: mint(t, c), body: toolCall("read_a"), headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25"}}
		if tt.method == http.MethodGet {
			req = call{method: http.MethodGet, token: req.token, headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sessionFor(t, h.g, req.token)}}
		}
		resp := h.do(t, req)
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		if !strings.HasPrefix(line, ": open") {
			t.Fatalf("%s %d %s: first line %q", tt.method, status, tt.ct, line)
		}
		revs.revoke("grant-alice")
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Errorf("%s %d, %s: stream still open 5 s after its grant was revoked (registered streams: %d)", tt.method, status, tt.ct, h.g.streams.len())
		}
		resp.Body.Close()
		<-ended
	}
}

// TestCloseGraceEndsAnswers: after Close, a tool call's event-stream
// answer runs on for closeGrace at most, even with no revocation source
// (a remote issuer's JWTs) to go stale (review s11-fresh2 F4).
func TestCloseGraceEndsAnswers(t *testing.T) {
	var clock atomic.Int64 // seconds after testNow
	cfg := testConfig(t)
	cfg.Now = func() time.Time { return testNow.Add(time.Duration(clock.Load()) * time.Second) }
	cfg.StreamCheckInterval = 10 * time.Millisecond
	cfg.ForwardIdentity = true
	up := newStreamUpstream(func(r *http.Request) string { return r.Header.Get("X-Mcp-Subject") })
	h := newHarness(t, cfg, up.serve)
	c := claims()
	c["sub"], c["jti"] = "carol", "carol-jti"
	answer := h.do(t, call{token: mint(t, c), body: toolCall("read_a"), headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25"}})
	defer answer.Body.Close()
	h.g.Close()
	clock.Store(int64(closeGrace/time.Second) - 1)
	select {
	case <-up.done("carol"):
		t.Fatal("the answer ended before the grace ran out")
	case <-time.After(100 * time.Millisecond):
	}
	clock.Store(int64(closeGrace / time.Second))
	select {
	case <-up.done("carol"):
	case <-time.After(5 * time.Second):
		t.Fatal("the answer still runs 5 s after the grace ran out")
	}
}

// TestRevocationEndsPendingCall (review s15-gateway F2): a tools/call
// whose upstream has not answered yet (a server in JSON-response mode,
// such as the Go SDK's JSONResponse or the TypeScript SDK's
// enableJsonResponse, writes nothing until the tool is done) ends when
// its grant is revoked, as an event-stream answer does: the upstream
// request is cancelled (the tool's context ends), and the revoked client
// gets no result.
func TestRevocationEndsPendingCall(t *testing.T) {
	// A DPoP request's refusal is told in the DPoP challenge, as a new
	// request's would be (TestDPoPTokenErrorInItsScheme).
	for _, scheme := range []string{"Bearer", "DPoP"} {
		t.Run(scheme, func(t *testing.T) { revocationEndsPendingCall(t, scheme) })
	}
}

func revocationEndsPendingCall(t *testing.T, scheme string) {
	cfg := testConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	m := &countingMetrics{counts: map[string]int{}}
	cfg.Metrics = m
	tool := newSlowTool("done after revocation")
	h := newHarness(t, cfg, tool.serve)
	c := claims()
	c["gid"] = "grant-alice"
	var got <-chan slowResult
	if scheme == "DPoP" {
		alice := newDPoPKey(t)
		c["cnf"] = map[string]any{"jkt": alice.jkt}
		token := mint(t, c)
		call := dpopCall(token, alice.proof(t, http.MethodPost, testResource, token, nil))
		call.body = toolCall("read_a")
		call.headers["Mcp-Protocol-Version"] = "2025-11-25"
		got = slowTry(h, call)
	} else {
		got = slowCall(h, mint(t, c))
	}
	select {
	case <-tool.started:
	case <-time.After(5 * time.Second):
		t.Fatal("the call did not reach the upstream")
	}
	revs.revoke("grant-alice")
	select {
	case <-tool.cancelled:
	case <-time.After(2 * time.Second):
		t.Fatal("upstream request still running 2 s after its grant was revoked")
	}
	// The client gets what a new request with the token gets, not the
	// proxy's error for a cancelled request (Caddy's 499, httputil's
	// 502): a 401 invalid_token with the call's id, in the challenge of
	// the request's scheme.
	r := <-got
	var inScheme, elsewhere bool
	for _, v := range r.header.Values("WWW-Authenticate") {
		has := strings.Contains(v, `error="invalid_token"`)
		inScheme = inScheme || has && strings.HasPrefix(v, scheme+" ")
		elsewhere = elsewhere || has && !strings.HasPrefix(v, scheme+" ")
	}
	if strings.Contains(r.body, "done after revocation") || r.status != http.StatusUnauthorized ||
		!inScheme || elsewhere || !strings.Contains(r.body, `"id":1`) {
		t.Errorf("the revoked client got %d %v %s, want 401 invalid_token in the %s challenge answering id 1", r.status, r.header, r.body, scheme)
	}
	if ev := h.logs.FilterMessage(auditMessage).All(); len(ev) != 1 || ev[0].ContextMap()["status"] != int64(http.StatusUnauthorized) ||
		ev[0].ContextMap()["reason"] != "the access token has been revoked" {
		t.Errorf("audit events %v, want one with status 401 and the revocation as its reason", ev)
	}
	if n := h.g.streams.len(); n != 0 {
		t.Errorf("%d requests still registered after the call ended", n)
	}
	// Forwarded as allowed, and the client refused: both are counted.
	m.mu.Lock()
	defer m.mu.Unlock()
	if want := map[string]int{`decision tools/call "read_*" true`: 1, "refusal unauthorized": 1, "cache hit=false": 1}; !maps.Equal(m.counts, want) {
		t.Errorf("metrics %v, want %v", m.counts, want)
	}
}

// TestPendingCallOutlivesReloadAndExpiry (review s15-fresh F3): a tool
// call whose upstream answers in JSON is in the registry so that
// revocation ends it, but the rules of event streams (end closeGrace
// after Close, end when the access token expires) do not cut it: a long
// tool running when the configuration reloads, or whose token expires
// meanwhile, runs to its end and the client gets its result.
func TestPendingCallOutlivesReloadAndExpiry(t *testing.T) {
	for _, tt := range []struct {
		name string
		act  func(h *harness, clock *atomic.Int64)
	}{
		{"reload (Close) + closeGrace", func(h *harness, clock *atomic.Int64) {
			h.g.Close()
			clock.Store(int64(closeGrace / time.Second))
		}},
		{"token expires mid-call", func(h *harness, clock *atomic.Int64) {
			clock.Store(2 * 3600)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var clock atomic.Int64
			cfg := testConfig(t)
			cfg.Now = func() time.Time { return testNow.Add(time.Duration(clock.Load()) * time.Second) }
			cfg.StreamCheckInterval = 10 * time.Millisecond
			tool := newSlowTool("long tool done")
			h := newHarness(t, cfg, tool.serve)
			got := slowCall(h, mint(t, claims()))
			<-tool.started
			tt.act(h, &clock)
			select {
			case <-tool.cancelled:
				t.Errorf("%s: a pending JSON tool call was cancelled mid-work (nothing revoked)", tt.name)
			case <-time.After(500 * time.Millisecond):
			}
			close(tool.release)
			if r := <-got; !strings.Contains(r.body, "long tool done") {
				t.Errorf("client got %d %s, want the tool's result", r.status, r.body)
			}
		})
	}
}

// TestPendingCallOutlivesIntrospectionReuse (review s15-fresh F2): with
// opaque tokens, an event stream ends when its token's cached
// introspection answer may no longer be reused (the client reconnects
// and the token is introspected again), but a tool call whose answer has
// not begun does not: one started 1 s before the cached answer ages out
// runs on, its token active all along.
func TestPendingCallOutlivesIntrospectionReuse(t *testing.T) {
	f := newFakeIntrospection(t)
	f.set("opaque-alice", active())
	now := &clock{t: testNow}
	cfg := introspectionConfig(t, f, now)
	cfg.IntrospectionCache = time.Minute // the default
	cfg.StreamCheckInterval = 10 * time.Millisecond
	tool := newSlowTool("ok")
	tool.slow = &atomic.Bool{}
	h := newHarness(t, cfg, tool.serve)
	hdr := map[string]string{"Mcp-Protocol-Version": "2025-11-25"}
	resp := h.do(t, call{token: "opaque-alice", body: toolCall("read_a"), headers: hdr})
	if b := readBody(t, resp); resp.StatusCode != 200 {
		t.Fatalf("first call: %d %s", resp.StatusCode, b)
	}
	now.add(59 * time.Second)
	tool.slow.Store(true)
	got := slowCall(h, "opaque-alice")
	<-tool.started
	now.add(2 * time.Second) // the call has run 2 s; the token is active for the hour
	select {
	case <-tool.cancelled:
		t.Errorf("a tool call with an active introspected token was cancelled 2 s in: its cached introspection answer aged out (calls: %d)", f.calls.Load())
	case <-time.After(500 * time.Millisecond):
	}
	close(tool.release)
	<-got
}

// slowTool is an upstream whose tools/call works until released (or 5 s
// have passed) and then answers text in JSON, sending nothing before, as
// a server in JSON-response mode does; cancelled is closed if its request
// is cancelled instead. With slow set, only while it is true.
type slowTool struct {
	started, cancelled, release chan struct{}
	text                        string
	slow                        *atomic.Bool
}

func newSlowTool(text string) *slowTool {
	return &slowTool{started: make(chan struct{}), cancelled: make(chan struct{}), release: make(chan struct{}), text: text}
}

func (s *slowTool) serve(w http.ResponseWriter, r *http.Request) {
	io.ReadAll(r.Body)
	if s.slow == nil || s.slow.Load() {
		close(s.started)
		select {
		case <-r.Context().Done():
			close(s.cancelled)
			return
		case <-s.release:
		case <-time.After(5 * time.Second):
		}
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"`+s.text+`"}]}}`)
}

// slowResult is what a client got from a call.
type slowResult struct {
	status int
	body   string
	header http.Header
}

// slowCall sends a 2025-11-25 tools/call with token in the background; its
// answer (or the error, status 0) arrives on the channel.
func slowCall(h *harness, token string) <-chan slowResult {
	return slowPost(h, token, toolCall("read_a"))
}

// slowPost is slowCall with the request's body given.
func slowPost(h *harness, token, body string) <-chan slowResult {
	return slowTry(h, call{token: token, body: body, headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25"}})
}

// slowTry sends c in the background.
func slowTry(h *harness, c call) <-chan slowResult {
	got := make(chan slowResult, 1)
	go func() {
		resp, err := h.try(c)
		if err != nil {
			got <- slowResult{0, err.Error(), nil}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- slowResult{resp.StatusCode, string(b), resp.Header}
	}()
	return got
}

// TestEndedCallAnswer: once the registry has ended a call whose answer
// had not begun, the client gets the 401 a new request would get and
// nothing of what next writes after: neither the upstream's answer that
// raced the end (headers, body, announced and unannounced trailers) nor
// next's error for the cancelled request, which Serve no longer returns
// (Caddy would answer it with a bodiless 499).
func TestEndedCallAnswer(t *testing.T) {
	errCancelled := errors.New("upstream request cancelled")
	for _, tt := range []struct {
		name string
		// after writes what next writes once the request has ended.
		after func(w http.ResponseWriter) error
	}{
		{"the upstream's answer races the end", func(w http.ResponseWriter) error {
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Set-Cookie", "upstream=1")
			h.Set("Mcp-Session-Id", "upstream-session")
			h.Set("Trailer", "X-Announced")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"raced"}]}}`)
			h.Set("X-Announced", "late")
			h.Set(http.TrailerPrefix+"X-Unannounced", "late")
			return nil
		}},
		{"next fails for the cancelled request (Caddy)", func(http.ResponseWriter) error { return errCancelled }},
		{"next writes nothing", func(http.ResponseWriter) error { return nil }},
		{"httputil's 502", func(w http.ResponseWriter) error {
			w.WriteHeader(http.StatusBadGateway)
			return nil
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t)
			revs := &lockedRevocations{grants: map[string]bool{}}
			cfg.Revocations = revs
			cfg.StreamCheckInterval = 10 * time.Millisecond
			g := newGateway(t, cfg)
			c := claims()
			c["gid"] = "grant-alice"
			r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_a")))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Accept", "application/json, text/event-stream")
			r.Header.Set("Authorization", "Bearer "+mint(t, c))
			r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			w := httptest.NewRecorder()
			err := g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
				revs.revoke("grant-alice")
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second):
					t.Error("the request was not ended 5 s after its grant was revoked")
				}
				return tt.after(w)
			}))
			if err != nil {
				t.Errorf("Serve() = %v, want nil: the gateway answered", err)
			}
			resp := w.Result()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) ||
				!strings.Contains(string(body), `"id":1`) || strings.Contains(string(body), "raced") {
				t.Errorf("answer %d %v %s, want 401 invalid_token answering id 1", resp.StatusCode, resp.Header, body)
			}
			for _, k := range []string{"Set-Cookie", "Mcp-Session-Id", "Trailer", "X-Announced"} {
				if v := resp.Header.Values(k); len(v) != 0 {
					t.Errorf("header %s: %q reached the client", k, v)
				}
			}
			if len(resp.Trailer) != 0 {
				t.Errorf("trailers %v reached the client", resp.Trailer)
			}
		})
	}
}

// TestHeldAnswerEndedByRevocation (review s16 F1): a JSON answer the
// gateway holds to read it whole (a tools/list answer, filtered) has come
// but for its last byte when the grant is revoked. Nothing of it reached
// the client: the client gets the 401 a new request gets, never the held
// bytes, which finish would otherwise write out as a complete 200 under a
// new Content-Length.
func TestHeldAnswerEndedByRevocation(t *testing.T) {
	cfg := testConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	sent := make(chan struct{})
	list := `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"read_a","inputSchema":{"type":"object"}}]}}`
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(list)+1))
		io.WriteString(w, list)
		http.NewResponseController(w).Flush()
		close(sent)
		<-r.Context().Done()
	})
	c := claims()
	c["gid"] = "grant-alice"
	got := slowPost(h, mint(t, c), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	<-sent
	time.Sleep(50 * time.Millisecond) // the answer is held by the gateway
	revs.revoke("grant-alice")
	r := <-got
	if r.status != http.StatusUnauthorized || strings.Contains(r.body, "read_a") || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("the revoked client got %d %v %s, want 401 invalid_token and no tools", r.status, r.header, r.body)
	}
	if ev := h.logs.FilterMessage(auditMessage).All(); len(ev) != 1 || ev[0].ContextMap()["status"] != int64(http.StatusUnauthorized) ||
		ev[0].ContextMap()["reason"] != "the access token has been revoked" {
		t.Errorf("audit events %v, want one with status 401 and the revocation as its reason", ev)
	}
}

// TestEndedCallAbortedCopy (review s16 F2): the upstream's header comes
// after the registry ended the call, and the proxy then cannot copy the
// body of the cancelled request and aborts the handler, as Caddy's
// reverse_proxy and httputil.ReverseProxy do (panic(http.ErrAbortHandler)):
// the 401 Serve writes instead still reaches the client, which would
// otherwise see the connection close.
func TestEndedCallAbortedCopy(t *testing.T) {
	cfg := testConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	g := newGateway(t, cfg)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
			revs.revoke("grant-alice")
			<-r.Context().Done()
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}))
	}))
	t.Cleanup(front.Close)
	c := claims()
	c["gid"] = "grant-alice"
	req, _ := http.NewRequest(http.MethodPost, front.URL+"/mcp", strings.NewReader(toolCall("read_a")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+mint(t, c))
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the ended call's client got no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), `"id":1`) {
		t.Errorf("got %d %s, want 401 answering id 1", resp.StatusCode, b)
	}
}

// TestPendingGetAtReload (review s16b F5): a GET stream whose upstream
// has not answered yet when the configuration is unloaded (Close), or
// one that starts after, gets the gateway's 503 (retry), not the proxy's
// error for the cancelled request (a bodiless 499 under Caddy).
func TestPendingGetAtReload(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		cfg := testConfig(t)
		cfg.StreamCheckInterval = time.Hour
		g := newGateway(t, cfg)
		token := mint(t, claims())
		sid := sessionFor(t, g, token)
		if closeFirst {
			g.Close()
		}
		r := httptest.NewRequest(http.MethodGet, "/mcp", nil)
		r.Header.Set("Accept", "text/event-stream")
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		r.Header.Set("Mcp-Session-Id", sid)
		w := httptest.NewRecorder()
		err := g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
			g.Close()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
				t.Error("the GET was not ended 5 s after Close")
			}
			return errors.New("upstream request cancelled")
		}))
		if err != nil || w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "reloaded") {
			t.Errorf("closed before the GET %v: Serve() = %v, answer %d %s; want nil and the gateway's 503", closeFirst, err, w.Code, w.Body)
		}
	}
}

// TestInFlightPerClient: within a principal's max_in_flight, one client
// (client_id and outermost actor) has at most max_in_flight_per_client
// in flight (default three quarters), so that the principal's other
// clients keep some: one more from that client is refused 429 naming the
// client's bound, while another client of the principal is served up to
// the principal's bound, and another principal is not affected.
// TestInFlightPerClientDefaultOfLargeMax: the per-client default of a
// max_in_flight written for no limit is three quarters of it, not a
// negative number from an overflow that refused every request 429
// ("at most -1611686018427387903" on the binary).
func TestInFlightPerClientDefaultOfLargeMax(t *testing.T) {
	for max := 1; max <= 400; max++ {
		if got, want := DefaultMaxInFlightPerClient(max), (3*max+3)/4; got != want {
			t.Fatalf("DefaultMaxInFlightPerClient(%d) = %d, want %d (three quarters, rounded up)", max, got, want)
		}
	}
	cfg := testConfig(t)
	cfg.MaxInFlight = 4_000_000_000_000_000_000
	g := newGateway(t, cfg)
	if got, want := g.cfg.MaxInFlightPerClient, 3_000_000_000_000_000_000; got != want {
		t.Fatalf("default max in flight per client for %d = %d, want %d", cfg.MaxInFlight, got, want)
	}
	r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_a")))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+mint(t, claims()))
	w := httptest.NewRecorder()
	reached := false
	g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
		reached = true
		writeJSONAnswer(w, r, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
		return nil
	}))
	if !reached || w.Code != http.StatusOK {
		t.Fatalf("call with max_in_flight %d: %d %s, want it forwarded", cfg.MaxInFlight, w.Code, w.Body)
	}
}

func TestInFlightPerClient(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxInFlight = 4
	g := newGateway(t, cfg)
	if g.cfg.MaxInFlightPerClient != 3 {
		t.Fatalf("default max in flight per client for 4 = %d, want 3", g.cfg.MaxInFlightPerClient)
	}
	var held sync.WaitGroup
	release := make(chan struct{})
	t.Cleanup(func() { close(release); held.Wait() })
	// call sends a tools/call of sub through client (and actor), which
	// the upstream holds until the test ends; it returns the status, at
	// once for a refusal, or 200 once the upstream has the call.
	call := func(sub, client, actor string) (int, string) {
		c := claims()
		c["sub"], c["client_id"], c["jti"] = sub, client, sub+client+actor
		if actor != "" {
			c["act"] = map[string]any{"sub": actor}
		}
		r := httptest.NewRequest(http.MethodPost, "/mcp", strings.NewReader(toolCall("read_a")))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+mint(t, c))
		w := httptest.NewRecorder()
		arrived := make(chan struct{})
		done := make(chan struct{})
		held.Add(1)
		go func() {
			defer held.Done()
			defer close(done)
			g.Serve(w, r, NextFunc(func(w http.ResponseWriter, r *http.Request) error {
				close(arrived)
				<-release
				writeJSONAnswer(w, r, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
				return nil
			}))
		}()
		select {
		case <-arrived:
			return http.StatusOK, ""
		case <-done:
			return w.Code, w.Body.String()
		}
	}
	want := func(what string, code int, body string, wantCode int, wantBody string) {
		t.Helper()
		if code != wantCode || !strings.Contains(body, wantBody) {
			t.Errorf("%s = %d %s, want %d %s", what, code, body, wantCode, wantBody)
		}
	}
	for i := range 3 {
		code, body := call("alice", "app", "")
		want(fmt.Sprintf("alice's call %d through app", i+1), code, body, 200, "")
	}
	code, body := call("alice", "app", "")
	want("alice's 4th call through app", code, body, 429, "too many requests in flight for this client of the caller (at most 3)")
	code, body = call("alice", "app", "planner")
	want("alice's call through app, the planner agent acting", code, body, 200, "")
	code, body = call("alice", "other", "")
	want("alice's 5th call, through another client", code, body, 429, "too many requests in flight for this caller (at most 4)")
	code, body = call("bob", "app", "")
	want("bob's call through app", code, body, 200, "")
}

// TestDefaultMaxInFlightPerClient: README's max_in_flight_per_client,
// "default three quarters of max_in_flight, rounded up (75 of 100), at
// least 1": rounded down, max_in_flight 2 would leave one client of the
// caller a single request in flight, and 1 none at all.
func TestDefaultMaxInFlightPerClient(t *testing.T) {
	for _, tt := range []struct{ max, want int }{{1, 1}, {2, 2}, {3, 3}, {4, 3}, {5, 4}, {6, 5}, {100, 75}, {101, 76}} {
		if got := DefaultMaxInFlightPerClient(tt.max); got != tt.want {
			t.Errorf("DefaultMaxInFlightPerClient(%d) = %d, want %d", tt.max, got, tt.want)
		}
	}
}

// TestInFlightRefusalAnswer: the request past max_in_flight gets what
// README's max_in_flight promises: 429 with "Retry-After: 1", a JSON-RPC
// error -32000 without an id (it is refused before its body is read, so
// the id of a request it never read is not named), an audit event of the
// refusal with its status, and the refusals metric's too_many_requests;
// and it reaches no server.
func TestInFlightRefusalAnswer(t *testing.T) {
	m := &countingMetrics{counts: map[string]int{}}
	cfg := testConfig(t)
	cfg.MaxInFlight = 1
	cfg.Metrics = m
	arrived, release := make(chan struct{}), make(chan struct{})
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		writeJSONAnswer(w, r, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	})
	token := mint(t, claims())
	first := make(chan *http.Response, 1)
	go func() {
		resp, err := h.try(call{body: toolCall("read_a"), token: token})
		if err != nil {
			t.Error(err)
		}
		first <- resp
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the first call did not reach the upstream")
	}
	resp := h.do(t, call{body: strings.Replace(toolCall("read_a"), `"id":1`, `"id":"second"`, 1), token: token})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	close(release)
	if r := <-first; r != nil {
		r.Body.Close()
	}
	var got struct {
		ID    *json.RawMessage `json:"id"`
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != http.StatusTooManyRequests ||
		resp.Header.Get("Retry-After") != "1" || got.ID != nil || got.Error.Code != -32000 ||
		!strings.Contains(got.Error.Message, "too many requests in flight") {
		t.Errorf("the call past max_in_flight = %d, Retry-After %q, %s; want 429, Retry-After 1 and a JSON-RPC error -32000 without an id",
			resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if n := len(h.up.requests()); n != 1 {
		t.Errorf("requests at the upstream = %d, want 1: the refused one reached it", n)
	}
	var refusals []map[string]any
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		refusals = nil
		for _, e := range h.logs.All() {
			if c := e.ContextMap(); c["status"] == int64(http.StatusTooManyRequests) {
				refusals = append(refusals, c)
			}
		}
		m.mu.Lock()
		n := m.counts["refusal too_many_requests"]
		m.mu.Unlock()
		if len(refusals) == 1 && n == 1 || time.Now().After(deadline) {
			if n != 1 {
				t.Errorf("refusals metric too_many_requests = %d, want 1 (metrics %v)", n, m.counts)
			}
			break
		}
	}
	if len(refusals) != 1 || refusals[0]["decision"] != "deny" || !strings.Contains(fmt.Sprint(refusals[0]["reason"]), "too many requests in flight") {
		t.Errorf("audit events of the refusal = %v, want one, decision deny, naming why", refusals)
	}
}

// TestInFlightReleased: whatever ends a request (an answer, an upstream
// error, a panic in the proxy, the client going away, a revocation, a
// refused answer, a 429), the slot it took of its principal's
// max_in_flight is given back, so that no ending locks a user out.
func TestInFlightReleased(t *testing.T) {
	cfg := testConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	cfg.MaxInFlight = 1
	g := newGateway(t, cfg)
	c := claims()
	c["gid"] = "grant-alice"
	token := mint(t, c)
	session := sessionFor(t, g, token)
	inFlight := func() int {
		g.streams.mu.Lock()
		defer g.streams.mu.Unlock()
		n := 0
		for _, by := range [...]map[string]int{g.streams.by, g.streams.byClient} {
			for _, v := range by {
				n += v
			}
		}
		return n
	}
	serve := func(ctx context.Context, method string, next NextFunc) (code int, panicked any) {
		body := ""
		if method == http.MethodPost {
			body = toolCall("read_a")
		}
		r := httptest.NewRequestWithContext(ctx, method, "/mcp", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		r.Header.Set("Mcp-Session-Id", session)
		w := httptest.NewRecorder()
		defer func() { panicked = recover(); code = w.Code }()
		g.Serve(w, r, next)
		return w.Code, nil
	}
	// stream answers as an event stream until the request ends.
	stream := func(started chan<- struct{}) NextFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			started <- struct{}{}
			<-r.Context().Done()
			return r.Context().Err()
		}
	}
	opened := func(t *testing.T, started, done <-chan struct{}) {
		t.Helper()
		select {
		case <-started:
		case <-done:
			t.Fatal("the stream was not forwarded")
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"answered", func(t *testing.T) {
			serve(t.Context(), http.MethodPost, func(w http.ResponseWriter, r *http.Request) error {
				writeJSONAnswer(w, r, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
				return nil
			})
		}},
		{"upstream error", func(t *testing.T) {
			serve(t.Context(), http.MethodPost, func(http.ResponseWriter, *http.Request) error { return errors.New("dial: connection refused") })
		}},
		{"panic", func(t *testing.T) {
			if _, p := serve(t.Context(), http.MethodPost, func(http.ResponseWriter, *http.Request) error { panic("proxy bug") }); p == nil {
				t.Error("the panic did not reach Serve's caller")
			}
		}},
		{"refused answer", func(t *testing.T) {
			serve(t.Context(), http.MethodPost, func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Encoding", "gzip")
				_, err := io.WriteString(w, "\x1f\x8b compressed")
				return err
			})
		}},
		{"client gone, and a 429 while it was open", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			started, done := make(chan struct{}, 1), make(chan struct{})
			go func() { defer close(done); serve(ctx, http.MethodGet, stream(started)) }()
			opened(t, started, done)
			if code, _ := serve(t.Context(), http.MethodGet, stream(make(chan struct{}, 1))); code != http.StatusTooManyRequests {
				t.Errorf("a second stream with max_in_flight 1 = %d, want 429", code)
			}
			cancel()
			<-done
		}},
		{"revoked", func(t *testing.T) {
			started, done := make(chan struct{}, 1), make(chan struct{})
			go func() { defer close(done); serve(t.Context(), http.MethodGet, stream(started)) }()
			opened(t, started, done)
			revs.revoke("grant-alice")
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("stream still open 5 s after its grant was revoked")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t)
			if n := inFlight(); n != 0 {
				t.Errorf("in flight after the request ended = %d, want 0", n)
			}
		})
	}
}

// TestRevocationEndsStreamItsClientDoesNotRead: a stream whose client
// stops reading (its socket buffers full, the gateway's write to it
// blocked) ends on revocation all the same: the blocked write is given
// up, and the request stops counting in its principal's max_in_flight,
// so that the user's next token is not refused 429 for as long as
// whoever held the revoked one keeps the connection open unread.
func TestRevocationEndsStreamItsClientDoesNotRead(t *testing.T) {
	cfg := unreadConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	cfg.MaxInFlight, cfg.MaxInFlightPerClient = 1, 1
	var written atomic.Int64
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Test") == "answer" {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
			return
		}
		flood(w, r, &written)
	})
	token := func(grant string) string {
		c := claims()
		c["gid"], c["jti"] = grant, grant+"-jti"
		return mint(t, c)
	}
	addr := strings.TrimPrefix(h.front.URL, "http://")
	conn := dialSmallReceiveBuffer(t, addr)
	body := toolCall("read_a")
	fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-11-25\r\nContent-Length: %d\r\n\r\n%s",
		addr, token("grant-stolen"), len(body), body)
	// Never read: the upstream writes until every buffer on the way is
	// full and the gateway's write to the client blocks.
	waitBlocked(t, &written)
	revs.revoke("grant-stolen")
	next := call{token: token("grant-new"), body: toolCall("read_a"), headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25", "X-Test": "answer"}}
	for deadline := time.Now().Add(endWriteGrace + 10*time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp := h.do(t, next)
		body := readBody(t, resp)
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("the user's new token after the stolen one's grant was revoked: %d %s, want 200 once the revoked stream's writes are given up (it still counts in flight, unread)", resp.StatusCode, body)
		}
	}
}

// TestRevocationEndsHTTP2StreamItsClientDoesNotRead: the same over
// HTTP/2, where the client's flow-control window, not a socket buffer,
// stops the gateway's writes: Serve returns once the revoked stream's
// writes are given up.
func TestRevocationEndsHTTP2StreamItsClientDoesNotRead(t *testing.T) {
	var written atomic.Int64
	front, revs, served := floodFront(t, &written, nil)
	front.EnableHTTP2 = true
	front.StartTLS()
	t.Cleanup(front.Close)
	req := stolenGrantCall(t, front.URL)
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // before front.Close: resets the stream should the test fail
	if resp.ProtoMajor != 2 {
		t.Fatalf("answered over %s, want HTTP/2", resp.Proto)
	}
	// Never read: the upstream writes until the client's window is full.
	waitBlocked(t, &written)
	revs.revoke("grant-stolen")
	select {
	case <-served:
	case <-time.After(endWriteGrace + 10*time.Second):
		t.Fatal("Serve still writes to the unread HTTP/2 stream of a revoked grant")
	}
}

// floodFront is an unstarted server in front of a gateway that ends the
// requests of revoked grants within 10 ms, before a reverse proxy to a
// flood (written counts its bytes); Serve writes to wrap(w) when wrap is
// not nil; served is closed as Serve returns.
func floodFront(t *testing.T, written *atomic.Int64, wrap func(http.ResponseWriter) (http.ResponseWriter, func())) (*httptest.Server, *lockedRevocations, chan struct{}) {
	cfg := unreadConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	g := newGateway(t, cfg)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { flood(w, r, written) }))
	t.Cleanup(up.Close)
	target, _ := url.Parse(up.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	served := make(chan struct{})
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(served) // the proxy panics (http.ErrAbortHandler) when its copy fails
		if wrap != nil {
			var done func()
			w, done = wrap(w)
			defer done()
		}
		g.Serve(w, r, NextHandler(proxy))
	}))
	return front, revs, served
}

// stolenGrantCall is a tools/call to front with a token of grant
// "grant-stolen", asking for an event stream.
func stolenGrantCall(t *testing.T, front string) *http.Request {
	c := claims()
	c["gid"], c["jti"] = "grant-stolen", "stolen-jti"
	req, err := http.NewRequest(http.MethodPost, front+"/mcp", strings.NewReader(toolCall("read_a")))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"Authorization": "Bearer " + mint(t, c), "Content-Type": "application/json",
		"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25"} {
		req.Header.Set(k, v)
	}
	return req
}

// flood answers with an event stream of 16 KiB comments, as fast as they
// are taken, until the request ends; written counts the bytes.
func flood(w http.ResponseWriter, r *http.Request, written *atomic.Int64) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	event := ": " + strings.Repeat("x", 16<<10) + "\n\n"
	for r.Context().Err() == nil {
		n, err := io.WriteString(w, event)
		written.Add(int64(n))
		if err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
}

// waitBlocked waits until a flood's client, which reads nothing, has
// stopped it: written no longer grows.
func waitBlocked(t *testing.T, written *atomic.Int64) {
	t.Helper()
	for last, deadline := int64(-1), time.Now().Add(30*time.Second); ; time.Sleep(200 * time.Millisecond) {
		n := written.Load()
		if n > 0 && n == last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream still writes (%d bytes) 30 s into a stream its client does not read", n)
		}
		last = n
	}
}

// TestInFlightCountsBodiesArriving: a request whose body is still
// arriving is in flight: its token verified, it holds a connection, a
// goroutine and the bytes sent so far (up to max_body_size), so one
// token holder sending bodies that never end (Caddy sets no read_body
// timeout by default) could hold any number of them past max_in_flight.
// One more is refused 429 before its body is read, and a slot is given
// back when such a request ends.
func TestInFlightCountsBodiesArriving(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxInFlight = 2
	g := newGateway(t, cfg)
	token := mint(t, claims())
	upstream := NextFunc(func(w http.ResponseWriter, r *http.Request) error {
		writeJSONAnswer(w, r, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
		return nil
	})
	serve := func(body io.Reader) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/mcp", body)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		g.Serve(w, r, upstream)
		return w
	}
	var slow sync.WaitGroup
	var writers []*io.PipeWriter
	for range cfg.MaxInFlight {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		slow.Add(1)
		go func() {
			defer slow.Done()
			serve(pr)
		}()
		go pw.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"x":"`))
	}
	defer func() {
		for _, pw := range writers {
			pw.CloseWithError(errors.New("client gone"))
		}
		slow.Wait()
	}()
	inFlight := func() int { return inFlightCount(g) }
	for deadline := time.Now().Add(5 * time.Second); inFlight() < cfg.MaxInFlight; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bodies still arriving hold %d of max_in_flight, want %[1]d: they are in flight", cfg.MaxInFlight, inFlight())
		}
	}
	if w := serve(strings.NewReader(toolCall("read_a"))); w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "too many requests in flight") {
		t.Errorf("a call beside %d bodies still arriving = %d %s, want 429", cfg.MaxInFlight, w.Code, w.Body)
	}
	for _, pw := range writers {
		pw.CloseWithError(errors.New("client gone"))
	}
	slow.Wait()
	if w := serve(strings.NewReader(toolCall("read_a"))); w.Code != http.StatusOK {
		t.Errorf("a call once the slow bodies ended = %d %s, want 200", w.Code, w.Body)
	}
}

// TestRevocationEndsBodyArriving: a request counts in its principal's
// max_in_flight while its body arrives (TestInFlightCountsBodiesArriving),
// before the registry ends requests on revocation: a stolen token's
// holder kept the principal's every slot with bodies that never end, past
// the token's revocation, and the user's new token was refused 429 for as
// long as the thief kept the connections (Caddy sets no read_body timeout
// by default). A revoked request whose body is still arriving ends within
// the check interval, answered 401, over HTTP/1.1 and HTTP/2.
func TestRevocationEndsBodyArriving(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			cfg := testConfig(t)
			cfg.MaxInFlight = 2
			revs := &lockedRevocations{grants: map[string]bool{}}
			cfg.Revocations = revs
			cfg.StreamCheckInterval = 10 * time.Millisecond
			g := newGateway(t, cfg)
			front := bodyFront(t, g, h2)
			stolen := claims()
			stolen["gid"], stolen["jti"] = "grant-stolen", "stolen-jti"
			stolenToken := mint(t, stolen)
			post := func(token string, body io.Reader) (*http.Response, error) { return postMCP(t, front, token, body) }
			type result struct {
				status int
				err    error
			}
			var writers []*io.PipeWriter
			results := make(chan result, cfg.MaxInFlight)
			for range cfg.MaxInFlight {
				pr, pw := io.Pipe()
				writers = append(writers, pw)
				go pw.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"x":"`))
				go func() {
					resp, err := post(stolenToken, pr)
					if err != nil {
						results <- result{err: err}
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					results <- result{status: resp.StatusCode}
				}()
			}
			t.Cleanup(func() {
				for _, pw := range writers {
					pw.CloseWithError(errors.New("client gone"))
				}
			})
			inFlight := func() int { return inFlightCount(g) }
			for deadline := time.Now().Add(5 * time.Second); inFlight() < cfg.MaxInFlight; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("bodies arriving hold %d of max_in_flight, want %d", inFlight(), cfg.MaxInFlight)
				}
			}
			revs.revoke("grant-stolen")
			for range cfg.MaxInFlight {
				select {
				case r := <-results:
					if r.err == nil && r.status != http.StatusUnauthorized {
						t.Errorf("a revoked request whose body was arriving = %d, want 401", r.status)
					}
				case <-time.After(3 * time.Second):
					t.Fatal("a revoked request whose body is still arriving still runs 3 s after the revocation")
				}
			}
			for deadline := time.Now().Add(2 * time.Second); inFlight() != 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d of max_in_flight still held after the revoked requests ended", inFlight())
				}
			}
			resp, err := post(mint(t, claims()), strings.NewReader(toolCall("read_a")))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("the user's new token once the stolen one is revoked = %d, want 200", resp.StatusCode)
			}
			if n := g.streams.len(); n != 0 {
				t.Errorf("%d requests still registered", n)
			}
		})
	}
}

// TestExpiryEndsBodyArriving: a body arrives for as long as its client
// likes, as an event stream runs, so a request whose body is still
// arriving ends at its token's expiry as a stream does, answered 401: a
// stolen token's holder kept the principal's every slot of max_in_flight
// with bodies that never end past the token's expiry, and the user's new
// tokens were refused 429 for as long as the thief kept the connections.
func TestExpiryEndsBodyArriving(t *testing.T) {
	cfg := testConfig(t)
	cfg.MaxInFlight = 1
	cfg.StreamCheckInterval = 10 * time.Millisecond
	var clock atomic.Int64
	clock.Store(testNow.UnixNano())
	cfg.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	g := newGateway(t, cfg)
	front := bodyFront(t, g, false)
	post := func(token string, body io.Reader) (*http.Response, error) { return postMCP(t, front, token, body) }
	status := postBodyArriving(t, g, front, mint(t, claims()))
	clock.Add(int64(2 * time.Hour)) // past the token's expiry and its leeway
	select {
	case s := <-status:
		if s != 0 && s != http.StatusUnauthorized {
			t.Errorf("a request whose body was arriving when its token expired = %d, want 401", s)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a request whose body is still arriving still runs 3 s after its token expired")
	}
	fresh := claims()
	fresh["iat"], fresh["exp"], fresh["jti"] = testNow.Add(2*time.Hour).Unix(), testNow.Add(3*time.Hour).Unix(), "jti-2"
	resp, err := post(mint(t, fresh), strings.NewReader(toolCall("read_a")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the user's new token once the other expired = %d, want 200", resp.StatusCode)
	}
}

// bodyFront serves g over TLS (HTTP/2 if h2), in front of an upstream
// answering every call.
func bodyFront(t *testing.T, g *Gateway, h2 bool) *httptest.Server {
	upstream := NextFunc(func(w http.ResponseWriter, r *http.Request) error {
		writeJSONAnswer(w, r, `{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
		return nil
	})
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.Serve(w, r, upstream)
	}))
	front.EnableHTTP2 = h2
	front.StartTLS()
	t.Cleanup(front.Close)
	return front
}

// postMCP posts body to front's MCP endpoint with token.
func postMCP(t *testing.T, front *httptest.Server, token string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, front.URL+"/mcp", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	return front.Client().Do(req)
}

// postBodyArriving posts to front, with token, a call whose body never
// ends, once it holds a slot of g's max_in_flight; the status of its
// answer (0 if none) is sent on the channel.
func postBodyArriving(t *testing.T, g *Gateway, front *httptest.Server, token string) <-chan int {
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(errors.New("client gone")) })
	go pw.Write([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_a","arguments":{"x":"`))
	status := make(chan int, 1)
	go func() {
		resp, err := postMCP(t, front, token, pr)
		if err != nil {
			status <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	for deadline := time.Now().Add(5 * time.Second); inFlightCount(g) < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the body arriving holds no slot of max_in_flight")
		}
	}
	return status
}

// inFlightCount is how many requests g counts in flight (reserve), over
// all principals.
func inFlightCount(g *Gateway) int {
	g.streams.mu.Lock()
	defer g.streams.mu.Unlock()
	n := 0
	for _, v := range g.streams.by {
		n += v
	}
	return n
}

// TestStreamsEndWithinASecond: at the default check interval (no
// StreamCheckInterval set, as a Caddyfile configures none), an open GET
// stream ends within a second of its grant's revocation and of its
// token's exp, as README promises (Limits: revocation). Each is made just
// after the stream opened, which starts the checker: its first check
// comes a full interval later, the longest a client waits. The slack is
// for a loaded machine, not another interval.
func TestStreamsEndWithinASecond(t *testing.T) {
	const slack = 400 * time.Millisecond
	for _, how := range []string{"revoked", "expired"} {
		t.Run(how, func(t *testing.T) {
			var clock atomic.Int64 // seconds after testNow
			cfg := testConfig(t)
			cfg.Now = func() time.Time { return testNow.Add(time.Duration(clock.Load()) * time.Second) }
			revs := &lockedRevocations{grants: map[string]bool{}}
			cfg.Revocations = revs
			up := newStreamUpstream(func(r *http.Request) string { return r.Method })
			h := newHarness(t, cfg, up.serve)
			c := claims()
			c["gid"], c["exp"] = "grant-alice", testNow.Add(time.Minute).Unix()
			tok := mint(t, c)
			resp := h.do(t, call{method: http.MethodGet, token: tok, headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25", "Mcp-Session-Id": sessionFor(t, h.g, tok)}})
			defer resp.Body.Close()
			if line, _ := bufio.NewReader(resp.Body).ReadString('\n'); !strings.HasPrefix(line, ": open") {
				t.Fatalf("first line %q, want the upstream's comment", line)
			}
			start := time.Now()
			if how == "revoked" {
				revs.revoke("grant-alice")
			} else {
				clock.Store(60)
			}
			select {
			case <-up.done(http.MethodGet):
			case <-time.After(5 * time.Second):
				t.Fatalf("stream still open 5 s after its token was %s", how)
			}
			if d := time.Since(start); d > DefaultStreamCheckInterval+slack || DefaultStreamCheckInterval > time.Second {
				t.Errorf("stream ended %v after its token was %s (check interval %v), want within a second", d, how, DefaultStreamCheckInterval)
			}
		})
	}
}

// TestRevocationDuringPinFetch: a call whose tool the gateway must first
// learn (pin_tools) waits for the upstream's tools/list, up to
// pinFetchTimeout per try; a token revoked meanwhile was admitted before
// it, and the call went to the upstream afterwards, its tool run for a
// revoked principal (the registry ended it only once forwarded). It is
// refused as a new request with the token is, and never forwarded.
func TestRevocationDuringPinFetch(t *testing.T) {
	cfg := pinnedConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	listing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		if req.Method == "tools/call" {
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ran for a revoked grant"}]}}`)
			return
		}
		once.Do(func() { close(listing) })
		<-release
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"read_file","inputSchema":{"type":"object"}}]}}`, req.ID)
	})
	c := claims()
	c["gid"] = "grant-alice"
	got := slowTry(h, call{token: mint(t, c), body: toolCall("read_file"), headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25"}})
	select {
	case <-listing:
	case <-time.After(5 * time.Second):
		t.Fatal("the gateway did not fetch the tools list")
	}
	revs.revoke("grant-alice")
	time.Sleep(50 * time.Millisecond) // several check intervals
	close(release)
	r := <-got
	for _, req := range h.up.requests() {
		if strings.Contains(string(req.Body), "tools/call") {
			t.Fatalf("the call was forwarded after its grant was revoked (client got %d %s)", r.status, r.body)
		}
	}
	if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) ||
		!strings.Contains(r.body, `"id":1`) {
		t.Errorf("the revoked client got %d %v %s, want 401 invalid_token answering id 1", r.status, r.header, r.body)
	}
	if ev := h.logs.FilterMessage(auditMessage).All(); len(ev) != 1 || ev[0].ContextMap()["status"] != int64(http.StatusUnauthorized) {
		t.Errorf("audit events %v, want one with status 401", ev)
	}
}

// TestListenUnansweredEndsAtExpiry: a 2026-07-28 subscriptions/listen
// is that revision's GET stream from the moment it is sent, as a GET
// is: one whose server has not answered yet ends when its token expires
// (the client gets the 401 a new request would get, and its
// max_in_flight slot back), rather than waiting, past the expiry, on a
// server that may answer later and whose first events would then reach
// the expired token's holder before the next check.
func TestListenUnansweredEndsAtExpiry(t *testing.T) {
	var clock atomic.Int64 // seconds after testNow
	cfg := testConfig(t)
	cfg.Now = func() time.Time { return testNow.Add(time.Duration(clock.Load()) * time.Second) }
	cfg.StreamCheckInterval = 10 * time.Millisecond
	server := newSlowTool("listen answered")
	h := newHarness(t, cfg, server.serve)
	token := mint(t, claims())
	got := slowTry(h, call{token: token,
		body:    `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},` + meta2026 + `}}`,
		headers: map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}})
	<-server.started
	clock.Store(3600)
	select {
	case <-server.cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("an unanswered subscriptions/listen still sent upstream 3 s after its token expired")
	}
	if r := <-got; r.status != http.StatusUnauthorized || !strings.Contains(r.body, "expired") {
		t.Errorf("client got %d %s, want 401: the access token has expired", r.status, r.body)
	}
	if n := h.g.streams.len(); n != 0 {
		t.Errorf("open streams after expiry = %d, want 0", n)
	}
}

// TestCloseEndsListenStreams: a 2026-07-28 subscriptions/listen is that
// revision's GET stream (its server's notifications, for as long as the
// client keeps it) and carries no result a cut would lose: a reload
// (Close) ends it at once, as it ends GET streams, rather than 30 s
// later under the policy the reload replaced, and one opened after Close
// is not sent upstream. A tool call's event-stream answer still runs on.
func TestCloseEndsListenStreams(t *testing.T) {
	cfg := testConfig(t)
	cfg.StreamCheckInterval = time.Hour // no check would end them
	up := newStreamUpstream(func(r *http.Request) string { return r.Header.Get("X-Mcp-Subject") })
	cfg.ForwardIdentity = true
	h := newHarness(t, cfg, up.serve)
	listen := func(sub string) *http.Response {
		c := claims()
		c["sub"], c["jti"] = sub, sub+"-jti"
		return h.do(t, call{token: mint(t, c),
			body:    `{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true},` + meta2026 + `}}`,
			headers: map[string]string{"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "subscriptions/listen"}})
	}
	before := listen("alice")
	defer before.Body.Close()
	if line, _ := bufio.NewReader(before.Body).ReadString('\n'); !strings.HasPrefix(line, ": open") {
		t.Fatalf("first line %q (status %d)", line, before.StatusCode)
	}
	c := claims()
	c["sub"], c["jti"] = "carol", "carol-jti"
	answer := h.do(t, call{token: mint(t, c), body: toolCall("read_a"), headers: map[string]string{"Mcp-Protocol-Version": "2025-11-25"}})
	defer answer.Body.Close()
	h.g.Close()
	select {
	case <-up.done("alice"):
	case <-time.After(5 * time.Second):
		t.Fatal("alice's subscriptions/listen stream still open 5 s after Close")
	}
	select {
	case <-up.done("carol"):
		t.Error("a tool call's event-stream answer was cut by Close")
	case <-time.After(100 * time.Millisecond):
	}
	after := listen("bob")
	body := readBody(t, after)
	if after.StatusCode != http.StatusServiceUnavailable || up.done("bob") != nil {
		t.Errorf("subscriptions/listen after Close = %d %s (forwarded: %v), want 503 and not forwarded", after.StatusCode, body, up.done("bob") != nil)
	}
	if n := h.g.streams.len(); n != 1 {
		t.Errorf("open streams after Close = %d, want 1 (the answer)", n)
	}
}

// TestRevocationWhileWaitingForPinFetchSlot: a call whose tool the
// gateway must first learn waits for one of its principal's fetch slots
// (maxPinFetchesPerPrincipal) while other clients of the principal fetch;
// a token revoked meanwhile had the gateway, once a slot was free, send
// the upstream a tools/list on the revoked caller's behalf (its session,
// its forwarded identity) before the call was refused. It is refused
// without that fetch.
func TestRevocationWhileWaitingForPinFetchSlot(t *testing.T) {
	cfg := pinnedConfig(t)
	revs := &lockedRevocations{grants: map[string]bool{}}
	cfg.Revocations = revs
	cfg.StreamCheckInterval = 10 * time.Millisecond
	var lists atomic.Int32
	listing, release := make(chan struct{}, maxPinFetchesPerPrincipal+1), make(chan struct{})
	h := newHarness(t, cfg, func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		w.Header().Set("Content-Type", "application/json")
		if req.Method == "tools/call" {
			io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ran"}]}}`)
			return
		}
		lists.Add(1)
		listing <- struct{}{}
		<-release
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"read_file","inputSchema":{"type":"object"}}]}}`, req.ID)
	})
	hdr := map[string]string{"Mcp-Protocol-Version": "2025-11-25"}
	// Each client of alice fetches apart (fetchKey), within alice's slots.
	var busy []<-chan slowResult
	for i := range maxPinFetchesPerPrincipal {
		c := claims()
		c["client_id"], c["jti"], c["gid"] = fmt.Sprint("client-busy-", i), fmt.Sprint("jti-busy-", i), fmt.Sprint("grant-busy-", i)
		busy = append(busy, slowTry(h, call{token: mint(t, c), body: toolCall("read_file"), headers: hdr}))
		select {
		case <-listing:
		case <-time.After(5 * time.Second):
			t.Fatal("the gateway did not fetch the tools list")
		}
	}
	c := claims()
	c["client_id"], c["jti"], c["gid"] = "client-waiting", "jti-waiting", "grant-waiting"
	waiting := slowTry(h, call{token: mint(t, c), body: toolCall("read_file"), headers: hdr})
	time.Sleep(100 * time.Millisecond) // it waits for a slot
	revs.revoke("grant-waiting")
	time.Sleep(50 * time.Millisecond) // several check intervals
	close(release)
	r := <-waiting
	for _, b := range busy {
		if r := <-b; r.status != http.StatusOK {
			t.Errorf("a call of a live token got %d %s, want 200", r.status, r.body)
		}
	}
	if n := lists.Load(); n != maxPinFetchesPerPrincipal {
		t.Errorf("the upstream got %d tools/list fetches, want %d: one was sent for the revoked caller", n, maxPinFetchesPerPrincipal)
	}
	if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("the revoked client got %d %v %s, want 401 invalid_token", r.status, r.header, r.body)
	}
}
