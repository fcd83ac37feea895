package state

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// testdata/format1/fsm.db is a format-1 state file (records in bucket r,
// values without checksums) written by the code of 6d9341b for 4
// partitions, 1 shard, from these entries, and compacted:
//
//	1 (t=1000): a1..a20 in partition 0 (IDs 1..20), b1..b5 in partition 1 (IDs 101..105); flushed
//	2 (t=1001): truncate a below 6 (a1..a5 erased from the file)
//	3 (t=1002): c1..c3 in partition 2 (IDs 201..203), a21 (ID 21)
//	4 (t=1003): delete b (b1..b5 erased)
const format1Fixture = "testdata/format1/fsm.db"

// copyFixture copies the format-1 fixture to dir/fsm.db.
func copyFixture(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(format1Fixture)
	require.NoError(t, err)
	legacy := filepath.Join(dir, "fsm.db")
	require.NoError(t, os.WriteFile(legacy, b, 0o600))
	return legacy
}

func openConverted(t *testing.T, dir, legacy string) *Engine {
	t.Helper()
	f, err := Open(Options{Path: filepath.Join(dir, "state.db"), LegacyPath: legacy, Partitions: 4, Shards: 1, IDRetention: time.Hour})
	require.NoError(t, err)
	return f
}

func keySeqsOf(t *testing.T, f *Engine, p core.Partition) []uint64 {
	t.Helper()
	recs, err := f.Read(p, 0, 100, 1<<20)
	require.NoError(t, err)
	var seqs []uint64
	for _, r := range recs {
		seqs = append(seqs, r.KeySeq)
	}
	return seqs
}

// A format-1 file is converted at Open: its records read the same from
// segments (erased offsets are tombstones), its index values carry
// checksums, the old file is gone, and applies go on from its state.
func TestOpenConvertsFormat1(t *testing.T) {
	dir := t.TempDir()
	legacy := copyFixture(t, dir)
	f := openConverted(t, dir, legacy)
	var err error
	require.NoFileExists(t, legacy)
	require.Equal(t, uint64(4), f.Applied())
	for p, next := range []uint64{21, 5, 3, 0} {
		require.Equal(t, next, f.NextOffset(core.Partition(p)), "partition %d", p)
	}
	require.Equal(t, []uint64{6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}, keySeqsOf(t, f, 0))
	require.Empty(t, keySeqsOf(t, f, 1), "b was deleted")
	require.Equal(t, []uint64{1, 2, 3}, keySeqsOf(t, f, 2))
	got, err := f.ReadKey(2, "c", 2, 10, 1<<20)
	require.NoError(t, err)
	require.Equal(t, "value-202", string(got[0].Value))
	require.Len(t, segmentRecords(t, f, 0), 16, "a1..a5 are tombstones")
	info, err := f.KeyInfo(1, "b")
	require.NoError(t, err)
	require.Equal(t, core.KeyInfo{Seq: 5, First: 6, Deleted: true}, info)

	out := f.ApplyBatch([]*raft.Log{entryLog(5, 1004, req(0, "a", -1, 21), req(0, "a", 21, 22))})
	require.Equal(t, "p0@20 seq21 n1 dup=true idx=5 p0@21 seq22 n1 dup=false idx=5 ", outcomeString(out[0]))
	require.NoError(t, f.Close())

	f, err = openTest(filepath.Join(dir, "state.db"), 0, 4, 1, time.Hour)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, uint64(22), f.NextOffset(0))
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		require.Nil(t, tx.Bucket(partitionBucketName(0)).Bucket(bucketRecs), "records live in segments only")
		require.Equal(t, []byte{formatSegments}, tx.Bucket(bucketMeta).Get(metaFormat))
		return nil
	}))
}

// A conversion a crash interrupted left segment files and a partial new
// index: the next Open starts it again from the format-1 file and gets
// the same result.
func TestConvertFormat1AfterCrash(t *testing.T) {
	dir := t.TempDir()
	legacy := copyFixture(t, dir)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "p0"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "p0", segmentName(0)), []byte("half a conversion"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "state.db.convert"), []byte("partial"), 0o600))
	f := openConverted(t, dir, legacy)
	defer f.Close()
	require.NoFileExists(t, filepath.Join(dir, "state.db.convert"))
	require.Equal(t, []uint64{6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}, keySeqsOf(t, f, 0))
	require.NoError(t, f.Damage())
}

// A format-1 file whose key index still has one entry per sequence (files
// written before 2026-11-24) converts into chunks.
func TestConvertFormat1KeyIndexV1(t *testing.T) {
	dir := t.TempDir()
	legacy := copyFixture(t, dir)
	db, err := bolt.Open(legacy, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		pb := tx.Bucket(partitionBucketName(0))
		old, err := pb.CreateBucket(bucketKeysV1)
		require.NoError(t, err)
		prefix := wire.AppendString(nil, "a")
		for seq := uint64(1); seq <= 21; seq++ {
			require.NoError(t, old.Put(binary.BigEndian.AppendUint64(prefix, seq), be64(seq-1)))
		}
		return pb.DeleteBucket(bucketKeys)
	}))
	require.NoError(t, db.Close())
	f := openConverted(t, dir, legacy)
	defer f.Close()
	seq, err := f.KeySeq(0, "a")
	require.NoError(t, err)
	require.Equal(t, uint64(21), seq)
	got, err := f.ReadKey(0, "a", 1, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, got, 16, "from the floor, 6")
	require.Equal(t, uint64(20), got[15].Offset)
}
