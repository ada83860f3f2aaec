package issuer

import (
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketKeys: kid -> signingKey, the keys of the configured signing_alg,
// which sign access tokens (and ID tokens of that algorithm). The current
// key never expires; a retired one expires when it is no longer published.
const bucketKeys = "keys"

// bucketIDTokenKeys: kid -> signingKey, RS256 keys that sign the ID
// tokens of clients asking for RS256 when signing_alg is another
// algorithm (OpenID Connect's default; Discovery 1.0 section 3 requires
// it to be offered). Kept apart so that a rotation of one set leaves the
// other's current key alone, and no access token is ever signed with
// these.
const bucketIDTokenKeys = "id_token_keys"

// signingKey is a persisted signing key.
type signingKey struct {
	KID        string    `json:"kid"`
	Alg        string    `json:"alg"`
	PrivatePEM []byte    `json:"private_pem"` // PKCS#8
	CreatedAt  time.Time `json:"created_at"`
	// SignFrom is when the key starts signing, a delay after it is
	// published when it replaces another; zero (keys stored before
	// there was a delay) means CreatedAt.
	SignFrom time.Time `json:"sign_from,omitzero"`
	// RetiredAt is when a newer key takes over (its SignFrom); the key
	// stays published in the JWKS until PublishedUntil.
	RetiredAt time.Time `json:"retired_at,omitempty"`
	// PublishedUntil is when a retired key's tokens have all expired:
	// RetiredAt plus the retention, and no earlier than the token
	// horizon (tokens signed under longer lifetimes than the rotating
	// configuration's). Zero in keys retired before it was recorded:
	// RetiredAt plus the reading instance's retention.
	PublishedUntil time.Time `json:"published_until,omitzero"`
}

// keyRecords are the signing keys.
type keyRecords struct{ t table[signingKey] }

func keysIn(tx store.Tx) keyRecords { return keySetIn(tx, bucketKeys) }

// keySetIn is the key set kept in bucket.
func keySetIn(tx store.Tx, bucket string) keyRecords {
	return keyRecords{table[signingKey]{tx, bucket}}
}

// all returns every stored key, current and retired.
func (r keyRecords) all() ([]signingKey, error) {
	var out []signingKey
	err := r.t.list("", func(_ string, k *signingKey) error {
		out = append(out, *k)
		return nil
	})
	return out, err
}

// current returns the keys not retired: the one that signs, and one
// that will once its delay has passed.
func (r keyRecords) current() ([]signingKey, error) {
	all, err := r.all()
	if err != nil {
		return nil, err
	}
	var current []signingKey
	for _, k := range all {
		if k.RetiredAt.IsZero() {
			current = append(current, k)
		}
	}
	return current, nil
}

// rotate makes next the newest key. When it replaces keys, it signs from
// delay after now, when they retire; they stay published for retention
// after that, and until the token horizon. The first key signs at once. Unless force, a single newest
// key of next's algorithm is kept instead, so that two instances starting
// on the same store agree on one key. It returns the newest kid.
func (r keyRecords) rotate(next *signingKey, force bool, now time.Time, delay, retention time.Duration) (string, error) {
	current, err := r.current()
	if err != nil {
		return "", err
	}
	if !force && len(current) == 1 && current[0].Alg == next.Alg {
		return current[0].KID, nil
	}
	next.SignFrom = now
	if len(current) > 0 {
		next.SignFrom = now.Add(delay)
	}
	if err := r.retire(current, next.SignFrom, retention); err != nil {
		return "", err
	}
	return next.KID, r.t.create(next.KID, next, time.Time{})
}

// retireAll retires the set's current keys now: nothing signs with them
// any more, and they stay published for retention and until the token
// horizon, for the tokens they signed.
func (r keyRecords) retireAll(now time.Time, retention time.Duration) error {
	current, err := r.current()
	if err != nil {
		return err
	}
	return r.retire(current, now, retention)
}

// retire retires keys at, published for retention after, and until the
// token horizon.
func (r keyRecords) retire(keys []signingKey, at time.Time, retention time.Duration) error {
	if len(keys) == 0 {
		return nil
	}
	horizon, err := epochsIn(r.t.tx).horizon()
	if err != nil {
		return err
	}
	for _, k := range keys {
		k.RetiredAt = at
		k.PublishedUntil = k.RetiredAt.Add(retention)
		if h := horizon.Add(accesstoken.Leeway); h.After(k.PublishedUntil) {
			k.PublishedUntil = h
		}
		if err := r.t.put(k.KID, &k, k.PublishedUntil); err != nil {
			return err
		}
	}
	return nil
}

// publishUntil keeps the retired key kid published until until at least.
func (r keyRecords) publishUntil(kid string, until time.Time) error {
	k, err := r.t.get(kid)
	if err != nil {
		return err
	}
	if k.RetiredAt.IsZero() || !until.After(k.PublishedUntil) {
		return nil
	}
	k.PublishedUntil = until
	return r.t.put(kid, k, until)
}

// withdraw deletes the key kid (every key with kid "") at once: it is
// no longer published, and nothing it signed verifies. With next, next
// becomes the newest key and signs at once, without the delay rotate
// waits (a remote verifier may not know it yet: the operator's trade in
// an emergency), and the keys still current retire now, published for
// their tokens. It returns the kids deleted.
func (r keyRecords) withdraw(kid string, next *signingKey, now time.Time, retention time.Duration) ([]string, error) {
	all, err := r.all()
	if err != nil {
		return nil, err
	}
	var withdrawn []string
	var current []signingKey
	for _, k := range all {
		switch {
		case kid == "" || k.KID == kid:
			if err := r.t.delete(k.KID); err != nil {
				return nil, err
			}
			withdrawn = append(withdrawn, k.KID)
		case k.RetiredAt.IsZero():
			current = append(current, k)
		}
	}
	if next == nil || kid != "" && withdrawn == nil {
		return withdrawn, nil
	}
	if err := r.retire(current, now, retention); err != nil {
		return nil, err
	}
	// Dated back by the clock difference instances may have (keyReload):
	// one whose clock is behind, the withdrawn keys gone from its set,
	// would have no key that signs until its clock reached now.
	next.SignFrom = now.Add(-keyReload)
	return withdrawn, r.t.create(next.KID, next, time.Time{})
}
