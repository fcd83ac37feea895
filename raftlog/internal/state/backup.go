package state

import (
	"fmt"
	"io"

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

// OpenBackup opens a full copy of the state as of the last flush.
func (f *Engine) OpenBackup() (*BackupCopy, error) {
	rc, size, err := f.openFullCopy()
	if err != nil {
		return nil, err
	}
	c := rc.(*fullCopy)
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
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	err := f.guard("replace cluster ID", func() error {
		return f.db.Update(func(tx *bolt.Tx) error {
			return putValue(tx.Bucket(bucketMeta), metaClusterID, id[:])
		})
	})
	if err != nil {
		return fmt.Errorf("raftlog: store the restored cluster ID: %w", err)
	}
	f.mu.Lock()
	f.clusterID = id
	f.mu.Unlock()
	return nil
}
