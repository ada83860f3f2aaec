#!/usr/bin/env bash
# Load comparison: small tools/call through plain Caddy reverse_proxy and
# through mcp_gateway + reverse_proxy, two separate Caddy processes (the
# built ./caddy) in front of the same upstream, in one run.
#
#   test/load/run.sh [load bench flags...]      e.g. -rounds 7 -c 32 -v
#
# Environment:
#   MODE=bench|streams|hostile   bench (default): the comparison above;
#                        streams: N concurrent event streams through each
#                        proxy (KIND=get GET streams, KIND=call in-flight
#                        SSE answers to tools/call; N default 10000, capped
#                        by the open-file limit): memory per stream and CPU
#                        per forwarded event; hostile: N distinct tokens,
#                        session ids, client addresses, forged tokens and
#                        cookieless sign-ins against the gateway process,
#                        printing its RSS, peak RSS and store file size
#   UPSTREAM=fast|demo   fast: test/load's fixed-answer upstream (default);
#                        demo: the demo MCP server (Go SDK, sessions: the
#                        load generator initializes a session per proxy)
#   PROTO=2025-11-25|2026-07-28   request headers/body revision (fast only)
#   PLAIN_TOKEN=off|on   on: the plain proxy gets the gateway's Authorization
#                        header too, so both read byte-identical requests
#                        (default off: the plain proxy gets none)
#   PLAIN_LOG=off|on     on: the plain site logs every request (Caddy's
#                        `log` directive, to the default log like the
#                        gateway's audit events): one log line per request
#                        on both sides, as a reference for the audit log's
#                        own cost (default off)
#   SESSION=on|off       2025-11-25: initialize a session per proxy first
#                        (default on) and send every request in it
#   AUDIT=on|buffered|denials_only|off   gateway audit events: on (default,
#                        as shipped: one line per request on Caddy's default
#                        log, stderr, which goes to a file in the temp dir);
#                        buffered: the audit logger routed to its own file
#                        through the buffered log writer (as the README
#                        recommends); denials_only: mcp_gateway's `audit
#                        denials_only` (no event for forwarded requests);
#                        off: excluded from the log
#   GATEWAY=on|off|plain|ab
#                        off: the second process keeps mcp_auth and
#                        mcp_issuer (its token endpoint), but its
#                        mcp_gateway sits on a path no request takes, so
#                        requests go straight to reverse_proxy: the cost of
#                        the issuer in the route and the process, before
#                        the gateway does anything; plain: the second
#                        process is a second plain reverse_proxy and no
#                        request carries a token, an A/A run that shows
#                        the spread between two identical proxies; ab: both
#                        processes run the full gateway (each with its own
#                        issuer and token), the first with $CADDY, the
#                        second with $CADDY_B (default: the same binary, an
#                        A/A run of two gateways), so the report's
#                        gateway/plain ratio is build B over build A: two
#                        builds compared in one run, alternated round by
#                        round (all three bench mode only; default on)
#   PROFILE=<seconds>    afterwards, drive each Caddy in turn and take a
#                        CPU profile from its admin endpoint
#                        (/debug/pprof/profile); prints the gateway's top
#                        functions and the gateway-minus-plain diff, and
#                        keeps both profiles in OUT
#   OUT=dir              where the report (and profile) go
#                        (default test/artifacts/load)
#   REBUILD=1            rebuild ./caddy even if it exists
#   REBUILD=head         build Caddy from the committed HEAD (git archive)
#                        in the temp dir, leaving ./caddy alone: measures
#                        exactly the commit, not uncommitted edits
#   CADDY=path           use this Caddy binary (default ./caddy)
#
# Prints Markdown tables (throughput, p50/p99 at c=1 and c=N, CPU time per
# request of each Caddy process) suitable for README.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

mode=${MODE:-bench}
kind=${KIND:-get}
upstream_mode=${UPSTREAM:-fast}
proto=${PROTO:-2025-11-25}
audit=${AUDIT:-on}
profile=${PROFILE:-0}
gateway=${GATEWAY:-on}
out=${OUT:-$root/test/artifacts/load}
case "$upstream_mode" in fast | demo) ;; *) echo "UPSTREAM must be fast or demo" >&2; exit 2 ;; esac
case "$audit" in on | buffered | denials_only | off) ;; *) echo "AUDIT must be on, buffered, denials_only or off" >&2; exit 2 ;; esac
case "$mode" in bench | streams | hostile) ;; *) echo "MODE must be bench, streams or hostile" >&2; exit 2 ;; esac
case "$gateway" in on | off | plain | ab) ;; *) echo "GATEWAY must be on, off, plain or ab" >&2; exit 2 ;; esac
if [ "$gateway" != on ] && [ "$mode" != bench ]; then
	echo "GATEWAY=$gateway needs MODE=bench" >&2
	exit 2
fi
if [ "$mode" != bench ] && [ "$upstream_mode" != fast ]; then
	echo "MODE=$mode needs UPSTREAM=fast" >&2
	exit 2
fi
if [ "$mode" = streams ]; then
	# Each Caddy holds two sockets per stream (client and upstream side).
	ulimit -n "$(ulimit -Hn)"
	n=${N:-10000}
	fit=$((($(ulimit -n) - 500) / 2))
	if [ "$n" -gt "$fit" ]; then
		echo "N=$n streams need $((2 * n + 500)) open files per Caddy; the limit is $(ulimit -n): using N=$fit" >&2
		n=$fit
	fi
fi
if [ "$upstream_mode" = demo ] && [ "$proto" != 2025-11-25 ]; then
	echo "UPSTREAM=demo needs PROTO=2025-11-25 (sessions)" >&2
	exit 2
fi

mkdir -p "$out"
tmp=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

caddy=${CADDY:-./caddy}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
build_note="Caddy binary $caddy (working tree at commit $commit)"
case "${REBUILD:-0}" in
head)
	mkdir "$tmp/src"
	git archive HEAD | tar -x -C "$tmp/src"
	(cd "$tmp/src" && ./xcaddy.sh) >&2
	caddy=$tmp/src/caddy
	build_note="Caddy built from commit $commit"
	;;
1) ./xcaddy.sh >&2 ;;
0) [ -x "$caddy" ] || ./xcaddy.sh >&2 ;;
*) echo "REBUILD must be 0, 1 or head" >&2; exit 2 ;;
esac

go build -o "$tmp/load" ./test/load
if [ "$upstream_mode" = demo ]; then
	go build -o "$tmp/demo" ./test/demo
fi

mapfile -t ports < <("$tmp/load" ports 5)
up_port=${ports[0]} plain_port=${ports[1]} gw_port=${ports[2]}
plain_admin=${ports[3]} gw_admin=${ports[4]}

# A throwaway high-entropy client secret; the Caddyfile holds only its
# sha256 (the form the issuer verifies for generated secrets). The secret
# reaches the load generator through the environment, never argv.
secret=$(openssl rand -base64 32 | tr -d '\n=' | tr '+/' '-_')
hash=$(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)

gw_opts=""
plain_log=""
case "${PLAIN_LOG:-off}" in
off) ;;
on) plain_log=$'\tlog\n' ;;
*) echo "PLAIN_LOG must be on or off" >&2; exit 2 ;;
esac
if [ "$audit" = denials_only ]; then
	gw_opts=$'\t\taudit denials_only'
fi
if [ "$mode" = streams ]; then
	# Every stream is the load generator's one principal and client,
	# which max_in_flight (default 100) and max_in_flight_per_client
	# (default 75) would refuse past their bounds.
	gw_opts=$(printf '%s\n\t\tmax_in_flight %d\n\t\tmax_in_flight_per_client %d' "$gw_opts" "$n" "$n")
fi

cat >"$tmp/plain.Caddyfile" <<EOF
{
	admin 127.0.0.1:$plain_admin
	auto_https off
	persist_config off
}

http://127.0.0.1:$plain_port {
$plain_log	reverse_proxy 127.0.0.1:$up_port
}
EOF

# gateway_caddyfile PORT ADMIN NAME: the gateway process's Caddyfile
# (issuer, gateway, reverse_proxy on PORT; its bolt file and buffered
# audit log named after NAME).
gateway_caddyfile() {
	local port=$1 admin=$2 name=$3 log_opts="" gw_block more_clients=""
	if [ "$mode" = hostile ]; then
		# The issuer gives one client at most 600 tokens a minute: the
		# token flood takes its N tokens from loadgen-0, loadgen-1, ...,
		# 500 each (hostile.go, tokensPerClient).
		for k in $(seq 0 $(((${N:-20000} - 1) / 500))); do
			more_clients+=$(printf '\n\t\tclient loadgen-%d {\n\t\t\tsecret sha256:%s\n\t\t\tgrant_types client_credentials\n\t\t\tauth_method client_secret_basic\n\t\t}' "$k" "$hash")
		done
		# The sign-in flood's public client (hostile.go, startSignIn).
		more_clients+=$(printf '\n\t\tclient hostile-public {\n\t\t\tpublic\n\t\t\tredirect_uri http://127.0.0.1:9/cb\n\t\t}')
	fi
	case "$audit" in
	off) log_opts=$'\tlog default {\n\t\texclude http.handlers.mcp_gateway.audit\n\t}' ;;
	buffered)
		log_opts=$(printf '\tlog mcp_audit {\n\t\tinclude http.handlers.mcp_gateway.audit\n\t\toutput buffered {\n\t\t\toutput file %s\n\t\t}\n\t\tformat json\n\t}' "$tmp/$name-audit.log")
		;;
	esac
	gw_block=$(printf '\tmcp_gateway {\n\t\tresource http://127.0.0.1:%s/mcp\n\t\tissuer local\n\t\tscope mcp:use\n\t\ttool echo mcp:call\n%s\n\t}' "$port" "$gw_opts")
	if [ "$gateway" = off ]; then
		# Still configured, so the issuer knows the resource and hands out
		# tokens for it, but on a path no request takes.
		gw_block=$(printf '\t@never path /never\n\troute @never {\n%s\n\t}' "$gw_block")
	fi
	cat <<EOF
{
	admin 127.0.0.1:$admin
	auto_https off
	persist_config off
$log_opts
	mcp_auth {
		issuer http://127.0.0.1:$port
		storage bolt $tmp/$name.db
		client loadgen {
			name "load generator"
			secret sha256:$hash
			grant_types client_credentials
			auth_method client_secret_basic
		}$more_clients
	}
}

http://127.0.0.1:$port {
	mcp_issuer
$gw_block
	reverse_proxy 127.0.0.1:$up_port
}
EOF
}
gateway_caddyfile "$gw_port" "$gw_admin" mcp-auth >"$tmp/gateway.Caddyfile"
if [ "$gateway" = ab ]; then
	# Build A, in the first process's place: the same gateway.
	gateway_caddyfile "$plain_port" "$plain_admin" mcp-auth-a >"$tmp/plain.Caddyfile"
fi

if [ "$gateway" = plain ]; then
	cat >"$tmp/gateway.Caddyfile" <<EOF
{
	admin 127.0.0.1:$gw_admin
	auto_https off
	persist_config off
}

http://127.0.0.1:$gw_port {
	reverse_proxy 127.0.0.1:$up_port
}
EOF
fi

# Caddy's data and config dirs (autosave, certificates) stay in the temp dir.
export XDG_DATA_HOME=$tmp/data XDG_CONFIG_HOME=$tmp/config

if [ "$upstream_mode" = demo ]; then
	"$tmp/demo" -addr "127.0.0.1:$up_port" 2>"$tmp/upstream.log" &
else
	"$tmp/load" upstream -addr "127.0.0.1:$up_port" -stream-tick "${TICK:-1s}" 2>"$tmp/upstream.log" &
fi
up_pid=$!
pids+=("$up_pid")
"$caddy" run --config "$tmp/plain.Caddyfile" --adapter caddyfile >"$tmp/plain.log" 2>&1 &
plain_pid=$!
pids+=("$plain_pid")
caddy_b=$caddy
if [ "$gateway" = ab ]; then
	caddy_b=${CADDY_B:-$caddy}
fi
"$caddy_b" run --config "$tmp/gateway.Caddyfile" --adapter caddyfile >"$tmp/gateway.log" 2>&1 &
gw_pid=$!
pids+=("$gw_pid")

# wait_for URL PID LOG: until URL answers 200, or the process has died.
wait_for() {
	local i
	for i in $(seq 1 100); do
		if ! kill -0 "$2" 2>/dev/null; then
			echo "process for $1 exited; its log:" >&2
			cat "$3" >&2
			exit 1
		fi
		if [ "$(curl -s -o /dev/null -w '%{http_code}' --noproxy '*' "$1" || true)" = 200 ]; then
			return 0
		fi
		sleep 0.2
	done
	echo "timed out waiting for $1; log:" >&2
	cat "$3" >&2
	exit 1
}
wait_for "http://127.0.0.1:$plain_admin/config/" "$plain_pid" "$tmp/plain.log"
wait_for "http://127.0.0.1:$gw_admin/config/" "$gw_pid" "$tmp/gateway.log"
if [ "$gateway" != plain ]; then
	wait_for "http://127.0.0.1:$gw_port/.well-known/oauth-authorization-server" "$gw_pid" "$tmp/gateway.log"
fi
if [ "$gateway" = ab ]; then
	wait_for "http://127.0.0.1:$plain_port/.well-known/oauth-authorization-server" "$plain_pid" "$tmp/plain.log"
fi

bench_flags=(
	-plain "http://127.0.0.1:$plain_port/mcp" -plain-pid "$plain_pid"
	-gateway "http://127.0.0.1:$gw_port/mcp" -gateway-pid "$gw_pid"
	-upstream-pid "$up_pid" -upstream-name "$upstream_mode"
	-proto "$proto" -clk-tck "$(getconf CLK_TCK)"
	-plain-vars "http://127.0.0.1:$plain_admin/debug/vars" -gateway-vars "http://127.0.0.1:$gw_admin/debug/vars"
)
if [ "$gateway" != plain ]; then
	bench_flags+=(-issuer "http://127.0.0.1:$gw_port" -client-id loadgen -scope "mcp:use mcp:call")
fi
if [ "$proto" = 2025-11-25 ] && { [ "${SESSION:-on}" = on ] || [ "$upstream_mode" = demo ]; }; then
	bench_flags+=(-init)
fi
if [ "$gateway" = ab ]; then
	bench_flags+=(-plain-issuer "http://127.0.0.1:$plain_port")
else
	case "$audit" in
	on | buffered) bench_flags+=(-cpu-target 1.10) ;;
	denials_only) bench_flags+=(-cpu-target 1.05) ;;
	esac
fi
if [ "${PLAIN_TOKEN:-off}" = on ]; then
	bench_flags+=(-plain-token)
fi
if [ "$profile" != 0 ]; then
	bench_flags+=(-profile-url "http://127.0.0.1:$gw_admin/debug/pprof/profile"
		-profile-seconds "$profile" -profile-out "$out/gateway.pprof"
		-plain-profile-url "http://127.0.0.1:$plain_admin/debug/pprof/profile"
		-plain-profile-out "$out/plain.pprof")
fi

case "$mode" in
streams)
	report=$out/report-streams-$kind-$proto.md
	{
		echo "$build_note, Caddy $("$caddy" version | cut -d' ' -f1), $(go env GOVERSION), audit log $audit, open-file limit $(ulimit -n)."
		LOAD_CLIENT_SECRET=$secret "$tmp/load" streams -plain "http://127.0.0.1:$plain_port/mcp" -plain-pid "$plain_pid" \
			-gateway "http://127.0.0.1:$gw_port/mcp" -gateway-pid "$gw_pid" -issuer "http://127.0.0.1:$gw_port" \
			-client-id loadgen -scope "mcp:use mcp:call" -proto "$proto" -clk-tck "$(getconf CLK_TCK)" -n "$n" -kind "$kind" "$@"
	} | tee "$report"
	echo "(report saved to $report)" >&2
	exit 0
	;;
hostile)
	report=$out/report-hostile.md
	{
		echo "$build_note, Caddy $("$caddy" version | cut -d' ' -f1), $(go env GOVERSION), audit log $audit."
		LOAD_CLIENT_SECRET=$secret "$tmp/load" hostile -gateway "http://127.0.0.1:$gw_port/mcp" -gateway-pid "$gw_pid" \
			-issuer "http://127.0.0.1:$gw_port" -client-id loadgen -scope "mcp:use mcp:call" -proto "$proto" -n "${N:-20000}" \
			-public-client hostile-public -public-redirect http://127.0.0.1:9/cb -store "$tmp/mcp-auth.db" "$@"
	} | tee "$report"
	echo "(report saved to $report)" >&2
	exit 0
	;;
esac

report=$out/report-$upstream_mode-$proto-audit-$audit.md
gw_note=""
case "$gateway" in
off)
	report=$out/report-$upstream_mode-$proto-gateway-off.md
	gw_note=" GATEWAY=off: the second process's requests pass mcp_issuer straight to reverse_proxy, no mcp_gateway on their path (its rows say mcp_gateway all the same)."
	;;
ab)
	report=$out/report-$upstream_mode-$proto-audit-$audit-ab.md
	gw_note=" GATEWAY=ab: both processes run the same gateway configuration, each with its own issuer; the reverse_proxy rows are build A ($caddy), the mcp_gateway rows build B ($caddy_b), so gateway/plain reads B over A."
	;;
plain)
	report=$out/report-$upstream_mode-$proto-gateway-plain.md
	gw_note=" GATEWAY=plain: an A/A run, the second process is a plain reverse_proxy too and no request carries a token (its rows say mcp_gateway all the same)."
	;;
esac
if [ -n "$plain_log" ]; then
	gw_note="$gw_note PLAIN_LOG=on: the plain site logs every request (Caddy's log directive, to stderr, which goes to a file in the temp dir as the gateway's does)."
fi
{
	echo "$build_note, Caddy $("$caddy" version | cut -d' ' -f1), $(go env GOVERSION), audit log $audit.$gw_note"
	LOAD_CLIENT_SECRET=$secret "$tmp/load" bench "${bench_flags[@]}" "$@"
	if [ -n "$plain_log" ]; then
		echo "Plain access log: $(grep -c '"logger":"http.log.access' "$tmp/plain.log" || true) entries."
	fi
} | tee "$report"
echo "(report saved to $report)" >&2

if [ "$profile" != 0 ]; then
	# per_request PROFILE REQUESTS: cumulative sampled CPU per request of
	# the frames that tell where a request's time goes.
	per_request() {
		go tool pprof -top -cum -nodecount=600 -unit=us "$1" 2>/dev/null | awk -v n="$2" '
			/Total samples = / { t = $0; sub(/.*Total samples = /, "", t); sub(/us.*/, "", t); printf "%8.1f  all sampled CPU\n", t / n }
			$6 ~ /^(net\/http\.\(\*conn\)\.serve|.*caddyhttp\.\(\*Server\)\.ServeHTTP|.*reverseproxy\.\(\*Handler\)\.ServeHTTP|runtime\.gcBgMarkWorker|runtime\.mallocgc|.*caddy-mcp-auth.*|go\.uber\.org\/zap\.\(\*Logger\)\.With|.*zapcore\.\(\*CheckedEntry\)\.Write|go\.etcd\.io\/bbolt\.\(\*DB\)\.View|net\/http\.\(\*Request\)\.Clone|crypto\/sha256\.Sum256)$/ {
				v = $4; sub(/us$/, "", v); if (v / n >= 0.3) printf "%8.1f  %s\n", v / n, $6 }'
	}
	requests() { sed -n "s/^CPU profile of $1: .* at c=[0-9]*, \([0-9]*\) requests.*/\1/p" "$report"; }
	{
		echo "== µs per request (cumulative, sampled) in the gateway Caddy =="
		per_request "$out/gateway.pprof" "$(requests mcp_gateway)"
		echo
		echo "== µs per request (cumulative, sampled) in the plain Caddy =="
		per_request "$out/plain.pprof" "$(requests reverse_proxy)"
	} | tee "$out/profile-top.txt"
	echo >&2 "(profiles: $out/gateway.pprof, $out/plain.pprof; e.g. go tool pprof -top -cum $out/gateway.pprof)"
fi
