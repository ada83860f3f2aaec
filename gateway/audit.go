package gateway

import (
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-mcp-auth/caddy-mcp-auth/mcpparse"
)

// Audit events: one per JSON-RPC message decision (one per request for GET
// and DELETE, and for requests refused before their messages were read),
// logged after the upstream answered so the upstream status is part of it.
// Fields: principal, client, act (full chain, outermost first),
// principal_type, resource, http_method, method, tool | prompt | uri,
// jsonrpc_id, decision, rule, reason, status, latency, request_id,
// remote_addr. Never a token or session id.

const auditMessage = "mcp request"

// auditForwarded logs the decisions of a forwarded request. Status 0
// means next wrote nothing (under Caddy: the proxy failed and its error
// handler answers).
func (g *Gateway) auditForwarded(x *exchange, status int) {
	if len(x.dec) == 0 {
		g.auditOne(x, nil, nil, true, status, "")
		return
	}
	for i := range x.dec {
		g.auditOne(x, &x.dec[i], x.message(i), true, status, "")
	}
}

// auditRefusal logs a refused request: each message decision if the
// messages were read, otherwise one event with the refusal's reason.
func (g *Gateway) auditRefusal(x *exchange, f *refusal) {
	if len(x.dec) == 0 || len(x.dec) != max(len(x.msgs), 1) {
		g.auditOne(x, nil, nil, false, f.status, f.message)
		return
	}
	for i := range x.dec {
		d := &x.dec[i]
		reason := d.reason
		if d.allow {
			// An allowed message shares the fate of its denied batch mates.
			reason = "refused with its batch"
		}
		g.auditOne(x, d, x.message(i), false, f.status, reason)
	}
}

func (x *exchange) message(i int) *mcpparse.Message {
	if i < len(x.msgs) {
		return &x.msgs[i]
	}
	return nil
}

func (g *Gateway) auditOne(x *exchange, d *decision, m *mcpparse.Message, allowed bool, status int, reason string) {
	ce := g.audit.Check(zapcore.InfoLevel, auditMessage)
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 18)
	if p := x.p; p != nil {
		fields = append(fields,
			zap.String("principal", p.subject),
			zap.String("client", p.clientID),
			zap.Strings("act", p.actors),
			zap.String("principal_type", p.principalType),
		)
	}
	fields = append(fields,
		zap.String("resource", g.cfg.Resource),
		zap.String("http_method", x.r.Method),
	)
	if m != nil {
		fields = append(fields, zap.String("method", m.Method))
		if m.ID != nil {
			fields = append(fields, zap.ByteString("jsonrpc_id", m.ID))
		}
	}
	if d != nil {
		if d.target != "" {
			fields = append(fields, zap.String(d.kind, d.target))
		}
		if d.rule != "" {
			fields = append(fields, zap.String("rule", d.rule))
		}
		if reason == "" {
			reason = d.reason
		}
	}
	decision := "deny"
	if allowed {
		decision = "allow"
	}
	fields = append(fields, zap.String("decision", decision))
	if reason != "" {
		fields = append(fields, zap.String("reason", reason))
	}
	fields = append(fields,
		zap.Int("status", status),
		zap.Duration("latency", g.now().Sub(x.start)),
		zap.String("remote_addr", x.r.RemoteAddr),
	)
	if g.cfg.RequestID != nil {
		fields = append(fields, zap.String("request_id", g.cfg.RequestID(x.r)))
	}
	ce.Write(fields...)
}
