package aggregate_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
)

// FuzzDecode feeds the registry stored events of any name, revision header
// and payload: it must return an event or an error, never panic nor loop.
func FuzzDecode(f *testing.F) {
	r := walletV3().Registry()
	f.Add("Deposited", "", []byte(`{"Cents":1}`))
	f.Add("Deposited", "2", []byte(`{"Amount":1}`))
	f.Add("Deposited", "3", []byte(`{"Amount":1,"Currency":"EUR"}`))
	f.Add("MoneyAdded", "1", []byte(`{"Value":1}`))
	f.Add("Opened", "-1", []byte(`null`))
	f.Add("Nope", "", []byte(`{`))
	f.Fuzz(func(t *testing.T, typ, rev string, data []byte) {
		ev := eventstore.Event{Stream: "wallet-1", Version: 1, Type: typ, Data: data}
		if rev != "" {
			ev.Metadata.Headers = map[string]string{"esraft.revision": rev}
		}
		e, err := r.Decode(ev)
		if err != nil {
			require.Nil(t, e)
			require.True(t, errors.Is(err, aggregate.ErrUnknownEvent) || errors.Is(err, aggregate.ErrUndecodable), err)
			return
		}
		switch e.(type) {
		case Opened, DepositedV3:
		default:
			t.Fatalf("decoded %T, not a registered type", e)
		}
	})
}

func TestRegistryName(t *testing.T) {
	r := aggregate.NewRegistry(nil)
	aggregate.Register[Deposited](r, "Deposited")
	aggregate.Register[Deposited](r, "Deposited") // the same pairing again is fine
	name, ok := r.Name(Deposited{})
	require.True(t, ok)
	require.Equal(t, "Deposited", name)
	name, ok = r.Name(&Deposited{})
	require.True(t, ok)
	require.Equal(t, "Deposited", name)
	_, ok = r.Name(Withdrawn{})
	require.False(t, ok)
	require.Panics(t, func() { aggregate.Register[Deposited](r, "Deposited", aggregate.Revision(2)) })
	require.Panics(t, func() { aggregate.Register[Withdrawn](r, "Deposited") })
	require.Panics(t, func() { aggregate.Register[Deposited](r, "Credited") })
}

// prefixCodec is JSON behind a marker, to see that payloads and snapshots
// go through the registry's codec.
type prefixCodec struct{}

func (prefixCodec) Marshal(v any) ([]byte, error) {
	b, err := aggregate.JSON.Marshal(v)
	return append([]byte("J:"), b...), err
}

func (prefixCodec) Unmarshal(data []byte, v any) error {
	if len(data) < 2 || string(data[:2]) != "J:" {
		return errors.New("not prefixed")
	}
	return aggregate.JSON.Unmarshal(data[2:], v)
}

func TestPluggableCodec(t *testing.T) {
	ctx := t.Context()
	store := openStore(t, t.TempDir())
	typ := newAccounts(aggregate.WithRegistry(aggregate.NewRegistry(prefixCodec{})), aggregate.SnapshotEvery(2))
	repo := aggregate.NewRepository(store, typ)
	_, err := repo.Create(ctx, "1", OpenAccount("ann"))
	require.NoError(t, err)
	_, err = repo.Execute(ctx, "1", deposit(3))
	require.NoError(t, err)
	evs, err := store.ReadStream(ctx, "account-1", 0, 10)
	require.NoError(t, err)
	require.Equal(t, `J:{"Amount":3}`, string(evs[1].Data))
	snaps := snapshots(t, store, "1")
	require.Len(t, snaps, 1)
	require.Equal(t, `J:{"Owner":"ann","Balance":3}`, string(snaps[0].Data))
	acct, err := repo.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, Account{Owner: "ann", Balance: 3}, acct.State)
}
