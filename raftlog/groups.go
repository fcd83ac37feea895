package raftlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/esraft/esraft/raftlog/internal/route"
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

// StartKind says where a consumer group starts reading (see StartPosition).
type StartKind uint8

// Start kinds.
const (
	// StartEarliest: every partition from its first record (offset 0).
	StartEarliest StartKind = iota
	// StartLatest: every partition from its end when the call is made:
	// only records appended after it are processed.
	StartLatest
	// StartAtTime: every partition from its first record stamped at or
	// after Time.
	StartAtTime
	// StartAtOffsets: partition p from Offsets[p].
	StartAtOffsets
)

// StartPosition is where a new consumer group starts (JoinGroupAt), or
// where ResetGroup moves a stopped one. The zero value is StartEarliest.
type StartPosition struct {
	Kind    StartKind
	Time    time.Time // StartAtTime
	Offsets []uint64  // StartAtOffsets: one per partition, each at most the partition's end
}

// JoinGroupAt is JoinGroup for a group that may not exist yet: if the join
// creates the group, its partitions start at start (resolved to offsets on
// this node, after a read barrier of every shard, so "latest" covers every
// record acknowledged before the call). Joining an existing group ignores
// start: members resume from the committed offsets. Start is resolved on
// every call (a group this node sees may have been deleted on the
// leader), which costs a read barrier of every shard: joins are rare. A StartAtOffsets
// position with other than one offset per partition, or one beyond its
// partition's end, is an ErrConfig.
func (l *Log) JoinGroupAt(ctx context.Context, group, member string, sessionTimeout time.Duration, start StartPosition) (GroupState, error) {
	if start.Kind == StartEarliest {
		return l.JoinGroup(ctx, group, member, sessionTimeout)
	}
	if l.isClosed() {
		return GroupState{}, ErrClosed
	}
	op, err := joinAtOp(ctx, l, group, member, sessionTimeout, start)
	if err != nil {
		return GroupState{}, err
	}
	return l.groupCall(ctx, op)
}

// ResetGroup moves every partition of group to start (resolved as for
// JoinGroupAt), back or forward, while the group has no live member:
// otherwise it fails with ErrGroupActive and changes nothing. Parked
// records at or after a partition's new offset are dropped, since they
// will be processed again; those before it stay parked. ErrUnknownGroup
// if the group does not exist.
func (l *Log) ResetGroup(ctx context.Context, group string, start StartPosition) (GroupState, error) {
	if l.isClosed() {
		return GroupState{}, ErrClosed
	}
	op, err := resetOp(ctx, l, group, start)
	if err != nil {
		return GroupState{}, err
	}
	return l.groupCall(ctx, op)
}

// ForceResetGroup is ResetGroup of a group that may have live members: it
// removes them (fences them) in the same operation, so that a commit of
// theirs is refused with a *StaleGenerationError and a heartbeat with
// ErrUnknownMember; they join again and resume from the new offsets.
// Every node must run a version that knows the operation: it is new in
// the entry format, and a node of an older version skips it (as an
// entry it cannot decode) and keeps the members, so that its copy of the
// group's offsets differs from the others' from then on. So it fails
// with ErrConfig, proposing nothing, unless every member of the cluster
// answers that it knows the operation.
func (l *Log) ForceResetGroup(ctx context.Context, group string, start StartPosition) (GroupState, error) {
	if l.isClosed() {
		return GroupState{}, ErrClosed
	}
	op, err := resetOp(ctx, l, group, start)
	if err != nil {
		return GroupState{}, err
	}
	op.Op = wire.GopForceReset
	return l.groupCall(ctx, op)
}

// DeleteGroup removes group and all its state (offsets, parked records)
// while it has no live member: otherwise it fails with ErrGroupActive.
// Deleting a group that does not exist does nothing.
func (l *Log) DeleteGroup(ctx context.Context, group string) error {
	_, err := l.groupCall(ctx, &wire.GroupOp{Op: wire.GopDelete, Group: group})
	return err
}

// joinAtOp is the operation of JoinGroupAt (a Log's or a Remote's), its
// start resolved through r. The names and session are checked first:
// resolving start reads every partition.
func joinAtOp(ctx context.Context, r startReader, group, member string, sessionTimeout time.Duration, start StartPosition) (*wire.GroupOp, error) {
	op := &wire.GroupOp{Op: wire.GopJoin, Group: group, Member: member, Session: int64(sessionTimeout)}
	if err := op.Check(); err != nil {
		return nil, err
	}
	offs, err := resolveStart(ctx, r, start)
	if err != nil {
		return nil, err
	}
	op.Op, op.Offsets = wire.GopJoinAt, offs
	return op, nil
}

// resetOp is the operation of ResetGroup (a Log's or a Remote's), its
// start resolved through r once the group's name is checked.
func resetOp(ctx context.Context, r startReader, group string, start StartPosition) (*wire.GroupOp, error) {
	if err := (&wire.GroupOp{Op: wire.GopDelete, Group: group}).Check(); err != nil {
		return nil, err
	}
	offs, err := resolveStart(ctx, r, start)
	if err != nil {
		return nil, err
	}
	return &wire.GroupOp{Op: wire.GopReset, Group: group, Offsets: offs}, nil
}

// startReader is what resolving a start position reads: a Log, or a
// Remote through its node.
type startReader interface {
	Partitions() int
	Shards() int
	ReadBarrier(ctx context.Context, s Shard) error
	NextOffset(p Partition) (uint64, error)
	Read(ctx context.Context, p Partition, from uint64, opt ReadOptions) ([]Record, error)
}

// resolveStart resolves start to one offset per partition of r, after a
// read barrier of every shard.
func resolveStart(ctx context.Context, r startReader, start StartPosition) ([]uint64, error) {
	offs := make([]uint64, r.Partitions())
	if start.Kind == StartEarliest {
		return offs, nil
	}
	if start.Kind > StartAtOffsets {
		return nil, fmt.Errorf("%w: unknown start position kind %d", ErrConfig, start.Kind)
	}
	if start.Kind == StartAtOffsets && len(start.Offsets) != len(offs) {
		return nil, fmt.Errorf("%w: %d start offsets for %d partitions", ErrConfig, len(start.Offsets), len(offs))
	}
	for s := 0; s < r.Shards(); s++ {
		if err := r.ReadBarrier(ctx, Shard(s)); err != nil {
			return nil, err
		}
	}
	for i := range offs {
		p := Partition(i)
		head, err := r.NextOffset(p)
		if err != nil {
			return nil, err
		}
		switch start.Kind {
		case StartLatest:
			offs[i] = head
		case StartAtOffsets:
			if start.Offsets[i] > head {
				return nil, fmt.Errorf("%w: partition %d: start offset %d is beyond its end %d", ErrConfig, p, start.Offsets[i], head)
			}
			offs[i] = start.Offsets[i]
		case StartAtTime:
			if offs[i], err = offsetAt(ctx, r, p, head, start.Time); err != nil {
				return nil, err
			}
		}
	}
	return offs, nil
}

// offsetAt is the first offset of partition p, below head, whose record
// is stamped at or after t (head if none): a binary search, since a
// partition's times never decrease. Hidden records count as the next
// visible one.
func offsetAt(ctx context.Context, r startReader, p Partition, head uint64, t time.Time) (uint64, error) {
	lo, hi := uint64(0), head
	for lo < hi {
		mid := lo + (hi-lo)/2
		recs, err := r.Read(ctx, p, mid, ReadOptions{MaxRecords: 1})
		if err != nil {
			return 0, err
		}
		if len(recs) == 0 || !recs[0].Time.Before(t) {
			hi = mid
		} else {
			lo = recs[0].Offset + 1
		}
	}
	return lo, nil
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
// nothing is recorded. A committed offset never moves back: a commit
// below it fails with ErrCommitBehind and records nothing (rewinding is
// ResetGroup's).
func (l *Log) CommitOffsets(ctx context.Context, group, member string, commits []OffsetCommit) (GroupState, error) {
	return l.groupCall(ctx, &wire.GroupOp{Op: wire.GopCommit, Group: group, Member: member, Commits: commits})
}

// RetryParked asks the owner of partition to handle the parked record at
// offset again (with those parked behind it on the same key).
func (l *Log) RetryParked(ctx context.Context, group string, partition Partition, offset uint64) error {
	_, err := l.groupCall(ctx, &wire.GroupOp{Op: wire.GopRetry, Group: group, Partition: partition, Offset: offset})
	return err
}

// SkipParked asks the owner of partition to drop the parked record at
// offset without handling it (an operator's decision: the record is lost
// to the group). The owner unparks it at its next heartbeat, and the
// partition's Skipped count grows; records parked behind it on the same
// key stay parked.
func (l *Log) SkipParked(ctx context.Context, group string, partition Partition, offset uint64) error {
	_, err := l.groupCall(ctx, &wire.GroupOp{Op: wire.GopSkip, Group: group, Partition: partition, Offset: offset})
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
	if op.Op == wire.GopForceReset {
		if err := l.requireFeature(ctx, route.FeatureForceReset); err != nil {
			return GroupState{}, err
		}
	}
	return l.router.Group(ctx, op)
}

// featureTimeout bounds the question to each member in requireFeature.
const featureTimeout = 2 * time.Second

// requireFeature fails with ErrConfig unless every member of shard 0's
// configuration (voters and non-voters: all apply the entries) says it
// knows feature: an entry a node of an older version cannot decode is
// skipped there, and its state would differ from the others' from then
// on. A member that does not answer in time counts as not knowing it.
func (l *Log) requireFeature(ctx context.Context, feature string) error {
	if l.shards[0].Raft == nil {
		return fmt.Errorf("%w: shard 0 does not run yet", ErrNoLeader)
	}
	cf := l.shards[0].Raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%w: read the configuration: %w", ErrNoLeader, err)
	}
	servers := cf.Configuration().Servers
	addrs := make([]string, len(servers))
	for i, srv := range servers {
		if string(srv.ID) != l.cfg.NodeID { // this node's own version knows it
			addrs[i] = string(srv.Address)
		}
	}
	var missing []string
	for i, a := range l.router.FeaturesAll(ctx, addrs, featureTimeout) {
		srv := servers[i]
		switch {
		case addrs[i] == "":
		case a.Err != nil:
			missing = append(missing, fmt.Sprintf("%s at %s (did not say: %v)", srv.ID, srv.Address, a.Err))
		case !slices.Contains(a.Features, feature):
			missing = append(missing, fmt.Sprintf("%s at %s (an older version)", srv.ID, srv.Address))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: every node must know %s before it is used, and these do not say so: %s",
			ErrConfig, feature, strings.Join(missing, "; "))
	}
	return nil
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
