package esraftwatermill_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message/subscriber"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/outbox"
	"github.com/esraft/esraft/projection/sqlite"

	esraftwatermill "github.com/esraft/esraft/contrib/watermill"
)

// TestOutboxThroughWatermill relays an outbox through a watermill
// Publisher (this package's, onto the log) and reads the messages back
// with a watermill Subscriber: the message UUIDs are the outbox's stable
// IDs, in enqueue order, with the outbox's metadata.
func TestOutboxThroughWatermill(t *testing.T) {
	ctx := context.Background()
	store := eventstoretest.Single(t).Node(0)
	db, err := sqlite.Open(ctx, t.TempDir())
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, outbox.Migrate(ctx, db.WriteDB()))

	source := uuid.New()
	var ids []uuid.UUID
	require.NoError(t, db.Update(ctx, func(tx *sql.Tx) error {
		ids, err = outbox.Enqueue(ctx, tx, "billing", source,
			outbox.Message{Key: "invoice-1", Type: "InvoiceRequested", Payload: []byte(`{"n":1}`), Headers: map[string]string{"tenant": "acme"}},
			outbox.Message{Key: "invoice-1", Type: "InvoiceRequested", Payload: []byte(`{"n":2}`)})
		return err
	}))
	require.Equal(t, []uuid.UUID{outbox.MessageID(source, "billing", 0), outbox.MessageID(source, "billing", 1)}, ids)

	pub := esraftwatermill.NewPublisher(store, esraftwatermill.PublisherConfig{})
	relay, err := outbox.NewRelay(db.WriteDB(), outbox.Config{Publisher: esraftwatermill.NewOutboxPublisher(pub, nil)})
	require.NoError(t, err)
	defer relay.Close()
	round, err := relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, round.Published)

	sub := esraftwatermill.NewSubscriber(store, esraftwatermill.SubscriberConfig{})
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, "InvoiceRequested")
	require.NoError(t, err)
	got, all := subscriber.BulkRead(msgs, 2, 10*time.Second)
	require.True(t, all)
	require.Equal(t, []string{ids[0].String(), ids[1].String()}, got.IDs())
	require.Equal(t, `{"n":1}`, string(got[0].Payload))
	require.Equal(t, "acme", got[0].Metadata.Get("tenant"))
	require.Equal(t, "invoice-1", got[0].Metadata.Get(esraftwatermill.OutboxKeyKey))
	require.Equal(t, source.String(), got[1].Metadata.Get(esraftwatermill.OutboxSourceKey))
	require.Equal(t, "billing", got[1].Metadata.Get(esraftwatermill.OutboxHandlerKey))
}
