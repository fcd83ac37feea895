package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"
)

// The store's consumer-group calls reach the log's groups, and their
// errors name the operation while errors.Is/As still find the log's.
func TestConsumerGroupThroughStore(t *testing.T) {
	s := eventstoretest.Single(t, eventstore.Partitions(2)).Node(0)
	ctx := context.Background()

	gs, err := s.JoinGroup(ctx, "g", "m1", 10*time.Second)
	require.NoError(t, err)
	require.Len(t, gs.Partitions, 2)
	a := gs.Partitions[0]
	require.Equal(t, "m1", a.Owner)

	_, err = s.Heartbeat(ctx, "g", "ghost", nil)
	require.ErrorIs(t, err, eventstore.ErrUnknownMember)
	require.ErrorContains(t, err, `eventstore: heartbeat in consumer group "g"`)

	stale := []eventstore.OffsetCommit{{Partition: a.Partition, Generation: a.Generation + 1, Offset: 1}}
	_, err = s.CommitOffsets(ctx, "g", "m1", stale)
	var sge *eventstore.StaleGenerationError
	require.ErrorAs(t, err, &sge)
	require.Equal(t, a.Generation, sge.Current)

	_, err = s.Append(ctx, "s-1", eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
	require.NoError(t, err)
	p := s.PartitionOf("s-1")
	park := []eventstore.ParkedRecord{{Offset: 0, Key: "s-1", Error: "boom", Attempts: 3}}
	_, err = s.CommitOffsets(ctx, "g", "m1", []eventstore.OffsetCommit{{Partition: p, Generation: gs.Partitions[p].Generation, Offset: 1, Park: park}})
	require.NoError(t, err)
	require.NoError(t, s.RetryParked(ctx, "g", p, 0))
	got, ok, err := s.GroupState("g")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, uint64(1), got.Partitions[p].Committed)
	require.Len(t, got.Partitions[p].Parked, 1)
	require.True(t, got.Partitions[p].Parked[0].Retry)

	// A generation already applied returns at once; the current one waits.
	require.NoError(t, s.WaitGroupChange(ctx, "g", got.Generation-1))
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.WaitGroupChange(wctx, "g", got.Generation), context.DeadlineExceeded)

	require.NoError(t, s.LeaveGroup(ctx, "g", "m1"))
	got, _, err = s.GroupState("g")
	require.NoError(t, err)
	require.Empty(t, got.Members)

	// Offset control: a new group at the latest offsets; the stopped group
	// reset to the earliest, then deleted.
	late, err := s.JoinGroupAt(ctx, "late", "m1", 10*time.Second, eventstore.StartPosition{Kind: eventstore.StartLatest})
	require.NoError(t, err)
	require.Equal(t, uint64(1), late.Partitions[p].Committed)
	_, err = s.CommitOffsets(ctx, "late", "m1", []eventstore.OffsetCommit{{Partition: p, Generation: late.Partitions[p].Generation, Offset: 0}})
	require.ErrorIs(t, err, eventstore.ErrCommitBehind)
	require.ErrorIs(t, s.DeleteGroup(ctx, "late"), eventstore.ErrGroupActive)
	require.ErrorContains(t, s.DeleteGroup(ctx, "late"), `eventstore: delete consumer group "late"`)
	got, err = s.ResetGroup(ctx, "g", eventstore.StartPosition{})
	require.NoError(t, err)
	require.Zero(t, got.Partitions[p].Committed)
	require.Empty(t, got.Partitions[p].Parked, "the parked event is replayed")
	require.NoError(t, s.DeleteGroup(ctx, "g"))
	_, ok, err = s.GroupState("g")
	require.NoError(t, err)
	require.False(t, ok)
	_, err = s.ResetGroup(ctx, "g", eventstore.StartPosition{})
	require.ErrorIs(t, err, eventstore.ErrUnknownGroup)

	require.NoError(t, s.Close())
	_, err = s.JoinGroup(ctx, "g", "m1", 10*time.Second)
	require.ErrorIs(t, err, eventstore.ErrClosed)
	require.ErrorIs(t, err, raftlog.ErrClosed, "the log's error stays reachable")
	_, _, err = s.GroupState("g")
	require.ErrorIs(t, err, eventstore.ErrClosed)
}
