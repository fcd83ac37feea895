package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/esraft/esraft/dedup"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/outbox"
)

// A handler that records an order in its own database and asks for an
// invoice through the log, in one transaction; a relay appends the
// request to the log. Handling the event twice changes nothing.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "outbox-example")
	defer os.RemoveAll(dir)
	store, err := eventstore.Open(ctx, filepath.Join(dir, "log"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	db, err := sql.Open(sqliteDriver, filepath.Join(dir, "orders.db")+"?_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY)`)
	if err := dedup.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}
	if err := outbox.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}

	// The handler: state change, dedup mark and outgoing message commit together.
	const handler = "invoicing"
	handle, err := dedup.Wrap(handler, func(ev eventstore.Event) string { return ev.ID.String() },
		func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES (?)`, ev.Stream); err != nil {
				return err
			}
			body, _ := json.Marshal(map[string]string{"order": ev.Stream})
			_, err := outbox.Enqueue(ctx, tx, handler, ev.ID, outbox.Message{
				Key: "invoice-" + ev.Stream, Type: "InvoiceRequested", Payload: body,
			})
			return err
		})
	if err != nil {
		log.Fatal(err)
	}

	if _, err := store.Append(ctx, "order-7", eventstore.NoStream, []eventstore.EventData{{Type: "OrderPlaced"}}); err != nil {
		log.Fatal(err)
	}
	placed, _ := store.ReadStream(ctx, "order-7", 1, 1)
	for range 2 { // delivered twice
		tx, _ := db.BeginTx(ctx, nil)
		if err := handle(ctx, tx, placed[0]); err != nil {
			tx.Rollback()
			log.Fatal(err)
		}
		tx.Commit()
	}

	relay, err := outbox.NewRelay(db, outbox.Config{Publisher: outbox.NewLogPublisher(store)})
	if err != nil {
		log.Fatal(err)
	}
	defer relay.Close()
	// A service runs relay.Start(ctx) and calls relay.Notify() after each
	// commit; here one round by hand.
	round, err := relay.DeliverDue(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("published:", round.Published)

	invoice, _ := store.ReadStream(ctx, "invoice-order-7", 1, 10)
	for _, e := range invoice {
		fmt.Println(e.Type, string(e.Data), e.ID == outbox.MessageID(placed[0].ID, handler, 0))
	}
	// Output:
	// published: 1
	// InvoiceRequested {"order":"order-7"} true
}
