package issuer

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"
)

// slowDiscovery makes the stub's discovery document take d.
func slowDiscovery(stub *stubIdP, d time.Duration) {
	h := stub.srv.Config.Handler
	stub.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.well-known/openid-configuration" {
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// idpButton returns the "Continue with" form request of a fresh browser
// (no pending authorization request), ready to post.
func (e *testEnv) idpButton(t *testing.T, c *http.Client) *http.Request {
	t.Helper()
	resp, err := c.Get(e.srv.URL + pathLogin)
	if err != nil {
		t.Fatal(err)
	}
	f := findForm(t, readBody(t, resp), "idp-"+stubIdPName)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+f.action, strings.NewReader(f.hidden.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.srv.URL)
	return req
}

// TestIdPDiscoveryOutlivesVisitor: an anonymous visitor who presses
// "Continue with" and drops the connection while the provider's metadata
// is being read makes discover cache "context canceled" as the
// provider's failure: everyone's sign-in with that provider is then
// "Sign-in unavailable" for idpRetryAfter, though the provider is up.
// Repeated every 10 s (one request each, within the per-address limit)
// after a start or reload, before any discovery succeeded, it keeps the
// provider's sign-in down.
func TestIdPDiscoveryOutlivesVisitor(t *testing.T) {
	e, stub, _ := newIdPEnv(t, nil)
	slowDiscovery(stub, 300*time.Millisecond) // a provider across the internet

	attacker := e.browser()
	req := e.idpButton(t, attacker)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if resp, err := attacker.Do(req.WithContext(ctx)); err == nil {
		resp.Body.Close()
		t.Fatalf("attacker's request completed (%d); want it cut during discovery", resp.StatusCode)
	}
	time.Sleep(100 * time.Millisecond) // the server notices the closed connection

	res := e.idpSignIn(t, e.browser())
	if res.status != http.StatusSeeOther {
		t.Fatalf("a user's sign-in after another visitor dropped a connection = %d %q; want 303 (the provider is up)", res.status, res.body)
	}
}

// TestIdPSlowDiscoveryLeavesLoginPage: while a provider's metadata is
// being read (up to idpTimeout), discover holds idpClient.mu, and the
// login page's formTarget waits on the same mutex: every visitor's
// sign-in page (password users and other providers' users included)
// hangs. A provider that is down or slow, or a less trusted provider
// whose operator answers discovery slowly, and anyone who presses its
// button every idpRetryAfter, make the page hang for everyone about half
// of the time.
func TestIdPSlowDiscoveryLeavesLoginPage(t *testing.T) {
	e, stub, _ := newIdPEnv(t, nil)
	slowDiscovery(stub, 3*time.Second)

	presser := e.browser()
	req := e.idpButton(t, presser)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if resp, err := presser.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)

	start := time.Now()
	resp, err := e.browser().Get(e.srv.URL + pathLogin)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wg.Wait()
	if took > time.Second {
		t.Fatalf("another visitor's login page took %v while the provider's metadata was being read; want it served at once", took.Round(100*time.Millisecond))
	}
}

// TestIdPMetadataBackChannel (review s16-idp F1): the endpoints of a
// provider's metadata that the issuer calls itself (token_endpoint, with
// the code and the client secret; jwks_uri) must be https: a provider, or
// whoever controls its metadata, cannot point the code exchange at
// plain-http services such as Caddy's admin endpoint's /stop. http is
// allowed only on loopback beside an http loopback issuer (a provider on
// this machine, as in the tests).
func TestIdPMetadataBackChannel(t *testing.T) {
	var hits atomic.Int32
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusOK) // Caddy answers /stop with 200 and exits
	}))
	defer admin.Close()
	for _, tt := range []struct {
		name, token, jwks string // "" : the provider's own https endpoint
		ok                bool
	}{
		{"https endpoints", "", "", true},
		{"token_endpoint on plain-http loopback", admin.URL + "/stop", "", false},
		{"jwks_uri on plain-http loopback", "", admin.URL + "/config/", false},
		{"token_endpoint not a URL", "/token", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var idp *httptest.Server
			idp = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/.well-known/openid-configuration" {
					http.NotFound(w, r)
					return
				}
				token, jwks := cmp.Or(tt.token, idp.URL+"/token"), cmp.Or(tt.jwks, idp.URL+"/jwks")
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(map[string]any{
					"issuer": idp.URL, "authorization_endpoint": idp.URL + "/auth",
					"token_endpoint": token, "jwks_uri": jwks, "response_types_supported": []string{"code"},
				})
			}))
			defer idp.Close()
			// The production client, trusting the test server's
			// certificate (the provider is https, as a real one must be).
			client := newIdPHTTPClient()
			client.Transport = limitedTransport{idp.Client().Transport, idpMaxBytes}
			c := &idpClient{
				cfg:         IdentityProvider{Name: "partner", Issuer: idp.URL, ClientID: "mcp-auth", ClientSecret: "s"},
				redirectURI: "https://auth.example.com/login/partner/callback", client: client, now: time.Now,
			}
			disc, err := c.discover(t.Context())
			if (err == nil) != tt.ok {
				t.Fatalf("discover = %v, want ok %v", err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, errIdPUnavailable) {
					t.Errorf("discover = %v, want errIdPUnavailable", err)
				}
				return
			}
			// What idpCallback does with a code.
			_, _ = disc.oauth.Exchange(oidc.ClientContext(t.Context(), disc.client), "code", oauth2.VerifierOption("v"))
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the plain-http service got %d requests", n)
	}
}

// TestIdPReach (review s16-idp F1): the issuer dials, for a provider, the
// public addresses and the kinds of other address its issuer host has: a
// provider on a public host cannot have it dial loopback or an internal
// address (its metadata's endpoints, through DNS too: the check is on the
// address dialed), one inside the network cannot have it dial loopback.
func TestIdPReach(t *testing.T) {
	public, internal, loopback := netip.MustParseAddr("93.184.215.14"), netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("127.0.0.1")
	for _, tt := range []struct {
		issuer string
		want   map[netip.Addr]bool
	}{
		{"https://93.184.215.14", map[netip.Addr]bool{public: true, internal: false, loopback: false, netip.MustParseAddr("::1"): false, netip.MustParseAddr("169.254.169.254"): false}},
		{"https://10.0.0.5:8443", map[netip.Addr]bool{public: true, internal: true, loopback: false}},
		{"http://127.0.0.1:8080", map[netip.Addr]bool{public: true, internal: false, loopback: true}},
		{"http://localhost:8080", map[netip.Addr]bool{public: true, internal: false, loopback: true}},
	} {
		r, err := idpReachOf(t.Context(), tt.issuer)
		if err != nil {
			t.Fatalf("idpReachOf(%s): %v", tt.issuer, err)
		}
		for a, want := range tt.want {
			if got := r.allows(a); got != want {
				t.Errorf("issuer %s: allows(%s) = %v, want %v", tt.issuer, a, got, want)
			}
		}
	}
	// At the dial: a client for a public provider does not reach a
	// service on this machine.
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("a provider's client on a public host reached a loopback service")
	}))
	defer srv.Close()
	r, _ := idpReachOf(t.Context(), "https://93.184.215.14")
	if _, err := idpHTTPClient(r.dial(idpTimeout)).Get(srv.URL); !errors.Is(err, errForbiddenAddress) {
		t.Errorf("GET %s through a public provider's client = %v, want errForbiddenAddress", srv.URL, err)
	}
}

// TestIdPEmailDomainASCIIOnly (review s16-idp F4): allowed_email_domains
// folds ASCII case only. Unicode case folding would admit other domains:
// strings.ToLower maps U+0130 to "i" and the Kelvin sign U+212A to "k",
// so b<U+0130>gcorp.example (another registrable domain, whose mail its
// owner reads) passed as bigcorp.example. A configured domain that is not
// ASCII is refused (its IDNA xn-- form is the one to give).
func TestIdPEmailDomainASCIIOnly(t *testing.T) {
	for _, tt := range []struct {
		allowed, email string
		admitted       bool
	}{
		{"bigcorp.example", "mallory@b\u0130gcorp.example", false},
		{"kpmg.example", "mallory@\u212Apmg.example", false},
		{"bigcorp.example", "Alice@BigCorp.EXAMPLE", true},
	} {
		t.Run(tt.email, func(t *testing.T) {
			e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.AllowedEmailDomains = []string{tt.allowed} })
			stub.set(func(s *stubIdP) { s.claims["email"], s.claims["email_verified"] = tt.email, true })
			if res := e.idpSignIn(t, e.browser()); (res.status == http.StatusSeeOther) != tt.admitted {
				t.Fatalf("address %q under allowed_email_domains %s: sign-in %d, want admitted %v", tt.email, tt.allowed, res.status, tt.admitted)
			}
		})
	}
	p := IdentityProvider{Name: "corp", Issuer: "https://idp.example", ClientID: "c", AllowedEmailDomains: []string{"b\u0130gcorp.example"},
		GroupMap: map[string][]string{"*": {"staff"}}}
	if err := p.validate(map[string]bool{"staff": true}); err == nil || !strings.Contains(err.Error(), "xn--") {
		t.Errorf("validate(allowed_email_domains with a non-ASCII domain) = %v, want an error naming the xn-- form", err)
	}
}

// TestIdPGoogleAddressWithoutHostedDomain: a personal Google account can
// be made with any address its maker once received mail at, and Google
// keeps saying email_verified after the mailbox has gone (a former
// employee's, a reassigned one): Google vouches for an address's domain
// only for a Workspace or Cloud Identity account (hd) and at gmail.com.
// So with Google, allowed_email_domains admits an address in a listed
// domain only from such an account; another provider, or Google without
// allowed_email_domains (which loads with a warning), is read as before.
// The check is the one a sign-in and an ID-JAG share (identity).
func TestIdPGoogleAddressWithoutHostedDomain(t *testing.T) {
	for _, tt := range []struct {
		name, issuer string
		domains      []string
		claims       map[string]any
		admitted     bool
	}{
		{"google, workspace account", "https://accounts.google.com", []string{"corp.example"},
			map[string]any{"email": "alice@corp.example", "email_verified": true, "hd": "corp.example"}, true},
		{"google, workspace account of a secondary domain", "https://accounts.google.com", []string{"eu.corp.example"},
			map[string]any{"email": "alice@eu.corp.example", "email_verified": true, "hd": "corp.example"}, true},
		{"google, personal account with the domain's address", "https://accounts.google.com", []string{"corp.example"},
			map[string]any{"email": "alice@corp.example", "email_verified": true}, false},
		{"google, personal account, hd empty", "https://accounts.google.com", []string{"corp.example"},
			map[string]any{"email": "alice@corp.example", "email_verified": true, "hd": ""}, false},
		{"google, personal account, hd not a string", "https://accounts.google.com", []string{"corp.example"},
			map[string]any{"email": "alice@corp.example", "email_verified": "true", "hd": true}, false},
		{"google with a slash, personal account", "https://accounts.google.com/", []string{"corp.example"},
			map[string]any{"email": "alice@corp.example", "email_verified": true}, false},
		{"google, gmail listed", "https://accounts.google.com", []string{"gmail.com"},
			map[string]any{"email": "Alice@GMail.com", "email_verified": true}, true},
		{"google, googlemail listed", "https://accounts.google.com", []string{"googlemail.com"},
			map[string]any{"email": "alice@googlemail.com", "email_verified": true}, true},
		{"google, no allowed_email_domains", "https://accounts.google.com", nil,
			map[string]any{"email": "alice@corp.example", "email_verified": true}, true},
		{"another provider, no hd", "https://idp.example", []string{"corp.example"},
			map[string]any{"email": "alice@corp.example", "email_verified": true}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := IdentityProvider{Name: "corp", Issuer: tt.issuer, ClientID: "c", AllowedEmailDomains: tt.domains,
				GroupMap: map[string][]string{"*": {"staff"}}}
			if err := p.validate(map[string]bool{"staff": true}); err != nil {
				t.Fatal(err)
			}
			claims := map[string]any{"sub": "u-1"}
			maps.Copy(claims, tt.claims)
			id, err := p.identity(claims, "u-1")
			if admitted := err == nil; admitted != tt.admitted {
				t.Fatalf("identity(%v) = %v, %v; want admitted %v", tt.claims, id, err, tt.admitted)
			}
			if err != nil && !errors.Is(err, errIdPRefused) {
				t.Errorf("identity(%v) = %v, want %v", tt.claims, err, errIdPRefused)
			}
		})
	}
	// Another provider's sign-in, as it comes to the callback, without hd:
	// admitted as before.
	e, stub, _ := newIdPEnv(t, nil)
	stub.set(func(s *stubIdP) { s.claims["email"], s.claims["email_verified"] = "alice@corp.example", true })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in at another provider without hd = %d %q, want 303", res.status, res.body)
	}
}

// TestDisableUser (review s16-idp F5): an operator can keep one user of
// an identity provider out: a disabled user cannot sign in, at its
// provider either, until enabled, and disabling ends its login sessions.
// Removing such a user only signs it out (TestIdPReassignedName: its next
// sign-in there creates it again). A user of the configuration is the
// Caddyfile's to change (409), an unknown one is 404.
func TestDisableUser(t *testing.T) {
	e, _, _ := newIdPEnv(t, func(p *IdentityProvider) { p.UserClaim = "email" })
	const name = stubIdPName + ":alice@corp.example"
	signedIn := e.browser()
	if res := e.idpSignIn(t, signedIn); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	admin := httptest.NewServer(http.StripPrefix("/mcp-auth", e.iss.newAdmin(bcrypt.MinCost)))
	t.Cleanup(admin.Close)
	post := func(user, action string) int {
		t.Helper()
		resp, err := http.Post(admin.URL+"/mcp-auth/users/"+url.PathEscape(user)+"/"+action, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(name, "disable"); got != http.StatusNoContent {
		t.Fatalf("disable = %d, want 204", got)
	}
	var u User
	if err := e.get(bucketUsers, name, &u); err != nil || !u.Disabled {
		t.Errorf("user after disable: %+v, %v; want disabled", u, err)
	}
	// idpSignIn fails the test unless /authorize sends the browser to
	// log in: the session ended.
	for _, c := range []*http.Client{signedIn, e.browser()} {
		if res := e.idpSignIn(t, c); res.status == http.StatusSeeOther {
			t.Errorf("a disabled user's sign-in at its provider = %d, want refused", res.status)
		}
	}
	if got := post(name, "enable"); got != http.StatusNoContent {
		t.Fatalf("enable = %d, want 204", got)
	}
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Errorf("sign-in after enable = %d %q, want 303", res.status, res.body)
	}
	if got := post(bUser, "disable"); got != http.StatusConflict {
		t.Errorf("disable a configured user = %d, want 409", got)
	}
	if got := post("nobody", "disable"); got != http.StatusNotFound {
		t.Errorf("disable an unknown user = %d, want 404", got)
	}
}

// TestIdPBehindProxy (review s16b F3): a provider reached through
// HTTPS_PROXY, on a host that only the proxy can resolve (the usual
// egress-proxy network), is discovered: the issuer judges the proxy's
// address, which is all it dials, and leaves the name to the proxy. The
// test runs itself in a child process, whose environment names the
// proxy.
func TestIdPBehindProxy(t *testing.T) {
	const issuer = "https://idp.corp.invalid"
	if os.Getenv("IDP_PROXY_TEST_CHILD") == "1" {
		c := &idpClient{cfg: IdentityProvider{Name: "corp", Issuer: issuer, ClientID: "c"},
			redirectURI: "https://auth.example.com/login/corp/callback", now: time.Now}
		if _, err := c.discover(t.Context()); err != nil {
			t.Fatalf("discover through HTTPS_PROXY = %v; want the provider's metadata", err)
		}
		return
	}
	certs, pemFile := proxiedIdPCert(t)
	idp := proxiedIdP(t, certs, issuer+"/token", issuer+"/jwks")
	runBehindProxy(t, idp, pemFile, "TestIdPBehindProxy", "IDP_PROXY_TEST_CHILD=1")
}

// TestIdPBehindProxyReachesOnlyTheProxy: behind an egress proxy
// (HTTPS_PROXY), the issuer allowed every direct dial the kinds of
// address the proxy has, while Go dials some hosts directly whatever the
// proxy (loopback ones always, NO_PROXY's): with a proxy on this machine
// (a sidecar on 127.0.0.1), a hostile or compromised provider's metadata
// naming https://127.0.0.1:<port>/ as its token_endpoint had the code
// exchange, with the client secret, POSTed to any https service on the
// machine, its jwks_uri fetched from one; likewise a gateway in front of a
// remote issuer (ReachDialContext). Only the proxy's own address is
// judged by the proxy's kinds; every other dial by the public rule. The
// test runs itself in a child process, whose environment names the proxy.
func TestIdPBehindProxyReachesOnlyTheProxy(t *testing.T) {
	const issuer = "https://idp.corp.invalid"
	if os.Getenv("IDP_PROXY_REACH_CHILD") == "1" {
		internal := os.Getenv("IDP_PROXY_REACH_INTERNAL")
		c := &idpClient{cfg: IdentityProvider{Name: "corp", Issuer: issuer, ClientID: "c", ClientSecret: "the-client-secret"},
			redirectURI: "https://auth.example.com/login/corp/callback", now: time.Now}
		disc, err := c.discover(t.Context())
		if err != nil {
			t.Fatalf("discover through HTTPS_PROXY = %v; want the provider's metadata", err)
		}
		// What idpCallback does with a code, and go-oidc with the keys.
		if _, err := disc.oauth.Exchange(oidc.ClientContext(t.Context(), disc.client), "code", oauth2.VerifierOption("v")); !errors.Is(err, errForbiddenAddress) {
			t.Errorf("code exchange at %s = %v, want errForbiddenAddress", internal, err)
		}
		if _, err := disc.client.Get("https://" + internal + "/jwks"); !errors.Is(err, errForbiddenAddress) {
			t.Errorf("key fetch at %s = %v, want errForbiddenAddress", internal, err)
		}
		if _, err := ReachDialContext(issuer, time.Second)(t.Context(), "tcp", internal); !errors.Is(err, errForbiddenAddress) {
			t.Errorf("a remote issuer's dial to %s = %v, want errForbiddenAddress", internal, err)
		}
		return
	}
	certs, pemFile := proxiedIdPCert(t)
	// An https service on this machine, which the provider must not reach.
	var reached atomic.Int32
	svc := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		t.Errorf("the service on this machine got %s %s (Authorization %t)", r.Method, r.URL.Path, r.Header.Get("Authorization") != "")
	}))
	svc.TLS = &tls.Config{Certificates: certs}
	svc.StartTLS()
	defer svc.Close()
	internal := svc.Listener.Addr().String()
	idp := proxiedIdP(t, certs, "https://"+internal+"/token", "https://"+internal+"/jwks")
	runBehindProxy(t, idp, pemFile, "TestIdPBehindProxyReachesOnlyTheProxy", "IDP_PROXY_REACH_CHILD=1", "IDP_PROXY_REACH_INTERNAL="+internal)
	if n := reached.Load(); n != 0 {
		t.Errorf("the service on this machine got %d requests", n)
	}
}

// proxiedIdPCert is a certificate for idp.corp.invalid and 127.0.0.1, and
// the file a child trusts it through (SSL_CERT_FILE).
func proxiedIdPCert(t *testing.T) ([]tls.Certificate, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "idp.corp.invalid"},
		DNSNames: []string{"idp.corp.invalid"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pemFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(pemFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, pemFile
}

// proxiedIdP is the provider idp.corp.invalid, whose metadata names token
// and jwks.
func proxiedIdP(t *testing.T, certs []tls.Certificate, token, jwks string) *httptest.Server {
	t.Helper()
	const issuer = "https://idp.corp.invalid"
	idp := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": issuer, "authorization_endpoint": issuer + "/auth",
			"token_endpoint": token, "jwks_uri": jwks, "response_types_supported": []string{"code"}})
	}))
	idp.TLS = &tls.Config{Certificates: certs}
	idp.StartTLS()
	t.Cleanup(idp.Close)
	return idp
}

// runBehindProxy runs test in a child process with env, behind an egress
// proxy on 127.0.0.1 that resolves names (here: every CONNECT goes to
// idp), trusting the certificate in pemFile.
func runBehindProxy(t *testing.T, idp *httptest.Server, pemFile, test string, env ...string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				req, err := http.ReadRequest(bufio.NewReader(conn))
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				up, err := net.Dial("tcp", idp.Listener.Addr().String())
				if err != nil {
					return
				}
				defer up.Close()
				_, _ = io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
				go func() { _, _ = io.Copy(up, conn) }()
				_, _ = io.Copy(conn, up)
			}()
		}
	}()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(append(os.Environ(), env...), "HTTPS_PROXY=http://"+ln.Addr().String(), "NO_PROXY=", "no_proxy=", "SSL_CERT_FILE="+pemFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// TestAdminUserShowsIdPOrigin: a provider's user records the issuer and
// tenant that provisioned it, and a re-point keeps it while refusing its
// name to the new population until an operator deletes it
// (TestIdPRepointedAccountNotTakenOver). The admin API showed neither, so
// an operator could not tell which kept users are the old population's:
// GET /users and /users/<name> show idp_issuer and idp_tenant.
func TestAdminUserShowsIdPOrigin(t *testing.T) {
	e, stub, _ := newIdPEnv(t, func(p *IdentityProvider) { p.Tenant = "acme" })
	stub.set(func(s *stubIdP) { s.claims["tenant"] = "acme" })
	if res := e.idpSignIn(t, e.browser()); res.status != http.StatusSeeOther {
		t.Fatalf("sign-in = %d %q, want 303", res.status, res.body)
	}
	admin := httptest.NewServer(http.StripPrefix("/mcp-auth", e.iss.newAdmin(bcrypt.MinCost)))
	t.Cleanup(admin.Close)
	const name = stubIdPName + ":u-1"
	get := func(path string, into any) {
		t.Helper()
		resp, err := http.Get(admin.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(into); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %d, %v", path, resp.StatusCode, err)
		}
	}
	var one map[string]any
	get("/mcp-auth/users/"+url.PathEscape(name), &one)
	var all []map[string]any
	get("/mcp-auth/users", &all)
	i := slices.IndexFunc(all, func(u map[string]any) bool { return u["username"] == name })
	if i < 0 {
		t.Fatalf("GET /users lists no %s: %v", name, all)
	}
	for what, u := range map[string]map[string]any{"GET /users/<name>": one, "GET /users": all[i]} {
		if u["idp_issuer"] != stub.srv.URL || u["idp_tenant"] != "acme" {
			t.Errorf("%s: idp_issuer, idp_tenant = %v, %v; want %s, acme", what, u["idp_issuer"], u["idp_tenant"], stub.srv.URL)
		}
	}
}
