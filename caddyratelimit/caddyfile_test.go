package caddyratelimit

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func parse(t *testing.T, input string) (*RateLimit, error) {
	t.Helper()
	rl := new(RateLimit)
	err := rl.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
	return rl, err
}

func TestCaddyfileFullBlock(t *testing.T) {
	rl, err := parse(t, `tenant_ratelimit {
		redis_addr 10.0.0.1:6379,10.0.0.2:6379
		redis_password s3cret
		redis_db 0
		redis_timeout 250ms
		on_redis_error deny
		plan tiny 6 1000 burst 4
		plan daily 600 5
	}`)
	if err != nil {
		t.Fatal(err)
	}
	want := &RateLimit{
		RedisAddr:     "10.0.0.1:6379,10.0.0.2:6379",
		RedisPassword: "s3cret",
		RedisTimeout:  caddy.Duration(250 * time.Millisecond),
		OnRedisError:  "deny",
		Plans: []Plan{
			{Name: "tiny", PerMinute: 6, PerDay: 1000, Burst: 4},
			{Name: "daily", PerMinute: 600, PerDay: 5},
		},
	}
	if !reflect.DeepEqual(rl, want) {
		got, _ := json.Marshal(rl)
		exp, _ := json.Marshal(want)
		t.Fatalf("got %s\nwant %s", got, exp)
	}
	if err := rl.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestCaddyfileEmptyValuesMeanUnset(t *testing.T) {
	// As the default Caddyfile reads with REDIS_ADDR etc. unset.
	rl, err := parse(t, `tenant_ratelimit {
		redis_addr
		redis_password ""
		redis_db
	}`)
	if err != nil {
		t.Fatal(err)
	}
	if rl.RedisAddr != "" || rl.RedisPassword != "" || rl.RedisDB != "" || rl.Plans != nil {
		t.Fatalf("got %+v, want everything unset", rl)
	}
}

func TestCaddyfileErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		line, want string
	}{
		{"plan tiny 0 1000", "per_minute must be a positive integer"},
		{"plan tiny 6 -5", "per_day must be a positive integer"},
		{"plan tiny 6 1000 burst -1", "burst must be zero or a positive integer"},
		{"plan tiny six 1000", `per_minute must be a whole number, got "six"`},
		{"plan tiny 6", "expected <name> <per_minute> <per_day> [burst <n>]"},
		{"plan tiny 6 1000 bust 4", `got "bust" where burst was expected`},
		{"plan t!ny 6 1000", "plan name"},
		{"plan huge 100000000 1000 burst 1", "per_minute + burst must be at most"},
		{"redis_timeout soon", `expected a positive duration such as 100ms, got "soon"`},
		{"redis_timeout 0s", `expected a positive duration such as 100ms, got "0s"`},
		{"redis_timeout", "expected one duration"},
		{"on_redis_error retry", `expected local, allow or deny, got "retry"`},
		{"on_redis_error", "expected local, allow or deny"},
		{"redis_db two", "expected a database number"},
		{"redis_db -1", "expected a database number"},
		{"redis_addr localhost", `"localhost" is not host:port`},
		{"redis_addr 10.0.0.1:redis", `"10.0.0.1:redis" is not host:port`},
		{"redis_addr 10.0.0.1:70000", `"10.0.0.1:70000" is not host:port`},
		{"redis_addr redis://h:6379/x", "redis_addr"},
		{"redis_addr redis://[::1", "redis_addr"},
		{"redis_addr a:1,b:2\n\t\tredis_db 3", "a Redis Cluster has only database 0"},
		{"rate 100", `unknown subdirective "rate"`},
	}
	for _, c := range cases {
		input := "tenant_ratelimit {\n\t\t" + c.line + "\n}"
		_, err := parse(t, input)
		if err == nil {
			t.Errorf("%q: no error", c.line)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %q does not say %q", c.line, err, c.want)
		}
		if !lineRef.MatchString(err.Error()) {
			t.Errorf("%q: error %q does not name the line", c.line, err)
		}
	}
}

// lineRef is how Caddyfile errors name the place: "Testfile:<line>".
var lineRef = regexp.MustCompile(`Testfile:[0-9]+`)

func TestCaddyfileDuplicatePlan(t *testing.T) {
	_, err := parse(t, "tenant_ratelimit {\nplan a 1 1\nplan a 2 2\n}")
	if err == nil || !strings.Contains(err.Error(), "declared more than once") {
		t.Fatalf("err = %v", err)
	}
}

// TestCaddyfileRepeatedSubdirectiveIsAnError: a setting given twice is an
// error naming the line, not "the last one wins"; plan is repeatable,
// once per name.
func TestCaddyfileRepeatedSubdirectiveIsAnError(t *testing.T) {
	for _, line := range []string{
		"redis_addr 127.0.0.1:6379", "redis_password pw", "redis_db 1", "redis_timeout 100ms", "on_redis_error deny",
	} {
		input := "tenant_ratelimit {\n" + line + "\n" + line + "\n}"
		_, err := parse(t, input)
		sub := strings.Fields(line)[0]
		if err == nil || !strings.Contains(err.Error(), sub+" given more than once (first on line 2)") || !strings.Contains(err.Error(), "Testfile:3") {
			t.Errorf("%s twice: err = %v, want an error naming line 3 and the first one", sub, err)
		}
	}
	rl, err := parse(t, "tenant_ratelimit {\nplan a 1 1\nplan b 2 2\n}")
	if err != nil || len(rl.Plans) != 2 {
		t.Fatalf("two different plans: %+v, %v", rl.Plans, err)
	}
}

// TestCaddyfilePlaceholdersStayUnexpanded: redis_addr, redis_password and
// redis_db accept runtime placeholders such as {env.REDIS_ADDR}; they are
// kept as written in the JSON (no password in clear) and expanded when the
// handler is provisioned, in the environment of the server.
func TestCaddyfilePlaceholdersStayUnexpanded(t *testing.T) {
	rl, err := parse(t, `tenant_ratelimit {
		redis_addr {env.REDIS_ADDR}
		redis_password {env.REDIS_PASSWORD}
		redis_db {env.REDIS_DB}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(rl)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"redis_addr":"{env.REDIS_ADDR}","redis_password":"{env.REDIS_PASSWORD}","redis_db":"{env.REDIS_DB}"}`
	if string(out) != want {
		t.Fatalf("JSON %s, want %s", out, want)
	}
	if err := rl.Validate(); err != nil {
		t.Fatalf("placeholders refused before expansion: %v", err)
	}
	// A number stays a number in the JSON.
	rl, _ = parse(t, "tenant_ratelimit {\nredis_addr h:1\nredis_db 2\n}")
	if out, _ := json.Marshal(rl); !strings.Contains(string(out), `"redis_db":2`) {
		t.Errorf("JSON %s, want redis_db 2 as a number", out)
	}
}

func TestValidateRejectsBadJSONConfig(t *testing.T) {
	for _, rl := range []RateLimit{
		{OnRedisError: "maybe"},
		{RedisTimeout: caddy.Duration(-time.Second)},
		{RedisDB: "-1"},
		{RedisDB: "two"},
		{RedisAddr: "localhost"},
		{RedisAddr: "10.0.0.1:notaport"},
		{RedisAddr: "a:1,b:2", RedisDB: "3"},
		{RedisAddr: "http://h:6379"},
		{Plans: []Plan{{Name: "x", PerMinute: 1, PerDay: 0}}},
		{Plans: []Plan{{Name: "x", PerMinute: 1, PerDay: 1}, {Name: "x", PerMinute: 2, PerDay: 2}}},
	} {
		if err := rl.Validate(); err == nil {
			t.Errorf("%+v: no error", rl)
		}
	}
}

func TestRedisAddrForms(t *testing.T) {
	cases := []struct {
		addr, password string
		db             int
		addrs          []string
		master         string
		cluster, tls   bool
		wantDB         int
		wantPassword   string
	}{
		{addr: "127.0.0.1:6379", addrs: []string{"127.0.0.1:6379"}},
		{addr: "a:1, b:2", addrs: []string{"a:1", "b:2"}},
		{addr: "redis://:pw@h:6380/2", addrs: []string{"h:6380"}, wantDB: 2, wantPassword: "pw"},
		{addr: "rediss://h:6380", addrs: []string{"h:6380"}, tls: true},
		{addr: "redis://h:6380/2", password: "explicit", db: 5, addrs: []string{"h:6380"}, wantDB: 5, wantPassword: "explicit"},
		{addr: "redis://s1:26379?master_name=mymaster&addr=s2:26379", addrs: []string{"s1:26379", "s2:26379"}, master: "mymaster"},
		{addr: "redis://n1:7000?addr=n2:7000", addrs: []string{"n1:7000", "n2:7000"}, cluster: true},
	}
	for _, c := range cases {
		o, err := redisConfig{addr: c.addr, password: c.password, db: c.db}.options()
		if err != nil {
			t.Errorf("%s: %v", c.addr, err)
			continue
		}
		if !reflect.DeepEqual(o.Addrs, c.addrs) || o.MasterName != c.master || o.IsClusterMode != c.cluster ||
			(o.TLSConfig != nil) != c.tls || o.DB != c.wantDB || o.Password != c.wantPassword {
			t.Errorf("%s: addrs=%v master=%q cluster=%v tls=%v db=%d password=%q", c.addr, o.Addrs, o.MasterName, o.IsClusterMode, o.TLSConfig != nil, o.DB, o.Password)
		}
		if !o.ContextTimeoutEnabled || o.MaxRetries != -1 {
			t.Errorf("%s: calls must be bounded by their context and never retried", c.addr)
		}
	}
	a, _ := redisConfig{addr: "h:1", password: "x"}.options()
	b, _ := redisConfig{addr: "h:1", password: "y"}.options()
	if poolKey(a) == poolKey(b) {
		t.Error("different passwords share a pooled client")
	}
	if strings.Contains(poolKey(a), "x|") || strings.HasSuffix(poolKey(a), "x") {
		t.Errorf("pool key %q shows the password", poolKey(a))
	}
}
