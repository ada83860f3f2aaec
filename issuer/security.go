package issuer

import (
	"context"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Metrics receives counts of what the issuer does. The Caddy adapter
// implements it with Prometheus; the default counts nothing. Label values
// come from fixed sets: grant types the issuer supports, and the reasons
// below.
type Metrics interface {
	// TokenIssued counts a token response by grant type.
	TokenIssued(grantType string)
	// LoginFailed counts a refused login: unknown_user, wrong_password,
	// idp_state, idp_error, idp_token, idp_refused
	// or throttled.
	LoginFailed(reason string)
	// ClientAuthFailed counts a refused client authentication at a
	// back-channel endpoint: unknown_client, no_credentials,
	// invalid_secret, wrong_method, invalid_assertion, assertion_reused
	// or throttled.
	ClientAuthFailed(reason string)
}

type nopMetrics struct{}

func (nopMetrics) TokenIssued(string)      {}
func (nopMetrics) LoginFailed(string)      {}
func (nopMetrics) ClientAuthFailed(string) {}

// Security events go to their own logger, the issuer's logger named
// "security", so that an operator can route them apart: failed logins and
// client authentications, throttling, reused codes and refresh tokens,
// revocations and admin changes. They name accounts, clients and
// addresses, never a password, secret, code or token.

// loginFailed records a refused login. user is "" unless the account
// exists: a name that matches none may be a password typed in the wrong
// field.
func (i *Issuer) loginFailed(user, addr, reason string) {
	i.metrics.LoginFailed(reason)
	fields := []zap.Field{zap.String("remote_addr", addr), zap.String("reason", reason)}
	if user != "" {
		fields = append(fields, zap.String("user", user))
	}
	i.sec.Warn("login failed", fields...)
}

// accountName is u's name, "" for no user.
func accountName(u *User) string {
	if u == nil {
		return ""
	}
	return u.Username
}

// clientAuthFailed records a refused client authentication. clientID is
// "" unless the client exists: an id that matches none may be the
// secret, sent in its place (credentials swapped in a deployment's
// settings), as a login's user name may be a password.
func (i *Issuer) clientAuthFailed(clientID, addr, reason string) {
	i.metrics.ClientAuthFailed(reason)
	fields := []zap.Field{zap.String("remote_addr", addr), zap.String("reason", reason)}
	if clientID != "" {
		fields = append(fields, zap.String("client_id", truncate(clientID, 200)))
	}
	i.sec.Warn("client authentication failed", fields...)
}

// securityEvent records any other security event, with the caller's
// address when the request carried one.
func (i *Issuer) securityEvent(ctx context.Context, level zapcore.Level, msg string, fields ...zap.Field) {
	if addr := contextAddr(ctx); addr != "" {
		fields = append(fields, zap.String("remote_addr", addr))
	}
	i.sec.Log(level, msg, fields...)
}
