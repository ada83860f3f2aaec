package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Protocol revisions the load generator speaks.
const (
	proto2025 = "2025-11-25" // -init for a session
	proto2026 = "2026-07-28" // stateless, Mcp-Method / Mcp-Name headers
)

// Request bodies: a small tools/call. 2026-07-28 requests carry their
// protocol version in _meta, which the gateway compares with the header.
const (
	body2025 = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`
	body2026 = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`
)

// benchConfig is what `load bench` is told.
type benchConfig struct {
	plainURL, gatewayURL string
	plainPID, gatewayPID int
	upstreamPID          int // 0: not measured
	upstreamName         string

	issuer, clientID, clientSecret string
	// plainIssuer: the "plain" process is a gateway too, with this issuer.
	plainIssuer     string
	resource, scope string

	proto       string
	initSession bool
	// plainToken sends the gateway's Authorization header to the plain
	// proxy too, so both proxies read byte-identical requests (plain
	// forwards the token to the upstream, the gateway strips it).
	plainToken bool
	// cpuTarget is the proxy CPU ratio gateway/plain at c=N the report
	// judges (issue 10: 1.10 with the audit log on, 1.05 with audit
	// denials_only); 0 leaves it out.
	cpuTarget float64
	// rate, when set, adds a paced level after c=N in every round: the
	// same N workers, each request sent no earlier than its slot on a
	// schedule of this many requests per second, the same for both
	// proxies. Either a number (req/s) or "P%": P percent of the lower
	// of the two proxies' median c=N throughput in the first round.
	rate string

	rounds      int
	concurrency int // N; every round runs c=1 and c=N
	requests1   int // requests per run at c=1
	requestsN   int // requests per run at c=N
	warmup      int
	clkTck      int
	timeout     time.Duration
	verbose     bool

	// profileURL, when set, is the gateway Caddy's pprof CPU profile
	// endpoint; after the rounds the gateway is driven at c=N while the
	// profile is taken, and the profile is written to profileOut. The
	// plain Caddy is profiled the same way when plainProfileURL is set,
	// for a diff (go tool pprof -diff_base).
	profileURL, profileOut           string
	plainProfileURL, plainProfileOut string
	profileSeconds                   int

	// plainVars, gatewayVars: each Caddy's expvar endpoint (its admin
	// API's /debug/vars), read around every run for the Go runtime's
	// allocation counters; empty: not read.
	plainVars, gatewayVars string
}

func parseBenchFlags(args []string) (benchConfig, error) {
	var c benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&c.plainURL, "plain", "", "MCP endpoint URL through plain reverse_proxy")
	fs.IntVar(&c.plainPID, "plain-pid", 0, "pid of the plain Caddy process")
	fs.StringVar(&c.gatewayURL, "gateway", "", "MCP endpoint URL through mcp_gateway + reverse_proxy")
	fs.IntVar(&c.gatewayPID, "gateway-pid", 0, "pid of the gateway Caddy process")
	fs.IntVar(&c.upstreamPID, "upstream-pid", 0, "pid of the upstream (optional, for its CPU per request)")
	fs.StringVar(&c.upstreamName, "upstream-name", "fast", "upstream description for the report")
	fs.StringVar(&c.issuer, "issuer", "", "issuer URL of the gateway process (token via client_credentials)")
	fs.StringVar(&c.plainIssuer, "plain-issuer", "", "issuer URL of the first process when it is a gateway too (an A/B run of two builds): its requests carry a token of its own")
	fs.StringVar(&c.clientID, "client-id", "loadgen", "confidential client id (secret in $LOAD_CLIENT_SECRET)")
	fs.StringVar(&c.resource, "resource", "", "resource indicator for the token (default: the -gateway URL)")
	fs.StringVar(&c.scope, "scope", "", "space-separated scopes to request (default: all of the resource's)")
	fs.StringVar(&c.proto, "proto", proto2025, "MCP protocol revision: "+proto2025+" or "+proto2026)
	fs.BoolVar(&c.initSession, "init", false, "initialize an MCP session per proxy first (2025-11-25)")
	fs.BoolVar(&c.plainToken, "plain-token", false, "send the same Authorization header to the plain proxy (byte-identical requests)")
	fs.Float64Var(&c.cpuTarget, "cpu-target", 0, "judge the median proxy CPU ratio gateway/plain at c=N against this (0: not judged)")
	fs.StringVar(&c.rate, "rate", "", `also run c=N paced at this rate, the same for both proxies: req/s, or "P%" of the slower proxy's c=N throughput in round 1 (empty: no paced level)`)
	fs.IntVar(&c.rounds, "rounds", 5, "rounds; each runs plain then gateway at c=1 and at c=N")
	fs.IntVar(&c.concurrency, "c", 16, "concurrency N")
	fs.IntVar(&c.requests1, "n1", 5000, "requests per run at c=1")
	fs.IntVar(&c.requestsN, "n", 20000, "requests per run at c=N")
	fs.IntVar(&c.warmup, "warmup", 2000, "unmeasured requests per proxy before the first round")
	fs.IntVar(&c.clkTck, "clk-tck", 100, "clock ticks per second (getconf CLK_TCK)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.BoolVar(&c.verbose, "v", false, "also print every run")
	fs.StringVar(&c.profileURL, "profile-url", "", "gateway admin pprof URL, e.g. http://127.0.0.1:2020/debug/pprof/profile (optional)")
	fs.StringVar(&c.profileOut, "profile-out", "gateway.pprof", "where to write the gateway CPU profile")
	fs.StringVar(&c.plainProfileURL, "plain-profile-url", "", "plain Caddy admin pprof URL (optional, with -profile-url)")
	fs.StringVar(&c.plainProfileOut, "plain-profile-out", "plain.pprof", "where to write the plain Caddy CPU profile")
	fs.IntVar(&c.profileSeconds, "profile-seconds", 15, "CPU profile duration")
	fs.StringVar(&c.plainVars, "plain-vars", "", "plain Caddy's expvar URL (admin /debug/vars), for bytes and objects allocated per request (optional)")
	fs.StringVar(&c.gatewayVars, "gateway-vars", "", "gateway Caddy's expvar URL (admin /debug/vars), for bytes and objects allocated per request (optional)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.clientSecret = os.Getenv("LOAD_CLIENT_SECRET")
	if c.resource == "" {
		c.resource = c.gatewayURL
	}
	switch {
	case c.plainURL == "" || c.gatewayURL == "":
		return c, errors.New("-plain and -gateway are required")
	case c.plainPID <= 0 || c.gatewayPID <= 0:
		return c, errors.New("-plain-pid and -gateway-pid are required")
	case c.proto != proto2025 && c.proto != proto2026:
		return c, fmt.Errorf("-proto %q: want %s or %s", c.proto, proto2025, proto2026)
	case c.initSession && c.proto != proto2025:
		return c, fmt.Errorf("-init needs -proto %s (%s has no sessions)", proto2025, proto2026)
	case c.rounds < 1 || c.concurrency < 1 || c.requests1 < 1 || c.requestsN < 1 || c.warmup < 0:
		return c, errors.New("-rounds, -c, -n1 and -n must be positive, -warmup not negative")
	case c.clkTck < 1:
		return c, errors.New("-clk-tck must be positive")
	case c.profileURL != "" && c.profileSeconds < 1:
		return c, errors.New("-profile-seconds must be positive")
	}
	if c.rate != "" {
		if _, _, err := parseRate(c.rate); err != nil {
			return c, err
		}
	}
	return c, nil
}

// parseRate reads -rate: a rate in req/s, or a percentage (of the slower
// proxy's c=N throughput) when pct is true.
func parseRate(s string) (v float64, pct bool, err error) {
	num, pct := strings.CutSuffix(s, "%")
	v, err = strconv.ParseFloat(num, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) || (pct && v > 100) {
		return 0, false, fmt.Errorf("-rate %q: want a positive req/s or a percentage up to 100%%", s)
	}
	return v, pct, nil
}

// target is one proxy under test.
type target struct {
	name   string
	url    string
	pid    int
	client *http.Client
	header http.Header
	body   []byte
	// uniqueIDs gives every request its own JSON-RPC id: a server with
	// sessions refuses a duplicate in-flight id. Without sessions the
	// fixed body (id 1) is sent.
	uniqueIDs bool
	lastID    atomic.Int64
	// vars is the process's expvar URL ("" when not read).
	vars string
}

func newTarget(name, url string, pid int, cfg benchConfig) *target {
	tr := &http.Transport{
		Proxy:               nil, // loopback; never an environment proxy
		MaxIdleConns:        2 * cfg.concurrency,
		MaxIdleConnsPerHost: 2 * cfg.concurrency,
		IdleConnTimeout:     5 * time.Minute,
		DisableCompression:  true,
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	h.Set("MCP-Protocol-Version", cfg.proto)
	body := body2025
	if cfg.proto == proto2026 {
		h.Set("Mcp-Method", "tools/call")
		h.Set("Mcp-Name", "echo")
		body = body2026
	}
	return &target{
		name:   name,
		url:    url,
		pid:    pid,
		client: &http.Client{Transport: tr, Timeout: cfg.timeout},
		header: h,
		body:   []byte(body),
	}
}

// call sends one tools/call and checks the answer is a JSON-RPC result;
// buf is the caller's reusable response buffer.
func (t *target) call(buf *bytes.Buffer) error {
	body := t.body
	if t.uniqueIDs {
		body = withID(t.body, t.lastID.Add(1))
	}
	req, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("new request: %w", err)
	}
	req.Header = t.header.Clone()
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	buf.Reset()
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, truncate(buf.String(), 300))
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"result"`)) {
		return fmt.Errorf("not a JSON-RPC result: %s", truncate(buf.String(), 300))
	}
	return nil
}

// withID returns body (which has "id":1) with the id replaced by id.
func withID(body []byte, id int64) []byte {
	repl := append(strconv.AppendInt([]byte(`"id":`), id, 10), ',')
	return bytes.Replace(body, []byte(`"id":1,`), repl, 1)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// runResult is one measured run of one proxy at one concurrency.
type runResult struct {
	n             int
	wall          time.Duration
	lat           []time.Duration // sorted
	proxyTicks    uint64
	upstreamTicks uint64
	clientTicks   uint64 // the load generator itself
	// mem is the proxy's allocation over the run (zero when its expvar
	// URL was not given).
	mem memStats
	// kernel is the proxy's system calls and context switches over the
	// run.
	kernel kernelCounts
}

func (r runResult) rps() float64 { return float64(r.n) / r.wall.Seconds() }

// percentile is the nearest-rank percentile (0 < p <= 1) of sorted latencies.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// cpuPerRequest converts a tick delta to microseconds per request.
func cpuPerRequest(ticks uint64, n, clkTck int) float64 {
	return float64(ticks) * 1e6 / float64(clkTck) / float64(n)
}

// load sends n requests with c workers and returns the sorted latencies
// and wall time. Any failed request fails the run: numbers over errors
// would measure the error path.
func load(t *target, c, n int) ([]time.Duration, time.Duration, error) {
	return pacedLoad(t, c, n, 0)
}

// pacedLoad is load with request i sent no earlier than i/rate seconds
// after the start (rate 0: as fast as the workers go). A worker late for
// its slot sends at once, so a proxy that cannot keep up runs closed-loop
// and its throughput shows it. Latency is measured from the send.
func pacedLoad(t *target, c, n int, rate float64) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() > 0 {
					return
				}
				if rate > 0 {
					time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
				}
				t0 := time.Now()
				err := t.call(&buf)
				lat[i] = time.Since(t0)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return nil, 0, fmt.Errorf("%s: request failed: %w", t.name, firstErr)
	}
	slices.Sort(lat)
	return lat, wall, nil
}

// measure runs one measured load (paced at rate when rate > 0) and reads
// the CPU time of the proxy, this process (the client) and the upstream
// around it.
func measure(t *target, upstreamPID, c, n int, rate float64) (runResult, error) {
	pids := []int{t.pid, os.Getpid()}
	if upstreamPID > 0 {
		pids = append(pids, upstreamPID)
	}
	memBefore, err := t.memStats()
	if err != nil {
		return runResult{}, err
	}
	kBefore, err := readKernelCounts(t.pid)
	if err != nil {
		return runResult{}, err
	}
	before, err := readTicks(pids)
	if err != nil {
		return runResult{}, err
	}
	lat, wall, err := pacedLoad(t, c, n, rate)
	if err != nil {
		return runResult{}, err
	}
	after, err := readTicks(pids)
	if err != nil {
		return runResult{}, err
	}
	kAfter, err := readKernelCounts(t.pid)
	if err != nil {
		return runResult{}, err
	}
	memAfter, err := t.memStats()
	if err != nil {
		return runResult{}, err
	}
	r := runResult{n: n, wall: wall, lat: lat, proxyTicks: after[0] - before[0], clientTicks: after[1] - before[1], mem: memAfter.sub(memBefore), kernel: kAfter.sub(kBefore)}
	if upstreamPID > 0 {
		r.upstreamTicks = after[2] - before[2]
	}
	return r, nil
}

func readTicks(pids []int) ([]uint64, error) {
	out := make([]uint64, len(pids))
	for i, pid := range pids {
		var err error
		if out[i], err = cpuTicks(pid); err != nil {
			return nil, fmt.Errorf("pid %d: %w", pid, err)
		}
	}
	return out, nil
}

// fetchToken gets an access token for the resource with client_credentials
// from the issuer's token endpoint (found in its RFC 8414 metadata).
func fetchToken(ctx context.Context, cfg benchConfig, hc *http.Client) (string, error) {
	if cfg.clientSecret == "" {
		return "", errors.New("LOAD_CLIENT_SECRET is not set")
	}
	tokenURL, err := tokenEndpoint(ctx, hc, cfg.issuer)
	if err != nil {
		return "", err
	}
	cc := clientcredentials.Config{
		ClientID:       cfg.clientID,
		ClientSecret:   cfg.clientSecret,
		TokenURL:       tokenURL,
		AuthStyle:      oauth2.AuthStyleInHeader,
		EndpointParams: map[string][]string{"resource": {cfg.resource}},
	}
	if cfg.scope != "" {
		cc.Scopes = strings.Fields(cfg.scope)
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, hc))
	if err != nil {
		return "", fmt.Errorf("client_credentials token: %w", err)
	}
	return tok.AccessToken, nil
}

// tokenEndpoint is the issuer's token endpoint.
func tokenEndpoint(ctx context.Context, hc *http.Client, issuer string) (string, error) {
	md, err := issuerEndpoints(ctx, hc, issuer)
	return md.TokenEndpoint, err
}

// endpoints are the members of an issuer's metadata the load generator uses.
type endpoints struct {
	TokenEndpoint         string `json:"token_endpoint"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
}

// issuerEndpoints reads the issuer's RFC 8414 metadata; it has a token
// endpoint.
func issuerEndpoints(ctx context.Context, hc *http.Client, issuer string) (endpoints, error) {
	var md endpoints
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/oauth-authorization-server"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return md, fmt.Errorf("metadata request: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return md, fmt.Errorf("fetch issuer metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return md, fmt.Errorf("fetch issuer metadata: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&md); err != nil || md.TokenEndpoint == "" {
		return md, fmt.Errorf("issuer metadata has no token_endpoint (%v)", err)
	}
	return md, nil
}

// initSession runs the 2025 handshake (initialize, then
// notifications/initialized) through t and makes t send the session id
// it got. Each proxy gets its own session: the gateway hands out a
// session id bound to the token, not the upstream's.
func initSession(t *target) error {
	post := func(body string, h http.Header) (*http.Response, []byte, error) {
		req, err := http.NewRequest(http.MethodPost, t.url, strings.NewReader(body))
		if err != nil {
			return nil, nil, err
		}
		req.Header = h
		resp, err := t.client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, b, err
	}
	h := t.header.Clone()
	h.Del("MCP-Protocol-Version") // not sent on initialize
	resp, b, err := post(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"`+proto2025+`","capabilities":{},"clientInfo":{"name":"caddy-mcp-auth-load","version":"1"}}}`, h)
	if err != nil {
		return fmt.Errorf("%s: initialize: %w", t.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: initialize: status %d: %s", t.name, resp.StatusCode, truncate(string(b), 300))
	}
	sid := resp.Header.Get("Mcp-Session-Id")
	if sid == "" {
		return fmt.Errorf("%s: initialize: no Mcp-Session-Id", t.name)
	}
	t.header.Set("Mcp-Session-Id", sid)
	resp, b, err = post(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, t.header.Clone())
	if err != nil {
		return fmt.Errorf("%s: notifications/initialized: %w", t.name, err)
	}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: notifications/initialized: status %d: %s", t.name, resp.StatusCode, truncate(string(b), 300))
	}
	return nil
}

func runBench(args []string, out io.Writer) error {
	cfg, err := parseBenchFlags(args)
	if err != nil {
		return err
	}
	plain, gw, err := targets(cfg)
	if err != nil {
		return err
	}
	return bench(cfg, plain, gw, out)
}

// targets are the two proxies under test; the gateway's carries a token
// from the issuer when one is configured.
func targets(cfg benchConfig) (plain, gw *target, err error) {
	plain = newTarget("reverse_proxy", cfg.plainURL, cfg.plainPID, cfg)
	gw = newTarget("mcp_gateway", cfg.gatewayURL, cfg.gatewayPID, cfg)
	plain.vars, gw.vars = cfg.plainVars, cfg.gatewayVars
	if cfg.issuer != "" {
		tok, err := targetToken(cfg, gw)
		if err != nil {
			return nil, nil, err
		}
		if cfg.plainToken {
			plain.header.Set("Authorization", "Bearer "+tok)
		}
	}
	if cfg.plainIssuer != "" {
		// The first process is a gateway too: a token from its issuer,
		// for its resource.
		a := cfg
		a.issuer, a.resource = cfg.plainIssuer, cfg.plainURL
		if _, err := targetToken(a, plain); err != nil {
			return nil, nil, fmt.Errorf("first process: %w", err)
		}
	}
	return plain, gw, nil
}

// targetToken gets t a token from cfg's issuer for cfg's resource and
// sends it with t's requests.
func targetToken(cfg benchConfig, t *target) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := fetchToken(ctx, cfg, t.client)
	if err != nil {
		return "", err
	}
	t.header.Set("Authorization", "Bearer "+tok)
	return tok, nil
}

// level is one load level of every round: c workers, closed-loop or
// paced at rate req/s.
type level struct {
	c    int
	rate float64 // 0: closed-loop
	// pacedPct marks a level whose rate is set after the first round's
	// closed-loop run (-rate "P%").
	pacedPct bool
}

func (l level) paced() bool { return l.rate > 0 || l.pacedPct }

func (l level) String() string {
	if l.rate > 0 {
		return fmt.Sprintf("c=%d @ %.0f/s", l.c, l.rate)
	}
	return fmt.Sprintf("c=%d", l.c)
}

// bench runs the rounds and writes the report.
func bench(cfg benchConfig, plain, gw *target, out io.Writer) error {
	targets := []*target{plain, gw}
	if cfg.initSession {
		for _, t := range targets {
			t.uniqueIDs = true
			if err := initSession(t); err != nil {
				return err
			}
		}
	}
	for _, t := range targets {
		if cfg.warmup > 0 {
			if _, _, err := load(t, cfg.concurrency, cfg.warmup); err != nil {
				return fmt.Errorf("warmup: %w", err)
			}
		}
	}
	levels := []level{{c: 1}}
	if cfg.concurrency > 1 {
		levels = append(levels, level{c: cfg.concurrency})
	}
	var pct float64
	if cfg.rate != "" {
		rate, isPct, _ := parseRate(cfg.rate) // checked by parseBenchFlags
		if isPct {
			pct, rate = rate, 0
		}
		levels = append(levels, level{c: cfg.concurrency, rate: rate, pacedPct: isPct})
	}
	// results[level][target][round]
	results := make([][][]runResult, len(levels))
	for li := range levels {
		results[li] = make([][]runResult, len(targets))
	}
	for round := range cfg.rounds {
		for li := range levels {
			lv := &levels[li]
			if lv.rate == 0 && lv.paced() {
				// "P%": of the slower proxy's closed-loop c=N
				// throughput in this, the first, round.
				closed := results[li-1]
				lv.rate = pct / 100 * min(closed[0][0].rps(), closed[1][0].rps())
			}
			n := cfg.requestsN
			if lv.c == 1 {
				n = cfg.requests1
			}
			for ti, t := range targets {
				r, err := measure(t, cfg.upstreamPID, lv.c, n, lv.rate)
				if err != nil {
					return fmt.Errorf("round %d: %w", round+1, err)
				}
				results[li][ti] = append(results[li][ti], r)
				if cfg.verbose {
					fmt.Fprintf(os.Stderr, "round %d %-16s %-14s %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms  %6.1f µs/req\n",
						round+1, lv, t.name, r.rps(), ms(percentile(r.lat, 0.50)), ms(percentile(r.lat, 0.99)),
						cpuPerRequest(r.proxyTicks, r.n, cfg.clkTck))
				}
			}
		}
	}
	writeReport(out, cfg, levels, results)
	if cfg.profileURL == "" {
		return nil
	}
	fmt.Fprintln(out)
	profiles := []struct {
		t        *target
		url, out string
	}{{gw, cfg.profileURL, cfg.profileOut}, {plain, cfg.plainProfileURL, cfg.plainProfileOut}}
	for _, p := range profiles {
		if p.url == "" {
			continue
		}
		n, err := profile(p.t, p.url, p.out, cfg)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "CPU profile of %s: %s, %d s at c=%d, %d requests (%.0f req/s); sampled µs/req = profile seconds × %.1f.\n",
			p.t.name, p.out, cfg.profileSeconds, cfg.concurrency, n, float64(n)/float64(cfg.profileSeconds), 1e6/float64(n))
	}
	return nil
}

// profile drives t at c=N while fetching a CPU profile of its process,
// and returns how many requests were served meanwhile.
func profile(t *target, url, out string, cfg benchConfig) (int64, error) {
	stop := make(chan struct{})
	var n atomic.Int64
	errc := make(chan error, 1)
	go func() { errc <- loadUntil(t, cfg.concurrency, stop, &n) }()
	perr := fetchProfile(url, out, cfg.profileSeconds)
	close(stop)
	if err := <-errc; err != nil {
		return 0, fmt.Errorf("profile load: %w", err)
	}
	return n.Load(), perr
}

func fetchProfile(url, out string, seconds int) error {
	u := url + "?seconds=" + strconv.Itoa(seconds)
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: time.Duration(seconds+30) * time.Second}
	resp, err := hc.Get(u)
	if err != nil {
		return fmt.Errorf("fetch profile: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("fetch profile: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch profile: status %d: %s", resp.StatusCode, truncate(string(b), 300))
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	return nil
}

// loadUntil sends requests with c workers until stop is closed, counting
// them in n.
func loadUntil(t *target, c int, stop <-chan struct{}, n *atomic.Int64) error {
	var wg sync.WaitGroup
	var firstErr error
	var errOnce sync.Once
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := t.call(&buf); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// memStats are the Go runtime's cumulative allocation counters of a
// process, as expvar publishes them (runtime.MemStats).
type memStats struct {
	TotalAlloc uint64 // bytes allocated
	Mallocs    uint64 // objects allocated
	NumGC      uint32 // completed GC cycles
}

func (m memStats) sub(o memStats) memStats {
	return memStats{TotalAlloc: m.TotalAlloc - o.TotalAlloc, Mallocs: m.Mallocs - o.Mallocs, NumGC: m.NumGC - o.NumGC}
}

// memStats reads t's process's counters from its expvar URL (zero when
// t has none). The read itself allocates a few kilobytes in the process,
// nothing beside a run's.
func (t *target) memStats() (memStats, error) {
	if t.vars == "" {
		return memStats{}, nil
	}
	resp, err := t.client.Get(t.vars)
	if err != nil {
		return memStats{}, fmt.Errorf("%s: expvar: %w", t.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return memStats{}, fmt.Errorf("%s: expvar: status %d", t.name, resp.StatusCode)
	}
	var v struct {
		MemStats *memStats `json:"memstats"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return memStats{}, fmt.Errorf("%s: expvar: %w", t.name, err)
	}
	if v.MemStats == nil || v.MemStats.Mallocs == 0 {
		return memStats{}, fmt.Errorf("%s: expvar: no memstats at %s", t.name, t.vars)
	}
	return *v.MemStats, nil
}
