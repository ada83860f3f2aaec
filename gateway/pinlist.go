package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// maxPinPages bounds the pages of one tools/list fetch.
const maxPinPages = 100

// pinFetchTimeout bounds each tools/list fetch the gateway makes itself,
// every page of it (a variable for tests).
var pinFetchTimeout = 10 * time.Second

// pinFetchPrefix begins the JSON-RPC id of the gateway's own tools/list
// requests. Each gets its own id: a server refuses an id already in
// flight in the session, and several gateways (instances) may fetch in
// one session at once.
const pinFetchPrefix = "mcp-auth-pin-"

// errUpstreamSessionEnded: the upstream answered the gateway's tools/list
// in the caller's session 404, as MCP has a server answer a request in a
// session it ended (an idle timeout, a DELETE).
var errUpstreamSessionEnded = errors.New("tools/list: the upstream ended the session")

// pinFetch is one tools/list fetch that callers of the same session wait
// for together.
type pinFetch struct {
	done chan struct{}
	err  error
	// unstarted: the caller that began it ended while it waited for a
	// slot, so no fetch was made; those waiting for it try again.
	unstarted bool
}

// checkPins refuses the tools/call messages of an authorized request
// whose tool's current definition is not the pinned one. A tool no list
// has shown (or after the server said its list changed) makes the
// gateway fetch tools/list itself first; if the definition still cannot
// be learned the call is refused in either mode: a tool the server does
// not list was never reviewed, and the call fails closed.
func (g *Gateway) checkPins(x *exchange, next Next) *refusal {
	if g.pins == nil {
		return nil
	}
	ctx := x.r.Context()
	for i := range x.msgs {
		m := &x.msgs[i]
		if !isToolCall(m) {
			continue
		}
		v := g.pins.callVerdict(ctx, m.Name)
		if v == pinUnknown {
			var err error
			// A list_changed that arrives while the list is fetched leaves
			// the definitions stale; one more fetch usually settles it (a
			// server that keeps changing its list is refused).
			key := fetchKey(x)
			for try := 0; try < 2 && v == pinUnknown && err == nil && !g.pins.unlistedLately(key, m.Name); try++ {
				err = g.pins.fetchOnce(ctx, key, x.p.holder, func() error {
					// The wait for a slot may have been long: a tools/list
					// sent on behalf of a token revoked meanwhile would
					// reach the upstream as that caller (its session, its
					// forwarded identity).
					if g.streams.revoked(x) != nil {
						return errFetchCallerRevoked
					}
					return g.learnTools(x, next)
				})
				v = g.pins.callVerdict(ctx, m.Name)
			}
			if err != nil && !errors.Is(err, errFetchCallerRevoked) {
				// It may quote the upstream's answer (its JSON-RPC error,
				// its type), as long as an answer or a header may be,
				// holding what a terminal acts on: cut and escaped as a
				// reason in an audit event is.
				msg, _, _ := auditText(err.Error(), maxAuditText, false)
				g.log.Warn("tool definitions not learned", zap.String("resource", g.cfg.Resource), zap.String("error", msg))
			}
			// The fetch may have taken seconds (pinFetchTimeout a try),
			// and the call is registered with the streams only once
			// sent: a token revoked, or its key withdrawn, meanwhile
			// would have its call reach the upstream and its tool run.
			if why := g.streams.revoked(x); why != nil {
				f := g.authRefusal(why.of(x.dpop))
				f.id = singleID(x)
				return f
			}
			switch {
			case errors.Is(err, errPinsUnavailable) && v == pinUnknown:
				// The tool's pin could not be recorded: refused, but
				// nothing is remembered of it, so the next call tries
				// again.
				v = pinUnavailable
			case errors.Is(err, errUpstreamSessionEnded):
				// As the upstream answers a request in a session it
				// ended: the client starts a new one (MCP), which a
				// 502 would not have it do.
				return &refusal{status: http.StatusNotFound, code: codeSessionNotFound, message: "Session not found", id: singleID(x)}
			case err != nil && !errors.Is(err, errPinsUnavailable):
				return &refusal{status: http.StatusBadGateway, code: codeRefused, id: singleID(x),
					message: fmt.Sprintf("could not learn the definition of tool %q from the upstream", m.Name)}
			}
		}
		d := &x.dec[i]
		if v == pinOK {
			if d.argument, d.reason = defaultRefusal(d.args, x.p, m.Arguments, g.pins.view.Load().defaults.at(m.Name)); d.reason != "" {
				d.allow, d.scopeOnly = false, false
				return g.denial(x)
			}
			continue
		}
		d.allow, d.scopeOnly, d.rule = false, false, "pin_tools"
		d.reason = v.reason()
		if v == pinUnknown {
			d.reason = "tool is not listed by the server"
		}
		if v == pinUnavailable {
			d.reason += "; retry later"
			g.metrics.ToolPin("refused")
			return &refusal{status: http.StatusServiceUnavailable, code: codeRefused, id: singleID(x), retryAfter: "1",
				message: fmt.Sprintf("tool %q: %s", m.Name, d.reason),
				data:    map[string]string{"reason": d.reason, "rule": d.rule, "tool": m.Name}}
		}
		g.metrics.ToolPin("refused")
		f := g.denial(x)
		f.data = map[string]string{"reason": d.reason, "rule": d.rule, "tool": m.Name}
		return f
	}
	return nil
}

// fetchKey is who may share a tools/list fetch: the callers of one
// session, or without a session (2026-07-28, or a 2025 server without
// sessions) the requests of one principal, whom the fetch is made for
// (a server may list tools by identity).
func fetchKey(x *exchange) string {
	if x.session != "" {
		return "s\x00" + x.session
	}
	return "p\x00" + x.p.client
}

// clientKey names one client of a principal: its issuer, type and
// subject, the client and the outermost actor (an agent acting through
// the client is a client of its own).
func clientKey(p *principal) string {
	return p.issuer + "\x00" + principalKind(p) + "\x00" + p.subject + "\x00" + p.clientID + "\x00" + outermostActor(p)
}

// errFetchCallerRevoked: the caller of a fetch was revoked while it
// waited for a slot, and no fetch was made (checkPins).
var errFetchCallerRevoked = errors.New("the caller's token was revoked before its tools/list fetch")

// fetchOnce runs fetch, for holder (principal.holder), unless one for the
// same key (fetchKey) is under way, in which case it waits for that one
// (or, should its caller end before it got a slot, runs fetch itself);
// at most maxPinFetches run at once, maxPinFetchesPerPrincipal of them
// for one holder.
func (s *pinSet) fetchOnce(ctx context.Context, key, holder string, fetch func() error) error {
	s.fmu.Lock()
	for {
		c, ok := s.inflight[key]
		if !ok {
			break
		}
		s.fmu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !c.unstarted {
			return c.err
		}
		s.fmu.Lock()
	}
	c := &pinFetch{done: make(chan struct{})}
	s.inflight[key] = c
	s.fmu.Unlock()
	defer func() {
		s.fmu.Lock()
		delete(s.inflight, key)
		s.fmu.Unlock()
		close(c.done)
	}()
	defer func() {
		if v := recover(); v != nil {
			// Those waiting get a failed fetch, not an empty list (the
			// tool "not listed"); the panic goes on to the server.
			c.err = fmt.Errorf("tools/list fetch panicked: %v", v)
			panic(v)
		}
	}()
	release, err := s.takeSlot(ctx, holder)
	if err != nil {
		c.err, c.unstarted = err, true
		return c.err
	}
	defer release()
	gen := s.gen.Load()
	if c.err = fetch(); errors.Is(c.err, errFetchCallerRevoked) {
		// Nothing was fetched: those waiting for it fetch themselves.
		c.unstarted = true
	}
	if c.err == nil {
		s.remember(key, fetchedList{at: s.g.now(), gen: gen})
	}
	return c.err
}

// takeSlot waits, until ctx ends, for one of holder's fetch slots and
// then for one of all principals': a principal waiting for its own holds
// none of the others'.
func (s *pinSet) takeSlot(ctx context.Context, holder string) (release func(), err error) {
	s.fmu.Lock()
	h := s.holders[holder]
	if h == nil {
		h = &heldFetches{slots: make(chan struct{}, maxPinFetchesPerPrincipal)}
		s.holders[holder] = h
	}
	h.users++
	s.fmu.Unlock()
	leave := func() {
		s.fmu.Lock()
		if h.users--; h.users == 0 {
			delete(s.holders, holder)
		}
		s.fmu.Unlock()
	}
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
	select {
	case s.fetches <- struct{}{}:
	case <-ctx.Done():
		<-h.slots
		leave()
		return nil, ctx.Err()
	}
	return func() {
		<-s.fetches
		<-h.slots
		leave()
	}, nil
}

// unlistedLately reports whether a fetch for key completed within
// pinFetchMemory, the server has not said its list changed since it
// began, and tool is not in the current set: that fetch stands. A tool
// in it whose pin was forgotten is fetched again, to be pinned anew.
func (s *pinSet) unlistedLately(key, tool string) bool {
	if _, ok := s.view.Load().current.get(tool); ok {
		return false
	}
	s.fmu.Lock()
	f, ok := s.fetched[key]
	s.fmu.Unlock()
	return ok && f.gen == s.gen.Load() && s.g.now().Sub(f.at) < pinFetchMemory
}

// remember records a completed fetch for key, forgetting those past
// pinFetchMemory, and the oldest when maxPinFetchMemory are still held.
func (s *pinSet) remember(key string, f fetchedList) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if _, ok := s.fetched[key]; !ok && len(s.fetched) >= maxPinFetchMemory {
		oldest := ""
		for k, o := range s.fetched {
			if f.at.Sub(o.at) >= pinFetchMemory {
				delete(s.fetched, k)
			} else if oldest == "" || o.at.Before(s.fetched[oldest].at) {
				oldest = k
			}
		}
		if len(s.fetched) >= maxPinFetchMemory {
			delete(s.fetched, oldest)
		}
	}
	s.fetched[key] = f
}

// learnTools asks the upstream for tools/list, every page, on the
// caller's behalf (its session, protocol version and forwarded identity)
// and learns each definition as if a listing had passed. The definitions
// it finds become the whole current set. An error wrapping
// errPinsUnavailable says some definition's pin could not be recorded.
func (g *Gateway) learnTools(x *exchange, next Next) error {
	gen := g.pins.gen.Load()
	ctx := x.r.Context()
	// An upstream that never finishes its answer (an event stream that
	// stays open without it), or answers page after page just in time,
	// must not hold the caller, or one of the maxPinFetches slots every
	// session's first calls share. Other callers may wait for this fetch
	// (fetchOnce): it does not end when this caller goes away.
	fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pinFetchTimeout)
	defer cancel()
	seen := map[string]string{}
	var unrecorded error
	cursor := ""
	for page := 0; ; page++ {
		if page == maxPinPages {
			return fmt.Errorf("tools/list has more than %d pages", maxPinPages)
		}
		msg, err := g.fetchToolsPage(fetchCtx, x, next, cursor)
		if err != nil {
			return err
		}
		_, err = mcpparse.FilterTools(msg, func(name string, def []byte) bool {
			// A definition whose pin could not be recorded stays out of
			// the current set, so that a call of it fetches again.
			switch _, hash, err := g.pins.listed(ctx, name, def); {
			case err != nil:
				unrecorded = err
			case hash != "":
				seen[name] = hash
			}
			return true
		})
		if err != nil {
			return fmt.Errorf("tools/list answer: %w", err)
		}
		var page struct {
			Error  json.RawMessage `json:"error"`
			Result struct {
				NextCursor *string `json:"nextCursor"`
			} `json:"result"`
		}
		if err := json.Unmarshal(msg, &page); err != nil {
			return fmt.Errorf("tools/list answer: %w", err)
		}
		if page.Error != nil {
			return fmt.Errorf("tools/list answered an error: %s", page.Error)
		}
		if page.Result.NextCursor == nil || *page.Result.NextCursor == "" {
			break
		}
		cursor = *page.Result.NextCursor
	}
	g.pins.update(func(v *pinView) {
		v.current = toolMapOf(seen)
		if g.pins.gen.Load() == gen {
			v.stale = false
		}
	})
	return unrecorded
}

// fetchToolsPage sends one tools/list request through next, within ctx,
// and returns the response message that answers it.
func (g *Gateway) fetchToolsPage(ctx context.Context, x *exchange, next Next, cursor string) ([]byte, error) {
	params := map[string]any{}
	if cursor != "" {
		params["cursor"] = cursor
	}
	if meta := callerMeta(x); meta != nil {
		params["_meta"] = meta
	}
	var nonce [8]byte
	rand.Read(nonce[:])
	fetchID := strconv.Quote(pinFetchPrefix + hex.EncodeToString(nonce[:]))
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": json.RawMessage(fetchID), "method": "tools/list", "params": params})
	if err != nil {
		return nil, err
	}
	if f := g.cfg.OwnRequestContext; f != nil {
		ctx = f(ctx)
	}
	// The client's header is edited in place as for its own request
	// (Caddy's placeholders read that map), and put back once the fetch is
	// done.
	req, e := g.nextRequest(x, ctx, body, io.NopCloser(bytes.NewReader(body)))
	defer e.restore()
	req.Method = http.MethodPost
	for _, name := range [...]string{"Accept-Encoding", "Content-Type", "Accept", mcpparse.HeaderName, mcpparse.HeaderMethod} {
		e.removeAll(name)
	}
	// The client's Mcp-Param-* fields are checked (checkParams) against the
	// definitions this fetch learns, so only after it: none may go with it
	// (tools/list has no parameters), or a router before the upstream that
	// reads them would choose where the pinned definitions come from.
	for k := range e.h {
		if isParamHeader(k) {
			e.remove(k)
		}
	}
	e.set(setContentType, "application/json")
	e.set(setAccept, "application/json, text/event-stream")
	if x.headerChecked {
		e.set(setMethod, "tools/list")
	}

	rec := &captureWriter{header: http.Header{}}
	err = serveCaptured(next, rec, req)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("tools/list: no complete answer within %v", pinFetchTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("tools/list: %w", err)
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status == http.StatusNotFound && x.session != "" {
		return nil, errUpstreamSessionEnded
	}
	if rec.status != http.StatusOK || rec.overflow {
		return nil, fmt.Errorf("tools/list: upstream answered %d", rec.status)
	}
	mt, _, _ := mime.ParseMediaType(rec.header.Get("Content-Type"))
	switch mt {
	case "application/json":
		return rec.body.Bytes(), nil
	case "text/event-stream":
		rd := mcpparse.NewReader(&rec.body, maxFilteredBody)
		for {
			ev, err := rd.Next()
			if err != nil {
				return nil, errors.New("tools/list: no answer in the event stream")
			}
			if ev.Data == "" {
				continue
			}
			msg := []byte(ev.Data)
			if id, err := mcpparse.ResponseID(msg); err == nil && mcpparse.SameID(id, []byte(fetchID)) {
				return msg, nil
			}
		}
	}
	return nil, fmt.Errorf("tools/list: upstream answered Content-Type %s", strconv.Quote(mt))
}

// serveCaptured runs next for the gateway's own request. A handler that
// aborts its answer (http.ErrAbortHandler, as net/http/httputil's reverse
// proxy does when the upstream's body fails midway) aborts only this
// request, not the caller's.
func serveCaptured(next Next, w *captureWriter, r *http.Request) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			err = errors.New("the answer was aborted")
		}
	}()
	return next.ServeHTTP(w, r)
}

// callerMeta is the _meta of the caller's first message that has one,
// without its progress token: in 2026-07-28 it carries what every request
// must (protocol version, client info and capabilities). nil when none.
func callerMeta(x *exchange) map[string]json.RawMessage {
	for i := range x.msgs {
		if x.msgs[i].ProtocolVersion == "" {
			continue
		}
		var m struct {
			Params struct {
				Meta map[string]json.RawMessage `json:"_meta"`
			} `json:"params"`
		}
		// Parse read the message strictly, so this reads the same members.
		if json.Unmarshal(x.msgs[i].Raw, &m) == nil && m.Params.Meta != nil {
			delete(m.Params.Meta, "progressToken")
			return m.Params.Meta
		}
	}
	return nil
}

// captureWriter holds the answer to the gateway's own request.
type captureWriter struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	overflow bool
}

func (c *captureWriter) Header() http.Header { return c.header }

func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 && code >= 200 {
		c.status = code
	}
}

func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.body.Len()+len(b) > maxFilteredBody {
		c.overflow = true
		return 0, errors.New("tools/list answer too large")
	}
	return c.body.Write(b)
}
