package issuer

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketGrantIndex: who a live, unrevoked grant belongs to -> nothing,
// until the grant expires; written and deleted in the transactions that
// write and revoke the grant:
//
//	"u\x00" user "\x00" client "\x00" grant id   a user's grant
//	"o\x00" user "\x00" client "\x00" grant id   a user's offline grant (admit)
//	"c\x00" client "\x00" grant id               every grant, by its client
//	"a\x00" agent "\x00" grant id                an agent's own grant, one bound to it
//	                                             by requested_actor, one exchanged to it
//
// so that the apps page, the per-user limits and revoking what a user,
// client or agent holds read their grants, not every grant. An entry is
// a hint: its grant is read and checked (an earlier version revokes
// grants without deleting their entries). Grants an earlier version
// wrote, or rewrote, lack entries until indexGrants, at each start, adds
// them; until its first pass completes (grantIndexComplete), readers
// scan.
const bucketGrantIndex = "grant_index"

// grantIndexComplete is the key of the marker that every grant written
// before it was indexed.
const grantIndexComplete = "complete"

// grantIndexEntry is empty but in a user's offline entries, which say what
// admit needs to find the oldest grants of a connection without reading
// them: the grants that refreshes rewrite, whose reads would conflict
// with those (store.Update may run again).
type grantIndexEntry struct {
	Resource  string    `json:"r,omitempty"`
	Actor     string    `json:"a,omitempty"`
	CreatedAt time.Time `json:"t,omitzero"`
}

type grantIndexRecords struct{ t table[grantIndexEntry] }

func grantIndexIn(tx store.Tx) grantIndexRecords {
	return grantIndexRecords{table[grantIndexEntry]{tx, bucketGrantIndex}}
}

// Prefixes of the index's keys; a grant id follows.
func userGrantsPrefix(user string) string { return allUserGrantsPrefix + user + "\x00" }

// allUserGrantsPrefix is the prefix of every user's entries.
const allUserGrantsPrefix = "u\x00"

func userClientGrantsPrefix(user, client string) string {
	return userGrantsPrefix(user) + client + "\x00"
}
func clientGrantsPrefix(client string) string { return "c\x00" + client + "\x00" }

// A user's offline grants (with refresh tokens: they live
// refresh_token_ttl), which the limits count (admit): apart from the
// rest, so that counting reads no more than the limits allow however many
// short grants the user holds.
func offlineGrantsPrefix(user string) string { return "o\x00" + user + "\x00" }
func offlineClientGrantsPrefix(user, client string) string {
	return offlineGrantsPrefix(user) + client + "\x00"
}
func agentGrantsPrefix(agent string) string { return "a\x00" + agent + "\x00" }

// indexKeys are g's entries.
func (g *grant) indexKeys() []string {
	keys := []string{clientGrantsPrefix(g.ClientID) + g.ID}
	if g.PrincipalType == "" {
		keys = append(keys, userClientGrantsPrefix(g.Subject, g.ClientID)+g.ID)
		if g.Refresh != "" {
			keys = append(keys, offlineClientGrantsPrefix(g.Subject, g.ClientID)+g.ID)
		}
	}
	var agents []string
	if g.PrincipalType == principalAgent {
		agents = append(agents, g.Subject)
	}
	if g.Actor != "" {
		agents = append(agents, g.Actor)
	}
	agents = append(agents, g.Delegates...)
	slices.Sort(agents)
	for _, a := range slices.Compact(agents) {
		keys = append(keys, agentGrantsPrefix(a)+g.ID)
	}
	return keys
}

// add writes g's entries.
func (r grantIndexRecords) add(g *grant) error {
	for _, k := range g.indexKeys() {
		e := &grantIndexEntry{}
		if strings.HasPrefix(k, "o\x00") {
			e = &grantIndexEntry{Resource: g.Resource, Actor: g.Actor, CreatedAt: g.CreatedAt}
		}
		if err := r.t.put(k, e, g.ExpiresAt); err != nil {
			return err
		}
	}
	return nil
}

// indexedID is the grant id an index key ends with, after its last NUL.
func indexedID(k string) string { return k[strings.LastIndexByte(k, 0)+1:] }

// entries calls fn with the id and entry of every entry under prefix.
func (r grantIndexRecords) entries(prefix string, fn func(id string, e *grantIndexEntry) error) error {
	return r.t.list(prefix, func(k string, e *grantIndexEntry) error {
		return fn(indexedID(k), e)
	})
}

// remove deletes g's entries.
func (r grantIndexRecords) remove(g *grant) error {
	for _, k := range g.indexKeys() {
		if err := r.t.delete(k); err != nil {
			return err
		}
	}
	return nil
}

// complete reports whether every grant is indexed (or was, by an
// earlier pass: see bucketGrantIndex).
func (r grantIndexRecords) complete() (bool, error) { return r.t.has(grantIndexComplete) }

// ids calls fn with the id of every entry under prefix, in key order,
// until fn returns errStopListing (not an error).
func (r grantIndexRecords) ids(prefix string, fn func(id string) error) error {
	err := r.t.tx.List(r.t.bucket, prefix, func(k string, _ []byte) error {
		return fn(indexedID(k))
	})
	if errors.Is(err, errStopListing) {
		return nil
	}
	return err
}

// selectedKeys returns the keys of the entries under sel's prefix that
// sel does not skip, in key order.
func (r grantIndexRecords) selectedKeys(sel grantSelection) ([]string, error) {
	var keys []string
	err := r.t.tx.List(r.t.bucket, sel.prefix, func(k string, _ []byte) error {
		if !sel.skips(k) {
			keys = append(keys, k)
		}
		return nil
	})
	return keys, err
}

// after returns the keys of up to limit entries under prefix that sort
// after from ("" for the first), in key order, and whether there are
// more.
func (r grantIndexRecords) after(prefix, from string, limit int) ([]string, bool, error) {
	var keys []string
	more := false
	err := r.t.tx.List(r.t.bucket, prefix, func(k string, _ []byte) error {
		switch {
		case k <= from:
			return nil
		case len(keys) == limit:
			more = true
			return errStopListing
		}
		keys = append(keys, k)
		return nil
	})
	if errors.Is(err, errStopListing) {
		err = nil
	}
	return keys, more, err
}

// errStopListing ends a listing early.
var errStopListing = errors.New("stop listing")

// keys lists every entry's key, for indexGrants.
func (r grantIndexRecords) keys() (map[string]bool, error) {
	seen := map[string]bool{}
	return seen, r.t.tx.List(r.t.bucket, "", func(k string, _ []byte) error {
		seen[k] = true
		return nil
	})
}

// lacks reports whether an entry of g is not among keys: g was written,
// or rewritten (an agent added to Delegates), by an earlier version.
func (g *grant) lacks(keys map[string]bool) bool {
	return slices.ContainsFunc(g.indexKeys(), func(k string) bool { return !keys[k] })
}

// markComplete records that every grant is indexed.
func (r grantIndexRecords) markComplete() error {
	return r.t.put(grantIndexComplete, &grantIndexEntry{}, time.Time{})
}
