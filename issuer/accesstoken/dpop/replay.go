package dpop

import (
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

var (
	errReplayed   = errors.New("replayed")
	errReplayFull = errors.New("replay cache full")
)

// replayCache remembers (key, jti) pairs for at least period in two
// generations of maps: the older is dropped whole when the newer is a
// period old, so expiry costs no bookkeeping per entry. Bounded: when both
// hold max entries together, new proofs are refused (fail closed) until a
// generation is dropped.
type replayCache struct {
	mu        sync.Mutex
	max       int
	period    time.Duration
	started   time.Time // of cur
	cur, prev map[[16]byte]struct{}
}

func newReplayCache(max int, period time.Duration) *replayCache {
	return &replayCache{max: max, period: period, cur: map[[16]byte]struct{}{}, prev: map[[16]byte]struct{}{}}
}

// replayKey names a jti of a key; 128 bits of SHA-256 are plenty against
// collisions and keep entries small.
func replayKey(jkt, jti string) [16]byte {
	sum := sha256.Sum256([]byte(jkt + "\x00" + jti))
	return [16]byte(sum[:16])
}

func (c *replayCache) add(k [16]byte, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if age := now.Sub(c.started); age >= c.period {
		c.prev = c.cur
		if age >= 2*c.period {
			clear(c.prev)
		}
		c.cur = make(map[[16]byte]struct{}, len(c.prev))
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
	c.cur[k] = struct{}{}
	return nil
}
