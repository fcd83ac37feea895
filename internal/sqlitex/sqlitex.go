// Package sqlitex opens SQLite databases the way every esraft package that
// keeps state in SQLite needs them: WAL journal, synchronous=FULL (a
// committed transaction survives a power loss), a busy timeout, exactly one
// writing connection (SQLite has one writer; a pool of writers only queues
// on its lock) and a separate pool of readers, and versioned migrations.
package sqlitex

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"

	"github.com/esraft/esraft/internal/sqltx"
)

// driverName is the database/sql driver Open uses: the one this build links
// (see driver_cgo.go and driver_pure.go), unless a test switched it with
// UseDriver.
var driverName = builtinDriver

// DriverName is the name of the database/sql driver Open uses in this build:
// "sqlite3" (mattn/go-sqlite3, cgo) or "sqlite" (modernc.org/sqlite, pure Go).
func DriverName() string { return driverName }

// UseDriver makes Open use the database/sql driver registered as name
// ("sqlite3" or "sqlite"; both take the same connection string) and returns
// a function that restores the previous one. It is for tests and benchmarks
// that link both drivers to compare them; it must not run concurrently with
// Open.
func UseDriver(name string) (restore func(), err error) {
	if !slices.Contains(sql.Drivers(), name) {
		return nil, fmt.Errorf("sqlitex: no database/sql driver %q is linked into this program (have %v)", name, sql.Drivers())
	}
	prev := driverName
	driverName = name
	return func() { driverName = prev }, nil
}

// DB is a SQLite database with one writer and a pool of readers.
type DB struct {
	// Write is the single writing connection. Use it through Update, or
	// for statements that must write.
	Write *sql.DB
	// Read is a pool of read-only connections; in WAL mode they never
	// block the writer nor wait for it.
	Read *sql.DB
	Path string
}

// Migration is one step of a schema: statements run in one transaction.
// Migrations are numbered by their position; the database records how many
// it has run (PRAGMA user_version) and runs only the new ones.
type Migration string

// Open opens (or creates) the database at path and runs the migrations it
// has not run yet.
func Open(ctx context.Context, path string, migrations ...Migration) (*DB, error) {
	return open(ctx, path, "FULL", migrations)
}

// OpenUnsynced opens (or creates) the database at path like Open, but with
// synchronous=OFF: SQLite never calls fsync, so commits cost no disk
// flush, and a crash of the machine (not of the process alone) may leave
// the file damaged. It is for a database that nothing relies on until it
// is complete, a rebuild's, which is discarded and built again after a
// crash: once complete, Seal makes it durable and it is opened again with
// Open. WAL journal as with Open (transactions still roll back).
func OpenUnsynced(ctx context.Context, path string, migrations ...Migration) (*DB, error) {
	return open(ctx, path, "OFF", migrations)
}

// Seal closes db and makes what it committed durable: SQLite checkpoints
// the WAL into the database file when its last connection closes, and
// Seal then fsyncs that file (and the WAL, if one is left). Open the path
// again to use it. The directory entry is the caller's to sync (after a
// rename that publishes the file, say).
func (db *DB) Seal() error {
	if err := db.Close(); err != nil {
		return err
	}
	for _, name := range []string{db.Path, db.Path + "-wal"} {
		err := syncFile(name)
		if errors.Is(err, fs.ErrNotExist) && name != db.Path {
			continue
		}
		if err != nil {
			return fmt.Errorf("sqlitex: seal %s: %w", db.Path, err)
		}
	}
	return nil
}

func syncFile(name string) error {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

func open(ctx context.Context, path, synchronous string, migrations []Migration) (*DB, error) {
	q := url.Values{}
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", synchronous)
	q.Set("_busy_timeout", "10000")
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", "immediate")
	w, err := sql.Open(driverName, "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("sqlitex: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w, migrations); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlitex: migrate %s: %w", path, err)
	}
	rq := url.Values{}
	rq.Set("mode", "ro")
	rq.Set("_busy_timeout", "10000")
	rq.Set("_txlock", "deferred")
	r, err := sql.Open(driverName, "file:"+path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlitex: open %s for reading: %w", path, err)
	}
	r.SetMaxOpenConns(4)
	return &DB{Write: w, Read: r, Path: path}, nil
}

func migrate(ctx context.Context, db *sql.DB, migrations []Migration) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	if version > len(migrations) {
		return fmt.Errorf("the database is at schema version %d, newer than this program's %d", version, len(migrations))
	}
	for i := version; i < len(migrations); i++ {
		err := sqltx.Update(ctx, db, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, string(migrations[i])); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
			_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Update runs fn in a write transaction and commits it if fn returns nil;
// otherwise it rolls back and returns fn's error.
func (db *DB) Update(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return sqltx.Update(ctx, db.Write, fn)
}

// Close closes both pools.
func (db *DB) Close() error {
	return errors.Join(db.Read.Close(), db.Write.Close())
}
