package aggregate_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/raftlog"
)

// The repository's errors wrap the store's: errors.As reaches the
// store's *eventstore.WrongVersionError, and through it the log's
// *raftlog.KeySeqError.
func TestErrorsReachTheStore(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts(),
		aggregate.WithRetry(aggregate.RetryPolicy{Attempts: 1000, Backoff: time.Hour, MaxBackoff: time.Hour}))
	_, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)
	interfere := func(a Account) ([]any, error) {
		_, err := store.Append(ctx, "account-1", eventstore.Any, []eventstore.EventData{{Type: "Deposited", Data: []byte(`{"Amount":1}`)}})
		require.NoError(t, err)
		return a.Deposit(100)
	}

	t.Run("conflict", func(t *testing.T) {
		_, err := repo.Execute(ctx, "1", interfere)
		var ce *aggregate.ConflictError
		require.ErrorAs(t, err, &ce)
		var wv *eventstore.WrongVersionError
		require.ErrorAs(t, err, &wv)
		require.Equal(t, "account-1", wv.Stream)
		require.Equal(t, ce.Actual, wv.Actual)
		v, exact := wv.Expected.Version()
		require.True(t, exact)
		require.Equal(t, ce.Loaded, v)
		var kse *raftlog.KeySeqError
		require.ErrorAs(t, err, &kse)
		require.Equal(t, ce.Actual, kse.Actual)
	})
	t.Run("already exists", func(t *testing.T) {
		_, err := repo.Create(ctx, "1", OpenAccount("bob"))
		require.ErrorIs(t, err, aggregate.ErrAlreadyExists)
		var wv *eventstore.WrongVersionError
		require.ErrorAs(t, err, &wv)
		require.Equal(t, eventstore.NoStream, wv.Expected)
		require.NotZero(t, wv.Actual)
	})
	t.Run("update ends with ctx", func(t *testing.T) {
		// The first attempt conflicts; the wait before the next (up to an
		// hour) outlasts ctx.
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err := repo.Update(cctx, "1", interfere)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, aggregate.ErrConflict)
		var wv *eventstore.WrongVersionError
		require.ErrorAs(t, err, &wv)
	})
}
