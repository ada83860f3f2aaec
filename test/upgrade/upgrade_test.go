// Package upgrade runs the previous release's binary on a store, stops
// it, and starts this version's on the same store, checking that what a
// deployment holds keeps working. It needs the previous release's binary
// (CI_UPGRADE_FROM, a path), which it otherwise builds from the commit
// previousRelease of this repository (harness.BuildRelease).
package upgrade

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/postgres/pgtest"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

const (
	redirectURI = "http://127.0.0.1/callback"
	webRedirect = "https://web.example/cb"
	password    = "upgrade password, never logged"
)

// TestMain stops the PostgreSQL server the postgres case starts.
func TestMain(m *testing.M) { pgtest.Main(m) }

// TestUpgradeFromPreviousRelease: the previous release makes users
// (configured and through the admin API), clients (a configured one, an
// admin one, a self-registered one, and a private_key_jwt one with
// token_endpoint_auth_signing_alg; client metadata document clients), an
// agent (the legacy release: the admin client with "scopes": [] and
// "resources": [], the agent with "allowed_clients": [] and "scopes": [],
// the self-registered client and a metadata document with
// userinfo_signed_response_alg, which later releases refuse), a withdrawn signing
// key, a sign-in session, a consented grant with a refresh token, a
// remembered consent, a delegation to the agent (act) with a refresh
// token, a grant revoked through its refresh token, a key rotated in,
// tool pins, a client credentials token, and a client metadata document
// on loopback cached for a day with cimd_allow_private on. This release then opens the same store: on a
// bbolt file after the previous release stopped; on PostgreSQL first
// beside the previous release (a rolling upgrade: each refreshes what the
// other issued, and each's tokens pass the other's gateway), then alone.
// Access tokens still pass the gateway, the refresh tokens refresh (the
// delegated one still acting as the agent), the session still signs the
// user in, the consent stands, the self-registered clients still get
// tokens, the metadata document asking for signed userinfo answers is
// refused at its next fetch, naming the member, the revoked grant stays
// revoked, the rotated key stays published and the withdrawn one
// unpublished, the pins stand, and every entry is still there. The admin
// entries sent with [] read as they were stored, with no list: the
// previous release stored [] as left out, the same bytes as no
// restriction, so no version can tell them apart; their GET shows no
// list, which is how an operator finds them (README, Upgrading). This
// release restarted without cimd_allow_private then refuses the cached
// document, which the previous release kept with no mark of the option.
// In flight across the switch: a code the previous release issued is
// redeemed by this one; beside it on PostgreSQL, a token this release
// exchanges with the agent's token as actor_token ends when the agent
// revokes that token at the previous release, and a client metadata
// document's private_key_jwt client made public keeps only the grants
// this release last rotated bound to its key. Back on the bbolt file
// (a downgrade after a failed upgrade), the previous release redeems a
// code this one issued (with its password tag and connection stamp),
// refreshes its refresh token and takes its session. On the way, each
// release's bbolt file is copied into PostgreSQL by the other's
// migrate-storage (this release's of the previous release's file, and
// back), and the copy serves the other's tokens, keys and users.
//
// The test runs from two releases: the previous one, and 0c11651, the
// last before a release that changed what such a store means (empty
// lists, userinfo_signed_response_alg, token_endpoint_auth_signing_alg),
// whose upgrade path README's Upgrading describes. From the previous
// release those entries cannot be made (it refuses them) and its rolling
// rewrite keeps token_endpoint_auth_signing_alg.
const (
	// previousRelease is the commit of the last release: move it on at each.
	previousRelease = "5faccfa"
	// legacyRelease stored [] as no list and kept neither alg member.
	legacyRelease = "0c11651"
)

func TestUpgradeFromPreviousRelease(t *testing.T) {
	for _, rev := range []string{previousRelease, legacyRelease} {
		t.Run(rev, func(t *testing.T) { testUpgradeFrom(t, rev) })
	}
}

func testUpgradeFrom(t *testing.T, rev string) {
	legacy := rev == legacyRelease
	old := os.Getenv("CI_UPGRADE_FROM")
	if old == "" || legacy {
		var err error
		if old, err = harness.BuildRelease(t.TempDir(), rev); err != nil {
			t.Fatal(err)
		}
	}
	bin := os.Getenv("CI_UPGRADE_TO")
	if bin == "" {
		var err error
		if bin, err = harness.BuildCaddy(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("bolt", func(t *testing.T) {
		d := deploy(t, old, legacy, func(home string) string { return "bolt " + filepath.Join(home, "store.db") })
		d.before(t)
		d.p.Stop()
		// The previous release's file, copied into PostgreSQL by this
		// release's migrate-storage, and this release's, by the
		// previous release's (moving while going back).
		d.migrated(t, bin, bin)
		d.p = d.start(t, bin, d.port, d.admin)
		d.after(t)
		d.privateCacheDropped(t, bin)
		if !legacy {
			d.p.Stop()
			d.migrated(t, old, old)
			d.p = d.start(t, bin, d.port, d.admin)
			d.downgrade(t, old)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.NewDatabase(t)
		d := deploy(t, old, legacy, func(string) string { return "postgres \"" + dsn + "\"" })
		d.before(t)
		// A rolling upgrade: this release beside the previous one.
		pb, nbAdmin := harness.FreePort(t), harness.FreePort(t)
		nb := d.start(t, bin, pb, nbAdmin)
		atNew := fmt.Sprintf("http://127.0.0.1:%d", pb)
		rt, userAT := d.tok.RefreshToken, ""
		for i, at := range []string{atNew, d.issuer, atNew} {
			r := refresh(t, d.ctx, at, "app", rt, d.resource)
			if r.Status != http.StatusOK || r.RefreshToken == "" {
				t.Fatalf("refresh %d at %s of the other's refresh token = %+v", i, at, r)
			}
			rt, userAT = r.RefreshToken, r.AccessToken
			for _, gw := range []string{d.issuer, atNew} {
				if code := call(t, d.ctx, gw+"/mcp", r.AccessToken); code != http.StatusOK {
					t.Errorf("a token refreshed at %s, at the gateway of %s = %d, want 200", at, gw, code)
				}
			}
		}
		d.tok.RefreshToken = rt
		// A token exchanged at this release's instance with the agent's
		// own token as actor_token, which the agent then revokes at the
		// previous release's: that one's revocation ends the tokens
		// recorded under the revoked one (derived), where this release
		// records the exchange now. (The legacy release's revocation of
		// an access token ended that token alone.)
		if !legacy {
			revokeActorAtOld(t, d, atNew, userAT)
			revokeDelegationActorAtOld(t, d, atNew)
		}
		// A client metadata document's private_key_jwt client whose
		// document then says none: which of its grants this release
		// refuses a refresh without the key (README, Upgrading).
		documentMadePublic(t, d, atNew)
		for _, gw := range []string{d.issuer, atNew} {
			if code := call(t, d.ctx, gw+"/mcp", d.cc); code != http.StatusOK {
				t.Errorf("the previous release's client credentials token at %s = %d, want 200", gw, code)
			}
		}
		// A browser and a client whose requests go to either instance in
		// turn, as behind a balancer: bob (added through the previous
		// release's admin API) signs in, consents, redeems and refreshes,
		// each step at the other release than the one before.
		oldAddr, newAddr := fmt.Sprintf("127.0.0.1:%d", d.port), fmt.Sprintf("127.0.0.1:%d", pb)
		alt := &alternate{addrs: []string{oldAddr, newAddr}}
		altCtx := context.WithValue(d.ctx, oauth2.HTTPClient, &http.Client{Transport: alt})
		// This release's pages carry the CSRF token masked, which the
		// previous release takes and the legacy one refuses (README,
		// Upgrading): there the browser stays on one instance.
		maskedFormAtOld(t, d, oldAddr, newAddr, legacy)
		browser := http.RoundTripper(alt)
		if legacy {
			browser = &alternate{addrs: []string{newAddr}}
		}
		for _, cfg := range []*oauth2.Config{d.md.Config("app", redirectURI, "notes:read", "offline_access"), d.web, d.web} {
			r := harness.NewRobot("bob", password, cfg.RedirectURL)
			r.Client.Transport = browser
			ar := harness.NewAuthRequest(cfg, d.resource)
			q, err := r.Authorize(d.ctx, ar.URL)
			if err != nil || q.Get("code") == "" {
				t.Fatalf("%s: authorize alternately = %v, %v", cfg.ClientID, q, err)
			}
			tok, err := ar.Exchange(altCtx, cfg, q.Get("code"))
			if err != nil {
				t.Fatalf("%s: redeem alternately: %v", cfg.ClientID, err)
			}
			for range 3 {
				if tok.RefreshToken == "" {
					break
				}
				if tok, err = cfg.TokenSource(altCtx, &oauth2.Token{RefreshToken: tok.RefreshToken}).Token(); err != nil {
					t.Fatalf("%s: refresh alternately: %v", cfg.ClientID, err)
				}
			}
			for _, gw := range []string{d.issuer, atNew} {
				if code := call(t, d.ctx, gw+"/mcp", tok.AccessToken); code != http.StatusOK {
					t.Errorf("%s: bob's token, got alternately, at the gateway of %s = %d, want 200", cfg.ClientID, gw, code)
				}
			}
		}
		if n, least := alt.n.Load(), map[bool]int32{false: 20, true: 6}[legacy]; n < least {
			t.Fatalf("only %d requests went through the alternating transport, want %d", n, least)
		}

		// A private_key_jwt registration made at this release's instance,
		// whose first token the previous release's instance issues: that
		// rewrites the registration (its expiry) without the
		// token_endpoint_auth_signing_alg it does not know (README,
		// Upgrading).
		kc := registerKeyed(t, d, atNew)
		signingAlg := func() any {
			var v map[string]any
			adminDo(t, d.ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/mcp-auth/clients/%s", nbAdmin, url.PathEscape(kc.id)), "", http.StatusOK, &v)
			return v["token_endpoint_auth_signing_alg"]
		}
		if alg := signingAlg(); alg != "ES256" {
			t.Fatalf("registered at this release: token_endpoint_auth_signing_alg %v, want ES256", alg)
		}
		kc.token(t, d, d.issuer)
		if alg := signingAlg(); legacy && alg != nil {
			t.Errorf("after %s issued the client's first token: token_endpoint_auth_signing_alg %v; the README says an earlier version's rewrite drops it", rev, alg)
		} else if !legacy && alg != "ES256" {
			t.Errorf("after %s issued the client's first token: token_endpoint_auth_signing_alg %v, want ES256 kept", rev, alg)
		}
		d.p.Stop()
		nb.Stop()
		d.p = d.start(t, bin, d.port, d.admin)
		d.after(t)
		d.privateCacheDropped(t, bin)
	})
}

// maskedFormAtOld: bob's sign-in page, served by this release's
// instance (newAddr) with its CSRF token masked, posted to the previous
// release's (oldAddr), as a balancer may send them: the previous release
// signs him in and shows the consent page; the legacy one, which compares
// the token as stored, refuses the form 403 "Form expired" (README,
// Upgrading). From the previous release, the three other pages README
// says carry it masked, each served by this release, are posted to the
// previous one too: the consent page approves (a code), the connected
// apps page revokes bob's connection, the sign-out page signs him out.
func maskedFormAtOld(t *testing.T, d *deployment, oldAddr, newAddr string, legacy bool) {
	t.Helper()
	cfg := d.md.Config("app", redirectURI, "notes:read", "offline_access")
	r := harness.NewRobot("bob", password, cfg.RedirectURL)
	r.Client.Transport = &alternate{addrs: []string{newAddr}}
	page, err := r.Get(d.ctx, harness.NewAuthRequest(cfg, d.resource).URL)
	if err != nil {
		t.Fatal(err)
	}
	form := page.Form("login")
	if form == nil {
		t.Fatalf("this release's sign-in page (status %d) has no login form: %.300s", page.Status, page.Text())
	}
	r.Client.Transport = &alternate{addrs: []string{oldAddr}}
	resp, err := r.Submit(d.ctx, page, form, url.Values{"username": {"bob"}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := harness.ReadPage(resp)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case legacy && (got.Status != http.StatusForbidden || !strings.Contains(got.Text(), "Form expired")):
		t.Errorf("this release's sign-in form posted to %s = %d %.200s, want 403 Form expired", legacyRelease, got.Status, got.Text())
	case !legacy && (got.Status != http.StatusOK || got.Form("consent") == nil):
		t.Fatalf("this release's sign-in form posted to %s = %d %.200s, want its consent page", previousRelease, got.Status, got.Text())
	}
	if legacy {
		return
	}
	// The other three pages README names, each served by this release
	// (the token masked with a pad of its own) and posted to the
	// previous release: consent, connected apps, sign-out.
	fromNew := func(u string) *harness.Page {
		t.Helper()
		r.Client.Transport = &alternate{addrs: []string{newAddr}}
		p, err := r.Get(d.ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		r.Client.Transport = &alternate{addrs: []string{oldAddr}}
		return p
	}
	page = fromNew(harness.NewAuthRequest(cfg, d.resource).URL)
	if form = page.Form("consent"); form == nil {
		t.Fatalf("this release's consent page (status %d) has no consent form: %.300s", page.Status, page.Text())
	}
	if resp, err = r.Submit(d.ctx, page, form, url.Values{"decision": {"approve"}}); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc, _ := url.Parse(resp.Header.Get("Location")); resp.StatusCode != http.StatusSeeOther || loc == nil || loc.Query().Get("code") == "" {
		t.Errorf("this release's consent form posted to %s = %d, Location %q, want 303 with a code", previousRelease, resp.StatusCode, resp.Header.Get("Location"))
	}
	page = fromNew(d.issuer + "/apps")
	if page.Status != http.StatusOK || len(page.Forms) == 0 {
		t.Fatalf("this release's connected apps page = %d with %d forms, want bob's connection: %.300s", page.Status, len(page.Forms), page.Text())
	}
	if resp, err = r.Submit(d.ctx, page, &page.Forms[0], url.Values{"action": {"revoke"}}); err != nil {
		t.Fatal(err)
	}
	if got, err = harness.ReadPage(resp); err != nil {
		t.Fatal(err)
	}
	if got.Status != http.StatusOK || got.URL.Query().Get("revoked") != "1" {
		t.Errorf("this release's connected apps form posted to %s = %d at %s %.200s, want the connection revoked", previousRelease, got.Status, got.URL, got.Text())
	}
	page = fromNew(d.issuer + "/logout")
	if form = page.Form("logout"); form == nil {
		t.Fatalf("this release's sign-out page (status %d) has no sign-out form: %.300s", page.Status, page.Text())
	}
	if resp, err = r.Submit(d.ctx, page, form, url.Values{"action": {"logout"}}); err != nil {
		t.Fatal(err)
	}
	if got, err = harness.ReadPage(resp); err != nil {
		t.Fatal(err)
	}
	if got.Status != http.StatusOK || strings.Contains(got.Text(), "expired") {
		t.Errorf("this release's sign-out form posted to %s = %d %.200s, want bob signed out", previousRelease, got.Status, got.Text())
	}
	if page = fromNew(d.issuer + "/logout"); page.Form("logout") != nil {
		t.Errorf("after the sign-out at %s, this release still asks bob to sign out: %.200s", previousRelease, page.Text())
	}
}

// revokeActorAtOld: a token exchanged at this release's instance atNew
// with the agent a-empty's own token as actor_token ends when the agent
// revokes that token at the previous release's instance (README,
// Upgrading); the subject token, userAT, stays.
func revokeActorAtOld(t *testing.T, d *deployment, atNew, userAT string) {
	t.Helper()
	actor := clientCredentials(t, d.ctx, atNew+"/token", "a-empty", d.agentSecret, d.resource)
	x := exchange(t, d.ctx, atNew+"/token", "a-empty", d.agentSecret, userAT, actor, d.resource)
	if x.Status != http.StatusOK || x.AccessToken == "" {
		t.Fatalf("token exchange at this release's instance = %+v", x)
	}
	if c, err := harness.Claims(x.AccessToken); err != nil || fmt.Sprint(c["act"]) != "map[sub:a-empty]" {
		t.Fatalf("exchanged token's act = %v, %v", c["act"], err)
	}
	if code := call(t, d.ctx, d.issuer+"/mcp", x.AccessToken); code != http.StatusOK {
		t.Fatalf("the exchanged token at the gateway of %s = %d, want 200", d.issuer, code)
	}
	revokeAs(t, d.ctx, d.issuer+"/revoke", "a-empty", d.agentSecret, actor)
	for _, gw := range []string{d.issuer, atNew} {
		code := 0
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if code = call(t, d.ctx, gw+"/mcp", x.AccessToken); code == http.StatusUnauthorized {
				break
			}
		}
		if code != http.StatusUnauthorized {
			t.Errorf("a token exchanged at this release with an actor token revoked at the previous release, at the gateway of %s = %d, want 401", gw, code)
		}
	}
	if code := call(t, d.ctx, atNew+"/mcp", userAT); code != http.StatusOK {
		t.Errorf("the subject token after its exchange's actor token was revoked = %d, want 200", code)
	}
}

// revokeDelegationActorAtOld: a delegated code (requested_actor)
// redeemed at this release's instance with the agent's own token as
// actor_token, recorded under that token (derived, grantChild), which the
// agent then revokes at the previous release's instance. That one takes
// the grant's record for a token's and writes the grant's marker alone:
// the delegation's access tokens are refused at once, and its refresh
// token is refused by this release's refresh, which ends the grant, so
// that the previous release refuses it too (README, Upgrading).
func revokeDelegationActorAtOld(t *testing.T, d *deployment, atNew string) {
	t.Helper()
	ctx := d.ctx
	actor := clientCredentials(t, ctx, atNew+"/token", "a-empty", d.agentSecret, d.resource)
	cfg := d.md.Config("app", redirectURI, "notes:read", "offline_access")
	cfg.Endpoint.TokenURL = atNew + "/token"
	ar := harness.NewAuthRequest(cfg, d.resource)
	q, err := d.robot.Authorize(ctx, ar.URL+"&requested_actor=a-empty")
	if err != nil || q.Get("code") == "" {
		t.Fatalf("authorize with requested_actor = %v, %v", q, err)
	}
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(ar.Verifier),
		oauth2.SetAuthURLParam("resource", d.resource), oauth2.SetAuthURLParam("actor_token", actor))
	if err != nil || tok.RefreshToken == "" {
		t.Fatalf("delegated code redeemed at this release's instance: %v, %v", tok, err)
	}
	revokeAs(t, ctx, d.issuer+"/revoke", "a-empty", d.agentSecret, actor)
	for _, gw := range []string{d.issuer, atNew} {
		code := 0
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if code = call(t, ctx, gw+"/mcp", tok.AccessToken); code == http.StatusUnauthorized {
				break
			}
		}
		if code != http.StatusUnauthorized {
			t.Errorf("a delegation redeemed at this release with an actor token revoked at the previous release: its access token at the gateway of %s = %d, want 401", gw, code)
		}
	}
	for _, at := range []string{atNew, d.issuer} {
		if r := refresh(t, ctx, at, "app", tok.RefreshToken, d.resource); r.Status != http.StatusBadRequest || r.Error != "invalid_grant" {
			t.Errorf("refresh at %s of a delegation whose actor token the previous release revoked = %d %s, want 400 invalid_grant", at, r.Status, r.Error)
		}
	}
}

// documentMadePublic: a client metadata document client authenticating
// with private_key_jwt gets refresh tokens at both instances of a
// rolling upgrade; its document then says token_endpoint_auth_method
// none. This release refuses a refresh without the key (and ends the
// grant) of a grant whose refresh token it last rotated with the key;
// it refreshes, as README says, a grant the previous release made and
// this one never rotated, and one whose refresh token the previous
// release rotated last, which rewrote the grant without the record.
func documentMadePublic(t *testing.T, d *deployment, atNew string) {
	t.Helper()
	ctx := d.ctx
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwk := map[string]string{"kty": "EC", "crv": "P-256", "kid": "k1",
		"x": b64(key.X.FillBytes(make([]byte, 32))), "y": b64(key.Y.FillBytes(make([]byte, 32)))}
	var public atomic.Bool
	docs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc := map[string]any{"client_id": "http://" + r.Host + r.URL.Path, "client_name": "Keyed CIMD", "redirect_uris": []string{redirectURI},
			"grant_types": []string{"authorization_code", "refresh_token"}, "token_endpoint_auth_method": "private_key_jwt",
			"jwks": map[string]any{"keys": []any{jwk}}}
		if public.Load() {
			doc["token_endpoint_auth_method"] = "none"
			delete(doc, "jwks")
		}
		// Read again at each use: the switch applies at once.
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(docs.Close)
	id := docs.URL + "/keyed.json"
	authn := func(keyed bool) url.Values {
		if !keyed {
			return url.Values{"client_id": {id}}
		}
		now := time.Now()
		assertion, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"iss": id, "sub": id, "aud": d.issuer, "jti": rand.Text(), "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return url.Values{"client_id": {id}, "client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}
	}
	token := func(origin string, keyed bool, form url.Values) harness.TokenResponse {
		t.Helper()
		f := authn(keyed)
		for k, v := range form {
			f[k] = v
		}
		var tr harness.TokenResponse
		status, err := harness.PostForm(ctx, http.DefaultClient, origin+"/token", f, &tr)
		if err != nil {
			t.Fatal(err)
		}
		tr.Status = status
		return tr
	}
	// redeem: a code for the client, redeemed at origin with the key.
	redeem := func(origin string) string {
		t.Helper()
		cfg := d.md.Config(id, redirectURI, "notes:read", "offline_access")
		ar := harness.NewAuthRequest(cfg, d.resource)
		q, err := d.robot.Authorize(ctx, ar.URL)
		if err != nil || q.Get("code") == "" {
			t.Fatalf("authorize %s = %v, %v", id, q, err)
		}
		tr := token(origin, true, url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")},
			"redirect_uri": {redirectURI}, "code_verifier": {ar.Verifier}, "resource": {d.resource}})
		if tr.Status != http.StatusOK || tr.RefreshToken == "" {
			t.Fatalf("code of %s redeemed at %s = %d %s %s, want a refresh token", id, origin, tr.Status, tr.Error, tr.ErrorDescription)
		}
		return tr.RefreshToken
	}
	rotate := func(origin, rt string) string {
		t.Helper()
		tr := token(origin, true, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		if tr.Status != http.StatusOK || tr.RefreshToken == "" {
			t.Fatalf("refresh with the key at %s = %d %s %s", origin, tr.Status, tr.Error, tr.ErrorDescription)
		}
		return tr.RefreshToken
	}
	rotatedHere := rotate(atNew, redeem(d.issuer))
	madeBefore := redeem(d.issuer)
	rotatedBefore := rotate(d.issuer, redeem(atNew))
	public.Store(true)
	for _, c := range []struct {
		name, rt string
		want     int
	}{
		{"a grant the previous release made, whose refresh token this release rotated with the key", rotatedHere, http.StatusBadRequest},
		{"a grant the previous release made, never refreshed here", madeBefore, http.StatusOK},
		{"a grant this release made, whose refresh token the previous release rotated last", rotatedBefore, http.StatusOK},
	} {
		if tr := token(atNew, false, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.rt}}); tr.Status != c.want ||
			c.want == http.StatusBadRequest && tr.Error != "invalid_grant" {
			t.Errorf("%s: refresh without the key at this release once the document says none = %d %s, want %d", c.name, tr.Status, tr.Error, c.want)
		}
	}
}

// deployment is one issuer and gateway and what the previous release made
// there.
type deployment struct {
	ctx                context.Context
	env                *harness.Env
	issuer, resource   string
	port, admin        int
	storage            func(home string) string
	hash, upstream     string
	p                  *harness.Process
	md                 *harness.Metadata
	robot              *harness.Robot
	tok                *oauth2.Token
	web                *oauth2.Config
	cc, ccSecret, dcr  string
	agentSecret        string
	revokedRT, rotated string
	keyed              keyedClient
	docs               string // origin of the client metadata documents
	longDoc            string // an https one's client_id, cached a day
	pins               []map[string]any
	delegated          *oauth2.Token
	withdrawn          []string
	// named is a user the previous release's admin API added under a
	// client metadata document's id, and namedRT the refresh token it
	// issued the user for that client.
	named, namedRT string
	// pending is a code the previous release issued last, for this
	// release to redeem.
	pending     string
	pendingAuth harness.AuthRequest
	// legacy: the previous release is legacyRelease, which takes what
	// later ones refuse.
	legacy bool
	// public: started without cimd_allow_private.
	public bool
	// srv is the MCP server behind the gateway, to which before adds
	// echo's lookalike.
	srv *mcp.Server
}

// lists is members, the empty restriction lists, for the legacy release,
// which took them; "" for a later one, which refuses them.
func (d *deployment) lists(members string) string {
	if !d.legacy {
		return ""
	}
	return "," + members
}

func deploy(t *testing.T, old string, legacy bool, storage func(home string) string) *deployment {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	srv := mcpdemo.NewServer()
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(up.Close)
	docs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := "http://" + r.Host + r.URL.Path
		doc := map[string]any{"client_id": id, "client_name": "CIMD", "redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none"}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/plain.json":
			w.Header().Set("Cache-Control", "max-age=60")
		case "/named.json":
			w.Header().Set("Cache-Control", "max-age=60")
			doc["grant_types"] = []string{"authorization_code", "refresh_token"}
		case "/userinfo.json":
			// Read again at each use, as after its cache's end.
			w.Header().Set("Cache-Control", "no-store")
			doc["userinfo_signed_response_alg"] = "RS256"
		default:
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(docs.Close)
	// A document over https on loopback, cached for a day: https, as
	// this release takes no http client_id without cimd_allow_private,
	// which would refuse it before reading the cache.
	long := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=86400")
		_ = json.NewEncoder(w).Encode(map[string]any{"client_id": "https://" + r.Host + r.URL.Path, "client_name": "CIMD",
			"redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none"})
	}))
	t.Cleanup(long.Close)
	d := &deployment{ctx: ctx, legacy: legacy, env: harness.NewEnv(t, old), port: harness.FreePort(t), admin: harness.FreePort(t),
		storage: storage, hash: harness.HashPassword(t, password), upstream: up.Listener.Addr().String(), docs: docs.URL,
		longDoc: long.URL + "/long.json", srv: srv}
	// Both releases trust the https document server's certificate.
	ca := filepath.Join(d.env.Home, "docs.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: long.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	d.env.Vars = append(d.env.Vars, "SSL_CERT_FILE="+ca)
	d.issuer = fmt.Sprintf("http://127.0.0.1:%d", d.port)
	d.resource = d.issuer + "/mcp"
	d.p = d.start(t, old, d.port, d.admin)
	return d
}

// start runs bin with the deployment's issuer and store, listening on
// port (the issuer's, or another instance's) with its admin API on admin.
func (d *deployment) start(t *testing.T, bin string, port, admin int) *harness.Process {
	t.Helper()
	private := "cimd_allow_private"
	if d.public {
		private = ""
	}
	cfg := d.env.Write(t, fmt.Sprintf("Caddyfile.%d", port), fmt.Sprintf(`{
	admin 127.0.0.1:%d
	mcp_auth {
		issuer %s
		storage %s
		%s
		user alice %s {
			groups users
		}
		group users {
			scopes %s notes:read
		}
		client app {
			public
			redirect_uri %s
		}
	}
}
http://127.0.0.1:%d {
	mcp_issuer
	mcp_gateway {
		resource %s
		scope notes:read
		tool echo* notes:read
	}
	reverse_proxy %s
}
`, admin, d.issuer, d.storage(d.env.Home), private, d.hash, d.resource, redirectURI, port, d.resource, d.upstream))
	env := &harness.Env{Bin: bin, Home: d.env.Home, Vars: d.env.Vars}
	return env.Run(t, cfg, fmt.Sprintf("http://127.0.0.1:%d/.well-known/oauth-authorization-server", port))
}

func (d *deployment) adminURL() string { return fmt.Sprintf("http://127.0.0.1:%d/mcp-auth", d.admin) }

// before makes, with the previous release, what a deployment holds.
func (d *deployment) before(t *testing.T) {
	t.Helper()
	ctx, adminURL := d.ctx, d.adminURL()
	var err error
	if d.md, err = harness.Discover(ctx, d.issuer); err != nil {
		t.Fatal(err)
	}
	adminDo(t, ctx, "POST", adminURL+"/users", `{"username":"bob","password":"`+password+`","groups":["users"]}`, http.StatusCreated, nil)
	// A user named as a client metadata document's id, which the legacy
	// release took (so did 561ca81), and its tokens for that client: sub
	// equal to client_id, a client's own token to a resource server. The
	// previous release refuses the name.
	if !d.legacy {
		adminDo(t, ctx, "POST", adminURL+"/users", `{"username":"`+d.docs+`/named.json","password":"`+password+`","groups":["users"]}`, http.StatusBadRequest, nil)
	} else {
		d.named = d.docs + "/named.json"
		adminDo(t, ctx, "POST", adminURL+"/users", `{"username":"`+d.named+`","password":"`+password+`","groups":["users"]}`, http.StatusCreated, nil)
		named := authorize(t, ctx, harness.NewRobot(d.named, password, redirectURI), d.md.Config(d.named, redirectURI, "notes:read", "offline_access"), d.resource)
		if c, err := harness.Claims(named.AccessToken); err != nil || c["sub"] != d.named || c["client_id"] != d.named || named.RefreshToken == "" {
			t.Fatalf("previous release: user %s's token for the client of that id: sub %v, client_id %v, refresh token %t, %v", d.named, c["sub"], c["client_id"], named.RefreshToken != "", err)
		}
		d.namedRT = named.RefreshToken
	}
	var cEmpty struct {
		Secret string `json:"client_secret"`
	}
	adminDo(t, ctx, "POST", adminURL+"/clients", `{"client_id":"c-empty","grant_types":["client_credentials"]`+d.lists(`"scopes":[],"resources":[]`)+`}`, http.StatusCreated, &cEmpty)
	d.ccSecret = cEmpty.Secret
	var agent struct {
		Secret string `json:"secret"`
	}
	adminDo(t, ctx, "POST", adminURL+"/agents", `{"agent_id":"a-empty"`+d.lists(`"allowed_clients":[],"scopes":[]`)+`}`, http.StatusCreated, &agent)
	d.agentSecret = agent.Secret
	var first struct {
		Kid string `json:"kid"`
	}
	adminDo(t, ctx, "POST", adminURL+"/keys/rotate", `{"withdraw":true}`, http.StatusOK, &first)
	var withdrawn struct {
		Withdrawn []string `json:"withdrawn"`
	}
	adminDo(t, ctx, "POST", adminURL+"/keys/rotate", `{"withdraw":"`+first.Kid+`"}`, http.StatusOK, &withdrawn)
	if d.withdrawn = withdrawn.Withdrawn; len(d.withdrawn) == 0 {
		t.Fatalf("withdraw %s: nothing withdrawn", first.Kid)
	}
	dcr := map[string]any{"client_name": "Old DCR", "redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none"}
	docs := []string{"/plain.json"}
	if d.legacy {
		dcr["userinfo_signed_response_alg"] = "RS256"
		docs = append(docs, "/userinfo.json")
	}
	status, reg, err := harness.Register(ctx, d.md, dcr)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("previous release: register %v = %d, %v, %v", dcr, status, reg, err)
	}
	d.dcr, _ = reg["client_id"].(string)
	d.keyed = registerKeyed(t, d, d.issuer)
	d.robot = harness.NewRobot("alice", password, redirectURI)
	for _, doc := range docs {
		authorize(t, ctx, d.robot, d.md.Config(d.docs+doc, redirectURI, "notes:read"), d.resource)
	}
	authorize(t, ctx, d.robot, d.md.Config(d.longDoc, redirectURI, "notes:read"), d.resource)
	var web struct {
		Secret string `json:"client_secret"`
	}
	adminDo(t, ctx, "POST", adminURL+"/clients", `{"client_id":"web","redirect_uris":["`+webRedirect+`"],"grant_types":["authorization_code","refresh_token"]}`, http.StatusCreated, &web)
	d.web = d.md.Config("web", webRedirect, "notes:read")
	d.web.ClientSecret, d.web.Endpoint.AuthStyle = web.Secret, oauth2.AuthStyleInHeader
	d.tok = authorize(t, ctx, d.robot, d.md.Config("app", redirectURI, "notes:read", "offline_access"), d.resource)
	d.robot.RedirectURI = webRedirect
	authorize(t, ctx, d.robot, d.web, d.resource)
	d.robot.RedirectURI = redirectURI
	// A delegation to the agent: its own token as the actor_token of the
	// code's redemption.
	actor := clientCredentials(t, ctx, d.md.TokenEndpoint, "a-empty", d.agentSecret, d.resource)
	appCfg := d.md.Config("app", redirectURI, "notes:read", "offline_access")
	ar := harness.NewAuthRequest(appCfg, d.resource)
	q, err := d.robot.Authorize(ctx, ar.URL+"&requested_actor=a-empty")
	if err != nil || q.Get("code") == "" {
		t.Fatalf("previous release: authorize with requested_actor = %v, %v", q, err)
	}
	if d.delegated, err = appCfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(ar.Verifier),
		oauth2.SetAuthURLParam("resource", d.resource), oauth2.SetAuthURLParam("actor_token", actor)); err != nil {
		t.Fatalf("previous release: delegated token: %v", err)
	}
	if c, err := harness.Claims(d.delegated.AccessToken); err != nil || fmt.Sprint(c["act"]) != "map[sub:a-empty]" {
		t.Fatalf("previous release: delegated token's act = %v, %v", c["act"], err)
	}
	if d.tok.RefreshToken == "" {
		t.Fatal("previous release: no refresh token")
	}
	// A grant revoked through its refresh token.
	revoked := authorize(t, ctx, d.robot, d.md.Config("app", redirectURI, "notes:read", "offline_access"), d.resource)
	d.revokedRT = revoked.RefreshToken
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.md.RevocationEndpoint, strings.NewReader(url.Values{"token": {d.revokedRT}, "client_id": {"app"}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if status := do(t, req, nil); status != http.StatusOK {
		t.Fatalf("previous release: revoke = %d", status)
	}
	// A rotation: the new key is published at once, signing later.
	var rotated struct {
		Kid string `json:"kid"`
	}
	adminDo(t, ctx, "POST", adminURL+"/keys/rotate", `{}`, http.StatusOK, &rotated)
	d.rotated = rotated.Kid
	// The tools pinned at the first tools/list (pin_tools first_use).
	if code, body := list(t, ctx, d.resource, d.tok.AccessToken); code != http.StatusOK || !strings.Contains(body, `"echo"`) {
		t.Fatalf("previous release: tools/list = %d %s", code, body)
	}
	// A tool named as echo but for a trailing dot, which the previous
	// release pins on first use and this one takes for echo's lookalike
	// (README, Upgrading).
	mcp.AddTool(d.srv, &mcp.Tool{Name: lookalike, Description: "Echoes its input, under another name."},
		func(_ context.Context, _ *mcp.CallToolRequest, in mcpdemo.EchoIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
		})
	if code, body := list(t, ctx, d.resource, d.tok.AccessToken); code != http.StatusOK || !strings.Contains(body, `"`+lookalike+`"`) {
		t.Fatalf("previous release: tools/list with %s = %d %s, want it pinned on first use", lookalike, code, body)
	}
	adminDo(t, ctx, "GET", adminURL+"/tools?resource="+url.QueryEscape(d.resource), "", http.StatusOK, &d.pins)
	if len(d.pins) == 0 {
		t.Fatal("previous release: no tool pinned")
	}
	d.cc = clientCredentials(t, ctx, d.md.TokenEndpoint, "c-empty", d.ccSecret, d.resource)
	d.pendingAuth = harness.NewAuthRequest(appCfg, d.resource)
	pq, err := d.robot.Authorize(ctx, d.pendingAuth.URL)
	if d.pending = pq.Get("code"); err != nil || d.pending == "" {
		t.Fatalf("previous release: authorize = %v, %v", pq, err)
	}
	for name, at := range map[string]string{"user's": d.tok.AccessToken, "client credentials": d.cc} {
		if code := call(t, ctx, d.resource, at); code != http.StatusOK {
			t.Fatalf("previous release: %s token at the gateway = %d, want 200", name, code)
		}
	}
}

// after checks, with this release alone on the store, that what before
// made still works.
func (d *deployment) after(t *testing.T) {
	t.Helper()
	ctx, adminURL := d.ctx, d.adminURL()
	// The code the previous release issued last (no password tag, no
	// connection stamp) redeems here.
	if tok, err := d.pendingAuth.Exchange(ctx, d.md.Config("app", redirectURI, "notes:read", "offline_access"), d.pending); err != nil {
		t.Errorf("after the upgrade: the previous release's code: %v", err)
	} else if code := call(t, ctx, d.resource, tok.AccessToken); code != http.StatusOK {
		t.Errorf("after the upgrade: the token of the previous release's code at the gateway = %d, want 200", code)
	}
	for name, at := range map[string]string{"user's": d.tok.AccessToken, "client credentials": d.cc} {
		if code := call(t, ctx, d.resource, at); code != http.StatusOK {
			t.Errorf("after the upgrade: the %s access token at the gateway = %d, want 200", name, code)
		}
	}
	rt := refresh(t, ctx, d.issuer, "app", d.tok.RefreshToken, d.resource)
	if rt.Status != http.StatusOK || rt.RefreshToken == "" {
		t.Errorf("after the upgrade: refresh = %+v, want 200 with a new refresh token", rt)
	} else if code := call(t, ctx, d.resource, rt.AccessToken); code != http.StatusOK {
		t.Errorf("after the upgrade: the refreshed access token at the gateway = %d, want 200", code)
	}
	if code := call(t, ctx, d.resource, d.delegated.AccessToken); code != http.StatusOK {
		t.Errorf("after the upgrade: the delegated access token at the gateway = %d, want 200", code)
	}
	dr := refresh(t, ctx, d.issuer, "app", d.delegated.RefreshToken, d.resource)
	if c, err := harness.Claims(dr.AccessToken); dr.Status != http.StatusOK || err != nil || fmt.Sprint(c["act"]) != "map[sub:a-empty]" {
		t.Errorf("after the upgrade: refresh of the delegated grant = %+v (act %v, %v), want 200 acting as a-empty", dr, c["act"], err)
	}
	d.robot.Pages = nil
	d.robot.RedirectURI = webRedirect
	authorize(t, ctx, d.robot, d.web, d.resource)
	if len(d.robot.Pages) != 0 {
		t.Errorf("after the upgrade: the consent to a confidential client with an https redirect URI was asked again (%d pages)", len(d.robot.Pages))
	}
	d.robot.RedirectURI = redirectURI
	tok := authorize(t, ctx, d.robot, d.md.Config(d.dcr, redirectURI, "notes:read"), d.resource)
	if slices.ContainsFunc(d.robot.Pages, func(p *harness.Page) bool { return p.Form("login") != nil }) {
		t.Error("after the upgrade: the session of the previous release did not sign the user in (login page shown)")
	}
	if code := call(t, ctx, d.resource, tok.AccessToken); code != http.StatusOK {
		t.Errorf("after the upgrade: the self-registered client's token at the gateway = %d, want 200", code)
	}
	// A client metadata document client: one this release takes still
	// works; one asking for signed userinfo answers is refused at its
	// next fetch, with the reason.
	authorize(t, ctx, d.robot, d.md.Config(d.docs+"/plain.json", redirectURI, "notes:read"), d.resource)
	ar := harness.NewAuthRequest(d.md.Config(d.docs+"/userinfo.json", redirectURI, "notes:read"), d.resource)
	d.robot.Pages = nil
	q, err := d.robot.Authorize(ctx, ar.URL)
	if err == nil || q.Get("code") != "" ||
		len(d.robot.Pages) == 0 || !strings.Contains(d.robot.Pages[len(d.robot.Pages)-1].Text(), "userinfo_signed_response_alg") {
		var text string
		if len(d.robot.Pages) > 0 {
			text = d.robot.Pages[len(d.robot.Pages)-1].Text()
		}
		t.Errorf("after the upgrade: a metadata document with userinfo_signed_response_alg = %v, %v, page %.300q; want refused naming it", q, err, text)
	}
	// The user named as the client metadata document's id gets no more
	// tokens for it: neither by refreshing the previous release's grant
	// nor by a new code (README, Upgrading).
	if d.named != "" {
		if r := refresh(t, ctx, d.issuer, d.named, d.namedRT, d.resource); r.Status != http.StatusBadRequest || r.Error != "invalid_grant" {
			t.Errorf("after the upgrade: refresh of user %s's grant for the client of that id = %d %s, want 400 invalid_grant", d.named, r.Status, r.Error)
		}
		namedCfg := d.md.Config(d.named, redirectURI, "notes:read")
		nar := harness.NewAuthRequest(namedCfg, d.resource)
		if q, err := harness.NewRobot(d.named, password, redirectURI).Authorize(ctx, nar.URL); err != nil || q.Get("code") == "" {
			t.Errorf("after the upgrade: user %s authorizing the client of that id = %v, %v; want a code (refused at the token endpoint)", d.named, q, err)
		} else if _, err := nar.Exchange(ctx, namedCfg, q.Get("code")); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
			t.Errorf("after the upgrade: user %s's code for the client of that id = %v; want invalid_grant", d.named, err)
		}
	}
	// The previous release's private_key_jwt registration authenticates.
	d.keyed.token(t, d, d.issuer)
	if cc := clientCredentials(t, ctx, d.md.TokenEndpoint, "c-empty", d.ccSecret, d.resource); cc == "" {
		t.Error("after the upgrade: the admin client's secret no longer works")
	}
	var pins []map[string]any
	adminDo(t, ctx, "GET", adminURL+"/tools?resource="+url.QueryEscape(d.resource), "", http.StatusOK, &pins)
	// The previous release's pins stand as they were (a restart, of
	// either release, may pin the server's other tools at their first
	// sight since).
	for _, p := range d.pins {
		if !slices.ContainsFunc(pins, func(q map[string]any) bool { return fmt.Sprint(q) == fmt.Sprint(p) }) {
			t.Errorf("after the upgrade: pin %v lost or changed; pins now %v", p, pins)
		}
	}
	if code, body := list(t, ctx, d.resource, d.tok.AccessToken); code != http.StatusOK || !strings.Contains(body, `"echo"`) {
		t.Errorf("after the upgrade: tools/list = %d %s", code, body)
	}
	d.lookalikePinnedBefore(t)
	if r := refresh(t, ctx, d.issuer, "app", d.revokedRT, d.resource); r.Status != http.StatusBadRequest || r.Error != "invalid_grant" {
		t.Errorf("after the upgrade: refresh of a revoked grant = %+v, want 400 invalid_grant", r)
	}
	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	getJSON(t, ctx, d.issuer+"/jwks", &jwks)
	if !slices.ContainsFunc(jwks.Keys, func(k struct {
		Kid string `json:"kid"`
	}) bool {
		return k.Kid == d.rotated
	}) {
		t.Errorf("after the upgrade: the key rotated in (%s) is not published", d.rotated)
	}
	for _, k := range jwks.Keys {
		if slices.Contains(d.withdrawn, k.Kid) {
			t.Errorf("after the upgrade: withdrawn key %s is published again", k.Kid)
		}
	}
	for _, u := range []string{"/users/bob", "/clients/" + url.PathEscape(d.dcr), "/clients/c-empty", "/agents/a-empty"} {
		var entry map[string]any
		adminDo(t, ctx, "GET", adminURL+u, "", http.StatusOK, &entry)
		for _, list := range []string{"scopes", "resources", "allowed_clients"} {
			if v, ok := entry[list]; ok && strings.Contains(u, "-empty") {
				t.Errorf("after the upgrade: %s shows %s = %v; the previous release stored [] as no list", u, list, v)
			}
		}
	}
}

// lookalike is a tool name this release takes for echo's lookalike (a
// segment's trailing dots, which Windows drops) and the previous release
// pinned on first use. The gateway's rule echo* decides both names, as
// Windows reads the lookalike too.
const lookalike = "echo."

// lookalikePinnedBefore: echo's lookalike, which the previous release
// pinned on first use, stays pinned, listed and called after the
// upgrade; forgotten (README, Upgrading), its next listing holds it for
// approval and its calls are refused.
func (d *deployment) lookalikePinnedBefore(t *testing.T) {
	t.Helper()
	ctx := d.ctx
	if code, body := list(t, ctx, d.resource, d.tok.AccessToken); code != http.StatusOK || !strings.Contains(body, `"`+lookalike+`"`) {
		t.Errorf("after the upgrade: tools/list = %d %s, want %s, pinned by the previous release, listed", code, body, lookalike)
	}
	resp, _, err := harness.RawToolCall(ctx, http.DefaultClient, d.resource, d.tok.AccessToken, lookalike, `{"text":"x"}`)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("after the upgrade: call of %s, pinned by the previous release = %d, want 200", lookalike, resp.StatusCode)
	}
	adminDo(t, ctx, "POST", d.adminURL()+"/tools/forget", `{"resource":"`+d.resource+`","tool":"`+lookalike+`"}`, http.StatusOK, nil)
	if code, body := list(t, ctx, d.resource, d.tok.AccessToken); code != http.StatusOK || strings.Contains(body, `"`+lookalike+`"`) || !strings.Contains(body, `"echo"`) {
		t.Errorf("after forgetting %s: tools/list = %d %s, want it hidden, echo listed", lookalike, code, body)
	}
	resp, body, err := harness.RawToolCall(ctx, http.DefaultClient, d.resource, d.tok.AccessToken, lookalike, `{"text":"x"}`)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not approved") {
		t.Errorf("after forgetting %s: its call = %d %.200s, want 403 not approved", lookalike, resp.StatusCode, body)
	}
}

// migrated copies the deployment's bbolt file (Caddy stopped) into a new
// PostgreSQL database with migrateBin's `caddy mcp-auth migrate-storage`
// and runs runBin on the copy: the access tokens issued on the file pass
// its gateway (the signing keys came along), the withdrawn keys stay
// unpublished, the revoked grant stays revoked, the admin API lists bob,
// who signs in with his password and gets a token that passes, and a
// second copy into the same database is refused, copying nothing. The
// file is left as it was.
func (d *deployment) migrated(t *testing.T, migrateBin, runBin string) {
	t.Helper()
	ctx := d.ctx
	dsn := pgtest.NewDatabase(t)
	from := filepath.Join(d.env.Home, "store.db")
	cli := &harness.Env{Bin: migrateBin, Home: d.env.Home, Vars: d.env.Vars}
	if out, err := cli.Caddy(t, time.Minute, "mcp-auth", "migrate-storage", "--from", from, "--to", dsn); err != nil || !strings.Contains(out, "copied") {
		t.Fatalf("migrate-storage of %s = %v:\n%s", from, err, out)
	}
	if out, err := cli.Caddy(t, time.Minute, "mcp-auth", "migrate-storage", "--from", from, "--to", dsn); err == nil || !strings.Contains(out, "nothing was copied") {
		t.Errorf("migrate-storage into a database holding the copy = %v:\n%s; want refused, nothing copied", err, out)
	}
	storage := d.storage
	d.storage = func(string) string { return "postgres \"" + dsn + "\"" }
	defer func() { d.storage = storage }()
	p := d.start(t, runBin, d.port, d.admin)
	defer p.Stop()
	for name, at := range map[string]string{"user's": d.tok.AccessToken, "client credentials": d.cc, "delegated": d.delegated.AccessToken} {
		if code := call(t, ctx, d.resource, at); code != http.StatusOK {
			t.Errorf("migrated: the %s access token at the gateway = %d, want 200", name, code)
		}
	}
	if r := refresh(t, ctx, d.issuer, "app", d.revokedRT, d.resource); r.Status != http.StatusBadRequest || r.Error != "invalid_grant" {
		t.Errorf("migrated: refresh of a revoked grant = %+v, want 400 invalid_grant", r)
	}
	var jwks struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	getJSON(t, ctx, d.issuer+"/jwks", &jwks)
	for _, k := range jwks.Keys {
		if slices.Contains(d.withdrawn, k.Kid) {
			t.Errorf("migrated: withdrawn key %s is published again", k.Kid)
		}
	}
	adminDo(t, ctx, "GET", d.adminURL()+"/users/bob", "", http.StatusOK, nil)
	tok := authorize(t, ctx, harness.NewRobot("bob", password, redirectURI), d.md.Config("app", redirectURI, "notes:read"), d.resource)
	if code := call(t, ctx, d.resource, tok.AccessToken); code != http.StatusOK {
		t.Errorf("migrated: bob's new token at the gateway = %d, want 200", code)
	}
}

// privateCacheDropped restarts this release without cimd_allow_private:
// the document the previous release fetched from a loopback address,
// with the option on, and cached for a day is not taken from the store
// but fetched again, and refused (README, Upgrading).
func (d *deployment) privateCacheDropped(t *testing.T, bin string) {
	t.Helper()
	d.p.Stop()
	d.public = true
	d.p = d.start(t, bin, d.port, d.admin)
	ar := harness.NewAuthRequest(d.md.Config(d.longDoc, redirectURI, "notes:read"), d.resource)
	d.robot.Pages = nil
	q, err := d.robot.Authorize(d.ctx, ar.URL)
	if err == nil || q.Get("code") != "" {
		t.Errorf("without cimd_allow_private: a loopback document the previous release cached with it = %v, %v; want refused", q, err)
	}
}

// downgrade runs the previous release again on the bbolt file this
// release wrote, as after a failed upgrade: bob signs in at this
// release (a session with his password's tag), consents (an answer kept
// in the answered bucket) and gets a code (the tag and the connection's
// stamp) and a refresh token, then the previous release redeems the
// code, refreshes the token, takes the session and reads the rest.
func (d *deployment) downgrade(t *testing.T, old string) {
	t.Helper()
	ctx := d.ctx
	bob := harness.NewRobot("bob", password, redirectURI)
	cfg := d.md.Config("app", redirectURI, "notes:read", "offline_access")
	tok := authorize(t, ctx, bob, cfg, d.resource)
	ar := harness.NewAuthRequest(cfg, d.resource)
	q, err := bob.Authorize(ctx, ar.URL)
	if err != nil || q.Get("code") == "" {
		t.Fatalf("this release: authorize = %v, %v", q, err)
	}
	d.p.Stop()
	d.public = false
	d.p = d.start(t, old, d.port, d.admin)
	if tok2, err := ar.Exchange(ctx, cfg, q.Get("code")); err != nil {
		t.Errorf("downgraded: this release's code: %v", err)
	} else if code := call(t, ctx, d.resource, tok2.AccessToken); code != http.StatusOK {
		t.Errorf("downgraded: the token of this release's code at the gateway = %d, want 200", code)
	}
	if r := refresh(t, ctx, d.issuer, "app", tok.RefreshToken, d.resource); r.Status != http.StatusOK || r.RefreshToken == "" {
		t.Errorf("downgraded: refresh of this release's refresh token = %+v, want 200", r)
	} else if code := call(t, ctx, d.resource, r.AccessToken); code != http.StatusOK {
		t.Errorf("downgraded: the refreshed token at the gateway = %d, want 200", code)
	}
	bob.Pages = nil
	authorize(t, ctx, bob, cfg, d.resource)
	if slices.ContainsFunc(bob.Pages, func(p *harness.Page) bool { return p.Form("login") != nil }) {
		t.Error("downgraded: the session this release started did not sign the user in (login page shown)")
	}
	if code := call(t, ctx, d.resource, d.tok.AccessToken); code != http.StatusOK {
		t.Errorf("downgraded: the previous release's access token at the gateway = %d, want 200", code)
	}
}

// alternate sends each request to the next of addrs in turn, keeping the
// URL's host (the issuer's) as the Host header, as a balancer does.
type alternate struct {
	addrs []string
	n     atomic.Int32
}

func (a *alternate) RoundTrip(r *http.Request) (*http.Response, error) {
	out := r.Clone(r.Context())
	if out.Host == "" {
		out.Host = r.URL.Host
	}
	out.URL.Host = a.addrs[int(a.n.Add(1))%len(a.addrs)]
	resp, err := http.DefaultTransport.RoundTrip(out)
	if resp != nil {
		resp.Request = r
	}
	return resp, err
}

// keyedClient is a private_key_jwt client with a P-256 key.
type keyedClient struct {
	id  string
	key *ecdsa.PrivateKey
}

// registerKeyed registers a private_key_jwt client pinned to ES256 at the
// instance at origin.
func registerKeyed(t *testing.T, d *deployment, origin string) keyedClient {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwk := map[string]string{"kty": "EC", "crv": "P-256", "kid": "k1",
		"x": b64(key.X.FillBytes(make([]byte, 32))), "y": b64(key.Y.FillBytes(make([]byte, 32)))}
	status, reg, err := harness.Register(d.ctx, &harness.Metadata{RegistrationEndpoint: origin + "/register"}, map[string]any{
		"redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "private_key_jwt",
		"token_endpoint_auth_signing_alg": "ES256", "jwks": map[string]any{"keys": []any{jwk}},
	})
	if err != nil || status != http.StatusCreated {
		t.Fatalf("register a private_key_jwt client at %s = %d, %v, %v", origin, status, reg, err)
	}
	id, _ := reg["client_id"].(string)
	return keyedClient{id: id, key: key}
}

// token signs the user in (the robot's session) for c at the instance at
// origin and redeems the code there with an ES256 client assertion.
func (c keyedClient) token(t *testing.T, d *deployment, origin string) {
	t.Helper()
	cfg := d.md.Config(c.id, redirectURI, "notes:read")
	cfg.Endpoint.AuthURL = strings.Replace(cfg.Endpoint.AuthURL, d.issuer, origin, 1)
	ar := harness.NewAuthRequest(cfg, d.resource)
	q, err := d.robot.Authorize(d.ctx, ar.URL)
	if err != nil || q.Get("code") == "" {
		t.Fatalf("authorize %s at %s = %v, %v", c.id, origin, q, err)
	}
	now := time.Now()
	assertion, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss": c.id, "sub": c.id, "aud": d.issuer, "jti": rand.Text(), "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
	}).SignedString(c.key)
	if err != nil {
		t.Fatal(err)
	}
	var tr harness.TokenResponse
	status, err := harness.PostForm(d.ctx, http.DefaultClient, origin+"/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {redirectURI},
		"code_verifier": {ar.Verifier}, "resource": {d.resource}, "client_id": {c.id},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion},
	}, &tr)
	if err != nil || status != http.StatusOK {
		t.Fatalf("token for %s at %s = %d %s %s, %v", c.id, origin, status, tr.Error, tr.ErrorDescription, err)
	}
}

// authorize signs in with robot (its session, if any), approves and
// redeems the code.
func authorize(t *testing.T, ctx context.Context, robot *harness.Robot, cfg *oauth2.Config, resource string) *oauth2.Token {
	t.Helper()
	ar := harness.NewAuthRequest(cfg, resource)
	q, err := robot.Authorize(ctx, ar.URL)
	if err != nil || q.Get("code") == "" {
		t.Fatalf("authorize %s = %v, %v", cfg.ClientID, q, err)
	}
	tok, err := ar.Exchange(ctx, cfg, q.Get("code"))
	if err != nil {
		t.Fatalf("exchange for %s: %v", cfg.ClientID, err)
	}
	return tok
}

// clientCredentials returns an access token of a client_secret_basic
// client for resource.
func clientCredentials(t *testing.T, ctx context.Context, endpoint, id, secret, resource string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(url.Values{
		"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {"notes:read"},
	}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	var tr harness.TokenResponse
	if code := do(t, req, &tr); code != http.StatusOK {
		t.Errorf("client credentials for %s = %d %s", id, code, tr.Error)
	}
	return tr.AccessToken
}

// exchange makes a token exchange (RFC 8693) at endpoint as the
// client_secret_basic client id, of subject with actor as actor_token.
func exchange(t *testing.T, ctx context.Context, endpoint, id, secret, subject, actor, resource string) harness.TokenResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(url.Values{
		"grant_type":    {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token": {subject}, "subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"actor_token": {actor}, "actor_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"resource": {resource},
	}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	var tr harness.TokenResponse
	tr.Status = do(t, req, &tr)
	return tr
}

// revokeAs revokes token at endpoint as the client_secret_basic client
// id, failing unless it is answered 200.
func revokeAs(t *testing.T, ctx context.Context, endpoint, id, secret, token string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	if status := do(t, req, nil); status != http.StatusOK {
		t.Fatalf("revoke as %s at %s = %d", id, endpoint, status)
	}
}

// refresh redeems a refresh token of a public client at the token
// endpoint of the instance at origin.
func refresh(t *testing.T, ctx context.Context, origin, id, token, resource string) harness.TokenResponse {
	t.Helper()
	var tr harness.TokenResponse
	status, err := harness.PostForm(ctx, http.DefaultClient, origin+"/token", url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {token}, "client_id": {id}, "resource": {resource},
	}, &tr)
	if err != nil {
		t.Fatal(err)
	}
	tr.Status = status
	return tr
}

// list makes one tools/list with token and returns the status and body.
func list(t *testing.T, ctx context.Context, resource, token string) (int, string) {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, resource, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("MCP-Protocol-Version", "2026-07-28")
	req.Header.Set("Mcp-Method", "tools/list")
	req.Header.Set("Authorization", "Bearer "+token)
	code, b := send(t, req)
	return code, string(b)
}

// call makes one tools/call of echo with token and returns the status.
func call(t *testing.T, ctx context.Context, resource, token string) int {
	t.Helper()
	resp, _, err := harness.RawToolCall(ctx, http.DefaultClient, resource, token, "echo", `{"text":"x"}`)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

// adminDo sends body (none: "") to the admin API and decodes the answer
// into v (nil: not decoded), failing unless the status is want.
func adminDo(t *testing.T, ctx context.Context, method, u, body string, want int, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if code := do(t, req, v); code != want {
		t.Fatalf("%s %s = %d, want %d", method, u, code, want)
	}
}

func getJSON(t *testing.T, ctx context.Context, u string, v any) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if code := do(t, req, v); code != http.StatusOK {
		t.Fatalf("GET %s = %d", u, code)
	}
}

// do sends req and decodes the answer into v (nil: not decoded); it
// returns the status.
func do(t *testing.T, req *http.Request, v any) int {
	t.Helper()
	code, b := send(t, req)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: status %d, body %.300q: %v", req.Method, req.URL, code, b, err)
		}
	}
	return code
}

// send sends req and returns the status and the body.
func send(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
