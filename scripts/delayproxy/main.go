// Command delayproxy forwards TCP connections to a target with added
// latency, as if the target were far away. scripts/flood.sh -k puts
// PostgreSQL 20 ms away with it. It prints the address it listens on (a
// free loopback port), then runs until killed.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/tenantgate/tenantgate/internal/faultproxy"
)

func main() {
	target := flag.String("target", "127.0.0.1:5432", "address to forward to")
	delay := flag.Duration("delay", 0, "latency added in each direction (a round trip costs twice this)")
	flag.Parse()
	p, err := faultproxy.New(*target)
	if err != nil {
		log.Fatal(err)
	}
	p.SetDelay(*delay)
	fmt.Println(p.Addr())
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	_ = p.Close()
}
