package raftlog

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
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
		return snapshotHeader{}, fmt.Errorf("%w: snapshot header %q", errCorrupt, b)
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

// markerSnapshot is what the FSM hands raft for compaction.
type markerSnapshot struct{ index uint64 }

func (s markerSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(snapshotHeader{kind: snapshotMarker, index: s.index}.encode()); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (markerSnapshot) Release() {}

// snapshotStore wraps raft's file store so that opening a marker yields a
// full copy of the live state.
type snapshotStore struct {
	raft.SnapshotStore
	fsm *fsm
}

func (s *snapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.SnapshotStore.Open(id)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(rc)
	hb, err := br.Peek(snapshotHdrLen)
	if err != nil {
		rc.Close()
		return nil, nil, fmt.Errorf("raftlog: snapshot %s: %w", id, err)
	}
	h, err := decodeSnapshotHeader(hb)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	if h.kind == snapshotFull {
		return meta, readCloser{br, rc}, nil
	}
	rc.Close()
	full, size, err := s.fsm.openFullCopy()
	if err != nil {
		return nil, nil, err
	}
	m := *meta
	m.Size = size
	return &m, full, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// openFullCopy returns a reader of a full snapshot of the current state
// and its exact length. The copy is produced only as it is read.
func (f *fsm) openFullCopy() (io.ReadCloser, int64, error) {
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

// catchUpToSnapshot brings the state file up to the newest snapshot in
// store when it is behind it, before raft starts. A follower that installs
// a snapshot from the leader has raft save it before the FSM restores it,
// and with NoSnapshotRestoreOnStart a restart takes the saved snapshot's
// index as applied without restoring anything: after a crash (or a failed
// Restore) in between, the file would stay behind, and the entries between
// its index and the snapshot's are in neither the file nor the raft log.
// The snapshot's own header says which state it holds (raft's index in
// its metadata may be higher: entries the FSM never sees, such as a new
// leader's no-op, count there). A full copy above the file is restored
// here. A marker above it means the file is not the one the marker was
// taken from (Snapshot flushes before it returns one), and opening fails
// rather than run on a state with a hole in it.
func (f *fsm) catchUpToSnapshot(store raft.SnapshotStore) error {
	metas, err := store.List()
	if err != nil {
		return fmt.Errorf("list snapshots: %w", err)
	}
	applied := f.applied.Load()
	if len(metas) == 0 || metas[0].Index <= applied {
		return nil
	}
	m := metas[0]
	_, rc, err := store.Open(m.ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", m.ID, err)
	}
	br := bufio.NewReader(rc)
	var h snapshotHeader
	hb, err := br.Peek(snapshotHdrLen)
	if err == nil {
		h, err = decodeSnapshotHeader(hb)
	}
	switch {
	case err != nil:
		rc.Close()
		return fmt.Errorf("snapshot %s: %w", m.ID, err)
	case h.index <= applied:
		rc.Close()
		return nil
	case h.kind != snapshotFull:
		rc.Close()
		return fmt.Errorf("%w: the state file's applied index %d is behind snapshot marker %s (index %d): it is not the file the snapshot was taken from", errCorrupt, applied, m.ID, h.index)
	}
	if err := f.Restore(readCloser{br, rc}); err != nil {
		return fmt.Errorf("restore snapshot %s, saved but not restored: %w", m.ID, err)
	}
	return nil
}
