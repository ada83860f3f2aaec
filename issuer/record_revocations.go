package issuer

import (
	"context"
	"reflect"
	"slices"
	"sync"
	"time"
	"weak"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketRevoked: an access token's jti, or "grant:"+grant id, -> its
// marker, until every token it refuses has expired.
const bucketRevoked = "revoked"

// grantKeyPrefix marks a grant's key in bucketRevoked and the revocation
// log.
const grantKeyPrefix = "grant:"

// marker is a revocation's record. Until is its store expiry, kept in the
// value too because a listing does not return expiries (loadRevocations);
// markers written before Until was recorded read as zero.
type marker struct {
	Until time.Time `json:"until,omitzero"`
}

// revocationRecords are the markers that refuse access tokens before they
// expire. Every marker written is also appended to the revocation log
// (record_revocation_log.go), in the same transaction, which is how other
// instances' revocation sets learn of it.
type revocationRecords struct{ t table[marker] }

func revocationsIn(tx store.Tx) revocationRecords {
	return revocationRecords{table[marker]{tx, bucketRevoked}}
}

// revokeToken refuses the access token jti until exp.
func (r revocationRecords) revokeToken(jti string, exp time.Time) error {
	_, err := r.put(jti, exp)
	return err
}

// revokeGrantTokens refuses every access token of the grant until until,
// and at least until no token issued so far is alive (tokenHorizon), and
// returns when the marker ends.
func (r revocationRecords) revokeGrantTokens(grantID string, until time.Time) (time.Time, error) {
	h, err := epochsIn(r.t.tx).horizon()
	if err != nil {
		return time.Time{}, err
	}
	if h.After(until) {
		until = h
	}
	return r.put(grantKeyPrefix+grantID, until)
}

// put refuses key's tokens until until, and accesstoken.Leeway longer:
// until a gateway no longer takes them as unexpired.
func (r revocationRecords) put(key string, until time.Time) (time.Time, error) {
	until = until.Add(accesstoken.Leeway)
	if err := r.t.put(key, &marker{Until: until}, until); err != nil {
		return time.Time{}, err
	}
	return until, revocationLogIn(r.t.tx).append(key, until)
}

// revoked reports whether the token jti or its grant was revoked.
func (r revocationRecords) revoked(jti, grantID string) (bool, error) {
	if jti != "" {
		if ok, err := r.t.has(jti); ok || err != nil {
			return ok, err
		}
	}
	if grantID == "" {
		return false, nil
	}
	return r.t.has(grantKeyPrefix + grantID)
}

// each calls fn for every live marker with its key ("grant:"+id or a
// jti).
func (r revocationRecords) each(fn func(key string, m *marker) error) error {
	return r.t.list("", fn)
}

// topicRevocations is the store notification (store.Notifier) that the
// revocation log grew.
const topicRevocations = "revocations"

// revocationStore is the store as the issuer uses it: when an Update that
// wrote markers commits, they join the revocation set before Update
// returns, so whichever path revoked (the records layer has several), the
// revocation is effective on this instance's very next request. Other
// instances learn of it from the log, and on a store shared between
// processes (store.Notifier) the transaction also notifies them on commit,
// so that they read the log at once (WatchRevocations).
type revocationStore struct {
	store.Store
	set *revocationSet
}

func (s revocationStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	var added []logEntry
	err := s.Store.Update(ctx, func(tx store.Tx) error {
		added = added[:0] // fn may run again; only the last run counts
		if err := fn(markerTx{tx, &added}); err != nil {
			return err
		}
		if n, ok := tx.(store.Notifier); ok && len(added) > 0 {
			return n.Notify(topicRevocations)
		}
		return nil
	})
	if err == nil && len(added) > 0 {
		s.set.add(added)
		for _, set := range sameProcess.sets(s.Store, s.set) {
			set.add(added)
		}
	}
	return err
}

// sameProcess holds the revocation set of every issuer of this process
// on each store, so that a revocation one commits joins the others' sets
// before its Update returns, as it joins its own. A configuration reload
// runs the old configuration's issuer beside the new one's on one store
// until the old one's servers have finished the requests they accepted:
// a revocation either answers for is refused by both at once, rather
// than at the other's next catch-up (Config.RevocationResync: bbolt and
// the memory store notify no one). The sets are held weakly: an
// issuer's set leaves with the issuer.
var sameProcess revocationPeers

type revocationPeers struct {
	mu   sync.Mutex
	byST map[store.Store][]weak.Pointer[revocationSet]
}

// join adds set to those of the issuers on st. A store whose value cannot
// be a map key (no pointer) joins no one: its issuers catch up as
// before.
func (p *revocationPeers) join(st store.Store, set *revocationSet) {
	if reflect.ValueOf(st).Kind() != reflect.Pointer {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byST == nil {
		p.byST = make(map[store.Store][]weak.Pointer[revocationSet])
	}
	// Stores whose issuers are all gone (a reload moved to another)
	// are let go: the map would keep them.
	for other := range p.byST {
		p.live(other)
	}
	p.byST[st] = append(p.live(st), weak.Make(set))
}

// sets returns the live sets on st other than own.
func (p *revocationPeers) sets(st store.Store, own *revocationSet) []*revocationSet {
	if reflect.ValueOf(st).Kind() != reflect.Pointer {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*revocationSet
	for _, w := range p.live(st) {
		if set := w.Value(); set != nil && set != own {
			out = append(out, set)
		}
	}
	return out
}

// live drops st's sets whose issuers are gone and returns the others,
// under p.mu.
func (p *revocationPeers) live(st store.Store) []weak.Pointer[revocationSet] {
	ws := slices.DeleteFunc(p.byST[st], func(w weak.Pointer[revocationSet]) bool { return w.Value() == nil })
	if len(ws) == 0 {
		delete(p.byST, st)
		return nil
	}
	p.byST[st] = ws
	return ws
}

// markerTx notes the markers written through it.
type markerTx struct {
	store.Tx
	added *[]logEntry
}

// MayRunAlone passes store.MayRunAlone to the store's transaction.
func (t markerTx) MayRunAlone() { store.MayRunAlone(t.Tx) }

func (t markerTx) Put(bucket, key string, value []byte, expires time.Time) error {
	if err := t.Tx.Put(bucket, key, value, expires); err != nil {
		return err
	}
	if bucket == bucketRevoked {
		*t.added = append(*t.added, logEntry{Key: key, Until: expires})
	}
	return nil
}
