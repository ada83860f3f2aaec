package issuer

import (
	"net/http"
	"strings"
	"testing"
)

// TestHealth: 200 {"status":"ok"} while the store answers; 503 with a
// reason and no internals once it is closed; GET and HEAD only.
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
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	if status, body := get(http.MethodGet); status != http.StatusServiceUnavailable || body != `{"status":"unavailable","reason":"store unreachable"}` {
		t.Errorf("GET healthz with the store closed = %d %s, want 503 store unreachable", status, body)
	}
}
