package issuer

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// TestClientCredentialsRateLimited: each client_credentials token is a
// grant of its own, kept until it expires (so that revoking the client
// ends it), so a client asking for a token with every call, or whose
// credential leaked, grew the store without bound: 3,000 records of
// about 1.3 KiB in 15 s from one client through the binary. A client (an
// agent acting alone too) gets at most 600 a minute (README); past
// that it is refused 429 temporarily_unavailable with Retry-After and
// nothing is stored, while other clients are unaffected.
func TestClientCredentialsRateLimited(t *testing.T) {
	const documented = 600 // a minute, README (Limits: A client's own tokens); not the constant
	e := newTokEnv(t)
	take := func(id string) answer {
		t.Helper()
		return e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {id},
			"client_secret": {tAgentSecret}, "resource": {tResource}}, "")
	}
	for k := range documented {
		if a := take(tAgent2); a.status != http.StatusOK {
			t.Fatalf("token %d = %d %s, want 200", k, a.status, a.raw)
		}
	}
	a := take(tAgent2)
	if a.status != http.StatusTooManyRequests || a.str("error") != "temporarily_unavailable" || a.header.Get("Retry-After") == "" {
		t.Fatalf("token past the client's burst = %d %v %s, want 429 temporarily_unavailable with Retry-After", a.status, a.header, a.raw)
	}
	if n := countBucket(t, e, bucketGrants); n != documented {
		t.Errorf("stored grants = %d, want %d (the refused request stores nothing)", n, documented)
	}
	if a := take(tAgent1); a.status != http.StatusOK {
		t.Errorf("another client's token = %d %s, want 200", a.status, a.raw)
	}
	e.clock.Advance(time.Minute)
	if a := take(tAgent2); a.status != http.StatusOK {
		t.Errorf("token a minute later = %d %s, want 200 (the budget refills)", a.status, a.raw)
	}
}
