package raftlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/systemtest/wait"
)

// After flushes cover enough of the raft log, the node snapshots and raft
// drops its log but for the tail; a restart then finds every record in
// the state files and re-applies nothing it holds.
func TestLogCompactedAfterFlushes(t *testing.T) {
	dir := t.TempDir()
	small := func(c *Config) {
		c.Partitions = 1
		c.flushRecords = 64
		c.compactEveryBytes = 16 << 10
		c.TrailingLogs = 8
		c.WALSegmentBytes = 16 << 10 // compaction drops whole segments
	}
	l := openSingle(t, dir, small)
	ctx := context.Background()
	const appends, per = 200, 10
	value := make([]byte, 200)
	for i := 0; i < appends; i++ {
		recs := make([]NewRecord, per)
		for j := range recs {
			recs[j].Value = value
		}
		_, err := l.Append(ctx, fmt.Sprint("key-", i%7), recs)
		require.NoError(t, err)
	}
	s := l.shards[0]
	wait.Until(t, 20*time.Second, "a snapshot after a flush", func() bool {
		snap, _ := l.shards[0].Raft.Stats()["last_snapshot_index"]
		return snap != "" && snap != "0"
	})
	wait.Until(t, 20*time.Second, "the raft log compacted", func() bool {
		first, err := s.store.FirstIndex()
		return err == nil && first > 1
	})
	first, err := s.store.FirstIndex()
	require.NoError(t, err)
	last, err := s.store.LastIndex()
	require.NoError(t, err)
	t.Logf("raft log holds %d..%d after compaction", first, last)
	flushed, _ := s.engine.Flushed()
	require.GreaterOrEqual(t, flushed+1, first, "the log keeps every entry the state files do not cover")
	applied := appliedIndex(t, l, 0)
	require.NoError(t, l.Close())

	l = openSingle(t, dir, small)
	fileIndex, _ := l.shards[0].engine.Flushed()
	require.Equal(t, applied, fileIndex, "the state files hold everything applied: nothing to replay")
	got, err := l.Read(ctx, 0, 0, ReadOptions{MaxRecords: 10000, MaxBytes: 16 << 20})
	require.NoError(t, err)
	require.Len(t, got, appends*per, "every acknowledged record, once")
	for i, r := range got {
		require.Equal(t, uint64(i), r.Offset)
	}
}

// The tail holds about tailBytes of entries, within bounds.
func TestTrailingLogsFollowEntrySize(t *testing.T) {
	require.Equal(t, uint64(maxTrailingLogs), trailingLogsFor(200))
	require.Equal(t, uint64(256), trailingLogsFor(64<<10))
	require.Equal(t, uint64(minTrailingLogs), trailingLogsFor(8<<20))
	require.Equal(t, uint64(maxTrailingLogs), trailingLogsFor(0))
}
