package kafka

import (
	"bytes"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestProducerIDs(t *testing.T) {
	ids := newProducerIDs(7, 1, "orders", 3)
	id := ids.id(41)
	require.Equal(t, uuid.Version(8), id.Version())
	require.Equal(t, uuid.RFC4122, id.Variant())
	require.Equal(t, id, newProducerIDs(7, 1, "orders", 3).id(41), "a retry gets the same ID")

	// Each field of the name changes the ID.
	others := []uuid.UUID{
		ids.id(42),
		newProducerIDs(8, 1, "orders", 3).id(41),
		newProducerIDs(7, 2, "orders", 3).id(41),
		newProducerIDs(7, 1, "order", 3).id(41),
		newProducerIDs(7, 1, "orders", 4).id(41),
		newProducerIDs(-1, -1, "orders", 3).id(41),
	}
	seen := map[uuid.UUID]bool{id: true}
	for i, o := range others {
		require.False(t, seen[o], "ID %d repeats another", i)
		seen[o] = true
	}

	// A producer's partition is one run of keys in sequence order: what
	// keeps the log's ID index lookups and inserts on a few pages.
	prev := ids.id(0)
	for _, seq := range []int32{1, 2, 255, 256, 1 << 16, 1<<31 - 1} {
		next := ids.id(seq)
		require.Equal(t, prev[:12], next[:12])
		require.Negative(t, bytes.Compare(prev[:], next[:]), "sequence %d sorts after the one before", seq)
		prev = next
	}
}
