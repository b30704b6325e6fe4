package sharedmetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type counterSet struct{ c prometheus.Counter }

func (s *counterSet) Collectors() []prometheus.Collector { return []prometheus.Collector{s.c} }

func newCounterSet() *counterSet {
	return &counterSet{prometheus.NewCounter(prometheus.CounterOpts{Name: "test_requests_total", Help: "test"})}
}

// TestASetOutlivesAConfig: a second config (a reload) gets the same
// collectors, registered in its own registry, and the count goes on; the
// set is made anew only once no config holds it.
func TestASetOutlivesAConfig(t *testing.T) {
	const name = "test_outlives"
	first, err := Acquire(name, prometheus.NewRegistry(), newCounterSet)
	if err != nil {
		t.Fatal(err)
	}
	first.c.Add(3)
	reg := prometheus.NewRegistry()
	second, err := Acquire(name, reg, newCounterSet)
	if err != nil {
		t.Fatal(err)
	}
	if err := Release(name); err != nil { // the old config goes away
		t.Fatal(err)
	}
	if second != first {
		t.Fatal("the reloaded config got new collectors")
	}
	second.c.Inc()
	if n, err := testutil.GatherAndCount(reg, "test_requests_total"); err != nil || n != 1 {
		t.Fatalf("the new registry has %d series (%v), want the shared counter", n, err)
	}
	if got := testutil.ToFloat64(second.c); got != 4 {
		t.Errorf("count %v after the reload, want 4", got)
	}
	if err := Release(name); err != nil {
		t.Fatal(err)
	}
	if n := References(name); n != 0 {
		t.Errorf("%d references after the last release", n)
	}
	third, err := Acquire(name, nil, newCounterSet)
	if err != nil {
		t.Fatal(err)
	}
	defer Release(name)
	if third == first {
		t.Error("a set no config held was kept")
	}
}

func TestRegisterTwiceInOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newCounterSet()
	if err := Register(reg, s.Collectors()...); err != nil {
		t.Fatal(err)
	}
	if err := Register(reg, s.Collectors()...); err != nil {
		t.Errorf("registering the same collector again (a second handler): %v", err)
	}
	if err := Register(reg, newCounterSet().Collectors()...); err == nil {
		t.Error("another collector under the same name was accepted")
	}
}

// TestAcquireFailsWithoutKeepingAUse: when registering fails, the use is
// released, so a config that fails to provision holds nothing.
func TestAcquireFailsWithoutKeepingAUse(t *testing.T) {
	const name = "test_failed_register"
	reg := prometheus.NewRegistry()
	if err := Register(reg, newCounterSet().Collectors()...); err != nil { // a clash
		t.Fatal(err)
	}
	if _, err := Acquire(name, reg, newCounterSet); err == nil {
		t.Fatal("Acquire registered a clashing collector")
	}
	if n := References(name); n != 0 {
		t.Errorf("%d references after a failed Acquire", n)
	}
}
