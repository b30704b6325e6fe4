package usagestore

import "testing"

func TestHistogramPercentiles(t *testing.T) {
	var h histogram
	if h.Percentile(0.5) != 0 {
		t.Fatal("empty histogram")
	}
	for i := 0; i < 90; i++ {
		h.Observe(120) // bucket [100, 150)
	}
	for i := 0; i < 10; i++ {
		h.Observe(40_000) // bucket [30000, 50000)
	}
	if p := h.Percentile(0.5); p < 100 || p > 150 {
		t.Errorf("p50 = %d, want within [100, 150]", p)
	}
	if p := h.Percentile(0.95); p < 30_000 || p > 50_000 {
		t.Errorf("p95 = %d, want within [30000, 50000]", p)
	}
	var big histogram
	big.Observe(99_000_000)
	if p := big.Percentile(0.99); p != 10_000_000 {
		t.Errorf("open bucket p99 = %d, want its lower bound 10000000", p)
	}
	var m histogram
	m.Merge(&h)
	m.Merge(&big)
	if m.Total() != 101 {
		t.Errorf("merged total %d", m.Total())
	}
}
