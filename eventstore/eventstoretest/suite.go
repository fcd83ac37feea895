// Package eventstoretest is the conformance suite of package eventstore:
// every behaviour the store promises, run against a single node and a
// cluster alike. Other implementations of the same promises (or the store
// under other settings) run it with their own Cluster.
package eventstoretest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
)

// Run runs the conformance suite. open is called once per test and must
// return a fresh, empty store with the default limits.
func Run(t *testing.T, open func(t *testing.T) Cluster) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c Cluster)
	}{
		{"AppendAndReadStream", testAppendAndRead},
		{"ExpectedVersion", testExpectedVersion},
		{"IdempotentRetry", testIdempotentRetry},
		{"ConcurrentWritersOneStream", testConcurrentWriters},
		{"ReadBackward", testReadBackward},
		{"ReadPartition", testReadPartition},
		{"SeekByTime", testSeekByTime},
		{"SubscribeCatchUpThenLive", testSubscribeCatchUpThenLive},
		{"SubscribeFromNowAndResume", testSubscribeFromNowAndResume},
		{"SubscribeFilters", testSubscribeFilters},
		{"SubscribeAcrossLeaderChange", testSubscribeAcrossLeaderChange},
		{"SoftDelete", testSoftDelete},
		{"Truncate", testTruncate},
		{"BadInput", testBadInput},
		{"SurvivesRestart", testSurvivesRestart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// node returns node i modulo the cluster size, so tests spread calls over
// every node.
func node(c Cluster, i int) *eventstore.Store { return c.Node(i % c.Size) }

// syncAll waits until every node has applied pos.
func syncAll(t testing.TB, c Cluster, pos eventstore.Position) {
	t.Helper()
	for i := 0; i < c.Size; i++ {
		if s := c.Node(i); s != nil {
			require.NoError(t, s.Sync(ctxFor(t), pos))
		}
	}
}

func ev(typ, data string) eventstore.EventData {
	return eventstore.EventData{Type: typ, Data: []byte(data)}
}

func testAppendAndRead(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	id := uuid.New()
	in := []eventstore.EventData{
		{ID: id, Type: "Opened", Data: []byte(`{"owner":"ann"}`), Metadata: eventstore.Metadata{
			CorrelationID: "corr-1", CausationID: "cmd-1", Headers: map[string]string{"tenant": "t1", "user": "ann"},
		}},
		ev("Deposited", `{"amount":10}`),
		ev("Deposited", `{"amount":5}`),
	}
	before := time.Now().Add(-time.Minute)
	res, err := node(c, 0).Append(ctx, "account-1", eventstore.NoStream, in)
	require.NoError(t, err)
	require.Equal(t, uint64(1), res.FirstVersion, "first event of a stream has version 1")
	require.Equal(t, uint64(3), res.LastVersion)
	require.Equal(t, node(c, 0).PartitionOf("account-1"), res.Partition)
	require.False(t, res.Duplicate)
	more, err := node(c, 1).Append(ctx, "account-1", eventstore.Exact(3), []eventstore.EventData{ev("Withdrawn", `{"amount":3}`)})
	require.NoError(t, err)
	require.Equal(t, uint64(4), more.FirstVersion)
	require.Greater(t, more.FirstOffset, res.FirstOffset)
	syncAll(t, c, more.Position)

	for i := 0; i < c.Size; i++ {
		s := c.Node(i)
		got, err := s.ReadStream(ctx, "account-1", 0, 100)
		require.NoError(t, err)
		require.Len(t, got, 4)
		for j, e := range got {
			require.Equal(t, uint64(j+1), e.Version)
			require.Equal(t, "account-1", e.Stream)
			require.Equal(t, res.Partition, e.Partition)
			require.NotEqual(t, uuid.Nil, e.ID)
			require.True(t, e.Time.After(before), "time stamped by the leader")
			if j > 0 {
				require.Greater(t, e.Offset, got[j-1].Offset, "offsets grow within a stream")
				require.False(t, e.Time.Before(got[j-1].Time), "time never goes back")
			}
		}
		require.Equal(t, id, got[0].ID)
		require.Equal(t, "Opened", got[0].Type)
		require.Equal(t, `{"owner":"ann"}`, string(got[0].Data))
		require.Equal(t, eventstore.Metadata{CorrelationID: "corr-1", CausationID: "cmd-1",
			Headers: map[string]string{"tenant": "t1", "user": "ann"}}, got[0].Metadata)
		require.Equal(t, res.FirstOffset, got[0].Offset)
		require.Equal(t, "Withdrawn", got[3].Type)

		from2, err := s.ReadStream(ctx, "account-1", 2, 2)
		require.NoError(t, err)
		require.Len(t, from2, 2, "limit holds")
		require.Equal(t, uint64(2), from2[0].Version)
		info, err := s.Stream(ctx, "account-1")
		require.NoError(t, err)
		require.Equal(t, eventstore.StreamInfo{Stream: "account-1", Partition: res.Partition, Version: 4, First: 1}, info)
		require.True(t, info.Exists())
	}
	none, err := node(c, 0).ReadStream(ctx, "account-404", 0, 10)
	require.NoError(t, err)
	require.Empty(t, none, "a stream with no events reads as empty")
	info, err := node(c, 0).Stream(ctx, "account-404")
	require.NoError(t, err)
	require.False(t, info.Exists())
	require.Zero(t, info.Version)
}

func requireWrongVersion(t *testing.T, err error, stream string, actual uint64) *eventstore.WrongVersionError {
	t.Helper()
	var wv *eventstore.WrongVersionError
	require.ErrorAs(t, err, &wv)
	require.ErrorIs(t, err, eventstore.ErrWrongVersion)
	require.Equal(t, stream, wv.Stream)
	require.Equal(t, actual, wv.Actual)
	return wv
}

func testExpectedVersion(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	s := node(c, 0)
	one := func() []eventstore.EventData { return []eventstore.EventData{ev("E", "x")} }

	_, err := s.Append(ctx, "s-1", eventstore.StreamExists, one())
	wv := requireWrongVersion(t, err, "s-1", 0)
	require.Equal(t, eventstore.StreamExists, wv.Expected)
	_, err = s.Append(ctx, "s-1", eventstore.Exact(1), one())
	requireWrongVersion(t, err, "s-1", 0)
	_, err = s.Append(ctx, "s-1", eventstore.Exact(0), one())
	require.NoError(t, err, "Exact(0) is a stream that never had events")
	_, err = s.Append(ctx, "s-1", eventstore.NoStream, one())
	requireWrongVersion(t, err, "s-1", 1)
	_, err = node(c, 1).Append(ctx, "s-1", eventstore.StreamExists, one())
	require.NoError(t, err)
	_, err = node(c, 2).Append(ctx, "s-1", eventstore.Any, one())
	require.NoError(t, err)
	_, err = s.Append(ctx, "s-1", eventstore.Exact(2), one())
	wv = requireWrongVersion(t, err, "s-1", 3)
	require.Equal(t, eventstore.Exact(2), wv.Expected)
	require.Contains(t, wv.Error(), `"s-1"`)
	res, err := s.Append(ctx, "s-1", eventstore.Exact(3), one())
	require.NoError(t, err)
	require.Equal(t, uint64(4), res.LastVersion)
	_, err = s.Append(ctx, "s-2", eventstore.NoStream, one())
	require.NoError(t, err)
}

func testIdempotentRetry(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	evs := []eventstore.EventData{
		{ID: uuid.New(), Type: "A", Data: []byte("1")},
		{ID: uuid.New(), Type: "B", Data: []byte("2")},
	}
	first, err := node(c, 0).Append(ctx, "order-7", eventstore.NoStream, evs)
	require.NoError(t, err)
	// Barrier makes every node see it without knowing its position.
	for i := 0; i < c.Size; i++ {
		require.NoError(t, node(c, i).Barrier(ctx))
		info, err := node(c, i).Stream(ctx, "order-7")
		require.NoError(t, err)
		require.Equal(t, first.LastVersion, info.Version, "node %d after Barrier", i)
	}
	// The retry of an append that was acknowledged (or whose outcome was
	// unknown) returns the original result, from any node, even though its
	// expectation no longer holds.
	for i := 0; i < c.Size; i++ {
		again, err := node(c, i).Append(ctx, "order-7", eventstore.NoStream, evs)
		require.NoError(t, err)
		require.True(t, again.Duplicate)
		require.Equal(t, first.FirstVersion, again.FirstVersion)
		require.Equal(t, first.LastVersion, again.LastVersion)
		require.Equal(t, first.FirstOffset, again.FirstOffset)
	}
	// Only part of the batch was appended before: a conflict, nothing written.
	_, err = node(c, 1).Append(ctx, "order-7", eventstore.Any, []eventstore.EventData{evs[1], {ID: uuid.New(), Type: "C"}})
	require.ErrorIs(t, err, eventstore.ErrEventIDConflict)
	// The same IDs on another stream are a conflict, not a duplicate.
	_, err = node(c, 2).Append(ctx, "order-8", eventstore.Any, evs)
	require.ErrorIs(t, err, eventstore.ErrEventIDConflict)
	got, err := node(c, 0).ReadStream(ctx, "order-7", 0, 10)
	require.NoError(t, err)
	require.Len(t, got, 2, "retries appended nothing")
}

// testConcurrentWriters races writers on every node on one stream with
// exact expectations: each version is won exactly once, losers get the
// typed error with the actual version, and the stream stays dense.
func testConcurrentWriters(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	const writers, wins = 8, 15
	var mu sync.Mutex
	won := map[uuid.UUID]uint64{}
	lost := map[uuid.UUID]bool{}
	conflicts := 0
	var lastPos eventstore.Position
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := node(c, w)
			var version uint64
			for n := 0; n < wins; {
				id := uuid.New()
				res, err := s.Append(ctx, "race-1", eventstore.Exact(version), []eventstore.EventData{{ID: id, Type: "Tick", Data: []byte(fmt.Sprint(w))}})
				var wv *eventstore.WrongVersionError
				switch {
				case err == nil:
					mu.Lock()
					won[id] = res.FirstVersion
					if res.Position.Index > lastPos.Index {
						lastPos = res.Position
					}
					mu.Unlock()
					if res.FirstVersion != version+1 {
						t.Errorf("won version %d expecting %d", res.FirstVersion, version)
					}
					version = res.LastVersion
					n++
				case errors.As(err, &wv):
					if wv.Actual == version {
						t.Errorf("conflict reports the expected version %d as actual", version)
						return
					}
					mu.Lock()
					lost[id] = true
					conflicts++
					mu.Unlock()
					version = wv.Actual
				default:
					t.Errorf("append: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.False(t, t.Failed())
	syncAll(t, c, lastPos)
	got, err := node(c, 0).ReadStream(ctx, "race-1", 0, 10000)
	require.NoError(t, err)
	require.Equal(t, writers*wins, len(got))
	for i, e := range got {
		require.Equal(t, uint64(i+1), e.Version)
		v, ok := won[e.ID]
		require.True(t, ok, "event %s in the stream was acknowledged", e.ID)
		require.Equal(t, v, e.Version)
		require.False(t, lost[e.ID], "a loser's event was written")
	}
	t.Logf("%d appends won, %d lost with a version conflict", len(won), conflicts)
	require.Positive(t, conflicts, "the writers raced")
}

func testReadBackward(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	s := node(c, 0)
	var evs []eventstore.EventData
	for i := 1; i <= 10; i++ {
		evs = append(evs, ev("N", fmt.Sprint(i)))
	}
	_, err := s.Append(ctx, "nums-1", eventstore.NoStream, evs)
	require.NoError(t, err)
	got, err := s.ReadStreamBackward(ctx, "nums-1", 0, 3)
	require.NoError(t, err)
	require.Equal(t, []uint64{10, 9, 8}, versions(got))
	got, err = s.ReadStreamBackward(ctx, "nums-1", 4, 100)
	require.NoError(t, err)
	require.Equal(t, []uint64{4, 3, 2, 1}, versions(got))
	require.Equal(t, "4", string(got[0].Data))
}

func versions(evs []eventstore.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Version
	}
	return out
}

// streamsIn returns n stream names of category cat that route to partition p.
func streamsIn(s *eventstore.Store, cat string, p eventstore.Partition, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		name := fmt.Sprintf("%s-%d", cat, i)
		if s.PartitionOf(name) == p {
			out = append(out, name)
		}
	}
	return out
}

func testReadPartition(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	s := node(c, 0)
	names := streamsIn(s, "cart", 2, 3)
	var last eventstore.AppendResult
	for round := 0; round < 3; round++ {
		for i, name := range names {
			var err error
			last, err = node(c, i).Append(ctx, name, eventstore.Any, []eventstore.EventData{ev("Added", fmt.Sprint(round))})
			require.NoError(t, err)
		}
	}
	syncAll(t, c, last.Position)
	for i := 0; i < c.Size; i++ {
		got, next, err := c.Node(i).ReadPartition(ctx, 2, 0, 100)
		require.NoError(t, err)
		require.Len(t, got, 9)
		for j, e := range got {
			require.Equal(t, uint64(j), e.Offset, "offsets dense from 0")
			require.Equal(t, names[j%3], e.Stream, "partition order is append order")
			require.Equal(t, uint64(j/3+1), e.Version)
		}
		require.Equal(t, uint64(9), next)
		page, next, err := c.Node(i).ReadPartition(ctx, 2, 4, 2)
		require.NoError(t, err)
		require.Equal(t, []uint64{4, 5}, []uint64{page[0].Offset, page[1].Offset})
		require.Equal(t, uint64(6), next)
		empty, next, err := c.Node(i).ReadPartition(ctx, 2, 9, 10)
		require.NoError(t, err)
		require.Empty(t, empty)
		require.Equal(t, uint64(9), next)
	}
	_, _, err := s.ReadPartition(ctx, eventstore.Partition(s.Partitions()), 0, 1)
	require.ErrorIs(t, err, eventstore.ErrUnknownPartition)
}

func testSoftDelete(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	s := node(c, 0)
	res, err := s.Append(ctx, "user-1", eventstore.NoStream, []eventstore.EventData{ev("Registered", "a"), ev("Renamed", "b")})
	require.NoError(t, err)
	_, err = node(c, 1).DeleteStream(ctx, "user-1", eventstore.Exact(1))
	requireWrongVersion(t, err, "user-1", 2)
	pos, err := node(c, 1).DeleteStream(ctx, "user-1", eventstore.Exact(2))
	require.NoError(t, err)
	syncAll(t, c, pos)
	for i := 0; i < c.Size; i++ {
		n := c.Node(i)
		_, err = n.ReadStream(ctx, "user-1", 0, 10)
		require.ErrorIs(t, err, eventstore.ErrStreamDeleted)
		_, err = n.ReadStreamBackward(ctx, "user-1", 0, 10)
		require.ErrorIs(t, err, eventstore.ErrStreamDeleted)
		info, err := n.Stream(ctx, "user-1")
		require.NoError(t, err)
		require.Equal(t, eventstore.StreamInfo{Stream: "user-1", Partition: res.Partition, Version: 2, First: 3, Deleted: true}, info)
		part, _, err := n.ReadPartition(ctx, res.Partition, res.FirstOffset, 10)
		require.NoError(t, err)
		for _, e := range part {
			require.NotEqual(t, "user-1", e.Stream, "deleted events leave partition reads")
		}
	}
	_, err = node(c, 2).DeleteStream(ctx, "user-1", eventstore.Any)
	require.NoError(t, err, "deleting a deleted stream succeeds")
	_, err = s.Append(ctx, "user-1", eventstore.Any, []eventstore.EventData{ev("Registered", "c")})
	require.ErrorIs(t, err, eventstore.ErrStreamDeleted)
	_, err = s.Append(ctx, "user-1", eventstore.StreamExists, []eventstore.EventData{ev("Registered", "c")}, eventstore.Recreate())
	wv := requireWrongVersion(t, err, "user-1", 2)
	require.True(t, wv.Deleted)

	// Recreated on request: versions go on, old events stay gone.
	again, err := node(c, 2).Append(ctx, "user-1", eventstore.NoStream, []eventstore.EventData{ev("Registered", "c")}, eventstore.Recreate())
	require.NoError(t, err)
	require.Equal(t, uint64(3), again.FirstVersion)
	syncAll(t, c, again.Position)
	got, err := s.ReadStream(ctx, "user-1", 0, 10)
	require.NoError(t, err)
	require.Equal(t, []uint64{3}, versions(got))
	require.Equal(t, "c", string(got[0].Data))

	// A subscription from the beginning never sees the deleted events.
	sub, err := s.Subscribe(ctx, eventstore.SubscribeOptions{Partitions: []eventstore.Partition{res.Partition}})
	require.NoError(t, err)
	defer sub.Close()
	e := collect(t, sub, 1)[0]
	require.Equal(t, again.FirstOffset, e.Offset)
}

func testTruncate(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	s := node(c, 0)
	var evs []eventstore.EventData
	for i := 1; i <= 5; i++ {
		evs = append(evs, ev("N", fmt.Sprint(i)))
	}
	res, err := s.Append(ctx, "log-1", eventstore.NoStream, evs)
	require.NoError(t, err)
	_, err = node(c, 1).TruncateStream(ctx, "log-1", 3, eventstore.Exact(4))
	requireWrongVersion(t, err, "log-1", 5)
	pos, err := node(c, 1).TruncateStream(ctx, "log-1", 3, eventstore.Any)
	require.NoError(t, err)
	syncAll(t, c, pos)
	for i := 0; i < c.Size; i++ {
		n := c.Node(i)
		got, err := n.ReadStream(ctx, "log-1", 0, 10)
		require.NoError(t, err)
		require.Equal(t, []uint64{3, 4, 5}, versions(got))
		got, err = n.ReadStreamBackward(ctx, "log-1", 0, 10)
		require.NoError(t, err)
		require.Equal(t, []uint64{5, 4, 3}, versions(got))
		part, _, err := n.ReadPartition(ctx, res.Partition, res.FirstOffset, 10)
		require.NoError(t, err)
		require.Equal(t, res.FirstOffset+2, part[0].Offset, "offsets of truncated events are skipped")
		info, err := n.Stream(ctx, "log-1")
		require.NoError(t, err)
		require.Equal(t, uint64(5), info.Version)
		require.Equal(t, uint64(3), info.First)
		require.True(t, info.Exists())
	}
	// Truncation never moves back; appends go on at the old version.
	_, err = s.TruncateStream(ctx, "log-1", 1, eventstore.Any)
	require.NoError(t, err)
	more, err := s.Append(ctx, "log-1", eventstore.Exact(5), []eventstore.EventData{ev("N", "6")})
	require.NoError(t, err)
	require.Equal(t, uint64(6), more.FirstVersion)
	got, err := s.ReadStream(ctx, "log-1", 0, 10)
	require.NoError(t, err)
	require.Equal(t, []uint64{3, 4, 5, 6}, versions(got))
	// Truncating past the end removes everything there is.
	_, err = s.TruncateStream(ctx, "log-1", 100, eventstore.Any)
	require.NoError(t, err)
	got, err = s.ReadStream(ctx, "log-1", 0, 10)
	require.NoError(t, err)
	require.Empty(t, got)
}

func testBadInput(t *testing.T, c Cluster) {
	ctx := ctxFor(t)
	s := node(c, 1)
	big := make([]byte, eventstore.DefaultMaxEventBytes+1)
	many := make([]eventstore.EventData, eventstore.DefaultMaxAppendEvents+1)
	for i := range many {
		many[i] = ev("E", "")
	}
	dupID := uuid.New()
	long := string(make([]byte, 4097))
	// An event counts as stored: data, type and metadata, plus two bytes
	// for the name of each of the store's fields present ("$t" for the
	// type, "$c" for the correlation ID). Type "E" alone: data + 3.
	const maxData = eventstore.DefaultMaxEventBytes - 3
	corr := eventstore.Metadata{CorrelationID: "abc"} // 5 more bytes
	cases := []struct {
		name   string
		stream string
		evs    []eventstore.EventData
		want   error
	}{
		{"empty stream", "", []eventstore.EventData{ev("E", "")}, eventstore.ErrEmptyStream},
		{"stream name too long", long, []eventstore.EventData{ev("E", "")}, eventstore.ErrStreamNameTooLong},
		{"no events", "bad-1", nil, eventstore.ErrNoEvents},
		{"empty type", "bad-1", []eventstore.EventData{ev("", "x")}, eventstore.ErrEmptyEventType},
		{"event too large", "bad-1", []eventstore.EventData{{Type: "E", Data: big}}, eventstore.ErrEventTooLarge},
		{"one byte too large", "bad-1", []eventstore.EventData{{Type: "E", Data: big[:maxData+1]}}, eventstore.ErrEventTooLarge},
		{"metadata counts", "bad-1", []eventstore.EventData{{Type: "E", Data: big[:maxData-5+1], Metadata: corr}}, eventstore.ErrEventTooLarge},
		{"too many events", "bad-1", many, eventstore.ErrTooManyEvents},
		{"reserved header", "bad-1", []eventstore.EventData{{Type: "E", Metadata: eventstore.Metadata{Headers: map[string]string{"$t": "x"}}}}, eventstore.ErrReservedHeader},
		{"empty header name", "bad-1", []eventstore.EventData{{Type: "E", Metadata: eventstore.Metadata{Headers: map[string]string{"": "x"}}}}, eventstore.ErrReservedHeader},
		{"duplicate id", "bad-1", []eventstore.EventData{{ID: dupID, Type: "E"}, {ID: dupID, Type: "E"}}, eventstore.ErrDuplicateEventID},
	}
	for _, tc := range cases {
		_, err := s.Append(ctx, tc.stream, eventstore.Any, tc.evs)
		require.ErrorIs(t, err, tc.want, tc.name)
	}
	_, err := s.DeleteStream(ctx, "", eventstore.Any)
	require.ErrorIs(t, err, eventstore.ErrEmptyStream)
	_, err = s.TruncateStream(ctx, "", 1, eventstore.Any)
	require.ErrorIs(t, err, eventstore.ErrEmptyStream)
	_, err = s.ReadStream(ctx, "", 0, 1)
	require.ErrorIs(t, err, eventstore.ErrEmptyStream)
	_, err = s.Subscribe(ctx, eventstore.SubscribeOptions{Partitions: []eventstore.Partition{-1}})
	require.ErrorIs(t, err, eventstore.ErrUnknownPartition)
	for p := range eventstore.Partition(s.Partitions()) {
		head, err := s.Head(p)
		require.NoError(t, err)
		require.Zero(t, head, "rejected input appended nothing")
	}
	// The largest events allowed go through.
	_, err = s.Append(ctx, "bad-1", eventstore.Any, []eventstore.EventData{{Type: "E", Data: big[:maxData]}})
	require.NoError(t, err)
	_, err = s.Append(ctx, "bad-1", eventstore.Any, []eventstore.EventData{{Type: "E", Data: big[:maxData-5], Metadata: corr}})
	require.NoError(t, err)
}

// testSurvivesRestart stops every node and starts them again: every
// acknowledged event, deletion and truncation is still there, and appends
// go on at the right versions.
func testSurvivesRestart(t *testing.T, c Cluster) {
	if c.Stop == nil {
		t.Skip("the cluster cannot be restarted")
	}
	ctx := ctxFor(t)
	acked := appendN(t, c, "keep", 40)
	_, err := node(c, 0).TruncateStream(ctx, "keep-1", 3, eventstore.Any)
	require.NoError(t, err)
	last, err := node(c, 1).DeleteStream(ctx, "keep-2", eventstore.Any)
	require.NoError(t, err)
	for i := 0; i < c.Size; i++ {
		c.Stop(t, i)
	}
	for i := 0; i < c.Size; i++ {
		c.Restart(t, i)
	}
	if c.Leader != nil {
		c.Leader(t)
	}
	// A node that had not applied the last writes when it stopped applies
	// them once it learns the commit index again.
	syncAll(t, c, last)
	s := node(c, 0)
	for _, r := range acked {
		if r.Stream == "keep-1" || r.Stream == "keep-2" {
			continue
		}
		got, err := s.ReadStream(ctx, r.Stream, r.FirstVersion, 1)
		require.NoError(t, err)
		require.Len(t, got, 1, "%s@%d survives", r.Stream, r.FirstVersion)
		require.Equal(t, r.FirstOffset, got[0].Offset)
	}
	got, err := s.ReadStream(ctx, "keep-1", 0, 100)
	require.NoError(t, err)
	require.Equal(t, uint64(3), got[0].Version, "truncation survives")
	_, err = s.ReadStream(ctx, "keep-2", 0, 100)
	require.ErrorIs(t, err, eventstore.ErrStreamDeleted, "deletion survives")
	info, err := s.Stream(ctx, "keep-0")
	require.NoError(t, err)
	res, err := node(c, 1).Append(ctx, "keep-0", eventstore.Exact(info.Version), []eventstore.EventData{ev("Tick", "after")})
	require.NoError(t, err)
	require.Equal(t, info.Version+1, res.FirstVersion)
}
