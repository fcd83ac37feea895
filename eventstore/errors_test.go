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
		_, err := s.Head(s.Partitions())
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
