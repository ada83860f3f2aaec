package cluster

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// maxStale is the outage cluster's revocation_max_stale: how long a
// gateway goes on answering from its revocation set without reaching the
// store (the default, issuer.DefaultRevocationMaxStale, is 30s).
const maxStale = 5 * time.Second

// TestDatabaseOutage stops PostgreSQL (pg_ctl stop -m fast) under traffic
// and starts it again. During the outage the issuer answers 503
// temporarily_unavailable at both instances; the gateways go on verifying
// tokens with the keys they hold and refusing revoked ones until their
// revocation state is maxStale old (revocation_max_stale), then refuse
// everything with 503 (fail closed). After the restart everything works again, and nothing that was
// acknowledged is lost: every access token issued with 200 before the stop
// still works, every refresh token whose redemption was not in flight
// still redeems, and every revocation acknowledged is still in force.
func TestDatabaseOutage(t *testing.T) {
	c := setup(t, options{maxStale: maxStale})
	ctx := ctxTimeout(t, 3*time.Minute)
	r := robot(c.a)
	var live, revoked []*oauth2.Token
	for i := range 8 {
		tok := c.grant(ctx, t, r, []*instance{c.a, c.b}[i%2])
		if i%2 == 0 {
			live = append(live, tok)
			continue
		}
		if status, err := c.revoke(ctx, []*instance{c.b, c.a}[i%4/2], tok.RefreshToken); status != http.StatusOK {
			t.Fatalf("revoke = %d, %v", status, err)
		}
		revoked = append(revoked, tok)
	}
	// Every revocation reaches both gateways (by NOTIFY, or the resync
	// every second) before the outage; how soon is TestRevocationDelay's.
	for _, in := range []*instance{c.a, c.b} {
		for _, tok := range revoked {
			for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if s, _, _ := c.call(ctx, in, tok.AccessToken); s == http.StatusUnauthorized {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s's gateway still accepts a token revoked 15 s ago", in.name)
				}
			}
		}
	}
	// Traffic before the outage: the gateways have seen the tool (its pin
	// is in memory; pinning a tool first seen during an outage fails).
	for _, in := range []*instance{c.a, c.b} {
		c.mustCall(ctx, t, in, live[0].AccessToken, http.StatusOK)
	}

	// Traffic: refresh chains through the balancer until the first failure.
	type chain struct {
		acked   []string // access tokens issued with 200
		inDoubt string   // the refresh token whose redemption failed
	}
	chains := make([]*chain, 4)
	var wg sync.WaitGroup
	for i := range chains {
		ch := &chain{}
		chains[i] = ch
		tok := c.grant(ctx, t, r, c.b)
		ch.acked = append(ch.acked, tok.AccessToken)
		wg.Go(func() {
			rt := tok.RefreshToken
			lb := &instance{name: "balancer", client: http.DefaultClient}
			for ctx.Err() == nil {
				tr, err := c.refresh(ctx, lb, rt)
				if err != nil || tr.Status != http.StatusOK {
					ch.inDoubt = rt
					return
				}
				ch.acked = append(ch.acked, tr.AccessToken)
				rt = tr.RefreshToken
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	time.Sleep(time.Second)

	if err := c.db.Halt(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	wg.Wait() // every chain has met the outage
	acked := 0
	for _, ch := range chains {
		acked += len(ch.acked)
	}

	// The issuer: 503 temporarily_unavailable at both instances.
	for _, in := range []*instance{c.a, c.b} {
		tr, err := c.refresh(ctx, in, live[0].RefreshToken)
		if tr.Status != http.StatusServiceUnavailable || tr.Error != "temporarily_unavailable" {
			t.Errorf("refresh at %s with the database down = %d %q, %v; want 503 temporarily_unavailable", in.name, tr.Status, tr.Error, err)
		}
		if status, _ := c.revoke(ctx, in, live[0].RefreshToken); status != http.StatusServiceUnavailable {
			t.Errorf("revoke at %s with the database down = %d, want 503", in.name, status)
		}
	}
	// The gateways, before maxStale: live tokens pass, revoked ones do not.
	for _, in := range []*instance{c.a, c.b} {
		c.mustCall(ctx, t, in, live[0].AccessToken, http.StatusOK)
		c.mustCall(ctx, t, in, revoked[0].AccessToken, http.StatusUnauthorized)
	}
	// Probe both gateways through the outage: a revoked token never passes.
	probeDone := make(chan struct{})
	var probe sync.WaitGroup
	var (
		mu          sync.Mutex
		lastLiveOK  time.Duration // since the stop
		revokedPass int
	)
	probe.Go(func() {
		for {
			select {
			case <-probeDone:
				return
			case <-time.After(200 * time.Millisecond):
			}
			for _, in := range []*instance{c.a, c.b} {
				if s, _, _ := c.call(ctx, in, revoked[1].AccessToken); s == http.StatusOK {
					mu.Lock()
					revokedPass++
					mu.Unlock()
				}
				// When the call was sent: the gateway accepted it no
				// earlier, and a loaded machine's slow answer does not
				// count against the gateway.
				sent := time.Since(stopped)
				if s, _, _ := c.call(ctx, in, live[1].AccessToken); s == http.StatusOK {
					mu.Lock()
					lastLiveOK = sent
					mu.Unlock()
				}
			}
		}
	})
	time.Sleep(time.Until(stopped.Add(maxStale + 2*time.Second)))
	// Past maxStale: both gateways fail closed.
	for _, in := range []*instance{c.a, c.b} {
		for _, tok := range []string{live[0].AccessToken, revoked[0].AccessToken} {
			c.mustCall(ctx, t, in, tok, http.StatusServiceUnavailable)
		}
	}

	close(probeDone)
	probe.Wait()
	if err := c.db.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	var recovered time.Duration
	for {
		tr, _ := c.refresh(ctx, c.a, live[1].RefreshToken)
		if tr.Status == http.StatusOK {
			recovered = time.Since(resumed)
			live[1].RefreshToken = tr.RefreshToken
			break
		}
		if time.Since(resumed) > 20*time.Second {
			t.Fatalf("the issuer still answers %d %q 20s after the database came back", tr.Status, tr.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var gatewayBack time.Duration
	for _, in := range []*instance{c.a, c.b} {
		for {
			s, _, _ := c.call(ctx, in, live[1].AccessToken)
			if s == http.StatusOK {
				break
			}
			if time.Since(resumed) > 20*time.Second {
				t.Fatalf("%s's gateway still answers %d 20s after the database came back", in.name, s)
			}
			time.Sleep(50 * time.Millisecond)
		}
		gatewayBack = max(gatewayBack, time.Since(resumed))
	}
	if revokedPass != 0 {
		t.Errorf("a revoked token passed a gateway %d times during the outage", revokedPass)
	}
	if lastLiveOK > maxStale+time.Second {
		t.Errorf("a gateway accepted a token %v into the outage, want refusals after %v", lastLiveOK, maxStale)
	}

	// Nothing acknowledged is lost.
	for _, in := range []*instance{c.a, c.b} {
		for _, ch := range chains {
			for _, tok := range ch.acked {
				c.mustCall(ctx, t, in, tok, http.StatusOK)
			}
		}
		for _, tok := range revoked {
			c.mustCall(ctx, t, in, tok.AccessToken, http.StatusUnauthorized)
			if tr, _ := c.refresh(ctx, in, tok.RefreshToken); tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant" {
				t.Errorf("refresh of a grant revoked before the outage at %s = %d %q, want 400 invalid_grant", in.name, tr.Status, tr.Error)
			}
		}
	}
	for i, tok := range live {
		in := []*instance{c.a, c.b}[i%2]
		if tr, err := c.refresh(ctx, in, tok.RefreshToken); tr.Status != http.StatusOK {
			t.Errorf("refresh token issued before the outage, at %s after = %d %q, %v; want 200", in.name, tr.Status, tr.Error, err)
		}
	}
	// A redemption cut by the stop may or may not have committed: its
	// refresh token now either redeems or counts as reuse.
	redeemed := 0
	for _, ch := range chains {
		tr, _ := c.refresh(ctx, c.a, ch.inDoubt)
		switch {
		case tr.Status == http.StatusOK:
			redeemed++
		case tr.Status != http.StatusBadRequest || tr.Error != "invalid_grant":
			t.Errorf("refresh token in flight at the stop, after = %d %q; want 200 or 400 invalid_grant", tr.Status, tr.Error)
		}
	}
	t.Logf("database stopped under traffic for %v: issuer 503 temporarily_unavailable at once; gateways accepted live tokens for %v, then 503 (max stale %v); after restart the issuer answered again in %v, both gateways in %v; %d access tokens acknowledged before the stop all valid, %d revocations all in force; %d of %d refresh tokens whose redemption the stop cut redeemed after it (the rest had committed)",
		resumed.Sub(stopped).Round(100*time.Millisecond), lastLiveOK.Round(100*time.Millisecond), maxStale, recovered.Round(time.Millisecond), gatewayBack.Round(time.Millisecond), acked, len(revoked), redeemed, len(chains))
}
