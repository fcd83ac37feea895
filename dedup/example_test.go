package dedup_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/esraft/esraft/dedup"
)

// A handler made idempotent: the same payment delivered three times
// credits the account once.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "dedup-example")
	defer os.RemoveAll(dir)
	db, err := sql.Open(sqliteDriver, filepath.Join(dir, "billing.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS balance (total INTEGER); INSERT INTO balance VALUES (0)`); err != nil {
		log.Fatal(err)
	}
	if err := dedup.Migrate(ctx, db); err != nil { // your own tables and the dedup table, one database
		log.Fatal(err)
	}

	type Payment struct {
		ID     string
		Amount int
	}
	credit, err := dedup.Wrap("billing", func(p Payment) string { return p.ID },
		func(ctx context.Context, tx *sql.Tx, p Payment) error {
			_, err := tx.ExecContext(ctx, `UPDATE balance SET total = total + ?`, p.Amount)
			return err
		})
	if err != nil {
		log.Fatal(err)
	}

	handle := func(p Payment) error { // what a projection runner does per message
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := credit(ctx, tx, p); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	for range 3 { // delivered at least once: here, three times
		if err := handle(Payment{ID: "pay-1", Amount: 40}); err != nil {
			log.Fatal(err)
		}
	}
	var total int
	db.QueryRowContext(ctx, `SELECT total FROM balance`).Scan(&total)
	fmt.Println("total:", total)

	// Keep marks for a week, and at most a million per consumer.
	pruner, err := dedup.StartPruner(db, dedup.PrunerConfig{
		Retention: dedup.Retention{MaxAge: 7 * 24 * time.Hour, MaxPerConsumer: 1_000_000},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pruner.Close()
	// Output:
	// total: 40
}
