package memory

import (
	"iter"
	"math/bits"
	"math/rand/v2"
)

// maxLevel bounds a node's levels: 2^32 keys in a bucket before a level
// would help.
const maxLevel = 32

// order is a bucket's keys in byte order, a skip list: adding and
// removing a key, and finding where a prefix begins, cost O(log n)
// expected, so a List costs the keys under its prefix, not the bucket's.
// Its callers hold the Store's lock: Updates and Purge change it, Views
// only read it.
type order struct {
	head  orderNode // sentinel, with maxLevel links
	level int       // levels in use, at least 1
}

type orderNode struct {
	key  string
	next []*orderNode // one link per level of the node
}

func newOrder() *order {
	return &order{head: orderNode{next: make([]*orderNode, maxLevel)}, level: 1}
}

// seek returns the first node whose key is at least key (nil when none),
// and in before, if given, the last node before it at each level in use.
func (o *order) seek(key string, before *[maxLevel]*orderNode) *orderNode {
	x := &o.head
	for i := o.level - 1; i >= 0; i-- {
		for x.next[i] != nil && x.next[i].key < key {
			x = x.next[i]
		}
		if before != nil {
			before[i] = x
		}
	}
	return x.next[0]
}

// insert adds key unless it is there.
func (o *order) insert(key string) {
	var before [maxLevel]*orderNode
	if n := o.seek(key, &before); n != nil && n.key == key {
		return
	}
	level := min(1+bits.TrailingZeros64(rand.Uint64()), maxLevel) // p = 1/2
	for i := o.level; i < level; i++ {
		before[i] = &o.head
	}
	o.level = max(o.level, level)
	n := &orderNode{key: key, next: make([]*orderNode, level)}
	for i := range level {
		n.next[i], before[i].next[i] = before[i].next[i], n
	}
}

// remove takes key out if it is there.
func (o *order) remove(key string) {
	var before [maxLevel]*orderNode
	n := o.seek(key, &before)
	if n == nil || n.key != key {
		return
	}
	for i := range n.next {
		before[i].next[i] = n.next[i]
	}
	for o.level > 1 && o.head.next[o.level-1] == nil {
		o.level--
	}
}

// from yields the keys from start on, in order.
func (o *order) from(start string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for n := o.seek(start, nil); n != nil; n = n.next[0] {
			if !yield(n.key) {
				return
			}
		}
	}
}
