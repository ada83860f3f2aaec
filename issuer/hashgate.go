package issuer

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"time"
)

// Checking a password or a bcrypt client secret is the issuer's one
// deliberately expensive operation, and anyone may ask for it: the login
// form; client_secret_basic and client_secret_post at /token, /par,
// /revoke and /introspect, agents' secrets included; the dummy hash that
// unknown users are checked against. The brute-force limiter
// (ratelimit.go) bounds the attempts per account and per address; the
// gate bounds how many hashes run at once, so a flood from many addresses
// queues here instead of taking every core, and an attempt that gets no
// slot within hashQueueWait is answered "busy" without hashing (503 with
// Retry-After: the server, not the caller, is out of capacity; at the
// OAuth endpoints with RFC 6749's temporarily_unavailable). The admin
// API's hashing of new passwords is not gated: only the operator reaches
// it.
//
// Such a flood of made-up names keeps every slot taken, so every other
// check would queue behind it and be answered busy: each user's sign-in
// and each service's client_secret. A check of an account from an
// address where its password or secret checked right lately (a known
// pair, limiter.isKnown) may also take a slot of its own, which no other
// check takes: only those who hold the credential get it.
const (
	hashQueueWait  = 2 * time.Second
	hashRetryAfter = time.Second
)

var errHashBusy = errors.New("too many password checks at once")

// hashGate is a counting semaphore. Waiters are served in arrival order
// (a channel's blocked senders are).
type hashGate struct {
	slots chan struct{}
	known chan struct{} // the one more slot of known pairs' checks
	wait  time.Duration
	runs  atomic.Int64 // hashes run, read by tests
}

// newHashGate admits one hash per CPU the process may use: more would
// only share the same cores.
func newHashGate() *hashGate {
	return &hashGate{slots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0))), known: make(chan struct{}, 1), wait: hashQueueWait}
}

// run runs hash in a slot, or, for a known pair's check, in the known
// slot if that comes first. It returns errHashBusy when no slot came
// within the wait, or ctx's error when the caller went away first; hash
// has not run then.
func (g *hashGate) run(ctx context.Context, known bool, hash func()) error {
	var own chan struct{} // nil: a send never proceeds
	if known {
		own = g.known
	}
	slot := g.slots
	select {
	case g.slots <- struct{}{}:
	case own <- struct{}{}:
		slot = own
	default:
		t := time.NewTimer(g.wait)
		defer t.Stop()
		select {
		case g.slots <- struct{}{}:
		case own <- struct{}{}:
			slot = own
		case <-t.C:
			return errHashBusy
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() { <-slot }()
	g.runs.Add(1)
	hash()
	return nil
}

// hashBusyError is the OAuth answer to a check that could not run.
func hashBusyError(err error) *Error {
	e := ErrTemporarilyUnavailable.WithDescription("the server is busy; retry later").Wrap(err)
	e.RetryAfter = hashRetryAfter
	return e
}
