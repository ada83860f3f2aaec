package issuer

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
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

func TestConfigValidation(t *testing.T) {
	e := newTokEnv(t)
	for _, tt := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"plain password", func(c *Config) { c.Users = []User{{Username: "x", PasswordHash: "pw"}} }},
		{"repeated client", func(c *Config) { c.Clients = []Client{{ID: "a"}, {ID: "a"}} }},
		{"client secret not a hash", func(c *Config) { c.Clients = []Client{{ID: "a", SecretHash: "pw"}} }},
		{"resource with fragment", func(c *Config) { c.Resources = []Resource{{URL: "https://a.example.com/#x"}} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config()
			tt.mutate(&cfg)
			if _, err := New(cfg, e.store); err == nil {
				t.Fatal("New() error = nil, want an error")
			}
		})
	}
	// A configured client with a secret but no method is confidential.
	cfg := e.config()
	cfg.Clients = []Client{{ID: "a", SecretHash: passwordHash()}}
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
	ok, err := i.dir.checkPassword(t.Context(), u, password)
	if err != nil {
		t.Fatalf("checkPassword() error = %v", err)
	}
	return ok
}
