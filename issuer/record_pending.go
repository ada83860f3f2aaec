package issuer

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"io"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// bucketPending holds authorization requests waiting for login or consent:
// tokenKey(pending id) -> pendingAuth, until it expires. The id travels in
// the login and consent URLs; it is not a bearer secret because the record
// is bound to the browser session that created it.
const bucketPending = "authreq"

// pendingAuth is an authorization request parked while the user logs in or
// decides on consent.
type pendingAuth struct {
	Browser   string      `json:"browser"`
	Request   authRequest `json:"request"`
	ExpiresAt time.Time   `json:"expires_at"`
}

var errPendingGone = errors.New("pending authorization request not found")

// pendingRecords are the parked authorization requests.
type pendingRecords struct{ t table[pendingAuth] }

func pendingIn(tx store.Tx) pendingRecords {
	return pendingRecords{table[pendingAuth]{tx, bucketPending}}
}

func (r pendingRecords) create(id string, p *pendingAuth) error {
	return r.t.create(tokenKey(id), p, p.ExpiresAt)
}

func (r pendingRecords) get(id string) (*pendingAuth, error) { return r.t.get(tokenKey(id)) }

func (r pendingRecords) delete(id string) error { return r.t.delete(tokenKey(id)) }

// finish deletes the request id, which must still exist (errPendingGone):
// a request completes once.
func (r pendingRecords) finish(id string) error {
	err := r.t.remove(tokenKey(id))
	if errors.Is(err, store.ErrNotFound) {
		return errPendingGone
	}
	return err
}

// answeredTTL is how long the answer to a consent page's decision is
// kept for a repeat of that decision (answeredDecision).
const answeredTTL = 30 * time.Second

// answeredDecision is the answer a consent page's decision got: the
// redirect to the client, with the code (Allow) or access_denied (Deny).
// A double-click on Allow or Deny posts the form twice, the second time
// before the first one's answer arrives, and the browser drops the first
// navigation and shows the second answer only; the first had finished
// the pending request, so the second found it gone ("Request expired")
// and the client never got its code, or its error. A repeat of the same
// decision by the same browser and user within answeredTTL gets the same
// answer instead, the same code: a request still completes once.
// Kept in a bucket of its own, which an earlier release never reads.
// The location is sealed under the pending request's id (sealAnswer),
// which the store keeps hashed (an identity provider sign-in under way
// for the request records it, up to 10 minutes); a code read from the
// store redeems nothing without the client's PKCE verifier.
type answeredDecision struct {
	Browser   string    `json:"browser"`
	User      string    `json:"user"`
	Decision  string    `json:"decision"` // "approve" or "deny"
	Sealed    []byte    `json:"sealed"`
	ExpiresAt time.Time `json:"expires_at"`
}

// bucketAnswered: answeredKey(pending id) -> answeredDecision, until it
// expires.
const bucketAnswered = "answered"

// answeredRecords are the answers of consent decisions, by the id of
// the pending request they finished.
type answeredRecords struct{ t table[answeredDecision] }

func answeredIn(tx store.Tx) answeredRecords {
	return answeredRecords{table[answeredDecision]{tx, bucketAnswered}}
}

// answeredKey is the storage key of the answer to pending request id.
func answeredKey(id string) string { return tokenKey(id) }

func (r answeredRecords) put(id string, a *answeredDecision) error {
	return r.t.put(answeredKey(id), a, a.ExpiresAt)
}

func (r answeredRecords) get(id string) (*answeredDecision, error) { return r.t.get(answeredKey(id)) }

// answerCipher is the AEAD that seals the answer to pending request id:
// its key is derived from the id, which the store does not hold.
func answerCipher(id string) (cipher.AEAD, error) {
	key := sha256.Sum256([]byte("mcp-auth consent answer\x00" + id))
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealAnswer seals loc, the answer to pending request id.
func sealAnswer(rand io.Reader, id, loc string) ([]byte, error) {
	aead, err := answerCipher(id)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, []byte(loc), nil), nil
}

// openAnswer is the answer sealAnswer sealed for pending request id.
func openAnswer(id string, sealed []byte) (string, error) {
	aead, err := answerCipher(id)
	if err != nil {
		return "", err
	}
	if len(sealed) < aead.NonceSize() {
		return "", errors.New("sealed answer too short")
	}
	loc, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], nil)
	return string(loc), err
}

// newAnswer is the record of decision's answer loc to pending request
// id for the browser and user of s at now.
func newAnswer(rand io.Reader, id string, s *session, decision, loc string, now time.Time) (*answeredDecision, error) {
	sealed, err := sealAnswer(rand, id, loc)
	if err != nil {
		return nil, err
	}
	return &answeredDecision{Browser: s.Browser, User: s.User, Decision: decision, Sealed: sealed, ExpiresAt: now.Add(answeredTTL)}, nil
}
