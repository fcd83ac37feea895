// Package state is the state engine of one shard: the records of its
// partitions, their key indexes, the record-ID index, key metadata and (in
// shard 0) the consumer groups, held in a bbolt state file written by
// large fsynced flushes of in-memory tables. FSM (fsm.go) adapts it to
// hashicorp/raft: it decodes each committed entry and dispatches it by its
// command byte to a Batch. Applies are deterministic (they read only the
// entry and the state) and idempotent by raft index (the file stores the
// index it covers), so a restart replays nothing twice. DESIGN.md beside
// raftlog documents the file's format and the crash argument.
//
// It imports core, wire and cgroup.
package state

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/cgroup"
	"github.com/esraft/esraft/raftlog/internal/core"
)

// Engine is one shard's state: the records of the shard's partitions,
// their key indexes and the record-ID index, in a bbolt file.
//
// Batches (apply.go), Flush and Restore run on raft's FSM goroutine, one
// at a time; readers run on any goroutine.
//
// Applies go to an in-memory table that is flushed to the file in large
// fsynced transactions, in the background (memtable.go). Every flush stores
// the raft index it covers in the same transaction, and entries at or
// below it are skipped:
// raft hands a restarted node the entries after its last snapshot, and
// they must not be applied twice. Snapshot flushes, so the file's index is
// never behind the latest snapshot's; snapshots are therefore only markers
// (see snapshot.go).
type Engine struct {
	shard      core.Shard
	shards     int
	partitions []core.Partition // the partitions this shard hosts
	retention  int64            // ID retention, nanoseconds
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
	signals []core.Signal // one per hosted partition, woken on every apply that grows it
	appSig  core.Signal   // woken on every apply

	// meta[slot] holds the keys of a hosted partition that were deleted or
	// truncated (usually few: all of them are kept in memory). A keyMeta is
	// never changed once stored here (an apply stores a new one), so a
	// frozen table keeps the ones it must write by pointer. Guarded like the
	// tables; changes reach the file with the flush of the table they were
	// applied in.
	meta []map[string]*keyMeta
	// cgroups are the consumer groups (groups.go), held by shard 0 only;
	// guarded like the tables and flushed with them.
	cgroups         map[string]*cgroup.Group
	totalPartitions int
	// clusterID is the cluster's identity as applied (clusterid.go), the
	// zero UUID until the first CmdClusterID entry is; guarded like the
	// tables and flushed with them.
	clusterID uuid.UUID

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
	flushed   core.Signal // woken when the flusher drops a flushed table
	// beforeFlush, if set before the first apply, runs on the flusher
	// before it writes each table (tests hold a table frozen with it).
	beforeFlush func()
	// beforeApply, if set, runs on the FSM goroutine before each batch
	// (tests hold applies with it; see Probe.HoldApplies).
	beforeApply atomic.Pointer[func()]
	// failRestore, if set, makes Restore fail while it returns true.
	failRestore func() bool
	logger      *slog.Logger
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
	metaClusterID  = []byte("cluster") // 16 bytes, a UUID (clusterid.go)
)

func partitionBucketName(p core.Partition) []byte {
	return binary.BigEndian.AppendUint32([]byte("p"), uint32(p))
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func BoltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout:         5 * time.Second,
		NoFreelistSync:  true,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 1 << 30, // fewer remaps, which wait for readers
	}
}

// Options configure an Engine.
type Options struct {
	Path       string     // the state file
	Shard      core.Shard // the shard this engine is the state of
	Partitions int        // the log's partitions
	Shards     int        // the log's shards; the engine hosts partitions p with p mod Shards = Shard
	// IDRetention is how long record IDs are remembered (0: for ever).
	IDRetention time.Duration
	// FlushRecords overrides the table size that triggers a flush (tests).
	FlushRecords int
	// FailRestore, if set, makes Restore fail while it returns true (tests).
	FailRestore func() bool
	// Logger receives the engine's lines (nil: discarded).
	Logger *slog.Logger
}

// Open opens (creating if needed) the shard's state file and checks that
// it was made for the same partitioning.
func Open(o Options) (*Engine, error) {
	f := &Engine{
		shard: o.Shard, shards: o.Shards, retention: int64(o.IDRetention), path: o.Path,
		flushAtRecords: flushRecords, flushAtBytes: flushBytes, totalPartitions: o.Partitions,
		flushKick: make(chan struct{}, 1), flushStop: make(chan struct{}), flushDone: make(chan struct{}),
		failRestore: o.FailRestore, logger: o.Logger,
	}
	if f.logger == nil {
		f.logger = slog.New(slog.DiscardHandler)
	}
	if o.FlushRecords > 0 {
		f.flushAtRecords = o.FlushRecords
	}
	for p := int(o.Shard); p < o.Partitions; p += o.Shards {
		f.partitions = append(f.partitions, core.Partition(p))
	}
	path, partitions, shards := o.Path, o.Partitions, o.Shards
	f.next = make([]atomic.Uint64, len(f.partitions))
	f.signals = make([]core.Signal, len(f.partitions))
	db, err := bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		return nil, fmt.Errorf("raftlog: open %s: %w", path, err)
	}
	if err := f.init(db, partitions, shards); err != nil {
		db.Close()
		return nil, err
	}
	f.db = db
	go f.runFlusher()
	return f, nil
}

// init creates missing buckets, checks the partitioning and loads the
// in-memory state from db.
func (f *Engine) init(db *bolt.DB, partitions, shards int) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		for _, kv := range []struct {
			k []byte
			v int
		}{{metaPartitions, partitions}, {metaGroups, shards}, {metaGroup, int(f.shard)}} {
			if old := meta.Get(kv.k); old != nil {
				if got := binary.BigEndian.Uint64(old); got != uint64(kv.v) {
					return fmt.Errorf("%w: %s holds %s=%d, configured %d", core.ErrConfig, f.path, kv.k, got, kv.v)
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
func (f *Engine) migrate(tx *bolt.Tx) error {
	for _, p := range f.partitions {
		pb := tx.Bucket(partitionBucketName(p))
		if pb == nil {
			return fmt.Errorf("%w: %s has no bucket for partition %d", core.ErrCorrupt, f.path, p)
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
func (f *Engine) load(tx *bolt.Tx) error {
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
			return fmt.Errorf("raftlog: shard %d: load key metadata: %w", f.shard, err)
		}
	}
	if err := f.loadGroups(tx); err != nil {
		return err
	}
	f.clusterID = uuid.UUID{}
	if v := meta.Get(metaClusterID); v != nil {
		if len(v) != 16 {
			return fmt.Errorf("%w: %s: cluster ID of %d bytes", core.ErrCorrupt, f.path, len(v))
		}
		f.clusterID = uuid.UUID(v)
	}
	f.mem = newMemTable(f.nextOffsets(), f.applied.Load(), f.lastTime, f.flushAtRecords)
	f.frozen = nil
	return nil
}

// slot returns the index of partition p in f.partitions.
func (f *Engine) slot(p core.Partition) (int, bool) {
	if p < 0 || int(p)%f.shards != int(f.shard) {
		return 0, false
	}
	i := int(p) / f.shards
	return i, i < len(f.partitions)
}

// Close flushes the tables (so a clean restart re-applies nothing), stops
// the flusher and closes the file. Raft must be stopped: this runs off the
// FSM goroutine.
func (f *Engine) Close() error {
	f.flush()
	f.stopFlusher()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	return f.db.Close()
}

// stopFlusher stops the flusher after the flush in progress, if any; a
// table frozen and not yet being written stays unwritten (close flushes
// first; tests stop it alone to simulate a crash).
func (f *Engine) stopFlusher() {
	f.stopOnce.Do(func() { close(f.flushStop) })
	<-f.flushDone
}

func WriteFileSync(path string, r io.Reader) error {
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

func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Flush freezes the active table and waits until the flusher has written
// every table, so the state file covers everything applied; it returns
// the applied index the file then holds.
func (f *Engine) Flush() uint64 {
	f.flush()
	return f.applied.Load()
}

// Applied is the raft index of the last entry applied.
func (f *Engine) Applied() uint64 { return f.applied.Load() }

// NextOffset is the offset the next record of partition p takes, as
// applied here. p must be hosted by this engine's shard.
func (f *Engine) NextOffset(p core.Partition) uint64 {
	i, _ := f.slot(p)
	return f.next[i].Load()
}

// PartitionSignal is woken by every apply that grows partition p (hosted
// by this engine's shard).
func (f *Engine) PartitionSignal(p core.Partition) *core.Signal {
	i, _ := f.slot(p)
	return &f.signals[i]
}

// AppliedSignal is woken by every apply.
func (f *Engine) AppliedSignal() *core.Signal { return &f.appSig }

// fatal stops the node: a replica that cannot apply or store what its
// peers do must not go on and diverge. The line is logged first, so it
// reaches the log's logger as well as the panic's output.
func (f *Engine) fatal(format string, args ...any) {
	msg := fmt.Sprintf("raftlog: shard %d: "+format, append([]any{f.shard}, args...)...)
	f.logger.Error(msg)
	panic(msg)
}
