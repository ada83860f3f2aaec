package idp

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestFederatedLogsHoldNoSecrets runs sign-ins at the provider, admitted
// and refused (a domain not allowed, the provider's answer to a code it
// never issued, an earlier login's ID token, a forged state), with
// Caddy's default log at DEBUG level and the README's access log, and
// then looks for every credential of those sign-ins in every line Caddy
// wrote: the client secret the issuer holds at the provider, the
// provider's codes and our states to it, its ID, access and refresh
// tokens, our code, tokens and session cookie, raw and URL-encoded.
func TestFederatedLogsHoldNoSecrets(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	defaultLog, accessLog := filepath.Join(dir, "caddy.log"), filepath.Join(dir, "access.log")
	block, err := harness.AccessLogBlock(string(readme), accessLog)
	if err != nil {
		t.Fatalf("README.md: %v", err)
	}
	global := fmt.Sprintf("\tlog default {\n\t\toutput file %s\n\t\tlevel DEBUG\n\t}\n", defaultLog)
	s := startStackGlobal(t, "1h", global, block)
	s.idp.setAccounts(t, map[string]account{accountAlice: alice, "eve": outsider})
	ctx := context.Background()
	callback := s.Issuer + "/login/" + idpName + "/callback"
	secrets := []string{idpSecret}
	seenURLs := func(r *harness.Robot) {
		l := r.Client.Transport.(*urlLog)
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, u := range l.urls {
			q := u.Query()
			for _, k := range []string{"code", "state"} {
				if v := q.Get(k); len(v) >= 16 {
					secrets = append(secrets, v)
				}
			}
		}
	}

	// Admitted: alice, then refreshed.
	r := newRobot(s.Redirect)
	tok, out := s.authorize(t, r, accountAlice, nil)
	if tok == nil {
		t.Fatalf("sign-in ended on %s (%d): %s", out.page.URL, out.page.Status, out.page.Text())
	}
	seenURLs(r)
	idt, _ := tok.Extra("id_token").(string)
	secrets = append(secrets, tok.AccessToken, tok.RefreshToken, idt)
	iss, _ := url.Parse(s.Issuer)
	for _, c := range r.Client.Jar.Cookies(iss) {
		secrets = append(secrets, c.Value)
	}
	if tr, err := harness.Refresh(ctx, s.meta, clientID, tok.RefreshToken, s.Resource); err != nil || tr.Status != http.StatusOK {
		t.Fatalf("refresh: %d %v", tr.Status, err)
	} else {
		secrets = append(secrets, tr.AccessToken, tr.RefreshToken)
	}

	// Refused by the configuration: a domain not allowed.
	r = newRobot(s.Redirect)
	if tok, _ := s.authorize(t, r, "eve", nil); tok != nil {
		t.Fatal("eve got a token")
	}
	seenURLs(r)

	// A code the provider never issued, with the browser's own state:
	// the provider refuses it at its token endpoint.
	r = newRobot(s.Redirect)
	s.authorize(t, r, accountAlice, func(p *harness.Page) bool {
		state := victimState(t, r)
		pg, err := r.Get(ctx, callback+"?code=never-issued-code-5d1e9a7b3c&state="+url.QueryEscape(state)+"&iss="+url.QueryEscape(s.idp.Issuer))
		if err != nil {
			t.Fatal(err)
		}
		if pg.Status != http.StatusForbidden {
			t.Errorf("a code the provider never issued: page %d %q, want 403", pg.Status, pg.Text())
		}
		return false
	})
	seenURLs(r)
	secrets = append(secrets, "never-issued-code-5d1e9a7b3c")

	// An earlier login's ID token in the provider's answer.
	s.idp.swapNext(s.idp.lastIDToken())
	r = newRobot(s.Redirect)
	if tok, _ := s.authorize(t, r, accountAlice, nil); tok != nil {
		t.Fatal("an earlier login's ID token signed the user in")
	}
	seenURLs(r)

	// A forged state.
	r = newRobot(s.Redirect)
	if _, err := r.Get(ctx, s.Issuer+"/login"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, callback+"?code=forged-code-8c2f0e4a61&state=forged-state-3b7d9e1f05"); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, "forged-code-8c2f0e4a61", "forged-state-3b7d9e1f05")

	s.idp.mu.Lock()
	secrets = append(secrets, s.idp.seen...)
	secrets = append(secrets, s.idp.issued...)
	nIssued := len(s.idp.issued)
	s.idp.mu.Unlock()
	if nIssued == 0 {
		t.Fatal("the provider issued no access or refresh token: the test looks for none")
	}

	time.Sleep(500 * time.Millisecond) // the access log of the last request
	pieces := credentialPieces(secrets)
	for _, f := range []string{defaultLog, accessLog} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		if !bytes.Contains(b, []byte("/callback")) && f == accessLog {
			t.Errorf("%s names no callback: the test reads no sign-in", filepath.Base(f))
		}
		if f == defaultLog && !bytes.Contains(b, []byte(`"level":"debug"`)) {
			t.Errorf("%s has no DEBUG line: the test reads no DEBUG log", filepath.Base(f))
		}
		for n, line := range bytes.Split(b, []byte("\n")) {
			for i := 0; i+16 <= len(line); i++ {
				if pieces[string(line[i:i+16])] {
					t.Errorf("%s line %d holds %q (of a credential): %.400s", filepath.Base(f), n+1, line[i:i+16], line)
					break
				}
			}
		}
	}
}

// credentialPieces are the 16-byte windows of every credential, raw and
// URL-encoded; of a JWT, of its claims and signature only (headers are
// alike across tokens).
func credentialPieces(secrets []string) map[string]bool {
	pieces := map[string]bool{}
	for _, s := range secrets {
		if strings.Count(s, ".") == 2 && strings.HasPrefix(s, "eyJ") {
			s = s[strings.IndexByte(s, '.')+1:]
		}
		for _, v := range []string{s, url.QueryEscape(s)} {
			for i := 0; i+16 <= len(v); i++ {
				pieces[v[i:i+16]] = true
			}
		}
	}
	return pieces
}
