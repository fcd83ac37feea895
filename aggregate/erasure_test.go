package aggregate_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/systemtest/wait"
)

// markerFiles returns the files under dir that hold marker, with the
// number of times each does.
func markerFiles(t *testing.T, dir string, marker []byte) map[string]int {
	t.Helper()
	out := map[string]int{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil // removed while we walked (a compaction)
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if n := bytes.Count(b, marker); n > 0 {
			rel, _ := filepath.Rel(dir, path)
			out[rel] = n
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// TestErasureLeavesNoCopy is the erasure test of issue #20: a marker
// written in an aggregate's events (data), its snapshots and its events'
// metadata is found in the files of every node of a 3-node cluster
// before, and in none after the aggregate is deleted, the nodes scavenge
// and raft compacts its log past the entries.
func TestErasureLeavesNoCopy(t *testing.T) {
	c := eventstoretest.StartCluster(t, 3, eventstore.LogConfig(func(cfg *raftlog.Config) {
		cfg.TrailingLogs = 4 // raft keeps few entries after a snapshot
		cfg.WALSegmentBytes = 16 << 10
		cfg.ScavengeInterval = -1
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	marker := "erase-me-" + uuid.NewString()
	repo := aggregate.NewRepository(c.Node(0), newAccounts(aggregate.SnapshotEvery(2)))
	mctx := aggregate.WithCorrelationID(ctx, marker)
	_, err := repo.Create(mctx, "gdpr", OpenAccount(marker))
	require.NoError(t, err)
	for range 3 {
		_, err := repo.Execute(mctx, "gdpr", deposit(1))
		require.NoError(t, err)
	}
	_, err = repo.Create(ctx, "keep", OpenAccount("someone else"))
	require.NoError(t, err)
	snaps, err := c.Node(0).ReadStream(ctx, "$snapshot-account-gdpr", 0, 10)
	require.NoError(t, err)
	require.NotEmpty(t, snaps)
	require.Contains(t, string(snaps[0].Data), marker, "the snapshot holds the marker")

	dirs := make([]string, c.Size)
	for i := range dirs {
		require.NoError(t, c.Node(i).Barrier(ctx))
		dirs[i] = c.Node(i).Log().Dir()
	}
	for i, dir := range dirs {
		// The state files hold the records after a flush; the raft log at once.
		_, err := c.Node(i).Log().Scavenge(ctx)
		require.NoError(t, err)
		found := markerFiles(t, dir, []byte(marker))
		t.Logf("node %d before: %v", i, found)
		var seg, wal bool
		for f := range found {
			seg = seg || filepath.Ext(f) == ".seg"
			wal = wal || filepath.Base(filepath.Dir(f)) == "wal"
		}
		require.True(t, seg && wal, "node %d: the marker is in a state segment and the raft log", i)
	}

	require.NoError(t, repo.Delete(ctx, "gdpr", eventstore.Any))
	// Raft's log holds the entries until it compacts past them, a whole
	// log segment at a time: other writes fill segments, and each node's
	// scavenge snapshots (the state flushes and erases first).
	filler := 0
	wait.Until(t, 60*time.Second, "the marker to be gone from every node", func() bool {
		for range 20 {
			_, err := c.Node(filler%c.Size).Append(ctx, fmt.Sprintf("filler-%d", filler%5), eventstore.Any,
				[]eventstore.EventData{{Type: "filler", Data: bytes.Repeat([]byte("x"), 512)}})
			require.NoError(t, err)
			filler++
		}
		clean := true
		for i, dir := range dirs {
			require.NoError(t, c.Node(i).Barrier(ctx))
			_, err := c.Node(i).Log().Scavenge(ctx)
			require.NoError(t, err)
			if found := markerFiles(t, dir, []byte(marker)); len(found) > 0 {
				var names []string
				for f := range found {
					names = append(names, f)
				}
				sort.Strings(names)
				t.Logf("node %d after %d filler events: marker still in %v", i, filler, names)
				clean = false
			}
		}
		return clean
	})
	t.Logf("no copy of the marker left on any node after %d filler events", filler)
	for i := range c.Size {
		_, err := aggregate.NewRepository(c.Node(i), newAccounts(aggregate.SnapshotEvery(2))).Load(ctx, "gdpr")
		require.ErrorIs(t, err, aggregate.ErrNotFound, "node %d", i)
		acct, err := aggregate.NewRepository(c.Node(i), newAccounts()).Load(ctx, "keep")
		require.NoError(t, err, "node %d", i)
		require.Equal(t, "someone else", acct.State.Owner)
	}
}
