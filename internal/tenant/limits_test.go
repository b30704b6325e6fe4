package tenant

import (
	"context"
	"errors"
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

func TestLimitersFromContextWithoutConfig(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	if _, err := LimitersFromContext(ctx); !errors.Is(err, ErrNoConfig) {
		t.Errorf("err = %v, want ErrNoConfig", err)
	}
}
