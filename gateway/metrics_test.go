package gateway

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// countingMetrics counts every call by its arguments.
type countingMetrics struct {
	mu        sync.Mutex
	counts    map[string]int
	upstreams int
}

func (m *countingMetrics) add(k string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[k]++
}

func (m *countingMetrics) Decision(method, rule string, allowed bool) {
	m.add(fmt.Sprintf("decision %s %q %v", method, rule, allowed))
}
func (m *countingMetrics) Refusal(reason string) { m.add("refusal " + reason) }
func (m *countingMetrics) Upstream(time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.upstreams++
}
func (m *countingMetrics) TokenCache(hit bool)  { m.add(fmt.Sprintf("cache hit=%v", hit)) }
func (m *countingMetrics) ToolPin(event string) { m.add("tool pin " + event) }

// TestMetrics: each request is counted once, by bounded labels only
// (README, Monitoring): a method no revision defines, passed by a method
// rule, is "other"; a tool name or URI from the request is never a label,
// the rule's configured pattern is.
func TestMetrics(t *testing.T) {
	m := &countingMetrics{counts: map[string]int{}}
	cfg := testConfig(t)
	cfg.Methods = []Rule{{Pattern: "x-acme/*"}}
	cfg.Metrics = m
	h := newHarness(t, cfg, nil)
	token := mint(t, claims())
	calls := []struct {
		c    call
		want int
	}{
		{call{body: toolCall("read_file"), token: token}, http.StatusOK},
		{call{body: toolCall("read_other"), token: token}, http.StatusOK},
		{call{body: toolCall("write_file"), token: token}, http.StatusForbidden},
		{call{body: toolCall("unlisted"), token: token}, http.StatusForbidden},
		{call{body: `{"jsonrpc":"2.0","id":1,"method":"x/custom"}`, token: token}, http.StatusBadRequest}, // a method no revision defines
		{call{body: toolCall("read_file")}, http.StatusUnauthorized},
		{call{body: toolCall("read_file"), token: "not-a-jwt"}, http.StatusUnauthorized},
		{call{body: `{"jsonrpc":"2.0","id":1,"method":"x-acme/ping-4711"}`, token: token}, http.StatusOK}, // passed by the method rule
		{call{body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a/b-4711.txt"}}`, token: token}, http.StatusForbidden},
	}
	for _, c := range calls {
		resp := h.do(t, c.c)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("%s: status %d, want %d", c.c.body, resp.StatusCode, c.want)
		}
	}
	want := map[string]int{
		`decision tools/call "read_*" true`:        2,
		`decision tools/call "write_*" false`:      1, // more scope would cure it
		`decision tools/call "" false`:             1, // no rule
		`decision other "x-acme/*" true`:           1, // not the method's own name
		`decision resources/read "file:///" false`: 1, // the rule, not the URI
		`refusal insufficient_scope`:               2,
		`refusal forbidden`:                        1,
		`refusal method_not_found`:                 1, // refused before any decision
		`refusal unauthorized`:                     2,
		`cache hit=false`:                          2, // the token's first use, and the malformed one
		`cache hit=true`:                           6,
	}
	// Decisions and upstream observations are recorded after the answer is
	// written, so the client may read it first: wait for them (the
	// bound is for a loaded machine; they come at once).
	var diff string
	var upstreams int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m.mu.Lock()
		diff, upstreams = cmp.Diff(want, m.counts), m.upstreams
		m.mu.Unlock()
		if diff == "" && upstreams == 3 || time.Now().After(deadline) {
			break
		}
	}
	if diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	if upstreams != 3 {
		t.Errorf("upstream observations = %d, want 3 (the forwarded calls)", upstreams)
	}
}

// TestRefusedReasonCovers: the refusals metric's reason "refused" is
// every answer of the gateway's own that no other reason names, as
// README's Monitoring table lists them: a path other than the MCP
// endpoint (404), a request sent as TLS early data (425), an upstream
// answer the gateway cannot check or pass (502), and a token it cannot
// decide on now (503: revocations, keys or the introspection endpoint
// unavailable).
func TestRefusedReasonCovers(t *testing.T) {
	m := &countingMetrics{counts: map[string]int{}}
	cfg := testConfig(t)
	unknown := false
	cfg.Revocations = revocationSet{unknown: &unknown}
	cfg.Metrics = m
	h := newHarness(t, cfg, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"tools":[`) // cut short
	})
	token := mint(t, claims())
	list := `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, c := range []struct {
		name  string
		c     call
		want  int
		stale bool
	}{
		{"another path", call{path: "/other", body: list, token: token}, http.StatusNotFound, false},
		{"early data", call{body: list, token: token, headers: map[string]string{"Early-Data": "1"}}, http.StatusTooEarly, false},
		{"an upstream answer cut short", call{body: list, token: token}, http.StatusBadGateway, false},
		{"revocations unknown", call{body: list, token: token}, http.StatusServiceUnavailable, true},
	} {
		unknown = c.stale
		resp := h.do(t, c.c)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("%s: status %d, want %d", c.name, resp.StatusCode, c.want)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m.mu.Lock()
		n, other := m.counts["refusal refused"], len(m.counts)
		m.mu.Unlock()
		if n == 4 || time.Now().After(deadline) {
			if n != 4 {
				t.Errorf(`refusals with reason "refused" = %d, want 4 (%d labels counted)`, n, other)
			}
			break
		}
	}
}
