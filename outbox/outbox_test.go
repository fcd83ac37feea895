package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/outbox"
)

func TestMessageIDIsStable(t *testing.T) {
	src := uuid.MustParse("0190e5a8-7c3b-7000-8000-000000000001")
	a := outbox.MessageID(src, "billing", 0)
	require.Equal(t, a, outbox.MessageID(src, "billing", 0))
	require.Equal(t, uuid.Version(5), a.Version())
	require.NotEqual(t, a, outbox.MessageID(src, "billing", 1))
	require.NotEqual(t, a, outbox.MessageID(src, "mail", 0))
	require.NotEqual(t, a, outbox.MessageID(uuid.MustParse("0190e5a8-7c3b-7000-8000-000000000002"), "billing", 0))
	// Pinned: changing the derivation would give reprocessed events new IDs.
	require.Equal(t, "22a5d547-29ee-59dd-9c50-100c6265189c", a.String())
}

func TestEnqueueReprocessingCreatesNoNewMessage(t *testing.T) {
	ctx := context.Background()
	db := openApp(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	src := uuid.New()
	msgs := []outbox.Message{{Key: "k", Type: "A", Payload: []byte("1")}, {Key: "k", Type: "B", Payload: []byte("2")}}
	var ids []uuid.UUID
	update(t, db, func(tx *sql.Tx) error {
		var err error
		ids, err = outbox.Enqueue(ctx, tx, "h", src, msgs...)
		return err
	})
	require.Equal(t, []uuid.UUID{outbox.MessageID(src, "h", 0), outbox.MessageID(src, "h", 1)}, ids)
	// Handling the event again while the messages are pending: nothing new.
	update(t, db, func(tx *sql.Tx) error { _, err := outbox.Enqueue(ctx, tx, "h", src, msgs...); return err })
	n, err := outbox.Pending(ctx, db.Read)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	// After they were published: still nothing new.
	var s sink
	relay, err := outbox.NewRelay(db.Write, outbox.Config{Publisher: &s})
	require.NoError(t, err)
	round, err := relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, round.Published)
	update(t, db, func(tx *sql.Tx) error { _, err := outbox.Enqueue(ctx, tx, "h", src, msgs...); return err })
	n, err = outbox.Pending(ctx, db.Read)
	require.NoError(t, err)
	require.Equal(t, 0, n)
	require.Len(t, s.all(), 2)

	// The same IDs with other content is a mistake and says so.
	err = db.Update(ctx, func(tx *sql.Tx) error {
		if _, err := outbox.Enqueue(ctx, tx, "h2", src, outbox.Message{Key: "k", Type: "A"}); err != nil {
			return err
		}
		_, err := outbox.Enqueue(ctx, tx, "h2", src, outbox.Message{Key: "k", Type: "C"})
		return err
	})
	require.ErrorIs(t, err, outbox.ErrIDConflict)
}

func TestEnqueueBadInput(t *testing.T) {
	ctx := context.Background()
	db := openApp(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	src := uuid.New()
	ok := outbox.Message{Key: "k", Type: "T"}
	id := uuid.New()
	for _, c := range []struct {
		handler string
		source  uuid.UUID
		msgs    []outbox.Message
		want    error
	}{
		{"", src, []outbox.Message{ok}, outbox.ErrEmptyHandler},
		{"h", uuid.Nil, []outbox.Message{ok}, outbox.ErrNilSource},
		{"h", src, nil, outbox.ErrNoMessages},
		{"h", src, []outbox.Message{ok, {Type: "T"}}, outbox.ErrEmptyKey},
		{"h", src, []outbox.Message{{Key: "k"}}, outbox.ErrEmptyType},
		{"h", src, []outbox.Message{{ID: id, Key: "k", Type: "T"}, {ID: id, Key: "k", Type: "T"}}, outbox.ErrDuplicateID},
	} {
		err := db.Update(ctx, func(tx *sql.Tx) error { _, err := outbox.Enqueue(ctx, tx, c.handler, c.source, c.msgs...); return err })
		require.ErrorIs(t, err, c.want)
	}
	n, err := outbox.Pending(ctx, db.Read)
	require.NoError(t, err)
	require.Zero(t, n)

	for _, c := range []outbox.Config{
		{},
		{Publisher: &sink{}, MaxAttempts: -1},
		{Publisher: &sink{}, InitialBackoff: time.Minute, MaxBackoff: time.Second},
		{Publisher: &sink{}, Jitter: 1.5},
		{Publisher: &sink{}, PollInterval: -time.Second},
	} {
		_, err := outbox.NewRelay(db.Write, c)
		require.Error(t, err)
		require.True(t, errors.Is(err, outbox.ErrNoPublisher) || errors.Is(err, outbox.ErrBadConfig), "%v", err)
	}
	_, err = outbox.NewWebhook("ftp://x")
	require.ErrorIs(t, err, outbox.ErrBadURL)
	_, err = outbox.NewWebhook("/relative")
	require.ErrorIs(t, err, outbox.ErrBadURL)
	_, err = outbox.NewWebhook("http://x", outbox.WithTimeout(0))
	require.ErrorIs(t, err, outbox.ErrBadConfig)

	require.ErrorIs(t, outbox.Retry(ctx, db.Write, uuid.New()), outbox.ErrNotFound)
	update(t, db, func(tx *sql.Tx) error { _, err := outbox.Enqueue(ctx, tx, "h", src, ok); return err })
	require.ErrorIs(t, outbox.Discard(ctx, db.Write, outbox.MessageID(src, "h", 0)), outbox.ErrNotParked)

	bare := openBare(t)
	_, err = outbox.Pending(ctx, bare)
	require.ErrorIs(t, err, outbox.ErrNoSchema)
	require.NoError(t, outbox.Migrate(ctx, bare))
	require.NoError(t, outbox.Migrate(ctx, bare), "Migrate is idempotent")
	_, err = outbox.Pending(ctx, bare)
	require.NoError(t, err)
}

func openBare(t *testing.T) *sql.DB {
	db, err := sql.Open(sqliteDriver, filepath.Join(t.TempDir(), "bare.db"))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

// TestBackoffParkRetryDiscard follows one failing message through its
// retries (exponential waits, jittered), parking, Retry and Discard, with
// a clock the test moves; the later message of its key waits throughout,
// another key does not.
func TestBackoffParkRetryDiscard(t *testing.T) {
	ctx := context.Background()
	db := openApp(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	clock := newFakeClock()
	bad := errors.New("receiver down")
	s := &sink{fail: func(m outbox.Message) error {
		if m.Type == "Bad" {
			return bad
		}
		return nil
	}}
	relay, err := outbox.NewRelay(db.Write, outbox.Config{
		Publisher: s, MaxAttempts: 4, InitialBackoff: time.Second, MaxBackoff: 3 * time.Second,
		Jitter: 0.5, Rand: func() float64 { return 0.5 }, Now: clock.Now,
	})
	require.NoError(t, err)
	src := uuid.New()
	update(t, db, func(tx *sql.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, "h", src,
			outbox.Message{Key: "k", Type: "Bad"}, outbox.Message{Key: "k", Type: "Good"}, outbox.Message{Key: "other", Type: "Good"})
		return err
	})
	// Waits after failures 1, 2, 3: 1s, 2s, 3s (capped), each less 25%.
	for i, wait := range []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 2250 * time.Millisecond} {
		round, err := relay.DeliverDue(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, round.Failed, "attempt %d", i+1)
		require.True(t, clock.Now().Add(wait).Equal(round.NextRetry), "attempt %d: next retry %v", i+1, round.NextRetry)
		clock.Advance(wait - time.Millisecond)
		round, err = relay.DeliverDue(ctx)
		require.NoError(t, err)
		require.Zero(t, round.Failed+round.Published, "not due yet")
		clock.Advance(time.Millisecond)
	}
	round, err := relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, round.Parked)
	require.True(t, round.NextRetry.IsZero())
	clock.Advance(time.Hour)
	round, err = relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Zero(t, round.Failed+round.Published, "a parked message holds its key")
	require.Equal(t, []string{"other"}, keysOf(s.all()))

	parked, err := outbox.ListParked(ctx, db.Read, 10)
	require.NoError(t, err)
	require.Len(t, parked, 1)
	require.Equal(t, outbox.MessageID(src, "h", 0), parked[0].ID)
	require.Equal(t, 4, parked[0].Attempts)
	require.Contains(t, parked[0].LastError, "receiver down")

	// Retry: tried again at once, fails once more, waits again.
	require.NoError(t, outbox.Retry(ctx, db.Write, parked[0].ID))
	round, err = relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, round.Failed)
	require.Zero(t, round.Parked)
	require.ErrorIs(t, outbox.Discard(ctx, db.Write, parked[0].ID), outbox.ErrNotParked)

	// Park it for good by a permanent error, then discard it: the key
	// moves on, and reprocessing does not bring it back.
	s.fail = func(m outbox.Message) error {
		if m.Type == "Bad" {
			return outbox.Permanent(bad)
		}
		return nil
	}
	clock.Advance(time.Hour)
	round, err = relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, round.Parked)
	require.NoError(t, outbox.Discard(ctx, db.Write, parked[0].ID))
	round, err = relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, round.Published)
	require.Equal(t, []string{"other", "k"}, keysOf(s.all()))
	update(t, db, func(tx *sql.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, "h", src,
			outbox.Message{Key: "k", Type: "Bad"}, outbox.Message{Key: "k", Type: "Good"}, outbox.Message{Key: "other", Type: "Good"})
		return err
	})
	n, err := outbox.Pending(ctx, db.Read)
	require.NoError(t, err)
	require.Zero(t, n)
}

func keysOf(ds []delivery) []string {
	var ks []string
	for _, d := range ds {
		ks = append(ks, d.Key)
	}
	return ks
}

// TestCloseWaitsAndRecords closes a running relay while a publish hangs:
// Close returns once the publish is cancelled, and the messages published
// before it in the round are recorded as sent.
func TestCloseWaitsAndRecords(t *testing.T) {
	ctx := context.Background()
	db := openApp(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	hanging := make(chan struct{})
	s := &sink{}
	pub := publisherFunc(func(ctx context.Context, m outbox.Message) error {
		if m.Type == "Hang" {
			close(hanging)
			<-ctx.Done()
			return ctx.Err()
		}
		return s.Publish(ctx, m)
	})
	relay, err := outbox.NewRelay(db.Write, outbox.Config{Publisher: pub, Concurrency: 1})
	require.NoError(t, err)
	update(t, db, func(tx *sql.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, "h", uuid.New(),
			outbox.Message{Key: "a", Type: "Fine"}, outbox.Message{Key: "a", Type: "Fine"}, outbox.Message{Key: "a", Type: "Hang"})
		return err
	})
	require.NoError(t, relay.Start(ctx))
	<-hanging
	require.NoError(t, relay.Close())
	require.NoError(t, relay.Close(), "Close is idempotent")
	require.Len(t, s.all(), 2)
	n, err := outbox.Pending(ctx, db.Read)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the two published are recorded; the cut-short one is pending, not failed")
	var attempts int
	require.NoError(t, db.Read.QueryRow("SELECT attempts FROM esraft_outbox").Scan(&attempts))
	require.Zero(t, attempts)
	_, err = relay.DeliverDue(ctx)
	require.ErrorIs(t, err, outbox.ErrClosed)
	require.ErrorIs(t, relay.Start(ctx), outbox.ErrClosed)
}

type publisherFunc func(ctx context.Context, m outbox.Message) error

func (f publisherFunc) Publish(ctx context.Context, m outbox.Message) error { return f(ctx, m) }

// TestOrderPerKeyUnderConcurrency publishes many keys at once with random
// failures and checks each key's first deliveries follow enqueue order.
func TestOrderPerKeyUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	db := openApp(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	clock := newFakeClock()
	n := 0
	s := &sink{fail: func(m outbox.Message) error {
		n++
		if n%3 == 0 {
			return errors.New("flaky")
		}
		return nil
	}}
	relay, err := outbox.NewRelay(db.Write, outbox.Config{Publisher: s, Now: clock.Now, MaxAttempts: 100, BatchSize: 37, Concurrency: 8})
	require.NoError(t, err)
	var want []uuid.UUID
	for i := 0; i < 50; i++ {
		update(t, db, func(tx *sql.Tx) error {
			var msgs []outbox.Message
			for k := 0; k < 10; k++ {
				msgs = append(msgs, outbox.Message{Key: fmt.Sprintf("key-%d", (i+k)%12), Type: "T", Payload: []byte(fmt.Sprint(i, k))})
			}
			ids, err := outbox.Enqueue(ctx, tx, "h", uuid.New(), msgs...)
			want = append(want, ids...)
			return err
		})
	}
	for {
		round, err := relay.DeliverDue(ctx)
		require.NoError(t, err)
		if round.Published+round.Failed == 0 && round.NextRetry.IsZero() {
			break
		}
		clock.Advance(time.Minute)
	}
	checkOrder(t, want, keyOfAll(t, db, want, s), s.all())
}

// keyOfAll maps every wanted ID to its key, from the deliveries.
func keyOfAll(t *testing.T, _ any, want []uuid.UUID, s *sink) map[uuid.UUID]string {
	keys := map[uuid.UUID]string{}
	for _, d := range s.all() {
		keys[d.ID] = d.Key
	}
	for _, id := range want {
		require.Contains(t, keys, id, "message %s lost", id)
	}
	return keys
}

// checkOrder asserts that, per key, messages are first delivered in the
// order of want (enqueue order) and that every delivery is a wanted ID.
func checkOrder(t testing.TB, want []uuid.UUID, keyOf map[uuid.UUID]string, got []delivery) {
	t.Helper()
	pos := map[uuid.UUID]int{}
	for i, id := range want {
		pos[id] = i
	}
	last := map[string]int{}
	seen := map[uuid.UUID]bool{}
	for _, d := range got {
		p, ok := pos[d.ID]
		require.True(t, ok, "delivered %s, which no handler enqueued", d.ID)
		require.Equal(t, keyOf[d.ID], d.Key)
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		if l, ok := last[d.Key]; ok {
			require.Greater(t, p, l, "key %s: %s delivered before an earlier message", d.Key, d.ID)
		}
		last[d.Key] = p
	}
}

// TestDoneRetention: the IDs of published messages are forgotten after
// DoneRetention (the table stays bounded); until then a reprocessed event
// enqueues nothing, after it the message would go out again, same ID.
func TestDoneRetention(t *testing.T) {
	ctx := context.Background()
	db := openApp(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	clock := newFakeClock()
	s := &sink{}
	relay, err := outbox.NewRelay(db.Write, outbox.Config{Publisher: s, Now: clock.Now, DoneRetention: time.Hour})
	require.NoError(t, err)
	done := func() int {
		var n int
		require.NoError(t, db.Read.QueryRow("SELECT count(*) FROM esraft_outbox_done").Scan(&n))
		return n
	}
	src := uuid.New()
	enqueue := func() {
		update(t, db, func(tx *sql.Tx) error {
			_, err := outbox.Enqueue(ctx, tx, "h", src, outbox.Message{Key: "k", Type: "T"})
			return err
		})
	}
	enqueue()
	_, err = relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, done())
	clock.Advance(59 * time.Minute)
	enqueue()
	_, err = relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, done())
	require.Len(t, s.all(), 1)

	clock.Advance(2 * time.Minute)
	_, err = relay.DeliverDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, done(), "forgotten after DoneRetention")
	enqueue()
	_, err = relay.DeliverDue(ctx)
	require.NoError(t, err)
	got := s.all()
	require.Len(t, got, 2)
	require.Equal(t, got[0].ID, got[1].ID)
}
