package issuer

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// loginAttempt is one prepared login POST from remote: a session and
// its form, fetched beforehand so that attempts can run at once.
type loginAttempt struct {
	remote  string
	form    form
	cookies []*http.Cookie
	// early: sent as HTTP/3 0-RTT data, before the TLS handshake
	// completed: remote is then unverified.
	early bool
	// earlyData: passed on by a proxy in front that took it as early
	// data, marked Early-Data: 1 (RFC 8470 section 5.1).
	earlyData bool
	// header: more request headers.
	header http.Header
}

func (e *testEnv) prepareLogin(t *testing.T, remote string) loginAttempt {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, e.url(pathLogin, nil), nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	e.iss.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("login page from %s = %d, want 200", remote, w.Code)
	}
	return loginAttempt{remote: remote, form: findForm(t, w.Body.String(), "login"), cookies: w.Result().Cookies()}
}

// submit posts the prepared form with user and password.
func (e *testEnv) submit(a loginAttempt, user, password string) *httptest.ResponseRecorder {
	v := url.Values{}
	for k, vs := range a.form.hidden {
		v[k] = vs
	}
	v.Set("username", user)
	v.Set("password", password)
	r := httptest.NewRequest(http.MethodPost, e.srv.URL+a.form.action, strings.NewReader(v.Encode()))
	r.RemoteAddr = a.remote
	if a.early {
		r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13}
	}
	if a.earlyData {
		r.Header.Set("Early-Data", "1")
	}
	for k, vs := range a.header {
		r.Header[k] = vs
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", e.srv.URL)
	for _, ck := range a.cookies {
		r.AddCookie(ck)
	}
	w := httptest.NewRecorder()
	e.iss.ServeHTTP(w, r)
	return w
}

// recordSleeps makes the limiter's waits return at once and records them.
func recordSleeps(i *Issuer) func() []time.Duration {
	var mu sync.Mutex
	var slept []time.Duration
	i.limiter.sleep = func(_ context.Context, d time.Duration) error {
		mu.Lock()
		defer mu.Unlock()
		slept = append(slept, d)
		return nil
	}
	return func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return slept
	}
}

// TestConcurrentWrongPasswordsHashBounded: wrong passwords sent all at
// once for one account from one address run no more hashes than the
// brute-force limit lets one by one; the rest get 429 with Retry-After.
// The owner, elsewhere, then signs in at once.
func TestConcurrentWrongPasswordsHashBounded(t *testing.T) {
	e := newBrowserEnv(t, nil)
	slept := recordSleeps(e.iss)
	const attacker, owner, n = "203.0.113.9:4000", "198.51.100.7:4000", 50
	attempts := make([]loginAttempt, n)
	for k := range attempts {
		attempts[k] = e.prepareLogin(t, attacker)
	}
	before := e.iss.hashes.runs.Load()
	codes := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for k := range attempts {
		wg.Go(func() { codes[k] = e.submit(attempts[k], bUser, "wrong") })
	}
	wg.Wait()
	hashed := e.iss.hashes.runs.Load() - before
	if max := int64(limitFreePair + 1); hashed < 1 || hashed > max {
		t.Errorf("hashes for %d concurrent wrong passwords = %d, want 1..%d (the pair's free failures, then the one that blocks)", n, hashed, max)
	}
	refused := 0
	for _, w := range codes {
		switch w.Code {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests:
			refused++
			if w.Header().Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		default:
			t.Errorf("concurrent wrong password = %d, want 401 or 429", w.Code)
		}
	}
	if int64(refused) != n-hashed {
		t.Errorf("refused %d of %d with %d hashed, want every attempt that did not hash refused", refused, n, hashed)
	}
	if w := e.submit(e.prepareLogin(t, owner), bUser, bPassword); w.Code != http.StatusSeeOther {
		t.Fatalf("right password from another address after the flood = %d, want 303", w.Code)
	}
	if s := slept(); len(s) != 0 {
		t.Errorf("the owner's login waited %v, want no wait", s)
	}
}

// tokenFrom posts a client_credentials request from remote, with
// client_secret_post for tPost and client_secret_basic for the others (the
// methods they registered).
func (e *testEnv) tokenFrom(remote, clientID, secret string) *httptest.ResponseRecorder {
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {tResource}}
	if clientID == tPost {
		form.Set("client_id", clientID)
		form.Set("client_secret", secret)
	}
	r := httptest.NewRequest(http.MethodPost, e.iss.endpoint(pathToken), strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if clientID != tPost {
		r.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	e.iss.ServeHTTP(w, r)
	return w
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("error body %q: %v", w.Body.String(), err)
	}
	return body.Error
}

// TestConcurrentWrongSecretsHashBounded is the same for a bcrypt client
// secret at the token endpoint.
func TestConcurrentWrongSecretsHashBounded(t *testing.T) {
	e := newTokEnv(t)
	slept := recordSleeps(e.iss)
	const attacker, owner, n = "203.0.113.9:4000", "198.51.100.7:4000", 50
	before := e.iss.hashes.runs.Load()
	answers := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for k := range answers {
		wg.Go(func() { answers[k] = e.tokenFrom(attacker, tConf, "wrong") })
	}
	wg.Wait()
	hashed := e.iss.hashes.runs.Load() - before
	if max := int64(limitFreePair + 1); hashed < 1 || hashed > max {
		t.Errorf("hashes for %d concurrent wrong secrets = %d, want 1..%d", n, hashed, max)
	}
	for _, w := range answers {
		switch w.Code {
		case http.StatusUnauthorized:
		case http.StatusTooManyRequests:
			if w.Header().Get("Retry-After") == "" || errorCode(t, w) != "invalid_client" {
				t.Errorf("429 = %v %s, want invalid_client with Retry-After", w.Header(), w.Body)
			}
		default:
			t.Errorf("concurrent wrong secret = %d %s, want 401 or 429", w.Code, w.Body)
		}
	}
	if w := e.tokenFrom(owner, tConf, tSecret); w.Code != http.StatusOK {
		t.Fatalf("right secret from another address after the flood = %d %s, want 200", w.Code, w.Body)
	}
	if s := slept(); len(s) != 0 {
		t.Errorf("the owner's request waited %v, want no wait", s)
	}
}

// fillHashGate takes every slot of the gate and makes waiting short; the
// returned func gives the slots back.
func fillHashGate(i *Issuer) func() {
	i.hashes.wait = 10 * time.Millisecond
	for range cap(i.hashes.slots) {
		i.hashes.slots <- struct{}{}
	}
	return func() {
		for range cap(i.hashes.slots) {
			<-i.hashes.slots
		}
	}
}

// TestHashGateBusy: with no hashing capacity, logins and secret checks
// are answered 503 with Retry-After at once, hash nothing, and count
// nothing against the account or address: once capacity is back, the
// right password works from the same address.
func TestHashGateBusy(t *testing.T) {
	t.Run("login", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		const from = "203.0.113.9:4000"
		release := fillHashGate(e.iss)
		for range 2 * limitFreeAddr {
			w := e.submit(e.prepareLogin(t, from), bUser, "wrong")
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" ||
				!strings.Contains(w.Body.String(), "The server is busy.") {
				t.Fatalf("login while busy = %d %v, want 503 with Retry-After and a message", w.Code, w.Header())
			}
		}
		release()
		if n := e.iss.hashes.runs.Load(); n != 0 {
			t.Errorf("hashes while busy = %d, want 0", n)
		}
		if w := e.submit(e.prepareLogin(t, from), bUser, bPassword); w.Code != http.StatusSeeOther {
			t.Fatalf("right password after busy answers = %d, want 303 (busy answers must not count as failures)", w.Code)
		}
	})
	t.Run("token", func(t *testing.T) {
		e := newTokEnv(t)
		const from = "203.0.113.9:4000"
		release := fillHashGate(e.iss)
		for range 2 * limitFreeAddr {
			w := e.tokenFrom(from, tConf, "wrong")
			if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" ||
				errorCode(t, w) != "temporarily_unavailable" {
				t.Fatalf("token while busy = %d %v %s, want 503 temporarily_unavailable with Retry-After", w.Code, w.Header(), w.Body)
			}
		}
		// sha256 secrets are cheap and need no slot.
		if w := e.tokenFrom(from, tPost, tSecret2); w.Code != http.StatusOK {
			t.Errorf("sha256 secret while busy = %d %s, want 200", w.Code, w.Body)
		}
		release()
		if w := e.tokenFrom(from, tConf, tSecret); w.Code != http.StatusOK {
			t.Fatalf("right secret after busy answers = %d %s, want 200", w.Code, w.Body)
		}
	})
}

// TestHashGateSparesKnownPairs: while every slot of the gate is taken (a
// flood of made-up names from many addresses keeps it so), a password or
// secret checked right before from the same address (the pair) is still
// checked, in a slot of its own, rather than answered 503 like every
// check it would queue behind; the same account from an address it
// never signed in from waits as before.
func TestHashGateSparesKnownPairs(t *testing.T) {
	const owner, elsewhere = "198.51.100.7:4000", "203.0.113.9:4000"
	t.Run("login", func(t *testing.T) {
		e := newBrowserEnv(t, nil)
		defer signInAgainGateFull(t, e, owner, bUser, bPassword)()
		if w := e.submit(e.prepareLogin(t, elsewhere), bUser, bPassword); w.Code != http.StatusServiceUnavailable {
			t.Errorf("sign-in from another address, gate full = %d, want 503", w.Code)
		}
		if w := e.submit(e.prepareLogin(t, owner), "someone-else", "guess"); w.Code != http.StatusServiceUnavailable {
			t.Errorf("another name from the owner's address, gate full = %d, want 503", w.Code)
		}
		// One slot for every known pair: another's check in it (someone
		// with an account of their own joining the flood) leaves none.
		e.iss.hashes.known <- struct{}{}
		defer func() { <-e.iss.hashes.known }()
		if w := e.submit(e.prepareLogin(t, owner), bUser, bPassword); w.Code != http.StatusServiceUnavailable {
			t.Errorf("sign-in from the address it signed in from, gate and known slot full = %d, want 503", w.Code)
		}
	})
	t.Run("token", func(t *testing.T) {
		e := newTokEnv(t)
		if w := e.tokenFrom(owner, tConf, tSecret); w.Code != http.StatusOK {
			t.Fatalf("first token = %d %s, want 200", w.Code, w.Body)
		}
		release := fillHashGate(e.iss)
		defer release()
		if w := e.tokenFrom(owner, tConf, tSecret); w.Code != http.StatusOK {
			t.Errorf("token from the address it authenticated from, gate full = %d %s, want 200", w.Code, w.Body)
		}
		if w := e.tokenFrom(elsewhere, tConf, tSecret); w.Code != http.StatusServiceUnavailable || errorCode(t, w) != "temporarily_unavailable" {
			t.Errorf("token from another address, gate full = %d %s, want 503 temporarily_unavailable", w.Code, w.Body)
		}
	})
}

// TestKnownPairsOnlyFromHashedChecks: the memory of known pairs is
// bounded, and a full one takes no new pair, so only checks that take a
// gate slot (bcrypt passwords and secrets) put a pair in it. A client
// anyone registers has a generated secret checked without the gate: its
// right secret sent from ever new addresses filled the memory, and a
// user's first sign-in after that was never remembered, so it waited
// with a flood again.
func TestKnownPairsOnlyFromHashedChecks(t *testing.T) {
	const owner = "198.51.100.7:4000"
	e := newBrowserEnv(t, nil)
	e.iss.limiter.known.max = 8
	w := registerFrom(e.iss, "192.0.2.1:1", `{"client_name":"own","redirect_uris":["https://own.example/cb"],"token_endpoint_auth_method":"client_secret_basic"}`)
	var reg struct {
		ID     string `json:"client_id"`
		Secret string `json:"client_secret"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &reg); err != nil || w.Code != http.StatusCreated || reg.Secret == "" {
		t.Fatalf("registration = %d %s, want 201 with a secret", w.Code, w.Body)
	}
	for n := range e.iss.limiter.known.max {
		if w := e.tokenFrom(fmt.Sprintf("[2001:db8:%x::1]:4000", n), reg.ID, reg.Secret); w.Code == http.StatusUnauthorized {
			t.Fatalf("the registered client's own secret = %d %s", w.Code, w.Body)
		}
	}
	signInAgainGateFull(t, e, owner, bUser, bPassword)()
}

// signInAgainGateFull signs user in from owner, fills the hash gate and
// checks that user signs in from owner again; it returns what empties
// the gate.
func signInAgainGateFull(t *testing.T, e *testEnv, owner, user, password string) (release func()) {
	t.Helper()
	if w := e.submit(e.prepareLogin(t, owner), user, password); w.Code != http.StatusSeeOther {
		t.Fatalf("first sign-in = %d, want 303", w.Code)
	}
	release = fillHashGate(e.iss)
	if w := e.submit(e.prepareLogin(t, owner), user, password); w.Code != http.StatusSeeOther {
		t.Errorf("sign-in from the address it signed in from, gate full = %d, want 303", w.Code)
	}
	return release
}

// TestKnownPairForgottenWithCredential: a known pair's slot is for whoever
// holds the account's credential, so it must not outlive the credential.
// It did: after a password change the address that had signed in with
// the old password (a thief's, say) still had the account's known slot
// during a flood. The pair now names the credential it checked right
// against, on every instance, however the credential changed.
func TestKnownPairForgottenWithCredential(t *testing.T) {
	const owner = "198.51.100.7:4000"
	const user, newPassword = "carol", "a new password entirely"
	e := newBrowserEnv(t, nil)
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	if err := e.iss.PutUser(t.Context(), User{Username: user, PasswordHash: hash(bPassword), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	if w := e.submit(e.prepareLogin(t, owner), user, bPassword); w.Code != http.StatusSeeOther {
		t.Fatalf("first sign-in = %d, want 303", w.Code)
	}
	if err := e.iss.SetPassword(t.Context(), user, hash(newPassword)); err != nil {
		t.Fatal(err)
	}
	release := fillHashGate(e.iss)
	if w := e.submit(e.prepareLogin(t, owner), user, newPassword); w.Code != http.StatusServiceUnavailable {
		t.Errorf("sign-in from the address of the old password's sign-in, gate full = %d, want 503 (the pair forgotten)", w.Code)
	}
	release()
	// Signed in with the new password, the pair is known again.
	defer signInAgainGateFull(t, e, owner, user, newPassword)()
}

// TestKnownPairKeptAcrossReloadThirtyDays: README (Limits, brute-force
// limits) says a pair whose password checked right keeps its slot of
// its own for 30 days after its last right check, in the process's
// memory, kept across configuration reloads (Config.Limits), at most
// 100,000 pairs: a reload with no memory of its own forgets the pair, a
// reload on the process's keeps it, a right check renews it, and 30
// days after the last one the address waits with the rest again.
func TestKnownPairKeptAcrossReloadThirtyDays(t *testing.T) {
	const owner = "198.51.100.7:4000"
	e := newBrowserEnv(t, func(c *Config) { c.Limits = newLimitMemory(c.Now) })
	if got := e.iss.limiter.known.max; got != 100_000 {
		t.Errorf("known pairs kept at most = %d, README says 100,000", got)
	}
	cfg := e.iss.cfg
	gateFull := func(want int, what string) {
		t.Helper()
		release := fillHashGate(e.iss)
		defer release()
		if w := e.submit(e.prepareLogin(t, owner), bUser, bPassword); w.Code != want {
			t.Errorf("%s, gate full = %d, want %d", what, w.Code, want)
		}
	}
	if w := e.submit(e.prepareLogin(t, owner), bUser, bPassword); w.Code != http.StatusSeeOther {
		t.Fatalf("first sign-in = %d, want 303", w.Code)
	}
	own := cfg
	own.Limits = nil
	e.serve(own)
	gateFull(http.StatusServiceUnavailable, "after a reload with memory of its own (the test's control)")
	e.serve(cfg)
	gateFull(http.StatusSeeOther, "after a reload on the process's memory")
	e.clock.Advance(30*24*time.Hour - time.Minute)
	gateFull(http.StatusSeeOther, "a minute less than 30 days after the last right check")
	e.clock.Advance(30*24*time.Hour + time.Minute)
	gateFull(http.StatusServiceUnavailable, "a minute more than 30 days after the last right check")
}

// TestHashGateOnePerCPUWaitsTwoSeconds: README (Limits, brute-force
// limits) says at most one bcrypt check per CPU runs at once and the
// rest wait up to 2 s for a slot, then get 503 with Retry-After: a
// sign-in whose slot frees within the 2 s is checked, not refused, and
// one whose slot does not is refused only once the 2 s have passed.
func TestHashGateOnePerCPUWaitsTwoSeconds(t *testing.T) {
	const from = "203.0.113.9:4000"
	e := newBrowserEnv(t, nil)
	g := e.iss.hashes
	if got, want := cap(g.slots), runtime.GOMAXPROCS(0); got != want {
		t.Errorf("bcrypt checks at once = %d, want one per CPU (%d)", got, want)
	}
	if g.wait != 2*time.Second {
		t.Errorf("wait for a slot = %v, want 2s", g.wait)
	}
	fill := func() {
		for range cap(g.slots) {
			g.slots <- struct{}{}
		}
	}
	fill()
	time.AfterFunc(time.Second, func() { <-g.slots })
	if w := e.submit(e.prepareLogin(t, from), bUser, bPassword); w.Code != http.StatusSeeOther {
		t.Errorf("sign-in whose slot frees after 1 s = %d, want 303 (waited for it)", w.Code)
	}
	for range cap(g.slots) - 1 {
		<-g.slots
	}
	fill()
	defer func() {
		for range cap(g.slots) {
			<-g.slots
		}
	}()
	start := time.Now()
	w := e.submit(e.prepareLogin(t, from), "someone-else", "guess")
	if waited := time.Since(start); w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || waited < 2*time.Second {
		t.Errorf("sign-in with no slot freed = %d after %v, Retry-After %q; want 503 with Retry-After after 2 s", w.Code, waited, w.Header().Get("Retry-After"))
	}
}
