package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/esraft/esraft/raftlog"
)

// Consumer groups share a store's partitions among members on any nodes,
// each partition processed by one member at a time. Membership,
// assignment and committed offsets are replicated state of the log, so
// every node reads them and every change is fenced by the log's order:
// a member granted a partition commits with the generation of its grant,
// and a commit carrying any other is rejected. Package projection's Group
// runs handlers on them; these are its building blocks.

// ConsumerGroupState is a consumer group as a node has applied it: its
// generation, its members, and each partition's owner, committed offset
// and parked records.
type ConsumerGroupState = raftlog.GroupState

// ConsumerGroupMember is a member of a consumer group.
type ConsumerGroupMember = raftlog.GroupMember

// PartitionAssignment is one partition of a consumer group: its owner,
// the generation of the owner's grant, the member it moves to (if it is
// being revoked), its committed offset and its parked records.
type PartitionAssignment = raftlog.PartitionAssignment

// OffsetCommit is a member's progress in one partition: the next offset
// to handle, carried with the generation of the member's grant, and the
// records it parked or unparked.
type OffsetCommit = raftlog.OffsetCommit

// ParkedRecord is an event a group member set aside after its handler
// failed on it repeatedly (Key is its stream); later events of the same
// stream are parked behind it, to keep the stream's order.
type ParkedRecord = raftlog.ParkedRecord

// StaleGenerationError rejects a commit from a member that no longer holds
// the partition at the generation the commit carried (it lost the
// partition, during a pause say). Nothing of the commit was applied.
type StaleGenerationError = raftlog.StaleGenerationError

// StartPosition is where a new consumer group starts, or where ResetGroup
// moves a stopped one: Kind StartEarliest (the zero value), StartLatest,
// StartAtTime (Time) or StartAtOffsets (Offsets, one per partition).
type StartPosition = raftlog.StartPosition

// StartKind says where a consumer group starts reading.
type StartKind = raftlog.StartKind

// Start kinds (see StartPosition).
const (
	StartEarliest  = raftlog.StartEarliest
	StartLatest    = raftlog.StartLatest
	StartAtTime    = raftlog.StartAtTime
	StartAtOffsets = raftlog.StartAtOffsets
)

// Errors of consumer groups.
var (
	// ErrUnknownMember: the member is not in the group (it never joined,
	// left, or its session expired); it must join again.
	ErrUnknownMember = raftlog.ErrUnknownMember
	// ErrUnknownGroup: a reset of a group that does not exist.
	ErrUnknownGroup = raftlog.ErrUnknownGroup
	// ErrGroupActive: a reset or delete of a group that has live members;
	// nothing was changed. Stop them (or wait for their sessions to end).
	ErrGroupActive = raftlog.ErrGroupActive
	// ErrCommitBehind: a commit below the partition's committed offset;
	// nothing of it was recorded. Rewinding is ResetGroup's.
	ErrCommitBehind = raftlog.ErrCommitBehind
)

// JoinGroup adds member to group (creating the group) or renews its
// session; a member silent for sessionTimeout is removed and its
// partitions reassigned. It returns the group's state after the join.
func (s *Store) JoinGroup(ctx context.Context, group, member string, sessionTimeout time.Duration) (ConsumerGroupState, error) {
	gs, err := s.log.JoinGroup(ctx, group, member, sessionTimeout)
	return gs, groupErr(err, "join", group)
}

// JoinGroupAt is JoinGroup for a group that may not exist yet: a group the
// join creates starts at start (StartLatest: only events appended after
// the call; StartAtTime: from the first event at or after Time). Joining an
// existing group ignores start and resumes from its committed offsets.
func (s *Store) JoinGroupAt(ctx context.Context, group, member string, sessionTimeout time.Duration, start StartPosition) (ConsumerGroupState, error) {
	gs, err := s.log.JoinGroupAt(ctx, group, member, sessionTimeout, start)
	return gs, groupErr(err, "join", group)
}

// ResetGroup moves every partition of a stopped group to start, back
// (replay) or forward (skip). It fails with ErrGroupActive while the group
// has live members and with ErrUnknownGroup if it does not exist. Parked
// events at or after a partition's new offset are dropped (they will be
// handled again); earlier ones stay parked.
func (s *Store) ResetGroup(ctx context.Context, group string, start StartPosition) (ConsumerGroupState, error) {
	gs, err := s.log.ResetGroup(ctx, group, start)
	return gs, groupErr(err, "reset", group)
}

// ForceResetGroup is ResetGroup of a group that may have live members:
// they are fenced (a commit of theirs fails with a *StaleGenerationError,
// a heartbeat with ErrUnknownMember) and join again to resume from the new
// offsets, as a projection.Group member does on its own. It fails with
// ErrUnknownGroup if the group does not exist.
func (s *Store) ForceResetGroup(ctx context.Context, group string, start StartPosition) (ConsumerGroupState, error) {
	gs, err := s.log.ForceResetGroup(ctx, group, start)
	return gs, groupErr(err, "reset", group)
}

// DeleteGroup removes a stopped group and all its state (offsets, parked
// events); it fails with ErrGroupActive while the group has live members.
// Deleting a group that does not exist does nothing.
func (s *Store) DeleteGroup(ctx context.Context, group string) error {
	return groupErr(s.log.DeleteGroup(ctx, group), "delete", group)
}

// Heartbeat keeps member in group and releases the partitions it was
// asked to give up (those it owns with Revoking set), once it has stopped
// working on them. It returns the group's state, or an error matching
// ErrUnknownMember if the member's session expired.
func (s *Store) Heartbeat(ctx context.Context, group, member string, release []Partition) (ConsumerGroupState, error) {
	gs, err := s.log.Heartbeat(ctx, group, member, release)
	return gs, groupErr(err, "heartbeat in", group)
}

// LeaveGroup removes member from group at once, so its partitions move
// without waiting for its session to expire.
func (s *Store) LeaveGroup(ctx context.Context, group, member string) error {
	return groupErr(s.log.LeaveGroup(ctx, group, member), "leave", group)
}

// CommitOffsets records member's progress on partitions it owns. If any
// commit carries a generation other than its partition's current grant,
// nothing is recorded and the error is a *StaleGenerationError (use
// errors.As). A committed offset never moves back: a lower one fails with
// ErrCommitBehind and records nothing.
func (s *Store) CommitOffsets(ctx context.Context, group, member string, commits []OffsetCommit) (ConsumerGroupState, error) {
	gs, err := s.log.CommitOffsets(ctx, group, member, commits)
	return gs, groupErr(err, "commit offsets of", group)
}

// RetryParked asks the owner of partition, on whichever node it runs, to
// handle the parked record at offset again, with those parked behind it
// on the same stream.
func (s *Store) RetryParked(ctx context.Context, group string, partition Partition, offset uint64) error {
	return groupErr(s.log.RetryParked(ctx, group, partition, offset), "retry parked records of", group)
}

// SkipParked asks the owner of partition, on whichever node it runs, to
// drop the parked record at offset without handling it: an operator's
// decision that the event is lost to the group. The owner does it at its
// next heartbeat and the partition's Skipped count grows; the records
// parked behind it on the same stream stay parked.
func (s *Store) SkipParked(ctx context.Context, group string, partition Partition, offset uint64) error {
	return groupErr(s.log.SkipParked(ctx, group, partition, offset), "skip a parked record of", group)
}

// GroupState returns group as this node has applied it; false if it does
// not exist.
func (s *Store) GroupState(group string) (ConsumerGroupState, bool, error) {
	gs, ok, err := s.log.GroupState(group)
	return gs, ok, groupErr(err, "read", group)
}

// WaitGroupChange blocks until this node has applied a generation of group
// above gen, or ctx ends.
func (s *Store) WaitGroupChange(ctx context.Context, group string, gen uint64) error {
	return groupErr(s.log.WaitGroupChange(ctx, group, gen), "wait for a change of", group)
}

// groupErr names the group operation that failed and keeps the log's
// error reachable (errors.Is ErrUnknownMember, errors.As
// *StaleGenerationError); the log's closed and no-leader errors also match
// this package's ErrClosed, ErrUnknownOutcome and ErrUnavailable, as they
// do for appends.
func groupErr(err error, op, group string) error {
	var kind error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raftlog.ErrClosed):
		kind = ErrClosed
	case errors.Is(err, raftlog.ErrUnknownOutcome):
		kind = ErrUnknownOutcome
	case errors.Is(err, raftlog.ErrNoLeader):
		kind = ErrUnavailable
	default:
		return fmt.Errorf("eventstore: %s consumer group %q: %w", op, group, err)
	}
	return fmt.Errorf("%w: %s consumer group %q: %w", kind, op, group, err)
}
