package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// A confidential client that redeems ID-JAGs. Test-only values.
const (
	jagClientID     = "enterprise-agent"
	jagClientSecret = "enterprise-agent-secret-0123456789"
)

// TestIDJAGJose: an enterprise IdP whose key and ID-JAGs are made by an
// independent JOSE library (jose, test/node/idjag.mjs) is trusted; its
// ID-JAG is redeemed at /token for a token scoped to the ID-JAG's scopes
// the user's groups allow, which calls a tool through the gateway in front
// of a real MCP server with the Go SDK client; the same ID-JAG is refused
// a second time, and one addressed to another server is refused.
func TestIDJAGJose(t *testing.T) {
	nt := requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	jwks, err := nt.run(ctx, t, nil, "idjag.mjs", "keys", "--dir", dir)
	if err != nil || !json.Valid(jwks) {
		t.Fatalf("idjag.mjs keys: %v, %q", err, jwks)
	}
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(jwks)
	}))
	defer idp.Close()
	extra := fmt.Sprintf(`
		identity_provider corp {
			issuer %[1]s
			client_id mcp-auth
			group engineering users
		}
		trusted_idp %[1]s {
			jwks_uri %[1]s/jwks
		}
		client %[2]s {
			secret %[3]s
			grant_types urn:ietf:params:oauth:grant-type:jwt-bearer
		}`, idp.URL, jagClientID, harness.HashPassword(t, jagClientSecret))
	s := startStackWith(t, startDemo(t), extra)

	md, err := harness.Discover(ctx, s.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		GrantTypes []string `json:"grant_types_supported"`
		Profiles   []string `json:"authorization_grant_profiles_supported"`
	}
	resp, err := http.Get(s.Issuer + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(meta.GrantTypes, "urn:ietf:params:oauth:grant-type:jwt-bearer") ||
		!slices.Equal(meta.Profiles, []string{"urn:ietf:params:oauth:grant-profile:id-jag"}) {
		t.Errorf("metadata grant_types_supported %v, authorization_grant_profiles_supported %v", meta.GrantTypes, meta.Profiles)
	}

	mint := func(aud string) string {
		t.Helper()
		out, err := nt.run(ctx, t, nil, "idjag.mjs", "mint", "--dir", dir, "--iss", idp.URL, "--aud", aud,
			"--sub", "00u1emp", "--client-id", jagClientID, "--resource", s.Resource,
			"--scope", baseScope+" "+otherScope, "--groups", "engineering")
		if err != nil {
			t.Fatalf("idjag.mjs mint: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	redeem := func(jag string) (int, map[string]any) {
		t.Helper()
		form := url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"}, "assertion": {jag}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.TokenEndpoint, strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(jagClientID, jagClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}

	jag := mint(s.Issuer)
	status, body := redeem(jag)
	tok, _ := body["access_token"].(string)
	if status != http.StatusOK || tok == "" {
		t.Fatalf("redeem = %d %v, want 200 and a token", status, body["error"])
	}
	// The ID-JAG grants base and other; the user's group (users) only
	// base and write: the token has base.
	if body["scope"] != baseScope {
		t.Errorf("scope = %v, want %s", body["scope"], baseScope)
	}
	claims, err := harness.Claims(tok)
	if err != nil {
		t.Fatal(err)
	}
	if claims["sub"] != "corp:00u1emp" || claims["client_id"] != jagClientID || !slices.Equal(harness.Audience(claims), []string{s.Resource}) {
		t.Errorf("claims sub %v client_id %v aud %v", claims["sub"], claims["client_id"], harness.Audience(claims))
	}

	hc := &http.Client{Transport: &oauth2.Transport{Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok})}}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "idjag-interop", Version: "1.0.0"}, nil).
		Connect(ctx, &mcp.StreamableClientTransport{Endpoint: s.Resource, HTTPClient: hc}, nil)
	if err != nil {
		t.Fatalf("connect through the gateway: %v", err)
	}
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: permitTool, Arguments: map[string]any{"text": "from the enterprise"}})
	if err != nil || res.IsError {
		t.Fatalf("CallTool(%s) = %+v, %v; want success", permitTool, res, err)
	}
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: stepUpTool, Arguments: map[string]any{"text": "x"}}); err == nil && !res.IsError {
		t.Errorf("CallTool(%s) without %s succeeded, want refusal", stepUpTool, writeScope)
	}

	if status, body := redeem(jag); status != http.StatusBadRequest || body["error"] != "invalid_grant" || body["access_token"] != nil {
		t.Errorf("replayed ID-JAG = %d %v, want 400 invalid_grant", status, body)
	}
	if status, body := redeem(mint("https://other-as.example")); status != http.StatusBadRequest || body["error"] != "invalid_grant" {
		t.Errorf("ID-JAG for another server = %d %v, want 400 invalid_grant", status, body)
	}
}
