package caddyadmin

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Without a token, anyone who reaches the admin API can create keys. So a
// tenant_admin without a token is refused unless every server it is
// mounted on listens on loopback only (127.0.0.0/8, ::1, localhost) or on
// a Unix socket, as Caddy's own admin endpoint does by default.
//
// A handler cannot see its server while it is provisioned, so the check
// reads the http app's servers: the routes not provisioned yet as JSON,
// those already provisioned as handlers. Every tenant_admin without a
// token is looked for, wherever it is nested (handle, handle_path, route,
// invoke, error routes).

// checkTokenless returns an error naming the first server that listens
// beyond loopback and serves a tenant_admin without a token.
func checkTokenless(ctx caddy.Context) error {
	v, err := ctx.App("http")
	if err != nil {
		return fmt.Errorf("finding the servers tenant_admin is mounted on: %w", err)
	}
	app, ok := v.(*caddyhttp.App)
	if !ok {
		return fmt.Errorf("finding the servers tenant_admin is mounted on: unexpected http app %T", v)
	}
	repl := caddy.NewReplacer()
	names := make([]string, 0, len(app.Servers))
	for name := range app.Servers {
		names = append(names, name)
	}
	slices.Sort(names)
	found := false
	for _, name := range names {
		srv := app.Servers[name]
		if !serverHasTokenless(srv) {
			continue
		}
		found = true
		for _, addr := range srv.Listen {
			if addr = repl.ReplaceAll(addr, ""); !loopbackOnly(addr) {
				return fmt.Errorf("tenant_admin has no token but server %s listens on %s, beyond loopback: "+
					"set `token` (e.g. token {env.ADMIN_TOKEN}), or bind the site to 127.0.0.1 (`bind 127.0.0.1`)", name, addr)
			}
		}
	}
	if !found {
		// Mounted somewhere the walk does not know: be safe.
		return fmt.Errorf("tenant_admin has no token and its server could not be found to check that it listens on loopback only: set `token`")
	}
	return nil
}

// serverHasTokenless reports whether a server serves a tenant_admin
// without a token.
func serverHasTokenless(srv *caddyhttp.Server) bool {
	if routesHaveTokenless(srv.Routes) {
		return true
	}
	if srv.Errors != nil && routesHaveTokenless(srv.Errors.Routes) {
		return true
	}
	for _, r := range srv.NamedRoutes {
		if r != nil && routesHaveTokenless(caddyhttp.RouteList{*r}) {
			return true
		}
	}
	return false
}

func routesHaveTokenless(routes caddyhttp.RouteList) bool {
	for _, r := range routes {
		for _, raw := range r.HandlersRaw {
			if rawHasTokenless(raw) {
				return true
			}
		}
		for _, h := range r.Handlers {
			switch h := h.(type) {
			case *TenantAdmin:
				if h.token == "" {
					return true
				}
			case *caddyhttp.Subroute:
				if routesHaveTokenless(h.Routes) || (h.Errors != nil && routesHaveTokenless(h.Errors.Routes)) {
					return true
				}
			}
		}
	}
	return false
}

// rawHasTokenless looks through a handler's JSON, nested routes included,
// for a tenant_admin whose token is absent or expands to nothing.
func rawHasTokenless(raw json.RawMessage) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == moduleName {
				token, _ := v["token"].(string)
				if caddy.NewReplacer().ReplaceKnown(token, "") == "" {
					return true
				}
			}
			for _, child := range v {
				if walk(child) {
					return true
				}
			}
		case []any:
			for _, child := range v {
				if walk(child) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

// loopbackOnly reports whether a listen address accepts loopback
// connections only (or is a Unix socket or inherited descriptor, which
// the network cannot reach).
func loopbackOnly(addr string) bool {
	na, err := caddy.ParseNetworkAddress(addr)
	if err != nil {
		return false
	}
	if na.IsUnixNetwork() || na.IsFdNetwork() {
		return true
	}
	host := strings.Trim(na.Host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
