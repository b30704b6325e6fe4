package usagestore_test

import (
	"context"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/usagetest"
	"github.com/tenantgate/tenantgate/usagestore"
)

// BenchmarkIngest is one 5000-event batch per op into PostgreSQL (raw
// insert, three rollup upserts, one transaction); events/s is reported.
func BenchmarkIngest(b *testing.B) {
	s, _ := usagetest.FreshStore(b, usagestore.Options{})
	org := usagetest.UniqueOrg("org_bench_")
	batches := make([][]usagestore.Event, b.N)
	for i := range batches {
		batches[i] = usagetest.Events(5000, org, time.Now().Add(-time.Minute), time.Minute)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := s.Ingest(context.Background(), usagestore.Batch{Events: batches[i]}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(5000*b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkParseCloudEvent is the consumer's per-record decoding.
func BenchmarkParseCloudEvent(b *testing.B) {
	raw := usagetest.Events(1, "org_bench", time.Now(), 0)[0].AppendCloudEvent(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := usagestore.ParseCloudEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}
