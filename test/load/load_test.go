package main

import (
	"bytes"
	"expvar"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/freeport"
)

func TestParseStatTicks(t *testing.T) {
	// Fields after the command: state ppid pgrp session tty tpgid flags
	// minflt cminflt majflt cmajflt utime stime ...
	tail := " S 1 2 3 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 8 0 1234 0 0"
	tests := []struct {
		name    string
		line    string
		want    uint64
		wantErr bool
	}{
		{"plain", "4242 (caddy)" + tail, 267, false},
		{"spaces and parens in command", "4242 (a) b (c))" + tail, 267, false},
		{"no command", "4242 caddy" + tail, 0, true},
		{"truncated", "4242 (caddy) S 1 2 3", 0, true},
		{"bad utime", "4242 (caddy) S 1 2 3 0 -1 4194560 100 0 0 0 x 17 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatTicks(tt.line)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStatTicks(%q) error = %v, want error %v", tt.line, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseStatTicks(%q) = %d, want %d", tt.line, got, tt.want)
			}
		})
	}
}

func TestCPUTicksSelf(t *testing.T) {
	// Burn a little CPU so the count is not trivially zero on a fast tick.
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
	}
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Fatalf("cpuTicks(self) error = %v, want nil", err)
	}
	if _, err := cpuTicks(-1); err == nil {
		t.Errorf("cpuTicks(-1) error = nil, want an error")
	}
}

func TestSumFields(t *testing.T) {
	io := "rchar: 10\nwchar: 20\nsyscr: 7\nsyscw: 5\nread_bytes: 0\n"
	if got, err := sumFields(io, "syscr:", "syscw:"); err != nil || got != 12 {
		t.Errorf("sumFields(io) = %d, %v, want 12, nil", got, err)
	}
	if _, err := sumFields(io, "syscr:", "nosuch:"); err == nil {
		t.Error("sumFields with a missing line: error = nil, want an error")
	}
	if _, err := sumFields("syscr: x\n", "syscr:"); err == nil {
		t.Error("sumFields with a bad value: error = nil, want an error")
	}
	// nonvoluntary_ctxt_switches: does not count as voluntary_ctxt_switches:.
	status := "Name:\tcaddy\nvoluntary_ctxt_switches:\t3\nnonvoluntary_ctxt_switches:\t4\n"
	if got, err := sumFields(status, "voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"); err != nil || got != 7 {
		t.Errorf("sumFields(status) = %d, %v, want 7, nil", got, err)
	}
}

func TestKernelCountsSelf(t *testing.T) {
	a, err := readKernelCounts(os.Getpid())
	if err != nil {
		t.Fatalf("readKernelCounts(self) error = %v", err)
	}
	f, err := os.CreateTemp(t.TempDir(), "k")
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	time.Sleep(5 * time.Millisecond) // a voluntary switch at least
	b, err := readKernelCounts(os.Getpid())
	if err != nil {
		t.Fatalf("readKernelCounts(self) error = %v", err)
	}
	if d := b.sub(a); d.syscalls < 10 || d.switches == 0 {
		t.Errorf("after 10 writes and a sleep: %+v, want at least 10 syscalls and a switch", d)
	}
	if _, err := readKernelCounts(-1); err == nil {
		t.Error("readKernelCounts(-1) error = nil, want an error")
	}
}

func TestPercentile(t *testing.T) {
	d := func(ms ...int) []time.Duration {
		var out []time.Duration
		for _, m := range ms {
			out = append(out, time.Duration(m)*time.Millisecond)
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", d(7), 0.99, 7 * time.Millisecond},
		{"median of odd", d(1, 2, 3), 0.5, 2 * time.Millisecond},
		{"nearest rank p50 of 100", hundred, 0.50, 50 * time.Millisecond},
		{"nearest rank p99 of 100", hundred, 0.99, 99 * time.Millisecond},
		{"max", hundred, 1, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		in := append([]float64(nil), tt.in...)
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", in, got, tt.want)
		}
		for i := range in {
			if in[i] != tt.in[i] {
				t.Errorf("median(%v) reordered its input to %v", in, tt.in)
			}
		}
	}
}

func TestWithID(t *testing.T) {
	want := `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`
	if got := string(withID([]byte(body2025), 42)); got != want {
		t.Errorf("withID(body2025, 42) = %s, want %s", got, want)
	}
}

func TestCPUPerRequest(t *testing.T) {
	// 25 ticks at 100 Hz = 250 ms over 2500 requests = 100 µs each.
	if got := cpuPerRequest(25, 2500, 100); got != 100 {
		t.Errorf("cpuPerRequest(25, 2500, 100) = %v, want 100", got)
	}
}

func TestUpstreamHandler(t *testing.T) {
	srv := httptest.NewServer(upstreamHandler(time.Second))
	defer srv.Close()
	tests := []struct {
		name       string
		method     string
		body       string
		wantStatus int
		wantBody   string
	}{
		{"tools/call", http.MethodPost, body2025, http.StatusOK, toolsCallResult},
		{"tools/list", http.MethodPost, `{"jsonrpc":"2.0","id":"mcp-auth-pin","method":"tools/list","params":{}}`, http.StatusOK,
			fmt.Sprintf(toolsListResult, `"mcp-auth-pin"`)},
		{"tools/list without id", http.MethodPost, `{"jsonrpc":"2.0","method":"tools/list"}`, http.StatusBadRequest, ""},
		{"initialize", http.MethodPost, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{}}`, http.StatusOK, fmt.Sprintf(initializeResult, "0")},
		{"put", http.MethodPut, body2025, http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+"/mcp", strings.NewReader(tt.body))
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("%s status = %d, want %d", tt.method, resp.StatusCode, tt.wantStatus)
			}
			if tt.wantBody != "" {
				if string(b) != tt.wantBody {
					t.Errorf("%s body = %s, want %s", tt.method, b, tt.wantBody)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q, want application/json", ct)
				}
			}
		})
	}
}

func TestParseBenchFlags(t *testing.T) {
	base := []string{"-plain", "http://127.0.0.1:1/mcp", "-plain-pid", "10", "-gateway", "http://127.0.0.1:2/mcp", "-gateway-pid", "11"}
	tests := []struct {
		name    string
		extra   []string
		drop    int // leading flags to drop from base
		wantErr string
	}{
		{"ok", nil, 0, ""},
		{"no urls", nil, 2, "-plain and -gateway are required"},
		{"bad proto", []string{"-proto", "2024-01-01"}, 0, "-proto"},
		{"init on 2026", []string{"-proto", proto2026, "-init"}, 0, "-init needs"},
		{"zero rounds", []string{"-rounds", "0"}, 0, "must be positive"},
		{"zero clk", []string{"-clk-tck", "0"}, 0, "-clk-tck"},
		{"profile seconds", []string{"-profile-url", "http://x", "-profile-seconds", "0"}, 0, "-profile-seconds"},
		{"rate", []string{"-rate", "4000"}, 0, ""},
		{"rate percent", []string{"-rate", "85%"}, 0, ""},
		{"rate zero", []string{"-rate", "0"}, 0, "-rate"},
		{"rate negative", []string{"-rate", "-5"}, 0, "-rate"},
		{"rate over 100%", []string{"-rate", "120%"}, 0, "-rate"},
		{"rate not a number", []string{"-rate", "fast"}, 0, "-rate"},
		{"rate NaN", []string{"-rate", "NaN"}, 0, "-rate"},
		{"rate Inf", []string{"-rate", "Inf"}, 0, "-rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append(append([]string(nil), base[tt.drop:]...), tt.extra...)
			cfg, err := parseBenchFlags(args)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseBenchFlags(%q) error = %v, want nil", args, err)
				}
				if cfg.resource != cfg.gatewayURL {
					t.Errorf("resource = %q, want the gateway URL %q", cfg.resource, cfg.gatewayURL)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseBenchFlags(%q) error = %v, want one containing %q", args, err, tt.wantErr)
			}
		})
	}
}

func testConfig() benchConfig {
	return benchConfig{
		proto: proto2025, rounds: 2, concurrency: 4, requests1: 20, requestsN: 100, warmup: 10,
		clkTck: 100, timeout: 5 * time.Second, upstreamName: "test",
		plainPID: os.Getpid(), gatewayPID: os.Getpid(),
	}
}

// TestBenchReport runs the whole measurement against the fast upstream
// (both "proxies" are the upstream itself, measured as this process).
func TestBenchReport(t *testing.T) {
	for _, proto := range []string{proto2025, proto2026} {
		t.Run(proto, func(t *testing.T) {
			// The first request's headers and body, kept once: the
			// handler runs concurrently.
			var first sync.Once
			var h http.Header
			var body string
			up := upstreamHandler(time.Second)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/debug/vars" {
					expvar.Handler().ServeHTTP(w, r)
					return
				}
				first.Do(func() {
					b, _ := io.ReadAll(r.Body)
					h, body = r.Header.Clone(), string(b)
					r.Body = io.NopCloser(bytes.NewReader(b))
				})
				up.ServeHTTP(w, r)
			}))
			defer srv.Close()
			cfg := testConfig()
			cfg.proto = proto
			cfg.cpuTarget = 1.05
			cfg.plainURL, cfg.gatewayURL = srv.URL+"/mcp", srv.URL+"/mcp"
			var out bytes.Buffer
			// Both "proxies" are this process, whose expvar counts
			// what the test server and client allocate.
			plain, gw := newTarget("reverse_proxy", cfg.plainURL, cfg.plainPID, cfg), newTarget("mcp_gateway", cfg.gatewayURL, cfg.gatewayPID, cfg)
			plain.vars, gw.vars = srv.URL+"/debug/vars", srv.URL+"/debug/vars"
			if err := bench(cfg, plain, gw, &out); err != nil {
				t.Fatalf("bench() error = %v, want nil", err)
			}
			report := out.String()
			// The row of the allocation table, not the throughput
			// table's, whose req/s reads alike (a slow run's is below
			// 1000).
			_, allocTable, _ := strings.Cut(report, "| c | proxy | allocated B/req |")
			mem := regexp.MustCompile(`\| 4 \| mcp_gateway \+ reverse_proxy \| (\d+) \| ([0-9.]+) \| ([0-9.]+) \|`).FindStringSubmatch(allocTable)
			if mem == nil {
				t.Fatalf("report has no allocation row at c=4:\n%s", report)
			}
			if b, _ := strconv.Atoi(mem[1]); b < 1000 {
				// An HTTP round trip in one process allocates kilobytes.
				t.Errorf("allocated %d B/req, want a round trip's kilobytes:\n%s", b, report)
			}
			for _, want := range []string{
				"| c | proxy | allocated B/req | objects/req | GC cycles per 1000 req |",
				"| c | proxy | req/s | p50 ms | p99 ms | proxy CPU µs/req | upstream CPU µs/req | client CPU µs/req |",
				"| 1 | reverse_proxy |", "| 4 | mcp_gateway + reverse_proxy |",
				"| 4 | ", "Targets: throughput ≥ 85% of plain at c=4",
				"Target: proxy CPU gateway/plain at c=4 (closed-loop) ≤ 1.05×:",
				"Only the gateway's requests carry an Authorization header",
				"(" + proto + ", test upstream)",
			} {
				if !strings.Contains(report, want) {
					t.Errorf("report lacks %q:\n%s", want, report)
				}
			}
			if got := h.Get("Mcp-Protocol-Version"); got != proto {
				t.Errorf("MCP-Protocol-Version = %q, want %q", got, proto)
			}
			wantMethod, wantName, wantBody := "", "", body2025
			if proto == proto2026 {
				wantMethod, wantName, wantBody = "tools/call", "echo", body2026
			}
			if h.Get("Mcp-Method") != wantMethod || h.Get("Mcp-Name") != wantName {
				t.Errorf("Mcp-Method, Mcp-Name = %q, %q, want %q, %q", h.Get("Mcp-Method"), h.Get("Mcp-Name"), wantMethod, wantName)
			}
			if body != wantBody {
				t.Errorf("body = %s, want %s", body, wantBody)
			}
		})
	}
}

// TestBenchPaced runs the paced level: with -rate "P%" it is set from the
// first round's c=N throughput, both proxies get it, and the report
// judges the CPU target at both levels.
func TestBenchPaced(t *testing.T) {
	srv := httptest.NewServer(upstreamHandler(time.Second))
	defer srv.Close()
	for _, rate := range []string{"50%", "300"} {
		t.Run(rate, func(t *testing.T) {
			cfg := testConfig()
			cfg.rate, cfg.cpuTarget = rate, 1.05
			cfg.plainURL, cfg.gatewayURL = srv.URL+"/mcp", srv.URL+"/mcp"
			var out bytes.Buffer
			if err := bench(cfg, newTarget("reverse_proxy", cfg.plainURL, cfg.plainPID, cfg), newTarget("mcp_gateway", cfg.gatewayURL, cfg.gatewayPID, cfg), &out); err != nil {
				t.Fatalf("bench() error = %v, want nil", err)
			}
			report := out.String()
			paced := regexp.MustCompile(`\| 4 @ (\d+)/s \| mcp_gateway \+ reverse_proxy \| (\d+) \|`).FindStringSubmatch(report)
			if paced == nil {
				t.Fatalf("report has no paced row:\n%s", report)
			}
			want, _ := strconv.Atoi(paced[1])
			if got, _ := strconv.Atoi(paced[2]); rate == "300" && want != 300 || got > want*11/10 {
				t.Errorf("paced row: rate %d, achieved %d req/s, want -rate %s and at most 10%% above it:\n%s", want, got, rate, report)
			}
			for _, line := range []string{
				"Target: proxy CPU gateway/plain at c=4 (closed-loop) ≤ 1.05×:",
				"Target: proxy CPU gateway/plain at c=4 @ " + paced[1] + "/s (paced, the same rate for both) ≤ 1.05×:",
				"| control: upstream CPU gateway/plain |",
			} {
				if !strings.Contains(report, line) {
					t.Errorf("report lacks %q:\n%s", line, report)
				}
			}
		})
	}
}

// TestPacedLoad: requests are not sent ahead of their slots, so n
// requests at rate r take at least (n-1)/r; closed-loop they need not.
func TestPacedLoad(t *testing.T) {
	srv := httptest.NewServer(upstreamHandler(time.Second))
	defer srv.Close()
	cfg := testConfig()
	tg := newTarget("upstream", srv.URL+"/mcp", os.Getpid(), cfg)
	lat, wall, err := pacedLoad(tg, 4, 41, 200)
	if err != nil {
		t.Fatal(err)
	}
	if len(lat) != 41 || wall < 200*time.Millisecond {
		t.Errorf("41 requests at 200/s: %d latencies in %v, want 41 in at least 200ms", len(lat), wall)
	}
}

func TestBenchFailsOnRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "" {
			http.Error(w, `{"error":"no token"}`, http.StatusUnauthorized)
			return
		}
		upstreamHandler(time.Second).ServeHTTP(w, r)
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.plainURL, cfg.gatewayURL = srv.URL, srv.URL
	plain := newTarget("reverse_proxy", cfg.plainURL, cfg.plainPID, cfg)
	plain.header.Set("Authorization", "Bearer x")
	gw := newTarget("mcp_gateway", cfg.gatewayURL, cfg.gatewayPID, cfg)
	var out bytes.Buffer
	err := bench(cfg, plain, gw, &out)
	if err == nil || !strings.Contains(err.Error(), "mcp_gateway") || !strings.Contains(err.Error(), "status 401") {
		t.Errorf("bench() error = %v, want the gateway's 401", err)
	}
	if out.Len() != 0 {
		t.Errorf("bench() wrote a report after a failure:\n%s", out.String())
	}
}

// TestBenchDemoSession drives the demo MCP server (Go SDK, sessions) with
// -init: each target gets its own session and tools/call succeeds.
func TestBenchDemoSession(t *testing.T) {
	srv := httptest.NewServer(mcpdemo.Handler())
	defer srv.Close()
	cfg := testConfig()
	cfg.initSession = true
	cfg.plainURL, cfg.gatewayURL = srv.URL+"/mcp", srv.URL+"/mcp"
	plain := newTarget("reverse_proxy", cfg.plainURL, cfg.plainPID, cfg)
	gw := newTarget("mcp_gateway", cfg.gatewayURL, cfg.gatewayPID, cfg)
	var out bytes.Buffer
	if err := bench(cfg, plain, gw, &out); err != nil {
		t.Fatalf("bench() with -init error = %v, want nil", err)
	}
	a, b := plain.header.Get("Mcp-Session-Id"), gw.header.Get("Mcp-Session-Id")
	if a == "" || b == "" || a == b {
		t.Errorf("session ids = %q, %q, want two distinct ids", a, b)
	}
}

// TestFetchToken checks the client_credentials request the issuer gets:
// metadata discovery, HTTP Basic client authentication, the resource
// indicator and the scopes.
func TestFetchToken(t *testing.T) {
	var srv *httptest.Server
	var form url.Values
	var user, pass string
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"issuer":"`+srv.URL+`","token_endpoint":"`+srv.URL+`/token"}`)
		case "/token":
			user, pass, _ = r.BasicAuth()
			_ = r.ParseForm()
			form = r.PostForm
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"access_token":"tok-123","token_type":"Bearer","expires_in":3600}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.issuer, cfg.clientID, cfg.clientSecret = srv.URL, "loadgen", "s3cret"
	cfg.resource, cfg.scope = "http://127.0.0.1:9/mcp", "mcp:use mcp:call"
	tok, err := fetchToken(t.Context(), cfg, srv.Client())
	if err != nil {
		t.Fatalf("fetchToken() error = %v, want nil", err)
	}
	if tok != "tok-123" {
		t.Errorf("fetchToken() = %q, want tok-123", tok)
	}
	if user != "loadgen" || pass != "s3cret" {
		t.Errorf("Basic credentials = %q, %q, want loadgen, s3cret", user, pass)
	}
	want := url.Values{"grant_type": {"client_credentials"}, "resource": {cfg.resource}, "scope": {cfg.scope}}
	for k, v := range want {
		if got := form[k]; len(got) != 1 || got[0] != v[0] {
			t.Errorf("token form %s = %q, want %q", k, got, v)
		}
	}

	cfg.clientSecret = ""
	if _, err := fetchToken(t.Context(), cfg, srv.Client()); err == nil || !strings.Contains(err.Error(), "LOAD_CLIENT_SECRET") {
		t.Errorf("fetchToken() without a secret error = %v, want one naming LOAD_CLIENT_SECRET", err)
	}
	cfg.clientSecret, cfg.issuer = "s3cret", srv.URL+"/nowhere"
	if _, err := fetchToken(t.Context(), cfg, srv.Client()); err == nil || !strings.Contains(err.Error(), "metadata") {
		t.Errorf("fetchToken() with no metadata error = %v, want a metadata error", err)
	}

	// The token goes to the plain proxy too only with -plain-token.
	cfg.issuer = srv.URL
	for _, plainToken := range []bool{false, true} {
		cfg.plainToken = plainToken
		plain, gw, err := targets(cfg)
		if err != nil {
			t.Fatalf("targets() error = %v", err)
		}
		if got := gw.header.Get("Authorization"); got != "Bearer tok-123" {
			t.Errorf("gateway Authorization = %q, want Bearer tok-123", got)
		}
		want := ""
		if plainToken {
			want = "Bearer tok-123"
		}
		if got := plain.header.Get("Authorization"); got != want {
			t.Errorf("plainToken=%v: plain Authorization = %q, want %q", plainToken, got, want)
		}
	}
}

func TestPorts(t *testing.T) {
	var out bytes.Buffer
	if err := runPorts([]string{"3"}, &out); err != nil {
		t.Fatalf("runPorts(3) error = %v", err)
	}
	lines := strings.Fields(out.String())
	if len(lines) != 3 || lines[0] == lines[1] || lines[1] == lines[2] || lines[0] == lines[2] {
		t.Errorf("runPorts(3) = %q, want 3 distinct ports", lines)
	}
	// Below the ephemeral range, where port 0 and outgoing connections
	// never land (where the machine leaves room for that).
	if low := freeport.EphemeralLow(); low-freeport.From >= 1000 {
		for _, l := range lines {
			if p, err := strconv.Atoi(l); err != nil || p < freeport.From || p >= low {
				t.Errorf("runPorts(3) gave %s, want a port in [%d, %d)", l, freeport.From, low)
			}
		}
	}
	if err := runPorts([]string{"0"}, &out); err == nil {
		t.Errorf("runPorts(0) error = nil, want an error")
	}
}

// TestStreamsSmoke holds a few streams of each kind through the fast
// upstream (standing in for both proxies, measured as this process).
func TestStreamsSmoke(t *testing.T) {
	srv := httptest.NewServer(upstreamHandler(20 * time.Millisecond))
	defer srv.Close()
	for _, kind := range []string{"get", "call"} {
		t.Run(kind, func(t *testing.T) {
			cfg := streamsConfig{n: 20, kind: kind, settle: 50 * time.Millisecond, window: 300 * time.Millisecond, openers: 8}
			cfg.bench = testConfig()
			cfg.bench.plainURL, cfg.bench.gatewayURL = srv.URL+"/mcp", srv.URL+"/mcp"
			var out bytes.Buffer
			if err := streams(cfg, newTarget("reverse_proxy", cfg.bench.plainURL, cfg.bench.plainPID, cfg.bench),
				newTarget("mcp_gateway", cfg.bench.gatewayURL, cfg.bench.gatewayPID, cfg.bench), &out); err != nil {
				t.Fatalf("streams() error = %v, want nil", err)
			}
			report := out.String()
			for _, want := range []string{"| proxy | streams | RSS before MiB |", "| reverse_proxy | 20 |", "| mcp_gateway | 20 |", "memory per stream"} {
				if !strings.Contains(report, want) {
					t.Errorf("report lacks %q:\n%s", want, report)
				}
			}
			if strings.Contains(report, "| 0 | - |") {
				t.Errorf("a proxy forwarded no events in the window:\n%s", report)
			}
		})
	}
}

func TestParseStreamsFlags(t *testing.T) {
	base := []string{"-plain", "http://127.0.0.1:1/mcp", "-plain-pid", "10", "-gateway", "http://127.0.0.1:2/mcp", "-gateway-pid", "11"}
	for _, tt := range []struct {
		extra   []string
		wantErr string
	}{
		{nil, ""},
		{[]string{"-kind", "x"}, "-kind"},
		{[]string{"-proto", proto2026}, "needs -proto"},
		{[]string{"-proto", proto2026, "-kind", "call"}, ""},
		{[]string{"-n", "0"}, "must be positive"},
	} {
		_, err := parseStreamsFlags(append(append([]string(nil), base...), tt.extra...))
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("parseStreamsFlags(%q) error = %v, want %q", tt.extra, err, tt.wantErr)
		}
	}
}

func TestParseStatusSize(t *testing.T) {
	status := "Name:\tcaddy\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n"
	if got, err := parseStatusSize(status, "VmRSS"); err != nil || got != 10240<<10 {
		t.Errorf("parseStatusSize(VmRSS) = %d, %v, want %d", got, err, 10240<<10)
	}
	if got, err := parseStatusSize(status, "VmHWM"); err != nil || got != 20480<<10 {
		t.Errorf("parseStatusSize(VmHWM) = %d, %v, want %d", got, err, 20480<<10)
	}
	if _, err := parseStatusSize(status, "VmSwap"); err == nil {
		t.Errorf("parseStatusSize(VmSwap) error = nil, want one")
	}
	if _, err := rss(os.Getpid(), "VmRSS"); err != nil {
		t.Errorf("rss(self) error = %v", err)
	}
}

// TestHostileSmoke floods a stand-in issuer and gateway (this process):
// distinct tokens, made-up session ids, failing client authentications
// from distinct loopback addresses, forged tokens, and cookieless
// sign-ins from other distinct addresses.
func TestHostileSmoke(t *testing.T) {
	var srv *httptest.Server
	var minted atomic.Int64
	var mu sync.Mutex
	addrs, signIns := map[string]bool{}, map[string]bool{}
	var forgedSeen atomic.Int64
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			io.WriteString(w, `{"issuer":"`+srv.URL+`","token_endpoint":"`+srv.URL+`/token","authorization_endpoint":"`+srv.URL+`/authorize"}`)
		case "/authorize":
			if r.URL.Query().Get("client_id") != "pub" || len(r.Cookies()) != 0 {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			mu.Lock()
			signIns[host] = true
			mu.Unlock()
			http.Redirect(w, r, "/login", http.StatusSeeOther)
		case "/token":
			if _, pass, _ := r.BasicAuth(); pass != "s3cret" {
				host, _, _ := net.SplitHostPort(r.RemoteAddr)
				mu.Lock()
				addrs[host] = true
				mu.Unlock()
				http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"tok-%d","token_type":"Bearer","expires_in":3600}`, minted.Add(1))
		case "/mcp":
			if strings.Contains(r.Header.Get("Authorization"), ".") {
				forgedSeen.Add(1)
				http.Error(w, "invalid token", http.StatusUnauthorized)
				return
			}
			if r.Header.Get("Mcp-Session-Id") != "" {
				http.Error(w, "session not found", http.StatusNotFound)
				return
			}
			upstreamHandler(time.Second).ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	cfg := hostileConfig{n: 20, c: 4}
	cfg.bench = testConfig()
	cfg.bench.gatewayURL, cfg.bench.resource, cfg.bench.issuer = srv.URL+"/mcp", srv.URL+"/mcp", srv.URL
	cfg.bench.clientID, cfg.bench.clientSecret = "loadgen", "s3cret"
	cfg.publicClient, cfg.publicRedirect = "pub", "http://127.0.0.1:9/cb"
	var out bytes.Buffer
	if err := hostile(cfg, &out); err != nil {
		t.Fatalf("hostile() error = %v, want nil", err)
	}
	report := out.String()
	for _, want := range []string{"distinct valid tokens", "distinct session ids", "distinct client addresses", "forged tokens", "starting a sign-in", "Peak RSS:"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if got := minted.Load(); got != 21 {
		t.Errorf("tokens minted = %d, want 21 (one to start, one per request)", got)
	}
	if len(addrs) != 20 {
		t.Errorf("distinct failing client addresses = %d, want 20", len(addrs))
	}
	if got := forgedSeen.Load(); got != 20 {
		t.Errorf("forged tokens presented = %d, want 20", got)
	}
	for a := range signIns {
		if addrs[a] {
			t.Errorf("sign-in from %s, an address of the client authentication flood: want addresses of its own", a)
		}
	}
	if len(signIns) != 20 {
		t.Errorf("distinct addresses starting a sign-in = %d, want 20", len(signIns))
	}
}

// TestMemStats reads a process's allocation counters from its expvar
// endpoint, and refuses an endpoint that does not give them: a run
// would otherwise print zeros as figures.
func TestMemStats(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/debug/vars", expvar.Handler())
	mux.HandleFunc("/other", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"cmdline":["caddy"]}`) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tg := newTarget("proxy", srv.URL+"/mcp", os.Getpid(), testConfig())

	tg.vars = srv.URL + "/debug/vars"
	a, err := tg.memStats()
	if err != nil {
		t.Fatalf("memStats() error = %v, want nil", err)
	}
	junk := make([][]byte, 100)
	for i := range junk {
		junk[i] = make([]byte, 1000)
	}
	b, err := tg.memStats()
	if err != nil {
		t.Fatalf("memStats() error = %v, want nil", err)
	}
	if d := b.sub(a); d.Mallocs < 100 || d.TotalAlloc < 100*1000 {
		t.Errorf("after 100 allocations of 1000 B: %d objects, %d B, want at least that", d.Mallocs, d.TotalAlloc)
	}
	runtime.KeepAlive(junk)

	for _, tt := range []struct{ path, wantErr string }{
		{"/nothing", "status 404"},
		{"/other", "no memstats"},
	} {
		tg.vars = srv.URL + tt.path
		if _, err := tg.memStats(); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("memStats() from %s: error = %v, want one containing %q", tt.path, err, tt.wantErr)
		}
	}
	tg.vars = ""
	if m, err := tg.memStats(); err != nil || m != (memStats{}) {
		t.Errorf("memStats() without a URL = %+v, %v, want zero, nil", m, err)
	}
}
