package e2e

import (
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestRateLimitAdapt: the Caddyfile syntax adapts to the documented JSON,
// and the directive order puts tenant_ratelimit after tenant_auth and
// before request_header and reverse_proxy, whatever order they are written in.
func TestRateLimitAdapt(t *testing.T) {
	caddytest.AssertAdapt(t, `:8080 {
	reverse_proxy 127.0.0.1:9000
	request_header X-Seen yes
	tenant_ratelimit {
		redis_addr 127.0.0.1:6379
		redis_password secret
		redis_db 2
		redis_timeout 150ms
		on_redis_error deny
		plan tiny 6 1000 burst 4
		plan daily 600 5
	}
	tenant_auth {
		key sk_test_abc org_1 tiny
	}
}
`, "caddyfile", `{
	"apps": {
		"http": {
			"servers": {
				"srv0": {
					"listen": [
						":8080"
					],
					"routes": [
						{
							"handle": [
								{
									"handler": "tenant_auth",
									"keys": [
										{
											"demo_style": true,
											"key_hash": "4b4090ccee1e713c3d411b96a4226b90bd0f0deb34e02d19475a951316fd04ee",
											"org_id": "org_1",
											"plan": "tiny"
										}
									]
								},
								{
									"handler": "tenant_ratelimit",
									"on_redis_error": "deny",
									"plans": [
										{
											"burst": 4,
											"name": "tiny",
											"per_day": 1000,
											"per_minute": 6
										},
										{
											"name": "daily",
											"per_day": 5,
											"per_minute": 600
										}
									],
									"redis_addr": "127.0.0.1:6379",
									"redis_db": 2,
									"redis_password": "secret",
									"redis_timeout": 150000000
								},
								{
									"handler": "headers",
									"request": {
										"set": {
											"X-Seen": [
												"yes"
											]
										}
									}
								},
								{
									"handler": "reverse_proxy",
									"upstreams": [
										{
											"dial": "127.0.0.1:9000"
										}
									]
								}
							]
						}
					]
				}
			}
		}
	}
}`)
}
