package aggregate

import (
	"context"

	"github.com/esraft/esraft/eventstore"
)

type metaKey struct{}

type meta struct {
	correlation, causation string
}

func metaOf(ctx context.Context) meta {
	m, _ := ctx.Value(metaKey{}).(meta)
	return m
}

// WithCorrelationID returns a context whose commands stamp their events
// with correlation ID id (the conversation or request they belong to).
func WithCorrelationID(ctx context.Context, id string) context.Context {
	m := metaOf(ctx)
	m.correlation = id
	return context.WithValue(ctx, metaKey{}, m)
}

// WithCausationID returns a context whose commands stamp their events with
// causation ID id (the message, usually the command, that caused them).
func WithCausationID(ctx context.Context, id string) context.Context {
	m := metaOf(ctx)
	m.causation = id
	return context.WithValue(ctx, metaKey{}, m)
}

// CausedBy returns a context for commands issued in reaction to ev (in a
// projection or process manager): their events are caused by ev and keep
// its correlation ID (ev's own ID if it had none).
func CausedBy(ctx context.Context, ev eventstore.Event) context.Context {
	m := meta{correlation: ev.Metadata.CorrelationID, causation: ev.ID.String()}
	if m.correlation == "" {
		m.correlation = m.causation
	}
	return context.WithValue(ctx, metaKey{}, m)
}

// CorrelationID returns the correlation ID set on ctx, or "".
func CorrelationID(ctx context.Context) string { return metaOf(ctx).correlation }

// CausationID returns the causation ID set on ctx, or "".
func CausationID(ctx context.Context) string { return metaOf(ctx).causation }
