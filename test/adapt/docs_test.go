package adapt

import (
	"os"
	"strings"
	"testing"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/test/e2e/harness"
)

// TestREADMECaddyfiles adapts every Caddyfile config the README shows, so
// it cannot show one that does not parse. Synopses (fence info string
// "caddyfile syntax") are not configs; harness.CaddyfileBlocks checks
// that classification.
func TestREADMECaddyfiles(t *testing.T) {
	src, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks, err := harness.CaddyfileBlocks(string(src))
	if err != nil {
		t.Fatalf("CaddyfileBlocks(README.md): %v", err)
	}
	var configs, synopses int
	for _, b := range blocks {
		if b.Syntax {
			synopses++
			continue
		}
		configs++
		if _, err := adapt(t, []byte(b.Text)); err != nil {
			t.Errorf("README.md line %d: Adapt() error: %v\n%s", b.Line, err, b.Text)
		}
	}
	// The README documents the three directives' syntax and shows
	// several configs; finding fewer means the extraction broke.
	if synopses < 3 || configs < 3 {
		t.Errorf("README.md: %d synopses and %d configs, want at least 3 of each", synopses, configs)
	}
}

func TestCaddyfileBlocks(t *testing.T) {
	const cfg = "example.com {\n\trespond ok\n}\n"
	tests := []struct {
		name     string
		markdown string
		want     []harness.CaddyfileBlock // nil with wantErr
		wantErr  string
	}{
		{"config", "text\n```caddyfile\n" + cfg + "```\n", []harness.CaddyfileBlock{{Line: 2, Text: cfg}}, ""},
		{"synopsis", "```caddyfile syntax\nmcp_issuer [<matcher>]\n```\n", []harness.CaddyfileBlock{{Line: 1, Syntax: true, Text: "mcp_issuer [<matcher>]\n"}}, ""},
		{"other fences skipped", "```go\nx := \"```caddyfile\"\n```\n```\nplain\n```\n", nil, ""},
		{"config with placeholder", "```caddyfile\nissuer <url>\n```\n", nil, "mark it caddyfile syntax"},
		{"config with elision", "```caddyfile\nmcp_gateway @notes { resource https://a/mcp ... }\n```\n", nil, `"..."`},
		{"synopsis without placeholder", "```caddyfile syntax\n" + cfg + "```\n", nil, "mark it caddyfile"},
		{"unknown classification", "```Caddyfile\n" + cfg + "```\n", nil, "want caddyfile"},
		{"unclosed", "```caddyfile\n" + cfg, nil, "not closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := harness.CaddyfileBlocks(tt.markdown)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("CaddyfileBlocks() = %v, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("CaddyfileBlocks() error: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("CaddyfileBlocks() = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("CaddyfileBlocks()[%d] = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestREADMEJSONConfig: the README's JSON config example is exactly what
// the Caddyfile before it adapts to.
func TestREADMEJSONConfig(t *testing.T) {
	src, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(src), "\n## JSON config\n")
	if !ok {
		t.Fatal("README.md has no JSON config section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	fenced := func(info string) string {
		_, rest, ok := strings.Cut(section, "\n```"+info+"\n")
		if !ok {
			t.Fatalf("JSON config section has no %s block", info)
		}
		body, _, _ := strings.Cut(rest, "\n```\n")
		return body + "\n"
	}
	got, err := adapt(t, []byte(fenced("caddyfile")))
	if err != nil {
		t.Fatalf("Adapt(README's Caddyfile): %v", err)
	}
	if want := fenced("json"); string(got) != want {
		t.Errorf("README's JSON config differs from `caddy adapt` of its Caddyfile; adapt gives:\n%s", got)
	}
}
