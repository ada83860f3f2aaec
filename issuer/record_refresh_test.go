package issuer

import (
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// TestRefreshRotateBinding: rotate binds an unbound family to the key it
// is given, keeps a family bound to that key, and refuses one bound to
// another key without rotating the token (the check the grant made
// before, repeated in the transaction that rotates).
func TestRefreshRotateBinding(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name, bound, bind string
		refused           bool
		want              string // the family's key after
	}{
		{"unbound, no key", "", "", false, ""},
		{"unbound, a key", "", "k1", false, "k1"},
		{"bound, no key", "k1", "", false, "k1"},
		{"bound, its key", "k1", "k1", false, "k1"},
		{"bound, another key", "k1", "k2", true, "k1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			g := &grant{ID: "g", Subject: "alice", ClientID: "c", CreatedAt: now, LastUsed: now,
				ExpiresAt: now.Add(time.Hour), DPoPJKT: tt.bound}
			var refused bool
			err := st.Update(t.Context(), func(tx store.Tx) error {
				if err := grantsIn(tx).put(g); err != nil {
					return err
				}
				if err := refreshIn(tx).issue("rt1", g, "c"); err != nil {
					return err
				}
				var err error
				refused, err = refreshIn(tx).rotate("rt1", "rt2", "c", tt.bind, now, now)
				return err
			})
			if err != nil || refused != tt.refused {
				t.Fatalf("rotate(bind %q) = %v, %v; want refused %v", tt.bind, refused, err, tt.refused)
			}
			err = st.View(t.Context(), func(tx store.Tx) error {
				rec, g, err := refreshIn(tx).family("rt1")
				if err != nil {
					return err
				}
				if rec.Rotated == tt.refused || g.DPoPJKT != tt.want {
					t.Errorf("after rotate: rt1 rotated %v, family key %q; want rotated %v, key %q", rec.Rotated, g.DPoPJKT, !tt.refused, tt.want)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
