package gateway

import (
	"context"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// DefaultStreamCheckInterval is how often open event streams are checked
// against their tokens' expiry, Config.Revocations and introspection
// deadlines.
const DefaultStreamCheckInterval = time.Second

// streamSet is the registry of the requests in flight upstream, event
// streams (GET streams and SSE answers) and calls whose answer has not
// begun alike, so that those of an expired token, of a revoked token or
// grant, and those of an introspected token whose answer may no longer
// be reused (principal.recheck: it may have been revoked at the issuer),
// are ended within one check interval rather than when they end, and
// GET streams when the gateway's configuration is unloaded (close). One
// goroutine checks them all, and only while there are any: it ends when
// the last has closed, so a stream costs one map entry, not a goroutine.
type streamSet struct {
	revocations Revocations // nil: introspection deadlines only
	// published reports whether the key that verified a token is still
	// published (Gateway.keyPublished); nil when no key is withdrawn.
	published func(*principal) bool
	now       func() time.Time
	interval  time.Duration
	log       *zap.Logger

	mu sync.Mutex
	// max bounds the requests in flight of one principal
	// (principal.holder: reserve), by counts them; maxClient and
	// byClient do the same for each client of a principal (clientKey).
	max, maxClient int
	by, byClient   map[string]int
	open           map[*exchange]bool // true: its answer is an event stream (stream)
	// bodies are the requests counted by reserve whose body is being
	// read (reading), with the writer whose read deadline ends the read.
	bodies   map[*exchange]http.ResponseWriter
	closedAt time.Time // when close was called, zero before
	// stopping: stop was called (the process is exiting), and drained
	// is signalled when the last request reserve counted is released.
	stopping bool
	drained  *sync.Cond
	running  bool
	idle     *sync.Cond // signalled when the checker ends (tests wait on it)
	batch    []pending
}

func newStreamSet(r Revocations, now func() time.Time, interval time.Duration, max, maxClient int, log *zap.Logger) *streamSet {
	s := &streamSet{revocations: r, now: now, interval: interval, log: log, open: make(map[*exchange]bool), bodies: make(map[*exchange]http.ResponseWriter),
		max: max, maxClient: maxClient, by: make(map[string]int), byClient: make(map[string]int)}
	s.idle = sync.NewCond(&s.mu)
	s.drained = sync.NewCond(&s.mu)
	return s
}

// reserve counts a request of the principal holder, made by its client
// (clientKey), in flight: false, with nothing counted, when the
// principal has max in flight already, or that client maxClient
// (perClient). Each holds a connection to the upstream, and an event
// stream holds it for as long as the client keeps it: without a bound,
// one token could hold as many as it opens, and without the client's,
// one client of a user (a runaway agent) all of the user's. release
// ends what reserve counted.
func (s *streamSet) reserve(holder, client string) (ok, perClient bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, c := s.by[holder], s.byClient[client]
	switch {
	case n >= s.max:
		return false, false
	case c >= s.maxClient:
		return false, true
	}
	s.by[holder], s.byClient[client] = n+1, c+1
	return true, false
}

func (s *streamSet) release(holder, client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	uncount(s.by, holder)
	uncount(s.byClient, client)
	if s.stopping && len(s.by) == 0 {
		s.drained.Broadcast()
	}
}

// uncount takes one from by[key], deleting the key at zero.
func uncount(by map[string]int, key string) {
	if n := by[key] - 1; n > 0 {
		by[key] = n
	} else {
		delete(by, key)
	}
}

// add registers the stream of x, whose cancel ends it.
func (s *streamSet) add(x *exchange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping || !s.closedAt.IsZero() && x.listens() {
		why := endReloaded
		if s.stopping {
			why = endStopped
		}
		x.end(why)
		return
	}
	// A GET is a stream, and so is a subscriptions/listen (listens) from
	// the start: one its server has not answered yet ends at its token's
	// expiry as a GET does, not only on revocation as a pending call.
	s.open[x] = x.listens()
	if !s.running {
		s.running = true
		go s.check()
	}
}

// reading registers x, counted by reserve, while its body is read, until
// read: a body may arrive for as long as its client likes (Caddy sets no
// read_body timeout by default), and a revoked token's holder would keep
// its principal's max_in_flight meanwhile, past the revocation. The
// checker ends the read of one a stream would end (endBody). False, x
// ended and not registered, when the process is stopping.
func (s *streamSet) reading(x *exchange, w http.ResponseWriter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		x.endedBy.Store(endStopped)
		return false
	}
	s.bodies[x] = w
	if !s.running {
		s.running = true
		go s.check()
	}
	return true
}

// read ends what reading registered.
func (s *streamSet) read(x *exchange) {
	s.mu.Lock()
	delete(s.bodies, x)
	s.mu.Unlock()
}

// endBody ends the read of x's body for why, if it is still being read:
// the read fails at once (a read deadline in the past), and admit answers
// why. s.mu is held.
func (s *streamSet) endBody(x *exchange, why *authError) {
	w, ok := s.bodies[x]
	if !ok {
		return
	}
	delete(s.bodies, x)
	x.endedBy.Store(why)
	if err := http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0)); err != nil {
		s.log.Warn("could not end the read of a request body", zap.Error(err))
	}
}

// stream marks x's answer as an event stream: from now on it also ends
// with its token's expiry, its introspection answer's reuse, and a reload
// (ended).
func (s *streamSet) stream(x *exchange) {
	s.mu.Lock()
	if _, ok := s.open[x]; ok {
		s.open[x] = true
	}
	s.mu.Unlock()
}

func (s *streamSet) remove(x *exchange) {
	s.mu.Lock()
	delete(s.open, x)
	s.mu.Unlock()
}

// close ends every open GET stream (listens: a subscriptions/listen
// too) and every one opened later: the
// configuration the streams were authorized under is gone (a reload), and
// its revocations and policy are no longer kept current. Clients open
// them again, and the configuration now running authorizes them afresh.
// An event-stream answer to a POST (a tool call's) runs on to its end,
// which cutting would lose, for at most closeGrace: it stays checked
// against its token's expiry and revocations meanwhile, and the grace
// bounds what runs under a policy that is gone whatever the revocation
// source (a gateway in front of a remote issuer has none).
//
// closeGrace is the default revocation_max_stale, when an issuer's record
// of revocations, no longer kept current, would end them as stale anyway.
func (s *streamSet) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closedAt = s.now()
	n := 0
	for x := range s.open {
		if x.listens() {
			x.end(endReloaded)
			delete(s.open, x)
			n++
		}
	}
	if n > 0 {
		s.log.Info("event streams closed: the gateway's configuration was unloaded", zap.Int("streams", n))
	}
}

// listens reports whether x opens a stream of the server's messages, kept
// for as long as its client likes and carrying no answer of its own: a
// GET stream, or a 2026-07-28 subscriptions/listen (that revision's GET
// stream). close ends those at once.
func (x *exchange) listens() bool { return x.r.Method == http.MethodGet || x.listen }

// stop ends every request in flight upstream, calls and their answers
// too, and waits, at most wait, until every request the gateway holds
// has ended and written its audit event (released what reserve
// counted): the process is exiting, and would otherwise exit with them
// unaudited, though the upstream had them. It reports whether all
// ended in time.
func (s *streamSet) stop(wait time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	if s.closedAt.IsZero() {
		s.closedAt = s.now()
	}
	for x := range s.open {
		x.end(endStopped)
		delete(s.open, x)
	}
	for x := range s.bodies {
		s.endBody(x, endStopped)
	}
	late := false
	t := time.AfterFunc(wait, func() {
		s.mu.Lock()
		late = true
		s.drained.Broadcast()
		s.mu.Unlock()
	})
	defer t.Stop()
	for len(s.by) > 0 && !late {
		s.drained.Wait()
	}
	if n := len(s.by); n > 0 {
		s.log.Warn("requests still in flight when the process exits, not audited", zap.Int("principals", n))
		return false
	}
	return true
}

// Stop ends every request in flight, not only GET streams, and waits at
// most wait until each has been audited; false if some had not. Call it
// instead of Close when the process is exiting: a request still in
// flight then is cut when it exits, and its audit event, written when it
// ends, would be lost.
func (g *Gateway) Stop(wait time.Duration) bool { return g.streams.stop(wait) }

// InFlight reports whether a request the gateway admitted has not ended
// yet (its audit event not written): after Close, a call runs on to its
// end, and must be stopped if the process exits first.
func (g *Gateway) InFlight() bool {
	s := g.streams
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.by) > 0
}

// StopWait is the wait to give Stop: a request it ends whose client has
// stopped reading returns once its writes are given up (endWriteGrace
// after), and is audited just after; a wait of no more than that gives
// up on it about when it returns, and its event is lost.
const StopWait = endWriteGrace + time.Second

// Close ends the gateway's open GET event streams, and any that open
// later, at once (see streamSet.close). Call it when the configuration it
// was made from is unloaded: after a reload, requests still running on
// the old configuration would otherwise keep their streams under a
// policy, principals and a revocation record that are no longer current.
func (g *Gateway) Close() { g.streams.close() }

// len is the number of open streams and bodies being read.
func (s *streamSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open) + len(s.bodies)
}

// check asks about every open stream once per interval and ends those
// whose token or grant was revoked or whose introspection answer ran
// out, until no stream is open.
func (s *streamSet) check() {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for range t.C {
		s.mu.Lock()
		if len(s.open) == 0 && len(s.bodies) == 0 {
			s.running = false
			s.idle.Broadcast()
			s.mu.Unlock()
			return
		}
		s.batch = s.batch[:0]
		for x, stream := range s.open {
			s.batch = append(s.batch, pending{x: x, stream: stream})
		}
		for x := range s.bodies {
			s.batch = append(s.batch, pending{x: x, body: true})
		}
		closedAt := s.closedAt
		s.mu.Unlock()
		now := s.now()
		for i, b := range s.batch {
			x := b.x
			if b.body {
				// A body arrives for as long as its client likes, as a
				// stream runs, and ends as a stream does: at its token's
				// expiry, its introspection answer's reuse (the token
				// may have been revoked at the issuer), 30 s after an
				// unload, and on revocation.
				if why := s.ended(x, true, now, closedAt); why != nil {
					s.mu.Lock()
					s.endBody(x, why)
					s.mu.Unlock()
				}
				s.batch[i] = pending{}
				continue
			}
			if why := s.ended(x, b.stream, now, closedAt); why != nil {
				// The token's names, escaped as in the audit events: a
				// remote issuer's may hold anything.
				principal, _, _ := auditText(x.p.subject, unbounded, false)
				client, _, _ := auditText(x.p.clientID, unbounded, false)
				s.log.Info("request to the upstream ended: "+why.desc,
					zap.String("principal", principal), zap.String("client", client))
				x.end(why)
				s.remove(x)
			}
			s.batch[i] = pending{}
		}
	}
}

// closeGrace: see close.
const closeGrace = 30 * time.Second

// end ends x for why: its upstream request is cancelled, and what is
// left of its answer's writes is given up after endWriteGrace. A client
// that stopped reading would otherwise keep Serve in a write to it, and
// the request counted in its principal's max_in_flight, for as long as it
// kept its connection open, the revoked token's holder as long as it
// liked.
func (x *exchange) end(why *authError) {
	x.endedBy.Store(why) // before cancel: Serve reads it once next returns
	x.cancel()
	x.rw.endWrites()
}

// endWriteGrace is how long the writes of an ended request may still
// take: the refusal that replaces an answer not begun, or the end of an
// event stream, which a client that reads receives at once.
const endWriteGrace = 5 * time.Second

// Why the registry ends a request: the log's reason, and the answer its
// client gets when none had begun (a JSON-mode upstream's pending call,
// a GET stream the upstream had not answered yet), the one a new request
// would get now rather than the proxy's 499 for a cancelled request.
var (
	endRevoked = invalidToken("the access token has been revoked")
	// endWithdrawn: the issuer no longer publishes the key that signed
	// the token, as if it had revoked every token the key signed.
	endWithdrawn = invalidToken("the key that signed the access token is no longer published")
	endExpired   = invalidToken("the access token has expired")
	endRecheck   = &authError{status: http.StatusServiceUnavailable, desc: "the token's introspection answer may no longer be reused; retry"}
	endUnloaded  = &authError{status: http.StatusServiceUnavailable, desc: "the gateway's configuration was unloaded " + closeGrace.String() + " ago; retry"}
	// endReloaded ends a GET stream at once when its configuration is
	// unloaded (close): one the upstream had not answered yet gets 503,
	// not the proxy's 499 (review s16b F5), and the client opens it again.
	endReloaded = &authError{status: http.StatusServiceUnavailable, desc: "the gateway's configuration was reloaded; retry"}
	// endStopped ends every request still in flight when the process
	// exits (stop).
	endStopped = &authError{status: http.StatusServiceUnavailable, desc: "the server is stopping; retry"}
)

// ended says why x must end, nil if it may go on; closedAt is when close
// was called (zero: not yet). A request whose answer has not begun as an
// event stream (stream false: a call to an upstream answering in JSON)
// ends on revocation only: it runs to its end past its token's expiry,
// its introspection answer's reuse and a reload, as a call it was
// authorized to make (review s15-fresh F2, F3); a stream goes on
// indefinitely, so it ends with any of them.
func (s *streamSet) ended(x *exchange, stream bool, now, closedAt time.Time) *authError {
	if !stream {
		return s.revoked(x)
	}
	if !closedAt.IsZero() && now.Sub(closedAt) >= closeGrace {
		return endUnloaded
	}
	if !x.p.expiry.IsZero() && !now.Before(x.p.expiry) {
		// A new request with the token would be refused (beyond the
		// verification leeway, which is for clock skew at the start).
		return endExpired
	}
	if !x.p.recheck.IsZero() && !now.Before(x.p.recheck) {
		// A new request would introspect the token again; the stream
		// is not asked, it ends, and the client reconnects.
		return endRecheck
	}
	return s.revoked(x)
}

// revoked says why x must end on its token's revocation, or the
// withdrawal of the key that signed it, nil if it may go on. A set that
// cannot tell (stale) ends it too: new requests are refused then as well.
func (s *streamSet) revoked(x *exchange) *authError {
	if s.published != nil && !s.published(x.p) {
		return endWithdrawn
	}
	if s.revocations == nil {
		return nil
	}
	switch revoked, err := s.revocations.Revoked(context.Background(), x.p.jti, x.p.grantID); {
	case err != nil:
		return errRevocationsUnknown
	case revoked:
		return endRevoked
	}
	return nil
}

// pending is an entry of the checker's batch.
type pending struct {
	x      *exchange
	stream bool
	body   bool // its body is being read (streamSet.bodies)
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
