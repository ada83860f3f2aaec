#!/usr/bin/env bash
# Issue 10's CPU targets in one run: test/load/run.sh for each protocol
# revision (2025-11-25 in a session, 2026-07-28 stateless) and audit
# setting (on: one event per request on Caddy's default log; buffered:
# through `output buffered`; denials_only), each with 8 alternated rounds
# by default, then one table of the medians against 1.10x (audit on) and
# 1.05x (denials_only).
#
# Each row is judged twice: closed-loop at c=16 (each proxy as fast as the
# client drives it) and paced at c=16 (RATE, default 85% of the slower
# proxy's closed-loop throughput in the first round, the same rate for
# both). Closed-loop, the slower proxy gets fewer requests per second, and
# every process on the 2 shared cores then spends more CPU per request
# (fewer requests per wakeup): the upstream's CPU per request, the same
# work behind both proxies, is printed as the control.
#
#   test/load/targets.sh                 # all rows, ./caddy
#   REBUILD=head test/load/targets.sh    # the committed HEAD
#   ROUNDS=4 AUDITS="on denials_only" PROTOS=2025-11-25 test/load/targets.sh
#
# RATE=off leaves out the paced level. PLAIN_TOKEN=on (passed through) gives the plain proxy the same
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
		rate=()
		if [ "${RATE:-85%}" != off ]; then
			rate=(-rate "${RATE:-85%}")
		fi
		# shellcheck disable=SC2086 # ARGS is a list of flags
		PROTO=$proto AUDIT=$audit OUT=$dir "$root/test/load/run.sh" -rounds "$rounds" -n1 200 "${rate[@]}" ${ARGS:-} >"$dir.log" 2>&1 || {
			cat "$dir.log" >&2
			exit 1
		}
		report=$(ls "$dir"/report-*.md)
		target=$(sed -n 's/^Target: proxy CPU gateway\/plain at c=\([0-9]*\) (closed-loop) ≤ \([0-9.]*\)×: \([0-9.]*\)× \([A-Z]*\).*control \([0-9.]*\)×.*/\1 \2 \3 \4 \5/p' "$report")
		read -r c want got verdict control <<<"$target"
		plain=$(awk -F'|' -v c="$c" 'NF > 9 && $2 == " " c " " && $3 ~ /^ reverse_proxy/ {print $7}' "$report" | tr -d ' ')
		gw=$(awk -F'|' -v c="$c" 'NF > 9 && $2 == " " c " " && $3 ~ /mcp_gateway/ {print $7}' "$report" | tr -d ' ')
		paced="– | –"
		target=$(sed -n 's/^Target: proxy CPU gateway\/plain at c=[0-9]* @ \([0-9]*\)\/s (paced[^)]*) ≤ [0-9.]*×: \([0-9.]*\)× \([A-Z]*\).*control \([0-9.]*\)×.*/\1 \2 \3 \4/p' "$report")
		if [ -n "$target" ]; then
			read -r prate pgot pverdict pcontrol <<<"$target"
			pplain=$(awk -F'|' -v c="$c @ $prate/s" 'NF > 9 && $2 == " " c " " && $3 ~ /^ reverse_proxy/ {print $7}' "$report" | tr -d ' ')
			pgw=$(awk -F'|' -v c="$c @ $prate/s" 'NF > 9 && $2 == " " c " " && $3 ~ /mcp_gateway/ {print $7}' "$report" | tr -d ' ')
			paced="$prate/s: $pplain / $pgw µs, **${pgot}×** (control ${pcontrol}×) | $pverdict"
		fi
		rows+=("| $proto | $audit | ≤ ${want}× | $plain / $gw µs, **${got}×** (control ${control}×) | $verdict | $paced |")
	done
done

echo
echo "### Proxy CPU per request at c=${c:-16}, gateway vs plain reverse_proxy ($rounds alternated rounds each, medians; PLAIN_TOKEN=${PLAIN_TOKEN:-off})"
echo
echo "| protocol | audit | target | closed-loop: plain / gateway, gateway/plain | | paced: rate, plain / gateway, gateway/plain | |"
echo "|:--|:--|--:|--:|:--|--:|:--|"
printf '%s\n' "${rows[@]}"
echo
echo "(reports in $out)"
