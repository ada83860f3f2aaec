package issuer

import (
	"context"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// healthTimeout bounds a health check: an orchestrator's probe should get
// an answer even when the store hangs.
const healthTimeout = 5 * time.Second

type healthView struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// maxClockOffset is how far this instance's clock may be from the store
// server's: the skew instances sharing a store must keep to
// (accesstoken.Leeway), each deciding expiry, replay windows and the order
// of a revocation and an issuance by its own clock.
const maxClockOffset = accesstoken.Leeway

// handleHealth answers an orchestrator's probe: 200 {"status":"ok"} when
// the store answers a read, this instance's clock agrees with the store
// server's (a store shared by several instances), a signing key is
// loaded and the revocation set has caught up with the store within
// Config.RevocationMaxStale, and the keys were read within it past their
// re-read interval (past either the gateways of this process refuse
// every token), otherwise 503 with a short reason and Retry-After; the
// details go to the log, not to the caller.
func (i *Issuer) handleHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet, http.MethodHead)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	v, status := i.health.share(ctx, i.checkHealth)
	if status == http.StatusServiceUnavailable {
		// As every 503 of the issuer: a client that waits on the
		// instance (a deploy script, a probe that honours it) tries
		// again in a second rather than at once.
		w.Header().Set("Retry-After", retryAfter(storeRetryAfter))
	}
	writeNoStoreJSON(w, status, v)
}

// healthChecks lets probes share the check under way: /healthz is
// public, and each check reads the store (with PostgreSQL, a
// transaction and the server's clock, on pool connections the issuer's
// and gateways' requests wait for), so a flood of probes costs the
// database one check at a time per instance.
type healthChecks struct {
	mu     sync.Mutex
	done   chan struct{} // closed when the check under way ends; nil when none is
	v      healthView    // the last check's answer
	status int
}

// share answers with the check under way, or runs one. The check runs
// on a context of its own (healthTimeout) rather than the probe's that
// started it, so a probe that gives up fails no other probe's answer.
func (h *healthChecks) share(ctx context.Context, check func(context.Context) (healthView, int)) (healthView, int) {
	h.mu.Lock()
	if done := h.done; done != nil {
		h.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return healthView{Status: "unavailable", Reason: "store unreachable"}, http.StatusServiceUnavailable
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.v, h.status
	}
	done := make(chan struct{})
	h.done = done
	h.mu.Unlock()
	v, status := healthView{Status: "unavailable", Reason: "store unreachable"}, http.StatusServiceUnavailable
	defer func() {
		h.mu.Lock()
		h.v, h.status, h.done = v, status, nil
		h.mu.Unlock()
		close(done)
	}()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthTimeout)
	defer cancel()
	v, status = check(cctx)
	return v, status
}

// checkHealth is one health check (handleHealth).
func (i *Issuer) checkHealth(ctx context.Context) (healthView, int) {
	v, status := healthView{Status: "ok"}, http.StatusOK
	off, err := time.Duration(0), i.store.View(ctx, func(store.Tx) error { return nil })
	if err == nil {
		off, err = i.clockOffset(ctx)
	}
	if err != nil {
		i.log.Error("health check: store", zap.Error(err))
		v, status = healthView{Status: "unavailable", Reason: "store unreachable"}, http.StatusServiceUnavailable
	} else if off > maxClockOffset || off < -maxClockOffset {
		i.log.Error("health check: this instance's clock differs from the store server's; instances sharing the store must agree to within the allowed skew (NTP)",
			zap.Duration("offset", off), zap.Duration("allowed", maxClockOffset))
		v, status = healthView{Status: "unavailable", Reason: "clock differs from the store's"}, http.StatusServiceUnavailable
	} else if _, err := i.keys.current(ctx); err != nil {
		i.log.Error("health check: signing key", zap.Error(err))
		v, status = healthView{Status: "unavailable", Reason: "no signing key"}, http.StatusServiceUnavailable
	} else if i.revs.stale(i.now()) {
		// The gateways of this process refuse every token (fail
		// closed) while the store answers other reads.
		i.log.Error("health check: revocations", zap.Duration("max_stale", i.cfg.RevocationMaxStale), zap.Error(ErrRevocationsStale))
		v, status = healthView{Status: "unavailable", Reason: "revocations stale"}, http.StatusServiceUnavailable
	} else if i.keysStale(i.now()) {
		// So do they while the access-token keys cannot be read (a
		// record this build cannot parse), the revocations current.
		i.log.Error("health check: signing keys not read from the store lately; gateways fail closed",
			zap.Duration("age", i.keys.age()), zap.Duration("max_stale", i.cfg.RevocationMaxStale), zap.Error(i.keys.lastErr()))
		v, status = healthView{Status: "unavailable", Reason: "signing keys stale"}, http.StatusServiceUnavailable
	}
	return v, status
}

// clockOffset is how far this instance's clock is ahead of the store
// server's (store.ServerClock), less the read's round trip; zero for a
// store without a server clock (one process's: nobody to disagree with).
func (i *Issuer) clockOffset(ctx context.Context) (time.Duration, error) {
	sc, ok := i.backend.(store.ServerClock)
	if !ok {
		return 0, nil
	}
	before := i.now()
	at, err := sc.ServerTime(ctx)
	if err != nil {
		return 0, err
	}
	after := i.now()
	mid := before.Add(after.Sub(before) / 2)
	off := mid.Sub(at)
	// The server read its clock somewhere within the round trip.
	slack := after.Sub(before) / 2
	switch {
	case off > slack:
		return off - slack, nil
	case off < -slack:
		return off + slack, nil
	}
	return 0, nil
}
