package aggregate_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
)

// The domain is plain Go: a state struct, one struct per event, and
// commands that look at the state and decide events or refuse.

type Account struct {
	Owner   string
	Balance int64
}

type Opened struct{ Owner string }
type Deposited struct{ Amount int64 }
type Withdrawn struct{ Amount int64 }

var ErrInsufficientFunds = errors.New("insufficient funds")

func OpenAccount(owner string) aggregate.Command[Account] {
	return func(Account) ([]any, error) {
		if owner == "" {
			return nil, errors.New("an account needs an owner")
		}
		return []any{Opened{Owner: owner}}, nil
	}
}

func (a Account) Deposit(amount int64) ([]any, error) {
	if amount <= 0 {
		return nil, errors.New("deposit must be positive")
	}
	return []any{Deposited{Amount: amount}}, nil
}

func (a Account) Withdraw(amount int64) ([]any, error) {
	if amount > a.Balance {
		return nil, fmt.Errorf("withdraw %d from %d: %w", amount, a.Balance, ErrInsufficientFunds)
	}
	return []any{Withdrawn{Amount: amount}}, nil
}

// newAccounts declares the aggregate type: the category of its streams,
// its snapshot policy, and for each event its stored name and how it
// changes the state.
func newAccounts(opts ...aggregate.TypeOption) *aggregate.Type[Account] {
	t := aggregate.NewType[Account]("account", opts...)
	aggregate.On(t, "Opened", func(a *Account, e Opened) { a.Owner = e.Owner })
	aggregate.On(t, "Deposited", func(a *Account, e Deposited) { a.Balance += e.Amount })
	aggregate.On(t, "Withdrawn", func(a *Account, e Withdrawn) { a.Balance -= e.Amount })
	return t
}

func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "aggregate-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store, err := eventstore.Open(ctx, dir) // the embedded single node
	if err != nil {
		panic(err)
	}
	defer store.Close()

	accounts := aggregate.NewRepository(store, newAccounts(aggregate.SnapshotEvery(100)))

	// Create runs the command on the zero state and starts the stream.
	acct, err := accounts.Create(ctx, "42", OpenAccount("ann"))
	fmt.Println("created:", acct.ID, acct.State.Owner, "version", acct.Version, err)

	// Update loads the account, runs the command and saves its events,
	// expecting the version it loaded; on a conflict with another writer
	// it reloads and runs the command again. Events carry the correlation
	// and causation IDs of the context.
	ctx = aggregate.WithCorrelationID(ctx, "request-7")
	ctx = aggregate.WithCausationID(ctx, "deposit-cmd-1")
	acct, err = accounts.Update(ctx, "42", func(a Account) ([]any, error) { return a.Deposit(100) })
	fmt.Println("deposited: balance", acct.State.Balance, "version", acct.Version, err)

	// A domain refusal is the command's own error, unwrapped; nothing is
	// written.
	_, err = accounts.Update(ctx, "42", func(a Account) ([]any, error) { return a.Withdraw(500) })
	fmt.Println("refused:", errors.Is(err, ErrInsufficientFunds), err)

	// Concurrency problems and missing or duplicate aggregates have errors
	// of their own.
	_, err = accounts.Create(ctx, "42", OpenAccount("bob"))
	fmt.Println("create again:", errors.Is(err, aggregate.ErrAlreadyExists))
	_, err = accounts.Load(ctx, "43")
	fmt.Println("load missing:", errors.Is(err, aggregate.ErrNotFound), err)

	acct, err = accounts.Load(ctx, "42")
	fmt.Println("loaded:", acct.State, "version", acct.Version, err)

	// The stream holds plain events, readable by anything.
	evs, _ := store.ReadStream(ctx, accounts.Type().Stream("42"), 0, 10)
	for _, ev := range evs {
		fmt.Printf("%s v%d %s %s correlation=%q causation=%q\n",
			ev.Stream, ev.Version, ev.Type, ev.Data, ev.Metadata.CorrelationID, ev.Metadata.CausationID)
	}
	// Output:
	// created: 42 ann version 1 <nil>
	// deposited: balance 100 version 2 <nil>
	// refused: true withdraw 500 from 100: insufficient funds
	// create again: true
	// load missing: true aggregate: account "43" not found
	// loaded: {ann 100} version 2 <nil>
	// account-42 v1 Opened {"Owner":"ann"} correlation="" causation=""
	// account-42 v2 Deposited {"Amount":100} correlation="request-7" causation="deposit-cmd-1"
}
