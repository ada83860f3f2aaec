package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestLimitsBehindTrustedProxy: behind a load balancer listed in
// trusted_proxies the brute-force limits count per client address, which
// Caddy reads from X-Forwarded-For. A balancer appends the address it
// saw to whatever the client sent in that field, so the client writes
// the leftmost entries: with the README's trusted_proxies_strict Caddy
// takes the rightmost address no trusted proxy added, and a client that
// sends a new made-up address with each wrong secret is still blocked
// once the pair's free failures are spent.
func TestLimitsBehindTrustedProxy(t *testing.T) {
	const secret = "right-secret-for-svc"
	hash := harness.HashPassword(t, secret)
	var issuer string
	harness.StartFree(t, func(port int) string {
		issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		return fmt.Sprintf(`{
	admin off
	persist_config off
	servers {
		trusted_proxies static 127.0.0.1/32
		trusted_proxies_strict
	}
	mcp_auth {
		issuer %[1]s
		storage memory
		resource %[1]s/mcp {
			scopes mcp:read
		}
		client svc {
			secret %[2]s
			grant_types client_credentials
			scopes mcp:read
		}
	}
}

%[1]s {
	mcp_issuer
}
`, issuer, hash)
	})
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	status := func(forged int) int {
		form := url.Values{"grant_type": {"client_credentials"}, "resource": {issuer + "/mcp"}}
		req, _ := http.NewRequest(http.MethodPost, issuer+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("svc", "wrong")
		// The client's made-up address, then the one the balancer (this
		// test, at a trusted address) saw.
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("203.0.113.%d, 198.51.100.9", forged))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Five free failures, a sixth that blocks the pair (its score just
	// under 6 once decayed), then refusals.
	for n := 1; n <= 10; n++ {
		switch got := status(n); {
		case got == http.StatusTooManyRequests && n > 5:
			return
		case got != http.StatusUnauthorized:
			t.Fatalf("wrong secret %d = %d, want 401", n, got)
		}
	}
	t.Errorf("ten wrong secrets, each from a new made-up address, none refused 429")
}
