// Package sharedmetrics keeps each module's Prometheus collectors for the
// life of the process, so that counters keep counting across `caddy
// reload`: Caddy gives every config a registry of its own, and a module
// that made new collectors for each config would start them from zero.
//
// A module acquires its set of collectors by name when a config is
// provisioned (the first config makes it), registers them in that
// config's registry, and releases the set when the config is cleaned up;
// the set lives while any config holds it, in a caddy.UsagePool.
package sharedmetrics

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Set is a module's group of collectors, shared under one name.
type Set interface {
	Collectors() []prometheus.Collector
}

// sets holds the sets in use, by name.
var sets = caddy.NewUsagePool()

// entry holds a set in the pool; collectors need no destruction.
type entry struct{ set Set }

// Destruct implements caddy.Destructor.
func (entry) Destruct() error { return nil }

// Interface guard
var _ caddy.Destructor = entry{}

// Acquire returns the set named name, made by newSet when no config holds
// it, with its collectors registered in reg (nil: none; see Register).
// Every Acquire that succeeds is matched by one Release of the same name.
func Acquire[S Set](name string, reg prometheus.Registerer, newSet func() S) (S, error) {
	var zero S
	v, _, err := sets.LoadOrNew(name, func() (caddy.Destructor, error) { return entry{newSet()}, nil })
	if err != nil {
		return zero, fmt.Errorf("sharing the %s metrics: %w", name, err)
	}
	s, ok := v.(entry).set.(S)
	if !ok {
		_, _ = sets.Delete(name)
		return zero, fmt.Errorf("sharing the %s metrics: the name is taken by a %T", name, v.(entry).set)
	}
	if reg != nil {
		if err := Register(reg, s.Collectors()...); err != nil {
			_, _ = sets.Delete(name)
			return zero, err
		}
	}
	return s, nil
}

// Release ends one use of the set named name.
func Release(name string) error {
	if _, err := sets.Delete(name); err != nil {
		return fmt.Errorf("releasing the %s metrics: %w", name, err)
	}
	return nil
}

// Register adds collectors to a config's registry. A collector that is
// already registered there (a second handler in the same config) is not
// an error; another collector with the same name is.
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) && are.ExistingCollector == c {
				continue
			}
			return fmt.Errorf("registering metrics: %w", err)
		}
	}
	return nil
}

// References reports how many uses of the set named name are not
// released yet (0 when none holds it): a module's tests check with it
// that cleaning up releases everything.
func References(name string) int {
	n, _ := sets.References(name)
	return n
}
