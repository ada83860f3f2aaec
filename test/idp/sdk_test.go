package idp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// The demo server's tools as the gateway guards them.
const (
	readTool  = "echo"     // readScope, which both mapped groups grant
	writeTool = "add_note" // writeScope, which only group eng grants
)

// gatewayCaddyfile is an issuer that federates to the provider, and a
// gateway on the same site in front of the demo MCP server (the Go SDK).
const gatewayCaddyfile = `{
	admin off
	persist_config off
	auto_https off
	storage file_system %[5]s
	mcp_auth {
		issuer %[1]s
		storage memory
		group eng {
			scopes %[1]s/mcp %[6]s %[7]s
		}
		group readers {
			scopes %[1]s/mcp %[6]s
		}
		identity_provider %[3]s {
			issuer %[2]s
			client_id %[8]s
			client_secret {env.IDP_TEST_CLIENT_SECRET}
			scopes openid email profile groups
			group engineers eng
			group staff readers
			allowed_email_domains corp.example
			display_name "Corp SSO"
		}
	}
}

http://:%[4]d {
	bind 127.0.0.1
	mcp_issuer
	mcp_gateway {
		resource %[1]s/mcp
		scope %[6]s
		tool %[10]s
		tool %[11]s %[7]s
		tool * demo:other
	}
	reverse_proxy %[9]s
}
`

// toolCalls records the tools/call names the upstream MCP server received.
type toolCalls struct {
	mu    sync.Mutex
	names []string
}

func (c *toolCalls) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var msg struct {
			Method string `json:"method"`
			Params struct {
				Name string `json:"name"`
			} `json:"params"`
		}
		if json.Unmarshal(body, &msg) == nil && msg.Method == "tools/call" {
			c.mu.Lock()
			c.names = append(c.names, msg.Params.Name)
			c.mu.Unlock()
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}

func (c *toolCalls) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.names
	c.names = nil
	return out
}

// federatedReport is the part of test/node/client.mjs's JSON line that
// these tests read.
type federatedReport struct {
	OK             bool   `json:"ok"`
	Error          string `json:"error"`
	Issuer         string `json:"issuer"`
	Registrations  int    `json:"registrations"`
	Authorizations []struct {
		Resource     string `json:"resource"`
		PKCE         string `json:"pkce"`
		ISSMatches   bool   `json:"iss_matches"`
		StateMatches bool   `json:"state_matches"`
		Steps        []struct {
			Path string `json:"path"`
			Form string `json:"form"`
		} `json:"steps"`
	} `json:"authorizations"`
	Tokens []struct {
		Iss   string `json:"iss"`
		Aud   any    `json:"aud"`
		Sub   string `json:"sub"`
		Scope string `json:"scope"`
	} `json:"tokens"`
	Calls []struct {
		Tool         string `json:"tool"`
		OK           bool   `json:"ok"`
		Reauthorized bool   `json:"reauthorized"`
		Error        string `json:"error"`
	} `json:"calls"`
	HTTP []struct {
		Path            string `json:"path"`
		Status          int    `json:"status"`
		Tool            string `json:"tool"`
		WWWAuthenticate string `json:"www_authenticate"`
	} `json:"http"`
}

// TestSDKClientFederated points the official TypeScript SDK's OAuth
// client at the gateway's URL: it discovers the issuer, registers (DCR),
// and its browser (robot.mjs) signs in through "Continue with Corp SSO"
// at oidc-provider and consents at our issuer; it lists tools and calls
// them. The token's sub names the provider's user and its scopes are
// those the user's provider groups map to: an engineer steps up to the
// write tool, a staff member's step-up cannot get its scope and the call
// never reaches the MCP server.
func TestSDKClientFederated(t *testing.T) {
	node, dir := requireNode(t)
	port := harness.FreePort(t)
	iss := fmt.Sprintf("http://127.0.0.1:%d", port)
	resource := iss + "/mcp"
	p := startProvider(t, iss+"/login/"+idpName+"/callback")
	p.setAccounts(t, map[string]account{accountAlice: alice, "bob": staffBob})
	var calls toolCalls
	upstream := httptest.NewServer(calls.wrap(mcpdemo.Handler()))
	t.Cleanup(upstream.Close)
	t.Setenv("IDP_TEST_CLIENT_SECRET", idpSecret)
	harness.Start(t, fmt.Sprintf(gatewayCaddyfile, iss, p.Issuer, idpName, port, t.TempDir(),
		readScope, writeScope, idpClientID, upstream.Listener.Addr().String(), readTool, writeTool))
	harness.WaitReady(t, iss+"/.well-known/oauth-authorization-server")

	tests := []struct {
		login     string
		wantWrite bool // the user's groups grant writeScope
	}{
		{accountAlice, true}, // engineers -> eng
		{"bob", false},       // staff -> readers
	}
	for _, tt := range tests {
		t.Run(tt.login, func(t *testing.T) {
			calls.take()
			r := runFederatedClient(t, node, dir, resource, tt.login)
			if r.Issuer != iss && r.Issuer != iss+"/" {
				t.Errorf("discovered issuer = %q, want %q", r.Issuer, iss)
			}
			if r.Registrations != 1 {
				t.Errorf("DCR registrations = %d, want 1", r.Registrations)
			}
			if len(r.Authorizations) == 0 {
				t.Fatalf("no authorization request (error %q)", r.Error)
			}
			for i, a := range r.Authorizations {
				if a.Resource != resource || a.PKCE != "S256" || !a.ISSMatches || !a.StateMatches {
					t.Errorf("authorization %d: resource %q pkce %q iss ok %v state ok %v; want %q S256 true true",
						i, a.Resource, a.PKCE, a.ISSMatches, a.StateMatches, resource)
				}
				var forms []string
				for _, s := range a.Steps {
					if s.Form != "" {
						forms = append(forms, s.Form)
					}
				}
				// Our login page's button, the provider's login and
				// consent, our consent.
				if want := []string{"idp", "idp-login", "idp-consent", "consent"}; !slices.Equal(forms, want) {
					t.Errorf("authorization %d: forms posted = %v, want %v", i, forms, want)
				}
			}
			if len(r.Tokens) == 0 {
				t.Fatalf("no token (error %q)", r.Error)
			}
			wroteScope := false
			for i, tok := range r.Tokens {
				if tok.Sub != idpName+":"+tt.login || tok.Iss != iss {
					t.Errorf("token %d: sub %q iss %q, want %q %q", i, tok.Sub, tok.Iss, idpName+":"+tt.login, iss)
				}
				if !slices.Equal(harness.Audience(map[string]any{"aud": tok.Aud}), []string{resource}) {
					t.Errorf("token %d aud = %v, want [%s]", i, tok.Aud, resource)
				}
				wroteScope = wroteScope || slices.Contains(strings.Fields(tok.Scope), writeScope)
			}
			if wroteScope != tt.wantWrite {
				t.Errorf("a token with %s: %v, want %v (scopes from the provider's groups)", writeScope, wroteScope, tt.wantWrite)
			}
			if len(r.Calls) != 2 {
				t.Fatalf("tool calls = %d, want 2 (error %q)", len(r.Calls), r.Error)
			}
			if c := r.Calls[0]; c.Tool != readTool || !c.OK {
				t.Errorf("call %s: ok %v, error %q; want ok", c.Tool, c.OK, c.Error)
			}
			if c := r.Calls[1]; c.Tool != writeTool || c.OK != tt.wantWrite {
				t.Errorf("call %s: ok %v, error %q; want ok %v", c.Tool, c.OK, c.Error, tt.wantWrite)
			}
			refused := 0
			for _, h := range r.HTTP {
				if h.Status == http.StatusForbidden && h.Tool == writeTool && strings.Contains(h.WWWAuthenticate, `error="insufficient_scope"`) {
					refused++
				}
			}
			if refused == 0 {
				t.Errorf("no 403 insufficient_scope for %s before step-up", writeTool)
			}
			want := []string{readTool}
			if tt.wantWrite {
				want = append(want, writeTool)
			}
			if got := calls.take(); !slices.Equal(got, want) {
				t.Errorf("tools/call at the MCP server = %v, want %v", got, want)
			}
		})
	}
}

// runFederatedClient runs client.mjs against the gateway's resource,
// signing in as login through the provider, and returns its report.
func runFederatedClient(t *testing.T, node, dir, resource, login string) federatedReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs", "--url", resource, "--idp", idpName,
		"--tool", readTool, "--tool-args", `{"text":"hello"}`,
		"--step-up-tool", writeTool, "--step-up-args", `{"text":"note"}`)
	cmd.Dir = dir
	// The provider's development login takes any password.
	cmd.Env = append(os.Environ(), "MCP_USERNAME="+login, "MCP_PASSWORD=any")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("client.mjs (exit %v): %s", err, stdout.String())
	if stderr.Len() > 0 {
		t.Logf("client.mjs stderr:\n%s", stderr.String())
	}
	var r federatedReport
	if jerr := json.Unmarshal(stdout.Bytes(), &r); jerr != nil {
		t.Fatalf("client.mjs output is not one JSON report (exit %v): %v", err, jerr)
	}
	return r
}
