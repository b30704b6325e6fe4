#!/usr/bin/env bash
# Checks that a running Tenantgate enforces its rate limit: sends requests
# with one API key until the gateway answers 429, then prints the rate-limit
# headers of an admitted response and the headers and body of the 429.
# Exits non-zero if no 429 comes within MAX_REQUESTS, or on any 5xx.
#
# Usage: scripts/test-ratelimit.sh [URL] [API_KEY]
#   URL      default http://localhost:8080/api/test  (the default Caddyfile)
#   API_KEY  default sk_test_abc123                  (its demo key, plan premium)
# Environment: MAX_REQUESTS (default 5000), BATCH (requests in flight, default 50).
set -euo pipefail

url=${1:-http://localhost:8080/api/test}
key=${2:-sk_test_abc123}
max=${MAX_REQUESTS:-5000}
batch=${BATCH:-50}

command -v curl >/dev/null || { echo "test-ratelimit: curl is required" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One request, headers and body kept: show <name> <file-prefix>
show() {
	curl -sS -o "$tmp/$1.body" -D "$tmp/$1.headers" -H "Authorization: Bearer $key" "$url" || {
		echo "test-ratelimit: cannot reach $url" >&2
		exit 2
	}
}

show first
first_status=$(head -n1 "$tmp/first.headers" | awk '{print $2}')
case $first_status in
	200 | 429) ;;
	*)
		echo "test-ratelimit: first request answered $first_status, not 200:" >&2
		cat "$tmp/first.headers" "$tmp/first.body" >&2
		exit 1
		;;
esac
echo "== Admitted response: rate-limit headers"
grep -i '^x-ratelimit\|^ratelimit' "$tmp/first.headers" || true

# Batches of concurrent requests (curl --parallel), counting status codes,
# until a 429 shows up.
sent=1 ok=0 limited=0 other=0
[ "$first_status" = 200 ] && ok=1 || limited=1
for ((i = 0; i < batch; i++)); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url"; done >"$tmp/batch.cfg"
while [ "$limited" -eq 0 ] && [ "$sent" -lt "$max" ]; do
	codes=$(curl -s --no-progress-meter --parallel --parallel-max "$batch" -H "Authorization: Bearer $key" \
		-w '%{http_code}\n' -K "$tmp/batch.cfg" || true)
	for code in $codes; do
		case $code in
			200) ok=$((ok + 1)) ;;
			429) limited=$((limited + 1)) ;;
			*) other=$((other + 1)) ;;
		esac
	done
	sent=$((sent + batch))
done
echo "== $sent requests: $ok x 200, $limited x 429, $other other"
if [ "$other" -gt 0 ]; then
	echo "test-ratelimit: FAIL: $other responses were neither 200 nor 429" >&2
	exit 1
fi
if [ "$limited" -eq 0 ]; then
	echo "test-ratelimit: FAIL: no 429 after $sent requests: no limit is enforced" >&2
	exit 1
fi

# Show one 429 in full (the bucket may have refilled a token meanwhile).
for _ in 1 2 3 4 5; do
	show limited
	if head -n1 "$tmp/limited.headers" | grep -q ' 429'; then
		echo "== 429 response headers"
		cat "$tmp/limited.headers"
		echo "== 429 response body"
		cat "$tmp/limited.body"
		echo "test-ratelimit: PASS: rate limit enforced after $ok admitted requests"
		exit 0
	fi
done
echo "test-ratelimit: FAIL: saw 429s in the burst but could not capture one" >&2
exit 1
