package cluster

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestCodeRaceAcrossInstances redeems one authorization code at A and at
// B at the same moment, many times: at most one of the two gets tokens,
// the other invalid_grant, and the replay revokes what the first
// redemption issued at both instances (its refresh token is refused, and
// its access token at both gateways).
func TestCodeRaceAcrossInstances(t *testing.T) {
	c := shared.get(t)
	ctx := ctxTimeout(t, 90*time.Second)
	r := robot(c.a)
	cfg := c.oauthConfig(scopeRead, "offline_access")
	const rounds = 10
	var issued []*harness.TokenResponse
	for round := range rounds {
		ar := harness.NewAuthRequest(cfg, c.modern)
		code := c.code(ctx, t, r, ar)
		var got [2]harness.TokenResponse
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, in := range []*instance{c.a, c.b} {
			wg.Go(func() {
				<-start
				st, err := harness.PostForm(ctx, in.client, c.md.TokenEndpoint, url.Values{
					"grant_type": {"authorization_code"}, "code": {code}, "client_id": {clientID},
					"redirect_uri": {redirectURI}, "code_verifier": {ar.Verifier}, "resource": {c.modern},
				}, &got[i])
				if err != nil && st == 0 {
					t.Errorf("round %d: redeem at %s: %v", round, in.name, err)
				}
				got[i].Status = st
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for i, g := range got {
			switch {
			case g.Status == http.StatusOK:
				winners++
				issued = append(issued, &got[i])
			case g.Status != http.StatusBadRequest || g.Error != "invalid_grant":
				t.Errorf("round %d: the losing redemption at %s = %d %q, want 400 invalid_grant", round, []string{"A", "B"}[i], g.Status, g.Error)
			}
		}
		if winners > 1 {
			t.Fatalf("round %d: %d of 2 concurrent redemptions of one code succeeded, want at most 1", round, winners)
		}
	}
	time.Sleep(revocationBound)
	for _, tr := range issued {
		for _, in := range []*instance{c.a, c.b} {
			if g, err := c.refresh(ctx, in, tr.RefreshToken); err != nil && g.Status == 0 || g.Status != http.StatusBadRequest || g.Error != "invalid_grant" {
				t.Errorf("the refresh token of a replayed code at %s = %d %q, %v; want 400 invalid_grant", in.name, g.Status, g.Error, err)
			}
			c.mustCall(ctx, t, in, tr.AccessToken, http.StatusUnauthorized)
		}
	}
	t.Logf("%d rounds of one code redeemed at A and B at once: %d won, each grant revoked by the replay", rounds, len(issued))
}

// TestPARRaceAcrossInstances pushes an authorization request at A and
// opens its request_uri at A and at B at the same moment (the user
// signed in and consent remembered, so each answers with a code at
// once): at most one answer carries a code.
func TestPARRaceAcrossInstances(t *testing.T) {
	c := shared.get(t)
	ctx := ctxTimeout(t, 90*time.Second)
	r := robot(c.a)
	c.grant(ctx, t, r, c.a) // signed in, consent given
	const rounds = 10
	for round := range rounds {
		verifier := oauth2.GenerateVerifier()
		var par struct {
			RequestURI string `json:"request_uri"`
		}
		st, err := harness.PostForm(ctx, c.a.client, c.par, url.Values{
			"client_id": {clientID}, "response_type": {"code"}, "redirect_uri": {redirectURI},
			"scope": {scopeRead}, "state": {"s"}, "resource": {c.modern},
			"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"},
		}, &par)
		if err != nil || st != http.StatusCreated {
			t.Fatalf("PAR = %d, %v", st, err)
		}
		u := c.md.AuthorizationEndpoint + "?" + url.Values{"client_id": {clientID}, "request_uri": {par.RequestURI}}.Encode()
		var locs [2]string
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, in := range []*instance{c.a, c.b} {
			cl := &http.Client{Jar: r.Client.Jar, Transport: in.client.Transport,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				<-start
				resp, err := cl.Do(req)
				if err != nil {
					t.Errorf("round %d: authorize at %s: %v", round, in.name, err)
					return
				}
				resp.Body.Close()
				locs[i] = resp.Header.Get("Location")
			})
		}
		close(start)
		wg.Wait()
		codes := 0
		for _, l := range locs {
			if strings.HasPrefix(l, redirectURI) && strings.Contains(l, "code=") {
				codes++
			}
		}
		if codes != 1 {
			t.Fatalf("round %d: one request_uri opened at A and B at once answered %d codes (%q), want 1", round, codes, locs)
		}
	}
}
