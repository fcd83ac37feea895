// Command quickstart is the README's first program: an embedded single-node
// store, an aggregate, a command, a local projection and a read of its view.
package main

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/esraft/esraft/aggregate"
	"github.com/esraft/esraft/eventstore"
	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
)

type Cart struct{ Items int }                // the aggregate's state
type ItemAdded struct{ SKU string }          // an event
func (c Cart) Add(sku string) ([]any, error) { return []any{ItemAdded{SKU: sku}}, nil } // a command

func main() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "quickstart")
	check(err)
	defer os.RemoveAll(dir)
	store, err := eventstore.Open(ctx, filepath.Join(dir, "log")) // the embedded single node
	check(err)
	defer store.Close()

	carts := aggregate.NewType[Cart]("cart") // streams cart-<id>
	aggregate.On(carts, "ItemAdded", func(c *Cart, e ItemAdded) { c.Items++ })
	repo := aggregate.NewRepository(store, carts)
	_, err = repo.Create(ctx, "c1", func(c Cart) ([]any, error) { return c.Add("book") })
	check(err)
	cart, err := repo.Update(ctx, "c1", func(c Cart) ([]any, error) { return c.Add("pen") })
	check(err)

	view, err := sqlite.Open(ctx, filepath.Join(dir, "view"), `CREATE TABLE carts (id TEXT PRIMARY KEY, items INT)`)
	check(err)
	defer view.Close()
	proj := projection.NewLocal(store, view, "carts", func(ctx context.Context, tx *sql.Tx, ev eventstore.Event) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO carts VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET items = items + 1`, ev.Stream)
		return err
	}, projection.Options{})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- proj.Run(runCtx) }()
	for st := proj.Status(); st.State != "running" || st.Lag > 0; st = proj.Status() {
		time.Sleep(10 * time.Millisecond) // the read model is eventually consistent: wait until it caught up
	}
	stop()
	check(<-done)

	var items int
	check(view.View(ctx, func(db *sql.DB) error {
		return db.QueryRowContext(ctx, `SELECT items FROM carts WHERE id = ?`, "cart-c1").Scan(&items)
	}))
	fmt.Printf("aggregate: %d items at version %d; view: %d items\n", cart.State.Items, cart.Version, items)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
