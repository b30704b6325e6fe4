// Command benchbackend is the upstream of scripts/bench.sh: it answers every
// request with a small fixed JSON body, as cheaply as net/http allows, so
// the benchmark measures the gateway rather than the backend.
package main

import (
	"flag"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9100", "listen address")
	flag.Parse()
	body := []byte(`{"ok":true}` + "\n")
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = []string{"application/json"}
		_, _ = w.Write(body)
	})
	log.Fatal(http.ListenAndServe(*addr, handler))
}
