package caddyratelimit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

// newTestRedis returns a client of TEST_REDIS_ADDR and a key prefix of
// this test's own; the test's keys are deleted when it ends.
func newTestRedis(t testing.TB) (*redis.Client, string) {
	t.Helper()
	addr := testenv.RedisAddr(t)
	client := redis.NewClient(&redis.Options{Addr: addr})
	prefix := testenv.UniqueName("tgtest:") + ":"
	t.Cleanup(func() {
		deleteKeys(t, client, prefix)
		_ = client.Close()
	})
	return client, prefix
}

// deleteKeys deletes every key starting with prefix.
func deleteKeys(t testing.TB, client *redis.Client, prefix string) {
	ctx := context.Background()
	iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		client.Del(ctx, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Logf("cleaning up %s*: %v", prefix, err)
	}
}

// redisNow is Redis's clock in µs.
func redisNow(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	tm, err := c.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return tm.UnixMicro()
}

func TestRedisBurstThenDeny(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	p := newPolicy("tiny", tinyLimits)
	if got := admitted(t, l, "org", p, 15); got != 10 {
		t.Fatalf("admitted %d of 15, want capacity 10", got)
	}
	d := decide(t, l, "org", p)
	if d.Allowed || d.Source != sourceRedis || d.limitType(p.Limits) != limitTypeMinute {
		t.Fatalf("16th: %+v, want a minute denial from Redis", d)
	}
	if d.remainingMinute() != 0 || d.DayUsed != 10 {
		t.Errorf("remaining=%d day_used=%d, want 0 and 10", d.remainingMinute(), d.DayUsed)
	}
	// Retry-After: the bucket holds a sliver refilled since the 10th request.
	if ra := d.retryAfter(p.Limits); ra < 9 || ra > 10 {
		t.Errorf("Retry-After = %d, want 10 (or 9 if a second passed)", ra)
	}
}

func TestRedisRefill(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	p := newPolicy("tiny", tinyLimits)
	keys := l.keys("org")
	// An empty bucket last touched 25 s ago (Redis's clock) holds 2.5 tokens.
	ctx := context.Background()
	client.Set(ctx, keys[0], fmt.Sprintf("0 %d", redisNow(t, client)-25*usPerSecond), 0)
	if got := admitted(t, l, "org", p, 5); got != 2 {
		t.Fatalf("admitted %d, want 2 (2.5 tokens refilled in 25 s)", got)
	}
	// A bucket last touched long ago is full, never more.
	client.Set(ctx, keys[0], fmt.Sprintf("0 %d", redisNow(t, client)-3600*usPerSecond), 0)
	if got := admitted(t, l, "org", p, 20); got != 10 {
		t.Fatalf("admitted %d after an idle hour, want capacity 10", got)
	}
}

func TestRedisDenialConsumesNothing(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	p := newPolicy("tiny", tinyLimits)
	admitted(t, l, "org", p, 10)
	ctx := context.Background()
	keys := l.keys("org")
	before := client.Get(ctx, keys[0]).Val()
	for i := 0; i < 50; i++ {
		if decide(t, l, "org", p).Allowed {
			t.Fatal("admitted from an empty bucket")
		}
	}
	if after := client.Get(ctx, keys[0]).Val(); before != after {
		t.Fatalf("denials changed the bucket: %q → %q", before, after)
	}
	if _, n := dayCounter(t, client, keys[1]); n != 10 {
		t.Fatalf("daily counter %d after 10 admitted and 50 denied, want 10", n)
	}
}

func TestRedisDailyQuotaAndRollover(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	p := newPolicy("daily", limits{PerMinute: 600, PerDay: 5})
	if got := admitted(t, l, "org", p, 5); got != 5 {
		t.Fatalf("admitted %d, want 5", got)
	}
	d := decide(t, l, "org", p)
	if d.Allowed || d.limitType(p.Limits) != limitTypeDay {
		t.Fatalf("6th: %+v, want a day denial", d)
	}
	want := ceilDiv(d.dayResetAt()-d.Now, usPerSecond)
	if got := d.retryAfter(p.Limits); got != want {
		t.Errorf("Retry-After = %d, want %d (until 00:00 UTC)", got, want)
	}
	// Yesterday's exhausted counter does not count today.
	ctx := context.Background()
	today := redisNow(t, client) / usPerDay
	client.Set(ctx, l.keys("org")[1], fmt.Sprintf("%d 5", today-1), 0)
	d = decide(t, l, "org", p)
	if !d.Allowed || d.DayUsed != 1 {
		t.Fatalf("after rollover: %+v, want admitted with day_used 1", d)
	}
	if day, n := dayCounter(t, client, l.keys("org")[1]); day != today || n != 1 {
		t.Errorf("counter = day %d, %d used; want today %d, 1", day, n, today)
	}
}

func TestRedisKeysExpireAndShareHashTag(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	p := newPolicy("tiny", tinyLimits)
	d := decide(t, l, "org-42", p)
	keys := l.keys("org-42")
	for _, k := range keys {
		if !strings.Contains(k, "{org-42}") {
			t.Errorf("key %q lacks the hash tag {org-42}", k)
		}
	}
	if got := hashSlot("foo"); got != 12182 {
		t.Fatalf("hashSlot(foo) = %d, want 12182 (CLUSTER KEYSLOT foo)", got)
	}
	if a, b := hashSlot(keys[0]), hashSlot(keys[1]); a != b {
		t.Errorf("keys in slots %d and %d: a script's keys must share one cluster slot", a, b)
	}
	ctx := context.Background()
	// The bucket expires when it would be full again (10 s for one token) + 1 s.
	if ttl := client.PTTL(ctx, keys[0]).Val(); ttl <= 0 || ttl > 11*time.Second {
		t.Errorf("bucket TTL %s, want (0, 11s]", ttl)
	}
	// The counter expires after its day.
	toMidnight := time.Duration(d.dayResetAt()-d.Now) * time.Microsecond
	if ttl := client.PTTL(ctx, keys[1]).Val(); ttl <= 0 || ttl > toMidnight+61*time.Second {
		t.Errorf("counter TTL %s, want (0, %s]", ttl, toMidnight+61*time.Second)
	}
}

func TestRedisLongOrganizationID(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	long := strings.Repeat("x", 4096)
	keys := l.keys(long)
	if len(keys[0]) > 200 || hashSlot(keys[0]) != hashSlot(keys[1]) {
		t.Fatalf("keys for a long ID: %q, %q", keys[0], keys[1])
	}
	if d := decide(t, l, long, newPolicy("tiny", tinyLimits)); !d.Allowed {
		t.Fatalf("long organization ID: %+v", d)
	}
	if l.keys(long + "y")[0] == keys[0] {
		t.Fatal("two long IDs share a key")
	}
}

func TestRedisReloadsFlushedScript(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	p := newPolicy("tiny", tinyLimits)
	decide(t, l, "org", p)
	// As after a Redis restart: the script cache is empty, EVALSHA answers
	// NOSCRIPT, and the limiter must load the script again.
	if err := client.ScriptFlush(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, l, "org", p); !d.Allowed || d.DayUsed != 2 {
		t.Fatalf("after SCRIPT FLUSH: %+v, want the second admission", d)
	}
	if ok := client.ScriptExists(context.Background(), l.script.Hash()).Val(); len(ok) != 1 || !ok[0] {
		t.Fatal("the script is not cached again after NOSCRIPT")
	}
}

func TestRedisMatchesLocal(t *testing.T) {
	// The same sequence of decisions from the Lua script and from Go.
	client, prefix := newTestRedis(t)
	rl := newRedisLimiter(client, prefix)
	clock := testenv.NewClock(time.Now())
	ll := newTestLocal(t, clock)
	p := newPolicy("mixed", limits{PerMinute: 3, PerDay: 7, Burst: 2})
	for i := 0; i < 12; i++ {
		r, g := decide(t, rl, "org", p), decide(t, ll, "org", p)
		if r.Allowed != g.Allowed || r.DayUsed != g.DayUsed || r.remainingMinute() != g.remainingMinute() || r.limitType(p.Limits) != g.limitType(p.Limits) {
			t.Fatalf("request %d: Redis %+v, Go %+v", i+1, r, g)
		}
	}
}

// dayCounter reads a daily counter key: its day number and count.
func dayCounter(t *testing.T, c *redis.Client, key string) (day, n int64) {
	t.Helper()
	v, err := c.Get(context.Background(), key).Result()
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	if _, err := fmt.Sscanf(v, "%d %d", &day, &n); err != nil {
		t.Fatalf("counter %q: %v", v, err)
	}
	return day, n
}

// hashSlot is Redis Cluster's key slot: CRC16 (XMODEM) of the hash tag, or
// of the whole key when it has none, modulo 16384.
func hashSlot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % 16384
}

// TestExactnessAcrossInstances: two limiters with their own connection
// pools (as two gateways have) on one Redis, hundreds of concurrent
// requests for one organization: exactly capacity are admitted.
func TestExactnessAcrossInstances(t *testing.T) {
	client, prefix := newTestRedis(t)
	second := redis.NewClient(&redis.Options{Addr: client.Options().Addr, PoolSize: 64})
	defer second.Close()
	instances := []limiter{newRedisLimiter(client, prefix), newRedisLimiter(second, prefix)}
	// Capacity 100, refilled at one token a minute: the test cannot see a refill.
	p := newPolicy("exact", limits{PerMinute: 1, PerDay: 100000, Burst: 99})

	const requests = 600
	ok, denied := decideConcurrently(t, requests, "org", p, instances...)
	if ok != 100 || denied != requests-100 {
		t.Fatalf("admitted %d, denied %d of %d; want exactly 100 admitted (capacity)", ok, denied, requests)
	}
	// And the daily counter agrees: denials were not counted.
	if _, n := dayCounter(t, client, newRedisLimiter(client, prefix).keys("org")[1]); n != 100 {
		t.Fatalf("daily counter %d, want 100", n)
	}
}

// TestRedisAllowNIsExactAndChargesNoDenial: one call for more requests than
// tokens admits exactly what is left and charges nothing for the rest.
func TestRedisAllowNIsExactAndChargesNoDenial(t *testing.T) {
	client, prefix := newTestRedis(t)
	l := newRedisLimiter(client, prefix)
	p := newPolicy("tiny", tinyLimits) // capacity 10
	b, err := l.allowN(context.Background(), "org", p, 4)
	if err != nil || b.admitted != 4 {
		t.Fatalf("first batch of 4: %+v, %v", b, err)
	}
	b, err = l.allowN(context.Background(), "org", p, 25)
	if err != nil || b.admitted != 6 {
		t.Fatalf("batch of 25 with 6 tokens left: %+v, %v; want 6 admitted", b, err)
	}
	if b.dayUsed != 10 {
		t.Errorf("daily count %d after 10 admissions, want 10: denials were charged", b.dayUsed)
	}
	if _, n := dayCounter(t, client, l.keys("org")[1]); n != 10 {
		t.Errorf("daily counter in Redis %d, want 10", n)
	}
}

func TestBatchDecisionsAreSequential(t *testing.T) {
	b := batchResult{admitted: 3, tokens: 2 * microTokens, dayUsed: 10, now: 5}
	for i, want := range []struct {
		allowed bool
		tokens  int64
		used    int64
	}{{true, 4, 8}, {true, 3, 9}, {true, 2, 10}, {false, 2, 10}} {
		d := b.decision(int64(i))
		if d.Allowed != want.allowed || d.Tokens != want.tokens*microTokens || d.DayUsed != want.used {
			t.Errorf("member %d: %+v, want allowed=%v tokens=%d used=%d", i, d, want.allowed, want.tokens, want.used)
		}
	}
}
