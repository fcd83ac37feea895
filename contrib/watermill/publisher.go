package esraftwatermill

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"

	"github.com/esraft/esraft/eventstore"
)

// Errors of this package.
var (
	// ErrClosed: Publish or Subscribe after Close.
	ErrClosed = errors.New("esraftwatermill: closed")
	// ErrEmptyTopic: a topic (an event type) must not be empty.
	ErrEmptyTopic = errors.New("esraftwatermill: empty topic")
	// ErrGroupNameTooLong: the log's group name, <ConsumerGroup>/<topic>,
	// is longer than the log accepts.
	ErrGroupNameTooLong = errors.New("esraftwatermill: consumer group name too long")
)

// Names this package gives to message metadata and event headers.
const (
	// UUIDHeader is the event header that keeps the message's UUID.
	UUIDHeader = "watermill_uuid"
	// CorrelationIDKey is the metadata key of watermill's correlation ID
	// middleware; it maps to the event's correlation ID.
	CorrelationIDKey = "correlation_id"
)

// uuidSpace derives event IDs from topics and message UUIDs.
var uuidSpace = uuid.MustParse("6f1b0b6e-7f0e-4c53-9d3a-2f6b9d0e5a41")

// PublisherConfig configures a Publisher. The zero value is usable.
type PublisherConfig struct {
	// Stream names the stream a message is appended to. Nil: the topic, so
	// a topic's messages share one stream and one total order. Return,
	// say, topic+"-"+msg.Metadata.Get("key") to spread a topic over the
	// log's partitions, in order per key.
	Stream func(topic string, msg *message.Message) string
	// Timeout bounds each append when the message's context has no
	// deadline (default 30 s).
	Timeout time.Duration
}

// Publisher appends messages to an event store. It is safe for concurrent
// use; Close does not close the store.
type Publisher struct {
	store  *eventstore.Store
	cfg    PublisherConfig
	closed atomic.Bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher appending to store.
func NewPublisher(store *eventstore.Store, cfg PublisherConfig) *Publisher {
	if cfg.Stream == nil {
		cfg.Stream = func(topic string, _ *message.Message) string { return topic }
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	return &Publisher{store: store, cfg: cfg}
}

// Publish appends msgs, in order, as events of type topic. Consecutive
// messages bound for the same stream are appended together, up to the
// store's limit per append; each append is acknowledged only once it is
// durable on a quorum. Publishing the same messages again (same UUIDs) after
// an error appends nothing twice.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	if p.closed.Load() {
		return ErrClosed
	}
	if topic == "" {
		return ErrEmptyTopic
	}
	for len(msgs) > 0 {
		stream := p.cfg.Stream(topic, msgs[0])
		n := 1
		for n < len(msgs) && n < eventstore.DefaultMaxAppendEvents && p.cfg.Stream(topic, msgs[n]) == stream {
			n++
		}
		if err := p.append(msgs[0].Context(), topic, stream, msgs[:n]); err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

func (p *Publisher) append(ctx context.Context, topic, stream string, msgs []*message.Message) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.Timeout)
		defer cancel()
	}
	evs := make([]eventstore.EventData, len(msgs))
	for i, m := range msgs {
		evs[i] = EventData(topic, m)
	}
	if _, err := p.store.Append(ctx, stream, eventstore.Any, evs); err != nil {
		return fmt.Errorf("esraftwatermill: publish %d message(s) to %q (stream %q): %w", len(msgs), topic, stream, err)
	}
	return nil
}

// Close makes later Publish calls fail; appends in progress finish.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}

// EventData is the event a message of topic is appended as.
func EventData(topic string, msg *message.Message) eventstore.EventData {
	ev := eventstore.EventData{
		Type: topic, Data: msg.Payload,
		// The same message may be published to several topics: one event
		// each, and the same one again on a retry.
		ID:       uuid.NewSHA1(uuidSpace, []byte(topic+"\x00"+msg.UUID)),
		Metadata: eventstore.Metadata{Headers: make(map[string]string, len(msg.Metadata)+1)},
	}
	ev.Metadata.Headers[UUIDHeader] = msg.UUID
	for k, v := range msg.Metadata {
		if k == CorrelationIDKey {
			ev.Metadata.CorrelationID = v
			continue
		}
		if k != UUIDHeader {
			ev.Metadata.Headers[k] = v
		}
	}
	return ev
}

// Message is the message an event is delivered as.
func Message(ev eventstore.Event) *message.Message {
	id := ev.Metadata.Headers[UUIDHeader]
	if id == "" {
		id = ev.ID.String()
	}
	msg := message.NewMessage(id, ev.Data)
	for k, v := range ev.Metadata.Headers {
		if k != UUIDHeader {
			msg.Metadata.Set(k, v)
		}
	}
	if ev.Metadata.CorrelationID != "" {
		msg.Metadata.Set(CorrelationIDKey, ev.Metadata.CorrelationID)
	}
	return msg
}
