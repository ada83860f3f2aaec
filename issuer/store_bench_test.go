package issuer

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken/dpop"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// benchStores are the stores the benchmarks run on.
var benchStores = []struct {
	name string
	open func(b *testing.B, now func() time.Time) store.Store
}{
	{"bolt", func(b *testing.B, now func() time.Time) store.Store {
		st, err := bolt.Open(filepath.Join(b.TempDir(), "bench.db"), bolt.Options{Now: now})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = st.Close() })
		return st
	}},
	{"postgres", durablePostgres},
}

// BenchmarkTokenIssuance measures token endpoint throughput over HTTP per
// store: authorization_code redemptions, refresh-token rotations and
// client_credentials grants, one request at a time, each committed
// durably (bbolt fsyncs; the PostgreSQL server runs with fsync and
// synchronous_commit on, over its unix socket). Run with
//
//	go test -run '^$' -bench TokenIssuance ./issuer/
//
// and read requests/s as 1e9 / ns/op.
func BenchmarkTokenIssuance(b *testing.B) {
	for _, s := range benchStores {
		b.Run(s.name, func(b *testing.B) {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			e := newTokEnvStore(b, s.open(b, clock.Now), clock)
			b.Run("authorization_code", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					code, verifier := e.issueCode(b, codeSpec{scopes: []string{"read", "offline_access"}})
					b.StartTimer()
					if _, err := e.exchange(b, tPublic, "", code, verifier); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("refresh_token", func(b *testing.B) {
				code, verifier := e.issueCode(b, codeSpec{scopes: []string{"read", "offline_access"}})
				tok, err := e.exchange(b, tPublic, "", code, verifier)
				if err != nil {
					b.Fatal(err)
				}
				rt := tok.RefreshToken
				for b.Loop() {
					a := e.post(b, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {tPublic}}, "")
					if a.status != http.StatusOK {
						b.Fatalf("refresh = %d %s", a.status, a.raw)
					}
					rt = a.str("refresh_token")
				}
			})
			b.Run("client_credentials", func(b *testing.B) {
				form := url.Values{"grant_type": {"client_credentials"}, "scope": {"read"}, "resource": {tResource}}
				for b.Loop() {
					// Within the client's budget (clientTokenBurst a minute).
					e.clock.Advance(time.Minute / clientTokenBurst)
					if a := e.post(b, pathToken, form, tConf+":"+tSecret); a.status != http.StatusOK {
						b.Fatalf("client_credentials = %d %s", a.status, a.raw)
					}
				}
			})
		})
	}
}

// BenchmarkDPoPSpend measures what the shared record of spent DPoP
// proofs adds to each DPoP request: Verify (ES256 signature check, replay
// memory) alone, and with the record in PostgreSQL (a durable server over
// its unix socket; the record's commit does not wait for the disk). Run
// with
//
//	go test -run '^$' -bench DPoPSpend ./issuer/
func BenchmarkDPoPSpend(b *testing.B) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	const uri = "https://mcp.example.com/mcp"
	run := func(b *testing.B, ledger dpop.Ledger) {
		v := dpop.New(dpop.Options{Now: clock, Ledger: ledger, MaxReplayEntries: b.N + 1})
		proofs := make([]string, b.N)
		for i := range proofs {
			// A key per proof, as of many clients: one holder's proofs
			// may fill only a share of the jti memory.
			k := newDPoPKey(b)
			c := jwt.MapClaims{"jti": rand.Text(), "htm": http.MethodPost, "htu": uri, "iat": now.Unix()}
			tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
			tok.Header["typ"], tok.Header["jwk"] = "dpop+jwt", k.jwk
			s, err := tok.SignedString(k.priv)
			if err != nil {
				b.Fatal(err)
			}
			proofs[i] = s
		}
		req := dpop.Request{Method: http.MethodPost, URI: uri}
		b.ResetTimer()
		for i := range b.N {
			if _, err := v.Verify(b.Context(), proofs[i:i+1], req); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("memory", func(b *testing.B) { run(b, nil) })
	b.Run("postgres", func(b *testing.B) { run(b, dpopLedger{durablePostgres(b, clock)}) })
}

// durablePostgres is a store on a PostgreSQL server of the benchmark's
// own that runs with fsync and synchronous_commit on.
func durablePostgres(b *testing.B, now func() time.Time) store.Store {
	_, dsn := pgtest.Own(b, pgtest.Options{Durable: true})
	st, err := postgres.Open(b.Context(), dsn, postgres.Options{Now: now})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	return st
}

// BenchmarkGrantsOfOneUser measures the apps page's read of one user's
// grants and revoking them all (as removing the user does) while the
// store holds grantsOfOthers grants of other users, per store, through
// the grant index and, as before it (no index marker), by a scan of every
// grant. Run with
//
//	go test -run '^$' -bench GrantsOfOneUser ./issuer/
func BenchmarkGrantsOfOneUser(b *testing.B) {
	const grantsOfOthers, own = 20000, 5
	for _, s := range benchStores {
		b.Run(s.name, func(b *testing.B) {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			e := newTokEnvStore(b, s.open(b, clock.Now), clock)
			ctx := context.Background()
			now := clock.Now()
			newGrant := func(id, user string) *grant {
				return &grant{ID: id, Subject: user, ClientID: tPublic, Resource: tResource, Scopes: []string{"read"},
					CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(30 * 24 * time.Hour)}
			}
			for n := 0; n < grantsOfOthers; n += 1000 {
				err := e.store.Update(ctx, func(tx store.Tx) error {
					for k := range 1000 {
						if err := grantsIn(tx).create(newGrant(fmt.Sprintf("other-%d", n+k), fmt.Sprintf("user-%d", (n+k)%5000))); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			grantOwn := func(b *testing.B, round int) {
				err := e.store.Update(ctx, func(tx store.Tx) error {
					for k := range own {
						if err := grantsIn(tx).create(newGrant(fmt.Sprintf("own-%d-%d", round, k), tUser)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			setIndexed := func(b *testing.B, indexed bool) {
				err := e.store.Update(ctx, func(tx store.Tx) error {
					if indexed {
						return grantIndexIn(tx).markComplete()
					}
					return tx.Delete(bucketGrantIndex, grantIndexComplete)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			for _, mode := range []struct {
				name    string
				indexed bool
			}{{"index", true}, {"scan", false}} {
				b.Run("apps/"+mode.name, func(b *testing.B) {
					setIndexed(b, mode.indexed)
					grantOwn(b, -1)
					for b.Loop() {
						rows, err := e.iss.consents.connections(ctx, tUser)
						if err != nil || len(rows) != 1 {
							b.Fatalf("connections = %v, %v", rows, err)
						}
					}
				})
				b.Run("revoke_user/"+mode.name, func(b *testing.B) {
					setIndexed(b, mode.indexed)
					round := 0
					for b.Loop() {
						b.StopTimer()
						round++
						grantOwn(b, round)
						b.StartTimer()
						if err := e.store.Update(ctx, func(tx store.Tx) error {
							return grantsIn(tx).revokeUser(tUser, e.iss.revocation())
						}); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
