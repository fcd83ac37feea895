package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Snapshots.
//
// The FSM's state is durable in the state files, and Snapshot flushes the
// in-memory table into them, so a snapshot taken for log compaction needs
// to record nothing but the fact that the files cover its index: Persist
// writes a small marker and its cost stays flat however long the history
// grows.
//
// A follower that is behind the compacted log needs the state itself. Raft
// gets it by opening the latest snapshot (to send InstallSnapshot); the
// snapshotStore wrapper answers an Open of a marker with a full, consistent
// copy of the current state: the index file streamed from a bbolt read
// transaction (which does not block writers) and the segments up to the
// lengths that transaction records (the flusher only appends past them).
// That copy may be newer than the marker's index; the receiver then skips
// the entries it already holds, because applies are idempotent by raft
// index.
//
// Snapshot stream format:
//
//	8 bytes  magic "ESRLSNAP"
//	byte     format version: 2 (1: a full copy is a format-1 bbolt file alone)
//	byte     kind: 1 marker, 2 full copy
//	8 bytes  applied raft index of the state, big endian
//
// and for a full copy (version 2), all integers big endian:
//
//	8 bytes  length L of the index file, then its L bytes (bbolt's Tx.WriteTo)
//	4 bytes  CRC-32C of them
//	4 bytes  number of segments, then per segment:
//	         4 bytes partition, 8 bytes base offset, 8 bytes length N,
//	         N bytes (the file's first N bytes), 4 bytes their CRC-32C
//
// The sender checks each segment's bytes against the CRC its index records
// as it streams them (a damaged segment is never sent); the receiver checks
// every CRC before it installs anything.
const (
	snapshotMagic   = "ESRLSNAP"
	snapshotVersion = 2
	snapshotV1      = 1
	snapshotMarker  = 1
	snapshotFull    = 2
	snapshotHdrLen  = 8 + 1 + 1 + 8
	segCopyHdrLen   = 4 + 8 + 8
)

type snapshotHeader struct {
	version byte
	kind    byte
	index   uint64
}

func (h snapshotHeader) encode() []byte {
	b := append([]byte(snapshotMagic), snapshotVersion, h.kind)
	return binary.BigEndian.AppendUint64(b, h.index)
}

func decodeSnapshotHeader(b []byte) (snapshotHeader, error) {
	if len(b) != snapshotHdrLen || string(b[:8]) != snapshotMagic || (b[8] != snapshotVersion && b[8] != snapshotV1) ||
		(b[9] != snapshotMarker && b[9] != snapshotFull) {
		return snapshotHeader{}, fmt.Errorf("%w: snapshot header %q", core.ErrCorrupt, b)
	}
	return snapshotHeader{version: b[8], kind: b[9], index: binary.BigEndian.Uint64(b[10:])}, nil
}

func readSnapshotHeader(r io.Reader) (snapshotHeader, error) {
	b := make([]byte, snapshotHdrLen)
	if _, err := io.ReadFull(r, b); err != nil {
		return snapshotHeader{}, fmt.Errorf("raftlog: read snapshot header: %w", err)
	}
	return decodeSnapshotHeader(b)
}

type readCloser struct {
	io.Reader
	io.Closer
}

// copiedSeg is a segment of a full copy.
type copiedSeg struct {
	p core.Partition
	s segEntry
}

// openFullCopy returns a reader of a full snapshot of the current state
// and its exact length. The copy is produced only as it is read.
func (f *Engine) openFullCopy() (io.ReadCloser, int64, error) {
	f.dbMu.RLock() // not mu: a long stream must not hold up applies
	f.segMu.RLock()
	unlock := func() {
		f.segMu.RUnlock()
		f.dbMu.RUnlock()
	}
	var tx *bolt.Tx
	var applied uint64
	var segs []copiedSeg
	err := f.noteDamage(f.guard("full copy", func() error {
		var err error
		if tx, err = f.beginIndex(); err != nil {
			return err
		}
		if applied, err = fileApplied(tx); err != nil {
			return indexError(f.path, err)
		}
		for _, p := range f.partitions {
			err := tx.Bucket(partitionBucketName(p)).Bucket(bucketSegs).ForEach(func(k, v []byte) error {
				s, err := openSegEntry(k, v)
				segs = append(segs, copiedSeg{p: p, s: s})
				return err
			})
			if err != nil {
				return indexError(f.path, fmt.Errorf("partition %d segment table: %w", p, err))
			}
		}
		return nil
	}))
	if err != nil {
		if tx != nil {
			tx.Rollback()
		}
		unlock()
		return nil, 0, fmt.Errorf("raftlog: snapshot: %w", err)
	}
	hdr := snapshotHeader{kind: snapshotFull, index: applied}.encode()
	size := int64(len(hdr)) + 8 + tx.Size() + 4 + 4
	for _, s := range segs {
		size += segCopyHdrLen + s.s.length + 4
	}
	c := &fullCopy{f: f, tx: tx, segs: segs, unlock: unlock, hdr: bytes.NewReader(hdr)}
	return c, size, nil
}

// fullCopy streams a read transaction's view of the state.
type fullCopy struct {
	f      *Engine
	tx     *bolt.Tx
	segs   []copiedSeg
	unlock func()
	hdr    *bytes.Reader

	// exclude, if set, selects the keys whose records are sent as
	// tombstones (backup.go).
	exclude func(key []byte) bool

	once sync.Once
	pr   *io.PipeReader
	done chan struct{}

	closeOnce sync.Once
}

func (c *fullCopy) Read(p []byte) (int, error) {
	if c.hdr.Len() > 0 {
		return c.hdr.Read(p)
	}
	c.once.Do(func() {
		pr, pw := io.Pipe()
		c.pr, c.done = pr, make(chan struct{})
		go func() {
			defer close(c.done)
			pw.CloseWithError(c.write(pw))
		}()
	})
	return c.pr.Read(p)
}

// crcWriter passes writes on and keeps their CRC-32C.
type crcWriter struct {
	w   io.Writer
	crc uint32
}

func (w *crcWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.crc = crc32.Update(w.crc, castagnoli, p[:n])
	return n, err
}

func (c *fullCopy) write(w io.Writer) error {
	f := c.f
	if _, err := w.Write(be64(uint64(c.tx.Size()))); err != nil {
		return err
	}
	cw := &crcWriter{w: w}
	if err := f.guard("full copy", func() error { _, err := c.tx.WriteTo(cw); return err }); err != nil {
		return err
	}
	b := binary.BigEndian.AppendUint32(nil, cw.crc)
	b = binary.BigEndian.AppendUint32(b, uint32(len(c.segs)))
	if _, err := w.Write(b); err != nil {
		return err
	}
	for _, s := range c.segs {
		name := f.segPath(s.p, s.s.base)
		fh, err := f.segFile(name, false)
		if err != nil {
			return f.noteDamage(err)
		}
		b := binary.BigEndian.AppendUint32(nil, uint32(s.p))
		b = binary.BigEndian.AppendUint64(b, s.s.base)
		b = binary.BigEndian.AppendUint64(b, uint64(s.s.length))
		if _, err := w.Write(b); err != nil {
			return err
		}
		cw := &crcWriter{w: w}
		orig, err := c.copySegment(cw, io.NewSectionReader(fh, 0, s.s.length), s.s.length)
		if err != nil {
			return err
		}
		if orig != s.s.crc {
			return f.noteDamage(&CorruptError{File: name, Offset: -1, Partition: s.p, Record: s.s.base,
				What: fmt.Sprintf("the segment's CRC-32C is %08x, the index records %08x", orig, s.s.crc)})
		}
		if _, err := w.Write(binary.BigEndian.AppendUint32(nil, cw.crc)); err != nil {
			return err
		}
	}
	return nil
}

func (c *fullCopy) Close() error {
	c.closeOnce.Do(func() {
		if c.pr != nil {
			c.pr.Close()
			<-c.done
		}
		c.tx.Rollback()
		c.unlock()
	})
	return nil
}

// Names used while a full copy is installed (in the index file's
// directory): the copy is received into stagingDir, which is renamed to
// readyDir once every file of it is verified and durable (the commit
// point); finishInstall then moves its files into place.
const (
	stagingDir = "restore.tmp"
	readyDir   = "restore.ready"
)

// Restore replaces the whole state with a full copy received from the
// leader (see the format above). It runs on raft's FSM goroutine.
func (f *Engine) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	f.stopCompaction("a full copy is being installed") // it would hold the flusher, which the waits below need
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
	if h.index <= f.applied.Load() {
		// The copy is not newer than what this replica has applied: it
		// is the leader's state file, which covers the leader's last
		// flush, not its last apply, and a follower can be ahead of it
		// (after CatchUpToSnapshot restored a copy from an earlier
		// leader, say). Both are states of the same committed history,
		// so ours holds everything the copy does; replacing it would
		// move the replica back and hide records it has shown until
		// raft sends their entries again. Keep it, flushed, so the file
		// covers the installed snapshot as a restored one would; the
		// entries raft sends after the snapshot's index are skipped up
		// to ours (TestRestoreOlderFullCopyKeepsNewerState).
		if err := f.flush(false); err != nil {
			return err
		}
		f.metrics.snapshotsInstalled.Add(1)
		return nil
	}
	stage := filepath.Join(f.dir, stagingDir)
	if err := f.receiveCopy(stage, h.version, rc); err != nil {
		os.RemoveAll(stage)
		return fmt.Errorf("raftlog: receive snapshot: %w", err)
	}
	if err := os.Rename(stage, filepath.Join(f.dir, readyDir)); err != nil {
		return fmt.Errorf("raftlog: install snapshot: %w", err)
	}
	if err := SyncDir(f.dir); err != nil {
		return err
	}
	// A flush in progress writes the files being replaced; let it end (its
	// state is discarded with the rest). No table is frozen after it: this
	// is the FSM goroutine, the only one that freezes.
	if err := f.waitFlushed(false); err != nil {
		return err
	}
	f.lockWrites()
	defer f.unlockWrites()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closeSegFiles()
	if err := f.db.Load().Close(); err != nil {
		return fmt.Errorf("raftlog: close state for restore: %w", err)
	}
	if err := f.finishInstall(); err != nil {
		return fmt.Errorf("raftlog: install snapshot: %w", err)
	}
	db, err := f.openIndex(f.path)
	if err != nil {
		return fmt.Errorf("raftlog: open restored state: %w", err)
	}
	f.db.Store(db)
	if err := f.guard("restore", func() error { return f.init(db, f.totalPartitions, f.shards) }); err != nil {
		return fmt.Errorf("raftlog: restored state: %w", err)
	}
	if err := f.finishErasures(); err != nil {
		return fmt.Errorf("raftlog: restored state: %w", err)
	}
	f.damage.Store(nil) // the damaged state, if any, is gone
	for i := range f.signals {
		f.signals[i].Notify()
	}
	f.appSig.Notify()
	f.metrics.snapshotsInstalled.Add(1)
	f.logger.Info("raftlog: installed a full copy of the state", "applied", f.applied.Load())
	return nil
}

// receiveCopy writes the body of a full copy of the given version from r
// into directory stage, verifying every CRC, and makes it durable.
func (f *Engine) receiveCopy(stage string, version byte, r io.Reader) error {
	if err := os.RemoveAll(stage); err != nil {
		return err
	}
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return err
	}
	index := filepath.Join(stage, filepath.Base(f.path))
	if version == snapshotV1 {
		// A format-1 state file: it is converted when it is opened.
		if err := WriteFileSync(index, r); err != nil {
			return err
		}
	} else if err := receiveFile(index, r, -1); err != nil {
		return fmt.Errorf("index file: %w", err)
	}
	dirs := map[core.Partition]bool{}
	for _, p := range f.partitions {
		dirs[p] = true
		if err := os.MkdirAll(segmentDir(stage, p), 0o700); err != nil {
			return err
		}
	}
	if version == snapshotV1 {
		return f.syncStage(stage)
	}
	var nb [4]byte
	if _, err := io.ReadFull(r, nb[:]); err != nil {
		return err
	}
	for n := binary.BigEndian.Uint32(nb[:]); n > 0; n-- {
		var h [segCopyHdrLen]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		p, base := core.Partition(binary.BigEndian.Uint32(h[:])), binary.BigEndian.Uint64(h[4:])
		if !dirs[p] {
			return fmt.Errorf("%w: a segment of partition %d, which this shard does not host", core.ErrCorrupt, p)
		}
		name := filepath.Join(segmentDir(stage, p), segmentName(base))
		if err := receiveFile(name, r, int64(binary.BigEndian.Uint64(h[12:]))); err != nil {
			return fmt.Errorf("segment %d of partition %d: %w", base, p, err)
		}
	}
	return f.syncStage(stage)
}

// receiveFile writes a length-prefixed (length -1) or a length-n file and
// its CRC-32C trailer from r to name, fsynced, checking the CRC.
func receiveFile(name string, r io.Reader, n int64) error {
	if n < 0 {
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return err
		}
		n = int64(binary.BigEndian.Uint64(b[:]))
	}
	if n < 0 {
		return fmt.Errorf("%w: file length %d", core.ErrCorrupt, n)
	}
	fh, err := os.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer fh.Close()
	cw := &crcWriter{w: fh}
	if _, err := io.CopyN(cw, r, n); err != nil {
		return err
	}
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	if got := binary.BigEndian.Uint32(b[:]); got != cw.crc {
		return fmt.Errorf("%w: received %d bytes with CRC-32C %08x, the sender's is %08x", core.ErrCorrupt, n, cw.crc, got)
	}
	if err := fh.Sync(); err != nil {
		return err
	}
	return fh.Close()
}

// syncStage fsyncs the directories of a received copy.
func (f *Engine) syncStage(stage string) error {
	for _, p := range f.partitions {
		if err := SyncDir(segmentDir(stage, p)); err != nil {
			return err
		}
	}
	return SyncDir(stage)
}

// finishInstall moves a received full copy whose receipt completed
// (readyDir) into place: each hosted partition's segment directory, then
// the index file. It is idempotent, so Open repeats it after a crash in
// the middle, before it opens anything; a copy whose receipt did not
// complete (stagingDir) is removed.
func (f *Engine) finishInstall() error {
	if err := os.RemoveAll(filepath.Join(f.dir, stagingDir)); err != nil {
		return err
	}
	ready := filepath.Join(f.dir, readyDir)
	if _, err := os.Stat(ready); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for _, p := range f.partitions {
		src := segmentDir(ready, p)
		if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
			continue // moved before a crash
		}
		dst := segmentDir(f.dir, p)
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
		if err := os.Rename(src, dst); err != nil {
			return err
		}
	}
	index := filepath.Join(ready, filepath.Base(f.path))
	if _, err := os.Stat(index); err == nil {
		if err := SyncDir(f.dir); err != nil {
			return err
		}
		if err := os.Rename(index, f.path); err != nil {
			return err
		}
	}
	if err := SyncDir(f.dir); err != nil {
		return err
	}
	return os.RemoveAll(ready)
}
