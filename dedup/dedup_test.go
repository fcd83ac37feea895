package dedup_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/dedup"
	"github.com/esraft/esraft/internal/sqlitex"
)

type msg struct {
	ID     string
	Amount int
}

func msgID(m msg) string { return m.ID }

// open opens a database whose own migration creates an accounts table and
// the dedup table.
func open(t testing.TB, path string) *sqlitex.DB {
	t.Helper()
	db, err := sqlitex.Open(context.Background(), path,
		sqlitex.Migration("CREATE TABLE account (id INTEGER PRIMARY KEY, total INTEGER NOT NULL); INSERT INTO account VALUES (1, 0);"+dedup.Schema))
	require.NoError(t, err)
	t.Cleanup(func() { db.Close() })
	return db
}

func total(t *testing.T, db *sqlitex.DB) int {
	var n int
	require.NoError(t, db.Read.QueryRow("SELECT total FROM account WHERE id = 1").Scan(&n))
	return n
}

func addHandler(ctx context.Context, tx *sql.Tx, m msg) error {
	_, err := tx.ExecContext(ctx, "UPDATE account SET total = total + ? WHERE id = 1", m.Amount)
	return err
}

func TestWrapHandlesEachMessageOnce(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "h.db"))
	h, err := dedup.Wrap("billing", msgID, addHandler)
	require.NoError(t, err)
	other, err := dedup.Wrap("audit", msgID, addHandler)
	require.NoError(t, err)

	for _, m := range []msg{{"a", 1}, {"b", 10}, {"a", 1}, {"b", 10}, {"c", 100}, {"a", 1}} {
		require.NoError(t, db.Update(ctx, func(tx *sql.Tx) error { return h(ctx, tx, m) }))
	}
	require.Equal(t, 111, total(t, db))
	// Another consumer has its own marks.
	require.NoError(t, db.Update(ctx, func(tx *sql.Tx) error { return other(ctx, tx, msg{"a", 1000}) }))
	require.Equal(t, 1111, total(t, db))

	seen, err := dedup.Seen(ctx, db.Read, "billing", "c")
	require.NoError(t, err)
	require.True(t, seen)
	seen, err = dedup.Seen(ctx, db.Read, "billing", "d")
	require.NoError(t, err)
	require.False(t, seen)
}

func TestWrapFailedHandlerLeavesNoMark(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "h.db"))
	boom := errors.New("boom")
	fail := true
	h, err := dedup.Wrap("billing", msgID, func(ctx context.Context, tx *sql.Tx, m msg) error {
		if err := addHandler(ctx, tx, m); err != nil {
			return err
		}
		if fail {
			return boom
		}
		return nil
	})
	require.NoError(t, err)
	err = db.Update(ctx, func(tx *sql.Tx) error { return h(ctx, tx, msg{"a", 5}) })
	require.ErrorIs(t, err, boom)
	require.Equal(t, 0, total(t, db))
	seen, err := dedup.Seen(ctx, db.Read, "billing", "a")
	require.NoError(t, err)
	require.False(t, seen, "the mark rolled back with the handler's writes")

	fail = false
	require.NoError(t, db.Update(ctx, func(tx *sql.Tx) error { return h(ctx, tx, msg{"a", 5}) }))
	require.Equal(t, 5, total(t, db))
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	_, err := dedup.Wrap("", msgID, addHandler)
	require.ErrorIs(t, err, dedup.ErrEmptyConsumer)
	_, err = dedup.Wrap[msg]("c", nil, addHandler)
	require.ErrorIs(t, err, dedup.ErrNilFunc)
	_, err = dedup.Wrap("c", msgID, nil)
	require.ErrorIs(t, err, dedup.ErrNilFunc)
	_, err = dedup.Wrap(strings.Repeat("c", dedup.MaxIDBytes+1), msgID, addHandler)
	require.ErrorIs(t, err, dedup.ErrIDTooLong)

	db := open(t, filepath.Join(t.TempDir(), "h.db"))
	h, err := dedup.Wrap("c", msgID, addHandler)
	require.NoError(t, err)
	err = db.Update(ctx, func(tx *sql.Tx) error { return h(ctx, tx, msg{"", 1}) })
	require.ErrorIs(t, err, dedup.ErrEmptyID)
	err = db.Update(ctx, func(tx *sql.Tx) error { return h(ctx, tx, msg{strings.Repeat("x", dedup.MaxIDBytes+1), 1}) })
	require.ErrorIs(t, err, dedup.ErrIDTooLong)

	for _, r := range []dedup.Retention{{}, {MaxAge: -1}, {MaxPerConsumer: -1}} {
		_, err := dedup.Prune(ctx, db.Write, r, time.Now())
		require.ErrorIs(t, err, dedup.ErrBadRetention, "%+v", r)
		_, err = dedup.StartPruner(db.Write, dedup.PrunerConfig{Retention: r})
		require.ErrorIs(t, err, dedup.ErrBadRetention)
	}

	// A database without the table says so.
	bare, err := sqlitex.Open(ctx, filepath.Join(t.TempDir(), "bare.db"))
	require.NoError(t, err)
	defer bare.Close()
	_, err = dedup.Seen(ctx, bare.Read, "c", "a")
	require.ErrorIs(t, err, dedup.ErrNoSchema)
	require.NoError(t, dedup.Migrate(ctx, bare.Write))
	require.NoError(t, dedup.Migrate(ctx, bare.Write), "Migrate is idempotent")
	_, err = dedup.Seen(ctx, bare.Read, "c", "a")
	require.NoError(t, err)
}

// markAll marks n messages per consumer at time at, in one transaction.
func markAll(t testing.TB, db *sqlitex.DB, consumers []string, first, n int, at time.Time) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, db.Update(ctx, func(tx *sql.Tx) error {
		for i := first; i < first+n; i++ {
			for _, c := range consumers {
				ok, err := dedup.Mark(ctx, tx, c, fmt.Sprintf("%08d-0000-7000-8000-000000000000", i), at)
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("message %d of %s marked twice", i, c)
				}
			}
		}
		return nil
	}))
}

func countFor(t testing.TB, db *sqlitex.DB, consumer string) int {
	var n int
	require.NoError(t, db.Read.QueryRow("SELECT count(*) FROM esraft_dedup WHERE consumer = ?", consumer).Scan(&n))
	return n
}

func TestPruneByAgeAndCount(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "h.db"))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	markAll(t, db, []string{"a", "b"}, 0, 10, t0)
	markAll(t, db, []string{"a"}, 10, 10, t0.Add(time.Hour))

	// By count: the newest 15 of a (all 10 late ones and 5 early), all of b.
	n, err := dedup.Prune(ctx, db.Write, dedup.Retention{MaxPerConsumer: 15}, t0.Add(time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 5, n)
	require.Equal(t, 15, countFor(t, db, "a"))
	require.Equal(t, 10, countFor(t, db, "b"))
	// The kept early marks are the latest inserted ones (ties on time go by
	// insertion order).
	seen, err := dedup.Seen(ctx, db.Read, "a", "00000005-0000-7000-8000-000000000000")
	require.NoError(t, err)
	require.True(t, seen)
	seen, err = dedup.Seen(ctx, db.Read, "a", "00000004-0000-7000-8000-000000000000")
	require.NoError(t, err)
	require.False(t, seen)

	// By age: everything from t0 is older than 30 minutes at t0+1h.
	n, err = dedup.Prune(ctx, db.Write, dedup.Retention{MaxAge: 30 * time.Minute, MaxPerConsumer: 100}, t0.Add(time.Hour))
	require.NoError(t, err)
	require.EqualValues(t, 15, n)
	require.Equal(t, 10, countFor(t, db, "a"))
	require.Equal(t, 0, countFor(t, db, "b"))
	st, err := dedup.ReadStats(ctx, db.Read)
	require.NoError(t, err)
	require.EqualValues(t, 10, st.Rows)
	require.True(t, st.Oldest.Equal(t0.Add(time.Hour)), "%v", st.Oldest)
}

// TestGrowthBoundedByRetention runs four simulated hours of traffic, the
// second half at twice the rate, with a prune every simulated minute, and
// checks after every prune that the table holds no more than the
// retention allows (the age limit bounds the first half, the count limit
// the second) and that the file stops growing once the window is full
// (freed pages are reused).
func TestGrowthBoundedByRetention(t *testing.T) {
	ctx := context.Background()
	db := open(t, filepath.Join(t.TempDir(), "h.db"))
	consumers := []string{"billing", "mail", "search"}
	const (
		minutes  = 240
		maxAge   = 30 * time.Minute
		maxCount = 4000 // above 30 min x 100/min, below 30 min x 200/min
	)
	rate := func(minute int) int { // messages per consumer per minute
		if minute < minutes/2 {
			return 100
		}
		return 200
	}
	r := dedup.Retention{MaxAge: maxAge, MaxPerConsumer: maxCount}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var sizeAtWindow, maxSize int64
	next := 0
	for m := 0; m < minutes; m++ {
		markAll(t, db, consumers, next, rate(m), clock)
		next += rate(m)
		clock = clock.Add(time.Minute)
		_, err := dedup.Prune(ctx, db.Write, r, clock)
		require.NoError(t, err)
		for _, c := range consumers {
			n := countFor(t, db, c)
			switch {
			case m < 30:
				require.Equal(t, next, n, "minute %d: nothing is due yet", m)
			case m < minutes/2:
				require.Equal(t, 30*100, n, "minute %d: the age limit holds rate x MaxAge", m)
			case m >= minutes/2+20:
				require.Equal(t, maxCount, n, "minute %d: the count limit holds", m)
			}
			require.LessOrEqual(t, n, maxCount, "minute %d consumer %s", m, c)
		}
		st, err := dedup.ReadStats(ctx, db.Read)
		require.NoError(t, err)
		require.False(t, st.Oldest.Before(clock.Add(-maxAge)), "minute %d: a mark older than MaxAge survived", m)
		size := usedBytes(t, db)
		if m == minutes/2+20 {
			sizeAtWindow = size
		}
		if m >= minutes/2+20 {
			maxSize = max(maxSize, size)
		}
	}
	t.Logf("%d marks; table at %d bytes when the window filled, at most %d bytes after", next*len(consumers), sizeAtWindow, maxSize)
	require.NotZero(t, sizeAtWindow)
	require.LessOrEqual(t, maxSize, sizeAtWindow*5/4, "the file kept growing after the retention window filled")
}

// usedBytes is the database's size without its free pages.
func usedBytes(t testing.TB, db *sqlitex.DB) int64 {
	var pages, free, size int64
	require.NoError(t, db.Write.QueryRow("PRAGMA page_count").Scan(&pages))
	require.NoError(t, db.Write.QueryRow("PRAGMA freelist_count").Scan(&free))
	require.NoError(t, db.Write.QueryRow("PRAGMA page_size").Scan(&size))
	return (pages - free) * size
}

func TestPrunerRunsUntilClose(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "h.db"))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	markAll(t, db, []string{"a"}, 0, 10, t0)
	errs := make(chan error, 1)
	p, err := dedup.StartPruner(db.Write, dedup.PrunerConfig{
		Retention: dedup.Retention{MaxAge: time.Minute},
		Interval:  time.Hour, // only the prune at start runs in this test
		Now:       func() time.Time { return t0.Add(2 * time.Minute) },
		OnError:   func(err error) { errs <- err },
	})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return countFor(t, db, "a") == 0 }, 10*time.Second, time.Millisecond)
	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close is idempotent")
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
}
