package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/internal/backoff"
	"github.com/esraft/esraft/raftlog/internal/core"
	"github.com/esraft/esraft/raftlog/internal/wire"
)

// The flush writes a frozen table in three steps (DESIGN.md, "The state
// files"): (1) its records' frames are appended to the partitions'
// segments, every file written is fdatasynced and the directory of a new
// one fsynced; (2) one bbolt transaction records the new segment lengths
// and positions with the key index, the IDs, key metadata, groups and the
// table's last raft index as applied, and commits; (3) the table is
// dropped. A crash before (2) commits leaves bytes past the lengths the
// index records, which Open truncates away; raft hands back the entries
// above applied and they re-apply into the same frames. A flush that fails
// is retried with backoff (flushRetry), its segments truncated back first.

// appendFill is the bbolt fill of a bucket's pages when a flush only
// appends keys after the last one.
const appendFill = 1.0

// flushRetry is the backoff between attempts of a failing flush.
var flushRetry = backoff.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second}

// runFlusher is the flusher goroutine: it writes each frozen table to the
// state files and then drops it from memory. It is started by Open and
// stopped by Close (or, in tests, by a simulated crash).
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
		for attempt := 1; ; attempt++ {
			select {
			case <-f.flushStop:
				return // a crash, in tests, or Close while flushes fail: the table is lost, raft holds it
			default:
			}
			select { // an index compaction holds it while it snapshots and swaps
			case f.writeMu <- struct{}{}:
			case <-f.flushStop:
				return
			}
			f.dbMu.RLock() // Restore waits for flushes before it swaps the files
			start := time.Now()
			err := f.writeTable(t)
			if err == nil {
				f.metrics.flush.Observe(int64(time.Since(start)))
				f.mu.Lock()
				if f.frozen == t { // only the FSM goroutine freezes, after waiting for this
					f.frozen = nil
				}
				f.mu.Unlock()
				f.flushedRaftBytes.Store(t.raftBytes)
				f.flushedIndex.Store(t.last)
			}
			f.dbMu.RUnlock()
			if err == nil {
				if f.flushErr.Swap(nil) != nil {
					f.logger.Info("raftlog: state flush succeeded again", "shard", f.shard, "attempts", attempt)
				}
				f.dropAfterFlush(t)
				<-f.writeMu
				break
			}
			<-f.writeMu
			if errors.Is(err, core.ErrCorrupt) {
				f.markDamaged(err)
			}
			f.flushErr.Store(&err)
			f.flushed.Notify() // waiters that give up on a failing flush
			d := flushRetry.Delay(attempt)
			f.logger.Error("raftlog: state flush failed; appends fail with ErrDiskFull once the next table is full; retrying",
				"shard", f.shard, "attempt", attempt, "retry_in", d, "err", err)
			select {
			case <-time.After(backoff.Spread(d, 0.2)):
			case <-f.flushStop:
				return
			}
		}
		f.flushed.Notify()
	}
}

// segWrite is what a flush writes to one segment file.
type segWrite struct {
	slot    int
	entry   segEntry // as the index will record it
	name    string
	at      int64 // where buf goes: the length the index records, 0 for a new file
	buf     []byte
	created bool
	pos     []posMark // positions of frames new in this flush
}

type posMark struct {
	frame uint64 // frame index in the segment, a multiple of positionEvery
	pos   uint32
}

// segAppender lays out frames after a partition's last segment, rolling
// to a new segment where the next frame would pass segBytes. The roll
// points depend only on the records in offset order, so replicas'
// segments hold the same bytes.
type segAppender struct {
	f    *Engine
	p    core.Partition
	slot int
	ws   []*segWrite // every segment touched, in order
	w    *segWrite   // the last one
	// hint is the bytes of frames expected: the capacity of new buffers.
	hint int
}

func (f *Engine) newSegAppender(slot int) *segAppender {
	a := &segAppender{f: f, p: f.partitions[slot], slot: slot}
	if cur := f.segs[slot]; cur != nil {
		a.w = &segWrite{slot: slot, entry: *cur, name: f.segPath(a.p, cur.base), at: cur.length}
		a.ws = append(a.ws, a.w)
	}
	return a
}

// newBuf returns an empty buffer for frames, sized by the hint.
func (a *segAppender) newBuf() []byte {
	return make([]byte, 0, min(a.hint, int(a.f.segBytes))+segHeaderLen)
}

// add appends the frame of offset off. t is the record's time.
func (a *segAppender) add(off uint64, payload []byte, t int64) error {
	size := int64(frameHdrLen + len(payload))
	w := a.w
	if w == nil || (w.entry.length+size > a.f.segBytes && w.entry.count > 0) {
		if w != nil {
			w.entry.sealed = true
		}
		hdr := segmentHeader(a.p, off)
		w = &segWrite{slot: a.slot, entry: segEntry{base: off, length: segHeaderLen, crc: crc32c(hdr)},
			name: a.f.segPath(a.p, off), buf: append(a.newBuf(), hdr...), created: true}
		a.ws = append(a.ws, w)
		a.w = w
	}
	if off != w.entry.end() {
		return fmt.Errorf("%w: partition %d: offset %d follows segment %d's end %d", core.ErrCorrupt, a.p, off, w.entry.base, w.entry.end())
	}
	if j := w.entry.count; j%positionEvery == 0 {
		w.pos = append(w.pos, posMark{frame: j, pos: uint32(w.entry.length)})
	}
	if w.buf == nil {
		w.buf = a.newBuf()
	}
	start := len(w.buf)
	w.buf = appendFrame(w.buf, payload)
	w.entry.crc = crc32.Update(w.entry.crc, castagnoli, w.buf[start:])
	w.entry.length += size
	w.entry.count++
	w.entry.newest = max(w.entry.newest, t)
	return nil
}

// planSegments lays the table's records of partition slot out as frames.
func (f *Engine) planSegments(m *memTable, slot int) ([]*segWrite, error) {
	recs := m.recs[slot]
	if len(recs) == 0 {
		return nil, nil
	}
	a := f.newSegAppender(slot)
	for _, rec := range recs {
		a.hint += frameHdrLen + len(rec)
	}
	meta := m.metaAt[slot]
	for i, rec := range recs {
		off := m.start[slot] + uint64(i)
		hidden, err := f.hidden(meta, rec)
		if err != nil {
			return nil, fmt.Errorf("partition %d offset %d: %w", a.p, off, err)
		}
		t, err := storedTime(rec)
		if err == nil {
			if hidden {
				// Truncated before it reached the file: the tombstone
				// that erasure in place would leave (erase.go), so the
				// segment's bytes do not depend on when it was flushed.
				err = a.add(off, make([]byte, len(rec)), t)
			} else {
				err = a.add(off, rec, t)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("partition %d offset %d: %w", a.p, off, err)
		}
	}
	return a.ws, nil
}

// writeSegments is step 1: it writes the planned frames and makes them
// durable. The caller truncates them back on an error (undoSegments).
func (f *Engine) writeSegments(ws []*segWrite) error {
	var written []*segWrite
	dirs := map[string]bool{}
	for _, w := range ws {
		if len(w.buf) == 0 {
			continue
		}
		written = append(written, w)
		fh, err := f.segFile(w.name, w.created)
		if err != nil {
			return fmt.Errorf("open segment: %w", err)
		}
		if w.created {
			dirs[filepath.Dir(w.name)] = true
			if err := fh.Truncate(0); err != nil { // left by a failed attempt
				return fmt.Errorf("segment %s: %w", w.name, err)
			}
		}
		if _, err := fh.WriteAt(w.buf, w.at); err != nil {
			return fmt.Errorf("write segment %s: %w", w.name, err)
		}
	}
	for _, w := range written {
		fh, err := f.segFile(w.name, false)
		if err == nil {
			err = fh.Datasync()
		}
		if err != nil {
			return fmt.Errorf("sync segment %s: %w", w.name, err)
		}
	}
	if len(dirs) > 0 {
		dirs[f.dir] = true // a partition directory may be new
	}
	for d := range dirs {
		if err := f.fs.SyncDir(d); err != nil {
			return fmt.Errorf("sync directory %s: %w", d, err)
		}
	}
	return nil
}

// putSegments records the segments written in step 1 in the index.
func putSegments(pb *bolt.Bucket, ws []*segWrite) error {
	segs, pos := pb.Bucket(bucketSegs), pb.Bucket(bucketPositions)
	for _, w := range ws {
		if err := putValue(segs, be64(w.entry.base), encodeSegEntry(nil, &w.entry)); err != nil {
			return err
		}
		for i := 0; i < len(w.pos); {
			chunk := uint32(w.pos[i].frame / positionEvery / positionsPerChunk)
			k := positionKey(nil, w.entry.base, chunk)
			old, err := getValue(pos, k)
			if err != nil {
				return err
			}
			want := int(w.pos[i].frame/positionEvery%positionsPerChunk) * 4
			if len(old) != want {
				return fmt.Errorf("%w: position chunk %x holds %d bytes, %d expected", core.ErrCorrupt, k, len(old), want)
			}
			v := slices.Clone(old)
			for ; i < len(w.pos) && uint32(w.pos[i].frame/positionEvery/positionsPerChunk) == chunk; i++ {
				v = binary.BigEndian.AppendUint32(v, w.pos[i].pos)
			}
			if err := putValue(pos, k, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeTable writes a frozen table to the state files: its frames to the
// segments, then one fsynced index transaction with its applied index and
// time, and prunes expired record IDs. Readers meanwhile still find every
// record in the table: they read the files only below the oldest table's
// start offsets. An error leaves the index as it was and the segments
// truncated back; the table stays frozen for the next attempt.
func (f *Engine) writeTable(m *memTable) error {
	plans := make([][]*segWrite, len(f.partitions))
	var all []*segWrite
	for slot := range f.partitions {
		ws, err := f.planSegments(m, slot)
		if err != nil {
			return err
		}
		plans[slot] = ws
		all = append(all, ws...)
	}
	if err := f.writeSegments(all); err != nil {
		return f.undoSegments(all, err)
	}
	tx, err := f.db.Load().Begin(true)
	if err != nil {
		return f.undoSegments(all, fmt.Errorf("begin flush: %w", err))
	}
	var erase []pendingErasure
	if err := f.putTable(tx, m, plans, &erase); err != nil {
		tx.Rollback()
		return f.undoSegments(all, err)
	}
	if err := tx.Commit(); err != nil {
		return f.undoSegments(all, fmt.Errorf("commit flush: %w", err))
	}
	if r := f.recordingCompaction(); r != nil {
		t, ps := m.indexPart(), withoutFrames(plans)
		r.record(t.indexBytes(), func(tx *bolt.Tx) error {
			var again []pendingErasure // erase records its own transaction
			return f.putTable(tx, t, ps, &again)
		})
	}
	for slot, ws := range plans {
		if len(ws) > 0 {
			e := ws[len(ws)-1].entry
			f.segs[slot] = &e
		}
	}
	if len(erase) > 0 {
		// The table is durable; its erasures are not yet. An error here
		// leaves them to the next Open (finishErasures), and readers never
		// see the records concerned (they are below their keys' floors).
		if err := f.erase(erase); err != nil {
			f.logger.Error("raftlog: erasing records failed; retried at the next start", "shard", f.shard, "err", err)
		}
	}
	return nil
}

// withoutFrames returns plans without the frames' bytes: what putTable
// reads of them.
func withoutFrames(plans [][]*segWrite) [][]*segWrite {
	out := make([][]*segWrite, len(plans))
	for slot, ws := range plans {
		for _, w := range ws {
			c := *w
			c.buf = nil
			out[slot] = append(out[slot], &c)
		}
	}
	return out
}

// undoSegments truncates segments written by a flush whose index
// transaction failed back to the lengths the index records, and returns
// err. It is best effort: the next attempt rewrites from those lengths,
// and Open truncates to them.
func (f *Engine) undoSegments(ws []*segWrite, err error) error {
	for _, w := range ws {
		if len(w.buf) == 0 {
			continue
		}
		if w.created {
			f.closeSegFile(w.name)
			f.fs.Remove(w.name)
		} else if fh, ferr := f.segFile(w.name, false); ferr == nil {
			fh.Truncate(w.at)
		}
	}
	return err
}

// putTable is step 2's content: everything of table m but the frames.
func (f *Engine) putTable(tx *bolt.Tx, m *memTable, plans [][]*segWrite, erase *[]pendingErasure) error {
	var errs []error
	var mem arena // bbolt keeps the keys and values put until the commit
	for slot, p := range f.partitions {
		pb := tx.Bucket(partitionBucketName(p))
		if err := putSegments(pb, plans[slot]); err != nil {
			return fmt.Errorf("partition %d: %w", p, err)
		}
		keys := pb.Bucket(bucketKeys)
		names := make([]string, 0, len(m.keys[slot]))
		for k := range m.keys[slot] {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			mk := m.keys[slot][k]
			prefix := wire.AppendString(mem.alloc(binary.MaxVarintLen64 + len(k))[:0], k)
			errs = append(errs, putKeyOffsets(keys, prefix, mk.first, mk.offsets, mem.alloc))
		}
		more, err := flushKeyMeta(pb, slot, m.metaAt[slot])
		errs = append(errs, err)
		*erase = append(*erase, more...)
		// The next offset, stored because erasure can empty the partition's end.
		errs = append(errs, putUint64(pb, keyNextOffset, m.end(slot)))
	}
	ids, idTime := tx.Bucket(bucketIDs), tx.Bucket(bucketIDTime)
	// The IDs in the order they were applied, which is nearly their
	// sorted order (UUIDv7s are time-ordered), so sorting them costs
	// little; an ID appended again after it expired is listed twice.
	order := make([]uuid.UUID, 0, len(m.ids))
	for _, l := range m.idLog {
		for id := l.ids; len(id) >= 16; id = id[16:] {
			order = append(order, uuid.UUID(id[:16]))
		}
	}
	slices.SortFunc(order, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	order = slices.Compact(order)
	// Record IDs are UUIDv7s, ordered by time, and retention keys start
	// with the time: a flush's keys usually all sort after every key
	// stored, and bbolt's default split, which leaves pages half full for
	// inserts in between, would leave the ID index twice its size.
	if len(order) > 0 {
		if last, _ := ids.Cursor().Last(); last == nil || bytes.Compare(order[0][:], last) > 0 {
			ids.FillPercent = appendFill
		}
	}
	idTime.FillPercent = appendFill
	var scratch []byte
	for i := range order {
		scratch = encodeIDEntry(scratch[:0], m.ids[order[i]])
		errs = append(errs, putValueIn(&mem, ids, order[i][:], scratch))
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
			v = mem.alloc(n)[:0]
			for _, l := range m.idLog[i:j] {
				v = append(v, l.ids...)
			}
		}
		errs = append(errs, putValueIn(&mem, idTime, m.idLog[i].key, v))
		i = j
	}
	errs = append(errs, f.pruneIDs(ids, idTime, m.lastTime, 2*m.n+1024))
	errs = append(errs, flushGroups(tx, m.groupsAt))
	meta := tx.Bucket(bucketMeta)
	errs = append(errs, putUint64(meta, metaApplied, m.last), putUint64(meta, metaTime, uint64(m.lastTime)))
	if m.clusterID != (uuid.UUID{}) {
		errs = append(errs, putValue(meta, metaClusterID, m.clusterID[:]))
	}
	if m.retAt != nil {
		errs = append(errs, putValue(meta, metaRetention, m.retAt))
	}
	return errors.Join(errs...)
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
		list, err := openValue(k, v)
		if err != nil {
			return err
		}
		for id := list; len(id) >= 16; id = id[16:] {
			cur, err := getValue(ids, id[:16])
			if err != nil {
				return err
			}
			if cur != nil {
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
func (f *Engine) hidden(meta map[string]*keyMeta, v []byte) (bool, error) {
	if len(meta) == 0 {
		return false, nil
	}
	key, seq, err := storedKeySeq(v)
	if err != nil {
		return false, err
	}
	km := meta[string(key)]
	return km != nil && seq < km.floor, nil
}

// pendingErasure is a key whose records below floor, from sequence from
// on, are still in the segments although the index holds its floor.
type pendingErasure struct {
	slot        int
	key         string
	from, floor uint64
}

// flushKeyMeta writes the key metadata a table changed (meta, as of the
// table's last index) into the partition's bucket pb, and returns the
// erasures they call for: the records the segments still hold below each
// such key's floor, from where the last erasure of the key, as the index
// records it, stopped. The stored metadata keeps that point (erased) until
// the erasure is done (erase).
func flushKeyMeta(pb *bolt.Bucket, slot int, meta map[string]*keyMeta) ([]pendingErasure, error) {
	if len(meta) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(meta))
	for k := range meta {
		names = append(names, k)
	}
	sort.Strings(names)
	metaB := pb.Bucket(bucketKeyMeta)
	var out []pendingErasure
	var errs []error
	for _, k := range names {
		km := *meta[k]
		stored, ok, err := getKeyMeta(metaB, k)
		if err != nil {
			return nil, err
		}
		if ok {
			km.erased = max(km.erased, stored.erased)
		}
		if km.floor > km.erased {
			out = append(out, pendingErasure{slot: slot, key: k, from: km.erased, floor: km.floor})
		}
		errs = append(errs, putValue(metaB, []byte(k), encodeKeyMeta(nil, km)))
	}
	return out, errors.Join(errs...)
}

func getKeyMeta(b *bolt.Bucket, key string) (keyMeta, bool, error) {
	v, err := getValue(b, []byte(key))
	if err != nil || v == nil {
		return keyMeta{}, false, err
	}
	m, err := decodeKeyMeta(v)
	if err != nil {
		return keyMeta{}, false, fmt.Errorf("key %q: stored metadata: %w", key, err)
	}
	return m, true, nil
}
