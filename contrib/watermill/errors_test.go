package esraftwatermill_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/raftlog"

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

	grouped := esraftwatermill.NewSubscriber(store, esraftwatermill.SubscriberConfig{ConsumerGroup: strings.Repeat("g", raftlog.MaxKeyBytes)})
	_, err = grouped.Subscribe(context.Background(), "orders")
	require.ErrorIs(t, err, esraftwatermill.ErrGroupNameTooLong)

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

// TestSubscriptionEndsWhenStoreCloses: a subscription whose store closes
// under it ends and closes its channel, with or without a consumer group;
// it does not retry for ever.
func TestSubscriptionEndsWhenStoreCloses(t *testing.T) {
	for _, group := range []string{"", "billing"} {
		t.Run("group="+group, func(t *testing.T) {
			store := eventstoretest.Single(t).Node(0)
			sub := esraftwatermill.NewSubscriber(store, esraftwatermill.SubscriberConfig{ConsumerGroup: group, SessionTimeout: 3 * time.Second})
			defer sub.Close()
			msgs, err := sub.Subscribe(context.Background(), "orders")
			require.NoError(t, err)
			require.NoError(t, store.Close())
			select {
			case _, open := <-msgs:
				require.False(t, open, "a message from a closed store")
			case <-time.After(15 * time.Second):
				t.Fatal("the subscription did not end after its store closed")
			}
		})
	}
}
