package tenant

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestNewUUIDIsAVersion4UUID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := make(map[string]bool)
	for range 10000 {
		id := newUUID()
		if !re.MatchString(id) {
			t.Fatalf("%q is not a version 4 UUID", id)
		}
		parsed, err := uuid.Parse(id)
		if err != nil || parsed.Version() != 4 || parsed.Variant() != uuid.RFC4122 {
			t.Fatalf("%q: parsed %v, version %v, variant %v", id, err, parsed.Version(), parsed.Variant())
		}
		if seen[id] {
			t.Fatalf("%q generated twice", id)
		}
		seen[id] = true
	}
}

func TestRequestIDFor(t *testing.T) {
	for in, keep := range map[string]bool{
		"abc-123._X":             true,
		strings.Repeat("a", 128): true,
		strings.Repeat("a", 129): false,
		"":                       false,
		"has space":              false,
		"semi;colon":             false,
		"ünïcode":                false,
	} {
		got := RequestIDFor(in)
		if keep && got != in {
			t.Errorf("RequestIDFor(%q) = %q, want it kept", in, got)
		}
		if !keep && (got == in || !ValidRequestID(got)) {
			t.Errorf("RequestIDFor(%q) = %q, want a new valid ID", in, got)
		}
	}
}

func BenchmarkNewUUID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = newUUID()
	}
}
