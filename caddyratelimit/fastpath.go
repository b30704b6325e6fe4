package caddyratelimit

// DefaultMaxDeniedOrgs bounds the organizations remembered as denied.
const DefaultMaxDeniedOrgs = 100_000

// deniedEntry remembers a denial by Redis.
type deniedEntry struct {
	dec    Decision // Redis's answer
	limits Limits   // the limits it was decided with
	at     int64    // local µs when it was received
	until  int64    // local µs before which no request can be admitted
}

// deniedOrgs is the over-limit fast path: once Redis has denied an
// organization until T, this instance denies it locally until T without
// calling Redis. That is exact, not an approximation: no token can appear
// sooner. So a flood from one abusive tenant does not multiply Redis load.
// Times are local (a span measured on this clock, added to Redis's answer),
// so clock skew between the gateway and Redis does not matter.
type deniedOrgs struct {
	m *shardedMap[deniedEntry]
}

func newDeniedOrgs(maxOrgs int) *deniedOrgs {
	if maxOrgs <= 0 {
		maxOrgs = DefaultMaxDeniedOrgs
	}
	return &deniedOrgs{m: newShardedMap[deniedEntry](maxOrgs)}
}

// lookup returns the standing denial of the organization at local time now,
// advanced to now so that its headers stay exact.
func (d *deniedOrgs) lookup(orgID string, now int64, l Limits) (Decision, bool) {
	sh := d.m.shardOf(orgID)
	sh.mu.Lock()
	e, ok := sh.m[orgID]
	if ok && (now >= e.until || e.limits != l) {
		delete(sh.m, orgID)
		ok = false
	}
	sh.mu.Unlock()
	if !ok {
		return Decision{}, false
	}
	dec := e.dec.advance(e.dec.Now+(now-e.at), l)
	dec.Source = SourceFastPath
	return dec, true
}

// remember records a denial by Redis received at local time now. When the
// organization's shard is full of live entries it is not remembered (the
// next request asks Redis again).
func (d *deniedOrgs) remember(orgID string, dec Decision, now int64, l Limits) {
	e := deniedEntry{dec: dec, limits: l, at: now, until: now + (dec.RetryAt(l) - dec.Now)}
	sh := d.m.shardOf(orgID)
	sh.mu.Lock()
	_, present := sh.m[orgID]
	if !present && d.m.full(sh) {
		sweepShard(sh, func(e deniedEntry) bool { return now >= e.until })
	}
	if present || !d.m.full(sh) {
		sh.m[orgID] = e
	}
	sh.mu.Unlock()
}
