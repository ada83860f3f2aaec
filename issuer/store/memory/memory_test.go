package memory_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
