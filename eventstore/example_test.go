package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/esraft/esraft/eventstore"
)

// Opening the embedded single-node store, appending with an expected
// version, and reading a stream back.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "eventstore-example")
	defer os.RemoveAll(dir)

	store, err := eventstore.Open(ctx, dir) // one node, embedded, durable
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// Create the stream: NoStream fails if it already has events.
	res, err := store.Append(ctx, "order-42", eventstore.NoStream, []eventstore.EventData{
		{Type: "OrderPlaced", Data: []byte(`{"customer":"ann","total_cents":1200}`)},
	})
	if err != nil {
		log.Fatal(err)
	}
	// Append after the version we know: optimistic concurrency.
	_, err = store.Append(ctx, "order-42", eventstore.Exact(res.LastVersion), []eventstore.EventData{
		{Type: "OrderPaid", Data: []byte(`{"amount_cents":1200}`)},
	})
	if err != nil {
		log.Fatal(err)
	}

	events, err := store.ReadStream(ctx, "order-42", 1, 100)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range events {
		fmt.Println(e.Version, e.Type, string(e.Data))
	}
	// Output:
	// 1 OrderPlaced {"customer":"ann","total_cents":1200}
	// 2 OrderPaid {"amount_cents":1200}
}

// A stale expected version fails with a typed error that carries the
// stream's actual version.
func ExampleWrongVersionError() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "eventstore-example")
	defer os.RemoveAll(dir)
	store, err := eventstore.Open(ctx, dir)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	store.Append(ctx, "cart-7", eventstore.NoStream, []eventstore.EventData{{Type: "ItemAdded"}})
	store.Append(ctx, "cart-7", eventstore.Exact(1), []eventstore.EventData{{Type: "ItemAdded"}})

	// A writer that loaded version 1 and decides late:
	_, err = store.Append(ctx, "cart-7", eventstore.Exact(1), []eventstore.EventData{{Type: "CheckedOut"}})
	var wrong *eventstore.WrongVersionError
	if errors.As(err, &wrong) {
		fmt.Printf("stream %s is at version %d; reload and decide again\n", wrong.Stream, wrong.Actual)
	}
	fmt.Println(errors.Is(err, eventstore.ErrWrongVersion))
	// Output:
	// stream cart-7 is at version 2; reload and decide again
	// true
}

// Subscribing to every order event from the beginning: the subscription
// catches up on history, then follows new events as they are committed.
func ExampleStore_Subscribe() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "eventstore-example")
	defer os.RemoveAll(dir)
	store, err := eventstore.Open(ctx, dir, eventstore.Partitions(1))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	store.Append(ctx, "order-1", eventstore.NoStream, []eventstore.EventData{{Type: "OrderPlaced"}})
	store.Append(ctx, "invoice-1", eventstore.NoStream, []eventstore.EventData{{Type: "InvoiceSent"}})

	sub, err := store.Subscribe(ctx, eventstore.SubscribeOptions{Categories: []string{"order"}})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	store.Append(ctx, "order-2", eventstore.NoStream, []eventstore.EventData{{Type: "OrderPlaced"}})
	for i := 0; i < 2; i++ {
		e, err := sub.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Stream, e.Type, "at offset", e.Offset)
	}
	// Store the checkpoint with your read model to resume from it later.
	fmt.Println(sub.Checkpoint())
	// Output:
	// order-1 OrderPlaced at offset 0
	// order-2 OrderPlaced at offset 2
	// map[0:3]
}

// Three instances of a service embed the three voters of one store; each
// is started with its own ID and address and the same peer list. (Not run:
// it needs the other two nodes.)
func ExampleOpen_cluster() {
	ctx := context.Background()
	store, err := eventstore.Open(ctx, "/var/lib/orders",
		eventstore.Node("n1", "10.0.0.1:7000"),
		eventstore.Peers(
			eventstore.Peer{ID: "n1", Addr: "10.0.0.1:7000"},
			eventstore.Peer{ID: "n2", Addr: "10.0.0.2:7000"},
			eventstore.Peer{ID: "n3", Addr: "10.0.0.3:7000"},
		),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	// A worker node joins an existing cluster without voting:
	//   eventstore.Open(ctx, dir, eventstore.Node("w1", "10.0.0.9:7000"),
	//       eventstore.Join("10.0.0.1:7000"), eventstore.NonVoter())
}
