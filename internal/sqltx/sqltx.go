// Package sqltx runs functions in database/sql transactions. It links no
// driver, so packages that only take a *sql.DB (package projection) can
// use it without linking SQLite.
package sqltx

import (
	"context"
	"database/sql"
	"errors"
)

// Update runs fn in a write transaction of db and commits it if fn
// returns nil; otherwise it rolls back and returns fn's error.
func Update(ctx context.Context, db *sql.DB, fn func(tx *sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, ignoreDone(tx.Rollback()))
	}
	return tx.Commit()
}

func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}
