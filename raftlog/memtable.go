package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// The in-memory table.
//
// Applies go to memory; the state file (bbolt) receives them in large
// fsynced transactions. The raft log, fsynced before any entry is
// committed, is the write-ahead log in between: the state file records the
// raft index it covers, raft is never allowed to compact past it (Snapshot
// flushes first), and after a crash raft hands the entries above it back
// to the FSM, which re-applies them into a new table. A B-tree commit with
// its fsyncs is thereby paid once per thousands of records instead of once
// per raft entry (see DESIGN.md, "Performance").

// A flush happens when the table holds this many records or bytes, and at
// every snapshot.
const (
	flushRecords = 8192
	flushBytes   = 16 << 20
)

// memTable holds applied state not yet in the state file. The FSM
// goroutine is its only writer and takes fsm.mu to change it; readers hold
// fsm.mu shared.
type memTable struct {
	start []uint64             // per hosted partition: the offset of recs[slot][0]
	recs  [][][]byte           // per hosted partition: stored records, in offset order
	keys  []map[string]*memKey // per hosted partition: the key runs held here
	ids   map[uuid.UUID]idEntry
	idLog []memIDList // retention entries
	// metaDirty[slot] names the keys whose fsm.meta changed since the last
	// flush.
	metaDirty []map[string]struct{}
	// groupsDirty names the consumer groups changed since the last flush.
	groupsDirty map[string]struct{}
	n           int // records held
	bytes       int
}

// memKey is a key's records held in the table: sequences first.. in order.
type memKey struct {
	first   uint64
	offsets []uint64
}

func (k *memKey) last() uint64 { return k.first + uint64(len(k.offsets)) - 1 }

type memIDList struct{ key, ids []byte }

// reset empties the table; next[i] is partition slot i's next offset.
func (m *memTable) reset(next []uint64) {
	m.start = slices.Clone(next)
	m.recs = make([][][]byte, len(next))
	m.keys = make([]map[string]*memKey, len(next))
	for i := range m.keys {
		m.keys[i] = map[string]*memKey{}
	}
	m.metaDirty = make([]map[string]struct{}, len(next))
	for i := range m.metaDirty {
		m.metaDirty[i] = map[string]struct{}{}
	}
	m.groupsDirty = map[string]struct{}{}
	m.ids = map[uuid.UUID]idEntry{}
	m.idLog = nil
	m.n, m.bytes = 0, 0
}

func (f *fsm) nextOffsets() []uint64 {
	next := make([]uint64, len(f.next))
	for i := range next {
		next[i] = f.next[i].Load()
	}
	return next
}

// flush writes the table to the state file in one fsynced transaction,
// with the applied index and time, prunes expired record IDs, and empties
// the table. It runs on the FSM goroutine. Readers meanwhile still find
// every record: they read the file only below the table's start offsets.
func (f *fsm) flush() {
	m := &f.mem
	tx, err := f.db.Begin(true)
	if err != nil {
		panic(fmt.Sprintf("raftlog: group %d: begin flush: %v", f.group, err))
	}
	var errs []error
	put := func(b *bolt.Bucket, k, v []byte) { errs = append(errs, b.Put(k, v)) }
	for slot, p := range f.partitions {
		pb := tx.Bucket(partitionBucketName(p))
		recs, keys := pb.Bucket(bucketRecs), pb.Bucket(bucketKeys)
		recs.FillPercent = 1 // offsets only grow
		meta := f.meta[slot]
		for i, v := range m.recs[slot] {
			if len(meta) > 0 && f.hiddenLocked(meta, v) {
				continue // truncated before it reached the file
			}
			put(recs, be64(m.start[slot]+uint64(i)), v)
		}
		names := make([]string, 0, len(m.keys[slot]))
		for k := range m.keys[slot] {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			mk := m.keys[slot][k]
			for j, off := range mk.offsets {
				put(keys, keyIndexKey(nil, k, mk.first+uint64(j)), be64(off))
			}
		}
		errs = append(errs, f.flushKeyMeta(pb, slot))
		// The next offset, stored because erasure can empty the partition's end.
		put(pb, keyNextOffset, be64(m.start[slot]+uint64(len(m.recs[slot]))))
	}
	ids, idTime := tx.Bucket(bucketIDs), tx.Bucket(bucketIDTime)
	order := make([]uuid.UUID, 0, len(m.ids))
	for id := range m.ids {
		order = append(order, id)
	}
	slices.SortFunc(order, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range order {
		put(ids, id[:], encodeIDEntry(nil, m.ids[id]))
	}
	for _, l := range m.idLog {
		put(idTime, l.key, l.ids)
	}
	errs = append(errs, f.pruneIDs(ids, idTime, f.lastTime, 2*m.n+1024))
	errs = append(errs, f.flushGroups(tx))
	meta := tx.Bucket(bucketMeta)
	put(meta, metaApplied, be64(f.applied.Load()))
	put(meta, metaTime, be64(uint64(f.lastTime)))
	if err := errors.Join(errs...); err != nil {
		tx.Rollback()
		panic(fmt.Sprintf("raftlog: group %d: flush: %v", f.group, err))
	}
	if err := tx.Commit(); err != nil {
		// The table cannot be kept without a way to make it durable; the
		// raft log still holds its entries, and a restart re-applies them.
		panic(fmt.Sprintf("raftlog: group %d: commit flush: %v", f.group, err))
	}
	f.mu.Lock()
	m.reset(f.nextOffsets())
	f.mu.Unlock()
}

// pruneIDs deletes record IDs that expired before the retention window
// ending at t, a whole append at a time, until about limit IDs are gone.
// An ID appended again after it expired has a newer entry, which stays.
func (f *fsm) pruneIDs(ids, idTime *bolt.Bucket, t int64, limit int) error {
	if f.retention <= 0 {
		return nil
	}
	cutoff := t - f.retention
	var doomed [][]byte
	var errs []error
	n := 0
	c := idTime.Cursor()
	for k, v := c.First(); k != nil && n < limit; k, v = c.Next() {
		at := int64(binary.BigEndian.Uint64(k[:8]))
		if at >= cutoff {
			break
		}
		doomed = append(doomed, slices.Clone(k))
		for id := v; len(id) >= 16; id = id[16:] {
			if cur := ids.Get(id[:16]); cur != nil {
				if e, err := decodeIDEntry(cur); err == nil && e.Time == at {
					errs = append(errs, ids.Delete(id[:16]))
				}
			}
			n++
		}
	}
	for _, k := range doomed {
		errs = append(errs, idTime.Delete(k))
	}
	return errors.Join(errs...)
}

// hiddenLocked reports whether the stored record v lies below its key's
// floor in meta (one partition's key metadata).
func (f *fsm) hiddenLocked(meta map[string]*keyMeta, v []byte) bool {
	key, seq, err := storedKeySeq(v)
	if err != nil {
		panic(fmt.Sprintf("raftlog: group %d: stored record: %v", f.group, err))
	}
	km := meta[string(key)]
	return km != nil && seq < km.floor
}

// flushKeyMeta writes the changed key metadata of partition slot into its
// bucket pb and erases the records the file still holds below each changed
// key's floor. The key index keeps its entries (a key's last one is its
// sequence); reads never look below the floor.
func (f *fsm) flushKeyMeta(pb *bolt.Bucket, slot int) error {
	dirty := f.mem.metaDirty[slot]
	if len(dirty) == 0 {
		return nil
	}
	names := make([]string, 0, len(dirty))
	for k := range dirty {
		names = append(names, k)
	}
	sort.Strings(names)
	metaB, err := pb.CreateBucketIfNotExists(bucketKeyMeta)
	if err != nil {
		return err
	}
	recs, keys := pb.Bucket(bucketRecs), pb.Bucket(bucketKeys)
	var errs []error
	for _, k := range names {
		km := f.meta[slot][k]
		if km.floor > km.erased {
			prefix := appendString(nil, k)
			c := keys.Cursor()
			for ik, iv := c.Seek(keyIndexKey(nil, k, max(km.erased, 1))); ik != nil && bytes.HasPrefix(ik, prefix) && len(ik) == len(prefix)+8; ik, iv = c.Next() {
				if binary.BigEndian.Uint64(ik[len(prefix):]) >= km.floor {
					break
				}
				errs = append(errs, recs.Delete(iv))
			}
			f.mu.Lock()
			km.erased = km.floor
			f.mu.Unlock()
		}
		errs = append(errs, metaB.Put([]byte(k), encodeKeyMeta(nil, *km)))
	}
	return errors.Join(errs...)
}
