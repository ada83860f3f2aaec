package issuer

import (
	"fmt"
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

// TestRefreshFamilyRecord: a family-form token ("<family>.<secret>") is
// one record per family, which rotation rewrites: the newest secret is
// current, any other one of the family reads as rotated, the family's
// name alone or another family's is no token, and rotation never moves
// into another family. An old-form token (no ".") keeps its own record,
// marked rotated, and its rotation starts a family.
func TestRefreshFamilyRecord(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	st := newMemStore()
	g := &grant{ID: "g", Subject: "alice", ClientID: "c", CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(time.Hour)}
	update := func(fn func(r refreshRecords) error) error {
		return st.Update(t.Context(), func(tx store.Tx) error { return fn(refreshIn(tx)) })
	}
	rotated := func(tok string) (bool, error) {
		var rec *refreshToken
		err := st.View(t.Context(), func(tx store.Tx) error {
			var err error
			rec, _, err = refreshIn(tx).family(tok)
			return err
		})
		return rec != nil && rec.Rotated, err
	}
	count := func() int {
		n := 0
		st.View(t.Context(), func(tx store.Tx) error {
			return tx.List(bucketRefresh, "", func(string, []byte) error { n++; return nil })
		})
		return n
	}
	err := update(func(r refreshRecords) error {
		if err := grantsIn(r.t.tx).put(g); err != nil {
			return err
		}
		if err := r.issue("F.s1", g, "c"); err != nil {
			return err
		}
		for _, next := range []string{"F.s2", "F.s3"} {
			prev := "F.s" + string(next[3]-1)
			if refused, err := r.rotate(prev, next, "c", "", now, now); refused || err != nil {
				t.Fatalf("rotate %s -> %s: refused %v, %v", prev, next, refused, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 1 {
		t.Errorf("records after two rotations = %d, want 1", n)
	}
	for _, tt := range []struct {
		tok     string
		rotated bool
		found   bool
	}{
		{"F.s3", false, true},
		{"F.s1", true, true},
		{"F.s2", true, true},
		{"F.", true, true},
		{"F.s3x", true, true},
		{"F", false, false},
		{"G.s3", false, false},
		{"", false, false},
	} {
		got, err := rotated(tt.tok)
		if found := err == nil; found != tt.found || got != tt.rotated {
			t.Errorf("%q: rotated %v, err %v; want rotated %v, found %v", tt.tok, got, err, tt.rotated, tt.found)
		}
	}
	if err := update(func(r refreshRecords) error {
		_, err := r.rotate("F.s3", "G.s4", "c", "", now, now)
		return err
	}); err == nil {
		t.Error("rotation into another family accepted")
	}
	// The old form: its record stays, marked; its rotation starts a family.
	err = update(func(r refreshRecords) error {
		if err := r.issue("old", g, "c"); err != nil {
			return err
		}
		refused, err := r.rotate("old", "H.s1", "c", "", now, now)
		if refused {
			t.Error("old-form token refused")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := rotated("old"); !r || err != nil {
		t.Errorf("old-form token after rotation: rotated %v, %v", r, err)
	}
	if r, err := rotated("H.s1"); r || err != nil {
		t.Errorf("the family it started: rotated %v, %v", r, err)
	}
	if r, err := rotated("H"); err == nil {
		t.Errorf("a family's name alone read as a token (rotated %v)", r)
	}
}

// TestRefreshRotateRotated: rotate of a token rotated already (a
// concurrent refresh won) refuses it and revokes the family, unless the
// token was issued under the family's binding and the request lacks the
// key: then nothing is revoked. A token issued before the binding
// revokes the family whoever presents it. Both token forms: old (one
// record each) and family.
func TestRefreshRotateRotated(t *testing.T) {
	for _, form := range [][3]string{{"rt1", "rt2", "rt3"}, {"F.s1", "F.s2", "F.s3"}} {
		t.Run(form[0], func(t *testing.T) { refreshRotateRotated(t, form) })
	}
}

func refreshRotateRotated(t *testing.T, tok [3]string) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name       string
		boundFirst bool   // the family was bound when rt1 was issued
		bind       string // the request's key
		revoked    bool
	}{
		{"bound token, no key", true, "", false},
		{"bound token, another key", true, "k2", false},
		{"bound token, its key", true, "k1", true},
		{"token from before the binding, no key", false, "", true},
		{"token from before the binding, another key", false, "k2", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore()
			g := &grant{ID: "g", Subject: "alice", ClientID: "c", CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(time.Hour)}
			if tt.boundFirst {
				g.DPoPJKT = "k1"
			}
			var refused bool
			err := st.Update(t.Context(), func(tx store.Tx) error {
				if err := grantsIn(tx).put(g); err != nil {
					return err
				}
				if err := refreshIn(tx).issue(tok[0], g, "c"); err != nil {
					return err
				}
				if refused, err := refreshIn(tx).rotate(tok[0], tok[1], "c", "k1", now, now); err != nil || refused {
					return fmt.Errorf("first rotate = %v, %w", refused, err)
				}
				var err error
				refused, err = refreshIn(tx).rotate(tok[0], tok[2], "c", tt.bind, now, now)
				return err
			})
			if err != nil || !refused {
				t.Fatalf("rotate of the rotated token (bind %q) = %v, %v; want refused", tt.bind, refused, err)
			}
			err = st.View(t.Context(), func(tx store.Tx) error {
				g, err := grantsIn(tx).get("g")
				if err != nil {
					return err
				}
				if g.Revoked != tt.revoked {
					t.Errorf("family revoked = %v, want %v", g.Revoked, tt.revoked)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
