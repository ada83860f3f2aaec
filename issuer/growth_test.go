package issuer

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// growthTraffic is what one simulated minute writes.
const (
	growthCodes     = 1000 // authorization codes, each living CodeTTL
	growthPAR       = 100  // pushed requests, each living PARTTL
	growthFamilies  = 10   // new refresh-token families (grants)
	growthFamilyTTL = 30 * time.Minute
	growthBatch     = 100 // records per transaction
	growthPurge     = 5   // minutes between purges, as the app's loop
)

// growthRun writes minutes of growthTraffic through the records layer
// onto a bbolt file with a clock that moves a minute at a time, purging
// every growthPurge minutes if purge. It returns the sizes of the file
// (bbolt grows it in steps) and its high-water mark, at half time and at
// openGrowthStore opens a bbolt file in a temporary directory on a clock
// of its own, closed when the test ends.
func openGrowthStore(t *testing.T) (*bolt.Store, string, *storetest.Clock) {
	t.Helper()
	clock := storetest.NewClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "mcp-auth.db")
	st, err := bolt.Open(path, bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path, clock
}

// the end, and the entries purged.
func growthRun(t *testing.T, minutes int, purge bool) (half, end growthSize, purged int) {
	t.Helper()
	ctx := context.Background()
	st, path, clock := openGrowthStore(t)
	update := func(fn func(tx store.Tx) error) {
		t.Helper()
		if err := st.Update(ctx, fn); err != nil {
			t.Fatal(err)
		}
	}
	type family struct {
		g   *grant
		tok string
	}
	var families []family
	for m := range minutes {
		now := clock.Now()
		for b := 0; b < growthCodes; b += growthBatch {
			update(func(tx store.Tx) error {
				for k := range growthBatch {
					code := fmt.Sprintf("code-%d-%d", m, b+k)
					ac := &authCode{
						ClientID: "https://client.example.com/metadata.json", RedirectURI: "http://127.0.0.1:33418/callback",
						CodeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", CodeChallengeMethod: "S256",
						Subject: "alice", Scopes: []string{"notes:read", "notes:write", "offline_access"},
						Resource: "https://mcp.example.com/mcp", AuthTime: now, ExpiresAt: now.Add(5 * time.Minute),
					}
					if err := codesIn(tx).create(code, ac); err != nil {
						return err
					}
				}
				return nil
			})
		}
		update(func(tx store.Tx) error {
			for k := range growthPAR {
				pr := &parRequest{ClientID: "client", ExpiresAt: now.Add(60 * time.Second), Params: map[string][]string{
					"response_type": {"code"}, "client_id": {"client"}, "redirect_uri": {"http://127.0.0.1:33418/callback"},
					"scope": {"notes:read offline_access"}, "code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"},
					"code_challenge_method": {"S256"}, "state": {"af0ifjsldkj"}, "resource": {"https://mcp.example.com/mcp"},
				}}
				if err := parIn(tx).create(fmt.Sprintf("urn:ietf:params:oauth:request_uri:%d-%d", m, k), pr); err != nil {
					return err
				}
			}
			return nil
		})
		// Every live family refreshes once a minute; rotated tokens stay
		// (for reuse detection) until their family expires.
		update(func(tx store.Tx) error {
			for k := range growthFamilies {
				g := &grant{ID: fmt.Sprintf("g-%d-%d", m, k), Subject: "alice", ClientID: "client",
					Resource: "https://mcp.example.com/mcp", Scopes: []string{"notes:read", "offline_access"},
					CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(growthFamilyTTL)}
				if err := grantsIn(tx).put(g); err != nil {
					return err
				}
				f := family{g, fmt.Sprintf("rt-%s-0", g.ID)}
				if err := refreshIn(tx).issue(f.tok, g, g.ClientID); err != nil {
					return err
				}
				families = append(families, f)
			}
			live := families[:0]
			for _, f := range families {
				if !now.Before(f.g.ExpiresAt) {
					continue
				}
				next := fmt.Sprintf("rt-%s-%d", f.g.ID, m)
				if refused, err := refreshIn(tx).rotate(f.tok, next, f.g.ClientID, "", now, now); err != nil || refused {
					return fmt.Errorf("rotate: %v, refused %v", err, refused)
				}
				f.tok = next
				live = append(live, f)
			}
			families = live
			return nil
		})
		clock.Advance(time.Minute)
		if purge && (m+1)%growthPurge == 0 {
			p, err := st.Purge(ctx)
			if err != nil {
				t.Fatal(err)
			}
			purged += p
		}
		if m+1 == minutes/2 {
			half = measure(t, st, path)
		}
	}
	return half, measure(t, st, path), purged
}

type growthSize struct{ file, used int64 }

func (g growthSize) String() string {
	mb := func(n int64) float64 { return float64(n) / (1 << 20) }
	return fmt.Sprintf("file %.1f MiB, high-water mark %.1f MiB", mb(g.file), mb(g.used))
}

func measure(t *testing.T, st *bolt.Store, path string) growthSize {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	// A backup copies the pages up to the high-water mark, free ones
	// included: what the file would be without bbolt's growth steps.
	used, err := st.Backup(context.Background(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return growthSize{fi.Size(), used}
}

// TestStoreGrowth: 100k authorization codes issued and expired, with PAR
// requests and rotating refresh-token families beside them, leave the
// bbolt file at the size of what is live at once when expired entries are
// purged as the app does: bbolt reuses the freed pages, so the file stops
// growing (it never shrinks). Without purge it grows with every code.
func TestStoreGrowth(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100k codes")
	}
	const minutes = 100 // 100 × growthCodes = 100k codes
	half, end, purged := growthRun(t, minutes, true)
	_, never, _ := growthRun(t, minutes, false)
	t.Logf("%dk codes, %dk PAR requests, %d refresh-token families rotating each minute; purged every %d minutes:",
		minutes*growthCodes/1000, minutes*growthPAR/1000, growthFamilies*int(growthFamilyTTL/time.Minute), growthPurge)
	t.Logf("  after 50k codes:  %v", half)
	t.Logf("  after 100k codes: %v (%d entries purged)", end, purged)
	t.Logf("  never purged:     %v", never)
	if purged < minutes*growthCodes*9/10 {
		t.Errorf("purged %d entries, want most of the %d expired codes", purged, minutes*growthCodes)
	}
	if end.file*4 > never.file {
		t.Errorf("with purge %v; without %v: want it far smaller", end, never)
	}
	// The file stops growing: twice the traffic, not a bigger file.
	if end.file > half.file || end.used > half.used*5/4 {
		t.Errorf("with purge the store grew from %v to %v between 50k and 100k codes, want it stable", half, end)
	}
}

// grantGrowthRun has one user redeem perMinute codes of one connection a
// minute, for minutes, through the records layer onto a bbolt file
// (admitted by the per-user limits if capped), each grant living 30 days
// with a refresh-token family, purging every growthPurge minutes. It
// returns the store's size at half time and at the end, and the live
// grants at the end.
func grantGrowthRun(t *testing.T, minutes, perMinute int, capped bool) (half, end growthSize, live int) {
	t.Helper()
	ctx := context.Background()
	st, path, clock := openGrowthStore(t)
	// As New leaves an empty store: indexed.
	if err := st.Update(ctx, func(tx store.Tx) error { return grantIndexIn(tx).markComplete() }); err != nil {
		t.Fatal(err)
	}
	for m := range minutes {
		now := clock.Now()
		err := st.Update(ctx, func(tx store.Tx) error {
			for k := range perMinute {
				tok := fmt.Sprintf("family-%d-%d.secret", m, k)
				g := &grant{
					ID: fmt.Sprintf("grant-%d-%d", m, k), Subject: "alice", ClientID: "https://client.example.com/metadata.json",
					Resource: "https://mcp.example.com/mcp", Scopes: []string{"read", "offline_access"},
					CreatedAt: now.Add(time.Duration(k)), LastUsed: now, ExpiresAt: now.Add(30 * 24 * time.Hour),
				}
				g.Refresh, _, _ = refreshKey(tok)
				grants := grantsIn(tx)
				if capped {
					if err := grants.admit(g, now.Add(time.Hour)); err != nil {
						return err
					}
				}
				if err := grants.create(g); err != nil {
					return err
				}
				if err := refreshIn(tx).issue(tok, g, g.ClientID); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		if (m+1)%growthPurge == 0 {
			if _, err := st.Purge(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if m+1 == minutes/2 {
			half = measure(t, st, path)
		}
	}
	err := st.View(ctx, func(tx store.Tx) error {
		return grantsIn(tx).each(func(g *grant) error {
			if !g.Revoked {
				live++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return half, measure(t, st, path), live
}

// TestGrantGrowthPerUser: a user redeeming 300 codes a minute of one
// connection (the token endpoint's write limit) holds maxConnectionGrants
// grants, and the store stops growing once the revoked ones' records end
// with their revocation markers (an access-token lifetime, here an hour)
// and are purged; without the limit every grant and refresh family stays
// for its 30 days.
func TestGrantGrowthPerUser(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 108k grants")
	}
	const minutes, perMinute = 180, 300
	half, end, live := grantGrowthRun(t, minutes, perMinute, true)
	_, never, all := grantGrowthRun(t, minutes, perMinute, false)
	t.Logf("one user, %d grants a minute of one connection for %d minutes, purged every %d minutes:", perMinute, minutes, growthPurge)
	t.Logf("  limited, after 1.5 h: %v", half)
	t.Logf("  limited, after 3 h: %v, %d live grants", end, live)
	t.Logf("  unlimited, after 3 h: %v, %d live grants", never, all)
	if live != maxConnectionGrants {
		t.Errorf("live grants = %d, want %d", live, maxConnectionGrants)
	}
	if end.used > half.used*5/4 {
		t.Errorf("limited store grew from %v to %v in the second hour, want it stable", half, end)
	}
}
