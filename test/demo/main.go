// Command demo runs the demo MCP server (see package mcpdemo) over
// Streamable HTTP, for the Caddyfile.example gateway to protect:
//
//	go run ./test/demo -addr 127.0.0.1:3001
//
// It serves the MCP endpoint on every path (the gateway proxies /mcp).
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/demo/mcpdemo"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3001", "listen address")
	flag.Parse()
	srv := &http.Server{Addr: *addr, Handler: mcpdemo.Handler(), ReadHeaderTimeout: 10 * time.Second}

	done := make(chan struct{})
	go func() {
		defer close(done)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
		<-sig
		_ = srv.Close()
	}()
	// Listening first: xcaddy.sh run starts Caddy only once this line says
	// the demo serves (a busy port ends it here, before the line).
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "demo MCP server listening on http://%s (tools: echo, add, add_note, delete_notes)\n", *addr)
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	<-done
}
