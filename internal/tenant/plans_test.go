package tenant

import (
	"slices"
	"strings"
	"testing"
)

func TestBuiltinPlans(t *testing.T) {
	if got := BuiltinPlanNames(); !slices.Equal(got, []string{"basic", "premium", "enterprise"}) {
		t.Fatalf("BuiltinPlanNames() = %v", got)
	}
	plans := BuiltinPlans()
	plans[0].PerMinute = 1 // a copy: the list itself cannot be changed
	if BuiltinPlans()[0].PerMinute != 100 {
		t.Fatal("BuiltinPlans returned the list itself, not a copy")
	}
}

func TestParsePlanNames(t *testing.T) {
	got, err := ParsePlanNames(" gold, ,silver,gold ,")
	if err != nil || !slices.Equal(got, []string{"gold", "silver"}) {
		t.Fatalf("ParsePlanNames = %v, %v; want [gold silver]", got, err)
	}
	if got, err := ParsePlanNames(""); err != nil || got != nil {
		t.Fatalf("empty list: %v, %v", got, err)
	}
	for _, bad := range []string{"gold plan", "g/old", strings.Repeat("x", 65)} {
		if _, err := ParsePlanNames("basic," + bad); err == nil {
			t.Errorf("%q accepted as a plan name", bad)
		}
	}
}

func TestRegistryKeepsTheLatestPlanRequirement(t *testing.T) {
	var a Registry
	if src, plans := a.RequiredPlans(); src != "" || plans != nil {
		t.Fatalf("empty registry: %q %v", src, plans)
	}
	a.RequirePlans("first", "gold", "basic", "gold")
	if src, plans := a.RequiredPlans(); src != "first" || !slices.Equal(plans, []string{"gold", "basic"}) {
		t.Fatalf("Required() = %q %v, want first [gold basic]", src, plans)
	}
	a.RequirePlans("second")
	if src, plans := a.RequiredPlans(); src != "second" || len(plans) != 0 {
		t.Fatalf("after a second call without plans: %q %v, want second and none", src, plans)
	}
}

func TestPlansOf(t *testing.T) {
	ids := map[int]*Identity{
		1: NewIdentity("a", "gold", "k1", LimitOverrides{}),
		2: NewIdentity("b", "basic", "k2", LimitOverrides{}),
		3: NewIdentity("c", "gold", "k3", LimitOverrides{}),
	}
	if got := PlansOf(ids); !slices.Equal(got, []string{"basic", "gold"}) {
		t.Fatalf("PlansOf = %v, want [basic gold]", got)
	}
}
