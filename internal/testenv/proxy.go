package testenv

import (
	"net"
	"net/url"
	"testing"

	"github.com/tenantgate/tenantgate/internal/faultproxy"
)

// PostgresProxy starts a fault proxy in front of the server of dsn (a
// postgres:// URL) and returns it with the URL that goes through it. The
// proxy is closed when the test ends.
func PostgresProxy(t testing.TB, dsn string) (*faultproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parsing the database URL: %v", err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatalf("starting the fault proxy: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	u.Host = p.Addr()
	return p, u.String()
}
