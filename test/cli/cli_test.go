// Package cli runs the real caddy binary, built with this plugin, the way
// an operator does: `caddy run`, `caddy validate`, `caddy adapt` and
// `caddy mcp-auth`.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// caddyBin is the binary TestMain builds.
var caddyBin string

func TestMain(m *testing.M) { os.Exit(harness.RunWithCaddy(m, &caddyBin, pgtest.Run)) }

// env runs the binary with directories of its own (harness.Env).
type env struct{ *harness.Env }

func newEnv(t *testing.T) env { return env{harness.NewEnv(t, caddyBin)} }

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

// run starts `caddy run` and waits until the issuer answers. stop stops it
// (as Ctrl-C does) and waits; it runs at the end of the test in any case.
func (e env) run(t *testing.T, config string, port int) (stop func()) {
	t.Helper()
	return e.Run(t, config, fmt.Sprintf("http://localhost:%d/.well-known/oauth-authorization-server", port)).Stop
}

// `caddy validate && caddy reload` is the habit: validate must work while
// Caddy runs with the same config and its bbolt file (which bbolt locks).
func TestValidateWhileRunning(t *testing.T) {
	e := newEnv(t)
	port, adminPort := harness.FreePort(t), harness.FreePort(t)
	config := e.Write(t, "Caddyfile", caddyfile(adminPort, port, "storage bolt "+filepath.Join(e.Home, "db", "mcp-auth.db")))
	e.run(t, config, port)

	start := time.Now()
	out, err := e.Caddy(t, 60*time.Second, "validate", "--config", config, "--adapter", "caddyfile")
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
	out, err = e.Caddy(t, 30*time.Second, "mcp-auth", "key", "rotate", "--address", fmt.Sprintf("http://localhost:%d", adminPort))
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
			storage := strings.ReplaceAll(tc.storage, "{home}", e.Home)
			config := e.Write(t, "Caddyfile", caddyfile(harness.FreePort(t), harness.FreePort(t), storage))
			absent := filepath.Join(e.Home, tc.absent)
			for _, args := range [][]string{
				{"adapt", "--config", config, "--adapter", "caddyfile"},
				{"validate", "--config", config, "--adapter", "caddyfile"},
			} {
				out, err := e.Caddy(t, 60*time.Second, args...)
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
		out, err := e.Caddy(t, 30*time.Second, args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("caddy %s = %v, want a non-zero exit:\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// The README: the checks of a configuration against its sites run when it
// starts (caddy run, caddy reload), not in caddy validate, and a reload
// that fails them leaves the running configuration in place.
func TestStartChecksNotInValidate(t *testing.T) {
	e := newEnv(t)
	port, adminPort := harness.FreePort(t), harness.FreePort(t)
	good := caddyfile(adminPort, port, "storage bolt "+filepath.Join(e.Home, "db", "mcp-auth.db"))
	config := e.Write(t, "Caddyfile", good)
	p := e.Run(t, config, fmt.Sprintf("http://localhost:%d/.well-known/oauth-authorization-server", port))

	// A group's scopes for a resource nothing declares: refused at start.
	bad := strings.Replace(good, "\t\tissuer http://", "\t\tgroup eng {\n\t\t\tscopes http://localhost:1/other notes:read\n\t\t}\n\t\tissuer http://", 1)
	badConfig := e.Write(t, "Caddyfile.bad", bad)
	out, err := e.Caddy(t, 60*time.Second, "validate", "--config", badConfig, "--adapter", "caddyfile")
	if err != nil || !strings.Contains(out, "Valid configuration") {
		t.Fatalf("caddy validate of a config its start refuses = %v, want valid (the check runs at start):\n%s", err, out)
	}
	out, err = e.Caddy(t, 60*time.Second, "reload", "--config", badConfig, "--adapter", "caddyfile", "--address", fmt.Sprintf("localhost:%d", adminPort))
	if err == nil || !strings.Contains(out, "which no mcp_gateway or resource declares") {
		t.Fatalf("caddy reload of that config = %v, want it refused naming the group's resource:\n%s", err, out)
	}
	// The running configuration still serves.
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/.well-known/oauth-protected-resource/mcp", port))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("after the refused reload: protected-resource metadata = %d, want 200 from the running config", resp.StatusCode)
	}

	// A reverse_proxy that requests reach without the gateway: no word
	// from validate, a warning when the configuration starts.
	const warning = "reverse_proxy reachable without mcp_gateway"
	unguarded := strings.Replace(good, "\trespond \"upstream\"\n", "\trespond \"upstream\"\n\thandle_errors {\n\t\treverse_proxy localhost:1\n\t}\n", 1)
	unguardedConfig := e.Write(t, "Caddyfile.unguarded", unguarded)
	out, err = e.Caddy(t, 60*time.Second, "validate", "--config", unguardedConfig, "--adapter", "caddyfile")
	if err != nil || strings.Contains(out, warning) {
		t.Fatalf("caddy validate of a config with an unguarded proxy = %v, want valid and no warning (the check runs at start):\n%s", err, out)
	}
	if strings.Contains(p.Output(), warning) {
		t.Fatalf("the first config, with no unguarded proxy, was warned about:\n%s", p.Output())
	}
	out, err = e.Caddy(t, 60*time.Second, "reload", "--config", unguardedConfig, "--adapter", "caddyfile", "--address", fmt.Sprintf("localhost:%d", adminPort))
	if err != nil {
		t.Fatalf("caddy reload of the config with an unguarded proxy = %v:\n%s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), warning) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the running Caddy's log after the reload:\n%s", warning, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The CLI sends only a password's hash, so it checks the length itself:
// against the running configuration's min_password_length, not the default
// alone, as the admin API does with a password in the clear.
func TestCLIPasswordMinLength(t *testing.T) {
	e := newEnv(t)
	port, adminPort := harness.FreePort(t), harness.FreePort(t)
	config := e.Write(t, "Caddyfile", caddyfile(adminPort, port, "storage memory\n\t\tmin_password_length 12"))
	e.run(t, config, port)
	addUser := func(name, password string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, e.Bin, "mcp-auth", "user", "add", name, "--address", fmt.Sprintf("localhost:%d", adminPort))
		cmd.Env, cmd.Dir, cmd.Stdin = e.Vars, e.Home, strings.NewReader(password+"\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tt := range []struct {
		name, password, want string
		ok                   bool
	}{
		{"shorter than the default", "short", "at least 12", false},
		{"the default's length, under the configured", "elevenchars", "at least 12", false},
		{"the configured length", "twelve chars", "added user", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := addUser("user"+strconv.Itoa(len(tt.password)), tt.password)
			if (err == nil) != tt.ok || !strings.Contains(out, tt.want) {
				t.Errorf("caddy mcp-auth user add with a %d-character password = %v:\n%s\nwant %q", len(tt.password), err, out, tt.want)
			}
		})
	}
}

// The operational log says at start where the store is (the file to back
// up), and never the PostgreSQL DSN.
func TestStartLogNamesTheStore(t *testing.T) {
	e := newEnv(t)
	port, adminPort := harness.FreePort(t), harness.FreePort(t)
	db := filepath.Join(e.Home, "db", "mcp-auth.db")
	config := e.Write(t, "Caddyfile", caddyfile(adminPort, port, "storage bolt "+db))
	p := e.Run(t, config, fmt.Sprintf("http://localhost:%d/.well-known/oauth-authorization-server", port))
	// The line is written before the issuer answers, but reaches the
	// output buffer through a pipe that another goroutine copies.
	var started map[string]any
	for deadline := time.Now().Add(10 * time.Second); started == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for line := range strings.Lines(p.Output()) {
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == "mcp_auth started" {
				started = entry
			}
		}
	}
	if started == nil {
		t.Fatalf("no mcp_auth started line in the log:\n%s", p.Output())
	}
	if started["store"] != "bolt "+db || started["issuer"] != fmt.Sprintf("http://localhost:%d", port) || started["gateways"] != 1.0 {
		t.Errorf("mcp_auth started: %v, want store %q, the issuer and 1 gateway", started, "bolt "+db)
	}
}
