package raftlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/raftlog/internal/wire"
	"github.com/esraft/esraft/systemtest/wait"
)

// retentionView lists "key:seq" of what l returns of each key.
func retentionView(t *testing.T, l *Log, keys []string) []string {
	t.Helper()
	var out []string
	for _, k := range keys {
		recs, err := l.ReadKey(context.Background(), l.Partition(k), k, 1, ReadOptions{})
		require.NoError(t, err)
		for _, r := range recs {
			out = append(out, fmt.Sprintf("%s:%d", r.Key, r.KeySeq))
		}
	}
	return out
}

// TestRetentionOnEveryReplica is the retention test of issue #20: a
// category's records with a max age of 2 s disappear from reads on all 3
// nodes at the same raft index; a max count keeps exactly the newest N; a
// key's own rule overrides its category's; restarts and a snapshot
// install (a follower behind the others' compacted logs) keep the same view, with state digests equal across nodes.
func TestRetentionOnEveryReplica(t *testing.T) {
	longTest(t)
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.Shards = 2
		cfg.RetentionTick = 100 * time.Millisecond
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 32
		cfg.WALSegmentBytes = 16 << 10
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := c.node(c.leader(0))
	_, err := l.SetPrefixRetention(ctx, "order-", Retention{MaxAge: 2 * time.Second})
	require.NoError(t, err)
	_, err = l.SetKeyRetention(ctx, "order-keep", Retention{MaxCount: 3})
	require.NoError(t, err)
	_, err = l.SetKeyRetention(ctx, "user-1", Retention{MaxCount: 2})
	require.NoError(t, err)
	_, err = l.SetKeyRetention(ctx, "", Retention{MaxCount: 2})
	require.ErrorIs(t, err, ErrEmptyKey)
	_, err = l.SetPartitionRetention(ctx, 99, PartitionRetention{MaxAge: time.Second})
	require.ErrorIs(t, err, ErrUnknownPartition)

	keys := []string{"order-1", "order-keep", "user-1"}
	var written []Position
	for _, k := range keys {
		res, err := c.node(1).Append(ctx, k, ctRecords(k, 0, 5))
		require.NoError(t, err)
		written = append(written, res.Position)
	}
	// Read at once, before anything is 2 s old.
	fresh := []string{"order-1:1", "order-1:2", "order-1:3", "order-1:4", "order-1:5", "order-keep:3", "order-keep:4", "order-keep:5", "user-1:4", "user-1:5"}
	for i := range c.nodes {
		for _, pos := range written {
			require.NoError(t, c.node(i).WaitApplied(ctx, pos))
		}
		require.Equal(t, fresh, retentionView(t, c.node(i), keys), "node %d", i)
	}

	// Each node is read until order-1 is gone; every read made at one
	// applied index (the same before and after) is an observation. On
	// every node the expiry must fall at the same index: no index is seen
	// with the records on one node and without them on another.
	s := l.ShardOf(l.Partition("order-1"))
	lastSeen, firstGone := uint64(0), uint64(1<<63)
	gone := make([]bool, len(c.nodes))
	wait.Until(t, 20*time.Second, "order-1 to expire on every node", func() bool {
		all := true
		for i := range c.nodes {
			n := c.node(i)
			before := appliedIndex(t, n, s)
			recs, err := n.ReadKey(ctx, n.Partition("order-1"), "order-1", 1, ReadOptions{})
			require.NoError(t, err)
			if appliedIndex(t, n, s) == before {
				if len(recs) > 0 {
					lastSeen = max(lastSeen, before)
				} else {
					firstGone = min(firstGone, before)
					gone[i] = true
				}
			}
			all = all && gone[i]
		}
		return all
	})
	t.Logf("order-1 last seen at index %d, first gone at index %d", lastSeen, firstGone)
	require.Less(t, lastSeen, firstGone, "a node showed order-1 at an index where another had it expired")
	expired := []string{"order-keep:3", "order-keep:4", "order-keep:5", "user-1:4", "user-1:5"}
	for i := range c.nodes {
		require.Equal(t, expired, retentionView(t, c.node(i), keys), "node %d", i)
	}
	for _, p := range []Partition{l.Partition("order-1")} {
		for i := range c.nodes {
			for _, r := range readAll(t, c.node(i), p) {
				require.NotEqual(t, "order-1", r.Key, "a partition read of node %d returned an expired record", i)
			}
		}
	}

	// Restart every node without ticks (so applied indexes stand still
	// and digests can be compared): the same view.
	for i := range c.nodes {
		c.nodes[i].cfg.RetentionTick = -1
		c.restart(i)
	}
	c.base.RetentionTick = -1
	c.converged()
	for i := range c.nodes {
		require.Equal(t, expired, retentionView(t, c.node(i), keys), "node %d after restarts", i)
	}

	// A follower stops; more entries go in, until the other nodes' raft
	// logs have dropped what it lacks, so that it must install a snapshot.
	f := (c.leader(int(s)) + 1) % 3
	behind := make([]uint64, 2)
	for g := range 2 {
		behind[g] = appliedIndex(t, c.node(f), Shard(g))
	}
	c.stop(f)
	running := []int{(f + 1) % 3, (f + 2) % 3}
	i := 0
	wait.Until(t, 30*time.Second, "the raft logs to be compacted", func() bool {
		for range 20 {
			k := fmt.Sprintf("filler-%d", i%7)
			_, err := c.node(running[i%2]).Append(ctx, k, ctRecords(k, 0, 1))
			require.NoError(t, err)
			i++
		}
		compacted := true
		for _, n := range running {
			for g := range 2 {
				ctFlush(t, c.node(n), g)
				var e raft.Log
				compacted = compacted && c.node(n).shards[g].store.GetLog(behind[g]+1, &e) != nil
			}
		}
		return compacted
	})
	c.open(f, nil)
	c.converged()
	for g := range 2 {
		// Raft records an installed snapshot just after Restore returns.
		wait.Until(t, 10*time.Second, "the follower to record an installed snapshot", func() bool {
			snapIdx, err := strconv.ParseUint(c.node(f).shards[g].Raft.Stats()["last_snapshot_index"], 10, 64)
			require.NoError(t, err)
			return snapIdx > behind[g]
		})
	}
	n := f
	rule, ok, err := c.node(n).KeyRetention("order-9")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, Retention{MaxAge: 2 * time.Second}, rule, "the category's rule reached the new node")
	for g := range 2 {
		want := ctBucketDigests(t, c.node(0), g)
		for i := range c.nodes {
			require.Equal(t, expired, retentionView(t, c.node(i), keys), "node %d", i)
			require.Equal(t, want, ctBucketDigests(t, c.node(i), g), "shard %d of node %d", g, i)
		}
	}
}

// TestForwardedRetentionIsValidated: a retention call a peer sends that
// does not decode, or that the state machine would refuse, is refused by
// the leader before anything is proposed.
func TestForwardedRetentionIsValidated(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	li := c.leader(0)
	leader, f := c.node(li), c.node((li+1)%3)
	lastBefore := leader.shards[0].Raft.LastIndex()
	for name, op := range map[string]wire.RetentionOp{
		"unknown kind":         {Kind: 99},
		"empty key":            {Kind: wire.RetKey},
		"negative age":         {Kind: wire.RetPrefix, MaxAge: -1},
		"unknown partition":    {Kind: wire.RetPartition, Partition: 999},
		"count on a partition": {Kind: wire.RetPartition, MaxCount: 1},
	} {
		resp, err := f.client.Call(ctx, leader.Addr(), route.MethodRetention, wire.EncodeRetentionOp([]byte{0}, &op))
		require.NoError(t, err, name)
		require.NotEqual(t, byte(0), resp[0], "%s: the leader must refuse it", name)
	}
	for name, payload := range map[string][]byte{
		"garbage":        {0xde, 0xad, 0xbe, 0xef},
		"unknown shard":  wire.EncodeRetentionOp([]byte{9}, &wire.RetentionOp{Kind: wire.RetTick}),
		"trailing bytes": append(wire.EncodeRetentionOp([]byte{0}, &wire.RetentionOp{Kind: wire.RetTick}), 1),
		"empty":          {},
	} {
		resp, err := f.client.Call(ctx, leader.Addr(), route.MethodRetention, payload)
		require.NoError(t, err, name)
		require.NotEqual(t, byte(0), resp[0], "%s: the leader must refuse it", name)
	}
	require.Equal(t, lastBefore, leader.shards[0].Raft.LastIndex(), "nothing was proposed")
	_, err := f.SetKeyRetention(ctx, "k", Retention{MaxCount: 1})
	require.NoError(t, err, "the cluster is whole")
}

// TestBackgroundScavenger: with a ScavengeInterval, the leader raises the
// low offsets and the node removes the segments below them by itself.
func TestBackgroundScavenger(t *testing.T) {
	dir := t.TempDir()
	l := openSingle(t, dir, func(c *Config) {
		c.Partitions = 1
		c.ScavengeInterval = 50 * time.Millisecond
		c.stateSegmentBytes = 4 << 10
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 40 {
		_, err := l.Append(ctx, fmt.Sprintf("old-%d", i%4), ctRecords("old", 0, 5))
		require.NoError(t, err)
	}
	res, err := l.Append(ctx, "live", ctRecords("live", 0, 3))
	require.NoError(t, err)
	ctFlush(t, l, 0) // the segments are written at a flush
	segDir := filepath.Join(dir, "g0", "p0")
	before, err := os.ReadDir(segDir)
	require.NoError(t, err)
	_, err = l.SetPrefixRetention(ctx, "old-", Retention{MaxAge: time.Nanosecond})
	require.NoError(t, err)
	wait.Until(t, 20*time.Second, "the scavenger to remove the old segments", func() bool {
		_, low, err := l.PartitionRetentionOf(0)
		require.NoError(t, err)
		now, err := os.ReadDir(segDir)
		require.NoError(t, err)
		return low == res.FirstOffset && len(now) < len(before)
	})
	recs := readAll(t, l, 0)
	require.Len(t, recs, 3)
	require.Equal(t, "live", recs[0].Key)
}
