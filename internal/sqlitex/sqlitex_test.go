package sqlitex

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOpenMigratesOnceAndIsWAL(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	migs := []Migration{
		"CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)",
		"ALTER TABLE a ADD COLUMN w TEXT",
	}
	db, err := Open(ctx, path, migs[:1]...)
	require.NoError(t, err)
	require.NoError(t, db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec("INSERT INTO a (v) VALUES ('x')")
		return err
	}))
	var mode string
	require.NoError(t, db.Write.QueryRow("PRAGMA journal_mode").Scan(&mode))
	require.Equal(t, "wal", mode)
	var sync int
	require.NoError(t, db.Write.QueryRow("PRAGMA synchronous").Scan(&sync))
	require.Equal(t, 2, sync, "FULL")
	require.NoError(t, db.Close())

	db, err = Open(ctx, path, migs...)
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.Read.QueryRow("SELECT count(*) FROM a WHERE w IS NULL").Scan(&n))
	require.Equal(t, 1, n, "the second migration ran once, on the kept data")

	// A failing fn rolls back.
	boom := errors.New("boom")
	err = db.Update(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec("INSERT INTO a (v) VALUES ('y')"); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.NoError(t, db.Read.QueryRow("SELECT count(*) FROM a").Scan(&n))
	require.Equal(t, 1, n)
	// Readers cannot write.
	_, err = db.Read.Exec("INSERT INTO a (v) VALUES ('z')")
	require.Error(t, err)

	// An older program refuses a newer schema.
	_, err = Open(ctx, path, migs[:1]...)
	require.Error(t, err)
}

// A database opened without fsync is sealed into a file that Open reads
// back whole, with no WAL left beside it.
func TestOpenUnsyncedThenSeal(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	mig := Migration("CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT)")
	db, err := OpenUnsynced(ctx, path, mig)
	require.NoError(t, err)
	var sync int
	require.NoError(t, db.Write.QueryRow("PRAGMA synchronous").Scan(&sync))
	require.Equal(t, 0, sync, "OFF")
	for i := 0; i < 100; i++ {
		require.NoError(t, db.Update(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec("INSERT INTO a (v) VALUES (?)", fmt.Sprint(i))
			return err
		}))
	}
	require.NoError(t, db.Seal())
	_, err = os.Stat(path + "-wal")
	require.ErrorIs(t, err, fs.ErrNotExist, "the WAL was checkpointed into the file")

	db, err = Open(ctx, path, mig)
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.Read.QueryRow("SELECT count(*) FROM a").Scan(&n))
	require.Equal(t, 100, n)
	require.NoError(t, db.Write.QueryRow("PRAGMA synchronous").Scan(&sync))
	require.Equal(t, 2, sync, "FULL once opened with Open")
}
