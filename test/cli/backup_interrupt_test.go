//go:build unix

package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestBackupInterruptedLeavesNoCopy: `caddy mcp-auth backup` stopped with
// Ctrl-C (SIGINT), SIGTERM or a hang-up (SIGHUP: the SSH session it ran
// in dropped) while the copy arrives leaves nothing beside
// the target: its temporary file held part of the store, secret hashes
// and signing keys, and stayed there.
func TestBackupInterruptedLeavesNoCopy(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			// An admin endpoint that sends part of a copy and stalls.
			sent := make(chan struct{}, 1)
			release := make(chan struct{})
			admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/octet-stream")
				_, _ = w.Write(bytes.Repeat([]byte("signing key "), 4096))
				w.(http.Flusher).Flush()
				sent <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}))
			t.Cleanup(admin.Close)
			t.Cleanup(func() { close(release) })
			e := newEnv(t)
			dir := filepath.Join(e.Home, "backups")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(e.Bin, "mcp-auth", "backup", filepath.Join(dir, "mcp-auth.db"), "--address", admin.URL)
			cmd.Env, cmd.Dir = e.Vars, e.Home
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-sent:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("the backup command did not ask for the copy")
			}
			// The part sent is in the temporary file before the signal.
			deadline := time.Now().Add(10 * time.Second)
			for {
				entries, _ := os.ReadDir(dir)
				if len(entries) > 0 {
					if info, err := entries[0].Info(); err == nil && info.Size() > 0 {
						break
					}
				}
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatal("no temporary file written")
				}
				time.Sleep(10 * time.Millisecond)
			}
			_ = cmd.Process.Signal(sig)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err == nil {
					t.Errorf("backup stopped by %v = success, want a failure", sig)
				}
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("backup did not stop on %v", sig)
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				info, _ := e.Info()
				t.Errorf("left in the backup directory after %v: %s (%d bytes)", sig, e.Name(), info.Size())
			}
		})
	}
}
