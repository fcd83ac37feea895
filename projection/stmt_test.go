package projection

import (
	"context"
	"database/sql"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/projection/sqlite"
)

// Exec prepares a statement once per handler transaction, and refuses to
// run one once the handler's ctx has ended, leaving nothing of it.
func TestExecReusesStatementsAndStopsOnCancel(t *testing.T) {
	db, err := sqlite.Open(context.Background(), t.TempDir(), testSchema...)
	require.NoError(t, err)
	defer db.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const upsert = `INSERT INTO per_stream (stream, n, last_version) VALUES (?, 1, ?)
		ON CONFLICT (stream) DO UPDATE SET n = n + 1, last_version = excluded.last_version`
	// The transaction outlives the handler's ctx here, to see what the
	// cancelled Exec left in it.
	err = db.Update(context.Background(), func(tx *sql.Tx) error {
		hctx := withTxStmts(ctx, tx)
		for v := 1; v <= 3; v++ {
			if _, err := Exec(hctx, tx, upsert, "s-1", v); err != nil {
				return err
			}
		}
		require.Len(t, hctx.Value(txStmtsKey{}).(*txStmts).stmts, 1)
		cancel()
		_, err := Exec(hctx, tx, upsert, "s-2", 1)
		require.ErrorIs(t, err, context.Canceled)
		return nil
	})
	require.NoError(t, err)
	var n, last int
	require.NoError(t, db.View(context.Background(), func(db *sql.DB) error {
		return db.QueryRow(`SELECT n, last_version FROM per_stream WHERE stream = 's-1'`).Scan(&n, &last)
	}))
	require.Equal(t, []int{3, 3}, []int{n, last})
	require.NoError(t, db.View(context.Background(), func(db *sql.DB) error {
		return db.QueryRow(`SELECT count(*) FROM per_stream WHERE stream = 's-2'`).Scan(&n)
	}))
	require.Zero(t, n)
}
