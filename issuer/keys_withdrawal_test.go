package issuer

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap/zaptest"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/gateway"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// watchedKeys has an issuer catch up often (its keys are checked with
// its revocations, see WatchRevocations) and never find its revocations
// stale on a test clock moved by hours.
func watchedKeys(c *Config) {
	c.RevocationResync, c.RevocationMaxStale = 10*time.Millisecond, 1000*time.Hour
}

// localGateway is a gateway of e's issuer in this process, as
// caddymodule builds one for `issuer local`: the issuer is its key
// source and revocation list.
func localGateway(t *testing.T, e *testEnv) *gateway.Gateway {
	t.Helper()
	g, err := gateway.New(gateway.Config{
		Resource: tResource, Issuer: e.iss.URL(), Keys: e.iss, Revocations: e.iss,
		SessionKey: bytes.Repeat([]byte("k"), 32), Now: e.clock.Now,
		StreamCheckInterval: 10 * time.Millisecond, Logger: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// forge signs an access token of sub with pk, the issuer's private key,
// as whoever stole it would: exp a century away.
func forge(t *testing.T, e *testEnv, pk *publishedKey, sub string) string {
	t.Helper()
	now := e.clock.Now()
	c := &accesstoken.Claims{
		Issuer: e.iss.URL(), Subject: sub, Audience: accesstoken.Audience{tResource}, ClientID: tConf,
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.AddDate(100, 0, 0)),
		ID: "jti-" + sub, Scope: "read write", GrantID: "gid-" + sub,
	}
	tok := jwt.NewWithClaims(pk.method, c)
	tok.Header["typ"] = accesstoken.Type
	tok.Header["kid"] = pk.kid
	raw, err := tok.SignedString(pk.private)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// signing is the key e's issuer signs with now.
func signing(t *testing.T, e *testEnv) *publishedKey {
	t.Helper()
	pk, err := e.iss.keys.current(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

// publishedUntil is when the ring withdraws its retired key kid.
func publishedUntil(t *testing.T, k *keyRing, kid string) time.Time {
	t.Helper()
	k.mu.RLock()
	defer k.mu.RUnlock()
	pk := k.byKID[kid]
	if pk == nil || pk.retired.IsZero() {
		t.Fatalf("key %s is not a retired key of the ring", kid)
	}
	return pk.until
}

const localVersion = "2025-11-25"

// pingVia is the status of a ping with tok through g.
func pingVia(t *testing.T, g *gateway.Gateway, tok string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, tResource, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Mcp-Protocol-Version", localVersion)
	rec := httptest.NewRecorder()
	err := g.Serve(rec, req, gateway.NextFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		_, err := io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
		return err
	}))
	if err != nil {
		t.Fatalf("Serve() = %v", err)
	}
	return rec.Code, rec.Body.String()
}

// streamVia opens a GET event stream with tok through g, in a session
// of its own, and returns a channel closed when the upstream sees it
// end (its request cancelled, as reverse_proxy's is).
func streamVia(t *testing.T, g *gateway.Gateway, tok string) <-chan struct{} {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, tResource, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+localVersion+`","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	rec := httptest.NewRecorder()
	err := g.Serve(rec, req, gateway.NextFunc(func(w http.ResponseWriter, _ *http.Request) error {
		w.Header().Set("Mcp-Session-Id", "upstream-"+tok[len(tok)-8:])
		w.Header().Set("Content-Type", "application/json")
		_, err := io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"`+localVersion+`","capabilities":{},"serverInfo":{"name":"u","version":"1"}}}`)
		return err
	}))
	sid := rec.Header().Get("Mcp-Session-Id")
	if err != nil || rec.Code != http.StatusOK || sid == "" {
		t.Fatalf("initialize = %v, %d, session %q; want 200 with a session: %s", err, rec.Code, sid, rec.Body)
	}
	req = httptest.NewRequest(http.MethodGet, tResource, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Mcp-Protocol-Version", localVersion)
	req.Header.Set("Mcp-Session-Id", sid)
	opened, ended, served := make(chan struct{}), make(chan struct{}), make(chan struct{})
	rec = httptest.NewRecorder()
	go func() {
		defer close(served)
		_ = g.Serve(rec, req, gateway.NextFunc(func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			close(opened)
			<-r.Context().Done()
			close(ended)
			return nil
		}))
	}()
	t.Cleanup(func() { g.Close(); <-served })
	select {
	case <-opened:
	case <-served:
		t.Fatalf("GET stream refused: %d %s", rec.Code, rec.Body)
	}
	return ended
}

// endsSoon fails unless the stream ends within 5 s.
func endsSoon(t *testing.T, name string, ended <-chan struct{}) {
	t.Helper()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: stream still open 5 s after its key's withdrawal", name)
	}
}

// stillOpen fails if the stream has ended.
func stillOpen(t *testing.T, name string, ended <-chan struct{}) {
	t.Helper()
	select {
	case <-ended:
		t.Errorf("%s: stream ended", name)
	case <-time.After(50 * time.Millisecond):
	}
}

// openVia has tok verified through g (a ping answered 200) and opens its
// event stream.
func openVia(t *testing.T, g *gateway.Gateway, what, tok string) <-chan struct{} {
	t.Helper()
	if status, body := pingVia(t, g, tok); status != http.StatusOK {
		t.Fatalf("%s = %d %s, want 200", what, status, body)
	}
	return streamVia(t, g, tok)
}

// refusedOnceWithdrawn fails unless the stream of tok, whose key is no
// longer published, ends within 5 s and tok is refused.
func refusedOnceWithdrawn(t *testing.T, g *gateway.Gateway, tok string, stream <-chan struct{}) {
	t.Helper()
	endsSoon(t, "forged", stream)
	if status, body := pingVia(t, g, tok); status != http.StatusUnauthorized {
		t.Errorf("forged token once its key is withdrawn = %d %s, want 401", status, body)
	}
}

// TestLocalKeyWithdrawnEndsTokens: a gateway of the local issuer keeps
// verified claims until the token's exp, which whoever stole a signing
// key chooses (here a century away). Once the issuer no longer publishes
// the key (rotated out, its last legitimate token expired), the token is
// refused and its open event stream ends within the issuer's key check
// (a second) and the stream check, though the gateway sees no other
// traffic; a token and stream of the key now signing go on.
func TestLocalKeyWithdrawnEndsTokens(t *testing.T) {
	e := newTokEnv(t, watchedKeys)
	watchRevocations(t, e.iss)
	g := localGateway(t, e)
	stolen := signing(t, e)
	forged := forge(t, e, stolen, "mallory")
	forgedStream := openVia(t, g, "forged token while its key is published", forged)
	if _, err := e.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(keyPublishDelay)
	kept := forge(t, e, signing(t, e), "alice")
	keptStream := openVia(t, g, "token of the new key", kept)

	until := publishedUntil(t, e.iss.keys, stolen.kid)
	e.clock.Advance(until.Add(-time.Second).Sub(e.clock.Now()))
	if status, body := pingVia(t, g, forged); status != http.StatusOK {
		t.Fatalf("a second before the retired key is withdrawn = %d %s, want 200 (its legitimate tokens may still be valid)", status, body)
	}
	stillOpen(t, "forged, key still published", forgedStream)

	e.clock.Advance(time.Second)
	refusedOnceWithdrawn(t, g, forged, forgedStream)
	if status, body := pingVia(t, g, kept); status != http.StatusOK {
		t.Errorf("token of the key still published = %d %s, want 200", status, body)
	}
	stillOpen(t, "kept", keptStream)
}

// watchedInstancePairs are two issuers on one store (watchedKeys), on
// the memory store and on PostgreSQL (an instance per connection pool).
var watchedInstancePairs = []struct {
	name      string
	instances func(t *testing.T) (a, b *testEnv)
}{
	{"memory", func(t *testing.T) (a, b *testEnv) {
		clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
		st := memory.New(memory.Options{Now: clock.Now, RunTwice: true})
		return newTokEnvStore(t, st, clock, watchedKeys), newTokEnvStore(t, st, clock, watchedKeys)
	}},
	{"postgres", func(t *testing.T) (a, b *testEnv) {
		envs, _ := clusterEnvs(t, 2, watchedKeys)
		return envs[0], envs[1]
	}},
}

// forgedAndCached has e watch its keys and returns a gateway of e's
// issuer, e's signing key, a token forged with it that the gateway has
// verified (and caches), and its open event stream.
func forgedAndCached(t *testing.T, e *testEnv) (*gateway.Gateway, *publishedKey, string, <-chan struct{}) {
	t.Helper()
	watchRevocations(t, e.iss)
	g := localGateway(t, e)
	stolen := signing(t, e)
	forged := forge(t, e, stolen, "mallory")
	return g, stolen, forged, openVia(t, g, "forged token while its key is published", forged)
}

// TestLocalKeyRetiredByOtherInstance: another instance on the store
// rotates the key out; this one neither signs nor serves its JWKS (a
// gateway's only), yet re-reads its keys in the background, so once the
// retired key's publication ends the forged token verified here before
// is refused and its stream ends. On the memory store and on PostgreSQL
// (an instance per connection pool).
func TestLocalKeyRetiredByOtherInstance(t *testing.T) {
	for _, tt := range watchedInstancePairs {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tt.instances(t)
			g, stolen, forged, stream := forgedAndCached(t, a)
			if _, err := b.iss.RotateSigningKey(t.Context()); err != nil {
				t.Fatal(err)
			}
			b.clock.Advance(keyPublishDelay)
			b.clock.Advance(publishedUntil(t, b.iss.keys, stolen.kid).Sub(b.clock.Now()))
			refusedOnceWithdrawn(t, g, forged, stream)
		})
	}
}

// TestLocalRetiredKeyTokensPass: a withdrawal makes the gateway look up
// the key of every token it verified before, and a legitimate token of a
// retired key finds it published until the token's exp: it passes and
// its stream stays open. Here a key retired under 5-minute tokens is
// withdrawn while a token of the next key, itself retired since, has most
// of its hour to run.
func TestLocalRetiredKeyTokensPass(t *testing.T) {
	short := func(c *Config) { watchedKeys(c); c.AccessTokenTTL, c.IDTokenTTL = 5*time.Minute, 5*time.Minute }
	e := newTokEnv(t, short)
	first := signing(t, e)
	if _, err := e.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(keyPublishDelay)
	e.restart(e.store, watchedKeys) // tokens live an hour from now on
	watchRevocations(t, e.iss)
	g := localGateway(t, e)
	tok, _, _ := clientTokenOf(t, e)
	_, c := claimsOf(t, tok)
	exp := time.Unix(int64(c["exp"].(float64)), 0)
	stream := openVia(t, g, "token", tok)
	if _, err := e.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(keyPublishDelay) // the token's key is retired

	seen := e.iss.Withdrawals()
	e.clock.Advance(publishedUntil(t, e.iss.keys, first.kid).Sub(e.clock.Now()))
	for deadline := time.Now().Add(5 * time.Second); e.iss.Withdrawals() == seen; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first key's withdrawal is not counted 5 s after its publication ended")
		}
	}
	if !exp.After(e.clock.Now().Add(time.Minute)) {
		t.Fatalf("the token expires at %v, before the first key's withdrawal at %v: nothing tested", exp, e.clock.Now())
	}
	if status, body := pingVia(t, g, tok); status != http.StatusOK {
		t.Errorf("token of the retired key after another key's withdrawal = %d %s, want 200", status, body)
	}
	stillOpen(t, "retired key's token", stream)
	e.clock.Advance(exp.Add(-time.Second).Sub(e.clock.Now()))
	if status, body := pingVia(t, g, tok); status != http.StatusOK {
		t.Errorf("token of the retired key in its last second = %d %s, want 200", status, body)
	}
	stillOpen(t, "retired key's token in its last second", stream)
}

// TestKeyCheckPoolSaturated: the key check that WatchRevocations runs
// beside the revocation catch-up re-reads the keys on the catch-up's own
// connection too (store.ReservedViewer): with every connection of A's
// pool held (token traffic on a slow database) and A's keys due for a
// re-read, a revocation on B still reaches A's Revoked within a second,
// rather than waiting behind a key read queued for the pool.
func TestKeyCheckPoolSaturated(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	const conns = 2
	a := postgresEnv(t, dsn+fmt.Sprintf(" pool_max_conns=%d", conns), clock, onlyNotified)
	b := postgresEnv(t, dsn, clock, onlyNotified)
	tok, jti, gid := clientTokenOf(t, b)
	holdPool(t, a, conns)
	clock.Advance(keyReload) // A's keys are due for a re-read at every check
	watchRevocations(t, a.iss)
	time.Sleep(keyCheckEvery + 100*time.Millisecond) // a key check is under way
	if d := revokeAndWait(t, b, a, tok, jti, gid, 10*time.Second); d >= time.Second {
		t.Errorf("revocation on B reached A, its pool held, after %s, want under 1s", d)
	}
}

// TestLocalTokenSignedAcrossRotationPasses: instance B (hour-long
// tokens) signs with the current key just after instance A (5-minute
// tokens) rotated it out, before B re-read the key set (within
// keyReload): B still sees the key as current, so nothing extended its
// publication past A's retention, sized for 5-minute tokens. B's
// legitimate token must pass B's gateway until its exp all the same, and
// its stream stay open: the issuance's transaction keeps the key
// published (serialized with the rotation, as the token horizon is).
func TestLocalTokenSignedAcrossRotationPasses(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := memory.New(memory.Options{Now: clock.Now, RunTwice: true})
	a := newTokEnvStore(t, st, clock, watchedKeys, func(c *Config) { c.AccessTokenTTL, c.IDTokenTTL = 5*time.Minute, 5*time.Minute })
	b := newTokEnvStore(t, st, clock, watchedKeys, func(c *Config) { c.AccessTokenTTL, c.IDTokenTTL = time.Hour, time.Hour })
	first := signing(t, a)
	if _, err := a.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	tok, _, _ := clientTokenOf(t, b) // B has not re-read the keys yet
	if kid := tokenKID(t, tok); kid != first.kid {
		t.Fatalf("B signed with %s, want the key A just rotated out, %s", kid, first.kid)
	}
	_, c := claimsOf(t, tok)
	exp := time.Unix(int64(c["exp"].(float64)), 0)
	watchRevocations(t, b.iss)
	g := localGateway(t, b)
	stream := openVia(t, g, "B's token", tok)

	clock.Advance(keyPublishDelay + 10*time.Minute) // past A's retention for 5-minute tokens
	seen := b.iss.Withdrawals()
	time.Sleep(3 * keyCheckEvery) // B's key checks run
	if !exp.After(clock.Now().Add(time.Minute)) {
		t.Fatalf("the token expires at %v: nothing tested", exp)
	}
	if status, body := pingVia(t, g, tok); status != http.StatusOK {
		t.Errorf("B's legitimate token, %s before its exp = %d %s (withdrawals %d, were %d), want 200",
			exp.Sub(clock.Now()), status, body, b.iss.Withdrawals(), seen)
	}
	stillOpen(t, "B's legitimate token", stream)
}

// tokenKID is the kid of a JWT's header.
func tokenKID(t *testing.T, tok string) string {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := parsed.Header["kid"].(string)
	return kid
}

// TestPublishedAllocations: Published, which a gateway of the local
// issuer calls on a cached token's first use after any key's
// withdrawal, answers without allocating for every signing algorithm
// (the key PublicKey gave out, bare or named with its algorithm).
func TestPublishedAllocations(t *testing.T) {
	for _, alg := range signingAlgs {
		t.Run(alg, func(t *testing.T) {
			e := newTokEnv(t, func(c *Config) { c.SigningAlg = alg })
			pk := signing(t, e)
			pub, err := e.iss.PublicKey(t.Context(), pk.kid)
			if err != nil {
				t.Fatal(err)
			}
			for _, key := range []any{pub, accesstoken.AlgKey{Key: pub, Alg: alg}} {
				if !e.iss.Published(pk.kid, key) {
					t.Fatalf("Published(%s, %T) = false, want true", pk.kid, key)
				}
				if n := testing.AllocsPerRun(100, func() { e.iss.Published(pk.kid, key) }); n != 0 {
					t.Errorf("Published(%s, %T) allocates %v times, want 0", pk.kid, key, n)
				}
			}
		})
	}
}

// publishedKids are the kids iss publishes, its JWKS's order.
func publishedKids(t *testing.T, iss *Issuer) []string {
	t.Helper()
	keys, err := iss.keys.publishedJWKS(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	idKeys, err := iss.idKeys.publishedJWKS(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return kids(append(keys, idKeys...))
}

// TestAdminKeyWithdrawal: POST /keys/rotate with {"withdraw": ...}
// withdraws at once every signing key (true) or the kid named, and
// answers the new kid and those withdrawn; bad input is refused and
// changes nothing.
func TestAdminKeyWithdrawal(t *testing.T) {
	iss, _ := newAdminIssuer(t, nil)
	if err := iss.MakeIDTokenKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv := adminServer(t, iss)
	published := func() []string { return publishedKids(t, iss) }
	before := published()
	for _, tt := range []apiCase{
		{"unknown kid", "POST", "/mcp-auth/keys/rotate", `{"withdraw": "no-such-kid"}`, 404, `no key this server publishes`},
		{"empty kid", "POST", "/mcp-auth/keys/rotate", `{"withdraw": ""}`, 400, `withdraw: want true`},
		{"false", "POST", "/mcp-auth/keys/rotate", `{"withdraw": false}`, 400, `withdraw: want true`},
		{"null", "POST", "/mcp-auth/keys/rotate", `{"withdraw": null}`, 400, `withdraw: want true`},
		{"a number", "POST", "/mcp-auth/keys/rotate", `{"withdraw": 1}`, 400, `withdraw: want true`},
		{"unknown member", "POST", "/mcp-auth/keys/rotate", `{"withdraw": true, "kid": "x"}`, 400, `unknown field`},
		{"another case", "POST", "/mcp-auth/keys/rotate", `{"Withdraw": true}`, 400, ``},
		{"not an object", "POST", "/mcp-auth/keys/rotate", `true`, 400, ``},
	} {
		runAPI(t, srv, tt)
		if got := published(); !slices.Equal(got, before) {
			t.Fatalf("%s: published keys %v, were %v: a refused withdrawal changed them", tt.name, got, before)
		}
	}

	// One kid: the access-token key; the ID-token key stays.
	access, idKey := before[0], before[1]
	body := runAPI(t, srv, apiCase{"withdraw the access-token key", "POST", "/mcp-auth/keys/rotate", `{"withdraw": "` + access + `"}`, 200, `"withdrawn":["` + access + `"]`})
	var res KeyWithdrawal
	if err := json.Unmarshal([]byte(body), &res); err != nil || res.KID == "" || res.IDTokenKID != "" {
		t.Fatalf("withdrawal answer %s, %v: want the new kid only", body, err)
	}
	if got, want := published(), []string{res.KID, idKey}; !slices.Equal(got, want) {
		t.Errorf("published after withdrawing %s = %v, want %v (the new key at once, the ID-token key kept)", access, got, want)
	}
	if cur := signing(t, &testEnv{iss: iss}); cur.kid != res.KID {
		t.Errorf("signs with %s after the withdrawal, want the new key %s at once", cur.kid, res.KID)
	}
	runAPI(t, srv, apiCase{"withdraw it again", "POST", "/mcp-auth/keys/rotate", `{"withdraw": "` + access + `"}`, 404, `no key this server publishes`})

	// One kid: the ID-token key; the access-token key stays.
	newAccess := res.KID
	body = runAPI(t, srv, apiCase{"withdraw the ID-token key", "POST", "/mcp-auth/keys/rotate", `{"withdraw": "` + idKey + `"}`, 200, `"withdrawn":["` + idKey + `"]`})
	res = KeyWithdrawal{}
	if err := json.Unmarshal([]byte(body), &res); err != nil || res.KID != "" || res.IDTokenKID == "" {
		t.Fatalf("withdrawal answer %s, %v: want the new ID-token kid only", body, err)
	}
	if got, want := published(), []string{newAccess, res.IDTokenKID}; !slices.Equal(got, want) {
		t.Errorf("published after withdrawing %s = %v, want %v", idKey, got, want)
	}

	// Every key: both sets get a new key.
	prev := published()
	body = runAPI(t, srv, apiCase{"withdraw every key", "POST", "/mcp-auth/keys/rotate", `{"withdraw": true}`, 200, `"withdrawn":[`})
	res = KeyWithdrawal{}
	if err := json.Unmarshal([]byte(body), &res); err != nil || res.KID == "" || res.IDTokenKID == "" {
		t.Fatalf("withdrawal answer %s, %v: want both new kids", body, err)
	}
	if slices.Sort(res.Withdrawn); !slices.Equal(res.Withdrawn, slices.Sorted(slices.Values(prev))) {
		t.Errorf("withdrawn %v, want every published key %v", res.Withdrawn, prev)
	}
	if got, want := published(), []string{res.KID, res.IDTokenKID}; !slices.Equal(got, want) {
		t.Errorf("published after withdrawing every key = %v, want only the new keys %v", got, want)
	}
	// Without a body, a rotation as before.
	runAPI(t, srv, apiCase{"rotate", "POST", "/mcp-auth/keys/rotate", "", 200, `"kid"`})
	runAPI(t, srv, apiCase{"rotate with an empty object", "POST", "/mcp-auth/keys/rotate", "{}", 200, `"kid"`})
}

// TestKeyWithdrawalAcrossInstances: a withdrawal on A takes the key out
// of A's JWKS at once, and out of B's within the key re-read (5 s),
// though B neither signs nor serves anything meanwhile: B's gateway then
// refuses the token it had verified and cached (a forgery with an exp a
// century away) and ends its stream, and neither instance's /introspect
// answers a legitimate token of the key active any more. Both sign with
// the new key at once (B once it has re-read). On the memory store and on
// PostgreSQL (an instance per connection pool).
func TestKeyWithdrawalAcrossInstances(t *testing.T) {
	for _, tt := range watchedInstancePairs {
		t.Run(tt.name, func(t *testing.T) {
			a, b := tt.instances(t)
			g, stolen, forged, stream := forgedAndCached(t, b)
			// Each instance has its own issuer URL here: each introspects its own.
			legitA, legitB := a.userToken(t, tConf, "read").AccessToken, b.userToken(t, tConf, "read").AccessToken
			if !a.active(t, legitA) || !b.active(t, legitB) {
				t.Fatal("a token of the key before its withdrawal: inactive")
			}

			res, err := a.iss.WithdrawSigningKeys(t.Context(), stolen.kid)
			if err != nil {
				t.Fatal(err)
			}
			if keys, _ := a.jwksOf(t); slices.Contains(kids(keys), stolen.kid) || !slices.Contains(kids(keys), res.KID) {
				t.Errorf("A's JWKS right after the withdrawal = %v, want %s without %s", kids(keys), res.KID, stolen.kid)
			}
			if got := a.signedWith(t); got != res.KID {
				t.Errorf("A signs with %s right after the withdrawal, want the new key %s", got, res.KID)
			}
			if a.active(t, legitA) {
				t.Error("A: a token of the withdrawn key is still active")
			}

			b.clock.Advance(keyReload)
			refusedOnceWithdrawn(t, g, forged, stream)
			if keys, _ := b.jwksOf(t); slices.Contains(kids(keys), stolen.kid) {
				t.Errorf("B's JWKS %s after the withdrawal = %v, still with %s", keyReload, kids(keys), stolen.kid)
			}
			if b.active(t, legitB) {
				t.Error("B: a token of the withdrawn key is still active")
			}
			if got := b.signedWith(t); got != res.KID {
				t.Errorf("B signs with %s after its re-read, want the new key %s", got, res.KID)
			}
			fresh := b.clientToken(t)
			if status, body := pingVia(t, g, fresh); status != http.StatusOK {
				t.Errorf("B's gateway: a token of the new key = %d %s, want 200", status, body)
			}
		})
	}
}

// TestGatewayFailsClosedWhileKeysUnread: a key withdrawn at another
// instance is refused at this one's gateway once its re-read of the keys
// (keyReload) sees it gone; while that re-read fails and the revocation
// catch-up beside it does not, the gateway went on honouring the
// withdrawn key's tokens, cached and new, without end: its only bound on
// what the store may have refused meanwhile was the revocation set's
// age. Here B cannot read a key record a later release wrote (an
// algorithm this build does not know); the same happens where the
// database answers in more than the key read's 5 s and less than the
// revocation read's 20 s. B's gateway now fails closed (503, its stream
// ends) once the keys were last read RevocationMaxStale and keyReload
// ago, as its JWKS does.
func TestGatewayFailsClosedWhileKeysUnread(t *testing.T) {
	const maxStale = 30 * time.Second
	envs, _ := clusterEnvs(t, 2, func(c *Config) { c.RevocationResync, c.RevocationMaxStale = 10*time.Millisecond, maxStale })
	a, b := envs[0], envs[1]
	g, stolen, forged, stream := forgedAndCached(t, b)
	if _, err := a.iss.WithdrawSigningKeys(t.Context(), stolen.kid); err != nil {
		t.Fatal(err)
	}
	storeUnreadableKey(t, a)
	b.clock.Advance(keyReload)
	if err := b.iss.keys.load(t.Context()); err == nil {
		t.Fatal("B read the key set with a record it cannot parse: the test's premise is gone")
	}
	// B's revocation reads go on: a token revoked at A is refused at B.
	tok, jti, gid := clientTokenOf(t, a)
	revokeAndWait(t, a, b, tok, jti, gid, 5*time.Second)

	b.clock.Advance(maxStale + time.Second)
	waitSynced(t, b.iss, b.clock.Now())
	if status, body := pingVia(t, g, forged); status != http.StatusServiceUnavailable {
		t.Errorf("B's gateway: a token of the key withdrawn at A, B's keys last read %s ago = %d %s, want 503",
			keyReload+maxStale+time.Second, status, body)
	}
	endsSoon(t, "forged", stream)
}

// storeUnreadableKey stores, through e, a signing key record that no
// instance of this build can parse (an algorithm a later release might
// sign with), so that from then on every read of the key set fails.
func storeUnreadableKey(t *testing.T, e *testEnv) {
	t.Helper()
	later, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(later)
	if err != nil {
		t.Fatal(err)
	}
	rec := signingKey{KID: "key-of-a-later-release", Alg: "ES384", CreatedAt: e.clock.Now(),
		PrivatePEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})}
	if err := e.store.Update(t.Context(), func(tx store.Tx) error { return keysIn(tx).t.put(rec.KID, &rec, time.Time{}) }); err != nil {
		t.Fatal(err)
	}
}

// TestEndpointsRefuseKeyWithdrawnElsewhere: /introspect and /userinfo
// verified a token with the instance's copy of the keys and read the
// store for its revocation only, so a token of a key withdrawn at
// another instance was active, and its user's claims answered, until
// this instance re-read its keys (5 s), and for as long as that re-read
// failed (here: a key record it cannot parse) where its revocation
// reads did not. The same read of the store now finds the key gone.
func TestEndpointsRefuseKeyWithdrawnElsewhere(t *testing.T) {
	envs, _ := clusterEnvs(t, 2, watchedKeys)
	a, b := envs[0], envs[1]
	watchRevocations(t, b.iss)
	tok := b.userToken(t, tConf, "read", "openid").AccessToken
	if !b.active(t, tok) {
		t.Fatal("B: a token of its key before the withdrawal is inactive")
	}
	if status := userinfoStatus(t, b, tok); status != http.StatusOK {
		t.Fatalf("B: /userinfo before the withdrawal = %d, want 200", status)
	}
	if _, err := a.iss.WithdrawSigningKeys(t.Context(), signing(t, b).kid); err != nil {
		t.Fatal(err)
	}
	if b.active(t, tok) {
		t.Error("B: /introspect right after the withdrawal at A: active")
	}
	storeUnreadableKey(t, a)
	b.clock.Advance(keyReload + time.Minute)
	if b.active(t, tok) {
		t.Errorf("B, its key reads failing, %s after the withdrawal at A: /introspect answers the withdrawn key's token active", keyReload+time.Minute)
	}
	if status := userinfoStatus(t, b, tok); status != http.StatusUnauthorized {
		t.Errorf("B, its key reads failing: /userinfo with the withdrawn key's token = %d, want 401", status)
	}
}

// waitSynced waits until iss's revocation set has caught up with the
// store at at (its clock's reading), failing t after 5 s.
func waitSynced(t *testing.T, iss *Issuer, at time.Time) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); iss.revs.synced.Load() < at.UnixNano(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the revocation set did not catch up within 5 s")
		}
	}
}

// TestRefreshAfterKeyWithdrawal: withdrawing every key leaves grants and
// refresh tokens alone: the access token of the withdrawn key is refused
// at /introspect, /userinfo and the local gateway, and a refresh answers
// a token of the new key that passes, with an ID token of the new
// ID-token key; the old ID token no longer verifies.
func TestRefreshAfterKeyWithdrawal(t *testing.T) {
	e := newTokEnv(t)
	g := localGateway(t, e)
	tok := e.userToken(t, tConf, "read", "openid", "offline_access")
	oldID, _ := tok.Extra("id_token").(string)
	if tok.RefreshToken == "" || oldID == "" {
		t.Fatalf("token response without a refresh token or an ID token: %+v", tok)
	}
	if status, body := pingVia(t, g, tok.AccessToken); status != http.StatusOK {
		t.Fatalf("access token before the withdrawal = %d %s", status, body)
	}
	res, err := e.iss.WithdrawSigningKeys(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if res.KID == "" || res.IDTokenKID == "" {
		t.Fatalf("withdrawal = %+v, want a new access-token and ID-token key", res)
	}
	if e.active(t, tok.AccessToken) {
		t.Error("/introspect: the withdrawn key's token is active")
	}
	if status := userinfoStatus(t, e, tok.AccessToken); status != http.StatusUnauthorized {
		t.Errorf("/userinfo with the withdrawn key's token = %d, want 401", status)
	}
	if status, body := pingVia(t, g, tok.AccessToken); status != http.StatusUnauthorized {
		t.Errorf("gateway: the withdrawn key's cached token = %d %s, want 401", status, body)
	}
	h, _ := claimsOf(t, oldID)
	if _, err := e.iss.idTokenKey(t.Context(), h["kid"].(string)); err == nil {
		t.Error("the old ID token's key still verifies")
	}

	e.clock.Advance(time.Second)
	fresh, err := e.oauthConfig(tConf, tSecret, oauth2.AuthStyleInHeader).TokenSource(e.ctx(), &oauth2.Token{RefreshToken: tok.RefreshToken}).Token()
	if err != nil {
		t.Fatalf("refresh after the withdrawal: %v", err)
	}
	if h, _ := claimsOf(t, fresh.AccessToken); h["kid"] != res.KID {
		t.Errorf("refreshed access token signed with %v, want the new key %s", h["kid"], res.KID)
	}
	if id, _ := fresh.Extra("id_token").(string); id != "" {
		if h, _ := claimsOf(t, id); h["kid"] != res.IDTokenKID {
			t.Errorf("refreshed ID token signed with %v, want the new ID-token key %s", h["kid"], res.IDTokenKID)
		}
	}
	if !e.active(t, fresh.AccessToken) {
		t.Error("/introspect: the refreshed token is inactive")
	}
	if status := userinfoStatus(t, e, fresh.AccessToken); status != http.StatusOK {
		t.Errorf("/userinfo with the refreshed token = %d, want 200", status)
	}
	if status, body := pingVia(t, g, fresh.AccessToken); status != http.StatusOK {
		t.Errorf("gateway: the refreshed token = %d %s, want 200", status, body)
	}
}

// userinfoStatus is the status of GET /userinfo with tok.
func userinfoStatus(t *testing.T, e *testEnv, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.iss.endpoint(pathUserinfo), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestKeyWithdrawalClockBehind: after a withdrawal of every key on A,
// an instance whose clock is behind A's (by less than the 5 s the
// instances' clocks must agree to) signs with the new key once it has
// re-read the keys, rather than finding no key that signs until its
// clock reaches A's.
func TestKeyWithdrawalClockBehind(t *testing.T) {
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	clockA, clockB := storetest.NewClock(start), storetest.NewClock(start.Add(-3*time.Second))
	st := memory.New(memory.Options{Now: clockA.Now, RunTwice: true})
	a, b := newTokEnvStore(t, st, clockA), newTokEnvStore(t, st, clockB)
	clockA.Advance(time.Minute) // B's clock too past the first key's start
	clockB.Advance(time.Minute)
	old := b.signedWith(t)
	// B read the keys 4 s before the withdrawal, and re-reads them 1 s
	// after it, when its clock is still 2 s short of A's at the withdrawal.
	clockA.Advance(4 * time.Second)
	clockB.Advance(4 * time.Second)
	res, err := a.iss.WithdrawSigningKeys(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	clockA.Advance(time.Second)
	clockB.Advance(time.Second)
	subj := tokenSubject{client: &Client{ID: tConf}, subject: tConf, resource: tResource, scopes: []string{"read"}}
	tok, _, _, err := b.iss.signAccessToken(t.Context(), subj, b.iss.expiry(subj))
	if err != nil {
		t.Fatalf("B, 3 s behind A, signing a second after the withdrawal of %s: %v", old, err)
	}
	if h, _ := claimsOf(t, tok); h["kid"] != res.KID {
		t.Errorf("B signs with %v, want the new key %s", h["kid"], res.KID)
	}
}

// TestKeyWithdrawalRS256: with signing_alg RS256 the access-token key
// signs the RS256 ID tokens and the ID-token set has no current key:
// withdrawing every key replaces the access-token key only, and nothing
// else stays published.
func TestKeyWithdrawalRS256(t *testing.T) {
	iss, _ := newAdminIssuer(t, func(c *Config) { c.SigningAlg = "RS256" })
	if err := iss.MakeIDTokenKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	res, err := iss.WithdrawSigningKeys(t.Context(), "")
	if err != nil || res.KID == "" || res.IDTokenKID != "" || len(res.Withdrawn) != 1 {
		t.Fatalf("WithdrawSigningKeys() = %+v, %v, want a new access-token key only, one withdrawn", res, err)
	}
	if got := publishedKids(t, iss); !slices.Equal(got, []string{res.KID}) {
		t.Errorf("published after the withdrawal = %v, want only %s", got, res.KID)
	}
}

// TestTokenExchangeAfterKeyWithdrawal: another instance verifies a
// token exchange's subject and actor tokens against its key set as last
// read, and signs the new token after re-reading it when that is due:
// in the seconds before it follows a withdrawal, a token of the
// withdrawn key (a thief's forgery) must not come out as a token of the
// new key, which nothing withdraws.
func TestTokenExchangeAfterKeyWithdrawal(t *testing.T) {
	a, b, clock := twoOnMemory(t)
	user := b.userToken(t, tPublic, "read", "write")
	actor := b.agentToken(t, tAgent1, tAgentSecret)
	stolen := tokenKID(t, user.AccessToken)
	if _, err := a.iss.WithdrawSigningKeys(t.Context(), stolen); err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyReload) // B's next signing re-reads the keys
	x := b.tokenExchange(t, tAgent1+":"+tAgentSecret, exchangeForm(user.AccessToken, actor))
	if x.status == http.StatusOK {
		t.Fatalf("B exchanged a token of the withdrawn key %s for one of %s: %s", stolen, tokenKID(t, x.str("access_token")), x.raw)
	}
	if x.str("error") != "invalid_request" {
		t.Errorf("exchange of a token of a withdrawn key = %d %s, want invalid_request", x.status, x.raw)
	}
}

// TestDelegatedCodeAfterKeyWithdrawal: an authorization code naming an
// actor is redeemed with the actor's token; as in a token exchange, an
// instance in the seconds before it follows a withdrawal must not take
// an actor token of the withdrawn key (a forgery of the agent's).
func TestDelegatedCodeAfterKeyWithdrawal(t *testing.T) {
	a, b, clock := twoOnMemory(t)
	actor := b.agentToken(t, tAgent1, tAgentSecret)
	stolen := tokenKID(t, actor)
	if _, err := a.iss.WithdrawSigningKeys(t.Context(), stolen); err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyReload) // B's next signing re-reads the keys
	code, verifier := b.issueCode(t, codeSpec{actor: tAgent1, scopes: []string{"read"}})
	tok, err := b.exchange(t, tPublic, "", code, verifier,
		oauth2.SetAuthURLParam("actor_token", actor), oauth2.SetAuthURLParam("actor_token_type", tokenTypeAccessToken))
	if err == nil {
		t.Fatalf("B redeemed a code with an actor token of the withdrawn key %s: a token of %s", stolen, tokenKID(t, tok.AccessToken))
	}
	if re := (*oauth2.RetrieveError)(nil); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("code with an actor token of a withdrawn key: %v, want invalid_grant", err)
	}
}

// TestNoTokenOfWithdrawnKeyIssued: another instance signs with a
// withdrawn key until it re-reads the keys; a code redeemed there then
// must not be spent on a token that is refused within seconds: the
// redemption fails and nothing is spent, and the client's retry gets a
// token of the new key.
func TestNoTokenOfWithdrawnKeyIssued(t *testing.T) {
	a, b, _ := twoOnMemory(t)
	old := b.signedWith(t)
	res, err := a.iss.WithdrawSigningKeys(t.Context(), old)
	if err != nil {
		t.Fatal(err)
	}
	code, verifier := b.issueCode(t, codeSpec{scopes: []string{"read"}})
	tok, err := b.exchange(t, tPublic, "", code, verifier)
	if err == nil && tokenKID(t, tok.AccessToken) == old {
		t.Fatalf("B spent the code on a token of the withdrawn key %s", old)
	}
	if err != nil {
		if tok, err = b.exchange(t, tPublic, "", code, verifier); err != nil {
			t.Fatalf("the client's retry of the code: %v", err)
		}
	}
	if kid := tokenKID(t, tok.AccessToken); kid != res.KID {
		t.Errorf("B's token is of %s, want the new key %s", kid, res.KID)
	}
}

// TestWithdrawalDuringRotationWait: the key a rotation retires signs
// for 70 s more, and an instance with longer-lived tokens extends its
// publication before signing (keyRing.signer). Withdrawn then by
// another instance, the key's record is gone: the instance re-reads the
// keys and signs with the new key, rather than failing until its
// periodic re-read.
func TestWithdrawalDuringRotationWait(t *testing.T) {
	a, b, _ := twoOnMemory(t, func(c *Config) { c.AccessTokenTTL, c.IDTokenTTL = 5*time.Minute, 5*time.Minute },
		func(c *Config) { c.AccessTokenTTL, c.IDTokenTTL = time.Hour, time.Hour })
	old := signing(t, a)
	if _, err := a.iss.RotateSigningKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := b.iss.keys.load(t.Context()); err != nil { // B sees old retiring in 70 s
		t.Fatal(err)
	}
	res, err := a.iss.WithdrawSigningKeys(t.Context(), old.kid)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, _ := clientTokenOf(t, b)
	if kid := tokenKID(t, tok); kid != res.KID {
		t.Errorf("B signed with %s, want the new key %s", kid, res.KID)
	}
}

// TestNoIDTokenOfWithdrawnKeyIssued: as for access tokens, an instance
// that has not re-read the keys since an ID-token key's withdrawal must
// not spend a code on an ID token of that key, which no relying party
// verifies.
func TestNoIDTokenOfWithdrawnKeyIssued(t *testing.T) {
	a, b, _ := twoOnMemory(t)
	first := b.userToken(t, tConf, "read", "openid")
	oldID, _ := first.Extra("id_token").(string)
	old := tokenKID(t, oldID)
	res, err := a.iss.WithdrawSigningKeys(t.Context(), old)
	if err != nil || res.IDTokenKID == "" {
		t.Fatalf("withdrawing the ID-token key %s: %+v, %v", old, res, err)
	}
	code, verifier := b.issueCode(t, codeSpec{client: tConf, scopes: []string{"read", "openid"}})
	tok, err := b.exchange(t, tConf, tSecret, code, verifier)
	if err != nil {
		if tok, err = b.exchange(t, tConf, tSecret, code, verifier); err != nil {
			t.Fatalf("the client's retry of the code: %v", err)
		}
	}
	idt, _ := tok.Extra("id_token").(string)
	if kid := tokenKID(t, idt); kid != res.IDTokenKID {
		t.Errorf("B's ID token is of %s, want the new ID-token key %s (withdrawn: %s)", kid, res.IDTokenKID, old)
	}
}

// twoOnMemory are two instances on one memory store and clock, A
// configured by the first of two options and B by the second.
func twoOnMemory(t *testing.T, opts ...envOption) (a, b *testEnv, clock *storetest.Clock) {
	t.Helper()
	clock = storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := memory.New(memory.Options{Now: clock.Now, RunTwice: true})
	var optA, optB []envOption
	if len(opts) == 2 {
		optA, optB = opts[:1], opts[1:]
	}
	return newTokEnvStore(t, st, clock, optA...), newTokEnvStore(t, st, clock, optB...), clock
}

// TestRevokeTokenOfKeyNotYetRead: right after a withdrawal at A, A signs
// with a new key that B, which read the keys less than keyMinReload ago,
// does not know yet. The token's revocation sent to B (behind one
// issuer URL, as behind a load balancer) must not answer 200 with
// nothing revoked: B reads the keys (or answers 503, and the client
// retries), and the token is refused everywhere.
func TestRevokeTokenOfKeyNotYetRead(t *testing.T) {
	a, b, _ := twoOnMemory(t, func(c *Config) { c.Issuer = "http://localhost:9" }, func(c *Config) { c.Issuer = "http://localhost:9" })
	behindOneURL([]*testEnv{a, b})
	b.signedWith(t) // B has just read the keys
	res, err := a.iss.WithdrawSigningKeys(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	tok, jti, gid := clientTokenOf(t, a)
	if kid := tokenKID(t, tok); kid != res.KID {
		t.Fatalf("A signed with %s, want the new key %s", kid, res.KID)
	}
	r := b.post(t, pathRevoke, url.Values{"token": {tok}}, tConf+":"+tSecret)
	switch r.status {
	case http.StatusOK:
		if revoked, err := a.iss.revokedInStore(t.Context(), "", jti, gid); !revoked || err != nil {
			t.Errorf("revoke at B = 200, but the token is not revoked (%v, %v)", revoked, err)
		}
	case http.StatusServiceUnavailable:
		if r.str("error") != "temporarily_unavailable" {
			t.Errorf("revoke at B = 503 %s, want temporarily_unavailable", r.raw)
		}
	default:
		t.Errorf("revoke at B = %d %s, want 200 with the token revoked, or 503", r.status, r.raw)
	}
}

// TestIntrospectTokenOfKeyNotYetRead: right after a withdrawal at A, A
// signs with a new key that B, which read the keys less than
// keyMinReload ago, does not hold. A resource server introspecting the
// token at B (a load balancer sends it anywhere) was told
// {"active":false}, which a gateway keeps for 10 s (its inactive cache)
// and answers 401 invalid_token: the client threw a good token away. B
// reads the keys then, as its revocation endpoint does
// (TestRevokeTokenOfKeyNotYetRead).
func TestIntrospectTokenOfKeyNotYetRead(t *testing.T) {
	a, b, _ := twoOnMemory(t, func(c *Config) { c.Issuer = "http://localhost:9" }, func(c *Config) { c.Issuer = "http://localhost:9" })
	behindOneURL([]*testEnv{a, b})
	b.signedWith(t) // B has just read the keys
	res, err := a.iss.WithdrawSigningKeys(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	tok, _, _ := clientTokenOf(t, a)
	if kid := tokenKID(t, tok); kid != res.KID {
		t.Fatalf("A signed with %s, want the new key %s", kid, res.KID)
	}
	if r := b.introspect(t, tok); r.status != http.StatusOK || r.raw == "{\"active\":false}\n" {
		t.Errorf("introspection at B of A's token of its new key = %d %s, want it active", r.status, r.raw)
	}
	// A token of no key the store holds stays inactive.
	parts := strings.Split(tok, ".")
	parts[0] = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","typ":"at+jwt","kid":"no-such-key"}`))
	forged := strings.Join(parts, ".")
	if r := b.introspect(t, forged); r.status != http.StatusOK || r.raw != "{\"active\":false}\n" {
		t.Errorf("introspection at B of a token of no key = %d %s, want inactive", r.status, r.raw)
	}
}

// TestTokenEndpointTokenOfKeyNotYetRead: right after a withdrawal at A,
// A signs with a new key that B, which read the keys less than
// keyMinReload ago, does not hold. A token of A's given to B's token
// endpoint as a token exchange's subject_token or actor_token, or as a
// delegated code's actor_token, was refused as invalid (invalid_request,
// invalid_grant: a client does not retry those, and the delegated code's
// user had to sign in and consent again). B reads the keys then, as its
// introspection and revocation endpoints do
// (TestIntrospectTokenOfKeyNotYetRead): the caller authenticated, or
// holds a code and its verifier, and verifying reads the store anyway. A
// token of no key the store holds stays refused.
func TestTokenEndpointTokenOfKeyNotYetRead(t *testing.T) {
	// withdrawn starts two instances behind one URL; A withdraws its key
	// after B read the keys and before B's next read (the fixed clock).
	withdrawn := func(t *testing.T) (a, b *testEnv) {
		t.Helper()
		a, b, _ = twoOnMemory(t, func(c *Config) { c.Issuer = "http://localhost:9" }, func(c *Config) { c.Issuer = "http://localhost:9" })
		behindOneURL([]*testEnv{a, b})
		b.signedWith(t) // B has just read the keys
		res, err := a.iss.WithdrawSigningKeys(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		if kid := tokenKID(t, a.clientToken(t)); kid != res.KID {
			t.Fatalf("A signed with %s, want the new key %s", kid, res.KID)
		}
		return a, b
	}
	agent1 := tAgent1 + ":" + tAgentSecret

	t.Run("subject_token", func(t *testing.T) {
		a, b := withdrawn(t)
		tok, _, _ := clientTokenOf(t, a)
		if x := b.tokenExchange(t, tConf+":"+tSecret, exchangeForm(tok, "")); x.status != http.StatusOK {
			t.Errorf("exchange at B of A's token of its new key = %d %s, want 200", x.status, x.raw)
		}
		parts := strings.Split(tok, ".")
		parts[0] = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","typ":"at+jwt","kid":"no-such-key"}`))
		if x := b.tokenExchange(t, tConf+":"+tSecret, exchangeForm(strings.Join(parts, "."), "")); x.str("error") != "invalid_request" {
			t.Errorf("exchange at B of a token of no key = %d %s, want invalid_request", x.status, x.raw)
		}
	})
	t.Run("exchange actor_token", func(t *testing.T) {
		// The subject token of a key B holds, the actor token of the key
		// A's withdrawal of the one before makes: the subject's key, which
		// had taken over from it, retires, published for its tokens.
		a, b, clock := twoOnMemory(t, func(c *Config) { c.Issuer = "http://localhost:9" }, func(c *Config) { c.Issuer = "http://localhost:9" })
		behindOneURL([]*testEnv{a, b})
		old := a.signedWith(t)
		if _, err := a.iss.RotateSigningKey(t.Context()); err != nil {
			t.Fatal(err)
		}
		clock.Advance(keyPublishDelay + time.Second)
		user := a.userToken(t, tPublic, "read").AccessToken
		b.signedWith(t) // B has just read the keys
		res, err := a.iss.WithdrawSigningKeys(t.Context(), old)
		if err != nil {
			t.Fatal(err)
		}
		actor := a.agentToken(t, tAgent1, tAgentSecret)
		if kid := tokenKID(t, actor); kid != res.KID || kid == tokenKID(t, user) {
			t.Fatalf("A signed the actor token with %s, want the new key %s", kid, res.KID)
		}
		if x := b.tokenExchange(t, agent1, exchangeForm(user, actor)); x.status != http.StatusOK {
			t.Errorf("exchange at B with A's agent token of its new key = %d %s, want 200", x.status, x.raw)
		}
	})
	t.Run("delegated code actor_token", func(t *testing.T) {
		a, b := withdrawn(t)
		actor := a.agentToken(t, tAgent1, tAgentSecret)
		code, verifier := b.issueCode(t, codeSpec{actor: tAgent1})
		if _, err := b.exchange(t, tPublic, "", code, verifier,
			oauth2.SetAuthURLParam("actor_token", actor), oauth2.SetAuthURLParam("actor_token_type", tokenTypeAccessToken)); err != nil {
			t.Errorf("delegated code at B with A's agent token of its new key: %v, want tokens", err)
		}
	})
}
