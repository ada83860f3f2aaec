package issuer

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/memory"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store/storetest"
)

// TestPendingRequestLivesFifteenMinutes: README (Limits, signed-in
// users' writes): a pending authorization request waits "15 minutes for
// consent or a new sign-in", in minutes, not through pendingTTL: it is
// there a moment before, and gone at 15 minutes.
func TestPendingRequestLivesFifteenMinutes(t *testing.T) {
	clock := storetest.NewClock(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	p := &pendingRequests{store: memory.New(memory.Options{Now: clock.Now}), now: clock.Now, rand: rand.Reader, log: zap.NewNop()}
	s := &session{Browser: "browser-1"}
	id, err := p.save(t.Context(), s, &authRequest{ClientID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(15*time.Minute - time.Second)
	if _, err := p.load(t.Context(), id, s); err != nil {
		t.Errorf("pending request 15 minutes less a second after it was made: %v, want it", err)
	}
	clock.Advance(time.Second)
	if _, err := p.load(t.Context(), id, s); !errors.Is(err, errPendingGone) {
		t.Errorf("pending request 15 minutes after it was made: %v, want %v", err, errPendingGone)
	}
}
