package bolt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
)

// benchValue is about the size of a stored refresh token or code record.
var benchValue = make([]byte, 512)

func benchStore(b *testing.B) *bolt.Store {
	b.Helper()
	s, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), bolt.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkUpdate is one durable (fsync'd) Update writing one entry, the
// cost of every code, token or consent the issuer records.
func BenchmarkUpdate(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		key := fmt.Sprintf("k%08d", i%10000)
		i++
		err := s.Update(ctx, func(tx store.Tx) error { return tx.Put("b", key, benchValue, exp) })
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet is one View reading one entry out of 10000.
func BenchmarkGet(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	const n = 10000
	err := s.Update(ctx, func(tx store.Tx) error {
		for i := range n {
			if err := tx.Put("b", fmt.Sprintf("k%08d", i), benchValue, time.Time{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%08d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		key := keys[i%n]
		i++
		err := s.View(ctx, func(tx store.Tx) error { _, err := tx.Get("b", key); return err })
		if err != nil {
			b.Fatal(err)
		}
	}
}
