// Package caddyfileutil reads the Caddyfile arguments that Tenantgate's
// directives have in common (durations, counts, optional values and
// booleans) and checks the shape of their blocks (no inline arguments,
// each setting once, known subdirectives), so that every directive reports
// the same mistake with the same words and the line it is on.
//
// Each function is called with the dispenser on a subdirective's name and
// consumes its arguments. Errors start with the directive, so that a
// message read in a log names where to look: "tenant_auth: cache_ttl:
// expected a positive duration such as 15m, got "soon"".
package caddyfileutil

import (
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// NoInlineArgs fails when the directive, just read, has arguments on its
// own line: its settings go in a block.
func NoInlineArgs(d *caddyfile.Dispenser, directive string) error {
	if d.NextArg() {
		return d.Errf("%s: unexpected argument %q; settings go in a block", directive, d.Val())
	}
	return nil
}

// Unknown is the error for a subdirective the directive does not know,
// listing those it does.
func Unknown(d *caddyfile.Dispenser, directive string, known ...string) error {
	if len(known) == 1 {
		return d.Errf("%s: unknown subdirective %q (expected: %s)", directive, d.Val(), known[0])
	}
	return d.Errf("%s: unknown subdirective %q (expected one of: %s)", directive, d.Val(), strings.Join(known, ", "))
}

// Once refuses a setting given twice in one block: the second would
// silently replace the first.
type Once struct {
	directive  string
	repeatable []string
	firstLine  map[string]int
}

// NewOnce tracks the subdirectives of one block of directive; those named
// repeatable may be given several times.
func NewOnce(directive string, repeatable ...string) *Once {
	return &Once{directive: directive, repeatable: repeatable, firstLine: make(map[string]int)}
}

// Check records the subdirective the dispenser is on, and fails when it
// was given before in the block and is not repeatable. Call it first for
// each subdirective.
func (o *Once) Check(d *caddyfile.Dispenser) error {
	sub := d.Val()
	first, seen := o.firstLine[sub]
	switch {
	case !seen:
		o.firstLine[sub] = d.Line()
	case slices.Contains(o.repeatable, sub):
	case len(o.repeatable) == 0:
		return d.Errf("%s: %s given more than once (first on line %d); give each setting once", o.directive, sub, first)
	default:
		return d.Errf("%s: %s given more than once (first on line %d); only %s may repeat",
			o.directive, sub, first, strings.Join(o.repeatable, ", "))
	}
	return nil
}

// Duration reads "<name> <duration>": one positive duration in Caddy's
// syntax (30s, 15m, 7d). example shows the form in errors ("15m").
func Duration(d *caddyfile.Dispenser, directive, example string) (caddy.Duration, error) {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return 0, d.Errf("%s: %s: expected one duration such as %s, got %d arguments", directive, name, example, len(args))
	}
	dur, err := caddy.ParseDuration(args[0])
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s: %s: expected a positive duration such as %s, got %q", directive, name, example, args[0])
	}
	return caddy.Duration(dur), nil
}

// Int reads "<name> <n>": one whole number from lo to hi. unit names what
// is counted in errors ("entries", "events").
func Int(d *caddyfile.Dispenser, directive, unit string, lo, hi int) (int, error) {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) != 1 {
		return 0, d.Errf("%s: %s: expected one number of %s, got %d arguments", directive, name, unit, len(args))
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < lo || n > hi {
		return 0, d.Errf("%s: %s: expected a number of %s from %d to %d, got %q", directive, name, unit, lo, hi, args[0])
	}
	return n, nil
}

// OptionalValue reads "<name> [<value>]": none (such as an unset
// environment variable, {$DATABASE_URL}) reads as "". what names the value
// in errors ("URL", "value").
func OptionalValue(d *caddyfile.Dispenser, directive, what string) (string, error) {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) > 1 {
		return "", d.Errf("%s: %s: expected one %s, got %d arguments", directive, name, what, len(args))
	}
	return strings.Join(args, ""), nil
}

// OptionalBool reads "<name> [true|false]"; the bare name means true.
func OptionalBool(d *caddyfile.Dispenser, directive string) (bool, error) {
	name := d.Val()
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
		return true, nil
	case 1:
		v, err := strconv.ParseBool(args[0])
		if err != nil {
			return false, d.Errf("%s: %s: expected true or false, got %q", directive, name, args[0])
		}
		return v, nil
	default:
		return false, d.Errf("%s: %s: expected at most one argument (true or false), got %d", directive, name, len(args))
	}
}

// HasPlaceholder reports whether s holds a {…} placeholder, such as
// {env.DATABASE_URL}, which is expanded when the config is loaded.
func HasPlaceholder(s string) bool {
	open := strings.IndexByte(s, '{')
	return open >= 0 && strings.IndexByte(s[open:], '}') > 0
}
