package caddymodule

import (
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/gateway"
	"github.com/caddy-mcp-auth/caddy-mcp-auth/issuer"
)

// Prometheus metrics on the config's metrics registry, which Caddy's admin
// endpoint serves at /metrics. Names follow Caddy's own (caddy_http_*).
// Every label takes values from a bounded set (see gateway.Metrics and
// issuer.Metrics): never a tool name or URI from a request.
const metricsNamespace = "caddy"

// register registers c on reg, or returns the equal collector registered
// before: every gateway of a config shares one registry, and Caddy gives
// each config load a new one.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(T); ok {
			return existing, nil
		}
	}
	return c, err
}

// gatewayVecs are the gateway metrics of one registry.
type gatewayVecs struct {
	decisions *prometheus.CounterVec
	refusals  *prometheus.CounterVec
	upstream  *prometheus.HistogramVec
	cache     *prometheus.CounterVec
	pins      *prometheus.CounterVec
}

func newGatewayVecs(reg prometheus.Registerer) (*gatewayVecs, error) {
	const sub = "mcp_gateway"
	v := &gatewayVecs{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: sub,
			Name: "decisions_total",
			Help: "Policy decisions on MCP messages, by resource, JSON-RPC method, decision (allow, deny) and matched rule pattern.",
		}, []string{"resource", "method", "decision", "rule"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: sub,
			Name: "refusals_total",
			Help: "Requests the gateway refused instead of forwarding, by resource and reason.",
		}, []string{"resource", "reason"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Subsystem: sub,
			Name:    "upstream_duration_seconds",
			Help:    "Time from forwarding a request to the end of the upstream's answer, as the gateway saw it.",
			Buckets: prometheus.DefBuckets,
		}, []string{"resource"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: sub,
			Name: "token_cache_total",
			Help: "Lookups of verified access tokens in the gateway's cache, by resource and result (hit, miss).",
		}, []string{"resource", "result"}),
		pins: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: sub,
			Name: "tool_pin_total",
			Help: "Tool pinning events, by resource and event (changed: a definition other than the pinned one offered; hidden: a tool left out of a tools/list answer; refused: a call refused).",
		}, []string{"resource", "event"}),
	}
	errs := make([]error, 5)
	v.decisions, errs[0] = register(reg, v.decisions)
	v.refusals, errs[1] = register(reg, v.refusals)
	v.upstream, errs[2] = register(reg, v.upstream)
	v.cache, errs[3] = register(reg, v.cache)
	v.pins, errs[4] = register(reg, v.pins)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return v, nil
}

// gatewayMetrics implements gateway.Metrics for one resource. The
// counters of each label combination are looked up once and kept, so a
// request costs map lookups and no allocation.
type gatewayMetrics struct {
	vecs      *gatewayVecs
	resource  string
	upstream  prometheus.Observer
	hit, miss prometheus.Counter

	mu        sync.RWMutex
	decisions map[decisionKey]prometheus.Counter
	refusals  map[string]prometheus.Counter
	pins      map[string]prometheus.Counter
}

type decisionKey struct {
	method, rule string
	allowed      bool
}

func newGatewayMetrics(vecs *gatewayVecs, resource string) *gatewayMetrics {
	return &gatewayMetrics{
		vecs:      vecs,
		resource:  resource,
		upstream:  vecs.upstream.WithLabelValues(resource),
		hit:       vecs.cache.WithLabelValues(resource, "hit"),
		miss:      vecs.cache.WithLabelValues(resource, "miss"),
		decisions: make(map[decisionKey]prometheus.Counter),
		refusals:  make(map[string]prometheus.Counter),
		pins:      make(map[string]prometheus.Counter),
	}
}

// counter returns m[k], making it with mk on first use.
func counter[K comparable](mu *sync.RWMutex, m map[K]prometheus.Counter, k K, mk func() prometheus.Counter) prometheus.Counter {
	mu.RLock()
	c, ok := m[k]
	mu.RUnlock()
	if ok {
		return c
	}
	mu.Lock()
	defer mu.Unlock()
	if c, ok = m[k]; !ok {
		c = mk()
		m[k] = c
	}
	return c
}

func (g *gatewayMetrics) Decision(method, rule string, allowed bool) {
	counter(&g.mu, g.decisions, decisionKey{method, rule, allowed}, func() prometheus.Counter {
		decision := "deny"
		if allowed {
			decision = "allow"
		}
		return g.vecs.decisions.WithLabelValues(g.resource, method, decision, rule)
	}).Inc()
}

func (g *gatewayMetrics) Refusal(reason string) {
	counter(&g.mu, g.refusals, reason, func() prometheus.Counter {
		return g.vecs.refusals.WithLabelValues(g.resource, reason)
	}).Inc()
}

func (g *gatewayMetrics) ToolPin(event string) {
	counter(&g.mu, g.pins, event, func() prometheus.Counter {
		return g.vecs.pins.WithLabelValues(g.resource, event)
	}).Inc()
}

func (g *gatewayMetrics) Upstream(d time.Duration) { g.upstream.Observe(d.Seconds()) }

func (g *gatewayMetrics) TokenCache(hit bool) {
	if hit {
		g.hit.Inc()
		return
	}
	g.miss.Inc()
}

// issuerMetrics implements issuer.Metrics.
type issuerMetrics struct {
	issued, loginFailures, clientAuthFailures *prometheus.CounterVec
}

func newIssuerMetrics(reg prometheus.Registerer) (*issuerMetrics, error) {
	const sub = "mcp_issuer"
	m := &issuerMetrics{
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: sub,
			Name: "tokens_issued_total",
			Help: "Token responses of the authorization server, by grant type.",
		}, []string{"grant_type"}),
		loginFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: sub,
			Name: "login_failures_total",
			Help: "Refused logins, by reason (unknown_user, wrong_password, throttled; idp_state, idp_error, idp_token, idp_refused for identity provider sign-ins).",
		}, []string{"reason"}),
		clientAuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Subsystem: sub,
			Name: "client_auth_failures_total",
			Help: "Refused client authentications at the back-channel endpoints, by reason.",
		}, []string{"reason"}),
	}
	errs := make([]error, 3)
	m.issued, errs[0] = register(reg, m.issued)
	m.loginFailures, errs[1] = register(reg, m.loginFailures)
	m.clientAuthFailures, errs[2] = register(reg, m.clientAuthFailures)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *issuerMetrics) TokenIssued(grantType string) { m.issued.WithLabelValues(grantType).Inc() }
func (m *issuerMetrics) LoginFailed(reason string)    { m.loginFailures.WithLabelValues(reason).Inc() }
func (m *issuerMetrics) ClientAuthFailed(reason string) {
	m.clientAuthFailures.WithLabelValues(reason).Inc()
}

// Interface guards
var (
	_ gateway.Metrics = (*gatewayMetrics)(nil)
	_ issuer.Metrics  = (*issuerMetrics)(nil)
)
