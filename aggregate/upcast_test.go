package aggregate_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
)

// Three eras of a wallet's deposit event, each written by the code of its
// time: revision 1 counted cents, under two names ("MoneyAdded" before a
// rename to "Deposited"); revision 2 renamed the field; revision 3 added a
// currency.
type (
	MoneyAddedV1 struct{ Value int64 }
	DepositedV1  struct{ Cents int64 }
	DepositedV2  struct{ Amount int64 }
	DepositedV3  struct {
		Amount   int64
		Currency string
	}
)

type Wallet struct {
	Owner    string
	Balance  int64
	Currency string
}

func walletV1() *aggregate.Type[Wallet] {
	t := aggregate.NewType[Wallet]("wallet")
	aggregate.On(t, "Opened", func(w *Wallet, e Opened) { w.Owner = e.Owner })
	aggregate.On(t, "MoneyAdded", func(w *Wallet, e MoneyAddedV1) { w.Balance += e.Value })
	aggregate.On(t, "Deposited", func(w *Wallet, e DepositedV1) { w.Balance += e.Cents })
	return t
}

func walletV2() *aggregate.Type[Wallet] {
	t := aggregate.NewType[Wallet]("wallet")
	aggregate.On(t, "Opened", func(w *Wallet, e Opened) { w.Owner = e.Owner })
	aggregate.On(t, "Deposited", func(w *Wallet, e DepositedV2) { w.Balance += e.Amount }, aggregate.Revision(2))
	aggregate.Upcast(t.Registry(), "Deposited", 1, func(o DepositedV1) DepositedV2 { return DepositedV2{Amount: o.Cents} })
	aggregate.Upcast(t.Registry(), "MoneyAdded", 1, func(o MoneyAddedV1) DepositedV2 { return DepositedV2{Amount: o.Value} })
	return t
}

// walletV3 is the current code: revision 3, with a chain of upcasters.
func walletV3() *aggregate.Type[Wallet] {
	t := aggregate.NewType[Wallet]("wallet")
	aggregate.On(t, "Opened", func(w *Wallet, e Opened) { w.Owner = e.Owner })
	aggregate.On(t, "Deposited", func(w *Wallet, e DepositedV3) { w.Balance += e.Amount; w.Currency = e.Currency }, aggregate.Revision(3))
	r := t.Registry()
	aggregate.Upcast(r, "MoneyAdded", 1, func(o MoneyAddedV1) DepositedV1 { return DepositedV1{Cents: o.Value} }) // rename, then the chain below
	aggregate.Upcast(r, "Deposited", 1, func(o DepositedV1) DepositedV2 { return DepositedV2{Amount: o.Cents} })
	aggregate.Upcast(r, "Deposited", 2, func(o DepositedV2) DepositedV3 { return DepositedV3{Amount: o.Amount, Currency: "EUR"} })
	return t
}

func TestUpcastEventsWrittenInOldShapes(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())

	// Era 1 writes revision-1 events, under both names.
	v1 := aggregate.NewRepository(store, walletV1())
	_, err := v1.Create(ctx, "1", func(Wallet) ([]any, error) { return []any{Opened{Owner: "ann"}}, nil })
	require.NoError(t, err)
	_, err = v1.Execute(ctx, "1", func(Wallet) ([]any, error) { return []any{MoneyAddedV1{Value: 5}, DepositedV1{Cents: 250}}, nil })
	require.NoError(t, err)

	// Era 2 reads them through its upcasters and writes revision 2.
	v2 := aggregate.NewRepository(store, walletV2())
	w, err := v2.Execute(ctx, "1", func(Wallet) ([]any, error) { return []any{DepositedV2{Amount: 7}}, nil })
	require.NoError(t, err)
	require.Equal(t, int64(262), w.State.Balance)

	// Era 3, the current code, reads all three shapes.
	v3 := aggregate.NewRepository(store, walletV3())
	w, err = v3.Execute(ctx, "1", func(Wallet) ([]any, error) { return []any{DepositedV3{Amount: 1, Currency: "USD"}}, nil })
	require.NoError(t, err)
	require.Equal(t, Wallet{Owner: "ann", Balance: 263, Currency: "USD"}, w.State)
	w, err = v3.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, Wallet{Owner: "ann", Balance: 263, Currency: "USD"}, w.State)

	// What is stored: each event in the shape and name of its era, with
	// its revision in a header from revision 2 on.
	evs, err := store.ReadStream(ctx, "wallet-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 5)
	type stored struct{ typ, rev, data string }
	var got []stored
	for _, ev := range evs {
		got = append(got, stored{ev.Type, ev.Metadata.Headers["esraft.revision"], string(ev.Data)})
	}
	require.Equal(t, []stored{
		{"Opened", "", `{"Owner":"ann"}`},
		{"MoneyAdded", "", `{"Value":5}`},
		{"Deposited", "", `{"Cents":250}`},
		{"Deposited", "2", `{"Amount":7}`},
		{"Deposited", "3", `{"Amount":1,"Currency":"USD"}`},
	}, got)

	// The registry decodes any of them into the current Go type.
	want := []any{Opened{Owner: "ann"}, DepositedV3{5, "EUR"}, DepositedV3{250, "EUR"}, DepositedV3{7, "EUR"}, DepositedV3{1, "USD"}}
	for i, ev := range evs {
		e, err := v3.Type().Registry().Decode(ev)
		require.NoError(t, err)
		require.Equal(t, want[i], e)
	}
}

func TestUpcastGaps(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	// Current code at revision 3 with an upcaster from 1 but none from 2.
	typ := aggregate.NewType[Wallet]("wallet")
	aggregate.On(typ, "Deposited", func(w *Wallet, e DepositedV3) { w.Balance += e.Amount }, aggregate.Revision(3))
	aggregate.Upcast(typ.Registry(), "Deposited", 1, func(o DepositedV1) DepositedV2 { return DepositedV2{Amount: o.Cents} })
	repo := aggregate.NewRepository(store, typ)

	for stream, rev := range map[string]string{"wallet-2": "2", "wallet-9": "9", "wallet-x": "x"} {
		_, err := store.Append(ctx, stream, eventstore.Any, []eventstore.EventData{{
			Type: "Deposited", Data: []byte(`{"Amount":1}`),
			Metadata: eventstore.Metadata{Headers: map[string]string{"esraft.revision": rev}},
		}})
		require.NoError(t, err)
		_, err = repo.Load(ctx, stream[len("wallet-"):])
		require.ErrorIs(t, err, aggregate.ErrUndecodable, stream)
		require.NotErrorIs(t, err, aggregate.ErrUnknownEvent)
	}
	// Revision 1 goes up to 2 and then finds no way on.
	_, err := store.Append(ctx, "wallet-1", eventstore.Any, []eventstore.EventData{{Type: "Deposited", Data: []byte(`{"Cents":1}`)}})
	require.NoError(t, err)
	_, err = repo.Load(ctx, "1")
	require.ErrorIs(t, err, aggregate.ErrUndecodable)
	require.ErrorContains(t, err, "revision 2")
}
