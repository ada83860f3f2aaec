package issuer

import (
	"testing"
	"time"
)

// revoked is what the gateway's Revoked hook says of a jti and grant id;
// the set must be current.
func (e *testEnv) revoked(t testing.TB, jti, gid string) bool {
	t.Helper()
	got, err := e.iss.Revoked(t.Context(), jti, gid)
	if err != nil {
		t.Fatalf("Revoked(%q, %q) error: %v", jti, gid, err)
	}
	return got
}

// neverStale is a RevocationMaxStale no test clock reaches.
const neverStale = 100 * 365 * 24 * time.Hour
