package state

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// segmentFiles lists partition p's segment files on disk.
func segmentFiles(t *testing.T, f *Engine, p core.Partition) []string {
	t.Helper()
	names, err := f.fs.ReadDir(segmentDir(f.dir, p))
	require.NoError(t, err)
	return names
}

// TestScavengeDropsHiddenSegments writes a partition's old records under
// a category that expires and new ones under a key that does not; the
// scavenge plans the low offset below the first segment holding a
// visible record, the truncation is applied like any entry, and the
// flush after it removes the files wholly below it; reads are unchanged,
// and so after a restart.
func TestScavengeDropsHiddenSegments(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	open := func() *Engine {
		f, err := Open(Options{Path: path, Partitions: 4, Shards: 1, IDRetention: time.Hour, SegmentBytes: 4096, ScrubRate: -1})
		require.NoError(t, err)
		return f
	}
	f := open()
	sec := int64(time.Second)
	idx := uint64(1)
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(idx, 0, wire.RetentionOp{Kind: wire.RetPrefix, Key: "old-", MaxAge: sec})})[0])
	id := 0
	for i := range 300 { // about 30 bytes a frame: a few segments
		idx++
		id++
		f.ApplyBatch([]*raft.Log{entryLog(idx, 0, req(0, fmt.Sprintf("old-%d", i%10), -1, id))})
	}
	for range 20 {
		idx++
		id++
		f.ApplyBatch([]*raft.Log{entryLog(idx, 10*sec, req(0, "new", -1, id))})
	}
	_, err := f.Flush()
	require.NoError(t, err)
	before := segmentFiles(t, f, 0)
	require.Greater(t, len(before), 3, "the test needs several sealed segments")
	view := visible(t, f, 0, "new")
	require.Len(t, view, 20)

	plan, err := f.ScavengePlan(nil, 0)
	require.NoError(t, err)
	require.Len(t, plan, 1)
	require.Equal(t, core.Partition(0), plan[0].Partition)
	require.Greater(t, plan[0].Low, uint64(0))
	require.LessOrEqual(t, plan[0].Low, uint64(300), "never past the first visible record")

	idx++
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(idx, 10*sec, wire.RetentionOp{Kind: wire.RetTruncatePartition, Partition: 0, Before: plan[0].Low})})[0])
	require.Equal(t, view, visible(t, f, 0, "new"), "the truncation hides nothing readable")
	_, err = f.Flush() // the flusher drops the files after it
	require.NoError(t, err)
	after := segmentFiles(t, f, 0)
	require.Less(t, len(after), len(before), "segments dropped")
	require.Equal(t, view, visible(t, f, 0, "new"))
	t.Logf("segments %d -> %d, low offset %d", len(before), len(after), plan[0].Low)
	first, ok := parseSegmentName(after[0])
	require.True(t, ok)
	require.LessOrEqual(t, first, plan[0].Low, "the segment holding the low offset stays")
	if len(after) > 1 {
		second, _ := parseSegmentName(after[1])
		require.Greater(t, second, plan[0].Low, "no segment wholly below the low offset stays")
	}
	again, err := f.ScavengePlan(nil, 0)
	require.NoError(t, err)
	require.Empty(t, again, "nothing more to drop")

	// A scavenge interrupted after its index transaction leaves a file the
	// index no longer lists: the next Open removes it.
	require.NoError(t, f.Close())
	stray := filepath.Join(segmentDir(filepath.Dir(path), 0), before[0])
	require.NoError(t, os.WriteFile(stray, segmentHeader(0, 0), 0o600))
	f = open()
	defer f.Close()
	require.Equal(t, after, segmentFiles(t, f, 0))
	require.Equal(t, view, visible(t, f, 0, "new"), "after a restart")
}

// TestScavengeByteCap drops a partition's oldest sealed segments while the
// partition is above its byte cap, visible records or not.
func TestScavengeByteCap(t *testing.T) {
	f, err := Open(Options{Path: filepath.Join(t.TempDir(), "state.db"), Partitions: 4, Shards: 1, IDRetention: time.Hour, SegmentBytes: 4096, ScrubRate: -1})
	require.NoError(t, err)
	defer f.Close()
	require.Nil(t, f.ApplyBatch([]*raft.Log{retLog(1, 0, wire.RetentionOp{Kind: wire.RetPartition, Partition: 1, MaxBytes: 8192})})[0])
	for i := range 400 {
		f.ApplyBatch([]*raft.Log{entryLog(uint64(2+i), 0, req(1, "k", -1, i+1))})
	}
	_, err = f.Flush()
	require.NoError(t, err)
	plan, err := f.ScavengePlan(nil, 0)
	require.NoError(t, err)
	require.Len(t, plan, 1)
	f.ApplyBatch([]*raft.Log{retLog(500, 0, wire.RetentionOp{Kind: wire.RetTruncatePartition, Partition: 1, Before: plan[0].Low})})
	_, err = f.Flush()
	require.NoError(t, err)
	var total int64
	for _, n := range segmentFiles(t, f, 1) {
		st, err := os.Stat(filepath.Join(segmentDir(f.dir, 1), n))
		require.NoError(t, err)
		total += st.Size()
	}
	require.LessOrEqual(t, total, int64(8192+4096), "within the cap plus the segment that crosses it")
	recs, err := f.ReadKey(1, "k", 1, 1000, 1<<20)
	require.NoError(t, err)
	require.NotEmpty(t, recs)
	require.Equal(t, plan[0].Low, recs[0].Offset, "reads start at the low offset")
	require.Equal(t, uint64(400), recs[len(recs)-1].KeySeq)
}

// TestScavengeTrimsSegmentHead: when the low offset falls inside a sealed
// segment, the segment is rewritten from it on; replicas that apply the
// same entries, flushed at other points, end with identical segments.
func TestScavengeTrimsSegmentHead(t *testing.T) {
	sec := int64(time.Second)
	var logs []*raft.Log
	logs = append(logs, retLog(1, 0, wire.RetentionOp{Kind: wire.RetPrefix, Key: "old-", MaxAge: sec}))
	for i := range 250 {
		logs = append(logs, entryLog(uint64(len(logs)+1), 0, req(0, fmt.Sprintf("old-%d", i%10), -1, len(logs))))
	}
	for i := range 300 {
		logs = append(logs, entryLog(uint64(len(logs)+1), 10*sec, req(0, fmt.Sprintf("new-%d", i%3), -1, len(logs))))
	}
	engines := make([]*Engine, 2)
	for i := range engines {
		f, err := Open(Options{Path: filepath.Join(t.TempDir(), "state.db"), Partitions: 4, Shards: 1, IDRetention: time.Hour,
			SegmentBytes: 4096, ScrubRate: -1, FlushRecords: 64 + 100*i})
		require.NoError(t, err)
		defer f.Close()
		engines[i] = f
		for _, l := range logs {
			f.ApplyBatch([]*raft.Log{l})
		}
		_, err = f.Flush()
		require.NoError(t, err)
	}
	f := engines[0]
	view := visible(t, f, 0, "new-0", "new-1", "new-2")
	require.Len(t, view, 300)
	plan, err := f.ScavengePlan(nil, 0)
	require.NoError(t, err)
	require.Equal(t, []Truncation{{Partition: 0, Low: 250}}, plan, "the low offset is the first readable record")
	for _, e := range engines {
		e.ApplyBatch([]*raft.Log{retLog(uint64(len(logs)+1), 10*sec, wire.RetentionOp{Kind: wire.RetTruncatePartition, Partition: 0, Before: 250})})
		_, err := e.Flush()
		require.NoError(t, err)
		st, err := e.DropSegments()
		require.NoError(t, err)
		t.Logf("dropped %+v", st)
		names := segmentFiles(t, e, 0)
		require.Equal(t, segmentName(250), names[0], "the first segment now starts at the low offset")
		require.Equal(t, view, visible(t, e, 0, "new-0", "new-1", "new-2"))
	}
	require.Equal(t, stateHash(t, engines[0]), stateHash(t, engines[1]), "replicas' files are identical")
}
