package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// fsm is one raft group's state machine: the records of the group's
// partitions, their key indexes and the record-ID index, in a bbolt file.
//
// Contracts (hashicorp/raft): ApplyBatch and Restore run on raft's FSM
// goroutine, one at a time; Snapshot runs there too and must be quick;
// Persist of a returned snapshot runs concurrently with later applies.
// Readers run on any goroutine.
//
// Every apply transaction stores the raft index it applied up to, in the
// same bbolt transaction as the state, and entries at or below it are
// skipped: raft may hand a restarted node entries it already applied, and
// they must not be applied twice. bbolt fsyncs each commit, so the applied
// index on disk is never behind the latest snapshot's index; snapshots are
// therefore only markers (see snapshot.go).
type fsm struct {
	group      int
	partitions []int // the partitions this group hosts
	retention  int64 // ID retention, nanoseconds
	path       string

	// mu guards db against Restore swapping the file; readers hold it shared
	// for the length of their read transaction.
	mu sync.RWMutex
	db *bolt.DB

	applied  atomic.Uint64
	lastTime int64 // FSM goroutine only

	// next[i] is the next offset of partitions[i]; published after commit.
	next    []atomic.Uint64
	signals []signal // one per hosted partition, woken on every commit that grows it
	appSig  signal   // woken on every commit

	keyBuf []byte // scratch for index keys (bbolt copies keys), FSM goroutine only
}

// Bucket and meta key names.
var (
	bucketMeta   = []byte("meta")
	bucketIDs    = []byte("ids")
	bucketIDTime = []byte("idtime")
	bucketRecs   = []byte("r") // offset -> record
	bucketKeys   = []byte("k") // key, keySeq -> offset; the last one is the key's head

	metaApplied    = []byte("applied")
	metaTime       = []byte("time")
	metaPartitions = []byte("partitions")
	metaGroups     = []byte("groups")
	metaGroup      = []byte("group")
)

func partitionBucketName(p int) []byte {
	return binary.BigEndian.AppendUint32([]byte("p"), uint32(p))
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// signal is a broadcast: wait returns a channel closed by the next notify.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) notify() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}

func boltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout:         5 * time.Second,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 1 << 30, // fewer remaps, which wait for readers
	}
}

// openFSM opens (creating if needed) the group's state file and checks that
// it was made for the same partitioning.
func openFSM(path string, group, partitions, groups int, retention time.Duration) (*fsm, error) {
	f := &fsm{group: group, retention: int64(retention), path: path}
	for p := group; p < partitions; p += groups {
		f.partitions = append(f.partitions, p)
	}
	f.next = make([]atomic.Uint64, len(f.partitions))
	f.signals = make([]signal, len(f.partitions))
	db, err := bolt.Open(path, 0o600, boltOptions())
	if err != nil {
		return nil, fmt.Errorf("raftlog: open %s: %w", path, err)
	}
	if err := f.init(db, partitions, groups); err != nil {
		db.Close()
		return nil, err
	}
	f.db = db
	return f, nil
}

// init creates missing buckets, checks the partitioning and loads the
// in-memory state from db.
func (f *fsm) init(db *bolt.DB, partitions, groups int) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		for _, kv := range []struct {
			k []byte
			v int
		}{{metaPartitions, partitions}, {metaGroups, groups}, {metaGroup, f.group}} {
			if old := meta.Get(kv.k); old != nil {
				if got := binary.BigEndian.Uint64(old); got != uint64(kv.v) {
					return fmt.Errorf("%w: %s holds %s=%d, configured %d", ErrConfig, f.path, kv.k, got, kv.v)
				}
			} else if err := meta.Put(kv.k, be64(uint64(kv.v))); err != nil {
				return err
			}
		}
		for _, name := range [][]byte{bucketIDs, bucketIDTime} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		for _, p := range f.partitions {
			pb, err := tx.CreateBucketIfNotExists(partitionBucketName(p))
			if err != nil {
				return err
			}
			for _, name := range [][]byte{bucketRecs, bucketKeys} {
				if _, err := pb.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
		}
		f.load(tx)
		return nil
	})
}

// load sets the in-memory state from tx.
func (f *fsm) load(tx *bolt.Tx) {
	meta := tx.Bucket(bucketMeta)
	f.applied.Store(0)
	if v := meta.Get(metaApplied); v != nil {
		f.applied.Store(binary.BigEndian.Uint64(v))
	}
	f.lastTime = 0
	if v := meta.Get(metaTime); v != nil {
		f.lastTime = int64(binary.BigEndian.Uint64(v))
	}
	for i, p := range f.partitions {
		var next uint64
		if k, _ := tx.Bucket(partitionBucketName(p)).Bucket(bucketRecs).Cursor().Last(); k != nil {
			next = binary.BigEndian.Uint64(k) + 1
		}
		f.next[i].Store(next)
	}
}

// slot returns the index of partition p in f.partitions.
func (f *fsm) slot(p int) (int, bool) {
	if len(f.partitions) == 0 || p < f.group {
		return 0, false
	}
	groups := 1
	if len(f.partitions) > 1 {
		groups = f.partitions[1] - f.partitions[0]
	}
	if (p-f.group)%groups != 0 {
		return 0, false
	}
	i := (p - f.group) / groups
	return i, i < len(f.partitions)
}

// appendOutcome is the FSM's answer to one append request.
type appendOutcome struct {
	Result AppendResult
	Err    error
}

// Apply implements raft.FSM for callers that do not batch.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch applies committed entries in one bbolt transaction. A
// response for a command entry is a []appendOutcome, one per request.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	applied := f.applied.Load()
	if len(logs) == 0 || logs[len(logs)-1].Index <= applied {
		return resp
	}
	tx, err := f.db.Begin(true)
	if err != nil {
		panic(fmt.Sprintf("raftlog: group %d: begin apply: %v", f.group, err))
	}
	a := applier{f: f, tx: tx, next: make([]uint64, len(f.partitions)), grew: make([]bool, len(f.partitions))}
	for i := range a.next {
		a.next[i] = f.next[i].Load()
	}
	a.ids = tx.Bucket(bucketIDs)
	a.idTime = tx.Bucket(bucketIDTime)
	lastTime := f.lastTime
	for i, l := range logs {
		if l.Index <= applied {
			continue
		}
		if l.Type == raft.LogCommand {
			e, err := decodeEntry(l.Data)
			if err != nil {
				// Every replica holds the same entry: skipping it here would
				// diverge from a peer that can decode it.
				panic(fmt.Sprintf("raftlog: group %d: undecodable entry at index %d: %v", f.group, l.Index, err))
			}
			lastTime = max(lastTime, e.Time)
			out := make([]appendOutcome, len(e.Requests))
			n := 0
			for j := range e.Requests {
				out[j] = a.append(&e.Requests[j], lastTime, l.Index, j)
				n += len(e.Requests[j].Records)
			}
			a.prune(lastTime, 2*n+16)
			resp[i] = out
		}
		applied = l.Index
	}
	meta := tx.Bucket(bucketMeta)
	if err := errors.Join(
		meta.Put(metaApplied, be64(applied)),
		meta.Put(metaTime, be64(uint64(lastTime))),
		a.err,
	); err != nil {
		panic(fmt.Sprintf("raftlog: group %d: apply: %v", f.group, err))
	}
	if err := tx.Commit(); err != nil {
		// The state on disk is behind raft's commit index and cannot catch
		// up without applying again; crash and let the restart replay.
		panic(fmt.Sprintf("raftlog: group %d: commit apply: %v", f.group, err))
	}
	f.lastTime = lastTime
	for i, grew := range a.grew {
		if grew {
			f.next[i].Store(a.next[i])
		}
	}
	f.applied.Store(applied)
	for i, grew := range a.grew {
		if grew {
			f.signals[i].notify()
		}
	}
	f.appSig.notify()
	return resp
}

// applier holds one apply transaction's working state.
type applier struct {
	f      *fsm
	tx     *bolt.Tx
	ids    *bolt.Bucket
	idTime *bolt.Bucket
	next   []uint64
	grew   []bool
	err    error // a storage error: fatal for the whole transaction
	// arena holds values put in this transaction: bbolt keeps references to
	// values until commit, so they are appended here and never overwritten.
	arena []byte
}

// value returns the bytes appended to the arena since start.
func (a *applier) value(start int) []byte { return a.arena[start:len(a.arena):len(a.arena)] }

// keyHead returns the current sequence of key: the sequence of its last
// key index entry, 0 if it has none. (Keeping heads in a bucket of their
// own would dirty a second random page per key in every commit.)
func keyHead(keys *bolt.Bucket, key string) uint64 {
	prefix := appendString(nil, key)
	c := keys.Cursor()
	k, _ := c.Seek(binary.BigEndian.AppendUint64(prefix, ^uint64(0)))
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(prefix):])
}

func keyIndexKey(b []byte, key string, seq uint64) []byte {
	b = appendString(b[:0], key)
	return binary.BigEndian.AppendUint64(b, seq)
}

// append applies one request: deduplication by record ID, then the
// expected key sequence, then the records. Domain errors are returned in
// the outcome; storage errors end the transaction.
func (a *applier) append(r *appendRequest, t int64, index uint64, reqNo int) appendOutcome {
	f := a.f
	slot, ok := f.slot(r.Partition)
	if !ok || len(r.Records) == 0 || r.Key == "" {
		return appendOutcome{Err: fmt.Errorf("%w: malformed request for partition %d", ErrUnknownPartition, r.Partition)}
	}
	pos := Position{Group: f.group, Index: index}
	pb := a.tx.Bucket(partitionBucketName(r.Partition))
	keys, recs := pb.Bucket(bucketKeys), pb.Bucket(bucketRecs)

	if res, done, err := a.dedup(r, keys, pos); done {
		return appendOutcome{Result: res, Err: err}
	}

	head := keyHead(keys, r.Key)
	if r.HasExpected && r.Expected != head {
		return appendOutcome{Err: &KeySeqError{Partition: r.Partition, Key: r.Key, Expected: r.Expected, Actual: head}}
	}

	recs.FillPercent = 1 // offsets only grow
	first := a.next[slot]
	idsStart := len(a.arena)
	for i := range r.Records {
		a.arena = append(a.arena, r.Records[i].ID[:]...)
	}
	idList := a.value(idsStart)
	for i := range r.Records {
		rec := &r.Records[i]
		off, seq := first+uint64(i), head+1+uint64(i)
		start := len(a.arena)
		a.arena = binary.BigEndian.AppendUint64(a.arena, off)
		offBytes := a.value(start)
		start = len(a.arena)
		a.arena = encodeRecord(a.arena, r.Key, seq, rec, t)
		a.fail(recs.Put(offBytes, a.value(start)))
		f.keyBuf = keyIndexKey(f.keyBuf, r.Key, seq)
		a.fail(keys.Put(f.keyBuf, offBytes))
		start = len(a.arena)
		a.arena = encodeIDEntry(a.arena, idEntry{Partition: r.Partition, Offset: off, KeySeq: seq, Time: t})
		a.fail(a.ids.Put(rec.ID[:], a.value(start)))
	}
	// One retention entry per request: time, raft index, request number in
	// the entry (never anything that depends on how entries were batched).
	tk := binary.BigEndian.AppendUint64(make([]byte, 0, 20), uint64(t))
	tk = binary.BigEndian.AppendUint64(tk, index)
	tk = binary.BigEndian.AppendUint32(tk, uint32(reqNo))
	a.fail(a.idTime.Put(tk, idList))
	n := uint64(len(r.Records))
	a.next[slot] = first + n
	a.grew[slot] = true
	return appendOutcome{Result: AppendResult{
		Partition: r.Partition, FirstOffset: first, FirstKeySeq: head + 1, Count: len(r.Records),
		Time: time.Unix(0, t).UTC(), Position: pos,
	}}
}

// dedup looks the request's record IDs up. done reports that the request
// is answered: either every ID was committed before, as one run of this
// key in this partition (a retry: the original result), or only some were
// (a conflict).
func (a *applier) dedup(r *appendRequest, keys *bolt.Bucket, pos Position) (AppendResult, bool, error) {
	v := a.ids.Get(r.Records[0].ID[:])
	if v == nil {
		for i := 1; i < len(r.Records); i++ {
			if a.ids.Get(r.Records[i].ID[:]) != nil {
				return AppendResult{}, true, fmt.Errorf("%w: record %d (%s) was appended before, record 0 was not", ErrIDConflict, i, r.Records[i].ID)
			}
		}
		return AppendResult{}, false, nil
	}
	first, err := decodeIDEntry(v)
	if err != nil {
		a.fail(err)
		return AppendResult{}, true, err
	}
	conflict := fmt.Errorf("%w: record 0 (%s) was appended before at partition %d offset %d", ErrIDConflict, r.Records[0].ID, first.Partition, first.Offset)
	if first.Partition != r.Partition {
		return AppendResult{}, true, conflict
	}
	if off := keys.Get(keyIndexKey(a.f.keyBuf, r.Key, first.KeySeq)); off == nil || binary.BigEndian.Uint64(off) != first.Offset {
		return AppendResult{}, true, conflict
	}
	for i := 1; i < len(r.Records); i++ {
		v := a.ids.Get(r.Records[i].ID[:])
		if v == nil {
			return AppendResult{}, true, conflict
		}
		e, err := decodeIDEntry(v)
		if err != nil || e.Partition != first.Partition || e.Offset != first.Offset+uint64(i) || e.KeySeq != first.KeySeq+uint64(i) {
			return AppendResult{}, true, conflict
		}
	}
	return AppendResult{
		Partition: r.Partition, FirstOffset: first.Offset, FirstKeySeq: first.KeySeq, Count: len(r.Records),
		Time: time.Unix(0, first.Time).UTC(), Position: pos, Duplicate: true,
	}, true, nil
}

// prune forgets record IDs older than the retention window ending at t,
// a whole append at a time, until about limit IDs are gone. Bounding each
// entry's work keeps apply latency flat; the limit exceeds the entry's own
// records so the index cannot outgrow the window.
func (a *applier) prune(t int64, limit int) {
	if a.f.retention <= 0 {
		return
	}
	cutoff := t - a.f.retention
	var doomed [][]byte
	n := 0
	c := a.idTime.Cursor()
	for k, v := c.First(); k != nil && n < limit; k, v = c.Next() {
		if int64(binary.BigEndian.Uint64(k[:8])) >= cutoff {
			break
		}
		doomed = append(doomed, append([]byte(nil), k...))
		for id := v; len(id) >= 16; id = id[16:] {
			a.fail(a.ids.Delete(id[:16]))
			n++
		}
	}
	for _, k := range doomed {
		a.fail(a.idTime.Delete(k))
	}
}

func (a *applier) fail(err error) {
	if err != nil && a.err == nil {
		a.err = err
	}
}

// view runs fn in a read transaction of the current state file.
func (f *fsm) view(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(fn)
}

// read returns records of partition p from offset from.
func (f *fsm) read(p int, from uint64, maxRecs, maxBytes int) ([]Record, error) {
	var out []Record
	err := f.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(partitionBucketName(p)).Bucket(bucketRecs).Cursor()
		size := 0
		for k, v := c.Seek(be64(from)); k != nil && len(out) < maxRecs; k, v = c.Next() {
			if len(out) > 0 && size+len(v) > maxBytes {
				break
			}
			rec, err := decodeRecord(v, p, binary.BigEndian.Uint64(k))
			if err != nil {
				return fmt.Errorf("raftlog: partition %d offset %d: %w", p, binary.BigEndian.Uint64(k), err)
			}
			size += len(v)
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// readKey returns records of key in partition p from key sequence from.
func (f *fsm) readKey(p int, key string, from uint64, maxRecs, maxBytes int) ([]Record, error) {
	var out []Record
	err := f.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(partitionBucketName(p))
		recs := pb.Bucket(bucketRecs)
		prefix := appendString(nil, key)
		c := pb.Bucket(bucketKeys).Cursor()
		size := 0
		for k, v := c.Seek(keyIndexKey(nil, key, from)); k != nil && len(out) < maxRecs && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8; k, v = c.Next() {
			off := binary.BigEndian.Uint64(v)
			rv := recs.Get(v)
			if rv == nil {
				return fmt.Errorf("raftlog: key %q index names missing offset %d", key, off)
			}
			if len(out) > 0 && size+len(rv) > maxBytes {
				break
			}
			rec, err := decodeRecord(rv, p, off)
			if err != nil {
				return fmt.Errorf("raftlog: partition %d offset %d: %w", p, off, err)
			}
			size += len(rv)
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}

// keySeq returns the current sequence of key in partition p.
func (f *fsm) keySeq(p int, key string) (uint64, error) {
	var seq uint64
	err := f.view(func(tx *bolt.Tx) error {
		seq = keyHead(tx.Bucket(partitionBucketName(p)).Bucket(bucketKeys), key)
		return nil
	})
	return seq, err
}

// lookupID returns where a record ID was appended, if it is remembered.
func (f *fsm) lookupID(id uuid.UUID) (idEntry, bool, error) {
	var e idEntry
	var found bool
	err := f.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketIDs).Get(id[:])
		if v == nil {
			return nil
		}
		found = true
		var err error
		e, err = decodeIDEntry(v)
		return err
	})
	return e, found, err
}

// idCount is the number of remembered record IDs.
func (f *fsm) idCount() (int, error) {
	var n int
	err := f.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketIDs).Stats().KeyN
		return nil
	})
	return n, err
}

// Snapshot implements raft.FSM. The state is already durable, so the
// snapshot records only its index: its cost does not grow with history.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return markerSnapshot{index: f.applied.Load()}, nil
}

// Restore implements raft.FSM: it replaces the whole state with a full
// copy received from the leader (see snapshot.go for the format).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	h, err := readSnapshotHeader(rc)
	if err != nil {
		return err
	}
	if h.kind != snapshotFull {
		return fmt.Errorf("raftlog: restore from a snapshot marker (index %d): a full copy is required", h.index)
	}
	tmp := f.path + ".restore"
	if err := writeFileSync(tmp, rc); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("raftlog: receive snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("raftlog: close state for restore: %w", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("raftlog: install snapshot: %w", err)
	}
	if err := syncDir(filepath.Dir(f.path)); err != nil {
		return err
	}
	db, err := bolt.Open(f.path, 0o600, boltOptions())
	if err != nil {
		return fmt.Errorf("raftlog: open restored state: %w", err)
	}
	f.db = db
	if err := db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("raftlog: restored state has no meta bucket")
		}
		f.load(tx)
		return nil
	}); err != nil {
		return err
	}
	for i := range f.signals {
		f.signals[i].notify()
	}
	f.appSig.notify()
	return nil
}

func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.db.Close()
}

func writeFileSync(path string, r io.Reader) error {
	fh, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(fh, r); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
