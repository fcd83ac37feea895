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
	"github.com/esraft/esraft/raftlog/internal/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

// scrubEngine opens an engine with 4 KiB segments (so most are sealed)
// and 400 records in partition 0, flushed; the scrub runs as given.
func scrubEngine(t *testing.T, path string, rate int64, interval time.Duration) *Engine {
	t.Helper()
	f, err := Open(Options{Path: path, Partitions: 4, Shards: 1, IDRetention: time.Hour, SegmentBytes: 4096, ScrubRate: rate, ScrubInterval: interval})
	require.NoError(t, err)
	if f.Applied() == 0 {
		var reqs []wire.Request
		for i := 1; i <= 400; i++ {
			reqs = append(reqs, req(0, "a", -1, i))
		}
		f.ApplyBatch([]*raft.Log{entryLog(1, 1, reqs...)})
		_, err = f.Flush()
		require.NoError(t, err)
	}
	return f
}

// A byte flipped in a sealed segment that no reader asks for is found by
// the background scrub: the engine reports the damage, naming the file.
func TestScrubFindsDamagedSealedSegment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := scrubEngine(t, path, -1, 0)
	require.NoError(t, f.scrubOnce(make(chan struct{})), "a whole state scrubs clean")
	require.NoError(t, f.Close())
	seg := filepath.Join(filepath.Dir(path), "p0", segmentName(0))
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	b[len(b)/2] ^= 0x10
	require.NoError(t, os.WriteFile(seg, b, 0o600))

	f = scrubEngine(t, path, 0, time.Hour) // the default rate, a pass at start
	defer f.Close()
	wait.Until(t, 10*time.Second, "the scrub to find the damage", func() bool { return f.Damage() != nil })
	require.ErrorIs(t, f.Damage(), core.ErrCorrupt)
	require.ErrorContains(t, f.Damage(), seg)
}

// An index value damaged without its checksum is found by the scrub.
func TestScrubFindsDamagedIndexValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := scrubEngine(t, path, -1, 0)
	require.NoError(t, f.Close())
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		ids := tx.Bucket(bucketIDs)
		k, v := ids.Cursor().Last()
		edited := append([]byte(nil), v...)
		edited[1] ^= 1
		return ids.Put(append([]byte(nil), k...), edited)
	}))
	require.NoError(t, db.Close())

	f = scrubEngine(t, path, -1, 0)
	defer f.Close()
	err = f.scrubOnce(make(chan struct{}))
	require.ErrorIs(t, err, core.ErrCorrupt)
	require.ErrorContains(t, err, "ids")
}

// The scrub reads no faster than its rate: a pass over about 16 KiB of
// sealed segments at 40 KiB/s takes at least 0.4 s.
func TestScrubIsRateBounded(t *testing.T) {
	f := scrubEngine(t, filepath.Join(t.TempDir(), "state.db"), -1, 0)
	defer f.Close()
	var sealed int64
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(partitionBucketName(0)).Bucket(bucketSegs).ForEach(func(k, v []byte) error {
			s, err := openSegEntry(k, v)
			if s.sealed {
				sealed += s.length
			}
			return err
		})
	}))
	require.Greater(t, sealed, int64(12<<10))
	f.scrubRate = 40 << 10
	start := time.Now()
	require.NoError(t, f.scrubOnce(make(chan struct{})))
	took := time.Since(start)
	min := time.Duration(float64(sealed) / float64(f.scrubRate) * float64(time.Second))
	require.GreaterOrEqual(t, took, min, "%d bytes of segments at %d bytes/s", sealed, f.scrubRate)
}
