package issuer

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
)

// TestStoredFormat reads users, clients, agents and cached CIMD documents
// as existing databases hold them (the bytes below are the format on
// disk, not derived from the types), and checks that writing them back
// gives the same bytes: the public types may change, the files may not.
func TestStoredFormat(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, bucket, key, raw string
		want                   any
	}{
		{
			name: "user", bucket: bucketUsers, key: "alice",
			raw:  `{"username":"alice","password_hash":"$2a$10$abc","groups":["eng"],"name":"Alice","email":"a@example.com","disabled":true,"source":"admin"}`,
			want: &User{Username: "alice", PasswordHash: "$2a$10$abc", Groups: []string{"eng"}, Name: "Alice", Email: "a@example.com", Disabled: true, Source: "admin"},
		},
		{
			name: "minimal user", bucket: bucketUsers, key: "bob",
			raw:  `{"username":"bob","password_hash":"$2a$10$def"}`,
			want: &User{Username: "bob", PasswordHash: "$2a$10$def"},
		},
		{
			name: "client", bucket: bucketClients, key: "app",
			raw: `{"client_id":"app","client_name":"App","secret_hash":"sha256:00","redirect_uris":["https://app.example/cb"],"grant_types":["authorization_code"],"token_endpoint_auth_method":"private_key_jwt","jwks":"eyJrZXlzIjpbXX0=","jwks_uri":"https://app.example/jwks","application_type":"web","resources":["https://mcp.example/"],"scopes":["notes:read"],"introspect":true,"source":"dcr","created_at":"2025-03-01T12:00:00Z","expires_at":"2025-03-01T13:00:00Z"}`,
			want: &Client{ID: "app", Name: "App", SecretHash: "sha256:00", RedirectURIs: []string{"https://app.example/cb"},
				GrantTypes: []string{"authorization_code"}, TokenEndpointAuthMethod: "private_key_jwt", JWKS: []byte(`{"keys":[]}`),
				JWKSURI: "https://app.example/jwks", ApplicationType: "web", Resources: []string{"https://mcp.example/"},
				Scopes: []string{"notes:read"}, Introspect: true, Source: "dcr", CreatedAt: at, ExpiresAt: at.Add(time.Hour)},
		},
		{
			name: "client with post-logout redirect URIs", bucket: bucketClients, key: "rp",
			raw:  `{"client_id":"rp","redirect_uris":["https://rp.example/cb"],"post_logout_redirect_uris":["https://rp.example/bye","https://rp.example/bye?x=1"],"created_at":"0001-01-01T00:00:00Z"}`,
			want: &Client{ID: "rp", RedirectURIs: []string{"https://rp.example/cb"}, PostLogoutRedirectURIs: []string{"https://rp.example/bye", "https://rp.example/bye?x=1"}},
		},
		{
			name: "client requiring PAR", bucket: bucketClients, key: "par",
			raw:  `{"client_id":"par","redirect_uris":["https://par.example/cb"],"require_pushed_authorization_requests":true,"created_at":"0001-01-01T00:00:00Z"}`,
			want: &Client{ID: "par", RedirectURIs: []string{"https://par.example/cb"}, RequirePushedAuthorizationRequests: true},
		},
		{
			name: "minimal client", bucket: bucketClients, key: "min",
			raw:  `{"client_id":"min","created_at":"0001-01-01T00:00:00Z"}`,
			want: &Client{ID: "min"},
		},
		{
			name: "agent", bucket: bucketAgents, key: "bot",
			raw: `{"agent_id":"bot","name":"Bot","secret_hash":"sha256:11","jwks":"eyJrZXlzIjpbXX0=","jwks_uri":"https://bot.example/jwks","allowed_clients":["app"],"scopes":["notes:read"],"max_depth":2,"disabled":true,"source":"admin","created_at":"2025-03-01T12:00:00Z"}`,
			want: &Agent{ID: "bot", Name: "Bot", SecretHash: "sha256:11", JWKS: []byte(`{"keys":[]}`), JWKSURI: "https://bot.example/jwks",
				AllowedClients: []string{"app"}, Scopes: []string{"notes:read"}, MaxDepth: 2, Disabled: true, Source: "admin", CreatedAt: at},
		},
		{
			name: "minimal agent", bucket: bucketAgents, key: "min",
			raw:  `{"agent_id":"min"}`,
			want: &Agent{ID: "min"},
		},
		{
			name: "cached client metadata document", bucket: bucketCIMD, key: "https://c.example/m",
			raw:  `{"client":{"client_id":"https://c.example/m","created_at":"0001-01-01T00:00:00Z"},"expires_at":"2025-03-01T12:00:00Z"}`,
			want: &Client{ID: "https://c.example/m"},
		},
	}
	get := map[string]func(store.Tx, string) (any, error){
		bucketUsers:   func(tx store.Tx, k string) (any, error) { return usersIn(tx).get(k) },
		bucketClients: func(tx store.Tx, k string) (any, error) { return clientsIn(tx).get(k) },
		bucketAgents:  func(tx store.Tx, k string) (any, error) { return agentsIn(tx).get(k) },
		bucketCIMD: func(tx store.Tx, k string) (any, error) {
			e, err := cimdIn(tx).get(k)
			if err != nil {
				return nil, err
			}
			return e.Client.client(), nil
		},
	}
	put := map[string]func(store.Tx, string, any) error{
		bucketUsers:   func(tx store.Tx, _ string, v any) error { return usersIn(tx).put(v.(*User)) },
		bucketClients: func(tx store.Tx, _ string, v any) error { return clientsIn(tx).put(v.(*Client)) },
		bucketAgents:  func(tx store.Tx, _ string, v any) error { return agentsIn(tx).put(v.(*Agent)) },
		bucketCIMD: func(tx store.Tx, k string, v any) error {
			return cimdIn(tx).put(k, &cimdEntry{Client: *clientRecord(v.(*Client)), ExpiresAt: at})
		},
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "mcp-auth.db"), bolt.Options{Now: func() time.Time { return at.Add(-time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := st.Update(ctx, func(tx store.Tx) error {
				return tx.Put(tt.bucket, tt.key, []byte(tt.raw), time.Time{})
			})
			if err != nil {
				t.Fatal(err)
			}
			var got any
			err = st.View(ctx, func(tx store.Tx) (err error) {
				got, err = get[tt.bucket](tx, tt.key)
				return err
			})
			if err != nil {
				t.Fatalf("read %s: %v", tt.raw, err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(Client{})); diff != "" {
				t.Errorf("read %s: (-want +got)\n%s", tt.raw, diff)
			}
			var raw []byte
			err = st.Update(ctx, func(tx store.Tx) error {
				if err := put[tt.bucket](tx, tt.key, got); err != nil {
					return err
				}
				raw, err = tx.Get(tt.bucket, tt.key)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if string(raw) != tt.raw {
				t.Errorf("written back = %s, want %s", raw, tt.raw)
			}
		})
	}
}
