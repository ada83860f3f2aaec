package accesstoken

import (
	"encoding/base64"
	"errors"
	"testing"
)

// TestCheckMembers: a compact JWS of JSON objects naming each member
// once passes; one naming a member twice, or in two cases, is
// ErrAmbiguous; one that is no JWS of JSON at all is ErrAmbiguous, so
// that a caller can tell a prober "not a token" rather than describe a
// check the input never reached.
func TestCheckMembers(t *testing.T) {
	b := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	head := b(`{"alg":"ES256","typ":"at+jwt"}`)
	for _, c := range []struct {
		name, raw string
		want      error
	}{
		{"each member once", head + "." + b(`{"sub":"alice","scope":"mcp"}`) + ".sig", nil},
		{"padded", head + "==." + b(`{"sub":"alice"}`) + ".sig", nil},
		{"sub twice", head + "." + b(`{"sub":"alice","sub":"bob"}`) + ".sig", ErrAmbiguous},
		{"Scope and scope", head + "." + b(`{"scope":"mcp","Scope":"admin"}`) + ".sig", ErrAmbiguous},
		{"kid twice in the header", b(`{"alg":"ES256","kid":"a","kid":"b"}`) + "." + b(`{}`) + ".sig", ErrAmbiguous},
		{"nested act twice", head + "." + b(`{"act":{"sub":"a","sub":"b"}}`) + ".sig", ErrAmbiguous},
		{"garbage", "abc.def.ghi", ErrMalformed},
		{"no dots", "opaque-token-value", ErrMalformed},
		{"one dot", head + ".x", ErrMalformed},
		{"claims not JSON", head + "." + b(`not json`) + ".sig", ErrMalformed},
		{"header not base64url", "!!!." + b(`{}`) + ".sig", ErrMalformed},
	} {
		if err := CheckMembers(c.raw); !errors.Is(err, c.want) && !(err == nil && c.want == nil) {
			t.Errorf("%s: CheckMembers = %v, want %v", c.name, err, c.want)
		}
	}
}
