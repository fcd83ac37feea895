package aggregate_test

import (
	"fmt"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
)

// An event's shape changed after events were stored: Deposited carried
// cents as "Cents" (revision 1, stored with no revision header), and now
// carries an amount and a currency (revision 2). The new code keeps the old
// shape as a type of its own and registers an upcaster from revision 1;
// events of an older name are upcast the same way.
func Example_upcast() {
	type CentsDeposited struct{ Cents int64 } // revision 1 of "Deposited"
	type LegacyCredit struct{ Value int64 }   // the old "Credited" event
	type Deposited struct {                   // revision 2, the current shape
		Amount   int64
		Currency string
	}

	type Purse struct{ Balance int64 }
	purses := aggregate.NewType[Purse]("purse")
	aggregate.On(purses, "Deposited", func(p *Purse, e Deposited) { p.Balance += e.Amount }, aggregate.Revision(2))
	aggregate.Upcast(purses.Registry(), "Deposited", 1, func(old CentsDeposited) Deposited {
		return Deposited{Amount: old.Cents, Currency: "EUR"}
	})
	aggregate.Upcast(purses.Registry(), "Credited", 1, func(old LegacyCredit) Deposited {
		return Deposited{Amount: old.Value, Currency: "EUR"}
	})

	stored := []eventstore.Event{
		{Stream: "purse-1", Version: 1, Type: "Credited", Data: []byte(`{"Value":5}`)},
		{Stream: "purse-1", Version: 2, Type: "Deposited", Data: []byte(`{"Cents":250}`)},
		{Stream: "purse-1", Version: 3, Type: "Deposited", Data: []byte(`{"Amount":7,"Currency":"USD"}`),
			Metadata: eventstore.Metadata{Headers: map[string]string{"esraft.revision": "2"}}},
		{Stream: "purse-1", Version: 4, Type: "Withdrawn", Data: []byte(`{}`)},
	}
	for _, ev := range stored {
		e, err := purses.Registry().Decode(ev)
		fmt.Printf("%+v %v\n", e, err)
	}
	// Output:
	// {Amount:5 Currency:EUR} <nil>
	// {Amount:250 Currency:EUR} <nil>
	// {Amount:7 Currency:USD} <nil>
	// <nil> aggregate: unknown event type "Withdrawn" (revision 1) at purse-1 version 4
}
