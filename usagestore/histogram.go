package usagestore

import (
	"math"
	"sort"
)

// latencyBounds are the upper bounds, in microseconds, of the latency
// histogram's buckets; the last bucket holds everything from 10 s up.
// Fixed bounds make histograms of any rows, gateways and periods add up
// bucket by bucket, so percentiles of merged rows stay meaningful.
var latencyBounds = [histogramBuckets - 1]int64{
	50, 100, 150, 200, 300, 400, 500, 750,
	1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 7_500,
	10_000, 15_000, 20_000, 30_000, 50_000, 75_000,
	100_000, 150_000, 200_000, 300_000, 500_000, 750_000,
	1_000_000, 2_000_000, 5_000_000, 10_000_000,
}

// histogramBuckets is the number of buckets of a latency histogram.
const histogramBuckets = 32

// histogram counts requests per latency bucket (see latencyBounds).
type histogram [histogramBuckets]int64

// Observe counts one request of durationUS microseconds.
func (h *histogram) Observe(durationUS int64) {
	h[bucketOf(durationUS)]++
}

// bucketOf returns the bucket index of a duration in microseconds.
func bucketOf(durationUS int64) int {
	return sort.Search(len(latencyBounds), func(i int) bool { return durationUS < latencyBounds[i] })
}

// Merge adds o into h bucket by bucket.
func (h *histogram) Merge(o *histogram) {
	for i := range h {
		h[i] += o[i]
	}
}

// Total is the number of requests counted.
func (h *histogram) Total() int64 {
	var n int64
	for _, c := range h {
		n += c
	}
	return n
}

// Percentile estimates the p-th quantile (0 < p ≤ 1) in microseconds,
// interpolating linearly inside the bucket that holds it; the open last
// bucket answers its lower bound. An empty histogram answers 0.
func (h *histogram) Percentile(p float64) int64 {
	total := h.Total()
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(p * float64(total)))
	rank = min(max(rank, 1), total)
	var seen int64
	for i, c := range h {
		if seen+c < rank {
			seen += c
			continue
		}
		var lo int64
		if i > 0 {
			lo = latencyBounds[i-1]
		}
		if i == len(latencyBounds) {
			return lo
		}
		hi := latencyBounds[i]
		return lo + (hi-lo)*(rank-seen)/c
	}
	return latencyBounds[len(latencyBounds)-1]
}

// histogramFromSlice copies a stored histogram (bigint[]); missing buckets
// count zero, extra ones are added to the last.
func histogramFromSlice(s []int64) histogram {
	var h histogram
	for i, v := range s {
		h[min(i, histogramBuckets-1)] += v
	}
	return h
}
