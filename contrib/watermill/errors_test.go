package esraftwatermill_test

import (
	"context"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"

	esraftwatermill "github.com/esraft/esraft/contrib/watermill"
)

// TestBadInput: bad topics, reserved metadata keys and use after Close
// get typed errors, and nothing is appended.
func TestBadInput(t *testing.T) {
	store := eventstoretest.Single(t).Node(0)
	pub := esraftwatermill.NewPublisher(store, esraftwatermill.PublisherConfig{})
	sub := esraftwatermill.NewSubscriber(store, esraftwatermill.SubscriberConfig{})

	require.ErrorIs(t, pub.Publish("", message.NewMessage("a", nil)), esraftwatermill.ErrEmptyTopic)
	_, err := sub.Subscribe(context.Background(), "")
	require.ErrorIs(t, err, esraftwatermill.ErrEmptyTopic)

	bad := message.NewMessage("b", []byte("x"))
	bad.Metadata.Set("$t", "forged") // the store's own header names start with '$'
	require.ErrorIs(t, pub.Publish("orders", bad), eventstore.ErrReservedHeader)
	head, err := store.Head(store.PartitionOf("orders"))
	require.NoError(t, err)
	require.Zero(t, head, "nothing appended")

	require.NoError(t, pub.Close())
	require.ErrorIs(t, pub.Publish("orders", message.NewMessage("c", nil)), esraftwatermill.ErrClosed)
	require.NoError(t, sub.Close())
	require.NoError(t, sub.Close(), "Close is idempotent")
	_, err = sub.Subscribe(context.Background(), "orders")
	require.ErrorIs(t, err, esraftwatermill.ErrClosed)
}
