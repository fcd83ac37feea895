package esraftotel_test

import (
	"context"
	"database/sql"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/outbox"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/systemtest/wait"

	esraftotel "github.com/esraft/esraft/contrib/otel"
)

type Order struct{ Customer string }
type OrderPlaced struct{ Customer string }

// TestOneTraceFromCommandToWebhook follows one request: a command on an
// aggregate appends an event, a local projection handles it into its read
// model and enqueues an outbox message, the relay posts it to a webhook.
// The in-memory exporter must hold exactly four spans, all of one trace:
// the request's span as root, then append, projection and publish, each
// once and the child of the one before; the webhook must receive a
// traceparent of that trace. The request span is the test's own: the
// orders example's HTTP handler cannot be driven from here (README.md).
func TestOneTraceFromCommandToWebhook(t *testing.T) {
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer tp.Shutdown(ctx)
	opt := esraftotel.WithTracerProvider(tp)

	var mu sync.Mutex
	var traceparents []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		traceparents = append(traceparents, r.Header.Get("traceparent"))
		mu.Unlock()
	}))
	defer hook.Close()

	store := eventstoretest.Single(t).Node(0)
	orders := aggregate.NewType[Order]("order")
	aggregate.On(orders, "OrderPlaced", func(o *Order, e OrderPlaced) { o.Customer = e.Customer })
	repo := aggregate.NewRepository(esraftotel.Wrap(store, opt), orders)

	db, err := sqlite.Open(ctx, t.TempDir(), `CREATE TABLE orders (id TEXT PRIMARY KEY)`)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, outbox.Migrate(ctx, db.WriteDB()))
	handle := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES (?)`, ev.Stream); err != nil {
			return err
		}
		_, err := esraftotel.Enqueue(ctx, tx, "notify", ev.ID, []outbox.Message{{Key: ev.Stream, Type: "OrderNotice", Payload: ev.Data}}, opt)
		return err
	}
	proj := projection.NewLocal(store, db, "orders", esraftotel.Handler("orders", handle, opt), projection.Options{})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- proj.Run(runCtx) }()
	defer func() { stop(); require.NoError(t, <-done) }()

	// The request: its span is the trace's root.
	reqCtx, req := tp.Tracer("test").Start(ctx, "POST /orders")
	_, err = repo.Create(reqCtx, "o-1", func(Order) ([]any, error) { return []any{OrderPlaced{Customer: "ann"}}, nil })
	require.NoError(t, err)
	req.End()

	wait.Until(t, 10*time.Second, "the projection handled the event", func() bool {
		var n int
		err := db.View(ctx, func(db *sql.DB) error { return db.QueryRowContext(ctx, `SELECT count(*) FROM orders`).Scan(&n) })
		return err == nil && n == 1
	})
	webhook, err := outbox.NewWebhook(hook.URL)
	require.NoError(t, err)
	relay, err := outbox.NewRelay(db.WriteDB(), outbox.Config{Publisher: esraftotel.Publisher(webhook, opt)})
	require.NoError(t, err)
	defer relay.Close()
	round, err := relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, round.Published)

	// The tracer provider is the test's own, so the exporter holds every
	// span of the flow and nothing else: exactly the chain, each span
	// once, all in the root's trace.
	chain := []string{"POST /orders", "esraft.append", "esraft.project orders", "esraft.outbox.publish"}
	all := exp.GetSpans()
	require.ElementsMatch(t, chain, names(all), "the exporter's spans")
	spans := map[string]tracetest.SpanStub{}
	for _, s := range all {
		spans[s.Name] = s
	}
	root := spans["POST /orders"]
	require.False(t, root.Parent.IsValid(), "the request's span is the root")
	for _, s := range all {
		require.Equal(t, root.SpanContext.TraceID(), s.SpanContext.TraceID(), "%s is in another trace", s.Name)
	}
	for i := 1; i < len(chain); i++ {
		require.Equal(t, spans[chain[i-1]].SpanContext.SpanID(), spans[chain[i]].Parent.SpanID(), "%s's parent", chain[i])
	}
	require.Equal(t, trace.SpanKindConsumer, spans["esraft.project orders"].SpanKind)

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, traceparents, 1)
	publish := spans["esraft.outbox.publish"].SpanContext
	require.True(t, strings.HasPrefix(traceparents[0], "00-"+publish.TraceID().String()+"-"+publish.SpanID().String()),
		"the webhook got traceparent %q, not the publish span's", traceparents[0])
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
