// Command load compares the cost of mcp_gateway with plain reverse_proxy.
//
// It has two subcommands; test/load/run.sh wires them to two Caddy
// processes (one plain reverse_proxy, one mcp_issuer + mcp_gateway +
// reverse_proxy) in front of the same upstream:
//
//	load upstream -addr 127.0.0.1:3101
//	    a minimal MCP-ish upstream answering every POST with a fixed
//	    tools/call result, so the upstream is never the bottleneck.
//
//	load bench -plain URL -plain-pid PID -gateway URL -gateway-pid PID ...
//	    drives tools/call through both proxies, alternating runs
//	    (plain, gateway, plain, gateway, ...) at concurrency 1 and N, and
//	    prints throughput, p50/p99 latency and each proxy process's CPU
//	    time per request (utime+stime from /proc/<pid>/stat), as medians
//	    over the rounds. With -profile-url it then drives the gateway
//	    while fetching a CPU profile from the gateway Caddy's admin
//	    endpoint (/debug/pprof/profile).
//
//	load streams -plain URL -plain-pid PID -gateway URL -gateway-pid PID -n N -kind get|call
//	    holds N concurrent event streams (GET streams, or SSE answers to
//	    tools/call) through each proxy in turn and prints each Caddy
//	    process's memory per stream and CPU per forwarded event.
//
//	load hostile -gateway URL -gateway-pid PID -issuer URL -n N
//	    floods the gateway process with distinct valid tokens and the
//	    issuer with failing client authentications from distinct
//	    loopback addresses, and prints its peak RSS.
//
//	load ports N
//	    prints N free loopback ports (for run.sh).
//
// The gateway's token is obtained with client_credentials from the
// gateway process's own issuer; the client secret comes from the
// environment (LOAD_CLIENT_SECRET), never from the command line, and is
// never printed.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "upstream":
		err = runUpstream(os.Args[2:])
	case "bench":
		err = runBench(os.Args[2:], os.Stdout)
	case "streams":
		err = runStreams(os.Args[2:], os.Stdout)
	case "hostile":
		err = runHostile(os.Args[2:], os.Stdout)
	case "ports":
		err = runPorts(os.Args[2:], os.Stdout)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: load upstream|bench|streams|hostile [flags] | load ports N (see -h)")
	os.Exit(2)
}
