package usagestore_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tenantgate/tenantgate/internal/usagetest"
	"github.com/tenantgate/tenantgate/usagestore"
)

func TestCloudEventRoundTrip(t *testing.T) {
	e := usagetest.Events(1, "org \"quoted\"\n", base, 0)[0]
	e.Node = "node-1"
	e.Method = "GET\x7f\xff"
	b := e.AppendCloudEvent(nil)
	var generic map[string]any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	for k, want := range map[string]any{"specversion": "1.0", "type": "tenantgate.request.v1", "source": "tenantgate://node-1",
		"subject": e.OrgID, "datacontenttype": "application/json", "time": "2026-03-14T15:09:26.535897932Z"} {
		if generic[k] != want {
			t.Errorf("%s = %v, want %v", k, generic[k], want)
		}
	}
	got, err := usagestore.ParseCloudEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	e.Method = "GET\x7f\ufffd"
	if got != e {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
	}
}

func TestParseCloudEventRejectsPoison(t *testing.T) {
	good := usagetest.Events(1, "org", time.Now(), 0)[0].AppendCloudEvent(nil)
	for name, b := range map[string][]byte{
		"not json":     []byte("{oops"),
		"wrong type":   []byte(strings.Replace(string(good), "tenantgate.request.v1", "other.v1", 1)),
		"wrong spec":   []byte(strings.Replace(string(good), `"1.0"`, `"0.3"`, 1)),
		"bad id":       []byte(strings.Replace(string(good), `"id":"`, `"id":"x`, 1)),
		"bad outcome":  []byte(strings.Replace(string(good), `"outcome":"`, `"outcome":"x`, 1)),
		"no status":    []byte(strings.Replace(string(good), `"status":`, `"statuz":`, 1)),
		"huge":         append(append([]byte{}, good[:len(good)-2]...), []byte(`,"x":"`+strings.Repeat("a", 9000)+`"}}`)...),
		"empty object": []byte("{}"),
	} {
		if _, err := usagestore.ParseCloudEvent(b); !errors.Is(err, usagestore.ErrPoison) {
			t.Errorf("%s: err = %v, want ErrPoison", name, err)
		}
	}
}
