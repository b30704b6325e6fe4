package tenant

import (
	"context"
	"testing"
)

func fixed(s Status, detail string) Check {
	return func(context.Context) CheckResult { return CheckResult{Status: s, Detail: detail} }
}

func TestHealthNamesChecksAfterWhatTheyPointAt(t *testing.T) {
	one := new(Registry)
	one.RegisterDependency("postgres", "db:5432/keys", fixed(StatusOK, ""))
	one.RegisterDependency("redis", "127.0.0.1:6379", fixed(StatusDegraded, "local fallback"))
	r := one.CheckHealth(context.Background())
	if len(r.Checks) != 2 || r.Checks["postgres"].Status != StatusOK || r.Checks["redis"].Status != StatusDegraded {
		t.Errorf("one database, one Redis: %+v; want checks postgres and redis", r.Checks)
	}
	if r.Status != StatusDegraded {
		t.Errorf("overall %s, want the worst: degraded", r.Status)
	}

	two := new(Registry)
	two.RegisterDependency("postgres", "a:5432/keys", fixed(StatusOK, ""))
	two.RegisterDependency("postgres", "b:5432/keys", fixed(StatusDown, "unreachable"))
	two.RegisterDependency("postgres", "a:5432/keys", fixed(StatusOK, "")) // a second handler on a
	r = two.CheckHealth(context.Background())
	if len(r.Checks) != 2 || r.Checks["postgres:a:5432/keys"].Status != StatusOK || r.Checks["postgres:b:5432/keys"].Status != StatusDown {
		t.Errorf("two databases: %+v; want one check each, named after them", r.Checks)
	}
	if r.Status != StatusDown {
		t.Errorf("overall %s, want down", r.Status)
	}
}

func TestHealthSharedTargetReportsTheWorse(t *testing.T) {
	a := new(Registry)
	a.RegisterDependency("postgres", "db:5432/keys", fixed(StatusDegraded, "static keys are served"))
	a.RegisterDependency("postgres", "db:5432/keys", fixed(StatusDown, "no static keys"))
	a.RegisterDependency("postgres", "db:5432/keys", fixed(StatusOK, ""))
	if got := a.CheckHealth(context.Background()).Checks["postgres"]; got.Status != StatusDown || got.Detail != "no static keys" {
		t.Errorf("two handlers on one database = %+v, want the worse (down)", got)
	}
}
