package eventstoretest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
)

// testSeekByTime: a partition read, a subscription and a new consumer
// group start at the first event stamped at or after a time, on every
// node.
func testSeekByTime(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	const stream = "clock-1"
	var last eventstore.AppendResult
	for i := 0; i < 12; i++ { // one append each: each its own raft entry and time
		var err error
		last, err = node(c, i).Append(ctx, stream, eventstore.Any, []eventstore.EventData{ev("Ticked", fmt.Sprint(i))})
		require.NoError(t, err)
	}
	syncAll(t, c, last.Position)
	p := last.Partition
	s := node(c, 0)
	all, head, err := s.ReadPartition(ctx, p, 0, 100)
	require.NoError(t, err)
	require.Len(t, all, 12)
	// want is the first offset stamped at or after at (head if none).
	want := func(at time.Time) uint64 {
		for _, e := range all {
			if !e.Time.Before(at) {
				return e.Offset
			}
		}
		return head
	}
	times := []time.Time{all[0].Time.Add(-time.Hour), all[0].Time, all[5].Time, all[5].Time.Add(time.Nanosecond), all[11].Time, all[11].Time.Add(time.Nanosecond)}
	for i := 0; i < c.Size; i++ {
		for _, at := range times {
			off, err := c.Node(i).OffsetAt(ctx, p, at)
			require.NoError(t, err)
			require.Equal(t, want(at), off, "node %d, time %v", i, at)
		}
	}
	require.Equal(t, all[5].Offset, want(all[5].Time), "a time of an event seeks to that event")
	require.Equal(t, head, want(all[11].Time.Add(time.Nanosecond)), "past the last event: the head")
	_, err = s.OffsetAt(ctx, eventstore.Partition(s.Partitions()), time.Now())
	require.ErrorIs(t, err, eventstore.ErrUnknownPartition)

	// A subscription from a time delivers from that event on.
	from := want(all[5].Time)
	sub, err := node(c, 1).Subscribe(ctx, eventstore.SubscribeOptions{FromTime: all[5].Time, Partitions: []eventstore.Partition{p}})
	require.NoError(t, err)
	defer sub.Close()
	got := collect(t, sub, int(head-from))
	require.Equal(t, all[from].ID, got[0].ID)
	require.Equal(t, all[11].ID, got[len(got)-1].ID)
	_, err = s.Subscribe(ctx, eventstore.SubscribeOptions{FromTime: all[5].Time, FromNow: true})
	require.ErrorIs(t, err, eventstore.ErrInvalidOptions)

	// A new consumer group starts there too; joining it again later keeps
	// its offsets.
	gs, err := node(c, 2).JoinGroupAt(ctx, "from-time", "m1", 10*time.Second, eventstore.StartPosition{Kind: eventstore.StartAtTime, Time: all[5].Time})
	require.NoError(t, err)
	require.Equal(t, from, gs.Partitions[p].Committed)
	for q := range gs.Partitions {
		if eventstore.Partition(q) != p {
			require.Zero(t, gs.Partitions[q].Committed, "an empty partition starts at its head, 0")
		}
	}
	gs, err = node(c, 2).JoinGroupAt(ctx, "from-time", "m2", 10*time.Second, eventstore.StartPosition{Kind: eventstore.StartAtTime, Time: all[11].Time.Add(time.Nanosecond)})
	require.NoError(t, err)
	require.Equal(t, from, gs.Partitions[p].Committed, "an existing group keeps its offsets")
	require.NoError(t, node(c, 2).LeaveGroup(ctx, "from-time", "m1"))
	require.NoError(t, node(c, 2).LeaveGroup(ctx, "from-time", "m2"))
}
