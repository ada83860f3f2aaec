package memory_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
)

// TestIsolationRandomized runs random Updates (Put, Create, Delete, Get,
// List, each checked against a reference model of the committed state
// and the Update's own writes; some fail, panic or are canceled) while
// Views run concurrently and check that they see only whole Updates: the
// accounts' sum never changes, and List agrees with Get.
func TestIsolationRandomized(t *testing.T) {
	for _, twice := range []bool{false, true} {
		t.Run(fmt.Sprint("twice=", twice), func(t *testing.T) { isolationRandomized(t, twice) })
	}
}

func isolationRandomized(t *testing.T, twice bool) {
	var clock atomic.Int64
	clock.Store(1_000_000)
	nowf := func() time.Time { return time.Unix(clock.Load(), 0) }
	s := memory.New(memory.Options{Now: nowf, RunTwice: twice})
	ctx := context.Background()
	const accounts, total = 8, 8000
	if err := s.Update(ctx, func(tx store.Tx) error {
		for i := range accounts {
			if err := tx.Put("acct", "a"+strconv.Itoa(i), []byte(strconv.Itoa(total/accounts)), time.Time{}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var viewErr atomic.Value
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := s.View(ctx, func(tx store.Tx) error {
					sum, n := 0, 0
					var listed []string
					if err := tx.List("acct", "", func(k string, v []byte) error {
						x, err := strconv.Atoi(string(v))
						if err != nil {
							return err
						}
						sum, n = sum+x, n+1
						listed = append(listed, k)
						return nil
					}); err != nil {
						return err
					}
					if sum != total || n != accounts {
						return fmt.Errorf("View saw %d accounts summing to %d, want %d, %d", n, sum, accounts, total)
					}
					if !slices.IsSorted(listed) {
						return fmt.Errorf("List not in order: %q", listed)
					}
					var keys []string
					if err := tx.List("b", "", func(k string, v []byte) error {
						if string(v) != k {
							return fmt.Errorf("b/%q holds %q", k, v)
						}
						keys = append(keys, k)
						return nil
					}); err != nil {
						return err
					}
					if !slices.IsSorted(keys) {
						return fmt.Errorf("List not in order: %q", keys)
					}
					for _, k := range keys {
						if _, err := tx.Get("b", k); err != nil && !errors.Is(err, store.ErrNotFound) {
							return err
						}
					}
					return nil
				})
				if err != nil {
					viewErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}

	rng := rand.New(rand.NewPCG(3, 4))
	ref := map[string]time.Time{}
	for round := range 3000 {
		if e := viewErr.Load(); e != nil {
			break
		}
		now := nowf()
		live := func(m map[string]time.Time, k string) bool {
			exp, ok := m[k]
			return ok && (exp.IsZero() || now.Before(exp))
		}
		mode := rng.IntN(8) // 0: fails, 1: panics, 2: canceled, else commits
		uctx, cancel := context.WithCancel(ctx)
		// fn may run twice (RunTwice): each run starts over from ref
		// with its own rng, so both runs do the same.
		seed := rng.Uint64()
		var pending map[string]time.Time
		var modelErr error
		fn := func(tx store.Tx) error {
			r := rand.New(rand.NewPCG(seed, 0))
			k := func() string {
				b := make([]byte, 1+r.IntN(3))
				for i := range b {
					b[i] = "abc"[r.IntN(3)]
				}
				return string(b)
			}
			pending = maps.Clone(ref)
			from, to := "a"+strconv.Itoa(r.IntN(accounts)), "a"+strconv.Itoa(r.IntN(accounts))
			amt := r.IntN(50)
			for _, step := range []struct {
				key string
				d   int
			}{{from, -amt}, {to, amt}} {
				v, err := tx.Get("acct", step.key)
				if err != nil {
					return err
				}
				x, _ := strconv.Atoi(string(v))
				if err := tx.Put("acct", step.key, []byte(strconv.Itoa(x+step.d)), time.Time{}); err != nil {
					return err
				}
			}
			for range 1 + r.IntN(10) {
				kk := k()
				switch r.IntN(5) {
				case 0:
					if err := tx.Delete("b", kk); err != nil {
						return err
					}
					delete(pending, kk)
				case 1:
					err := tx.Create("b", kk, []byte(kk), time.Time{})
					switch {
					case live(pending, kk) && !errors.Is(err, store.ErrAlreadyExists):
						modelErr = fmt.Errorf("round %d: Create of live %q: %v", round, kk, err)
					case !live(pending, kk) && err != nil:
						modelErr = fmt.Errorf("round %d: Create of absent %q: %v", round, kk, err)
					case err == nil:
						pending[kk] = time.Time{}
					}
				case 2:
					_, err := tx.Get("b", kk)
					if got, want := err == nil, live(pending, kk); got != want {
						modelErr = fmt.Errorf("round %d: Get %q in its Update found %v, want %v (%v)", round, kk, got, want, err)
					}
				default:
					var exp time.Time
					if r.IntN(3) == 0 {
						exp = now.Add(time.Duration(r.IntN(3)) * time.Second)
					}
					if err := tx.Put("b", kk, []byte(kk), exp); err != nil {
						return err
					}
					pending[kk] = exp
				}
				if modelErr != nil {
					return modelErr
				}
			}
			prefix := k()[:r.IntN(2)]
			var got, want []string
			if err := tx.List("b", prefix, func(key string, v []byte) error {
				got = append(got, key)
				// Writing inside List's fn must not disturb it.
				return tx.Put("b", key, v, pending[key])
			}); err != nil {
				return err
			}
			for kk := range pending {
				if strings.HasPrefix(kk, prefix) && live(pending, kk) {
					want = append(want, kk)
				}
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				modelErr = fmt.Errorf("round %d: List(%q) in its Update = %q, want %q", round, prefix, got, want)
				return modelErr
			}
			switch mode {
			case 0:
				return errors.New("fails")
			case 1:
				panic("fn panics")
			case 2:
				cancel()
			}
			return nil
		}
		func() {
			defer func() {
				if p := recover(); p != nil && mode != 1 {
					panic(p)
				}
			}()
			err := s.Update(uctx, fn)
			if modelErr != nil {
				t.Fatal(modelErr)
			}
			if (err == nil) != (mode > 2) {
				t.Fatalf("round %d: mode %d: Update: %v", round, mode, err)
			}
			if err == nil {
				ref = pending
			}
		}()
		cancel()
		if rng.IntN(10) == 0 {
			clock.Add(1)
			if rng.IntN(2) == 0 {
				if _, err := s.Purge(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		// The committed state is the model's.
		now = nowf()
		var got []string
		if err := s.View(ctx, func(tx store.Tx) error {
			return tx.List("b", "", func(k string, _ []byte) error { got = append(got, k); return nil })
		}); err != nil {
			t.Fatal(err)
		}
		var want []string
		for k := range ref {
			if live(ref, k) {
				want = append(want, k)
			}
		}
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: committed List = %q, want %q", round, got, want)
		}
	}
	close(stop)
	wg.Wait()
	if e := viewErr.Load(); e != nil {
		t.Fatal(e)
	}
}
