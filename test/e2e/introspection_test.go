package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// A gateway in front of a remote issuer (another caddy-mcp-auth; here
// the issuer package behind a test server) reads opaque tokens through
// the issuer's introspection, as a resource server the operator marked
// introspect. A refresh token is opaque too.
var remoteIntrospectionCaddyfile = template.Must(template.New("Caddyfile").Parse(`{
	admin off
	persist_config off
	storage file_system {{.Dir}}/caddy
}

http://127.0.0.1:{{.Port}} {
	mcp_gateway {
		resource http://127.0.0.1:{{.Port}}/mcp
		issuer {{.Issuer}} {
			agent_claims
			introspection {
				client_id gateway
				client_secret {env.E2E_GATEWAY_SECRET}
			}
		}
		scope {{.Read}}
		tool * {{.Read}}
	}
	reverse_proxy {{.Upstream}}
}
`))

// TestRefreshTokenNotAnAccessToken: a refresh token sent as a bearer
// token to a gateway that introspects opaque tokens is refused and
// reaches no upstream: the issuer shows a refresh token as active to its
// client only, and the gateway refuses an answer that says refresh
// token. Before, a resource server's introspection called it active with
// the grant's scope and audience, and the gateway let it in: a
// DPoP-bound public client's refresh token without a proof, a
// confidential client's without its secret, for the family's lifetime
// (review s13-remote F1). The access token of the same grant passes,
// which shows the wiring works.
func TestRefreshTokenNotAnAccessToken(t *testing.T) {
	const gatewaySecret = "gateway-introspection-secret"
	t.Setenv("E2E_GATEWAY_SECRET", gatewaySecret)
	seen := &upstreamLog{}
	s := mcpdemo.NewServer()
	up := httptest.NewServer(seen.wrap(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{Stateless: true})))
	t.Cleanup(up.Close)
	total := func() int {
		byMethod, _ := seen.counts()
		n := 0
		for _, c := range byMethod {
			n += c
		}
		return n
	}
	dir, hash := t.TempDir(), harness.HashPassword(t, password)

	// The issuer, made once the gateway's port (its resource) is known.
	var current atomic.Pointer[issuer.Issuer]
	as := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.Load().ServeHTTP(w, r) }))
	t.Cleanup(as.Close)
	issuerURL := as.URL
	var resource string
	harness.StartFree(t, func(port int) string {
		resource = fmt.Sprintf("http://127.0.0.1:%d/mcp", port)
		iss, err := issuer.New(issuer.Config{
			Issuer:    issuerURL,
			Users:     []issuer.User{{Username: username, PasswordHash: hash, Groups: []string{"readers"}}},
			Groups:    []issuer.Group{{Name: "readers", Scopes: map[string][]string{"*": {scopeRead, "offline_access"}}}},
			Resources: []issuer.Resource{{URL: resource, Scopes: []string{scopeRead, "offline_access"}}},
			Clients: []issuer.Client{
				{ID: clientID, RedirectURIs: []string{redirectURI}, TokenEndpointAuthMethod: "none"},
				{ID: "gateway", SecretHash: harness.HashPassword(t, gatewaySecret), Introspect: true},
			},
		}, memory.New(memory.Options{}))
		if err != nil {
			t.Fatalf("issuer.New: %v", err)
		}
		current.Store(iss)
		var b strings.Builder
		err = remoteIntrospectionCaddyfile.Execute(&b, map[string]any{
			"Dir": dir, "Port": port, "Issuer": issuerURL, "Read": scopeRead, "Upstream": up.Listener.Addr().String(),
		})
		if err != nil {
			panic(err) // the template is a constant
		}
		return b.String()
	})
	harness.WaitReady(t, resource)
	ctx := ctxTimeout(t, 30*time.Second)
	md, err := harness.Discover(ctx, issuerURL)
	if err != nil {
		t.Fatalf("Discover(%s): %v", issuerURL, err)
	}
	cfg := md.Config(clientID, redirectURI, scopeRead, "offline_access")
	ar := harness.NewAuthRequest(cfg, resource)
	q, err := harness.NewRobot(username, password, redirectURI).Authorize(ctx, ar.URL)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	tok, err := ar.Exchange(ctx, cfg, q.Get("code"))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if tok.RefreshToken == "" || strings.Count(tok.RefreshToken, ".") == 2 {
		t.Fatalf("refresh token %q: want an opaque one (no JWT's shape)", tok.RefreshToken)
	}
	call := func(bearer string) int {
		resp, body, err := harness.RawToolCall(ctx, http.DefaultClient, resource, bearer, "echo", `{"text":"hi"}`)
		if err != nil {
			t.Fatalf("tools/call: %v", err)
		}
		resp.Body.Close()
		t.Logf("tools/call with %s: %d %.200s", tokenKind(bearer, tok), resp.StatusCode, body)
		return resp.StatusCode
	}
	before := total()
	if got := call(tok.RefreshToken); got != http.StatusUnauthorized {
		t.Errorf("tools/call with the refresh token = %d, want 401", got)
	}
	if n := total() - before; n != 0 {
		t.Errorf("the upstream got %d requests with the refresh token as bearer", n)
	}
	if got := call(tok.AccessToken); got != http.StatusOK {
		t.Errorf("tools/call with the access token = %d, want 200 (the wiring)", got)
	}
}

func tokenKind(bearer string, tok *oauth2.Token) string {
	if bearer == tok.RefreshToken {
		return "the refresh token"
	}
	return "the access token"
}
