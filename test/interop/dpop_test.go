package interop

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// dpopReport is the JSON line test/node/dpop.mjs prints.
type dpopReport struct {
	OK            bool     `json:"ok"`
	Error         string   `json:"error"`
	Algs          []string `json:"dpop_signing_alg_values_supported"`
	TokenType     string   `json:"token_type"`
	CnfJKT        string   `json:"cnf_jkt"`
	OwnJKT        string   `json:"own_jkt"`
	NonceRetries  int      `json:"nonce_retries"`
	TokenNonce    bool     `json:"token_nonce_challenge"`
	TokenRequests []struct {
		Status    int  `json:"status"`
		DPoPNonce bool `json:"dpop_nonce"`
	} `json:"token_requests"`
	Calls []struct {
		Label      string `json:"label"`
		Status     int    `json:"status"`
		OK         bool   `json:"ok"`
		Challenges []struct {
			Scheme string `json:"scheme"`
			Error  string `json:"error"`
			Algs   string `json:"algs"`
		} `json:"challenges"`
		Result json.RawMessage `json:"result"`
	} `json:"calls"`
}

// TestDPoPOAuth4WebAPI: oauth4webapi, an independent DPoP client, gets a
// client_credentials token bound to its own key (after the issuer's nonce
// challenge), calls tools through the gateway with a proof per request
// (after the gateway's nonce challenge), and the same token is refused
// without its key: as Bearer, and with proofs of another key.
func TestDPoPOAuth4WebAPI(t *testing.T) {
	nt := requireNode(t)
	s := startStack(t, startDemo(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := nt.run(ctx, t, nil, "dpop.mjs", "--issuer", s.Issuer, "--resource", s.Resource,
		"--client-id", ccClientID, "--client-secret", ccClientSecret, "--scope", baseScope, "--tool", permitTool)
	t.Logf("dpop.mjs: %s", out)
	var r dpopReport
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("dpop.mjs output is not one JSON report (exit: %v): %v", err, jerr)
	}
	if !r.OK || err != nil {
		t.Fatalf("dpop.mjs ok = %v (exit: %v), error %q", r.OK, err, r.Error)
	}
	if !slices.Contains(r.Algs, "ES256") || slices.Contains(r.Algs, "HS256") || slices.Contains(r.Algs, "none") {
		t.Errorf("dpop_signing_alg_values_supported = %v, want asymmetric algorithms with ES256", r.Algs)
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
	byLabel := map[string]int{}
	for i, c := range r.Calls {
		byLabel[c.Label] = i
	}
	for _, l := range []string{"initialize", "tools/list", "tools/call"} {
		if c := r.Calls[byLabel[l]]; c.Status != 200 {
			t.Errorf("%s with the bound token and proofs: status %d, want 200", l, c.Status)
		}
	}
	if c := r.Calls[byLabel["tools/call"]]; !json.Valid(c.Result) || len(c.Result) == 0 {
		t.Errorf("tools/call result = %s, want the tool's answer", c.Result)
	}
	refusal := func(label, wantErr string) {
		t.Helper()
		c := r.Calls[byLabel[label]]
		found := false
		for _, ch := range c.Challenges {
			if ch.Scheme == "dpop" && ch.Error == wantErr && ch.Algs != "" {
				found = true
			}
		}
		if c.Status != 401 || !found {
			t.Errorf("%s: status %d, challenges %+v; want 401 with a DPoP %s challenge listing algs", label, c.Status, c.Challenges, wantErr)
		}
	}
	refusal("as Bearer", "invalid_token")
	refusal("with another key", "invalid_dpop_proof")
	if r.NonceRetries < 2 {
		t.Errorf("nonce retries = %d, want the issuer's and the gateway's challenges both answered", r.NonceRetries)
	}
}
