package gateway

import (
	"context"
	"mime"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// DefaultStreamCheckInterval is how often open event streams are checked
// against Config.Revocations and introspection deadlines.
const DefaultStreamCheckInterval = time.Second

// streamSet is the registry of open event streams (GET streams and SSE
// answers), so that the streams of a revoked token or grant, and those of
// an introspected token whose answer may no longer be reused
// (principal.recheck: it may have been revoked at the issuer), are closed
// within one check interval rather than when they end. One goroutine
// checks them all, and only while there are any: it ends when the last
// stream has closed, so a stream costs one map entry, not a goroutine.
type streamSet struct {
	revocations Revocations // nil: introspection deadlines only
	now         func() time.Time
	interval    time.Duration
	log         *zap.Logger

	mu      sync.Mutex
	open    map[*exchange]struct{}
	running bool
	idle    *sync.Cond // signalled when the checker ends (tests wait on it)
	batch   []*exchange
}

func newStreamSet(r Revocations, now func() time.Time, interval time.Duration, log *zap.Logger) *streamSet {
	s := &streamSet{revocations: r, now: now, interval: interval, log: log, open: make(map[*exchange]struct{})}
	s.idle = sync.NewCond(&s.mu)
	return s
}

// add registers the stream of x, whose cancel ends it.
func (s *streamSet) add(x *exchange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open[x] = struct{}{}
	if !s.running {
		s.running = true
		go s.check()
	}
}

func (s *streamSet) remove(x *exchange) {
	s.mu.Lock()
	delete(s.open, x)
	s.mu.Unlock()
}

// len is the number of open streams.
func (s *streamSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// check asks about every open stream once per interval and ends those
// whose token or grant was revoked or whose introspection answer ran
// out, until no stream is open.
func (s *streamSet) check() {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for range t.C {
		s.mu.Lock()
		if len(s.open) == 0 {
			s.running = false
			s.idle.Broadcast()
			s.mu.Unlock()
			return
		}
		s.batch = s.batch[:0]
		for x := range s.open {
			s.batch = append(s.batch, x)
		}
		s.mu.Unlock()
		now := s.now()
		for i, x := range s.batch {
			if reason := s.ended(x, now); reason != "" {
				s.log.Info("event stream closed: "+reason,
					zap.String("principal", x.p.subject), zap.String("client", x.p.clientID))
				x.cancel()
				s.remove(x)
			}
			s.batch[i] = nil
		}
	}
}

// ended says why x's stream must end, "" if it may go on.
func (s *streamSet) ended(x *exchange, now time.Time) string {
	if !x.p.recheck.IsZero() && !now.Before(x.p.recheck) {
		// A new request would introspect the token again; the stream
		// is not asked, it ends, and the client reconnects.
		return "its introspection answer may no longer be reused"
	}
	if s.revocations == nil {
		return ""
	}
	// A set that cannot tell (stale) closes the stream too: new requests
	// are refused then as well.
	if revoked, err := s.revocations.Revoked(context.Background(), x.p.jti, x.p.grantID); revoked || err != nil {
		return "its access token or grant was revoked, or revocations cannot be checked"
	}
	return ""
}

// waitIdle waits until the checker has ended (no stream open).
func (s *streamSet) waitIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.running {
		s.idle.Wait()
	}
}

// mediaType is the media type mime.ParseMediaType reads in a Content-Type
// ("" when it cannot), without its allocations for the values upstreams
// send.
func mediaType(ct string) string {
	switch ct {
	case "application/json", "text/event-stream":
		return ct
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt
}

// isEventStream reports whether a Content-Type is text/event-stream,
// without the allocations of mime.ParseMediaType.
func isEventStream(ct string) bool {
	const mt = "text/event-stream"
	ct = strings.TrimLeft(ct, " \t")
	if len(ct) < len(mt) || !strings.EqualFold(ct[:len(mt)], mt) {
		return false
	}
	rest := ct[len(mt):]
	return rest == "" || rest[0] == ';' || rest[0] == ' ' || rest[0] == '\t'
}
