package accesstoken

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
)

// TestClaimsWireFormat: the issuer's tokens carry these members in this
// order, aud a single string, nbf and empty optional claims left out.
func TestClaimsWireFormat(t *testing.T) {
	at := time.Unix(1700000000, 0)
	c := Claims{
		Issuer: "https://auth.example.com", Subject: "alice", Audience: Audience{"https://mcp.example.com/mcp"},
		ClientID: "app", IssuedAt: jwt.NewNumericDate(at), ExpiresAt: jwt.NewNumericDate(at.Add(time.Hour)),
		ID: "j1", Scope: "mcp", Actor: &Actor{Subject: "agent-a", Actor: &Actor{Subject: "agent-b"}},
		PrincipalType: PrincipalUser, GrantID: "g1", Confirmation: &Confirmation{JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
	}
	got, err := json.Marshal(&c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"iss":"https://auth.example.com","sub":"alice","aud":"https://mcp.example.com/mcp","client_id":"app",` +
		`"iat":1700000000,"exp":1700003600,"jti":"j1","scope":"mcp","act":{"sub":"agent-a","act":{"sub":"agent-b"}},` +
		`"principal_type":"user","gid":"g1","cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}`
	if string(got) != want {
		t.Errorf("json.Marshal(claims) =\n%s\nwant\n%s", got, want)
	}
	var back Claims
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("json.Unmarshal(own output) error: %v", err)
	}
	if diff := cmp.Diff(c, back); diff != "" {
		t.Errorf("round trip differs (-sent +read):\n%s", diff)
	}
}

func TestClaimsDecode(t *testing.T) {
	base := `"iss":"https://auth.example.com","sub":"alice","client_id":"app","exp":1700003600`
	tests := []struct {
		name string
		json string
		want func(*Claims) bool
		err  string // substring of the error; "" for none
	}{
		{"minimal", `{` + base + `}`, func(c *Claims) bool { return c.Subject == "alice" && c.ExpiresAt.Unix() == 1700003600 }, ""},
		{"aud string", `{` + base + `,"aud":"x"}`, func(c *Claims) bool { return len(c.Audience) == 1 && c.Audience[0] == "x" }, ""},
		{"aud array", `{` + base + `,"aud":["x","y"]}`, func(c *Claims) bool { return len(c.Audience) == 2 && c.Audience[1] == "y" }, ""},
		{"unknown claims ignored", `{` + base + `,"x":{"y":[1,2]},"email":"a@b"}`, func(c *Claims) bool { return c.ClientID == "app" }, ""},
		{"names are case-sensitive", `{` + base + `,"SUB":"mallory","Scope":"admin"}`, func(c *Claims) bool { return c.Subject == "alice" && c.Scope == "" }, ""},
		{"fractional exp", `{"exp":1700003600.5}`, func(c *Claims) bool { return c.ExpiresAt != nil }, ""},
		{"act chain", `{` + base + `,"act":{"sub":"a","act":{"sub":"b","iss":"https://auth.example.com"}}}`, func(c *Claims) bool {
			return cmp.Equal(c.Actor.Chain(), []string{"a", "b"})
		}, ""},
		{"sub as number", `{"sub":7}`, nil, "malformed sub"},
		{"cnf jkt", `{` + base + `,"cnf":{"jkt":"abc"}}`, func(c *Claims) bool { return c.BoundKey() == "abc" }, ""},
		{"no cnf is a bearer token", `{` + base + `}`, func(c *Claims) bool { return c.BoundKey() == "" }, ""},
		// A binding that cannot be checked is not read as none.
		{"cnf by certificate", `{` + base + `,"cnf":{"x5t#S256":"abc"}}`, nil, "malformed cnf"},
		{"cnf jkt and more", `{` + base + `,"cnf":{"jkt":"abc","jwk":{}}}`, nil, "malformed cnf"},
		{"cnf jkt empty", `{` + base + `,"cnf":{"jkt":""}}`, nil, "malformed cnf"},
		{"cnf jkt number", `{` + base + `,"cnf":{"jkt":1}}`, nil, "malformed cnf"},
		{"cnf null", `{` + base + `,"cnf":null}`, nil, "malformed cnf"},
		{"sub null", `{"sub":null}`, nil, "malformed sub"},
		{"scope as array", `{"scope":["a"]}`, nil, "malformed scope"},
		{"principal_type as bool", `{"principal_type":true}`, nil, "malformed principal_type"},
		{"gid null", `{"gid":null}`, nil, "malformed gid"},
		{"iss as array", `{"iss":["x"]}`, nil, "malformed iss"},
		{"exp as string", `{"exp":"1700003600"}`, nil, "malformed exp"},
		{"exp null", `{"exp":null}`, nil, "malformed exp"},
		{"iat as object", `{"iat":{}}`, nil, "malformed iat"},
		{"nbf as string", `{"nbf":"1"}`, nil, "malformed nbf"},
		{"aud number", `{"aud":1}`, nil, "malformed aud"},
		{"aud array with number", `{"aud":["x",1]}`, nil, "malformed aud"},
		{"aud null", `{"aud":null}`, nil, "malformed aud"},
		{"act string", `{"act":"agent"}`, nil, "malformed act"},
		{"act null", `{"act":null}`, nil, "malformed act"},
		{"act without sub", `{"act":{"client_id":"x"}}`, nil, "act claim without sub"},
		{"act with empty sub", `{"act":{"sub":""}}`, nil, "act claim without sub"},
		{"actor of another issuer", `{` + base + `,"act":{"sub":"a","act":{"sub":"b","iss":"z"}}}`, nil, "actor of another issuer"},
		{"act iss null", `{` + base + `,"act":{"sub":"a","iss":null}}`, nil, "actor of another issuer"},
		{"nested act malformed", `{"act":{"sub":"a","act":[]}}`, nil, "malformed act"},
		{"act too deep", `{"act":` + strings.Repeat(`{"sub":"a","act":`, MaxActDepth) + `{"sub":"z"}` + strings.Repeat("}", MaxActDepth) + `}`, nil, "too deep"},
		{"not an object", `[1]`, nil, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Claims
			err := json.Unmarshal([]byte(tt.json), &c)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("Unmarshal(%s) error = %v, want %q", tt.json, err, tt.err)
				}
				var ce *ClaimError
				if strings.Contains(tt.err, "malformed") && !errors.As(err, &ce) {
					t.Errorf("Unmarshal(%s) error %T, want *ClaimError", tt.json, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Unmarshal(%s) error: %v", tt.json, err)
			}
			if !tt.want(&c) {
				t.Errorf("Unmarshal(%s) = %+v, not as expected", tt.json, c)
			}
		})
	}
}

func TestActorChainDepthLimit(t *testing.T) {
	deepest := strings.Repeat(`{"sub":"a","act":`, MaxActDepth-1) + `{"sub":"z"}` + strings.Repeat("}", MaxActDepth-1)
	var c Claims
	if err := json.Unmarshal([]byte(`{"act":`+deepest+`}`), &c); err != nil {
		t.Fatalf("act of depth %d: %v", MaxActDepth, err)
	}
	if n := len(c.Actor.Chain()); n != MaxActDepth {
		t.Errorf("len(Chain()) = %d, want %d", n, MaxActDepth)
	}
	if got := (*Actor)(nil).Chain(); got != nil {
		t.Errorf("nil Actor Chain() = %v, want nil", got)
	}
}

func TestValidPort(t *testing.T) {
	for _, tt := range []struct {
		port string
		want bool
	}{
		{"", true},
		{"1", true},
		{"443", true},
		{"65535", true},
		{"0", false},
		{"65536", false},
		{"99999", false},
		{"100000", false},
		// Written back without the zero by every URL parser: a
		// browser's https://h:0443 is https://h.
		{"0443", false},
		{"05555", false},
		{"00", false},
		{"+443", false},
		{"44a", false},
	} {
		if got := ValidPort(tt.port); got != tt.want {
			t.Errorf("ValidPort(%q) = %v, want %v", tt.port, got, tt.want)
		}
	}
}
