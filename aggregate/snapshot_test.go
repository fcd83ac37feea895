package aggregate_test

import (
	"context"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
)

// openWithDeposits creates account id with Opened plus deposits of 1, one
// event per command, so snapshots fall where the policy says.
func openWithDeposits(t *testing.T, repo *aggregate.Repository[Account], id string, deposits int) {
	t.Helper()
	ctx := context.Background()
	_, err := repo.Create(ctx, id, OpenAccount("ann"))
	require.NoError(t, err)
	for range deposits {
		_, err := repo.Execute(ctx, id, deposit(1))
		require.NoError(t, err)
	}
}

func snapshots(t *testing.T, s *eventstore.Store, id string) []eventstore.Event {
	t.Helper()
	evs, err := s.ReadStream(context.Background(), "$snapshot-account-"+id, 0, 100)
	require.NoError(t, err)
	return evs
}

func TestSnapshotTakenAndUsed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store := openStore(t, dir)
	repo := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(10)))
	openWithDeposits(t, repo, "1", 24) // versions 1..25

	// Snapshots were taken at versions 10 and 20; only the latest is kept.
	snaps := snapshots(t, store, "1")
	require.Len(t, snaps, 1)
	require.Equal(t, uint64(2), snaps[0].Version, "the second snapshot of the aggregate")
	require.Equal(t, "20", snaps[0].Metadata.Headers["esraft.version"])
	require.Equal(t, "$snapshot", eventstore.Category(snaps[0].Stream))
	require.JSONEq(t, `{"Owner":"ann","Balance":19}`, string(snaps[0].Data))

	// The snapshot is durable: a restarted store (as any other node, which
	// holds the same snapshot stream) loads from it and reads only the
	// tail of 5 events.
	require.NoError(t, store.Close())
	store = openStore(t, dir)
	spy := &spyStore{Store: store}
	acct, err := aggregate.NewRepository(spy, newAccounts(aggregate.SnapshotEvery(10))).Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, aggregate.Aggregate[Account]{ID: "1", Version: 25, State: Account{Owner: "ann", Balance: 24}}, acct)
	require.Equal(t, int64(5), spy.eventsRead.Load())

	// Without snapshots the same load reads all 25 events.
	spy = &spyStore{Store: store}
	plain, err := aggregate.NewRepository(spy, newAccounts()).Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, acct, plain)
	require.Equal(t, int64(25), spy.eventsRead.Load())
}

func TestSnapshotFailureDoesNotFailCommand(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	spy := &spyStore{Store: store, failSnapshots: true}
	var mu sync.Mutex
	var reported []error
	repo := aggregate.NewRepository(spy, newAccounts(aggregate.SnapshotEvery(2)),
		aggregate.OnSnapshotError(func(_ context.Context, stream string, err error) {
			mu.Lock()
			defer mu.Unlock()
			require.Equal(t, "$snapshot-account-1", stream)
			reported = append(reported, err)
		}))
	_, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)
	acct, err := repo.Execute(ctx, "1", deposit(5)) // version 2: a snapshot is due and fails
	require.NoError(t, err)
	require.Equal(t, uint64(2), acct.Version)
	require.Len(t, reported, 1)
	require.ErrorContains(t, reported[0], "disk on fire")
	require.Empty(t, snapshots(t, store, "1"))
	acct, err = repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, int64(5), acct.State.Balance)
}

// AccountV2 is Account after a change of shape that makes old snapshots
// wrong: it counts deposits, which a revision-1 snapshot does not hold.
type AccountV2 struct {
	Owner    string
	Balance  int64
	Deposits int
}

func newAccountsV2(opts ...aggregate.TypeOption) *aggregate.Type[AccountV2] {
	t := aggregate.NewType[AccountV2]("account", opts...)
	aggregate.On(t, "Opened", func(a *AccountV2, e Opened) { a.Owner = e.Owner })
	aggregate.On(t, "Deposited", func(a *AccountV2, e Deposited) { a.Balance += e.Amount; a.Deposits++ })
	aggregate.On(t, "Withdrawn", func(a *AccountV2, e Withdrawn) { a.Balance -= e.Amount })
	return t
}

func TestStaleSnapshotIgnored(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	old := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(5)))
	openWithDeposits(t, old, "1", 11) // version 12, snapshot of revision 1 at 10
	snaps := snapshots(t, store, "1")
	require.Len(t, snaps, 1)
	require.Equal(t, "1", snaps[0].Metadata.Headers["esraft.revision"])

	spy := &spyStore{Store: store}
	repo := aggregate.NewRepository(spy, newAccountsV2(aggregate.SnapshotEvery(5), aggregate.SnapshotRevision(2)),
		aggregate.OnSnapshotError(func(_ context.Context, _ string, err error) {
			t.Errorf("a stale snapshot is not an error: %v", err)
		}))
	acct, err := repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, AccountV2{Owner: "ann", Balance: 11, Deposits: 11}, acct.State, "rebuilt from events, not from the stale snapshot")
	require.Equal(t, int64(12), spy.eventsRead.Load())

	// The next save snapshots the aggregate at the current revision, and
	// loads use that one.
	_, err = repo.Execute(ctx, "1", func(AccountV2) ([]any, error) { return []any{Deposited{Amount: 1}}, nil })
	require.NoError(t, err)
	snaps = snapshots(t, store, "1")
	require.Len(t, snaps, 1)
	require.Equal(t, "2", snaps[0].Metadata.Headers["esraft.revision"])
	require.Equal(t, "13", snaps[0].Metadata.Headers["esraft.version"])
	spy.eventsRead.Store(0)
	acct, err = repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, AccountV2{Owner: "ann", Balance: 12, Deposits: 12}, acct.State)
	require.Zero(t, spy.eventsRead.Load())
}

func TestCorruptSnapshotIgnored(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	var reported []error
	repo := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(100)),
		aggregate.OnSnapshotError(func(_ context.Context, _ string, err error) { reported = append(reported, err) }))
	openWithDeposits(t, repo, "1", 3)
	for i, data := range []string{`not json`, `{"Owner":"ann","Balance":1}`} {
		version := "4"
		if i == 1 {
			version = "many"
		}
		_, err := store.Append(ctx, "$snapshot-account-1", eventstore.Any, []eventstore.EventData{{
			Type: "snapshot", Data: []byte(data),
			Metadata: eventstore.Metadata{Headers: map[string]string{"esraft.revision": "1", "esraft.version": version}},
		}})
		require.NoError(t, err)
		acct, err := repo.Load(ctx, "1")
		require.NoError(t, err)
		require.Equal(t, Account{Owner: "ann", Balance: 3}, acct.State)
		require.Len(t, reported, i+1, strconv.Itoa(i))
	}
}
