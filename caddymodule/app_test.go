package caddymodule

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
)

// testHash is a bcrypt hash of "password" at the minimum cost.
var testHash = func() string {
	h, err := bcrypt.GenerateFromPassword([]byte("password"), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}()

const sha256Hash = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

func TestIssuerConfigClients(t *testing.T) {
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwks, []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	notJWKS := filepath.Join(t.TempDir(), "empty.json")
	if err := os.WriteFile(notJWKS, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_CLIENT_HASH", testHash)
	hashFile := filepath.Join(t.TempDir(), "hash")
	if err := os.WriteFile(hashFile, []byte(testHash+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		client     Client
		wantMethod string
		wantHash   string
		wantErr    string
	}{
		{"public", Client{ID: "c", Public: true}, "none", "", ""},
		{"secret, method left to the issuer", Client{ID: "c", SecretHash: sha256Hash}, "", sha256Hash, ""},
		{"secret post", Client{ID: "c", SecretHash: testHash, AuthMethod: "client_secret_post"}, "client_secret_post", testHash, ""},
		{"env secret", Client{ID: "c", SecretHash: "{env.TEST_CLIENT_HASH}"}, "", testHash, ""},
		{"file secret", Client{ID: "c", SecretHash: "{file." + hashFile + "}"}, "", testHash, ""},
		{"jwks_uri", Client{ID: "c", JWKSURI: "https://c.example/jwks"}, "", "", ""},
		{"jwks file", Client{ID: "c", JWKSFile: jwks}, "", "", ""},
		{"explicit method", Client{ID: "c", AuthMethod: "private_key_jwt"}, "private_key_jwt", "", ""},
		{"requires PAR", Client{ID: "c", Public: true, RequirePushedAuthorizationRequests: true}, "none", "", ""},
		{"no credentials", Client{ID: "c"}, "", "", "needs a secret, a key set (jwks, jwks_uri), or public"},
		{"unset env secret", Client{ID: "c", SecretHash: "{env.TEST_UNSET_HASH}"}, "", "", "secret: {env.TEST_UNSET_HASH} resolves to nothing"},
		{"plain secret", Client{ID: "c", SecretHash: "hunter2"}, "", "", "not a bcrypt hash; only bcrypt is accepted: make one with `caddy hash-password` (or give sha256:<hex>)"},
		{"short sha256", Client{ID: "c", SecretHash: "sha256:abcd"}, "", "", "64 hex digits"},
		{"public with private_key_jwt", Client{ID: "c", Public: true, AuthMethod: "private_key_jwt", JWKSURI: "https://c.example/jwks"}, "", "", "public client's auth method is none"},
		{"missing jwks file", Client{ID: "c", JWKSFile: filepath.Join(t.TempDir(), "nope.json")}, "", "", "jwks:"},
		{"empty jwks", Client{ID: "c", JWKSFile: notJWKS}, "", "", "not a JWK Set with keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &App{IssuerURL: "https://auth.example.com", Clients: []Client{tt.client}}
			cfg, err := a.issuerConfig()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("issuerConfig() error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("issuerConfig() error = %v", err)
			}
			c := cfg.Clients[0]
			if c.RequirePushedAuthorizationRequests != tt.client.RequirePushedAuthorizationRequests {
				t.Errorf("issuerConfig() client require PAR = %v, want %v", c.RequirePushedAuthorizationRequests, tt.client.RequirePushedAuthorizationRequests)
			}
			if c.TokenEndpointAuthMethod != tt.wantMethod || c.SecretHash != tt.wantHash || c.Source != "config" {
				t.Errorf("issuerConfig() client = method %q hash %q source %q, want %q %q config",
					c.TokenEndpointAuthMethod, c.SecretHash, c.Source, tt.wantMethod, tt.wantHash)
			}
		})
	}
}

func TestIssuerConfig(t *testing.T) {
	t.Setenv("TEST_USER_HASH", testHash)
	argon := "$argon2id$v=19$m=47104,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
	t.Setenv("TEST_ARGON_HASH", argon)
	tests := []struct {
		name    string
		app     App
		wantErr string
	}{
		{"minimal", App{IssuerURL: "https://a.example"}, ""},
		{"no issuer", App{}, "issuer URL is required"},
		{"bad alg", App{IssuerURL: "https://a.example", SigningAlg: "HS256"}, `signing_alg "HS256"`},
		{"revocation_max_stale", App{IssuerURL: "https://a.example", RevocationMaxStale: caddy.Duration(5 * time.Second)}, ""},
		{"negative min_password_length", App{IssuerURL: "https://a.example", MinPasswordLength: -1}, "min_password_length -1"},
		// bcrypt refuses a password over 72 bytes: above 72, the admin
		// API and the CLI refused every password (TestMaxPasswordBytes).
		{"min_password_length 72", App{IssuerURL: "https://a.example", MinPasswordLength: 72}, ""},
		{"min_password_length 73", App{IssuerURL: "https://a.example", MinPasswordLength: 73}, "min_password_length 73: no password could be set"},
		{"env user hash", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: "{env.TEST_USER_HASH}"}}}, ""},
		{"unset env user hash", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: "{env.TEST_NOT_SET}"}}}, `user "u": password hash: {env.TEST_NOT_SET} resolves to nothing`},
		{"argon2 user hash", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: argon}}}, "user \"u\": password hash: an argon2 hash; only bcrypt is accepted: make one with `caddy hash-password`"},
		{"argon2 hash from env", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: "{env.TEST_ARGON_HASH}"}}}, "an argon2 hash; only bcrypt is accepted"},
		{"user hash of cost 20", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: "$2a$20$" + strings.Repeat("a", 53)}}}, `user "u": password hash: bcrypt cost 20 is above the most accepted, 16`},
		{"agent secret of cost 17", App{IssuerURL: "https://a.example", Agents: []Agent{{ID: "a", SecretHash: "$2a$17$" + strings.Repeat("a", 53)}}}, `agent "a": secret: bcrypt cost 17 is above the most accepted, 16`},
		// Only hashes and secrets take placeholders: a name or address
		// holding one was taken as written.
		{"placeholder user name", App{IssuerURL: "https://a.example", Users: []User{{Username: "{env.TEST_USER}", PasswordHash: testHash}}}, `user "{env.TEST_USER}": the name holds the placeholder {env.TEST_USER}, which is not replaced there`},
		{"placeholder user email", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: testHash, Email: "{env.TEST_EMAIL}"}}}, `user "u": the email holds the placeholder {env.TEST_EMAIL}`},
		{"placeholder group name", App{IssuerURL: "https://a.example", Groups: []issuer.Group{{Name: "team-{file./run/team}"}}}, `group "team-{file./run/team}": the name holds the placeholder {file./run/team}`},
		{"placeholder client id", App{IssuerURL: "https://a.example", Clients: []Client{{ID: "{env.TEST_CLIENT_ID}", Public: true, RedirectURIs: []string{"http://127.0.0.1/cb"}}}}, `client "{env.TEST_CLIENT_ID}": the id holds the placeholder {env.TEST_CLIENT_ID}`},
		{"placeholder agent id", App{IssuerURL: "https://a.example", Agents: []Agent{{ID: "{env.TEST_AGENT}", SecretHash: "sha256:" + strings.Repeat("ab", 32)}}}, `agent "{env.TEST_AGENT}": the id holds the placeholder {env.TEST_AGENT}`},
		// Nor do the URLs and ids the issuer reads: a provider's issuer
		// or client_id written beside a client_secret that is replaced.
		{"placeholder issuer", App{IssuerURL: "https://a.example/{env.TEST_PATH}"}, `mcp_auth: the issuer holds the placeholder {env.TEST_PATH}, which is not replaced there`},
		{"placeholder resource", App{IssuerURL: "https://a.example", Resources: []issuer.Resource{{URL: "https://mcp.example/{env.TEST_PATH}"}}}, `resource "https://mcp.example/{env.TEST_PATH}": the URL holds the placeholder {env.TEST_PATH}`},
		{"placeholder provider issuer", App{IssuerURL: "https://a.example", IdentityProviders: []IdentityProvider{{IdentityProvider: issuer.IdentityProvider{Name: "corp", Issuer: "https://login.microsoftonline.com/{env.TEST_TENANT_ID}/v2.0", ClientID: "app"}}}}, `identity_provider "corp": the issuer holds the placeholder {env.TEST_TENANT_ID}`},
		{"placeholder provider client_id", App{IssuerURL: "https://a.example", IdentityProviders: []IdentityProvider{{IdentityProvider: issuer.IdentityProvider{Name: "corp", Issuer: "https://accounts.google.com", ClientID: "{env.TEST_GOOGLE_CLIENT_ID}"}}}}, `identity_provider "corp": the client_id holds the placeholder {env.TEST_GOOGLE_CLIENT_ID}`},
		{"placeholder provider tenant", App{IssuerURL: "https://a.example", IdentityProviders: []IdentityProvider{{IdentityProvider: issuer.IdentityProvider{Name: "corp", Issuer: "https://login.microsoftonline.com/common/v2.0", ClientID: "app", Tenant: "{env.TEST_TENANT_ID}"}}}}, `identity_provider "corp": the tenant holds the placeholder {env.TEST_TENANT_ID}`},
		{"placeholder trusted_idp jwks_uri", App{IssuerURL: "https://a.example", TrustedIdPs: []issuer.TrustedIdP{{Issuer: "https://idp.example", JWKSURI: "https://idp.example/{env.TEST_KEYS}"}}}, `trusted_idp "https://idp.example": the jwks_uri holds the placeholder {env.TEST_KEYS}`},
		{"placeholder redirect_uri", App{IssuerURL: "https://a.example", Clients: []Client{{ID: "c", Public: true, RedirectURIs: []string{"http://127.0.0.1/cb", "https://{env.TEST_APP_HOST}/cb"}}}}, `client "c": the redirect_uri holds the placeholder {env.TEST_APP_HOST}`},
		{"placeholder post_logout_redirect_uri", App{IssuerURL: "https://a.example", Clients: []Client{{ID: "c", Public: true, RedirectURIs: []string{"http://127.0.0.1/cb"}, PostLogoutRedirectURIs: []string{"https://app.example/{env.TEST_BYE}"}}}}, `client "c": the post_logout_redirect_uri holds the placeholder {env.TEST_BYE}`},
		{"placeholder client jwks_uri", App{IssuerURL: "https://a.example", Clients: []Client{{ID: "c", JWKSURI: "https://app.example/{env.TEST_KEYS}"}}}, `client "c": the jwks_uri holds the placeholder {env.TEST_KEYS}`},
		{"placeholder agent jwks_uri", App{IssuerURL: "https://a.example", Agents: []Agent{{ID: "a", JWKSURI: "https://agent.example/{env.TEST_KEYS}"}}}, `agent "a": the jwks_uri holds the placeholder {env.TEST_KEYS}`},
		{"placeholder agent allowed client", App{IssuerURL: "https://a.example", Agents: []Agent{{ID: "a", SecretHash: testHash, AllowedClients: []string{"{env.TEST_CLIENT_ID}"}}}}, `agent "a": the allowed_clients entry holds the placeholder {env.TEST_CLIENT_ID}`},
		{"unreadable file hash", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: "{file./nonexistent/hash}"}}}, "{file./nonexistent/hash} resolves to nothing"},
		{"unknown group", App{IssuerURL: "https://a.example", Groups: []issuer.Group{{Name: "staff"}, {Name: "ops"}}, Users: []User{{Username: "u", PasswordHash: testHash, Groups: []string{"admins"}}}}, `user "u": group "admins" is not declared (groups: staff, ops)`},
		{"no groups", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: testHash, Groups: []string{"staff"}}}}, `group "staff" is not declared (no group is)`},
		{"agent", App{IssuerURL: "https://a.example", Agents: []Agent{{ID: "a", SecretHash: testHash, MaxDepth: 2}}}, ""},
		// JSON configuration: a negative duration is not the default.
		{"negative access_token_ttl", App{IssuerURL: "https://a.example", AccessTokenTTL: caddy.Duration(-time.Hour)}, "access_token_ttl -1h0m0s: want a positive duration"},
		{"negative refresh_token_ttl", App{IssuerURL: "https://a.example", RefreshTokenTTL: -1}, "refresh_token_ttl -1ns"},
		{"negative code_ttl", App{IssuerURL: "https://a.example", CodeTTL: -1}, "code_ttl -1ns"},
		{"negative id_token_ttl", App{IssuerURL: "https://a.example", IDTokenTTL: -1}, "id_token_ttl -1ns"},
		{"negative revocation_resync", App{IssuerURL: "https://a.example", RevocationResync: -1}, "revocation_resync -1ns"},
		{"negative revocation_max_stale", App{IssuerURL: "https://a.example", RevocationMaxStale: -1}, "revocation_max_stale -1ns"},
		{"agent unset env secret", App{IssuerURL: "https://a.example", Agents: []Agent{{ID: "a", SecretHash: "{env.TEST_NOT_SET}"}}}, `agent "a": secret: {env.TEST_NOT_SET} resolves to nothing`},
		// JSON configuration: a number is nanoseconds (caddy.Duration),
		// so 3600 written for an hour is 3.6µs: tokens expired when
		// issued, or a revocation read of the store in a busy loop.
		{"access_token_ttl in seconds", App{IssuerURL: "https://a.example", AccessTokenTTL: 3600}, `access_token_ttl 3.6µs: want at least 1s (a JSON number is nanoseconds: 3600 is 3.6µs; write a duration string such as "1h")`},
		{"refresh_token_ttl in seconds", App{IssuerURL: "https://a.example", RefreshTokenTTL: 2592000}, "refresh_token_ttl 2.592ms: want at least 1s"},
		{"code_ttl in seconds", App{IssuerURL: "https://a.example", CodeTTL: 300}, "code_ttl 300ns: want at least 1s"},
		{"id_token_ttl in seconds", App{IssuerURL: "https://a.example", IDTokenTTL: 3600}, "id_token_ttl 3.6µs: want at least 1s"},
		{"revocation_resync in seconds", App{IssuerURL: "https://a.example", RevocationResync: 5}, "revocation_resync 5ns: want at least 1s"},
		{"revocation_max_stale in seconds", App{IssuerURL: "https://a.example", RevocationResync: 1, RevocationMaxStale: 30}, "revocation_resync 1ns: want at least 1s"},
		{"recheck in seconds", App{IssuerURL: "https://a.example", IdentityProviders: []IdentityProvider{{IdentityProvider: issuer.IdentityProvider{Name: "corp"}, Recheck: 3600}}}, `identity_provider "corp": recheck 3.6µs: want at least 1s`},
		{"a second", App{IssuerURL: "https://a.example", AccessTokenTTL: caddy.Duration(time.Second), RevocationResync: caddy.Duration(time.Second), RevocationMaxStale: caddy.Duration(2 * time.Second)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.app.issuerConfig()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("issuerConfig() error = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("issuerConfig() error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestRevocationMaxStaleTiming: a revocation_max_stale the catch-ups
// cannot keep ahead of (under twice the resync interval) is a load error.
func TestRevocationMaxStaleTiming(t *testing.T) {
	for _, tt := range []struct {
		stale   time.Duration
		wantErr string
	}{
		{time.Second, "revocation max stale 1s: must be at least twice the resync interval 1s"},
		{2 * time.Second, ""},
		{0, ""}, // the default
	} {
		cfg, err := (&App{IssuerURL: "https://a.example", RevocationMaxStale: caddy.Duration(tt.stale)}).issuerConfig()
		if err == nil {
			err = issuer.CheckConfig(cfg)
		}
		if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("revocation_max_stale %v: error = %v, want %q", tt.stale, err, tt.wantErr)
		}
	}
}

func TestIssuerConfigTranslation(t *testing.T) {
	t.Setenv("TEST_USER_HASH", testHash)
	a := &App{
		IssuerURL:           "https://auth.example.com/t1",
		AccessTokenTTL:      caddy.Duration(15 * time.Minute),
		RefreshTokenTTL:     caddy.Duration(48 * time.Hour),
		CodeTTL:             caddy.Duration(2 * time.Minute),
		IDTokenTTL:          caddy.Duration(30 * time.Minute),
		RevocationResync:    caddy.Duration(2 * time.Second),
		RevocationMaxStale:  caddy.Duration(time.Minute),
		SigningAlg:          "EdDSA",
		RequirePAR:          true,
		DisableRegistration: true,
		CIMDAllowPrivate:    true,
		MinPasswordLength:   12,
		Users:               []User{{Username: "alice", PasswordHash: "{env.TEST_USER_HASH}", Groups: []string{"g"}, Name: "Alice", Email: "a@example.com"}},
		Groups:              []issuer.Group{{Name: "g", Scopes: map[string][]string{"*": {"read"}}}},
		Resources:           []issuer.Resource{{URL: "https://r.example/mcp", Scopes: []string{"read"}}},
	}
	got, err := a.issuerConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := issuer.Config{
		Issuer:              "https://auth.example.com/t1",
		AccessTokenTTL:      15 * time.Minute,
		RefreshTokenTTL:     48 * time.Hour,
		CodeTTL:             2 * time.Minute,
		IDTokenTTL:          30 * time.Minute,
		RevocationResync:    2 * time.Second,
		RevocationMaxStale:  time.Minute,
		SigningAlg:          "EdDSA",
		RequirePAR:          true,
		DisableRegistration: true,
		CIMDAllowPrivate:    true,
		MinPasswordLength:   12,
		DPoPReplay:          dpopReplay,               // the process's, kept across reloads
		Limits:              limitMemory(a.IssuerURL), // likewise, the issuer's
		Users:               []issuer.User{{Username: "alice", PasswordHash: testHash, Groups: []string{"g"}, Name: "Alice", Email: "a@example.com", Source: "config"}},
		Groups:              a.Groups,
		Resources:           a.Resources,
	}
	// One memory per issuer URL: the same again for it, another for
	// another issuer (a process running one configuration after another).
	first, again := limitMemory(a.IssuerURL), limitMemory(a.IssuerURL)
	if first != again || first == limitMemory(a.IssuerURL+"/other") {
		t.Error("limitMemory: want one memory per issuer URL, the same on every call")
	}
	// The same issuer spelt otherwise (what the issuer reads as one URL:
	// a trailing slash; the case of scheme and host, which name the same
	// server and accounts) keeps its memory: a reload respelling it
	// would otherwise hand an attacker a fresh budget and end the blocks.
	for _, u := range []string{a.IssuerURL + "/", "HTTPS://Auth.Example.COM/t1"} {
		if limitMemory(u) != first {
			t.Errorf("limitMemory(%s): another memory than %s's", u, a.IssuerURL)
		}
	}
	samePtr := cmp.Comparer(func(a, b *dpop.Replay) bool { return a == b })
	sameLimits := cmp.Comparer(func(a, b *issuer.LimitMemory) bool { return a == b })
	if diff := cmp.Diff(want, got, samePtr, sameLimits); diff != "" {
		t.Errorf("issuerConfig() mismatch (-want +got):\n%s", diff)
	}
}

func TestDecodeKey(t *testing.T) {
	key := []byte{0xfb, 0xff, 0xbf} // encodes with + and / (std) or - and _ (URL)
	for i := range 29 {
		key = append(key, byte(i*37))
	}
	std := base64.StdEncoding.EncodeToString(key)
	if !strings.ContainsAny(std, "+/") {
		t.Fatalf("test key %s has no + or /", std)
	}
	tests := []struct {
		in      string
		wantErr string
	}{
		{std, ""},
		{base64.RawStdEncoding.EncodeToString(key), ""},
		{base64.RawURLEncoding.EncodeToString(key), ""},
		{" " + std + "\n", ""},
		{"c2hvcnQ=", "want at least 32"},
		{"not base64!", "not base64"},
		{"", "want at least 32"},
		// A placeholder value, not a key (review s13-ops F2).
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "not random"},
		{base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("abcdefg"), 5)), "not random"},
	}
	for _, tt := range tests {
		got, err := decodeKey(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("decodeKey(%q) error = %v, want it to contain %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("decodeKey(%q) = %x, %v, want %x", tt.in, got, err, key)
		}
	}
	// Eight distinct bytes are enough.
	eight := bytes.Repeat([]byte("abcdefgh"), 4)
	if got, err := decodeKey(base64.StdEncoding.EncodeToString(eight)); err != nil || !bytes.Equal(got, eight) {
		t.Errorf("decodeKey(8 distinct bytes) = %x, %v, want %x", got, err, eight)
	}
}

// provisionApp provisions an app on the in-memory store.
func provisionApp(t *testing.T, a *App) *App {
	t.Helper()
	a.StorageRaw = caddyconfig.JSONModuleObject(MemoryStorage{}, "module", "memory", nil)
	ctx := newContext(t)
	if err := a.Provision(ctx); err != nil {
		t.Fatalf("Provision() = %v", err)
	}
	t.Cleanup(func() { _ = a.storage.(*MemoryStorage).Cleanup() })
	return a
}

// runApp provisions and starts an app on the in-memory store.
func runApp(t *testing.T, a *App) *App {
	t.Helper()
	provisionApp(t, a)
	if err := a.Start(); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	t.Cleanup(func() { _ = a.Stop() })
	return a
}

func TestAppSessionKeyPersisted(t *testing.T) {
	a := runApp(t, &App{IssuerURL: "http://127.0.0.1:8080"})
	k1, err := a.SessionKey(context.Background())
	if err != nil || len(k1) != 32 {
		t.Fatalf("SessionKey() = %x, %v, want 32 bytes", k1, err)
	}
	// A reload shares the store, so it gets the same key.
	b := runApp(t, &App{IssuerURL: "http://127.0.0.1:8080"})
	k2, err := b.SessionKey(context.Background())
	if err != nil || !bytes.Equal(k1, k2) {
		t.Errorf("SessionKey() after reload = %x, %v, want %x", k2, err, k1)
	}
}

func TestAppStartStop(t *testing.T) {
	a := provisionApp(t, &App{IssuerURL: "http://127.0.0.1:8080"})
	if a.purgeEvery != 5*time.Minute {
		t.Fatalf("purgeEvery = %v, README (Backup and restore, Size; Running on PostgreSQL, Purging) says every 5 minutes", a.purgeEvery)
	}
	a.purgeEvery = time.Millisecond
	if err := a.Start(); err != nil {
		t.Fatalf("Start() = %v", err)
	}
	time.Sleep(10 * time.Millisecond) // let the loop purge a few times
	if err := within(t, 5*time.Second, "Stop", a.Stop); err != nil {
		t.Fatalf("Stop() = %v", err)
	}
	select {
	case <-a.done:
	default:
		t.Error("Stop() returned before the purge loop ended")
	}
	if err := a.Stop(); err != nil {
		t.Errorf("second Stop() = %v, want nil", err)
	}
}

func TestAppProvisionErrors(t *testing.T) {
	edJWKS := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(edJWKS, []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		app     App
		wantErr string
	}{
		{"http issuer off loopback", App{IssuerURL: "http://auth.example.com"}, "http is allowed only for loopback"},
		{"duplicate user", App{IssuerURL: "https://a.example", Users: []User{{Username: "u", PasswordHash: testHash}, {Username: "u", PasswordHash: testHash}}}, `user "u"`},
		{"public client with secret", App{IssuerURL: "https://a.example", Clients: []Client{{ID: "c", Public: true, SecretHash: testHash}}}, "a public client has no secret or keys"},
		{"unknown auth method", App{IssuerURL: "https://a.example", Clients: []Client{{ID: "c", SecretHash: testHash, AuthMethod: "tls_client_auth"}}}, "tls_client_auth"},
		{"agent without credentials", App{IssuerURL: "https://a.example", Agents: []Agent{{ID: "a"}}}, `agent "a"`},
		{"agent with two credentials", App{IssuerURL: "https://a.example", Agents: []Agent{{ID: "a", SecretHash: testHash, JWKSURI: "https://a.example/jwks"}}}, "exactly one"},
		{"agent with a client's id", App{IssuerURL: "https://a.example", Clients: []Client{{ID: "x", Public: true}}, Agents: []Agent{{ID: "x", SecretHash: testHash}}}, `agent "x"`},
		// Its assertions could never be checked: no key of it signs RS256.
		{"client pinned to an algorithm none of its keys signs", App{IssuerURL: "https://a.example", Clients: []Client{{ID: "c", JWKSFile: edJWKS, AuthSigningAlg: "RS256", GrantTypes: []string{"client_credentials"}}}}, "no key of its jwks signs RS256"},
		{"revocation max stale below twice the resync", App{IssuerURL: "https://a.example", RevocationResync: caddy.Duration(20 * time.Second)}, "revocation max stale 30s: must be at least twice the resync interval 20s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tt.app
			a.StorageRaw = caddyconfig.JSONModuleObject(MemoryStorage{}, "module", "memory", nil)
			err := a.Provision(newContext(t))
			if a.storage != nil {
				_ = a.storage.(*MemoryStorage).Cleanup()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Provision() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestAtLeastASecond: a value under a second is refused; the hint that a
// JSON number is nanoseconds comes with a value a number of seconds
// makes, not with one written with its unit (a Caddyfile's 500ms).
func TestAtLeastASecond(t *testing.T) {
	for _, tt := range []struct {
		d    caddy.Duration
		want string
	}{
		{caddy.Duration(500 * time.Millisecond), "revocation_resync 500ms: want at least 1s"},
		{5, `revocation_resync 5ns: want at least 1s (a JSON number is nanoseconds: 5 is 5ns; write a duration string such as "1h")`},
		{2592000, `revocation_resync 2.592ms: want at least 1s (a JSON number is nanoseconds: 2592000 is 2.592ms; write a duration string such as "1h")`},
		{caddy.Duration(time.Second), ""},
		{0, ""},
	} {
		err := atLeastASecond("revocation_resync", tt.d)
		if got := fmt.Sprint(err); err == nil && tt.want != "" || err != nil && got != tt.want {
			t.Errorf("atLeastASecond(%d) = %v, want %q", int64(tt.d), err, tt.want)
		}
	}
}
