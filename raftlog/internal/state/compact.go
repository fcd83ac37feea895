package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Compacting the index. bbolt never shrinks its file: pages freed by
// copy-on-write stay in it, and it grows 16 MiB at a time. After a
// scavenge gave the segments back, the index can be most of what a node
// holds (BENCHMARKS.md, the disk test), so a scavenge has it copied into a
// new file, packed, which replaces the old one. The copy takes seconds for
// a large index; it runs on the caller's goroutine, never the FSM's, so
// applies (and the appends waiting for them) go on meanwhile:
//
//  1. The compaction takes writeMu: the flusher finishes the table it is
//     writing and then waits; nothing else writes the file. Applies go on
//     into the tables: a frozen table waits for the flusher, and the
//     active one grows up to compactBufferTables times its usual bound
//     (tableFull). Past that, or when anything else waits for a flush
//     (a snapshot, Restore, Close) or for writeMu (a drop), the compaction
//     gives up at its next check (every compactCheckEvery keys) and the
//     flusher resumes: the stall a compaction can cause is bounded by that
//     check, not by the size of the file.
//  2. In one read transaction of the file (applies and readers go on
//     reading it), every bucket, key and value is copied into
//     state.db.compact, pages filled; the copy is synced, closed, and
//     opened as an index (so a file that does not open is never put in
//     place).
//  3. The new file is renamed over state.db (the commit: both files hold
//     the same keys and values, whose checksums travel with them), the
//     directory synced, and the new file becomes db; writeMu is released
//     and the flusher writes the waiting table to the new file.
//  4. The old file is closed once its last read transaction ends (bbolt's
//     Close waits for them); a reader that loaded the old file and begins
//     after that begins again on the new one (beginIndex).
//
// A crash before the rename leaves state.db as it was and a
// state.db.compact that Open removes; after it, state.db is the new file,
// whole (synced before the rename). Either holds what the flushes
// committed; raft holds the entries above it (TestIndexCompactionCrash).

// compactSuffix names the file a compaction writes.
const compactSuffix = ".compact"

// compactBufferTables bounds the active table while a compaction holds
// the flusher: that many times its usual bound (flushRecords records or
// flushBytes bytes), so at most (1+compactBufferTables)*flushBytes of
// applied records wait in memory.
const compactBufferTables = 4

// compactCheckEvery is how many keys the copy puts between two checks of
// whether it must give up.
const compactCheckEvery = 1024

// compactTxBytes bounds the keys and values put in one transaction of the
// copy.
const compactTxBytes = 16 << 20

// compactMinUnused is the least unused space worth a compaction (tests
// lower it).
var compactMinUnused int64 = 8 << 20

// errCompactionStopped: the compaction gave up (see above); the old file
// stays, whole.
var errCompactionStopped = errors.New("raftlog: index compaction gave up")

// compactRun is a compaction in progress.
type compactRun struct {
	stop     chan struct{} // closed to make it give up
	why      string        // set before stop is closed
	stopOnce sync.Once
	done     chan struct{} // closed once it no longer holds writeMu
}

func (r *compactRun) abort(why string) {
	r.stopOnce.Do(func() {
		r.why = why
		close(r.stop)
	})
}

// IndexCompaction is what CompactIndex did: the index file's size before
// and after (After is 0 if it did not compact) and how long the copy took.
type IndexCompaction struct {
	Before, After int64
	Took          time.Duration
}

// CompactIndex copies the index into a packed file that replaces it if a
// quarter of its file, and at least compactMinUnused bytes, are unused
// (force: whatever is unused). It gives up, with an error and the old file
// in place, when stop is closed or for the reasons above. It runs on the
// caller's goroutine; one compaction runs at a time (a second call returns
// at once, compacting nothing).
func (f *Engine) CompactIndex(stop <-chan struct{}, force bool) (IndexCompaction, error) {
	run := &compactRun{stop: make(chan struct{}), done: make(chan struct{})}
	if !f.compaction.CompareAndSwap(nil, run) {
		return IndexCompaction{}, nil
	}
	defer run.finish(f)
	if stop != nil {
		go func() {
			select {
			case <-stop:
				run.abort("asked to stop")
			case <-run.done:
			}
		}()
	}
	start := time.Now()
	res, old, err := f.compactIndex(run, force)
	run.finish(f)
	res.Took = time.Since(start)
	switch {
	case errors.Is(err, errCompactionStopped):
		f.logger.Info("raftlog: index compaction stopped; the old file stays", "shard", f.shard, "after", res.Took.Round(time.Millisecond), "err", err)
	case err != nil:
		f.logger.Error("raftlog: compacting the state index failed; the old file stays", "shard", f.shard, "err", err)
	case res.After > 0:
		f.logger.Info("raftlog: compacted the state index", "shard", f.shard, "bytes_before", res.Before, "bytes_after", res.After,
			"took", res.Took.Round(time.Millisecond))
	}
	if old != nil {
		// The old file's readers may still run (a full-copy stream, for
		// minutes): only this goroutine waits for them.
		if cerr := old.Close(); cerr != nil {
			f.logger.Warn("raftlog: closing the index file a compaction replaced", "shard", f.shard, "err", cerr)
		}
	}
	return res, err
}

// finish ends the run: the engine has none in progress any more.
func (r *compactRun) finish(f *Engine) {
	if f.compaction.CompareAndSwap(r, nil) {
		close(r.done)
	}
}

// abortCompaction makes the compaction in progress, if any, give up, for
// the reason why; it does not wait for it.
func (f *Engine) abortCompaction(why string) {
	if r := f.compaction.Load(); r != nil {
		r.abort(why)
	}
}

// stopCompaction makes the compaction in progress, if any, give up, for
// the reason why, and waits until it released writeMu.
func (f *Engine) stopCompaction(why string) {
	if r := f.compaction.Load(); r != nil {
		r.abort(why)
		<-r.done
	}
}

// lockWrites takes writeMu for a writer other than the flusher; a
// compaction holding it gives up at its next check.
func (f *Engine) lockWrites() {
	f.writersWaiting.Add(1)
	f.writeMu <- struct{}{}
	f.writersWaiting.Add(-1)
}

func (f *Engine) unlockWrites() { <-f.writeMu }

// stopped returns an error wrapping errCompactionStopped, which says
// why, if the run must give up.
func (r *compactRun) stopped(f *Engine) error {
	why := ""
	select {
	case <-r.stop:
		why = r.why
	case <-f.flushStop:
		why = "the engine is closing"
	default:
		if f.writersWaiting.Load() > 0 {
			why = "a writer waits for the file"
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("%w: %s", errCompactionStopped, why)
}

// compactIndex does the work of CompactIndex; old is the replaced file,
// for the caller to close, nil if none was.
func (f *Engine) compactIndex(run *compactRun, force bool) (res IndexCompaction, old *bolt.DB, err error) {
	if res.Before, err = f.indexUnused(force); err != nil || res.Before == 0 {
		return res, nil, err
	}
	select {
	case f.writeMu <- struct{}{}:
	case <-run.stop:
		return res, nil, run.stopped(f)
	case <-f.flushStop:
		return res, nil, run.stopped(f)
	}
	locked := true
	defer func() {
		if locked {
			<-f.writeMu
		}
	}()
	if err := run.stopped(f); err != nil {
		return res, nil, err
	}
	if err := f.FlushError(); err != nil {
		return res, nil, fmt.Errorf("flushes fail, so would the copy: %w", err)
	}
	tmp := f.path + compactSuffix
	src := f.db.Load()
	if err := f.copyIndex(run, src, tmp); err != nil {
		os.Remove(tmp)
		return res, nil, err
	}
	if err := f.swapStep("copied"); err != nil {
		os.Remove(tmp)
		return res, nil, err
	}
	// Opened before it is put in place: a copy that does not open never
	// replaces a file that does. bbolt holds the file, not its name.
	db, err := f.openBolt(tmp)
	if err != nil {
		os.Remove(tmp)
		return res, nil, fmt.Errorf("open the copy: %w", err)
	}
	if err := run.stopped(f); err != nil {
		db.Close()
		os.Remove(tmp)
		return res, nil, err
	}
	if err := os.Rename(tmp, f.path); err != nil {
		db.Close()
		os.Remove(tmp)
		return res, nil, fmt.Errorf("put the copy in place: %w", err)
	}
	// Committed: state.db is the copy, which holds what the old file does.
	dirErr := f.swapStep("renamed")
	if dirErr == nil {
		dirErr = SyncDir(f.dir)
	}
	f.db.Store(db)
	<-f.writeMu
	locked = false
	if fi, err := os.Stat(f.path); err == nil {
		res.After = fi.Size()
	}
	if dirErr != nil {
		dirErr = fmt.Errorf("sync the directory after putting the copy in place: %w", dirErr)
	}
	return res, src, errors.Join(dirErr, f.swapStep("swapped"))
}

// swapStep runs the test hook beforeSwap, if set, at a step of the swap.
func (f *Engine) swapStep(step string) error {
	if f.beforeSwap == nil {
		return nil
	}
	return f.beforeSwap(step)
}

// indexUnused returns the index file's size if a compaction is worth it
// (force: if anything at all is unused), else 0.
func (f *Engine) indexUnused(force bool) (int64, error) {
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	var used int64
	err = f.view(func(tx *bolt.Tx) error {
		used = tx.Size() - int64(tx.DB().Stats().FreePageN)*int64(tx.DB().Info().PageSize)
		return nil
	})
	if err != nil {
		return 0, err
	}
	unused := size - used
	if force && unused > 0 || !force && unused >= compactMinUnused && unused >= size/4 {
		return size, nil
	}
	return 0, nil
}

// copyIndex copies every bucket, key and value of src, as one read
// transaction sees it, into a new bbolt file at path, synced. writeMu is
// held, so nothing changes src meanwhile.
func (f *Engine) copyIndex(run *compactRun, src *bolt.DB, path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dst, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: BoltOptions().Timeout, NoSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return err
	}
	// bbolt grows a file 16 MiB at a time by default: the copy grows in
	// small steps, so it ends near the size of what it holds.
	dst.AllocSize = 1 << 20
	c := &indexCopier{dst: dst, stopped: func() error { return run.stopped(f) }}
	err = f.guard("compact", func() error {
		tx, err := src.Begin(false)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if c.tx, err = dst.Begin(true); err != nil {
			return err
		}
		err = tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if err := c.create(nil, name, b.Sequence()); err != nil {
				return err
			}
			return c.copyBucket([][]byte{name}, b)
		})
		if err == nil {
			err = c.tx.Commit()
		} else {
			c.tx.Rollback()
		}
		return err
	})
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, errCompactionStopped) {
		err = fmt.Errorf("copy: %w", err)
	}
	return err
}

// indexCopier writes the copy: the buckets on a path are created in the
// order a cursor lists them, so every bucket receives its keys in order
// and its pages are filled whole.
type indexCopier struct {
	dst     *bolt.DB
	tx      *bolt.Tx
	size    int // bytes put in tx
	n       int // keys put
	stopped func() error

	// The bucket of the last path looked up in tx (a commit ends it).
	path   [][]byte
	bucket *bolt.Bucket
}

// copyBucket copies src's keys and nested buckets into the bucket at path,
// which exists.
func (c *indexCopier) copyBucket(path [][]byte, src *bolt.Bucket) error {
	cur := src.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		if v != nil {
			if err := c.put(path, k, v); err != nil {
				return err
			}
			continue
		}
		sub := src.Bucket(k)
		if err := c.create(path, k, sub.Sequence()); err != nil {
			return err
		}
		if err := c.copyBucket(append(path[:len(path):len(path)], k), sub); err != nil {
			return err
		}
	}
	return nil
}

// create creates bucket name, with sequence seq, in the bucket at path
// (nil: at the root).
func (c *indexCopier) create(path [][]byte, name []byte, seq uint64) error {
	var b *bolt.Bucket
	var err error
	if len(path) == 0 {
		b, err = c.tx.CreateBucket(name)
	} else if b, err = c.lookup(path); err == nil {
		b, err = b.CreateBucket(name)
	}
	if err != nil || seq == 0 {
		return err
	}
	return b.SetSequence(seq)
}

// put puts k and v in the bucket at path, committing the transaction
// first if it holds compactTxBytes. The slices stay valid until the
// commit: they are in the source's read transaction, open throughout.
func (c *indexCopier) put(path [][]byte, k, v []byte) error {
	if c.size+len(k)+len(v) > compactTxBytes {
		if err := c.tx.Commit(); err != nil {
			return err
		}
		var err error
		if c.tx, err = c.dst.Begin(true); err != nil {
			return err
		}
		c.size, c.path, c.bucket = 0, nil, nil
	}
	b, err := c.lookup(path)
	if err != nil {
		return err
	}
	if err := b.Put(k, v); err != nil {
		return err
	}
	c.size += len(k) + len(v)
	if c.n++; c.n%compactCheckEvery == 0 {
		return c.stopped()
	}
	return nil
}

// lookup returns the bucket at path in the current transaction.
func (c *indexCopier) lookup(path [][]byte) (*bolt.Bucket, error) {
	if c.bucket != nil && samePath(c.path, path) {
		return c.bucket, nil
	}
	b := c.tx.Bucket(path[0])
	for _, name := range path[1:] {
		if b == nil {
			break
		}
		b = b.Bucket(name)
	}
	if b == nil {
		return nil, fmt.Errorf("bucket %q missing in the copy", path)
	}
	b.FillPercent = 1 // keys arrive in order: no room left for inserts
	c.path, c.bucket = path, b
	return b, nil
}

func samePath(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
