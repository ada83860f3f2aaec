package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Targets from the issue: the gateway keeps at least 85% of plain
// reverse_proxy throughput and adds under 1 ms at p99.
const (
	targetThroughput = 0.85
	targetP99Added   = time.Millisecond
)

// summary is the medians over rounds of one proxy at one concurrency.
type summary struct {
	rps, p50, p99               float64 // req/s, ms, ms
	cpu, upstreamCPU, clientCPU float64 // µs per request
}

// paired are the medians over rounds of gateway-vs-plain differences,
// each taken within one round (adjacent runs), which cancels slow drift
// of the shared machine.
type paired struct {
	ratio              float64 // gateway req/s / plain req/s
	p50Added, p99Added float64 // ms
	cpuAdded, cpuRatio float64 // µs per request, gateway/plain
	// cpuBoundRatio is plain's over the gateway's CPU per request of the
	// whole chain (client + upstream + proxy): the throughput ratio when
	// CPU is the only limit, which other work on a shared machine does
	// not skew the way it skews req/s.
	cpuBoundRatio float64
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func summarize(runs []runResult, clkTck int) summary {
	var rps, p50, p99, cpu, up, cl []float64
	for _, r := range runs {
		cl = append(cl, cpuPerRequest(r.clientTicks, r.n, clkTck))
		rps = append(rps, r.rps())
		p50 = append(p50, ms(percentile(r.lat, 0.50)))
		p99 = append(p99, ms(percentile(r.lat, 0.99)))
		cpu = append(cpu, cpuPerRequest(r.proxyTicks, r.n, clkTck))
		up = append(up, cpuPerRequest(r.upstreamTicks, r.n, clkTck))
	}
	return summary{rps: median(rps), p50: median(p50), p99: median(p99), cpu: median(cpu), upstreamCPU: median(up), clientCPU: median(cl)}
}

func pair(plain, gw []runResult, clkTck int) paired {
	var ratio, p50, p99, cpu, cpuRatio, bound []float64
	for i := range min(len(plain), len(gw)) {
		a, b := plain[i], gw[i]
		ratio = append(ratio, b.rps()/a.rps())
		p50 = append(p50, ms(percentile(b.lat, 0.50))-ms(percentile(a.lat, 0.50)))
		p99 = append(p99, ms(percentile(b.lat, 0.99))-ms(percentile(a.lat, 0.99)))
		ca, cb := cpuPerRequest(a.proxyTicks, a.n, clkTck), cpuPerRequest(b.proxyTicks, b.n, clkTck)
		cpu = append(cpu, cb-ca)
		if ca > 0 {
			cpuRatio = append(cpuRatio, cb/ca)
		}
		chainA := float64(a.clientTicks+a.upstreamTicks+a.proxyTicks) / float64(a.n)
		chainB := float64(b.clientTicks+b.upstreamTicks+b.proxyTicks) / float64(b.n)
		if chainB > 0 {
			bound = append(bound, chainA/chainB)
		}
	}
	return paired{ratio: median(ratio), p50Added: median(p50), p99Added: median(p99), cpuAdded: median(cpu), cpuRatio: median(cpuRatio), cpuBoundRatio: median(bound)}
}

// loadAverage describes /proc/loadavg: other work on the machine skews
// throughput and tail latency far more than CPU time per request.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return fmt.Sprintf(" (load average %s %s %s at the end)", f[0], f[1], f[2])
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// writeReport prints Markdown tables (for pasting into README.md).
// results is indexed [level][target: 0 plain, 1 gateway][round].
func writeReport(w io.Writer, cfg benchConfig, levels []int, results [][][]runResult) {
	fmt.Fprintf(w, "\n### mcp_gateway vs plain reverse_proxy: small tools/call (%s, %s upstream)\n\n", cfg.proto, cfg.upstreamName)
	fmt.Fprintf(w, "%d rounds, runs alternated (plain, gateway, plain, gateway, ...); %d requests per run at c=1, %d at c=%d; medians over rounds.\n",
		cfg.rounds, cfg.requests1, cfg.requestsN, cfg.concurrency)
	fmt.Fprintf(w, "Host: %d CPUs shared by client, upstream and both Caddy processes%s. CPU = utime+stime of each Caddy process from /proc/<pid>/stat (CLK_TCK %d).\n\n",
		runtime.NumCPU(), loadAverage(), cfg.clkTck)
	if cfg.plainToken {
		fmt.Fprintln(w, "Both proxies get byte-identical requests: the plain one gets the same Authorization header, which it forwards to the upstream.")
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "Only the gateway's requests carry an Authorization header (PLAIN_TOKEN=on sends it to the plain proxy too).")
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "| c | proxy | req/s | p50 ms | p99 ms | proxy CPU µs/req | upstream CPU µs/req | client CPU µs/req |")
	fmt.Fprintln(w, "|--:|:--|--:|--:|--:|--:|--:|--:|")
	names := []string{"reverse_proxy", "mcp_gateway + reverse_proxy"}
	for li, c := range levels {
		for ti, name := range names {
			s := summarize(results[li][ti], cfg.clkTck)
			up := "-"
			if cfg.upstreamPID > 0 {
				up = fmt.Sprintf("%.1f", s.upstreamCPU)
			}
			fmt.Fprintf(w, "| %d | %s | %.0f | %.3f | %.3f | %.1f | %s | %.1f |\n", c, name, s.rps, s.p50, s.p99, s.cpu, up, s.clientCPU)
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "| c | throughput gateway/plain | CPU-bound throughput gateway/plain | p50 added ms | p99 added ms | proxy CPU added µs/req | proxy CPU gateway/plain |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|")
	pairs := make([]paired, len(levels))
	for li, c := range levels {
		p := pair(results[li][0], results[li][1], cfg.clkTck)
		pairs[li] = p
		bound := "-"
		if cfg.upstreamPID > 0 && c > 1 {
			// At c=1 throughput is bound by latency, not CPU.
			bound = fmt.Sprintf("%.1f%%", 100*p.cpuBoundRatio)
		}
		fmt.Fprintf(w, "| %d | %.1f%% | %s | %+.3f | %+.3f | %+.1f | %.2f× |\n", c, 100*p.ratio, bound, p.p50Added, p.p99Added, p.cpuAdded, p.cpuRatio)
	}

	fmt.Fprintln(w)
	last := len(levels) - 1
	fmt.Fprintf(w, "Targets: throughput ≥ %.0f%% of plain at c=%d: %.1f%% %s", 100*targetThroughput, levels[last], 100*pairs[last].ratio, verdict(pairs[last].ratio >= targetThroughput))
	for li, c := range levels {
		fmt.Fprintf(w, "; p99 added < %v at c=%d: %+.3f ms %s", targetP99Added, c, pairs[li].p99Added, verdict(pairs[li].p99Added < ms(targetP99Added)))
	}
	fmt.Fprintln(w, ".")
	if cfg.cpuTarget > 0 {
		fmt.Fprintf(w, "Target: proxy CPU gateway/plain at c=%d ≤ %.2f×: %.2f× %s (median of %d alternated rounds).\n",
			levels[last], cfg.cpuTarget, pairs[last].cpuRatio, verdict(pairs[last].cpuRatio <= cfg.cpuTarget), cfg.rounds)
	}
	fmt.Fprintln(w, "CPU-bound throughput: plain's CPU per request of the whole chain (client + upstream + proxy) over the gateway's, the req/s ratio a machine with no other work would show when CPU-bound.")
	fmt.Fprintln(w, "At c=1 each request wakes every process in turn, so CPU per request there includes scheduler idle spinning and varies with other load; the c=N figures are the steady ones.")
	minN := min(cfg.requests1, cfg.requestsN)
	fmt.Fprintf(w, "CPU resolution: one clock tick is %.1f µs/req at %d requests per run.\n",
		cpuPerRequest(1, minN, cfg.clkTck), minN)
}
