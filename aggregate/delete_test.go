package aggregate_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
)

func TestDeleteRemovesSnapshots(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(5)))
	openWithDeposits(t, repo, "1", 6)
	openWithDeposits(t, repo, "2", 6)
	require.Len(t, snapshots(t, store, "1"), 1)

	require.ErrorIs(t, repo.Delete(ctx, "1", eventstore.Exact(3)), eventstore.ErrWrongVersion)
	require.NoError(t, repo.Delete(ctx, "1", eventstore.Exact(7)))
	_, err := repo.Load(ctx, "1")
	require.ErrorIs(t, err, aggregate.ErrNotFound)
	_, err = store.ReadStream(ctx, "$snapshot-account-1", 0, 100)
	require.ErrorIs(t, err, eventstore.ErrStreamDeleted, "the snapshot stream is deleted with the aggregate")
	require.NoError(t, repo.Delete(ctx, "1", eventstore.Any), "deleting a deleted aggregate succeeds")

	acct, err := repo.Load(ctx, "2")
	require.NoError(t, err, "another aggregate is untouched")
	require.Equal(t, uint64(7), acct.Version)
	require.Len(t, snapshots(t, store, "2"), 1)
	require.ErrorIs(t, repo.Delete(ctx, "", eventstore.Any), aggregate.ErrEmptyID)

	noDelete := aggregate.NewRepository(&spyStore{Store: store}, newAccounts())
	require.ErrorIs(t, noDelete.Delete(ctx, "2", eventstore.Any), aggregate.ErrDeleteUnsupported)
}
