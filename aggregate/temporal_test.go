package aggregate_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
)

func TestLoadAtWithSnapshots(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	openWithDeposits(t, aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(10))), "1", 24) // versions 1..25, a snapshot at 20
	require.Equal(t, "20", snapshots(t, store, "1")[0].Metadata.Headers["esraft.version"])

	spy := &spyStore{Store: store}
	repo := aggregate.NewRepository(spy, newAccounts(aggregate.SnapshotEvery(10)))
	for _, c := range []struct {
		version uint64
		read    int64 // events read: from the snapshot at 20 when it is at or below the version
	}{{25, 5}, {22, 2}, {20, 0}, {19, 19}, {15, 15}, {1, 1}} {
		spy.eventsRead.Store(0)
		acct, err := repo.LoadAt(ctx, "1", c.version)
		require.NoError(t, err)
		// Balance is version-1 at every version: a snapshot beyond the
		// version would show 19.
		require.Equal(t, aggregate.Aggregate[Account]{ID: "1", Version: c.version, State: Account{Owner: "ann", Balance: int64(c.version) - 1}}, acct)
		require.Equal(t, c.read, spy.eventsRead.Load(), "version %d", c.version)
	}

	_, err := repo.LoadAt(ctx, "1", 26)
	var ve *aggregate.VersionError
	require.ErrorAs(t, err, &ve)
	require.ErrorIs(t, err, aggregate.ErrNoSuchVersion)
	require.Equal(t, aggregate.VersionError{Type: "account", ID: "1", Version: 26, Last: 25}, *ve)
	_, err = repo.LoadAt(ctx, "1", 0)
	require.ErrorIs(t, err, aggregate.ErrNotFound)
	_, err = repo.LoadAt(ctx, "2", 1)
	require.ErrorIs(t, err, aggregate.ErrNotFound)
}

func TestLoadAsOfWithSnapshots(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(10)))
	openWithDeposits(t, repo, "1", 24)
	evs, err := store.ReadStream(ctx, "account-1", 0, 100)
	require.NoError(t, err)
	require.Len(t, evs, 25)
	// asOf is what LoadAsOf(at) must return: the last version stamped at
	// or before at (times may repeat: the leader's clock is only made
	// monotonic).
	asOf := func(at time.Time) uint64 {
		var v uint64
		for _, ev := range evs {
			if !ev.Time.After(at) {
				v = ev.Version
			}
		}
		return v
	}
	for i := 1; i < len(evs); i++ {
		require.False(t, evs[i].Time.Before(evs[i-1].Time), "times of a stream never decrease")
	}
	for _, at := range []time.Time{evs[0].Time, evs[9].Time, evs[14].Time, evs[19].Time, evs[21].Time, evs[24].Time,
		evs[15].Time.Add(-time.Nanosecond), time.Now().Add(time.Hour)} {
		want := asOf(at)
		acct, err := repo.LoadAsOf(ctx, "1", at)
		require.NoError(t, err, "as of %v", at)
		require.Equal(t, want, acct.Version, "as of %v", at)
		require.Equal(t, int64(want)-1, acct.State.Balance, "as of %v", at)
	}
	_, err = repo.LoadAsOf(ctx, "1", evs[0].Time.Add(-time.Nanosecond))
	require.ErrorIs(t, err, aggregate.ErrNotFound, "before the first event the aggregate did not exist")
	_, err = repo.LoadAsOf(ctx, "2", time.Now())
	require.ErrorIs(t, err, aggregate.ErrNotFound)
}
