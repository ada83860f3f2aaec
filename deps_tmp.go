package caddymcpauth

import (
	_ "github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/chromedp/chromedp"
	_ "github.com/go-json-experiment/json/jsontext"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/modelcontextprotocol/go-sdk/mcp"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/zap"
	_ "golang.org/x/crypto/bcrypt"
	_ "golang.org/x/oauth2"
)
