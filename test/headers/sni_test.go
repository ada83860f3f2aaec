package headers

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestServerNamePinned: over TLS, the server name the client sent (SNI,
// {http.request.tls.server_name}), which Caddy lets differ from Host,
// reads the resource's host while the gateway's request to the upstream
// runs, as {host} does: a transport's
// `tls_server_name {http.request.tls.server_name}` (an upstream routing
// by SNI) or an upstream address made of it would otherwise send a
// request authorized for the resource where the client's handshake
// named.
func TestServerNamePinned(t *testing.T) {
	up := &recorder{}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	ip, tp := harness.FreePort(t), harness.FreePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", ip)
	resource := fmt.Sprintf("https://mcp.localhost:%d/mcp", tp)
	cert, key := writeCert(t, "mcp.localhost", "admin.localhost")
	caddyfile := globalOptions(t, issuer, "") + fmt.Sprintf(`
http://:%[1]d {
	bind 127.0.0.1
	mcp_issuer
}
https://mcp.localhost:%[2]d, https://admin.localhost:%[2]d {
	bind 127.0.0.1
	tls %[3]s %[4]s
	mcp_gateway {
		resource %[5]s
		scope %[6]s
		tool * %[6]s
	}
	reverse_proxy %[7]s {
		header_up X-Seen-SNI {http.request.tls.server_name}
	}
}
`, ip, tp, cert, key, resource, scope, srv.Listener.Addr().String())
	harness.Start(t, caddyfile)
	harness.WaitReady(t, issuer+"/.well-known/oauth-authorization-server")
	s := &probeStack{issuer: issuer}
	tok := s.tokenFor(t, resource)

	for _, c := range []struct{ name, sni, host string }{
		{"the resource's name", "mcp.localhost", "mcp.localhost"},
		{"another name", "admin.localhost", "mcp.localhost"},
		{"another name in another case", "ADMIN.localhost", "mcp.localhost"},
		{"another name and Host", "admin.localhost", "admin.localhost"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", tp), &tls.Config{ServerName: c.sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /mcp HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\nContent-Length: %d\r\n%sMCP-Protocol-Version: 2025-11-25\r\nAuthorization: Bearer %s\r\n\r\n%s",
				c.host, tp, len(listBody), base, tok, listBody)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("tools/list = %d %s", resp.StatusCode, b)
			}
			if v := up.last(t).Get("X-Seen-SNI"); v != "mcp.localhost" {
				t.Errorf("SNI %s: {http.request.tls.server_name} during proxying = %q, want the resource's mcp.localhost", c.sni, v)
			}
		})
	}
}

// writeCert writes a self-signed certificate for names and its key to
// files, and returns their paths.
func writeCert(t *testing.T, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}
