package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/cgroup"
	"github.com/esraft/esraft/raftlog/internal/wire"
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
//
// The write to the file runs on a goroutine of its own (the flusher), so
// that applies, and the appends waiting for them, are not held up by it:
// a full table is frozen and written in the background while applies go
// on into a new one. Readers and applies look a record, key or ID up in
// the active table, then the frozen one, then the file.
//
// Locks: dbMu (the file, against Restore swapping it), then a bbolt read
// transaction, then mu (the tables). Nothing that holds mu waits for
// bbolt: a bbolt writer that must remap its file waits for every read
// transaction to end, and a reader blocked in Begin while holding mu
// would stall the FSM goroutine, which holds a read transaction while it
// takes mu to write the active table. The one exception is Restore, which
// closes and reopens the file holding both dbMu and mu: it is safe because
// dbMu, held exclusively, excludes every other holder of a read
// transaction, and ApplyBatch (which takes none of dbMu) runs on the same
// goroutine as Restore.

// A table is frozen and flushed when it holds this many records or bytes,
// and at every snapshot.
const (
	flushRecords = 32768
	flushBytes   = 16 << 20
)

// memTable holds applied state not yet in the state file.
//
// There are at most two: the active table, which applies go to, and a
// frozen one, full and being written to the file by the flusher goroutine
// while applies continue into the active one. A frozen table never changes
// again; the FSM goroutine is the active table's only writer and takes
// fsm.mu to change it (or to swap tables), readers hold fsm.mu shared. A
// table covers the raft indexes (base, last]: a flush stores last as the
// file's applied index, never anything later, so the entries a crash loses
// from memory are exactly the ones above the file's index, which raft
// still holds and replays.
type memTable struct {
	base     uint64 // the applied index of everything older (the file, or the frozen table)
	last     uint64 // the last raft index applied here (fixed once frozen)
	lastTime int64  // the applied time as of last

	start []uint64             // per hosted partition: the offset of recs[slot][0]
	recs  [][][]byte           // per hosted partition: stored records, in offset order
	keys  []map[string]*memKey // per hosted partition: the key runs held here
	ids   map[uuid.UUID]IDEntry
	idLog []memIDList // retention entries
	// metaDirty[slot] names the keys whose fsm.meta changed in this
	// table; groupsDirty the consumer groups changed in it. When the table
	// is frozen, freeze fills metaAt and groupsAt from them: the key
	// metadata and encoded groups as of the table's last index, which the
	// flusher writes (later applies change fsm.meta and fsm.cgroups).
	metaDirty   []map[string]struct{}
	groupsDirty map[string]struct{}
	metaAt      []map[string]*keyMeta
	groupsAt    map[string][]byte
	// clusterID, if not zero, was applied in this table (the cluster ID
	// never changes once set, so the flusher writes it as is).
	clusterID uuid.UUID

	n     int // records held
	bytes int
	arena []byte // the free end of the chunk the FSM goroutine allocates from
}

// arenaChunk is the size of the chunks a table's stored records and ID
// lists are carved from: one allocation per many records instead of
// several per record.
const arenaChunk = 64 << 10

// alloc returns n bytes of the table's arena, capacity n. The FSM goroutine
// alone calls it, on the active table.
func (m *memTable) alloc(n int) []byte {
	if n > cap(m.arena)-len(m.arena) {
		m.arena = make([]byte, 0, max(arenaChunk, n))
	}
	l := len(m.arena)
	m.arena = m.arena[:l+n]
	return m.arena[l : l+n : l+n]
}

// memKey is a key's records held in the table: sequences first.. in order.
type memKey struct {
	first   uint64
	offsets []uint64
}

func (k *memKey) last() uint64 { return k.first + uint64(len(k.offsets)) - 1 }

type memIDList struct{ key, ids []byte }

// newMemTable returns an empty table above the applied index base; next[i]
// is partition slot i's next offset. size is the expected number of
// records, to size its index up front.
func newMemTable(next []uint64, base uint64, lastTime int64, size int) *memTable {
	m := &memTable{base: base, last: base, lastTime: lastTime, start: slices.Clone(next)}
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
	m.ids = make(map[uuid.UUID]IDEntry, size)
	return m
}

// end is the offset after the last record of partition slot held here.
func (m *memTable) end(slot int) uint64 { return m.start[slot] + uint64(len(m.recs[slot])) }

func (f *Engine) nextOffsets() []uint64 {
	next := make([]uint64, len(f.next))
	for i := range next {
		next[i] = f.next[i].Load()
	}
	return next
}

// freeze hands the active table to the flusher and starts a new one. It
// runs on the FSM goroutine, after an apply (or in Snapshot and close) and
// outside any read transaction. If the previous frozen table is still
// being written, it waits for it first: memory stays bounded by two tables,
// and applies are held up only when flushes cannot keep pace.
func (f *Engine) freeze() {
	if f.mem.last == f.mem.base {
		return // nothing applied since the last freeze
	}
	f.waitFlushed()
	m := f.mem
	m.metaAt = make([]map[string]*keyMeta, len(m.metaDirty))
	for slot, dirty := range m.metaDirty {
		m.metaAt[slot] = make(map[string]*keyMeta, len(dirty))
		for k := range dirty {
			m.metaAt[slot][k] = f.meta[slot][k] // never changed once stored
		}
	}
	m.groupsAt = make(map[string][]byte, len(m.groupsDirty))
	for name := range m.groupsDirty {
		if g := f.cgroups[name]; g != nil {
			m.groupsAt[name] = cgroup.Encode(nil, g)
		} else {
			m.groupsAt[name] = nil // deleted
		}
	}
	f.mu.Lock()
	f.frozen = m
	f.mem = newMemTable(f.nextOffsets(), f.frozen.last, f.frozen.lastTime, f.flushAtRecords)
	f.mu.Unlock()
	select {
	case f.flushKick <- struct{}{}:
	default: // the flusher has a wake-up pending already
	}
}

// waitFlushed waits until no frozen table is left.
func (f *Engine) waitFlushed() {
	for {
		ch := f.flushed.Wait() // before the check, so no notify is missed
		f.mu.RLock()
		done := f.frozen == nil
		f.mu.RUnlock()
		if done {
			return
		}
		<-ch
	}
}

// flush makes the state file cover everything applied: it freezes the
// active table and waits for the flusher to write it.
func (f *Engine) flush() {
	f.freeze()
	f.waitFlushed()
}

// runFlusher is the flusher goroutine: it writes each frozen table to the
// state file and then drops it from memory. It is started by openFSM and
// stopped by close (or, in tests, by halt).
func (f *Engine) runFlusher() {
	defer close(f.flushDone)
	for {
		select {
		case <-f.flushKick:
		case <-f.flushStop:
			return
		}
		f.mu.RLock()
		t := f.frozen
		f.mu.RUnlock()
		if t == nil {
			continue
		}
		if f.beforeFlush != nil {
			f.beforeFlush()
		}
		select {
		case <-f.flushStop:
			return // a crash, in tests: the frozen table is lost
		default:
		}
		f.dbMu.RLock() // Restore waits for flushes before it swaps the file
		f.writeTable(t)
		f.mu.Lock()
		if f.frozen == t { // only the FSM goroutine freezes, after waiting for this
			f.frozen = nil
		}
		f.mu.Unlock()
		f.dbMu.RUnlock()
		f.flushed.Notify()
	}
}

// writeTable writes a frozen table to the state file in one fsynced
// transaction, with its applied index and time, and prunes expired record
// IDs. Readers meanwhile still find every record in the table: they read
// the file only below the oldest table's start offsets.
func (f *Engine) writeTable(m *memTable) {
	tx, err := f.db.Begin(true)
	if err != nil {
		f.fatal("begin flush: %v", err)
	}
	var errs []error
	put := func(b *bolt.Bucket, k, v []byte) {
		if err := b.Put(k, v); err != nil {
			errs = append(errs, err)
		}
	}
	// bbolt keeps the values put until the commit: carve them from chunks.
	var arena []byte
	alloc := func(n int) []byte {
		if n > cap(arena)-len(arena) {
			arena = make([]byte, 0, max(256<<10, n))
		}
		l := len(arena)
		arena = arena[:l+n]
		return arena[l : l+n : l+n]
	}
	u64 := func(v uint64) []byte {
		b := alloc(8)
		binary.BigEndian.PutUint64(b, v)
		return b
	}
	for slot, p := range f.partitions {
		pb := tx.Bucket(partitionBucketName(p))
		recs, keys := pb.Bucket(bucketRecs), pb.Bucket(bucketKeys)
		recs.FillPercent = 1 // offsets only grow
		meta := m.metaAt[slot]
		for i, v := range m.recs[slot] {
			if len(meta) > 0 && f.hidden(meta, v) {
				continue // truncated before it reached the file
			}
			put(recs, u64(m.start[slot]+uint64(i)), v)
		}
		names := make([]string, 0, len(m.keys[slot]))
		for k := range m.keys[slot] {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			mk := m.keys[slot][k]
			errs = append(errs, putKeyOffsets(keys, wire.AppendString(alloc(binary.MaxVarintLen64 + len(k))[:0], k), mk.first, mk.offsets, alloc))
		}
		errs = append(errs, flushKeyMeta(pb, meta))
		// The next offset, stored because erasure can empty the partition's end.
		put(pb, keyNextOffset, be64(m.start[slot]+uint64(len(m.recs[slot]))))
	}
	ids, idTime := tx.Bucket(bucketIDs), tx.Bucket(bucketIDTime)
	order := make([]uuid.UUID, 0, len(m.ids))
	for id := range m.ids {
		order = append(order, id)
	}
	slices.SortFunc(order, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	for i := range order {
		put(ids, order[i][:], encodeIDEntry(alloc(4 * binary.MaxVarintLen64)[:0], m.ids[order[i]]))
	}
	// The requests of one raft entry share its time: one retention entry
	// each would be as many B-tree puts as appends, so they are written as
	// one, under the first request's key.
	for i := 0; i < len(m.idLog); {
		j, n := i+1, len(m.idLog[i].ids)
		for j < len(m.idLog) && bytes.Equal(m.idLog[j].key[:16], m.idLog[i].key[:16]) {
			n += len(m.idLog[j].ids)
			j++
		}
		v := m.idLog[i].ids
		if j > i+1 {
			v = alloc(n)[:0]
			for _, l := range m.idLog[i:j] {
				v = append(v, l.ids...)
			}
		}
		put(idTime, m.idLog[i].key, v)
		i = j
	}
	errs = append(errs, f.pruneIDs(ids, idTime, m.lastTime, 2*m.n+1024))
	errs = append(errs, flushGroups(tx, m.groupsAt))
	meta := tx.Bucket(bucketMeta)
	put(meta, metaApplied, be64(m.last))
	put(meta, metaTime, be64(uint64(m.lastTime)))
	if m.clusterID != (uuid.UUID{}) {
		put(meta, metaClusterID, bytes.Clone(m.clusterID[:]))
	}
	if err := errors.Join(errs...); err != nil {
		tx.Rollback()
		f.fatal("flush: %v", err)
	}
	if err := tx.Commit(); err != nil {
		// The table cannot be kept without a way to make it durable; the
		// raft log still holds its entries, and a restart re-applies them.
		f.fatal("commit flush: %v", err)
	}
}

// pruneIDs deletes record IDs that expired before the retention window
// ending at t, a whole append at a time, until about limit IDs are gone.
// An ID appended again after it expired has a newer entry, which stays.
func (f *Engine) pruneIDs(ids, idTime *bolt.Bucket, t int64, limit int) error {
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

// hidden reports whether the stored record v lies below its key's floor
// in meta (key metadata of its partition).
func (f *Engine) hidden(meta map[string]*keyMeta, v []byte) bool {
	key, seq, err := storedKeySeq(v)
	if err != nil {
		f.fatal("stored record: %v", err)
	}
	km := meta[string(key)]
	return km != nil && seq < km.floor
}

// flushKeyMeta writes the key metadata a table changed (meta, as of the
// table's last index) into the partition's bucket pb, and erases the
// records the file still holds below each such key's floor, from where the
// last erasure of the key, as the file records it, stopped. The key index
// keeps its entries (a key's last one is its sequence); reads never look
// below the floor.
func flushKeyMeta(pb *bolt.Bucket, meta map[string]*keyMeta) error {
	if len(meta) == 0 {
		return nil
	}
	names := make([]string, 0, len(meta))
	for k := range meta {
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
		km := *meta[k]
		if old := metaB.Get([]byte(k)); old != nil {
			stored, err := decodeKeyMeta(old)
			if err != nil {
				return fmt.Errorf("key %q: stored metadata: %w", k, err)
			}
			km.erased = max(km.erased, stored.erased)
		}
		if km.floor > km.erased {
			floor := km.floor
			errs = append(errs, eachKeyOffset(keys, k, km.erased, func(seq, off uint64) (bool, error) {
				if seq >= floor {
					return false, nil
				}
				return true, recs.Delete(be64(off))
			}))
			km.erased = km.floor
		}
		errs = append(errs, metaB.Put([]byte(k), encodeKeyMeta(nil, km)))
	}
	return errors.Join(errs...)
}
