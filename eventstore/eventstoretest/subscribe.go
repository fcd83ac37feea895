package eventstoretest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/esraft/esraft/eventstore"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// The subscription part of the conformance suite: catch-up, tailing,
// resuming, filters and leader changes.

// collect reads n events from sub, failing after the timeout.
func collect(t testing.TB, sub *eventstore.Subscription, n int) []eventstore.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make([]eventstore.Event, 0, n)
	for len(out) < n {
		e, err := sub.Next(ctx)
		require.NoError(t, err, "after %d of %d events", len(out), n)
		out = append(out, e)
	}
	return out
}

// collectUntilIdle reads from sub until nothing arrives for 200 ms.
func collectUntilIdle(t testing.TB, sub *eventstore.Subscription) []eventstore.Event {
	t.Helper()
	var out []eventstore.Event
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		e, err := sub.Next(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		require.NoError(t, err)
		out = append(out, e)
	}
}

// checkOrder asserts offsets grow within each partition and no event
// comes twice.
func checkOrder(t testing.TB, evs []eventstore.Event) {
	t.Helper()
	last := map[eventstore.Partition]uint64{}
	seen := map[uuid.UUID]bool{}
	for _, e := range evs {
		if prev, ok := last[e.Partition]; ok {
			require.Greater(t, e.Offset, prev, "partition %d goes forward", e.Partition)
		}
		last[e.Partition] = e.Offset
		require.False(t, seen[e.ID], "event %s delivered twice", e.ID)
		seen[e.ID] = true
	}
}

func appendN(t testing.TB, c Cluster, prefix string, n int) []eventstore.AppendResult {
	t.Helper()
	ctx := ctxFor(t)
	out := make([]eventstore.AppendResult, n)
	for i := 0; i < n; i++ {
		var err error
		out[i], err = node(c, i).Append(ctx, fmt.Sprintf("%s-%d", prefix, i%7), eventstore.Any, []eventstore.EventData{ev("Tick", fmt.Sprint(i))})
		require.NoError(t, err)
	}
	return out
}

func testSubscribeCatchUpThenLive(t *testing.T, c Cluster) {
	hist := appendN(t, c, "hist", 60)
	s := node(c, 1)
	syncAll(t, c, hist[len(hist)-1].Position)
	sub, err := s.Subscribe(ctxFor(t), eventstore.SubscribeOptions{BatchSize: 7})
	require.NoError(t, err)
	defer sub.Close()
	got := collect(t, sub, 30)
	// Poll hands over what is ready, from one partition, in order.
	for len(got) < 60 {
		batch, err := sub.Poll(ctxFor(t), 5)
		require.NoError(t, err)
		require.NotEmpty(t, batch)
		require.LessOrEqual(t, len(got)+len(batch), 60)
		require.LessOrEqual(t, len(batch), 5)
		for _, e := range batch {
			require.Equal(t, batch[0].Partition, e.Partition)
		}
		require.Equal(t, batch[len(batch)-1].Offset+1, sub.Checkpoint()[batch[0].Partition])
		got = append(got, batch...)
	}
	// Live: appended while the subscription waits, from every node.
	live := appendN(t, c, "live", 60)
	got = append(got, collect(t, sub, 60)...)
	checkOrder(t, got)
	want := map[string]bool{}
	for _, r := range append(hist, live...) {
		want[fmt.Sprintf("%d/%d", r.Partition, r.FirstOffset)] = true
	}
	for _, e := range got {
		require.True(t, want[fmt.Sprintf("%d/%d", e.Partition, e.Offset)], "delivered an event that was not appended")
		delete(want, fmt.Sprintf("%d/%d", e.Partition, e.Offset))
	}
	require.Empty(t, want, "every appended event delivered")
	// Nothing more arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = sub.Next(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func testSubscribeFromNowAndResume(t *testing.T, c Cluster) {
	hist := appendN(t, c, "old", 20)
	s := node(c, 0)
	syncAll(t, c, hist[len(hist)-1].Position)
	sub, err := s.Subscribe(ctxFor(t), eventstore.SubscribeOptions{FromNow: true})
	require.NoError(t, err)
	newer := appendN(t, c, "new", 30)
	got := collect(t, sub, 10)
	for _, e := range got {
		require.Equal(t, "Tick", e.Type)
		require.Regexp(t, "^new-", e.Stream, "only events after Subscribe")
	}
	cp := sub.Checkpoint()
	require.NoError(t, sub.Close())
	_, err = sub.Next(context.Background())
	require.ErrorIs(t, err, eventstore.ErrClosed)

	// Resuming from the checkpoint delivers exactly the rest.
	resumed, err := s.Subscribe(ctxFor(t), eventstore.SubscribeOptions{From: cp})
	require.NoError(t, err)
	defer resumed.Close()
	rest := collect(t, resumed, 20)
	all := append(got, rest...)
	checkOrder(t, all)
	want := map[uint64]bool{}
	for _, r := range newer {
		want[uint64(r.Partition)<<32|r.FirstOffset] = true
	}
	for _, e := range all {
		require.True(t, want[uint64(e.Partition)<<32|e.Offset])
	}
	require.Len(t, all, len(newer))
}

func testSubscribeFilters(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	var last eventstore.AppendResult
	for i := 0; i < 40; i++ {
		stream := fmt.Sprintf("order-%d", i%5)
		if i%2 == 1 {
			stream = fmt.Sprintf("invoice-%d", i%5)
		}
		typ := []string{"Placed", "Paid", "Shipped", "Cancelled"}[i%4]
		var err error
		last, err = node(c, i).Append(ctx, stream, eventstore.Any, []eventstore.EventData{ev(typ, fmt.Sprint(i))})
		require.NoError(t, err)
	}
	syncAll(t, c, last.Position)
	s := node(c, 2)
	sub, err := s.Subscribe(ctx, eventstore.SubscribeOptions{Categories: []string{"order"}, EventTypes: []string{"Placed"}})
	require.NoError(t, err)
	got := collect(t, sub, 10)
	for _, e := range got {
		require.Equal(t, "order", eventstore.Category(e.Stream))
		require.Equal(t, "Placed", e.Type)
	}
	// Nothing else matches, but the checkpoint moves past what was skipped.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	_, err = sub.Next(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	cp := sub.Checkpoint()
	sub.Close()
	for p := range eventstore.Partition(s.Partitions()) {
		head, err := s.Head(p)
		require.NoError(t, err)
		require.Equal(t, head, cp[p], "checkpoint of partition %d is past the filtered events", p)
	}
	// Poll reports a partition read only to be skipped as an empty batch,
	// with the checkpoint moved past it.
	none, err := s.Subscribe(ctx, eventstore.SubscribeOptions{EventTypes: []string{"Nope"}, Partitions: []eventstore.Partition{last.Partition}})
	require.NoError(t, err)
	empty, err := none.Poll(ctx, 10)
	require.NoError(t, err)
	require.Empty(t, empty)
	require.Equal(t, last.Partition, none.PollPartition())
	head, err := s.Head(last.Partition)
	require.NoError(t, err)
	require.Equal(t, head, none.Checkpoint()[last.Partition])
	none.Close()

	// System streams ('$...') are skipped unless asked for.
	sys, err := s.Append(ctx, "$snapshot-order-1", eventstore.Any, []eventstore.EventData{ev("Snapshot", "{}")})
	require.NoError(t, err)
	all, err := s.Subscribe(ctx, eventstore.SubscribeOptions{Partitions: []eventstore.Partition{sys.Partition}, FromNow: false})
	require.NoError(t, err)
	for _, e := range collectUntilIdle(t, all) {
		require.False(t, eventstore.IsSystemStream(e.Stream))
	}
	all.Close()
	withSys, err := s.Subscribe(ctx, eventstore.SubscribeOptions{Partitions: []eventstore.Partition{sys.Partition}, IncludeSystemStreams: true, From: eventstore.Checkpoint{sys.Partition: sys.FirstOffset}})
	require.NoError(t, err)
	require.Equal(t, "$snapshot-order-1", collect(t, withSys, 1)[0].Stream)
	withSys.Close()

	typesOnly, err := s.Subscribe(ctx, eventstore.SubscribeOptions{EventTypes: []string{"Paid", "Shipped"}})
	require.NoError(t, err)
	defer typesOnly.Close()
	for _, e := range collect(t, typesOnly, 20) {
		require.Contains(t, []string{"Paid", "Shipped"}, e.Type)
	}
	require.Equal(t, "order", eventstore.Category("order-1-2"))
	require.Equal(t, "order", eventstore.Category("order"))

	// Exact streams, and a category whose name holds a '-': a stream is
	// in a category if it is named after it up to one of its '-'.
	for _, stream := range []string{"order-line-1", "order-liner-1", "order-line"} {
		last, err = s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{ev("Added", "{}")})
		require.NoError(t, err)
	}
	picked, err := s.Subscribe(ctx, eventstore.SubscribeOptions{Streams: []string{"invoice-3"}, Categories: []string{"order-line"}})
	require.NoError(t, err)
	defer picked.Close()
	streams := map[string]int{}
	for _, e := range collect(t, picked, 6) {
		streams[e.Stream]++
	}
	require.Equal(t, map[string]int{"invoice-3": 4, "order-line-1": 1, "order-line": 1}, streams)
	require.True(t, eventstore.InCategory("order-line-1", "order"))
	require.False(t, eventstore.InCategory("order-liner-1", "order-line"))
}

// testSubscribeAcrossLeaderChange stops the leader while a writer appends
// through another node and a subscriber on a third node listens: every
// acknowledged event is delivered, once, in partition order. Where the
// stores are thin clients (Cluster.ConnectedTo), the subscriber's or the
// writer's client is connected to the leader when it stops, and fails over.
func testSubscribeAcrossLeaderChange(t *testing.T, c Cluster) {
	if c.Leader == nil || c.Size < 3 || c.Stop == nil {
		t.Skip("needs a cluster of 3 or more")
	}
	lead := c.Leader(t)
	subNode, writeNode := (lead+1)%c.Size, (lead+2)%c.Size
	// The subscription outlives the appends, each of which may take up
	// to perEvent across the failover.
	subCtx, cancelSub := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancelSub()
	sub, err := c.Node(subNode).Subscribe(subCtx, eventstore.SubscribeOptions{})
	require.NoError(t, err)
	defer sub.Close()

	// A retry of an append whose outcome was unknown is deduplicated, so
	// the writer retries with the same ID until acknowledged; a failover
	// takes seconds, so a minute without an outcome is a failure, not a
	// reason to wait on.
	const total, stopAt, perEvent = 150, 50, 60 * time.Second
	acked := map[uuid.UUID]bool{}
	stopped := false
	var cutOff []int // nodes whose client was connected to the stopped leader
	w := c.Node(writeNode)
	for i := 0; i < total; i++ {
		if i == stopAt {
			if c.ConnectedTo != nil {
				for _, n := range []int{subNode, writeNode} {
					if c.ConnectedTo(n) == lead {
						cutOff = append(cutOff, n)
					}
				}
				require.NotEmpty(t, cutOff, "neither the subscriber's client (Node(%d), connected to node %d) nor the writer's (Node(%d), connected to node %d) is connected to the leader, node %d: the cluster must connect one of them to it",
					subNode, c.ConnectedTo(subNode), writeNode, c.ConnectedTo(writeNode), lead)
			}
			c.Stop(t, lead)
			stopped = true
		}
		id := uuid.New()
		e := []eventstore.EventData{{ID: id, Type: "Tick", Data: []byte(fmt.Sprint(i))}}
		stream := fmt.Sprintf("tick-%d", i%11)
		deadline := time.Now().Add(perEvent)
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := w.Append(ctx, stream, eventstore.Any, e)
			cancel()
			if err == nil {
				break
			}
			require.True(t, errors.Is(err, eventstore.ErrUnknownOutcome) || errors.Is(err, eventstore.ErrUnavailable), "append %d: %v", i, err)
			if time.Now().After(deadline) {
				via := ""
				if c.ConnectedTo != nil {
					via = fmt.Sprintf(", its client now on node %d", c.ConnectedTo(writeNode))
				}
				require.FailNow(t, "append not acknowledged", "append %d to %s through Node(%d)%s (leader, node %d, stopped: %v): no outcome within %v, %d attempts; last error: %v",
					i, stream, writeNode, via, lead, stopped, perEvent, attempt, err)
			}
		}
		acked[id] = true
	}
	require.True(t, stopped)
	got := collect(t, sub, total)
	checkOrder(t, got)
	for _, e := range got {
		require.True(t, acked[e.ID], "delivered an event never acknowledged")
	}
	for _, n := range cutOff {
		role := "subscriber"
		if n == writeNode {
			role = "writer"
		}
		now := c.ConnectedTo(n)
		require.NotEqual(t, lead, now, "the %s's client (Node(%d)) is still connected to the stopped leader", role, n)
		t.Logf("the %s's client (Node(%d)) failed over from the stopped leader, node %d, to node %d", role, n, lead, now)
	}
	c.Restart(t, lead)
	require.GreaterOrEqual(t, c.Leader(t), 0)
}
