package idp

import (
	"context"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// A client of the provider with the client_credentials grant only.
const (
	machineClient = "mcp-machine"
	machineSecret = "mcp-machine-secret-0123456789"
)

// TestGatewayDPoPForExternalAS: oidc-provider issues DPoP-bound access
// tokens (RFC 9449) to oauth4webapi, an independent DPoP client, for
// gateways in front of a real MCP server: a JWT (client_credentials, the
// binding in its cnf.jkt) and an opaque token (authorization code, the
// binding in the introspection answer's cnf.jkt, RFC 9449 §6.2). Each
// calls tools with a proof per request, and is refused without its key:
// as Bearer (invalid_token) and with proofs of another key
// (invalid_dpop_proof). Neither the token nor the proof reaches the
// upstream server.
func TestGatewayDPoPForExternalAS(t *testing.T) {
	node, dir := requireNode(t)
	as := startExternalAS(t, map[string]any{
		"client_id": machineClient, "client_secret": machineSecret,
		"grant_types": []string{"client_credentials"}, "response_types": []string{}, "redirect_uris": []string{},
	})
	checkReport := func(t *testing.T, r *harness.DPoPReport, opaque bool) {
		t.Helper()
		if r.TokenType != "DPoP" && r.TokenType != "dpop" {
			t.Errorf("token_type = %q, want DPoP", r.TokenType)
		}
		if r.Opaque != opaque {
			t.Errorf("opaque token = %v, want %v", r.Opaque, opaque)
		}
		for _, p := range r.CallProblems() {
			t.Error(p)
		}
	}

	t.Run("JWT", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r, err := harness.RunDPoP(ctx, t, node, dir, "--issuer", as.p.Issuer, "--resource", as.base+"/jwt/mcp",
			"--client-id", machineClient, "--client-secret", machineSecret, "--scope", toolScope, "--tool", "echo")
		if err != nil {
			t.Fatal(err)
		}
		if r.CnfJKT == "" || r.CnfJKT != r.OwnJKT {
			t.Errorf("cnf.jkt = %q, want the client's own key thumbprint %q", r.CnfJKT, r.OwnJKT)
		}
		checkReport(t, r, false)
	})

	t.Run("opaque token by introspection", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resource := as.base + "/opaque/mcp"
		_, ar, nonce, query := asCode(t, ctx, as.p, as.robot, resource)
		r, err := harness.RunDPoP(ctx, t, node, dir, "--issuer", as.p.Issuer, "--resource", resource,
			"--client-id", asClient, "--client-secret", asClientSecret, "--tool", "echo",
			"--callback", asRedirect+"?"+query.Encode(), "--redirect-uri", asRedirect,
			// "--flag=value": a random value may begin with "-", which
			// Node's parseArgs refuses as a separate argument.
			"--state="+ar.State, "--code-verifier="+ar.Verifier, "--nonce="+nonce)
		if err != nil {
			t.Fatal(err)
		}
		checkReport(t, r, true)
	})

	if n, all := as.upstream.credsSeen.Load(), as.upstream.requests.Load(); n != 0 || all == 0 {
		t.Errorf("%d of %d requests reached the upstream with an Authorization or DPoP header, want 0 of some", n, all)
	}
}
