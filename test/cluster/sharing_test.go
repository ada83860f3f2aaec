package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestSharedState: what one instance writes, the other uses at once: a
// code, a pushed authorization request, a registered client, a login
// session and a consent, a user added through the admin API.
func TestSharedState(t *testing.T) {
	c := shared.get(t)
	ctx := ctxTimeout(t, 60*time.Second)
	r := robot(c.a)
	var tok *oauth2.Token

	t.Run("code from A redeemed at B", func(t *testing.T) {
		tok = c.grant(ctx, t, r, c.b)
		c.mustCall(ctx, t, c.a, tok.AccessToken, http.StatusOK)
		c.mustCall(ctx, t, c.b, tok.AccessToken, http.StatusOK)
	})

	t.Run("login session and consent from A seen by B", func(t *testing.T) {
		seen := len(r.Pages)
		r.Client.Transport = transport(c.b)
		c.grant(ctx, t, r, c.b)
		if len(r.Pages) != seen {
			t.Errorf("authorizing at B after login and consent at A showed %d pages (%s), want none", len(r.Pages)-seen, r.Pages[len(r.Pages)-1].Text())
		}
	})

	t.Run("PAR at A used at B", func(t *testing.T) {
		cfg := c.oauthConfig(scopeRead)
		verifier := oauth2.GenerateVerifier()
		var par struct {
			RequestURI string `json:"request_uri"`
		}
		status, err := harness.PostForm(ctx, c.a.client, c.par, url.Values{
			"client_id":             {clientID},
			"response_type":         {"code"},
			"redirect_uri":          {redirectURI},
			"scope":                 {scopeRead},
			"state":                 {"par-state"},
			"code_challenge":        {oauth2.S256ChallengeFromVerifier(verifier)},
			"code_challenge_method": {"S256"},
			"resource":              {c.modern},
		}, &par)
		if err != nil || status != http.StatusCreated || par.RequestURI == "" {
			t.Fatalf("PAR at A = %d %+v, %v; want 201 with a request_uri", status, par, err)
		}
		r.Client.Transport = transport(c.b)
		ar := harness.AuthRequest{
			URL:   c.md.AuthorizationEndpoint + "?" + url.Values{"client_id": {clientID}, "request_uri": {par.RequestURI}}.Encode(),
			State: "par-state", Verifier: verifier, Resource: c.modern,
		}
		tok, err := ar.Exchange(with(ctx, c.a.client), cfg, c.code(ctx, t, r, ar))
		if err != nil {
			t.Fatalf("redeem the code of a pushed request at A: %v", err)
		}
		c.mustCall(ctx, t, c.b, tok.AccessToken, http.StatusOK)
	})

	t.Run("client registered at A used at B", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{
			"client_name":                "Registered at A",
			"redirect_uris":              []string{redirectURI},
			"grant_types":                []string{"authorization_code", "refresh_token"},
			"response_types":             []string{"code"},
			"token_endpoint_auth_method": "none",
		})
		var reg struct {
			ClientID string `json:"client_id"`
		}
		status := doJSON(ctx, t, c.a.client, http.MethodPost, c.md.RegistrationEndpoint, body, &reg)
		if status != http.StatusCreated || reg.ClientID == "" {
			t.Fatalf("register at A = %d %+v, want 201 with a client_id", status, reg)
		}
		r.Client.Transport = transport(c.b)
		seen := len(r.Pages)
		cfg := c.md.Config(reg.ClientID, redirectURI, scopeRead)
		ar := harness.NewAuthRequest(cfg, c.modern)
		tok, err := ar.Exchange(with(ctx, c.b.client), cfg, c.code(ctx, t, r, ar))
		if err != nil {
			t.Fatalf("redeem at B for the client registered at A: %v", err)
		}
		if !slices.ContainsFunc(r.Pages[seen:], func(p *harness.Page) bool { return p.Form("consent") != nil }) {
			t.Error("B did not ask for consent for a client new to the user")
		}
		c.mustCall(ctx, t, c.a, tok.AccessToken, http.StatusOK)
	})

	t.Run("user added on A's admin API signs in at B", func(t *testing.T) {
		body := []byte(`{"username": "carol", "password": "carol's password", "groups": ["users"]}`)
		if status := doJSON(ctx, t, http.DefaultClient, http.MethodPost, c.a.admin+"/mcp-auth/users", body, nil); status != http.StatusCreated && status != http.StatusOK {
			t.Fatalf("POST /mcp-auth/users at A = %d, want success", status)
		}
		carol := harness.NewRobot("carol", "carol's password", redirectURI)
		carol.Client.Transport = transport(c.b)
		tok := c.grant(ctx, t, carol, c.b)
		c.mustCall(ctx, t, c.a, tok.AccessToken, http.StatusOK)
		if status := doJSON(ctx, t, http.DefaultClient, http.MethodGet, c.b.admin+"/mcp-auth/users/carol", nil, nil); status != http.StatusOK {
			t.Errorf("GET /mcp-auth/users/carol at B = %d, want 200", status)
		}
	})
	if tok != nil {
		c.noSecretsLogged(t, password, tok.AccessToken, tok.RefreshToken)
	}
}

// TestKeyRotation: a key rotated on A is in B's JWKS within 5 s (the key
// set is re-read at least that often) and signs on neither instance
// before 70 s after the rotation (issuer keyPublishDelay), so every
// instance publishes it before any token carries it; from then on both
// sign with it and each gateway accepts the other's tokens, and tokens of
// the old key still verify (it stays published).
func TestKeyRotation(t *testing.T) {
	const (
		reload  = 5 * time.Second  // issuer keyReload
		publish = 70 * time.Second // issuer keyPublishDelay
	)
	c := shared.get(t)
	ctx := ctxTimeout(t, 150*time.Second)
	before := c.grant(ctx, t, robot(c.a), c.a)
	oldKid := kid(t, before.AccessToken)

	var rotated struct {
		Kid string `json:"kid"`
	}
	asked := time.Now() // the rotation is no earlier
	if status := doJSON(ctx, t, http.DefaultClient, http.MethodPost, c.a.admin+"/mcp-auth/keys/rotate", nil, &rotated); status != http.StatusOK || rotated.Kid == "" || rotated.Kid == oldKid {
		t.Fatalf("POST /mcp-auth/keys/rotate at A = %d %+v, want a new kid", status, rotated)
	}
	done := time.Now() // the rotation is no later
	for {
		// When the request was sent, not when a loaded machine answered
		// it, is what counts against B.
		sent := time.Now()
		if slices.Contains(c.jwksKids(ctx, t, c.b), rotated.Kid) {
			break
		}
		if sent.Sub(done) > reload+time.Second {
			t.Fatalf("B's JWKS lacks the key rotated on A %v after the rotation", sent.Sub(done))
		}
		time.Sleep(50 * time.Millisecond)
	}
	published := time.Since(asked)
	for _, in := range []*instance{c.a, c.b} {
		tok := c.grant(ctx, t, robot(in), in)
		if time.Since(asked) < publish && kid(t, tok.AccessToken) != oldKid {
			t.Errorf("%s signs with %s %v after the rotation, want the old key until %v", in.name, kid(t, tok.AccessToken), time.Since(asked), publish)
		}
	}

	time.Sleep(time.Until(done.Add(publish + 100*time.Millisecond)))
	tr, err := c.refresh(ctx, c.a, before.RefreshToken)
	if err != nil || tr.Status != http.StatusOK {
		t.Fatalf("refresh at A = %+v, %v", tr, err)
	}
	fromB := c.grant(ctx, t, robot(c.b), c.b)
	for _, x := range []struct {
		name, tok string
		at        *instance
	}{
		{"A's token", tr.AccessToken, c.b},
		{"B's token", fromB.AccessToken, c.a},
	} {
		if got := kid(t, x.tok); got != rotated.Kid {
			t.Errorf("%s %v after the rotation: kid %s, want the new key %s", x.name, publish, got, rotated.Kid)
		}
		c.mustCall(ctx, t, x.at, x.tok, http.StatusOK)
	}
	c.mustCall(ctx, t, c.b, before.AccessToken, http.StatusOK)
	t.Logf("key rotated on A: in B's JWKS %v after the rotation; signing on A and B from %v after it", published.Round(time.Millisecond), publish)
}

func (c *cluster) jwksKids(ctx context.Context, t *testing.T, in *instance) []string {
	t.Helper()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	doJSON(ctx, t, in.client, http.MethodGet, c.jwks, nil, &set)
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

// kid is the key id in a JWT's header.
func kid(t *testing.T, jwt string) string {
	t.Helper()
	head, _, _ := strings.Cut(jwt, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	var h struct {
		Kid string `json:"kid"`
	}
	if err == nil {
		err = json.Unmarshal(raw, &h)
	}
	if err != nil || h.Kid == "" {
		t.Fatalf("JWT header %q: no kid (%v)", head, err)
	}
	return h.Kid
}

// doJSON sends body (JSON, or nothing) and decodes a JSON answer into out
// when out is not nil; it returns the status.
func doJSON(ctx context.Context, t testing.TB, client *http.Client, method, u string, body []byte, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: status %d: %v", method, u, resp.StatusCode, err)
		}
	}
	return resp.StatusCode
}
