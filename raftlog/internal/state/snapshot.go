package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Snapshots.
//
// The FSM's state is a durable bbolt file, and Snapshot flushes the
// in-memory table into it, so a snapshot taken for log compaction needs to
// record nothing but the fact that the file covers its index: Persist
// writes a small marker and its cost stays flat however long the history
// grows.
//
// A follower that is behind the compacted log needs the state itself. Raft
// gets it by opening the latest snapshot (to send InstallSnapshot); the
// snapshotStore wrapper answers an Open of a marker with a full, consistent
// copy of the current state, streamed from a bbolt read transaction (which
// does not block writers). That copy may be newer than the marker's index;
// the receiver then skips the entries it already holds, because applies are
// idempotent by raft index.
//
// Snapshot stream format:
//
//	8 bytes  magic "ESRLSNAP"
//	byte     format version (1)
//	byte     kind: 1 marker, 2 full copy
//	8 bytes  applied raft index of the state, big endian
//	...      for a full copy: the bbolt file, exactly as bbolt's Tx.WriteTo writes it
const (
	snapshotMagic   = "ESRLSNAP"
	snapshotVersion = 1
	snapshotMarker  = 1
	snapshotFull    = 2
	snapshotHdrLen  = 8 + 1 + 1 + 8
)

type snapshotHeader struct {
	kind  byte
	index uint64
}

func (h snapshotHeader) encode() []byte {
	b := append([]byte(snapshotMagic), snapshotVersion, h.kind)
	return binary.BigEndian.AppendUint64(b, h.index)
}

func decodeSnapshotHeader(b []byte) (snapshotHeader, error) {
	if len(b) != snapshotHdrLen || string(b[:8]) != snapshotMagic || b[8] != snapshotVersion ||
		(b[9] != snapshotMarker && b[9] != snapshotFull) {
		return snapshotHeader{}, fmt.Errorf("%w: snapshot header %q", core.ErrCorrupt, b)
	}
	return snapshotHeader{kind: b[9], index: binary.BigEndian.Uint64(b[10:])}, nil
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

// openFullCopy returns a reader of a full snapshot of the current state
// and its exact length. The copy is produced only as it is read.
func (f *Engine) openFullCopy() (io.ReadCloser, int64, error) {
	f.dbMu.RLock() // not mu: a long stream must not hold up applies
	tx, err := f.db.Begin(false)
	if err != nil {
		f.dbMu.RUnlock()
		return nil, 0, fmt.Errorf("raftlog: snapshot read transaction: %w", err)
	}
	var applied uint64
	if v := tx.Bucket(bucketMeta).Get(metaApplied); v != nil {
		applied = binary.BigEndian.Uint64(v)
	}
	hdr := snapshotHeader{kind: snapshotFull, index: applied}.encode()
	c := &fullCopy{tx: tx, unlock: f.dbMu.RUnlock, hdr: bytes.NewReader(hdr)}
	return c, int64(len(hdr)) + tx.Size(), nil
}

// fullCopy streams a read transaction's view of the state file.
type fullCopy struct {
	tx     *bolt.Tx
	unlock func()
	hdr    *bytes.Reader

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
			_, err := c.tx.WriteTo(pw)
			pw.CloseWithError(err)
		}()
	})
	return c.pr.Read(p)
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

// Restore replaces the whole state with a full copy received from the
// leader (see snapshot.go for the format). It runs on raft's FSM
// goroutine.
func (f *Engine) Restore(rc io.ReadCloser) error {
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
		f.flush()
		return nil
	}
	tmp := f.path + ".restore"
	if err := WriteFileSync(tmp, rc); err != nil {
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
	if err := SyncDir(filepath.Dir(f.path)); err != nil {
		return err
	}
	db, err := bolt.Open(f.path, 0o600, BoltOptions())
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
		f.signals[i].Notify()
	}
	f.appSig.Notify()
	f.logger.Info("raftlog: installed a full copy of the state", "applied", f.applied.Load())
	return nil
}
