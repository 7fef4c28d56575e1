package bench

import (
	"slices"
	"time"
)

// Durations is a sample of latencies.
type Durations []time.Duration

// Percentile returns the p-th percentile (0–100) by the nearest-rank
// method, or 0 for an empty sample.
func (d Durations) Percentile(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(rank, len(s)-1))]
}

// Mean returns the sample's average, or 0 for an empty sample.
func (d Durations) Mean() time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return sum / time.Duration(len(d))
}
