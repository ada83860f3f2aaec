// Package cli runs the real caddy binary, built with this plugin, the way
// an operator does: `caddy run`, `caddy validate`, `caddy adapt` and
// `caddy mcp-auth`.
package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// caddyBin is the binary TestMain builds.
var caddyBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "caddy-cli-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	caddyBin = filepath.Join(dir, "caddy")
	if out, err := exec.Command("go", "build", "-o", caddyBin, "./caddy").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./caddy: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// env gives the binary data and config directories of its own, so that
// nothing outside the test's directories is read or written.
type env struct {
	home string
	vars []string
}

func newEnv(t *testing.T) env {
	home := t.TempDir()
	return env{home: home, vars: append(os.Environ(),
		"HOME="+home,
		"XDG_DATA_HOME="+filepath.Join(home, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(home, "config"),
	)}
}

// caddy runs the binary to completion, at most timeout.
func (e env) caddy(t *testing.T, timeout time.Duration, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, caddyBin, args...)
	cmd.Env = e.vars
	cmd.Dir = e.home
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("caddy %s did not finish within %v:\n%s", strings.Join(args, " "), timeout, out)
	}
	return string(out), err
}

// caddyfile is a complete config: issuer and gateway on one loopback site.
// storage is the mcp_auth storage line ("" for the default).
func caddyfile(adminPort, port int, storage string) string {
	return fmt.Sprintf(`{
	admin localhost:%[1]d
	mcp_auth {
		issuer http://localhost:%[2]d
		%[3]s
	}
}

http://localhost:%[2]d {
	mcp_issuer
	mcp_gateway {
		resource http://localhost:%[2]d/mcp
	}
	respond "upstream"
}
`, adminPort, port, storage)
}

func (e env) write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(e.home, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// run starts `caddy run` and waits until the issuer answers. stop stops it
// (as Ctrl-C does) and waits; it runs at the end of the test in any case.
func (e env) run(t *testing.T, config string, port int) (stop func()) {
	t.Helper()
	cmd := exec.Command(caddyBin, "run", "--config", config, "--adapter", "caddyfile")
	cmd.Env = e.vars
	cmd.Dir = e.home
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop = sync.OnceFunc(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	t.Cleanup(stop)
	url := fmt.Sprintf("http://localhost:%d/.well-known/oauth-authorization-server", port)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("caddy run exited:\n%s", out.String())
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return stop
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("issuer not ready at %s:\n%s", url, out.String())
	return nil
}

// `caddy validate && caddy reload` is the habit: validate must work while
// Caddy runs with the same config and its bbolt file (which bbolt locks).
func TestValidateWhileRunning(t *testing.T) {
	e := newEnv(t)
	port, adminPort := freePort(t), freePort(t)
	config := e.write(t, "Caddyfile", caddyfile(adminPort, port, "storage bolt "+filepath.Join(e.home, "db", "mcp-auth.db")))
	e.run(t, config, port)

	start := time.Now()
	out, err := e.caddy(t, 60*time.Second, "validate", "--config", config, "--adapter", "caddyfile")
	took := time.Since(start)
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Fatalf("caddy validate while running = %v:\n%s", err, out)
	}
	if took > 10*time.Second {
		t.Errorf("caddy validate while running took %v, want well under 10s", took)
	}
	t.Logf("caddy validate beside a running caddy: %v", took.Round(time.Millisecond))

	// The running instance still serves, and the CLI reaches it with the
	// admin address as a URL.
	out, err = e.caddy(t, 30*time.Second, "mcp-auth", "key", "rotate", "--address", fmt.Sprintf("http://localhost:%d", adminPort))
	if err != nil || !strings.Contains(out, "new signing key: ") {
		t.Errorf("caddy mcp-auth key rotate --address http://localhost:%d = %v:\n%s", adminPort, err, out)
	}
}

// Neither validate nor adapt opens the store or creates anything: not the
// configured storage directory, not the default one.
func TestValidateAndAdaptCreateNothing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		storage string
		absent  string // relative to the env's home
	}{
		{"configured path", "storage bolt {home}/absent/sub/mcp-auth.db", "absent"},
		{"default path", "", "data/caddy/mcp-auth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			storage := strings.ReplaceAll(tc.storage, "{home}", e.home)
			config := e.write(t, "Caddyfile", caddyfile(freePort(t), freePort(t), storage))
			absent := filepath.Join(e.home, tc.absent)
			for _, args := range [][]string{
				{"adapt", "--config", config, "--adapter", "caddyfile"},
				{"validate", "--config", config, "--adapter", "caddyfile"},
			} {
				out, err := e.caddy(t, 60*time.Second, args...)
				if err != nil {
					t.Fatalf("caddy %s = %v:\n%s", args[0], err, out)
				}
				if _, err := os.Stat(absent); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("after caddy %s: Stat(%s) = %v, want it not to exist", args[0], absent, err)
				}
			}
		})
	}
}

// Scripts see a mistyped subcommand as a failure.
func TestMCPAuthUnknownSubcommand(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{"mcp-auth", "frobnicate"},
		{"mcp-auth", "user", "frobnicate"},
		{"mcp-auth", "user"},
		{"mcp-auth"},
	} {
		out, err := e.caddy(t, 30*time.Second, args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("caddy %s = %v, want a non-zero exit:\n%s", strings.Join(args, " "), err, out)
		}
	}
}
