package memory_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		return memory.New(memory.Options{Now: now})
	})
}

func TestConformanceRunTwice(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		return memory.New(memory.Options{Now: now, RunTwice: true})
	})
}

// TestRunTwice: fn runs twice, only the second run's writes and result
// count.
func TestRunTwice(t *testing.T) {
	s := memory.New(memory.Options{RunTwice: true})
	ctx := context.Background()
	runs := 0
	err := s.Update(ctx, func(tx store.Tx) error {
		runs++
		if err := tx.Put("b", "run", []byte(strconv.Itoa(runs)), time.Time{}); err != nil {
			return err
		}
		if runs == 1 {
			if err := tx.Put("b", "first-only", nil, time.Time{}); err != nil {
				return err
			}
			return errors.New("first run fails")
		}
		return nil
	})
	if err != nil || runs != 2 {
		t.Fatalf("Update = %v after %d runs, want nil after 2", err, runs)
	}
	err = s.View(ctx, func(tx store.Tx) error {
		if v, err := tx.Get("b", "run"); err != nil || string(v) != "2" {
			return fmt.Errorf("Get(run) = %q, %v, want 2", v, err)
		}
		if _, err := tx.Get("b", "first-only"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("Get(first-only) = %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriteCostIndependentOfBucketSize: an Update writing one key into a
// bucket of many allocates for that key, not for the bucket. Each Update
// cloned the bucket it wrote, under the lock every Update waits for:
// with the sessions and pending requests of a sign-in flood (100,000
// rows) a write took 19 ms, so the whole issuer wrote at most about 50
// times a second. Bytes rather than time, so that a loaded machine does
// not decide. The writes are seen as before: inside the Update, by List,
// after commit, and not at all when fn fails.
func TestWriteCostIndependentOfBucketSize(t *testing.T) {
	s := memory.New(memory.Options{})
	ctx := context.Background()
	const rows = 20000
	value := make([]byte, 200)
	expires := time.Now().Add(time.Hour)
	err := s.Update(ctx, func(tx store.Tx) error {
		for i := range rows {
			if err := tx.Put("sessions", fmt.Sprintf("s%06d", i), value, expires); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	const writes = 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range writes {
		err := s.Update(ctx, func(tx store.Tx) error {
			return tx.Put("sessions", fmt.Sprintf("new%02d", i), value, expires)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if perWrite := (after.TotalAlloc - before.TotalAlloc) / writes; perWrite > 16<<10 {
		t.Errorf("one write into a bucket of %d rows allocated %d bytes, want at most 16 KiB", rows, perWrite)
	}

	// The change set reads as the bucket did.
	err = s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Delete("sessions", "s000001"); err != nil {
			return err
		}
		if err := tx.Put("sessions", "s000002", []byte("changed"), expires); err != nil {
			return err
		}
		if _, err := tx.Get("sessions", "s000001"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("Get(deleted) in its Update = %v, want ErrNotFound", err)
		}
		if err := tx.Create("sessions", "s000001", []byte("again"), expires); err != nil {
			return fmt.Errorf("Create(deleted) in its Update = %v", err)
		}
		var got []string
		err := tx.List("sessions", "s00000", func(k string, v []byte) error {
			got = append(got, k+"="+string(v[:min(len(v), 7)]))
			return nil
		})
		if want := 10; err != nil || len(got) != want || got[1] != "s000001=again" || got[2] != "s000002=changed" {
			return fmt.Errorf("List in its Update = %q, %v; want %d keys, s000001=again, s000002=changed", got, err, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	failed := errors.New("fails")
	if err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.Delete("sessions", "s000003"); err != nil {
			return err
		}
		return failed
	}); !errors.Is(err, failed) {
		t.Fatalf("Update = %v, want %v", err, failed)
	}
	err = s.View(ctx, func(tx store.Tx) error {
		for k, want := range map[string]string{"s000001": "again", "s000002": "changed", "s000003": string(value), "new19": string(value)} {
			if v, err := tx.Get("sessions", k); err != nil || string(v) != want {
				return fmt.Errorf("Get(%s) after commit = %q, %v, want %q", k, v, err, want)
			}
		}
		n := 0
		if err := tx.List("sessions", "", func(string, []byte) error { n++; return nil }); err != nil || n != rows+writes {
			return fmt.Errorf("List after commit: %d keys, %v, want %d", n, err, rows+writes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestListCostIndependentOfBucketSize: a List costs the keys under its
// prefix, not the bucket's. Each List went through every key of its
// bucket: with the grant index of a client_credentials flood (100,000
// entries) one user's listing, which an offline grant's issuance makes
// under the lock every Update waits for, took 16 ms. The fastest of
// many runs, so that a loaded machine does not decide: it was over 10 ms,
// it is now microseconds.
func TestListCostIndependentOfBucketSize(t *testing.T) {
	s := memory.New(memory.Options{})
	ctx := context.Background()
	const rows = 100000
	expires := time.Now().Add(time.Hour)
	err := s.Update(ctx, func(tx store.Tx) error {
		for i := range rows {
			if err := tx.Put("index", fmt.Sprintf("u\x00user%06d\x00grant", i), []byte("{}"), expires); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	fastest := func(run func(func(store.Tx) error) error) time.Duration {
		best := time.Hour
		for range 30 {
			start := time.Now()
			n := 0
			err := run(func(tx store.Tx) error {
				return tx.List("index", "u\x00user000042\x00", func(string, []byte) error { n++; return nil })
			})
			if err != nil || n != 1 {
				t.Fatalf("List: %d keys, %v; want 1", n, err)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	view := func(fn func(store.Tx) error) error { return s.View(ctx, fn) }
	update := func(fn func(store.Tx) error) error {
		return s.Update(ctx, func(tx store.Tx) error {
			if err := tx.Put("index", "u\x00user000041\x00other", []byte("{}"), expires); err != nil {
				return err
			}
			return fn(tx)
		})
	}
	for name, run := range map[string]func(func(store.Tx) error) error{"View": view, "Update": update} {
		if d := fastest(run); d > time.Millisecond {
			t.Errorf("a List of one key in a bucket of %d took %v in a %s at best, want under 1 ms", rows, d, name)
		}
	}
}

// TestListOrderRandomized: random writes, deletions, expiries and purges,
// each Update's List compared with a reference listing.
func TestListOrderRandomized(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := memory.New(memory.Options{Now: func() time.Time { return now }})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	ref := map[string]time.Time{} // key -> expiry (zero: never)
	key := func() string {
		b := make([]byte, 1+rng.IntN(4))
		for i := range b {
			b[i] = "ab\x00c"[rng.IntN(4)]
		}
		return string(b)
	}
	want := func(m map[string]time.Time, prefix string) []string {
		var out []string
		for k, exp := range m {
			if strings.HasPrefix(k, prefix) && (exp.IsZero() || now.Before(exp)) {
				out = append(out, k)
			}
		}
		slices.Sort(out)
		return out
	}
	for round := range 400 {
		pending := maps.Clone(ref)
		fail := rng.IntN(5) == 0
		err := s.Update(ctx, func(tx store.Tx) error {
			for range 1 + rng.IntN(8) {
				k := key()
				switch rng.IntN(3) {
				case 0:
					if err := tx.Delete("b", k); err != nil {
						return err
					}
					delete(pending, k)
				default:
					var exp time.Time
					if rng.IntN(3) == 0 {
						exp = now.Add(time.Duration(1+rng.IntN(3)) * time.Second)
					}
					if err := tx.Put("b", k, []byte(k), exp); err != nil {
						return err
					}
					pending[k] = exp
				}
			}
			prefix := key()[:rng.IntN(2)]
			var got []string
			if err := tx.List("b", prefix, func(k string, v []byte) error {
				if string(v) != k {
					return fmt.Errorf("List: %q holds %q", k, v)
				}
				got = append(got, k)
				return nil
			}); err != nil {
				return err
			}
			if w := want(pending, prefix); !slices.Equal(got, w) {
				return fmt.Errorf("round %d: List(%q) in its Update = %q, want %q", round, prefix, got, w)
			}
			if fail {
				return errors.New("fails")
			}
			return nil
		})
		if err != nil && !fail {
			t.Fatal(err)
		}
		if !fail {
			ref = pending
		}
		if rng.IntN(10) == 0 {
			now = now.Add(time.Second)
			if rng.IntN(2) == 0 {
				if _, err := s.Purge(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		err = s.View(ctx, func(tx store.Tx) error {
			var got []string
			if err := tx.List("b", "", func(k string, _ []byte) error { got = append(got, k); return nil }); err != nil {
				return err
			}
			if w := want(ref, ""); !slices.Equal(got, w) {
				return fmt.Errorf("round %d: List = %q, want %q", round, got, w)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
