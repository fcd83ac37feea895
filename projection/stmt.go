package projection

import (
	"context"
	"database/sql"
)

// txStmts holds statements prepared in one handler transaction.
type txStmts struct {
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
}

type txStmtsKey struct{}

// withTxStmts returns ctx carrying a statement cache for tx.
func withTxStmts(ctx context.Context, tx *sql.Tx) context.Context {
	return context.WithValue(ctx, txStmtsKey{}, &txStmts{tx: tx})
}

// Exec runs a statement in a handler's transaction like tx.ExecContext,
// but prepares it once per transaction (a batch of up to BatchSize
// events) and reuses it: parsing an INSERT costs about as much as running
// it, so a handler that writes with Exec replays markedly faster. With a
// ctx and tx other than the handler's, it is tx.ExecContext.
func Exec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	c, ok := ctx.Value(txStmtsKey{}).(*txStmts)
	if !ok || c.tx != tx {
		return tx.ExecContext(ctx, query, args...)
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
	return st.ExecContext(ctx, args...)
}
