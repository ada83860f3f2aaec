package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// The records layer: one file per record kind (record_*.go) owns its
// bucket, key format, encoding, expiry and the operations the issuer
// needs, over a store.Tx. Nothing else in the issuer names a bucket or
// calls the Tx directly. Opaque secrets (codes, refresh tokens,
// request_uri values, session cookies) are never keys: keys are
// tokenKey(secret).
//
// Operations run inside the caller's transaction and have no effect
// outside it (no logging, no outer state), so a store.Update that runs its
// function again sees the same result.

// table is one bucket of JSON-encoded records of type T, seen through a
// transaction.
type table[T any] struct {
	tx     store.Tx
	bucket string
}

func (t table[T]) get(key string) (*T, error) {
	b, err := t.tx.Get(t.bucket, key)
	if err != nil {
		return nil, err
	}
	v := new(T)
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("decode %s record: %w", t.bucket, err)
	}
	return v, nil
}

// has reports whether a live record exists under key.
func (t table[T]) has(key string) (bool, error) {
	switch _, err := t.tx.Get(t.bucket, key); {
	case err == nil:
		return true, nil
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	default:
		return false, err
	}
}

// put stores v under key; a zero expires never expires.
func (t table[T]) put(key string, v *T, expires time.Time) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s record: %w", t.bucket, err)
	}
	return t.tx.Put(t.bucket, key, b, expires)
}

// create is put that fails with store.ErrAlreadyExists on a live record.
func (t table[T]) create(key string, v *T, expires time.Time) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s record: %w", t.bucket, err)
	}
	return t.tx.Create(t.bucket, key, b, expires)
}

func (t table[T]) delete(key string) error { return t.tx.Delete(t.bucket, key) }

// remove deletes the record under key, or returns store.ErrNotFound when
// there is none.
func (t table[T]) remove(key string) error {
	if _, err := t.tx.Get(t.bucket, key); err != nil {
		return err
	}
	return t.tx.Delete(t.bucket, key)
}

// list calls fn for every live record whose key starts with prefix, in key
// order; fn may write to the bucket.
func (t table[T]) list(prefix string, fn func(key string, v *T) error) error {
	return t.tx.List(t.bucket, prefix, func(k string, b []byte) error {
		v := new(T)
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("decode %s record: %w", t.bucket, err)
		}
		return fn(k, v)
	})
}

// ignoreNotFound is err, except nil for store.ErrNotFound.
func ignoreNotFound(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}
