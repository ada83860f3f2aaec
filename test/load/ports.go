package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
)

// runPorts prints n loopback TCP ports that were free a moment ago, one
// per line, for run.sh to put in its Caddyfiles. All are held open until
// every one is chosen, so they are distinct.
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
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("ports: %w", err)
		}
		ls = append(ls, l)
		fmt.Fprintln(out, l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
