// Package e2e runs the issuer and the gateway in one in-process Caddy in
// front of a real MCP server, and talks to it with the official Go MCP SDK
// client, golang.org/x/oauth2 and an HTTP robot for the login pages.
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	clientID    = "e2e-client"
	clientName  = "E2E Client"
	redirectURI = "http://127.0.0.1/callback"
	username    = "alice"
	password    = "e2e password, never logged"

	scopeRead  = "notes:read"
	scopeWrite = "notes:write"
	scopeAdmin = "notes:admin" // required by delete_notes; no user holds it
)

// env is Caddy with the issuer and a gateway in front of the demo MCP
// server (test/demo/mcpdemo: echo and add read, add_note writes,
// delete_notes administers).
type env struct {
	t        *testing.T
	port     int
	dir      string
	hash     string
	upstream string // host:port of the MCP server
	issuer   string
	resource string
	md       *harness.Metadata
}

func setup(t *testing.T) *env {
	t.Helper()
	up := httptest.NewServer(mcpdemo.Handler())
	t.Cleanup(up.Close)
	e := &env{
		t:        t,
		port:     harness.FreePort(t),
		dir:      t.TempDir(),
		hash:     harness.HashPassword(t, password),
		upstream: strings.TrimPrefix(up.URL, "http://"),
	}
	e.issuer = fmt.Sprintf("http://127.0.0.1:%d", e.port)
	e.resource = e.issuer + "/mcp"
	harness.Start(t, e.caddyfile(0))
	harness.WaitReady(t, e.issuer+"/.well-known/oauth-authorization-server")
	md, err := harness.Discover(context.Background(), e.issuer)
	if err != nil {
		t.Fatalf("Discover(%s): %v", e.issuer, err)
	}
	e.md = md
	return e
}

// caddyfile renders the configuration; variant changes details (a user's
// display name, an extra tool rule) so a reload has something to do.
func (e *env) caddyfile(variant int) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	mcp_auth {
		issuer %[2]s
		storage bolt %[1]s/mcp-auth.db
		user %[3]s %[4]s {
			groups writers
			name "Alice v%[11]d"
		}
		group writers {
			scopes * %[7]s %[8]s
		}
		client %[5]s {
			name "%[6]s"
			public
			redirect_uri %[9]s
		}
	}
}

%[2]s {
	mcp_issuer
	@mcp path /mcp /mcp/* /.well-known/oauth-protected-resource /.well-known/oauth-protected-resource/*
	mcp_gateway @mcp {
		resource %[2]s/mcp
		scope %[7]s
		tool echo %[7]s
		tool add %[7]s
		tool add_note %[8]s
		tool delete_notes %[10]s
		tool search_v%[11]d %[7]s
		prompt * %[7]s
		resource_rule notes:// %[7]s
	}
	reverse_proxy /mcp* %[12]s
}
`, e.dir, e.issuer, username, e.hash, clientID, clientName, scopeRead, scopeWrite, redirectURI, scopeAdmin, variant, e.upstream)
}

// oauthConfig is the pre-registered public client's configuration.
func (e *env) oauthConfig(scopes ...string) *oauth2.Config {
	return e.md.Config(clientID, redirectURI, scopes...)
}

// authorize runs the code flow with robot (login and consent over HTTP)
// and redeems the code.
func (e *env) authorize(ctx context.Context, robot *harness.Robot, cfg *oauth2.Config) (*oauth2.Token, error) {
	ar := harness.NewAuthRequest(cfg, e.resource)
	q, err := robot.Authorize(ctx, ar.URL)
	if err != nil {
		return nil, fmt.Errorf("authorize: %w", err)
	}
	if q.Get("state") != ar.State || q.Get("iss") != e.issuer || q.Get("code") == "" {
		return nil, fmt.Errorf("authorization response %q: want code, state %q, iss %q", q.Encode(), ar.State, e.issuer)
	}
	tok, err := ar.Exchange(ctx, cfg, q.Get("code"), e.resource)
	if err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	return tok, nil
}

// connect opens an MCP client session through the gateway with tokens
// from src.
func (e *env) connect(ctx context.Context, src oauth2.TokenSource, version string, base http.RoundTripper) (*mcp.ClientSession, error) {
	if base == nil {
		base = http.DefaultTransport
	}
	hc := &http.Client{Transport: &oauth2.Transport{Source: src, Base: base}}
	c := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1.0.0"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: e.resource, HTTPClient: hc},
		&mcp.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		return nil, fmt.Errorf("connect (%s): %w", version, err)
	}
	return cs, nil
}

// rawToolCall posts one tools/call in the stateless 2026-07-28 form, with
// the headers that must match the body, and returns the response with its
// body read.
func (e *env) rawToolCall(ctx context.Context, token, tool string) (*http.Response, string, error) {
	return e.rawToolCallWith(ctx, http.DefaultClient, token, tool)
}

func (e *env) rawToolCallWith(ctx context.Context, client *http.Client, token, tool string) (*http.Response, string, error) {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":%q,"arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`, tool)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.resource, strings.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "tools/call")
	req.Header.Set("Mcp-Name", tool)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(b), err
}

// challenge parses a Bearer WWW-Authenticate header into its parameters.
func challenge(h string) (map[string]string, bool) {
	rest, ok := strings.CutPrefix(h, "Bearer")
	if !ok {
		return nil, false
	}
	params := map[string]string{}
	rest = strings.TrimSpace(rest)
	for rest != "" {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			return nil, false
		}
		k = strings.TrimSpace(k)
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				return nil, false
			}
			params[k] = v[1 : end+1]
			rest = v[end+2:]
		} else {
			val, after, _ := strings.Cut(v, ",")
			params[k] = strings.TrimSpace(val)
			rest = "," + after
		}
		rest = strings.TrimPrefix(strings.TrimSpace(rest), ",")
		rest = strings.TrimSpace(rest)
	}
	return params, true
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// resourceMetadataURL is where RFC 9728 puts this resource's metadata.
func (e *env) resourceMetadataURL() string {
	u, _ := url.Parse(e.resource)
	return e.issuer + "/.well-known/oauth-protected-resource" + u.Path
}
