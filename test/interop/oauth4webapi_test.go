package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// Clients of TestOAuth4WebAPIPeer. Test-only values.
const (
	peerClientID     = "peer-app"
	peerClientSecret = "peer-app-secret-0123456789abcdef"
	peerJWTClientID  = "peer-jwt-app"
	peerAgentID      = "peer-agent"
	peerAgentSecret  = "peer-agent-secret-0123456789abcdef"
	peerCallback     = "http://127.0.0.1/peer-callback" // as test/node/peer.mjs has it
)

// peerSteps are the steps of test/node/peer.mjs, every one of which must
// pass: a step missing from its report failed as surely as one marked so.
var peerSteps = []string{
	"discovery rfc8414", "discovery oidc", "resource discovery rfc9728",
	"gateway 401 without a token", "gateway 401 invalid_token",
	"client_credentials", "client_credentials rfc9068", "gateway call + 403 insufficient_scope", "token exchange rfc8693",
	"par + authorize + rfc9207 iss", "authorization error invalid_scope + rfc9207 iss", "authorization error invalid_target + rfc9207 iss",
	"authorization error oidc prompt=none login_required + rfc9207 iss", "authorization error oidc prompt=none login invalid_request + rfc9207 iss",
	"authorization error oidc request_not_supported + rfc9207 iss", "authorization error oidc request_uri_not_supported + rfc9207 iss", "par error",
	"authorization_code + id_token", "authorization_code rfc9068", "token exchange with actor_token rfc8693",
	"userinfo", "oidc standard claim scopes + userinfo", "userinfo invalid_token challenge",
	"refresh rotation", "introspection", "refresh replay", "code replay", "revocation",
	"token error invalid_client", "token error unsupported_grant_type", "token error invalid_scope", "token error invalid_target",
	"dpop par + authorize", "dpop authorization_code", "dpop refresh", "dpop userinfo", "dpop userinfo as Bearer",
	"dpop rfc9068 + proof", "dpop introspection", "dpop invalid proof at token", "revocation of a refresh token",
	"dcr rfc7591", "public client authorization_code + dpop", "public client refresh needs its key", "public client revocation needs its key",
	"dcr invalid_redirect_uri",
	"private_key_jwt client_credentials + introspection + revocation",
}

// TestOAuth4WebAPIPeer drives the issuer and the gateway with strict
// independent peers (test/node/peer.mjs): oauth4webapi, which checks
// every answer against the RFCs, through discovery (RFC 8414, OpenID
// Connect, RFC 9728), PAR, the authorization code with PKCE, login,
// consent and RFC 9207's iss, ID tokens, userinfo, refresh rotation and
// replay, client credentials, token exchange (also with an agent's
// actor_token), introspection, revocation,
// DPoP with nonces through the code flow, dynamic registration of a
// public client, private_key_jwt, the gateway's 401 and 403 challenges,
// and the error answers of each; jose verifies the access tokens as RFC 9068 says against the
// JWKS. Every step must pass.
func TestOAuth4WebAPIPeer(t *testing.T) {
	nt := requireNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	jwks, err := nt.run(ctx, t, nil, "idjag.mjs", "keys", "--dir", dir)
	if err != nil || !json.Valid(jwks) {
		t.Fatalf("idjag.mjs keys: %v, %q", err, jwks)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startStackWith(t, startDemo(t), fmt.Sprintf(`
		client %s {
			name "Peer app"
			secret %s
			grant_types client_credentials authorization_code refresh_token urn:ietf:params:oauth:grant-type:token-exchange
			auth_method client_secret_basic
			redirect_uri %s
			introspect
		}
		client %s {
			jwks %s
			grant_types client_credentials
			auth_method private_key_jwt
			introspect
		}
		agent %s {
			secret %s
			allowed_clients %s
			scopes %s
		}`, peerClientID, harness.HashPassword(t, peerClientSecret), peerCallback, peerJWTClientID, jwksFile,
		peerAgentID, harness.HashPassword(t, peerAgentSecret), peerClientID, baseScope))

	out, err := nt.run(ctx, t, nil, "peer.mjs", "--issuer", s.Issuer, "--resource", s.Resource,
		"--username", userName, "--password", userPassword,
		"--client-id", peerClientID, "--client-secret", peerClientSecret, "--scope", baseScope, "--write-scope", writeScope, "--write-tool", stepUpTool,
		"--agent-id", peerAgentID, "--agent-secret", peerAgentSecret, "--jwt-client-id", peerJWTClientID, "--jwt-client-key", filepath.Join(dir, "private.json"))
	if err != nil {
		t.Fatalf("peer.mjs: %v\n%s", err, out)
	}
	var report struct {
		Steps []struct {
			Name  string `json:"name"`
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("peer.mjs output is not one JSON report: %v\n%s", err, out)
	}
	passed := make(map[string]bool)
	for _, st := range report.Steps {
		if !st.OK {
			t.Errorf("%s: %s", st.Name, st.Error)
		}
		passed[st.Name] = st.OK
	}
	for _, name := range peerSteps {
		if _, ok := passed[name]; !ok {
			t.Errorf("%s: not run", name)
		}
	}
}
