package issuer

import (
	"fmt"
	"strconv"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketRevocationLog: the change record of bucketRevoked, read by every
// instance's revocation set (revocations.go) to catch up incrementally.
//
// Each marker written gets the next sequence number: logKeyLast holds the
// last one given, and the entry under its fixed-width decimal key
// (logKey) names the marker's key and until, and expires with it. The
// store serialises updates, so sequence numbers are given in commit
// order: a reader that saw last = n in a snapshot has seen every entry
// up to n, and one that read up to n needs only the entries after n,
// with no clock involved (instances' clocks may disagree). An entry gone
// before a reader got to it expired, and so did every token it refused.
const bucketRevocationLog = "revocation_log"

// logKeyLast is the key of the last sequence number given; entry keys are
// digits, so no listing of theirs includes it.
const logKeyLast = "last"

// logSlot is how many consecutive entries share a key prefix, so a reader
// lists the entries after n by prefix (the store lists by prefix only),
// one prefix per logSlot entries.
const (
	logKeyDigits  = 20 // a uint64
	logSlotDigits = 3
	logSlot       = 1000 // 10^logSlotDigits
)

type logEntry struct {
	Key   string    `json:"key"` // the marker's key in bucketRevoked
	Until time.Time `json:"until"`
}

type revocationLog struct {
	tx   store.Tx
	last table[uint64]
	log  table[logEntry]
}

func revocationLogIn(tx store.Tx) revocationLog {
	return revocationLog{tx, table[uint64]{tx, bucketRevocationLog}, table[logEntry]{tx, bucketRevocationLog}}
}

func logKey(seq uint64) string { return fmt.Sprintf("%0*d", logKeyDigits, seq) }

// lastSeq is the last sequence number given, 0 for none.
func (l revocationLog) lastSeq() (uint64, error) {
	n, err := l.last.get(logKeyLast)
	if err != nil {
		return 0, ignoreNotFound(err)
	}
	return *n, nil
}

// at is the live entry under seq, nil for none.
func (l revocationLog) at(seq uint64) (*logEntry, error) {
	e, err := l.log.get(logKey(seq))
	if err != nil {
		return nil, ignoreNotFound(err)
	}
	return e, nil
}

// append logs a marker written under key until until.
func (l revocationLog) append(key string, until time.Time) error {
	n, err := l.lastSeq()
	if err != nil {
		return err
	}
	n++
	if err := l.log.put(logKey(n), &logEntry{Key: key, Until: until}, until); err != nil {
		return err
	}
	return l.last.put(logKeyLast, &n, time.Time{})
}

// since calls fn for every live entry after sequence number after, up to
// and including upTo, in order.
func (l revocationLog) since(after, upTo uint64, fn func(*logEntry)) error {
	for slot := (after + 1) / logSlot; slot <= upTo/logSlot; slot++ {
		prefix := logKey(slot * logSlot)[:logKeyDigits-logSlotDigits]
		err := l.log.list(prefix, func(k string, e *logEntry) error {
			seq, err := strconv.ParseUint(k, 10, 64)
			if err != nil {
				return fmt.Errorf("revocation log key %q: %w", k, err)
			}
			if seq > after && seq <= upTo {
				fn(e)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
