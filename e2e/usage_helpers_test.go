package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/usagestore"
)

// usageTopic is the topic of the usage e2e tests.
const usageTopic = "tenantgate.usage.v1"

// usageKafkaCaddyfile runs tenant_usage with the Kafka sink on
// KAFKA_BROKERS and the spool in USAGE_SPOOL_DIR, in front of tenant_auth
// (TEST_KEY of TEST_ORG, plan tiny: PER_MINUTE a minute, no burst) and
// tenant_ratelimit; /api/* answers 200, /down/* proxies to a closed port
// (502).
const usageKafkaCaddyfile = `{
	admin {$ADMIN_ADDR}
	tenant_usage {
		node_id e2e-node
		spool_dir {$USAGE_SPOOL_DIR}
		kafka {
			brokers {$KAFKA_BROKERS}
			topic ` + usageTopic + `
			delivery_timeout 1s
		}
	}
}
:{$GATEWAY_PORT} {
	handle /health* {
		tenant_health
	}
	route {
		tenant_usage
		tenant_auth {
			key {$TEST_KEY} {$TEST_ORG} tiny
		}
		tenant_ratelimit {
			plan tiny {$PER_MINUTE} 100000000 burst 0
		}
		handle /api/* {
			respond "ok" 200
		}
		handle /down/* {
			reverse_proxy 127.0.0.1:{$CLOSED_PORT}
		}
	}
}
`

// usageClient sends authenticated requests and keeps what it saw.
type usageClient struct {
	url, key string
	client   *http.Client

	mu       sync.Mutex
	statuses map[int]int
	failures int
	slowest  time.Duration
}

func newUsageClient(url, key string) *usageClient {
	return &usageClient{url: url, key: key, client: &http.Client{Timeout: 10 * time.Second}, statuses: map[int]int{}}
}

// get sends one request; a transport error is counted as a failure.
func (c *usageClient) get(path string) int {
	req, _ := http.NewRequest(http.MethodGet, c.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.key)
	start := time.Now()
	resp, err := c.client.Do(req)
	elapsed := time.Since(start)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.slowest = max(c.slowest, elapsed)
	if err != nil {
		c.failures++
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.statuses[resp.StatusCode]++
	return resp.StatusCode
}

// answered is the number of responses the client got (each authenticated
// request must become exactly one event).
func (c *usageClient) answered() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for _, k := range c.statuses {
		n += int64(k)
	}
	return n
}

// usageDB makes a fresh database migrated by the built binary.
func usageDB(t *testing.T) (string, *usagestore.Store) {
	t.Helper()
	dsn := testenv.FreshDatabase(t)
	out, err := exec.Command(gatewayBinary(t), "tenant", "migrate", "--database-url", dsn).CombinedOutput()
	if err != nil {
		t.Fatalf("caddy tenant migrate: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := usagestore.Open(ctx, dsn, usagestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return dsn, store
}

// ingestProcess is `caddy tenant usage ingest` running as a process.
type ingestProcess struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan error
}

func startIngest(t *testing.T, brokers, dsn, group string) *ingestProcess {
	t.Helper()
	p := &ingestProcess{logs: new(syncBuffer), done: make(chan error, 1)}
	p.cmd = exec.Command(gatewayBinary(t), "tenant", "usage", "ingest", "--brokers", brokers, "--topic", usageTopic,
		"--group", group, "--database-url", dsn, "--batch", "500", "--session-timeout", "6s")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("ingest output:\n%s", p.logs.String())
		}
	})
	return p
}

// kill signals the process and waits for it; it returns the exit error.
func (p *ingestProcess) kill(sig syscall.Signal) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		return err
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		return <-p.done
	}
}

// waitForEvents waits until the store holds want events of org.
func waitForEvents(t *testing.T, store *usagestore.Store, org string, want int64, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		r, err := store.Reconcile(context.Background(), org)
		if err == nil && r.Raw >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store holds %d events of %s after %s, want %d (err %v)", r.Raw, org, limit, want, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// reconcileExactly checks the store's invariants and that it holds exactly
// want events of org.
func reconcileExactly(t *testing.T, store *usagestore.Store, org string, want int64) {
	t.Helper()
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now
	r, err := store.Reconcile(context.Background(), org)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(want); err != nil {
		t.Fatal(err)
	}
}

// adminMetric reads one series from the gateway's admin /metrics.
func adminMetric(t *testing.T, g *gatewayProcess, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.AdminAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, series+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series)), 64)
			return v
		}
	}
	return 0
}

// withoutDatabaseEnv returns the environment minus the database URLs.
func withoutDatabaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "USAGE_DATABASE_URL=") || strings.HasPrefix(kv, "KAFKA_BROKERS=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
