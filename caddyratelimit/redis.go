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

// RedisLimiter decides with limiter.lua on Redis: one EVALSHA per decision,
// which may cover several concurrent requests of one organization (EVAL
// once when Redis does not have the script cached, e.g. after a restart),
// on Redis's clock. Several gateways sharing a Redis share the
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
	b, err := r.AllowN(ctx, orgID, p, 1)
	if err != nil {
		return Decision{}, err
	}
	return b.Decision(0), nil
}

// AllowN decides n concurrent requests of an organization with one script
// call, exactly as n sequential calls would: the first Admitted are
// admitted, the rest denied and charged nothing. The caller bounds the call
// with ctx.
func (r *RedisLimiter) AllowN(ctx context.Context, orgID string, p *Policy, n int64) (Batch, error) {
	keys := r.keys(orgID)
	args := p.scriptArgs
	if n > 1 {
		args = append(args[:len(args):len(args)], n)
	}
	res, err := r.script.Run(ctx, r.client, keys[:], args...).Int64Slice()
	if err != nil {
		return Batch{}, fmt.Errorf("rate-limit script: %w", err)
	}
	if len(res) != 4 {
		return Batch{}, fmt.Errorf("rate-limit script: got %d values, want 4", len(res))
	}
	if res[0] < 0 || res[0] > n {
		return Batch{}, fmt.Errorf("rate-limit script: admitted %d of %d", res[0], n)
	}
	return Batch{Admitted: res[0], Tokens: res[1], DayUsed: res[2], Now: res[3]}, nil
}

// Batch is the script's answer for n requests decided together.
type Batch struct {
	// Admitted is how many of the requests were admitted: the first ones.
	Admitted int64
	// Tokens and DayUsed are the bucket (micro-tokens) and today's count
	// after the batch; Now is Redis's clock in µs.
	Tokens, DayUsed, Now int64
}

// Decision is the i-th request's decision (0-based), with the state as if
// the batch's requests had been decided one after the other: each admitted
// request sees the tokens the later ones had not yet taken.
func (b Batch) Decision(i int64) Decision {
	if i < b.Admitted {
		later := b.Admitted - 1 - i
		return Decision{Allowed: true, Source: SourceRedis, Tokens: b.Tokens + later*microTokens, DayUsed: b.DayUsed - later, Now: b.Now}
	}
	return Decision{Source: SourceRedis, Tokens: b.Tokens, DayUsed: b.DayUsed, Now: b.Now}
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
