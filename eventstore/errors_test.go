package eventstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
)

func openSingle(t *testing.T, opts ...eventstore.Option) *eventstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := eventstore.Open(ctx, t.TempDir(), opts...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// Errors the store translates from the log wrap both: errors.Is and
// errors.As reach the store's error and the log's.
func TestErrorsReachTheLog(t *testing.T) {
	ctx := context.Background()
	s := openSingle(t)
	a, b := uuid.New(), uuid.New()
	_, err := s.Append(ctx, "acct-1", eventstore.Any, []eventstore.EventData{{ID: a, Type: "E"}})
	require.NoError(t, err)

	t.Run("id conflict", func(t *testing.T) {
		_, err := s.Append(ctx, "acct-2", eventstore.Any, []eventstore.EventData{{ID: a, Type: "E"}, {ID: b, Type: "E"}})
		require.ErrorIs(t, err, eventstore.ErrEventIDConflict)
		require.ErrorIs(t, err, raftlog.ErrIDConflict)
	})
	t.Run("wrong version", func(t *testing.T) {
		_, err := s.Append(ctx, "acct-1", eventstore.Exact(7), []eventstore.EventData{{Type: "E"}})
		require.ErrorIs(t, err, eventstore.ErrWrongVersion)
		var wv *eventstore.WrongVersionError
		require.ErrorAs(t, err, &wv)
		require.Equal(t, uint64(1), wv.Actual)
		var kse *raftlog.KeySeqError
		require.ErrorAs(t, err, &kse, "WrongVersionError unwraps to the log's KeySeqError")
		require.Equal(t, "acct-1", kse.Key)
		require.Equal(t, uint64(7), kse.Expected)
		require.Equal(t, s.PartitionOf("acct-1"), kse.Partition)
	})
	t.Run("stream deleted", func(t *testing.T) {
		_, err := s.DeleteStream(ctx, "acct-1", eventstore.Any)
		require.NoError(t, err)
		_, err = s.Append(ctx, "acct-1", eventstore.Any, []eventstore.EventData{{Type: "E"}})
		require.ErrorIs(t, err, eventstore.ErrStreamDeleted)
		require.ErrorIs(t, err, raftlog.ErrKeyDeleted)
	})
	t.Run("unknown partition", func(t *testing.T) {
		_, err := s.Head(eventstore.Partition(s.Partitions()))
		require.ErrorIs(t, err, eventstore.ErrUnknownPartition)
		require.ErrorIs(t, err, raftlog.ErrUnknownPartition)
	})
	t.Run("closed", func(t *testing.T) {
		require.NoError(t, s.Close())
		_, err := s.Append(ctx, "acct-3", eventstore.Any, []eventstore.EventData{{Type: "E"}})
		require.ErrorIs(t, err, eventstore.ErrClosed)
		require.ErrorIs(t, err, raftlog.ErrClosed)
		_, err = s.Head(0)
		require.ErrorIs(t, err, eventstore.ErrClosed)
		require.ErrorIs(t, err, raftlog.ErrClosed)
	})
}

func data(n int) []byte { return make([]byte, n) }

// The limit options configure the log, which enforces them: one number
// each. An event counts as the log stores it: data + 3 for type "E"
// ("$t" + "E"), 3 more for causation ID "c" ("$k" + "c").
func TestLimitsAreTheLogs(t *testing.T) {
	ctx := context.Background()
	s := openSingle(t, eventstore.MaxEventBytes(100), eventstore.MaxAppendEvents(3),
		eventstore.LogConfig(func(c *raftlog.Config) { c.MaxBatchBytes = 250 }))
	appendTo := func(stream string, evs ...eventstore.EventData) error {
		_, err := s.Append(ctx, stream, eventstore.Any, evs)
		return err
	}
	e := func(n int) eventstore.EventData { return eventstore.EventData{Type: "E", Data: data(n)} }

	t.Run("event too large", func(t *testing.T) {
		err := appendTo("big-1", e(1), e(98))
		require.ErrorIs(t, err, eventstore.ErrEventTooLarge)
		require.ErrorIs(t, err, raftlog.ErrRecordTooLarge)
		require.ErrorContains(t, err, "record 1 is 101 bytes, limit 100")
		err = appendTo("big-1", eventstore.EventData{Type: "E", Data: data(95), Metadata: eventstore.Metadata{CausationID: "c"}})
		require.ErrorIs(t, err, eventstore.ErrEventTooLarge, "metadata and its header name count")
		require.NoError(t, appendTo("big-1", e(97)), "exactly the limit")
		require.NoError(t, appendTo("big-1", eventstore.EventData{Type: "E", Data: data(94), Metadata: eventstore.Metadata{CausationID: "c"}}))
	})
	t.Run("duplicate event id", func(t *testing.T) {
		id := uuid.New()
		err := appendTo("dup-1", eventstore.EventData{ID: id, Type: "E"}, eventstore.EventData{ID: id, Type: "E"})
		require.ErrorIs(t, err, eventstore.ErrDuplicateEventID)
		require.ErrorIs(t, err, raftlog.ErrDuplicateID)
		require.ErrorContains(t, err, id.String())
	})
	t.Run("too many events", func(t *testing.T) {
		err := appendTo("many-1", e(0), e(0), e(0), e(0))
		require.ErrorIs(t, err, eventstore.ErrTooManyEvents)
		require.ErrorIs(t, err, raftlog.ErrBatchTooLarge)
		require.NotErrorIs(t, err, eventstore.ErrAppendTooLarge)
		require.ErrorContains(t, err, "4 records, limit 3")
		require.NoError(t, appendTo("many-1", e(0), e(0), e(0)))
	})
	t.Run("append too large", func(t *testing.T) {
		err := appendTo("heavy-1", e(97), e(97), e(48))
		require.ErrorIs(t, err, eventstore.ErrAppendTooLarge)
		require.ErrorIs(t, err, raftlog.ErrBatchTooLarge)
		require.NotErrorIs(t, err, eventstore.ErrTooManyEvents)
		require.ErrorContains(t, err, "251 bytes, limit 250")
		require.NoError(t, appendTo("heavy-1", e(97), e(97), e(47)))
	})
	t.Run("no events", func(t *testing.T) {
		err := appendTo("none-1")
		require.ErrorIs(t, err, eventstore.ErrNoEvents)
		require.ErrorIs(t, err, raftlog.ErrEmptyBatch)
	})
	t.Run("the store's own checks come first", func(t *testing.T) {
		err := appendTo("own-1", e(0), eventstore.EventData{Data: data(200)})
		require.ErrorIs(t, err, eventstore.ErrEmptyEventType)
		require.ErrorContains(t, err, "event 1")
	})
	t.Run("zero ids are assigned", func(t *testing.T) {
		require.NoError(t, appendTo("ids-1", e(0), e(0)))
		evs, err := s.ReadStream(ctx, "ids-1", 0, 10)
		require.NoError(t, err)
		require.Len(t, evs, 2)
		require.NotEqual(t, uuid.Nil, evs[0].ID)
		require.NotEqual(t, evs[0].ID, evs[1].ID)
	})
	for _, stream := range []string{"big-1", "dup-1", "many-1", "heavy-1", "none-1", "own-1"} {
		info, err := s.Stream(ctx, stream)
		require.NoError(t, err)
		want := map[string]uint64{"big-1": 2, "many-1": 3, "heavy-1": 3}[stream]
		require.Equal(t, want, info.Version, "%s: only the accepted appends were written", stream)
	}
}

// LogConfig runs last: the log's own setting wins over the option.
func TestLogConfigOverridesLimitOptions(t *testing.T) {
	s := openSingle(t, eventstore.MaxEventBytes(100), eventstore.MaxAppendEvents(1),
		eventstore.LogConfig(func(c *raftlog.Config) { c.MaxRecordBytes, c.MaxBatchRecords = 200, 2 }))
	_, err := s.Append(context.Background(), "s-1", eventstore.Any, []eventstore.EventData{
		{Type: "E", Data: data(197)}, {Type: "E"},
	})
	require.NoError(t, err)
	_, err = s.Append(context.Background(), "s-1", eventstore.Any, []eventstore.EventData{{Type: "E"}, {Type: "E"}, {Type: "E"}})
	require.ErrorIs(t, err, eventstore.ErrTooManyEvents)
}

// Over a log from New, the log's limits are the store's; the limit
// options do not apply, and a batch over the log's record limit is
// ErrAppendTooLarge (the store does not know that limit).
func TestNewTakesTheLogsLimits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := raftlog.Open(ctx, raftlog.Config{Dir: t.TempDir(), MaxRecordBytes: 100, MaxBatchRecords: 2})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	s := eventstore.New(l, eventstore.MaxEventBytes(1000), eventstore.MaxAppendEvents(10))

	_, err = s.Append(ctx, "n-1", eventstore.Any, []eventstore.EventData{{Type: "E", Data: data(98)}})
	require.ErrorIs(t, err, eventstore.ErrEventTooLarge)
	require.ErrorIs(t, err, raftlog.ErrRecordTooLarge)
	_, err = s.Append(ctx, "n-1", eventstore.Any, []eventstore.EventData{{Type: "E"}, {Type: "E"}, {Type: "E"}})
	require.ErrorIs(t, err, eventstore.ErrAppendTooLarge)
	require.ErrorIs(t, err, raftlog.ErrBatchTooLarge)
	_, err = s.Append(ctx, "n-1", eventstore.Any, []eventstore.EventData{{Type: "E", Data: data(97)}, {Type: "E"}})
	require.NoError(t, err)
}
