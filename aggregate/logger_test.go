package aggregate_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/systemtest/syncbuf"
)

// corruptSnapshot stores an undecodable snapshot of account 1.
func corruptSnapshot(t *testing.T, store *eventstore.Store) {
	t.Helper()
	_, err := store.Append(context.Background(), "$snapshot-account-1", eventstore.Any, []eventstore.EventData{{
		Type: "snapshot", Data: []byte("not json"),
		Metadata: eventstore.Metadata{Headers: map[string]string{"esraft.revision": "1", "esraft.version": "4"}},
	}})
	require.NoError(t, err)
}

// Without OnSnapshotError a snapshot failure is a WARN line of the
// store's logger, or of the repository's own.
func TestSnapshotFailureLogged(t *testing.T) {
	ctx := context.Background()
	var storeLog, repoLog syncbuf.Buffer
	store, err := eventstore.Open(ctx, t.TempDir(),
		eventstore.Logger(slog.New(slog.NewTextHandler(&storeLog, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	require.NoError(t, err)
	defer store.Close()
	repo := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(100)))
	openWithDeposits(t, repo, "1", 3)
	corruptSnapshot(t, store)

	_, err = repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Contains(t, storeLog.String(), `level=WARN msg="aggregate: snapshot failed" stream=$snapshot-account-1 err="decode snapshot`)

	own := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(100)),
		aggregate.WithLogger(slog.New(slog.NewTextHandler(&repoLog, nil))))
	_, err = own.Load(ctx, "1")
	require.NoError(t, err)
	require.Contains(t, repoLog.String(), `msg="aggregate: snapshot failed"`)
	require.Equal(t, 1, strings.Count(storeLog.String(), "aggregate: snapshot failed"), "the repository's own logger, not the store's")
}
