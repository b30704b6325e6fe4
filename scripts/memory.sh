#!/usr/bin/env bash
# Resident memory of a gateway whose key cache holds N database keys (default
# 1 000 000), against the same gateway with no keys; and of one whose cache
# is tiny (64) while its key filter holds all N keys, which is what the
# filter costs.
#
# It creates a scratch database next to DATABASE_URL's (dropped at the end),
# inserts N keys with SQL, starts the gateway with `cache_size N` (the warm
# start loads them all), waits until the cache is warm and memory is settled,
# and reads VmRSS from /proc and Go's heap from the admin endpoint. Then the
# same with an empty key table, and with `cache_size 64`.
#
# Usage: DATABASE_URL=postgres://… scripts/memory.sh [keys]
set -euo pipefail
cd "$(dirname "$0")/.."

case ${1:-} in -h | --help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
	exit 0
	;;
esac

keys=${1:-1000000}
die() { echo "memory: $*" >&2; exit 1; }
[[ $keys =~ ^[0-9]+$ ]] || die "keys: want a number, got '$keys' (usage: DATABASE_URL=postgres://… scripts/memory.sh [keys])"
[ -n "${DATABASE_URL:-}" ] || die "set DATABASE_URL to a PostgreSQL server where a scratch database may be created"
command -v psql >/dev/null || die "psql is required"

base=${DATABASE_URL%%\?*}
params=${DATABASE_URL#"$base"}
db=tenantgate_memory_$$
db_url="${base%/*}/$db$params"

work=$(mktemp -d "${TMPDIR:-/tmp}/tenantgate-memory.XXXXXX")
cleanup() {
	# measure runs in a subshell: it leaves its gateway's PID in a file.
	[ -f "$work/gateway.pid" ] && kill "$(cat "$work/gateway.pid")" 2>/dev/null
	psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "memory: building the gateway" >&2
go build -o "$work/caddy" ./cmd/caddy
psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
DATABASE_URL=$db_url "$work/caddy" tenant migrate >/dev/null
org=$(DATABASE_URL=$db_url "$work/caddy" tenant org create --name memory --plan premium --json |
	sed -n 's/.*"id": *"\([^"]*\)".*/\1/p')

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=19300 admin=19301
while ! port_free $port || ! port_free $admin; do port=$((port + 2)) admin=$((admin + 2)); done

# measure <label> <cache size>: runs the gateway until its key cache is
# warm, prints "<rss kB> <heap-in-use bytes> <keys cached>".
measure() {
	cat >"$work/Caddyfile" <<EOF
{
	admin 127.0.0.1:$admin
}
:$port {
	tenant_auth {
		database_url "$db_url"
		cache_size $2
	}
	respond "ok"
}
EOF
	"$work/caddy" run --config "$work/Caddyfile" --adapter caddyfile >"$work/$1.log" 2>&1 &
	local gateway_pid=$!
	echo "$gateway_pid" >"$work/gateway.pid"
	local warmed=""
	for _ in $(seq 1 600); do
		warmed=$(sed -n 's/.*"key cache warmed".*"keys":\([0-9]*\).*/\1/p' "$work/$1.log")
		[ -n "$warmed" ] && break
		sleep 0.2
	done
	[ -n "$warmed" ] || { cat "$work/$1.log" >&2; die "the gateway did not warm its cache"; }
	# Let the warm-up's garbage be collected and returned to the OS.
	sleep 5
	local heap
	heap=$(curl -s "http://127.0.0.1:$admin/debug/vars" | sed -n 's/.*"HeapInuse":\([0-9]*\).*/\1/p')
	echo "$(awk '/VmRSS/ {print $2}' "/proc/$gateway_pid/status") $heap $warmed"
	kill "$gateway_pid"
	wait "$gateway_pid" 2>/dev/null || true
	rm -f "$work/gateway.pid"
}

read -r empty_rss empty_heap empty_keys < <(measure empty "$keys")

echo "memory: inserting $keys keys" >&2
psql "$db_url" -q >/dev/null <<EOF
SET session_replication_role = replica; -- no change notifications for the bulk load
INSERT INTO api_keys (organization_id, name, key_prefix, key_hash)
SELECT '$org', 'memory ' || i, 'sk_live_mem0', sha256(convert_to('memory-key-' || i, 'UTF8'))
FROM generate_series(1, $keys) AS i;
EOF

read -r full_rss full_heap full_keys < <(measure full "$keys")
read -r filter_rss filter_heap filter_keys < <(measure filter 64)

echo
printf "%-28s %14s %14s %10s\n" "gateway" "RSS (MB)" "Go heap (MB)" "keys"
printf "%-28s %14.1f %14.1f %10d\n" "empty key table" "$((empty_rss))e-3" "$((empty_heap))e-6" "$empty_keys"
printf "%-28s %14.1f %14.1f %10d\n" "$keys keys cached" "$((full_rss))e-3" "$((full_heap))e-6" "$full_keys"
printf "%-28s %14.1f %14.1f %10d\n" "$keys keys, cache_size 64" "$((filter_rss))e-3" "$((filter_heap))e-6" "$filter_keys"
awk -v a="$empty_rss" -v b="$full_rss" -v n="$full_keys" 'BEGIN {
	printf "difference: %.1f MB resident, %.0f bytes per cached key (key filter included)\n", (b - a) / 1000, (b - a) * 1000 / n }'
awk -v a="$empty_heap" -v b="$filter_heap" -v n="$keys" 'BEGIN {
	printf "key filter alone: %.1f MB of Go heap, %.1f bytes per key\n", (b - a) / 1e6, (b - a) / n }'
