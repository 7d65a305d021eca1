package main

import (
	"math"
	"slices"
	"time"
)

// Dist summarises a set of duration samples. Values are milliseconds.
type Dist struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean_ms"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// percentile returns the nearest-rank percentile p (0 < p <= 100) of
// sorted. sorted must be in ascending order and non-empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon absorbs float error (99.9/100*1000 is 999.0000000000001).
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	if rank < 1 {
		rank = 1
	}
	if rank > n {
		rank = n
	}
	return sorted[rank-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize sorts samples in place and computes its distribution.
func summarize(samples []time.Duration) Dist {
	if len(samples) == 0 {
		return Dist{}
	}
	slices.Sort(samples)
	var sum float64
	for _, s := range samples {
		sum += float64(s)
	}
	return Dist{
		Count: len(samples),
		Mean:  sum / float64(len(samples)) / float64(time.Millisecond),
		Min:   ms(samples[0]),
		P50:   ms(percentile(samples, 50)),
		P90:   ms(percentile(samples, 90)),
		P99:   ms(percentile(samples, 99)),
		P999:  ms(percentile(samples, 99.9)),
		Max:   ms(samples[len(samples)-1]),
	}
}
