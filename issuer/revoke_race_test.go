package issuer

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/bolt"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// raceEnv is a token env with a runtime client (backend, secret
// tPassword), agent (rt, secret "first") and user (dave, password
// tPassword), the principals the admin API can revoke.
func raceEnv(t *testing.T) *testEnv {
	t.Helper()
	e := newTokEnv(t)
	ctx := t.Context()
	for _, err := range []error{
		e.iss.PutClient(ctx, Client{ID: "backend", SecretHash: passwordHash(), GrantTypes: []string{grantClientCredentials}}),
		e.iss.PutAgent(ctx, Agent{ID: "rt", SecretHash: hashClientSecret("first"), Scopes: []string{"read"}}),
		e.iss.PutUser(ctx, User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"staff"}}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	e.clock.Advance(time.Minute)
	return e
}

// during makes revoke commit inside the next token request, after its
// client authenticated and its grant was checked, before what it issues
// is recorded: the window a concurrent revocation can hit.
func (e *testEnv) during(t *testing.T, revoke func(context.Context, *Issuer) error) {
	e.iss.mint.beforeRecord = func() {
		e.iss.mint.beforeRecord = nil
		e.clock.Advance(time.Second)
		if err := revoke(context.Background(), e.iss); err != nil {
			t.Errorf("revocation during the request: %v", err)
		}
	}
}

// updateBackend replaces raceEnv's backend registration by one named name
// with scopes (none: every scope), as PUT /mcp-auth/clients/backend does.
func updateBackend(ctx context.Context, i *Issuer, name string, scopes ...string) error {
	_, err := i.UpdateClient(ctx, Client{ID: "backend", Name: name, TokenEndpointAuthMethod: authClientSecretBasic,
		GrantTypes: []string{grantClientCredentials}, Scopes: scopes})
	return err
}

// tokenAnswer turns an x/oauth2 result into the status and error code of
// the token response.
func tokenAnswer(tok *oauth2.Token, err error) (int, string) {
	var re *oauth2.RetrieveError
	switch {
	case err == nil:
		return http.StatusOK, tok.AccessToken
	case errors.As(err, &re):
		return re.Response.StatusCode, re.ErrorCode
	}
	return 0, err.Error()
}

// TestRevocationDuringTokenRequest: whatever revokes a request's client,
// agent or user while the request runs (secret rotation, deletion,
// disabling, a password change), the request issues nothing; a
// revocation of another principal does not disturb it. The other order
// (the issue committed first) is revoked by the revocation itself
// (TestManageClients, TestAgentManagement, TestManageUsers).
func TestRevocationDuringTokenRequest(t *testing.T) {
	rotateClient := func(ctx context.Context, i *Issuer) error { _, err := i.RotateClientSecret(ctx, "backend"); return err }
	deleteClient := func(ctx context.Context, i *Issuer) error { return i.DeleteClient(ctx, "backend") }
	narrowClient := func(ctx context.Context, i *Issuer) error { return updateBackend(ctx, i, "", "read") }
	renameClient := func(ctx context.Context, i *Issuer) error { return updateBackend(ctx, i, "Backend") }
	rotateAgent := func(ctx context.Context, i *Issuer) error { _, err := i.RotateAgentSecret(ctx, "rt"); return err }
	disableAgent := func(ctx context.Context, i *Issuer) error { return i.DisableAgent(ctx, "rt") }
	deleteAgent := func(ctx context.Context, i *Issuer) error { return i.DeleteAgent(ctx, "rt") }
	newPassword := func(ctx context.Context, i *Issuer) error { return i.SetPassword(ctx, "dave", secretHash()) }
	deleteUser := func(ctx context.Context, i *Issuer) error { return i.DeleteUser(ctx, "dave") }

	// Requests: each prepares what it needs, then arms the revocation.
	backendCC := func(t *testing.T, e *testEnv, arm func()) (int, string) {
		arm()
		a := e.post(t, pathToken, ccForm(nil), "backend:"+tPassword)
		return a.status, a.str("error") + a.str("access_token")
	}
	agentCC := func(t *testing.T, e *testEnv, arm func()) (int, string) {
		arm()
		a := e.post(t, pathToken, ccForm(nil), "rt:first")
		return a.status, a.str("error") + a.str("access_token")
	}
	daveCode := func(t *testing.T, e *testEnv, arm func()) (int, string) {
		code, verifier := e.issueCode(t, codeSpec{user: "dave", scopes: []string{"read", "offline_access"}})
		arm()
		return tokenAnswer(e.exchange(t, tPublic, "", code, verifier))
	}
	delegatedCode := func(t *testing.T, e *testEnv, arm func()) (int, string) {
		actorTok := e.agentToken(t, "rt", "first")
		code, verifier := e.issueCode(t, codeSpec{user: "dave", actor: "rt", scopes: []string{"read"}})
		arm()
		return tokenAnswer(e.exchange(t, tPublic, "", code, verifier, oauth2.SetAuthURLParam("actor_token", actorTok)))
	}
	daveRefresh := func(t *testing.T, e *testEnv, arm func()) (int, string) {
		code, verifier := e.issueCode(t, codeSpec{user: "dave", scopes: []string{"read", "offline_access"}})
		tok, err := e.exchange(t, tPublic, "", code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		arm()
		a := e.post(t, pathToken, url.Values{"grant_type": {grantRefreshToken}, "refresh_token": {tok.RefreshToken}, "client_id": {tPublic}}, "")
		return a.status, a.str("error") + a.str("access_token")
	}
	agentExchange := func(t *testing.T, e *testEnv, arm func()) (int, string) {
		code, verifier := e.issueCode(t, codeSpec{user: "dave", scopes: []string{"read"}})
		user, err := e.exchange(t, tPublic, "", code, verifier)
		if err != nil {
			t.Fatal(err)
		}
		actorTok := e.agentToken(t, "rt", "first")
		arm()
		a := e.tokenExchange(t, "rt:first", exchangeForm(user.AccessToken, actorTok))
		return a.status, a.str("error") + a.str("access_token")
	}

	for _, tt := range []struct {
		name    string
		request func(*testing.T, *testEnv, func()) (int, string)
		revoke  func(context.Context, *Issuer) error
		refused bool
	}{
		{"client credentials, client secret rotated", backendCC, rotateClient, true},
		{"client credentials, client deleted", backendCC, deleteClient, true},
		{"client credentials, client's scopes narrowed", backendCC, narrowClient, true},
		{"client credentials, client renamed", backendCC, renameClient, false},
		{"client credentials, another user's password changed", backendCC, newPassword, false},
		{"agent's own token, agent secret rotated", agentCC, rotateAgent, true},
		{"agent's own token, agent disabled", agentCC, disableAgent, true},
		{"agent's own token, agent deleted", agentCC, deleteAgent, true},
		{"agent's own token, another client rotated", agentCC, rotateClient, false},
		{"code, user's password changed", daveCode, newPassword, true},
		{"code, user deleted", daveCode, deleteUser, true},
		{"code, an unrelated agent disabled", daveCode, disableAgent, false},
		{"code bound to an agent, agent disabled", delegatedCode, disableAgent, true},
		{"code bound to an agent, agent deleted", delegatedCode, deleteAgent, true},
		{"refresh, user's password changed", daveRefresh, newPassword, true},
		{"refresh, user deleted", daveRefresh, deleteUser, true},
		{"refresh, an unrelated client deleted", daveRefresh, deleteClient, false},
		{"exchange to an agent, agent deleted", agentExchange, deleteAgent, true},
		{"exchange to an agent, agent disabled", agentExchange, disableAgent, true},
		{"exchange to an agent, agent secret rotated", agentExchange, rotateAgent, true},
		{"exchange to an agent, user's password changed", agentExchange, newPassword, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := raceEnv(t)
			status, got := tt.request(t, e, func() { e.during(t, tt.revoke) })
			if e.iss.mint.beforeRecord != nil {
				t.Fatal("the request never reached the minter")
			}
			switch {
			case tt.refused && (status != http.StatusBadRequest || got != "invalid_grant"):
				t.Errorf("token request during the revocation = %d %q, want 400 invalid_grant", status, got)
			case !tt.refused && status != http.StatusOK:
				t.Errorf("token request during an unrelated revocation = %d %q, want 200", status, got)
			case !tt.refused && e.revokedToken(t, got):
				t.Error("token issued during an unrelated revocation is revoked")
			}
		})
	}
}

// TestCodeFromBeforeRevocation: a code issued before its user's password
// changed, or its user, client or agent was removed, is refused when
// redeemed afterwards, however soon; a code from a login after the change
// is not.
func TestCodeFromBeforeRevocation(t *testing.T) {
	for _, tt := range []struct {
		name   string
		spec   codeSpec
		revoke func(context.Context, *Issuer) error
	}{
		{"password changed", codeSpec{user: "dave"}, func(ctx context.Context, i *Issuer) error {
			return i.SetPassword(ctx, "dave", secretHash())
		}},
		{"user deleted and recreated", codeSpec{user: "dave"}, func(ctx context.Context, i *Issuer) error {
			if err := i.DeleteUser(ctx, "dave"); err != nil {
				return err
			}
			return i.PutUser(ctx, User{Username: "dave", PasswordHash: secretHash(), Groups: []string{"staff"}})
		}},
		{"client deleted and recreated", codeSpec{user: "dave", client: "spa"}, func(ctx context.Context, i *Issuer) error {
			if err := i.DeleteClient(ctx, "spa"); err != nil {
				return err
			}
			return i.PutClient(ctx, Client{ID: "spa", RedirectURIs: []string{tRedirect}})
		}},
		{"agent disabled and enabled", codeSpec{user: "dave", actor: "rt"}, func(ctx context.Context, i *Issuer) error {
			if err := i.DisableAgent(ctx, "rt"); err != nil {
				return err
			}
			return i.EnableAgent(ctx, "rt")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := raceEnv(t)
			if err := e.iss.PutClient(t.Context(), Client{ID: "spa", RedirectURIs: []string{tRedirect}}); err != nil {
				t.Fatal(err)
			}
			client := tt.spec.client
			if client == "" {
				client = tPublic
			}
			var opts []oauth2.AuthCodeOption
			if tt.spec.actor != "" {
				opts = append(opts, oauth2.SetAuthURLParam("actor_token", e.agentToken(t, "rt", "first")))
			}
			code, verifier := e.issueCode(t, tt.spec)
			e.clock.Advance(time.Second)
			if err := tt.revoke(t.Context(), e.iss); err != nil {
				t.Fatal(err)
			}
			if status, got := tokenAnswer(e.exchange(t, client, "", code, verifier, opts...)); status != http.StatusBadRequest || got != "invalid_grant" {
				t.Errorf("code from before the revocation = %d %q, want 400 invalid_grant", status, got)
			}
			// A login (and so a code) after the revocation is served (the
			// test codes' login is a minute before their issue).
			e.clock.Advance(2 * time.Minute)
			if tt.spec.actor != "" {
				opts = []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("actor_token", e.agentToken(t, "rt", "first"))}
			}
			code, verifier = e.issueCode(t, tt.spec)
			if status, got := tokenAnswer(e.exchange(t, client, "", code, verifier, opts...)); status != http.StatusOK {
				t.Errorf("code from after the revocation = %d %q, want 200", status, got)
			}
		})
	}
}

// TestLoginDuringPasswordChange: a login whose password check began
// before the user's password changed or the user was removed starts no
// session (its password may be the old one); one that began after does.
func TestLoginDuringPasswordChange(t *testing.T) {
	e := raceEnv(t)
	ctx := t.Context()
	began := e.clock.Now()
	e.clock.Advance(time.Second)
	if err := e.iss.SetPassword(ctx, "dave", secretHash()); err != nil {
		t.Fatal(err)
	}
	before := e.count(bucketSessions)
	login := func(at time.Time) error {
		s := &session{Browser: "b", User: "dave", AuthTime: at, ExpiresAt: e.clock.Now().Add(time.Hour)}
		return e.iss.sessions.start(ctx, httptest.NewRecorder(), s, "")
	}
	if err := login(began); !errors.Is(err, errSignedOut) {
		t.Errorf("session of a login from before the password change: %v, want errSignedOut", err)
	}
	if n := e.count(bucketSessions); n != before {
		t.Errorf("sessions %d -> %d, want none started", before, n)
	}
	if err := login(e.clock.Now()); err != nil {
		t.Errorf("session of a login after the password change: %v", err)
	}
	// A code (and remembered consent) drawn from a session the change
	// ended while the authorization request ran is not stored either.
	consents := e.count(bucketConsents)
	ar := &authRequest{ClientID: tPublic, RedirectURI: tRedirect}
	old := &session{Browser: "b", User: "dave", AuthTime: began}
	pub, err := e.iss.dir.lookupClient(ctx, tPublic)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.iss.issueCode(ctx, old, pub, ar, "", tResource, []string{"read"}, true); !errors.Is(err, errSignedOut) {
		t.Errorf("code from a session the change ended: %v, want errSignedOut", err)
	}
	if n := e.count(bucketConsents); n != consents {
		t.Errorf("consents %d -> %d, want none stored", consents, n)
	}
}

// slowUpdateStore holds its next Update, once armed, until released: a
// transaction that waits for a lock or is retried after serialization
// failures, as PostgreSQL's are, commits a while after it began.
type slowUpdateStore struct {
	store.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *slowUpdateStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	if s.armed.CompareAndSwap(true, false) {
		close(s.entered)
		<-s.release
	}
	return s.Store.Update(ctx, fn)
}

// TestRevocationStampedBeforeItCommits: a client's or agent's secret is
// rotated, or it is removed or disabled, because its secret leaked. The
// revocation takes its time stamp before its transaction runs; a token
// request with the old secret that begins after the stamp, authenticates
// before the change commits and records after it is refused: the issuing
// transaction reads the credentials again (review s13-cluster F1).
// Before, the stamp did not refuse it (its basis is later) and the
// revocation's scan did not find its grant (it did not exist yet).
func TestRevocationStampedBeforeItCommits(t *testing.T) {
	for _, tt := range []struct {
		name, basic string
		form        url.Values
		revoke      func(context.Context, *Issuer) error
	}{
		{"client secret rotated", "backend:" + tPassword, ccForm(nil), func(ctx context.Context, i *Issuer) error {
			_, err := i.RotateClientSecret(ctx, "backend")
			return err
		}},
		{"client removed", "backend:" + tPassword, ccForm(nil), func(ctx context.Context, i *Issuer) error { return i.DeleteClient(ctx, "backend") }},
		{"client's scopes narrowed", "backend:" + tPassword, ccForm(nil), func(ctx context.Context, i *Issuer) error { return updateBackend(ctx, i, "", "read") }},
		{"agent secret rotated", "rt:first", ccForm(nil), func(ctx context.Context, i *Issuer) error {
			_, err := i.RotateAgentSecret(ctx, "rt")
			return err
		}},
		{"agent disabled", "rt:first", ccForm(nil), func(ctx context.Context, i *Issuer) error { return i.DisableAgent(ctx, "rt") }},
		{"agent removed", "rt:first", ccForm(nil), func(ctx context.Context, i *Issuer) error { return i.DeleteAgent(ctx, "rt") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			st := &slowUpdateStore{Store: memory.New(memory.Options{Now: clock.Now}), entered: make(chan struct{}), release: make(chan struct{})}
			e := newTokEnvStore(t, st, clock)
			ctx := t.Context()
			for _, err := range []error{
				e.iss.PutClient(ctx, Client{ID: "backend", SecretHash: passwordHash(), GrantTypes: []string{grantClientCredentials}}),
				e.iss.PutAgent(ctx, Agent{ID: "rt", SecretHash: hashClientSecret("first"), Scopes: []string{"read"}}),
			} {
				if err != nil {
					t.Fatal(err)
				}
			}
			clock.Advance(time.Minute)

			st.armed.Store(true)
			revoked := make(chan error, 1)
			go func() { revoked <- tt.revoke(context.Background(), e.iss) }()
			<-st.entered                    // the revocation has its stamp; its transaction has not run
			clock.Advance(time.Millisecond) // the request begins after the stamp
			e.iss.mint.beforeRecord = func() {
				e.iss.mint.beforeRecord = nil
				close(st.release) // the change commits now, before the request records
				if err := <-revoked; err != nil {
					t.Errorf("revoke: %v", err)
				}
			}
			if a := e.post(t, pathToken, tt.form, tt.basic); a.status == http.StatusOK {
				t.Errorf("token request with the old credentials, recorded after the change committed: %d, a token was issued (want refused)", a.status)
			}
		})
	}
}

// TestExchangeByAgentRevokedMeanwhile: TestRevocationStampedBeforeItCommits
// for a token exchange, whose subject's client (the app) is not the
// client that authenticated (the acting agent): the agent's credentials
// are read again in the issuing transaction too (review s13-fresh3 F4).
func TestExchangeByAgentRevokedMeanwhile(t *testing.T) {
	for _, tt := range []struct {
		name   string
		revoke func(context.Context, *Issuer) error
	}{
		{"agent secret rotated", func(ctx context.Context, i *Issuer) error {
			_, err := i.RotateAgentSecret(ctx, "rt")
			return err
		}},
		{"agent disabled", func(ctx context.Context, i *Issuer) error { return i.DisableAgent(ctx, "rt") }},
		{"agent removed", func(ctx context.Context, i *Issuer) error { return i.DeleteAgent(ctx, "rt") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
			st := &slowUpdateStore{Store: memory.New(memory.Options{Now: clock.Now}), entered: make(chan struct{}), release: make(chan struct{})}
			e := newTokEnvStore(t, st, clock)
			ctx := t.Context()
			if err := e.iss.PutAgent(ctx, Agent{ID: "rt", SecretHash: hashClientSecret("first"), Scopes: []string{"read", "write"}, MaxDepth: 2}); err != nil {
				t.Fatal(err)
			}
			user := e.userToken(t, tPublic, "read")
			actor := e.agentToken(t, "rt", "first")
			// Control: the exchange works.
			if a := e.tokenExchange(t, "rt:first", exchangeForm(user.AccessToken, actor)); a.status != http.StatusOK {
				t.Fatalf("control exchange = %d %s", a.status, a.raw)
			}
			clock.Advance(time.Minute)

			st.armed.Store(true)
			revoked := make(chan error, 1)
			go func() { revoked <- tt.revoke(context.Background(), e.iss) }()
			<-st.entered
			clock.Advance(time.Millisecond)
			e.iss.mint.beforeRecord = func() {
				e.iss.mint.beforeRecord = nil
				close(st.release)
				if err := <-revoked; err != nil {
					t.Errorf("revoke: %v", err)
				}
			}
			if a := e.tokenExchange(t, "rt:first", exchangeForm(user.AccessToken, actor)); a.status == http.StatusOK {
				t.Errorf("exchange by agent rt with its old credentials, recorded after the change committed: 200, a token was issued (want refused)")
			}
		})
	}
}

// commitHeldStore holds, once armed, the next Update that writes a user
// after its work is done and before it commits, until released: a
// password change whose transaction took its time stamp and then waits
// (for a row lock, a slow disk, a synchronous standby) before it
// commits. Readers go on reading the old record meanwhile, as bbolt's
// and PostgreSQL's do.
type commitHeldStore struct {
	store.Store
	armed   atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func (s *commitHeldStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error {
		w := &userWriteTx{Tx: tx}
		if err := fn(w); err != nil {
			return err
		}
		if w.wrote && s.armed.CompareAndSwap(true, false) {
			close(s.held)
			<-s.release
		}
		return nil
	})
}

// userWriteTx notes a write of a user.
type userWriteTx struct {
	store.Tx
	wrote bool
}

func (t *userWriteTx) Put(bucket, key string, value []byte, expires time.Time) error {
	t.wrote = t.wrote || bucket == bucketUsers
	return t.Tx.Put(bucket, key, value, expires)
}

// TestLoginStraddlingPasswordChange: a sign-in that checked the old
// password while the password change was committing, and began after
// the change took its time stamp (on PostgreSQL the change's transaction
// may then wait seconds for a lock; an instance whose clock is ahead
// begins every sign-in "after" it), starts no session: its session's
// transaction reads the user's password hash again, as a token request
// reads its client's credentials again (TestRevocationStampedBeforeItCommits).
// Before, the time stamp let it through, and the old password held a
// session, and the codes and grants drawn from it, past the change.
func TestLoginStraddlingPasswordChange(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	bst, err := bolt.Open(filepath.Join(t.TempDir(), "auth.db"), bolt.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bst.Close() })
	st := &commitHeldStore{Store: bst, held: make(chan struct{}), release: make(chan struct{})}
	e := newTokEnvStore(t, st, clock)
	ctx := t.Context()
	if err := e.iss.PutUser(ctx, User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	newHash, err := bcrypt.GenerateFromPassword([]byte("dave's new password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	attempt := e.prepareLogin(t, "198.51.100.20:4000")

	st.armed.Store(true)
	changed := make(chan error, 1)
	go func() { changed <- e.iss.SetPassword(context.Background(), "dave", string(newHash)) }()
	<-st.held // stamped, not committed
	clock.Advance(time.Second)
	hashed := e.iss.hashes.runs.Load()
	login := make(chan *httptest.ResponseRecorder, 1)
	go func() { login <- e.submit(attempt, "dave", tPassword) }()
	for deadline := time.Now().Add(10 * time.Second); e.iss.hashes.runs.Load() == hashed; {
		if time.Now().After(deadline) {
			t.Fatal("the sign-in did not check the password")
		}
		time.Sleep(time.Millisecond)
	}
	// The sign-in read the old hash and checks it; the change commits.
	close(st.release)
	if err := <-changed; err != nil {
		t.Fatal(err)
	}
	w := <-login
	if w.Code == http.StatusSeeOther {
		t.Fatalf("sign-in with the password the change replaced, checked while it committed = %d (to %s), want refused",
			w.Code, w.Header().Get("Location"))
	}
	if w.Code != http.StatusUnauthorized {
		t.Errorf("sign-in with the replaced password = %d, want 401", w.Code)
	}
	if n := e.count(bucketSessions); n != 1 {
		t.Errorf("sessions = %d, want the anonymous one only", n)
	}
	// Afterwards the new password signs in, the old one does not.
	if w := e.submit(e.prepareLogin(t, "198.51.100.21:4000"), "dave", tPassword); w.Code != http.StatusUnauthorized {
		t.Errorf("old password after the change = %d, want 401", w.Code)
	}
	if w := e.submit(e.prepareLogin(t, "198.51.100.22:4000"), "dave", "dave's new password"); w.Code != http.StatusSeeOther {
		t.Errorf("new password after the change = %d, want 303", w.Code)
	}
}

// TestLoginStraddlingPasswordChangeAcrossInstances: two instances on one
// PostgreSQL database, B's clock 2 s ahead of A's (within the 5 s
// README asks instances to agree to). A sign-in at B checks the old
// password; the password changes at A before B's sign-in stores its
// session. B's sign-in began, by B's clock, after the change's time
// stamp, by A's: the stamp did not refuse it. The session's transaction
// reads the user's hash again, which refuses it whatever the clocks.
func TestLoginStraddlingPasswordChangeAcrossInstances(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	a := postgresEnv(t, dsn, clock)
	pg, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	st := &slowUpdateStore{Store: pg, entered: make(chan struct{}), release: make(chan struct{})}
	b := newTokEnvStore(t, st, clock, func(c *Config) { c.Now = func() time.Time { return clock.Now().Add(2 * time.Second) } })
	ctx := t.Context()
	if err := a.iss.PutUser(ctx, User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	attempt := b.prepareLogin(t, "198.51.100.20:4000")

	// B's next write is the session's: the password is checked by then.
	st.armed.Store(true)
	login := make(chan *httptest.ResponseRecorder, 1)
	go func() { login <- b.submit(attempt, "dave", tPassword) }()
	<-st.entered
	clock.Advance(500 * time.Millisecond)
	if err := a.iss.SetPassword(ctx, "dave", secretHash()); err != nil {
		t.Fatal(err)
	}
	close(st.release)
	if w := <-login; w.Code != http.StatusUnauthorized {
		t.Errorf("sign-in at B with the password changed at A while it ran = %d (to %s), want 401",
			w.Code, w.Header().Get("Location"))
	}
	if w := b.submit(b.prepareLogin(t, "198.51.100.21:4000"), "dave", tSecret); w.Code != http.StatusSeeOther {
		t.Errorf("new password at B = %d, want 303", w.Code)
	}
}

// TestCodeOfLoginBeforePasswordChangeAcrossInstances: dave signs in at
// B, whose clock is 2 s ahead of A's (within the 5 s README asks
// instances to agree to), and gets a code; a second later his password
// is changed at A. The change's time stamp, by A's clock, is before the
// sign-in, by B's, so it did not refuse the code's redemption: whoever held the old password kept a
// grant past its change. The code records the tag of the password its
// sign-in checked, which its redemption reads again; a code of a sign-in
// with the new password redeems.
func TestCodeOfLoginBeforePasswordChangeAcrossInstances(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	a := postgresEnv(t, dsn, clock)
	b := postgresEnv(t, dsn, clock, func(c *Config) { c.Now = func() time.Time { return clock.Now().Add(2 * time.Second) } })
	if err := a.iss.PutUser(t.Context(), User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"staff"}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	codeAt := func(e *testEnv, password string) (code, verifier string) {
		t.Helper()
		verifier = oauth2.GenerateVerifier()
		p := url.Values{"response_type": {"code"}, "client_id": {tPublic}, "redirect_uri": {tRedirect},
			"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
			"resource": {tResource}, "scope": {"read"}, "state": {"s"}}
		to, err := e.robot(e.browser(), e.url(pathAuthorize, p), tRedirect, "dave", password, "approve")
		if err != nil {
			t.Fatal(err)
		}
		if code = to.Query().Get("code"); code == "" {
			t.Fatalf("redirect %s carries no code", to)
		}
		return code, verifier
	}
	code, verifier := codeAt(b, tPassword)
	clock.Advance(time.Second)
	if err := a.iss.SetPassword(t.Context(), "dave", secretHash()); err != nil {
		t.Fatal(err)
	}
	// Each instance has its own issuer URL here: B redeems its codes.
	if status, got := tokenAnswer(b.exchange(t, tPublic, "", code, verifier)); status != http.StatusBadRequest || got != "invalid_grant" {
		t.Errorf("code of a sign-in with the password changed since = %d %s, want 400 invalid_grant", status, errorCodeOnly(status, got))
	}
	code, verifier = codeAt(b, tSecret)
	if _, err := b.exchange(t, tPublic, "", code, verifier); err != nil {
		t.Errorf("code of a sign-in with the new password: %v", err)
	}
}

// connectionHeldStore holds, once armed, the next Update that stamps a
// connection (revokeConnection) after its work is done and before it
// commits, until released.
type connectionHeldStore struct {
	store.Store
	armed   atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func (s *connectionHeldStore) Update(ctx context.Context, fn func(store.Tx) error) error {
	return s.Store.Update(ctx, func(tx store.Tx) error {
		w := &stampTx{Tx: tx}
		if err := fn(w); err != nil {
			return err
		}
		if w.stamped && s.armed.CompareAndSwap(true, false) {
			close(s.held)
			<-s.release
		}
		return nil
	})
}

// stampTx notes a connection's stamp.
type stampTx struct {
	store.Tx
	stamped bool
}

func (t *stampTx) Put(bucket, key string, value []byte, expires time.Time) error {
	t.stamped = t.stamped || bucket == bucketEpochs && strings.HasPrefix(key, "connection:")
	return t.Tx.Put(bucket, key, value, expires)
}

// TestCodeIssuedWhileConnectionRevokedCommits: on PostgreSQL, a code
// issued on the user's remembered consent while the user's revocation
// of the connection (the apps page) is committing, after it took its
// time stamp, commits first: its transaction read the consent the
// revocation deletes, which serializes it before the revocation. Its
// time, after the stamp, did not refuse it: the client redeemed it and
// was connected again after the user cut it off.
func TestCodeIssuedWhileConnectionRevokedCommits(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	pg, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	st := &connectionHeldStore{Store: pg, held: make(chan struct{}), release: make(chan struct{})}
	e := newTokEnvStore(t, st, clock)
	ctx := t.Context()
	err = e.store.Update(ctx, func(tx store.Tx) error {
		return consentsIn(tx).add(tUser, tConf, tResource, "", []string{"read"}, "", clock.Now(), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	c, err := e.iss.dir.lookupClient(ctx, tConf)
	if err != nil {
		t.Fatal(err)
	}

	st.armed.Store(true)
	revoked := make(chan error, 1)
	go func() { revoked <- e.iss.revokeConnection(context.Background(), tUser, tConf, tResource, "") }()
	<-st.held // stamped, not committed
	clock.Advance(time.Second)
	verifier := oauth2.GenerateVerifier()
	ar := &authRequest{ClientID: tConf, RedirectURI: tRedirect, RedirectParam: tRedirect,
		CodeChallenge: oauth2.S256ChallengeFromVerifier(verifier), CodeChallengeMethod: "S256"}
	s := &session{Browser: "b", User: tUser, AuthTime: clock.Now().Add(-30 * time.Second)}
	code, err := e.iss.issueCode(ctx, s, c, ar, "", tResource, []string{"read"}, false)
	close(st.release)
	if rerr := <-revoked; rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatalf("code issued while the revocation committed: %v", err)
	}
	if status, got := tokenAnswer(e.exchange(t, tConf, tSecret, code, verifier)); status != http.StatusBadRequest || got != "invalid_grant" {
		t.Errorf("code issued on the consent the user was revoking = %d %s, want 400 invalid_grant", status, errorCodeOnly(status, got))
	}
	// The user approves the app again: that code redeems.
	clock.Advance(time.Second)
	if code, err = e.iss.issueCode(ctx, s, c, ar, "", tResource, []string{"read"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.exchange(t, tConf, tSecret, code, verifier); err != nil {
		t.Errorf("code of an approval after the revocation: %v", err)
	}
}

// errorCodeOnly is tokenAnswer's error code, never the token a 200 gives.
func errorCodeOnly(status int, got string) string {
	if status == http.StatusOK {
		return "(a token)"
	}
	return got
}

// TestIdPCodeRedeemedWhileUserDisabledAcrossInstances: a user of an
// identity provider signs in at B, whose clock is 2 s ahead of A's
// (within the 5 s README asks instances to agree to), and gets a code;
// B's redemption has read the user, still enabled, when the operator
// disables the user at A, and records its grant after the disable
// commits. The disable's time stamp, by A's clock, is before the
// sign-in, by B's, so it did not refuse the code, and the grant,
// recorded after the disable revoked the user's grants, gave tokens
// to a disabled user. Such a user has no password whose tag the code
// could record (TestCodeOfLoginBeforePasswordChangeAcrossInstances):
// the redemption reads the stored user again in its transaction.
func TestIdPCodeRedeemedWhileUserDisabledAcrossInstances(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	open := func() store.Store {
		t.Helper()
		pg, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pg.Close() })
		return pg
	}
	a := newBrowserEnvStore(t, open(), clock, nil)
	st := &slowUpdateStore{Store: open(), entered: make(chan struct{}), release: make(chan struct{})}
	b := newBrowserEnvStore(t, st, clock, func(c *Config) {
		c.Now = func() time.Time { return clock.Now().Add(2 * time.Second) }
		stub := newStubIdP(t, c.Now)
		c.IdentityProviders = []IdentityProvider{{Name: stubIdPName, Issuer: stub.srv.URL, ClientID: "mcp-auth", ClientSecret: "stub-secret",
			GroupMap: map[string][]string{"eng": {"staff"}}, AllowedEmailDomains: []string{"corp.example"}}}
	})
	const name = stubIdPName + ":u-1"
	clock.Advance(time.Minute)
	codeAt := func() (code, verifier string) {
		t.Helper()
		verifier = oauth2.GenerateVerifier()
		c := b.browser()
		res := b.idpSignInWith(t, c, url.Values{"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}})
		if res.status != http.StatusSeeOther {
			t.Fatalf("sign-in at B = %d %q, want 303", res.status, res.body)
		}
		to, err := b.robot(c, b.srv.URL+res.location, bRedirect, "", "", "approve")
		if err != nil {
			t.Fatal(err)
		}
		if code = to.Query().Get("code"); code == "" {
			t.Fatalf("redirect %s carries no code", to)
		}
		return code, verifier
	}
	redeem := func(code, verifier string) *http.Response {
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {bRedirect},
			"client_id": {bClientID}, "code_verifier": {verifier}}
		resp, err := http.PostForm(b.srv.URL+pathToken, form)
		if err != nil {
			t.Error(err)
			return nil
		}
		return resp
	}
	code, verifier := codeAt()

	// B's next write is the redemption's: the user is read by then.
	st.armed.Store(true)
	answered := make(chan *http.Response, 1)
	go func() { answered <- redeem(code, verifier) }()
	<-st.entered
	clock.Advance(500 * time.Millisecond)
	if err := a.iss.DisableUser(t.Context(), name); err != nil {
		t.Fatal(err)
	}
	close(st.release)
	resp := <-answered
	if resp == nil {
		t.FailNow()
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid_grant") {
		t.Errorf("code of %s redeemed at B while A disabled the user = %d %s, want 400 invalid_grant", name, resp.StatusCode, body)
	}
	var grants int
	err := b.store.View(t.Context(), func(tx store.Tx) error {
		return grantsIn(tx).t.list("", func(_ string, g *grant) error {
			if g.Subject == name && !g.Revoked {
				grants++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if grants != 0 {
		t.Errorf("grants of the disabled user = %d, want none", grants)
	}
}

// TestCodeToRemovedRedirectURIAcrossInstances: a code is issued at B,
// whose clock is 2 s ahead of A's (within the 5 s README asks instances
// to agree to), to a redirect URI the client's registration loses at A
// while B redeems the code: B's redemption read the client before the
// update committed and records after it. The update's time stamp, by
// A's clock, is before the code's issue, by B's, so it did not refuse
// the code: a code sent to the redirect URI the operator took away
// (its host lost, say) gave tokens. The redemption's transaction reads
// the stored client's redirect URIs again.
func TestCodeToRemovedRedirectURIAcrossInstances(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	a := postgresEnv(t, dsn, clock)
	pg, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	st := &slowUpdateStore{Store: pg, entered: make(chan struct{}), release: make(chan struct{})}
	b := newTokEnvStore(t, st, clock, func(c *Config) { c.Now = func() time.Time { return clock.Now().Add(2 * time.Second) } })
	ctx := t.Context()
	for _, err := range []error{
		a.iss.PutClient(ctx, Client{ID: "app", TokenEndpointAuthMethod: authNone, RedirectURIs: []string{tRedirect, appRedirect}, Scopes: []string{"read"}}),
		a.iss.PutUser(ctx, User{Username: "dave", PasswordHash: passwordHash(), Groups: []string{"staff"}}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Minute)
	verifier := oauth2.GenerateVerifier()
	p := url.Values{"response_type": {"code"}, "client_id": {"app"}, "redirect_uri": {tRedirect},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
		"resource": {tResource}, "scope": {"read"}, "state": {"s"}}
	to, err := b.robot(b.browser(), b.url(pathAuthorize, p), tRedirect, "dave", tPassword, "approve")
	if err != nil {
		t.Fatal(err)
	}
	code := to.Query().Get("code")
	if code == "" {
		t.Fatalf("redirect %s carries no code", to)
	}

	// B's next write is the redemption's: the client is read by then.
	st.armed.Store(true)
	type result struct {
		tok *oauth2.Token
		err error
	}
	redeemed := make(chan result, 1)
	go func() {
		tok, err := b.exchange(t, "app", "", code, verifier)
		redeemed <- result{tok, err}
	}()
	<-st.entered
	clock.Advance(500 * time.Millisecond)
	runAPI(t, adminServer(t, a.iss), apiCase{"update", "PUT", "/mcp-auth/clients/app",
		`{"public":true,"client_name":"App","redirect_uris":["` + appRedirect + `"],"scopes":["read"]}`, http.StatusOK, ""})
	close(st.release)
	r := <-redeemed
	if status, got := tokenAnswer(r.tok, r.err); status != http.StatusBadRequest || got != "invalid_grant" {
		t.Errorf("code sent to %s, redeemed at B while A removed it = %d %s, want 400 invalid_grant", tRedirect, status, errorCodeOnly(status, got))
	}
}

// TestDelegatedCodeWhileAgentDisabledAcrossInstances: a code delegating
// to a stored agent (requested_actor) is issued at B, whose clock is 2 s
// ahead of A's (within the 5 s README asks instances to agree to), and
// redeemed at B with the agent's own token as actor_token while the
// operator disables the agent at A: B's redemption verified the actor
// token and read the agent before the disable committed, and records
// after it. The disable's time stamp, by A's clock, is before the
// code's issue, by B's, so it did not refuse the code, and the user's
// delegation to the disabled agent was created after the disable's
// scan revoked the agent's. The redemption's transaction reads the
// actor token's revocation (the disable revoked the agent's own
// tokens) again.
func TestDelegatedCodeWhileAgentDisabledAcrossInstances(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	a := postgresEnv(t, dsn, clock)
	pg, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	st := &slowUpdateStore{Store: pg, entered: make(chan struct{}), release: make(chan struct{})}
	b := newTokEnvStore(t, st, clock, func(c *Config) { c.Now = func() time.Time { return clock.Now().Add(2 * time.Second) } })
	if err := a.iss.PutAgent(t.Context(), Agent{ID: "rt", SecretHash: hashClientSecret("first"), Scopes: []string{"read"}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	actor := b.agentToken(t, "rt", "first")
	code, verifier := b.issueCode(t, codeSpec{actor: "rt", scopes: []string{"read"}, at: b.iss.now()})

	// B's next write is the redemption's: the actor token and the agent
	// are read by then.
	st.armed.Store(true)
	type result struct {
		tok *oauth2.Token
		err error
	}
	redeemed := make(chan result, 1)
	go func() {
		tok, err := b.exchange(t, tPublic, "", code, verifier,
			oauth2.SetAuthURLParam("actor_token", actor), oauth2.SetAuthURLParam("actor_token_type", tokenTypeAccessToken))
		redeemed <- result{tok, err}
	}()
	<-st.entered
	clock.Advance(500 * time.Millisecond)
	if err := a.iss.DisableAgent(t.Context(), "rt"); err != nil {
		t.Fatal(err)
	}
	close(st.release)
	r := <-redeemed
	if status, got := tokenAnswer(r.tok, r.err); status != http.StatusBadRequest || got != "invalid_grant" {
		t.Errorf("code delegating to rt, redeemed at B while A disabled rt = %d %s, want 400 invalid_grant", status, errorCodeOnly(status, got))
	}
}

// TestIdPRemovedAtAnotherInstanceCodeRefused: a reload that removes an
// identity provider reaches A first, in a cluster whose instances share
// one issuer URL; B, whose clock is 2 s ahead of A's (within the 5 s
// README asks instances to agree to), still runs the configuration with
// the provider. A code of the provider's user, from a sign-in at B a
// moment before the reload, redeemed at B after it, was not refused: the
// reload's stamp of the provider's users, by A's clock, is before the
// sign-in, by B's, and B's configuration still declares the provider,
// which nothing compared with the configuration applied (as a lagging
// instance's sign-ins are: mayProvision). The grant, recorded after the
// reload revoked the users' grants, outlived the provider's removal, and
// B's own reload, which takes nothing more away, would not revoke it.
func TestIdPRemovedAtAnotherInstanceCodeRefused(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	open := func() store.Store {
		t.Helper()
		pg, err := postgres.Open(t.Context(), dsn, postgres.Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pg.Close() })
		return pg
	}
	ctx := t.Context()
	stub := newStubIdP(t, clock.Now)
	var declared Config
	b := newBrowserEnvStore(t, open(), clock, func(c *Config) {
		c.Now = func() time.Time { return clock.Now().Add(2 * time.Second) }
		c.IdentityProviders = []IdentityProvider{{Name: stubIdPName, Issuer: stub.srv.URL, ClientID: "mcp-auth", ClientSecret: "stub-secret",
			GroupMap: map[string][]string{"eng": {"staff"}}, AllowedEmailDomains: []string{"corp.example"}}}
		declared = *c
	})
	if err := b.iss.ApplyConfigChanges(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	verifier := oauth2.GenerateVerifier()
	c := b.browser()
	res := b.idpSignInWith(t, c, url.Values{"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}})
	if res.status != http.StatusSeeOther {
		t.Fatalf("sign-in at B = %d %q, want 303", res.status, res.body)
	}
	to, err := b.robot(c, b.srv.URL+res.location, bRedirect, "", "", "approve")
	if err != nil {
		t.Fatal(err)
	}
	code := to.Query().Get("code")
	if code == "" {
		t.Fatalf("redirect %s carries no code", to)
	}

	// The reload reaches A: the same configuration, without the provider.
	clock.Advance(500 * time.Millisecond)
	reloaded := declared
	reloaded.Now, reloaded.IdentityProviders = clock.Now, nil
	a := newEnv(t, open(), clock)
	a.serve(reloaded)
	if err := a.iss.ApplyConfigChanges(ctx); err != nil {
		t.Fatal(err)
	}
	a2 := b.post(t, pathToken, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {bRedirect},
		"client_id": {bClientID}, "code_verifier": {verifier}}, "")
	if a2.status != http.StatusBadRequest || a2.str("error") != "invalid_grant" {
		t.Errorf("code of the removed provider's user, redeemed at B = %d %s, want 400 invalid_grant", a2.status, a2.str("error"))
	}
}

// TestConnectionRevokedAgainAtInstanceBehind: the user revokes an app's
// connection at B, approves the app again there, and revokes it again a
// moment later at A, whose clock is 2 s behind B's (within the 5 s
// README asks instances to agree to). The second revocation's time, by
// A's clock, was not after the first's, by B's, so it left the
// connection's stamp as it was: the code of the approval in between,
// which recorded that stamp (conn) and was issued after it, was
// redeemed, and the app reconnected itself after the user cut it off
// again. A revocation now always changes the stamp.
func TestConnectionRevokedAgainAtInstanceBehind(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	a := postgresEnv(t, dsn, clock)
	b := postgresEnv(t, dsn, clock, func(c *Config) { c.Now = func() time.Time { return clock.Now().Add(2 * time.Second) } })
	ctx := t.Context()
	clock.Advance(time.Minute)
	c, err := b.iss.dir.lookupClient(ctx, tConf)
	if err != nil {
		t.Fatal(err)
	}
	verifier := oauth2.GenerateVerifier()
	ar := &authRequest{ClientID: tConf, RedirectURI: tRedirect, RedirectParam: tRedirect,
		CodeChallenge: oauth2.S256ChallengeFromVerifier(verifier), CodeChallengeMethod: "S256"}
	s := &session{Browser: "b", User: tUser, AuthTime: b.iss.now()}
	if _, err := b.iss.issueCode(ctx, s, c, ar, "", tResource, []string{"read"}, true); err != nil {
		t.Fatal(err)
	}
	clock.Advance(100 * time.Millisecond)
	if err := b.iss.revokeConnection(ctx, tUser, tConf, tResource, ""); err != nil {
		t.Fatal(err)
	}
	clock.Advance(100 * time.Millisecond)
	code, err := b.iss.issueCode(ctx, s, c, ar, "", tResource, []string{"read"}, true)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(100 * time.Millisecond)
	if err := a.iss.revokeConnection(ctx, tUser, tConf, tResource, ""); err != nil {
		t.Fatal(err)
	}
	if status, got := tokenAnswer(b.exchange(t, tConf, tSecret, code, verifier)); status != http.StatusBadRequest || got != "invalid_grant" {
		t.Errorf("code of an approval between two revocations of the connection = %d %s, want 400 invalid_grant", status, errorCodeOnly(status, got))
	}
	// The user approves the app again: that code redeems.
	clock.Advance(time.Second)
	if code, err = b.iss.issueCode(ctx, s, c, ar, "", tResource, []string{"read"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.exchange(t, tConf, tSecret, code, verifier); err != nil {
		t.Errorf("code of an approval after the revocations: %v", err)
	}
}
