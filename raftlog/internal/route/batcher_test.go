package route

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cohortBatcher is a batcher whose last answered entry held answered
// appends, answered ago; its run loop is not started.
func cohortBatcher(answered int, ago, wait time.Duration) *Batcher {
	b := &Batcher{reqs: make(chan *pendingAppend, 100), stop: make(chan struct{}), maxReqs: 1024, maxBytes: 1 << 20, cohortWait: wait}
	b.lastAnswered.Store(int64(answered))
	b.answeredAt.Store(time.Now().Add(-ago).UnixNano())
	b.answered.Add(1)
	return b
}

// awaitCohort waits for the appends it expects back (those taken before
// the last answer plus as many as it answered), and no longer than
// CohortWait after that answer.
func TestAwaitCohort(t *testing.T) {
	type gather struct {
		batch []*pendingAppend
		add   func(*pendingAppend) bool
		full  func() bool
	}
	newGather := func(b *Batcher, before, after int) *gather {
		g := &gather{}
		for i := 0; i < before+after; i++ {
			p := &pendingAppend{enc: []byte("x"), epoch: b.answered.Load()}
			if i < before {
				p.epoch-- // taken before the last answer
			}
			g.batch = append(g.batch, p)
		}
		g.add = func(p *pendingAppend) bool { g.batch = append(g.batch, p); return true }
		g.full = func() bool { return len(g.batch) >= b.maxReqs }
		return g
	}

	t.Run("waits until the answered callers are back", func(t *testing.T) {
		b := cohortBatcher(3, 0, time.Minute)
		g := newGather(b, 2, 1) // 2 waited through the round, 1 of the 3 answered is back
		done := make(chan bool)
		go func() { done <- b.awaitCohort(g.batch, g.add, g.full) }()
		b.reqs <- &pendingAppend{enc: []byte("x")}
		b.reqs <- &pendingAppend{enc: []byte("x")}
		b.reqs <- &pendingAppend{enc: []byte("x")} // one more than expected: left queued
		require.True(t, <-done)
		require.Len(t, g.batch, 5)
		require.Len(t, b.reqs, 1)
	})
	t.Run("one caller alone does not wait", func(t *testing.T) {
		b := cohortBatcher(1, 0, time.Minute)
		g := newGather(b, 0, 1)
		require.True(t, b.awaitCohort(g.batch, g.add, g.full))
		require.Len(t, g.batch, 1)
	})
	t.Run("an old answer expects nothing", func(t *testing.T) {
		b := cohortBatcher(64, time.Second, 500*time.Microsecond)
		g := newGather(b, 0, 1)
		require.True(t, b.awaitCohort(g.batch, g.add, g.full))
		require.Len(t, g.batch, 1)
	})
	t.Run("callers that do not come back cost at most CohortWait", func(t *testing.T) {
		b := cohortBatcher(64, 0, 20*time.Millisecond)
		g := newGather(b, 0, 1)
		start := time.Now()
		require.True(t, b.awaitCohort(g.batch, g.add, g.full))
		require.Len(t, g.batch, 1)
		took := time.Since(start)
		require.GreaterOrEqual(t, took, 10*time.Millisecond, "it waited for them")
		require.Less(t, took, 10*time.Second, "bounded by the deadline, not the expectation")
	})
	t.Run("disabled", func(t *testing.T) {
		b := cohortBatcher(64, 0, -1)
		g := newGather(b, 0, 1)
		require.True(t, b.awaitCohort(g.batch, g.add, g.full))
		require.Len(t, g.batch, 1)
	})
	t.Run("stopped", func(t *testing.T) {
		b := cohortBatcher(64, 0, time.Minute)
		g := newGather(b, 0, 1)
		close(b.stop)
		require.False(t, b.awaitCohort(g.batch, g.add, g.full))
	})
}
