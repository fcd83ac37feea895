package raftlog

import (
	"errors"

	"github.com/hashicorp/raft"
)

// The raft log's compaction (DESIGN.md, "One copy"). Once a flush has
// made the state files cover a stretch of the raft log, the log's copy of
// those records is needed only by a follower that lags behind. So after a
// flush that leaves at least snapshotEveryBytes of entries covered since
// the last snapshot, the node takes a raft snapshot (a marker: the state
// files are the snapshot), and raft drops its log up to the marker less a
// tail of TrailingLogs entries, from which a slightly lagging follower
// catches up; one further behind receives a full copy.
const (
	// snapshotEveryBytes of raft entries covered by the state files
	// since the last snapshot trigger the next one.
	snapshotEveryBytes = 64 << 20
	// tailBytes is what the tail left after compaction should hold when
	// Config.TrailingLogs is not set: TrailingLogs follows the size of the
	// entries, within [minTrailingLogs, maxTrailingLogs].
	tailBytes       = 16 << 20
	minTrailingLogs = 64
	maxTrailingLogs = 1024
)

// compactAfterFlushes runs for shard s until the log closes: it snapshots
// the shard's raft after flushes (see above), on voters and workers alike
// (each node compacts its own log).
func (l *Log) compactAfterFlushes(s *shard) {
	every := uint64(snapshotEveryBytes)
	if l.cfg.compactEveryBytes > 0 {
		every = l.cfg.compactEveryBytes
	}
	lastIndex, lastBytes := s.engine.Flushed()
	for {
		wake := s.engine.FlushedSignal().Wait()
		index, bytes := s.engine.Flushed()
		if index > lastIndex && bytes-lastBytes >= every {
			if l.cfg.TrailingLogs == 0 {
				l.setTrailingLogs(s, trailingLogsFor((bytes-lastBytes)/(index-lastIndex)))
			}
			err := s.Raft.Snapshot().Error()
			switch {
			case err == nil, errors.Is(err, raft.ErrNothingNewToSnapshot):
				lastIndex, lastBytes = index, bytes
			case errors.Is(err, raft.ErrRaftShutdown):
				return
			default: // a configuration change not yet applied, a failing flush: after the next flush
				l.logger.Debug("raftlog: snapshot after flush failed; tried again after the next flush", "shard", s.ID, "err", err)
			}
		}
		select {
		case <-wake:
		case <-l.closing:
			return
		}
	}
}

// trailingLogsFor is the tail, in entries of entryBytes on average, that
// holds about tailBytes.
func trailingLogsFor(entryBytes uint64) uint64 {
	return min(max(tailBytes/max(entryBytes, 1), minTrailingLogs), maxTrailingLogs)
}

// setTrailingLogs makes raft keep n entries at its next compaction.
func (l *Log) setTrailingLogs(s *shard, n uint64) {
	rc := s.Raft.ReloadableConfig()
	if rc.TrailingLogs == n {
		return
	}
	rc.TrailingLogs = n
	if err := s.Raft.ReloadConfig(rc); err != nil {
		l.logger.Warn("raftlog: cannot set the raft log's tail", "shard", s.ID, "trailing_logs", n, "err", err)
	}
}
