//go:build unix

package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestRestoreWithdrawEndsLaterTokens: access tokens issued after a
// backup belong to grants the restored store never held, so no
// revocation finds them (removing their client or user ends only the
// grants the store knows) and they would pass the gateway until they
// expire; withdrawing the signing keys after the restore, as README's
// restore section says, ends them, while what the backup holds goes on
// working: a refresh token from before it refreshes, and its new access
// token passes.
func TestRestoreWithdrawEndsLaterTokens(t *testing.T) {
	e := newEnv(t)
	r := startCrashRig(t, e, filepath.Join(e.Home, "db", "mcp-auth.db"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/users", fmt.Sprintf(`{"username":%q,"password":%q,"groups":["users"]}`, crashRefresher, crashPassword)); st != http.StatusCreated {
		t.Fatalf("add user = %d %s", st, body)
	}
	st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/clients", `{"client_id":"cc","grant_types":["client_credentials"],"scopes":["read"],"token_endpoint_auth_method":"client_secret_post"}`)
	if st != http.StatusCreated {
		t.Fatalf("add client = %d %s", st, body)
	}
	secret := jsonField(body, "client_secret")
	refresh := crashAuthorize(ctx, t, r)
	backup := filepath.Join(e.Home, "backup.db")
	if out, err := e.Caddy(t, time.Minute, "mcp-auth", "backup", backup, "--address", fmt.Sprintf("localhost:%d", r.adminPort)); err != nil {
		t.Fatalf("caddy mcp-auth backup = %v:\n%s", err, out)
	}
	var later harness.TokenResponse
	if st, err := harness.PostForm(ctx, http.DefaultClient, r.issuer+"/token", url.Values{
		"grant_type": {"client_credentials"}, "resource": {r.issuer + "/mcp"}, "scope": {"read"},
		"client_id": {"cc"}, "client_secret": {secret},
	}, &later); err != nil || st != http.StatusOK {
		t.Fatalf("token after the backup = %d %v", st, err)
	}
	call := func(token string) int {
		t.Helper()
		resp, _, err := harness.RawToolCall(ctx, http.DefaultClient, r.issuer+"/mcp", token, "echo", `{}`)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}

	r.kill()
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	if st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/keys/rotate", `{"withdraw": true}`); st != http.StatusOK {
		t.Fatalf("withdraw the signing keys after the restore = %d %s", st, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for call(later.AccessToken) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("access token issued after the backup still passes the gateway 10 s after the restore's key withdrawal, want 401")
		}
		time.Sleep(100 * time.Millisecond)
	}
	var tr harness.TokenResponse
	if st, err := harness.PostForm(ctx, http.DefaultClient, r.issuer+"/token", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {refresh}, "client_id": {"app"}, "resource": {r.issuer + "/mcp"},
	}, &tr); err != nil || st != http.StatusOK {
		t.Fatalf("refresh token from before the backup, after the restore and withdrawal = %d %s %v, want 200", st, tr.Error, err)
	}
	if st := call(tr.AccessToken); st != http.StatusOK {
		t.Errorf("access token refreshed after the withdrawal = %d, want 200", st)
	}
}
