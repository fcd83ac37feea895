package raftlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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
// Applies go to an in-memory table that is flushed to the file in large
// fsynced transactions, in the background (memtable.go). Every flush stores
// the raft index it covers in the same transaction, and entries at or
// below it are skipped:
// raft hands a restarted node the entries after its last snapshot, and
// they must not be applied twice. Snapshot flushes, so the file's index is
// never behind the latest snapshot's; snapshots are therefore only markers
// (see snapshot.go).
type fsm struct {
	group      int
	partitions []int // the partitions this group hosts
	retention  int64 // ID retention, nanoseconds
	path       string

	// dbMu guards db against Restore swapping the file: readers, the
	// flusher and snapshot streams hold it shared. mu guards the in-memory
	// tables: the FSM goroutine holds it to change the active table or to
	// freeze it, the flusher to drop a flushed table, readers hold it
	// shared. A snapshot stream, however long, thus never holds up applies.
	// Lock order: dbMu, a bbolt read transaction, then mu (memtable.go).
	dbMu sync.RWMutex
	mu   sync.RWMutex
	db   *bolt.DB

	applied  atomic.Uint64
	lastTime int64 // FSM goroutine only

	// next[i] is the next offset of partitions[i]; published after commit.
	next    []atomic.Uint64
	signals []signal // one per hosted partition, woken on every apply that grows it
	appSig  signal   // woken on every apply

	// meta[slot] holds the keys of a hosted partition that were deleted or
	// truncated (usually few: all of them are kept in memory). A keyMeta is
	// never changed once stored here (an apply stores a new one), so a
	// frozen table keeps the ones it must write by pointer. Guarded like the
	// tables; changes reach the file with the flush of the table they were
	// applied in.
	meta []map[string]*keyMeta
	// cgroups are the consumer groups (groups.go), held by group 0 only;
	// guarded like the tables and flushed with them.
	cgroups         map[string]*cgroup
	totalPartitions int

	// Applied state not yet in db (memtable.go): the active table, which
	// applies go to, and the frozen one being written by the flusher (nil
	// when none is).
	mem, frozen *memTable
	// flushAt is the table size, in records and bytes, that triggers a flush.
	flushAtRecords, flushAtBytes int

	flushKick chan struct{} // wakes the flusher (buffered: one pending wake-up)
	flushStop chan struct{}
	flushDone chan struct{}
	stopOnce  sync.Once
	flushed   signal // woken when the flusher drops a flushed table
	// beforeFlush, if set before the first apply, runs on the flusher
	// before it writes each table (tests hold a table frozen with it).
	beforeFlush func()
	// failRestore, if set, makes Restore fail while it returns true.
	failRestore func() bool
}

// Bucket and meta key names.
var (
	bucketMeta    = []byte("meta")
	bucketIDs     = []byte("ids")
	bucketIDTime  = []byte("idtime")
	bucketRecs    = []byte("r")  // offset -> record
	bucketKeys    = []byte("kc") // key, chunk -> offsets of the chunk's key sequences (keyChunk)
	bucketKeysV1  = []byte("k")  // before: key, keySeq -> offset (migrated on open)
	bucketKeyMeta = []byte("m")  // key -> keyMeta, for deleted or truncated keys
	keyNextOffset = []byte("n")  // in a partition's bucket: its next offset
	bucketGroups  = []byte("cg") // consumer group name -> state (groups.go)

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
	f := &fsm{
		group: group, retention: int64(retention), path: path, flushAtRecords: flushRecords, flushAtBytes: flushBytes,
		totalPartitions: partitions,
		flushKick:       make(chan struct{}, 1), flushStop: make(chan struct{}), flushDone: make(chan struct{}),
	}
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
	go f.runFlusher()
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
			for _, name := range [][]byte{bucketRecs, bucketKeys, bucketKeyMeta} {
				if _, err := pb.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
		}
		if err := f.migrate(tx); err != nil {
			return err
		}
		return f.load(tx)
	})
}

// migrate brings a state file written by earlier code to the current
// layout: its own at start, or a full copy received from a leader.
func (f *fsm) migrate(tx *bolt.Tx) error {
	for _, p := range f.partitions {
		pb := tx.Bucket(partitionBucketName(p))
		if pb == nil {
			return fmt.Errorf("%w: %s has no bucket for partition %d", errCorrupt, f.path, p)
		}
		if _, err := pb.CreateBucketIfNotExists(bucketKeys); err != nil {
			return err
		}
		if err := migrateKeyIndex(pb); err != nil {
			return fmt.Errorf("raftlog: %s: partition %d: %w", f.path, p, err)
		}
	}
	return nil
}

// load sets the in-memory state from tx.
func (f *fsm) load(tx *bolt.Tx) error {
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
		pb := tx.Bucket(partitionBucketName(p))
		if k, _ := pb.Bucket(bucketRecs).Cursor().Last(); k != nil {
			next = binary.BigEndian.Uint64(k) + 1
		}
		if v := pb.Get(keyNextOffset); len(v) == 8 {
			next = max(next, binary.BigEndian.Uint64(v))
		}
		f.next[i].Store(next)
	}
	f.meta = make([]map[string]*keyMeta, len(f.partitions))
	for i, p := range f.partitions {
		f.meta[i] = map[string]*keyMeta{}
		b := tx.Bucket(partitionBucketName(p)).Bucket(bucketKeyMeta)
		if b == nil {
			continue // a state file from before key metadata existed
		}
		err := b.ForEach(func(k, v []byte) error {
			m, err := decodeKeyMeta(v)
			if err != nil {
				return fmt.Errorf("partition %d key %q: %w", p, k, err)
			}
			f.meta[i][string(k)] = &m
			return nil
		})
		if err != nil {
			return fmt.Errorf("raftlog: group %d: load key metadata: %w", f.group, err)
		}
	}
	if err := f.loadGroups(tx); err != nil {
		return err
	}
	f.mem = newMemTable(f.nextOffsets(), f.applied.Load(), f.lastTime, f.flushAtRecords)
	f.frozen = nil
	return nil
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

// ApplyBatch applies committed entries to the active in-memory table and
// freezes the table for the flusher once it is large. A response for a
// command entry is a []appendOutcome, one per request.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	applied := f.applied.Load()
	if len(logs) == 0 || logs[len(logs)-1].Index <= applied {
		return resp
	}
	v, err := f.beginRead()
	if err != nil {
		panic(fmt.Sprintf("raftlog: group %d: begin apply: %v", f.group, err))
	}
	f.mu.RUnlock() // this goroutine is the active table's only writer; the frozen one is fixed
	a := applier{f: f, v: v, next: make([]uint64, len(f.partitions)), grew: make([]bool, len(f.partitions))}
	for i := range a.next {
		a.next[i] = f.next[i].Load()
	}
	lastTime := f.lastTime
	for i, l := range logs {
		if l.Index <= applied {
			continue
		}
		if l.Type == raft.LogCommand && len(l.Data) > 0 && l.Data[0] == cmdGroup {
			t, op, err := decodeGroupEntry(l.Data)
			if err != nil {
				panic(fmt.Sprintf("raftlog: group %d: undecodable entry at index %d: %v", f.group, l.Index, err))
			}
			lastTime = max(lastTime, t)
			resp[i] = f.applyGroup(&op, lastTime)
		} else if l.Type == raft.LogCommand {
			e, err := decodeEntry(l.Data)
			if err != nil {
				// Every replica holds the same entry: skipping it here would
				// diverge from a peer that can decode it.
				panic(fmt.Sprintf("raftlog: group %d: undecodable entry at index %d: %v", f.group, l.Index, err))
			}
			lastTime = max(lastTime, e.Time)
			out := make([]appendOutcome, len(e.Requests))
			for j := range e.Requests {
				out[j] = a.append(&e.Requests[j], lastTime, l.Index, j)
			}
			resp[i] = out
		}
		applied = l.Index
	}
	v.tx.Rollback()
	if a.err != nil {
		panic(fmt.Sprintf("raftlog: group %d: apply: %v", f.group, a.err))
	}
	f.lastTime = lastTime
	f.mem.last, f.mem.lastTime = applied, lastTime
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
	if f.mem.n >= f.flushAtRecords || f.mem.bytes >= f.flushAtBytes {
		f.freeze()
	}
	return resp
}

// applier holds one ApplyBatch's working state. Only the FSM goroutine
// writes the active table, so it reads it without the lock.
type applier struct {
	f       *fsm
	v       layers
	next    []uint64
	grew    []bool
	err     error    // a storage error: fatal
	scratch []byte   // a record being encoded
	encoded [][]byte // a request's records, encoded
}

// layers is the state as a reader sees it: the active table, then the
// frozen one (if any), then the state file as a read transaction sees it,
// which holds everything below the oldest table.
type layers struct {
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
func (f *fsm) beginRead() (layers, error) {
	for {
		tx, err := f.db.Begin(false)
		if err != nil {
			return layers{}, err
		}
		f.mu.RLock()
		v := layers{tx: tx, frozen: f.frozen, active: f.mem}
		if fileApplied(tx) >= v.oldest().base {
			return v, nil
		}
		f.mu.RUnlock()
		tx.Rollback()
	}
}

// fileApplied is the applied index stored in the state file.
func fileApplied(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(metaApplied); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// readView runs fn on a consistent view of the state, tables read-locked.
func (f *fsm) readView(fn func(v *layers) error) error {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	v, err := f.beginRead()
	if err != nil {
		return err
	}
	defer v.tx.Rollback()
	defer f.mu.RUnlock()
	return fn(&v)
}

// The key index in the state file maps a key's sequences to offsets in
// chunks of keyChunk: entry (key, c) holds the offsets of sequences
// c*keyChunk+1 .. c*keyChunk+keyChunk, big-endian, 8 bytes each, as many
// as the key has so far (a key's sequences are dense from 1). A flush
// thus puts one entry per key and chunk it touches instead of one per
// record, and the index is several times smaller: a B-tree page a flush
// rewrites carries more of the key's history. The layout depends only on
// the sequences, never on when tables were flushed, so replicas' files
// stay identical.
const keyChunk = 16

// keyChunkKey is the index entry key of (prefix, the chunk of seq), where
// prefix is appendString(nil, key). seq must be at least 1.
func keyChunkKey(b, prefix []byte, seq uint64) []byte {
	b = append(b[:0], prefix...)
	return binary.BigEndian.AppendUint64(b, (seq-1)/keyChunk)
}

// keyHeadIn returns the current sequence of key in the state file: the
// last sequence its index holds, 0 if it has none.
func keyHeadIn(keys *bolt.Bucket, key string) uint64 {
	prefix := appendString(nil, key)
	c := keys.Cursor()
	k, v := c.Seek(binary.BigEndian.AppendUint64(prefix, ^uint64(0))) // prefix[:len] unchanged
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if len(k) != len(prefix)+8 || !bytes.HasPrefix(k, prefix) {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(prefix):])*keyChunk + uint64(len(v)/8)
}

// eachKeyOffset calls fn with the sequence and offset of each record of
// key the state file's index holds from sequence from on, in order, until
// fn returns false or an error.
func eachKeyOffset(keys *bolt.Bucket, key string, from uint64, fn func(seq, off uint64) (bool, error)) error {
	from = max(from, 1)
	prefix := appendString(nil, key)
	c := keys.Cursor()
	for k, v := c.Seek(keyChunkKey(nil, prefix, from)); k != nil && len(k) == len(prefix)+8 && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		base := binary.BigEndian.Uint64(k[len(prefix):])*keyChunk + 1
		for i := 0; i+8 <= len(v); i += 8 {
			seq := base + uint64(i/8)
			if seq < from {
				continue
			}
			if more, err := fn(seq, binary.BigEndian.Uint64(v[i:])); !more || err != nil {
				return err
			}
		}
	}
	return nil
}

// putKeyOffsets adds to the index in keys the offsets of key sequences
// first, first+1, ... of the key whose appendString encoding is prefix:
// it completes the chunk the index already started, then writes new ones.
// alloc provides memory that lives until the transaction commits.
func putKeyOffsets(keys *bolt.Bucket, prefix []byte, first uint64, offsets []uint64, alloc func(int) []byte) error {
	seq := first
	for j := 0; j < len(offsets); {
		pos := int((seq - 1) % keyChunk)
		n := min(keyChunk-pos, len(offsets)-j)
		ck := keyChunkKey(alloc(len(prefix)+8), prefix, seq)
		var old []byte
		if pos > 0 {
			old = keys.Get(ck)
		}
		if len(old) != 8*pos {
			return fmt.Errorf("%w: key index chunk %x holds %d offsets, sequence %d follows %d", errCorrupt, ck, len(old)/8, seq, pos)
		}
		v := alloc(len(old) + 8*n)[:0]
		v = append(v, old...)
		for _, off := range offsets[j : j+n] {
			v = binary.BigEndian.AppendUint64(v, off)
		}
		if err := keys.Put(ck, v); err != nil {
			return err
		}
		seq += uint64(n)
		j += n
	}
	return nil
}

// migrateKeyIndex rewrites the partition bucket pb's key index from one
// entry per sequence (bucketKeysV1, files written before 2026-11-24) into
// chunks, in the caller's transaction.
func migrateKeyIndex(pb *bolt.Bucket) error {
	old := pb.Bucket(bucketKeysV1)
	if old == nil {
		return nil
	}
	keys := pb.Bucket(bucketKeys)
	alloc := func(n int) []byte { return make([]byte, n) }
	var prefix []byte
	var offsets []uint64
	put := func() error {
		if len(offsets) == 0 {
			return nil
		}
		return putKeyOffsets(keys, prefix, 1, offsets, alloc)
	}
	c := old.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) < 9 || len(v) != 8 {
			return fmt.Errorf("%w: key index entry %x", errCorrupt, k)
		}
		p, seq := k[:len(k)-8], binary.BigEndian.Uint64(k[len(k)-8:])
		if !bytes.Equal(p, prefix) {
			if err := put(); err != nil {
				return err
			}
			prefix, offsets = slices.Clone(p), offsets[:0]
		}
		if seq != uint64(len(offsets))+1 {
			return fmt.Errorf("%w: key index entry %x: sequence %d after %d", errCorrupt, k, seq, len(offsets))
		}
		offsets = append(offsets, binary.BigEndian.Uint64(v))
	}
	if err := put(); err != nil {
		return err
	}
	return pb.DeleteBucket(bucketKeysV1)
}

func (v *layers) keysBucket(p, slot int) *bolt.Bucket {
	if v.keyBkts == nil {
		v.keyBkts = make([]*bolt.Bucket, len(v.active.start))
	}
	if v.keyBkts[slot] == nil {
		v.keyBkts[slot] = v.tx.Bucket(partitionBucketName(p)).Bucket(bucketKeys)
	}
	return v.keyBkts[slot]
}

// keyRun is key's run in the newest table that has one, else nil.
func (v *layers) keyRun(slot int, key string) *memKey {
	if mk := v.active.keys[slot][key]; mk != nil {
		return mk
	}
	if v.frozen != nil {
		return v.frozen.keys[slot][key]
	}
	return nil
}

// keyHead is the current sequence of key in partition p (at slot): the
// end of its run in the newest table that has one, else its last entry in
// the file.
func (v *layers) keyHead(p, slot int, key string) uint64 {
	if mk := v.keyRun(slot, key); mk != nil {
		return mk.last()
	}
	return keyHeadIn(v.keysBucket(p, slot), key)
}

// id returns where id was appended, from the tables or else the file,
// whether or not it has expired.
func (v *layers) id(id uuid.UUID) (idEntry, bool, error) {
	if e, ok := v.active.ids[id]; ok {
		return e, true, nil
	}
	if v.frozen != nil {
		if e, ok := v.frozen.ids[id]; ok {
			return e, true, nil
		}
	}
	if v.ids == nil {
		v.ids = v.tx.Bucket(bucketIDs)
		v.maxID, _ = v.ids.Cursor().Last()
	}
	if v.maxID == nil || bytes.Compare(id[:], v.maxID) > 0 {
		return idEntry{}, false, nil
	}
	b := v.ids.Get(id[:])
	if b == nil {
		return idEntry{}, false, nil
	}
	e, err := decodeIDEntry(b)
	return e, err == nil, err
}

// keyOffset is the offset of key's record with sequence seq.
func (v *layers) keyOffset(p, slot int, key string, seq uint64) (uint64, bool) {
	for _, m := range [2]*memTable{v.active, v.frozen} {
		if m == nil {
			continue
		}
		if mk := m.keys[slot][key]; mk != nil && seq >= mk.first {
			if seq > mk.last() {
				return 0, false
			}
			return mk.offsets[seq-mk.first], true
		}
	}
	if seq == 0 {
		return 0, false
	}
	b := v.keysBucket(p, slot).Get(keyChunkKey(nil, appendString(nil, key), seq))
	i := int((seq-1)%keyChunk) * 8
	if len(b) < i+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b[i:]), true
}

// record is the stored record at offset off of partition p (at slot).
func (v *layers) record(p, slot int, off uint64) []byte {
	for _, m := range [2]*memTable{v.active, v.frozen} {
		if m != nil && off >= m.start[slot] {
			if off >= m.end(slot) {
				return nil
			}
			return m.recs[slot][off-m.start[slot]]
		}
	}
	return v.tx.Bucket(partitionBucketName(p)).Bucket(bucketRecs).Get(be64(off))
}

// lookupID returns where id was appended, if it is remembered and has not
// expired at time t. Expiry is judged here, from the stored time, so the
// answer never depends on when expired IDs are physically pruned.
func (a *applier) lookupID(id uuid.UUID, t int64) (idEntry, bool) {
	e, ok, err := a.v.id(id)
	if !ok {
		a.fail(err)
		return idEntry{}, false
	}
	if a.f.retention > 0 && e.Time < t-a.f.retention {
		return idEntry{}, false
	}
	return e, true
}

// check evaluates the request's key condition against the key's sequence
// head and its metadata km (nil if none).
func (r *appendRequest) check(head uint64, km *keyMeta) error {
	deleted := km != nil && km.deleted
	exists := head > 0 && !deleted
	e := &KeySeqError{Partition: r.Partition, Key: r.Key, Expected: r.Expected, Actual: head, Deleted: deleted}
	switch {
	case r.has(reqExpected):
		if head != r.Expected {
			return e
		}
	case r.has(reqExists):
		if !exists {
			e.Condition = CondExists
			return e
		}
	case r.has(reqAbsent):
		if exists {
			e.Condition = CondAbsent
			return e
		}
	}
	if deleted && len(r.Records) > 0 && !r.has(reqRecreate) {
		return fmt.Errorf("%w: key %q in partition %d", ErrKeyDeleted, r.Key, r.Partition)
	}
	return nil
}

// append applies one request: deduplication by record ID, then the
// key's condition, then the records (or the key operation). Domain errors
// are returned in the outcome; storage errors end the apply.
func (a *applier) append(r *appendRequest, t int64, index uint64, reqNo int) appendOutcome {
	f := a.f
	slot, ok := f.slot(r.Partition)
	if !ok || (len(r.Records) == 0) != r.isKeyOp() || r.Key == "" {
		return appendOutcome{Err: fmt.Errorf("%w: malformed request for partition %d", ErrUnknownPartition, r.Partition)}
	}
	pos := Position{Group: f.group, Index: index}
	if !r.isKeyOp() {
		if res, done, err := a.dedup(r, slot, t, pos); done {
			return appendOutcome{Result: res, Err: err}
		}
	}
	head := a.v.keyHead(r.Partition, slot, r.Key)
	km := f.meta[slot][r.Key]
	if err := r.check(head, km); err != nil {
		return appendOutcome{Err: err}
	}
	if r.isKeyOp() {
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
	idList := m.alloc(16 * n)[:0]
	size := 0
	for i := range r.Records {
		a.scratch = encodeRecord(a.scratch[:0], r.Key, head+1+uint64(i), &r.Records[i], t)
		rec := m.alloc(len(a.scratch))
		copy(rec, a.scratch)
		a.encoded = append(a.encoded, rec)
		idList = append(idList, r.Records[i].ID[:]...)
		size += len(rec)
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
		off := first + uint64(i)
		mk.offsets = append(mk.offsets, off)
		m.ids[r.Records[i].ID] = idEntry{Partition: r.Partition, Offset: off, KeySeq: head + 1 + uint64(i), Time: t}
	}
	m.idLog = append(m.idLog, memIDList{key: tk, ids: idList})
	m.n += n
	m.bytes += size
	f.mu.Unlock()

	a.next[slot] = first + uint64(n)
	a.grew[slot] = true
	return appendOutcome{Result: AppendResult{
		Partition: r.Partition, FirstOffset: first, FirstKeySeq: head + 1, Count: n,
		Time: time.Unix(0, t).UTC(), Position: pos,
	}}
}

// keyOp applies a delete or truncate of r.Key, whose sequence is head.
func (a *applier) keyOp(r *appendRequest, slot int, head uint64, km *keyMeta, t int64, pos Position) appendOutcome {
	f := a.f
	base := keyMeta{floor: 1}
	if km != nil {
		base = *km
	}
	next := base
	if r.has(reqDelete) {
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
	return appendOutcome{Result: AppendResult{
		Partition: r.Partition, FirstKeySeq: next.floor,
		Time: time.Unix(0, t).UTC(), Position: pos,
	}}
}

// dedup looks the request's record IDs up. done reports that the request
// is answered: either every ID was committed before, as one run of this
// key in this partition (a retry: the original result), or only some were
// (a conflict).
func (a *applier) dedup(r *appendRequest, slot int, t int64, pos Position) (AppendResult, bool, error) {
	first, ok := a.lookupID(r.Records[0].ID, t)
	if !ok {
		for i := 1; i < len(r.Records); i++ {
			if _, ok := a.lookupID(r.Records[i].ID, t); ok {
				return AppendResult{}, true, fmt.Errorf("%w: record %d (%s) was appended before, record 0 was not", ErrIDConflict, i, r.Records[i].ID)
			}
		}
		return AppendResult{}, false, nil
	}
	conflict := fmt.Errorf("%w: record 0 (%s) was appended before at partition %d offset %d", ErrIDConflict, r.Records[0].ID, first.Partition, first.Offset)
	if first.Partition != r.Partition {
		return AppendResult{}, true, conflict
	}
	if off, ok := a.v.keyOffset(r.Partition, slot, r.Key, first.KeySeq); !ok || off != first.Offset {
		return AppendResult{}, true, conflict
	}
	for i := 1; i < len(r.Records); i++ {
		e, ok := a.lookupID(r.Records[i].ID, t)
		if !ok || e.Partition != first.Partition || e.Offset != first.Offset+uint64(i) || e.KeySeq != first.KeySeq+uint64(i) {
			return AppendResult{}, true, conflict
		}
	}
	return AppendResult{
		Partition: r.Partition, FirstOffset: first.Offset, FirstKeySeq: first.KeySeq, Count: len(r.Records),
		Time: time.Unix(0, first.Time).UTC(), Position: pos, Duplicate: true,
	}, true, nil
}

func (a *applier) fail(err error) {
	if err != nil && a.err == nil {
		a.err = err
	}
}

// read returns records of partition p from offset from: those flushed to
// the state file, then those in the tables, oldest first.
func (f *fsm) read(p int, from uint64, maxRecs, maxBytes int) ([]Record, error) {
	c := collector{p: p, maxRecs: maxRecs, maxBytes: maxBytes}
	err := f.readView(func(v *layers) error {
		slot, _ := f.slot(p)
		c.meta = f.meta[slot]
		start := v.oldest().start[slot]
		if from < start {
			cur := v.tx.Bucket(partitionBucketName(p)).Bucket(bucketRecs).Cursor()
			for k, val := cur.Seek(be64(from)); k != nil; k, val = cur.Next() {
				off := binary.BigEndian.Uint64(k)
				if off >= start {
					break
				}
				if more, err := c.take(val, off); !more || err != nil {
					return err
				}
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
	p                 int
	maxRecs, maxBytes int
	meta              map[string]*keyMeta // the partition's; records below a key's floor are skipped
	size              int
	out               []Record
}

// take adds the stored record v at offset off; false means a bound is met.
func (c *collector) take(v []byte, off uint64) (bool, error) {
	if len(c.out) >= c.maxRecs || (len(c.out) > 0 && c.size+len(v) > c.maxBytes) {
		return false, nil
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
	rec, err := decodeRecord(v, c.p, off)
	if err != nil {
		return false, fmt.Errorf("raftlog: partition %d offset %d: %w", c.p, off, err)
	}
	c.size += len(v)
	c.out = append(c.out, rec)
	return true, nil
}

// readKey returns records of key in partition p from key sequence from:
// those indexed in the state file below the first sequence a table holds,
// then the key's runs in the tables, oldest first.
func (f *fsm) readKey(p int, key string, from uint64, maxRecs, maxBytes int) ([]Record, error) {
	c := collector{p: p, maxRecs: maxRecs, maxBytes: maxBytes}
	err := f.readView(func(v *layers) error {
		slot, _ := f.slot(p)
		if km := f.meta[slot][key]; km != nil {
			from = max(from, km.floor)
		}
		take := func(off uint64) (bool, error) {
			rec := v.record(p, slot, off)
			if rec == nil {
				return false, fmt.Errorf("raftlog: key %q index names missing offset %d", key, off)
			}
			return c.take(rec, off)
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

// keyInfo returns the state of key in partition p.
func (f *fsm) keyInfo(p int, key string) (KeyInfo, error) {
	info := KeyInfo{First: 1}
	err := f.readView(func(v *layers) error {
		slot, _ := f.slot(p)
		if km := f.meta[slot][key]; km != nil {
			info.First, info.Deleted = km.floor, km.deleted
		}
		info.Seq = v.keyHead(p, slot, key)
		return nil
	})
	return info, err
}

// keySeq returns the current sequence of key in partition p.
func (f *fsm) keySeq(p int, key string) (uint64, error) {
	var seq uint64
	err := f.readView(func(v *layers) error {
		slot, _ := f.slot(p)
		seq = v.keyHead(p, slot, key)
		return nil
	})
	return seq, err
}

// lookupID returns where a record ID was appended, if it is held.
func (f *fsm) lookupID(id uuid.UUID) (idEntry, bool, error) {
	var e idEntry
	var found bool
	err := f.readView(func(v *layers) error {
		var err error
		e, found, err = v.id(id)
		return err
	})
	return e, found, err
}

// flushedIDCount is the number of record IDs in the state file.
func (f *fsm) flushedIDCount() (int, error) {
	var n int
	err := f.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketIDs).Stats().KeyN
		return nil
	})
	return n, err
}

// view runs fn in a read transaction of the state file alone.
func (f *fsm) view(fn func(tx *bolt.Tx) error) error {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	return f.db.View(fn)
}

// Snapshot implements raft.FSM. It freezes the active table and waits for
// the flusher to write every frozen table, so the state file covers
// everything applied and raft may compact its log up to here; the snapshot
// itself records only that index, and its cost does not grow with history.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.flush()
	return markerSnapshot{index: f.applied.Load()}, nil
}

// Restore implements raft.FSM: it replaces the whole state with a full
// copy received from the leader (see snapshot.go for the format).
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if f.failRestore != nil && f.failRestore() {
		return errors.New("raftlog: restore failed (test)")
	}
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
	// A flush in progress writes the file being replaced; let it end (its
	// state is discarded with the rest). No table is frozen after it: this
	// is the FSM goroutine, the only one that freezes.
	f.waitFlushed()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
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
	if err := db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) == nil {
			return fmt.Errorf("raftlog: restored state has no meta bucket")
		}
		if err := f.migrate(tx); err != nil {
			return err
		}
		return f.load(tx)
	}); err != nil {
		return err
	}
	for i := range f.signals {
		f.signals[i].notify()
	}
	f.appSig.notify()
	return nil
}

// close flushes the tables (so a clean restart re-applies nothing), stops
// the flusher and closes the file. Raft must be stopped: this runs off the
// FSM goroutine.
func (f *fsm) close() error {
	f.flush()
	f.stopFlusher()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	return f.db.Close()
}

// stopFlusher stops the flusher after the flush in progress, if any; a
// table frozen and not yet being written stays unwritten (close flushes
// first; tests stop it alone to simulate a crash).
func (f *fsm) stopFlusher() {
	f.stopOnce.Do(func() { close(f.flushStop) })
	<-f.flushDone
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
