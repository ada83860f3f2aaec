package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestUpstreamSessionsEndWhenIdle: the gateway keeps nothing per session
// (a session id is bound to its principal by a MAC), so it does not bound
// how many sessions one token opens at the upstream: every initialize
// its scopes allow is forwarded and starts a session of its own, which
// the upstream keeps until it ends (README, Limits: upstream sessions).
// The upstream's idle timeout bounds them (the Go SDK's
// StreamableHTTPOptions.SessionTimeout): through the gateway a session
// idle past it is gone, 404 as MCP answers for an ended session, while
// one in use stays.
func TestUpstreamSessionsEndWhenIdle(t *testing.T) {
	const idle = 2 * time.Second
	srv := mcpdemo.NewServer()
	e := setupWith(t, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{SessionTimeout: idle}))
	ctx := ctxTimeout(t, 60*time.Second)
	tok, err := e.authorize(ctx, harness.NewRobot(username, password, redirectURI), e.oauthConfig(scopeRead), e.legacy)
	if err != nil {
		t.Fatal(err)
	}
	post := func(session, body string) (int, string) {
		t.Helper()
		resp, _, err := harness.SessionPost(ctx, http.DefaultClient, e.legacy, tok.AccessToken, session, body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header.Get("Mcp-Session-Id")
	}
	const (
		initialize  = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`
		initialized = `{"jsonrpc":"2.0","method":"notifications/initialized"}`
		ping        = `{"jsonrpc":"2.0","id":2,"method":"ping"}`
	)
	sessions := map[string]bool{}
	for range 20 {
		status, id := post("", initialize)
		if status != http.StatusOK || id == "" {
			t.Fatalf("initialize = %d, session %q; want 200 with a session", status, id)
		}
		sessions[id] = true
	}
	if len(sessions) != 20 {
		t.Errorf("20 initializes with one token started %d sessions, want 20 (the gateway does not bound them)", len(sessions))
	}
	var used, left string
	for id := range sessions {
		if used == "" {
			used = id
		} else {
			left = id
			break
		}
	}
	for _, id := range []string{used, left} {
		if status, _ := post(id, initialized); status != http.StatusAccepted {
			t.Fatalf("notifications/initialized = %d, want 202", status)
		}
	}
	for range 8 { // in use for twice the idle timeout
		time.Sleep(idle / 4)
		if status, _ := post(used, ping); status != http.StatusOK {
			t.Fatalf("ping in a session in use = %d, want 200", status)
		}
	}
	if status, _ := post(left, ping); status != http.StatusNotFound {
		t.Errorf("ping in a session idle for %v past a %v SessionTimeout = %d, want 404", 2*idle, idle, status)
	}
}
