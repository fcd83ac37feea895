package raftlog

import (
	"sync/atomic"
	"time"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// HistogramSnapshot is a histogram as read at one moment: Counts[i] is the
// number of observations at or below Bounds[i] and above the bound before
// (not cumulative), and the last element of Counts, one more than Bounds,
// those above every bound.
type HistogramSnapshot = core.HistogramSnapshot

// Stats are counters of this node's work, for metrics. Counters only grow
// while the node runs and start at zero when it opens.
type Stats struct {
	// Appends counts the append requests this node accepted (Append,
	// DeleteKey, TruncateKey) that succeeded, duplicates included;
	// AppendErrors those that failed. AppendRecords and AppendBytes count
	// the records and their value and header bytes of the successful ones.
	Appends, AppendErrors, AppendRecords, AppendBytes uint64
	// AppendLatency is the time from the call to its answer, successful or
	// not, in nanoseconds.
	AppendLatency HistogramSnapshot
	Shards        []ShardStats
}

// ShardStats are one shard's counters on this node.
type ShardStats struct {
	Shard Shard
	// LeaderChanges counts the leader changes this node observed.
	LeaderChanges uint64
	// EntrySizes is the number of appends in each raft entry this node
	// proposed while leading the shard.
	EntrySizes HistogramSnapshot
	// LogWrites is the time each write to the shard's raft log store took
	// (one StoreLogs of raft: an entry or a run of them, fsynced), in
	// nanoseconds.
	LogWrites HistogramSnapshot
	// Applies is the time each batch of committed entries took to apply to
	// this node's state; Flushes each in-memory table took to write to the
	// state files; in nanoseconds.
	Applies, Flushes HistogramSnapshot
	// SnapshotsTaken counts the raft snapshots this node persisted (after
	// flushes, by Scavenge, by Backup); SnapshotsInstalled the full copies
	// of the state it installed from a leader.
	SnapshotsTaken, SnapshotsInstalled uint64
}

// Bucket bounds: append latency in nanoseconds (100 us to 10 s), appends
// per raft entry (1 to the largest MaxEntryRequests one would set).
var (
	latencyBounds = []int64{
		int64(100 * time.Microsecond), int64(250 * time.Microsecond), int64(500 * time.Microsecond),
		int64(time.Millisecond), int64(2500 * time.Microsecond), int64(5 * time.Millisecond),
		int64(10 * time.Millisecond), int64(25 * time.Millisecond), int64(50 * time.Millisecond),
		int64(100 * time.Millisecond), int64(250 * time.Millisecond), int64(500 * time.Millisecond),
		int64(time.Second), int64(2500 * time.Millisecond), int64(5 * time.Second), int64(10 * time.Second),
	}
	entrySizeBounds = []int64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024}
)

// logStats are the append path's counters: atomics, so recording takes no
// lock.
type logStats struct {
	appends, appendErrors, records, bytes atomic.Uint64
	latency                               *core.Histogram
}

func newLogStats() logStats { return logStats{latency: core.NewHistogram(latencyBounds...)} }

func (s *logStats) recordAppend(req *wire.Request, start time.Time, err error) {
	s.latency.Observe(int64(time.Since(start)))
	if err != nil {
		s.appendErrors.Add(1)
		return
	}
	s.appends.Add(1)
	if n := len(req.Records); n > 0 {
		size := 0
		for i := range req.Records {
			size += recordSize(&req.Records[i])
		}
		s.records.Add(uint64(n))
		s.bytes.Add(uint64(size))
	}
}

// Stats reads this node's counters.
func (l *Log) Stats() Stats {
	st := Stats{
		Appends: l.stats.appends.Load(), AppendErrors: l.stats.appendErrors.Load(),
		AppendRecords: l.stats.records.Load(), AppendBytes: l.stats.bytes.Load(),
		AppendLatency: l.stats.latency.Snapshot(),
	}
	for _, s := range l.shards {
		em := s.engine.Metrics()
		st.Shards = append(st.Shards, ShardStats{
			Shard: s.ID, LeaderChanges: s.leaderChanges.Load(), EntrySizes: s.entrySizes.Snapshot(),
			LogWrites: s.logWrites.Snapshot(), Applies: em.Apply, Flushes: em.Flush,
			SnapshotsTaken: em.SnapshotsTaken, SnapshotsInstalled: em.SnapshotsInstalled,
		})
	}
	return st
}
