package projection

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/systemtest/wait"
)

// offsets returns the offsets a seen handler saw, in partition 0.
func (s *seen) offsets() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []uint64
	for k := range s.count {
		out = append(out, k[1])
	}
	return out
}

// A new group started at "latest" handles only the events appended after
// it joined; one started at a time, those from that time on. Reset and
// delete are refused while a member runs; reset to earliest replays
// everything; delete removes the group's state.
func TestGroupStartPositionsResetAndDelete(t *testing.T) {
	s := eventstoretest.Single(t, eventstore.Partitions(1)).Node(0)
	ctx := context.Background()
	var times []time.Time
	for i := 0; i < 5; i++ {
		res, err := s.Append(ctx, "acct-1", eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
		require.NoError(t, err)
		times = append(times, res.Time)
	}
	require.True(t, times[2].After(times[1]), "appends are stamped in order")

	late := newSeen()
	opt := groupOptions()
	opt.Start = eventstore.StartPosition{Kind: eventstore.StartLatest}
	m := runMember(t, s, "late", "m1", late.handler, opt, nil)
	wait.Until(t, 10*time.Second, "the group exists", func() bool { _, ok, _ := s.GroupState("late"); return ok })
	for i := 0; i < 3; i++ {
		_, err := s.Append(ctx, "acct-1", eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
		require.NoError(t, err)
	}
	requireAllCommitted(t, s, "late")
	require.ElementsMatch(t, []uint64{5, 6, 7}, late.offsets(), "only what was appended after the join")

	timed := newSeen()
	opt.Start = eventstore.StartPosition{Kind: eventstore.StartAtTime, Time: times[2]}
	runMember(t, s, "timed", "m1", timed.handler, opt, nil)
	requireAllCommitted(t, s, "timed")
	require.ElementsMatch(t, []uint64{2, 3, 4, 5, 6, 7}, timed.offsets(), "from the first event at or after the time")

	require.ErrorIs(t, m.g.Reset(ctx, eventstore.StartPosition{}), eventstore.ErrGroupActive)
	require.ErrorIs(t, m.g.Delete(ctx), eventstore.ErrGroupActive)
	m.stop()
	require.NoError(t, m.g.Reset(ctx, eventstore.StartPosition{Kind: eventstore.StartEarliest}))
	replay := newSeen()
	opt.Start = eventstore.StartPosition{Kind: eventstore.StartLatest} // ignored: the group exists
	m = runMember(t, s, "late", "m1", replay.handler, opt, nil)
	requireAllCommitted(t, s, "late")
	require.ElementsMatch(t, []uint64{0, 1, 2, 3, 4, 5, 6, 7}, replay.offsets(), "a reset to earliest replays everything")

	m.stop()
	require.NoError(t, m.g.Delete(ctx))
	_, ok, err := s.GroupState("late")
	require.NoError(t, err)
	require.False(t, ok, "the group's state is gone")
}

// A group subscribed to one category (whose name holds a '-') handles
// only its events, and its lag drops to 0 while other categories grow:
// the offsets it commits move past what it does not subscribe to.
func TestGroupLagCountsOnlySubscribedCategory(t *testing.T) {
	s := eventstoretest.Single(t, eventstore.Partitions(2)).Node(0)
	ctx := context.Background()
	sn := newSeen()
	opt := groupOptions()
	opt.Categories = []string{"order-line"}
	m := startMember(t, s, "m1", sn.handler, opt, nil)
	waitOwners(t, s, "m1")
	appendTo := func(stream string, n int) {
		for i := 0; i < n; i++ {
			_, err := s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{{Type: "Tick"}})
			require.NoError(t, err)
		}
	}
	appendTo("order-line-1", 4)
	wait.Until(t, 10*time.Second, "the category's events handled", func() bool { return sn.distinct() == 4 })
	for round := 0; round < 3; round++ {
		appendTo("order-1", 10)
		appendTo("invoice-1", 10)
		appendTo("order-liner-1", 10)
		wait.Until(t, 10*time.Second, "lag 0 while other categories grow", func() bool { return m.g.Status().Lag == 0 })
	}
	st := m.g.Status()
	var heads uint64
	for _, ps := range st.Partitions {
		heads += ps.Head
	}
	require.Equal(t, uint64(4+3*30), heads)
	require.Equal(t, 4, sn.distinct(), "only the subscribed category was handled")
}
