#!/usr/bin/env bash
# Builds ./caddy: Caddy (the version in go.mod) with Tenantgate's modules,
# using xcaddy, which is installed with `go install` when it is missing.
#
#   ./xcaddy-build.sh                 # → ./caddy
#   OUTPUT=/usr/local/bin/caddy ./xcaddy-build.sh
#   ./xcaddy-build.sh --with github.com/caddy-dns/cloudflare   # extra plugins
set -euo pipefail
cd "$(dirname "$0")"

XCADDY_VERSION=v0.4.5
module=$(go list -m)
caddy_version=$(go list -m -f '{{.Version}}' github.com/caddyserver/caddy/v2)
output=${OUTPUT:-./caddy}

xcaddy=$(command -v xcaddy || true)
if [ -z "$xcaddy" ]; then
	gobin=$(go env GOBIN)
	[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
	xcaddy="$gobin/xcaddy"
	if [ ! -x "$xcaddy" ]; then
		echo "xcaddy-build: installing xcaddy $XCADDY_VERSION" >&2
		go install "github.com/caddyserver/xcaddy/cmd/xcaddy@$XCADDY_VERSION"
	fi
fi

# "--with <module>=." plugs in this checkout. The module is pinned to the
# zero pseudo-version so `go get` never asks the module proxy for a
# "latest" version of an unpublished module (proxies that answer 403 rather
# than 404 make that query fatal); the replacement supplies the code.
echo "xcaddy-build: Caddy $caddy_version with $module (this checkout) → $output" >&2
"$xcaddy" build "$caddy_version" --output "$output" \
	--with "$module@v0.0.0-00010101000000-000000000000=." "$@"
"$output" list-modules --versions 2>/dev/null | grep tenant >&2 || true
