package state

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// TestIndexCompaction: a compaction copies the index into a smaller file
// with the same buckets, keys and values; the engine reads and applies
// on; a restart opens it; an unfinished compaction's file is removed at
// Open.
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

	buckets := bucketPaths(t, f)
	res, err := f.CompactIndex(nil, false)
	require.NoError(t, err)
	require.Equal(t, st.Size(), res.Before)
	st2, err := os.Stat(path)
	require.NoError(t, err)
	t.Logf("index %d -> %d bytes", st.Size(), st2.Size())
	require.Less(t, st2.Size(), st.Size(), "the file shrank")
	require.Equal(t, st2.Size(), res.After)
	require.Equal(t, want, stateHash(t, f), "the same keys and values")
	require.Equal(t, buckets, bucketPaths(t, f), "the same buckets, empty ones and sequences included")
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

// bucketPaths lists every bucket of f's index with its sequence.
func bucketPaths(t testing.TB, f *Engine) []string {
	t.Helper()
	var out []string
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		var walk func(prefix string, b *bolt.Bucket) error
		walk = func(prefix string, b *bolt.Bucket) error {
			out = append(out, fmt.Sprintf("%s seq=%d", prefix, b.Sequence()))
			return b.ForEachBucket(func(k []byte) error { return walk(prefix+"/"+string(k), b.Bucket(k)) })
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(string(name), b) })
	}))
	return out
}
