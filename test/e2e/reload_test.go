package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// retryable marks POSTs as safe to resend: net/http then retries a request
// that met a keep-alive connection the old server closed as idle during the
// reload (a race between client and server that HTTP/1.1 cannot avoid and
// that no request was processed in). Nothing else is retried.
type retryable struct{ base http.RoundTripper }

func (r retryable) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost {
		return r.base.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Idempotency-Key", rand.Text())
	return r.base.RoundTrip(req)
}

// reloadRetry resends a request whose fresh connection failed before any
// answer while a reload was under way, and nothing else. Two things drop
// such a request before any handler sees it, neither of them ours: the
// kernel resets the connections still queued on the old configuration's
// SO_REUSEPORT socket when Caddy closes it, and net/http's Server closes
// without answering a new connection whose first request it reads after
// Shutdown began. net/http's client retries neither (the connection was
// not reused). A failure outside a reload window, on a reused connection,
// or after an answer began is returned, so the test still sees it.
type reloadRetry struct {
	base http.RoundTripper

	mu      sync.Mutex
	windows [][2]time.Time // reloads: start, end (zero while under way)
	retried int
}

// reloading records the start of a reload; the returned func its end.
func (r *reloadRetry) reloading() (done func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.windows = append(r.windows, [2]time.Time{time.Now()})
	i := len(r.windows) - 1
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.windows[i][1] = time.Now()
	}
}

// excused reports whether a failed attempt, from start until now,
// overlaps a reload; the old server's shutdown is allowed a second after
// the new configuration is in. It counts the excused failures.
func (r *reloadRetry) excused(start time.Time) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.windows {
		end := w[1].Add(time.Second)
		if w[1].IsZero() {
			end = now
		}
		if !now.Before(w[0]) && !start.After(end) {
			r.retried++
			return true
		}
	}
	return false
}

// resent is how many attempts were excused and resent.
func (r *reloadRetry) resent() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.retried
}

func (r *reloadRetry) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		var fresh bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { fresh = !i.Reused }}
		start := time.Now()
		resp, err := r.base.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
		if err == nil || attempt == 3 || req.Context().Err() != nil {
			return resp, err
		}
		var dial *net.OpError
		dropped := errors.As(err, &dial) && dial.Op == "dial" ||
			fresh && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET))
		if !dropped || !r.excused(start) {
			return resp, err
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return resp, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return resp, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// TestReloadDuringTraffic reloads the configuration (same bolt database)
// while clients refresh tokens and call tools through the gateway. Nothing
// may fail, the reload must not hang, and what was stored before (a DCR
// client, refresh tokens, the MCP session binding) stays valid after.
func TestReloadDuringTraffic(t *testing.T) {
	e := setup(t)
	ctx := ctxTimeout(t, 3*time.Minute)
	rt := &reloadRetry{base: retryable{http.DefaultTransport}}
	client := &http.Client{Transport: rt}

	// Before the reload: a client registered with DCR and, per worker, a
	// grant with a refresh token.
	status, reg, err := harness.Register(ctx, e.md, map[string]any{
		"client_name":                "Reload DCR Client",
		"redirect_uris":              []string{redirectURI},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
		"application_type":           "native",
	})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("Register = %d %v, %v; want 201", status, reg, err)
	}
	dcrID, _ := reg["client_id"].(string)
	if dcrID == "" {
		t.Fatalf("Register answered no client_id: %v", reg)
	}
	// The workers use the stateless resource: each round is one request.
	dcrCfg := e.md.Config(dcrID, redirectURI, scopeRead, "offline_access")
	robot := harness.NewRobot(username, password, redirectURI)

	const workers = 3
	refresh := make([]string, workers)
	for i := range refresh {
		tok, err := e.authorize(ctx, robot, dcrCfg, e.modern)
		if err != nil {
			t.Fatalf("authorize DCR client: %v", err)
		}
		if tok.RefreshToken == "" {
			t.Fatal("no refresh token for offline_access")
		}
		refresh[i] = tok.RefreshToken
	}

	// An MCP session (2025-11-25: Mcp-Session-Id bound to the principal,
	// standalone SSE stream open) that lives across the reloads.
	sessTok, err := e.authorize(ctx, robot, e.oauthConfig(scopeRead), e.legacy)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := connect(ctx, e.legacy, oauth2.StaticTokenSource(sessTok), "2025-11-25", rt)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()

	var (
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		progress atomic.Int64
		errMu    sync.Mutex
		errs     []error
	)
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		errs = append(errs, err)
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for i := range workers {
		wg.Go(func() {
			for n := 0; n < 400 && !stopped(); n++ {
				tr, err := refreshToken(ctx, client, e, dcrID, refresh[i])
				if err != nil {
					fail(fmt.Errorf("worker %d refresh %d: %w", i, n, err))
					return
				}
				refresh[i] = tr.RefreshToken
				if err := gatewayCall(ctx, client, e, tr.AccessToken); err != nil {
					fail(fmt.Errorf("worker %d call %d: %w", i, n, err))
					return
				}
				progress.Add(1)
			}
		})
	}
	wg.Go(func() {
		for n := 0; n < 400 && !stopped(); n++ {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
			if err != nil || res.IsError {
				fail(fmt.Errorf("session call %d: %+v, %w", n, res, err))
				return
			}
			progress.Add(1)
		}
	})

	for v := 1; v <= 3; v++ {
		waitProgress(t, &progress, 10)
		done := make(chan error, 1)
		start := time.Now()
		reloaded := rt.reloading()
		go func() { done <- harness.Load(t, e.caddyfile(v)) }()
		select {
		case err := <-done:
			reloaded()
			if err != nil {
				t.Fatalf("reload %d: %v", v, err)
			}
			t.Logf("reload %d took %v", v, time.Since(start).Round(time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Fatalf("reload %d hung for 30s", v)
		}
	}
	waitProgress(t, &progress, 10)
	close(stop)
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	byMethod, withToken := e.seen.counts()
	t.Logf("%d refresh+call rounds and session calls across 3 reloads (%d resent after a drop during a reload); upstream saw %v",
		progress.Load(), rt.resent(), byMethod)
	if withToken != 0 {
		t.Errorf("%d requests reached the upstream with an Authorization header, want 0", withToken)
	}

	// After: what was stored before the reloads still works.
	for i, rt := range refresh {
		if _, err := refreshToken(ctx, client, e, dcrID, rt); err != nil {
			t.Errorf("worker %d refresh token after reloads: %v", i, err)
		}
	}
	if _, err := e.authorize(ctx, harness.NewRobot(username, password, redirectURI), dcrCfg, e.modern); err != nil {
		t.Errorf("DCR client registered before the reloads: %v", err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil || res.IsError {
		t.Errorf("session call after reloads = %+v, %v; want success", res, err)
	}
}

// waitProgress waits until n more rounds of traffic completed, so each
// reload happens while requests are flowing.
func waitProgress(t *testing.T, p *atomic.Int64, n int64) {
	t.Helper()
	target := p.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for p.Load() < target {
		if time.Now().After(deadline) {
			t.Fatalf("traffic stalled at %d rounds", p.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func refreshToken(ctx context.Context, client *http.Client, e *env, clientID, rt string) (*harness.TokenResponse, error) {
	var tr harness.TokenResponse
	status, err := harness.PostForm(ctx, client, e.md.TokenEndpoint, url.Values{
		"grant_type":    {"refresh_token"},
		"refresh_token": {rt},
		"client_id":     {clientID},
		"resource":      {e.modern},
	}, &tr)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK || tr.AccessToken == "" || tr.RefreshToken == "" {
		return nil, fmt.Errorf("refresh: status %d, error %q %q", status, tr.Error, tr.ErrorDescription)
	}
	return &tr, nil
}

// gatewayCall makes one stateless tools/call through the gateway.
func gatewayCall(ctx context.Context, client *http.Client, e *env, token string) error {
	resp, body, err := rawToolCall(ctx, client, e.modern, token, "echo")
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("tools/call: status %d: %.200s", resp.StatusCode, body)
	}
	return nil
}

// TestReloadRevokes: a reload that removes a user, client or agent from
// the Caddyfile, or changes its password or secret hash, ends what it
// holds, as the admin API does (README: Connected apps and agents);
// reloading the same configuration ends nothing.
func TestReloadRevokes(t *testing.T) {
	hash := harness.HashPassword(t, password)
	user := func(name, hash string) string {
		return fmt.Sprintf("\t\tuser %s %s {\n\t\t\tgroups writers\n\t\t}", name, hash)
	}
	client := func(id, secret string) string {
		return fmt.Sprintf("\t\tclient %s {\n\t\t\tsecret %s\n\t\t\tgrant_types client_credentials %s\n\t\t}", id, secretHash(secret), typeTokenExchange)
	}
	agent := func(id, secret string) string {
		return fmt.Sprintf("\t\tagent %s {\n\t\t\tsecret %s\n\t\t}", id, secretHash(secret))
	}
	const (
		s1, s1New, s2 = "svc-r1-secret-5e0c2b7a9d1f4e3c8b6a", "svc-r1-secret-new-7d2e9a1c4b", "svc-r2-secret-1a2b3c4d5e6f7a8b9c0d"
		a1, a1New, a2 = "agent-r1-secret-0c9b8a7d6e5f4a3b", "agent-r1-secret-new-3f4e5d6c7b", "agent-r2-secret-9f8e7d6c5b4a3f2e"
	)
	// The directory beyond setupAgents's, in order; rows change it.
	names := []string{"dave", "erin", "svc-r1", "svc-r2", "agent-r1", "agent-r2"}
	blocks := map[string]string{
		"dave": user("dave", hash), "erin": user("erin", hash),
		"svc-r1": client("svc-r1", s1), "svc-r2": client("svc-r2", s2),
		"agent-r1": agent("agent-r1", a1), "agent-r2": agent("agent-r2", a2),
	}
	extra := func() string {
		var b strings.Builder
		for _, n := range names {
			if blocks[n] != "" {
				b.WriteString(blocks[n] + "\n")
			}
		}
		return strings.TrimSuffix(b.String(), "\n")
	}
	e := setupAgents(t, agentOpts{extra: extra()})
	// A connection kept alive across a reload may meet the old server
	// closing it after the request was sent, which no client can retry.
	e.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	e.audit.secret(s1, s1New, s2, a1, a1New, a2)
	ctx := ctxTimeout(t, agentsTestLimit)
	reload := func(t *testing.T) {
		t.Helper()
		e.extra = extra()
		if err := harness.Load(t, e.caddyfile("")); err != nil {
			t.Fatalf("reload: %v", err)
		}
		settle(t, e.client, e.issuer+"/.well-known/oauth-authorization-server")
	}

	bystanders := e.bystanders(ctx, t)
	actingR1 := e.actingHeld(ctx, t, "agent-r1", a1)
	heldBy := map[string][]held{
		"dave":   e.userHeld(ctx, t, "dave"),
		"erin":   e.userHeld(ctx, t, "erin"),
		"svc-r1": e.ownHeld(ctx, t, "svc-r1", s1),
		"svc-r2": e.ownHeld(ctx, t, "svc-r2", s2),
		// Users' delegations to an agent end when its secret changes; a
		// user's token exchanged to it is the user's grant, which stays.
		"agent-r1": append(e.ownHeld(ctx, t, "agent-r1", a1), actingR1[0]),
		"agent-r2": append(e.ownHeld(ctx, t, "agent-r2", a2), e.actingHeld(ctx, t, "agent-r2", a2)...),
	}

	reload(t) // the same configuration
	for _, n := range names {
		e.requireLive(ctx, t, heldBy[n])
	}

	tests := []struct {
		name, principal string
		change          func()
		kept            func(t *testing.T) []held // tokens that must work after the change
	}{
		{"user password hash changed", "dave", func() { blocks["dave"] = user("dave", harness.HashPassword(t, password)) }, nil},
		{"user removed", "erin", func() { delete(blocks, "erin") }, nil},
		{"client secret changed", "svc-r1", func() { blocks["svc-r1"] = client("svc-r1", s1New) },
			func(t *testing.T) []held { return e.ownHeld(ctx, t, "svc-r1", s1New) }},
		{"client removed", "svc-r2", func() { delete(blocks, "svc-r2") }, nil},
		{"agent secret changed", "agent-r1", func() { blocks["agent-r1"] = agent("agent-r1", a1New) },
			func(t *testing.T) []held { return append(e.ownHeld(ctx, t, "agent-r1", a1New), actingR1[1:]...) }},
		{"agent removed", "agent-r2", func() { delete(blocks, "agent-r2") }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.requireLive(ctx, t, heldBy[tc.principal]) // earlier rows took nothing of it
			tc.change()
			reload(t)
			e.requireRevoked(ctx, t, heldBy[tc.principal])
			if tc.kept != nil {
				e.requireLive(ctx, t, tc.kept(t))
			}
		})
	}
	e.requireBystandersLive(ctx, t, bystanders)
}

// TestReloadNarrowingGroupRevokes: a reload that takes a scope away from
// a group ends, at the gateway within the revocation delay, the tokens of
// its members that hold the scope (on bbolt and on PostgreSQL), as the
// README's revocation table says; their tokens without it, and those of
// users whose scopes did not shrink, keep working, and a reload that
// changes nothing ends nothing.
func TestReloadNarrowingGroupRevokes(t *testing.T) {
	for _, storage := range []string{"bolt", "postgres"} {
		t.Run(storage, func(t *testing.T) {
			o := agentOpts{}
			if storage == "postgres" {
				o.dsn = pgtest.NewDatabase(t)
			}
			hash := harness.HashPassword(t, password)
			editors := func(scopes string) string {
				return fmt.Sprintf("\t\tuser gina %s {\n\t\t\tgroups editors\n\t\t}\n\t\tgroup editors {\n\t\t\tscopes * %s\n\t\t}", hash, scopes)
			}
			o.extra = editors(scopeTools + " " + scopeWrite)
			e := setupAgents(t, o)
			e.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			ctx := ctxTimeout(t, agentsTestLimit)
			reload := func(t *testing.T, extra string) {
				t.Helper()
				e.extra = extra
				if err := harness.Load(t, e.caddyfile("")); err != nil {
					t.Fatalf("reload: %v", err)
				}
				settle(t, e.client, e.issuer+"/.well-known/oauth-authorization-server")
			}
			call := func(what, token, tool string, want int) {
				t.Helper()
				if resp, body, _ := e.callRaw(ctx, t, token, tool); resp.StatusCode != want {
					t.Errorf("%s calling %s: status %d, want %d; body %.200s", what, tool, resp.StatusCode, want, body)
				}
			}
			gina := harness.NewRobot("gina", password, redirectURI)
			ginaWrite := e.userToken(ctx, t, gina, scopeTools, scopeWrite, "offline_access")
			ginaTools := e.userToken(ctx, t, gina, scopeTools, "offline_access")
			aliceWrite := e.userToken(ctx, t, harness.NewRobot(username, password, redirectURI), scopeTools, scopeWrite, "offline_access")
			call("gina's write token", ginaWrite.AccessToken, toolUserOnly, http.StatusOK)

			reload(t, o.extra) // the same configuration
			call("gina's write token after the same configuration", ginaWrite.AccessToken, toolUserOnly, http.StatusOK)
			e.requireLive(ctx, t, []held{{what: "gina's tools token", access: ginaTools.AccessToken}, {what: "alice's write token", access: aliceWrite.AccessToken}})

			reload(t, editors(scopeTools)) // notes:write taken from editors
			e.requireRevoked(ctx, t, []held{{what: "gina's write token", access: ginaWrite.AccessToken, refresh: ginaWrite.RefreshToken, client: hostID}})
			e.requireLive(ctx, t, []held{{what: "gina's tools token", access: ginaTools.AccessToken}, {what: "alice's write token", access: aliceWrite.AccessToken}})
			call("alice's write token", aliceWrite.AccessToken, toolUserOnly, http.StatusOK)
			form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {ginaTools.RefreshToken}, "resource": {e.resource}, "client_id": {hostID}}
			if a := e.tokenRequest(ctx, t, "", "", form); a.Status != http.StatusOK || a.Scope != scopeTools+" offline_access" {
				t.Errorf("refresh of gina's tools token = %v, want 200 %s offline_access", a, scopeTools)
			}
		})
	}
}

// settle waits until 20 requests in a row to u succeed on new
// connections: the old config's socket (SO_REUSEPORT) is closed a moment
// after a reload and resets the connections queued on it.
func settle(t *testing.T, client *http.Client, u string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ok := 0; ok < 20; {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer steadily after the reload", u)
		}
		resp, err := client.Get(u)
		if err != nil {
			ok = 0
			time.Sleep(10 * time.Millisecond)
			continue
		}
		resp.Body.Close()
		ok++
	}
}

// TestReloadFailingAfterStart: a configuration that fails to start after
// the mcp_auth app started (here the http app cannot bind a port) has
// applied its changes, revoking what it took away (a client), but Caddy
// keeps the old configuration running, where the old credentials still
// work. The running configuration records itself again, so the next
// successful reload with a change to that client ends what was granted in
// between too; and the admin API serves the running configuration's
// issuer after every failed reload. Caddy starts apps in no fixed order:
// the failing reload is tried until the mcp_auth app started first.
func TestReloadFailingAfterStart(t *testing.T) {
	const id, old, changed = "svc-f", "svc-f-secret-old-4b1c9e2d7a6f5e3c", "svc-f-secret-new-8d7c6b5a4f3e2d1c"
	client := func(secret string) string {
		return fmt.Sprintf("\t\tclient %s {\n\t\t\tsecret %s\n\t\t\tgrant_types client_credentials %s\n\t\t}", id, secretHash(secret), typeTokenExchange)
	}
	e := setupAgents(t, agentOpts{extra: client(old)})
	e.client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	e.audit.secret(old, changed)
	ctx := ctxTimeout(t, agentsTestLimit)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	// With the admin endpoint on, to see what the admin API serves after
	// a failed reload.
	admin := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	if err := harness.Load(t, e.caddyfile(admin)); err != nil {
		t.Fatalf("reload with the admin endpoint: %v", err)
	}
	settle(t, e.client, e.issuer+"/.well-known/oauth-authorization-server")
	// The failing configuration drops the client, so its admin API would
	// not know it.
	e.extra = ""
	failing := e.caddyfile(admin) + fmt.Sprintf("\nhttp://%s {\n\trespond \"never\"\n}\n", busy.Addr())
	adminStatus := func(path string) (int, string) {
		resp, err := e.client.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(body)
	}
	first := e.ownToken(ctx, t, id, old)
	applied := false
	for range 60 {
		if err := harness.Load(t, failing); err == nil {
			t.Fatal("a configuration whose site cannot bind its port loaded")
		}
		settle(t, e.client, e.issuer+"/.well-known/oauth-authorization-server")
		// Whichever app failed first, the admin API serves the running
		// configuration's issuer.
		if status, body := adminStatus("/mcp-auth/clients/" + id); status != http.StatusOK {
			t.Fatalf("admin GET /mcp-auth/clients/%s after a failed reload = %d %s, want 200 from the running configuration", id, status, body)
		}
		if !e.active(ctx, t, first) {
			applied = true // the mcp_auth app started and applied the change
			break
		}
	}
	if !applied {
		t.Fatal("in 60 failed reloads the mcp_auth app never started before the http app failed")
	}
	// The old configuration still runs: the old secret still works, and
	// the admin API serves the running configuration's issuer.
	between := e.ownHeld(ctx, t, id, old)
	e.requireLive(ctx, t, between)

	e.extra = client(changed)
	if err := harness.Load(t, e.caddyfile(admin)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	settle(t, e.client, e.issuer+"/.well-known/oauth-authorization-server")
	e.requireRevoked(ctx, t, between)
	e.requireLive(ctx, t, e.ownHeld(ctx, t, id, changed))

	// A configuration that fails after all its apps started (an admin
	// config loader that cannot reach its source): Caddy unloads it
	// without stopping its apps, and keeps the old one running.
	const third = "svc-f-secret-third-2c4e6a8b0d1f3a5c"
	e.audit.secret(third)
	e.extra = client(third)
	raw, _, err := harness.Adapt(e.caddyfile(admin))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	// A port nothing listens on: the loader's request is refused at once.
	refused := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	cfg["admin"].(map[string]any)["config"] = map[string]any{"load": map[string]any{"module": "http", "url": "http://" + refused + "/config"}}
	raw, err = json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	second := e.ownToken(ctx, t, id, changed)
	if err := caddy.Load(raw, true); err == nil {
		t.Fatal("a configuration whose admin config loader fails loaded")
	}
	settle(t, e.client, e.issuer+"/.well-known/oauth-authorization-server")
	if e.active(ctx, t, second) {
		t.Fatal("the failing configuration's mcp_auth app did not apply its change (test premise)")
	}
	between = e.ownHeld(ctx, t, id, changed)
	e.requireLive(ctx, t, between)
	if err := harness.Load(t, e.caddyfile(admin)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	settle(t, e.client, e.issuer+"/.well-known/oauth-authorization-server")
	e.requireRevoked(ctx, t, between)
	e.requireLive(ctx, t, e.ownHeld(ctx, t, id, third))
}
