package core

import (
	"errors"
	"fmt"
	"time"
)

// Errors of consumer groups.
var (
	// ErrUnknownMember: the member is not in the group (never joined, left,
	// or its session expired); it must join again.
	ErrUnknownMember = errors.New("raftlog: unknown group member")
	// ErrUnknownGroup: the consumer group does not exist (a reset of a
	// group nobody joined).
	ErrUnknownGroup = errors.New("raftlog: unknown consumer group")
	// ErrGroupActive: a reset or delete of a consumer group that has live
	// members; stop them (or wait for their sessions to expire) first.
	// Nothing was changed.
	ErrGroupActive = errors.New("raftlog: consumer group has live members")
	// ErrCommitBehind: a commit of an offset below the partition's
	// committed one. Offsets never move back by a commit; rewinding is a
	// reset of the stopped group. Nothing of the commit was applied.
	ErrCommitBehind = errors.New("raftlog: commit below the committed offset")
)

// StaleGenerationError rejects a commit from a member that no longer owns
// the partition at the generation it names. Nothing of the commit was
// applied.
type StaleGenerationError struct {
	Group, Member string
	Partition     Partition
	Generation    uint64 // the generation the commit carried
	Current       uint64 // the partition's grant generation now
	Owner         string // the partition's owner now
}

func (e *StaleGenerationError) Error() string {
	return fmt.Sprintf("raftlog: group %q: member %q committed partition %d at generation %d; it is owned by %q at generation %d",
		e.Group, e.Member, e.Partition, e.Generation, e.Owner, e.Current)
}

// GroupState is a consumer group as a node has applied it.
type GroupState struct {
	Group string
	// Generation increments on every change of membership or ownership.
	Generation uint64
	Members    []GroupMember // by ID
	Partitions []PartitionAssignment
}

// GroupMember is a member of a consumer group.
type GroupMember struct {
	ID             string
	SessionTimeout time.Duration
	LastSeen       time.Time // leader time of its last operation
}

// PartitionAssignment is one partition of a consumer group.
type PartitionAssignment struct {
	Partition Partition
	// Owner is the member processing the partition, "" if none.
	Owner string
	// Generation is the group generation at which Owner was granted the
	// partition; commits must carry it.
	Generation uint64
	// Next, when not Owner, is the member the partition moves to once
	// Owner releases it.
	Next string
	// Committed is the offset to resume from.
	Committed uint64
	// Parked are records set aside after failing, in offset order.
	Parked []ParkedRecord
	// Skipped counts the parked records an operator had dropped unhandled
	// (SkipParked), for the record: a reset keeps it, a delete drops it.
	Skipped uint64
}

// Revoking reports whether the partition's owner must release it.
func (a PartitionAssignment) Revoking() bool { return a.Next != "" && a.Next != a.Owner }

// ParkedRecord is a record a handler failed on repeatedly, set aside so
// the partition can go on; records of the same key after it are parked
// behind it, to keep the key's order.
type ParkedRecord struct {
	Offset   uint64
	Key      string
	Error    string
	Attempts int
	// Retry is set by RetryParked: the owner should handle the record (and
	// those parked behind it) again.
	Retry bool
	// Skip is set by SkipParked: the owner should unpark the record without
	// handling it (those parked behind it stay parked).
	Skip bool
}

// OffsetCommit is one partition's progress in a commit.
type OffsetCommit struct {
	Partition  Partition
	Generation uint64 // the generation of the member's grant
	Offset     uint64 // the next offset to process
	Park       []ParkedRecord
	Unpark     []uint64 // offsets of parked records now handled
}

// AppendOutcome is the state machine's answer to one append request of an
// entry: the result, or the caller's error (KeySeqError, ErrIDConflict...).
type AppendOutcome struct {
	Result AppendResult
	Err    error
}

// GroupOutcome is the state machine's answer to a consumer group operation.
type GroupOutcome struct {
	State GroupState
	Err   error
}
