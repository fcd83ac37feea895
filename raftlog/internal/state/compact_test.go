package state

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
)

// TestIndexCompaction: a snapshot after a scavenge's request copies the
// index into a smaller file with the same keys and values; the engine
// reads and applies on; a restart opens it; an unfinished compaction's
// file is removed at Open.
func TestIndexCompaction(t *testing.T) {
	defer func(v int64) { compactMinUnused = v }(compactMinUnused)
	compactMinUnused = 0
	path := filepath.Join(t.TempDir(), "state.db")
	open := func() *Engine {
		f, err := Open(Options{Path: path, Partitions: 4, Shards: 1, IDRetention: time.Second, FlushRecords: 500, ScrubRate: -1})
		require.NoError(t, err)
		return f
	}
	f := open()
	idx := uint64(0)
	// Many IDs, pruned by the next flushes once their retention passed:
	// pages freed in the file.
	for i := range 3000 {
		idx++
		f.ApplyBatch([]*raft.Log{entryLog(idx, 0, req(1, fmt.Sprintf("k%d", i%50), -1, i+1))})
	}
	for i := range 500 {
		idx++
		f.ApplyBatch([]*raft.Log{entryLog(idx, int64(10*time.Second), req(0, "later", -1, 10000+i))})
	}
	_, err := f.Flush()
	require.NoError(t, err)
	want := stateHash(t, f)
	view := visible(t, f, 0, "later")
	st, err := os.Stat(path)
	require.NoError(t, err)

	f.RequestIndexCompaction()
	_, err = f.Snapshot()
	require.NoError(t, err)
	st2, err := os.Stat(path)
	require.NoError(t, err)
	t.Logf("index %d -> %d bytes", st.Size(), st2.Size())
	require.Less(t, st2.Size(), st.Size(), "the file shrank")
	require.Equal(t, want, stateHash(t, f), "the same keys and values")
	require.Equal(t, view, visible(t, f, 0, "later"))
	idx++
	require.Equal(t, "p0@500 seq501 n1 dup=false idx=3501 ", outcomeString(f.ApplyBatch([]*raft.Log{entryLog(idx, int64(11*time.Second), req(0, "later", -1, 20000))})[0]))
	require.Len(t, visible(t, f, 0, "later"), 501)
	require.NoError(t, f.Close())

	require.NoError(t, os.WriteFile(path+compactSuffix, []byte("unfinished"), 0o600))
	f = open()
	defer f.Close()
	_, err = os.Stat(path + compactSuffix)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Len(t, visible(t, f, 0, "later"), 501)
}
