package eventstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
)

func TestListStreamsByPrefixAndCategory(t *testing.T) {
	ctx := context.Background()
	s, err := eventstore.Open(ctx, t.TempDir())
	require.NoError(t, err)
	defer s.Close()
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
