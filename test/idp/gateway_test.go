package idp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// oidc-provider as the external authorization server of gateways in front
// of a real MCP server (Go SDK). Its clients: the MCP client that gets
// tokens, and the gateway's own client for introspection.
const (
	asClient       = "mcp-client"
	asClientSecret = "mcp-client-secret-0123456789"
	asRedirect     = "http://127.0.0.1:9/cb"
	gwClient       = "mcp-gateway"
	gwSecret       = "mcp-gateway-secret-0123456789"
	apiAudience    = "api://mcp-notes" // an API identifier, as Auth0 and Entra ID use
	toolScope      = "mcp:tools"
	cacheCeiling   = 2 * time.Second
)

const gatewaysCaddyfile = `{
	admin off
	persist_config off
	auto_https off
	storage file_system %[3]s
}

http://:%[1]d {
	bind 127.0.0.1
	handle /jwt/mcp {
		mcp_gateway {
			resource {{base}}/jwt/mcp
			issuer %[2]s
			scope %[4]s
			tool * %[4]s
			pin_tools off
		}
		reverse_proxy %[5]s
	}
	handle /opaque/mcp {
		mcp_gateway {
			resource {{base}}/opaque/mcp
			issuer %[2]s {
				introspection {
					client_id %[6]s
					client_secret {env.GW_INTROSPECTION_SECRET}
					cache %[7]s
				}
			}
			scope %[4]s
			tool * %[4]s
			pin_tools off
		}
		reverse_proxy %[5]s
	}
	handle /strict/mcp {
		mcp_gateway {
			resource {{base}}/strict/mcp
			issuer %[2]s {
				audience %[8]s
			}
			scope %[4]s
			tool * %[4]s
			pin_tools off
		}
		reverse_proxy %[5]s
	}
	handle /lenient/mcp {
		mcp_gateway {
			resource {{base}}/lenient/mcp
			issuer %[2]s {
				accept_typ_jwt
				audience %[8]s
			}
			scope %[4]s
			tool * %[4]s
			pin_tools off
		}
		reverse_proxy %[5]s
	}
	handle /client-aud/mcp {
		mcp_gateway {
			resource {{base}}/client-aud/mcp
			issuer %[2]s {
				accept_typ_jwt
				audience %[9]s
			}
			scope %[4]s
			tool * %[4]s
			pin_tools off
		}
		reverse_proxy %[5]s
	}
}
`

// upstream is a real MCP server with one tool, echo; it counts the
// requests that reached it, and those carrying an Authorization or DPoP
// header, which the gateway must not forward.
type upstream struct {
	Addr      string
	requests  atomic.Int32
	credsSeen atomic.Int32
}

func echoServer(t *testing.T) *upstream {
	t.Helper()
	s := mcp.NewServer(&mcp.Implementation{Name: "echo", Version: "v1"}, nil)
	type in struct {
		Text string `json:"text"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "Echoes."},
		func(ctx context.Context, req *mcp.CallToolRequest, in in) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	u := new(upstream)
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		if r.Header.Get("Authorization") != "" || r.Header.Get("DPoP") != "" {
			u.credsSeen.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.Addr = srv.Listener.Addr().String()
	return u
}

// externalAS is oidc-provider in front of the gateways of
// gatewaysCaddyfile, with alice as its user.
type externalAS struct {
	p        *provider
	base     string // the gateways' origin
	upstream *upstream
	robot    *harness.Robot
}

// startExternalAS starts oidc-provider with the MCP client, the
// gateway's client and more clients, and Caddy with the gateways.
func startExternalAS(t *testing.T, moreClients ...map[string]any) *externalAS {
	t.Helper()
	port := harness.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startProviderWith(t, append([]map[string]any{
		{"client_id": asClient, "client_secret": asClientSecret, "redirect_uris": []string{asRedirect}},
		{"client_id": gwClient, "client_secret": gwSecret, "redirect_uris": []string{"http://127.0.0.1:9/unused"}},
	}, moreClients...), map[string]any{
		base + "/jwt/mcp":    map[string]any{"scope": toolScope, "format": "jwt"},
		base + "/opaque/mcp": map[string]any{"scope": toolScope, "format": "opaque"},
		apiAudience:          map[string]any{"scope": toolScope, "format": "jwt", "style": "typ-jwt-scp"},
	})
	p.setAccounts(t, map[string]account{accountAlice: alice})
	t.Setenv("GW_INTROSPECTION_SECRET", gwSecret)
	up := echoServer(t)
	cf := fmt.Sprintf(gatewaysCaddyfile, port, p.Issuer, t.TempDir(), toolScope, up.Addr, gwClient, cacheCeiling, apiAudience, asClient)
	harness.Start(t, strings.ReplaceAll(cf, "{{base}}", base))
	harness.WaitReady(t, base+"/.well-known/oauth-protected-resource/jwt/mcp")
	return &externalAS{p: p, base: base, upstream: up, robot: harness.NewRobot("", "", asRedirect)}
}

// asCode signs in as alice on the provider's development login page
// through its authorization code flow (PKCE, resource indicator, an
// OpenID Connect nonce) for resource, and returns the request and the
// redirect's query.
func asCode(t *testing.T, ctx context.Context, p *provider, r *harness.Robot, resource string) (cfg *oauth2.Config, ar harness.AuthRequest, nonce string, query url.Values) {
	t.Helper()
	cfg = &oauth2.Config{
		ClientID: asClient, ClientSecret: asClientSecret, RedirectURL: asRedirect,
		Scopes:   []string{"openid", toolScope},
		Endpoint: oauth2.Endpoint{AuthURL: p.Issuer + "/auth", TokenURL: p.Issuer + "/token", AuthStyle: oauth2.AuthStyleInHeader},
	}
	ar = harness.NewAuthRequest(cfg, resource)
	nonce = oauth2.GenerateVerifier()[:16]
	ar.URL += "&nonce=" + nonce // as OpenID Connect clients send
	out := signIn(t, ctx, r, ar.URL, accountAlice, nil)
	if out.query == nil || out.query.Get("code") == "" {
		t.Fatalf("no code from the provider: %v (page %v)", out.query, out.page)
	}
	return cfg, ar, nonce, out.query
}

// asTokens gets tokens from the provider for resource (asCode, then the
// code redeemed with golang.org/x/oauth2).
func asTokens(t *testing.T, p *provider, r *harness.Robot, resource string) *oauth2.Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, ar, _, query := asCode(t, ctx, p, r, resource)
	tok, err := ar.Exchange(ctx, cfg, query.Get("code"))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	return tok
}

// callEcho connects the Go SDK client through the gateway with token and
// calls echo.
func callEcho(t *testing.T, resource, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})}}
	c := mcp.NewClient(&mcp.Implementation{Name: "idp-test", Version: "1"}, nil)
	cs, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: resource, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", resource, err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "hi" {
		t.Fatalf("echo through %s = %+v, %v", resource, res, err)
	}
}

// refused posts an initialize with token and returns the status and
// the WWW-Authenticate header.
func refused(t *testing.T, resource, token string) (int, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req, _ := http.NewRequest(http.MethodPost, resource, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
}

// TestGatewayForExternalAS: oidc-provider is the authorization server of
// gateways in front of a real MCP server. Its RFC 9068 JWT access tokens
// (resource indicators) are accepted; its opaque tokens are accepted by
// introspection with the gateway's own credentials, and one revoked at
// the provider is refused once the cache ceiling passed; its typ JWT
// tokens with scp are refused by default and accepted with
// accept_typ_jwt; its ID tokens are refused even then.
func TestGatewayForExternalAS(t *testing.T) {
	as := startExternalAS(t)
	p, base, r := as.p, as.base, as.robot
	resJWT, resOpaque := base+"/jwt/mcp", base+"/opaque/mcp"

	t.Run("RFC 9068 JWT access token", func(t *testing.T) {
		tok := asTokens(t, p, r, resJWT)
		c := claims(t, tok.AccessToken)
		if c["aud"] != resJWT || c["scope"] != toolScope {
			t.Fatalf("provider's token claims = %v, want aud %s and scope %s", c, resJWT, toolScope)
		}
		callEcho(t, resJWT, tok.AccessToken)
		// The same token at another gateway: not its audience.
		if s, _ := refused(t, base+"/lenient/mcp", tok.AccessToken); s != http.StatusUnauthorized {
			t.Errorf("token for %s at /lenient: status %d, want 401", resJWT, s)
		}
	})

	t.Run("opaque token by introspection", func(t *testing.T) {
		tok := asTokens(t, p, r, resOpaque)
		if strings.Count(tok.AccessToken, ".") == 2 {
			t.Fatalf("provider issued a JWT for the opaque resource")
		}
		callEcho(t, resOpaque, tok.AccessToken)
		// An opaque token is not accepted where no introspection is set.
		if s, _ := refused(t, resJWT, tok.AccessToken); s != http.StatusUnauthorized {
			t.Errorf("opaque token at the JWT-only gateway: status %d, want 401", s)
		}
		// Revoked at the provider: refused once the cache ceiling passed.
		revokedAt := time.Now()
		form := url.Values{"token": {tok.AccessToken}, "token_type_hint": {"access_token"}}
		req, _ := http.NewRequest(http.MethodPost, p.Issuer+"/token/revocation", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(asClient, asClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("revocation: %v %v", resp, err)
		}
		resp.Body.Close()
		// A call sent past the ceiling (and a second) must be refused;
		// when it is sent, not when a loaded machine answers it, is what
		// counts against the gateway.
		deadline := revokedAt.Add(cacheCeiling + time.Second)
		for {
			sent := time.Now()
			s, hdr := refused(t, resOpaque, tok.AccessToken)
			if s == http.StatusUnauthorized && strings.Contains(hdr, "not active") {
				break
			}
			if sent.After(deadline) {
				t.Fatalf("revoked token still accepted %v after revocation (status %d), want refused within the ceiling %v", sent.Sub(revokedAt), s, cacheCeiling)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("typ JWT with scp", func(t *testing.T) {
		tok := asTokens(t, p, r, apiAudience)
		c := claims(t, tok.AccessToken)
		var hdr map[string]any
		head, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok.AccessToken, ".")[0])
		if err := json.Unmarshal(head, &hdr); err != nil {
			t.Fatal(err)
		}
		if hdr["typ"] != "JWT" || c["scope"] != nil || c["aud"] != apiAudience {
			t.Fatalf("provider's token = %v %v, want typ JWT, scp and aud %s", hdr, c, apiAudience)
		}
		s, www := refused(t, base+"/strict/mcp", tok.AccessToken)
		if s != http.StatusUnauthorized || !strings.Contains(www, "typ at+jwt") {
			t.Errorf("without accept_typ_jwt: status %d (%s), want 401 naming typ", s, www)
		}
		callEcho(t, base+"/lenient/mcp", tok.AccessToken)

		idToken := p.lastIDToken()
		if idToken == "" || claims(t, idToken)["nonce"] == nil {
			t.Fatal("no ID token with a nonce seen")
		}
		for _, path := range []string{"/lenient/mcp", "/client-aud/mcp"} {
			s, www := refused(t, base+path, idToken)
			if s != http.StatusUnauthorized {
				t.Errorf("ID token at %s: status %d, want 401", path, s)
			}
			if path == "/client-aud/mcp" && !strings.Contains(www, "an ID token is not an access token") {
				t.Errorf("ID token with its aud accepted at %s: challenge %q, want the ID token refusal", path, www)
			}
		}
	})
}

// TestGatewayExternalASKeysUnavailable: while oidc-provider cannot be
// reached, a gateway that does not know its keys yet (just started or
// reloaded) refuses its valid JWT access token 503 without a challenge,
// not 401 invalid_token, which would have the client drop the token and
// sign in again at a provider that is down; once the provider answers
// again (and the refetch interval has passed), the same token is
// accepted.
func TestGatewayExternalASKeysUnavailable(t *testing.T) {
	as := startExternalAS(t)
	resJWT := as.base + "/jwt/mcp"
	tok := asTokens(t, as.p, as.robot, resJWT)
	as.p.down.Store(true)
	s, www := refused(t, resJWT, tok.AccessToken)
	if s != http.StatusServiceUnavailable || www != "" {
		t.Fatalf("provider down, keys never fetched: status %d, challenge %q; want 503 and no challenge", s, www)
	}
	as.p.down.Store(false)
	deadline := time.Now().Add(45 * time.Second) // the refetch interval is 30 s
	for {
		s, _ := refused(t, resJWT, tok.AccessToken)
		if s == http.StatusOK {
			break
		}
		if s != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("provider back: status %d, want 503 until the keys are fetched, then 200", s)
		}
		time.Sleep(time.Second)
	}
	callEcho(t, resJWT, tok.AccessToken)
}
