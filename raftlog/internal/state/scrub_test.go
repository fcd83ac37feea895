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

// A byte flipped in the active segment, within what its last flush
// recorded, is found by the scrub too (the fault suite's corrupt-state
// hits the active segment as often as a sealed one).
func TestScrubFindsDamagedActiveSegment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := scrubEngine(t, path, -1, 0)
	require.NoError(t, f.Close())
	names, err := filepath.Glob(filepath.Join(filepath.Dir(path), "p0", "*.seg"))
	require.NoError(t, err)
	require.Greater(t, len(names), 1)
	seg := names[len(names)-1] // the active one: zero-padded bases sort
	b, err := os.ReadFile(seg)
	require.NoError(t, err)
	b[len(b)/2] ^= 0x10
	require.NoError(t, os.WriteFile(seg, b, 0o600))

	f = scrubEngine(t, path, -1, 0)
	defer f.Close()
	err = f.scrubOnce(make(chan struct{}))
	require.ErrorIs(t, err, core.ErrCorrupt)
	require.ErrorContains(t, err, seg)
	require.ErrorContains(t, err, "first")
}

// The active segment grows while the scrub reads it: passes that run
// beside applies and flushes find nothing in a whole state.
func TestScrubBesideFlushesFindsNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := scrubEngine(t, path, -1, 0)
	defer f.Close()
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := f.scrubOnce(stop); err != nil {
				done <- err
				return
			}
		}
	}()
	for i := 0; i < 200; i++ {
		var reqs []wire.Request
		for j := 0; j < 10; j++ {
			reqs = append(reqs, req(core.Partition(j%4), "b", -1, 1000+i*10+j))
		}
		f.ApplyBatch([]*raft.Log{entryLog(uint64(2+i), 1, reqs...)})
		if i%5 == 4 {
			_, err := f.Flush()
			require.NoError(t, err)
		}
	}
	close(stop)
	require.NoError(t, <-done)
	require.NoError(t, f.Damage())
}
