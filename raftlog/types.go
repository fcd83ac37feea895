package raftlog

import "github.com/esraft/esraft/raftlog/internal/core"

// The log's value types. They are defined in an internal package shared by
// every layer of raftlog and are the same types here.
type (
	// Partition numbers a partition, 0 .. Partitions()-1: the unit of
	// ordering and of consumer assignment. A key's records go to one
	// partition (see Log.Partition).
	Partition = core.Partition
	// Shard numbers a raft group, 0 .. Shards()-1: the unit of replication
	// and leadership. Partition p lives in shard p mod Shards().
	Shard = core.Shard

	// Header is a named value carried with a record.
	Header = core.Header
	// NewRecord is a record to append. A zero ID is replaced by a new
	// time-ordered UUID (version 7) before the first attempt, so retries
	// inside Append reuse it; callers that retry Append themselves after an
	// error of unknown outcome must set IDs so the retry is deduplicated.
	NewRecord = core.NewRecord
	// Record is a committed record as read back from the log: Partition,
	// Offset (dense from 0 in the partition), Key, KeySeq (dense from 1 in
	// the key), ID, Time (the leader's stamp), Headers and Value.
	Record = core.Record
	// Position names a point in one shard's applied history. A replica
	// that has applied a Position holds every record acknowledged up to it
	// (see WaitApplied).
	Position = core.Position
	// AppendResult reports where an acknowledged batch went: offsets
	// FirstOffset..LastOffset() and key sequences FirstKeySeq..LastKeySeq(),
	// the leader's Time, the Position it was applied at, and Duplicate when
	// every record ID had been committed before (nothing was appended by
	// this attempt; the original result is returned).
	AppendResult = core.AppendResult
	// KeyInfo is the state of a key in its partition: Seq (its last
	// sequence), First (the lowest readable sequence) and Deleted.
	KeyInfo = core.KeyInfo

	// KeyCondition names the condition of a failed append (CondSeq,
	// CondExists, CondAbsent).
	KeyCondition = core.KeyCondition
	// KeySeqError reports a failed key condition, with the key's actual
	// sequence. Nothing was appended.
	KeySeqError = core.KeySeqError

	// GroupState is a consumer group as a node has applied it: its
	// generation, members and the assignment of every partition.
	GroupState = core.GroupState
	// GroupMember is a member of a consumer group.
	GroupMember = core.GroupMember
	// PartitionAssignment is one partition of a consumer group: its owner,
	// the generation of the owner's grant, the member it moves to (Next),
	// the committed offset and the parked records.
	PartitionAssignment = core.PartitionAssignment
	// ParkedRecord is a record a handler failed on repeatedly, set aside so
	// the partition can go on.
	ParkedRecord = core.ParkedRecord
	// OffsetCommit is one partition's progress in a commit, with the
	// generation of the member's grant.
	OffsetCommit = core.OffsetCommit
	// StaleGenerationError rejects a commit from a member that no longer
	// owns the partition at the generation it names. Nothing of the commit
	// was applied.
	StaleGenerationError = core.StaleGenerationError
)

// Key conditions.
const (
	// CondSeq: the key's sequence had to equal Expected.
	CondSeq = core.CondSeq
	// CondExists: the key had to have records and not be deleted.
	CondExists = core.CondExists
	// CondAbsent: the key had to have no records, or be deleted.
	CondAbsent = core.CondAbsent
)

// Errors returned by the log. Errors that carry data are typed
// (*KeySeqError, *StaleGenerationError); everything else wraps one of
// these sentinels, so callers use errors.Is.
var (
	// ErrClosed: the log was closed.
	ErrClosed = core.ErrClosed
	// ErrNoLeader: no leader could be reached before the context ended. If
	// the call had been handed to a leader that then lost leadership, the
	// error also wraps ErrUnknownOutcome.
	ErrNoLeader = core.ErrNoLeader
	// ErrUnknownOutcome: the append may or may not have been committed.
	// Retrying it with the same record IDs is safe: committed IDs are
	// deduplicated and the original result is returned.
	ErrUnknownOutcome = core.ErrUnknownOutcome
	// ErrEmptyBatch: an append with no records.
	ErrEmptyBatch = core.ErrEmptyBatch
	// ErrEmptyKey: an append without a key.
	ErrEmptyKey = core.ErrEmptyKey
	// ErrRecordTooLarge: a record, or a key or header, exceeds its limit.
	ErrRecordTooLarge = core.ErrRecordTooLarge
	// ErrBatchTooLarge: a batch exceeds MaxBatchRecords or MaxBatchBytes.
	ErrBatchTooLarge = core.ErrBatchTooLarge
	// ErrUnknownPartition: a partition outside 0..Partitions-1 (or a shard
	// outside 0..Shards-1).
	ErrUnknownPartition = core.ErrUnknownPartition
	// ErrDuplicateID: the same record ID twice in one batch.
	ErrDuplicateID = core.ErrDuplicateID
	// ErrIDConflict: some record IDs of the batch were committed before and
	// others were not, or they were committed under another key or
	// partition; nothing was appended.
	ErrIDConflict = core.ErrIDConflict
	// ErrKeyDeleted: an append to a soft-deleted key without Recreate.
	// Nothing was appended.
	ErrKeyDeleted = core.ErrKeyDeleted
	// ErrConfig: the configuration is invalid or does not match the data
	// directory.
	ErrConfig = core.ErrConfig
	// ErrCorrupt: stored data (the state file, the raft log, a snapshot)
	// or an encoding received is damaged or contradicts itself. The error
	// names the file and, where there is one, the recovery.
	ErrCorrupt = core.ErrCorrupt
	// ErrUnknownMember: the consumer group member is not in the group
	// (never joined, left, or its session expired); it must join again.
	ErrUnknownMember = core.ErrUnknownMember
	// ErrUnknownGroup: the consumer group does not exist.
	ErrUnknownGroup = core.ErrUnknownGroup
	// ErrGroupActive: a reset or delete of a consumer group with live
	// members; nothing was changed.
	ErrGroupActive = core.ErrGroupActive
	// ErrCommitBehind: a commit below the partition's committed offset;
	// nothing of it was applied (rewind with ResetGroup).
	ErrCommitBehind = core.ErrCommitBehind
	// ErrUnauthorized: this node's cluster peer refused a node-to-node
	// call (see Config.TLS and SECURITY.md). Nothing was done.
	ErrUnauthorized = core.ErrUnauthorized
	// ErrDiskFull: the shard's node cannot write its state (its disk is
	// full, or writes fail) and holds as much unwritten state as it may.
	// Nothing was proposed; reads go on, and appends succeed again by
	// themselves once a write does.
	ErrDiskFull = core.ErrDiskFull
	// ErrBusy: the node served as many client calls as it may at once
	// (Config.MaxClientCalls) and refused this one before doing anything;
	// a Remote retries it on its own.
	ErrBusy = core.ErrBusy
)

// MaxKeyBytes is the longest key, in bytes, an append accepts.
const MaxKeyBytes = core.MaxKeyBytes
