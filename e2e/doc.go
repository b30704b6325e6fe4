// Package e2e holds Tenantgate's end-to-end tests: a real Caddy runs in
// process (caddytest, admin on localhost:2999) with real Caddyfiles. caddytest
// keeps one Caddy per test binary with its admin on that fixed port, so every
// caddytest-based test lives in this one package; every other port a test
// uses is chosen free when it starts (newTestPorts, freePort).
package e2e
