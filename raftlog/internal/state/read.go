package state

import (
	"errors"
	"fmt"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// layers is the state as a reader sees it: the active table, then the
// frozen one (if any), then the state file as a read transaction sees it,
// which holds everything below the oldest table.
type layers struct {
	f      *Engine
	tx     *bolt.Tx
	frozen *memTable
	active *memTable

	// Looked up on first use: the file's ID bucket and its greatest ID
	// (new IDs are time-ordered UUIDs, mostly above it, which saves a
	// B-tree search each), and the partitions' key buckets.
	ids     *bolt.Bucket
	maxID   []byte
	keyBkts []*bolt.Bucket
}

// oldest is the lowest table: the file holds every record below its start
// offsets.
func (v *layers) oldest() *memTable {
	if v.frozen != nil {
		return v.frozen
	}
	return v.active
}

// tables are the tables from the oldest.
func (v *layers) tables() []*memTable {
	if v.frozen != nil {
		return []*memTable{v.frozen, v.active}
	}
	return []*memTable{v.active}
}

// beginRead opens a read transaction of the state file and read-locks the
// tables (the caller unlocks mu and rolls tx back). It retries until the
// two agree: a flush that ends between the two steps has dropped a table
// whose records the transaction does not see. The transaction is opened
// before mu is taken: see the lock order in memtable.go.
func (f *Engine) beginRead() (layers, error) {
	for {
		tx, err := f.beginIndex()
		if err != nil {
			return layers{}, err
		}
		f.mu.RLock()
		v := layers{f: f, tx: tx, frozen: f.frozen, active: f.mem}
		applied, err := fileApplied(tx)
		if err != nil {
			f.mu.RUnlock()
			tx.Rollback()
			return layers{}, indexError(f.path, err)
		}
		if applied >= v.oldest().base {
			return v, nil
		}
		f.mu.RUnlock()
		tx.Rollback()
	}
}

// beginIndex opens a read transaction of the index file. An index
// compaction swaps the file without dbMu (compact.go), under swapMu: a
// transaction begun before finishes on the old file, which is closed
// once every such transaction ended, and none begins on it after.
func (f *Engine) beginIndex() (*bolt.Tx, error) {
	f.swapMu.RLock()
	defer f.swapMu.RUnlock()
	return f.db.Load().Begin(false)
}

// fileApplied is the applied index stored in the index file.
func fileApplied(tx *bolt.Tx) (uint64, error) {
	return getUint64(tx.Bucket(bucketMeta), metaApplied)
}

// readView runs fn on a consistent view of the state, tables read-locked.
// Damage found (an error wrapping core.ErrCorrupt, or a panic of bbolt on
// a damaged page) marks the engine damaged.
func (f *Engine) readView(fn func(v *layers) error) error {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	return f.indexDamage(f.guard("read", func() error {
		v, err := f.beginRead()
		if err != nil {
			return err
		}
		defer v.tx.Rollback()
		defer f.mu.RUnlock()
		return fn(&v)
	}))
}

// Read returns records of partition p from offset from: those flushed to
// the state file, then those in the tables, oldest first.
func (f *Engine) Read(p core.Partition, from uint64, maxRecs, maxBytes int) ([]core.Record, error) {
	c := collector{p: p, maxRecs: maxRecs, maxBytes: maxBytes}
	err := f.readView(func(v *layers) error {
		slot, _ := f.slot(p)
		c.meta = f.meta[slot]
		c.ret = v.retention(p, slot)
		if c.ret != nil {
			from = max(from, c.ret.r.parts[slot].Low)
		}
		start := v.oldest().start[slot]
		if from < start {
			more := true
			err := f.scanSegments(v.tx, p, from, start, func(off uint64, rec []byte) (bool, error) {
				var err error
				more, err = c.take(rec, off)
				return more, err
			})
			if !more || err != nil {
				return err
			}
		}
		for _, m := range v.tables() {
			for off := max(from, m.start[slot]); off < m.end(slot); off++ {
				if more, err := c.take(m.recs[slot][off-m.start[slot]], off); !more || err != nil {
					return err
				}
			}
		}
		return nil
	})
	return c.out, err
}

// collector gathers decoded records of partition p within read bounds: at
// least one, at most maxRecs, and no more than maxBytes after the first.
type collector struct {
	p                 core.Partition
	maxRecs, maxBytes int
	meta              map[string]*keyMeta // the partition's; records below a key's floor are skipped
	ret               *retentionView      // nil if no retention rule hides anything
	size              int
	out               []core.Record
}

// take adds the stored record v at offset off; false means a bound is met.
func (c *collector) take(v []byte, off uint64) (bool, error) {
	if c.full() || (len(c.out) > 0 && c.size+len(v) > c.maxBytes) {
		return false, nil
	}
	if isTombstone(v) {
		return true, nil // erased
	}
	if len(c.meta) > 0 {
		key, seq, err := storedKeySeq(v)
		if err != nil {
			return false, fmt.Errorf("raftlog: partition %d offset %d: %w", c.p, off, err)
		}
		if km := c.meta[string(key)]; km != nil && seq < km.floor {
			return true, nil
		}
	}
	if c.ret != nil {
		hidden, err := c.ret.hides(v, off)
		if err != nil {
			return false, fmt.Errorf("raftlog: partition %d offset %d: %w", c.p, off, err)
		}
		if hidden {
			return true, nil
		}
	}
	rec, err := decodeRecord(v, c.p, off)
	if err != nil {
		return false, fmt.Errorf("raftlog: partition %d offset %d: %w", c.p, off, err)
	}
	c.size += len(v)
	c.out = append(c.out, rec)
	return !c.full(), nil // no frame is read past what is asked for
}

func (c *collector) full() bool { return len(c.out) >= c.maxRecs }

// ReadKey returns records of key in partition p from key sequence from:
// those indexed in the state file below the first sequence a table holds,
// then the key's runs in the tables, oldest first.
func (f *Engine) ReadKey(p core.Partition, key string, from uint64, maxRecs, maxBytes int) ([]core.Record, error) {
	c := collector{p: p, maxRecs: maxRecs, maxBytes: maxBytes}
	err := f.readView(func(v *layers) error {
		slot, _ := f.slot(p)
		if km := f.meta[slot][key]; km != nil {
			from = max(from, km.floor)
		}
		if c.ret = v.retention(p, slot); c.ret != nil {
			if rule, ok := c.ret.r.rule(slot, key); ok {
				head, err := v.keyHead(p, slot, key)
				if err != nil {
					return err
				}
				from = max(from, rule.firstSeq(head))
			}
		}
		low := f.ret.parts[slot].Low
		take := func(off uint64) (bool, error) {
			if c.full() {
				return false, nil
			}
			if off < low {
				return true, nil // removed (TruncatePartition, a scavenge)
			}
			more, found := true, false
			err := v.record(p, slot, off, func(rec []byte) error {
				found = true
				var err error
				more, err = c.take(rec, off)
				return err
			})
			if err == nil && !found {
				err = indexError(f.path, fmt.Errorf("key %q index names missing offset %d of partition %d", key, off, p))
			}
			return more, err
		}
		var runs []*memKey
		for _, m := range v.tables() {
			if mk := m.keys[slot][key]; mk != nil {
				runs = append(runs, mk)
			}
		}
		memFirst := ^uint64(0)
		if len(runs) > 0 {
			memFirst = runs[0].first
		}
		more := true
		err := eachKeyOffset(v.keysBucket(p, slot), key, from, func(seq, off uint64) (bool, error) {
			if seq >= memFirst {
				return false, nil
			}
			var err error
			more, err = take(off)
			return more, err
		})
		if !more || err != nil {
			return err
		}
		for _, mk := range runs {
			for seq := max(from, mk.first); seq <= mk.last(); seq++ {
				if more, err := take(mk.offsets[seq-mk.first]); !more || err != nil {
					return err
				}
			}
		}
		return nil
	})
	return c.out, err
}

// KeyInfo returns the state of key in partition p.
func (f *Engine) KeyInfo(p core.Partition, key string) (core.KeyInfo, error) {
	info := core.KeyInfo{First: 1}
	err := f.readView(func(v *layers) error {
		slot, _ := f.slot(p)
		if km := f.meta[slot][key]; km != nil {
			info.First, info.Deleted = km.floor, km.deleted
		}
		var err error
		info.Seq, err = v.keyHead(p, slot, key)
		if rule, ok := f.ret.rule(slot, key); ok && err == nil {
			info.First = max(info.First, rule.firstSeq(info.Seq))
		}
		return err
	})
	return info, err
}

// KeySeq returns the current sequence of key in partition p.
func (f *Engine) KeySeq(p core.Partition, key string) (uint64, error) {
	var seq uint64
	err := f.readView(func(v *layers) error {
		slot, _ := f.slot(p)
		var err error
		seq, err = v.keyHead(p, slot, key)
		return err
	})
	return seq, err
}

// LookupID returns where a record ID was appended, if it is held.
func (f *Engine) LookupID(id uuid.UUID) (IDEntry, bool, error) {
	var e IDEntry
	var found bool
	err := f.readView(func(v *layers) error {
		var err error
		e, found, err = v.ID(id)
		return err
	})
	return e, found, err
}

// FlushedIDCount is the number of record IDs in the state file.
func (f *Engine) FlushedIDCount() (int, error) {
	var n int
	err := f.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketIDs).Stats().KeyN
		return nil
	})
	return n, err
}

// view runs fn in a read transaction of the index file alone.
func (f *Engine) view(fn func(tx *bolt.Tx) error) error {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	return f.indexDamage(f.guard("read", func() error { return f.viewLocked(fn) }))
}

// viewLocked runs fn in a read transaction of the index file; dbMu is
// held (shared will do).
func (f *Engine) viewLocked(fn func(tx *bolt.Tx) error) error {
	tx, err := f.beginIndex()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(tx)
}

// indexDamage is noteDamage for an error of a read: a corruption that does
// not name its file yet was found in the index.
func (f *Engine) indexDamage(err error) error {
	var ce *CorruptError
	if errors.Is(err, core.ErrCorrupt) && !errors.As(err, &ce) {
		err = indexError(f.path, err)
	}
	return f.noteDamage(err)
}

// retention returns the judge of partition p's records in this view, nil
// if no rule hides anything.
func (v *layers) retention(p core.Partition, slot int) *retentionView {
	r := v.f.ret
	if r.empty() {
		return nil
	}
	return &retentionView{r: r, slot: slot, now: v.f.appliedTime.Load(), head: func(key string) (uint64, error) {
		return v.keyHead(p, slot, key)
	}}
}
