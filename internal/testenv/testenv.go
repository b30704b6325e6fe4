// Package testenv gives tests the real PostgreSQL and Redis they need,
// named by TEST_DATABASE_URL and TEST_REDIS_ADDR, and keeps parallel runs
// apart: each test gets its own database (FreshDatabase, MigratedDatabase)
// and unique names for schemas and Redis key prefixes (UniqueName). Without
// the variables a test skips with a message; under CI=true a missing or
// unreachable service is a failure, not a skip.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantgate/tenantgate/migrations"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Tool returns the path of the first of names found on PATH; with none the
// test skips, or fails under CI=true (.ci/run installs what the tests use).
func Tool(t testing.TB, names ...string) string {
	t.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	unavailable(t, "%s is not installed", strings.Join(names, " or "))
	return ""
}

// Unavailable skips the test for want of a service or tool, or fails it
// under CI=true.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	unavailable(t, format, args...)
}

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// RedisAddr returns TEST_REDIS_ADDR after checking that it accepts TCP.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("TEST_REDIS_ADDR")
	if addr == "" {
		unavailable(t, "TEST_REDIS_ADDR is not set: skipping a test that needs a real Redis")
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		unavailable(t, "Redis at TEST_REDIS_ADDR=%s is unreachable: %v", addr, err)
	}
	_ = c.Close()
	return addr
}

// PostgresURL returns TEST_DATABASE_URL after checking that it answers.
func PostgresURL(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("TEST_DATABASE_URL")
	if dsn == "" {
		unavailable(t, "TEST_DATABASE_URL is not set: skipping a test that needs a real PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		unavailable(t, "PostgreSQL at TEST_DATABASE_URL is unreachable: %v", err)
	}
	_ = conn.Close(ctx)
	return dsn
}

// UniqueName returns prefix plus random hex, for per-test databases,
// schemas and Redis key prefixes, so runs never collide.
func UniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// FreshDatabase creates an empty database for this test on the server of
// TEST_DATABASE_URL, drops it when the test ends, and returns its URL.
func FreshDatabase(t testing.TB) string {
	t.Helper()
	base := PostgresURL(t)
	name := UniqueName("tg_test_")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connecting to TEST_DATABASE_URL: %v", err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating test database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("dropping test database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("dropping test database %s: %v", name, err)
		}
	})
	return WithDatabase(t, base, name)
}

// WithDatabase returns dsn pointing at database name instead.
func WithDatabase(t testing.TB, dsn, name string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("TEST_DATABASE_URL must be a postgres:// URL, got %q", dsn)
	}
	u.Path = "/" + strings.TrimPrefix(name, "/")
	return u.String()
}

// MigratedDatabase is FreshDatabase with the Tenantgate schema applied.
func MigratedDatabase(t testing.TB) string {
	t.Helper()
	dsn := FreshDatabase(t)
	Migrate(t, dsn)
	return dsn
}

// Migrate applies the Tenantgate migrations to the database of dsn, as
// `caddy tenant migrate` does.
func Migrate(t testing.TB, dsn string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parsing the database URL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := migrations.Up(ctx, cfg); err != nil {
		t.Fatalf("migrating: %v", err)
	}
}

// Connect opens a connection to dsn, closed when the test ends.
func Connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatalf("connecting to the test database: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// WaitFor polls cond until it holds, and fails the test when timeout
// passes first, saying it gave up waiting for what. The timeout bounds
// whether something happens at all; it is never a speed measurement.
// Polls start 10 ms apart and slow down to 100 ms, so a quick condition is
// seen quickly and a slow one (an HTTP call, a query) does not load the
// machine.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := 10 * time.Millisecond
	for !cond() {
		left := time.Until(deadline)
		if left < 0 {
			t.Fatalf("gave up after %s waiting for %s", timeout, what)
		}
		time.Sleep(min(pause, left+time.Millisecond)) // the last look is at the deadline
		pause = min(2*pause, 100*time.Millisecond)
	}
}
