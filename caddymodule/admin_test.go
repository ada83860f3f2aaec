package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
)

const testResource = "https://mcp.example.com/mcp"

// boltApp provisions an app on a bbolt file of its own, with one
// configured user, group and public client.
func boltApp(t *testing.T) *App {
	t.Helper()
	a := &App{
		IssuerURL: "http://127.0.0.1:8080",
		StorageRaw: caddyconfig.JSONModuleObject(BoltStorage{Path: filepath.Join(t.TempDir(), "mcp-auth.db")},
			"module", "bolt", nil),
		Users:  []User{{Username: "alice", PasswordHash: testHash, Groups: []string{"users"}}},
		Groups: []issuer.Group{{Name: "users", Scopes: map[string][]string{"*": {"read"}}}},
		Clients: []Client{
			{ID: "configured", Public: true, RedirectURIs: []string{"http://127.0.0.1/cb"}},
			{ID: "configured-keys", AuthMethod: "private_key_jwt", JWKSURI: "https://app.example.com/jwks", AuthSigningAlg: "PS256", GrantTypes: []string{"client_credentials"}},
		},
		Resources: []issuer.Resource{{URL: testResource, Scopes: []string{"read", "write"}}},
	}
	return startBoltApp(t, a)
}

// startBoltApp provisions and starts a, whose storage is bolt, until the
// test ends.
func startBoltApp(t *testing.T, a *App) *App {
	t.Helper()
	if err := a.Provision(newContext(t)); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	t.Cleanup(func() { _ = a.storage.(*BoltStorage).Cleanup() })
	if err := a.Start(); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	return a
}

// adminServer serves the admin routes the way Caddy's admin endpoint
// does: an APIError becomes its status and {"error": message}.
func adminServer(t *testing.T, api *AdminAPI) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	for _, r := range api.Routes() {
		mux.HandleFunc(r.Pattern, func(w http.ResponseWriter, req *http.Request) {
			err := r.Handler.ServeHTTP(w, req)
			if err == nil {
				return
			}
			var ae caddy.APIError
			if !errors.As(err, &ae) {
				ae = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(ae.HTTPStatus)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": ae.Err.Error()})
		})
	}
	srv := httptest.NewServer(mux)
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
	var body *bytes.Reader
	if tt.body != "" {
		body = bytes.NewReader([]byte(tt.body))
	} else {
		body = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(tt.method, srv.URL+tt.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if tt.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	got := b.String()
	if resp.StatusCode != tt.wantStatus {
		t.Errorf("%s %s = %d %s, want %d", tt.method, tt.path, resp.StatusCode, got, tt.wantStatus)
	}
	if tt.wantBody != "" && !strings.Contains(got, tt.wantBody) {
		t.Errorf("%s %s body = %s, want it to contain %s", tt.method, tt.path, got, tt.wantBody)
	}
	for _, secret := range []string{"$2a$", `"password_hash":`, `"secret_hash":`, "sha256:"} {
		if strings.Contains(got, secret) {
			t.Errorf("%s %s body = %s, leaks %q", tt.method, tt.path, got, secret)
		}
	}
	return got
}

// TestAdminMount: the issuer's admin API answers under /mcp-auth/ on the
// app's issuer, errors as Caddy's admin API writes them.
func TestAdminMount(t *testing.T) {
	app := boltApp(t)
	srv := adminServer(t, &AdminAPI{app: app})
	steps := []apiCase{
		{"list config user", "GET", "/mcp-auth/users", "", 200, `"username":"alice"`},
		{"add", "POST", "/mcp-auth/users", `{"username":"carol","password_hash":"` + testHash + `"}`, 201, `"source":"admin"`},
		{"show", "GET", "/mcp-auth/users/carol", "", 200, `"username":"carol"`},
		{"add existing", "POST", "/mcp-auth/users", `{"username":"carol","password_hash":"` + testHash + `"}`, 409, `{"error":"user \"carol\" already exists"}`},
		{"method not allowed", "PATCH", "/mcp-auth/users", "", 405, `"error":"method PATCH not allowed"`},
		{"unknown path", "GET", "/mcp-auth/users/bob/x/y", "", 404, `"error":"no such resource`},
		{"list clients", "GET", "/mcp-auth/clients", "", 200, `"client_id":"configured"`},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
	if users, err := app.Issuer().Users(t.Context()); err != nil || len(users) != 2 {
		t.Errorf("Users() = %v, %v, want alice and carol", users, err)
	}
}

func TestAdminWithoutApp(t *testing.T) {
	srv := adminServer(t, &AdminAPI{})
	runAPI(t, srv, apiCase{"users", "GET", "/mcp-auth/users", "", 404, "mcp_auth app is not configured"})
}
