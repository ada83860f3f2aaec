package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// pendingTTL is how long a user has to log in and decide.
const pendingTTL = 15 * time.Minute

// pendingRequests are authorization requests parked, bound to the browser
// that started them, while the user logs in or decides on consent.
type pendingRequests struct {
	store store.Store
	now   func() time.Time
	rand  io.Reader
	log   *zap.Logger
}

// save parks ar for the browser of s and returns its id.
func (p *pendingRequests) save(ctx context.Context, s *session, ar *authRequest) (string, error) {
	id, err := randomToken(p.rand, 24)
	if err != nil {
		return "", err
	}
	pa := pendingAuth{Browser: s.Browser, Request: *ar, ExpiresAt: p.now().Add(pendingTTL)}
	err = p.store.Update(ctx, func(tx store.Tx) error { return pendingIn(tx).create(id, &pa) })
	if err != nil {
		return "", fmt.Errorf("store pending request: %w", err)
	}
	return id, nil
}

// load returns the pending request id if it exists, is live, and
// was started by the browser of s.
func (p *pendingRequests) load(ctx context.Context, id string, s *session) (*pendingAuth, error) {
	if id == "" || len(id) > 100 || s == nil {
		return nil, errPendingGone
	}
	var pa *pendingAuth
	err := p.store.View(ctx, func(tx store.Tx) error {
		var err error
		pa, err = pendingIn(tx).get(id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errPendingGone
	}
	if err != nil {
		return nil, fmt.Errorf("load pending request: %w", err)
	}
	if !p.now().Before(pa.ExpiresAt) || pa.Browser != s.Browser {
		return nil, errPendingGone
	}
	return pa, nil
}

// delete forgets a pending request once it is answered.
func (p *pendingRequests) delete(ctx context.Context, id string) {
	err := p.store.Update(ctx, func(tx store.Tx) error { return pendingIn(tx).delete(id) })
	if err != nil {
		p.log.Warn("delete pending request", zap.Error(err))
	}
}
