package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestTryIt is the README's Try it, on Caddyfile.example as shipped (its
// address rewritten to a free loopback port) in front of the demo MCP
// server: the Go SDK's client, given the MCP URL and the demo's
// pre-registered client demo-script, signs in as alice, asks first for
// the base scope the 401 names, and lists echo and add only; add_note
// gets it a step-up, after which add_note is listed; delete_notes is
// refused and never listed, as no group of alice's grants notes:admin.
// Registering itself instead, the SDK registers again at the step-up,
// and the session, bound to the client that opened it, is not the new
// client's: 404, as the README says.
func TestTryIt(t *testing.T) {
	example, err := os.ReadFile("../../Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	l := startLayout(t, string(example))
	if len(l.gateways) != 1 {
		t.Fatalf("Caddyfile.example has %d gateways, want 1", len(l.gateways))
	}
	endpoint := l.gateways[0].resource

	t.Run("pre-registered client", func(t *testing.T) {
		c := connectTryIt(t, endpoint, &oauthex.ClientCredentials{ClientID: "demo-script"})
		if got := c.clients(); len(got) != 1 || got[0] != "demo-script" {
			t.Errorf("authorizations by %q, want one by demo-script", got)
		}
		if got, want := c.list(t), []string{"add", "echo"}; !slices.Equal(got, want) {
			t.Errorf("tools/list with the first token = %q, want %q", got, want)
		}
		if res, err := c.call("echo", map[string]any{"text": "hi"}); err != nil || res.IsError {
			t.Errorf("tools/call echo = %+v, %v; want its answer", res, err)
		}
		if res, err := c.call("add_note", map[string]any{"text": "note"}); err != nil || res.IsError {
			t.Fatalf("tools/call add_note = %+v, %v; want it answered after a step-up (authorizations %q, refused %q)", res, err, c.scopes(), c.refusals())
		}
		if scope := c.scopes(); len(scope) != 2 || !strings.Contains(scope[1], "notes:write") {
			t.Errorf("authorizations = %q, want a second one, a step-up to notes:write", scope)
		}
		if got, want := c.list(t), []string{"add", "add_note", "echo"}; !slices.Equal(got, want) {
			t.Errorf("tools/list after the step-up = %q, want %q", got, want)
		}
		before := len(c.refusals())
		if res, err := c.call("delete_notes", map[string]any{}); err == nil && !res.IsError {
			t.Errorf("tools/call delete_notes = %+v, want it refused", res)
		}
		if wire := c.refusals()[before:]; !slices.ContainsFunc(wire, func(w string) bool {
			return strings.HasPrefix(w, "403 ") && strings.Contains(w, `error="insufficient_scope"`) && strings.Contains(w, "notes:admin")
		}) {
			t.Errorf("refusals of delete_notes = %q, want 403 insufficient_scope naming notes:admin", wire)
		}
		if got := c.list(t); slices.Contains(got, "delete_notes") {
			t.Errorf("tools/list after asking for delete_notes = %q, want it without delete_notes", got)
		}
	})

	t.Run("self-registered client", func(t *testing.T) {
		c := connectTryIt(t, endpoint, nil)
		if got, want := c.list(t), []string{"add", "echo"}; !slices.Equal(got, want) {
			t.Errorf("tools/list with the first token = %q, want %q", got, want)
		}
		c.call("add_note", map[string]any{"text": "note"})
		ids := c.clients()
		if len(ids) != 2 || ids[0] == ids[1] {
			t.Fatalf("authorizations by %q, want two by different clients (the SDK registers again at a step-up; if it no longer does, update the README's Try it)", ids)
		}
		if wire := c.refusals(); !slices.ContainsFunc(wire, func(w string) bool { return strings.HasPrefix(w, "404 ") }) {
			t.Errorf("refusals = %q, want the session answered 404 to the new client", wire)
		}
	})
}

// tryItClient is the Go SDK's client connected through the gateway, with
// what its OAuth handler asked for and what the gateway refused it.
type tryItClient struct {
	cs      *mcp.ClientSession
	mu      sync.Mutex
	auths   []url.Values // the query of each authorization request
	refused []string     // each MCP request the gateway refused
}

// connectTryIt connects the Go SDK's client to endpoint, as alice, with
// the pre-registered client or, nil, registering itself.
func connectTryIt(t *testing.T, endpoint string, prereg *oauthex.ClientCredentials) *tryItClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	redirect := fmt.Sprintf("http://127.0.0.1:%d/callback", harness.FreePort(t))
	robot := harness.NewRobot("alice", docPassword, redirect)
	c := &tryItClient{}
	cfg := &auth.AuthorizationCodeHandlerConfig{
		PreregisteredClient: prereg,
		RedirectURL:         redirect,
		AuthorizationCodeFetcher: robot.CodeFetcher(func(u *url.URL) {
			c.mu.Lock()
			c.auths = append(c.auths, u.Query())
			c.mu.Unlock()
		}),
	}
	if prereg == nil {
		cfg.DynamicClientRegistrationConfig = &auth.DynamicClientRegistrationConfig{Metadata: &oauthex.ClientRegistrationMetadata{
			ClientName:              "Try it",
			RedirectURIs:            []string{redirect},
			TokenEndpointAuthMethod: "none",
		}}
	}
	h, err := auth.NewAuthorizationCodeHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	recorder := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && r.URL.String() == endpoint && resp.StatusCode >= 400 {
			c.mu.Lock()
			c.refused = append(c.refused, fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate")))
			c.mu.Unlock()
		}
		return resp, err
	})}
	client := mcp.NewClient(&mcp.Implementation{Name: "try-it", Version: "1.0.0"}, nil)
	c.cs, err = client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, OAuthHandler: h, HTTPClient: recorder}, nil)
	if err != nil {
		t.Fatalf("connect to %s: %v (refused: %q)", endpoint, err, c.refusals())
	}
	t.Cleanup(func() { c.cs.Close() })
	if scope := c.scopes(); !slices.Equal(scope, []string{"notes:read"}) {
		t.Errorf("authorizations to connect asked for %q, want the base scope the 401 names, %q", scope, "notes:read")
	}
	return c
}

func (c *tryItClient) param(name string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var v []string
	for _, q := range c.auths {
		v = append(v, q.Get(name))
	}
	return v
}

func (c *tryItClient) scopes() []string  { return c.param("scope") }
func (c *tryItClient) clients() []string { return c.param("client_id") }

func (c *tryItClient) refusals() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.refused)
}

func (c *tryItClient) list(t *testing.T) []string {
	t.Helper()
	var names []string
	for tool, err := range c.cs.Tools(t.Context(), nil) {
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

func (c *tryItClient) call(tool string, args map[string]any) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return c.cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
}
