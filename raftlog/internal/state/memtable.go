package state

import (
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/esraft/esraft/raftlog/internal/cgroup"
	"github.com/esraft/esraft/raftlog/internal/core"
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

	start   []uint64               // per hosted partition: the offset of recs[slot][0]
	recs    [][][]byte             // per hosted partition: stored records, in offset order
	keys    []map[string]*memKey   // per hosted partition: the key runs held here
	ids     map[uuid.UUID]IDEntry  // runs of record IDs by head (idrun.go)
	buckets map[uuid.UUID]headList // the heads of ids by bucket (idrun.go)
	idLog   []memIDList            // retention entries: the heads appended, by time
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
	// retDirty: the retention rules changed in this table; retAt is their
	// stored form as of the table's last index, set by freeze.
	retDirty bool
	retAt    []byte

	n     int // records held
	bytes int
	// raftBytes is Engine.raftBytes as of last (set when frozen).
	raftBytes uint64
	arena     arena // what the FSM goroutine allocates stored records and ID lists from
}

// alloc returns n bytes of the table's arena, capacity n. The FSM goroutine
// alone calls it, on the active table.
func (m *memTable) alloc(n int) []byte { return m.arena.alloc(n) }

// arena hands out byte slices carved from large chunks: one allocation
// per many records or index values instead of one or more each.
type arena struct{ free []byte }

// arenaChunk is the size of an arena's chunks.
const arenaChunk = 64 << 10

// alloc returns n bytes, capacity n.
func (a *arena) alloc(n int) []byte {
	if n > cap(a.free)-len(a.free) {
		a.free = make([]byte, 0, max(arenaChunk, n))
	}
	l := len(a.free)
	a.free = a.free[:l+n]
	return a.free[l : l+n : l+n]
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
	m.ids = make(map[uuid.UUID]IDEntry, size/16) // runs: usually one per append of several records
	m.buckets = make(map[uuid.UUID]headList, size/16)
	return m
}

// indexPart returns a table that holds what putTable writes of m, without
// its records: what a compaction keeps of a table flushed while it copies
// the file, to write it again to the copy (compact.go). The record IDs and
// retention keys are copied out of m's arena, which holds the records.
func (m *memTable) indexPart() *memTable {
	c := &memTable{
		base: m.base, last: m.last, lastTime: m.lastTime, n: m.n,
		keys: m.keys, ids: m.ids, metaAt: m.metaAt, groupsAt: m.groupsAt, clusterID: m.clusterID, retAt: m.retAt,
		start: make([]uint64, len(m.start)), recs: make([][][]byte, len(m.recs)),
	}
	for slot := range c.start {
		c.start[slot] = m.end(slot) // no records: end stays m's
	}
	size := 0
	for _, l := range m.idLog {
		size += len(l.key) + len(l.ids)
	}
	buf := make([]byte, 0, size)
	c.idLog = make([]memIDList, len(m.idLog))
	for i, l := range m.idLog {
		at := len(buf)
		buf = append(buf, l.key...)
		c.idLog[i].key = buf[at:len(buf):len(buf)]
		at = len(buf)
		buf = append(buf, l.ids...)
		c.idLog[i].ids = buf[at:len(buf):len(buf)]
	}
	return c
}

// indexBytes estimates the memory indexPart's table holds: per record its
// key offset, per run of IDs its map entry, per request its retention key
// and the run's head in it (144 bytes for an append of one record, as
// before runs).
func (m *memTable) indexBytes() int { return m.n*8 + len(m.ids)*96 + len(m.idLog)*40 }

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
// and applies are held up only when flushes cannot keep pace (or fail:
// then appends are refused, see Full). It returns the error of
// waitFlushed if that gave up, and freezes nothing then.
func (f *Engine) freeze(failFast bool) error {
	if f.mem.last == f.mem.base {
		return nil // nothing applied since the last freeze
	}
	if err := f.waitFlushed(failFast); err != nil {
		return err
	}
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
	m.raftBytes = f.raftBytes
	if m.retDirty {
		m.retAt = f.encodeRetention(f.ret)
	}
	f.mu.Lock()
	f.frozen = m
	f.mem = newMemTable(f.nextOffsets(), f.frozen.last, f.frozen.lastTime, f.flushAtRecords)
	f.mu.Unlock()
	select {
	case f.flushKick <- struct{}{}:
	default: // the flusher has a wake-up pending already
	}
	return nil
}

// Why waitFlushed gave up.
var (
	errHalted      = errors.New("raftlog: the shard is closing")
	errFlusherGone = errors.New("raftlog: the state flusher stopped")
)

// waitFlushed waits until no frozen table is left. It gives up with an
// error when the flusher stops; with failFast, as soon as a flush fails
// (an error wrapping core.ErrDiskFull), else when the shard halts (Halt:
// a wait that only a flush ends must not hold up raft's shutdown).
func (f *Engine) waitFlushed(failFast bool) error {
	halted := f.halted
	if failFast {
		halted = nil // the wait ends with the flush attempt in progress
	}
	for {
		ch := f.flushed.Wait() // before the check, so no notify is missed
		f.mu.RLock()
		done := f.frozen == nil
		f.mu.RUnlock()
		if done {
			return nil
		}
		if err := f.FlushError(); err != nil && failFast {
			return fmt.Errorf("%w: %w", core.ErrDiskFull, err)
		}
		select {
		case <-ch:
		case <-halted:
			return errHalted
		case <-f.flushDone:
			return errFlusherGone
		}
	}
}

// waitCovered waits until the state files cover raft index index, which
// a table frozen earlier holds (so at most the one frozen now): once no
// table is frozen, or the frozen one starts above index. It runs off the
// FSM goroutine (a snapshot's Persist) and gives up, with an error, when a
// flush fails, the shard halts or the flusher stops.
func (f *Engine) waitCovered(index uint64) error {
	for {
		ch := f.flushed.Wait() // before the check, so no notify is missed
		f.mu.RLock()
		done := f.frozen == nil || f.frozen.base >= index
		f.mu.RUnlock()
		if done {
			return nil
		}
		if err := f.FlushError(); err != nil {
			return fmt.Errorf("%w: %w", core.ErrDiskFull, err)
		}
		select {
		case <-ch:
		case <-f.halted:
			return errHalted
		case <-f.flushDone:
			return errFlusherGone
		}
	}
}

// flush makes the state files cover everything applied: it freezes the
// active table and waits for the flusher to write it (see waitFlushed for
// when it gives up).
func (f *Engine) flush(failFast bool) error {
	if err := f.freeze(failFast); err != nil {
		return err
	}
	return f.waitFlushed(failFast)
}

// Full returns an error wrapping core.ErrDiskFull while flushes fail and
// the active table is as large as it may grow (it cannot be frozen while
// the previous table waits): appends are refused before they are
// proposed, so memory stays bounded. It returns nil again once a flush
// succeeds, and the next apply freezes the table.
func (f *Engine) Full() error {
	err := f.FlushError()
	if err == nil {
		return nil
	}
	f.mu.RLock()
	full := f.frozen != nil && (f.mem.n >= f.flushAtRecords || f.mem.bytes >= f.flushAtBytes)
	f.mu.RUnlock()
	if !full {
		return nil
	}
	return fmt.Errorf("%w: shard %d cannot write its state (%v); appends resume when it can", core.ErrDiskFull, f.shard, err)
}
