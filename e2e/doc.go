// Package e2e holds Tenantgate's end-to-end tests: a real Caddy runs in
// process (caddytest, admin on localhost:2999) with real Caddyfiles. caddytest
// keeps one Caddy per test binary on fixed ports, so every caddytest-based
// test lives in this one package.
package e2e
