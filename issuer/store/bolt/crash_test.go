//go:build unix

package bolt_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
)

// crashEnv tells a re-executed test binary to act as the crashing child:
// its value is "<path>;<round>".
const crashEnv = "CADDY_MCP_AUTH_BOLT_CRASH_CHILD"

const crashWrites = 50

func crashValue(round, i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("r%d-%d;", round, i)), 200)
}

// TestCrash kills a writer process with SIGKILL right after an Update
// returned, while another goroutine is in the middle of further Updates,
// and checks that every returned Update is in the file and the file is
// consistent. SIGKILL leaves the OS page cache intact, so this proves
// "committed before Update returns" and crash consistency; surviving power
// loss rests on bbolt's fsync on commit (TestSyncOnCommit).
func TestCrash(t *testing.T) {
	if arg := os.Getenv(crashEnv); arg != "" {
		crashChild(t, arg)
		return
	}
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	const rounds = 3
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s;%d", crashEnv, path, round))
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("round %d: child = %v, want killed by SIGKILL; output:\n%s", round, err, out)
		}
		if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child = %v, want killed by SIGKILL; output:\n%s", round, err, out)
		}
	}

	s, err := bolt.Open(path, bolt.Options{})
	if err != nil {
		t.Fatalf("Open after crash = %v, want nil", err)
	}
	err = s.View(context.Background(), func(tx store.Tx) error {
		for round := range rounds {
			for i := range crashWrites {
				key := fmt.Sprintf("r%d/%03d", round, i)
				got, err := tx.Get("fg", key)
				if err != nil {
					return fmt.Errorf("Get(fg, %s) after crash = %w, want the committed value", key, err)
				}
				if !bytes.Equal(got, crashValue(round, i)) {
					return fmt.Errorf("Get(fg, %s) after crash = %d bytes, want the committed value", key, len(got))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	rawView(t, path, func(tx *bbolt.Tx) {
		for err := range tx.Check() {
			t.Errorf("bbolt consistency check after crash: %v", err)
		}
	})
}

func crashChild(t *testing.T, arg string) {
	path, roundStr, ok := bytes.Cut([]byte(arg), []byte(";"))
	round, err := strconv.Atoi(string(roundStr))
	if !ok || err != nil {
		t.Fatalf("bad %s=%q", crashEnv, arg)
	}
	ctx := context.Background()
	s, err := bolt.Open(string(path), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Background churn, so the kill tends to land mid-transaction.
	go func() {
		for n := 0; ; n++ {
			_ = s.Update(ctx, func(tx store.Tx) error {
				for j := range 20 {
					key := fmt.Sprintf("r%d/%d/%d", round, n, j)
					if err := tx.Put("bg", key, crashValue(round, n), time.Time{}); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}()
	for i := range crashWrites {
		err := s.Update(ctx, func(tx store.Tx) error {
			return tx.Put("fg", fmt.Sprintf("r%d/%03d", round, i), crashValue(round, i), time.Time{})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Right after the last Update returned: no Close, no deferred code.
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
