package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// dpopTransport is a DPoP client (RFC 9449) over base: every request gets
// a fresh proof for its method and URL, a Bearer token is sent with the
// DPoP scheme and hashed into ath; replay, when set, is sent instead of a
// fresh proof. last is the proof sent last.
type dpopTransport struct {
	base http.RoundTripper
	key  *ecdsa.PrivateKey

	mu           sync.Mutex
	last, replay string
}

func newDPoPTransport(t *testing.T, base http.RoundTripper) *dpopTransport {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &dpopTransport{base: base, key: k}
}

func (d *dpopTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	htu := *r.URL
	htu.RawQuery, htu.Fragment = "", ""
	claims := jwt.MapClaims{"jti": rand.Text(), "htm": r.Method, "htu": htu.String(), "iat": time.Now().Unix()}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		sum := sha256.Sum256([]byte(tok))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
		r.Header.Set("Authorization", "DPoP "+tok)
	}
	p := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	x, y := d.key.X.FillBytes(make([]byte, 32)), d.key.Y.FillBytes(make([]byte, 32))
	p.Header["typ"] = "dpop+jwt"
	p.Header["jwk"] = map[string]string{"kty": "EC", "crv": "P-256",
		"x": base64.RawURLEncoding.EncodeToString(x), "y": base64.RawURLEncoding.EncodeToString(y)}
	proof, err := p.SignedString(d.key)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.replay != "" {
		proof = d.replay
	}
	d.last = proof
	d.mu.Unlock()
	r.Header.Set("DPoP", proof)
	return d.base.RoundTrip(r)
}

// TestDPoPReplayAcrossGateways: a DPoP proof that one instance's gateway
// accepted is refused at the other's (each has its own replay memory;
// the record of spent proofs is in the database they share); and a
// gateway that cannot record a proof refuses the call with 503.
func TestDPoPReplayAcrossGateways(t *testing.T) {
	c := shared.get(t)
	ctx := ctxTimeout(t, 60*time.Second)
	da := newDPoPTransport(t, pinned{c.a.addr})
	a := &instance{name: "A", client: &http.Client{Transport: da}}
	tok := c.grant(ctx, t, robot(c.a), a)
	if tok.TokenType != "DPoP" {
		t.Fatalf("token_type = %q, want DPoP", tok.TokenType)
	}
	db := &http.Client{Transport: &dpopTransport{base: pinned{c.b.addr}, key: da.key}}
	b := &instance{name: "B", client: db}

	c.mustCall(ctx, t, a, tok.AccessToken, http.StatusOK)
	db.Transport.(*dpopTransport).replay = da.last
	resp, body, err := c.callResp(ctx, b, tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if challenge := resp.Header.Values("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(strings.Join(challenge, ","), `error="invalid_dpop_proof"`) {
		t.Errorf("A's proof replayed at B = %d %q %.200s; want 401 invalid_dpop_proof", resp.StatusCode, challenge, body)
	}
	db.Transport.(*dpopTransport).replay = ""
	c.mustCall(ctx, t, b, tok.AccessToken, http.StatusOK)

	// The database refuses the record: fail closed, until it takes it.
	if _, err := c.db.Psql(c.dsn, `CREATE FUNCTION refuse_dpop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
		CREATE TRIGGER refuse_dpop BEFORE INSERT OR UPDATE ON mcp_auth_entries FOR EACH ROW WHEN (NEW.bucket = 'dpop'::bytea) EXECUTE FUNCTION refuse_dpop()`); err != nil {
		t.Fatal(err)
	}
	drop := func() {
		if _, err := c.db.Psql(c.dsn, `DROP TRIGGER IF EXISTS refuse_dpop ON mcp_auth_entries; DROP FUNCTION IF EXISTS refuse_dpop()`); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(drop)
	c.mustCall(ctx, t, a, tok.AccessToken, http.StatusServiceUnavailable)
	drop()
	c.mustCall(ctx, t, a, tok.AccessToken, http.StatusOK)
}
