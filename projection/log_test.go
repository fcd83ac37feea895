package projection

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/eventstore/eventstoretest"
	"github.com/esraft/esraft/projection/sqlite"
	"github.com/esraft/esraft/systemtest/wait"
)

// logRecords is a slog handler that keeps every record, with the
// logger's attributes, for the tests to look at.
type logRecords struct {
	mu    *sync.Mutex
	recs  *[]map[string]any
	attrs []slog.Attr
}

func newLogRecords() (*slog.Logger, *logRecords) {
	h := &logRecords{mu: &sync.Mutex{}, recs: &[]map[string]any{}}
	return slog.New(h), h
}

func (h *logRecords) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	m := map[string]any{"level": r.Level, "msg": r.Message}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.Any()
	}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Any()
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, m)
	h.mu.Unlock()
	return nil
}

func (h *logRecords) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return &c
}

func (h *logRecords) WithGroup(string) slog.Handler { return h }

// find returns the records with message msg.
func (h *logRecords) find(msg string) []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []map[string]any
	for _, m := range *h.recs {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// A local runner logs its retries at DEBUG and its parked events at WARN,
// to the store's logger when it has none of its own.
func TestLocalLogsRetriesAndParks(t *testing.T) {
	l, logs := newLogRecords()
	s := eventstoretest.Single(t, eventstore.Partitions(1), eventstore.Logger(l)).Node(0)
	db, err := sqlite.Open(context.Background(), t.TempDir(), testSchema...)
	require.NoError(t, err)
	defer db.Close()
	h := func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		if ev.Stream == "bad-1" && ev.Version == 1 {
			return errors.New("cannot handle bad-1 v1")
		}
		return recordHandler(ctx, tx, ev)
	}
	r := NewLocal(s, db, "model", h, fastOptions())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	for v := 1; v <= 2; v++ {
		_, err := s.Append(ctx, "bad-1", eventstore.Exact(uint64(v-1)), []eventstore.EventData{{Type: "Tick"}})
		require.NoError(t, err)
	}
	waitCaughtUp(t, r.Status)
	wait.Until(t, 10*time.Second, "the parked events logged", func() bool {
		return len(logs.find("projection: events parked behind an earlier parked event of their stream")) > 0
	})

	retries := logs.find("projection: handler failed; retrying")
	require.Len(t, retries, 2, "MaxAttempts 3: two retries")
	require.Equal(t, slog.LevelDebug, retries[0]["level"])
	require.Equal(t, "model", retries[0]["projection"])
	require.EqualValues(t, 1, retries[0]["attempts"])
	parked := logs.find("projection: event parked")
	require.Len(t, parked, 1)
	p := parked[0]
	require.Equal(t, slog.LevelWarn, p["level"])
	require.Equal(t, "model", p["projection"])
	require.Equal(t, "bad-1", p["stream"])
	require.EqualValues(t, 3, p["attempts"])
	require.ErrorContains(t, p["err"].(error), "cannot handle bad-1 v1")
	behind := logs.find("projection: events parked behind an earlier parked event of their stream")
	require.Equal(t, slog.LevelWarn, behind[0]["level"])
	require.EqualValues(t, 1, behind[0]["events"])
}

// A group member logs the partitions granted to it at INFO, to its own
// logger when it has one.
func TestGroupLogsGrants(t *testing.T) {
	s := eventstoretest.Single(t).Node(0)
	l, logs := newLogRecords()
	opt := groupOptions()
	opt.Logger = l
	startMember(t, s, "m1", newSeen().handler, opt, nil)
	waitOwners(t, s, "m1")
	wait.Until(t, 10*time.Second, "every grant logged", func() bool {
		return len(logs.find("projection: partition granted")) == s.Partitions()
	})
	g := logs.find("projection: partition granted")[0]
	require.Equal(t, slog.LevelInfo, g["level"])
	require.Equal(t, "workers", g["group"])
	require.Equal(t, "m1", g["member"])
}
