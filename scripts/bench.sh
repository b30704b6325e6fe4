#!/usr/bin/env bash
# End-to-end benchmark: what Tenantgate costs on top of a bare Caddy
# reverse_proxy. Builds the gateway and a tiny backend, starts one Caddy
# with one site per configuration, all proxying to the same backend:
#
#   bare            reverse_proxy only
#   bare+headers    reverse_proxy + the nine rate-limit response headers, static
#                   (Caddy's header directive): what those headers alone cost
#   auth            tenant_auth (static key) + reverse_proxy
#   auth+local      + tenant_ratelimit, in process
#   auth+redis      + tenant_ratelimit on Redis     (REDIS_ADDR, or a private redis-server)
#   auth+redis+usage  + tenant_usage, Kafka sink on a local broker (kfake,
#                   scripts/kafkabroker): what the usage pipeline costs
#   auth+redis+db   + database_url, a key from Postgres (only when DATABASE_URL is set)
#
# and runs wrk against each, interleaved (bare, auth, …, bare, auth, …) for
# several rounds. It prints requests/s, p50 and p99 latency (medians over
# the rounds), each site's ratio to `bare` measured in the same round, and
# the CPU time the Caddy process spent per request (from /proc; steadier
# than throughput on a small shared machine).
# Plan limits are high enough that nothing is denied.
#
# Usage: scripts/bench.sh [-d duration] [-c connections] [-t wrk_threads] [-r rounds]
#   defaults: -d 5s -c 32 -t 2 -r 3   (under 2 minutes on 2 cores)
# Environment: REDIS_ADDR (host:port), DATABASE_URL, BENCH_CPUPROFILE=<file>
# (a 10 s CPU profile of one site under load, from Caddy's admin pprof
# endpoint; BENCH_PROFILE_SITE picks the site, default auth+redis),
# BENCH_RAW=1 (print every round's numbers), BENCH_SITES="bare auth+redis …"
# (measure only these sites; bare is always kept, ratios need it),
# BENCH_KAFKA_COMPRESSION (the usage site's Kafka compression, default snappy).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5s connections=32 threads=2 rounds=3
while getopts "d:c:t:r:h" opt; do
	case $opt in
	d) duration=$OPTARG ;;
	c) connections=$OPTARG ;;
	t) threads=$OPTARG ;;
	r) rounds=$OPTARG ;;
	*)
		sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 2
		;;
	esac
done

script=bench
next_port=${BENCH_BASE_PORT:-19100}
. scripts/lib.sh
build_and_start_backend

# Redis: REDIS_ADDR when it answers, else a private redis-server.
redis_addr=""
if [ -n "${REDIS_ADDR:-}" ] && redis-cli -h "${REDIS_ADDR%:*}" -p "${REDIS_ADDR##*:}" ping >/dev/null 2>&1; then
	redis_addr=$REDIS_ADDR
elif command -v redis-server >/dev/null; then
	alloc_port
	rport=$PORT
	redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no \
		--dir "$work" --logfile "$work/redis.log" &
	pids+=($!)
	wait_port "$rport" redis-server
	redis_addr=127.0.0.1:$rport
else
	echo "bench: no Redis (set REDIS_ADDR or install redis-server): skipping auth+redis" >&2
fi

# Postgres: a key from the database when DATABASE_URL is set.
db_key=""
if [ -n "${DATABASE_URL:-}" ]; then
	"$work/caddy" tenant migrate >/dev/null
	org_id=$("$work/caddy" tenant org create --name "bench-$(date +%s)" --plan premium \
		--per-minute 90000000 --per-day 100000000000 --burst 1000000 --json |
		sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')
	db_key=$("$work/caddy" tenant key create --org-id "$org_id" --name bench --json |
		sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
	[ -n "$db_key" ] || die "could not create a database key"
fi

static_key=sk_test_benchBenchBenchBenchBenchBench
plan="plan bench 90000000 100000000000 burst 1000000"
alloc_port
admin_port=$PORT
sites=(bare bare+headers auth auth+local)
[ -n "$redis_addr" ] && sites+=(auth+redis auth+redis+usage)
[ -n "$db_key" ] && [ -n "$redis_addr" ] && sites+=(auth+redis+db)
if [ -n "${BENCH_SITES:-}" ]; then
	wanted=" bare $BENCH_SITES "
	kept=()
	for site in "${sites[@]}"; do [[ $wanted == *" $site "* ]] && kept+=("$site"); done
	sites=("${kept[@]}")
fi

# Kafka: a local broker (kfake) for the usage site's sink, only when that
# site is measured (an idle producer would run beside every other site).
kafka_port=""
if [[ " ${sites[*]} " == *" auth+redis+usage "* ]]; then
	go build -o "$work/kafkabroker" ./scripts/kafkabroker
	alloc_port
	kafka_port=$PORT
	"$work/kafkabroker" -port "$kafka_port" 2>"$work/kafka.log" &
	pids+=($!)
	wait_port "$kafka_port" "kafka broker"
fi

declare -A port key
{
	cat <<EOF
{
	admin 127.0.0.1:$admin_port
	log {
		level ERROR
	}
EOF
	if [ -n "$kafka_port" ]; then
		cat <<EOF
	tenant_usage {
		spool_dir $work/spool
		kafka {
			brokers 127.0.0.1:$kafka_port
			compression ${BENCH_KAFKA_COMPRESSION:-snappy}
		}
	}
EOF
	fi
	echo "}"
	for site in "${sites[@]}"; do
		alloc_port
		port[$site]=$PORT
		key[$site]=$static_key
		echo ":${port[$site]} {"
		echo "	route {"
		case $site in
		bare) ;;
		bare+headers)
			# The nine rate-limit headers, static, with no Tenantgate code:
			# what the response headers alone cost.
			echo "		header {"
			echo "			X-Ratelimit-Limit-Minute 90000000"
			echo "			X-Ratelimit-Limit-Day 100000000000"
			echo "			X-Ratelimit-Remaining-Minute 90999999"
			echo "			X-Ratelimit-Remaining-Day 99999999999"
			echo "			X-Ratelimit-Reset-Minute 2026-01-01T00:00:00Z"
			echo "			X-Ratelimit-Reset-Day 2026-01-02T00:00:00Z"
			echo "			X-Ratelimit-Burst 1000000"
			echo "			Ratelimit-Policy \"\\\"minute\\\";q=91000000;w=60, \\\"day\\\";q=100000000000;w=86400\""
			echo "			Ratelimit \"\\\"minute\\\";r=90999999;t=1, \\\"day\\\";r=99999999999;t=80000\""
			echo "		}"
			;;
		auth)
			echo "		tenant_auth {"
			echo "			key $static_key org_bench bench"
			echo "		}"
			;;
		auth+local | auth+redis | auth+redis+usage)
			[ "$site" = auth+redis+usage ] && echo "		tenant_usage"
			echo "		tenant_auth {"
			org=${site#auth+}
			echo "			key $static_key org_bench_${org//+/_} bench"
			echo "		}"
			echo "		tenant_ratelimit {"
			[ "$site" != auth+local ] && echo "			redis_addr $redis_addr"
			echo "			$plan"
			echo "		}"
			;;
		auth+redis+db)
			key[$site]=$db_key
			echo "		tenant_auth {"
			echo "			database_url \"$DATABASE_URL\""
			echo "		}"
			echo "		tenant_ratelimit {"
			echo "			redis_addr $redis_addr"
			echo "		}"
			;;
		esac
		echo "		reverse_proxy 127.0.0.1:$backend_port"
		echo "	}"
		echo "}"
	done
} >"$work/Caddyfile"

"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
caddy_pid=$!
pids+=($caddy_pid)
for site in "${sites[@]}"; do wait_port "${port[$site]}" "site $site"; done
for site in "${sites[@]}"; do
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${key[$site]}" "http://127.0.0.1:${port[$site]}/")
	[ "$code" = 200 ] || { cat "$work/caddy.log" >&2; die "site $site answers $code, not 200"; }
done

# caddy_cpu_ticks: CPU time (user + system, clock ticks) Caddy has used.
caddy_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$caddy_pid/stat"; }
ticks_per_second=$(getconf CLK_TCK)

# run_wrk <site> <duration>: prints "rps p50_us p99_us non2xx caddy_cpu_us_per_request"
run_wrk() {
	local before after
	before=$(caddy_cpu_ticks)
	wrk -t"$threads" -c"$connections" -d"$2" --latency \
		-H "Authorization: Bearer ${key[$1]}" "http://127.0.0.1:${port[$1]}/" | wrk_summary >"$work/run"
	after=$(caddy_cpu_ticks)
	awk -v ticks=$((after - before)) -v hz="$ticks_per_second" \
		'{ printf "%s %s %s %d %.1f\n", $2, $3, $4, $5, ticks * 1000000 / hz / $1 }' "$work/run"
}

echo "bench: warming up" >&2
for site in "${sites[@]}"; do run_wrk "$site" 2s >/dev/null; done

profile_site=${BENCH_PROFILE_SITE:-auth+redis}
if [ -n "${BENCH_CPUPROFILE:-}" ] && [ -n "${port[$profile_site]:-}" ]; then
	echo "bench: CPU profile of $profile_site → $BENCH_CPUPROFILE" >&2
	run_wrk "$profile_site" 12s >/dev/null &
	sleep 1
	curl -s -o "$BENCH_CPUPROFILE" "http://127.0.0.1:$admin_port/debug/pprof/profile?seconds=10"
	wait $!
fi

results=$work/results
: >"$results"
for r in $(seq 1 "$rounds"); do
	echo "bench: round $r/$rounds" >&2
	for site in "${sites[@]}"; do
		echo "$r $site $(run_wrk "$site" "$duration")" >>"$results"
	done
done

echo
echo "wrk -t$threads -c$connections -d$duration, $rounds rounds interleaved; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo "medians over the rounds; ratio = site / bare in the same round"
echo
[ -n "${BENCH_RAW:-}" ] && cat "$results" >&2
awk -v order="${sites[*]}" '
	function median(list,   n, a, i, j, t) {
		n = split(list, a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ rps[$1, $2] = $3; p50[$2] = p50[$2] " " $4; p99[$2] = p99[$2] " " $5; bad[$2] += $6; rounds[$1] = 1; rps_all[$2] = rps_all[$2] " " $3; cpu[$2] = cpu[$2] " " $7 }
	END {
		printf "%-16s %12s %10s %10s %11s %11s %8s %14s\n", "site", "req/s", "p50 ms", "p99 ms", "req/s ratio", "p99 ratio", "non-2xx", "Caddy µs/req"
		n = split(order, sites, " ")
		for (i = 1; i <= n; i++) {
			s = sites[i]; ratios = ""; pr = ""
			for (r in rounds) ratios = ratios " " rps[r, s] / rps[r, "bare"]
			printf "%-16s %12.0f %10.3f %10.3f %11.3f %11.3f %8d %14.1f\n", s, median(rps_all[s]), median(p50[s]) / 1000,
				median(p99[s]) / 1000, median(ratios), median(p99[s]) / median(p99["bare"]), bad[s], median(cpu[s])
		}
	}' "$results"
