package projection

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/systemtest/wait"
)

// poisonV1 fails on version 1 of stream bad-1, always: the event can
// only be skipped.
func poisonV1(next Handler) Handler {
	return func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if ev.Stream == "bad-1" && ev.Version == 1 {
			return errors.New("bad-1 v1 is poison")
		}
		return next(ctx, tx, ev)
	}
}

// appendVersions appends n events to stream, one per append.
func appendVersions(t *testing.T, s *eventstore.Store, stream string, n int) {
	t.Helper()
	for v := 0; v < n; v++ {
		_, err := s.Append(context.Background(), stream, eventstore.Exact(uint64(v)), []eventstore.EventData{{Type: "Tick"}})
		require.NoError(t, err)
	}
}

// Skip drops a parked event unhandled: its row moves to esraft_skipped,
// Status counts it (also after a restart), the event parked behind it
// stays parked until retried, and the stream then flows again. Skipping
// an event that is not parked fails with ErrNotParked and changes
// nothing.
func TestLocalSkipsParkedEvent(t *testing.T) {
	s := eventstoretest.Single(t, eventstore.Partitions(1)).Node(0)
	db, err := sqlite.Open(context.Background(), t.TempDir(), testSchema...)
	require.NoError(t, err)
	defer db.Close()
	start := func() (*Local, func()) {
		r := NewLocal(s, db, "model", poisonV1(recordHandler), fastOptions())
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- r.Run(ctx) }()
		return r, func() { cancel(); require.NoError(t, <-errc) }
	}
	r, stop := start()
	ctx := context.Background()
	appendVersions(t, s, "bad-1", 2)
	waitCaughtUp(t, r.Status)
	parked, err := r.Parked(ctx)
	require.NoError(t, err)
	require.Len(t, parked, 2, "v1 poison, v2 behind it")

	require.ErrorIs(t, r.Skip(ctx, 0, 999), ErrNotParked)
	require.NoError(t, r.Skip(ctx, 0, parked[0].Offset))
	require.ErrorIs(t, r.Skip(ctx, 0, parked[0].Offset), ErrNotParked, "skipped already")
	after, err := r.Parked(ctx)
	require.NoError(t, err)
	require.Equal(t, parked[1:], after, "the event behind it stays parked")
	st := r.Status()
	require.Equal(t, 1, st.Parked)
	require.Equal(t, uint64(1), st.Skipped)
	require.Equal(t, uint64(1), st.Partitions[0].Skipped)
	var stream, msg string
	var attempts int
	require.NoError(t, db.View(ctx, func(d *sql.DB) error {
		return d.QueryRow(`SELECT stream, error, attempts FROM esraft_skipped WHERE projection = 'model' AND partition = 0 AND offset = ?`,
			parked[0].Offset).Scan(&stream, &msg, &attempts)
	}))
	require.Equal(t, "bad-1", stream)
	require.Equal(t, "bad-1 v1 is poison", msg)
	require.Equal(t, 3, attempts)

	require.NoError(t, r.Retry(ctx, 0, parked[1].Offset))
	appendVersions(t, s, "good-1", 1)
	_, err = s.Append(ctx, "bad-1", eventstore.Exact(2), []eventstore.EventData{{Type: "Tick"}})
	require.NoError(t, err)
	waitCaughtUp(t, r.Status)
	var n, last int
	require.NoError(t, db.View(ctx, func(d *sql.DB) error {
		return d.QueryRow(`SELECT n, last_version FROM per_stream WHERE stream = 'bad-1'`).Scan(&n, &last)
	}))
	require.Equal(t, 2, n, "v2 and v3 handled, v1 never")
	require.Equal(t, 3, last)
	require.Zero(t, r.Status().Parked)
	stop()

	r, stop = start()
	defer stop()
	waitCaughtUp(t, r.Status)
	require.Equal(t, uint64(1), r.Status().Skipped, "the count is in the read model")
}

// Group.Skip from any node makes the partition's owner unpark the event
// unhandled: the group's state counts it in Skipped, the event behind it
// stays parked until retried, and the skipped event is never handled.
func TestGroupSkipsParkedEvent(t *testing.T) {
	c := eventstoretest.StartCluster(t, 3)
	s := c.Node(0)
	sn := newSeen()
	m := startMember(t, s, "m1", poisonV1(sn.handler), groupOptions(), nil)
	waitOwners(t, s, "m1")
	appendVersions(t, s, "bad-1", 2)
	var parked []ParkedEvent
	wait.Until(t, 30*time.Second, "v1 and v2 of bad-1 parked", func() bool {
		parked, _ = m.g.Parked()
		return len(parked) == 2
	})
	p := parked[0].Partition
	// An operator's Group value on another node: it only asks.
	op := NewGroup(c.Node(2), "workers", "operator", nil, groupOptions())
	ctx := context.Background()
	require.ErrorIs(t, op.Skip(ctx, p, parked[0].Offset+100), ErrNotParked)
	require.NoError(t, op.Skip(ctx, p, parked[0].Offset))
	wait.Until(t, 30*time.Second, "v1 skipped", func() bool {
		st := m.g.Status()
		return st.Skipped == 1 && st.Parked == 1
	})
	after, _ := m.g.Parked()
	require.Equal(t, parked[1:], after)
	require.NoError(t, op.Retry(ctx, p, parked[1].Offset))
	wait.Until(t, 30*time.Second, "v2 handled", func() bool {
		return sn.distinct() == 1 && m.g.Status().Parked == 0
	})
	sn.mu.Lock()
	defer sn.mu.Unlock()
	require.Zero(t, sn.count[[2]uint64{uint64(p), parked[0].Offset}], "the skipped event was never handled")
	require.Equal(t, 1, sn.count[[2]uint64{uint64(p), parked[1].Offset}])
	wait.Until(t, 30*time.Second, "the count replicated", func() bool {
		gs, _, err := c.Node(1).GroupState("workers")
		return err == nil && len(gs.Partitions) > int(p) && gs.Partitions[p].Skipped == 1
	})
}
