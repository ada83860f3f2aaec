package issuer

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// errForbiddenAddress is returned when an outbound fetch would connect to an
// address that is not on the public internet.
var errForbiddenAddress = errors.New("destination address not allowed")

// forbiddenPrefixes are the destinations an outbound fetch (CIMD) must never
// reach unless the operator allows private targets: every block of the
// IANA IPv4 and IPv6 special-purpose address registries that is not
// globally reachable, plus the IPv6 transition prefixes that embed an
// IPv4 address (they could smuggle a private one).
var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network", unspecified
	netip.MustParsePrefix("10.0.0.0/8"),      // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT, RFC 6598
	netip.MustParsePrefix("127.0.0.0/8"),     // loopback
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local (cloud metadata)
	netip.MustParsePrefix("172.16.0.0/12"),   // RFC 1918
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments (DS-Lite, NAT64 discovery, the PCP and TURN anycast services, ...)
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // deprecated 6to4 relay anycast, RFC 7526
	netip.MustParsePrefix("192.168.0.0/16"),  // RFC 1918
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("224.0.0.0/4"),     // multicast
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and 255.255.255.255 broadcast
	netip.MustParsePrefix("::/96"),           // IPv4-compatible (RFC 4291, deprecated), :: and ::1 among them
	netip.MustParsePrefix("::ffff:0:0/96"),   // IPv4-mapped (checked unmapped too)
	netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated, SIIT (RFC 2765)
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64, RFC 6052
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64, RFC 8215
	netip.MustParsePrefix("100::/64"),        // discard-only, RFC 6666
	netip.MustParsePrefix("100:0:0:1::/64"),  // dummy prefix, RFC 9780
	netip.MustParsePrefix("2001::/23"),       // IETF protocol assignments (Teredo, benchmarking, ORCHID; its anycast services too: no client metadata is served there)
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4
	netip.MustParsePrefix("3fff::/20"),       // documentation, RFC 9637
	netip.MustParsePrefix("5f00::/16"),       // SRv6 SIDs, RFC 9602
	netip.MustParsePrefix("fc00::/7"),        // unique local, RFC 4193
	netip.MustParsePrefix("fe80::/10"),       // link-local
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
	netip.MustParsePrefix("ff00::/8"),        // multicast
}

// globalUnicast is the IPv6 global unicast space (IANA IPv6 address
// space registry): the rest is reserved by the IETF, unique local,
// link-local or multicast, so an address outside it is no public server
// whatever the special-purpose registry lists today.
var globalUnicast = netip.MustParsePrefix("2000::/3")

// publicAddress reports whether ip may be contacted by an outbound fetch.
func publicAddress(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for _, a := range []netip.Addr{ip, ip.Unmap()} {
		if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
			a.IsLinkLocalMulticast() || a.IsMulticast() || a.IsUnspecified() ||
			a.IsInterfaceLocalMulticast() {
			return false
		}
		if a.Is6() && !a.Is4In6() && !globalUnicast.Contains(a) {
			return false
		}
		for _, p := range forbiddenPrefixes {
			if p.Contains(a) {
				return false
			}
		}
	}
	return true
}

// reach is where an outbound connection may go: to public addresses
// always, to loopback and other non-public (internal) addresses only when
// allowed.
type reach struct{ loopback, internal bool }

// addressKind says whether ip is a loopback address or another one that
// is not public (neither: public).
func addressKind(ip netip.Addr) (loopback, internal bool) {
	switch {
	case publicAddress(ip):
		return false, false
	case ip.Unmap().IsLoopback():
		return true, false
	}
	return false, true
}

// add allows the kind of address ip is.
func (r *reach) add(ip netip.Addr) {
	loopback, internal := addressKind(ip)
	r.loopback, r.internal = r.loopback || loopback, r.internal || internal
}

func (r reach) allows(ip netip.Addr) bool {
	loopback, internal := addressKind(ip)
	return (!loopback || r.loopback) && (!internal || r.internal)
}

// control is a net.Dialer Control function refusing what r does not
// allow. It runs after name resolution, on the address actually being
// connected to, so a DNS answer that changes between a check and the
// connect (DNS rebinding) cannot slip another address through.
func (r reach) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !r.allows(ap.Addr()) {
		return fmt.Errorf("dial %s %s: %w", network, address, errForbiddenAddress)
	}
	return nil
}

// ssrfControl is the Control of outbound fetches of client-supplied URLs
// (CIMD): public addresses only.
var ssrfControl = reach{}.control

// newFetchClient builds the http.Client for outbound fetches of
// client-supplied URLs. It starts from base (cfg.HTTPClient, whose TLS
// settings tests rely on) when given, and always dials through a Dialer
// whose Control refuses non-public addresses unless allowPrivate. Proxies
// are not used: a proxy would hide the real destination from the check.
// Redirects are refused (the CIMD draft allows only a direct 200).
func newFetchClient(base *http.Client, allowPrivate bool, timeout time.Duration) (*http.Client, error) {
	var t *http.Transport
	switch {
	case base == nil || base.Transport == nil:
		t = http.DefaultTransport.(*http.Transport).Clone()
	default:
		bt, ok := base.Transport.(*http.Transport)
		if !ok {
			if allowPrivate {
				// Nothing to protect; use the injected transport as is.
				return &http.Client{Transport: base.Transport, Timeout: timeout, CheckRedirect: refuseRedirect}, nil
			}
			return nil, errors.New("http client: transport must be *http.Transport so outbound addresses can be checked")
		}
		t = bt.Clone()
	}
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = ssrfControl
	}
	t.Proxy = nil
	t.DialContext = d.DialContext
	t.DialTLSContext = nil
	t.Dial = nil    //nolint:staticcheck // cleared so DialContext is the only dial path
	t.DialTLS = nil //nolint:staticcheck // same
	return &http.Client{Transport: t, Timeout: timeout, CheckRedirect: refuseRedirect}, nil
}

var errRedirect = errors.New("redirects are not followed")

func refuseRedirect(*http.Request, []*http.Request) error { return errRedirect }
