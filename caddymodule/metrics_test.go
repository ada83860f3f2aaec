package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestGatewayMetricsNoAllocation: once a label combination was seen, the
// gateway's metric calls allocate nothing (they run on every request).
func TestGatewayMetricsNoAllocation(t *testing.T) {
	vecs, err := newGatewayVecs(prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m := newGatewayMetrics(vecs, "https://mcp.example.com/mcp")
	call := func() {
		m.Decision("tools/call", "read_*", true)
		m.Refusal("forbidden")
		m.Upstream(time.Millisecond)
		m.TokenCache(true)
	}
	call()
	if n := testing.AllocsPerRun(100, call); n != 0 {
		t.Errorf("metric calls allocate %v times per request, want 0", n)
	}
}

// TestMetricsRegisteredOncePerRegistry: every gateway of a config shares
// the registry's collectors, so their counts add up in one series.
func TestMetricsRegisteredOncePerRegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for range 2 {
		vecs, err := newGatewayVecs(reg)
		if err != nil {
			t.Fatalf("newGatewayVecs: %v", err)
		}
		newGatewayMetrics(vecs, "https://mcp.example.com/mcp").Refusal("unauthorized")
		if _, err := newIssuerMetrics(reg); err != nil {
			t.Fatalf("newIssuerMetrics: %v", err)
		}
	}
	want := `
# HELP caddy_mcp_gateway_refusals_total Requests the gateway refused instead of forwarding, by resource and reason.
# TYPE caddy_mcp_gateway_refusals_total counter
caddy_mcp_gateway_refusals_total{reason="unauthorized",resource="https://mcp.example.com/mcp"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "caddy_mcp_gateway_refusals_total"); err != nil {
		t.Error(err)
	}
}
