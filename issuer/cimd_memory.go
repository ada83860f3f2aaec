package issuer

import (
	"container/list"
	"sync"
	"time"
)

// cimdMemoryEntries bounds cimdMemory: documents of at most
// maxStoredRegistration bytes each, so a few MB.
const cimdMemoryEntries = 1000

// cimdMemory holds, in this process, the documents that could be cached
// but were not admitted to the store (cimdFetcher.keep): their budgets
// were spent, by their host or by documents named from anywhere. A
// document in use is then still fetched once per lifetime, not at every
// use. When full, the least recently used entry goes: a flood of
// documents named once pushes out its own, not one that clients use.
type cimdMemory struct {
	mu      sync.Mutex
	max     int
	byURL   map[string]*list.Element // of *cimdMemoryEntry
	recency *list.List               // most recently used first
}

type cimdMemoryEntry struct {
	clientID string
	client   *storedClient
	expires  time.Time
}

func newCIMDMemory(max int) *cimdMemory {
	return &cimdMemory{max: max, byURL: make(map[string]*list.Element), recency: list.New()}
}

// get returns the document remembered for clientID, if it has not
// expired at now.
func (m *cimdMemory) get(clientID string, now time.Time) (*Client, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.byURL[clientID]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cimdMemoryEntry)
	if !now.Before(e.expires) {
		m.recency.Remove(el)
		delete(m.byURL, clientID)
		return nil, false
	}
	m.recency.MoveToFront(el)
	return e.client.client(), true
}

// put remembers a document until expires, making room by forgetting the
// least recently used one.
func (m *cimdMemory) put(clientID string, c *storedClient, expires time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.byURL[clientID]; ok {
		el.Value = &cimdMemoryEntry{clientID, c, expires}
		m.recency.MoveToFront(el)
		return
	}
	for m.recency.Len() >= m.max {
		last := m.recency.Back()
		m.recency.Remove(last)
		delete(m.byURL, last.Value.(*cimdMemoryEntry).clientID)
	}
	m.byURL[clientID] = m.recency.PushFront(&cimdMemoryEntry{clientID, c, expires})
}

func (m *cimdMemory) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recency.Len()
}
