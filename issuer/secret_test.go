package issuer

import (
	"strings"
	"testing"
)

// TestMaxPasswordBytes: bcrypt hashes a password of MaxPasswordBytes
// bytes and refuses a longer one, so a min_password_length above it
// (refused at load: TestIssuerConfig in caddymodule) let no password be
// set.
func TestMaxPasswordBytes(t *testing.T) {
	if _, err := HashPassword(strings.Repeat("a", MaxPasswordBytes), 4); err != nil {
		t.Errorf("HashPassword of %d bytes = %v, want a hash", MaxPasswordBytes, err)
	}
	if _, err := HashPassword(strings.Repeat("a", MaxPasswordBytes+1), 4); err == nil {
		t.Errorf("HashPassword of %d bytes = nil error, want bcrypt's refusal", MaxPasswordBytes+1)
	}
}
