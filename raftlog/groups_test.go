package raftlog

import (
	"context"
	"testing"
	"time"

	"github.com/esraft/esraft/raftlog/internal/route"
	"github.com/esraft/esraft/systemtest/wait"
	"github.com/stretchr/testify/require"
)

// Group operations from a follower are forwarded to group 0's leader, and
// a stale commit comes back typed.
func TestGroupOperationsFromFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	lead := c.leader(0)
	f := c.node((lead + 1) % 3)
	s, err := f.JoinGroup(ctx, "workers", "w1", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "w1", s.Partitions[3].Owner)
	gen := s.Partitions[3].Generation
	s, err = c.node((lead+2)%3).JoinGroup(ctx, "workers", "w2", 5*time.Second)
	require.NoError(t, err)
	require.True(t, s.Partitions[7].Revoking())
	s, err = f.Heartbeat(ctx, "workers", "w1", []Partition{4, 5, 6, 7})
	require.NoError(t, err)
	_, err = f.CommitOffsets(ctx, "workers", "w1", []OffsetCommit{{Partition: 7, Generation: gen, Offset: 3}})
	var sge *StaleGenerationError
	require.ErrorAs(t, err, &sge)
	require.Equal(t, "w2", sge.Owner)
	_, err = f.CommitOffsets(ctx, "workers", "w1", []OffsetCommit{{Partition: 3, Generation: gen, Offset: 3}})
	require.NoError(t, err)
	_, err = f.Heartbeat(ctx, "workers", "nobody", nil)
	require.ErrorIs(t, err, ErrUnknownMember)
	_, err = f.CommitOffsets(ctx, "workers", "w1", []OffsetCommit{{Partition: 3, Generation: gen, Offset: 2}})
	require.ErrorIs(t, err, ErrCommitBehind, "forwarded, the sentinel survives")
	_, err = f.ResetGroup(ctx, "workers", StartPosition{Kind: StartLatest})
	require.ErrorIs(t, err, ErrGroupActive)
	require.ErrorIs(t, f.DeleteGroup(ctx, "workers"), ErrGroupActive)
	for i := 0; i < 3; i++ {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		require.NoError(t, c.node(i).WaitGroupChange(wctx, "workers", s.Generation-1))
		cancel()
		wait.Until(t, 10*time.Second, "replica has the commit", func() bool {
			st, ok, err := c.node(i).GroupState("workers")
			return err == nil && ok && st.Partitions[3].Committed == 3
		})
	}
}

// A new group starts where JoinGroupAt says (latest, a time, offsets);
// joining an existing group ignores it. Reset and delete are refused while
// a member is live, then apply; a deleted group stays deleted across a
// restart. A commit below the committed offset is refused.
func TestGroupStartResetAndDelete(t *testing.T) {
	c := newCluster(t, 1, nil)
	ctx := context.Background()
	l := c.node(0)
	p := l.Partition("k")
	first, err := l.Append(ctx, "k", []NewRecord{rec("1"), rec("2")})
	require.NoError(t, err)
	second, err := l.Append(ctx, "k", []NewRecord{rec("3")})
	require.NoError(t, err)
	recs := readAll(t, l, p)
	require.Len(t, recs, 3)
	require.True(t, recs[2].Time.After(recs[1].Time), "the second append is stamped later")

	s, err := l.JoinGroupAt(ctx, "late", "m", 5*time.Second, StartPosition{Kind: StartLatest})
	require.NoError(t, err)
	require.Equal(t, second.FirstOffset+1, s.Partitions[p].Committed)
	s, err = l.JoinGroupAt(ctx, "timed", "m", 5*time.Second, StartPosition{Kind: StartAtTime, Time: recs[2].Time})
	require.NoError(t, err)
	require.Equal(t, second.FirstOffset, s.Partitions[p].Committed)
	s, err = l.JoinGroupAt(ctx, "timed", "m2", 5*time.Second, StartPosition{Kind: StartLatest})
	require.NoError(t, err)
	require.Equal(t, second.FirstOffset, s.Partitions[p].Committed, "an existing group keeps its offsets")
	offs := make([]uint64, l.Partitions())
	offs[p] = 1
	s, err = l.JoinGroupAt(ctx, "exact", "m", 5*time.Second, StartPosition{Kind: StartAtOffsets, Offsets: offs})
	require.NoError(t, err)
	require.Equal(t, first.FirstOffset+1, s.Partitions[p].Committed)
	offs[p] = 4
	_, err = l.JoinGroupAt(ctx, "bad", "m", 5*time.Second, StartPosition{Kind: StartAtOffsets, Offsets: offs})
	require.ErrorIs(t, err, ErrConfig, "beyond the partition's end")
	_, err = l.JoinGroupAt(ctx, "bad", "m", 5*time.Second, StartPosition{Kind: StartAtOffsets, Offsets: offs[:1]})
	require.ErrorIs(t, err, ErrConfig, "one offset per partition")
	_, ok, _ := l.GroupState("bad")
	require.False(t, ok)

	gen := s.Partitions[p].Generation
	_, err = l.CommitOffsets(ctx, "exact", "m", []OffsetCommit{{Partition: p, Generation: gen, Offset: 0}})
	require.ErrorIs(t, err, ErrCommitBehind)
	_, err = l.ResetGroup(ctx, "exact", StartPosition{})
	require.ErrorIs(t, err, ErrGroupActive)
	require.ErrorIs(t, l.DeleteGroup(ctx, "exact"), ErrGroupActive)
	require.NoError(t, l.LeaveGroup(ctx, "exact", "m"))
	s, err = l.ResetGroup(ctx, "exact", StartPosition{})
	require.NoError(t, err)
	require.Zero(t, s.Partitions[p].Committed)
	_, err = l.ResetGroup(ctx, "nobody", StartPosition{})
	require.ErrorIs(t, err, ErrUnknownGroup)

	require.NoError(t, l.DeleteGroup(ctx, "exact"))
	_, ok, _ = l.GroupState("exact")
	require.False(t, ok)
	c.restart(0)
	_, ok, _ = c.node(0).GroupState("exact")
	require.False(t, ok, "deleted for good")
	_, ok, _ = c.node(0).GroupState("late")
	require.True(t, ok)
}

// A forced reset is proposed only once every member says it knows the
// operation: a node of an older version skips the entry and keeps the
// members, and its copy of the group's offsets would differ from the
// others' from then on.
func TestForceResetNeedsEveryMemberToKnowIt(t *testing.T) {
	c := newCluster(t, 3, nil)
	ctx := context.Background()
	li := c.leader(0)
	l := c.node(li)
	_, err := l.Append(ctx, "k", []NewRecord{rec("1"), rec("2")})
	require.NoError(t, err)
	_, err = l.JoinGroup(ctx, "g", "m", 30*time.Second)
	require.NoError(t, err)

	old := (li + 1) % 3
	c.node(old).router.SetFeatures(nil) // as a node of an older version answers
	_, err = l.ForceResetGroup(ctx, "g", StartPosition{Kind: StartEarliest})
	require.ErrorIs(t, err, ErrConfig)
	require.ErrorContains(t, err, c.nodes[old].id+" at ")
	require.ErrorContains(t, err, "an older version")
	st, ok, err := l.GroupState("g")
	require.NoError(t, err)
	require.True(t, ok)
	require.Len(t, st.Members, 1, "refused: nothing proposed, the member stays")

	c.node(old).router.SetFeatures(route.Features)
	st, err = l.ForceResetGroup(ctx, "g", StartPosition{Kind: StartEarliest})
	require.NoError(t, err)
	require.Empty(t, st.Members, "forced: the member is fenced out")
}
