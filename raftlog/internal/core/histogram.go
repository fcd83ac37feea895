package core

import (
	"sort"
	"sync/atomic"
)

// Histogram counts observations into fixed buckets with atomics only, so
// the hot paths that record into it (an append's latency, a raft entry's
// size) take no lock; a scrape reads it with Snapshot. Counts of one
// snapshot are read one by one and may straddle a concurrent observation.
type Histogram struct {
	bounds []int64 // upper bounds, inclusive, ascending
	counts []atomic.Uint64
	sum    atomic.Int64
}

// NewHistogram returns a histogram with the given ascending upper bounds;
// a last bucket, +Inf, holds the observations above them.
func NewHistogram(bounds ...int64) *Histogram {
	return &Histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

// Observe records v.
func (h *Histogram) Observe(v int64) {
	i := sort.Search(len(h.bounds), func(i int) bool { return v <= h.bounds[i] })
	h.counts[i].Add(1)
	h.sum.Add(v)
}

// HistogramSnapshot is a histogram as read at one moment: Counts[i] is the
// number of observations at or below Bounds[i] and above the previous
// bound (not cumulative); Counts has one more element, for +Inf.
type HistogramSnapshot struct {
	Bounds []int64
	Counts []uint64
	Count  uint64
	Sum    int64
}

// Snapshot reads the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Bounds: h.bounds, Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = h.sum.Load()
	return s
}

// DurationBounds are the bucket bounds, in nanoseconds, of the histograms
// of storage work (a raft log write, an apply, a flush): 10 us to 10 s.
var DurationBounds = []int64{
	10e3, 25e3, 50e3, 100e3, 250e3, 500e3,
	1e6, 2.5e6, 5e6, 10e6, 25e6, 50e6, 100e6, 250e6, 500e6,
	1e9, 2.5e9, 5e9, 10e9,
}
