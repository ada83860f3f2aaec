#!/usr/bin/env bash
# Installs the pinned Node tooling (MCP TypeScript SDK, MCP conformance tool,
# Node 22 from the npm registry) into test/node/node_modules and prints the
# path of the Node 22 binary that the interop tests run.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund >&2
node_bin="$PWD/node_modules/node/bin/node"
"$node_bin" --version >&2
echo "$node_bin"
