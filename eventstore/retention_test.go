package eventstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
	"github.com/esraft/esraft/systemtest/wait"
)

func versions(t *testing.T, s *eventstore.Store, stream string) []uint64 {
	t.Helper()
	evs, err := s.ReadStream(context.Background(), stream, 1, 100)
	require.NoError(t, err)
	var out []uint64
	for _, e := range evs {
		out = append(out, e.Version)
	}
	return out
}

func TestStreamAndCategoryRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := eventstore.Open(ctx, t.TempDir(), eventstore.LogConfig(func(c *raftlog.Config) {
		c.RetentionTick = 50 * time.Millisecond
	}))
	require.NoError(t, err)
	defer s.Close()

	require.NoError(t, s.SetCategoryRetention(ctx, "order", eventstore.StreamRetention{MaxCount: 2}))
	require.NoError(t, s.SetStreamRetention(ctx, "order-7", eventstore.StreamRetention{TruncateBefore: 4}))
	require.NoError(t, s.SetCategoryRetention(ctx, "cart", eventstore.StreamRetention{MaxAge: 300 * time.Millisecond}))
	for _, stream := range []string{"order-1", "order-7", "cart-1", "orders"} {
		for i := range 5 {
			_, err := s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{{Type: "e", Data: []byte(fmt.Sprint(i))}})
			require.NoError(t, err)
		}
	}
	require.Equal(t, []uint64{4, 5}, versions(t, s, "order-1"), "the category keeps the newest 2")
	require.Equal(t, []uint64{4, 5}, versions(t, s, "order-7"), "the stream's own setting overrides its category's")
	require.Equal(t, []uint64{1, 2, 3, 4, 5}, versions(t, s, "orders"), "not in category order")
	back, err := s.ReadStreamBackward(ctx, "order-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, back, 2)
	info, err := s.Stream(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, uint64(5), info.Version, "the stream keeps its version")

	r, ok, err := s.StreamRetentionOf("order-9")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, eventstore.StreamRetention{MaxCount: 2}, r)

	// The cart category's events expire once the log's time has moved
	// 300 ms past them; nothing is written meanwhile: the leader's ticks
	// advance it.
	wait.Until(t, 10*time.Second, "cart-1 to expire", func() bool { return len(versions(t, s, "cart-1")) == 0 })
	evs, _, err := s.ReadPartition(ctx, s.PartitionOf("cart-1"), 0, 1000)
	require.NoError(t, err)
	for _, e := range evs {
		require.NotEqual(t, "cart-1", e.Stream, "a partition read returned an expired event")
	}

	require.ErrorIs(t, s.SetStreamRetention(ctx, "x", eventstore.StreamRetention{MaxAge: -time.Second}), eventstore.ErrInvalidRetention)
	require.ErrorIs(t, s.SetStreamRetention(ctx, "", eventstore.StreamRetention{MaxCount: 1}), eventstore.ErrEmptyStream)
	require.ErrorIs(t, s.SetPartitionRetention(ctx, 99, eventstore.PartitionRetention{MaxAge: time.Second}), eventstore.ErrUnknownPartition)
}
