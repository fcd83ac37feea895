package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/outbox"
)

// receiver is an HTTP endpoint that is down at first, then answers
// some requests with errors, hangs on others past the client's timeout,
// sometimes keeps a message but answers 500, and deduplicates by
// Idempotency-Key like a well-behaved receiver.
type receiver struct {
	mu       sync.Mutex
	requests int
	first    []delivery // first arrival of each ID, in arrival order
	arrivals int
	seen     map[uuid.UUID]bool
	want     int
	all      chan struct{} // closed when want distinct IDs arrived
	counts   map[string]int
	bad      []string // protocol violations
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.requests++
	n := rc.requests
	mode := "ok"
	switch {
	case n <= 15:
		mode = "down"
	case n%4 == 0:
		mode = "hang"
	case n%5 == 0:
		mode = "keep-then-500"
	case n%7 == 0:
		mode = "500"
	}
	rc.counts[mode]++
	rc.mu.Unlock()

	switch mode {
	case "down":
		http.Error(w, "maintenance", http.StatusServiceUnavailable)
		return
	case "hang": // until the client gives up
		<-r.Context().Done()
		return
	case "500":
		http.Error(w, "boom", http.StatusInternalServerError)
		return
	}
	id, perr := uuid.Parse(r.Header.Get("Idempotency-Key"))
	rc.mu.Lock()
	switch {
	case err != nil, perr != nil, r.Method != http.MethodPost:
		rc.bad = append(rc.bad, fmt.Sprintf("%s %q: %v %v", r.Method, r.Header.Get("Idempotency-Key"), err, perr))
	default:
		rc.arrivals++
		if !rc.seen[id] {
			rc.seen[id] = true
			rc.first = append(rc.first, delivery{ID: id, Key: r.Header.Get("X-Message-Key"), Type: r.Header.Get("X-Message-Type"), Payload: string(body)})
			if len(rc.first) == rc.want {
				close(rc.all)
			}
		}
	}
	rc.mu.Unlock()
	if mode == "keep-then-500" {
		http.Error(w, "kept it, but failed to answer", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// TestWebhookFailsTimesOutRecovers is Done-when item 2 of issue #6: a real
// HTTP receiver that is down, fails, hangs past the timeout and recovers;
// every message arrives, first arrivals in order per key.
func TestWebhookFailsTimesOutRecovers(t *testing.T) {
	ctx := context.Background()
	const txs, perTx = 25, 4
	rc := &receiver{seen: map[uuid.UUID]bool{}, want: txs * perTx, all: make(chan struct{}), counts: map[string]int{}}
	srv := httptest.NewServer(rc)
	defer srv.Close()

	db := openApp(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	hook, err := outbox.NewWebhook(srv.URL+"/hook", outbox.WithTimeout(100*time.Millisecond))
	require.NoError(t, err)
	relay, err := outbox.NewRelay(db.Write, outbox.Config{
		Publisher: hook, MaxAttempts: 1000, InitialBackoff: 2 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		Jitter: 0.5, PollInterval: 10 * time.Millisecond, BatchSize: 16, Concurrency: 4,
	})
	require.NoError(t, err)
	require.NoError(t, relay.Start(ctx))
	defer relay.Close()

	var want []uuid.UUID
	keyOf := map[uuid.UUID]string{}
	for i := 0; i < txs; i++ {
		update(t, db, func(tx *sql.Tx) error {
			var msgs []outbox.Message
			for j := 0; j < perTx; j++ {
				msgs = append(msgs, outbox.Message{Key: fmt.Sprintf("customer-%d", (i*perTx+j)%5), Type: "Invoiced",
					Payload: []byte(fmt.Sprintf(`{"n":%d}`, i*perTx+j))})
			}
			ids, err := outbox.Enqueue(ctx, tx, "invoicing", uuid.New(), msgs...)
			for j, id := range ids {
				keyOf[id] = msgs[j].Key
			}
			want = append(want, ids...)
			return err
		})
		relay.Notify()
	}
	select {
	case <-rc.all:
	case <-time.After(60 * time.Second):
		rc.mu.Lock()
		defer rc.mu.Unlock()
		t.Fatalf("only %d of %d messages arrived (%v)", len(rc.first), rc.want, rc.counts)
	}
	require.Eventually(t, func() bool {
		n, err := outbox.Pending(ctx, db.Read)
		return err == nil && n == 0
	}, 30*time.Second, 5*time.Millisecond, "the relay records what arrived")
	require.NoError(t, relay.Close())

	rc.mu.Lock()
	defer rc.mu.Unlock()
	t.Logf("%d requests %v; %d arrivals of %d messages", rc.requests, rc.counts, rc.arrivals, len(rc.first))
	require.Empty(t, rc.bad)
	require.Len(t, rc.first, len(want))
	checkOrder(t, want, keyOf, rc.first)
	require.Positive(t, rc.counts["down"])
	require.Positive(t, rc.counts["hang"], "no request timed out")
	require.Positive(t, rc.counts["500"])
	require.Greater(t, rc.arrivals, len(rc.first), "a kept-then-failed message arrives again, with its ID")
	parked, err := outbox.ListParked(ctx, db.Read, 10)
	require.NoError(t, err)
	require.Empty(t, parked)
}

// TestWebhookRequest checks what one request carries and that non-2xx is
// an error with the status.
func TestWebhookRequest(t *testing.T) {
	var got *http.Request
	var body []byte
	status := http.StatusAccepted
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		body, _ = io.ReadAll(r.Body)
		w.WriteHeader(status)
		fmt.Fprint(w, "nope")
	}))
	defer srv.Close()
	hook, err := outbox.NewWebhook(srv.URL)
	require.NoError(t, err)
	m := outbox.Message{ID: uuid.New(), Key: "k", Type: "T", Payload: []byte(`{"a":1}`), Headers: map[string]string{"X-Tenant": "t1"}, Attempt: 2}
	require.NoError(t, hook.Publish(context.Background(), m))
	require.Equal(t, http.MethodPost, got.Method)
	require.Equal(t, m.ID.String(), got.Header.Get("Idempotency-Key"))
	require.Equal(t, "T", got.Header.Get("X-Message-Type"))
	require.Equal(t, "k", got.Header.Get("X-Message-Key"))
	require.Equal(t, "2", got.Header.Get("X-Message-Attempt"))
	require.Equal(t, "t1", got.Header.Get("X-Tenant"))
	require.Equal(t, "application/json", got.Header.Get("Content-Type"))
	require.Equal(t, `{"a":1}`, string(body))

	status = http.StatusConflict
	err = hook.Publish(context.Background(), m)
	var se *outbox.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusConflict, se.StatusCode)
	require.Equal(t, "nope", se.Body)
}

// TestLogPublisherOnEveryNode runs the same handler output through two
// relays, as two nodes each with their own database would: the log holds
// each message once, with the message ID as the event ID.
func TestLogPublisherOnEveryNode(t *testing.T) {
	ctx := context.Background()
	store, err := eventstore.Open(ctx, t.TempDir())
	require.NoError(t, err)
	defer store.Close()
	pub := outbox.NewLogPublisher(store)

	source := uuid.New()
	msgs := []outbox.Message{
		{Key: "invoice-1", Type: "InvoiceRequested", Payload: []byte(`{"n":1}`), Headers: map[string]string{"tenant": "t1"}},
		{Key: "invoice-1", Type: "InvoiceSent", Payload: []byte(`{"n":2}`)},
		{Key: "invoice-2", Type: "Bad", Headers: map[string]string{"$reserved": "x"}},
	}
	var relays []*outbox.Relay
	for node := 0; node < 2; node++ {
		db := openApp(t, filepath.Join(t.TempDir(), fmt.Sprintf("node%d.db", node)))
		defer db.Close()
		update(t, db, func(tx *sql.Tx) error { _, err := outbox.Enqueue(ctx, tx, "billing", source, msgs...); return err })
		relay, err := outbox.NewRelay(db.Write, outbox.Config{Publisher: pub})
		require.NoError(t, err)
		relays = append(relays, relay)
		round, err := relay.DeliverDue(ctx)
		require.NoError(t, err)
		require.Equal(t, 2, round.Published, "node %d", node)
		require.Equal(t, 1, round.Parked, "an invalid event is parked at once (permanent error)")
		parked, err := outbox.ListParked(ctx, db.Read, 10)
		require.NoError(t, err)
		require.Len(t, parked, 1)
		require.Equal(t, 1, parked[0].Attempts)
		require.Contains(t, parked[0].LastError, "reserved")
	}
	events, err := store.ReadStream(ctx, "invoice-1", 1, 10)
	require.NoError(t, err)
	require.Len(t, events, 2, "two relays, each message once")
	for i, e := range events {
		require.Equal(t, outbox.MessageID(source, "billing", i), e.ID)
		require.Equal(t, msgs[i].Type, e.Type)
		require.Equal(t, string(msgs[i].Payload), string(e.Data))
		require.Equal(t, source.String(), e.Metadata.CausationID)
	}
	require.Equal(t, "t1", events[0].Metadata.Headers["tenant"])
	info, err := store.Stream(ctx, "invoice-2")
	require.NoError(t, err)
	require.False(t, info.Exists())
}
