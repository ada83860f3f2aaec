package browser

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	agentID     = "planner"
	agentName   = "Planner Agent"
	agentSecret = "planner-secret-9d8c7b6a5f4e3d2c1b0a99887766554433"
)

// agentEnv is Caddy with the issuer (one user, the public client, one
// agent declared in the Caddyfile) and a gateway in front of the demo MCP
// server that lets only that agent add notes.
type agentEnv struct {
	issuer, resource string
	md               *harness.Metadata
	callback         *callback
}

func setupAgent(t *testing.T) *agentEnv {
	t.Helper()
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(
		func(*http.Request) *mcp.Server { return mcpdemo.NewServer() }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(up.Close)
	dir := t.TempDir()
	hash := harness.HashPassword(t, password)
	sum := sha256.Sum256([]byte(agentSecret))
	e := &agentEnv{callback: newCallback(t)}
	harness.StartFree(t, func(port int) string {
		e.issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		e.resource = e.issuer + "/mcp"
		return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	log {
		level WARN
	}
	mcp_auth {
		issuer %[2]s
		storage bolt %[1]s/mcp-auth.db
		user %[3]s %[4]s {
			groups writers
		}
		group writers {
			scopes * %[5]s %[6]s
		}
		client %[7]s {
			name "%[8]s"
			public
			redirect_uri %[9]s
		}
		agent %[10]s {
			name "%[11]s"
			secret sha256:%[12]s
			allowed_clients %[7]s
		}
	}
}

%[2]s {
	mcp_issuer
	@mcp path /mcp /.well-known/oauth-protected-resource/mcp
	handle @mcp {
		mcp_gateway {
			resource %[2]s/mcp
			scope %[5]s
			tool echo %[5]s
			tool add_note %[6]s {
				agents %[10]s
			}
		}
		reverse_proxy %[13]s
	}
}
`, dir, e.issuer, username, hash, scopeRead, scopeWrite, clientID, clientName, e.callback.uri(),
			agentID, agentName, hex.EncodeToString(sum[:]), up.Listener.Addr().String())
	})
	harness.WaitReady(t, e.issuer+"/.well-known/oauth-authorization-server")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := harness.Discover(ctx, e.issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", e.issuer, err)
	}
	e.md = md
	return e
}

// agentToken is the agent's own token (client credentials with its secret).
func (e *agentEnv) agentToken(ctx context.Context, t *testing.T) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {e.resource}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.md.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(agentID, agentSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || resp.StatusCode != http.StatusOK || tr.AccessToken == "" {
		t.Fatalf("client_credentials for %s: status %d, error %q, %v; want a token", agentID, resp.StatusCode, tr.Error, err)
	}
	return tr.AccessToken
}

// callTool posts one 2026-07-28 tools/call through the gateway and returns
// the status and body.
func (e *agentEnv) callTool(ctx context.Context, t *testing.T, token, tool string) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%q,"arguments":{"text":"hi"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"browser-test","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`, tool)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.resource, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", tool)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("read %s answer: %v", tool, err)
	}
	return resp.StatusCode, string(b)
}

// TestAgentConsentAndRevoke drives the requested_actor flow in Chromium:
// the consent page names the client and the agent, the approved code is
// redeemed with the agent's own token into a delegated token the gateway
// accepts, the connected apps page shows the delegation, and the user's
// click on revoke makes the gateway refuse the delegated token.
func TestAgentConsentAndRevoke(t *testing.T) {
	e := setupAgent(t)
	ctx := newBrowser(t)
	tctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	own := e.agentToken(tctx, t)

	cfg := e.md.Config(clientID, e.callback.uri(), scopeRead, scopeWrite)
	verifier := oauth2.GenerateVerifier()
	state := oauth2.GenerateVerifier()[:22]
	authURL := cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier),
		oauth2.SetAuthURLParam("resource", e.resource), oauth2.SetAuthURLParam("requested_actor", agentID))

	requireConsent(t, ctx, login(t, ctx, authURL, password))
	text := bodyText(t, ctx)
	for _, want := range []string{clientName, agentName, agentID, scopeRead, scopeWrite, e.resource} {
		if !strings.Contains(text, want) {
			t.Errorf("consent page for requested_actor lacks %q; text: %s", want, text)
		}
	}
	screenshot(t, ctx, "consent")

	consentDecision(t, ctx, "approve")
	q := e.callback.wait(t)
	settledAt(t, ctx, e.callback.srv.URL) // the apps page is opened next
	if q.Get("state") != state || q.Get("code") == "" {
		t.Fatalf("callback state %q, code present %v; want state %q and a code", q.Get("state"), q.Has("code"), state)
	}
	tok, err := cfg.Exchange(tctx, q.Get("code"), oauth2.VerifierOption(verifier),
		oauth2.SetAuthURLParam("resource", e.resource), oauth2.SetAuthURLParam("actor_token", own))
	if err != nil {
		t.Fatalf("Exchange with the agent's token: %v", err)
	}
	claims, err := harness.Claims(tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	act, _ := claims["act"].(map[string]any)
	if claims["sub"] != username || claims["client_id"] != clientID || act == nil || act["sub"] != agentID {
		t.Errorf("delegated token sub=%v client_id=%v act=%v, want sub=%s client_id=%s act.sub=%s",
			claims["sub"], claims["client_id"], claims["act"], username, clientID, agentID)
	}
	for _, tool := range []string{"echo", "add_note"} {
		if status, body := e.callTool(tctx, t, tok.AccessToken, tool); status != http.StatusOK {
			t.Fatalf("call %s with the delegated token: status %d, want 200; body %s", tool, status, body)
		}
	}

	do(t, ctx, "open apps page",
		chromedp.Navigate(e.issuer+"/apps"),
		chromedp.WaitVisible(chromedp.CSS(`body`)),
	)
	text = bodyText(t, ctx)
	for _, want := range []string{clientName, agentName, agentID, scopeWrite} {
		if !strings.Contains(text, want) {
			t.Errorf("apps page lacks %q; text: %s", want, text)
		}
	}
	screenshot(t, ctx, "apps")

	revoke := fmt.Sprintf(`form:has(input[name=client_id][value=%q]):has(input[name=actor][value=%q]) button[name=action][value=revoke]`, clientID, agentID)
	if n := run(t, ctx, "find the delegation's revoke button", chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", revoke))); n != 1 {
		t.Fatalf("apps page has %d revoke buttons for %s acting through %s, want 1", n, clientID, agentID)
	}
	restingClick(t, ctx, revoke)
	waitFor(t, func() bool {
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", revoke)))
		return err == nil && n == 0
	})
	if text := bodyText(t, ctx); strings.Contains(text, agentName) {
		t.Errorf("apps page still names %q after revoking: %s", agentName, text)
	}
	screenshot(t, ctx, "apps-revoked")

	status, body := e.callTool(tctx, t, tok.AccessToken, "echo")
	if status != http.StatusUnauthorized {
		t.Errorf("delegated token after the user revoked it: status %d, want 401; body %s", status, body)
	}
	// The agent's own token is not the user's to revoke.
	if status, body := e.callTool(tctx, t, own, "echo"); status != http.StatusOK {
		t.Errorf("the agent's own token after the user revoked the delegation: status %d, want 200; body %s", status, body)
	}
}
