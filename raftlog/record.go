package raftlog

import (
	"time"

	"github.com/google/uuid"
)

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
	Partition int
	Offset    uint64 // dense from 0 within the partition
	Key       string
	KeySeq    uint64 // dense from 1 within the key
	ID        uuid.UUID
	Time      time.Time // stamped by the leader that proposed the entry
	Headers   []Header
	Value     []byte
}

// Position names a point in one raft group's applied history. A follower
// that has applied a Position holds every record acknowledged up to it.
type Position struct {
	Group int
	Index uint64
}

// AppendResult reports where an acknowledged batch went. Records of the
// batch occupy offsets FirstOffset..FirstOffset+Count-1 and key sequences
// FirstKeySeq..FirstKeySeq+Count-1.
type AppendResult struct {
	Partition   int
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

// AppendOption adjusts one Append call.
type AppendOption func(*appendOptions)

type appendOptions struct {
	partition    int
	hasPartition bool
	expected     uint64
	flags        uint64 // reqExpected, reqExists, reqAbsent, reqRecreate
}

// ToPartition appends to partition p instead of the partition the key
// routes to. Key sequences are kept per partition and key.
func ToPartition(p int) AppendOption {
	return func(o *appendOptions) { o.partition, o.hasPartition = p, true }
}

// ExpectKeySeq makes the append conditional: it succeeds only if the key's
// current sequence (the sequence of its last record, 0 for a new key; a
// deleted or truncated key keeps its sequence) equals seq. The check runs
// inside the replicated state machine, so two appends racing on one key
// cannot both pass it. The last condition option given wins.
func ExpectKeySeq(seq uint64) AppendOption {
	return func(o *appendOptions) { o.expected, o.flags = seq, o.flags&reqRecreate|reqExpected }
}

// ExpectKeyExists makes the append conditional on the key having records
// and not being deleted.
func ExpectKeyExists() AppendOption {
	return func(o *appendOptions) { o.flags = o.flags&reqRecreate | reqExists }
}

// ExpectKeyAbsent makes the append conditional on the key having no
// records, or being deleted (then Recreate is needed as well).
func ExpectKeyAbsent() AppendOption {
	return func(o *appendOptions) { o.flags = o.flags&reqRecreate | reqAbsent }
}

// Recreate lets an append to a soft-deleted key succeed: the key is no
// longer deleted, its sequence goes on from where it was, and the records
// from before the deletion stay hidden. Without it such an append fails
// with ErrKeyDeleted.
func Recreate() AppendOption {
	return func(o *appendOptions) { o.flags |= reqRecreate }
}

// KeyInfo is the state of a key in its partition.
type KeyInfo struct {
	// Seq is the sequence of the key's last record, 0 if it has none. A
	// deleted or truncated key keeps its sequence.
	Seq uint64
	// First is the lowest sequence a read can return: 1, or the sequence
	// the key was truncated before (Seq+1 once deleted).
	First uint64
	// Deleted reports a soft-deleted key.
	Deleted bool
}

// Exists reports whether the key has records and is not deleted.
func (k KeyInfo) Exists() bool { return k.Seq > 0 && !k.Deleted }

// ReadOptions bounds a read. Zero values take the log's defaults. A read
// returns at least one record when one exists, even if it alone exceeds
// MaxBytes.
type ReadOptions struct {
	MaxRecords int
	MaxBytes   int
}
