# Shared by scripts/bench.sh and scripts/flood.sh (sourced, not run):
# a scratch directory and process list cleaned up on any exit, free ports,
# building the gateway and the benchmark backend, and reading wrk's output.
# The sourcing script sets `script` (its name, for messages) first.

die() { echo "$script: $*" >&2; exit 1; }

command -v wrk >/dev/null || die "wrk is not installed; on Debian/Ubuntu: apt-get install -y (as root) wrk"
command -v go >/dev/null || die "go is not installed"

work=$(mktemp -d "${TMPDIR:-/tmp}/tenantgate-$script.XXXXXX")
pids=()
# cleanup_hooks are commands the sourcing script adds (e.g. dropping a
# scratch database); they run after the processes are stopped.
cleanup_hooks=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	for hook in "${cleanup_hooks[@]}"; do eval "$hook" || true; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# alloc_port sets PORT to a free port (no subshell, so next_port advances).
alloc_port() {
	while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
	PORT=$next_port
	next_port=$((next_port + 1))
}

# wait_port <port> <what>: waits until something listens on port.
wait_port() {
	for _ in $(seq 1 200); do
		port_free "$1" || return 0
		sleep 0.05
	done
	[ -f "$work/caddy.log" ] && tail -5 "$work/caddy.log" >&2
	die "$2 did not start on port $1"
}

# build_and_start_backend builds $work/caddy and $work/backend and starts the
# backend on a free port, in backend_port.
build_and_start_backend() {
	echo "$script: building the gateway and the backend" >&2
	go build -o "$work/caddy" ./cmd/caddy
	go build -o "$work/backend" ./scripts/benchbackend
	alloc_port
	backend_port=$PORT
	"$work/backend" -addr "127.0.0.1:$backend_port" &
	pids+=($!)
	wait_port "$backend_port" backend
}

# wrk_summary reads wrk --latency output on stdin and prints
# "requests req/s p50_µs p99_µs non-2xx".
wrk_summary() {
	awk '
		function us(v) {
			if (v ~ /us$/) return v + 0
			if (v ~ /ms$/) return v * 1000
			if (v ~ /s$/)  return v * 1000000
			return v
		}
		/requests in/ { n = $1 }
		/Requests\/sec:/ { rps = $2 }
		/^ +50%/ { p50 = us($2) }
		/^ +99%/ { p99 = us($2) }
		/Non-2xx or 3xx responses:/ { bad = $5 }
		END { printf "%d %s %s %s %d\n", n, rps, p50, p99, bad }'
}

