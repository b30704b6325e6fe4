package keystore

import (
	"context"
	"fmt"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantgate/tenantgate/internal/sharedmetrics"
	"github.com/tenantgate/tenantgate/internal/tenant"
)

// stores shares key stores (pool, caches, listener) between Caddy configs,
// keyed by database URL, so that `caddy reload` keeps the warm cache and
// opens no new connections. A store is destroyed when the last config that
// uses it releases it.
var stores = caddy.NewUsagePool()

// Config is how one Caddy config uses the store of a database.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string (URL or key=value
	// form). Configs with the same one share a store.
	DatabaseURL string
	// Settings are this config's cache settings. A config that creates
	// the store starts it with them; otherwise they apply when the config
	// is activated (Handle.Activate), so a config that is provisioned and
	// then dropped never changes the running one's.
	Settings Settings
	// StaticKeys tells the health check that the handler also serves keys
	// that need no database: without PostgreSQL it is degraded, not down.
	StaticKeys bool
	// Metrics is the config's metrics registry; the store's collectors,
	// shared by every config, are registered in it. Nil: none.
	Metrics prometheus.Registerer
}

// Handle is one config's use of a shared store. It implements the lookup
// tenant_auth needs and the config's health check.
type Handle struct {
	store      *Store
	dsn        string
	settings   Settings // defaults filled in
	staticKeys bool
	// activated orders the handles by activation (0: not activated);
	// guarded by the store's claims lock.
	activated uint64
	released  bool
}

// claims are the handles of the configs using a store. The settings of the
// handle activated last among those not released are in force.
type claims struct {
	mu          sync.Mutex
	handles     []*Handle
	activations uint64
}

// Acquire returns a handle on the shared store for cfg.DatabaseURL,
// creating the store if no config uses it yet. Release it when the config
// is cleaned up.
func Acquire(cfg Config) (*Handle, error) {
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("no database URL")
	}
	if err := cfg.Settings.Validate(); err != nil {
		return nil, err
	}
	val, _, err := stores.LoadOrNew(cfg.DatabaseURL, func() (caddy.Destructor, error) {
		return newStore(cfg.DatabaseURL, cfg.Settings, options{})
	})
	if err != nil {
		return nil, err
	}
	s := val.(*Store)
	h := &Handle{store: s, dsn: cfg.DatabaseURL, settings: cfg.Settings.withDefaults(), staticKeys: cfg.StaticKeys}
	if cfg.Metrics != nil {
		if err := sharedmetrics.Register(cfg.Metrics, s.metrics.Collectors()...); err != nil {
			_, _ = stores.Delete(cfg.DatabaseURL)
			return nil, fmt.Errorf("key store: %w", err)
		}
	}
	s.claims.mu.Lock()
	s.claims.handles = append(s.claims.handles, h)
	s.claims.mu.Unlock()
	return h, nil
}

// Activate puts the handle's settings in force: call it once the config
// is committed (started). The last config activated wins.
func (h *Handle) Activate() {
	c := &h.store.claims
	c.mu.Lock()
	defer c.mu.Unlock()
	if h.released {
		return
	}
	c.activations++
	h.activated = c.activations
	h.store.applyClaimsLocked()
}

// Release ends the config's use of the store; the last release destroys
// it. Settings go back to those of the latest activated config still
// using the store. Releasing twice does nothing.
func (h *Handle) Release() error {
	c := &h.store.claims
	c.mu.Lock()
	if h.released {
		c.mu.Unlock()
		return nil
	}
	h.released = true
	for i, other := range c.handles {
		if other == h {
			c.handles = append(c.handles[:i], c.handles[i+1:]...)
			break
		}
	}
	if h.activated != 0 {
		h.store.applyClaimsLocked()
	}
	c.mu.Unlock()
	_, err := stores.Delete(h.dsn)
	return err
}

// applyClaimsLocked applies the settings of the latest activated handle;
// with none activated, the settings stay as they are.
func (s *Store) applyClaimsLocked() {
	var latest *Handle
	for _, h := range s.claims.handles {
		if h.activated != 0 && (latest == nil || h.activated > latest.activated) {
			latest = h
		}
	}
	if latest != nil {
		s.configure(latest.settings)
	}
}

// Lookup resolves a key hash (see Store.Lookup).
func (h *Handle) Lookup(ctx context.Context, kh KeyHash) (*tenant.Identity, error) {
	return h.store.Lookup(ctx, kh)
}

// Store is the shared store behind the handle.
func (h *Handle) Store() *Store { return h.store }

// Target is the database the store reads, as host:port/database.
func (h *Handle) Target() string { return h.store.target }
