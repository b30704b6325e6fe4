package tenant

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestRegistryFromContextIsPerConfig(t *testing.T) {
	one, err := caddy.ProvisionContext(nil)
	if err != nil {
		t.Fatal(err)
	}
	two, err := caddy.ProvisionContext(nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := RegistryFromContext(one)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := RegistryFromContext(one)
	b, _ := RegistryFromContext(two)
	if a != again || a == b {
		t.Errorf("registries: one %p, one again %p, two %p: want one per config", a, again, b)
	}
}

func TestRegistryStartRunsTheOnStartFunctionsInOrder(t *testing.T) {
	a := new(Registry)
	var ran []int
	a.OnStart(func() { ran = append(ran, 1) })
	a.OnStart(func() { ran = append(ran, 2) })
	if len(ran) != 0 {
		t.Fatal("OnStart functions ran before Start")
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	if len(ran) != 2 || ran[0] != 1 || ran[1] != 2 {
		t.Errorf("ran %v, want [1 2]", ran)
	}
}
