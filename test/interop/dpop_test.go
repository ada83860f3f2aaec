package interop

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestDPoPOAuth4WebAPI: oauth4webapi, an independent DPoP client, gets a
// client_credentials token bound to its own key (after the issuer's nonce
// challenge), calls tools through the gateway with a proof per request
// (after the gateway's nonce challenge), and the same token is refused
// without its key: as Bearer, and with proofs of another key. With a
// WebCrypto Ed25519 key, whose proofs oauth4webapi signs under RFC 9864's
// name Ed25519, too.
func TestDPoPOAuth4WebAPI(t *testing.T) {
	nt := requireNode(t)
	s := startStack(t, startDemo(t))
	for _, alg := range []string{"ES256", "Ed25519"} {
		t.Run(alg, func(t *testing.T) { checkDPoPOAuth4WebAPI(t, nt, s, alg) })
	}
}

func checkDPoPOAuth4WebAPI(t *testing.T, nt nodeTools, s *stack, alg string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := harness.RunDPoP(ctx, t, nt.node, nt.dir, "--issuer", s.Issuer, "--resource", s.Resource,
		"--client-id", ccClientID, "--client-secret", ccClientSecret, "--scope", baseScope, "--tool", permitTool, "--alg", alg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(r.Algs, alg) || slices.Contains(r.Algs, "HS256") || slices.Contains(r.Algs, "none") {
		t.Errorf("dpop_signing_alg_values_supported = %v, want asymmetric algorithms with %s", r.Algs, alg)
	}
	if !slices.Equal(r.ProofAlgs, []string{alg}) {
		t.Errorf("proofs sent under %v, want %s only", r.ProofAlgs, alg)
	}
	if !r.TokenNonce || len(r.TokenRequests) != 2 || r.TokenRequests[0].Status != 400 || !r.TokenRequests[0].DPoPNonce || r.TokenRequests[1].Status != 200 {
		t.Errorf("token requests = %+v, want a use_dpop_nonce answer with DPoP-Nonce, then 200", r.TokenRequests)
	}
	if r.TokenType != "dpop" && r.TokenType != "DPoP" {
		t.Errorf("token_type = %q, want DPoP", r.TokenType)
	}
	if r.CnfJKT == "" || r.CnfJKT != r.OwnJKT {
		t.Errorf("cnf.jkt = %q, want the client's own key thumbprint %q", r.CnfJKT, r.OwnJKT)
	}
	for _, p := range r.CallProblems() {
		t.Error(p)
	}
	if r.NonceRetries < 2 {
		t.Errorf("nonce retries = %d, want the issuer's and the gateway's challenges both answered", r.NonceRetries)
	}
}
