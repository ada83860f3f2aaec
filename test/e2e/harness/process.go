package harness

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// caddyMain is the package of the caddy binary with this plugin.
const caddyMain = "github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness/caddy"

// BuildCaddy builds the caddy binary with this plugin into dir and returns
// its path, for tests that run Caddy as a process (call it from TestMain).
func BuildCaddy(dir string) (string, error) {
	bin := filepath.Join(dir, "caddy")
	if out, err := exec.Command("go", "build", "-o", bin, caddyMain).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", caddyMain, err, out)
	}
	return bin, nil
}

// BuildRelease builds the caddy binary of an earlier commit of this
// repository (its tree as git archive gives it, built as BuildCaddy
// builds this one's) into dir and returns its path, for tests that run
// an earlier release beside this one. It needs the commit in the
// repository the test runs in: a shallow clone fails, saying so.
func BuildRelease(dir, commit string) (string, error) {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	tarball := filepath.Join(dir, "src.tar")
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return "", fmt.Errorf("git rev-parse --show-toplevel: %w", err)
	}
	// From the top: in a folder git archive takes only that folder.
	archive := exec.Command("git", "archive", "--format=tar", "-o", tarball, commit)
	archive.Dir = strings.TrimSpace(string(top))
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive %s (is the commit in this clone? a shallow one lacks it): %w\n%s", commit, err, out)
	}
	if out, err := exec.Command("tar", "-x", "-f", tarball, "-C", src).CombinedOutput(); err != nil {
		return "", fmt.Errorf("tar -x of commit %s: %w\n%s", commit, err, out)
	}
	bin := filepath.Join(dir, "caddy")
	build := exec.Command("go", "build", "-o", bin, caddyMain)
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s at %s: %w\n%s", caddyMain, commit, err, out)
	}
	return bin, nil
}

// Env runs the caddy binary with data and config directories of its own,
// so that nothing outside the test's directories is read or written.
type Env struct {
	Bin  string
	Home string
	Vars []string // the environment, HOME and XDG directories in Home
}

// NewEnv returns an environment for bin in a new temporary directory.
func NewEnv(t testing.TB, bin string) *Env {
	home := t.TempDir()
	return &Env{Bin: bin, Home: home, Vars: append(os.Environ(),
		"HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
	)}
}

// Write writes a file into the environment's home and returns its path.
func (e *Env) Write(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(e.Home, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Caddy runs the binary to completion, at most timeout, and returns its
// combined output.
func (e *Env) Caddy(t testing.TB, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Bin, args...)
	cmd.Env = e.Vars
	cmd.Dir = e.Home
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("caddy %s did not finish within %v:\n%s", strings.Join(args, " "), timeout, out)
	}
	return string(out), err
}

// Process is a running `caddy run`.
type Process struct {
	cmd    *exec.Cmd
	out    lockedBuffer
	exited chan struct{}
	// Stop stops Caddy (as Ctrl-C does) and waits; it runs at the end of
	// the test in any case.
	Stop func()
}

// Kill kills Caddy with SIGKILL, as a crash would, and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Output is what Caddy has written to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Run starts `caddy run` with the Caddyfile config and waits until ready
// answers 200.
func (e *Env) Run(t testing.TB, config, ready string) *Process {
	t.Helper()
	p := &Process{cmd: exec.Command(e.Bin, "run", "--config", config, "--adapter", "caddyfile"), exited: make(chan struct{})}
	p.cmd.Env = e.Vars
	p.cmd.Dir = e.Home
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	p.Stop = sync.OnceFunc(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	})
	t.Cleanup(p.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			t.Fatalf("caddy run exited:\n%s", p.Output())
		default:
		}
		resp, err := http.Get(ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.Stop()
	t.Fatalf("caddy not ready at %s:\n%s", ready, p.Output())
	return nil
}

// lockedBuffer is a bytes.Buffer that a process writes while a test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// RunWithCaddy is a TestMain's body for tests of the caddy binary: it
// builds the binary into a temporary directory, points *bin at it, runs
// the tests with run (m.Run, or a wrapper such as pgtest.Run), removes the
// directory and returns the exit code.
func RunWithCaddy(m *testing.M, bin *string, run func(*testing.M) int) int {
	dir, err := os.MkdirTemp("", "caddy-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *bin, err = BuildCaddy(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return run(m)
}
