//go:build linux

package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestDiskFullAnswers503: with the bbolt file's disk full, Caddy answers
// what needs a write with 503 (OAuth temporarily_unavailable with
// Retry-After at the issuer, 503 at the admin API), not 500, and writes
// nothing; tokens issued before still pass the gateway; once there is
// room the writes succeed, and after a kill -9 the file is whole and
// holds them.
func TestDiskFullAnswers503(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.Home, "small")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1048576"); err != nil {
		t.Skipf("mount a tmpfs for a full disk: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	r := startCrashRig(t, e, filepath.Join(dir, "mcp-auth.db"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/clients", `{"client_id":"cc","grant_types":["client_credentials"],"scopes":["read"],"token_endpoint_auth_method":"client_secret_post"}`)
	if st != http.StatusCreated {
		t.Fatalf("add client = %d %s", st, body)
	}
	secret := jsonField(body, "client_secret")
	token := func() harness.TokenResponse {
		var tr harness.TokenResponse
		tr.Status, _ = harness.PostForm(ctx, http.DefaultClient, r.issuer+"/token", url.Values{
			"grant_type": {"client_credentials"}, "resource": {r.issuer + "/mcp"}, "scope": {"read"},
			"client_id": {"cc"}, "client_secret": {secret},
		}, &tr)
		return tr
	}
	before := token()
	if before.Status != http.StatusOK {
		t.Fatalf("token before the disk filled = %d %s", before.Status, before.Error)
	}

	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for buf := make([]byte, 4096); ; {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	// The file has some free pages: add users until a commit needs more.
	added, full := 0, 0
	for i := 0; i < 200 && full == 0; i++ {
		switch st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/users", fmt.Sprintf(`{"username":"full%d","password":"a long password","name":%q}`, i, strings.Repeat("n", 200))); st {
		case http.StatusCreated:
			added++
		case http.StatusServiceUnavailable:
			full = i
		default:
			t.Fatalf("add user %d on a full disk = %d %s, want 201 or 503", i, st, body)
		}
	}
	if full == 0 {
		t.Fatal("200 users added on a full 1 MiB disk")
	}
	// Small writes may still fit in pages the file has free: each answer
	// is a success or 503 until the file has none.
	for i := 0; ; i++ {
		tr := token()
		if tr.Status == http.StatusServiceUnavailable && tr.Error == "temporarily_unavailable" {
			break
		}
		if tr.Status != http.StatusOK || i == 500 {
			t.Fatalf("token %d on a full disk = %d %s, want 200 or 503 temporarily_unavailable", i, tr.Status, tr.Error)
		}
	}
	for i := 0; ; i++ {
		st, reg, err := harness.Register(ctx, &harness.Metadata{RegistrationEndpoint: r.issuer + "/register"}, map[string]any{
			"redirect_uris": []string{crashRedirect}, "token_endpoint_auth_method": "client_secret_basic",
		})
		if err != nil {
			t.Fatal(err)
		}
		if st == http.StatusServiceUnavailable && reg["error"] == "temporarily_unavailable" {
			break
		}
		if st != http.StatusCreated || i == 100 {
			t.Fatalf("DCR %d on a full disk = %d %v, want 201 or 503 temporarily_unavailable", i, st, reg)
		}
	}
	if resp, body, err := harness.RawToolCall(ctx, http.DefaultClient, r.issuer+"/mcp", before.AccessToken, "echo", `{}`); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("gateway with a token from before, disk full = %v %.200s, want 200", err, body)
	}
	if st, body := crashAdmin(ctx, r, http.MethodGet, fmt.Sprintf("/mcp-auth/users/full%d", full), ""); st != http.StatusNotFound {
		t.Errorf("user whose addition answered 503 = %d %s, want 404", st, body)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if st, body := crashAdmin(ctx, r, http.MethodPost, "/mcp-auth/users", `{"username":"room","password":"a long password"}`); st != http.StatusCreated {
		t.Errorf("add user once there is room = %d %s, want 201", st, body)
	}
	if tr := token(); tr.Status != http.StatusOK {
		t.Errorf("token once there is room = %d %s, want 200", tr.Status, tr.Error)
	}
	r.kill()
	if err := bolt.Check(r.db); err != nil {
		t.Fatalf("after the disk was full and kill -9: %v", err)
	}
	r.start()
	for _, name := range []string{"room", fmt.Sprintf("full%d", added-1)} {
		if st, body := crashAdmin(ctx, r, http.MethodGet, "/mcp-auth/users/"+name, ""); st != http.StatusOK {
			t.Errorf("user %s after the restart = %d %s, want 200", name, st, body)
		}
	}
}
