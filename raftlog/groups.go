package raftlog

import (
	"context"
	"errors"
	"time"

	"github.com/esraft/esraft/raftlog/internal/wire"
)

// JoinGroup adds member to consumer group (creating the group), or
// refreshes it if it is a member already, and returns the group's state.
// The member must then heartbeat at least once per sessionTimeout (a third
// of it is a good period) or be removed, its partitions given to others.
// An empty group or member, or a session that is not positive, is an
// ErrConfig.
func (l *Log) JoinGroup(ctx context.Context, group, member string, sessionTimeout time.Duration) (GroupState, error) {
	return l.groupCall(ctx, &wire.GroupOp{Op: wire.GopJoin, Group: group, Member: member, Session: int64(sessionTimeout)})
}

// Heartbeat keeps member in group and releases the partitions it was
// asked to give up (those it owns with Revoking set), once it has stopped
// working on them. It returns the group's state, or ErrUnknownMember if
// the member's session expired (it must join again).
func (l *Log) Heartbeat(ctx context.Context, group, member string, release []Partition) (GroupState, error) {
	return l.groupCall(ctx, &wire.GroupOp{Op: wire.GopHeartbeat, Group: group, Member: member, Release: release})
}

// LeaveGroup removes member from group at once; its partitions go to the
// other members.
func (l *Log) LeaveGroup(ctx context.Context, group, member string) error {
	_, err := l.groupCall(ctx, &wire.GroupOp{Op: wire.GopLeave, Group: group, Member: member})
	if errors.Is(err, ErrUnknownMember) {
		return nil
	}
	return err
}

// CommitOffsets records member's progress on partitions it owns. Each
// commit must carry the generation at which the member was granted the
// partition; if any does not match the partition's current grant (the
// member lost it), the whole call fails with a *StaleGenerationError and
// nothing is recorded. A committed offset never moves back.
func (l *Log) CommitOffsets(ctx context.Context, group, member string, commits []OffsetCommit) (GroupState, error) {
	return l.groupCall(ctx, &wire.GroupOp{Op: wire.GopCommit, Group: group, Member: member, Commits: commits})
}

// RetryParked asks the owner of partition to handle the parked record at
// offset again (with those parked behind it on the same key).
func (l *Log) RetryParked(ctx context.Context, group string, partition Partition, offset uint64) error {
	_, err := l.groupCall(ctx, &wire.GroupOp{Op: wire.GopRetry, Group: group, Partition: partition, Offset: offset})
	return err
}

// GroupState returns consumer group as this node has applied it; false if
// it does not exist.
func (l *Log) GroupState(group string) (GroupState, bool, error) {
	if l.isClosed() {
		return GroupState{}, false, ErrClosed
	}
	s, ok := l.shards[0].engine.GroupState(group)
	return s, ok, nil
}

// WaitGroupChange blocks until this node has applied a generation of
// group above gen, or ctx ends.
func (l *Log) WaitGroupChange(ctx context.Context, group string, gen uint64) error {
	if l.isClosed() {
		return ErrClosed
	}
	e := l.shards[0].engine
	return l.waitUntil(ctx, e.AppliedSignal(), func() bool {
		s, ok := e.GroupState(group)
		return ok && s.Generation > gen
	})
}

// groupCall runs a group operation on the coordinator's leader, wherever
// it is, until it has an outcome or ctx ends. Group operations are
// idempotent (a join, heartbeat or leave applied twice, a commit of the
// same offsets), so they are retried whatever the failure.
func (l *Log) groupCall(ctx context.Context, op *wire.GroupOp) (GroupState, error) {
	if l.isClosed() {
		return GroupState{}, ErrClosed
	}
	if err := op.Check(); err != nil {
		return GroupState{}, err
	}
	return l.router.Group(ctx, op)
}

// Lag returns, per partition, how many records the group has yet to
// process on this node's replica (head offset minus committed offset).
func (l *Log) Lag(s GroupState) []uint64 {
	lag := make([]uint64, len(s.Partitions))
	for i, a := range s.Partitions {
		if head, err := l.NextOffset(a.Partition); err == nil && head > a.Committed {
			lag[i] = head - a.Committed
		}
	}
	return lag
}
