package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestErrorRoutesGetNoCredentials: when the MCP server behind the gateway,
// or an application behind mcp_issuer, is down, reverse_proxy fails and
// Caddy runs the site's error routes on the client's request. A common
// `handle_errors` proxies to an error-page service; it got the request's
// Authorization (the access token, good at the gateway until it expires),
// its DPoP proof and the issuer's session cookie, which the gateway and
// mcp_issuer keep from the handlers after them: they put the header back
// as it came once next returned. The error routes now get the request
// without them, as next got it: the application's own cookies beside
// mcp_issuer, no cookie after the gateway, and the client's other
// headers.
func TestErrorRoutesGetNoCredentials(t *testing.T) {
	var mu sync.Mutex
	// The headers the error-page service got; its route sends a body of
	// its own (the client's was read).
	var seen []http.Header
	errorPages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(http.StatusBadGateway)
	}))
	t.Cleanup(errorPages.Close)
	down := harness.FreePort(t) // nothing listens there
	// A site of its own for a second gateway, as mcp.example.com beside
	// auth.example.com: no mcp_issuer before it.
	other := fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	const secret = "error-routes-client-secret-0123456789abcdef"
	dir := t.TempDir()
	var issuer string
	harness.StartFree(t, func(port int) string {
		issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	mcp_auth {
		issuer %[2]s
		storage memory
		client svc {
			secret sha256:%[3]x
			grant_types client_credentials
		}
	}
}

%[2]s {
	mcp_issuer
	@mcp path /mcp /.well-known/oauth-protected-resource/mcp
	handle @mcp {
		mcp_gateway {
			resource %[2]s/mcp
			scope read
			tool * read
			pin_tools off
		}
		reverse_proxy 127.0.0.1:%[4]d
	}
	handle {
		reverse_proxy 127.0.0.1:%[4]d
	}
	handle_errors {
		request_body {
			set "error page"
		}
		reverse_proxy %[5]s
	}
}

%[6]s {
	mcp_gateway {
		resource %[6]s/mcp
		scope read
		tool * read
		pin_tools off
	}
	reverse_proxy 127.0.0.1:%[4]d
	handle_errors {
		request_body {
			set "error page"
		}
		reverse_proxy %[5]s
	}
}
`, dir, issuer, sha256.Sum256([]byte(secret)), down, errorPages.Listener.Addr(), other)
	})
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	resource := issuer + "/mcp"
	const session = "mcp_session=issuer-session-cookie-value-5f2e"

	token := func(resource, proof string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, issuer+"/token", strings.NewReader(url.Values{
			"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"read"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("svc", secret)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusOK || a.AccessToken == "" {
			t.Fatalf("client_credentials = %d %v, want a token", resp.StatusCode, err)
		}
		return a.AccessToken
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bearer := token(resource, "")
	bound := token(resource, logProof(t, key, issuer+"/token", ""))
	otherBearer := token(other+"/mcp", "")
	otherBound := token(other+"/mcp", logProof(t, key, issuer+"/token", ""))

	for _, tt := range []struct {
		name, method, url string
		header            map[string]string
		cookie            string // what the error routes get
	}{
		// The gateway forwards no cookie (MCP does not use them).
		{"a gateway call with a bearer token", http.MethodPost, resource, map[string]string{"Authorization": "Bearer " + bearer}, ""},
		{"a gateway call with a DPoP-bound token", http.MethodPost, resource, map[string]string{
			"Authorization": "DPoP " + bound, "DPoP": logProof(t, key, resource, bound)}, ""},
		{"a page of the application beside mcp_issuer", http.MethodGet, issuer + "/app/page", nil, "theme=dark"},
		{"a call to a gateway in a site of its own", http.MethodPost, other + "/mcp", map[string]string{"Authorization": "Bearer " + otherBearer}, ""},
		{"a DPoP call to a gateway in a site of its own", http.MethodPost, other + "/mcp", map[string]string{
			"Authorization": "DPoP " + otherBound, "DPoP": logProof(t, key, other+"/mcp", otherBound)}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			var body *strings.Reader
			if tt.method == http.MethodPost {
				body = strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
			} else {
				body = strings.NewReader("")
			}
			req, _ := http.NewRequest(tt.method, tt.url, body)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2025-11-25")
			req.Header.Set("Cookie", session+"; theme=dark")
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			if resp.StatusCode != http.StatusBadGateway || len(seen) != 1 {
				t.Fatalf("%s = %d, error routes ran %d times; want 502 from the error-page service, once", tt.url, resp.StatusCode, len(seen))
			}
			h := seen[0]
			for _, name := range []string{"Authorization", "Dpop"} {
				if v := h.Values(name); len(v) != 0 {
					t.Errorf("the error-page service got %s: %.60q", name, v)
				}
			}
			if got := strings.Join(h.Values("Cookie"), "; "); got != tt.cookie {
				t.Errorf("the error-page service got Cookie %q, want %q", got, tt.cookie)
			}
			if h.Get("Mcp-Protocol-Version") != "2025-11-25" {
				t.Errorf("the error-page service got no Mcp-Protocol-Version: the client's other headers are kept")
			}
		})
	}
}

// TestInterceptRoutesGetNoCredentials: Caddy orders `intercept` before
// mcp_gateway, and runs the handle_response routes it matches on the
// client's request once the gateway has returned: an intercept that sends
// the gateway's refusals, or the MCP server's failures, to an error-page
// service (README: "an intercept before the gateway handles its
// refusals") got the caller's access token, valid where the refusal was
// insufficient_scope, and its DPoP proof, which the MCP server never
// gets, as the error routes did (TestErrorRoutesGetNoCredentials). They
// now get the request without them, its other fields as they came.
func TestInterceptRoutesGetNoCredentials(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	errorPages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(errorPages.Close)
	// The MCP server fails every call.
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"down"}}`))
	}))
	t.Cleanup(failing.Close)
	const secret = "intercept-routes-client-secret-0123456789ab"
	dir := t.TempDir()
	var issuer string
	harness.StartFree(t, func(port int) string {
		issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	mcp_auth {
		issuer %[2]s
		storage memory
		client svc {
			secret sha256:%[3]x
			grant_types client_credentials
		}
	}
}

%[2]s {
	mcp_issuer
	@mcp path /mcp /.well-known/oauth-protected-resource/mcp
	handle @mcp {
		intercept {
			@err status 4xx 5xx
			handle_response @err {
				request_body {
					set "error page"
				}
				reverse_proxy %[5]s
			}
		}
		mcp_gateway {
			resource %[2]s/mcp
			scope read
			tool admin write
			tool * read
			pin_tools off
		}
		reverse_proxy %[4]s
	}
}
`, dir, issuer, sha256.Sum256([]byte(secret)), failing.Listener.Addr(), errorPages.Listener.Addr())
	})
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	resource := issuer + "/mcp"
	token := func(proof string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, issuer+"/token", strings.NewReader(url.Values{
			"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"read"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("svc", secret)
		if proof != "" {
			req.Header.Set("DPoP", proof)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var a struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusOK || a.AccessToken == "" {
			t.Fatalf("client_credentials = %d %v, want a token", resp.StatusCode, err)
		}
		return a.AccessToken
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bearer := token("")
	bound := token(logProof(t, key, issuer+"/token", ""))
	const (
		listing = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
		// admin needs write, which the token does not hold: 403.
		adminCall = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin","arguments":{}}}`
	)
	for _, tt := range []struct {
		name, body string
		header     func() map[string]string
	}{
		{"the MCP server's failure, bearer", listing, func() map[string]string { return map[string]string{"Authorization": "Bearer " + bearer} }},
		{"the MCP server's failure, DPoP", listing, func() map[string]string {
			return map[string]string{"Authorization": "DPoP " + bound, "DPoP": logProof(t, key, resource, bound)}
		}},
		{"the gateway's insufficient_scope, bearer", adminCall, func() map[string]string { return map[string]string{"Authorization": "Bearer " + bearer} }},
		{"the gateway's insufficient_scope, DPoP", adminCall, func() map[string]string {
			return map[string]string{"Authorization": "DPoP " + bound, "DPoP": logProof(t, key, resource, bound)}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			req, _ := http.NewRequest(http.MethodPost, resource, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2025-11-25")
			req.Header.Set("Cookie", "mcp_session=issuer-session-cookie-value-5f2e; theme=dark")
			for k, v := range tt.header() {
				req.Header.Set(k, v)
			}
			// What the client then gets is Caddy's (intercept keeps the
			// first answer's Content-Length beside the error page's): only
			// what the error-page service got is read here.
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 {
				t.Fatalf("%s: intercept's routes ran %d times, want once", tt.body, len(seen))
			}
			h := seen[0]
			for _, name := range []string{"Authorization", "Dpop", "Cookie"} {
				if v := h.Values(name); len(v) != 0 {
					t.Errorf("the error-page service got %s: %.60q", name, v)
				}
			}
			if h.Get("Mcp-Protocol-Version") != "2025-11-25" {
				t.Errorf("the error-page service got no Mcp-Protocol-Version: the client's other headers are kept")
			}
		})
	}
}

// TestInterceptBeforeIssuerGetsNoCredentials: an intercept that runs
// before mcp_issuer (written first in a route, as a site that sends every
// failure, the issuer's included, to one error-page service writes it)
// handles the answer on the client's request itself, not on the copy
// mcp_issuer passed on without its session cookie. The gateway after
// mcp_issuer took the credentials out of that copy only, so when the
// client sent the issuer's session cookie (a browser-based client on the
// issuer's origin) the error-page service got the access token, its
// DPoP proof and the session cookie; mcp_issuer gave the request the
// header next left only when next failed (TestErrorRoutesGetNoCredentials).
func TestInterceptBeforeIssuerGetsNoCredentials(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	errorPages := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(errorPages.Close)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"down"}}`))
	}))
	t.Cleanup(failing.Close)
	const secret = "intercept-first-client-secret-0123456789abcd"
	dir := t.TempDir()
	var issuer string
	harness.StartFree(t, func(port int) string {
		issuer = fmt.Sprintf("http://127.0.0.1:%d", port)
		return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	mcp_auth {
		issuer %[2]s
		storage memory
		client svc {
			secret sha256:%[3]x
			grant_types client_credentials
		}
	}
}

%[2]s {
	route {
		intercept {
			@err status 4xx 5xx
			handle_response @err {
				request_body {
					set "error page"
				}
				reverse_proxy %[5]s
			}
		}
		mcp_issuer
		mcp_gateway {
			resource %[2]s/mcp
			scope read
			tool admin write
			tool * read
			pin_tools off
		}
		reverse_proxy %[4]s
	}
}
`, dir, issuer, sha256.Sum256([]byte(secret)), failing.Listener.Addr(), errorPages.Listener.Addr())
	})
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	resource := issuer + "/mcp"
	req, _ := http.NewRequest(http.MethodPost, issuer+"/token", strings.NewReader(url.Values{
		"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"read"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("svc", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var a struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusOK || a.AccessToken == "" {
		t.Fatalf("client_credentials = %d %v, want a token", resp.StatusCode, err)
	}
	resp.Body.Close()
	for _, tt := range []struct{ name, body string }{
		{"the MCP server's failure", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`},
		{"the gateway's insufficient_scope", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin","arguments":{}}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			seen = nil
			mu.Unlock()
			req, _ := http.NewRequest(http.MethodPost, resource, strings.NewReader(tt.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("MCP-Protocol-Version", "2025-11-25")
			req.Header.Set("Authorization", "Bearer "+a.AccessToken)
			req.Header.Set("Cookie", "mcp_session=issuer-session-cookie-value-5f2e; theme=dark")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 {
				t.Fatalf("intercept's routes ran %d times, want once", len(seen))
			}
			h := seen[0]
			for _, name := range []string{"Authorization", "Cookie"} {
				if v := h.Values(name); len(v) != 0 {
					t.Errorf("the error-page service got %s: %.60q", name, v)
				}
			}
			if h.Get("Mcp-Protocol-Version") != "2025-11-25" {
				t.Errorf("the error-page service got no Mcp-Protocol-Version: the client's other headers are kept")
			}
		})
	}
}
