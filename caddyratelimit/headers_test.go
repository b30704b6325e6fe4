package caddyratelimit

import (
	"net/http"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/testenv"
)

func TestHeaderValues(t *testing.T) {
	clock := testenv.NewClock(mustTime(t, "2026-01-25T14:31:15.250Z"))
	l := newTestLocal(t, clock)
	p := newPolicy("tiny", tinyLimits)
	hw := new(headerWriter)

	cases := []struct {
		name string
		do   func() decision
		want map[string]string
	}{{
		name: "first request",
		do:   func() decision { return decide(t, l, "org", p) },
		want: map[string]string{
			"X-RateLimit-Limit-Minute":     "6",
			"X-RateLimit-Limit-Day":        "1000",
			"X-RateLimit-Burst":            "4",
			"X-RateLimit-Remaining-Minute": "9",
			"X-RateLimit-Remaining-Day":    "999",
			// one token missing, 10 s to refill, rounded up to the second
			"X-RateLimit-Reset-Minute": "2026-01-25T14:31:26Z",
			"X-RateLimit-Reset-Day":    "2026-01-26T00:00:00Z",
			"RateLimit-Policy":         `"minute";q=10;w=60, "day";q=1000;w=86400`,
			// 34 124.75 s to midnight, rounded up
			"RateLimit": `"minute";r=9;t=10, "day";r=999;t=34125`,
		},
	}, {
		name: "empty bucket, 4 s later",
		do: func() decision {
			admitted(t, l, "org", p, 9)
			clock.Advance(4 * time.Second)
			return decide(t, l, "org", p)
		},
		want: map[string]string{
			"X-RateLimit-Remaining-Minute": "0",
			"X-RateLimit-Remaining-Day":    "990",
			// 0.4 token held: 6 s to the next one, 96 s to full
			"X-RateLimit-Reset-Minute": "2026-01-25T14:32:56Z",
			"RateLimit":                `"minute";r=0;t=6, "day";r=990;t=34121`,
		},
	}, {
		name: "another organization an hour later",
		do: func() decision {
			clock.Advance(time.Hour)
			return decide(t, l, "other", p)
		},
		want: map[string]string{
			"X-RateLimit-Remaining-Minute": "9",
			"RateLimit":                    `"minute";r=9;t=10, "day";r=999;t=30521`,
		},
	}}
	for _, c := range cases {
		d := c.do()
		h := http.Header{}
		hw.write(h, p, &d)
		for k, want := range c.want {
			if got := h.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", c.name, k, got, want)
			}
		}
	}
}

func TestRateLimitFieldOmitsResetWhenFull(t *testing.T) {
	p := newPolicy("tiny", tinyLimits)
	now := mustTime(t, "2026-01-25T23:00:00Z").UnixMicro()
	d := decision{Tokens: 10 * microTokens, Now: now}
	got := string(appendRateLimit(nil, &d, p.Limits))
	if want := `"minute";r=10, "day";r=1000;t=3600`; got != want {
		t.Errorf("RateLimit = %q, want %q", got, want)
	}
}

func TestStaticHeadersOnly(t *testing.T) {
	h := http.Header{}
	new(headerWriter).writeStatic(h, newPolicy("tiny", tinyLimits))
	if h.Get("X-RateLimit-Limit-Minute") != "6" || h.Get("RateLimit-Policy") == "" {
		t.Errorf("static headers missing: %v", h)
	}
	if h.Get("X-RateLimit-Remaining-Minute") != "" || h.Get("RateLimit") != "" {
		t.Errorf("state headers set without a state: %v", h)
	}
}

func TestHeaderSlicesAreNotShared(t *testing.T) {
	// A later handler that edits a header value in place must not change
	// the value other requests get.
	p := newPolicy("tiny", tinyLimits)
	hw := new(headerWriter)
	d := decision{Tokens: microTokens, Now: time.Now().UnixMicro()}
	h1, h2 := http.Header{}, http.Header{}
	hw.write(h1, p, &d)
	h1["X-Ratelimit-Limit-Minute"][0] = "tampered"
	hw.write(h2, p, &d)
	if got := h2.Get("X-RateLimit-Limit-Minute"); got != "6" {
		t.Fatalf("second response got %q", got)
	}
}
