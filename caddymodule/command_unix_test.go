//go:build unix

package caddymodule

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
)

// backup refuses a target that exists and is not a regular file, and
// leaves it as it was: a symbolic link would be replaced by the rename
// (the file it points to never written), a FIFO would block the check
// for a store in use forever, a directory cannot be replaced.
func TestCommandBackupTargetNotRegular(t *testing.T) {
	app := boltApp(t)
	srv := adminServer(t, &AdminAPI{app: app})
	addr := strings.TrimPrefix(srv.URL, "http://")
	dir := t.TempDir()

	pointed := filepath.Join(dir, "pointed.db")
	if err := os.WriteFile(pointed, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(pointed, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, addr, "", "backup", link); err == nil || !strings.Contains(err.Error(), "not a regular file (a symbolic link)") {
		t.Errorf("mcp-auth backup onto a symbolic link = %v, want a refusal", err)
	}
	if m, err := lmode(link); err != nil || m&os.ModeSymlink == 0 {
		t.Errorf("after a refused backup the link has mode %v, %v, want it still a link", m, err)
	}
	if b, err := os.ReadFile(pointed); err != nil || !bytes.Equal(b, []byte("old")) {
		t.Errorf("after a refused backup the linked file holds %q, %v", b, err)
	}

	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runCLI(t, addr, "", "backup", sub); err == nil || !strings.Contains(err.Error(), "not a regular file (a directory)") {
		t.Errorf("mcp-auth backup onto a directory = %v, want a refusal", err)
	}

	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := runCLI(t, addr, "", "backup", fifo)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file (a named pipe)") {
			t.Errorf("mcp-auth backup onto a FIFO = %v, want a refusal", err)
		}
	case <-time.After(5 * time.Second):
		// Opening the FIFO for writing releases a reader blocked opening it.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
		<-done
		t.Error("mcp-auth backup onto a FIFO blocked for 5s")
	}
	if m, err := lmode(fifo); err != nil || m&os.ModeNamedPipe == 0 {
		t.Errorf("after a refused backup the FIFO has mode %v, %v, want it still a FIFO", m, err)
	}

	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("directory holds %v, want only what the test made (no temporary file)", entries)
	}
}

// lmode is the mode of path itself, not of what a link at path points to.
func lmode(path string) (os.FileMode, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	return fi.Mode(), nil
}

// TestBoltStorageFileOwnerOnly: a store restored with cp, or written by
// `curl -o` (the README's other way to take a backup), has the umask's
// mode; opened, it is made readable by its owner only, as bbolt creates
// it, since it holds the signing keys (review s17-ops F5). A file only
// its group may read (install -m 640 -g caddy, a umask of 027) is one
// other users can read too: the group's other members.
func TestBoltStorageFileOwnerOnly(t *testing.T) {
	for _, mode := range []os.FileMode{0o644, 0o755, 0o666, 0o640, 0o660} { // as cp, curl -o or install leave it
		t.Run(mode.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mcp-auth.db")
			st, err := bolt.Open(path, bolt.Options{})
			if err == nil {
				err = st.Close()
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, mode); err != nil {
				t.Fatal(err)
			}
			s := &BoltStorage{Path: path}
			if err := s.Provision(newContext(t)); err != nil {
				t.Fatal(err)
			}
			core, logs := observer.New(zap.WarnLevel)
			s.log = zap.New(core)
			if _, err := s.Open(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Cleanup() })
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("store file mode after open = %v, want -rw-------", fi.Mode().Perm())
			}
			// The README says so, with a warning.
			if w := logs.FilterMessageSnippet("made it readable and writable by its owner only").All(); len(w) != 1 || w[0].ContextMap()["path"] != path {
				t.Errorf("warnings %v, want one naming %s", logs.All(), path)
			}
		})
	}
}

// TestCommandUnixSocket: the CLI reaches an admin endpoint served on a
// unix socket (admin unix//path, which README recommends on a machine
// shared with others), named by --address as Caddy writes it.
func TestCommandUnixSocket(t *testing.T) {
	app := boltApp(t)
	srv := adminServer(t, &AdminAPI{app: app})
	sock := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	unix := &http.Server{Handler: srv.Config.Handler}
	go func() { _ = unix.Serve(l) }()
	t.Cleanup(func() { _ = unix.Close() })
	if out, _, err := runCLI(t, "unix/"+sock, "long enough\n", "user", "add", "sockuser"); err != nil || !strings.Contains(out, "added user sockuser") {
		t.Errorf("mcp-auth user add --address unix/%s = %q, %v, want the user added", sock, out, err)
	}
	if out, _, err := runCLI(t, "unix/"+sock, "", "user", "list"); err != nil || !strings.Contains(out, "sockuser") {
		t.Errorf("mcp-auth user list --address unix/%s = %q, %v, want the users", sock, out, err)
	}
}
