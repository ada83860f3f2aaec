//go:build !race

// Allocation counts hold only without the race detector, which drops
// sync.Pool items at random and moves values to the heap; .ci/run runs
// these tests once more without it.

package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// TestUnwrapSessionAllocations: checking a session id reuses its HMAC and
// scratch space (part of the design); what it allocates is the upstream
// id it returns and the MAC it compares.
func TestUnwrapSessionAllocations(t *testing.T) {
	g, p, _ := decideInputs(t)
	wrapped, err := g.wrapSession(p, "3f2a9c1e-5b7d-4e8f-a1c2-9d0e8b7a6c5f")
	if err != nil {
		t.Fatal(err)
	}
	// The requests of one session: the id verified last is remembered.
	if n := testing.AllocsPerRun(100, func() { g.unwrapSession(p, wrapped) }); n != 0 {
		t.Errorf("unwrapSession of the principal's current session allocates %v times, want 0", n)
	}
	// Two sessions in turn: each check computes the MAC.
	other, err := g.wrapSession(p, "other-session")
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { g.unwrapSession(p, wrapped); g.unwrapSession(p, other) }); n > 6 {
		t.Errorf("unwrapSession of alternating sessions allocates %v times per pair, want at most 6", n)
	}
}

// TestServeAllocations: a request of a 2025-11-25 session with a cached
// token allocates only what the design needs: the exchange, the request
// next gets, its cancellable context and cancel function, the body, the
// parsed message and the tool's name, and the body's GetBody. The header
// is edited in place, the session id is remembered, audit events
// (denials_only) and errors are not made. With resource rules an answer
// is read for resources (TestEmbeddedResourcesChecked): one whose
// Content-Length came with it, as most do, costs nothing more; one
// without is held to be read whole.
func TestServeAllocations(t *testing.T) {
	for _, tt := range []struct {
		name   string
		rules  bool
		length bool
	}{
		{"no resource rules", false, false},
		{"resource rules, Content-Length", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) { serveAllocations(t, tt.rules, tt.length) })
	}
}

func serveAllocations(t *testing.T, rules, length bool) {
	cfg := unreadConfig(t)
	if rules {
		cfg = testConfig(t)
	}
	cfg.Revocations = revocationSet{}
	cfg.AuditDenialsOnly = true
	g := newGateway(t, cfg)
	token := mint(t, claims())
	p, aerr := g.authenticate(t.Context(), nil, token, g.now())
	if aerr != nil {
		t.Fatal(aerr)
	}
	wrapped, err := g.wrapSession(p, "3f2a9c1e-5b7d-4e8f-a1c2-9d0e8b7a6c5f")
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"path":"/etc/motd"}}}`)
	const runs = 100
	reqs := make([]*http.Request, runs+1)
	bodies := make([]readCloser, runs+1)
	for i := range reqs {
		r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", "Bearer "+token)
		r.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		r.Header.Set("Mcp-Session-Id", wrapped)
		r.Header.Set("Accept", "application/json, text/event-stream")
		bodies[i] = readCloser{bytes.NewReader(body)}
		r.Body, r.ContentLength = bodies[i], int64(len(body))
		reqs[i] = r
	}
	answer := []byte(`{"jsonrpc":"2.0","id":1,"result":{"content":[]}}`)
	w := &nopWriter{h: http.Header{"Content-Type": {"application/json"}}}
	answerLength := []string{strconv.Itoa(len(answer))}
	next := NextFunc(func(w http.ResponseWriter, r *http.Request) error {
		if length {
			w.Header()["Content-Length"] = answerLength
		}
		_, err := w.Write(answer)
		return err
	})
	i := 0
	n := testing.AllocsPerRun(runs, func() {
		g.Serve(w, reqs[i], next)
		i++
	})
	if w.h.Get("WWW-Authenticate") != "" {
		t.Fatalf("refused: %v", w.h)
	}
	if n > 8 {
		t.Errorf("Serve allocates %v times per request, want at most 8", n)
	}
}

// TestMediaTypeAllocations: the Content-Types upstreams send are read
// without mime.ParseMediaType's allocations.
func TestMediaTypeAllocations(t *testing.T) {
	for _, ct := range []string{"application/json", "text/event-stream"} {
		if n := testing.AllocsPerRun(100, func() { mediaType(ct) }); n != 0 {
			t.Errorf("mediaType(%q): %v allocations, want 0", ct, n)
		}
	}
}

// TestRemoteTokenCacheHitAllocations: a cached token of a remote issuer
// (RemoteKeys, which may withdraw keys) is accepted without allocating:
// while no key was withdrawn the check is an atomic load, and after a
// withdrawal of another key, finding the token's key still published
// (RemoteKeys.Published) allocates nothing either.
func TestRemoteTokenCacheHitAllocations(t *testing.T) {
	w := newWithdrawal(t)
	g := w.h.g
	token := w.token(t, "alice", jwt.SigningMethodES256, w.k.ec, "ec1")
	if _, aerr := g.authenticate(t.Context(), nil, token, w.now.now()); aerr != nil {
		t.Fatal(aerr)
	}
	hit := func() {
		if _, aerr := g.authenticate(t.Context(), nil, token, w.now.now()); aerr != nil {
			t.Fatal(aerr)
		}
	}
	if n := testing.AllocsPerRun(100, hit); n != 0 {
		t.Errorf("a cached remote token allocates %v times, want 0", n)
	}
	// ed1 withdrawn: the count changes, ec1 is looked up once more.
	w.f.jwks.Store([]map[string]any{ecJWK("ec1", &w.k.ec.PublicKey)})
	w.now.add(time.Minute)
	if _, err := w.rk.PublicKey(t.Context(), "made-up"); !errors.Is(err, ErrUnknownKey) {
		t.Fatal(err)
	}
	if w.rk.Withdrawals() != 1 {
		t.Fatalf("Withdrawals() = %d, want 1", w.rk.Withdrawals())
	}
	if n := testing.AllocsPerRun(100, hit); n != 0 {
		t.Errorf("a cached remote token after another key's withdrawal allocates %v times, want 0", n)
	}
}

// TestLocalTokenCacheHitAllocations: a cached token of the local issuer
// (issuer.Issuer as the KeySource, which withdraws a key once its
// publication ends) is accepted without allocating: while no key was
// withdrawn the check is an atomic load, and after a withdrawal of
// another key, finding the token's key still published
// (Issuer.Published) allocates nothing either.
func TestLocalTokenCacheHitAllocations(t *testing.T) {
	clock := storetest.NewClock(testNow)
	st := memory.New(memory.Options{Now: clock.Now})
	const secret = "service secret"
	sum := sha256.Sum256([]byte(secret))
	issuerWith := func(ttl time.Duration) *issuer.Issuer {
		t.Helper()
		iss, err := issuer.New(issuer.Config{
			Issuer: testIssuer, Now: clock.Now, AccessTokenTTL: ttl, IDTokenTTL: ttl,
			Clients: []issuer.Client{{ID: "svc", SecretHash: "sha256:" + hex.EncodeToString(sum[:]),
				GrantTypes: []string{"client_credentials"}}},
			Resources: []issuer.Resource{{URL: testResource, Scopes: []string{"mcp", "tools:read"}}},
		}, st)
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	// A key retired under 5-minute tokens, withdrawn while the hour-long
	// token of the next key is valid.
	iss := issuerWith(5 * time.Minute)
	if _, err := iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(70 * time.Second)
	iss = issuerWith(time.Hour)
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {testResource}, "scope": {"mcp tools:read"}}
	req := httptest.NewRequest(http.MethodPost, testIssuer+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("svc", secret)
	rec := httptest.NewRecorder()
	iss.ServeHTTP(rec, req)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != http.StatusOK {
		t.Fatalf("client credentials = %d %s", rec.Code, rec.Body)
	}
	cfg := testConfig(t)
	cfg.Keys, cfg.Now = iss, clock.Now
	g := newGateway(t, cfg)
	hit := func() {
		if _, aerr := g.authenticate(t.Context(), nil, body.AccessToken, clock.Now()); aerr != nil {
			t.Fatal(aerr)
		}
	}
	hit()
	if n := testing.AllocsPerRun(100, hit); n != 0 {
		t.Errorf("a cached local token allocates %v times, want 0", n)
	}
	clock.Advance(6 * time.Minute)
	rec = httptest.NewRecorder()
	iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, testIssuer+"/jwks", nil)) // re-reads the keys
	if rec.Code != http.StatusOK || iss.Withdrawals() != 1 {
		t.Fatalf("JWKS = %d, Withdrawals() = %d, want 200 and 1", rec.Code, iss.Withdrawals())
	}
	if n := testing.AllocsPerRun(100, hit); n != 0 {
		t.Errorf("a cached local token after another key's withdrawal allocates %v times, want 0", n)
	}
}
