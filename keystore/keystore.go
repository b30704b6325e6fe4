// Package keystore is Tenantgate's PostgreSQL key store: it resolves the
// SHA-256 of an API key to the tenant identity the key acts for, and manages
// organizations and keys for the CLI and any admin API.
//
// A Store is one database's pgx pool, a bounded cache of usable keys, a
// bounded cache of refusals, a filter of every valid key hash, a LISTEN
// connection that applies changes at once, a periodic refresh and the
// recording of api_keys.last_used_at. Caddy configs share it through a
// usage pool keyed by the database URL (Acquire), so a reload keeps the warm
// cache and opens no new connections. docs/keystore.md describes how a
// lookup flows and what each failure looks like.
//
// The package reads as its concepts: keystore.go (the Store and a lookup),
// share.go (one store shared by the configs on a database), cache.go,
// filter.go and lanes.go (how forged keys are kept from starving real
// ones), listen.go (change notifications), refresh.go (refresh, filter
// build, warm start), lastused.go (api_keys.last_used_at), health.go
// (PostgreSQL's state and the readiness check), rows.go (what is read and
// how a row becomes a verdict), key.go (the key format), admin.go (the
// organization and key operations of the CLI and the admin API) and
// metrics.go.
package keystore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/tenantgate/tenantgate/internal/sharedmetrics"
	"github.com/tenantgate/tenantgate/internal/tenant"
)

// Reasons a well-formed key is refused with 403. Their messages are shown to
// the client in the error envelope.
var (
	ErrUnknownKey  = errors.New("invalid API key")
	ErrRevokedKey  = errors.New("API key revoked")
	ErrExpiredKey  = errors.New("API key expired")
	ErrDisabledOrg = errors.New("organization disabled")
)

// ErrStoreUnavailable means the store could not decide about a key (for
// example PostgreSQL is down and the key is not cached): a 503, never a 403.
var ErrStoreUnavailable = errors.New("API key store unavailable")

// ErrBusy means the lookup was not tried because its lane was full (too
// many lookups of keys the filter does not know, or of uncached keys,
// already running or waiting). It is an ErrStoreUnavailable for this
// request only: PostgreSQL is not considered down.
var ErrBusy = fmt.Errorf("%w: too many key lookups in progress", ErrStoreUnavailable)

// IsRejection reports whether err is a definitive "this key is not valid"
// answer (403), as opposed to a failure to decide.
func IsRejection(err error) bool {
	return errors.Is(err, ErrUnknownKey) || errors.Is(err, ErrRevokedKey) ||
		errors.Is(err, ErrExpiredKey) || errors.Is(err, ErrDisabledOrg)
}

// Timeouts for talking to PostgreSQL. A lookup that cannot finish in
// queryTimeout is answered from the stale cache or with 503.
const (
	queryTimeout   = 2 * time.Second
	connectTimeout = 5 * time.Second
	// retryPause: after a failed query, misses answer 503 at once for this
	// long instead of each waiting for PostgreSQL to fail again.
	retryPause = time.Second
)

// Settings are the tunables of a store. They can change on reload without
// rebuilding the store; zero fields take their defaults.
type Settings struct {
	// CacheTTL is how long a key stays cached before it is read again.
	// Default: 15m.
	CacheTTL time.Duration
	// NegativeCacheTTL is how long a refusal stays cached. Default: 30s.
	NegativeCacheTTL time.Duration
	// RefreshInterval is how often every cached key is read again.
	// Default: 15m.
	RefreshInterval time.Duration
	// CacheSize bounds the cached keys (rounded up to a multiple of 64).
	// Default: 100000.
	CacheSize int
	// NegativeCacheSize bounds the cached refusals (rounded up to a
	// multiple of 64). Default: 10000.
	NegativeCacheSize int
	// Logger receives the store's background messages (reconnections,
	// refresh failures). Default: Caddy's default logger.
	Logger *zap.Logger
}

// Defaults of Settings.
const (
	defaultCacheTTL          = 15 * time.Minute
	defaultNegativeCacheTTL  = 30 * time.Second
	defaultRefreshInterval   = 15 * time.Minute
	defaultCacheSize         = 100_000
	defaultNegativeCacheSize = 10_000
	// MaxCacheSize bounds CacheSize and NegativeCacheSize (memory).
	MaxCacheSize = 10_000_000
)

// Validate reports settings that cannot be used: negative durations or
// sizes, sizes beyond MaxCacheSize.
func (s Settings) Validate() error {
	switch {
	case s.CacheTTL < 0, s.NegativeCacheTTL < 0, s.RefreshInterval < 0:
		return errors.New("cache_ttl, negative_cache_ttl and refresh_interval must be positive")
	case s.CacheSize < 0, s.NegativeCacheSize < 0, s.CacheSize > MaxCacheSize, s.NegativeCacheSize > MaxCacheSize:
		return fmt.Errorf("cache_size and negative_cache_size must be from 1 to %d", MaxCacheSize)
	}
	return nil
}

// withDefaults fills in the zero fields.
func (s Settings) withDefaults() Settings {
	s.CacheTTL = cmp.Or(s.CacheTTL, defaultCacheTTL)
	s.NegativeCacheTTL = cmp.Or(s.NegativeCacheTTL, defaultNegativeCacheTTL)
	s.RefreshInterval = cmp.Or(s.RefreshInterval, defaultRefreshInterval)
	s.CacheSize = cmp.Or(s.CacheSize, defaultCacheSize)
	s.NegativeCacheSize = cmp.Or(s.NegativeCacheSize, defaultNegativeCacheSize)
	if s.Logger == nil {
		s.Logger = caddy.Log()
	}
	return s
}

// keyEntry is a cached usable key.
type keyEntry struct {
	rec       *cachedKey // identity and last use (lastused.go)
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

// Store is the key store of one PostgreSQL database. Configs obtain it
// with Acquire; it is destroyed when the last of them releases it.
type Store struct {
	pool      *pgxpool.Pool
	listenCfg *pgx.ConnConfig
	target    string // host:port/database, for logs and health (never the password)
	now       func() time.Time
	opts      options

	settings atomic.Pointer[Settings]
	keys     *shardedCache[keyEntry]
	rejects  *shardedCache[rejection]
	group    singleflight.Group
	state    pgState
	lastUse  lastUseLog
	metrics  *storeMetrics
	claims   claims // configs using the store (share.go)

	// The key filter (nil until first built), the one being built, and
	// the lanes misses take to PostgreSQL (filter.go, lanes.go).
	filter, building   atomic.Pointer[keyFilter]
	normal, unverified *lane
	// resync asks the maintenance loop to re-read the cached keys and
	// rebuild the filter (after the LISTEN connection came up), rebuild
	// asks it to rebuild the filter only (refresh.go).
	resync, rebuild chan struct{}
	warmed          atomic.Bool // the cache was warmed once

	// gens[shard] changes whenever a key in that shard is invalidated; a
	// query result is cached only if its shard's generation did not change
	// while the query ran, so a notification is never overtaken.
	gens [cacheShards]atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Interface guard
var _ caddy.Destructor = (*Store)(nil)

// options are for tests: an injected clock, a query tracer, whether to
// start the background work, and shorter timeouts.
type options struct {
	now          func() time.Time
	tracer       pgx.QueryTracer
	noBackground bool
	queryTimeout time.Duration // default queryTimeout
	// The LISTEN reconnection backoff; default listenMinBackoff and
	// listenMaxBackoff.
	listenMinBackoff, listenMaxBackoff time.Duration
	// noIdlePing stops the pool from pinging connections that were idle
	// for over a second before handing them out, so that a test meets a
	// dead pooled connection however slowly it runs.
	noIdlePing bool
}

// newStore builds the store and starts its background work. It does not
// wait for PostgreSQL: with the database down it starts anyway, answers
// misses with 503 and keeps reconnecting.
func newStore(dsn string, set Settings, opts options) (*Store, error) {
	if err := set.Validate(); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database_url: %w", err)
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "tenantgate"
	}
	if opts.tracer != nil {
		cfg.ConnConfig.Tracer = opts.tracer
	}
	if opts.noIdlePing {
		cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return false }
	}
	if opts.queryTimeout == 0 {
		opts.queryTimeout = queryTimeout
	}
	opts.listenMinBackoff = cmp.Or(opts.listenMinBackoff, listenMinBackoff)
	opts.listenMaxBackoff = cmp.Or(opts.listenMaxBackoff, listenMaxBackoff)
	set = set.withDefaults()
	s := &Store{
		listenCfg: cfg.ConnConfig.Copy(),
		target:    fmt.Sprintf("%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database),
		now:       opts.now,
		opts:      opts,
		keys:      newShardedCache[keyEntry](set.CacheSize),
		rejects:   newShardedCache[rejection](set.NegativeCacheSize),
	}
	s.state.wake, s.state.probe = make(chan struct{}, 1), make(chan struct{}, 1)
	s.resync, s.rebuild = make(chan struct{}, 1), make(chan struct{}, 1)
	s.listenCfg.Tracer = nil
	s.keys.replaced, s.keys.removed = s.keyReplaced, s.keyRemoved
	if s.now == nil {
		s.now = time.Now
	}
	if s.metrics, err = sharedmetrics.Acquire(metricsName, nil, newStoreMetrics); err != nil {
		return nil, err
	}
	normal, unverified := laneSizes(int(cfg.MaxConns))
	s.normal = newLane("normal", normal, normal*normalWaitFactor, s.metrics.shedNormal)
	s.unverified = newLane("unverified", unverified, unverified*unverifiedWaitFactor, s.metrics.shedUnverified)
	s.configure(set)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.pool, err = pgxpool.NewWithConfig(s.ctx, cfg)
	if err != nil {
		s.cancel()
		_ = sharedmetrics.Release(metricsName)
		return nil, fmt.Errorf("database_url: %w", err)
	}
	if !opts.noBackground {
		s.wg.Add(4)
		go s.listenLoop()
		go s.maintainLoop()
		go s.refreshLoop()
		go s.lastUseLoop()
	}
	return s, nil
}

// configure applies settings (defaults filled in).
func (s *Store) configure(set Settings) {
	set.Logger = set.Logger.Named("keystore").With(zap.String("database", s.target))
	s.settings.Store(&set)
	s.keys.setSize(set.CacheSize)
	s.rejects.setSize(set.NegativeCacheSize)
}

// Destruct stops the background work, records the latest key uses and
// closes every connection. The usage pool calls it when the last config
// using the store releases it.
func (s *Store) Destruct() error {
	s.cancel()
	s.wg.Wait()
	s.finalLastUseFlush()
	s.pool.Close()
	return sharedmetrics.Release(metricsName)
}

func (s *Store) logger() *zap.Logger { return s.settings.Load().Logger }

// Settings returns the settings in force (defaults filled in).
func (s *Store) Settings() Settings { return *s.settings.Load() }

// Target is the database the store reads, as host:port/database.
func (s *Store) Target() string { return s.target }

// Lookup resolves a key hash: the cache first, PostgreSQL on a miss, the
// stale cache when PostgreSQL fails. It returns the identity, or one of
// ErrUnknownKey, ErrRevokedKey, ErrExpiredKey, ErrDisabledOrg (all 403),
// or an error wrapping ErrStoreUnavailable (503). A cache hit takes one
// shard read lock and allocates nothing.
func (s *Store) Lookup(_ context.Context, h KeyHash) (*tenant.Identity, error) {
	m := s.metrics
	now := s.now().UnixNano()
	e, cached := s.keys.get(h)
	if cached && now < e.fresh {
		m.cacheHit.Inc()
		return e.use(now)
	}
	if r, ok := s.rejects.get(h); ok && now < r.until {
		m.cacheNegative.Inc()
		return nil, r.err
	}
	m.cacheMiss.Inc()
	if s.state.pausing(now) {
		return s.stale(e, cached, now, errPostgresDown)
	}
	l := s.normal
	if f := s.filter.Load(); f != nil && !f.mayContain(h) {
		l = s.unverified
	}
	v, err, _ := s.group.Do(string(h[:]), func() (any, error) { return s.fetch(h, l) })
	if err != nil {
		return s.stale(e, cached, now, err)
	}
	res := v.(verdict)
	if res.reject != nil {
		return nil, res.reject
	}
	return res.entry.check(now)
}

// stale answers from an outdated cache entry when PostgreSQL cannot
// (stale-if-error), else fails with ErrStoreUnavailable (503, never 403).
func (s *Store) stale(e keyEntry, cached bool, now int64, cause error) (*tenant.Identity, error) {
	if cached {
		s.metrics.cacheStale.Inc()
		return e.use(now)
	}
	if errors.Is(cause, ErrStoreUnavailable) {
		return nil, cause
	}
	return nil, fmt.Errorf("%w: %w", ErrStoreUnavailable, cause)
}

// fetch reads one key from PostgreSQL through lane l and caches the
// verdict. Concurrent misses for the same hash share one call
// (singleflight), which runs on the store's context so that one client
// giving up does not fail the rest.
func (s *Store) fetch(h KeyHash, l *lane) (verdict, error) {
	gen := s.gen(h)
	if err := l.enter(s.ctx, s.opts.queryTimeout); err != nil {
		return verdict{}, err
	}
	defer l.leave()
	// The query's own deadline starts now: time spent waiting for the
	// lane must not make a query time out and look like a PostgreSQL
	// failure.
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.queryTimeout)
	defer cancel()
	s.metrics.inFlight.Inc()
	defer s.metrics.inFlight.Dec()
	row, found, err := s.readKey(ctx, h, l)
	if err != nil {
		return verdict{}, err
	}
	s.state.keyQueriesWork()
	if found && !row.revokedAt.Valid {
		s.addToFilter(h) // a key whose notification was missed
	}
	now := s.now()
	v := decide(row, found, now)
	if v.reject == nil {
		// Marked before caching, so that the mark is carried over if
		// this replaces an entry.
		v.entry.rec.touch(now.Unix())
	}
	s.remember(h, v, gen, now)
	return v, nil
}

// readKey reads h's row on a pooled connection. A connection that died
// while idle in the pool (PostgreSQL restarted, or a network blip shorter
// than the pool's idle ping) fails its first query although PostgreSQL
// answers: the pool's idle connections are dropped, as they most likely
// died the same way, and the read is retried once on a new connection.
func (s *Store) readKey(ctx context.Context, h KeyHash, l *lane) (keyRow, bool, error) {
	for retried := false; ; retried = true {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return keyRow{}, false, s.acquireFailed(ctx, err, l)
		}
		start := time.Now()
		row, found, err := queryKey(ctx, conn, h)
		s.metrics.pgLookup.Observe(time.Since(start).Seconds())
		deadConn := err != nil && ctx.Err() == nil && conn.Conn().IsClosed()
		conn.Release()
		if err == nil {
			return row, found, nil
		}
		if !deadConn || retried {
			s.queryFailed(err)
			return keyRow{}, false, fmt.Errorf("querying api_keys: %w", err)
		}
		s.pool.Reset()
	}
}

// acquireFailed classifies a failure of a lookup in lane l to get a pool
// connection. Waiting for a connection until the deadline is not a
// PostgreSQL failure (the pool is busy): the lookup is shed. Failing to
// open one is a failure.
func (s *Store) acquireFailed(ctx context.Context, err error, l *lane) error {
	var connectErr *pgconn.ConnectError
	if !errors.As(err, &connectErr) && ctx.Err() != nil {
		l.shed.Inc()
		return fmt.Errorf("%w: no PostgreSQL connection free in time", ErrBusy)
	}
	s.failed(err)
	return fmt.Errorf("connecting to PostgreSQL: %w", err)
}

// failed records a failed contact with PostgreSQL.
func (s *Store) failed(err error) {
	if s.ctx.Err() != nil {
		return // shutting down
	}
	s.metrics.pgErrors.Inc()
	s.state.failure(s.now(), err)
}

// queryFailed records a failed query. A query that ran out of time while
// the LISTEN connection is up proves little: PostgreSQL may be slow, or
// this process starved of CPU by a flood. Instead of pausing every miss
// and reporting an outage, it asks the LISTEN connection to check
// PostgreSQL now; an unreachable or hung server fails that check, and the
// reconnection that follows reports it.
func (s *Store) queryFailed(err error) {
	if pgconn.Timeout(err) && s.state.listening.Load() && s.ctx.Err() == nil {
		s.metrics.pgErrors.Inc()
		signal(s.state.probe)
		return
	}
	s.failed(err)
}

// remember caches a verdict read while h's shard was at generation gen.
func (s *Store) remember(h KeyHash, v verdict, gen uint64, now time.Time) {
	set := s.settings.Load()
	current := func() bool { return s.gen(h) == gen }
	if v.reject != nil {
		s.keys.delete(h)
		s.rejects.put(h, rejection{err: v.reject, orgID: v.orgID, until: now.Add(set.NegativeCacheTTL).UnixNano()}, current)
		return
	}
	v.entry.fresh = now.Add(set.CacheTTL).UnixNano()
	s.rejects.delete(h)
	if !s.keys.put(h, v.entry, current) {
		s.keyRemoved(v.entry) // not cached: keep a fetch's mark for the flush
	}
}

func (s *Store) gen(h KeyHash) uint64 { return s.gens[h[0]%cacheShards].Load() }

// invalidate forgets everything cached about h.
func (s *Store) invalidate(h KeyHash) {
	s.gens[h[0]%cacheShards].Add(1)
	s.keys.delete(h)
	s.rejects.delete(h)
}

// invalidateOrg forgets every cached key of an organization.
func (s *Store) invalidateOrg(orgID string) {
	s.bumpAll()
	s.keys.deleteFunc(func(_ KeyHash, e keyEntry) bool { return e.rec.OrgID == orgID })
	s.rejects.deleteFunc(func(_ KeyHash, r rejection) bool { return r.orgID == orgID })
}

// bumpAll makes every in-flight query result uncacheable.
func (s *Store) bumpAll() {
	for i := range s.gens {
		s.gens[i].Add(1)
	}
}

// snapshotGens returns every shard's generation, taken before a query.
func (s *Store) snapshotGens() (gens [cacheShards]uint64) {
	for i := range s.gens {
		gens[i] = s.gens[i].Load()
	}
	return gens
}

// addToFilter adds a key hash to the filter and to the one being built,
// and asks for a rebuild when the filter is fuller than it was sized for.
func (s *Store) addToFilter(h KeyHash) {
	if f := s.building.Load(); f != nil {
		f.add(h)
	}
	if f := s.filter.Load(); f != nil && f.add(h) {
		signal(s.rebuild)
	}
}

// signal wakes whoever waits on c (capacity 1) without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
