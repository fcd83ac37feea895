package sqlite_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/esraft/esraft/projection"
	"github.com/esraft/esraft/projection/sqlite"
)

var _ projection.ReadModel = (*sqlite.DB)(nil)

// A shadow database is filled beside the live one, which serves reads
// until PromoteShadow makes the shadow live, across a reopen; a dropped
// shadow leaves the live database as it was.
func TestShadowPromoteAndDrop(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(ctx, dir, "CREATE TABLE t (v TEXT)")
	require.NoError(t, err)
	put := func(w *sql.DB, v string) {
		_, err := w.ExecContext(ctx, "INSERT INTO t VALUES (?)", v)
		require.NoError(t, err)
	}
	read := func(db *sqlite.DB) []string {
		var out []string
		require.NoError(t, db.View(ctx, func(r *sql.DB) error {
			rows, err := r.QueryContext(ctx, "SELECT v FROM t ORDER BY v")
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var v string
				if err := rows.Scan(&v); err != nil {
					return err
				}
				out = append(out, v)
			}
			return rows.Err()
		}))
		return out
	}
	put(db.WriteDB(), "old")

	shadow, err := db.OpenShadow(ctx)
	require.NoError(t, err)
	_, err = db.OpenShadow(ctx)
	require.Error(t, err, "one shadow at a time")
	put(shadow, "dropped")
	require.NoError(t, db.DropShadow())
	require.Equal(t, []string{"old"}, read(db))
	require.Error(t, db.PromoteShadow(), "nothing to promote")

	shadow, err = db.OpenShadow(ctx)
	require.NoError(t, err)
	require.Equal(t, 0, synchronous(t, shadow), "a rebuild's database is written without fsync")
	put(shadow, "new")
	require.Equal(t, []string{"old"}, read(db), "reads stay on the live database")
	require.NoError(t, db.PromoteShadow())
	require.Equal(t, []string{"new"}, read(db))
	require.Equal(t, 2, synchronous(t, db.WriteDB()), "the promoted database is written with synchronous=FULL")
	require.NoError(t, db.Close())

	// A process that stops while rebuilding leaves the live database
	// live; the unfinished one is deleted when the directory is opened.
	db, err = sqlite.Open(ctx, dir, "CREATE TABLE t (v TEXT)")
	require.NoError(t, err)
	shadow, err = db.OpenShadow(ctx)
	require.NoError(t, err)
	put(shadow, "unfinished")
	require.NoError(t, db.Close())

	db, err = sqlite.Open(ctx, dir, "CREATE TABLE t (v TEXT)")
	require.NoError(t, err)
	defer db.Close()
	require.Equal(t, []string{"new"}, read(db), "the promoted database is live after a reopen")
	files, err := filepath.Glob(filepath.Join(dir, "model.*"))
	require.NoError(t, err)
	for _, f := range files {
		require.NotContains(t, filepath.Base(f), "model.3.", "the unfinished rebuild's files are gone")
	}
}

func synchronous(t *testing.T, w *sql.DB) int {
	var n int
	require.NoError(t, w.QueryRow("PRAGMA synchronous").Scan(&n))
	return n
}
