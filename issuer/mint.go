package issuer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/zap"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/store"
)

// tokenSubject is what a token is issued for.
type tokenSubject struct {
	client   *Client
	user     *User // nil for client and agent tokens
	subject  string
	resource string
	scopes   []string
	act      *accesstoken.Actor // who acts for the subject, newest outermost
	grantID  string
	authTime time.Time
	nonce    string
	// principalType is the claim when user is nil (principalAgent,
	// principalClient); a user's token always says principalUser.
	principalType string
	// notAfter, when set, caps the access token's expiry: no token
	// outlives its grant, whose record is how revoking a user, client or
	// agent finds it, and an exchanged token never outlives its subject
	// token.
	notAfter time.Time
	// jkt binds the access token to a DPoP key (cnf.jkt); "" for a bearer
	// token.
	jkt string
}

// expiry is when an access token issued now for s expires.
func (i *Issuer) expiry(s tokenSubject) time.Time {
	exp := i.now().Add(i.cfg.AccessTokenTTL)
	if !s.notAfter.IsZero() && s.notAfter.Before(exp) {
		exp = s.notAfter
	}
	return exp
}

// expiresIn is a token's expires_in: whole seconds left, and never 0,
// which clients read as "no expiry given" (golang.org/x/oauth2 then takes
// the token as valid forever). A grant that let a token be issued with
// under a second left (its check read the clock a moment before) is
// answered 1.
func expiresIn(exp, now time.Time) int64 {
	return max(1, int64(exp.Sub(now)/time.Second))
}

// issuance is what a grant decided to issue: the minter signs it and
// records it.
type issuance struct {
	grantType string
	subject   tokenSubject
	// refresh draws a refresh token (for record to store), of family
	// (the token refreshed's) or, when "", of a new one.
	refresh bool
	family  string
	// exchanged answers as RFC 8693 does: issued_token_type, and only an
	// access token.
	exchanged bool
	// record stores what was minted in the transaction that commits the
	// issue; nil stores nothing. It may return refuse(err): what it wrote
	// is committed and the request fails with err (a replay's revocation).
	// Like every store.Update function, it may run more than once.
	record func(tx store.Tx, t *minted) error
	// recording names record's write in errors; gone is the answer when
	// record finds its record gone (store.ErrNotFound).
	recording string
	gone      error
	// bases are the principals the issuance rests on: if a revocation
	// stamped one after its basis, nothing is issued (record_epochs.go).
	bases []principalBasis
	// authenticated is the client (or agent) that authenticated the
	// request when it is not the subject's (a token exchange by the
	// acting agent): its credentials are read again too (sameCredentials).
	authenticated *Client
	// assertion is the request's client assertion, spent in the
	// transaction that commits the issue; nil for none.
	assertion *clientAssertion
	// signedBy are the issuer's tokens the issuance rests on (a token
	// exchange's subject and actor tokens), verified against the key set
	// as last read: a key withdrawn since (WithdrawSigningKeys) is gone
	// from the store, and nothing is issued.
	signedBy []signedToken
}

// errKeyWithdrawn: the key a token was signed with has been withdrawn
// since this instance last read the key set.
var errKeyWithdrawn = ErrTemporarilyUnavailable.WithDescription("the signing key has just been withdrawn; retry")

// idTokenKeyGone reports whether the key that signed idToken ("" for
// none) has no record in either key set: withdrawn since it was read.
func idTokenKeyGone(tx store.Tx, idToken string) (bool, error) {
	if idToken == "" {
		return false, nil
	}
	kid := headerKID(idToken)
	for _, bucket := range [...]string{bucketKeys, bucketIDTokenKeys} {
		switch _, err := keySetIn(tx, bucket).t.get(kid); {
		case err == nil:
			return false, nil
		case !errors.Is(err, store.ErrNotFound):
			return false, err
		}
	}
	return true, nil
}

// signedToken is a token an issuance rests on: the kid that signed it,
// and the answer when that key has been withdrawn.
type signedToken struct {
	kid       string
	withdrawn error
}

// principals are s's client, user and actors, the client and actors
// established at clientBasis and the user at userBasis.
func (s tokenSubject) principals(clientBasis, userBasis time.Time) []principalBasis {
	out := []principalBasis{{clientPrincipal(s.client.ID), clientBasis}}
	if s.user != nil {
		out = append(out, principalBasis{userPrincipal(s.subject), userBasis})
	}
	for _, a := range s.act.Chain() {
		out = append(out, principalBasis{agentPrincipal(a), clientBasis})
	}
	return out
}

// errPrincipalRevoked: a revocation of the request's client, user or
// agent committed while the request ran.
var errPrincipalRevoked = ErrInvalidGrant.WithDescription("the client, user or agent of this request was revoked")

// errUserNamedAsClient refuses a user's token whose sub would be its
// client_id (minter.issue).
var errUserNamedAsClient = ErrInvalidGrant.WithDescription("the user's name is this client's id: no token is issued to the user for it")

// sameCredentials reports whether a stored client or agent c, as it
// authenticated, is still stored with the same credentials in tx (for a
// client, with a registration no narrower: registrationNarrowed). A
// rotation, removal or disabling stamps its revocation before its own
// transaction commits, and a request that began after the stamp but read
// the old credentials before the commit would otherwise issue a grant the
// revocation's scan never saw (review s13-cluster F1). The read is in the
// issuing transaction, so a concurrent change conflicts with it
// (PostgreSQL) or is wholly before or after it (bbolt). Configured
// clients and agents change only with a configuration, and CIMD clients
// with their document.
func sameCredentials(tx store.Tx, c *Client) (bool, error) {
	var hash, jwksURI string
	var jwks []byte
	switch {
	case c.agent != nil && c.agent.Source != sourceConfig:
		a, err := agentsIn(tx).get(c.ID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		if a.Disabled {
			return false, nil
		}
		hash, jwks, jwksURI = a.SecretHash, a.JWKS, a.JWKSURI
	case c.agent == nil && (c.Source == sourceAdmin || c.Source == sourceDCR):
		stored, err := clientsIn(tx).get(c.ID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		// An update that narrowed the registration (UpdateClient) revoked
		// what the client held, as a rotation does.
		return !registrationNarrowed(c, stored), nil
	default:
		return true, nil
	}
	return hash == c.SecretHash && bytes.Equal(jwks, c.JWKS) && jwksURI == c.JWKSURI, nil
}

// minted is what the minter signed and drew, for record.
type minted struct {
	jti          string // of the access token
	refreshToken string // "" unless refresh
}

// refusal is what record returns to commit its writes and still refuse.
type refusal struct{ err error }

func (r *refusal) Error() string { return r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

func refuse(err error) error { return &refusal{err} }

// minter signs the tokens of an issuance and records them.
type minter struct {
	iss *Issuer
	// beforeRecord, in tests, runs between signing and recording: where a
	// concurrent revocation can land.
	beforeRecord func()
}

// issue signs the access token (and an ID token when the user granted
// openid), draws a refresh token when asked, then runs record; the
// tokens are returned only when record committed.
func (m minter) issue(ctx context.Context, is *issuance) (*tokenResponse, error) {
	i, s := m.iss, is.subject
	if s.user != nil && s.client != nil && s.subject == s.client.ID {
		// A user named as the client's id: its sub would equal its
		// client_id, a client's own token to a resource server. Names
		// are kept apart (a client metadata document's id too), but a
		// store may hold a user an earlier release took under such a
		// name (its admin API, an identity provider named https).
		return nil, errUserNamedAsClient
	}
	exp := i.expiry(s)
	at, jti, kid, err := i.signAccessToken(ctx, s, exp)
	if err != nil {
		return nil, err
	}
	resp := &tokenResponse{
		AccessToken: at,
		TokenType:   tokenTypeOf(s),
		ExpiresIn:   expiresIn(exp, i.now()),
		Scope:       strings.Join(s.scopes, " "),
	}
	if is.grantType == grantJWTBearer {
		resp.Resource = s.resource
	}
	if is.refresh {
		if resp.RefreshToken, err = newRefreshToken(is.family, i.randomToken); err != nil {
			return nil, err
		}
	}
	switch {
	case is.exchanged:
		resp.IssuedTokenType = tokenTypeAccessToken
	case s.user != nil && slices.Contains(s.scopes, scopeOpenID):
		if is.grantType == grantRefreshToken && i.idTokenAlgOffered(s.client) != nil {
			// OpenID Connect Core 12.2: a refresh's answer may leave the
			// ID token out, as it does for a client registered for an
			// algorithm signing_alg no longer offers: its grant goes on,
			// and nothing is signed in an algorithm it did not register.
			break
		}
		if resp.IDToken, err = m.signIDToken(ctx, s, at); err != nil {
			return nil, err
		}
	}
	if m.beforeRecord != nil {
		m.beforeRecord()
	}
	if is.record != nil || len(is.bases) > 0 || is.assertion != nil || len(is.signedBy) > 0 {
		t := &minted{jti: jti, refreshToken: resp.RefreshToken}
		var refused error
		err := i.store.Update(ctx, func(tx store.Tx) error {
			refused = nil
			switch ended, err := epochsIn(tx).ended(is.bases); {
			case err != nil:
				return err
			case ended != "":
				refused = errPrincipalRevoked
				return nil
			}
			switch ok, err := i.creds.mayIssue(tx, s, is.authenticated); {
			case err != nil:
				return err
			case !ok:
				refused = errPrincipalRevoked
				return nil
			}
			for _, st := range is.signedBy {
				// Read in the transaction, serialized with the withdrawal:
				// an instance that re-read the keys between verifying the
				// token and signing would otherwise sign with the new key.
				switch _, err := keysIn(tx).t.get(st.kid); {
				case errors.Is(err, store.ErrNotFound):
					refused = st.withdrawn
					return nil
				case err != nil:
					return err
				}
			}
			for _, c := range [...]*Client{s.client, is.authenticated} {
				if c == nil {
					continue
				}
				switch same, err := sameCredentials(tx, c); {
				case err != nil:
					return err
				case !same:
					refused = errPrincipalRevoked
					return nil
				}
			}
			// The key that signed it must stay published, when another
			// instance retired it after this one last read the key set
			// (keyRing.signer extends only a key it saw retired):
			// serialized with the rotation, which reads the horizon.
			// Without a record of the key, withdrawn since
			// (WithdrawSigningKeys), nothing would verify the token:
			// nothing is issued, nothing spent, and the retry signs
			// with the new key.
			switch err := keysIn(tx).publishUntil(kid, exp.Add(accesstoken.Leeway)); {
			case errors.Is(err, store.ErrNotFound):
				refused = errKeyWithdrawn
				return nil
			case err != nil:
				return err
			}
			// So for the ID token's key, of either set.
			switch withdrawn, err := idTokenKeyGone(tx, resp.IDToken); {
			case err != nil:
				return err
			case withdrawn:
				refused = errKeyWithdrawn
				return nil
			}
			// Grant revocations must outlast this token, whatever the
			// access_token_ttl when they happen (tokenHorizon).
			if err := epochsIn(tx).coverToken(exp); err != nil {
				return err
			}
			if err := is.assertion.use(tx); err != nil {
				return err // a concurrent request spent it: nothing is written
			}
			if is.record == nil {
				return nil
			}
			err := is.record(tx, t)
			if r := (*refusal)(nil); errors.As(err, &r) {
				refused = r.err
				return nil
			}
			return err
		})
		switch {
		case errors.Is(err, store.ErrNotFound) && is.gone != nil:
			return nil, is.gone
		case err != nil:
			return nil, fmt.Errorf("%s: %w", is.recording, err)
		case refused == errKeyWithdrawn:
			for _, k := range [...]*keyRing{i.keys, i.idKeys} {
				if err := k.load(ctx); err != nil {
					return nil, err
				}
			}
			return nil, refused
		case refused != nil:
			return nil, refused
		}
	}
	i.metrics.TokenIssued(is.grantType)
	if ce := i.log.Check(zap.InfoLevel, "token issued"); ce != nil {
		ce.Write(zap.String("grant_type", is.grantType), zap.String("client_id", s.client.ID), zap.String("sub", s.subject),
			zap.Strings("act", s.act.Chain()), zap.String("resource", s.resource), zap.Strings("scopes", s.scopes),
			zap.String("grant", s.grantID))
	}
	return resp, nil
}

// tokenTypeOf is the token_type answered: DPoP for a bound token (RFC
// 9449 section 5), else Bearer.
func tokenTypeOf(s tokenSubject) string {
	if s.jkt != "" {
		return "DPoP"
	}
	return "Bearer"
}

// signIDToken signs an OpenID Connect ID token (Core 2, 3.1.3.6).
func (m minter) signIDToken(ctx context.Context, s tokenSubject, accessToken string) (string, error) {
	now := m.iss.now()
	k, err := m.iss.idTokenSigner(ctx, s.client, now.Add(m.iss.cfg.IDTokenTTL+accesstoken.Leeway))
	if err != nil {
		return "", err
	}
	c := jwt.MapClaims{
		"iss":     m.iss.URL(),
		"sub":     s.subject,
		"aud":     s.client.ID,
		"azp":     s.client.ID,
		"iat":     now.Unix(),
		"exp":     now.Add(m.iss.cfg.IDTokenTTL).Unix(),
		"at_hash": atHash(k.alg, accessToken),
	}
	if !s.authTime.IsZero() {
		c["auth_time"] = s.authTime.Unix()
	}
	if s.nonce != "" {
		c["nonce"] = s.nonce
	}
	t := jwt.NewWithClaims(k.method, c)
	t.Header["kid"] = k.kid
	raw, err := t.SignedString(k.private)
	if err != nil {
		return "", fmt.Errorf("sign id token: %w", err)
	}
	return raw, nil
}

// atHash is OIDC Core 3.1.3.6's at_hash: the left half of the hash the
// signing algorithm uses (SHA-512 for Ed25519).
func atHash(alg, token string) string {
	var h hash.Hash = sha256.New()
	if alg == "EdDSA" {
		h = sha512.New()
	}
	h.Write([]byte(token))
	sum := h.Sum(nil)
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}
