package issuer

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// usersReadStore counts the user records a real store's transactions
// list.
type usersReadStore struct {
	store.Store
	read atomic.Int64
}

func (s *usersReadStore) View(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.View(ctx, func(tx store.Tx) error { return fn(&usersReadTx{tx, s}) })
}

func (s *usersReadStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error { return fn(&usersReadTx{tx, s}) })
}

type usersReadTx struct {
	store.Tx
	s *usersReadStore
}

func (t *usersReadTx) MayRunAlone() { store.MayRunAlone(t.Tx) }

func (t *usersReadTx) List(bucket, prefix string, fn func(key string, value []byte) error) error {
	return t.Tx.List(bucket, prefix, func(k string, v []byte) error {
		if bucket == bucketUsers {
			t.s.read.Add(1)
		}
		return fn(k, v)
	})
}

// TestLoginPageReadsUsersOnce: with identity providers and no configured
// user, the login page shows the password form only while a local user is
// stored, and finding out reads the stored users until a local one. It
// read them at every view of the page: a browser holding a session cookie
// (no write, so no budget spent) made the issuer decode every account the
// providers provisioned (all of them, when none is local: the usual
// single sign-on setup) per request, as often as it liked. It now reads
// them at most once per localUsersRecheck; a local user added through
// PutUser shows the form at once, one stored by another instance within
// the recheck.
func TestLoginPageReadsUsersOnce(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	st := &usersReadStore{Store: memory.New(memory.Options{Now: clock.Now})}
	e := newEnv(t, st, clock)
	stub := newStubIdP(t, clock.Now)
	e.serve(Config{
		Issuer:    e.srv.URL,
		Now:       clock.Now,
		Groups:    []Group{{Name: "staff", Scopes: map[string][]string{"*": {"files:read"}}}},
		Resources: []Resource{{URL: bResource, Scopes: []string{"files:read"}}},
		IdentityProviders: []IdentityProvider{{Name: stubIdPName, Issuer: stub.srv.URL, ClientID: "mcp-auth", ClientSecret: "stub-secret",
			GroupMap: map[string][]string{"*": {"staff"}}}},
	})
	const provisioned = 500
	err := st.Store.Update(t.Context(), func(tx store.Tx) error {
		for k := range provisioned {
			u := &User{Username: fmt.Sprintf("%s:user%04d@corp.example", stubIdPName, k), Source: sourceIdP,
				IdentityProvider: stubIdPName, IdPSubject: fmt.Sprintf("sub-%04d", k), IdPIssuer: stub.srv.URL}
			if err := usersIn(tx).put(u); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	passwordForm := func() bool {
		t.Helper()
		resp, err := b.Get(e.url(pathLogin, nil))
		if err != nil {
			t.Fatal(err)
		}
		page := readBody(t, resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("login page = %d %s", resp.StatusCode, page)
		}
		findForm(t, page, "idp-"+stubIdPName)
		return slices.ContainsFunc(parseForms(t, page), func(f form) bool { return f.id == "login" })
	}
	const views = 50
	for range views {
		if passwordForm() {
			t.Fatal("the login page shows the password form with no local user stored")
		}
	}
	if n := st.read.Load(); n > provisioned {
		t.Errorf("%d views of the login page read %d user records, want at most %d (one reading of the %d stored)", views, n, provisioned, provisioned)
	}

	// A local user stored by another instance: shown within 10 seconds
	// (README, Sign in with your identity provider), the users not read
	// again before.
	hash, err := bcrypt.GenerateFromPassword([]byte(bPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Store.Update(t.Context(), func(tx store.Tx) error {
		return usersIn(tx).put(&User{Username: "zoe", PasswordHash: string(hash), Source: sourceAdmin})
	})
	if err != nil {
		t.Fatal(err)
	}
	read := st.read.Load()
	clock.Advance(9 * time.Second)
	if shown := passwordForm(); shown || st.read.Load() != read {
		t.Errorf("9 s after the users were read, the login page read %d more user records (password form shown: %v), want none", st.read.Load()-read, shown)
	}
	clock.Advance(time.Second)
	if !passwordForm() {
		t.Error("a local user stored elsewhere: no password form 10 s after the users were read")
	}

	// Added here: at once.
	if err := e.iss.DeleteUser(t.Context(), "zoe"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(localUsersRecheck)
	if passwordForm() {
		t.Fatal("the login page shows the password form after the local user was deleted")
	}
	if err := e.iss.PutUser(t.Context(), User{Username: "yves", PasswordHash: string(hash)}); err != nil {
		t.Fatal(err)
	}
	if !passwordForm() {
		t.Error("a local user added through PutUser: no password form at once")
	}
}
