package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// Agent identity and delegation end to end (issue 4): the three principal
// patterns (A: a user delegates to a client, B: a client acts for itself,
// C: an agent acts for itself), an agent acting for a user through
// requested_actor and through token exchange, a two-agent chain, the
// gateway's actor rules and audit events, and their failure tables.

const (
	hostID       = "agent-host" // the MCP client (public, PKCE)
	hostName     = "Agent Host App"
	otherHostID  = "other-host" // a client agent-a may not act for
	webHostID    = "web-host"   // a client whose consent is remembered (not loopback)
	svcID        = "svc"        // a confidential client (client credentials), a resource server (introspect)
	svcSecret    = "svc-secret-3f9c1e0a7b5d4c2e8f6a9b0c1d2e3f4a"
	agentA       = "agent-a" // may head chains of 1, not for otherHostID
	agentAName   = "Planner Agent"
	agentASecret = "agent-a-secret-6b1d9e2f0a3c4b5d6e7f8091a2b3c4d5"
	agentB       = "agent-b" // may head chains of 2, never holds notes:write
	agentBName   = "Reviewer Agent"
	agentBSecret = "agent-b-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0"

	scopeTools     = "mcp:tools"
	webRedirectURI = "https://app.example.com/callback"

	auditLoggerName = "http.handlers.mcp_gateway.audit"
	grantExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
	typeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	typeJWT         = "urn:ietf:params:oauth:token-type:jwt"
)

// Tools of the gateway's policy, one per actor rule. agent_report and
// shallow_echo are added to the demo server for the rules it has no tool
// for.
const (
	toolPlain       = "echo"         // mcp:tools, anyone
	toolUser        = "add"          // require_user
	toolAgentA      = "add_note"     // agents agent-a
	toolUserOnly    = "delete_notes" // user_only
	toolAgent       = "agent_report" // require_agent
	toolShallow     = "shallow_echo" // max_depth 1
	toolWait        = "wait"         // runs until its call ends (waiting)
	agentsProtocol  = "2026-07-28"
	auditWait       = 5 * time.Second
	agentsTestLimit = 180 * time.Second
)

// agentEnv is one Caddy with the issuer (users, a public client, a
// confidential client, two agents declared in the Caddyfile) and a gateway
// with actor rules in front of the demo MCP server, its audit log routed
// to a file.
type agentEnv struct {
	// client resends requests that met a connection a reload closed.
	client    *http.Client
	seen      *upstreamLog // what reached the MCP server behind /mcp
	extra     string       // more mcp_auth directives (users, clients, agents)
	dir, hash string
	up        string // host:port of the stateless MCP server behind /mcp
	sessionUp string // host:port of the MCP server with sessions behind /s/mcp
	issuer    string
	resource  string
	admin     string // admin API base URL; "" when off
	ttl       string // access_token_ttl; "" for the default
	logs      agentOpts
	md        *harness.Metadata
	audit     *auditLog
}

type agentOpts struct {
	accessTTL string // e.g. "2s"
	admin     bool   // serve the admin API on a free loopback port
	extra     string // more mcp_auth directives
	// defaultLog, when set, is the file of Caddy's default log, at DEBUG
	// level; accessLog a `log` block for the site.
	defaultLog, accessLog string
	dsn                   string // storage postgres on it; bolt when ""
	// reloadDSN, when set, is the DSN callOverReload's reload switches
	// to: the same database under another spelling, say.
	reloadDSN string
}

func setupAgents(t *testing.T, o agentOpts) *agentEnv {
	t.Helper()
	seen := &upstreamLog{}
	up := httptest.NewServer(seen.wrap(watchWait(mcp.NewStreamableHTTPHandler(
		func(*http.Request) *mcp.Server { return agentDemoServer() }, &mcp.StreamableHTTPOptions{Stateless: true}))))
	t.Cleanup(up.Close)
	sessionUp := httptest.NewServer(mcp.NewStreamableHTTPHandler(func() func(*http.Request) *mcp.Server {
		s := agentDemoServer()
		return func(*http.Request) *mcp.Server { return s }
	}(), nil))
	t.Cleanup(sessionUp.Close)
	e := &agentEnv{
		client:    &http.Client{Transport: retryable{http.DefaultTransport}},
		seen:      seen,
		extra:     o.extra,
		dir:       t.TempDir(),
		hash:      harness.HashPassword(t, password),
		up:        up.Listener.Addr().String(),
		sessionUp: sessionUp.Listener.Addr().String(),
		ttl:       o.accessTTL,
		logs:      o,
	}
	e.audit = &auditLog{path: filepath.Join(e.dir, "audit.log")}
	harness.StartFree(t, func(port int) string {
		e.issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		e.resource = e.issuer + "/mcp"
		adminAddr := ""
		if o.admin {
			adminAddr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
			e.admin = "http://" + adminAddr
		}
		return e.caddyfile(adminAddr)
	})
	if o.admin {
		// caddy.Stop leaves the admin endpoint running; a config without
		// one shuts it down (this runs before the harness's Stop).
		t.Cleanup(func() {
			if err := caddy.Load([]byte(`{"admin":{"disabled":true,"config":{"persist":false}}}`), true); err != nil {
				t.Errorf("stop admin endpoint: %v", err)
			}
		})
	}
	harness.WaitReady(t, e.issuer+"/.well-known/oauth-authorization-server")
	md, err := harness.Discover(context.Background(), e.issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", e.issuer, err)
	}
	e.md = md
	e.audit.secret(svcSecret, agentASecret, agentBSecret)
	return e
}

// agentDemoServer is the demo MCP server with two more echo tools, so that
// every actor rule has a tool of its own, and the wait tool.
func agentDemoServer() *mcp.Server {
	s := mcpdemo.NewServer()
	for _, name := range []string{toolAgent, toolShallow} {
		mcp.AddTool(s, &mcp.Tool{Name: name, Description: "Echoes its input."},
			func(ctx context.Context, req *mcp.CallToolRequest, in mcpdemo.EchoIn) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
			})
	}
	mcp.AddTool(s, &mcp.Tool{Name: toolWait, Description: "Answers when released, or after 20 s."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			waiting.started <- struct{}{}
			select {
			case <-ctx.Done():
			case <-waiting.release:
			case <-time.After(20 * time.Second):
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "waited"}}}, nil, nil
		})
	return s
}

// waiting signals each call of the wait tool as it starts, and as the
// HTTP request that carries it ends (watchWait): the Go SDK runs a tool,
// and its handler, on when the request is cancelled, until the client
// cancels the call.
// A test releases the calls it made (waiting.release) before its
// upstream closes, which waits for them.
var waiting = struct{ started, ended, release chan struct{} }{make(chan struct{}, 8), make(chan struct{}, 8), make(chan struct{}, 8)}

// listHold, while set, holds the MCP server's answer to every tools/list
// (the gateway's fetch for pin_tools among them) until release is closed,
// signalling listing as each arrives.
var listHold atomic.Pointer[listHeld]

type listHeld struct{ listing, release chan struct{} }

// watchWait signals waiting.ended as a request for the wait tool ends:
// its context is cancelled when the client closes the connection.
func watchWait(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if l := listHold.Load(); l != nil && r.Header.Get("Mcp-Method") == "tools/list" {
			l.listing <- struct{}{}
			<-l.release
		}
		if r.Header.Get("Mcp-Name") == toolWait {
			go func() {
				<-r.Context().Done()
				waiting.ended <- struct{}{}
			}()
		}
		h.ServeHTTP(w, r)
	})
}

var agentsCaddyfile = template.Must(template.New("Caddyfile").Parse(`{
	{{if .Admin}}admin {{.Admin}}{{else}}admin off{{end}}
	persist_config off
	storage file_system {{.Dir}}/caddy
	log {
{{- with .DefaultLog}}
		output file {{.}}
		level DEBUG
{{- else}}
		level WARN
{{- end}}
	}
	log mcp_audit {
		include {{.AuditLogger}}
		output file {{.AuditFile}}
		format json
	}
	mcp_auth {
		issuer {{.Issuer}}
		{{with .DSN}}storage postgres "{{.}}"{{else}}storage bolt {{.Dir}}/mcp-auth.db{{end}}
{{- with .TTL}}
		access_token_ttl {{.}}
{{- end}}
		user {{.User}} {{.Hash}} {
			groups writers
		}
		user {{.OtherUser}} {{.Hash}} {
			groups writers
		}
		group writers {
			scopes * {{.Tools}} {{.Write}}
		}
		client {{.HostID}} {
			name "{{.HostName}}"
			public
			redirect_uri {{.RedirectURI}}
		}
		client {{.OtherHostID}} {
			name "Other Host"
			public
			redirect_uri {{.RedirectURI}}
		}
		client {{.WebHostID}} {
			name "Web Host"
			public
			redirect_uri {{.WebRedirectURI}}
		}
		client {{.SvcID}} {
			name "Backend Service"
			secret {{.SvcHash}}
			grant_types client_credentials
			introspect
		}
		agent {{.AgentA}} {
			name "{{.AgentAName}}"
			secret {{.AgentAHash}}
			allowed_clients {{.HostID}} {{.WebHostID}}
			max_depth 1
		}
		agent {{.AgentB}} {
			name "{{.AgentBName}}"
			secret {{.AgentBHash}}
			scopes {{.Tools}}
			max_depth 2
		}
{{- with .Extra}}
{{.}}
{{- end}}
	}
}

(rules) {
	scope {{.Tools}}
	tool echo {{.Tools}}
	tool add {{.Tools}} {
		require_user
	}
	tool add_note {{.Write}} {
		agents {{.AgentA}}
	}
	tool delete_notes {{.Write}} {
		user_only
	}
	tool agent_report {{.Tools}} {
		require_agent
	}
	tool shallow_echo {{.Tools}} {
		max_depth 1
	}
	tool wait {{.Tools}}
}

{{.Issuer}} {
	{{.AccessLog}}
	mcp_issuer
	@mcp path /mcp /.well-known/oauth-protected-resource/mcp
	handle @mcp {
		mcp_gateway {
			resource {{.Issuer}}/mcp
			import rules
		}
		reverse_proxy {{.Up}}
	}
	@sessions path /s/mcp /.well-known/oauth-protected-resource/s/mcp
	handle @sessions {
		mcp_gateway {
			resource {{.Issuer}}/s/mcp
			import rules
		}
		reverse_proxy {{.SessionUp}}
	}
}
`))

func (e *agentEnv) caddyfile(admin string) string {
	var b strings.Builder
	err := agentsCaddyfile.Execute(&b, map[string]any{
		"Admin": admin, "Dir": e.dir, "AuditLogger": auditLoggerName, "AuditFile": e.audit.path,
		"Issuer": e.issuer, "TTL": e.ttl, "User": username, "OtherUser": otherUser, "Hash": e.hash,
		"Tools": scopeTools, "Read": scopeRead, "Write": scopeWrite,
		"HostID": hostID, "HostName": hostName, "OtherHostID": otherHostID, "RedirectURI": redirectURI,
		"WebHostID": webHostID, "WebRedirectURI": webRedirectURI,
		"SvcID": svcID, "SvcHash": secretHash(svcSecret),
		"AgentA": agentA, "AgentAName": agentAName, "AgentAHash": secretHash(agentASecret),
		"AgentB": agentB, "AgentBName": agentBName, "AgentBHash": secretHash(agentBSecret),
		"Up": e.up, "SessionUp": e.sessionUp, "Extra": e.extra,
		"DefaultLog": e.logs.defaultLog, "AccessLog": e.logs.accessLog, "DSN": e.logs.dsn,
	})
	if err != nil {
		panic(err) // the template is a constant
	}
	return b.String()
}

// secretHash is the "sha256:<hex>" form the Caddyfile accepts for
// high-entropy secrets (bcrypt would slow every token request).
func secretHash(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return "sha256:" + hex.EncodeToString(s[:])
}

// ---- token endpoint ----

// tokenAnswer is a token endpoint answer, success or error.
type tokenAnswer struct {
	Status           int    `json:"-"`
	AccessToken      string `json:"access_token"`
	IssuedTokenType  string `json:"issued_token_type"`
	TokenType        string `json:"token_type"`
	RefreshToken     string `json:"refresh_token"`
	Scope            string `json:"scope"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func (a tokenAnswer) String() string {
	if a.Error != "" {
		return fmt.Sprintf("%d %s (%s)", a.Status, a.Error, a.ErrorDescription)
	}
	return fmt.Sprintf("%d token, scope %q", a.Status, a.Scope)
}

// tokenRequest posts form to the token endpoint, authenticating as id
// with client_secret_basic when id is set.
func (e *agentEnv) tokenRequest(ctx context.Context, t *testing.T, id, secret string, form url.Values) tokenAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.md.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", e.md.TokenEndpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("read token answer: %v", err)
	}
	var a tokenAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("token answer: status %d, body %.200q: %v", resp.StatusCode, body, err)
	}
	a.Status = resp.StatusCode
	e.audit.secret(a.AccessToken, a.RefreshToken)
	return a
}

// ownToken is the client credentials token of id (a confidential client
// or an agent) for the gateway's resource.
func (e *agentEnv) ownToken(ctx context.Context, t *testing.T, id, secret string) string {
	t.Helper()
	a := e.tokenRequest(ctx, t, id, secret, url.Values{"grant_type": {"client_credentials"}, "resource": {e.resource}})
	if a.Status != http.StatusOK || a.AccessToken == "" {
		t.Fatalf("client_credentials for %s = %v, want 200 with a token", id, a)
	}
	return a.AccessToken
}

// exchange runs RFC 8693 token exchange authenticated as id: subject is
// an access token, actor (optional) an agent's own token.
func (e *agentEnv) exchange(ctx context.Context, t *testing.T, id, secret, subject, actor string, extra url.Values) tokenAnswer {
	t.Helper()
	f := url.Values{
		"grant_type":         {grantExchange},
		"subject_token":      {subject},
		"subject_token_type": {typeAccessToken},
		"resource":           {e.resource},
	}
	if actor != "" {
		f.Set("actor_token", actor)
		f.Set("actor_token_type", typeAccessToken)
	}
	for k, v := range extra {
		f[k] = v
	}
	return e.tokenRequest(ctx, t, id, secret, f)
}

// revoke revokes token at the revocation endpoint (RFC 7009) as id.
func (e *agentEnv) revoke(ctx context.Context, t *testing.T, id, secret, token string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.md.RevocationEndpoint,
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", e.md.RevocationEndpoint, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("revoke as %s: status %d, want 200", id, resp.StatusCode)
	}
}

// introspect introspects token as svc, which may see every token.
func (e *agentEnv) introspect(ctx context.Context, t *testing.T, token string, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.md.IntrospectionEndpoint,
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(svcID, svcSecret)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", e.md.IntrospectionEndpoint, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("introspection answer: status %d: %v", resp.StatusCode, err)
	}
	return resp.StatusCode
}

// metadataString reads one string field of the issuer's metadata.
func (e *agentEnv) metadataString(ctx context.Context, t *testing.T, field string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.issuer+"/.well-known/oauth-authorization-server", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("metadata: %v", err)
	}
	v, _ := m[field].(string)
	if v == "" {
		t.Fatalf("metadata has no %s", field)
	}
	return v
}

// ---- authorization code flow ----

// hostConfig is the public MCP client's configuration.
func (e *agentEnv) hostConfig(clientID string, scopes ...string) *oauth2.Config {
	return e.md.Config(clientID, redirectURI, scopes...)
}

// authRequest is a PKCE authorization request for the gateway's resource,
// naming requested_actor when actor is set.
func (e *agentEnv) authRequest(cfg *oauth2.Config, actor string) harness.AuthRequest {
	verifier := oauth2.GenerateVerifier()
	state := oauth2.GenerateVerifier()[:22]
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("resource", e.resource)}
	if actor != "" {
		opts = append(opts, oauth2.SetAuthURLParam("requested_actor", actor))
	}
	return harness.AuthRequest{URL: cfg.AuthCodeURL(state, opts...), State: state, Verifier: verifier, Resource: e.resource}
}

// pushed pushes an authorization request naming actor (RFC 9126) for the
// public client and returns the authorization URL that refers to it.
func (e *agentEnv) pushed(ctx context.Context, t *testing.T, actor string, scopes ...string) harness.AuthRequest {
	t.Helper()
	verifier, state := oauth2.GenerateVerifier(), oauth2.GenerateVerifier()[:22]
	var par struct {
		RequestURI string `json:"request_uri"`
	}
	status, err := harness.PostForm(ctx, http.DefaultClient, e.metadataString(ctx, t, "pushed_authorization_request_endpoint"), url.Values{
		"client_id": {hostID}, "response_type": {"code"}, "redirect_uri": {redirectURI}, "scope": {strings.Join(scopes, " ")},
		"state": {state}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
		"resource": {e.resource}, "requested_actor": {actor},
	}, &par)
	if err != nil || status != http.StatusCreated || par.RequestURI == "" {
		t.Fatalf("PAR with requested_actor: status %d, request_uri %q, %v; want 201 with a request_uri", status, par.RequestURI, err)
	}
	return harness.AuthRequest{
		URL:   e.md.AuthorizationEndpoint + "?" + url.Values{"client_id": {hostID}, "request_uri": {par.RequestURI}}.Encode(),
		State: state, Verifier: verifier, Resource: e.resource,
	}
}

// code drives login and consent with robot and returns the code.
func (e *agentEnv) code(ctx context.Context, t *testing.T, robot *harness.Robot, ar harness.AuthRequest) string {
	t.Helper()
	q, err := robot.Authorize(ctx, ar.URL)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	if q.Get("state") != ar.State || q.Get("iss") != e.issuer || q.Get("code") == "" {
		t.Fatalf("authorization response %q: want code, state %q, iss %q", redact("?"+q.Encode()), ar.State, e.issuer)
	}
	return q.Get("code")
}

// redeem exchanges code, sending actor_token (and actor_token_type) when
// set, as the requested_actor flow needs.
func redeem(ctx context.Context, cfg *oauth2.Config, ar harness.AuthRequest, code, actorToken, actorType string) (*oauth2.Token, error) {
	opts := []oauth2.AuthCodeOption{oauth2.VerifierOption(ar.Verifier), oauth2.SetAuthURLParam("resource", ar.Resource)}
	if actorToken != "" {
		opts = append(opts, oauth2.SetAuthURLParam("actor_token", actorToken))
	}
	if actorType != "" {
		opts = append(opts, oauth2.SetAuthURLParam("actor_token_type", actorType))
	}
	return cfg.Exchange(ctx, code, opts...)
}

// oauthErrorCode is the RFC 6749 error code of a failed token request.
func oauthErrorCode(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// userToken is pattern A: the user delegates to the public client.
func (e *agentEnv) userToken(ctx context.Context, t *testing.T, robot *harness.Robot, scopes ...string) *oauth2.Token {
	t.Helper()
	cfg := e.hostConfig(hostID, scopes...)
	ar := e.authRequest(cfg, "")
	tok, err := redeem(ctx, cfg, ar, e.code(ctx, t, robot, ar), "", "")
	if err != nil {
		t.Fatalf("redeem user code: %v", err)
	}
	e.audit.secret(tok.AccessToken, tok.RefreshToken)
	return tok
}

// delegate runs the requested_actor flow: the user approves the client
// acting through actor; the code is redeemed with actorToken.
func (e *agentEnv) delegate(ctx context.Context, t *testing.T, robot *harness.Robot, actor, actorToken string, scopes ...string) *oauth2.Token {
	t.Helper()
	cfg := e.hostConfig(hostID, scopes...)
	ar := e.authRequest(cfg, actor)
	tok, err := redeem(ctx, cfg, ar, e.code(ctx, t, robot, ar), actorToken, "")
	if err != nil {
		t.Fatalf("redeem code for %s with its actor token: %v", actor, err)
	}
	e.audit.secret(tok.AccessToken, tok.RefreshToken)
	return tok
}

// lastConsent is the last consent page the robot saw.
func lastConsent(t *testing.T, robot *harness.Robot) *harness.Page {
	t.Helper()
	for i := len(robot.Pages) - 1; i >= 0; i-- {
		if robot.Pages[i].Form("consent") != nil {
			return robot.Pages[i]
		}
	}
	t.Fatal("the robot saw no consent page")
	return nil
}

// ---- token claims ----

// shape is what a token must say about who it speaks for.
type shape struct {
	sub, clientID, principalType string
	act                          []string // outermost first
}

func tokenShape(t *testing.T, token string) shape {
	t.Helper()
	c, err := harness.Claims(token)
	if err != nil {
		t.Fatalf("token claims: %v", err)
	}
	s := shape{}
	s.sub, _ = c["sub"].(string)
	s.clientID, _ = c["client_id"].(string)
	s.principalType, _ = c["principal_type"].(string)
	for a, _ := c["act"].(map[string]any); a != nil; a, _ = a["act"].(map[string]any) {
		sub, _ := a["sub"].(string)
		s.act = append(s.act, sub)
	}
	return s
}

func checkShape(t *testing.T, what, token string, want shape) {
	t.Helper()
	got := tokenShape(t, token)
	if got.sub != want.sub || got.clientID != want.clientID || got.principalType != want.principalType || !slices.Equal(got.act, want.act) {
		t.Errorf("%s: token sub=%q client_id=%q principal_type=%q act=%q, want sub=%q client_id=%q principal_type=%q act=%q",
			what, got.sub, got.clientID, got.principalType, got.act, want.sub, want.clientID, want.principalType, want.act)
	}
}

// ---- calls through the gateway ----

// callSDK calls tool with the official Go SDK client (a fresh stateless
// session per call) and returns the gateway's audit event for it; the
// call must succeed.
func (e *agentEnv) callSDK(ctx context.Context, t *testing.T, token, tool string) auditEvent {
	t.Helper()
	cs, err := connect(ctx, e.resource, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}), agentsProtocol, nil)
	if err != nil {
		t.Fatalf("connect for %s: %v", tool, err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: toolArgs(tool)})
	if err != nil || res.IsError {
		t.Fatalf("CallTool(%s) = %+v, %v; want success", tool, res, err)
	}
	return e.audit.await(t, tool, func(ev auditEvent) bool { return ev.Method == "tools/call" && ev.Tool == tool })
}

// toolArgs are valid arguments for the demo server's tools.
func toolArgs(tool string) map[string]any {
	switch tool {
	case "add":
		return map[string]any{"a": 1, "b": 2}
	case "delete_notes":
		return map[string]any{}
	}
	return map[string]any{"text": "hi"}
}

// callRaw posts one tools/call and returns the answer and its audit event.
func (e *agentEnv) callRaw(ctx context.Context, t *testing.T, token, tool string) (*http.Response, string, auditEvent) {
	t.Helper()
	resp, body, err := rawToolCall(ctx, e.client, e.resource, token, tool)
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	ev := e.audit.await(t, tool, func(ev auditEvent) bool {
		if resp.StatusCode == http.StatusUnauthorized {
			return ev.Status == http.StatusUnauthorized // refused before the body was read
		}
		return ev.Method == "tools/call" && ev.Tool == tool
	})
	return resp, body, ev
}

// rpcRefusal is the JSON-RPC error body of a refusal.
type rpcRefusal struct {
	Error struct {
		Code    int               `json:"code"`
		Message string            `json:"message"`
		Data    map[string]string `json:"data"`
	} `json:"error"`
}

// checkActorRefusal checks a refusal by an actor rule: 403, a JSON-RPC
// error naming the rule and the reason, and no insufficient_scope
// challenge (more scope cannot fix it).
func checkActorRefusal(t *testing.T, resp *http.Response, body, rule, reason string) {
	t.Helper()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("status %d, want 403; body %s", resp.StatusCode, body)
		return
	}
	if h := resp.Header.Get("WWW-Authenticate"); strings.Contains(h, "insufficient_scope") {
		t.Errorf("WWW-Authenticate = %q, want no insufficient_scope for an actor rule", h)
	}
	var r rpcRefusal
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Errorf("refusal body %q is not a JSON-RPC error: %v", body, err)
		return
	}
	if r.Error.Code == 0 || r.Error.Data["rule"] != rule || !strings.Contains(r.Error.Message, fmt.Sprintf("(rule %q)", rule)) {
		t.Errorf("refusal error = %+v, want a JSON-RPC error naming rule %q", r.Error, rule)
	}
	if !strings.Contains(r.Error.Data["reason"], reason) || !strings.Contains(r.Error.Message, reason) {
		t.Errorf("refusal reason = %q, message %q; want %q", r.Error.Data["reason"], r.Error.Message, reason)
	}
}

// ---- audit log ----

// auditEvent is one line of the gateway's audit log.
type auditEvent struct {
	Logger        string   `json:"logger"`
	Msg           string   `json:"msg"`
	Principal     string   `json:"principal"`
	Client        string   `json:"client"`
	Act           []string `json:"act"`
	PrincipalType string   `json:"principal_type"`
	Resource      string   `json:"resource"`
	Method        string   `json:"method"`
	Tool          string   `json:"tool"`
	Decision      string   `json:"decision"`
	Rule          string   `json:"rule"`
	Reason        string   `json:"reason"`
	Status        int      `json:"status"`
}

// auditLog reads the audit log file Caddy writes, from where it left off,
// and checks that no line carries a token or secret it was told about.
type auditLog struct {
	path string
	mu   sync.Mutex
	off  int
	// secrets must never appear in the log.
	secrets []string
}

func (a *auditLog) secret(s ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, v := range s {
		if v != "" {
			a.secrets = append(a.secrets, v)
		}
	}
}

// read returns the complete lines written since the last read.
func (a *auditLog) read(t *testing.T) []auditEvent {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	b, err := os.ReadFile(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatalf("read audit log: %v", err)
	}
	b = b[a.off:]
	end := bytes.LastIndexByte(b, '\n')
	if end < 0 {
		return nil
	}
	a.off += end + 1
	var out []auditEvent
	for _, line := range bytes.Split(b[:end], []byte("\n")) {
		for _, s := range a.secrets {
			if bytes.Contains(line, []byte(s)) {
				t.Errorf("audit log line carries a token or secret: %.120s...", line)
			}
		}
		var ev auditEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("audit log line %q: %v", line, err)
		}
		if ev.Logger != auditLoggerName {
			t.Errorf("audit log has an event of logger %q, want only %s", ev.Logger, auditLoggerName)
		}
		out = append(out, ev)
	}
	return out
}

// await returns the one event that match selects among those written
// since the last call, waiting for it; more than one is an error (one
// event per decision).
func (a *auditLog) await(t *testing.T, what string, match func(auditEvent) bool) auditEvent {
	t.Helper()
	deadline := time.Now().Add(auditWait)
	var seen []auditEvent
	for {
		seen = append(seen, a.read(t)...)
		var hits []auditEvent
		for _, ev := range seen {
			if match(ev) {
				hits = append(hits, ev)
			}
		}
		switch {
		case len(hits) > 1:
			t.Fatalf("%d audit events for one %s call, want one per decision: %+v", len(hits), what, hits)
		case len(hits) == 1:
			return hits[0]
		case time.Now().After(deadline):
			t.Fatalf("no audit event for the %s call within %s; saw %+v", what, auditWait, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkAudit compares the fields of an audit event that name who called
// and what was decided.
func checkAudit(t *testing.T, ev auditEvent, want auditEvent) {
	t.Helper()
	if ev.Principal != want.Principal || ev.Client != want.Client || !slices.Equal(ev.Act, want.Act) ||
		ev.PrincipalType != want.PrincipalType || ev.Decision != want.Decision || ev.Rule != want.Rule {
		t.Errorf("audit event principal=%q client=%q act=%q principal_type=%q decision=%q rule=%q, want principal=%q client=%q act=%q principal_type=%q decision=%q rule=%q",
			ev.Principal, ev.Client, ev.Act, ev.PrincipalType, ev.Decision, ev.Rule,
			want.Principal, want.Client, want.Act, want.PrincipalType, want.Decision, want.Rule)
	}
	if want.Reason != "" && !strings.Contains(ev.Reason, want.Reason) {
		t.Errorf("audit event reason = %q, want %q", ev.Reason, want.Reason)
	}
	if want.Status != 0 && ev.Status != want.Status {
		t.Errorf("audit event status = %d, want %d", ev.Status, want.Status)
	}
	if ev.Msg == "" || ev.Resource == "" {
		t.Errorf("audit event msg=%q resource=%q, want both set", ev.Msg, ev.Resource)
	}
}

// ---- the connected apps page ----

// revokeOnAppsPage opens the apps page with robot's session and revokes
// the row of clientID acting through actor ("" for none). It returns the
// apps page as it was before.
func (e *agentEnv) revokeOnAppsPage(ctx context.Context, t *testing.T, robot *harness.Robot, clientID, actor string) *harness.Page {
	t.Helper()
	apps, err := robot.Get(ctx, e.issuer+"/apps")
	if err != nil {
		t.Fatal(err)
	}
	var form *harness.Form
	for i := range apps.Forms {
		f := &apps.Forms[i]
		if f.Hidden.Get("client_id") == clientID && f.Hidden.Get("actor") == actor && f.Hidden.Get("resource") == e.resource {
			form = f
		}
	}
	if form == nil {
		t.Fatalf("apps page has no row for client %s with agent %q: %.500s", clientID, actor, apps.Text())
	}
	resp, err := robot.Submit(ctx, apps, form, url.Values{"action": {"revoke"}})
	if err != nil {
		t.Fatal(err)
	}
	after, err := harness.ReadPage(resp)
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != http.StatusOK {
		t.Fatalf("after revoking: status %d, page %.300s", after.Status, after.Text())
	}
	for _, f := range after.Forms {
		if f.Hidden.Get("client_id") == clientID && f.Hidden.Get("actor") == actor && f.Hidden.Get("resource") == e.resource {
			t.Errorf("apps page still lists client %s with agent %q after revoking", clientID, actor)
		}
	}
	return apps
}

// ---- tests ----

// TestAgentPatterns runs each principal pattern end to end through Caddy,
// the issuer, the gateway and the demo MCP server, with the Go SDK client:
// tokens say who they speak for, the gateway's actor rules allow and
// refuse accordingly, and the audit event names user and agent.
func TestAgentPatterns(t *testing.T) {
	e := setupAgents(t, agentOpts{})
	ctx := ctxTimeout(t, agentsTestLimit)
	alice := harness.NewRobot(username, password, redirectURI)
	ownA := e.ownToken(ctx, t, agentA, agentASecret)
	ownB := e.ownToken(ctx, t, agentB, agentBSecret)

	var userTok, svcTok, exchangedA, chainBA string

	t.Run("A user delegates to a client", func(t *testing.T) {
		userTok = e.userToken(ctx, t, alice, scopeTools, scopeRead, scopeWrite).AccessToken
		checkShape(t, "user token", userTok, shape{sub: username, clientID: hostID, principalType: "user"})
		user := auditEvent{Principal: username, Client: hostID, PrincipalType: "user", Decision: "allow"}
		for _, tool := range []string{toolPlain, toolUser, toolAgentA, toolUserOnly, toolShallow} {
			want := user
			want.Rule = tool
			checkAudit(t, e.callSDK(ctx, t, userTok, tool), want)
		}
		resp, body, ev := e.callRaw(ctx, t, userTok, toolAgent)
		checkActorRefusal(t, resp, body, toolAgent, "an agent is required")
		want := user
		want.Decision, want.Rule, want.Reason, want.Status = "deny", toolAgent, "an agent is required", http.StatusForbidden
		checkAudit(t, ev, want)
	})

	t.Run("B client credentials", func(t *testing.T) {
		tok := e.ownToken(ctx, t, svcID, svcSecret)
		svcTok = tok
		checkShape(t, "client credentials token", tok, shape{sub: svcID, clientID: svcID, principalType: "client"})
		client := auditEvent{Principal: svcID, Client: svcID, PrincipalType: "client", Decision: "allow", Rule: toolPlain}
		checkAudit(t, e.callSDK(ctx, t, tok, toolPlain), client)
		for _, tc := range []struct{ tool, reason string }{
			{toolUser, "a user principal is required"},
			{toolAgent, "an agent is required"},
			{toolUserOnly, "only users may call"},
		} {
			resp, body, ev := e.callRaw(ctx, t, tok, tc.tool)
			checkActorRefusal(t, resp, body, tc.tool, tc.reason)
			want := client
			want.Decision, want.Rule, want.Reason = "deny", tc.tool, tc.reason
			checkAudit(t, ev, want)
		}
	})

	t.Run("C agent alone", func(t *testing.T) {
		checkShape(t, "agent token", ownA, shape{sub: agentA, clientID: agentA, principalType: "agent"})
		agent := auditEvent{Principal: agentA, Client: agentA, PrincipalType: "agent", Decision: "allow"}
		for _, tool := range []string{toolPlain, toolAgentA, toolAgent, toolShallow} {
			want := agent
			want.Rule = tool
			checkAudit(t, e.callSDK(ctx, t, ownA, tool), want)
		}
		for _, tc := range []struct{ tool, reason string }{
			{toolUser, "a user principal is required"},
			{toolUserOnly, "agents may not call"},
		} {
			resp, body, ev := e.callRaw(ctx, t, ownA, tc.tool)
			checkActorRefusal(t, resp, body, tc.tool, tc.reason)
			want := agent
			want.Decision, want.Rule, want.Reason = "deny", tc.tool, tc.reason
			checkAudit(t, ev, want)
		}
	})

	t.Run("agent on behalf of a user via requested_actor", func(t *testing.T) {
		// Clients send actor_token with or without actor_token_type.
		for _, actorType := range []string{"", typeAccessToken, typeJWT} {
			t.Run("actor_token_type="+actorType, func(t *testing.T) {
				cfg := e.hostConfig(hostID, scopeTools, scopeWrite)
				ar := e.authRequest(cfg, agentA)
				code := e.code(ctx, t, alice, ar)
				text := lastConsent(t, alice).Text()
				for _, want := range []string{hostName, agentAName, agentA, scopeTools, scopeWrite} {
					if !strings.Contains(text, want) {
						t.Errorf("consent page for requested_actor lacks %q: %s", want, text)
					}
				}
				tok, err := redeem(ctx, cfg, ar, code, ownA, actorType)
				if err != nil {
					t.Fatalf("redeem with actor_token_type %q: %v", actorType, err)
				}
				e.audit.secret(tok.AccessToken)
				checkShape(t, "delegated token", tok.AccessToken, shape{sub: username, clientID: hostID, principalType: "user", act: []string{agentA}})
				checkAudit(t, e.callSDK(ctx, t, tok.AccessToken, toolAgentA), auditEvent{
					Principal: username, Client: hostID, Act: []string{agentA}, PrincipalType: "user", Decision: "allow", Rule: toolAgentA,
				})
			})
		}
	})

	t.Run("the agent's scope limit bounds the delegation", func(t *testing.T) {
		cfg := e.hostConfig(hostID, scopeTools, scopeWrite)
		ar := e.authRequest(cfg, agentB)
		code := e.code(ctx, t, alice, ar)
		if text := lastConsent(t, alice).Text(); !strings.Contains(text, agentBName) || !strings.Contains(text, scopeTools) || strings.Contains(text, scopeWrite) {
			t.Errorf("consent for %s shows %s (which it may never hold) or lacks %s: %s", agentB, scopeWrite, scopeTools, text)
		}
		tok, err := redeem(ctx, cfg, ar, code, ownB, "")
		if err != nil {
			t.Fatalf("redeem: %v", err)
		}
		e.audit.secret(tok.AccessToken)
		c, err := harness.Claims(tok.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(fmt.Sprint(c["scope"])); !slices.Equal(got, []string{scopeTools}) {
			t.Errorf("token delegated to %s has scope %q, want [%s]", agentB, got, scopeTools)
		}
		if userTok == "" {
			t.Skip("needs the user token of pattern A")
		}
		if a := e.exchange(ctx, t, agentB, agentBSecret, userTok, ownB, url.Values{"scope": {scopeWrite}}); a.Status != http.StatusBadRequest || a.Error != "invalid_scope" {
			t.Errorf("exchange to %s asking for %s = %v, want 400 invalid_scope", agentB, scopeWrite, a)
		}
	})

	t.Run("refresh keeps the delegation and never widens it", func(t *testing.T) {
		tok := e.delegate(ctx, t, alice, agentA, ownA, scopeTools, "offline_access")
		if tok.RefreshToken == "" {
			t.Fatal("no refresh token for offline_access")
		}
		tr := e.tokenRequest(ctx, t, "", "", url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {hostID}, "resource": {e.resource},
		})
		if tr.Status != http.StatusOK {
			t.Fatalf("refresh of a delegated grant = %v, want 200", tr)
		}
		checkShape(t, "refreshed delegated token", tr.AccessToken, shape{sub: username, clientID: hostID, principalType: "user", act: []string{agentA}})
		if got := strings.Fields(tr.Scope); slices.Contains(got, scopeWrite) || !slices.Contains(got, scopeTools) {
			t.Errorf("refreshed scope = %q, want %s without %s", tr.Scope, scopeTools, scopeWrite)
		}
		wide := e.tokenRequest(ctx, t, "", "", url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "client_id": {hostID},
			"resource": {e.resource}, "scope": {scopeTools + " " + scopeWrite},
		})
		if wide.Status != http.StatusBadRequest || wide.Error != "invalid_scope" {
			t.Errorf("refresh asking for %s too = %v, want 400 invalid_scope", scopeWrite, wide)
		}
	})

	t.Run("requested_actor through PAR", func(t *testing.T) {
		cfg := e.hostConfig(hostID, scopeTools)
		ar := e.pushed(ctx, t, agentA, scopeTools)
		code := e.code(ctx, t, alice, ar)
		if text := lastConsent(t, alice).Text(); !strings.Contains(text, agentAName) || !strings.Contains(text, hostName) {
			t.Errorf("consent page of a pushed requested_actor request does not name %q and %q: %s", hostName, agentAName, text)
		}
		if _, err := redeem(ctx, cfg, ar, code, "", ""); oauthErrorCode(err) != "invalid_grant" {
			t.Errorf("redeem of a pushed requested_actor code without actor_token: %v, want invalid_grant", err)
		}
		ar = e.pushed(ctx, t, agentA, scopeTools)
		tok, err := redeem(ctx, cfg, ar, e.code(ctx, t, alice, ar), ownA, typeAccessToken)
		if err != nil {
			t.Fatalf("redeem of a pushed requested_actor code: %v", err)
		}
		e.audit.secret(tok.AccessToken)
		checkShape(t, "delegated token (PAR)", tok.AccessToken, shape{sub: username, clientID: hostID, principalType: "user", act: []string{agentA}})
	})

	t.Run("introspection and userinfo show the delegation", func(t *testing.T) {
		tok := e.delegate(ctx, t, alice, agentA, ownA, scopeTools, "openid")
		var in struct {
			Active        bool           `json:"active"`
			Sub           string         `json:"sub"`
			ClientID      string         `json:"client_id"`
			PrincipalType string         `json:"principal_type"`
			Act           map[string]any `json:"act"`
		}
		status := e.introspect(ctx, t, tok.AccessToken, &in)
		if status != http.StatusOK || !in.Active || in.Sub != username || in.ClientID != hostID || in.PrincipalType != "user" || in.Act["sub"] != agentA {
			t.Errorf("introspection of the delegated token: status %d, %+v; want active, sub %s, client_id %s, principal_type user, act.sub %s",
				status, in, username, hostID, agentA)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.metadataString(ctx, t, "userinfo_endpoint"), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ui map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&ui); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("userinfo with the delegated token: status %d, %v", resp.StatusCode, err)
		}
		if act, _ := ui["act"].(map[string]any); ui["sub"] != username || act["sub"] != agentA {
			t.Errorf("userinfo = %v, want sub %s and act.sub %s", ui, username, agentA)
		}
	})

	t.Run("agent on behalf of a user via token exchange", func(t *testing.T) {
		if userTok == "" {
			t.Skip("needs the user token of pattern A")
		}
		a := e.exchange(ctx, t, agentA, agentASecret, userTok, ownA, nil)
		if a.Status != http.StatusOK || a.IssuedTokenType != typeAccessToken || !strings.EqualFold(a.TokenType, "Bearer") {
			t.Fatalf("exchange by %s = %v, issued_token_type %q, token_type %q; want 200, %s, Bearer", agentA, a, a.IssuedTokenType, a.TokenType, typeAccessToken)
		}
		if a.RefreshToken != "" {
			t.Errorf("exchange answered a refresh token, want none")
		}
		exchangedA = a.AccessToken
		checkShape(t, "exchanged token", exchangedA, shape{sub: username, clientID: hostID, principalType: "user", act: []string{agentA}})
		for _, tool := range []string{toolAgentA, toolShallow} {
			checkAudit(t, e.callSDK(ctx, t, exchangedA, tool), auditEvent{
				Principal: username, Client: hostID, Act: []string{agentA}, PrincipalType: "user", Decision: "allow", Rule: tool,
			})
		}
	})

	t.Run("two-agent chain", func(t *testing.T) {
		if exchangedA == "" {
			t.Skip("needs the exchanged token")
		}
		a := e.exchange(ctx, t, agentB, agentBSecret, exchangedA, ownB, nil)
		if a.Status != http.StatusOK {
			t.Fatalf("exchange by %s of %s's delegation = %v, want 200", agentB, agentA, a)
		}
		chainBA = a.AccessToken
		chain := []string{agentB, agentA} // newest actor outermost
		checkShape(t, "chained token", a.AccessToken, shape{sub: username, clientID: hostID, principalType: "user", act: chain})
		var in struct {
			Active bool           `json:"active"`
			Act    map[string]any `json:"act"`
		}
		e.introspect(ctx, t, a.AccessToken, &in)
		inner, _ := in.Act["act"].(map[string]any)
		if !in.Active || in.Act["sub"] != agentB || inner["sub"] != agentA {
			t.Errorf("introspection of the chained token: %+v, want active with act {sub %s, act {sub %s}}", in, agentB, agentA)
		}
		both := auditEvent{Principal: username, Client: hostID, Act: chain, PrincipalType: "user", Decision: "allow", Rule: toolPlain}
		checkAudit(t, e.callSDK(ctx, t, a.AccessToken, toolPlain), both)

		resp, body, ev := e.callRaw(ctx, t, a.AccessToken, toolShallow)
		checkActorRefusal(t, resp, body, toolShallow, "delegation depth 2 exceeds 1")
		both.Decision, both.Rule, both.Reason, both.Status = "deny", toolShallow, "delegation depth 2 exceeds 1", http.StatusForbidden
		checkAudit(t, ev, both)
	})

	// tools/list shows each principal what the actor rules let it call.
	t.Run("tools/list", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			token *string
			want  []string
		}{
			// wait has the base rule: everyone sees it.
			{"user", &userTok, []string{toolUser, toolAgentA, toolUserOnly, toolPlain, toolShallow, toolWait}},
			// user_only admits only a user acting directly (README).
			{"client", &svcTok, []string{toolAgentA, toolPlain, toolShallow, toolWait}},
			{"agent-a alone", &ownA, []string{toolAgentA, toolAgent, toolPlain, toolShallow, toolWait}},
			{"agent-b alone", &ownB, []string{toolAgent, toolPlain, toolShallow, toolWait}},
			{"agent-a for the user", &exchangedA, []string{toolUser, toolAgentA, toolAgent, toolPlain, toolShallow, toolWait}},
			{"agent-b for agent-a for the user", &chainBA, []string{toolUser, toolAgent, toolPlain, toolWait}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if *tc.token == "" {
					t.Skip("the token was not issued")
				}
				want := slices.Sorted(slices.Values(tc.want))
				if got := e.listTools(ctx, t, *tc.token); !slices.Equal(got, want) {
					t.Errorf("ListTools = %q, want %q", got, want)
				}
			})
		}
	})
}

// listTools lists the tools the gateway lets token see, sorted.
func (e *agentEnv) listTools(ctx context.Context, t *testing.T, token string) []string {
	t.Helper()
	cs, err := connect(ctx, e.resource, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}), agentsProtocol, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	lt, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("ListTools: %v", err)
	}
	var names []string
	for _, tl := range lt.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

// TestAgentFailures is the failure table of issue 4: what the issuer
// refuses when an agent asks to act for a user, what the gateway's actor
// rules refuse, and what a user's revocation ends.
func TestAgentFailures(t *testing.T) {
	e := setupAgents(t, agentOpts{})
	ctx := ctxTimeout(t, agentsTestLimit)
	alice := harness.NewRobot(username, password, redirectURI)
	ownA := e.ownToken(ctx, t, agentA, agentASecret)
	ownB := e.ownToken(ctx, t, agentB, agentBSecret)
	userTok := e.userToken(ctx, t, alice, scopeTools, scopeRead, scopeWrite).AccessToken
	delegatedA := e.delegate(ctx, t, alice, agentA, ownA, scopeTools, scopeWrite).AccessToken
	revokedA := e.ownToken(ctx, t, agentA, agentASecret)
	e.revoke(ctx, t, agentA, agentASecret, revokedA)

	t.Run("requested_actor token request", func(t *testing.T) {
		for _, tc := range []struct {
			name              string
			actor             string // requested_actor
			actorToken        func() string
			actorType         string
			wantErr           string
			wantGatewayStatus int // for the actor token itself; 0: not checked
		}{
			{name: "no actor token", actor: agentA, actorToken: func() string { return "" }, wantErr: "invalid_grant"},
			{name: "actor token of a different agent", actor: agentA, actorToken: func() string { return ownB }, wantErr: "invalid_grant"},
			{name: "revoked actor token", actor: agentA, actorToken: func() string { return revokedA }, wantErr: "invalid_grant", wantGatewayStatus: http.StatusUnauthorized},
			{name: "user token as actor token", actor: agentA, actorToken: func() string { return userTok }, wantErr: "invalid_grant"},
			{name: "delegated token as actor token", actor: agentA, actorToken: func() string { return delegatedA }, wantErr: "invalid_grant"},
			{name: "client token as actor token", actor: agentA, actorToken: func() string { return e.ownToken(ctx, t, svcID, svcSecret) }, wantErr: "invalid_grant"},
			{name: "unsupported actor_token_type", actor: agentA, actorToken: func() string { return ownA }, actorType: "urn:ietf:params:oauth:token-type:id_token", wantErr: "invalid_request"},
			{name: "actor token without requested_actor", actor: "", actorToken: func() string { return ownA }, wantErr: "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cfg := e.hostConfig(hostID, scopeTools)
				ar := e.authRequest(cfg, tc.actor)
				code := e.code(ctx, t, alice, ar)
				tok, err := redeem(ctx, cfg, ar, code, tc.actorToken(), tc.actorType)
				if err == nil {
					t.Fatalf("redeem = token with act %q, want %s", tokenShape(t, tok.AccessToken).act, tc.wantErr)
				}
				if got := oauthErrorCode(err); got != tc.wantErr {
					t.Errorf("redeem error = %q (%v), want %s", got, err, tc.wantErr)
				}
				if tc.wantGatewayStatus != 0 {
					resp, body, _ := e.callRaw(ctx, t, tc.actorToken(), toolPlain)
					if resp.StatusCode != tc.wantGatewayStatus {
						t.Errorf("gateway call with the actor token: status %d, want %d; body %s", resp.StatusCode, tc.wantGatewayStatus, body)
					}
				}
			})
		}
	})

	t.Run("consent is per agent", func(t *testing.T) {
		// web-host's consent is remembered, unlike a loopback client's:
		// what the user approved for the client alone, or for one agent,
		// must not cover another agent.
		robot := harness.NewRobot(username, password, webRedirectURI)
		cfg := e.md.Config(webHostID, webRedirectURI, scopeTools)
		consents := func() int {
			n := 0
			for _, p := range robot.Pages {
				if p.Form("consent") != nil {
					n++
				}
			}
			return n
		}
		for _, step := range []struct {
			actor       string
			wantConsent bool
		}{
			{"", true},
			{"", false}, // remembered
			{agentA, true},
			{agentA, false},
			{agentB, true},
		} {
			before := consents()
			ar := e.authRequest(cfg, step.actor)
			q, err := robot.Authorize(ctx, ar.URL)
			if err != nil || q.Get("code") == "" {
				t.Fatalf("authorize %s for agent %q: %q, %v; want a code", webHostID, step.actor, redact("?"+q.Encode()), err)
			}
			if shown := consents() > before; shown != step.wantConsent {
				t.Errorf("authorize %s for agent %q: consent shown %v, want %v", webHostID, step.actor, shown, step.wantConsent)
			}
			if step.actor != "" && step.wantConsent {
				if text := lastConsent(t, robot).Text(); !strings.Contains(text, map[string]string{agentA: agentAName, agentB: agentBName}[step.actor]) {
					t.Errorf("consent for agent %q does not name it: %s", step.actor, text)
				}
			}
		}
	})

	t.Run("requested_actor authorization", func(t *testing.T) {
		for _, tc := range []struct{ name, client, actor string }{
			{"unknown agent", hostID, "no-such-agent"},
			{"agent not allowed for the client", otherHostID, agentA},
			{"a client is not an agent", hostID, svcID},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ar := e.authRequest(e.hostConfig(tc.client, scopeTools), tc.actor)
				q, err := alice.Authorize(ctx, ar.URL)
				if err != nil {
					t.Fatalf("authorize: %v", err)
				}
				if q.Has("code") || q.Get("error") != "invalid_request" || q.Get("state") != ar.State {
					t.Errorf("authorization response %q, want error=invalid_request with the state and no code", redact("?"+q.Encode()))
				}
			})
		}
	})

	t.Run("token exchange", func(t *testing.T) {
		narrow := e.userToken(ctx, t, alice, scopeTools).AccessToken
		delegatedB := e.exchange(ctx, t, agentB, agentBSecret, userTok, ownB, nil)
		if delegatedB.Status != http.StatusOK {
			t.Fatalf("exchange by %s = %v, want 200", agentB, delegatedB)
		}
		for _, tc := range []struct {
			name           string
			id, secret     string
			subject, actor string
			extra          url.Values
			wantErr        string
		}{
			{"scope widening", agentA, agentASecret, narrow, ownA, url.Values{"scope": {scopeWrite}}, "invalid_scope"},
			{"depth beyond the actor's max_depth", agentA, agentASecret, delegatedB.AccessToken, ownA, nil, "invalid_request"},
			{"actor token of another agent than the caller", agentB, agentBSecret, userTok, ownA, nil, "invalid_request"},
			{"revoked actor token", agentA, agentASecret, userTok, revokedA, nil, "invalid_request"},
			{"agent acting for itself", agentB, agentBSecret, ownB, ownB, nil, "invalid_request"},
			{"agent not allowed for the subject's client", agentA, agentASecret, e.otherHostToken(ctx, t, alice), ownA, nil, "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				a := e.exchange(ctx, t, tc.id, tc.secret, tc.subject, tc.actor, tc.extra)
				if a.Status != http.StatusBadRequest || a.Error != tc.wantErr {
					t.Errorf("exchange = %v, want 400 %s", a, tc.wantErr)
				}
			})
		}
	})

	t.Run("gateway actor rules", func(t *testing.T) {
		delegatedB := e.exchange(ctx, t, agentB, agentBSecret, userTok, ownB, nil).AccessToken
		chain := e.exchange(ctx, t, agentB, agentBSecret, delegatedA, ownB, nil).AccessToken
		if delegatedB == "" || chain == "" {
			t.Fatal("exchanges for agent-b failed")
		}
		svc := e.ownToken(ctx, t, svcID, svcSecret)
		for _, tc := range []struct {
			name, token, tool, reason string
			audit                     auditEvent
		}{
			{"agent not allowed for the tool", delegatedB, toolAgentA, "agent " + agentB + " is not allowed",
				auditEvent{Principal: username, Client: hostID, Act: []string{agentB}, PrincipalType: "user"}},
			{"agent alone not allowed for the tool", ownB, toolAgentA, "agent " + agentB + " is not allowed",
				auditEvent{Principal: agentB, Client: agentB, PrincipalType: "agent"}},
			{"agent-only token on a require_user tool", ownA, toolUser, "a user principal is required",
				auditEvent{Principal: agentA, Client: agentA, PrincipalType: "agent"}},
			{"delegated token on a user_only tool", delegatedA, toolUserOnly, "agents may not call",
				auditEvent{Principal: username, Client: hostID, Act: []string{agentA}, PrincipalType: "user"}},
			{"depth exceeded", chain, toolShallow, "delegation depth 2 exceeds 1",
				auditEvent{Principal: username, Client: hostID, Act: []string{agentB, agentA}, PrincipalType: "user"}},
			{"outermost agent decides", chain, toolAgentA, "agent " + agentB + " is not allowed",
				auditEvent{Principal: username, Client: hostID, Act: []string{agentB, agentA}, PrincipalType: "user"}},
			{"user on a require_agent tool", userTok, toolAgent, "an agent is required",
				auditEvent{Principal: username, Client: hostID, PrincipalType: "user"}},
			{"client on a require_user tool", svc, toolUser, "a user principal is required",
				auditEvent{Principal: svcID, Client: svcID, PrincipalType: "client"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, body, ev := e.callRaw(ctx, t, tc.token, tc.tool)
				checkActorRefusal(t, resp, body, tc.tool, tc.reason)
				want := tc.audit
				want.Decision, want.Rule, want.Reason, want.Status = "deny", tc.tool, tc.reason, http.StatusForbidden
				checkAudit(t, ev, want)
			})
		}
	})

	t.Run("revoked grant", func(t *testing.T) {
		bob := harness.NewRobot(otherUser, password, redirectURI)
		direct := e.userToken(ctx, t, bob, scopeTools).AccessToken
		tok := e.delegate(ctx, t, bob, agentA, ownA, scopeTools, "offline_access")
		if tok.RefreshToken == "" {
			t.Fatal("no refresh token for offline_access")
		}
		derived := e.exchange(ctx, t, agentB, agentBSecret, tok.AccessToken, ownB, nil).AccessToken
		for _, tk := range []string{tok.AccessToken, derived} {
			if resp, body, _ := e.callRaw(ctx, t, tk, toolPlain); resp.StatusCode != http.StatusOK {
				t.Fatalf("call before revocation: status %d; body %s", resp.StatusCode, body)
			}
		}

		apps := e.revokeOnAppsPage(ctx, t, bob, hostID, agentA)
		if text := apps.Text(); !strings.Contains(text, agentAName) || !strings.Contains(text, hostName) {
			t.Errorf("apps page does not name the client %q and the agent %q: %s", hostName, agentAName, text)
		}

		for _, tc := range []struct{ name, token string }{
			{"delegated token", tok.AccessToken},
			{"token exchanged from it", derived},
		} {
			resp, body, ev := e.callRaw(ctx, t, tc.token, toolPlain)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s after revocation: status %d, want 401; body %s", tc.name, resp.StatusCode, body)
			}
			if ch, _ := challenge(resp.Header.Get("WWW-Authenticate")); ch["error"] != "invalid_token" {
				t.Errorf("%s after revocation: WWW-Authenticate = %q, want error=\"invalid_token\"", tc.name, resp.Header.Get("WWW-Authenticate"))
			}
			if ev.Decision != "deny" {
				t.Errorf("%s after revocation: audit decision %q, want deny", tc.name, ev.Decision)
			}
		}
		tr := e.tokenRequest(ctx, t, "", "", url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {hostID}, "resource": {e.resource},
		})
		if tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
			t.Errorf("refresh of the revoked delegation = %v, want 400 invalid_grant", tr)
		}
		// Revoking the agent's row leaves the user's own connection of
		// the same client alone.
		if resp, body, _ := e.callRaw(ctx, t, direct, toolPlain); resp.StatusCode != http.StatusOK {
			t.Errorf("the user's direct token after revoking only the agent's delegation: status %d, want 200; body %s", resp.StatusCode, body)
		}

		// The client passed the user's own token on to agent-a by token
		// exchange: the apps page says so, and revoking the client's row
		// ends the agent's token too.
		passed := e.exchange(ctx, t, agentA, agentASecret, direct, ownA, nil)
		if passed.Status != http.StatusOK {
			t.Fatalf("exchange of bob's token by %s = %v, want 200", agentA, passed)
		}
		apps = e.revokeOnAppsPage(ctx, t, bob, hostID, "")
		if text := apps.Text(); !strings.Contains(text, "Also passed to") || !strings.Contains(text, agentAName) {
			t.Errorf("apps page does not show that the connection was passed to %q: %s", agentAName, text)
		}
		for _, tc := range []struct{ name, token string }{
			{"direct token", direct},
			{"token exchanged from it", passed.AccessToken},
		} {
			if resp, body, _ := e.callRaw(ctx, t, tc.token, toolPlain); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s after revoking the client's row: status %d, want 401; body %s", tc.name, resp.StatusCode, body)
			}
		}
	})
}

// otherHostToken is alice's token of the client agent-a may not act for.
func (e *agentEnv) otherHostToken(ctx context.Context, t *testing.T, robot *harness.Robot) string {
	t.Helper()
	cfg := e.hostConfig(otherHostID, scopeTools)
	ar := e.authRequest(cfg, "")
	tok, err := redeem(ctx, cfg, ar, e.code(ctx, t, robot, ar), "", "")
	if err != nil {
		t.Fatalf("redeem %s code: %v", otherHostID, err)
	}
	e.audit.secret(tok.AccessToken)
	return tok.AccessToken
}

// TestAgentExpiredActorToken runs with a 5s access token lifetime: an
// actor token that expired between consent and the token request is
// refused, at the token endpoint and in token exchange; a fresh one works.
// exp is in whole seconds, so a token lives 4 to 5 s: long enough for a
// loaded CI machine to use the fresh tokens (a 2s lifetime left it 1 s at
// worst).
func TestAgentExpiredActorToken(t *testing.T) {
	e := setupAgents(t, agentOpts{accessTTL: "5s"})
	ctx := ctxTimeout(t, 60*time.Second)
	alice := harness.NewRobot(username, password, redirectURI)

	expiring := e.ownToken(ctx, t, agentA, agentASecret)
	c, err := harness.Claims(expiring)
	if err != nil {
		t.Fatal(err)
	}
	exp, ok := c["exp"].(float64)
	if !ok {
		t.Fatalf("agent token has no numeric exp: %v", c["exp"])
	}
	cfg := e.hostConfig(hostID, scopeTools)
	ar := e.authRequest(cfg, agentA)
	code := e.code(ctx, t, alice, ar)
	time.Sleep(time.Until(time.Unix(int64(exp), 0).Add(time.Second)))

	t.Run("token request", func(t *testing.T) {
		_, err := redeem(ctx, cfg, ar, code, expiring, "")
		if got := oauthErrorCode(err); got != "invalid_grant" {
			t.Errorf("redeem with an expired actor token: error %q (%v), want invalid_grant", got, err)
		}
		// The same flow with a fresh actor token (redeemed at once,
		// well within its 5s).
		ar := e.authRequest(cfg, agentA)
		code := e.code(ctx, t, alice, ar)
		tok, err := redeem(ctx, cfg, ar, code, e.ownToken(ctx, t, agentA, agentASecret), "")
		if err != nil {
			t.Fatalf("redeem with a fresh actor token: %v", err)
		}
		checkShape(t, "delegated token", tok.AccessToken, shape{sub: username, clientID: hostID, principalType: "user", act: []string{agentA}})
	})

	t.Run("token exchange", func(t *testing.T) {
		user := e.userToken(ctx, t, alice, scopeTools).AccessToken
		a := e.exchange(ctx, t, agentA, agentASecret, user, expiring, nil)
		if a.Status != http.StatusBadRequest || a.Error != "invalid_request" {
			t.Errorf("exchange with an expired actor token = %v, want 400 invalid_request", a)
		}
	})
}

// TestAgentRegisteredAtRuntime is issue 4's "done when" for an agent that
// exists only through the admin API (the API `caddy mcp-auth agent add`
// calls): it gets its own token, obtains an on-behalf-of token for a user
// through login and consent, calls a tool through the gateway (whose
// audit event names user and agent), is refused on a tool whose policy
// excludes it, and loses access when the user revokes it on the connected
// apps page.
func TestAgentRegisteredAtRuntime(t *testing.T) {
	e := setupAgents(t, agentOpts{admin: true})
	ctx := ctxTimeout(t, agentsTestLimit)
	const rtAgent, rtName = "runtime-agent", "Runtime Agent"

	var added struct {
		ID     string `json:"agent_id"`
		Secret string `json:"secret"`
		Source string `json:"source"`
	}
	status := e.adminJSON(ctx, t, http.MethodPost, "/mcp-auth/agents",
		map[string]any{"agent_id": rtAgent, "name": rtName, "allowed_clients": []string{hostID}}, &added)
	if status != http.StatusCreated || added.ID != rtAgent || added.Secret == "" {
		t.Fatalf("POST /mcp-auth/agents: status %d, answer %+v; want 201 with a generated secret", status, added.ID)
	}
	e.audit.secret(added.Secret)
	var shown map[string]any
	if status := e.adminJSON(ctx, t, http.MethodGet, "/mcp-auth/agents/"+rtAgent, nil, &shown); status != http.StatusOK {
		t.Fatalf("GET /mcp-auth/agents/%s: status %d", rtAgent, status)
	}
	if _, has := shown["secret"]; has || shown["source"] != "admin" {
		t.Errorf("GET /mcp-auth/agents/%s = %v, want source admin and no secret", rtAgent, shown)
	}

	own := e.ownToken(ctx, t, rtAgent, added.Secret)
	checkShape(t, "runtime agent's token", own, shape{sub: rtAgent, clientID: rtAgent, principalType: "agent"})

	alice := harness.NewRobot(username, password, redirectURI)
	tok := e.delegate(ctx, t, alice, rtAgent, own, scopeTools, scopeWrite, "offline_access")
	if text := lastConsent(t, alice).Text(); !strings.Contains(text, rtName) || !strings.Contains(text, hostName) {
		t.Errorf("consent page does not name the client %q and the agent %q: %s", hostName, rtName, text)
	}
	checkShape(t, "delegated token", tok.AccessToken, shape{sub: username, clientID: hostID, principalType: "user", act: []string{rtAgent}})

	checkAudit(t, e.callSDK(ctx, t, tok.AccessToken, toolPlain), auditEvent{
		Principal: username, Client: hostID, Act: []string{rtAgent}, PrincipalType: "user", Decision: "allow", Rule: toolPlain,
	})
	resp, body, ev := e.callRaw(ctx, t, tok.AccessToken, toolAgentA)
	checkActorRefusal(t, resp, body, toolAgentA, "agent "+rtAgent+" is not allowed")
	checkAudit(t, ev, auditEvent{
		Principal: username, Client: hostID, Act: []string{rtAgent}, PrincipalType: "user",
		Decision: "deny", Rule: toolAgentA, Reason: "agent " + rtAgent + " is not allowed", Status: http.StatusForbidden,
	})

	e.revokeOnAppsPage(ctx, t, alice, hostID, rtAgent)
	resp, body, ev = e.callRaw(ctx, t, tok.AccessToken, toolPlain)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("delegated token after the user revoked it: status %d, want 401; body %s", resp.StatusCode, body)
	}
	if ev.Decision != "deny" {
		t.Errorf("audit decision after revocation = %q, want deny", ev.Decision)
	}
	tr := e.tokenRequest(ctx, t, "", "", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {hostID}, "resource": {e.resource},
	})
	if tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
		t.Errorf("refresh after the user revoked the delegation = %v, want 400 invalid_grant", tr)
	}

	// The rest of the agent's life cycle through the admin API.
	secret := added.Secret
	t.Run("rotate secret", func(t *testing.T) {
		var rot struct {
			Secret string `json:"secret"`
		}
		if status := e.adminJSON(ctx, t, http.MethodPost, "/mcp-auth/agents/"+rtAgent+"/secret", nil, &rot); status != http.StatusOK || rot.Secret == "" {
			t.Fatalf("rotate secret: status %d, want 200 with a new secret", status)
		}
		e.audit.secret(rot.Secret)
		if a := e.clientCredentials(ctx, t, rtAgent, secret); a.Status != http.StatusUnauthorized || a.Error != "invalid_client" {
			t.Errorf("client_credentials with the rotated-out secret = %v, want 401 invalid_client", a)
		}
		if a := e.clientCredentials(ctx, t, rtAgent, rot.Secret); a.Status != http.StatusOK {
			t.Errorf("client_credentials with the new secret = %v, want 200", a)
		}
		secret = rot.Secret
	})
	t.Run("disable and enable", func(t *testing.T) {
		own := e.ownToken(ctx, t, rtAgent, secret)
		acting := e.delegate(ctx, t, alice, rtAgent, own, scopeTools, "offline_access")
		if status := e.adminJSON(ctx, t, http.MethodPost, "/mcp-auth/agents/"+rtAgent+"/disable", nil, nil); status != http.StatusNoContent {
			t.Fatalf("disable: status %d, want 204", status)
		}
		for _, tc := range []struct{ name, token string }{
			{"a disabled agent's own token", own},
			{"a token of a disabled agent acting for a user", acting.AccessToken},
		} {
			if resp, body, _ := e.callRaw(ctx, t, tc.token, toolPlain); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s at the gateway: status %d, want 401; body %s", tc.name, resp.StatusCode, body)
			}
		}
		tr := e.tokenRequest(ctx, t, "", "", url.Values{
			"grant_type": {"refresh_token"}, "refresh_token": {acting.RefreshToken}, "client_id": {hostID}, "resource": {e.resource},
		})
		if tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
			t.Errorf("refresh of a disabled agent's delegation = %v, want 400 invalid_grant", tr)
		}
		if a := e.clientCredentials(ctx, t, rtAgent, secret); a.Status == http.StatusOK {
			t.Errorf("client_credentials of a disabled agent = %v, want a refusal", a)
		}
		ar := e.authRequest(e.hostConfig(hostID, scopeTools), rtAgent)
		if q, err := alice.Authorize(ctx, ar.URL); err != nil || q.Has("code") || q.Get("error") != "invalid_request" {
			t.Errorf("requested_actor of a disabled agent: %q, %v; want error=invalid_request", redact("?"+q.Encode()), err)
		}
		if status := e.adminJSON(ctx, t, http.MethodPost, "/mcp-auth/agents/"+rtAgent+"/enable", nil, nil); status != http.StatusNoContent {
			t.Fatalf("enable: status %d, want 204", status)
		}
		if a := e.clientCredentials(ctx, t, rtAgent, secret); a.Status != http.StatusOK {
			t.Errorf("client_credentials of the enabled agent = %v, want 200", a)
		}
	})
	t.Run("configured agents are read-only", func(t *testing.T) {
		var list []map[string]any
		if status := e.adminJSON(ctx, t, http.MethodGet, "/mcp-auth/agents", nil, &list); status != http.StatusOK {
			t.Fatalf("list agents: status %d", status)
		}
		sources := map[string]any{}
		for _, a := range list {
			sources[fmt.Sprint(a["agent_id"])] = a["source"]
			if _, has := a["secret"]; has {
				t.Errorf("agent list shows a secret for %v", a["agent_id"])
			}
		}
		if want := map[string]any{agentA: "config", agentB: "config", rtAgent: "admin"}; fmt.Sprint(sources) != fmt.Sprint(want) {
			t.Errorf("agent sources = %v, want %v", sources, want)
		}
		for _, tc := range []struct{ method, path string }{
			{http.MethodDelete, "/mcp-auth/agents/" + agentA},
			{http.MethodPost, "/mcp-auth/agents/" + agentA + "/disable"},
			{http.MethodPost, "/mcp-auth/agents/" + agentA + "/secret"},
		} {
			if status := e.adminJSON(ctx, t, tc.method, tc.path, nil, nil); status != http.StatusConflict {
				t.Errorf("%s %s: status %d, want 409", tc.method, tc.path, status)
			}
		}
		if a := e.clientCredentials(ctx, t, agentA, agentASecret); a.Status != http.StatusOK {
			t.Errorf("client_credentials of %s after the refused changes = %v, want 200", agentA, a)
		}
	})
	t.Run("remove", func(t *testing.T) {
		own := e.ownToken(ctx, t, rtAgent, secret)
		if status := e.adminJSON(ctx, t, http.MethodDelete, "/mcp-auth/agents/"+rtAgent, nil, nil); status != http.StatusNoContent {
			t.Fatalf("remove: status %d, want 204", status)
		}
		if status := e.adminJSON(ctx, t, http.MethodGet, "/mcp-auth/agents/"+rtAgent, nil, nil); status != http.StatusNotFound {
			t.Errorf("show a removed agent: status %d, want 404", status)
		}
		if resp, body, _ := e.callRaw(ctx, t, own, toolPlain); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("a removed agent's own token at the gateway: status %d, want 401; body %s", resp.StatusCode, body)
		}
		if a := e.clientCredentials(ctx, t, rtAgent, secret); a.Status != http.StatusUnauthorized || a.Error != "invalid_client" {
			t.Errorf("client_credentials of a removed agent = %v, want 401 invalid_client", a)
		}
	})
}

// adminJSON calls the admin API and decodes its JSON answer into out.
func (e *agentEnv) adminJSON(ctx context.Context, t *testing.T, method, path string, in, out any) int {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.admin+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if out == nil {
		return resp.StatusCode
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: status %d, body %.300q: %v", method, path, resp.StatusCode, b, err)
	}
	return resp.StatusCode
}

// clientCredentials is the status and error of a client credentials
// request as id.
func (e *agentEnv) clientCredentials(ctx context.Context, t *testing.T, id, secret string) tokenAnswer {
	t.Helper()
	return e.tokenRequest(ctx, t, id, secret, url.Values{"grant_type": {"client_credentials"}, "resource": {e.resource}})
}

// TestAgentSessionBinding: an MCP session (2025-11-25, server with
// sessions) opened by an agent acting for a user belongs to that user,
// client and agent; the user's own token, the agent's own token and a
// token whose outermost actor is another agent cannot use it.
func TestAgentSessionBinding(t *testing.T) {
	e := setupAgents(t, agentOpts{})
	s := *e
	s.resource = e.issuer + "/s/mcp"
	ctx := ctxTimeout(t, agentsTestLimit)
	alice := harness.NewRobot(username, password, redirectURI)
	ownA := s.ownToken(ctx, t, agentA, agentASecret)
	delegated := s.delegate(ctx, t, alice, agentA, ownA, scopeTools).AccessToken
	direct := s.userToken(ctx, t, alice, scopeTools).AccessToken
	chain := s.exchange(ctx, t, agentB, agentBSecret, delegated, s.ownToken(ctx, t, agentB, agentBSecret), nil).AccessToken

	resp, body := sessionPost(ctx, t, s.resource, delegated, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	sid := resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || sid == "" {
		t.Fatalf("initialize with the delegated token: status %d, session %q; body %s", resp.StatusCode, sid, body)
	}
	sessionPost(ctx, t, s.resource, delegated, sid, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	const list = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`
	if resp, body := sessionPost(ctx, t, s.resource, delegated, sid, list); resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list in the session with the token that opened it: status %d; body %s", resp.StatusCode, body)
	}
	for _, tc := range []struct{ name, token string }{
		{"the user's own token", direct},
		{"the agent's own token", ownA},
		{"another agent acting on the delegation", chain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.token == "" {
				t.Fatal("the token was not issued")
			}
			resp, body := sessionPost(ctx, t, s.resource, tc.token, sid, list)
			if resp.StatusCode < 400 || strings.Contains(body, `"echo"`) {
				t.Errorf("tools/list in the delegated session: status %d, want a refusal; body %s", resp.StatusCode, body)
			}
		})
	}
}

// sessionPost sends one 2025-11-25 message to resource, in session when
// set.
func sessionPost(ctx context.Context, t *testing.T, resource, token, session, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, resource, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
		req.Header.Set("MCP-Protocol-Version", "2025-11-25")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", resource, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return resp, string(b)
}

// TestExchangedTokenEndsWithItsSubject: a token exchanged from another
// (RFC 8693) never outlives it, revocation included. The user's client
// revokes the token it gave agent-a (RFC 7009): the token agent-a got for
// it by exchange, and the one agent-a exchanged that for in turn (a fresh
// jti, which the client never saw), are refused at the gateway and
// inactive at introspection; an exchange of the revoked token is refused.
// The user's other token, of the same grant, is untouched.
func TestExchangedTokenEndsWithItsSubject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), agentsTestLimit)
	defer cancel()
	e := setupAgents(t, agentOpts{})
	robot := harness.NewRobot(username, password, redirectURI)
	user := e.userToken(ctx, t, robot, scopeTools)
	other := e.userToken(ctx, t, robot, scopeTools)
	aTok := e.ownToken(ctx, t, agentA, agentASecret)
	t1 := e.exchange(ctx, t, agentA, agentASecret, user.AccessToken, aTok, nil)
	if t1.Status != http.StatusOK {
		t.Fatalf("exchange of the user's token for agent-a = %v, want 200", t1)
	}
	t2 := e.exchange(ctx, t, agentA, agentASecret, t1.AccessToken, "", nil)
	if t2.Status != http.StatusOK {
		t.Fatalf("agent-a's exchange of its delegated token = %v, want 200", t2)
	}
	e.audit.secret(t1.AccessToken, t2.AccessToken)
	for _, tok := range []string{t1.AccessToken, t2.AccessToken} {
		if resp, body, _ := e.callRaw(ctx, t, tok, toolPlain); resp.StatusCode != http.StatusOK {
			t.Fatalf("exchanged token before the revocation: %d %.200s, want 200", resp.StatusCode, body)
		}
	}

	// The host (a public client: its id in the form) revokes its token.
	status, err := harness.PostForm(ctx, e.client, e.md.RevocationEndpoint,
		url.Values{"client_id": {hostID}, "token": {user.AccessToken}}, nil)
	if status != http.StatusOK {
		t.Fatalf("revoke the user's token: status %d (%v), want 200", status, err)
	}
	for name, tok := range map[string]string{"the revoked token": user.AccessToken,
		"the token exchanged from it": t1.AccessToken, "the token exchanged from that": t2.AccessToken} {
		if resp, body, _ := e.callRaw(ctx, t, tok, toolPlain); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s after the revocation: %d %.200s, want 401", name, resp.StatusCode, body)
		}
		var in struct {
			Active bool `json:"active"`
		}
		if e.introspect(ctx, t, tok, &in); in.Active {
			t.Errorf("%s introspects as active after the revocation", name)
		}
	}
	if a := e.exchange(ctx, t, agentA, agentASecret, t1.AccessToken, "", nil); a.Status != http.StatusBadRequest || a.Error != "invalid_request" {
		t.Errorf("exchange of a token whose subject was revoked = %v, want 400 invalid_request", a)
	}
	if resp, body, _ := e.callRaw(ctx, t, other.AccessToken, toolPlain); resp.StatusCode != http.StatusOK {
		t.Errorf("the user's other token after the revocation: %d %.200s, want 200", resp.StatusCode, body)
	}
}
