// Package tenantgate is the root of Tenantgate, a multi-tenant API gateway
// built as Caddy modules. Importing it (as xcaddy's `--with` does) plugs
// every Tenantgate module into Caddy.
package tenantgate

import (
	// Tenantgate's Caddy modules.
	_ "github.com/tenantgate/tenantgate/caddyadmin"
	_ "github.com/tenantgate/tenantgate/caddyauth"
	_ "github.com/tenantgate/tenantgate/caddyhealth"
	_ "github.com/tenantgate/tenantgate/caddyratelimit"
	_ "github.com/tenantgate/tenantgate/caddyusage"
)
