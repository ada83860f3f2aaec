package dpop

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

var (
	errReplayed   = errors.New("replayed")
	errReplayFull = errors.New("replay cache full")
	errKeyShare   = errors.New("replay cache share of the key full")
)

// ErrReplayed is what a Ledger's Spend returns for a key already spent.
var ErrReplayed = errors.New("dpop: proof already used")

// Ledger records spent proofs where every instance that shares it sees
// them (a store that several instances share), so that a proof used at
// one is refused at the others; the in-memory Replay stays the first,
// cheap check and the bound. Safe for concurrent use.
type Ledger interface {
	// Spend records key until until, when the proof can no longer be
	// accepted anywhere. It returns ErrReplayed when key is already
	// recorded, and any other error when it cannot tell: the proof is
	// then refused (fail closed).
	Spend(ctx context.Context, key string, until time.Time) error
}

// Replay is a proof replay memory. One may be shared by every Verifier
// of a process (Options.Replay), so that a proof seen by one is refused
// by the others and by those a configuration reload builds.
//
// It remembers (key, jti) pairs for at least period in two
// generations of maps: the older is dropped whole when the newer is a
// period old, so expiry costs no bookkeeping per entry. Bounded: when both
// hold max entries together, new proofs are refused (fail closed) until a
// generation is dropped; and no one holder (Request.Holder: a token's
// client and subject, or a key) may hold more than max/keyShare of them,
// so that the holder of a bound token cannot fill the memory and lock
// every other client out (review s13-dos F3, s13-fresh3): its own new
// proofs are refused instead.
type Replay struct {
	mu        sync.Mutex
	max       int
	period    time.Duration
	started   time.Time // of cur
	cur, prev map[[16]byte]struct{}
	// curKeys and prevKeys count each holder's entries in cur and prev.
	curKeys, prevKeys map[string]int
}

// keyShare: one holder may hold at most max/keyShare entries, so that at
// the default max a holder proving more than about 270 requests a second
// for the up to four minutes an entry is kept (two generations) is
// refused, others not.
const keyShare = 8

// NewReplay returns a replay memory of at most max entries (default
// 1<<19, about 50 MB at most) for Verifiers of the DefaultWindow.
func NewReplay(max int) *Replay {
	if max <= 0 {
		max = 1 << 19
	}
	return newReplay(max, 2*DefaultWindow)
}

func newReplay(max int, period time.Duration) *Replay {
	return &Replay{max: max, period: period, cur: map[[16]byte]struct{}{}, prev: map[[16]byte]struct{}{},
		curKeys: map[string]int{}, prevKeys: map[string]int{}}
}

// replayKey names a jti of a key; 128 bits of SHA-256 are plenty against
// collisions and keep entries small.
func replayKey(jkt, jti string) [16]byte {
	sum := sha256.Sum256([]byte(jkt + "\x00" + jti))
	return [16]byte(sum[:16])
}

// add remembers k, a proof charged to holder.
func (c *Replay) add(k [16]byte, holder string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if age := now.Sub(c.started); age >= c.period {
		c.prev, c.prevKeys = c.cur, c.curKeys
		if age >= 2*c.period {
			clear(c.prev)
			clear(c.prevKeys)
		}
		c.cur = make(map[[16]byte]struct{}, len(c.prev))
		c.curKeys = make(map[string]int, len(c.prevKeys))
		c.started = now
	}
	if _, ok := c.cur[k]; ok {
		return errReplayed
	}
	if _, ok := c.prev[k]; ok {
		return errReplayed
	}
	if len(c.cur)+len(c.prev) >= c.max {
		return errReplayFull
	}
	if c.curKeys[holder]+c.prevKeys[holder] >= max(c.max/keyShare, 1) {
		return errKeyShare
	}
	c.cur[k] = struct{}{}
	c.curKeys[holder]++
	return nil
}
