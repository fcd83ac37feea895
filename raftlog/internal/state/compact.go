package state

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Compacting the index. bbolt never shrinks its file: pages freed by
// copy-on-write stay in it, and it grows 16 MiB at a time. After a
// scavenge gave the segments back, the index can be most of what a node
// holds (BENCHMARKS.md, the disk test), so a scavenge asks for it to be
// copied into a new file, packed, which replaces the old one:
//
//  1. on the FSM goroutine (FSM.Snapshot, after it froze the active table:
//     no apply runs, and applies read the file without dbMu), and only if
//     dbMu can be taken exclusively at once (no flush, reader, full-copy
//     stream or scrub pass has the file open; otherwise the next snapshot
//     tries again), bbolt's Compact copies every bucket and value into
//     state.db.compact, which is synced; tables not flushed yet are
//     written to the new file afterwards, as they would have been to the
//     old one;
//  2. the old file is closed and the new one renamed over it (the
//     commit), the directory synced, and the new file opened.
//
// A crash before the rename leaves state.db as it was and a
// state.db.compact that Open removes; after it, the new file holds the
// same keys and values (their checksums travel with them).

// compactSuffix names the file a compaction writes.
const compactSuffix = ".compact"

// compactMinUnused is the least unused space worth a compaction (tests
// lower it).
var compactMinUnused int64 = 8 << 20

// RequestIndexCompaction asks the next FSM snapshot to compact the index
// if enough of its file is unused.
func (f *Engine) RequestIndexCompaction() { f.compactWanted.Store(true) }

// maybeCompactIndex runs on the FSM goroutine, in FSM.Snapshot.
func (f *Engine) maybeCompactIndex() {
	if !f.compactWanted.Swap(false) {
		return
	}
	if !f.dbMu.TryLock() {
		f.compactWanted.Store(true) // readers hold the file: the next snapshot tries again
		return
	}
	defer f.dbMu.Unlock()
	start := time.Now()
	before, after, err := f.compactIndexLocked()
	switch {
	case err != nil:
		f.logger.Error("raftlog: compacting the state index failed; the old file stays", "shard", f.shard, "err", err)
	case after > 0:
		f.logger.Info("raftlog: compacted the state index", "shard", f.shard, "bytes_before", before, "bytes_after", after,
			"took", time.Since(start).Round(time.Millisecond))
	}
}

// compactIndexLocked compacts the index if a quarter of its file, and at
// least compactMinUnused bytes, are unused; after is 0 if it did not.
// dbMu is held.
func (f *Engine) compactIndexLocked() (before, after int64, err error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0, 0, err
	}
	before = fi.Size()
	var used int64
	err = f.guard("compact", func() error {
		return f.db.View(func(tx *bolt.Tx) error {
			used = tx.Size() - int64(f.db.Stats().FreePageN)*int64(tx.DB().Info().PageSize)
			return nil
		})
	})
	if err != nil {
		return before, 0, err
	}
	if unused := before - used; unused < compactMinUnused || unused < before/4 {
		return before, 0, nil
	}
	tmp := f.path + compactSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return before, 0, err
	}
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: BoltOptions().Timeout, NoSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return before, 0, err
	}
	// bbolt grows a file 16 MiB at a time by default: the copy grows in
	// small steps, so it ends near the size of what it holds.
	dst.AllocSize = 1 << 20
	err = f.guard("compact", func() error { return bolt.Compact(dst, f.db, 16<<20) })
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return before, 0, fmt.Errorf("copy: %w", err)
	}
	if err := f.db.Close(); err != nil {
		return before, 0, err
	}
	renameErr := os.Rename(tmp, f.path)
	if renameErr == nil {
		renameErr = SyncDir(f.dir)
	}
	db, err := f.openBolt(f.path) // the new file, or the old one if the rename failed
	if err != nil {
		// Neither opens: nothing can be read or applied on this replica.
		f.markDamaged(err)
		return before, 0, err
	}
	f.db = db
	if renameErr != nil {
		os.Remove(tmp)
		return before, 0, renameErr
	}
	if fi, err := os.Stat(f.path); err == nil {
		after = fi.Size()
	}
	return before, after, nil
}
