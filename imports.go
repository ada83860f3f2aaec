// Package caddymcpauth is the module root: importing it registers the
// caddy-mcp-auth Caddy modules. Build with xcaddy (see README.md).
package caddymcpauth

import _ "github.com/caddy-mcp-auth/caddy-mcp-auth/caddymodule"
