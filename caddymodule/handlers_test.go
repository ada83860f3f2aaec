package caddymodule

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/gateway"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

const (
	testIssuer      = "http://127.0.0.1:8080"
	gatewayResource = "http://127.0.0.1:8080/mcp"
)

// caddyContext provisions a config holding only the given mcp_auth app
// (none when app is nil), as Caddy does before provisioning the handlers.
func caddyContext(t *testing.T, app *App) caddy.Context {
	t.Helper()
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	cfg := &caddy.Config{AppsRaw: caddy.ModuleMap{}}
	if app != nil {
		cfg.AppsRaw["mcp_auth"] = caddyconfig.JSON(app, nil)
	}
	ctx, err := caddy.ProvisionContext(cfg)
	if err != nil {
		t.Fatalf("ProvisionContext() = %v", err)
	}
	if app != nil {
		t.Cleanup(func() {
			a, err := ctx.App("mcp_auth")
			if err == nil {
				_ = a.(*App).storage.(*BoltStorage).Cleanup()
			}
		})
	}
	return ctx
}

// startApp starts the config's mcp_auth app, as Caddy does once every
// module is provisioned.
func startApp(t *testing.T, ctx caddy.Context) *App {
	t.Helper()
	v, err := ctx.App("mcp_auth")
	if err != nil {
		t.Fatal(err)
	}
	a := v.(*App)
	if err := a.Start(); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	return a
}

func testApp(t *testing.T) *App {
	return &App{
		IssuerURL:  testIssuer,
		StorageRaw: caddyconfig.JSONModuleObject(BoltStorage{Path: filepath.Join(t.TempDir(), "db")}, "module", "bolt", nil),
		Clients:    []Client{{ID: "svc", SecretHash: sha256Hash, GrantTypes: []string{"client_credentials"}}},
	}
}

// svcSecret is the secret whose hash is sha256Hash.
const svcSecret = "foo"

var errNext = errors.New("next handler failed")

// recordingNext is a caddyhttp.Handler that records whether it ran.
type recordingNext struct {
	called bool
	err    error
	header http.Header // the request's, as passed on
}

func (n *recordingNext) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	n.called = true
	n.header = r.Header.Clone()
	if n.err != nil {
		return n.err
	}
	w.WriteHeader(http.StatusTeapot)
	return nil
}

func TestIssuerHandler(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	h := new(IssuerHandler)
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	startApp(t, ctx)

	rec := httptest.NewRecorder()
	next := &recordingNext{err: errNext}
	err := h.ServeHTTP(rec, httptest.NewRequest("GET", testIssuer+"/.well-known/oauth-authorization-server", nil), next)
	var md map[string]any
	if err != nil || rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &md) != nil || md["issuer"] != testIssuer || next.called {
		t.Errorf("GET metadata = %d %s, err %v, next called %v; want 200 with issuer %s, next not called", rec.Code, rec.Body, err, next.called, testIssuer)
	}

	err = h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", testIssuer+"/elsewhere", nil), next)
	if !next.called || !errors.Is(err, errNext) {
		t.Errorf("GET /elsewhere: next called %v, err %v; want next called and its error returned", next.called, err)
	}
}

// TestIssuerHandlerClientIP: the issuer's per-address limits count the
// client address Caddy determined (trusted_proxies), not the proxy's, so
// failures from many clients behind one proxy do not lock out another.
func TestIssuerHandlerClientIP(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	h := new(IssuerHandler)
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	// The gateway registers the resource the tokens are for.
	if err := (&GatewayHandler{Resource: gatewayResource}).Provision(ctx); err != nil {
		t.Fatalf("gateway Provision() = %v", err)
	}
	startApp(t, ctx)
	tokenRequest := func(clientIP, id, secret string) int {
		form := url.Values{"grant_type": {"client_credentials"}, "resource": {gatewayResource}}
		req := httptest.NewRequest("POST", testIssuer+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		req.RemoteAddr = "192.0.2.1:443" // the proxy
		vars := map[string]any{caddyhttp.ClientIPVarKey: clientIP}
		req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, vars))
		rec := httptest.NewRecorder()
		if err := h.ServeHTTP(rec, req, &recordingNext{}); err != nil {
			t.Fatalf("ServeHTTP() = %v", err)
		}
		return rec.Code
	}
	for i := range 40 {
		if code := tokenRequest(fmt.Sprintf("198.51.100.%d", i), fmt.Sprintf("nobody%d", i), "wrong"); code != http.StatusUnauthorized {
			t.Fatalf("failed attempt %d from its own address = %d, want 401", i, code)
		}
	}
	if code := tokenRequest("203.0.113.7", "svc", svcSecret); code != http.StatusOK {
		t.Errorf("right secret from another client address = %d, want 200", code)
	}
}

// TestGatewayAuditClientIP: the gateway's audit events name the client
// address Caddy determined (trusted_proxies), as the issuer's limits count
// it: behind a load balancer the peer is the balancer for every request.
func TestGatewayAuditClientIP(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	h := &GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Tools: []Rule{{Match: "*"}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	core, logs := observer.New(zap.InfoLevel)
	h.cfg.AuditLogger = zap.New(core) // the app's Start builds the gateway
	startApp(t, ctx)
	for _, tt := range []struct{ clientIP, want string }{
		{"198.51.100.7", "198.51.100.7:443"},
		{"", "192.0.2.1:443"}, // no client_ip: the peer
	} {
		logs.TakeAll()
		req := mcpRequest("")
		req.RemoteAddr = "192.0.2.1:443" // the proxy
		req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, map[string]any{caddyhttp.ClientIPVarKey: tt.clientIP}))
		if err := h.ServeHTTP(httptest.NewRecorder(), req, &recordingNext{}); err != nil {
			t.Fatalf("ServeHTTP() = %v", err)
		}
		events := logs.All()
		if len(events) != 1 || events[0].ContextMap()["remote_addr"] != tt.want {
			t.Errorf("client_ip %q: audit events %v, want one with remote_addr %s", tt.clientIP, events, tt.want)
		}
	}
}

func TestHandlersWithoutApp(t *testing.T) {
	ctx := caddyContext(t, nil)
	for _, p := range []caddy.Provisioner{new(IssuerHandler), &GatewayHandler{Resource: gatewayResource}} {
		err := p.Provision(ctx)
		if err == nil || !strings.Contains(err.Error(), "needs the mcp_auth app") || !strings.Contains(err.Error(), "mcp_auth {") {
			t.Errorf("%T.Provision() without mcp_auth = %v, want an error explaining the global option", p, err)
		}
	}
}

// TestHandlersAfterFailedStart: while a configuration whose mcp_auth app
// failed to start is taken down (Caddy keeps the running one), its
// handlers answer the requests that reached them 503 with Retry-After,
// as the gateway's and the issuer's other 503s: the running
// configuration answers a retry.
func TestHandlersAfterFailedStart(t *testing.T) {
	app := testApp(t)
	app.Clients[0].Resources = []string{"http://127.0.0.1:8080/elsewhere"}
	ctx := caddyContext(t, app)
	handlers := []caddyhttp.MiddlewareHandler{new(IssuerHandler), &GatewayHandler{Resource: gatewayResource}}
	for _, h := range handlers {
		if err := h.(caddy.Provisioner).Provision(ctx); err != nil {
			t.Fatalf("%T.Provision() = %v", h, err)
		}
	}
	v, err := ctx.App("mcp_auth")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.(*App).Start(); err == nil || !strings.Contains(err.Error(), "no mcp_gateway or resource declares") {
		t.Fatalf("Start() = %v, want the undeclared resource refused", err)
	}
	for _, h := range handlers {
		rec := httptest.NewRecorder()
		next := &recordingNext{}
		err := h.ServeHTTP(rec, mcpRequest(""), next)
		var he caddyhttp.HandlerError
		if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || next.called {
			t.Errorf("%T.ServeHTTP() = %v, next called %v; want a 503 error, next not called", h, err, next.called)
		}
		if got := rec.Header().Get("Retry-After"); got != "1" {
			t.Errorf("%T: Retry-After = %q, want 1", h, got)
		}
	}
}

// token gets a client_credentials access token for the gateway's resource.
func token(t *testing.T, ctx caddy.Context, scope string) (int, string) {
	t.Helper()
	a, err := ctx.App("mcp_auth")
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {gatewayResource}, "scope": {scope}}
	req := httptest.NewRequest("POST", a.(*App).url+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("svc", svcSecret)
	rec := httptest.NewRecorder()
	a.(*App).Issuer().ServeHTTP(rec, req)
	var res struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.Unmarshal(rec.Body.Bytes(), &res)
	return rec.Code, res.AccessToken
}

func mcpRequest(tok string) *http.Request {
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	req := httptest.NewRequest("POST", gatewayResource, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return req
}

func TestGatewayHandlerLocalIssuer(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	h := &GatewayHandler{
		Resource: gatewayResource,
		Scopes:   []string{"mcp"},
		Tools:    []Rule{{Match: "echo"}, {Match: "delete_*", Scopes: []string{"admin"}, UserOnly: true}},
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	app := startApp(t, ctx)
	// The session key comes from the store, which Start opened.
	if stored, err := app.SessionKey(t.Context()); err != nil || !bytes.Equal(h.cfg.SessionKey, stored) {
		t.Errorf("gateway session key = %x, want the store's %x (%v)", h.cfg.SessionKey, stored, err)
	}
	code, tok := token(t, ctx, "mcp")
	if code != http.StatusOK || tok == "" {
		t.Fatalf("token for the registered resource = %d, want 200 with a token", code)
	}

	t.Run("metadata", func(t *testing.T) {
		rec := httptest.NewRecorder()
		next := &recordingNext{}
		err := h.ServeHTTP(rec, httptest.NewRequest("GET", testIssuer+"/.well-known/oauth-protected-resource/mcp", nil), next)
		var md map[string]any
		if err != nil || rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &md) != nil || md["resource"] != gatewayResource || next.called {
			t.Errorf("GET resource metadata = %d %s, %v; want 200 naming %s", rec.Code, rec.Body, err, gatewayResource)
		}
	})
	t.Run("no token", func(t *testing.T) {
		rec := httptest.NewRecorder()
		next := &recordingNext{}
		err := h.ServeHTTP(rec, mcpRequest(""), next)
		if err != nil || rec.Code != http.StatusUnauthorized || next.called {
			t.Errorf("POST without token = %d, %v, next called %v; want 401, next not called", rec.Code, err, next.called)
		}
	})
	t.Run("authorized", func(t *testing.T) {
		rec := httptest.NewRecorder()
		next := &recordingNext{}
		err := h.ServeHTTP(rec, mcpRequest(tok), next)
		if err != nil || !next.called || rec.Code != http.StatusTeapot {
			t.Errorf("POST with token = %d, %v, next called %v; want next's 418", rec.Code, err, next.called)
		}
	})
	t.Run("next error returned", func(t *testing.T) {
		next := &recordingNext{err: caddyhttp.Error(http.StatusBadGateway, errNext)}
		err := h.ServeHTTP(httptest.NewRecorder(), mcpRequest(tok), next)
		if !next.called || !errors.Is(err, errNext) {
			t.Errorf("ServeHTTP() = %v, next called %v; want next's error", err, next.called)
		}
	})
	t.Run("revoked token", func(t *testing.T) {
		a, _ := ctx.App("mcp_auth")
		form := url.Values{"token": {tok}}
		req := httptest.NewRequest("POST", testIssuer+"/revoke", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("svc", svcSecret)
		rec := httptest.NewRecorder()
		a.(*App).Issuer().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("revoke = %d %s", rec.Code, rec.Body)
		}
		rec = httptest.NewRecorder()
		next := &recordingNext{}
		_ = h.ServeHTTP(rec, mcpRequest(tok), next)
		if rec.Code != http.StatusUnauthorized || next.called {
			t.Errorf("POST with a revoked token = %d, next called %v; want 401", rec.Code, next.called)
		}
	})
}

// TestGatewayMethodRuleScope: a scope that only a method rule needs is
// one the gateway offers (scopes_supported) and registers with the local
// issuer, which grants no scope its resources do not offer: otherwise no
// token could carry it, and the rule would pass no one.
func TestGatewayMethodRuleScope(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	h := &GatewayHandler{
		Resource: gatewayResource,
		Scopes:   []string{"mcp"},
		Tools:    []Rule{{Match: "*"}},
		Methods:  []Rule{{Match: "acme/run", Scopes: []string{"acme:run"}}},
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	startApp(t, ctx)
	if code, tok := token(t, ctx, "acme:run"); code != http.StatusOK || tok == "" {
		t.Errorf("token with the method rule's scope = %d, want 200 with a token", code)
	}
	rec := httptest.NewRecorder()
	_ = h.ServeHTTP(rec, httptest.NewRequest("GET", testIssuer+"/.well-known/oauth-protected-resource/mcp", nil), &recordingNext{})
	var md struct {
		Scopes []string `json:"scopes_supported"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &md); err != nil || !slices.Contains(md.Scopes, "acme:run") {
		t.Errorf("scopes_supported = %q (%v), want acme:run in it", md.Scopes, err)
	}
}

func TestGatewaySessionKey(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*37 + 5)
	}
	keyText := base64.StdEncoding.EncodeToString(key)
	t.Setenv("TEST_SESSION_KEY", keyText)
	app := provisionApp(t, &App{IssuerURL: testIssuer})
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(core)

	tests := []struct {
		name     string
		key      string
		app      *App
		wantKey  []byte // nil: any 32 random bytes, or none from the app's store
		wantErr  string
		wantWarn bool
	}{
		{"env placeholder", "{env.TEST_SESSION_KEY}", nil, key, "", false},
		// In clear it works, with a warning: Caddy shows its configuration
		// (review s13-ops F2).
		{"in clear", keyText, app, key, "", true},
		{"zeros", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", app, nil, "not random", false},
		// README: at least 8 distinct values, so a short repeated pattern
		// is refused.
		{"7 values repeated", base64.StdEncoding.EncodeToString([]byte(strings.Repeat("abcdefg", 5))), app, nil, "not random", false},
		{"8 values repeated", base64.StdEncoding.EncodeToString([]byte(strings.Repeat("abcdefgh", 4))), app, []byte(strings.Repeat("abcdefgh", 4)), "", true},
		{"unset env", "{env.TEST_SESSION_KEY_UNSET}", app, nil, "session_key: {env.TEST_SESSION_KEY_UNSET} resolves to nothing", false},
		{"too short", "c2hvcnQ=", app, nil, "want at least 32", false},
		// README: at least 32 bytes; one fewer of a random key is short.
		{"31 bytes", base64.StdEncoding.EncodeToString(key[:31]), app, nil, "31 bytes, want at least 32", false},
		{"from the app's store", "", app, nil, "", false},
		{"no app", "", nil, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.TakeAll()
			h := &GatewayHandler{SessionKey: tt.key}
			got, err := h.sessionKey(tt.app, log)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("sessionKey() error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if tt.app != nil && tt.key == "" {
				if err != nil || got != nil {
					t.Errorf("sessionKey() = %x, %v, want none: the app's store has it", got, err)
				}
				return
			}
			if err != nil || len(got) < 32 || (tt.wantKey != nil && string(got) != string(tt.wantKey)) {
				t.Errorf("sessionKey() = %x, %v, want %x", got, err, tt.wantKey)
			}
			if warned := logs.Len() > 0; warned != tt.wantWarn {
				t.Errorf("sessionKey() warned = %v, want %v", warned, tt.wantWarn)
			}
		})
	}
}

// TestSecretsInClearWarn: a secret written in the configuration (not a
// placeholder) works, and Caddy is told that its configuration shows it
// (review s13-ops F2): the gateway's introspection client_secret here,
// its session_key in TestGatewaySessionKey, an identity provider's
// client_secret through the same warnInClear.
func TestSecretsInClearWarn(t *testing.T) {
	t.Setenv("TEST_INTROSPECTION_SECRET", "s3cret-from-env")
	file := filepath.Join(t.TempDir(), "introspection")
	if err := os.WriteFile(file, []byte("s3cret-from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		secret string
		warn   bool
	}{
		{"hunter2-in-clear", true},
		{"prefix-{env.TEST_INTROSPECTION_SECRET}", true},
		{"{env.TEST_INTROSPECTION_SECRET}", false},
		{"{file." + file + "}", false},
	} {
		core, logs := observer.New(zap.WarnLevel)
		h := &GatewayHandler{Issuer: "https://auth.example.com", Introspection: &Introspection{
			Endpoint: "https://auth.example.com/introspect", ClientID: "gw", ClientSecret: tt.secret}}
		var cfg gateway.Config
		if err := h.remoteConfig(&cfg, zap.New(core)); err != nil {
			t.Fatalf("remoteConfig(%s) = %v", tt.secret, err)
		}
		warned := slices.ContainsFunc(logs.All(), func(e observer.LoggedEntry) bool {
			return strings.Contains(e.Message, "introspection client_secret is written in the configuration")
		})
		if warned != tt.warn {
			t.Errorf("client_secret %s: warned %v, want %v", tt.secret, warned, tt.warn)
		}
		for _, e := range logs.All() {
			if strings.Contains(e.Message, "hunter2") || strings.Contains(e.Message, "s3cret") {
				t.Errorf("the warning shows the secret: %s", e.Message)
			}
		}
	}
}

// TestOpenProviderWarns: Google lets every Google account sign in, so a
// provider there mapping everyone (group *) to a local group without
// allowed_email_domains admits the world; that loads, with a warning
// (review s17-ops F3).
func TestOpenProviderWarns(t *testing.T) {
	for _, tt := range []struct {
		name    string
		issuer  string
		groups  map[string][]string
		domains []string
		warn    bool
	}{
		{"google, everyone", "https://accounts.google.com", map[string][]string{"*": {"staff"}}, nil, true},
		{"google, everyone, slash", "https://accounts.google.com/", map[string][]string{"*": {"staff"}}, nil, true},
		{"google, a domain", "https://accounts.google.com", map[string][]string{"*": {"staff"}}, []string{"example.com"}, false},
		{"google, a group", "https://accounts.google.com", map[string][]string{"eng": {"staff"}}, nil, false},
		{"own provider, everyone", "https://idp.example.com", map[string][]string{"*": {"staff"}}, nil, false},
	} {
		core, logs := observer.New(zap.WarnLevel)
		a := &App{IssuerURL: "https://auth.example.com", log: zap.New(core),
			Groups: []issuer.Group{{Name: "staff", Scopes: map[string][]string{"*": {"read"}}}},
			IdentityProviders: []IdentityProvider{{IdentityProvider: issuer.IdentityProvider{Name: "corp", Issuer: tt.issuer,
				ClientID: "abc", GroupMap: tt.groups, AllowedEmailDomains: tt.domains}}}}
		if _, err := a.issuerConfig(); err != nil {
			t.Fatalf("%s: issuerConfig() = %v", tt.name, err)
		}
		warned := slices.ContainsFunc(logs.All(), func(e observer.LoggedEntry) bool {
			return strings.Contains(e.Message, "every Google account may sign in")
		})
		if warned != tt.warn {
			t.Errorf("%s: warned %v, want %v", tt.name, warned, tt.warn)
		}
	}
}

// TestOpenRulesWarn: a gateway of the local issuer without base scopes
// admits every user, whatever their groups, to the calls its rules need
// no scope for, since the issuer gives any user a token without scopes
// for any resource; that loads, with a warning naming those rules.
func TestOpenRulesWarn(t *testing.T) {
	for _, tt := range []struct {
		name string
		h    GatewayHandler
		warn string // "" for none
	}{
		{"no base scope, open tool", GatewayHandler{Tools: []Rule{{Match: "delete_*", Scopes: []string{"admin"}}, {Match: "*"}}}, "no base scope, and tool * need no scope either"},
		{"no base scope, open prompt and method", GatewayHandler{Prompts: []Rule{{Match: "p"}}, Methods: []Rule{{Match: "x/*"}}}, "prompt p, method x/* need no scope"},
		{"base scope", GatewayHandler{Scopes: []string{"read"}, Tools: []Rule{{Match: "*"}}}, ""},
		{"every rule scoped", GatewayHandler{Tools: []Rule{{Match: "*", Scopes: []string{"read"}}}}, ""},
		{"no rules", GatewayHandler{}, ""},
	} {
		core, logs := observer.New(zap.WarnLevel)
		tt.h.Resource = gatewayResource
		warnOpenRules(zap.New(core), &tt.h)
		var got string
		for _, e := range logs.All() {
			got = e.Message
		}
		if tt.warn == "" && got != "" || !strings.Contains(got, tt.warn) {
			t.Errorf("%s: warned %q, want %q", tt.name, got, tt.warn)
		}
	}
}

func TestGatewayHandlerRemoteIssuer(t *testing.T) {
	ctx := caddyContext(t, nil)
	h := &GatewayHandler{Resource: "https://mcp.example.com/mcp", Issuer: "https://auth.example.com", Scopes: []string{"mcp"}}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() with a remote issuer and no mcp_auth app = %v", err)
	}
	rec := httptest.NewRecorder()
	_ = h.ServeHTTP(rec, httptest.NewRequest("GET", "https://mcp.example.com/.well-known/oauth-protected-resource/mcp", nil), &recordingNext{})
	if !strings.Contains(rec.Body.String(), `"authorization_servers":["https://auth.example.com"]`) {
		t.Errorf("resource metadata = %s, want the remote issuer", rec.Body)
	}
}

// TestGatewayHandlerRemoteKeysRefreshEnds: the background refresh of a
// remote issuer's keys, begun by the first token the gateway verifies,
// ends with the configuration (Cleanup, on a reload or a stop): a
// goroutine per gateway would otherwise stay, fetching the keys of an
// unloaded configuration, after every reload.
func TestGatewayHandlerRemoteKeysRefreshEnds(t *testing.T) {
	as := newRemoteAS(t)
	jwksHits := &as.jwksHits
	// The goroutines refreshing keys, once there are want of them or 2 s
	// later: one begun or ending a moment ago may not be counted yet.
	refreshers := func(want int) int {
		buf := make([]byte, 1<<20)
		deadline := time.Now().Add(2 * time.Second)
		for {
			n := strings.Count(string(buf[:runtime.Stack(buf, true)]), "gateway.(*RemoteKeys).refreshKeys(")
			if n == want || time.Now().After(deadline) {
				return n
			}
			time.Sleep(time.Millisecond)
		}
	}
	base := refreshers(0)
	h := &GatewayHandler{Resource: gatewayResource, Issuer: as.URL, Scopes: []string{"mcp"}}
	if err := h.Provision(caddyContext(t, nil)); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	next := &recordingNext{}
	_ = h.ServeHTTP(httptest.NewRecorder(), as.post(t, `{"jsonrpc":"2.0","id":1,"method":"ping"}`, nil), next)
	if !next.called || jwksHits.Load() != 1 {
		t.Fatalf("a token of the remote issuer: forwarded %v, JWKS fetched %d times; want forwarded, fetched once", next.called, jwksHits.Load())
	}
	if n := refreshers(base+1) - base; n != 1 {
		t.Errorf("%d key refresh goroutines after a token was verified, want 1", n)
	}
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	if n := refreshers(base) - base; n != 0 {
		t.Errorf("%d key refresh goroutines after Cleanup, want 0", n)
	}
}

// remoteAS is another authorization server: its metadata, its key set
// (fetches counted) and tokens signed with its key.
type remoteAS struct {
	*httptest.Server
	key      *ecdsa.PrivateKey
	jwksHits atomic.Int32
}

func newRemoteAS(t *testing.T) *remoteAS {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := key.PublicKey.Bytes()
	b64 := base64.RawURLEncoding.EncodeToString
	as := &remoteAS{key: key}
	as.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			json.NewEncoder(w).Encode(map[string]string{"issuer": as.URL, "jwks_uri": as.URL + "/jwks"})
		case "/jwks":
			as.jwksHits.Add(1)
			json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{"kty": "EC", "crv": "P-256", "kid": "k1", "x": b64(raw[1:33]), "y": b64(raw[33:])}}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(as.Close)
	return as
}

// post is a POST of body to gatewayResource with a token of the server
// for alice, with the claims in extra added (a nil value removes one).
func (as *remoteAS) post(t *testing.T, body string, extra map[string]any) *http.Request {
	t.Helper()
	c := jwt.MapClaims{
		"iss": as.URL, "aud": gatewayResource, "sub": "alice", "client_id": "c1", "scope": "mcp",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
	tok.Header["typ"], tok.Header["kid"] = "at+jwt", "k1"
	signed, err := tok.SignedString(as.key)
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodPost, gatewayResource, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+signed)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	return req
}

// TestGatewayHandlerRemotePrincipalType: principal_type is this
// project's claim, which a remote issuer's tokens carry only if it is a
// caddy-mcp-auth issuer, or an issuer that lets users add claims of
// their own (Keycloak's user attribute mappers, Auth0 Actions): a user
// naming themselves an agent there would pass agents, require_agent
// and user_only rules as one, and one adding an act naming an agent
// require_agent as delegated to it. A remote issuer's token carrying
// either is refused, unless the gateway says the issuer vouches for
// them (agent_claims in the issuer block); the local issuer's always
// does.
func TestGatewayHandlerRemotePrincipalType(t *testing.T) {
	as := newRemoteAS(t)
	call := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy","arguments":{}}}`
	agentOnly := map[string]any{"sub": "agent-a", "principal_type": "agent"}
	tests := []struct {
		name    string
		trusted bool
		extra   map[string]any
		status  int // 0: forwarded
		// forwarded as X-Mcp-Principal-Type and X-Mcp-Actor (status 0)
		principal, actor string
	}{
		{"an agent-only token, issuer not trusted for principal_type", false, agentOnly, http.StatusUnauthorized, "", ""},
		{"a user's token marked user, issuer not trusted", false, map[string]any{"principal_type": "user"}, http.StatusUnauthorized, "", ""},
		{"a client's token marked user, issuer not trusted", false, map[string]any{"sub": "c1", "principal_type": "user"}, http.StatusUnauthorized, "", ""},
		{"a user's token without the claim, issuer not trusted", false, nil, http.StatusForbidden, "", ""},
		{"an agent-only token, issuer trusted", true, agentOnly, 0, "agent", ""},
		{"a user's token marked user, issuer trusted", true, map[string]any{"principal_type": "user"}, http.StatusForbidden, "", ""},
		// act is read only from a trusted issuer too: a user who adds
		// an act naming agent-a passes require_agent as delegated.
		{"a user's token naming an agent in act, issuer not trusted", false, map[string]any{"act": map[string]any{"sub": "agent-a"}}, http.StatusUnauthorized, "", ""},
		{"a user's token naming an agent in act, issuer trusted", true, map[string]any{"act": map[string]any{"sub": "agent-a"}}, 0, "user", "agent-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &GatewayHandler{Resource: gatewayResource, Issuer: as.URL, AgentClaims: tt.trusted, Scopes: []string{"mcp"}, PinTools: "off", ForwardIdentity: true,
				Tools: []Rule{{Match: "deploy", Agents: []string{"agent-a"}, RequireAgent: true}}}
			if err := h.Provision(caddyContext(t, nil)); err != nil {
				t.Fatalf("Provision() = %v", err)
			}
			t.Cleanup(func() { _ = h.Cleanup() })
			rec, next := httptest.NewRecorder(), &recordingNext{}
			_ = h.ServeHTTP(rec, as.post(t, call, tt.extra), next)
			switch {
			case tt.status == 0 && !next.called:
				t.Errorf("tools/call: %d %s, want forwarded", rec.Code, rec.Body)
			case tt.status != 0 && (next.called || rec.Code != tt.status):
				t.Errorf("tools/call: forwarded %v, %d %s, want %d", next.called, rec.Code, rec.Body, tt.status)
			case tt.status == http.StatusUnauthorized && !strings.Contains(rec.Header().Get("WWW-Authenticate"), `error="invalid_token"`):
				t.Errorf("WWW-Authenticate = %q, want invalid_token", rec.Header().Get("WWW-Authenticate"))
			case tt.status == 0 && (next.header.Get("X-Mcp-Principal-Type") != tt.principal || next.header.Get("X-Mcp-Actor") != tt.actor):
				// forward_identity reads the trusted claims too (README).
				t.Errorf("forwarded X-MCP-Principal-Type %q, X-MCP-Actor %q; want %q, %q", next.header.Get("X-Mcp-Principal-Type"), next.header.Get("X-Mcp-Actor"), tt.principal, tt.actor)
			}
		})
	}
}

func TestGatewayHandlerErrors(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	tests := []struct {
		name    string
		h       GatewayHandler
		wantErr string
	}{
		{"no resource", GatewayHandler{}, "resource URL is required"},
		{"bad session key", GatewayHandler{Resource: gatewayResource, SessionKey: "!!"}, "session_key"},
		{"unknown audit mode", GatewayHandler{Resource: gatewayResource, Audit: "none"}, `audit "none": want all or denials_only`},
		{"contradictory rule", GatewayHandler{Resource: gatewayResource, Tools: []Rule{{Match: "x", RequireAgent: true, UserOnly: true}}}, "mcp_gateway " + gatewayResource + ": tools rule"},
		{"unknown placeholder", GatewayHandler{Resource: gatewayResource, Tools: []Rule{{Match: "x", Args: []ArgRule{{Pointer: "/a", Predicate: "equals", Values: []string{"{http.request.host}"}}}}}}, "unknown placeholder {http.request.host}"},
		{"bad pointer", GatewayHandler{Resource: gatewayResource, Tools: []Rule{{Match: "x", Args: []ArgRule{{Pointer: "a", Predicate: "present"}}}}}, `arg "a" present`},
		// Only the session_key and the introspection client_secret have
		// their placeholders replaced: a URL or id holding one loaded as
		// written, and every token was refused.
		{"placeholder resource", GatewayHandler{Resource: "http://127.0.0.1:8080/{env.TEST_MCP_PATH}"}, "mcp_gateway: the resource holds the placeholder {env.TEST_MCP_PATH}, which is not replaced there"},
		{"placeholder remote issuer", GatewayHandler{Resource: gatewayResource, Issuer: "https://kc.example.com/realms/{env.TEST_REALM}"}, "mcp_gateway: the issuer holds the placeholder {env.TEST_REALM}"},
		{"placeholder audience", GatewayHandler{Resource: gatewayResource, Issuer: "https://kc.example.com/realms/r", Audience: "{env.TEST_AUDIENCE}"}, "mcp_gateway: the audience holds the placeholder {env.TEST_AUDIENCE}"},
		{"placeholder introspection client_id", GatewayHandler{Resource: gatewayResource, Issuer: "https://kc.example.com/realms/r", Introspection: &Introspection{ClientID: "{env.TEST_CLIENT_ID}", ClientSecret: "s"}}, "mcp_gateway: the introspection client_id holds the placeholder {env.TEST_CLIENT_ID}"},
		{"placeholder prompt pattern", GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Prompts: []Rule{{Match: "{env.TEST_ADMIN_PROMPT}", Scopes: []string{"admin"}}, {Match: "*"}}}, `mcp_gateway: prompt "{env.TEST_ADMIN_PROMPT}": the pattern holds the placeholder {env.TEST_ADMIN_PROMPT}`},
		{"placeholder method pattern", GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Methods: []Rule{{Match: "{env.TEST_ADMIN_METHOD}", Scopes: []string{"admin"}}, {Match: "x-*"}}}, `mcp_gateway: method "{env.TEST_ADMIN_METHOD}": the pattern holds the placeholder {env.TEST_ADMIN_METHOD}`},
		{"placeholder method pattern in a glob", GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Methods: []Rule{{Match: "acme/{file.ADMIN}*", Scopes: []string{"admin"}}, {Match: "acme/*"}}}, `mcp_gateway: method "acme/{file.ADMIN}*": the pattern holds the placeholder {file.ADMIN}`},
		{"placeholder introspection endpoint", GatewayHandler{Resource: gatewayResource, Issuer: "https://kc.example.com/realms/r", Introspection: &Introspection{Endpoint: "https://{env.TEST_HOST}/introspect", ClientID: "c", ClientSecret: "s"}}, "mcp_gateway: the introspection endpoint holds the placeholder {env.TEST_HOST}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.h.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Provision() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// A gateway that names this config's own issuer by URL is treated as
// local, however the URL is spelt (RFC 3986 section 6.2.3: the case of
// scheme and host, a default port, a trailing slash): its resource is
// registered with the issuer and the issuer's tokens are accepted. A URL
// of another origin or path stays a remote issuer.
func TestGatewayHandlerOwnIssuerURL(t *testing.T) {
	tests := []struct {
		app, gateway string
		local        bool
	}{
		{testIssuer, testIssuer, true},
		{testIssuer, testIssuer + "/", true},
		{testIssuer, "HTTP://127.0.0.1:8080", true},
		{"http://localhost/t1", "http://LOCALHOST/t1", true},
		{"http://localhost/t1", "http://localhost:80/t1", true},
		{"http://localhost/t1", "http://LocalHost:80/t1/", true},
		{"http://localhost/t1", "http://localhost:/t1", true},
		{"https://Auth.Example:443/", "https://auth.example", true},
		{"https://auth.example", "https://auth.example:443/", true},
		{"https://[::1]:443", "https://[::1]/", true},
		// An escape Go would not write, with a trailing slash: the issuer's
		// identifier and the gateway's are the one written without it.
		{"http://localhost/a%2Fb/", "http://localhost/a%2Fb", true},
		{"http://localhost/%41/", "http://localhost/%41/", true},

		{"http://localhost/t1", "http://localhost/T1", false},
		{"http://localhost/t1", "http://localhost/t2", false},
		{"http://localhost/t1", "http://localhost", false},
		{"http://localhost/t1", "https://auth.example/t1", false},
		{"http://localhost/t1", "http://localhost:8080/t1", false},
		{"http://localhost/t1", "http://localhost:443/t1", false},
		{"http://localhost/t1", "http://127.0.0.1/t1", false},
		{"https://auth.example", "https://auth.example:80", false},
		{"https://auth.example", "https://auth.example:8443", false},
	}
	for _, tt := range tests {
		t.Run(tt.app+" "+tt.gateway, func(t *testing.T) {
			app := testApp(t)
			app.IssuerURL = tt.app
			ctx := caddyContext(t, app)
			h := &GatewayHandler{Resource: gatewayResource, Issuer: tt.gateway, Scopes: []string{"mcp"}}
			if err := h.Provision(ctx); err != nil {
				t.Fatalf("Provision() = %v", err)
			}
			startApp(t, ctx)
			code, tok := token(t, ctx, "mcp")
			if !tt.local {
				if h.local || code == http.StatusOK {
					t.Errorf("gateway of issuer %s beside issuer %s: local %v, token for its resource = %d; want a remote issuer, no token (resource not registered)", tt.gateway, tt.app, h.local, code)
				}
				return
			}
			if code != http.StatusOK {
				t.Fatalf("token for the gateway's resource = %d, want 200 (resource registered)", code)
			}
			rec := httptest.NewRecorder()
			next := &recordingNext{}
			if err := h.ServeHTTP(rec, mcpRequest(tok), next); err != nil || !next.called {
				t.Errorf("gateway of issuer %s beside issuer %s: POST with the issuer's token = %d %s, %v; want it passed on", tt.gateway, tt.app, rec.Code, rec.Body, err)
			}
		})
	}
}

// gatewaySession is the session id h hands the token's principal for an
// initialize the upstream answers with a session: a GET stream needs one.
func gatewaySession(t *testing.T, h *GatewayHandler, tok string) string {
	t.Helper()
	req := httptest.NewRequest("POST", gatewayResource, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Mcp-Session-Id", "upstream-session")
		w.Header().Set("Content-Type", "application/json")
		_, err := io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"u","version":"1"}}}`)
		return err
	}))
	sid := rec.Header().Get("Mcp-Session-Id")
	if err != nil || rec.Code != http.StatusOK || sid == "" {
		t.Fatalf("initialize = %v, %d, session %q; want 200 with a session: %s", err, rec.Code, sid, rec.Body)
	}
	return sid
}

// TestGatewayHandlerCleanupEndsStreams: Caddy calls Cleanup when the
// configuration is unloaded (a reload); the gateway's open event streams
// then end at once, so their clients reconnect to the configuration now
// running instead of keeping a stream its revocations no longer reach.
func TestGatewayHandlerCleanupEndsStreams(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	h := &GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Tools: []Rule{{Match: "*"}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	startApp(t, ctx)
	code, tok := token(t, ctx, "mcp")
	if code != http.StatusOK {
		t.Fatalf("token = %d", code)
	}
	opened, ended := make(chan struct{}), make(chan struct{})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		close(opened)
		<-r.Context().Done() // as reverse_proxy does when its request is cancelled
		close(ended)
		return nil
	})
	req := httptest.NewRequest("GET", gatewayResource, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Mcp-Session-Id", gatewaySession(t, h, tok))
	served := make(chan error, 1)
	go func() { served <- h.ServeHTTP(httptest.NewRecorder(), req, next) }()
	<-opened
	select {
	case <-ended:
		t.Fatal("stream ended before Cleanup")
	case <-time.After(50 * time.Millisecond):
	}
	if err := h.Cleanup(); err != nil {
		t.Fatalf("Cleanup() = %v", err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("stream still open 5 s after Cleanup")
	}
	if err := <-served; err != nil {
		t.Errorf("ServeHTTP() = %v", err)
	}
}

// TestGatewayHandlerLocalKeyWithdrawn: a gateway of the local issuer
// refuses a token it verified before (a cache hit) once the issuer no
// longer publishes the key that signed it: the app's issuer is the
// gateway's key source and counts its withdrawals. Here the key is taken
// out of the store, and the issuer re-reads its keys (a rotation).
func TestGatewayHandlerLocalKeyWithdrawn(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	h := &GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Tools: []Rule{{Match: "*"}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	app := startApp(t, ctx)
	code, tok := token(t, ctx, "mcp")
	if code != http.StatusOK {
		t.Fatalf("token = %d", code)
	}
	serve := func() int {
		rec := httptest.NewRecorder()
		_ = h.ServeHTTP(rec, mcpRequest(tok), &recordingNext{})
		return rec.Code
	}
	if got := serve(); got != http.StatusTeapot {
		t.Fatalf("token while its key is published = %d, want next's 418", got)
	}
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := parsed.Header["kid"].(string)
	err = app.Store().Update(t.Context(), func(tx store.Tx) error { return tx.Delete("keys", kid) })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.Issuer().RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := serve(); got != http.StatusUnauthorized {
		t.Errorf("cached token once its key is withdrawn = %d, want 401", got)
	}
}

// TestGatewayHandlerKeyWithdrawnBeforeReload: a key withdrawn at
// another instance on the same store, seen by the configuration a
// reload starts when it reads the keys, ends the event streams of the
// tokens it signed at the gateways of the configuration replaced too,
// whose requests still in flight (a call runs on, an event-stream answer
// for up to 30 s) ask the issuers that replaced theirs (App.next). The
// replaced app stops reading the keys at the reload, having read them
// last before the withdrawal, and the replacing one does not count a
// withdrawal it did not see happen: the apps' withdrawals added up as
// before, and the stream went on without its key being looked up again.
func TestGatewayHandlerKeyWithdrawnBeforeReload(t *testing.T) {
	cfg := testApp(t)
	ctx := caddyContext(t, cfg)
	h := &GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Tools: []Rule{{Match: "*"}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	replaced := startApp(t, ctx)
	code, tok := token(t, ctx, "mcp")
	if code != http.StatusOK {
		t.Fatalf("token = %d", code)
	}
	opened, ended := make(chan struct{}), make(chan struct{})
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		close(opened)
		<-r.Context().Done() // as reverse_proxy does when its request is cancelled
		close(ended)
		return nil
	})
	served := make(chan error, 1)
	go func() { served <- h.ServeHTTP(httptest.NewRecorder(), mcpRequest(tok), next) }()
	<-opened
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := parsed.Header["kid"].(string)
	// The reload stops the replaced app's watch, which read the keys
	// last before the withdrawal.
	replaced.stop()
	<-replaced.done
	other := startApp(t, caddyContext(t, cfg))
	if _, err := other.Issuer().WithdrawSigningKeys(t.Context(), kid); err != nil {
		t.Fatalf("WithdrawSigningKeys() = %v", err)
	}
	running := startApp(t, caddyContext(t, cfg))
	if _, err := running.Issuer().PublicKey(t.Context(), kid); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the replacing app's PublicKey(withdrawn kid) = %v, want store.ErrNotFound", err)
	}
	replaced.next.Store(running)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		h.gw.Stop(gateway.StopWait)
		<-ended
		t.Fatal("event stream of a token whose key was withdrawn before the reload still open 5 s after the replacing app took over")
	}
	if err := <-served; err != nil {
		t.Errorf("ServeHTTP() = %v", err)
	}
}

// TestGatewayHandlerLocalKeysUnreadable: a token whose kid the local
// issuer has not loaded, met while its store cannot be read (closed
// here; PostgreSQL down in production), is answered 503 with no Bearer
// challenge: the issuer cannot tell whether it publishes that key, and
// a client told 401 invalid_token throws its token away. Nothing reaches
// the next handler. With the store readable, the same unknown kid is 401;
// a token whose key the issuer holds passes throughout.
func TestGatewayHandlerLocalKeysUnreadable(t *testing.T) {
	ctx := caddyContext(t, testApp(t))
	h := &GatewayHandler{Resource: gatewayResource, Scopes: []string{"mcp"}, Tools: []Rule{{Match: "*"}}}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	app := startApp(t, ctx)
	code, tok := token(t, ctx, "mcp")
	if code != http.StatusOK {
		t.Fatalf("token = %d", code)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	unknown := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": app.url, "aud": gatewayResource, "sub": "svc", "client_id": "svc", "scope": "mcp",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "j1",
	})
	unknown.Header["typ"], unknown.Header["kid"] = "at+jwt", "not-loaded"
	forged, err := unknown.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	serve := func(tok string) (int, string, bool) {
		rec := httptest.NewRecorder()
		next := &recordingNext{}
		_ = h.ServeHTTP(rec, mcpRequest(tok), next)
		return rec.Code, rec.Header().Get("WWW-Authenticate"), next.called
	}
	if code, challenge, _ := serve(forged); code != http.StatusUnauthorized || !strings.Contains(challenge, "invalid_token") {
		t.Fatalf("unknown kid, store readable = %d %q, want 401 invalid_token", code, challenge)
	}
	if err := app.storage.(*BoltStorage).Cleanup(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the issuer re-reads its keys for an unknown kid at most once a second
	if code, challenge, called := serve(forged); code != http.StatusServiceUnavailable || challenge != "" || called {
		t.Errorf("unknown kid, store unreadable = %d %q, next called %v; want 503, no challenge, next not called", code, challenge, called)
	}
	if code, _, _ := serve(tok); code != http.StatusTeapot {
		t.Errorf("token of a loaded key, store unreadable = %d, want next's 418", code)
	}
}

// TestGatewayRemoteIssuerReach: a gateway calls the URLs its remote
// issuer's metadata names (jwks_uri, introspection_endpoint, with its
// introspection credentials and a client's token) only on public
// addresses and on the kinds of other address (loopback, internal) the
// issuer's host has, as the issuer does for its identity providers
// (review s16-idp F1): the metadata of an issuer on a public host cannot
// have it call a service on its machine or inside the operator's
// network (an https one: the https rule keeps plain http out already,
// TestRemoteMetadataEndpointsHTTPS).
func TestGatewayRemoteIssuerReach(t *testing.T) {
	var hits atomic.Int32
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
	}))
	defer local.Close()
	for _, tt := range []struct {
		issuer string
		reach  bool
	}{
		{"https://93.184.215.14", false},
		{"https://93.184.215.14:8443/realms/x", false},
		{local.URL, true},
		{"https://localhost:8443", true},
	} {
		h := &GatewayHandler{Issuer: tt.issuer}
		before := hits.Load()
		resp, err := h.remoteClient().Get(local.URL + "/stop")
		if err == nil {
			resp.Body.Close()
		}
		if got := hits.Load() > before; got != tt.reach || (err == nil) != tt.reach {
			t.Errorf("issuer %s: a loopback service reached %v (%v), want %v", tt.issuer, got, err, tt.reach)
		}
	}
}
