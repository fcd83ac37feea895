package outbox_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/outbox"
)

// A failed publish is a WARN line, a parked message an ERROR line, both
// naming the message.
func TestRelayLogsFailuresAndParks(t *testing.T) {
	ctx := context.Background()
	db := openApp(t, filepath.Join(t.TempDir(), "a.db"))
	defer db.Close()
	clock := newFakeClock()
	s := &sink{fail: func(m outbox.Message) error { return errors.New("receiver down") }}
	var buf bytes.Buffer
	relay, err := outbox.NewRelay(db.Write, outbox.Config{
		Publisher: s, MaxAttempts: 2, Now: clock.Now,
		Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	require.NoError(t, err)
	src := uuid.New()
	update(t, db, func(tx *sql.Tx) error {
		_, err := outbox.Enqueue(ctx, tx, "h", src, outbox.Message{Key: "k", Type: "T"})
		return err
	})
	for range 2 {
		_, err := relay.DeliverDue(ctx)
		require.NoError(t, err)
		clock.Advance(time.Hour)
	}
	var recs []map[string]any
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var m map[string]any
		require.NoError(t, dec.Decode(&m))
		recs = append(recs, m)
	}
	require.Len(t, recs, 2, "%v", recs)
	id := outbox.MessageID(src, "h", 0).String()
	require.Equal(t, "WARN", recs[0]["level"])
	require.Equal(t, "outbox: publish failed; will retry", recs[0]["msg"])
	require.Equal(t, id, recs[0]["id"])
	require.Equal(t, "k", recs[0]["key"])
	require.EqualValues(t, 1, recs[0]["attempts"])
	require.Equal(t, "receiver down", recs[0]["err"])
	require.Equal(t, "ERROR", recs[1]["level"])
	require.Contains(t, recs[1]["msg"], "outbox: message parked")
	require.Equal(t, id, recs[1]["id"])
	require.EqualValues(t, 2, recs[1]["attempts"])
}
