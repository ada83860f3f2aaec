package dpop

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer/accesstoken"
)

// claimsByEncodingJSON is how the claims were read before the one-pass
// reader: encoding/json into a map, the members by exact name. The
// reader must agree with it on every claims text CheckMembers lets
// through.
func claimsByEncodingJSON(b []byte) (proofClaims, error) {
	var c proofClaims
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return c, err
	}
	for name, dst := range map[string]*string{"jti": &c.jti, "htm": &c.htm, "htu": &c.htu, "ath": &c.ath, "nonce": &c.nonce} {
		raw, ok := m[name]
		if !ok {
			continue
		}
		if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, dst) != nil {
			return c, errors.New("malformed " + name)
		}
	}
	if raw, ok := m["iat"]; ok {
		var n json.Number
		if len(raw) == 0 || raw[0] == '"' || json.Unmarshal(raw, &n) != nil {
			return c, errors.New("malformed iat")
		}
		f, err := n.Float64()
		if err != nil {
			return c, errors.New("malformed iat")
		}
		c.iat, c.hasIAT = time.Unix(int64(f), 0), true
	}
	return c, nil
}

var claimsSeeds = []string{
	`{"jti":"j1","htm":"POST","htu":"https://mcp.example.com/mcp","iat":1800000000,"ath":"x","nonce":"n"}`,
	`{}`, `null`, `[]`, `"jti"`, `1`, `true`,
	`{"jti":1}`, `{"htm":null}`, `{"htu":["a"]}`, `{"ath":{"a":1}}`, `{"nonce":true}`,
	`{"iat":"1800000000"}`, `{"iat":null}`, `{"iat":true}`, `{"iat":{}}`, `{"iat":[]}`,
	`{"iat":1.9}`, `{"iat":-1.5}`, `{"iat":1e400}`, `{"iat":-1e400}`, `{"iat":1e18}`, `{"iat":1e19}`, `{"iat":-0}`, `{"iat":0.0000001}`,
	`{"j\u0074i":"escaped name","\u0068tm":"GET"}`, `{"jti":"\u00e9\ud83d\ude00\n\"\\\/"}`, `{"jti":"\ud800"}`, `{"jti":"\udc00x"}`,
	`{"other":{"jti":"nested"},"list":[{"htm":"X"}],"jti":"top"}`, `{"JTI":"case"}`, `{"jti\u0000":"nul"}`,
	` { "jti" : "spaces" , "iat" : 5 } `, `{"jti":"a"} x`, `{"jti":"a"}{}`, `{"jti":"a",}`, `{"jti":"a"`,
	"{\"jti\":\"\xff\"}", `{"htu":""}`, `{"jti":""}`,
}

// TestProofClaimsAsEncodingJSON: the one-pass reader reads every seed
// as encoding/json did, where CheckMembers lets the claims through.
func TestProofClaimsAsEncodingJSON(t *testing.T) {
	for _, s := range claimsSeeds {
		checkClaimsAgree(t, []byte(s))
	}
}

// FuzzProofClaims: as TestProofClaimsAsEncodingJSON, for any claims.
func FuzzProofClaims(f *testing.F) {
	for _, s := range claimsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkClaimsAgree(t, b) })
}

func checkClaimsAgree(t *testing.T, b []byte) {
	t.Helper()
	if !json.Valid(b) || accesstoken.CheckMembers("e30."+b64(b)+".") != nil {
		// Refused before anything reads it (jwt reads the claims with
		// encoding/json, which refuses what json.Valid does).
		return
	}
	want, wantErr := claimsByEncodingJSON(b)
	var got proofClaims
	gotErr := got.UnmarshalJSON(b)
	if (gotErr != nil) != (wantErr != nil) {
		t.Fatalf("claims %q: error %v, encoding/json's %v", b, gotErr, wantErr)
	}
	if gotErr == nil && got != want {
		t.Errorf("claims %q: read %+v, encoding/json %+v", b, got, want)
	}
}

// TestProofClaimsOneText: the reader refuses claims that are not one
// JSON text, as encoding/json does, also where CheckMembers (which
// refuses them first in Check) is not in front of it.
func TestProofClaimsOneText(t *testing.T) {
	for _, s := range []string{`null x`, `null null`, `{"jti":"a"} x`, `{"jti":"a"}{}`, `{} []`, ``, ` `} {
		var c proofClaims
		if err := c.UnmarshalJSON([]byte(s)); err == nil {
			t.Errorf("UnmarshalJSON(%q) = nil, want an error", s)
		}
	}
}
