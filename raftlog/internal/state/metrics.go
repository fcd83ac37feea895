package state

import (
	"sync/atomic"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// engineMetrics are the engine's counters for the log's metrics: a
// histogram and atomics, so the FSM goroutine and the flusher record
// without a lock.
type engineMetrics struct {
	// apply is the duration of each ApplyBatch that applied entries;
	// flush of each table written (writeTable), in nanoseconds.
	apply, flush *core.Histogram
	// snapshotsTaken counts the snapshots persisted (markers raft
	// compacts its log to); snapshotsInstalled the full copies raft
	// handed Restore that it accepted.
	snapshotsTaken, snapshotsInstalled atomic.Uint64
}

func newEngineMetrics() engineMetrics {
	return engineMetrics{apply: core.NewHistogram(core.DurationBounds...), flush: core.NewHistogram(core.DurationBounds...)}
}

// Metrics are the engine's counters since Open.
type Metrics struct {
	// Apply is the time each batch of committed entries took to apply,
	// Flush each in-memory table took to write to the state files, in
	// nanoseconds.
	Apply, Flush core.HistogramSnapshot
	// SnapshotsTaken counts the raft snapshots this replica persisted;
	// SnapshotsInstalled the full copies from a leader it installed
	// (Restore), a copy older than its own state (kept, flushed) included.
	SnapshotsTaken, SnapshotsInstalled uint64
}

// Metrics reads the engine's counters.
func (f *Engine) Metrics() Metrics {
	return Metrics{
		Apply: f.metrics.apply.Snapshot(), Flush: f.metrics.flush.Snapshot(),
		SnapshotsTaken: f.metrics.snapshotsTaken.Load(), SnapshotsInstalled: f.metrics.snapshotsInstalled.Load(),
	}
}
