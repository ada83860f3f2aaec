package gateway

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// RemoteKeys is a KeySource for an issuer in another process: it reads the
// issuer's metadata (RFC 8414, falling back to OpenID Connect Discovery),
// then its JWKS, and caches the keys. An unknown kid triggers a refetch at
// most once per refetch interval, so a flood of made-up kids costs the
// issuer nothing. Fetches are time- and size-limited. Once it has found
// keys, it fetches them again whenever they turn maxAge old, until Close.
type RemoteKeys struct {
	issuer string
	client *http.Client
	log    *zap.Logger
	now    func() time.Time

	refetchInterval time.Duration // minimum time between fetches
	maxAge          time.Duration // keys older than this are refetched when asked for
	maxBytes        int64
	timeout         time.Duration

	mu      sync.RWMutex
	keys    map[string]any
	fetched time.Time // last successful fetch
	// failed: the last fetch failed, so a kid not among keys may be
	// one the issuer publishes now (ErrKeysUnavailable).
	failed bool
	// withdrawals counts the fetches that took a key away, or gave its
	// kid another key or algorithm (withdraws): a token verified before
	// must then have its key found again (Published) to be accepted.
	withdrawals atomic.Uint64
	lastTry     time.Time
	// fetches is the fetch under way, which every request wanting the
	// keys meanwhile waits for (each until its own end): a slow issuer
	// must not queue them behind a lock.
	fetches  singleflight.Group
	fetching bool // a fetch is under way (fetchOnce)
	// refreshKeys, the background refresh, runs from the first fetch
	// that found keys (refreshing, under mu) until Close (closed, stop
	// cancelled, which also ends the fetch it makes); it closes
	// refreshed when it returns.
	refreshing, closed bool
	stop               context.Context
	cancel             context.CancelFunc
	refreshed          chan struct{}

	jwksURI string // read and set by the one fetch at a time
}

// ErrUnknownKey is returned for a kid the issuer does not publish.
var ErrUnknownKey = errors.New("unknown signing key")

// errFetchFailed is PublicKey's error for a kid not among the keys
// known while the issuer's keys cannot be fetched (the last fetch
// failed): whether the issuer publishes it cannot be told.
var errFetchFailed = fmt.Errorf("the issuer's keys cannot be fetched: %w", ErrKeysUnavailable)

// NewRemoteKeys returns a RemoteKeys for issuer. client may be nil (a
// client with a 10 s timeout is used); redirects are followed within one
// origin only (sameOriginClient); logger may be nil. Close it when it
// is no longer used.
func NewRemoteKeys(issuer string, client *http.Client, logger *zap.Logger) *RemoteKeys {
	client = sameOriginClient(client)
	if logger == nil {
		logger = zap.NewNop()
	}
	stop, cancel := context.WithCancel(context.Background())
	return &RemoteKeys{
		stop:            stop,
		cancel:          cancel,
		refreshed:       make(chan struct{}),
		issuer:          issuer,
		client:          client,
		log:             logger,
		now:             time.Now,
		refetchInterval: 30 * time.Second,
		maxAge:          time.Hour,
		maxBytes:        1 << 20,
		timeout:         10 * time.Second,
	}
}

// PublicKey returns the public key published under kid.
func (k *RemoteKeys) PublicKey(ctx context.Context, kid string) (any, error) {
	k.mu.RLock()
	key, ok := k.keys[kid]
	fresh := k.now().Sub(k.fetched) < k.maxAge
	k.mu.RUnlock()
	if ok && fresh {
		return key, nil
	}
	if err := k.refresh(ctx); err != nil {
		return nil, err
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	if key, ok := k.keys[kid]; ok {
		return key, nil
	}
	if k.failed {
		return nil, errFetchFailed
	}
	return nil, ErrUnknownKey
}

// Renewed is keyRenewals.Renewed: a token whose signature the key
// known under kid (stale, as PublicKey returned it) did not verify may
// be signed by a key the issuer now publishes under the same kid (a kid
// such as "default" naming whichever key signs). The fetch is refresh's,
// at most one per refetch interval, so a made-up signature costs the
// issuer no more than a made-up kid. While the last fetch failed, kid
// still naming stale cannot be told from the issuer having renewed it:
// errFetchFailed, as PublicKey answers for a kid it does not know then.
func (k *RemoteKeys) Renewed(ctx context.Context, kid string, stale any) (bool, error) {
	if err := k.refresh(ctx); err != nil {
		return false, err
	}
	k.mu.RLock()
	cur, ok := k.keys[kid]
	failed := k.failed
	k.mu.RUnlock()
	switch {
	case ok && !stillVerifies(stale, cur):
		return true, nil
	case failed:
		return false, errFetchFailed
	}
	return false, nil
}

// refresh refetches the keys unless that was tried within the refetch
// interval, and waits for the fetch under way if there is one. The fetch
// is the issuer's, not the request's that started it: it runs on when
// that request ends (k.timeout bounds it), so the others get its keys
// and a request's end is never taken for the issuer's failure. The error
// is ctx's only: a failed fetch keeps the keys already known.
func (k *RemoteKeys) refresh(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// Within the refetch interval, with no fetch under way to wait for,
	// nothing is begun: a made-up kid, which anyone may send, costs no
	// fetch call (fetchOnce checks again).
	if k.settledLately(k.now()) {
		return nil
	}
	detached := context.WithoutCancel(ctx)
	done := k.fetches.DoChan("", func() (any, error) {
		k.fetchOnce(detached)
		return nil, nil
	})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetchOnce fetches the keys and records them, unless that was tried
// within the refetch interval. A panic (in the client's RoundTripper,
// say) is that fetch's failure, not the process's: the keys known stay.
func (k *RemoteKeys) fetchOnce(ctx context.Context) {
	defer func() {
		if v := recover(); v != nil {
			k.log.Error("fetching issuer keys panicked", zap.String("issuer", k.issuer), zap.Any("panic", v), zap.Stack("stack"))
			k.mu.Lock()
			k.failed = true
			k.mu.Unlock()
		}
	}()
	now := k.now()
	k.mu.Lock()
	recent := k.triedLatelyLocked(now)
	if !recent {
		k.lastTry, k.fetching = now, true
	}
	k.mu.Unlock()
	if recent {
		return
	}
	defer func() {
		k.mu.Lock()
		k.fetching = false
		k.mu.Unlock()
	}()
	keys, err := k.fetch(ctx)
	if err != nil {
		k.log.Warn("fetching issuer keys", zap.String("issuer", k.issuer), loggedError(err))
		k.mu.Lock()
		k.failed = true
		k.mu.Unlock()
		return
	}
	k.mu.Lock()
	k.failed = false
	if withdraws(k.keys, keys) {
		// With the keys, under the lock: whoever reads the new count
		// finds the new keys (Published).
		k.withdrawals.Add(1)
	}
	k.keys, k.fetched = keys, now
	begin := !k.refreshing && !k.closed
	k.refreshing = k.refreshing || begin
	k.mu.Unlock()
	if begin {
		go k.refreshKeys()
	}
}

// refreshKeys fetches the keys again whenever they turn maxAge old,
// whether a request asks for a key or not: a gateway whose requests all
// carry tokens it verified before (cache hits) asks for none, yet must
// learn that the issuer withdrew a key (Withdrawals), or a token forged
// with a compromised key, once verified, would pass until its exp. A
// failed fetch is tried again after the refetch interval, doubling up
// to maxAge. Close ends it.
func (k *RemoteKeys) refreshKeys() {
	defer close(k.refreshed)
	t := time.NewTimer(k.maxAge)
	defer t.Stop()
	retry := k.refetchInterval
	for {
		select {
		case <-k.stop.Done():
			return
		case <-t.C:
		}
		if k.age() >= k.maxAge {
			k.fetches.Do("", func() (any, error) {
				k.fetchOnce(k.stop)
				return nil, nil
			})
		}
		wait := k.maxAge - k.age()
		if wait > 0 {
			retry = k.refetchInterval
		} else {
			wait, retry = retry, min(2*retry, k.maxAge)
		}
		t.Reset(min(wait, k.maxAge)) // and a clock set back
	}
}

// age is the time since the last successful fetch.
func (k *RemoteKeys) age() time.Duration {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.now().Sub(k.fetched)
}

// Close ends the background refresh of the keys (refreshKeys), and
// waits for it: call it when the configuration that made k is unloaded.
// The keys known stay, and a request may still have them fetched.
func (k *RemoteKeys) Close() {
	k.mu.Lock()
	k.closed = true
	began := k.refreshing
	k.mu.Unlock()
	k.cancel()
	if began {
		<-k.refreshed
	}
}

// withdraws reports whether the key set next lacks a key of prev, or
// has its kid verify less (another key, another algorithm).
func withdraws(prev, next map[string]any) bool {
	for kid, key := range prev {
		if n, ok := next[kid]; !ok || !stillVerifies(key, n) {
			return true
		}
	}
	return false
}

// Withdrawals counts the fetches so far that withdrew a key (withdraws):
// while it stays the same, a key found published is still.
func (k *RemoteKeys) Withdrawals() uint64 { return k.withdrawals.Load() }

// Published reports whether kid still names key, as PublicKey returned
// it (or for the algorithm an accesstoken.AlgKey names: a key the issuer
// names an algorithm for now, still the token's), in the keys last
// fetched.
func (k *RemoteKeys) Published(kid string, key any) bool {
	k.mu.RLock()
	cur, ok := k.keys[kid]
	k.mu.RUnlock()
	return ok && stillVerifies(key, cur)
}

// settledLately reports whether a fetch began within the refetch
// interval before now and has ended.
func (k *RemoteKeys) settledLately(now time.Time) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return !k.fetching && k.triedLatelyLocked(now)
}

func (k *RemoteKeys) triedLatelyLocked(now time.Time) bool {
	return !k.lastTry.IsZero() && now.Sub(k.lastTry) < k.refetchInterval
}

// fetch reads the issuer's keys from the jwks_uri of its metadata. The
// metadata is read at the first fetch, and again when the keys cannot be
// read where it said: an issuer that moved them (another jwks_uri) has
// them read at the new place at once, where the old place failing kept
// the keys known in use, and the new ones unknown, until a reload.
func (k *RemoteKeys) fetch(ctx context.Context) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, k.timeout)
	defer cancel()
	known := k.jwksURI != ""
	if !known {
		if err := k.discoverJWKS(ctx); err != nil {
			return nil, err
		}
	}
	keys, err := k.fetchJWKS(ctx)
	if err != nil && known {
		old := k.jwksURI
		if k.discoverJWKS(ctx) == nil && k.jwksURI != old {
			k.log.Info("the issuer's metadata names another jwks_uri", zap.String("issuer", k.issuer), zap.String("jwks_uri", cutURL(k.jwksURI)))
			keys, err = k.fetchJWKS(ctx)
		}
	}
	return keys, err
}

// discoverJWKS sets jwksURI from the issuer's metadata; on an error it
// is left as it was.
func (k *RemoteKeys) discoverJWKS(ctx context.Context) error {
	md, err := discover(ctx, k.client, k.issuer, k.maxBytes)
	if err != nil {
		return err
	}
	u, err := metadataEndpoint(k.issuer, md.JWKSURI)
	if err != nil {
		return fmt.Errorf("jwks_uri: %w", err)
	}
	k.jwksURI = u.String()
	return nil
}

// fetchJWKS reads the key set at jwksURI.
func (k *RemoteKeys) fetchJWKS(ctx context.Context) (map[string]any, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := getJSON(ctx, k.client, k.jwksURI, k.maxBytes, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	if set.Keys == nil {
		// No keys array: not a key set (RFC 7517 section 5), but a
		// page served by mistake, like a failed fetch. A key set, even
		// one with no key to verify with, is what the issuer publishes.
		return nil, errors.New("jwks: not a JWK set (no keys array)")
	}
	keys := make(map[string]any, len(set.Keys))
	twice := map[string]bool{}
	for _, raw := range set.Keys {
		kid, key, err := parseJWK(raw)
		if err != nil {
			k.log.Debug("skipping JWK", logKid(kid), loggedError(err))
			continue
		}
		if prev, dup := keys[kid]; dup {
			same, ok := sameKey(prev, key)
			if !ok {
				twice[kid] = true
				continue
			}
			key = same
		}
		keys[kid] = key
	}
	// A kid that names two keys names neither: which one a token meant
	// cannot be told (RFC 7517 section 4.5 wants kids distinct).
	for kid := range twice {
		k.log.Warn("issuer publishes a kid twice; neither key is used", logKid(kid))
		delete(keys, kid)
	}
	if len(keys) == 0 {
		k.log.Warn("issuer publishes no signing key the gateway can use; its tokens are refused", zap.String("issuer", k.issuer))
	}
	return keys, nil
}

// sameKey is what a kid listed twice for one public key verifies: the
// key for the one algorithm both entries name, or for any (as a JWK
// without alg) when they name different ones or none. ok is false when
// the entries are different keys.
func sameKey(a, b any) (key any, ok bool) {
	ka, algA := unwrapAlg(a)
	kb, algB := unwrapAlg(b)
	if !equalKeys(ka, kb) {
		return nil, false
	}
	if algA != "" && algA == algB {
		return a, true
	}
	return ka, true
}

// stillVerifies reports whether the published key cur verifies what prev
// did: the same public key, for the same algorithm or for any.
func stillVerifies(prev, cur any) bool {
	kp, algP := unwrapAlg(prev)
	kc, algC := unwrapAlg(cur)
	return (algC == "" || algC == algP) && equalKeys(kp, kc)
}

// unwrapAlg is a published key and the algorithm it is for ("" for any).
func unwrapAlg(k any) (any, string) {
	if ak, isAlg := k.(accesstoken.AlgKey); isAlg {
		return ak.Key, ak.Alg
	}
	return k, ""
}

func equalKeys(a, b any) bool {
	eq, isKey := a.(interface{ Equal(crypto.PublicKey) bool })
	return isKey && eq.Equal(b)
}

// sameOriginClient is client (a 10 s timeout one when nil) following
// redirects within the first request's origin only: Go resends a
// request's Authorization header and body to another port or scheme of
// the same host, so the gateway's introspection credentials and the
// token would leave over a downgraded or unexpected channel, and keys
// come from a URL that was never checked (parseHTTPSURL).
func sameOriginClient(client *http.Client) *http.Client {
	c := http.Client{Timeout: 10 * time.Second}
	if client != nil {
		c = *client
	}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		first := via[0].URL
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		if req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) {
			return fmt.Errorf("redirect from %s to another origin refused", loggedURL(first))
		}
		return nil
	}
	return &c
}

// issuerMetadata is what the gateway reads of an issuer's metadata.
type issuerMetadata struct {
	Issuer                string `json:"issuer"`
	JWKSURI               string `json:"jwks_uri"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
}

// logKid is the log's field for a kid the issuer's key set names, cut
// to maxLoggedKid bytes (the set may be maxBytes of one kid, logged with
// each fetch) and escaped (loggedText).
func logKid(kid string) zap.Field {
	return zap.String("kid", loggedText(kid, maxLoggedKid))
}

const (
	// maxLoggedKid bounds the bytes of a kid logKid logs; kids are
	// short (a thumbprint is 43 characters).
	maxLoggedKid = 100
	// maxLoggedIssuer bounds the bytes of a mismatched metadata issuer
	// that discover's error quotes.
	maxLoggedIssuer = 100
)

// discover reads issuer's metadata: RFC 8414 path-inserted first, then
// OpenID Connect Discovery (path-appended). The document's issuer must
// equal ours exactly (RFC 8414 §3.3).
func discover(ctx context.Context, client *http.Client, issuer string, maxBytes int64) (*issuerMetadata, error) {
	iss, err := url.Parse(issuer)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	path := strings.TrimSuffix(iss.Path, "/")
	candidates := []string{
		(&url.URL{Scheme: iss.Scheme, Host: iss.Host, Path: "/.well-known/oauth-authorization-server" + path}).String(),
		(&url.URL{Scheme: iss.Scheme, Host: iss.Host, Path: path + "/.well-known/openid-configuration"}).String(),
	}
	var errs []error
	for _, c := range candidates {
		md := new(issuerMetadata)
		if err := getJSON(ctx, client, c, maxBytes, md); err != nil {
			errs = append(errs, err)
			continue
		}
		if md.Issuer != issuer {
			// Cut: the document may be maxBytes of one issuer, logged
			// with each failed fetch.
			shown, _ := auditBound(md.Issuer, maxLoggedIssuer)
			errs = append(errs, fmt.Errorf("%s: issuer %q does not match", c, shown))
			continue
		}
		return md, nil
	}
	return nil, fmt.Errorf("issuer metadata: %w", errors.Join(errs...))
}

func getJSON(ctx context.Context, client *http.Client, u string, maxBytes int64, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	// Fetched when a kid is unknown (a rotation) or the keys are old:
	// a shared cache on the way must ask the issuer, not answer with
	// the copy it holds (RFC 9111 section 5.2.1.4).
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := client.Do(req)
	if err != nil {
		return cutURLError(err)
	}
	defer resp.Body.Close()
	body, err := readLimited(resp, maxBytes)
	if err != nil {
		return err
	}
	// A member named twice (a second jwks_uri, keys or kid) is read by
	// encoding/json as the last, by other readers as the first: the
	// document is refused, like one that cannot be read.
	if err := mcpparse.CheckValue(body, 0); err != nil {
		return fmt.Errorf("%s: %w", loggedURL(req.URL), err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s: %w", loggedURL(req.URL), err)
	}
	return nil
}

// parseJWK reads a published signing key (accesstoken.JWK.Verifier):
// it must have a kid and be for signatures; one naming its alg verifies
// tokens of that algorithm only.
func parseJWK(raw []byte) (string, any, error) {
	var j accesstoken.JWK
	if err := json.Unmarshal(raw, &j); err != nil {
		return "", nil, err
	}
	switch {
	case j.Kid == "":
		return "", nil, errors.New("no kid")
	case !j.ForSignatures():
		return j.Kid, nil, errors.New("not a signing key")
	}
	key, err := j.Verifier()
	return j.Kid, key, err
}

var (
	_ KeySource      = (*RemoteKeys)(nil)
	_ keyWithdrawals = (*RemoteKeys)(nil)
	_ keyRenewals    = (*RemoteKeys)(nil)
)
