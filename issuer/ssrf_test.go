package issuer

import (
	"errors"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestPublicAddress(t *testing.T) {
	tests := []struct {
		ip   string
		want bool
	}{
		{"93.184.216.34", true},
		{"2606:2800:220:1:248:1893:25c8:1946", true},
		{"127.0.0.1", false},
		{"127.1.2.3", false},
		{"::1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"100.64.0.1", false},      // CGNAT
		{"0.0.0.0", false},
		{"::", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"fe80::1", false},
		{"ff02::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"64:ff9b::a00:1", false}, // NAT64 of 10.0.0.1
		{"2002:a00:1::1", false},  // 6to4 of 10.0.0.1
		{"198.18.0.1", false},
		// Every block of the IANA special-purpose registries that is not
		// globally reachable.
		{"0.1.2.3", false},
		{"100.127.255.255", false},
		{"192.0.0.8", false},       // IPv4 dummy address
		{"192.0.0.170", false},     // NAT64 discovery
		{"192.0.2.1", false},       // TEST-NET-1
		{"192.88.99.1", false},     // deprecated 6to4 relay anycast
		{"198.19.255.255", false},  // benchmarking
		{"198.51.100.7", false},    // TEST-NET-2
		{"203.0.113.7", false},     // TEST-NET-3
		{"240.0.0.1", false},       // reserved
		{"::127.0.0.1", false},     // IPv4-compatible
		{"::a00:1", false},         // IPv4-compatible 10.0.0.1
		{"::8.8.8.8", false},       // IPv4-compatible, deprecated even when public
		{"::ffff:0:7f00:1", false}, // IPv4-translated 127.0.0.1 (SIIT)
		{"::ffff:0:a00:1", false},  // IPv4-translated 10.0.0.1
		{"64:ff9b:1::a00:1", false},
		{"100::1", false},       // discard-only
		{"100:0:0:1::1", false}, // dummy prefix
		{"2001::1", false},      // Teredo
		{"2001:2::1", false},    // benchmarking
		{"2001:5::1", false},    // IETF protocol assignments, unassigned
		{"2001:10::1", false},   // ORCHID
		{"2001:db8::1", false},  // documentation
		{"3fff::1", false},      // documentation
		{"5f00::1", false},      // SRv6 SIDs
		{"fec0::1", false},      // site-local
		{"ff0e::1", false},      // global multicast
		{"1::1", false},         // reserved by the IETF, outside 2000::/3
		{"4000::1", false},      // reserved by the IETF, outside 2000::/3
		// Globally reachable anycast services inside IETF blocks: refused
		// all the same, no client metadata is served there.
		{"192.0.0.9", false},      // PCP anycast
		{"192.0.0.10", false},     // TURN anycast
		{"2001:1::1", false},      // PCP anycast
		{"2001:3::1", false},      // AMT
		{"2001:4:112::1", false},  // AS112-v6
		{"2001:20::1", false},     // ORCHIDv2
		{"2001:30::1", false},     // DRIP entity tags
		{"2620:4f:8000::1", true}, // AS112 direct delegation
		{"8.8.8.8", true},
		{"2001:4860:4860::8888", true},
	}
	for _, tt := range tests {
		if got := publicAddress(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("publicAddress(%s) = %v, want %v", tt.ip, got, tt.want)
		}
	}
}

func TestSSRFControl(t *testing.T) {
	if err := ssrfControl("tcp4", "127.0.0.1:443", nil); !errors.Is(err, errForbiddenAddress) {
		t.Errorf("ssrfControl(loopback) = %v, want errForbiddenAddress", err)
	}
	if err := ssrfControl("tcp4", "93.184.216.34:443", nil); err != nil {
		t.Errorf("ssrfControl(public) = %v, want nil", err)
	}
	if err := ssrfControl("tcp6", "[::127.0.0.1]:443", nil); !errors.Is(err, errForbiddenAddress) {
		t.Errorf("ssrfControl(IPv4-compatible loopback) = %v, want errForbiddenAddress", err)
	}
	if err := ssrfControl("tcp", "not-an-address", nil); !errors.Is(err, errForbiddenAddress) {
		t.Errorf("ssrfControl(garbage) = %v, want errForbiddenAddress", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNewFetchClient(t *testing.T) {
	custom := &http.Client{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) { return nil, errors.New("x") })}
	if _, err := newFetchClient(custom, false, time.Second); err == nil {
		t.Errorf("newFetchClient(custom transport, private refused) succeeded; the address check could not be enforced")
	}
	if _, err := newFetchClient(custom, true, time.Second); err != nil {
		t.Errorf("newFetchClient(custom transport, private allowed) = %v", err)
	}
	c, err := newFetchClient(nil, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tr := c.Transport.(*http.Transport)
	if tr.Proxy != nil {
		t.Errorf("fetch transport uses a proxy; the address check would see the proxy, not the target")
	}
}
