package e2e

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestDiscovery checks what a stock client reads before it has a token:
// the 401 challenge and the protected resource metadata it points to.
func TestDiscovery(t *testing.T) {
	e := setup(t)
	for _, resource := range []string{e.legacy, e.modern} {
		t.Run(resource, func(t *testing.T) {
			ctx := ctxTimeout(t, 20*time.Second)
			resp, _, err := rawToolCall(ctx, http.DefaultClient, resource, "", "echo")
			if err != nil {
				t.Fatalf("call without token: %v", err)
			}
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("call without token: status %d, want 401", resp.StatusCode)
			}
			ch, ok := challenge(resp.Header.Get("WWW-Authenticate"))
			if !ok {
				t.Fatalf("WWW-Authenticate = %q, want a Bearer challenge", resp.Header.Get("WWW-Authenticate"))
			}
			if got := ch["resource_metadata"]; got != metadataURL(resource) {
				t.Errorf("challenge resource_metadata = %q, want %q", got, metadataURL(resource))
			}
			if _, has := ch["error"]; has {
				t.Errorf("challenge without a token has error=%q, want none (RFC 6750 section 3.1)", ch["error"])
			}
			if ch["scope"] == "" || strings.Contains(ch["scope"], "offline_access") {
				t.Errorf("challenge scope = %q, want the operation's scopes without offline_access", ch["scope"])
			}

			req, err := http.NewRequestWithContext(ctx, http.MethodGet, metadataURL(resource), nil)
			if err != nil {
				t.Fatal(err)
			}
			mresp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", metadataURL(resource), err)
			}
			defer mresp.Body.Close()
			var prm struct {
				Resource             string   `json:"resource"`
				AuthorizationServers []string `json:"authorization_servers"`
				ScopesSupported      []string `json:"scopes_supported"`
				BearerMethods        []string `json:"bearer_methods_supported"`
			}
			if err := json.NewDecoder(mresp.Body).Decode(&prm); err != nil {
				t.Fatalf("protected resource metadata: status %d: %v", mresp.StatusCode, err)
			}
			if prm.Resource != resource {
				t.Errorf("metadata resource = %q, want %q", prm.Resource, resource)
			}
			if !slices.Equal(prm.AuthorizationServers, []string{e.issuer}) {
				t.Errorf("metadata authorization_servers = %q, want [%q]", prm.AuthorizationServers, e.issuer)
			}
			if !slices.Equal(prm.BearerMethods, []string{"header"}) {
				t.Errorf("metadata bearer_methods_supported = %q, want [header]", prm.BearerMethods)
			}
			if slices.Contains(prm.ScopesSupported, "offline_access") {
				t.Errorf("metadata scopes_supported = %q, must not list offline_access", prm.ScopesSupported)
			}
		})
	}
}

// TestScopesAndStepUp connects the Go SDK client with a notes:read token:
// tools/list is filtered to what it may call, a permitted call works, a
// write is refused with an insufficient_scope challenge, and after the
// client re-authorizes with the challenged scope the write works in the
// same session. Once with a session (2025-11-25, stateful server) and
// once stateless (2026-07-28).
func TestScopesAndStepUp(t *testing.T) {
	e := setup(t)
	for _, tc := range []struct {
		version, resource string
	}{
		{"2025-11-25", e.legacy},
		{"2026-07-28", e.modern},
	} {
		t.Run(tc.version, func(t *testing.T) {
			ctx := ctxTimeout(t, 60*time.Second)
			robot := harness.NewRobot(username, password, redirectURI)
			tok, err := e.authorize(ctx, robot, e.oauthConfig(scopeRead), tc.resource)
			if err != nil {
				t.Fatal(err)
			}
			src := harness.NewSwapSource(tok)
			cs, err := connect(ctx, tc.resource, src, tc.version, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if got := cs.InitializeResult().ProtocolVersion; got != tc.version {
				t.Errorf("negotiated protocol version = %q, want %q", got, tc.version)
			}

			lt, err := cs.ListTools(ctx, nil)
			if err != nil {
				t.Fatalf("ListTools: %v", err)
			}
			var names []string
			for _, tl := range lt.Tools {
				names = append(names, tl.Name)
			}
			slices.Sort(names)
			if want := []string{"add", "echo"}; !slices.Equal(names, want) {
				t.Errorf("ListTools with %s = %q, want %q", scopeRead, names, want)
			}

			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
			if err != nil || res.IsError {
				t.Fatalf("CallTool(echo) = %+v, %v; want success", res, err)
			}

			if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "add_note", Arguments: map[string]any{"text": "x"}}); err == nil && !res.IsError {
				t.Fatalf("CallTool(add_note) with %s succeeded, want refusal", scopeRead)
			}

			// The same call as raw HTTP, to read the challenge.
			resp, body, err := rawToolCall(ctx, http.DefaultClient, tc.resource, tok.AccessToken, "add_note")
			if err != nil {
				t.Fatalf("raw add_note: %v", err)
			}
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("raw add_note: status %d, want 403; body %s", resp.StatusCode, body)
			}
			ch, ok := challenge(resp.Header.Get("WWW-Authenticate"))
			if !ok {
				t.Fatalf("WWW-Authenticate = %q, want a Bearer challenge", resp.Header.Get("WWW-Authenticate"))
			}
			if ch["error"] != "insufficient_scope" {
				t.Errorf("challenge error = %q, want insufficient_scope", ch["error"])
			}
			if got := ch["resource_metadata"]; got != metadataURL(tc.resource) {
				t.Errorf("challenge resource_metadata = %q, want %q", got, metadataURL(tc.resource))
			}
			challenged := strings.Fields(ch["scope"])
			if !slices.Contains(challenged, scopeWrite) || slices.Contains(challenged, "offline_access") {
				t.Fatalf("challenge scope = %q, want it to include %s (and not offline_access)", ch["scope"], scopeWrite)
			}

			// Step up: what a stock client does with the challenge.
			tok2, err := e.authorize(ctx, robot, e.oauthConfig(challenged...), tc.resource)
			if err != nil {
				t.Fatalf("re-authorize with %q: %v", challenged, err)
			}
			src.Set(tok2)
			res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "add_note", Arguments: map[string]any{"text": "x"}})
			if err != nil || res.IsError {
				t.Fatalf("CallTool(add_note) after step-up = %+v, %v; want success", res, err)
			}

			if _, withToken := e.seen.counts(); withToken != 0 {
				t.Errorf("%d requests reached the upstream with an Authorization header, want 0", withToken)
			}

			// notes:admin is not grantable to this user: still refused.
			resp, body, err = rawToolCall(ctx, http.DefaultClient, tc.resource, tok2.AccessToken, "delete_notes")
			if err != nil {
				t.Fatalf("raw delete_notes: %v", err)
			}
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("raw delete_notes: status %d, want 403; body %s", resp.StatusCode, body)
			}
		})
	}
}
