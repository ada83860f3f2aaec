package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// streamsConfig is what `load streams` is told.
type streamsConfig struct {
	bench   benchConfig // URLs, pids, token, protocol revision
	n       int         // streams per proxy
	kind    string      // "get" (GET streams) or "call" (SSE answers to tools/call)
	settle  time.Duration
	window  time.Duration
	openers int
}

func parseStreamsFlags(args []string) (streamsConfig, error) {
	var c streamsConfig
	fs := flag.NewFlagSet("streams", flag.ContinueOnError)
	fs.StringVar(&c.bench.plainURL, "plain", "", "MCP endpoint URL through plain reverse_proxy")
	fs.IntVar(&c.bench.plainPID, "plain-pid", 0, "pid of the plain Caddy process")
	fs.StringVar(&c.bench.gatewayURL, "gateway", "", "MCP endpoint URL through mcp_gateway + reverse_proxy")
	fs.IntVar(&c.bench.gatewayPID, "gateway-pid", 0, "pid of the gateway Caddy process")
	fs.StringVar(&c.bench.issuer, "issuer", "", "issuer URL of the gateway process (token via client_credentials)")
	fs.StringVar(&c.bench.clientID, "client-id", "loadgen", "confidential client id (secret in $LOAD_CLIENT_SECRET)")
	fs.StringVar(&c.bench.scope, "scope", "", "space-separated scopes to request")
	fs.StringVar(&c.bench.proto, "proto", proto2025, "MCP protocol revision of the streams")
	fs.IntVar(&c.bench.clkTck, "clk-tck", 100, "clock ticks per second (getconf CLK_TCK)")
	fs.IntVar(&c.n, "n", 10000, "concurrent streams per proxy")
	fs.StringVar(&c.kind, "kind", "get", "get: GET streams; call: in-flight SSE answers to tools/call")
	fs.DurationVar(&c.settle, "settle", time.Second, "wait after the streams are open before measuring memory")
	fs.DurationVar(&c.window, "window", 10*time.Second, "how long events are counted for CPU per event")
	fs.IntVar(&c.openers, "openers", 64, "streams opened concurrently")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.bench.clientSecret = os.Getenv("LOAD_CLIENT_SECRET")
	c.bench.resource = c.bench.gatewayURL
	c.bench.concurrency, c.bench.timeout = 1, 0
	switch {
	case c.bench.plainURL == "" || c.bench.gatewayURL == "":
		return c, errors.New("-plain and -gateway are required")
	case c.bench.plainPID <= 0 || c.bench.gatewayPID <= 0:
		return c, errors.New("-plain-pid and -gateway-pid are required")
	case c.kind != "get" && c.kind != "call":
		return c, fmt.Errorf("-kind %q: want get or call", c.kind)
	case c.kind == "get" && c.bench.proto != proto2025:
		return c, fmt.Errorf("-kind get needs -proto %s (%s has no GET stream)", proto2025, c.bench.proto)
	case c.n < 1 || c.openers < 1 || c.window <= 0 || c.settle < 0 || c.bench.clkTck < 1:
		return c, errors.New("-n, -openers, -window and -clk-tck must be positive")
	}
	return c, nil
}

// streamResult is one proxy holding n streams.
type streamResult struct {
	name             string
	n                int
	rssBefore, rssAt int64 // bytes
	events           int64 // events the clients received in the window
	ticks            uint64
	window           time.Duration
	threadsAt, fdsAt int
}

func (r streamResult) perStream() float64 { return float64(r.rssAt-r.rssBefore) / float64(r.n) }

// holdStreams opens n streams through t, measures the proxy process while
// they are open, and closes them.
func holdStreams(t *target, cfg streamsConfig) (streamResult, error) {
	res := streamResult{name: t.name, n: cfg.n, window: cfg.window}
	var err error
	if res.rssBefore, err = rss(t.pid, "VmRSS"); err != nil {
		return res, err
	}
	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: -1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var events atomic.Int64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	opened := make(chan error, cfg.n)
	sem := make(chan struct{}, cfg.openers)
	for range cfg.n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := openStream(ctx, client, t, cfg.kind)
			<-sem
			opened <- err
			if err != nil {
				return
			}
			defer body.Close()
			br := bufio.NewReader(body)
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if bytes.HasPrefix(line, []byte("data:")) {
					events.Add(1)
				}
			}
		}()
	}
	for range cfg.n {
		if err := <-opened; err != nil {
			return res, fmt.Errorf("%s: opening a stream: %w", t.name, err)
		}
	}
	time.Sleep(cfg.settle)
	if res.rssAt, err = rss(t.pid, "VmRSS"); err != nil {
		return res, err
	}
	res.threadsAt, _ = procCount(t.pid, "task")
	res.fdsAt, _ = procCount(t.pid, "fd")
	t0, err := cpuTicks(t.pid)
	if err != nil {
		return res, err
	}
	e0 := events.Load()
	time.Sleep(cfg.window)
	t1, err := cpuTicks(t.pid)
	if err != nil {
		return res, err
	}
	res.events, res.ticks = events.Load()-e0, t1-t0
	return res, nil
}

// openStream starts one stream and reads up to the upstream's opening
// comment, so that it is known to be open end to end.
func openStream(ctx context.Context, client *http.Client, t *target, kind string) (io.ReadCloser, error) {
	method, body := http.MethodGet, io.Reader(nil)
	if kind == "call" {
		method, body = http.MethodPost, bytes.NewReader(t.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.url, body)
	if err != nil {
		return nil, err
	}
	req.Header = t.header.Clone()
	if kind == "get" {
		req.Header.Del("Content-Type")
		req.Header.Set("Accept", "text/event-stream")
	} else {
		req.Header.Set(streamHeader, "1")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		resp.Body.Close()
		return nil, fmt.Errorf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	// The opening comment: ": open" and a blank line.
	first := make([]byte, len(": open\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		resp.Body.Close()
		return nil, fmt.Errorf("reading the opening comment: %w", err)
	}
	return resp.Body, nil
}

// rss reads a size field (VmRSS, VmHWM) of /proc/<pid>/status, in bytes.
func rss(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory: %w", err)
	}
	return parseStatusSize(string(b), field)
}

// parseStatusSize finds "field:   123 kB" in a /proc status file.
func parseStatusSize(status, field string) (int64, error) {
	for line := range strings.Lines(status) {
		name, value, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(value)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse /proc status %s: %q", field, value)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc status %s: %w", field, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("parse /proc status: no %s", field)
}

// procCount counts the entries of /proc/<pid>/<dir> (threads, fds).
func procCount(pid int, dir string) (int, error) {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/%s", pid, dir))
	return len(es), err
}

func runStreams(args []string, out io.Writer) error {
	cfg, err := parseStreamsFlags(args)
	if err != nil {
		return err
	}
	plain, gw, err := targets(cfg.bench)
	if err != nil {
		return err
	}
	return streams(cfg, plain, gw, out)
}

// streams holds n streams through each proxy in turn (plain first) and
// writes the report.
func streams(cfg streamsConfig, plain, gw *target, out io.Writer) error {
	var results []streamResult
	for _, t := range []*target{plain, gw} {
		if cfg.kind == "get" {
			// A GET stream is a session's: the gateway refuses one
			// without.
			if err := initSession(t); err != nil {
				return err
			}
		}
		r, err := holdStreams(t, cfg)
		if err != nil {
			return err
		}
		results = append(results, r)
		// Let the closed streams' connections go before the next proxy.
		time.Sleep(cfg.settle)
	}
	what := "GET streams"
	if cfg.kind == "call" {
		what = "in-flight SSE answers to tools/call"
	}
	fmt.Fprintf(out, "\n### %d concurrent %s (%s), plain reverse_proxy vs mcp_gateway\n\n", cfg.n, what, cfg.bench.proto)
	fmt.Fprintf(out, "Host: %d CPUs%s. Memory = VmRSS of each Caddy process with the streams open minus before; CPU = utime+stime over a %v window while the upstream sends one event per stream per tick.\n\n",
		runtime.NumCPU(), loadAverage(), cfg.window)
	fmt.Fprintln(out, "| proxy | streams | RSS before MiB | RSS open MiB | KiB per stream | threads | fds | events forwarded | CPU µs per event |")
	fmt.Fprintln(out, "|:--|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range results {
		fmt.Fprintf(out, "| %s | %d | %.1f | %.1f | %.1f | %d | %d | %d | %s |\n", r.name, r.n, mib(r.rssBefore), mib(r.rssAt),
			r.perStream()/1024, r.threadsAt, r.fdsAt, r.events, perEvent(r, cfg.bench.clkTck))
	}
	p, g := results[0], results[1]
	fmt.Fprintf(out, "\nGateway/plain: memory per stream %s, CPU per event %s.\n", ratio(g.perStream(), p.perStream()),
		ratio(cpuPerRequest(g.ticks, int(max(g.events, 1)), cfg.bench.clkTck), cpuPerRequest(p.ticks, int(max(p.events, 1)), cfg.bench.clkTck)))
	return nil
}

func perEvent(r streamResult, clkTck int) string {
	if r.events == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", cpuPerRequest(r.ticks, int(r.events), clkTck))
}

func ratio(a, b float64) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
