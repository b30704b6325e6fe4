#!/usr/bin/env bash
# Checks that a running Tenantgate enforces its rate limit: sends requests
# with one API key until the gateway answers 429, then prints the rate-limit
# headers of an admitted response and the headers and body of the first 429
# it received. Exits non-zero if no 429 comes within MAX_REQUESTS, or on any
# answer other than 200 and 429.
#
# The verdict rests on what was seen: every response of the burst is kept
# until a 429 shows up, so a slow machine (where the bucket refills between
# requests) cannot make it miss a limit that was enforced.
#
# Usage: scripts/test-ratelimit.sh [URL] [API_KEY]
#   URL      default http://localhost:8080/api/test  (the default Caddyfile)
#   API_KEY  default sk_test_abc123                  (its demo key, plan premium)
# Environment: MAX_REQUESTS (default 5000), BATCH (requests in flight, default 50).
set -euo pipefail

case ${1:-} in -h | --help)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
	exit 0
	;;
esac

url=${1:-http://localhost:8080/api/test}
key=${2:-sk_test_abc123}
max=${MAX_REQUESTS:-5000}
batch=${BATCH:-50}

command -v curl >/dev/null || { echo "test-ratelimit: curl is required" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# status_of FILE: the status code of a response saved with its headers.
status_of() { head -n1 "$1" | awk '{print $2}'; }

# show FILE: a response saved with its headers, printed as headers then body.
show() {
	echo "== $2 response headers"
	sed -e 's/\r$//' -e '/^$/q' "$1"
	echo "== $2 response body"
	sed -e '1,/^\r\{0,1\}$/d' "$1"
	echo
}

# Every response is saved with its headers (-i), one file per request.
curl -sS -i -o "$tmp/first" -H "Authorization: Bearer $key" "$url" || {
	echo "test-ratelimit: cannot reach $url" >&2
	exit 2
}
first_status=$(status_of "$tmp/first")
case $first_status in
	200 | 429) ;;
	*)
		echo "test-ratelimit: first request answered $first_status, not 200:" >&2
		cat "$tmp/first" >&2
		exit 1
		;;
esac
echo "== Admitted response: rate-limit headers"
grep -i '^x-ratelimit\|^ratelimit' "$tmp/first" | sed 's/\r$//' || true

# Batches of concurrent requests (curl --parallel), each response kept in
# its own file, until a 429 shows up: that 429 is the one shown.
sent=1 ok=0 limited=0 other=0 limited_file=""
if [ "$first_status" = 200 ]; then ok=1; else limited=1 limited_file=$tmp/first; fi
mkdir "$tmp/batch"
for ((i = 0; i < batch; i++)); do printf 'url = "%s"\noutput = "%s/batch/%d"\n' "$url" "$tmp" "$i"; done >"$tmp/batch.cfg"
while [ "$limited" -eq 0 ] && [ "$sent" -lt "$max" ]; do
	rm -f "$tmp/batch/"*
	results=$(curl -s -i --no-progress-meter --parallel --parallel-max "$batch" -H "Authorization: Bearer $key" \
		-w '%{http_code} %{filename_effective}\n' -K "$tmp/batch.cfg" || true)
	while read -r code file; do
		[ -n "$code" ] || continue
		case $code in
			200) ok=$((ok + 1)) ;;
			429)
				limited=$((limited + 1))
				if [ -z "$limited_file" ]; then
					limited_file=$tmp/limited
					cp "$file" "$limited_file"
				fi
				;;
			*) other=$((other + 1)) ;;
		esac
	done <<<"$results"
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
show "$limited_file" "429"
echo "test-ratelimit: PASS: rate limit enforced after $ok admitted requests"
