package usagetest

import (
	"net"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka starts a Kafka cluster (franz-go's kfake: the Kafka protocol, in
// process) on a free 127.0.0.1 port with topic created, and stops it when the
// test ends. It returns the cluster and its bootstrap address.
func Kafka(t testing.TB, topic string, partitions int32, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	return KafkaOnPort(t, FreePort(t), topic, partitions, opts...)
}

// KafkaOnPort is Kafka on a given port: a cluster restarted on the port and
// DataDir of a closed one resumes it.
func KafkaOnPort(t testing.TB, port int, topic string, partitions int32, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(partitions, topic)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatalf("starting kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c, "127.0.0.1:" + strconv.Itoa(port)
}

// FreePort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
