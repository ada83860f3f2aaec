// Package freeport chooses TCP ports for the tests' servers that other
// processes are unlikely to take before the servers bind them: below the
// kernel's ephemeral range, where port 0 binds and outgoing connections
// (every test running beside does both, many times a second) never land.
// A port chosen from that range was once taken between its choice and a
// Caddy's bind in CI ("address already in use").
package freeport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// From is the lowest port chosen outside the ephemeral range.
const From = 10000

// Listen listens on a free port in [From, the ephemeral range's start) on
// every interface (as Caddy binds ":port"), or on a loopback port 0 when
// that range is too small or has none free. The caller closes it when it
// has chosen every port it needs, so that they are distinct.
func Listen() (net.Listener, error) {
	if low := EphemeralLow(); low-From >= 1000 {
		for range 200 {
			port := From + rand.IntN(low-From)
			if l, err := net.Listen("tcp", ":"+strconv.Itoa(port)); err == nil {
				return l, nil
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// Port is a port Listen found free a moment ago.
func Port() (int, error) {
	l, err := Listen()
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// EphemeralLow is the first port of the kernel's ephemeral range (Linux's
// ip_local_port_range), or 0 when it cannot be read.
func EphemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return 0
	}
	return low
}
