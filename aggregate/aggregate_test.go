package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
)

func openStore(t testing.TB, dir string) *eventstore.Store {
	t.Helper()
	s, err := eventstore.Open(context.Background(), dir)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// spyStore counts the aggregate events the repository reads (snapshots
// excluded) and can fail snapshot appends.
type spyStore struct {
	aggregate.Store
	eventsRead    atomic.Int64
	failSnapshots bool
}

func isSnapshot(stream string) bool { return strings.HasPrefix(stream, "$snapshot-") }

func (s *spyStore) ReadStream(ctx context.Context, stream string, from uint64, limit int) ([]eventstore.Event, error) {
	evs, err := s.Store.ReadStream(ctx, stream, from, limit)
	if !isSnapshot(stream) {
		s.eventsRead.Add(int64(len(evs)))
	}
	return evs, err
}

func (s *spyStore) Append(ctx context.Context, stream string, expected eventstore.ExpectedVersion, events []eventstore.EventData, opts ...eventstore.AppendOption) (eventstore.AppendResult, error) {
	if s.failSnapshots && isSnapshot(stream) {
		return eventstore.AppendResult{}, errors.New("disk on fire")
	}
	return s.Store.Append(ctx, stream, expected, events, opts...)
}

func deposit(n int64) aggregate.Command[Account] {
	return func(a Account) ([]any, error) { return a.Deposit(n) }
}

func TestCreateLoadExecute(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts())

	acct, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)
	require.Equal(t, aggregate.Aggregate[Account]{ID: "1", Version: 1, State: Account{Owner: "ann"}}, acct)

	acct, err = repo.Execute(ctx, "1", deposit(70))
	require.NoError(t, err)
	require.Equal(t, uint64(2), acct.Version)
	acct, err = repo.Update(ctx, "1", func(a Account) ([]any, error) { return a.Withdraw(20) })
	require.NoError(t, err)
	require.Equal(t, Account{Owner: "ann", Balance: 50}, acct.State)
	require.Equal(t, uint64(3), acct.Version)

	loaded, err := repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, acct, loaded)

	// A command deciding two events appends both, atomically, in order.
	acct, err = repo.Execute(ctx, "1", func(Account) ([]any, error) {
		return []any{Deposited{Amount: 1}, &Withdrawn{Amount: 2}}, nil // pointers to events work too
	})
	require.NoError(t, err)
	require.Equal(t, uint64(5), acct.Version)
	require.Equal(t, int64(49), acct.State.Balance)
	evs, err := store.ReadStream(ctx, "account-1", 0, 100)
	require.NoError(t, err)
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type)
	}
	require.Equal(t, []string{"Opened", "Deposited", "Withdrawn", "Deposited", "Withdrawn"}, types)

	// Deciding nothing writes nothing.
	acct, err = repo.Execute(ctx, "1", func(Account) ([]any, error) { return nil, nil })
	require.NoError(t, err)
	require.Equal(t, uint64(5), acct.Version)
}

func TestCreateExisting(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts())
	_, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)

	_, err = repo.Create(ctx, "1", OpenAccount("bob"))
	require.ErrorIs(t, err, aggregate.ErrAlreadyExists)
	require.NotErrorIs(t, err, aggregate.ErrConflict)
	acct, err := repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, "ann", acct.State.Owner)
	require.Equal(t, uint64(1), acct.Version)

	_, err = repo.Create(ctx, "2", func(Account) ([]any, error) { return nil, nil })
	require.ErrorIs(t, err, aggregate.ErrNoEvents)
}

func TestNotFound(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts())
	calls := 0
	cmd := func(a Account) ([]any, error) { calls++; return a.Deposit(1) }

	_, err := repo.Load(ctx, "nobody")
	var nf *aggregate.NotFoundError
	require.ErrorAs(t, err, &nf)
	require.Equal(t, aggregate.NotFoundError{Type: "account", ID: "nobody"}, *nf)
	_, err = repo.Execute(ctx, "nobody", cmd)
	require.ErrorIs(t, err, aggregate.ErrNotFound)
	_, err = repo.Update(ctx, "nobody", cmd)
	require.ErrorIs(t, err, aggregate.ErrNotFound)
	require.Zero(t, calls, "a command never runs on a missing aggregate")
	_, err = repo.Load(ctx, "")
	require.ErrorIs(t, err, aggregate.ErrEmptyID)

	// A deleted stream is not found either.
	_, err = repo.Create(ctx, "gone", OpenAccount("ann"))
	require.NoError(t, err)
	_, err = store.DeleteStream(ctx, "account-gone", eventstore.Any)
	require.NoError(t, err)
	_, err = repo.Load(ctx, "gone")
	require.ErrorIs(t, err, aggregate.ErrNotFound)
}

func TestRuleViolation(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts())
	_, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)
	_, err = repo.Update(ctx, "1", deposit(10))
	require.NoError(t, err)

	calls := 0
	_, err = repo.Update(ctx, "1", func(a Account) ([]any, error) { calls++; return a.Withdraw(11) })
	require.ErrorIs(t, err, ErrInsufficientFunds)
	require.NotErrorIs(t, err, aggregate.ErrConflict)
	require.Equal(t, "withdraw 11 from 10: insufficient funds", err.Error(), "the command's error comes back unwrapped")
	require.Equal(t, 1, calls, "a refusal is not retried")

	// Even a command error that matches ErrConflict is the command's own
	// and is not retried.
	calls = 0
	_, err = repo.Update(ctx, "1", func(Account) ([]any, error) {
		calls++
		return nil, fmt.Errorf("my own: %w", aggregate.ErrConflict)
	})
	require.ErrorIs(t, err, aggregate.ErrConflict)
	require.Equal(t, 1, calls)

	info, err := store.Stream(ctx, "account-1")
	require.NoError(t, err)
	require.Equal(t, uint64(2), info.Version, "nothing appended")
}

// racers runs n goroutines doing op on one aggregate; each one's first
// command waits until all n have run theirs, so all of them decided on the
// same loaded version and at most one first save can succeed.
func racers(n int, op func(i int, barrier func()) error) []error {
	var arrived sync.WaitGroup
	arrived.Add(n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var once sync.Once
			errs[i] = op(i, func() { once.Do(func() { arrived.Done(); arrived.Wait() }) })
		})
	}
	wg.Wait()
	return errs
}

func TestConcurrentUpdatesRetry(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	const n, perGoroutine = 8, 5
	repo := aggregate.NewRepository(store, newAccounts(), aggregate.WithRetry(aggregate.RetryPolicy{Attempts: 50}))
	_, err := repo.Create(ctx, "hot", OpenAccount("ann"))
	require.NoError(t, err)

	var calls atomic.Int64
	errs := racers(n, func(i int, barrier func()) error {
		for range perGoroutine {
			_, err := repo.Update(ctx, "hot", func(a Account) ([]any, error) {
				calls.Add(1)
				barrier()
				return a.Deposit(1)
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	for _, err := range errs {
		require.NoError(t, err)
	}
	acct, err := repo.Load(ctx, "hot")
	require.NoError(t, err)
	require.Equal(t, int64(n*perGoroutine), acct.State.Balance, "no deposit lost or doubled")
	require.Equal(t, uint64(1+n*perGoroutine), acct.Version)
	// All n first commands decided on version 1, so n-1 of them conflicted
	// and ran again.
	require.GreaterOrEqual(t, calls.Load(), int64(n*perGoroutine+n-1))
}

func TestExecuteConflict(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts())
	_, err := repo.Create(ctx, "hot", OpenAccount("ann"))
	require.NoError(t, err)

	const n = 4
	errs := racers(n, func(i int, barrier func()) error {
		_, err := repo.Execute(ctx, "hot", func(a Account) ([]any, error) { barrier(); return a.Deposit(1) })
		return err
	})
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
			continue
		}
		var ce *aggregate.ConflictError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, uint64(1), ce.Loaded)
		require.Equal(t, uint64(2), ce.Actual)
		require.ErrorIs(t, err, eventstore.ErrWrongVersion)
	}
	require.Equal(t, 1, wins)
	acct, err := repo.Load(ctx, "hot")
	require.NoError(t, err)
	require.Equal(t, int64(1), acct.State.Balance)
}

func TestUpdateGivesUp(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts(),
		aggregate.WithRetry(aggregate.RetryPolicy{Attempts: 3, Backoff: time.Microsecond}))
	_, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)

	// Another writer gets in between every load and save.
	calls := 0
	_, err = repo.Update(ctx, "1", func(a Account) ([]any, error) {
		calls++
		_, err := store.Append(ctx, "account-1", eventstore.Any, []eventstore.EventData{{Type: "Deposited", Data: []byte(`{"Amount":1}`)}})
		require.NoError(t, err)
		return a.Deposit(100)
	})
	var ce *aggregate.ConflictError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 3, ce.Attempts)
	require.Equal(t, 3, calls)
	acct, err := repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, int64(3), acct.State.Balance, "only the interfering deposits")
}

func TestUnregisteredEvent(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts())
	_, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)
	type Frozen struct{}
	_, err = repo.Execute(ctx, "1", func(Account) ([]any, error) { return []any{Deposited{Amount: 1}, Frozen{}}, nil })
	require.ErrorIs(t, err, aggregate.ErrUnregisteredEvent)
	require.ErrorContains(t, err, "Frozen")
	info, err := store.Stream(ctx, "account-1")
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.Version, "nothing appended")
}

func TestUnknownEventType(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts())
	_, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)
	_, err = store.Append(ctx, "account-1", eventstore.Any, []eventstore.EventData{{Type: "AccountFrozen", Data: []byte(`{}`)}})
	require.NoError(t, err)

	_, err = repo.Load(ctx, "1")
	var ue *aggregate.UnknownEventError
	require.ErrorAs(t, err, &ue)
	require.Equal(t, aggregate.UnknownEventError{Type: "AccountFrozen", Revision: 1, Stream: "account-1", Version: 2}, *ue)
	require.ErrorIs(t, err, aggregate.ErrUnknownEvent)
	require.ErrorContains(t, err, `"AccountFrozen"`)

	// A registered type with a payload that does not decode is an error too.
	_, err = store.Append(ctx, "account-2", eventstore.Any, []eventstore.EventData{{Type: "Opened", Data: []byte(`{"Owner":42}`)}})
	require.NoError(t, err)
	_, err = repo.Load(ctx, "2")
	require.ErrorIs(t, err, aggregate.ErrUndecodable)
}

func TestCorrelationMetadata(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	repo := aggregate.NewRepository(store, newAccounts())

	cmdCtx := aggregate.WithCausationID(aggregate.WithCorrelationID(ctx, "req-1"), "cmd-1")
	require.Equal(t, "req-1", aggregate.CorrelationID(cmdCtx))
	require.Equal(t, "cmd-1", aggregate.CausationID(cmdCtx))
	_, err := repo.Create(cmdCtx, "1", OpenAccount("ann"))
	require.NoError(t, err)
	_, err = repo.Update(cmdCtx, "1", func(Account) ([]any, error) { return []any{Deposited{Amount: 1}, Deposited{Amount: 2}}, nil })
	require.NoError(t, err)
	evs, err := store.ReadStream(ctx, "account-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 3)
	for _, ev := range evs {
		require.Equal(t, "req-1", ev.Metadata.CorrelationID)
		require.Equal(t, "cmd-1", ev.Metadata.CausationID)
	}

	// A command issued in reaction to an event is caused by it and keeps
	// the conversation's correlation ID.
	_, err = repo.Update(aggregate.CausedBy(ctx, evs[2]), "1", deposit(5))
	require.NoError(t, err)
	// An event without a correlation ID starts a conversation named after it.
	_, err = store.Append(ctx, "account-2", eventstore.Any, []eventstore.EventData{{Type: "Opened", Data: []byte(`{"Owner":"bob"}`)}})
	require.NoError(t, err)
	bare, err := store.ReadStream(ctx, "account-2", 0, 1)
	require.NoError(t, err)
	_, err = repo.Update(aggregate.CausedBy(ctx, bare[0]), "1", deposit(6))
	require.NoError(t, err)

	evs, err = store.ReadStream(ctx, "account-1", 4, 10)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, eventstore.Metadata{CorrelationID: "req-1", CausationID: evs[0].Metadata.CausationID}, evs[0].Metadata)
	require.Equal(t, mustEvent(t, store, "account-1", 3).ID.String(), evs[0].Metadata.CausationID)
	require.Equal(t, bare[0].ID.String(), evs[1].Metadata.CorrelationID)
	require.Equal(t, bare[0].ID.String(), evs[1].Metadata.CausationID)

	// Without IDs on the context, events carry none.
	_, err = repo.Update(ctx, "1", deposit(1))
	require.NoError(t, err)
	last := mustEvent(t, store, "account-1", 6)
	require.Equal(t, eventstore.Metadata{}, last.Metadata)
}

func mustEvent(t *testing.T, s *eventstore.Store, stream string, version uint64) eventstore.Event {
	t.Helper()
	evs, err := s.ReadStream(context.Background(), stream, version, 1)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, version, evs[0].Version)
	return evs[0]
}

func TestTypeRegistrationMistakesPanic(t *testing.T) {
	require.Panics(t, func() { aggregate.NewType[Account]("bank-account") }, "a '-' in a category")
	typ := newAccounts()
	require.Panics(t, func() { aggregate.On(typ, "Deposited", func(*Account, Deposited) {}) }, "two handlers for one name")
	require.Panics(t, func() { aggregate.On(typ, "Credited", func(*Account, Deposited) {}) }, "one Go type under two names")
	require.Panics(t, func() { aggregate.On(typ, "Ptr", func(*Account, *Deposited) {}) }, "pointer event types")
	aggregate.NewRepository(nil, typ)
	type Frozen struct{}
	require.Panics(t, func() { aggregate.On(typ, "Frozen", func(*Account, Frozen) {}) }, "On after use")

	type hidden struct {
		Balance int64
		owner   string
	}
	aggregate.NewRepository(nil, aggregate.NewType[hidden]("hidden")) // no snapshots: fine
	require.PanicsWithValue(t, "aggregate: snapshots of aggregate_test.hidden would lose its unexported field owner: export it, implement json.Marshaler and json.Unmarshaler, or use another codec",
		func() { aggregate.NewRepository(nil, aggregate.NewType[hidden]("hidden", aggregate.SnapshotEvery(10))) })
}
