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
		{"absent", nil, "", ErrMissingAuthorization},
		{"empty header", []string{""}, "", ErrMissingAuthorization},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", ErrMultipleAuthorization},
		{"basic scheme", []string{"Basic dXNlcjpwYXNz"}, "", ErrNotBearer},
		{"scheme glued to token", []string{"Bearersk_test_abc123"}, "", ErrNotBearer},
		{"tab separator", []string{"Bearer\tsk_test_abc123"}, "", ErrNotBearer},
		{"short value", []string{"Bear"}, "", ErrNotBearer},
		{"scheme only", []string{"Bearer"}, "", ErrEmptyToken},
		{"spaces only", []string{"Bearer    "}, "", ErrEmptyToken},
		{"257 bytes", []string{"Bearer " + strings.Repeat("k", 257)}, "", ErrTokenTooLong},
		{"trailing space", []string{"Bearer abc "}, "", ErrMalformedToken},
		{"inner space", []string{"Bearer abc def"}, "", ErrMalformedToken},
		{"control character", []string{"Bearer abc\x00def"}, "", ErrMalformedToken},
		{"DEL", []string{"Bearer abc\x7f"}, "", ErrMalformedToken},
		{"non-ASCII", []string{"Bearer clé"}, "", ErrMalformedToken},
		{"padding in the middle", []string{"Bearer ab=cd"}, "", ErrMalformedToken},
		{"padding only", []string{"Bearer =="}, "", ErrMalformedToken},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseBearer(tc.values)
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
		token, err := ParseBearer([]string{header})
		if err != nil {
			if token != "" {
				t.Fatalf("error %v with non-empty token %q", err, token)
			}
			return
		}
		if len(token) == 0 || len(token) > MaxTokenBytes {
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
