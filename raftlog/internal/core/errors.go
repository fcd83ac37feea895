package core

import (
	"errors"
	"fmt"
)

// Limits that bound the encodings.
const (
	MaxPartitions = 1 << 16
	MaxShards     = 200 // one mux service byte each
	MaxKeyBytes   = 4096
)

// ErrCorrupt is returned by decoders for input they cannot parse, and for a
// state file or snapshot that contradicts itself.
var ErrCorrupt = errors.New("raftlog: corrupt data")

// Errors returned by the log. Errors that carry data are typed (see
// KeySeqError); everything else wraps one of these sentinels, so callers use
// errors.Is.
var (
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("raftlog: log closed")
	// ErrNoLeader: no leader could be reached before the context ended. If
	// the append had been handed to a leader that then lost leadership, the
	// error also wraps ErrUnknownOutcome.
	ErrNoLeader = errors.New("raftlog: no leader")
	// ErrUnknownOutcome: the append may or may not have been committed.
	// Retrying it with the same record IDs is safe: committed IDs are
	// deduplicated and the original result is returned.
	ErrUnknownOutcome = errors.New("raftlog: outcome unknown")
	// ErrEmptyBatch: an append with no records.
	ErrEmptyBatch = errors.New("raftlog: empty batch")
	// ErrEmptyKey: an append without a key.
	ErrEmptyKey = errors.New("raftlog: empty key")
	// ErrRecordTooLarge: a record, or a key or header, exceeds its limit.
	ErrRecordTooLarge = errors.New("raftlog: record too large")
	// ErrBatchTooLarge: a batch exceeds MaxBatchRecords or MaxBatchBytes.
	ErrBatchTooLarge = errors.New("raftlog: batch too large")
	// ErrUnknownPartition: a partition outside 0..Partitions-1.
	ErrUnknownPartition = errors.New("raftlog: unknown partition")
	// ErrDuplicateID: the same record ID twice in one batch.
	ErrDuplicateID = errors.New("raftlog: duplicate record id in batch")
	// ErrIDConflict: some record IDs of the batch were committed before and
	// others were not, or they were committed under another key or
	// partition; nothing was appended.
	ErrIDConflict = errors.New("raftlog: record ids conflict with an earlier append")
	// ErrKeyDeleted: an append to a soft-deleted key without Recreate.
	// Nothing was appended.
	ErrKeyDeleted = errors.New("raftlog: key deleted")
	// ErrConfig: the configuration is invalid or does not match the data
	// directory.
	ErrConfig = errors.New("raftlog: invalid configuration")
	// ErrUnauthorized: a node-to-node call from a peer that may not make
	// it (not a member, the wrong role, or a membership change from an
	// unauthenticated peer). Nothing was done.
	ErrUnauthorized = errors.New("raftlog: unauthorized")
	// ErrDiskFull: the node cannot make its state durable (its disk is
	// full, or writes fail) and holds as much unwritten state as it may.
	// Nothing was proposed; appends succeed again once a write does.
	ErrDiskFull = errors.New("raftlog: disk full")
	// ErrBusy: the node serves as many client calls as it may at once
	// (Config.MaxClientCalls); nothing was done, and the call may be
	// retried, here or on another node.
	ErrBusy = errors.New("raftlog: node busy")
)

// KeyCondition names the condition an append or key operation was made
// with (ExpectKeySeq, ExpectKeyExists, ExpectKeyAbsent).
type KeyCondition uint8

const (
	// CondSeq: the key's sequence must equal Expected.
	CondSeq KeyCondition = iota
	// CondExists: the key must have records and not be deleted.
	CondExists
	// CondAbsent: the key must have no records, or be deleted.
	CondAbsent
)

// KeySeqError reports a failed key condition. Nothing was appended.
type KeySeqError struct {
	Partition Partition
	Key       string
	Condition KeyCondition
	Expected  uint64 // with CondSeq
	Actual    uint64 // the key's sequence
	Deleted   bool   // whether the key is soft-deleted
}

func (e *KeySeqError) Error() string {
	state := fmt.Sprintf("is at sequence %d", e.Actual)
	if e.Deleted {
		state = fmt.Sprintf("is deleted (at sequence %d)", e.Actual)
	}
	want := fmt.Sprintf("expected %d", e.Expected)
	switch e.Condition {
	case CondExists:
		want = "expected it to exist"
	case CondAbsent:
		want = "expected it not to exist"
	}
	return fmt.Sprintf("raftlog: key %q in partition %d %s, %s", e.Key, e.Partition, state, want)
}
