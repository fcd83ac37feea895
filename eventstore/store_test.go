package eventstore_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	s, err := eventstore.Open(ctx, t.TempDir())
	require.NoError(t, err)
	defer s.Close()
	res, err := s.Append(ctx, "order-1", eventstore.NoStream, []eventstore.EventData{{Type: "Placed", Data: []byte(`{}`)}})
	require.NoError(t, err)
	require.Equal(t, uint64(1), res.LastVersion)
	evs, err := s.ReadStream(ctx, "order-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, "Placed", evs[0].Type)
}
