package aggregate_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/schema"
)

// Eras of a ledger.s credit event: the first counted cents; the second
// added an optional currency (compatible) and an upcaster giving old
// deposits a currency; a broken third turned cents into a string.
type (
	Credited1 struct{ Cents int64 }
	Credited2 struct {
		Cents    int64
		Currency string `json:",omitempty"`
	}
	CreditedBroken struct{ Cents string }
)

type Ledger struct {
	Balance  int64
	Currency string
}

func ledgerType[E any](apply func(*Ledger, E), opts ...aggregate.EventOption) *aggregate.Type[Ledger] {
	t := aggregate.NewType[Ledger]("ledger")
	aggregate.On(t, "Credited", apply, opts...)
	return t
}

func TestSchemasFromGoTypes(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, t.TempDir())
	reg, err := schema.Open(ctx, store)
	require.NoError(t, err)
	t.Cleanup(func() { reg.Close() })

	// Era 1 registers its schema at start and writes.
	era1 := ledgerType(func(a *Ledger, e Credited1) { a.Balance += e.Cents })
	versions, err := era1.Registry().RegisterSchemas(ctx, reg)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"Credited": 1}, versions)
	_, err = aggregate.NewRepository(store, era1).Create(ctx, "1", func(Ledger) ([]any, error) {
		return []any{Credited1{Cents: 250}}, nil
	})
	require.NoError(t, err)
	again, err := era1.Registry().RegisterSchemas(ctx, reg)
	require.NoError(t, err)
	require.Equal(t, versions, again, "an unchanged type registers nothing new")

	// A breaking change to the Go type fails at start, naming the event,
	// the Go type and the path.
	broken := ledgerType(func(a *Ledger, e CreditedBroken) {})
	_, err = broken.Registry().RegisterSchemas(ctx, reg)
	require.ErrorIs(t, err, schema.ErrIncompatible)
	require.ErrorContains(t, err, `event "Credited" (Go type aggregate_test.CreditedBroken)`)
	require.ErrorContains(t, err, "/properties/Cents/type")

	// Compatible evolution, with an upcaster for the events of era 1.
	era2 := ledgerType(func(a *Ledger, e Credited2) { a.Balance += e.Cents; a.Currency = e.Currency }, aggregate.Revision(2))
	aggregate.Upcast(era2.Registry(), "Credited", 1, func(o Credited1) Credited2 { return Credited2{Cents: o.Cents, Currency: "EUR"} })
	versions, err = era2.Registry().RegisterSchemas(ctx, reg)
	require.NoError(t, err)
	require.Equal(t, map[string]int{"Credited": 2}, versions)
	repo2 := aggregate.NewRepository(store, era2)
	acct, err := repo2.Load(ctx, "1")
	require.NoError(t, err)
	require.Equal(t, Ledger{Balance: 250, Currency: "EUR"}, acct.State, "the old event is read through the upcaster")
	acct, err = repo2.Execute(ctx, "1", func(Ledger) ([]any, error) { return []any{Credited2{Cents: 5, Currency: "USD"}}, nil })
	require.NoError(t, err)
	require.Equal(t, Ledger{Balance: 255, Currency: "USD"}, acct.State)

	// Each event carries the schema version it was validated against.
	evs, err := store.ReadStream(ctx, "ledger-1", 0, 10)
	require.NoError(t, err)
	require.Len(t, evs, 2)
	require.Equal(t, 1, evs[0].Metadata.SchemaVersion)
	require.Equal(t, 2, evs[1].Metadata.SchemaVersion)

	// Code that skipped RegisterSchemas cannot append events breaking the
	// latest schema either: they are refused at append.
	_, err = aggregate.NewRepository(store, broken).Create(ctx, "2", func(Ledger) ([]any, error) {
		return []any{CreditedBroken{Cents: "ten"}}, nil
	})
	require.ErrorIs(t, err, schema.ErrInvalidEvent)
}

type Tagged struct {
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs"`
	Next  *Tagged           `json:"next"`
	Note  *string           `json:"note,omitempty"`
	Count int               `json:"count"`
}

// TestDerivedSchemaAcceptsWhatTheCodecWrites: nil slices, maps and
// pointers are written as null, and the derived schema accepts them; a
// wrong type is still refused.
func TestDerivedSchemaAcceptsWhatTheCodecWrites(t *testing.T) {
	r := aggregate.NewRegistry(nil)
	aggregate.Register[Tagged](r, "Tagged")
	text, err := r.EventSchema("Tagged")
	require.NoError(t, err)
	sch, err := schema.Parse(text)
	require.NoError(t, err)
	for _, v := range []Tagged{{}, {Tags: []string{"a"}, Attrs: map[string]string{"k": "v"}, Next: &Tagged{Count: 2}}} {
		data, err := aggregate.JSON.Marshal(v)
		require.NoError(t, err)
		_, reason, ok := sch.Validate(data)
		require.True(t, ok, "%s: %s", data, reason)
	}
	path, _, ok := sch.Validate([]byte(`{"tags":null,"attrs":null,"next":{"tags":[1],"attrs":null,"next":null,"count":1},"count":0}`))
	require.False(t, ok)
	require.Equal(t, "/next/tags/0", path)
}
