package issuer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

func TestManageUsers(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	for _, tt := range []struct {
		name string
		u    User
		want error
	}{
		{"empty name", User{PasswordHash: passwordHash()}, ErrInvalidEntry},
		{"name with space", User{Username: "a b", PasswordHash: passwordHash()}, ErrInvalidEntry},
		{"fullwidth name", User{Username: "\uff41\uff4c\uff49\uff43\uff45", PasswordHash: passwordHash()}, ErrInvalidEntry},
		{"configured user", User{Username: tUser, PasswordHash: passwordHash()}, ErrConfigured},
		{"password, not a hash", User{Username: "dave", PasswordHash: "hunter2"}, ErrInvalidEntry},
		{"unknown group", User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"nope"}}, ErrInvalidEntry},
		{"ok", User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"staff"}, Email: "d@example.com"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.iss.PutUser(ctx, tt.u); !errors.Is(err, tt.want) {
				t.Fatalf("PutUser() error = %v, want %v", err, tt.want)
			}
		})
	}
	u, err := e.iss.dir.lookupUser(ctx, "dave")
	if err != nil || u.Source != "admin" || !passwordOK(t, e.iss, u, tPassword) {
		t.Fatalf("lookupUser(dave) = %+v, %v; want the stored user", u, err)
	}
	users, err := e.iss.Users(ctx)
	if err != nil || len(users) != 4 || users[0].Username != tUser || users[3].Username != "dave" {
		t.Fatalf("Users() = %+v, %v; want 3 configured + dave, by name", users, err)
	}
	for _, u := range users {
		if u.PasswordHash != "" || (u.Source != "config" && u.Source != "admin") {
			t.Errorf("Users() entry %s: hash exposed or source %q", u.Username, u.Source)
		}
	}

	nh, err := bcrypt.GenerateFromPassword([]byte("new password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	newHash := string(nh)
	for _, tt := range []struct {
		name, user, hash string
		want             error
	}{
		{"configured", tUser, newHash, ErrConfigured},
		{"unknown", "erin", newHash, store.ErrNotFound},
		{"not a hash", "dave", "new password", ErrInvalidEntry},
		{"ok", "dave", newHash, nil},
	} {
		t.Run("SetPassword "+tt.name, func(t *testing.T) {
			if err := e.iss.SetPassword(ctx, tt.user, tt.hash); !errors.Is(err, tt.want) {
				t.Fatalf("SetPassword() error = %v, want %v", err, tt.want)
			}
		})
	}
	u, _ = e.iss.dir.lookupUser(ctx, "dave")
	if !passwordOK(t, e.iss, u, "new password") || passwordOK(t, e.iss, u, tPassword) {
		t.Error("SetPassword did not replace the password")
	}

	// Deleting a user ends its grants. (dave logs in after the change of
	// password: a code from a login before it is refused.)
	e.clock.Advance(2 * time.Minute)
	code, verifier := e.issueCode(t, codeSpec{user: "dave", scopes: []string{"read", "offline_access"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.iss.DeleteUser(ctx, tUser); !errors.Is(err, ErrConfigured) {
		t.Errorf("DeleteUser(configured) error = %v, want ErrConfigured", err)
	}
	if err := e.iss.DeleteUser(ctx, "erin"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteUser(unknown) error = %v, want ErrNotFound", err)
	}
	if err := e.iss.DeleteUser(ctx, "dave"); err != nil {
		t.Fatalf("DeleteUser() error: %v", err)
	}
	// Re-created under the same name, the user inherits nothing.
	if err := e.iss.PutUser(ctx, User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, "")
	if a.str("error") != "invalid_grant" {
		t.Errorf("refresh of a deleted user's grant = %d %s, want invalid_grant", a.status, a.raw)
	}
	if e.active(t, tok.AccessToken) {
		t.Error("access token of a deleted user still active")
	}
}

// TestClientOfRefusedIDKept backs README's Upgrading: a client stored
// under an id the name rules now refuse (an NFKC-changed ligature, added
// by an earlier release) keeps working, its secret can be rotated and it
// can be deleted; it cannot be changed (PUT /clients/{id}), nor added
// again under that id (400).
func TestClientOfRefusedIDKept(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	const id = "\ufb01le-sync" // "ﬁle-sync": NFKC makes it "file-sync"
	if usableName(id, maxClientIDLen) {
		t.Fatalf("usableName(%q) = true, want the id refused now", id)
	}
	err := e.store.Update(ctx, func(tx store.Tx) error {
		return clientsIn(tx).put(&Client{ID: id, SecretHash: passwordHash(), TokenEndpointAuthMethod: "client_secret_basic",
			GrantTypes: []string{"client_credentials"}, Source: sourceAdmin, CreatedAt: e.clock.Now()})
	})
	if err != nil {
		t.Fatal(err)
	}
	if a := e.post(t, pathToken, ccForm(nil), id+":"+tPassword); a.status != 200 {
		t.Errorf("client credentials of the stored client = %d %s, want 200", a.status, a.raw)
	}
	secret, err := e.iss.RotateClientSecret(ctx, id)
	if err != nil {
		t.Fatalf("RotateClientSecret() = %v, want a new secret", err)
	}
	if a := e.post(t, pathToken, ccForm(nil), id+":"+secret); a.status != 200 {
		t.Errorf("client credentials with the rotated secret = %d %s, want 200", a.status, a.raw)
	}
	if _, err := e.iss.UpdateClient(ctx, Client{ID: id, TokenEndpointAuthMethod: "client_secret_basic", GrantTypes: []string{"client_credentials"}, Name: "Sync"}); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("UpdateClient(%q) = %v, want ErrInvalidEntry", id, err)
	}
	if err := e.iss.DeleteClient(ctx, id); err != nil {
		t.Fatalf("DeleteClient() = %v", err)
	}
	if err := e.iss.PutClient(ctx, Client{ID: id, SecretHash: passwordHash(), GrantTypes: []string{"client_credentials"}}); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("PutClient(%q) = %v, want ErrInvalidEntry", id, err)
	}
}

func TestManageClients(t *testing.T) {
	e := newTokEnv(t)
	ctx := t.Context()
	for _, tt := range []struct {
		name string
		c    Client
		want error
	}{
		{"empty id", Client{}, ErrInvalidEntry},
		{"configured id", Client{ID: tConf}, ErrConfigured},
		{"unknown method", Client{ID: "x", TokenEndpointAuthMethod: "tls_client_auth"}, ErrInvalidEntry},
		{"secret method without hash", Client{ID: "x", TokenEndpointAuthMethod: "client_secret_basic"}, ErrInvalidEntry},
		{"plain secret", Client{ID: "x", SecretHash: "hunter2"}, ErrInvalidEntry},
		{"public with secret", Client{ID: "x", TokenEndpointAuthMethod: "none", SecretHash: passwordHash()}, ErrInvalidEntry},
		{"public client credentials", Client{ID: "x", GrantTypes: []string{"client_credentials"}}, ErrInvalidEntry},
		{"unknown grant", Client{ID: "x", GrantTypes: []string{"password"}}, ErrInvalidEntry},
		{"wildcard redirect", Client{ID: "x", RedirectURIs: []string{"https://a.example.com/*"}}, ErrInvalidEntry},
		{"relative redirect", Client{ID: "x", RedirectURIs: []string{"/cb"}}, ErrInvalidEntry},
		{"bad jwks", Client{ID: "x", TokenEndpointAuthMethod: "private_key_jwt", JWKS: []byte(`{"keys":[{"kty":"EC"}]}`)}, ErrInvalidEntry},
		// A key set beside a secret is checked as a private_key_jwt
		// client's: a private key in it was stored.
		{"private key in jwks of a secret client", Client{ID: "x", SecretHash: passwordHash(), JWKS: []byte(`{"keys":[{` + testECKey + `,"d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}]}`)}, ErrInvalidEntry},
		{"bad jwks of a secret client", Client{ID: "x", TokenEndpointAuthMethod: "client_secret_post", SecretHash: passwordHash(), JWKS: []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)}, ErrInvalidEntry},
		{"bad resource", Client{ID: "x", Resources: []string{"mcp"}}, ErrInvalidEntry},
		{"ok", Client{ID: "backend", SecretHash: passwordHash(), GrantTypes: []string{"client_credentials"}}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := e.iss.PutClient(ctx, tt.c); !errors.Is(err, tt.want) {
				t.Fatalf("PutClient() error = %v, want %v", err, tt.want)
			}
		})
	}
	c, err := e.iss.dir.lookupClient(ctx, "backend")
	if err != nil || c.TokenEndpointAuthMethod != "client_secret_basic" || c.Source != "admin" || c.CreatedAt.IsZero() {
		t.Fatalf("lookupClient(backend) = %+v, %v; want an admin client_secret_basic client", c, err)
	}

	secret, err := e.iss.RotateClientSecret(ctx, "backend")
	if err != nil || len(secret) < 40 {
		t.Fatalf("RotateClientSecret() = %q, %v", secret, err)
	}
	if a := e.post(t, pathToken, ccForm(nil), "backend:"+secret); a.status != 200 {
		t.Errorf("client credentials with the new secret = %d %s", a.status, a.raw)
	}
	if a := e.post(t, pathToken, ccForm(nil), "backend:"+tPassword); a.status != 401 {
		t.Errorf("client credentials with the old secret = %d %s, want 401", a.status, a.raw)
	}
	if _, err := e.iss.RotateClientSecret(ctx, tConf); !errors.Is(err, ErrConfigured) {
		t.Errorf("RotateClientSecret(configured) error = %v, want ErrConfigured", err)
	}
	if err := e.iss.PutClient(ctx, Client{ID: "spa", RedirectURIs: []string{"https://spa.example.com/cb"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.iss.RotateClientSecret(ctx, "spa"); !errors.Is(err, ErrInvalidEntry) {
		t.Errorf("RotateClientSecret(public) error = %v, want ErrInvalidEntry", err)
	}

	clients, err := e.iss.Clients(ctx)
	if err != nil || len(clients) != 8 {
		t.Fatalf("Clients() = %d clients, %v; want 8", len(clients), err)
	}
	for _, c := range clients {
		if c.SecretHash != "" {
			t.Errorf("Clients() exposes the secret hash of %s", c.ID)
		}
	}
	if err := e.iss.DeleteClient(ctx, tConf); !errors.Is(err, ErrConfigured) {
		t.Errorf("DeleteClient(configured) error = %v, want ErrConfigured", err)
	}
	if err := e.iss.DeleteClient(ctx, "backend"); err != nil {
		t.Fatal(err)
	}
	if err := e.iss.DeleteClient(ctx, "backend"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteClient(deleted) error = %v, want ErrNotFound", err)
	}
	if a := e.post(t, pathToken, ccForm(nil), "backend:"+secret); a.status != 401 {
		t.Errorf("deleted client authenticates: %d %s", a.status, a.raw)
	}
}

// TestClientRedirectURIsBounded: an operator's client has at most as many
// redirect URIs and post-logout redirect URIs as a self-registered one
// (maxRedirectURIs), in the configuration (refused at load, naming the
// client and the list) and through the admin API (400).
func TestClientRedirectURIsBounded(t *testing.T) {
	if maxRedirectURIs != 20 {
		t.Fatalf("maxRedirectURIs = %d, README (mcp_auth, client) says at most 20 redirect URIs and 20 post-logout redirect URIs", maxRedirectURIs)
	}
	e := newTokEnv(t)
	uris := func(n int, path string) []string {
		out := make([]string, n)
		for k := range out {
			out[k] = fmt.Sprintf("https://app.example.com/%s/%d", path, k)
		}
		return out
	}
	for _, tt := range []struct {
		name               string
		redirects, logouts int
		wantErr            string
	}{
		{"at the bound", maxRedirectURIs, maxRedirectURIs, ""},
		{"too many redirect URIs", maxRedirectURIs + 1, 0, fmt.Sprintf(`client "a": too many redirect_uris (%d, at most %d)`, maxRedirectURIs+1, maxRedirectURIs)},
		{"too many post-logout redirect URIs", 1, maxRedirectURIs + 1, fmt.Sprintf(`client "a": post_logout_redirect_uris: too many redirect_uris (%d, at most %d)`, maxRedirectURIs+1, maxRedirectURIs)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config()
			cfg.Clients = append(cfg.Clients, Client{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: uris(tt.redirects, "cb"), PostLogoutRedirectURIs: uris(tt.logouts, "bye")})
			_, err := New(cfg, e.store)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("New() error = %v, want %q", err, tt.wantErr)
			}

			iss, _ := newAdminIssuer(t, nil)
			body, _ := json.Marshal(NewClientRequest{ID: "a", Public: true, RedirectURIs: uris(tt.redirects, "cb"), PostLogoutRedirectURIs: uris(tt.logouts, "bye")})
			want, msg := http.StatusCreated, ""
			if tt.wantErr != "" {
				want, msg = http.StatusBadRequest, strings.TrimPrefix(tt.wantErr, `client "a": `)
			}
			runAPI(t, adminServer(t, iss), apiCase{"add", "POST", "/mcp-auth/clients", string(body), want, msg})
		})
	}
}

// TestConfiguredResourceUserinfoNotShown: a configured resource with
// userinfo is refused naming the URL without it (the password is no
// configuration error's to print), and one without loads.
func TestConfiguredResourceUserinfoNotShown(t *testing.T) {
	e := newTokEnv(t)
	cfg := e.config()
	cfg.Resources = append(cfg.Resources, Resource{URL: "https://deploy:hunter2@api.example.com/mcp", Scopes: []string{"read"}})
	_, err := New(cfg, e.store)
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "https://api.example.com/mcp") {
		t.Errorf("New() error = %v, want one naming https://api.example.com/mcp, without the password", err)
	}
	cfg.Resources[len(cfg.Resources)-1].URL = "https://api.example.com/mcp"
	if _, err := New(cfg, e.store); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	e := newTokEnv(t)
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"plain password", func(c *Config) { c.Users = []User{{Username: "x", PasswordHash: "pw"}} }},
		{"repeated client", func(c *Config) { c.Clients = []Client{{ID: "a"}, {ID: "a"}} }},
		{"client secret not a hash", func(c *Config) { c.Clients = []Client{{ID: "a", SecretHash: "pw"}} }},
		// Every check of such a hash would hold a slot of the hash
		// gate for about a minute, and so would every unknown name's.
		{"password hash of cost 20", func(c *Config) { c.Users = []User{{Username: "x", PasswordHash: costlyHash(20)}} }},
		{"client secret hash of cost 17", func(c *Config) { c.Clients = []Client{{ID: "a", SecretHash: costlyHash(17)}} }},
		{"agent secret hash of cost 17", func(c *Config) { c.Agents = []Agent{{ID: "a", SecretHash: costlyHash(17)}} }},
		{"resource with fragment", func(c *Config) { c.Resources = []Resource{{URL: "https://a.example.com/#x"}} }},
		// As the gateway's resource (TestNewValidation): an empty
		// fragment parses as none, and a port no client can reach.
		{"resource with an empty fragment", func(c *Config) { c.Resources = []Resource{{URL: "https://a.example.com/mcp#"}} }},
		{"resource on port 0", func(c *Config) { c.Resources = []Resource{{URL: "https://a.example.com:0/mcp"}} }},
		{"resource on port 65536", func(c *Config) { c.Resources = []Resource{{URL: "https://[2001:db8::1]:65536/mcp"}} }},
		{"issuer with an empty fragment", func(c *Config) { c.Issuer = "https://auth.example.com#" }},
		{"issuer on port 0", func(c *Config) { c.Issuer = "https://auth.example.com:0" }},
		{"issuer on port 70000", func(c *Config) { c.Issuer = "https://[2001:db8::1]:70000" }},
		// A browser reads https://h:0443 as https://h: not the issuer
		// identifier configured, nor the resource.
		{"issuer on port 0443", func(c *Config) { c.Issuer = "https://auth.example.com:0443" }},
		// Every client resolves the dot segment, and sends the space
		// escaped: neither is the identifier, nor names its endpoints.
		{"issuer with a dot segment", func(c *Config) { c.Issuer = "https://auth.example.com/a/../t" }},
		{"issuer with an escaped dot segment", func(c *Config) { c.Issuer = "https://auth.example.com/%2e%2e/t" }},
		{"issuer ending in a dot segment", func(c *Config) { c.Issuer = "https://auth.example.com/t/." }},
		{"issuer with a raw space", func(c *Config) { c.Issuer = "https://auth.example.com/a b" }},
		{"issuer with raw non-ASCII", func(c *Config) { c.Issuer = "https://auth.example.com/café" }},
		// Sent escaped (%5C, %7B), and a browser reads \ as /: neither
		// is the identifier configured.
		{"issuer with a backslash", func(c *Config) { c.Issuer = `https://auth.example.com/t\x` }},
		{"issuer with a brace", func(c *Config) { c.Issuer = "https://auth.example.com/{t}" }},
		// An escaped trailing slash was trimmed from the decoded path
		// only: the identifier was https://auth.example.com/t, and
		// https://auth.example.com/a/ for the second.
		{"issuer ending in an escaped slash", func(c *Config) { c.Issuer = "https://auth.example.com/t%2F" }},
		{"issuer ending in two escaped slashes", func(c *Config) { c.Issuer = "https://auth.example.com/a%2F%2F" }},
		{"resource on port 08443", func(c *Config) { c.Resources = []Resource{{URL: "https://a.example.com:08443/mcp"}} }},
		{"identity provider on port 0443", func(c *Config) {
			c.IdentityProviders = []IdentityProvider{{Name: "corp", Issuer: "https://idp.example.com:0443", ClientID: "c"}}
		}},
		// Tokens for it would travel in clear (review s17-ops F2).
		{"resource plain http off loopback", func(c *Config) { c.Resources = []Resource{{URL: "http://mcp.example.com/mcp"}} }},
		{"resource not http", func(c *Config) { c.Resources = []Resource{{URL: "ftp://mcp.example.com/mcp"}} }},
		// As a gateway's resource: no client sends the userinfo (the
		// resource's metadata names it without), and every token's aud
		// would carry it; clients resolve a dot segment.
		{"resource with userinfo", func(c *Config) { c.Resources = []Resource{{URL: "https://deploy:hunter2@api.example.com/mcp"}} }},
		{"resource with a user name", func(c *Config) { c.Resources = []Resource{{URL: "https://api.example.com@evil.example/mcp"}} }},
		{"resource with a dot segment", func(c *Config) { c.Resources = []Resource{{URL: "https://api.example.com/x/../mcp"}} }},
		{"resource with an escaped dot segment", func(c *Config) { c.Resources = []Resource{{URL: "https://api.example.com/%2e%2e/mcp"}} }},
		{"resource ending in a dot segment", func(c *Config) { c.Resources = []Resource{{URL: "https://api.example.com/mcp/."}} }},
		// Only the first declaration's scopes would count.
		{"resource declared twice", func(c *Config) {
			c.Resources = []Resource{{URL: "https://mcp.example.com/mcp", Scopes: []string{"a"}}, {URL: "https://MCP.example.com/mcp/", Scopes: []string{"b"}}}
		}},
		// A token request's resource is matched with the default port
		// aside too (sameResource): the same resource to the issuer.
		{"resource declared twice, once with its default port", func(c *Config) {
			c.Resources = []Resource{{URL: "https://mcp.example.com/mcp", Scopes: []string{"a"}}, {URL: "https://mcp.example.com:443/mcp", Scopes: []string{"b"}}}
		}},
		// A scope is one RFC 6749 scope-token: one with a space would be
		// issued as one entry of the token's scope claim, which every
		// resource server reads as two scopes ("read admin" grants admin).
		{"resource scope with a space", func(c *Config) {
			c.Resources = []Resource{{URL: "https://mcp.example.com/mcp", Scopes: []string{"notes:read notes:admin"}}}
		}},
		{"resource scope with a quote", func(c *Config) {
			c.Resources = []Resource{{URL: "https://mcp.example.com/mcp", Scopes: []string{`notes"read`}}}
		}},
		{"resource scope empty", func(c *Config) { c.Resources = []Resource{{URL: "https://mcp.example.com/mcp", Scopes: []string{""}}} }},
		{"group scope with a space", func(c *Config) {
			c.Groups = []Group{{Name: "g", Scopes: map[string][]string{"https://mcp.example.com/mcp": {"notes:read notes:admin"}}}}
		}},
		{"group scope not ASCII", func(c *Config) {
			c.Groups = []Group{{Name: "g", Scopes: map[string][]string{"*": {"notes:réad"}}}}
		}},
		// Refused by the admin API, and so at load (review s17-ops F6).
		{"grant type misspelt", func(c *Config) {
			c.Clients = []Client{{ID: "a", SecretHash: passwordHash(), GrantTypes: []string{"client_credential"}}}
		}},
		{"public client with client_credentials", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", GrantTypes: []string{"client_credentials"}}}
		}},
		{"jwt-bearer without a trusted_idp", func(c *Config) {
			c.Clients = []Client{{ID: "a", SecretHash: passwordHash(), GrantTypes: []string{"urn:ietf:params:oauth:grant-type:jwt-bearer"}}}
		}},
		// A configured client's redirect URIs follow a registered
		// client's rules (review s16-admin F2).
		{"redirect URI plain http off loopback", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"http://app.example.com/cb"}}}
		}},
		{"redirect URI with a backslash", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{`https://app.example.com/cb\..\x`}}}
		}},
		{"redirect URI port with a leading zero", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"http://127.0.0.1:08080/cb"}}}
		}},
		{"redirect URI with a fragment", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"https://app.example.com/cb#x"}}}
		}},
		{"redirect URI with a Unicode host", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"https://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/cb"}}}
		}},
		{"redirect URI with userinfo", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"https://user@app.example.com/cb"}}}
		}},
		// And so do its post-logout redirect URIs: the browser goes there
		// as it does to a redirect URI.
		{"post-logout redirect URI plain http off loopback", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"https://app.example.com/cb"}, PostLogoutRedirectURIs: []string{"http://app.example.com/bye"}}}
		}},
		{"post-logout redirect URI with a wildcard", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", PostLogoutRedirectURIs: []string{"https://*.example.com/bye"}}}
		}},
		{"redirect URI whose query carries iss", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"https://app.example.com/cb?iss=x"}}}
		}},
		// A configured client may name any private-use scheme, but none
		// a browser runs or reads itself: /logout would send the browser
		// there unprompted when no one is signed in.
		{"post-logout redirect URI javascript:", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", PostLogoutRedirectURIs: []string{"javascript:alert(document.domain)//"}}}
		}},
		{"post-logout redirect URI JavaScript: in another case", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", PostLogoutRedirectURIs: []string{"JavaScript:alert(1)"}}}
		}},
		{"post-logout redirect URI data:", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", PostLogoutRedirectURIs: []string{"data:text/html,hi"}}}
		}},
		{"redirect URI vbscript:", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"vbscript:msgbox(1)"}}}
		}},
		{"redirect URI file:", func(c *Config) {
			c.Clients = []Client{{ID: "a", TokenEndpointAuthMethod: "none", RedirectURIs: []string{"file:///etc/passwd"}}}
		}},
		// The names the admin API, an identity provider's sign-in and a
		// configured agent are refused: a token's sub or client_id that
		// shows as another's, or holds the store's key separator.
		{"user name with a zero-width space", func(c *Config) { c.Users = []User{{Username: "alice\u200b", PasswordHash: passwordHash()}} }},
		{"user name with a trailing space", func(c *Config) { c.Users = []User{{Username: "alice ", PasswordHash: passwordHash()}} }},
		{"user name with a NUL", func(c *Config) { c.Users = []User{{Username: "bob\x00x", PasswordHash: passwordHash()}} }},
		{"user name with a line break", func(c *Config) { c.Users = []User{{Username: "bob\nx", PasswordHash: passwordHash()}} }},
		{"user name of dot segments", func(c *Config) { c.Users = []User{{Username: "a/../b", PasswordHash: passwordHash()}} }},
		{"client id with a zero-width space", func(c *Config) { c.Clients = []Client{{ID: "app\u200b", TokenEndpointAuthMethod: "none"}} }},
		{"client id with a NUL", func(c *Config) { c.Clients = []Client{{ID: "a\x00b", TokenEndpointAuthMethod: "none"}} }},
		{"client id with a right-to-left override", func(c *Config) { c.Clients = []Client{{ID: "ppa\u202eevil", TokenEndpointAuthMethod: "none"}} }},
		// Names NFKC normalisation changes: an upstream (or a database
		// collation) that normalises would read them as another's.
		{"fullwidth user name", func(c *Config) { c.Users = []User{{Username: "\uff41lice", PasswordHash: passwordHash()}} }},
		{"agent id of one-dot leaders", func(c *Config) {
			c.Agents = []Agent{{ID: "a/\u2024\u2024/b", SecretHash: passwordHash()}}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config()
			tt.mutate(&cfg)
			if _, err := New(cfg, e.store); err == nil {
				t.Fatal("New() error = nil, want an error")
			}
		})
	}
	// A configured client with a secret but no method is confidential;
	// loopback, https and private-use redirect URIs are fine, the last
	// also when the scheme is no reverse domain name (Cursor's; review
	// s16b F4), which a registration is refused.
	cfg := e.config()
	cfg.Clients = []Client{{ID: "a", SecretHash: passwordHash(),
		RedirectURIs: []string{"http://127.0.0.1/cb", "https://app.example.com/cb", "com.example.app:/cb", "cursor://anysphere.cursor-mcp/oauth/callback"}}}
	iss, err := New(cfg, e.store)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := iss.dir.lookupClient(t.Context(), "a"); c.Public() || c.Source != "config" {
		t.Errorf("client with a secret and no method = %+v, want confidential from config", c)
	}
}

// TestManageUserEndsSessionsAndConsents: a new password signs the user
// out everywhere; deleting the user also forgets its consents, so a new
// user of the same name starts from nothing.
func TestManageUserEndsSessionsAndConsents(t *testing.T) {
	e := newBrowserEnv(t, nil)
	ctx := t.Context()
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	if err := e.iss.PutUser(ctx, User{Username: "dave", PasswordHash: hash(bPassword), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	c := e.browser()
	login := func(password string) {
		t.Helper()
		if _, err := e.robot(c, e.url(pathAuthorize, webAuthParams(testChallenge)), bWebRedirect, "dave", password, "approve"); err != nil {
			t.Fatalf("robot: %v", err)
		}
	}
	// sentToLogin reports whether /authorize asks the browser to log in
	// (rather than answering the client at once: remembered consent).
	sentToLogin := func() bool {
		t.Helper()
		resp, err := c.Get(e.url(pathAuthorize, webAuthParams(testChallenge)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return strings.HasPrefix(resp.Header.Get("Location"), pathLogin+"?")
	}
	login(bPassword)
	if sentToLogin() {
		t.Fatal("/authorize after login asks to log in again, want the session kept")
	}
	other := e.browser() // alice's session must survive dave's changes
	if _, err := e.robot(other, e.url(pathAuthorize, webAuthParams(testChallenge)), bWebRedirect, bUser, bPassword, "approve"); err != nil {
		t.Fatal(err)
	}

	if err := e.iss.SetPassword(ctx, "dave", hash("new password")); err != nil {
		t.Fatal(err)
	}
	if !sentToLogin() {
		t.Error("/authorize after SetPassword answered with the old session, want a new login")
	}
	login("new password")

	if err := e.iss.DeleteUser(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	for _, k := range e.keys(bucketConsents) {
		if strings.HasPrefix(k, "dave\x00") {
			t.Errorf("consent %q of the deleted user kept, want it deleted", k)
		}
	}
	if err := e.iss.PutUser(ctx, User{Username: "dave", PasswordHash: hash(bPassword), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	if !sentToLogin() {
		t.Error("/authorize for the re-created user answered with the deleted user's session, want a new login")
	}
	if n := len(e.keys(bucketConsents)); n != 1 {
		t.Errorf("consents = %d, want 1 (alice's)", n)
	}
	resp, err := other.Get(e.url(pathAuthorize, webAuthParams(testChallenge)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Location"), bWebRedirect) {
		t.Errorf("alice's /authorize = %q, want her session and consent kept", resp.Header.Get("Location"))
	}
}

// passwordOK reports whether password is u's.
func passwordOK(t *testing.T, i *Issuer, u *User, password string) bool {
	t.Helper()
	ok, err := i.dir.checkPassword(t.Context(), u, password, false)
	if err != nil {
		t.Fatalf("checkPassword() error = %v", err)
	}
	return ok
}

// updateEnv is a token env on a bbolt file with two clients added at
// runtime: app (public; redirect URIs tRedirect and appRedirect; scopes
// read and write) and worker (client_secret_basic with secret tPassword;
// code, refresh and client credentials; scope read), and the admin API
// over it.
func updateEnv(t *testing.T) (*testEnv, *httptest.Server) {
	t.Helper()
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st, err := bolt.Open(filepath.Join(t.TempDir(), "mcp-auth.db"), bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := newTokEnvStore(t, st, clock)
	ctx := t.Context()
	for _, err := range []error{
		e.iss.PutClient(ctx, Client{ID: "app", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{tRedirect, appRedirect}, Scopes: []string{"read", "write"}}),
		e.iss.PutClient(ctx, Client{ID: "worker", SecretHash: passwordHash(), RedirectURIs: []string{tRedirect},
			GrantTypes: []string{grantAuthorizationCode, grantRefreshToken, grantClientCredentials}, Scopes: []string{"read"}}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Minute)
	return e, adminServer(t, e.iss)
}

const appRedirect = "https://app.example.com/cb"

// TestUpdateClientGrants: PUT /mcp-auth/clients/<id> keeps the grants
// that fit the new registration, the access and refresh tokens of a user
// and the client's own client credentials tokens, when it changes only
// the name or redirect URIs or widens the client; it revokes every grant
// the client holds when it narrows the scopes, resources or grant types,
// or changes the kind of authentication or the keys (client_secret_basic
// and client_secret_post are one kind: the same secret, sent another way;
// only the registered way is accepted). The secret stays unless the
// method no longer takes one.
func TestUpdateClientGrants(t *testing.T) {
	pub, err := publicJWK(jwtTestKey().Public())
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(map[string][]accesstoken.JWK{"keys": {pub}})
	for _, tt := range []struct {
		name, client, body string
		kept               bool
		// ccBasic is the status of worker's client credentials request with
		// its secret (basic) afterwards, 0 for app; ccPost, that worker is
		// now client_secret_post and gets a token with the secret in the
		// form.
		ccBasic int
		ccPost  bool
	}{
		{"name and redirect URIs", "app", `{"public":true,"client_name":"App","redirect_uris":["` + tRedirect + `","https://app.example.com/new"],"scopes":["read","write"]}`, true, 0, false},
		{"a scope added", "app", `{"public":true,"redirect_uris":["` + tRedirect + `"],"scopes":["read","write","admin"]}`, true, 0, false},
		{"scopes lifted (every scope)", "app", `{"public":true,"redirect_uris":["` + tRedirect + `"]}`, true, 0, false},
		{"grant types listed as the default", "app", `{"public":true,"redirect_uris":["` + tRedirect + `"],"grant_types":["refresh_token","authorization_code"],"scopes":["read","write"]}`, true, 0, false},
		{"a scope removed", "app", `{"public":true,"redirect_uris":["` + tRedirect + `"],"scopes":["read"]}`, false, 0, false},
		{"resources restricted", "app", `{"public":true,"redirect_uris":["` + tRedirect + `"],"resources":["` + tResource + `"],"scopes":["read","write"]}`, false, 0, false},
		// Its Bearer tokens would go on without a proof.
		{"DPoP required", "app", `{"public":true,"redirect_uris":["` + tRedirect + `"],"scopes":["read","write"],"dpop_bound_access_tokens":true}`, false, 0, false},
		{"refresh_token dropped", "app", `{"public":true,"redirect_uris":["` + tRedirect + `"],"grant_types":["authorization_code"],"scopes":["read","write"]}`, false, 0, false},
		{"confidential: name", "worker", `{"client_name":"Service","redirect_uris":["` + tRedirect + `"],"grant_types":["authorization_code","refresh_token","client_credentials"],"scopes":["read"]}`, true, 200, false},
		{"confidential: introspect", "worker", `{"introspect":true,"redirect_uris":["` + tRedirect + `"],"grant_types":["authorization_code","refresh_token","client_credentials"],"scopes":["read"]}`, true, 200, false},
		{"confidential: basic to post", "worker", `{"token_endpoint_auth_method":"client_secret_post","redirect_uris":["` + tRedirect + `"],"grant_types":["authorization_code","refresh_token","client_credentials"],"scopes":["read"]}`, true, 401, true},
		{"confidential to public", "worker", `{"public":true,"redirect_uris":["` + tRedirect + `"],"scopes":["read"]}`, false, 401, false},
		{"confidential to keys", "worker", `{"jwks":` + string(jwks) + `,"redirect_uris":["` + tRedirect + `"],"grant_types":["authorization_code","refresh_token","client_credentials"],"scopes":["read"]}`, false, 401, false},
		{"client credentials dropped", "worker", `{"redirect_uris":["` + tRedirect + `"],"scopes":["read"]}`, false, 400, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := updateEnv(t)
			secret := ""
			if tt.client == "worker" {
				secret = tPassword
			}
			code, verifier := e.issueCode(t, codeSpec{client: tt.client, scopes: []string{"read", "offline_access"}})
			user, err := e.exchange(t, tt.client, secret, code, verifier)
			if err != nil {
				t.Fatal(err)
			}
			var own string
			if tt.client == "worker" {
				a := e.post(t, pathToken, ccForm(nil), "worker:"+tPassword)
				if a.status != http.StatusOK {
					t.Fatalf("client credentials = %d %s", a.status, a.raw)
				}
				own = a.str("access_token")
			}
			e.clock.Advance(time.Second)
			runAPI(t, srv, apiCase{"update", "PUT", "/mcp-auth/clients/" + tt.client, tt.body, http.StatusOK, `"client_id":"` + tt.client + `"`})

			for _, tok := range []string{user.AccessToken, own} {
				if tok == "" {
					continue
				}
				if revoked := e.revokedToken(t, tok); revoked == tt.kept {
					t.Errorf("access token revoked = %v, want %v", revoked, !tt.kept)
				}
			}
			form := url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {user.RefreshToken}}
			basic := ""
			switch {
			case tt.client == "app":
				form.Set("client_id", "app")
			case tt.ccPost:
				form.Set("client_id", "worker")
				form.Set("client_secret", tPassword)
			default:
				basic = "worker:" + tPassword
			}
			if tt.kept {
				if a := e.post(t, pathToken, form, basic); a.status != http.StatusOK {
					t.Errorf("refresh after the update = %d %s, want 200", a.status, a.raw)
				}
			} else if got := e.grantOf(t, gidOf(t, user.AccessToken)); !got.Revoked {
				t.Error("the user's grant is not revoked")
			}

			if tt.ccBasic != 0 {
				if a := e.post(t, pathToken, ccForm(nil), "worker:"+tPassword); a.status != tt.ccBasic {
					t.Errorf("client credentials with the secret (basic) = %d %s, want %d", a.status, a.raw, tt.ccBasic)
				}
			}
			if tt.ccPost {
				f := ccForm(url.Values{"client_id": {"worker"}, "client_secret": {tPassword}})
				if a := e.post(t, pathToken, f, ""); a.status != http.StatusOK {
					t.Errorf("client credentials with the kept secret (post) = %d %s, want 200", a.status, a.raw)
				}
			}
			var stored storedClient
			if err := e.get(bucketClients, tt.client, &stored); err != nil {
				t.Fatal(err)
			}
			// Refused with either method: the secret was dropped.
			if keeps := tt.ccBasic != http.StatusUnauthorized || tt.ccPost; tt.client == "worker" && (stored.SecretHash == passwordHash()) != keeps {
				t.Errorf("stored secret hash %q, want the secret kept = %v", stored.SecretHash, keeps)
			}
		})
	}
}

// TestClientRemovalAndRotationRevoke: README (Admin API) says removing a
// client (DELETE /mcp-auth/clients/<id>) or rotating its secret (POST
// .../secret) revokes every grant it holds: users' grants to it, access
// and refresh tokens, and its own client credentials tokens; another
// client's grants stay. Through the admin routes, as the CLI sends them.
func TestClientRemovalAndRotationRevoke(t *testing.T) {
	for _, tt := range []struct {
		name, method, path string
		status             int
	}{
		{"secret rotated", "POST", "/mcp-auth/clients/worker/secret", http.StatusOK},
		{"removed", "DELETE", "/mcp-auth/clients/worker", http.StatusNoContent},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := updateEnv(t)
			code, verifier := e.issueCode(t, codeSpec{client: "worker", scopes: []string{"read", "offline_access"}})
			user, err := e.exchange(t, "worker", tPassword, code, verifier)
			if err != nil {
				t.Fatal(err)
			}
			cc := e.post(t, pathToken, ccForm(nil), "worker:"+tPassword)
			if cc.status != http.StatusOK {
				t.Fatalf("client credentials = %d %s", cc.status, cc.raw)
			}
			code, verifier = e.issueCode(t, codeSpec{client: "app", scopes: []string{"read", "offline_access"}})
			other, err := e.exchange(t, "app", "", code, verifier)
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Second)
			answer := runAPI(t, srv, apiCase{tt.name, tt.method, tt.path, "", tt.status, ""})
			secret := tPassword
			if tt.status == http.StatusOK {
				var rotated struct {
					Secret string `json:"client_secret"`
				}
				if err := json.Unmarshal([]byte(answer), &rotated); err != nil || rotated.Secret == "" {
					t.Fatalf("rotation answer %s: %v, want the new secret", answer, err)
				}
				secret = rotated.Secret
			}

			for name, tok := range map[string]string{"the user's access token": user.AccessToken, "the client's own token": cc.str("access_token")} {
				if !e.revokedToken(t, tok) {
					t.Errorf("%s: not revoked", name)
				}
			}
			if !e.grantOf(t, gidOf(t, user.AccessToken)).Revoked {
				t.Error("the user's grant to the client is not revoked")
			}
			// The refresh token is refused, with the new secret too:
			// the grant is gone.
			form := url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {user.RefreshToken}}
			if a := e.post(t, pathToken, form, "worker:"+secret); a.status == http.StatusOK {
				t.Errorf("refresh after the change = %d %s, want it refused", a.status, a.raw)
			}
			if e.revokedToken(t, other.AccessToken) {
				t.Error("another client's grant was revoked")
			}
			form = url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {other.RefreshToken}, "client_id": {"app"}}
			if a := e.post(t, pathToken, form, ""); a.status != http.StatusOK {
				t.Errorf("another client's refresh = %d %s, want 200", a.status, a.raw)
			}
		})
	}
}

// gidOf is an access token's grant id.
func gidOf(t *testing.T, raw string) string {
	t.Helper()
	_, c := claimsOf(t, raw)
	gid, _ := c["gid"].(string)
	return gid
}

// TestUpdateClientRedirectURIs: a redirect URI removed from a client's
// registration cannot be reached through an authorization that was under
// way: a code issued before the removal is refused (whichever URI it went
// to: a code does not record where it went when the request named none),
// and so is an authorization request still pending at the consent step
// for that URI, which ends on the issuer's page and issues no code. A
// code issued after, or one from before a change that removed no redirect
// URI, is redeemed.
func TestUpdateClientRedirectURIs(t *testing.T) {
	for _, tt := range []struct {
		name, redirects string
		refused         bool
	}{
		{"the code's redirect URI removed", `["` + appRedirect + `"]`, true},
		{"another redirect URI removed", `["` + tRedirect + `"]`, true},
		{"a redirect URI added", `["` + tRedirect + `","` + appRedirect + `","https://app.example.com/new"]`, false},
		{"the name changed", `["` + tRedirect + `","` + appRedirect + `"]`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, srv := updateEnv(t)
			code, verifier := e.issueCode(t, codeSpec{client: "app", redirect: tRedirect, scopes: []string{"read"}})
			e.clock.Advance(time.Second)
			body := `{"public":true,"client_name":"Renamed","redirect_uris":` + tt.redirects + `,"scopes":["read","write"]}`
			runAPI(t, srv, apiCase{"update", "PUT", "/mcp-auth/clients/app", body, http.StatusOK, ""})
			status, got := tokenAnswer(e.exchange(t, "app", "", code, verifier))
			switch {
			case tt.refused && (status != http.StatusBadRequest || got != "invalid_grant"):
				t.Errorf("code from before the update = %d %q, want 400 invalid_grant", status, got)
			case !tt.refused && status != http.StatusOK:
				t.Errorf("code from before the update = %d %q, want 200", status, got)
			}
			if strings.Contains(tt.redirects, `"`+tRedirect+`"`) {
				e.clock.Advance(time.Second)
				code, verifier := e.issueCode(t, codeSpec{client: "app", redirect: tRedirect, scopes: []string{"read"}})
				if status, got := tokenAnswer(e.exchange(t, "app", "", code, verifier)); status != http.StatusOK {
					t.Errorf("code from after the update = %d %q, want 200", status, got)
				}
			}
		})
	}

	t.Run("pending at the consent step", func(t *testing.T) {
		const uri = "https://app.example.com/cb"
		for _, tt := range []struct {
			name, redirects string
			refused         bool
			decision        string // default approve
		}{
			{"its redirect URI removed", `["` + bRedirect + `"]`, true, ""},
			{"the name changed", `["` + bRedirect + `","` + uri + `"]`, false, ""},
			// Deny's error, and with it the state, goes nowhere the client
			// no longer registers either (review s14-fresh F2).
			{"its redirect URI removed, denied", `["` + bRedirect + `"]`, true, "deny"},
			{"the name changed, denied", `["` + bRedirect + `","` + uri + `"]`, false, "deny"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				e := newBrowserEnv(t, nil)
				if err := e.iss.PutClient(t.Context(), Client{ID: "rt-app", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{bRedirect, uri}}); err != nil {
					t.Fatal(err)
				}
				srv := adminServer(t, e.iss)
				p := authParams(testChallenge)
				p.Set("client_id", "rt-app")
				p.Set("redirect_uri", uri)
				c, page := e.consentPage(t, p, bUser)
				runAPI(t, srv, apiCase{"update", "PUT", "/mcp-auth/clients/rt-app",
					`{"public":true,"client_name":"Renamed","redirect_uris":` + tt.redirects + `}`, http.StatusOK, ""})
				codes := e.count(bucketCodes)
				f := findForm(t, page, "consent")
				v := f.hidden
				v.Set("decision", cmp.Or(tt.decision, "approve"))
				resp, answer := e.postPage(t, c, f.action, v)
				loc := resp.Header.Get("Location")
				switch {
				case !tt.refused && tt.decision == "deny":
					if !strings.HasPrefix(loc, uri+"?error=access_denied") {
						t.Errorf("deny after a rename = %d, Location %q, want access_denied at %s", resp.StatusCode, loc, uri)
					}
				case tt.refused && (resp.StatusCode != http.StatusBadRequest || loc != "" || !strings.Contains(answer, "registration changed")):
					t.Errorf("consent after the redirect URI was removed = %d, Location %q, want 400 and the issuer's page", resp.StatusCode, loc)
				case tt.refused && e.count(bucketCodes) != codes:
					t.Error("a code was issued for the removed redirect URI")
				case !tt.refused && !strings.HasPrefix(loc, uri+"?code="):
					t.Errorf("consent after a rename = %d, Location %q, want a code at %s", resp.StatusCode, loc, uri)
				}
			})
		}
	})

	// The update commits after the consent step read the client and
	// before the code is written: the writing transaction reads it again.
	t.Run("removed while the code is issued", func(t *testing.T) {
		e, srv := updateEnv(t)
		ctx := t.Context()
		read, err := e.iss.dir.lookupClient(ctx, "app")
		if err != nil {
			t.Fatal(err)
		}
		runAPI(t, srv, apiCase{"update", "PUT", "/mcp-auth/clients/app", `{"public":true,"redirect_uris":["` + tRedirect + `"],"scopes":["read","write"]}`, http.StatusOK, ""})
		s := &session{Browser: "b", User: tUser, AuthTime: e.clock.Now()}
		ar := &authRequest{ClientID: "app", RedirectURI: appRedirect, RedirectParam: appRedirect}
		if _, err := e.iss.issueCode(ctx, s, read, ar, "", tResource, []string{"read"}, true); !errors.Is(err, errClientChanged) {
			t.Errorf("code for the removed redirect URI: %v, want errClientChanged", err)
		}
		ar = &authRequest{ClientID: "app", RedirectURI: tRedirect, RedirectParam: tRedirect}
		if _, err := e.iss.issueCode(ctx, s, read, ar, "", tResource, []string{"read"}, true); err != nil {
			t.Errorf("code for a redirect URI still registered: %v", err)
		}
	})
}

// TestRemovalDeletesConsents: removing a client or an agent (admin API,
// or a configuration without it) deletes the users' consents naming it,
// as the client or as the actor, and no other; a re-keyed one keeps them.
func TestRemovalDeletesConsents(t *testing.T) {
	const app, helper = "app", "helper" // added at runtime
	withoutClient := func(id string) envOption {
		return func(c *Config) {
			c.Clients = slices.DeleteFunc(slices.Clone(c.Clients), func(cl Client) bool { return cl.ID == id })
		}
	}
	withoutAgent := func(id string) envOption {
		return func(c *Config) {
			c.Agents = slices.DeleteFunc(slices.Clone(c.Agents), func(a Agent) bool { return a.ID == id })
		}
	}
	rekeyClient := func(c *Config) {
		c.Clients = slices.Clone(c.Clients)
		for n := range c.Clients {
			if c.Clients[n].ID == tConf {
				c.Clients[n].SecretHash = hashClientSecret("new secret")
			}
		}
	}
	tests := []struct {
		name   string
		remove func(t *testing.T, e *testEnv) error
		gone   string // the id whose consents go; "" none
	}{
		{"DeleteClient", func(t *testing.T, e *testEnv) error { return e.iss.DeleteClient(t.Context(), app) }, app},
		{"DeleteAgent", func(t *testing.T, e *testEnv) error { return e.iss.DeleteAgent(t.Context(), helper) }, helper},
		{"configured client left out", func(t *testing.T, e *testEnv) error {
			e.restart(e.store, withoutClient(tConf))
			return e.iss.ApplyConfigChanges(t.Context())
		}, tConf},
		{"configured agent left out", func(t *testing.T, e *testEnv) error {
			e.restart(e.store, withoutAgent(tAgent1))
			return e.iss.ApplyConfigChanges(t.Context())
		}, tAgent1},
		{"configured client re-keyed", func(t *testing.T, e *testEnv) error {
			e.restart(e.store, rekeyClient)
			return e.iss.ApplyConfigChanges(t.Context())
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newTokEnv(t)
			ctx := t.Context()
			if err := e.iss.PutClient(ctx, Client{ID: app, TokenEndpointAuthMethod: authNone, RedirectURIs: []string{tRedirect}}); err != nil {
				t.Fatal(err)
			}
			if err := e.iss.PutAgent(ctx, Agent{ID: helper, SecretHash: hashClientSecret(tAgentSecret)}); err != nil {
				t.Fatal(err)
			}
			if err := e.iss.ApplyConfigChanges(ctx); err != nil { // the first only records itself
				t.Fatal(err)
			}
			var want []string
			err := e.store.Update(ctx, func(tx store.Tx) error {
				want = want[:0]
				for _, user := range []string{tUser, "bob"} {
					for _, client := range []string{app, tConf, tPublic} {
						for _, actor := range []string{"", helper, tAgent1} {
							if err := consentsIn(tx).add(user, client, tResource, actor, []string{"read"}, "", e.clock.Now(), nil); err != nil {
								return err
							}
							if tt.gone == "" || client != tt.gone && actor != tt.gone {
								want = append(want, consentKey(user, client, tResource, actor))
							}
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.remove(t, e); err != nil {
				t.Fatalf("remove: %v", err)
			}
			got := e.keys(bucketConsents)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("consents after removing %q = %q, want %q", tt.gone, got, want)
			}
		})
	}
}

// TestReaddedClientAsksConsent: a client added under the id of a removed
// one gets no code from prompt=none for a user who consented to the
// removed one.
func TestReaddedClientAsksConsent(t *testing.T) {
	e := newBrowserEnv(t, nil)
	ctx := t.Context()
	if err := e.iss.PutClient(ctx, Client{ID: "partner", Name: "Partner A", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"https://a.example/cb"}}); err != nil {
		t.Fatal(err)
	}
	c := e.browser()
	p := webAuthParams(testChallenge)
	p.Set("client_id", "partner")
	p.Set("redirect_uri", "https://a.example/cb")
	if _, err := e.robot(c, e.url(pathAuthorize, p), "https://a.example/cb", bUser, bPassword, "approve"); err != nil {
		t.Fatalf("robot: %v", err)
	}
	if err := e.iss.DeleteClient(ctx, "partner"); err != nil {
		t.Fatal(err)
	}
	if err := e.iss.PutClient(ctx, Client{ID: "partner", Name: "Someone else", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{"https://b.example/cb"}}); err != nil {
		t.Fatal(err)
	}
	p.Set("redirect_uri", "https://b.example/cb")
	p.Set("prompt", "none")
	loc := locationOf(t, c, e.url(pathAuthorize, p))
	if got := loc.Query().Get("error"); got != "consent_required" {
		t.Errorf("prompt=none for the re-added client: Location = %s, want error consent_required", loc)
	}
}

// TestUsableName: user names, client ids and agent ids hold no space, no
// control (C1 included), no bidirectional control and no U+FFFD, and no
// "." or ".." segment; other Unicode is theirs.
func TestUsableName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"alice", true},
		{"kc:00u1a2b3c4", true},
		{"zoë", true},
		{"ユーザー", true},
		{"https://app.example/client.json", true},
		{"a@b.example", true},
		{strings.Repeat("a", 200), true},
		{strings.Repeat("a", 201), false},
		{"", false},
		{"a b", false},
		{"a\tb", false},
		{"a\x7fb", false},
		{"a\u0085b", false},  // NEL, a C1 control
		{"a\u009b2J", false}, // CSI
		{"a\u00a0b", false},  // no-break space
		{"a\u2028b", false},  // line separator
		{"eve\u202enimda", false},
		{"eve\u2066x", false},
		{"a\u200fb", false}, // right-to-left mark
		{"a\ufffdb", false},
		{"a\xffb", false}, // not UTF-8
		{"..", false},
		{"x/./y", false},
		// Invisible (review s15-fresh2 F1); the joiners names need pass.
		{"alice\u200b", false},     // zero-width space
		{"al\u2060ice", false},     // word joiner
		{"al\u00adice", false},     // soft hyphen
		{"\ufeffalice", false},     // BOM
		{"alice\U000e0041", false}, // tag A
		{"alice\u3164", false},     // Hangul filler
		{"al\u034fice", false},     // combining grapheme joiner
		{"alice\u2800", false},     // blank Braille pattern, drawn as a space
		{"\u2800", false},
		{"alice\U0001D159admin", false}, // musical null notehead, drawn as a space
		{"\U0001D159", false},
		{"\U0001D158\U0001D15A", true},  // noteheads that show
		{"alice\U00013441admin", false}, // Egyptian hieroglyph full blank, a blank space
		{"alice\U00013442admin", false}, // and half blank
		{"\U00013000\U00013443", true},  // hieroglyphs that show, a lost sign among them
		{"\u2801\u2803", true},          // Braille that shows dots
		// Marks that show nothing and that collations (UCA: ICU, MySQL's
		// utf8mb4_0900_*) and IDNA ignore, as they do U+034F:
		// "alice\ufe0f" sorts equal to alice, even accent- and
		// case-sensitively.
		{"alice\ufe0f", false},     // variation selector 16
		{"alice\U000e0100", false}, // variation selector 17
		{"ali\u180bce", false},     // Mongolian free variation selector
		{"ali\u17b4ce", false},     // Khmer inherent vowel, default-ignorable
		{"\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", true}, // Persian with ZWNJ
		{"\u0915\u094d\u200d\u0937", true},                         // Devanagari with ZWJ
		// The joiners only where a script needs them (RFC 5892's
		// CONTEXTJ): elsewhere they show nothing, and collations ignore
		// them ("alice\u200c" sorts equal to alice).
		{"alice\u200c", false},
		{"u-1\u200d", false},
		{"\u200calice", false},
		{"\u30e6\u30fc\u30b6\u30fc\u200c", false}, // after katakana
		{"\u0628\u064e\u200c\u0628", true},        // Arabic, a mark between
		// A non-joiner after an Arabic letter that joins nothing after
		// it (Joining_Type R: alef, dal, reh, waw) shows nothing: alef
		// ZWNJ beh reads as alef beh, which a collation takes it for.
		{"\u0627\u200c\u0628", false},             // alef, beh
		{"\u062f\u0631\u200c\u0647\u0627", false}, // "darha", after reh
		{"\u0628\u200c\u0627", true},              // beh joins: before alef it shows
		{"\u0628\u200c1", false},                  // before a digit, which joins nothing
		{"\u0dc1\u0dca\u200d\u0dbb\u0dd3", true},  // Sinhala "sri", ZWJ after al-lakuna
		{"id-\u0628\u200c\u0628", true},           // other characters beside
		// Unchanged by NFKC, so that no two names an upstream normalises
		// (a file system, a database collation) become one.
		{"\uff41\uff4c\uff49\uff43\uff45", false}, // fullwidth alice
		{"a/\u2024\u2024/b", false},               // one-dot leaders: NFKC "a/../b"
		{"\ufb01le", false},                       // fi ligature
		{"zoe\u0308", false},                      // NFD of zoë
		{"\uff71\uff98\uff7d", false},             // halfwidth katakana
		{"\ud55c\uad6d", true},                    // Hangul, composed
		// Unassigned in the Unicode this build's tables know (15.0), so
		// NFKC here leaves them, where an upstream on a newer Unicode
		// maps them: U+1CCD6 OUTLINED LATIN CAPITAL LETTER A (16.0) is
		// "A" to Node's String.prototype.normalize("NFKC").
		{"\U0001CCD6lice", false},
		{"u-\U0001CCF1", false}, // outlined digit one: "u-1"
		{"a\u0378b", false},     // unassigned in every version so far
		{"\ue000x", true},       // private use: no version maps it
	}
	for _, tt := range tests {
		if got := usableName(tt.name, 200); got != tt.want {
			t.Errorf("usableName(%q, 200) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRefusedChangeRevokesNothing: a removal, re-keying or narrowing the
// admin API refuses (an id the store does not hold, a client or agent
// without a secret to rotate, a client changed since read) revokes none
// of the grants it would have revoked, more than one batch of
// revokeAhead's among them.
func TestRefusedChangeRevokesNothing(t *testing.T) {
	const (
		cimd   = "https://app.example/client.json" // a client the store does not hold
		public = "public-app"
		keyed  = "keyed-agent"
	)
	for _, tt := range []struct {
		name   string
		grant  func(g *grant)
		change func(ctx context.Context, i *Issuer) error
	}{
		{"unknown user removed", userGrant("nobody"), func(ctx context.Context, i *Issuer) error { return i.DeleteUser(ctx, "nobody") }},
		{"unknown user disabled", userGrant("nobody"), func(ctx context.Context, i *Issuer) error { return i.DisableUser(ctx, "nobody") }},
		{"unknown client removed", clientGrant(cimd), func(ctx context.Context, i *Issuer) error { return i.DeleteClient(ctx, cimd) }},
		{"public client's secret rotated", clientGrant(public), func(ctx context.Context, i *Issuer) error {
			_, err := i.RotateClientSecret(ctx, public)
			return err
		}},
		{"narrowing of a client changed since read", clientGrant(public), func(ctx context.Context, i *Issuer) error {
			_, _, err := i.UpdateClientIfMatch(ctx, Client{ID: public, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none",
				Scopes: []string{"read"}}, []string{`"not its tag"`})
			return err
		}},
		{"unknown agent removed", agentGrant("nobody"), func(ctx context.Context, i *Issuer) error { return i.DeleteAgent(ctx, "nobody") }},
		{"keyed agent's secret rotated", agentGrant(keyed), func(ctx context.Context, i *Issuer) error {
			_, err := i.RotateAgentSecret(ctx, keyed)
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTokEnv(t)
			ctx := context.Background()
			if err := e.iss.PutClient(ctx, Client{ID: public, RedirectURIs: []string{tRedirect}, TokenEndpointAuthMethod: "none"}); err != nil {
				t.Fatal(err)
			}
			keys, _ := e.jwksOf(t)
			jwks, err := json.Marshal(map[string][]accesstoken.JWK{"keys": keys})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.iss.PutAgent(ctx, Agent{ID: keyed, JWKS: jwks}); err != nil {
				t.Fatal(err)
			}
			ids := createGrants(t, e, e.store, 2*revokeBatch+1, tt.grant)
			if err := tt.change(ctx, e.iss); err == nil {
				t.Fatal("the change = nil, want it refused")
			}
			for _, id := range ids {
				if revoked, err := e.iss.Revoked(ctx, "", id); revoked || err != nil {
					t.Fatalf("Revoked(grant %s) after the refused change = %v, %v; want false", id, revoked, err)
				}
			}
		})
	}
}

// TestManyGrantsRevoked: removing, disabling or re-keying a principal
// that holds many live grants (a user signing in hundreds of times an
// hour, a service client taking a token a second) succeeds and revokes
// all of them, on every store. Each grant revoked costs a transaction
// about ten reads and writes; revoked in the transaction that makes the
// change, 10,000 of them passed PostgreSQL's bound on one transaction
// (twice postgres.Options.Timeout, 20 s by default), and the change
// failed with store.ErrUnavailable every time, leaving the principal and
// its grants as they were. opBound models that bound by the work done,
// not the time taken, so that the test does not depend on the machine.
func TestManyGrantsRevoked(t *testing.T) {
	const (
		grants  = 400
		user    = busyUser
		client  = busyClient
		agent   = busyAgent
		idpUser = "corp:u-1"
	)
	for _, tt := range []struct {
		name   string
		grant  func(g *grant) // makes g one the change revokes
		change func(ctx context.Context, e *testEnv) error
	}{
		{"user removed", userGrant(user), func(ctx context.Context, e *testEnv) error { return e.iss.DeleteUser(ctx, user) }},
		{"user disabled", userGrant(user), func(ctx context.Context, e *testEnv) error { return e.iss.DisableUser(ctx, user) }},
		{"password set", userGrant(user), func(ctx context.Context, e *testEnv) error { return e.iss.SetPassword(ctx, user, passwordHash()) }},
		{"client removed", clientGrant(client), func(ctx context.Context, e *testEnv) error { return e.iss.DeleteClient(ctx, client) }},
		{"client secret rotated", clientGrant(client), func(ctx context.Context, e *testEnv) error {
			_, err := e.iss.RotateClientSecret(ctx, client)
			return err
		}},
		{"agent removed", agentGrant(agent), func(ctx context.Context, e *testEnv) error { return e.iss.DeleteAgent(ctx, agent) }},
		{"agent disabled", agentGrant(agent), func(ctx context.Context, e *testEnv) error { return e.iss.DisableAgent(ctx, agent) }},
		{"agent secret rotated", agentGrant(agent), func(ctx context.Context, e *testEnv) error {
			_, err := e.iss.RotateAgentSecret(ctx, agent)
			return err
		}},
		{"client's scopes narrowed", clientGrant(client), func(ctx context.Context, e *testEnv) error {
			_, err := e.iss.UpdateClient(ctx, Client{ID: client, TokenEndpointAuthMethod: authClientSecretBasic,
				GrantTypes: []string{grantClientCredentials}, Scopes: []string{"read"}})
			return err
		}},
		// A user revoking a connection on the connected apps page.
		{"connection revoked", userGrant(user), func(ctx context.Context, e *testEnv) error {
			return e.iss.revokeConnection(ctx, user, tPublic, tResource, "")
		}},
		// A reload that leaves a configured principal out or re-keys it.
		{"configured user left out", userGrant(tUser), func(ctx context.Context, e *testEnv) error {
			e.restart(e.store, func(c *Config) { c.Users = c.Users[1:] })
			return e.iss.ApplyConfigChanges(ctx)
		}},
		{"configured client re-keyed", clientGrant(tConf), func(ctx context.Context, e *testEnv) error {
			e.restart(e.store, func(c *Config) { c.Clients[1].SecretHash = hashClientSecret("new secret") })
			return e.iss.ApplyConfigChanges(ctx)
		}},
		{"configured agent left out", agentGrant(tAgent1), func(ctx context.Context, e *testEnv) error {
			e.restart(e.store, func(c *Config) { c.Agents = c.Agents[1:] })
			return e.iss.ApplyConfigChanges(ctx)
		}},
		// A reload that finds grants an instance not reloaded yet issued
		// under the credential it replaced (revokeReplacedGrants).
		{"grants under a replaced credential", func(g *grant) { clientGrant(tConf)(g); g.Credential = "replaced" }, func(ctx context.Context, e *testEnv) error {
			return e.iss.ApplyConfigChanges(ctx)
		}},
		// A reload that takes a scope away from a group of many users
		// (scopesTaken): the users are walked once, not one
		// transaction's read each.
		{"group of many users narrowed", userGrant("member-00000"), func(ctx context.Context, e *testEnv) error {
			for b := 0; b < 2500; b += 500 {
				err := e.store.Update(ctx, func(tx store.Tx) error {
					for k := b; k < b+500; k++ {
						if err := usersIn(tx).put(&User{Username: fmt.Sprintf("member-%05d", k), Groups: []string{"staff"}}); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
			e.restart(e.store, func(c *Config) {
				c.Groups = slices.Clone(c.Groups)
				c.Groups[0] = Group{Name: "staff", Scopes: map[string][]string{tResource: {"write"}, tOther: {"*"}}}
			})
			return e.iss.ApplyConfigChanges(ctx)
		}},
		// A reload that points the identity provider of a user it
		// provisioned elsewhere.
		{"user's identity provider re-pointed", userGrant(idpUser), func(ctx context.Context, e *testEnv) error {
			corpAt := func(issuer string) envOption {
				return func(c *Config) {
					c.IdentityProviders = []IdentityProvider{{Name: "corp", Issuer: issuer, ClientID: "c", GroupMap: map[string][]string{"*": {"readers"}}}}
				}
			}
			e.restart(e.store, corpAt("https://idp.example"))
			if err := e.iss.ApplyConfigChanges(ctx); err != nil {
				return err
			}
			err := e.store.Update(ctx, func(tx store.Tx) error {
				return usersIn(tx).put(&User{Username: idpUser, Source: sourceIdP, IdentityProvider: "corp"})
			})
			if err != nil {
				return err
			}
			e.restart(e.store, corpAt("https://other-idp.example"))
			return e.iss.ApplyConfigChanges(ctx)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			onEachStore(t, func(t *testing.T, st store.Store, clock *storetest.Clock) {
				ctx := context.Background()
				e := busyEnv(t, st, clock)
				ids := createGrants(t, e, st, grants, tt.grant)
				if err := tt.change(ctx, e); err != nil {
					t.Fatalf("the change with %d live grants = %v, want nil", grants, err)
				}
				wantRevoked(t, e, ids)
			})
		})
	}
}

// TestRevokeAheadPastStaleEntries: revoking ahead (revokeAhead) walks
// the principal's index entries however many in front of its grants are
// not ones it revokes: entries whose grant is gone or was revoked by an
// earlier version (which left them), grants delegated to a re-keyed
// agent (which keep), the user's grants to another resource of the
// revoked connection. revokeSome stopped at the first batch that revoked
// fewer than revokeBatch, so with 50 such entries at the front of the
// index every grant was left to the change's one transaction, which ran
// past the store's bound (opBound, as in TestManyGrantsRevoked).
func TestRevokeAheadPastStaleEntries(t *testing.T) {
	const (
		grants = 400
		front  = 400
		user   = busyUser
		agent  = busyAgent
	)
	inFront := func(of func(*grant)) func(*grant) {
		return func(g *grant) { of(g); g.ID = "a" + g.ID[1:] } // sorts before "g..."
	}
	for _, tt := range []struct {
		name   string
		front  func(g *grant)
		after  func(t *testing.T, st store.Store, ids []string) // to the front grants
		kept   bool                                             // the front grants are live ones the change keeps
		grant  func(g *grant)
		change func(ctx context.Context, e *testEnv) error
	}{
		{"grants gone", inFront(userGrant(user)), func(t *testing.T, st store.Store, ids []string) {
			for b := 0; b < len(ids); b += 100 {
				err := st.Update(context.Background(), func(tx store.Tx) error {
					for _, id := range ids[b:min(len(ids), b+100)] {
						if err := tx.Delete(bucketGrants, id); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}
		}, false, userGrant(user), func(ctx context.Context, e *testEnv) error { return e.iss.DeleteUser(ctx, user) }},
		{"revoked by an earlier version", inFront(func(g *grant) { userGrant(user)(g); g.Revoked = true }), nil, false,
			userGrant(user), func(ctx context.Context, e *testEnv) error { return e.iss.DisableUser(ctx, user) }},
		{"exchanged to the re-keyed agent", inFront(func(g *grant) { userGrant(tUser)(g); g.Delegates = []string{agent} }), nil, true,
			agentGrant(agent), func(ctx context.Context, e *testEnv) error {
				_, err := e.iss.RotateAgentSecret(ctx, agent)
				return err
			}},
		{"another resource of the connection", inFront(func(g *grant) { userGrant(user)(g); g.Resource = "https://other.example/mcp" }), nil, true,
			userGrant(user), func(ctx context.Context, e *testEnv) error {
				return e.iss.revokeConnection(ctx, user, tPublic, tResource, "")
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			onEachStore(t, func(t *testing.T, st store.Store, clock *storetest.Clock) {
				ctx := context.Background()
				e := busyEnv(t, st, clock)
				stale := createGrants(t, e, st, front, tt.front)
				if tt.after != nil {
					tt.after(t, st, stale)
				}
				ids := createGrants(t, e, st, grants, tt.grant)
				if err := tt.change(ctx, e); err != nil {
					t.Fatalf("the change with %d entries in front of %d live grants = %v, want nil", front, grants, err)
				}
				wantRevoked(t, e, ids)
				var index string // the entries by user and by agent: a gone grant's by client are not the principal's
				for _, k := range e.keys(bucketGrantIndex) {
					if !strings.HasPrefix(k, "c\x00") {
						index += k + "\n"
					}
				}
				for _, id := range stale {
					if revoked, err := e.iss.Revoked(ctx, "", id); tt.kept && (revoked || err != nil) {
						t.Fatalf("Revoked(grant %s, not the change's) after the change = %v, %v; want false", id, revoked, err)
					}
					if indexed := strings.Contains(index, "\x00"+id+"\n"); indexed != tt.kept {
						t.Fatalf("grant %s indexed after the change = %v, want %v", id, indexed, tt.kept)
					}
				}
			})
		})
	}
}

// The principals of busyEnv.
const (
	busyUser   = "mallory"
	busyClient = "busy-service"
	busyAgent  = "busy-agent"
)

// busyEnv is an issuer on st whose transactions fail past 2000 reads and
// writes (opBound: 200 grants revoked), which holds busyUser, busyClient
// and busyAgent, and has recorded its configuration.
func busyEnv(t *testing.T, st store.Store, clock *storetest.Clock) *testEnv {
	t.Helper()
	ctx := context.Background()
	e := newTokEnvStore(t, opBound{st, 2000}, clock)
	err := e.iss.PutUser(ctx, User{Username: busyUser, PasswordHash: passwordHash()})
	if err == nil {
		err = e.iss.PutClient(ctx, Client{ID: busyClient, SecretHash: secretHash(), GrantTypes: []string{grantClientCredentials}})
	}
	if err == nil {
		err = e.iss.PutAgent(ctx, Agent{ID: busyAgent, SecretHash: hashClientSecret(tAgentSecret)})
	}
	if err == nil {
		err = e.iss.ApplyConfigChanges(ctx) // the first only records itself
	}
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// wantRevoked fails t unless every grant of ids is revoked.
func wantRevoked(t *testing.T, e *testEnv, ids []string) {
	t.Helper()
	for _, id := range ids {
		if revoked, err := e.iss.Revoked(context.Background(), "", id); !revoked || err != nil {
			t.Fatalf("Revoked(grant %s) after the change = %v, %v; want true", id, revoked, err)
		}
	}
}

// createGrants stores n live grants of an hour on st, 100 to a
// transaction, each made by of whom (and under what id), and returns
// their ids.
func createGrants(t *testing.T, e *testEnv, st store.Store, n int, of func(*grant)) []string {
	t.Helper()
	now := e.clock.Now()
	ids := make([]string, n)
	for b := 0; b < n; b += 100 {
		err := st.Update(context.Background(), func(tx store.Tx) error {
			for k := b; k < min(n, b+100); k++ {
				g := &grant{ID: fmt.Sprintf("g%05d", k), Resource: tResource, Scopes: []string{"read"}, Issuer: e.iss.URL(),
					CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(time.Hour)}
				of(g)
				ids[k] = g.ID
				if err := grantsIn(tx).create(g); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// opBound is a store whose write transactions fail with
// store.ErrUnavailable past limit reads and writes, as one on PostgreSQL
// fails past its time bound.
type opBound struct {
	store.Store
	limit int
}

func (s opBound) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(&boundTx{Tx: tx, left: s.limit}) })
}

type boundTx struct {
	store.Tx
	left int
}

func (t *boundTx) op() error {
	if t.left--; t.left < 0 {
		return fmt.Errorf("%w: the transaction ran past its bound", store.ErrUnavailable)
	}
	return nil
}

func (t *boundTx) MayRunAlone() { store.MayRunAlone(t.Tx) }

func (t *boundTx) Get(bucket, key string) ([]byte, error) {
	if err := t.op(); err != nil {
		return nil, err
	}
	return t.Tx.Get(bucket, key)
}

func (t *boundTx) Put(bucket, key string, value []byte, expires time.Time) error {
	if err := t.op(); err != nil {
		return err
	}
	return t.Tx.Put(bucket, key, value, expires)
}

func (t *boundTx) Create(bucket, key string, value []byte, expires time.Time) error {
	if err := t.op(); err != nil {
		return err
	}
	return t.Tx.Create(bucket, key, value, expires)
}

func (t *boundTx) Delete(bucket, key string) error {
	if err := t.op(); err != nil {
		return err
	}
	return t.Tx.Delete(bucket, key)
}

func (t *boundTx) List(bucket, prefix string, fn func(key string, value []byte) error) error {
	if err := t.op(); err != nil {
		return err
	}
	return t.Tx.List(bucket, prefix, fn)
}

// userGrant, clientGrant and agentGrant make a grant the user's (to a
// client), the client's own or the agent's own.
func userGrant(user string) func(*grant) {
	return func(g *grant) { g.Subject, g.ClientID = user, tPublic }
}

func clientGrant(client string) func(*grant) {
	return func(g *grant) { g.Subject, g.ClientID, g.PrincipalType = client, client, principalClient }
}

func agentGrant(agent string) func(*grant) {
	return func(g *grant) { g.Subject, g.ClientID, g.PrincipalType = agent, agent, principalAgent }
}

// TestNameLimitInBytes: usableName bounds a name in bytes, and the
// refusal says so, at load and in the admin API: a user named with 70
// CJK characters (210 bytes) was refused as longer than "200
// characters", which it is not, so an operator upgrading with such a
// configured name was told a limit that did not apply.
func TestNameLimitInBytes(t *testing.T) {
	e := newTokEnv(t)
	name := strings.Repeat("名", 70)
	cfg := e.config()
	cfg.Users = []User{{Username: name, PasswordHash: passwordHash()}}
	_, err := New(cfg, e.store)
	if err == nil || !strings.Contains(err.Error(), "1 to 200 bytes") {
		t.Errorf("New() with a 210-byte user name = %v, want the limit in bytes", err)
	}
	cfg = e.config()
	cfg.Clients = []Client{{ID: "https://app.example.com/" + strings.Repeat("a", 480), TokenEndpointAuthMethod: authNone}}
	if _, err := New(cfg, e.store); err == nil || !strings.Contains(err.Error(), "1 to 500 bytes") {
		t.Errorf("New() with a 504-byte client id = %v, want the limit in bytes", err)
	}
	err = e.iss.PutUser(t.Context(), User{Username: name, PasswordHash: passwordHash()})
	if err == nil || !strings.Contains(err.Error(), "1 to 200 bytes") {
		t.Errorf("PutUser() of a 210-byte name = %v, want the limit in bytes", err)
	}
	err = e.iss.PutAgent(t.Context(), Agent{ID: name + strings.Repeat("名", 100), SecretHash: hashClientSecret(tAgentSecret)})
	if err == nil || !strings.Contains(err.Error(), "1 to 500 bytes") {
		t.Errorf("PutAgent() of a 510-byte id = %v, want the limit in bytes", err)
	}
}

// TestUserChangeEndsEveryToken: removing a user, or changing its
// password, revokes every token of the user's, as README's table of
// revocations says: its own, one delegated to an agent (requested_actor)
// and one an agent exchanged from the user's, access and refresh tokens
// alike; another user's stay.
func TestUserChangeEndsEveryToken(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(ctx context.Context, i *Issuer) error
	}{
		{"removed", func(ctx context.Context, i *Issuer) error { return i.DeleteUser(ctx, "dave") }},
		{"password changed", func(ctx context.Context, i *Issuer) error { return i.SetPassword(ctx, "dave", passwordHash()) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTokEnv(t)
			ctx := t.Context()
			if err := e.iss.PutUser(ctx, User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"staff"}}); err != nil {
				t.Fatal(err)
			}
			userTok := func(user, actor string) *oauth2.Token {
				code, verifier := e.issueCode(t, codeSpec{user: user, actor: actor, scopes: []string{"read", "offline_access"}})
				var opts []oauth2.AuthCodeOption
				if actor != "" {
					opts = append(opts, oauth2.SetAuthURLParam("actor_token", e.agentToken(t, actor, tAgentSecret)))
				}
				tok, err := e.exchange(t, tPublic, "", code, verifier, opts...)
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}
			own, delegated, bystander := userTok("dave", ""), userTok("dave", tAgent1), userTok(tUser, "")
			x := e.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(userTok("dave", "").AccessToken, e.agentToken(t, tAgent1, tAgentSecret)))
			if x.status != http.StatusOK {
				t.Fatalf("exchange = %d %s", x.status, x.raw)
			}
			exchanged := x.str("access_token")
			e.clock.Advance(time.Second)
			if err := tt.change(ctx, e.iss); err != nil {
				t.Fatal(err)
			}
			for name, tok := range map[string]string{"own": own.AccessToken, "delegated": delegated.AccessToken, "exchanged": exchanged} {
				if e.active(t, tok) {
					t.Errorf("the user's %s access token is active after the user was %s", name, tt.name)
				}
			}
			for name, tok := range map[string]*oauth2.Token{"own": own, "delegated": delegated} {
				a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, "")
				if a.status != http.StatusBadRequest || a.str("error") != "invalid_grant" {
					t.Errorf("refresh of the user's %s grant = %d %s, want invalid_grant", name, a.status, a.raw)
				}
			}
			if !e.active(t, bystander.AccessToken) {
				t.Errorf("another user's token is inactive after dave was %s", tt.name)
			}
		})
	}
}

// TestIssuerEscapedPathTrailingSlash: an issuer whose path keeps an
// escape Go would not write (%2F, %41, lower-case hex) is the same
// identifier with its trailing slash or without, as any other: the slash
// was dropped from the decoded path only, and the identifier became the
// decoded one (https://auth.example.com/a%2Fb/ published itself as
// https://auth.example.com/a/b, another issuer to every client).
func TestIssuerEscapedPathTrailingSlash(t *testing.T) {
	for _, tt := range []struct{ issuer, want string }{
		{"https://auth.example.com/a%2Fb/", "https://auth.example.com/a%2Fb"},
		{"https://auth.example.com/a%2Fb", "https://auth.example.com/a%2Fb"},
		{"https://auth.example.com/%41/", "https://auth.example.com/%41"},
		{"https://auth.example.com/t%c3%a9/", "https://auth.example.com/t%c3%a9"},
		{"https://auth.example.com/a%20b/", "https://auth.example.com/a%20b"},
		{"https://auth.example.com/t/", "https://auth.example.com/t"},
	} {
		iss, err := New(Config{Issuer: tt.issuer}, memory.New(memory.Options{}))
		if err != nil {
			t.Fatalf("New(%q) = %v", tt.issuer, err)
		}
		if got := iss.URL(); got != tt.want {
			t.Errorf("issuer %q: identifier %q, want %q", tt.issuer, got, tt.want)
		}
	}
}
