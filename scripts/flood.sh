#!/usr/bin/env bash
# Floods must cost little. Two modes:
#
# Rate-limit flood (default). One organization sends 20× its limit while
# another sends steady traffic; this measures
#   1. the Redis calls the flood causes (EVALSHA count from INFO
#      commandstats, before and after a flood-only run), against the number
#      of flood requests: the over-limit fast path answers denials in
#      process, so calls stay near the flooder's admitted requests;
#   2. the other organization's p50/p99 latency with and without the flood
#      (alternating runs, medians).
# It starts a private redis-server on a free port (so the command counts
# are its own), one Caddy with tenant_auth + tenant_ratelimit on that Redis,
# and paced wrk clients (wrk's delay()).
#
# Forged-key flood (-k). -c connections send forged but well-formed keys
# (valid checksums: anyone can mint them) at once, -q requests each, with
# PostgreSQL made -l away (each way) by a delaying proxy. In the middle of
# the burst a legitimate key created after the gateway started (so never
# cached) is sent once, and /health/ready is read, each on a connection
# opened before the burst. It prints what they got, the most key lookups in
# flight to PostgreSQL (the gateway's gauge, sampled every 10 ms), and how
# many lookups were shed (503) or reached PostgreSQL. It needs DATABASE_URL
# (a scratch database is created next to it and dropped at the end) and psql.
#
# Usage: scripts/flood.sh [-d duration] [-r rounds]     (defaults: -d 10s -r 3)
#        DATABASE_URL=postgres://… scripts/flood.sh -k [-c connections] [-q requests] [-l latency]
#                                                       (defaults: -c 8000 -q 1 -l 10ms)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10s rounds=3 keys_mode="" connections=8000 per_conn=1 latency=10ms
while getopts "d:r:kc:q:l:h" opt; do
	case $opt in
	d) duration=$OPTARG ;;
	r) rounds=$OPTARG ;;
	k) keys_mode=1 ;;
	c) connections=$OPTARG ;;
	q) per_conn=$OPTARG ;;
	l) latency=$OPTARG ;;
	*)
		sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 2
		;;
	esac
done

script=flood
next_port=${FLOOD_BASE_PORT:-19400}
. scripts/lib.sh

# forged_key_flood is the -k mode.
forged_key_flood() {
	[ -n "${DATABASE_URL:-}" ] || die "-k needs DATABASE_URL: a PostgreSQL server where a scratch database may be created"
	command -v psql >/dev/null || die "psql is required"
	local base=${DATABASE_URL%%\?*}
	local params=${DATABASE_URL#"$base"}
	local db=tenantgate_flood_$$
	local db_url="${base%/*}/$db$params"
	# host:port of the server, for the delaying proxy
	local hostport
	hostport=$(sed -E 's#^[a-z]+://([^@/]*@)?([^/]*)/.*#\2#' <<<"$base")
	[[ $hostport == *:* ]] || hostport=$hostport:5432

	echo "flood: building the gateway and the tools" >&2
	go build -o "$work/caddy" ./cmd/caddy
	go build -o "$work/delayproxy" ./scripts/delayproxy
	go build -o "$work/keyflood" ./scripts/keyflood
	psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
	cleanup_hooks+=("psql \"\$DATABASE_URL\" -qc 'DROP DATABASE IF EXISTS $db WITH (FORCE)' >/dev/null 2>&1")
	DATABASE_URL=$db_url "$work/caddy" tenant migrate >/dev/null
	local org
	org=$(DATABASE_URL=$db_url "$work/caddy" tenant org create --name flood --plan basic --json |
		sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')

	"$work/delayproxy" -target "$hostport" -delay "$latency" >"$work/proxy.addr" &
	pids+=($!)
	for _ in $(seq 1 100); do
		[ -s "$work/proxy.addr" ] && break
		sleep 0.05
	done
	local proxied=${db_url/"$hostport"/$(cat "$work/proxy.addr")}

	alloc_port
	local admin_port=$PORT
	alloc_port
	local port=$PORT
	cat >"$work/Caddyfile" <<-CADDYFILE
		{
			admin 127.0.0.1:$admin_port
		}
		:$port {
			handle /health* {
				tenant_health
			}
			route {
				tenant_auth {
					database_url "$proxied"
				}
				respond "ok" 200
			}
		}
	CADDYFILE
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
	local gateway=$!
	pids+=($gateway)
	wait_port "$port" gateway
	for _ in $(seq 1 200); do
		grep -q '"key cache warmed"' "$work/caddy.log" && break
		sleep 0.05
	done
	grep -q '"key filter built"' "$work/caddy.log" || die "the gateway did not build its key filter: $(tail -3 "$work/caddy.log")"

	# Created now, the legitimate key is in no cache; its notification puts
	# it in the key filter.
	local legit
	legit=$(DATABASE_URL=$db_url "$work/caddy" tenant key create --org-id "$org" --name legit --json |
		sed -n 's/.*"key": *"\([^"]*\)".*/\1/p')
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

	echo "flood: $connections connections × $per_conn request(s) of forged keys at once, PostgreSQL $latency away (each way)" >&2
	"$work/keyflood" -url "http://127.0.0.1:$port/" -n "$connections" -r "$per_conn" -key "$legit" \
		-ready "http://127.0.0.1:$port/health/ready" -metrics "http://127.0.0.1:$admin_port/metrics" >"$work/keyflood.out"
	kill -0 "$gateway" 2>/dev/null || die "the gateway died: $(tail -3 "$work/caddy.log")"

	echo
	echo "forged-key flood, PostgreSQL $latency away each way:"
	sed 's/^/  /' "$work/keyflood.out"
	echo "  lookups that reached PostgreSQL: $(gateway_metric tenantgate_auth_postgres_lookup_seconds_count)"
	echo "  lookups shed (503): unverified lane $(gateway_metric 'tenantgate_auth_postgres_lookups_shed_total{lane="unverified"}'), normal lane $(gateway_metric 'tenantgate_auth_postgres_lookups_shed_total{lane="normal"}')"
	echo "  PostgreSQL errors: $(gateway_metric tenantgate_auth_postgres_errors_total)"
}

# gateway_metric <name{labels}>: the value on the gateway's admin endpoint.
gateway_metric() {
	curl -s "http://127.0.0.1:$admin_port/metrics" |
		awk -v m="$1" '$1 == m { print $2; found = 1 } END { if (!found) print 0 }'
}

if [ -n "$keys_mode" ]; then
	forged_key_flood
	exit 0
fi

command -v redis-server >/dev/null || die "redis-server is not installed; on Debian/Ubuntu: apt-get install -y (as root) redis-server"
build_and_start_backend
alloc_port
redis_port=$PORT
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
wait_port "$redis_port" redis-server

victim_key=sk_test_floodVictimVictimVictimVictim
flooder_key=sk_test_floodFlooderFlooderFlooder0
alloc_port
admin_port=$PORT
alloc_port
port=$PORT
cat >"$work/Caddyfile" <<EOF
{
	admin 127.0.0.1:$admin_port
	log {
		level ERROR
	}
}
:$port {
	route {
		tenant_auth {
			key $victim_key org_victim bench
			key $flooder_key org_flooder flood
		}
		tenant_ratelimit {
			redis_addr 127.0.0.1:$redis_port
			plan bench 90000000 100000000000 burst 1000000
			plan flood 600 100000000 burst 0
		}
		reverse_proxy 127.0.0.1:$backend_port
	}
}
EOF
"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
pids+=($!)
wait_port "$port" gateway

# Paced clients: each connection waits between requests.
#   victim:  4 connections, 8 ms apart  ≈ 450 req/s, far below its limit
#   flooder: 4 connections, 20 ms apart ≈ 200 req/s = 20× its 600/min
echo 'function delay() return 8 end' >"$work/victim.lua"
echo 'function delay() return 20 end' >"$work/flooder.lua"

evalsha_calls() {
	redis-cli -p "$redis_port" info commandstats |
		sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0
}

# wrk_run <key> <script> <connections>: prints "requests p50_us p99_us non2xx"
wrk_run() {
	wrk -t1 -c"$3" -d"$duration" --latency -s "$2" -H "Authorization: Bearer $1" "http://127.0.0.1:$port/" |
		wrk_summary | awk '{ print $1, $3, $4, $5 }'
}

echo "flood: warming up (and emptying the flooder's bucket)" >&2
wrk_run "$victim_key" "$work/victim.lua" 4 >/dev/null
wrk -t1 -c4 -d2s -H "Authorization: Bearer $flooder_key" "http://127.0.0.1:$port/" >/dev/null # unpaced: empties the bucket

echo "flood: flood alone ($duration)" >&2
before=$(evalsha_calls)
read -r flood_n _ _ flood_denied < <(wrk_run "$flooder_key" "$work/flooder.lua" 4)
flood_calls=$(($(evalsha_calls) - before))

results=$work/results
: >"$results"
for r in $(seq 1 "$rounds"); do
	echo "flood: round $r/$rounds: victim alone, then victim during the flood" >&2
	echo "quiet $(wrk_run "$victim_key" "$work/victim.lua" 4)" >>"$results"
	wrk_run "$flooder_key" "$work/flooder.lua" 4 >/dev/null &
	flood_pid=$!
	sleep 0.5
	echo "flood $(wrk_run "$victim_key" "$work/victim.lua" 4)" >>"$results"
	wait "$flood_pid"
done

echo
echo "flood alone: $flood_n requests for org_flooder (limit 600/min, burst 0, bucket empty) in $duration,"
echo "             $((flood_n - flood_denied)) admitted, $flood_denied denied (429);"
echo "             $flood_calls EVALSHA calls on Redis ($(awk -v c="$flood_calls" -v n="$flood_n" 'BEGIN { printf "%.3f", c / n }') per flood request)"
echo
[ -n "${FLOOD_RAW:-}" ] && cat "$results" >&2
awk -v rounds="$rounds" '
	function median(list,   n, a, i, j, t) {
		n = split(list, a, " ")
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	{ p50[$1] = p50[$1] " " $3; p99[$1] = p99[$1] " " $4; bad[$1] += $5 }
	END {
		printf "org_victim (paced, ≈450 req/s), medians of %d runs:\n", rounds
		printf "%-16s %10s %10s %8s\n", "", "p50 ms", "p99 ms", "non-2xx"
		printf "%-16s %10.3f %10.3f %8d\n", "without flood", median(p50["quiet"]) / 1000, median(p99["quiet"]) / 1000, bad["quiet"]
		printf "%-16s %10.3f %10.3f %8d\n", "during flood", median(p50["flood"]) / 1000, median(p99["flood"]) / 1000, bad["flood"]
		printf "change: p50 %+.1f %%, p99 %+.1f %%\n", (median(p50["flood"]) / median(p50["quiet"]) - 1) * 100,
			(median(p99["flood"]) / median(p99["quiet"]) - 1) * 100
	}' "$results"
