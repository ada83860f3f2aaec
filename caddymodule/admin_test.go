package caddymodule

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"golang.org/x/crypto/bcrypt"

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
		Users:     []User{{Username: "alice", PasswordHash: testHash, Groups: []string{"users"}}},
		Groups:    []issuer.Group{{Name: "users", Scopes: map[string][]string{"*": {"read"}}}},
		Clients:   []Client{{ID: "configured", Public: true, RedirectURIs: []string{"http://127.0.0.1/cb"}}},
		Resources: []issuer.Resource{{URL: testResource, Scopes: []string{"read", "write"}}},
	}
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

func TestAdminUsers(t *testing.T) {
	srv := adminServer(t, &AdminAPI{app: boltApp(t), hashCost: bcrypt.MinCost})
	steps := []apiCase{
		{"list config user", "GET", "/mcp-auth/users", "", 200, `"username":"alice"`},
		{"add with password", "POST", "/mcp-auth/users", `{"username":"bob","password":"pw","groups":["users"],"name":"Bob"}`, 201, `"source":"admin"`},
		{"add with hash", "POST", "/mcp-auth/users", `{"username":"carol","password_hash":"` + testHash + `"}`, 201, `"username":"carol"`},
		{"add existing", "POST", "/mcp-auth/users", `{"username":"bob","password":"pw"}`, 409, "already exists"},
		{"add config user", "POST", "/mcp-auth/users", `{"username":"alice","password":"pw"}`, 409, ""},
		{"add both secrets", "POST", "/mcp-auth/users", `{"username":"dan","password":"pw","password_hash":"` + testHash + `"}`, 400, "not both"},
		{"add no secret", "POST", "/mcp-auth/users", `{"username":"dan"}`, 400, "password or password_hash is required"},
		{"add no name", "POST", "/mcp-auth/users", `{"password":"pw"}`, 400, "username is required"},
		{"add bad hash", "POST", "/mcp-auth/users", `{"username":"dan","password_hash":"plain"}`, 400, "must be bcrypt"},
		{"add unknown group", "POST", "/mcp-auth/users", `{"username":"dan","password":"pw","groups":["nope"]}`, 400, "unknown group"},
		{"add unknown field", "POST", "/mcp-auth/users", `{"username":"dan","password":"pw","admin":true}`, 400, "unknown field"},
		{"add two values", "POST", "/mcp-auth/users", `{"username":"dan","password":"pw"} {}`, 400, "more than one JSON value"},
		{"add not json", "POST", "/mcp-auth/users", `username=dan`, 400, "request body"},
		{"show", "GET", "/mcp-auth/users/bob", "", 200, `"name":"Bob"`},
		{"show unknown", "GET", "/mcp-auth/users/zed", "", 404, "not found"},
		{"set password", "PUT", "/mcp-auth/users/bob/password", `{"password":"new"}`, 204, ""},
		{"set password config user", "PUT", "/mcp-auth/users/alice/password", `{"password":"new"}`, 409, "Caddyfile"},
		{"set password unknown", "PUT", "/mcp-auth/users/zed/password", `{"password":"new"}`, 404, ""},
		{"set password empty", "PUT", "/mcp-auth/users/bob/password", `{}`, 400, ""},
		{"remove", "DELETE", "/mcp-auth/users/bob", "", 204, ""},
		{"remove again", "DELETE", "/mcp-auth/users/bob", "", 404, ""},
		{"remove config user", "DELETE", "/mcp-auth/users/alice", "", 409, ""},
		{"method not allowed", "PATCH", "/mcp-auth/users", "", 405, ""},
		{"unknown path", "GET", "/mcp-auth/users/bob/x/y", "", 404, "no such resource"},
		{"list after", "GET", "/mcp-auth/users", "", 200, `"username":"carol"`},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
	}
}

func TestAdminClients(t *testing.T) {
	app := boltApp(t)
	srv := adminServer(t, &AdminAPI{app: app})

	var created ClientView
	body := runAPI(t, srv, apiCase{"add confidential", "POST", "/mcp-auth/clients",
		`{"client_id":"svc","grant_types":["client_credentials"],"scopes":["read"]}`, 201, `"client_secret"`})
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.ClientSecret == "" || created.AuthMethod != "client_secret_basic" {
		t.Fatalf("POST /mcp-auth/clients = %s, %v, want a client_secret_basic client with a secret", body, err)
	}
	// The secret returned once is the one the issuer accepts.
	if got := clientCredentials(t, app, "svc", created.ClientSecret); got != http.StatusOK {
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
		{"list", "GET", "/mcp-auth/clients", "", 200, `"client_id":"cli"`},
		{"show", "GET", "/mcp-auth/clients/svc", "", 200, `"grant_types":["client_credentials"]`},
		{"show unknown", "GET", "/mcp-auth/clients/nope", "", 404, ""},
		{"rotate public", "POST", "/mcp-auth/clients/cli/secret", "", 400, "does not authenticate with a secret"},
		{"rotate config client", "POST", "/mcp-auth/clients/configured/secret", "", 409, ""},
		{"rotate unknown", "POST", "/mcp-auth/clients/nope/secret", "", 404, ""},
		{"remove", "DELETE", "/mcp-auth/clients/cli", "", 204, ""},
		{"remove again", "DELETE", "/mcp-auth/clients/cli", "", 404, ""},
		{"method not allowed", "PUT", "/mcp-auth/clients/svc", "", 405, ""},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) { runAPI(t, srv, tt) })
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
	if got := clientCredentials(t, app, "svc", created.ClientSecret); got != http.StatusUnauthorized {
		t.Errorf("token request with the old secret = %d, want 401", got)
	}
	if got := clientCredentials(t, app, "svc", rotated["client_secret"]); got != http.StatusOK {
		t.Errorf("token request with the rotated secret = %d, want 200", got)
	}
}

// clientCredentials asks the app's issuer for a token and returns the
// status.
func clientCredentials(t *testing.T, app *App, id, secret string) int {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {testResource}, "scope": {"read"}}
	req := httptest.NewRequest("POST", "http://127.0.0.1:8080/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	rec := httptest.NewRecorder()
	app.Issuer().ServeHTTP(rec, req)
	return rec.Code
}

func TestAdminKeys(t *testing.T) {
	srv := adminServer(t, &AdminAPI{app: boltApp(t)})
	body := runAPI(t, srv, apiCase{"rotate", "POST", "/mcp-auth/keys/rotate", "", 200, `"kid"`})
	var res map[string]string
	if err := json.Unmarshal([]byte(body), &res); err != nil || res["kid"] == "" {
		t.Errorf("POST /mcp-auth/keys/rotate = %s, %v, want a kid", body, err)
	}
	runAPI(t, srv, apiCase{"rotate with GET", "GET", "/mcp-auth/keys/rotate", "", 405, ""})
}

func TestAdminWithoutApp(t *testing.T) {
	srv := adminServer(t, &AdminAPI{})
	runAPI(t, srv, apiCase{"users", "GET", "/mcp-auth/users", "", 404, "mcp_auth app is not configured"})
}

func TestAdminAgents(t *testing.T) {
	app := boltApp(t)
	srv := adminServer(t, &AdminAPI{app: app})
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
		{"add no id", "POST", "/mcp-auth/agents", `{}`, 400, "agent_id is required"},
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
