// Package harness runs Caddy in process for the integration tests in
// test/e2e and test/browser, and completes OAuth flows over plain HTTP the
// way the page automation contract in COMMON.md describes.
//
// Caddy keeps one running configuration per process, so tests that use
// Start must not run in parallel with each other.
package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // registers the caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-mcp-auth/caddy-mcp-auth/caddymodule" // registers mcp_auth, mcp_issuer, mcp_gateway
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/freeport"
	"golang.org/x/crypto/bcrypt"
)

// FreePort returns a TCP port that was free a moment ago, below the
// kernel's ephemeral range (freeport), where the ports of the tests
// running beside do not land before the test's server binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freeport.Port()
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return port
}

// Adapt turns a Caddyfile into Caddy's JSON configuration.
func Adapt(caddyfile string) ([]byte, []caddyconfig.Warning, error) {
	a := caddyconfig.GetAdapter("caddyfile")
	if a == nil {
		return nil, nil, errors.New("caddyfile adapter not registered")
	}
	cfg, warns, err := a.Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return nil, warns, fmt.Errorf("adapt caddyfile: %w", err)
	}
	return cfg, warns, nil
}

// Load adapts caddyfile and runs it, replacing the running configuration.
func Load(t testing.TB, caddyfile string) error {
	t.Helper()
	cfg, warns, err := Adapt(caddyfile)
	for _, w := range warns {
		t.Logf("caddyfile warning: %s", w.String())
	}
	if err != nil {
		return err
	}
	if err := caddy.Load(cfg, true); err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	WaitListenersReplaced(t, listenPorts(cfg)...)
	// The replaced configuration's server closes its keep-alive
	// connections as they fall idle, possibly after a test has taken one
	// from the pool for a POST, which is not retried: start afresh.
	http.DefaultClient.CloseIdleConnections()
	return nil
}

// listenPorts returns the TCP ports the http app of cfg listens on.
func listenPorts(cfg []byte) []int {
	var c struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Listen []string `json:"listen"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if json.Unmarshal(cfg, &c) != nil {
		return nil
	}
	var ports []int
	for _, srv := range c.Apps.HTTP.Servers {
		for _, l := range srv.Listen {
			na, err := caddy.ParseNetworkAddress(l)
			if err != nil || !strings.HasPrefix(na.Network, "tcp") {
				continue
			}
			for p := na.StartPort; p <= na.EndPort; p++ {
				ports = append(ports, int(p))
			}
		}
	}
	return ports
}

// WaitListenersReplaced waits until no address has two listening sockets
// on any of ports. Caddy binds a reloaded configuration's listeners with
// SO_REUSEPORT beside the old ones and returns from a load before the old
// ones are closed; the kernel spreads new connections over both, and one
// queued on an old socket when it closes is reset or ended unanswered.
// A test that connects after a reload must not land there. Without
// /proc/net (not Linux) it returns at once.
func WaitListenersReplaced(t testing.TB, ports ...int) {
	t.Helper()
	if len(ports) == 0 {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		doubled, err := doubledListeners(ports)
		if err != nil || doubled == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replaced configuration still listens on %s after 10s", doubled)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// doubledListeners returns an address among ports with more than one
// socket in the LISTEN state, or "" when there is none.
func doubledListeners(ports []int) (string, error) {
	want := map[int]bool{}
	for _, p := range ports {
		want[p] = true
	}
	seen := map[string]int{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ...; st 0A is LISTEN.
			f := strings.Fields(line)
			if len(f) < 4 || f[3] != "0A" {
				continue
			}
			_, portHex, ok := strings.Cut(f[1], ":")
			port, err := strconv.ParseUint(portHex, 16, 16)
			if !ok || err != nil || !want[int(port)] {
				continue
			}
			if seen[f[1]]++; seen[f[1]] > 1 {
				return f[1], nil
			}
		}
	}
	return "", nil
}

// Start runs caddyfile in this process and stops Caddy when the test ends.
func Start(t testing.TB, caddyfile string) {
	t.Helper()
	if err := Load(t, caddyfile); err != nil {
		t.Fatalf("start caddy: %v\n%s", err, caddyfile)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stop caddy: %v", err)
		}
	})
}

// StartFree runs the Caddyfile that caddyfile renders for a free loopback
// port and returns the port. A port found free can be taken by another
// process before Caddy binds it; then it tries another.
func StartFree(t testing.TB, caddyfile func(port int) string) int {
	t.Helper()
	for try := 0; ; try++ {
		port := FreePort(t)
		cfg := caddyfile(port)
		err := Load(t, cfg)
		if err == nil {
			t.Cleanup(func() {
				if err := caddy.Stop(); err != nil {
					t.Errorf("stop caddy: %v", err)
				}
			})
			return port
		}
		if try == 2 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("start caddy: %v\n%s", err, cfg)
		}
		t.Logf("port %d was taken, trying another: %v", port, err)
	}
}

// WaitReady polls url until it answers at all (any status), so a test does
// not race a listener that is still starting. Each poll dials afresh and
// leaves no connection behind: one kept from a replaced configuration's
// server would be closed under the next request that took it.
func WaitReady(t testing.TB, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatalf("request %s: %v", url, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never answered: %v", url, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// HashPassword returns a bcrypt hash of password, as an operator would put
// in the configuration.
func HashPassword(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		t.Fatalf("bcrypt: %v", err)
	}
	return string(h)
}
