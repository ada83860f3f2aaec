#!/usr/bin/env bash
# Issue 10's CPU targets in one run: test/load/run.sh for each protocol
# revision (2025-11-25 in a session, 2026-07-28 stateless) and audit
# setting (on: one event per request on Caddy's default log; buffered:
# through `output buffered`; denials_only), each with 8 alternated rounds
# by default, then one table of the medians against 1.10x (audit on) and
# 1.05x (denials_only).
#
#   test/load/targets.sh                 # all rows, ./caddy
#   REBUILD=head test/load/targets.sh    # the committed HEAD
#   ROUNDS=4 AUDITS="on denials_only" PROTOS=2025-11-25 test/load/targets.sh
#
# PLAIN_TOKEN=on (passed through) gives the plain proxy the same
# Authorization header, so both read byte-identical requests. ARGS adds
# flags for `load bench` (e.g. ARGS="-n 2000 -warmup 200" for a short run).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/test/artifacts/load/targets}
rounds=${ROUNDS:-8}
mkdir -p "$out"

if [ "${REBUILD:-0}" = head ]; then
	# Build once for every row.
	src=$(mktemp -d)
	trap 'rm -rf "$src"' EXIT
	git archive HEAD | tar -x -C "$src"
	(cd "$src" && ./xcaddy.sh) >&2
	export CADDY=$src/caddy
	unset REBUILD
fi

rows=()
for proto in ${PROTOS:-2025-11-25 2026-07-28}; do
	for audit in ${AUDITS:-on buffered denials_only}; do
		dir=$out/$proto-$audit
		echo "== PROTO=$proto AUDIT=$audit (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
		# shellcheck disable=SC2086 # ARGS is a list of flags
		PROTO=$proto AUDIT=$audit OUT=$dir "$root/test/load/run.sh" -rounds "$rounds" -n1 200 ${ARGS:-} >"$dir.log" 2>&1 || {
			cat "$dir.log" >&2
			exit 1
		}
		report=$(ls "$dir"/report-*.md)
		target=$(sed -n 's/^Target: proxy CPU gateway\/plain at c=\([0-9]*\) ≤ \([0-9.]*\)×: \([0-9.]*\)× \([A-Z]*\).*/\1 \2 \3 \4/p' "$report")
		read -r c want got verdict <<<"$target"
		plain=$(awk -F'|' -v c="$c" '$2 == " " c " " && $3 ~ /^ reverse_proxy/ {print $7}' "$report" | tr -d ' ')
		gw=$(awk -F'|' -v c="$c" '$2 == " " c " " && $3 ~ /mcp_gateway/ {print $7}' "$report" | tr -d ' ')
		rows+=("| $proto | $audit | $plain | $gw | ${got}× | ≤ ${want}× | $verdict |")
	done
done

echo
echo "### Proxy CPU per request at c=${c:-16}, gateway vs plain reverse_proxy ($rounds alternated rounds each, medians; PLAIN_TOKEN=${PLAIN_TOKEN:-off})"
echo
echo "| protocol | audit | plain µs/req | gateway µs/req | gateway/plain (median of rounds) | target | |"
echo "|:--|:--|--:|--:|--:|--:|:--|"
printf '%s\n' "${rows[@]}"
echo
echo "(reports in $out)"
