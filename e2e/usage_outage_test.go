package e2e

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/internal/usagetest"
)

// The broker stops mid-load and comes back later: no request fails
// because of it, the spool grows and drains, and the store ends with
// exactly the N authenticated responses the client saw. During the
// outage the gateway is also killed with SIGKILL and restarted on the same
// spool: still exactly N.
func TestUsageBrokerOutageAndGatewayKill(t *testing.T) {
	kafkaDir, spoolDir := t.TempDir(), t.TempDir()
	port := usagetest.FreePort(t)
	cluster, brokers := usagetest.KafkaOnPort(t, port, usageTopic, 2, kfake.DataDir(kafkaDir))
	org := usagetest.UniqueOrg("org_outage_")
	key := "sk_test_" + strings.Repeat("o", 32)
	env := []string{"KAFKA_BROKERS=" + brokers, "USAGE_SPOOL_DIR=" + spoolDir, "TEST_KEY=" + key, "TEST_ORG=" + org,
		"PER_MINUTE=100000000", "CLOSED_PORT=" + freePort(t)}
	g := startProcess(t, usageKafkaCaddyfile, env...)

	c := newUsageClient(g.URL, key)
	var latencies []time.Duration
	var lmu sync.Mutex
	load := func(n int) {
		for range n {
			start := time.Now()
			c.get("/api/x")
			lmu.Lock()
			latencies = append(latencies, time.Since(start))
			lmu.Unlock()
		}
	}
	load(200)

	cluster.Close() // the broker goes away mid-load
	load(300)
	testenv.WaitFor(t, 20*time.Second, "the spool to grow while the broker is down", func() bool {
		return adminMetric(t, g, "tenantgate_usage_spool_bytes") > 0
	})
	if st := readyStatus(t, g); st != "degraded" {
		t.Errorf("/health/ready usage = %q while spooling, want degraded", st)
	}

	// SIGKILL during the outage, once every event handed off so far has
	// reached the spool (what a SIGKILL can take is the buffer: events of
	// the last few milliseconds); the restarted gateway finds the spool.
	testenv.WaitFor(t, 20*time.Second, "every emitted event to be spooled or delivered", func() bool {
		emitted := adminMetric(t, g, "tenantgate_usage_events_emitted_total")
		return emitted == float64(c.answered()) &&
			adminMetric(t, g, "tenantgate_usage_events_spooled_total")+adminMetric(t, g, `tenantgate_usage_events_delivered_total{sink="kafka"}`) >= emitted
	})
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	g.Stop()
	g = startProcess(t, usageKafkaCaddyfile, env...)
	c.url = g.URL
	load(200)

	_, _ = usagetest.KafkaOnPort(t, port, usageTopic, 2, kfake.DataDir(kafkaDir)) // the broker is back
	testenv.WaitFor(t, 90*time.Second, "the spool to drain", func() bool {
		return adminMetric(t, g, "tenantgate_usage_spool_bytes") == 0 && adminMetric(t, g, "tenantgate_usage_events_replayed_total") > 0
	})
	if c.failures != 0 || c.statuses[200] != 700 {
		t.Fatalf("client saw %v and %d failures, want 700 × 200", c.statuses, c.failures)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	t.Logf("request latency during the test: p50 %s, p99 %s, max %s (broker down for part of it)",
		latencies[len(latencies)/2], latencies[len(latencies)*99/100], latencies[len(latencies)-1])

	dsn, store := usageDB(t)
	startIngest(t, brokers, dsn, "e2e-outage")
	waitForEvents(t, store, org, 700, 90*time.Second)
	reconcileExactly(t, store, org, 700)
}

// readyStatus is the usage check's status on /health/ready.
func readyStatus(t *testing.T, g *gatewayProcess) string {
	t.Helper()
	resp, err := http.Get(g.URL + "/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Checks map[string]struct{ Status string } `json:"checks"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Checks["usage"].Status
}
