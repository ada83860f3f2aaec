package freeport

import (
	"net"
	"testing"
)

// TestListen: ports below the ephemeral range (where the machine leaves
// room for that), distinct while held, bound on every interface.
func TestListen(t *testing.T) {
	low := EphemeralLow()
	seen := map[int]bool{}
	for range 5 {
		l, err := Listen()
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		p := l.Addr().(*net.TCPAddr).Port
		if seen[p] {
			t.Errorf("port %d chosen twice while held", p)
		}
		seen[p] = true
		if low-From >= 1000 && (p < From || p >= low) {
			t.Errorf("port %d, want one in [%d, %d)", p, From, low)
		}
	}
}
