package issuer

import (
	"context"
	"encoding/base64"
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
	const oldJWKS = "eyJrZXlzIjogW3sia3R5IjogIkVDIiwgImNydiI6ICJQLTI1NiIsICJ4IjogImY4M09KM0QyeEYxQmc4dnViOXRMZTFnSE16Vjc2ZThUdXM5dVBIdlJWRVUiLCAieSI6ICJ4X0ZFelJ1OW0zNkhMTl90dWU2NTlMTnBYVzZwQ3lTdGlrWWpLSVdJNWEwIiwgImtpZCI6ICJrMSIsICJ1c2UiOiAic2lnIn1dfQ=="
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
			name: "identity provider's user", bucket: bucketUsers, key: "corp:u-1",
			raw: `{"username":"corp:u-1","password_hash":"","name":"Alice","source":"idp","identity_provider":"corp","idp_subject":"u-1","idp_groups":["eng"],"last_login":"2025-03-01T12:00:00Z","idp_issued_at":"2025-03-01T12:00:00Z","idp_issuer":"https://login.example/","idp_tenant":"acme"}`,
			want: &User{Username: "corp:u-1", Name: "Alice", Source: "idp", IdentityProvider: "corp", IdPSubject: "u-1", IdPGroups: []string{"eng"},
				LastLogin: at, IdPIssuedAt: at, IdPIssuer: "https://login.example/", IdPTenant: "acme"},
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
		// As 0c11651 wrote them (captured from its store): a client the
		// admin API was sent "scopes": [] and "resources": [], and an
		// agent "allowed_clients": [] and "scopes": [], were stored as
		// lists left out, the bytes of no restriction, so a later version
		// reads them as unrestricted and cannot tell them apart (README,
		// Upgrading); and a private_key_jwt client registered with
		// token_endpoint_auth_signing_alg ES384 and
		// userinfo_signed_response_alg, neither stored, so it is not held
		// to an algorithm.
		{
			name: "admin client sent empty lists to an earlier version", bucket: bucketClients, key: "c-empty",
			raw: `{"client_id":"c-empty","secret_hash":"sha256:265de7c5b2c444baeb8023a61ae47c4a97653aaa59f5f77c540fb16b90fccd23","grant_types":["client_credentials"],"token_endpoint_auth_method":"client_secret_basic","source":"admin","created_at":"2026-12-06T13:55:51.472559978Z"}`,
			want: &Client{ID: "c-empty", SecretHash: "sha256:265de7c5b2c444baeb8023a61ae47c4a97653aaa59f5f77c540fb16b90fccd23",
				GrantTypes: []string{"client_credentials"}, TokenEndpointAuthMethod: "client_secret_basic", Source: "admin",
				CreatedAt: time.Date(2026, 12, 6, 13, 55, 51, 472559978, time.UTC)},
		},
		{
			name: "admin agent sent empty lists to an earlier version", bucket: bucketAgents, key: "a-empty",
			raw: `{"agent_id":"a-empty","secret_hash":"sha256:4c476e06455b2165b396658b8d001b4989200dfcd5c4de057b5cd1ddc17df0d2","source":"admin","created_at":"2026-12-06T13:55:51.538750637Z"}`,
			want: &Agent{ID: "a-empty", SecretHash: "sha256:4c476e06455b2165b396658b8d001b4989200dfcd5c4de057b5cd1ddc17df0d2", Source: "admin",
				CreatedAt: time.Date(2026, 12, 6, 13, 55, 51, 538750637, time.UTC)},
		},
		{
			name: "private_key_jwt client registered with a signing alg at an earlier version", bucket: bucketClients, key: "1TTuhtOyE8Rc1i1cttJzYw",
			raw: `{"client_id":"1TTuhtOyE8Rc1i1cttJzYw","client_name":"PKJ","redirect_uris":["http://127.0.0.1/callback"],"grant_types":["authorization_code"],"token_endpoint_auth_method":"private_key_jwt","jwks":"` + oldJWKS + `","application_type":"native","source":"dcr","created_at":"2026-12-06T14:03:47.06721161Z","expires_at":"2026-12-06T15:03:47.06721161Z"}`,
			want: &Client{ID: "1TTuhtOyE8Rc1i1cttJzYw", Name: "PKJ", RedirectURIs: []string{"http://127.0.0.1/callback"},
				GrantTypes: []string{"authorization_code"}, TokenEndpointAuthMethod: "private_key_jwt", JWKS: mustBase64(t, oldJWKS),
				ApplicationType: "native", Source: "dcr", CreatedAt: time.Date(2026, 12, 6, 14, 3, 47, 67211610, time.UTC),
				ExpiresAt: time.Date(2026, 12, 6, 15, 3, 47, 67211610, time.UTC)},
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

func mustBase64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
