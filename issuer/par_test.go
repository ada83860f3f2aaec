package issuer

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

func parForm(extra url.Values) url.Values {
	v := url.Values{
		"response_type": {"code"}, "client_id": {tPublic}, "redirect_uri": {tRedirect},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
		"scope": {"read"}, "resource": {tResource}, "state": {"xyz"},
	}
	for k, vs := range extra {
		if len(vs) == 0 {
			delete(v, k)
			continue
		}
		v[k] = vs
	}
	return v
}

func TestPARStoresRequestBoundToClient(t *testing.T) {
	e := newTokEnv(t)
	a := e.post(t, pathPAR, parForm(url.Values{"client_id": nil}), tConf+":"+tSecret)
	if a.status != http.StatusCreated || a.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("PAR = %d %s, want 201 no-store", a.status, a.raw)
	}
	uri := a.str("request_uri")
	if !strings.HasPrefix(uri, "urn:ietf:params:oauth:request_uri:") || len(uri) < 60 || a.body["expires_in"] != float64(60) {
		t.Fatalf("PAR answer = %s, want an urn request_uri and expires_in 60", a.raw)
	}
	var pr parRequest
	err := e.store.View(t.Context(), func(tx store.Tx) error { return getRecord(tx, bucketPAR, tokenKey(uri), &pr) })
	if err != nil {
		t.Fatalf("stored pushed request: %v", err)
	}
	if pr.ClientID != tConf || pr.Params.Get("client_id") != tConf || pr.Params.Get("state") != "xyz" ||
		!pr.ExpiresAt.Equal(e.clock.Now().Add(time.Minute)) {
		t.Errorf("stored request = %+v, want it bound to %s for 60s", pr, tConf)
	}
	// The second push gets another request_uri.
	if b := e.post(t, pathPAR, parForm(url.Values{"client_id": nil}), tConf+":"+tSecret); b.str("request_uri") == uri {
		t.Error("two pushes share a request_uri")
	}

	// Client credentials are not kept with the request.
	a = e.post(t, pathPAR, parForm(url.Values{"client_id": {tPost}, "client_secret": {tSecret2}}), "")
	err = e.store.View(t.Context(), func(tx store.Tx) error { return getRecord(tx, bucketPAR, tokenKey(a.str("request_uri")), &pr) })
	if err != nil || pr.Params.Has("client_secret") {
		t.Errorf("stored params = %v, %v; want no client_secret", pr.Params, err)
	}
}

func TestPARValidation(t *testing.T) {
	e := newTokEnv(t)
	tests := []struct {
		name       string
		extra      url.Values
		basic      string
		wantStatus int
		wantCode   string
	}{
		{name: "public client", extra: nil, wantStatus: 201},
		{name: "request_uri inside", extra: url.Values{"request_uri": {"urn:ietf:params:oauth:request_uri:x"}}, wantStatus: 400, wantCode: "invalid_request"},
		{name: "client_id of another client", extra: url.Values{"client_id": {tNarrow}}, basic: tConf + ":" + tSecret, wantStatus: 401, wantCode: "invalid_client"},
		{name: "unauthenticated confidential client", extra: url.Values{"client_id": {tConf}}, wantStatus: 401, wantCode: "invalid_client"},
		{name: "unknown client", extra: url.Values{"client_id": {"ghost"}}, wantStatus: 401, wantCode: "invalid_client"},
		{name: "unregistered redirect", extra: url.Values{"redirect_uri": {"https://evil.example.com/cb"}}, wantStatus: 400, wantCode: "invalid_request"},
		{name: "loopback redirect on another port", extra: url.Values{"redirect_uri": {"http://127.0.0.1:1234/cb"}}, wantStatus: 201},
		{name: "response_type token", extra: url.Values{"response_type": {"token"}}, wantStatus: 400, wantCode: "unsupported_response_type"},
		{name: "no code challenge", extra: url.Values{"code_challenge": nil}, wantStatus: 400, wantCode: "invalid_request"},
		{name: "plain challenge", extra: url.Values{"code_challenge_method": {"plain"}}, wantStatus: 400, wantCode: "invalid_request"},
		{name: "unknown resource", extra: url.Values{"resource": {"https://nope.example.com/"}}, wantStatus: 400, wantCode: "invalid_target"},
		{name: "request object", extra: url.Values{"request": {"a.b.c"}}, wantStatus: 400},
		{name: "repeated parameter", extra: url.Values{"scope": {"read", "write"}}, wantStatus: 400, wantCode: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := countBucket(t, e, bucketPAR)
			a := e.post(t, pathPAR, parForm(tt.extra), tt.basic)
			if a.status != tt.wantStatus || (tt.wantCode != "" && a.str("error") != tt.wantCode) {
				t.Fatalf("PAR = %d %s, want %d %s", a.status, a.raw, tt.wantStatus, tt.wantCode)
			}
			if after := countBucket(t, e, bucketPAR); tt.wantStatus != 201 && after != before {
				t.Errorf("refused PAR stored a request (%d -> %d)", before, after)
			}
		})
	}
}

func countBucket(t *testing.T, e *testEnv, bucket string) int {
	t.Helper()
	n := 0
	err := e.store.View(t.Context(), func(tx store.Tx) error {
		return tx.List(bucket, "", func(string, []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// pushFrom pushes form to /par as if from remote (httptest servers are
// all on one address).
func (e *testEnv) pushFrom(remote string, form url.Values) *httptest.ResponseRecorder {
	return e.postFrom(remote, pathPAR, form)
}

// TestPARRateLimited: anyone can push for a public client, so pushes are
// limited per address, and per client (many addresses, one client_id).
// Refused pushes answer 429 slow_down with Retry-After and store nothing.
func TestPARRateLimited(t *testing.T) {
	refused := func(t *testing.T, e *testEnv, w *httptest.ResponseRecorder, what string) {
		t.Helper()
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || errorCode(t, w) != "slow_down" {
			t.Fatalf("%s = %d %v %s, want 429 slow_down with Retry-After", what, w.Code, w.Header(), w.Body)
		}
	}
	pushN := func(t *testing.T, e *testEnv, n int, remote func(int) string, form url.Values) {
		t.Helper()
		for k := range n {
			if w := e.pushFrom(remote(k), form); w.Code != http.StatusCreated {
				t.Fatalf("push %d = %d %s, want 201", k, w.Code, w.Body)
			}
		}
	}
	t.Run("public client per address", func(t *testing.T) {
		e := newTokEnv(t)
		const from = "203.0.113.9:4000"
		// README: 60 a minute per address, written out.
		pushN(t, e, 60, func(int) string { return from }, parForm(nil))
		refused(t, e, e.pushFrom(from, parForm(nil)), "push past the address's 60")
		if n := countBucket(t, e, bucketPAR); n != 60 {
			t.Errorf("stored pushes = %d, want 60 (the refused one not stored)", n)
		}
		if w := e.pushFrom("198.51.100.7:4000", parForm(nil)); w.Code != http.StatusCreated {
			t.Errorf("push from another address = %d %s, want 201", w.Code, w.Body)
		}
		e.clock.Advance(time.Minute)
		if w := e.pushFrom(from, parForm(nil)); w.Code != http.StatusCreated {
			t.Errorf("push after a minute = %d %s, want 201 (the bucket refills)", w.Code, w.Body)
		}
	})
	t.Run("public client from many addresses", func(t *testing.T) {
		// Anyone may push for a public client's id (a CIMD app's): a
		// budget of the client's would let a few addresses spend it and
		// lock the app's other users out of PAR (out of signing in at
		// all with require_par). Its pushes count against the address
		// only, as its DPoP proofs count against the key (bddb9a9).
		e := newTokEnv(t)
		remote := func(k int) string { return fmt.Sprintf("10.0.%d.%d:4000", k/200, k%200) }
		pushN(t, e, 301, remote, parForm(nil))
		if w := e.pushFrom("198.51.100.7:4000", parForm(nil)); w.Code != http.StatusCreated {
			t.Errorf("a user's push after others' 301 = %d %s, want 201", w.Code, w.Body)
		}
	})
	t.Run("confidential client", func(t *testing.T) {
		e := newTokEnv(t)
		const from = "203.0.113.9:4000"
		form := parForm(url.Values{"client_id": {tPost}, "client_secret": {tSecret2}})
		// Authenticated: one backend may push for many users, so only
		// the client's own budget applies.
		// README: a confidential client's pushed requests 300 a minute,
		// written out so that changing parClientBurst fails here.
		pushN(t, e, 300, func(int) string { return from }, form)
		refused(t, e, e.pushFrom(from, form), "push past the client's 300")
		if w := e.pushFrom(from, parForm(nil)); w.Code != http.StatusCreated {
			t.Errorf("push for another client from the same address = %d %s, want 201", w.Code, w.Body)
		}
	})
}

// TestPARStoresOnlyKnownBoundedParameters: a pushed request keeps only the
// parameters /authorize reads; oversize values are refused with
// invalid_request and store nothing.
func TestPARStoresOnlyKnownBoundedParameters(t *testing.T) {
	e := newTokEnv(t)
	a := e.post(t, pathPAR, parForm(url.Values{
		"junk": {strings.Repeat("x", 30<<10)}, "login_hint": {"alice"}, "claims": {"{}"},
		"nonce": {"n-1"}, "prompt": {"consent"}, "max_age": {"60"},
		"client_id": {tPost}, "client_secret": {tSecret2},
	}), "")
	if a.status != http.StatusCreated {
		t.Fatalf("PAR with unknown parameters = %d %s, want 201", a.status, a.raw)
	}
	var pr parRequest
	err := e.store.View(t.Context(), func(tx store.Tx) error { return getRecord(tx, bucketPAR, tokenKey(a.str("request_uri")), &pr) })
	if err != nil {
		t.Fatal(err)
	}
	for k := range pr.Params {
		if !slices.Contains(authorizeParams, k) {
			t.Errorf("stored parameter %q, want only those /authorize reads", k)
		}
	}
	for _, k := range []string{"nonce", "prompt", "max_age", "state", "scope", "resource"} {
		if !pr.Params.Has(k) {
			t.Errorf("parameter %q not stored", k)
		}
	}

	// README (Limits: Unauthenticated writes): "at most 2000 bytes each
	// and 4 KiB in all", written out so that changing the constants
	// fails here: a value of 2000 bytes and a request of 4096 are kept.
	const each, all = 2000, 4096
	base := 0 // the form's parameters but state and nonce
	for k, v := range parForm(nil) {
		if k != "state" && k != "nonce" && slices.Contains(authorizeParams, k) {
			base += len(v[0])
		}
	}
	for _, tt := range []struct {
		name         string
		state, nonce int
		ok           bool
	}{
		{"state of 2000 bytes", each, 0, true},
		{"4096 bytes in all", each, all - base - each, true},
		{"4097 bytes in all", each, all - base - each + 1, false},
	} {
		extra := url.Values{"state": {strings.Repeat("s", tt.state)}}
		if tt.nonce > 0 {
			extra.Set("nonce", strings.Repeat("n", tt.nonce))
		}
		a := e.post(t, pathPAR, parForm(extra), "")
		if ok := a.status == http.StatusCreated; ok != tt.ok {
			t.Errorf("%s: PAR = %d %s, want created %v", tt.name, a.status, a.raw, tt.ok)
		}
	}

	long := strings.Repeat("a", maxAuthorizeParam+1)
	full := strings.Repeat("a", maxAuthorizeParam)
	for _, tt := range []struct {
		name  string
		extra url.Values
	}{
		{"long state", url.Values{"state": {long}}},
		{"long nonce", url.Values{"nonce": {long}}},
		{"long scope", url.Values{"scope": {long}}},
		{"long resource", url.Values{"resource": {"https://mcp.example.com/" + long}}},
		{"too long together", url.Values{"state": {full}, "nonce": {full}, "scope": {strings.Repeat("read ", 40)}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := countBucket(t, e, bucketPAR)
			a := e.post(t, pathPAR, parForm(tt.extra), "")
			if a.status != http.StatusBadRequest || a.str("error") != "invalid_request" || !strings.Contains(a.str("error_description"), "too long") {
				t.Errorf("PAR = %d %s, want 400 invalid_request: too long", a.status, a.raw)
			}
			if n := countBucket(t, e, bucketPAR); n != before {
				t.Errorf("refused push stored a request (%d -> %d)", before, n)
			}
		})
	}
}
