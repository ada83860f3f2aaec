#!/usr/bin/env bash
# Builds ./caddy with the caddy-mcp-auth plugin.
#
#   ./xcaddy.sh          build ./caddy
#   ./xcaddy.sh run      build, then run the demo: the demo MCP server on
#                        127.0.0.1:3001 and Caddy with Caddyfile.example
#                        (http://localhost:8080/mcp, login alice / demo-password)
set -euo pipefail
cd "$(dirname "$0")"

build() {
	# The module path is not published, so it is given as a local
	# replacement of the root module (see ARCHITECTURE.md, "Build").
	go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 \
		--with github.com/caddy-mcp-auth/caddy-mcp-auth@v0.0.0=. \
		--output ./caddy
}

run() {
	build
	local tmp demo
	tmp=$(mktemp -d)
	go build -o "$tmp/demo" ./test/demo
	"$tmp/demo" -addr 127.0.0.1:3001 2> >(tee "$tmp/demo.log" >&2) &
	demo=$!
	# Expanded now: the trap runs at exit, after these locals are gone.
	trap "kill $demo 2>/dev/null || true; wait $demo 2>/dev/null || true; rm -rf '$tmp'" EXIT
	# Caddy in front of no demo would answer every MCP request 502: wait
	# for the demo's listening line (it says so once it listens).
	for _ in $(seq 100); do
		grep -q listening "$tmp/demo.log" 2>/dev/null && break
		if ! kill -0 "$demo" 2>/dev/null; then
			echo "$0: the demo MCP server did not start (its error is above); is 127.0.0.1:3001 in use?" >&2
			exit 1
		fi
		sleep 0.1
	done

	cat <<'MSG'

  caddy-mcp-auth demo
  -------------------
  MCP server URL   http://localhost:8080/mcp
                   (e.g. npx @modelcontextprotocol/inspector, transport
                   "Streamable HTTP", then Connect)
  Login            alice / demo-password
  Tools            echo, add (notes:read), add_note (notes:write),
                   delete_notes (notes:admin: always refused for alice)
  Metadata         http://localhost:8080/.well-known/oauth-authorization-server
                   http://localhost:8080/.well-known/oauth-protected-resource/mcp
  Manage           ./caddy mcp-auth user list
                   ./caddy mcp-auth client list
  Stop             Ctrl-C

MSG
	./caddy run --config Caddyfile.example --adapter caddyfile
}

case "${1:-build}" in
build) build ;;
run) run ;;
*)
	echo "usage: $0 [build|run]" >&2
	exit 2
	;;
esac
