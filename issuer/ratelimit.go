package issuer

import (
	"context"
	"math"
	"net/http"
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
// anyone slow a client down by sending it forged assertions.
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
	now   func() time.Time
	sleep func(context.Context, time.Duration) error // injected by tests
	c     counters
	log   *zap.Logger
}

// newLimiter keeps its scores in c, or in this process's memory if c is
// nil.
func newLimiter(now func() time.Time, c counters, log *zap.Logger) *limiter {
	if c == nil {
		c = newMemCounters(now, limitMaxEntries)
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &limiter{now: now, sleep: sleepContext, c: c, log: log}
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
// is past it, blocks key for a doubling delay. A memory full of live
// scores tracks no more rather than forget one an attacker is being
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

func pairKey(account, addr string) string { return "p\x00" + account + "\x00" + addr }
func accountKey(account string) string    { return "a\x00" + account }
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
	if account != "" {
		record(t, pairKey(account, addr), limitFreePair, now)
		record(t, accountKey(account), 0, now)
	}
	if addr != "" {
		record(t, addrKey(addr), limitFreeAddr, now)
	}
}

// reserveAttempt is what a check of a password or secret does before it
// hashes: in one transaction, it either refuses (returns how long,
// counting nothing) or counts the attempt as failed up front. Checking
// first and counting after the hash would let any number of concurrent
// guesses past the limit, each costing a hash. The caller settles the
// reservation with attemptSucceeded or attemptNotRun; a wrong guess
// needs nothing more.
func (l *limiter) reserveAttempt(ctx context.Context, account, addr string) (time.Duration, error) {
	now := l.now()
	var d time.Duration
	err := l.c.run(ctx, true, func(t counterTx) error {
		d = blocked(t, account, addr, now)
		if d == 0 {
			recordAll(t, account, addr, now)
		}
		return nil
	})
	return d, err
}

// attemptSucceeded settles a reservation whose check passed: the pair's
// failures are cleared, and the address and the account get back only
// the failure reserved for this attempt (one valid account must not
// reset guessing at others, and the right password from one place must
// not reset guessing from others).
func (l *limiter) attemptSucceeded(ctx context.Context, account, addr string) {
	l.settleAttempt(ctx, account, addr, true)
}

// attemptNotRun settles a reservation whose check never ran (no hashing
// capacity): no guess was judged, so nothing counts.
func (l *limiter) attemptNotRun(ctx context.Context, account, addr string) {
	l.settleAttempt(ctx, account, addr, false)
}

func (l *limiter) settleAttempt(ctx context.Context, account, addr string, succeeded bool) {
	now := l.now()
	l.write(ctx, func(t counterTx) error {
		if account != "" {
			if succeeded {
				t.del(pairKey(account, addr))
			} else {
				refund(t, pairKey(account, addr), limitFreePair, now)
			}
			refund(t, accountKey(account), 0, now)
		}
		if addr != "" {
			refund(t, addrKey(addr), limitFreeAddr, now)
		}
		return nil
	})
}

// refund takes one failure back from key's score, and lifts its block
// once the score is within the free budget again (older failures' blocks
// end long before their score decays that far: the longest block is a
// third of the half-life).
func refund(t counterTx, key string, free int, now time.Time) {
	e, ok := t.get(key)
	if !ok {
		return
	}
	e.N = max(0, decayed(e, now)-1)
	e.At = now
	if free > 0 && int(e.N) <= free {
		e.Until = time.Time{}
	}
	t.put(key, e, scoreExpiry(e))
}

// What anyone may make the issuer store is bounded in size where it is
// written and in rate by token buckets: registrations (register.go), and
// per address the writes a caller makes before it has authenticated as
// anything (anonWriteBurst: a browser's session and pending authorization
// request before login, a public client's pushed request, a client
// metadata document fetched and cached), and pushed requests per client
// (parClientBurst), so many addresses cannot flood through one public
// client either. A sign-in from a browser with no session costs two
// writes (session, pending request), a pushed one three.
const (
	anonWriteBurst = 60  // per address, refilled at that many a minute
	parClientBurst = 300 // per client, refilled at that many a minute
	maxRateBuckets = 100_000
)

// rateLimiter is a token bucket per key: burst tokens, refilled at burst
// per period, kept in counters (N is the tokens left).
type rateLimiter struct {
	now    func() time.Time
	burst  float64
	period time.Duration
	c      counters
}

// newRateLimiter keeps its buckets in c, or in this process's memory if
// c is nil.
func newRateLimiter(now func() time.Time, burst int, period time.Duration, c counters) *rateLimiter {
	if c == nil {
		c = newMemCounters(now, maxRateBuckets)
	}
	return &rateLimiter{now: now, burst: float64(burst), period: period, c: c}
}

// take spends a token of key's bucket and returns 0, or how long until
// one is available; a refusal writes nothing. A memory full of live
// buckets refuses rather than forget one.
func (l *rateLimiter) take(ctx context.Context, key string) (time.Duration, error) {
	now := l.now()
	perNanosecond := l.burst / float64(l.period)
	var d time.Duration
	err := l.c.run(ctx, true, func(t counterTx) error {
		b, ok := t.get(key)
		if !ok {
			b = counter{N: l.burst, At: now}
		}
		b.N = min(l.burst, b.N+float64(now.Sub(b.At))*perNanosecond)
		b.At = now
		if b.N < 1 {
			d = time.Duration((1 - b.N) / perNanosecond)
			return nil
		}
		b.N--
		// A bucket full again is the same as none.
		if !t.put(key, b, now.Add(time.Duration((l.burst-b.N)/perNanosecond))) {
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
