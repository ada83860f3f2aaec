package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// runPorts prints n TCP ports that were free a moment ago, one per line,
// for run.sh to put in its Caddyfiles. All are held open until every one
// is chosen, so they are distinct. They are taken below the kernel's
// ephemeral range where it leaves room (ephemeralLow): a port the kernel
// hands out for port 0 or an outgoing connection (every other test running
// beside this one does both) is then never one of these between their
// choice and Caddy's bind, which once failed CI with "address already in
// use".
func runPorts(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ports", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	n := 1
	if fs.NArg() > 0 {
		var err error
		if n, err = strconv.Atoi(fs.Arg(0)); err != nil || n < 1 {
			return errors.New("ports: want a positive count")
		}
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	low := ephemeralLow()
	for range n {
		l, err := listenOutsideEphemeral(low)
		if err != nil {
			return fmt.Errorf("ports: %w", err)
		}
		ls = append(ls, l)
		fmt.Fprintln(out, l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// portsFrom is the lowest port runPorts takes outside the ephemeral range.
const portsFrom = 10000

// listenOutsideEphemeral listens on a free port in [portsFrom, low) on
// every interface (as Caddy binds ":port"), or on port 0 when that range
// is too small or has none free.
func listenOutsideEphemeral(low int) (net.Listener, error) {
	if low-portsFrom >= 1000 {
		for range 200 {
			port := portsFrom + rand.IntN(low-portsFrom)
			if l, err := net.Listen("tcp", ":"+strconv.Itoa(port)); err == nil {
				return l, nil
			}
		}
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// ip_local_port_range), or 0 when it cannot be read.
func ephemeralLow() int {
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
