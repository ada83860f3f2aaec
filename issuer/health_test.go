package issuer

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// TestHealth: 200 {"status":"ok"} while the store answers and holds a
// signing key; 503 with a reason and no internals once the keys are gone
// or the store is closed; GET and HEAD only.
func TestHealth(t *testing.T) {
	e := newTokEnv(t)
	get := func(method string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, e.iss.endpoint(pathHealth), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, strings.TrimSpace(readBody(t, resp))
	}
	if status, body := get(http.MethodGet); status != http.StatusOK || body != `{"status":"ok"}` {
		t.Errorf("GET healthz = %d %s, want 200 {\"status\":\"ok\"}", status, body)
	}
	if status, _ := get(http.MethodPost); status != http.StatusMethodNotAllowed {
		t.Errorf("POST healthz = %d, want 405", status)
	}
	// The store answers, but no key signs: nothing could be issued.
	var kids []string
	err := e.store.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.List(bucketKeys, "", func(k string, _ []byte) error { kids = append(kids, k); return nil }); err != nil {
			return err
		}
		for _, k := range kids {
			if err := tx.Delete(bucketKeys, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || len(kids) == 0 {
		t.Fatalf("delete the signing keys %v: %v", kids, err)
	}
	e.clock.Advance(keyReload)
	if status, body := get(http.MethodGet); status != http.StatusServiceUnavailable || body != `{"status":"unavailable","reason":"no signing key"}` {
		t.Errorf("GET healthz without a signing key = %d %s, want 503 no signing key", status, body)
	}
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	if status, body := get(http.MethodGet); status != http.StatusServiceUnavailable || body != `{"status":"unavailable","reason":"store unreachable"}` {
		t.Errorf("GET healthz with the store closed = %d %s, want 503 store unreachable", status, body)
	}
}
