package state

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/systemtest/wait"
)

// fullDiskEntry is entry i of the full-disk tests: 5 records of key "k".
func fullDiskEntry(i int) *raft.Log {
	ids := make([]int, 5)
	for j := range ids {
		ids[j] = 5*i + j + 1
	}
	return entryLog(uint64(i+1), int64(i+1), req(0, "k", -1, ids...))
}

// A flush that fails (ENOSPC, a torn write) is retried with backoff
// instead of stopping the node; while it fails, applies go on into the
// active table up to its bound, then Full reports ErrDiskFull; reads work
// throughout; once writes succeed again the flush completes by itself,
// nothing torn is left in the segments, and the files are byte for byte
// those of a replica that never saw a failure.
func TestFlushRetriesOnFullDisk(t *testing.T) {
	old := flushRetry
	flushRetry.Initial, flushRetry.Max = time.Millisecond, 20*time.Millisecond
	t.Cleanup(func() { flushRetry = old })

	fs := NewFaultFS()
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := Open(Options{Path: path, Partitions: 4, Shards: 1, IDRetention: time.Hour, FlushRecords: 10, FS: fs})
	require.NoError(t, err)
	ref, err := Open(Options{Path: filepath.Join(t.TempDir(), "state.db"), Partitions: 4, Shards: 1, IDRetention: time.Hour, FlushRecords: 10})
	require.NoError(t, err)
	defer ref.Close()
	for i := 0; i < 12; i++ {
		ref.ApplyBatch([]*raft.Log{fullDiskEntry(i)})
	}

	f.ApplyBatch([]*raft.Log{fullDiskEntry(0), fullDiskEntry(1)}) // 10 records: frozen and flushed
	require.NoError(t, f.waitFlushed(false))
	fs.Fail.Store(true)
	f.ApplyBatch([]*raft.Log{fullDiskEntry(2), fullDiskEntry(3)}) // frozen; its flush fails
	wait.Until(t, 10*time.Second, "a failed flush", func() bool { return f.FlushError() != nil })
	require.ErrorContains(t, f.FlushError(), "no space left on device")
	require.NoError(t, f.Full(), "the active table has room")
	_, err = f.Flush()
	require.ErrorIs(t, err, core.ErrDiskFull, "a snapshot cannot cover the state")

	// This fills the active table; it cannot be frozen, and the apply
	// returns without waiting (its outcome goes to its caller at once).
	f.ApplyBatch([]*raft.Log{fullDiskEntry(4), fullDiskEntry(5)})
	require.ErrorIs(t, f.Full(), core.ErrDiskFull)
	recs, err := f.Read(0, 0, 100, 1<<20)
	require.NoError(t, err, "reads go on")
	require.Len(t, recs, 30)
	failedBefore := fs.Failed.Load()
	wait.Until(t, 10*time.Second, "retries", func() bool { return fs.Failed.Load() > failedBefore+2 })

	fs.Fail.Store(false)
	wait.Until(t, 10*time.Second, "the flush to succeed", func() bool { return f.FlushError() == nil })
	require.NoError(t, f.Full())
	for i := 6; i < 12; i++ {
		f.ApplyBatch([]*raft.Log{fullDiskEntry(i)})
	}
	_, err = f.Flush()
	require.NoError(t, err)
	_, err = ref.Flush()
	require.NoError(t, err)
	require.Equal(t, stateHash(t, ref), stateHash(t, f), "the same files as a replica that never failed")
	require.NoError(t, f.Close())

	f, err = openTest(path, 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	recs, err = f.Read(0, 0, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, recs, 60)
	seg := filepath.Join(filepath.Dir(path), "p0", segmentName(0))
	st, err := os.Stat(seg)
	require.NoError(t, err)
	var length int64
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		s, ok, err := findSegment(tx.Bucket(partitionBucketName(0)).Bucket(bucketSegs), 0)
		require.True(t, ok)
		length = s.length
		return err
	}))
	require.Equal(t, length, st.Size(), "no torn write left past the recorded length")
}
