package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// ParameterLogging names the server settings under which PostgreSQL
// writes the parameters of this store's statements to its own log, ""
// when none does. The store sends every record it writes as a statement
// parameter, so such a log holds them all, in hex: the signing keys'
// private parts, the gateways' session key, the sessions. The settings
// are the session's as the store's connections get them (the server's,
// the database's and the role's), read by any role:
//
//   - log_statement mod or all, log_min_duration_statement,
//     log_min_duration_sample (with a sample rate) or
//     log_transaction_sample_rate log statements with their parameters
//     unless log_parameter_max_length is 0 (PostgreSQL 13; before it,
//     always), at LOG, unless log_min_messages keeps that out of the log;
//   - log_parameter_max_length_on_error other than 0 adds them to the
//     log of a failed statement (a serialization failure is one), unless
//     log_min_messages keeps errors out of the log;
//   - both put them on a line of their own (DETAIL, CONTEXT), which
//     log_error_verbosity = terse leaves out of the text log (stderr,
//     syslog, eventlog; csvlog and jsonlog too without the logging
//     collector, which then write text) but not out of csvlog or jsonlog
//     written by the collector;
//   - debug_print_plan prints the plan of every statement, on a DETAIL
//     line at LOG, and a plan made for the values given holds them;
//   - auto_explain (from PostgreSQL 16, and with log_verbose on any
//     version) and pgaudit, when loaded, have settings of their own;
//     pgaudit's object audit logging (pgaudit.role) logs the statements
//     on a table its role has any privilege on, whatever pgaudit.log
//     says.
func (s *Store) ParameterLogging(ctx context.Context) (string, error) {
	if err := s.begin(ctx); err != nil {
		return "", fmt.Errorf("postgres: read logging settings: %w", err)
	}
	bctx, cancel := s.bounded(ctx)
	defer cancel()
	names := []string{
		"log_parameter_max_length", "log_statement", "log_min_duration_statement",
		"log_min_duration_sample", "log_statement_sample_rate", "log_transaction_sample_rate",
		"log_parameter_max_length_on_error", "log_min_messages",
		"log_error_verbosity", "log_destination", "logging_collector", "debug_print_plan",
		"auto_explain.log_min_duration", "auto_explain.log_parameter_max_length", "auto_explain.log_verbose",
		"pgaudit.log", "pgaudit.log_parameter", "pgaudit.role",
	}
	vals := make([]*string, len(names))
	dst := make([]any, len(names))
	q := make([]string, len(names))
	for i, n := range names {
		dst[i] = &vals[i]
		q[i] = "current_setting('" + n + "', true)"
	}
	if err := s.pool.QueryRow(bctx, "SELECT "+strings.Join(q, ", ")).Scan(dst...); err != nil {
		return "", s.beginErr(ctx, "read logging settings", unavailable(ctx, bctx, err))
	}
	// A setting the server does not have (an older version, a module not
	// loaded) reads as its default there.
	get := func(name, dflt string) string {
		for i, n := range names {
			if n == name && vals[i] != nil {
				return *vals[i]
			}
		}
		return dflt
	}
	var why []string
	set := func(name, value string) { why = append(why, name+" = "+value) }
	// The parameters of a logged statement are its DETAIL, those of a
	// failed one its CONTEXT: terse leaves both out of text logs
	// (TestParameterLoggingTerse).
	lines := get("log_error_verbosity", "default") != "terse" || structuredLog(get("log_destination", "stderr"), get("logging_collector", "off"))
	// Statements are logged at LOG, which log_min_messages fatal or panic
	// keeps out of the log (TestParameterLoggingMinMessages).
	logged := !slices.Contains([]string{"fatal", "panic"}, get("log_min_messages", "warning"))
	if lines && logged && get("log_parameter_max_length", "-1") != "0" {
		if v := get("log_statement", "none"); v == "mod" || v == "all" {
			set("log_statement", v)
		}
		if v := get("log_min_duration_statement", "-1"); v != "-1" {
			set("log_min_duration_statement", v)
		}
		if v := get("log_min_duration_sample", "-1"); v != "-1" && get("log_statement_sample_rate", "1") != "0" {
			set("log_min_duration_sample", v)
		}
		if v := get("log_transaction_sample_rate", "0"); v != "0" {
			set("log_transaction_sample_rate", v)
		}
	}
	// A failed statement's parameters are in the CONTEXT of its ERROR,
	// logged unless log_min_messages is above ERROR (log_min_error_statement
	// adds the STATEMENT only: TestParameterLoggingOnError).
	if v := get("log_parameter_max_length_on_error", "0"); lines && v != "0" && !slices.Contains([]string{"log", "fatal", "panic"}, get("log_min_messages", "warning")) {
		set("log_parameter_max_length_on_error", v)
	}
	// debug_print_plan (a debugging setting any role may set) prints each
	// statement's plan tree, and a plan made for the values given (the
	// unnamed statement's) holds every value a write sends as a constant,
	// in decimal bytes, whatever log_parameter_max_length says: on the
	// DETAIL line, at LOG (TestParameterLoggingDebugPrintPlan).
	if lines && logged && get("debug_print_plan", "off") == "on" {
		set("debug_print_plan", "on")
	}
	// auto_explain logs parameters from PostgreSQL 16 on, which has
	// auto_explain.log_parameter_max_length; before, its plans name none
	// (TestParameterLoggingAutoExplain). But a plan made for the values
	// given (a custom plan: the unnamed statement's, a prepared one's
	// first five) holds them as constants, and log_verbose shows its
	// output columns, every value a write sends, on any version and
	// whatever log_parameter_max_length says
	// (TestParameterLoggingAutoExplainVerbose).
	if v := get("auto_explain.log_min_duration", "-1"); v != "-1" {
		verbose := get("auto_explain.log_verbose", "off") == "on"
		if verbose || get("auto_explain.log_parameter_max_length", "0") != "0" {
			set("auto_explain.log_min_duration", v)
		}
		if verbose {
			set("auto_explain.log_verbose", "on")
		}
	}
	if v := get("pgaudit.log_parameter", "off"); v == "on" {
		// Session audit logging (pgaudit.log) logs the statements of its
		// classes; object audit logging logs every statement on a table
		// the role pgaudit.role names may read or write (a column of it
		// too), with pgaudit.log none (TestParameterLoggingPgauditRole).
		if get("pgaudit.log", "none") != "none" {
			set("pgaudit.log_parameter", v)
		} else if role := get("pgaudit.role", ""); role != "" {
			var audited bool
			if err := s.pool.QueryRow(bctx, auditedByRole, role).Scan(&audited); err != nil {
				return "", s.beginErr(ctx, "read logging settings", unavailable(ctx, bctx, err))
			}
			if audited {
				set("pgaudit.role", role)
				set("pgaudit.log_parameter", v)
			}
		}
	}
	return strings.Join(why, ", "), nil
}

// auditedByRole reports whether the role named $1 (pgaudit.role, a role
// name as pgaudit looks it up, not an identifier) has a privilege on the
// store's table, or on a column of it, that a statement of the store
// uses: pgaudit then logs those statements as object audit events.
const auditedByRole = `SELECT EXISTS (SELECT FROM pg_roles r, (SELECT to_regclass('mcp_auth_entries') AS t) e
	WHERE r.rolname = $1 AND e.t IS NOT NULL
	AND (has_any_column_privilege(r.oid, e.t, 'SELECT, INSERT, UPDATE') OR has_table_privilege(r.oid, e.t, 'DELETE')))`

// structuredLog reports whether the server writes a log that keeps every
// field of a message whatever log_error_verbosity says: csvlog or jsonlog
// among destinations, which only the logging collector writes (without
// it they are written as stderr's text).
func structuredLog(destinations, collector string) bool {
	if collector != "on" {
		return false
	}
	for d := range strings.SplitSeq(destinations, ",") {
		if d = strings.ToLower(strings.TrimSpace(d)); d == "csvlog" || d == "jsonlog" {
			return true
		}
	}
	return false
}
