package state

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"

	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// Batch applies a run of committed entries of the shard's raft log: Begin
// opens it, Append and Group apply one entry each, Applied records that
// raft has handed over an entry (of any type), and End publishes the
// result to readers and waiters. Only raft's FSM goroutine uses a batch.
type Batch struct {
	a         applier
	applied   uint64
	lastTime  int64
	raftBytes uint64
}

// Begin starts a batch. A storage error stops applies (stopApplies): a
// replica that cannot apply what its peers apply must stop rather than
// diverge. ok is false then, and the batch must not be used.
func (f *Engine) Begin() (b Batch, ok bool) {
	if hook := f.beforeApply.Load(); hook != nil {
		(*hook)()
	}
	v, err := f.beginRead()
	if err != nil {
		f.stopApplies(fmt.Errorf("begin apply: %w", err))
		return Batch{}, false
	}
	f.mu.RUnlock() // this goroutine is the active table's only writer; the frozen one is fixed
	b = Batch{
		a:       applier{f: f, v: v, next: make([]uint64, len(f.partitions)), grew: make([]bool, len(f.partitions))},
		applied: f.applied.Load(), lastTime: f.lastTime,
	}
	for i := range b.a.next {
		b.a.next[i] = f.next[i].Load()
	}
	return b, true
}

// Append applies an entry of append requests at raft index index: one
// outcome per request. Time is the entry's leader stamp, made monotonic.
func (b *Batch) Append(e *wire.Entry, index uint64) []core.AppendOutcome {
	b.lastTime = max(b.lastTime, e.Time)
	out := make([]core.AppendOutcome, len(e.Requests))
	for j := range e.Requests {
		out[j] = b.a.append(&e.Requests[j], b.lastTime, index, j)
	}
	return out
}

// Group applies a consumer group operation stamped t.
func (b *Batch) Group(op *wire.GroupOp, t int64) core.GroupOutcome {
	b.lastTime = max(b.lastTime, t)
	return b.a.f.applyGroup(op, b.lastTime)
}

// Applied records that every entry up to index was handed to the batch.
func (b *Batch) Applied(index uint64) { b.applied = index }

// RaftBytes counts n bytes of raft entries applied in the batch (see
// Engine.Flushed).
func (b *Batch) RaftBytes(n int) { b.raftBytes += uint64(n) }

// End publishes the batch: offsets, the applied index, and wake-ups of
// readers waiting for them; it freezes the active table for the flusher
// once the table is large. It returns false if a storage error stopped
// applies (stopApplies): nothing is published then.
func (b *Batch) End() bool {
	f, a := b.a.f, &b.a
	a.v.tx.Rollback()
	if a.err != nil {
		f.stopApplies(fmt.Errorf("apply: %w", a.err))
		return false
	}
	f.lastTime = b.lastTime
	f.raftBytes += b.raftBytes
	f.mem.last, f.mem.lastTime = b.applied, b.lastTime
	for i, grew := range a.grew {
		if grew {
			f.next[i].Store(a.next[i])
		}
	}
	f.appliedTime.Store(b.lastTime)
	f.applied.Store(b.applied)
	for i, grew := range a.grew {
		if grew {
			f.signals[i].Notify()
		}
	}
	f.appSig.Notify()
	if f.mem.n >= f.flushAtRecords || f.mem.bytes >= f.flushAtBytes {
		// While flushes fail this gives up at once and the table stays
		// active, past its bound by the entries in flight: Full refuses
		// new appends until a flush succeeds, and the next apply freezes.
		f.freeze(true)
	}
	return true
}

// applier holds one ApplyBatch's working state. Only the FSM goroutine
// writes the active table, so it reads it without the lock.
type applier struct {
	f       *Engine
	v       layers
	next    []uint64
	grew    []bool
	err     error    // a storage error: applies stop (stopApplies)
	scratch []byte   // a record being encoded
	encoded [][]byte // a request's records, encoded
	runs    [][2]int // the request's runs of IDs (first record, length), set by append
}

// LookupID returns where id was appended, if it is remembered and has not
// expired at time t. Expiry is judged here, from the stored time, so the
// answer never depends on when expired IDs are physically pruned.
func (a *applier) lookupID(id uuid.UUID, t int64) (IDEntry, bool) {
	e, ok, err := a.v.ID(id)
	if !ok {
		a.Fail(err)
		return IDEntry{}, false
	}
	if a.f.retention > 0 && e.Time < t-a.f.retention {
		return IDEntry{}, false
	}
	return e, true
}

// check evaluates the request's key condition against the key's sequence
// head and its metadata km (nil if none).
func check(r *wire.Request, head uint64, km *keyMeta) error {
	deleted := km != nil && km.deleted
	exists := head > 0 && !deleted
	e := &core.KeySeqError{Partition: r.Partition, Key: r.Key, Expected: r.Expected, Actual: head, Deleted: deleted}
	switch {
	case r.Has(wire.ReqExpected):
		if head != r.Expected {
			return e
		}
	case r.Has(wire.ReqExists):
		if !exists {
			e.Condition = core.CondExists
			return e
		}
	case r.Has(wire.ReqAbsent):
		if exists {
			e.Condition = core.CondAbsent
			return e
		}
	}
	if deleted && len(r.Records) > 0 && !r.Has(wire.ReqRecreate) {
		return fmt.Errorf("%w: key %q in partition %d", core.ErrKeyDeleted, r.Key, r.Partition)
	}
	return nil
}

// append applies one request: deduplication by record ID, then the
// key's condition, then the records (or the key operation). Domain errors
// are returned in the outcome; storage errors end the apply.
func (a *applier) append(r *wire.Request, t int64, index uint64, reqNo int) core.AppendOutcome {
	f := a.f
	slot, ok := f.slot(r.Partition)
	if !ok || (len(r.Records) == 0) != r.IsKeyOp() || r.Key == "" || len(r.Key) > core.MaxKeyBytes {
		return core.AppendOutcome{Err: fmt.Errorf("%w: malformed request for partition %d", core.ErrUnknownPartition, r.Partition)}
	}
	pos := core.Position{Shard: f.shard, Index: index}
	// The request's IDs as runs (idrun.go): usually one. Deduplication
	// looks them up; the table keeps them.
	a.runs = a.runs[:0]
	for i := 0; i < len(r.Records); {
		k := runLen(r.Records[i:])
		a.runs = append(a.runs, [2]int{i, k})
		i += k
	}
	if !r.IsKeyOp() {
		if res, done, err := a.dedup(r, slot, t, pos); done {
			return core.AppendOutcome{Result: res, Err: err}
		}
	}
	head, err := a.v.keyHead(r.Partition, slot, r.Key)
	if err != nil {
		a.Fail(err)
		return core.AppendOutcome{Err: err}
	}
	km := f.meta[slot][r.Key]
	if err := check(r, head, km); err != nil {
		return core.AppendOutcome{Err: err}
	}
	if r.IsKeyOp() {
		return a.keyOp(r, slot, head, km, t, pos)
	}
	if km != nil && km.deleted {
		f.mu.Lock()
		f.meta[slot][r.Key] = &keyMeta{floor: km.floor, erased: km.erased}
		f.mem.metaDirty[slot][r.Key] = struct{}{}
		f.mu.Unlock()
	}
	m := f.mem
	first := a.next[slot]
	n := len(r.Records)
	// What the table keeps is carved from its arena (memTable.alloc);
	// readers see it only once it is linked in below, under the lock.
	a.encoded = a.encoded[:0]
	size := 0
	for i := range r.Records {
		var raw []byte
		if r.RawHeaders != nil {
			raw = r.RawHeaders[i]
		}
		a.scratch = encodeRecord(a.scratch[:0], r.Key, head+1+uint64(i), &r.Records[i], raw, t)
		rec := m.alloc(len(a.scratch))
		copy(rec, a.scratch)
		a.encoded = append(a.encoded, rec)
		size += len(rec)
	}
	idList := m.alloc(16 * len(a.runs))[:0]
	for _, run := range a.runs {
		idList = append(idList, r.Records[run[0]].ID[:]...)
	}
	// One retention entry per request: time, raft index, request number in
	// the entry (never anything that depends on how entries were batched).
	tk := binary.BigEndian.AppendUint64(m.alloc(20)[:0], uint64(t))
	tk = binary.BigEndian.AppendUint64(tk, index)
	tk = binary.BigEndian.AppendUint32(tk, uint32(reqNo))

	f.mu.Lock()
	m.recs[slot] = append(m.recs[slot], a.encoded...)
	mk := m.keys[slot][r.Key]
	if mk == nil {
		mk = &memKey{first: head + 1, offsets: make([]uint64, 0, max(n, 4))}
		m.keys[slot][r.Key] = mk
	}
	for i := range r.Records {
		mk.offsets = append(mk.offsets, first+uint64(i))
	}
	for _, run := range a.runs {
		i := uint64(run[0])
		m.addRun(r.Records[i].ID, IDEntry{Partition: r.Partition, Offset: first + i, KeySeq: head + 1 + i, Time: t, Count: uint64(run[1])})
	}
	m.idLog = append(m.idLog, memIDList{key: tk, ids: idList})
	m.n += n
	m.bytes += size
	f.mu.Unlock()

	a.next[slot] = first + uint64(n)
	a.grew[slot] = true
	return core.AppendOutcome{Result: core.AppendResult{
		Partition: r.Partition, FirstOffset: first, FirstKeySeq: head + 1, Count: n,
		Time: time.Unix(0, t).UTC(), Position: pos,
	}}
}

// keyOp applies a delete or truncate of r.Key, whose sequence is head.
func (a *applier) keyOp(r *wire.Request, slot int, head uint64, km *keyMeta, t int64, pos core.Position) core.AppendOutcome {
	f := a.f
	base := keyMeta{floor: 1}
	if km != nil {
		base = *km
	}
	next := base
	if r.Has(wire.ReqDelete) {
		next.deleted = true
		next.floor = head + 1
	} else {
		next.floor = max(next.floor, min(r.Before, head+1))
	}
	if next != base {
		f.mu.Lock()
		f.meta[slot][r.Key] = &next
		f.mem.metaDirty[slot][r.Key] = struct{}{}
		f.mu.Unlock()
	}
	return core.AppendOutcome{Result: core.AppendResult{
		Partition: r.Partition, FirstKeySeq: next.floor,
		Time: time.Unix(0, t).UTC(), Position: pos,
	}}
}

// dedup looks the request's record IDs up. done reports that the request
// is answered: either every ID was committed before, as one run of this
// key in this partition (a retry: the original result), or only some were
// (a conflict).
func (a *applier) dedup(r *wire.Request, slot int, t int64, pos core.Position) (core.AppendResult, bool, error) {
	n := len(r.Records)
	id := func(i int) uuid.UUID { return r.Records[i].ID }
	run := len(a.runs) == 1 // one run: the usual request, one search
	first, ok := a.lookupID(r.Records[0].ID, t)
	if !ok {
		if run && n > 1 {
			cutoff := int64(math.MinInt64)
			if a.f.retention > 0 {
				cutoff = t - a.f.retention
			}
			held, err := a.v.heldIn(id(1), id(n-1), cutoff)
			if err != nil {
				a.Fail(err)
				return core.AppendResult{}, true, err
			}
			if held {
				return core.AppendResult{}, true, fmt.Errorf("%w: records of the run %s..%s were appended before, record 0 was not", core.ErrIDConflict, id(1), id(n-1))
			}
			return core.AppendResult{}, false, nil
		}
		for i := 1; i < n; i++ {
			if _, ok := a.lookupID(r.Records[i].ID, t); ok {
				return core.AppendResult{}, true, fmt.Errorf("%w: record %d (%s) was appended before, record 0 was not", core.ErrIDConflict, i, r.Records[i].ID)
			}
		}
		return core.AppendResult{}, false, nil
	}
	conflict := fmt.Errorf("%w: record 0 (%s) was appended before at partition %d offset %d", core.ErrIDConflict, r.Records[0].ID, first.Partition, first.Offset)
	if first.Partition != r.Partition {
		return core.AppendResult{}, true, conflict
	}
	if off, ok, err := a.v.keyOffset(r.Partition, slot, r.Key, first.KeySeq); err != nil {
		a.Fail(err)
		return core.AppendResult{}, true, err
	} else if !ok || off != first.Offset {
		return core.AppendResult{}, true, conflict
	}
	// A retry of a run held as one run: its records went where the run says.
	for i := 1; i < n && !(run && first.Count >= uint64(n)); i++ {
		e, ok := a.lookupID(r.Records[i].ID, t)
		if !ok || e.Partition != first.Partition || e.Offset != first.Offset+uint64(i) || e.KeySeq != first.KeySeq+uint64(i) {
			return core.AppendResult{}, true, conflict
		}
	}
	return core.AppendResult{
		Partition: r.Partition, FirstOffset: first.Offset, FirstKeySeq: first.KeySeq, Count: len(r.Records),
		Time: time.Unix(0, first.Time).UTC(), Position: pos, Duplicate: true,
	}, true, nil
}

func (a *applier) Fail(err error) {
	if err != nil && a.err == nil {
		a.err = err
	}
}
