// Package storetest is the conformance suite every store.Store
// implementation runs, so that all backends behave the same for the issuer.
//
// Usage, from an implementation's test:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
//			s, err := mystore.Open(..., now)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// open must return a fresh, empty store that reads time only through now
// (the suite moves that clock to test expiry). The suite closes every store
// it opens; open need not register a Close of its own (if it does, it must
// accept ErrClosed).
//
// Beyond the store.Store doc comments, the suite pins down these choices:
//   - An entry is live while now is before its expiry; at the expiry instant
//     it has expired. A Put with an expiry in the past stores nothing
//     visible.
//   - An empty bucket name or an empty key is rejected with an error (and
//     nothing is written). List accepts an empty prefix: every entry.
//   - Get, List and Delete on a bucket that was never written behave as on
//     an empty bucket (ErrNotFound, no calls, nil).
//   - A nil value is stored as an empty value.
//   - List snapshots the matching entries before calling fn, so fn may Put
//     and Delete in the listed bucket (e.g. delete every match).
//   - Update commits nothing if ctx is done when fn returns; View, Update and
//     Purge do nothing and return ctx.Err() (wrapped) if ctx is done before
//     they start.
//   - Tx methods fail once fn has returned.
//   - A panic in fn propagates, nothing is written, and the store stays
//     usable.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// OpenFunc returns a fresh, empty store that takes the time from now.
type OpenFunc func(t *testing.T, now func() time.Time) store.Store

// Run runs the conformance suite against the stores open returns.
func Run(t *testing.T, open OpenFunc) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"PutGet", testPutGet},
		{"GetMissing", testGetMissing},
		{"PutReplaces", testPutReplaces},
		{"Create", testCreate},
		{"Delete", testDelete},
		{"ReadYourWrites", testReadYourWrites},
		{"Copies", testCopies},
		{"Expiry", testExpiry},
		{"CreateOverExpired", testCreateOverExpired},
		{"Purge", testPurge},
		{"ListPrefixOrder", testListPrefixOrder},
		{"ListStop", testListStop},
		{"ListThenDelete", testListThenDelete},
		{"Rollback", testRollback},
		{"Panic", testPanic},
		{"ViewRefusesWrites", testViewRefusesWrites},
		{"ViewReserved", testViewReserved},
		{"TxAfterFn", testTxAfterFn},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"WriteSkew", testWriteSkew},
		{"IsolatedViews", testIsolatedViews},
		{"Closed", testClosed},
		{"Context", testContext},
		{"EmptyNames", testEmptyNames},
		{"LargeValues", testLargeValues},
		{"ManyKeys", testManyKeys},
	}
	// Tests of an optional interface run only for stores that have it;
	// the others have no such row.
	only := map[string]func(store.Store) bool{
		"ViewReserved": func(s store.Store) bool { _, ok := s.(store.ReservedViewer); return ok },
	}
	for _, tt := range tests {
		if has := only[tt.name]; has != nil {
			if h := newHarness(t, open); has(h.s) {
				t.Run(tt.name, func(t *testing.T) { tt.fn(t, h) })
			}
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newHarness(t, open))
		})
	}
}

// epoch is the suite's starting time: far from the zero time and from the
// Unix epoch, so neither can be confused with "never expires".
var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// Clock is a settable time source shared by a test and the stores (and
// issuers) it drives. Safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type harness struct {
	s     store.Store
	clock *Clock
	ctx   context.Context
}

func newHarness(t *testing.T, open OpenFunc) *harness {
	t.Helper()
	c := NewClock(epoch)
	s := open(t, c.Now)
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close() = %v, want nil or ErrClosed", err)
		}
	})
	return &harness{s: s, clock: c, ctx: context.Background()}
}

// put writes one entry in its own Update.
func (h *harness) put(t *testing.T, bucket, key, value string, expires time.Time) {
	t.Helper()
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		return tx.Put(bucket, key, []byte(value), expires)
	})
	if err != nil {
		t.Fatalf("Update(Put(%q, %q)) = %v, want nil", bucket, key, err)
	}
}

// get reads one entry in its own View.
func (h *harness) get(t *testing.T, bucket, key string) ([]byte, error) {
	t.Helper()
	var got []byte
	err := h.s.View(h.ctx, func(tx store.Tx) error {
		var err error
		got, err = tx.Get(bucket, key)
		return err
	})
	return got, err
}

// wantValue fails unless bucket/key holds want.
func (h *harness) wantValue(t *testing.T, bucket, key, want string) {
	t.Helper()
	got, err := h.get(t, bucket, key)
	if err != nil {
		t.Fatalf("Get(%q, %q) error = %v, want nil", bucket, key, err)
	}
	if string(got) != want {
		t.Fatalf("Get(%q, %q) = %q, want %q", bucket, key, got, want)
	}
}

// wantMissing fails unless bucket/key is absent (ErrNotFound).
func (h *harness) wantMissing(t *testing.T, bucket, key string) {
	t.Helper()
	got, err := h.get(t, bucket, key)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(%q, %q) = %q, %v, want ErrNotFound", bucket, key, got, err)
	}
}

// list returns bucket's live entries under prefix as "key=value" strings.
func (h *harness) list(t *testing.T, bucket, prefix string) []string {
	t.Helper()
	var got []string
	err := h.s.View(h.ctx, func(tx store.Tx) error {
		return tx.List(bucket, prefix, func(k string, v []byte) error {
			got = append(got, k+"="+string(v))
			return nil
		})
	})
	if err != nil {
		t.Fatalf("List(%q, %q) = %v, want nil", bucket, prefix, err)
	}
	return got
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testPutGet(t *testing.T, h *harness) {
	tests := []struct {
		name, bucket, key, value string
	}{
		{"plain", "b", "k", "v"},
		{"binary", "b", "\x00\xff\x01", "\x00\x00\xff"},
		{"empty value", "b", "empty", ""},
		{"unicode", "bücket", "ключ", "värde"},
		{"other bucket same key", "b2", "k", "other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.put(t, tt.bucket, tt.key, tt.value, time.Time{})
			h.wantValue(t, tt.bucket, tt.key, tt.value)
		})
	}
	// Buckets are separate namespaces.
	h.wantValue(t, "b", "k", "v")

	// A nil value reads back as empty, not as missing.
	err := h.s.Update(h.ctx, func(tx store.Tx) error { return tx.Put("b", "nil", nil, time.Time{}) })
	if err != nil {
		t.Fatalf("Update(Put(nil value)) = %v, want nil", err)
	}
	h.wantValue(t, "b", "nil", "")
}

func testGetMissing(t *testing.T, h *harness) {
	h.wantMissing(t, "never-written", "k")
	h.put(t, "b", "k", "v", time.Time{})
	h.wantMissing(t, "b", "other")
	h.wantMissing(t, "b", "k\x00")
	h.wantMissing(t, "b", "K")
	if got := h.list(t, "never-written", ""); len(got) != 0 {
		t.Fatalf("List(never-written) = %q, want none", got)
	}
}

func testPutReplaces(t *testing.T, h *harness) {
	h.put(t, "b", "k", "first", h.clock.Now().Add(time.Minute))
	h.put(t, "b", "k", "second", time.Time{})
	h.wantValue(t, "b", "k", "second")
	// The replacement carries its own expiry: the old one no longer applies.
	h.clock.Advance(time.Hour)
	h.wantValue(t, "b", "k", "second")
}

func testCreate(t *testing.T, h *harness) {
	create := func(key, value string) error {
		return h.s.Update(h.ctx, func(tx store.Tx) error {
			return tx.Create("b", key, []byte(value), time.Time{})
		})
	}
	if err := create("k", "first"); err != nil {
		t.Fatalf("Create(new key) = %v, want nil", err)
	}
	if err := create("k", "second"); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("Create(existing key) = %v, want ErrAlreadyExists", err)
	}
	h.wantValue(t, "b", "k", "first")

	// Inside one transaction: Create sees the transaction's own writes.
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		if err := tx.Create("b", "x", []byte("1"), time.Time{}); err != nil {
			return fmt.Errorf("first Create: %w", err)
		}
		if err := tx.Create("b", "x", []byte("2"), time.Time{}); !errors.Is(err, store.ErrAlreadyExists) {
			return fmt.Errorf("second Create = %v, want ErrAlreadyExists", err)
		}
		if err := tx.Delete("b", "x"); err != nil {
			return fmt.Errorf("Delete: %w", err)
		}
		if err := tx.Create("b", "x", []byte("3"), time.Time{}); err != nil {
			return fmt.Errorf("Create after Delete: %w", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update(Create, Create, Delete, Create) = %v, want nil", err)
	}
	h.wantValue(t, "b", "x", "3")
}

func testDelete(t *testing.T, h *harness) {
	h.put(t, "b", "k", "v", time.Time{})
	h.put(t, "b", "keep", "v", time.Time{})
	del := func(bucket, key string) error {
		return h.s.Update(h.ctx, func(tx store.Tx) error { return tx.Delete(bucket, key) })
	}
	if err := del("b", "k"); err != nil {
		t.Fatalf("Delete(existing) = %v, want nil", err)
	}
	h.wantMissing(t, "b", "k")
	h.wantValue(t, "b", "keep", "v")
	if err := del("b", "k"); err != nil {
		t.Fatalf("Delete(already deleted) = %v, want nil", err)
	}
	if err := del("never-written", "k"); err != nil {
		t.Fatalf("Delete(missing bucket) = %v, want nil", err)
	}
}

func testReadYourWrites(t *testing.T, h *harness) {
	h.put(t, "b", "a", "old", time.Time{})
	h.put(t, "b", "gone", "v", time.Time{})
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		if err := tx.Put("b", "a", []byte("new"), time.Time{}); err != nil {
			return err
		}
		if err := tx.Put("b", "c", []byte("added"), time.Time{}); err != nil {
			return err
		}
		if err := tx.Delete("b", "gone"); err != nil {
			return err
		}
		if got, err := tx.Get("b", "a"); err != nil || string(got) != "new" {
			return fmt.Errorf("Get(a) = %q, %v, want new", got, err)
		}
		if _, err := tx.Get("b", "gone"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("Get(gone) error = %v, want ErrNotFound", err)
		}
		var got []string
		err := tx.List("b", "", func(k string, v []byte) error {
			got = append(got, k+"="+string(v))
			return nil
		})
		if want := []string{"a=new", "c=added"}; err != nil || !equal(got, want) {
			return fmt.Errorf("List = %q, %v, want %q", got, err, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update = %v, want nil", err)
	}
}

func testCopies(t *testing.T, h *harness) {
	// Big enough that bbolt keeps the bucket in its own (mmapped) pages.
	pad := string(bytes.Repeat([]byte{'p'}, 4096))
	h.put(t, "b", "pad", pad, time.Time{})
	// The value passed to Put belongs to the caller once Put returns.
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		v := []byte("original")
		if err := tx.Put("b", "k", v, time.Time{}); err != nil {
			return err
		}
		copy(v, "XXXXXXXX")
		w := []byte("created")
		if err := tx.Create("b", "c", w, time.Time{}); err != nil {
			return err
		}
		copy(w, "XXXXXXX")
		return nil
	})
	if err != nil {
		t.Fatalf("Update = %v, want nil", err)
	}
	h.wantValue(t, "b", "k", "original")
	h.wantValue(t, "b", "c", "created")

	// Values returned by Get and List belong to the caller, during and
	// after the transaction, in View and in Update.
	for _, update := range []bool{false, true} {
		var kept [][]byte
		fn := func(tx store.Tx) error {
			kept = kept[:0] // fn may run again (store.Store.Update)
			got, err := tx.Get("b", "k")
			if err != nil {
				return err
			}
			copy(got, "YYYYYYYY")
			kept = append(kept, got)
			if again, err := tx.Get("b", "k"); err != nil || string(again) != "original" {
				return fmt.Errorf("Get after mutating previous result = %q, %v, want original", again, err)
			}
			return tx.List("b", "", func(_ string, v []byte) error {
				kept = append(kept, v)
				copy(v, "ZZZ")
				return nil
			})
		}
		if update {
			err = h.s.Update(h.ctx, fn)
		} else {
			err = h.s.View(h.ctx, fn)
		}
		if err != nil {
			t.Fatalf("fn mutating results (update=%v) = %v, want nil", update, err)
		}
		h.wantValue(t, "b", "k", "original")
		h.wantValue(t, "b", "c", "created")
		// Writing more data must not disturb what the caller kept.
		for i := range 100 {
			h.put(t, "fill", strconv.Itoa(i), string(bytes.Repeat([]byte{'f'}, 1000)), time.Time{})
		}
		want := []string{"YYYYYYYY", "ZZZated", "ZZZginal", "ZZZ" + pad[3:]}
		var got []string
		for _, v := range kept {
			got = append(got, string(v))
		}
		if !equal(got, want) {
			t.Fatalf("kept values (update=%v) = %q, want %q", update, got, want)
		}
	}
}

func testExpiry(t *testing.T, h *harness) {
	now := h.clock.Now()
	h.put(t, "b", "never", "v", time.Time{})
	h.put(t, "b", "soon", "v", now.Add(time.Minute))
	h.put(t, "b", "later", "v", now.Add(time.Hour))
	h.put(t, "b", "past", "v", now.Add(-time.Second))

	h.wantMissing(t, "b", "past")
	if got, want := h.list(t, "b", ""), []string{"later=v", "never=v", "soon=v"}; !equal(got, want) {
		t.Fatalf("List at start = %q, want %q", got, want)
	}

	// At the expiry instant the entry has expired.
	h.clock.Advance(time.Minute - time.Nanosecond)
	h.wantValue(t, "b", "soon", "v")
	h.clock.Advance(time.Nanosecond)
	h.wantMissing(t, "b", "soon")
	if got, want := h.list(t, "b", ""), []string{"later=v", "never=v"}; !equal(got, want) {
		t.Fatalf("List after 1m = %q, want %q", got, want)
	}

	// Expired entries are invisible inside Update too.
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		if _, err := tx.Get("b", "soon"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("Get(soon) in Update error = %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	h.clock.Advance(100 * 365 * 24 * time.Hour)
	h.wantMissing(t, "b", "later")
	h.wantValue(t, "b", "never", "v")
	if got, want := h.list(t, "b", ""), []string{"never=v"}; !equal(got, want) {
		t.Fatalf("List after 100y = %q, want %q", got, want)
	}
}

func testCreateOverExpired(t *testing.T, h *harness) {
	h.put(t, "b", "k", "old", h.clock.Now().Add(time.Second))
	h.clock.Advance(time.Second)
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		return tx.Create("b", "k", []byte("new"), time.Time{})
	})
	if err != nil {
		t.Fatalf("Create over expired entry = %v, want nil", err)
	}
	h.wantValue(t, "b", "k", "new")
}

func testPurge(t *testing.T, h *harness) {
	now := h.clock.Now()
	h.put(t, "a", "live", "v", time.Time{})
	h.put(t, "a", "exp1", "v", now.Add(time.Minute))
	h.put(t, "b", "exp2", "v", now.Add(time.Minute))
	h.put(t, "b", "exp3", "v", now.Add(2*time.Minute))
	h.put(t, "b", "later", "v", now.Add(time.Hour))

	n, err := h.s.Purge(h.ctx)
	if err != nil || n != 0 {
		t.Fatalf("Purge() before expiry = %d, %v, want 0, nil", n, err)
	}
	h.clock.Advance(2 * time.Minute)
	n, err = h.s.Purge(h.ctx)
	if err != nil || n != 3 {
		t.Fatalf("Purge() = %d, %v, want 3, nil", n, err)
	}
	n, err = h.s.Purge(h.ctx)
	if err != nil || n != 0 {
		t.Fatalf("second Purge() = %d, %v, want 0, nil", n, err)
	}
	h.wantValue(t, "a", "live", "v")
	h.wantValue(t, "b", "later", "v")
	if got, want := h.list(t, "b", ""), []string{"later=v"}; !equal(got, want) {
		t.Fatalf("List(b) after Purge = %q, want %q", got, want)
	}
	// A purged key can be created again.
	err = h.s.Update(h.ctx, func(tx store.Tx) error {
		return tx.Create("a", "exp1", []byte("again"), time.Time{})
	})
	if err != nil {
		t.Fatalf("Create after Purge = %v, want nil", err)
	}
}

func testListPrefixOrder(t *testing.T, h *harness) {
	// Inserted out of order; List must return byte order.
	for _, k := range []string{"b", "ab", "a", "abc", "a\xff", "ac", "a\x00", "aa", "B", "c"} {
		h.put(t, "l", k, "v"+k, time.Time{})
	}
	h.put(t, "other", "a1", "x", time.Time{})
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"B=vB", "a=va", "a\x00=va\x00", "aa=vaa", "ab=vab", "abc=vabc", "ac=vac", "a\xff=va\xff", "b=vb", "c=vc"}},
		{"a", []string{"a=va", "a\x00=va\x00", "aa=vaa", "ab=vab", "abc=vabc", "ac=vac", "a\xff=va\xff"}},
		{"ab", []string{"ab=vab", "abc=vabc"}},
		{"abc", []string{"abc=vabc"}},
		{"abcd", nil},
		{"a\xff", []string{"a\xff=va\xff"}},
		{"c", []string{"c=vc"}},
		{"d", nil},
		{"0", nil},
	}
	for _, tt := range tests {
		if got := h.list(t, "l", tt.prefix); !equal(got, tt.want) {
			t.Errorf("List(l, %q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}
}

func testListStop(t *testing.T, h *harness) {
	for _, k := range []string{"a", "b", "c", "d"} {
		h.put(t, "b", k, "v", time.Time{})
	}
	stop := errors.New("stop here")
	var seen []string
	err := h.s.View(h.ctx, func(tx store.Tx) error {
		return tx.List("b", "", func(k string, _ []byte) error {
			seen = append(seen, k)
			if k == "b" {
				return stop
			}
			return nil
		})
	})
	if !errors.Is(err, stop) {
		t.Fatalf("View(List stopping at b) = %v, want %v", err, stop)
	}
	if want := []string{"a", "b"}; !equal(seen, want) {
		t.Fatalf("List stopping at b saw %q, want %q", seen, want)
	}
}

func testListThenDelete(t *testing.T, h *harness) {
	for i := range 20 {
		h.put(t, "b", fmt.Sprintf("grant:%02d", i), "v", time.Time{})
	}
	h.put(t, "b", "keep", "v", time.Time{})
	// Deleting and writing in the listed bucket from fn: the issuer revokes
	// a whole family this way.
	var n int
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		n = 0 // fn may run again (store.Store.Update)
		return tx.List("b", "grant:", func(k string, _ []byte) error {
			n++
			if err := tx.Delete("b", k); err != nil {
				return err
			}
			return tx.Put("b", "z"+k, []byte("moved"), time.Time{})
		})
	})
	if err != nil || n != 20 {
		t.Fatalf("Update(List deleting) = %d calls, %v, want 20, nil", n, err)
	}
	if got := h.list(t, "b", "grant:"); len(got) != 0 {
		t.Fatalf("List(grant:) after delete = %q, want none", got)
	}
	if got := h.list(t, "b", "zgrant:"); len(got) != 20 {
		t.Fatalf("List(zgrant:) = %d entries, want 20", len(got))
	}
	h.wantValue(t, "b", "keep", "v")
}

func testRollback(t *testing.T, h *harness) {
	h.put(t, "b", "k", "before", time.Time{})
	h.put(t, "b", "del", "before", time.Time{})
	fail := errors.New("fn failed")
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		if err := tx.Put("b", "k", []byte("after"), time.Time{}); err != nil {
			return err
		}
		if err := tx.Put("b", "new", []byte("v"), time.Time{}); err != nil {
			return err
		}
		if err := tx.Create("fresh-bucket", "k", []byte("v"), time.Time{}); err != nil {
			return err
		}
		if err := tx.Delete("b", "del"); err != nil {
			return err
		}
		return fmt.Errorf("wrapped: %w", fail)
	})
	if !errors.Is(err, fail) {
		t.Fatalf("Update(failing fn) = %v, want %v", err, fail)
	}
	h.wantValue(t, "b", "k", "before")
	h.wantValue(t, "b", "del", "before")
	h.wantMissing(t, "b", "new")
	h.wantMissing(t, "fresh-bucket", "k")

	// A failed write inside fn does not poison the others, and fn decides:
	// returning nil commits what succeeded.
	err = h.s.Update(h.ctx, func(tx store.Tx) error {
		if err := tx.Put("b", "k", []byte("committed"), time.Time{}); err != nil {
			return err
		}
		if err := tx.Create("b", "k", []byte("x"), time.Time{}); !errors.Is(err, store.ErrAlreadyExists) {
			return fmt.Errorf("Create = %v, want ErrAlreadyExists", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update = %v, want nil", err)
	}
	h.wantValue(t, "b", "k", "committed")
}

func testPanic(t *testing.T, h *harness) {
	h.put(t, "b", "k", "before", time.Time{})
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recover() = %v, want boom", r)
			}
		}()
		_ = h.s.Update(h.ctx, func(tx store.Tx) error {
			if err := tx.Put("b", "k", []byte("after"), time.Time{}); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	h.wantValue(t, "b", "k", "before")
	// The store is not left locked.
	h.put(t, "b", "k", "next", time.Time{})
	h.wantValue(t, "b", "k", "next")
}

func testViewRefusesWrites(t *testing.T, h *harness) {
	h.put(t, "b", "k", "v", time.Time{})
	writes := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"Put", func(tx store.Tx) error { return tx.Put("b", "k", []byte("w"), time.Time{}) }},
		{"Put new bucket", func(tx store.Tx) error { return tx.Put("nb", "k", []byte("w"), time.Time{}) }},
		{"Create", func(tx store.Tx) error { return tx.Create("b", "new", []byte("w"), time.Time{}) }},
		{"Delete", func(tx store.Tx) error { return tx.Delete("b", "k") }},
		{"Delete missing bucket", func(tx store.Tx) error { return tx.Delete("nb", "k") }},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			var writeErr error
			err := h.s.View(h.ctx, func(tx store.Tx) error {
				writeErr = w.fn(tx)
				return nil // ignore it: the write must still not land
			})
			if err != nil {
				t.Fatalf("View = %v, want nil", err)
			}
			if writeErr == nil {
				t.Fatalf("%s in View = nil, want an error", w.name)
			}
			h.wantValue(t, "b", "k", "v")
			h.wantMissing(t, "b", "new")
			h.wantMissing(t, "nb", "k")
		})
	}
}

// testViewReserved: a store.ReservedViewer's ViewReserved is a View: it
// reads what committed, not what expired, refuses writes, and does nothing
// with a done ctx or after Close.
func testViewReserved(t *testing.T, h *harness) {
	r := h.s.(store.ReservedViewer) // Run asks only such stores
	h.put(t, "b", "k", "v", time.Time{})
	h.put(t, "b", "gone", "v", h.clock.Now().Add(time.Second))
	h.clock.Advance(time.Second)
	var got []byte
	var getErr, goneErr, writeErr error
	err := r.ViewReserved(h.ctx, func(tx store.Tx) error {
		got, getErr = tx.Get("b", "k")
		_, goneErr = tx.Get("b", "gone")
		writeErr = tx.Put("b", "k", []byte("w"), time.Time{})
		return nil
	})
	switch {
	case err != nil:
		t.Fatalf("ViewReserved = %v, want nil", err)
	case getErr != nil || string(got) != "v":
		t.Errorf("Get in ViewReserved = %q, %v, want v, nil", got, getErr)
	case !errors.Is(goneErr, store.ErrNotFound):
		t.Errorf("Get(expired) in ViewReserved = %v, want ErrNotFound", goneErr)
	case writeErr == nil:
		t.Errorf("Put in ViewReserved = nil, want an error")
	}
	h.wantValue(t, "b", "k", "v")

	called := false
	fn := func(store.Tx) error { called = true; return nil }
	cancelled, cancel := context.WithCancel(h.ctx)
	cancel()
	if err := r.ViewReserved(cancelled, fn); !errors.Is(err, context.Canceled) {
		t.Errorf("ViewReserved(cancelled ctx) = %v, want context.Canceled", err)
	}
	if err := h.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.ViewReserved(h.ctx, fn); !errors.Is(err, store.ErrClosed) {
		t.Errorf("ViewReserved after Close = %v, want ErrClosed", err)
	}
	if called {
		t.Errorf("fn was called with a cancelled context or after Close")
	}
}

func testTxAfterFn(t *testing.T, h *harness) {
	h.put(t, "b", "k", "v", time.Time{})
	for _, update := range []bool{false, true} {
		var leaked store.Tx
		fn := func(tx store.Tx) error { leaked = tx; return nil }
		var err error
		if update {
			err = h.s.Update(h.ctx, fn)
		} else {
			err = h.s.View(h.ctx, fn)
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaked.Get("b", "k"); err == nil {
			t.Errorf("Get after fn returned (update=%v) = nil error, want an error", update)
		}
		if err := leaked.Put("b", "k", []byte("late"), time.Time{}); err == nil {
			t.Errorf("Put after fn returned (update=%v) = nil, want an error", update)
		}
		if err := leaked.List("b", "", func(string, []byte) error { return nil }); err == nil {
			t.Errorf("List after fn returned (update=%v) = nil, want an error", update)
		}
	}
	h.wantValue(t, "b", "k", "v")
}

// testConcurrentUpdates: 50 concurrent compare-and-swap increments of one
// key end at exactly 50. On a backend that runs Updates concurrently
// (postgres) they conflict, and the losers run again.
func testConcurrentUpdates(t *testing.T, h *harness) {
	const workers = 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			errs <- h.s.Update(h.ctx, func(tx store.Tx) error {
				n := 0
				v, err := tx.Get("b", "counter")
				switch {
				case errors.Is(err, store.ErrNotFound):
				case err != nil:
					return err
				default:
					if n, err = strconv.Atoi(string(v)); err != nil {
						return err
					}
				}
				return tx.Put("b", "counter", []byte(strconv.Itoa(n+1)), time.Time{})
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Update(increment) = %v, want nil", err)
		}
	}
	h.wantValue(t, "b", "counter", strconv.Itoa(workers))
}

// testWriteSkew: Updates that each read two keys and write one of them
// only if both are unset behave as if run one at a time, so exactly one
// writes. Snapshot isolation alone lets several see both unset (each
// writes a key the others only read) and all write.
func testWriteSkew(t *testing.T, h *harness) {
	const rounds, workers = 20, 8
	var wg sync.WaitGroup
	errs := make(chan error, rounds*workers)
	for r := range rounds {
		bucket := "skew" + strconv.Itoa(r)
		for i := range workers {
			wg.Go(func() {
				mine := []string{"x", "y"}[i%2]
				errs <- h.s.Update(h.ctx, func(tx store.Tx) error {
					for _, k := range []string{"x", "y"} {
						switch _, err := tx.Get(bucket, k); {
						case err == nil:
							return nil // taken
						case !errors.Is(err, store.ErrNotFound):
							return err
						}
					}
					return tx.Put(bucket, mine, []byte(strconv.Itoa(i)), time.Time{})
				})
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Update(read both, write one) = %v, want nil", err)
		}
	}
	for r := range rounds {
		if got := h.list(t, "skew"+strconv.Itoa(r), ""); len(got) != 1 {
			t.Fatalf("round %d: entries written = %q, want exactly one", r, got)
		}
	}
}

// testIsolatedViews checks that a View never sees half of an Update: two
// keys always written together must always read equal.
func testIsolatedViews(t *testing.T, h *harness) {
	h.put(t, "b", "x", "0", time.Time{})
	h.put(t, "b", "y", "0", time.Time{})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Go(func() {
			errs <- h.s.Update(h.ctx, func(tx store.Tx) error {
				v := []byte(strconv.Itoa(i + 1))
				if err := tx.Put("b", "x", v, time.Time{}); err != nil {
					return err
				}
				return tx.Put("b", "y", v, time.Time{})
			})
		})
		wg.Go(func() {
			errs <- h.s.View(h.ctx, func(tx store.Tx) error {
				x, err := tx.Get("b", "x")
				if err != nil {
					return err
				}
				y, err := tx.Get("b", "y")
				if err != nil {
					return err
				}
				if !bytes.Equal(x, y) {
					return fmt.Errorf("View saw x=%q y=%q, want equal", x, y)
				}
				return nil
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func testClosed(t *testing.T, h *harness) {
	h.put(t, "b", "k", "v", time.Time{})
	if err := h.s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	called := false
	fn := func(store.Tx) error { called = true; return nil }
	if err := h.s.View(h.ctx, fn); !errors.Is(err, store.ErrClosed) {
		t.Errorf("View after Close = %v, want ErrClosed", err)
	}
	if err := h.s.Update(h.ctx, fn); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Update after Close = %v, want ErrClosed", err)
	}
	if n, err := h.s.Purge(h.ctx); !errors.Is(err, store.ErrClosed) || n != 0 {
		t.Errorf("Purge after Close = %d, %v, want 0, ErrClosed", n, err)
	}
	if err := h.s.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close() = %v, want ErrClosed", err)
	}
	if called {
		t.Errorf("fn was called after Close")
	}
}

func testContext(t *testing.T, h *harness) {
	h.put(t, "b", "k", "v", h.clock.Now().Add(time.Second))
	h.clock.Advance(time.Second) // k is now expired, for Purge

	cancelled, cancel := context.WithCancel(h.ctx)
	cancel()
	called := false
	if err := h.s.View(cancelled, func(store.Tx) error { called = true; return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("View(cancelled ctx) = %v, want context.Canceled", err)
	}
	err := h.s.Update(cancelled, func(tx store.Tx) error {
		called = true
		return tx.Put("b", "new", []byte("v"), time.Time{})
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Update(cancelled ctx) = %v, want context.Canceled", err)
	}
	if called {
		t.Errorf("fn was called with a cancelled context")
	}
	h.wantMissing(t, "b", "new")
	if n, err := h.s.Purge(cancelled); !errors.Is(err, context.Canceled) || n != 0 {
		t.Errorf("Purge(cancelled ctx) = %d, %v, want 0, context.Canceled", n, err)
	}
	if n, err := h.s.Purge(h.ctx); err != nil || n != 1 {
		t.Errorf("Purge() after the cancelled Purge = %d, %v, want 1, nil", n, err)
	}

	// Cancelled while fn runs: fn's writes are not committed.
	ctx, cancel := context.WithCancel(h.ctx)
	err = h.s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Put("b", "during", []byte("v"), time.Time{}); err != nil {
			return err
		}
		cancel()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Update(cancelled during fn) = %v, want context.Canceled", err)
	}
	h.wantMissing(t, "b", "during")
}

func testEmptyNames(t *testing.T, h *harness) {
	h.put(t, "b", "k", "v", time.Time{})
	ops := []struct {
		name string
		fn   func(tx store.Tx) error
	}{
		{"Get empty bucket", func(tx store.Tx) error { _, err := tx.Get("", "k"); return err }},
		{"Get empty key", func(tx store.Tx) error { _, err := tx.Get("b", ""); return err }},
		{"Put empty bucket", func(tx store.Tx) error { return tx.Put("", "k", []byte("w"), time.Time{}) }},
		{"Put empty key", func(tx store.Tx) error { return tx.Put("b", "", []byte("w"), time.Time{}) }},
		{"Create empty bucket", func(tx store.Tx) error { return tx.Create("", "k", []byte("w"), time.Time{}) }},
		{"Create empty key", func(tx store.Tx) error { return tx.Create("b", "", []byte("w"), time.Time{}) }},
		{"Delete empty bucket", func(tx store.Tx) error { return tx.Delete("", "k") }},
		{"Delete empty key", func(tx store.Tx) error { return tx.Delete("b", "") }},
		{"List empty bucket", func(tx store.Tx) error {
			return tx.List("", "", func(string, []byte) error { return nil })
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			var opErr error
			err := h.s.Update(h.ctx, func(tx store.Tx) error {
				opErr = op.fn(tx)
				return nil
			})
			if err != nil {
				t.Fatalf("Update = %v, want nil", err)
			}
			if opErr == nil {
				t.Fatalf("%s = nil, want an error", op.name)
			}
			if errors.Is(opErr, store.ErrNotFound) {
				t.Fatalf("%s = %v, want an error other than ErrNotFound", op.name, opErr)
			}
			h.wantValue(t, "b", "k", "v")
			h.wantMissing(t, "b", "\x00")
		})
	}
}

func testLargeValues(t *testing.T, h *harness) {
	sizes := []int{4 << 10, 64 << 10, 4 << 20}
	for _, size := range sizes {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			v := make([]byte, size)
			for i := range v {
				v[i] = byte(i*7 + i>>8)
			}
			key := "large" + strconv.Itoa(size)
			err := h.s.Update(h.ctx, func(tx store.Tx) error { return tx.Put("b", key, v, time.Time{}) })
			if err != nil {
				t.Fatalf("Update(Put %d bytes) = %v, want nil", size, err)
			}
			got, err := h.get(t, "b", key)
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("Get(%d bytes) = %d bytes, %v, want the same %d bytes", size, len(got), err, size)
			}
		})
	}
	// A long key (bbolt's limit is 32 KiB; stay well under it).
	key := string(bytes.Repeat([]byte("k"), 1024))
	h.put(t, "b", key, "v", time.Time{})
	h.wantValue(t, "b", key, "v")
}

func testManyKeys(t *testing.T, h *harness) {
	const n = 2000
	err := h.s.Update(h.ctx, func(tx store.Tx) error {
		for i := range n {
			if err := tx.Put("many", fmt.Sprintf("k%05d", i), []byte(strconv.Itoa(i)), time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update(%d Puts) = %v, want nil", n, err)
	}
	got := h.list(t, "many", "k")
	if len(got) != n {
		t.Fatalf("List = %d entries, want %d", len(got), n)
	}
	for i, kv := range got {
		if want := fmt.Sprintf("k%05d=%d", i, i); kv != want {
			t.Fatalf("List[%d] = %q, want %q", i, kv, want)
		}
	}
}
