// Package esraftotel traces an event with OpenTelemetry from the command
// that appended it, through the projection handlers that read it, to the
// outbox messages those handlers send, as one trace.
//
// The trace context travels in the data itself, as W3C Trace Context
// headers ("traceparent", "tracestate"): in the event's metadata headers on
// append, and in the outbox message's headers on enqueue. So the trace
// crosses nodes and restarts: a handler on another node, or replaying the
// event an hour later, continues the trace of the request that wrote it.
//
// Four wrappers, none of which the core needs to know about:
//
//   - Wrap(store): an event store whose Append starts a span and writes the
//     trace context into each event. Give it to aggregate.NewRepository and
//     outbox.NewLogPublisher, which take interfaces *Store implements.
//   - Handler(name, h): a projection handler that continues the event's
//     trace in a span of its own.
//   - Enqueue: outbox.Enqueue that writes the handler's trace context into
//     each message.
//   - Publisher(p): an outbox publisher that continues the message's trace
//     around each publish; the Webhook publisher sends the message headers,
//     so the receiver gets a traceparent of the same trace.
package esraftotel

import (
	"context"
	"database/sql"
	"maps"
	"strconv"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/outbox"
	"github.com/esraft/esraft/projection"
)

// ScopeName is the instrumentation scope of the spans this package makes.
const ScopeName = "github.com/esraft/esraft/contrib/otel"

// Option configures the wrappers.
type Option func(*config)

type config struct {
	tp   trace.TracerProvider
	prop propagation.TextMapPropagator
}

// WithTracerProvider sets the tracer provider (default: the global one,
// otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *config) { c.tp = tp } }

// WithPropagator sets how the trace context is written into headers and
// read back (default: W3C Trace Context and Baggage, whatever the global
// propagator is, so that events written by one service are read by
// another).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.prop = p }
}

func newConfig(opts []Option) config {
	c := config{}
	for _, o := range opts {
		o(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.prop == nil {
		c.prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	return c
}

func (c config) tracer() trace.Tracer { return c.tp.Tracer(ScopeName) }

// inject returns a copy of headers with ctx's trace context added.
func (c config) inject(ctx context.Context, headers map[string]string) map[string]string {
	out := make(map[string]string, len(headers)+2)
	maps.Copy(out, headers)
	c.prop.Inject(ctx, propagation.MapCarrier(out))
	return out
}

// extract returns ctx carrying the trace context found in headers.
func (c config) extract(ctx context.Context, headers map[string]string) context.Context {
	if len(headers) == 0 {
		return ctx
	}
	return c.prop.Extract(ctx, propagation.MapCarrier(headers))
}

func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Store is an event store whose appends are traced. Everything but Append
// is the wrapped store's.
type Store struct {
	*eventstore.Store
	cfg config
}

var (
	_ aggregate.Store    = (*Store)(nil)
	_ outbox.Appender    = (*Store)(nil)
	_ outbox.Publisher   = (*publisher)(nil)
	_ projection.Handler = Handler("", nil)
)

// Wrap returns store with traced appends.
func Wrap(store *eventstore.Store, opts ...Option) *Store {
	return &Store{Store: store, cfg: newConfig(opts)}
}

// Append appends events in a span "esraft.append" (a child of ctx's span,
// if any), writing the span's trace context into each event's headers.
// The events passed in are not modified.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	ctx, span := s.cfg.tracer().Start(ctx, "esraft.append", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("esraft.stream", stream), attribute.Int("esraft.events", len(events))))
	traced := make([]eventstore.EventData, len(events))
	for i, ev := range events {
		ev.Metadata.Headers = s.cfg.inject(ctx, ev.Metadata.Headers)
		traced[i] = ev
	}
	res, err := s.Store.Append(ctx, stream, expected, traced, opts...)
	if err == nil {
		span.SetAttributes(
			attribute.Int("esraft.partition", int(res.Partition)),
			attribute.String("esraft.first_offset", strconv.FormatUint(res.FirstOffset, 10)),
			attribute.String("esraft.last_version", strconv.FormatUint(res.LastVersion, 10)),
		)
	}
	end(span, err)
	return res, err
}

// Handler returns h traced: each event is handled in a span
// "esraft.project <name>" that continues the trace of the append that
// wrote it (a new trace for events written without one).
func Handler(name string, h projection.Handler, opts ...Option) projection.Handler {
	cfg := newConfig(opts)
	spanName := "esraft.project " + name
	return func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		ctx = cfg.extract(ctx, ev.Metadata.Headers)
		ctx, span := cfg.tracer().Start(ctx, spanName, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				attribute.String("esraft.projection", name),
				attribute.String("esraft.stream", ev.Stream),
				attribute.String("esraft.event_type", ev.Type),
				attribute.String("esraft.event_id", ev.ID.String()),
				attribute.Int("esraft.partition", int(ev.Partition)),
				attribute.String("esraft.offset", strconv.FormatUint(ev.Offset, 10)),
			))
		err := h(ctx, tx, ev)
		end(span, err)
		return err
	}
}

// Enqueue is outbox.Enqueue with ctx's trace context (the handler's span)
// written into each message's headers, so the relay continues the trace.
// The messages passed in are not modified.
func Enqueue(ctx context.Context, tx outbox.Tx, handler string, source uuid.UUID, msgs []outbox.Message, opts ...Option) ([]uuid.UUID, error) {
	cfg := newConfig(opts)
	traced := make([]outbox.Message, len(msgs))
	for i, m := range msgs {
		m.Headers = cfg.inject(ctx, m.Headers)
		traced[i] = m
	}
	return outbox.Enqueue(ctx, tx, handler, source, traced...)
}

// Publisher returns p traced: each publish runs in a span
// "esraft.outbox.publish" that continues the message's trace, and the
// message reaches p with that span's trace context in its headers.
func Publisher(p outbox.Publisher, opts ...Option) outbox.Publisher {
	return &publisher{next: p, cfg: newConfig(opts)}
}

type publisher struct {
	next outbox.Publisher
	cfg  config
}

func (p *publisher) Publish(ctx context.Context, m outbox.Message) error {
	ctx = p.cfg.extract(ctx, m.Headers)
	ctx, span := p.cfg.tracer().Start(ctx, "esraft.outbox.publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("esraft.message_id", m.ID.String()),
			attribute.String("esraft.message_type", m.Type),
			attribute.String("esraft.message_key", m.Key),
			attribute.String("esraft.handler", m.Handler),
			attribute.Int("esraft.attempt", m.Attempt),
		))
	m.Headers = p.cfg.inject(ctx, m.Headers)
	err := p.next.Publish(ctx, m)
	end(span, err)
	return err
}
