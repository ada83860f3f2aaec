package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"testing"
)

// DPoPReport is the JSON line test/node/dpop.mjs prints: how its
// oauth4webapi client got a DPoP-bound token and what the gateway
// answered to the calls made with it.
type DPoPReport struct {
	OK            bool     `json:"ok"`
	Error         string   `json:"error"`
	Algs          []string `json:"dpop_signing_alg_values_supported"`
	TokenType     string   `json:"token_type"`
	Opaque        bool     `json:"opaque"`
	CnfJKT        string   `json:"cnf_jkt"` // of a JWT access token
	OwnJKT        string   `json:"own_jkt"`
	ProofAlgs     []string `json:"proof_algs"` // the alg of each proof sent, once each
	NonceRetries  int      `json:"nonce_retries"`
	TokenNonce    bool     `json:"token_nonce_challenge"`
	TokenRequests []struct {
		Status    int  `json:"status"`
		DPoPNonce bool `json:"dpop_nonce"`
	} `json:"token_requests"`
	Calls []DPoPCall `json:"calls"`
}

// DPoPCall is one MCP request of dpop.mjs and the gateway's answer.
type DPoPCall struct {
	Label      string `json:"label"`
	Status     int    `json:"status"`
	OK         bool   `json:"ok"`
	Challenges []struct {
		Scheme string `json:"scheme"`
		Error  string `json:"error"`
		Algs   string `json:"algs"`
	} `json:"challenges"`
	Result json.RawMessage `json:"result"`
}

// RunDPoP runs test/node/dpop.mjs (in dir, with the Node binary node)
// with args and reads its report; an error means the script did not get
// through its calls. Its output and stderr go to the test log.
func RunDPoP(ctx context.Context, t testing.TB, node, dir string, args ...string) (*DPoPReport, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, node, append([]string{"dpop.mjs"}, args...)...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	t.Logf("dpop.mjs: %s", stdout.Bytes())
	if stderr.Len() > 0 {
		t.Logf("dpop.mjs stderr:\n%s", stderr.String())
	}
	var r DPoPReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return nil, fmt.Errorf("dpop.mjs output is not one JSON report (exit: %v): %w", runErr, err)
	}
	if !r.OK || runErr != nil {
		return nil, fmt.Errorf("dpop.mjs ok = %v (exit: %v), error %q", r.OK, runErr, r.Error)
	}
	return &r, nil
}

// CallProblems checks the gateway's answers: the bound token with its
// proofs initializes, lists and calls tools; as Bearer it is refused
// (401, DPoP challenge invalid_token), and so it is with proofs of
// another key (invalid_dpop_proof), each challenge listing algs.
func (r *DPoPReport) CallProblems() []string {
	var problems []string
	call := func(label string) DPoPCall {
		for _, c := range r.Calls {
			if c.Label == label {
				return c
			}
		}
		problems = append(problems, label+": not made")
		return DPoPCall{}
	}
	for _, l := range []string{"initialize", "tools/list", "tools/call"} {
		if c := call(l); c.Status != 200 {
			problems = append(problems, fmt.Sprintf("%s with the bound token and proofs: status %d, want 200", l, c.Status))
		}
	}
	if c := call("tools/call"); !json.Valid(c.Result) || len(c.Result) == 0 {
		problems = append(problems, fmt.Sprintf("tools/call result = %s, want the tool's answer", c.Result))
	}
	for label, want := range map[string]string{"as Bearer": "invalid_token", "with another key": "invalid_dpop_proof"} {
		c := call(label)
		found := false
		for _, ch := range c.Challenges {
			found = found || ch.Scheme == "dpop" && ch.Error == want && ch.Algs != ""
		}
		if c.Status != 401 || !found {
			problems = append(problems, fmt.Sprintf("%s: status %d, challenges %+v; want 401 with a DPoP %s challenge listing algs", label, c.Status, c.Challenges, want))
		}
	}
	return problems
}
