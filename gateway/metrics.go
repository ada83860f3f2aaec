package gateway

import (
	"net/http"
	"time"
)

// Metrics receives counts of what the gateway does. The Caddy adapter
// implements it with Prometheus; the default counts nothing. Every label
// value comes from a bounded set: methods from the revision table (others
// are "other"), rules as configured, reasons from refusalReason. Calls are
// on the request path: an implementation should not allocate.
type Metrics interface {
	// Decision counts one message decision: its method ("GET" or
	// "DELETE" for a request without messages), the pattern of the rule
	// that decided it ("" when none) and whether it was forwarded.
	Decision(method, rule string, allowed bool)
	// Refusal counts one refused request by reason.
	Refusal(reason string)
	// Upstream observes how long the upstream took to answer a forwarded
	// request, its answer streamed back included.
	Upstream(d time.Duration)
	// TokenCache counts a verified-claims cache lookup.
	TokenCache(hit bool)
	// ToolPin counts a pinning event: "changed" (a definition held for
	// review was offered: one other than the pinned one, a tool not
	// approved yet in approved mode, a new name resembling a pinned
	// tool's; counted once per definition), "hidden"
	// (a tool left out of a tools/list answer) or "refused" (a call
	// refused).
	ToolPin(event string)
}

type nopMetrics struct{}

func (nopMetrics) Decision(string, string, bool) {}
func (nopMetrics) Refusal(string)                {}
func (nopMetrics) Upstream(time.Duration)        {}
func (nopMetrics) TokenCache(bool)               {}
func (nopMetrics) ToolPin(string)                {}

// countDecisions counts the decisions of a request, forwarded or not.
func (g *Gateway) countDecisions(x *exchange, allowed bool) {
	if len(x.dec) == 0 {
		return
	}
	for i := range x.dec {
		method := x.r.Method
		if m := x.message(i); m != nil {
			method = metricMethod(m.Method)
		}
		g.metrics.Decision(method, x.dec[i].rule, allowed)
	}
}

// metricMethod bounds the method label: a method no revision defines
// (an extension passed by a method rule, or a refused one) is "other".
func metricMethod(m string) string {
	if clientMethods[m] != 0 {
		return m
	}
	return "other"
}

// refusalReason names a refusal for the refusals metric, from a fixed set.
func refusalReason(f *refusal) string {
	switch f.code {
	case codeParseError:
		return "parse_error"
	case codeInvalidRequest:
		return "invalid_request"
	case codeMethodNotFound:
		return "method_not_found"
	case codeInvalidParams:
		return "invalid_params"
	case codeSessionNotFound:
		return "session_not_found"
	case codeHeaderMismatch:
		return "header_mismatch"
	case codeUnsupportedProtocol:
		return "unsupported_protocol"
	}
	switch f.status {
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		if f.challenge != "" || f.dpopChallenge != "" {
			return "insufficient_scope"
		}
		return "forbidden"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusTooManyRequests:
		return "too_many_requests"
	}
	return "refused"
}
