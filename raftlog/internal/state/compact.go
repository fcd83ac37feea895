package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Compacting the index. bbolt never shrinks its file: pages freed by
// copy-on-write stay in it, and it grows 16 MiB at a time. After a
// scavenge gave the segments back, the index can be most of what a node
// holds (BENCHMARKS.md, the disk test), so a scavenge has it copied into a
// new file, packed, which replaces the old one. The copy takes seconds for
// a large index; it runs on the caller's goroutine, never the FSM's, and
// the flusher writes on meanwhile, so applies (and the appends waiting for
// them) go on:
//
//  1. Under writeMu (which every writer of the file holds), the compaction
//     opens a read transaction of the file (the snapshot it copies) and
//     starts recording: from then on, every transaction the flusher
//     commits (a table, an erasure) is also kept as a function that
//     writes the same to another file (record), with what it needs of the
//     table but its records (memTable.indexPart). The flusher's drop of
//     scavenged segments waits for the next flush after the compaction,
//     and any other writer (lockWrites) makes the compaction give up.
//  2. Without writeMu, every bucket, key and value of the snapshot is
//     copied into state.db.compact (pages filled; paced at the caller's
//     rate, and synced every compactTxBytes, so that it leaves the
//     appends CPU and disk), then the recorded
//     transactions are written to it in order, in rounds, while more than
//     a table's worth is recorded: each one finds the copy as the file was
//     when it first ran, so writes the same keys and values.
//  3. Under writeMu again (the flusher waits; applies go on into the
//     tables): the last recorded transactions are written to the copy,
//     its applied index checked against the file's, and it is synced,
//     renamed over state.db (the commit) and becomes db;
//     the directory is synced and writeMu released. The flusher's next
//     table goes to the new file.
//  4. The old file is closed once its last read transaction ends (bbolt's
//     Close waits for them). Readers begin their transactions under
//     swapMu, which the swap takes, so none begins on the old file after
//     it (beginIndex): none can wait behind its Close.
//
// A compaction gives up, leaving the old file in place, when asked to
// stop, when the engine closes or installs a full copy, when another
// writer waits for writeMu, when a flush fails (the copy may hold the
// space it needs), or when more than compactMaxRecorded bytes of recorded
// transactions wait (appends outpace the copy), so memory stays bounded.
//
// A crash before the rename leaves state.db as it was and a
// state.db.compact that Open removes; after it, state.db is the new file,
// whole (synced before the rename) and holding what the old one did. Raft
// holds the entries above its applied index (TestIndexCompactionCrash).

// compactSuffix names the file a compaction writes.
const compactSuffix = ".compact"

// compactMaxRecorded bounds the memory the transactions recorded while
// a compaction copies may hold (as memTable.indexBytes estimates it).
var compactMaxRecorded = 128 << 20

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
	caller   <-chan struct{} // CompactIndex's stop
	stop     chan struct{}   // closed to make it give up
	why      string          // set before stop is closed
	stopOnce sync.Once
	done     chan struct{} // closed once it no longer holds writeMu

	// recording is set, under writeMu, while the run copies: flushes
	// record what they commit (record).
	recording atomic.Bool
	mu        sync.Mutex
	recorded  []func(tx *bolt.Tx) error
	size      int // what recorded holds, estimated
}

// recordingCompaction returns the compaction that records what writers
// commit, nil if none does. Writers call it holding writeMu.
func (f *Engine) recordingCompaction() *compactRun {
	if r := f.compaction.Load(); r != nil && r.recording.Load() {
		return r
	}
	return nil
}

// record keeps write, which a writer has just committed to the file and
// which holds about size bytes, to write it to the copy.
func (r *compactRun) record(size int, write func(tx *bolt.Tx) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recorded = append(r.recorded, write)
	r.size += size
}

// takeRecorded returns the transactions recorded so far, oldest first,
// and forgets them.
func (r *compactRun) takeRecorded() []func(tx *bolt.Tx) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.recorded
	r.recorded, r.size = nil, 0
	return out
}

// recordedSize is what the recorded transactions hold, estimated.
func (r *compactRun) recordedSize() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.size
}

func (r *compactRun) abort(why string) {
	r.stopOnce.Do(func() {
		r.why = why
		close(r.stop)
	})
}

// IndexCompaction is what CompactIndex did: the index file's size before
// and after (After is 0 if it did not compact), how long it took, and how
// long of that it held the flusher for the swap.
type IndexCompaction struct {
	Before, After int64
	Took, Held    time.Duration
}

// CompactIndex copies the index into a packed file that replaces it if a
// quarter of its file, and at least compactMinUnused bytes, are unused
// (force: whatever is unused). It gives up, with an error and the old file
// in place, when stop is closed or for the reasons above. It runs on the
// caller's goroutine; one compaction runs at a time (a second call returns
// at once, compacting nothing).
func (f *Engine) CompactIndex(stop <-chan struct{}, force bool, rate int64) (IndexCompaction, error) {
	run := &compactRun{caller: stop, stop: make(chan struct{}), done: make(chan struct{})}
	if !f.compaction.CompareAndSwap(nil, run) {
		return IndexCompaction{}, nil
	}
	defer run.finish(f)
	start := time.Now()
	res, old, err := f.compactIndex(run, force, rate)
	run.finish(f)
	res.Took = time.Since(start)
	switch {
	case errors.Is(err, errCompactionStopped):
		f.logger.Info("raftlog: index compaction stopped; the old file stays", "shard", f.shard, "after", res.Took.Round(time.Millisecond), "err", err)
	case err != nil:
		f.logger.Error("raftlog: compacting the state index failed; the old file stays", "shard", f.shard, "err", err)
	case res.After > 0:
		f.logger.Info("raftlog: compacted the state index", "shard", f.shard, "bytes_before", res.Before, "bytes_after", res.After,
			"took", res.Took.Round(time.Millisecond), "flusher_held", res.Held.Round(time.Millisecond))
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

// lockWrites takes writeMu for a writer other than the flusher, whose
// transactions a compaction does not record: a compaction in progress
// gives up (it checks under writeMu before it puts its copy in place).
func (f *Engine) lockWrites() {
	f.writersWaiting.Add(1)
	f.writeMu <- struct{}{}
	f.writersWaiting.Add(-1)
	f.abortCompaction("another writer changed the file")
}

func (f *Engine) unlockWrites() { <-f.writeMu }

// stopped returns an error wrapping errCompactionStopped, which says
// why, if the run must give up.
func (r *compactRun) stopped(f *Engine) error {
	why := ""
	select {
	case <-r.stop:
		why = r.why
	case <-r.caller:
		why = "asked to stop"
	case <-f.flushStop:
		why = "the engine is closing"
	default:
		switch {
		case f.writersWaiting.Load() > 0:
			why = "another writer waits for the file"
		case r.recordedSize() > compactMaxRecorded:
			why = "appends outpace the copy: too much recorded"
		case f.FlushError() != nil:
			why = "flushes fail (the copy may take the space they need)"
		}
	}
	if why == "" {
		return nil
	}
	return fmt.Errorf("%w: %s", errCompactionStopped, why)
}

// compactIndex does the work of CompactIndex; old is the replaced file,
// for the caller to close, nil if none was.
func (f *Engine) compactIndex(run *compactRun, force bool, rate int64) (res IndexCompaction, old *bolt.DB, err error) {
	if res.Before, err = f.indexUnused(force); err != nil || res.Before == 0 {
		return res, nil, err
	}
	tmp := f.path + compactSuffix
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, nil, err
	}
	dst, err := bolt.Open(tmp, 0o600, BoltOptions())
	if err != nil {
		return res, nil, fmt.Errorf("create the copy: %w", err)
	}
	// Synced once, before it is put in place; and grown in small steps,
	// so that it ends near the size of what it holds.
	allocSize := dst.AllocSize
	dst.NoSync, dst.AllocSize = true, 1<<20
	installed := false
	defer func() {
		if !installed {
			dst.Close()
			os.Remove(tmp)
		}
	}()

	// 1. The snapshot, and recording from it on.
	if err := f.lockWritesFor(run); err != nil {
		return res, nil, err
	}
	src := f.db.Load()
	var snap *bolt.Tx
	err = f.guard("compact", func() (err error) {
		snap, err = src.Begin(false)
		return err
	})
	if err == nil {
		run.recording.Store(true)
	}
	<-f.writeMu
	if err != nil {
		return res, nil, err
	}
	defer run.recording.Store(false)

	// 2. The copy, then the transactions committed meanwhile.
	if err := f.swapStep("snapshot", dst); err != nil {
		snap.Rollback()
		return res, nil, err
	}
	err = f.guard("compact", func() error {
		defer snap.Rollback()
		c := &indexCopier{dst: dst, stopped: func() error { return run.stopped(f) }}
		if rate > 0 {
			c.lim = &scrubLimiter{rate: rate, start: time.Now(), stop: run.stop}
		}
		return c.copy(snap)
	})
	if err != nil {
		return res, nil, err
	}
	for {
		if err := run.stopped(f); err != nil {
			return res, nil, err
		}
		if run.recordedSize() <= f.flushAtRecords*96 {
			break // about a table or less: written under writeMu
		}
		if err := f.writeRecorded(dst, run.takeRecorded()); err != nil {
			return res, nil, err
		}
	}
	if err := dst.Sync(); err != nil { // most of it, before the flusher waits
		return res, nil, err
	}

	// 3. The rest, and the swap.
	if err := f.lockWritesFor(run); err != nil {
		return res, nil, err
	}
	locked, held := true, time.Now()
	defer func() {
		if locked {
			<-f.writeMu
		}
	}()
	if err := f.writeRecorded(dst, run.takeRecorded()); err != nil {
		return res, nil, err
	}
	run.recording.Store(false)
	if err := f.sameApplied(src, dst); err != nil {
		return res, nil, err
	}
	dst.NoSync = false
	if err := dst.Sync(); err != nil {
		return res, nil, err
	}
	if err := f.swapStep("copied", dst); err != nil {
		return res, nil, err
	}
	if err := run.stopped(f); err != nil {
		return res, nil, err
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return res, nil, fmt.Errorf("put the copy in place: %w", err)
	}
	// Committed: state.db is the copy, which holds what the old file does.
	installed = true
	dirErr := f.swapStep("renamed", dst)
	if dirErr == nil {
		dirErr = SyncDir(f.dir)
	}
	if dirErr != nil {
		dirErr = fmt.Errorf("sync the directory after putting the copy in place: %w", dirErr)
	}
	dst.AllocSize = allocSize
	f.swapMu.Lock()
	f.db.Store(dst)
	f.swapMu.Unlock()
	dirErr = errors.Join(dirErr, f.swapStep("swapped", dst))
	<-f.writeMu
	locked, res.Held = false, time.Since(held)
	if fi, err := os.Stat(f.path); err == nil {
		res.After = fi.Size()
	}
	return res, src, dirErr
}

// sameApplied checks that the copy covers the raft index the file does:
// a cheap guard against a flush the recording missed.
func (f *Engine) sameApplied(src, dst *bolt.DB) error {
	var a [2]uint64
	for i, db := range []*bolt.DB{src, dst} {
		err := f.guard("compact", func() error {
			return db.View(func(tx *bolt.Tx) (err error) {
				a[i], err = fileApplied(tx)
				return err
			})
		})
		if err != nil {
			return err
		}
	}
	if a[0] != a[1] {
		return fmt.Errorf("the copy covers raft index %d, the file %d", a[1], a[0])
	}
	return nil
}

// lockWritesFor takes writeMu for run, unless it must give up first.
func (f *Engine) lockWritesFor(run *compactRun) error {
	select {
	case f.writeMu <- struct{}{}:
	case <-run.stop:
		return run.stopped(f)
	case <-run.caller:
		return run.stopped(f)
	case <-f.flushStop:
		return run.stopped(f)
	}
	if err := run.stopped(f); err != nil {
		<-f.writeMu
		return err
	}
	return nil
}

// writeRecorded writes recorded transactions to the copy, in one
// transaction.
func (f *Engine) writeRecorded(dst *bolt.DB, writes []func(tx *bolt.Tx) error) error {
	if len(writes) == 0 {
		return nil
	}
	return f.guard("compact", func() error {
		return dst.Update(func(tx *bolt.Tx) error {
			for _, w := range writes {
				if err := w(tx); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// swapStep runs the test hook beforeSwap, if set, at a step of the
// compaction, with the copy: "snapshot" (recording, writeMu free),
// "copied", "renamed" and "swapped" (writeMu held).
func (f *Engine) swapStep(step string, copy *bolt.DB) error {
	if f.beforeSwap == nil {
		return nil
	}
	return f.beforeSwap(step, copy)
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

// copy copies every bucket, key and value of snap into c.dst, which is
// empty, checking c.stopped every compactCheckEvery keys.
func (c *indexCopier) copy(snap *bolt.Tx) error {
	var err error
	if c.tx, err = c.dst.Begin(true); err != nil {
		return err
	}
	err = snap.ForEach(func(name []byte, b *bolt.Bucket) error {
		if err := c.create(nil, name, b.Sequence()); err != nil {
			return err
		}
		return c.copyBucket([][]byte{name}, b)
	})
	if err != nil {
		c.tx.Rollback()
		return err
	}
	return c.tx.Commit()
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
	lim     *scrubLimiter // paces the keys and values put (nil: no bound)
	paced   int           // bytes put since the last wait

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
// commit: they are in the snapshot's read transaction, open throughout.
func (c *indexCopier) put(path [][]byte, k, v []byte) error {
	if c.size+len(k)+len(v) > compactTxBytes {
		if err := c.tx.Commit(); err != nil {
			return err
		}
		// Written back a transaction at a time, not all at the end: one
		// large sync would hold up the raft log's.
		if err := c.dst.Sync(); err != nil {
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
	c.paced += len(k) + len(v)
	if c.n++; c.n%compactCheckEvery != 0 {
		return nil
	}
	if c.lim != nil {
		c.lim.wait(c.paced) // stopped says whether it ended early
		c.paced = 0
	}
	return c.stopped()
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
