// Command kafkabroker is the Kafka broker of scripts/bench.sh: franz-go's
// kfake, an in-process cluster speaking the Kafka protocol, on one
// loopback port with the usage topic created. It keeps records in memory
// (or in -data-dir) and runs until interrupted.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 9092, "listen port on 127.0.0.1")
	topic := flag.String("topic", "tenantgate.usage.v1", "topic to create")
	partitions := flag.Int("partitions", 4, "partitions of the topic")
	dataDir := flag.String("data-dir", "", "persist the cluster here (empty: memory only)")
	flag.Parse()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.Ports(*port), kfake.SeedTopics(int32(*partitions), *topic)}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("kafka broker on %v, topic %s", c.ListenAddrs(), *topic)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	c.Close()
}
