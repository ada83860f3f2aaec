package idp

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestFederatedAccessLogCodeRedacted: the provider sends the browser
// back to /login/<name>/callback with its code and state in the query,
// which Caddy's access log records as the request's uri; the README's
// `log` block keeps both out, and the sign-in still completes.
func TestFederatedAccessLogCodeRedacted(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "access.log")
	block, err := harness.AccessLogBlock(string(readme), logPath)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	s := startStackWith(t, "1h", block)
	s.idp.setAccounts(t, map[string]account{accountAlice: alice})

	r := newRobot(s.Redirect)
	if tok, out := s.authorize(t, r, accountAlice, nil); tok == nil {
		t.Fatalf("sign-in ended on %s (%d): %s", out.page.URL, out.page.Status, out.page.Text())
	}
	var code, state string
	l := r.Client.Transport.(*urlLog)
	l.mu.Lock()
	for _, u := range l.urls {
		if u.Path == "/login/"+idpName+"/callback" {
			code, state = u.Query().Get("code"), u.Query().Get("state")
		}
	}
	l.mu.Unlock()
	if code == "" || state == "" {
		t.Fatal("no redirect back from the provider with a code and state")
	}

	// Caddy writes the line when the request is done.
	var log []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		log, _ = os.ReadFile(logPath)
		if bytes.Contains(log, []byte("/callback?")) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !bytes.Contains(log, []byte("/callback?")) {
		t.Fatalf("no callback request in the access log (%d bytes)", len(log))
	}
	for what, v := range map[string]string{"code": code, "state": state} {
		if bytes.Contains(log, []byte(v)) {
			t.Errorf("the access log holds the provider's %s", what)
		}
	}
}
