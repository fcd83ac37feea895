// Package core holds the log's value types and errors: records, results,
// positions, key conditions and consumer-group state, and the sentinel
// errors every layer returns. It imports nothing of the log; every package
// of raftlog may import it, and the raftlog facade re-exports it.
package core

import (
	"time"

	"github.com/google/uuid"
)

// Partition numbers a partition of the log: the unit of ordering and of
// consumer assignment, 0 .. partitions-1.
type Partition int

// Shard numbers a raft group of the log: the unit of replication and
// leadership, 0 .. shards-1. Partition p lives in shard p mod shards.
type Shard int

// Header is a named value carried with a record.
type Header struct {
	Key   string
	Value []byte
}

// NewRecord is a record to append. A zero ID is replaced by a new
// time-ordered UUID (version 7) before the first attempt, so retries inside
// Append reuse it; callers that retry Append themselves after an error of
// unknown outcome must set IDs so the retry is deduplicated.
type NewRecord struct {
	ID      uuid.UUID
	Headers []Header
	Value   []byte
}

// Record is a committed record as read back from the log.
type Record struct {
	Partition Partition
	Offset    uint64 // dense from 0 within the partition
	Key       string
	KeySeq    uint64 // dense from 1 within the key
	ID        uuid.UUID
	Time      time.Time // stamped by the leader that proposed the entry
	Headers   []Header
	Value     []byte
}

// Position names a point in one shard's applied history: a raft index of
// the shard's log. A replica that has applied a Position holds every record
// acknowledged up to it.
type Position struct {
	Shard Shard
	Index uint64
}

// AppendResult reports where an acknowledged batch went. Records of the
// batch occupy offsets FirstOffset..FirstOffset+Count-1 and key sequences
// FirstKeySeq..FirstKeySeq+Count-1.
type AppendResult struct {
	Partition   Partition
	FirstOffset uint64
	FirstKeySeq uint64
	Count       int
	Time        time.Time
	// Position is where the batch was applied; pass it to WaitApplied on
	// another node to read this write there.
	Position Position
	// Duplicate is true when every record ID had already been committed
	// before this attempt: nothing was appended by it and the result is that
	// of the original append. The original may be this same call: Append
	// retries internally after an outcome it cannot know (a leader change,
	// a broken forward), and a retry that finds its first attempt committed
	// reports Duplicate. Do not skip your own side effects on Duplicate
	// unless you know you retried.
	Duplicate bool
}

// LastOffset is the offset of the batch's last record.
func (r AppendResult) LastOffset() uint64 { return r.FirstOffset + uint64(r.Count) - 1 }

// LastKeySeq is the key sequence of the batch's last record.
func (r AppendResult) LastKeySeq() uint64 { return r.FirstKeySeq + uint64(r.Count) - 1 }

// KeyInfo is the state of a key in its partition.
type KeyInfo struct {
	// Seq is the sequence of the key's last record, 0 if it has none. A
	// deleted or truncated key keeps its sequence.
	Seq uint64
	// First is the lowest sequence a read can return: 1, or the sequence
	// the key was truncated before (Seq+1 once deleted), or the first its
	// retention keeps by truncate-before and max count (records from
	// First on may still be hidden by a max age).
	First uint64
	// Deleted reports a soft-deleted key.
	Deleted bool
}

// Exists reports whether the key has records and is not deleted.
func (k KeyInfo) Exists() bool { return k.Seq > 0 && !k.Deleted }
