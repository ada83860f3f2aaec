package adapt

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// FuzzAdapt: whatever Caddyfile text reaches the mcp_auth global option
// and the mcp_issuer and mcp_gateway directives, adapting it returns the
// JSON or an error, never a panic. Seeds: every Caddyfile of testdata/
// and Caddyfile.example.
func FuzzAdapt(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.caddyfile")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range append(seeds, "../../Caddyfile.example") {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	a := caddyconfig.GetAdapter("caddyfile")
	f.Fuzz(func(t *testing.T, caddyfile []byte) {
		_, _, _ = a.Adapt(caddyfile, map[string]any{"filename": "Caddyfile"})
	})
}
