package tenant

import (
	"context"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

type fakePeeker struct{ name string }

func (fakePeeker) PlanNames() []string { return nil }
func (fakePeeker) PeekLimits(context.Context, *Identity) (LimitState, error) {
	return LimitState{}, nil
}

func TestLimiterRegistry(t *testing.T) {
	r := new(LimiterRegistry)
	if r.Limiter() != nil {
		t.Fatal("an empty registry has a limiter")
	}
	r.Register(fakePeeker{"first"})
	r.Register(fakePeeker{"second"})
	if got := r.Limiter().(fakePeeker).name; got != "first" {
		t.Errorf("Limiter() = %s, want the first registered", got)
	}
}

func TestLimitersFromContextIsPerConfig(t *testing.T) {
	one, err := caddy.ProvisionContext(nil)
	if err != nil {
		t.Fatal(err)
	}
	two, err := caddy.ProvisionContext(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := LimitersFromContext(one)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := LimitersFromContext(one)
	b, _ := LimitersFromContext(two)
	if a != again || a == b {
		t.Errorf("registries: one %p, one again %p, two %p: want one per config", a, again, b)
	}
}
