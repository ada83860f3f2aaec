package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	backupUser     = "alice"
	backupPassword = "backup test password"
	// A non-loopback redirect URI: the issuer remembers consent for it.
	backupRedirect = "https://app.example.com/cb"
)

// backupCaddyfile: issuer and gateway with one user who may read.
func backupCaddyfile(adminPort, port int, db, hash string) string {
	return fmt.Sprintf(`{
	admin localhost:%[1]d
	mcp_auth {
		issuer http://localhost:%[2]d
		storage bolt %[3]s
		user %[4]s %[5]s {
			groups readers
		}
		group readers {
			scopes * read
		}
	}
}

http://localhost:%[2]d {
	mcp_issuer
	mcp_gateway {
		resource http://localhost:%[2]d/mcp
		scope read
	}
	respond "upstream"
}
`, adminPort, port, db, backupUser, hash)
}

// flow is one client's view of the issuer.
type flow struct {
	md       *harness.Metadata
	cfg      *oauth2.Config
	resource string
}

// authorize logs in with robot, approves if asked, and redeems the code.
func (f flow) authorize(ctx context.Context, robot *harness.Robot) (*oauth2.Token, error) {
	ar := harness.NewAuthRequest(f.cfg, f.resource)
	q, err := robot.Authorize(ctx, ar.URL)
	if err != nil {
		return nil, err
	}
	if q.Get("code") == "" {
		return nil, fmt.Errorf("authorization response %q: no code", q.Encode())
	}
	return ar.Exchange(ctx, f.cfg, q.Get("code"))
}

func consentShown(r *harness.Robot) bool {
	return slices.ContainsFunc(r.Pages, func(p *harness.Page) bool { return p.Form("consent") != nil })
}

// register registers a public client with Dynamic Client Registration.
func register(ctx context.Context, t *testing.T, md *harness.Metadata, name string) string {
	t.Helper()
	status, out, err := harness.Register(ctx, md, map[string]any{
		"client_name":                name,
		"redirect_uris":              []string{backupRedirect},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
	})
	id, _ := out["client_id"].(string)
	if err != nil || status != http.StatusCreated || id == "" {
		t.Fatalf("register %s = %d %v, %v", name, status, out, err)
	}
	return id
}

func jwksKids(ctx context.Context, t *testing.T, issuer string) []string {
	t.Helper()
	var md struct {
		JWKSURI string `json:"jwks_uri"`
	}
	getJSON(ctx, t, issuer+"/.well-known/oauth-authorization-server", &md)
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	getJSON(ctx, t, md.JWKSURI, &set)
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	slices.Sort(kids)
	return kids
}

// TestBackupRestore is the operator's round trip with the real binary: a
// backup taken with `caddy mcp-auth backup` while tokens are being issued,
// Caddy stopped, the file copied over the database, Caddy started. The
// dynamically registered client, the user's consent, a refresh token
// obtained before the backup and the signing keys all work again; what
// happened after the backup is gone.
func TestBackupRestore(t *testing.T) {
	e := newEnv(t)
	port, adminPort := harness.FreePort(t), harness.FreePort(t)
	db := filepath.Join(e.Home, "db", "mcp-auth.db")
	config := e.Write(t, "Caddyfile", backupCaddyfile(adminPort, port, db, harness.HashPassword(t, backupPassword)))
	stop := e.run(t, config, port)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	issuer := fmt.Sprintf("http://localhost:%d", port)
	md, err := harness.Discover(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	f := flow{md: md, resource: issuer + "/mcp"}
	f.cfg = md.Config(register(ctx, t, md, "Backup Test"), backupRedirect, "read", "offline_access")
	first := harness.NewRobot(backupUser, backupPassword, backupRedirect)
	tok, err := f.authorize(ctx, first)
	if err != nil {
		t.Fatalf("first authorization: %v", err)
	}
	if !consentShown(first) || tok.RefreshToken == "" {
		t.Fatalf("first authorization: consent shown %v, refresh token %v; want both", consentShown(first), tok.RefreshToken != "")
	}
	kids := jwksKids(ctx, t, issuer)
	// A second family, refreshed after the backup: its newer token is
	// one the restored store never issued.
	second, err := f.authorize(ctx, harness.NewRobot(backupUser, backupPassword, backupRedirect))
	if err != nil {
		t.Fatalf("second authorization: %v", err)
	}

	// Load: clients authorize, redeem and refresh while the backup runs,
	// through a client of their own: more than ten offline grants of one
	// connection would revoke the oldest, the two above.
	load := flow{md: md, resource: f.resource}
	load.cfg = md.Config(register(ctx, t, md, "Backup Load"), backupRedirect, "read", "offline_access")
	var (
		wg     sync.WaitGroup
		issued atomic.Int64
		done   = make(chan struct{})
	)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			robot := harness.NewRobot(backupUser, backupPassword, backupRedirect)
			for {
				select {
				case <-done:
					return
				default:
				}
				tk, err := load.authorize(ctx, robot)
				if err != nil {
					t.Errorf("authorization under load: %v", err)
					return
				}
				tr, err := harness.Refresh(ctx, md, load.cfg.ClientID, tk.RefreshToken, load.resource)
				if err != nil || tr.Status != http.StatusOK {
					t.Errorf("refresh under load = %+v, %v", tr, err)
					return
				}
				issued.Add(2)
			}
		}()
	}
	for issued.Load() < 6 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	backup := filepath.Join(e.Home, "mcp-auth-backup.db")
	before := issued.Load()
	out, err := e.Caddy(t, 60*time.Second, "mcp-auth", "backup", backup, "--address", fmt.Sprintf("localhost:%d", adminPort))
	during := issued.Load() - before
	if err != nil || !strings.Contains(out, "backed up ") {
		t.Fatalf("caddy mcp-auth backup = %v:\n%s", err, out)
	}
	for issued.Load() < before+during+4 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	close(done)
	wg.Wait()
	fi, err := os.Stat(backup)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", fi, err)
	}
	t.Logf("%s; %d tokens issued while it ran, %d in all; database %d bytes", strings.TrimSpace(out), during, issued.Load(), fileSize(t, db))

	// After the backup: a client the restore must not know, and the
	// second family rotated.
	late := register(ctx, t, md, "Late")
	newer, err := harness.Refresh(ctx, md, f.cfg.ClientID, second.RefreshToken, f.resource)
	if err != nil || newer.Status != http.StatusOK || newer.RefreshToken == "" {
		t.Fatalf("refresh after the backup = %+v, %v", newer, err)
	}

	// Restore: stop, copy the backup over the database, start.
	stop()
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e.run(t, config, port)

	tr, err := harness.Refresh(ctx, md, f.cfg.ClientID, tok.RefreshToken, f.resource)
	if err != nil || tr.Status != http.StatusOK || tr.AccessToken == "" || tr.RefreshToken == "" {
		t.Errorf("refresh token from before the backup, after restore = %+v, %v; want new tokens", tr, err)
	}
	// The newer token of the second family reads as a rotated one
	// reused: refused, and the family revoked, the token the backup holds
	// included (the README's restore section).
	if tr, err := harness.Refresh(ctx, md, f.cfg.ClientID, newer.RefreshToken, f.resource); err != nil || tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
		t.Errorf("the token rotated after the backup, after restore = %+v, %v; want invalid_grant", tr, err)
	}
	if tr, err := harness.Refresh(ctx, md, f.cfg.ClientID, second.RefreshToken, f.resource); err != nil || tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
		t.Errorf("the backup's token of that family, after its newer one was presented = %+v, %v; want invalid_grant (revoked)", tr, err)
	}
	again := harness.NewRobot(backupUser, backupPassword, backupRedirect)
	if _, err := f.authorize(ctx, again); err != nil {
		t.Errorf("registered client after restore: %v", err)
	} else if consentShown(again) {
		t.Error("after restore the consent page was shown again; want the consent given before the backup remembered")
	}
	if got := jwksKids(ctx, t, issuer); !slices.Equal(got, kids) {
		t.Errorf("signing keys after restore = %v, want %v", got, kids)
	}
	lf := f
	lf.cfg = md.Config(late, backupRedirect, "read")
	if _, err := lf.authorize(ctx, harness.NewRobot(backupUser, backupPassword, backupRedirect)); err == nil {
		t.Error("client registered after the backup still works after restore")
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func getJSON(ctx context.Context, t *testing.T, u string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", u, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}
