package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestEarlyDataTooEarly: Caddy serves HTTP/3 and accepts 0-RTT data by
// default; a request sent as early data, whose source address nothing
// has verified yet, is answered 425 Too Early by the issuer's endpoints
// (they would charge the address's limits), while discovery is served
// and the same request after the handshake reaches the endpoint.
func TestEarlyDataTooEarly(t *testing.T) {
	port := harness.StartFree(t, func(port int) string {
		return fmt.Sprintf(`{
	%[1]s
	mcp_auth {
		issuer https://localhost:%[2]d
		storage memory
		client c {
			public
			redirect_uri http://127.0.0.1/callback
		}
		resource https://localhost:%[2]d/mcp {
			scopes read
		}
	}
}

https://localhost:%[2]d {
	mcp_issuer
}
`, localHTTPSOptions(t.TempDir()), port)
	})
	base := fmt.Sprintf("https://localhost:%d", port)
	cache := tls.NewLRUClientSessionCache(4)
	try := func(method, u string) (int, []byte, error) {
		tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ClientSessionCache: cache, ServerName: "localhost"}}
		defer tr.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := tr.RoundTrip(req)
		if err != nil {
			return 0, nil, err
		}
		defer res.Body.Close()
		var b [4096]byte
		n, _ := res.Body.Read(b[:])
		time.Sleep(200 * time.Millisecond) // the session ticket
		return res.StatusCode, b[:n], nil
	}
	get := func(method, u string) (int, []byte) {
		t.Helper()
		code, body, err := try(method, u)
		if err != nil {
			t.Fatalf("%s %s over HTTP/3: %v", method, u, err)
		}
		return code, body
	}
	var md struct {
		AuthorizationEndpoint string `json:"authorization_endpoint"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := try(http.MethodGet, base+"/.well-known/oauth-authorization-server")
		if err == nil && code == http.StatusOK {
			if err := json.Unmarshal(body, &md); err != nil {
				t.Fatalf("metadata: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metadata over HTTP/3 = %d, %v", code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _ := get(http3.MethodGet0RTT, base+"/.well-known/oauth-authorization-server"); code != http.StatusOK {
		t.Errorf("metadata as early data = %d, want 200", code)
	}
	u := md.AuthorizationEndpoint + "?client_id=c&response_type=code"
	// A request goes as early data only with a session ticket in hand,
	// which a loaded machine may not have had yet (try waits 200 ms for
	// it): without one it is sent after the handshake and served. A few
	// tries, each after a request that leaves a ticket.
	for try := 1; ; try++ {
		code, _ := get(http3.MethodGet0RTT, u)
		if code == http.StatusTooEarly {
			break
		}
		if try == 5 {
			t.Errorf("authorization request as early data = %d, want 425 (5 tries)", code)
			break
		}
		t.Logf("authorization request as early data, try %d = %d; again", try, code)
	}
	if code, _ := get(http.MethodGet, u); code == http.StatusTooEarly {
		t.Errorf("authorization request after the handshake = %d, want it served", code)
	}
}

// localHTTPSOptions are the global options of a Caddy that serves HTTPS,
// and so HTTP/3, for localhost with certificates of its own CA, its
// data under dir.
func localHTTPSOptions(dir string) string {
	return `admin off
	persist_config off
	skip_install_trust
	local_certs
	auto_https disable_redirects
	storage file_system ` + dir + `/caddy
	log {
		level WARN
	}`
}
