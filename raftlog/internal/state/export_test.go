package state

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// The engine's tests drive it as raft does, through its FSM.

func (f *Engine) ApplyBatch(logs []*raft.Log) []any { return NewFSM(f).ApplyBatch(logs) }

func (f *Engine) Snapshot() (raft.FSMSnapshot, error) { return NewFSM(f).Snapshot() }

// openTest opens an engine as openFSM did before the engine had Options.
// The background scrub is off (the scrub tests open their engines
// themselves): its pass at start would race a test's own detection of
// damage it made.
func openTest(path string, shard, partitions, shards int, retention time.Duration) (*Engine, error) {
	return Open(Options{Path: filepath.Clean(path), Shard: core.Shard(shard), Partitions: partitions, Shards: shards, IDRetention: retention, ScrubRate: -1})
}

// segmentRecords returns the offsets of partition p whose segment frames
// hold a record (not a tombstone).
func segmentRecords(t testing.TB, f *Engine, p core.Partition) map[uint64]bool {
	var out map[uint64]bool
	require.NoError(t, f.view(func(tx *bolt.Tx) error {
		out = segmentRecordsIn(t, f, tx, p)
		return nil
	}))
	return out
}

func segmentRecordsIn(t testing.TB, f *Engine, tx *bolt.Tx, p core.Partition) map[uint64]bool {
	out := map[uint64]bool{}
	require.NoError(t, f.scanSegments(tx, p, 0, math.MaxUint64, func(off uint64, payload []byte) (bool, error) {
		if !isTombstone(payload) {
			out[off] = true
		}
		return true, nil
	}))
	return out
}

// hashSegments adds the name and bytes of every segment file of f to h.
func hashSegments(t testing.TB, h io.Writer, f *Engine) {
	for _, p := range f.partitions {
		dir := segmentDir(f.dir, p)
		names, err := f.fs.ReadDir(dir)
		require.NoError(t, err)
		sort.Strings(names)
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(dir, n))
			require.NoError(t, err)
			fmt.Fprintf(h, "p%d/%s=%x\n", p, n, b)
		}
	}
}

// restoredCopy returns a new engine that installed a full copy of src, as
// a follower does.
func restoredCopy(t testing.TB, src *Engine) *Engine {
	t.Helper()
	full, _, err := src.openFullCopy()
	require.NoError(t, err)
	data, err := io.ReadAll(full)
	require.NoError(t, err)
	require.NoError(t, full.Close())
	dst := newTestFSM(t, time.Hour)
	require.NoError(t, dst.Restore(io.NopCloser(bytes.NewReader(data))))
	return dst
}
