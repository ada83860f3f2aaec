package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Introspector asks an authorization server about an opaque access token
// (RFC 7662). Introspect returns the body of a 200 answer; an error means
// the server could not say (unreachable, an error status, an answer too
// large), and the request is refused with 503.
type Introspector interface {
	Introspect(ctx context.Context, token string) ([]byte, error)
}

// Introspection defaults.
const (
	DefaultIntrospectionCache = time.Minute
	DefaultInactiveCache      = 10 * time.Second
	inactiveCacheSize         = 10000
)

// Limits on the calls of the introspection endpoint (review s13-dos F4).
const (
	// maxIntrospectionsInFlight bounds the calls one gateway has open at
	// once. Anyone can send a made-up opaque token, and each distinct one
	// costs a call made with the gateway's own credentials: unbounded, a
	// flood of them gets the gateway's client throttled by the issuer
	// (or makes it check the gateway's secret over and over), and then
	// every user whose token is not cached is refused. Bounded, the
	// flood's excess is refused here, as if the endpoint were
	// unavailable, and the issuer keeps answering the calls that go out.
	maxIntrospectionsInFlight = 16
	// maxIntrospectionsPerAddress is how many of those calls the tokens
	// of one client address (Config.ClientAddr; an IPv6 /64 is one) may
	// hold: made-up tokens from one address, each call held as long as
	// the endpoint takes to answer, would otherwise keep every slot busy
	// and every other user whose token is not cached refused. Half, so
	// that users behind one address (a NAT, or a proxy whose address
	// Caddy is not told to look past) still get through a burst of
	// their own (TestIntrospectionBurstOfRealUsers).
	maxIntrospectionsPerAddress = maxIntrospectionsInFlight / 2
	// introspectionSlotWait is how long a request waits for a free call
	// when all are taken: enough for a burst of real users (every client
	// of a gateway reconnecting after a reload, its cache empty: 48 at
	// 250 ms a call need 0.75 s; review s13-final R1), shorter than a
	// call's own timeout, and bounded, so a flood holds its own requests,
	// not the gateway's calls.
	introspectionSlotWait = 3 * time.Second
)

var (
	// errIntrospectionUnavailable: the token could not be checked; not
	// the token's fault, so no challenge, and the client may retry.
	errIntrospectionUnavailable = &authError{status: http.StatusServiceUnavailable,
		desc: "the access token cannot be checked at the moment; retry later"}
	errInactive = invalidToken("the access token is not active")
	// errIntrospectionBusy: every call slot stayed taken for
	// introspectionSlotWait.
	errIntrospectionBusy = errors.New("too many introspection calls in flight")
)

// introspect checks an opaque token with the introspection endpoint and
// returns its principal and how long it may be cached. The answer must
// say active true, and carry what a JWT access token must: iss equal to
// the issuer, the audience in aud, exp in the future, sub and client_id
// (or azp); token_type, when given, must be Bearer, DPoP (then with
// cnf.jkt) or access_token (Duende's word), typ Bearer or DPoP, and
// token_use access_token (accessTokenAnswer).
// An answer that is not RFC 7662 JSON fails closed like an unreachable
// endpoint, as does one naming a member twice. key is the token's SHA-256: requests presenting the same
// token at once share one call (introspections), and each checks the
// answer itself.
func (g *Gateway) introspect(ctx context.Context, r *http.Request, key [sha256.Size]byte, token string) (*principal, time.Time, *authError) {
	body, err := g.introspections.do(ctx, g.cfg.Introspector, key, token, g.shareKey(r))
	if err != nil {
		if ctx.Err() != nil {
			// The client left; nothing to tell the operator.
			g.log.Debug("token introspection abandoned", zap.String("issuer", g.cfg.Issuer), loggedError(err))
		} else {
			g.log.Warn("token introspection failed", zap.String("issuer", g.cfg.Issuer), loggedError(err))
		}
		return nil, time.Time{}, errIntrospectionUnavailable
	}
	// A member named twice (or in two cases) would be read here as the
	// last, and maybe as the first by whatever wrote the answer: such an
	// answer says nothing for certain (mcpparse.CheckValue).
	var head map[string]json.RawMessage
	if err := mcpparse.CheckValue(body, 0); err != nil || json.Unmarshal(body, &head) != nil || head == nil {
		g.log.Warn("token introspection: the answer is not a JSON object, each member named once", zap.String("issuer", g.cfg.Issuer))
		return nil, time.Time{}, errIntrospectionUnavailable
	}
	switch string(head["active"]) {
	case "true":
	case "false":
		return nil, time.Time{}, errInactive
	default:
		g.log.Warn("token introspection: the answer has no boolean active", zap.String("issuer", g.cfg.Issuer))
		return nil, time.Time{}, errIntrospectionUnavailable
	}
	var tt string
	if raw, ok := head["token_type"]; ok {
		// Duende IdentityServer names the kind of token there
		// ("access_token", "refresh_token") rather than its scheme; a
		// bound one still carries cnf.jkt, which decides its binding.
		if json.Unmarshal(raw, &tt) != nil || !strings.EqualFold(tt, schemeBearer) && !strings.EqualFold(tt, schemeDPoP) && tt != "access_token" {
			return nil, time.Time{}, invalidToken("the token is not an access token")
		}
	}
	if !accessTokenAnswer(head) {
		return nil, time.Time{}, invalidToken("the token is not an access token")
	}
	c := new(accesstoken.Claims)
	if err := json.Unmarshal(body, c); err != nil {
		return nil, time.Time{}, invalidToken(describeTokenError(err))
	}
	if strings.EqualFold(tt, schemeDPoP) && c.BoundKey() == "" {
		// RFC 9449 §6.2: a bound token's answer carries cnf.jkt. Without
		// it the binding could not be checked, and must not be read as
		// none.
		return nil, time.Time{}, invalidToken("the introspection answer says DPoP but names no key (cnf.jkt)")
	}
	if err := g.validator.Validate(c); err != nil {
		return nil, time.Time{}, invalidToken(describeTokenError(err))
	}
	if err := c.CheckRequired(); err != nil {
		return nil, time.Time{}, invalidToken(describeTokenError(err))
	}
	if err := g.checkActorClaims(c); err != nil {
		return nil, time.Time{}, err
	}
	return g.principalOf(c, body), g.now().Add(g.cfg.IntrospectionCache), nil
}

// shareKey is the key of r's client address among the introspection
// call slots' shares: Config.ClientAddr's (default the peer's) without
// its port, an IPv6 address by its /64, which one subscriber is given
// whole.
func (g *Gateway) shareKey(r *http.Request) string {
	if r == nil {
		return ""
	}
	addr := r.RemoteAddr
	if g.cfg.ClientAddr != nil {
		addr = g.cfg.ClientAddr(r)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	if a = a.Unmap(); a.Is4() {
		return a.String()
	}
	p, err := a.WithZone("").Prefix(64)
	if err != nil {
		return host
	}
	return p.String()
}

// introspections are a gateway's calls of the introspection endpoint in
// flight, by the token's SHA-256 (as the caches key it), and the slots
// that bound how many there are (maxIntrospectionsInFlight). A request
// presenting a token whose call is running waits for that call's answer
// instead of making its own, so a token sent many times at once costs
// one call. Each request still leaves when its own context ends; the
// call is cancelled only when every request waiting for it has left, so
// no work goes on for clients that are gone (within the call's own
// timeout, RemoteIntrospection's 5 s).
type introspections struct {
	mu       sync.Mutex
	calls    map[[sha256.Size]byte]*introspection
	slots    chan struct{}
	slotWait time.Duration
	// shares are the slots of each address with a call open or waiting
	// for one (maxIntrospectionsPerAddress each), taken before a slot.
	shares map[string]*addressShare // under mu
}

// addressShare is one address's share of the call slots.
type addressShare struct {
	slots chan struct{}
	users int // requests holding or waiting for one of them, under mu
}

// introspection is one call; body and err are set before done is closed.
type introspection struct {
	done    chan struct{}
	body    []byte
	err     error
	waiters int // under introspections.mu
	cancel  context.CancelFunc
}

func newIntrospections() *introspections {
	return &introspections{
		calls:    make(map[[sha256.Size]byte]*introspection),
		slots:    make(chan struct{}, maxIntrospectionsInFlight),
		slotWait: introspectionSlotWait,
		shares:   make(map[string]*addressShare),
	}
}

// do returns the endpoint's answer about token: that of the call in
// flight for key, else of a new call if a slot of addr's share, and then
// one of all, frees within slotWait (errIntrospectionBusy if none does).
// It returns ctx's error as soon as ctx ends.
func (in *introspections) do(ctx context.Context, ask Introspector, key [sha256.Size]byte, token, addr string) ([]byte, error) {
	in.mu.Lock()
	c := in.calls[key]
	if c == nil {
		share := in.shares[addr]
		if share == nil {
			share = &addressShare{slots: make(chan struct{}, maxIntrospectionsPerAddress)}
			in.shares[addr] = share
		}
		share.users++
		in.mu.Unlock()
		if err := in.acquire(ctx, share.slots); err != nil {
			in.mu.Lock()
			in.leaveLocked(addr, share, false)
			in.mu.Unlock()
			return nil, err
		}
		in.mu.Lock()
		if c = in.calls[key]; c != nil {
			// Started by another request while this one waited.
			<-in.slots
			in.leaveLocked(addr, share, true)
		} else {
			c = in.start(ctx, ask, key, token, addr, share)
		}
	}
	c.waiters++
	in.mu.Unlock()
	select {
	case <-c.done:
		return c.body, c.err
	case <-ctx.Done():
		in.mu.Lock()
		if c.waiters--; c.waiters == 0 {
			c.cancel()
			if in.calls[key] == c {
				delete(in.calls, key)
			}
		}
		in.mu.Unlock()
		return nil, ctx.Err()
	}
}

// acquire takes a slot of share and then a call slot, waiting at most
// slotWait for both.
func (in *introspections) acquire(ctx context.Context, share chan struct{}) error {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	take := func(slots chan struct{}) error {
		select {
		case slots <- struct{}{}:
			return nil
		default:
		}
		if t == nil {
			t = time.NewTimer(in.slotWait)
		}
		select {
		case slots <- struct{}{}:
			return nil
		case <-t.C:
			return errIntrospectionBusy
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := take(share); err != nil {
		return err
	}
	if err := take(in.slots); err != nil {
		<-share
		return err
	}
	return nil
}

// leaveLocked ends a request's use of addr's share, in.mu held: the
// slot it took, if held, and the share itself once no request uses it.
func (in *introspections) leaveLocked(addr string, share *addressShare, held bool) {
	if held {
		<-share.slots
	}
	if share.users--; share.users == 0 && in.shares[addr] == share {
		delete(in.shares, addr)
	}
}

// start makes the call for key, in.mu held and a slot of addr's share
// and one of all taken (released when the call returns). The call runs
// on its own goroutine and on a context detached from ctx (keeping its values): it is made for every
// request that waits for it, and must not end because the first one
// left while others still wait.
func (in *introspections) start(ctx context.Context, ask Introspector, key [sha256.Size]byte, token, addr string, share *addressShare) *introspection {
	callCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &introspection{done: make(chan struct{}), cancel: cancel}
	in.calls[key] = c
	go func() {
		var body []byte
		var err error
		defer func() {
			if r := recover(); r != nil {
				// Off the request's goroutine net/http would not recover
				// it: fail the call (closed) rather than the process.
				err = fmt.Errorf("introspection panicked: %v", r)
			}
			cancel()
			<-in.slots
			in.mu.Lock()
			in.leaveLocked(addr, share, true)
			if in.calls[key] == c {
				delete(in.calls, key)
			}
			c.body, c.err = body, err
			in.mu.Unlock()
			close(c.done)
		}()
		body, err = ask.Introspect(callCtx, token)
	}()
	return c
}

// accessTokenAnswer reports whether the answer's own words for what the
// token is, besides token_type, leave it an access token: Ory Hydra's
// token_use ("access_token" or "refresh_token") and Keycloak's typ
// ("Bearer", "Refresh", "ID", "Offline", ...). A refresh or ID token that
// introspects as active must not pass for an access token (review
// s13-remote F1).
func accessTokenAnswer(head map[string]json.RawMessage) bool {
	var use, typ string
	if raw, ok := head["token_use"]; ok && (json.Unmarshal(raw, &use) != nil || use != "access_token") {
		return false
	}
	if raw, ok := head["typ"]; ok && (json.Unmarshal(raw, &typ) != nil || !strings.EqualFold(typ, schemeBearer) && !strings.EqualFold(typ, schemeDPoP)) {
		return false
	}
	return true
}

// RemoteIntrospection is an Introspector for a remote authorization
// server's introspection endpoint, which it calls with the gateway's own
// client credentials (HTTP Basic, RFC 6749 §2.3.1). The endpoint is
// given, or read from the issuer's metadata (introspection_endpoint) at
// the first use, and again while calls of it fail (at most once per
// rereadInterval), so that an issuer that moves it is followed. Calls
// are time- and size-limited.
type RemoteIntrospection struct {
	issuer       string
	clientID     string
	clientSecret string
	client       *http.Client
	timeout      time.Duration
	maxBytes     int64
	now          func() time.Time

	mu       sync.Mutex
	endpoint string
	// read is when the metadata named endpoint (zero for an endpoint
	// given); failed says the last call of it failed, rereading that a
	// call is reading the metadata again.
	read              time.Time
	failed, rereading bool
	// unread is when a read of the metadata, endpoint still unknown,
	// last failed, and unreadErr its error: each call of the
	// rereadInterval after it fails with that error, unread.
	unread    time.Time
	unreadErr error
}

// rereadInterval is the least time between two reads of the issuer's
// metadata for its introspection endpoint while calls of it fail, as
// between two fetches of its keys.
const rereadInterval = 30 * time.Second

// NewRemoteIntrospection returns a RemoteIntrospection. endpoint may be
// "" (discovered from issuer's metadata); client may be nil (a client
// with a 10 s timeout is used); redirects are followed within one origin
// only (sameOriginClient).
func NewRemoteIntrospection(issuer, endpoint, clientID, clientSecret string, client *http.Client) (*RemoteIntrospection, error) {
	if clientID == "" {
		return nil, errors.New("introspection needs a client_id")
	}
	if endpoint != "" {
		if _, err := parseHTTPSURL(endpoint); err != nil {
			return nil, fmt.Errorf("introspection endpoint: %w", err)
		}
	}
	client = sameOriginClient(client)
	return &RemoteIntrospection{
		issuer: issuer, endpoint: endpoint, clientID: clientID, clientSecret: clientSecret,
		client: client, timeout: 5 * time.Second, maxBytes: 64 << 10, now: time.Now,
	}, nil
}

// Introspect posts token to the introspection endpoint. The call ends
// with ctx: the gateway keeps it going while any request waits for its
// answer (introspections), and no longer.
func (ri *RemoteIntrospection) Introspect(ctx context.Context, token string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, ri.timeout)
	defer cancel()
	endpoint, err := ri.introspectionEndpoint(ctx)
	if err != nil {
		return nil, err
	}
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(ri.clientID), url.QueryEscape(ri.clientSecret))
	resp, err := ri.client.Do(req)
	if err != nil {
		ri.called(endpoint, false)
		// The URL is in the error, cut; the token is in the body, never
		// in it.
		return nil, cutURLError(err)
	}
	defer resp.Body.Close()
	body, err := readLimited(resp, ri.maxBytes)
	ri.called(endpoint, err == nil)
	if err != nil {
		return nil, fmt.Errorf("introspection: %w", err)
	}
	return body, nil
}

// called records whether a call of endpoint got an answer.
func (ri *RemoteIntrospection) called(endpoint string, ok bool) {
	ri.mu.Lock()
	defer ri.mu.Unlock()
	if endpoint == ri.endpoint {
		ri.failed = !ok
	}
}

// introspectionEndpoint is the configured endpoint, or the one the
// issuer's metadata names: read until it succeeds once, and again while
// calls of the endpoint it named fail (an issuer that moved it), each at
// most once per rereadInterval, by one call while the others use the
// endpoint known. Until it is known, a call made within rereadInterval
// of a failed read fails as that read did: each made-up token costs a
// call, and would otherwise cost a read of the metadata too, as many as
// anyone sends while the issuer's metadata fails (RemoteKeys reads it
// as seldom). That read is the issuer's, not the call's: it runs on
// (for at most the call's timeout) when every request waiting for the
// call has left, so a request that left is not taken for the issuer
// failing.
func (ri *RemoteIntrospection) introspectionEndpoint(ctx context.Context) (string, error) {
	ri.mu.Lock()
	if endpoint := ri.endpoint; endpoint != "" {
		again := !ri.read.IsZero() && ri.failed && !ri.rereading && ri.now().Sub(ri.read) >= rereadInterval
		ri.rereading = ri.rereading || again
		ri.mu.Unlock()
		if !again {
			return endpoint, nil
		}
		u, err := ri.readEndpoint(ctx)
		ri.mu.Lock()
		defer ri.mu.Unlock()
		ri.rereading, ri.read = false, ri.now()
		if err == nil && u != ri.endpoint {
			ri.endpoint, ri.failed = u, false
		}
		return ri.endpoint, nil
	}
	defer ri.mu.Unlock()
	if !ri.unread.IsZero() && ri.now().Sub(ri.unread) < rereadInterval {
		return "", ri.unreadErr
	}
	readCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ri.timeout)
	defer cancel()
	u, err := ri.readEndpoint(readCtx)
	if err != nil {
		ri.unread, ri.unreadErr = ri.now(), err
		return "", err
	}
	ri.endpoint, ri.read = u, ri.now()
	return u, nil
}

// readEndpoint reads the introspection_endpoint of the issuer's
// metadata.
func (ri *RemoteIntrospection) readEndpoint(ctx context.Context) (string, error) {
	md, err := discover(ctx, ri.client, ri.issuer, ri.maxBytes)
	if err != nil {
		return "", err
	}
	if md.IntrospectionEndpoint == "" {
		return "", errors.New("the issuer's metadata names no introspection_endpoint")
	}
	u, err := metadataEndpoint(ri.issuer, md.IntrospectionEndpoint)
	if err != nil {
		return "", fmt.Errorf("introspection_endpoint: %w", err)
	}
	return u.String(), nil
}

// maxLoggedURL bounds the bytes of a fetched URL an error quotes: a
// jwks_uri or introspection_endpoint is named by the issuer's metadata,
// and may be as long as the document (1 MiB), logged with each failed
// fetch.
const maxLoggedURL = 300

// loggedURL is u for an error, without a password, cut to maxLoggedURL
// bytes and escaped (loggedText).
func loggedURL(u *url.URL) string { return cutURL(u.Redacted()) }

// cutURL is a URL the issuer's metadata names, cut to maxLoggedURL
// bytes and escaped for a log (loggedText): Go keeps a query's
// characters as written, U+009B too.
func cutURL(s string) string { return loggedText(s, maxLoggedURL) }

// loggedText is s, a remote issuer's value for the log (a kid, a URL its
// metadata names), cut to max bytes, with what a terminal acts on or
// hides written as a JSON escape, as audit events write a caller's text
// (auditText): zap escapes C0 controls only, and a C1 control such as
// U+009B (CSI) or a bidi character (U+202E) in an issuer's key set would
// otherwise erase or rewrite the lines of an operator following the log.
func loggedText(s string, max int) string {
	s, _, _ = auditText(s, max, false)
	return s
}

// loggedError is the log's field for err, an error about a remote
// issuer's answer, escaped as loggedText escapes: its text may quote the
// issuer's values raw (a host a lookup did not find, an error status of
// a URL). Each value is cut where the error quotes it, so the text is
// not cut again; escaping at most triples it.
func loggedError(err error) zap.Field {
	s := err.Error()
	return zap.String("error", loggedText(s, 3*len(s)))
}

// cutURLError cuts the URL that an error of http.Client.Do or url.Parse
// quotes to maxLoggedURL bytes, as loggedURL does, and the error it
// wraps when that is longer: it may quote part of the URL too (a DNS
// lookup's host, url.Parse's "invalid port").
func cutURLError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		ue.URL = cutURL(ue.URL)
		if s := ue.Err.Error(); len(s) > maxLoggedURL {
			ue.Err = errors.New(cutURL(s))
		}
	}
	return err
}

// readLimited reads a 200 answer's body of at most max bytes.
func readLimited(resp *http.Response, max int64) ([]byte, error) {
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", loggedURL(resp.Request.URL), resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", loggedURL(resp.Request.URL), err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("%s: response larger than %d bytes", loggedURL(resp.Request.URL), max)
	}
	return bytes.TrimSpace(body), nil
}

var _ Introspector = (*RemoteIntrospection)(nil)
