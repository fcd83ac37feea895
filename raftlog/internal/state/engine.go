// Package state is the state engine of one shard: the records of its
// partitions, their key indexes, the record-ID index, key metadata and (in
// shard 0) the consumer groups. Records are stored once, in append-only
// segment files per partition with a CRC-32C per record (segment.go); the
// rest, with the segments' lengths and positions, in a bbolt index file
// whose values carry their own CRC-32C (index.go). Both are written by
// large fsynced flushes of in-memory tables (flush.go), and every byte read
// back is verified: damage is an ErrCorrupt naming the file, never a wrong
// value or a panic. FSM (fsm.go) adapts it to
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
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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
	// writeMu (a semaphore: a compaction gives up waiting for it) is held
	// by whatever writes the index file: the flusher, a drop, Restore, an
	// index compaction while it takes its snapshot and while it swaps the
	// file (compact.go).
	// Lock order: writeMu, dbMu, a bbolt read transaction, then mu
	// (memtable.go). db changes only under writeMu and, but for an index
	// compaction, dbMu held exclusively (see beginIndex).
	writeMu        chan struct{}
	writersWaiting atomic.Int32 // for writeMu, but the flusher (lockWrites)
	// swapMu is held shared while a reader loads db and begins a read
	// transaction (beginIndex), exclusively while a compaction swaps it.
	swapMu sync.RWMutex
	dbMu   sync.RWMutex
	mu     sync.RWMutex
	db     atomic.Pointer[bolt.DB]

	// The segment files: in dir (the index file's directory), written
	// through fs. segs[slot] is partition slot's last segment as the index
	// records it (nil if none), owned by the flusher (and by Open and
	// Restore, when no flusher runs). files holds open handles, shared by
	// readers and the flusher. segMu is held shared by full-copy streams
	// and the scrub, exclusively by in-place erasure (erase.go).
	dir      string
	fs       FS
	segBytes int64
	segs     []*segEntry
	filesMu  sync.Mutex
	files    map[string]File
	segMu    sync.RWMutex

	// damage is the first corruption found (Damage); flushErr the error of
	// the last flush attempt while flushes fail, nil once one succeeds.
	damage   atomic.Pointer[error]
	flushErr atomic.Pointer[error]

	// The scrub goroutine (scrub.go): bytes per second, pause between
	// passes; scrubDone is nil when it does not run.
	scrubRate     int64
	scrubInterval time.Duration
	scrubStop     chan struct{}
	scrubDone     chan struct{}
	scrubStopOnce sync.Once

	applied  atomic.Uint64
	lastTime int64 // FSM goroutine only
	// raftBytes counts the bytes of the command entries applied since
	// Open (FSM goroutine only); flushedRaftBytes is its value as of the
	// last table flushed, flushedIndex that table's last index: what the
	// log's compaction policy looks at (Flushed).
	raftBytes        uint64
	flushedRaftBytes atomic.Uint64
	flushedIndex     atomic.Uint64

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
	// clusterID is the cluster's identity as applied (clusterid.go), nil
	// or the zero UUID until the first CmdClusterID entry is; written
	// under mu (setClusterID) and flushed with the tables. It is an atomic
	// so that ClusterID reads it without the lock: raft's dialer and its
	// connections' first reads ask for it (tls.go in raftlog), and must
	// not wait behind an apply or a restore.
	clusterID atomic.Pointer[uuid.UUID]
	// ret is the retention rules (retention.go); guarded like the tables
	// and flushed with them. appliedTime is the time as of the last entry
	// applied, which retention is judged against.
	ret         *retention
	appliedTime atomic.Int64
	// dropPending: a flush made a raised low offset durable and its
	// segments are not dropped yet (scavenge.go).
	dropPending atomic.Bool
	scavenged   scavengeCounters
	// compaction is the index compaction in progress, nil if none
	// (compact.go); beforeSwap, if set, runs at each step of its swap,
	// with the copy (tests look at the files there, or fail the step).
	compaction atomic.Pointer[compactRun]
	beforeSwap func(step string, copy *bolt.DB) error
	// digest folds what applies decide (digest.go); FSM goroutine only.
	digest applyDigest
	// metrics are the counters of Metrics (metrics.go).
	metrics engineMetrics

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
	halted    chan struct{} // closed by Halt
	// onDamage is Options.OnDamage.
	onDamage func(error)
	// onStopApplies is Options.OnStopApplies.
	onStopApplies func(error)
	haltOnce      sync.Once
	flushed       core.Signal // woken when the flusher drops a flushed table
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
	// In a partition's bucket: base offset -> segEntry, and base offset,
	// chunk -> positions of every positionEvery-th frame (segment.go).
	bucketSegs      = []byte("s")
	bucketPositions = []byte("x")

	metaApplied    = []byte("applied")
	metaTime       = []byte("time")
	metaPartitions = []byte("partitions")
	metaGroups     = []byte("groups")
	metaGroup      = []byte("group")
	metaClusterID  = []byte("cluster") // 16 bytes, a UUID (clusterid.go)
	// metaFormat is the index format, one byte, stored without a checksum:
	// formatSegments; files without it hold their records in bucketRecs
	// (format 1) and are converted at open (migrate.go).
	metaFormat = []byte("format")
)

// formatSegments is the format of index files written by this code.
const formatSegments = 2

func partitionBucketName(p core.Partition) []byte {
	return binary.BigEndian.AppendUint32([]byte("p"), uint32(p))
}

func be64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func BoltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout: 5 * time.Second,
		// The freelist is written with each commit (a few pages per flush)
		// so that Open reads it. Without it bbolt rebuilds it at open by
		// walking every page in a goroutine of its own, which panics on a
		// damaged page where no recover reaches it, or never ends on a
		// cycle of page pointers (RELIABILITY.md, bug 14).
		NoFreelistSync:  false,
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: 1 << 30, // fewer remaps, which wait for readers
	}
}

// Options configure an Engine.
type Options struct {
	// Path is the index file; the segment files go in p<P>/ beside it.
	Path string
	// LegacyPath, if set, is where a format-1 state file may be (fsm.db):
	// when Path does not exist and it does, it is converted into Path and
	// the segments (migrate.go), then removed.
	LegacyPath string
	Shard      core.Shard // the shard this engine is the state of
	Partitions int        // the log's partitions
	Shards     int        // the log's shards; the engine hosts partitions p with p mod Shards = Shard
	// IDRetention is how long record IDs are remembered (0: for ever).
	IDRetention time.Duration
	// FlushRecords overrides the table size that triggers a flush (tests).
	FlushRecords int
	// SegmentBytes overrides the size at which segments are sealed
	// (tests). Every replica must use the same, or their segments differ.
	SegmentBytes int64
	// FS is the file layer segment files are written through (nil: the
	// operating system's; tests inject faults with their own).
	FS FS
	// ScrubRate bounds the background scrub's reads, in bytes per second
	// (0: 16 MiB/s; negative: no scrub). ScrubInterval is the pause
	// between passes (0: an hour).
	ScrubRate     int64
	ScrubInterval time.Duration
	// FailRestore, if set, makes Restore fail while it returns true (tests).
	FailRestore func() bool
	// OnStopApplies, if set, is called (on a goroutine of its own) when
	// damage under an apply stops applies on this replica: the shard
	// should stop its raft (calling Halt first), so that a leader whose
	// applies stopped does not keep the leadership.
	OnStopApplies func(error)
	// OnDamage, if set, is called (on a goroutine of its own) once, when
	// the engine first finds its state damaged (Damage).
	OnDamage func(error)
	// Logger receives the engine's lines (nil: discarded).
	Logger *slog.Logger
	// DigestEvery, if not 0, has the engine log a digest of what it
	// decided for the entries of every window of that many raft indexes
	// (digest.go).
	DigestEvery uint64
	// ApplyTrace, if set, receives a line per applied entry saying what
	// it decided (digest.go; a diagnostic).
	ApplyTrace io.Writer
}

// Open opens (creating if needed) the shard's index file and segments,
// and checks that they were made for the same partitioning and that they
// are whole (checks.go): damage found here fails Open with an error
// wrapping core.ErrCorrupt that names the file and the recovery.
func Open(o Options) (*Engine, error) {
	f := &Engine{
		shard: o.Shard, shards: o.Shards, retention: int64(o.IDRetention), path: o.Path,
		flushAtRecords: flushRecords, flushAtBytes: flushBytes, totalPartitions: o.Partitions,
		writeMu: make(chan struct{}, 1), flushKick: make(chan struct{}, 1), flushStop: make(chan struct{}), flushDone: make(chan struct{}),
		halted: make(chan struct{}), onStopApplies: o.OnStopApplies, onDamage: o.OnDamage, failRestore: o.FailRestore, logger: o.Logger,
		dir: filepath.Dir(o.Path), fs: o.FS, segBytes: segmentBytes, files: map[string]File{},
		metrics: newEngineMetrics(), digest: applyDigest{every: o.DigestEvery, trace: o.ApplyTrace},
	}
	if f.logger == nil {
		f.logger = slog.New(slog.DiscardHandler)
	}
	if f.fs == nil {
		f.fs = OSFS{}
	}
	if o.FlushRecords > 0 {
		f.flushAtRecords = o.FlushRecords
	}
	if o.SegmentBytes > 0 {
		f.segBytes = o.SegmentBytes
	}
	f.scrubRate, f.scrubInterval = o.ScrubRate, o.ScrubInterval
	if f.scrubRate == 0 {
		f.scrubRate = defaultScrubRate
	}
	if f.scrubInterval <= 0 {
		f.scrubInterval = defaultScrubInterval
	}
	for p := int(o.Shard); p < o.Partitions; p += o.Shards {
		f.partitions = append(f.partitions, core.Partition(p))
	}
	f.next = make([]atomic.Uint64, len(f.partitions))
	f.signals = make([]core.Signal, len(f.partitions))
	if err := f.finishInstall(); err != nil {
		return nil, fmt.Errorf("raftlog: %s: finish installing a full copy: %w", f.path, err)
	}
	if err := os.Remove(f.path + compactSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("raftlog: %s: remove an unfinished index compaction: %w", f.path, err)
	}
	if err := f.convertLegacy(o.LegacyPath); err != nil {
		return nil, err
	}
	db, err := f.openIndex(f.path)
	if err != nil {
		return nil, err
	}
	f.db.Store(db)
	if err := f.guard("open", func() error { return f.init(db, o.Partitions, o.Shards) }); err != nil {
		f.closeSegFiles()
		db.Close()
		return nil, err
	}
	if err := f.finishErasures(); err != nil {
		f.closeSegFiles()
		db.Close()
		return nil, fmt.Errorf("raftlog: %s: finish erasing records: %w", f.path, err)
	}
	go f.runFlusher()
	if f.scrubRate >= 0 {
		f.scrubStop, f.scrubDone = make(chan struct{}), make(chan struct{})
		go f.runScrub()
	}
	return f, nil
}

// openIndex opens the bbolt index file at path after checking that it is
// whole (checkIndexFile); a panic of bbolt on a damaged page becomes an
// ErrCorrupt. A format-1 file is converted first (migrate.go).
func (f *Engine) openIndex(path string) (*bolt.DB, error) {
	if err := checkIndexFile(path); err != nil {
		return nil, err
	}
	db, err := f.openBolt(path)
	if err != nil {
		return nil, err
	}
	var legacy bool
	err = f.guard("open", func() (err error) {
		legacy, err = isFormat1(db)
		return err
	})
	if err != nil || !legacy {
		if err != nil {
			db.Close()
			return nil, f.noteDamage(err)
		}
		return db, nil
	}
	if err := f.convert(db, path); err != nil {
		db.Close()
		return nil, err
	}
	db.Close()
	return f.openIndex(path)
}

// openBolt opens the bbolt file at path; a panic of bbolt on a damaged
// page becomes an ErrCorrupt naming it.
func (f *Engine) openBolt(path string) (*bolt.DB, error) {
	var db *bolt.DB
	err := f.guard("open", func() error {
		var err error
		db, err = bolt.Open(path, 0o600, BoltOptions())
		return err
	})
	if err != nil && !errors.Is(err, core.ErrCorrupt) {
		err = fmt.Errorf("raftlog: open %s: %w", path, err)
	}
	return db, err
}

// init creates missing buckets, checks the partitioning, checks the
// segments against the index and loads the in-memory state from db.
func (f *Engine) init(db *bolt.DB, partitions, shards int) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(metaFormat); v == nil {
			if err := meta.Put(metaFormat, []byte{formatSegments}); err != nil {
				return err
			}
		} else if len(v) != 1 || v[0] != formatSegments {
			return fmt.Errorf("%w: %s holds index format %v, this version reads format %d", core.ErrConfig, f.path, v, formatSegments)
		}
		for _, kv := range []struct {
			k []byte
			v int
		}{{metaPartitions, partitions}, {metaGroups, shards}, {metaGroup, int(f.shard)}} {
			old, err := getValue(meta, kv.k)
			if err != nil {
				return indexError(f.path, err)
			}
			if old != nil {
				if got := binary.BigEndian.Uint64(old); len(old) != 8 || got != uint64(kv.v) {
					return fmt.Errorf("%w: %s holds %s=%d, configured %d", core.ErrConfig, f.path, kv.k, got, kv.v)
				}
			} else if err := putUint64(meta, kv.k, uint64(kv.v)); err != nil {
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
			for _, name := range [][]byte{bucketKeys, bucketKeyMeta, bucketSegs, bucketPositions} {
				if _, err := pb.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
		}
		return f.load(tx)
	})
}

// load sets the in-memory state from tx, and checks the segments against it.
func (f *Engine) load(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	applied, err := getUint64(meta, metaApplied)
	if err != nil {
		return indexError(f.path, err)
	}
	f.applied.Store(applied)
	f.flushedIndex.Store(applied)
	f.digest.resume(applied)
	t, err := getUint64(meta, metaTime)
	if err != nil {
		return indexError(f.path, err)
	}
	f.lastTime = int64(t)
	f.appliedTime.Store(f.lastTime)
	rb, err := getValue(meta, metaRetention)
	if err == nil {
		f.ret, err = f.decodeRetention(rb)
	}
	if err != nil {
		return indexError(f.path, err)
	}
	f.segs = make([]*segEntry, len(f.partitions))
	for i, p := range f.partitions {
		pb := tx.Bucket(partitionBucketName(p))
		next, err := getUint64(pb, keyNextOffset)
		if err != nil {
			return indexError(f.path, fmt.Errorf("partition %d next offset: %w", p, err))
		}
		f.next[i].Store(next)
		if f.segs[i], err = f.checkSegments(tx, i); err != nil {
			return err
		}
	}
	f.meta = make([]map[string]*keyMeta, len(f.partitions))
	for i, p := range f.partitions {
		f.meta[i] = map[string]*keyMeta{}
		err := tx.Bucket(partitionBucketName(p)).Bucket(bucketKeyMeta).ForEach(func(k, v []byte) error {
			v, err := openValue(k, v)
			if err != nil {
				return err
			}
			m, err := decodeKeyMeta(v)
			if err != nil {
				return fmt.Errorf("partition %d key %q: %w", p, k, err)
			}
			f.meta[i][string(k)] = &m
			return nil
		})
		if err != nil {
			return indexError(f.path, fmt.Errorf("shard %d: load key metadata: %w", f.shard, err))
		}
	}
	if err := f.loadGroups(tx); err != nil {
		return indexError(f.path, err)
	}
	id, err := getValue(meta, metaClusterID)
	if err != nil {
		return indexError(f.path, err)
	}
	var cluster uuid.UUID
	if id != nil {
		if len(id) != 16 {
			return indexError(f.path, fmt.Errorf("cluster ID of %d bytes", len(id)))
		}
		cluster = uuid.UUID(id)
	}
	f.setClusterID(cluster) // once: a reader never sees a zero ID in between
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
	f.stopCompaction("the engine is closing")
	if err := f.flush(true); err != nil {
		f.logger.Warn("raftlog: closing without writing the state's last tables; raft re-applies them at the next start", "shard", f.shard, "err", err)
	}
	f.Halt()
	f.stopScrub()
	f.stopFlusher()
	f.lockWrites() // a compaction that began meanwhile stops: the flusher did
	defer f.unlockWrites()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	f.closeSegFiles()
	return f.db.Load().Close()
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
// An error (wrapping core.ErrDiskFull while flushes fail) means the file
// does not.
func (f *Engine) Flush() (uint64, error) {
	if err := f.flush(true); err != nil {
		return 0, err
	}
	return f.applied.Load(), nil
}

// Flushed returns the raft index the state files cover as of the last
// flush, and how many bytes of raft command entries were applied from
// Open up to it: what the raft log's compaction policy looks at.
func (f *Engine) Flushed() (index, raftBytes uint64) {
	return f.flushedIndex.Load(), f.flushedRaftBytes.Load()
}

// FlushedSignal is woken after every flush attempt.
func (f *Engine) FlushedSignal() *core.Signal { return &f.flushed }

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

// stopApplies stops applies on this replica for good: a replica that
// cannot read the state it applies to must not go on and diverge, and a
// panic would crash it again at every restart. The engine is marked
// damaged (Damage), the line logged, and the FSM goroutine waits until
// Halt (the shard is closing); raft goes on replicating, and the node
// serves what it can read until it is wiped and rejoins.
func (f *Engine) stopApplies(err error) {
	if !errors.Is(err, core.ErrCorrupt) {
		err = fmt.Errorf("%w: %w", core.ErrCorrupt, err)
	}
	f.markDamaged(err)
	f.logger.Error("raftlog: applies stopped on this replica", "shard", f.shard, "err", err)
	if f.onStopApplies != nil {
		go f.onStopApplies(err)
	}
	<-f.halted
}

// Halt releases an FSM goroutine that stopApplies holds, with no outcome
// for its entries; the shard's raft must be shutting down (it calls Halt
// before it waits for the FSM).
func (f *Engine) Halt() { f.haltOnce.Do(func() { close(f.halted) }) }
