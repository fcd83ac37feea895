package core

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// An observation counts in the first bucket whose bound it does not
// exceed (bounds are inclusive), above every bound in the last.
func TestHistogramBuckets(t *testing.T) {
	h := NewHistogram(1, 10, 100)
	for _, v := range []int64{-5, 0, 1, 2, 10, 11, 100, 101, 1 << 40} {
		h.Observe(v)
	}
	s := h.Snapshot()
	require.Equal(t, []uint64{3, 2, 2, 2}, s.Counts)
	require.Equal(t, uint64(9), s.Count)
	require.Equal(t, int64(-5+0+1+2+10+11+100+101+1<<40), s.Sum)
}
