package caddyauth

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Timeouts for talking to Postgres. A lookup that cannot finish in
// pgQueryTimeout is answered from the stale cache or with 503.
const (
	pgQueryTimeout   = 2 * time.Second
	pgConnectTimeout = 5 * time.Second
	// pgRetryPause: after a failed query, misses answer 503 at once for
	// this long instead of each waiting for Postgres to fail again.
	pgRetryPause = time.Second
)

// pgSettings are the tunables of a Postgres key store. They can change on
// reload without rebuilding the store.
type pgSettings struct {
	cacheTTL         time.Duration
	negativeCacheTTL time.Duration
	refreshInterval  time.Duration
	cacheSize        int
	negativeSize     int
}

// keyEntry is a cached usable key.
type keyEntry struct {
	rec       *cachedKey // identity and usage (usage.go)
	expiresAt int64      // key's expiry, Unix ns; 0: never
	fresh     int64      // cached copy is fresh until then, Unix ns
}

func (e keyEntry) deadline() int64 { return e.fresh }

// check refuses a cached key that has expired since it was cached.
func (e keyEntry) check(now int64) (*tenant.Identity, error) {
	if e.expiresAt != 0 && now >= e.expiresAt {
		return nil, ErrExpiredKey
	}
	return &e.rec.Identity, nil
}

// use is check, and records the use of an accepted key.
func (e keyEntry) use(now int64) (*tenant.Identity, error) {
	id, err := e.check(now)
	if err == nil {
		e.rec.touch(now / int64(time.Second))
	}
	return id, err
}

// rejection is a cached refusal: unknown, revoked, expired or disabled.
type rejection struct {
	err   error
	orgID string // "" for unknown keys
	until int64  // Unix ns
}

func (r rejection) deadline() int64 { return r.until }

// pgBackend is a Postgres key store: a pgx pool, a bounded cache of usable
// keys, a bounded cache of refusals, a LISTEN connection that invalidates
// changed keys, and a periodic refresh. One is shared by every config that
// uses the same database_url (see pgshare.go).
type pgBackend struct {
	pool      *pgxpool.Pool
	listenCfg *pgx.ConnConfig
	target    string // host/database, for logs (never the password)
	now       func() time.Time

	settings atomic.Pointer[pgSettings]
	keys     *shardedCache[keyEntry]
	rejects  *shardedCache[rejection]
	group    singleflight.Group
	state    pgState
	usage    usageLog

	// gens[shard] changes whenever a key in that shard is invalidated; a
	// query result is cached only if its shard's generation did not change
	// while the query ran, so a notification is never overtaken.
	gens [cacheShards]atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// pgOptions are for tests: an injected clock, a query tracer, and whether
// to start the background listener and refresh.
type pgOptions struct {
	now          func() time.Time
	tracer       pgx.QueryTracer
	noBackground bool
}

// newPGBackend builds the store and starts its background work. It does not
// wait for Postgres: with the database down it starts anyway, answers
// misses with 503 and keeps reconnecting.
func newPGBackend(dsn string, s pgSettings, opts pgOptions) (*pgBackend, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database_url: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = pgConnectTimeout
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "tenantgate"
	}
	if opts.tracer != nil {
		cfg.ConnConfig.Tracer = opts.tracer
	}
	b := &pgBackend{
		listenCfg: cfg.ConnConfig.Copy(),
		target:    fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database),
		now:       opts.now,
		keys:      newShardedCache[keyEntry](s.cacheSize),
		rejects:   newShardedCache[rejection](s.negativeSize),
	}
	b.listenCfg.Tracer = nil
	b.keys.replaced, b.keys.removed = b.keyReplaced, b.keyRemoved
	if b.now == nil {
		b.now = time.Now
	}
	b.configure(s)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.pool, err = pgxpool.NewWithConfig(b.ctx, cfg)
	if err != nil {
		b.cancel()
		return nil, fmt.Errorf("database_url: %w", err)
	}
	if !opts.noBackground {
		b.wg.Add(3)
		go b.listenLoop()
		go b.refreshLoop()
		go b.usageLoop()
	}
	return b, nil
}

// configure applies (new) settings: the last config provisioned wins.
func (b *pgBackend) configure(s pgSettings) {
	b.settings.Store(&s)
	b.keys.setSize(s.cacheSize)
	b.rejects.setSize(s.negativeSize)
}

// Destruct stops the background work, records the latest key usage and
// closes every connection. It is called by the usage pool when the last
// config using the store is gone.
func (b *pgBackend) Destruct() error {
	b.cancel()
	b.wg.Wait()
	b.finalFlush()
	b.pool.Close()
	return nil
}

func (b *pgBackend) logger() *zap.Logger {
	return caddy.Log().Named("http.handlers.tenant_auth.postgres").With(zap.String("database", b.target))
}

// pgKeys is one config's view of a shared store: it counts in that
// config's metrics registry.
type pgKeys struct {
	*pgBackend
	metrics *authMetrics
}

// Lookup implements KeyStore.
func (k pgKeys) Lookup(_ context.Context, h KeyHash) (*tenant.Identity, error) {
	return k.lookup(h, k.metrics)
}

// lookup is cache first, Postgres on a miss, the stale cache when Postgres
// fails. A cache hit takes one shard read lock and allocates nothing.
func (b *pgBackend) lookup(h KeyHash, m *authMetrics) (*tenant.Identity, error) {
	now := b.now().UnixNano()
	e, cached := b.keys.get(h)
	if cached && now < e.fresh {
		m.cacheHit.Inc()
		return e.use(now)
	}
	if r, ok := b.rejects.get(h); ok && now < r.until {
		m.cacheNegative.Inc()
		return nil, r.err
	}
	m.cacheMiss.Inc()
	if b.state.pausing(now) {
		return stale(e, cached, now, errPostgresDown, m)
	}
	v, err, _ := b.group.Do(string(h[:]), func() (any, error) { return b.fetch(h, m) })
	if err != nil {
		return stale(e, cached, now, err, m)
	}
	res := v.(verdict)
	if res.reject != nil {
		return nil, res.reject
	}
	return res.entry.check(now)
}

// stale answers from an outdated cache entry when Postgres cannot
// (stale-if-error), else fails with ErrStoreUnavailable (503, never 403).
func stale(e keyEntry, cached bool, now int64, cause error, m *authMetrics) (*tenant.Identity, error) {
	if cached {
		m.cacheStale.Inc()
		return e.use(now)
	}
	return nil, fmt.Errorf("%w: %w", ErrStoreUnavailable, cause)
}

// fetch reads one key from Postgres and caches the verdict. Concurrent
// misses for the same hash share one call (singleflight), which runs on
// the store's context so that one client giving up does not fail the rest.
func (b *pgBackend) fetch(h KeyHash, m *authMetrics) (verdict, error) {
	gen := b.gen(h)
	ctx, cancel := context.WithTimeout(b.ctx, pgQueryTimeout)
	defer cancel()
	start := time.Now()
	row, found, err := queryKey(ctx, b.pool, h)
	m.pgLookup.Observe(time.Since(start).Seconds())
	if err != nil {
		m.pgErrors.Inc()
		b.state.failure(b.now())
		return verdict{}, fmt.Errorf("querying api_keys: %w", err)
	}
	b.state.success()
	now := b.now()
	v := decide(row, found, now)
	if v.reject == nil {
		// Marked before caching, so that the mark is carried over if
		// this replaces an entry.
		v.entry.rec.touch(now.Unix())
	}
	b.remember(h, v, gen, now)
	return v, nil
}

// remember caches a verdict read while h's shard was at generation gen.
func (b *pgBackend) remember(h KeyHash, v verdict, gen uint64, now time.Time) {
	s := b.settings.Load()
	current := func() bool { return b.gen(h) == gen }
	if v.reject != nil {
		b.keys.delete(h)
		b.rejects.put(h, rejection{err: v.reject, orgID: v.orgID, until: now.Add(s.negativeCacheTTL).UnixNano()}, current)
		return
	}
	v.entry.fresh = now.Add(s.cacheTTL).UnixNano()
	b.rejects.delete(h)
	if !b.keys.put(h, v.entry, current) {
		b.keyRemoved(v.entry) // not cached: keep a fetch's mark for the flush
	}
}

func (b *pgBackend) gen(h KeyHash) uint64 { return b.gens[h[0]%cacheShards].Load() }

// invalidate forgets everything cached about h.
func (b *pgBackend) invalidate(h KeyHash) {
	b.gens[h[0]%cacheShards].Add(1)
	b.keys.delete(h)
	b.rejects.delete(h)
}

// invalidateOrg forgets every cached key of an organization.
func (b *pgBackend) invalidateOrg(orgID string) {
	b.bumpAll()
	b.keys.deleteFunc(func(_ KeyHash, e keyEntry) bool { return e.rec.OrgID == orgID })
	b.rejects.deleteFunc(func(_ KeyHash, r rejection) bool { return r.orgID == orgID })
}

// bumpAll makes every in-flight query result uncacheable.
func (b *pgBackend) bumpAll() {
	for i := range b.gens {
		b.gens[i].Add(1)
	}
}
