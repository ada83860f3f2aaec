package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestScriptsSmoke runs run.sh in each mode, and targets.sh, with the built
// Caddy and tiny sizes: the scripts and their Caddyfiles work and print
// what the README quotes. The measurements themselves are not judged.
func TestScriptsSmoke(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed by test/load/run.sh: %v", tool, err)
		}
	}
	bin, err := harness.BuildCaddy(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	run := func(t *testing.T, script string, env []string, args ...string) string {
		t.Helper()
		// A script that hangs is killed with everything it started (its
		// own process group), so no Caddy or upstream outlives the test.
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(root, "test/load", script), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 10 * time.Second
		cmd.Dir = root
		cmd.Env = append(os.Environ(), append([]string{"CADDY=" + bin, "OUT=" + t.TempDir()}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v (context: %v)\n%s", script, env, err, ctx.Err(), out)
		}
		return string(out)
	}
	small := []string{"-rounds", "1", "-n1", "20", "-n", "200", "-warmup", "20", "-c", "4"}
	t.Run("bench", func(t *testing.T) {
		for _, env := range [][]string{
			{"AUDIT=on"},
			{"AUDIT=denials_only", "PROTO=2026-07-28"},
			{"AUDIT=buffered", "PLAIN_TOKEN=on", "SESSION=off"},
			{"GATEWAY=off", "PLAIN_TOKEN=on"},
			{"GATEWAY=plain"},
		} {
			out := run(t, "run.sh", env, small...)
			for _, want := range []string{"| 4 | mcp_gateway + reverse_proxy |", "Target: proxy CPU gateway/plain at c=4 (closed-loop) ≤ 1."} {
				if !strings.Contains(out, want) {
					t.Errorf("%v: output lacks %q:\n%s", env, want, out)
				}
			}
		}
	})
	t.Run("plain log", func(t *testing.T) {
		out := run(t, "run.sh", []string{"PLAIN_LOG=on", "PROTO=2026-07-28"}, small...)
		m := regexp.MustCompile(`Plain access log: ([0-9]+) entries`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("output lacks the plain access log's count:\n%s", out)
		}
		// Every request the plain proxy served: warmup, c=1, c=4.
		if n, _ := strconv.Atoi(m[1]); n < 20+20+200 {
			t.Errorf("plain access log has %d entries, want one per request (at least 240):\n%s", n, out)
		}
		if !strings.Contains(out, "PLAIN_LOG=on: the plain site logs every request") {
			t.Errorf("report does not say the plain site logs:\n%s", out)
		}
	})
	t.Run("ab", func(t *testing.T) {
		// Two gateways, each with its own issuer and token: a refused
		// request fails the run.
		out := run(t, "run.sh", []string{"GATEWAY=ab", "AUDIT=denials_only"}, small...)
		for _, want := range []string{"| 4 | reverse_proxy |", "| 4 | mcp_gateway + reverse_proxy |", "GATEWAY=ab: both processes run the same gateway"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("streams", func(t *testing.T) {
		// 120 streams of one principal: more than max_in_flight's
		// default, which run.sh raises to N.
		for _, kind := range []string{"get", "call"} {
			out := run(t, "run.sh", []string{"MODE=streams", "KIND=" + kind, "N=120", "TICK=200ms"}, "-settle", "200ms", "-window", "1s")
			if !strings.Contains(out, "per stream") {
				t.Errorf("KIND=%s: output lacks the per-stream figures:\n%s", kind, out)
			}
		}
	})
	t.Run("hostile", func(t *testing.T) {
		out := run(t, "run.sh", []string{"MODE=hostile", "N=40"})
		if !strings.Contains(out, "Peak") && !strings.Contains(out, "peak") {
			t.Errorf("output lacks the peak RSS:\n%s", out)
		}
	})
	t.Run("targets", func(t *testing.T) {
		out := run(t, "targets.sh", []string{"ROUNDS=1", "AUDITS=on denials_only", "ARGS=-n 200 -warmup 20 -c 4"})
		measured := `[0-9.]+ / [0-9.]+ µs, \*\*[0-9.]+×\*\* \(control [0-9.]+×\) \| (PASS|MISS)`
		rows := regexp.MustCompile(`(?m)^\| 202[56]-[0-9-]+ \| (on|denials_only) \| ≤ 1\.(10|05)× \| `+measured+` \| [0-9]+/s: `+measured+` \|$`).FindAllString(out, -1)
		if len(rows) != 4 {
			t.Errorf("targets.sh printed %d rows of the table, want 4 (closed-loop and paced):\n%s", len(rows), out)
		}
		out = run(t, "targets.sh", []string{"ROUNDS=1", "AUDITS=denials_only", "PROTOS=2026-07-28", "RATE=off", "ARGS=-n 200 -warmup 20 -c 4"})
		rows = regexp.MustCompile(`(?m)^\| 2026-07-28 \| denials_only \| ≤ 1\.05× \| `+measured+` \| – \| – \|$`).FindAllString(out, -1)
		if len(rows) != 1 {
			t.Errorf("targets.sh RATE=off printed %d rows without a paced figure, want 1:\n%s", len(rows), out)
		}
	})
}
