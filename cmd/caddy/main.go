// Command caddy is Caddy with Tenantgate's modules: `go build ./cmd/caddy`
// gives the same binary as ./xcaddy-build.sh.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// Tenantgate's modules.
	_ "github.com/tenantgate/tenantgate"
)

func main() {
	caddycmd.Main()
}
