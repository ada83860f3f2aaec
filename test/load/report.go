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
	// upstreamRatio is the upstream's CPU per request in the gateway's
	// runs over plain's: the upstream does the same work for both, so
	// anything but 1 is the load's dynamics (how many requests each
	// process wakes for at a time), which skew the proxy ratio as well.
	upstreamRatio float64
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
	var ratio, p50, p99, cpu, cpuRatio, bound, upRatio []float64
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
		if a.upstreamTicks > 0 {
			upRatio = append(upRatio, float64(b.upstreamTicks)/float64(b.n)/(float64(a.upstreamTicks)/float64(a.n)))
		}
		chainA := float64(a.clientTicks+a.upstreamTicks+a.proxyTicks) / float64(a.n)
		chainB := float64(b.clientTicks+b.upstreamTicks+b.proxyTicks) / float64(b.n)
		if chainB > 0 {
			bound = append(bound, chainA/chainB)
		}
	}
	return paired{ratio: median(ratio), p50Added: median(p50), p99Added: median(p99), cpuAdded: median(cpu), cpuRatio: median(cpuRatio), cpuBoundRatio: median(bound), upstreamRatio: median(upRatio)}
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
func writeReport(w io.Writer, cfg benchConfig, levels []level, results [][][]runResult) {
	fmt.Fprintf(w, "\n### mcp_gateway vs plain reverse_proxy: small tools/call (%s, %s upstream)\n\n", cfg.proto, cfg.upstreamName)
	fmt.Fprintf(w, "%d rounds, runs alternated (plain, gateway, plain, gateway, ...); %d requests per run at c=1, %d at c=%d; medians over rounds.\n",
		cfg.rounds, cfg.requests1, cfg.requestsN, cfg.concurrency)
	if last := levels[len(levels)-1]; last.paced() {
		how := ""
		if last.pacedPct {
			how = fmt.Sprintf(" (-rate %s: of the slower proxy's c=%d throughput in round 1)", cfg.rate, cfg.concurrency)
		}
		fmt.Fprintf(w, "Paced level %s%s: both proxies get the same request rate, so each process wakes for as many requests at a time in both; closed-loop c=%d gives the slower proxy a lower rate, which raises every process's CPU per request (see the upstream's control column).\n",
			last, how, cfg.concurrency)
	}
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
	for li, lv := range levels {
		for ti, name := range names {
			s := summarize(results[li][ti], cfg.clkTck)
			up := "-"
			if cfg.upstreamPID > 0 {
				up = fmt.Sprintf("%.1f", s.upstreamCPU)
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %.3f | %.3f | %.1f | %s | %.1f |\n", lv.column(), name, s.rps, s.p50, s.p99, s.cpu, up, s.clientCPU)
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "| c | throughput gateway/plain | CPU-bound throughput gateway/plain | p50 added ms | p99 added ms | proxy CPU added µs/req | proxy CPU gateway/plain | control: upstream CPU gateway/plain |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|--:|")
	pairs := make([]paired, len(levels))
	for li, lv := range levels {
		p := pair(results[li][0], results[li][1], cfg.clkTck)
		pairs[li] = p
		bound, control := "-", "-"
		if cfg.upstreamPID > 0 && lv.c > 1 {
			// At c=1 throughput is bound by latency, not CPU.
			bound = fmt.Sprintf("%.1f%%", 100*p.cpuBoundRatio)
		}
		if cfg.upstreamPID > 0 {
			control = fmt.Sprintf("%.2f×", p.upstreamRatio)
		}
		fmt.Fprintf(w, "| %s | %.1f%% | %s | %+.3f | %+.3f | %+.1f | %.2f× | %s |\n", lv.column(), 100*p.ratio, bound, p.p50Added, p.p99Added, p.cpuAdded, p.cpuRatio, control)
	}

	writeMemory(w, levels, names, results)
	writeKernel(w, levels, names, results)

	fmt.Fprintln(w)
	closed := len(levels) - 1
	if levels[closed].paced() {
		closed--
	}
	fmt.Fprintf(w, "Targets: throughput ≥ %.0f%% of plain at c=%d: %.1f%% %s", 100*targetThroughput, levels[closed].c, 100*pairs[closed].ratio, verdict(pairs[closed].ratio >= targetThroughput))
	for li, lv := range levels[:closed+1] {
		fmt.Fprintf(w, "; p99 added < %v at c=%d: %+.3f ms %s", targetP99Added, lv.c, pairs[li].p99Added, verdict(pairs[li].p99Added < ms(targetP99Added)))
	}
	fmt.Fprintln(w, ".")
	if cfg.cpuTarget > 0 {
		for li := closed; li < len(levels); li++ {
			how := "closed-loop"
			if levels[li].paced() {
				how = "paced, the same rate for both"
			}
			control := ""
			if cfg.upstreamPID > 0 {
				control = fmt.Sprintf("; control %.2f×", pairs[li].upstreamRatio)
			}
			fmt.Fprintf(w, "Target: proxy CPU gateway/plain at %s (%s) ≤ %.2f×: %.2f× %s (median of %d alternated rounds%s).\n",
				levels[li], how, cfg.cpuTarget, pairs[li].cpuRatio, verdict(pairs[li].cpuRatio <= cfg.cpuTarget), cfg.rounds, control)
		}
	}
	fmt.Fprintln(w, "CPU-bound throughput: plain's CPU per request of the whole chain (client + upstream + proxy) over the gateway's, the req/s ratio a machine with no other work would show when CPU-bound.")
	fmt.Fprintln(w, "Control: the upstream does the same work behind both proxies; its CPU per request reads above 1× where the gateway's lower throughput makes every process wake for fewer requests at a time, and the proxy ratio carries that effect too.")
	fmt.Fprintln(w, "At c=1 each request wakes every process in turn, so CPU per request there includes scheduler idle spinning and varies with other load; the c=N figures are the steady ones.")
	minN := min(cfg.requests1, cfg.requestsN)
	fmt.Fprintf(w, "CPU resolution: one clock tick is %.1f µs/req at %d requests per run.\n",
		cpuPerRequest(1, minN, cfg.clkTck), minN)
}

// column is the level in the tables' c column.
func (l level) column() string {
	if l.rate > 0 {
		return fmt.Sprintf("%d @ %.0f/s", l.c, l.rate)
	}
	return fmt.Sprintf("%d", l.c)
}

// writeMemory prints the proxies' allocation per request, medians over
// rounds, when their expvar URLs were given (-plain-vars, -gateway-vars).
func writeMemory(w io.Writer, levels []level, names []string, results [][][]runResult) {
	if len(results) == 0 || len(results[0][0]) == 0 || results[0][0][0].mem.Mallocs == 0 && results[0][1][0].mem.Mallocs == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| c | proxy | allocated B/req | objects/req | GC cycles per 1000 req |")
	fmt.Fprintln(w, "|--:|:--|--:|--:|--:|")
	for li, lv := range levels {
		for ti, name := range names {
			var b, o, gc []float64
			for _, r := range results[li][ti] {
				if r.mem.Mallocs == 0 {
					continue
				}
				n := float64(r.n)
				b = append(b, float64(r.mem.TotalAlloc)/n)
				o = append(o, float64(r.mem.Mallocs)/n)
				gc = append(gc, 1000*float64(r.mem.NumGC)/n)
			}
			if len(b) == 0 {
				fmt.Fprintf(w, "| %s | %s | - | - | - |\n", lv.column(), name)
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %.1f | %.2f |\n", lv.column(), name, median(b), median(o), median(gc))
		}
	}
	fmt.Fprintln(w, "Allocation: the Go runtime's counters of each Caddy process (expvar memstats, read before and after each run); GC work grows with the bytes allocated.")
}

// writeKernel prints the proxies' system calls and context switches per
// request, medians over rounds: each is a trip through the kernel and,
// for a switch, a wakeup the scheduler shares the two cores with.
func writeKernel(w io.Writer, levels []level, names []string, results [][][]runResult) {
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| c | proxy | read/write syscalls per req | context switches per req |")
	fmt.Fprintln(w, "|--:|:--|--:|--:|")
	for li, lv := range levels {
		for ti, name := range names {
			var sc, cs []float64
			for _, r := range results[li][ti] {
				sc = append(sc, float64(r.kernel.syscalls)/float64(r.n))
				cs = append(cs, float64(r.kernel.switches)/float64(r.n))
			}
			fmt.Fprintf(w, "| %s | %s | %.2f | %.2f |\n", lv.column(), name, median(sc), median(cs))
		}
	}
	fmt.Fprintln(w, "Kernel: syscr + syscw of /proc/<pid>/io (read- and write-family system calls of the whole process) and the voluntary + nonvoluntary context switches of its threads, read before and after each run.")
}
