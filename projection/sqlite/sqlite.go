// Package sqlite is the SQLite read model of package projection: a
// database in a directory, opened with WAL, synchronous=FULL, one writer
// and a pool of readers, its schema brought up to date by migrations, and
// rebuilt into a new file (written without fsync until it is complete,
// then fsynced) that replaces the live one in one step. A local
// projection keeps its checkpoints in it, in the handler's transactions; a
// group member may handle its batches in it. It is a package of its own so
// that importing projection does not link the SQLite driver (cgo).
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/esraft/esraft/internal/sqlitex"
)

// DB is a SQLite read model: one database file in a directory, opened with
// WAL, synchronous=FULL, one writer and a pool of readers, its schema
// brought up to date by the migrations given. A local projection writes it
// (the checkpoint in the same transaction as the handler's changes);
// anyone reads it with View. It is a projection.ReadModel.
//
// A rebuild writes a new file beside the live one and switches to it in
// one step: the directory's CURRENT file names the live database, and is
// replaced atomically. Reads go to the live database until the switch,
// wait for the switch itself (milliseconds), and never fail because of it.
type DB struct {
	dir        string
	migrations []sqlitex.Migration

	mu  sync.RWMutex // write-locked only to switch databases
	cur *sqlitex.DB
	gen int
	// shadow is the database a rebuild fills (nil if none), generation
	// gen+1.
	shadow *sqlitex.DB
}

// Open opens (or creates) the read model kept in dir. migrations are the
// user's schema, in order: each runs once, in its own transaction.
func Open(ctx context.Context, dir string, migrations ...string) (*DB, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("projection/sqlite: %w", err)
	}
	d := &DB{dir: dir}
	for _, m := range migrations {
		d.migrations = append(d.migrations, sqlitex.Migration(m))
	}
	gen, err := readCurrent(dir)
	if err != nil {
		return nil, err
	}
	db, err := d.openGen(ctx, gen)
	if err != nil {
		return nil, err
	}
	d.cur, d.gen = db, gen
	d.removeOthers()
	return d, nil
}

func (d *DB) fileOf(gen int) string { return filepath.Join(d.dir, fmt.Sprintf("model.%d.db", gen)) }

func (d *DB) openGen(ctx context.Context, gen int) (*sqlitex.DB, error) {
	db, err := sqlitex.Open(ctx, d.fileOf(gen), d.migrations...)
	if err != nil {
		return nil, fmt.Errorf("projection/sqlite: %w", err)
	}
	return db, nil
}

func readCurrent(dir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "CURRENT"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("projection/sqlite: %w", err)
	}
	gen, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("projection/sqlite: corrupt CURRENT file in %s: %w", dir, err)
	}
	return gen, nil
}

// writeCurrent makes gen the live database: write, fsync, rename, fsync
// the directory.
func writeCurrent(dir string, gen int) error {
	tmp := filepath.Join(dir, "CURRENT.tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%d\n", gen); err != nil {
		f.Close()
		return err
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "CURRENT")); err != nil {
		return err
	}
	df, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer df.Close()
	return df.Sync()
}

// removeOthers deletes database files other than the live one (an
// abandoned rebuild, or the one a finished rebuild replaced).
func (d *DB) removeOthers() {
	entries, _ := os.ReadDir(d.dir)
	d.mu.RLock()
	keep := filepath.Base(d.fileOf(d.gen))
	d.mu.RUnlock()
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "model.") && !strings.HasPrefix(name, keep) {
			os.Remove(filepath.Join(d.dir, name))
		}
	}
}

// View runs fn with the live database's read pool. It never sees a
// half-built rebuild.
func (d *DB) View(ctx context.Context, fn func(db *sql.DB) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return fn(d.cur.Read)
}

// Update runs fn in a write transaction of the live database.
func (d *DB) Update(ctx context.Context, fn func(tx *sql.Tx) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cur.Update(ctx, fn)
}

// WriteDB returns the live database's writing pool (one connection), for
// packages that keep tables beside a handler's state (the outbox relay,
// the dedup pruner) and for the local projection that writes it. A
// database that is rebuilt switches files: use it only with a DB that no
// local projection rebuilds (a group runner's).
func (d *DB) WriteDB() *sql.DB { return d.live().Write }

// live returns the live database.

func (d *DB) live() *sqlitex.DB {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cur
}

// Close closes the live database, and a rebuild's if one is open.
func (d *DB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	if d.shadow != nil {
		err = d.shadow.Close()
		d.shadow = nil
	}
	return errors.Join(err, d.cur.Close())
}

// OpenShadow opens an empty database beside the live one, with the same
// migrations, for a rebuild, and returns its writing pool (one
// connection). Reads go on to the live database until PromoteShadow; one
// shadow at a time.
//
// The new database is written with synchronous=OFF: its commits do not
// wait for the disk, which a replay of the whole history would otherwise
// do once per batch. Nothing relies on it until PromoteShadow: a crash
// before then leaves the CURRENT file naming the old database, Open
// deletes the new one, and the rebuild is started again. PromoteShadow
// makes it durable (fsync) before naming it live.
func (d *DB) OpenShadow(ctx context.Context) (*sql.DB, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.shadow != nil {
		return nil, errors.New("projection/sqlite: a rebuild's database is open already")
	}
	gen := d.gen + 1
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(d.fileOf(gen) + suffix)
	}
	db, err := sqlitex.OpenUnsynced(ctx, d.fileOf(gen), d.migrations...)
	if err != nil {
		return nil, fmt.Errorf("projection/sqlite: %w", err)
	}
	d.shadow = db
	return db.Write, nil
}

// PromoteShadow makes the shadow database live: it is closed, its file
// fsynced and opened again as a live database is (synchronous=FULL), then
// the directory's CURRENT file is replaced atomically, and the old
// database closed and removed. Its writing pool, as OpenShadow returned
// it, is closed: the caller stops writing to it first. Reads wait only
// for the switch, not for the fsync.
func (d *DB) PromoteShadow() error {
	d.mu.Lock()
	shadow, gen := d.shadow, d.gen+1
	d.mu.Unlock()
	if shadow == nil {
		return errors.New("projection/sqlite: no rebuild's database to promote")
	}
	err := shadow.Seal()
	var sealed *sqlitex.DB
	if err == nil {
		sealed, err = d.openGen(context.Background(), gen)
	}
	d.mu.Lock()
	if d.shadow != shadow { // dropped meanwhile
		d.mu.Unlock()
		return errors.Join(errors.New("projection/sqlite: the rebuild's database was dropped while being promoted"), closeIf(sealed))
	}
	if err != nil {
		d.shadow = nil
		d.mu.Unlock()
		d.removeOthers()
		return fmt.Errorf("projection/sqlite: make the rebuilt read model durable: %w", err)
	}
	d.shadow = sealed
	if err := writeCurrent(d.dir, gen); err != nil {
		d.mu.Unlock()
		return fmt.Errorf("projection/sqlite: switch read model: %w", err)
	}
	old := d.cur
	d.cur, d.gen, d.shadow = sealed, gen, nil
	d.mu.Unlock()
	err = old.Close()
	d.removeOthers()
	return err
}

func closeIf(db *sqlitex.DB) error {
	if db == nil {
		return nil
	}
	return db.Close()
}

// DropShadow closes and removes the shadow database, if one is open.
func (d *DB) DropShadow() error {
	d.mu.Lock()
	shadow := d.shadow
	d.shadow = nil
	d.mu.Unlock()
	if shadow == nil {
		return nil
	}
	err := shadow.Close()
	d.removeOthers()
	return err
}
