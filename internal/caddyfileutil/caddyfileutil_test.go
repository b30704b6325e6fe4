package caddyfileutil

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// sub returns a dispenser on the subdirective of "d {\n<line>\n}".
func sub(t *testing.T, line string) *caddyfile.Dispenser {
	t.Helper()
	d := caddyfile.NewTestDispenser("d {\n" + line + "\n}")
	d.Next()
	if !d.NextBlock(0) {
		t.Fatalf("%q: no subdirective", line)
	}
	return d
}

// wantErr checks that err says want and names the line.
func wantErr(t *testing.T, input string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%q: no error, want %q", input, want)
		return
	}
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Testfile:") {
		t.Errorf("%q: error %q, want it to say %q and name the line", input, err, want)
	}
}

func TestDuration(t *testing.T) {
	got, err := Duration(sub(t, "ttl 15m"), "d", "15m")
	if err != nil || got != caddy.Duration(15*time.Minute) {
		t.Fatalf("ttl 15m: %v, %v", got, err)
	}
	for line, want := range map[string]string{
		"ttl":       "d: ttl: expected one duration such as 15m, got 0 arguments",
		"ttl 1m 2m": "expected one duration such as 15m, got 2 arguments",
		"ttl soon":  `d: ttl: expected a positive duration such as 15m, got "soon"`,
		"ttl 0s":    `expected a positive duration such as 15m, got "0s"`,
		"ttl -5m":   `expected a positive duration such as 15m, got "-5m"`,
	} {
		_, err := Duration(sub(t, line), "d", "15m")
		wantErr(t, line, err, want)
	}
}

func TestInt(t *testing.T) {
	got, err := Int(sub(t, "size 64"), "d", "entries", 1, 100)
	if err != nil || got != 64 {
		t.Fatalf("size 64: %v, %v", got, err)
	}
	for line, want := range map[string]string{
		"size":      "d: size: expected one number of entries, got 0 arguments",
		"size 0":    `expected a number of entries from 1 to 100, got "0"`,
		"size 101":  `got "101"`,
		"size many": `got "many"`,
	} {
		_, err := Int(sub(t, line), "d", "entries", 1, 100)
		wantErr(t, line, err, want)
	}
}

func TestOptionalValueAndBool(t *testing.T) {
	if v, err := OptionalValue(sub(t, "url"), "d", "URL"); err != nil || v != "" {
		t.Errorf("no value: %q, %v; want empty", v, err)
	}
	if v, err := OptionalValue(sub(t, "url postgres://h/db"), "d", "URL"); err != nil || v != "postgres://h/db" {
		t.Errorf("one value: %q, %v", v, err)
	}
	_, err := OptionalValue(sub(t, "url a b"), "d", "URL")
	wantErr(t, "url a b", err, "d: url: expected one URL, got 2 arguments")

	for line, want := range map[string]bool{"tls": true, "tls true": true, "tls false": false} {
		if got, err := OptionalBool(sub(t, line), "d"); err != nil || got != want {
			t.Errorf("%q: %v, %v; want %v", line, got, err, want)
		}
	}
	_, err = OptionalBool(sub(t, "tls maybe"), "d")
	wantErr(t, "tls maybe", err, `d: tls: expected true or false, got "maybe"`)
	_, err = OptionalBool(sub(t, "tls true false"), "d")
	wantErr(t, "tls true false", err, "expected at most one argument")
}

func TestNoInlineArgsAndUnknown(t *testing.T) {
	d := caddyfile.NewTestDispenser("d extra {\n}")
	d.Next()
	wantErr(t, "d extra", NoInlineArgs(d, "d"), `d: unexpected argument "extra"; settings go in a block`)
	d = caddyfile.NewTestDispenser("d {\n}")
	d.Next()
	if err := NoInlineArgs(d, "d"); err != nil {
		t.Errorf("d {}: %v", err)
	}
	wantErr(t, "one known", Unknown(sub(t, "tls"), "d", "url"), `d: unknown subdirective "tls" (expected: url)`)
	wantErr(t, "several known", Unknown(sub(t, "tls"), "d", "url", "ttl"), `(expected one of: url, ttl)`)
}

func TestOnce(t *testing.T) {
	check := func(o *Once, input string) error {
		d := caddyfile.NewTestDispenser(input)
		d.Next()
		for d.NextBlock(0) {
			if err := o.Check(d); err != nil {
				return err
			}
			d.RemainingArgs()
		}
		return nil
	}
	if err := check(NewOnce("d", "key"), "d {\nkey a\nttl 1m\nkey b\n}"); err != nil {
		t.Errorf("a repeatable subdirective given twice: %v", err)
	}
	input := "d {\nttl 1m\nkey a\nttl 2m\n}"
	wantErr(t, input, check(NewOnce("d", "key"), input), "d: ttl given more than once (first on line 2); only key may repeat")
	wantErr(t, input, check(NewOnce("d"), input), "give each setting once")
}
