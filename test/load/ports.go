package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/freeport"
)

// runPorts prints n TCP ports that were free a moment ago, one per line,
// for run.sh to put in its Caddyfiles (freeport: below the ephemeral
// range, where the ports of the tests running beside never land). All are
// held open until every one is chosen, so they are distinct.
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
		l, err := freeport.Listen()
		if err != nil {
			return fmt.Errorf("ports: %w", err)
		}
		ls = append(ls, l)
		fmt.Fprintln(out, l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}
