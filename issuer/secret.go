package issuer

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// The stored forms of credentials. A password has little entropy, so only
// a slow hash will do: bcrypt. A client or agent secret is bcrypt (an
// operator's choice, as printed by `caddy hash-password`) or
// "sha256:<hex>": the form of the secrets the issuer generates, 256 random
// bits, for which a fast hash is enough.

// sha256Prefix marks a generated secret's hash.
const sha256Prefix = "sha256:"

// DefaultMinPasswordLength is the shortest password accepted in the clear
// unless Config.MinPasswordLength says otherwise.
const DefaultMinPasswordLength = 8

// CheckPassword refuses a password shorter than minLength characters.
func CheckPassword(password string, minLength int) error {
	if utf8.RuneCountInString(password) < minLength {
		return fmt.Errorf("password must have at least %d characters", minLength)
	}
	return nil
}

// MaxPasswordBytes is the longest password bcrypt hashes (it refuses a
// longer one), in bytes: Config.MinPasswordLength may not be more.
const MaxPasswordBytes = 72

// MaxPasswordCost is the highest bcrypt cost a hash may have (`caddy
// hash-password` makes cost 14, about a second). Each step doubles a
// check's time, and every check holds a slot of the hash gate (as long,
// for an unknown name, as the costliest hash known: dummyPassword): a
// cost-20 hash would hold one for about a minute.
const MaxPasswordCost = 16

// HashPassword returns the bcrypt hash of password at cost (0:
// bcrypt.DefaultCost).
func HashPassword(password string, cost int) (string, error) {
	if cost > MaxPasswordCost {
		return "", fmt.Errorf("password: bcrypt cost %d is above the most accepted, %d", cost, MaxPasswordCost)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), cmp.Or(cost, bcrypt.DefaultCost))
	if err != nil {
		return "", fmt.Errorf("password: %w", err)
	}
	return string(h), nil
}

// CheckPasswordHash reports whether hash is a password hash the issuer
// accepts: bcrypt, of a cost up to MaxPasswordCost. The error names the
// algorithm of another hash (never the hash) and how to make a bcrypt
// one.
func CheckPasswordHash(hash string) error {
	if c, err := bcrypt.Cost([]byte(hash)); err == nil {
		if c > MaxPasswordCost {
			return fmt.Errorf("bcrypt cost %d is above the most accepted, %d: make one with `caddy hash-password` (cost 14)", c, MaxPasswordCost)
		}
		return nil
	}
	alg := "not a bcrypt hash"
	switch {
	case strings.HasPrefix(hash, "$argon2"):
		alg = "an argon2 hash"
	case strings.HasPrefix(hash, "$scrypt$"), strings.HasPrefix(hash, "$7$"):
		alg = "an scrypt hash"
	case strings.HasPrefix(hash, "$pbkdf2"):
		alg = "a PBKDF2 hash"
	case strings.HasPrefix(hash, "$6$"), strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$1$"):
		alg = "a crypt(3) hash"
	}
	return fmt.Errorf("%s; only bcrypt is accepted: make one with `caddy hash-password`", alg)
}

// CheckSecretHash reports whether hash is a client or agent secret hash
// the issuer accepts: bcrypt or "sha256:<64 hex digits>".
func CheckSecretHash(hash string) error {
	if hx, ok := strings.CutPrefix(hash, sha256Prefix); ok {
		if b, err := hex.DecodeString(hx); err != nil || len(b) != sha256.Size {
			return errors.New("secret hash sha256:<hex> must have 64 hex digits")
		}
		return nil
	}
	if err := CheckPasswordHash(hash); err != nil {
		return fmt.Errorf("secret: %w (or give sha256:<hex>)", err)
	}
	return nil
}

// newSecret returns a generated client or agent secret and its stored
// form.
func (i *Issuer) newSecret() (secret, hash string, err error) {
	if secret, err = i.randomToken(32); err != nil {
		return "", "", err
	}
	return secret, hashClientSecret(secret), nil
}

// hashClientSecret is the stored form of a generated secret.
func hashClientSecret(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return sha256Prefix + hex.EncodeToString(s[:])
}

// checkSecret compares a secret with its stored hash: bcrypt (in a slot of
// the hash gate, known as for checkPassword; an error means no check
// ran), or "sha256:<hex>", in constant time.
func (d *directory) checkSecret(ctx context.Context, hash, secret string, known bool) (ok bool, err error) {
	if h, found := strings.CutPrefix(hash, sha256Prefix); found {
		want, err := hex.DecodeString(h)
		if err != nil || len(want) != sha256.Size {
			return false, nil
		}
		got := sha256.Sum256([]byte(secret))
		return subtle.ConstantTimeCompare(want, got[:]) == 1, nil
	}
	if !strings.HasPrefix(hash, "$2") || CheckPasswordHash(hash) != nil {
		return false, nil // a cost above MaxPasswordCost is never run
	}
	err = d.hashes.run(ctx, known, func() {
		ok = bcrypt.CompareHashAndPassword([]byte(hash), []byte(secret)) == nil
	})
	return ok && err == nil, err
}
