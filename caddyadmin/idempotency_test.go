package caddyadmin

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestSealedReplyOpensOnlyWithTheSameTokenAndKey(t *testing.T) {
	a, other := newTestAdmin(t, testToken), newTestAdmin(t, "another-admin-token-0123456789")
	id := a.idempotencyID("k1")
	rep := &reply{status: 201, location: "/v1/keys/x", body: []byte(`{"key":"sk_live_secret"}`), keyID: "x"}
	sealed, err := a.seal("k1", id, rep)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("sk_live_secret")) {
		t.Fatal("the sealed record holds the key in clear")
	}
	got, err := a.open("k1", id, sealed)
	if err != nil || got.status != 201 || got.location != "/v1/keys/x" || string(got.body) != string(rep.body) || !got.replayed {
		t.Fatalf("open: %+v, %v", got, err)
	}
	var api *apiError
	if _, err := other.open("k1", id, sealed); !errors.As(err, &api) || api.status != http.StatusConflict {
		t.Errorf("another token opened it or failed wrongly: %v", err)
	}
	if _, err := a.open("k2", id, sealed); err == nil {
		t.Error("another Idempotency-Key opened it")
	}
	if _, err := a.open("k1", a.idempotencyID("k2"), sealed); err == nil {
		t.Error("the record opened under another row's ID")
	}
	sealed[len(sealed)-1] ^= 1
	if _, err := a.open("k1", id, sealed); err == nil {
		t.Error("a tampered record opened")
	}
}

func TestFingerprintIsCanonical(t *testing.T) {
	fp := func(method, path, body string) [32]byte {
		return fingerprint(&call{r: httptest.NewRequest(method, path, nil), body: []byte(body)})
	}
	same := fp("POST", "/v1/orgs", `{"name":"a","plan":"basic","burst":10}`)
	if fp("POST", "/v1/orgs", `{"burst":10,"plan":"basic","name":"a"}`) != same {
		t.Error("member order changes the fingerprint")
	}
	for _, other := range [][3]string{
		{"POST", "/v1/orgs", `{"name":"b","plan":"basic","burst":10}`},
		{"POST", "/v1/orgs/x/keys", `{"name":"a","plan":"basic","burst":10}`},
	} {
		if fp(other[0], other[1], other[2]) == same {
			t.Errorf("%v has the same fingerprint", other)
		}
	}
}

func TestIdempotencyKeyForm(t *testing.T) {
	for key, ok := range map[string]bool{
		"0b9d8a9e-5c1f-4f7e-9a51-2f3c4d5e6f70": true,
		"signup-42":                            true,
		"with space":                           false,
		"tab\tkey":                             false,
		"é":                                    false,
		string(bytes.Repeat([]byte("a"), 256)): false,
	} {
		if err := checkIdempotencyKey(key); (err == nil) != ok {
			t.Errorf("checkIdempotencyKey(%q) = %v", key, err)
		}
	}
}
