//go:build unix

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// crashCyclesEnv sets how many kill -9 cycles TestCrashKeepsWhatWasAnswered
// runs (a soak); the default keeps it well under a minute.
const crashCyclesEnv = "MCP_AUTH_CRASH_CYCLES"

const (
	crashUser = "alice"
	// crashRefresher is the user of the refresh worker.
	crashRefresher = "robin"
	crashPassword  = "crash test password"
	crashRedirect  = "http://127.0.0.1/callback"
)

// crashConfig is the configuration of the crash test: the issuer on
// storage (the storage directive's arguments) and a gateway whose upstream answers anything (a token the
// gateway accepts gets past it; one it refuses gets 401).
func crashConfig(adminPort, port int, storage, hash string) string {
	return fmt.Sprintf(`{
	admin localhost:%[1]d
	mcp_auth {
		issuer http://127.0.0.1:%[2]d
		storage %[3]s
		user %[5]s %[4]s {
			groups users
		}
		group users {
			scopes http://127.0.0.1:%[2]d/mcp read
		}
		client app {
			public
			redirect_uri %[6]s
		}
	}
}

http://127.0.0.1:%[2]d {
	mcp_issuer
	handle /mcp* {
		mcp_gateway {
			resource http://127.0.0.1:%[2]d/mcp
			scope read
			tool * read
			pin_tools off
		}
		respond "{}" 200
	}
}
`, adminPort, port, storage, hash, crashUser, crashRedirect)
}

// crashRig runs the binary on one bbolt file and kills it with SIGKILL.
type crashRig struct {
	t         *testing.T
	e         env
	config    string
	port      int
	adminPort int
	db        string
	issuer    string
	admin     string
	cmd       *exec.Cmd
	out       bytes.Buffer
	exited    chan struct{}
}

// startCrashRig runs crashConfig on the bbolt file db, killed at the end
// of the test if it still runs.
func startCrashRig(t *testing.T, e env, db string) *crashRig {
	t.Helper()
	return startCrashRigOn(t, e, db, "bolt "+db)
}

// startCrashRigOn is startCrashRig on storage; db is the bbolt file, ""
// for another store.
func startCrashRigOn(t *testing.T, e env, db, storage string) *crashRig {
	t.Helper()
	r := &crashRig{t: t, e: e, db: db, port: harness.FreePort(t), adminPort: harness.FreePort(t)}
	r.issuer = fmt.Sprintf("http://127.0.0.1:%d", r.port)
	r.admin = fmt.Sprintf("http://localhost:%d", r.adminPort)
	r.config = e.Write(t, "Caddyfile", crashConfig(r.adminPort, r.port, storage, harness.HashPassword(t, crashPassword)))
	r.start()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default:
			r.kill()
		}
	})
	return r
}

func (r *crashRig) start() {
	r.t.Helper()
	r.out.Reset()
	r.cmd = exec.Command(r.e.Bin, "run", "--config", r.config, "--adapter", "caddyfile")
	r.cmd.Env, r.cmd.Dir = r.e.Vars, r.e.Home
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan struct{})
	r.exited = exited
	cmd := r.cmd
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			r.t.Fatalf("caddy run exited:\n%s", r.out.String())
		default:
		}
		resp, err := http.Get(r.issuer + "/.well-known/oauth-authorization-server")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.kill()
	r.t.Fatalf("caddy not ready:\n%s", r.out.String())
}

func (r *crashRig) kill() {
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.exited
}

// crashLedger is what the server answered before it was killed: each
// entry must still hold after the restart.
type crashLedger struct {
	mu       sync.Mutex
	tokens   []crashToken      // access tokens answered
	refresh  string            // the refresh token last answered
	inFlight string            // a refresh token sent but not answered ("" if none)
	clients  map[string]string // client or agent id -> secret, answered by DCR or the admin API
	rotated  map[string]string // a rotation of rot -> the secret it replaced (must fail)
	rotating bool              // a rotation of rot's secret sent but not answered
	users    []string          // users the admin API answered as added
	kids     []string          // signing keys the admin API answered as made
	counts   map[string]int
	refused  []string     // answers refused before the kill that should not be
	answered []crashToken // the tokens checked after restarts
}

// crashToken is an access token answered, and how it was.
type crashToken struct{ kind, token string }

func (l *crashLedger) add(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f()
}

// TestCrashKeepsWhatWasAnswered kills Caddy with SIGKILL at a random
// moment while clients refresh tokens, take client_credentials tokens,
// register with DCR, and the admin API adds users and clients, rotates a
// client's secret and the signing key; after each restart everything
// that was answered holds: the last refresh token answered refreshes
// (and one in flight at the kill either refreshes or is refused, never
// lost with its successor), every access token answered is accepted by
// the gateway (its signing key survived), every client answered
// authenticates with its secret and not a rotated-away one, every user
// answered exists, every key answered is published; and the bbolt file
// passes its consistency check. MCP_AUTH_CRASH_CYCLES sets the number of
// cycles for a longer soak.
func TestCrashKeepsWhatWasAnswered(t *testing.T) {
	e := newEnv(t)
	crashCycles(t, startCrashRig(t, e, filepath.Join(e.Home, "db", "mcp-auth.db")))
}

// TestCrashKeepsWhatWasAnsweredPostgres is TestCrashKeepsWhatWasAnswered
// on PostgreSQL: the database outlives the process, with what the killed
// instance left in it (transactions cut off, checks of secrets counted in
// flight and never settled).
func TestCrashKeepsWhatWasAnsweredPostgres(t *testing.T) {
	e := newEnv(t)
	e.Vars = append(e.Vars, "MCP_AUTH_DSN="+pgtest.NewDatabase(t))
	crashCycles(t, startCrashRigOn(t, e, "", "postgres {env.MCP_AUTH_DSN}"))
}

// crashCycles is TestCrashKeepsWhatWasAnswered's kill -9 cycles on r.
func crashCycles(t *testing.T, r *crashRig) {
	cycles := 4
	if v := os.Getenv(crashCyclesEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", crashCyclesEnv, v)
		}
		cycles = n
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l := &crashLedger{clients: map[string]string{}, rotated: map[string]string{}, counts: map[string]int{}}
	// The user who refreshes is one of the admin API's, so that removing
	// it at the end revokes its grants through their index entries.
	if st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/users", fmt.Sprintf(`{"username":%q,"password":%q,"groups":["users"]}`, crashRefresher, crashPassword)); st != http.StatusCreated {
		t.Fatalf("add user %s = %d %s", crashRefresher, st, body)
	}
	l.refresh = crashAuthorize(ctx, t, r)
	resource := r.issuer + "/mcp"
	// A client of the admin API's whose secret the rotation worker rotates.
	var rot string
	if st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/clients", `{"client_id":"rot","grant_types":["client_credentials"],"scopes":["read"],"token_endpoint_auth_method":"client_secret_post"}`); st != http.StatusCreated {
		t.Fatalf("add client rot = %d %s", st, body)
	} else {
		rot = jsonField(body, "client_secret")
	}
	l.clients["rot"] = rot
	// A client of the admin API's that takes client_credentials tokens.
	st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/clients", `{"client_id":"cc","grant_types":["client_credentials"],"scopes":["read"],"token_endpoint_auth_method":"client_secret_post"}`)
	if st != http.StatusCreated {
		t.Fatalf("add client cc = %d %s", st, body)
	}
	l.clients["cc"] = jsonField(body, "client_secret")

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for cycle := range cycles {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		client := &http.Client{Timeout: 10 * time.Second}
		loop := func(f func(n int)) { untilStopped(&wg, stop, f) }
		// Refresh rotation.
		loop(func(int) {
			l.mu.Lock()
			rt := l.refresh
			l.inFlight = rt
			l.mu.Unlock()
			var tr harness.TokenResponse
			st, err := harness.PostForm(ctx, client, r.issuer+"/token", url.Values{
				"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"app"}, "resource": {resource},
			}, &tr)
			if err == nil && st != http.StatusOK {
				l.add(func() {
					l.refused = append(l.refused, fmt.Sprintf("refresh = %d %s %s", st, tr.Error, tr.ErrorDescription))
				})
			}
			if err != nil || st != http.StatusOK {
				<-stop // the server is gone
				return
			}
			l.add(func() {
				l.refresh, l.inFlight = tr.RefreshToken, ""
				l.tokens = append(l.tokens, crashToken{"refreshed", tr.AccessToken})
				l.counts["refresh"]++
			})
		})
		// client_credentials issuance.
		loop(func(int) {
			l.mu.Lock()
			secret := l.clients["cc"]
			l.mu.Unlock()
			var tr harness.TokenResponse
			req := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"read"},
				"client_id": {"cc"}, "client_secret": {secret}}
			st, err := harness.PostForm(ctx, client, r.issuer+"/token", req, &tr)
			if err != nil {
				<-stop
				return
			}
			if st == http.StatusOK {
				l.add(func() {
					l.tokens = append(l.tokens, crashToken{"client_credentials", tr.AccessToken})
					l.counts["client_credentials"]++
				})
			}
		})
		// DCR.
		loop(func(n int) {
			st, reg, err := harness.Register(ctx, &harness.Metadata{RegistrationEndpoint: r.issuer + "/register"}, map[string]any{
				"client_name": fmt.Sprintf("crash %d %d", cycle, n), "redirect_uris": []string{crashRedirect},
				"token_endpoint_auth_method": "client_secret_post", "grant_types": []string{"authorization_code", "refresh_token"},
			})
			if err != nil {
				<-stop
				return
			}
			if st == http.StatusCreated {
				id, _ := reg["client_id"].(string)
				secret, _ := reg["client_secret"].(string)
				l.add(func() { l.clients[id] = secret; l.counts["dcr"]++ })
			} else {
				time.Sleep(50 * time.Millisecond) // rate limited
			}
		})
		// Admin API: users, clients and agents added, a secret rotated,
		// keys.
		loop(func(n int) {
			var st int
			var body string
			switch n % 5 {
			case 4:
				id := fmt.Sprintf("a%d-%d", cycle, n)
				st, body = crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/agents", fmt.Sprintf(`{"agent_id":%q,"scopes":["read"]}`, id))
				if st == http.StatusCreated {
					l.add(func() { l.clients[id] = jsonField(body, "secret"); l.counts["agent"]++ })
				}
			case 0:
				name := fmt.Sprintf("u%d-%d", cycle, n)
				st, body = crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/users", fmt.Sprintf(`{"username":%q,"password":"a long password","groups":["users"]}`, name))
				if st == http.StatusCreated {
					l.add(func() { l.users = append(l.users, name); l.counts["user"]++ })
				}
			case 1:
				id := fmt.Sprintf("c%d-%d", cycle, n)
				st, body = crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/clients", fmt.Sprintf(`{"client_id":%q,"grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_post"}`, id))
				if st == http.StatusCreated {
					l.add(func() { l.clients[id] = jsonField(body, "client_secret"); l.counts["client"]++ })
				}
			case 2:
				l.add(func() { l.rotating = true })
				st, body = crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/clients/rot/secret", "")
				if st != 0 {
					l.add(func() { l.rotating = false })
				}
				if st == http.StatusOK {
					l.add(func() {
						l.rotated["rot"+strconv.Itoa(n)] = l.clients["rot"]
						l.clients["rot"] = jsonField(body, "client_secret")
						l.counts["rotate secret"]++
					})
				}
			case 3:
				st, body = crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/keys/rotate", "")
				if st == http.StatusOK {
					l.add(func() { l.kids = append(l.kids, jsonField(body, "kid")); l.counts["rotate key"]++ })
				}
			}
			if st == 0 {
				<-stop
			}
		})

		time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
		r.kill()
		close(stop)
		wg.Wait()

		for _, msg := range l.refused {
			t.Errorf("cycle %d: before the kill: %s", cycle, msg)
		}
		if r.db != "" {
			if err := bolt.Check(r.db); err != nil {
				t.Fatalf("cycle %d: after kill -9: %v", cycle, err)
			}
		}
		r.start()
		crashVerify(ctx, t, r, l, cycle)
		if t.Failed() {
			return
		}
	}
	// Every grant answered has the index entries a revocation finds it
	// by: removing the user and the client ends every token answered.
	for _, path := range []string{"/mcp-auth/users/" + crashRefresher, "/mcp-auth/clients/cc"} {
		if st, body := crashAdmin(ctx, r, http.MethodDelete, path, ""); st != http.StatusNoContent && st != http.StatusOK {
			t.Fatalf("DELETE %s = %d %s", path, st, body)
		}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	live := 0
	for _, tok := range l.answered {
		resp, _, err := harness.RawToolCall(ctx, client, r.issuer+"/mcp", tok.token, "echo", `{}`)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusUnauthorized {
			live++
		}
	}
	if live > 0 {
		t.Errorf("%d of %d access tokens answered across the kills still accepted after their user and client were removed, want none", live, len(l.answered))
	}
	t.Logf("%d kill -9 cycles; answered before the kills and held after: %v, %d access tokens checked, then all revoked", cycles, l.counts, len(l.answered))
}

// crashVerify checks after a restart that everything in l holds.
func crashVerify(ctx context.Context, t *testing.T, r *crashRig, l *crashLedger, cycle int) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resource := r.issuer + "/mcp"
	for i, tok := range l.tokens {
		resp, body, err := harness.RawToolCall(ctx, client, resource, tok.token, "echo", `{}`)
		if err != nil {
			t.Fatalf("cycle %d: gateway: %v", cycle, err)
		}
		if resp.StatusCode == http.StatusUnauthorized {
			t.Errorf("cycle %d: access token %d of %d (%s) answered before a kill = 401 %s %.200s, want accepted", cycle, i, len(l.tokens), tok.kind, resp.Header.Get("WWW-Authenticate"), body)
		}
	}
	// Keep the check of each cycle short: the tokens checked once stay
	// as they are.
	l.answered = append(l.answered, l.tokens...)
	l.tokens = l.tokens[:0]

	// A refresh in flight at the kill: either it did not land and the
	// token refreshes, or it landed and the token is refused; the token
	// answered before it refreshed in the first case only.
	refresh := func(rt string) (harness.TokenResponse, int) {
		var tr harness.TokenResponse
		st, err := harness.PostForm(ctx, client, r.issuer+"/token", url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"app"}, "resource": {resource},
		}, &tr)
		if err != nil {
			t.Fatalf("cycle %d: refresh: %v", cycle, err)
		}
		return tr, st
	}
	tr, st := refresh(l.refresh)
	switch {
	case st == http.StatusOK:
		l.refresh = tr.RefreshToken
	case l.inFlight == "" || l.inFlight != l.refresh:
		t.Errorf("cycle %d: the refresh token answered last = %d %s %s, want 200", cycle, st, tr.Error, tr.ErrorDescription)
	case tr.Error != "invalid_grant":
		t.Errorf("cycle %d: the refresh token in flight at the kill = %d %s, want 200 or invalid_grant", cycle, st, tr.Error)
	default:
		// Its rotation landed unanswered; reuse revoked the family.
		l.refresh = crashAuthorize(ctx, t, r)
	}
	l.inFlight = ""

	if l.rotating && crashClientAuth(ctx, t, r, "rot", l.clients["rot"]) == "invalid_client" {
		// A rotation in flight at the kill landed unanswered: its secret
		// is unknown; rotate again to go on.
		st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/clients/rot/secret", "")
		if st != http.StatusOK {
			t.Fatalf("cycle %d: rotate rot's secret = %d %s", cycle, st, body)
		}
		l.rotated["lost"+strconv.Itoa(cycle)] = l.clients["rot"]
		l.clients["rot"] = jsonField(body, "client_secret")
		l.counts["rotation landed unanswered"]++
	}
	l.rotating = false
	for id, secret := range l.clients {
		if got := crashClientAuth(ctx, t, r, id, secret); got != "invalid_grant" && got != "unauthorized_client" {
			t.Errorf("cycle %d: client %s with the secret answered = %s, want it to authenticate (invalid_grant for a made-up code, unauthorized_client for a client without the grant type)", cycle, id, got)
		}
	}
	// Two of the secrets rotated away since the last cycle are tried
	// (map order: any two): every try is a failure from this address,
	// which PostgreSQL keeps across the kills, and trying them all every
	// cycle would soon block the address.
	tried := 0
	for what, secret := range l.rotated {
		if tried++; tried <= 2 {
			if got := crashClientAuth(ctx, t, r, "rot", secret); got != "invalid_client" {
				t.Errorf("cycle %d: client rot with the secret rotation %s replaced = %s, want invalid_client", cycle, what, got)
			}
		}
		delete(l.rotated, what)
	}
	for _, name := range l.users {
		if st, body := crashAdmin(ctx, r, http.MethodGet, "/mcp-auth/users/"+name, ""); st != http.StatusOK {
			t.Errorf("cycle %d: user %s answered as added = %d %s, want 200", cycle, name, st, body)
		}
	}
	resp, err := client.Get(r.issuer + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, kid := range l.kids {
		if !strings.Contains(string(jwks), `"`+kid+`"`) {
			t.Errorf("cycle %d: key %s answered as made is not published: %s", cycle, kid, jwks)
		}
	}
}

// crashAuthorize signs crashRefresher in for client app and returns a
// refresh token.
func crashAuthorize(ctx context.Context, t *testing.T, r *crashRig) string {
	t.Helper()
	md, err := harness.Discover(ctx, r.issuer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := md.Config("app", crashRedirect, "read", "offline_access")
	ar := harness.NewAuthRequest(cfg, r.issuer+"/mcp")
	q, err := harness.NewRobot(crashRefresher, crashPassword, crashRedirect).Authorize(ctx, ar.URL)
	if err != nil || q.Get("code") == "" {
		t.Fatalf("authorize = %v, %v", q, err)
	}
	tok, err := ar.Exchange(ctx, cfg, q.Get("code"))
	if err != nil || tok.RefreshToken == "" {
		t.Fatalf("exchange = %v, %v", tok, err)
	}
	return tok.RefreshToken
}

// crashClientAuth posts a made-up code with the client's secret: the
// error is invalid_grant (or unauthorized_client, for a client without
// the grant type) when the secret authenticates, invalid_client when it
// does not.
func crashClientAuth(ctx context.Context, t *testing.T, r *crashRig, id, secret string) string {
	t.Helper()
	var tr harness.TokenResponse
	_, err := harness.PostForm(ctx, http.DefaultClient, r.issuer+"/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {"made-up"}, "redirect_uri": {crashRedirect},
		"code_verifier": {strings.Repeat("v", 43)}, "client_id": {id}, "client_secret": {secret},
	}, &tr)
	if err != nil {
		t.Fatal(err)
	}
	return tr.Error
}

// crashAdmin sends one admin API request; status 0 when Caddy is gone.
func crashAdmin(ctx context.Context, r *crashRig, method, path, body string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, method, r.admin+path, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func jsonField(body, name string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return ""
	}
	s, _ := m[name].(string)
	return s
}

// untilStopped runs f(0), f(1), ... on a goroutine of wg until stop is
// closed.
func untilStopped(wg *sync.WaitGroup, stop <-chan struct{}, f func(n int)) {
	wg.Go(func() {
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			f(n)
		}
	})
}
