package issuer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
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

// answer finishes pending request id with the answer loc to the consent
// page's decision, for a repeat of it (answeredDecision); a failure is
// logged, as delete's.
func (p *pendingRequests) answer(ctx context.Context, id string, s *session, decision, loc string) {
	a, err := newAnswer(p.rand, id, s, decision, loc, p.now())
	if err == nil {
		err = p.store.Update(ctx, func(tx store.Tx) error {
			if err := pendingIn(tx).delete(id); err != nil {
				return err
			}
			return answeredIn(tx).put(id, a)
		})
	}
	if err != nil {
		p.log.Warn("finish pending request", zap.Error(err))
	}
}

// answered returns the answer the browser and user of s got within
// answeredTTL to decision on the consent page of pending request id, or
// "" when there is none. An Allow's answer is given while its code is
// unredeemed only: the code sent again once redeemed would complete the
// request twice, and the client's second redemption of it, a replay,
// would revoke the grant the first one created (RFC 6749 section 4.1.2).
func (p *pendingRequests) answered(ctx context.Context, id string, s *session, decision string) (string, error) {
	if id == "" || len(id) > 100 || s == nil || s.User == "" || decision == "" {
		return "", nil
	}
	var loc string
	err := p.store.View(ctx, func(tx store.Tx) error {
		a, err := answeredIn(tx).get(id)
		switch {
		case err != nil:
			return err
		case !p.now().Before(a.ExpiresAt) || a.Browser != s.Browser || a.User != s.User || a.Decision != decision:
			return nil
		}
		l, err := openAnswer(id, a.Sealed)
		if err != nil {
			return fmt.Errorf("open answered request: %w", err)
		}
		if decision == "approve" {
			u, err := url.Parse(l)
			if err != nil {
				return fmt.Errorf("open answered request: %w", err)
			}
			// The redirect URI's own query carries no code (withQuery).
			ac, err := codesIn(tx).get(u.Query().Get("code"))
			if errors.Is(err, store.ErrNotFound) || err == nil && ac.Redeemed {
				return nil
			}
			if err != nil {
				return err
			}
		}
		loc = l
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("load answered request: %w", err)
	}
	return loc, nil
}
