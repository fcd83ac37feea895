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
