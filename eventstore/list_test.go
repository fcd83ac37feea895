package eventstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/client"
	"github.com/esraft/esraft/eventstore"
)

// ListStreams pages by prefix and by category, on a node's own store and
// on a thin client of the node (the node lists for it).
func TestListStreamsByPrefixAndCategory(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		ctx := context.Background()
		s, err := eventstore.Open(ctx, t.TempDir())
		require.NoError(t, err)
		defer s.Close()
		testListStreams(t, s)
	})
	t.Run("thin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		node, err := eventstore.Open(ctx, t.TempDir(), eventstore.Node("n1", "127.0.0.1:0"))
		require.NoError(t, err)
		defer node.Close()
		thin, err := client.Open(ctx, client.Config{Addrs: []string{node.Log().Addr()}, ID: "lister"})
		require.NoError(t, err)
		defer thin.Close()
		testListStreams(t, thin)
	})
}

// testListStreams appends streams through s and lists them.
func testListStreams(t *testing.T, s *eventstore.Store) {
	ctx := context.Background()
	put := func(stream string) {
		_, err := s.Append(ctx, stream, eventstore.Any, []eventstore.EventData{{Type: "t", Data: []byte("{}")}})
		require.NoError(t, err)
	}
	for i := range 12 {
		put(fmt.Sprintf("order-%d", i))
	}
	put("order")
	put("orderly-1")
	put("$system-1")

	list := func(opt eventstore.ListStreamsOptions) []string {
		var names []string
		for {
			page, err := s.ListStreams(ctx, opt)
			require.NoError(t, err)
			for _, st := range page {
				names = append(names, st.Stream)
				require.Equal(t, uint64(1), st.Version)
			}
			if len(page) < opt.Limit {
				return names
			}
			opt.After = page[len(page)-1].Stream
		}
	}
	var orders []string
	for i := range 12 {
		orders = append(orders, fmt.Sprintf("order-%d", i))
	}
	require.Equal(t, orders, list(eventstore.ListStreamsOptions{Prefix: "order-", Limit: 5}))
	require.Equal(t, append([]string{"order"}, orders...), list(eventstore.ListStreamsOptions{Category: "order", Limit: 4}))
	require.Equal(t, append(append([]string{"order"}, orders...), "orderly-1"), list(eventstore.ListStreamsOptions{Limit: 3}))
	require.Equal(t, []string{"$system-1"}, list(eventstore.ListStreamsOptions{Prefix: "$", Limit: 3}))
}
