package caddyauth

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tenantgate/tenantgate/keystore"
)

// Interface guards
var (
	_ caddy.Provisioner           = (*TenantAuth)(nil)
	_ caddy.CleanerUpper          = (*TenantAuth)(nil)
	_ KeyStore                    = (*keystore.Handle)(nil)
	_ caddyhttp.MiddlewareHandler = (*TenantAuth)(nil)
	_ caddyfile.Unmarshaler       = (*TenantAuth)(nil)
)
