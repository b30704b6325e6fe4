package caddyratelimit

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"

	"github.com/redis/go-redis/v9"
)

//go:embed limiter.lua
var limiterLua string

// DefaultKeyPrefix starts every key the limiter writes to Redis.
const DefaultKeyPrefix = "tenantgate:rl:"

// maxOrgIDBytes bounds the organization ID written into a Redis key; a
// longer ID (tenant_auth's are much shorter) is replaced by its SHA-256.
const maxOrgIDBytes = 128

// RedisLimiter decides with limiter.lua on Redis: one EVALSHA per decision
// (EVAL once when Redis does not have the script cached, e.g. after a
// restart), on Redis's clock. Several gateways sharing a Redis share the
// limits exactly.
type RedisLimiter struct {
	client redis.Scripter
	script *redis.Script
	prefix string
}

// NewRedisLimiter returns a limiter on client whose keys start with prefix
// (DefaultKeyPrefix when empty).
func NewRedisLimiter(client redis.Scripter, prefix string) *RedisLimiter {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return &RedisLimiter{client: client, script: redis.NewScript(limiterLua), prefix: prefix}
}

// Allow implements Limiter. The caller bounds the call with ctx.
func (r *RedisLimiter) Allow(ctx context.Context, orgID string, p *Policy) (Decision, error) {
	keys := r.keys(orgID)
	res, err := r.script.Run(ctx, r.client, keys[:], p.scriptArgs...).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("rate-limit script: %w", err)
	}
	if len(res) != 4 {
		return Decision{}, fmt.Errorf("rate-limit script: got %d values, want 4", len(res))
	}
	return Decision{Allowed: res[0] == 1, Source: SourceRedis, Tokens: res[1], DayUsed: res[2], Now: res[3]}, nil
}

// keys returns the organization's bucket and counter keys,
// "<prefix>{<org>}:m" and "<prefix>{<org>}:d": the hash tag puts both in one
// Redis Cluster slot, as a script's keys must be. Both are cut from one
// string, so building them costs one allocation.
func (r *RedisLimiter) keys(orgID string) [2]string {
	if len(orgID) > maxOrgIDBytes {
		sum := sha256.Sum256([]byte(orgID))
		orgID = "sha256:" + hex.EncodeToString(sum[:])
	}
	var buf [2*(len(DefaultKeyPrefix)+maxOrgIDBytes+4) + 64]byte
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
