package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestSecretInClearDebugLog: Caddy's log at DEBUG level holds the http
// app's configuration as loaded ("adjusted config"), so a gateway's
// session_key written in clear is in the log file too, and the warning
// says so; given as a placeholder, only the placeholder is logged.
func TestSecretInClearDebugLog(t *testing.T) {
	raw := make([]byte, 32)
	rand.Read(raw)
	key := base64.StdEncoding.EncodeToString(raw)
	t.Setenv("TEST_DEBUG_LOG_SESSION_KEY", key)
	for _, tt := range []struct {
		name, value string
		inLog       bool
	}{
		{"in clear", key, true},
		{"placeholder", "{env.TEST_DEBUG_LOG_SESSION_KEY}", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			logFile := filepath.Join(dir, "caddy.log")
			port := harness.StartFree(t, func(port int) string {
				return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]s/caddy
	log default {
		output file %[2]s
		level DEBUG
	}
	mcp_auth {
		issuer http://127.0.0.1:%[3]d
		storage memory
	}
}

http://127.0.0.1:%[3]d {
	mcp_issuer
	mcp_gateway {
		resource http://127.0.0.1:%[3]d/mcp
		session_key %[4]s
	}
	respond 204
}
`, dir, logFile, port, tt.value)
			})
			harness.WaitReady(t, fmt.Sprintf("http://127.0.0.1:%d/.well-known/oauth-authorization-server", port))
			time.Sleep(200 * time.Millisecond)
			b, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatal(err)
			}
			log := string(b)
			if got := strings.Contains(log, key); got != tt.inLog {
				t.Errorf("the DEBUG log holds the session_key: %v, want %v", got, tt.inLog)
			}
			var warning string
			for line := range strings.SplitSeq(log, "\n") {
				if strings.Contains(line, "session_key is written in the configuration") {
					warning = line
				}
			}
			switch {
			case tt.inLog && !strings.Contains(warning, "log at DEBUG level"):
				t.Errorf("warning %q: want it to name the log at DEBUG level", warning)
			case !tt.inLog && warning != "":
				t.Errorf("a placeholder warned: %s", warning)
			}
		})
	}
}
