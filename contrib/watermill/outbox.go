package esraftwatermill

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/esraft/esraft/outbox"
)

// Metadata keys an OutboxPublisher sets on each message, beside the outbox
// message's own headers.
const (
	OutboxKeyKey     = "outbox_key"     // the outbox message's ordering key
	OutboxTypeKey    = "outbox_type"    // its type ("InvoiceRequested")
	OutboxSourceKey  = "outbox_source"  // the ID of the event whose handling produced it
	OutboxHandlerKey = "outbox_handler" // the handler that produced it
)

// OutboxPublisher relays an outbox through any watermill Publisher (Kafka,
// NATS, AMQP, SQL, this package's own, ...): give it to outbox.Config as
// the Publisher. The watermill message's UUID is the outbox message's
// stable ID, the same on every retry, so a consumer can drop duplicates.
type OutboxPublisher struct {
	pub   message.Publisher
	topic func(outbox.Message) string
}

var _ outbox.Publisher = (*OutboxPublisher)(nil)

// NewOutboxPublisher returns an outbox publisher sending through pub, to
// the topic topic returns for each message (nil: the message's Type).
func NewOutboxPublisher(pub message.Publisher, topic func(outbox.Message) string) *OutboxPublisher {
	if topic == nil {
		topic = func(m outbox.Message) string { return m.Type }
	}
	return &OutboxPublisher{pub: pub, topic: topic}
}

// Publish sends m as one watermill message. An error makes the relay retry
// it later (see outbox.Config).
func (p *OutboxPublisher) Publish(ctx context.Context, m outbox.Message) error {
	msg := message.NewMessageWithContext(ctx, m.ID.String(), m.Payload)
	for k, v := range m.Headers {
		msg.Metadata.Set(k, v)
	}
	msg.Metadata.Set(OutboxKeyKey, m.Key)
	msg.Metadata.Set(OutboxTypeKey, m.Type)
	msg.Metadata.Set(OutboxSourceKey, m.Source.String())
	msg.Metadata.Set(OutboxHandlerKey, m.Handler)
	topic := p.topic(m)
	if err := p.pub.Publish(topic, msg); err != nil {
		return fmt.Errorf("esraftwatermill: outbox message %s to %q: %w", m.ID, topic, err)
	}
	return nil
}
