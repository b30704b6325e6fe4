// Command keyflood is the client of scripts/flood.sh -k: a burst of requests
// with forged but well-formed API keys (valid checksums: anyone can mint
// them), from many connections at once. In the middle of the burst it
// sends one request with a legitimate key and reads /health/ready, each on
// a connection opened before the burst (a new one would first wait in the
// gateway's accept queue behind the burst's), and it samples the gateway's
// tenantgate_auth_postgres_lookups_in_flight gauge meanwhile. It prints
// what each got.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantgate/tenantgate/keystore"
)

func main() {
	target := flag.String("url", "http://127.0.0.1:8080/", "gateway URL to send the keys to")
	conns := flag.Int("n", 8000, "connections, all sending at once")
	perConn := flag.Int("r", 1, "requests per connection")
	legit := flag.String("key", "", "legitimate key, sent once in the middle of the burst")
	ready := flag.String("ready", "", "URL of /health/ready, read in the middle of the burst")
	metrics := flag.String("metrics", "", "URL of the admin endpoint's /metrics, sampled during the burst")
	flag.Parse()

	total := *conns * *perConn
	keys := make([]string, total)
	for i := range keys {
		k, err := keystore.GenerateKey(false)
		if err != nil {
			log.Fatal(err)
		}
		keys[i] = k
	}
	// Probes get connections of their own, opened now.
	legitClient, readyClient, metricsClient := warmClient(*target), warmClient(*target), warmClient(*target)
	if *metrics != "" {
		metricsClient = warmClient(*metrics)
	}

	flood := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: *conns}}
	var sent atomic.Int64
	var mu sync.Mutex
	statuses := make(map[string]int)
	middle := make(chan struct{})
	var middleOnce sync.Once
	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := range *conns {
		wg.Go(func() {
			<-start
			for r := range *perConn {
				if sent.Add(1) >= int64(total/2) {
					middleOnce.Do(func() { close(middle) })
				}
				status := send(flood, *target, keys[c**perConn+r])
				mu.Lock()
				statuses[status]++
				mu.Unlock()
			}
		})
	}

	stopSampling := make(chan struct{})
	var maxInFlight atomic.Int64
	var sampling sync.WaitGroup
	if *metrics != "" {
		sampling.Go(func() { sample(metricsClient, *metrics, stopSampling, &maxInFlight) })
	}
	began := time.Now()
	close(start)
	<-middle
	var probes sync.WaitGroup
	var legitResult, readyResult string
	if *legit != "" {
		probes.Go(func() {
			t := time.Now()
			legitResult = fmt.Sprintf("%s in %d ms", send(legitClient, *target, *legit), time.Since(t).Milliseconds())
		})
	}
	if *ready != "" {
		probes.Go(func() { readyResult = get(readyClient, *ready) })
	}
	probes.Wait()
	wg.Wait()
	elapsed := time.Since(began)
	close(stopSampling)
	sampling.Wait()

	var parts []string
	for _, s := range []string{"200", "403", "503"} {
		parts = append(parts, fmt.Sprintf("%s: %d", s, statuses[s]))
		delete(statuses, s)
	}
	for s, n := range statuses {
		parts = append(parts, fmt.Sprintf("%s: %d", s, n))
	}
	fmt.Printf("forged requests: %d from %d connections in %.1f s (%s)\n", total, *conns, elapsed.Seconds(), strings.Join(parts, ", "))
	if *legit != "" {
		fmt.Printf("legitimate key: %s\n", legitResult)
	}
	if *ready != "" {
		fmt.Printf("/health/ready: %s\n", readyResult)
	}
	if *metrics != "" {
		fmt.Printf("most lookups in flight: %d (sampled every 10 ms)\n", maxInFlight.Load())
	}
}

// warmClient returns a client with one connection to url's host, opened now.
func warmClient(url string) *http.Client {
	c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	_ = get(c, url)
	return c
}

// send makes a request with key as a Bearer token and returns its status
// (or "error: …").
func send(c *http.Client, url, key string) string {
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	if err != nil {
		return "error: " + err.Error()
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.Do(req)
	if err != nil {
		return "error"
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

// get returns "<status> <body>".
func get(c *http.Client, url string) string {
	resp, err := c.Get(url)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
}

// sample reads the in-flight lookups gauge every 10 ms until stop, keeping
// the largest value in max.
func sample(c *http.Client, url string, stop <-chan struct{}, max *atomic.Int64) {
	const gauge = "tenantgate_auth_postgres_lookups_in_flight "
	for {
		select {
		case <-stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		resp, err := c.Get(url)
		if err != nil {
			continue
		}
		lines := bufio.NewScanner(resp.Body)
		for lines.Scan() {
			if v, ok := strings.CutPrefix(lines.Text(), gauge); ok {
				if n, err := strconv.ParseFloat(v, 64); err == nil && int64(n) > max.Load() {
					max.Store(int64(n))
				}
			}
		}
		_ = resp.Body.Close()
	}
}
