package aggregate_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
)

// A shredded aggregate loads at its version with its shredded events
// skipped and its (shredded) snapshot unused; new events are refused.
func TestShreddedAggregate(t *testing.T) {
	ctx := context.Background()
	store, err := eventstore.Open(ctx, t.TempDir(), eventstore.Encrypt(eventstore.Encryption{
		Subject: eventstore.SubjectPerStream("account"), KEK: bytes.Repeat([]byte{1}, 32)}))
	require.NoError(t, err)
	defer store.Close()
	repo := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(5)),
		aggregate.OnSnapshotError(func(_ context.Context, _ string, err error) { t.Errorf("snapshot: %v", err) }))
	openWithDeposits(t, repo, "1", 7) // versions 1..8, a snapshot at 5
	openWithDeposits(t, repo, "2", 2)
	acct, err := repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, Account{Owner: "ann", Balance: 7}, acct.State)

	require.NoError(t, store.Shred(ctx, "account-1"))
	acct, err = repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, aggregate.Aggregate[Account]{ID: "1", Version: 8}, acct, "every event skipped, the version kept")
	acct, err = repo.LoadAt(ctx, "1", 6)
	require.NoError(t, err)
	require.Equal(t, uint64(6), acct.Version)
	require.Zero(t, acct.State)
	_, err = repo.Execute(ctx, "1", deposit(1))
	require.ErrorIs(t, err, eventstore.ErrShredded)
	acct, err = repo.Load(ctx, "2")
	require.NoError(t, err)
	require.Equal(t, Account{Owner: "ann", Balance: 2}, acct.State, "another aggregate is untouched")
}
