package projection

import (
	"context"
	"database/sql"
)

// txStmts holds statements prepared in one handler transaction.
type txStmts struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
	// run is the transaction's ctx without its cancellation, made once per
	// transaction, for the statements Exec runs (see Exec).
	run context.Context
}

type txStmtsKey struct{}

// withTxStmts returns ctx carrying a statement cache for tx.
func withTxStmts(ctx context.Context, tx *sql.Tx) context.Context {
	return context.WithValue(ctx, txStmtsKey{}, &txStmts{tx: tx, run: context.WithoutCancel(ctx)})
}

// Exec runs a statement in a handler's transaction like tx.ExecContext,
// but prepares it once per transaction (a batch of up to BatchSize
// events) and reuses it: parsing an INSERT costs about as much as running
// it, so a handler that writes with Exec replays markedly faster. With a
// ctx and tx other than the handler's, it is tx.ExecContext.
//
// In the handler's transaction, ctx is checked before the statement
// runs, not while it runs: given a ctx that can end, the SQLite drivers
// start a goroutine per statement to interrupt it, which cost more than a
// one-row upsert itself (BENCHMARKS.md, "projection"). The runner checks
// ctx between events too, so a stopping runner still stops within one
// statement; a handler that runs statements long enough to need
// interrupting should use tx.ExecContext for them.
func Exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	c, ok := ctx.Value(txStmtsKey{}).(*txStmts)
	if !ok || c.tx != tx {
		return tx.ExecContext(ctx, query, args...)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, ok := c.stmts[query]
	if !ok {
		var err error
		if st, err = tx.PrepareContext(ctx, query); err != nil {
			return nil, err
		}
		if c.stmts == nil {
			c.stmts = map[string]*sql.Stmt{}
		}
		c.stmts[query] = st
	}
	return st.ExecContext(c.run, args...)
}
