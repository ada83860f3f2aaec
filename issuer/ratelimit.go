package issuer

import (
	"context"
	"math"
	"net/http"
	"sync"
	"time"
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

type limiter struct {
	now     func() time.Time
	sleep   func(context.Context, time.Duration) error // injected by tests
	mu      sync.Mutex
	entries map[string]*limitEntry
}

type limitEntry struct {
	score        float64
	at           time.Time // when score was last updated
	blockedUntil time.Time
}

func newLimiter(now func() time.Time) *limiter {
	return &limiter{now: now, sleep: sleepContext, entries: make(map[string]*limitEntry)}
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

func (e *limitEntry) decayed(now time.Time) float64 {
	dt := now.Sub(e.at)
	if dt <= 0 {
		return e.score
	}
	return e.score * math.Exp2(-float64(dt)/float64(limitHalfLife))
}

func (l *limiter) delay(key string, now time.Time) time.Duration {
	e := l.entries[key]
	if e == nil || !now.Before(e.blockedUntil) {
		return 0
	}
	return e.blockedUntil.Sub(now)
}

// record adds a failure to key's score and, when free > 0 and the score
// is past it, blocks key for a doubling delay.
func (l *limiter) record(key string, free int, now time.Time) {
	e := l.entries[key]
	if e == nil {
		if len(l.entries) >= limitMaxEntries {
			l.sweep(now)
		}
		if len(l.entries) >= limitMaxEntries {
			// Still full of live entries: do not track more rather than
			// evict one an attacker is being slowed by.
			return
		}
		e = &limitEntry{}
		l.entries[key] = e
	}
	e.score = e.decayed(now) + 1
	e.at = now
	if over := int(e.score) - free; free > 0 && over > 0 {
		d := limitMaxDelay
		if over <= 20 {
			d = min(limitBaseDelay<<(over-1), limitMaxDelay)
		}
		e.blockedUntil = now.Add(d)
	}
}

// sweep drops entries that have decayed to nothing and are not blocking.
func (l *limiter) sweep(now time.Time) {
	for k, e := range l.entries {
		if e.decayed(now) < 1 && !now.Before(e.blockedUntil) {
			delete(l.entries, k)
		}
	}
}

func pairKey(account, addr string) string { return "p\x00" + account + "\x00" + addr }
func accountKey(account string) string    { return "a\x00" + account }
func addrKey(addr string) string          { return "n\x00" + addr }

// attemptDelay is how long attempts for account from addr are refused;
// zero means an attempt may run now. Only the pair's and the address's
// blocks count (see the top of this file). account may be empty.
func (l *limiter) attemptDelay(account, addr string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.blocked(account, addr, now)
}

func (l *limiter) blocked(account, addr string, now time.Time) time.Duration {
	var d time.Duration
	if addr != "" {
		d = l.delay(addrKey(addr), now)
	}
	if account != "" {
		d = max(d, l.delay(pairKey(account, addr), now))
	}
	return d
}

// allowAttempt reports whether a credential check for account from addr
// may run now (login and client authentication share the limiter).
func (l *limiter) allowAttempt(account, addr string) bool {
	return l.attemptDelay(account, addr) == 0
}

// accountSlowness is how long an attempt for account waits because of
// failures from anywhere: doubling past limitFreeAccount, at most
// limitMaxSlow.
func (l *limiter) accountSlowness(account string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[accountKey(account)]
	if account == "" || e == nil {
		return 0
	}
	over := int(e.decayed(now)) - limitFreeAccount
	if over <= 0 {
		return 0
	}
	return min(limitBaseSlow<<min(over-1, 10), limitMaxSlow)
}

// slowAttempt waits out accountSlowness before a credential check. It
// fails only when ctx ends (the caller went away).
func (l *limiter) slowAttempt(ctx context.Context, account string) error {
	if d := l.accountSlowness(account); d > 0 {
		return l.sleep(ctx, d)
	}
	return nil
}

// recordFailure counts a failed credential check against the pair, the
// address and the account. account "" counts against the address only
// (unknown accounts, so they cannot fill the table; private_key_jwt).
func (l *limiter) recordFailure(account, addr string) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recordAll(account, addr, now)
}

func (l *limiter) recordAll(account, addr string, now time.Time) {
	if account != "" {
		l.record(pairKey(account, addr), limitFreePair, now)
		l.record(accountKey(account), 0, now)
	}
	if addr != "" {
		l.record(addrKey(addr), limitFreeAddr, now)
	}
}

// reserveAttempt is what a check of a password or secret does before it
// hashes: under one lock, it either refuses (returns how long, counting
// nothing) or counts the attempt as failed up front. Checking first and
// counting after the hash would let any number of concurrent guesses
// past the limit, each costing a hash. The caller settles the
// reservation with attemptSucceeded or attemptNotRun; a wrong guess
// needs nothing more.
func (l *limiter) reserveAttempt(account, addr string) time.Duration {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.blocked(account, addr, now)
	if d == 0 {
		l.recordAll(account, addr, now)
	}
	return d
}

// attemptSucceeded settles a reservation whose check passed: the pair's
// failures are cleared, and the address and the account get back only
// the failure reserved for this attempt (one valid account must not
// reset guessing at others, and the right password from one place must
// not reset guessing from others).
func (l *limiter) attemptSucceeded(account, addr string) { l.settleAttempt(account, addr, true) }

// attemptNotRun settles a reservation whose check never ran (no hashing
// capacity): no guess was judged, so nothing counts.
func (l *limiter) attemptNotRun(account, addr string) { l.settleAttempt(account, addr, false) }

func (l *limiter) settleAttempt(account, addr string, succeeded bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if account != "" {
		if succeeded {
			delete(l.entries, pairKey(account, addr))
		} else {
			l.refund(pairKey(account, addr), limitFreePair, now)
		}
		l.refund(accountKey(account), 0, now)
	}
	if addr != "" {
		l.refund(addrKey(addr), limitFreeAddr, now)
	}
}

// refund takes one failure back from key's score, and lifts its block
// once the score is within the free budget again (older failures' blocks
// end long before their score decays that far: the longest block is a
// third of the half-life).
func (l *limiter) refund(key string, free int, now time.Time) {
	e := l.entries[key]
	if e == nil {
		return
	}
	e.score = max(0, e.decayed(now)-1)
	e.at = now
	if free > 0 && int(e.score) <= free {
		e.blockedUntil = time.Time{}
	}
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
// per period.
type rateLimiter struct {
	burst   float64
	period  time.Duration
	mu      sync.Mutex
	buckets map[string]rateBucket
}

type rateBucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(burst int, period time.Duration) *rateLimiter {
	return &rateLimiter{burst: float64(burst), period: period, buckets: make(map[string]rateBucket)}
}

// take spends a token of key's bucket and returns 0, or how long until
// one is available.
func (l *rateLimiter) take(key string, now time.Time) time.Duration {
	perNanosecond := l.burst / float64(l.period)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxRateBuckets {
			// A bucket idle for a period is full again: the same as none.
			for k, v := range l.buckets {
				if now.Sub(v.at) >= l.period {
					delete(l.buckets, k)
				}
			}
		}
		if len(l.buckets) >= maxRateBuckets {
			return l.period // full of live buckets: refuse rather than forget one
		}
		b = rateBucket{tokens: l.burst, at: now}
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.at))*perNanosecond)
	b.at = now
	if b.tokens < 1 {
		l.buckets[key] = b
		return time.Duration((1 - b.tokens) / perNanosecond)
	}
	b.tokens--
	l.buckets[key] = b
	return 0
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
