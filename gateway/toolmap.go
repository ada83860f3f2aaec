package gateway

import (
	"hash/maphash"
	"iter"
	"maps"
)

// toolShards is how many maps a toolMap splits its tools into.
const toolShards = 64

// toolSeed places tool names in shards.
var toolSeed = maphash.MakeSeed()

// toolMap is a map from tool names in a pinView, split into toolShards
// maps so that a copy with one tool changed (pinSet.update) clones the
// one shard it writes, not every tool. Cloning the whole maps made each
// tool a listing learned cost the number of tools known: a server
// listing thousands of tools, new or changed (one rotating its
// definitions, which pinning is there to catch), made each listing
// quadratic, seconds of CPU per tools/list. A copy shares its shards
// until it writes them: set and del of a copy made by update clone a
// shard once per update (owned), and never change the view's.
type toolMap[V any] struct {
	shards [toolShards]map[string]V
	owned  uint64 // the shards this copy cloned (toolShards is 64)
	n      int
}

func toolShard(name string) int { return int(maphash.String(toolSeed, name) % toolShards) }

// toolMapOf makes a toolMap of m's entries.
func toolMapOf[V any](m map[string]V) toolMap[V] {
	var t toolMap[V]
	for k, v := range m {
		t.set(k, v)
	}
	t.owned = 0
	return t
}

func (t *toolMap[V]) get(name string) (V, bool) {
	v, ok := t.shards[toolShard(name)][name]
	return v, ok
}

// at is get without the presence.
func (t *toolMap[V]) at(name string) V {
	v, _ := t.get(name)
	return v
}

// own returns shard i, cloned first unless this copy did already.
func (t *toolMap[V]) own(i int) map[string]V {
	if t.owned&(1<<i) == 0 {
		t.shards[i] = maps.Clone(t.shards[i])
		if t.shards[i] == nil {
			t.shards[i] = make(map[string]V)
		}
		t.owned |= 1 << i
	}
	return t.shards[i]
}

func (t *toolMap[V]) set(name string, v V) {
	s := t.own(toolShard(name))
	if _, ok := s[name]; !ok {
		t.n++
	}
	s[name] = v
}

func (t *toolMap[V]) del(name string) {
	i := toolShard(name)
	if _, ok := t.shards[i][name]; !ok {
		return
	}
	delete(t.own(i), name)
	t.n--
}

func (t *toolMap[V]) len() int { return t.n }

// all yields every entry, in no order.
func (t *toolMap[V]) all() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		for _, s := range t.shards {
			for k, v := range s {
				if !yield(k, v) {
					return
				}
			}
		}
	}
}

// copied is a copy of t whose writes clone the shards they change.
func (t *toolMap[V]) copied() toolMap[V] {
	c := *t
	c.owned = 0
	return c
}
