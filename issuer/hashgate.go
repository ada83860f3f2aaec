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
const (
	hashQueueWait  = 2 * time.Second
	hashRetryAfter = time.Second
)

var errHashBusy = errors.New("too many password checks at once")

// hashGate is a counting semaphore. Waiters are served in arrival order
// (a channel's blocked senders are).
type hashGate struct {
	slots chan struct{}
	wait  time.Duration
	runs  atomic.Int64 // hashes run, read by tests
}

// newHashGate admits one hash per CPU the process may use: more would
// only share the same cores.
func newHashGate() *hashGate {
	return &hashGate{slots: make(chan struct{}, max(1, runtime.GOMAXPROCS(0))), wait: hashQueueWait}
}

// run runs hash in a slot. It returns errHashBusy when no slot came
// within the wait, or ctx's error when the caller went away first; hash
// has not run then.
func (g *hashGate) run(ctx context.Context, hash func()) error {
	select {
	case g.slots <- struct{}{}:
	default:
		t := time.NewTimer(g.wait)
		defer t.Stop()
		select {
		case g.slots <- struct{}{}:
		case <-t.C:
			return errHashBusy
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() { <-g.slots }()
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
