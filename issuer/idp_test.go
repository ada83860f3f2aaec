package issuer

import (
	"strings"
	"testing"
	"time"
)

// TestIdentityProviderConfig: load-time checks of identity_provider, with
// errors that name the problem; a valid one gets its defaults, those
// README gives (recheck 1h, scopes openid email profile).
func TestIdentityProviderConfig(t *testing.T) {
	valid := func() IdentityProvider {
		return IdentityProvider{Name: "corp", Issuer: "https://idp.example.com", ClientID: "c", GroupMap: map[string][]string{"eng": {"g"}}}
	}
	tests := []struct {
		name    string
		edit    func(c *Config)
		wantErr string
	}{
		{"valid", func(c *Config) {}, ""},
		{"bad name", func(c *Config) { c.IdentityProviders[0].Name = "Corp:x" }, "the name must be unique"},
		{"repeated name", func(c *Config) { c.IdentityProviders = append(c.IdentityProviders, valid()) }, "the name must be unique"},
		{"http issuer", func(c *Config) { c.IdentityProviders[0].Issuer = "http://idp.example.com" }, "http is allowed only for loopback"},
		{"no client_id", func(c *Config) { c.IdentityProviders[0].ClientID = "" }, "client_id is required"},
		{"no openid", func(c *Config) { c.IdentityProviders[0].Scopes = []string{"email"} }, "scopes must include openid"},
		{"no mapping", func(c *Config) { c.IdentityProviders[0].GroupMap = nil }, "no group mapping"},
		{"unknown local group", func(c *Config) { c.IdentityProviders[0].GroupMap = map[string][]string{"eng": {"nope"}} }, `maps to "nope", which is not a declared group`},
		{"bad domain", func(c *Config) { c.IdentityProviders[0].AllowedEmailDomains = []string{"a@b"} }, "is not a domain"},
		// A domain no address's can equal admitted nobody, silently.
		{"wildcard domain", func(c *Config) { c.IdentityProviders[0].AllowedEmailDomains = []string{"*.example.com"} }, `"*.example.com" is not a domain`},
		{"domain with a trailing dot", func(c *Config) { c.IdentityProviders[0].AllowedEmailDomains = []string{"example.com."} }, `"example.com." is not a domain`},
		{"domain with a leading dot", func(c *Config) { c.IdentityProviders[0].AllowedEmailDomains = []string{".example.com"} }, "is not a domain"},
		{"domain with a port", func(c *Config) { c.IdentityProviders[0].AllowedEmailDomains = []string{"example.com:25"} }, "is not a domain"},
		{"domain as a placeholder", func(c *Config) { c.IdentityProviders[0].AllowedEmailDomains = []string{"{env.DOMAIN}"} }, "is not a domain"},
		{"domains", func(c *Config) {
			c.IdentityProviders[0].AllowedEmailDomains = []string{"@Example.com", "mail.example-2.com", "xn--bcher-kva.example"}
		}, ""},
		{"negative recheck", func(c *Config) { c.IdentityProviders[0].Recheck = -1 }, "recheck must be positive"},
		{"local user in the namespace", func(c *Config) {
			c.Users = []User{{Username: "corp:alice", PasswordHash: "$2a$04$abcdefghijklmnopqrstuu5Y8m7S3UvUsm3yOq9G0pJbW6o3vT6uK"}}
		}, `names starting with "corp:" belong to identity_provider corp`},
		{"client in the namespace", func(c *Config) {
			c.Clients = []Client{{ID: "corp:bob", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"http://127.0.0.1/cb"}}}
		}, `client "corp:bob": names starting with "corp:" belong to identity_provider corp's users`},
		{"agent in the namespace", func(c *Config) { c.Agents = []Agent{{ID: "corp:bob", JWKSURI: "https://agent.example.com/jwks.json"}} },
			`agent "corp:bob": names starting with "corp:" belong to identity_provider corp's users`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Issuer: "https://auth.example.com", Groups: []Group{{Name: "g"}}, IdentityProviders: []IdentityProvider{valid()}}
			tt.edit(&cfg)
			checkConfigErr(t, cfg, tt.wantErr)
		})
	}
	cfg := Config{Groups: []Group{{Name: "g"}}, IdentityProviders: []IdentityProvider{valid()}}
	if err := validateIdentityProviders(&cfg); err != nil {
		t.Fatal(err)
	}
	p := cfg.IdentityProviders[0]
	if p.UserClaim != "sub" || p.GroupsClaim != "groups" || p.Recheck != time.Hour || p.DisplayName != "corp" || strings.Join(p.Scopes, " ") != "openid email profile" {
		t.Errorf("defaults = %+v", p)
	}
}

// checkConfigErr checks that CheckConfig(cfg) fails with an error
// containing wantErr, or passes for "".
func checkConfigErr(t *testing.T, cfg Config, wantErr string) {
	t.Helper()
	err := CheckConfig(cfg)
	switch {
	case wantErr == "" && err != nil:
		t.Fatalf("CheckConfig() = %v, want nil", err)
	case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
		t.Fatalf("CheckConfig() = %v, want an error containing %q", err, wantErr)
	}
}
