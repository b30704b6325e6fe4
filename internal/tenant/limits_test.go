package tenant

import (
	"context"
	"testing"
)

type fakePeeker struct{ name string }

func (fakePeeker) PlanNames() []string { return nil }
func (fakePeeker) PeekLimits(context.Context, *Identity) (LimitState, error) {
	return LimitState{}, nil
}

func TestRegistryLimiterIsTheFirstRegistered(t *testing.T) {
	r := new(Registry)
	if r.Limiter() != nil {
		t.Fatal("an empty registry has a limiter")
	}
	r.RegisterLimiter(fakePeeker{"first"})
	r.RegisterLimiter(fakePeeker{"second"})
	if got := r.Limiter().(fakePeeker).name; got != "first" {
		t.Errorf("Limiter() = %s, want the first registered", got)
	}
}
