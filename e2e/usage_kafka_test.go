package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tenantgate/tenantgate/internal/testenv"
	"github.com/tenantgate/tenantgate/internal/usagetest"
)

// A gateway with the Kafka sink on a broker on 127.0.0.1: N authenticated
// requests (200s, 429s and backend 502s) become exactly N records that an
// independent Kafka client (kcat) reads: keyed by organization, CloudEvents
// 1.0 JSON with every field, distinct UUIDv7 ids, no API key anywhere. The
// consumer then stores exactly N.
func TestUsageKafkaRecordsReadByKcat(t *testing.T) {
	_, brokers := usagetest.Kafka(t, usageTopic, 3)
	org := usagetest.UniqueOrg("org_kafka_")
	key := "sk_test_" + strings.Repeat("k", 32)
	g := startProcess(t, usageKafkaCaddyfile, "KAFKA_BROKERS="+brokers, "USAGE_SPOOL_DIR="+t.TempDir(),
		"TEST_KEY="+key, "TEST_ORG="+org, "PER_MINUTE=20", "CLOSED_PORT="+freePort(t))
	c := newUsageClient(g.URL, key)
	for i := range 60 {
		if i%3 == 0 {
			c.get("/down/x")
		} else {
			c.get("/api/x")
		}
	}
	if c.statuses[200] == 0 || c.statuses[429] == 0 || c.statuses[502] == 0 || c.answered() != 60 {
		t.Fatalf("statuses %v: want a mix of 200, 429 and 502 over 60 answers", c.statuses)
	}

	kcat, err := exec.LookPath("kcat")
	if err != nil {
		kcat, err = exec.LookPath("kafkacat")
	}
	if err != nil {
		if testenv.InCI() {
			t.Fatal("kcat is not installed under CI=true (.ci/run installs it)")
		}
		t.Log("kcat is not installed: reading the topic with it is skipped (apt-get install kcat)")
	} else {
		lines := readWithKcat(t, kcat, brokers, 60)
		checkKafkaRecords(t, lines, org, key, c.statuses)
	}

	dsn, store := usageDB(t)
	ingest := startIngest(t, brokers, dsn, "e2e-kcat")
	waitForEvents(t, store, org, 60, 60*time.Second)
	reconcileExactly(t, store, org, 60)
	if err := ingest.kill(syscall.SIGTERM); err != nil {
		t.Fatalf("the consumer did not stop cleanly on SIGTERM: %v", err)
	}
}

// readWithKcat consumes the whole topic with kcat: "key<TAB>value" lines.
func readWithKcat(t *testing.T, kcat, brokers string, want int) []string {
	t.Helper()
	cmd := exec.Command(kcat, "-C", "-b", brokers, "-t", usageTopic, "-o", "beginning", "-e", "-q", "-f", "%k\t%s\n")
	cmd.Stderr = os.Stderr
	var lines []string
	for attempt := 0; attempt < 20; attempt++ {
		out, err := exec.Command(cmd.Path, cmd.Args[1:]...).Output()
		if err != nil {
			t.Fatalf("kcat: %v", err)
		}
		lines = strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) >= want {
			break
		}
		_ = exec.Command("sleep", "0.5").Run()
	}
	if len(lines) != want {
		t.Fatalf("kcat read %d records, want exactly %d", len(lines), want)
	}
	return lines
}

func checkKafkaRecords(t *testing.T, lines []string, org, apiKey string, statuses map[int]int) {
	t.Helper()
	ids := map[string]bool{}
	seen := map[float64]int{}
	for _, line := range lines {
		k, v, ok := strings.Cut(line, "\t")
		if !ok || k != org {
			t.Fatalf("record key %q, want the organization %q", k, org)
		}
		if strings.Contains(v, apiKey) || strings.Contains(v, "sk_test_") {
			t.Fatalf("the API key is in a record: %s", v)
		}
		var ce struct {
			SpecVersion, ID, Type, Source, Subject, Time, DataContentType string
			Data                                                          map[string]any
		}
		if err := json.Unmarshal([]byte(v), &ce); err != nil {
			t.Fatalf("record is not JSON: %v: %s", err, v)
		}
		id, err := uuid.Parse(ce.ID)
		if ce.SpecVersion != "1.0" || ce.Type != "tenantgate.request.v1" || ce.Source != "tenantgate://e2e-node" ||
			ce.Subject != org || ce.DataContentType != "application/json" || err != nil || id.Version() != 7 {
			t.Fatalf("CloudEvents attributes: %s", v)
		}
		if ids[ce.ID] {
			t.Fatalf("id %s twice", ce.ID)
		}
		ids[ce.ID] = true
		for _, f := range []string{"org_id", "key_id", "plan", "service", "method", "status", "outcome", "bytes_in", "bytes_out",
			"duration_us", "request_id", "ratelimit_source"} {
			if _, ok := ce.Data[f]; !ok {
				t.Fatalf("data.%s missing: %s", f, v)
			}
		}
		if !strings.Contains(ce.Time, ".") {
			t.Fatalf("time %q has no sub-second precision", ce.Time)
		}
		seen[ce.Data["status"].(float64)]++
		outcome := ce.Data["outcome"]
		switch ce.Data["status"].(float64) {
		case 429:
			if outcome != "rate_limited_minute" {
				t.Fatalf("429 with outcome %v", outcome)
			}
		case 502:
			if outcome != "backend_error" {
				t.Fatalf("502 with outcome %v", outcome)
			}
		}
	}
	for status, n := range statuses {
		if seen[float64(status)] != n {
			t.Fatalf("records by status %v, the client saw %v", seen, statuses)
		}
	}
}

// Freshness: from the end of a request to its event in the rollups, with
// the Kafka sink and a running consumer. Logged (a measurement, not an
// assertion); each event must arrive.
func TestUsageFreshnessThroughKafka(t *testing.T) {
	_, brokers := usagetest.Kafka(t, usageTopic, 2)
	org := usagetest.UniqueOrg("org_fresh_")
	key := "sk_test_" + strings.Repeat("f", 32)
	g := startProcess(t, usageKafkaCaddyfile, "KAFKA_BROKERS="+brokers, "USAGE_SPOOL_DIR="+t.TempDir(),
		"TEST_KEY="+key, "TEST_ORG="+org, "PER_MINUTE=100000", "CLOSED_PORT="+freePort(t))
	dsn, store := usageDB(t)
	startIngest(t, brokers, dsn, "e2e-fresh")
	c := newUsageClient(g.URL, key)
	c.get("/api/warmup")
	waitForEvents(t, store, org, 1, 60*time.Second)

	var lags []time.Duration
	for i := 2; i <= 11; i++ {
		c.get("/api/x")
		end := time.Now()
		for {
			var n int64
			if err := store.Pool().QueryRow(context.Background(),
				`SELECT coalesce(sum(requests), 0)::bigint FROM usage_rollup_minute WHERE org_id = $1`, org).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n >= int64(i) {
				lags = append(lags, time.Since(end))
				break
			}
			if time.Since(end) > 60*time.Second {
				t.Fatalf("request %d not in the rollups after 60 s", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	t.Logf("freshness (request end → minute rollup), 10 requests: median %s, max %s", lags[len(lags)/2], lags[len(lags)-1])
}
