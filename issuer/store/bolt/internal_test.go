package bolt

import (
	"math"
	"path/filepath"
	"testing"
	"time"
)

// TestSyncOnCommit guards the durability promise: bbolt must fsync on
// every commit.
func TestSyncOnCommit(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "store.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.db.NoSync || s.db.NoGrowSync {
		t.Fatalf("NoSync, NoGrowSync = %v, %v, want false, false", s.db.NoSync, s.db.NoGrowSync)
	}
}

func TestExpiryNanos(t *testing.T) {
	tests := []struct {
		name    string
		expires time.Time
		want    int64
	}{
		{"never", time.Time{}, 0},
		{"ordinary", time.Unix(1700000000, 5), 1700000000*1e9 + 5},
		{"unix epoch is not never", time.Unix(0, 0), -1},
		{"before 1970", time.Unix(-10, 0), -10e9},
		{"far future clamps", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), math.MaxInt64},
		{"far past clamps", time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), math.MinInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expiryNanos(tt.expires); got != tt.want {
				t.Errorf("expiryNanos(%v) = %d, want %d", tt.expires, got, tt.want)
			}
		})
	}
}

func TestLive(t *testing.T) {
	now := time.Unix(1000, 0)
	tests := []struct {
		name string
		exp  int64
		want bool
	}{
		{"never", 0, true},
		{"future", expiryNanos(now.Add(time.Nanosecond)), true},
		{"at expiry", expiryNanos(now), false},
		{"past", expiryNanos(now.Add(-time.Hour)), false},
		{"clamped far future", math.MaxInt64, true},
		{"clamped far past", math.MinInt64, false},
		{"epoch", -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := live(tt.exp, now); got != tt.want {
				t.Errorf("live(%d, %v) = %v, want %v", tt.exp, now, got, tt.want)
			}
		})
	}
}
