package usagestore

import (
	"math"
	"sort"
)

// LatencyBounds are the upper bounds, in microseconds, of the latency
// histogram's buckets; the last bucket holds everything from 10 s up.
// Fixed bounds make histograms of any rows, gateways and periods add up
// bucket by bucket, so percentiles of merged rows stay meaningful.
var LatencyBounds = [HistogramBuckets - 1]int64{
	50, 100, 150, 200, 300, 400, 500, 750,
	1_000, 1_500, 2_000, 3_000, 4_000, 5_000, 7_500,
	10_000, 15_000, 20_000, 30_000, 50_000, 75_000,
	100_000, 150_000, 200_000, 300_000, 500_000, 750_000,
	1_000_000, 2_000_000, 5_000_000, 10_000_000,
}

// HistogramBuckets is the number of buckets of a latency histogram.
const HistogramBuckets = 32

// Histogram counts requests per latency bucket (see LatencyBounds).
type Histogram [HistogramBuckets]int64

// Observe counts one request of durationUS microseconds.
func (h *Histogram) Observe(durationUS int64) {
	h[BucketOf(durationUS)]++
}

// BucketOf returns the bucket index of a duration in microseconds.
func BucketOf(durationUS int64) int {
	return sort.Search(len(LatencyBounds), func(i int) bool { return durationUS < LatencyBounds[i] })
}

// Merge adds o into h bucket by bucket.
func (h *Histogram) Merge(o *Histogram) {
	for i := range h {
		h[i] += o[i]
	}
}

// Total is the number of requests counted.
func (h *Histogram) Total() int64 {
	var n int64
	for _, c := range h {
		n += c
	}
	return n
}

// Percentile estimates the p-th quantile (0 < p ≤ 1) in microseconds,
// interpolating linearly inside the bucket that holds it; the open last
// bucket answers its lower bound. An empty histogram answers 0.
func (h *Histogram) Percentile(p float64) int64 {
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
			lo = LatencyBounds[i-1]
		}
		if i == len(LatencyBounds) {
			return lo
		}
		hi := LatencyBounds[i]
		return lo + (hi-lo)*(rank-seen)/c
	}
	return LatencyBounds[len(LatencyBounds)-1]
}

// histogramFromSlice copies a stored histogram (bigint[]); missing buckets
// count zero, extra ones are added to the last.
func histogramFromSlice(s []int64) Histogram {
	var h Histogram
	for i, v := range s {
		h[min(i, HistogramBuckets-1)] += v
	}
	return h
}
