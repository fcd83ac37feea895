package projection

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection/sqlite"
)

// Both ways of splitting a batch at a failing event commit the same: the
// events before it once, the poison event parked after MaxAttempts, the
// later events of its stream parked behind it, the other streams handled,
// and the partition resumes after the batch. Replay handles the events
// before the failing one a second time (their first transaction was
// rolled back); savepoints, or no transaction at all, never do.
func TestCoreSplitsBatchAtFailingEvent(t *testing.T) {
	for _, tc := range []struct {
		name       string
		replay, db bool
		calls      map[uint64]int // handler calls per offset
	}{
		{"replay", true, true, map[uint64]int{0: 2, 1: 2, 2: 3, 3: 1, 5: 1}},
		{"savepoints", false, true, map[uint64]int{0: 1, 1: 1, 2: 3, 3: 1, 5: 1}},
		{"no database", false, false, map[uint64]int{0: 1, 1: 1, 2: 3, 3: 1, 5: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			calls := map[uint64]int{}
			handled := map[uint64]bool{} // without a database: nothing to roll back
			h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
				calls[ev.Offset]++
				if ev.Offset == 2 { // fails after writing: the write must not stay
					if tx != nil {
						require.NoError(t, recordHandler(ctx, tx, ev))
					}
					return errors.New("poison")
				}
				if tx == nil {
					handled[ev.Offset] = true
					return nil
				}
				return recordHandler(ctx, tx, ev)
			}
			opt := fastOptions()
			opt.Logger = slog.New(slog.DiscardHandler) // NewLocal and NewGroup set one
			c := &core{name: "test", h: h, opt: &opt, replay: tc.replay, hooks: &testHooks{}}
			var db *sqlite.DB
			if tc.db {
				var err error
				db, err = sqlite.Open(ctx, t.TempDir(), append(testSchema, internalSchema)...)
				require.NoError(t, err)
				defer db.Close()
				c.writer = db
				if tc.replay {
					c.journal = tables{"test"}
				}
			}
			var evs []eventstore.Event
			for i, stream := range []string{"a", "b", "a", "c", "a", "b"} {
				evs = append(evs, eventstore.Event{Partition: 0, Offset: uint64(i), Stream: stream, Type: "Tick", Version: uint64(i + 1)})
			}

			c.mu.Lock()
			parks, err := c.handleBatchLocked(ctx, evs, 7) // offset 6 was filtered out
			c.mu.Unlock()
			require.NoError(t, err)

			require.Equal(t, tc.calls, calls)
			require.Len(t, parks, 2)
			require.Equal(t, ParkedEvent{Partition: 0, Offset: 2, Stream: "a", Error: "poison", Attempts: opt.MaxAttempts}, parks[0].ParkedEvent)
			require.Equal(t, ParkedEvent{Partition: 0, Offset: 4, Stream: "a", Error: "waiting behind an earlier parked event of its stream"}, parks[1].ParkedEvent)
			require.Equal(t, "Tick", parks[0].eventType)
			cur := c.cursors[0]
			require.Equal(t, uint64(7), cur.next)
			require.Equal(t, map[string]int{"a": 2}, cur.parked)

			want := map[uint64]bool{0: true, 1: true, 3: true, 5: true}
			if !tc.db {
				require.Equal(t, want, handled)
				return
			}
			got := map[uint64]bool{}
			require.NoError(t, db.View(ctx, func(d *sql.DB) error {
				rows, err := d.Query(`SELECT offset FROM handled`)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var off uint64
					if err := rows.Scan(&off); err != nil {
						return err
					}
					require.False(t, got[off], "offset %d handled twice", off)
					got[off] = true
				}
				return rows.Err()
			}))
			require.Equal(t, want, got)
			if c.journal == nil {
				return
			}
			// The journal committed with the handler's changes.
			var next uint64
			var parked int
			require.NoError(t, db.View(ctx, func(d *sql.DB) error {
				if err := d.QueryRow(`SELECT next_offset FROM esraft_checkpoints WHERE projection = 'test' AND partition = 0`).Scan(&next); err != nil {
					return err
				}
				return d.QueryRow(`SELECT count(*) FROM esraft_parked WHERE projection = 'test'`).Scan(&parked)
			}))
			require.Equal(t, uint64(7), next)
			require.Equal(t, 2, parked)
		})
	}
}

// A batch whose transaction fails commits nothing, in the database or in
// memory.
func TestCoreFailedTransactionMovesNothing(t *testing.T) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, t.TempDir(), append(testSchema, internalSchema)...)
	require.NoError(t, err)
	defer db.Close()
	opt := fastOptions()
	opt.Logger = slog.New(slog.DiscardHandler) // NewLocal and NewGroup set one
	crash := errors.New("crash before commit")
	c := &core{name: "test", h: recordHandler, opt: &opt, writer: db, journal: tables{"test"}, replay: true,
		hooks: &testHooks{testBeforeCommit: func() error { return crash }}}
	c.mu.Lock()
	_, err = c.handleBatchLocked(ctx, []eventstore.Event{{Partition: 1, Offset: 0, Stream: "a"}, {Partition: 1, Offset: 1, Stream: "b"}}, 2)
	c.mu.Unlock()
	require.ErrorIs(t, err, crash)
	require.Zero(t, c.cursorLocked(1).next)
	rows, _ := countHandled(t, db)
	require.Zero(t, rows)
}
