package issuer

import (
	"math"
	"sync"
	"time"
)

// Brute-force slow-down. Each account (client id, username) and each source
// address has a failure score that decays with a half-life, so a quiet
// period forgives old failures: there is no permanent lockout. Past a few
// free failures, each further one blocks attempts for a delay that doubles,
// up to a cap.
const (
	limitFreeAccount = 5  // failures per account before slowing down
	limitFreeAddr    = 20 // per address (it may try many accounts)
	limitBaseDelay   = time.Second
	limitMaxDelay    = 5 * time.Minute
	limitHalfLife    = 15 * time.Minute
	limitMaxEntries  = 100_000 // memory bound; see record
)

type limiter struct {
	now     func() time.Time
	mu      sync.Mutex
	entries map[string]*limitEntry
}

type limitEntry struct {
	score        float64
	at           time.Time // when score was last updated
	blockedUntil time.Time
}

func newLimiter(now func() time.Time) *limiter {
	return &limiter{now: now, entries: make(map[string]*limitEntry)}
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
	if over := int(e.score) - free; over > 0 {
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

func accountKey(account string) string { return "a\x00" + account }
func addrKey(addr string) string       { return "n\x00" + addr }

// attemptDelay is how long attempts for account from addr must wait; zero
// means an attempt is allowed now. Either may be empty.
func (i *Issuer) attemptDelay(account, addr string) time.Duration {
	l := i.limiter
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var d time.Duration
	if account != "" {
		d = l.delay(accountKey(account), now)
	}
	if addr != "" {
		d = max(d, l.delay(addrKey(addr), now))
	}
	return d
}

// allowAttempt reports whether a credential check for account from addr
// may run now (login and client authentication share the limiter).
func (i *Issuer) allowAttempt(account, addr string) bool {
	return i.attemptDelay(account, addr) == 0
}

// recordFailure counts a failed credential check. account "" counts
// against the address only (for unknown accounts, so they cannot fill
// the table).
func (i *Issuer) recordFailure(account, addr string) {
	l := i.limiter
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if account != "" {
		l.record(accountKey(account), limitFreeAccount, now)
	}
	if addr != "" {
		l.record(addrKey(addr), limitFreeAddr, now)
	}
}

// recordSuccess clears the account's failures. The address keeps its
// score: one valid account must not reset guessing at others.
func (i *Issuer) recordSuccess(account, _ string) {
	l := i.limiter
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, accountKey(account))
}
