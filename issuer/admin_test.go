package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
)

const adminResource = "https://mcp.example.com/mcp"

// newAdminIssuer is an issuer on a bbolt file of its own, with one
// configured user, group and public client, and a bcrypt hash of
// "password" at the minimum cost.
func newAdminIssuer(t *testing.T, mutate func(*Config)) (*Issuer, string) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "mcp-auth.db"), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return newAdminIssuerOn(t, st, mutate)
}

// newAdminIssuerOn is newAdminIssuer on the store st.
func newAdminIssuerOn(t *testing.T, st store.Store, mutate func(*Config)) (*Issuer, string) {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte("password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Issuer:    "http://127.0.0.1:8080",
		Users:     []User{{Username: "alice", PasswordHash: string(h), Groups: []string{"users"}}},
		Groups:    []Group{{Name: "users", Scopes: map[string][]string{"*": {"read"}}}},
		Clients:   []Client{{ID: "configured", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"http://127.0.0.1/cb"}}},
		Resources: []Resource{{URL: adminResource, Scopes: []string{"read", "write"}}},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	iss, err := New(cfg, st)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	return iss, string(h)
}

// withAdminScopes adds scopes to adminResource's, for newAdminIssuer.
func withAdminScopes(scopes ...string) func(*Config) {
	return func(c *Config) { c.Resources[0].Scopes = append(c.Resources[0].Scopes, scopes...) }
}

// adminServer serves iss's admin API under /mcp-auth, where Caddy mounts
// it.
func adminServer(t *testing.T, iss *Issuer) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.StripPrefix("/mcp-auth", iss.newAdmin(bcrypt.MinCost)))
	t.Cleanup(srv.Close)
	return srv
}

type apiCase struct {
	name, method, path, body string
	wantStatus               int
	wantBody                 string // substring, if set
}

func runAPI(t *testing.T, srv *httptest.Server, tt apiCase) string {
	t.Helper()
	req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
	if err != nil {
		t.Fatal(err)
	}
	if tt.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return doAPI(t, srv, req, tt.wantStatus, tt.wantBody)
}

func doAPI(t *testing.T, srv *httptest.Server, req *http.Request, wantStatus int, wantBody string) string {
	t.Helper()
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	got := b.String()
	if resp.StatusCode != wantStatus {
		t.Errorf("%s %s = %d %s, want %d", req.Method, req.URL.Path, resp.StatusCode, got, wantStatus)
	}
	if wantBody != "" && !strings.Contains(got, wantBody) {
		t.Errorf("%s %s body = %s, want it to contain %s", req.Method, req.URL.Path, got, wantBody)
	}
	if req.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s Content-Type = %q, want application/json", req.Method, req.URL.Path, ct)
		}
	}
	if resp.StatusCode >= 400 && req.Method != http.MethodHead {
		var e map[string]string
		if err := json.Unmarshal(b.Bytes(), &e); err != nil || e["error"] == "" || len(e) != 1 {
			t.Errorf("%s %s error body = %s, want {\"error\": message}", req.Method, req.URL.Path, got)
		}
	}
	for _, leak := range []string{"$2a$", `"password_hash":`, `"secret_hash":`, "sha256:", "Go struct", "issuer."} {
		if strings.Contains(got, leak) {
			t.Errorf("%s %s body = %s, leaks %q", req.Method, req.URL.Path, got, leak)
		}
	}
	return got
}

func TestAdminUsers(t *testing.T) {
	iss, hash := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	costly := costlyHash(20)
	steps := []apiCase{
		{"list config user", "GET", "/mcp-auth/users", "", 200, `"username":"alice"`},
		{"add with password", "POST", "/mcp-auth/users", `{"username":"bob","password":"bob password","groups":["users"],"name":"Bob"}`, 201, `"source":"admin"`},
		{"add with hash", "POST", "/mcp-auth/users", `{"username":"carol","password_hash":"` + hash + `"}`, 201, `"username":"carol"`},
		{"add existing", "POST", "/mcp-auth/users", `{"username":"bob","password":"bob password"}`, 409, "already exists"},
		{"add config user", "POST", "/mcp-auth/users", `{"username":"alice","password":"alice password"}`, 409, ""},
		{"add both secrets", "POST", "/mcp-auth/users", `{"username":"dan","password":"dan password","password_hash":"` + hash + `"}`, 400, "not both"},
		{"add no secret", "POST", "/mcp-auth/users", `{"username":"dan"}`, 400, "password or password_hash is required"},
		{"add no name", "POST", "/mcp-auth/users", `{"password":"dan password"}`, 400, "username is required"},
		{"add bad hash", "POST", "/mcp-auth/users", `{"username":"dan","password_hash":"plain"}`, 400, "only bcrypt is accepted"},
		{"add costly hash", "POST", "/mcp-auth/users", `{"username":"dan","password_hash":"` + costly + `"}`, 400, "bcrypt cost 20 is above the most accepted, 16"},
		{"add short password", "POST", "/mcp-auth/users", `{"username":"dan","password":"1234567"}`, 400, "at least 8 characters"},
		{"add short multibyte password", "POST", "/mcp-auth/users", `{"username":"dan","password":"ééééééé"}`, 400, "at least 8 characters"},
		{"add unknown group", "POST", "/mcp-auth/users", `{"username":"dan","password":"dan password","groups":["nope"]}`, 400, "unknown group"},
		{"add unknown field", "POST", "/mcp-auth/users", `{"username":"dan","password":"dan password","admin":true}`, 400, "unknown field"},
		{"add wrong type", "POST", "/mcp-auth/users", `{"username":"dan","password":"dan password","groups":"users"}`, 400, "field groups has the wrong type (JSON string)"},
		{"add array", "POST", "/mcp-auth/users", `[]`, 400, "want a JSON object"},
		{"add two values", "POST", "/mcp-auth/users", `{"username":"dan","password":"dan password"} {}`, 400, "more than one JSON value"},
		{"add not json", "POST", "/mcp-auth/users", `username=dan`, 400, "request body"},
		// encoding/json keeps the last of repeated names and matches
		// names without case: what the operator's tooling and this
		// server read would differ.
		{"add name twice", "POST", "/mcp-auth/users", `{"username":"dan","password":"dan password","username":"alice"}`, 400, "a member name is repeated"},
		{"add name in two cases", "POST", "/mcp-auth/users", `{"username":"dan","password":"dan password","Password":"other password"}`, 400, "a member name is repeated, or differs from a known one only in case"},
		{"add name in another case", "POST", "/mcp-auth/users", `{"USERNAME":"dan","password":"dan password"}`, 400, "a member name is repeated, or differs from a known one only in case"},
		// A fault the strict reader stops at and encoding/json lets pass
		// (a lone surrogate, invalid UTF-8: it reads U+FFFD) must not
		// leave the names after it unchecked.
		{"add name twice after a lone surrogate", "POST", "/mcp-auth/users", `{"name":"\udc00","username":"dan","password":"dan password","username":"erin"}`, 400, "request body"},
		{"add name twice after invalid UTF-8", "POST", "/mcp-auth/users", "{\"name\":\"\xff\",\"username\":\"dan\",\"password\":\"dan password\",\"username\":\"erin\"}", 400, "request body"},
		{"refusals added nothing", "GET", "/mcp-auth/users/dan", "", 404, ""},
		{"refusals added no other", "GET", "/mcp-auth/users/erin", "", 404, ""},
		{"show", "GET", "/mcp-auth/users/bob", "", 200, `"name":"Bob"`},
		{"show unknown", "GET", "/mcp-auth/users/zed", "", 404, "not found"},
		{"set password", "PUT", "/mcp-auth/users/bob/password", `{"password":"new password"}`, 204, ""},
		{"set password short", "PUT", "/mcp-auth/users/bob/password", `{"password":"new"}`, 400, "at least 8 characters"},
		{"set password config user", "PUT", "/mcp-auth/users/alice/password", `{"password":"new password"}`, 409, "Caddyfile"},
		{"set password unknown", "PUT", "/mcp-auth/users/zed/password", `{"password":"new password"}`, 404, ""},
		{"set password empty", "PUT", "/mcp-auth/users/bob/password", `{}`, 400, ""},
		{"set password costly hash", "PUT", "/mcp-auth/users/bob/password", `{"password_hash":"` + costly + `"}`, 400, "bcrypt cost 20 is above"},
		{"remove", "DELETE", "/mcp-auth/users/bob", "", 204, ""},
		{"remove again", "DELETE", "/mcp-auth/users/bob", "", 404, ""},
		{"remove config user", "DELETE", "/mcp-auth/users/alice", "", 409, ""},
		{"method not allowed", "PATCH", "/mcp-auth/users", "", 405, ""},
		{"HEAD not allowed", "HEAD", "/mcp-auth/users", "", 405, ""},
		{"unknown path", "GET", "/mcp-auth/users/bob/x/y", "", 404, "no such resource"},
		{"empty name", "GET", "/mcp-auth/users/", "", 404, "no such resource"},
		{"unclean path", "GET", "/mcp-auth/users/x/../carol", "", 404, "no such resource"},
		{"root", "GET", "/mcp-auth/", "", 404, "no such resource"},
		{"list after", "GET", "/mcp-auth/users", "", 200, `"username":"carol"`},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
	u, err := iss.dir.lookupUser(t.Context(), "carol")
	if err != nil || u.PasswordHash != hash {
		t.Errorf("lookupUser(carol) = %+v, %v, want the hash sent", u, err)
	}
}

func TestAdminAllowHeader(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	for _, tt := range []struct{ method, path, want string }{
		{"PATCH", "/mcp-auth/users", "GET, POST"},
		{"POST", "/mcp-auth/users/bob", "DELETE, GET"},
		{"PATCH", "/mcp-auth/clients/app", "DELETE, GET, PUT"},
		{"GET", "/mcp-auth/users/bob/password", "PUT"},
		{"GET", "/mcp-auth/keys/rotate", "POST"},
	} {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Allow"); resp.StatusCode != 405 || got != tt.want {
			t.Errorf("%s %s = %d, Allow %q, want 405, Allow %q", tt.method, tt.path, resp.StatusCode, got, tt.want)
		}
	}
}

// TestAdminContentType: JSON is read with or without a Content-Type; any
// other type is refused with a message saying what to send.
func TestAdminContentType(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	for _, tt := range []struct {
		name, contentType, user string
		wantStatus              int
		wantBody                string
	}{
		{"none", "", "u1", 201, `"username":"u1"`},
		{"json with charset", "application/json; charset=utf-8", "u2", 201, `"username":"u2"`},
		{"form, as curl -d sends", "application/x-www-form-urlencoded", "u3", 415, "Content-Type: application/json"},
		{"text", "text/plain", "u4", 415, "send a JSON body"},
		{"malformed", "application/json;;", "u5", 415, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"username":"` + tt.user + `","password":"long enough"}`
			req, _ := http.NewRequest("POST", srv.URL+"/mcp-auth/users", strings.NewReader(body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			doAPI(t, srv, req, tt.wantStatus, tt.wantBody)
			_, err := iss.dir.lookupUser(t.Context(), tt.user)
			if created := err == nil; created != (tt.wantStatus == 201) {
				t.Errorf("user %s created = %v, want %v", tt.user, created, tt.wantStatus == 201)
			}
		})
	}

	// Changes without a body are held to it too (README audit s13-readme
	// B): a form type is refused and changes nothing; none passes.
	keys := func() int { return signingKeyCount(t, iss) }
	before := keys()
	for _, tt := range []struct{ method, path string }{
		{"POST", "/mcp-auth/keys/rotate"},
		{"DELETE", "/mcp-auth/users/u1"},
		{"PUT", "/mcp-auth/users/u1/password"},
	} {
		req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		doAPI(t, srv, req, 415, "send a JSON body")
	}
	if n := keys(); n != before {
		t.Errorf("a refused key rotation changed the keys: %d, were %d", n, before)
	}
	if _, err := iss.dir.lookupUser(t.Context(), "u1"); err != nil {
		t.Errorf("a refused removal removed the user: %v", err)
	}
	req, _ := http.NewRequest("POST", srv.URL+"/mcp-auth/keys/rotate", nil)
	doAPI(t, srv, req, 200, `"kid"`)
	if n := keys(); n != before+1 {
		t.Errorf("keys after a rotation: %d, want %d", n, before+1)
	}
}

// signingKeyCount is how many signing keys iss's store holds.
func signingKeyCount(t *testing.T, iss *Issuer) int {
	t.Helper()
	var n int
	if err := iss.store.View(t.Context(), func(tx store.Tx) error {
		all, err := keysIn(tx).all()
		n = len(all)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAdminMinPasswordLength(t *testing.T) {
	iss, _ := newAdminIssuer(t, func(c *Config) { c.MinPasswordLength = 12 })
	srv := adminServer(t, iss)
	runAPI(t, srv, apiCase{"eleven", "POST", "/mcp-auth/users", `{"username":"dan","password":"12345678901"}`, 400, "at least 12 characters"})
	runAPI(t, srv, apiCase{"twelve", "POST", "/mcp-auth/users", `{"username":"dan","password":"123456789012"}`, 201, ""})
}

func TestAdminClients(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)

	var created ClientView
	body := runAPI(t, srv, apiCase{"add confidential", "POST", "/mcp-auth/clients",
		`{"client_id":"svc","grant_types":["client_credentials"],"scopes":["read"]}`, 201, `"client_secret"`})
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.ClientSecret == "" || created.AuthMethod != "client_secret_basic" {
		t.Fatalf("POST /mcp-auth/clients = %s, %v, want a client_secret_basic client with a secret", body, err)
	}
	// The secret returned once is the one the issuer accepts.
	if got := clientCredentialsStatus(t, iss, "svc", created.ClientSecret); got != http.StatusOK {
		t.Errorf("token request with the generated secret = %d, want 200", got)
	}

	steps := []apiCase{
		{"add public", "POST", "/mcp-auth/clients", `{"client_id":"cli","public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 201, `"token_endpoint_auth_method":"none"`},
		{"add existing", "POST", "/mcp-auth/clients", `{"client_id":"svc"}`, 409, ""},
		{"add config client", "POST", "/mcp-auth/clients", `{"client_id":"configured","public":true}`, 409, ""},
		{"add public with method", "POST", "/mcp-auth/clients", `{"client_id":"x","public":true,"token_endpoint_auth_method":"client_secret_post"}`, 400, "auth method is none"},
		{"add unknown method", "POST", "/mcp-auth/clients", `{"client_id":"x","token_endpoint_auth_method":"tls_client_auth"}`, 400, "tls_client_auth"},
		{"add key client without keys", "POST", "/mcp-auth/clients", `{"client_id":"x","token_endpoint_auth_method":"private_key_jwt"}`, 400, ""},
		{"add no id", "POST", "/mcp-auth/clients", `{"public":true}`, 400, "client_id is required"},
		{"add resource server", "POST", "/mcp-auth/clients", `{"client_id":"rs","introspect":true}`, 201, `"introspect":true`},
		{"show resource server", "GET", "/mcp-auth/clients/rs", "", 200, `"introspect":true`},
		{"add public resource server", "POST", "/mcp-auth/clients", `{"client_id":"x","public":true,"introspect":true}`, 400, "introspect"},
		{"add requiring PAR", "POST", "/mcp-auth/clients", `{"client_id":"par","public":true,"redirect_uris":["http://127.0.0.1/cb"],"require_pushed_authorization_requests":true}`, 201, `"require_pushed_authorization_requests":true`},
		{"show requiring PAR", "GET", "/mcp-auth/clients/par", "", 200, `"require_pushed_authorization_requests":true`},
		{"add requiring PAR not a boolean", "POST", "/mcp-auth/clients", `{"client_id":"par2","public":true,"redirect_uris":["http://127.0.0.1/cb"],"require_pushed_authorization_requests":"yes"}`, 400, ""},
		{"add requiring DPoP", "POST", "/mcp-auth/clients", `{"client_id":"dpop","public":true,"redirect_uris":["http://127.0.0.1/cb"],"dpop_bound_access_tokens":true}`, 201, `"dpop_bound_access_tokens":true`},
		{"show requiring DPoP", "GET", "/mcp-auth/clients/dpop", "", 200, `"dpop_bound_access_tokens":true`},
		{"add requiring DPoP not a boolean", "POST", "/mcp-auth/clients", `{"client_id":"dpop2","public":true,"redirect_uris":["http://127.0.0.1/cb"],"dpop_bound_access_tokens":"yes"}`, 400, ""},
		{"add pinning its assertions' algorithm", "POST", "/mcp-auth/clients", `{"client_id":"pinned","token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://app.example.com/jwks","token_endpoint_auth_signing_alg":"ES384"}`, 201, `"token_endpoint_auth_signing_alg":"ES384"`},
		{"show pinning its assertions' algorithm", "GET", "/mcp-auth/clients/pinned", "", 200, `"token_endpoint_auth_signing_alg":"ES384"`},
		{"add pinning HS256", "POST", "/mcp-auth/clients", `{"client_id":"x","token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://app.example.com/jwks","token_endpoint_auth_signing_alg":"HS256"}`, 400, "token_endpoint_auth_signing_alg must be one of"},
		{"add pinning an algorithm with a secret", "POST", "/mcp-auth/clients", `{"client_id":"x","token_endpoint_auth_signing_alg":"ES256"}`, 400, "only for private_key_jwt"},
		{"list", "GET", "/mcp-auth/clients", "", 200, `"client_id":"cli"`},
		{"show", "GET", "/mcp-auth/clients/svc", "", 200, `"grant_types":["client_credentials"]`},
		{"show unknown", "GET", "/mcp-auth/clients/nope", "", 404, ""},
		{"rotate public", "POST", "/mcp-auth/clients/cli/secret", "", 400, "does not authenticate with a secret"},
		{"rotate config client", "POST", "/mcp-auth/clients/configured/secret", "", 409, ""},
		{"rotate unknown", "POST", "/mcp-auth/clients/nope/secret", "", 404, ""},
		{"remove", "DELETE", "/mcp-auth/clients/cli", "", 204, ""},
		{"remove again", "DELETE", "/mcp-auth/clients/cli", "", 404, ""},
		{"method not allowed", "PATCH", "/mcp-auth/clients/svc", "", 405, ""},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
	// What /authorize reads (TestAuthorizePARRequiredByClient).
	if c, err := iss.dir.lookupClient(t.Context(), "par"); err != nil || !c.RequirePushedAuthorizationRequests {
		t.Errorf("client par = %+v, %v; want it to require PAR", c, err)
	}
	runAPI(t, srv, apiCase{"update without PAR", "PUT", "/mcp-auth/clients/par", `{"public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 200, ""})
	if c, err := iss.dir.lookupClient(t.Context(), "par"); err != nil || c.RequirePushedAuthorizationRequests {
		t.Errorf("client par after an update without it = %+v, %v; want PAR not required", c, err)
	}
	// A client added with dpop_bound_access_tokens gets no token without
	// a DPoP proof (RFC 9449 section 5.2); an update without it lifts
	// that.
	var bound ClientView
	body = runAPI(t, srv, apiCase{"add confidential requiring DPoP", "POST", "/mcp-auth/clients",
		`{"client_id":"svc-dpop","grant_types":["client_credentials"],"scopes":["read"],"dpop_bound_access_tokens":true}`, 201, `"dpop_bound_access_tokens":true`})
	if err := json.Unmarshal([]byte(body), &bound); err != nil || bound.ClientSecret == "" {
		t.Fatalf("POST svc-dpop = %s, %v", body, err)
	}
	if got := clientCredentialsStatus(t, iss, "svc-dpop", bound.ClientSecret); got != http.StatusBadRequest {
		t.Errorf("token request of a client requiring DPoP, without a proof = %d, want 400", got)
	}
	runAPI(t, srv, apiCase{"update without DPoP", "PUT", "/mcp-auth/clients/svc-dpop", `{"grant_types":["client_credentials"],"scopes":["read"]}`, 200, ""})
	if got := clientCredentialsStatus(t, iss, "svc-dpop", bound.ClientSecret); got != http.StatusOK {
		t.Errorf("token request after an update without dpop_bound_access_tokens = %d, want 200", got)
	}
	for _, body := range []string{runAPI(t, srv, apiCase{"list", "GET", "/mcp-auth/clients", "", 200, ""}),
		runAPI(t, srv, apiCase{"show", "GET", "/mcp-auth/clients/svc", "", 200, ""})} {
		if strings.Contains(body, "client_secret\"") {
			t.Errorf("client listing %s shows a secret", body)
		}
	}

	body = runAPI(t, srv, apiCase{"rotate", "POST", "/mcp-auth/clients/svc/secret", "", 200, `"client_secret"`})
	var rotated map[string]string
	if err := json.Unmarshal([]byte(body), &rotated); err != nil || rotated["client_secret"] == created.ClientSecret {
		t.Fatalf("rotate = %s, %v, want a new secret", body, err)
	}
	if got := clientCredentialsStatus(t, iss, "svc", created.ClientSecret); got != http.StatusUnauthorized {
		t.Errorf("token request with the old secret = %d, want 401", got)
	}
	if got := clientCredentialsStatus(t, iss, "svc", rotated["client_secret"]); got != http.StatusOK {
		t.Errorf("token request with the rotated secret = %d, want 200", got)
	}
}

// TestAdminClientRedirectURIs: an added client's redirect URIs follow the
// rules of Dynamic Client Registration, and a refused one stores nothing.
func TestAdminClientRedirectURIs(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	for _, tt := range []struct {
		name, uri  string
		wantStatus int
		wantBody   string
	}{
		{"https", "https://app.example.com/cb", 201, ""},
		{"loopback http", "http://127.0.0.1:9000/cb", 201, ""},
		{"localhost http", "http://localhost/cb", 201, ""},
		{"private-use scheme", "com.example.app:/cb", 201, ""},
		{"http on a public host", "http://app.example.com/cb", 400, "http is allowed only for loopback hosts"},
		{"wildcard", "https://app.example.com/*", 400, "wildcards"},
		{"fragment", "https://app.example.com/cb#x", 400, "fragments"},
		{"relative", "/cb", 400, "not an absolute URI"},
		{"userinfo", "https://user@app.example.com/cb", 400, "userinfo"},
		{"custom scheme without a dot", "myapp:/cb", 400, "reverse-DNS"},
		{"javascript", "javascript:alert(1)", 400, "reverse-DNS"},
		{"space", "https://app.example.com/c b", 400, "whitespace"},
		{"state in the query", "https://app.example.com/cb?state=x", 400, "the authorization response adds"},
		{"a query of its own", "https://app.example.com/cb?tenant=1", 201, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := "c-" + strings.NewReplacer(" ", "-").Replace(tt.name)
			b, _ := json.Marshal(map[string]any{"client_id": id, "public": true, "redirect_uris": []string{tt.uri}})
			runAPI(t, srv, apiCase{tt.name, "POST", "/mcp-auth/clients", string(b), tt.wantStatus, tt.wantBody})
			status := http.StatusOK
			if tt.wantStatus != 201 {
				status = http.StatusNotFound
			}
			runAPI(t, srv, apiCase{"show", "GET", "/mcp-auth/clients/" + id, "", status, ""})
		})
	}
}

// TestAdminClientPostLogoutRedirectURIs: a client's post-logout redirect
// URIs are added, shown and replaced through the admin API under the
// rules of its redirect URIs (for its kind: a web client's are https on a
// public host), and a refused one stores nothing.
func TestAdminClientPostLogoutRedirectURIs(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	for _, tt := range []struct {
		name, body string
		wantStatus int
		wantBody   string
	}{
		{"http on a public host", `{"client_id":"c1","public":true,"redirect_uris":["https://app.example.com/cb"],"post_logout_redirect_uris":["http://app.example.com/bye"]}`, 400, "post_logout_redirect_uris: redirect URI"},
		{"loopback for a web client", `{"client_id":"c2","public":true,"redirect_uris":["https://app.example.com/cb"],"post_logout_redirect_uris":["http://127.0.0.1/bye"]}`, 400, "web clients must use https"},
		{"fragment", `{"client_id":"c3","public":true,"post_logout_redirect_uris":["https://app.example.com/bye#x"]}`, 400, "fragments"},
		{"misspelt member", `{"client_id":"c4","public":true,"post_logout_redirect_uri":["https://app.example.com/bye"]}`, 400, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			runAPI(t, srv, apiCase{tt.name, "POST", "/mcp-auth/clients", tt.body, tt.wantStatus, tt.wantBody})
			var req NewClientRequest
			_ = json.Unmarshal([]byte(tt.body), &req)
			runAPI(t, srv, apiCase{"nothing stored", "GET", "/mcp-auth/clients/" + req.ID, "", http.StatusNotFound, ""})
		})
	}
	runAPI(t, srv, apiCase{"add", "POST", "/mcp-auth/clients",
		`{"client_id":"rp","public":true,"redirect_uris":["https://app.example.com/cb"],"post_logout_redirect_uris":["https://app.example.com/bye","https://app.example.com/bye?lang=en"]}`,
		201, `"post_logout_redirect_uris":["https://app.example.com/bye","https://app.example.com/bye?lang=en"]`})
	runAPI(t, srv, apiCase{"show", "GET", "/mcp-auth/clients/rp", "", 200, `"post_logout_redirect_uris":["https://app.example.com/bye","https://app.example.com/bye?lang=en"]`})
	runAPI(t, srv, apiCase{"replace", "PUT", "/mcp-auth/clients/rp",
		`{"public":true,"redirect_uris":["https://app.example.com/cb"],"post_logout_redirect_uris":["https://app.example.com/later"]}`,
		200, `"post_logout_redirect_uris":["https://app.example.com/later"]`})
	c, err := iss.dir.lookupClient(context.Background(), "rp")
	if err != nil || !slices.Equal(c.PostLogoutRedirectURIs, []string{"https://app.example.com/later"}) {
		t.Errorf("stored client = %+v, %v, want post-logout redirect URIs [https://app.example.com/later]", c, err)
	}
}

// TestAdminUnknownScopes: a client or agent the admin API adds may hold
// only scopes some resource offers (or OpenID Connect's): one written
// with a typo would hold nothing by it. A refusal names the scope and
// what is offered, and stores nothing.
func TestAdminUnknownScopes(t *testing.T) {
	iss, _ := newAdminIssuer(t, func(c *Config) {
		c.Resources = append(c.Resources, Resource{URL: "https://files.example.com/mcp", Scopes: []string{"files:read"}})
	})
	iss.AddResource(Resource{URL: "https://gw.example.com/mcp", Scopes: []string{"tools:call"}})
	srv := adminServer(t, iss)
	for _, tt := range []struct {
		name       string
		scopes     []string
		wantStatus int
	}{
		{"a configured resource's", []string{"read", "files:read"}, 201},
		{"a registered resource's", []string{"tools:call"}, 201},
		{"OpenID Connect's", []string{"openid", "offline_access"}, 201},
		{"none", nil, 201},
		{"unknown", []string{"read", "wirte"}, 400},
		{"another case", []string{"Read"}, 400},
		{"empty", []string{""}, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := strings.NewReplacer(" ", "-", "'", "").Replace(tt.name)
			want := ""
			if tt.wantStatus == 400 {
				want = "is offered by no resource (offered: files:read read tools:call write)"
			}
			for _, kind := range []string{"client", "agent"} {
				req := map[string]any{kind + "_id": kind + "-" + id}
				if tt.scopes != nil { // null is refused (TestAdminEmptyRestrictionRefused)
					req["scopes"] = tt.scopes
				}
				b, _ := json.Marshal(req)
				runAPI(t, srv, apiCase{tt.name, "POST", "/mcp-auth/" + kind + "s", string(b), tt.wantStatus, want})
				status := http.StatusOK
				if tt.wantStatus != 201 {
					status = http.StatusNotFound
				}
				runAPI(t, srv, apiCase{"show", "GET", "/mcp-auth/" + kind + "s/" + kind + "-" + id, "", status, ""})
			}
		})
	}
}

// TestAdminUnknownResources: a client the admin API adds or replaces may
// be restricted only to resources this issuer issues tokens for (a
// `resource`, or one an mcp_gateway registered), compared as a token
// request's resource is: one written wrong would allow nothing, as a
// configured client's does not load (TestConfigErrorsAtLoad). Another
// spelling of a declared resource (a trailing slash, the case of the
// scheme and host) is that resource. A refusal names the resource and
// those declared, and stores nothing.
func TestAdminUnknownResources(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	iss.AddResource(Resource{URL: "https://gw.example.com/mcp", Scopes: []string{"tools:call"}})
	srv := adminServer(t, iss)
	for _, tt := range []struct {
		name       string
		resources  string
		wantStatus int
	}{
		{"a configured resource", `["` + adminResource + `"]`, 201},
		{"a registered resource", `["https://gw.example.com/mcp"]`, 201},
		{"another spelling", `["HTTPS://MCP.example.com:443/mcp/"]`, 201},
		{"a typo", `["` + adminResource + `", "https://mcp.example.com/mpc"]`, 400},
		{"another host", `["https://gw.example.org/mcp"]`, 400},
		{"another path", `["https://gw.example.com/mcp/x"]`, 400},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := strings.ReplaceAll(tt.name, " ", "-")
			want := ""
			if tt.wantStatus == 400 {
				want = "is no resource of this issuer (resources: https://gw.example.com/mcp https://mcp.example.com/mcp)"
			}
			body := `{"client_id":"` + id + `","grant_types":["client_credentials"],"resources":` + tt.resources + `}`
			runAPI(t, srv, apiCase{tt.name, "POST", "/mcp-auth/clients", body, tt.wantStatus, want})
			status := http.StatusOK
			if tt.wantStatus != 201 {
				status = http.StatusNotFound
			}
			runAPI(t, srv, apiCase{"show", "GET", "/mcp-auth/clients/" + id, "", status, ""})
			// A replacement is checked alike, and leaves the client as it was.
			runAPI(t, srv, apiCase{"add plain", "POST", "/mcp-auth/clients", `{"client_id":"put-` + id + `","grant_types":["client_credentials"]}`, 201, ""})
			runAPI(t, srv, apiCase{tt.name + " by PUT", "PUT", "/mcp-auth/clients/put-" + id,
				`{"grant_types":["client_credentials"],"resources":` + tt.resources + `}`, map[int]int{201: 200, 400: 400}[tt.wantStatus], want})
			c, err := iss.dir.lookupClient(context.Background(), "put-"+id)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(c.Resources) > 0; got != (tt.wantStatus == 201) {
				t.Errorf("after PUT, client resources = %q", c.Resources)
			}
		})
	}
}

// clientCredentialsStatus asks iss for a token and returns the status.
func clientCredentialsStatus(t *testing.T, iss *Issuer, id, secret string) int {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {adminResource}, "scope": {"read"}}
	req := httptest.NewRequest("POST", "http://127.0.0.1:8080/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	rec := httptest.NewRecorder()
	iss.ServeHTTP(rec, req)
	return rec.Code
}

func TestAdminKeys(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	body := runAPI(t, srv, apiCase{"rotate", "POST", "/mcp-auth/keys/rotate", "", 200, `"kid"`})
	var res map[string]string
	if err := json.Unmarshal([]byte(body), &res); err != nil || res["kid"] == "" {
		t.Errorf("POST /mcp-auth/keys/rotate = %s, %v, want a kid", body, err)
	}
	runAPI(t, srv, apiCase{"rotate with GET", "GET", "/mcp-auth/keys/rotate", "", 405, ""})
}

func TestAdminAgents(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	body := runAPI(t, srv, apiCase{"add with secret", "POST", "/mcp-auth/agents",
		`{"agent_id":"planner","name":"Planner","allowed_clients":["configured"],"scopes":["read"],"max_depth":1}`, 201, `"secret"`})
	var created AgentView
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.Secret == "" || created.Source != "admin" {
		t.Fatalf("POST /mcp-auth/agents = %s, %v, want an admin agent with a secret", body, err)
	}
	steps := []apiCase{
		{"add with jwks_uri", "POST", "/mcp-auth/agents", `{"agent_id":"keyed","jwks_uri":"https://agent.example.com/jwks.json"}`, 201, `"jwks_uri":"https://agent.example.com/jwks.json"`},
		{"add existing", "POST", "/mcp-auth/agents", `{"agent_id":"planner"}`, 409, ""},
		{"add with a client's id", "POST", "/mcp-auth/agents", `{"agent_id":"configured"}`, 400, "a client has this id"},
		{"add bad depth", "POST", "/mcp-auth/agents", `{"agent_id":"deep","max_depth":-1}`, 400, "max_depth"},
		// 0 read as none given, the issuer's limit (5): written to allow
		// no delegation, it allowed the most, as in a configuration.
		{"add depth 0", "POST", "/mcp-auth/agents", `{"agent_id":"shallow","max_depth":0}`, 400, "max_depth 0: want at least 1"},
		{"depth 0 added nothing", "GET", "/mcp-auth/agents/shallow", "", 404, ""},
		{"add no id", "POST", "/mcp-auth/agents", `{}`, 400, "agent_id is required"},
		{"add depth in two cases", "POST", "/mcp-auth/agents", `{"agent_id":"deep","max_depth":1,"Max_Depth":9}`, 400, "a member name is repeated, or differs from a known one only in case"},
		{"add scopes in another case", "POST", "/mcp-auth/agents", `{"agent_id":"deep","Scopes":["read"]}`, 400, "a member name is repeated, or differs from a known one only in case"},
		{"refusals added nothing", "GET", "/mcp-auth/agents/deep", "", 404, ""},
		{"list", "GET", "/mcp-auth/agents", "", 200, `"agent_id":"keyed"`},
		{"show", "GET", "/mcp-auth/agents/planner", "", 200, `"allowed_clients":["configured"]`},
		{"show unknown", "GET", "/mcp-auth/agents/nope", "", 404, ""},
		{"disable", "POST", "/mcp-auth/agents/planner/disable", "", 204, ""},
		{"show disabled", "GET", "/mcp-auth/agents/planner", "", 200, `"disabled":true`},
		{"enable", "POST", "/mcp-auth/agents/planner/enable", "", 204, ""},
		{"rotate keyed", "POST", "/mcp-auth/agents/keyed/secret", "", 400, "does not authenticate with a secret"},
		{"rotate unknown", "POST", "/mcp-auth/agents/nope/secret", "", 404, ""},
		{"remove", "DELETE", "/mcp-auth/agents/keyed", "", 204, ""},
		{"remove again", "DELETE", "/mcp-auth/agents/keyed", "", 404, ""},
		{"disable with GET", "GET", "/mcp-auth/agents/planner/disable", "", 405, ""},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
	body = runAPI(t, srv, apiCase{"rotate", "POST", "/mcp-auth/agents/planner/secret", "", 200, `"secret"`})
	var rotated map[string]string
	if err := json.Unmarshal([]byte(body), &rotated); err != nil || rotated["secret"] == "" || rotated["secret"] == created.Secret {
		t.Errorf("rotate = %s, %v, want a new secret", body, err)
	}
	if strings.Contains(runAPI(t, srv, apiCase{"list", "GET", "/mcp-auth/agents", "", 200, ""}), `"secret"`) {
		t.Error("agent listing shows a secret")
	}
}

// GET /backup answers a bbolt file that opens as the issuer's store, with
// what was there when it was taken; a store that cannot be copied is told
// apart in words.
func TestAdminBackup(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	runAPI(t, srv, apiCase{"add user", "POST", "/mcp-auth/users", `{"username":"bob","password":"bob password"}`, 201, ""})

	resp, err := srv.Client().Get(srv.URL + "/mcp-auth/backup")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("GET /backup = %d %v", resp.StatusCode, resp.Header)
	}
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bolt.Check(path); err != nil {
		t.Fatalf("Check(backup) = %v", err)
	}
	st, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	restored, err := New(iss.cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restored.dir.lookupUser(t.Context(), "bob"); err != nil {
		t.Errorf("restored: lookupUser(bob) = %v, want the user added before the backup", err)
	}

	mem, err := New(iss.cfg, newMemStore())
	if err != nil {
		t.Fatal(err)
	}
	runAPI(t, adminServer(t, mem), apiCase{"memory", "GET", "/mcp-auth/backup", "", 501, "memory storage keeps nothing across restarts"})
	// README (Admin API, backup): 501 with memory or postgres storage.
	pg, err := postgres.Open(t.Context(), pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	onPG, _ := newAdminIssuerOn(t, pg, nil)
	runAPI(t, adminServer(t, onPG), apiCase{"postgres", "GET", "/mcp-auth/backup", "", 501, "back up postgres storage with pg_dump"})
	runAPI(t, srv, apiCase{"POST", "POST", "/mcp-auth/backup", "", 405, ""})
}

// Errors speak of users, clients and agents, never of the storage's
// buckets, keys or sentinel errors, and read the same on bbolt and
// PostgreSQL; a storage failure says where the details are.
func TestAdminErrorMessages(t *testing.T) {
	t.Run("bolt", func(t *testing.T) {
		st, err := bolt.Open(filepath.Join(t.TempDir(), "mcp-auth.db"), bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		testAdminErrorMessages(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		st, err := postgres.Open(t.Context(), pgtest.NewDatabase(t), postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		testAdminErrorMessages(t, st)
	})
}

func testAdminErrorMessages(t *testing.T, st store.Store) {
	iss, _ := newAdminIssuerOn(t, st, func(c *Config) {
		c.Agents = []Agent{{ID: "cfg-agent", SecretHash: "sha256:" + strings.Repeat("0", 64)}}
	})
	srv := adminServer(t, iss)
	runAPI(t, srv, apiCase{"add bob", "POST", "/mcp-auth/users", `{"username":"bob","password":"bob password"}`, 201, ""})
	tests := []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", "/mcp-auth/users/zed", "", 404, `user "zed" not found`},
		{"DELETE", "/mcp-auth/users/zed", "", 404, `user "zed" not found`},
		{"PUT", "/mcp-auth/users/zed/password", `{"password":"long enough"}`, 404, `user "zed" not found`},
		{"POST", "/mcp-auth/users", `{"username":"bob","password":"bob password"}`, 409, `user "bob" already exists`},
		{"DELETE", "/mcp-auth/users/alice", "", 409, `user "alice": declared in the Caddyfile; change it there`},
		{"GET", "/mcp-auth/clients/nope", "", 404, `client "nope" not found`},
		{"DELETE", "/mcp-auth/clients/nope", "", 404, `client "nope" not found`},
		{"POST", "/mcp-auth/clients/nope/secret", "", 404, `client "nope" not found`},
		{"DELETE", "/mcp-auth/clients/configured", "", 409, `client "configured": declared in the Caddyfile; change it there`},
		{"GET", "/mcp-auth/agents/nope", "", 404, `agent "nope" not found`},
		{"DELETE", "/mcp-auth/agents/nope", "", 404, `agent "nope" not found`},
		{"POST", "/mcp-auth/agents/nope/disable", "", 404, `agent "nope" not found`},
		{"POST", "/mcp-auth/agents/nope/enable", "", 404, `agent "nope" not found`},
		{"POST", "/mcp-auth/agents/nope/secret", "", 404, `agent "nope" not found`},
		{"POST", "/mcp-auth/agents", `{"agent_id":"cfg-agent"}`, 409, `agent "cfg-agent" already exists`},
		// Not read without the pair URL.Query drops (it would list every
		// resource's pins).
		{"GET", "/mcp-auth/tools?resource=https://r.example/mcp;tool=x", "", 400, "the query could not be read: invalid semicolon separator in query"},
		{"GET", "/mcp-auth/tools?resource=%zz", "", 400, `the query could not be read: invalid URL escape "%zz"`},
		// Neither the store's key nor its words: the answers of bbolt and
		// PostgreSQL storage are the same.
		{"GET", "/mcp-auth/tools?resource=" + adminResource + "&tool=nope", "", 404, `tool "nope" of ` + adminResource + `: no pin or pending definition`},
		{"POST", "/mcp-auth/tools/approve", `{"resource":"` + adminResource + `","tool":"nope"}`, 404, `tool "nope" of ` + adminResource + `: no pin or pending definition`},
		{"POST", "/mcp-auth/tools/reject", `{"resource":"` + adminResource + `","tool":"nope"}`, 404, `tool "nope" of ` + adminResource + `: no pin or pending definition`},
		{"POST", "/mcp-auth/tools/forget", `{"resource":"` + adminResource + `","tool":"nope"}`, 404, `tool "nope" of ` + adminResource + `: no pin or pending definition`},
		{"POST", "/mcp-auth/keys/rotate", `{"withdraw":"nokid"}`, 404, `signing key "nokid": no key this server publishes`},
	}
	check := func(method, path, body string, status int, want string) {
		t.Helper()
		got := runAPI(t, srv, apiCase{method + " " + path, method, path, body, status, ""})
		var e map[string]string
		if err := json.Unmarshal([]byte(got), &e); err != nil || e["error"] != want {
			t.Errorf("%s %s error = %s, want %q", method, path, got, want)
		}
		for _, leak := range []string{"bolt", "postgres", "store:", "users/", "clients/", "agents/", "tool_pins", `\u0000`} {
			if strings.Contains(got, leak) {
				t.Errorf("%s %s error = %s, shows the storage (%q)", method, path, got, leak)
			}
		}
	}
	for _, tt := range tests {
		check(tt.method, tt.path, tt.body, tt.status, tt.want)
	}
	if err := iss.store.Close(); err != nil {
		t.Fatal(err)
	}
	// A closed store (a replaced configuration's, while its server
	// finishes a request) is busy, not broken: retry.
	check("GET", "/mcp-auth/users", "", 503, `storage temporarily unavailable, nothing was changed; retry later (details in Caddy's log, message "admin API")`)
}

// TestAdminUserInProviderNamespace: the admin API refuses a local user
// whose name falls in an identity provider's namespace ("corp:..."), so a
// local account can never take a provider user's sub.
func TestAdminUserInProviderNamespace(t *testing.T) {
	iss, _ := newAdminIssuer(t, func(c *Config) {
		c.IdentityProviders = []IdentityProvider{{Name: "corp", Issuer: "https://idp.example", ClientID: "c",
			GroupMap: map[string][]string{"*": {"users"}}}}
	})
	srv := adminServer(t, iss)
	for _, tt := range []apiCase{
		{"in namespace", "POST", "/mcp-auth/users", `{"username":"corp:alice","password":"long password"}`, 400, "corp"},
		{"other prefix", "POST", "/mcp-auth/users", `{"username":"corpx:alice","password":"long password"}`, 201, ""},
		{"client in namespace", "POST", "/mcp-auth/clients", `{"client_id":"corp:bob","grant_types":["client_credentials"]}`, 400, "belong to identity provider corp's users"},
		{"agent in namespace", "POST", "/mcp-auth/agents", `{"agent_id":"corp:bob"}`, 400, "belong to identity provider corp's users"},
	} {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
	if _, err := iss.dir.lookupUser(t.Context(), "corp:alice"); err == nil {
		t.Error("corp:alice was created")
	}
}

// TestPrincipalNamesApart: a user never has a client's or agent's id, nor
// the reverse, whether configured or added at runtime, nor a client or
// agent an identity provider's user's name: a token's sub is either, and
// policies that compare it ({token.sub} argument rules, forwarded
// identity headers) must not take one for the other.
func TestPrincipalNamesApart(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	steps := []apiCase{
		{"user named as a configured client", "POST", "/mcp-auth/users", `{"username":"configured","password":"a password"}`, 400, "a client or agent has this id"},
		{"client named as a configured user", "POST", "/mcp-auth/clients", `{"client_id":"alice","grant_types":["client_credentials"]}`, 400, "a user has this name"},
		{"agent named as a configured user", "POST", "/mcp-auth/agents", `{"agent_id":"alice"}`, 400, "a user has this name"},
		{"add user bob", "POST", "/mcp-auth/users", `{"username":"bob","password":"bob password"}`, 201, ""},
		{"client named as a stored user", "POST", "/mcp-auth/clients", `{"client_id":"bob","grant_types":["client_credentials"]}`, 400, "a user has this name"},
		{"agent named as a stored user", "POST", "/mcp-auth/agents", `{"agent_id":"bob"}`, 400, "a user has this name"},
		{"add client ci", "POST", "/mcp-auth/clients", `{"client_id":"ci","grant_types":["client_credentials"]}`, 201, ""},
		{"user named as a stored client", "POST", "/mcp-auth/users", `{"username":"ci","password":"a password"}`, 400, "a client or agent has this id"},
		{"add agent planner", "POST", "/mcp-auth/agents", `{"agent_id":"planner"}`, 201, ""},
		{"user named as a stored agent", "POST", "/mcp-auth/users", `{"username":"planner","password":"a password"}`, 400, "a client or agent has this id"},
		// A client metadata document's client id is a client's for
		// whoever publishes a document there; it is never stored.
		{"user named as a client metadata document", "POST", "/mcp-auth/users", `{"username":"https://app.example/client","password":"a password"}`, 400, "a client metadata document has this id"},
		{"user named as an http client metadata document", "POST", "/mcp-auth/users", `{"username":"HTTP://127.0.0.1:3000/client","password":"a password"}`, 400, "a client metadata document has this id"},
		{"user named as a URL without a path", "POST", "/mcp-auth/users", `{"username":"https://app.example","password":"a password"}`, 201, ""},
		{"user named as a URL without a path stored", "GET", "/mcp-auth/users/https:%2F%2Fapp.example", "", 200, `"username":"https://app.example"`},
		{"no user named as a client metadata document", "GET", "/mcp-auth/users/https:%2F%2Fapp.example%2Fclient", "", 404, ""},
		{"bob unchanged", "GET", "/mcp-auth/users/bob", "", 200, `"username":"bob"`},
		{"no client bob", "GET", "/mcp-auth/clients/bob", "", 404, ""},
		{"no user ci", "GET", "/mcp-auth/users/ci", "", 404, ""},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}

	// In the configuration, and against what a store already holds.
	h, err := bcrypt.GenerateFromPassword([]byte("password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	base := iss.cfg
	for name, mutate := range map[string]func(*Config){
		"client named as a user": func(c *Config) {
			c.Clients = append(slices.Clone(c.Clients), Client{ID: "alice", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"http://127.0.0.1/cb"}})
		},
		"agent named as a user": func(c *Config) { c.Agents = append(slices.Clone(c.Agents), Agent{ID: "alice"}) },
		"client named as a stored user": func(c *Config) {
			c.Clients = append(slices.Clone(c.Clients), Client{ID: "bob", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"http://127.0.0.1/cb"}})
		},
		"user named as a stored client": func(c *Config) {
			c.Users = append(slices.Clone(c.Users), User{Username: "ci", PasswordHash: string(h)})
		},
		"user named as a stored agent": func(c *Config) {
			c.Users = append(slices.Clone(c.Users), User{Username: "planner", PasswordHash: string(h)})
		},
		"user named as a client metadata document": func(c *Config) {
			c.Users = append(slices.Clone(c.Users), User{Username: "https://app.example/client", PasswordHash: string(h)})
		},
	} {
		cfg := base
		mutate(&cfg)
		if _, err := New(cfg, iss.store); err == nil || !strings.Contains(err.Error(), "has this") {
			t.Errorf("%s: New() = %v, want the clash refused", name, err)
		}
	}
	if _, err := New(base, iss.store); err != nil {
		t.Fatalf("New(unchanged config) = %v", err)
	}
}

// TestPrincipalNamesApartStored: what an older version or a provider
// configured later could leave in the store. A stored client or agent in
// a provider's namespace, or a stored client named as a configured user,
// keeps the configuration from loading with a message that says what to
// do; a provider login never creates a user whose name a client or agent
// has.
func TestPrincipalNamesApartStored(t *testing.T) {
	corp := []IdentityProvider{{Name: "corp", Issuer: "https://idp.example", ClientID: "c", GroupMap: map[string][]string{"*": {"users"}}}}
	storeClient := func(id string) func(store.Tx) error {
		return func(tx store.Tx) error {
			return clientsIn(tx).create(&Client{ID: id, TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"http://127.0.0.1/cb"}, Source: sourceAdmin})
		}
	}
	storeAgent := func(id string) func(store.Tx) error {
		return func(tx store.Tx) error {
			return agentsIn(tx).put(&Agent{ID: id, SecretHash: "sha256:" + strings.Repeat("0", 64), Source: sourceAdmin})
		}
	}
	storeUser := func(name string) func(store.Tx) error {
		return func(tx store.Tx) error {
			return usersIn(tx).put(&User{Username: name, PasswordHash: "$2a$04$" + strings.Repeat("a", 53), Source: sourceAdmin})
		}
	}
	addClient := func(id string) func(*Config) {
		return func(c *Config) {
			c.Clients = append(slices.Clone(c.Clients), Client{ID: id, SecretHash: "sha256:" + strings.Repeat("3", 64), GrantTypes: []string{"client_credentials"}})
		}
	}
	addAgent := func(id string) func(*Config) {
		return func(c *Config) {
			c.Agents = append(slices.Clone(c.Agents), Agent{ID: id, SecretHash: "sha256:" + strings.Repeat("4", 64)})
		}
	}
	for _, tt := range []struct {
		name   string
		stored func(store.Tx) error
		mutate func(*Config) // nil: the base configuration (user alice) clashes
		want   string
	}{
		{"client in a provider's namespace", storeClient("corp:svc"), func(c *Config) { c.IdentityProviders = corp }, `stored client "corp:svc": names starting with "corp:" belong to identity_provider corp's users; remove the stored client through the admin API`},
		{"agent in a provider's namespace", storeAgent("corp:bot"), func(c *Config) { c.IdentityProviders = corp }, `stored agent "corp:bot": names starting with "corp:" belong to identity_provider corp's users; remove the stored agent through the admin API`},
		{"client named as a configured user", storeClient("alice"), nil, `user "alice": a stored client has this name; remove the stored one through the admin API`},
		{"agent named as a configured user", storeAgent("alice"), nil, `user "alice": a stored agent has this name; remove the stored one through the admin API`},
		{"user named as a configured client", storeUser("svc9"), addClient("svc9"), `client "svc9": a stored user has this name; remove the stored one through the admin API`},
		{"user named as a configured agent", storeUser("bot9"), addAgent("bot9"), `agent "bot9": a stored user has this name; remove the stored one through the admin API`},
		{"agent named as a configured client", storeAgent("svc8"), addClient("svc8"), `client "svc8": a stored agent has this name; remove the stored one through the admin API`},
		{"client named as a configured agent", storeClient("bot8"), addAgent("bot8"), `agent "bot8": a stored client has this name; remove the stored one through the admin API`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			iss, _ := newAdminIssuer(t, nil)
			if err := iss.store.Update(t.Context(), tt.stored); err != nil {
				t.Fatal(err)
			}
			if tt.mutate != nil {
				// The clash is the configuration change's.
				if _, err := New(iss.cfg, iss.store); err != nil {
					t.Fatalf("New(unchanged config) = %v", err)
				}
			}
			cfg := iss.cfg
			if tt.mutate != nil {
				tt.mutate(&cfg)
			}
			_, err := New(cfg, iss.store)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want %q", err, tt.want)
			}
		})
	}
	// A runtime entry stored before its name was configured: the
	// configuration would shadow it, and bring it back when the entry is
	// removed from it.
	t.Run("same-kind names", func(t *testing.T) {
		iss, hash := newAdminIssuer(t, nil)
		err := iss.store.Update(t.Context(), func(tx store.Tx) error {
			return errors.Join(
				usersIn(tx).put(&User{Username: "carol", PasswordHash: hash, Source: sourceAdmin}),
				clientsIn(tx).create(&Client{ID: "svc", SecretHash: "sha256:" + strings.Repeat("1", 64), TokenEndpointAuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}, Source: sourceAdmin}),
				agentsIn(tx).put(&Agent{ID: "bot", SecretHash: "sha256:" + strings.Repeat("2", 64), Source: sourceAdmin}))
		})
		if err != nil {
			t.Fatal(err)
		}
		for name, mutate := range map[string]func(*Config){
			`user "carol": one of this name is also stored`: func(c *Config) {
				c.Users = append(slices.Clone(c.Users), User{Username: "carol", PasswordHash: hash})
			},
			`client "svc": one of this name is also stored`: func(c *Config) {
				c.Clients = append(slices.Clone(c.Clients), Client{ID: "svc", SecretHash: "sha256:" + strings.Repeat("3", 64), GrantTypes: []string{"client_credentials"}})
			},
			`agent "bot": one of this name is also stored`: func(c *Config) {
				c.Agents = append(slices.Clone(c.Agents), Agent{ID: "bot", SecretHash: "sha256:" + strings.Repeat("4", 64)})
			},
		} {
			cfg := iss.cfg
			mutate(&cfg)
			if _, err := New(cfg, iss.store); err == nil || !strings.Contains(err.Error(), name) {
				t.Errorf("New = %v, want %q", err, name)
			}
		}
		if _, err := New(iss.cfg, iss.store); err != nil {
			t.Errorf("New(unchanged config) = %v", err)
		}
	})
	// A local user added before the provider existed.
	t.Run("local user in a provider's namespace", func(t *testing.T) {
		iss, hash := newAdminIssuer(t, nil)
		if err := iss.store.Update(t.Context(), func(tx store.Tx) error {
			return usersIn(tx).put(&User{Username: "corp:bob", PasswordHash: hash, Source: sourceAdmin})
		}); err != nil {
			t.Fatal(err)
		}
		cfg := iss.cfg
		cfg.IdentityProviders = corp
		want := `stored local user "corp:bob": names starting with "corp:" belong to identity_provider corp's users`
		if _, err := New(cfg, iss.store); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New = %v, want %q", err, want)
		}
	})

	// A provider login over a client's id (a store shared with an
	// instance configured otherwise) is refused and creates no user.
	iss, _ := newAdminIssuer(t, func(c *Config) { c.IdentityProviders = corp })
	if err := iss.store.Update(t.Context(), func(tx store.Tx) error {
		return clientsIn(tx).create(&Client{ID: "corp:svc", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"http://127.0.0.1/cb"}, Source: sourceAdmin})
	}); err != nil {
		t.Fatal(err)
	}
	p := &iss.cfg.IdentityProviders[0]
	if err := iss.provision(t.Context(), p, &idpIdentity{username: "corp:svc", subject: "svc", groups: []string{"users"}}, iss.now()); !errors.Is(err, errIdPRefused) {
		t.Errorf("provision(corp:svc) = %v, want refused", err)
	}
	if _, err := iss.dir.lookupUser(t.Context(), "corp:svc"); err == nil {
		t.Error("provision created user corp:svc, a client's id")
	}
}

// TestAdminChangesLogTheirTarget: every change through the admin API is
// in the security log with its action and target, the entry a create
// names in its body included, and no secret.
func TestAdminChangesLogTheirTarget(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	iss, _ := newAdminIssuer(t, func(c *Config) { c.Logger = zap.New(core) })
	srv := adminServer(t, iss)
	for _, tt := range []struct {
		apiCase
		target string
	}{
		{apiCase{"add user", "POST", "/mcp-auth/users", `{"username":"bob","password":"a long password"}`, http.StatusCreated, ""}, "bob"},
		{apiCase{"add client", "POST", "/mcp-auth/clients", `{"client_id":"ci-bot","grant_types":["client_credentials"],"scopes":["read"]}`, http.StatusCreated, ""}, "ci-bot"},
		{apiCase{"add agent", "POST", "/mcp-auth/agents", `{"agent_id":"planner"}`, http.StatusCreated, ""}, "planner"},
		{apiCase{"delete user", "DELETE", "/mcp-auth/users/bob", "", http.StatusNoContent, ""}, "bob"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs.TakeAll()
			out := runAPI(t, srv, tt.apiCase)
			changes := logs.FilterMessage("admin change").All()
			if len(changes) != 1 || changes[0].ContextMap()["target"] != tt.target {
				t.Fatalf("admin change log = %+v, want one entry with target %q", changes, tt.target)
			}
			var created map[string]any
			_ = json.Unmarshal([]byte(out), &created)
			for _, secret := range []string{"a long password", fmt.Sprint(created["client_secret"]), fmt.Sprint(created["secret"])} {
				if secret == "<nil>" {
					continue
				}
				for _, e := range changes {
					if strings.Contains(fmt.Sprint(e.ContextMap()), secret) {
						t.Errorf("admin change log %v holds a secret", e.ContextMap())
					}
				}
			}
		})
	}
}

// TestAdminConcurrentCreate: concurrent creations of one user, client or agent
// (two operators, a retrying script, two instances on one database) get
// one 201 and 409s, decided in the write's transaction, and what the 201
// answered is what the store holds: the password of that request, the
// secret it returned. Before, every user creation answered 201 (the name
// was checked before the bcrypt and the write, which replaced), and of
// two clients' secrets only the last one stored worked (review s13-ops
// F3); agents were left so until review s16-admin F1.
func TestAdminConcurrentCreate(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	// The default cost, as in production: the window the old check left
	// open was the bcrypt of the password.
	srv := httptest.NewServer(http.StripPrefix("/mcp-auth", iss.newAdmin(bcrypt.DefaultCost)))
	t.Cleanup(srv.Close)
	create := func(path string, body func(i int) string) (winner int, answer string) {
		const n = 4
		codes, answers := make([]int, n), make([]string, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body(i)))
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				codes[i], answers[i] = resp.StatusCode, string(b)
			})
		}
		wg.Wait()
		winner = -1
		for i, c := range codes {
			switch {
			case c == http.StatusCreated && winner < 0:
				winner = i
			case c != http.StatusConflict:
				t.Errorf("POST %s: answers %v, want one 201 and the others 409", path, codes)
				return -1, ""
			}
		}
		if winner < 0 {
			t.Fatalf("POST %s: answers %v, want one 201", path, codes)
		}
		return winner, answers[winner]
	}

	won, _ := create("/mcp-auth/users", func(i int) string {
		return fmt.Sprintf(`{"username":"race","password":"password-of-request-%d"}`, i)
	})
	if won >= 0 {
		var hash string
		err := iss.store.View(t.Context(), func(tx store.Tx) error {
			u, err := usersIn(tx).get("race")
			if err == nil {
				hash = u.PasswordHash
			}
			return err
		})
		if err != nil || bcrypt.CompareHashAndPassword([]byte(hash), fmt.Appendf(nil, "password-of-request-%d", won)) != nil {
			t.Errorf("the stored password is not that of the request answered 201 (%v)", err)
		}
	}

	won, body := create("/mcp-auth/clients", func(int) string {
		return `{"client_id":"race-svc","grant_types":["client_credentials"],"scopes":["read"]}`
	})
	if won >= 0 {
		var created ClientView
		if err := json.Unmarshal([]byte(body), &created); err != nil {
			t.Fatal(err)
		}
		if got := clientCredentialsStatus(t, iss, "race-svc", created.ClientSecret); got != http.StatusOK {
			t.Errorf("token request with the secret of the 201 answer = %d, want 200", got)
		}
	}

	won, body = create("/mcp-auth/agents", func(int) string { return `{"agent_id":"race-agent","scopes":["read"]}` })
	if won >= 0 {
		var created AgentView
		if err := json.Unmarshal([]byte(body), &created); err != nil {
			t.Fatal(err)
		}
		if got := clientCredentialsStatus(t, iss, "race-agent", created.Secret); got != http.StatusOK {
			t.Errorf("agent token request with the secret of the 201 answer = %d, want 200", got)
		}
	}

	// The store's own word, without the admin API's early check.
	other, err := bcrypt.GenerateFromPassword([]byte("another"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.PutUser(t.Context(), User{Username: "race", PasswordHash: string(other)}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("PutUser(existing) = %v, want ErrAlreadyExists", err)
	}
	if err := iss.PutClient(t.Context(), Client{ID: "race-svc", TokenEndpointAuthMethod: "none"}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("PutClient(existing) = %v, want ErrAlreadyExists", err)
	}
	if err := iss.PutAgent(t.Context(), Agent{ID: "race-agent", SecretHash: hashClientSecret("another")}); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("PutAgent(existing) = %v, want ErrAlreadyExists", err)
	}
}

// TestAdminIDsStayAddressable: an id the admin API creates stays
// addressable by the routes that show, disable, rotate or remove it, so
// a leaked agent or client can always be shut off: ids with "//" or a
// URL's slashes come escaped (%2F) and are judged as sent, and ids with a
// "." or ".." segment, which no path names as itself, are not created
// (review s13-cli F2, s13-fresh3 F5).
func TestAdminIDsStayAddressable(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	for _, id := range []string{"a//b", "https://app.example/agent.json", "trailing/", "x/.y", "..z"} {
		runAPI(t, srv, apiCase{"add " + id, "POST", "/mcp-auth/agents", `{"agent_id":"` + id + `"}`, 201, ""})
		runAPI(t, srv, apiCase{"disable " + id, "POST", "/mcp-auth/agents/" + url.PathEscape(id) + "/disable", "", 204, ""})
		runAPI(t, srv, apiCase{"remove " + id, "DELETE", "/mcp-auth/agents/" + url.PathEscape(id), "", 204, ""})
	}
	id := "https://app.example/client.json"
	runAPI(t, srv, apiCase{"add client", "POST", "/mcp-auth/clients", `{"client_id":"` + id + `","public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 201, ""})
	runAPI(t, srv, apiCase{"remove client", "DELETE", "/mcp-auth/clients/" + url.PathEscape(id), "", 204, ""})
	// Nor is any "." or ".." segment: Caddy's remote admin access control
	// judges the decoded, cleaned path, and would see another resource.
	for _, id := range []string{".", "..", "ag/..", "x/./y", "bob/../../clients/x"} {
		runAPI(t, srv, apiCase{"add agent " + id, "POST", "/mcp-auth/agents", `{"agent_id":"` + id + `"}`, 400, ""})
		runAPI(t, srv, apiCase{"add client " + id, "POST", "/mcp-auth/clients", `{"client_id":"` + id + `","public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 400, ""})
		runAPI(t, srv, apiCase{"add user " + id, "POST", "/mcp-auth/users", `{"username":"` + id + `","password":"long enough"}`, 400, ""})
	}
	// Unclean paths as sent are still not served.
	runAPI(t, srv, apiCase{"dot segment", "GET", "/mcp-auth/users/../clients", "", 404, ""})
}

// storeDump is every record of the buckets an admin change of a client
// can touch, for comparing before and after.
func storeDump(t *testing.T, iss *Issuer) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := iss.store.View(t.Context(), func(tx store.Tx) error {
		for _, b := range []string{bucketClients, bucketGrants, bucketEpochs, bucketRevoked, bucketRevocationLog, bucketCodes} {
			if err := tx.List(b, "", func(k string, v []byte) error { out[b+"/"+k] = string(v); return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAdminClientUpdate: PUT /mcp-auth/clients/<id> takes POST's body and
// answers the client as stored, without a secret, 200; an unknown id 404;
// a configured or self-registered (DCR) client 409; an invalid body, a
// client_id other than the path's, or a switch to a secret method 400; a
// form type 415. Every refusal leaves the store as it was. The secret
// stays what it was.
func TestAdminClientUpdate(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	runAPI(t, srv, apiCase{"add app", "POST", "/mcp-auth/clients", `{"client_id":"app","public":true,"redirect_uris":["http://127.0.0.1/cb"],"scopes":["read"]}`, 201, ""})
	var svc ClientView
	body := runAPI(t, srv, apiCase{"add svc", "POST", "/mcp-auth/clients", `{"client_id":"svc","grant_types":["client_credentials"],"scopes":["read"]}`, 201, ""})
	if err := json.Unmarshal([]byte(body), &svc); err != nil || svc.ClientSecret == "" {
		t.Fatalf("POST svc = %s, %v", body, err)
	}
	dcr := Client{ID: "self-registered", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"http://127.0.0.1/cb"}, Source: sourceDCR, ExpiresAt: iss.now().Add(time.Hour)}
	if err := iss.store.Update(t.Context(), func(tx store.Tx) error { return clientsIn(tx).put(&dcr) }); err != nil {
		t.Fatal(err)
	}

	before := storeDump(t, iss)
	for _, tt := range []apiCase{
		{"unknown", "PUT", "/mcp-auth/clients/nope", `{"public":true}`, 404, `client \"nope\" not found`},
		{"configured", "PUT", "/mcp-auth/clients/configured", `{"public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 409, "Caddyfile"},
		{"self-registered", "PUT", "/mcp-auth/clients/self-registered", `{"public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 409, "dynamic client registration"},
		{"public to a secret", "PUT", "/mcp-auth/clients/app", `{"redirect_uris":["http://127.0.0.1/cb"]}`, 400, "remove the client and add it again"},
		{"public to client_secret_post", "PUT", "/mcp-auth/clients/app", `{"token_endpoint_auth_method":"client_secret_post","redirect_uris":["http://127.0.0.1/cb"]}`, 400, "has no secret"},
		{"another client_id", "PUT", "/mcp-auth/clients/app", `{"client_id":"svc","public":true}`, 400, "differs"},
		{"http redirect on a public host", "PUT", "/mcp-auth/clients/app", `{"public":true,"redirect_uris":["http://app.example.com/cb"]}`, 400, "loopback"},
		{"public with client credentials", "PUT", "/mcp-auth/clients/app", `{"public":true,"grant_types":["client_credentials"]}`, 400, "confidential"},
		{"public with a method", "PUT", "/mcp-auth/clients/app", `{"public":true,"token_endpoint_auth_method":"client_secret_basic"}`, 400, "auth method is none"},
		{"a secret in the body", "PUT", "/mcp-auth/clients/svc", `{"client_secret":"mine"}`, 400, "client_secret"},
		{"keys method without keys", "PUT", "/mcp-auth/clients/svc", `{"token_endpoint_auth_method":"private_key_jwt","grant_types":["client_credentials"]}`, 400, "jwks"},
		{"bad resource", "PUT", "/mcp-auth/clients/svc", `{"grant_types":["client_credentials"],"resources":["mcp"]}`, 400, ""},
		{"unknown grant type", "PUT", "/mcp-auth/clients/svc", `{"grant_types":["password"]}`, 400, "password"},
		{"unknown scope", "PUT", "/mcp-auth/clients/svc", `{"grant_types":["client_credentials"],"scopes":["read","wirte"]}`, 400, `scope \"wirte\" is offered by no resource (offered: read write)`},
		{"no body", "PUT", "/mcp-auth/clients/svc", "", 400, ""},
		{"unclean path", "PUT", "/mcp-auth/clients/x/../svc", `{"grant_types":["client_credentials"]}`, 404, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			runAPI(t, srv, tt)
			if after := storeDump(t, iss); !maps.Equal(after, before) {
				t.Errorf("the store changed: %d records, were %d", len(after), len(before))
			}
		})
	}
	req, _ := http.NewRequest("PUT", srv.URL+"/mcp-auth/clients/app", strings.NewReader(`{"public":true,"client_name":"Form"}`))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	doAPI(t, srv, req, 415, "send a JSON body")
	if after := storeDump(t, iss); !maps.Equal(after, before) {
		t.Error("a refused form changed the store")
	}

	created := func(id string) time.Time {
		var c storedClient
		if err := iss.store.View(t.Context(), func(tx store.Tx) error {
			got, err := clientsIn(tx).get(id)
			if err == nil {
				c = *clientRecord(got)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return c.CreatedAt
	}
	appCreated := created("app")
	var updated ClientView
	body = runAPI(t, srv, apiCase{"update app", "PUT", "/mcp-auth/clients/app",
		`{"public":true,"client_name":"App","redirect_uris":["http://127.0.0.1/cb","https://app.example.com/cb"],"scopes":["read"]}`, 200, `"client_name":"App"`})
	if err := json.Unmarshal([]byte(body), &updated); err != nil {
		t.Fatal(err)
	}
	if updated.Source != sourceAdmin || !updated.CreatedAt.Equal(appCreated) || len(updated.RedirectURIs) != 2 || updated.AuthMethod != authNone {
		t.Errorf("PUT answer = %s, want the admin client as created, with its new name and redirect URIs", body)
	}
	runAPI(t, srv, apiCase{"show app", "GET", "/mcp-auth/clients/app", "", 200, `"redirect_uris":["http://127.0.0.1/cb","https://app.example.com/cb"]`})

	body = runAPI(t, srv, apiCase{"update svc", "PUT", "/mcp-auth/clients/svc", `{"client_id":"svc","client_name":"CI","grant_types":["client_credentials"],"scopes":["read"]}`, 200, `"token_endpoint_auth_method":"client_secret_basic"`})
	if strings.Contains(body, "client_secret\"") {
		t.Errorf("PUT answer %s shows a secret", body)
	}
	if got := clientCredentialsStatus(t, iss, "svc", svc.ClientSecret); got != http.StatusOK {
		t.Errorf("token request with the secret from before the update = %d, want 200", got)
	}

	// An id with slashes is addressed escaped, as by the other routes.
	id := "https://app.example/client.json"
	runAPI(t, srv, apiCase{"add escaped", "POST", "/mcp-auth/clients", `{"client_id":"` + id + `","public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 201, ""})
	runAPI(t, srv, apiCase{"update escaped", "PUT", "/mcp-auth/clients/" + url.PathEscape(id), `{"public":true,"client_name":"Doc","redirect_uris":["http://127.0.0.1/cb"]}`, 200, `"client_name":"Doc"`})
}

// TestAdminClientUpdateConcurrent: PUTs of one client racing each other
// and a DELETE end consistent: every PUT answers 200 or, once the removal
// committed, 404; the client stays removed (no PUT brings it back); and
// of racing PUTs the stored registration is wholly one of them.
func TestAdminClientUpdateConcurrent(t *testing.T) {
	iss, _ := newAdminIssuer(t, withAdminScopes("admin", "other", "late"))
	srv := adminServer(t, iss)
	put := func(id, name string) int {
		req, _ := http.NewRequest("PUT", srv.URL+"/mcp-auth/clients/"+id, strings.NewReader(
			fmt.Sprintf(`{"public":true,"client_name":%q,"redirect_uris":["http://127.0.0.1/%s"],"scopes":[%q]}`, name, name, name)))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Error(err)
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	runAPI(t, srv, apiCase{"add", "POST", "/mcp-auth/clients", `{"client_id":"racy","public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 201, ""})
	var wg sync.WaitGroup
	names := []string{"read", "write", "admin", "other"}
	for _, n := range names {
		wg.Go(func() {
			if got := put("racy", n); got != http.StatusOK {
				t.Errorf("PUT racy (%s) = %d, want 200", n, got)
			}
		})
	}
	wg.Wait()
	c, err := iss.dir.lookupClient(t.Context(), "racy")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, c.Name) || len(c.RedirectURIs) != 1 || c.RedirectURIs[0] != "http://127.0.0.1/"+c.Name || len(c.Scopes) != 1 || c.Scopes[0] != c.Name {
		t.Errorf("after racing PUTs the client is %+v, want one PUT's registration whole", c)
	}

	for round := range 5 {
		id := fmt.Sprintf("gone-%d", round)
		runAPI(t, srv, apiCase{"add", "POST", "/mcp-auth/clients", `{"client_id":"` + id + `","public":true,"redirect_uris":["http://127.0.0.1/cb"]}`, 201, ""})
		var deleted int
		codes := make([]int, 4)
		for n := range codes {
			wg.Go(func() { codes[n] = put(id, names[n]) })
		}
		wg.Go(func() {
			req, _ := http.NewRequest("DELETE", srv.URL+"/mcp-auth/clients/"+id, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			deleted = resp.StatusCode
		})
		wg.Wait()
		if deleted != http.StatusNoContent {
			t.Errorf("DELETE %s = %d, want 204", id, deleted)
		}
		for _, c := range codes {
			if c != http.StatusOK && c != http.StatusNotFound {
				t.Errorf("PUTs racing DELETE %s = %v, want 200 or 404", id, codes)
			}
		}
		if _, err := iss.dir.lookupClient(t.Context(), id); err == nil {
			t.Errorf("client %s exists after its removal (PUT answers %v)", id, codes)
		}
		if got := put(id, "late"); got != http.StatusNotFound {
			t.Errorf("PUT %s after its removal = %d, want 404", id, got)
		}
	}
}

// TestAdminClientUpdateIfMatch: GET /mcp-auth/clients/<id> names the
// registration with an ETag, and a PUT carrying it as If-Match applies
// only to that registration: one changed since (an update, a secret's
// rotation) answers 412 and changes nothing, so two operators do not undo
// each other's change unseen (the CLI's client update sends it).
func TestAdminClientUpdateIfMatch(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	runAPI(t, srv, apiCase{"add svc", "POST", "/mcp-auth/clients", `{"client_id":"svc","grant_types":["client_credentials"],"scopes":["read","write"]}`, 201, ""})
	etag := func() string {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + "/mcp-auth/clients/svc")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		tag := resp.Header.Get("ETag")
		if resp.StatusCode != http.StatusOK || len(tag) < 10 || tag[0] != '"' {
			t.Fatalf("GET svc = %d, ETag %q", resp.StatusCode, tag)
		}
		return tag
	}
	put := func(ifMatch, scopes string, want int) http.Header {
		t.Helper()
		req, _ := http.NewRequest("PUT", srv.URL+"/mcp-auth/clients/svc", strings.NewReader(`{"grant_types":["client_credentials"],"scopes":`+scopes+`}`))
		req.Header.Set("Content-Type", "application/json")
		if ifMatch != "" {
			req.Header.Set("If-Match", ifMatch)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("PUT svc (If-Match %q) = %d, want %d", ifMatch, resp.StatusCode, want)
		}
		return resp.Header
	}
	first := etag()
	if again := etag(); again != first {
		t.Fatalf("ETag of an unchanged client: %q then %q", first, again)
	}
	h := put(first, `["read"]`, http.StatusOK)
	second := etag()
	if second == first || h.Get("ETag") != second {
		t.Fatalf("after an update: ETag %q (was %q), the PUT answered %q", second, first, h.Get("ETag"))
	}
	before := storeDump(t, iss)
	put(first, `["read","write"]`, http.StatusPreconditionFailed) // someone else's, stale
	if !maps.Equal(storeDump(t, iss), before) {
		t.Error("a PUT with a stale If-Match changed the store")
	}
	runAPI(t, srv, apiCase{"rotate", "POST", "/mcp-auth/clients/svc/secret", "", 200, ""})
	put(second, `["read"]`, http.StatusPreconditionFailed)
	put(etag(), `["read"]`, http.StatusOK)
	put("*", `["read"]`, http.StatusOK)
	put("", `["read"]`, http.StatusOK)
	cur := etag()
	put(`"stale", `+cur, `["read"]`, http.StatusOK) // a list holding the current tag
	put(`"stale", "other"`, `["read"]`, http.StatusPreconditionFailed)
	put("W/"+etag(), `["read"]`, http.StatusPreconditionFailed) // weak: never for If-Match
}

// viewHook runs before the View numbered at (counting from 1 after
// arming) the function before.
type viewHook struct {
	store.Store
	n      atomic.Int32
	at     int32
	before func()
}

func (s *viewHook) View(ctx context.Context, fn func(store.Tx) error) error {
	if n := s.n.Add(1); n == s.at && s.before != nil {
		s.before()
	}
	return s.Store.View(ctx, fn)
}

// TestAdminClientETagSameRead: an update between the reads a GET of a
// client makes does not leave it answering the old registration under
// the new ETag, whose PUT would undo the update unseen (review s14-fresh3
// M2): the answer and its ETag come from one read.
func TestAdminClientETagSameRead(t *testing.T) {
	iss, _ := newAdminIssuer(t, withAdminScopes("admin"))
	srv := adminServer(t, iss)
	runAPI(t, srv, apiCase{"add svc", "POST", "/mcp-auth/clients", `{"client_id":"svc","grant_types":["client_credentials"],"scopes":["read","write","admin"]}`, 201, ""})
	hook := &viewHook{Store: iss.store}
	iss.store = hook
	// Calibrate: how many Views one GET makes.
	hook.n.Store(0)
	runAPI(t, srv, apiCase{"get", "GET", "/mcp-auth/clients/svc", "", 200, ""})
	views := hook.n.Load()
	// Operator B narrows svc's scopes between GET's two reads.
	hook.n.Store(0)
	hook.at = views
	hook.before = func() {
		hook.before = nil
		c := Client{ID: "svc", GrantTypes: []string{"client_credentials"}, TokenEndpointAuthMethod: "client_secret_basic", Scopes: []string{"read"}}
		if _, err := iss.UpdateClient(context.Background(), c); err != nil {
			t.Errorf("B's update: %v", err)
		}
	}
	resp, err := srv.Client().Get(srv.URL + "/mcp-auth/clients/svc")
	if err != nil {
		t.Fatal(err)
	}
	var cur ClientView
	json.NewDecoder(resp.Body).Decode(&cur)
	resp.Body.Close()
	tag := resp.Header.Get("ETag")
	// Operator A (the CLI) sends back what it read, with the ETag.
	body, _ := json.Marshal(map[string]any{"grant_types": []string{"client_credentials"}, "scopes": cur.Scopes, "client_name": "renamed"})
	req, _ := http.NewRequest("PUT", srv.URL+"/mcp-auth/clients/svc", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("If-Match", tag)
	presp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	presp.Body.Close()
	var after *Client
	if err := iss.store.View(t.Context(), func(tx store.Tx) error {
		var err error
		after, err = clientsIn(tx).get("svc")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(after.Scopes) != 1 || after.Scopes[0] != "read" {
		t.Errorf("GET read scopes %v under ETag %s; PUT with them = %d, and the client's scopes are %v: B's narrowing to [read] undone unseen", cur.Scopes, tag, presp.StatusCode, after.Scopes)
	}
}

// TestAdminEmptyRestrictionRefused: an agent's allowed_clients or
// scopes, or a client's resources, scopes or grant_types, given as [] is refused 400
// and changes nothing, as in a JSON configuration
// (TestJSONEmptyRestrictionRefused): an empty list reads as one left
// out, no restriction, so written to allow nothing it would allow
// everything.
func TestAdminEmptyRestrictionRefused(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	const client = `"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"`
	steps := []apiCase{
		{"agent allowed_clients []", "POST", "/mcp-auth/agents", `{"agent_id":"a1","allowed_clients":[]}`, 400, "allowed_clients []"},
		{"agent scopes []", "POST", "/mcp-auth/agents", `{"agent_id":"a1","scopes":[ ]}`, 400, "scopes []"},
		{"agent scopes null", "POST", "/mcp-auth/agents", `{"agent_id":"a1","scopes":null}`, 400, "scopes null"},
		{"agent added nothing", "GET", "/mcp-auth/agents/a1", "", 404, ""},
		{"client scopes []", "POST", "/mcp-auth/clients", `{"client_id":"c1",` + client + `,"scopes":[]}`, 400, "scopes []"},
		{"client resources []", "POST", "/mcp-auth/clients", `{"client_id":"c1",` + client + `,"resources":[]}`, 400, "resources []"},
		{"client added nothing", "GET", "/mcp-auth/clients/c1", "", 404, ""},
		{"client with scopes", "POST", "/mcp-auth/clients", `{"client_id":"c1",` + client + `,"scopes":["read"]}`, 201, `"scopes":["read"]`},
		{"update scopes []", "PUT", "/mcp-auth/clients/c1", `{` + client + `,"scopes":[]}`, 400, "scopes []"},
		{"update scopes null", "PUT", "/mcp-auth/clients/c1", `{` + client + `,"scopes":null}`, 400, "scopes null"},
		{"update changed nothing", "GET", "/mcp-auth/clients/c1", "", 200, `"scopes":["read"]`},
		// Empty, grant_types reads as left out: authorization_code and
		// refresh_token, so a client written to use no grant (or none
		// but authorization_code) would get refresh tokens.
		{"client grant_types []", "POST", "/mcp-auth/clients", `{"client_id":"c2",` + client + `,"grant_types":[]}`, 400, "grant_types []"},
		{"client grant_types null", "POST", "/mcp-auth/clients", `{"client_id":"c2",` + client + `,"grant_types":null}`, 400, "grant_types null"},
		{"client grant_types added nothing", "GET", "/mcp-auth/clients/c2", "", 404, ""},
		{"update grant_types []", "PUT", "/mcp-auth/clients/c1", `{` + client + `,"scopes":["read"],"grant_types":[]}`, 400, "leave grant_types out for the default grant types, authorization_code and refresh_token"},
		{"update grant_types [] changed nothing", "GET", "/mcp-auth/clients/c1", "", 200, `"scopes":["read"]`},
		{"agent with lists", "POST", "/mcp-auth/agents", `{"agent_id":"a1","allowed_clients":["c1"],"scopes":["read"]}`, 201, `"allowed_clients":["c1"]`},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
}

// TestAdminBodyTooLarge: a body longer than the admin API reads
// (maxAdminBody) is refused 413 and changes nothing, though the part
// read is a whole JSON object: whatever follows it past the limit (more
// members' worth of whitespace, then a second value or garbage) would
// otherwise go unread, the request taken for another than the one sent.
func TestAdminBodyTooLarge(t *testing.T) {
	if maxAdminBody != 64<<10 {
		t.Fatalf("maxAdminBody = %d, README (Admin API) says a body longer than 64 KiB is refused", maxAdminBody)
	}
	iss, _ := newAdminIssuer(t, nil)
	srv := adminServer(t, iss)
	keys := func() int { return signingKeyCount(t, iss) }
	before := keys()
	tail := strings.Repeat(" ", maxAdminBody) + `{"garbage": `
	for _, tt := range []apiCase{
		{"user", "POST", "/mcp-auth/users", `{"username": "big", "password": "long enough"}` + tail, 413, "at most"},
		{"key rotation", "POST", "/mcp-auth/keys/rotate", `{}` + tail, 413, "at most"},
		{"key rotation, whitespace", "POST", "/mcp-auth/keys/rotate", strings.Repeat(" ", maxAdminBody+1), 413, "at most"},
		{"user at the limit", "POST", "/mcp-auth/users", `{"username": "fits", "password": "long enough"}` + strings.Repeat(" ", maxAdminBody-len(`{"username": "fits", "password": "long enough"}`)), 201, ""},
	} {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
	if _, err := iss.dir.lookupUser(t.Context(), "big"); err == nil {
		t.Error("a body over the limit created its user")
	}
	if n := keys(); n != before {
		t.Errorf("a key rotation with a body over the limit changed the keys: %d, were %d", n, before)
	}
	// Routes that read no body refuse one over the limit too, as README
	// says of every body: removed, disabled or given a new secret, the
	// entry would change for a request other than the one sent.
	if err := iss.PutUser(t.Context(), User{Username: "kept", PasswordHash: iss.cfg.Users[0].PasswordHash, Groups: []string{"users"}}); err != nil {
		t.Fatal(err)
	}
	if err := iss.PutClient(t.Context(), Client{ID: "kept-client", SecretHash: hashClientSecret("s"), GrantTypes: []string{"client_credentials"}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []apiCase{
		{"user removal", "DELETE", "/mcp-auth/users/kept", `{}` + tail, 413, "at most"},
		{"user disabling", "POST", "/mcp-auth/users/kept/disable", `{}` + tail, 413, "at most"},
		{"client secret rotation", "POST", "/mcp-auth/clients/kept-client/secret", `{}` + tail, 413, "at most"},
	} {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
	if u, err := iss.dir.lookupUser(t.Context(), "kept"); err != nil || u.Disabled {
		t.Errorf("user kept after requests with bodies over the limit = %+v, %v, want it enabled", u, err)
	}
	if c, err := iss.dir.lookupClient(t.Context(), "kept-client"); err != nil || c.SecretHash != hashClientSecret("s") {
		t.Errorf("client kept-client after a secret rotation with a body over the limit: %v, want its secret unchanged", err)
	}
}

// TestAdminNamesOfNewerConfiguration: instances share a store, and one
// (A) runs a configuration declaring user bob, client svc9, agent bot9
// and identity provider corp, applied to the store, while another (B)
// still runs the one before (a rolling reload). B's admin API refuses to
// add under those names, as A's would: stored, such an entry would hide
// behind the configured one (and come back, old credentials and all,
// once the configuration dropped it), and every later start of A's
// configuration would refuse to load. And a reload whose configuration
// declares a name the old one's admin API added while it started (after
// New checked the store) fails to start rather than applying beside it.
func TestAdminNamesOfNewerConfiguration(t *testing.T) {
	corp := IdentityProvider{Name: "corp", Issuer: "https://idp.example", ClientID: "c", GroupMap: map[string][]string{"*": {"users"}}}
	newer := func(c Config) Config {
		c.Users = append(slices.Clone(c.Users), User{Username: "bob", PasswordHash: c.Users[0].PasswordHash, Groups: []string{"users"}})
		c.Clients = append(slices.Clone(c.Clients), Client{ID: "svc9", SecretHash: hashClientSecret("s"), GrantTypes: []string{"client_credentials"}})
		c.Agents = append(slices.Clone(c.Agents), Agent{ID: "bot9", SecretHash: hashClientSecret("a")})
		c.IdentityProviders = append(slices.Clone(c.IdentityProviders), corp)
		return c
	}
	t.Run("instance not reloaded", func(t *testing.T) {
		b, _ := newAdminIssuer(t, nil)
		if err := b.ApplyConfigChanges(t.Context()); err != nil {
			t.Fatal(err)
		}
		cfg := newer(b.cfg)
		a, err := New(cfg, b.store)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.ApplyConfigChanges(t.Context()); err != nil {
			t.Fatal(err)
		}
		srv := adminServer(t, b)
		for _, tt := range []apiCase{
			{"user of a configured user's name", "POST", "/mcp-auth/users", `{"username": "bob", "password": "long enough"}`, 409, `user \"bob\": declared in the`},
			{"client of a configured client's id", "POST", "/mcp-auth/clients", `{"client_id": "svc9", "grant_types": ["client_credentials"], "scopes": ["read"]}`, 409, `client \"svc9\": declared in the`},
			{"agent of a configured agent's id", "POST", "/mcp-auth/agents", `{"agent_id": "bot9", "scopes": ["read"]}`, 409, `agent \"bot9\": declared in the`},
			{"user of a configured client's id", "POST", "/mcp-auth/users", `{"username": "svc9", "password": "long enough"}`, 400, "a configured client has this name"},
			{"client of a configured user's name", "POST", "/mcp-auth/clients", `{"client_id": "bob", "grant_types": ["client_credentials"], "scopes": ["read"]}`, 400, "a configured user has this name"},
			{"agent of a configured client's id", "POST", "/mcp-auth/agents", `{"agent_id": "svc9", "scopes": ["read"]}`, 400, "a configured client has this name"},
			{"user in a provider's namespace", "POST", "/mcp-auth/users", `{"username": "corp:eve", "password": "long enough"}`, 400, `belong to identity provider corp`},
			{"agent in a provider's namespace", "POST", "/mcp-auth/agents", `{"agent_id": "corp:bot", "scopes": ["read"]}`, 400, `belong to identity provider corp`},
			{"another user", "POST", "/mcp-auth/users", `{"username": "carol", "password": "long enough"}`, 201, ""},
		} {
			t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
		}
		// Nothing clashing was stored: A's configuration starts again.
		if _, err := New(cfg, b.store); err != nil {
			t.Errorf("New(A's configuration) after B's admin calls = %v", err)
		}
	})
	for _, tt := range []struct {
		name string
		add  func(*Issuer) error
		want string
	}{
		{"user", func(old *Issuer) error {
			return old.PutUser(t.Context(), User{Username: "bob", PasswordHash: old.cfg.Users[0].PasswordHash})
		}, `user "bob": one of this name is also stored`},
		{"client in a provider's namespace", func(old *Issuer) error {
			return old.PutClient(t.Context(), Client{ID: "corp:svc", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"http://127.0.0.1/cb"}})
		}, `stored client "corp:svc": names starting with "corp:"`},
	} {
		t.Run("reload racing a "+tt.name, func(t *testing.T) {
			old, _ := newAdminIssuer(t, nil)
			if err := old.ApplyConfigChanges(t.Context()); err != nil {
				t.Fatal(err)
			}
			reloaded, err := New(newer(old.cfg), old.store) // the reload's check
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.add(old); err != nil { // the running configuration's admin API
				t.Fatalf("adding before the reload applied: %v", err)
			}
			if err := reloaded.ApplyConfigChanges(t.Context()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ApplyConfigChanges = %v, want %q", err, tt.want)
			}
			if err := old.store.View(t.Context(), func(tx store.Tx) error {
				applied, err := configIn(tx).get(old.URL())
				if err == nil && len(applied.IdentityProviders) > 0 {
					t.Error("the failed start recorded its configuration as applied")
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
