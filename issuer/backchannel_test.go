package issuer

import (
	"net/http"
	"strings"
	"testing"
)

// TestBackChannelBodyAtMost64KiB: README (Limits: Slow request bodies)
// says the issuer's back-channel endpoints read at most 64 KiB of a body:
// one of 64 KiB is read (and answered for what it says), one a byte
// longer is 413 invalid_request, whatever else it holds. The figure is
// written out so that changing maxFormBytes fails here.
func TestBackChannelBodyAtMost64KiB(t *testing.T) {
	e := newTokEnv(t)
	const most = 64 << 10
	for _, path := range []string{pathToken, pathPAR, pathRevoke, pathIntrospect} {
		body := func(n int) string { return "x=" + strings.Repeat("a", n-2) }
		if a := e.postRaw(t, path, body(most), ""); a.status == http.StatusRequestEntityTooLarge || a.str("error_description") == "request body too large" {
			t.Errorf("POST %s of 64 KiB = %d %s, want it read", path, a.status, a.raw)
		}
		if a := e.postRaw(t, path, body(most+1), ""); a.status != http.StatusRequestEntityTooLarge || a.str("error") != "invalid_request" || a.str("error_description") != "request body too large" {
			t.Errorf("POST %s of 64 KiB and a byte = %d %s, want 413 invalid_request, request body too large", path, a.status, a.raw)
		}
	}
}
