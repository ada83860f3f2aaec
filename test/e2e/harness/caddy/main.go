// Command caddy is the Caddy binary with this plugin, as xcaddy.sh builds
// it (the same main that xcaddy generates), for tests that run Caddy as an
// operator does (harness.BuildCaddy).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-mcp-auth/caddy-mcp-auth"
)

func main() {
	caddycmd.Main()
}
