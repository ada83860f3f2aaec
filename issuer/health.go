package issuer

import (
	"context"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// healthTimeout bounds a health check: an orchestrator's probe should get
// an answer even when the store hangs.
const healthTimeout = 5 * time.Second

type healthView struct {
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// handleHealth answers an orchestrator's probe: 200 {"status":"ok"} when
// the store answers a read and a signing key is loaded, otherwise 503 with
// a short reason; the details go to the log, not to the caller.
func (i *Issuer) handleHealth(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet, http.MethodHead)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	v, status := healthView{Status: "ok"}, http.StatusOK
	if err := i.store.View(ctx, func(store.Tx) error { return nil }); err != nil {
		i.log.Error("health check: store", zap.Error(err))
		v, status = healthView{Status: "unavailable", Reason: "store unreachable"}, http.StatusServiceUnavailable
	} else if _, err := i.keys.current(ctx); err != nil {
		i.log.Error("health check: signing key", zap.Error(err))
		v, status = healthView{Status: "unavailable", Reason: "no signing key"}, http.StatusServiceUnavailable
	}
	writeNoStoreJSON(w, status, v)
}
