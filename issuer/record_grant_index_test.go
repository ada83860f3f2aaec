package issuer

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// onEachStore runs test on a memory store (running every Update twice),
// a bbolt file and a PostgreSQL database (skipped without PostgreSQL
// unless CI_REQUIRE_POSTGRES), each with a fixed clock.
func onEachStore(t *testing.T, test func(t *testing.T, st store.Store, clock *storetest.Clock)) {
	open := map[string]func(t *testing.T, now func() time.Time) store.Store{
		"memory": func(t *testing.T, now func() time.Time) store.Store {
			return memory.New(memory.Options{Now: now, RunTwice: true})
		},
		"bolt": func(t *testing.T, now func() time.Time) store.Store {
			st, err := bolt.Open(filepath.Join(t.TempDir(), "auth.db"), bolt.Options{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		},
		"postgres": func(t *testing.T, now func() time.Time) store.Store {
			st, err := postgres.Open(context.Background(), pgtest.NewDatabase(t), postgres.Options{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		},
	}
	for _, name := range []string{"memory", "bolt", "postgres"} {
		t.Run(name, func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			test(t, open[name](t, clock.Now), clock)
		})
	}
}

// liveGrants are the live, unrevoked grants of user, oldest first.
func (e *testEnv) liveGrants(t *testing.T, user string) []grant {
	t.Helper()
	var gs []grant
	err := e.store.View(context.Background(), func(tx store.Tx) error {
		return grantsIn(tx).each(func(g *grant) error {
			if g.ofUser(user) && !g.Revoked {
				gs = append(gs, *g)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(gs, func(a, b grant) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return gs
}

// TestConnectionGrantsCapped: a user authorizing the same app for the
// same resource again and again holds maxConnectionGrants grants: each
// code redeemed past that revokes the oldest grant of the connection,
// its refresh token with it, and the revoked grant's records end with
// its revocation marker rather than 30 days later.
func TestConnectionGrantsCapped(t *testing.T) {
	onEachStore(t, testConnectionGrantsCapped)
}

func testConnectionGrantsCapped(t *testing.T, st store.Store, clock *storetest.Clock) {
	const perConnection = 10 // README (Tokens and agents: at most 10 of one connection); not the constant
	e := newTokEnvStore(t, st, clock)
	var toks []*oauth2.Token
	for range perConnection + 1 {
		toks = append(toks, e.userToken(t, tPublic, "read", "offline_access"))
		e.clock.Advance(time.Second)
	}
	// Another connection of the same user (another resource) is not
	// counted with it.
	code, verifier := e.issueCode(t, codeSpec{resource: tOther, scopes: []string{"read", "offline_access"}})
	if _, err := e.exchange(t, tPublic, "", code, verifier); err != nil {
		t.Fatal(err)
	}
	gs := e.liveGrants(t, tUser)
	if len(gs) != perConnection+1 {
		t.Fatalf("live grants after %d authorizations of one connection and 1 of another = %d, want %d",
			perConnection+1, len(gs), perConnection+1)
	}
	first := gidOf(t, toks[0].AccessToken)
	if slices.ContainsFunc(gs, func(g grant) bool { return g.ID == first }) {
		t.Errorf("the oldest grant %s is live, want it revoked", first)
	}
	if !e.revoked(t, "", first) {
		t.Errorf("Revoked(oldest grant) = false, want its access tokens refused")
	}
	if a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {toks[0].RefreshToken}, "client_id": {tPublic}}, ""); a.str("error") != "invalid_grant" {
		t.Errorf("refresh with the oldest grant's token = %d %s, want invalid_grant", a.status, a.raw)
	}
	if a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {toks[1].RefreshToken}, "client_id": {tPublic}}, ""); a.status != http.StatusOK {
		t.Errorf("refresh with the second grant's token = %d %s, want 200", a.status, a.raw)
	}
	// The revoked grant and its refresh family end with the marker.
	e.clock.Advance(e.iss.cfg.AccessTokenTTL + time.Hour)
	if n := e.count(bucketGrants); n != perConnection+1 {
		t.Errorf("grant records an access-token lifetime after = %d, want %d (the revoked one gone)", n, perConnection+1)
	}
	if n := e.count(bucketRefresh); n != perConnection+1 {
		t.Errorf("refresh records an access-token lifetime after = %d, want %d", n, perConnection+1)
	}
}

// TestUserGrantsCeiling: a user holding maxUserGrants offline grants (of
// other connections: each its own client) is refused a new one with
// invalid_grant naming the apps page, and nothing is stored; a code
// without offline_access, whose grant ends with its access token, is not
// counted and still granted; once the user revokes one, a new offline
// grant is granted.
func TestUserGrantsCeiling(t *testing.T) {
	const perUser = 1000 // README (Tokens and agents: at most 1000 in all); not the constant
	e := newTokEnv(t)
	now := e.clock.Now()
	err := e.store.Update(context.Background(), func(tx store.Tx) error {
		for n := range perUser {
			g := &grant{ID: fmt.Sprintf("g%04d", n), Subject: tUser, ClientID: fmt.Sprintf("https://c%d.example/meta", n),
				Resource: tResource, Scopes: []string{"read", "offline_access"}, CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(30 * 24 * time.Hour),
				Refresh: fmt.Sprintf("r%04d", n)}
			if err := grantsIn(tx).create(g); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	before := e.count(bucketGrants)
	code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read", "offline_access"}})
	_, err = e.exchange(t, tPublic, "", code, verifier)
	want := fmt.Sprintf("the user holds %d grants with refresh tokens, the most allowed: revoke some at %s", perUser, e.iss.endpoint(pathApps))
	if err == nil || !strings.Contains(err.Error(), "invalid_grant") || !strings.Contains(err.Error(), want) {
		t.Fatalf("Exchange() past the ceiling error = %v, want invalid_grant %q", err, want)
	}
	if n := e.count(bucketGrants); n != before {
		t.Errorf("grant records after the refusal = %d, want %d", n, before)
	}
	code, verifier = e.issueCode(t, codeSpec{scopes: []string{"read"}})
	if _, err := e.exchange(t, tPublic, "", code, verifier); err != nil {
		t.Errorf("Exchange() without offline_access at the ceiling = %v, want a token", err)
	}
	if err := e.iss.revokeConnection(context.Background(), tUser, "https://c0.example/meta", tResource, ""); err != nil {
		t.Fatal(err)
	}
	code, verifier = e.issueCode(t, codeSpec{scopes: []string{"read", "offline_access"}})
	if _, err := e.exchange(t, tPublic, "", code, verifier); err != nil {
		t.Errorf("Exchange() after revoking one = %v, want a token", err)
	}
}

// TestUserGrantsCeilingRevokesNothing: a code refused at the ceiling
// revokes none of the user's grants. A user may hold more than
// maxUserGrants offline grants (indexed at a start after an upgrade),
// and the code's connection may be full: making room in it revoked its
// oldest grant, a device's refresh token with it, before the ceiling
// refused the code, on each attempt.
func TestUserGrantsCeilingRevokesNothing(t *testing.T) {
	e := newTokEnv(t)
	now := e.clock.Now()
	var full []string // the connection of the code below
	err := e.store.Update(context.Background(), func(tx store.Tx) error {
		full = full[:0]
		for n := range maxUserGrants + 1 {
			g := &grant{ID: fmt.Sprintf("g%04d", n), Subject: tUser, ClientID: fmt.Sprintf("https://c%d.example/meta", n),
				Resource: tResource, Scopes: []string{"read", "offline_access"}, CreatedAt: now.Add(time.Duration(n) * time.Millisecond),
				LastUsed: now, ExpiresAt: now.Add(30 * 24 * time.Hour), Refresh: fmt.Sprintf("r%04d", n)}
			if n < maxConnectionGrants {
				g.ClientID = tPublic
				full = append(full, g.ID)
			}
			if err := grantsIn(tx).create(g); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read", "offline_access"}})
		if _, err := e.exchange(t, tPublic, "", code, verifier); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
			t.Fatalf("Exchange() past the ceiling error = %v, want invalid_grant", err)
		}
	}
	var live []string
	for _, g := range e.liveGrants(t, tUser) {
		if g.ClientID == tPublic {
			live = append(live, g.ID)
		}
	}
	if !slices.Equal(live, full) {
		t.Errorf("the connection's live grants after two refused codes = %v, want %v", live, full)
	}
}

// asEarlierVersion writes g as a version without the grant index does:
// the record alone.
func asEarlierVersion(t *testing.T, st store.Store, g *grant) {
	t.Helper()
	if err := st.Update(context.Background(), func(tx store.Tx) error { return grantsIn(tx).put(g) }); err != nil {
		t.Fatal(err)
	}
}

// TestGrantsBeforeTheIndex: grants an earlier version wrote have no
// index entries. Before the first indexing pass completes (a store
// upgraded in place: no marker), the apps page and revoking a user's,
// client's or agent's grants scan every grant; a start indexes them; and
// one written beside an upgraded instance during a rolling upgrade, after
// the marker, is indexed at the next start.
func TestGrantsBeforeTheIndex(t *testing.T) {
	onEachStore(t, testGrantsBeforeTheIndex)
}

func testGrantsBeforeTheIndex(t *testing.T, st store.Store, clock *storetest.Clock) {
	now := clock.Now()
	old := func(id, client, actor string) *grant {
		return &grant{ID: id, Subject: tUser, ClientID: client, Actor: actor, Resource: tResource,
			Scopes: []string{"read"}, CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(24 * time.Hour)}
	}
	// The store as an earlier version left it.
	asEarlierVersion(t, st, old("old-user", tPublic, ""))
	asEarlierVersion(t, st, old("old-client", tConf, ""))
	asEarlierVersion(t, st, old("old-agent", tPublic, tAgent1))
	e := newEnv(t, st, clock)
	// An instance whose indexing pass has not completed (it failed, or
	// is running): the marker is absent.
	e.restart(st)
	clearMarker := func() {
		if err := st.Update(context.Background(), func(tx store.Tx) error {
			return tx.Delete(bucketGrantIndex, grantIndexComplete)
		}); err != nil {
			t.Fatal(err)
		}
	}
	connections := func() []string {
		t.Helper()
		rows, err := e.iss.consents.connections(context.Background(), tUser)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range rows {
			ids = append(ids, r.ClientID+"/"+r.Agent)
		}
		return ids
	}
	revokeAll := func(t *testing.T, user bool) []string {
		t.Helper()
		rv := e.iss.revocation()
		err := st.Update(context.Background(), func(tx store.Tx) error {
			grants := grantsIn(tx)
			if err := grants.revokeClient(tConf, rv); err != nil {
				return err
			}
			if err := grants.revokeAgent(tAgent1, rv); err != nil {
				return err
			}
			if !user {
				return nil
			}
			return grants.revokeUser(tUser, rv)
		})
		if err != nil {
			t.Fatal(err)
		}
		var live []string
		for _, g := range e.liveGrants(t, tUser) {
			live = append(live, g.ID)
		}
		return live
	}
	want := []string{tConf + "/", tPublic + "/", tPublic + "/" + tAgent1}
	clearMarker()
	if got := connections(); !slices.Equal(got, want) {
		t.Errorf("connections before indexing = %v, want %v", got, want)
	}
	// A start indexes them and marks the index complete.
	e.restart(st)
	if got := connections(); !slices.Equal(got, want) {
		t.Errorf("connections after indexing = %v, want %v", got, want)
	}
	// An earlier version beside it writes another: the next start
	// indexes it.
	asEarlierVersion(t, st, old("old-later", tNarrow, ""))
	e.restart(st)
	if got := connections(); !slices.Contains(got, tNarrow+"/") {
		t.Errorf("connections after the next start = %v, want %s among them", got, tNarrow)
	}
	t.Run("revoke all, indexed", func(t *testing.T) {
		if live := revokeAll(t, true); len(live) != 0 {
			t.Errorf("live grants after revoking the user's = %v, want none", live)
		}
	})
	t.Run("revoke all, before indexing", func(t *testing.T) {
		asEarlierVersion(t, st, old("b-user", tPublic, ""))
		asEarlierVersion(t, st, old("b-client", tConf, ""))
		asEarlierVersion(t, st, old("b-agent", tPublic, tAgent1))
		clearMarker()
		if live := revokeAll(t, false); !slices.Equal(live, []string{"b-user"}) {
			t.Errorf("live grants after revoking the client's and the agent's = %v, want [b-user]", live)
		}
		if live := revokeAll(t, true); len(live) != 0 {
			t.Errorf("live grants after revoking the user's = %v, want none", live)
		}
	})
}

// TestGrantsPartlyIndexed: a grant this version indexed and an earlier
// version then rewrote (its instance, beside this one in a rolling
// upgrade or after a downgrade, exchanged one of its tokens to an agent,
// adding the agent to Delegates with no index entry) gets the missing
// entry at the next start, so revoking that agent ends the grant.
func TestGrantsPartlyIndexed(t *testing.T) {
	onEachStore(t, testGrantsPartlyIndexed)
}

func testGrantsPartlyIndexed(t *testing.T, st store.Store, clock *storetest.Clock) {
	now := clock.Now()
	g := &grant{ID: "partly", Subject: tUser, ClientID: tPublic, Resource: tResource,
		Scopes: []string{"read"}, CreatedAt: now, LastUsed: now, ExpiresAt: now.Add(24 * time.Hour)}
	e := newEnv(t, st, clock)
	e.restart(st)
	if err := st.Update(context.Background(), func(tx store.Tx) error { return grantsIn(tx).create(g) }); err != nil {
		t.Fatal(err)
	}
	g.Delegates = []string{tAgent2}
	asEarlierVersion(t, st, g)
	e.restart(st)
	rv := e.iss.revocation()
	if err := st.Update(context.Background(), func(tx store.Tx) error { return grantsIn(tx).revokeAgent(tAgent2, rv) }); err != nil {
		t.Fatal(err)
	}
	if live := e.liveGrants(t, tUser); len(live) != 0 {
		t.Errorf("live grants after revoking the agent a grant was delegated to = %v, want none", live)
	}
}

// TestRevokedPrincipalsUnindexedGrant: revoking a user, client or agent
// ends a grant the index does not list (one an earlier version's
// instance wrote after the index was complete, during a rolling
// upgrade): its refresh is refused, since it was made before the
// principal's revocation.
func TestRevokedPrincipalsUnindexedGrant(t *testing.T) {
	for _, tt := range []struct {
		name   string
		revoke func(grantRecords, revocation) error
	}{
		{"user", func(g grantRecords, rv revocation) error { return g.revokeUser(tUser, rv) }},
		{"client", func(g grantRecords, rv revocation) error { return g.revokeClient(tPublic, rv) }},
		{"agent", func(g grantRecords, rv revocation) error { return g.revokeAgent(tAgent1, rv) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTokEnv(t)
			tok := e.delegated(t, tAgent1, e.agentToken(t, tAgent1, tAgentSecret), "read", "offline_access")
			if tok.RefreshToken == "" {
				t.Fatal("no refresh token")
			}
			// Its index entries gone, as if an earlier version wrote it.
			err := e.store.Update(context.Background(), func(tx store.Tx) error {
				var keys []string
				if err := tx.List(bucketGrantIndex, "", func(k string, _ []byte) error {
					if k != grantIndexComplete {
						keys = append(keys, k)
					}
					return nil
				}); err != nil {
					return err
				}
				for _, k := range keys {
					if err := tx.Delete(bucketGrantIndex, k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(accesstoken.Leeway + time.Second)
			rv := e.iss.revocation()
			if err := e.store.Update(context.Background(), func(tx store.Tx) error { return tt.revoke(grantsIn(tx), rv) }); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Second)
			a := e.post(t, pathToken, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, "")
			if a.str("error") != "invalid_grant" {
				t.Errorf("refresh of the unindexed grant after revoking its %s = %d %s, want invalid_grant", tt.name, a.status, a.raw)
			}
		})
	}
}

// TestScriptRunsNotCapped: codes without offline_access, as a script that
// signs in as one user many times at once redeems them, are not counted:
// every one of more than maxConnectionGrants grants of one connection
// stays live (each ends with its access token).
func TestScriptRunsNotCapped(t *testing.T) {
	e := newTokEnv(t)
	var toks []string
	for range maxConnectionGrants + 2 {
		code, verifier := e.issueCode(t, codeSpec{scopes: []string{"read"}})
		tok, err := e.exchange(t, tPublic, "", code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok.AccessToken)
	}
	if n := len(e.liveGrants(t, tUser)); n != maxConnectionGrants+2 {
		t.Errorf("live grants = %d, want %d", n, maxConnectionGrants+2)
	}
	if !e.active(t, toks[0]) {
		t.Error("the first run's access token was revoked by the later ones")
	}
}

// TestOfflineGrantsIndexedApart: only a user's grants with refresh tokens
// have an offline entry, which is all admit reads: counting a user's
// grants against the limits reads no more than the limits allow,
// however many short grants (each ending with its access token) the user
// holds beside them.
func TestOfflineGrantsIndexedApart(t *testing.T) {
	offline := func(g *grant) bool {
		for _, k := range g.indexKeys() {
			if strings.HasPrefix(k, offlineGrantsPrefix(g.Subject)) {
				return true
			}
		}
		return false
	}
	short := &grant{ID: "s", Subject: tUser, ClientID: tPublic}
	long := &grant{ID: "l", Subject: tUser, ClientID: tPublic, Refresh: "r"}
	client := &grant{ID: "c", Subject: tConf, ClientID: tConf, PrincipalType: principalClient, Refresh: "r"}
	if offline(short) || !offline(long) || offline(client) {
		t.Errorf("offline entries: short grant %v, grant with refresh tokens %v, client's own %v; want false, true, false",
			offline(short), offline(long), offline(client))
	}
}
