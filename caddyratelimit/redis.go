package caddyratelimit

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

//go:embed limiter.lua
var limiterLua string

// keyPrefix starts every key the limiter writes to Redis.
const keyPrefix = "tenantgate:rl:"

// maxOrgIDBytes bounds the organization ID written into a Redis key; a
// longer ID (tenant_auth's are much shorter) is replaced by its SHA-256.
const maxOrgIDBytes = 128

// redisLimiter decides with limiter.lua on Redis: one EVALSHA per decision,
// which may cover several concurrent requests of one organization (EVAL
// once when Redis does not have the script cached, e.g. after a restart),
// on Redis's clock. Several gateways sharing a Redis share the limits
// exactly.
type redisLimiter struct {
	client redis.Scripter
	script *redis.Script
	prefix string
}

// newRedisLimiter returns a limiter on client whose keys start with prefix
// (keyPrefix when empty).
func newRedisLimiter(client redis.Scripter, prefix string) *redisLimiter {
	if prefix == "" {
		prefix = keyPrefix
	}
	return &redisLimiter{client: client, script: redis.NewScript(limiterLua), prefix: prefix}
}

// Allow implements limiter. The caller bounds the call with ctx.
func (r *redisLimiter) Allow(ctx context.Context, orgID string, p *policy) (decision, error) {
	b, err := r.allowN(ctx, orgID, p, 1)
	if err != nil {
		return decision{}, err
	}
	return b.decision(0), nil
}

// allowN decides n concurrent requests of an organization with one script
// call, exactly as n sequential calls would: the first admitted are
// admitted, the rest denied and charged nothing. The caller bounds the call
// with ctx.
func (r *redisLimiter) allowN(ctx context.Context, orgID string, p *policy, n int64) (batchResult, error) {
	keys := r.keys(orgID)
	args := p.scriptArgs
	if n > 1 {
		args = append(args[:len(args):len(args)], n)
	}
	res, err := r.script.Run(ctx, r.client, keys[:], args...).Int64Slice()
	if err != nil {
		return batchResult{}, fmt.Errorf("rate-limit script: %w", err)
	}
	if len(res) != 4 {
		return batchResult{}, fmt.Errorf("rate-limit script: got %d values, want 4", len(res))
	}
	if res[0] < 0 || res[0] > n {
		return batchResult{}, fmt.Errorf("rate-limit script: admitted %d of %d", res[0], n)
	}
	return batchResult{admitted: res[0], tokens: res[1], dayUsed: res[2], now: res[3]}, nil
}

// batchResult is the script's answer for n requests decided together.
type batchResult struct {
	// admitted is how many of the requests were admitted: the first ones.
	admitted int64
	// tokens and dayUsed are the bucket (micro-tokens) and today's count
	// after the batch; now is Redis's clock in µs.
	tokens, dayUsed, now int64
}

// decision is the i-th request's decision (0-based), with the state as if
// the batch's requests had been decided one after the other: each admitted
// request sees the tokens the later ones had not yet taken.
func (b batchResult) decision(i int64) decision {
	if i < b.admitted {
		later := b.admitted - 1 - i
		return decision{Allowed: true, Source: sourceRedis, Tokens: b.tokens + later*microTokens, DayUsed: b.dayUsed - later, Now: b.now}
	}
	return decision{Source: sourceRedis, Tokens: b.tokens, DayUsed: b.dayUsed, Now: b.now}
}

// keys returns the organization's bucket and counter keys,
// "<prefix>{<org>}:m" and "<prefix>{<org>}:d": the hash tag puts both in one
// Redis Cluster slot, as a script's keys must be. Both are cut from one
// string, so building them costs one allocation.
func (r *redisLimiter) keys(orgID string) [2]string {
	if len(orgID) > maxOrgIDBytes {
		sum := sha256.Sum256([]byte(orgID))
		orgID = "sha256:" + hex.EncodeToString(sum[:])
	}
	var buf [2*(len(keyPrefix)+maxOrgIDBytes+4) + 64]byte
	b := buf[:0]
	b = appendKey(b, r.prefix, orgID, 'm')
	split := len(b)
	b = appendKey(b, r.prefix, orgID, 'd')
	s := string(b)
	return [2]string{s[:split], s[split:]}
}

func appendKey(b []byte, prefix, orgID string, kind byte) []byte {
	b = append(b, prefix...)
	b = append(b, '{')
	b = append(b, orgID...)
	return append(b, '}', ':', kind)
}

// redisPool shares Redis clients, with their breaker and over-limit cache,
// across config reloads: a reload keeps the connections and the outage
// state instead of reconnecting. Keyed by address, database and credentials.
var redisPool = caddy.NewUsagePool()

// sharedRedis is one Redis connection pool and what belongs to it.
type sharedRedis struct {
	client  *renewingClient
	limiter *redisLimiter
	breaker *breaker
	denied  *deniedOrgs
	// fallback decides for on_redis_error local while this Redis fails,
	// from the state Redis last reported for each organization.
	fallback *localLimiter
	logger   atomic.Pointer[zap.Logger] // of the newest config using it
}

func newSharedRedis(opts *redis.UniversalOptions, m *metrics, logger *zap.Logger) *sharedRedis {
	client := newRenewingClient(opts)
	s := &sharedRedis{
		client:   client,
		limiter:  newRedisLimiter(client, ""),
		denied:   newDeniedOrgs(),
		fallback: newLocalLimiter(defaultMaxLocalOrgs, nil),
	}
	s.logger.Store(logger)
	s.breaker = &breaker{clock: time.Now, logger: &s.logger, gauge: m.fallbackActive, onTrip: client.renew}
	return s
}

// Destruct closes the connections and stops the fallback's sweep, all of
// it even when one step fails (caddy.Destructor).
func (s *sharedRedis) Destruct() error {
	s.breaker.close()
	return errors.Join(s.client.Close(), s.fallback.Destruct())
}

// redisConfig is the connection part of the handler's config.
type redisConfig struct {
	addr, password string
	db             int
}

// options parses redis_addr and builds the client options. redis_addr is
// either a list of host:port (one: a single server; several: a Redis
// Cluster), or a redis:// or rediss:// URL (TLS), which may name a Sentinel
// master (?master_name=…&addr=…) or more cluster nodes (?addr=…).
// redis_password and redis_db, when set, win over the URL's.
func (c redisConfig) options() (*redis.UniversalOptions, error) {
	o := new(redis.UniversalOptions)
	if strings.Contains(c.addr, "://") {
		if err := fromURL(o, c.addr); err != nil {
			return nil, err
		}
	} else {
		for _, a := range strings.FieldsFunc(c.addr, func(r rune) bool { return r == ',' || r == ' ' }) {
			if _, port, err := net.SplitHostPort(a); err != nil || !validPort(port) {
				return nil, fmt.Errorf("redis_addr: %q is not host:port", a)
			}
			o.Addrs = append(o.Addrs, a)
		}
	}
	if len(o.Addrs) == 0 {
		return nil, fmt.Errorf("redis_addr: no address")
	}
	if c.password != "" {
		o.Password = c.password
	}
	if c.db != 0 {
		o.DB = c.db
	}
	if o.DB != 0 && o.MasterName == "" && (len(o.Addrs) > 1 || o.IsClusterMode) {
		return nil, fmt.Errorf("redis_db: a Redis Cluster has only database 0, got %d", o.DB)
	}

	// Every call is bounded by redis_timeout through its context; these
	// are backstops. No retries: a retried EVALSHA whose first reply was
	// lost would take two tokens, and the breaker handles failures.
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1
	o.DialTimeout = 2 * time.Second
	// One dial attempt: a refused connection fails the call at once and the
	// breaker's backoff does the retrying.
	o.DialerRetries = 1
	o.ReadTimeout = 2 * time.Second
	o.WriteTimeout = 2 * time.Second
	o.PoolTimeout = time.Second
	o.PoolSize = max(64, 10*runtime.GOMAXPROCS(0))
	// No idle connections opened in the background: while Redis hangs they
	// would be dead on arrival, and each would cost a probe after recovery.
	o.MinIdleConns = 0
	// No extra commands when a connection opens.
	o.DisableIdentity = true
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return o, nil
}

// validPort reports whether s is a TCP port number.
func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n <= 65535
}

// parseRedisDB reads redis_db once expanded: empty is database 0.
func parseRedisDB(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1<<20 {
		return 0, fmt.Errorf("%q is not a database number", s)
	}
	return n, nil
}

// fromURL fills o from a redis:// or rediss:// URL. Its errors never
// repeat the URL, which may hold a password.
func fromURL(o *redis.UniversalOptions, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("redis_addr: not a valid URL: %w", err)
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		f, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return fmt.Errorf("redis_addr: %w", err)
		}
		o.Addrs, o.MasterName, o.DB, o.TLSConfig = f.SentinelAddrs, f.MasterName, f.DB, f.TLSConfig
		o.Username, o.Password = f.Username, f.Password
		o.SentinelUsername, o.SentinelPassword = f.SentinelUsername, f.SentinelPassword
	case q.Has("addr"):
		cl, err := redis.ParseClusterURL(raw)
		if err != nil {
			return fmt.Errorf("redis_addr: %w", err)
		}
		o.Addrs, o.IsClusterMode, o.TLSConfig = cl.Addrs, true, cl.TLSConfig
		o.Username, o.Password = cl.Username, cl.Password
	default:
		s, err := redis.ParseURL(raw)
		if err != nil {
			return fmt.Errorf("redis_addr: %w", err)
		}
		o.Addrs, o.DB, o.TLSConfig = []string{s.Addr}, s.DB, s.TLSConfig
		o.Username, o.Password = s.Username, s.Password
	}
	return nil
}

// redisTarget names the Redis a limiter uses in readiness checks and logs:
// its addresses, Sentinel master and database, never a password.
func redisTarget(o *redis.UniversalOptions) string {
	target := strings.Join(o.Addrs, ",")
	if o.MasterName != "" {
		target = o.MasterName + "@" + target
	}
	return target + "/" + strconv.Itoa(o.DB)
}

// poolKey identifies a Redis connection: servers, database, TLS and
// credentials (hashed, so the key never holds a password in clear).
func poolKey(o *redis.UniversalOptions) string {
	creds := sha256.Sum256([]byte(o.Username + "\x00" + o.Password + "\x00" + o.SentinelUsername + "\x00" + o.SentinelPassword))
	return strings.Join([]string{
		strings.Join(o.Addrs, ","), o.MasterName, strconv.Itoa(o.DB),
		strconv.FormatBool(o.TLSConfig != nil), strconv.FormatBool(o.IsClusterMode),
		hex.EncodeToString(creds[:8]),
	}, "|")
}

// renewingClient is a Redis client whose connection pool is replaced by a
// fresh one when an outage begins. Connections left half-open by a network
// partition would otherwise sit in the pool and each cost a probe its
// redis_timeout after the partition heals; a fresh pool only holds
// connections made since.
type renewingClient struct {
	opts *redis.UniversalOptions
	cur  atomic.Pointer[clientBox]
}

type clientBox struct{ redis.UniversalClient }

func newRenewingClient(opts *redis.UniversalOptions) *renewingClient {
	c := &renewingClient{opts: opts}
	c.cur.Store(&clientBox{redis.NewUniversalClient(opts)})
	return c
}

// current is the client in use.
func (c *renewingClient) current() redis.UniversalClient { return c.cur.Load().UniversalClient }

// renew swaps in a new pool and closes the old one; calls still running on
// it fail, as they were failing anyway.
func (c *renewingClient) renew() {
	old := c.cur.Swap(&clientBox{redis.NewUniversalClient(c.opts)})
	go old.Close()
}

// Close closes the client in use.
func (c *renewingClient) Close() error { return c.current().Close() }

// Ping checks that Redis answers.
func (c *renewingClient) Ping(ctx context.Context) error { return c.current().Ping(ctx).Err() }

// The redis.Scripter methods, on the client in use.

func (c *renewingClient) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.current().Eval(ctx, script, keys, args...)
}

func (c *renewingClient) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.current().EvalSha(ctx, sha1, keys, args...)
}

func (c *renewingClient) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return c.current().EvalRO(ctx, script, keys, args...)
}

func (c *renewingClient) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return c.current().EvalShaRO(ctx, sha1, keys, args...)
}

func (c *renewingClient) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return c.current().ScriptExists(ctx, hashes...)
}

func (c *renewingClient) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return c.current().ScriptLoad(ctx, script)
}

func init() {
	// go-redis logs each failed dial to stderr in its own format. The
	// limiter already logs an outage once (and its end); go-redis's lines
	// go to Caddy's log at DEBUG, in Caddy's format.
	redis.SetLogger(redisLogger{})
}

// redisLogger routes go-redis's internal log lines to Caddy's logger.
type redisLogger struct{}

// Printf implements go-redis's internal.Logging.
func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := caddy.Log().Named("redis").Check(zapcore.DebugLevel, "go-redis"); ce != nil {
		ce.Write(zap.String("detail", fmt.Sprintf(format, v...)))
	}
}

// Interface guards
var (
	_ limiter          = (*redisLimiter)(nil)
	_ redis.Scripter   = (*renewingClient)(nil)
	_ caddy.Destructor = (*sharedRedis)(nil)
)
