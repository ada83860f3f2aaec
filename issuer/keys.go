package issuer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// Signing algorithms this issuer signs with.
var signingAlgs = []string{"ES256", "RS256", "EdDSA"}

// Timing of a rotation. A new key is published at once but signs only
// from keyPublishDelay later: every instance on the store re-reads the
// key set when it signs or serves the JWKS with a copy older than
// keyReload, so every instance publishes the new key within keyReload;
// a verifier or shared cache may keep a copy of the JWKS served just
// before that for jwksMaxAge (its Cache-Control); keyReload more covers
// instances' clocks, which must agree to within it (NTP). So no token
// carries a key that a copy of the JWKS any cache may still use lacks,
// and a verifier that refetches on an unknown kid at most every 30 s
// (ours, RemoteKeys) has refetched since. The delay costs nothing: the
// old key signs meanwhile. A shorter max-age would not end the race,
// only make every verifier fetch more often.
const (
	keyReload       = 5 * time.Second
	jwksMaxAge      = 60 * time.Second
	keyPublishDelay = keyReload + jwksMaxAge + keyReload
	// keyMinReload is the least time between two reloads for a kid this
	// instance does not know, so tokens with made-up kids cost the
	// gateways no store read each. A key is known everywhere long before
	// it signs, so a legitimate token never waits for it.
	keyMinReload = time.Second
	// keyCheckEvery bounds how late a key whose publication ended is
	// counted withdrawn (Issuer.Withdrawals) on an instance that neither
	// signs nor serves its JWKS, its gateways' only traffic being tokens
	// they verified before (WatchRevocations runs the check).
	keyCheckEvery = time.Second
	// keyReadTimeout bounds a read begun through due, which runs on
	// when the request that began it is gone (reread).
	keyReadTimeout = 10 * time.Second
)

// publishedKey is a parsed signing key.
type publishedKey struct {
	kid      string
	alg      string
	method   jwt.SigningMethod
	private  crypto.Signer
	public   crypto.PublicKey
	jwk      accesstoken.JWK
	created  time.Time
	signFrom time.Time // it signs from then on
	retired  time.Time // when it stopped signing; zero while it is the newest key
	until    time.Time // when a retired key is withdrawn (signingKey.PublishedUntil)
}

// keyRing holds the signing keys: it generates, rotates and publishes
// them, and caches the key set; the store is the source of truth. Which
// key signs is decided at each use (signingAt), so a key whose delay has
// passed takes over without a reload.
type keyRing struct {
	store     store.Store
	bucket    string // where its keys are stored
	now       func() time.Time
	rand      io.Reader
	alg       string        // the algorithm new keys have
	retention time.Duration // how long a retired key stays published
	// lazy: the first key is made when the first token is signed, not
	// at start (the RS256 ID-token keys, which many deployments never
	// use, and an RSA key takes a tenth of a second to make).
	lazy  bool
	first sync.Mutex // one first key at a time

	mu       sync.RWMutex
	byKID    map[string]*publishedKey // published keys; replaced, never changed
	loadedAt time.Time
	readAt   time.Time // when the read that gave byKID began
	// triedAt is when a read was last begun through due, and loadErr
	// the error of the last read, nil once one succeeds: while the
	// store fails, requests (anyone's /jwks, tokens with made-up kids)
	// try it at most every keyMinReload and get that error meanwhile.
	triedAt time.Time
	loadErr error
	// reading is closed when the read due began ends (reread); nil
	// when none is under way.
	reading chan struct{}
	// withdrawals counts the changes of byKID that took a key out of
	// it: a token verified before with that key must then have it found
	// again (publishes) to be accepted. Changed with byKID, under mu.
	withdrawals atomic.Uint64
}

// errNoSigningKey: no key of the ring signs now.
var errNoSigningKey = errors.New("no current signing key")

// newKeyRing loads the key set and makes sure a current key of alg
// exists. Retired keys stay published for retention, the longest token
// lifetime: newKeyRing adds the verifiers' leeway past exp
// (accesstoken.Leeway) and keyReload, for another instance on the same
// store whose clock is that far behind.
func newKeyRing(ctx context.Context, st store.Store, now func() time.Time, rnd io.Reader, alg string, retention time.Duration) (*keyRing, error) {
	if !slices.Contains(signingAlgs, alg) {
		return nil, fmt.Errorf("signing algorithm %q: must be one of %v", alg, signingAlgs)
	}
	k := &keyRing{store: st, bucket: bucketKeys, now: now, rand: rnd, alg: alg, retention: retention + accesstoken.Leeway + keyReload}
	if err := k.load(ctx); err != nil {
		return nil, err
	}
	k.mu.RLock()
	newest := newestKey(k.byKID)
	k.mu.RUnlock()
	if newest != nil && newest.alg == alg {
		return k, nil
	}
	if _, err := k.rotate(ctx, false); err != nil {
		return nil, err
	}
	return k, nil
}

// newIDTokenKeyRing loads the RS256 ID-token keys (bucketIDTokenKeys),
// whose first key is made when it first signs. With signing_alg RS256,
// whose keys sign the ID tokens from signsFrom on (a key signing_alg's
// change made waits keyPublishDelay), it retires their current key then
// (signing_alg was another before): it signs the ID tokens until then,
// is published on for them, then withdrawn, rather than published and
// rotated with nothing to sign.
func newIDTokenKeyRing(ctx context.Context, st store.Store, now func() time.Time, rnd io.Reader, signingAlg string, signsFrom time.Time, retention time.Duration) (*keyRing, error) {
	k := &keyRing{store: st, bucket: bucketIDTokenKeys, now: now, rand: rnd, alg: "RS256", retention: retention + accesstoken.Leeway + keyReload, lazy: true}
	if err := k.load(ctx); err != nil {
		return nil, err
	}
	if signingAlg != k.alg {
		return k, nil
	}
	at := now()
	if signsFrom.After(at) {
		at = signsFrom
	}
	if at.After(now()) && !k.made() {
		// Signing the ID tokens until signing_alg's key does.
		if err := k.makeFirst(ctx); err != nil {
			return nil, err
		}
	}
	if !k.made() {
		return k, nil
	}
	err := st.Update(ctx, func(tx store.Tx) error { return keySetIn(tx, k.bucket).retireAll(at, k.retention) })
	if err != nil {
		return nil, fmt.Errorf("retire ID-token keys: %w", err)
	}
	return k, k.load(ctx)
}

// RotateSigningKey generates a new signing key, published at once, that
// signs from keyPublishDelay on (on every instance on the store); the old
// one signs until then and stays published until its tokens expire.
// Returns the new kid. The RS256 ID-token key, when there is one, is
// rotated with it.
func (i *Issuer) RotateSigningKey(ctx context.Context) (string, error) {
	kid, err := i.keys.rotate(ctx, true)
	if err != nil {
		return "", err
	}
	if i.idKeys.made() {
		if _, err := i.idKeys.rotate(ctx, true); err != nil {
			return "", err
		}
	}
	return kid, nil
}

// KeyWithdrawal is what WithdrawSigningKeys did.
type KeyWithdrawal struct {
	// KID is the new access-token key, signing now; empty when only an
	// ID-token key was withdrawn.
	KID string `json:"kid,omitempty"`
	// IDTokenKID is the new RS256 ID-token key, when that set had a
	// current key and was withdrawn from.
	IDTokenKID string `json:"id_token_kid,omitempty"`
	// Withdrawn are the kids no longer published.
	Withdrawn []string `json:"withdrawn"`
}

// WithdrawSigningKeys takes signing keys out of publication at once, for
// a key that has leaked: kid, of either key set, or with kid "" every key
// of both (a read of the store or a backup leaks them all). The set it
// withdraws from gets a new key that signs at once (when it had a current
// key), rather than keyPublishDelay later: a remote verifier whose copy
// of the JWKS predates it refuses its tokens until it refetches, the
// trade an emergency makes. The keys of that set still current retire
// now, published for their tokens. This instance stops publishing the
// withdrawn keys now, every other on the store within keyReload (its
// re-read), and their gateways then refuse the tokens they signed, cached
// ones too (Withdrawals), as do /introspect and /userinfo; ID tokens they
// signed no longer verify. Grants and refresh tokens stay: a refresh
// gets a token of the new key. An unknown kid, or one no longer
// published, is store.ErrNotFound and changes nothing.
func (i *Issuer) WithdrawSigningKeys(ctx context.Context, kid string) (KeyWithdrawal, error) {
	rings := []*keyRing{i.keys, i.idKeys}
	if kid != "" {
		rings = nil
		for _, k := range []*keyRing{i.keys, i.idKeys} {
			if err := k.load(ctx); err != nil {
				return KeyWithdrawal{}, err
			}
			if k.cached(kid) != nil {
				rings = append(rings, k)
			}
		}
		if rings == nil {
			return KeyWithdrawal{}, notFound(fmt.Sprintf("signing key %q: no key this server publishes", truncate(kid, 80)))
		}
	}
	next := make([]*signingKey, len(rings))
	for n, k := range rings {
		if k != i.keys && !k.made() {
			continue // the ID-token set is not in use (or retired): nothing to replace
		}
		var err error
		if next[n], err = k.newSigningKey(); err != nil {
			return KeyWithdrawal{}, err
		}
	}
	var out KeyWithdrawal
	err := i.store.Update(ctx, func(tx store.Tx) error {
		out = KeyWithdrawal{Withdrawn: []string{}}
		for n, k := range rings {
			w, err := keySetIn(tx, k.bucket).withdraw(kid, next[n], k.now(), k.retention)
			if err != nil {
				return err
			}
			out.Withdrawn = append(out.Withdrawn, w...)
		}
		if kid != "" && len(out.Withdrawn) == 0 {
			return notFound(fmt.Sprintf("signing key %q: no key this server publishes", truncate(kid, 80)))
		}
		return nil
	})
	if err != nil {
		return KeyWithdrawal{}, fmt.Errorf("withdraw signing keys: %w", err)
	}
	for n, k := range rings {
		if err := k.load(ctx); err != nil {
			return KeyWithdrawal{}, err
		}
		switch {
		case next[n] == nil:
		case k == i.keys:
			out.KID = next[n].KID
		default:
			out.IDTokenKID = next[n].KID
		}
	}
	return out, nil
}

// MakeIDTokenKey makes the RS256 ID-token key now, unless it exists or
// signing_alg's key signs RS256 ID tokens. Otherwise it is made when the
// first RS256 ID token is signed, and a relying party that fetched the
// JWKS before then, after an access token's verification say, may not
// refetch it for minutes: call this when the issuer starts serving, so
// that the key is published before any client can fetch the JWKS.
func (i *Issuer) MakeIDTokenKey(ctx context.Context) error {
	if i.keys.alg == i.idKeys.alg {
		return nil
	}
	return i.idKeys.makeFirst(ctx)
}

// signsFrom is when the ring's newest key signs from: the zero time
// with none.
func (k *keyRing) signsFrom() time.Time {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if pk := newestKey(k.byKID); pk != nil {
		return pk.signFrom
	}
	return time.Time{}
}

// made reports whether the ring has a key that signs or will.
func (k *keyRing) made() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return newestKey(k.byKID) != nil
}

// rotate makes a new key of the configured algorithm current. Unless
// force, it keeps a current key that already has that algorithm: two
// instances starting on the same store then agree on one key.
func (k *keyRing) rotate(ctx context.Context, force bool) (string, error) {
	// Generated outside the transaction: RSA generation is slow.
	rec, err := k.newSigningKey()
	if err != nil {
		return "", err
	}
	var kid string
	err = k.store.Update(ctx, func(tx store.Tx) error {
		var err error
		kid, err = keySetIn(tx, k.bucket).rotate(rec, force, k.now(), keyPublishDelay, k.retention)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("rotate signing key: %w", err)
	}
	if err := k.load(ctx); err != nil {
		return "", err
	}
	return kid, nil
}

// newSigningKey generates a key of the configured algorithm.
func (k *keyRing) newSigningKey() (*signingKey, error) {
	var priv crypto.Signer
	var err error
	switch k.alg {
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), k.rand)
	case "RS256":
		priv, err = rsa.GenerateKey(k.rand, 2048)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(k.rand)
	default:
		err = fmt.Errorf("unsupported algorithm %q", k.alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode signing key: %w", err)
	}
	j, err := publicJWK(priv.Public())
	if err != nil {
		return nil, err
	}
	return &signingKey{
		KID:        j.Thumbprint(),
		Alg:        k.alg,
		PrivatePEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		CreatedAt:  k.now(),
	}, nil
}

// load re-reads the key set from the store. Keys already parsed are
// reused, so a reload costs one read transaction.
func (k *keyRing) load(ctx context.Context) error { return k.loadVia(ctx, k.store.View) }

// loadVia is load, reading through view.
func (k *keyRing) loadVia(ctx context.Context, view func(context.Context, func(store.Tx) error) error) error {
	var recs []signingKey
	read := k.now()
	err := view(ctx, func(tx store.Tx) error {
		var err error
		recs, err = keySetIn(tx, k.bucket).all()
		return err
	})
	if err != nil {
		err = fmt.Errorf("load signing keys: %w", err)
		if !errors.Is(ctx.Err(), context.Canceled) {
			// A read its caller gave up (a client gone) tells nothing
			// of the store: the others are not given its error.
			k.mu.Lock()
			k.loadErr = err
			k.mu.Unlock()
		}
		return err
	}
	now := k.now()
	k.mu.RLock()
	old := k.byKID
	k.mu.RUnlock()
	keys := make(map[string]*publishedKey, len(recs))
	for _, rec := range recs {
		until := rec.PublishedUntil
		if until.IsZero() {
			until = rec.RetiredAt.Add(k.retention)
		}
		if !rec.RetiredAt.IsZero() && !now.Before(until) {
			continue
		}
		pk := old[rec.KID]
		if pk == nil || pk.alg != rec.Alg {
			if pk, err = parseSigningKey(rec); err != nil {
				// The read's error as a failed query's is: the
				// callers that share it (due) and the probe's log
				// are told why the keys are not read.
				err = fmt.Errorf("load signing keys: %w", err)
				k.mu.Lock()
				k.loadErr = err
				k.mu.Unlock()
				return err
			}
		} else {
			c := *pk
			pk = &c
		}
		pk.retired, pk.until = rec.RetiredAt, until
		keys[pk.kid] = pk
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if read.Before(k.readAt) {
		// A read begun later has been taken: this one may lack a key
		// made since, which would count as withdrawn.
		return nil
	}
	if withdraws(k.byKID, keys) {
		k.withdrawals.Add(1)
	}
	k.byKID, k.loadedAt, k.readAt, k.loadErr = keys, now, read, nil
	return nil
}

// due reports whether a copy older than every is to be read again now,
// and if so counts the read as begun: one caller reads, the others
// meanwhile use the copy (or, with none, the last read's error; a copy
// younger than every stands, whatever a read begun since met), and a
// read that failed is tried again keyMinReload later, not at once (every
// later, when shorter: readWithin's bound, revocation_max_stale, may be
// under a second, and a set read every second would be past it between).
// Its caller reads through reread, which ends the read begun.
func (k *keyRing) due(every time.Duration) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if now.Sub(k.loadedAt) < every {
		return false, nil
	}
	if now.Sub(k.triedAt) < min(keyMinReload, every) {
		return false, k.loadErr
	}
	k.triedAt = now
	if k.reading == nil {
		k.reading = make(chan struct{})
	}
	return true, nil
}

// reread reads the key set again if due says so, and returns that
// read's error, or due's. The read is every waiter's (await), and due
// lets no one else read before keyMinReload: it is not the request's
// that began it, whose client going away would otherwise leave the
// others the copy they wait to see replaced (and no read until then),
// so it outlives that request, within keyReadTimeout.
func (k *keyRing) reread(ctx context.Context, every time.Duration) error {
	due, err := k.due(every)
	if !due {
		return err
	}
	defer func() {
		k.mu.Lock()
		if k.reading != nil {
			close(k.reading)
			k.reading = nil
		}
		k.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyReadTimeout)
	defer cancel()
	return k.load(ctx)
}

// await waits for the read under way, if any, to end.
func (k *keyRing) await(ctx context.Context) error {
	k.mu.RLock()
	ch := k.reading
	k.mu.RUnlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// withdraws reports whether the key set next lacks a key of prev, or
// has its kid name another key.
func withdraws(prev, next map[string]*publishedKey) bool {
	for kid, pk := range prev {
		if n, ok := next[kid]; !ok || n.alg != pk.alg || !samePublic(n.public, pk.public) {
			return true
		}
	}
	return false
}

// samePublic reports whether a and b are the same public key. The ring
// keeps a key's parsed public key across re-reads, so the key PublicKey
// gave out is the very pointer: found so without allocating, as the
// ECDSA and RSA Equal methods do (big.Int.Bytes).
func samePublic(a, b crypto.PublicKey) bool {
	switch a := a.(type) {
	case *ecdsa.PublicKey:
		if b, ok := b.(*ecdsa.PublicKey); ok && a == b {
			return true
		}
	case *rsa.PublicKey:
		if b, ok := b.(*rsa.PublicKey); ok && a == b {
			return true
		}
	}
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// refresh keeps the key set as current on an instance that neither signs
// nor serves its JWKS (a gateway's issuer whose clients reuse tokens) as
// on one that does: it re-reads it when older than keyReload, following
// another instance's rotation, and else drops the keys whose publication
// has ended, so that their withdrawal is counted. It reads through view
// (Issuer.backgroundView): a background read queued behind request
// traffic would hold up the revocation catch-up beside it.
func (k *keyRing) refresh(ctx context.Context, view func(context.Context, func(store.Tx) error) error) {
	k.mu.RLock()
	loaded := k.loadedAt
	k.mu.RUnlock()
	if k.now().Sub(loaded) >= keyReload {
		ctx, cancel := context.WithTimeout(ctx, keyReload)
		err := k.loadVia(ctx, view)
		cancel()
		if err == nil {
			return
		}
		// The store is out of reach: time still ends publications.
	}
	k.expire(k.now())
}

// expire drops the keys no longer published at now.
func (k *keyRing) expire(now time.Time) {
	k.mu.RLock()
	ended := false
	for _, pk := range k.byKID {
		ended = ended || !k.published(pk, now)
	}
	k.mu.RUnlock()
	if !ended {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := make(map[string]*publishedKey, len(k.byKID))
	for kid, pk := range k.byKID {
		if k.published(pk, now) {
			keys[kid] = pk
		}
	}
	if len(keys) < len(k.byKID) {
		k.byKID = keys
		k.withdrawals.Add(1)
	}
}

// publishes reports whether kid names key, a public key of the ring
// (or one for the algorithm an accesstoken.AlgKey names), among the keys
// published now, from memory and without allocating.
func (k *keyRing) publishes(kid string, key any) bool {
	k.mu.RLock()
	pk := k.byKID[kid]
	k.mu.RUnlock()
	if pk == nil || !k.published(pk, k.now()) {
		return false
	}
	if ak, ok := key.(accesstoken.AlgKey); ok {
		return ak.Alg == pk.alg && samePublic(pk.public, ak.Key)
	}
	return samePublic(pk.public, key)
}

// signingAt is the key of keys that signs at now: of those whose signing
// began and did not end, the one that began last.
func signingAt(keys map[string]*publishedKey, now time.Time) *publishedKey {
	var cur *publishedKey
	for _, pk := range keys {
		if now.Before(pk.signFrom) || !pk.retired.IsZero() && !now.Before(pk.retired) {
			continue
		}
		if cur == nil || pk.signFrom.After(cur.signFrom) || pk.signFrom.Equal(cur.signFrom) && pk.created.After(cur.created) {
			cur = pk
		}
	}
	return cur
}

// newestKey is the key of keys that is not retired: the one that signs,
// or will once its delay has passed.
func newestKey(keys map[string]*publishedKey) *publishedKey {
	var newest *publishedKey
	for _, pk := range keys {
		if pk.retired.IsZero() && (newest == nil || pk.signFrom.After(newest.signFrom)) {
			newest = pk
		}
	}
	return newest
}

func parseSigningKey(rec signingKey) (*publishedKey, error) {
	block, _ := pem.Decode(rec.PrivatePEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("signing key %s: not a PKCS#8 PEM block", rec.KID)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", rec.KID, err)
	}
	k := &publishedKey{kid: rec.KID, alg: rec.Alg, created: rec.CreatedAt, signFrom: rec.SignFrom, retired: rec.RetiredAt}
	if k.signFrom.IsZero() { // stored before keys had a delay
		k.signFrom = rec.CreatedAt
	}
	switch p := parsed.(type) {
	case *ecdsa.PrivateKey:
		if rec.Alg != "ES256" || p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("signing key %s: ECDSA key does not fit %s", rec.KID, rec.Alg)
		}
		k.private, k.method = p, jwt.SigningMethodES256
	case *rsa.PrivateKey:
		if rec.Alg != "RS256" || p.N.BitLen() < 2048 {
			return nil, fmt.Errorf("signing key %s: RSA key does not fit %s", rec.KID, rec.Alg)
		}
		k.private, k.method = p, jwt.SigningMethodRS256
	case ed25519.PrivateKey:
		if rec.Alg != "EdDSA" {
			return nil, fmt.Errorf("signing key %s: Ed25519 key does not fit %s", rec.KID, rec.Alg)
		}
		k.private, k.method = p, jwt.SigningMethodEdDSA
	default:
		return nil, fmt.Errorf("signing key %s: unsupported key type %T", rec.KID, parsed)
	}
	k.public = k.private.Public()
	if k.jwk, err = publicJWK(k.public); err != nil {
		return nil, err
	}
	if k.jwk.Thumbprint() != rec.KID {
		return nil, fmt.Errorf("signing key %s: kid is not the key's thumbprint", rec.KID)
	}
	k.jwk.Kid, k.jwk.Alg, k.jwk.Use = rec.KID, rec.Alg, "sig"
	return k, nil
}

// current returns the key that signs now, re-reading the store when the
// cache is older than keyReload so a rotation by another instance on the
// same store is followed (and published) before its key signs.
func (k *keyRing) current(ctx context.Context) (*publishedKey, error) {
	err := k.reread(ctx, keyReload)
	k.mu.RLock()
	defer k.mu.RUnlock()
	if err != nil && len(k.byKID) == 0 {
		return nil, err
	}
	// Else keep signing with the keys known if the store blips.
	cur := signingAt(k.byKID, k.now())
	if cur == nil {
		return nil, errNoSigningKey
	}
	return cur, nil
}

// makeFirst makes a lazy ring's first key. Two instances on one store
// that both make one keep the first stored (rotate without force).
func (k *keyRing) makeFirst(ctx context.Context) error {
	k.first.Lock()
	defer k.first.Unlock()
	if _, err := k.current(ctx); !errors.Is(err, errNoSigningKey) {
		return err
	}
	_, err := k.rotate(ctx, false)
	return err
}

// signer returns the key that signs now (current), published in the
// store until at least until, when the token it signs is valid: a key
// about to retire stays published for the tokens it signed before the
// rotation (the token horizon), and those it signs after it until the new
// key takes over are covered here, once, when they outlive that (an
// instance with longer token lifetimes than the one that rotated).
// A key withdrawn since the last read (WithdrawSigningKeys) is gone
// from the store: the ring re-reads it once and signs with the key that
// replaced it.
func (k *keyRing) signer(ctx context.Context, until time.Time) (*publishedKey, error) {
	for reread := false; ; reread = true {
		pk, err := k.current(ctx)
		if k.lazy && errors.Is(err, errNoSigningKey) {
			if err = k.makeFirst(ctx); err == nil {
				pk, err = k.current(ctx)
			}
		}
		if err != nil || pk.retired.IsZero() || !until.After(pk.until) {
			return pk, err
		}
		err = k.store.Update(ctx, func(tx store.Tx) error { return keySetIn(tx, k.bucket).publishUntil(pk.kid, until) })
		if err != nil && (reread || !errors.Is(err, store.ErrNotFound)) {
			return nil, fmt.Errorf("signing key %s: %w", pk.kid, err)
		}
		withdrawn := err != nil
		if err := k.load(ctx); err != nil {
			return nil, err
		}
		if !withdrawn {
			return pk, nil
		}
	}
}

// verification returns a published key by kid, re-reading the store for
// a kid it does not know (another instance rotated), at most every
// keyMinReload. A lookup that finds a read under way (another lookup's
// of the same new kid, say) waits for it and looks again, as readWithin
// does: due would let it read no sooner, and refusing the kid meanwhile
// refused the tokens of a key the store holds, 401 invalid_token at a
// gateway, whose clients threw them away (TestKeyLookupWaitsForReadUnderWay).
func (k *keyRing) verification(ctx context.Context, kid string) (*publishedKey, error) {
	if pk := k.cached(kid); pk != nil {
		return pk, nil
	}
	err := k.reread(ctx, keyMinReload)
	if err == nil && k.cached(kid) == nil {
		if err = k.await(ctx); err == nil {
			err = k.reread(ctx, keyMinReload)
		}
	}
	if err != nil {
		return nil, notInCopy{err}
	}
	if pk := k.cached(kid); pk != nil {
		return pk, nil
	}
	return nil, notInCopy{fmt.Errorf("signing key %q: %w", kid, store.ErrNotFound)}
}

// notInCopy is verification's error: the key is not in this instance's
// copy of the key set, or the copy could not be read. It says nothing of
// the token: another instance may have made the key since the copy was
// read (errors.As finds it through the JWT parser's errors).
type notInCopy struct{ error }

func (e notInCopy) Unwrap() error { return e.error }

func (k *keyRing) cached(kid string) *publishedKey {
	k.mu.RLock()
	pk := k.byKID[kid]
	k.mu.RUnlock()
	if pk == nil || !k.published(pk, k.now()) {
		return nil
	}
	return pk
}

// published reports whether pk is signing, about to, or retired recently
// enough to be published.
func (k *keyRing) published(pk *publishedKey, now time.Time) bool {
	return pk.retired.IsZero() || now.Before(pk.until)
}

// PublicKey returns the public key of a published signing key (current or
// retired but still published), for gateways in the same process. The
// RS256 ID-token keys are not among them: they sign no access token.
func (i *Issuer) PublicKey(ctx context.Context, kid string) (any, error) {
	k, err := i.keys.verification(ctx, kid)
	if err != nil {
		return nil, err
	}
	return k.public, nil
}

// Withdrawals counts the times a key PublicKey gave out stopped being
// published: its publication ended (the tokens it signed have expired)
// or another instance on the store took it out. While the count stays
// the same, a key found published (Published) still is. A gateway keyed
// by the issuer (gateway.Config.Keys) checks a token it verified before
// against it on every use, with an atomic load, and ends the token's
// event streams when its key is gone: whoever stole a signing key
// chooses the exp of the tokens they forge with it. The count follows
// the issuer's signing and JWKS requests, and WatchRevocations, within
// a second, when there are none. The ID-token keys are not counted: they
// verify no access token.
func (i *Issuer) Withdrawals() uint64 { return i.keys.withdrawals.Load() }

// Published reports whether kid still names key, a public key PublicKey
// returned (or that key for the algorithm an accesstoken.AlgKey names),
// among the keys the issuer publishes now. It answers from memory
// without allocating.
func (i *Issuer) Published(kid string, key any) bool { return i.keys.publishes(kid, key) }

// idTokenKey returns the public key of a published key that may have
// signed an ID token: of either key set.
//
// Both sets' copies are asked before either reads the store: a set whose
// read failed answers with that error for keyMinReload, even for a kid
// the other set's copy holds. Either set's read failing is the answer
// only when the other does not have the key.
func (i *Issuer) idTokenKey(ctx context.Context, kid string) (any, error) {
	for _, r := range [...]*keyRing{i.keys, i.idKeys} {
		if pk := r.cached(kid); pk != nil {
			return pk.public, nil
		}
	}
	k, err := i.keys.verification(ctx, kid)
	if err != nil {
		ik, ierr := i.idKeys.verification(ctx, kid)
		switch {
		case ierr == nil:
			k, err = ik, nil
		case errors.Is(err, store.ErrNotFound):
			err = ierr
		}
	}
	if err != nil {
		return nil, err
	}
	return k.public, nil
}

// idTokenAlgs are the algorithms ID tokens are signed with, given
// signing_alg: RS256, which OpenID Connect clients expect unless they
// registered another, and signing_alg.
func idTokenAlgs(signingAlg string) []string {
	if signingAlg == "RS256" {
		return []string{"RS256"}
	}
	return []string{"RS256", signingAlg}
}

// idTokenAlgOffered refuses a client whose ID-token algorithm is not
// offered: one stored before signing_alg changed. Registration and
// configuration check it against the algorithms offered then.
func (i *Issuer) idTokenAlgOffered(c *Client) error {
	offered := idTokenAlgs(i.cfg.SigningAlg)
	if alg := c.idTokenAlg(); !slices.Contains(offered, alg) {
		return ErrUnauthorizedClient.WithDescription(fmt.Sprintf("the client registered id_token_signed_response_alg %s, which this server no longer offers (%s): its registration must change",
			truncate(alg, 40), strings.Join(offered, ", ")))
	}
	return nil
}

// idTokenSigner returns the key that signs c's ID tokens, valid until
// until.
func (i *Issuer) idTokenSigner(ctx context.Context, c *Client, until time.Time) (*publishedKey, error) {
	if err := i.idTokenAlgOffered(c); err != nil {
		return nil, err
	}
	if c.idTokenAlg() == i.keys.alg {
		// Right after signing_alg changed to RS256 the key that signs
		// may still be the former algorithm's (keyPublishDelay): the
		// ID-token key signs until the new one does.
		if cur, err := i.keys.current(ctx); err != nil || cur.alg == i.keys.alg {
			return i.keys.signer(ctx, until)
		}
	}
	return i.idKeys.signer(ctx, until)
}

// readWithin re-reads a key set last read from the store longer than d
// ago (the ring re-reads only every keyReload, which d may be shorter
// than), and refuses it, wrapping store.ErrUnavailable, when the store
// does not answer: another instance that reaches it may have withdrawn a
// key meanwhile (it leaked). Past Config.RevocationMaxStale the JWKS no
// longer vouches for the keys it knows, as the gateways then no longer
// honour the tokens they know: a verifier that refetched the set without
// the key elsewhere would take it back from this instance.
//
// Like every read a request causes (due), one is tried at most every
// keyMinReload: while the store fails, anyone's /jwks gets the last
// read's error without reading again. A request that finds another's
// read under way waits for it: its answer is this one's too, where the
// copy it would refuse meanwhile is one a store that answers replaces.
func (k *keyRing) readWithin(ctx context.Context, d time.Duration) error {
	if k.age() <= d {
		return nil
	}
	err := k.reread(ctx, d)
	if err == nil && k.age() > d {
		if err = k.await(ctx); err == nil {
			err = k.reread(ctx, d)
		}
	}
	age := k.age()
	if age <= d {
		return nil
	}
	if err == nil {
		err = errors.New("a read is under way")
	}
	return fmt.Errorf("signing keys last read from the store %s ago (%v): %w", age.Round(time.Second), err, store.ErrUnavailable)
}

// lastErr is the error of the last read of the key set, nil once one
// succeeded.
func (k *keyRing) lastErr() error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.loadErr
}

// age is how long ago the key set was read from the store.
func (k *keyRing) age() time.Duration { return k.ageAt(k.now()) }

// ageAt is how long before now the key set was read from the store.
func (k *keyRing) ageAt(now time.Time) time.Duration {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return now.Sub(k.loadedAt)
}

// publishedJWKS returns the public keys to publish, current first. A
// lazy ring may have none.
func (k *keyRing) publishedJWKS(ctx context.Context) ([]accesstoken.JWK, error) {
	cur, err := k.current(ctx)
	if err != nil && !(k.lazy && errors.Is(err, errNoSigningKey)) {
		return nil, err
	}
	k.mu.RLock()
	defer k.mu.RUnlock()
	now := k.now()
	out := make([]accesstoken.JWK, 0, len(k.byKID))
	if cur != nil {
		out = append(out, cur.jwk)
	}
	for _, pk := range k.byKID {
		if cur != nil && pk.kid == cur.kid || !k.published(pk, now) {
			continue
		}
		out = append(out, pk.jwk)
	}
	slices.SortStableFunc(out[min(1, len(out)):], func(a, b accesstoken.JWK) int {
		if a.Kid < b.Kid {
			return -1
		}
		if a.Kid > b.Kid {
			return 1
		}
		return 0
	})
	return out, nil
}

func (i *Issuer) handleJWKS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, http.MethodGet, http.MethodHead)
		return
	}
	// Read within the bound first: the keys published are those read.
	err := i.keys.readWithin(r.Context(), i.cfg.RevocationMaxStale)
	if err == nil {
		err = i.idKeys.readWithin(r.Context(), i.cfg.RevocationMaxStale)
	}
	var keys []accesstoken.JWK
	if err == nil {
		keys, err = i.keys.publishedJWKS(r.Context())
	}
	if err == nil {
		var idKeys []accesstoken.JWK
		idKeys, err = i.idKeys.publishedJWKS(r.Context())
		keys = append(keys, idKeys...)
	}
	if err != nil {
		i.log.Error("jwks", zap.Error(err))
		// A store out of reach is 503 with Retry-After, as at every
		// endpoint: a verifier retries rather than taking it as final.
		writeError(w, err)
		return
	}
	// A new key signs only once copies cached for this long have gone
	// stale (keyPublishDelay).
	_ = writeJSON(w, http.StatusOK, "application/jwk-set+json", "public, max-age="+strconv.Itoa(int(jwksMaxAge/time.Second)), map[string][]accesstoken.JWK{"keys": keys})
}

// publicJWK encodes a public key as a JWK (without kid, alg, use).
func publicJWK(pub crypto.PublicKey) (accesstoken.JWK, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		raw, err := p.Bytes()
		if err != nil {
			return accesstoken.JWK{}, fmt.Errorf("encode EC key: %w", err)
		}
		n := (len(raw) - 1) / 2
		return accesstoken.JWK{Kty: "EC", Crv: p.Curve.Params().Name, X: b64(raw[1 : 1+n]), Y: b64(raw[1+n:])}, nil
	case *rsa.PublicKey:
		return accesstoken.JWK{Kty: "RSA", N: b64(p.N.Bytes()), E: b64(big.NewInt(int64(p.E)).Bytes())}, nil
	case ed25519.PublicKey:
		return accesstoken.JWK{Kty: "OKP", Crv: "Ed25519", X: b64(p)}, nil
	}
	return accesstoken.JWK{}, fmt.Errorf("unsupported public key type %T", pub)
}
