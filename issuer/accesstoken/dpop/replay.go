package dpop

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

var (
	errReplayed   = errors.New("replayed")
	errReplayFull = errors.New("replay cache full")
	errKeyShare   = errors.New("replay cache share of the holder full")
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

// A Ledger that records nothing at times (one whose store is known only
// once it is opened, and shared with other instances or not) says so
// with Recording: while it reports false, a Verifier checks proofs as
// without a Ledger, refusing those made before its memory began
// (NewReplay), which nothing then remembers.
type recordingLedger interface {
	Recording() bool
}

// recording reports whether l records spent proofs where a restarted
// process, or another instance, would see them.
func recording(l Ledger) bool {
	if l == nil {
		return false
	}
	r, ok := l.(recordingLedger)
	return !ok || r.Recording()
}

// Replay is a proof replay memory. One may be shared by every Verifier
// of a process (Options.Replay), so that a proof seen by one is refused
// by the others and by those a configuration reload builds.
//
// It remembers (key, jti) pairs for at least period in two
// generations of maps: the older is dropped whole when the newer is a
// period old, so expiry costs no bookkeeping per entry. Bounded: when both
// hold max entries together, new proofs are refused (fail closed) until a
// generation is dropped.
//
// Each proof is charged to a holder (Request.Holder: a token's principal,
// a confidential client, or a key), and the room is shared so that
// holders flooding the memory lock out themselves, not the others
// (review s13-dos F3, s13-fresh3): a holder with n entries (in both
// generations) may add one while n < max/keyShare and n·roomShare < free,
// the room left, and once the memory is half full only while
// n·(roomShare+heavy) < free, heavy being the number of holders with
// max/heavyShare entries or more in a generation. Hence:
//   - a holder's first proof is recorded whenever there is room, and
//     holders with entries never take the last roomShare places;
//   - a holder alone gets max/keyShare; until the memory is half full a
//     holder's limit depends on the room left, not on how many others
//     are busy;
//   - heavy holders, however many, flooding together stop at half the
//     memory; one after another, each refilling when the previous one is
//     refused, 8 of them leave about 40% of it free and 32 about 16%
//     (TestReplayFair; without the heavy term, 34% and 1.4%), where a
//     holder with few entries still adds.
//
// An unbounded number of holders would still fill it, each taking at
// least one place; holders cost a grant each (see Request.Holder).
type Replay struct {
	mu        sync.Mutex
	max       int
	period    time.Duration
	since     time.Time // when it began to remember (NewReplay)
	started   time.Time // of cur
	cur, prev map[[16]byte]struct{}
	// curKeys and prevKeys count each holder's entries in cur and prev.
	curKeys, prevKeys map[string]int
	// heavy counts the holders with at least heavyAt entries in cur or in
	// prev, curHeavy those with that many in cur (the heavy ones once cur
	// becomes prev).
	heavy, curHeavy, heavyAt int
}

// keyShare: one holder may hold at most max/keyShare entries, so that at
// the default max a holder proving more than about 270 requests a second
// for the up to four minutes an entry is kept (two generations) is
// refused, others not.
const keyShare = 8

// roomShare: alone on the memory, a holder's n·roomShare < max-n is
// n < max/keyShare, the cap, so the rule takes nothing from a busy holder
// while the memory is empty; a smaller one would let each heavy holder
// take more of the room left.
const roomShare = keyShare - 1

// heavyShare: a holder is heavy with max/heavyShare entries in a
// generation (512 at the default max, about 4 proofs a second), so that
// many ordinary clients do not shrink a busy one's share, and an attacker
// spends that many entries on each holder it adds to heavy.
const heavyShare = 1024

// NewReplay returns a replay memory of at most max entries (default
// 1<<19, about 50 MB at most) for Verifiers of the DefaultWindow, which
// began to remember at since: nothing can tell whether a proof made
// before then was used (before the process started, say, on a store that
// keeps no Ledger), so Verifiers without a Ledger refuse it. Zero: none
// refused for its age.
func NewReplay(max int, since time.Time) *Replay {
	if max <= 0 {
		max = 1 << 19
	}
	r := newReplay(max, 2*DefaultWindow)
	r.since = since
	return r
}

func newReplay(max int, period time.Duration) *Replay {
	return &Replay{max: max, period: period, cur: map[[16]byte]struct{}{}, prev: map[[16]byte]struct{}{},
		curKeys: map[string]int{}, prevKeys: map[string]int{}, heavyAt: cmp.Or(max/heavyShare, 1)}
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
		c.prev, c.prevKeys, c.heavy = c.cur, c.curKeys, c.curHeavy
		if age >= 2*c.period {
			clear(c.prev)
			clear(c.prevKeys)
			c.heavy = 0
		}
		c.cur = make(map[[16]byte]struct{}, len(c.prev))
		c.curKeys = make(map[string]int, len(c.prevKeys))
		c.curHeavy = 0
		c.started = now
	}
	if _, ok := c.cur[k]; ok {
		return errReplayed
	}
	if _, ok := c.prev[k]; ok {
		return errReplayed
	}
	used := len(c.cur) + len(c.prev)
	free := c.max - used
	if free <= 0 {
		return errReplayFull
	}
	n, share := c.curKeys[holder]+c.prevKeys[holder], roomShare
	if 2*used >= c.max {
		share += c.heavy
	}
	if n >= max(c.max/keyShare, 1) || n*share >= free {
		return errKeyShare
	}
	c.cur[k] = struct{}{}
	c.curKeys[holder]++
	if c.curKeys[holder] == c.heavyAt {
		c.curHeavy++
		if c.prevKeys[holder] < c.heavyAt {
			c.heavy++
		}
	}
	return nil
}
