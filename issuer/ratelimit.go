package issuer

import (
	"context"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Brute-force slow-down. Failed credential checks raise failure scores
// that decay with a half-life, so a quiet period forgives old failures:
// there is no permanent lockout. Three scores, with different powers:
//
//   - an account from one address (the pair): past a few free failures,
//     each further one blocks that pair for a delay that doubles, up to a
//     cap. This is what stops guessing one password from one place.
//   - an address, over all accounts: the same, with a larger budget. This
//     stops one place from guessing many accounts.
//   - an account from anywhere: only slows its attempts by a short,
//     bounded wait (limitMaxSlow), and never refuses them. Refusing would
//     let anyone lock a user or client out for good by failing on purpose
//     from an address of their own; the pair and address blocks already
//     bound what each attacking address can try.
//
// A user who shares an address with an attacker (one NAT) shares its
// blocks; a "known device" cookie could exempt browsers that logged in
// before, at the price of more state. Not done: the blocks decay.
//
// private_key_jwt failures count against the address only: a signature
// cannot be guessed, and counting them against the client would let
// anyone slow a client down by sending it forged assertions. For the
// same reason a wrong secret the issuer generated (256 random bits: a
// registered client's, one the admin API made) counts against the pair
// and the address, not the client (Client.guessableSecret).
const (
	limitFreePair    = 5  // failures of one account from one address before blocking
	limitFreeAddr    = 20 // per address (it may try many accounts)
	limitFreeAccount = 10 // per account from anywhere before its attempts are slowed
	limitBaseDelay   = time.Second
	limitMaxDelay    = 5 * time.Minute
	limitBaseSlow    = 250 * time.Millisecond
	limitMaxSlow     = 3 * time.Second // the most an account's attempts wait
	limitHalfLife    = 15 * time.Minute
	limitMaxEntries  = 100_000 // memory bound; see record
)

// limiter is the brute-force slow-down. Its scores are counters (see
// counters.go): shared through the store when other instances use it, so
// that adding instances does not multiply an attacker's budget.
type limiter struct {
	// known remembers, for knownPairTTL, the pairs (account, address)
	// whose password or secret checked right (hashGate); nil remembers
	// none. A full memory takes no new pair: only a right credential
	// checked in the gate (bcrypt) adds one, so a flood cannot push out
	// those already kept.
	known *memCounters
	now   func() time.Time
	sleep func(context.Context, time.Duration) error // injected by tests
	pause func(context.Context, time.Duration) error // waiting for room in flight
	c     counters
	log   *zap.Logger
}

// newLimiter keeps its scores in c, or in this process's memory if c is
// nil.
func newLimiter(now func() time.Time, c counters, log *zap.Logger) *limiter {
	if c == nil {
		c = newMemCounters(now, limitMaxEntries, true)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &limiter{now: now, sleep: sleepContext, pause: sleepContext, c: c, log: log}
}

func sleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// decayed is a failure score at now.
func decayed(e counter, now time.Time) float64 {
	dt := now.Sub(e.At)
	if dt <= 0 {
		return e.N
	}
	return e.N * math.Exp2(-float64(dt)/float64(limitHalfLife))
}

// scoreExpiry is when a score no longer matters: it has decayed below
// 1/16 (four half-lives past reaching 1) and blocks nothing.
func scoreExpiry(e counter) time.Time {
	fade := e.At.Add(time.Duration((math.Log2(max(e.N, 1)) + 4) * float64(limitHalfLife)))
	if e.Until.After(fade) {
		return e.Until
	}
	return fade
}

func delay(t counterTx, key string, now time.Time) time.Duration {
	e, ok := t.get(key)
	if !ok || !now.Before(e.Until) {
		return 0
	}
	return e.Until.Sub(now)
}

// record adds a failure to key's score and, when free > 0 and the score
// is past it, blocks key for a doubling delay. A full memory makes room
// by dropping a weak score (memCounters), not one an attacker is being
// slowed by.
func record(t counterTx, key string, free int, now time.Time) {
	e, _ := t.get(key)
	e.N = decayed(e, now) + 1
	e.At = now
	if over := int(e.N) - free; free > 0 && over > 0 {
		d := limitMaxDelay
		if over <= 20 {
			d = min(limitBaseDelay<<(over-1), limitMaxDelay)
		}
		e.Until = now.Add(d)
	}
	t.put(key, e, scoreExpiry(e))
}

// The account is hashed in the keys: they are stored on a shared database
// (storeCounters), and a name that matches no account may be a password
// typed in the wrong field.
func pairKey(account, addr string) string { return "p\x00" + tokenKey(account) + "\x00" + addr }
func accountKey(account string) string    { return "a\x00" + tokenKey(account) }
func addrKey(addr string) string          { return "n\x00" + addr }

// attemptDelay is how long attempts for account from addr are refused;
// zero means an attempt may run now. Only the pair's and the address's
// blocks count (see the top of this file). account may be empty.
func (l *limiter) attemptDelay(ctx context.Context, account, addr string) (time.Duration, error) {
	now := l.now()
	var d time.Duration
	err := l.c.run(ctx, false, func(t counterTx) error {
		d = blocked(t, account, addr, now)
		return nil
	})
	return d, err
}

func blocked(t counterTx, account, addr string, now time.Time) time.Duration {
	var d time.Duration
	if addr != "" {
		d = delay(t, addrKey(addr), now)
	}
	if account != "" {
		d = max(d, delay(t, pairKey(account, addr), now))
	}
	return d
}

// accountSlowness is how long an attempt for account waits because of
// failures from anywhere: doubling past limitFreeAccount, at most
// limitMaxSlow.
func (l *limiter) accountSlowness(ctx context.Context, account string) (time.Duration, error) {
	if account == "" {
		return 0, nil
	}
	now := l.now()
	var d time.Duration
	err := l.c.run(ctx, false, func(t counterTx) error {
		d = 0
		e, ok := t.get(accountKey(account))
		if !ok {
			return nil
		}
		if over := int(decayed(e, now)) - limitFreeAccount; over > 0 {
			d = min(limitBaseSlow<<min(over-1, 10), limitMaxSlow)
		}
		return nil
	})
	return d, err
}

// slowAttempt waits out accountSlowness before a credential check. It
// fails when ctx ends (the caller went away) or the scores cannot be
// read.
func (l *limiter) slowAttempt(ctx context.Context, account string) error {
	d, err := l.accountSlowness(ctx, account)
	if err != nil || d == 0 {
		return err
	}
	return l.sleep(ctx, d)
}

// recordFailure counts a failed credential check against the pair, the
// address and the account. account "" counts against the address only
// (unknown accounts, so they cannot fill the table; private_key_jwt).
// It is counted even if the caller has gone away meanwhile.
func (l *limiter) recordFailure(ctx context.Context, account, addr string) {
	now := l.now()
	l.write(ctx, func(t counterTx) error {
		recordAll(t, account, addr, now)
		return nil
	})
}

// write runs fn to change the scores after the fact, when nobody waits
// for the answer any more: a failure to is logged (the next check, which
// reads the same store, fails closed).
func (l *limiter) write(ctx context.Context, fn func(counterTx) error) {
	if err := l.c.run(context.WithoutCancel(ctx), true, fn); err != nil {
		l.log.Error("brute-force limiter: recording an attempt", zap.Error(err))
	}
}

func recordAll(t counterTx, account, addr string, now time.Time) {
	recordHere(t, account, addr, now)
	if account != "" {
		record(t, accountKey(account), 0, now)
	}
}

// recordHere counts a failure against the pair and the address only.
func recordHere(t counterTx, account, addr string, now time.Time) {
	if account != "" {
		record(t, pairKey(account, addr), limitFreePair, now)
	}
	if addr != "" {
		record(t, addrKey(addr), limitFreeAddr, now)
	}
}

// Attempts in flight. A check of a password or secret is counted before
// it hashes, so that guesses sent all at once cannot each cost a hash
// before the first of them is judged; but it is counted as in flight,
// apart from the failures, so that right answers sent at once (a busy
// service client, one office behind a NAT) are not refused as failures
// they are not. A pair or an address admits as many checks in flight as
// it has failures left before a block (at least one when not blocked):
// if all of them fail, the last blocks, which is exactly the budget it
// has one attempt at a time. A further attempt waits until one in flight
// settles (a success clears the pair and frees its slot; failures end in
// a block, and the wait in 429), at most hashQueueWait, then is answered
// busy like a check with no hashing capacity. Checks in flight are
// counted per generation of inFlightTTL (the current one and the one
// before), and a check settles in the generation it was counted in, so
// one whose settlement was never written (a crash, the store
// unreachable) holds its slot until the generation after its own ends,
// at most twice inFlightTTL, however busy its key stays: a single count
// whose expiry each later check pushed back kept it for as long as the
// key saw a check a minute, and with limitFreePair of them left by
// instances killed in a check, one wrong secret shut the client out.
const (
	inFlightTTL       = time.Minute
	inFlightFirstPoll = 5 * time.Millisecond
	inFlightMaxPoll   = 50 * time.Millisecond
)

func inFlightKey(key string) string { return "i\x00" + key }

func isInFlightKey(key string) bool { return strings.HasPrefix(key, "i\x00") }

// budget is a key whose failures block, with its free failures.
type budget struct {
	key  string
	free int
}

func budgets(account, addr string) []budget {
	var bs []budget
	if account != "" {
		bs = append(bs, budget{pairKey(account, addr), limitFreePair})
	}
	if addr != "" {
		bs = append(bs, budget{addrKey(addr), limitFreeAddr})
	}
	return bs
}

// inFlightGen is the generation of a check counted in flight at now,
// unless a key is already counting a later one (another instance's
// clock a little ahead): then that one, so that the check is counted
// in one generation under every key.
func inFlightGen(t counterTx, bs []budget, now time.Time) time.Time {
	gen := now.Truncate(inFlightTTL)
	for _, b := range bs {
		if e, ok := t.get(inFlightKey(b.key)); ok && e.At.After(gen) {
			gen = e.At
		}
	}
	return gen
}

// inFlightAt is key's count in flight as of generation gen (or the later
// one it counts already): N in At's generation, Prev in the one before.
func inFlightAt(t counterTx, key string, gen time.Time) counter {
	e, ok := t.get(inFlightKey(key))
	switch {
	case !ok || e.At.Before(gen.Add(-inFlightTTL)):
		return counter{At: gen}
	case e.At.Before(gen):
		return counter{Prev: e.N, At: gen}
	}
	return e
}

// putInFlight keeps key's count in flight c until the generation after
// its own ends; none is no counter.
func putInFlight(t counterTx, key string, c counter) bool {
	if c.N+c.Prev <= 0 {
		t.del(inFlightKey(key))
		return true
	}
	return t.put(inFlightKey(key), c, c.At.Add(2*inFlightTTL))
}

// inFlight is the number of checks in flight under key at now.
func inFlight(t counterTx, key string, now time.Time) float64 {
	c := inFlightAt(t, key, now.Truncate(inFlightTTL))
	return c.N + c.Prev
}

// settleInFlight takes a check counted in generation gen out of key's
// count; one whose generation has passed was forgotten already.
func settleInFlight(t counterTx, key string, gen, now time.Time) {
	c := inFlightAt(t, key, now.Truncate(inFlightTTL))
	switch {
	case c.At.Equal(gen):
		c.N = max(c.N-1, 0)
	case c.At.Add(-inFlightTTL).Equal(gen):
		c.Prev = max(c.Prev-1, 0)
	default:
		return
	}
	putInFlight(t, key, c)
}

// hasRoom reports whether b admits one more check in flight: whether,
// if all those in flight failed, none but the last would block.
func hasRoom(t counterTx, b budget, gen, now time.Time) bool {
	e, _ := t.get(b.key)
	c := inFlightAt(t, b.key, gen)
	n := c.N + c.Prev
	return n == 0 || int(decayed(e, now)+n) <= b.free
}

// reserveAttempt is what a check of a password or secret does before it
// hashes: it returns how long the attempt is refused, or puts it in
// flight (see above), waiting for room if need be; errHashBusy when none
// came in time. Nothing is written for a refusal. The caller settles the
// attempt, given the generation returned, with attemptSucceeded,
// attemptFailed or attemptNotRun.
func (l *limiter) reserveAttempt(ctx context.Context, account, addr string) (time.Duration, time.Time, error) {
	poll, waited := inFlightFirstPoll, time.Duration(0)
	for {
		d, gen, room, err := l.tryReserve(ctx, account, addr)
		if err != nil || d > 0 || room {
			return d, gen, err
		}
		if waited >= hashQueueWait {
			return 0, time.Time{}, errHashBusy
		}
		if err := l.pause(ctx, poll); err != nil {
			return 0, time.Time{}, err
		}
		waited += poll
		poll = min(2*poll, inFlightMaxPoll)
	}
}

// tryReserve puts an attempt in flight, in generation gen, if no block
// refuses it (d) and every budget has room (room); a memory full of live
// counters has none.
func (l *limiter) tryReserve(ctx context.Context, account, addr string) (d time.Duration, gen time.Time, room bool, err error) {
	now := l.now()
	bs := budgets(account, addr)
	err = l.c.run(ctx, true, func(t counterTx) error {
		d, room = blocked(t, account, addr, now), false
		if d > 0 {
			return nil
		}
		gen = inFlightGen(t, bs, now)
		for _, b := range bs {
			if !hasRoom(t, b, gen, now) {
				return nil
			}
		}
		for k, b := range bs {
			c := inFlightAt(t, b.key, gen)
			c.N++
			if !putInFlight(t, b.key, c) {
				for _, done := range bs[:k] {
					settleInFlight(t, done.key, gen, now)
				}
				return nil
			}
		}
		room = true
		return nil
	})
	return d, gen, room, err
}

// attemptSucceeded settles an attempt (reserved in generation gen) whose
// check passed: the pair's failures are cleared; the address's and the
// account's are kept (one valid account must not reset guessing at
// others, and the right password from one place must not reset guessing
// from others).
func (l *limiter) attemptSucceeded(ctx context.Context, account, addr string, gen time.Time) {
	l.settleAttempt(ctx, account, addr, gen, func(t counterTx, now time.Time) {
		if account != "" {
			t.del(pairKey(account, addr))
		}
	})
}

// knownPairTTL is how long a pair stays known after its last right
// check: a person signing in monthly, a service hourly.
const knownPairTTL = 30 * 24 * time.Hour

// isKnown reports whether account's credential, the stored hash
// credential, checked right from addr within knownPairTTL (in this
// process).
func (l *limiter) isKnown(account, credential, addr string) bool {
	if l.known == nil || account == "" || credential == "" {
		return false
	}
	found := false
	_ = l.known.run(context.Background(), false, func(t counterTx) error {
		_, found = t.get(knownPairKey(account, credential, addr))
		return nil
	})
	return found
}

// remember records that account's credential, the stored hash
// credential, checked right from addr.
func (l *limiter) remember(account, credential, addr string) {
	if l.known == nil || account == "" || credential == "" {
		return
	}
	_ = l.known.run(context.Background(), true, func(t counterTx) error {
		t.put(knownPairKey(account, credential, addr), counter{At: l.now()}, l.now().Add(knownPairTTL))
		return nil
	})
}

// knownPairKey names the credential too: a pair known under a password
// or secret is not known under the next one (a password changed after a
// theft, on every instance), whose first right check from the address
// makes it known again.
func knownPairKey(account, credential, addr string) string {
	return pairKey(account+"\x00"+fingerprint(credential)[:credentialTagLen], addr)
}

// attemptFailed settles an attempt whose check failed: a failure counts
// against the pair, the address and the account.
func (l *limiter) attemptFailed(ctx context.Context, account, addr string, gen time.Time) {
	l.settleAttempt(ctx, account, addr, gen, func(t counterTx, now time.Time) {
		recordAll(t, account, addr, now)
	})
}

// attemptFailedHere settles an attempt whose check of a credential that
// cannot be guessed failed (a generated secret): the failure counts
// against the pair and the address, which bound each sender, not the
// account, whose failures from anywhere would only slow the client down,
// for anyone who knows its id.
func (l *limiter) attemptFailedHere(ctx context.Context, account, addr string, gen time.Time) {
	l.settleAttempt(ctx, account, addr, gen, func(t counterTx, now time.Time) {
		recordHere(t, account, addr, now)
	})
}

// attemptNotRun settles an attempt whose check never ran (no hashing
// capacity): no guess was judged, so nothing counts.
func (l *limiter) attemptNotRun(ctx context.Context, account, addr string, gen time.Time) {
	l.settleAttempt(ctx, account, addr, gen, func(counterTx, time.Time) {})
}

// settleAttempt takes the attempt out of flight and applies its outcome,
// in one transaction.
func (l *limiter) settleAttempt(ctx context.Context, account, addr string, gen time.Time, outcome func(counterTx, time.Time)) {
	now := l.now()
	l.write(ctx, func(t counterTx) error {
		for _, b := range budgets(account, addr) {
			settleInFlight(t, b.key, gen, now)
		}
		outcome(t, now)
		return nil
	})
}

// What anyone may make the issuer store is bounded in size where it is
// written and in rate by token buckets: registrations (register.go), and
// per address the writes a caller makes before it has authenticated as
// anything (anonWriteBurst: a browser's session and pending authorization
// request before login, a public client's pushed request, a client
// metadata document cached in the store), and pushed requests per client
// (parClientBurst), so many addresses cannot flood through one public
// client either. A sign-in from a browser with no session costs two
// writes (session, pending request), a pushed one three. A signed-in
// user's authorization requests store something too (a pending request
// of up to maxAuthorizeParams for pendingTTL, or a code): userWriteBurst
// per user, shared by the instances on a store they share, as the
// brute-force limits are. A client's own tokens (client_credentials, an
// agent's too) are each a grant kept until the token expires:
// clientTokenBurst per client, spent by its token exchanges too (each
// recorded until its subject token expires).
const (
	anonWriteBurst   = 60  // per address, refilled at that many a minute
	parClientBurst   = 300 // per client, refilled at that many a minute
	userWriteBurst   = 300 // per signed-in user, refilled at that many a minute
	clientTokenBurst = 600 // per client, refilled at that many a minute
	maxRateBuckets   = 100_000
	// anonWideShare: an IPv6 client's /48 may spend this many /56s' worth
	// of anonWriteBurst and cimdFetchBurst (see wider).
	anonWideShare = 8
)

// rateLimiter is a token bucket per key: burst tokens, refilled at burst
// per period, kept in counters (N is the tokens left).
type rateLimiter struct {
	now    func() time.Time
	burst  float64
	period time.Duration
	c      counters
	// wide, if set, is charged too for a key naming an IPv6 /56 (as
	// clientAddr makes them), under its /48 (wider).
	wide *rateLimiter
}

// wideByPrefix makes l charge an IPv6 client's /48 too, with share /56s'
// worth of l's burst, in c: one customer may hold a /48 (a tunnel broker
// gives one away), and with it 256 /56s, each with a budget of its own.
func (l *rateLimiter) wideByPrefix(share int, c counters) *rateLimiter {
	l.wide = newRateLimiter(l.now, share*int(l.burst), l.period, c)
	return l
}

// wider is the /48 of key when key is an IPv6 prefix longer than that.
func wider(key string) (string, bool) {
	p, err := netip.ParsePrefix(key)
	if err != nil || !p.Addr().Is6() || p.Bits() <= 48 {
		return "", false
	}
	w, _ := p.Addr().Prefix(48)
	return w.String(), true
}

// newRateLimiter keeps its buckets in c, or in this process's memory if
// c is nil.
func newRateLimiter(now func() time.Time, burst int, period time.Duration, c counters) *rateLimiter {
	if c == nil {
		c = newMemCounters(now, maxRateBuckets, false)
	}
	return &rateLimiter{now: now, burst: float64(burst), period: period, c: c}
}

// take spends a token of key's bucket (and of its /48's, for a limiter
// wideByPrefix made) and returns 0, or how long until one is available.
// A refusal of key's bucket writes nothing; one of the /48's leaves
// key's token spent.
func (l *rateLimiter) take(ctx context.Context, key string) (time.Duration, error) {
	d, err := l.takeOne(ctx, key)
	if err != nil || d > 0 || l.wide == nil {
		return d, err
	}
	if w, ok := wider(key); ok {
		return l.wide.takeOne(ctx, w)
	}
	return 0, nil
}

// takeOne is take for key's bucket alone; a refusal writes nothing. A
// memory full of live buckets refuses rather than forget one.
func (l *rateLimiter) takeOne(ctx context.Context, key string) (time.Duration, error) {
	now := l.now()
	perNanosecond := l.burst / float64(l.period)
	var d time.Duration
	err := l.c.run(ctx, true, func(t counterTx) error {
		b, ok := t.get(key)
		if !ok {
			b = counter{N: l.burst, At: now}
		}
		// At is the latest clock reading that took from the bucket.
		// A clock behind it (another instance's on the store, or this
		// one's stepped back) refills nothing until it passes At: read
		// as time running backwards, the difference would be tokens
		// spent, driving the bucket below zero and refusing every take
		// for as long as the clocks differ.
		if now.After(b.At) {
			b.N = min(l.burst, b.N+float64(now.Sub(b.At))*perNanosecond)
			b.At = now
		}
		if b.N < 1 {
			// Sub saturates; the sum must too, or a bucket taken
			// from by a clock centuries ahead would wrap to no wait.
			d = time.Duration((1 - b.N) / perNanosecond)
			d += min(b.At.Sub(now), math.MaxInt64-d)
			return nil
		}
		b.N--
		// A bucket full again is the same as none.
		if !t.put(key, b, b.At.Add(time.Duration((l.burst-b.N)/perNanosecond))) {
			d = l.period
			return nil
		}
		d = 0
		return nil
	})
	return d, err
}

// addrContextKey carries clientAddr of the request in its context, for
// limits applied below the handlers (fetching client metadata documents).
type addrContextKey struct{}

func withClientAddr(r *http.Request) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), addrContextKey{}, clientAddr(r)))
}

// contextAddr is the address withClientAddr stored; "" (one bucket shared
// by all such callers) when the call did not come from a request.
func contextAddr(ctx context.Context) string {
	a, _ := ctx.Value(addrContextKey{}).(string)
	return a
}

// spend takes one from key's budget, or returns the error to answer: the
// store's, or temporarily_unavailable with desc, 429 and the wait.
func (l *rateLimiter) spend(ctx context.Context, key, desc string) error {
	switch d, err := l.take(ctx, key); {
	case err != nil:
		return err
	case d > 0:
		return rateLimited(ErrTemporarilyUnavailable, d, desc)
	}
	return nil
}

// rateLimited answers a request over a rate limit: 429 with Retry-After
// d. base is slow_down at the back-channel endpoints (as RFC 8628 uses it
// at the token endpoint; RFC 9126 section 2.3 names 429 for PAR), and
// temporarily_unavailable at the authorization endpoint, the code RFC 6749
// section 4.1.2.1 has for it.
func rateLimited(base *Error, d time.Duration, desc string) *Error {
	e := base.WithDescription(desc)
	e.Status = http.StatusTooManyRequests
	e.RetryAfter = d
	return e
}
