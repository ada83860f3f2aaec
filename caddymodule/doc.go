// Package caddymodule adapts caddy-mcp-auth to Caddy: the mcp_auth app, the
// mcp_issuer and mcp_gateway HTTP handlers, Caddyfile parsing, admin API
// routes and the `caddy mcp-auth` CLI.
package caddymodule
