package headers

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestIssuerSiteWithoutHostLoads: a site address without a host
// (`http://:PORT`) alone in its server, with a matcherless `header` and a
// `redir` with a path before mcp_issuer in Caddy's directive order,
// serves the issuer, and the configuration loads: the Caddyfile lays
// such a site's routes out unwrapped, the matcher splitting them, and the
// check of the issuer's site took the first of them for the whole site.
func TestIssuerSiteWithoutHostLoads(t *testing.T) {
	port := harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	harness.Start(t, globalOptions(t, issuer, "")+fmt.Sprintf(`
http://:%[3]d {
	bind 127.0.0.1
	header X-Frame-Options DENY
	redir /old /new
	mcp_issuer
	mcp_gateway {
		resource %[1]s/mcp
		scope %[2]s
		tool * %[2]s
	}
	respond 404
}
`, issuer, scope, port))
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	resp, err := http.Get(issuer + "/.well-known/oauth-authorization-server")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("metadata = %d, X-Frame-Options %q; want 200, DENY", resp.StatusCode, resp.Header.Get("X-Frame-Options"))
	}
}
