package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// cutProxy stands between one instance and the PostgreSQL server (its
// unix socket): cut ends the connections it carries and refuses new
// ones, as a network partition between that instance and the database
// does while the others still reach it; mend lets them through again.
type cutProxy struct {
	dsn string // the instance's DSN, through the proxy

	mu    sync.Mutex
	cuts  bool
	conns []net.Conn
}

var dsnHost = regexp.MustCompile(`host=(\S+)`)

func newCutProxy(t *testing.T, dsn string) *cutProxy {
	t.Helper()
	m := dsnHost.FindStringSubmatch(dsn)
	if m == nil {
		t.Fatalf("no host in %q", dsn)
	}
	server := filepath.Join(m[1], ".s.PGSQL.5432")
	dir, err := os.MkdirTemp("", "pgcut") // short: a socket path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{dsn: dsnHost.ReplaceAllString(dsn, "host="+dir)}
	t.Cleanup(func() { _ = l.Close(); p.cut() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cuts {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			up, err := net.Dial("unix", server)
			if err != nil {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() { _, _ = io.Copy(c, up); _ = c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cuts = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) mend() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cuts = false
}

// TestJWKSNotServedStale: a signing key withdrawn (it leaked) at one
// instance while another is cut off from the database. The instance cut
// off cannot learn of the withdrawal, and once it has not read its keys
// for revocation_max_stale it stops vouching for them, as its gateways
// stop honouring tokens then: its /jwks answers 503
// temporarily_unavailable rather than the withdrawn key, which a
// verifier that refetched from the other instance had dropped and would
// take back from this one, and which one with no copy would learn. Back
// in reach, it serves the set without the key.
func TestJWKSNotServedStale(t *testing.T) {
	const maxStale = 30 * time.Second
	stale := func(c *Config) { c.RevocationResync, c.RevocationMaxStale = time.Second, maxStale }
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	link := newCutProxy(t, dsn)
	a := postgresEnv(t, link.dsn, clock, stale)
	b := postgresEnv(t, dsn, clock, stale)
	for _, e := range []*testEnv{a, b} { // as caddymodule does at start
		if err := e.iss.MakeIDTokenKey(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	stolen := signing(t, b)
	if keys, _ := a.jwksOf(t); !slices.Contains(kids(keys), stolen.kid) {
		t.Fatalf("A's JWKS = %v, want %s", kids(keys), stolen.kid)
	}

	link.cut()
	res, err := b.iss.WithdrawSigningKeys(t.Context(), stolen.kid)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(keyReload)
	if keys, _ := b.jwksOf(t); slices.Contains(kids(keys), stolen.kid) {
		t.Fatalf("B's JWKS after the withdrawal = %v, still with %s", kids(keys), stolen.kid)
	}
	// Within revocation_max_stale the instance cut off serves what it
	// knows, as its gateways honour what they know.
	if keys, _ := a.jwksOf(t); !slices.Contains(kids(keys), stolen.kid) {
		t.Errorf("A's JWKS %s into the partition = %v, want the set it knows", keyReload, kids(keys))
	}

	clock.Advance(maxStale)
	resp, err := a.srv.Client().Get(a.iss.endpoint(pathJWKS))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var e struct{ Error string }
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusServiceUnavailable || e.Error != "temporarily_unavailable" || resp.Header.Get("Retry-After") == "" {
		t.Errorf("A's JWKS %s into the partition = %d %q (Retry-After %q), want 503 temporarily_unavailable with Retry-After, not the withdrawn key",
			keyReload+maxStale, resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}

	link.mend()
	// A read that failed is tried again keyMinReload later, not by the
	// next request (TestUnknownKidReloadsRarely).
	clock.Advance(keyMinReload)
	keys, _ := a.jwksOf(t)
	if slices.Contains(kids(keys), stolen.kid) || !slices.Contains(kids(keys), res.KID) {
		t.Errorf("A's JWKS back in reach = %v, want %s without %s", kids(keys), res.KID, stolen.kid)
	}
}

// TestJWKSServedWithShortMaxStale: with a revocation_max_stale shorter
// than keyReload (2 s beside a 1 s resync, which configuration allows),
// /jwks judged the key set stale by when the ring last re-read it, which
// it does only every keyReload: on a store that answers (memory, bbolt,
// a PostgreSQL that is up) it answered 503 for the 3 s of every 5 that
// followed, and verifiers fetching then got no keys. A set older than the
// bound is re-read first; only a store that does not answer makes it 503.
func TestJWKSServedWithShortMaxStale(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.RevocationResync, c.RevocationMaxStale = time.Second, 2*time.Second })
	if keys, _ := e.jwksOf(t); len(keys) == 0 {
		t.Fatal("no keys")
	}
	for _, d := range []time.Duration{3 * time.Second, time.Second, 4 * time.Second} {
		e.clock.Advance(d)
		if code, body := e.jwksStatus(t); code != http.StatusOK {
			t.Errorf("JWKS %s later on a store that answers = %d %s, want 200", d, code, body)
		}
	}
}

// TestStaleJWKSReadsRarely: past revocation_max_stale with the store down,
// /jwks (anyone may ask) tries the store at most once per keyMinReload
// per key ring, as every read a request causes; the others get 503 from
// the last read's error.
func TestStaleJWKSReadsRarely(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &failingStore{Store: memory.New(memory.Options{Now: clock.Now})}
	e := newTokEnvStore(t, st, clock, func(c *Config) { c.RevocationResync, c.RevocationMaxStale = time.Second, 2*time.Second })
	if err := e.iss.MakeIDTokenKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	if keys, _ := e.jwksOf(t); len(keys) == 0 {
		t.Fatal("no keys")
	}
	st.down.Store(true)
	clock.Advance(3 * time.Second) // past the bound, short of keyReload
	failed := st.failed.Load()
	for k := range 100 {
		rec := httptest.NewRecorder()
		e.iss.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, pathJWKS, nil))
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("stale /jwks request %d with the store down = %d %s, want 503", k, rec.Code, rec.Body)
		}
	}
	if n := st.failed.Load() - failed; n > 2 {
		t.Errorf("100 stale /jwks requests with the store down tried it %d times, want at most one per key ring", n)
	}
	st.down.Store(false)
	clock.Advance(keyMinReload)
	if keys, _ := e.jwksOf(t); len(keys) == 0 {
		t.Error("/jwks keyMinReload after the store is back: no keys, want the set")
	}
}

// TestJWKSServedWithSubSecondMaxStale: revocation_max_stale may be under a
// second (twice a resync of 100 ms, say); /jwks re-reads the key set when
// it is older than that, on a store that answers, rather than refusing it
// until keyMinReload has passed since the last read.
func TestJWKSServedWithSubSecondMaxStale(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.RevocationResync, c.RevocationMaxStale = 100*time.Millisecond, 300*time.Millisecond })
	if keys, _ := e.jwksOf(t); len(keys) == 0 {
		t.Fatal("no keys")
	}
	for n := range 5 {
		e.clock.Advance(400 * time.Millisecond)
		if code, body := e.jwksStatus(t); code != http.StatusOK {
			t.Errorf("JWKS %d (400 ms after the last) on a store that answers = %d %s, want 200", n, code, body)
		}
	}
}

// jwksStatus fetches /jwks, returning its status and body.
func (e *testEnv) jwksStatus(t *testing.T) (int, []byte) {
	t.Helper()
	resp, err := e.srv.Client().Get(e.iss.endpoint(pathJWKS))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// TestJWKSAfterFailedReadOfFreshSet: with signing_alg RS256 the RS256
// ID-token key set is empty. A read of it that failed (an id_token_hint
// with a kid nobody published, during a database blip) while its copy
// was fresh must not outlast the blip: once the store answers, /jwks
// serves the keys, rather than the failed read's error until the copy
// went stale (keyReload).
func TestJWKSAfterFailedReadOfFreshSet(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &failingStore{Store: memory.New(memory.Options{Now: clock.Now})}
	e := newTokEnvStore(t, st, clock, func(c *Config) { c.SigningAlg = "RS256" })
	if keys, _ := e.jwksOf(t); len(keys) == 0 {
		t.Fatal("no keys")
	}
	clock.Advance(keyMinReload + keyMinReload/2)
	// The access-token set is read now: a made-up kid is then looked up
	// in the ID-token set, whose copy is older than keyMinReload.
	if _, err := e.iss.PublicKey(t.Context(), "made-up"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("PublicKey(made-up) = %v, want ErrNotFound", err)
	}
	st.down.Store(true)
	if _, err := e.iss.idTokenKey(t.Context(), "made-up"); err == nil {
		t.Fatal("idTokenKey(made-up) with the store down: nil error")
	}
	st.down.Store(false)
	for n := range 3 {
		if code, body := e.jwksStatus(t); code != http.StatusOK {
			t.Errorf("JWKS %d s after the store is back = %d %s, want 200", n, code, body)
		}
		clock.Advance(time.Second)
	}
}

// TestJWKSAfterCanceledRead: a /jwks request whose client went away
// (its context canceled) while it read the key set tells nothing of the
// store: the next /jwks, on a store that answers, serves the keys rather
// than that request's error (signing_alg RS256: the ID-token set is
// empty and would return it).
func TestJWKSAfterCanceledRead(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.SigningAlg = "RS256" })
	if keys, _ := e.jwksOf(t); len(keys) == 0 {
		t.Fatal("no keys")
	}
	e.clock.Advance(keyReload) // both sets are to be read again
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e.iss.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(ctx, http.MethodGet, pathJWKS, nil))
	if code, body := e.jwksStatus(t); code != http.StatusOK {
		t.Errorf("JWKS after a canceled one = %d %s, want 200", code, body)
	}
}

// TestIDTokenHintAfterFailedReadOfAccessKeys: a read of the access-token
// key set that failed (a kid nobody published, during a store blip)
// leaves that set's error for keyMinReload; an id_token_hint signed by
// the RS256 ID-token key, which the other set holds, is read all the
// same, rather than as no hint until then.
func TestIDTokenHintAfterFailedReadOfAccessKeys(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &failingStore{Store: memory.New(memory.Options{Now: clock.Now})}
	e := newTokEnvStore(t, st, clock)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"openid"}})
	tok, err := e.exchange(t, tPublic, "", code, verifier)
	if err != nil {
		t.Fatal(err)
	}
	idt, _ := tok.Extra("id_token").(string)
	if e.iss.idTokenHint(t.Context(), idt) == nil {
		t.Fatal("id_token_hint not read with the store up")
	}
	clock.Advance(keyMinReload + keyMinReload/2)
	st.down.Store(true)
	if _, err := e.iss.PublicKey(t.Context(), "made-up"); err == nil {
		t.Fatal("PublicKey(made-up) with the store down: nil error")
	}
	st.down.Store(false)
	if e.iss.idTokenHint(t.Context(), idt) == nil {
		t.Error("id_token_hint read as no hint after a failed read of the access-token keys, want its claims")
	}
}

// TestJWKSServedToConcurrentRequests: a key set past revocation_max_stale
// is read again by the /jwks request that finds it so; requests arriving
// while that read is under way (verifiers fetching at once after a
// rotation, the ID-token set, which nothing else re-reads, every 30 s by
// default) answered 503 temporarily_unavailable ("a read is under way")
// on a PostgreSQL that answers. They wait for that read now, and serve
// what it read.
func TestJWKSServedToConcurrentRequests(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st, err := postgres.Open(t.Context(), pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	e := newTokEnvStore(t, st, clock, func(c *Config) { c.RevocationResync, c.RevocationMaxStale = time.Second, DefaultRevocationMaxStale })
	if err := e.iss.MakeIDTokenKey(t.Context()); err != nil {
		t.Fatal(err)
	}
	if keys, _ := e.jwksOf(t); len(keys) != 2 {
		t.Fatalf("JWKS = %v, want the access-token and ID-token keys", kids(keys))
	}
	const rounds, concurrent = 5, 20
	var refused atomic.Int64
	for range rounds {
		clock.Advance(DefaultRevocationMaxStale + time.Second)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range concurrent {
			wg.Go(func() {
				<-start
				resp, err := e.srv.Client().Get(e.iss.endpoint(pathJWKS))
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK {
					if refused.Add(1) == 1 {
						t.Errorf("/jwks past the bound, beside another request's read = %d %s, want 200", resp.StatusCode, body)
					}
				}
			})
		}
		close(start)
		wg.Wait()
	}
	if n := refused.Load(); n > 0 {
		t.Errorf("%d of %d concurrent /jwks requests on a store that answers refused", n, rounds*concurrent)
	}
}

// TestJWKSPastMaxStaleAfterCanceledRead: a /jwks request whose client
// went away while it re-read a key set past revocation_max_stale tells
// nothing of the store. The read it began is the others' too (they wait
// for it, and no one else reads before keyMinReload): it went on being
// canceled with the request, and the next /jwks, and every one waiting,
// answered 503 ("a read is under way") for a second on a store that
// answers. The read now outlives its request.
func TestJWKSPastMaxStaleAfterCanceledRead(t *testing.T) {
	e := newTokEnv(t, func(c *Config) { c.RevocationResync, c.RevocationMaxStale = time.Second, DefaultRevocationMaxStale })
	if keys, _ := e.jwksOf(t); len(keys) == 0 {
		t.Fatal("no keys")
	}
	e.clock.Advance(DefaultRevocationMaxStale + time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e.iss.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(ctx, http.MethodGet, pathJWKS, nil))
	if code, body := e.jwksStatus(t); code != http.StatusOK {
		t.Errorf("JWKS past revocation_max_stale after a canceled one = %d %s, want 200", code, body)
	}
}

// TestKeyLookupWaitsForReadUnderWay: right after a withdrawal at A, A
// signs with a new key; at B, whose copy lacks it, the first lookup of
// its kid (a gateway of the local issuer verifying A's token) reads the
// key set, and lookups arriving meanwhile found the read due taken
// (keyMinReload) and the copy without the key: store.ErrNotFound, which
// the gateway answers 401 invalid_token, so their clients threw away a
// good token. They now wait for the read under way, as /jwks does
// (TestJWKSServedToConcurrentRequests). PostgreSQL, so that the read
// takes as long as a database's.
func TestKeyLookupWaitsForReadUnderWay(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st, err := postgres.Open(t.Context(), pgtest.NewDatabase(t), postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	url := func(c *Config) { c.Issuer = "http://localhost:9" }
	a, b := newTokEnvStore(t, st, clock, url), newTokEnvStore(t, st, clock, url)
	const rounds, concurrent = 5, 20
	var refused atomic.Int64
	for range rounds {
		b.signedWith(t) // B has read the keys
		res, err := a.iss.WithdrawSigningKeys(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(keyMinReload + time.Second) // B may read again
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range concurrent {
			wg.Go(func() {
				<-start
				if _, err := b.iss.PublicKey(t.Context(), res.KID); err != nil {
					if refused.Add(1) == 1 {
						t.Errorf("B's lookup of A's new key, beside another's read = %v, want the key", err)
					}
				}
			})
		}
		close(start)
		wg.Wait()
	}
	if n := refused.Load(); n > 0 {
		t.Errorf("%d of %d concurrent lookups of a key the store holds refused", n, rounds*concurrent)
	}
}
