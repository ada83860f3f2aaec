package gateway

import "net/http"

// revision is the MCP protocol revision of a request, chosen once from its
// MCP-Protocol-Version header. It answers what the gateway asks of a
// revision; nothing else compares version strings. One bit each, so that
// the method table (method.go) holds the revisions defining a method as a
// set.
type revision uint8

const (
	rev20241105 revision = 1 << iota
	// rev20250326 is also a request without the header: a 2025 client
	// before 2025-06-18 or an initialize, which the spec lets a server
	// treat as 2025-03-26.
	rev20250326
	rev20250618
	rev20251125
	rev20260728
)

// revisions are the supported revisions, newest first.
var revisions = [...]revision{rev20260728, rev20251125, rev20250618, rev20250326, rev20241105}

// supportedVersions lists their version strings, for the answer to an
// unsupported version.
var supportedVersions = func() []string {
	out := make([]string, len(revisions))
	for i, r := range revisions {
		out[i] = r.String()
	}
	return out
}()

// String is the revision's MCP-Protocol-Version value.
func (r revision) String() string {
	switch r {
	case rev20241105:
		return "2024-11-05"
	case rev20250326:
		return "2025-03-26"
	case rev20250618:
		return "2025-06-18"
	case rev20251125:
		return "2025-11-25"
	case rev20260728:
		return "2026-07-28"
	}
	return "unknown"
}

// parseRevision maps an MCP-Protocol-Version value to its revision; ""
// (no header) is 2025-03-26.
func parseRevision(v string) (revision, bool) {
	if v == "" {
		return rev20250326, true
	}
	for _, r := range revisions {
		if v == r.String() {
			return r, true
		}
	}
	return 0, false
}

// defines reports whether the revision defines the client method.
func (r revision) defines(method string) bool {
	return clientMethods[method]&r != 0
}

// hasSessions: Mcp-Session-Id, bound to the principal (session.go), and
// DELETE to end a session. 2026-07-28 is stateless: the header is dropped
// both ways.
func (r revision) hasSessions() bool { return r != rev20260728 }

// hasGetStream: GET opens a server-to-client event stream.
func (r revision) hasGetStream() bool { return r != rev20260728 }

// allowsBatches: JSON-RPC batches, which only 2025-03-26 allowed.
func (r revision) allowsBatches() bool { return r == rev20250326 }

// clientAnswers: the client may POST responses (to server requests such
// as sampling); 2026-07-28 clients never do.
func (r revision) clientAnswers() bool { return r != rev20260728 }

// bindsTaskIDs: task ids stand on their own, so the gateway wraps and
// checks them (task.go). Before 2026-07-28 tasks are refused
// (refuseTasks2025).
func (r revision) bindsTaskIDs() bool { return r == rev20260728 }

// requiresCacheScope: a tools/list result carries cacheScope (SEP-2549),
// so a filtered one gets "private" even if the upstream left it out.
func (r revision) requiresCacheScope() bool { return r == rev20260728 }

// methodNotFoundStatus is the HTTP status of "Method not found": 404 in
// 2026-07-28 (streamable HTTP: MUST); 400 before, where 404 means the
// session is gone and makes the client start a new one.
func (r revision) methodNotFoundStatus() int {
	if r == rev20260728 {
		return http.StatusNotFound
	}
	return http.StatusBadRequest
}
