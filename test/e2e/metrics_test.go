package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestMetrics: after real requests (tokens issued, a failed client
// authentication and login, allowed and refused tool calls), Caddy's admin
// /metrics shows the gateway's and the issuer's series with exactly those
// counts; and the issuer's health endpoint answers ok.
func TestMetrics(t *testing.T) {
	e := setupAgents(t, agentOpts{admin: true})
	ctx := ctxTimeout(t, agentsTestLimit)

	token := e.ownToken(ctx, t, agentB, agentBSecret) // tokens_issued client_credentials 1
	e.ownToken(ctx, t, svcID, svcSecret)              // 2
	if a := e.clientCredentials(ctx, t, svcID, "wrong-secret"); a.Status != http.StatusUnauthorized {
		t.Fatalf("wrong client secret = %v, want 401", a)
	}
	robot := harness.NewRobot(username, "not the password", redirectURI)
	if _, err := robot.Authorize(ctx, e.authRequest(e.hostConfig(hostID, scopeTools), "").URL); !errors.Is(err, harness.ErrLoginRefused) {
		t.Fatalf("login with a wrong password: %v, want refused", err)
	}

	for _, c := range []struct {
		tool   string
		status int
	}{
		{toolPlain, http.StatusOK},
		{toolPlain, http.StatusOK},
		{toolAgent, http.StatusOK},
		{toolUser, http.StatusForbidden},       // require_user: an actor rule
		{toolAgentA, http.StatusForbidden},     // agents agent-a: an actor rule
		{"no_such_tool", http.StatusForbidden}, // no rule
	} {
		resp, body, _ := e.callRaw(ctx, t, token, c.tool)
		if resp.StatusCode != c.status {
			t.Fatalf("call %s = %d %s, want %d", c.tool, resp.StatusCode, body, c.status)
		}
	}
	if resp, _, _ := e.callRaw(ctx, t, "", toolPlain); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("call without a token = %d, want 401", resp.StatusCode)
	}

	res := `resource="` + e.resource + `"`
	want := []string{
		`caddy_mcp_gateway_decisions_total{decision="allow",method="tools/call",` + res + `,rule="echo"} 2`,
		`caddy_mcp_gateway_decisions_total{decision="allow",method="tools/call",` + res + `,rule="agent_report"} 1`,
		`caddy_mcp_gateway_decisions_total{decision="deny",method="tools/call",` + res + `,rule="add"} 1`,
		`caddy_mcp_gateway_decisions_total{decision="deny",method="tools/call",` + res + `,rule="add_note"} 1`,
		`caddy_mcp_gateway_decisions_total{decision="deny",method="tools/call",` + res + `,rule=""} 1`,
		`caddy_mcp_gateway_refusals_total{reason="forbidden",` + res + `} 3`,
		`caddy_mcp_gateway_refusals_total{reason="unauthorized",` + res + `} 1`,
		`caddy_mcp_gateway_token_cache_total{` + res + `,result="hit"} 5`,
		`caddy_mcp_gateway_token_cache_total{` + res + `,result="miss"} 1`,
		`caddy_mcp_gateway_upstream_duration_seconds_count{` + res + `} 3`,
		`caddy_mcp_issuer_tokens_issued_total{grant_type="client_credentials"} 2`,
		`caddy_mcp_issuer_client_auth_failures_total{reason="invalid_secret"} 1`,
		`caddy_mcp_issuer_login_failures_total{reason="wrong_password"} 1`,
	}
	got := scrape(ctx, t, e.admin+"/metrics")
	for _, w := range want {
		if !strings.Contains(got, "\n"+w+"\n") {
			t.Errorf("/metrics lacks %s", w)
		}
	}
	if t.Failed() {
		var ours []string
		for _, l := range strings.Split(got, "\n") {
			if strings.HasPrefix(l, "caddy_mcp_") {
				ours = append(ours, l)
			}
		}
		t.Logf("caddy_mcp_ series:\n%s", strings.Join(ours, "\n"))
	}
	for _, secret := range []string{token, svcSecret, agentBSecret, "no_such_tool"} {
		if strings.Contains(got, secret) {
			t.Errorf("/metrics contains %q", secret)
		}
	}

	if body := scrape(ctx, t, e.issuer+"/healthz"); strings.TrimSpace(body) != `{"status":"ok"}` {
		t.Errorf("GET /healthz = %s, want {\"status\":\"ok\"}", body)
	}
}

// scrape GETs u and returns its body; the answer must be 200.
func scrape(ctx context.Context, t *testing.T, u string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d, %v; want 200", u, resp.StatusCode, err)
	}
	return string(b)
}
