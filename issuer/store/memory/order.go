package memory

import (
	"iter"

	"github.com/google/btree"
)

// order is a bucket's keys in byte order, a B-tree: adding and removing
// a key, and finding where a prefix begins, cost O(log n), so a List
// costs the keys under its prefix, not the bucket's. Its callers hold the
// Store's lock: Updates and Purge change it, Views only read it (reads
// of a btree.BTreeG may run concurrently).
type order struct {
	keys *btree.BTreeG[string]
}

func newOrder() *order { return &order{keys: btree.NewOrderedG[string](32)} }

// insert adds key unless it is there.
func (o *order) insert(key string) { o.keys.ReplaceOrInsert(key) }

// remove takes key out if it is there.
func (o *order) remove(key string) { o.keys.Delete(key) }

// from yields the keys from start on, in order.
func (o *order) from(start string) iter.Seq[string] {
	return func(yield func(string) bool) {
		o.keys.AscendGreaterOrEqual(start, yield)
	}
}
