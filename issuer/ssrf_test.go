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
