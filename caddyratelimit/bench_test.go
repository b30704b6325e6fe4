package caddyratelimit

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/tenantgate/tenantgate/internal/tenant"
)

// benchLimits never deny, so every iteration is a full admission.
var benchLimits = limits{PerMinute: maxCapacity / 2, PerDay: maxPerDay, Burst: maxCapacity / 2}

// BenchmarkLocalDecision: one in-process decision, 1 000 organizations.
func BenchmarkLocalDecision(b *testing.B) {
	l := newLocalLimiter(0, nil)
	defer l.Destruct()
	p := newPolicy("bench", benchLimits)
	orgs := benchOrgs(1000)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := l.Allow(ctx, orgs[i%len(orgs)], p); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

// BenchmarkRedisDecision: one decision on Redis through the failure-policy
// wrapper, as the handler makes it (EVALSHA, timeout context, metrics).
func BenchmarkRedisDecision(b *testing.B) {
	client, prefix := newTestRedis(b)
	m := newMetrics()
	opts, err := redisConfig{addr: client.Options().Addr}.options()
	if err != nil {
		b.Fatal(err)
	}
	shared := newSharedRedis(opts, m, zap.NewNop())
	defer shared.Destruct()
	f := &failoverLimiter{
		redis: newRedisLimiter(shared.client, prefix), breaker: shared.breaker, denied: shared.denied,
		local: newLocalLimiter(0, nil), onError: onErrorLocal, timeout: time.Second, m: m, clock: time.Now,
	}
	defer f.local.Destruct()
	p := newPolicy("bench", benchLimits)
	orgs := benchOrgs(1000)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(16) // many requests in flight, as under load
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			d, err := f.Allow(ctx, orgs[i%len(orgs)], p)
			if err != nil || d.Source != sourceRedis {
				b.Fatalf("decision %+v, %v", d, err)
			}
			i++
		}
	})
}

// BenchmarkLearn: recording one Redis answer for the fallback (the cost
// every Redis decision pays under on_redis_error local), 1 000 organizations.
func BenchmarkLearn(b *testing.B) {
	l := newLocalLimiter(0, nil)
	defer l.Destruct()
	orgs := benchOrgs(1000)
	now := time.Now().UnixMicro()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.learn(orgs[i%len(orgs)], benchLimits, 5*microTokens, 17, now, now)
			i++
		}
	})
}

// BenchmarkLearnMemory reports the heap the fallback's record takes per
// organization (bytes/org), for 100 000 organizations.
func BenchmarkLearnMemory(b *testing.B) {
	const n = 100_000
	orgs := benchOrgs(n)
	now := time.Now().UnixMicro()
	var perOrg float64
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		l := newLocalLimiter(0, nil)
		for _, org := range orgs {
			l.learn(org, benchLimits, 5*microTokens, 17, now, now)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		perOrg = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(l)
		l.Destruct()
	}
	b.ReportMetric(perOrg, "bytes/org")
}

// BenchmarkHandlerLocal: the whole handler for an admitted request
// (identity lookup, decision, nine headers, metrics), in process.
func BenchmarkHandlerLocal(b *testing.B) {
	ctx := newCaddyContext(b)
	rl := &RateLimit{Plans: []Plan{{Name: "bench", PerMinute: benchLimits.PerMinute, PerDay: benchLimits.PerDay, Burst: benchLimits.Burst}}}
	if err := rl.Provision(ctx); err != nil {
		b.Fatal(err)
	}
	defer rl.Cleanup()
	r := request(tenant.NewIdentity("org-bench", "bench", "k", tenant.LimitOverrides{}))
	// A fresh access-log field list per request, as Caddy gives each request.
	extra := new(caddyhttp.ExtraLogFields)
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.ExtraLogFieldsCtxKey, extra))
	next := new(nextHandler)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		*extra = caddyhttp.ExtraLogFields{}
		clear(w.Header())
		if err := rl.ServeHTTP(w, r, next); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHeaders: rendering the rate-limit headers of one decision.
func BenchmarkHeaders(b *testing.B) {
	p := newPolicy("bench", tinyLimits)
	d := decision{Allowed: true, Tokens: 3_400_000, DayUsed: 17, Now: time.Now().UnixMicro()}
	hw := new(headerWriter)
	h := make(http.Header, 16)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		hw.write(h, p, &d)
	}
}

func benchOrgs(n int) []string {
	orgs := make([]string, n)
	for i := range orgs {
		orgs[i] = "org-" + strconv.Itoa(i)
	}
	return orgs
}
