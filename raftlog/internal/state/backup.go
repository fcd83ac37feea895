package state

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/esraft/esraft/raftlog/internal/core"
)

// Backups (raftlog/backup.go) are the full copies a leader sends a
// follower (snapshot.go), taken on demand: the same consistent view of
// one shard, with what a backup's manifest says of it.

// BackupCopy is a full copy of the shard's state for a backup. Read it to
// its end, then Close it; until then it holds the view it was opened on
// (a bbolt read transaction, and the segments shared, see openFullCopy).
type BackupCopy struct {
	io.ReadCloser
	// Size is the copy's exact length in bytes.
	Size int64
	// Applied is the raft index the copy's state has applied.
	Applied uint64
	// Heads holds the next offset of each partition of the shard, as of
	// Applied.
	Heads map[core.Partition]uint64
}

// OpenBackup opens a full copy of the state as of the last flush. The
// records of keys exclude selects (nil: none) are copied as tombstones:
// a backup leaves them out, and the copy's index still records the
// original segments' CRCs (ResealSegments after it is installed).
func (f *Engine) OpenBackup(exclude func(key []byte) bool) (*BackupCopy, error) {
	rc, size, err := f.openFullCopy()
	if err != nil {
		return nil, err
	}
	c := rc.(*fullCopy)
	c.exclude = exclude
	b := &BackupCopy{ReadCloser: rc, Size: size, Heads: map[core.Partition]uint64{}}
	err = f.guard("backup", func() error {
		var err error
		if b.Applied, err = fileApplied(c.tx); err != nil {
			return indexError(f.path, err)
		}
		for _, p := range f.partitions {
			next, err := getUint64(c.tx.Bucket(partitionBucketName(p)), keyNextOffset)
			if err != nil {
				return indexError(f.path, fmt.Errorf("partition %d next offset: %w", p, err))
			}
			b.Heads[p] = next
		}
		return nil
	})
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("raftlog: backup: %w", f.noteDamage(err))
	}
	return b, nil
}

// MarkerSnapshot is the body of a snapshot that records that the state
// files cover index (what the FSM's Persist writes).
func MarkerSnapshot(index uint64) []byte {
	return snapshotHeader{kind: snapshotMarker, index: index}.encode()
}

// ReplaceClusterID stores id as the cluster's identity, whatever the state
// held: only for a state restored from a backup, before any raft runs on
// it, so that the restored cluster is not the one the backup was taken
// of. Applies never change an identity once set (clusterid.go).
func (f *Engine) ReplaceClusterID(id uuid.UUID) error {
	f.lockWrites()
	defer f.unlockWrites()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	err := f.guard("replace cluster ID", func() error {
		return f.db.Load().Update(func(tx *bolt.Tx) error {
			return putValue(tx.Bucket(bucketMeta), metaClusterID, id[:])
		})
	})
	if err != nil {
		return fmt.Errorf("raftlog: store the restored cluster ID: %w", err)
	}
	f.mu.Lock()
	f.setClusterID(id)
	f.mu.Unlock()
	return nil
}

// copySegment copies a segment's bytes from r to w and returns the
// CRC-32C of the bytes read (what the index records). Without exclude
// they are the bytes written; with it, each frame of an excluded key is
// written as a tombstone frame of the same length, so positions stay
// true and the receiver's index covers the file as it is.
func (c *fullCopy) copySegment(w *crcWriter, r io.Reader, length int64) (uint32, error) {
	if c.exclude == nil {
		_, err := io.Copy(w, r)
		return w.crc, err
	}
	orig := &crcWriter{w: io.Discard}
	br := bufio.NewReaderSize(io.TeeReader(r, orig), 1<<20)
	hdr := make([]byte, segHeaderLen)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return 0, err
	}
	if _, err := w.Write(hdr); err != nil {
		return 0, err
	}
	var fh [frameHdrLen]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(br, fh[:]); errors.Is(err, io.EOF) {
			return orig.crc, nil
		} else if err != nil {
			return 0, err
		}
		n := binary.BigEndian.Uint32(fh[:])
		if int64(n) > length {
			return 0, fmt.Errorf("%w: a frame of %d bytes in a segment of %d", core.ErrCorrupt, n, length)
		}
		payload = slices.Grow(payload[:0], int(n))[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return 0, err
		}
		if !isTombstone(payload) {
			key, _, err := storedKeySeq(payload)
			if err != nil {
				return 0, err
			}
			if c.exclude(key) {
				clear(payload)
				payload[0] = tombstoneFormat
				binary.BigEndian.PutUint32(fh[4:], crc32c(payload))
			}
		}
		if _, err := w.Write(fh[:]); err != nil {
			return 0, err
		}
		if _, err := w.Write(payload); err != nil {
			return 0, err
		}
	}
}

// ResealSegments records, in the index, the CRC-32C of every segment as
// its file now is: after a restore from a backup whose excluded records
// were sent as tombstones, the copied index records the CRCs of the
// original files.
func (f *Engine) ResealSegments() error {
	f.lockWrites()
	defer f.unlockWrites()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.guard("reseal segments", func() error {
		return f.db.Load().Update(func(tx *bolt.Tx) error {
			for _, p := range f.partitions {
				sb := tx.Bucket(partitionBucketName(p)).Bucket(bucketSegs)
				var segs []segEntry
				err := sb.ForEach(func(k, v []byte) error {
					s, err := openSegEntry(k, v)
					segs = append(segs, s)
					return err
				})
				if err != nil {
					return indexError(f.path, err)
				}
				for _, s := range segs {
					fh, err := f.segFile(f.segPath(p, s.base), false)
					if err != nil {
						return err
					}
					cw := &crcWriter{w: io.Discard}
					if _, err := io.Copy(cw, io.NewSectionReader(fh, 0, s.length)); err != nil {
						return err
					}
					s.crc = cw.crc
					if err := putValue(sb, be64(s.base), encodeSegEntry(nil, &s)); err != nil {
						return err
					}
				}
			}
			return f.load(tx)
		})
	})
}
