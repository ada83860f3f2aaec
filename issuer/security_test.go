package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// countingMetrics counts every call by its arguments.
type countingMetrics struct {
	mu     sync.Mutex
	counts map[string]int
}

func (m *countingMetrics) add(k string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[k]++
}
func (m *countingMetrics) TokenIssued(g string)      { m.add("issued " + g) }
func (m *countingMetrics) LoginFailed(r string)      { m.add("login " + r) }
func (m *countingMetrics) ClientAuthFailed(r string) { m.add("client " + r) }

// TestSecurityEvents: failed logins, failed client authentications and a
// reused code are security events with who, where and why, counted by
// reason; no password, secret, code, verifier or token is in any log
// entry.
func TestSecurityEvents(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	m := &countingMetrics{counts: map[string]int{}}
	e := newTokEnv(t, func(c *Config) { c.Logger, c.Metrics = zap.New(core), m })
	const (
		attacker      = "203.0.113.7:4711"
		wrongPassword = "correct horse battery staple"
		wrongSecret   = "not-the-secret-0123456789"
	)

	if code, _ := e.loginFrom(t, attacker, tUser, wrongPassword); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: status %d, want 401", code)
	}
	if code, _ := e.loginFrom(t, attacker, "mallory", wrongPassword); code != http.StatusUnauthorized {
		t.Fatalf("unknown user: status %d, want 401", code)
	}
	if a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}}, tConf+":"+wrongSecret); a.status != http.StatusUnauthorized {
		t.Fatalf("wrong client secret: %d %s, want 401", a.status, a.raw)
	}
	if a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {tConf}, "client_secret": {tSecret}}, ""); a.status != http.StatusUnauthorized {
		t.Fatalf("client_secret_post for a client_secret_basic client: %d %s, want 401", a.status, a.raw)
	}
	if a := e.post(t, pathToken, url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}}, tConf+":"+tSecret); a.status != http.StatusOK {
		t.Fatalf("client credentials: %d %s, want 200", a.status, a.raw)
	}
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read", "offline_access"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	var re *oauth2.RetrieveError
	if _, err := e.exchange(t, tPublic, "", code, verifier); !errors.As(err, &re) {
		t.Fatalf("second exchange error = %v, want invalid_grant", err)
	}

	gid, _ := verifyLikeGateway(t, e, tok.AccessToken, "ES256")["gid"].(string)

	// What must never be logged, by any logger of the issuer.
	for _, entry := range logs.All() {
		text := fmt.Sprint(entry.Message, entry.ContextMap())
		for name, s := range map[string]string{
			"password": wrongPassword, "user password": tPassword, "secret": wrongSecret, "client secret": tSecret,
			"code": code, "verifier": verifier, "access token": tok.AccessToken, "refresh token": tok.RefreshToken,
		} {
			if strings.Contains(text, s) {
				t.Errorf("log entry %q (%s) contains the %s", entry.Message, entry.LoggerName, name)
			}
		}
	}

	type event struct {
		msg    string
		fields map[string]any
	}
	var got []event
	for _, entry := range logs.FilterLoggerName("security").All() {
		f := entry.ContextMap()
		if entry.Level < zapcore.InfoLevel {
			continue
		}
		got = append(got, event{entry.Message, f})
	}
	want := []event{
		{"login failed", map[string]any{"user": tUser, "remote_addr": "203.0.113.7", "reason": "wrong_password"}},
		{"login failed", map[string]any{"remote_addr": "203.0.113.7", "reason": "unknown_user"}},
		{"client authentication failed", map[string]any{"client_id": tConf, "remote_addr": "127.0.0.1", "reason": "invalid_secret"}},
		{"client authentication failed", map[string]any{"client_id": tConf, "remote_addr": "127.0.0.1", "reason": "wrong_method"}},
		{"authorization code reused; its grant is revoked", map[string]any{"remote_addr": "127.0.0.1", "client_id": tPublic, "sub": tUser, "grant": gid}},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(event{})); diff != "" {
		t.Errorf("security events (-want +got):\n%s", diff)
	}
	wantCounts := map[string]int{
		"login wrong_password":      1,
		"login unknown_user":        1,
		"client invalid_secret":     1,
		"client wrong_method":       1,
		"issued client_credentials": 1,
		"issued authorization_code": 1,
	}
	m.mu.Lock()
	if diff := cmp.Diff(wantCounts, m.counts); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	m.mu.Unlock()

	// Brute force: the limiter steps in, and says so.
	throttled := 0
	for n := 0; n < 20 && throttled == 0; n++ {
		if code, _ := e.loginFrom(t, attacker, tUser, wrongPassword); code == http.StatusTooManyRequests {
			throttled++
		}
	}
	events := logs.FilterLoggerName("security").FilterMessage("login failed").FilterField(zap.String("reason", "throttled")).All()
	if throttled != 1 || len(events) != 1 || events[0].ContextMap()["remote_addr"] != "203.0.113.7" {
		t.Errorf("throttled logins = %d, events %v; want one event with the address", throttled, events)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counts["login throttled"] != 1 {
		t.Errorf("throttled logins counted %d times, want 1", m.counts["login throttled"])
	}
	m.mu.Unlock()

	// A rotated refresh token presented again: the event names whose
	// grant was revoked, and the client that presented it.
	code, verifier = e.issueCode(t, codeSpec{scopes: []string{"read", "offline_access"}})
	if tok, err = e.exchange(t, tPublic, "", code, verifier); err != nil {
		t.Fatal(err)
	}
	gid, _ = verifyLikeGateway(t, e, tok.AccessToken, "ES256")["gid"].(string)
	refresh := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}
	if a := e.post(t, pathToken, refresh, ""); a.status != http.StatusOK {
		t.Fatalf("refresh: %d %s", a.status, a.raw)
	}
	if a := e.post(t, pathToken, refresh, ""); a.status != http.StatusBadRequest {
		t.Fatalf("rotated refresh token again: %d %s, want 400", a.status, a.raw)
	}
	events = logs.FilterLoggerName("security").FilterMessage("rotated refresh token reused; its grant is revoked").All()
	want = []event{{"rotated refresh token reused; its grant is revoked", map[string]any{"remote_addr": "127.0.0.1", "client_id": tPublic, "sub": tUser, "grant": gid}}}
	got = nil
	for _, entry := range events {
		got = append(got, event{entry.Message, entry.ContextMap()})
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(event{})); diff != "" {
		t.Errorf("refresh token reuse events (-want +got):\n%s", diff)
	}
	m.mu.Lock()
}

// TestClientAuthFailureNamesOnlyClients: a refused client authentication
// names the client when it exists, and otherwise no client_id: an id
// that matches no client may be the secret, sent in the id's place
// (credentials swapped in a deployment's settings, say), as a login's
// user name may be a password. The address and reason stay; throttled
// before the lookup, it names no client either (TestSecurityEvents keeps
// the names of existing clients).
func TestClientAuthFailureNamesOnlyClients(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	e := newTokEnv(t, func(c *Config) { c.Logger = zap.New(core) })
	cc := url.Values{"grant_type": {"client_credentials"}}
	for _, tc := range []struct {
		name  string
		form  url.Values
		basic string
	}{
		{"Basic, swapped", cc, tSecret + ":" + tConf},
		{"form, swapped", url.Values{"grant_type": {"client_credentials"}, "client_id": {tSecret}, "client_secret": {tConf}}, ""},
		{"form, no secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {tSecret}}, ""},
	} {
		if a := e.post(t, pathToken, tc.form, tc.basic); a.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d %s, want 401", tc.name, a.status, a.raw)
		}
	}
	// Until the address is slowed down: then refused before the lookup.
	throttled := false
	for n := 0; n < 40 && !throttled; n++ {
		throttled = e.post(t, pathToken, cc, tSecret+":"+tConf).status == http.StatusTooManyRequests
	}
	if !throttled {
		t.Fatal("no 429 after 40 failed client authentications from one address")
	}
	events := logs.FilterLoggerName("security").FilterMessage("client authentication failed").All()
	reasons := map[string]int{}
	for _, entry := range logs.All() {
		if text := fmt.Sprint(entry.Message, entry.ContextMap()); strings.Contains(text, tSecret) {
			t.Errorf("log entry %q (%s) holds the secret sent as the client id: %s", entry.Message, entry.LoggerName, text)
		}
	}
	for _, ev := range events {
		f := ev.ContextMap()
		reasons[fmt.Sprint(f["reason"])]++
		if id, ok := f["client_id"]; ok {
			t.Errorf("event %v names client_id %q, which matches no client", f, id)
		}
	}
	if reasons["unknown_client"] == 0 || reasons["throttled"] == 0 {
		t.Errorf("security events by reason %v, want unknown_client and throttled", reasons)
	}
}

// lookupFailsStore is a real store whose reads of one bucket fail, once
// down is set, as the PostgreSQL store's do when the database ends the
// connection during the read (a restart, a failover, an administrator's
// pg_terminate_backend): with the key quoted, as every store quotes it.
type lookupFailsStore struct {
	store.Store
	bucket string
	down   atomic.Bool
}

func (s *lookupFailsStore) View(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.View(ctx, func(tx store.Tx) error { return fn(&lookupFailsTx{tx, s}) })
}

func (s *lookupFailsStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(&lookupFailsTx{tx, s}) })
}

type lookupFailsTx struct {
	store.Tx
	s *lookupFailsStore
}

func (t *lookupFailsTx) MayRunAlone() { store.MayRunAlone(t.Tx) }

func (t *lookupFailsTx) Get(bucket, key string) ([]byte, error) {
	if t.s.down.Load() && bucket == t.s.bucket {
		return nil, fmt.Errorf("postgres: get %s/%q: %w: FATAL: terminating connection due to administrator command (SQLSTATE 57P01)",
			bucket, key, store.ErrUnavailable)
	}
	return t.Tx.Get(bucket, key)
}

// TestClientLookupStoreErrorWithholdsID: when the store fails while a
// client authentication looks up the client id it was sent (as a client
// or as an agent), the request is answered 503 and the error log says
// so without the id, which may be the client's secret sent in the id's
// place (TestClientAuthFailureNamesOnlyClients): the store's error quoted
// it, and the log held the secret of a client whose credentials were
// swapped whenever a database connection ended during the lookup (seen
// on the binary with PostgreSQL, the connections ended by
// pg_terminate_backend).
func TestClientLookupStoreErrorWithholdsID(t *testing.T) {
	for _, bucket := range []string{bucketClients, bucketAgents} {
		t.Run(bucket, func(t *testing.T) {
			core, logs := observer.New(zap.DebugLevel)
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			st := &lookupFailsStore{Store: memory.New(memory.Options{Now: clock.Now}), bucket: bucket}
			e := newTokEnvStore(t, st, clock, func(c *Config) { c.Logger = zap.New(core) })
			st.down.Store(true)
			cc := url.Values{"grant_type": {"client_credentials"}}
			for _, tc := range []struct {
				name, path string
				form       url.Values
				basic      string
			}{
				{"token, Basic", pathToken, cc, tSecret + ":" + tConf},
				{"token, form", pathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {tSecret}, "client_secret": {tConf}}, ""},
				{"token, form without a secret", pathToken, url.Values{"grant_type": {"client_credentials"}, "client_id": {tSecret}}, ""},
				{"PAR", pathPAR, url.Values{"response_type": {"code"}, "redirect_uri": {tRedirect}}, tSecret + ":" + tConf},
				{"revocation", pathRevoke, url.Values{"token": {"not-a-token"}}, tSecret + ":" + tConf},
				{"introspection", pathIntrospect, url.Values{"token": {"not-a-token"}}, tSecret + ":" + tConf},
			} {
				logs.TakeAll()
				if a := e.post(t, tc.path, tc.form, tc.basic); a.status != http.StatusServiceUnavailable {
					t.Errorf("%s: status %d %s, want 503 while the store fails", tc.name, a.status, a.raw)
				}
				failed := false
				for _, entry := range logs.All() {
					text := fmt.Sprint(entry.Message, entry.ContextMap())
					if strings.Contains(text, tSecret) || strings.Contains(text, strconv.Quote(tSecret)) {
						t.Errorf("%s: log entry %q holds the secret sent as the client id: %s", tc.name, entry.Message, text)
					}
					failed = failed || strings.Contains(text, "SQLSTATE 57P01")
				}
				if !failed {
					t.Errorf("%s: no log entry says the store failed: %v", tc.name, logs.All())
				}
			}
		})
	}
}

// TestClientAuthFailuresCountedAtEachEndpoint: README (Monitoring) says
// caddy_mcp_issuer_client_auth_failures_total counts refused client
// authentications at the token, PAR, revocation and introspection
// endpoints, by reason: a wrong secret, an unknown client and a secret
// sent the way the client did not register are each counted once, and
// logged as a security event, at every one of them.
func TestClientAuthFailuresCountedAtEachEndpoint(t *testing.T) {
	for _, path := range []string{pathToken, pathPAR, pathRevoke, pathIntrospect} {
		t.Run(strings.TrimPrefix(path, "/"), func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			m := &countingMetrics{counts: map[string]int{}}
			e := newTokEnv(t, func(c *Config) { c.Logger, c.Metrics = zap.New(core), m })
			form := map[string]url.Values{
				pathToken:      ccForm(nil),
				pathPAR:        {"response_type": {"code"}, "redirect_uri": {tRedirect}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"}, "resource": {tResource}},
				pathRevoke:     {"token": {"not-a-token"}},
				pathIntrospect: {"token": {"not-a-token"}},
			}[path]
			for _, tt := range []struct {
				name, basic string
				extra       url.Values
			}{
				{"wrong secret", tConf + ":not-the-secret-0123456789", nil},
				{"unknown client", "no-such-client:not-the-secret-0123456789", nil},
				{"secret posted by a Basic client", "", url.Values{"client_id": {tConf}, "client_secret": {tSecret}}},
			} {
				f := url.Values{}
				for k, v := range form {
					f[k] = v
				}
				for k, v := range tt.extra {
					f[k] = v
				}
				if a := e.post(t, path, f, tt.basic); a.status != http.StatusUnauthorized || a.str("error") != "invalid_client" {
					t.Errorf("%s %s = %d %s, want 401 invalid_client", path, tt.name, a.status, a.raw)
				}
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			want := map[string]int{"client invalid_secret": 1, "client unknown_client": 1, "client wrong_method": 1}
			if diff := cmp.Diff(want, m.counts); diff != "" {
				t.Errorf("metrics at %s (-want +got):\n%s", path, diff)
			}
			if n := logs.FilterLoggerName("security").FilterMessage("client authentication failed").Len(); n != 3 {
				t.Errorf("client authentication failed events at %s = %d, want 3", path, n)
			}
		})
	}
}
