package raftlog

import (
	"errors"
	"fmt"
)

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
	// ErrConfig: the configuration is invalid or does not match the data
	// directory.
	ErrConfig = errors.New("raftlog: invalid configuration")
)

// KeySeqError reports a failed ExpectKeySeq condition. Nothing was appended.
type KeySeqError struct {
	Partition int
	Key       string
	Expected  uint64
	Actual    uint64
}

func (e *KeySeqError) Error() string {
	return fmt.Sprintf("raftlog: key %q in partition %d is at sequence %d, expected %d",
		e.Key, e.Partition, e.Actual, e.Expected)
}
