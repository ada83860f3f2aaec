package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// hostileConfig is what `load hostile` is told.
type hostileConfig struct {
	bench benchConfig // gateway URL and pid, issuer, client
	n     int         // tokens, sessions and addresses
	c     int         // concurrency
	// publicClient, if set, is a public client of the issuer whose
	// redirect URI is publicRedirect: the sign-in flood starts its
	// authorization requests.
	publicClient, publicRedirect string
	store                        string // the issuer's bbolt file, if set: its size is reported
}

func parseHostileFlags(args []string) (hostileConfig, error) {
	var c hostileConfig
	fs := flag.NewFlagSet("hostile", flag.ContinueOnError)
	fs.StringVar(&c.bench.gatewayURL, "gateway", "", "MCP endpoint URL through mcp_gateway + reverse_proxy")
	fs.IntVar(&c.bench.gatewayPID, "gateway-pid", 0, "pid of the gateway Caddy process (its issuer too)")
	fs.StringVar(&c.bench.issuer, "issuer", "", "issuer URL (tokens via client_credentials)")
	fs.StringVar(&c.bench.clientID, "client-id", "loadgen", "confidential client id (secret in $LOAD_CLIENT_SECRET)")
	fs.StringVar(&c.bench.scope, "scope", "", "space-separated scopes to request")
	fs.StringVar(&c.bench.proto, "proto", proto2025, "MCP protocol revision")
	fs.IntVar(&c.n, "n", 20000, "distinct tokens, session ids and client addresses")
	fs.IntVar(&c.c, "c", 16, "concurrency")
	fs.StringVar(&c.publicClient, "public-client", "", "public client for the sign-in flood (none: no sign-in flood)")
	fs.StringVar(&c.publicRedirect, "public-redirect", "", "the public client's redirect URI")
	fs.StringVar(&c.store, "store", "", "the issuer's bbolt file, whose size is reported after each flood")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.bench.clientSecret = os.Getenv("LOAD_CLIENT_SECRET")
	c.bench.resource = c.bench.gatewayURL
	c.bench.timeout = 30 * time.Second
	switch {
	case c.bench.gatewayURL == "" || c.bench.issuer == "":
		return c, errors.New("-gateway and -issuer are required")
	case c.bench.gatewayPID <= 0:
		return c, errors.New("-gateway-pid is required")
	case c.n < 1 || c.c < 1:
		return c, errors.New("-n and -c must be positive")
	}
	return c, nil
}

// tokensPerClient is how many of the token flood's tokens one client
// takes (clients <client-id>-0, -1, ...), within the issuer's 600 a minute
// per client.
const tokensPerClient = 500

// phase is one flood: f(i) runs for i in [0, n) with c workers.
type phase struct {
	name string
	f    func(i int) error
}

type phaseResult struct {
	name         string
	rssHalf, rss int64 // after half the flood, and at its end
	store        int64 // the store file's size at its end (-1: not known)
	took         time.Duration
}

func runHostile(args []string, out io.Writer) error {
	cfg, err := parseHostileFlags(args)
	if err != nil {
		return err
	}
	return hostile(cfg, out)
}

func hostile(cfg hostileConfig, out io.Writer) error {
	gw := newTarget("mcp_gateway", cfg.bench.gatewayURL, cfg.bench.gatewayPID, cfg.bench)
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, gw.client)
	md, err := issuerEndpoints(ctx, gw.client, cfg.bench.issuer)
	if err != nil {
		return err
	}
	tokenURL := md.TokenEndpoint
	cc := clientcredentials.Config{ClientID: cfg.bench.clientID, ClientSecret: cfg.bench.clientSecret, TokenURL: tokenURL,
		AuthStyle: oauth2.AuthStyleInHeader, EndpointParams: url.Values{"resource": {cfg.bench.resource}}}
	if cfg.bench.scope != "" {
		cc.Scopes = strings.Fields(cfg.bench.scope)
	}
	first, err := cc.Token(ctx)
	if err != nil {
		return fmt.Errorf("client_credentials token: %w", err)
	}
	phases := []phase{
		{"distinct valid tokens (one tools/call each)", func(i int) error {
			// The issuer gives one client at most 600 tokens a minute:
			// run.sh declares a client for each tokensPerClient of them.
			c := cc
			c.ClientID = fmt.Sprintf("%s-%d", cfg.bench.clientID, i/tokensPerClient)
			tok, err := c.Token(ctx)
			if err != nil {
				return fmt.Errorf("client_credentials token: %w", err)
			}
			return callWith(gw, tok.AccessToken, "", http.StatusOK)
		}},
		{"distinct session ids (a made-up Mcp-Session-Id each)", func(int) error {
			return callWith(gw, first.AccessToken, randomID(), http.StatusNotFound)
		}},
		{"distinct client addresses and client ids (a failing client authentication each)", func(i int) error {
			// A client id of its own each: failures of one id from
			// anywhere slow that id's attempts (by design), which would
			// time the flood rather than the tables.
			return failedClientAuth(tokenURL, "hostile-"+strconv.Itoa(i), loopbackAddr(i))
		}},
		{"distinct forged tokens (a made-up signature each)", func(int) error {
			// Each a new token to the claims cache: its signature is
			// checked every time.
			return callWith(gw, forged(first.AccessToken), "", http.StatusUnauthorized)
		}},
	}
	if cfg.publicClient != "" {
		if md.AuthorizationEndpoint == "" {
			return errors.New("issuer metadata has no authorization_endpoint")
		}
		phases = append(phases, phase{"distinct client addresses starting a sign-in (a cookieless /authorize each)", func(i int) error {
			// Addresses after the client authentication flood's: each
			// with its own budget of anonymous writes (a session and a
			// pending request each).
			return startSignIn(md.AuthorizationEndpoint, cfg.publicClient, cfg.publicRedirect, cfg.bench.resource, loopbackAddr(cfg.n+i))
		}})
	}
	before, err := rss(cfg.bench.gatewayPID, "VmRSS")
	if err != nil {
		return err
	}
	storeBefore := fileSize(cfg.store)
	var results []phaseResult
	for _, p := range phases {
		r := phaseResult{name: p.name}
		start := time.Now()
		for half := range 2 {
			lo, hi := half*cfg.n/2, (half+1)*cfg.n/2
			if err := flood(cfg.c, lo, hi, p.f); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
			m, err := rss(cfg.bench.gatewayPID, "VmRSS")
			if err != nil {
				return err
			}
			if half == 0 {
				r.rssHalf = m
			} else {
				r.rss = m
			}
		}
		r.took = time.Since(start)
		r.store = fileSize(cfg.store)
		results = append(results, r)
	}
	peak, err := rss(cfg.bench.gatewayPID, "VmHWM")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n### Hostile load on the gateway process (issuer + gateway), %d of each\n\n", cfg.n)
	fmt.Fprintf(out, "Host: %d CPUs%s. RSS = VmRSS of the Caddy process; peak = VmHWM.\n\n", runtime.NumCPU(), loadAverage())
	fmt.Fprintln(out, "| flood | RSS after half MiB | RSS after all MiB | took | store file MiB |")
	fmt.Fprintln(out, "|:--|--:|--:|--:|--:|")
	fmt.Fprintf(out, "| (before) | | %.1f | | %s |\n", mib(before), storeMiB(storeBefore))
	for _, r := range results {
		fmt.Fprintf(out, "| %s | %.1f | %.1f | %.1fs | %s |\n", r.name, mib(r.rssHalf), mib(r.rss), r.took.Seconds(), storeMiB(r.store))
	}
	fmt.Fprintf(out, "\nPeak RSS: %.1f MiB (%+.1f MiB over the start).\n", mib(peak), mib(peak-before))
	return nil
}

// flood runs f(i) for i in [lo, hi) with c workers; the first error stops it.
func flood(c, lo, hi int, f func(int) error) error {
	var next atomic.Int64
	next.Store(int64(lo))
	var firstErr error
	var once sync.Once
	var failed atomic.Bool
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= hi {
					return
				}
				if err := f(i); err != nil {
					failed.Store(true)
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// callWith sends one tools/call with token (and a session id, if any)
// and wants the status.
func callWith(t *target, token, session string, want int) error {
	req, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader(t.body))
	if err != nil {
		return err
	}
	req.Header = t.header.Clone()
	req.Header.Set("Authorization", "Bearer "+token)
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("status %d, want %d: %s", resp.StatusCode, want, truncate(string(b), 300))
	}
	return nil
}

// failedClientAuth asks for a token with a wrong client secret from the
// local address addr, on a connection of its own, and wants 401.
func failedClientAuth(tokenURL, clientID string, addr net.IP) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: addr}, Timeout: 10 * time.Second}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext, DisableKeepAlives: true}}
	form := url.Values{"grant_type": {"client_credentials"}}
	req, err := http.NewRequest(http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, "wrong-"+randomID())
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// 401 invalid_client, or 429/400 once the address or client is slowed.
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		return fmt.Errorf("wrong client secret from %s: status %d, want a refusal", addr, resp.StatusCode)
	}
	return nil
}

// forged is tok with its signature (a JWT's third part) replaced by
// random bytes of its length, or tok with one appended if it has none.
func forged(tok string) string {
	head, sig, ok := cutLast(tok, ".")
	if !ok || strings.Count(head, ".") != 1 {
		return tok + "." + randomID()
	}
	b := make([]byte, base64.RawURLEncoding.DecodedLen(len(sig)))
	rand.Read(b)
	return head + "." + base64.RawURLEncoding.EncodeToString(b)
}

func cutLast(s, sep string) (before, after string, ok bool) {
	if i := strings.LastIndex(s, sep); i >= 0 {
		return s[:i], s[i+len(sep):], true
	}
	return s, "", false
}

// startSignIn sends a cookieless authorization request for the public
// client from the local address addr, on a connection of its own, and
// wants a redirect (to the sign-in page; to the client with
// temporarily_unavailable once a limit is reached).
func startSignIn(authURL, clientID, redirect, resource string, addr net.IP) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: addr}, Timeout: 10 * time.Second}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DialContext: d.DialContext, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
		"state": {randomID()}, "resource": {resource}}
	resp, err := hc.Get(authURL + "?" + q.Encode())
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 3 {
		return fmt.Errorf("authorization request from %s: status %d, want a redirect", addr, resp.StatusCode)
	}
	return nil
}

// fileSize is the size of the file at path, -1 if there is none.
func fileSize(path string) int64 {
	if path == "" {
		return -1
	}
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

func storeMiB(n int64) string {
	if n < 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", mib(n))
}

// loopbackAddr is the i-th of 127.1.0.0/16 and up: distinct source
// addresses on the loopback interface, which holds all of 127/8.
func loopbackAddr(i int) net.IP {
	return net.IPv4(127, byte(1+i>>16), byte(i>>8), byte(i))
}

func randomID() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
