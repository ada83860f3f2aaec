package cli

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// reloadConfig is crashConfig with a real MCP server behind the gateway
// (tools pinned on first use) and what variant v changes: the token
// lifetime and the gateway's rules, so each reload makes a new issuer and
// a new gateway.
func reloadConfig(adminPort, port int, db, hash, upstream string, v int) string {
	c := crashConfig(adminPort, port, "bolt "+db, hash)
	c = strings.Replace(c, "storage bolt", fmt.Sprintf("access_token_ttl %dm\n\t\tstorage bolt", 30+v%2), 1)
	rules := "tool * read"
	if v%2 == 1 {
		rules = "tool echo read\n\t\t\ttool add read"
	}
	c = strings.Replace(c, "tool * read\n\t\t\tpin_tools off", rules, 1)
	// No idle connections to the upstream: each configuration's proxy
	// has a transport of its own, whose idle connections would outlive
	// it by Caddy's idle timeout and hide what this test counts.
	return strings.Replace(c, `respond "{}" 200`, "reverse_proxy "+upstream+" {\n\t\t\ttransport http {\n\t\t\t\tkeepalive off\n\t\t\t}\n\t\t}", 1)
}

// processCounts is the goroutines (from the admin API's pprof) and open
// files of a caddy process.
func processCounts(t *testing.T, r *crashRig) (goroutines, files int) {
	t.Helper()
	resp, err := http.Get(r.admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	// "goroutine profile: total N"
	goroutines, err = strconv.Atoi(strings.TrimSpace(line[strings.LastIndex(line, " ")+1:]))
	if err != nil {
		t.Fatalf("goroutine profile %q: %v", line, err)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.cmd.Process.Pid))
	if err != nil {
		t.Skipf("open files of caddy: %v", err)
	}
	return goroutines, len(fds)
}

// TestReloadsReleaseAndKeep: 50 reloads through the admin API's /load,
// each a new issuer and gateway, while clients take tokens, register and
// call tools: no valid token is refused and no request fails for a
// configuration half applied; afterwards the old configurations'
// goroutines and open files are released, the tool pins and a
// revocation made before are kept, and a reload that fails leaves the
// running configuration serving and the store as it was.
func TestReloadsReleaseAndKeep(t *testing.T) {
	demo := mcpdemo.NewServer()
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return demo },
		&mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(up.Close)
	upstream := up.Listener.Addr().String()
	e := newEnv(t)
	hash := harness.HashPassword(t, crashPassword)
	r := startCrashRig(t, e, filepath.Join(e.Home, "db", "mcp-auth.db"))
	config := func(v int) string { return reloadConfig(r.adminPort, r.port, r.db, hash, upstream, v) }
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	load := func(v int, cfg string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.admin+"/load", strings.NewReader(cfg))
		req.Header.Set("Content-Type", "text/caddyfile")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("reload %d: %v", v, err)
		}
		defer resp.Body.Close()
		b := new(strings.Builder)
		_, _ = bufio.NewReader(resp.Body).WriteTo(b)
		return resp.StatusCode, b.String()
	}
	if st, body := load(0, config(0)); st != http.StatusOK {
		t.Fatalf("first load = %d %s", st, body)
	}
	resource := r.issuer + "/mcp"
	client := func(id string) (secret string) {
		st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/clients", fmt.Sprintf(`{"client_id":%q,"grant_types":["client_credentials"],"scopes":["read"],"token_endpoint_auth_method":"client_secret_post"}`, id))
		if st != http.StatusCreated {
			t.Fatalf("add client %s = %d %s", id, st, body)
		}
		return jsonField(body, "client_secret")
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	token := func(id, secret string) (int, string, error) {
		var tr harness.TokenResponse
		st, err := harness.PostForm(ctx, fresh, r.issuer+"/token", url.Values{"grant_type": {"client_credentials"},
			"resource": {resource}, "scope": {"read"}, "client_id": {id}, "client_secret": {secret}}, &tr)
		return st, tr.AccessToken, err
	}
	call := func(tok string) (int, string, error) {
		resp, body, err := harness.RawToolCall(ctx, fresh, resource, tok, "echo", `{"text":"hi"}`)
		if err != nil {
			return 0, "", err
		}
		return resp.StatusCode, body, nil
	}
	secret := client("cc")
	st, tok, err := token("cc", secret)
	if err != nil || st != http.StatusOK {
		t.Fatalf("token = %d %v", st, err)
	}
	if st, body, err := call(tok); err != nil || st != http.StatusOK {
		t.Fatalf("tools/call = %d %s %v", st, body, err)
	}
	pins := func() string {
		st, body := crashAdmin(ctx, r, http.MethodGet, "/mcp-auth/tools", "")
		if st != http.StatusOK || !strings.Contains(body, `"echo"`) {
			t.Fatalf("pins = %d %s, want echo pinned", st, body)
		}
		return body
	}
	pinned := pins()
	// A revocation made before the reloads: the client removed.
	goneSecret := client("gone")
	_, goneTok, _ := token("gone", goneSecret)
	if st, _ := crashAdmin(ctx, r, http.MethodDelete, "/mcp-auth/clients/gone", ""); st != http.StatusNoContent && st != http.StatusOK {
		t.Fatalf("remove client gone = %d", st)
	}
	g0, f0 := processCounts(t, r)

	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		rounds   atomic.Int64
		failMu   sync.Mutex
		failures []string
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	for w := range 3 {
		untilStopped(&wg, stop, func(n int) {
			// A connection the old server closes as it shuts down
			// fails without an answer: that is a reload's, and the
			// request is sent again; every answer must be right.
			st, tok, err := token("cc", secret)
			if err != nil {
				return
			}
			if st != http.StatusOK {
				fail("worker %d: token %d = %d", w, n, st)
				return
			}
			if st, body, err := call(tok); err == nil && st != http.StatusOK {
				fail("worker %d: tools/call %d with a fresh token = %d %.200s", w, n, st, body)
			}
			rounds.Add(1)
		})
	}
	for v := 1; v <= 50; v++ {
		if st, body := load(v, config(v)); st != http.StatusOK {
			t.Fatalf("reload %d = %d %s", v, st, body)
		}
	}
	close(stop)
	wg.Wait()
	// The last reload's old listener may still be open: a fresh connection
	// queued there would be closed unanswered, as above.
	harness.WaitListenersReplaced(t, r.port)
	for _, f := range failures {
		t.Error(f)
	}

	// What was before is kept.
	if got := pins(); got != pinned {
		t.Errorf("pins after 50 reloads = %s, want as before: %s", got, pinned)
	}
	if st, _, err := call(goneTok); err != nil || st != http.StatusUnauthorized {
		t.Errorf("token of a client removed before the reloads = %d %v, want 401", st, err)
	}
	if st, body, err := call(tok); err != nil || st != http.StatusOK {
		t.Errorf("token from before the reloads = %d %s %v, want 200", st, body, err)
	}

	// A reload that fails at start (a group's scopes for a resource
	// nothing declares) leaves the running configuration and the store.
	users := func() string { _, body := crashAdmin(ctx, r, http.MethodGet, "/mcp-auth/users", ""); return body }
	before := users()
	bad := strings.Replace(config(51), "group users {", "group users {\n\t\t\tscopes http://127.0.0.1:1/undeclared read", 1)
	bad = strings.Replace(bad, "user alice", "user carol "+hash+" {\n\t\t\tgroups users\n\t\t}\n\t\tuser alice", 1)
	if st, body := load(51, bad); st == http.StatusOK || !strings.Contains(body, "undeclared") {
		t.Errorf("reload of a config that cannot start = %d %s, want refused naming the undeclared resource", st, body)
	}
	if got := users(); got != before {
		t.Errorf("users after a failed reload = %s, want as before: %s", got, before)
	}
	if st, tok2, err := token("cc", secret); err != nil || st != http.StatusOK {
		t.Errorf("token after a failed reload = %d %v", st, err)
	} else if st, body, err := call(tok2); err != nil || st != http.StatusOK {
		t.Errorf("tools/call after a failed reload = %d %s %v", st, body, err)
	}

	// The old configurations are gone with what they held.
	var g, f int
	deadline := time.Now().Add(20 * time.Second)
	for {
		g, f = processCounts(t, r)
		if g <= g0+5 && f <= f0+5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("50 reloads, %d token+call rounds: goroutines %d -> %d, open files %d -> %d", rounds.Load(), g0, g, f0, f)
	if g > g0+5 || f > f0+5 {
		t.Errorf("after 50 reloads: %d goroutines (%d before), %d open files (%d before): the old configurations' are not released", g, g0, f, f0)
	}
}
