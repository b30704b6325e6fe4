package caddyauth

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseBearer(t *testing.T) {
	cases := []struct {
		name    string
		values  []string
		want    string
		wantErr error
	}{
		{"valid", []string{"Bearer sk_test_abc123"}, "sk_test_abc123", nil},
		{"scheme is case-insensitive", []string{"bEaReR sk_test_abc123"}, "sk_test_abc123", nil},
		{"several spaces", []string{"Bearer   sk_test_abc123"}, "sk_test_abc123", nil},
		{"token68 punctuation and padding", []string{"Bearer a-b.c_d~e+f/g=="}, "a-b.c_d~e+f/g==", nil},
		{"exactly 256 bytes", []string{"Bearer " + strings.Repeat("k", 256)}, strings.Repeat("k", 256), nil},
		{"absent", nil, "", errMissingAuthorization},
		{"empty header", []string{""}, "", errMissingAuthorization},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", errMultipleAuthorization},
		{"basic scheme", []string{"Basic dXNlcjpwYXNz"}, "", errNotBearer},
		{"scheme glued to token", []string{"Bearersk_test_abc123"}, "", errNotBearer},
		{"tab separator", []string{"Bearer\tsk_test_abc123"}, "", errNotBearer},
		{"short value", []string{"Bear"}, "", errNotBearer},
		{"scheme only", []string{"Bearer"}, "", errEmptyToken},
		{"spaces only", []string{"Bearer    "}, "", errEmptyToken},
		{"257 bytes", []string{"Bearer " + strings.Repeat("k", 257)}, "", errTokenTooLong},
		{"trailing space", []string{"Bearer abc "}, "", errMalformedToken},
		{"inner space", []string{"Bearer abc def"}, "", errMalformedToken},
		{"control character", []string{"Bearer abc\x00def"}, "", errMalformedToken},
		{"DEL", []string{"Bearer abc\x7f"}, "", errMalformedToken},
		{"non-ASCII", []string{"Bearer clé"}, "", errMalformedToken},
		{"padding in the middle", []string{"Bearer ab=cd"}, "", errMalformedToken},
		{"padding only", []string{"Bearer =="}, "", errMalformedToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBearer(tc.values)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("token = %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzParseBearer checks the parser's invariants on arbitrary input: it never
// panics, and whatever it accepts is a 1–256 byte token68 that appears at
// the end of the header after a Bearer scheme.
func FuzzParseBearer(f *testing.F) {
	for _, header := range []string{
		"Bearer sk_test_abc123", "bearer x", "Bearer", "Bearer ", "Basic abc",
		"Bearer a b", "Bearer \x00", "Bearer " + strings.Repeat("a", 300),
		"Bearer abc==", "Bearer ==abc", "BEARER\tabc", "Bearer\u00a0abc", "",
	} {
		f.Add(header)
	}
	f.Fuzz(func(t *testing.T, header string) {
		token, err := parseBearer([]string{header})
		if err != nil {
			if token != "" {
				t.Fatalf("error %v with non-empty token %q", err, token)
			}
			return
		}
		if len(token) == 0 || len(token) > maxTokenBytes {
			t.Fatalf("accepted token of %d bytes", len(token))
		}
		if !utf8.ValidString(token) || !isToken68(token) {
			t.Fatalf("accepted a non-token68 token %q", token)
		}
		if !strings.HasSuffix(header, token) || !strings.EqualFold(header[:6], "bearer") {
			t.Fatalf("token %q is not the tail of a Bearer header %q", token, header)
		}
		if strings.TrimRight(strings.TrimSuffix(header, token), " ") != header[:6] {
			t.Fatalf("something other than spaces between scheme and token in %q", header)
		}
	})
}
