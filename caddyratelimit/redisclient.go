package caddyratelimit

import (
	"crypto/sha256"
	"encoding/hex"
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
)

// redisPool shares Redis clients, with their breaker and over-limit cache,
// across config reloads: a reload keeps the connections and the outage
// state instead of reconnecting. Keyed by address, database and credentials.
var redisPool = caddy.NewUsagePool()

// sharedRedis is one Redis connection pool and what belongs to it.
type sharedRedis struct {
	client  *renewingClient
	limiter *RedisLimiter
	breaker *breaker
	denied  *deniedOrgs
	logger  atomic.Pointer[zap.Logger] // of the newest config using it
}

func newSharedRedis(opts *redis.UniversalOptions, m *metrics, logger *zap.Logger) *sharedRedis {
	client := newRenewingClient(opts)
	s := &sharedRedis{
		client:  client,
		limiter: NewRedisLimiter(client, ""),
		denied:  newDeniedOrgs(0),
	}
	s.logger.Store(logger)
	s.breaker = &breaker{clock: time.Now, logger: &s.logger, gauge: m.fallbackActive, onTrip: client.renew}
	return s
}

// Destruct closes the connections (caddy.Destructor).
func (s *sharedRedis) Destruct() error {
	s.breaker.close()
	return s.client.Close()
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
			if _, _, err := net.SplitHostPort(a); err != nil {
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

// fromURL fills o from a redis:// or rediss:// URL.
func fromURL(o *redis.UniversalOptions, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("redis_addr: %w", err)
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
