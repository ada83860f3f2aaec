// Package interop runs stock third-party MCP tooling against caddy-mcp-auth
// configured only through a Caddyfile: the official TypeScript SDK's OAuth
// client (test/node/client.mjs) and the official MCP conformance tool
// (authorization-server and server scenarios).
//
// The Node tooling lives in test/node (test/node/setup.sh installs it).
// Without it these tests skip, unless CI_REQUIRE_NODE is set, in which case
// a missing install is a failure.
//
// Caddy keeps one running configuration per process: tests here start
// their own stack each and must not run in parallel.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/template"

	"golang.org/x/oauth2/clientcredentials"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// Credentials used by the stack. Test-only values.
const (
	userName     = "alice"
	userPassword = "alice-interop-password"
	// ccClientID is a pre-registered confidential client that gets tokens
	// with client_credentials (for the conformance server scenarios).
	ccClientID     = "conformance-bot"
	ccClientSecret = "conformance-bot-secret-0123456789"
)

// Scopes and tools of the demo server as the test Caddyfile guards them.
const (
	baseScope   = "mcp:tools"  // initialize, tools/list, ping, ... and permitTool
	writeScope  = "demo:write" // the step-up tool
	otherScope  = "demo:other" // every other tool, prompt and resource
	demoMCPPath = "/mcp"       // the demo serves MCP on every path; the gateway's resource is /mcp
	permitTool  = "echo"       // needs only the base scope, which the 401 challenge asks for
	stepUpTool  = "add_note"   // needs writeScope, which the first token lacks
)

// nodeTools locates the Node 22 binary and the test/node directory, or
// skips (fails under CI_REQUIRE_NODE) when the tooling is not installed.
type nodeTools struct {
	dir         string // absolute test/node
	node        string // Node 22 binary from the node@22 npm package
	conformance string // the conformance CLI script
}

func requireNode(t *testing.T) nodeTools {
	t.Helper()
	dir, err := filepath.Abs("../node")
	if err != nil {
		t.Fatalf("abs test/node: %v", err)
	}
	nt := nodeTools{
		dir:         dir,
		node:        filepath.Join(dir, "node_modules", "node", "bin", "node"),
		conformance: filepath.Join(dir, "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js"),
	}
	for _, p := range []string{nt.node, nt.conformance} {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI_REQUIRE_NODE") != "" {
				t.Fatalf("CI_REQUIRE_NODE is set but the Node tooling is missing (%v); run test/node/setup.sh", err)
			}
			t.Skipf("Node tooling not installed (%s missing): run test/node/setup.sh, or set CI_REQUIRE_NODE=1 to make this a failure", p)
		}
	}
	return nt
}

// run runs the Node binary with args in test/node and returns stdout;
// stderr goes to the test log. env adds to the inherited environment.
func (nt nodeTools) run(ctx context.Context, t *testing.T, env []string, args ...string) ([]byte, error) {
	t.Helper()
	return nt.runInput(ctx, t, env, nil, args...)
}

// runInput is run with stdin as the standard input (none when nil).
func (nt nodeTools) runInput(ctx context.Context, t *testing.T, env []string, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, nt.node, args...)
	cmd.Dir = nt.dir
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if stderr.Len() > 0 {
		t.Logf("%s stderr:\n%s", filepath.Base(args[0]), stderr.String())
	}
	return stdout.Bytes(), err
}

// start runs the Node binary with args in test/node until the test ends
// and returns its stdout line by line.
func (nt nodeTools) start(t *testing.T, args ...string) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, nt.node, args...)
	cmd.Dir = nt.dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", filepath.Base(args[0]), err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	lines := make(chan string, 4)
	go func() {
		defer close(lines)
		for sc := bufio.NewScanner(out); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	return lines
}

// stack is a running demo MCP server behind Caddy with mcp_auth,
// mcp_issuer and mcp_gateway, all on loopback.
type stack struct {
	Issuer    string // http://127.0.0.1:<port>
	Resource  string // the gateway's MCP URL (= resource indicator)
	Upstream  string // the demo server's MCP URL, reached directly
	Caddyfile string
}

const caddyfileTemplate = `{
	admin off
	persist_config off
	auto_https off
	storage file_system {{.CaddyData}}
	mcp_auth {
		issuer {{.Issuer}}
		storage bolt {{.DB}}
		dpop_nonce
		user {{.User}} {{.UserHash}} {
			groups users
		}
		group users {
			scopes {{.Resource}} {{.BaseScope}} {{.WriteScope}}
		}
		client {{.CCClient}} {
			name "Conformance bot"
			secret {{.CCHash}}
			grant_types client_credentials
			auth_method client_secret_basic
		}
{{.Extra}}
	}
}

http://:{{.Port}} {
	bind 127.0.0.1
	mcp_issuer
	mcp_gateway {
		resource {{.Resource}}
		scope {{.BaseScope}}
		tool {{.PermitTool}}
		tool {{.StepUpTool}} {{.WriteScope}}
		tool * {{.OtherScope}}
		prompt * {{.OtherScope}}
		resource_rule {{.NotesURI}} {{.OtherScope}}
		resource_rule test:// {{.OtherScope}}
		allowed_origins http://127.0.0.1:{{.Port}} http://localhost:{{.Port}}
		dpop_nonce
	}
	reverse_proxy {{.UpstreamHost}}
}
`

// startStack starts Caddy from a Caddyfile, in front of the MCP server at
// upstreamHost (host:port, serving MCP at demoMCPPath), and stops it when
// the test ends. The gateway's rules fit both the demo server and the Go
// SDK's conformance server (test:// resources).
func startStack(t *testing.T, upstreamHost string) *stack {
	t.Helper()
	return startStackWith(t, upstreamHost, "")
}

// startStackWith is startStack with extra mcp_auth subdirectives.
func startStackWith(t *testing.T, upstreamHost, extra string) *stack {
	t.Helper()
	return startStackFrom(t, caddyfileTemplate, upstreamHost, extra)
}

// startStackFrom is startStackWith from the Caddyfile template tmpl.
func startStackFrom(t *testing.T, tmpl, upstreamHost, extra string) *stack {
	t.Helper()
	port := harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	s := &stack{
		Issuer:   issuer,
		Resource: issuer + demoMCPPath,
		Upstream: "http://" + upstreamHost + demoMCPPath,
	}
	var b strings.Builder
	err := template.Must(template.New("Caddyfile").Parse(tmpl)).Execute(&b, map[string]any{
		"Issuer":       issuer,
		"Port":         port,
		"Resource":     s.Resource,
		"DB":           filepath.Join(t.TempDir(), "mcp-auth.db"),
		"CaddyData":    t.TempDir(),
		"User":         userName,
		"UserHash":     harness.HashPassword(t, userPassword),
		"CCClient":     ccClientID,
		"CCHash":       harness.HashPassword(t, ccClientSecret),
		"BaseScope":    baseScope,
		"WriteScope":   writeScope,
		"OtherScope":   otherScope,
		"PermitTool":   permitTool,
		"StepUpTool":   stepUpTool,
		"UpstreamHost": upstreamHost,
		"NotesURI":     mcpdemo.NotesURI,
		"Extra":        extra,
	})
	if err != nil {
		t.Fatalf("Caddyfile template: %v", err)
	}
	s.Caddyfile = b.String()
	harness.Start(t, s.Caddyfile)
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	return s
}

// startDemo serves the demo MCP server (test/demo/mcpdemo) on a loopback
// port until the test ends; it returns host:port.
func startDemo(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(mcpdemo.Handler())
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// everythingServer is the Go MCP SDK's conformance server (the module's
// conformance/everything-server): it implements every fixture the
// conformance tool's server scenarios call, so it passes them all directly
// and any failure through the gateway is the gateway's.
const everythingServer = "github.com/modelcontextprotocol/go-sdk/conformance/everything-server"

// startEverything builds the SDK's conformance server and runs it on a free
// loopback port until the test ends; stateless selects the 2026-07-28
// (stateless) transport, else the session-based one. It returns host:port.
func startEverything(t *testing.T, stateless bool) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "everything-server")
	if out, err := exec.Command("go", "build", "-o", bin, everythingServer).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", everythingServer, err, out)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-http", addr, "-stateless="+strconv.FormatBool(stateless))
	var logs bytes.Buffer
	cmd.Stdout = &logs
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("everything-server output:\n%s", logs.String())
		}
	})
	harness.WaitReady(t, "http://"+addr+demoMCPPath)
	return addr
}

// clientCredentialsToken gets an access token for the stack's resource
// from the pre-registered confidential client, with every scope the
// gateway knows, so the conformance tool can reach every feature.
func (s *stack) clientCredentialsToken(ctx context.Context, t *testing.T) string {
	t.Helper()
	md, err := harness.Discover(ctx, s.Issuer)
	if err != nil {
		t.Fatalf("discover %s: %v", s.Issuer, err)
	}
	cfg := clientcredentials.Config{
		ClientID:       ccClientID,
		ClientSecret:   ccClientSecret,
		TokenURL:       md.TokenEndpoint,
		Scopes:         []string{baseScope, writeScope, otherScope},
		EndpointParams: url.Values{"resource": {s.Resource}},
	}
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatalf("client_credentials token for %s: %v", ccClientID, err)
	}
	claims, err := harness.Claims(tok.AccessToken)
	if err != nil {
		t.Fatalf("client_credentials token claims: %v", err)
	}
	if aud := harness.Audience(claims); !contains(aud, s.Resource) {
		t.Fatalf("client_credentials token aud = %q, want %q", aud, s.Resource)
	}
	return tok.AccessToken
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// check is one conformance check result, as the tool writes it to
// <output-dir>/<kind>-<scenario>-<timestamp>/checks.json.
type check struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Status       string `json:"status"` // SUCCESS, FAILURE, WARNING, SKIPPED, INFO
	ErrorMessage string `json:"errorMessage,omitempty"`
}

var resultDir = regexp.MustCompile(`^(?:server|authorization-server)-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$`)

// readResults reads every scenario's checks from a conformance output
// directory, keyed by scenario name.
func readResults(t *testing.T, dir string) map[string][]check {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read conformance output %s: %v", dir, err)
	}
	out := make(map[string][]check)
	for _, e := range entries {
		m := resultDir.FindStringSubmatch(e.Name())
		if !e.IsDir() || m == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name(), "checks.json"))
		if err != nil {
			t.Fatalf("read checks of %s: %v", e.Name(), err)
		}
		var checks []check
		if err := json.Unmarshal(data, &checks); err != nil {
			t.Fatalf("parse checks of %s: %v", e.Name(), err)
		}
		out[m[1]] = checks
	}
	return out
}

// summary renders results as one line per check, sorted by scenario, for
// the test log and for comparisons.
func summary(results map[string][]check) string {
	names := make([]string, 0, len(results))
	for n := range results {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		for _, c := range results[n] {
			fmt.Fprintf(&b, "%-8s %s / %s", c.Status, n, c.ID)
			if c.ErrorMessage != "" {
				fmt.Fprintf(&b, ": %s", firstLine(c.ErrorMessage))
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// verdicts reduces results to scenario -> check id -> statuses (in order;
// ids may repeat within a scenario), which is what "same results" means.
func verdicts(results map[string][]check) map[string]map[string][]string {
	out := make(map[string]map[string][]string, len(results))
	for n, checks := range results {
		m := make(map[string][]string)
		for _, c := range checks {
			m[c.ID] = append(m[c.ID], c.Status)
		}
		out[n] = m
	}
	return out
}

// getStatus performs a GET and returns the status code.
func getStatus(ctx context.Context, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
