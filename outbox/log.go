package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/esraft/esraft/eventstore"
)

// Appender is the part of *eventstore.Store that LogPublisher uses.
type Appender interface {
	Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData, opts ...eventstore.AppendOption) (eventstore.AppendResult, error)
}

var _ Appender = (*eventstore.Store)(nil)

// LogPublisher appends each message as an event to the stream named by its
// Key, with the message's ID as the event ID, its Type, Payload and
// Headers, and its Source as the causation ID. The log drops an event ID
// it already holds (within its ID retention, 24 hours by default), so a
// message published twice, or by a relay on every node, is appended once.
type LogPublisher struct {
	store Appender
}

var _ Publisher = (*LogPublisher)(nil)

// NewLogPublisher returns a publisher appending to store.
func NewLogPublisher(store Appender) *LogPublisher { return &LogPublisher{store: store} }

// Publish appends m. Errors that retrying cannot fix (an invalid event, an
// ID already used in another stream, a deleted stream) are Permanent;
// the others (no leader, unknown outcome, closed store) are retried.
func (p *LogPublisher) Publish(ctx context.Context, m Message) error {
	_, err := p.store.Append(ctx, m.Key, eventstore.Any, []eventstore.EventData{{
		ID:   m.ID,
		Type: m.Type,
		Data: m.Payload,
		Metadata: eventstore.Metadata{
			CausationID: m.Source.String(),
			Headers:     m.Headers,
		},
	}})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, eventstore.ErrUnavailable), errors.Is(err, eventstore.ErrUnknownOutcome),
		errors.Is(err, eventstore.ErrClosed), ctx.Err() != nil:
		return fmt.Errorf("outbox: append %s to %q: %w", m.ID, m.Key, err)
	}
	return Permanent(fmt.Errorf("outbox: append %s to %q: %w", m.ID, m.Key, err))
}
