package issuer

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// getFrom serves a GET of path?q as if from remote, with no cookies.
func (e *testEnv) getFrom(remote, path string, q url.Values) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, e.url(path, q), nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	e.iss.ServeHTTP(w, r)
	return w
}

// TestAnonymousWritesRateLimited: what a browser that has not signed in
// makes the issuer store (a session, a pending authorization request) is
// limited per address. Past the limit nothing is stored: /authorize
// answers temporarily_unavailable (to an operator's client at its
// redirect URI), the login page 429 with Retry-After.
func TestAnonymousWritesRateLimited(t *testing.T) {
	e := newBrowserEnv(t, nil)
	const from, other = "203.0.113.9:4000", "198.51.100.7:4000"
	// A cookieless /authorize stores a session and a pending request.
	for k := range anonWriteBurst / 2 {
		if w := e.getFrom(from, pathAuthorize, authParams(testChallenge)); w.Code != http.StatusSeeOther ||
			!strings.HasPrefix(w.Header().Get("Location"), pathLogin) {
			t.Fatalf("authorize %d = %d %q, want 303 to the login page", k, w.Code, w.Header().Get("Location"))
		}
	}
	sessions, pending := e.count(bucketSessions), e.count(bucketPending)
	if sessions != anonWriteBurst/2 || pending != anonWriteBurst/2 {
		t.Fatalf("stored sessions, pending = %d, %d; want %d each", sessions, pending, anonWriteBurst/2)
	}

	w := e.getFrom(from, pathAuthorize, authParams(testChallenge))
	loc, err := url.Parse(w.Header().Get("Location"))
	if err != nil || w.Code != http.StatusSeeOther || !strings.HasPrefix(loc.String(), bRedirect) ||
		loc.Query().Get("error") != "temporarily_unavailable" {
		t.Errorf("authorize past the limit = %d %q, want 303 to the client with temporarily_unavailable", w.Code, loc)
	}
	w = e.getFrom(from, pathLogin, nil)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || len(w.Result().Cookies()) != 0 {
		t.Errorf("login page past the limit = %d %v, want 429 with Retry-After and no session", w.Code, w.Header())
	}
	if s, p := e.count(bucketSessions), e.count(bucketPending); s != sessions || p != pending {
		t.Errorf("stored sessions, pending past the limit = %d, %d; want %d, %d (nothing stored)", s, p, sessions, pending)
	}

	// Other addresses are not affected, and the bucket refills.
	if w := e.getFrom(other, pathLogin, nil); w.Code != http.StatusOK {
		t.Errorf("login page from another address = %d, want 200", w.Code)
	}
	e.clock.Advance(time.Minute)
	if w := e.getFrom(from, pathAuthorize, authParams(testChallenge)); w.Code != http.StatusSeeOther ||
		!strings.HasPrefix(w.Header().Get("Location"), pathLogin) {
		t.Errorf("authorize after a minute = %d %q, want 303 to the login page", w.Code, w.Header().Get("Location"))
	}
}

// TestCIMDFetchesRateLimited: any URL can be named as a client_id, and
// each new one is fetched, so fetches are limited per address; past the
// limit the document is not fetched and nothing is cached.
func TestCIMDFetchesRateLimited(t *testing.T) {
	const fetchesPerMinute = 60 // per address, README (Limits); not the constant
	e, host := newCIMDEnv(t, true, nil)
	const from = "203.0.113.9:4000"
	authorize := func(n int) *httptest.ResponseRecorder {
		p := authParams(testChallenge)
		p.Set("client_id", host.docOn(fmt.Sprintf("c%d", n), fmt.Sprintf("/c%d.json", n), ""))
		p.Set("redirect_uri", "http://127.0.0.1:3000/callback")
		p.Del("resource")
		p.Del("scope")
		// prompt=none ends at login_required: only the fetch writes.
		p.Set("prompt", "none")
		return e.getFrom(from, pathAuthorize, p)
	}
	for n := range fetchesPerMinute {
		if w := authorize(n); w.Code == http.StatusBadRequest && strings.Contains(w.Body.String(), "could not be identified") {
			t.Fatalf("authorize with document %d = %d %s, want the document used", n, w.Code, w.Body)
		}
	}
	cached := e.count(bucketCIMD)
	if cached != fetchesPerMinute {
		t.Fatalf("cached documents = %d, want %d", cached, fetchesPerMinute)
	}
	w := authorize(fetchesPerMinute)
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "too many client metadata documents") {
		t.Errorf("authorize with one document too many = %d %s, want an error page saying so", w.Code, w.Body)
	}
	if host.count(fmt.Sprintf("/c%d.json", fetchesPerMinute)) != 0 || e.count(bucketCIMD) != cached {
		t.Errorf("the refused document was fetched or cached")
	}
}

// TestLimiterMemoryFull: a memory full of failure scores (distinct
// accounts and addresses, as a flood makes them) still lets a new check
// run: attempts in flight are not subject to the bound, so a full table
// costs tracking the flood's newest scores, not everyone's logins (review
// s11-cluster F3). Before, every check waited for room and got
// errHashBusy (503) for as long as the scores lived.
func TestLimiterMemoryFull(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	mem := newMemCounters(clock.Now, 40, true)
	l := newLimiter(clock.Now, mem, nil)
	l.pause = func(context.Context, time.Duration) error { return nil }
	ctx := t.Context()
	for i := range 100 {
		account, addr := fmt.Sprintf("u%d", i), fmt.Sprintf("10.0.%d.%d", i/256, i%256)
		d, gen, err := l.reserveAttempt(ctx, account, addr)
		if err != nil || d > 0 {
			t.Fatalf("flood attempt %d: delay %v, %v", i, d, err)
		}
		l.attemptFailed(ctx, account, addr, gen)
	}
	if n := len(mem.m); n > mem.max {
		t.Errorf("%d counters kept, want at most %d", n, mem.max)
	}
	d, gen, err := l.reserveAttempt(ctx, "svc", "192.0.2.1")
	if err != nil || d > 0 {
		t.Fatalf("a new client's check with the memory full: delay %v, %v; want it to run", d, err)
	}
	l.attemptSucceeded(ctx, "svc", "192.0.2.1", gen)
	if n := len(mem.m); n > mem.max {
		t.Errorf("after the check: %d counters kept, want at most %d (nothing in flight left)", n, mem.max)
	}
	// Guessing at one account from ever new addresses amid the flood
	// still slows that account's checks: its score is never the weakest.
	for i := range 200 {
		guess, flood := fmt.Sprintf("172.16.%d.%d", i/256, i%256), fmt.Sprintf("172.17.%d.%d", i/256, i%256)
		for _, a := range [][2]string{{"alice", guess}, {fmt.Sprintf("u-late-%d", i), flood}} {
			d, gen, err := l.reserveAttempt(ctx, a[0], a[1])
			if err != nil || d > 0 {
				t.Fatalf("attempt %d for %s: delay %v, %v", i, a[0], d, err)
			}
			l.attemptFailed(ctx, a[0], a[1], gen)
		}
	}
	// A flood whose addresses each block (unknown clients: no hash, the
	// address alone counts) does not push the account's score out either
	// (review s11-fresh2 F2).
	for i := range 300 {
		flood := fmt.Sprintf("198.18.%d.%d", i/256, i%256)
		for range limitFreeAddr + 1 {
			l.recordFailure(ctx, "", flood)
		}
	}
	slow, err := l.accountSlowness(ctx, "alice")
	if err != nil || slow == 0 {
		t.Errorf("after 200 failed guesses at one account amid a flood: slowness %v, %v; want its checks slowed", slow, err)
	}
}

// TestRateBucketsFullRefuse: a full memory of rate buckets refuses a new
// key rather than drop a bucket, which would hand its key a full budget.
func TestRateBucketsFullRefuse(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := newRateLimiter(clock.Now, 2, time.Minute, newMemCounters(clock.Now, 3, false))
	for _, key := range []string{"a", "a", "b", "c"} {
		if d, err := l.take(t.Context(), key); err != nil || d != 0 {
			t.Fatalf("take(%s) = %v, %v", key, d, err)
		}
	}
	if d, err := l.take(t.Context(), "a"); err != nil || d == 0 {
		t.Errorf("take(a) with its bucket spent = %v, %v; want a wait", d, err)
	}
	if d, err := l.take(t.Context(), "d"); err != nil || d == 0 {
		t.Errorf("take(d) with the memory full = %v, %v; want a refusal", d, err)
	}
	if d, err := l.take(t.Context(), "a"); err != nil || d == 0 {
		t.Errorf("take(a) after the refusal = %v, %v; want its bucket still spent", d, err)
	}
}

// TestRateBucketsClockBehind: instances sharing a store take from one
// bucket, each by its own clock, read back from the store without a
// monotonic reading. An instance whose clock is behind the bucket's last
// take (within the allowed skew, or an hour after another's clock ran
// ahead and was set right) read the difference as tokens spent: the
// bucket went below zero, and every take was refused for as long as the
// clocks differed. Ahead or behind, the instances together still take no
// more than the bucket holds.
func TestRateBucketsClockBehind(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		ahead time.Time
	}{
		{"5s", start.Add(5 * time.Second)},
		{"1h", start.Add(time.Hour)},
		// Past what a time.Duration holds.
		{"300 years", start.AddDate(300, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clockA, clockB := storetest.NewClock(tc.ahead), storetest.NewClock(start)
			st := memory.New(memory.Options{Now: clockB.Now})
			a := newRateLimiter(clockA.Now, 3, time.Minute, storeCounters{st, limitsUserWrites})
			b := newRateLimiter(clockB.Now, 3, time.Minute, storeCounters{st, limitsUserWrites})
			if d, err := a.take(t.Context(), "alice"); err != nil || d != 0 {
				t.Fatalf("take at the instance ahead = %v, %v; want 0", d, err)
			}
			for i := range 2 {
				if d, err := b.take(t.Context(), "alice"); err != nil || d != 0 {
					t.Fatalf("take %d at the instance %s behind, the bucket holding %d more = %v, %v; want 0", i+1, tc.name, 2-i, d, err)
				}
			}
			for _, l := range []*rateLimiter{a, b} {
				if d, err := l.take(t.Context(), "alice"); err != nil || d <= 0 {
					t.Errorf("take with the bucket spent = %v, %v; want a wait", d, err)
				}
			}
			ahead := tc.ahead.Sub(start)
			if ahead == math.MaxInt64 {
				return
			}
			// A minute refills the whole bucket at the instance ahead;
			// at the one behind, a minute after its clock passes the
			// last take's.
			clockA.Advance(time.Minute)
			clockB.Advance(time.Minute + ahead)
			for i, l := range []*rateLimiter{a, b, a} {
				if d, err := l.take(t.Context(), "alice"); err != nil || d != 0 {
					t.Errorf("take %d a minute on = %v, %v; want 0", i+1, d, err)
				}
			}
			if d, err := b.take(t.Context(), "alice"); err != nil || d <= 0 {
				t.Errorf("fourth take a minute on = %v, %v; want a wait", d, err)
			}
		})
	}
}

// TestLimitsKeptAcrossReload: on a store no other instance shares, the
// brute-force scores live in the process's LimitMemory, so the issuer a
// configuration reload builds keeps blocking what the previous one
// blocked (review s11-cluster F4); without it a reload gave a fresh budget.
func TestLimitsKeptAcrossReload(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	mem := newLimitMemory(clock.Now)
	st := memory.New(memory.Options{Now: clock.Now})
	t.Cleanup(func() { _ = st.Close() })
	build := func(limits *LimitMemory) *Issuer {
		iss, err := New(Config{Issuer: "http://127.0.0.1:8080", Now: clock.Now, Limits: limits}, st)
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	before := build(mem)
	for range limitFreeAddr + 1 {
		before.limiter.recordFailure(t.Context(), "svc", "192.0.2.7")
	}
	if d, err := before.limiter.attemptDelay(t.Context(), "svc", "192.0.2.7"); err != nil || d == 0 {
		t.Fatalf("before the reload: delay %v, %v; want a block", d, err)
	}
	if d, err := build(mem).limiter.attemptDelay(t.Context(), "svc", "192.0.2.7"); err != nil || d == 0 {
		t.Errorf("after the reload: delay %v, %v; want the block kept", d, err)
	}
	if d, _ := build(nil).limiter.attemptDelay(t.Context(), "svc", "192.0.2.7"); d != 0 {
		t.Errorf("an issuer with memory of its own: delay %v, want none (the test's control)", d)
	}
	// The buckets of this instance's own writes: unauthenticated writes
	// per address, pushed authorization requests per client; and of its
	// fetches of client metadata documents per address.
	for _, b := range []struct {
		name  string
		burst int
		of    func(*Issuer) *rateLimiter
	}{
		{"anonymous writes", anonWriteBurst, func(i *Issuer) *rateLimiter { return i.anonWrites }},
		{"pushed requests", parClientBurst, func(i *Issuer) *rateLimiter { return i.parClients }},
		{"client metadata documents fetched", cimdFetchBurst, func(i *Issuer) *rateLimiter { return i.cimd.fetches }},
		{"signed-in users' writes", userWriteBurst, func(i *Issuer) *rateLimiter { return i.userWrites }},
	} {
		for range b.burst {
			if d, err := b.of(before).take(t.Context(), "192.0.2.8"); err != nil || d != 0 {
				t.Fatalf("%s within the burst: wait %v, %v", b.name, d, err)
			}
		}
		if d, err := b.of(build(mem)).take(t.Context(), "192.0.2.8"); err != nil || d == 0 {
			t.Errorf("%s after the reload: wait %v, %v; want the spent budget kept", b.name, d, err)
		}
		if d, _ := b.of(build(nil)).take(t.Context(), "192.0.2.8"); d != 0 {
			t.Errorf("%s, an issuer with memory of its own: wait %v, want none (the test's control)", b.name, d)
		}
	}
}

// TestSignedInWritesRateLimited: a signed-in user's authorization
// requests store something too (a pending request of up to 4 KiB for 15
// minutes, a code), so they are limited per user: before, one signed-in
// browser could grow the store as fast as it sent them. Past the limit
// nothing is stored and /authorize answers temporarily_unavailable (to
// an operator's client at its redirect URI); other users are not
// affected, and the budget refills.
func TestSignedInWritesRateLimited(t *testing.T) {
	const documented = 300 // a minute, README (Limits: Signed-in users' writes); not the constant
	e := newBrowserEnv(t, nil)
	signIn := func(user string) *http.Client {
		t.Helper()
		c := e.browser()
		if _, err := e.robot(c, e.url(pathAuthorize, webAuthParams(testChallenge)), bWebRedirect, user, bPassword, "approve"); err != nil {
			t.Fatalf("robot(%s): %v", user, err)
		}
		return c
	}
	authorize := func(c *http.Client, prompt string) *url.URL {
		t.Helper()
		p := webAuthParams(testChallenge)
		p.Set("state", strings.Repeat("s", 1900))
		if prompt != "" {
			p.Set("prompt", prompt)
		}
		resp, err := c.Get(e.url(pathAuthorize, p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("authorize = %d %q, want a 303", resp.StatusCode, resp.Header.Get("Location"))
		}
		return loc
	}
	refused := func(loc *url.URL) bool {
		return strings.HasPrefix(loc.String(), bWebRedirect) && loc.Query().Get("error") == "temporarily_unavailable"
	}
	alice := signIn(bUser)
	pending := e.count(bucketPending)
	// Consent asked again (prompt=consent): each parks a pending request.
	for n := range documented {
		if loc := authorize(alice, "consent"); !strings.HasPrefix(loc.Path, pathConsent) {
			t.Fatalf("authorize %d = %q, want the consent page", n, loc)
		}
	}
	if got := e.count(bucketPending); got != pending+documented {
		t.Fatalf("pending requests = %d, want %d", got, pending+documented)
	}
	if loc := authorize(alice, "consent"); !refused(loc) {
		t.Errorf("authorize past the limit = %s, error %q; want temporarily_unavailable at the redirect URI", loc.Path, loc.Query().Get("error"))
	}
	// Remembered consent stores a code; re-authentication a pending request.
	codes := e.count(bucketCodes)
	for _, prompt := range []string{"", "login"} {
		if loc := authorize(alice, prompt); !refused(loc) {
			t.Errorf("authorize with prompt %q past the limit = %s, error %q; want temporarily_unavailable", prompt, loc.Path, loc.Query().Get("error"))
		}
	}
	// A self-registered client gets no error at its redirect URI
	// unprompted: a 429 page.
	w := registerFrom(e.iss, "198.51.100.7:1000", `{"client_name":"CLI","redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}`)
	var reg struct {
		ClientID string `json:"client_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &reg); err != nil || w.Code != http.StatusCreated {
		t.Fatalf("register = %d %s", w.Code, w.Body)
	}
	p := authParams(testChallenge)
	p.Set("client_id", reg.ClientID)
	p.Set("redirect_uri", "http://127.0.0.1/cb")
	resp, err := alice.Get(e.url(pathAuthorize, p))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("authorize of a registered client past the limit = %d %v, want 429 with Retry-After", resp.StatusCode, resp.Header)
	}
	if p, c := e.count(bucketPending), e.count(bucketCodes); p != pending+documented || c != codes {
		t.Errorf("pending requests, codes past the limit = %d, %d; want %d, %d (nothing stored)", p, c, pending+documented, codes)
	}

	if loc := authorize(signIn("bob"), "consent"); !strings.HasPrefix(loc.Path, pathConsent) {
		t.Errorf("another user's authorize = %q, want the consent page", loc)
	}
	e.clock.Advance(time.Minute)
	if loc := authorize(alice, ""); loc.Query().Get("code") == "" {
		t.Errorf("authorize after a minute = %q, want a code", loc)
	}
}

// TestLimitsKeyIPv6CustomerPrefix: an ISP delegates a /56 (or a /48) to
// each customer, who may use any /64 of it, so the limits keyed per /64
// gave every customer 256 budgets or more. Guesses at one account, and
// sign-in writes, from the /64s of one /56 share one budget; another
// /56 has its own.
func TestLimitsKeyIPv6CustomerPrefix(t *testing.T) {
	subnet := func(n int) string { return fmt.Sprintf("[2001:db8:0:%x::1]:4000", n) }
	t.Run("guesses", func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		e := newBrowserEnv(t, func(c *Config) { c.Logger = zap.New(core) })
		recordSleeps(e.iss)
		refused := -1
		for n := range 2 * limitFreePair {
			w := e.submit(e.prepareLogin(t, subnet(n)), bUser, "wrong")
			if w.Code == http.StatusTooManyRequests {
				refused = n
				break
			}
		}
		if refused < 0 || refused > limitFreePair+1 {
			t.Errorf("wrong passwords from the /64s of one /56: first refused %d, want 429 by %d", refused, limitFreePair+1)
		}
		if w := e.submit(e.prepareLogin(t, "[2001:db8:0:100::1]:4000"), bUser, bPassword); w.Code != http.StatusSeeOther {
			t.Errorf("right password from another /56 = %d, want 303", w.Code)
		}
		// The security log names the address the limits count, the /56
		// (README, Monitoring: Security log).
		failed := logs.FilterMessage("login failed").All()
		for _, l := range failed {
			if a := l.ContextMap()["remote_addr"]; a != "2001:db8::/56" {
				t.Errorf("login failed: remote_addr = %v, want 2001:db8::/56", a)
			}
		}
		if len(failed) == 0 {
			t.Error("no login failed event logged")
		}
	})
	// A holder of a /48 has its 256 /56s' budgets for guesses (a /48
	// budget would let one customer of an ISP that shares a /48 among
	// customers block the others' sign-ins): one account's failures
	// from all of them still slow its attempts down, doubling past
	// limitFreeAccount, as from any addresses.
	t.Run("guesses from the /56s of one /48", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		slept := recordSleeps(e.iss)
		for n := range 3 * limitFreeAccount {
			if w := e.submit(e.prepareLogin(t, fmt.Sprintf("[2001:db8:0:%x00::1]:4000", n)), bUser, "wrong"); w.Code == http.StatusTooManyRequests {
				t.Fatalf("a first wrong password from /56 number %d of the /48 = 429, want its own budget", n)
			}
		}
		s := slept()
		if len(s) < limitFreeAccount || s[len(s)-1] < limitMaxSlow/4 {
			t.Errorf("account slowdown over %d guesses from as many /56s: %v, want a growing wait", 3*limitFreeAccount, s)
		}
		// README: "up to 3 s each", in seconds, not through
		// limitMaxSlow: the wait grows to 3 s and no further.
		for _, d := range s {
			if d > 3*time.Second {
				t.Errorf("account slowdown over %d guesses from as many /56s: a wait of %v, want at most 3s", 3*limitFreeAccount, d)
			}
		}
		if len(s) > 0 && s[len(s)-1] != 3*time.Second {
			t.Errorf("account slowdown after %d guesses from as many /56s = %v, want 3s (the cap)", 3*limitFreeAccount, s[len(s)-1])
		}
	})
	t.Run("writes", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		for n := range 2 * anonWriteBurst {
			w := e.getFrom(subnet(n), pathAuthorize, authParams(testChallenge))
			if !strings.HasPrefix(w.Header().Get("Location"), pathLogin) {
				break
			}
		}
		if p := e.count(bucketPending); p > anonWriteBurst {
			t.Errorf("pending requests stored from the /64s of one /56 = %d, want at most %d", p, anonWriteBurst)
		}
	})
}

// TestLimitsKeyIPv6WidePrefix: one customer may hold a /48 (a tunnel
// broker gives one away), and with it 256 /56s, each of which had the
// whole per-address budget: one /48 stored 256 times 60 pending sign-ins
// and sessions a minute, and made the issuer fetch 256 times 60 client
// metadata documents a minute. A /48 is charged too, with README's 480
// a minute (eight /56s' worth) for each; another /48 keeps its own budget.
func TestLimitsKeyIPv6WidePrefix(t *testing.T) {
	// The n-th /56 of 2001:db8:0::/48.
	subnet := func(n int) string { return fmt.Sprintf("[2001:db8:0:%x00::1]:4000", n) }
	const per56 = 4 // within a /56's budget; 256 of them pass a /48's
	// README (Limits and known gaps, Upgrading): a /48 stores at most 480
	// things and fetches at most 480 documents a minute. Written out, not
	// read from anonWideShare, so that changing the constant fails here.
	const wide = 480
	if 256*per56 <= wide {
		t.Fatalf("the test sends %d from one /48, not past its budget of %d", 256*per56, wide)
	}
	t.Run("writes", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		for n := range 256 {
			for range per56 {
				e.getFrom(subnet(n), pathAuthorize, authParams(testChallenge))
			}
		}
		// A sign-in stores a browser session and a pending request: both
		// count against the 480.
		p, s := e.count(bucketPending), e.count(bucketSessions)
		if p+s > wide {
			t.Errorf("pending requests and sessions stored from the /56s of one /48 = %d + %d, want at most %d", p, s, wide)
		}
		if w := e.getFrom("[2001:db8:1::1]:4000", pathAuthorize, authParams(testChallenge)); !strings.HasPrefix(w.Header().Get("Location"), pathLogin) {
			t.Errorf("authorize from another /48 = %d %q, want 303 to the login page", w.Code, w.Header().Get("Location"))
		}
	})
	t.Run("fetches", func(t *testing.T) {
		e, host := newCIMDEnv(t, true, nil)
		docs := 0
		authorize := func(from string) {
			p := authParams(testChallenge)
			p.Set("client_id", host.docOn(fmt.Sprintf("w%d", docs), fmt.Sprintf("/w%d.json", docs), ""))
			docs++
			p.Set("redirect_uri", "http://127.0.0.1:3000/callback")
			p.Del("resource")
			p.Del("scope")
			p.Set("prompt", "none")
			e.getFrom(from, pathAuthorize, p)
		}
		for n := range 256 {
			for range per56 {
				authorize(subnet(n))
			}
		}
		var fetched int64
		for k := range docs {
			fetched += host.count(fmt.Sprintf("/w%d.json", k))
		}
		if fetched > wide {
			t.Errorf("documents fetched for the /56s of one /48 = %d, want at most %d", fetched, wide)
		}
		authorize("[2001:db8:1::1]:4000")
		if host.count(fmt.Sprintf("/w%d.json", docs-1)) != 1 {
			t.Errorf("a document named from another /48 was not fetched")
		}
	})
}

// TestLimitsKeyTranslatedIPv4: behind a NAT64 / SIIT translator (an
// IPv6-only server reached from IPv4), every IPv4 client's address is
// 64:ff9b::<its IPv4 address>: keyed by the /56, they all shared one
// address budget, so one of them guessing from its address blocked the
// sign-ins of all the others. Each is keyed by its IPv4 address.
func TestLimitsKeyTranslatedIPv4(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	e := newBrowserEnv(t, func(c *Config) { c.Logger = zap.New(core) })
	recordSleeps(e.iss)
	const guesser, user = "[64:ff9b::c633:6401]:4000", "[64:ff9b::c633:6402]:4000" // 198.51.100.1 and .2
	blocked := false
	for n := range 2 * limitFreeAddr {
		if w := e.submit(e.prepareLogin(t, guesser), fmt.Sprintf("made-up-%d", n), "guess"); w.Code == http.StatusTooManyRequests {
			blocked = true
			break
		}
	}
	if !blocked {
		t.Fatalf("made-up names from one translated address: never refused, want 429 past %d", limitFreeAddr)
	}
	if w := e.submit(e.prepareLogin(t, user), bUser, bPassword); w.Code != http.StatusSeeOther {
		t.Errorf("right password from another translated IPv4 client = %d, want 303", w.Code)
	}
	// The security log names the address the limits count.
	for _, l := range logs.FilterMessage("login failed").All() {
		if a := l.ContextMap()["remote_addr"]; a != "198.51.100.1" {
			t.Errorf("login failed: remote_addr = %v, want 198.51.100.1", a)
		}
	}
	if logs.FilterMessage("login failed").Len() == 0 {
		t.Error("no login failed event logged")
	}
}

// TestLimitsRefuseEarlyData: a request sent as HTTP/3 0-RTT data (Caddy
// accepts it by default) reaches the handler before the TLS handshake
// has completed, so its source address is unverified: anyone holding a
// session ticket of the server can send it with any source address, from
// a network that does not filter spoofed sources, and never receive the
// answer. Charged to that address, such requests spent a victim's address
// budget (made-up names until 429), blocking its sign-ins. The issuer's
// endpoints answer early data 425 Too Early (RFC 8470: the client
// retries once the handshake completes), charging nothing.
func TestLimitsRefuseEarlyData(t *testing.T) {
	refuseEarlySignIns(t, func(a *loginAttempt) { a.early = true })
}

// TestLimitsRefuseEarlyDataFromProxy: behind a load balancer, CDN or
// another Caddy that takes 0-RTT data, the request reaches the issuer over
// a connection whose handshake is long complete, from the proxy, which
// names the unverified address (X-Forwarded-For) and marks the request
// Early-Data: 1 (RFC 8470 section 5.1; Caddy's reverse_proxy does). It was
// served: sign-ins charged to the victim's address, and a replayed
// redemption of a code or rotated refresh token revoked the grant. It is
// answered 425 too, which the proxy passes back.
func TestLimitsRefuseEarlyDataFromProxy(t *testing.T) {
	refuseEarlySignIns(t, func(a *loginAttempt) { a.earlyData = true })
}

// TestIssuerEarlyDataMarkedByRFC8470Only: README (Limits) says that
// RFC 8470's Early-Data, any value, is the only mark of a proxy's early
// data the issuer reads: a header a proxy marks it with its own way
// (Cloudflare's Cf-0rtt-Unique, an X-Early-Data) is not seen, and the
// sign-in is served.
func TestIssuerEarlyDataMarkedByRFC8470Only(t *testing.T) {
	e := newBrowserEnv(t, nil)
	for _, tt := range []struct {
		header, value string
		status        int
	}{
		{"early-data", "0", http.StatusTooEarly},
		{"Cf-0rtt-Unique", "a1b2", http.StatusSeeOther},
		{"X-Early-Data", "1", http.StatusSeeOther},
	} {
		a := e.prepareLogin(t, "198.51.100.8:4000")
		a.header = http.Header{}
		a.header.Set(tt.header, tt.value)
		if w := e.submit(a, bUser, bPassword); w.Code != tt.status {
			t.Errorf("sign-in with %s: %s = %d, want %d", tt.header, tt.value, w.Code, tt.status)
		}
	}
}

// refuseEarlySignIns checks that twice an address's budget of sign-ins,
// each made early by mark, are all answered 425 and charge nothing.
func refuseEarlySignIns(t *testing.T, mark func(*loginAttempt)) {
	t.Helper()
	e := newBrowserEnv(t, nil)
	recordSleeps(e.iss)
	const victim = "198.51.100.7:4000"
	answers := map[int]int{}
	for n := range 2 * limitFreeAddr {
		a := e.prepareLogin(t, victim)
		mark(&a)
		answers[e.submit(a, fmt.Sprintf("made-up-%d", n), "guess").Code]++
	}
	if answers[http.StatusTooEarly] != 2*limitFreeAddr {
		t.Errorf("sign-ins sent as early data answered %v, want all 425", answers)
	}
	if w := e.submit(e.prepareLogin(t, victim), bUser, bPassword); w.Code != http.StatusSeeOther {
		t.Errorf("right password from the address early data named = %d, want 303", w.Code)
	}
}
